//! The private tier: registration, login checks, and every op that touches money or keys.
//!
//! The public tier (gateway, link sessions) calls it only through [`Core`]'s methods, which take
//! and return plain data, so the two can later run as two processes with a channel between them.
//! It owns the ledger, the crypto device, CMLS and the bank; it never sees a TLS connection.
//!
//! It is cut by capability, each a module of `impl Core` blocks that do not import each other:
//! - `accounts`: registration, login and its back-off per (user name, source), admin accounts
//!   (and the admin ops that list and clear back-offs);
//! - `hashing`: the password-hash pool (its own threads, a bounded number of hashes at once);
//! - `postage`: quote, issue, confirm, reprint, the confirmation window and its voids;
//! - `value_items`: tickets, checks, coupons and gift certificates (issue, redeem, the users
//!   an issuer allows to redeem, the public status with expiry);
//! - `payments`: funding, the one card-charge path, item refunds, returned debits, auto-refill
//!   and account closure;
//! - `reports`: balance, history, usage reports to CMLS, reconciliation;
//! - `links`: the live links' keys (`K_user` stays here; the public tier gets `K_s` and
//!   heartbeats made in advance);
//! - `keys`: the signing keys: publication, registration with CMLS, admin rotation and revocation.
//!
//! [`Core::handle`] is the one dispatcher from ops to them. Every refusal is a
//! [`CoreError`] (crate::error); time comes from the [`Clock`] in [`CoreConfig`].

use std::sync::Arc;

use stampline_items::{Body, Item, KeyId, Serial};
use stampline_ledger::{RequestKey, Role, Store, ThrottlePolicy, UserId};
use stampline_psd::Psd;
use stampline_sandbox::{Bank, Cmls};
use stampline_wire::replies::ByeReply;
use stampline_wire::{Op, Request, Response, codes, request_fingerprint};
use uuid::Uuid;
use zeroize::Zeroizing;

use crate::clock::Clock;
pub use crate::error::CoreError;

mod accounts;
pub mod hashing;
mod keys;
mod licensing;
pub mod links;
mod payments;
mod postage;
mod reports;
mod value_items;

pub use accounts::{LoginGrant, MAX_FIELD_CHARS, RegisterForm, Registered, check_user_name};
pub use keys::{rfc3339, signing_key};
pub use payments::{MAX_AUTO_REFILL_CAP_MILLS, MAX_FUND_MILLS, SettlementReport};
pub use postage::{
    MAX_MAIL_DATE_AHEAD_DAYS, MAX_POSTAGE_MILLS, MAX_REPRINTS, PRINT_POLICY, REPRINT_WINDOW_MS,
};
pub use reports::{Difference, MAX_HISTORY, ReconcileReport, compare};
pub use value_items::{MAX_VALID_DAYS, MAX_VALUE_ITEM_MILLS};

/// By default one fresh signature in this many is verified by the server before it is returned
/// (the first one of every process is); clients verify every item before they print it.
pub const DEFAULT_VERIFY_EVERY: u64 = 1;

/// After 5 failed logins for one name from one source, that source is refused for that name for
/// 1 s, doubling with each further failure up to 15 min.
pub const DEFAULT_LOGIN_THROTTLE: ThrottlePolicy = ThrottlePolicy {
    free_failures: 5,
    first_ms: 1_000,
    max_ms: 15 * 60 * 1000,
};

/// Twice the number of cores (hashing is CPU-bound; two per core hides a little scheduling).
pub fn default_hash_slots() -> usize {
    std::thread::available_parallelism().map_or(2, |n| 2 * n.get())
}

/// Settings of the private tier.
#[derive(Clone, Debug)]
pub struct CoreConfig {
    pub confirm_window_ms: i64,
    pub refund_window_ms: i64,
    /// The login back-off per (user name, source): free failures, first refusal, its cap.
    pub login_throttle: ThrottlePolicy,
    /// Password hashes (login, registration) run at once, each on a thread of the hash pool;
    /// one more is answered `busy` (default: twice the number of cores).
    pub hash_slots: usize,
    /// argon2id memory in KiB (at least 19 MiB, the OWASP minimum for argon2id).
    pub argon2_memory_kib: u32,
    pub argon2_passes: u32,
    /// Check one fresh item signature in this many with the published key before it is returned
    /// (1 checks every one; see docs/DECISIONS.md on why the default samples).
    pub verify_every: u64,
    /// How long an account may stay unfunded (never licensed) before the sweep deletes it.
    pub unfunded_expiry_ms: i64,
    /// Where time comes from: the system clock, or a manual clock in tests.
    pub clock: Clock,
}

impl Default for CoreConfig {
    fn default() -> Self {
        CoreConfig {
            confirm_window_ms: 10 * 60 * 1000,
            refund_window_ms: 30 * 24 * 3600 * 1000,
            login_throttle: DEFAULT_LOGIN_THROTTLE,
            hash_slots: default_hash_slots(),
            argon2_memory_kib: 19 * 1024,
            argon2_passes: 2,
            verify_every: DEFAULT_VERIFY_EVERY,
            unfunded_expiry_ms: licensing::DEFAULT_UNFUNDED_EXPIRY_MS,
            clock: Clock::system(),
        }
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
    /// Where password hashes run (`cfg.hash_slots` at once).
    hashes: hashing::HashPool,
    /// Items signed by this process (drives the sampling of fresh-signature checks).
    signed: std::sync::atomic::AtomicU64,
    /// The live links' keys (`links`).
    links: links::Links,
}

/// Who sent a request on a live link and what binds it: the user, the request id (also its
/// idempotency key), the fingerprint of its canonical JSON, and the link it came on.
#[derive(Clone, Debug)]
struct Caller {
    user_id: UserId,
    request_id: String,
    fingerprint: [u8; 32],
    session: Uuid,
}

impl Caller {
    fn key(&self) -> RequestKey<'_> {
        RequestKey {
            user_id: self.user_id,
            request_id: &self.request_id,
            fingerprint: self.fingerprint,
        }
    }

    /// The bank's idempotency key of this request's charge: `USER:REQUEST`.
    fn bank_key(&self) -> String {
        format!("{}:{}", self.user_id, self.request_id)
    }
}

/// Runs blocking work (the store, the crypto device, the outside systems' synchronous clients) off
/// the async threads, on tokio's blocking pool (password hashes run on the hash pool instead).
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, CoreError> + Send + 'static,
) -> Result<T, CoreError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| CoreError::Internal(format!("worker: {e}")))?
}

/// Who is acting in an admin op: `admin:NAME`, for the audit log.
struct Admin {
    actor: String,
}

/// Signs the body `body_for` makes for the device's current signing key. A rotation between
/// reading the current key and signing retires that key: the current key is read once more
/// rather than the issue failing. Returns the key and the signed item.
fn sign_with_current_key(
    psd: &dyn Psd,
    body_for: impl Fn(KeyId) -> Result<Body, String>,
) -> Result<(KeyId, Item), String> {
    let mut retried = false;
    loop {
        let key_id = psd.current_signing_key();
        let body = body_for(key_id)?;
        let payload = body.signed_payload().map_err(|e| e.to_string())?;
        match psd.sign_item(key_id, &payload) {
            Ok(signature) => return Ok((key_id, Item { body, signature })),
            Err(stampline_psd::PsdError::KeyRetired(_)) if !retried => retried = true,
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// The check the ledger runs before it commits an issue: the fresh signature verifies with the
/// published key verifiers will use.
fn fresh_check(psd: Arc<dyn Psd>, key_id: KeyId, item: Item) -> stampline_ledger::ItemCheck {
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
    })
}

/// A serial that does not parse is no item of anyone's.
fn check_serial(serial: &str) -> Result<(), CoreError> {
    serial
        .parse::<Serial>()
        .map(|_| ())
        .map_err(|_| CoreError::refused(codes::UNKNOWN_ITEM, "no such item"))
}

impl Core {
    pub fn new(
        store: Arc<dyn Store>,
        psd: Arc<dyn Psd>,
        cmls: Arc<dyn Cmls>,
        bank: Arc<dyn Bank>,
        cfg: CoreConfig,
    ) -> Result<Core, CoreError> {
        let hashes = hashing::HashPool::new(cfg.hash_slots)
            .map_err(|e| CoreError::Internal(format!("hash pool: {e}")))?;
        let mut core = Core {
            hashes,
            store,
            psd,
            cmls,
            bank,
            cfg,
            decoy_hash: String::new(),
            signed: std::sync::atomic::AtomicU64::new(0),
            links: links::Links::default(),
        };
        core.decoy_hash = core.decoy_hash()?;
        Ok(core)
    }

    pub fn config(&self) -> &CoreConfig {
        &self.cfg
    }

    /// The clock every time-bound rule of the private tier reads.
    pub fn clock(&self) -> &Clock {
        &self.cfg.clock
    }

    fn now_ms(&self) -> i64 {
        self.cfg.clock.now_ms()
    }

    /// The password-hash pool (tests hold its slots to see `busy`).
    pub fn hash_pool(&self) -> &hashing::HashPool {
        &self.hashes
    }

    pub fn psd(&self) -> &Arc<dyn Psd> {
        &self.psd
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The financial system this core uses.
    pub fn bank(&self) -> &Arc<dyn Bank> {
        &self.bank
    }

    /// The licensing system this core uses.
    pub fn cmls(&self) -> &Arc<dyn Cmls> {
        &self.cmls
    }

    /// Run an admin op off the async threads: refused with `forbidden` unless the user has the
    /// admin role.
    async fn as_admin<T: Send + 'static>(
        self: &Arc<Self>,
        user_id: UserId,
        op: &'static str,
        work: impl FnOnce(&Core, Admin) -> Result<T, CoreError> + Send + 'static,
    ) -> Result<T, CoreError> {
        let core = Arc::clone(self);
        blocking(move || {
            let user = core
                .store
                .user_by_id(user_id)?
                .ok_or_else(|| CoreError::Internal(format!("no user {user_id}")))?;
            if user.role != Role::Admin {
                return Err(CoreError::refused(
                    codes::FORBIDDEN,
                    format!("{op} needs the admin role"),
                ));
            }
            let actor = format!("admin:{}", user.user);
            work(&core, Admin { actor })
        })
        .await
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
        let caller = Caller {
            user_id,
            request_id: request.id.to_string(),
            fingerprint: request_fingerprint(&k_user, &canonical),
            session,
        };
        let id = caller.request_id.clone();
        match self.dispatch(caller, request.op).await {
            Ok(response) => response,
            Err(e) => Response::error(op, &id, e.code(), &e.public_message()),
        }
    }

    /// Maps each op to the capability that answers it.
    async fn dispatch(self: &Arc<Self>, caller: Caller, op: Op) -> Result<Response, CoreError> {
        let name = op.name();
        let id = caller.request_id.clone();
        let user_id = caller.user_id;
        Ok(match op {
            Op::Balance {} => Response::ok_with(name, &id, &self.balance(user_id).await?),
            Op::Quote {
                class,
                weight_oz,
                from_zip,
                to_zip,
            } => Response::ok_with(
                name,
                &id,
                &postage::quote(&class, &weight_oz, from_zip.as_deref(), to_zip.as_deref())?,
            ),
            Op::History { limit, before } => {
                if let Some(serial) = &before {
                    check_serial(serial)?;
                }
                Response::ok_with(name, &id, &self.history(user_id, before, limit).await?)
            }
            Op::Bye {} => Response::ok_with(name, &id, &ByeReply {}),
            Op::AdminKeys {} => Response::ok_with(name, &id, &self.admin_keys(user_id).await?),
            Op::AdminRotateKey {} => {
                Response::ok_with(name, &id, &self.admin_rotate_key(user_id).await?)
            }
            Op::AdminRevokeKey { key_id, reason } => Response::ok_with(
                name,
                &id,
                &self.admin_revoke_key(user_id, key_id, reason).await?,
            ),
            Op::AdminThrottles {} => {
                Response::ok_with(name, &id, &self.admin_throttles(user_id).await?)
            }
            Op::AdminUnlock { user } => {
                Response::ok_with(name, &id, &self.admin_unlock(user_id, user).await?)
            }
            Op::AdminLinks {} => Response::ok_with(name, &id, &self.admin_links(user_id).await?),
            Op::AdminKick { session, user } => Response::ok_with(
                name,
                &id,
                &self
                    .admin_kick((user_id, caller.session), session, user)
                    .await?,
            ),
            Op::AdminLock { user } => Response::ok_with(
                name,
                &id,
                &self.admin_lock((user_id, caller.session), user).await?,
            ),
            Op::PaymentOptions {} => {
                Response::ok_with(name, &id, &self.payment_options(user_id).await?)
            }
            Op::Close {} => Response::ok_with(name, &id, &self.close_account(caller).await?),
            Op::AutoRefill {
                threshold_mills,
                amount_mills,
                cap_mills,
                card,
                off,
            } => {
                let order = payments::AutoRefillOrder {
                    threshold_mills,
                    amount_mills,
                    cap_mills,
                    card,
                    off,
                };
                Response::ok_with(name, &id, &self.set_auto_refill(caller, order).await?)
            }
            Op::Issue {
                kind,
                postage_mills,
                from_zip,
                to_zip,
                mail_date,
                class,
                weight_oz,
                amount_mills,
                fields,
                valid_until,
            } if kind != "postage" => {
                let postage_fields = postage_mills != 0
                    || !from_zip.is_empty()
                    || !to_zip.is_empty()
                    || !mail_date.is_empty()
                    || !class.is_empty()
                    || weight_oz.is_some();
                if postage_fields {
                    return Err(CoreError::refused(
                        codes::BAD_REQUEST,
                        format!("a {kind} takes amount_mills and fields, not postage fields"),
                    ));
                }
                let order = value_items::ValueOrder::check(
                    &kind,
                    amount_mills,
                    &fields,
                    valid_until.as_deref(),
                    self.clock().today_utc(),
                )?;
                let (reply, refill_due) = self.issue_value(caller, order).await?;
                if refill_due {
                    self.spawn_refill_check(user_id);
                }
                Response::ok_with(name, &id, &reply)
            }
            Op::Issue {
                kind,
                postage_mills,
                from_zip,
                to_zip,
                mail_date,
                class,
                weight_oz,
                amount_mills,
                fields,
                valid_until,
            } => {
                if amount_mills.is_some() || !fields.is_empty() || valid_until.is_some() {
                    return Err(CoreError::refused(
                        codes::BAD_REQUEST,
                        "postage takes postage_mills, not amount_mills, fields or valid_until",
                    ));
                }
                let order = postage::PostageOrder::check(
                    &kind,
                    postage_mills,
                    &from_zip,
                    &to_zip,
                    &mail_date,
                    &class,
                    self.clock().today_utc(),
                )?;
                order.check_rate(weight_oz.map(|w| w.to_string()).as_deref())?;
                let (reply, refill_due) = self.issue_postage(caller, order).await?;
                if refill_due {
                    self.spawn_refill_check(user_id);
                }
                Response::ok_with(name, &id, &reply)
            }
            Op::Confirm { serial, printed } => {
                check_serial(&serial)?;
                Response::ok_with(name, &id, &self.confirm(caller, serial, printed).await?)
            }
            Op::Reprint { serial } => {
                check_serial(&serial)?;
                Response::ok_with(name, &id, &self.reprint(caller, serial).await?)
            }
            Op::Redeem {
                serial,
                amount_mills,
            } => {
                check_serial(&serial)?;
                Response::ok_with(name, &id, &self.redeem(caller, serial, amount_mills).await?)
            }
            Op::Checks { from, to } => {
                Response::ok_with(name, &id, &self.checks(user_id, from, to).await?)
            }
            Op::Redeemers { add, remove } => {
                Response::ok_with(name, &id, &self.redeemers(user_id, add, remove).await?)
            }
            Op::Refund { serial } => {
                check_serial(&serial)?;
                Response::ok_with(name, &id, &self.refund_item(caller, serial).await?)
            }
            Op::Fund {
                amount_mills,
                card,
                card_token,
                eft,
            } => {
                let pay = payments::PayWith::from_request(card, card_token, eft)?;
                Response::ok_with(
                    name,
                    &id,
                    &self.fund_request(caller, amount_mills, pay).await?,
                )
            }
        })
    }
}
