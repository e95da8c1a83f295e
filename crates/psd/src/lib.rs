//! The postal security device (PSD): the only holder of private keys.
//!
//! It signs printed items and the link's auth challenge (ECDSA P-256 / SHA-256, 64-byte r||s),
//! wraps and unwraps users' link keys and other secrets (AES-256-GCM) and seals meter registers
//! (HMAC-SHA256). Callers get signatures, wrapped blobs and public keys — never a private key.
//!
//! [`Psd`] is the seam; two devices implement it:
//! - [`SoftwarePsd`] keeps its keys in one file in the data dir, encrypted under a key derived
//!   from a passphrase with argon2id ([`Passphrase`]); without a passphrase it runs in a clearly
//!   labelled development mode.
//! - [`Pkcs11Psd`] keeps every key inside a PKCS#11 token (an HSM; SoftHSM2 in tests): generated
//!   there, sensitive and never extractable.
//!
//! Both keep the public record of their item-signing keys ([`keyring`]: validity, retirement,
//! revocation) in `DIR/psd/signing-keys.json`, MACed by the device. Both run a known-answer
//! self-test when opened and refuse to open when it fails. This crate never logs a secret and
//! never writes a private key in the clear.

pub mod keyring;
mod keystore;
mod pkcs11;
mod software;
mod spec;
#[cfg(feature = "testkit")]
pub mod testkit;

use aws_lc_rs::signature;
use stampline_items::KeyId;
use zeroize::Zeroizing;

pub use keyring::{KeyRecord, RETIRED_KEY_VALIDITY_SECS};
pub use keystore::{
    DEV_PASSPHRASE_NOTICE, KEYSTORE_FILE, MIN_PASSPHRASE_CHARS, PASSPHRASE_ENV,
    PASSPHRASE_FILE_ENV, Passphrase,
};
pub use pkcs11::{KeyAttributes, PKCS11_SESSIONS, Pkcs11Config, Pkcs11Psd};
pub use software::SoftwarePsd;
pub use spec::{OpenedDevice, PsdSpec, open_device};

/// Length of a wrapped user key: 12-byte nonce, 32-byte key, 16-byte tag.
pub const WRAPPED_KEY_LEN: usize = 12 + 32 + 16;
/// Largest secret [`Psd::wrap_secret`] takes (a TLS private key is ≈ 140 bytes).
pub const MAX_WRAPPED_SECRET_BYTES: usize = 4096;
/// Longest revocation reason, in bytes.
pub const MAX_REASON_BYTES: usize = 200;

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
    #[error("signing key {0} is the current key; rotate first, then revoke it")]
    KeyIsCurrent(String),
    #[error("wrapped key does not open (wrong device or tampered)")]
    Unwrap,
    #[error("crypto device self-test failed: {0}")]
    SelfTest(String),
    #[error("crypto operation failed")]
    Crypto,
    /// The software device's passphrase is missing, too short or does not open the key store.
    #[error("{0}")]
    Passphrase(String),
    /// A bad `--psd` value or a device that cannot be reached (module, token, PIN).
    #[error("{0}")]
    Config(String),
    /// The PKCS#11 token refused an operation.
    #[error("PKCS#11 token: {0}")]
    Token(String),
    #[error("{0}")]
    BadInput(String),
}

impl PsdError {
    /// A snake_case code for callers that report errors on the wire or the CLI.
    pub fn code(&self) -> &'static str {
        match self {
            PsdError::UnknownKey(_) => "unknown_key",
            PsdError::KeyIsCurrent(_) => "key_current",
            PsdError::KeyRetired(_) => "key_retired",
            PsdError::BadInput(_) => "bad_request",
            PsdError::Passphrase(_) => "psd_passphrase",
            PsdError::Config(_) => "psd_config",
            _ => "psd_failed",
        }
    }
}

/// A public signing key as published at `GET /v1/keys`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublishedKey {
    pub key_id: KeyId,
    pub spki_der: Vec<u8>,
    /// When the key began signing.
    pub valid_from_unix: i64,
    /// Until when items it signed are accepted; `None` while it is the current key.
    pub valid_until_unix: Option<i64>,
    /// When it stopped signing (a rotation); `None` while current.
    pub retired_at_unix: Option<i64>,
    /// When it was revoked; items it signed are invalid from then on.
    pub revoked_at_unix: Option<i64>,
    pub revocation_reason: Option<String>,
}

impl PublishedKey {
    /// `current`, `retired` or `revoked`.
    pub fn status(&self) -> &'static str {
        if self.revoked_at_unix.is_some() {
            "revoked"
        } else if self.retired_at_unix.is_some() {
            "retired"
        } else {
            "current"
        }
    }
}

/// The outcome of a rotation: the new current key and the one it replaced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rotation {
    pub new_key: PublishedKey,
    pub old_key: PublishedKey,
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
    /// Sign an item's payload with the named signing key, which must be the current one.
    fn sign_item(&self, key_id: KeyId, payload: &[u8]) -> Result<[u8; 64], PsdError>;
    /// Every item-signing key, for verifiers (the auth key is not listed).
    fn published_keys(&self) -> Vec<PublishedKey>;
    /// Make a new signing key inside the device; it becomes current, and the previous current key
    /// stops signing (its items stay valid for [`RETIRED_KEY_VALIDITY_SECS`]).
    fn rotate_signing_key(&self, now_unix: i64) -> Result<Rotation, PsdError>;
    /// Revoke a signing key that is not the current one: items it signed are invalid from now on.
    /// Revoking a revoked key changes nothing and returns its record.
    fn revoke_signing_key(
        &self,
        key_id: KeyId,
        now_unix: i64,
        reason: &str,
    ) -> Result<PublishedKey, PsdError>;
    /// Encrypt a secret (up to [`MAX_WRAPPED_SECRET_BYTES`]) under the device's wrapping key;
    /// `context` binds it to its use. Output: 12-byte nonce || ciphertext || 16-byte tag.
    fn wrap_secret(&self, secret: &[u8], context: &[u8]) -> Result<Vec<u8>, PsdError>;
    /// Undo [`Psd::wrap_secret`] with the same context.
    fn unwrap_secret(&self, wrapped: &[u8], context: &[u8])
    -> Result<Zeroizing<Vec<u8>>, PsdError>;
    /// A MAC over meter register state, so edits behind the server's back show.
    fn seal(&self, data: &[u8]) -> Result<[u8; 32], PsdError>;

    /// Wrap a user's 32-byte link key; `context` binds it to its owner.
    fn wrap_user_key(&self, key: &[u8; 32], context: &[u8]) -> Result<Vec<u8>, PsdError> {
        self.wrap_secret(key, context)
    }
    /// Unwrap what [`Psd::wrap_user_key`] made, with the same context.
    fn unwrap_user_key(
        &self,
        wrapped: &[u8],
        context: &[u8],
    ) -> Result<Zeroizing<[u8; 32]>, PsdError> {
        if wrapped.len() != WRAPPED_KEY_LEN {
            return Err(PsdError::Unwrap);
        }
        let plain = self.unwrap_secret(wrapped, context)?;
        let mut out = Zeroizing::new([0u8; 32]);
        if plain.len() != 32 {
            return Err(PsdError::Unwrap);
        }
        out.copy_from_slice(&plain);
        Ok(out)
    }
}

/// Verify an ECDSA P-256/SHA-256 64-byte signature with an SPKI DER public key.
pub fn verify_signature(spki_der: &[u8], message: &[u8], sig: &[u8; 64]) -> bool {
    signature::UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, spki_der)
        .verify(message, sig)
        .is_ok()
}

/// The known-answer self-test both devices run when opened: the auth key and every signing key
/// sign a fixed message and the signature verifies with the public key; a secret wraps, unwraps,
/// and does not unwrap under another context; the seal of a fixed message is stable and differs
/// for another message.
pub fn self_test(psd: &dyn Psd) -> Result<(), PsdError> {
    let msg = b"stampline/psd/self-test";
    let sig = psd.sign_auth(msg)?;
    if !verify_signature(&psd.auth_public_key(), msg, &sig) {
        return Err(PsdError::SelfTest("auth signature does not verify".into()));
    }
    let current = psd.current_signing_key();
    let mut saw_current = false;
    for key in psd.published_keys() {
        if key.key_id == current {
            saw_current = true;
            let sig = psd.sign_item(key.key_id, msg)?;
            if !verify_signature(&key.spki_der, msg, &sig) {
                return Err(PsdError::SelfTest(format!(
                    "key {} does not verify",
                    key.key_id
                )));
            }
        }
        if KeyId::of_spki(&key.spki_der) != key.key_id {
            return Err(PsdError::SelfTest(format!(
                "key {} does not match its public key",
                key.key_id
            )));
        }
    }
    if !saw_current {
        return Err(PsdError::SelfTest("no current signing key".into()));
    }
    let k = [0x5au8; 32];
    let w = psd.wrap_user_key(&k, b"self-test")?;
    if *psd.unwrap_user_key(&w, b"self-test")? != k || psd.unwrap_user_key(&w, b"other").is_ok() {
        return Err(PsdError::SelfTest("key wrapping".into()));
    }
    let a = psd.seal(msg)?;
    if a != psd.seal(msg)? || a == psd.seal(b"stampline/psd/self-test!")? {
        return Err(PsdError::SelfTest("register seal".into()));
    }
    Ok(())
}

/// The fixed DER prefix of a P-256 SubjectPublicKeyInfo (id-ecPublicKey, prime256v1, a BIT STRING
/// of 66 bytes); the 65-byte uncompressed point follows.
const P256_SPKI_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];

/// SPKI DER of a P-256 public key from its 65-byte uncompressed point.
pub(crate) fn p256_spki(point: &[u8]) -> Result<Vec<u8>, PsdError> {
    if point.len() != 65 || point[0] != 0x04 {
        return Err(PsdError::BadKey(
            "EC point is not an uncompressed P-256 point".into(),
        ));
    }
    let mut out = P256_SPKI_PREFIX.to_vec();
    out.extend_from_slice(point);
    Ok(out)
}

/// Refuse a secret too large to wrap (both devices wrap at most [`MAX_WRAPPED_SECRET_BYTES`]).
pub(crate) fn check_wrappable(secret: &[u8]) -> Result<(), PsdError> {
    if secret.len() > MAX_WRAPPED_SECRET_BYTES {
        return Err(PsdError::BadInput("secret too large to wrap".into()));
    }
    Ok(())
}

/// A wrapped secret as both devices lay it out: the 12-byte AES-GCM nonce, then the ciphertext
/// and its 16-byte tag. Refused when its length cannot be one a device made.
pub(crate) fn split_wrapped(wrapped: &[u8]) -> Result<([u8; 12], &[u8]), PsdError> {
    if wrapped.len() < 12 + 16 || wrapped.len() > 12 + MAX_WRAPPED_SECRET_BYTES + 16 {
        return Err(PsdError::Unwrap);
    }
    let mut nonce = [0u8; 12];
    nonce.copy_from_slice(&wrapped[..12]);
    Ok((nonce, &wrapped[12..]))
}

/// Random bytes from the system's generator.
pub(crate) fn random<const N: usize>() -> Result<Zeroizing<[u8; N]>, PsdError> {
    let mut out = Zeroizing::new([0u8; N]);
    aws_lc_rs::rand::fill(&mut out[..]).map_err(|_| PsdError::Crypto)?;
    Ok(out)
}

/// Write a file readable by the owner only: temp file, fsync, rename, fsync the directory.
pub(crate) fn write_private(path: &std::path::Path, bytes: &[u8]) -> Result<(), PsdError> {
    use std::io::Write as _;
    let tmp = path.with_extension("tmp");
    // A temporary file left by a crash would keep its mode if reopened: start afresh.
    match std::fs::remove_file(&tmp) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
        _ => {}
    }
    {
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt as _;
            opts.mode(0o600);
        }
        let mut f = opts.open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Some(parent) = path.parent() {
        std::fs::File::open(parent)?.sync_all()?;
    }
    Ok(())
}

/// Create `DIR/psd` with mode 0700.
pub(crate) fn psd_dir(data_dir: &std::path::Path) -> Result<std::path::PathBuf, PsdError> {
    let dir = data_dir.join("psd");
    std::fs::create_dir_all(&dir)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(dir)
}
