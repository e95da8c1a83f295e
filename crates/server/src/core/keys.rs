//! The signing keys: what `GET /v1/keys` publishes, their registration with CMLS, and the admin
//! ops over the link (list, rotation, revocation). Every admin op checks the caller's role in the
//! ledger first and is written to the audit log.

use std::sync::Arc;

use base64::Engine as _;
use stampline_items::KeyId;
use stampline_ledger::UserId;
use stampline_psd::PublishedKey;
use stampline_sandbox::KeyRegistration;
use stampline_wire::codes;
use stampline_wire::replies::{
    AdminKeysReply, AdminRevokeKeyReply, AdminRotateKeyReply, SigningKey,
};

use super::{Core, CoreError};
use crate::error::psd_error;

/// RFC 3339 for a Unix time (`None` when out of range).
pub fn rfc3339(unix: i64) -> Option<String> {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
}

/// A signing key as `GET /v1/keys` and the admin ops show it.
pub fn signing_key(k: &PublishedKey) -> SigningKey {
    SigningKey {
        key_id: k.key_id.to_string(),
        algorithm: "ecdsa-p256-sha256".into(),
        public_key_spki_der_base64: base64::engine::general_purpose::STANDARD.encode(&k.spki_der),
        valid_from: rfc3339(k.valid_from_unix),
        valid_until: k.valid_until_unix.and_then(rfc3339),
        status: k.status().to_string(),
        retired_at: k.retired_at_unix.and_then(rfc3339),
        revoked_at: k.revoked_at_unix.and_then(rfc3339),
        revocation_reason: k.revocation_reason.clone(),
    }
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

impl Core {
    /// Every signing key, as published.
    pub fn keys(&self) -> Vec<PublishedKey> {
        self.psd.published_keys()
    }

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

    /// Register one key with CMLS; a failure is logged and answered `false`.
    fn register_key(&self, k: &PublishedKey) -> bool {
        self.cmls
            .register_key(&registration(k))
            .inspect_err(|e| tracing::warn!(error = %e, "CMLS key registration failed"))
            .is_ok()
    }

    /// `admin_keys`: every signing key with its status.
    pub(super) async fn admin_keys(
        self: &Arc<Self>,
        user_id: UserId,
    ) -> Result<AdminKeysReply, CoreError> {
        self.as_admin(user_id, "admin_keys", |core, _| {
            Ok(AdminKeysReply {
                current: core.psd.current_signing_key().to_string(),
                keys: core.psd.published_keys().iter().map(signing_key).collect(),
            })
        })
        .await
    }

    /// `admin_rotate_key`: a new signing key; the current one retires.
    pub(super) async fn admin_rotate_key(
        self: &Arc<Self>,
        user_id: UserId,
    ) -> Result<AdminRotateKeyReply, CoreError> {
        self.as_admin(user_id, "admin_rotate_key", |core, admin| {
            let r = core
                .psd
                .rotate_signing_key(core.clock().now_unix())
                .map_err(psd_error)?;
            core.store.append_audit(
                &admin.actor,
                "rotate_key",
                &format!("new {} old {}", r.new_key.key_id, r.old_key.key_id),
                core.now_ms(),
            )?;
            let registered = [&r.new_key, &r.old_key]
                .iter()
                .all(|k| core.register_key(k));
            Ok(AdminRotateKeyReply {
                key_id: r.new_key.key_id.to_string(),
                new_key: signing_key(&r.new_key),
                old_key: signing_key(&r.old_key),
                cmls_registered: registered,
            })
        })
        .await
    }

    /// `admin_revoke_key`: revoke a retired signing key.
    pub(super) async fn admin_revoke_key(
        self: &Arc<Self>,
        user_id: UserId,
        key_id: String,
        reason: String,
    ) -> Result<AdminRevokeKeyReply, CoreError> {
        self.as_admin(user_id, "admin_revoke_key", move |core, admin| {
            let id: KeyId = key_id.parse().map_err(|_| {
                CoreError::refused(codes::BAD_REQUEST, "key_id must be 8 hex digits")
            })?;
            let k = core
                .psd
                .revoke_signing_key(id, core.clock().now_unix(), &reason)
                .map_err(psd_error)?;
            core.store.append_audit(
                &admin.actor,
                "revoke_key",
                &format!("key {id}: {}", k.revocation_reason.as_deref().unwrap_or("")),
                core.now_ms(),
            )?;
            Ok(AdminRevokeKeyReply {
                key_id: id.to_string(),
                key: signing_key(&k),
                cmls_registered: core.register_key(&k),
            })
        })
        .await
    }
}
