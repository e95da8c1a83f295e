//! Licensing at the first funding: registration stores the user only; the first credit of money
//! (a funding or an auto-refill) licenses the customer with CMLS, registers the device with the
//! current signing key and records both on the meter — before anything is charged, so a card is
//! never charged for an account CMLS refuses. Every step is idempotent (CMLS by the licence key,
//! the device registration by its id and key, the ledger by the pair), so a crash between
//! licensing and charging resumes cleanly at the next funding. Accounts never funded expire.

use std::sync::Arc;

use stampline_items::DeviceId;
use stampline_ledger::UserId;
use stampline_sandbox::LicenseApplication;

use super::{Core, CoreError, blocking};
use crate::error::cmls_error;

/// How long an account may stay unfunded before the sweep deletes it (7 days).
pub const DEFAULT_UNFUNDED_EXPIRY_MS: i64 = 7 * 24 * 3600 * 1000;

/// The CMLS idempotency key of a licence application: the same user repeating the same
/// application (after CMLS or a later step failed) gets the same licence and device id; a
/// corrected application is a new one.
fn license_key(user_key: &str, app: &LicenseApplication) -> String {
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    for part in [
        user_key,
        app.name.as_str(),
        app.address.as_str(),
        app.city.as_str(),
        app.state.as_str(),
        app.zip.as_str(),
    ] {
        ctx.update(&(part.len() as u64).to_be_bytes());
        ctx.update(part.as_bytes());
    }
    format!("license:{}", hex::encode(&ctx.finish().as_ref()[..16]))
}

impl Core {
    /// License the user's meter with CMLS unless it is licensed already (blocking). Called before
    /// the first charge of every path that credits money.
    pub(super) fn ensure_licensed(&self, user_id: UserId) -> Result<(), CoreError> {
        let user = self
            .store
            .user_by_id(user_id)?
            .ok_or_else(|| CoreError::Internal(format!("user {user_id} has no record")))?;
        if user.device_id.is_some() {
            return Ok(());
        }
        let application = LicenseApplication {
            name: user.name,
            address: user.address,
            city: user.city,
            state: user.state,
            zip: user.zip,
        };
        let license = self
            .cmls
            .license_customer(
                &application,
                Some(&license_key(&user.user_key, &application)),
            )
            .map_err(cmls_error)?;
        let model = license.device_model.as_bytes();
        let model: [u8; 4] = model
            .try_into()
            .map_err(|_| CoreError::Internal("CMLS answered a bad device model".into()))?;
        let device_id = DeviceId::new(model, license.device_serial)
            .map_err(|e| CoreError::Internal(e.to_string()))?
            .to_string();
        self.register_device(&license.license_id, &device_id)?;
        self.store
            .license_meter(user_id, &license.license_id, &device_id, self.now_ms())?;
        tracing::info!(user = user_id, device = %device_id, "licensed at the first funding");
        Ok(())
    }

    /// Register a newly licensed device with CMLS, with the key that will sign for it.
    fn register_device(&self, license_id: &str, device_id: &str) -> Result<(), CoreError> {
        let key_id = self.psd.current_signing_key();
        let spki = self
            .psd
            .published_keys()
            .into_iter()
            .find(|k| k.key_id == key_id)
            .map(|k| k.spki_der)
            .ok_or_else(|| CoreError::Internal("signing key is not published".into()))?;
        self.cmls
            .register_device(license_id, device_id, &key_id.to_string(), &spki)
            .map_err(cmls_error)
    }

    /// Delete the accounts registered more than `unfunded_expiry_ms` ago that were never funded
    /// (never licensed: no money, items or licence); their names may be registered again.
    pub async fn expire_unfunded(self: &Arc<Self>) -> Result<Vec<String>, CoreError> {
        let core = Arc::clone(self);
        blocking(move || {
            let now = core.now_ms();
            let cutoff = now.saturating_sub(core.cfg.unfunded_expiry_ms);
            let expired = core.store.expire_unlicensed_users(cutoff, now)?;
            if !expired.is_empty() {
                tracing::info!(count = expired.len(), "expired accounts never funded");
            }
            Ok(expired)
        })
        .await
    }
}
