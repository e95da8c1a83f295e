//! Accounts: registration (the form's checks, the user with the link key wrapped by the crypto
//! device; CMLS licenses at the first funding, `licensing`), login with argon2id and lockout, and admin accounts made on
//! the server's machine.

use std::sync::Arc;

use argon2::{Algorithm, Argon2, Params, PasswordHasher as _, PasswordVerifier as _, Version};
use serde::Deserialize;
use stampline_items::Zip5;
use stampline_ledger::{NewUser, Role, UserId};
use stampline_wire::{
    MAX_PASSWORD_BYTES, MAX_USER_BYTES, MIN_PASSWORD_CHARS, Secret, codes, normalize_user, user_key,
};
use zeroize::Zeroizing;

use super::{Core, CoreError, blocking};

/// Longest name, address or city at registration.
pub const MAX_FIELD_CHARS: usize = 100;
/// The licence id recorded for admin accounts: staff hold no postage meter licence.
pub const ADMIN_LICENSE_ID: &str = "staff";

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
    /// `None` until the first funding licenses the customer.
    pub license_id: Option<String>,
    pub device_id: Option<String>,
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

impl Core {
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

    /// The hash of a random password that logins of unknown users are checked against.
    pub(super) fn decoy_hash(&self) -> Result<String, CoreError> {
        let mut decoy = [0u8; 24];
        aws_lc_rs::rand::fill(&mut decoy).map_err(|_| CoreError::Internal("rng".into()))?;
        self.hash_password(&hex::encode(decoy))
    }

    /// Refuse a taken user name, then hash the password and wrap the user's link key.
    fn new_credentials(
        &self,
        user: &str,
        password: &str,
        user_key_str: &str,
    ) -> Result<Credentials, CoreError> {
        if self.store.user_by_key(user_key_str)?.is_some() {
            return Err(CoreError::refused(
                codes::USER_EXISTS,
                "that user name is taken",
            ));
        }
        let password_hash = self.hash_password(password)?;
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
        blocking(move || {
            let credentials = core.new_credentials(&form.user, &form.password.0, &user_key_str)?;
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
            let now = core.now_ms();
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

    /// Make an admin account directly in the ledger (on the server's machine; `stampline admin
    /// create`). The password rules are those of registration; the link key is wrapped by the
    /// crypto device as for every user. Admins hold no meter licence.
    pub fn create_admin(&self, user: &str, password: &str) -> Result<(), CoreError> {
        check_user_name(user)?;
        check_password(password, user)?;
        let key = normalize_user(user);
        let credentials = self.new_credentials(user, password, &key)?;
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
                license_id: Some(ADMIN_LICENSE_ID.into()),
                device_id: Some(format!("ADMIN-{key}")),
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
