//! The server's one error type, [`CoreError`], and the one place each outside system's errors
//! (ledger, bank, CMLS, crypto device, rate table) map to it. Every code is one of
//! `stampline_wire::codes`; internal details are logged, never sent.

use stampline_ledger::LedgerError;
use stampline_money::Amount;
use stampline_psd::PsdError;
use stampline_sandbox::{BankError, CmlsError};
use stampline_wire::codes;

/// Why the server refused something; `code` is the documented wire/HTTP code.
#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    #[error("{message}")]
    Refused { code: &'static str, message: String },
    #[error("wrong user name or password")]
    BadCredentials,
    #[error("{0}")]
    Unavailable(String),
    #[error("internal error")]
    Internal(String),
}

impl CoreError {
    /// A refusal with its code and the message sent with it.
    pub fn refused(code: &'static str, message: impl Into<String>) -> CoreError {
        CoreError::Refused {
            code,
            message: message.into(),
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            CoreError::Refused { code, .. } => code,
            CoreError::BadCredentials => codes::BAD_CREDENTIALS,
            CoreError::Unavailable(_) => codes::UNAVAILABLE,
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

impl From<stampline_rates::RateError> for CoreError {
    fn from(e: stampline_rates::RateError) -> Self {
        match e.code() {
            codes::INTERNAL => CoreError::Internal(e.to_string()),
            code => CoreError::refused(code, e.to_string()),
        }
    }
}

/// A bank refusal or failure.
pub fn bank_error(e: BankError) -> CoreError {
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

/// A CMLS refusal or failure.
pub fn cmls_error(e: CmlsError) -> CoreError {
    match e {
        CmlsError::Refused(m) => CoreError::refused(codes::LICENSE_REFUSED, m),
        CmlsError::Unknown(m) => CoreError::Internal(format!("CMLS does not know {m}")),
        CmlsError::Unavailable(m) => CoreError::Unavailable(format!(
            "licensing system unavailable: {m}; nothing was registered, try again"
        )),
    }
}

/// A crypto device refusal or failure in a key operation.
pub fn psd_error(e: PsdError) -> CoreError {
    match e {
        PsdError::UnknownKey(_) => CoreError::refused(codes::UNKNOWN_KEY, e.to_string()),
        PsdError::KeyIsCurrent(_) => CoreError::refused(codes::KEY_CURRENT, e.to_string()),
        PsdError::BadInput(_) => CoreError::refused(codes::BAD_REQUEST, e.to_string()),
        other => CoreError::Internal(format!("crypto device: {other}")),
    }
}

/// Dollars for messages ("$12.345"), or mills when out of range.
pub fn dollars(mills: u64) -> String {
    Amount::from_mills(mills).map_or_else(|| format!("{mills} mills"), |a| a.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clients_are_not_told_which_audit_entries_were_tampered_with() {
        let e = CoreError::from(LedgerError::AuditLogBroken(
            "entry 7 and those after it are gone".into(),
        ));
        assert_eq!(e.code(), codes::AUDIT_LOG_BROKEN);
        let message = e.public_message();
        assert!(!message.contains("entry 7"), "{message}");
        assert!(message.contains("nothing was changed"), "{message}");
    }

    /// One of each ledger error. The match below has no wildcard: a new variant stops this test
    /// from compiling until it is added here (and its code to `codes::ALL`).
    fn one_of_each_ledger_error() -> Vec<LedgerError> {
        let all = vec![
            LedgerError::UserExists,
            LedgerError::UnknownUser,
            LedgerError::IdReused,
            LedgerError::InsufficientFunds {
                balance_mills: 1,
                needed_mills: 2,
            },
            LedgerError::UnknownItem,
            LedgerError::NotPending {
                status: stampline_ledger::ItemStatus::Voided,
            },
            LedgerError::RefundWindowClosed,
            LedgerError::ReprintLimit { reprints: 3 },
            LedgerError::ReprintWindowClosed,
            LedgerError::AlreadyPrinted,
            LedgerError::NotRedeemable,
            LedgerError::AlreadyRedeemed,
            LedgerError::Expired,
            LedgerError::NotAllowed,
            LedgerError::DuplicatePayment,
            LedgerError::AccountClosed,
            LedgerError::AccountLocked {
                payment_id: "p".into(),
                amount_mills: 1,
            },
            LedgerError::NotLicensed,
            LedgerError::InvalidInput("x".into()),
            LedgerError::Overflow,
            LedgerError::Signing("x".into()),
            LedgerError::MeterFrozen {
                device_id: "d".into(),
                reason: "r".into(),
            },
            LedgerError::AuditLogBroken("x".into()),
            LedgerError::Sealing("x".into()),
            LedgerError::GroupCommit("x".into()),
            LedgerError::Invariant("x".into()),
            LedgerError::Corrupt("x".into()),
            LedgerError::Busy,
        ];
        for e in &all {
            match e {
                LedgerError::UserExists
                | LedgerError::UnknownUser
                | LedgerError::IdReused
                | LedgerError::InsufficientFunds { .. }
                | LedgerError::UnknownItem
                | LedgerError::NotPending { .. }
                | LedgerError::RefundWindowClosed
                | LedgerError::ReprintLimit { .. }
                | LedgerError::ReprintWindowClosed
                | LedgerError::AlreadyPrinted
                | LedgerError::NotRedeemable
                | LedgerError::AlreadyRedeemed
                | LedgerError::Expired
                | LedgerError::NotAllowed
                | LedgerError::DuplicatePayment
                | LedgerError::AccountClosed
                | LedgerError::AccountLocked { .. }
                | LedgerError::NotLicensed
                | LedgerError::InvalidInput(_)
                | LedgerError::Overflow
                | LedgerError::Signing(_)
                | LedgerError::MeterFrozen { .. }
                | LedgerError::AuditLogBroken(_)
                | LedgerError::Sealing(_)
                | LedgerError::GroupCommit(_)
                | LedgerError::Invariant(_)
                // The database drivers' errors are not constructible here; both are `internal`
                // in the same arm of `code()` as `Invariant`.
                | LedgerError::Db(_)
                | LedgerError::Postgres(_)
                | LedgerError::Corrupt(_)
                | LedgerError::Busy => {}
            }
        }
        all
    }

    #[test]
    fn every_code_the_ledger_can_return_is_in_the_wire_registry() {
        for e in one_of_each_ledger_error() {
            let code = e.code();
            assert!(
                codes::meaning(code).is_some(),
                "ledger code {code} ({e}) is missing from stampline_wire::codes::ALL"
            );
        }
    }

    #[test]
    fn every_rate_and_outside_system_code_is_in_the_wire_registry() {
        let rate_errors = [
            stampline_rates::RateError::BadWeight,
            stampline_rates::RateError::TooHeavy {
                class: "first-class-letter",
                max: "3.5".into(),
            },
            stampline_rates::RateError::BadTable("x".into()),
        ];
        let mut sent: Vec<&'static str> = rate_errors.iter().map(|e| e.code()).collect();
        sent.extend(
            [
                BankError::BadCard,
                BankError::BadRouting,
                BankError::Declined,
                BankError::BadAmount,
                BankError::KeyReused,
                BankError::BadKey,
            ]
            .into_iter()
            .map(|e| bank_error(e).code()),
        );
        sent.extend(
            [
                CmlsError::Refused("x".into()),
                CmlsError::Unknown("x".into()),
                CmlsError::Unavailable("x".into()),
            ]
            .into_iter()
            .map(|e| cmls_error(e).code()),
        );
        sent.push(CoreError::BadCredentials.code());
        for code in sent {
            assert!(
                codes::meaning(code).is_some(),
                "{code} is not in codes::ALL"
            );
        }
    }
}
