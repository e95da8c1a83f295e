//! Accounts: registration (the form's checks, the user with the link key wrapped by the crypto
//! device; CMLS licenses at the first funding, `licensing`), login with argon2id and a back-off
//! per (user name, source), admin accounts made on the server's machine, and the admin ops that
//! list and clear back-offs.
//!
//! Password hashes run on the hash pool (`hashing`); the ledger's reads and writes on tokio's
//! blocking pool. Every failed login — wrong password, unknown name, or a source backed off for
//! that name — answers the same `bad_credentials` after the same work: one ledger read, one
//! argon2id verify (a backed-off attempt verifies against the decoy hash, never the real one) and
//! one ledger write (the failure counted and audited with its source).

use std::sync::Arc;

use argon2::{Algorithm, Argon2, Params, PasswordHasher as _, PasswordVerifier as _, Version};
use serde::{Deserialize, Serialize};
use stampline_items::Zip5;
use stampline_ledger::{LoginFailure, NewUser, Role, UserId, UserRecord};
use stampline_wire::replies::{AdminThrottlesReply, AdminUnlockReply, LoginThrottle};
use stampline_wire::{
    MAX_PASSWORD_BYTES, MAX_USER_BYTES, MIN_PASSWORD_CHARS, Secret, codes, normalize_user, user_key,
};
use zeroize::Zeroizing;

use super::{Core, CoreError, blocking};
use crate::source::SourceKey;

/// The back-off key of a name that is no valid user name (no user has it): all such names share
/// one, so they cannot fill the table.
const INVALID_NAME_KEY: &str = "(invalid name)";

/// Longest name, address or city at registration.
pub const MAX_FIELD_CHARS: usize = 100;

/// `POST /v1/register` body.
#[derive(Debug, Serialize, Deserialize)]
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
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Registered {
    pub user: String,
    /// `None` until the first funding licenses the customer.
    pub license_id: Option<String>,
    pub device_id: Option<String>,
}

/// What a successful login gives the link: the user, `K_user` and the signed transcript.
pub struct LoginGrant {
    pub user_id: UserId,
    /// Whether the user has the admin role (the firewall's admin address list applies).
    pub admin: bool,
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
            codes::BAD_USER,
            format!("user name must be 1 to {MAX_USER_BYTES} bytes of letters, digits, . _ @ -"),
        ))
    }
}

/// A small list of passwords too common to accept (a check the security standards ask for).
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
            codes::WEAK_PASSWORD,
            format!("password must be {MIN_PASSWORD_CHARS} to {MAX_PASSWORD_BYTES} bytes long"),
        ));
    }
    let lower = password.to_lowercase();
    let name = normalize_user(user);
    // Short names ("al") would refuse half of all passwords; the check is for "ann2024ann2024".
    let has_name = name.chars().count() >= 4 && lower.contains(&name);
    if COMMON_PASSWORDS.contains(&lower.as_str()) || has_name {
        return Err(CoreError::refused(
            codes::WEAK_PASSWORD,
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

/// A new user's secrets: the password's argon2id hash and the link key wrapped by the device.
struct Credentials {
    password_hash: String,
    wrapped_link_key: Vec<u8>,
}

/// argon2id with the configured cost.
fn argon2(cfg: &super::CoreConfig) -> Result<Argon2<'static>, CoreError> {
    let params = Params::new(cfg.argon2_memory_kib, cfg.argon2_passes, 1, None)
        .map_err(|e| CoreError::Internal(format!("argon2 params: {e}")))?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
}

/// A fresh salted argon2id hash of `password` (on the calling thread).
fn hash_password(argon: &Argon2<'_>, password: &str) -> Result<String, CoreError> {
    let mut salt = [0u8; 16];
    aws_lc_rs::rand::fill(&mut salt).map_err(|_| CoreError::Internal("rng".into()))?;
    let hash = argon
        .hash_password_with_salt(password.as_bytes(), &salt)
        .map_err(|e| CoreError::Internal(format!("argon2: {e}")))?;
    Ok(hash.to_string())
}

/// Whether `password` matches `hash` (on the calling thread).
fn verify_password(argon: &Argon2<'_>, password: &str, hash: &str) -> bool {
    argon.verify_password(password.as_bytes(), hash).is_ok()
}

/// What a login found in the ledger before its password check.
struct LoginLookup {
    user: Option<UserRecord>,
    /// The back-off key of the name.
    user_key: String,
    /// Until when this source is refused for this name, if it is now.
    refused_until: Option<i64>,
}

impl Core {
    /// The hash of a random password that logins of unknown users are checked against.
    pub(super) fn decoy_hash(&self) -> Result<String, CoreError> {
        let mut decoy = [0u8; 24];
        aws_lc_rs::rand::fill(&mut decoy).map_err(|_| CoreError::Internal("rng".into()))?;
        hash_password(&argon2(&self.cfg)?, &hex::encode(decoy))
    }

    /// Hash `password` on the hash pool; `busy` at once when every slot is in use.
    async fn hash_on_pool(&self, password: Secret) -> Result<String, CoreError> {
        let slot = self.hashes.slot()?;
        let argon = argon2(&self.cfg)?;
        slot.run(move || hash_password(&argon, &password.0)).await?
    }

    /// Refuse a taken user name.
    fn check_name_free(&self, user_key_str: &str) -> Result<(), CoreError> {
        if self.store.user_by_key(user_key_str)?.is_some() {
            return Err(CoreError::refused(
                codes::USER_EXISTS,
                "that user name is taken",
            ));
        }
        Ok(())
    }

    /// A new user's secrets: the password hash (made by the caller) and the link key wrapped by
    /// the crypto device.
    fn new_credentials(
        &self,
        user: &str,
        password: &str,
        user_key_str: &str,
        password_hash: String,
    ) -> Result<Credentials, CoreError> {
        let k_user = user_key(password, user);
        let wrapped_link_key = self
            .psd
            .wrap_user_key(&k_user, &link_key_context(user_key_str))
            .map_err(|e| CoreError::Internal(e.to_string()))?;
        Ok(Credentials {
            password_hash,
            wrapped_link_key,
        })
    }

    /// Register: check the form, store the user with the link key wrapped by the crypto device.
    /// CMLS is not asked: the first funding licenses the customer (`licensing`).
    pub async fn register(self: &Arc<Self>, form: RegisterForm) -> Result<Registered, CoreError> {
        check_user_name(&form.user)?;
        check_password(&form.password.0, &form.user)?;
        check_text("name", &form.name)?;
        check_text("address", &form.address)?;
        check_text("city", &form.city)?;
        if form.state.len() != 2 || !form.state.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(CoreError::refused(
                codes::BAD_STATE,
                "state must be a 2-letter code such as MA",
            ));
        }
        form.zip
            .parse::<Zip5>()
            .map_err(|_| CoreError::refused(codes::BAD_ZIP, "ZIP must be exactly 5 digits"))?;
        let user_key_str = normalize_user(&form.user);
        let core = Arc::clone(self);
        let key = user_key_str.clone();
        blocking(move || core.check_name_free(&key)).await?;
        let password_hash = self.hash_on_pool(form.password.clone()).await?;
        let core = Arc::clone(self);
        blocking(move || {
            let credentials =
                core.new_credentials(&form.user, &form.password.0, &user_key_str, password_hash)?;
            core.store.create_user(
                &NewUser {
                    user: form.user.clone(),
                    user_key: user_key_str,
                    name: form.name,
                    address: form.address,
                    city: form.city,
                    state: form.state,
                    zip: form.zip,
                    password_hash: credentials.password_hash,
                    wrapped_link_key: credentials.wrapped_link_key,
                    license_id: None,
                    device_id: None,
                    role: Role::User,
                },
                core.now_ms(),
            )?;
            Ok(Registered {
                user: form.user,
                license_id: None,
                device_id: None,
            })
        })
        .await
    }

    /// Check a password (argon2id on the hash pool; `busy` at once when it is full), unwrap the
    /// user's link key and sign the auth transcript with the crypto device. Every failure is
    /// `bad_credentials` after the same work (see the module doc); `source` is where the hello
    /// came from, `detail` what the audit log records of it.
    pub async fn login(
        self: &Arc<Self>,
        user: String,
        password: Secret,
        transcript: Vec<u8>,
        detail: String,
        source: SourceKey,
    ) -> Result<LoginGrant, CoreError> {
        let slot = self.hashes.slot()?;
        let source = source.to_string();
        let core = Arc::clone(self);
        let (name, from) = (user.clone(), source.clone());
        let found = blocking(move || core.login_lookup(&name, &from)).await?;
        let LoginLookup {
            user: record,
            user_key: key,
            refused_until,
        } = found;
        // A backed-off source, and an unknown name, are checked against the decoy hash.
        let hash = match &record {
            Some(r) if refused_until.is_none() && password.0.len() <= MAX_PASSWORD_BYTES => {
                r.password_hash.clone()
            }
            _ => self.decoy_hash.clone(),
        };
        let argon = argon2(&self.cfg)?;
        let matches = slot
            .run(move || verify_password(&argon, &password.0, &hash))
            .await?;
        let core = Arc::clone(self);
        blocking(move || match record {
            Some(record) if matches && refused_until.is_none() => {
                core.grant(&record, &key, &transcript, &source, &detail)
            }
            record => {
                let failure = LoginFailure {
                    user_key: key,
                    user: record.map(|r| r.id),
                    source,
                    detail,
                };
                let until = core.store.record_login_failure(
                    &failure,
                    core.cfg.login_throttle,
                    core.now_ms(),
                )?;
                tracing::warn!(
                    user = %failure.user_key,
                    source = %failure.source,
                    detail = %failure.detail,
                    refused_until_ms = ?until,
                    "login failed"
                );
                Err(CoreError::BadCredentials)
            }
        })
        .await
    }

    /// The user of a hello's name (if any) and whether its source is backed off for the name.
    fn login_lookup(&self, user: &str, source: &str) -> Result<LoginLookup, CoreError> {
        let valid = check_user_name(user).is_ok();
        let user_key = if valid {
            normalize_user(user)
        } else {
            INVALID_NAME_KEY.to_owned()
        };
        let record = if valid {
            self.store.user_by_key(&user_key)?
        } else {
            None
        };
        let refused_until = self
            .store
            .login_throttle(&user_key, source, self.now_ms())?;
        Ok(LoginLookup {
            user: record,
            user_key,
            refused_until,
        })
    }

    /// The right password: unwrap the link key, sign the transcript, record the login.
    fn grant(
        &self,
        record: &UserRecord,
        user_key_str: &str,
        transcript: &[u8],
        source: &str,
        detail: &str,
    ) -> Result<LoginGrant, CoreError> {
        if record.locked {
            self.store.append_audit(
                &format!("user:{}", record.id),
                "login_refused_locked",
                &serde_json::json!({ "source": source, "detail": detail }).to_string(),
                self.now_ms(),
            )?;
            return Err(CoreError::refused(
                codes::USER_LOCKED,
                "an administrator locked this account; ask them to unlock it",
            ));
        }
        let k_user = self
            .psd
            .unwrap_user_key(&record.wrapped_link_key, &link_key_context(user_key_str))
            .map_err(|e| CoreError::Internal(e.to_string()))?;
        let signature = self
            .psd
            .sign_auth(transcript)
            .map_err(|e| CoreError::Internal(e.to_string()))?;
        self.store
            .record_login_success(record.id, source, self.now_ms(), detail)?;
        Ok(LoginGrant {
            user_id: record.id,
            admin: record.role == Role::Admin,
            k_user,
            signature,
            auth_key_id: stampline_items::KeyId::of_spki(&self.psd.auth_public_key()).to_string(),
        })
    }

    /// `admin_throttles`: every login back-off not yet forgotten.
    pub(super) async fn admin_throttles(
        self: &Arc<Self>,
        user_id: UserId,
    ) -> Result<AdminThrottlesReply, CoreError> {
        self.as_admin(user_id, "admin_throttles", |core, _| {
            let throttles = core.store.login_throttles(core.now_ms())?;
            Ok(AdminThrottlesReply {
                throttles: throttles
                    .into_iter()
                    .map(|t| LoginThrottle {
                        user: t.user_key,
                        source: t.source,
                        failures: t.failures,
                        until_ms: t.until_ms,
                    })
                    .collect(),
            })
        })
        .await
    }

    /// `admin_unlock`: forget every failed login of a user name, from every source.
    pub(super) async fn admin_unlock(
        self: &Arc<Self>,
        user_id: UserId,
        user: String,
    ) -> Result<AdminUnlockReply, CoreError> {
        check_user_name(&user)?;
        self.as_admin(user_id, "admin_unlock", move |core, admin| {
            let key = normalize_user(&user);
            let cleared = core
                .store
                .clear_login_throttles(&key, &admin.actor, core.now_ms())?;
            let unlocked = core
                .store
                .set_user_locked(&key, false, &admin.actor, core.now_ms())?;
            tracing::info!(user = %key, cleared, unlocked, actor = %admin.actor, "login back-offs cleared");
            Ok(AdminUnlockReply { user: key, cleared })
        })
        .await
    }

    /// Make an admin account directly in the ledger (on the server's machine; `stampline admin
    /// create`). The password rules are those of registration; the link key is wrapped by the
    /// crypto device as for every user. Admins hold no meter licence (their meter is never
    /// licensed; a funding would ask CMLS, which refuses the staff placeholder address).
    pub fn create_admin(&self, user: &str, password: &str) -> Result<(), CoreError> {
        check_user_name(user)?;
        check_password(password, user)?;
        let key = normalize_user(user);
        self.check_name_free(&key)?;
        // On this thread: a command on the server's machine, not a request from the network.
        let password_hash = hash_password(&argon2(&self.cfg)?, password)?;
        let credentials = self.new_credentials(user, password, &key, password_hash)?;
        let now = self.now_ms();
        self.store.create_user(
            &NewUser {
                user: user.to_owned(),
                user_key: key.clone(),
                name: "Administrator".into(),
                address: "-".into(),
                city: "-".into(),
                state: "--".into(),
                zip: "00000".into(),
                password_hash: credentials.password_hash,
                wrapped_link_key: credentials.wrapped_link_key,
                // Staff hold no postage meter licence: the meter stays unlicensed, unknown to
                // CMLS (and to reconciliation, which checks licensed meters only).
                license_id: None,
                device_id: None,
                role: Role::Admin,
            },
            now,
        )?;
        self.store
            .append_audit("local", "admin_created", &format!("user {user}"), now)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
