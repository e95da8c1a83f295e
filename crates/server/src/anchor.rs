//! The audit log's anchor: the newest entry of every chain, MAC'd by the crypto device and kept in
//! the data dir (`audit-anchor.json`), outside the database. The server writes it when it starts,
//! every [`ANCHOR_EVERY`] while it runs and when it stops; when it starts it refuses a database
//! that no longer holds an anchored entry unchanged. So entries deleted while the server was down
//! are found too — by whoever can change the database but not the data dir and the device
//! (on PostgreSQL, a different privilege). Entries newer than the last anchor are not covered.

use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use stampline_ledger::Store;
use stampline_psd::Psd;

/// The anchor's file in the data dir.
pub const ANCHOR_FILE: &str = "audit-anchor.json";
/// How often a running server writes the anchor.
pub const ANCHOR_EVERY: Duration = Duration::from_secs(10);
/// What the device's MAC covers, before the heads.
const CONTEXT: &[u8] = b"stampline/v1/audit-anchor";

#[derive(Debug, Serialize, Deserialize)]
struct Anchor {
    heads: Vec<Head>,
    /// HMAC by the crypto device over [`CONTEXT`] and every head (hex).
    mac: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct Head {
    chain: i64,
    seq: i64,
    /// The entry's hash (hex).
    hash: String,
}

fn mac(psd: &dyn Psd, heads: &[(i64, i64, [u8; 32])]) -> anyhow::Result<[u8; 32]> {
    let mut message = CONTEXT.to_vec();
    for (chain, seq, hash) in heads {
        message.extend_from_slice(&chain.to_be_bytes());
        message.extend_from_slice(&seq.to_be_bytes());
        message.extend_from_slice(hash);
    }
    Ok(psd.seal(&message)?)
}

/// Writes the anchor of the log as it is now — only if the log still holds every entry the
/// current anchor names (else the error says what is gone, and the old anchor stays, so that a
/// log truncated while the server runs is not sealed as the new baseline). One write at a time.
pub fn write(data_dir: &Path, store: &dyn Store, psd: &dyn Psd) -> anyhow::Result<()> {
    static WRITING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one_at_a_time = WRITING.lock().unwrap_or_else(|e| e.into_inner());
    check(data_dir, store, psd)?;
    let heads = store.audit_heads()?;
    let anchor = Anchor {
        mac: hex::encode(mac(psd, &heads)?),
        heads: heads
            .iter()
            .map(|(chain, seq, hash)| Head {
                chain: *chain,
                seq: *seq,
                hash: hex::encode(hash),
            })
            .collect(),
    };
    stampline_https::serve::write_file(
        &data_dir.join(ANCHOR_FILE),
        &serde_json::to_vec_pretty(&anchor)?,
        true,
    )?;
    Ok(())
}

/// Checks that every anchored entry is still in the log unchanged (no anchor yet: nothing to
/// check). Errors name what is wrong; the server refuses to start on them.
pub fn check(data_dir: &Path, store: &dyn Store, psd: &dyn Psd) -> anyhow::Result<()> {
    let path = data_dir.join(ANCHOR_FILE);
    let text = match std::fs::read(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    let broken = |why: String| {
        anyhow::anyhow!(
            "the audit log was changed behind the server's back: {why} (anchor {})",
            path.display()
        )
    };
    let anchor: Anchor =
        serde_json::from_slice(&text).map_err(|e| broken(format!("unreadable anchor: {e}")))?;
    let mut heads = Vec::with_capacity(anchor.heads.len());
    for h in &anchor.heads {
        let hash: [u8; 32] = hex::decode(&h.hash)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| broken("a malformed hash in the anchor".into()))?;
        heads.push((h.chain, h.seq, hash));
    }
    if hex::encode(mac(psd, &heads)?) != anchor.mac {
        return Err(broken("the anchor's seal does not verify".into()));
    }
    for (chain, seq, hash) in heads {
        match store.audit_entry_hash(chain, seq)? {
            Some(found) if found == hash => {}
            Some(_) => return Err(broken(format!("entry {seq} of chain {chain} was changed"))),
            None => {
                return Err(broken(format!(
                    "entry {seq} of chain {chain} and those after it are gone"
                )));
            }
        }
    }
    Ok(())
}
