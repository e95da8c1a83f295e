//! Issued items as stored: reading one (optionally locked) and moving it from one status to the
//! next, asserting that nobody moved it meanwhile.

use serde::Serialize;

use super::requests::{replay, store_outcome};
use super::values::{check_text, parse_status};
use crate::sql::{Param, Tx};
use crate::{
    IssueOutcome, ItemStatus, LedgerError, MAX_ITEM_BYTES, MAX_SERIAL_LEN, PieceState, RequestKey,
    SignedItem, UserId,
};

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

/// The op name issue outcomes are stored under.
const OP_ISSUE: &str = "issue";

/// Stores an issue's outcome for its repeats, without the item's bytes (the item's row holds
/// them).
pub(crate) fn store_issue_outcome(
    tx: &mut dyn Tx,
    key: &RequestKey,
    outcome: &IssueOutcome,
    now_ms: i64,
) -> Result<(), LedgerError> {
    let stored = StoredIssue {
        serial: outcome.serial.clone(),
        item: None,
        balance_mills: outcome.balance_mills,
        postage_mills: outcome.postage_mills,
    };
    store_outcome(tx, key, OP_ISSUE, &stored, now_ms)
}

/// What the ledger keeps for a repeat of an issue: its outcome without the item's bytes, which
/// the item's row holds (they were two thirds of the request row: measured, docs/BENCHMARKS.md).
/// Outcomes stored before this hold the bytes (hex) and are answered as stored.
#[derive(serde::Deserialize, Serialize)]
struct StoredIssue {
    serial: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    item: Option<String>,
    balance_mills: u64,
    postage_mills: u64,
}

/// A repeated issue's first outcome (the item's bytes from its row).
pub(crate) fn replay_issue(
    tx: &mut dyn Tx,
    user_id: UserId,
    json: &str,
) -> Result<IssueOutcome, LedgerError> {
    let stored: StoredIssue = replay(json)?;
    let item = match stored.item {
        Some(hex) => hex::decode(hex)
            .map_err(|e| LedgerError::Corrupt(format!("stored outcome unreadable: {e}")))?,
        None => tx
            .row(
                "SELECT bytes FROM items WHERE serial = ?1 AND user_id = ?2",
                &[Text(&stored.serial), Int(user_id)],
            )?
            .ok_or_else(|| {
                LedgerError::Corrupt(format!(
                    "item {} of a stored outcome is missing",
                    stored.serial
                ))
            })?
            .blob(0)?,
    };
    Ok(IssueOutcome {
        serial: stored.serial,
        item,
        balance_mills: stored.balance_mills,
        postage_mills: stored.postage_mills,
        refill_due: false,
    })
}

/// Signs a piece with the caller's signer and checks what it returns: a serial of 1 to
/// [`MAX_SERIAL_LEN`] bytes and 1 to [`MAX_ITEM_BYTES`] item bytes; the signature check it hands
/// back runs before the commit (`Tx::defer_check`). Writes nothing.
pub(crate) fn sign_piece(
    tx: &mut dyn Tx,
    sign: &mut dyn FnMut(&PieceState) -> Result<SignedItem, String>,
    state: &PieceState,
) -> Result<SignedItem, LedgerError> {
    let mut signed = sign(state).map_err(LedgerError::Signing)?;
    if let Some(check) = signed.check.take() {
        tx.defer_check(check)?;
    }
    check_text("serial", &signed.serial, 1, MAX_SERIAL_LEN)
        .map_err(|e| LedgerError::Signing(format!("signer returned a bad serial: {e}")))?;
    if signed.bytes.is_empty() || signed.bytes.len() > MAX_ITEM_BYTES {
        return Err(LedgerError::Signing(format!(
            "signer returned {} item bytes",
            signed.bytes.len()
        )));
    }
    Ok(signed)
}
