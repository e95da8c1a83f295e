//! The ledger testsuite on `PgStore`: every behaviour on its own fresh PostgreSQL database, plus
//! what only several connections can show (two stores — as two servers would have — issuing from
//! one account at once). Skips, saying why, when PostgreSQL is not reachable, unless
//! `STAMPLINE_REQUIRE_ALL=1`.

use std::sync::Arc;

use postgres::{Client, NoTls};
use stampline_ledger::pgtest::TestDatabase;
use stampline_ledger::testsuite::{self, Behaviour, Register, Tamper, TamperBehaviour};
use stampline_ledger::{LedgerError, PgStore, Store, UserId};

/// Direct SQL on the test database, behind the store's back.
struct PgTamper {
    client: std::sync::Mutex<Client>,
}

impl PgTamper {
    fn exec(&self, sql: &str, params: &[&(dyn postgres::types::ToSql + Sync)]) -> u64 {
        let mut client = self.client.lock().expect("tamper client");
        client.execute(sql, params).expect("tamper statement")
    }
}

impl Tamper for PgTamper {
    fn shift_balance(&self, account: &str, delta_mills: i64) {
        let changed = self.exec(
            "UPDATE accounts SET balance = balance + $1 WHERE id = $2",
            &[&delta_mills, &account],
        );
        assert_eq!(changed, 1);
    }

    fn shift_register(&self, user_id: UserId, register: Register, delta_mills: i64) {
        let column = match register {
            Register::Ascending => "ascending_mills",
            Register::Descending => "descending_mills",
        };
        let sql = format!("UPDATE meters SET {column} = {column} + $1 WHERE user_id = $2");
        assert_eq!(self.exec(&sql, &[&delta_mills, &user_id]), 1);
    }

    fn delete_newest_audit_entry(&self) {
        self.exec("ALTER TABLE audit_log DISABLE TRIGGER USER", &[]);
        // The newest row: the one the latest transaction wrote.
        assert_eq!(
            self.exec(
                "DELETE FROM audit_log WHERE ctid = (SELECT ctid FROM audit_log
                     ORDER BY xmin::text::bigint DESC, seq DESC LIMIT 1)",
                &[]
            ),
            1
        );
    }

    fn delete_audit_entry(&self, seq: i64) {
        self.exec("ALTER TABLE audit_log DISABLE TRIGGER USER", &[]);
        assert_eq!(
            // One entry: entry `seq` of the longest chain (each connection appends to its own).
            self.exec(
                "DELETE FROM audit_log WHERE seq = $1 AND chain = (SELECT chain FROM audit_log
                     GROUP BY chain ORDER BY count(*) DESC, chain LIMIT 1)",
                &[&seq]
            ),
            1
        );
    }
}

fn on_pg(test: &str, behaviour: Behaviour) {
    let Some(db) = TestDatabase::create(test) else {
        return;
    };
    let store = PgStore::connect(db.url()).expect("connect store");
    behaviour(&store);
}

fn on_pg_with_tamper(test: &str, behaviour: TamperBehaviour) {
    let Some(db) = TestDatabase::create(test) else {
        return;
    };
    let store = PgStore::connect(db.url())
        .expect("connect store")
        .with_sealer(Arc::new(testsuite::TestSealer));
    let tamper = PgTamper {
        client: std::sync::Mutex::new(Client::connect(db.url(), NoTls).expect("tamper client")),
    };
    behaviour(&store, &tamper);
}

#[test]
fn every_item_is_signed_for_the_meter_state_it_leaves() {
    on_pg(
        "every_item_is_signed_for_the_meter_state_it_leaves",
        testsuite::every_item_is_signed_for_the_meter_state_it_leaves,
    );
}

#[test]
fn fund_issue_and_print_move_money_and_registers() {
    on_pg(
        "fund_issue_and_print_move_money_and_registers",
        testsuite::fund_issue_and_print_move_money_and_registers,
    );
}

#[test]
fn repeated_request_returns_first_outcome_and_charges_once() {
    on_pg(
        "repeated_request_returns_first_outcome_and_charges_once",
        testsuite::repeated_request_returns_first_outcome_and_charges_once,
    );
}

#[test]
fn reused_request_id_is_refused_and_changes_nothing() {
    on_pg(
        "reused_request_id_is_refused_and_changes_nothing",
        testsuite::reused_request_id_is_refused_and_changes_nothing,
    );
}

#[test]
fn request_ids_are_scoped_per_user() {
    on_pg(
        "request_ids_are_scoped_per_user",
        testsuite::request_ids_are_scoped_per_user,
    );
}

#[test]
fn issue_beyond_balance_is_refused_and_changes_nothing() {
    on_pg(
        "issue_beyond_balance_is_refused_and_changes_nothing",
        testsuite::issue_beyond_balance_is_refused_and_changes_nothing,
    );
}

#[test]
fn failed_print_voids_item_and_returns_funds() {
    on_pg(
        "failed_print_voids_item_and_returns_funds",
        testsuite::failed_print_voids_item_and_returns_funds,
    );
}

#[test]
fn expired_confirmation_window_voids_items() {
    on_pg(
        "expired_confirmation_window_voids_items",
        testsuite::expired_confirmation_window_voids_items,
    );
}

#[test]
fn late_print_confirmation_is_refused_and_voids() {
    on_pg(
        "late_print_confirmation_is_refused_and_voids",
        testsuite::late_print_confirmation_is_refused_and_voids,
    );
}

#[test]
fn confirm_answers_final_state_and_refuses_other_states() {
    on_pg(
        "confirm_answers_final_state_and_refuses_other_states",
        testsuite::confirm_answers_final_state_and_refuses_other_states,
    );
}

#[test]
fn items_of_other_users_are_unknown() {
    on_pg(
        "items_of_other_users_are_unknown",
        testsuite::items_of_other_users_are_unknown,
    );
}

#[test]
fn refund_of_printed_item_returns_funds() {
    on_pg(
        "refund_of_printed_item_returns_funds",
        testsuite::refund_of_printed_item_returns_funds,
    );
}

#[test]
fn the_register_keeps_room_for_every_void() {
    on_pg(
        "the_register_keeps_room_for_every_void",
        testsuite::the_register_keeps_room_for_every_void,
    );
}

#[test]
fn refund_is_refused_before_print_and_after_window() {
    on_pg(
        "refund_is_refused_before_print_and_after_window",
        testsuite::refund_is_refused_before_print_and_after_window,
    );
}

#[test]
fn signing_failure_changes_nothing() {
    on_pg(
        "signing_failure_changes_nothing",
        testsuite::signing_failure_changes_nothing,
    );
}

#[test]
fn piece_numbers_run_without_gaps() {
    on_pg(
        "piece_numbers_run_without_gaps",
        testsuite::piece_numbers_run_without_gaps,
    );
}

#[test]
fn history_is_newest_first_and_limited() {
    on_pg(
        "history_is_newest_first_and_limited",
        testsuite::history_is_newest_first_and_limited,
    );
}

#[test]
fn fund_validates_input_and_refuses_duplicate_payment() {
    on_pg(
        "fund_validates_input_and_refuses_duplicate_payment",
        testsuite::fund_validates_input_and_refuses_duplicate_payment,
    );
}

#[test]
fn create_user_refuses_taken_key_and_users_read_back() {
    on_pg(
        "create_user_refuses_taken_key_and_users_read_back",
        testsuite::create_user_refuses_taken_key_and_users_read_back,
    );
}

#[test]
fn login_failures_back_off_per_name_and_source() {
    on_pg(
        "login_failures_back_off_per_name_and_source",
        testsuite::login_failures_back_off_per_name_and_source,
    );
}

#[test]
fn unknown_users_and_items_are_reported() {
    on_pg(
        "unknown_users_and_items_are_reported",
        testsuite::unknown_users_and_items_are_reported,
    );
}

#[test]
fn audit_is_clean_after_mixed_workload() {
    on_pg(
        "audit_is_clean_after_mixed_workload",
        testsuite::audit_is_clean_after_mixed_workload,
    );
}

#[test]
fn concurrent_issues_never_overdraw() {
    on_pg(
        "concurrent_issues_never_overdraw",
        testsuite::concurrent_issues_never_overdraw,
    );
}

#[test]
fn raised_register_freezes_the_meter_and_fails_the_seal_audit() {
    on_pg_with_tamper(
        "raised_register_freezes_the_meter_and_fails_the_seal_audit",
        testsuite::raised_register_freezes_the_meter_and_fails_the_seal_audit,
    );
}

#[test]
fn edited_balance_freezes_the_meter_on_next_use() {
    on_pg_with_tamper(
        "edited_balance_freezes_the_meter_on_next_use",
        testsuite::edited_balance_freezes_the_meter_on_next_use,
    );
}

#[test]
fn audit_detects_edited_balance() {
    on_pg_with_tamper(
        "audit_detects_edited_balance",
        testsuite::audit_detects_edited_balance,
    );
}

#[test]
fn audit_detects_edited_register() {
    on_pg_with_tamper(
        "audit_detects_edited_register",
        testsuite::audit_detects_edited_register,
    );
}

#[test]
fn a_frozen_meter_does_not_stop_expiry_voids_of_others() {
    on_pg_with_tamper(
        "a_frozen_meter_does_not_stop_expiry_voids_of_others",
        testsuite::a_frozen_meter_does_not_stop_expiry_voids_of_others,
    );
}

#[test]
fn audit_detects_deleted_audit_entry() {
    on_pg_with_tamper(
        "audit_detects_deleted_audit_entry",
        testsuite::audit_detects_deleted_audit_entry,
    );
}

#[test]
fn a_deleted_newest_audit_entry_stops_every_money_operation() {
    on_pg_with_tamper(
        "a_deleted_newest_audit_entry_stops_every_money_operation",
        testsuite::a_deleted_newest_audit_entry_stops_every_money_operation,
    );
}

#[test]
fn two_stores_on_one_database_never_overdraw_or_repeat_a_piece() {
    // Two stores with their own connection pools, as two servers would have, and 8 threads each.
    let Some(db) = TestDatabase::create("two_stores") else {
        return;
    };
    let a = PgStore::connect(db.url()).expect("store a");
    let b = PgStore::connect(db.url()).expect("store b");
    let u = testsuite::add_user(&a, 1);
    const STAMPS: u64 = 25;
    testsuite::fund(&a, u, "f1", STAMPS * testsuite::PRICE_MILLS);
    let issued: Vec<String> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..16)
            .map(|t| {
                let store: &PgStore = if t % 2 == 0 { &a } else { &b };
                scope.spawn(move || {
                    let mut serials = Vec::new();
                    for n in 0..10 {
                        let id = format!("t{t}-{n}");
                        match testsuite::try_issue(
                            store,
                            u,
                            &id,
                            testsuite::PRICE_MILLS,
                            testsuite::T0_MS,
                        ) {
                            Ok(item) => serials.push(item.serial),
                            Err(LedgerError::InsufficientFunds { .. }) => {}
                            Err(e) => panic!("thread {t}: {e:?}"),
                        }
                    }
                    serials
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("thread"))
            .collect()
    });
    assert_eq!(issued.len() as u64, STAMPS);
    let mut unique = issued.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), issued.len(), "a serial was issued twice");
    let balance = b.balance(u).expect("balance");
    assert_eq!(balance.balance_mills, 0);
    assert_eq!(balance.ascending_mills, STAMPS * testsuite::PRICE_MILLS);
    testsuite::assert_clean(&b);
}

#[test]
fn a_newer_schema_version_is_refused() {
    let Some(db) = TestDatabase::create("newer_schema") else {
        return;
    };
    drop(PgStore::connect(db.url()).expect("first open"));
    let mut client = Client::connect(db.url(), NoTls).expect("client");
    client
        .execute("UPDATE schema_version SET version = version + 1", &[])
        .expect("bump");
    let refused = PgStore::connect(db.url());
    assert!(
        matches!(refused, Err(LedgerError::Corrupt(_))),
        "{refused:?}"
    );
}

#[test]
fn the_audit_log_refuses_updates_and_deletes() {
    let Some(db) = TestDatabase::create("append_only") else {
        return;
    };
    let store = PgStore::connect(db.url()).expect("store");
    testsuite::add_user(&store, 1);
    let mut client = Client::connect(db.url(), NoTls).expect("client");
    assert!(
        client
            .execute("UPDATE audit_log SET actor = 'x'", &[])
            .is_err()
    );
    assert!(client.execute("DELETE FROM audit_log", &[]).is_err());
    assert!(client.execute("TRUNCATE audit_log", &[]).is_err());
    testsuite::assert_clean(&store);
}

#[test]
fn reprints_are_limited_counted_and_logged() {
    on_pg(
        "reprints_are_limited_counted_and_logged",
        testsuite::reprints_are_limited_counted_and_logged,
    );
}

#[test]
fn a_returned_debit_stays_open_until_paid_once() {
    on_pg(
        "a_returned_debit_stays_open_until_paid_once",
        testsuite::payments::a_returned_debit_stays_open_until_paid_once,
    );
}

#[test]
fn a_closing_account_moves_no_money_and_its_closure_resumes() {
    on_pg(
        "a_closing_account_moves_no_money_and_its_closure_resumes",
        testsuite::payments::a_closing_account_moves_no_money_and_its_closure_resumes,
    );
}

#[test]
fn closure_pays_out_the_whole_balance_and_keeps_the_audit_clean() {
    on_pg(
        "closure_pays_out_the_whole_balance_and_keeps_the_audit_clean",
        testsuite::payments::closure_pays_out_the_whole_balance_and_keeps_the_audit_clean,
    );
}

#[test]
fn auto_refills_are_counted_once_and_within_the_cap() {
    on_pg(
        "auto_refills_are_counted_once_and_within_the_cap",
        testsuite::payments::auto_refills_are_counted_once_and_within_the_cap,
    );
}

#[test]
fn a_failed_check_among_concurrent_issues_commits_nothing_of_it() {
    on_pg(
        "a_failed_check_among_concurrent_issues_commits_nothing_of_it",
        testsuite::a_failed_check_among_concurrent_issues_commits_nothing_of_it,
    );
}

#[test]
fn queued_operations_answer_after_their_commit() {
    on_pg(
        "queued_operations_answer_after_their_commit",
        testsuite::queued_operations_answer_after_their_commit,
    );
}

#[test]
fn a_fault_after_the_first_write_leaves_nothing() {
    on_pg(
        "a_fault_after_the_first_write_leaves_nothing",
        testsuite::a_fault_after_the_first_write_leaves_nothing,
    );
}

#[test]
fn a_closure_pays_out_only_the_plan_it_fixed_first() {
    on_pg(
        "a_closure_pays_out_only_the_plan_it_fixed_first",
        testsuite::payments::a_closure_pays_out_only_the_plan_it_fixed_first,
    );
}

#[test]
fn an_unlicensed_meter_takes_no_money_until_it_is_licensed_once() {
    on_pg(
        "an_unlicensed_meter_takes_no_money_until_it_is_licensed_once",
        testsuite::an_unlicensed_meter_takes_no_money_until_it_is_licensed_once,
    );
}

#[test]
fn unlicensed_users_expire_and_their_names_are_free_again() {
    on_pg(
        "unlicensed_users_expire_and_their_names_are_free_again",
        testsuite::unlicensed_users_expire_and_their_names_are_free_again,
    );
}

/// Every value-item behaviour (`testsuite::values`), each on its own database: among them twenty
/// concurrent redemptions of one item against PostgreSQL's row locks.
#[test]
fn value_items_behave_on_postgres() {
    for (name, behaviour) in testsuite::values::BEHAVIOURS {
        eprintln!("value items on PostgreSQL: {name}");
        on_pg(name, *behaviour);
    }
}

#[test]
fn paging_walks_every_item_once() {
    on_pg(
        "paging_walks_every_item_once",
        testsuite::paging_walks_every_item_once,
    );
}

#[test]
fn an_administrator_locks_and_unlocks_a_user() {
    on_pg(
        "an_administrator_locks_and_unlocks_a_user",
        testsuite::an_administrator_locks_and_unlocks_a_user,
    );
}
