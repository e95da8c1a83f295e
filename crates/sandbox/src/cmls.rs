//! The postal licensing system (CMLS): licenses customers, registers devices with their public
//! keys, records resets and refunds, takes a daily usage report per device and checks that the
//! registers continue from one report to the next, withdraws devices, and tells verifiers a
//! device's status and key.

use std::collections::BTreeSet;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::store::{Changes, Journaled, JsonState, Table};

/// Provider and model of every Stampline device id ("SL01" + 4-byte serial) a licensing system
/// that names no model hands out.
pub const DEVICE_MODEL: &str = "SL01";
/// The model the sandbox hands out: [`stampline_items::TEST_DEVICE_MODEL`], so that every item a
/// sandbox server signs is marked as a test item.
pub const SANDBOX_DEVICE_MODEL: &str = "TEST";
/// Longest name or address line CMLS accepts.
pub const MAX_FIELD_CHARS: usize = 100;
/// Longest public key (SPKI DER) a device may register.
pub const MAX_KEY_BYTES: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum CmlsError {
    #[error("licence application refused: {0}")]
    Refused(String),
    #[error("unknown device or licence: {0}")]
    Unknown(String),
    #[error("licensing system unavailable: {0}")]
    Unavailable(String),
}

impl CmlsError {
    /// The snake_case code the HTTP service answers with.
    pub fn code(&self) -> &'static str {
        match self {
            CmlsError::Refused(_) => "refused",
            CmlsError::Unknown(_) => "unknown",
            CmlsError::Unavailable(_) => "unavailable",
        }
    }

    pub fn from_code(code: &str, message: &str) -> CmlsError {
        match code {
            "refused" => CmlsError::Refused(message.to_owned()),
            "unknown" => CmlsError::Unknown(message.to_owned()),
            _ => CmlsError::Unavailable(format!("{code}: {message}")),
        }
    }
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
    /// Model half of the device id (4 capitals or digits); [`DEVICE_MODEL`] when the licensing
    /// system names none, [`SANDBOX_DEVICE_MODEL`] from the sandbox.
    #[serde(default = "default_device_model")]
    pub device_model: String,
    /// Serial half of the device id.
    pub device_serial: u32,
}

fn default_device_model() -> String {
    DEVICE_MODEL.to_owned()
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

/// A device's daily usage: what it printed since the last report and its registers now.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageReport {
    pub device_id: String,
    /// The day reported, YYYY-MM-DD.
    pub date: String,
    /// Pieces printed since the last report.
    pub pieces: u64,
    /// Postage printed since the last report (the growth of the ascending register).
    pub postage_mills: u64,
    /// The piece counter now.
    pub last_piece: u64,
    pub ascending_mills: u64,
    pub descending_mills: u64,
}

/// What CMLS knows of a device (verifiers and reconciliation read it).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceStatus {
    pub device_id: String,
    pub license_id: String,
    /// "active" or "withdrawn".
    pub status: String,
    pub key_id: String,
    pub public_key_spki_der_base64: String,
    pub registered_ms: i64,
    pub withdrawn_ms: Option<i64>,
    pub resets: u64,
    pub reset_total_mills: u64,
    pub refunds: u64,
    pub refund_total_mills: u64,
    /// The newest reset's registers: (ascending, descending).
    pub last_reset_registers: Option<(u64, u64)>,
    pub last_report: Option<UsageReport>,
    /// Continuity breaks found between reports, oldest first.
    pub flags: Vec<String>,
}

/// The meter's registers reported to the licensing system after a reset (postage value added;
/// `reference` is the payment) or a refund (value credited back; `reference` is the item's
/// serial). The reference makes a repeated report count once. Also the JSON body of both
/// reports over HTTPS.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterReport {
    pub reference: String,
    pub amount_mills: u64,
    pub ascending_mills: u64,
    pub descending_mills: u64,
}

/// What the server needs from the licensing system.
pub trait Cmls: Send + Sync + std::fmt::Debug {
    /// Whether this is a stand-in (the server says so at start).
    fn is_sandbox(&self) -> bool;
    /// A licence for the customer. With an idempotency key, a repeat of the same application
    /// answers the same licence (a registration retried after a later step failed).
    fn license_customer(
        &self,
        app: &LicenseApplication,
        idempotency_key: Option<&str>,
    ) -> Result<License, CmlsError>;
    /// Register the licence's device with the key that signs for it (SPKI DER).
    fn register_device(
        &self,
        license_id: &str,
        device_id: &str,
        key_id: &str,
        spki_der: &[u8],
    ) -> Result<(), CmlsError>;
    /// Report a register reset (postage value added); the report's reference (the payment)
    /// makes a repeated report count once.
    fn report_reset(&self, device_id: &str, report: &RegisterReport) -> Result<(), CmlsError>;
    /// Register or update an item-signing public key.
    fn register_key(&self, key: &KeyRegistration) -> Result<(), CmlsError> {
        Err(CmlsError::Unavailable(format!(
            "this licensing system link does not take key registrations (key {})",
            key.key_id
        )))
    }
    /// Report value credited back to a device for a refunded item (the report's reference is
    /// its serial; once per serial).
    fn report_refund(&self, device_id: &str, report: &RegisterReport) -> Result<(), CmlsError>;
    /// The daily usage report; answers the continuity flags it raised (empty when continuous).
    fn report_usage(&self, report: &UsageReport) -> Result<Vec<String>, CmlsError>;
    /// Withdraw a device (closed account, lost, stolen).
    fn withdraw_device(&self, device_id: &str, reason: &str) -> Result<DeviceStatus, CmlsError>;
    fn device_status(&self, device_id: &str) -> Result<DeviceStatus, CmlsError>;
    fn devices(&self) -> Result<Vec<DeviceStatus>, CmlsError>;
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct DeviceRecord {
    status: DeviceStatus,
    /// References of resets and serials of refunds already counted.
    seen: BTreeSet<String>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct State {
    next_serial: u32,
    licenses: Table<LicenseApplication>,
    #[serde(default)]
    keys: Table<KeyRegistration>,
    devices: Table<DeviceRecord>,
    /// Licence idempotency key → (the application as JSON, the licence).
    #[serde(default)]
    license_keys: Table<(String, License)>,
}

impl Journaled for State {
    fn changes(&mut self, out: &mut Changes) -> serde_json::Result<()> {
        out.scalar("next_serial", &self.next_serial)?;
        out.table("licenses", &mut self.licenses)?;
        out.table("keys", &mut self.keys)?;
        out.table("devices", &mut self.devices)?;
        out.table("license_keys", &mut self.license_keys)
    }
}

/// The in-process CMLS sandbox (also the storage of `stampline sandbox cmls`).
#[derive(Debug)]
pub struct SandboxCmls {
    state: JsonState<State>,
}

fn now_ms() -> i64 {
    i64::try_from(time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000)
        .unwrap_or(i64::MAX)
}

impl SandboxCmls {
    /// State in `path` (a JSON snapshot and its journal, `PATH.journal`), or in memory with `None`.
    pub fn open(path: Option<&Path>) -> Result<SandboxCmls, CmlsError> {
        Ok(SandboxCmls {
            state: JsonState::open(path)?,
        })
    }

    /// Signing keys registered so far.
    pub fn registered_keys(&self) -> Vec<KeyRegistration> {
        self.state.read(|s| s.keys.values().cloned().collect())
    }

    /// The last reset's registers and the reset total of a device, for tests.
    pub fn resets(&self, device_id: &str) -> Option<(u64, Option<(u64, u64)>)> {
        self.state.read(|s| {
            s.devices
                .get(device_id)
                .map(|d| (d.status.reset_total_mills, d.status.last_reset_registers))
        })
    }

    fn with_device<R>(
        &self,
        device_id: &str,
        f: impl FnOnce(&mut DeviceRecord) -> Result<R, CmlsError>,
    ) -> Result<R, CmlsError> {
        self.state.update(|s| {
            let d = s
                .devices
                .get_mut(device_id)
                .ok_or_else(|| CmlsError::Unknown(device_id.to_owned()))?;
            f(d)
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

fn check_registers(d: &DeviceStatus, ascending_mills: u64) -> Result<(), CmlsError> {
    let last_asc = d
        .last_report
        .as_ref()
        .map(|r| r.ascending_mills)
        .into_iter()
        .chain(d.last_reset_registers.map(|r| r.0))
        .max()
        .unwrap_or(0);
    if ascending_mills < last_asc {
        return Err(CmlsError::Refused(format!(
            "ascending register {ascending_mills} is below the last one reported ({last_asc})"
        )));
    }
    Ok(())
}

/// Count a register report (`what`: reset or refund) once per reference: a repeat changes
/// nothing; a first report whose ascending register went back is refused.
fn count_once(
    d: &mut DeviceRecord,
    what: &str,
    report: &RegisterReport,
    count: impl FnOnce(&mut DeviceStatus),
) -> Result<(), CmlsError> {
    if !d.seen.insert(format!("{what}:{}", report.reference)) {
        return Ok(());
    }
    check_registers(&d.status, report.ascending_mills)?;
    count(&mut d.status);
    Ok(())
}

impl Cmls for SandboxCmls {
    fn is_sandbox(&self) -> bool {
        true
    }

    fn license_customer(
        &self,
        app: &LicenseApplication,
        idempotency_key: Option<&str>,
    ) -> Result<License, CmlsError> {
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
        if app.zip == "00000" {
            return Err(CmlsError::Refused(
                "ZIP 00000 is not a delivery area".into(),
            ));
        }
        let asked =
            serde_json::to_string(app).map_err(|e| CmlsError::Unavailable(e.to_string()))?;
        if let Some(key) = idempotency_key
            && (key.is_empty() || key.len() > MAX_FIELD_CHARS * 2)
        {
            return Err(CmlsError::Refused(
                "idempotency key must be 1 to 200 bytes".into(),
            ));
        }
        self.state.update(|s| {
            if let Some(key) = idempotency_key
                && let Some((before, license)) = s.license_keys.get(key)
            {
                return if *before == asked {
                    Ok(license.clone())
                } else {
                    Err(CmlsError::Refused(
                        "idempotency key reused for a different application".into(),
                    ))
                };
            }
            s.next_serial = s
                .next_serial
                .checked_add(1)
                .ok_or_else(|| CmlsError::Unavailable("device serials exhausted".into()))?;
            let license_id = format!("LIC-{:08}", s.next_serial);
            s.licenses.insert(license_id.clone(), app.clone());
            let license = License {
                license_id,
                device_model: SANDBOX_DEVICE_MODEL.to_owned(),
                device_serial: s.next_serial,
            };
            if let Some(key) = idempotency_key {
                s.license_keys
                    .insert(key.to_owned(), (asked, license.clone()));
            }
            Ok(license)
        })
    }

    fn register_device(
        &self,
        license_id: &str,
        device_id: &str,
        key_id: &str,
        spki_der: &[u8],
    ) -> Result<(), CmlsError> {
        use base64::Engine as _;
        if spki_der.is_empty() || spki_der.len() > MAX_KEY_BYTES {
            return Err(CmlsError::Refused("public key missing or too long".into()));
        }
        if key_id.len() != 8 || !key_id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(CmlsError::Refused("key id must be 8 hex digits".into()));
        }
        let spki = base64::engine::general_purpose::STANDARD.encode(spki_der);
        self.state.update(|s| {
            if !s.licenses.contains_key(license_id) {
                return Err(CmlsError::Unknown(format!("licence {license_id}")));
            }
            if let Some(d) = s.devices.get(device_id) {
                // A repeated registration of the same device and key is answered again.
                return if d.status.license_id == license_id
                    && d.status.public_key_spki_der_base64 == spki
                {
                    Ok(())
                } else {
                    Err(CmlsError::Refused(format!(
                        "device {device_id} is registered under another licence or key"
                    )))
                };
            }
            s.devices.insert(
                device_id.to_owned(),
                DeviceRecord {
                    status: DeviceStatus {
                        device_id: device_id.to_owned(),
                        license_id: license_id.to_owned(),
                        status: "active".into(),
                        key_id: key_id.to_owned(),
                        public_key_spki_der_base64: spki,
                        registered_ms: now_ms(),
                        withdrawn_ms: None,
                        resets: 0,
                        reset_total_mills: 0,
                        refunds: 0,
                        refund_total_mills: 0,
                        last_reset_registers: None,
                        last_report: None,
                        flags: Vec::new(),
                    },
                    seen: BTreeSet::new(),
                },
            );
            Ok(())
        })
    }

    fn report_reset(&self, device_id: &str, report: &RegisterReport) -> Result<(), CmlsError> {
        self.with_device(device_id, |d| {
            if d.status.status != "active" {
                return Err(CmlsError::Refused("device is withdrawn".into()));
            }
            count_once(d, "reset", report, |status| {
                status.resets += 1;
                status.reset_total_mills =
                    status.reset_total_mills.saturating_add(report.amount_mills);
                status.last_reset_registers =
                    Some((report.ascending_mills, report.descending_mills));
            })
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
    fn report_refund(&self, device_id: &str, report: &RegisterReport) -> Result<(), CmlsError> {
        self.with_device(device_id, |d| {
            count_once(d, "refund", report, |status| {
                status.refunds += 1;
                status.refund_total_mills = status
                    .refund_total_mills
                    .saturating_add(report.amount_mills);
            })
        })
    }

    fn report_usage(&self, report: &UsageReport) -> Result<Vec<String>, CmlsError> {
        if report.date.len() != 10 {
            return Err(CmlsError::Refused("date must be YYYY-MM-DD".into()));
        }
        self.with_device(&report.device_id, |d| {
            let (prev_piece, prev_asc) = d
                .status
                .last_report
                .as_ref()
                .map_or((0, 0), |r| (r.last_piece, r.ascending_mills));
            let mut flags = Vec::new();
            if prev_piece.checked_add(report.pieces) != Some(report.last_piece) {
                flags.push(format!(
                    "{}: piece gap: last report ended at piece {prev_piece}, this one reports {} pieces ending at {}",
                    report.date, report.pieces, report.last_piece
                ));
            }
            if prev_asc.checked_add(report.postage_mills) != Some(report.ascending_mills) {
                flags.push(format!(
                    "{}: register gap: ascending was {prev_asc}, plus {} printed should be {}, reported {}",
                    report.date,
                    report.postage_mills,
                    prev_asc.saturating_add(report.postage_mills),
                    report.ascending_mills
                ));
            }
            d.status.flags.extend(flags.iter().cloned());
            d.status.last_report = Some(report.clone());
            Ok(flags)
        })
    }

    fn withdraw_device(&self, device_id: &str, reason: &str) -> Result<DeviceStatus, CmlsError> {
        check_field("reason", reason)?;
        self.with_device(device_id, |d| {
            if d.status.status != "withdrawn" {
                d.status.status = "withdrawn".into();
                d.status.withdrawn_ms = Some(now_ms());
            }
            Ok(d.status.clone())
        })
    }

    fn device_status(&self, device_id: &str) -> Result<DeviceStatus, CmlsError> {
        self.state
            .read(|s| s.devices.get(device_id).map(|d| d.status.clone()))
            .ok_or_else(|| CmlsError::Unknown(device_id.to_owned()))
    }

    fn devices(&self) -> Result<Vec<DeviceStatus>, CmlsError> {
        Ok(self
            .state
            .read(|s| s.devices.values().map(|d| d.status.clone()).collect()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registers(reference: &str, amount: u64, asc: u64, desc: u64) -> RegisterReport {
        RegisterReport {
            reference: reference.into(),
            amount_mills: amount,
            ascending_mills: asc,
            descending_mills: desc,
        }
    }

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
            .license_customer(&app(), None)
            .unwrap();
        let b = SandboxCmls::open(Some(&path))
            .unwrap()
            .license_customer(&app(), None)
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
    fn the_sandbox_hands_out_the_test_device_model() {
        assert_eq!(
            SANDBOX_DEVICE_MODEL.as_bytes(),
            stampline_items::TEST_DEVICE_MODEL
        );
        let lic = SandboxCmls::open(None)
            .unwrap()
            .license_customer(&app(), None)
            .unwrap();
        assert_eq!(lic.device_model, SANDBOX_DEVICE_MODEL);
    }

    #[test]
    fn bad_applications_are_refused() {
        let cmls = SandboxCmls::open(None).unwrap();
        let mut bad = app();
        bad.zip = "0213".into();
        assert!(matches!(
            cmls.license_customer(&bad, None),
            Err(CmlsError::Refused(_))
        ));
        let mut bad = app();
        bad.name = " ".into();
        assert!(cmls.license_customer(&bad, None).is_err());
        let mut bad = app();
        bad.state = "Mass".into();
        assert!(cmls.license_customer(&bad, None).is_err());
    }

    #[test]
    fn usage_reports_that_skip_pieces_or_value_are_flagged() {
        let cmls = SandboxCmls::open(None).unwrap();
        let lic = cmls.license_customer(&app(), None).unwrap();
        cmls.register_device(&lic.license_id, "TEST00000001", "0a0b0c0d", &[1, 2, 3])
            .unwrap();
        cmls.report_reset("TEST00000001", &registers("pay_1", 20_000, 0, 20_000))
            .unwrap();
        cmls.report_reset("TEST00000001", &registers("pay_1", 20_000, 0, 20_000))
            .unwrap();
        let report = |pieces, postage, last_piece, asc| UsageReport {
            device_id: "TEST00000001".into(),
            date: "2026-11-28".into(),
            pieces,
            postage_mills: postage,
            last_piece,
            ascending_mills: asc,
            descending_mills: 20_000 - asc,
        };
        assert!(
            cmls.report_usage(&report(2, 1_560, 2, 1_560))
                .unwrap()
                .is_empty()
        );
        let flags = cmls.report_usage(&report(1, 780, 4, 3_120)).unwrap();
        assert_eq!(flags.len(), 2, "{flags:?}");
        let status = cmls.device_status("TEST00000001").unwrap();
        assert_eq!(status.resets, 1);
        assert_eq!(status.reset_total_mills, 20_000);
        assert_eq!(status.flags, flags);
    }

    #[test]
    fn withdrawn_devices_take_no_more_resets() {
        let cmls = SandboxCmls::open(None).unwrap();
        let lic = cmls.license_customer(&app(), None).unwrap();
        assert!(matches!(
            cmls.register_device("LIC-99999999", "TEST00000001", "0a0b0c0d", &[1]),
            Err(CmlsError::Unknown(_))
        ));
        cmls.register_device(&lic.license_id, "TEST00000001", "0a0b0c0d", &[1])
            .unwrap();
        let s = cmls
            .withdraw_device("TEST00000001", "account closed")
            .unwrap();
        assert_eq!(s.status, "withdrawn");
        assert!(
            cmls.report_reset("TEST00000001", &registers("p", 1, 0, 1))
                .is_err()
        );
    }

    #[test]
    fn a_repeated_application_with_its_key_gets_the_same_licence() {
        let cmls = SandboxCmls::open(None).unwrap();
        let a = cmls.license_customer(&app(), Some("k1")).unwrap();
        assert_eq!(cmls.license_customer(&app(), Some("k1")).unwrap(), a);
        assert_ne!(cmls.license_customer(&app(), Some("k2")).unwrap(), a);
        let mut other = app();
        other.zip = "94105".into();
        assert!(matches!(
            cmls.license_customer(&other, Some("k1")),
            Err(CmlsError::Refused(_))
        ));
    }
}
