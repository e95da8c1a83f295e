//! Behaviours of the payment and closure store methods: ACH returns, auto-refill bookkeeping,
//! closure payouts.

use super::{T0_MS, add_user, assert_clean, fund, issue, ok, req, try_confirm, try_issue};
use crate::{AutoRefill, CloseStart, FundInput, LedgerError, Payout, Store, UserId};

/// The behaviours of this module, by name.
pub const BEHAVIOURS: &[(&str, super::Behaviour)] = &[
    (
        "a_returned_debit_stays_open_until_paid_once",
        a_returned_debit_stays_open_until_paid_once,
    ),
    (
        "closure_pays_out_the_whole_balance_and_keeps_the_audit_clean",
        closure_pays_out_the_whole_balance_and_keeps_the_audit_clean,
    ),
    (
        "a_closing_account_moves_no_money_and_its_closure_resumes",
        a_closing_account_moves_no_money_and_its_closure_resumes,
    ),
    (
        "a_closure_pays_out_only_the_plan_it_fixed_first",
        a_closure_pays_out_only_the_plan_it_fixed_first,
    ),
    (
        "auto_refills_are_counted_once_and_within_the_cap",
        auto_refills_are_counted_once_and_within_the_cap,
    ),
];

fn fund_eft(store: &dyn Store, user_id: UserId, id: &str, mills: u64) -> String {
    let payment_id = format!("eft-{user_id}-{id}");
    let input = FundInput {
        amount: super::amount(mills),
        payment_id: &payment_id,
        method: "eft",
        token: None,
        last4: Some("6789"),
    };
    ok(
        store.fund(&req(user_id, id, "eft"), &input, T0_MS),
        "fund eft",
    );
    payment_id
}

pub fn a_returned_debit_stays_open_until_paid_once(store: &dyn Store) {
    let u = add_user(store, 1);
    let card = fund(store, u, "f1", 2_000).payment_id;
    let eft = fund_eft(store, u, "f2", 3_000);
    assert!(matches!(
        store.record_payment_return(&card, T0_MS),
        Err(LedgerError::InvalidInput(_))
    ));
    assert_eq!(
        ok(store.record_payment_return(&eft, T0_MS), "return"),
        Some(u)
    );
    assert_eq!(ok(store.record_payment_return(&eft, T0_MS), "again"), None);
    let open = ok(store.open_returns(u), "open");
    assert_eq!(open.len(), 1);
    assert_eq!(open[0].amount_mills, 3_000);
    assert!(
        matches!(
            store.refuse_if_locked(u),
            Err(LedgerError::AccountLocked { ref payment_id, amount_mills: 3_000 }) if *payment_id == eft
        ),
        "a returned debit locks the account"
    );
    let refused = try_issue(store, u, "i-locked", 780, T0_MS);
    assert!(
        matches!(refused, Err(LedgerError::AccountLocked { .. })),
        "{refused:?}"
    );
    let key = req(u, "pay-debt", "debt");
    let out = ok(store.pay_return(&key, &eft, "pay-card-9", T0_MS), "pay");
    assert_eq!(out.balance_mills, 5_000, "paying the debt credits nothing");
    assert_eq!(
        ok(store.pay_return(&key, &eft, "pay-card-9", T0_MS), "replay"),
        out
    );
    assert!(ok(store.open_returns(u), "open").is_empty());
    ok(store.refuse_if_locked(u), "unlocked once paid");
    let rows = ok(store.payments(), "payments");
    let row = rows
        .iter()
        .find(|p| p.payment_id == eft)
        .map(|p| p.paid_by.clone());
    assert_eq!(row, Some(Some("pay-card-9".to_owned())));
    assert_clean(store);
}

pub fn closure_pays_out_the_whole_balance_and_keeps_the_audit_clean(store: &dyn Store) {
    let u = add_user(store, 1);
    let p = fund(store, u, "f1", 10_000).payment_id;
    let item = issue(store, u, "i1", 780);
    ok(
        try_confirm(store, u, "c1", &item.serial, true, T0_MS),
        "confirm",
    );
    let payout = |amount_mills| Payout {
        payment_id: p.clone(),
        refund_id: "ref-1".into(),
        amount_mills,
    };
    let key = req(u, "close", "close");
    assert!(matches!(
        store.close_account(&key, &[payout(9_000)], T0_MS),
        Err(LedgerError::InvalidInput(_))
    ));
    let out = ok(store.close_account(&key, &[payout(9_220)], T0_MS), "close");
    assert_eq!((out.refunded_mills, out.balance_mills), (9_220, 0));
    assert_eq!(
        ok(store.close_account(&key, &[payout(9_220)], T0_MS), "replay"),
        out
    );
    assert!(ok(store.closed_at(u), "closed").is_some());
    let b = ok(store.balance(u), "balance");
    assert_eq!((b.ascending_mills, b.descending_mills), (780, 0));
    let rows = ok(store.payments(), "payments");
    assert_eq!(rows[0].refunded_mills, 9_220);
    assert_clean(store);
}

/// Closing is begun before the bank refunds anything: from then on nothing is spent or credited,
/// so the balance the refunds were planned from holds; a closure that stopped half-way goes on
/// under the next request, and once finished it answers its outcome.
pub fn a_closing_account_moves_no_money_and_its_closure_resumes(store: &dyn Store) {
    let u = add_user(store, 1);
    let p = fund(store, u, "f1", 10_000).payment_id;
    let printed = issue(store, u, "i1", 780);
    ok(
        try_confirm(store, u, "c1", &printed.serial, true, T0_MS),
        "confirm",
    );
    let first = req(u, "close-1", "close");
    assert_eq!(
        ok(store.begin_close(&first, T0_MS), "begin"),
        CloseStart::Closing {
            balance_mills: 9_220
        }
    );
    let refused = try_issue(store, u, "i2", 780, T0_MS);
    assert!(
        matches!(refused, Err(LedgerError::AccountClosed)),
        "{refused:?}"
    );
    let refund = store.refund(&req(u, "r1", "refund"), &printed.serial, i64::MAX, T0_MS);
    assert!(
        matches!(refund, Err(LedgerError::AccountClosed)),
        "{refund:?}"
    );
    let late = store.fund(
        &req(u, "f-late", "fund"),
        &FundInput {
            amount: super::amount(1_000),
            payment_id: "pay-late",
            method: "card",
            token: Some("tok_visa"),
            last4: Some("4242"),
        },
        T0_MS,
    );
    assert!(matches!(late, Err(LedgerError::AccountClosed)), "{late:?}");
    assert_eq!(ok(store.balance(u), "balance").balance_mills, 9_220);
    // The process died after beginning; the client asks again under a new id.
    let second = req(u, "close-2", "close");
    assert_eq!(
        ok(store.begin_close(&second, T0_MS), "resume"),
        CloseStart::Closing {
            balance_mills: 9_220
        }
    );
    let payout = Payout {
        payment_id: p,
        refund_id: "ref-1".into(),
        amount_mills: 9_220,
    };
    assert!(
        matches!(
            store.close_account(&first, std::slice::from_ref(&payout), T0_MS),
            Err(LedgerError::InvalidInput(_))
        ),
        "only the request going on with the closure finishes it"
    );
    let out = ok(store.close_account(&second, &[payout], T0_MS), "close");
    assert_eq!((out.refunded_mills, out.balance_mills), (9_220, 0));
    assert_eq!(
        ok(store.begin_close(&second, T0_MS), "again"),
        CloseStart::Closed(out)
    );
    assert!(matches!(
        store.begin_close(&req(u, "close-3", "close"), T0_MS),
        Err(LedgerError::AccountClosed)
    ));
    assert_clean(store);
}

/// The payout plan is fixed once per closure: a resumed closure gets the first plan back (even
/// when it would plan otherwise now), and only that plan can be booked.
pub fn a_closure_pays_out_only_the_plan_it_fixed_first(store: &dyn Store) {
    let u = add_user(store, 1);
    let card = fund(store, u, "f1", 6_000).payment_id;
    let eft = fund(store, u, "f2", 4_000).payment_id;
    let plan = vec![(card.clone(), 10_000)];
    let refused = store.fix_close_plan(u, &plan, T0_MS);
    assert!(
        matches!(refused, Err(LedgerError::InvalidInput(_))),
        "no closure yet: {refused:?}"
    );
    let key = req(u, "close-1", "close");
    ok(store.begin_close(&key, T0_MS), "begin");
    for bad in [
        vec![(card.clone(), 9_000)],
        vec![(card.clone(), 5_000), (card.clone(), 5_000)],
        vec![(card.clone(), 10_000), (eft.clone(), 0)],
    ] {
        let refused = store.fix_close_plan(u, &bad, T0_MS);
        assert!(
            matches!(refused, Err(LedgerError::InvalidInput(_))),
            "{bad:?}: {refused:?}"
        );
    }
    assert_eq!(
        ok(store.close_plan(u), "plan"),
        None,
        "a refused plan is not kept"
    );
    assert_eq!(ok(store.fix_close_plan(u, &plan, T0_MS), "fix"), plan);
    // The resumed closure would now plan the debit too: the first plan stands.
    let later = vec![(eft.clone(), 4_000), (card.clone(), 6_000)];
    assert_eq!(ok(store.fix_close_plan(u, &later, T0_MS), "again"), plan);
    assert_eq!(ok(store.close_plan(u), "plan"), Some(plan));
    let payout = |payment_id: &str, amount_mills: u64| Payout {
        payment_id: payment_id.into(),
        refund_id: format!("ref-{payment_id}"),
        amount_mills,
    };
    let other = store.close_account(&key, &[payout(&eft, 4_000), payout(&card, 6_000)], T0_MS);
    assert!(
        matches!(other, Err(LedgerError::InvalidInput(_))),
        "payouts off the plan: {other:?}"
    );
    assert_eq!(ok(store.balance(u), "balance").balance_mills, 10_000);
    let out = ok(
        store.close_account(&key, &[payout(&card, 10_000)], T0_MS),
        "close",
    );
    assert_eq!((out.refunded_mills, out.balance_mills), (10_000, 0));
    assert_eq!(ok(store.close_plan(u), "plan"), None, "finished");
    assert_clean(store);
}

pub fn auto_refills_are_counted_once_and_within_the_cap(store: &dyn Store) {
    let u = add_user(store, 1);
    let auth = AutoRefill {
        token: "tok_1".into(),
        last4: "4242".into(),
        threshold_mills: 1_000,
        amount_mills: 2_000,
        cap_mills: 4_000,
        used_mills: 0,
        refills: 0,
    };
    ok(
        store.set_auto_refill(&req(u, "set", "set"), Some(&auth), T0_MS),
        "set",
    );
    assert!(ok(store.count_auto_refill(u, 0, 2_000), "count 0"));
    assert!(!ok(store.count_auto_refill(u, 0, 2_000), "count 0 again"));
    assert!(ok(store.count_auto_refill(u, 1, 2_000), "count 1"));
    assert!(!ok(store.count_auto_refill(u, 2, 2_000), "over the cap"));
    let now = ok(store.auto_refill(u), "read").map(|a| (a.used_mills, a.refills));
    assert_eq!(now, Some((4_000, 2)));
    ok(
        store.set_auto_refill(&req(u, "off", "off"), None, T0_MS),
        "off",
    );
    assert_eq!(ok(store.auto_refill(u), "read"), None);
    assert_clean(store);
}
