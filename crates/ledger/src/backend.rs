//! One `Store` for every database. A backend says only how to run a transaction ([`Backend`]:
//! a read, a write, and how its database reports a taken user name); which rule each `Store`
//! method runs is written once, here, and the rules themselves live in `logic` and `audit`.

use crate::logic::{self, Ctx, payments};
use crate::sql::Tx;
use crate::*;

/// How a database runs the ledger's transactions.
pub(crate) trait Backend: Send + Sync + std::fmt::Debug {
    fn read<T>(
        &self,
        f: impl FnOnce(&mut dyn Tx, Ctx<'_>) -> Result<T, LedgerError>,
    ) -> Result<T, LedgerError>;

    fn write<T>(
        &self,
        f: impl FnOnce(&mut dyn Tx, Ctx<'_>) -> Result<T, LedgerError>,
    ) -> Result<T, LedgerError>;

    /// Turn this database's report of a user name taken by a concurrent registration into
    /// [`LedgerError::UserExists`].
    fn map_create_user_error(&self, e: LedgerError) -> LedgerError {
        e
    }
}

impl<B: Backend> Store for B {
    fn payments(&self) -> Result<Vec<PaymentRow>, LedgerError> {
        self.read(|tx, _| payments::list(tx))
    }

    fn record_payment_return(
        &self,
        payment_id: &str,
        now_ms: i64,
    ) -> Result<Option<UserId>, LedgerError> {
        self.write(|tx, _| payments::record_return(tx, payment_id, now_ms))
    }

    fn open_returns(&self, user_id: UserId) -> Result<Vec<PaymentRow>, LedgerError> {
        self.read(|tx, _| payments::open_returns(tx, user_id))
    }

    fn pay_return(
        &self,
        key: &RequestKey,
        returned_payment_id: &str,
        paid_by: &str,
        now_ms: i64,
    ) -> Result<FundOutcome, LedgerError> {
        self.write(|tx, ctx| {
            payments::pay_return(tx, ctx, key, returned_payment_id, paid_by, now_ms)
        })
    }

    fn meters(&self) -> Result<Vec<MeterState>, LedgerError> {
        self.read(|tx, _| payments::meters(tx))
    }

    fn set_auto_refill(
        &self,
        key: &RequestKey,
        auth: Option<&AutoRefill>,
        now_ms: i64,
    ) -> Result<(), LedgerError> {
        self.write(|tx, ctx| payments::set_auto_refill(tx, ctx, key, auth, now_ms))
    }

    fn auto_refill(&self, user_id: UserId) -> Result<Option<AutoRefill>, LedgerError> {
        self.read(|tx, _| payments::auto_refill(tx, user_id))
    }

    fn count_auto_refill(
        &self,
        user_id: UserId,
        refill: u64,
        amount_mills: u64,
    ) -> Result<bool, LedgerError> {
        self.write(|tx, _| payments::count_auto_refill(tx, user_id, refill, amount_mills))
    }

    fn close_account(
        &self,
        key: &RequestKey,
        payouts: &[Payout],
        now_ms: i64,
    ) -> Result<CloseOutcome, LedgerError> {
        self.write(|tx, ctx| payments::close_account(tx, ctx, key, payouts, now_ms))
    }

    fn closed_at(&self, user_id: UserId) -> Result<Option<i64>, LedgerError> {
        self.read(|tx, _| payments::closed_at(tx, user_id))
    }

    fn item_amount(&self, user_id: UserId, serial: &str) -> Result<Option<u64>, LedgerError> {
        self.read(|tx, _| payments::item_amount(tx, user_id, serial))
    }

    fn create_user(&self, u: &NewUser, now_ms: i64) -> Result<UserId, LedgerError> {
        logic::validate_new_user(u)?;
        self.write(|tx, ctx| logic::create_user(tx, ctx, u, now_ms))
            .map_err(|e| self.map_create_user_error(e))
    }

    fn user_by_key(&self, user_key: &str) -> Result<Option<UserRecord>, LedgerError> {
        self.read(|tx, _| logic::user_by_key(tx, user_key))
    }

    fn user_by_id(&self, id: UserId) -> Result<Option<UserRecord>, LedgerError> {
        self.read(|tx, _| logic::user_by_id(tx, id))
    }

    fn record_login_failure(
        &self,
        id: UserId,
        now_ms: i64,
        max_failures: u32,
        lockout_ms: i64,
    ) -> Result<Option<i64>, LedgerError> {
        self.write(|tx, _| logic::record_login_failure(tx, id, now_ms, max_failures, lockout_ms))
    }

    fn record_login_success(
        &self,
        id: UserId,
        now_ms: i64,
        detail: &str,
    ) -> Result<(), LedgerError> {
        logic::check_text("detail", detail, 0, crate::MAX_AUDIT_FIELD_LEN)?;
        self.write(|tx, _| logic::record_login_success(tx, id, now_ms, detail))
    }

    fn find_request(
        &self,
        user_id: UserId,
        request_id: &str,
    ) -> Result<Option<([u8; 32], String, String)>, LedgerError> {
        self.read(|tx, _| logic::find_request(tx, user_id, request_id))
    }

    fn fund(
        &self,
        key: &RequestKey,
        input: &FundInput,
        now_ms: i64,
    ) -> Result<FundOutcome, LedgerError> {
        self.write(|tx, ctx| logic::fund(tx, ctx, key, input, now_ms))
    }

    fn issue(
        &self,
        key: &RequestKey,
        input: &IssueInput,
        sign: &mut dyn FnMut(&PieceState) -> Result<SignedItem, String>,
        now_ms: i64,
    ) -> Result<IssueOutcome, LedgerError> {
        self.write(|tx, ctx| logic::issue(tx, ctx, key, input, sign, now_ms))
    }

    fn confirm(
        &self,
        key: &RequestKey,
        serial: &str,
        printed: bool,
        now_ms: i64,
    ) -> Result<StatusOutcome, LedgerError> {
        self.write(|tx, ctx| logic::confirm(tx, ctx, key, serial, printed, now_ms))?
    }

    fn refund(
        &self,
        key: &RequestKey,
        serial: &str,
        refund_window_ms: i64,
        now_ms: i64,
    ) -> Result<StatusOutcome, LedgerError> {
        self.write(|tx, ctx| logic::refund(tx, ctx, key, serial, refund_window_ms, now_ms))
    }

    fn reprint(
        &self,
        key: &RequestKey,
        serial: &str,
        limits: ReprintLimits,
        now_ms: i64,
    ) -> Result<ReprintOutcome, LedgerError> {
        self.write(|tx, ctx| logic::reprint(tx, ctx, key, serial, limits, now_ms))?
    }

    fn redeem(&self, serial: &str, actor: &str, now_ms: i64) -> Result<ItemStatus, LedgerError> {
        logic::check_text("actor", actor, 1, crate::MAX_AUDIT_FIELD_LEN)?;
        self.write(|tx, _| logic::redeem(tx, serial, actor, now_ms))
    }

    fn start_confirm_window(
        &self,
        user_id: Option<UserId>,
        deadline_ms: i64,
    ) -> Result<u64, LedgerError> {
        self.write(|tx, _| logic::start_confirm_window(tx, user_id, deadline_ms))
    }

    fn void_expired(&self, now_ms: i64) -> Result<Vec<String>, LedgerError> {
        self.write(|tx, ctx| logic::void_expired(tx, ctx, now_ms))
    }

    fn balance(&self, user_id: UserId) -> Result<BalanceView, LedgerError> {
        self.read(|tx, ctx| logic::balance(tx, ctx, user_id))
    }

    fn meter(&self, user_id: UserId) -> Result<Option<MeterState>, LedgerError> {
        self.read(|tx, _| logic::meter(tx, user_id))
    }

    fn history(&self, user_id: UserId, limit: u32) -> Result<Vec<ItemSummary>, LedgerError> {
        self.read(|tx, _| logic::history(tx, user_id, limit))
    }

    fn item_status(&self, serial: &str) -> Result<Option<ItemStatus>, LedgerError> {
        self.read(|tx, _| logic::item_status(tx, serial))
    }

    fn append_audit(
        &self,
        actor: &str,
        action: &str,
        detail: &str,
        now_ms: i64,
    ) -> Result<(), LedgerError> {
        logic::validate_audit_fields(actor, action, detail)?;
        self.write(|tx, _| logic::append_audit_entry(tx, now_ms, actor, action, detail))
    }

    fn audit(&self) -> Result<AuditReport, LedgerError> {
        self.read(crate::audit::audit)
    }
}
