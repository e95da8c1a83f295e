//! The public record of a device's item-signing keys: when each began signing, when it was
//! retired by a rotation, until when its items are accepted, and whether it was revoked.
//!
//! Kept in `DIR/psd/signing-keys.json` for both devices, with a MAC computed by the device's
//! seal key, so an edit (say, un-revoking a key) makes the device refuse to open. It holds public
//! keys only. The last record is the current key; every other one is retired.

use std::path::Path;

use serde::{Deserialize, Serialize};
use stampline_items::KeyId;

use crate::{MAX_REASON_BYTES, PsdError, PublishedKey, Rotation};

/// How long items signed by a retired key stay valid after its rotation: a mail date may be up to
/// 30 days ahead of issue, and a piece may spend weeks in the mail stream after that.
pub const RETIRED_KEY_VALIDITY_SECS: i64 = 60 * 24 * 3600;
/// The index file in `DIR/psd`.
pub const INDEX_FILE: &str = "signing-keys.json";
/// Domain separation for the index MAC (register seals never start with this).
const INDEX_MAC_CONTEXT: &[u8] = b"stampline/psd/signing-keys/v1\0";

/// One signing key's public record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyRecord {
    pub key_id: String,
    pub spki_der_hex: String,
    pub valid_from: i64,
    pub retired_at: Option<i64>,
    pub valid_until: Option<i64>,
    pub revoked_at: Option<i64>,
    pub revocation_reason: Option<String>,
}

impl KeyRecord {
    pub fn new(key_id: KeyId, spki_der: &[u8], now_unix: i64) -> KeyRecord {
        KeyRecord {
            key_id: key_id.to_string(),
            spki_der_hex: hex::encode(spki_der),
            valid_from: now_unix,
            retired_at: None,
            valid_until: None,
            revoked_at: None,
            revocation_reason: None,
        }
    }

    pub fn published(&self) -> Result<PublishedKey, PsdError> {
        let spki_der = hex::decode(&self.spki_der_hex)
            .map_err(|_| PsdError::BadKey(format!("key {}: bad public key hex", self.key_id)))?;
        let key_id = KeyId::of_spki(&spki_der);
        if key_id.to_string() != self.key_id {
            return Err(PsdError::BadKey(format!(
                "key {} does not match its public key ({key_id})",
                self.key_id
            )));
        }
        Ok(PublishedKey {
            key_id,
            spki_der,
            valid_from_unix: self.valid_from,
            valid_until_unix: self.valid_until,
            retired_at_unix: self.retired_at,
            revoked_at_unix: self.revoked_at,
            revocation_reason: self.revocation_reason.clone(),
        })
    }
}

/// The whole index: which device it belongs to and its keys, oldest first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyIndex {
    /// `software` or `pkcs11:TOKEN_LABEL`: a data dir is bound to one device.
    pub device: String,
    pub keys: Vec<KeyRecord>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct IndexFile {
    index: KeyIndex,
    mac: String,
}

impl KeyIndex {
    pub fn new(device: &str, first: KeyRecord) -> KeyIndex {
        KeyIndex {
            device: device.to_owned(),
            keys: vec![first],
        }
    }

    /// The current key: the last one, never retired.
    pub fn current(&self) -> Option<&KeyRecord> {
        self.keys.last().filter(|k| k.retired_at.is_none())
    }

    pub fn current_id(&self) -> Option<KeyId> {
        self.current().and_then(|k| k.key_id.parse().ok())
    }

    /// Refuse to sign with anything but the current key.
    pub fn check_signing(&self, key_id: KeyId) -> Result<(), PsdError> {
        let id = key_id.to_string();
        match self.keys.iter().find(|k| k.key_id == id) {
            None => Err(PsdError::UnknownKey(id)),
            Some(k) if k.retired_at.is_some() || k.revoked_at.is_some() => {
                Err(PsdError::KeyRetired(id))
            }
            Some(_) => Ok(()),
        }
    }

    pub fn published(&self) -> Vec<PublishedKey> {
        self.keys
            .iter()
            .filter_map(|k| k.published().ok())
            .collect()
    }

    /// Append a new current key; the previous one is retired now and its items stay valid for
    /// [`RETIRED_KEY_VALIDITY_SECS`].
    pub fn rotate(&mut self, new: KeyRecord, now_unix: i64) -> Result<Rotation, PsdError> {
        if self.keys.iter().any(|k| k.key_id == new.key_id) {
            return Err(PsdError::BadKey(format!(
                "key {} exists already",
                new.key_id
            )));
        }
        let old = self
            .keys
            .last_mut()
            .ok_or_else(|| PsdError::BadKey("no signing key".into()))?;
        if old.retired_at.is_none() {
            old.retired_at = Some(now_unix);
            let until = now_unix.saturating_add(RETIRED_KEY_VALIDITY_SECS);
            old.valid_until = Some(old.valid_until.map_or(until, |u| u.min(until)));
        }
        let old_key = old.published()?;
        let new_key = new.published()?;
        self.keys.push(new);
        Ok(Rotation { new_key, old_key })
    }

    /// Revoke a retired key; items it signed are invalid from `now_unix`.
    pub fn revoke(
        &mut self,
        key_id: KeyId,
        now_unix: i64,
        reason: &str,
    ) -> Result<PublishedKey, PsdError> {
        let reason = reason.trim();
        if reason.is_empty()
            || reason.len() > MAX_REASON_BYTES
            || reason.chars().any(char::is_control)
        {
            return Err(PsdError::BadInput(format!(
                "a revocation reason is 1 to {MAX_REASON_BYTES} bytes of printable text"
            )));
        }
        let id = key_id.to_string();
        let is_current = self.current().is_some_and(|k| k.key_id == id);
        let key = self
            .keys
            .iter_mut()
            .find(|k| k.key_id == id)
            .ok_or_else(|| PsdError::UnknownKey(id.clone()))?;
        if key.revoked_at.is_some() {
            return key.published();
        }
        if is_current {
            return Err(PsdError::KeyIsCurrent(id));
        }
        key.revoked_at = Some(now_unix);
        key.valid_until = Some(key.valid_until.map_or(now_unix, |u| u.min(now_unix)));
        key.revocation_reason = Some(reason.to_owned());
        key.published()
    }

    fn mac_input(&self) -> Result<Vec<u8>, PsdError> {
        let mut input = INDEX_MAC_CONTEXT.to_vec();
        input.extend(serde_json::to_vec(self).map_err(|e| PsdError::BadKey(e.to_string()))?);
        Ok(input)
    }

    /// Read the index from `dir`, refusing one made for another device or edited behind the
    /// device's back. `None` when there is none yet.
    pub fn load(
        dir: &Path,
        device: &str,
        seal: impl Fn(&[u8]) -> Result<[u8; 32], PsdError>,
    ) -> Result<Option<KeyIndex>, PsdError> {
        let path = dir.join(INDEX_FILE);
        if !path.exists() {
            return Ok(None);
        }
        let file: IndexFile = serde_json::from_slice(&std::fs::read(&path)?)
            .map_err(|e| PsdError::BadKey(format!("{}: {e}", path.display())))?;
        if file.index.device != device {
            return Err(PsdError::Config(format!(
                "this data dir's signing keys belong to the {} crypto device, not {device}; \
                 start the server with the device that made them",
                file.index.device
            )));
        }
        let want = seal(&file.index.mac_input()?)?;
        let got = hex::decode(&file.mac).unwrap_or_default();
        if aws_lc_rs::constant_time::verify_slices_are_equal(&want, &got).is_err() {
            return Err(PsdError::BadKey(format!(
                "{} was altered (its MAC does not verify)",
                path.display()
            )));
        }
        if file.index.current().is_none() {
            return Err(PsdError::BadKey("no current signing key".into()));
        }
        for k in &file.index.keys {
            k.published()?;
        }
        Ok(Some(file.index))
    }

    /// Write the index atomically with its MAC.
    pub fn save(
        &self,
        dir: &Path,
        seal: impl Fn(&[u8]) -> Result<[u8; 32], PsdError>,
    ) -> Result<(), PsdError> {
        let mac = hex::encode(seal(&self.mac_input()?)?);
        let file = IndexFile {
            index: self.clone(),
            mac,
        };
        let bytes =
            serde_json::to_vec_pretty(&file).map_err(|e| PsdError::BadKey(e.to_string()))?;
        crate::write_private(&dir.join(INDEX_FILE), &bytes)
    }
}

/// A device's live state that holds its key index (beside the device's own key handles).
pub(crate) trait HoldsIndex {
    fn index_mut(&mut self) -> &mut KeyIndex;
    fn index(&self) -> &KeyIndex;
}

/// One administrative change to a device's key index (rotation, revocation): made on a copy,
/// saved sealed to `dir`, and only then put in place of the live index. Returns the change's
/// result and the state still locked for writing, so the device can add the key it made.
pub(crate) fn change_index<'a, S: HoldsIndex, T>(
    state: &'a std::sync::RwLock<S>,
    dir: &Path,
    seal: impl Fn(&[u8]) -> Result<[u8; 32], PsdError>,
    change: impl FnOnce(&mut KeyIndex) -> Result<T, PsdError>,
) -> Result<(T, std::sync::RwLockWriteGuard<'a, S>), PsdError> {
    let mut index = state.read().map_err(|_| PsdError::Crypto)?.index().clone();
    let out = change(&mut index)?;
    index.save(dir, seal)?;
    let mut live = state.write().map_err(|_| PsdError::Crypto)?;
    *live.index_mut() = index;
    Ok((out, live))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn record(n: u8, now: i64) -> KeyRecord {
        let spki = vec![n; 10];
        KeyRecord::new(KeyId::of_spki(&spki), &spki, now)
    }

    #[test]
    fn rotation_retires_the_old_key_and_keeps_its_items_valid_for_a_while() {
        let mut idx = KeyIndex::new("software", record(1, 100));
        let first = idx.current_id().unwrap();
        let r = idx.rotate(record(2, 200), 200).unwrap();
        assert_eq!(r.old_key.key_id, first);
        assert_eq!(r.old_key.retired_at_unix, Some(200));
        assert_eq!(
            r.old_key.valid_until_unix,
            Some(200 + RETIRED_KEY_VALIDITY_SECS)
        );
        assert_eq!(idx.current_id(), Some(r.new_key.key_id));
        assert!(matches!(
            idx.check_signing(first),
            Err(PsdError::KeyRetired(_))
        ));
        assert!(idx.check_signing(r.new_key.key_id).is_ok());
    }

    #[test]
    fn the_current_key_cannot_be_revoked_and_revoking_twice_changes_nothing() {
        let mut idx = KeyIndex::new("software", record(1, 100));
        let first = idx.current_id().unwrap();
        assert!(matches!(
            idx.revoke(first, 150, "lost"),
            Err(PsdError::KeyIsCurrent(_))
        ));
        idx.rotate(record(2, 200), 200).unwrap();
        assert!(matches!(
            idx.revoke(first, 300, " "),
            Err(PsdError::BadInput(_))
        ));
        let k = idx.revoke(first, 300, "key compromised").unwrap();
        assert_eq!(k.revoked_at_unix, Some(300));
        assert_eq!(k.valid_until_unix, Some(300));
        assert_eq!(k.status(), "revoked");
        let again = idx.revoke(first, 400, "other").unwrap();
        assert_eq!(again, k);
    }
}
