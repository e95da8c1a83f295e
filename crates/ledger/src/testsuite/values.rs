//! Behaviours of value items (tickets, checks, coupons, certificates): their own registers and
//! sequences beside the postage meter, the funds they reserve and give back, and redemption once
//! (a certificate in parts) by the issuer or the users it allows.

use super::{
    FUND_MILLS, PRICE_MILLS, T0_MS, add_user, amount, assert_clean, fund, issue, ok, req, sign_ok,
    snapshot, try_confirm,
};
use crate::{
    IssueInput, IssueOutcome, ItemStatus, LedgerError, RedeemOutcome, Store, UserId, ValueRegister,
};

/// The behaviours of this module, by name.
pub const BEHAVIOURS: &[(&str, super::Behaviour)] = &[
    (
        "a_ticket_reserves_its_price_and_never_moves_the_meter",
        a_ticket_reserves_its_price_and_never_moves_the_meter,
    ),
    (
        "value_items_are_numbered_by_kind_from_one",
        value_items_are_numbered_by_kind_from_one,
    ),
    (
        "a_void_or_refund_gives_a_value_item_back",
        a_void_or_refund_gives_a_value_item_back,
    ),
    (
        "a_certificate_redeems_in_parts_never_below_zero",
        a_certificate_redeems_in_parts_never_below_zero,
    ),
    ("coupons_move_no_money", coupons_move_no_money),
    (
        "only_the_issuer_and_its_redeemers_redeem",
        only_the_issuer_and_its_redeemers_redeem,
    ),
    (
        "an_item_past_its_validity_is_refused",
        an_item_past_its_validity_is_refused,
    ),
    (
        "a_repeated_redemption_answers_the_first_and_credits_once",
        a_repeated_redemption_answers_the_first_and_credits_once,
    ),
    (
        "concurrent_redemptions_of_one_item_succeed_once",
        concurrent_redemptions_of_one_item_succeed_once,
    ),
    (
        "bad_value_item_requests_change_nothing",
        bad_value_item_requests_change_nothing,
    ),
    (
        "a_refund_racing_partial_redemptions_pays_once",
        a_refund_racing_partial_redemptions_pays_once,
    ),
];

/// Issues a value item of `kind` worth `mills` at `now_ms`, valid until `valid_until_ms`.
pub fn try_issue_value(
    store: &dyn Store,
    user_id: UserId,
    id: &str,
    kind: &'static str,
    mills: u64,
    valid_until_ms: Option<i64>,
) -> Result<IssueOutcome, LedgerError> {
    let input = IssueInput {
        kind,
        amount: amount(mills),
        session: None,
        valid_until_ms,
    };
    store
        .issue(
            &req(user_id, id, &format!("issue {kind} {mills}")),
            &input,
            Box::new(sign_ok),
            T0_MS,
        )
        .wait()
}

/// Issues and prints a value item, expecting success.
pub fn printed_value(
    store: &dyn Store,
    user_id: UserId,
    id: &str,
    kind: &'static str,
    mills: u64,
) -> IssueOutcome {
    let item = ok(
        try_issue_value(store, user_id, id, kind, mills, None),
        "issue value item",
    );
    let status = ok(
        try_confirm(
            store,
            user_id,
            &format!("{id}-printed"),
            &item.serial,
            true,
            T0_MS,
        ),
        "print",
    );
    assert_eq!(status, ItemStatus::Printed);
    item
}

/// Redeems `serial` for `user_id` under request id `id`.
pub fn try_redeem(
    store: &dyn Store,
    user_id: UserId,
    id: &str,
    serial: &str,
    mills: Option<u64>,
    now_ms: i64,
) -> Result<RedeemOutcome, LedgerError> {
    store.redeem(
        &req(user_id, id, &format!("redeem {serial} {mills:?}")),
        serial,
        mills.map(amount),
        now_ms,
    )
}

fn register(store: &dyn Store, user_id: UserId, kind: &str) -> Option<ValueRegister> {
    ok(store.value_registers(user_id), "value registers")
        .into_iter()
        .find(|r| r.kind == kind)
}

pub fn a_ticket_reserves_its_price_and_never_moves_the_meter(store: &dyn Store) {
    let u = add_user(store, 1);
    fund(store, u, "f1", FUND_MILLS);
    let meter_before = ok(store.meter(u), "meter");
    let ticket = ok(
        try_issue_value(store, u, "t1", "ticket", 2_500, None),
        "issue ticket",
    );
    assert_eq!(ticket.balance_mills, FUND_MILLS - 2_500);
    let balance = ok(store.balance(u), "balance");
    assert_eq!(balance.balance_mills, FUND_MILLS - 2_500);
    assert_eq!(balance.reserved_mills, 2_500);
    assert_eq!(balance.pieces, 0, "a ticket is not a postage piece");
    assert_eq!(
        ok(store.meter(u), "meter"),
        meter_before,
        "the postage meter's registers did not move"
    );
    assert_clean(store);
    ok(
        try_confirm(store, u, "c1", &ticket.serial, true, T0_MS),
        "print",
    );
    assert_eq!(ok(store.balance(u), "balance").reserved_mills, 0);
    assert_eq!(
        register(store, u, "ticket"),
        Some(ValueRegister {
            kind: "ticket".into(),
            pieces: 1,
            issued_mills: 2_500,
            returned_mills: 0,
            redeemed_mills: 0,
        })
    );
    assert_clean(store);
    // Postage still works beside it, on the registers the ticket left alone.
    let stamp = issue(store, u, "i1", PRICE_MILLS);
    let meter = ok(store.meter(u), "meter").expect("meter");
    assert_eq!(meter.ascending_mills, PRICE_MILLS);
    assert_eq!(meter.descending_mills, FUND_MILLS - PRICE_MILLS);
    assert_eq!(meter.piece, 1);
    assert_eq!(stamp.balance_mills, FUND_MILLS - 2_500 - PRICE_MILLS);
    // The issuer redeems its ticket: the funds come back from the liability.
    let redeemed = ok(
        try_redeem(store, u, "r1", &ticket.serial, None, T0_MS + 1),
        "redeem",
    );
    assert_eq!(
        redeemed,
        RedeemOutcome {
            serial: ticket.serial.clone(),
            kind: "ticket".into(),
            status: ItemStatus::Redeemed,
            redeemed_mills: 2_500,
            remaining_mills: 0,
            balance_mills: FUND_MILLS - 2_500 - PRICE_MILLS + 2_500,
        }
    );
    assert_eq!(
        ok(store.item_status(&ticket.serial), "status"),
        Some(ItemStatus::Redeemed)
    );
    let again = try_redeem(store, u, "r2", &ticket.serial, None, T0_MS + 2);
    assert!(
        matches!(again, Err(LedgerError::AlreadyRedeemed)),
        "{again:?}"
    );
    let refund = store.refund(&req(u, "x1", "refund"), &ticket.serial, i64::MAX, T0_MS);
    assert!(
        matches!(
            refund,
            Err(LedgerError::NotPending {
                status: ItemStatus::Redeemed
            })
        ),
        "{refund:?}"
    );
    let postage = try_redeem(store, u, "r3", &stamp.serial, None, T0_MS);
    assert!(
        matches!(postage, Err(LedgerError::NotRedeemable)),
        "{postage:?}"
    );
    let unknown = try_redeem(store, u, "r4", "SL0199999999-20000000001", None, T0_MS);
    assert!(
        matches!(unknown, Err(LedgerError::UnknownItem)),
        "{unknown:?}"
    );
    assert_clean(store);
}

pub fn value_items_are_numbered_by_kind_from_one(store: &dyn Store) {
    let u = add_user(store, 1);
    fund(store, u, "f1", FUND_MILLS);
    let device = ok(store.meter(u), "meter")
        .and_then(|m| m.device_id)
        .expect("licensed");
    let first_check = printed_value(store, u, "k1", "check", 1_000);
    let second_check = printed_value(store, u, "k2", "check", 1_000);
    let ticket = printed_value(store, u, "t1", "ticket", 1_000);
    let stamp = issue(store, u, "i1", PRICE_MILLS);
    assert_eq!(first_check.serial, format!("{device}-30000000001"));
    assert_eq!(second_check.serial, format!("{device}-30000000002"));
    assert_eq!(ticket.serial, format!("{device}-20000000001"));
    assert_eq!(stamp.serial, format!("{device}-1"));
    // The signer was told the check number as the piece.
    assert!(
        String::from_utf8_lossy(&second_check.item).contains("|2|"),
        "{:?}",
        String::from_utf8_lossy(&second_check.item)
    );
    assert_eq!(register(store, u, "check").map(|r| r.pieces), Some(2));
    // The export of a period: the checks, oldest first, with their bytes; nothing outside it.
    let checks = ok(store.items_of_kind(u, "check", T0_MS, T0_MS + 1), "export");
    let serials: Vec<&str> = checks.iter().map(|c| c.serial.as_str()).collect();
    assert_eq!(
        serials,
        [first_check.serial.as_str(), second_check.serial.as_str()]
    );
    assert_eq!(checks[1].bytes, second_check.item);
    assert_eq!(checks[1].status, ItemStatus::Printed);
    assert!(
        ok(
            store.items_of_kind(u, "check", T0_MS + 1, T0_MS + 2),
            "later"
        )
        .is_empty()
    );
    assert_clean(store);
}

pub fn a_void_or_refund_gives_a_value_item_back(store: &dyn Store) {
    let u = add_user(store, 1);
    fund(store, u, "f1", FUND_MILLS);
    let ticket = ok(
        try_issue_value(store, u, "t1", "ticket", 2_000, None),
        "issue",
    );
    assert_eq!(
        ok(
            try_confirm(store, u, "c1", &ticket.serial, false, T0_MS),
            "void"
        ),
        ItemStatus::Voided
    );
    assert_eq!(ok(store.balance(u), "balance").balance_mills, FUND_MILLS);
    let certificate = printed_value(store, u, "g1", "certificate", 3_000);
    assert_eq!(
        ok(store.balance(u), "balance").balance_mills,
        FUND_MILLS - 3_000
    );
    let refunded = ok(
        store.refund(
            &req(u, "x1", "refund"),
            &certificate.serial,
            i64::MAX,
            T0_MS,
        ),
        "refund",
    );
    assert_eq!(refunded.status, ItemStatus::Refunded);
    assert_eq!(refunded.balance_mills, FUND_MILLS);
    let redeem = try_redeem(store, u, "r1", &certificate.serial, None, T0_MS);
    assert!(
        matches!(
            redeem,
            Err(LedgerError::NotPending {
                status: ItemStatus::Refunded
            })
        ),
        "{redeem:?}"
    );
    assert_eq!(
        register(store, u, "ticket").map(|r| r.returned_mills),
        Some(2_000)
    );
    assert_eq!(
        register(store, u, "certificate").map(|r| r.returned_mills),
        Some(3_000)
    );
    // The whole balance can be spent again on postage: nothing is stuck in a value account.
    issue(store, u, "i1", FUND_MILLS);
    assert_clean(store);
}

pub fn a_certificate_redeems_in_parts_never_below_zero(store: &dyn Store) {
    let u = add_user(store, 1);
    fund(store, u, "f1", FUND_MILLS);
    let certificate = printed_value(store, u, "g1", "certificate", 5_000);
    let first = ok(
        try_redeem(store, u, "r1", &certificate.serial, Some(2_000), T0_MS),
        "part",
    );
    assert_eq!(first.status, ItemStatus::Printed);
    assert_eq!(first.remaining_mills, 3_000);
    let state = ok(store.item_state(&certificate.serial), "state").expect("known");
    assert_eq!(state.remaining_mills, Some(3_000));
    let too_much = try_redeem(store, u, "r2", &certificate.serial, Some(4_000), T0_MS);
    assert!(
        matches!(too_much, Err(LedgerError::InvalidInput(_))),
        "{too_much:?}"
    );
    let refund = store.refund(
        &req(u, "x1", "refund"),
        &certificate.serial,
        i64::MAX,
        T0_MS,
    );
    assert!(
        matches!(refund, Err(LedgerError::InvalidInput(_))),
        "a part-redeemed certificate is not refunded: {refund:?}"
    );
    let rest = ok(
        try_redeem(store, u, "r3", &certificate.serial, Some(3_000), T0_MS),
        "rest",
    );
    assert_eq!(rest.status, ItemStatus::Redeemed);
    assert_eq!(rest.remaining_mills, 0);
    assert_eq!(rest.balance_mills, FUND_MILLS);
    let more = try_redeem(store, u, "r4", &certificate.serial, Some(1), T0_MS);
    assert!(
        matches!(more, Err(LedgerError::AlreadyRedeemed)),
        "{more:?}"
    );
    let ticket = printed_value(store, u, "t1", "ticket", 1_000);
    let part = try_redeem(store, u, "r5", &ticket.serial, Some(500), T0_MS);
    assert!(
        matches!(part, Err(LedgerError::InvalidInput(_))),
        "tickets redeem whole: {part:?}"
    );
    assert_eq!(
        register(store, u, "certificate").map(|r| r.redeemed_mills),
        Some(5_000)
    );
    assert_clean(store);
}

pub fn coupons_move_no_money(store: &dyn Store) {
    let u = add_user(store, 1);
    fund(store, u, "f1", 500);
    let before = snapshot(store, u);
    // A coupon's face value may pass the balance: it takes nothing out of it.
    let coupon = printed_value(store, u, "c1", "coupon", 1_000);
    assert_eq!(coupon.balance_mills, 500);
    let after = snapshot(store, u);
    assert_eq!(after.balance, before.balance);
    assert_eq!(
        after.transfers, before.transfers,
        "no transfer names a coupon"
    );
    let redeemed = ok(
        try_redeem(store, u, "r1", &coupon.serial, None, T0_MS),
        "redeem",
    );
    assert_eq!(redeemed.status, ItemStatus::Redeemed);
    assert_eq!(redeemed.balance_mills, 500);
    assert_eq!(ok(store.audit(), "audit").transfers, before.transfers);
    assert_eq!(
        register(store, u, "coupon"),
        Some(ValueRegister {
            kind: "coupon".into(),
            pieces: 1,
            issued_mills: 1_000,
            returned_mills: 0,
            redeemed_mills: 1_000,
        })
    );
    let voided = ok(
        try_issue_value(store, u, "c2", "coupon", 1_000, None),
        "issue",
    );
    ok(
        try_confirm(store, u, "c2v", &voided.serial, false, T0_MS),
        "void",
    );
    assert_eq!(
        register(store, u, "coupon").map(|r| r.returned_mills),
        Some(1_000)
    );
    assert_clean(store);
}

pub fn only_the_issuer_and_its_redeemers_redeem(store: &dyn Store) {
    let issuer = add_user(store, 1);
    let merchant = add_user(store, 2);
    fund(store, issuer, "f1", FUND_MILLS);
    fund(store, merchant, "f1", 1_000);
    let ticket = printed_value(store, issuer, "t1", "ticket", 2_500);
    let refused = try_redeem(store, merchant, "r1", &ticket.serial, None, T0_MS);
    assert!(
        matches!(refused, Err(LedgerError::NotAllowed)),
        "{refused:?}"
    );
    assert_eq!(
        ok(store.item_status(&ticket.serial), "status"),
        Some(ItemStatus::Printed)
    );
    ok(store.add_redeemer(issuer, merchant, T0_MS), "allow");
    ok(store.add_redeemer(issuer, merchant, T0_MS), "allow again");
    assert_eq!(
        ok(store.redeemers(issuer), "redeemers"),
        vec![(merchant, "User2".to_owned())]
    );
    let self_allowed = store.add_redeemer(issuer, issuer, T0_MS);
    assert!(
        matches!(self_allowed, Err(LedgerError::InvalidInput(_))),
        "{self_allowed:?}"
    );
    let redeemed = ok(
        try_redeem(store, merchant, "r2", &ticket.serial, None, T0_MS),
        "redeem",
    );
    assert_eq!(redeemed.balance_mills, 1_000 + 2_500);
    assert_eq!(
        ok(store.balance(issuer), "issuer").balance_mills,
        FUND_MILLS - 2_500
    );
    // The merchant spends what it took in on postage: its meter counts it like a funding.
    issue(store, merchant, "i1", 3_500);
    assert!(ok(store.remove_redeemer(issuer, merchant, T0_MS), "remove"));
    assert!(!ok(store.remove_redeemer(issuer, merchant, T0_MS), "again"));
    let second = printed_value(store, issuer, "t2", "ticket", 100);
    let refused = try_redeem(store, merchant, "r3", &second.serial, None, T0_MS);
    assert!(
        matches!(refused, Err(LedgerError::NotAllowed)),
        "{refused:?}"
    );
    assert_clean(store);
}

pub fn an_item_past_its_validity_is_refused(store: &dyn Store) {
    let u = add_user(store, 1);
    fund(store, u, "f1", FUND_MILLS);
    let until = T0_MS + 1_000;
    let coupon = ok(
        try_issue_value(store, u, "c1", "coupon", 1_000, Some(until)),
        "issue",
    );
    ok(
        try_confirm(store, u, "c1p", &coupon.serial, true, T0_MS),
        "print",
    );
    let late = try_redeem(store, u, "r1", &coupon.serial, None, until + 1);
    assert!(matches!(late, Err(LedgerError::Expired)), "{late:?}");
    assert_eq!(
        ok(store.item_state(&coupon.serial), "state").map(|s| s.valid_until_ms),
        Some(Some(until))
    );
    let ticket = ok(
        try_issue_value(store, u, "t1", "ticket", 1_000, Some(until)),
        "issue",
    );
    ok(
        try_confirm(store, u, "t1p", &ticket.serial, true, T0_MS),
        "print",
    );
    ok(
        try_redeem(store, u, "r2", &ticket.serial, None, until),
        "redeem on its last moment",
    );
    assert_clean(store);
}

pub fn a_repeated_redemption_answers_the_first_and_credits_once(store: &dyn Store) {
    let u = add_user(store, 1);
    fund(store, u, "f1", FUND_MILLS);
    let certificate = printed_value(store, u, "g1", "certificate", 4_000);
    let first = ok(
        try_redeem(store, u, "r1", &certificate.serial, Some(1_000), T0_MS),
        "first",
    );
    let repeat = ok(
        try_redeem(store, u, "r1", &certificate.serial, Some(1_000), T0_MS + 5),
        "repeat",
    );
    assert_eq!(first, repeat);
    assert_eq!(
        ok(store.balance(u), "balance").balance_mills,
        FUND_MILLS - 3_000
    );
    let reused = try_redeem(store, u, "r1", &certificate.serial, Some(2_000), T0_MS);
    assert!(matches!(reused, Err(LedgerError::IdReused)), "{reused:?}");
    assert_clean(store);
}

/// Twenty redemptions of one coupon at once, by its issuer and by allowed users: exactly one
/// succeeds; every other is `AlreadyRedeemed`.
pub fn concurrent_redemptions_of_one_item_succeed_once(store: &dyn Store) {
    let issuer = add_user(store, 1);
    fund(store, issuer, "f1", FUND_MILLS);
    let mut redeemers = vec![issuer];
    for n in 2..=5 {
        let other = add_user(store, n);
        ok(store.add_redeemer(issuer, other, T0_MS), "allow");
        redeemers.push(other);
    }
    for kind in ["coupon", "ticket"] {
        let item = printed_value(store, issuer, &format!("{kind}1"), kind, 1_000);
        let outcomes: Vec<Result<RedeemOutcome, LedgerError>> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..20)
                .map(|i| {
                    let user = redeemers[i % redeemers.len()];
                    let serial = item.serial.clone();
                    scope.spawn(move || {
                        try_redeem(
                            store,
                            user,
                            &format!("{kind}-race-{i}"),
                            &serial,
                            None,
                            T0_MS,
                        )
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("redeeming thread"))
                .collect()
        });
        let wins = outcomes.iter().filter(|o| o.is_ok()).count();
        let already = outcomes
            .iter()
            .filter(|o| matches!(o, Err(LedgerError::AlreadyRedeemed)))
            .count();
        assert_eq!(
            (wins, already),
            (1, 19),
            "{kind}: {:?}",
            outcomes
                .iter()
                .filter_map(|o| o.as_ref().err())
                .collect::<Vec<_>>()
        );
    }
    assert_clean(store);
}

pub fn bad_value_item_requests_change_nothing(store: &dyn Store) {
    let u = add_user(store, 1);
    let unlicensed = super::add_unlicensed_user(store, 2, T0_MS);
    fund(store, u, "f1", 1_000);
    let before = snapshot(store, u);
    let short = try_issue_value(store, u, "t1", "ticket", 2_000, None);
    assert!(
        matches!(short, Err(LedgerError::InsufficientFunds { .. })),
        "{short:?}"
    );
    let zero = try_issue_value(store, u, "t2", "ticket", 0, None);
    assert!(
        matches!(zero, Err(LedgerError::InvalidInput(_))),
        "{zero:?}"
    );
    let input = IssueInput {
        kind: "bond",
        amount: amount(100),
        session: None,
        valid_until_ms: None,
    };
    let unknown = store
        .issue(&req(u, "b1", "bond"), &input, Box::new(sign_ok), T0_MS)
        .wait();
    assert!(
        matches!(unknown, Err(LedgerError::InvalidInput(_))),
        "{unknown:?}"
    );
    let not_licensed = try_issue_value(store, unlicensed, "c1", "coupon", 100, None);
    assert!(
        matches!(not_licensed, Err(LedgerError::NotLicensed)),
        "{not_licensed:?}"
    );
    assert_eq!(snapshot(store, u), before);
    assert!(register(store, u, "ticket").is_none());
    assert_clean(store);
}

/// A certificate's issuer refunds it while two allowed users redeem parts of it, at once, many
/// times over: either the refund wins (the redemptions find it refunded) or a redemption does (the
/// refund finds it part-redeemed) — never both, so its value is paid out once. Under PostgreSQL
/// the redeemers hold their own meters, not the issuer's: only the item's row lock orders them.
pub fn a_refund_racing_partial_redemptions_pays_once(store: &dyn Store) {
    let issuer = add_user(store, 1);
    fund(store, issuer, "f1", 100_000);
    let redeemers = [add_user(store, 2), add_user(store, 3)];
    for r in redeemers {
        ok(store.add_redeemer(issuer, r, T0_MS), "allow");
    }
    for round in 0..12 {
        let cert = printed_value(store, issuer, &format!("g{round}"), "certificate", 3_000);
        let (refund, redeems) = std::thread::scope(|scope| {
            let serial = cert.serial.as_str();
            let redeeming: Vec<_> = redeemers
                .iter()
                .map(|&r| {
                    scope.spawn(move || {
                        try_redeem(
                            store,
                            r,
                            &format!("r{round}-{r}"),
                            serial,
                            Some(1_000),
                            T0_MS,
                        )
                    })
                })
                .collect();
            let refund = store.refund(
                &req(issuer, &format!("x{round}"), serial),
                serial,
                i64::MAX,
                T0_MS,
            );
            let redeems: Vec<_> = redeeming
                .into_iter()
                .map(|h| h.join().expect("redeeming thread"))
                .collect();
            (refund, redeems)
        });
        let redeemed = redeems.iter().filter(|r| r.is_ok()).count();
        match &refund {
            Ok(out) => {
                assert_eq!(out.status, ItemStatus::Refunded);
                assert_eq!(
                    redeemed, 0,
                    "round {round}: refunded and redeemed: {redeems:?}"
                );
            }
            Err(LedgerError::InvalidInput(_)) => assert!(redeemed > 0, "round {round}"),
            Err(e) => panic!("round {round}: refund failed: {e:?}"),
        }
        for r in &redeems {
            assert!(
                matches!(
                    r,
                    Ok(_)
                        | Err(LedgerError::NotPending {
                            status: ItemStatus::Refunded
                        })
                ),
                "round {round}: {r:?}"
            );
        }
    }
    assert_clean(store);
}
