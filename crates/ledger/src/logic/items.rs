//! Issued items as stored: reading one (optionally locked) and moving it from one status to the
//! next, asserting that nobody moved it meanwhile.

use super::values::parse_status;
use crate::sql::{Param, Tx};
use crate::{ItemStatus, LedgerError, MAX_SERIAL_LEN, UserId};

use Param::{Int, Text};

#[derive(Clone, Debug)]
pub(crate) struct Item {
    pub(crate) serial: String,
    pub(crate) user_id: UserId,
    pub(crate) kind: String,
    pub(crate) amount_mills: i64,
    pub(crate) status: ItemStatus,
    pub(crate) issued_at_ms: i64,
    pub(crate) confirm_by_ms: Option<i64>,
    /// Value items: not redeemable after this.
    pub(crate) valid_until_ms: Option<i64>,
    /// Value items: what is left to redeem.
    pub(crate) remaining_mills: Option<i64>,
}

impl Item {
    /// Whether the item is postage (every other kind is a value item).
    pub(crate) fn is_postage(&self) -> bool {
        self.kind == "postage"
    }
}

pub(crate) fn load_item(tx: &mut dyn Tx, serial: &str) -> Result<Option<Item>, LedgerError> {
    load_item_with(tx, serial, "")
}

pub(crate) fn load_item_locked(tx: &mut dyn Tx, serial: &str) -> Result<Option<Item>, LedgerError> {
    let lock = tx.for_update();
    load_item_with(tx, serial, lock)
}

fn load_item_with(
    tx: &mut dyn Tx,
    serial: &str,
    suffix: &str,
) -> Result<Option<Item>, LedgerError> {
    if serial.is_empty() || serial.len() > MAX_SERIAL_LEN {
        return Ok(None);
    }
    let sql = format!(
        "SELECT user_id, kind, amount_mills, status, issued_at_ms, confirm_by_ms,
                valid_until_ms, remaining_mills
         FROM items WHERE serial = ?1{suffix}"
    );
    let Some(r) = tx.row(&sql, &[Text(serial)])? else {
        return Ok(None);
    };
    Ok(Some(Item {
        serial: serial.to_owned(),
        user_id: r.int(0)?,
        kind: r.text(1)?,
        amount_mills: r.int(2)?,
        status: parse_status(&r.text(3)?)?,
        issued_at_ms: r.int(4)?,
        confirm_by_ms: r.opt_int(5)?,
        valid_until_ms: r.opt_int(6)?,
        remaining_mills: r.opt_int(7)?,
    }))
}

/// Moves an item from its current status to `to`, asserting nobody moved it meanwhile.
pub(crate) fn set_status(
    tx: &mut dyn Tx,
    item: &Item,
    to: ItemStatus,
    now_ms: i64,
) -> Result<(), LedgerError> {
    let changed = tx.exec(
        "UPDATE items SET status = ?1, settled_at_ms = ?2 WHERE serial = ?3 AND status = ?4",
        &[
            Text(to.as_str()),
            Int(now_ms),
            Text(&item.serial),
            Text(item.status.as_str()),
        ],
    )?;
    if changed != 1 {
        return Err(LedgerError::Invariant(format!(
            "item {} changed during the transaction",
            item.serial
        )));
    }
    Ok(())
}
