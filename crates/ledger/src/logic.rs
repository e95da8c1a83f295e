//! The ledger's rules, written once against [`Tx`](crate::sql::Tx) and run by every backend. Each
//! `pub(crate) fn` named after a [`Store`](crate::Store) method is that method's body inside one
//! transaction the backend opened; the backend commits when it returns `Ok`.
//!
//! The rules by capability (each module imports only modules listed before it, never one that
//! imports it back):
//! - the parts every operation shares: [`values`] (checked conversions, text limits),
//!   [`audit_log`] (appending to the hash-chained log), [`transfers`] (double-entry moves),
//!   [`meter`] (registers, seals, per-user invariants), [`items`] (item rows and statuses),
//!   [`requests`] (idempotency), [`standing`] (closed or locked accounts), [`issuing`] (what
//!   every issue shares: its preamble, signing, the stored outcome);
//! - the operations: [`accounts`] (users, logins), [`payments`] (funding, ACH returns,
//!   auto-refill), [`value_items`] (tickets, checks, coupons, certificates: issue, their
//!   registers, posting or giving back their funds, redemption, redeemers), [`postage`] (issue,
//!   print confirmation, void, refund, reprint; value items' confirmations go through it too),
//!   [`confirm_window`] (deadlines and expiry voids), [`closure`] (closing an account with
//!   payouts), [`reports`] (balance, meters, history, item status).
//!
//! Concurrency: on PostgreSQL several servers run these functions at once under READ COMMITTED.
//! Every operation on a user's money first locks that user's meter row (`meter::lock_meter`), so
//! the operations of one user run one at a time and each sees the previous one's committed rows;
//! shared account rows (`bank_clearing`, `postage_sold`) are locked, in id order, by
//! `transfers::transfer`, and the audit chain's head by `Tx::lock_audit_chain`. Under SQLite's
//! `BEGIN IMMEDIATE` all of this holds trivially (one writer). Every update is also conditional
//! on the value read, so a missed lock shows up as an `Invariant` error and a rollback, never as
//! a lost update. Amounts are integer mills; all arithmetic is done in Rust with checked
//! operations and the absolute results are written back.

pub(crate) mod values;

pub(crate) mod audit_log;
pub(crate) mod items;
pub(crate) mod meter;
pub(crate) mod requests;
pub(crate) mod standing;
pub(crate) mod transfers;

pub(crate) mod issuing;
pub(crate) mod value_items;

pub(crate) mod accounts;
pub(crate) mod closure;
pub(crate) mod confirm_window;
pub(crate) mod payments;
pub(crate) mod postage;
pub(crate) mod reports;

use crate::MeterSealer;

/// What every operation may need besides the transaction: the register sealer, when the store
/// has one.
#[derive(Clone, Copy)]
pub(crate) struct Ctx<'a> {
    pub(crate) sealer: Option<&'a dyn MeterSealer>,
}
