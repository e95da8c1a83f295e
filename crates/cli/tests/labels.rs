//! `buy --layout … --to-address … --from-address …` and `verify` of a PDF, through the real
//! binary against a real server on port 0 (as in e2e.rs).

#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{BIN, Cli, TestServer, s};
use serde_json::Value;
use stampline_items::{Body, Item};
fn pdftoppm_available() -> bool {
    let found = Command::new("pdftoppm").arg("-v").output().is_ok();
    if !found {
        if std::env::var("STAMPLINE_REQUIRE_ALL").as_deref() == Ok("1") {
            panic!(
                "pdftoppm not installed (Debian package poppler-utils) and STAMPLINE_REQUIRE_ALL=1"
            );
        }
        println!("skipped: pdftoppm not available (Debian package poppler-utils)");
    }
    found
}

fn funded(server: &TestServer, user: &str) {
    server.register(user);
    server.ok(user, &common::fund_card("20"));
}

const TO: &str = "Charles Babbage|1600 Main St Apt 4|San Francisco CA 94105-0004";
const FROM: &str = "Ann Example|1 Main St|Boston MA 02134";

#[test]
fn a_4x6_label_carries_the_addresses_and_the_zip_plus_4_and_its_pdf_verifies() {
    let server = TestServer::start();
    funded(&server, "ann");
    let out = tempfile::tempdir().unwrap();
    let label = out.path().join("label");
    let mut args = vec![
        "buy",
        "--postage",
        "9.35",
        "--class",
        "priority-mail",
        "--from",
        "02134",
        "--to",
        "94105",
        "--layout",
        "label4x6",
        "--to-address",
        TO,
        "--from-address",
        FROM,
        "--out",
        s(&label),
    ];
    for format in ["png", "pdf", "svg", "zpl", "raw"] {
        args.extend(["--format", format]);
    }
    let buy = server.ok("ann", &args);
    assert_eq!(buy["files"].as_array().unwrap().len(), 5, "{buy}");

    // The destination ZIP+4 of the address went into the signed indicium.
    let raw = std::fs::read(label.with_extension("raw")).unwrap();
    let Body::Postage(indicium) = Item::parse(&raw).unwrap().body else {
        panic!("not postage");
    };
    assert_eq!(indicium.to.as_str(), "941050004");

    let png = std::fs::read(label.with_extension("png")).unwrap();
    assert_eq!(stampline_label::decode_png(&png).unwrap(), raw);
    let pdf =
        String::from_utf8_lossy(&std::fs::read(label.with_extension("pdf")).unwrap()).into_owned();
    assert!(pdf.contains("/MediaBox [0 0 288 432]"), "4 x 6 in page");
    let zpl = std::fs::read_to_string(label.with_extension("zpl")).unwrap();
    assert!(zpl.starts_with("^XA") && zpl.trim_end().ends_with("^XZ"));
    let svg = std::fs::read_to_string(label.with_extension("svg")).unwrap();
    assert!(svg.contains("width=\"4in\" height=\"6in\""));
    let texts = [
        "CHARLES BABBAGE",
        "SAN FRANCISCO CA 94105-0004",
        "ANN EXAMPLE",
        "USPS TRACKING #",
        "PRIORITY MAIL",
    ];
    for text in texts {
        assert!(
            svg.contains(&format!(">{text}<")),
            "{text} on the SVG label"
        );
    }

    if pdftoppm_available() {
        // The PDF's (compressed) text, as poppler extracts it.
        let out = Command::new("pdftotext")
            .arg(label.with_extension("pdf"))
            .arg("-")
            .output()
            .unwrap();
        let pdf_text = String::from_utf8_lossy(&out.stdout);
        for text in texts {
            assert!(
                pdf_text.contains(text),
                "{text} on the PDF label: {pdf_text}"
            );
        }
        let v = server.ok("ann", &["verify", s(&label.with_extension("pdf"))]);
        assert_eq!(v["valid"], true, "{v}");
        assert_eq!(v["serial"], buy["serial"]);
    }
}

#[test]
fn verifying_a_pdf_without_pdftoppm_is_a_clear_error() {
    let server = TestServer::start();
    funded(&server, "bob");
    let out = tempfile::tempdir().unwrap();
    let label = out.path().join("env");
    server.ok(
        "bob",
        &common::buy_letter(&[
            "--layout",
            "envelope10",
            "--format",
            "pdf",
            "--format",
            "png",
            "--to-address",
            TO,
            "--out",
            s(&label),
        ]),
    );
    let v = server.ok("bob", &["verify", s(&label.with_extension("png"))]);
    assert_eq!(v["valid"], true, "{v}");
    let out = Command::new(BIN)
        .args(["--json", "verify"])
        .arg(label.with_extension("pdf"))
        .env("STAMPLINE_SERVER", &server.url)
        .env("STAMPLINE_TRUST", &server.trust)
        .env("PATH", "/nonexistent")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let v: Value =
        serde_json::from_str(String::from_utf8_lossy(&out.stdout).lines().last().unwrap()).unwrap();
    assert_eq!(v["error"], "pdf_tool_missing", "{v}");
    assert!(v["message"].as_str().unwrap().contains("poppler-utils"));
}

#[test]
fn bad_layout_and_address_flags_are_refused_before_anything_is_charged() {
    let server = TestServer::start();
    funded(&server, "cy");
    let before = server.balance_mills("cy");
    let out = tempfile::tempdir().unwrap();
    let label = out.path().join("x");
    let buy = |extra: &[&str]| {
        let mut args = vec![
            "buy",
            "--postage",
            "0.78",
            "--from",
            "02134",
            "--to",
            "02134",
            "--out",
            s(&label),
        ];
        args.extend_from_slice(extra);
        args.iter()
            .map(|a| (*a).to_owned())
            .collect::<Vec<String>>()
    };
    for (extra, code) in [
        (buy(&["--layout", "a4"]), "bad_request"),
        (buy(&["--format", "svg"]), "bad_request"),
        (
            buy(&["--layout", "label4x6", "--to-address", TO]),
            "address_mismatch",
        ),
        (
            buy(&["--layout", "label4x6", "--to-address", " | "]),
            "bad_address",
        ),
        (buy(&["--format", "bmp"]), "unsupported"),
        (
            buy(&[
                "--layout",
                "envelope10",
                "--to-address",
                "Caf\u{e9} Ann|1 Main St|Boston MA 02134",
            ]),
            "bad_address",
        ),
        (
            buy(&[
                "--layout",
                "envelope10",
                "--to-address",
                "A|B|C|D|E|F|G|Boston MA 02134",
            ]),
            "bad_address",
        ),
    ] {
        let args: Vec<&str> = extra.iter().map(String::as_str).collect();
        server.fails_with("cy", &args, code);
    }
    assert_eq!(server.balance_mills("cy"), before);
}

fn write_csv(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn a_batch_charges_each_row_and_prints_them_all_into_one_pdf() {
    let server = TestServer::start();
    funded(&server, "dee");
    let dir = tempfile::tempdir().unwrap();
    let csv = write_csv(
        dir.path(),
        "pieces.csv",
        "to_address,from_address,class,weight_oz,postage\n\
         \"Charles Babbage|1600 Main St, Apt 4|San Francisco CA 94105-0004\",Ann|1 Main St|Boston MA 02134,priority-mail,,9.35\n\
         Grace Hopper|2 Navy Yard|Arlington VA 22202,,,,0.78\n\
         Alan Turing|3 Bletchley Rd|Princeton NJ 08540,,first-class-flat,2,\n",
    );
    let out = dir.path().join("batch");
    let v = server.ok(
        "dee",
        &[
            "buy",
            "--batch",
            s(&csv),
            "--from",
            "02134",
            "--out",
            s(&out),
        ],
    );
    assert_eq!(v["complete"], true, "{v}");
    assert_eq!(v["rows"], 3);
    assert_eq!(v["printed"].as_array().unwrap().len(), 3, "{v}");
    assert_eq!(v["voided"].as_array().unwrap().len(), 0);
    // The flat has no postage: the rate engine prices it (2 oz flat: $1.63 + $0.27).
    assert_eq!(v["postage_mills"], 9_350 + 780 + 1_900);
    assert_eq!(v["balance_mills"], 20_000 - 12_030);
    assert_eq!(server.balance_mills("dee"), 20_000 - 12_030);
    let pdf = std::fs::read(out.with_extension("pdf")).unwrap();
    assert!(
        String::from_utf8_lossy(&pdf).contains("/Count 3"),
        "three pages"
    );
    if pdftoppm_available() {
        // The first page is the first row's piece.
        let first = server.ok("dee", &["verify", s(&out.with_extension("pdf"))]);
        assert_eq!(first["valid"], true, "{first}");
        assert_eq!(first["serial"], v["printed"][0]);
        assert_eq!(first["amount_mills"], 9_350);
    }
    // ZPL: one ^XA…^XZ label per row.
    server.ok("dee", &common::fund_card("20"));
    let zpl_out = dir.path().join("thermal");
    let v = server.ok(
        "dee",
        &[
            "buy",
            "--batch",
            s(&csv),
            "--from",
            "02134",
            "--format",
            "zpl",
            "--dpi",
            "203",
            "--out",
            s(&zpl_out),
        ],
    );
    assert_eq!(v["complete"], true, "{v}");
    let zpl = std::fs::read_to_string(zpl_out.with_extension("zpl")).unwrap();
    assert_eq!(zpl.matches("^XA").count(), 3);
    assert_eq!(zpl.matches("^XZ").count(), 3);
}

#[test]
fn a_batch_that_runs_out_of_funds_prints_what_it_charged_and_says_which_rows_were_not() {
    let server = TestServer::start();
    funded(&server, "eve");
    let dir = tempfile::tempdir().unwrap();
    let row = "Grace Hopper|2 Navy Yard|Arlington VA 22202,8.00\n";
    let csv = write_csv(
        dir.path(),
        "big.csv",
        &format!("to_address,postage\n{row}{row}{row}{row}"),
    );
    let out = dir.path().join("partial");
    let (ok, v) = server.run(
        "eve",
        &[
            "buy",
            "--batch",
            s(&csv),
            "--from",
            "02134",
            "--out",
            s(&out),
        ],
    );
    assert!(!ok, "an incomplete batch exits non-zero: {v}");
    assert_eq!(v["complete"], false);
    assert_eq!(v["printed"].as_array().unwrap().len(), 2, "{v}");
    assert_eq!(v["not_charged_from_row"], 3);
    assert_eq!(v["error"]["code"], "insufficient_funds");
    assert_eq!(server.balance_mills("eve"), 20_000 - 16_000);
    let pdf = std::fs::read(out.with_extension("pdf")).unwrap();
    assert!(String::from_utf8_lossy(&pdf).contains("/Count 2"));
    // The printed pieces are printed, not pending.
    for serial in v["printed"].as_array().unwrap() {
        assert_eq!(server.status_of("eve", serial.as_str().unwrap()), "printed");
    }
}

#[test]
fn a_batch_with_a_bad_row_is_refused_before_anything_is_charged() {
    let server = TestServer::start();
    funded(&server, "fay");
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in [
        ("no_zip.csv", "to_address,postage\nA|B|C,0.78\n"),
        (
            "bad_amount.csv",
            "to_address,postage\nA|B|Boston MA 02134,0.0001\n",
        ),
        (
            "unknown.csv",
            "to_address,colour\nA|B|Boston MA 02134,red\n",
        ),
        (
            "no_price.csv",
            "to_address,class\nA|B|Boston MA 02134,first-class-letter\n",
        ),
        (
            "too_heavy.csv",
            "to_address,weight_oz\nA|B|Boston MA 02134,4\n",
        ),
        ("empty.csv", "to_address,postage\n"),
        (
            "second_bad.csv",
            "to_address,postage\nA|B|Boston MA 02134,0.78\nA|B|C|D|E|F|G|Boston MA 02134,0.78\n",
        ),
    ] {
        let csv = write_csv(dir.path(), name, text);
        let v = server.fails_with(
            "fay",
            &["buy", "--batch", s(&csv), "--from", "02134"],
            "bad_batch",
        );
        assert!(v["message"].as_str().unwrap().len() > 5, "{name}: {v}");
    }
    assert_eq!(server.balance_mills("fay"), 20_000);
}

#[test]
fn a_batch_that_cannot_be_printed_voids_every_charged_piece() {
    let server = TestServer::start();
    funded(&server, "gus");
    let dir = tempfile::tempdir().unwrap();
    let row = "Grace Hopper|2 Navy Yard|Arlington VA 22202,1.00\n";
    let csv = write_csv(
        dir.path(),
        "two.csv",
        &format!("to_address,postage\n{row}{row}"),
    );
    let out = dir.path().join("no such directory").join("labels");
    let (ok, v) = server.run(
        "gus",
        &[
            "buy",
            "--batch",
            s(&csv),
            "--from",
            "02134",
            "--out",
            s(&out),
        ],
    );
    assert!(!ok, "{v}");
    assert_eq!(v["voided"].as_array().unwrap().len(), 2, "{v}");
    assert_eq!(v["printed"].as_array().unwrap().len(), 0);
    assert!(v["print_error"].as_str().unwrap().contains("cannot write"));
    assert_eq!(v["file"], Value::Null);
    assert_eq!(
        server.balance_mills("gus"),
        20_000,
        "voided pieces are refunded at once"
    );
}
