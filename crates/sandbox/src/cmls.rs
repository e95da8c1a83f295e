//! The postal licensing system (CMLS): licenses customers, assigns device ids, records resets.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::store::JsonState;

/// Provider and model of every Stampline device id ("SL01" + 4-byte serial).
pub const DEVICE_MODEL: &str = "SL01";
/// Longest name or address line CMLS accepts.
pub const MAX_FIELD_CHARS: usize = 100;

#[derive(Debug, thiserror::Error)]
pub enum CmlsError {
    #[error("licence application refused: {0}")]
    Refused(String),
    #[error("licensing system unavailable: {0}")]
    Unavailable(String),
}

impl From<std::io::Error> for CmlsError {
    fn from(e: std::io::Error) -> Self {
        CmlsError::Unavailable(e.to_string())
    }
}

/// A customer's licence application.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LicenseApplication {
    pub name: String,
    pub address: String,
    pub city: String,
    pub state: String,
    pub zip: String,
}

/// A licence and the device (meter) registered under it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct License {
    pub license_id: String,
    /// Serial half of the device id; the model is [`DEVICE_MODEL`].
    pub device_serial: u32,
}

/// An item-signing public key as registered with the licensing system (verifiers find keys there
/// too). Registering the same key id again updates its record (retirement, revocation).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRegistration {
    pub key_id: String,
    pub spki_der_hex: String,
    pub valid_from_unix: i64,
    pub valid_until_unix: Option<i64>,
    pub revoked_at_unix: Option<i64>,
    pub revocation_reason: Option<String>,
}

/// What the server needs from the licensing system.
pub trait Cmls: Send + Sync + std::fmt::Debug {
    /// Whether this is a stand-in (the server says so at start).
    fn is_sandbox(&self) -> bool;
    fn license_customer(&self, app: &LicenseApplication) -> Result<License, CmlsError>;
    /// Report a register reset (postage value added) for a device.
    fn report_reset(
        &self,
        device_id: &str,
        amount_mills: u64,
        ascending_mills: u64,
        descending_mills: u64,
    ) -> Result<(), CmlsError>;
    /// Register or update an item-signing public key.
    fn register_key(&self, key: &KeyRegistration) -> Result<(), CmlsError> {
        Err(CmlsError::Unavailable(format!(
            "this licensing system link does not take key registrations (key {})",
            key.key_id
        )))
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct State {
    next_serial: u32,
    licenses: BTreeMap<String, LicenseApplication>,
    resets: Vec<(String, u64, u64, u64)>,
    #[serde(default)]
    keys: BTreeMap<String, KeyRegistration>,
}

/// The in-process CMLS sandbox.
#[derive(Debug)]
pub struct SandboxCmls {
    state: JsonState<State>,
}

impl SandboxCmls {
    /// State in `path` (a JSON file), or in memory with `None`.
    pub fn open(path: Option<&Path>) -> Result<SandboxCmls, CmlsError> {
        Ok(SandboxCmls {
            state: JsonState::open(path)?,
        })
    }

    /// Signing keys registered so far.
    pub fn registered_keys(&self) -> Vec<KeyRegistration> {
        self.state.read(|s| s.keys.values().cloned().collect())
    }

    /// Resets reported so far for a device: (amount, ascending, descending).
    pub fn resets(&self, device_id: &str) -> Vec<(u64, u64, u64)> {
        self.state.read(|s| {
            s.resets
                .iter()
                .filter(|r| r.0 == device_id)
                .map(|r| (r.1, r.2, r.3))
                .collect()
        })
    }
}

fn check_field(what: &str, value: &str) -> Result<(), CmlsError> {
    let trimmed = value.trim();
    if trimmed.is_empty() || value.chars().count() > MAX_FIELD_CHARS {
        return Err(CmlsError::Refused(format!(
            "{what} must be 1 to {MAX_FIELD_CHARS} characters"
        )));
    }
    if value.chars().any(char::is_control) {
        return Err(CmlsError::Refused(format!("{what} has control characters")));
    }
    Ok(())
}

impl Cmls for SandboxCmls {
    fn is_sandbox(&self) -> bool {
        true
    }

    fn license_customer(&self, app: &LicenseApplication) -> Result<License, CmlsError> {
        check_field("name", &app.name)?;
        check_field("address", &app.address)?;
        check_field("city", &app.city)?;
        if app.state.len() != 2 || !app.state.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(CmlsError::Refused(
                "state must be a 2-letter code such as MA".into(),
            ));
        }
        if app.zip.len() != 5 || !app.zip.bytes().all(|b| b.is_ascii_digit()) {
            return Err(CmlsError::Refused("ZIP must be 5 digits".into()));
        }
        self.state.update(|s| {
            s.next_serial = s
                .next_serial
                .checked_add(1)
                .ok_or_else(|| CmlsError::Unavailable("device serials exhausted".into()))?;
            let license_id = format!("LIC-{:08}", s.next_serial);
            s.licenses.insert(license_id.clone(), app.clone());
            Ok(License {
                license_id,
                device_serial: s.next_serial,
            })
        })
    }

    fn report_reset(
        &self,
        device_id: &str,
        amount_mills: u64,
        ascending_mills: u64,
        descending_mills: u64,
    ) -> Result<(), CmlsError> {
        self.state.update(|s| {
            s.resets.push((
                device_id.to_owned(),
                amount_mills,
                ascending_mills,
                descending_mills,
            ));
            Ok::<_, CmlsError>(())
        })
    }

    fn register_key(&self, key: &KeyRegistration) -> Result<(), CmlsError> {
        if key.key_id.len() != 8 || !key.key_id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(CmlsError::Refused("key id must be 8 hex digits".into()));
        }
        self.state.update(|s| {
            s.keys.insert(key.key_id.clone(), key.clone());
            Ok::<_, CmlsError>(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app() -> LicenseApplication {
        LicenseApplication {
            name: "Ann Example".into(),
            address: "1 Main St".into(),
            city: "Boston".into(),
            state: "MA".into(),
            zip: "02134".into(),
        }
    }

    #[test]
    fn licences_get_distinct_device_serials_that_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cmls.json");
        let a = SandboxCmls::open(Some(&path))
            .unwrap()
            .license_customer(&app())
            .unwrap();
        let b = SandboxCmls::open(Some(&path))
            .unwrap()
            .license_customer(&app())
            .unwrap();
        assert_ne!(a.device_serial, b.device_serial);
        assert_ne!(a.license_id, b.license_id);
    }

    #[test]
    fn a_registered_key_is_updated_in_place_and_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cmls.json");
        let cmls = SandboxCmls::open(Some(&path)).unwrap();
        let mut key = KeyRegistration {
            key_id: "0a0b0c0d".into(),
            spki_der_hex: "3059".into(),
            valid_from_unix: 1,
            valid_until_unix: None,
            revoked_at_unix: None,
            revocation_reason: None,
        };
        cmls.register_key(&key).unwrap();
        key.revoked_at_unix = Some(5);
        key.revocation_reason = Some("lost".into());
        cmls.register_key(&key).unwrap();
        let back = SandboxCmls::open(Some(&path)).unwrap().registered_keys();
        assert_eq!(back, vec![key.clone()]);
        key.key_id = "nothex!!".into();
        assert!(matches!(
            cmls.register_key(&key),
            Err(CmlsError::Refused(_))
        ));
    }

    #[test]
    fn bad_applications_are_refused() {
        let cmls = SandboxCmls::open(None).unwrap();
        let mut bad = app();
        bad.zip = "0213".into();
        assert!(matches!(
            cmls.license_customer(&bad),
            Err(CmlsError::Refused(_))
        ));
        let mut bad = app();
        bad.name = " ".into();
        assert!(cmls.license_customer(&bad).is_err());
        let mut bad = app();
        bad.state = "Mass".into();
        assert!(cmls.license_customer(&bad).is_err());
    }
}
