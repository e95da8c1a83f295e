//! The private tier: registration, login checks, and every op that touches money or keys.
//!
//! The public tier (gateway, link sessions) calls it only through [`Core`]'s methods, which take
//! and return plain data, so the two can later run as two processes with a channel between them.
//! It owns the ledger, the crypto device, CMLS and the bank; it never sees a TLS connection.

use std::sync::Arc;

use argon2::{Algorithm, Argon2, Params, PasswordHasher as _, PasswordVerifier as _, Version};
use base64::Engine as _;
use serde::Deserialize;
use serde_json::json;
use stampline_items::{
    DeliveryPoint, DeviceId, INDICIUM_VERSION, Item, ItemDate, PostageIndicium, RateCategory,
    SOFTWARE_ID, Serial, Zip5,
};
use stampline_ledger::{
    FundInput, FundOutcome, IssueInput, IssueOutcome, ItemStatus, LedgerError, NewUser, PieceState,
    Queued, RequestKey, Role, SignedItem, Store, UserId,
};
use stampline_money::Amount;
use stampline_psd::{Psd, PublishedKey};
use stampline_sandbox::{Bank, BankError, Cmls, CmlsError, DEVICE_MODEL, LicenseApplication};
use stampline_wire::{
    MAX_PASSWORD_BYTES, MAX_USER_BYTES, MIN_PASSWORD_CHARS, Op, PrintPolicy, Request, Response,
    Secret, codes, normalize_user, request_fingerprint, user_key,
};
use uuid::Uuid;
use zeroize::Zeroizing;

use crate::clock::now_ms;

pub mod admin;
mod funding;
pub use funding::{Difference, ReconcileReport, SettlementReport};

/// The largest single funding, in mills ($5,000).
pub const MAX_FUND_MILLS: u64 = 5_000_000;
/// The largest postage the indicium's 3-byte field holds, in mills ($16,777.215).
pub const MAX_POSTAGE_MILLS: u64 = 16_777_215;
/// Most history entries one request returns.
pub const MAX_HISTORY: u32 = 100;
/// How far ahead a date of mailing may be, in days.
pub const MAX_MAIL_DATE_AHEAD_DAYS: i64 = 30;
/// Longest name, address or city at registration.
pub const MAX_FIELD_CHARS: usize = 100;

/// The policy every issued item is printed under.
pub const PRINT_POLICY: PrintPolicy = PrintPolicy {
    spool: false,
    copies: 1,
};

/// Reprints allowed per item (extension op `reprint`, docs/PROTOCOL.md).
pub const MAX_REPRINTS: u32 = 3;
/// How long after issue an item may be reprinted: 24 hours.
pub const REPRINT_WINDOW_MS: i64 = 24 * 3600 * 1000;

/// By default one fresh signature in this many is verified by the server before it is returned
/// (the first one of every process is); clients verify every item before they print it.
pub const DEFAULT_VERIFY_EVERY: u64 = 1;

/// Settings of the private tier.
#[derive(Clone, Debug)]
pub struct CoreConfig {
    pub confirm_window_ms: i64,
    pub refund_window_ms: i64,
    pub max_login_failures: u32,
    pub lockout_ms: i64,
    /// argon2id memory in KiB (STANDARDS.md: at least 19 MiB).
    pub argon2_memory_kib: u32,
    pub argon2_passes: u32,
    /// Check one fresh item signature in this many with the published key before it is returned
    /// (1 checks every one; see docs/DECISIONS.md on why the default samples).
    pub verify_every: u64,
}

impl Default for CoreConfig {
    fn default() -> Self {
        CoreConfig {
            confirm_window_ms: 10 * 60 * 1000,
            refund_window_ms: 30 * 24 * 3600 * 1000,
            max_login_failures: 10,
            lockout_ms: 30 * 60 * 1000,
            argon2_memory_kib: 19 * 1024,
            argon2_passes: 2,
            verify_every: DEFAULT_VERIFY_EVERY,
        }
    }
}

/// Why the private tier refused something; `code` is the documented wire/HTTP code.
#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    #[error("{message}")]
    Refused { code: &'static str, message: String },
    #[error("wrong user name or password")]
    BadCredentials,
    #[error("too many failed logins; try again after {until_ms} (Unix ms)")]
    Locked { until_ms: i64 },
    #[error("{0}")]
    Unavailable(String),
    #[error("internal error")]
    Internal(String),
}

impl CoreError {
    fn refused(code: &'static str, message: impl Into<String>) -> CoreError {
        CoreError::Refused {
            code,
            message: message.into(),
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            CoreError::Refused { code, .. } => code,
            CoreError::BadCredentials => codes::BAD_CREDENTIALS,
            CoreError::Locked { .. } => codes::LOCKED,
            CoreError::Unavailable(_) => "unavailable",
            CoreError::Internal(_) => codes::INTERNAL,
        }
    }

    /// The message safe to send: internal details are logged, never sent.
    pub fn public_message(&self) -> String {
        match self {
            CoreError::Internal(detail) => {
                tracing::error!(%detail, "internal error");
                "internal error; it has been logged".into()
            }
            other => other.to_string(),
        }
    }
}

impl From<LedgerError> for CoreError {
    fn from(e: LedgerError) -> Self {
        if let LedgerError::MeterFrozen { device_id, reason } = &e {
            tracing::error!(%device_id, %reason, "meter frozen: changed behind the server's back");
        }
        if let LedgerError::AuditLogBroken(reason) = &e {
            tracing::error!(%reason, "audit log changed behind the server's back: nothing more is appended");
        }
        let message = match &e {
            // Which entries were tampered with is for the operator's log, not for clients.
            LedgerError::AuditLogBroken(_) => {
                "the ledger's audit log awaits an operator's check; nothing was changed".into()
            }
            _ => e.to_string(),
        };
        match e.code() {
            codes::INTERNAL => CoreError::Internal(message),
            code => CoreError::Refused { code, message },
        }
    }
}

/// `POST /v1/register` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterForm {
    pub user: String,
    pub password: Secret,
    pub name: String,
    pub address: String,
    pub city: String,
    pub state: String,
    pub zip: String,
}

/// The answer to a registration.
#[derive(Debug, Clone)]
pub struct Registered {
    pub user: String,
    pub license_id: String,
    pub device_id: String,
}

/// What a successful login gives the link: the user, `K_user` and the signed transcript.
pub struct LoginGrant {
    pub user_id: UserId,
    pub k_user: Zeroizing<[u8; 32]>,
    pub signature: [u8; 64],
    pub auth_key_id: String,
}

impl std::fmt::Debug for LoginGrant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginGrant")
            .field("user_id", &self.user_id)
            .finish_non_exhaustive()
    }
}

/// The private tier.
#[derive(Debug)]
pub struct Core {
    store: Arc<dyn Store>,
    psd: Arc<dyn Psd>,
    cmls: Arc<dyn Cmls>,
    bank: Arc<dyn Bank>,
    cfg: CoreConfig,
    /// A hash of a random password, verified against for unknown users so that a login's timing
    /// does not reveal whether a user exists.
    decoy_hash: String,
    /// Items signed by this process (drives the sampling of fresh-signature checks).
    signed: std::sync::atomic::AtomicU64,
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, CoreError> + Send + 'static,
) -> Result<T, CoreError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| CoreError::Internal(format!("worker: {e}")))?
}

/// Runs a ledger write of the hot path from async code: the store answers this task after the
/// commit (SQLite's writer, or a blocking thread for PostgreSQL), so no thread of the runtime is
/// blocked and none is parked waiting for it.
async fn queued<T: Send + 'static>(
    core: &Arc<Core>,
    op: impl FnOnce(&dyn Store) -> Queued<T> + Send + 'static,
) -> Result<T, CoreError> {
    Ok(op(core.store.as_ref()).outcome().await?)
}

fn check_text(what: &str, value: &str) -> Result<(), CoreError> {
    if value.trim().is_empty()
        || value.chars().count() > MAX_FIELD_CHARS
        || value.chars().any(char::is_control)
    {
        return Err(CoreError::refused(
            codes::BAD_REQUEST,
            format!("{what} must be 1 to {MAX_FIELD_CHARS} printable characters"),
        ));
    }
    Ok(())
}

/// Check a user name: 1 to 64 bytes, letters, digits and `._@-` only.
pub fn check_user_name(user: &str) -> Result<(), CoreError> {
    let ok = !user.is_empty()
        && user.len() <= MAX_USER_BYTES
        && user
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '.' | '_' | '@' | '-'));
    if ok {
        Ok(())
    } else {
        Err(CoreError::refused(
            "bad_user",
            format!("user name must be 1 to {MAX_USER_BYTES} bytes of letters, digits, . _ @ -"),
        ))
    }
}

/// A small list of passwords too common to accept (STANDARDS.md asks for such a check).
const COMMON_PASSWORDS: [&str; 12] = [
    "password1234",
    "123456789012",
    "qwertyuiop12",
    "passwordpassword",
    "iloveyou1234",
    "111111111111",
    "000000000000",
    "123123123123",
    "abcdefghijkl",
    "letmein12345",
    "welcome12345",
    "administrator",
];

fn check_password(password: &str, user: &str) -> Result<(), CoreError> {
    let chars = password.chars().count();
    if chars < MIN_PASSWORD_CHARS || password.len() > MAX_PASSWORD_BYTES {
        return Err(CoreError::refused(
            "weak_password",
            format!("password must be {MIN_PASSWORD_CHARS} to {MAX_PASSWORD_BYTES} bytes long"),
        ));
    }
    let lower = password.to_lowercase();
    let name = normalize_user(user);
    // Short names ("al") would refuse half of all passwords; the check is for "ann2024ann2024".
    let has_name = name.chars().count() >= 4 && lower.contains(&name);
    if COMMON_PASSWORDS.contains(&lower.as_str()) || has_name {
        return Err(CoreError::refused(
            "weak_password",
            "password is too common or contains the user name",
        ));
    }
    Ok(())
}

fn link_key_context(user_key: &str) -> Vec<u8> {
    let mut c = b"stampline/v1/link-key/".to_vec();
    c.extend_from_slice(user_key.as_bytes());
    c
}

impl Core {
    pub fn new(
        store: Arc<dyn Store>,
        psd: Arc<dyn Psd>,
        cmls: Arc<dyn Cmls>,
        bank: Arc<dyn Bank>,
        cfg: CoreConfig,
    ) -> Result<Core, CoreError> {
        let mut decoy = [0u8; 24];
        aws_lc_rs::rand::fill(&mut decoy).map_err(|_| CoreError::Internal("rng".into()))?;
        let mut core = Core {
            store,
            psd,
            cmls,
            bank,
            cfg,
            decoy_hash: String::new(),
            signed: std::sync::atomic::AtomicU64::new(0),
        };
        core.decoy_hash = core.hash_password(&hex::encode(decoy))?;
        Ok(core)
    }

    pub fn config(&self) -> &CoreConfig {
        &self.cfg
    }

    pub fn psd(&self) -> &Arc<dyn Psd> {
        &self.psd
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    fn argon2(&self) -> Result<Argon2<'static>, CoreError> {
        let params = Params::new(self.cfg.argon2_memory_kib, self.cfg.argon2_passes, 1, None)
            .map_err(|e| CoreError::Internal(format!("argon2 params: {e}")))?;
        Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
    }

    fn hash_password(&self, password: &str) -> Result<String, CoreError> {
        let mut salt = [0u8; 16];
        aws_lc_rs::rand::fill(&mut salt).map_err(|_| CoreError::Internal("rng".into()))?;
        let hash = self
            .argon2()?
            .hash_password_with_salt(password.as_bytes(), &salt)
            .map_err(|e| CoreError::Internal(format!("argon2: {e}")))?;
        Ok(hash.to_string())
    }

    /// Flow 1: check the form, license the customer with CMLS, store the user with the link key
    /// wrapped by the crypto device.
    pub async fn register(self: &Arc<Self>, form: RegisterForm) -> Result<Registered, CoreError> {
        check_user_name(&form.user)?;
        check_password(&form.password.0, &form.user)?;
        check_text("name", &form.name)?;
        check_text("address", &form.address)?;
        check_text("city", &form.city)?;
        if form.state.len() != 2 || !form.state.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(CoreError::refused(
                "bad_state",
                "state must be a 2-letter code such as MA",
            ));
        }
        form.zip
            .parse::<Zip5>()
            .map_err(|_| CoreError::refused(codes::BAD_ZIP, "ZIP must be exactly 5 digits"))?;
        let user_key_str = normalize_user(&form.user);
        let core = Arc::clone(self);
        blocking(move || {
            if core.store.user_by_key(&user_key_str)?.is_some() {
                return Err(CoreError::refused("user_exists", "that user name is taken"));
            }
            let password_hash = core.hash_password(&form.password.0)?;
            let k_user = user_key(&form.password.0, &form.user);
            let wrapped = core
                .psd
                .wrap_user_key(&k_user, &link_key_context(&user_key_str))
                .map_err(|e| CoreError::Internal(e.to_string()))?;
            let application = LicenseApplication {
                name: form.name.clone(),
                address: form.address.clone(),
                city: form.city.clone(),
                state: form.state.clone(),
                zip: form.zip.clone(),
            };
            let license = core
                .cmls
                .license_customer(
                    &application,
                    Some(&funding::license_key(&user_key_str, &application)),
                )
                .map_err(cmls_error)?;
            let model = DEVICE_MODEL.as_bytes();
            let device_id = DeviceId::new(
                [model[0], model[1], model[2], model[3]],
                license.device_serial,
            )
            .map_err(|e| CoreError::Internal(e.to_string()))?
            .to_string();
            core.register_device(&license.license_id, &device_id)?;
            core.store.create_user(
                &NewUser {
                    user: form.user.clone(),
                    user_key: user_key_str,
                    name: form.name,
                    address: form.address,
                    city: form.city,
                    state: form.state,
                    zip: form.zip,
                    password_hash,
                    wrapped_link_key: wrapped,
                    license_id: license.license_id.clone(),
                    device_id: device_id.clone(),
                    role: Role::User,
                },
                now_ms(),
            )?;
            Ok(Registered {
                user: form.user,
                license_id: license.license_id,
                device_id,
            })
        })
        .await
    }

    /// Check a password (argon2id, with lockout), unwrap the user's link key and sign the auth
    /// transcript with the crypto device.
    pub async fn login(
        self: &Arc<Self>,
        user: String,
        password: Secret,
        transcript: Vec<u8>,
        detail: String,
    ) -> Result<LoginGrant, CoreError> {
        let core = Arc::clone(self);
        blocking(move || {
            let now = now_ms();
            let user_key_str = normalize_user(&user);
            let record = if user.len() <= MAX_USER_BYTES && password.0.len() <= MAX_PASSWORD_BYTES {
                core.store.user_by_key(&user_key_str)?
            } else {
                None
            };
            let argon = core.argon2()?;
            let Some(record) = record else {
                // Same work as for a real user, then the same answer.
                let _ = argon.verify_password(password.0.as_bytes(), core.decoy_hash.as_str());
                return Err(CoreError::BadCredentials);
            };
            if let Some(until_ms) = record.locked_until_ms.filter(|&u| u > now) {
                return Err(CoreError::Locked { until_ms });
            }
            if argon
                .verify_password(password.0.as_bytes(), record.password_hash.as_str())
                .is_err()
            {
                let locked = core.store.record_login_failure(
                    record.id,
                    now,
                    core.cfg.max_login_failures,
                    core.cfg.lockout_ms,
                )?;
                return Err(match locked {
                    Some(until_ms) => CoreError::Locked { until_ms },
                    None => CoreError::BadCredentials,
                });
            }
            let k_user = core
                .psd
                .unwrap_user_key(&record.wrapped_link_key, &link_key_context(&user_key_str))
                .map_err(|e| CoreError::Internal(e.to_string()))?;
            let signature = core
                .psd
                .sign_auth(&transcript)
                .map_err(|e| CoreError::Internal(e.to_string()))?;
            core.store.record_login_success(record.id, now, &detail)?;
            Ok(LoginGrant {
                user_id: record.id,
                k_user,
                signature,
                auth_key_id: stampline_items::KeyId::of_spki(&core.psd.auth_public_key())
                    .to_string(),
            })
        })
        .await
    }

    /// A link ended: its user's unconfirmed items get the confirmation window.
    pub async fn link_ended(self: &Arc<Self>, user_id: UserId) {
        let core = Arc::clone(self);
        let result = blocking(move || {
            let deadline = now_ms().saturating_add(core.cfg.confirm_window_ms);
            Ok(core.store.start_confirm_window(Some(user_id), deadline)?)
        })
        .await;
        if let Err(e) = result {
            tracing::error!(error = %e, "could not start the confirmation window");
        }
    }

    /// At start: no link is live, so every unconfirmed item gets the window; then void the
    /// expired ones. Called periodically afterwards.
    pub async fn sweep(self: &Arc<Self>, at_start: bool) -> Result<Vec<String>, CoreError> {
        let core = Arc::clone(self);
        blocking(move || {
            let now = now_ms();
            if at_start {
                core.store
                    .start_confirm_window(None, now.saturating_add(core.cfg.confirm_window_ms))?;
            }
            Ok(core.store.void_expired(now)?)
        })
        .await
    }

    pub fn keys(&self) -> Vec<PublishedKey> {
        self.psd.published_keys()
    }

    pub async fn item_status(
        self: &Arc<Self>,
        serial: String,
    ) -> Result<Option<ItemStatus>, CoreError> {
        if serial.parse::<Serial>().is_err() {
            return Ok(None);
        }
        let core = Arc::clone(self);
        blocking(move || Ok(core.store.item_status(&serial)?)).await
    }

    /// Handle one request from a live link. Never fails: errors become `ok:false` responses.
    pub async fn handle(
        self: &Arc<Self>,
        user_id: UserId,
        k_user: Arc<Zeroizing<[u8; 32]>>,
        request: Request,
        canonical: Vec<u8>,
        session: Uuid,
    ) -> Response {
        let op = request.op.name();
        let id = request.id.to_string();
        let fingerprint = request_fingerprint(&k_user, &canonical);
        match self.dispatch(user_id, request, fingerprint, session).await {
            Ok(fields) => Response::ok(op, &id, fields),
            Err(e) => Response::error(op, &id, e.code(), &e.public_message()),
        }
    }

    async fn dispatch(
        self: &Arc<Self>,
        user_id: UserId,
        request: Request,
        fingerprint: [u8; 32],
        session: Uuid,
    ) -> Result<serde_json::Value, CoreError> {
        let request_id = request.id.to_string();
        let core = Arc::clone(self);
        match request.op {
            Op::Balance {} => {
                let b = blocking(move || Ok(core.store.balance(user_id)?)).await?;
                Ok(json!({
                    "balance_mills": b.balance_mills,
                    "ascending_mills": b.ascending_mills,
                    "descending_mills": b.descending_mills,
                    "pieces": b.pieces,
                    "reserved_mills": b.reserved_mills,
                }))
            }
            Op::Quote {
                class,
                weight_oz,
                from_zip,
                to_zip,
            } => {
                let q = crate::rating::quote(
                    &class,
                    &weight_oz.to_string(),
                    from_zip.as_deref(),
                    to_zip.as_deref(),
                )?;
                Ok(crate::rating::quote_json(&q))
            }
            Op::History { limit } => {
                if limit == 0 || limit > MAX_HISTORY {
                    return Err(CoreError::refused(
                        codes::BAD_REQUEST,
                        format!("limit must be 1 to {MAX_HISTORY}"),
                    ));
                }
                let items = blocking(move || Ok(core.store.history(user_id, limit)?)).await?;
                Ok(json!({ "items": items }))
            }
            Op::Bye {} => Ok(json!({})),
            op @ (Op::AdminKeys {} | Op::AdminRotateKey {} | Op::AdminRevokeKey { .. }) => {
                self.admin_op(user_id, op).await
            }
            Op::PaymentOptions {} => self.payment_options(user_id).await,
            Op::Close {} => self.close_account(user_id, request_id, fingerprint).await,
            Op::AutoRefill {
                threshold_mills,
                amount_mills,
                cap_mills,
                card,
                off,
            } => {
                let order = funding::AutoRefillOrder {
                    threshold_mills,
                    amount_mills,
                    cap_mills,
                    card,
                    off,
                };
                self.set_auto_refill(user_id, request_id, fingerprint, order)
                    .await
            }
            Op::Issue {
                kind,
                postage_mills,
                from_zip,
                to_zip,
                mail_date,
                class,
                weight_oz,
            } => {
                let weight = weight_oz.map(|w| w.to_string());
                let order = PostageOrder::check(
                    &kind,
                    postage_mills,
                    &from_zip,
                    &to_zip,
                    &mail_date,
                    &class,
                )?;
                order.check_rate(weight.as_deref())?;
                let out = self
                    .issue_postage(user_id, request_id, fingerprint, order, session)
                    .await?;
                if out.refill_due {
                    self.spawn_refill_check(user_id);
                }
                Ok(json!({
                    "serial": out.serial,
                    "item": base64::engine::general_purpose::STANDARD.encode(&out.item),
                    "postage_mills": out.postage_mills,
                    "balance_mills": out.balance_mills,
                    "print": PRINT_POLICY,
                }))
            }
            Op::Confirm { serial, printed } => {
                check_serial(&serial)?;
                let out = queued(&core, move |store| {
                    let key = RequestKey {
                        user_id,
                        request_id: &request_id,
                        fingerprint,
                    };
                    store.confirm(&key, &serial, printed, now_ms())
                })
                .await?;
                Ok(json!({
                    "serial": out.serial,
                    "status": out.status,
                    "balance_mills": out.balance_mills,
                }))
            }
            Op::Reprint { serial } => {
                check_serial(&serial)?;
                let out = blocking(move || {
                    let key = RequestKey {
                        user_id,
                        request_id: &request_id,
                        fingerprint,
                    };
                    let limits = stampline_ledger::ReprintLimits {
                        max_reprints: MAX_REPRINTS,
                        window_ms: REPRINT_WINDOW_MS,
                    };
                    Ok(core.store.reprint(&key, &serial, limits, now_ms())?)
                })
                .await?;
                tracing::info!(serial = %out.serial, reprint = out.reprints, "item reprinted");
                Ok(json!({
                    "serial": out.serial,
                    "status": out.status,
                    "item": base64::engine::general_purpose::STANDARD.encode(&out.item),
                    "reprints": out.reprints,
                    "reprints_left": out.reprints_left,
                    "print": PRINT_POLICY,
                }))
            }
            Op::Refund { serial } => {
                check_serial(&serial)?;
                let window = self.cfg.refund_window_ms;
                let out = blocking(move || {
                    let key = RequestKey {
                        user_id,
                        request_id: &request_id,
                        fingerprint,
                    };
                    let out = core.store.refund(&key, &serial, window, now_ms())?;
                    if out.status == ItemStatus::Refunded {
                        core.report_refund(user_id, &serial);
                    }
                    Ok(out)
                })
                .await?;
                Ok(json!({
                    "serial": out.serial,
                    "status": out.status,
                    "balance_mills": out.balance_mills,
                }))
            }
            Op::Fund {
                amount_mills,
                card,
                card_token,
                eft,
            } => {
                let payment = match (card, card_token, eft) {
                    (Some(card), None, None) => Payment::Card(card),
                    (None, None, Some(eft)) => Payment::Eft(eft),
                    (None, Some(_), None) => {
                        return Err(CoreError::refused(
                            codes::UNSUPPORTED,
                            "saved cards are not offered by this server version",
                        ));
                    }
                    _ => {
                        return Err(CoreError::refused(
                            codes::BAD_REQUEST,
                            "give exactly one of card, card_token or eft",
                        ));
                    }
                };
                if amount_mills == 0 || amount_mills > MAX_FUND_MILLS {
                    return Err(CoreError::refused(
                        codes::BAD_AMOUNT,
                        format!(
                            "amount must be $0.001 to {}",
                            Amount::from_mills(MAX_FUND_MILLS).unwrap_or(Amount::ZERO)
                        ),
                    ));
                }
                let out = blocking(move || {
                    core.fund(user_id, &request_id, fingerprint, amount_mills, payment)
                })
                .await?;
                Ok(json!({
                    "payment_id": out.payment_id,
                    "amount_mills": out.amount_mills,
                    "balance_mills": out.balance_mills,
                }))
            }
        }
    }

    /// Flow 2. A repeated request id answers from the ledger without calling the bank; a new one
    /// charges with the idempotency key `user:request`, so a retry after a crash between the
    /// charge and the credit finds the same payment and credits it once.
    fn fund(
        &self,
        user_id: UserId,
        request_id: &str,
        fingerprint: [u8; 32],
        amount_mills: u64,
        payment: Payment,
    ) -> Result<FundOutcome, CoreError> {
        if let Some((fp, op, outcome)) = self.store.find_request(user_id, request_id)? {
            if fp != fingerprint || op != "fund" {
                return Err(CoreError::refused(
                    codes::ID_REUSED,
                    "this request id was used for a different request",
                ));
            }
            return serde_json::from_str(&outcome)
                .map_err(|e| CoreError::Internal(format!("stored outcome: {e}")));
        }
        let amount = Amount::from_mills(amount_mills)
            .ok_or_else(|| CoreError::refused(codes::BAD_AMOUNT, "amount too large"))?;
        let idem = format!("{user_id}:{request_id}");
        if self.store.closed_at(user_id)?.is_some() {
            return Err(CoreError::refused(
                codes::ACCOUNT_CLOSED,
                "the account is closed",
            ));
        }
        let open_returns = self.store.open_returns(user_id)?;
        if let Some(returned) = open_returns.first() {
            return self.pay_returned_debit(
                user_id,
                request_id,
                fingerprint,
                returned,
                amount_mills,
                payment,
            );
        }
        let (method, token, last4, paid) = match &payment {
            Payment::Card(card) => {
                let t = self
                    .bank
                    .tokenize_card(
                        &card.number.0,
                        &card.exp,
                        &card.cvc.0,
                        &format!("{idem}:token"),
                    )
                    .map_err(bank_error)?;
                let paid = self
                    .bank
                    .charge(&t.token, amount_mills, &idem)
                    .map_err(bank_error)?;
                ("card", Some(t.token), Some(t.last4), paid)
            }
            Payment::Eft(eft) => {
                let paid = self
                    .bank
                    .debit_eft(&eft.routing, &eft.account.0, amount_mills, &idem)
                    .map_err(bank_error)?;
                let acct = &eft.account.0;
                let last4 = acct.get(acct.len().saturating_sub(4)..).map(str::to_owned);
                ("eft", None, last4, paid)
            }
        };
        if paid.amount_mills != amount_mills {
            return Err(CoreError::Internal(format!(
                "bank paid {} for a request of {amount_mills}",
                paid.amount_mills
            )));
        }
        let key = RequestKey {
            user_id,
            request_id,
            fingerprint,
        };
        let out = self.store.fund(
            &key,
            &FundInput {
                amount,
                payment_id: &paid.payment_id,
                method,
                token: token.as_deref(),
                last4: last4.as_deref(),
            },
            now_ms(),
        )?;
        // Tell CMLS of the reset. A failure here is logged; the ledger is already right and the
        // daily report (a later issue) carries the registers again.
        if let Ok(Some(user)) = self.store.user_by_id(user_id)
            && let Ok(b) = self.store.balance(user_id)
            && let Err(e) = self.cmls.report_reset(
                &user.device_id,
                &out.payment_id,
                amount_mills,
                b.ascending_mills,
                b.descending_mills,
            )
        {
            tracing::warn!(error = %e, "could not report a reset to CMLS");
        }
        Ok(out)
    }

    /// Flow 4: reserve, next piece, sign inside the ledger transaction, verify the fresh signature
    /// with the published key before the transaction commits.
    async fn issue_postage(
        self: &Arc<Self>,
        user_id: UserId,
        request_id: String,
        fingerprint: [u8; 32],
        order: PostageOrder,
        session: Uuid,
    ) -> Result<IssueOutcome, CoreError> {
        let core = Arc::clone(self);
        queued(self, move |store| {
            let key = RequestKey {
                user_id,
                request_id: &request_id,
                fingerprint,
            };
            let psd = Arc::clone(&core.psd);
            let sign = move |state: &PieceState| -> Result<SignedItem, String> {
                let device_id: DeviceId = state.device_id.parse().map_err(|_| {
                    "this account has no postage meter (admin accounts cannot buy postage)"
                        .to_string()
                })?;
                let body_for = |key_id| -> Result<stampline_items::Body, String> {
                    Ok(stampline_items::Body::Postage(PostageIndicium {
                        device_id,
                        key_id,
                        piece: state.piece,
                        ascending: Amount::from_mills(state.ascending_mills)
                            .ok_or("ascending register overflow")?,
                        descending: Amount::from_mills(state.descending_mills)
                            .ok_or("descending register overflow")?,
                        postage: order.postage,
                        mail_date: order.mail_date,
                        from_zip: order.from_zip,
                        to: order.to.clone(),
                        rate: order.rate,
                        software_id: SOFTWARE_ID,
                    }))
                };
                // A rotation between reading the current key and signing retires that key:
                // read the current key once more rather than fail the purchase.
                let mut retried = false;
                let (key_id, body, signature) = loop {
                    let key_id = psd.current_signing_key();
                    let body = body_for(key_id)?;
                    let payload = body.signed_payload().map_err(|e| e.to_string())?;
                    match psd.sign_item(key_id, &payload) {
                        Ok(signature) => break (key_id, body, signature),
                        Err(stampline_psd::PsdError::KeyRetired(_)) if !retried => retried = true,
                        Err(e) => return Err(e.to_string()),
                    }
                };
                let item = Item { body, signature };
                let serial = item.body.serial().to_string();
                let bytes = item.to_bytes().map_err(|e| e.to_string())?;
                // Check the fresh signature with the key verifiers will use (one in
                // `verify_every`, the process's first included). The ledger commits the issue
                // only if the check passes; SQLite's writer has this request's thread run it
                // while it goes on with other requests.
                let n = core.signed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let check = n.is_multiple_of(core.cfg.verify_every.max(1)).then(|| {
                    let psd = Arc::clone(&psd);
                    Box::new(move || {
                        let spki = psd
                            .published_keys()
                            .into_iter()
                            .find(|k| k.key_id == key_id)
                            .ok_or("signing key is not published")?
                            .spki_der;
                        item.verify(&spki).map_err(|e| {
                            tracing::error!(%key_id, error = %e, "a fresh item signature does not verify");
                            format!("fresh signature does not verify: {e}")
                        })
                    }) as stampline_ledger::ItemCheck
                });
                Ok(SignedItem {
                    serial,
                    bytes,
                    check,
                })
            };
            let input = IssueInput {
                kind: "postage",
                amount: order.postage,
                session: Some(session.to_string()),
            };
            store.issue(&key, &input, Box::new(sign), now_ms())
        })
        .await
    }
}

fn cmls_error(e: CmlsError) -> CoreError {
    match e {
        CmlsError::Refused(m) => CoreError::refused("license_refused", m),
        CmlsError::Unknown(m) => CoreError::Internal(format!("CMLS does not know {m}")),
        CmlsError::Unavailable(m) => CoreError::Unavailable(format!(
            "licensing system unavailable: {m}; nothing was registered, try again"
        )),
    }
}

enum Payment {
    Card(stampline_wire::Card),
    Eft(stampline_wire::Eft),
}

fn bank_error(e: BankError) -> CoreError {
    let code = match e {
        BankError::BadCard | BankError::BadExpiry | BankError::BadCvc | BankError::UnknownToken => {
            codes::BAD_CARD
        }
        BankError::BadRouting | BankError::BadAccount => codes::BAD_ACCOUNT,
        BankError::Declined | BankError::InsufficientFunds => codes::CARD_DECLINED,
        BankError::BadAmount => codes::BAD_AMOUNT,
        BankError::KeyReused => codes::ID_REUSED,
        BankError::Unavailable(_)
        | BankError::BadKey
        | BankError::UnknownPayment
        | BankError::BadState(_) => codes::PAYMENT_FAILED,
    };
    let message = if code == codes::PAYMENT_FAILED {
        format!("{e}; nothing was credited; retry with the same request id")
    } else {
        e.to_string()
    };
    CoreError::refused(code, message)
}

fn check_serial(serial: &str) -> Result<(), CoreError> {
    serial
        .parse::<Serial>()
        .map(|_| ())
        .map_err(|_| CoreError::refused(codes::UNKNOWN_ITEM, "no such item"))
}

/// A validated postage request.
struct PostageOrder {
    postage: Amount,
    from_zip: Zip5,
    to: DeliveryPoint,
    mail_date: ItemDate,
    rate: RateCategory,
}

impl PostageOrder {
    fn check(
        kind: &str,
        postage_mills: u64,
        from_zip: &str,
        to_zip: &str,
        mail_date: &str,
        class: &str,
    ) -> Result<PostageOrder, CoreError> {
        if kind != "postage" {
            return Err(CoreError::refused(
                codes::UNSUPPORTED,
                format!("items of kind {kind:?} are not offered by this server version"),
            ));
        }
        if postage_mills == 0 || postage_mills > MAX_POSTAGE_MILLS {
            return Err(CoreError::refused(
                codes::BAD_AMOUNT,
                "postage must be $0.001 to $16,777.215",
            ));
        }
        let postage = Amount::from_mills(postage_mills)
            .ok_or_else(|| CoreError::refused(codes::BAD_AMOUNT, "postage too large"))?;
        let from_zip = from_zip
            .parse::<Zip5>()
            .map_err(|_| CoreError::refused(codes::BAD_ZIP, "from_zip must be exactly 5 digits"))?;
        let to = to_zip.parse::<DeliveryPoint>().map_err(|_| {
            CoreError::refused(codes::BAD_ZIP, "to_zip must be a ZIP, ZIP+4 or ZIP+4+2")
        })?;
        let date = mail_date.parse::<ItemDate>().map_err(|_| {
            CoreError::refused(codes::BAD_DATE, "mail_date must be a valid YYYY-MM-DD")
        })?;
        check_mail_date(date)?;
        let rate = RateCategory::from_class_name(class).ok_or_else(|| {
            CoreError::refused(
                codes::BAD_CLASS,
                "class must be first-class-letter, first-class-flat, priority-mail or ground-advantage",
            )
        })?;
        let _ = INDICIUM_VERSION;
        Ok(PostageOrder {
            postage,
            from_zip,
            to,
            mail_date: date,
            rate,
        })
    }
}

impl PostageOrder {
    /// Refuse underpaid postage: at least the rate for the declared weight, or without a weight
    /// the class's lowest rate; and a weight the class does not take.
    fn check_rate(&self, weight_oz: Option<&str>) -> Result<(), CoreError> {
        let needed = match weight_oz {
            Some(w) => {
                let from = self.from_zip.to_string();
                let to = self.to.as_str().get(..5).unwrap_or("").to_owned();
                crate::rating::quote(self.rate.class_name(), w, Some(&from), Some(&to))?.postage
            }
            None => stampline_rates::table()
                .and_then(|t| t.minimum(self.rate))
                .map_err(|e| CoreError::Internal(e.to_string()))?,
        };
        if self.postage < needed {
            return Err(CoreError::refused(
                "underpaid",
                format!(
                    "postage {} is below the rate {} for this piece",
                    self.postage, needed
                ),
            ));
        }
        Ok(())
    }
}

/// A date of mailing may be yesterday (time zones west of UTC) up to 30 days ahead.
fn check_mail_date(date: ItemDate) -> Result<(), CoreError> {
    let today = time::OffsetDateTime::now_utc().date();
    let Ok(month) = time::Month::try_from(date.month()) else {
        return Err(CoreError::refused(codes::BAD_DATE, "bad month"));
    };
    let d = time::Date::from_calendar_date(i32::from(date.year()), month, date.day())
        .map_err(|_| CoreError::refused(codes::BAD_DATE, "bad date"))?;
    let days = (d - today).whole_days();
    if !(-1..=MAX_MAIL_DATE_AHEAD_DAYS).contains(&days) {
        return Err(CoreError::refused(
            codes::BAD_DATE,
            format!("mail_date must be from yesterday to {MAX_MAIL_DATE_AHEAD_DAYS} days ahead"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clients_are_not_told_which_audit_entries_were_tampered_with() {
        let e = CoreError::from(LedgerError::AuditLogBroken(
            "entry 7 and those after it are gone".into(),
        ));
        assert_eq!(e.code(), "audit_log_broken");
        let message = e.public_message();
        assert!(!message.contains("entry 7"), "{message}");
        assert!(message.contains("nothing was changed"), "{message}");
    }

    #[test]
    fn weak_passwords_are_refused() {
        assert!(check_password("short", "ann").is_err());
        assert!(check_password("password1234", "ann").is_err());
        assert!(check_password("correct horse battery", "ann").is_ok());
        assert!(check_password("annabelle-lee-poem", "Annabelle").is_err());
        assert!(check_password("a banana for scale", "a").is_ok());
    }

    #[test]
    fn user_names_are_checked() {
        assert!(check_user_name("ann.example@x").is_ok());
        assert!(check_user_name("").is_err());
        assert!(check_user_name("a b").is_err());
        assert!(check_user_name(&"a".repeat(65)).is_err());
    }

    #[test]
    fn postage_orders_are_validated() {
        let today = time::OffsetDateTime::now_utc().date().to_string();
        let ok = PostageOrder::check(
            "postage",
            780,
            "02134",
            "94105",
            &today,
            "first-class-letter",
        );
        assert!(ok.is_ok());
        let code = |r: Result<PostageOrder, CoreError>| r.err().map(|e| e.code());
        assert_eq!(
            code(PostageOrder::check(
                "postage",
                0,
                "02134",
                "94105",
                &today,
                "first-class-letter"
            )),
            Some(codes::BAD_AMOUNT)
        );
        assert_eq!(
            code(PostageOrder::check(
                "postage",
                780,
                "0213",
                "94105",
                &today,
                "first-class-letter"
            )),
            Some(codes::BAD_ZIP)
        );
        assert_eq!(
            code(PostageOrder::check(
                "postage",
                780,
                "02134",
                "9410",
                &today,
                "first-class-letter"
            )),
            Some(codes::BAD_ZIP)
        );
        assert_eq!(
            code(PostageOrder::check(
                "postage",
                780,
                "02134",
                "94105",
                "2001-01-01",
                "first-class-letter"
            )),
            Some(codes::BAD_DATE)
        );
        assert_eq!(
            code(PostageOrder::check(
                "postage",
                780,
                "02134",
                "94105",
                &today,
                "pony-express"
            )),
            Some(codes::BAD_CLASS)
        );
    }
}
