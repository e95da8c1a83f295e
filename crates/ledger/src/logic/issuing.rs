//! What every issue shares, postage or value item: the preamble (lock the meter, answer a
//! repeat, check the amount and session, refuse a locked or closed account and an unlicensed
//! meter), signing the piece and checking what the signer returns, and the stored outcome a
//! repeat is answered from.

use serde::Serialize;

use super::Ctx;
use super::meter::{Meter, lock_meter_with_balance};
use super::requests::{find_outcome, replay, store_outcome};
use super::standing::refuse_if_locked;
use super::values::{check_text, positive_mills};
use crate::sql::{Param, Tx};
use crate::{
    IssueInput, IssueOutcome, LedgerError, MAX_ITEM_BYTES, MAX_SERIAL_LEN, MAX_TEXT_LEN,
    PieceState, RequestKey, SignedItem, UserId,
};

use Param::{Int, Text};

/// An issue that may go ahead: the locked meter (licensed), the spendable balance and the
/// amount in mills.
pub(crate) struct Begun {
    pub(crate) meter: Meter,
    pub(crate) device_id: String,
    pub(crate) balance: i64,
    pub(crate) amount: i64,
}

/// The preamble of every issue: `Ok(Err(outcome))` answers a repeat of the request with its
/// first outcome; `Ok(Ok(begun))` lets a new one go on. Refuses, before any write: a zero amount,
/// a bad session, a locked or closed account, an unlicensed meter.
pub(crate) fn begin(
    tx: &mut dyn Tx,
    ctx: Ctx<'_>,
    key: &RequestKey,
    input: &IssueInput,
) -> Result<Result<Begun, IssueOutcome>, LedgerError> {
    let user_id = key.user_id;
    let (meter, balance) = lock_meter_with_balance(tx, ctx, user_id)?;
    if let Some(json) = find_outcome(tx, key, OP_ISSUE)? {
        return replay_issue(tx, user_id, &json).map(Err);
    }
    let amount = positive_mills(input.amount)?;
    if let Some(session) = &input.session {
        check_text("session", session, 1, MAX_TEXT_LEN)?;
    }
    refuse_if_locked(tx, user_id)?;
    let device_id = meter.device_id.clone().ok_or(LedgerError::NotLicensed)?;
    Ok(Ok(Begun {
        meter,
        device_id,
        balance,
        amount,
    }))
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
