//! One `Store` for every database. A backend says only how to run a transaction ([`Backend`]:
//! a read, a write answered to a blocked thread, a write answered through a [`Queued`], and how
//! its database reports a taken user name); which rule each `Store` method runs is written once,
//! here, and the rules themselves live in `logic` and `audit`.

use crate::logic::{
    Ctx, accounts, audit_log, closure, confirm_window, payments, postage, reports, requests,
    standing, value_items, values,
};
use crate::sql::Tx;
use crate::*;
use stampline_money::Amount;

/// How a database runs the ledger's transactions.
///
/// Transactions are `'static` closures that own what they use, so that a backend may run them on
/// another thread (SQLite's writer runs every write on its own thread, back to back).
pub(crate) trait Backend: Send + Sync + std::fmt::Debug {
    fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut dyn Tx, Ctx<'_>) -> Result<T, LedgerError> + Send + 'static,
    ) -> Result<T, LedgerError>;

    fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut dyn Tx, Ctx<'_>) -> Result<T, LedgerError> + Send + 'static,
    ) -> Result<T, LedgerError> {
        self.write_with(Undo::Savepoint, f)
    }

    /// A write transaction, answered to this (blocked) thread; `undo` says how a backend that
    /// runs many operations in one transaction keeps a failing one from touching the others.
    fn write_with<T: Send + 'static>(
        &self,
        undo: Undo,
        f: impl FnOnce(&mut dyn Tx, Ctx<'_>) -> Result<T, LedgerError> + Send + 'static,
    ) -> Result<T, LedgerError>;

    /// A write transaction handed over and answered through a [`Queued`]: the one mechanism for
    /// operations that async callers await. `f`'s outer error takes its writes back; its
    /// [`Answer`] is what the caller gets once the writes are committed.
    fn write_queued<T: Send + 'static>(
        &self,
        undo: Undo,
        f: impl FnOnce(&mut dyn Tx, Ctx<'_>) -> Result<Answer<T>, LedgerError> + Send + 'static,
    ) -> Queued<T>;

    /// Turn this database's report of a user name taken by a concurrent registration into
    /// [`LedgerError::UserExists`].
    fn map_create_user_error(&self, e: LedgerError) -> LedgerError {
        e
    }
}

/// The answer of a write whose writes are kept: usually `Ok`, but a refusal may commit too (a
/// late print confirmation voids the item, then answers `NotPending`).
pub(crate) type Answer<T> = Result<T, LedgerError>;

/// How a backend that runs many operations in one transaction (SQLite's group commit) keeps one
/// that fails from undoing or keeping the others' work. A backend that gives every operation its
/// own transaction (PostgreSQL) ignores it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Undo {
    /// A savepoint around the operation: a failure takes back its writes and only its writes.
    Savepoint,
    /// No savepoint: every refusal of the operation (a repeat, too little money, a wrong state…)
    /// comes before its first write, so a refusal leaves nothing to take back. A failure after a
    /// write is a fault (a broken invariant, the database failing): the whole group is rolled
    /// back and every operation of it fails, as when its commit fails. Measured: the savepoint's
    /// copies of the pages an operation touches were 18 % of the writer's instructions.
    RefusesFirst,
}

/// A [`RequestKey`] that owns its request id (for transactions that run on another thread).
struct OwnedKey {
    user_id: UserId,
    request_id: String,
    fingerprint: [u8; 32],
}

impl OwnedKey {
    fn of(key: &RequestKey<'_>) -> OwnedKey {
        OwnedKey {
            user_id: key.user_id,
            request_id: key.request_id.to_owned(),
            fingerprint: key.fingerprint,
        }
    }

    fn key(&self) -> RequestKey<'_> {
        RequestKey {
            user_id: self.user_id,
            request_id: &self.request_id,
            fingerprint: self.fingerprint,
        }
    }
}

impl<B: Backend> Store for B {
    // ---- Users and logins ----

    fn create_user(&self, u: &NewUser, now_ms: i64) -> Result<UserId, LedgerError> {
        accounts::validate_new_user(u)?;
        let u = u.clone();
        self.write(move |tx, ctx| accounts::create_user(tx, ctx, &u, now_ms))
            .map_err(|e| self.map_create_user_error(e))
    }

    fn user_by_key(&self, user_key: &str) -> Result<Option<UserRecord>, LedgerError> {
        let user_key = user_key.to_owned();
        self.read(move |tx, _| accounts::user_by_key(tx, &user_key))
    }

    fn user_by_id(&self, id: UserId) -> Result<Option<UserRecord>, LedgerError> {
        self.read(move |tx, _| accounts::user_by_id(tx, id))
    }

    fn login_throttle(
        &self,
        user_key: &str,
        source: &str,
        now_ms: i64,
    ) -> Result<Option<i64>, LedgerError> {
        let (user_key, source) = (user_key.to_owned(), source.to_owned());
        self.read(move |tx, _| accounts::login_throttle(tx, &user_key, &source, now_ms))
    }

    fn record_login_failure(
        &self,
        failure: &LoginFailure,
        policy: ThrottlePolicy,
        now_ms: i64,
    ) -> Result<Option<i64>, LedgerError> {
        values::check_text("user_key", &failure.user_key, 1, crate::MAX_TEXT_LEN)?;
        values::check_text("source", &failure.source, 1, crate::MAX_TEXT_LEN)?;
        values::check_text("detail", &failure.detail, 0, crate::MAX_AUDIT_FIELD_LEN)?;
        let failure = failure.clone();
        self.write(move |tx, _| accounts::record_login_failure(tx, &failure, policy, now_ms))
    }

    fn license_meter(
        &self,
        user_id: UserId,
        license_id: &str,
        device_id: &str,
        now_ms: i64,
    ) -> Result<(), LedgerError> {
        values::check_text("license_id", license_id, 1, crate::MAX_TEXT_LEN)?;
        values::check_text("device_id", device_id, 1, crate::MAX_TEXT_LEN)?;
        let (license_id, device_id) = (license_id.to_owned(), device_id.to_owned());
        self.write(move |tx, ctx| {
            accounts::license_meter(tx, ctx, user_id, &license_id, &device_id, now_ms)
        })
    }

    fn expire_unlicensed_users(
        &self,
        created_before_ms: i64,
        now_ms: i64,
    ) -> Result<Vec<String>, LedgerError> {
        self.write(move |tx, _| accounts::expire_unlicensed_users(tx, created_before_ms, now_ms))
    }

    fn record_login_success(
        &self,
        id: UserId,
        source: &str,
        now_ms: i64,
        detail: &str,
    ) -> Result<(), LedgerError> {
        values::check_text("detail", detail, 0, crate::MAX_AUDIT_FIELD_LEN)?;
        let (source, detail) = (source.to_owned(), detail.to_owned());
        self.write(move |tx, _| accounts::record_login_success(tx, id, &source, now_ms, &detail))
    }

    fn login_throttles(&self, now_ms: i64) -> Result<Vec<LoginThrottle>, LedgerError> {
        self.read(move |tx, _| accounts::login_throttles(tx, now_ms))
    }

    fn clear_login_throttles(
        &self,
        user_key: &str,
        actor: &str,
        now_ms: i64,
    ) -> Result<u64, LedgerError> {
        values::check_text("actor", actor, 1, crate::MAX_AUDIT_FIELD_LEN)?;
        let (user_key, actor) = (user_key.to_owned(), actor.to_owned());
        self.write(move |tx, _| accounts::clear_login_throttles(tx, &user_key, &actor, now_ms))
    }

    fn set_user_locked(
        &self,
        user_key: &str,
        locked: bool,
        actor: &str,
        now_ms: i64,
    ) -> Result<bool, LedgerError> {
        values::check_text("actor", actor, 1, crate::MAX_AUDIT_FIELD_LEN)?;
        let (user_key, actor) = (user_key.to_owned(), actor.to_owned());
        self.write(move |tx, _| accounts::set_user_locked(tx, &user_key, locked, &actor, now_ms))
    }

    // ---- Postage ----

    fn issue(
        &self,
        key: &RequestKey,
        input: &IssueInput,
        mut sign: Signer,
        now_ms: i64,
    ) -> Queued<IssueOutcome> {
        let (key, input) = (OwnedKey::of(key), input.clone());
        self.write_queued(Undo::RefusesFirst, move |tx, ctx| {
            if VALUE_KINDS.contains(&input.kind) {
                value_items::issue(tx, ctx, &key.key(), &input, &mut *sign, now_ms).map(Ok)
            } else {
                postage::issue(tx, ctx, &key.key(), &input, &mut *sign, now_ms).map(Ok)
            }
        })
    }

    fn confirm(
        &self,
        key: &RequestKey,
        serial: &str,
        printed: bool,
        now_ms: i64,
    ) -> Queued<StatusOutcome> {
        let (key, serial) = (OwnedKey::of(key), serial.to_owned());
        self.write_queued(Undo::RefusesFirst, move |tx, ctx| {
            postage::confirm(tx, ctx, &key.key(), &serial, printed, now_ms)
        })
    }

    fn refund(
        &self,
        key: &RequestKey,
        serial: &str,
        refund_window_ms: i64,
        now_ms: i64,
    ) -> Result<StatusOutcome, LedgerError> {
        let (key, serial) = (OwnedKey::of(key), serial.to_owned());
        self.write(move |tx, ctx| {
            postage::refund(tx, ctx, &key.key(), &serial, refund_window_ms, now_ms)
        })
    }

    fn reprint(
        &self,
        key: &RequestKey,
        serial: &str,
        limits: ReprintLimits,
        now_ms: i64,
    ) -> Result<ReprintOutcome, LedgerError> {
        let (key, serial) = (OwnedKey::of(key), serial.to_owned());
        self.write(move |tx, ctx| postage::reprint(tx, ctx, &key.key(), &serial, limits, now_ms))?
    }

    fn redeem(
        &self,
        key: &RequestKey,
        serial: &str,
        amount: Option<Amount>,
        now_ms: i64,
    ) -> Result<RedeemOutcome, LedgerError> {
        let (key, serial) = (OwnedKey::of(key), serial.to_owned());
        self.write(move |tx, ctx| value_items::redeem(tx, ctx, &key.key(), &serial, amount, now_ms))
    }

    fn add_redeemer(
        &self,
        issuer: UserId,
        redeemer: UserId,
        now_ms: i64,
    ) -> Result<(), LedgerError> {
        self.write(move |tx, _| value_items::add_redeemer(tx, issuer, redeemer, now_ms))
    }

    fn remove_redeemer(
        &self,
        issuer: UserId,
        redeemer: UserId,
        now_ms: i64,
    ) -> Result<bool, LedgerError> {
        self.write(move |tx, _| value_items::remove_redeemer(tx, issuer, redeemer, now_ms))
    }

    fn redeemers(&self, issuer: UserId) -> Result<Vec<(UserId, String)>, LedgerError> {
        self.read(move |tx, _| value_items::redeemers(tx, issuer))
    }

    fn value_registers(&self, user_id: UserId) -> Result<Vec<ValueRegister>, LedgerError> {
        self.read(move |tx, _| value_items::value_registers(tx, user_id))
    }

    fn start_confirm_window(
        &self,
        user_id: Option<UserId>,
        deadline_ms: i64,
    ) -> Result<u64, LedgerError> {
        self.write(move |tx, _| confirm_window::start_confirm_window(tx, user_id, deadline_ms))
    }

    fn void_expired(&self, now_ms: i64) -> Result<Vec<String>, LedgerError> {
        self.write(move |tx, ctx| confirm_window::void_expired(tx, ctx, now_ms))
    }

    // ---- Payments ----

    fn find_request(
        &self,
        user_id: UserId,
        request_id: &str,
    ) -> Result<Option<([u8; 32], String, String)>, LedgerError> {
        let request_id = request_id.to_owned();
        self.read(move |tx, _| requests::find_request(tx, user_id, &request_id))
    }

    fn fund(
        &self,
        key: &RequestKey,
        input: &FundInput,
        now_ms: i64,
    ) -> Result<FundOutcome, LedgerError> {
        let key = OwnedKey::of(key);
        let (payment_id, method) = (input.payment_id.to_owned(), input.method.to_owned());
        let (token, last4) = (
            input.token.map(str::to_owned),
            input.last4.map(str::to_owned),
        );
        let amount = input.amount;
        self.write(move |tx, ctx| {
            let input = FundInput {
                amount,
                payment_id: &payment_id,
                method: &method,
                token: token.as_deref(),
                last4: last4.as_deref(),
            };
            payments::fund(tx, ctx, &key.key(), &input, now_ms)
        })
    }

    fn payments(&self) -> Result<Vec<PaymentRow>, LedgerError> {
        self.read(|tx, _| payments::list(tx))
    }

    fn record_payment_return(
        &self,
        payment_id: &str,
        now_ms: i64,
    ) -> Result<Option<UserId>, LedgerError> {
        let payment_id = payment_id.to_owned();
        self.write(move |tx, _| payments::record_return(tx, &payment_id, now_ms))
    }

    fn open_returns(&self, user_id: UserId) -> Result<Vec<PaymentRow>, LedgerError> {
        self.read(move |tx, _| payments::open_returns(tx, user_id))
    }

    fn pay_return(
        &self,
        key: &RequestKey,
        returned_payment_id: &str,
        paid_by: &str,
        now_ms: i64,
    ) -> Result<FundOutcome, LedgerError> {
        let (key, returned, paid_by) = (
            OwnedKey::of(key),
            returned_payment_id.to_owned(),
            paid_by.to_owned(),
        );
        self.write(move |tx, ctx| {
            payments::pay_return(tx, ctx, &key.key(), &returned, &paid_by, now_ms)
        })
    }

    fn refuse_if_locked(&self, user_id: UserId) -> Result<(), LedgerError> {
        self.read(move |tx, _| standing::refuse_if_locked(tx, user_id))
    }

    fn set_auto_refill(
        &self,
        key: &RequestKey,
        auth: Option<&AutoRefill>,
        now_ms: i64,
    ) -> Result<(), LedgerError> {
        let (key, auth) = (OwnedKey::of(key), auth.cloned());
        self.write(move |tx, ctx| {
            payments::set_auto_refill(tx, ctx, &key.key(), auth.as_ref(), now_ms)
        })
    }

    fn auto_refill(&self, user_id: UserId) -> Result<Option<AutoRefill>, LedgerError> {
        self.read(move |tx, _| payments::auto_refill(tx, user_id))
    }

    fn count_auto_refill(
        &self,
        user_id: UserId,
        refill: u64,
        amount_mills: u64,
    ) -> Result<bool, LedgerError> {
        self.write(move |tx, _| payments::count_auto_refill(tx, user_id, refill, amount_mills))
    }

    // ---- Closure ----

    fn begin_close(&self, key: &RequestKey, now_ms: i64) -> Result<CloseStart, LedgerError> {
        let key = OwnedKey::of(key);
        self.write(move |tx, ctx| closure::begin_close(tx, ctx, &key.key(), now_ms))
    }

    fn close_plan(&self, user_id: UserId) -> Result<Option<Vec<(String, u64)>>, LedgerError> {
        self.read(move |tx, _| closure::close_plan(tx, user_id))
    }

    fn fix_close_plan(
        &self,
        user_id: UserId,
        plan: &[(String, u64)],
        now_ms: i64,
    ) -> Result<Vec<(String, u64)>, LedgerError> {
        let plan = plan.to_vec();
        self.write(move |tx, ctx| closure::fix_close_plan(tx, ctx, user_id, &plan, now_ms))
    }

    fn close_account(
        &self,
        key: &RequestKey,
        payouts: &[Payout],
        now_ms: i64,
    ) -> Result<CloseOutcome, LedgerError> {
        let (key, payouts) = (OwnedKey::of(key), payouts.to_vec());
        self.write(move |tx, ctx| closure::close_account(tx, ctx, &key.key(), &payouts, now_ms))
    }

    fn closed_at(&self, user_id: UserId) -> Result<Option<i64>, LedgerError> {
        self.read(move |tx, _| standing::closed_at(tx, user_id))
    }

    // ---- Reports ----

    fn balance(&self, user_id: UserId) -> Result<BalanceView, LedgerError> {
        self.read(move |tx, ctx| reports::balance(tx, ctx, user_id))
    }

    fn meter(&self, user_id: UserId) -> Result<Option<MeterState>, LedgerError> {
        self.read(move |tx, _| reports::meter(tx, user_id))
    }

    fn meters(&self) -> Result<Vec<MeterState>, LedgerError> {
        self.read(|tx, _| reports::meters(tx))
    }

    fn history_page(
        &self,
        user_id: UserId,
        before: Option<&str>,
        limit: u32,
    ) -> Result<Vec<ItemSummary>, LedgerError> {
        let before = before.map(str::to_owned);
        self.read(move |tx, _| reports::history(tx, user_id, before.as_deref(), limit))
    }

    fn item_status(&self, serial: &str) -> Result<Option<ItemStatus>, LedgerError> {
        let serial = serial.to_owned();
        self.read(move |tx, _| reports::item_status(tx, &serial))
    }

    fn items_of_kind(
        &self,
        user_id: UserId,
        kind: &str,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<ItemRecord>, LedgerError> {
        let kind = kind.to_owned();
        self.read(move |tx, _| reports::items_of_kind(tx, user_id, &kind, from_ms, to_ms))
    }

    fn item_state(&self, serial: &str) -> Result<Option<ItemState>, LedgerError> {
        let serial = serial.to_owned();
        self.read(move |tx, _| reports::item_state(tx, &serial))
    }

    fn item_amount(&self, user_id: UserId, serial: &str) -> Result<Option<u64>, LedgerError> {
        let serial = serial.to_owned();
        self.read(move |tx, _| reports::item_amount(tx, user_id, &serial))
    }

    // ---- The audit log ----

    fn append_audit(
        &self,
        actor: &str,
        action: &str,
        detail: &str,
        now_ms: i64,
    ) -> Result<(), LedgerError> {
        audit_log::validate_audit_fields(actor, action, detail)?;
        let (actor, action, detail) = (actor.to_owned(), action.to_owned(), detail.to_owned());
        self.write(move |tx, _| audit_log::append_audit_entry(tx, now_ms, &actor, &action, &detail))
    }

    fn audit(&self) -> Result<AuditReport, LedgerError> {
        self.read(crate::audit::audit)
    }

    fn check_audit_chains(&self) -> Result<Vec<String>, LedgerError> {
        self.read(crate::audit::audit_chains)
    }

    fn audit_heads(&self) -> Result<Vec<(i64, i64, [u8; 32])>, LedgerError> {
        self.read(|tx, _| audit_log::audit_heads(tx))
    }

    fn audit_entry_hash(&self, chain: i64, seq: i64) -> Result<Option<[u8; 32]>, LedgerError> {
        self.read(move |tx, _| audit_log::audit_entry_hash(tx, chain, seq))
    }
}
