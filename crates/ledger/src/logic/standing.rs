//! Whether an account may move money at all: a closed (or closing) account may not, nor one
//! locked by a returned ACH debit that is not paid yet. Postage, payments and closure all ask.

use super::values::to_u64;
use crate::sql::{Param, Tx};
use crate::{LedgerError, UserId};

use Param::Int;

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

pub(crate) fn closed_at(tx: &mut dyn Tx, user_id: UserId) -> Result<Option<i64>, LedgerError> {
    tx.row(
        "SELECT closed_at_ms FROM closures WHERE user_id = ?1",
        &[Int(user_id)],
    )?
    .map(|r| r.int(0))
    .transpose()
}
