//! Value items end to end with the real binary: a ticket, checks, a coupon and a gift certificate
//! issued over the link and written as PNG, PDF and raw bytes; verified offline from the barcode
//! and against the server's status; redeemed once (a certificate in parts) by the issuer or a user
//! it allows; voids and refunds; and refusals that change nothing. The ledger's own suite covers
//! the money rules and the concurrent-redemption race on SQLite and PostgreSQL
//! (`testsuite::values`); the label crate's covers the layouts with outside decoders.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;

use common::{Cli, TestServer, s};
use serde_json::Value;
use stampline_items::Item;

/// Today and a day `days` ahead, as `YYYY-MM-DD` (UTC).
fn day(days: i64) -> String {
    (time::OffsetDateTime::now_utc().date() + time::Duration::days(days)).to_string()
}

/// `issue KIND ARGS --format png --format pdf --format raw --out DIR/NAME`.
fn issue(server: &TestServer, user: &str, dir: &Path, name: &str, args: &[&str]) -> Value {
    let out = dir.join(name);
    let mut all = vec!["issue"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--format", "png", "--format", "pdf", "--format", "raw"]);
    all.extend_from_slice(&["--out", s(&out)]);
    let v = server.ok(user, &all);
    assert_eq!(v["printed"], true, "{v}");
    assert_eq!(v["status"], "printed", "{v}");
    assert_eq!(v["files"].as_array().unwrap().len(), 3, "{v}");
    v
}

fn file(dir: &Path, name: &str, ext: &str) -> String {
    dir.join(name)
        .with_extension(ext)
        .to_str()
        .unwrap()
        .to_owned()
}

fn verify(server: &TestServer, path: &str) -> Value {
    let (_, v) = server.run("ann", &["verify", path]);
    v
}

#[test]
fn every_kind_is_issued_printed_verified_and_redeemed_once() {
    // Every command below is a login from this machine: more than the default burst.
    let server = TestServer::start_configured(Some(
        "[firewall.logins]\nper_source_per_minute = 6000\nper_source_burst = 200\n",
    ))
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    server.register("ann");
    server.register("bob");
    server.ok("ann", &common::fund_card("2000"));
    let device = server.ok("ann", &["balance"])["device_id"]
        .as_str()
        .unwrap()
        .to_owned();

    // A ticket: its price reserved and posted; the postage meter does not move.
    let until = day(30);
    let ticket = issue(
        &server,
        "ann",
        d,
        "ticket",
        &[
            "ticket",
            "--event",
            "Spring Concert",
            "--venue",
            "Town Hall, Springfield",
            "--seat",
            "Row F Seat 12",
            "--price",
            "45",
            "--valid-until",
            &until,
        ],
    );
    assert_eq!(ticket["kind"], "ticket");
    assert_eq!(ticket["amount_mills"], 45_000);
    assert_eq!(ticket["balance_mills"], 1_955_000);
    let ticket_serial = ticket["serial"].as_str().unwrap().to_owned();
    assert_eq!(ticket_serial, format!("{device}-20000000001"));
    let bal = server.ok("ann", &["balance"]);
    assert_eq!(bal["balance_mills"], 1_955_000, "{bal}");
    assert_eq!(bal["ascending_mills"], 0, "{bal}");
    assert_eq!(bal["descending_mills"], 2_000_000, "{bal}");
    assert_eq!(bal["pieces"], 0, "{bal}");

    // Verified from the PNG and from the PDF, with the server's status.
    for ext in ["png", "pdf"] {
        let v = verify(&server, &file(d, "ticket", ext));
        assert_eq!(v["valid"], true, "{ext}: {v}");
        assert_eq!(v["kind"], "ticket");
        assert_eq!(v["serial"], ticket_serial.as_str());
        assert_eq!(v["status"], "printed", "{v}");
        assert_eq!(v["valid_until"], until.as_str(), "{v}");
    }
    // The PNG holds exactly the item's bytes.
    let raw = std::fs::read(file(d, "ticket", "raw")).unwrap();
    let png = std::fs::read(file(d, "ticket", "png")).unwrap();
    assert_eq!(stampline_label::decode_png(&png).unwrap(), raw);

    // Bob may not redeem Ann's ticket until she allows him; then exactly once.
    server.fails_with("bob", &["redeem", &file(d, "ticket", "png")], "not_allowed");
    let allowed = server.ok("ann", &["redeemers", "add", "bob"]);
    assert_eq!(allowed["redeemers"], serde_json::json!(["bob"]));
    let redeemed = server.ok("bob", &["redeem", &file(d, "ticket", "png")]);
    assert_eq!(redeemed["status"], "redeemed", "{redeemed}");
    assert_eq!(redeemed["redeemed_mills"], 45_000);
    assert_eq!(redeemed["balance_mills"], 45_000);
    server.fails_with("bob", &["redeem", &ticket_serial], "already_redeemed");
    server.fails_with("ann", &["redeem", &ticket_serial], "already_redeemed");
    let after = verify(&server, &file(d, "ticket", "pdf"));
    assert_eq!(after["valid"], false, "{after}");
    assert_eq!(after["status"], "redeemed", "{after}");
    assert!(after["reason"].as_str().unwrap().contains("redeemed"));
    // A redeemed ticket is not refunded.
    server.fails_with("ann", &["refund", &ticket_serial], "not_pending");

    // Checks: numbered from the account's own sequence; whole cents only; a printed check not
    // yet presented is voided and its amount comes back.
    let check = issue(
        &server,
        "ann",
        d,
        "check1",
        &[
            "check",
            "--payee",
            "Springfield Water Dept",
            "--amount",
            "1234.56",
            "--memo",
            "ACCT 88-1204",
        ],
    );
    assert_eq!(
        check["serial"].as_str().unwrap(),
        format!("{device}-30000000001")
    );
    assert_eq!(check["balance_mills"], 1_955_000 - 1_234_560);
    let before = server.balance_mills("ann");
    server.fails_with(
        "ann",
        &["issue", "check", "--payee", "X", "--amount", "1.005"],
        "bad_request",
    );
    assert_eq!(
        server.balance_mills("ann"),
        before,
        "a refused check moves nothing"
    );
    let second = issue(
        &server,
        "ann",
        d,
        "check2",
        &["check", "--payee", "Corner Bakery", "--amount", "20"],
    );
    let second_serial = second["serial"].as_str().unwrap().to_owned();
    assert_eq!(second_serial, format!("{device}-30000000002"));
    let voided = server.ok("ann", &["void", &second_serial]);
    assert_eq!(voided["status"], "refunded", "{voided}");
    assert_eq!(voided["balance_mills"], before);
    let v = verify(&server, &file(d, "check2", "png"));
    assert_eq!(v["valid"], false, "{v}");
    assert_eq!(v["status"], "refunded");
    // The bank's positive-pay file: both checks, the voided one marked.
    let pp = d.join("positive-pay.csv");
    let v = server.ok(
        "ann",
        &[
            "checks",
            "positive-pay",
            "--from",
            &day(0),
            "--to",
            &day(0),
            "--out",
            s(&pp),
        ],
    );
    assert_eq!(v["checks"], 2, "{v}");
    let csv = std::fs::read_to_string(&pp).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(
        lines[0],
        "Account Number,Check Number,Issue Date,Amount,Payee Name,Void Indicator"
    );
    let (y, m, dd) = {
        let t = day(0);
        let p: Vec<String> = t.split('-').map(str::to_owned).collect();
        (p[0].clone(), p[1].clone(), p[2].clone())
    };
    assert_eq!(
        lines[1],
        format!("{device},1,{m}/{dd}/{y},1234.56,Springfield Water Dept,")
    );
    assert_eq!(
        lines[2],
        format!("{device},2,{m}/{dd}/{y},20.00,Corner Bakery,V")
    );
    assert_eq!(lines.len(), 3);
    let checks = server.ok("ann", &["history", "--kind", "check"]);
    let items = checks["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "{checks}");
    assert!(items.iter().all(|i| i["kind"] == "check"));

    // A coupon takes nothing from the balance and redeems once.
    let balance = server.balance_mills("ann");
    let coupon = issue(
        &server,
        "ann",
        d,
        "coupon",
        &[
            "coupon",
            "--issuer",
            "Corner Bakery",
            "--amount",
            "5",
            "--terms",
            "On any purchase of $25 or more. One per customer. Not for cash.",
            "--valid-until",
            &day(0),
        ],
    );
    assert_eq!(coupon["balance_mills"], balance);
    let coupon_serial = coupon["serial"].as_str().unwrap().to_owned();
    let r = server.ok("ann", &["redeem", &file(d, "coupon", "pdf")]);
    assert_eq!(r["status"], "redeemed");
    assert_eq!(r["balance_mills"], balance, "a coupon moves no money");
    server.fails_with("bob", &["redeem", &coupon_serial], "already_redeemed");

    // A gift certificate redeems in parts, never below zero.
    let cert = issue(
        &server,
        "ann",
        d,
        "certificate",
        &["certificate", "--recipient", "Jane Doe", "--amount", "50"],
    );
    let cert_serial = cert["serial"].as_str().unwrap().to_owned();
    let part = server.ok(
        "bob",
        &["redeem", &file(d, "certificate", "png"), "--amount", "20"],
    );
    assert_eq!(part["status"], "printed", "{part}");
    assert_eq!(part["remaining_mills"], 30_000);
    assert_eq!(part["balance_mills"], 65_000);
    let v = verify(&server, &file(d, "certificate", "png"));
    assert_eq!(v["valid"], true, "part of it is left: {v}");
    assert_eq!(v["remaining_mills"], 30_000);
    server.fails_with(
        "bob",
        &["redeem", &cert_serial, "--amount", "31"],
        "invalid_input",
    );
    let rest = server.ok("bob", &["redeem", &cert_serial]);
    assert_eq!(rest["redeemed_mills"], 30_000);
    assert_eq!(rest["remaining_mills"], 0);
    assert_eq!(rest["balance_mills"], 95_000);
    let v = verify(&server, &file(d, "certificate", "pdf"));
    assert_eq!(v["valid"], false, "{v}");

    // A copy of the redeemed ticket is no better than the original; a forged one (the genuine
    // layout and fields, signed by another key) fails offline.
    let copy = d.join("copy.raw");
    std::fs::copy(file(d, "ticket", "raw"), &copy).unwrap();
    assert_eq!(verify(&server, s(&copy))["valid"], false);
    let forged = forge(&raw, d);
    let v = verify(&server, s(&forged));
    assert_eq!(v["valid"], false, "{v}");
    assert!(v["reason"].as_str().unwrap().contains("signature"), "{v}");

    // Refusals that change nothing.
    let before = server.balance_mills("ann");
    for (args, code) in [
        (
            vec![
                "issue", "ticket", "--event", "E", "--venue", "V", "--seat", "S", "--price", "0",
            ],
            "bad_amount",
        ),
        (
            vec![
                "issue", "ticket", "--event", "E", "--venue", "V", "--seat", "S", "--price", "-5",
            ],
            "bad_amount",
        ),
        (
            vec![
                "issue",
                "certificate",
                "--recipient",
                "R",
                "--amount",
                "1000001",
            ],
            "bad_amount",
        ),
        (
            vec![
                "issue", "ticket", "--event", "E", "--venue", "V", "--seat", "S", "--price", "5000",
            ],
            "insufficient_funds",
        ),
        (
            vec![
                "issue",
                "certificate",
                "--recipient",
                &"R".repeat(101),
                "--amount",
                "1",
            ],
            "bad_request",
        ),
        (
            vec![
                "issue",
                "coupon",
                "--issuer",
                "I",
                "--amount",
                "1",
                "--terms",
                "T",
                "--valid-until",
                "2020-01-01",
            ],
            "bad_date",
        ),
    ] {
        server.fails_with("ann", &args, code);
    }
    assert_eq!(server.balance_mills("ann"), before);
    let (ok, _) = server.run("ann", &["issue", "bond", "--amount", "1"]);
    assert!(!ok, "an unknown kind is refused");

    common::assert_audit_passes(server.trust.parent().unwrap());
}

/// The genuine ticket's body, signed by another crypto device (a fresh software one) under the
/// genuine key id, rendered as the genuine layout would be: a forgery a verifier must catch.
fn forge(genuine: &[u8], dir: &Path) -> std::path::PathBuf {
    use stampline_psd::Psd as _;
    let item = Item::parse(genuine).unwrap();
    let forger = stampline_psd::SoftwarePsd::open(
        &dir.join("forger"),
        stampline_psd::Passphrase::Dev,
        time::OffsetDateTime::now_utc().unix_timestamp(),
    )
    .unwrap();
    let payload = item.body.signed_payload().unwrap();
    let signature = forger
        .sign_item(forger.current_signing_key(), &payload)
        .unwrap();
    let forged = Item {
        body: item.body,
        signature,
    };
    let bytes = forged.to_bytes().unwrap();
    let png = stampline_client::value::render(
        &forged,
        &bytes,
        stampline_client::print::DocFormat::Png,
        300,
        &[],
    )
    .unwrap();
    let path = dir.join("forged.png");
    std::fs::write(&path, png).unwrap();
    path
}
