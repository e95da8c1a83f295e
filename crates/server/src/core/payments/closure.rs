//! Closing an account: every spend stops, the balance goes back to the payments it came from
//! (newest first), and the device is withdrawn at CMLS.

use std::sync::Arc;

use stampline_ledger::{CloseOutcome, CloseStart, PaymentRow, Payout, UserId};
use stampline_sandbox::{BankError, PaymentStatus};
use stampline_wire::codes;
use stampline_wire::replies::{CloseRefund, CloseReply};

use super::locked_message;
use crate::core::{Caller, Core, CoreError, blocking};
use crate::error::{bank_error, dollars};

impl Core {
    /// Which payments pay `balance_mills` back (newest first, only money the bank holds), or
    /// `refund_unavailable` naming what the bank has not settled yet.
    fn payout_plan(
        &self,
        user_id: UserId,
        balance_mills: u64,
    ) -> Result<Vec<(String, u64)>, CoreError> {
        let mut remaining = balance_mills;
        let mut plan = Vec::new();
        let mut payments: Vec<PaymentRow> = self
            .store
            .payments()?
            .into_iter()
            .filter(|p| p.user_id == user_id && p.returned_at_ms.is_none())
            .collect();
        payments.reverse();
        for p in payments {
            if remaining == 0 {
                break;
            }
            // Only money the bank holds can go back: skip pending or uncaptured payments
            // before refunding anything, so a closure rarely stops half-way.
            let at_bank = self.bank.payment(&p.payment_id).map_err(bank_error)?;
            if !matches!(
                at_bank.status,
                PaymentStatus::Captured | PaymentStatus::Settled
            ) {
                continue;
            }
            let part = remaining.min(p.amount_mills.saturating_sub(p.refunded_mills));
            if part > 0 {
                plan.push((p.payment_id, part));
                remaining -= part;
            }
        }
        if remaining > 0 {
            return Err(CoreError::refused(
                codes::REFUND_UNAVAILABLE,
                format!(
                    "{} of the balance is in payments the bank has not settled yet; try again later",
                    dollars(remaining)
                ),
            ));
        }
        Ok(plan)
    }

    /// Close the account: freeze it, fix the payout plan (the whole balance back to the payments
    /// it came from, newest first), refund each at the bank keyed `USER:close:payout:PAYMENT`
    /// (so a retry after a crash refunds once), book the payouts, and withdraw the device at CMLS
    /// (a failure there is logged and shows in reconciliation).
    pub(in crate::core) async fn close_account(
        self: &Arc<Self>,
        caller: Caller,
    ) -> Result<CloseReply, CoreError> {
        let core = Arc::clone(self);
        let out = blocking(move || core.close(&caller)).await?;
        Ok(CloseReply {
            status: "closed".into(),
            refunded_mills: out.refunded_mills,
            refunds: out
                .payouts
                .into_iter()
                .map(|p| CloseRefund {
                    payment_id: p.payment_id,
                    refund_id: p.refund_id,
                    amount_mills: p.amount_mills,
                })
                .collect(),
            balance_mills: out.balance_mills,
        })
    }

    fn close(&self, caller: &Caller) -> Result<CloseOutcome, CoreError> {
        let user_id = caller.user_id;
        if let Some(outcome) = self.replayed(caller, "close")? {
            return Ok(outcome);
        }
        // An unpaid ACH return stops a closure at every attempt, a resumed one too: the
        // refunds would otherwise pay back money the bank took back.
        if let Some(r) = self.store.open_returns(user_id)?.first() {
            return Err(CoreError::refused(codes::ACCOUNT_LOCKED, locked_message(r)));
        }
        if self.store.closed_at(user_id)?.is_none() {
            let balance = self.store.balance(user_id)?;
            if balance.reserved_mills > 0 {
                return Err(CoreError::refused(
                    codes::ACCOUNT_BUSY,
                    "items are awaiting print confirmation; confirm them or wait for the window",
                ));
            }
            // Refuse now, before anything is frozen, when the bank cannot take it all back.
            self.payout_plan(user_id, balance.balance_mills)?;
        }
        // Stop all spending before the bank refunds anything, so that the balance the refunds
        // are planned from cannot move. A retry after a crash (under any request id) resumes
        // here with the same balance and the plan the ledger kept, and the bank answers the
        // same refund keys with the same refunds.
        let key = caller.key();
        let balance = match self.store.begin_close(&key, self.now_ms())? {
            CloseStart::Closed(out) => return Ok(out),
            CloseStart::Closing { balance_mills } => balance_mills,
        };
        // The plan is fixed in the ledger before the first refund: a resumed closure follows
        // it even if a payment's state at the bank changed since (a pending debit settled).
        let plan = match self.store.close_plan(user_id)? {
            Some(plan) => plan,
            None => {
                let plan = self.payout_plan(user_id, balance)?;
                self.store.fix_close_plan(user_id, &plan, self.now_ms())?
            }
        };
        let mut payouts = Vec::new();
        for (payment_id, part) in plan {
            let refund = self
                .bank
                .refund(
                    &payment_id,
                    part,
                    &format!("{user_id}:close:payout:{payment_id}"),
                )
                .map_err(|e| match e {
                    BankError::BadState(m) => CoreError::refused(
                        codes::REFUND_UNAVAILABLE,
                        format!(
                            "the bank cannot refund payment {payment_id} yet ({m}); try again later"
                        ),
                    ),
                    other => bank_error(other),
                })?;
            payouts.push(Payout {
                payment_id,
                refund_id: refund.refund_id,
                amount_mills: part,
            });
        }
        let out = self.store.close_account(&key, &payouts, self.now_ms())?;
        if let Ok(Some(meter)) = self.store.meter(user_id)
            && let Some(device_id) = &meter.device_id
            && let Err(e) = self.cmls.withdraw_device(device_id, "account closed")
        {
            tracing::warn!(error = %e, "could not withdraw a device at CMLS");
        }
        Ok(out)
    }
}
