//! The Stampline ledger: users, accounts, double-entry transfers, meters (ascending and descending
//! registers, piece numbers), issued items, payments, request idempotency and the hash-chained audit
//! log. It is the only code that writes money tables.
//!
//! It must never know about the network, wire messages, crypto devices or item formats: the caller
//! passes signing in as a callback ([`Store::issue`]) and every time as `now_ms` (Unix milliseconds),
//! so tests control the clock. Every public operation is one database transaction that asserts its
//! invariants (each transfer balances, registers never run backwards, customer balances never go
//! negative, a meter's descending register equals its customer balance) before it commits.
//!
//! Map of the crate:
//! - this file: the API types, the [`Store`] trait (the seam between the server and a database,
//!   its methods grouped by capability) and the named limits;
//! - [`error`]: [`LedgerError`] and its snake_case wire codes;
//! - `logic` (private): the rules, written once against a small SQL seam (`sql::Tx`) that both
//!   backends implement, one module per capability: `accounts` (users, logins), `postage`
//!   (issue, print confirmation, void, refund, reprint, redeem), `confirm_window` (deadlines,
//!   expiry voids), `payments` (funding, ACH returns, auto-refill), `closure` (closing an account
//!   with payouts), `reports` (balance, meters, history), over shared parts (`meter`,
//!   `transfers`, `items`, `requests` for idempotency, `standing` for closed or locked accounts,
//!   `audit_log`, `values`); `audit` (private): the full audit, likewise;
//! - `backend` (private): the one [`Store`] implementation over any backend that can run a
//!   read, a write, and a write answered later;
//! - [`Queued`]: an operation handed to the store and answered after its commit (awaited by
//!   async callers, waited on by threads): the one batching mechanism;
//! - [`sqlite`]: [`SqliteStore`], the embedded default (one writer thread with group commit and a
//!   bounded queue, [`sqlite::MAX_QUEUED_OPS`]; WAL reads on their own connection);
//! - [`pg`]: [`PgStore`], PostgreSQL for several servers on one database (a connection
//!   pool, READ COMMITTED with row locks);
//! - [`chain`]: the audit log's hash chain;
//! - `testsuite` and `pgtest` (with the `testkit` feature, for tests only): behaviour tests
//!   written against `&dyn Store`, run by every implementation, and throw-away PostgreSQL
//!   databases.
//!
//! Money model: accounts `customer:U` (spendable), `reserved:U` (issued, not yet confirmed),
//! `bank_clearing` (the source of funding, runs negative) and `postage_sold`. A transfer moves a
//! positive amount from one account to another, so the balances always sum to zero. Fund:
//! bank_clearing → customer:U. Issue: customer:U → reserved:U (reserve). Printed: reserved:U →
//! postage_sold (post). Failed print or expired confirmation window: reserved:U → customer:U (void).
//! Refund: postage_sold → customer:U. Per meter, ascending + descending = Σ funding + Σ voids and
//! refunds (the control total), and descending = the customer balance.

mod audit;
mod backend;
pub mod chain;
pub mod error;
mod logic;
pub mod pg;
#[cfg(feature = "testkit")]
pub mod pgtest;
mod queued;
mod sql;
pub mod sqlite;
#[cfg(feature = "testkit")]
pub mod testsuite;
mod users;

use serde::{Deserialize, Serialize};
use stampline_money::Amount;

pub use error::LedgerError;
pub use logic::meter::meter_seal_message;
pub use pg::PgStore;
pub use queued::Queued;
pub use sqlite::SqliteStore;
pub use users::{LoginFailure, LoginThrottle, NewUser, Role, ThrottlePolicy, UserRecord};

/// A user's row id; also the `U` of the account names `customer:U` and `reserved:U`.
pub type UserId = i64;

/// Most items one export ([`Store::items_of_kind`]) returns.
pub const MAX_EXPORT_ITEMS: usize = 10_000;
/// Most rows [`Store::history`] returns, whatever limit is asked for.
pub const MAX_HISTORY_LIMIT: u32 = 1000;
/// Largest value either meter register may hold: the 5-byte register fields of item format v1,
/// which is also the largest [`Amount`].
pub const MAX_REGISTER_MILLS: u64 = stampline_money::MAX_MILLS;
/// Longest request id (the wire uses UUIDs, 36 characters).
pub const MAX_REQUEST_ID_LEN: usize = 128;
/// Longest serial a signing callback may return.
pub const MAX_SERIAL_LEN: usize = 64;
/// Largest signed item the ledger stores (item format v1 postage is 126 bytes).
pub const MAX_ITEM_BYTES: usize = 4096;
/// Longest item kind name.
pub const MAX_KIND_LEN: usize = 32;
/// Longest text field of a user, payment or session (names, addresses, tokens, ids).
pub const MAX_TEXT_LEN: usize = 1024;
/// Longest wrapped link key.
pub const MAX_WRAPPED_KEY_LEN: usize = 1024;
/// Longest actor, action or detail of an audit log entry.
pub const MAX_AUDIT_FIELD_LEN: usize = 16 * 1024;
/// Most expired items [`Store::void_expired`] voids in one transaction; call again while it returns
/// this many.
pub const MAX_VOID_BATCH: usize = 10_000;
/// Most problems an [`AuditReport`] lists one by one; beyond that it counts them in a last line.
pub const MAX_AUDIT_PROBLEMS: usize = 1000;

/// The account every funding comes from; it runs negative by the total ever funded.
pub const ACCOUNT_BANK_CLEARING: &str = "bank_clearing";
/// The account printed postage is posted to.
pub const ACCOUNT_POSTAGE_SOLD: &str = "postage_sold";

/// The value-item kinds (everything but postage), in the order of their item-format kind codes
/// 2 to 5. Issuing one never moves the postage meter's registers: each kind counts in its own
/// registers per user ([`ValueRegister`]).
pub const VALUE_KINDS: [&str; 4] = ["ticket", "check", "coupon", "certificate"];

/// Whether items of `kind` take their face value out of the issuer's funds (tickets, checks,
/// certificates) into the liability account [`outstanding_account`]. Coupons carry none: they
/// are a promise of a discount, counted only in their own register.
pub fn carries_funds(kind: &str) -> bool {
    VALUE_KINDS.contains(&kind) && kind != "coupon"
}

/// The liability account that holds the face value of printed, unredeemed items of a kind
/// ("outstanding:ticket", "outstanding:check", "outstanding:certificate").
pub fn outstanding_account(kind: &str) -> String {
    format!("outstanding:{kind}")
}

/// The number a value item carries in its serial (`DEVICEID-N`): its kind's code (2 ticket,
/// 3 check, 4 coupon, 5 certificate) times 10^10 plus its place in the issuer's sequence of that
/// kind (the check number, for checks). Postage piece numbers stay below 2^32 < 10^10, so no
/// value item's serial can be a postage serial and each kind's sequence shows in its serial.
/// `None` for postage, an unknown kind, or a sequence number of 10^10 or more.
pub fn value_item_number(kind: &str, sequence: u64) -> Option<u64> {
    let index = VALUE_KINDS.iter().position(|k| *k == kind)?;
    if sequence == 0 || sequence >= VALUE_NUMBER_BASE {
        return None;
    }
    let code = u64::try_from(index).ok()? + 2;
    Some(code * VALUE_NUMBER_BASE + sequence)
}

/// See [`value_item_number`].
const VALUE_NUMBER_BASE: u64 = 10_000_000_000;

/// The spendable account of a user.
pub fn customer_account(user_id: UserId) -> String {
    format!("customer:{user_id}")
}

/// The account holding a user's issued, not yet confirmed items.
pub fn reserved_account(user_id: UserId) -> String {
    format!("reserved:{user_id}")
}

/// What a user can see of the money: `balance_mills` is spendable now (reservations excluded).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BalanceView {
    pub balance_mills: u64,
    pub ascending_mills: u64,
    pub descending_mills: u64,
    /// Postage items issued and not voided or refunded.
    pub pieces: u64,
    /// Issued items waiting for their print confirmation.
    pub reserved_mills: u64,
}

/// A meter as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MeterState {
    pub user_id: UserId,
    /// `None` until the first funding licenses the customer.
    pub device_id: Option<String>,
    pub license_id: Option<String>,
    pub ascending_mills: u64,
    pub descending_mills: u64,
    /// The last piece number issued (0 before the first).
    pub piece: u32,
    /// Register seal by the crypto device ([`MeterSealer`]); `None` when the store has no sealer.
    pub seal: Option<Vec<u8>>,
}

/// Seals meter register states: the crypto device MACs the bytes of [`meter_seal_message`] and
/// the ledger stores and compares the 32-byte answer, so it never holds the key. A store given a
/// sealer seals every meter state it writes and refuses to use a meter whose seal does not match
/// (`LedgerError::MeterFrozen`); its audit reports such meters.
pub trait MeterSealer: Send + Sync + std::fmt::Debug {
    /// The seal of `message`; an error when the device fails.
    fn seal(&self, message: &[u8]) -> Result<[u8; 32], String>;
}

/// A request fingerprint: SHA-256 over the request's meaningful fields, so that a different request
/// under a used request id is told apart from a repeat.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fingerprint(pub [u8; 32]);

impl Fingerprint {
    /// SHA-256 over the op name and the fields, each prefixed by its length (4 bytes big-endian), so
    /// that no two different field lists share a fingerprint.
    pub fn of(op: &str, fields: &[&[u8]]) -> Fingerprint {
        let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
        for part in std::iter::once(op.as_bytes()).chain(fields.iter().copied()) {
            // Field lengths are bounded far below 4 GiB by the wire's frame limit; saturate anyway.
            let len = u32::try_from(part.len()).unwrap_or(u32::MAX);
            ctx.update(&len.to_be_bytes());
            ctx.update(part);
        }
        let mut out = [0u8; 32];
        out.copy_from_slice(ctx.finish().as_ref());
        Fingerprint(out)
    }
}

/// The idempotency key of a mutating request: the user, the request id (the wire `id`) and the
/// fingerprint of what was asked.
#[derive(Clone, Copy, Debug)]
pub struct RequestKey<'a> {
    pub user_id: UserId,
    pub request_id: &'a str,
    pub fingerprint: [u8; 32],
}

/// A payment to credit. The ledger stores the processor's token and the last four digits, never a
/// card number.
#[derive(Clone, Copy, Debug)]
pub struct FundInput<'a> {
    pub amount: Amount,
    /// The financial system's payment id; unique.
    pub payment_id: &'a str,
    /// "card" or "eft".
    pub method: &'a str,
    pub token: Option<&'a str>,
    /// Exactly four ASCII digits when present.
    pub last4: Option<&'a str>,
}

/// A bank refund of (part of) one payment, paid out at account closure.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payout {
    pub payment_id: String,
    pub refund_id: String,
    pub amount_mills: u64,
}

/// The stored and returned result of a closure.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CloseOutcome {
    pub refunded_mills: u64,
    pub payouts: Vec<Payout>,
    pub balance_mills: u64,
}

/// What beginning a closure found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CloseStart {
    /// The account is closing under this request; its balance, to be paid out.
    Closing { balance_mills: u64 },
    /// This request already closed the account.
    Closed(CloseOutcome),
}

/// A standing authorisation to refill the balance from a saved card.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AutoRefill {
    /// The processor's token (never the card number) and the card's last four digits.
    pub token: String,
    pub last4: String,
    /// Refill when the spendable balance falls below this.
    pub threshold_mills: u64,
    /// Each refill charges this much.
    pub amount_mills: u64,
    /// The refills under this authorisation never total more than this.
    pub cap_mills: u64,
    pub used_mills: u64,
    /// How many refills so far (the next one's number).
    pub refills: u64,
}

/// A payment as our ledger records it (reconciliation, settlement checks).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentRow {
    pub payment_id: String,
    pub user_id: UserId,
    pub method: String,
    pub amount_mills: u64,
    pub at_ms: i64,
    /// When the bank returned it (ACH), if it did.
    pub returned_at_ms: Option<i64>,
    /// The bank payment that paid a returned debit's debt.
    pub paid_by: Option<String>,
    /// Paid back to the customer from this payment (account closure).
    pub refunded_mills: u64,
}

/// The stored and returned result of a fund request.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct FundOutcome {
    pub payment_id: String,
    pub amount_mills: u64,
    pub balance_mills: u64,
}

/// What the signing callback gets: the meter state after this piece. For a value item, `piece`
/// is its place in the issuer's sequence of its kind (the check number of a check), `number`
/// the number its serial carries ([`value_item_number`]), and the registers are the postage
/// meter's, unchanged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PieceState {
    pub device_id: String,
    pub piece: u32,
    /// The `N` of the item's serial `DEVICEID-N`: the piece number for postage.
    pub number: u64,
    pub ascending_mills: u64,
    pub descending_mills: u64,
}

/// What the signing callback returns: the item's serial ("SL0100001234-42"), its signed bytes,
/// and a check the issue must see pass before it commits.
pub struct SignedItem {
    pub serial: String,
    pub bytes: Vec<u8>,
    /// The server's check of the fresh signature (`None`: not checked). The issue commits only if
    /// it passes; a backend may run it on another thread while it goes on with other operations
    /// (SQLite's writer has the caller's thread run it and waits for the verdict before the
    /// group's commit), so the check must own what it uses.
    pub check: Option<ItemCheck>,
}

/// See [`SignedItem::check`]: `Err` says why the item must not be issued.
pub type ItemCheck = Box<dyn FnOnce() -> Result<(), String> + Send>;

impl std::fmt::Debug for SignedItem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignedItem")
            .field("serial", &self.serial)
            .field("bytes", &self.bytes.len())
            .field("check", &self.check.is_some())
            .finish()
    }
}

/// What `Store::issue` calls, inside the transaction, to sign the item of a piece: it owns what
/// it uses, because a backend may run the transaction on its own thread.
pub type Signer = Box<dyn FnMut(&PieceState) -> Result<SignedItem, String> + Send>;

/// An item to issue.
#[derive(Clone, Debug)]
pub struct IssueInput {
    /// "postage", or another item kind ("ticket", "check", ...).
    pub kind: &'static str,
    pub amount: Amount,
    /// The link session the item was issued in, if any.
    pub session: Option<String>,
    /// A value item is not redeemable after this time (the end of its valid-until day).
    pub valid_until_ms: Option<i64>,
}

/// The stored and returned result of an issue request. `item` is serialised as lowercase hex.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct IssueOutcome {
    pub serial: String,
    #[serde(with = "hex_bytes")]
    pub item: Vec<u8>,
    pub balance_mills: u64,
    /// The amount reserved for the item (its postage for postage items).
    pub postage_mills: u64,
    /// The user's auto-refill authorisation asks for a refill at the balance after this issue
    /// (never stored: a replayed outcome says `false`).
    #[serde(skip)]
    pub refill_due: bool,
}

/// The stored and returned result of a confirm or refund request.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct StatusOutcome {
    pub serial: String,
    pub status: ItemStatus,
    pub balance_mills: u64,
}

/// How often, and for how long after issue, an item may be printed again (`Store::reprint`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReprintLimits {
    /// Reprints allowed per item, in its whole life.
    pub max_reprints: u32,
    /// How long after issue a reprint is allowed.
    pub window_ms: i64,
}

/// The stored and returned result of a reprint request. `item` is serialised as lowercase hex.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ReprintOutcome {
    pub serial: String,
    /// `issued` (not confirmed yet: the caller confirms after printing) or `printed`.
    pub status: ItemStatus,
    #[serde(with = "hex_bytes")]
    pub item: Vec<u8>,
    /// Reprints of this item so far, this one included.
    pub reprints: u32,
    /// Reprints still allowed after this one.
    pub reprints_left: u32,
}

/// An item's life: issued → printed (→ refunded | redeemed), or issued → voided.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ItemStatus {
    Issued,
    Printed,
    Voided,
    Refunded,
    Redeemed,
}

impl ItemStatus {
    /// The wire and database name: "issued", "printed", "voided", "refunded", "redeemed".
    pub fn as_str(self) -> &'static str {
        match self {
            ItemStatus::Issued => "issued",
            ItemStatus::Printed => "printed",
            ItemStatus::Voided => "voided",
            ItemStatus::Refunded => "refunded",
            ItemStatus::Redeemed => "redeemed",
        }
    }

    /// Parses a wire or database name.
    pub fn parse(s: &str) -> Option<ItemStatus> {
        match s {
            "issued" => Some(ItemStatus::Issued),
            "printed" => Some(ItemStatus::Printed),
            "voided" => Some(ItemStatus::Voided),
            "refunded" => Some(ItemStatus::Refunded),
            "redeemed" => Some(ItemStatus::Redeemed),
            _ => None,
        }
    }
}

impl std::fmt::Display for ItemStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What anybody may learn of an item by its serial (the void list verifiers consult).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ItemState {
    pub serial: String,
    pub kind: String,
    pub status: ItemStatus,
    pub amount_mills: u64,
    /// What is left to redeem of a value item (a certificate redeems in parts); `None` for
    /// postage.
    pub remaining_mills: Option<u64>,
    /// When a value item stops being redeemable, if it does.
    pub valid_until_ms: Option<i64>,
}

/// The stored and returned result of a redemption.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct RedeemOutcome {
    pub serial: String,
    pub kind: String,
    /// `redeemed` once nothing is left, else `printed` (a certificate redeemed in part).
    pub status: ItemStatus,
    /// Redeemed by this request.
    pub redeemed_mills: u64,
    pub remaining_mills: u64,
    /// The redeemer's spendable balance after the redemption (credited for tickets, checks and
    /// certificates; unchanged for coupons).
    pub balance_mills: u64,
}

/// One kind's registers of one user's value items. `issued − returned` of a kind that carries
/// funds is what the kind holds of the user's funds (reserved or outstanding); `redeemed` is the
/// part of that paid out by redemptions (to whoever redeemed).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ValueRegister {
    pub kind: String,
    /// Items of the kind issued (the last sequence number).
    pub pieces: u64,
    pub issued_mills: u64,
    /// Voided or refunded back to the issuer.
    pub returned_mills: u64,
    pub redeemed_mills: u64,
}

/// An item with its bytes, as an export reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ItemRecord {
    pub serial: String,
    pub kind: String,
    pub amount_mills: u64,
    pub status: ItemStatus,
    pub issued_at_ms: i64,
    pub bytes: Vec<u8>,
}

/// One line of a user's history.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ItemSummary {
    pub serial: String,
    pub kind: String,
    pub amount_mills: u64,
    pub status: ItemStatus,
    pub issued_at_ms: i64,
}

/// The result of [`Store::audit`]: every break found (empty when the ledger is consistent) and the
/// sizes of what was checked.
#[derive(Debug, Clone, Serialize)]
pub struct AuditReport {
    pub problems: Vec<String>,
    pub accounts: u64,
    pub transfers: u64,
    pub items: u64,
    pub audit_entries: u64,
}

impl AuditReport {
    /// True when no problem was found.
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }
}

/// The ledger's storage. Every method is one transaction; an error leaves the database unchanged
/// (except where a method says otherwise). Implementations: [`SqliteStore`] and [`PgStore`], which
/// pass the same behaviour suite (`testsuite`, behind the `testkit` feature).
///
/// Writes that async callers make on the hot path ([`Store::issue`], [`Store::confirm`]) are
/// handed over and answered through a [`Queued`], which async code awaits
/// ([`Queued::outcome`]) and a blocking thread waits on ([`Queued::wait`]): SQLite's writer
/// answers it after its group's commit, PostgreSQL runs it on a blocking thread of the caller's
/// runtime. Every other method blocks the calling thread until its transaction is committed:
/// call those where blocking is allowed.
pub trait Store: Send + Sync + std::fmt::Debug {
    // ---- Users and logins (`logic::accounts`) ----

    /// Creates the user, the accounts `customer:ID` and `reserved:ID` at zero and the meter at zero;
    /// audit "register". `UserExists` when the user key is taken.
    fn create_user(&self, u: &NewUser, now_ms: i64) -> Result<UserId, LedgerError>;

    /// The user with this lowercase NFC key.
    fn user_by_key(&self, user_key: &str) -> Result<Option<UserRecord>, LedgerError>;

    /// The user with this id.
    fn user_by_id(&self, id: UserId) -> Result<Option<UserRecord>, LedgerError>;

    /// Until when logins for `user_key` from `source` are refused, if they are now.
    fn login_throttle(
        &self,
        user_key: &str,
        source: &str,
        now_ms: i64,
    ) -> Result<Option<i64>, LedgerError>;

    /// Counts a failed login for `user_key` (whether or not such a user exists: `user` is its id
    /// when it does) from `source`, and returns until when further attempts are refused (see
    /// [`ThrottlePolicy`]). A failure while refused is logged but neither counted nor extends
    /// the back-off. Forgets the pairs whose time is up (the table stays bounded). Audit
    /// "login_failed" with the name, the source and `detail`.
    fn record_login_failure(
        &self,
        failure: &LoginFailure,
        policy: ThrottlePolicy,
        now_ms: i64,
    ) -> Result<Option<i64>, LedgerError>;

    /// Records the CMLS licence and device of a user's meter (set once; the same pair again
    /// changes nothing, another pair is refused); reseals the meter; audit "licensed".
    fn license_meter(
        &self,
        user_id: UserId,
        license_id: &str,
        device_id: &str,
        now_ms: i64,
    ) -> Result<(), LedgerError>;

    /// Deletes the users (role `user`) registered before `created_before_ms` whose meter was never
    /// licensed (so never funded: no payment, transfer or item names them), with their zero
    /// accounts, meter, stored requests and standing authorisation; audit "expired" for each.
    /// Returns the user names deleted (their names may be registered again).
    fn expire_unlicensed_users(
        &self,
        created_before_ms: i64,
        now_ms: i64,
    ) -> Result<Vec<String>, LedgerError>;

    /// Forgets the user's failures from `source`; audit "login" with `detail`.
    fn record_login_success(
        &self,
        id: UserId,
        source: &str,
        now_ms: i64,
        detail: &str,
    ) -> Result<(), LedgerError>;

    /// Every (name, source) pair with failures not yet forgotten at `now_ms`, by name and source.
    fn login_throttles(&self, now_ms: i64) -> Result<Vec<LoginThrottle>, LedgerError>;

    /// Forgets every failure of `user_key` from every source (an operator's `admin unlock`);
    /// returns how many pairs were cleared. Audit "login_throttles_cleared" by `actor`.
    fn clear_login_throttles(
        &self,
        user_key: &str,
        actor: &str,
        now_ms: i64,
    ) -> Result<u64, LedgerError>;

    /// Locks the user (`locked` true: its logins are refused until unlocked, see
    /// [`UserRecord::locked`]) or unlocks it; returns whether that changed anything. Audit
    /// "user_locked" or "user_unlocked" by `actor`.
    fn set_user_locked(
        &self,
        user_key: &str,
        locked: bool,
        actor: &str,
        now_ms: i64,
    ) -> Result<bool, LedgerError>;

    // ---- Postage (`logic::postage`, `logic::confirm_window`) ----

    /// Reserves the amount and issues the next piece: customer:U → reserved:U, ascending += amount,
    /// descending −= amount, piece += 1. Inside the transaction, after the checks and the register
    /// update, calls `sign` with the meter state after this piece; it returns the signed item, which
    /// is stored as `issued`. If `sign` fails, or the check it returns with the item fails,
    /// nothing changes (`Signing`). Answered through a [`Queued`]: the item's check runs on the
    /// thread or task that waits for it.
    fn issue(
        &self,
        key: &RequestKey,
        input: &IssueInput,
        sign: Signer,
        now_ms: i64,
    ) -> Queued<IssueOutcome>;

    /// `printed = true`: issued → printed (post). `printed = false`: issued → voided (void, funds
    /// and descending register back). The item must be the user's (else `UnknownItem`). An item
    /// already in the requested final state answers its status; any other state is `NotPending`.
    /// An issued item whose confirmation window has closed (`confirm_by_ms <= now_ms`) cannot be
    /// printed any more: it is voided as expired (that void commits) and the answer is
    /// `NotPending { status: Voided }`. Answered through a [`Queued`].
    fn confirm(
        &self,
        key: &RequestKey,
        serial: &str,
        printed: bool,
        now_ms: i64,
    ) -> Queued<StatusOutcome>;

    /// A printed item of the user → refunded (postage_sold → customer:U, descending += amount) if it
    /// was issued at most `refund_window_ms` ago. An already refunded item answers its status.
    /// `Overflow`, as for [`Store::fund`], when the register would leave no room for the voids.
    fn refund(
        &self,
        key: &RequestKey,
        serial: &str,
        refund_window_ms: i64,
        now_ms: i64,
    ) -> Result<StatusOutcome, LedgerError>;

    /// Hands the user's item bytes out again to print, counting and logging it: allowed only for
    /// an `issued` item (its confirmation still pending; a `printed` one is `AlreadyPrinted`), at most
    /// `limits.max_reprints` times and within `limits.window_ms` of issue (`ReprintLimit`,
    /// `ReprintWindowClosed`); audit "reprint". An issued item whose confirmation window has closed
    /// is voided as expired (that void commits) and the answer is `NotPending { status: Voided }`;
    /// other states are `NotPending`. A repeated request id answers the first outcome and counts
    /// once.
    fn reprint(
        &self,
        key: &RequestKey,
        serial: &str,
        limits: ReprintLimits,
        now_ms: i64,
    ) -> Result<ReprintOutcome, LedgerError>;

    /// Redeems a printed value item for `key`'s user (the redeemer: its issuer, or a user the
    /// issuer allowed with [`Store::add_redeemer`], else `NotAllowed`), as one conditional update
    /// of the item: printed → redeemed, or for a certificate `amount` (default: all that is left)
    /// off what is left, which stays `printed` until nothing is. Tickets, checks and certificates
    /// move the amount outstanding:KIND → customer:REDEEMER (transfer `redeem`; the redeemer's
    /// descending register rises as for a funding); coupons move no money. Refused:
    /// `NotRedeemable` for postage, `AlreadyRedeemed` when nothing is left, `Expired` after its
    /// `valid_until_ms`, `NotPending` before it is printed or once voided or refunded,
    /// `InvalidInput` for a part of anything but a certificate or more than is left,
    /// `UnknownItem` for no such item. A repeated request answers the first outcome. Audit
    /// "redeem".
    fn redeem(
        &self,
        key: &RequestKey,
        serial: &str,
        amount: Option<Amount>,
        now_ms: i64,
    ) -> Result<RedeemOutcome, LedgerError>;

    /// Allows `redeemer` to redeem `issuer`'s value items (idempotent); audit "redeemer_added".
    /// `InvalidInput` for the issuer itself.
    fn add_redeemer(
        &self,
        issuer: UserId,
        redeemer: UserId,
        now_ms: i64,
    ) -> Result<(), LedgerError>;

    /// Withdraws that permission; returns whether there was one. Audit "redeemer_removed".
    fn remove_redeemer(
        &self,
        issuer: UserId,
        redeemer: UserId,
        now_ms: i64,
    ) -> Result<bool, LedgerError>;

    /// The users `issuer` allows to redeem its items: (user id, user name), by name.
    fn redeemers(&self, issuer: UserId) -> Result<Vec<(UserId, String)>, LedgerError>;

    /// The user's value-item registers, one per kind it ever issued, by kind.
    fn value_registers(&self, user_id: UserId) -> Result<Vec<ValueRegister>, LedgerError>;

    /// Starts the confirmation window of a user's (or every user's, with `None`) issued items that
    /// have none: `confirm_by_ms = deadline_ms`. Returns how many items it set.
    fn start_confirm_window(
        &self,
        user_id: Option<UserId>,
        deadline_ms: i64,
    ) -> Result<u64, LedgerError>;

    /// Voids (and returns the funds of) every issued item whose `confirm_by_ms <= now_ms`, at most
    /// [`MAX_VOID_BATCH`] per call; returns their serials. Audit "void_expired" per item.
    fn void_expired(&self, now_ms: i64) -> Result<Vec<String>, LedgerError>;

    // ---- Payments (`logic::payments`) and request idempotency ----

    /// The stored outcome of a request id, if any: `(fingerprint, op, outcome_json)`. Lets the caller
    /// skip external calls (the bank) for a repeat.
    fn find_request(
        &self,
        user_id: UserId,
        request_id: &str,
    ) -> Result<Option<([u8; 32], String, String)>, LedgerError>;

    /// Credits a payment: bank_clearing → customer:U, descending += amount; records the payment.
    /// `Overflow` when the descending register would leave no room for the user's reservations
    /// to come back (a void is never refused for want of room).
    fn fund(
        &self,
        key: &RequestKey,
        input: &FundInput,
        now_ms: i64,
    ) -> Result<FundOutcome, LedgerError>;

    /// Every payment we credited (and debts paid), oldest first, with any ACH return.
    fn payments(&self) -> Result<Vec<PaymentRow>, LedgerError>;

    /// The bank returned this ACH debit: record it, which locks its user until the debt is paid.
    /// Returns the user when the return is new; `None` when it was already recorded.
    /// `UnknownItem`-free: an unknown payment id is `InvalidInput`.
    fn record_payment_return(
        &self,
        payment_id: &str,
        now_ms: i64,
    ) -> Result<Option<UserId>, LedgerError>;

    /// The user's returned debits not yet paid (non-empty = the account is locked).
    fn open_returns(&self, user_id: UserId) -> Result<Vec<PaymentRow>, LedgerError>;

    /// Records `paid_by` (a bank payment of exactly the returned amount) as paying the returned
    /// debit; the request's outcome is stored with it. No ledger transfer: the balance stays.
    /// Audit "return_paid".
    fn pay_return(
        &self,
        key: &RequestKey,
        returned_payment_id: &str,
        paid_by: &str,
        now_ms: i64,
    ) -> Result<FundOutcome, LedgerError>;

    /// `AccountClosed` for a closed account, `AccountLocked` (naming the oldest) while a returned
    /// ACH debit is unpaid; the rule `issue` applies inside its own transaction.
    fn refuse_if_locked(&self, user_id: UserId) -> Result<(), LedgerError>;

    /// Sets (or with `None` removes) the user's standing authorisation for auto-refill. A new
    /// authorisation starts with nothing used. Audit "auto_refill_set".
    /// `key` is the request's idempotency key: a repeat changes nothing more.
    fn set_auto_refill(
        &self,
        key: &RequestKey,
        auth: Option<&AutoRefill>,
        now_ms: i64,
    ) -> Result<(), LedgerError>;

    /// The user's standing authorisation, if any.
    fn auto_refill(&self, user_id: UserId) -> Result<Option<AutoRefill>, LedgerError>;

    /// Counts refill number `refill` (of `amount_mills`) against the cap, once: only when the
    /// stored count is still `refill`. Returns whether it counted.
    fn count_auto_refill(
        &self,
        user_id: UserId,
        refill: u64,
        amount_mills: u64,
    ) -> Result<bool, LedgerError>;

    // ---- Closure (`logic::closure`) ----

    /// Begins closing the account under `key`'s request, before any bank refund: from here on
    /// every operation that spends or credits is refused (`AccountClosed`), so the balance the
    /// payouts are planned from cannot move. Refused while items await confirmation, while a
    /// returned debit is unpaid, and once closed. A closure begun and not finished (a crash, the
    /// bank not ready) goes on under the request that asks next (`Closing`, with the balance);
    /// the request that finished one answers `Closed` with its outcome.
    fn begin_close(&self, key: &RequestKey, now_ms: i64) -> Result<CloseStart, LedgerError>;

    /// The payout plan the user's closure in progress fixed ([`Store::fix_close_plan`]), if any.
    fn close_plan(&self, user_id: UserId) -> Result<Option<Vec<(String, u64)>>, LedgerError>;

    /// Fixes which payments (`(payment id, mills)`) refund the frozen balance of the user's
    /// closure in progress, so that a resumed closure refunds exactly what the first attempt
    /// planned — whatever the bank says of the payments meanwhile. The first plan stands: a later
    /// call answers it. `InvalidInput` unless a closure is in progress and the plan pays out
    /// exactly its balance, each payment once; `close_account` then books only that plan.
    fn fix_close_plan(
        &self,
        user_id: UserId,
        plan: &[(String, u64)],
        now_ms: i64,
    ) -> Result<Vec<(String, u64)>, LedgerError>;

    /// Closes the account: each payout (a bank refund already made) moves its amount
    /// customer:U → bank_clearing (kind `payout`, naming the refunded payment), the descending
    /// register falls by it, and the payouts must sum to the whole balance; nothing may be
    /// awaiting confirmation. A repeated request answers the first outcome. Audit "payout" per
    /// transfer and "close".
    fn close_account(
        &self,
        key: &RequestKey,
        payouts: &[Payout],
        now_ms: i64,
    ) -> Result<CloseOutcome, LedgerError>;

    /// When the user's account was closed (or its closure began), if it was.
    fn closed_at(&self, user_id: UserId) -> Result<Option<i64>, LedgerError>;

    // ---- Reports (`logic::reports`) ----

    /// What the user can spend, the registers and the counts.
    fn balance(&self, user_id: UserId) -> Result<BalanceView, LedgerError>;

    /// The user's meter.
    fn meter(&self, user_id: UserId) -> Result<Option<MeterState>, LedgerError>;

    /// Every meter, by user id.
    fn meters(&self) -> Result<Vec<MeterState>, LedgerError>;

    /// The user's items, newest first, at most `min(limit, MAX_HISTORY_LIMIT)`.
    fn history(&self, user_id: UserId, limit: u32) -> Result<Vec<ItemSummary>, LedgerError> {
        self.history_page(user_id, None, limit)
    }

    /// A page of the user's items, newest first: those older than the user's item `before`
    /// (by issue time, then number), at most `min(limit, MAX_HISTORY_LIMIT)`. Walking pages,
    /// each from the last serial of the one before, visits every item once (keyset paging: items
    /// issued meanwhile do not shift the pages). `UnknownItem` when `before` is not the user's.
    fn history_page(
        &self,
        user_id: UserId,
        before: Option<&str>,
        limit: u32,
    ) -> Result<Vec<ItemSummary>, LedgerError>;

    /// The user's items of `kind` issued in `[from_ms, to_ms)`, oldest first, with their bytes
    /// (exports such as positive pay); at most [`MAX_EXPORT_ITEMS`], else `InvalidInput`
    /// asking for a shorter period.
    fn items_of_kind(
        &self,
        user_id: UserId,
        kind: &str,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<ItemRecord>, LedgerError>;

    /// The status of any item (the void list verifiers consult); `None` when unknown.
    fn item_status(&self, serial: &str) -> Result<Option<ItemStatus>, LedgerError>;

    /// What anybody may learn of any item by its serial; `None` when unknown.
    fn item_state(&self, serial: &str) -> Result<Option<ItemState>, LedgerError>;

    /// The amount of one of the user's items (`None`: no such item of this user).
    fn item_amount(&self, user_id: UserId, serial: &str) -> Result<Option<u64>, LedgerError>;

    // ---- The audit log (`logic::audit_log`, `audit`) ----

    /// Appends an entry to the audit log (logins, admin actions).
    fn append_audit(
        &self,
        actor: &str,
        action: &str,
        detail: &str,
        now_ms: i64,
    ) -> Result<(), LedgerError>;

    /// Recomputes everything from the tables and lists every break: balances sum to zero; each
    /// balance equals its transfers; customer and reserved balances ≥ 0; per meter descending =
    /// customer balance, ascending = Σ reserves, ascending + descending = the control total, piece =
    /// items issued with numbers 1..=piece; reserved:U = Σ U's issued items; each item has exactly
    /// one reserve and the post/void/refund its status implies; each payment has its one fund
    /// transfer; each transfer is logged once; the audit log's seq is contiguous and its hash chain
    /// intact. Deleting the newest audit entries is only caught when they logged a transfer.
    fn audit(&self) -> Result<AuditReport, LedgerError>;

    /// Walks only the audit log's hash chains (sequence and hashes of every chain); returns the
    /// problems found, none when the log is whole. The server runs it when it starts.
    fn check_audit_chains(&self) -> Result<Vec<String>, LedgerError>;

    /// The newest entry of every audit chain: (chain, sequence number, hash), by chain.
    fn audit_heads(&self) -> Result<Vec<(i64, i64, [u8; 32])>, LedgerError>;

    /// The hash of entry `seq` of audit chain `chain`, if that entry exists.
    fn audit_entry_hash(&self, chain: i64, seq: i64) -> Result<Option<[u8; 32]>, LedgerError>;
}

/// Serde helper: bytes as lowercase hex.
mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        hex::decode(text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issue_outcome_stores_item_bytes_as_hex() {
        let outcome = IssueOutcome {
            serial: "SL0100001234-42".into(),
            item: vec![0x53, 0x4c, 0x01, 0xff],
            balance_mills: 9220,
            postage_mills: 780,
            refill_due: false,
        };
        let json = serde_json::to_string(&outcome).expect("serialise");
        assert_eq!(
            json,
            r#"{"serial":"SL0100001234-42","item":"534c01ff","balance_mills":9220,"postage_mills":780}"#
        );
        let back: IssueOutcome = serde_json::from_str(&json).expect("deserialise");
        assert_eq!(back, outcome);
    }

    #[test]
    fn stored_outcome_with_bad_hex_is_rejected() {
        let json = r#"{"serial":"s","item":"zz","balance_mills":0,"postage_mills":1}"#;
        assert!(serde_json::from_str::<IssueOutcome>(json).is_err());
    }

    #[test]
    fn fingerprint_separates_fields_and_ops() {
        let a = Fingerprint::of("issue", &[b"ab", b"c"]);
        assert_ne!(a, Fingerprint::of("issue", &[b"a", b"bc"]));
        assert_ne!(a, Fingerprint::of("fund", &[b"ab", b"c"]));
        assert_eq!(a, Fingerprint::of("issue", &[b"ab", b"c"]));
    }

    #[test]
    fn item_status_names_round_trip_and_match_serde() {
        for status in [
            ItemStatus::Issued,
            ItemStatus::Printed,
            ItemStatus::Voided,
            ItemStatus::Refunded,
            ItemStatus::Redeemed,
        ] {
            assert_eq!(ItemStatus::parse(status.as_str()), Some(status));
            let json = serde_json::to_string(&status).expect("serialise");
            assert_eq!(json, format!("\"{}\"", status.as_str()));
        }
        assert_eq!(ItemStatus::parse("unknown"), None);
        assert_eq!(Role::parse(Role::Admin.as_str()), Some(Role::Admin));
    }
}
