//! The ledger's one error type. Messages never carry secrets (password hashes, keys, tokens).

use crate::ItemStatus;

/// Why a ledger operation failed. Every failure leaves the database as it was, except
/// [`LedgerError::NotPending`] from a late print confirmation, which commits the expiry void.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("user already exists")]
    UserExists,
    #[error("unknown user")]
    UnknownUser,
    #[error("request id already used for a different request")]
    IdReused,
    #[error("insufficient funds: balance {balance_mills} mills, needed {needed_mills} mills")]
    InsufficientFunds {
        balance_mills: u64,
        needed_mills: u64,
    },
    /// Unknown serial, or an item of another user (existence is not revealed).
    #[error("unknown item")]
    UnknownItem,
    #[error("item is {status}, not pending")]
    NotPending { status: ItemStatus },
    #[error("refund window closed")]
    RefundWindowClosed,
    /// The item was already reprinted the most times allowed.
    #[error("reprint limit reached: the item was reprinted {reprints} times")]
    ReprintLimit { reprints: u32 },
    /// The item was issued too long ago to be reprinted.
    #[error("reprint window closed")]
    ReprintWindowClosed,
    /// The item's print was confirmed: a printed indicium is never handed out again.
    #[error("the item was already printed; refund or void it instead of printing it again")]
    AlreadyPrinted,
    #[error("item kind cannot be redeemed")]
    NotRedeemable,
    /// Nothing is left to redeem of the item.
    #[error("the item was already redeemed")]
    AlreadyRedeemed,
    /// The item's valid-until day is over: it can no longer be redeemed.
    #[error("the item expired")]
    Expired,
    /// The caller may not redeem this item: only its issuer and the users it allows may.
    #[error("not allowed: only the item's issuer and the users it allows may redeem it")]
    NotAllowed,
    #[error("payment already recorded")]
    DuplicatePayment,
    /// The account was closed; it issues nothing more.
    #[error("the account is closed")]
    AccountClosed,
    /// An ACH debit of this user was returned by the bank and not yet paid: the account is locked
    /// until it is.
    #[error(
        "account locked: the EFT debit {payment_id} of {amount} was returned by the bank; pay exactly {amount} by card to unlock it",
        amount = money(*amount_mills)
    )]
    AccountLocked {
        payment_id: String,
        amount_mills: u64,
    },
    /// The user's meter has no device yet: CMLS licenses it at the first funding.
    #[error(
        "not licensed yet: the meter gets its device id at the first funding; fund the account first"
    )]
    NotLicensed,
    /// A malformed argument (empty or too long id, zero amount, unknown payment method, ...).
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// A register, piece number or balance would leave its range.
    #[error("amount out of range")]
    Overflow,
    /// The signing callback failed; nothing was issued.
    #[error("signing failed: {0}")]
    Signing(String),
    /// The meter was changed behind the ledger's back (its seal, or its descending register
    /// against the balance, does not hold); it is refused until an operator repairs it.
    #[error("meter {device_id} is frozen: {reason}")]
    MeterFrozen { device_id: String, reason: String },
    /// The audit log was changed behind the server's back (its newest entries are gone, or its
    /// chain is broken); nothing more is appended, so no money moves, until an operator repairs it.
    #[error("the audit log was changed behind the server's back: {0}")]
    AuditLogBroken(String),
    /// The crypto device could not seal a meter state; nothing changed.
    #[error("sealing failed: {0}")]
    Sealing(String),
    /// The store has too much work waiting (SQLite: [`crate::sqlite::MAX_QUEUED_OPS`] operations
    /// wait for its writer); this operation was refused at once and nothing of it was done.
    /// Retry later with the same request id. Wire code `busy`.
    #[error("the ledger is busy: too many operations are waiting; nothing was done, try again")]
    Busy,
    /// The commit shared by this operation's group failed; nothing of the operation was kept.
    #[error("group commit failed: {0}")]
    GroupCommit(String),
    /// An invariant check before commit failed; the transaction was rolled back.
    #[error("ledger invariant broken: {0}")]
    Invariant(String),
    #[error("database error: {0}")]
    Db(#[from] rusqlite::Error),
    #[error("database error: {0}")]
    Postgres(#[from] postgres::Error),
    /// Stored data cannot be read back (bad enum name, negative amount, unreadable outcome).
    #[error("corrupt ledger data: {0}")]
    Corrupt(String),
}

/// Dollars for messages ("$12.345"), or mills when out of range.
fn money(mills: u64) -> String {
    stampline_money::Amount::from_mills(mills)
        .map_or_else(|| format!("{mills} mills"), |a| a.to_string())
}

impl LedgerError {
    /// The snake_case wire code. Internal faults all map to "internal", so that their details stay
    /// in the server's log.
    pub fn code(&self) -> &'static str {
        match self {
            LedgerError::UserExists => "user_exists",
            LedgerError::UnknownUser => "unknown_user",
            LedgerError::IdReused => "id_reused",
            LedgerError::InsufficientFunds { .. } => "insufficient_funds",
            LedgerError::UnknownItem => "unknown_item",
            LedgerError::NotPending { .. } => "not_pending",
            LedgerError::RefundWindowClosed => "refund_window_closed",
            LedgerError::ReprintLimit { .. } => "reprint_limit",
            LedgerError::ReprintWindowClosed => "reprint_window_closed",
            LedgerError::AlreadyPrinted => "already_printed",
            LedgerError::NotRedeemable => "not_redeemable",
            LedgerError::AlreadyRedeemed => "already_redeemed",
            LedgerError::Expired => "expired",
            LedgerError::NotAllowed => "not_allowed",
            LedgerError::DuplicatePayment => "duplicate_payment",
            LedgerError::AccountClosed => "account_closed",
            LedgerError::AccountLocked { .. } => "account_locked",
            LedgerError::NotLicensed => "not_licensed",
            LedgerError::InvalidInput(_) => "invalid_input",
            LedgerError::Overflow => "overflow",
            LedgerError::Signing(_) => "signing_failed",
            LedgerError::MeterFrozen { .. } => "meter_frozen",
            LedgerError::AuditLogBroken(_) => "audit_log_broken",
            LedgerError::Busy => "busy",
            LedgerError::Sealing(_)
            | LedgerError::GroupCommit(_)
            | LedgerError::Invariant(_)
            | LedgerError::Db(_)
            | LedgerError::Postgres(_)
            | LedgerError::Corrupt(_) => "internal",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_faults_share_one_code() {
        assert_eq!(LedgerError::Invariant("x".into()).code(), "internal");
        assert_eq!(LedgerError::Corrupt("x".into()).code(), "internal");
        assert_eq!(
            LedgerError::Db(rusqlite::Error::InvalidQuery).code(),
            "internal"
        );
    }

    #[test]
    fn user_facing_codes_are_snake_case() {
        let errors = [
            LedgerError::UserExists,
            LedgerError::IdReused,
            LedgerError::InsufficientFunds {
                balance_mills: 1,
                needed_mills: 2,
            },
            LedgerError::UnknownItem,
            LedgerError::NotPending {
                status: ItemStatus::Voided,
            },
            LedgerError::RefundWindowClosed,
            LedgerError::Busy,
        ];
        for e in errors {
            let code = e.code();
            assert!(code.chars().all(|c| c.is_ascii_lowercase() || c == '_'));
        }
    }
}
