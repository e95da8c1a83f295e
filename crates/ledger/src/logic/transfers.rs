//! Double-entry transfers: every movement of money is one row of `transfers` and two balance
//! updates that sum to zero, asserted on both sides before the operation goes on.

use crate::LedgerError;
use crate::sql::{Param, Tx};

use Param::{Int, OptText, Text};

// The transfer kinds stored in `transfers.kind`.
pub(crate) const KIND_FUND: &str = "fund";

pub(crate) const KIND_RESERVE: &str = "reserve";

pub(crate) const KIND_POST: &str = "post";

pub(crate) const KIND_VOID: &str = "void";

pub(crate) const KIND_REFUND: &str = "refund";

pub(crate) const KIND_PAYOUT: &str = "payout";

pub(crate) const KIND_REDEEM: &str = "redeem";

pub(crate) fn balance_of(tx: &mut dyn Tx, account: &str) -> Result<i64, LedgerError> {
    tx.row(
        "SELECT balance FROM accounts WHERE id = ?1",
        &[Text(account)],
    )?
    .map(|r| r.int(0))
    .transpose()?
    .ok_or_else(|| LedgerError::Invariant(format!("account {account} is missing")))
}

pub(crate) struct Transfer<'a> {
    pub(crate) at_ms: i64,
    pub(crate) from: &'a str,
    pub(crate) to: &'a str,
    pub(crate) amount_mills: i64,
    pub(crate) kind: &'static str,
    pub(crate) item_serial: Option<&'a str>,
    pub(crate) payment_id: Option<&'a str>,
}

/// Moves `amount_mills` from one account to another and records the transfer; asserts on both
/// sides that the two balances changed by exactly the amount and their sum did not change.
/// Locks both account rows first, in id order, so that concurrent transfers through a shared
/// account (`bank_clearing`, `postage_sold`) queue instead of deadlocking. Returns the transfer id.
pub(crate) fn transfer(tx: &mut dyn Tx, t: &Transfer<'_>) -> Result<i64, LedgerError> {
    transfer_with_balances(tx, t).map(|moved| moved.id)
}

/// A recorded transfer and the two balances after it.
pub(crate) struct Moved {
    pub(crate) id: i64,
    pub(crate) from_after: i64,
    pub(crate) to_after: i64,
}

/// [`transfer`], returning the balances it wrote. Each update is conditional on the balance read
/// under the lock, so a balance written is exactly the one returned (no read-back needed).
pub(crate) fn transfer_with_balances(
    tx: &mut dyn Tx,
    t: &Transfer<'_>,
) -> Result<Moved, LedgerError> {
    if t.amount_mills <= 0 || t.from == t.to {
        return Err(LedgerError::Invariant(format!(
            "malformed {} transfer of {} from {} to {}",
            t.kind, t.amount_mills, t.from, t.to
        )));
    }
    // Two point reads in id order (the lock order on PostgreSQL). Not one `id IN (…) ORDER BY
    // id`: SQLite builds a temporary b-tree for that at every run (measured: the most expensive
    // statement of a purchase).
    let sql = format!(
        "SELECT balance FROM accounts WHERE id = ?1{}",
        tx.for_update()
    );
    let mut read = |account: &str| -> Result<i64, LedgerError> {
        tx.row(&sql, &[Text(account)])?
            .map(|r| r.int(0))
            .transpose()?
            .ok_or_else(|| LedgerError::Invariant(format!("account {account} is missing")))
    };
    let (from_before, to_before) = if t.from < t.to {
        let from = read(t.from)?;
        (from, read(t.to)?)
    } else {
        let to = read(t.to)?;
        (read(t.from)?, to)
    };
    let from_after = from_before
        .checked_sub(t.amount_mills)
        .ok_or(LedgerError::Overflow)?;
    let to_after = to_before
        .checked_add(t.amount_mills)
        .ok_or(LedgerError::Overflow)?;
    for (account, before, after) in [
        (t.from, from_before, from_after),
        (t.to, to_before, to_after),
    ] {
        let changed = tx.exec(
            "UPDATE accounts SET balance = ?1 WHERE id = ?2 AND balance = ?3",
            &[Int(after), Text(account), Int(before)],
        )?;
        if changed != 1 {
            return Err(LedgerError::Invariant(format!(
                "account {account} changed during the transaction"
            )));
        }
    }
    let id = tx.insert_id(
        "INSERT INTO transfers (at_ms, from_account, to_account, amount_mills, kind,
                 item_serial, payment_id)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        &[
            Int(t.at_ms),
            Text(t.from),
            Text(t.to),
            Int(t.amount_mills),
            Text(t.kind),
            OptText(t.item_serial),
            OptText(t.payment_id),
        ],
    )?;
    Ok(Moved {
        id,
        from_after,
        to_after,
    })
}
