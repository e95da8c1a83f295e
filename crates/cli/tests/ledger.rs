//! The ledger under stress, with the real `stampline server` processes: two servers on one
//! PostgreSQL with eight clients draining one account; kill -9 during purchase load, 20+ times
//! on SQLite and 8 times on PostgreSQL;
//! registers and rows edited behind the server's back; the load generator.

#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use serde_json::{Value, json};
use stampline_client::{Endpoint, Link, Trust};
use stampline_items::{Body, Item};
use stampline_ledger::pgtest::TestDatabase;
use stampline_wire::{Card, Op, Secret};

mod common;
use common::{BIN, PASSWORD, audit, spawn_listening};
const PRICE_MILLS: u64 = 780;

/// A `stampline server` process; killed (SIGKILL) when dropped.
struct Server {
    child: Child,
    url: String,
    trust: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    fn start(data: &Path, database: Option<&str>, confirm_window_ms: u64) -> Server {
        let mut cmd = common::server_command(data);
        cmd.args(["--confirm-window-ms", &confirm_window_ms.to_string()]);
        if let Some(url) = database {
            cmd.args(["--database", url]);
        }
        let server = spawn_listening(cmd.stderr(Stdio::null()))
            .unwrap_or_else(|printed| panic!("server did not start: {printed}"));
        Server {
            child: server.child,
            url: server.url,
            trust: server.trust,
        }
    }

    fn endpoint(&self) -> Endpoint {
        Endpoint::new(&self.url, Trust::from_file(&self.trust).unwrap()).unwrap()
    }
}

fn assert_audit_clean(args: &[&str]) {
    let (ok, report) = audit(args);
    assert!(ok && report["clean"] == json!(true), "audit: {report}");
    assert_eq!(report["seals_checked"], json!(true), "{report}");
}

async fn register(ep: &Endpoint, user: &str) {
    let form = json!({"user": user, "password": PASSWORD, "name": "Ann Example",
        "address": "1 Main St", "city": "Boston", "state": "MA", "zip": "02134"});
    ep.register(&form).await.unwrap();
}

async fn fund(link: &Link, amount_mills: u64) {
    let r = link
        .request(Op::Fund {
            amount_mills,
            card: Some(Card {
                number: Secret("4242424242424242".into()),
                exp: "12/30".into(),
                cvc: Secret("123".into()),
            }),
            card_token: None,
            eft: None,
        })
        .await
        .unwrap();
    assert!(r.ok, "fund: {r:?}");
}

fn issue_op() -> Op {
    Op::Issue {
        kind: "postage".into(),
        postage_mills: PRICE_MILLS,
        from_zip: "02134".into(),
        to_zip: "94105".into(),
        mail_date: time::OffsetDateTime::now_utc().date().to_string(),
        class: "first-class-letter".into(),
        weight_oz: None,
        amount_mills: None,
        fields: Default::default(),
        valid_until: None,
    }
}

/// An acknowledged issue: the serial and the signed item.
struct Issued {
    serial: String,
    item: Vec<u8>,
}

/// Issues one item; `Err(code)` when refused, `Err("lost")` when the link failed.
async fn issue(link: &Link) -> Result<Issued, String> {
    let r = link.request(issue_op()).await.map_err(|e| e.code())?;
    if !r.ok {
        return Err(r.code().unwrap_or("error").to_owned());
    }
    Ok(Issued {
        serial: r.fields["serial"].as_str().unwrap().to_owned(),
        item: base64::engine::general_purpose::STANDARD
            .decode(r.fields["item"].as_str().unwrap())
            .unwrap(),
    })
}

async fn confirm(link: &Link, serial: &str) -> Result<(), String> {
    let r = link
        .request(Op::Confirm {
            serial: serial.to_owned(),
            printed: true,
        })
        .await
        .map_err(|e| e.code())?;
    if r.ok {
        Ok(())
    } else {
        Err(r.code().unwrap_or("error").to_owned())
    }
}

async fn balance(link: &Link) -> Value {
    let r = link.request(Op::Balance {}).await.unwrap();
    assert!(r.ok);
    Value::Object(r.fields)
}

#[test]
fn two_servers_on_one_postgres_never_overdraw_or_repeat_a_piece_or_register() {
    // The test database is made and dropped with a blocking client, outside the runtime.
    let Some(db) = TestDatabase::create("two_servers") else {
        return;
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(two_servers_drain_one_account(db.url()));
}

async fn two_servers_drain_one_account(db_url: &str) {
    const STAMPS: u64 = 24;
    const CLIENTS: usize = 8;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // Both servers share the data dir for the crypto device's keys and the TLS identity; the
    // ledger is in PostgreSQL.
    let a = Server::start(&data, Some(db_url), 600_000);
    let b = Server::start(&data, Some(db_url), 600_000);
    let (ep_a, ep_b) = (a.endpoint(), b.endpoint());
    register(&ep_a, "ann").await;
    let owner = Link::connect(&ep_b, "ann", PASSWORD).await.unwrap();
    fund(&owner, STAMPS * PRICE_MILLS).await;

    let mut clients = Vec::new();
    for c in 0..CLIENTS {
        let ep = if c % 2 == 0 {
            ep_a.clone()
        } else {
            ep_b.clone()
        };
        clients.push(tokio::spawn(async move {
            let link = Link::connect(&ep, "ann", PASSWORD).await.unwrap();
            let mut bought = Vec::new();
            loop {
                match issue(&link).await {
                    Ok(item) => {
                        confirm(&link, &item.serial).await.unwrap();
                        bought.push(item);
                    }
                    Err(code) if code == "insufficient_funds" => break,
                    Err(code) => panic!("client {c}: issue failed with {code}"),
                }
            }
            let _ = link.bye().await;
            bought
        }));
    }
    let mut bought = Vec::new();
    for c in clients {
        bought.extend(c.await.unwrap());
    }

    assert_eq!(bought.len() as u64, STAMPS, "successful purchases");
    let serials: HashSet<&str> = bought.iter().map(|i| i.serial.as_str()).collect();
    assert_eq!(serials.len(), bought.len(), "a serial was issued twice");
    let mut pieces = HashSet::new();
    let mut ascending = HashSet::new();
    for i in &bought {
        let item = Item::parse(&i.item).unwrap();
        let Body::Postage(ind) = item.body else {
            panic!("not postage")
        };
        assert!(pieces.insert(ind.piece), "piece {} repeated", ind.piece);
        assert!(
            ascending.insert(ind.ascending.mills()),
            "ascending register {} repeated",
            ind.ascending.mills()
        );
    }
    assert_eq!(pieces, (1..=STAMPS as u32).collect::<HashSet<_>>());
    let b_view = balance(&owner).await;
    assert_eq!(b_view["balance_mills"], json!(0));
    assert_eq!(b_view["ascending_mills"], json!(STAMPS * PRICE_MILLS));
    let _ = owner.bye().await;
    assert_audit_clean(&["--database", db_url, "--data-dir", data.to_str().unwrap()]);
    drop((a, b));
}

/// What the ledger holds for a serial or a payment, read straight from the database.
trait LedgerRows {
    /// The statuses stored under this serial (one, or none when missing).
    fn item_statuses(&mut self, serial: &str) -> Vec<String>;
    /// (payments with this id, fund transfers naming it).
    fn payment_counts(&mut self, payment_id: &str) -> (i64, i64);
    /// Reserve transfers (= items ever issued).
    fn reserves(&mut self) -> i64;
}

impl LedgerRows for rusqlite::Connection {
    fn item_statuses(&mut self, serial: &str) -> Vec<String> {
        self.prepare("SELECT status FROM items WHERE serial = ?1")
            .unwrap()
            .query_map([serial], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    fn payment_counts(&mut self, payment_id: &str) -> (i64, i64) {
        self.query_row(
            "SELECT (SELECT COUNT(*) FROM payments WHERE payment_id = ?1),
                    (SELECT COUNT(*) FROM transfers WHERE payment_id = ?1 AND kind = 'fund')",
            [payment_id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap()
    }

    fn reserves(&mut self) -> i64 {
        self.query_row(
            "SELECT COUNT(*) FROM transfers WHERE kind = 'reserve'",
            [],
            |r| r.get(0),
        )
        .unwrap()
    }
}

impl LedgerRows for postgres::Client {
    fn item_statuses(&mut self, serial: &str) -> Vec<String> {
        self.query("SELECT status FROM items WHERE serial = $1", &[&serial])
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect()
    }

    fn payment_counts(&mut self, payment_id: &str) -> (i64, i64) {
        let row = self
            .query_one(
                "SELECT (SELECT COUNT(*) FROM payments WHERE payment_id = $1),
                        (SELECT COUNT(*) FROM transfers WHERE payment_id = $1 AND kind = 'fund')",
                &[&payment_id],
            )
            .unwrap();
        (row.get(0), row.get(1))
    }

    fn reserves(&mut self) -> i64 {
        self.query_one("SELECT COUNT(*) FROM transfers WHERE kind = 'reserve'", &[])
            .unwrap()
            .get(0)
    }
}

/// Kills the server (SIGKILL) `rounds` times during purchase and payment load and restarts it on
/// the same data; checks the audit after each restart and, at the end, that every acknowledged
/// purchase and payment exists exactly once. Returns the acknowledged serials and payments.
async fn kill_9_rounds(
    data: &Path,
    database: Option<&str>,
    rounds: u64,
) -> (Vec<String>, HashSet<String>, Vec<String>) {
    const WORKERS: usize = 4;
    let data_arg = data.to_str().unwrap().to_owned();
    let mut audit_args = vec!["--data-dir".to_owned(), data_arg.clone()];
    if let Some(url) = database {
        audit_args.extend(["--database".to_owned(), url.to_owned()]);
    }
    let audit_args: Vec<&str> = audit_args.iter().map(String::as_str).collect();
    let acked: Arc<Mutex<Vec<String>>> = Arc::default();
    let confirmed: Arc<Mutex<Vec<String>>> = Arc::default();
    let payments: Arc<Mutex<Vec<String>>> = Arc::default();
    for round in 0..rounds {
        // A short confirmation window: items issued but not confirmed before a kill are voided
        // and refunded by the restarted server, while the load runs on.
        let server = Server::start(data, database, 200);
        let ep = server.endpoint();
        if round == 0 {
            register(&ep, "ann").await;
        }
        let link = Arc::new(Link::connect(&ep, "ann", PASSWORD).await.unwrap());
        if round == 0 {
            fund(&link, 5_000_000).await;
        } else {
            // Audit after each restart, with the server up.
            assert_audit_clean(&audit_args);
        }
        let mut workers = Vec::new();
        for _ in 0..WORKERS {
            let (link, acked, confirmed) = (
                Arc::clone(&link),
                Arc::clone(&acked),
                Arc::clone(&confirmed),
            );
            workers.push(tokio::spawn(async move {
                loop {
                    let Ok(item) = issue(&link).await else {
                        break;
                    };
                    acked.lock().unwrap().push(item.serial.clone());
                    if confirm(&link, &item.serial).await.is_err() {
                        break;
                    }
                    confirmed.lock().unwrap().push(item.serial);
                }
            }));
        }
        // One worker pays in $1 at a time: acknowledged payments must survive too.
        {
            let (link, payments) = (Arc::clone(&link), Arc::clone(&payments));
            workers.push(tokio::spawn(async move {
                loop {
                    let r = link
                        .request(Op::Fund {
                            amount_mills: 1000,
                            card: Some(Card {
                                number: Secret("4242424242424242".into()),
                                exp: "12/30".into(),
                                cvc: Secret("123".into()),
                            }),
                            card_token: None,
                            eft: None,
                        })
                        .await;
                    match r {
                        Ok(r) if r.ok => payments
                            .lock()
                            .unwrap()
                            .push(r.fields["payment_id"].as_str().unwrap().to_owned()),
                        _ => break,
                    }
                }
            }));
        }
        // Kill at a different instant each round (150–450 ms into the load).
        tokio::time::sleep(Duration::from_millis(150 + (round * 137) % 300)).await;
        drop(server);
        for w in workers {
            w.await.unwrap();
        }
    }
    // One last restart: the window of every unconfirmed item passes, then check every ack.
    let server = Server::start(data, database, 200);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_audit_clean(&audit_args);
    drop(server);

    let acked = acked.lock().unwrap().clone();
    let confirmed: HashSet<String> = confirmed.lock().unwrap().iter().cloned().collect();
    assert!(
        acked.len() as u64 >= rounds,
        "too little load: {} acknowledged purchases in {rounds} rounds",
        acked.len()
    );
    eprintln!(
        "kill -9 test: {} purchases acknowledged, {} confirmed, {} payments, over {rounds} kills",
        acked.len(),
        confirmed.len(),
        payments.lock().unwrap().len()
    );
    (acked, confirmed, payments.lock().unwrap().clone())
}

/// Checks what [`kill_9_rounds`] saw acknowledged against the ledger's rows.
fn check_acknowledged(
    db: &mut dyn LedgerRows,
    acked: &[String],
    confirmed: &HashSet<String>,
    payments: &[String],
) {
    let mut unique = HashSet::new();
    for serial in acked {
        assert!(unique.insert(serial), "serial {serial} acknowledged twice");
        let rows = db.item_statuses(serial);
        assert_eq!(rows.len(), 1, "acknowledged item {serial} is missing");
        if confirmed.contains(serial) {
            assert_eq!(rows[0], "printed", "confirmed item {serial}");
        } else {
            // Not confirmed to the client before the kill: either the confirmation committed
            // (its answer was lost) or the restarted server voided and refunded the item.
            assert!(
                rows[0] == "printed" || rows[0] == "voided",
                "item {serial} is {}",
                rows[0]
            );
        }
    }
    assert!(!payments.is_empty(), "no payment was acknowledged");
    for payment_id in payments {
        assert_eq!(
            db.payment_counts(payment_id),
            (1, 1),
            "acknowledged payment {payment_id}"
        );
    }
    assert!(db.reserves() as usize >= acked.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_purchases_survive_kill_9_at_any_instant() {
    const ROUNDS: u64 = 22;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (acked, confirmed, payments) = kill_9_rounds(&data, None, ROUNDS).await;
    let mut db = rusqlite::Connection::open(data.join("ledger.sqlite")).unwrap();
    check_acknowledged(&mut db, &acked, &confirmed, &payments);
}

#[test]
fn acknowledged_purchases_survive_kill_9_of_a_server_on_postgres() {
    const ROUNDS: u64 = 8;
    let Some(db) = TestDatabase::create("kill_9_postgres") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap();
    let (acked, confirmed, payments) =
        runtime.block_on(kill_9_rounds(&data, Some(db.url()), ROUNDS));
    drop(runtime);
    let mut client = postgres::Client::connect(db.url(), postgres::NoTls).unwrap();
    check_acknowledged(&mut client, &acked, &confirmed, &payments);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_register_raised_in_the_database_freezes_the_meter_and_fails_the_audit() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data_arg = data.to_str().unwrap().to_owned();
    let server = Server::start(&data, None, 600_000);
    let ep = server.endpoint();
    register(&ep, "ann").await;
    register(&ep, "bob").await;
    let ann = Link::connect(&ep, "ann", PASSWORD).await.unwrap();
    let bob = Link::connect(&ep, "bob", PASSWORD).await.unwrap();
    fund(&ann, 10_000).await;
    fund(&bob, 10_000).await;
    let first = issue(&ann).await.unwrap();
    confirm(&ann, &first.serial).await.unwrap();
    assert_audit_clean(&["--data-dir", &data_arg]);

    // Raise ann's descending register and balance together, behind the server's back.
    let db = rusqlite::Connection::open(data.join("ledger.sqlite")).unwrap();
    db.busy_timeout(Duration::from_secs(5)).unwrap();
    db.execute_batch(
        "UPDATE meters SET descending_mills = descending_mills + 100000
             WHERE user_id = (SELECT id FROM users WHERE user = 'ann');
         UPDATE accounts SET balance = balance + 100000
             WHERE id = 'customer:' || (SELECT id FROM users WHERE user = 'ann');",
    )
    .unwrap();

    assert_eq!(issue(&ann).await.err().as_deref(), Some("meter_frozen"));
    assert_eq!(
        issue(&ann).await.err().as_deref(),
        Some("meter_frozen"),
        "the meter stays frozen"
    );
    // Other meters work on.
    let other = issue(&bob).await.unwrap();
    confirm(&bob, &other.serial).await.unwrap();

    let (ok, report) = audit(&["--data-dir", &data_arg]);
    assert!(!ok, "audit passed a tampered ledger: {report}");
    let problems = report["problems"].to_string();
    assert!(problems.contains("seal"), "{problems}");

    // Deleting an audit-log entry is reported too.
    db.execute_batch("DROP TRIGGER audit_log_no_delete; DELETE FROM audit_log WHERE seq = 2;")
        .unwrap();
    let (ok, report) = audit(&["--data-dir", &data_arg]);
    assert!(!ok);
    assert!(
        report["problems"].to_string().contains("audit log"),
        "{report}"
    );
    drop(server);
}

/// Deleting the newest audit entries leaves a chain that still verifies, so the running server
/// keeps the head it wrote and refuses to append to another one (no money moves); deleting an
/// entry inside the chain while the server is down stops the next start.
#[tokio::test(flavor = "multi_thread")]
async fn audit_entries_deleted_behind_the_servers_back_stop_it_moving_money_and_starting() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&data, None, 600_000);
    let ep = server.endpoint();
    register(&ep, "ann").await;
    let ann = Link::connect(&ep, "ann", PASSWORD).await.unwrap();
    fund(&ann, 10_000).await;
    let first = issue(&ann).await.unwrap();
    confirm(&ann, &first.serial).await.unwrap();
    let before = balance(&ann).await;

    let db = rusqlite::Connection::open(data.join("ledger.sqlite")).unwrap();
    db.busy_timeout(Duration::from_secs(5)).unwrap();
    db.execute_batch(
        "DROP TRIGGER audit_log_no_delete;
         DELETE FROM audit_log WHERE seq = (SELECT MAX(seq) FROM audit_log);",
    )
    .unwrap();
    assert_eq!(issue(&ann).await.err().as_deref(), Some("audit_log_broken"));
    assert_eq!(
        issue(&ann).await.err().as_deref(),
        Some("audit_log_broken"),
        "the server keeps refusing"
    );
    assert_eq!(balance(&ann).await, before, "nothing moved");
    drop(ann);
    drop(server);

    db.execute("DELETE FROM audit_log WHERE seq = 2", [])
        .unwrap();
    drop(db);
    let refused = common::start_server(&data)
        .err()
        .expect("the server started on a broken audit log");
    assert!(
        refused.to_string().contains("audit log was changed"),
        "{refused}"
    );
}

/// Sends the server SIGINT, as an operator's Ctrl-C.
fn interrupt(child: &Child) {
    let interrupted = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(interrupted.success());
}

/// Stops the server cleanly (it anchors its audit log) and checks that it exited well.
fn stop(server: &mut common::Listening) {
    interrupt(&server.child);
    assert!(server.child.wait().unwrap().success());
}

/// On a running server: ann registers, funds $10 and buys one item, confirmed printed.
async fn ann_buys_one_item(server: &common::Listening) {
    let ep = Endpoint::new(&server.url, Trust::from_file(&server.trust).unwrap()).unwrap();
    register(&ep, "ann").await;
    let ann = Link::connect(&ep, "ann", PASSWORD).await.unwrap();
    fund(&ann, 10_000).await;
    let item = issue(&ann).await.unwrap();
    confirm(&ann, &item.serial).await.unwrap();
    ann.bye().await.unwrap();
}

/// The newest entries deleted while the server is down leave whole chains; the anchor the server
/// wrote when it stopped (sealed by its crypto device, in the data dir) finds them at the next
/// start.
#[tokio::test(flavor = "multi_thread")]
async fn audit_entries_deleted_while_the_server_is_down_are_found_by_its_anchor() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let start = || common::start_server(&data);
    let mut server = start().unwrap();
    ann_buys_one_item(&server).await;
    // A clean stop writes the anchor of the log as it is.
    stop(&mut server);
    // The anchor names the newest entry (the confirm's): written at the stop, not at the start.
    let db = rusqlite::Connection::open(data.join("ledger.sqlite")).unwrap();
    let newest: i64 = db
        .query_row("SELECT MAX(seq) FROM audit_log", [], |r| r.get(0))
        .unwrap();
    drop(db);
    let anchor: Value =
        serde_json::from_slice(&std::fs::read(data.join("audit-anchor.json")).unwrap()).unwrap();
    assert_eq!(anchor["heads"][0]["seq"], json!(newest), "{anchor}");

    // Unchanged, it starts again (and anchors anew).
    let mut again = start().unwrap();
    let _ = again.child.kill();
    let _ = again.child.wait();

    let db = rusqlite::Connection::open(data.join("ledger.sqlite")).unwrap();
    db.execute_batch(
        "DROP TRIGGER audit_log_no_delete;
         DELETE FROM audit_log WHERE seq = (SELECT MAX(seq) FROM audit_log);",
    )
    .unwrap();
    drop(db);
    let (ok, _) = audit(&["--data-dir", data.to_str().unwrap()]);
    assert!(!ok, "the confirm's transfer lost its entry");
    let refused = start()
        .err()
        .expect("the server started on a truncated audit log");
    assert!(refused.to_string().contains("are gone"), "{refused}");
}

#[test]
fn bench_issues_and_confirms_the_requested_count_and_reports_percentiles() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&data, None, 600_000);
    let bench = |extra: &[&str]| -> Value {
        let out = Command::new(BIN)
            .args([
                "bench", "--json", "--links", "3", "--count", "40", "--depth", "2",
            ])
            .args(extra)
            .env("STAMPLINE_SERVER", &server.url)
            .env("STAMPLINE_TRUST", &server.trust)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{stdout} / {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_str(stdout.lines().last().unwrap()).unwrap()
    };
    let v = bench(&[]);
    assert_eq!(v["issued"], json!(40));
    assert_eq!(v["errors"], json!(0));
    for field in ["indicia_per_s", "p50_ms", "p99_ms", "p999_ms"] {
        assert!(v[field].as_f64().is_some_and(|x| x > 0.0), "{field}: {v}");
    }
    assert!(v["p50_ms"].as_f64() <= v["p99_ms"].as_f64());
    // On a schedule of 100 indicia/s, 40 take at least 0.34 s (the last of the six workers'
    // requests is due at 34/100 s) however fast the server is.
    let paced = bench(&["--rate", "100"]);
    assert_eq!(paced["issued"], json!(40));
    assert_eq!(paced["rate"], json!(100));
    assert!(
        paced["elapsed_s"].as_f64().is_some_and(|s| s >= 0.34),
        "{paced}"
    );
    assert_audit_clean(&["--data-dir", data.to_str().unwrap()]);
    drop(server);
}

#[test]
fn server_and_audit_refuse_an_unknown_database_with_a_clear_code() {
    let dir = tempfile::tempdir().unwrap();
    for args in [
        vec![
            "server",
            "--listen",
            "127.0.0.1:0",
            "--database",
            "mysql://db/x",
        ],
        vec!["audit", "--database", "mysql://db/x"],
    ] {
        let out = Command::new(BIN)
            .arg("--json")
            .args(&args)
            .arg("--data-dir")
            .arg(dir.path())
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?} succeeded");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let v: Value = serde_json::from_str(stdout.lines().last().unwrap_or("null"))
            .unwrap_or_else(|_| panic!("{args:?}: {stdout}"));
        assert_eq!(v["error"], "bad_flag", "{args:?}: {v}");
    }
}

#[test]
fn a_server_on_postgres_shuts_down_cleanly_on_interrupt() {
    let Some(db) = TestDatabase::create("shutdown") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut child = common::server_command(dir.path())
        .args(["--database", db.url()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.contains("listening"), "{line}");
    interrupt(&child);
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "exit {:?}: {stderr}", out.status);
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// The newest entries deleted while the server runs are never sealed into a new anchor: the
/// anchor written when it stops keeps naming them, and the next start is refused.
#[tokio::test(flavor = "multi_thread")]
async fn a_running_server_never_anchors_a_truncated_audit_log() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let start = || common::start_server(&data);
    let mut server = start().unwrap();
    ann_buys_one_item(&server).await;
    stop(&mut server);

    // Running again, with the newest entry anchored; it is deleted behind the server's back.
    let mut again = start().unwrap();
    let db = rusqlite::Connection::open(data.join("ledger.sqlite")).unwrap();
    db.busy_timeout(Duration::from_secs(5)).unwrap();
    db.execute_batch(
        "DROP TRIGGER audit_log_no_delete;
         DELETE FROM audit_log WHERE seq = (SELECT MAX(seq) FROM audit_log);",
    )
    .unwrap();
    drop(db);
    stop(&mut again);
    let refused = start()
        .err()
        .expect("the server started on a truncated audit log");
    assert!(refused.to_string().contains("are gone"), "{refused}");
}
