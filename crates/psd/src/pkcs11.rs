//! The PKCS#11 crypto device: every key is generated inside the token, sensitive and never
//! extractable, and used there (ECDSA P-256 signing, AES-256-GCM wrapping, HMAC-SHA256 seals).
//!
//! Portable choices (SoftHSM2 is the test token): the token is found by its label (slot ids change
//! when tokens are initialised); items are hashed with SHA-256 here and the digest is signed with
//! `CKM_ECDSA` (SoftHSM2 has no `CKM_ECDSA_SHA256`), giving 64-byte r||s; `CKA_EC_POINT` comes
//! DER-wrapped in an OCTET STRING. Objects are found by label: `stampline-auth`, `stampline-wrap`,
//! `stampline-seal`, `stampline-sign-KEYID`. One token serves one installation.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, RwLock};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::object::{Attribute, AttributeType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::types::AuthPin;
use stampline_items::KeyId;
use zeroize::Zeroizing;

use crate::keyring::{HoldsIndex, KeyIndex, KeyRecord, change_index};
use crate::{
    Psd, PsdError, PublishedKey, Rotation, check_wrappable, psd_dir, random, split_wrapped,
};

/// Sessions kept open with the token; signing requests share them round-robin.
pub const PKCS11_SESSIONS: usize = 4;
/// DER of the prime256v1 OID, as `CKA_EC_PARAMS` wants it.
const P256_PARAMS: [u8; 10] = [0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
const AUTH_LABEL: &str = "stampline-auth";
const WRAP_LABEL: &str = "stampline-wrap";
const SEAL_LABEL: &str = "stampline-seal";
const SIGN_PREFIX: &str = "stampline-sign-";
const NEW_SIGN_LABEL: &str = "stampline-sign-new";

/// How to reach the token.
pub struct Pkcs11Config {
    /// The PKCS#11 module (shared library), e.g. `/usr/lib/softhsm/libsofthsm2.so`.
    pub module: PathBuf,
    /// The token's label.
    pub token: String,
    /// The user PIN.
    pub pin: Zeroizing<String>,
}

impl std::fmt::Debug for Pkcs11Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pkcs11Config")
            .field("module", &self.module)
            .field("token", &self.token)
            .finish_non_exhaustive()
    }
}

/// A key's protection attributes as the token reports them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyAttributes {
    pub label: String,
    pub class: String,
    pub sensitive: bool,
    pub extractable: bool,
    pub always_sensitive: bool,
    pub never_extractable: bool,
    /// Generated on the token (`CKA_LOCAL`).
    pub local: bool,
    /// Whether reading `CKA_VALUE` returned anything (it must not).
    pub value_readable: bool,
}

struct State {
    index: KeyIndex,
    handles: HashMap<KeyId, ObjectHandle>,
}

impl HoldsIndex for State {
    fn index(&self) -> &KeyIndex {
        &self.index
    }
    fn index_mut(&mut self) -> &mut KeyIndex {
        &mut self.index
    }
}

/// The PKCS#11 device.
pub struct Pkcs11Psd {
    // Sessions first: they close before the library is unloaded.
    sessions: Vec<Mutex<Session>>,
    _ctx: Pkcs11,
    next: AtomicUsize,
    token: String,
    dir: PathBuf,
    auth: ObjectHandle,
    auth_spki: Vec<u8>,
    wrap: ObjectHandle,
    seal_key: ObjectHandle,
    state: RwLock<State>,
    admin: Mutex<()>,
}

impl std::fmt::Debug for Pkcs11Psd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pkcs11Psd")
            .field("token", &self.token)
            .finish_non_exhaustive()
    }
}

fn token_err(what: &str) -> impl Fn(CkError) -> PsdError + '_ {
    move |e| PsdError::Token(format!("{what}: {e}"))
}

fn label_of(text: &str) -> Attribute {
    Attribute::Label(text.as_bytes().to_vec())
}

fn find_one(
    s: &Session,
    class: ObjectClass,
    label: &str,
) -> Result<Option<ObjectHandle>, PsdError> {
    let found = s
        .find_objects(&[Attribute::Class(class), label_of(label)])
        .map_err(token_err("find objects"))?;
    match found.as_slice() {
        [] => Ok(None),
        [one] => Ok(Some(*one)),
        _ => Err(PsdError::Token(format!(
            "{} objects labelled {label} on the token",
            found.len()
        ))),
    }
}

/// The 65-byte uncompressed point from `CKA_EC_POINT` (DER OCTET STRING, or raw from some tokens).
fn ec_point(s: &Session, public: ObjectHandle) -> Result<Vec<u8>, PsdError> {
    let attrs = s
        .get_attributes(public, &[AttributeType::EcPoint])
        .map_err(token_err("read EC point"))?;
    let Some(Attribute::EcPoint(raw)) = attrs.into_iter().next() else {
        return Err(PsdError::Token("public key has no EC point".into()));
    };
    match raw.as_slice() {
        [0x04, 0x41, rest @ ..] if rest.len() == 65 => Ok(rest.to_vec()),
        point if point.len() == 65 => Ok(point.to_vec()),
        _ => Err(PsdError::Token("EC point is not a P-256 point".into())),
    }
}

/// Generate an EC P-256 pair on the token; returns (public, private) handles.
fn generate_ec_pair(s: &Session, label: &str) -> Result<(ObjectHandle, ObjectHandle), PsdError> {
    let id = label.as_bytes().to_vec();
    let public = [
        Attribute::Token(true),
        Attribute::Private(false),
        Attribute::Verify(true),
        Attribute::EcParams(P256_PARAMS.to_vec()),
        label_of(label),
        Attribute::Id(id.clone()),
    ];
    let private = [
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Sign(true),
        label_of(label),
        Attribute::Id(id),
    ];
    s.generate_key_pair(&Mechanism::EccKeyPairGen, &public, &private)
        .map_err(token_err("generate EC key pair"))
}

fn generate_secret(s: &Session, label: &str, aes: bool) -> Result<ObjectHandle, PsdError> {
    let mut t = vec![
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::ValueLen(32u64.into()),
        label_of(label),
    ];
    // Each key may do its one job only.
    t.extend([
        Attribute::Encrypt(aes),
        Attribute::Decrypt(aes),
        Attribute::Sign(!aes),
        Attribute::Verify(!aes),
        Attribute::Wrap(false),
        Attribute::Unwrap(false),
        Attribute::Derive(false),
    ]);
    let mechanism = if aes {
        Mechanism::AesKeyGen
    } else {
        Mechanism::GenericSecretKeyGen
    };
    s.generate_key(&mechanism, &t)
        .map_err(token_err("generate secret key"))
}

/// The auth key pair: found, or generated. Returns the private handle and the SPKI.
fn auth_pair(s: &Session) -> Result<(ObjectHandle, Vec<u8>), PsdError> {
    let private = find_one(s, ObjectClass::PRIVATE_KEY, AUTH_LABEL)?;
    let public = find_one(s, ObjectClass::PUBLIC_KEY, AUTH_LABEL)?;
    let (public, private) = match (public, private) {
        (Some(p), Some(k)) => (p, k),
        (None, None) => generate_ec_pair(s, AUTH_LABEL)?,
        _ => {
            return Err(PsdError::Token(
                "auth key pair is incomplete on the token".into(),
            ));
        }
    };
    Ok((private, crate::p256_spki(&ec_point(s, public)?)?))
}

fn secret(s: &Session, label: &str, aes: bool) -> Result<ObjectHandle, PsdError> {
    match find_one(s, ObjectClass::SECRET_KEY, label)? {
        Some(h) => Ok(h),
        None => generate_secret(s, label, aes),
    }
}

/// Generate a signing key pair, label it by its key id, return (key id, SPKI, private handle).
fn new_signing_key(s: &Session) -> Result<(KeyId, Vec<u8>, ObjectHandle), PsdError> {
    let (public, private) = generate_ec_pair(s, NEW_SIGN_LABEL)?;
    let spki = crate::p256_spki(&ec_point(s, public)?)?;
    let id = KeyId::of_spki(&spki);
    let label = format!("{SIGN_PREFIX}{id}");
    for h in [public, private] {
        s.update_attributes(h, &[label_of(&label), Attribute::Id(id.0.to_vec())])
            .map_err(token_err("label signing key"))?;
    }
    Ok((id, spki, private))
}

impl Pkcs11Psd {
    /// Load the module, find the token by label, log in, find or create the keys, load the key
    /// index from `data_dir/psd`, and run the known-answer self-test.
    pub fn open(data_dir: &Path, cfg: &Pkcs11Config, now_unix: i64) -> Result<Pkcs11Psd, PsdError> {
        let ctx = Pkcs11::new(&cfg.module).map_err(|e| {
            PsdError::Config(format!(
                "cannot load the PKCS#11 module {}: {e}",
                cfg.module.display()
            ))
        })?;
        match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
            Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
            Err(e) => return Err(PsdError::Config(format!("PKCS#11 initialise: {e}"))),
        }
        let mut slot = None;
        for s in ctx
            .get_slots_with_initialized_token()
            .map_err(token_err("list slots"))?
        {
            let info = ctx.get_token_info(s).map_err(token_err("token info"))?;
            if info.label().trim_end() == cfg.token {
                slot = Some(s);
                break;
            }
        }
        let slot = slot.ok_or_else(|| {
            PsdError::Config(format!(
                "no initialised PKCS#11 token labelled {:?} in {}",
                cfg.token,
                cfg.module.display()
            ))
        })?;
        let mut sessions = Vec::with_capacity(PKCS11_SESSIONS);
        for _ in 0..PKCS11_SESSIONS {
            sessions.push(
                ctx.open_rw_session(slot)
                    .map_err(token_err("open session"))?,
            );
        }
        let pin = AuthPin::from(cfg.pin.as_str());
        match sessions[0].login(UserType::User, Some(&pin)) {
            Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
            Err(CkError::Pkcs11(
                RvError::PinIncorrect | RvError::PinInvalid | RvError::PinLenRange,
                _,
            )) => {
                return Err(PsdError::Config(format!(
                    "the PIN for PKCS#11 token {:?} is wrong",
                    cfg.token
                )));
            }
            Err(e) => return Err(PsdError::Config(format!("PKCS#11 login: {e}"))),
        }
        let s = &sessions[0];
        let (auth, auth_spki) = auth_pair(s)?;
        let wrap = secret(s, WRAP_LABEL, true)?;
        let seal_key = secret(s, SEAL_LABEL, false)?;
        let dir = psd_dir(data_dir)?;
        let device = format!("pkcs11:{}", cfg.token);
        let seal = |d: &[u8]| hmac_on(s, seal_key, d);
        let index = match KeyIndex::load(&dir, &device, seal)? {
            Some(index) => index,
            None => {
                if dir.join(crate::KEYSTORE_FILE).exists() {
                    return Err(PsdError::Config(
                        "this data dir's keys belong to the software crypto device; a PKCS#11 \
                         device needs its own data dir"
                            .into(),
                    ));
                }
                let (id, spki, _) = new_signing_key(s)?;
                let index = KeyIndex::new(&device, KeyRecord::new(id, &spki, now_unix));
                index.save(&dir, seal)?;
                index
            }
        };
        let mut handles = HashMap::new();
        for record in &index.keys {
            let label = format!("{SIGN_PREFIX}{}", record.key_id);
            let h = find_one(s, ObjectClass::PRIVATE_KEY, &label)?.ok_or_else(|| {
                PsdError::BadKey(format!("signing key {} is not on the token", record.key_id))
            })?;
            let public = find_one(s, ObjectClass::PUBLIC_KEY, &label)?.ok_or_else(|| {
                PsdError::BadKey(format!("public key {} is not on the token", record.key_id))
            })?;
            if hex::encode(crate::p256_spki(&ec_point(s, public)?)?) != record.spki_der_hex {
                return Err(PsdError::BadKey(format!(
                    "signing key {} on the token does not match its record",
                    record.key_id
                )));
            }
            let id: KeyId = record
                .key_id
                .parse()
                .map_err(|_| PsdError::BadKey(format!("bad key id {}", record.key_id)))?;
            handles.insert(id, h);
        }
        let psd = Pkcs11Psd {
            sessions: sessions.into_iter().map(Mutex::new).collect(),
            _ctx: ctx,
            next: AtomicUsize::new(0),
            token: cfg.token.clone(),
            dir,
            auth,
            auth_spki,
            wrap,
            seal_key,
            state: RwLock::new(State { index, handles }),
            admin: Mutex::new(()),
        };
        crate::self_test(&psd)?;
        Ok(psd)
    }

    fn with_session<T>(
        &self,
        f: impl FnOnce(&Session) -> Result<T, PsdError>,
    ) -> Result<T, PsdError> {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.sessions.len();
        let session = self.sessions[i].lock().map_err(|_| PsdError::Crypto)?;
        f(&session)
    }

    fn sign_digest(&self, key: ObjectHandle, message: &[u8]) -> Result<[u8; 64], PsdError> {
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, message);
        let sig = self.with_session(|s| {
            s.sign(&Mechanism::Ecdsa, key, digest.as_ref())
                .map_err(token_err("sign"))
        })?;
        sig.as_slice()
            .try_into()
            .map_err(|_| PsdError::Token("signature is not 64 bytes".into()))
    }

    /// The protection attributes of every Stampline key on the token, read through PKCS#11.
    pub fn key_attributes(&self) -> Result<Vec<KeyAttributes>, PsdError> {
        self.with_session(|s| {
            let mut out = Vec::new();
            for class in [ObjectClass::PRIVATE_KEY, ObjectClass::SECRET_KEY] {
                for h in s
                    .find_objects(&[Attribute::Class(class)])
                    .map_err(token_err("find objects"))?
                {
                    let attrs = s
                        .get_attributes(
                            h,
                            &[
                                AttributeType::Label,
                                AttributeType::Sensitive,
                                AttributeType::Extractable,
                                AttributeType::AlwaysSensitive,
                                AttributeType::NeverExtractable,
                                AttributeType::Local,
                            ],
                        )
                        .map_err(token_err("read attributes"))?;
                    let mut a = KeyAttributes {
                        label: String::new(),
                        class: if class == ObjectClass::PRIVATE_KEY {
                            "private"
                        } else {
                            "secret"
                        }
                        .into(),
                        sensitive: false,
                        extractable: true,
                        always_sensitive: false,
                        never_extractable: false,
                        local: false,
                        value_readable: false,
                    };
                    for attr in attrs {
                        match attr {
                            Attribute::Label(l) => a.label = String::from_utf8_lossy(&l).into(),
                            Attribute::Sensitive(v) => a.sensitive = v,
                            Attribute::Extractable(v) => a.extractable = v,
                            Attribute::AlwaysSensitive(v) => a.always_sensitive = v,
                            Attribute::NeverExtractable(v) => a.never_extractable = v,
                            Attribute::Local(v) => a.local = v,
                            _ => {}
                        }
                    }
                    if !a.label.starts_with("stampline-") {
                        continue;
                    }
                    let value = s
                        .get_attributes(h, &[AttributeType::Value, AttributeType::PrivateExponent]);
                    a.value_readable = value.is_ok_and(|v| !v.is_empty());
                    out.push(a);
                }
            }
            Ok(out)
        })
    }
}

fn hmac_on(s: &Session, key: ObjectHandle, data: &[u8]) -> Result<[u8; 32], PsdError> {
    let tag = s
        .sign(&Mechanism::Sha256Hmac, key, data)
        .map_err(token_err("HMAC"))?;
    tag.as_slice()
        .try_into()
        .map_err(|_| PsdError::Token("HMAC is not 32 bytes".into()))
}

impl Psd for Pkcs11Psd {
    fn describe(&self) -> String {
        format!("PKCS#11 crypto device, token {:?}", self.token)
    }

    fn auth_public_key(&self) -> Vec<u8> {
        self.auth_spki.clone()
    }

    fn sign_auth(&self, transcript: &[u8]) -> Result<[u8; 64], PsdError> {
        self.sign_digest(self.auth, transcript)
    }

    fn current_signing_key(&self) -> KeyId {
        let state = self.state.read().unwrap_or_else(|e| e.into_inner());
        state.index.current_id().unwrap_or(KeyId([0; 4]))
    }

    fn sign_item(&self, key_id: KeyId, payload: &[u8]) -> Result<[u8; 64], PsdError> {
        let handle = {
            let state = self.state.read().map_err(|_| PsdError::Crypto)?;
            state.index.check_signing(key_id)?;
            *state
                .handles
                .get(&key_id)
                .ok_or_else(|| PsdError::UnknownKey(key_id.to_string()))?
        };
        self.sign_digest(handle, payload)
    }

    fn published_keys(&self) -> Vec<PublishedKey> {
        let state = self.state.read().unwrap_or_else(|e| e.into_inner());
        state.index.published()
    }

    fn rotate_signing_key(&self, now_unix: i64) -> Result<Rotation, PsdError> {
        let _admin = self.admin.lock().map_err(|_| PsdError::Crypto)?;
        let (id, spki, handle) = self.with_session(new_signing_key)?;
        let (rotation, mut state) = change_index(
            &self.state,
            &self.dir,
            |d| self.seal(d),
            |i| i.rotate(KeyRecord::new(id, &spki, now_unix), now_unix),
        )?;
        state.handles.insert(id, handle);
        Ok(rotation)
    }

    fn revoke_signing_key(
        &self,
        key_id: KeyId,
        now_unix: i64,
        reason: &str,
    ) -> Result<PublishedKey, PsdError> {
        let _admin = self.admin.lock().map_err(|_| PsdError::Crypto)?;
        let (key, _state) = change_index(
            &self.state,
            &self.dir,
            |d| self.seal(d),
            |i| i.revoke(key_id, now_unix, reason),
        )?;
        Ok(key)
    }

    fn wrap_secret(&self, secret: &[u8], context: &[u8]) -> Result<Vec<u8>, PsdError> {
        check_wrappable(secret)?;
        let mut nonce = *random::<12>()?;
        let ct = self.with_session(|s| {
            let params = GcmParams::new(&mut nonce, context, 128u64.into())
                .map_err(token_err("GCM parameters"))?;
            s.encrypt(&Mechanism::AesGcm(params), self.wrap, secret)
                .map_err(token_err("wrap"))
        })?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&ct);
        Ok(out)
    }

    fn unwrap_secret(
        &self,
        wrapped: &[u8],
        context: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, PsdError> {
        let (mut nonce, sealed) = split_wrapped(wrapped)?;
        self.with_session(|s| {
            let params =
                GcmParams::new(&mut nonce, context, 128u64.into()).map_err(|_| PsdError::Unwrap)?;
            s.decrypt(&Mechanism::AesGcm(params), self.wrap, sealed)
                .map(Zeroizing::new)
                .map_err(|_| PsdError::Unwrap)
        })
    }

    fn seal(&self, data: &[u8]) -> Result<[u8; 32], PsdError> {
        self.with_session(|s| hmac_on(s, self.seal_key, data))
    }
}
