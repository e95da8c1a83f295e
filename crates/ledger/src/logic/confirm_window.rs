//! The confirmation window: an issued item must be confirmed as printed before its deadline, or
//! it is voided as expired and its funds go back to the user.

use super::Ctx;
use super::items::load_item;
use super::meter::lock_meter;
use super::postage::{is_expired, void_expired_item};
use crate::sql::{Param, Tx};
use crate::{LedgerError, MAX_VOID_BATCH, UserId};

use Param::Int;

pub(crate) fn start_confirm_window(
    tx: &mut dyn Tx,
    user_id: Option<UserId>,
    deadline_ms: i64,
) -> Result<u64, LedgerError> {
    match user_id {
        Some(user_id) => tx.exec(
            "UPDATE items SET confirm_by_ms = ?1
             WHERE status = 'issued' AND confirm_by_ms IS NULL AND user_id = ?2",
            &[Int(deadline_ms), Int(user_id)],
        ),
        None => tx.exec(
            "UPDATE items SET confirm_by_ms = ?1
             WHERE status = 'issued' AND confirm_by_ms IS NULL",
            &[Int(deadline_ms)],
        ),
    }
}

/// Voids expired items, locking the users' meters (in user order) before re-reading the items, so
/// that a confirm racing on another server either finishes first (the item is skipped) or waits.
pub(crate) fn void_expired(
    tx: &mut dyn Tx,
    ctx: Ctx<'_>,
    now_ms: i64,
) -> Result<Vec<String>, LedgerError> {
    let limit = i64::try_from(MAX_VOID_BATCH).map_err(|_| LedgerError::Overflow)?;
    let candidates = tx.rows(
        "SELECT serial, user_id FROM items
         WHERE status = 'issued' AND confirm_by_ms IS NOT NULL AND confirm_by_ms <= ?1
         ORDER BY user_id, serial LIMIT ?2",
        &[Int(now_ms), Int(limit)],
    )?;
    // Lock every meter first, in user order, before the first audit entry takes the chain's
    // lock: an issue holding one of these meters waits for that lock at its end, so taking a
    // meter after it would deadlock.
    // A frozen meter's items stay as they are (the audit reports the meter); the others go on.
    let mut locked_user = None;
    let mut frozen = std::collections::HashSet::new();
    for row in &candidates {
        let user_id = row.int(1)?;
        if locked_user != Some(user_id) {
            match lock_meter(tx, ctx, user_id) {
                Ok(_) => {}
                Err(LedgerError::MeterFrozen { .. }) => {
                    frozen.insert(user_id);
                }
                Err(e) => return Err(e),
            }
            locked_user = Some(user_id);
        }
    }
    let mut voided = Vec::with_capacity(candidates.len());
    for row in candidates {
        let serial = row.text(0)?;
        if frozen.contains(&row.int(1)?) {
            continue;
        }
        let Some(item) = load_item(tx, &serial)? else {
            continue;
        };
        if !is_expired(&item, now_ms) {
            continue;
        }
        void_expired_item(tx, ctx, &item, now_ms)?;
        voided.push(serial);
    }
    Ok(voided)
}
