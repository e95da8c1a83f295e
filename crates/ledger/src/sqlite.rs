//! [`SqliteStore`]: the ledger in an embedded SQLite database (WAL, synchronous=FULL).
//!
//! One connection sits behind a mutex: the server calls the store from `spawn_blocking`, and
//! SQLite allows one writer at a time anyway. Every write is a `BEGIN IMMEDIATE` transaction, so a
//! second process on the same file waits (up to [`BUSY_TIMEOUT_MS`]) instead of failing half-way.
//! Amounts are `INTEGER` mills; all arithmetic is done in Rust with checked operations and the
//! absolute results are written back, because SQLite silently turns an overflowing integer
//! expression into a float.

mod audit;
mod payments;
mod schema;

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};
use serde::Serialize;
use serde::de::DeserializeOwned;
use stampline_money::Amount;

use crate::chain;
use crate::{
    ACCOUNT_BANK_CLEARING, ACCOUNT_POSTAGE_SOLD, AuditReport, BalanceView, FundInput, FundOutcome,
    IssueInput, IssueOutcome, ItemStatus, ItemSummary, LedgerError, MAX_AUDIT_FIELD_LEN,
    MAX_HISTORY_LIMIT, MAX_ITEM_BYTES, MAX_KIND_LEN, MAX_REGISTER_MILLS, MAX_REQUEST_ID_LEN,
    MAX_SERIAL_LEN, MAX_TEXT_LEN, MAX_VOID_BATCH, MAX_WRAPPED_KEY_LEN, MeterState, NewUser,
    PieceState, ReprintLimits, ReprintOutcome, RequestKey, Role, SignedItem, StatusOutcome, Store,
    UserId, UserRecord, customer_account, reserved_account,
};

pub use schema::SCHEMA_VERSION;

/// How long a transaction waits for another process's write lock before failing.
pub const BUSY_TIMEOUT_MS: u64 = 5_000;

/// The actor of entries the ledger writes on its own (expiry voids).
const ACTOR_SYSTEM: &str = "system";

/// The ledger in one SQLite database file (or in memory, for tests).
#[derive(Debug)]
pub struct SqliteStore {
    conn: Mutex<Connection>,
    path: Option<PathBuf>,
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path`, sets WAL, synchronous=FULL, foreign keys
    /// and the busy timeout, and creates or migrates the schema.
    pub fn open(path: &Path) -> Result<SqliteStore, LedgerError> {
        let conn = Connection::open(path)?;
        SqliteStore::init(conn, Some(path.to_path_buf()))
    }

    /// A private in-memory database (WAL does not apply to it).
    pub fn open_in_memory() -> Result<SqliteStore, LedgerError> {
        let conn = Connection::open_in_memory()?;
        SqliteStore::init(conn, None)
    }

    /// The database file, or `None` in memory.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    fn init(mut conn: Connection, path: Option<PathBuf>) -> Result<SqliteStore, LedgerError> {
        conn.busy_timeout(Duration::from_millis(BUSY_TIMEOUT_MS))?;
        // journal_mode answers with the mode in force: "wal" for files, "memory" in memory.
        let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
        if path.is_some() && !mode.eq_ignore_ascii_case("wal") {
            return Err(LedgerError::Corrupt(format!(
                "cannot switch the database to WAL (journal mode is {mode})"
            )));
        }
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        schema::migrate(&mut conn)?;
        Ok(SqliteStore {
            conn: Mutex::new(conn),
            path,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        // A panic while the lock was held (say, in a signing callback) unwound through the open
        // transaction, whose drop rolled it back: the connection is clean, so poisoning is ignored.
        self.conn
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Runs `f` in one `BEGIN IMMEDIATE` transaction, committing only if it returns `Ok`.
    /// (An `Ok(Err(..))` from `f` commits and then reports the inner error.)
    fn write<T>(
        &self,
        f: impl FnOnce(&Transaction<'_>) -> Result<T, LedgerError>,
    ) -> Result<T, LedgerError> {
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let out = f(&tx)?;
        tx.commit()?;
        Ok(out)
    }

    /// Runs `f` in one read transaction, so that its several queries see one snapshot.
    fn read<T>(
        &self,
        f: impl FnOnce(&Transaction<'_>) -> Result<T, LedgerError>,
    ) -> Result<T, LedgerError> {
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Deferred)?;
        let out = f(&tx)?;
        // Nothing was written; finishing the transaction only releases the snapshot.
        tx.rollback()?;
        Ok(out)
    }
}

impl Store for SqliteStore {
    fn payments(&self) -> Result<Vec<crate::PaymentRow>, LedgerError> {
        self.read(|tx| payments::list(tx))
    }

    fn record_payment_return(
        &self,
        payment_id: &str,
        now_ms: i64,
    ) -> Result<Option<UserId>, LedgerError> {
        self.write(|tx| payments::record_return(tx, payment_id, now_ms))
    }

    fn open_returns(&self, user_id: UserId) -> Result<Vec<crate::PaymentRow>, LedgerError> {
        self.read(|tx| payments::open_returns(tx, user_id))
    }

    fn pay_return(
        &self,
        key: &RequestKey,
        returned_payment_id: &str,
        paid_by: &str,
        now_ms: i64,
    ) -> Result<FundOutcome, LedgerError> {
        self.write(|tx| payments::pay_return(tx, key, returned_payment_id, paid_by, now_ms))
    }

    fn meters(&self) -> Result<Vec<MeterState>, LedgerError> {
        self.read(|tx| payments::meters(tx))
    }

    fn set_auto_refill(
        &self,
        key: &RequestKey,
        auth: Option<&crate::AutoRefill>,
        now_ms: i64,
    ) -> Result<(), LedgerError> {
        self.write(|tx| payments::set_auto_refill(tx, key, auth, now_ms))
    }

    fn auto_refill(&self, user_id: UserId) -> Result<Option<crate::AutoRefill>, LedgerError> {
        self.read(|tx| payments::auto_refill(tx, user_id))
    }

    fn count_auto_refill(
        &self,
        user_id: UserId,
        refill: u64,
        amount_mills: u64,
    ) -> Result<bool, LedgerError> {
        self.write(|tx| payments::count_auto_refill(tx, user_id, refill, amount_mills))
    }

    fn close_account(
        &self,
        key: &RequestKey,
        payouts: &[crate::Payout],
        now_ms: i64,
    ) -> Result<crate::CloseOutcome, LedgerError> {
        self.write(|tx| payments::close_account(tx, key, payouts, now_ms))
    }

    fn closed_at(&self, user_id: UserId) -> Result<Option<i64>, LedgerError> {
        self.read(|tx| payments::closed_at(tx, user_id))
    }

    fn item_amount(&self, user_id: UserId, serial: &str) -> Result<Option<u64>, LedgerError> {
        self.read(|tx| payments::item_amount(tx, user_id, serial))
    }

    fn create_user(&self, u: &NewUser, now_ms: i64) -> Result<UserId, LedgerError> {
        check_text("user", &u.user, 1, MAX_TEXT_LEN)?;
        check_text("user_key", &u.user_key, 1, MAX_TEXT_LEN)?;
        for (what, value) in [
            ("name", &u.name),
            ("address", &u.address),
            ("city", &u.city),
            ("state", &u.state),
            ("zip", &u.zip),
        ] {
            check_text(what, value, 0, MAX_TEXT_LEN)?;
        }
        check_text("password_hash", &u.password_hash, 1, MAX_TEXT_LEN)?;
        check_text("license_id", &u.license_id, 1, MAX_TEXT_LEN)?;
        check_text("device_id", &u.device_id, 1, MAX_TEXT_LEN)?;
        if u.wrapped_link_key.len() > MAX_WRAPPED_KEY_LEN {
            return Err(LedgerError::InvalidInput(
                "wrapped link key too long".into(),
            ));
        }
        self.write(|tx| {
            let taken: Option<i64> = tx
                .query_row(
                    "SELECT id FROM users WHERE user_key = ?1",
                    [&u.user_key],
                    |r| r.get(0),
                )
                .optional()?;
            if taken.is_some() {
                return Err(LedgerError::UserExists);
            }
            let device_taken: Option<i64> = tx
                .query_row(
                    "SELECT user_id FROM meters WHERE device_id = ?1",
                    [&u.device_id],
                    |r| r.get(0),
                )
                .optional()?;
            if device_taken.is_some() {
                return Err(LedgerError::Invariant(format!(
                    "device id {} is already assigned",
                    u.device_id
                )));
            }
            tx.execute(
                "INSERT INTO users (user, user_key, name, address, city, state, zip, password_hash,
                     wrapped_link_key, role, failed_logins, locked_until_ms, created_at_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, 0, NULL, ?11)",
                params![
                    u.user,
                    u.user_key,
                    u.name,
                    u.address,
                    u.city,
                    u.state,
                    u.zip,
                    u.password_hash,
                    u.wrapped_link_key,
                    u.role.as_str(),
                    now_ms
                ],
            )?;
            let id = tx.last_insert_rowid();
            for account in [customer_account(id), reserved_account(id)] {
                tx.execute(
                    "INSERT INTO accounts (id, balance) VALUES (?1, 0)",
                    [&account],
                )?;
            }
            tx.execute(
                "INSERT INTO meters (user_id, device_id, license_id, ascending_mills,
                     descending_mills, piece, seal)
                 VALUES (?1, ?2, ?3, 0, 0, 0, NULL)",
                params![id, u.device_id, u.license_id],
            )?;
            let detail = serde_json::json!({
                "user": id,
                "device_id": u.device_id,
                "license_id": u.license_id,
                "role": u.role.as_str(),
            });
            append_audit_entry(tx, now_ms, &user_actor(id), "register", &detail.to_string())?;
            check_user_invariants(tx, id)?;
            Ok(id)
        })
    }

    fn user_by_key(&self, user_key: &str) -> Result<Option<UserRecord>, LedgerError> {
        self.read(|tx| load_user(tx, "u.user_key = ?1", &user_key))
    }

    fn user_by_id(&self, id: UserId) -> Result<Option<UserRecord>, LedgerError> {
        self.read(|tx| load_user(tx, "u.id = ?1", &id))
    }

    fn record_login_failure(
        &self,
        id: UserId,
        now_ms: i64,
        max_failures: u32,
        lockout_ms: i64,
    ) -> Result<Option<i64>, LedgerError> {
        self.write(|tx| {
            let user = load_user(tx, "u.id = ?1", &id)?.ok_or(LedgerError::UnknownUser)?;
            if let Some(until_ms) = user.locked_until_ms.filter(|&until| until > now_ms) {
                let detail = serde_json::json!({ "locked_until_ms": until_ms, "counted": false });
                append_audit_entry(
                    tx,
                    now_ms,
                    &user_actor(id),
                    "login_failed",
                    &detail.to_string(),
                )?;
                return Ok(Some(until_ms));
            }
            let failures = user.failed_logins.saturating_add(1);
            let (failures, locked_until_ms) = if failures >= max_failures {
                (0, Some(now_ms.saturating_add(lockout_ms)))
            } else {
                (failures, None)
            };
            tx.execute(
                "UPDATE users SET failed_logins = ?1, locked_until_ms = ?2 WHERE id = ?3",
                params![failures, locked_until_ms, id],
            )?;
            let detail = serde_json::json!({
                "failed_logins": failures,
                "locked_until_ms": locked_until_ms,
                "counted": true,
            });
            append_audit_entry(
                tx,
                now_ms,
                &user_actor(id),
                "login_failed",
                &detail.to_string(),
            )?;
            Ok(locked_until_ms)
        })
    }

    fn record_login_success(
        &self,
        id: UserId,
        now_ms: i64,
        detail: &str,
    ) -> Result<(), LedgerError> {
        check_text("detail", detail, 0, MAX_AUDIT_FIELD_LEN)?;
        self.write(|tx| {
            let changed = tx.execute(
                "UPDATE users SET failed_logins = 0, locked_until_ms = NULL WHERE id = ?1",
                [id],
            )?;
            if changed != 1 {
                return Err(LedgerError::UnknownUser);
            }
            append_audit_entry(tx, now_ms, &user_actor(id), "login", detail)
        })
    }

    fn find_request(
        &self,
        user_id: UserId,
        request_id: &str,
    ) -> Result<Option<([u8; 32], String, String)>, LedgerError> {
        self.read(|tx| {
            let row: Option<(Vec<u8>, String, String)> = tx
                .query_row(
                    "SELECT fingerprint, op, outcome_json FROM requests
                     WHERE user_id = ?1 AND request_id = ?2",
                    params![user_id, request_id],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )
                .optional()?;
            row.map(|(fp, op, json)| Ok((hash32(&fp, "request fingerprint")?, op, json)))
                .transpose()
        })
    }

    fn fund(
        &self,
        key: &RequestKey,
        input: &FundInput,
        now_ms: i64,
    ) -> Result<FundOutcome, LedgerError> {
        self.write(|tx| {
            if let Some(json) = find_outcome(tx, key, OP_FUND)? {
                return replay(&json);
            }
            let amount = positive_mills(input.amount)?;
            check_text("payment_id", input.payment_id, 1, MAX_TEXT_LEN)?;
            if !matches!(input.method, "card" | "eft") {
                return Err(LedgerError::InvalidInput(
                    "payment method must be card or eft".into(),
                ));
            }
            if let Some(token) = input.token {
                check_text("token", token, 1, MAX_TEXT_LEN)?;
            }
            if let Some(last4) = input.last4
                && (last4.len() != 4 || !last4.bytes().all(|b| b.is_ascii_digit()))
            {
                return Err(LedgerError::InvalidInput(
                    "last4 must be four digits".into(),
                ));
            }
            let user_id = key.user_id;
            let meter = require_meter(tx, user_id)?;
            let known: Option<String> = tx
                .query_row(
                    "SELECT payment_id FROM payments WHERE payment_id = ?1",
                    [input.payment_id],
                    |r| r.get(0),
                )
                .optional()?;
            if known.is_some() {
                return Err(LedgerError::DuplicatePayment);
            }
            let new_meter = Meter {
                descending_mills: register_add(meter.descending_mills, amount)?,
                ..meter.clone()
            };
            tx.execute(
                "INSERT INTO payments (payment_id, user_id, method, amount_mills, token, last4,
                     at_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    input.payment_id,
                    user_id,
                    input.method,
                    amount,
                    input.token,
                    input.last4,
                    now_ms
                ],
            )?;
            let transfer_id = transfer(
                tx,
                &Transfer {
                    at_ms: now_ms,
                    from: ACCOUNT_BANK_CLEARING,
                    to: &customer_account(user_id),
                    amount_mills: amount,
                    kind: KIND_FUND,
                    item_serial: None,
                    payment_id: Some(input.payment_id),
                },
            )?;
            store_meter(tx, &meter, &new_meter)?;
            check_user_invariants(tx, user_id)?;
            let outcome = FundOutcome {
                payment_id: input.payment_id.to_owned(),
                amount_mills: to_u64(amount, "amount")?,
                balance_mills: to_u64(
                    balance_of(tx, &customer_account(user_id))?,
                    "customer balance",
                )?,
            };
            store_outcome(tx, key, OP_FUND, &outcome, now_ms)?;
            let detail = serde_json::json!({
                "payment_id": input.payment_id,
                "method": input.method,
                "amount_mills": amount,
                "transfer": transfer_id,
            });
            append_audit_entry(
                tx,
                now_ms,
                &user_actor(user_id),
                "fund",
                &detail.to_string(),
            )?;
            Ok(outcome)
        })
    }

    fn issue(
        &self,
        key: &RequestKey,
        input: &IssueInput,
        sign: &mut dyn FnMut(&PieceState) -> Result<SignedItem, String>,
        now_ms: i64,
    ) -> Result<IssueOutcome, LedgerError> {
        self.write(|tx| {
            if let Some(json) = find_outcome(tx, key, OP_ISSUE)? {
                return replay(&json);
            }
            let amount = positive_mills(input.amount)?;
            check_text("kind", input.kind, 1, MAX_KIND_LEN)?;
            if let Some(session) = &input.session {
                check_text("session", session, 1, MAX_TEXT_LEN)?;
            }
            let user_id = key.user_id;
            let meter = require_meter(tx, user_id)?;
            let customer = customer_account(user_id);
            let balance = balance_of(tx, &customer)?;
            if balance < amount {
                return Err(LedgerError::InsufficientFunds {
                    balance_mills: to_u64(balance, "customer balance")?,
                    needed_mills: to_u64(amount, "amount")?,
                });
            }
            let descending_mills = meter.descending_mills.checked_sub(amount).ok_or_else(|| {
                LedgerError::Invariant(format!(
                    "descending register of user {user_id} is below the balance"
                ))
            })?;
            let new_meter = Meter {
                ascending_mills: register_add(meter.ascending_mills, amount)?,
                descending_mills,
                piece: meter.piece.checked_add(1).ok_or(LedgerError::Overflow)?,
                ..meter.clone()
            };
            store_meter(tx, &meter, &new_meter)?;
            let piece_state = PieceState {
                device_id: new_meter.device_id.clone(),
                piece: new_meter.piece,
                ascending_mills: to_u64(new_meter.ascending_mills, "ascending register")?,
                descending_mills: to_u64(new_meter.descending_mills, "descending register")?,
            };
            let signed = sign(&piece_state).map_err(LedgerError::Signing)?;
            check_text("serial", &signed.serial, 1, MAX_SERIAL_LEN)
                .map_err(|e| LedgerError::Signing(format!("signer returned a bad serial: {e}")))?;
            if signed.bytes.is_empty() || signed.bytes.len() > MAX_ITEM_BYTES {
                return Err(LedgerError::Signing(format!(
                    "signer returned {} item bytes",
                    signed.bytes.len()
                )));
            }
            if load_item(tx, &signed.serial)?.is_some() {
                return Err(LedgerError::Invariant(format!(
                    "serial {} was already issued",
                    signed.serial
                )));
            }
            tx.execute(
                "INSERT INTO items (serial, user_id, kind, amount_mills, piece, status, bytes,
                     issued_at_ms, confirm_by_ms, settled_at_ms, session)
                 VALUES (?1, ?2, ?3, ?4, ?5, 'issued', ?6, ?7, NULL, NULL, ?8)",
                params![
                    signed.serial,
                    user_id,
                    input.kind,
                    amount,
                    new_meter.piece,
                    signed.bytes,
                    now_ms,
                    input.session
                ],
            )?;
            let transfer_id = transfer(
                tx,
                &Transfer {
                    at_ms: now_ms,
                    from: &customer,
                    to: &reserved_account(user_id),
                    amount_mills: amount,
                    kind: KIND_RESERVE,
                    item_serial: Some(&signed.serial),
                    payment_id: None,
                },
            )?;
            check_user_invariants(tx, user_id)?;
            let outcome = IssueOutcome {
                serial: signed.serial.clone(),
                item: signed.bytes,
                balance_mills: to_u64(balance_of(tx, &customer)?, "customer balance")?,
                postage_mills: to_u64(amount, "amount")?,
            };
            store_outcome(tx, key, OP_ISSUE, &outcome, now_ms)?;
            let detail = serde_json::json!({
                "serial": signed.serial,
                "kind": input.kind,
                "amount_mills": amount,
                "piece": new_meter.piece,
                "transfer": transfer_id,
            });
            append_audit_entry(
                tx,
                now_ms,
                &user_actor(user_id),
                "issue",
                &detail.to_string(),
            )?;
            Ok(outcome)
        })
    }

    fn confirm(
        &self,
        key: &RequestKey,
        serial: &str,
        printed: bool,
        now_ms: i64,
    ) -> Result<StatusOutcome, LedgerError> {
        // The inner result lets a late print confirmation commit the expiry void and still fail.
        self.write(|tx| {
            if let Some(json) = find_outcome(tx, key, OP_CONFIRM)? {
                return Ok(replay(&json));
            }
            let user_id = key.user_id;
            let item = load_item(tx, serial)?
                .filter(|item| item.user_id == user_id)
                .ok_or(LedgerError::UnknownItem)?;
            let status = match (item.status, printed) {
                (ItemStatus::Issued, true)
                    if item
                        .confirm_by_ms
                        .is_some_and(|deadline| deadline <= now_ms) =>
                {
                    void_item(tx, &item, now_ms, ACTOR_SYSTEM, "void_expired")?;
                    check_user_invariants(tx, user_id)?;
                    return Ok(Err(LedgerError::NotPending {
                        status: ItemStatus::Voided,
                    }));
                }
                (ItemStatus::Issued, true) => {
                    post_item(tx, &item, now_ms)?;
                    ItemStatus::Printed
                }
                (ItemStatus::Issued, false) => {
                    void_item(tx, &item, now_ms, &user_actor(user_id), "void")?;
                    ItemStatus::Voided
                }
                (ItemStatus::Printed, true) | (ItemStatus::Voided, false) => item.status,
                (status, _) => return Err(LedgerError::NotPending { status }),
            };
            check_user_invariants(tx, user_id)?;
            let outcome = StatusOutcome {
                serial: item.serial.clone(),
                status,
                balance_mills: to_u64(
                    balance_of(tx, &customer_account(user_id))?,
                    "customer balance",
                )?,
            };
            store_outcome(tx, key, OP_CONFIRM, &outcome, now_ms)?;
            Ok(Ok(outcome))
        })?
    }

    fn refund(
        &self,
        key: &RequestKey,
        serial: &str,
        refund_window_ms: i64,
        now_ms: i64,
    ) -> Result<StatusOutcome, LedgerError> {
        self.write(|tx| {
            if let Some(json) = find_outcome(tx, key, OP_REFUND)? {
                return replay(&json);
            }
            let user_id = key.user_id;
            let item = load_item(tx, serial)?
                .filter(|item| item.user_id == user_id)
                .ok_or(LedgerError::UnknownItem)?;
            match item.status {
                ItemStatus::Printed => {
                    if now_ms.saturating_sub(item.issued_at_ms) > refund_window_ms {
                        return Err(LedgerError::RefundWindowClosed);
                    }
                    let meter = require_meter(tx, user_id)?;
                    let new_meter = Meter {
                        descending_mills: register_add(meter.descending_mills, item.amount_mills)?,
                        ..meter.clone()
                    };
                    let transfer_id = transfer(
                        tx,
                        &Transfer {
                            at_ms: now_ms,
                            from: ACCOUNT_POSTAGE_SOLD,
                            to: &customer_account(user_id),
                            amount_mills: item.amount_mills,
                            kind: KIND_REFUND,
                            item_serial: Some(&item.serial),
                            payment_id: None,
                        },
                    )?;
                    store_meter(tx, &meter, &new_meter)?;
                    set_status(tx, &item, ItemStatus::Refunded, now_ms)?;
                    let detail = serde_json::json!({
                        "serial": item.serial,
                        "amount_mills": item.amount_mills,
                        "transfer": transfer_id,
                    });
                    append_audit_entry(
                        tx,
                        now_ms,
                        &user_actor(user_id),
                        "refund",
                        &detail.to_string(),
                    )?;
                }
                ItemStatus::Refunded => {}
                status => return Err(LedgerError::NotPending { status }),
            }
            check_user_invariants(tx, user_id)?;
            let outcome = StatusOutcome {
                serial: item.serial.clone(),
                status: ItemStatus::Refunded,
                balance_mills: to_u64(
                    balance_of(tx, &customer_account(user_id))?,
                    "customer balance",
                )?,
            };
            store_outcome(tx, key, OP_REFUND, &outcome, now_ms)?;
            Ok(outcome)
        })
    }

    fn reprint(
        &self,
        key: &RequestKey,
        serial: &str,
        limits: ReprintLimits,
        now_ms: i64,
    ) -> Result<ReprintOutcome, LedgerError> {
        // The inner result lets an expired item's void commit and still fail, as in `confirm`.
        self.write(|tx| {
            if let Some(json) = find_outcome(tx, key, OP_REPRINT)? {
                return Ok(replay(&json));
            }
            let user_id = key.user_id;
            let item = load_item(tx, serial)?
                .filter(|item| item.user_id == user_id)
                .ok_or(LedgerError::UnknownItem)?;
            match item.status {
                ItemStatus::Issued
                    if item
                        .confirm_by_ms
                        .is_some_and(|deadline| deadline <= now_ms) =>
                {
                    void_item(tx, &item, now_ms, ACTOR_SYSTEM, "void_expired")?;
                    check_user_invariants(tx, user_id)?;
                    return Ok(Err(LedgerError::NotPending {
                        status: ItemStatus::Voided,
                    }));
                }
                ItemStatus::Issued | ItemStatus::Printed => {}
                status => return Ok(Err(LedgerError::NotPending { status })),
            }
            if now_ms.saturating_sub(item.issued_at_ms) > limits.window_ms {
                return Ok(Err(LedgerError::ReprintWindowClosed));
            }
            let (done, bytes): (i64, Vec<u8>) = tx.query_row(
                "SELECT reprints, bytes FROM items WHERE serial = ?1",
                [serial],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?;
            let done = u32::try_from(done)
                .map_err(|_| LedgerError::Corrupt(format!("reprints of {serial}: {done}")))?;
            if done >= limits.max_reprints {
                return Ok(Err(LedgerError::ReprintLimit { reprints: done }));
            }
            let reprints = done + 1;
            let changed = tx.execute(
                "UPDATE items SET reprints = ?1 WHERE serial = ?2 AND reprints = ?3",
                params![reprints, serial, done],
            )?;
            if changed != 1 {
                return Err(LedgerError::Invariant(format!(
                    "item {serial} reprinted during the transaction"
                )));
            }
            let detail = serde_json::json!({
                "serial": item.serial,
                "user": user_id,
                "status": item.status,
                "reprint": reprints,
            });
            append_audit_entry(
                tx,
                now_ms,
                &user_actor(user_id),
                "reprint",
                &detail.to_string(),
            )?;
            let outcome = ReprintOutcome {
                serial: item.serial.clone(),
                status: item.status,
                item: bytes,
                reprints,
                reprints_left: limits.max_reprints - reprints,
            };
            store_outcome(tx, key, OP_REPRINT, &outcome, now_ms)?;
            Ok(Ok(outcome))
        })?
    }

    fn redeem(&self, serial: &str, actor: &str, now_ms: i64) -> Result<ItemStatus, LedgerError> {
        check_text("actor", actor, 1, MAX_AUDIT_FIELD_LEN)?;
        self.write(|tx| {
            let item = load_item(tx, serial)?.ok_or(LedgerError::UnknownItem)?;
            if item.kind == KIND_POSTAGE {
                return Err(LedgerError::NotRedeemable);
            }
            if item.status != ItemStatus::Printed {
                return Err(LedgerError::NotPending {
                    status: item.status,
                });
            }
            set_status(tx, &item, ItemStatus::Redeemed, now_ms)?;
            let detail = serde_json::json!({ "serial": item.serial, "user": item.user_id });
            append_audit_entry(tx, now_ms, actor, "redeem", &detail.to_string())?;
            Ok(ItemStatus::Redeemed)
        })
    }

    fn start_confirm_window(
        &self,
        user_id: Option<UserId>,
        deadline_ms: i64,
    ) -> Result<u64, LedgerError> {
        self.write(|tx| {
            let changed = tx.execute(
                "UPDATE items SET confirm_by_ms = ?1
                 WHERE status = 'issued' AND confirm_by_ms IS NULL
                   AND (?2 IS NULL OR user_id = ?2)",
                params![deadline_ms, user_id],
            )?;
            u64::try_from(changed).map_err(|_| LedgerError::Overflow)
        })
    }

    fn void_expired(&self, now_ms: i64) -> Result<Vec<String>, LedgerError> {
        self.write(|tx| {
            let serials = {
                let mut stmt = tx.prepare(
                    "SELECT serial FROM items
                     WHERE status = 'issued' AND confirm_by_ms IS NOT NULL AND confirm_by_ms <= ?1
                     ORDER BY confirm_by_ms, serial LIMIT ?2",
                )?;
                let limit = i64::try_from(MAX_VOID_BATCH).map_err(|_| LedgerError::Overflow)?;
                let rows = stmt.query_map(params![now_ms, limit], |r| r.get::<_, String>(0))?;
                rows.collect::<Result<Vec<String>, _>>()?
            };
            for serial in &serials {
                let item = load_item(tx, serial)?.ok_or_else(|| {
                    LedgerError::Invariant(format!("expired item {serial} vanished"))
                })?;
                void_item(tx, &item, now_ms, ACTOR_SYSTEM, "void_expired")?;
                check_user_invariants(tx, item.user_id)?;
            }
            Ok(serials)
        })
    }

    fn balance(&self, user_id: UserId) -> Result<BalanceView, LedgerError> {
        self.read(|tx| {
            let meter = require_meter(tx, user_id)?;
            let pieces: i64 = tx.query_row(
                "SELECT COUNT(*) FROM items
                 WHERE user_id = ?1 AND kind = 'postage' AND status IN ('issued', 'printed')",
                [user_id],
                |r| r.get(0),
            )?;
            Ok(BalanceView {
                balance_mills: to_u64(
                    balance_of(tx, &customer_account(user_id))?,
                    "customer balance",
                )?,
                ascending_mills: to_u64(meter.ascending_mills, "ascending register")?,
                descending_mills: to_u64(meter.descending_mills, "descending register")?,
                pieces: to_u64(pieces, "piece count")?,
                reserved_mills: to_u64(
                    balance_of(tx, &reserved_account(user_id))?,
                    "reserved balance",
                )?,
            })
        })
    }

    fn meter(&self, user_id: UserId) -> Result<Option<MeterState>, LedgerError> {
        self.read(|tx| {
            let Some(meter) = load_meter(tx, user_id)? else {
                return Ok(None);
            };
            Ok(Some(MeterState {
                user_id,
                device_id: meter.device_id,
                license_id: meter.license_id,
                ascending_mills: to_u64(meter.ascending_mills, "ascending register")?,
                descending_mills: to_u64(meter.descending_mills, "descending register")?,
                piece: meter.piece,
                seal: meter.seal,
            }))
        })
    }

    fn history(&self, user_id: UserId, limit: u32) -> Result<Vec<ItemSummary>, LedgerError> {
        self.read(|tx| {
            require_meter(tx, user_id)?;
            let mut stmt = tx.prepare(
                "SELECT serial, kind, amount_mills, status, issued_at_ms FROM items
                 WHERE user_id = ?1 ORDER BY piece DESC LIMIT ?2",
            )?;
            let limit = limit.min(MAX_HISTORY_LIMIT);
            let rows = stmt.query_map(params![user_id, limit], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, i64>(4)?,
                ))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (serial, kind, amount_mills, status, issued_at_ms) = row?;
                out.push(ItemSummary {
                    serial,
                    kind,
                    amount_mills: to_u64(amount_mills, "item amount")?,
                    status: parse_status(&status)?,
                    issued_at_ms,
                });
            }
            Ok(out)
        })
    }

    fn item_status(&self, serial: &str) -> Result<Option<ItemStatus>, LedgerError> {
        self.read(|tx| Ok(load_item(tx, serial)?.map(|item| item.status)))
    }

    fn append_audit(
        &self,
        actor: &str,
        action: &str,
        detail: &str,
        now_ms: i64,
    ) -> Result<(), LedgerError> {
        check_text("actor", actor, 1, MAX_AUDIT_FIELD_LEN)?;
        check_text("action", action, 1, MAX_AUDIT_FIELD_LEN)?;
        check_text("detail", detail, 0, MAX_AUDIT_FIELD_LEN)?;
        self.write(|tx| append_audit_entry(tx, now_ms, actor, action, detail))
    }

    fn audit(&self) -> Result<AuditReport, LedgerError> {
        self.read(|tx| audit::audit(tx))
    }
}

// ---- Names stored in the database ----

const OP_FUND: &str = "fund";
const OP_ISSUE: &str = "issue";
const OP_CONFIRM: &str = "confirm";
const OP_REFUND: &str = "refund";
const OP_REPRINT: &str = "reprint";

const KIND_FUND: &str = "fund";
const KIND_RESERVE: &str = "reserve";
const KIND_POST: &str = "post";
const KIND_VOID: &str = "void";
const KIND_REFUND: &str = "refund";
const KIND_PAYOUT: &str = "payout";

const KIND_POSTAGE: &str = "postage";

/// Audit actions that log exactly one transfer, whose id is the detail's `"transfer"` field.
const TRANSFER_ACTIONS: [&str; 7] = [
    "fund",
    "issue",
    "confirm",
    "void",
    "void_expired",
    "refund",
    "payout",
];

fn user_actor(user_id: UserId) -> String {
    format!("user:{user_id}")
}

// ---- Checked conversions ----

fn to_u64(value: i64, what: &str) -> Result<u64, LedgerError> {
    u64::try_from(value).map_err(|_| LedgerError::Corrupt(format!("{what} is negative: {value}")))
}

/// The amount as stored (`INTEGER`), refusing zero: every transfer moves something.
fn positive_mills(amount: Amount) -> Result<i64, LedgerError> {
    if amount.is_zero() {
        return Err(LedgerError::InvalidInput("amount must be positive".into()));
    }
    i64::try_from(amount.mills()).map_err(|_| LedgerError::Overflow)
}

/// `register + amount`, refusing to pass [`MAX_REGISTER_MILLS`].
fn register_add(register_mills: i64, amount_mills: i64) -> Result<i64, LedgerError> {
    let sum = register_mills
        .checked_add(amount_mills)
        .ok_or(LedgerError::Overflow)?;
    if to_u64(sum, "register")? > MAX_REGISTER_MILLS {
        return Err(LedgerError::Overflow);
    }
    Ok(sum)
}

fn hash32(bytes: &[u8], what: &str) -> Result<[u8; 32], LedgerError> {
    <[u8; 32]>::try_from(bytes)
        .map_err(|_| LedgerError::Corrupt(format!("{what} is {} bytes, not 32", bytes.len())))
}

fn parse_status(s: &str) -> Result<ItemStatus, LedgerError> {
    ItemStatus::parse(s).ok_or_else(|| LedgerError::Corrupt(format!("unknown item status {s:?}")))
}

fn check_text(what: &str, value: &str, min_len: usize, max_len: usize) -> Result<(), LedgerError> {
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

// ---- Users and meters ----

fn load_user(
    conn: &Connection,
    condition: &str,
    param: &dyn rusqlite::ToSql,
) -> Result<Option<UserRecord>, LedgerError> {
    let sql = format!(
        "SELECT u.id, u.user, u.password_hash, u.wrapped_link_key, m.device_id, m.license_id,
                u.role, u.failed_logins, u.locked_until_ms
         FROM users u JOIN meters m ON m.user_id = u.id WHERE {condition}"
    );
    let row = conn
        .query_row(&sql, [param], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, Vec<u8>>(3)?,
                r.get::<_, String>(4)?,
                r.get::<_, String>(5)?,
                r.get::<_, String>(6)?,
                r.get::<_, i64>(7)?,
                r.get::<_, Option<i64>>(8)?,
            ))
        })
        .optional()?;
    let Some((id, user, password_hash, wrapped_link_key, device_id, license_id, role, fails, lock)) =
        row
    else {
        return Ok(None);
    };
    Ok(Some(UserRecord {
        id,
        user,
        password_hash,
        wrapped_link_key,
        device_id,
        license_id,
        role: Role::parse(&role)
            .ok_or_else(|| LedgerError::Corrupt(format!("unknown role {role:?}")))?,
        failed_logins: u32::try_from(fails)
            .map_err(|_| LedgerError::Corrupt(format!("failed_logins is {fails}")))?,
        locked_until_ms: lock,
    }))
}

/// A meter row as stored (registers in `INTEGER` mills).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Meter {
    user_id: UserId,
    device_id: String,
    license_id: String,
    ascending_mills: i64,
    descending_mills: i64,
    piece: u32,
    seal: Option<Vec<u8>>,
}

fn load_meter(conn: &Connection, user_id: UserId) -> Result<Option<Meter>, LedgerError> {
    let row = conn
        .query_row(
            "SELECT device_id, license_id, ascending_mills, descending_mills, piece, seal
             FROM meters WHERE user_id = ?1",
            [user_id],
            |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, i64>(4)?,
                    r.get::<_, Option<Vec<u8>>>(5)?,
                ))
            },
        )
        .optional()?;
    let Some((device_id, license_id, ascending_mills, descending_mills, piece, seal)) = row else {
        return Ok(None);
    };
    Ok(Some(Meter {
        user_id,
        device_id,
        license_id,
        ascending_mills,
        descending_mills,
        piece: u32::try_from(piece)
            .map_err(|_| LedgerError::Corrupt(format!("piece number {piece} out of range")))?,
        seal,
    }))
}

fn reserved_account_balance(conn: &Connection, user_id: UserId) -> Result<i64, LedgerError> {
    balance_of(conn, &reserved_account(user_id))
}

fn require_meter(conn: &Connection, user_id: UserId) -> Result<Meter, LedgerError> {
    load_meter(conn, user_id)?.ok_or(LedgerError::UnknownUser)
}

/// Writes `new` over `old`, asserting the register rules: ascending and the piece number never
/// decrease, both registers stay within `0..=MAX_REGISTER_MILLS`, and the row still holds `old`.
fn store_meter(conn: &Connection, old: &Meter, new: &Meter) -> Result<(), LedgerError> {
    let user_id = old.user_id;
    if new.user_id != user_id || new.device_id != old.device_id {
        return Err(LedgerError::Invariant("meter identity changed".into()));
    }
    if new.ascending_mills < old.ascending_mills || new.piece < old.piece {
        return Err(LedgerError::Invariant(format!(
            "meter of user {user_id} would run backwards"
        )));
    }
    for register in [new.ascending_mills, new.descending_mills] {
        if to_u64(register, "register")? > MAX_REGISTER_MILLS {
            return Err(LedgerError::Overflow);
        }
    }
    let changed = conn.execute(
        "UPDATE meters SET ascending_mills = ?1, descending_mills = ?2, piece = ?3
         WHERE user_id = ?4 AND ascending_mills = ?5 AND descending_mills = ?6 AND piece = ?7",
        params![
            new.ascending_mills,
            new.descending_mills,
            new.piece,
            user_id,
            old.ascending_mills,
            old.descending_mills,
            old.piece
        ],
    )?;
    if changed != 1 {
        return Err(LedgerError::Invariant(format!(
            "meter of user {user_id} changed during the transaction"
        )));
    }
    Ok(())
}

/// The per-user invariants every operation asserts before it commits: customer and reserved
/// balances are not negative, and the descending register equals the customer balance.
fn check_user_invariants(conn: &Connection, user_id: UserId) -> Result<(), LedgerError> {
    let meter = require_meter(conn, user_id)?;
    let customer = balance_of(conn, &customer_account(user_id))?;
    let reserved = balance_of(conn, &reserved_account(user_id))?;
    if customer < 0 || reserved < 0 {
        return Err(LedgerError::Invariant(format!(
            "user {user_id} would have a negative balance ({customer} spendable, {reserved} reserved)"
        )));
    }
    if meter.descending_mills != customer {
        return Err(LedgerError::Invariant(format!(
            "descending register of user {user_id} ({}) differs from the balance ({customer})",
            meter.descending_mills
        )));
    }
    if meter.ascending_mills < 0 {
        return Err(LedgerError::Invariant(format!(
            "ascending register of user {user_id} is negative"
        )));
    }
    Ok(())
}

// ---- Accounts and transfers ----

fn balance_of(conn: &Connection, account: &str) -> Result<i64, LedgerError> {
    conn.query_row(
        "SELECT balance FROM accounts WHERE id = ?1",
        [account],
        |r| r.get(0),
    )
    .optional()?
    .ok_or_else(|| LedgerError::Invariant(format!("account {account} is missing")))
}

struct Transfer<'a> {
    at_ms: i64,
    from: &'a str,
    to: &'a str,
    amount_mills: i64,
    kind: &'static str,
    item_serial: Option<&'a str>,
    payment_id: Option<&'a str>,
}

/// Moves `amount_mills` from one account to another and records the transfer; asserts on both
/// sides that the two balances changed by exactly the amount and their sum did not change.
/// Returns the transfer id.
fn transfer(conn: &Connection, t: &Transfer<'_>) -> Result<i64, LedgerError> {
    if t.amount_mills <= 0 || t.from == t.to {
        return Err(LedgerError::Invariant(format!(
            "malformed {} transfer of {} from {} to {}",
            t.kind, t.amount_mills, t.from, t.to
        )));
    }
    let from_before = balance_of(conn, t.from)?;
    let to_before = balance_of(conn, t.to)?;
    let from_after = from_before
        .checked_sub(t.amount_mills)
        .ok_or(LedgerError::Overflow)?;
    let to_after = to_before
        .checked_add(t.amount_mills)
        .ok_or(LedgerError::Overflow)?;
    for (account, before, after) in [
        (t.from, from_before, from_after),
        (t.to, to_before, to_after),
    ] {
        let changed = conn.execute(
            "UPDATE accounts SET balance = ?1 WHERE id = ?2 AND balance = ?3",
            params![after, account, before],
        )?;
        if changed != 1 {
            return Err(LedgerError::Invariant(format!(
                "account {account} changed during the transaction"
            )));
        }
    }
    conn.execute(
        "INSERT INTO transfers (at_ms, from_account, to_account, amount_mills, kind, item_serial,
             payment_id)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![
            t.at_ms,
            t.from,
            t.to,
            t.amount_mills,
            t.kind,
            t.item_serial,
            t.payment_id
        ],
    )?;
    let id = conn.last_insert_rowid();
    // Read back: the transfer must balance.
    let from_read = balance_of(conn, t.from)?;
    let to_read = balance_of(conn, t.to)?;
    if from_read != from_after
        || to_read != to_after
        || i128::from(from_read) + i128::from(to_read)
            != i128::from(from_before) + i128::from(to_before)
    {
        return Err(LedgerError::Invariant(format!(
            "transfer {id} does not balance"
        )));
    }
    Ok(id)
}

// ---- Items ----

#[derive(Clone, Debug)]
struct Item {
    serial: String,
    user_id: UserId,
    kind: String,
    amount_mills: i64,
    status: ItemStatus,
    issued_at_ms: i64,
    confirm_by_ms: Option<i64>,
}

fn load_item(conn: &Connection, serial: &str) -> Result<Option<Item>, LedgerError> {
    if serial.is_empty() || serial.len() > MAX_SERIAL_LEN {
        return Ok(None);
    }
    let row = conn
        .query_row(
            "SELECT user_id, kind, amount_mills, status, issued_at_ms, confirm_by_ms
             FROM items WHERE serial = ?1",
            [serial],
            |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, i64>(4)?,
                    r.get::<_, Option<i64>>(5)?,
                ))
            },
        )
        .optional()?;
    let Some((user_id, kind, amount_mills, status, issued_at_ms, confirm_by_ms)) = row else {
        return Ok(None);
    };
    Ok(Some(Item {
        serial: serial.to_owned(),
        user_id,
        kind,
        amount_mills,
        status: parse_status(&status)?,
        issued_at_ms,
        confirm_by_ms,
    }))
}

/// Moves an item from its current status to `to`, asserting nobody moved it meanwhile.
fn set_status(
    conn: &Connection,
    item: &Item,
    to: ItemStatus,
    now_ms: i64,
) -> Result<(), LedgerError> {
    let changed = conn.execute(
        "UPDATE items SET status = ?1, settled_at_ms = ?2 WHERE serial = ?3 AND status = ?4",
        params![to.as_str(), now_ms, item.serial, item.status.as_str()],
    )?;
    if changed != 1 {
        return Err(LedgerError::Invariant(format!(
            "item {} changed during the transaction",
            item.serial
        )));
    }
    Ok(())
}

/// Issued → printed: reserved:U → postage_sold.
fn post_item(conn: &Connection, item: &Item, now_ms: i64) -> Result<(), LedgerError> {
    let transfer_id = transfer(
        conn,
        &Transfer {
            at_ms: now_ms,
            from: &reserved_account(item.user_id),
            to: ACCOUNT_POSTAGE_SOLD,
            amount_mills: item.amount_mills,
            kind: KIND_POST,
            item_serial: Some(&item.serial),
            payment_id: None,
        },
    )?;
    set_status(conn, item, ItemStatus::Printed, now_ms)?;
    let detail = serde_json::json!({
        "serial": item.serial,
        "printed": true,
        "amount_mills": item.amount_mills,
        "transfer": transfer_id,
    });
    append_audit_entry(
        conn,
        now_ms,
        &user_actor(item.user_id),
        "confirm",
        &detail.to_string(),
    )
}

/// Issued → voided: reserved:U → customer:U and the descending register credited again.
fn void_item(
    conn: &Connection,
    item: &Item,
    now_ms: i64,
    actor: &str,
    action: &str,
) -> Result<(), LedgerError> {
    let meter = require_meter(conn, item.user_id)?;
    let new_meter = Meter {
        descending_mills: register_add(meter.descending_mills, item.amount_mills)?,
        ..meter.clone()
    };
    let transfer_id = transfer(
        conn,
        &Transfer {
            at_ms: now_ms,
            from: &reserved_account(item.user_id),
            to: &customer_account(item.user_id),
            amount_mills: item.amount_mills,
            kind: KIND_VOID,
            item_serial: Some(&item.serial),
            payment_id: None,
        },
    )?;
    store_meter(conn, &meter, &new_meter)?;
    set_status(conn, item, ItemStatus::Voided, now_ms)?;
    let detail = serde_json::json!({
        "serial": item.serial,
        "user": item.user_id,
        "amount_mills": item.amount_mills,
        "transfer": transfer_id,
    });
    append_audit_entry(conn, now_ms, actor, action, &detail.to_string())
}

// ---- Idempotency ----

/// The stored outcome of a repeat of this request, `None` for a new request id, `IdReused` when
/// the id was used for a different request (another fingerprint or another op).
fn find_outcome(
    conn: &Connection,
    key: &RequestKey<'_>,
    op: &str,
) -> Result<Option<String>, LedgerError> {
    check_text("request id", key.request_id, 1, MAX_REQUEST_ID_LEN)?;
    let row: Option<(Vec<u8>, String, String)> = conn
        .query_row(
            "SELECT fingerprint, op, outcome_json FROM requests
             WHERE user_id = ?1 AND request_id = ?2",
            params![key.user_id, key.request_id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()?;
    match row {
        None => Ok(None),
        Some((fingerprint, stored_op, json))
            if fingerprint.as_slice() == key.fingerprint.as_slice() && stored_op == op =>
        {
            Ok(Some(json))
        }
        Some(_) => Err(LedgerError::IdReused),
    }
}

fn replay<T: DeserializeOwned>(json: &str) -> Result<T, LedgerError> {
    serde_json::from_str(json)
        .map_err(|e| LedgerError::Corrupt(format!("stored outcome unreadable: {e}")))
}

fn store_outcome<T: Serialize>(
    conn: &Connection,
    key: &RequestKey<'_>,
    op: &str,
    outcome: &T,
    now_ms: i64,
) -> Result<(), LedgerError> {
    let json = serde_json::to_string(outcome)
        .map_err(|e| LedgerError::Invariant(format!("outcome not serialisable: {e}")))?;
    conn.execute(
        "INSERT INTO requests (user_id, request_id, fingerprint, op, outcome_json, at_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![
            key.user_id,
            key.request_id,
            key.fingerprint.as_slice(),
            op,
            json,
            now_ms
        ],
    )?;
    Ok(())
}

// ---- Audit log ----

fn append_audit_entry(
    conn: &Connection,
    at_ms: i64,
    actor: &str,
    action: &str,
    detail: &str,
) -> Result<(), LedgerError> {
    let last: Option<(i64, Vec<u8>)> = conn
        .query_row(
            "SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    let (seq, prev_hash) = match last {
        None => (1, chain::GENESIS_HASH),
        Some((seq, hash)) => (
            seq.checked_add(1).ok_or(LedgerError::Overflow)?,
            hash32(&hash, "audit hash")?,
        ),
    };
    let hash = chain::entry_hash(&prev_hash, seq, at_ms, actor, action, detail);
    conn.execute(
        "INSERT INTO audit_log (seq, at_ms, actor, action, detail, prev_hash, hash)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![
            seq,
            at_ms,
            actor,
            action,
            detail,
            prev_hash.as_slice(),
            hash.as_slice()
        ],
    )?;
    Ok(())
}
