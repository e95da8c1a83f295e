//! What users and operators read: a user's balance and registers, meters, item history and
//! status. Reads only.

use super::Ctx;
use super::items::load_item;
use super::meter::{load_meter_raw, require_meter};
use super::transfers::balance_of;
use super::values::{parse_status, to_u64};
use crate::sql::{Param, Tx};
use crate::{
    BalanceView, ItemRecord, ItemState, ItemStatus, ItemSummary, LedgerError, MAX_EXPORT_ITEMS,
    MAX_HISTORY_LIMIT, MeterState, UserId, customer_account, reserved_account,
};

use Param::{Int, Text};

pub(crate) fn balance(
    tx: &mut dyn Tx,
    ctx: Ctx<'_>,
    user_id: UserId,
) -> Result<BalanceView, LedgerError> {
    let meter = require_meter(tx, ctx, user_id)?;
    let pieces = tx
        .row(
            "SELECT COUNT(*) FROM items
             WHERE user_id = ?1 AND kind = 'postage' AND status IN ('issued', 'printed')",
            &[Int(user_id)],
        )?
        .map(|r| r.int(0))
        .transpose()?
        .unwrap_or(0);
    Ok(BalanceView {
        balance_mills: to_u64(
            balance_of(tx, &customer_account(user_id))?,
            "customer balance",
        )?,
        ascending_mills: to_u64(meter.ascending_mills, "ascending register")?,
        descending_mills: to_u64(meter.descending_mills, "descending register")?,
        pieces: to_u64(pieces, "piece count")?,
        reserved_mills: to_u64(
            balance_of(tx, &reserved_account(user_id))?,
            "reserved balance",
        )?,
    })
}

/// The meter as stored, without checking its seal (the caller may want to see a broken one).
pub(crate) fn meter(tx: &mut dyn Tx, user_id: UserId) -> Result<Option<MeterState>, LedgerError> {
    let Some(meter) = load_meter_raw(tx, user_id)? else {
        return Ok(None);
    };
    Ok(Some(MeterState {
        user_id,
        device_id: meter.device_id,
        license_id: meter.license_id,
        ascending_mills: to_u64(meter.ascending_mills, "ascending register")?,
        descending_mills: to_u64(meter.descending_mills, "descending register")?,
        piece: meter.piece,
        seal: meter.seal,
    }))
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
            device_id: r.opt_text(1)?,
            license_id: r.opt_text(2)?,
            ascending_mills: to_u64(r.int(3)?, "ascending register")?,
            descending_mills: to_u64(r.int(4)?, "descending register")?,
            piece: u32::try_from(piece)
                .map_err(|_| LedgerError::Corrupt(format!("piece {piece} out of range")))?,
            seal: r.opt_blob(6)?,
        })
    })
    .collect()
}

pub(crate) fn history(
    tx: &mut dyn Tx,
    user_id: UserId,
    before: Option<&str>,
    limit: u32,
) -> Result<Vec<ItemSummary>, LedgerError> {
    load_meter_raw(tx, user_id)?.ok_or(LedgerError::UnknownUser)?;
    let limit = i64::from(limit.min(MAX_HISTORY_LIMIT));
    let rows = match before {
        None => tx.rows(
            "SELECT serial, kind, amount_mills, status, issued_at_ms FROM items
             WHERE user_id = ?1 ORDER BY issued_at_ms DESC, piece DESC LIMIT ?2",
            &[Int(user_id), Int(limit)],
        )?,
        Some(serial) => {
            let at = tx
                .row(
                    "SELECT issued_at_ms, piece FROM items WHERE serial = ?1 AND user_id = ?2",
                    &[Text(serial), Int(user_id)],
                )?
                .ok_or(LedgerError::UnknownItem)?;
            let (time, piece) = (at.int(0)?, at.int(1)?);
            tx.rows(
                "SELECT serial, kind, amount_mills, status, issued_at_ms FROM items
                 WHERE user_id = ?1
                   AND (issued_at_ms < ?2 OR (issued_at_ms = ?2 AND piece < ?3))
                 ORDER BY issued_at_ms DESC, piece DESC LIMIT ?4",
                &[Int(user_id), Int(time), Int(piece), Int(limit)],
            )?
        }
    };
    rows.iter()
        .map(|r| {
            Ok(ItemSummary {
                serial: r.text(0)?,
                kind: r.text(1)?,
                amount_mills: to_u64(r.int(2)?, "item amount")?,
                status: parse_status(&r.text(3)?)?,
                issued_at_ms: r.int(4)?,
            })
        })
        .collect()
}

pub(crate) fn item_status(
    tx: &mut dyn Tx,
    serial: &str,
) -> Result<Option<ItemStatus>, LedgerError> {
    Ok(load_item(tx, serial)?.map(|item| item.status))
}

pub(crate) fn item_state(tx: &mut dyn Tx, serial: &str) -> Result<Option<ItemState>, LedgerError> {
    let Some(item) = load_item(tx, serial)? else {
        return Ok(None);
    };
    Ok(Some(ItemState {
        remaining_mills: match (item.is_postage(), item.remaining_mills) {
            (true, _) => None,
            (false, Some(left)) => Some(to_u64(left, "remaining")?),
            (false, None) => {
                return Err(LedgerError::Corrupt(format!(
                    "value item {serial} has no remainder"
                )));
            }
        },
        amount_mills: to_u64(item.amount_mills, "item amount")?,
        valid_until_ms: item.valid_until_ms,
        serial: item.serial,
        kind: item.kind,
        status: item.status,
    }))
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

pub(crate) fn items_of_kind(
    tx: &mut dyn Tx,
    user_id: UserId,
    kind: &str,
    from_ms: i64,
    to_ms: i64,
) -> Result<Vec<ItemRecord>, LedgerError> {
    load_meter_raw(tx, user_id)?.ok_or(LedgerError::UnknownUser)?;
    let cap = i64::try_from(MAX_EXPORT_ITEMS).map_err(|_| LedgerError::Overflow)?;
    let rows = tx.rows(
        "SELECT serial, kind, amount_mills, status, issued_at_ms, bytes FROM items
         WHERE user_id = ?1 AND kind = ?2 AND issued_at_ms >= ?3 AND issued_at_ms < ?4
         ORDER BY issued_at_ms, piece LIMIT ?5",
        &[
            Int(user_id),
            Text(kind),
            Int(from_ms),
            Int(to_ms),
            Int(cap + 1),
        ],
    )?;
    if rows.len() > MAX_EXPORT_ITEMS {
        return Err(LedgerError::InvalidInput(format!(
            "more than {MAX_EXPORT_ITEMS} items in the period; ask for a shorter one"
        )));
    }
    rows.iter()
        .map(|r| {
            Ok(ItemRecord {
                serial: r.text(0)?,
                kind: r.text(1)?,
                amount_mills: to_u64(r.int(2)?, "item amount")?,
                status: parse_status(&r.text(3)?)?,
                issued_at_ms: r.int(4)?,
                bytes: r.blob(5)?,
            })
        })
        .collect()
}
