//! The software device's key store: one file, `DIR/psd/keystore.json`, whose secrets are sealed
//! with AES-256-GCM under a key derived from a passphrase with argon2id. The header (format, KDF
//! parameters, salt, mode) is the AEAD's associated data, so it cannot be edited either.

use argon2::{Algorithm, Argon2, Params, Version};
use aws_lc_rs::aead;
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize as _, Zeroizing};

use crate::{PsdError, random};

/// The key store file in `DIR/psd`.
pub const KEYSTORE_FILE: &str = "keystore.json";
/// Environment variable holding the passphrase.
pub const PASSPHRASE_ENV: &str = "STAMPLINE_PSD_PASSPHRASE";
/// Environment variable naming a file whose first line is the passphrase.
pub const PASSPHRASE_FILE_ENV: &str = "STAMPLINE_PSD_PASSPHRASE_FILE";
/// Shortest passphrase accepted.
pub const MIN_PASSPHRASE_CHARS: usize = 12;
/// Longest passphrase (file) read.
pub const MAX_PASSPHRASE_BYTES: usize = 1024;
/// argon2id cost (RFC 9106's second recommended option, with 64 MiB).
pub const KDF_MEMORY_KIB: u32 = 64 * 1024;
pub const KDF_PASSES: u32 = 3;
pub const KDF_LANES: u32 = 1;
/// Costs above these in a key store header are refused (a forged header must not exhaust memory).
const MAX_KDF_MEMORY_KIB: u32 = 1024 * 1024;
const MAX_KDF_PASSES: u32 = 16;

/// The development passphrase: public, so a dev-mode key store protects nothing.
const DEV_PASSPHRASE: &str = "stampline-development-mode-passphrase-NOT-SECRET";
/// What the server prints when it runs on the development passphrase.
pub const DEV_PASSPHRASE_NOTICE: &str = "DEV MODE: the software crypto device's keys are encrypted under the built-in development passphrase, which is public; set STAMPLINE_PSD_PASSPHRASE or STAMPLINE_PSD_PASSPHRASE_FILE (or use --psd pkcs11:…) for real use.";

const FORMAT: &str = "stampline-psd-keystore/1";
const AAD_CONTEXT: &[u8] = b"stampline/psd/keystore/1\0";

/// Where the software device's passphrase comes from.
pub enum Passphrase {
    /// No passphrase configured: the public development passphrase, loudly labelled.
    Dev,
    Given(Zeroizing<String>),
}

impl std::fmt::Debug for Passphrase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Passphrase::Dev => "Passphrase::Dev",
            Passphrase::Given(_) => "Passphrase::Given(…)",
        })
    }
}

impl Passphrase {
    /// From [`PASSPHRASE_ENV`] or [`PASSPHRASE_FILE_ENV`] (not both); [`Passphrase::Dev`] when
    /// neither is set.
    pub fn from_env() -> Result<Passphrase, PsdError> {
        let direct = std::env::var(PASSPHRASE_ENV).ok().map(Zeroizing::new);
        let file = std::env::var_os(PASSPHRASE_FILE_ENV);
        match (direct, file) {
            (Some(_), Some(_)) => Err(PsdError::Passphrase(format!(
                "set {PASSPHRASE_ENV} or {PASSPHRASE_FILE_ENV}, not both"
            ))),
            (Some(p), None) => Passphrase::given(p),
            (None, Some(path)) => {
                let path = std::path::PathBuf::from(path);
                let meta = std::fs::metadata(&path).map_err(|e| {
                    PsdError::Passphrase(format!("{PASSPHRASE_FILE_ENV} {}: {e}", path.display()))
                })?;
                if meta.len() > MAX_PASSPHRASE_BYTES as u64 {
                    return Err(PsdError::Passphrase(format!(
                        "{PASSPHRASE_FILE_ENV}: file is over {MAX_PASSPHRASE_BYTES} bytes"
                    )));
                }
                let text = Zeroizing::new(std::fs::read_to_string(&path).map_err(|e| {
                    PsdError::Passphrase(format!("{PASSPHRASE_FILE_ENV} {}: {e}", path.display()))
                })?);
                let line = text.lines().next().unwrap_or("");
                Passphrase::given(Zeroizing::new(line.to_owned()))
            }
            (None, None) => Ok(Passphrase::Dev),
        }
    }

    /// A passphrase given in code (tests, tools); checked for length.
    pub fn given(p: Zeroizing<String>) -> Result<Passphrase, PsdError> {
        if p.chars().count() < MIN_PASSPHRASE_CHARS || p.len() > MAX_PASSPHRASE_BYTES {
            return Err(PsdError::Passphrase(format!(
                "the crypto device passphrase must be {MIN_PASSPHRASE_CHARS} to \
                 {MAX_PASSPHRASE_BYTES} bytes long"
            )));
        }
        Ok(Passphrase::Given(p))
    }

    pub fn is_dev(&self) -> bool {
        matches!(self, Passphrase::Dev)
    }

    fn bytes(&self) -> &[u8] {
        match self {
            Passphrase::Dev => DEV_PASSPHRASE.as_bytes(),
            Passphrase::Given(p) => p.as_bytes(),
        }
    }
}

/// The secrets inside the store, hex-encoded (PKCS#8 for EC keys, raw 32 bytes otherwise).
#[derive(Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Secrets {
    pub auth_pkcs8: String,
    pub wrap_key: String,
    pub seal_key: String,
    /// Signing keys by key id.
    pub signing: std::collections::BTreeMap<String, String>,
}

impl Drop for Secrets {
    fn drop(&mut self) {
        self.auth_pkcs8.zeroize();
        self.wrap_key.zeroize();
        self.seal_key.zeroize();
        for v in self.signing.values_mut() {
            v.zeroize();
        }
    }
}

#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
struct Header {
    format: String,
    kdf: String,
    memory_kib: u32,
    passes: u32,
    lanes: u32,
    salt: String,
    /// True when sealed under the public development passphrase.
    dev_mode: bool,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoreFile {
    header: Header,
    nonce: String,
    ciphertext: String,
}

fn derive(pass: &Passphrase, h: &Header) -> Result<aead::LessSafeKey, PsdError> {
    if h.memory_kib > MAX_KDF_MEMORY_KIB || h.passes > MAX_KDF_PASSES || h.lanes == 0 {
        return Err(PsdError::BadKey(
            "key store KDF parameters out of range".into(),
        ));
    }
    let salt = hex::decode(&h.salt).map_err(|_| PsdError::BadKey("key store salt".into()))?;
    let params = Params::new(h.memory_kib, h.passes, h.lanes, Some(32))
        .map_err(|e| PsdError::BadKey(format!("key store KDF parameters: {e}")))?;
    let mut key = Zeroizing::new([0u8; 32]);
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password_into(pass.bytes(), &salt, &mut key[..])
        .map_err(|e| PsdError::BadKey(format!("key store KDF: {e}")))?;
    let unbound =
        aead::UnboundKey::new(&aead::AES_256_GCM, &key[..]).map_err(|_| PsdError::Crypto)?;
    Ok(aead::LessSafeKey::new(unbound))
}

fn aad(h: &Header) -> Result<Vec<u8>, PsdError> {
    let mut out = AAD_CONTEXT.to_vec();
    out.extend(serde_json::to_vec(h).map_err(|e| PsdError::BadKey(e.to_string()))?);
    Ok(out)
}

/// Seal `secrets` under `pass` into the bytes of a key store file.
pub(crate) fn seal(secrets: &Secrets, pass: &Passphrase) -> Result<Vec<u8>, PsdError> {
    let header = Header {
        format: FORMAT.into(),
        kdf: "argon2id".into(),
        memory_kib: KDF_MEMORY_KIB,
        passes: KDF_PASSES,
        lanes: KDF_LANES,
        salt: hex::encode(*random::<16>()?),
        dev_mode: pass.is_dev(),
    };
    let key = derive(pass, &header)?;
    let nonce = random::<12>()?;
    let mut buf =
        Zeroizing::new(serde_json::to_vec(secrets).map_err(|e| PsdError::BadKey(e.to_string()))?);
    key.seal_in_place_append_tag(
        aead::Nonce::assume_unique_for_key(*nonce),
        aead::Aad::from(aad(&header)?),
        &mut *buf,
    )
    .map_err(|_| PsdError::Crypto)?;
    let file = StoreFile {
        header,
        nonce: hex::encode(*nonce),
        ciphertext: hex::encode(&*buf),
    };
    serde_json::to_vec_pretty(&file).map_err(|e| PsdError::BadKey(e.to_string()))
}

/// Whether a key store was sealed under the development passphrase.
pub(crate) fn is_dev_mode(bytes: &[u8]) -> Result<bool, PsdError> {
    let file: StoreFile = serde_json::from_slice(bytes)
        .map_err(|e| PsdError::BadKey(format!("key store does not parse: {e}")))?;
    Ok(file.header.dev_mode)
}

/// Open a key store with `pass`. A store made under a real passphrase refuses the development
/// one with a message that says what to set.
pub(crate) fn open(bytes: &[u8], pass: &Passphrase) -> Result<Secrets, PsdError> {
    let file: StoreFile = serde_json::from_slice(bytes)
        .map_err(|e| PsdError::BadKey(format!("key store does not parse: {e}")))?;
    if file.header.format != FORMAT || file.header.kdf != "argon2id" {
        return Err(PsdError::BadKey(format!(
            "key store format {:?} is not {FORMAT}",
            file.header.format
        )));
    }
    if !file.header.dev_mode && pass.is_dev() {
        return Err(PsdError::Passphrase(format!(
            "the software crypto device's keys are encrypted under a passphrase; set \
             {PASSPHRASE_ENV} or {PASSPHRASE_FILE_ENV}"
        )));
    }
    let key = derive(pass, &file.header)?;
    let mut nonce = [0u8; 12];
    hex::decode_to_slice(&file.nonce, &mut nonce)
        .map_err(|_| PsdError::BadKey("key store nonce".into()))?;
    let mut buf = Zeroizing::new(
        hex::decode(&file.ciphertext)
            .map_err(|_| PsdError::BadKey("key store ciphertext".into()))?,
    );
    let plain = key
        .open_in_place(
            aead::Nonce::assume_unique_for_key(nonce),
            aead::Aad::from(aad(&file.header)?),
            &mut buf,
        )
        .map_err(|_| {
            PsdError::Passphrase(if file.header.dev_mode {
                "the software crypto device's key store does not open under the development \
                 passphrase (damaged or altered)"
                    .to_owned()
            } else {
                format!(
                    "wrong passphrase for the software crypto device (from {PASSPHRASE_ENV} or \
                     {PASSPHRASE_FILE_ENV}), or the key store was altered"
                )
            })
        })?;
    serde_json::from_slice(plain).map_err(|e| PsdError::BadKey(format!("key store contents: {e}")))
}
