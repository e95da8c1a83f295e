//! The postal security device (PSD): the only holder of private keys.
//!
//! It signs printed items and the link's auth challenge (ECDSA P-256 / SHA-256, 64-byte r||s),
//! wraps and unwraps users' link keys (AES-256-GCM) and seals meter registers (HMAC-SHA256).
//! Callers get signatures, wrapped blobs and public keys — never a private key. [`Psd`] is the seam:
//! [`SoftwarePsd`] keeps its keys in files in the data dir; a PKCS#11 device comes later.

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::RwLock;

use aws_lc_rs::encoding::AsDer as _;
use aws_lc_rs::signature::{self, EcdsaKeyPair, KeyPair as _};
use aws_lc_rs::{aead, hmac, rand};
use stampline_items::KeyId;
use zeroize::Zeroizing;

/// Length of a wrapped user key: 12-byte nonce, 32-byte key, 16-byte tag.
pub const WRAPPED_KEY_LEN: usize = 12 + 32 + 16;

/// Errors of the crypto device.
#[derive(Debug, thiserror::Error)]
pub enum PsdError {
    #[error("crypto device storage: {0}")]
    Io(#[from] std::io::Error),
    #[error("crypto device key material is invalid: {0}")]
    BadKey(String),
    #[error("unknown signing key {0}")]
    UnknownKey(String),
    #[error("signing key {0} is no longer valid for signing")]
    KeyRetired(String),
    #[error("wrapped key does not open (wrong device or tampered)")]
    Unwrap,
    #[error("crypto device self-test failed: {0}")]
    SelfTest(String),
    #[error("crypto operation failed")]
    Crypto,
}

/// A public signing key as published at `GET /v1/keys`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublishedKey {
    pub key_id: KeyId,
    pub spki_der: Vec<u8>,
    pub valid_from_unix: i64,
    pub valid_until_unix: Option<i64>,
}

/// What every crypto device can do.
pub trait Psd: Send + Sync + std::fmt::Debug {
    /// A short description, e.g. "software device in /path".
    fn describe(&self) -> String;
    /// The auth key's public half, SubjectPublicKeyInfo DER (clients pin it).
    fn auth_public_key(&self) -> Vec<u8>;
    /// Sign the link's auth transcript with the auth key.
    fn sign_auth(&self, transcript: &[u8]) -> Result<[u8; 64], PsdError>;
    /// The key new items are signed with.
    fn current_signing_key(&self) -> KeyId;
    /// Sign an item's payload with the named signing key.
    fn sign_item(&self, key_id: KeyId, payload: &[u8]) -> Result<[u8; 64], PsdError>;
    /// Every item-signing key, for verifiers (the auth key is not listed).
    fn published_keys(&self) -> Vec<PublishedKey>;
    /// Wrap a user's 32-byte link key; `context` binds it to its owner.
    fn wrap_user_key(&self, key: &[u8; 32], context: &[u8]) -> Result<Vec<u8>, PsdError>;
    /// Unwrap what [`Psd::wrap_user_key`] made, with the same context.
    fn unwrap_user_key(
        &self,
        wrapped: &[u8],
        context: &[u8],
    ) -> Result<Zeroizing<[u8; 32]>, PsdError>;
    /// A MAC over meter register state, so edits behind the server's back show.
    fn seal(&self, data: &[u8]) -> Result<[u8; 32], PsdError>;
}

/// Verify an ECDSA P-256/SHA-256 64-byte signature with an SPKI DER public key.
pub fn verify_signature(spki_der: &[u8], message: &[u8], sig: &[u8; 64]) -> bool {
    signature::UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, spki_der)
        .verify(message, sig)
        .is_ok()
}

struct SigningKey {
    key_id: KeyId,
    pair: EcdsaKeyPair,
    spki_der: Vec<u8>,
    valid_from_unix: i64,
    valid_until_unix: Option<i64>,
}

/// The software crypto device: keys in `DIR/psd/`, files readable by the owner only.
///
/// Its keys are as safe as the data dir; production installations use a PKCS#11 HSM.
pub struct SoftwarePsd {
    dir: PathBuf,
    auth: EcdsaKeyPair,
    auth_spki: Vec<u8>,
    signing: RwLock<Vec<SigningKey>>,
    wrap: aead::LessSafeKey,
    seal: hmac::Key,
}

impl std::fmt::Debug for SoftwarePsd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SoftwarePsd")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), PsdError> {
    let tmp = path.with_extension("tmp");
    {
        let mut opts = fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt as _;
            opts.mode(0o600);
        }
        let mut f = opts.open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    if let Some(parent) = path.parent() {
        fs::File::open(parent)?.sync_all()?;
    }
    Ok(())
}

fn random<const N: usize>() -> Result<Zeroizing<[u8; N]>, PsdError> {
    let mut out = Zeroizing::new([0u8; N]);
    rand::fill(&mut out[..]).map_err(|_| PsdError::Crypto)?;
    Ok(out)
}

fn load_or_make(
    path: &Path,
    make: impl FnOnce() -> Result<Vec<u8>, PsdError>,
) -> Result<Zeroizing<Vec<u8>>, PsdError> {
    if path.exists() {
        return Ok(Zeroizing::new(fs::read(path)?));
    }
    let bytes = Zeroizing::new(make()?);
    write_private(path, &bytes)?;
    Ok(bytes)
}

fn new_ecdsa_pkcs8() -> Result<Vec<u8>, PsdError> {
    let doc = EcdsaKeyPair::generate_pkcs8(
        &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
        &rand::SystemRandom::new(),
    )
    .map_err(|_| PsdError::Crypto)?;
    Ok(doc.as_ref().to_vec())
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

fn sign_with(pair: &EcdsaKeyPair, message: &[u8]) -> Result<[u8; 64], PsdError> {
    let sig = pair
        .sign(&rand::SystemRandom::new(), message)
        .map_err(|_| PsdError::Crypto)?;
    sig.as_ref().try_into().map_err(|_| PsdError::Crypto)
}

const SIGNING_INDEX: &str = "signing-keys.txt";

impl SoftwarePsd {
    /// Open the device in `data_dir/psd`, creating its keys on first use, then run the
    /// known-answer self-test (sign, verify, wrap, unwrap); refuses to open if it fails.
    pub fn open(data_dir: &Path, now_unix: i64) -> Result<SoftwarePsd, PsdError> {
        let dir = data_dir.join("psd");
        fs::create_dir_all(&dir)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))?;
        }
        let auth_pkcs8 = load_or_make(&dir.join("auth-key.p8"), new_ecdsa_pkcs8)?;
        let (auth, auth_spki) = ecdsa_from_pkcs8(&auth_pkcs8)?;
        let wrap_key = load_or_make(&dir.join("wrap.key"), || Ok(random::<32>()?.to_vec()))?;
        let seal_key = load_or_make(&dir.join("seal.key"), || Ok(random::<32>()?.to_vec()))?;
        let wrap = aead::LessSafeKey::new(
            aead::UnboundKey::new(&aead::AES_256_GCM, &wrap_key)
                .map_err(|_| PsdError::BadKey("wrap key".into()))?,
        );
        let seal = hmac::Key::new(hmac::HMAC_SHA256, &seal_key);

        // Index lines: "KEYID VALID_FROM VALID_UNTIL|-"; the last line is the current key.
        let index_path = dir.join(SIGNING_INDEX);
        if !index_path.exists() {
            let pkcs8 = Zeroizing::new(new_ecdsa_pkcs8()?);
            let (_, spki) = ecdsa_from_pkcs8(&pkcs8)?;
            let key_id = KeyId::of_spki(&spki);
            write_private(&dir.join(format!("sign-{key_id}.p8")), &pkcs8)?;
            write_private(&index_path, format!("{key_id} {now_unix} -\n").as_bytes())?;
        }
        let mut signing = Vec::new();
        for line in fs::read_to_string(&index_path)?.lines() {
            let parts: Vec<&str> = line.split_whitespace().collect();
            let [id, from, until] = parts[..] else {
                return Err(PsdError::BadKey(format!("bad index line {line:?}")));
            };
            let pkcs8 = Zeroizing::new(fs::read(dir.join(format!("sign-{id}.p8")))?);
            let (pair, spki_der) = ecdsa_from_pkcs8(&pkcs8)?;
            let key_id = KeyId::of_spki(&spki_der);
            if key_id.to_string() != id {
                return Err(PsdError::BadKey(format!(
                    "key file for {id} holds {key_id}"
                )));
            }
            let parse = |t: &str| {
                t.parse::<i64>()
                    .map_err(|_| PsdError::BadKey(format!("bad time {t:?}")))
            };
            signing.push(SigningKey {
                key_id,
                pair,
                spki_der,
                valid_from_unix: parse(from)?,
                valid_until_unix: if until == "-" {
                    None
                } else {
                    Some(parse(until)?)
                },
            });
        }
        if signing.is_empty() {
            return Err(PsdError::BadKey("no signing key".into()));
        }
        let psd = SoftwarePsd {
            dir,
            auth,
            auth_spki,
            signing: RwLock::new(signing),
            wrap,
            seal,
        };
        psd.self_test()?;
        Ok(psd)
    }

    /// Known-answer self-test: every key signs and its signature verifies; a wrapped key unwraps;
    /// a wrong context does not.
    fn self_test(&self) -> Result<(), PsdError> {
        let msg = b"stampline/psd/self-test";
        let sig = self.sign_auth(msg)?;
        if !verify_signature(&self.auth_spki, msg, &sig) {
            return Err(PsdError::SelfTest("auth signature does not verify".into()));
        }
        for key in self.published_keys() {
            let sig = self.sign_any(key.key_id, msg)?;
            if !verify_signature(&key.spki_der, msg, &sig) {
                return Err(PsdError::SelfTest(format!(
                    "key {} does not verify",
                    key.key_id
                )));
            }
        }
        let k = [0x5au8; 32];
        let w = self.wrap_user_key(&k, b"self-test")?;
        if *self.unwrap_user_key(&w, b"self-test")? != k
            || self.unwrap_user_key(&w, b"other").is_ok()
        {
            return Err(PsdError::SelfTest("key wrapping".into()));
        }
        Ok(())
    }

    fn sign_any(&self, key_id: KeyId, payload: &[u8]) -> Result<[u8; 64], PsdError> {
        let keys = self.signing.read().map_err(|_| PsdError::Crypto)?;
        let key = keys
            .iter()
            .find(|k| k.key_id == key_id)
            .ok_or_else(|| PsdError::UnknownKey(key_id.to_string()))?;
        sign_with(&key.pair, payload)
    }
}

impl Psd for SoftwarePsd {
    fn describe(&self) -> String {
        format!("software crypto device in {}", self.dir.display())
    }

    fn auth_public_key(&self) -> Vec<u8> {
        self.auth_spki.clone()
    }

    fn sign_auth(&self, transcript: &[u8]) -> Result<[u8; 64], PsdError> {
        sign_with(&self.auth, transcript)
    }

    fn current_signing_key(&self) -> KeyId {
        // `open` refuses an empty key list, and keys are never removed.
        let keys = self.signing.read().unwrap_or_else(|e| e.into_inner());
        keys.last().map(|k| k.key_id).unwrap_or(KeyId([0; 4]))
    }

    fn sign_item(&self, key_id: KeyId, payload: &[u8]) -> Result<[u8; 64], PsdError> {
        {
            let keys = self.signing.read().map_err(|_| PsdError::Crypto)?;
            let key = keys
                .iter()
                .find(|k| k.key_id == key_id)
                .ok_or_else(|| PsdError::UnknownKey(key_id.to_string()))?;
            if key.valid_until_unix.is_some() {
                return Err(PsdError::KeyRetired(key_id.to_string()));
            }
        }
        self.sign_any(key_id, payload)
    }

    fn published_keys(&self) -> Vec<PublishedKey> {
        let keys = self.signing.read().unwrap_or_else(|e| e.into_inner());
        keys.iter()
            .map(|k| PublishedKey {
                key_id: k.key_id,
                spki_der: k.spki_der.clone(),
                valid_from_unix: k.valid_from_unix,
                valid_until_unix: k.valid_until_unix,
            })
            .collect()
    }

    fn wrap_user_key(&self, key: &[u8; 32], context: &[u8]) -> Result<Vec<u8>, PsdError> {
        let nonce = random::<12>()?;
        let mut buf = key.to_vec();
        self.wrap
            .seal_in_place_append_tag(
                aead::Nonce::assume_unique_for_key(*nonce),
                aead::Aad::from(context),
                &mut buf,
            )
            .map_err(|_| PsdError::Crypto)?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&buf);
        Ok(out)
    }

    fn unwrap_user_key(
        &self,
        wrapped: &[u8],
        context: &[u8],
    ) -> Result<Zeroizing<[u8; 32]>, PsdError> {
        if wrapped.len() != WRAPPED_KEY_LEN {
            return Err(PsdError::Unwrap);
        }
        let mut nonce = [0u8; 12];
        nonce.copy_from_slice(&wrapped[..12]);
        let mut buf = Zeroizing::new(wrapped[12..].to_vec());
        let plain = self
            .wrap
            .open_in_place(
                aead::Nonce::assume_unique_for_key(nonce),
                aead::Aad::from(context),
                &mut buf,
            )
            .map_err(|_| PsdError::Unwrap)?;
        let mut out = Zeroizing::new([0u8; 32]);
        if plain.len() != 32 {
            return Err(PsdError::Unwrap);
        }
        out.copy_from_slice(plain);
        Ok(out)
    }

    fn seal(&self, data: &[u8]) -> Result<[u8; 32], PsdError> {
        let tag = hmac::sign(&self.seal, data);
        tag.as_ref().try_into().map_err(|_| PsdError::Crypto)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_persist_across_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let a = SoftwarePsd::open(dir.path(), 1).unwrap();
        let b = SoftwarePsd::open(dir.path(), 2).unwrap();
        assert_eq!(a.auth_public_key(), b.auth_public_key());
        assert_eq!(a.current_signing_key(), b.current_signing_key());
        let w = a.wrap_user_key(&[1; 32], b"ann").unwrap();
        assert_eq!(*b.unwrap_user_key(&w, b"ann").unwrap(), [1; 32]);
    }

    #[test]
    fn item_signatures_verify_with_the_published_key_only() {
        let dir = tempfile::tempdir().unwrap();
        let psd = SoftwarePsd::open(dir.path(), 1).unwrap();
        let key = psd.current_signing_key();
        let sig = psd.sign_item(key, b"payload").unwrap();
        let published = psd.published_keys();
        assert_eq!(published.len(), 1);
        assert_eq!(published[0].key_id, key);
        assert_eq!(KeyId::of_spki(&published[0].spki_der), key);
        assert!(verify_signature(&published[0].spki_der, b"payload", &sig));
        assert!(!verify_signature(&published[0].spki_der, b"payloaD", &sig));
        assert!(!verify_signature(&psd.auth_public_key(), b"payload", &sig));
    }

    #[test]
    fn a_wrapped_key_does_not_open_under_another_context_or_when_tampered() {
        let dir = tempfile::tempdir().unwrap();
        let psd = SoftwarePsd::open(dir.path(), 1).unwrap();
        let mut w = psd.wrap_user_key(&[9; 32], b"ann").unwrap();
        assert!(psd.unwrap_user_key(&w, b"bob").is_err());
        w[20] ^= 1;
        assert!(psd.unwrap_user_key(&w, b"ann").is_err());
        assert!(psd.unwrap_user_key(&w[..10], b"ann").is_err());
    }

    #[test]
    fn a_corrupted_key_file_makes_the_device_refuse_to_open() {
        let dir = tempfile::tempdir().unwrap();
        SoftwarePsd::open(dir.path(), 1).unwrap();
        fs::write(dir.path().join("psd/auth-key.p8"), b"garbage").unwrap();
        assert!(SoftwarePsd::open(dir.path(), 1).is_err());
    }

    #[test]
    fn unknown_signing_keys_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let psd = SoftwarePsd::open(dir.path(), 1).unwrap();
        assert!(matches!(
            psd.sign_item(KeyId([1, 2, 3, 4]), b"x"),
            Err(PsdError::UnknownKey(_))
        ));
    }
}
