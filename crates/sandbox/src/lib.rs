//! Stand-ins for the two external systems: the postal licensing system (CMLS) and the financial
//! system (a card processor and ACH). The [`Cmls`] and [`Bank`] traits are the seams the server
//! calls; [`SandboxCmls`] and [`SandboxBank`] are in-process implementations that keep their own
//! state in a JSON file and its journal (`store`), so a retried call after a crash sees what the first one did.
//!
//! [`service`] serves either one as a standalone HTTPS/JSON service (`stampline sandbox cmls|bank`).
//!
//! They must never be mistaken for production systems: the server says plainly when it uses them.
//! The bank never hands the card number back: callers get a token and the last four digits.

mod bank;
mod cmls;
pub mod service;
mod store;

pub use bank::{
    Bank, BankError, CardToken, DEFAULT_SETTLE_AFTER_MS, MAX_CHARGE_MILLS, Payment, PaymentRecord,
    PaymentStatus, RETURN_WINDOW_MS, Refund, SandboxBank, aba_check_digit_ok, luhn_ok,
};
pub use cmls::{
    Cmls, CmlsError, DEVICE_MODEL, DeviceStatus, KeyRegistration, License, LicenseApplication,
    RegisterReport, SANDBOX_DEVICE_MODEL, SandboxCmls, UsageReport,
};
pub use store::state_json;
