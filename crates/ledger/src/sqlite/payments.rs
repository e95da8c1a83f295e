//! Payments as the bank sees them: the list for reconciliation, ACH returns that lock a user until
//! the debt is paid (issue 7), and the list of meters for the daily usage report.

use rusqlite::{Connection, OptionalExtension, params};

use super::{
    KIND_PAYOUT, Meter, Transfer, append_audit_entry, balance_of, check_text, find_outcome, replay,
    require_meter, reserved_account_balance, store_meter, store_outcome, to_u64, transfer,
};
use crate::{
    ACCOUNT_BANK_CLEARING, AutoRefill, CloseOutcome, FundOutcome, LedgerError, MeterState,
    PaymentRow, Payout, RequestKey, UserId, customer_account,
};

/// A payments row as read: id, user, method, amount, time, returned at, paid by.
type RawPayment = (
    String,
    i64,
    String,
    i64,
    i64,
    Option<i64>,
    Option<String>,
    i64,
);

const OP_PAY_RETURN: &str = "fund";
const OP_AUTO_REFILL: &str = "auto_refill";
const MAX_ID_LEN: usize = 200;

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RawPayment> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(6)?,
        r.get(7)?,
    ))
}

fn to_row(raw: RawPayment) -> Result<PaymentRow, LedgerError> {
    let (payment_id, user_id, method, amount, at_ms, returned_at_ms, paid_by, refunded) = raw;
    Ok(PaymentRow {
        payment_id,
        user_id,
        method,
        amount_mills: to_u64(amount, "payment amount")?,
        at_ms,
        returned_at_ms,
        paid_by,
        refunded_mills: to_u64(refunded, "refunded")?,
    })
}

const SELECT: &str = "SELECT p.payment_id, p.user_id, p.method, p.amount_mills, p.at_ms,
        r.returned_at_ms, r.paid_by,
        (SELECT COALESCE(SUM(o.amount_mills), 0) FROM payouts o WHERE o.payment_id = p.payment_id)
     FROM payments p LEFT JOIN payment_returns r ON r.payment_id = p.payment_id";

pub(super) fn list(conn: &Connection) -> Result<Vec<PaymentRow>, LedgerError> {
    let mut stmt = conn.prepare(&format!("{SELECT} ORDER BY p.at_ms, p.payment_id"))?;
    let raws = stmt.query_map([], row)?.collect::<Result<Vec<_>, _>>()?;
    raws.into_iter().map(to_row).collect()
}

pub(super) fn open_returns(
    conn: &Connection,
    user_id: UserId,
) -> Result<Vec<PaymentRow>, LedgerError> {
    let mut stmt = conn.prepare(&format!(
        "{SELECT} WHERE r.user_id = ?1 AND r.paid_by IS NULL ORDER BY r.returned_at_ms"
    ))?;
    let raws = stmt
        .query_map([user_id], row)?
        .collect::<Result<Vec<_>, _>>()?;
    raws.into_iter().map(to_row).collect()
}

pub(super) fn record_return(
    conn: &Connection,
    payment_id: &str,
    now_ms: i64,
) -> Result<Option<UserId>, LedgerError> {
    check_text("payment_id", payment_id, 1, MAX_ID_LEN)?;
    let payment: Option<(i64, String, i64)> = conn
        .query_row(
            "SELECT user_id, method, amount_mills FROM payments WHERE payment_id = ?1",
            [payment_id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()?;
    let Some((user_id, method, amount)) = payment else {
        return Err(LedgerError::InvalidInput(format!(
            "no payment {payment_id} to return"
        )));
    };
    if method != "eft" {
        return Err(LedgerError::InvalidInput(
            "only EFT debits can be returned".into(),
        ));
    }
    let known: Option<i64> = conn
        .query_row(
            "SELECT returned_at_ms FROM payment_returns WHERE payment_id = ?1",
            [payment_id],
            |r| r.get(0),
        )
        .optional()?;
    if known.is_some() {
        return Ok(None);
    }
    conn.execute(
        "INSERT INTO payment_returns (payment_id, user_id, amount_mills, returned_at_ms)
         VALUES (?1, ?2, ?3, ?4)",
        params![payment_id, user_id, amount, now_ms],
    )?;
    let detail = serde_json::json!({"payment_id": payment_id, "user_id": user_id,
        "amount_mills": amount})
    .to_string();
    append_audit_entry(conn, now_ms, "bank", "payment_returned", &detail)?;
    Ok(Some(user_id))
}

pub(super) fn pay_return(
    conn: &Connection,
    key: &RequestKey<'_>,
    returned_payment_id: &str,
    paid_by: &str,
    now_ms: i64,
) -> Result<FundOutcome, LedgerError> {
    if let Some(json) = find_outcome(conn, key, OP_PAY_RETURN)? {
        return replay(&json);
    }
    check_text("paid_by", paid_by, 1, MAX_ID_LEN)?;
    let open: Option<(i64, i64)> = conn
        .query_row(
            "SELECT user_id, amount_mills FROM payment_returns
             WHERE payment_id = ?1 AND paid_by IS NULL",
            [returned_payment_id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    let Some((user_id, amount)) = open else {
        return Err(LedgerError::InvalidInput(
            "no open return with that payment id".into(),
        ));
    };
    if user_id != key.user_id {
        return Err(LedgerError::InvalidInput(
            "that return belongs to another user".into(),
        ));
    }
    conn.execute(
        "UPDATE payment_returns SET paid_by = ?1, paid_at_ms = ?2 WHERE payment_id = ?3",
        params![paid_by, now_ms, returned_payment_id],
    )?;
    let outcome = FundOutcome {
        payment_id: paid_by.to_owned(),
        amount_mills: to_u64(amount, "amount")?,
        balance_mills: to_u64(
            balance_of(conn, &customer_account(user_id))?,
            "customer balance",
        )?,
    };
    store_outcome(conn, key, OP_PAY_RETURN, &outcome, now_ms)?;
    let detail = serde_json::json!({"payment_id": returned_payment_id, "paid_by": paid_by,
        "user_id": user_id, "amount_mills": amount})
    .to_string();
    append_audit_entry(conn, now_ms, "bank", "return_paid", &detail)?;
    Ok(outcome)
}

pub(super) fn meters(conn: &Connection) -> Result<Vec<MeterState>, LedgerError> {
    let mut stmt = conn.prepare(
        "SELECT user_id, device_id, license_id, ascending_mills, descending_mills, piece, seal
         FROM meters ORDER BY user_id",
    )?;
    let raws = stmt
        .query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, i64>(3)?,
                r.get::<_, i64>(4)?,
                r.get::<_, i64>(5)?,
                r.get::<_, Option<Vec<u8>>>(6)?,
            ))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    raws.into_iter()
        .map(|(user_id, device_id, license_id, asc, desc, piece, seal)| {
            Ok(MeterState {
                user_id,
                device_id,
                license_id,
                ascending_mills: to_u64(asc, "ascending register")?,
                descending_mills: to_u64(desc, "descending register")?,
                piece: u32::try_from(piece)
                    .map_err(|_| LedgerError::Corrupt(format!("piece {piece} out of range")))?,
                seal,
            })
        })
        .collect()
}

pub(super) fn item_amount(
    conn: &Connection,
    user_id: UserId,
    serial: &str,
) -> Result<Option<u64>, LedgerError> {
    let amount: Option<i64> = conn
        .query_row(
            "SELECT amount_mills FROM items WHERE serial = ?1 AND user_id = ?2",
            params![serial, user_id],
            |r| r.get(0),
        )
        .optional()?;
    amount.map(|a| to_u64(a, "item amount")).transpose()
}

fn mills(value: u64) -> Result<i64, LedgerError> {
    i64::try_from(value).map_err(|_| LedgerError::Overflow)
}

pub(super) fn set_auto_refill(
    conn: &Connection,
    key: &RequestKey<'_>,
    auth: Option<&AutoRefill>,
    now_ms: i64,
) -> Result<(), LedgerError> {
    if find_outcome(conn, key, OP_AUTO_REFILL)?.is_some() {
        return Ok(());
    }
    let user_id = key.user_id;
    super::require_meter(conn, user_id)?;
    conn.execute("DELETE FROM auto_refills WHERE user_id = ?1", [user_id])?;
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
            conn.execute(
                "INSERT INTO auto_refills (user_id, token, last4, threshold_mills, amount_mills,
                     cap_mills, used_mills, refills, set_at_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, 0, 0, ?7)",
                params![
                    user_id,
                    a.token,
                    a.last4,
                    mills(a.threshold_mills)?,
                    mills(a.amount_mills)?,
                    mills(a.cap_mills)?,
                    now_ms
                ],
            )?;
            serde_json::json!({"user_id": user_id, "active": true, "last4": a.last4,
                "threshold_mills": a.threshold_mills, "amount_mills": a.amount_mills,
                "cap_mills": a.cap_mills})
        }
    };
    store_outcome(conn, key, OP_AUTO_REFILL, &detail, now_ms)?;
    append_audit_entry(conn, now_ms, "user", "auto_refill_set", &detail.to_string())?;
    Ok(())
}

pub(super) fn auto_refill(
    conn: &Connection,
    user_id: UserId,
) -> Result<Option<AutoRefill>, LedgerError> {
    let row: Option<(String, String, i64, i64, i64, i64, i64)> = conn
        .query_row(
            "SELECT token, last4, threshold_mills, amount_mills, cap_mills, used_mills, refills
             FROM auto_refills WHERE user_id = ?1",
            [user_id],
            |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                    r.get(6)?,
                ))
            },
        )
        .optional()?;
    row.map(|(token, last4, threshold, amount, cap, used, refills)| {
        Ok(AutoRefill {
            token,
            last4,
            threshold_mills: to_u64(threshold, "threshold")?,
            amount_mills: to_u64(amount, "refill amount")?,
            cap_mills: to_u64(cap, "cap")?,
            used_mills: to_u64(used, "used")?,
            refills: to_u64(refills, "refills")?,
        })
    })
    .transpose()
}

pub(super) fn count_auto_refill(
    conn: &Connection,
    user_id: UserId,
    refill: u64,
    amount_mills: u64,
) -> Result<bool, LedgerError> {
    let changed = conn.execute(
        "UPDATE auto_refills SET used_mills = used_mills + ?1, refills = refills + 1
         WHERE user_id = ?2 AND refills = ?3 AND used_mills + ?1 <= cap_mills",
        params![mills(amount_mills)?, user_id, mills(refill)?],
    )?;
    Ok(changed == 1)
}

const OP_CLOSE: &str = "close";

pub(super) fn closed_at(conn: &Connection, user_id: UserId) -> Result<Option<i64>, LedgerError> {
    Ok(conn
        .query_row(
            "SELECT closed_at_ms FROM closures WHERE user_id = ?1",
            [user_id],
            |r| r.get(0),
        )
        .optional()?)
}

pub(super) fn close_account(
    conn: &Connection,
    key: &RequestKey<'_>,
    payouts: &[Payout],
    now_ms: i64,
) -> Result<CloseOutcome, LedgerError> {
    if let Some(json) = find_outcome(conn, key, OP_CLOSE)? {
        return replay(&json);
    }
    let user_id = key.user_id;
    if closed_at(conn, user_id)?.is_some() {
        return Err(LedgerError::InvalidInput(
            "the account is already closed".into(),
        ));
    }
    let meter = require_meter(conn, user_id)?;
    if reserved_account_balance(conn, user_id)? != 0 {
        return Err(LedgerError::InvalidInput(
            "items are still awaiting print confirmation".into(),
        ));
    }
    let customer = customer_account(user_id);
    let balance = balance_of(conn, &customer)?;
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
    let mut current = meter;
    for p in payouts {
        check_text("refund_id", &p.refund_id, 1, MAX_ID_LEN)?;
        let owner: Option<i64> = conn
            .query_row(
                "SELECT user_id FROM payments WHERE payment_id = ?1",
                [&p.payment_id],
                |r| r.get(0),
            )
            .optional()?;
        if owner != Some(user_id) {
            return Err(LedgerError::InvalidInput(format!(
                "payment {} is not this user's",
                p.payment_id
            )));
        }
        let amount = mills(p.amount_mills)?;
        let transfer_id = transfer(
            conn,
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
        store_meter(conn, &current, &next)?;
        current = next;
        conn.execute(
            "INSERT INTO payouts (refund_id, payment_id, user_id, amount_mills, transfer_id, at_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                p.refund_id,
                p.payment_id,
                user_id,
                amount,
                transfer_id,
                now_ms
            ],
        )?;
        let detail = serde_json::json!({"transfer": transfer_id, "payment_id": p.payment_id,
            "refund_id": p.refund_id, "user_id": user_id, "amount_mills": amount});
        append_audit_entry(
            conn,
            now_ms,
            &format!("user:{user_id}"),
            "payout",
            &detail.to_string(),
        )?;
    }
    conn.execute(
        "INSERT INTO closures (user_id, closed_at_ms, refunded_mills) VALUES (?1, ?2, ?3)",
        params![user_id, now_ms, total],
    )?;
    let outcome = CloseOutcome {
        refunded_mills: to_u64(total, "refunded")?,
        payouts: payouts.to_vec(),
        balance_mills: to_u64(balance_of(conn, &customer)?, "customer balance")?,
    };
    if outcome.balance_mills != 0 {
        return Err(LedgerError::Invariant("balance left after closure".into()));
    }
    store_outcome(conn, key, OP_CLOSE, &outcome, now_ms)?;
    let detail = serde_json::json!({"user_id": user_id, "refunded_mills": total});
    append_audit_entry(
        conn,
        now_ms,
        &format!("user:{user_id}"),
        "close",
        &detail.to_string(),
    )?;
    Ok(outcome)
}
