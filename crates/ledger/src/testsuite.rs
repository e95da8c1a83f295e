//! Behaviour tests for any [`Store`]: one `pub fn` per behaviour, each given a fresh, empty store.
//! Every implementation runs the same suite (`SqliteStore` in `tests/sqlite.rs`, `PgStore` in
//! `tests/postgres.rs`), so a behaviour is defined once.
//!
//! This is test code, compiled only with the `testkit` feature so that this crate's tests and
//! other crates' tests can run it: it panics when a behaviour is broken, and it is never called by
//! production code. Tests that need to edit the database behind the ledger's back take a
//! [`Tamper`], which each implementation provides.

pub mod payments;
pub mod values;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};

use stampline_money::Amount;

use crate::{
    BalanceView, Fingerprint, FundInput, FundOutcome, IssueInput, IssueOutcome, ItemStatus,
    ItemSummary, LedgerError, MeterState, NewUser, PieceState, ReprintLimits, RequestKey, Role,
    SignedItem, Signer, Store, UserId, customer_account,
};

/// The clock every test starts at (2025-10-09, in Unix ms).
pub const T0_MS: i64 = 1_760_000_000_000;
/// A first-class letter stamp.
pub const PRICE_MILLS: u64 = 780;
/// The funding most tests start with.
pub const FUND_MILLS: u64 = 10_000;

/// A behaviour: runs against a fresh, empty store and panics if the store misbehaves.
pub type Behaviour = fn(&dyn Store);

/// Every behaviour that needs nothing but the store, by name.
pub const BEHAVIOURS: &[(&str, Behaviour)] = &[
    (
        "an_unlicensed_meter_takes_no_money_until_it_is_licensed_once",
        an_unlicensed_meter_takes_no_money_until_it_is_licensed_once,
    ),
    (
        "unlicensed_users_expire_and_their_names_are_free_again",
        unlicensed_users_expire_and_their_names_are_free_again,
    ),
    (
        "every_item_is_signed_for_the_meter_state_it_leaves",
        every_item_is_signed_for_the_meter_state_it_leaves,
    ),
    (
        "fund_issue_and_print_move_money_and_registers",
        fund_issue_and_print_move_money_and_registers,
    ),
    (
        "repeated_request_returns_first_outcome_and_charges_once",
        repeated_request_returns_first_outcome_and_charges_once,
    ),
    (
        "reused_request_id_is_refused_and_changes_nothing",
        reused_request_id_is_refused_and_changes_nothing,
    ),
    (
        "request_ids_are_scoped_per_user",
        request_ids_are_scoped_per_user,
    ),
    (
        "issue_beyond_balance_is_refused_and_changes_nothing",
        issue_beyond_balance_is_refused_and_changes_nothing,
    ),
    (
        "failed_print_voids_item_and_returns_funds",
        failed_print_voids_item_and_returns_funds,
    ),
    (
        "expired_confirmation_window_voids_items",
        expired_confirmation_window_voids_items,
    ),
    (
        "late_print_confirmation_is_refused_and_voids",
        late_print_confirmation_is_refused_and_voids,
    ),
    (
        "confirm_answers_final_state_and_refuses_other_states",
        confirm_answers_final_state_and_refuses_other_states,
    ),
    (
        "items_of_other_users_are_unknown",
        items_of_other_users_are_unknown,
    ),
    (
        "refund_of_printed_item_returns_funds",
        refund_of_printed_item_returns_funds,
    ),
    (
        "refund_is_refused_before_print_and_after_window",
        refund_is_refused_before_print_and_after_window,
    ),
    (
        "the_register_keeps_room_for_every_void",
        the_register_keeps_room_for_every_void,
    ),
    (
        "signing_failure_changes_nothing",
        signing_failure_changes_nothing,
    ),
    (
        "piece_numbers_run_without_gaps",
        piece_numbers_run_without_gaps,
    ),
    (
        "history_is_newest_first_and_limited",
        history_is_newest_first_and_limited,
    ),
    ("paging_walks_every_item_once", paging_walks_every_item_once),
    (
        "an_administrator_locks_and_unlocks_a_user",
        an_administrator_locks_and_unlocks_a_user,
    ),
    (
        "fund_validates_input_and_refuses_duplicate_payment",
        fund_validates_input_and_refuses_duplicate_payment,
    ),
    (
        "create_user_refuses_taken_key_and_users_read_back",
        create_user_refuses_taken_key_and_users_read_back,
    ),
    (
        "login_failures_back_off_per_name_and_source",
        login_failures_back_off_per_name_and_source,
    ),
    (
        "unknown_users_and_items_are_reported",
        unknown_users_and_items_are_reported,
    ),
    (
        "audit_is_clean_after_mixed_workload",
        audit_is_clean_after_mixed_workload,
    ),
    (
        "concurrent_issues_never_overdraw",
        concurrent_issues_never_overdraw,
    ),
    (
        "a_failed_check_among_concurrent_issues_commits_nothing_of_it",
        a_failed_check_among_concurrent_issues_commits_nothing_of_it,
    ),
    (
        "queued_operations_answer_after_their_commit",
        queued_operations_answer_after_their_commit,
    ),
    (
        "a_fault_after_the_first_write_leaves_nothing",
        a_fault_after_the_first_write_leaves_nothing,
    ),
    (
        "reprints_are_limited_counted_and_logged",
        reprints_are_limited_counted_and_logged,
    ),
];

/// Runs every behaviour of [`BEHAVIOURS`], each on a store from `make`.
pub fn run_all(make: &dyn Fn() -> Box<dyn Store>) {
    for (name, behaviour) in BEHAVIOURS
        .iter()
        .chain(payments::BEHAVIOURS)
        .chain(values::BEHAVIOURS)
    {
        eprintln!("ledger testsuite: {name}");
        let store = make();
        behaviour(&*store);
    }
}

/// Which meter register a [`Tamper`] edits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Register {
    Ascending,
    Descending,
}

/// Direct database edits that bypass the ledger, as an attacker or a careless operator would make
/// them. Each implementation provides its own (plain SQL on its own connection).
pub trait Tamper {
    /// Adds `delta_mills` to an account balance.
    fn shift_balance(&self, account: &str, delta_mills: i64);
    /// Adds `delta_mills` to a meter register.
    fn shift_register(&self, user_id: UserId, register: Register, delta_mills: i64);
    /// Deletes one audit log entry (removing any protection the database has against it first).
    fn delete_audit_entry(&self, seq: i64);
    /// Deletes the newest audit log entry (of the chain written last).
    fn delete_newest_audit_entry(&self);
}

/// A behaviour that also edits the database directly.
pub type TamperBehaviour = fn(&dyn Store, &dyn Tamper);

/// Every tamper behaviour, by name.
pub const TAMPER_BEHAVIOURS: &[(&str, TamperBehaviour)] = &[
    (
        "raised_register_freezes_the_meter_and_fails_the_seal_audit",
        raised_register_freezes_the_meter_and_fails_the_seal_audit,
    ),
    (
        "edited_balance_freezes_the_meter_on_next_use",
        edited_balance_freezes_the_meter_on_next_use,
    ),
    (
        "a_frozen_meter_does_not_stop_expiry_voids_of_others",
        a_frozen_meter_does_not_stop_expiry_voids_of_others,
    ),
    ("audit_detects_edited_balance", audit_detects_edited_balance),
    (
        "a_deleted_newest_audit_entry_stops_every_money_operation",
        a_deleted_newest_audit_entry_stops_every_money_operation,
    ),
    (
        "audit_detects_edited_register",
        audit_detects_edited_register,
    ),
    (
        "audit_detects_deleted_audit_entry",
        audit_detects_deleted_audit_entry,
    ),
];

/// A register sealer for tests: HMAC-SHA256 under a fixed key (the real one is the crypto
/// device's). Stores given to [`TAMPER_BEHAVIOURS`] must seal with it.
#[derive(Debug)]
pub struct TestSealer;

impl crate::MeterSealer for TestSealer {
    fn seal(&self, message: &[u8]) -> Result<[u8; 32], String> {
        let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, b"stampline test sealer");
        let tag = aws_lc_rs::hmac::sign(&key, message);
        <[u8; 32]>::try_from(tag.as_ref()).map_err(|_| "HMAC-SHA256 is 32 bytes".to_owned())
    }
}

/// Runs every behaviour of [`TAMPER_BEHAVIOURS`], each on a store (sealing with [`TestSealer`])
/// and its tamper hook from `make`.
pub fn run_all_tamper(make: &dyn Fn() -> (Box<dyn Store>, Box<dyn Tamper>)) {
    for (name, behaviour) in TAMPER_BEHAVIOURS {
        eprintln!("ledger testsuite: {name}");
        let (store, tamper) = make();
        behaviour(&*store, &*tamper);
    }
}

// ---- Helpers (public so that implementation-specific tests can use them) ----

/// Unwraps a ledger result, panicking with `what` and the error.
#[track_caller]
pub fn ok<T>(result: Result<T, LedgerError>, what: &str) -> T {
    match result {
        Ok(value) => value,
        Err(e) => panic!("{what}: unexpected error {e:?}"),
    }
}

/// The amount of `mills` (test amounts are far below the maximum).
#[track_caller]
pub fn amount(mills: u64) -> Amount {
    match Amount::from_mills(mills) {
        Some(a) => a,
        None => panic!("{mills} mills is out of range"),
    }
}

/// Registers user number `n` ("user{n}", device "SL01" followed by `n` in 8 digits).
pub fn add_user(store: &dyn Store, n: u32) -> UserId {
    ok(store.create_user(&new_user(n), T0_MS), "create_user")
}

/// The registration of user number `n`.
pub fn new_user(n: u32) -> NewUser {
    NewUser {
        user: format!("User{n}"),
        user_key: format!("user{n}"),
        name: format!("Test User {n}"),
        address: "1 Main St".into(),
        city: "Boston".into(),
        state: "MA".into(),
        zip: "02134".into(),
        password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into(),
        wrapped_link_key: vec![0xAB; 60],
        license_id: Some(format!("LIC{n:06}")),
        device_id: Some(device_id(n)),
        role: Role::User,
    }
}

/// The device id of user number `n`.
pub fn device_id(n: u32) -> String {
    format!("SL01{n:08}")
}

/// A request key whose fingerprint is derived from `what` (same `what`, same request).
pub fn req<'a>(user_id: UserId, request_id: &'a str, what: &str) -> RequestKey<'a> {
    RequestKey {
        user_id,
        request_id,
        fingerprint: Fingerprint::of("test", &[what.as_bytes()]).0,
    }
}

/// Funds `mills` under request id `id` (payment id "pay-U-id"), expecting success.
pub fn fund(store: &dyn Store, user_id: UserId, id: &str, mills: u64) -> FundOutcome {
    ok(try_fund(store, user_id, id, mills), "fund")
}

/// [`fund`], answering the store's error rather than panicking.
pub fn try_fund(
    store: &dyn Store,
    user_id: UserId,
    id: &str,
    mills: u64,
) -> Result<FundOutcome, LedgerError> {
    let payment_id = format!("pay-{user_id}-{id}");
    let input = FundInput {
        amount: amount(mills),
        payment_id: &payment_id,
        method: "card",
        token: Some("tok_visa"),
        last4: Some("4242"),
    };
    store.fund(&req(user_id, id, &format!("fund {mills}")), &input, T0_MS)
}

/// A user registered without a licence (the server licenses at the first funding).
pub fn add_unlicensed_user(store: &dyn Store, n: u32, at_ms: i64) -> UserId {
    let u = NewUser {
        license_id: None,
        device_id: None,
        ..new_user(n)
    };
    ok(store.create_user(&u, at_ms), "create unlicensed user")
}

/// A meter without a device takes no funding and issues nothing (`NotLicensed`); licensing sets
/// the device once (the same pair again is answered again, another pair or a taken device is
/// refused), and then money moves as for any user.
pub fn an_unlicensed_meter_takes_no_money_until_it_is_licensed_once(store: &dyn Store) {
    let taken = add_user(store, 1);
    let u = add_unlicensed_user(store, 2, T0_MS);
    let record = ok(store.user_by_id(u), "user").expect("user");
    assert_eq!((record.device_id, record.license_id), (None, None));
    assert!(matches!(
        try_fund(store, u, "f1", 5_000),
        Err(LedgerError::NotLicensed)
    ));
    assert!(matches!(
        try_issue(store, u, "i1", PRICE_MILLS, T0_MS),
        Err(LedgerError::NotLicensed)
    ));
    assert_eq!(ok(store.balance(u), "balance").balance_mills, 0);
    // Another user's device is not handed out twice.
    assert!(
        store
            .license_meter(u, "LIC-X", &device_id(1), T0_MS)
            .is_err()
    );
    ok(
        store.license_meter(u, "LIC000002", &device_id(2), T0_MS),
        "license",
    );
    ok(
        store.license_meter(u, "LIC000002", &device_id(2), T0_MS),
        "the same licence again",
    );
    assert!(
        store
            .license_meter(u, "LIC000009", &device_id(9), T0_MS)
            .is_err()
    );
    let meter = ok(store.meter(u), "meter").expect("meter");
    assert_eq!(meter.device_id, Some(device_id(2)));
    assert_eq!(meter.license_id.as_deref(), Some("LIC000002"));
    fund(store, u, "f1", 5_000);
    issue(store, u, "i1", PRICE_MILLS);
    fund(store, taken, "f1", 5_000);
    assert_clean(store);
}

/// Users never licensed (so never funded) and registered before the cut-off are deleted with
/// their zero accounts; their names can be registered again; licensed users and newer
/// registrations stay; the audit log says so and stays clean.
pub fn unlicensed_users_expire_and_their_names_are_free_again(store: &dyn Store) {
    let funded = add_user(store, 1);
    fund(store, funded, "f1", 5_000);
    let old = add_unlicensed_user(store, 2, T0_MS);
    let new = add_unlicensed_user(store, 3, T0_MS + 10_000);
    let admin = ok(
        store.create_user(
            &NewUser {
                role: Role::Admin,
                license_id: None,
                device_id: None,
                ..new_user(4)
            },
            T0_MS,
        ),
        "admin",
    );
    let expired = ok(
        store.expire_unlicensed_users(T0_MS + 5_000, T0_MS + 20_000),
        "expire",
    );
    assert_eq!(expired, vec!["User2".to_owned()]);
    assert!(ok(store.user_by_id(old), "old").is_none());
    assert!(ok(store.user_by_id(new), "new").is_some());
    assert!(ok(store.user_by_id(funded), "funded").is_some());
    assert!(ok(store.user_by_id(admin), "admin").is_some());
    assert_eq!(ok(store.balance(funded), "balance").balance_mills, 5_000);
    assert!(
        ok(
            store.expire_unlicensed_users(T0_MS + 5_000, T0_MS + 20_000),
            "again"
        )
        .is_empty()
    );
    let again = add_unlicensed_user(store, 2, T0_MS + 30_000);
    assert_ne!(again, old);
    assert_clean(store);
}

/// Whatever happens between issues (a funding, a void, a failed issue, a repeat), every item's
/// bytes name exactly the meter state its own issue left.
pub fn every_item_is_signed_for_the_meter_state_it_leaves(store: &dyn Store) {
    let u = add_user(store, 1);
    fund(store, u, "f1", 10 * PRICE_MILLS);
    let check = |item: &IssueOutcome| {
        let meter = ok(store.meter(u), "meter").expect("meter");
        let expected = sign_ok(&PieceState {
            device_id: meter.device_id.clone().expect("licensed"),
            piece: meter.piece,
            number: u64::from(meter.piece),
            ascending_mills: meter.ascending_mills,
            descending_mills: meter.descending_mills,
        })
        .expect("sign");
        assert_eq!(item.serial, expected.serial);
        assert_eq!(
            item.item, expected.bytes,
            "item {} names another state",
            item.serial
        );
    };
    let a = issue(store, u, "i1", PRICE_MILLS);
    check(&a);
    let b = issue(store, u, "i2", PRICE_MILLS);
    check(&b);
    fund(store, u, "f2", 3 * PRICE_MILLS);
    let c = issue(store, u, "i3", PRICE_MILLS);
    check(&c);
    ok(try_confirm(store, u, "c1", &c.serial, false, T0_MS), "void");
    let d = issue(store, u, "i4", 2 * PRICE_MILLS);
    check(&d);
    assert!(try_issue(store, u, "i5", 100 * PRICE_MILLS, T0_MS).is_err());
    let e = issue(store, u, "i6", PRICE_MILLS);
    check(&e);
    assert_eq!(
        issue(store, u, "i6", PRICE_MILLS),
        e,
        "a repeat answers the first item"
    );
    let f = issue(store, u, "i7", PRICE_MILLS);
    check(&f);
    assert_clean(store);
}

/// A signer like the crypto device's: serial "DEVICE-NUMBER", bytes naming the meter state.
pub fn sign_ok(piece: &PieceState) -> Result<SignedItem, String> {
    Ok(SignedItem {
        serial: format!("{}-{}", piece.device_id, piece.number),
        bytes: format!(
            "item|{}|{}|{}|{}",
            piece.device_id, piece.piece, piece.ascending_mills, piece.descending_mills
        )
        .into_bytes(),
        check: None,
    })
}

/// Issues a postage item of `mills` at `now_ms` under request id `id`.
pub fn try_issue(
    store: &dyn Store,
    user_id: UserId,
    id: &str,
    mills: u64,
    now_ms: i64,
) -> Result<IssueOutcome, LedgerError> {
    let input = IssueInput {
        kind: "postage",
        amount: amount(mills),
        session: Some("00000000-0000-4000-8000-000000000001".into()),
        valid_until_ms: None,
    };
    store
        .issue(
            &req(user_id, id, &format!("issue {mills}")),
            &input,
            Box::new(sign_ok),
            now_ms,
        )
        .wait()
}

/// Issues a postage item, expecting success.
pub fn issue(store: &dyn Store, user_id: UserId, id: &str, mills: u64) -> IssueOutcome {
    ok(try_issue(store, user_id, id, mills, T0_MS), "issue")
}

/// Confirms an item under request id `id`.
pub fn try_confirm(
    store: &dyn Store,
    user_id: UserId,
    id: &str,
    serial: &str,
    printed: bool,
    now_ms: i64,
) -> Result<ItemStatus, LedgerError> {
    let what = format!("confirm {serial} {printed}");
    store
        .confirm(&req(user_id, id, &what), serial, printed, now_ms)
        .wait()
        .map(|outcome| outcome.status)
}

/// Everything a failed operation must leave unchanged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    pub balance: BalanceView,
    pub meter: Option<MeterState>,
    pub history: Vec<ItemSummary>,
    pub accounts: u64,
    pub transfers: u64,
    pub items: u64,
    pub audit_entries: u64,
}

/// A snapshot of the store as `user_id` and the auditor see it.
pub fn snapshot(store: &dyn Store, user_id: UserId) -> Snapshot {
    let report = ok(store.audit(), "audit");
    Snapshot {
        balance: ok(store.balance(user_id), "balance"),
        meter: ok(store.meter(user_id), "meter"),
        history: ok(store.history(user_id, crate::MAX_HISTORY_LIMIT), "history"),
        accounts: report.accounts,
        transfers: report.transfers,
        items: report.items,
        audit_entries: report.audit_entries,
    }
}

/// Asserts that the audit finds no problem.
#[track_caller]
pub fn assert_clean(store: &dyn Store) {
    let report = ok(store.audit(), "audit");
    assert!(
        report.problems.is_empty(),
        "audit problems: {:#?}",
        report.problems
    );
}

/// Asserts that the audit finds at least one problem.
#[track_caller]
pub fn assert_dirty(store: &dyn Store) {
    let report = ok(store.audit(), "audit");
    assert!(
        !report.problems.is_empty(),
        "the audit missed a direct edit"
    );
}

fn view(balance: u64, ascending: u64, descending: u64, pieces: u64, reserved: u64) -> BalanceView {
    BalanceView {
        balance_mills: balance,
        ascending_mills: ascending,
        descending_mills: descending,
        pieces,
        reserved_mills: reserved,
    }
}

// ---- Behaviours ----

pub fn fund_issue_and_print_move_money_and_registers(store: &dyn Store) {
    let u = add_user(store, 1);
    assert_eq!(ok(store.balance(u), "balance"), view(0, 0, 0, 0, 0));

    let funded = fund(store, u, "f1", FUND_MILLS);
    assert_eq!(
        funded,
        FundOutcome {
            payment_id: format!("pay-{u}-f1"),
            amount_mills: FUND_MILLS,
            balance_mills: FUND_MILLS,
        }
    );
    assert_eq!(
        ok(store.balance(u), "balance"),
        view(FUND_MILLS, 0, FUND_MILLS, 0, 0)
    );

    let issued = issue(store, u, "i1", PRICE_MILLS);
    let left = FUND_MILLS - PRICE_MILLS;
    assert_eq!(issued.serial, format!("{}-1", device_id(1)));
    assert_eq!(issued.postage_mills, PRICE_MILLS);
    assert_eq!(issued.balance_mills, left);
    assert_eq!(
        issued.item,
        format!("item|{}|1|{PRICE_MILLS}|{left}", device_id(1)).into_bytes()
    );
    assert_eq!(
        ok(store.balance(u), "balance"),
        view(left, PRICE_MILLS, left, 1, PRICE_MILLS)
    );
    assert_eq!(
        ok(store.item_status(&issued.serial), "status"),
        Some(ItemStatus::Issued)
    );

    let printed = ok(
        store
            .confirm(&req(u, "c1", "print"), &issued.serial, true, T0_MS + 5)
            .wait(),
        "confirm",
    );
    assert_eq!(printed.status, ItemStatus::Printed);
    assert_eq!(printed.balance_mills, left);
    assert_eq!(
        ok(store.balance(u), "balance"),
        view(left, PRICE_MILLS, left, 1, 0)
    );
    assert_eq!(
        ok(store.item_status(&issued.serial), "status"),
        Some(ItemStatus::Printed)
    );
    let meter = ok(store.meter(u), "meter").expect("the user has a meter");
    assert_eq!(meter.piece, 1);
    assert_eq!(meter.device_id, Some(device_id(1)));

    let history = ok(store.history(u, 10), "history");
    assert_eq!(
        history,
        vec![ItemSummary {
            serial: issued.serial.clone(),
            kind: "postage".into(),
            amount_mills: PRICE_MILLS,
            status: ItemStatus::Printed,
            issued_at_ms: T0_MS,
        }]
    );
    let report = ok(store.audit(), "audit");
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert_eq!(report.transfers, 3, "fund, reserve, post");
    assert_eq!(report.items, 1);
    // register + fund + issue + confirm
    assert_eq!(report.audit_entries, 4);
}

pub fn repeated_request_returns_first_outcome_and_charges_once(store: &dyn Store) {
    let u = add_user(store, 1);
    let first = fund(store, u, "f1", FUND_MILLS);
    let again = fund(store, u, "f1", FUND_MILLS);
    assert_eq!(first, again);
    assert_eq!(ok(store.balance(u), "balance").balance_mills, FUND_MILLS);

    let signed = Arc::new(AtomicU32::new(0));
    let counting = || -> Signer {
        let signed = Arc::clone(&signed);
        Box::new(move |p: &PieceState| {
            signed.fetch_add(1, Ordering::SeqCst);
            sign_ok(p)
        })
    };
    let input = IssueInput {
        kind: "postage",
        amount: amount(PRICE_MILLS),
        session: None,
        valid_until_ms: None,
    };
    let key = req(u, "i1", "issue");
    let first = ok(store.issue(&key, &input, counting(), T0_MS).wait(), "issue");
    let again = ok(
        store.issue(&key, &input, counting(), T0_MS + 9).wait(),
        "issue again",
    );
    assert_eq!(first, again);
    assert_eq!(
        signed.load(Ordering::SeqCst),
        1,
        "a repeat must not sign again"
    );
    let after_issue = ok(store.balance(u), "balance");
    assert_eq!(
        after_issue,
        view(
            FUND_MILLS - PRICE_MILLS,
            PRICE_MILLS,
            FUND_MILLS - PRICE_MILLS,
            1,
            PRICE_MILLS
        )
    );

    let key = req(u, "c1", "confirm");
    let first = ok(
        store.confirm(&key, &first.serial, false, T0_MS).wait(),
        "confirm",
    );
    let again = ok(
        store.confirm(&key, &first.serial, false, T0_MS).wait(),
        "confirm again",
    );
    assert_eq!(first, again);
    assert_eq!(ok(store.balance(u), "balance").balance_mills, FUND_MILLS);

    let (fingerprint, op, json) =
        ok(store.find_request(u, "i1"), "find_request").expect("the issue request is stored");
    assert_eq!(fingerprint, req(u, "i1", "issue").fingerprint);
    assert_eq!(op, "issue");
    // The stored outcome names the item; its bytes stay in the item's row only.
    let stored: serde_json::Value = serde_json::from_str(&json).expect("outcome json");
    assert_eq!(stored["serial"], format!("{}-1", device_id(1)));
    assert!(stored.get("item").is_none(), "{stored}");
    assert!(ok(store.find_request(u, "never"), "find_request").is_none());

    let report = ok(store.audit(), "audit");
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert_eq!(report.transfers, 3, "fund, reserve, void: once each");
}

pub fn reused_request_id_is_refused_and_changes_nothing(store: &dyn Store) {
    let u = add_user(store, 1);
    fund(store, u, "f1", FUND_MILLS);
    let before = snapshot(store, u);

    let input = FundInput {
        amount: amount(FUND_MILLS),
        payment_id: "another-payment",
        method: "card",
        token: None,
        last4: None,
    };
    let other = store.fund(&req(u, "f1", "different"), &input, T0_MS);
    assert!(matches!(other, Err(LedgerError::IdReused)), "{other:?}");

    // The same id for another operation, even with the same fingerprint bytes, is another request.
    let issue_input = IssueInput {
        kind: "postage",
        amount: amount(PRICE_MILLS),
        session: None,
        valid_until_ms: None,
    };
    let crossed = store
        .issue(
            &req(u, "f1", &format!("fund {FUND_MILLS}")),
            &issue_input,
            Box::new(sign_ok),
            T0_MS,
        )
        .wait();
    assert!(matches!(crossed, Err(LedgerError::IdReused)), "{crossed:?}");
    let confirm = try_confirm(store, u, "f1", "SL0100000001-1", true, T0_MS);
    assert!(matches!(confirm, Err(LedgerError::IdReused)), "{confirm:?}");

    assert_eq!(snapshot(store, u), before);
    assert_clean(store);
}

pub fn request_ids_are_scoped_per_user(store: &dyn Store) {
    let a = add_user(store, 1);
    let b = add_user(store, 2);
    fund(store, a, "same", FUND_MILLS);
    fund(store, b, "same", 2 * FUND_MILLS);
    assert_eq!(ok(store.balance(a), "balance").balance_mills, FUND_MILLS);
    assert_eq!(
        ok(store.balance(b), "balance").balance_mills,
        2 * FUND_MILLS
    );
    assert_clean(store);
}

pub fn issue_beyond_balance_is_refused_and_changes_nothing(store: &dyn Store) {
    let u = add_user(store, 1);
    fund(store, u, "f1", 1000);
    let before = snapshot(store, u);

    let called = Arc::new(AtomicU32::new(0));
    let input = IssueInput {
        kind: "postage",
        amount: amount(1001),
        session: None,
        valid_until_ms: None,
    };
    let refused = store
        .issue(
            &req(u, "i1", "purchase of 1001 mills"),
            &input,
            Box::new({
                let called = Arc::clone(&called);
                move |p: &PieceState| {
                    called.fetch_add(1, Ordering::SeqCst);
                    sign_ok(p)
                }
            }),
            T0_MS,
        )
        .wait();
    assert!(
        matches!(
            refused,
            Err(LedgerError::InsufficientFunds {
                balance_mills: 1000,
                needed_mills: 1001
            })
        ),
        "{refused:?}"
    );
    assert_eq!(
        called.load(Ordering::SeqCst),
        0,
        "nothing is signed without funds"
    );
    assert_eq!(snapshot(store, u), before);
    assert!(
        ok(store.find_request(u, "i1"), "find_request").is_none(),
        "a failed request is not stored"
    );

    // The id is still free, and exactly the balance can be spent.
    let all = ok(try_issue(store, u, "i1", 1000, T0_MS), "issue all");
    assert_eq!(all.balance_mills, 0);
    let empty = try_issue(store, u, "i2", 1, T0_MS);
    assert!(
        matches!(
            empty,
            Err(LedgerError::InsufficientFunds {
                balance_mills: 0,
                needed_mills: 1
            })
        ),
        "{empty:?}"
    );
    let zero = try_issue(store, u, "i3", 0, T0_MS);
    assert!(
        matches!(zero, Err(LedgerError::InvalidInput(_))),
        "{zero:?}"
    );
    assert_clean(store);
}

pub fn failed_print_voids_item_and_returns_funds(store: &dyn Store) {
    let u = add_user(store, 1);
    fund(store, u, "f1", FUND_MILLS);
    let item = issue(store, u, "i1", PRICE_MILLS);
    let voided = ok(
        store
            .confirm(&req(u, "c1", "failed"), &item.serial, false, T0_MS + 1)
            .wait(),
        "confirm failed",
    );
    assert_eq!(voided.status, ItemStatus::Voided);
    assert_eq!(voided.balance_mills, FUND_MILLS);
    // Registers never run backwards: ascending keeps the issue, descending is credited again.
    assert_eq!(
        ok(store.balance(u), "balance"),
        view(FUND_MILLS, PRICE_MILLS, FUND_MILLS, 0, 0)
    );
    assert_eq!(
        ok(store.item_status(&item.serial), "status"),
        Some(ItemStatus::Voided)
    );
    assert_clean(store);
}

pub fn expired_confirmation_window_voids_items(store: &dyn Store) {
    let a = add_user(store, 1);
    let b = add_user(store, 2);
    fund(store, a, "f1", FUND_MILLS);
    fund(store, b, "f1", FUND_MILLS);
    let printed = issue(store, a, "i1", PRICE_MILLS);
    let pending = issue(store, a, "i2", PRICE_MILLS);
    let other = issue(store, b, "i1", PRICE_MILLS);
    ok(
        try_confirm(store, a, "c1", &printed.serial, true, T0_MS),
        "print",
    );

    // The link of user a dropped: only a's issued item gets a deadline, and only once.
    let deadline = T0_MS + 60_000;
    assert_eq!(
        ok(store.start_confirm_window(Some(a), deadline), "window"),
        1
    );
    assert_eq!(
        ok(store.start_confirm_window(Some(a), deadline + 5), "window"),
        0
    );
    assert!(ok(store.void_expired(deadline - 1), "void_expired").is_empty());
    assert_eq!(
        ok(store.void_expired(deadline), "void_expired"),
        vec![pending.serial.clone()]
    );
    assert!(ok(store.void_expired(deadline + 1), "void_expired").is_empty());
    assert_eq!(
        ok(store.item_status(&pending.serial), "status"),
        Some(ItemStatus::Voided)
    );
    assert_eq!(
        ok(store.item_status(&printed.serial), "status"),
        Some(ItemStatus::Printed)
    );
    assert_eq!(
        ok(store.balance(a), "balance"),
        view(
            FUND_MILLS - PRICE_MILLS,
            2 * PRICE_MILLS,
            FUND_MILLS - PRICE_MILLS,
            1,
            0
        )
    );
    // User b's item was untouched until every window starts.
    assert_eq!(
        ok(store.item_status(&other.serial), "status"),
        Some(ItemStatus::Issued)
    );
    assert_eq!(ok(store.start_confirm_window(None, deadline), "window"), 1);
    assert_eq!(
        ok(store.void_expired(deadline), "void_expired"),
        vec![other.serial.clone()]
    );
    assert_eq!(
        ok(store.balance(b), "balance"),
        view(FUND_MILLS, PRICE_MILLS, FUND_MILLS, 0, 0)
    );
    assert_clean(store);
}

pub fn late_print_confirmation_is_refused_and_voids(store: &dyn Store) {
    let u = add_user(store, 1);
    fund(store, u, "f1", FUND_MILLS);
    let on_time = issue(store, u, "i1", PRICE_MILLS);
    ok(
        store.start_confirm_window(Some(u), T0_MS + 1000),
        "start window",
    );
    assert_eq!(
        ok(
            try_confirm(store, u, "c1", &on_time.serial, true, T0_MS + 999),
            "confirm in time"
        ),
        ItemStatus::Printed
    );

    let late = issue(store, u, "i2", PRICE_MILLS);
    ok(
        store.start_confirm_window(Some(u), T0_MS + 2000),
        "start window",
    );
    let refused = try_confirm(store, u, "c2", &late.serial, true, T0_MS + 2000);
    assert!(
        matches!(
            refused,
            Err(LedgerError::NotPending {
                status: ItemStatus::Voided
            })
        ),
        "{refused:?}"
    );
    assert_eq!(
        ok(store.item_status(&late.serial), "status"),
        Some(ItemStatus::Voided)
    );
    assert_eq!(
        ok(store.balance(u), "balance"),
        view(
            FUND_MILLS - PRICE_MILLS,
            2 * PRICE_MILLS,
            FUND_MILLS - PRICE_MILLS,
            1,
            0
        )
    );
    assert!(
        ok(store.find_request(u, "c2"), "find_request").is_none(),
        "the refused confirmation is not stored"
    );
    assert_clean(store);
}

pub fn confirm_answers_final_state_and_refuses_other_states(store: &dyn Store) {
    let u = add_user(store, 1);
    fund(store, u, "f1", FUND_MILLS);
    let printed = issue(store, u, "i1", PRICE_MILLS);
    let voided = issue(store, u, "i2", PRICE_MILLS);
    ok(
        try_confirm(store, u, "c1", &printed.serial, true, T0_MS),
        "print",
    );
    ok(
        try_confirm(store, u, "c2", &voided.serial, false, T0_MS),
        "void",
    );
    let before = snapshot(store, u);

    assert_eq!(
        ok(
            try_confirm(store, u, "c3", &printed.serial, true, T0_MS),
            "print again"
        ),
        ItemStatus::Printed
    );
    assert_eq!(
        ok(
            try_confirm(store, u, "c4", &voided.serial, false, T0_MS),
            "void again"
        ),
        ItemStatus::Voided
    );
    let after = snapshot(store, u);
    assert_eq!(after.balance, before.balance);
    assert_eq!(after.transfers, before.transfers, "no money moves");

    let unprint = try_confirm(store, u, "c5", &printed.serial, false, T0_MS);
    assert!(
        matches!(
            unprint,
            Err(LedgerError::NotPending {
                status: ItemStatus::Printed
            })
        ),
        "{unprint:?}"
    );
    let unvoid = try_confirm(store, u, "c6", &voided.serial, true, T0_MS);
    assert!(
        matches!(
            unvoid,
            Err(LedgerError::NotPending {
                status: ItemStatus::Voided
            })
        ),
        "{unvoid:?}"
    );
    assert_eq!(snapshot(store, u), after);
    assert_clean(store);
}

pub fn items_of_other_users_are_unknown(store: &dyn Store) {
    let a = add_user(store, 1);
    let b = add_user(store, 2);
    fund(store, a, "f1", FUND_MILLS);
    fund(store, b, "f1", FUND_MILLS);
    let item = issue(store, a, "i1", PRICE_MILLS);
    ok(
        try_confirm(store, a, "c1", &item.serial, true, T0_MS),
        "print",
    );
    let before = snapshot(store, a);

    let confirm = try_confirm(store, b, "c1", &item.serial, false, T0_MS);
    assert!(
        matches!(confirm, Err(LedgerError::UnknownItem)),
        "{confirm:?}"
    );
    let refund = store.refund(&req(b, "r1", "refund"), &item.serial, i64::MAX, T0_MS);
    assert!(
        matches!(refund, Err(LedgerError::UnknownItem)),
        "{refund:?}"
    );
    let missing = try_confirm(store, a, "c9", "SL0100000001-99", true, T0_MS);
    assert!(
        matches!(missing, Err(LedgerError::UnknownItem)),
        "{missing:?}"
    );
    assert_eq!(snapshot(store, a), before);
    assert_clean(store);
}

pub fn refund_of_printed_item_returns_funds(store: &dyn Store) {
    let u = add_user(store, 1);
    fund(store, u, "f1", FUND_MILLS);
    let item = issue(store, u, "i1", PRICE_MILLS);
    ok(
        try_confirm(store, u, "c1", &item.serial, true, T0_MS),
        "print",
    );
    let window_ms = 30 * 24 * 3600 * 1000;
    let refunded = ok(
        store.refund(
            &req(u, "r1", "refund"),
            &item.serial,
            window_ms,
            T0_MS + window_ms,
        ),
        "refund",
    );
    assert_eq!(refunded.status, ItemStatus::Refunded);
    assert_eq!(refunded.balance_mills, FUND_MILLS);
    // ascending + descending = funding + refunds: the control total grew by the refund.
    assert_eq!(
        ok(store.balance(u), "balance"),
        view(FUND_MILLS, PRICE_MILLS, FUND_MILLS, 0, 0)
    );
    assert_eq!(
        ok(store.item_status(&item.serial), "status"),
        Some(ItemStatus::Refunded)
    );
    let before = snapshot(store, u);
    let again = ok(
        store.refund(&req(u, "r2", "refund"), &item.serial, window_ms, T0_MS),
        "refund again",
    );
    assert_eq!(again.status, ItemStatus::Refunded);
    let after = snapshot(store, u);
    assert_eq!(after.balance, before.balance);
    assert_eq!(after.transfers, before.transfers, "refunded once");
    assert_clean(store);
}

/// A void gives an item's funds back to the descending register, and a void cannot be refused
/// (a failed print, an expired window): so a funding or a refund that would leave the register
/// too little room for the user's reservations is refused (`Overflow`), and with a register at
/// its limit the voids, the user's own and the expiry voids of everyone, still go through.
/// (Found by the model test, `tests/model.rs`: a funding filled the room of a pending item, whose
/// void was then refused, and `void_expired` failed for every user.)
pub fn the_register_keeps_room_for_every_void(store: &dyn Store) {
    let max = crate::MAX_REGISTER_MILLS;
    let a = add_user(store, 1);
    let b = add_user(store, 2);
    fund(store, a, "f1", max);
    let pending = issue(store, a, "i1", PRICE_MILLS);
    let printed = issue(store, a, "i2", PRICE_MILLS);
    ok(
        try_confirm(store, a, "c1", &printed.serial, true, T0_MS),
        "print",
    );
    // descending = max − 2 × price, one price reserved: room for one more price.
    let before = snapshot(store, a);
    let over = try_fund(store, a, "f2", 2 * PRICE_MILLS);
    assert!(matches!(over, Err(LedgerError::Overflow)), "{over:?}");
    assert_eq!(
        snapshot(store, a),
        before,
        "a refused funding changes nothing"
    );
    fund(store, a, "f3", PRICE_MILLS);
    let before = snapshot(store, a);
    let refund = store.refund(&req(a, "r1", "refund"), &printed.serial, 60_000, T0_MS);
    assert!(matches!(refund, Err(LedgerError::Overflow)), "{refund:?}");
    assert_eq!(
        snapshot(store, a),
        before,
        "a refused refund changes nothing"
    );

    fund(store, b, "f1", FUND_MILLS);
    let other = issue(store, b, "i1", PRICE_MILLS);
    assert_eq!(ok(store.start_confirm_window(None, T0_MS + 1), "window"), 2);
    assert_eq!(
        ok(store.void_expired(T0_MS + 1), "void_expired"),
        vec![pending.serial.clone(), other.serial.clone()]
    );
    assert_eq!(
        ok(store.balance(a), "balance"),
        view(max, 2 * PRICE_MILLS, max, 1, 0)
    );
    assert_eq!(
        ok(store.balance(b), "balance"),
        view(FUND_MILLS, PRICE_MILLS, FUND_MILLS, 0, 0)
    );
    assert_clean(store);
}

pub fn refund_is_refused_before_print_and_after_window(store: &dyn Store) {
    let u = add_user(store, 1);
    fund(store, u, "f1", FUND_MILLS);
    let issued = issue(store, u, "i1", PRICE_MILLS);
    let old = issue(store, u, "i2", PRICE_MILLS);
    ok(
        try_confirm(store, u, "c1", &old.serial, true, T0_MS),
        "print",
    );
    let voided = issue(store, u, "i3", PRICE_MILLS);
    ok(
        try_confirm(store, u, "c2", &voided.serial, false, T0_MS),
        "void",
    );
    let before = snapshot(store, u);

    let window_ms = 1000;
    let early = store.refund(&req(u, "r1", "a"), &issued.serial, window_ms, T0_MS);
    assert!(
        matches!(
            early,
            Err(LedgerError::NotPending {
                status: ItemStatus::Issued
            })
        ),
        "{early:?}"
    );
    let late = store.refund(&req(u, "r2", "b"), &old.serial, window_ms, T0_MS + 1001);
    assert!(
        matches!(late, Err(LedgerError::RefundWindowClosed)),
        "{late:?}"
    );
    let twice = store.refund(&req(u, "r3", "c"), &voided.serial, window_ms, T0_MS);
    assert!(
        matches!(
            twice,
            Err(LedgerError::NotPending {
                status: ItemStatus::Voided
            })
        ),
        "{twice:?}"
    );
    assert_eq!(snapshot(store, u), before);
    assert_clean(store);
}

pub fn signing_failure_changes_nothing(store: &dyn Store) {
    let u = add_user(store, 1);
    fund(store, u, "f1", FUND_MILLS);
    let before = snapshot(store, u);
    let input = IssueInput {
        kind: "postage",
        amount: amount(PRICE_MILLS),
        session: None,
        valid_until_ms: None,
    };
    let failed = store
        .issue(
            &req(u, "i1", "issue"),
            &input,
            Box::new(|_: &PieceState| Err("device unplugged".to_string())),
            T0_MS,
        )
        .wait();
    assert!(matches!(failed, Err(LedgerError::Signing(_))), "{failed:?}");
    let empty = store
        .issue(
            &req(u, "i1", "issue"),
            &input,
            Box::new(|p: &PieceState| {
                Ok(SignedItem {
                    serial: format!("{}-{}", p.device_id, p.piece),
                    bytes: Vec::new(),
                    check: None,
                })
            }),
            T0_MS,
        )
        .wait();
    assert!(matches!(empty, Err(LedgerError::Signing(_))), "{empty:?}");
    // The server's check of the fresh signature fails (SQLite runs it on this thread while its
    // writer goes on): nothing is committed, and the check's reason is the error.
    let unchecked = store
        .issue(
            &req(u, "i1", "issue"),
            &input,
            Box::new(|p: &PieceState| {
                let mut item = sign_ok(p)?;
                item.check = Some(Box::new(|| Err("signature does not verify".to_string())));
                Ok(item)
            }),
            T0_MS,
        )
        .wait();
    assert!(
        matches!(&unchecked, Err(LedgerError::Signing(m)) if m == "signature does not verify"),
        "{unchecked:?}"
    );
    assert_eq!(snapshot(store, u), before);
    assert!(ok(store.find_request(u, "i1"), "find_request").is_none());

    // The next successful issue takes piece 1: the failures used no number. Its check passes
    // (and runs exactly once).
    let checked = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&checked);
    let item = ok(
        store
            .issue(
                &req(u, "i1", "issue"),
                &input,
                Box::new(move |p: &PieceState| {
                    let mut item = sign_ok(p)?;
                    let counter = Arc::clone(&counter);
                    item.check = Some(Box::new(move || {
                        counter.fetch_add(1, Ordering::SeqCst);
                        Ok(())
                    }));
                    Ok(item)
                }),
                T0_MS,
            )
            .wait(),
        "issue",
    );
    assert_eq!(item.serial, format!("{}-1", device_id(1)));
    assert_eq!(checked.load(Ordering::SeqCst), 1);
    assert_clean(store);
}

pub fn piece_numbers_run_without_gaps(store: &dyn Store) {
    let u = add_user(store, 1);
    fund(store, u, "f1", 5 * PRICE_MILLS);
    let mut pieces = Vec::new();
    let mut attempt = 0;
    while pieces.len() < 5 {
        attempt += 1;
        let id = format!("i{attempt}");
        let input = IssueInput {
            kind: "postage",
            amount: amount(PRICE_MILLS),
            session: None,
            valid_until_ms: None,
        };
        // Every third attempt fails at the device, every fourth asks for too much.
        let mills = if attempt % 4 == 0 {
            100 * FUND_MILLS
        } else {
            PRICE_MILLS
        };
        let input = IssueInput {
            amount: amount(mills),
            ..input
        };
        let seen = Arc::new(std::sync::Mutex::new(None));
        let result = store
            .issue(
                &req(u, &id, "issue"),
                &input,
                Box::new({
                    let seen = Arc::clone(&seen);
                    move |p: &PieceState| {
                        *seen.lock().expect("signer record") = Some(p.clone());
                        if attempt % 3 == 0 {
                            Err("busy".into())
                        } else {
                            sign_ok(p)
                        }
                    }
                }),
                T0_MS + attempt,
            )
            .wait();
        if let Ok(item) = result {
            let p = seen
                .lock()
                .expect("signer record")
                .take()
                .expect("the signer saw the piece");
            assert_eq!(item.serial, format!("{}-{}", p.device_id, p.piece));
            pieces.push(p.piece);
            // The piece and the registers after it: ascending counts every issue.
            assert_eq!(p.ascending_mills, u64::from(p.piece) * PRICE_MILLS);
            assert_eq!(
                p.descending_mills,
                5 * PRICE_MILLS - u64::from(p.piece) * PRICE_MILLS
            );
        }
    }
    assert_eq!(pieces, vec![1, 2, 3, 4, 5]);
    let meter = ok(store.meter(u), "meter").expect("meter");
    assert_eq!(meter.piece, 5);
    // Voiding returns money but never a piece number.
    let serial = format!("{}-5", device_id(1));
    ok(try_confirm(store, u, "c1", &serial, false, T0_MS), "void");
    fund(store, u, "f2", PRICE_MILLS);
    let next = issue(store, u, "after-void", PRICE_MILLS);
    assert_eq!(next.serial, format!("{}-6", device_id(1)));
    assert_clean(store);
}

pub fn history_is_newest_first_and_limited(store: &dyn Store) {
    let u = add_user(store, 1);
    fund(store, u, "f1", FUND_MILLS);
    for (n, id) in ["i1", "i2", "i3"].iter().enumerate() {
        let now = T0_MS + i64::try_from(n).unwrap_or(0);
        ok(try_issue(store, u, id, PRICE_MILLS + 10, now), "issue");
    }
    let serial = |piece: u32| format!("{}-{piece}", device_id(1));
    ok(
        try_confirm(store, u, "c1", &serial(2), false, T0_MS),
        "void",
    );

    let two = ok(store.history(u, 2), "history");
    assert_eq!(
        two.iter().map(|i| i.serial.clone()).collect::<Vec<_>>(),
        vec![serial(3), serial(2)]
    );
    assert_eq!(two[1].status, ItemStatus::Voided);
    assert_eq!(two[1].amount_mills, PRICE_MILLS + 10);
    assert_eq!(two[0].issued_at_ms, T0_MS + 2);
    let all = ok(store.history(u, u32::MAX), "history");
    assert_eq!(all.len(), 3);
    assert!(ok(store.history(u, 0), "history").is_empty());
    let other = add_user(store, 2);
    assert!(ok(store.history(other, 10), "history").is_empty());
}

pub fn fund_validates_input_and_refuses_duplicate_payment(store: &dyn Store) {
    let u = add_user(store, 1);
    fund(store, u, "f1", FUND_MILLS);
    let before = snapshot(store, u);
    let good = FundInput {
        amount: amount(500),
        payment_id: "pay-x",
        method: "eft",
        token: None,
        last4: None,
    };
    let cases = [
        FundInput {
            amount: Amount::ZERO,
            ..good
        },
        FundInput {
            method: "cash",
            ..good
        },
        FundInput {
            last4: Some("42a2"),
            ..good
        },
        FundInput {
            last4: Some("424242"),
            ..good
        },
        FundInput {
            payment_id: "",
            ..good
        },
    ];
    for (n, input) in cases.iter().enumerate() {
        let id = format!("bad{n}");
        let result = store.fund(&req(u, &id, &id), input, T0_MS);
        assert!(
            matches!(result, Err(LedgerError::InvalidInput(_))),
            "case {n}: {result:?}"
        );
    }
    let long_id = "x".repeat(crate::MAX_REQUEST_ID_LEN + 1);
    let result = store.fund(&req(u, &long_id, "long"), &good, T0_MS);
    assert!(
        matches!(result, Err(LedgerError::InvalidInput(_))),
        "{result:?}"
    );
    let duplicate = FundInput {
        payment_id: &format!("pay-{u}-f1"),
        ..good
    };
    let result = store.fund(&req(u, "f2", "dup"), &duplicate, T0_MS);
    assert!(
        matches!(result, Err(LedgerError::DuplicatePayment)),
        "{result:?}"
    );
    let result = store.fund(&req(u + 1000, "f1", "nobody"), &good, T0_MS);
    assert!(
        matches!(result, Err(LedgerError::UnknownUser)),
        "{result:?}"
    );
    assert_eq!(snapshot(store, u), before);

    let eft = ok(store.fund(&req(u, "f3", "eft"), &good, T0_MS), "eft fund");
    assert_eq!(eft.balance_mills, FUND_MILLS + 500);
    assert_clean(store);
}

pub fn create_user_refuses_taken_key_and_users_read_back(store: &dyn Store) {
    let id = add_user(store, 1);
    let taken = store.create_user(&new_user(1), T0_MS);
    assert!(matches!(taken, Err(LedgerError::UserExists)), "{taken:?}");
    let mut admin = new_user(2);
    admin.role = Role::Admin;
    let admin_id = ok(store.create_user(&admin, T0_MS), "create admin");
    assert_ne!(id, admin_id);

    let record = ok(store.user_by_key("user1"), "user_by_key").expect("user1 exists");
    assert_eq!(record.id, id);
    assert_eq!(record.user, "User1");
    assert_eq!(record.device_id, Some(device_id(1)));
    assert_eq!(record.license_id.as_deref(), Some("LIC000001"));
    assert_eq!(record.name, "Test User 1");
    assert_eq!(record.zip, "02134");
    assert_eq!(record.password_hash, new_user(1).password_hash);
    assert_eq!(record.wrapped_link_key, new_user(1).wrapped_link_key);
    assert_eq!(record.role, Role::User);
    let by_id = ok(store.user_by_id(admin_id), "user_by_id").expect("admin exists");
    assert_eq!(by_id.role, Role::Admin);
    assert!(ok(store.user_by_key("nobody"), "user_by_key").is_none());
    assert!(ok(store.user_by_id(admin_id + 1000), "user_by_id").is_none());

    assert_eq!(ok(store.balance(id), "balance"), view(0, 0, 0, 0, 0));
    let meter = ok(store.meter(admin_id), "meter").expect("meter");
    assert_eq!((meter.piece, meter.ascending_mills), (0, 0));
    assert_eq!(meter.seal, None);
    assert_clean(store);
}

/// Failed logins are counted per (user name, source), whether or not the name is a user's: after
/// the free failures, that source is refused for that name for a doubling time, capped; a
/// refused attempt is logged but not counted; other sources and names are not touched; a success
/// forgets its source's failures; pairs are forgotten once their time is up; an operator can
/// list and clear them; every failure is in the audit log with its source.
pub fn login_failures_back_off_per_name_and_source(store: &dyn Store) {
    let u = add_user(store, 1);
    let policy = crate::ThrottlePolicy {
        free_failures: 3,
        first_ms: 1_000,
        max_ms: 4_000,
    };
    let fail = |name: &str, source: &str, now: i64| {
        let failure = crate::LoginFailure {
            user_key: name.into(),
            user: (name == "user1").then_some(u),
            source: source.into(),
            detail: format!("address={source}:4711"),
        };
        ok(store.record_login_failure(&failure, policy, now), "failure")
    };
    let refused = |name: &str, source: &str, now: i64| {
        ok(store.login_throttle(name, source, now), "throttle")
    };
    let x = "198.51.100.7";
    let y = "2001:db8:1:2::/64";
    assert_eq!(fail("user1", x, T0_MS), None);
    assert_eq!(fail("user1", x, T0_MS + 1), None);
    assert_eq!(refused("user1", x, T0_MS + 1), None);
    // The third failure in a row refuses that source for 1 s …
    assert_eq!(fail("user1", x, T0_MS + 2), Some(T0_MS + 1_002));
    assert_eq!(refused("user1", x, T0_MS + 500), Some(T0_MS + 1_002));
    // … and only that source, for that name.
    assert_eq!(refused("user1", y, T0_MS + 500), None);
    assert_eq!(refused("user2", x, T0_MS + 500), None);
    // A failure while refused is not counted and does not extend the back-off.
    assert_eq!(fail("user1", x, T0_MS + 600), Some(T0_MS + 1_002));
    assert_eq!(refused("user1", x, T0_MS + 1_002), None);
    // Then it doubles, up to the cap.
    assert_eq!(fail("user1", x, T0_MS + 1_002), Some(T0_MS + 3_002));
    assert_eq!(fail("user1", x, T0_MS + 3_002), Some(T0_MS + 7_002));
    assert_eq!(fail("user1", x, T0_MS + 7_002), Some(T0_MS + 11_002));
    // Unknown names are counted the same way.
    for i in 0..3 {
        fail("nobody", x, T0_MS + i);
    }
    assert_eq!(refused("nobody", x, T0_MS + 3), Some(T0_MS + 1_002));
    fail("user1", y, T0_MS + 10);

    let listed = ok(store.login_throttles(T0_MS + 3_000), "list");
    let view: Vec<_> = listed
        .iter()
        .map(|t| {
            (
                t.user_key.as_str(),
                t.source.as_str(),
                t.failures,
                t.until_ms,
            )
        })
        .collect();
    assert_eq!(
        view,
        vec![
            ("nobody", x, 3, None),
            ("user1", x, 6, Some(T0_MS + 11_002)),
            ("user1", y, 1, None),
        ]
    );
    // A success forgets its own source's failures only.
    ok(
        store.record_login_success(u, y, T0_MS + 3_001, "client stampline/0.1"),
        "success",
    );
    assert_eq!(ok(store.login_throttles(T0_MS + 3_001), "list").len(), 2);
    // An operator clears every source of one name.
    assert_eq!(
        ok(
            store.clear_login_throttles("user1", "admin:9", T0_MS + 3_002),
            "clear"
        ),
        1
    );
    assert_eq!(refused("user1", x, T0_MS + 3_002), None);
    let left = ok(store.login_throttles(T0_MS + 3_002), "list");
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].user_key, "nobody");
    // Pairs are forgotten `max_ms` after their back-off ended, and pruned at the next failure.
    assert!(ok(store.login_throttles(T0_MS + 1_002 + 4_000), "list").is_empty());
    assert_eq!(
        fail("nobody", x, T0_MS + 6_000),
        None,
        "counting starts again"
    );
    assert_eq!(
        ok(store.login_throttles(T0_MS + 6_000), "list")[0].failures,
        1
    );

    let unknown = store.record_login_success(u + 1000, x, T0_MS, "x");
    assert!(
        matches!(unknown, Err(LedgerError::UnknownUser)),
        "{unknown:?}"
    );
    let report = ok(store.audit(), "audit");
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    // register + 11 failures + 1 login + 1 clear + 1 failure
    assert_eq!(report.audit_entries, 15);
}

pub fn an_administrator_locks_and_unlocks_a_user(store: &dyn Store) {
    let u = add_user(store, 1);
    let locked = |store: &dyn Store| ok(store.user_by_id(u), "user").expect("user").locked;
    assert!(!locked(store));
    assert!(ok(
        store.set_user_locked("user1", true, "admin:root", T0_MS),
        "lock"
    ));
    assert!(locked(store));
    assert!(!ok(
        store.set_user_locked("user1", true, "admin:root", T0_MS),
        "again"
    ));
    assert!(!ok(
        store.set_user_locked("nobody", true, "admin:root", T0_MS),
        "nobody"
    ));
    assert!(ok(
        store.set_user_locked("user1", false, "admin:root", T0_MS),
        "unlock"
    ));
    assert!(!locked(store));
    // register, then one entry for the lock and one for the unlock.
    assert_eq!(ok(store.audit(), "audit").audit_entries, 3);
    assert_clean(store);
}

/// Items [`paging_walks_every_item_once`] pages through.
pub const PAGING_ITEMS: usize = 10_000;

/// [`PAGING_ITEMS`] items — postage and every tenth a ticket, three to a millisecond so that
/// issue times tie — walked in pages of 97 from the last serial of each: every item once, newest
/// first, none skipped, and another user's serial or an unknown one is `UnknownItem`.
pub fn paging_walks_every_item_once(store: &dyn Store) {
    let u = add_user(store, 1);
    let other = add_user(store, 2);
    fund(store, u, "f1", 100_000);
    fund(store, other, "f1", 1_000);
    let mut issued = Vec::with_capacity(PAGING_ITEMS);
    for i in 0..PAGING_ITEMS {
        let at = T0_MS + i64::try_from(i / 3).expect("small");
        let (kind, id) = if i % 10 == 9 {
            ("ticket", format!("t{i}"))
        } else {
            ("postage", format!("p{i}"))
        };
        let input = IssueInput {
            kind,
            amount: amount(1),
            session: None,
            valid_until_ms: None,
        };
        let out = ok(
            store
                .issue(&req(u, &id, kind), &input, Box::new(sign_ok), at)
                .wait(),
            "issue",
        );
        issued.push((at, out.serial));
    }
    // Newest first: by issue time, then by number (a ticket's is above every postage piece's).
    let number = |serial: &str| -> u64 {
        serial
            .rsplit('-')
            .next()
            .and_then(|n| n.parse().ok())
            .expect("numbered serial")
    };
    issued.sort_by_key(|(at, serial)| (std::cmp::Reverse(*at), std::cmp::Reverse(number(serial))));
    let expected: Vec<String> = issued.into_iter().map(|(_, s)| s).collect();
    let mut walked: Vec<String> = Vec::new();
    let mut before: Option<String> = None;
    loop {
        let page = ok(store.history_page(u, before.as_deref(), 97), "page");
        if page.is_empty() {
            break;
        }
        before = page.last().map(|i| i.serial.clone());
        walked.extend(page.into_iter().map(|i| i.serial));
    }
    assert_eq!(walked.len(), PAGING_ITEMS);
    assert!(walked == expected, "pages skip, repeat or misorder items");
    let foreign = issue(store, other, "o1", 1).serial;
    assert!(matches!(
        store.history_page(u, Some(&foreign), 10),
        Err(LedgerError::UnknownItem)
    ));
    assert!(matches!(
        store.history_page(u, Some("SL0199999999-1"), 10),
        Err(LedgerError::UnknownItem)
    ));
}

pub fn unknown_users_and_items_are_reported(store: &dyn Store) {
    let u = add_user(store, 1);
    let nobody = u + 1000;
    assert!(matches!(
        store.balance(nobody),
        Err(LedgerError::UnknownUser)
    ));
    assert!(matches!(
        store.history(nobody, 1),
        Err(LedgerError::UnknownUser)
    ));
    assert!(ok(store.meter(nobody), "meter").is_none());
    let issued = try_issue(store, nobody, "i1", PRICE_MILLS, T0_MS);
    assert!(
        matches!(issued, Err(LedgerError::UnknownUser)),
        "{issued:?}"
    );
    assert_eq!(ok(store.item_status("SL0100000001-1"), "item_status"), None);
    assert_eq!(ok(store.item_status(""), "item_status"), None);
    assert_eq!(
        ok(store.item_status(&"9".repeat(10_000)), "item_status"),
        None
    );
    assert_clean(store);
}

/// A mixed workload over three users; returns their ids.
pub fn mixed_workload(store: &dyn Store) -> Vec<UserId> {
    let users: Vec<UserId> = (1..=3).map(|n| add_user(store, n)).collect();
    for (n, &u) in users.iter().enumerate() {
        let n = u64::try_from(n).unwrap_or(0);
        fund(store, u, "f1", FUND_MILLS + n * 1000);
        fund(store, u, "f2", 2500);
        let a = issue(store, u, "i1", PRICE_MILLS);
        let b = issue(store, u, "i2", 1350);
        let c = issue(store, u, "i3", 2200);
        // The fourth stays issued until its confirmation window expires.
        issue(store, u, "i4", PRICE_MILLS);
        ok(try_confirm(store, u, "c1", &a.serial, true, T0_MS), "print");
        ok(try_confirm(store, u, "c2", &b.serial, false, T0_MS), "void");
        ok(try_confirm(store, u, "c3", &c.serial, true, T0_MS), "print");
        ok(
            store.refund(&req(u, "r1", "refund"), &c.serial, 1000, T0_MS + 10),
            "refund",
        );
        ok(
            store.record_login_success(u, "192.0.2.1", T0_MS, "login"),
            "login success",
        );
    }
    ok(store.start_confirm_window(None, T0_MS + 100), "window");
    ok(store.void_expired(T0_MS + 100), "void expired");
    let failure = crate::LoginFailure {
        user_key: "user1".into(),
        user: Some(users[0]),
        source: "192.0.2.1".into(),
        detail: "address=192.0.2.1:4711".into(),
    };
    let policy = crate::ThrottlePolicy {
        free_failures: 5,
        first_ms: 1000,
        max_ms: 60_000,
    };
    ok(
        store.record_login_failure(&failure, policy, T0_MS),
        "login failure",
    );
    ok(
        store.append_audit("admin:1", "kick", "{\"session\":\"x\"}", T0_MS),
        "append_audit",
    );
    users
}

pub fn audit_is_clean_after_mixed_workload(store: &dyn Store) {
    let users = mixed_workload(store);
    let report = ok(store.audit(), "audit");
    assert!(report.problems.is_empty(), "{:#?}", report.problems);
    // bank_clearing, postage_sold, the three outstanding:KIND, and two per user.
    assert_eq!(report.accounts, 2 + 3 + 2 * 3);
    // per user: 2 funds, 4 reserves, 2 posts, 2 voids (one expired), 1 refund
    assert_eq!(report.transfers, 3 * 11);
    assert_eq!(report.items, 3 * 4);
    for (n, &u) in users.iter().enumerate() {
        let n = u64::try_from(n).unwrap_or(0);
        let funded = FUND_MILLS + n * 1000 + 2500;
        let issued = 2 * PRICE_MILLS + 1350 + 2200;
        let spent = PRICE_MILLS; // a is printed; b, d voided; c refunded
        let b = ok(store.balance(u), "balance");
        assert_eq!(b, view(funded - spent, issued, funded - spent, 1, 0));
        // The control total: ascending + descending = funding + voids + refunds.
        assert_eq!(
            b.ascending_mills + b.descending_mills,
            funded + 1350 + PRICE_MILLS + 2200
        );
    }
}

/// Users issuing at once (SQLite's writer groups them into one commit) where one item's check
/// fails: that issue fails with the check's reason and leaves nothing, every issue answered `Ok`
/// is in the ledger, every other failure (its group rolled back) left nothing, and the audit is
/// clean.
pub fn a_failed_check_among_concurrent_issues_commits_nothing_of_it(store: &dyn Store) {
    const USERS: u32 = 8;
    const BAD: usize = 3;
    let users: Vec<UserId> = (1..=USERS)
        .map(|n| {
            let u = add_user(store, n);
            fund(store, u, "f1", FUND_MILLS);
            u
        })
        .collect();
    // What is the user's own (the snapshot's counts are of the whole ledger).
    let own = |u: UserId| {
        let s = snapshot(store, u);
        (s.balance, s.meter, s.history)
    };
    let before: Vec<_> = users.iter().map(|&u| own(u)).collect();
    let results: Vec<Result<IssueOutcome, LedgerError>> = std::thread::scope(|scope| {
        let handles: Vec<_> = users
            .iter()
            .enumerate()
            .map(|(i, &u)| {
                scope.spawn(move || {
                    let input = IssueInput {
                        kind: "postage",
                        amount: amount(PRICE_MILLS),
                        session: None,
                        valid_until_ms: None,
                    };
                    let sign = move |p: &PieceState| {
                        let mut item = sign_ok(p)?;
                        item.check = Some(Box::new(move || {
                            // Long enough for other issues to join the group meanwhile.
                            std::thread::sleep(std::time::Duration::from_millis(5));
                            if i == BAD {
                                Err("signature does not verify".to_string())
                            } else {
                                Ok(())
                            }
                        }));
                        Ok(item)
                    };
                    store
                        .issue(&req(u, "i1", "issue"), &input, Box::new(sign), T0_MS)
                        .wait()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| panic!("an issuing thread panicked"))
            })
            .collect()
    });
    for (i, result) in results.iter().enumerate() {
        let u = users[i];
        match result {
            Ok(item) => {
                assert_ne!(i, BAD, "the item whose check failed was issued");
                assert_eq!(
                    ok(store.item_status(&item.serial), "status"),
                    Some(ItemStatus::Issued)
                );
                assert!(ok(store.find_request(u, "i1"), "find_request").is_some());
            }
            Err(LedgerError::Signing(reason)) if i == BAD => {
                assert_eq!(reason, "signature does not verify");
                assert_eq!(own(u), before[i]);
            }
            Err(LedgerError::GroupCommit(_)) if i != BAD => {
                assert_eq!(own(u), before[i], "a refused issue left something");
                assert!(ok(store.find_request(u, "i1"), "find_request").is_none());
            }
            Err(e) => panic!("user {u}: unexpected {e:?}"),
        }
    }
    // The writer's view of the audit log went back with the rolled-back group: every user
    // issues again (an append on a stale head would be refused as a broken log).
    for &u in &users {
        ok(
            try_issue(store, u, "i2", PRICE_MILLS, T0_MS),
            "issue after the group",
        );
    }
    assert_clean(store);
}

/// The async API (`issue` and `confirm` awaited, as the server calls them): the outcome is the
/// committed one, the item's check runs on the thread of the task awaiting it, and a failing check
/// leaves nothing.
pub fn queued_operations_answer_after_their_commit(store: &dyn Store) {
    let u = add_user(store, 1);
    fund(store, u, "f1", FUND_MILLS);
    let before = snapshot(store, u);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap_or_else(|e| panic!("runtime: {e}"));
    let input = IssueInput {
        kind: "postage",
        amount: amount(PRICE_MILLS),
        session: None,
        valid_until_ms: None,
    };
    let this_thread = std::thread::current().id();
    let signer = |passes: bool, ran_on: Arc<std::sync::Mutex<Option<std::thread::ThreadId>>>| {
        move |p: &PieceState| {
            let mut item = sign_ok(p)?;
            let ran_on = Arc::clone(&ran_on);
            item.check = Some(Box::new(move || {
                *ran_on.lock().unwrap_or_else(|e| e.into_inner()) =
                    Some(std::thread::current().id());
                if passes {
                    Ok(())
                } else {
                    Err("signature does not verify".to_string())
                }
            }));
            Ok(item)
        }
    };
    let ran_on = Arc::new(std::sync::Mutex::new(None));
    let failed = runtime.block_on(
        store
            .issue(
                &req(u, "i1", "issue"),
                &input,
                Box::new(signer(false, Arc::clone(&ran_on))),
                T0_MS,
            )
            .outcome(),
    );
    assert!(
        matches!(&failed, Err(LedgerError::Signing(m)) if m == "signature does not verify"),
        "{failed:?}"
    );
    assert_eq!(snapshot(store, u), before);
    assert_eq!(
        *ran_on.lock().unwrap_or_else(|e| e.into_inner()),
        Some(this_thread)
    );

    let item = runtime
        .block_on(
            store
                .issue(
                    &req(u, "i1", "issue"),
                    &input,
                    Box::new(signer(true, Arc::clone(&ran_on))),
                    T0_MS,
                )
                .outcome(),
        )
        .unwrap_or_else(|e| panic!("queued issue: {e:?}"));
    assert_eq!(item.balance_mills, FUND_MILLS - PRICE_MILLS);
    assert_eq!(
        ok(store.item_status(&item.serial), "status"),
        Some(ItemStatus::Issued)
    );
    for _ in 0..2 {
        // The second is a repeat: the first outcome again.
        let printed = runtime.block_on(
            store
                .confirm(&req(u, "c1", "print"), &item.serial, true, T0_MS + 5)
                .outcome(),
        );
        assert!(
            matches!(&printed, Ok(s) if s.status == ItemStatus::Printed
                && s.balance_mills == FUND_MILLS - PRICE_MILLS),
            "{printed:?}"
        );
    }
    assert_eq!(
        ok(store.item_status(&item.serial), "status"),
        Some(ItemStatus::Printed)
    );
    assert_clean(store);
}

/// An issue that fails after it has written (here: the device answers with a serial already
/// issued, found when the item row is inserted, after the meter update) leaves nothing: SQLite's
/// writer runs issues without a savepoint and rolls the whole group back then.
pub fn a_fault_after_the_first_write_leaves_nothing(store: &dyn Store) {
    let (a, b) = (add_user(store, 1), add_user(store, 2));
    fund(store, a, "f1", FUND_MILLS);
    fund(store, b, "f1", FUND_MILLS);
    let input = IssueInput {
        kind: "postage",
        amount: amount(PRICE_MILLS),
        session: None,
        valid_until_ms: None,
    };
    let same_serial = |p: &PieceState| {
        let mut item = sign_ok(p)?;
        item.serial = "SL0100000001-1".to_owned();
        Ok(item)
    };
    let first = ok(
        store
            .issue(&req(a, "i1", "issue"), &input, Box::new(same_serial), T0_MS)
            .wait(),
        "first issue",
    );
    assert_eq!(first.serial, "SL0100000001-1");
    let before = snapshot(store, b);
    let twice = store
        .issue(&req(b, "i1", "issue"), &input, Box::new(same_serial), T0_MS)
        .wait();
    assert!(matches!(twice, Err(LedgerError::Invariant(_))), "{twice:?}");
    assert_eq!(snapshot(store, b), before, "the meter update was kept");
    assert!(ok(store.find_request(b, "i1"), "find_request").is_none());
    // The next issue of that user takes piece 1: nothing of the failed one remains.
    let next = ok(try_issue(store, b, "i2", PRICE_MILLS, T0_MS), "next issue");
    assert_eq!(next.serial, format!("{}-1", device_id(2)));
    assert_clean(store);
}

pub fn concurrent_issues_never_overdraw(store: &dyn Store) {
    const THREADS: usize = 8;
    const TRIES: usize = 20;
    let u = add_user(store, 1);
    fund(store, u, "f1", 10 * PRICE_MILLS);
    let results: Vec<(usize, usize)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                scope.spawn(move || {
                    let (mut issued, mut refused) = (0, 0);
                    for n in 0..TRIES {
                        let id = format!("t{t}-{n}");
                        match try_issue(store, u, &id, PRICE_MILLS, T0_MS) {
                            Ok(_) => issued += 1,
                            Err(LedgerError::InsufficientFunds { .. }) => refused += 1,
                            Err(e) => panic!("thread {t}: unexpected {e:?}"),
                        }
                    }
                    (issued, refused)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| match h.join() {
                Ok(counts) => counts,
                Err(_) => panic!("an issuing thread panicked"),
            })
            .collect()
    });
    let issued: usize = results.iter().map(|r| r.0).sum();
    let refused: usize = results.iter().map(|r| r.1).sum();
    assert_eq!(issued, 10);
    assert_eq!(refused, THREADS * TRIES - 10);
    assert_eq!(
        ok(store.balance(u), "balance"),
        view(0, 10 * PRICE_MILLS, 0, 10, 10 * PRICE_MILLS)
    );
    assert_eq!(ok(store.meter(u), "meter").map(|m| m.piece), Some(10));
    assert_clean(store);
}

// ---- Tamper behaviours ----

pub fn audit_detects_edited_balance(store: &dyn Store, tamper: &dyn Tamper) {
    let users = mixed_workload(store);
    assert_clean(store);
    tamper.shift_balance(&customer_account(users[1]), 1000);
    assert_dirty(store);
}

pub fn audit_detects_edited_register(store: &dyn Store, tamper: &dyn Tamper) {
    let users = mixed_workload(store);
    assert_clean(store);
    tamper.shift_register(users[2], Register::Ascending, -1);
    assert_dirty(store);
    tamper.shift_register(users[2], Register::Ascending, 1);
    assert_clean(store);
    tamper.shift_register(users[0], Register::Descending, 5000);
    assert_dirty(store);
}

/// The store must seal with [`TestSealer`].
pub fn raised_register_freezes_the_meter_and_fails_the_seal_audit(
    store: &dyn Store,
    tamper: &dyn Tamper,
) {
    let users = mixed_workload(store);
    assert_clean(store);
    let u = users[0];
    // Raise the register and the balance together: the money still adds up per user, so only
    // the seal (and the ledger-wide sum) can tell.
    tamper.shift_register(u, Register::Descending, 5000);
    tamper.shift_balance(&customer_account(u), 5000);
    match try_issue(store, u, "after-tamper", PRICE_MILLS, T0_MS) {
        Err(e @ LedgerError::MeterFrozen { .. }) => assert_eq!(e.code(), "meter_frozen"),
        other => panic!("issue on a tampered meter: {other:?}"),
    }
    match store.fund(
        &req(u, "fund-after-tamper", "fund"),
        &FundInput {
            amount: amount(1000),
            payment_id: "pay-after-tamper",
            method: "card",
            token: None,
            last4: None,
        },
        T0_MS,
    ) {
        Err(LedgerError::MeterFrozen { .. }) => {}
        other => panic!("fund on a tampered meter: {other:?}"),
    }
    let report = ok(store.audit(), "audit");
    assert!(
        report.problems.iter().any(|p| p.contains("seal")),
        "audit does not name the seal: {:?}",
        report.problems
    );
    // Other meters keep working.
    fund(store, users[1], "f-other", 1000);
}

/// The store must seal with [`TestSealer`].
pub fn edited_balance_freezes_the_meter_on_next_use(store: &dyn Store, tamper: &dyn Tamper) {
    let users = mixed_workload(store);
    let u = users[1];
    tamper.shift_balance(&customer_account(u), 100_000);
    match try_issue(store, u, "after-tamper", PRICE_MILLS, T0_MS) {
        Err(LedgerError::MeterFrozen { reason, .. }) => assert!(reason.contains("balance")),
        other => panic!("issue after a balance edit: {other:?}"),
    }
    assert_dirty(store);
}

/// The store must seal with [`TestSealer`].
pub fn a_frozen_meter_does_not_stop_expiry_voids_of_others(store: &dyn Store, tamper: &dyn Tamper) {
    let (a, b) = (add_user(store, 1), add_user(store, 2));
    fund(store, a, "f1", FUND_MILLS);
    fund(store, b, "f1", FUND_MILLS);
    let item_a = issue(store, a, "i1", PRICE_MILLS);
    let item_b = issue(store, b, "i1", PRICE_MILLS);
    ok(store.start_confirm_window(None, T0_MS + 10), "start window");
    tamper.shift_register(a, Register::Ascending, 1);
    let voided = ok(store.void_expired(T0_MS + 10), "void_expired");
    assert_eq!(voided, vec![item_b.serial.clone()]);
    assert_eq!(
        ok(store.item_status(&item_a.serial), "status"),
        Some(ItemStatus::Issued)
    );
    assert_eq!(
        ok(store.item_status(&item_b.serial), "status"),
        Some(ItemStatus::Voided)
    );
}

/// The newest entries deleted leave a chain that verifies on its own; the store still knows the
/// head it wrote and refuses to append elsewhere, so nothing more moves. The audit names the
/// transfer that lost its entry.
pub fn a_deleted_newest_audit_entry_stops_every_money_operation(
    store: &dyn Store,
    tamper: &dyn Tamper,
) {
    let u = add_user(store, 1);
    fund(store, u, "f1", FUND_MILLS);
    let item = issue(store, u, "i1", PRICE_MILLS);
    let before = ok(store.balance(u), "balance");
    tamper.delete_newest_audit_entry();
    let refused = try_issue(store, u, "i2", PRICE_MILLS, T0_MS);
    assert!(
        matches!(refused, Err(LedgerError::AuditLogBroken(_))),
        "{refused:?}"
    );
    let confirm = try_confirm(store, u, "c1", &item.serial, true, T0_MS);
    assert!(
        matches!(confirm, Err(LedgerError::AuditLogBroken(_))),
        "{confirm:?}"
    );
    assert_eq!(ok(store.balance(u), "balance"), before, "nothing moved");
    assert_dirty(store);
}

pub fn audit_detects_deleted_audit_entry(store: &dyn Store, tamper: &dyn Tamper) {
    mixed_workload(store);
    assert_clean(store);
    tamper.delete_audit_entry(3);
    assert_dirty(store);
}

/// Reprints hand out the stored bytes of an unconfirmed item, count against the limit, are
/// logged, answer a repeated request id without counting twice, and are refused after the limit,
/// after the window, for printed items (`AlreadyPrinted`: one paid indicium, one printed copy)
/// and for voided items; no money moves.
pub fn reprints_are_limited_counted_and_logged(store: &dyn Store) {
    let u = add_user(store, 1);
    fund(store, u, "f1", FUND_MILLS);
    let printed = issue(store, u, "i1", PRICE_MILLS);
    ok(
        try_confirm(store, u, "c1", &printed.serial, true, T0_MS),
        "print",
    );
    let pending = issue(store, u, "i2", PRICE_MILLS);
    let voided = issue(store, u, "i3", PRICE_MILLS);
    ok(
        try_confirm(store, u, "c2", &voided.serial, false, T0_MS),
        "void",
    );
    let limits = ReprintLimits {
        max_reprints: 2,
        window_ms: 1000,
    };
    let before = snapshot(store, u);

    let first = ok(
        store.reprint(&req(u, "p1", "a"), &pending.serial, limits, T0_MS + 10),
        "reprint of an unconfirmed item",
    );
    assert_eq!(first.item, pending.item);
    assert_eq!(
        (first.status, first.reprints, first.reprints_left),
        (ItemStatus::Issued, 1, 1)
    );
    let again = ok(
        store.reprint(&req(u, "p1", "a"), &pending.serial, limits, T0_MS + 20),
        "repeat",
    );
    assert_eq!(
        again, first,
        "a repeated request id answers the first outcome"
    );
    let second = ok(
        store.reprint(&req(u, "p2", "b"), &pending.serial, limits, T0_MS + 30),
        "reprint",
    );
    assert_eq!((second.reprints, second.reprints_left), (2, 0));
    let third = store.reprint(&req(u, "p3", "c"), &pending.serial, limits, T0_MS + 40);
    assert!(
        matches!(third, Err(LedgerError::ReprintLimit { reprints: 2 })),
        "{third:?}"
    );

    let copy = store.reprint(&req(u, "p4", "d"), &printed.serial, limits, T0_MS + 50);
    assert!(
        matches!(copy, Err(LedgerError::AlreadyPrinted)),
        "a printed item is never handed out again: {copy:?}"
    );
    let late = store.reprint(&req(u, "p5", "e"), &pending.serial, limits, T0_MS + 1001);
    assert!(
        matches!(late, Err(LedgerError::ReprintWindowClosed)),
        "{late:?}"
    );
    let gone = store.reprint(&req(u, "p6", "f"), &voided.serial, limits, T0_MS);
    assert!(
        matches!(
            gone,
            Err(LedgerError::NotPending {
                status: ItemStatus::Voided
            })
        ),
        "{gone:?}"
    );
    let other = add_user(store, 2);
    let foreign = store.reprint(&req(other, "p7", "g"), &pending.serial, limits, T0_MS);
    assert!(
        matches!(foreign, Err(LedgerError::UnknownItem)),
        "{foreign:?}"
    );
    assert_eq!(
        ok(store.item_status(&printed.serial), "status"),
        Some(ItemStatus::Printed)
    );
    let after = snapshot(store, u);
    assert_eq!(after.balance, before.balance, "reprints move no money");
    assert_eq!(after.transfers, before.transfers);
    assert_eq!(
        after.audit_entries,
        before.audit_entries + 2 + 1,
        "each counted reprint is logged (and the second user's registration)"
    );
    assert_clean(store);
}
