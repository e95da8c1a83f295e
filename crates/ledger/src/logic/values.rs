//! Checked conversions between the database's `INTEGER` mills and the API's unsigned amounts, and
//! the checks every text input passes before it is stored.

use stampline_money::Amount;

use crate::{ItemStatus, LedgerError, MAX_REGISTER_MILLS};

/// Longest payment, refund, token or paying-payment id the payment rules accept.
pub(crate) const MAX_ID_LEN: usize = 200;

pub(crate) fn to_u64(value: i64, what: &str) -> Result<u64, LedgerError> {
    u64::try_from(value).map_err(|_| LedgerError::Corrupt(format!("{what} is negative: {value}")))
}

/// The amount as stored (`INTEGER`), refusing zero: every transfer moves something.
pub(crate) fn positive_mills(amount: Amount) -> Result<i64, LedgerError> {
    if amount.is_zero() {
        return Err(LedgerError::InvalidInput("amount must be positive".into()));
    }
    i64::try_from(amount.mills()).map_err(|_| LedgerError::Overflow)
}

/// `register + amount`, refusing to pass [`MAX_REGISTER_MILLS`].
pub(crate) fn register_add(register_mills: i64, amount_mills: i64) -> Result<i64, LedgerError> {
    let sum = register_mills
        .checked_add(amount_mills)
        .ok_or(LedgerError::Overflow)?;
    if to_u64(sum, "register")? > MAX_REGISTER_MILLS {
        return Err(LedgerError::Overflow);
    }
    Ok(sum)
}

pub(crate) fn mills(value: u64) -> Result<i64, LedgerError> {
    i64::try_from(value).map_err(|_| LedgerError::Overflow)
}

pub(crate) fn hash32(bytes: &[u8], what: &str) -> Result<[u8; 32], LedgerError> {
    <[u8; 32]>::try_from(bytes)
        .map_err(|_| LedgerError::Corrupt(format!("{what} is {} bytes, not 32", bytes.len())))
}

pub(crate) fn parse_status(s: &str) -> Result<ItemStatus, LedgerError> {
    ItemStatus::parse(s).ok_or_else(|| LedgerError::Corrupt(format!("unknown item status {s:?}")))
}

pub(crate) fn check_text(
    what: &str,
    value: &str,
    min_len: usize,
    max_len: usize,
) -> Result<(), LedgerError> {
    if value.len() < min_len {
        return Err(LedgerError::InvalidInput(format!("{what} is empty")));
    }
    if value.len() > max_len {
        return Err(LedgerError::InvalidInput(format!(
            "{what} is longer than {max_len} bytes"
        )));
    }
    if value.contains('\0') {
        return Err(LedgerError::InvalidInput(format!("{what} contains NUL")));
    }
    Ok(())
}
