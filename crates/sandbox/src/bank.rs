//! The financial system: card tokenisation and charges, ACH (EFT) debits, with idempotency keys.
//!
//! Test cards follow common processor test modes (DESIGN.md §7): 4242424242424242 is approved,
//! 4000000000000002 is declined, 4000000000009995 is declined for insufficient funds; any other
//! number that passes the Luhn check is approved.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::store::JsonState;

/// Largest single charge the sandbox accepts, in mills ($10,000).
pub const MAX_CHARGE_MILLS: u64 = 10_000_000;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BankError {
    #[error("card number is not valid")]
    BadCard,
    #[error("card expiry must be MM/YY and not in the past")]
    BadExpiry,
    #[error("card security code must be 3 or 4 digits")]
    BadCvc,
    #[error("routing number fails the ABA check")]
    BadRouting,
    #[error("account number must be 4 to 17 digits")]
    BadAccount,
    #[error("card declined")]
    Declined,
    #[error("card declined: insufficient funds")]
    InsufficientFunds,
    #[error("unknown card token")]
    UnknownToken,
    #[error("amount must be between $0.001 and $10,000")]
    BadAmount,
    #[error("idempotency key reused for a different payment")]
    KeyReused,
    #[error("financial system unavailable: {0}")]
    Unavailable(String),
}

impl From<std::io::Error> for BankError {
    fn from(e: std::io::Error) -> Self {
        BankError::Unavailable(e.to_string())
    }
}

/// A tokenised card: what we may keep.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CardToken {
    pub token: String,
    pub last4: String,
}

/// A completed payment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payment {
    pub payment_id: String,
    pub amount_mills: u64,
}

/// What the server needs from the financial system.
pub trait Bank: Send + Sync + std::fmt::Debug {
    fn is_sandbox(&self) -> bool;
    /// Check and tokenise a card. The number and CVC are not kept by the caller.
    fn tokenize_card(&self, number: &str, exp: &str, cvc: &str) -> Result<CardToken, BankError>;
    /// Charge a tokenised card. The same idempotency key returns the same payment.
    fn charge(
        &self,
        token: &str,
        amount_mills: u64,
        idempotency_key: &str,
    ) -> Result<Payment, BankError>;
    /// Debit a bank account by ACH. The same idempotency key returns the same payment.
    fn debit_eft(
        &self,
        routing: &str,
        account: &str,
        amount_mills: u64,
        idempotency_key: &str,
    ) -> Result<Payment, BankError>;
}

/// The Luhn check of a card number (digits only, 12 to 19 of them).
pub fn luhn_ok(number: &str) -> bool {
    let len = number.len();
    if !(12..=19).contains(&len) || !number.bytes().all(|b| b.is_ascii_digit()) {
        return false;
    }
    let sum: u32 = number
        .bytes()
        .rev()
        .enumerate()
        .map(|(i, b)| {
            let d = u32::from(b - b'0');
            if i % 2 == 1 {
                let x = d * 2;
                if x > 9 { x - 9 } else { x }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// The ABA routing number check digit: 3·(d1+d4+d7) + 7·(d2+d5+d8) + (d3+d6+d9) ≡ 0 (mod 10).
pub fn aba_check_digit_ok(routing: &str) -> bool {
    if routing.len() != 9 || !routing.bytes().all(|b| b.is_ascii_digit()) {
        return false;
    }
    let d: Vec<u32> = routing.bytes().map(|b| u32::from(b - b'0')).collect();
    let sum = 3 * (d[0] + d[3] + d[6]) + 7 * (d[1] + d[4] + d[7]) + (d[2] + d[5] + d[8]);
    sum.is_multiple_of(10)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
enum Behaviour {
    Approve,
    Decline,
    InsufficientFunds,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct State {
    next_id: u64,
    /// token → (last four, how the test card behaves). No card number is kept.
    tokens: BTreeMap<String, (String, Behaviour)>,
    /// idempotency key → (what was asked, the payment).
    payments: BTreeMap<String, (String, Payment)>,
}

/// The in-process bank sandbox.
#[derive(Debug)]
pub struct SandboxBank {
    state: JsonState<State>,
    today: fn() -> (i32, u8),
}

fn today_utc() -> (i32, u8) {
    let now = time::OffsetDateTime::now_utc();
    (now.year(), u8::from(now.month()))
}

fn new_id(prefix: &str, counter: &mut u64) -> String {
    *counter += 1;
    let mut rnd = [0u8; 6];
    // A failure of the system RNG only makes the id less unguessable; the counter keeps it unique.
    let _ = aws_lc_rs::rand::fill(&mut rnd);
    format!("{prefix}_{:06}{}", counter, hex::encode(rnd))
}

impl SandboxBank {
    pub fn open(path: Option<&Path>) -> Result<SandboxBank, BankError> {
        Ok(SandboxBank {
            state: JsonState::open(path)?,
            today: today_utc,
        })
    }

    fn pay(&self, key: &str, what: String, amount_mills: u64) -> Result<Payment, BankError> {
        self.state.update(|s| {
            if let Some((asked, payment)) = s.payments.get(key) {
                return if *asked == what {
                    Ok(payment.clone())
                } else {
                    Err(BankError::KeyReused)
                };
            }
            let payment = Payment {
                payment_id: new_id("pay", &mut s.next_id),
                amount_mills,
            };
            s.payments.insert(key.to_owned(), (what, payment.clone()));
            Ok(payment)
        })
    }
}

fn check_amount(amount_mills: u64) -> Result<(), BankError> {
    if amount_mills == 0 || amount_mills > MAX_CHARGE_MILLS {
        return Err(BankError::BadAmount);
    }
    Ok(())
}

impl Bank for SandboxBank {
    fn is_sandbox(&self) -> bool {
        true
    }

    fn tokenize_card(&self, number: &str, exp: &str, cvc: &str) -> Result<CardToken, BankError> {
        if !luhn_ok(number) {
            return Err(BankError::BadCard);
        }
        let (mm, yy) = exp.split_once('/').ok_or(BankError::BadExpiry)?;
        let month: u8 = mm.parse().map_err(|_| BankError::BadExpiry)?;
        let year: i32 = yy.parse().map_err(|_| BankError::BadExpiry)?;
        if mm.len() != 2 || yy.len() != 2 || !(1..=12).contains(&month) {
            return Err(BankError::BadExpiry);
        }
        let (this_year, this_month) = (self.today)();
        if (2000 + year, month) < (this_year, this_month) {
            return Err(BankError::BadExpiry);
        }
        if !(3..=4).contains(&cvc.len()) || !cvc.bytes().all(|b| b.is_ascii_digit()) {
            return Err(BankError::BadCvc);
        }
        let behaviour = match number {
            "4000000000000002" => Behaviour::Decline,
            "4000000000009995" => Behaviour::InsufficientFunds,
            _ => Behaviour::Approve,
        };
        let last4 = number[number.len() - 4..].to_owned();
        self.state.update(|s| {
            let token = new_id("tok", &mut s.next_id);
            s.tokens.insert(token.clone(), (last4.clone(), behaviour));
            Ok(CardToken { token, last4 })
        })
    }

    fn charge(
        &self,
        token: &str,
        amount_mills: u64,
        idempotency_key: &str,
    ) -> Result<Payment, BankError> {
        check_amount(amount_mills)?;
        let behaviour = self
            .state
            .read(|s| s.tokens.get(token).map(|t| t.1))
            .ok_or(BankError::UnknownToken)?;
        match behaviour {
            Behaviour::Approve => {}
            Behaviour::Decline => return Err(BankError::Declined),
            Behaviour::InsufficientFunds => return Err(BankError::InsufficientFunds),
        }
        self.pay(
            idempotency_key,
            format!("card {token} {amount_mills}"),
            amount_mills,
        )
    }

    fn debit_eft(
        &self,
        routing: &str,
        account: &str,
        amount_mills: u64,
        idempotency_key: &str,
    ) -> Result<Payment, BankError> {
        check_amount(amount_mills)?;
        if !aba_check_digit_ok(routing) {
            return Err(BankError::BadRouting);
        }
        if !(4..=17).contains(&account.len()) || !account.bytes().all(|b| b.is_ascii_digit()) {
            return Err(BankError::BadAccount);
        }
        let last4 = &account[account.len() - 4..];
        self.pay(
            idempotency_key,
            format!("eft {routing} {last4} {amount_mills}"),
            amount_mills,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bank() -> SandboxBank {
        let mut b = SandboxBank::open(None).unwrap();
        b.today = || (2026, 11);
        b
    }

    #[test]
    fn luhn_and_aba_checks() {
        assert!(luhn_ok("4242424242424242"));
        assert!(luhn_ok("4000000000000002"));
        assert!(!luhn_ok("4242424242424241"));
        assert!(!luhn_ok("42424242"));
        assert!(aba_check_digit_ok("011000015"));
        assert!(!aba_check_digit_ok("011000016"));
        assert!(!aba_check_digit_ok("01100001"));
    }

    #[test]
    fn test_cards_behave_as_documented() {
        let b = bank();
        let ok = b.tokenize_card("4242424242424242", "12/30", "123").unwrap();
        assert_eq!(ok.last4, "4242");
        let p = b.charge(&ok.token, 20_000, "k1").unwrap();
        assert_eq!(p.amount_mills, 20_000);
        let declined = b.tokenize_card("4000000000000002", "12/30", "123").unwrap();
        assert_eq!(b.charge(&declined.token, 1, "k2"), Err(BankError::Declined));
        let poor = b.tokenize_card("4000000000009995", "12/30", "123").unwrap();
        assert_eq!(
            b.charge(&poor.token, 1, "k3"),
            Err(BankError::InsufficientFunds)
        );
    }

    #[test]
    fn bad_cards_are_refused_before_tokenising() {
        let b = bank();
        assert_eq!(
            b.tokenize_card("4242424242424241", "12/30", "123"),
            Err(BankError::BadCard)
        );
        assert_eq!(
            b.tokenize_card("4242424242424242", "10/26", "123"),
            Err(BankError::BadExpiry)
        );
        assert_eq!(
            b.tokenize_card("4242424242424242", "13/30", "123"),
            Err(BankError::BadExpiry)
        );
        assert_eq!(
            b.tokenize_card("4242424242424242", "12/30", "12a"),
            Err(BankError::BadCvc)
        );
    }

    #[test]
    fn the_same_idempotency_key_charges_once() {
        let b = bank();
        let t = b.tokenize_card("4242424242424242", "12/30", "123").unwrap();
        let a = b.charge(&t.token, 5_000, "same").unwrap();
        let again = b.charge(&t.token, 5_000, "same").unwrap();
        assert_eq!(a, again);
        assert_eq!(b.charge(&t.token, 6_000, "same"), Err(BankError::KeyReused));
    }

    #[test]
    fn the_state_file_never_holds_a_card_number() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bank.json");
        let mut b = SandboxBank::open(Some(&path)).unwrap();
        b.today = || (2026, 11);
        let t = b.tokenize_card("4242424242424242", "12/30", "123").unwrap();
        b.charge(&t.token, 5_000, "k").unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains("4242424242424242"));
        assert!(text.contains(&t.token));
    }

    #[test]
    fn eft_needs_a_valid_routing_number() {
        let b = bank();
        assert!(b.debit_eft("011000015", "123456789", 1000, "e1").is_ok());
        assert_eq!(
            b.debit_eft("011000016", "123456789", 1000, "e2"),
            Err(BankError::BadRouting)
        );
        assert_eq!(
            b.debit_eft("011000015", "12", 1000, "e3"),
            Err(BankError::BadAccount)
        );
    }
}
