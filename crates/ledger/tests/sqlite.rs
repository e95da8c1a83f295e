//! The ledger testsuite on `SqliteStore`, each test with its own database file, plus what only
//! SQLite has: reopening a file, the schema version, the audit log's append-only triggers.

use std::path::PathBuf;
use std::time::Duration;

use rusqlite::{Connection, params};
use stampline_ledger::testsuite::{self, Behaviour, Register, Tamper, TamperBehaviour};
use stampline_ledger::{LedgerError, SqliteStore, Store, UserId};
use tempfile::TempDir;

/// A store on a fresh file in its own temporary directory (removed on drop).
struct Fixture {
    dir: TempDir,
    store: SqliteStore,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = SqliteStore::open(&dir.path().join("ledger.db")).expect("open store");
        Fixture { dir, store }
    }

    /// A store that seals its meters with the testsuite's sealer.
    fn sealed() -> Fixture {
        let Fixture { dir, store } = Fixture::new();
        let store = store.with_sealer(std::sync::Arc::new(testsuite::TestSealer));
        Fixture { dir, store }
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join("ledger.db")
    }

    /// A second connection to the same file that edits it behind the store's back.
    fn tamper(&self) -> SqlTamper {
        let conn = Connection::open(self.path()).expect("open tamper connection");
        conn.busy_timeout(Duration::from_secs(5))
            .expect("busy timeout");
        SqlTamper { conn }
    }
}

struct SqlTamper {
    conn: Connection,
}

impl Tamper for SqlTamper {
    fn shift_balance(&self, account: &str, delta_mills: i64) {
        let changed = self
            .conn
            .execute(
                "UPDATE accounts SET balance = balance + ?1 WHERE id = ?2",
                params![delta_mills, account],
            )
            .expect("edit balance");
        assert_eq!(changed, 1);
    }

    fn shift_register(&self, user_id: UserId, register: Register, delta_mills: i64) {
        let column = match register {
            Register::Ascending => "ascending_mills",
            Register::Descending => "descending_mills",
        };
        let sql = format!("UPDATE meters SET {column} = {column} + ?1 WHERE user_id = ?2");
        let changed = self
            .conn
            .execute(&sql, params![delta_mills, user_id])
            .expect("edit register");
        assert_eq!(changed, 1);
    }

    fn delete_audit_entry(&self, seq: i64) {
        self.conn
            .execute_batch("DROP TRIGGER audit_log_no_delete")
            .expect("drop trigger");
        let changed = self
            .conn
            .execute("DELETE FROM audit_log WHERE seq = ?1", [seq])
            .expect("delete entry");
        assert_eq!(changed, 1);
    }

    fn delete_newest_audit_entry(&self) {
        self.conn
            .execute_batch(
                "DROP TRIGGER IF EXISTS audit_log_no_delete;
                 DELETE FROM audit_log WHERE seq = (SELECT MAX(seq) FROM audit_log);",
            )
            .expect("delete newest entry");
    }
}

fn on_file(behaviour: Behaviour) {
    let fixture = Fixture::new();
    behaviour(&fixture.store);
}

fn on_file_with_tamper(behaviour: TamperBehaviour) {
    let fixture = Fixture::sealed();
    let tamper = fixture.tamper();
    behaviour(&fixture.store, &tamper);
}

#[test]
fn every_item_is_signed_for_the_meter_state_it_leaves() {
    on_file(testsuite::every_item_is_signed_for_the_meter_state_it_leaves);
}

#[test]
fn fund_issue_and_print_move_money_and_registers() {
    on_file(testsuite::fund_issue_and_print_move_money_and_registers);
}

#[test]
fn repeated_request_returns_first_outcome_and_charges_once() {
    on_file(testsuite::repeated_request_returns_first_outcome_and_charges_once);
}

#[test]
fn reused_request_id_is_refused_and_changes_nothing() {
    on_file(testsuite::reused_request_id_is_refused_and_changes_nothing);
}

#[test]
fn request_ids_are_scoped_per_user() {
    on_file(testsuite::request_ids_are_scoped_per_user);
}

#[test]
fn issue_beyond_balance_is_refused_and_changes_nothing() {
    on_file(testsuite::issue_beyond_balance_is_refused_and_changes_nothing);
}

#[test]
fn failed_print_voids_item_and_returns_funds() {
    on_file(testsuite::failed_print_voids_item_and_returns_funds);
}

#[test]
fn expired_confirmation_window_voids_items() {
    on_file(testsuite::expired_confirmation_window_voids_items);
}

#[test]
fn late_print_confirmation_is_refused_and_voids() {
    on_file(testsuite::late_print_confirmation_is_refused_and_voids);
}

#[test]
fn confirm_answers_final_state_and_refuses_other_states() {
    on_file(testsuite::confirm_answers_final_state_and_refuses_other_states);
}

#[test]
fn items_of_other_users_are_unknown() {
    on_file(testsuite::items_of_other_users_are_unknown);
}

#[test]
fn refund_of_printed_item_returns_funds() {
    on_file(testsuite::refund_of_printed_item_returns_funds);
}

#[test]
fn the_register_keeps_room_for_every_void() {
    on_file(testsuite::the_register_keeps_room_for_every_void);
}

#[test]
fn refund_is_refused_before_print_and_after_window() {
    on_file(testsuite::refund_is_refused_before_print_and_after_window);
}

#[test]
fn signing_failure_changes_nothing() {
    on_file(testsuite::signing_failure_changes_nothing);
}

#[test]
fn piece_numbers_run_without_gaps() {
    on_file(testsuite::piece_numbers_run_without_gaps);
}

#[test]
fn history_is_newest_first_and_limited() {
    on_file(testsuite::history_is_newest_first_and_limited);
}

#[test]
fn fund_validates_input_and_refuses_duplicate_payment() {
    on_file(testsuite::fund_validates_input_and_refuses_duplicate_payment);
}

#[test]
fn create_user_refuses_taken_key_and_users_read_back() {
    on_file(testsuite::create_user_refuses_taken_key_and_users_read_back);
}

#[test]
fn login_failures_back_off_per_name_and_source() {
    on_file(testsuite::login_failures_back_off_per_name_and_source);
}

#[test]
fn unknown_users_and_items_are_reported() {
    on_file(testsuite::unknown_users_and_items_are_reported);
}

#[test]
fn audit_is_clean_after_mixed_workload() {
    on_file(testsuite::audit_is_clean_after_mixed_workload);
}

#[test]
fn concurrent_issues_never_overdraw() {
    on_file(testsuite::concurrent_issues_never_overdraw);
}

#[test]
fn reprints_are_limited_counted_and_logged() {
    on_file(testsuite::reprints_are_limited_counted_and_logged);
}

#[test]
fn audit_detects_edited_balance() {
    on_file_with_tamper(testsuite::audit_detects_edited_balance);
}

#[test]
fn audit_detects_edited_register() {
    on_file_with_tamper(testsuite::audit_detects_edited_register);
}

#[test]
fn raised_register_freezes_the_meter_and_fails_the_seal_audit() {
    on_file_with_tamper(testsuite::raised_register_freezes_the_meter_and_fails_the_seal_audit);
}

#[test]
fn edited_balance_freezes_the_meter_on_next_use() {
    on_file_with_tamper(testsuite::edited_balance_freezes_the_meter_on_next_use);
}

#[test]
fn a_frozen_meter_does_not_stop_expiry_voids_of_others() {
    on_file_with_tamper(testsuite::a_frozen_meter_does_not_stop_expiry_voids_of_others);
}

#[test]
fn audit_detects_deleted_audit_entry() {
    on_file_with_tamper(testsuite::audit_detects_deleted_audit_entry);
}

#[test]
fn a_deleted_newest_audit_entry_stops_every_money_operation() {
    on_file_with_tamper(testsuite::a_deleted_newest_audit_entry_stops_every_money_operation);
}

#[test]
fn whole_suite_runs_on_in_memory_stores() {
    testsuite::run_all(&|| Box::new(SqliteStore::open_in_memory().expect("in-memory store")));
}

#[test]
fn whole_tamper_suite_runs_through_run_all_tamper() {
    let dirs = std::cell::RefCell::new(Vec::new());
    testsuite::run_all_tamper(&|| {
        let fixture = Fixture::sealed();
        let tamper = fixture.tamper();
        // Keep the directory alive while the store is in use; the store itself moves out.
        let Fixture { dir, store } = fixture;
        dirs.borrow_mut().push(dir);
        (
            Box::new(store) as Box<dyn Store>,
            Box::new(tamper) as Box<dyn Tamper>,
        )
    });
}

#[test]
fn data_survives_reopening_the_file() {
    let fixture = Fixture::new();
    let users = testsuite::mixed_workload(&fixture.store);
    let before: Vec<_> = users
        .iter()
        .map(|&u| testsuite::snapshot(&fixture.store, u))
        .collect();
    let path = fixture.path();
    let Fixture { dir, store } = fixture;
    drop(store);

    let reopened = SqliteStore::open(&path).expect("reopen");
    assert_eq!(reopened.path(), Some(path.as_path()));
    let after: Vec<_> = users
        .iter()
        .map(|&u| testsuite::snapshot(&reopened, u))
        .collect();
    assert_eq!(before, after);
    testsuite::assert_clean(&reopened);
    // Idempotency survives too: the first answer comes back and nothing is credited again.
    let again = testsuite::fund(&reopened, users[0], "f1", testsuite::FUND_MILLS);
    assert_eq!(again.balance_mills, testsuite::FUND_MILLS);
    assert_eq!(testsuite::snapshot(&reopened, users[0]), before[0]);
    // And the meter carries on from its last piece.
    testsuite::fund(&reopened, users[0], "f3", 1000);
    let next = testsuite::issue(&reopened, users[0], "i5", 780);
    assert_eq!(next.serial, format!("{}-5", testsuite::device_id(1)));
    testsuite::assert_clean(&reopened);
    drop(reopened);
    drop(dir);
}

#[test]
fn database_is_in_wal_mode_with_the_current_schema() {
    let fixture = Fixture::new();
    let conn = Connection::open(fixture.path()).expect("open");
    let mode: String = conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .expect("journal mode");
    assert_eq!(mode, "wal");
    let version: i64 = conn
        .query_row("SELECT version FROM schema_version", [], |r| r.get(0))
        .expect("version");
    assert_eq!(version, stampline_ledger::sqlite::SCHEMA_VERSION);
}

#[test]
fn audit_log_refuses_updates_and_deletes() {
    let fixture = Fixture::new();
    testsuite::add_user(&fixture.store, 1);
    let conn = Connection::open(fixture.path()).expect("open");
    let update = conn.execute("UPDATE audit_log SET detail = 'x' WHERE seq = 1", []);
    assert!(update.is_err(), "update went through");
    let delete = conn.execute("DELETE FROM audit_log WHERE seq = 1", []);
    assert!(delete.is_err(), "delete went through");
    testsuite::assert_clean(&fixture.store);
}

#[test]
fn audit_detects_edited_audit_detail() {
    let fixture = Fixture::new();
    testsuite::mixed_workload(&fixture.store);
    let conn = Connection::open(fixture.path()).expect("open");
    conn.execute_batch(
        "DROP TRIGGER audit_log_no_update;
         UPDATE audit_log SET actor = 'user:999' WHERE seq = 2;",
    )
    .expect("edit entry");
    testsuite::assert_dirty(&fixture.store);
}

#[test]
fn audit_detects_a_forged_transfer() {
    let fixture = Fixture::new();
    let users = testsuite::mixed_workload(&fixture.store);
    let conn = Connection::open(fixture.path()).expect("open");
    // A transfer that balances, with both account balances moved consistently, but no payment,
    // no register credit and no audit entry behind it.
    let customer = stampline_ledger::customer_account(users[0]);
    conn.execute_batch(&format!(
        "UPDATE accounts SET balance = balance - 5000 WHERE id = 'postage_sold';
         UPDATE accounts SET balance = balance + 5000 WHERE id = '{customer}';
         INSERT INTO transfers (at_ms, from_account, to_account, amount_mills, kind)
         VALUES (0, 'postage_sold', '{customer}', 5000, 'refund');"
    ))
    .expect("forge transfer");
    testsuite::assert_dirty(&fixture.store);
}

#[test]
fn newer_schema_version_is_refused() {
    let fixture = Fixture::new();
    let path = fixture.path();
    let Fixture { dir, store } = fixture;
    drop(store);
    let conn = Connection::open(&path).expect("open");
    conn.execute("UPDATE schema_version SET version = version + 1", [])
        .expect("bump version");
    drop(conn);
    let refused = SqliteStore::open(&path);
    assert!(
        matches!(refused, Err(LedgerError::Corrupt(_))),
        "{refused:?}"
    );
    drop(dir);
}

#[test]
fn panicking_signer_leaves_the_store_usable_and_unchanged() {
    let fixture = Fixture::new();
    let store = &fixture.store;
    let u = testsuite::add_user(store, 1);
    testsuite::fund(store, u, "f1", testsuite::FUND_MILLS);
    let before = testsuite::snapshot(store, u);
    let input = stampline_ledger::IssueInput {
        kind: "postage",
        amount: testsuite::amount(testsuite::PRICE_MILLS),
        session: None,
        valid_until_ms: None,
    };
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _ = store
            .issue(
                &testsuite::req(u, "i1", "issue"),
                &input,
                Box::new(|_: &stampline_ledger::PieceState| panic!("device driver bug")),
                testsuite::T0_MS,
            )
            .wait();
    }));
    assert!(caught.is_err());
    assert_eq!(testsuite::snapshot(store, u), before);
    let item = testsuite::issue(store, u, "i1", testsuite::PRICE_MILLS);
    assert_eq!(item.serial, format!("{}-1", testsuite::device_id(1)));
    testsuite::assert_clean(store);
}

#[test]
fn two_stores_on_one_file_never_overdraw() {
    // Two connections (as two processes would have) share the file; BEGIN IMMEDIATE serialises
    // their writes.
    let fixture = Fixture::new();
    let other = SqliteStore::open(&fixture.path()).expect("second store");
    let u = testsuite::add_user(&fixture.store, 1);
    testsuite::fund(&fixture.store, u, "f1", 4 * testsuite::PRICE_MILLS);
    let issued: usize = std::thread::scope(|scope| {
        let handles: Vec<_> = [&fixture.store, &other]
            .into_iter()
            .enumerate()
            .map(|(s, store)| {
                scope.spawn(move || {
                    (0..5)
                        .filter(|n| {
                            let id = format!("s{s}-{n}");
                            match testsuite::try_issue(
                                store,
                                u,
                                &id,
                                testsuite::PRICE_MILLS,
                                testsuite::T0_MS,
                            ) {
                                Ok(_) => true,
                                Err(LedgerError::InsufficientFunds { .. }) => false,
                                Err(e) => panic!("store {s}: {e:?}"),
                            }
                        })
                        .count()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("thread")).sum()
    });
    assert_eq!(issued, 4);
    testsuite::assert_clean(&other);
}

#[test]
fn a_returned_debit_stays_open_until_paid_once() {
    on_file(testsuite::payments::a_returned_debit_stays_open_until_paid_once);
}

#[test]
fn a_closing_account_moves_no_money_and_its_closure_resumes() {
    on_file(testsuite::payments::a_closing_account_moves_no_money_and_its_closure_resumes);
}

#[test]
fn closure_pays_out_the_whole_balance_and_keeps_the_audit_clean() {
    on_file(testsuite::payments::closure_pays_out_the_whole_balance_and_keeps_the_audit_clean);
}

#[test]
fn auto_refills_are_counted_once_and_within_the_cap() {
    on_file(testsuite::payments::auto_refills_are_counted_once_and_within_the_cap);
}

#[test]
fn a_failed_check_among_concurrent_issues_commits_nothing_of_it() {
    on_file(testsuite::a_failed_check_among_concurrent_issues_commits_nothing_of_it);
}

#[test]
fn queued_operations_answer_after_their_commit() {
    on_file(testsuite::queued_operations_answer_after_their_commit);
}

#[test]
fn a_fault_after_the_first_write_leaves_nothing() {
    on_file(testsuite::a_fault_after_the_first_write_leaves_nothing);
}

/// An issue's stored outcome no longer repeats the item's bytes (they come from the item's row);
/// an outcome stored the earlier way, with them, still answers its repeat.
#[test]
fn issue_outcomes_stored_with_or_without_the_item_bytes_replay_the_same() {
    let f = Fixture::new();
    let u = testsuite::add_user(&f.store, 1);
    testsuite::fund(&f.store, u, "f1", testsuite::FUND_MILLS);
    let first = testsuite::issue(&f.store, u, "i1", testsuite::PRICE_MILLS);
    let conn = Connection::open(f.path()).expect("open");
    conn.busy_timeout(Duration::from_secs(5))
        .expect("busy timeout");
    let stored: String = conn
        .query_row(
            "SELECT outcome_json FROM requests WHERE user_id = ?1 AND request_id = 'i1'",
            params![u],
            |r| r.get(0),
        )
        .expect("stored outcome");
    assert!(!stored.contains("\"item\""), "{stored}");
    let again = testsuite::issue(&f.store, u, "i1", testsuite::PRICE_MILLS);
    assert_eq!(again, first);

    // The earlier form: the whole outcome, item bytes in hex.
    let legacy = serde_json::to_string(&first).expect("serialise");
    assert!(legacy.contains("\"item\""), "{legacy}");
    conn.execute(
        "UPDATE requests SET outcome_json = ?1 WHERE user_id = ?2 AND request_id = 'i1'",
        params![legacy, u],
    )
    .expect("rewrite the stored outcome");
    drop(conn);
    let legacy_again = testsuite::issue(&f.store, u, "i1", testsuite::PRICE_MILLS);
    assert_eq!(legacy_again, first);
}

#[test]
fn a_closure_pays_out_only_the_plan_it_fixed_first() {
    on_file(testsuite::payments::a_closure_pays_out_only_the_plan_it_fixed_first);
}

#[test]
fn a_full_writer_queue_answers_busy_and_changes_nothing() {
    const LIMIT: usize = 2;
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteStore::open(&dir.path().join("ledger.db"))
        .expect("open store")
        .with_queue_limit(LIMIT);
    let u = testsuite::add_user(&store, 1);
    testsuite::fund(&store, u, "f1", testsuite::FUND_MILLS);
    let input = stampline_ledger::IssueInput {
        kind: "postage",
        amount: testsuite::amount(testsuite::PRICE_MILLS),
        session: None,
        valid_until_ms: None,
    };
    // The writer runs an issue whose signer waits for the gate: what comes next must queue.
    let (started, has_started) = std::sync::mpsc::channel::<()>();
    let (open_gate, gate) = std::sync::mpsc::channel::<()>();
    let stalled = store.issue(
        &testsuite::req(u, "i1", "issue"),
        &input,
        Box::new(move |p: &stampline_ledger::PieceState| {
            let _ = started.send(());
            let _ = gate.recv();
            testsuite::sign_ok(p)
        }),
        testsuite::T0_MS,
    );
    has_started
        .recv()
        .expect("the writer began the first issue");
    let queued: Vec<_> = (0..LIMIT)
        .map(|n| {
            store.issue(
                &testsuite::req(u, &format!("q{n}"), "issue"),
                &input,
                Box::new(testsuite::sign_ok),
                testsuite::T0_MS,
            )
        })
        .collect();
    // The queue is full: both kinds of operation are refused at once, and nothing of them is kept.
    let fund = testsuite::try_fund(&store, u, "f2", 1_000);
    assert!(matches!(fund, Err(LedgerError::Busy)), "{fund:?}");
    assert_eq!(LedgerError::Busy.code(), "busy");
    let issue = store
        .issue(
            &testsuite::req(u, "i9", "issue"),
            &input,
            Box::new(testsuite::sign_ok),
            testsuite::T0_MS,
        )
        .wait();
    assert!(matches!(issue, Err(LedgerError::Busy)), "{issue:?}");
    open_gate.send(()).expect("open the gate");
    testsuite::ok(stalled.wait(), "the stalled issue");
    for q in queued {
        testsuite::ok(q.wait(), "a queued issue");
    }
    let balance = testsuite::ok(store.balance(u), "balance");
    let issued = (1 + LIMIT) as u64 * testsuite::PRICE_MILLS;
    assert_eq!(balance.balance_mills, testsuite::FUND_MILLS - issued);
    assert_eq!(balance.pieces, 1 + LIMIT as u64);
    for refused in ["f2", "i9"] {
        assert_eq!(testsuite::ok(store.find_request(u, refused), "find"), None);
    }
    assert_eq!(testsuite::ok(store.payments(), "payments").len(), 1);
    testsuite::assert_clean(&store);
    // With the queue drained the same requests go through.
    testsuite::ok(testsuite::try_fund(&store, u, "f2", 1_000), "fund after");
    testsuite::issue(&store, u, "i9", testsuite::PRICE_MILLS);
    testsuite::assert_clean(&store);
}

#[test]
fn an_unlicensed_meter_takes_no_money_until_it_is_licensed_once() {
    on_file(testsuite::an_unlicensed_meter_takes_no_money_until_it_is_licensed_once);
}

#[test]
fn unlicensed_users_expire_and_their_names_are_free_again() {
    on_file(testsuite::unlicensed_users_expire_and_their_names_are_free_again);
}

/// Every value-item behaviour (`testsuite::values`) on a database file of its own: among them
/// twenty concurrent redemptions of one item through the single writer.
#[test]
fn value_items_behave_on_files() {
    for (name, behaviour) in testsuite::values::BEHAVIOURS {
        eprintln!("value items on SQLite: {name}");
        on_file(*behaviour);
    }
}

#[test]
fn paging_walks_every_item_once() {
    on_file(testsuite::paging_walks_every_item_once);
}

#[test]
fn an_administrator_locks_and_unlocks_a_user() {
    on_file(testsuite::an_administrator_locks_and_unlocks_a_user);
}
