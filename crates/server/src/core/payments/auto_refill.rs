//! Auto-refill: a standing authorisation to charge a saved card when the balance falls below a
//! threshold, up to a cap; and the payment options a client shows before a payment.

use std::sync::Arc;

use stampline_ledger::{AutoRefill, FundInput, FundOutcome, LedgerError, RequestKey, UserId};
use stampline_money::Amount;
use stampline_sandbox::CardToken;
use stampline_wire::replies::{AutoRefillReply, AutoRefillState, PaymentOptionsReply};
use stampline_wire::{Card, codes};

use super::{CardToCharge, MAX_FUND_MILLS, locked_message};
use crate::core::{Caller, Core, CoreError, blocking};
use crate::error::dollars;

/// The largest cap a standing authorisation may have ($5,000, one funding's limit).
pub const MAX_AUTO_REFILL_CAP_MILLS: u64 = MAX_FUND_MILLS;

/// A validated `auto_refill` request.
pub(in crate::core) struct AutoRefillOrder {
    pub threshold_mills: u64,
    pub amount_mills: u64,
    pub cap_mills: u64,
    pub card: Option<Card>,
    pub off: bool,
}

/// A standing authorisation as the wire shows it.
fn state(a: Option<&AutoRefill>) -> AutoRefillState {
    match a {
        None => AutoRefillState::default(),
        Some(a) => AutoRefillState {
            active: true,
            last4: Some(a.last4.clone()),
            threshold_mills: Some(a.threshold_mills),
            amount_mills: Some(a.amount_mills),
            cap_mills: Some(a.cap_mills),
            used_mills: Some(a.used_mills),
        },
    }
}

/// Fixed fingerprint of the internal request that books auto-refill number `n`.
fn refill_fingerprint(n: u64) -> [u8; 32] {
    stampline_ledger::Fingerprint::of("auto_refill_charge", &[&n.to_be_bytes()]).0
}

impl Core {
    /// What the client shows before a payment: the methods, the standing authorisation, a lock.
    pub(in crate::core) async fn payment_options(
        self: &Arc<Self>,
        user_id: UserId,
    ) -> Result<PaymentOptionsReply, CoreError> {
        let core = Arc::clone(self);
        blocking(move || {
            let auto = core.store.auto_refill(user_id)?;
            let open = core.store.open_returns(user_id)?;
            Ok(PaymentOptionsReply {
                methods: vec!["card".into(), "eft".into()],
                max_amount_mills: MAX_FUND_MILLS,
                auto_refill: state(auto.as_ref()),
                locked: open.first().map(locked_message),
            })
        })
        .await
    }

    /// Set or remove the standing authorisation. The card is tokenised at once; only the token
    /// and the last four digits are kept.
    pub(in crate::core) async fn set_auto_refill(
        self: &Arc<Self>,
        caller: Caller,
        order: AutoRefillOrder,
    ) -> Result<AutoRefillReply, CoreError> {
        let bad = |m: &str| CoreError::refused(codes::BAD_REQUEST, m.to_owned());
        if !order.off {
            self.refuse_if_locked(caller.user_id).await?;
            if order.amount_mills == 0 || order.amount_mills > MAX_FUND_MILLS {
                return Err(CoreError::refused(
                    codes::BAD_AMOUNT,
                    format!(
                        "refill amount must be $0.001 to {}",
                        dollars(MAX_FUND_MILLS)
                    ),
                ));
            }
            if order.cap_mills < order.amount_mills || order.cap_mills > MAX_AUTO_REFILL_CAP_MILLS {
                return Err(CoreError::refused(
                    codes::BAD_AMOUNT,
                    format!(
                        "cap must be at least one refill and at most {}",
                        dollars(MAX_AUTO_REFILL_CAP_MILLS)
                    ),
                ));
            }
            if order.card.is_none() {
                return Err(bad("a standing authorisation needs a card"));
            }
        } else if order.card.is_some() {
            return Err(bad("off takes no card"));
        }
        let core = Arc::clone(self);
        blocking(move || {
            let auth = match &order.card {
                Some(card) if !order.off => {
                    let t = core.tokenize(card, &caller.bank_key())?;
                    Some(AutoRefill {
                        token: t.token,
                        last4: t.last4,
                        threshold_mills: order.threshold_mills,
                        amount_mills: order.amount_mills,
                        cap_mills: order.cap_mills,
                        used_mills: 0,
                        refills: 0,
                    })
                }
                _ => None,
            };
            core.store
                .set_auto_refill(&caller.key(), auth.as_ref(), core.now_ms())?;
            Ok(AutoRefillReply {
                auto_refill: state(core.store.auto_refill(caller.user_id)?.as_ref()),
            })
        })
        .await
    }

    /// After an issue: refill in the background if the standing authorisation calls for it.
    pub(in crate::core) fn spawn_refill_check(self: &Arc<Self>, user_id: UserId) {
        let core = Arc::clone(self);
        tokio::spawn(async move {
            let result = blocking({
                let core = Arc::clone(&core);
                move || core.refill_if_needed(user_id)
            })
            .await;
            if let Err(e) = result {
                tracing::warn!(user = user_id, error = %e, "auto-refill failed");
            }
        });
    }

    /// One refill when the balance is below the threshold and the cap allows it. Refill number
    /// `n` is charged with the bank key `USER:auto-refill-n` and booked under the internal request
    /// id `auto-refill-n`, so two checks racing for one need charge and credit once.
    pub fn refill_if_needed(&self, user_id: UserId) -> Result<Option<FundOutcome>, CoreError> {
        let Some(auth) = self.store.auto_refill(user_id)? else {
            return Ok(None);
        };
        match self.store.refuse_if_locked(user_id) {
            // Closing or closed (the ledger would refuse the credit), or locked by a return.
            Err(LedgerError::AccountClosed | LedgerError::AccountLocked { .. }) => return Ok(None),
            other => other?,
        }
        let balance = self.store.balance(user_id)?;
        if balance.balance_mills >= auth.threshold_mills {
            return Ok(None);
        }
        if auth.used_mills.saturating_add(auth.amount_mills) > auth.cap_mills {
            tracing::info!(user = user_id, "auto-refill cap reached; not refilling");
            return Ok(None);
        }
        // As for a funding: license first, then charge.
        self.ensure_licensed(user_id)?;
        let n = auth.refills;
        let request_id = format!("auto-refill-{n}");
        let saved = CardToken {
            token: auth.token.clone(),
            last4: auth.last4.clone(),
        };
        let charged = self.charge_card(
            CardToCharge::Saved(&saved),
            auth.amount_mills,
            &format!("{user_id}:{request_id}"),
        )?;
        let amount = Amount::from_mills(auth.amount_mills)
            .ok_or_else(|| CoreError::Internal("refill amount out of range".into()))?;
        let key = RequestKey {
            user_id,
            request_id: &request_id,
            fingerprint: refill_fingerprint(n),
        };
        let out = self.store.fund(
            &key,
            &FundInput {
                amount,
                payment_id: &charged.paid.payment_id,
                method: "card",
                token: Some(&auth.token),
                last4: Some(&auth.last4),
            },
            self.now_ms(),
        )?;
        self.store
            .count_auto_refill(user_id, n, auth.amount_mills)?;
        self.report_reset(user_id, &out.payment_id, auth.amount_mills);
        tracing::info!(user = user_id, payment = %out.payment_id, "auto-refilled");
        Ok(Some(out))
    }
}
