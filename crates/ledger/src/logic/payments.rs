//! Payments as the bank sees them (issue 7), written once against [`Tx`] like the rest of
//! [`crate::logic`]: the list for reconciliation, ACH returns that lock a user until the debt is
//! paid, standing authorisations for auto-refill, account closure with payouts, and the list of
//! meters for the daily usage report.
//!
//! Concurrency as in the parent module: operations on a user's money (`pay_return`,
//! `set_auto_refill`, `close_account`) first lock the user's meter; `count_auto_refill` is one
//! conditional update, so two servers counting the same refill count it once.

use super::{
    KIND_PAYOUT, Meter, Transfer, append_audit_entry, balance_of, check_text,
    check_user_invariants, find_outcome, lock_meter, replay, store_meter, store_outcome, to_u64,
    transfer, user_actor,
};
use crate::logic::Ctx;
use crate::sql::{Param, Row, Tx};
use crate::{
    ACCOUNT_BANK_CLEARING, AutoRefill, CloseOutcome, CloseStart, FundOutcome, LedgerError,
    MeterState, PaymentRow, Payout, RequestKey, UserId, customer_account, reserved_account,
};

use Param::{Int, Text};

const OP_PAY_RETURN: &str = "fund";
const OP_AUTO_REFILL: &str = "auto_refill";
const OP_CLOSE: &str = "close";
const MAX_ID_LEN: usize = 200;

/// Columns: id, user, method, amount, time, returned at, paid by, refunded. The sum is cast so
/// that PostgreSQL answers a BIGINT (its `SUM(BIGINT)` is NUMERIC).
const SELECT: &str = "SELECT p.payment_id, p.user_id, p.method, p.amount_mills, p.at_ms,
        r.returned_at_ms, r.paid_by,
        CAST((SELECT COALESCE(SUM(o.amount_mills), 0) FROM payouts o
              WHERE o.payment_id = p.payment_id) AS BIGINT)
     FROM payments p LEFT JOIN payment_returns r ON r.payment_id = p.payment_id";

fn to_row(r: &Row) -> Result<PaymentRow, LedgerError> {
    Ok(PaymentRow {
        payment_id: r.text(0)?,
        user_id: r.int(1)?,
        method: r.text(2)?,
        amount_mills: to_u64(r.int(3)?, "payment amount")?,
        at_ms: r.int(4)?,
        returned_at_ms: r.opt_int(5)?,
        paid_by: r.opt_text(6)?,
        refunded_mills: to_u64(r.int(7)?, "refunded")?,
    })
}

fn mills(value: u64) -> Result<i64, LedgerError> {
    i64::try_from(value).map_err(|_| LedgerError::Overflow)
}

pub(crate) fn list(tx: &mut dyn Tx) -> Result<Vec<PaymentRow>, LedgerError> {
    tx.rows(&format!("{SELECT} ORDER BY p.at_ms, p.payment_id"), &[])?
        .iter()
        .map(to_row)
        .collect()
}

pub(crate) fn open_returns(
    tx: &mut dyn Tx,
    user_id: UserId,
) -> Result<Vec<PaymentRow>, LedgerError> {
    tx.rows(
        &format!("{SELECT} WHERE r.user_id = ?1 AND r.paid_by IS NULL ORDER BY r.returned_at_ms"),
        &[Int(user_id)],
    )?
    .iter()
    .map(to_row)
    .collect()
}

pub(crate) fn record_return(
    tx: &mut dyn Tx,
    payment_id: &str,
    now_ms: i64,
) -> Result<Option<UserId>, LedgerError> {
    check_text("payment_id", payment_id, 1, MAX_ID_LEN)?;
    let Some(payment) = tx.row(
        "SELECT user_id, method, amount_mills FROM payments WHERE payment_id = ?1",
        &[Text(payment_id)],
    )?
    else {
        return Err(LedgerError::InvalidInput(format!(
            "no payment {payment_id} to return"
        )));
    };
    let (user_id, method, amount) = (payment.int(0)?, payment.text(1)?, payment.int(2)?);
    if method != "eft" {
        return Err(LedgerError::InvalidInput(
            "only EFT debits can be returned".into(),
        ));
    }
    // Two servers told of the same return: the second waits for the first's row and inserts
    // nothing (PostgreSQL), or finds it (SQLite's single writer).
    let inserted = tx.exec(
        "INSERT INTO payment_returns (payment_id, user_id, amount_mills, returned_at_ms)
         VALUES (?1, ?2, ?3, ?4) ON CONFLICT (payment_id) DO NOTHING",
        &[Text(payment_id), Int(user_id), Int(amount), Int(now_ms)],
    )?;
    if inserted == 0 {
        return Ok(None);
    }
    let detail = serde_json::json!({"payment_id": payment_id, "user_id": user_id,
        "amount_mills": amount})
    .to_string();
    append_audit_entry(tx, now_ms, "bank", "payment_returned", &detail)?;
    Ok(Some(user_id))
}

pub(crate) fn pay_return(
    tx: &mut dyn Tx,
    ctx: Ctx<'_>,
    key: &RequestKey<'_>,
    returned_payment_id: &str,
    paid_by: &str,
    now_ms: i64,
) -> Result<FundOutcome, LedgerError> {
    lock_meter(tx, ctx, key.user_id)?;
    if let Some(json) = find_outcome(tx, key, OP_PAY_RETURN)? {
        return replay(&json);
    }
    check_text("paid_by", paid_by, 1, MAX_ID_LEN)?;
    let sql = format!(
        "SELECT user_id, amount_mills FROM payment_returns
         WHERE payment_id = ?1 AND paid_by IS NULL{}",
        tx.for_update()
    );
    let Some(open) = tx.row(&sql, &[Text(returned_payment_id)])? else {
        return Err(LedgerError::InvalidInput(
            "no open return with that payment id".into(),
        ));
    };
    let (user_id, amount) = (open.int(0)?, open.int(1)?);
    if user_id != key.user_id {
        return Err(LedgerError::InvalidInput(
            "that return belongs to another user".into(),
        ));
    }
    let changed = tx.exec(
        "UPDATE payment_returns SET paid_by = ?1, paid_at_ms = ?2
         WHERE payment_id = ?3 AND paid_by IS NULL",
        &[Text(paid_by), Int(now_ms), Text(returned_payment_id)],
    )?;
    if changed != 1 {
        return Err(LedgerError::Invariant(format!(
            "return of {returned_payment_id} changed during the transaction"
        )));
    }
    let outcome = FundOutcome {
        payment_id: paid_by.to_owned(),
        amount_mills: to_u64(amount, "amount")?,
        balance_mills: to_u64(
            balance_of(tx, &customer_account(user_id))?,
            "customer balance",
        )?,
    };
    store_outcome(tx, key, OP_PAY_RETURN, &outcome, now_ms)?;
    let detail = serde_json::json!({"payment_id": returned_payment_id, "paid_by": paid_by,
        "user_id": user_id, "amount_mills": amount})
    .to_string();
    append_audit_entry(tx, now_ms, "bank", "return_paid", &detail)?;
    Ok(outcome)
}

pub(crate) fn meters(tx: &mut dyn Tx) -> Result<Vec<MeterState>, LedgerError> {
    tx.rows(
        "SELECT user_id, device_id, license_id, ascending_mills, descending_mills, piece, seal
         FROM meters ORDER BY user_id",
        &[],
    )?
    .iter()
    .map(|r| {
        let piece = r.int(5)?;
        Ok(MeterState {
            user_id: r.int(0)?,
            device_id: r.text(1)?,
            license_id: r.text(2)?,
            ascending_mills: to_u64(r.int(3)?, "ascending register")?,
            descending_mills: to_u64(r.int(4)?, "descending register")?,
            piece: u32::try_from(piece)
                .map_err(|_| LedgerError::Corrupt(format!("piece {piece} out of range")))?,
            seal: r.opt_blob(6)?,
        })
    })
    .collect()
}

pub(crate) fn item_amount(
    tx: &mut dyn Tx,
    user_id: UserId,
    serial: &str,
) -> Result<Option<u64>, LedgerError> {
    tx.row(
        "SELECT amount_mills FROM items WHERE serial = ?1 AND user_id = ?2",
        &[Text(serial), Int(user_id)],
    )?
    .map(|r| to_u64(r.int(0)?, "item amount"))
    .transpose()
}

pub(crate) fn set_auto_refill(
    tx: &mut dyn Tx,
    ctx: Ctx<'_>,
    key: &RequestKey<'_>,
    auth: Option<&AutoRefill>,
    now_ms: i64,
) -> Result<(), LedgerError> {
    let user_id = key.user_id;
    lock_meter(tx, ctx, user_id)?;
    if find_outcome(tx, key, OP_AUTO_REFILL)?.is_some() {
        return Ok(());
    }
    tx.exec(
        "DELETE FROM auto_refills WHERE user_id = ?1",
        &[Int(user_id)],
    )?;
    let detail = match auth {
        None => serde_json::json!({"user_id": user_id, "active": false}),
        Some(a) => {
            check_text("token", &a.token, 1, MAX_ID_LEN)?;
            if a.last4.len() != 4 || !a.last4.bytes().all(|b| b.is_ascii_digit()) {
                return Err(LedgerError::InvalidInput(
                    "last4 must be four digits".into(),
                ));
            }
            if a.amount_mills == 0 || a.cap_mills < a.amount_mills {
                return Err(LedgerError::InvalidInput(
                    "refill amount must be positive and within the cap".into(),
                ));
            }
            tx.exec(
                "INSERT INTO auto_refills (user_id, token, last4, threshold_mills, amount_mills,
                     cap_mills, used_mills, refills, set_at_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, 0, 0, ?7)",
                &[
                    Int(user_id),
                    Text(&a.token),
                    Text(&a.last4),
                    Int(mills(a.threshold_mills)?),
                    Int(mills(a.amount_mills)?),
                    Int(mills(a.cap_mills)?),
                    Int(now_ms),
                ],
            )?;
            serde_json::json!({"user_id": user_id, "active": true, "last4": a.last4,
                "threshold_mills": a.threshold_mills, "amount_mills": a.amount_mills,
                "cap_mills": a.cap_mills})
        }
    };
    store_outcome(tx, key, OP_AUTO_REFILL, &detail, now_ms)?;
    append_audit_entry(tx, now_ms, "user", "auto_refill_set", &detail.to_string())?;
    Ok(())
}

pub(crate) fn auto_refill(
    tx: &mut dyn Tx,
    user_id: UserId,
) -> Result<Option<AutoRefill>, LedgerError> {
    let Some(r) = tx.row(
        "SELECT token, last4, threshold_mills, amount_mills, cap_mills, used_mills, refills
         FROM auto_refills WHERE user_id = ?1",
        &[Int(user_id)],
    )?
    else {
        return Ok(None);
    };
    Ok(Some(AutoRefill {
        token: r.text(0)?,
        last4: r.text(1)?,
        threshold_mills: to_u64(r.int(2)?, "threshold")?,
        amount_mills: to_u64(r.int(3)?, "refill amount")?,
        cap_mills: to_u64(r.int(4)?, "cap")?,
        used_mills: to_u64(r.int(5)?, "used")?,
        refills: to_u64(r.int(6)?, "refills")?,
    }))
}

pub(crate) fn count_auto_refill(
    tx: &mut dyn Tx,
    user_id: UserId,
    refill: u64,
    amount_mills: u64,
) -> Result<bool, LedgerError> {
    let amount = mills(amount_mills)?;
    let changed = tx.exec(
        "UPDATE auto_refills SET used_mills = used_mills + ?1, refills = refills + 1
         WHERE user_id = ?2 AND refills = ?3 AND used_mills + ?1 <= cap_mills",
        &[Int(amount), Int(user_id), Int(mills(refill)?)],
    )?;
    Ok(changed == 1)
}

/// Refuses an operation on a closed account (`AccountClosed`) or on one locked by a returned
/// ACH debit not yet paid (`AccountLocked`, naming the oldest).
pub(crate) fn refuse_if_locked(tx: &mut dyn Tx, user_id: UserId) -> Result<(), LedgerError> {
    if closed_at(tx, user_id)?.is_some() {
        return Err(LedgerError::AccountClosed);
    }
    // No ORDER BY … LIMIT here: SQLite re-prepares that statement at every run (measured), and
    // open returns are few; the oldest is picked below.
    let open = tx.rows(
        "SELECT returned_at_ms, payment_id, amount_mills FROM payment_returns
         WHERE user_id = ?1 AND paid_by IS NULL",
        &[Int(user_id)],
    )?;
    let mut oldest: Option<(i64, String, i64)> = None;
    for r in &open {
        let row = (r.int(0)?, r.text(1)?, r.int(2)?);
        if oldest
            .as_ref()
            .is_none_or(|o| (row.0, &row.1) < (o.0, &o.1))
        {
            oldest = Some(row);
        }
    }
    match oldest {
        Some((_, payment_id, amount)) => Err(LedgerError::AccountLocked {
            payment_id,
            amount_mills: to_u64(amount, "returned amount")?,
        }),
        None => Ok(()),
    }
}

/// Whether the user's standing auto-refill authorisation asks for a refill at this balance (below
/// its threshold, and the cap still allows one). The refill itself re-checks everything.
pub(crate) fn refill_due(
    tx: &mut dyn Tx,
    user_id: UserId,
    balance_mills: i64,
) -> Result<bool, LedgerError> {
    let Some(r) = tx.row(
        "SELECT threshold_mills, amount_mills, cap_mills, used_mills
         FROM auto_refills WHERE user_id = ?1",
        &[Int(user_id)],
    )?
    else {
        return Ok(false);
    };
    let (threshold, amount, cap, used) = (r.int(0)?, r.int(1)?, r.int(2)?, r.int(3)?);
    Ok(balance_mills < threshold && used.checked_add(amount).is_some_and(|total| total <= cap))
}

pub(crate) fn closed_at(tx: &mut dyn Tx, user_id: UserId) -> Result<Option<i64>, LedgerError> {
    tx.row(
        "SELECT closed_at_ms FROM closures WHERE user_id = ?1",
        &[Int(user_id)],
    )?
    .map(|r| r.int(0))
    .transpose()
}

/// The user's closure row, if any: whether it is finished, and the request that began it.
fn closure(
    tx: &mut dyn Tx,
    user_id: UserId,
) -> Result<Option<(bool, Option<String>)>, LedgerError> {
    tx.row(
        "SELECT finished, request_id FROM closures WHERE user_id = ?1",
        &[Int(user_id)],
    )?
    .map(|r| Ok((r.int(0)? == 1, r.opt_text(1)?)))
    .transpose()
}

pub(crate) fn begin_close(
    tx: &mut dyn Tx,
    ctx: Ctx<'_>,
    key: &RequestKey<'_>,
    now_ms: i64,
) -> Result<CloseStart, LedgerError> {
    let user_id = key.user_id;
    lock_meter(tx, ctx, user_id)?;
    if let Some(json) = find_outcome(tx, key, OP_CLOSE)? {
        return Ok(CloseStart::Closed(replay(&json)?));
    }
    match closure(tx, user_id)? {
        Some((true, _)) => return Err(LedgerError::AccountClosed),
        Some((false, request)) => {
            // A closure that stopped half-way (a crash, the bank not ready): this request goes
            // on with it. Its payouts are keyed by payment, not by request, so nothing is paid
            // out twice.
            if request.as_deref() != Some(key.request_id) {
                check_text("request id", key.request_id, 1, crate::MAX_REQUEST_ID_LEN)?;
                tx.exec(
                    "UPDATE closures SET request_id = ?2 WHERE user_id = ?1 AND finished = 0",
                    &[Int(user_id), Text(key.request_id)],
                )?;
            }
        }
        None => {
            check_text("request id", key.request_id, 1, crate::MAX_REQUEST_ID_LEN)?;
            refuse_if_locked(tx, user_id)?;
            if balance_of(tx, &reserved_account(user_id))? != 0 {
                return Err(LedgerError::InvalidInput(
                    "items are still awaiting print confirmation".into(),
                ));
            }
            tx.exec(
                "INSERT INTO closures (user_id, closed_at_ms, refunded_mills, request_id, finished)
                 VALUES (?1, ?2, 0, ?3, 0)",
                &[Int(user_id), Int(now_ms), Text(key.request_id)],
            )?;
            let detail = serde_json::json!({"user_id": user_id, "request": key.request_id});
            append_audit_entry(
                tx,
                now_ms,
                &user_actor(user_id),
                "close_begin",
                &detail.to_string(),
            )?;
        }
    }
    let balance = balance_of(tx, &customer_account(user_id))?;
    Ok(CloseStart::Closing {
        balance_mills: to_u64(balance, "customer balance")?,
    })
}

/// The payout plan the user's closure in progress fixed: `(payment id, mills)`, if any.
pub(crate) fn close_plan(
    tx: &mut dyn Tx,
    user_id: UserId,
) -> Result<Option<Vec<(String, u64)>>, LedgerError> {
    let Some(r) = tx.row(
        "SELECT plan FROM closures WHERE user_id = ?1 AND finished = 0",
        &[Int(user_id)],
    )?
    else {
        return Ok(None);
    };
    r.opt_text(0)?
        .map(|json| {
            serde_json::from_str(&json)
                .map_err(|e| LedgerError::Corrupt(format!("closure plan unreadable: {e}")))
        })
        .transpose()
}

/// Fixes which payments refund the frozen balance of the user's closure in progress, unless a
/// plan is fixed already: then that one is answered (the first plan stands, whatever the bank
/// says of the payments later). The plan must pay out exactly the frozen balance, each payment
/// once.
pub(crate) fn fix_close_plan(
    tx: &mut dyn Tx,
    ctx: Ctx<'_>,
    user_id: UserId,
    plan: &[(String, u64)],
    now_ms: i64,
) -> Result<Vec<(String, u64)>, LedgerError> {
    lock_meter(tx, ctx, user_id)?;
    if !matches!(closure(tx, user_id)?, Some((false, _))) {
        return Err(LedgerError::InvalidInput(
            "no closure of this account is in progress".into(),
        ));
    }
    if let Some(fixed) = close_plan(tx, user_id)? {
        return Ok(fixed);
    }
    let balance = balance_of(tx, &customer_account(user_id))?;
    let mut total: i64 = 0;
    let mut seen = std::collections::HashSet::new();
    for (payment_id, amount) in plan {
        check_text("payment_id", payment_id, 1, MAX_ID_LEN)?;
        if *amount == 0 || !seen.insert(payment_id.as_str()) {
            return Err(LedgerError::InvalidInput(format!(
                "payment {payment_id} is planned twice or for nothing"
            )));
        }
        total = total
            .checked_add(mills(*amount)?)
            .ok_or(LedgerError::Overflow)?;
    }
    if total != balance {
        return Err(LedgerError::InvalidInput(format!(
            "the plan pays out {total} mills but the balance is {balance}"
        )));
    }
    let json = serde_json::to_string(plan)
        .map_err(|e| LedgerError::Invariant(format!("closure plan not serialisable: {e}")))?;
    let changed = tx.exec(
        "UPDATE closures SET plan = ?2 WHERE user_id = ?1 AND finished = 0 AND plan IS NULL",
        &[Int(user_id), Text(&json)],
    )?;
    if changed != 1 {
        return Err(LedgerError::Invariant(format!(
            "the closure of user {user_id} changed during the transaction"
        )));
    }
    let detail = serde_json::json!({"user_id": user_id, "plan": plan}).to_string();
    append_audit_entry(tx, now_ms, &user_actor(user_id), "close_plan", &detail)?;
    Ok(plan.to_vec())
}

pub(crate) fn close_account(
    tx: &mut dyn Tx,
    ctx: Ctx<'_>,
    key: &RequestKey<'_>,
    payouts: &[Payout],
    now_ms: i64,
) -> Result<CloseOutcome, LedgerError> {
    let user_id = key.user_id;
    let meter = lock_meter(tx, ctx, user_id)?;
    if let Some(json) = find_outcome(tx, key, OP_CLOSE)? {
        return replay(&json);
    }
    // Either this request began the closure (`begin_close`), or the account closes in one step.
    let begun = match closure(tx, user_id)? {
        None => false,
        Some((false, Some(request))) if request == key.request_id => true,
        Some((false, _)) => {
            return Err(LedgerError::InvalidInput(
                "the account is being closed by another request".into(),
            ));
        }
        Some((true, _)) => {
            return Err(LedgerError::InvalidInput(
                "the account is already closed".into(),
            ));
        }
    };
    if balance_of(tx, &reserved_account(user_id))? != 0 {
        return Err(LedgerError::InvalidInput(
            "items are still awaiting print confirmation".into(),
        ));
    }
    let customer = customer_account(user_id);
    let balance = balance_of(tx, &customer)?;
    let mut total: i64 = 0;
    for p in payouts {
        total = total
            .checked_add(mills(p.amount_mills)?)
            .ok_or(LedgerError::Overflow)?;
    }
    if total != balance {
        return Err(LedgerError::InvalidInput(format!(
            "payouts total {total} mills but the balance is {balance}"
        )));
    }
    // A closure that fixed its plan pays out exactly that plan (see `fix_close_plan`).
    if begun && let Some(plan) = close_plan(tx, user_id)? {
        let mut paid: Vec<(&str, u64)> = payouts
            .iter()
            .map(|p| (p.payment_id.as_str(), p.amount_mills))
            .collect();
        let mut planned: Vec<(&str, u64)> = plan.iter().map(|(id, m)| (id.as_str(), *m)).collect();
        paid.sort_unstable();
        planned.sort_unstable();
        if paid != planned {
            return Err(LedgerError::InvalidInput(
                "the payouts are not the closure's plan".into(),
            ));
        }
    }
    let mut current = meter;
    for p in payouts {
        check_text("refund_id", &p.refund_id, 1, MAX_ID_LEN)?;
        let owner = tx
            .row(
                "SELECT user_id FROM payments WHERE payment_id = ?1",
                &[Text(&p.payment_id)],
            )?
            .map(|r| r.int(0))
            .transpose()?;
        if owner != Some(user_id) {
            return Err(LedgerError::InvalidInput(format!(
                "payment {} is not this user's",
                p.payment_id
            )));
        }
        let amount = mills(p.amount_mills)?;
        let transfer_id = transfer(
            tx,
            &Transfer {
                at_ms: now_ms,
                from: &customer,
                to: ACCOUNT_BANK_CLEARING,
                amount_mills: amount,
                kind: KIND_PAYOUT,
                item_serial: None,
                payment_id: Some(&p.payment_id),
            },
        )?;
        let next = Meter {
            descending_mills: current
                .descending_mills
                .checked_sub(amount)
                .filter(|d| *d >= 0)
                .ok_or(LedgerError::Overflow)?,
            ..current.clone()
        };
        store_meter(tx, ctx, &current, &next)?;
        current = next;
        tx.exec(
            "INSERT INTO payouts (refund_id, payment_id, user_id, amount_mills, transfer_id, at_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            &[
                Text(&p.refund_id),
                Text(&p.payment_id),
                Int(user_id),
                Int(amount),
                Int(transfer_id),
                Int(now_ms),
            ],
        )?;
        let detail = serde_json::json!({"transfer": transfer_id, "payment_id": p.payment_id,
            "refund_id": p.refund_id, "user_id": user_id, "amount_mills": amount});
        append_audit_entry(
            tx,
            now_ms,
            &user_actor(user_id),
            "payout",
            &detail.to_string(),
        )?;
    }
    let closed = if begun {
        tx.exec(
            "UPDATE closures SET closed_at_ms = ?2, refunded_mills = ?3, finished = 1
             WHERE user_id = ?1 AND finished = 0",
            &[Int(user_id), Int(now_ms), Int(total)],
        )?
    } else {
        tx.exec(
            "INSERT INTO closures (user_id, closed_at_ms, refunded_mills, request_id, finished)
             VALUES (?1, ?2, ?3, ?4, 1)",
            &[Int(user_id), Int(now_ms), Int(total), Text(key.request_id)],
        )?
    };
    if closed != 1 {
        return Err(LedgerError::Invariant(format!(
            "the closure of user {user_id} changed during the transaction"
        )));
    }
    check_user_invariants(tx, ctx, user_id)?;
    let outcome = CloseOutcome {
        refunded_mills: to_u64(total, "refunded")?,
        payouts: payouts.to_vec(),
        balance_mills: to_u64(balance_of(tx, &customer)?, "customer balance")?,
    };
    if outcome.balance_mills != 0 {
        return Err(LedgerError::Invariant("balance left after closure".into()));
    }
    store_outcome(tx, key, OP_CLOSE, &outcome, now_ms)?;
    let detail = serde_json::json!({"user_id": user_id, "refunded_mills": total});
    append_audit_entry(
        tx,
        now_ms,
        &user_actor(user_id),
        "close",
        &detail.to_string(),
    )?;
    Ok(outcome)
}
