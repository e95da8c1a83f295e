//! Admin work in the private tier: making admin accounts on the server's machine, and the admin
//! ops over the link (signing-key list, rotation, revocation). Every admin op checks the caller's
//! role in the ledger first and is written to the audit log.

use std::sync::Arc;

use serde_json::{Value, json};
use stampline_items::KeyId;
use stampline_ledger::{NewUser, Role, UserId};
use stampline_psd::{PsdError, PublishedKey};
use stampline_sandbox::KeyRegistration;
use stampline_wire::{Op, codes, normalize_user, user_key};

use super::{Core, CoreError, blocking, check_password, check_user_name, link_key_context};
use crate::clock::now_ms;

/// The licence id recorded for admin accounts: staff hold no postage meter licence.
pub const ADMIN_LICENSE_ID: &str = "staff";

/// RFC 3339 for a Unix time (null when out of range).
pub fn rfc3339(unix: i64) -> Value {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .map_or(Value::Null, Value::String)
}

fn opt_time(t: Option<i64>) -> Value {
    t.map_or(Value::Null, rfc3339)
}

/// A signing key as `GET /v1/keys` and the admin ops show it.
pub fn key_json(k: &PublishedKey) -> Value {
    use base64::Engine as _;
    json!({
        "key_id": k.key_id.to_string(),
        "algorithm": "ecdsa-p256-sha256",
        "public_key_spki_der_base64": base64::engine::general_purpose::STANDARD.encode(&k.spki_der),
        "valid_from": rfc3339(k.valid_from_unix),
        "valid_until": opt_time(k.valid_until_unix),
        "status": k.status(),
        "retired_at": opt_time(k.retired_at_unix),
        "revoked_at": opt_time(k.revoked_at_unix),
        "revocation_reason": k.revocation_reason,
    })
}

fn registration(k: &PublishedKey) -> KeyRegistration {
    KeyRegistration {
        key_id: k.key_id.to_string(),
        spki_der_hex: hex::encode(&k.spki_der),
        valid_from_unix: k.valid_from_unix,
        valid_until_unix: k.valid_until_unix,
        revoked_at_unix: k.revoked_at_unix,
        revocation_reason: k.revocation_reason.clone(),
    }
}

fn psd_error(e: PsdError) -> CoreError {
    match e {
        PsdError::UnknownKey(_) => CoreError::Refused {
            code: codes::UNKNOWN_KEY,
            message: e.to_string(),
        },
        PsdError::KeyIsCurrent(_) => CoreError::Refused {
            code: codes::KEY_CURRENT,
            message: e.to_string(),
        },
        PsdError::BadInput(_) => CoreError::Refused {
            code: codes::BAD_REQUEST,
            message: e.to_string(),
        },
        other => CoreError::Internal(format!("crypto device: {other}")),
    }
}

impl Core {
    /// Register every signing key with CMLS (an upsert, so it is safe at every start). A CMLS
    /// failure is logged: keys stay published at `/v1/keys` either way.
    pub fn register_keys_with_cmls(&self) -> bool {
        let mut all = true;
        for k in self.psd.published_keys() {
            if let Err(e) = self.cmls.register_key(&registration(&k)) {
                tracing::warn!(key_id = %k.key_id, error = %e, "could not register a signing key with CMLS");
                all = false;
            }
        }
        all
    }

    /// Make an admin account directly in the ledger (on the server's machine; `stampline admin
    /// create`). The password rules are those of registration; the link key is wrapped by the
    /// crypto device as for every user. Admins hold no meter licence.
    pub fn create_admin(&self, user: &str, password: &str) -> Result<(), CoreError> {
        check_user_name(user)?;
        check_password(password, user)?;
        let key = normalize_user(user);
        if self.store.user_by_key(&key)?.is_some() {
            return Err(CoreError::refused("user_exists", "that user name is taken"));
        }
        let password_hash = self.hash_password(password)?;
        let k_user = user_key(password, user);
        let wrapped = self
            .psd
            .wrap_user_key(&k_user, &link_key_context(&key))
            .map_err(|e| CoreError::Internal(e.to_string()))?;
        let now = now_ms();
        self.store.create_user(
            &NewUser {
                user: user.to_owned(),
                user_key: key.clone(),
                name: "Administrator".into(),
                address: "-".into(),
                city: "-".into(),
                state: "--".into(),
                zip: "00000".into(),
                password_hash,
                wrapped_link_key: wrapped,
                license_id: ADMIN_LICENSE_ID.into(),
                device_id: format!("ADMIN-{key}"),
                role: Role::Admin,
            },
            now,
        )?;
        self.store
            .append_audit("local", "admin_created", &format!("user {user}"), now)?;
        Ok(())
    }

    /// An admin op from a live link: refused with `forbidden` unless the user has the admin role.
    pub(super) async fn admin_op(
        self: &Arc<Self>,
        user_id: UserId,
        op: Op,
    ) -> Result<Value, CoreError> {
        let core = Arc::clone(self);
        blocking(move || {
            let user = core
                .store
                .user_by_id(user_id)?
                .ok_or_else(|| CoreError::Internal(format!("no user {user_id}")))?;
            if user.role != Role::Admin {
                return Err(CoreError::refused(
                    codes::FORBIDDEN,
                    format!("{} needs the admin role", op.name()),
                ));
            }
            let now_unix = now_ms() / 1000;
            let actor = format!("admin:{}", user.user);
            match op {
                Op::AdminKeys {} => Ok(json!({
                    "current": core.psd.current_signing_key().to_string(),
                    "keys": core.psd.published_keys().iter().map(key_json).collect::<Vec<_>>(),
                })),
                Op::AdminRotateKey {} => {
                    let r = core.psd.rotate_signing_key(now_unix).map_err(psd_error)?;
                    core.store.append_audit(
                        &actor,
                        "rotate_key",
                        &format!("new {} old {}", r.new_key.key_id, r.old_key.key_id),
                        now_ms(),
                    )?;
                    let registered = [&r.new_key, &r.old_key].iter().all(|k| {
                        core.cmls
                            .register_key(&registration(k))
                            .inspect_err(
                                |e| tracing::warn!(error = %e, "CMLS key registration failed"),
                            )
                            .is_ok()
                    });
                    Ok(json!({
                        "key_id": r.new_key.key_id.to_string(),
                        "new_key": key_json(&r.new_key),
                        "old_key": key_json(&r.old_key),
                        "cmls_registered": registered,
                    }))
                }
                Op::AdminRevokeKey { key_id, reason } => {
                    let id: KeyId = key_id.parse().map_err(|_| {
                        CoreError::refused(codes::BAD_REQUEST, "key_id must be 8 hex digits")
                    })?;
                    let k = core
                        .psd
                        .revoke_signing_key(id, now_unix, &reason)
                        .map_err(psd_error)?;
                    core.store.append_audit(
                        &actor,
                        "revoke_key",
                        &format!("key {id}: {}", k.revocation_reason.as_deref().unwrap_or("")),
                        now_ms(),
                    )?;
                    let registered = core
                        .cmls
                        .register_key(&registration(&k))
                        .inspect_err(|e| tracing::warn!(error = %e, "CMLS key registration failed"))
                        .is_ok();
                    Ok(json!({
                        "key_id": id.to_string(),
                        "key": key_json(&k),
                        "cmls_registered": registered,
                    }))
                }
                other => Err(CoreError::Internal(format!(
                    "{} is not an admin op",
                    other.name()
                ))),
            }
        })
        .await
    }
}
