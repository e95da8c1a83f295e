//! Request idempotency: every mutating request stores its outcome under the user, the request id
//! and the request's fingerprint; a repeat is answered with the stored outcome, and a different
//! request under a used id is refused (`IdReused`).

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::values::{check_text, hash32};
use crate::sql::{Param, Tx};
use crate::{LedgerError, MAX_REQUEST_ID_LEN, RequestKey, UserId};

use Param::{Blob, Int, Text};

pub(crate) fn find_request(
    tx: &mut dyn Tx,
    user_id: UserId,
    request_id: &str,
) -> Result<Option<([u8; 32], String, String)>, LedgerError> {
    let row = tx.row(
        "SELECT fingerprint, op, outcome_json FROM requests
         WHERE user_id = ?1 AND request_id = ?2",
        &[Int(user_id), Text(request_id)],
    )?;
    row.map(|r| {
        Ok((
            hash32(&r.blob(0)?, "request fingerprint")?,
            r.text(1)?,
            r.text(2)?,
        ))
    })
    .transpose()
}

/// The stored outcome of a repeat of this request, `None` for a new request id, `IdReused` when
/// the id was used for a different request (another fingerprint or another op).
pub(crate) fn find_outcome(
    tx: &mut dyn Tx,
    key: &RequestKey<'_>,
    op: &str,
) -> Result<Option<String>, LedgerError> {
    check_text("request id", key.request_id, 1, MAX_REQUEST_ID_LEN)?;
    let Some(r) = tx.row(
        "SELECT fingerprint, op, outcome_json FROM requests
         WHERE user_id = ?1 AND request_id = ?2",
        &[Int(key.user_id), Text(key.request_id)],
    )?
    else {
        return Ok(None);
    };
    let (fingerprint, stored_op) = (r.blob(0)?, r.text(1)?);
    if fingerprint.as_slice() == key.fingerprint.as_slice() && stored_op == op {
        Ok(Some(r.text(2)?))
    } else {
        Err(LedgerError::IdReused)
    }
}

pub(crate) fn replay<T: DeserializeOwned>(json: &str) -> Result<T, LedgerError> {
    serde_json::from_str(json)
        .map_err(|e| LedgerError::Corrupt(format!("stored outcome unreadable: {e}")))
}

pub(crate) fn store_outcome<T: Serialize>(
    tx: &mut dyn Tx,
    key: &RequestKey<'_>,
    op: &str,
    outcome: &T,
    now_ms: i64,
) -> Result<(), LedgerError> {
    let json = serde_json::to_string(outcome)
        .map_err(|e| LedgerError::Invariant(format!("outcome not serialisable: {e}")))?;
    tx.exec(
        "INSERT INTO requests (user_id, request_id, fingerprint, op, outcome_json, at_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        &[
            Int(key.user_id),
            Text(key.request_id),
            Blob(key.fingerprint.as_slice()),
            Text(op),
            Text(&json),
            Int(now_ms),
        ],
    )?;
    Ok(())
}
