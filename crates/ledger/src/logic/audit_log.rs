//! Appending to the hash-chained audit log, and reading its heads. Every money operation logs
//! what it did here, inside its own transaction; before appending, a writer checks that the head
//! it last wrote is still there, so a log cut behind the ledger's back stops every money
//! operation (`AuditLogBroken`). The full audit is `crate::audit`.

use serde::Serialize;

use super::values::{check_text, hash32};
use crate::chain;
use crate::sql::{AuditHead, Param, Tx};
use crate::{LedgerError, MAX_AUDIT_FIELD_LEN, UserId};

use Param::{Blob, Int, Text};

/// The actor of entries the ledger writes on its own (expiry voids).
pub(crate) const ACTOR_SYSTEM: &str = "system";

/// Audit actions that log exactly one transfer, whose id is the detail's `"transfer"` field.
pub(crate) const TRANSFER_ACTIONS: [&str; 8] = [
    "fund",
    "issue",
    "confirm",
    "void",
    "void_expired",
    "refund",
    "payout",
    "redeem",
];

pub(crate) fn user_actor(user_id: UserId) -> String {
    format!("user:{user_id}")
}

/// An audit entry's detail as JSON. The hot paths (issue, print confirmation) serialise a struct
/// rather than build a `serde_json::Value` (its map and strings were ≈ 4 % of the writer).
pub(crate) fn detail_json<T: Serialize>(detail: &T) -> Result<String, LedgerError> {
    serde_json::to_string(detail)
        .map_err(|e| LedgerError::Invariant(format!("audit detail not serialisable: {e}")))
}

pub(crate) fn validate_audit_fields(
    actor: &str,
    action: &str,
    detail: &str,
) -> Result<(), LedgerError> {
    check_text("actor", actor, 1, MAX_AUDIT_FIELD_LEN)?;
    check_text("action", action, 1, MAX_AUDIT_FIELD_LEN)?;
    check_text("detail", detail, 0, MAX_AUDIT_FIELD_LEN)
}

/// The newest entry of every audit chain: (chain, sequence number, hash).
pub(crate) fn audit_heads(tx: &mut dyn Tx) -> Result<Vec<(i64, i64, [u8; 32])>, LedgerError> {
    tx.rows(
        "SELECT a.chain, a.seq, a.hash FROM audit_log a
         WHERE a.seq = (SELECT MAX(b.seq) FROM audit_log b WHERE b.chain = a.chain)
         ORDER BY a.chain",
        &[],
    )?
    .iter()
    .map(|r| Ok((r.int(0)?, r.int(1)?, hash32(&r.blob(2)?, "audit hash")?)))
    .collect()
}

/// The hash of entry `seq` of `chain`, if it exists.
pub(crate) fn audit_entry_hash(
    tx: &mut dyn Tx,
    chain: i64,
    seq: i64,
) -> Result<Option<[u8; 32]>, LedgerError> {
    tx.row(
        "SELECT hash FROM audit_log WHERE chain = ?1 AND seq = ?2",
        &[Int(chain), Int(seq)],
    )?
    .map(|r| hash32(&r.blob(0)?, "audit hash"))
    .transpose()
}

pub(crate) fn append_audit_entry(
    tx: &mut dyn Tx,
    at_ms: i64,
    actor: &str,
    action: &str,
    detail: &str,
) -> Result<(), LedgerError> {
    let chain = tx.lock_audit_chain()?;
    let head = if tx.audit_head_is_current(chain) {
        // Read and checked (below) earlier in this transaction, which no one else can append to.
        tx.known_audit_head(chain)
    } else {
        // The chain is a number of ours, written into the SQL: SQLite re-prepares this statement
        // at every run when the chain is a bound parameter (measured), and a backend has one chain
        // per connection, so each connection caches one statement.
        let last = tx.row(
            &format!(
                "SELECT seq, hash FROM audit_log WHERE chain = {chain} ORDER BY seq DESC LIMIT 1"
            ),
            &[],
        )?;
        let head = match last {
            None => None,
            Some(r) => Some((r.int(0)?, hash32(&r.blob(1)?, "audit hash")?)),
        };
        // The head this connection last wrote must still be there, and whatever another writer
        // (an admin command, another process) appended since must chain from it. Deleting the
        // newest entries behind the server's back leaves a chain that verifies on its own: this
        // is what finds it. Refuse to append (and so to move any money) until an operator has
        // looked.
        if let Some(known) = tx.known_audit_head(chain)
            && head != Some(known)
        {
            check_appended_since(tx, chain, known)?;
        }
        head
    };
    let (seq, prev_hash) = match head {
        None => (1, chain::GENESIS_HASH),
        Some((seq, hash)) => (seq.checked_add(1).ok_or(LedgerError::Overflow)?, hash),
    };
    let hash = chain::entry_hash(&prev_hash, seq, at_ms, actor, action, detail);
    tx.exec(
        "INSERT INTO audit_log (chain, seq, at_ms, actor, action, detail, prev_hash, hash)
         VALUES (?8, ?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        &[
            Int(seq),
            Int(at_ms),
            Text(actor),
            Text(action),
            Text(detail),
            Blob(prev_hash.as_slice()),
            Blob(hash.as_slice()),
            Int(chain),
        ],
    )?;
    tx.set_audit_head(chain, (seq, hash));
    Ok(())
}

/// Checks that entry `known` of `chain` is still in the log unchanged and that every entry after
/// it chains from it (`AuditLogBroken` otherwise).
fn check_appended_since(tx: &mut dyn Tx, chain: i64, known: AuditHead) -> Result<(), LedgerError> {
    let rows = tx.rows(
        &format!(
            "SELECT seq, at_ms, actor, action, detail, prev_hash, hash FROM audit_log
             WHERE chain = {chain} AND seq >= ?1 ORDER BY seq"
        ),
        &[Int(known.0)],
    )?;
    let broken = |what: String| Err(LedgerError::AuditLogBroken(what));
    let mut rows = rows.iter();
    match rows.next() {
        Some(r) if r.int(0)? == known.0 && hash32(&r.blob(6)?, "audit hash")? == known.1 => {}
        Some(_) => return broken(format!("entry {} was changed", known.0)),
        None => return broken(format!("entry {} and those after it are gone", known.0)),
    }
    let (mut seq, mut hash) = known;
    for r in rows {
        let next = r.int(0)?;
        let computed = chain::entry_hash(
            &hash,
            next,
            r.int(1)?,
            &r.text(2)?,
            &r.text(3)?,
            &r.text(4)?,
        );
        if Some(next) != seq.checked_add(1)
            || hash32(&r.blob(5)?, "audit hash")? != hash
            || hash32(&r.blob(6)?, "audit hash")? != computed
        {
            return broken(format!("entry {next} does not follow entry {seq}"));
        }
        (seq, hash) = (next, computed);
    }
    Ok(())
}
