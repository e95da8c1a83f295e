//! Account closure: a closure begins (freezing the balance), fixes which payments refund it, and
//! ends when the bank refunds are booked as payouts (customer:U → bank_clearing) that pay out
//! the whole balance. A closure that stopped half-way goes on under the next request.

use super::Ctx;
use super::audit_log::{append_audit_entry, user_actor};
use super::meter::{Meter, check_user_invariants, lock_meter, store_meter};
use super::requests::{find_outcome, replay, store_outcome};
use super::standing::refuse_if_locked;
use super::transfers::{KIND_PAYOUT, Transfer, balance_of, transfer};
use super::values::{MAX_ID_LEN, check_text, mills, to_u64};
use crate::sql::{Param, Tx};
use crate::{
    ACCOUNT_BANK_CLEARING, CloseOutcome, CloseStart, LedgerError, MAX_REQUEST_ID_LEN, Payout,
    RequestKey, UserId, customer_account, reserved_account,
};

use Param::{Int, Text};

const OP_CLOSE: &str = "close";

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
                check_text("request id", key.request_id, 1, MAX_REQUEST_ID_LEN)?;
                tx.exec(
                    "UPDATE closures SET request_id = ?2 WHERE user_id = ?1 AND finished = 0",
                    &[Int(user_id), Text(key.request_id)],
                )?;
            }
        }
        None => {
            check_text("request id", key.request_id, 1, MAX_REQUEST_ID_LEN)?;
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
