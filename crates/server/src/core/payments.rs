//! Payments: funding by card or EFT, the one card-charge path (tokenise a new card, or take a
//! saved token, then charge), item refunds, returned EFT debits that lock an account until paid,
//! auto-refill (`auto_refill`) and account closure (`closure`).

use std::sync::Arc;

use serde::Serialize;
use serde::de::DeserializeOwned;
use stampline_ledger::{FundInput, FundOutcome, ItemStatus, LedgerError, PaymentRow, UserId};
use stampline_money::Amount;
use stampline_sandbox::{CardToken, Payment, PaymentStatus, RETURN_WINDOW_MS, RegisterReport};
use stampline_wire::replies::{FundReply, RefundReply};
use stampline_wire::{Card, Eft, codes};

use super::{Caller, Core, CoreError, blocking};
use crate::error::{bank_error, dollars};

mod auto_refill;
mod closure;

pub(super) use auto_refill::AutoRefillOrder;
pub use auto_refill::MAX_AUTO_REFILL_CAP_MILLS;

/// The largest single funding, in mills ($5,000).
pub const MAX_FUND_MILLS: u64 = 5_000_000;

/// What a settlement check found.
#[derive(Clone, Debug, Default, Serialize)]
pub struct SettlementReport {
    pub checked: usize,
    /// Payment ids newly recorded as returned (their users are now locked).
    pub returned: Vec<String>,
}

/// How a funding is paid.
pub(super) enum PayWith {
    Card(Card),
    Eft(Eft),
}

impl PayWith {
    /// Exactly one of a card or an EFT account (saved cards are not offered).
    pub(super) fn from_request(
        card: Option<Card>,
        card_token: Option<String>,
        eft: Option<Eft>,
    ) -> Result<PayWith, CoreError> {
        match (card, card_token, eft) {
            (Some(card), None, None) => Ok(PayWith::Card(card)),
            (None, None, Some(eft)) => Ok(PayWith::Eft(eft)),
            (None, Some(_), None) => Err(CoreError::refused(
                codes::UNSUPPORTED,
                "saved cards are not offered by this server version",
            )),
            _ => Err(CoreError::refused(
                codes::BAD_REQUEST,
                "give exactly one of card, card_token or eft",
            )),
        }
    }
}

/// The card a charge is made on.
enum CardToCharge<'a> {
    /// Card data from this request: tokenised first.
    New(&'a Card),
    /// A token the bank gave earlier (a standing authorisation).
    Saved(&'a CardToken),
}

/// A card charge the bank made.
struct Charged {
    card: CardToken,
    paid: Payment,
}

/// The message of a refusal while a returned debit is unpaid.
fn locked_message(r: &PaymentRow) -> String {
    LedgerError::AccountLocked {
        payment_id: r.payment_id.clone(),
        amount_mills: r.amount_mills,
    }
    .to_string()
}

impl Core {
    /// The stored outcome of an op already done under this request id, or `id_reused` when the
    /// id was used for a different request.
    fn replayed<T: DeserializeOwned>(
        &self,
        caller: &Caller,
        op: &str,
    ) -> Result<Option<T>, CoreError> {
        let Some((fp, stored_op, outcome)) = self
            .store
            .find_request(caller.user_id, &caller.request_id)?
        else {
            return Ok(None);
        };
        if fp != caller.fingerprint || stored_op != op {
            return Err(CoreError::refused(
                codes::ID_REUSED,
                "this request id was used for a different request",
            ));
        }
        serde_json::from_str(&outcome)
            .map(Some)
            .map_err(|e| CoreError::Internal(format!("stored outcome: {e}")))
    }

    /// Tokenise a card with the bank (bank key `IDEM:token`); only the token and last four are
    /// kept.
    fn tokenize(&self, card: &Card, idem: &str) -> Result<CardToken, CoreError> {
        self.bank
            .tokenize_card(
                &card.number.0,
                &card.exp,
                &card.cvc.0,
                &format!("{idem}:token"),
            )
            .map_err(bank_error)
    }

    /// The one card-charge path: a funding, the payment of a returned debit and an auto-refill
    /// all charge here, with the bank key `idem` (a retry with the same key finds the same
    /// payment).
    fn charge_card(
        &self,
        card: CardToCharge<'_>,
        amount_mills: u64,
        idem: &str,
    ) -> Result<Charged, CoreError> {
        let card = match card {
            CardToCharge::New(card) => self.tokenize(card, idem)?,
            CardToCharge::Saved(token) => token.clone(),
        };
        let paid = self
            .bank
            .charge(&card.token, amount_mills, idem)
            .map_err(bank_error)?;
        Ok(Charged { card, paid })
    }

    /// Tell CMLS of a reset (a credit to the meter). A failure is logged; the ledger is already
    /// right and the daily usage report carries the registers again.
    fn report_reset(&self, user_id: UserId, payment_id: &str, amount_mills: u64) {
        if let Ok(Some(meter)) = self.store.meter(user_id)
            && let Some(device_id) = &meter.device_id
            && let Err(e) = self.cmls.report_reset(
                device_id,
                &RegisterReport {
                    reference: payment_id.to_owned(),
                    amount_mills,
                    ascending_mills: meter.ascending_mills,
                    descending_mills: meter.descending_mills,
                },
            )
        {
            tracing::warn!(error = %e, "could not report a reset to CMLS");
        }
    }

    /// The `fund` op: check the amount, then fund off the async threads.
    pub(super) async fn fund_request(
        self: &Arc<Self>,
        caller: Caller,
        amount_mills: u64,
        pay: PayWith,
    ) -> Result<FundReply, CoreError> {
        if amount_mills == 0 || amount_mills > MAX_FUND_MILLS {
            return Err(CoreError::refused(
                codes::BAD_AMOUNT,
                format!("amount must be $0.001 to {}", dollars(MAX_FUND_MILLS)),
            ));
        }
        let core = Arc::clone(self);
        let out = blocking(move || core.fund(&caller, amount_mills, pay)).await?;
        Ok(FundReply {
            payment_id: out.payment_id,
            amount_mills: out.amount_mills,
            balance_mills: out.balance_mills,
        })
    }

    /// Fund by card or EFT. A repeated request id answers from the ledger without calling the
    /// bank; a new one charges with the idempotency key `user:request`, so a retry after a crash
    /// between the charge and the credit finds the same payment and credits it once.
    fn fund(
        &self,
        caller: &Caller,
        amount_mills: u64,
        pay: PayWith,
    ) -> Result<FundOutcome, CoreError> {
        if let Some(outcome) = self.replayed(caller, "fund")? {
            return Ok(outcome);
        }
        let amount = Amount::from_mills(amount_mills)
            .ok_or_else(|| CoreError::refused(codes::BAD_AMOUNT, "amount too large"))?;
        let user_id = caller.user_id;
        let idem = caller.bank_key();
        if self.store.closed_at(user_id)?.is_some() {
            return Err(CoreError::refused(
                codes::ACCOUNT_CLOSED,
                "the account is closed",
            ));
        }
        if let Some(returned) = self.store.open_returns(user_id)?.first() {
            return self.pay_returned_debit(caller, returned, amount_mills, pay);
        }
        // License first, then charge: a customer CMLS refuses is never charged.
        self.ensure_licensed(user_id)?;
        let (method, token, last4, paid) = match &pay {
            PayWith::Card(card) => {
                let c = self.charge_card(CardToCharge::New(card), amount_mills, &idem)?;
                ("card", Some(c.card.token), Some(c.card.last4), c.paid)
            }
            PayWith::Eft(eft) => {
                let paid = self
                    .bank
                    .debit_eft(&eft.routing, &eft.account.0, amount_mills, &idem)
                    .map_err(bank_error)?;
                let acct = &eft.account.0;
                let last4 = acct.get(acct.len().saturating_sub(4)..).map(str::to_owned);
                ("eft", None, last4, paid)
            }
        };
        if paid.amount_mills != amount_mills {
            return Err(CoreError::Internal(format!(
                "bank paid {} for a request of {amount_mills}",
                paid.amount_mills
            )));
        }
        let out = self.store.fund(
            &caller.key(),
            &FundInput {
                amount,
                payment_id: &paid.payment_id,
                method,
                token: token.as_deref(),
                last4: last4.as_deref(),
            },
            self.now_ms(),
        )?;
        self.report_reset(user_id, &out.payment_id, amount_mills);
        Ok(out)
    }

    /// A locked user pays the returned debit: by card, exactly its amount. Nothing is credited
    /// (the returned debit's value is still on the balance); the lock ends.
    fn pay_returned_debit(
        &self,
        caller: &Caller,
        returned: &PaymentRow,
        amount_mills: u64,
        pay: PayWith,
    ) -> Result<FundOutcome, CoreError> {
        let PayWith::Card(card) = pay else {
            return Err(CoreError::refused(
                codes::ACCOUNT_LOCKED,
                locked_message(returned),
            ));
        };
        if amount_mills != returned.amount_mills {
            return Err(CoreError::refused(
                codes::ACCOUNT_LOCKED,
                locked_message(returned),
            ));
        }
        let charged =
            self.charge_card(CardToCharge::New(&card), amount_mills, &caller.bank_key())?;
        Ok(self.store.pay_return(
            &caller.key(),
            &returned.payment_id,
            &charged.paid.payment_id,
            self.now_ms(),
        )?)
    }

    /// The `refund` op: a printed item's postage back to the balance, within the refund window.
    pub(super) async fn refund_item(
        self: &Arc<Self>,
        caller: Caller,
        serial: String,
    ) -> Result<RefundReply, CoreError> {
        let core = Arc::clone(self);
        let out = blocking(move || {
            let window = core.cfg.refund_window_ms;
            let out = core
                .store
                .refund(&caller.key(), &serial, window, core.now_ms())?;
            if out.status == ItemStatus::Refunded {
                core.report_refund(caller.user_id, &serial);
            }
            Ok(out)
        })
        .await?;
        Ok(RefundReply {
            serial: out.serial,
            status: out.status.as_str().to_owned(),
            balance_mills: out.balance_mills,
        })
    }

    /// Tell CMLS of a refunded item (CMLS counts a serial once). A failure is logged: the ledger
    /// is right, and reconciliation and the daily report show CMLS's view.
    fn report_refund(&self, user_id: UserId, serial: &str) {
        let result = (|| -> Result<(), String> {
            let amount = self
                .store
                .item_amount(user_id, serial)
                .map_err(|e| e.to_string())?
                .ok_or("no such item")?;
            let meter = self
                .store
                .meter(user_id)
                .map_err(|e| e.to_string())?
                .ok_or("no meter")?;
            let device_id = meter.device_id.as_deref().ok_or("no device")?;
            self.cmls
                .report_refund(
                    device_id,
                    &RegisterReport {
                        reference: serial.to_owned(),
                        amount_mills: amount,
                        ascending_mills: meter.ascending_mills,
                        descending_mills: meter.descending_mills,
                    },
                )
                .map_err(|e| e.to_string())
        })();
        if let Err(e) = result {
            tracing::warn!(%serial, error = %e, "could not report a refund to CMLS");
        }
    }

    /// `account_closed`, or `account_locked` while a returned debit is unpaid (the ledger's rule).
    async fn refuse_if_locked(self: &Arc<Self>, user_id: UserId) -> Result<(), CoreError> {
        let core = Arc::clone(self);
        blocking(move || Ok(core.store.refuse_if_locked(user_id)?)).await
    }

    /// Ask the bank about every EFT debit still inside the return window; record the returned
    /// ones, which locks their users.
    pub async fn check_settlements(self: &Arc<Self>) -> Result<SettlementReport, CoreError> {
        let core = Arc::clone(self);
        blocking(move || {
            let now = core.now_ms();
            let mut report = SettlementReport::default();
            for p in core.store.payments()? {
                if p.method != "eft"
                    || p.returned_at_ms.is_some()
                    || now.saturating_sub(p.at_ms) > RETURN_WINDOW_MS
                {
                    continue;
                }
                report.checked += 1;
                let record = core.bank.payment(&p.payment_id).map_err(bank_error)?;
                if record.status == PaymentStatus::Returned
                    && core
                        .store
                        .record_payment_return(&p.payment_id, now)?
                        .is_some()
                {
                    tracing::warn!(payment = %p.payment_id, user = p.user_id,
                        "an EFT debit was returned; the account is locked until it is paid");
                    report.returned.push(p.payment_id);
                }
            }
            Ok(report)
        })
        .await
    }
}
