//! Payments as the bank sees them: funding (bank_clearing → customer:U), the list for
//! reconciliation, ACH returns that lock a user until the debt is paid, and standing
//! authorisations for auto-refill.
//!
//! Operations on a user's money (`fund`, `pay_return`, `set_auto_refill`) first lock the user's
//! meter; `count_auto_refill` is one conditional update, so two servers counting the same refill
//! count it once.

use super::Ctx;
use super::audit_log::{append_audit_entry, user_actor};
use super::meter::{Meter, check_user_invariants, lock_meter, store_meter};
use super::requests::{find_outcome, replay, store_outcome};
use super::standing::closed_at;
use super::transfers::{KIND_FUND, Transfer, balance_of, transfer};
use super::values::{MAX_ID_LEN, check_text, mills, positive_mills, register_add, to_u64};
use crate::sql::{Param, Row, Tx};
use crate::{
    ACCOUNT_BANK_CLEARING, AutoRefill, FundInput, FundOutcome, LedgerError, MAX_TEXT_LEN,
    PaymentRow, RequestKey, UserId, customer_account, reserved_account,
};

use Param::{Int, OptText, Text};

const OP_FUND: &str = "fund";

const OP_PAY_RETURN: &str = "fund";

const OP_AUTO_REFILL: &str = "auto_refill";

/// Columns: id, user, method, amount, time, returned at, paid by, refunded. The sum is cast so
/// that PostgreSQL answers a BIGINT (its `SUM(BIGINT)` is NUMERIC).
pub(crate) const SELECT: &str = "SELECT p.payment_id, p.user_id, p.method, p.amount_mills, p.at_ms,
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

pub(crate) fn fund(
    tx: &mut dyn Tx,
    ctx: Ctx<'_>,
    key: &RequestKey,
    input: &FundInput,
    now_ms: i64,
) -> Result<FundOutcome, LedgerError> {
    let user_id = key.user_id;
    let meter = lock_meter(tx, ctx, user_id)?;
    if let Some(json) = find_outcome(tx, key, OP_FUND)? {
        return replay(&json);
    }
    // Money goes only to a licensed meter (the server licenses it before it charges).
    if meter.device_id.is_none() {
        return Err(LedgerError::NotLicensed);
    }
    let amount = positive_mills(input.amount)?;
    check_text("payment_id", input.payment_id, 1, MAX_TEXT_LEN)?;
    if !matches!(input.method, "card" | "eft") {
        return Err(LedgerError::InvalidInput(
            "payment method must be card or eft".into(),
        ));
    }
    if let Some(token) = input.token {
        check_text("token", token, 1, MAX_TEXT_LEN)?;
    }
    if let Some(last4) = input.last4
        && (last4.len() != 4 || !last4.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(LedgerError::InvalidInput(
            "last4 must be four digits".into(),
        ));
    }
    let known = tx.row(
        "SELECT payment_id FROM payments WHERE payment_id = ?1",
        &[Text(input.payment_id)],
    )?;
    if known.is_some() {
        return Err(LedgerError::DuplicatePayment);
    }
    // A closing account's balance is being paid out as it stands: nothing more comes in.
    if closed_at(tx, user_id)?.is_some() {
        return Err(LedgerError::AccountClosed);
    }
    let new_meter = Meter {
        descending_mills: register_add(meter.descending_mills, amount)?,
        ..meter.clone()
    };
    // A void cannot be refused: the register keeps room for every reservation to come back.
    register_add(
        new_meter.descending_mills,
        balance_of(tx, &reserved_account(user_id))?,
    )?;
    tx.exec(
        "INSERT INTO payments (payment_id, user_id, method, amount_mills, token, last4, at_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        &[
            Text(input.payment_id),
            Int(user_id),
            Text(input.method),
            Int(amount),
            OptText(input.token),
            OptText(input.last4),
            Int(now_ms),
        ],
    )?;
    let transfer_id = transfer(
        tx,
        &Transfer {
            at_ms: now_ms,
            from: ACCOUNT_BANK_CLEARING,
            to: &customer_account(user_id),
            amount_mills: amount,
            kind: KIND_FUND,
            item_serial: None,
            payment_id: Some(input.payment_id),
        },
    )?;
    store_meter(tx, ctx, &meter, &new_meter)?;
    check_user_invariants(tx, ctx, user_id)?;
    let outcome = FundOutcome {
        payment_id: input.payment_id.to_owned(),
        amount_mills: to_u64(amount, "amount")?,
        balance_mills: to_u64(
            balance_of(tx, &customer_account(user_id))?,
            "customer balance",
        )?,
    };
    store_outcome(tx, key, OP_FUND, &outcome, now_ms)?;
    let detail = serde_json::json!({
        "payment_id": input.payment_id,
        "method": input.method,
        "amount_mills": amount,
        "transfer": transfer_id,
    });
    append_audit_entry(
        tx,
        now_ms,
        &user_actor(user_id),
        "fund",
        &detail.to_string(),
    )?;
    Ok(outcome)
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
