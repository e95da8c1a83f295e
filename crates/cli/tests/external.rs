//! The external services (CMLS and the bank) end to end, with separate processes: `stampline
//! sandbox cmls`, `stampline sandbox bank` and `stampline server --cmls … --bank …`, driven by
//! the real `stampline` binary; the test reaches the sandboxes' test controls (faults, returns,
//! planted payments) over HTTPS.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

mod common;
use common::{BIN, CARD, Cli, PASSWORD, last_json, spawn_listening};

/// A child process that printed a `--json` listening line; its stderr goes to a log file.
struct Proc {
    child: Child,
    url: String,
    trust: PathBuf,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(args: &[&str], log: &Path) -> Proc {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    let started = spawn_listening(
        Command::new(BIN)
            .args(args)
            .env("STAMPLINE_LOG", "info")
            .stderr(log),
    )
    .unwrap_or_else(|printed| panic!("{args:?} did not start: {printed}"));
    Proc {
        child: started.child,
        url: started.url,
        trust: started.trust,
    }
}

/// Both sandboxes and a server using them, each with its own data dir under one temp dir.
struct World {
    dir: tempfile::TempDir,
    cmls: Option<Proc>,
    bank: Proc,
    server: Proc,
    /// Everything the client commands printed.
    outputs: std::cell::RefCell<String>,
}

impl World {
    fn start(server_flags: &[&str]) -> World {
        World::start_with(&[], &[], server_flags)
    }

    /// With extra flags for the sandboxes (`--fault …`) and for the server.
    fn start_with(cmls_flags: &[&str], bank_flags: &[&str], server_flags: &[&str]) -> World {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("logs.txt");
        let cmls_dir = dir.path().join("cmls");
        let mut cmls_args = vec![
            "sandbox",
            "cmls",
            "--json",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            cmls_dir.to_str().unwrap(),
        ];
        cmls_args.extend_from_slice(cmls_flags);
        let cmls = spawn(&cmls_args, &log);
        let bank_dir = dir.path().join("bank");
        let mut bank_args = vec![
            "sandbox",
            "bank",
            "--json",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            bank_dir.to_str().unwrap(),
        ];
        bank_args.extend_from_slice(bank_flags);
        let bank = spawn(&bank_args, &log);
        assert_eq!(cmls.trust, dir.path().join("cmls/trust.pem"));
        let mut args = vec![
            "server".to_owned(),
            "--json".into(),
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--data-dir".into(),
            dir.path().join("server").to_str().unwrap().into(),
            "--cmls".into(),
            cmls.url.clone(),
            "--cmls-trust".into(),
            cmls.trust.to_str().unwrap().into(),
            "--bank".into(),
            bank.url.clone(),
            "--bank-trust".into(),
            bank.trust.to_str().unwrap().into(),
        ];
        args.extend(server_flags.iter().map(|s| (*s).to_owned()));
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let server = spawn(&refs, &log);
        World {
            dir,
            cmls: Some(cmls),
            bank,
            server,
            outputs: Default::default(),
        }
    }

    fn register(&self, user: &str) -> (bool, Value) {
        self.run(user, &common::REGISTER)
    }

    fn fund_card(&self, user: &str, dollars: &str) -> (bool, Value) {
        self.run(user, &common::fund_card(dollars))
    }

    /// `stampline admin reconcile --json` on the server's data dir: (exit success, JSON).
    fn reconcile(&self) -> (bool, Value) {
        self.admin("reconcile")
    }

    /// `stampline admin SUB --json` on the server's data dir, with the server's CMLS and bank.
    fn admin(&self, sub: &str) -> (bool, Value) {
        let cmls = self.cmls.as_ref().unwrap();
        let out = Command::new(BIN)
            .args(["admin", sub, "--json", "--data-dir"])
            .arg(self.dir.path().join("server"))
            .args(["--cmls", &cmls.url, "--cmls-trust"])
            .arg(&cmls.trust)
            .args(["--bank", &self.bank.url, "--bank-trust"])
            .arg(&self.bank.trust)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        self.outputs.borrow_mut().push_str(&stdout);
        let v: Value = serde_json::from_str(stdout.lines().last().unwrap_or("null"))
            .unwrap_or_else(|_| {
                panic!(
                    "not JSON: {stdout} / {}",
                    String::from_utf8_lossy(&out.stderr)
                )
            });
        (out.status.success(), v)
    }
}

impl Cli for World {
    fn run(&self, user: &str, args: &[&str]) -> (bool, Value) {
        let out = Command::new(BIN)
            .arg("--json")
            .args(args)
            .env("STAMPLINE_SERVER", &self.server.url)
            .env("STAMPLINE_TRUST", &self.server.trust)
            .env("STAMPLINE_USER", user)
            .env("STAMPLINE_PASSWORD", PASSWORD)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        self.outputs.borrow_mut().push_str(&format!(
            "{}\n{}\n",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
        last_json(&out)
    }
}

/// One HTTPS call to a sandbox, pinned to its trust file.
fn call(p: &Proc, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let (host, port) = stampline_https::parse_https_url(&p.url).unwrap();
    let cert = stampline_https::read_pinned_cert(&p.trust).unwrap();
    let caller = stampline_https::JsonCaller::new(
        host,
        port,
        stampline_https::pinned_client_config(&cert, &[b"http/1.1"]),
        Duration::from_secs(30),
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(caller.call(method, path, &[], body.as_ref()))
        .unwrap()
}

fn faults(p: &Proc, list: Value) {
    let (status, v) = call(p, "POST", "/v1/test/faults", Some(json!({"faults": list})));
    assert_eq!(status, 200, "{v}");
}

fn bank_payments(w: &World) -> Vec<Value> {
    let (status, v) = call(&w.bank, "GET", "/v1/payments", None);
    assert_eq!(status, 200);
    v.as_array().unwrap().clone()
}

/// Every file under `dir` and the captured outputs, searched for `needle`.
fn find_in_files(dir: &Path, needle: &[u8], hits: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            find_in_files(&path, needle, hits);
        } else if let Ok(bytes) = std::fs::read(&path)
            && bytes.windows(needle.len()).any(|w| w == needle)
        {
            hits.push(path);
        }
    }
}

#[test]
fn register_and_fund_by_card_and_eft_through_separate_sandbox_processes() {
    let w = World::start(&[]);
    let (ok, reg) = w.register("ann");
    assert!(ok, "{reg}");
    assert_eq!(
        reg["license_id"],
        Value::Null,
        "licensed at the first funding: {reg}"
    );
    let cmls = w.cmls.as_ref().unwrap();
    let (_, devices) = call(cmls, "GET", "/v1/devices", None);
    assert_eq!(devices, json!([]), "registration asks CMLS nothing");

    let (ok, card) = w.fund_card("ann", "20");
    assert!(ok, "{card}");
    assert_eq!(card["balance_mills"], 20_000);
    let bal = w.ok("ann", &["balance"]);
    let device = bal["device_id"].as_str().unwrap().to_owned();

    // CMLS holds the device, active, with the key that signs for it.
    let (status, d) = call(cmls, "GET", &format!("/v1/devices/{device}"), None);
    assert_eq!(status, 200, "{d}");
    assert_eq!(d["status"], "active");
    assert_eq!(d["license_id"], bal["license_id"]);
    assert!(!d["public_key_spki_der_base64"].as_str().unwrap().is_empty());
    let eft = w.ok("ann", &common::fund_eft("10"));
    assert_eq!(eft["balance_mills"], 30_000);

    // The bank holds both payments; CMLS holds both resets with the registers after the last.
    let payments = bank_payments(&w);
    assert_eq!(payments.len(), 2);
    assert!(payments.iter().any(|p| p["method"] == "card"
        && p["amount_mills"] == 20_000
        && p["status"] == "captured"));
    assert!(
        payments.iter().any(|p| p["method"] == "eft"
            && p["amount_mills"] == 10_000
            && p["status"] == "pending")
    );
    let (_, d) = call(cmls, "GET", &format!("/v1/devices/{device}"), None);
    assert_eq!(d["resets"], 2);
    assert_eq!(d["reset_total_mills"], 30_000);
    assert_eq!(d["last_reset_registers"], json!([0, 30_000]));

    // Reconciliation is clean; a payment planted at the bank is found.
    let (clean, r) = w.reconcile();
    assert!(clean, "{r}");
    assert_eq!(r["differences"], json!([]));
    let (status, planted) = call(
        &w.bank,
        "POST",
        "/v1/test/plant",
        Some(json!({"amount_mills": 5_000})),
    );
    assert_eq!(status, 200);
    let (clean, r) = w.reconcile();
    assert!(!clean, "{r}");
    let diffs = r["differences"].as_array().unwrap();
    assert_eq!(diffs.len(), 1, "{r}");
    assert_eq!(diffs[0]["kind"], "unknown_at_bank");
    assert_eq!(diffs[0]["id"], planted["payment_id"]);

    // No card number anywhere: data dirs (server, CMLS, bank), logs, outputs.
    let mut hits = Vec::new();
    find_in_files(w.dir.path(), CARD.as_bytes(), &mut hits);
    assert!(hits.is_empty(), "card number found in {hits:?}");
    assert!(!w.outputs.borrow().contains(CARD));
    assert!(w.dir.path().join("logs.txt").exists());
}

#[test]
fn reconciliation_is_clean_right_after_start_with_an_admin_and_every_key_registered() {
    let w = World::start(&[]);
    common::create_admin(&w.dir.path().join("server"), "root");
    let (clean, r) = w.reconcile();
    assert!(clean, "{r}");
    // The server registered its signing key with the external CMLS at start.
    let cmls = w.cmls.as_ref().unwrap();
    let (status, keys) = call(cmls, "GET", "/v1/keys", None);
    assert_eq!(status, 200, "{keys}");
    let (_, published) = call_server_keys(&w);
    let published: Vec<&str> = published
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["key_id"].as_str().unwrap())
        .collect();
    let at_cmls: Vec<&str> = keys
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["key_id"].as_str().unwrap())
        .collect();
    assert!(!published.is_empty());
    assert_eq!(at_cmls, published, "{keys}");
    let logs = std::fs::read_to_string(w.dir.path().join("logs.txt")).unwrap();
    assert!(!logs.contains("could not register a signing key"), "{logs}");
}

/// The server's published keys (`GET /v1/keys`).
fn call_server_keys(w: &World) -> (u16, Value) {
    call(&w.server, "GET", "/v1/keys", None)
}

#[test]
fn a_bank_that_times_out_after_charging_is_retried_with_the_same_key_and_charges_once() {
    let w = World::start(&["--external-timeout-ms", "1000"]);
    assert!(w.register("ann").0);
    faults(
        &w.bank,
        json!([{"kind": "drop_after_commit", "ms": 3000, "path": "/v1/charges"}]),
    );
    let (ok, v) = w.fund_card("ann", "20");
    assert!(ok, "{v}");
    assert_eq!(v["balance_mills"], 20_000);
    let payments = bank_payments(&w);
    assert_eq!(payments.len(), 1, "charged once: {payments:?}");
    assert_eq!(payments[0]["amount_mills"], 20_000);
    assert_eq!(w.ok("ann", &["balance"])["balance_mills"], 20_000);
    // The first attempt did time out (the server logged it) before the retry found the charge.
    let logs = std::fs::read_to_string(w.dir.path().join("logs.txt")).unwrap();
    assert!(logs.contains("external call failed"), "no retry logged");
    assert!(logs.contains("drop_after_commit"), "no fault injected");
}

#[test]
fn a_bank_answering_5xx_gives_a_clear_error_and_credits_nothing() {
    // The faults come from the sandbox's --fault flag: three 503s, one per attempt.
    let w = World::start_with(
        &[],
        &["--fault", "error_5xx:3:0:/v1/charges"],
        &["--external-timeout-ms", "2000"],
    );
    assert!(w.register("ann").0);
    let v = w.fails_with("ann", &common::fund_card("20"), "payment_failed");
    let message = v["message"].as_str().unwrap();
    assert!(
        message.contains("503") && message.contains("nothing was credited"),
        "{message}"
    );
    assert_eq!(w.ok("ann", &["balance"])["balance_mills"], 0);
    assert!(bank_payments(&w).is_empty());
    // The bank is back: the same command now works.
    let (ok, v) = w.fund_card("ann", "20");
    assert!(ok, "{v}");
    assert_eq!(bank_payments(&w).len(), 1);
}

#[test]
fn a_returned_ach_debit_locks_the_account_until_it_is_paid() {
    let w = World::start(&["--settlement-poll-ms", "200"]);
    assert!(w.register("ann").0);
    let eft = w.ok("ann", &common::fund_eft("10"));
    let id = eft["payment_id"].as_str().unwrap().to_owned();
    let (status, r) = call(
        &w.bank,
        "POST",
        &format!("/v1/test/debits/{id}/return"),
        None,
    );
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["status"], "returned");
    let out = tempfile::tempdir().unwrap();
    let label = out.path().join("label").to_str().unwrap().to_owned();
    let buy = common::buy_raw(&label);
    let deadline = Instant::now() + Duration::from_secs(20);
    // Purchases made before the server's settlement poll sees the return go through.
    let mut bought = 0;
    let v = loop {
        let (ok, v) = w.run("ann", &buy);
        if !ok && v["error"] == "account_locked" {
            break v;
        }
        assert!(ok, "{v}");
        bought += 1;
        assert!(Instant::now() < deadline, "never locked: {v}");
        std::thread::sleep(Duration::from_millis(300));
    };
    let message = v["message"].as_str().unwrap();
    assert!(
        message.contains("returned") && message.contains(&id),
        "{message}"
    );
    // More EFT is refused while locked; paying the exact amount by card unlocks.
    w.fails_with("ann", &common::fund_eft("10"), "account_locked");
    let before = w.ok("ann", &["balance"])["balance_mills"].as_u64().unwrap();
    assert_eq!(before, 10_000 - 780 * bought);
    let (ok, paid) = w.fund_card("ann", "10");
    assert!(ok, "{paid}");
    assert_eq!(
        paid["balance_mills"], before,
        "paying the debt credits nothing"
    );
    w.ok("ann", &buy);
    // Our books and the bank's agree: the return and the card payment that paid it.
    let (clean, r) = w.reconcile();
    assert!(clean, "{r}");
}

#[test]
fn a_first_funding_fails_cleanly_while_cmls_is_down_and_succeeds_when_retried() {
    let mut w = World::start(&["--external-timeout-ms", "1000"]);
    let cmls = w.cmls.take().unwrap();
    let listen = cmls.url.trim_start_matches("https://").to_owned();
    drop(cmls);
    // Registration needs no CMLS; the first funding does, and charges nothing without it.
    assert!(w.register("ann").0);
    let v = w.fails_with("ann", &common::fund_card("20"), "unavailable");
    assert!(
        v["message"].as_str().unwrap().contains("licensing system"),
        "{v}"
    );
    assert!(bank_payments(&w).is_empty(), "nothing was charged");
    let log = w.dir.path().join("logs.txt");
    w.cmls = Some(spawn(
        &[
            "sandbox",
            "cmls",
            "--json",
            "--listen",
            &listen,
            "--data-dir",
            w.dir.path().join("cmls").to_str().unwrap(),
        ],
        &log,
    ));
    let (ok, paid) = w.fund_card("ann", "20");
    assert!(ok, "the retry licenses and funds: {paid}");
    let bal = w.ok("ann", &["balance"]);
    assert!(
        bal["device_id"].as_str().unwrap().starts_with("TEST"),
        "{bal}"
    );
    assert_eq!(bank_payments(&w).len(), 1);
}

#[test]
fn auto_refill_tops_up_below_the_threshold_once_and_stops_at_the_cap() {
    let w = World::start(&[]);
    assert!(w.register("ann").0);
    let opts = w.ok("ann", &["payment-options"]);
    assert_eq!(opts["methods"], json!(["card", "eft"]));
    assert_eq!(opts["auto_refill"]["active"], false);
    assert!(w.fund_card("ann", "2").0);
    let set = w.ok(
        "ann",
        &[
            "auto-refill",
            "--threshold",
            "1.50",
            "--amount",
            "5",
            "--cap",
            "5",
            "--card",
            CARD,
            "--exp",
            "12/30",
            "--cvc",
            "123",
        ],
    );
    assert_eq!(set["auto_refill"]["last4"], "4242");
    let out = tempfile::tempdir().unwrap();
    let label = out.path().join("label").to_str().unwrap().to_owned();
    let buy = |postage: &str| {
        w.ok(
            "ann",
            &[
                "buy",
                "--postage",
                postage,
                "--from",
                "02134",
                "--to",
                "94105",
                "--format",
                "raw",
                "--out",
                &label,
            ],
        );
    };
    let wait_for_balance = |mills: u64| {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let b = w.ok("ann", &["balance"])["balance_mills"].as_u64().unwrap();
            if b == mills {
                return;
            }
            assert!(Instant::now() < deadline, "balance {b}, expected {mills}");
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    buy("0.78"); // 2.000 - 0.780 = 1.220 < 1.50: one refill of 5.
    wait_for_balance(6_220);
    buy("5"); // 1.220 again, but the cap is used up.
    std::thread::sleep(Duration::from_millis(1_000));
    wait_for_balance(1_220);
    let card_payments: Vec<Value> = bank_payments(&w)
        .into_iter()
        .filter(|p| p["method"] == "card")
        .collect();
    assert_eq!(
        card_payments.len(),
        2,
        "the funding and one refill: {card_payments:?}"
    );
    let opts = w.ok("ann", &["payment-options"]);
    assert_eq!(opts["auto_refill"]["used_mills"], 5_000);
    // The daily report: two pieces, $5.78 printed, registers continuous.
    let (ok, sent) = w.admin("report-usage");
    assert!(ok, "{sent}");
    assert_eq!(sent["reports"][0]["flags"], json!([]));
    let device = sent["reports"][0]["device_id"].as_str().unwrap().to_owned();
    let (_, d) = call(
        w.cmls.as_ref().unwrap(),
        "GET",
        &format!("/v1/devices/{device}"),
        None,
    );
    assert_eq!(d["last_report"]["pieces"], 2);
    assert_eq!(d["last_report"]["ascending_mills"], 5_780);
    assert_eq!(
        d["resets"], 2,
        "the funding and the refill were both reported"
    );
    let (clean, r) = w.reconcile();
    assert!(clean, "{r}");
    let mut hits = Vec::new();
    find_in_files(w.dir.path(), CARD.as_bytes(), &mut hits);
    assert!(hits.is_empty(), "card number found in {hits:?}");
}

#[test]
fn closing_an_account_refunds_the_balance_to_the_card_and_withdraws_the_device() {
    let w = World::start(&[]);
    assert!(w.register("ann").0);
    assert!(w.fund_card("ann", "20").0);
    let out = tempfile::tempdir().unwrap();
    let label = out.path().join("label").to_str().unwrap().to_owned();
    w.ok("ann", &common::buy_raw(&label));
    // A pending EFT debit cannot be paid back yet: only the card's part is refundable.
    w.ok("ann", &common::fund_eft("10"));
    let v = w.fails_with("ann", &["close-account", "--yes"], "refund_unavailable");
    assert!(
        v["message"].as_str().unwrap().contains("not settled"),
        "{v}"
    );
    assert_eq!(w.ok("ann", &["balance"])["balance_mills"], 29_220);
    let (clean, r) = w.reconcile();
    assert!(clean, "a refused closure leaves nothing half-done: {r}");

    // With the card's money only, the closure goes through.
    let w = World::start(&[]);
    let (ok, reg) = w.register("bob2");
    assert!(ok, "{reg}");
    assert!(w.fund_card("bob2", "20").0);
    let device2 = w.ok("bob2", &["balance"])["device_id"]
        .as_str()
        .unwrap()
        .to_owned();
    w.ok("bob2", &common::buy_raw(&label));
    let closed = w.ok("bob2", &["close-account", "--yes"]);
    assert_eq!(closed["status"], "closed");
    assert_eq!(closed["refunded_mills"], 19_220);
    assert_eq!(closed["balance_mills"], 0);
    let payments = bank_payments(&w);
    assert_eq!(payments.len(), 1);
    assert_eq!(payments[0]["refunded_mills"], 19_220);
    let (_, d) = call(
        w.cmls.as_ref().unwrap(),
        "GET",
        &format!("/v1/devices/{device2}"),
        None,
    );
    assert_eq!(d["status"], "withdrawn");
    w.fails_with("bob2", &common::fund_card("5"), "account_closed");
    w.fails_with("bob2", &common::buy_raw(&label), "account_closed");
    let (clean, r) = w.reconcile();
    assert!(clean, "{r}");
    // The ledger's own audit agrees: the payout lowered the control total.
    common::assert_audit_passes(w.dir.path().join("server"));
}

#[test]
fn a_first_funding_that_failed_after_its_licence_gets_the_same_licence_when_retried() {
    // CMLS licenses, then refuses the device registration three times (every attempt).
    let w = World::start_with(
        &["--fault", "error_5xx:3:0:/v1/devices"],
        &[],
        &["--external-timeout-ms", "2000"],
    );
    assert!(w.register("ann").0);
    let (ok, v) = w.fund_card("ann", "20");
    assert!(!ok && v["error"] == "unavailable", "{v}");
    assert!(bank_payments(&w).is_empty(), "nothing was charged");
    let (ok, paid) = w.fund_card("ann", "20");
    assert!(ok, "{paid}");
    let bal = w.ok("ann", &["balance"]);
    assert_eq!(bal["license_id"], "LIC-00000001", "the same licence: {bal}");
    assert_eq!(bal["device_id"], "TEST00000001");
    let (_, devices) = call(w.cmls.as_ref().unwrap(), "GET", "/v1/devices", None);
    assert_eq!(devices.as_array().unwrap().len(), 1);
    let (clean, r) = w.reconcile();
    assert!(clean, "{r}");
}
