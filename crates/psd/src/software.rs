//! The software crypto device: keys in `DIR/psd/keystore.json`, encrypted under a passphrase.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::RwLock;

use aws_lc_rs::encoding::AsDer as _;
use aws_lc_rs::signature::{self, EcdsaKeyPair, KeyPair as _};
use aws_lc_rs::{aead, hmac, rand};
use stampline_items::KeyId;
use zeroize::Zeroizing;

use crate::keyring::{HoldsIndex, INDEX_FILE, KeyIndex, KeyRecord, change_index};
use crate::keystore::{self, KEYSTORE_FILE, Passphrase, Secrets};
use crate::{
    Psd, PsdError, PublishedKey, Rotation, check_wrappable, psd_dir, random, split_wrapped,
};

/// The device name recorded in the key index.
const DEVICE: &str = "software";
/// Files of the walking skeleton's plaintext layout, migrated and removed at open.
const LEGACY_AUTH: &str = "auth-key.p8";
const LEGACY_WRAP: &str = "wrap.key";
const LEGACY_SEAL: &str = "seal.key";
const LEGACY_INDEX: &str = "signing-keys.txt";

struct State {
    index: KeyIndex,
    signing: Vec<(KeyId, EcdsaKeyPair)>,
}

impl HoldsIndex for State {
    fn index(&self) -> &KeyIndex {
        &self.index
    }
    fn index_mut(&mut self) -> &mut KeyIndex {
        &mut self.index
    }
}

/// The software crypto device.
///
/// Its private keys exist in the clear only in this process's memory; on disk they are sealed
/// under the passphrase (argon2id → AES-256-GCM). Production installations use [`crate::Pkcs11Psd`].
pub struct SoftwarePsd {
    dir: PathBuf,
    passphrase: Passphrase,
    auth: EcdsaKeyPair,
    auth_spki: Vec<u8>,
    wrap: aead::LessSafeKey,
    seal_key: hmac::Key,
    state: RwLock<State>,
    /// Serialises rotations and revocations (they rewrite files).
    admin: std::sync::Mutex<()>,
}

impl std::fmt::Debug for SoftwarePsd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SoftwarePsd")
            .field("dir", &self.dir)
            .field("dev_mode", &self.passphrase.is_dev())
            .finish_non_exhaustive()
    }
}

fn new_ecdsa_pkcs8() -> Result<Zeroizing<Vec<u8>>, PsdError> {
    let doc = EcdsaKeyPair::generate_pkcs8(
        &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
        &rand::SystemRandom::new(),
    )
    .map_err(|_| PsdError::Crypto)?;
    Ok(Zeroizing::new(doc.as_ref().to_vec()))
}

fn ecdsa_from_pkcs8(pkcs8: &[u8]) -> Result<(EcdsaKeyPair, Vec<u8>), PsdError> {
    let pair = EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8)
        .map_err(|e| PsdError::BadKey(e.to_string()))?;
    let spki = pair
        .public_key()
        .as_der()
        .map_err(|_| PsdError::BadKey("public key encoding".into()))?
        .as_ref()
        .to_vec();
    Ok((pair, spki))
}

fn unhex(what: &str, text: &str) -> Result<Zeroizing<Vec<u8>>, PsdError> {
    hex::decode(text)
        .map(Zeroizing::new)
        .map_err(|_| PsdError::BadKey(format!("{what}: bad hex")))
}

fn sign_with(pair: &EcdsaKeyPair, message: &[u8]) -> Result<[u8; 64], PsdError> {
    let sig = pair
        .sign(&rand::SystemRandom::new(), message)
        .map_err(|_| PsdError::Crypto)?;
    sig.as_ref().try_into().map_err(|_| PsdError::Crypto)
}

/// Fresh secrets: auth key, wrapping key, seal key and one signing key.
fn fresh_secrets() -> Result<(Secrets, KeyRecord), PsdError> {
    let mut s = Secrets {
        auth_pkcs8: hex::encode(&*new_ecdsa_pkcs8()?),
        wrap_key: hex::encode(*random::<32>()?),
        seal_key: hex::encode(*random::<32>()?),
        signing: Default::default(),
    };
    let (_, record) = add_signing_key(&mut s, 0)?;
    Ok((s, record))
}

/// Make a signing key, add it to the secrets, return its record (valid from `now_unix`).
fn add_signing_key(s: &mut Secrets, now_unix: i64) -> Result<(KeyId, KeyRecord), PsdError> {
    let pkcs8 = new_ecdsa_pkcs8()?;
    let (_, spki) = ecdsa_from_pkcs8(&pkcs8)?;
    let id = KeyId::of_spki(&spki);
    s.signing.insert(id.to_string(), hex::encode(&*pkcs8));
    Ok((id, KeyRecord::new(id, &spki, now_unix)))
}

/// The walking skeleton kept PKCS#8 files in the clear: read them into a key store and an index.
fn read_legacy(dir: &Path) -> Result<Option<(Secrets, Vec<KeyRecord>)>, PsdError> {
    let auth = dir.join(LEGACY_AUTH);
    if !auth.exists() {
        return Ok(None);
    }
    let read = |name: &str| -> Result<Zeroizing<Vec<u8>>, PsdError> {
        Ok(Zeroizing::new(fs::read(dir.join(name))?))
    };
    let mut s = Secrets {
        auth_pkcs8: hex::encode(&*read(LEGACY_AUTH)?),
        wrap_key: hex::encode(&*read(LEGACY_WRAP)?),
        seal_key: hex::encode(&*read(LEGACY_SEAL)?),
        signing: Default::default(),
    };
    let mut records = Vec::new();
    for line in fs::read_to_string(dir.join(LEGACY_INDEX))?.lines() {
        let parts: Vec<&str> = line.split_whitespace().collect();
        let [id, from, until] = parts[..] else {
            return Err(PsdError::BadKey(format!("bad legacy index line {line:?}")));
        };
        let pkcs8 = read(&format!("sign-{id}.p8"))?;
        let (_, spki) = ecdsa_from_pkcs8(&pkcs8)?;
        let key_id = KeyId::of_spki(&spki);
        if key_id.to_string() != id {
            return Err(PsdError::BadKey(format!(
                "key file for {id} holds {key_id}"
            )));
        }
        let from = from
            .parse::<i64>()
            .map_err(|_| PsdError::BadKey(format!("bad time {from:?}")))?;
        let mut record = KeyRecord::new(key_id, &spki, from);
        if until != "-" {
            let t = until
                .parse::<i64>()
                .map_err(|_| PsdError::BadKey(format!("bad time {until:?}")))?;
            record.retired_at = Some(t);
            record.valid_until = Some(t);
        }
        s.signing.insert(id.to_owned(), hex::encode(&*pkcs8));
        records.push(record);
    }
    Ok(Some((s, records)))
}

fn remove_legacy(dir: &Path, records: &[KeyRecord]) -> Result<(), PsdError> {
    for name in [LEGACY_AUTH, LEGACY_WRAP, LEGACY_SEAL, LEGACY_INDEX] {
        let _ = fs::remove_file(dir.join(name));
    }
    for r in records {
        let _ = fs::remove_file(dir.join(format!("sign-{}.p8", r.key_id)));
    }
    fs::File::open(dir)?.sync_all()?;
    Ok(())
}

impl SoftwarePsd {
    /// Open the device in `data_dir/psd`, creating its keys on first use, then run the
    /// known-answer self-test; refuses to open if it fails.
    ///
    /// A key store made under the development passphrase is re-sealed under a real passphrase
    /// when one is given; a data dir in the walking skeleton's plaintext layout is migrated into
    /// a key store and its plaintext key files are removed.
    pub fn open(
        data_dir: &Path,
        passphrase: Passphrase,
        now_unix: i64,
    ) -> Result<SoftwarePsd, PsdError> {
        let dir = psd_dir(data_dir)?;
        let store_path = dir.join(KEYSTORE_FILE);
        let mut migrated: Option<Vec<KeyRecord>> = None;
        let mut fresh_record = None;
        let secrets = if store_path.exists() {
            let bytes = fs::read(&store_path)?;
            if keystore::is_dev_mode(&bytes)? && !passphrase.is_dev() {
                // Upgrade: the development passphrase protected nothing; seal under the real one.
                let s = keystore::open(&bytes, &Passphrase::Dev)?;
                crate::write_private(&store_path, &keystore::seal(&s, &passphrase)?)?;
                tracing_note("re-sealed the development-mode key store under the given passphrase");
                s
            } else {
                keystore::open(&bytes, &passphrase)?
            }
        } else if let Some((s, records)) = read_legacy(&dir)? {
            crate::write_private(&store_path, &keystore::seal(&s, &passphrase)?)?;
            migrated = Some(records);
            s
        } else {
            let (s, mut record) = fresh_secrets()?;
            record.valid_from = now_unix;
            crate::write_private(&store_path, &keystore::seal(&s, &passphrase)?)?;
            fresh_record = Some(record);
            s
        };

        let (auth, auth_spki) = ecdsa_from_pkcs8(&unhex("auth key", &secrets.auth_pkcs8)?)?;
        let wrap_key = unhex("wrap key", &secrets.wrap_key)?;
        let seal_key = unhex("seal key", &secrets.seal_key)?;
        let wrap = aead::LessSafeKey::new(
            aead::UnboundKey::new(&aead::AES_256_GCM, &wrap_key)
                .map_err(|_| PsdError::BadKey("wrap key".into()))?,
        );
        let seal_key = hmac::Key::new(hmac::HMAC_SHA256, &seal_key);
        let seal = |d: &[u8]| -> Result<[u8; 32], PsdError> {
            hmac::sign(&seal_key, d)
                .as_ref()
                .try_into()
                .map_err(|_| PsdError::Crypto)
        };

        let index = match KeyIndex::load(&dir, DEVICE, seal)? {
            Some(index) => index,
            None => {
                let records = match (migrated.clone(), fresh_record) {
                    (Some(records), _) => records,
                    (None, Some(record)) => vec![record],
                    (None, None) => {
                        return Err(PsdError::BadKey(format!(
                            "{INDEX_FILE} is missing next to the key store"
                        )));
                    }
                };
                let index = KeyIndex {
                    device: DEVICE.into(),
                    keys: records,
                };
                if index.current().is_none() {
                    return Err(PsdError::BadKey("no current signing key".into()));
                }
                index.save(&dir, seal)?;
                index
            }
        };
        if let Some(records) = &migrated {
            remove_legacy(&dir, records)?;
        }
        let mut signing = Vec::new();
        for record in &index.keys {
            let text = secrets.signing.get(&record.key_id).ok_or_else(|| {
                PsdError::BadKey(format!(
                    "signing key {} is not in the key store",
                    record.key_id
                ))
            })?;
            let (pair, spki) = ecdsa_from_pkcs8(&unhex("signing key", text)?)?;
            if hex::encode(&spki) != record.spki_der_hex {
                return Err(PsdError::BadKey(format!(
                    "signing key {} does not match its record",
                    record.key_id
                )));
            }
            signing.push((KeyId::of_spki(&spki), pair));
        }
        drop(secrets);
        let psd = SoftwarePsd {
            dir,
            passphrase,
            auth,
            auth_spki,
            wrap,
            seal_key,
            state: RwLock::new(State { index, signing }),
            admin: std::sync::Mutex::new(()),
        };
        crate::self_test(&psd)?;
        Ok(psd)
    }

    /// Whether the device runs on the public development passphrase.
    pub fn is_dev_mode(&self) -> bool {
        self.passphrase.is_dev()
    }

    fn seal_fn(&self) -> impl Fn(&[u8]) -> Result<[u8; 32], PsdError> + '_ {
        |d| self.seal(d)
    }
}

/// The device has no logger of its own; the one migration note goes to stderr.
fn tracing_note(msg: &str) {
    eprintln!("stampline: crypto device: {msg}");
}

impl Psd for SoftwarePsd {
    fn describe(&self) -> String {
        let mode = if self.passphrase.is_dev() {
            "DEV MODE, public development passphrase"
        } else {
            "keys encrypted under a passphrase"
        };
        format!("software crypto device in {} ({mode})", self.dir.display())
    }

    fn auth_public_key(&self) -> Vec<u8> {
        self.auth_spki.clone()
    }

    fn sign_auth(&self, transcript: &[u8]) -> Result<[u8; 64], PsdError> {
        sign_with(&self.auth, transcript)
    }

    fn current_signing_key(&self) -> KeyId {
        let state = self.state.read().unwrap_or_else(|e| e.into_inner());
        // `open` refuses an index without a current key, and rotation always leaves one.
        state.index.current_id().unwrap_or(KeyId([0; 4]))
    }

    fn sign_item(&self, key_id: KeyId, payload: &[u8]) -> Result<[u8; 64], PsdError> {
        let state = self.state.read().map_err(|_| PsdError::Crypto)?;
        state.index.check_signing(key_id)?;
        let (_, pair) = state
            .signing
            .iter()
            .find(|(id, _)| *id == key_id)
            .ok_or_else(|| PsdError::UnknownKey(key_id.to_string()))?;
        sign_with(pair, payload)
    }

    fn published_keys(&self) -> Vec<PublishedKey> {
        let state = self.state.read().unwrap_or_else(|e| e.into_inner());
        state.index.published()
    }

    fn rotate_signing_key(&self, now_unix: i64) -> Result<Rotation, PsdError> {
        let _admin = self.admin.lock().map_err(|_| PsdError::Crypto)?;
        let store_path = self.dir.join(KEYSTORE_FILE);
        // The key store first: a crash before the index is written leaves an unused key.
        let mut secrets = keystore::open(&fs::read(&store_path)?, &self.passphrase)?;
        let (id, record) = add_signing_key(&mut secrets, now_unix)?;
        let pkcs8 = unhex(
            "signing key",
            secrets.signing.get(&id.to_string()).map_or("", |s| s),
        )?;
        let (pair, _) = ecdsa_from_pkcs8(&pkcs8)?;
        crate::write_private(&store_path, &keystore::seal(&secrets, &self.passphrase)?)?;
        let (rotation, mut state) = change_index(&self.state, &self.dir, self.seal_fn(), |i| {
            i.rotate(record, now_unix)
        })?;
        state.signing.push((id, pair));
        Ok(rotation)
    }

    fn revoke_signing_key(
        &self,
        key_id: KeyId,
        now_unix: i64,
        reason: &str,
    ) -> Result<PublishedKey, PsdError> {
        let _admin = self.admin.lock().map_err(|_| PsdError::Crypto)?;
        let (key, _state) = change_index(&self.state, &self.dir, self.seal_fn(), |i| {
            i.revoke(key_id, now_unix, reason)
        })?;
        Ok(key)
    }

    fn wrap_secret(&self, secret: &[u8], context: &[u8]) -> Result<Vec<u8>, PsdError> {
        check_wrappable(secret)?;
        let nonce = random::<12>()?;
        let mut buf = Zeroizing::new(secret.to_vec());
        self.wrap
            .seal_in_place_append_tag(
                aead::Nonce::assume_unique_for_key(*nonce),
                aead::Aad::from(context),
                &mut *buf,
            )
            .map_err(|_| PsdError::Crypto)?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&buf);
        Ok(out)
    }

    fn unwrap_secret(
        &self,
        wrapped: &[u8],
        context: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, PsdError> {
        let (nonce, sealed) = split_wrapped(wrapped)?;
        let mut buf = Zeroizing::new(sealed.to_vec());
        let plain = self
            .wrap
            .open_in_place(
                aead::Nonce::assume_unique_for_key(nonce),
                aead::Aad::from(context),
                &mut buf,
            )
            .map_err(|_| PsdError::Unwrap)?;
        Ok(Zeroizing::new(plain.to_vec()))
    }

    fn seal(&self, data: &[u8]) -> Result<[u8; 32], PsdError> {
        let tag = hmac::sign(&self.seal_key, data);
        tag.as_ref().try_into().map_err(|_| PsdError::Crypto)
    }
}
