//! End to end: the real `stampline server` on port 0 in a temp dir, driven by the real `stampline`
//! binary, exactly as a user or a script would.

#![allow(clippy::unwrap_used)]

mod common;

use std::process::Command;

use common::{BIN, Cli, TestServer, s};
use serde_json::Value;
#[test]
fn register_fund_buy_balance_verify_end_to_end() {
    let server = TestServer::start();
    let reg = server.register("ann");
    assert_eq!(reg["user"], "ann");
    // Registration stores the user only: the first funding licenses the meter.
    assert_eq!(reg["license_id"], Value::Null, "{reg}");
    assert_eq!(reg["device_id"], Value::Null, "{reg}");
    let bal = server.ok("ann", &["balance"]);
    assert_eq!(bal["device_id"], Value::Null, "{bal}");
    let out = tempfile::tempdir().unwrap();
    let early = out.path().join("early");
    server.fails_with(
        "ann",
        &common::buy_letter(&["--format", "raw", "--out", s(&early)]),
        "not_licensed",
    );

    let fund = server.ok("ann", &common::fund_card("20"));
    assert_eq!(fund["amount_mills"], 20_000);
    assert_eq!(fund["balance_mills"], 20_000);
    assert!(fund["payment_id"].as_str().is_some());
    let bal = server.ok("ann", &["balance"]);
    assert!(
        bal["license_id"].as_str().unwrap().starts_with("LIC-"),
        "{bal}"
    );
    let device_id = bal["device_id"].as_str().unwrap().to_owned();
    assert_eq!(device_id.len(), 12);
    // The sandbox licensing system hands out the reserved test model.
    assert!(device_id.starts_with("TEST"), "{device_id}");

    let label = out.path().join("label");
    let buy = server.ok(
        "ann",
        &common::buy_letter(&[
            "--format",
            "png",
            "--format",
            "pdf",
            "--format",
            "raw",
            "--out",
            s(&label),
        ]),
    );
    assert_eq!(buy["postage_mills"], 780);
    assert_eq!(buy["balance_mills"], 19_220);
    assert_eq!(buy["printed"], true);
    let serial = buy["serial"].as_str().unwrap().to_owned();
    assert_eq!(serial, format!("{device_id}-1"));
    assert_eq!(buy["files"].as_array().unwrap().len(), 3);

    let bal = server.ok("ann", &["balance"]);
    assert_eq!(bal["balance_mills"], 19_220);
    assert_eq!(bal["ascending_mills"], 780);
    assert_eq!(bal["descending_mills"], 19_220);
    assert_eq!(bal["pieces"], 1);

    // The label decodes back to the exact item bytes.
    let raw = std::fs::read(label.with_extension("raw")).unwrap();
    assert_eq!(raw.len(), 126);
    let png = std::fs::read(label.with_extension("png")).unwrap();
    assert_eq!(stampline_label::decode_png(&png).unwrap(), raw);
    assert!(
        std::fs::read(label.with_extension("pdf"))
            .unwrap()
            .starts_with(b"%PDF-")
    );

    for file in [label.with_extension("png"), label.with_extension("raw")] {
        let v = server.ok("ann", &["verify", s(&file)]);
        assert_eq!(v["valid"], true, "{v}");
        assert_eq!(v["kind"], "postage");
        assert_eq!(v["serial"], serial.as_str());
        assert_eq!(v["device_id"], device_id.as_str());
        assert_eq!(
            v["test_item"], true,
            "a sandbox item says it is a test item: {v}"
        );
        assert_eq!(v["amount_mills"], 780);
        assert_eq!(v["status"], "printed");
        assert_eq!(v["key_id"].as_str().unwrap().len(), 8);
    }

    let items = server.history("ann", 5);
    assert_eq!(items.len(), 1);
    assert_eq!(items[0].serial, serial);
    assert_eq!(items[0].status, "printed");

    // The ledger and audit log are consistent on disk.
    common::assert_audit_passes(server.trust.parent().unwrap());
}

#[test]
fn a_flipped_bit_in_an_item_makes_verify_fail() {
    let server = TestServer::start();
    server.register("bob");
    server.ok("bob", &common::fund_card("5"));
    let out = tempfile::tempdir().unwrap();
    let label = out.path().join("l");
    server.ok("bob", &common::buy_raw(s(&label)));
    let raw = std::fs::read(label.with_extension("raw")).unwrap();
    // Flip one bit in the postage field (offset 6 + 1 + 8 + 4 + 4 + 5 + 5 = 33).
    let mut bad = raw.clone();
    bad[33] ^= 0x01;
    let bad_path = out.path().join("bad.raw");
    std::fs::write(&bad_path, &bad).unwrap();
    let (ok, v) = server.run("bob", &["verify", s(&bad_path)]);
    assert!(!ok);
    assert_eq!(v["valid"], false);
    assert!(v["reason"].as_str().unwrap().contains("signature"), "{v}");
    // And in the signature itself.
    let mut bad = raw;
    let last = bad.len() - 1;
    bad[last] ^= 0x80;
    std::fs::write(&bad_path, &bad).unwrap();
    let (ok, v) = server.run("bob", &["verify", s(&bad_path)]);
    assert!(!ok);
    assert_eq!(v["valid"], false);
}

#[test]
fn bad_input_gets_a_clear_code_and_changes_nothing() {
    let server = TestServer::start();
    server.register("cat");
    server.ok("cat", &common::fund_card("1"));
    assert_eq!(server.balance_mills("cat"), 1_000);
    let buy = |postage: &str, from: &str, to: &str| {
        vec![
            "buy",
            "--postage",
            postage,
            "--from",
            from,
            "--to",
            to,
            "--format",
            "raw",
            "--out",
            "/nonexistent/x",
        ]
        .into_iter()
        .map(str::to_owned)
        .collect::<Vec<String>>()
    };
    let cases: Vec<(Vec<String>, &str)> = vec![
        (buy("5.00", "02134", "94105"), "insufficient_funds"),
        (buy("0.78", "0213", "94105"), "bad_zip"),
        (buy("0.78", "02134", "9410"), "bad_zip"),
        (buy("0", "02134", "94105"), "bad_amount"),
        (buy("-1", "02134", "94105"), "bad_amount"),
        (buy("0.0001", "02134", "94105"), "bad_amount"),
    ];
    for (args, code) in &cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        server.fails_with("cat", &args, code);
        assert_eq!(
            server.balance_mills("cat"),
            1_000,
            "{args:?} changed the balance"
        );
    }
    // Cards: Luhn failure refused by the client; declined and insufficient-funds cards by the bank.
    server.fails_with(
        "cat",
        &common::fund_by_card("5", "4242424242424241"),
        "bad_card",
    );
    server.fails_with(
        "cat",
        &common::fund_by_card("5", "4000000000000002"),
        "card_declined",
    );
    server.fails_with(
        "cat",
        &common::fund_by_card("5", "4000000000009995"),
        "card_declined",
    );
    server.fails_with("cat", &common::fund_by_eft("5", "011000016"), "bad_account");
    assert_eq!(server.balance_mills("cat"), 1_000);
    // A failed print (unwritable output) voids and refunds at once.
    let (ok, v) = server.run("cat", &common::buy_raw("/nonexistent/dir/x"));
    assert!(!ok);
    assert_eq!(v["error"], "print_failed", "{v}");
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("voided and refunded"),
        "{v}"
    );
    assert_eq!(server.balance_mills("cat"), 1_000);
    assert_eq!(server.history("cat", 1)[0].status, "voided");
    // EFT with a valid routing number works.
    let v = server.ok("cat", &common::fund_eft("2"));
    assert_eq!(v["balance_mills"], 3_000);
    // Wrong password: a clear refusal.
    let out = Command::new(BIN)
        .args(["--json", "balance"])
        .env("STAMPLINE_SERVER", &server.url)
        .env("STAMPLINE_TRUST", &server.trust)
        .env("STAMPLINE_USER", "cat")
        .env("STAMPLINE_PASSWORD", "not the password at all")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["error"], "bad_credentials");
}

#[test]
fn quote_needs_no_login_and_buy_by_weight_charges_the_quote() {
    let server = TestServer::start();
    let q = server.ok(
        "nobody",
        &["quote", "--class", "first-class-letter", "--weight-oz", "2"],
    );
    assert_eq!(q["postage_mills"], 1_030);
    assert_eq!(q["class"], "first-class-letter");
    server.fails_with(
        "nobody",
        &["quote", "--class", "first-class-letter", "--weight-oz", "4"],
        "too_heavy",
    );
    server.register("fay");
    server.ok("fay", &common::fund_card("5"));
    let out = tempfile::tempdir().unwrap();
    let label = out.path().join("w");
    let buy = server.ok(
        "fay",
        &[
            "buy",
            "--class",
            "first-class-letter",
            "--weight-oz",
            "2",
            "--from",
            "02134",
            "--to",
            "94105",
            "--format",
            "raw",
            "--out",
            s(&label),
        ],
    );
    assert_eq!(buy["postage_mills"], 1_030);
    assert_eq!(buy["balance_mills"], 3_970);
    server.fails_with(
        "fay",
        &[
            "buy",
            "--class",
            "first-class-letter",
            "--weight-oz",
            "2",
            "--postage",
            "0.80",
            "--from",
            "02134",
            "--to",
            "94105",
            "--format",
            "raw",
            "--out",
            s(&label),
        ],
        "underpaid",
    );
    assert_eq!(server.balance_mills("fay"), 3_970);
}

#[test]
fn registration_refuses_bad_data_and_duplicates() {
    let server = TestServer::start();
    server.register("dan");
    server.fails_with("dan", &common::REGISTER, "user_exists");
    server.fails_with("eve", &common::register_in("MA", "0213"), "bad_zip");
    server.fails_with("eve", &common::register_in("Mass", "02134"), "bad_state");
}

#[test]
fn the_server_reads_its_firewall_from_a_config_file_and_refuses_a_bad_one() {
    let refused = TestServer::start_configured(Some("[firewall]\nmax_body = 1\n"))
        .err()
        .expect("a misspelt key is refused");
    assert_eq!(refused["error"], "bad_config", "{refused}");
    assert!(
        refused["message"].as_str().unwrap().contains("max_body"),
        "{refused}"
    );

    let server =
        TestServer::start_configured(Some("[firewall.registrations]\nper_source_burst = 1\n"))
            .expect("server starts");
    server.register("dan");
    server.fails_with("eve", &common::REGISTER, "rate_limited");
}

#[test]
fn demo_prints_labels_that_verify() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["demo", "--json", "--dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["valid"], true);
    assert_eq!(v["postage_mills"], 780);
    assert_eq!(v["balance_mills"], 19_220);
    let png = std::fs::read(v["label_png"].as_str().unwrap()).unwrap();
    let bytes = stampline_label::decode_png(&png).unwrap();
    let item = stampline_items::Item::parse(&bytes).unwrap();
    assert_eq!(
        item.body.serial().to_string(),
        v["serial"].as_str().unwrap()
    );
    assert!(
        std::fs::metadata(v["label_pdf"].as_str().unwrap())
            .unwrap()
            .len()
            > 0
    );
}

#[test]
fn history_pages_from_a_serial_and_exports_a_whole_period_as_csv() {
    let server = TestServer::start();
    server.register("pat");
    server.ok("pat", &common::fund_card("20"));
    let dir = tempfile::tempdir().unwrap();
    let mut serials = Vec::new();
    for n in 0..5 {
        let out = dir.path().join(format!("piece{n}"));
        let v = server.ok("pat", &common::buy_raw(s(&out)));
        serials.push(v["serial"].as_str().unwrap().to_owned());
    }
    serials.reverse(); // newest first
    let page = |args: &[&str]| -> Vec<String> {
        let mut all = vec!["history"];
        all.extend_from_slice(args);
        server.ok("pat", &all)["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["serial"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(page(&["--limit", "2"]), serials[..2]);
    assert_eq!(
        page(&["--limit", "2", "--before", &serials[1]]),
        serials[2..4]
    );
    assert_eq!(
        page(&["--limit", "2", "--before", &serials[3]]),
        serials[4..]
    );
    assert!(page(&["--before", &serials[4]]).is_empty());
    server.fails_with(
        "pat",
        &["history", "--before", "SL0199999999-1"],
        "unknown_item",
    );

    let today = time::OffsetDateTime::now_utc().date();
    let csv = dir.path().join("history.csv");
    let v = server.ok(
        "pat",
        &[
            "history",
            "--format",
            "csv",
            "--from",
            &today.to_string(),
            "--to",
            &today.to_string(),
            "--out",
            s(&csv),
        ],
    );
    assert_eq!(v["items"], 5, "{v}");
    let text = std::fs::read_to_string(&csv).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "serial,kind,amount,amount_mills,status,issued_at");
    assert_eq!(lines.len(), 6);
    assert!(lines[1].starts_with(&format!("{},postage,0.78,780,printed,", serials[0])));
    let tomorrow = (today + time::Duration::days(1)).to_string();
    let later = server.ok("pat", &["history", "--from", &tomorrow, "--to", &tomorrow]);
    assert!(later["items"].as_array().unwrap().is_empty(), "{later}");
    server.fails_with("pat", &["history", "--from", &tomorrow], "bad_request");
}

#[test]
fn an_operator_locks_a_user_out_and_lets_them_back_in() {
    let server = TestServer::start();
    server.register("lou");
    let data = server.trust.parent().unwrap();
    common::create_admin(data, "root");
    let links = server.ok("root", &["admin", "links"]);
    let listed: Vec<&str> = links["links"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["user"].as_str().unwrap())
        .collect();
    assert_eq!(
        listed,
        ["root"],
        "only the operator's own link is live: {links}"
    );
    server.fails_with("lou", &["admin", "links"], "forbidden");
    let locked = server.ok("root", &["admin", "lock", "lou"]);
    assert_eq!(locked["locked"], true, "{locked}");
    server.fails_with("lou", &["balance"], "user_locked");
    server.ok("root", &["admin", "unlock", "lou"]);
    server.ok("lou", &["balance"]);
    let kicked = server.ok("root", &["admin", "kick", "lou"]);
    assert_eq!(
        kicked["ended"],
        serde_json::json!([]),
        "lou has no live link: {kicked}"
    );
    common::assert_audit_passes(data);
}
