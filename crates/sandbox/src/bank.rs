//! The financial system: card tokenisation, authorise/capture/refund, ACH (EFT) debits that
//! settle later and can be returned, with an idempotency key on every call.
//!
//! Test cards follow common processor test modes (docs/DESIGN.md §7): 4242424242424242 is approved,
//! 4000000000000002 is declined, 4000000000009995 is declined for insufficient funds; any other
//! number that passes the Luhn check is approved. The bank keeps tokens and last four digits only.

use std::path::Path;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::store::{Changes, Journaled, JsonState, Table};

/// Largest single charge the sandbox accepts, in mills ($10,000).
pub const MAX_CHARGE_MILLS: u64 = 10_000_000;
/// Longest idempotency key accepted.
pub const MAX_IDEMPOTENCY_KEY_BYTES: usize = 200;
/// How long an ACH debit stays pending before it settles, by default (2 days).
pub const DEFAULT_SETTLE_AFTER_MS: i64 = 2 * 24 * 3600 * 1000;
/// How long after the debit a return is still possible (ACH rules: up to 60 days).
pub const RETURN_WINDOW_MS: i64 = 60 * 24 * 3600 * 1000;

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
    #[error("idempotency key reused for a different request")]
    KeyReused,
    #[error("idempotency key must be 1 to {MAX_IDEMPOTENCY_KEY_BYTES} bytes")]
    BadKey,
    #[error("unknown payment")]
    UnknownPayment,
    #[error("payment cannot do that now: {0}")]
    BadState(String),
    #[error("financial system unavailable: {0}")]
    Unavailable(String),
}

impl BankError {
    /// The snake_case code the HTTP service answers with.
    pub fn code(&self) -> &'static str {
        match self {
            BankError::BadCard => "bad_card",
            BankError::BadExpiry => "bad_expiry",
            BankError::BadCvc => "bad_cvc",
            BankError::BadRouting => "bad_routing",
            BankError::BadAccount => "bad_account",
            BankError::Declined => "declined",
            BankError::InsufficientFunds => "insufficient_funds",
            BankError::UnknownToken => "unknown_token",
            BankError::BadAmount => "bad_amount",
            BankError::KeyReused => "key_reused",
            BankError::BadKey => "bad_idempotency_key",
            BankError::UnknownPayment => "unknown_payment",
            BankError::BadState(_) => "bad_state",
            BankError::Unavailable(_) => "unavailable",
        }
    }

    /// The error a code stands for (an HTTP caller's view); unknown codes are `Unavailable`.
    pub fn from_code(code: &str, message: &str) -> BankError {
        match code {
            "bad_card" => BankError::BadCard,
            "bad_expiry" => BankError::BadExpiry,
            "bad_cvc" => BankError::BadCvc,
            "bad_routing" => BankError::BadRouting,
            "bad_account" => BankError::BadAccount,
            "declined" => BankError::Declined,
            "insufficient_funds" => BankError::InsufficientFunds,
            "unknown_token" => BankError::UnknownToken,
            "bad_amount" => BankError::BadAmount,
            "key_reused" => BankError::KeyReused,
            "bad_idempotency_key" => BankError::BadKey,
            "unknown_payment" => BankError::UnknownPayment,
            "bad_state" => BankError::BadState(message.to_owned()),
            _ => BankError::Unavailable(format!("{code}: {message}")),
        }
    }
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

/// Where a payment stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PaymentStatus {
    /// Card: held, not yet captured.
    Authorized,
    /// Card: money taken.
    Captured,
    /// ACH: sent, not settled yet.
    Pending,
    /// ACH: settled.
    Settled,
    /// ACH: returned by the customer's bank (no money came).
    Returned,
}

impl PaymentStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            PaymentStatus::Authorized => "authorized",
            PaymentStatus::Captured => "captured",
            PaymentStatus::Pending => "pending",
            PaymentStatus::Settled => "settled",
            PaymentStatus::Returned => "returned",
        }
    }
}

/// The answer to a charge, authorisation, capture or debit.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payment {
    pub payment_id: String,
    pub amount_mills: u64,
}

/// A payment as the bank's records show it (reconciliation, settlement checks).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentRecord {
    pub payment_id: String,
    /// "card" or "eft".
    pub method: String,
    pub amount_mills: u64,
    pub status: PaymentStatus,
    pub refunded_mills: u64,
    pub last4: String,
    pub idempotency_key: String,
    pub created_ms: i64,
    /// ACH: when it settles (or settled).
    #[serde(default)]
    pub settle_at_ms: Option<i64>,
    #[serde(default)]
    pub returned_ms: Option<i64>,
}

impl PaymentRecord {
    /// The payment as a charge, capture or debit answers it.
    pub fn payment(&self) -> Payment {
        Payment {
            payment_id: self.payment_id.clone(),
            amount_mills: self.amount_mills,
        }
    }
}

/// A refund of (part of) a captured or settled payment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refund {
    pub refund_id: String,
    pub payment_id: String,
    pub amount_mills: u64,
}

/// What the server needs from the financial system. Every call that changes anything takes an
/// idempotency key: the same key with the same request answers the first result again.
pub trait Bank: Send + Sync + std::fmt::Debug {
    fn is_sandbox(&self) -> bool;
    /// Check and tokenise a card. The number and CVC are not kept by the caller.
    fn tokenize_card(
        &self,
        number: &str,
        exp: &str,
        cvc: &str,
        idempotency_key: &str,
    ) -> Result<CardToken, BankError>;
    /// Authorise and capture a tokenised card in one step.
    fn charge(
        &self,
        token: &str,
        amount_mills: u64,
        idempotency_key: &str,
    ) -> Result<Payment, BankError>;
    /// Hold an amount on a tokenised card.
    fn authorize(
        &self,
        token: &str,
        amount_mills: u64,
        idempotency_key: &str,
    ) -> Result<Payment, BankError>;
    /// Take the money of an authorisation.
    fn capture(&self, payment_id: &str, idempotency_key: &str) -> Result<Payment, BankError>;
    /// Pay (part of) a captured or settled payment back.
    fn refund(
        &self,
        payment_id: &str,
        amount_mills: u64,
        idempotency_key: &str,
    ) -> Result<Refund, BankError>;
    /// Debit a bank account by ACH; it settles later and may be returned.
    fn debit_eft(
        &self,
        routing: &str,
        account: &str,
        amount_mills: u64,
        idempotency_key: &str,
    ) -> Result<Payment, BankError>;
    /// One payment's record.
    fn payment(&self, payment_id: &str) -> Result<PaymentRecord, BankError>;
    /// Every payment, oldest first.
    fn payments(&self) -> Result<Vec<PaymentRecord>, BankError>;
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
    tokens: Table<(String, Behaviour)>,
    /// payment id → record.
    payments: Table<PaymentRecord>,
    /// refund id → refund (a list before the journal; older files' list is not read back).
    #[serde(default)]
    refund_rows: Table<Refund>,
    /// idempotency key → (what was asked, the stored answer as JSON).
    keys: Table<(String, String)>,
}

impl Journaled for State {
    fn changes(&mut self, out: &mut Changes) -> serde_json::Result<()> {
        out.scalar("next_id", &self.next_id)?;
        out.table("tokens", &mut self.tokens)?;
        out.table("payments", &mut self.payments)?;
        out.table("refund_rows", &mut self.refund_rows)?;
        out.table("keys", &mut self.keys)
    }
}

/// The in-process bank sandbox (also the storage of `stampline sandbox bank`).
#[derive(Debug)]
pub struct SandboxBank {
    state: JsonState<State>,
    today: fn() -> (i32, u8),
    now_ms: fn() -> i64,
    settle_after_ms: i64,
}

fn today_utc() -> (i32, u8) {
    let now = time::OffsetDateTime::now_utc();
    (now.year(), u8::from(now.month()))
}

fn now_utc_ms() -> i64 {
    i64::try_from(time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000)
        .unwrap_or(i64::MAX)
}

fn new_id(prefix: &str, counter: &mut u64) -> String {
    *counter += 1;
    let mut rnd = [0u8; 6];
    // A failure of the system RNG only makes the id less unguessable; the counter keeps it unique.
    let _ = aws_lc_rs::rand::fill(&mut rnd);
    format!("{prefix}_{:06}{}", counter, hex::encode(rnd))
}

fn check_amount(amount_mills: u64) -> Result<(), BankError> {
    if amount_mills == 0 || amount_mills > MAX_CHARGE_MILLS {
        return Err(BankError::BadAmount);
    }
    Ok(())
}

fn check_key(key: &str) -> Result<(), BankError> {
    if key.is_empty() || key.len() > MAX_IDEMPOTENCY_KEY_BYTES || key.chars().any(char::is_control)
    {
        return Err(BankError::BadKey);
    }
    Ok(())
}

/// A new payment to record: what differs between a card payment, an ACH debit and a planted one.
struct NewPayment<'a> {
    method: &'a str,
    amount_mills: u64,
    status: PaymentStatus,
    last4: String,
    /// None: a planted payment, keyed by its own id.
    idempotency_key: Option<&'a str>,
    settle_at_ms: Option<i64>,
}

impl State {
    /// Record a new payment under a fresh id (nothing refunded or returned yet).
    fn add_payment(&mut self, new: NewPayment<'_>, now_ms: i64) -> PaymentRecord {
        let payment_id = new_id("pay", &mut self.next_id);
        let record = PaymentRecord {
            idempotency_key: new
                .idempotency_key
                .map_or_else(|| format!("planted:{payment_id}"), str::to_owned),
            payment_id: payment_id.clone(),
            method: new.method.into(),
            amount_mills: new.amount_mills,
            status: new.status,
            refunded_mills: 0,
            last4: new.last4,
            created_ms: now_ms,
            settle_at_ms: new.settle_at_ms,
            returned_ms: None,
        };
        self.payments.insert(payment_id, record.clone());
        record
    }

    /// The record as of `now`: a pending debit whose time has come shows as settled.
    fn view(&self, id: &str, now_ms: i64) -> Option<PaymentRecord> {
        self.payments.get(id).map(|p| settled_view(p, now_ms))
    }
}

fn settled_view(p: &PaymentRecord, now_ms: i64) -> PaymentRecord {
    let mut p = p.clone();
    if p.status == PaymentStatus::Pending && p.settle_at_ms.is_some_and(|t| t <= now_ms) {
        p.status = PaymentStatus::Settled;
    }
    p
}

impl SandboxBank {
    pub fn open(path: Option<&Path>) -> Result<SandboxBank, BankError> {
        Ok(SandboxBank {
            state: JsonState::open(path)?,
            today: today_utc,
            now_ms: now_utc_ms,
            settle_after_ms: DEFAULT_SETTLE_AFTER_MS,
        })
    }

    /// How long ACH debits stay pending (tests use short times).
    pub fn with_settle_after_ms(mut self, ms: i64) -> SandboxBank {
        self.settle_after_ms = ms.max(0);
        self
    }

    /// Run `f` once per idempotency key: a repeat with the same `what` answers the stored result,
    /// a different `what` is `KeyReused`. Errors are not stored (a retry tries again).
    fn once<R: Serialize + DeserializeOwned>(
        &self,
        key: &str,
        what: String,
        f: impl FnOnce(&mut State, i64) -> Result<R, BankError>,
    ) -> Result<R, BankError> {
        check_key(key)?;
        let now = (self.now_ms)();
        self.state.update(|s| {
            if let Some((asked, answer)) = s.keys.get(key) {
                if *asked != what {
                    return Err(BankError::KeyReused);
                }
                return serde_json::from_str(answer)
                    .map_err(|e| BankError::Unavailable(format!("stored answer: {e}")));
            }
            let result = f(s, now)?;
            let answer = serde_json::to_string(&result)
                .map_err(|e| BankError::Unavailable(e.to_string()))?;
            s.keys.insert(key.to_owned(), (what, answer));
            Ok(result)
        })
    }

    fn card_payment(
        &self,
        token: &str,
        amount_mills: u64,
        key: &str,
        status: PaymentStatus,
    ) -> Result<Payment, BankError> {
        check_amount(amount_mills)?;
        let what = format!("{} {token} {amount_mills}", status.as_str());
        self.once(key, what, |s, now| {
            let (last4, behaviour) = s
                .tokens
                .get(token)
                .cloned()
                .ok_or(BankError::UnknownToken)?;
            match behaviour {
                Behaviour::Approve => {}
                Behaviour::Decline => return Err(BankError::Declined),
                Behaviour::InsufficientFunds => return Err(BankError::InsufficientFunds),
            }
            let new = NewPayment {
                method: "card",
                amount_mills,
                status,
                last4,
                idempotency_key: Some(key),
                settle_at_ms: None,
            };
            Ok(s.add_payment(new, now).payment())
        })
    }

    /// The customer's bank returns an ACH debit (a test control: real banks do this days later).
    pub fn return_debit(&self, payment_id: &str) -> Result<PaymentRecord, BankError> {
        let now = (self.now_ms)();
        self.state.update(|s| {
            let p = s
                .payments
                .get_mut(payment_id)
                .ok_or(BankError::UnknownPayment)?;
            if p.method != "eft" {
                return Err(BankError::BadState(
                    "only ACH debits can be returned".into(),
                ));
            }
            match p.status {
                PaymentStatus::Returned => {}
                _ if now.saturating_sub(p.created_ms) > RETURN_WINDOW_MS => {
                    return Err(BankError::BadState("the return window has passed".into()));
                }
                _ if p.refunded_mills > 0 => {
                    return Err(BankError::BadState("the debit was refunded".into()));
                }
                _ => {
                    p.status = PaymentStatus::Returned;
                    p.returned_ms = Some(now);
                }
            }
            Ok(p.clone())
        })
    }

    /// Plant a payment the other side never asked for (a reconciliation test's difference).
    pub fn plant_payment(&self, amount_mills: u64) -> Result<PaymentRecord, BankError> {
        let now = (self.now_ms)();
        self.state.update(|s| {
            let new = NewPayment {
                method: "card",
                amount_mills,
                status: PaymentStatus::Captured,
                last4: "0000".into(),
                idempotency_key: None,
                settle_at_ms: None,
            };
            Ok(s.add_payment(new, now))
        })
    }
}

impl Bank for SandboxBank {
    fn is_sandbox(&self) -> bool {
        true
    }

    fn tokenize_card(
        &self,
        number: &str,
        exp: &str,
        cvc: &str,
        idempotency_key: &str,
    ) -> Result<CardToken, BankError> {
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
        // The stored request is the last four and the expiry: never the number or the CVC.
        let what = format!("tokenize {last4} {exp}");
        self.once(idempotency_key, what, |s, _| {
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
        self.card_payment(
            token,
            amount_mills,
            idempotency_key,
            PaymentStatus::Captured,
        )
    }

    fn authorize(
        &self,
        token: &str,
        amount_mills: u64,
        idempotency_key: &str,
    ) -> Result<Payment, BankError> {
        self.card_payment(
            token,
            amount_mills,
            idempotency_key,
            PaymentStatus::Authorized,
        )
    }

    fn capture(&self, payment_id: &str, idempotency_key: &str) -> Result<Payment, BankError> {
        self.once(idempotency_key, format!("capture {payment_id}"), |s, _| {
            let p = s
                .payments
                .get_mut(payment_id)
                .ok_or(BankError::UnknownPayment)?;
            if p.status != PaymentStatus::Authorized {
                return Err(BankError::BadState(format!(
                    "payment is {}, not authorized",
                    p.status.as_str()
                )));
            }
            p.status = PaymentStatus::Captured;
            Ok(p.payment())
        })
    }

    fn refund(
        &self,
        payment_id: &str,
        amount_mills: u64,
        idempotency_key: &str,
    ) -> Result<Refund, BankError> {
        check_amount(amount_mills)?;
        let what = format!("refund {payment_id} {amount_mills}");
        self.once(idempotency_key, what, |s, now| {
            let view = s.view(payment_id, now).ok_or(BankError::UnknownPayment)?;
            if !matches!(
                view.status,
                PaymentStatus::Captured | PaymentStatus::Settled
            ) {
                return Err(BankError::BadState(format!(
                    "payment is {}; only captured or settled payments can be refunded",
                    view.status.as_str()
                )));
            }
            let refunded = view
                .refunded_mills
                .checked_add(amount_mills)
                .filter(|&r| r <= view.amount_mills)
                .ok_or_else(|| BankError::BadState("refund exceeds the payment".into()))?;
            if let Some(p) = s.payments.get_mut(payment_id) {
                p.refunded_mills = refunded;
            }
            let refund = Refund {
                refund_id: new_id("ref", &mut s.next_id),
                payment_id: payment_id.to_owned(),
                amount_mills,
            };
            s.refund_rows
                .insert(refund.refund_id.clone(), refund.clone());
            Ok(refund)
        })
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
        let last4 = account[account.len() - 4..].to_owned();
        let settle_after = self.settle_after_ms;
        let what = format!("eft {routing} {last4} {amount_mills}");
        self.once(idempotency_key, what, |s, now| {
            let new = NewPayment {
                method: "eft",
                amount_mills,
                status: PaymentStatus::Pending,
                last4,
                idempotency_key: Some(idempotency_key),
                settle_at_ms: Some(now.saturating_add(settle_after)),
            };
            Ok(s.add_payment(new, now).payment())
        })
    }

    fn payment(&self, payment_id: &str) -> Result<PaymentRecord, BankError> {
        let now = (self.now_ms)();
        self.state
            .read(|s| s.view(payment_id, now))
            .ok_or(BankError::UnknownPayment)
    }

    fn payments(&self) -> Result<Vec<PaymentRecord>, BankError> {
        let now = (self.now_ms)();
        let mut all: Vec<PaymentRecord> = self
            .state
            .read(|s| s.payments.values().map(|p| settled_view(p, now)).collect());
        all.sort_by(|a, b| (a.created_ms, &a.payment_id).cmp(&(b.created_ms, &b.payment_id)));
        Ok(all)
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

    /// Tokenise test card `number` (valid expiry and CVC) under idempotency key `key`.
    fn card(b: &SandboxBank, number: &str, key: &str) -> CardToken {
        b.tokenize_card(number, "12/30", "123", key).unwrap()
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
        let ok = card(&b, "4242424242424242", "t");
        assert_eq!(ok.last4, "4242");
        let p = b.charge(&ok.token, 20_000, "k1").unwrap();
        assert_eq!(p.amount_mills, 20_000);
        let declined = card(&b, "4000000000000002", "t2");
        assert_eq!(b.charge(&declined.token, 1, "k2"), Err(BankError::Declined));
        let poor = card(&b, "4000000000009995", "t3");
        assert_eq!(
            b.charge(&poor.token, 1, "k3"),
            Err(BankError::InsufficientFunds)
        );
    }

    #[test]
    fn bad_cards_are_refused_before_tokenising() {
        let b = bank();
        assert_eq!(
            b.tokenize_card("4242424242424241", "12/30", "123", "t"),
            Err(BankError::BadCard)
        );
        assert_eq!(
            b.tokenize_card("4242424242424242", "10/26", "123", "t"),
            Err(BankError::BadExpiry)
        );
        assert_eq!(
            b.tokenize_card("4242424242424242", "13/30", "123", "t"),
            Err(BankError::BadExpiry)
        );
        assert_eq!(
            b.tokenize_card("4242424242424242", "12/30", "12a", "t"),
            Err(BankError::BadCvc)
        );
    }

    #[test]
    fn the_same_idempotency_key_charges_once() {
        let b = bank();
        let t = card(&b, "4242424242424242", "t");
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
        let t = card(&b, "4242424242424242", "t");
        b.charge(&t.token, 5_000, "k").unwrap();
        let text = std::fs::read_to_string(&path).unwrap()
            + &std::fs::read_to_string(crate::store::journal_path(&path)).unwrap();
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

    #[test]
    fn ach_debits_settle_later_and_can_be_returned() {
        let b = bank().with_settle_after_ms(0);
        let p = b.debit_eft("011000015", "123456789", 1000, "e1").unwrap();
        assert_eq!(
            b.payment(&p.payment_id).unwrap().status,
            PaymentStatus::Settled
        );
        let pending = bank();
        let q = pending
            .debit_eft("011000015", "123456789", 1000, "e1")
            .unwrap();
        let rec = pending.payment(&q.payment_id).unwrap();
        assert_eq!(rec.status, PaymentStatus::Pending);
        assert_eq!(rec.last4, "6789");
        let returned = pending.return_debit(&q.payment_id).unwrap();
        assert_eq!(returned.status, PaymentStatus::Returned);
        assert_eq!(
            pending.payment(&q.payment_id).unwrap().status,
            PaymentStatus::Returned
        );
    }

    #[test]
    fn authorise_capture_and_refund_follow_the_payment_state() {
        let b = bank();
        let t = card(&b, "4242424242424242", "t");
        let a = b.authorize(&t.token, 9_000, "a1").unwrap();
        assert_eq!(
            b.payment(&a.payment_id).unwrap().status,
            PaymentStatus::Authorized
        );
        assert!(matches!(
            b.refund(&a.payment_id, 1, "r0"),
            Err(BankError::BadState(_))
        ));
        b.capture(&a.payment_id, "c1").unwrap();
        assert_eq!(
            b.capture(&a.payment_id, "c1").unwrap().payment_id,
            a.payment_id
        );
        assert!(matches!(
            b.capture(&a.payment_id, "c2"),
            Err(BankError::BadState(_))
        ));
        b.refund(&a.payment_id, 4_000, "r1").unwrap();
        b.refund(&a.payment_id, 4_000, "r1").unwrap();
        assert_eq!(b.payment(&a.payment_id).unwrap().refunded_mills, 4_000);
        assert!(matches!(
            b.refund(&a.payment_id, 6_000, "r2"),
            Err(BankError::BadState(_))
        ));
        assert_eq!(
            b.refund(&a.payment_id, 5_000, "r1"),
            Err(BankError::KeyReused)
        );
    }

    #[test]
    fn every_call_needs_an_idempotency_key() {
        let b = bank();
        assert_eq!(
            b.tokenize_card("4242424242424242", "12/30", "123", ""),
            Err(BankError::BadKey)
        );
        assert_eq!(
            b.debit_eft("011000015", "123456789", 1000, ""),
            Err(BankError::BadKey)
        );
    }
}
