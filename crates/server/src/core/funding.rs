//! Issue 7: the links to CMLS and the bank beyond a single funding — device registration with the
//! signing key, ACH returns that lock an account until the debt is paid, the daily usage report,
//! and reconciliation of our ledger with the bank's and CMLS's records.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;
use stampline_ledger::{FundOutcome, LedgerError, PaymentRow, RequestKey, UserId};
use stampline_money::Amount;
use stampline_sandbox::{PaymentStatus, RETURN_WINDOW_MS, UsageReport};

use super::{Core, CoreError, Payment, bank_error, blocking, cmls_error};
use crate::clock::now_ms;

/// The code of a request refused because a returned debit locks the account.
pub const ACCOUNT_LOCKED: &str = stampline_wire::codes::ACCOUNT_LOCKED;

/// One difference between our records and an outside system's.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Difference {
    /// snake_case: `missing_at_bank`, `unknown_at_bank`, `amount_differs`, `method_differs`,
    /// `return_not_recorded`, `return_unknown_to_bank`, `refunds_differ`,
    /// `device_not_at_cmls`, `device_unknown_here`, `resets_differ`.
    pub kind: String,
    /// The payment or device id.
    pub id: String,
    pub detail: String,
}

/// What `stampline admin reconcile` prints.
#[derive(Clone, Debug, Serialize)]
pub struct ReconcileReport {
    pub clean: bool,
    pub payments_checked: usize,
    pub devices_checked: usize,
    pub differences: Vec<Difference>,
}

/// What a settlement check found.
#[derive(Clone, Debug, Default, Serialize)]
pub struct SettlementReport {
    pub checked: usize,
    /// Payment ids newly recorded as returned (their users are now locked).
    pub returned: Vec<String>,
}

/// The CMLS idempotency key of a licence application: the same user repeating the same
/// application (after CMLS or a later step failed) gets the same licence and device id; a
/// corrected application is a new one.
pub(super) fn license_key(user_key: &str, app: &stampline_sandbox::LicenseApplication) -> String {
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    for part in [
        user_key,
        app.name.as_str(),
        app.address.as_str(),
        app.city.as_str(),
        app.state.as_str(),
        app.zip.as_str(),
    ] {
        ctx.update(&(part.len() as u64).to_be_bytes());
        ctx.update(part.as_bytes());
    }
    format!("license:{}", hex::encode(&ctx.finish().as_ref()[..16]))
}

fn money(mills: u64) -> String {
    Amount::from_mills(mills).map_or_else(|| format!("{mills} mills"), |a| a.to_string())
}

fn locked_message(r: &PaymentRow) -> String {
    LedgerError::AccountLocked {
        payment_id: r.payment_id.clone(),
        amount_mills: r.amount_mills,
    }
    .to_string()
}

impl Core {
    /// The financial system this core uses.
    pub fn bank(&self) -> &Arc<dyn stampline_sandbox::Bank> {
        &self.bank
    }

    /// The licensing system this core uses.
    pub fn cmls(&self) -> &Arc<dyn stampline_sandbox::Cmls> {
        &self.cmls
    }

    /// Register a newly licensed device with CMLS, with the key that will sign for it.
    pub(super) fn register_device(
        &self,
        license_id: &str,
        device_id: &str,
    ) -> Result<(), CoreError> {
        let key_id = self.psd.current_signing_key();
        let spki = self
            .psd
            .published_keys()
            .into_iter()
            .find(|k| k.key_id == key_id)
            .map(|k| k.spki_der)
            .ok_or_else(|| CoreError::Internal("signing key is not published".into()))?;
        self.cmls
            .register_device(license_id, device_id, &key_id.to_string(), &spki)
            .map_err(cmls_error)
    }

    /// Tell CMLS of a refunded item (CMLS counts a serial once). A failure is logged: the ledger
    /// is right, and reconciliation and the daily report show CMLS's view.
    pub(super) fn report_refund(&self, user_id: UserId, serial: &str) {
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
            self.cmls
                .report_refund(
                    &meter.device_id,
                    serial,
                    amount,
                    meter.ascending_mills,
                    meter.descending_mills,
                )
                .map_err(|e| e.to_string())
        })();
        if let Err(e) = result {
            tracing::warn!(%serial, error = %e, "could not report a refund to CMLS");
        }
    }

    /// `account_closed`, or `account_locked` while a returned debit is unpaid (the ledger's rule).
    pub(super) async fn refuse_if_locked(
        self: &Arc<Self>,
        user_id: UserId,
    ) -> Result<(), CoreError> {
        let core = Arc::clone(self);
        blocking(move || Ok(core.store.refuse_if_locked(user_id)?)).await
    }

    /// A locked user pays the returned debit: by card, exactly its amount. Nothing is credited
    /// (the returned debit's value is still on the balance); the lock ends.
    pub(super) fn pay_returned_debit(
        &self,
        user_id: UserId,
        request_id: &str,
        fingerprint: [u8; 32],
        returned: &PaymentRow,
        amount_mills: u64,
        payment: Payment,
    ) -> Result<FundOutcome, CoreError> {
        let Payment::Card(card) = payment else {
            return Err(CoreError::refused(ACCOUNT_LOCKED, locked_message(returned)));
        };
        if amount_mills != returned.amount_mills {
            return Err(CoreError::refused(ACCOUNT_LOCKED, locked_message(returned)));
        }
        let idem = format!("{user_id}:{request_id}");
        let t = self
            .bank
            .tokenize_card(
                &card.number.0,
                &card.exp,
                &card.cvc.0,
                &format!("{idem}:token"),
            )
            .map_err(bank_error)?;
        let paid = self
            .bank
            .charge(&t.token, amount_mills, &idem)
            .map_err(bank_error)?;
        let key = RequestKey {
            user_id,
            request_id,
            fingerprint,
        };
        Ok(self
            .store
            .pay_return(&key, &returned.payment_id, &paid.payment_id, now_ms())?)
    }

    /// Ask the bank about every EFT debit still inside the return window; record the returned
    /// ones, which locks their users.
    pub async fn check_settlements(self: &Arc<Self>) -> Result<SettlementReport, CoreError> {
        let core = Arc::clone(self);
        blocking(move || {
            let now = now_ms();
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

    /// Send CMLS the usage report of every device for `date` (YYYY-MM-DD): what it printed since
    /// the last report CMLS holds, and its registers now. Returns (device, flags) per device.
    pub async fn send_usage_reports(
        self: &Arc<Self>,
        date: String,
    ) -> Result<Vec<(String, Vec<String>)>, CoreError> {
        let core = Arc::clone(self);
        blocking(move || {
            let mut out = Vec::new();
            for m in core.store.meters()? {
                let status = core.cmls.device_status(&m.device_id).map_err(cmls_error)?;
                let (prev_piece, prev_asc) = status
                    .last_report
                    .as_ref()
                    .map_or((0, 0), |r| (r.last_piece, r.ascending_mills));
                let report = UsageReport {
                    device_id: m.device_id.clone(),
                    date: date.clone(),
                    pieces: u64::from(m.piece).saturating_sub(prev_piece),
                    postage_mills: m.ascending_mills.saturating_sub(prev_asc),
                    last_piece: u64::from(m.piece),
                    ascending_mills: m.ascending_mills,
                    descending_mills: m.descending_mills,
                };
                let flags = core.cmls.report_usage(&report).map_err(cmls_error)?;
                out.push((m.device_id, flags));
            }
            Ok(out)
        })
        .await
    }

    /// Compare our payments with the bank's and our meters with CMLS's devices; list every
    /// difference.
    pub async fn reconcile(self: &Arc<Self>) -> Result<ReconcileReport, CoreError> {
        let core = Arc::clone(self);
        blocking(move || {
            let ours = core.store.payments()?;
            let theirs = core.bank.payments().map_err(bank_error)?;
            let meters = core.store.meters()?;
            let devices = core.cmls.devices().map_err(cmls_error)?;
            Ok(compare(&ours, &theirs, &meters, &devices))
        })
        .await
    }
}

fn diff(kind: &str, id: &str, detail: String) -> Difference {
    Difference {
        kind: kind.into(),
        id: id.into(),
        detail,
    }
}

/// The reconciliation rules, pure so they can be tested alone.
pub fn compare(
    ours: &[PaymentRow],
    theirs: &[stampline_sandbox::PaymentRecord],
    meters: &[stampline_ledger::MeterState],
    devices: &[stampline_sandbox::DeviceStatus],
) -> ReconcileReport {
    let mut out = Vec::new();
    // What we expect the bank to hold: every credited payment, and every debt payment.
    let mut expected: BTreeMap<&str, (u64, &str, bool, u64)> = BTreeMap::new();
    for p in ours {
        expected.insert(
            &p.payment_id,
            (
                p.amount_mills,
                &p.method,
                p.returned_at_ms.is_some(),
                p.refunded_mills,
            ),
        );
        if let Some(by) = &p.paid_by {
            expected.insert(by, (p.amount_mills, "card", false, 0));
        }
    }
    let bank: BTreeMap<&str, &stampline_sandbox::PaymentRecord> =
        theirs.iter().map(|r| (r.payment_id.as_str(), r)).collect();
    for (id, (amount, method, returned, refunded)) in &expected {
        let Some(r) = bank.get(id) else {
            out.push(diff(
                "missing_at_bank",
                id,
                format!("we credited {} the bank does not show", money(*amount)),
            ));
            continue;
        };
        if r.amount_mills != *amount {
            out.push(diff(
                "amount_differs",
                id,
                format!("ours {}, bank {}", money(*amount), money(r.amount_mills)),
            ));
        }
        if r.method != *method {
            out.push(diff(
                "method_differs",
                id,
                format!("ours {method}, bank {}", r.method),
            ));
        }
        let bank_returned = r.status == PaymentStatus::Returned;
        if bank_returned && !returned {
            out.push(diff(
                "return_not_recorded",
                id,
                "the bank returned this debit; run the settlement check".into(),
            ));
        }
        if !bank_returned && *returned {
            out.push(diff(
                "return_unknown_to_bank",
                id,
                format!("we hold it returned; the bank says {}", r.status.as_str()),
            ));
        }
        if r.refunded_mills != *refunded {
            out.push(diff(
                "refunds_differ",
                id,
                format!(
                    "we paid back {}, the bank refunded {}",
                    money(*refunded),
                    money(r.refunded_mills)
                ),
            ));
        }
    }
    for r in theirs {
        if !expected.contains_key(r.payment_id.as_str()) {
            out.push(diff(
                "unknown_at_bank",
                &r.payment_id,
                format!(
                    "the bank holds a {} {} payment ({}) we never credited",
                    money(r.amount_mills),
                    r.method,
                    r.status.as_str()
                ),
            ));
        }
    }
    // CMLS: every meter registered, and the resets it holds = what we credited per device.
    let mut funded: BTreeMap<i64, u64> = BTreeMap::new();
    for p in ours {
        let e = funded.entry(p.user_id).or_default();
        *e = e.saturating_add(p.amount_mills);
    }
    let at_cmls: BTreeMap<&str, &stampline_sandbox::DeviceStatus> =
        devices.iter().map(|d| (d.device_id.as_str(), d)).collect();
    for m in meters {
        let Some(d) = at_cmls.get(m.device_id.as_str()) else {
            out.push(diff(
                "device_not_at_cmls",
                &m.device_id,
                "our meter's device is not registered with CMLS".into(),
            ));
            continue;
        };
        let ours = funded.get(&m.user_id).copied().unwrap_or(0);
        if d.reset_total_mills != ours {
            out.push(diff(
                "resets_differ",
                &m.device_id,
                format!(
                    "we credited {}, CMLS holds resets of {}",
                    money(ours),
                    money(d.reset_total_mills)
                ),
            ));
        }
    }
    let ours_devices: std::collections::BTreeSet<&str> =
        meters.iter().map(|m| m.device_id.as_str()).collect();
    for d in devices {
        if d.status == "active" && !ours_devices.contains(d.device_id.as_str()) {
            out.push(diff(
                "device_unknown_here",
                &d.device_id,
                "CMLS holds an active device we have no meter for".into(),
            ));
        }
    }
    ReconcileReport {
        clean: out.is_empty(),
        payments_checked: expected.len().max(theirs.len()),
        devices_checked: meters.len().max(devices.len()),
        differences: out,
    }
}

/// A validated `auto_refill` request.
pub(super) struct AutoRefillOrder {
    pub threshold_mills: u64,
    pub amount_mills: u64,
    pub cap_mills: u64,
    pub card: Option<stampline_wire::Card>,
    pub off: bool,
}

/// The largest cap a standing authorisation may have ($5,000, one funding's limit).
pub const MAX_AUTO_REFILL_CAP_MILLS: u64 = super::MAX_FUND_MILLS;

fn auto_refill_json(a: Option<&stampline_ledger::AutoRefill>) -> serde_json::Value {
    match a {
        None => serde_json::json!({"active": false}),
        Some(a) => serde_json::json!({"active": true, "last4": a.last4,
            "threshold_mills": a.threshold_mills, "amount_mills": a.amount_mills,
            "cap_mills": a.cap_mills, "used_mills": a.used_mills}),
    }
}

/// Fixed fingerprint of the internal request that books auto-refill number `n`.
fn refill_fingerprint(n: u64) -> [u8; 32] {
    stampline_ledger::Fingerprint::of("auto_refill_charge", &[&n.to_be_bytes()]).0
}

impl Core {
    /// What the client shows before a payment: the methods, the standing authorisation, a lock.
    pub(super) async fn payment_options(
        self: &Arc<Self>,
        user_id: UserId,
    ) -> Result<serde_json::Value, CoreError> {
        let core = Arc::clone(self);
        blocking(move || {
            let auto = core.store.auto_refill(user_id)?;
            let open = core.store.open_returns(user_id)?;
            Ok(serde_json::json!({
                "methods": ["card", "eft"],
                "max_amount_mills": super::MAX_FUND_MILLS,
                "auto_refill": auto_refill_json(auto.as_ref()),
                "locked": open.first().map(locked_message),
            }))
        })
        .await
    }

    /// Set or remove the standing authorisation. The card is tokenised at once; only the token
    /// and the last four digits are kept.
    pub(super) async fn set_auto_refill(
        self: &Arc<Self>,
        user_id: UserId,
        request_id: String,
        fingerprint: [u8; 32],
        order: AutoRefillOrder,
    ) -> Result<serde_json::Value, CoreError> {
        let bad = |m: &str| CoreError::refused(stampline_wire::codes::BAD_REQUEST, m.to_owned());
        if !order.off {
            self.refuse_if_locked(user_id).await?;
            if order.amount_mills == 0 || order.amount_mills > super::MAX_FUND_MILLS {
                return Err(CoreError::refused(
                    stampline_wire::codes::BAD_AMOUNT,
                    format!(
                        "refill amount must be $0.001 to {}",
                        money(super::MAX_FUND_MILLS)
                    ),
                ));
            }
            if order.cap_mills < order.amount_mills || order.cap_mills > MAX_AUTO_REFILL_CAP_MILLS {
                return Err(CoreError::refused(
                    stampline_wire::codes::BAD_AMOUNT,
                    format!(
                        "cap must be at least one refill and at most {}",
                        money(MAX_AUTO_REFILL_CAP_MILLS)
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
            let key = RequestKey {
                user_id,
                request_id: &request_id,
                fingerprint,
            };
            let auth = match &order.card {
                Some(card) if !order.off => {
                    let t = core
                        .bank
                        .tokenize_card(
                            &card.number.0,
                            &card.exp,
                            &card.cvc.0,
                            &format!("{user_id}:{request_id}:token"),
                        )
                        .map_err(bank_error)?;
                    Some(stampline_ledger::AutoRefill {
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
            core.store.set_auto_refill(&key, auth.as_ref(), now_ms())?;
            Ok(serde_json::json!({
                "auto_refill": auto_refill_json(core.store.auto_refill(user_id)?.as_ref())
            }))
        })
        .await
    }

    /// After an issue: refill in the background if the standing authorisation calls for it.
    pub(super) fn spawn_refill_check(self: &Arc<Self>, user_id: UserId) {
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
        let n = auth.refills;
        let request_id = format!("auto-refill-{n}");
        let paid = self
            .bank
            .charge(
                &auth.token,
                auth.amount_mills,
                &format!("{user_id}:{request_id}"),
            )
            .map_err(bank_error)?;
        let amount = Amount::from_mills(auth.amount_mills)
            .ok_or_else(|| CoreError::Internal("refill amount out of range".into()))?;
        let key = RequestKey {
            user_id,
            request_id: &request_id,
            fingerprint: refill_fingerprint(n),
        };
        let out = self.store.fund(
            &key,
            &stampline_ledger::FundInput {
                amount,
                payment_id: &paid.payment_id,
                method: "card",
                token: Some(&auth.token),
                last4: Some(&auth.last4),
            },
            now_ms(),
        )?;
        self.store
            .count_auto_refill(user_id, n, auth.amount_mills)?;
        if let Ok(Some(meter)) = self.store.meter(user_id)
            && let Err(e) = self.cmls.report_reset(
                &meter.device_id,
                &out.payment_id,
                auth.amount_mills,
                meter.ascending_mills,
                meter.descending_mills,
            )
        {
            tracing::warn!(error = %e, "could not report an auto-refill reset to CMLS");
        }
        tracing::info!(user = user_id, payment = %out.payment_id, "auto-refilled");
        Ok(Some(out))
    }
}

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
                stampline_wire::codes::REFUND_UNAVAILABLE,
                format!(
                    "{} of the balance is in payments the bank has not settled yet; try again later",
                    money(remaining)
                ),
            ));
        }
        Ok(plan)
    }

    /// Close the account: freeze it, fix the payout plan (the whole balance back to the payments
    /// it came from, newest first), refund each at the bank keyed `USER:close:payout:PAYMENT`
    /// (so a retry after a crash refunds once), book the payouts, and withdraw the device at CMLS
    /// (a failure there is logged and shows in reconciliation).
    pub(super) async fn close_account(
        self: &Arc<Self>,
        user_id: UserId,
        request_id: String,
        fingerprint: [u8; 32],
    ) -> Result<serde_json::Value, CoreError> {
        let core = Arc::clone(self);
        let out = blocking(move || {
            let key = RequestKey {
                user_id,
                request_id: &request_id,
                fingerprint,
            };
            if let Some((fp, op, outcome)) = core.store.find_request(user_id, &request_id)? {
                if fp != fingerprint || op != "close" {
                    return Err(CoreError::refused(
                        stampline_wire::codes::ID_REUSED,
                        "this request id was used for a different request",
                    ));
                }
                return serde_json::from_str::<stampline_ledger::CloseOutcome>(&outcome)
                    .map_err(|e| CoreError::Internal(format!("stored outcome: {e}")));
            }
            // An unpaid ACH return stops a closure at every attempt, a resumed one too: the
            // refunds would otherwise pay back money the bank took back.
            if let Some(r) = core.store.open_returns(user_id)?.first() {
                return Err(CoreError::refused(ACCOUNT_LOCKED, locked_message(r)));
            }
            if core.store.closed_at(user_id)?.is_none() {
                let balance = core.store.balance(user_id)?;
                if balance.reserved_mills > 0 {
                    return Err(CoreError::refused(
                        stampline_wire::codes::ACCOUNT_BUSY,
                        "items are awaiting print confirmation; confirm them or wait for the window",
                    ));
                }
                // Refuse now, before anything is frozen, when the bank cannot take it all back.
                core.payout_plan(user_id, balance.balance_mills)?;
            }
            // Stop all spending before the bank refunds anything, so that the balance the refunds
            // are planned from cannot move. A retry after a crash (under any request id) resumes
            // here with the same balance and the plan the ledger kept, and the bank answers the
            // same refund keys with the same refunds.
            let balance = match core.store.begin_close(&key, now_ms())? {
                stampline_ledger::CloseStart::Closed(out) => return Ok(out),
                stampline_ledger::CloseStart::Closing { balance_mills } => balance_mills,
            };
            // The plan is fixed in the ledger before the first refund: a resumed closure follows
            // it even if a payment's state at the bank changed since (a pending debit settled).
            let plan = match core.store.close_plan(user_id)? {
                Some(plan) => plan,
                None => {
                    let plan = core.payout_plan(user_id, balance)?;
                    core.store.fix_close_plan(user_id, &plan, now_ms())?
                }
            };
            let mut payouts = Vec::new();
            for (payment_id, part) in plan {
                let refund = core
                    .bank
                    .refund(
                        &payment_id,
                        part,
                        &format!("{user_id}:close:payout:{payment_id}"),
                    )
                    .map_err(|e| match e {
                        stampline_sandbox::BankError::BadState(m) => CoreError::refused(
                            stampline_wire::codes::REFUND_UNAVAILABLE,
                            format!(
                                "the bank cannot refund payment {payment_id} yet ({m}); try again later"
                            ),
                        ),
                        other => bank_error(other),
                    })?;
                payouts.push(stampline_ledger::Payout {
                    payment_id,
                    refund_id: refund.refund_id,
                    amount_mills: part,
                });
            }
            let out = core.store.close_account(&key, &payouts, now_ms())?;
            if let Ok(Some(meter)) = core.store.meter(user_id)
                && let Err(e) = core.cmls.withdraw_device(&meter.device_id, "account closed")
            {
                tracing::warn!(error = %e, "could not withdraw a device at CMLS");
            }
            Ok(out)
        })
        .await?;
        Ok(serde_json::json!({
            "status": "closed",
            "refunded_mills": out.refunded_mills,
            "refunds": out.payouts,
            "balance_mills": out.balance_mills,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use stampline_sandbox::{DeviceStatus, PaymentRecord};

    fn ours(id: &str, user_id: i64, amount: u64) -> PaymentRow {
        PaymentRow {
            payment_id: id.into(),
            user_id,
            method: "card".into(),
            amount_mills: amount,
            at_ms: 0,
            returned_at_ms: None,
            paid_by: None,
            refunded_mills: 0,
        }
    }

    fn theirs(id: &str, amount: u64, status: PaymentStatus) -> PaymentRecord {
        PaymentRecord {
            payment_id: id.into(),
            method: "card".into(),
            amount_mills: amount,
            status,
            refunded_mills: 0,
            last4: "4242".into(),
            idempotency_key: "k".into(),
            created_ms: 0,
            settle_at_ms: None,
            returned_ms: None,
        }
    }

    fn meter(user_id: i64, device: &str) -> stampline_ledger::MeterState {
        stampline_ledger::MeterState {
            user_id,
            device_id: device.into(),
            license_id: "LIC-1".into(),
            ascending_mills: 0,
            descending_mills: 0,
            piece: 0,
            seal: None,
        }
    }

    fn device(id: &str, resets: u64) -> DeviceStatus {
        DeviceStatus {
            device_id: id.into(),
            license_id: "LIC-1".into(),
            status: "active".into(),
            key_id: "00000000".into(),
            public_key_spki_der_base64: String::new(),
            registered_ms: 0,
            withdrawn_ms: None,
            resets: 1,
            reset_total_mills: resets,
            refunds: 0,
            refund_total_mills: 0,
            last_reset_registers: None,
            last_report: None,
            flags: Vec::new(),
        }
    }

    fn kinds(r: &ReconcileReport) -> Vec<&str> {
        r.differences.iter().map(|d| d.kind.as_str()).collect()
    }

    #[test]
    fn matching_records_reconcile_clean() {
        let r = compare(
            &[ours("p1", 1, 5_000)],
            &[theirs("p1", 5_000, PaymentStatus::Captured)],
            &[meter(1, "SL0100000001")],
            &[device("SL0100000001", 5_000)],
        );
        assert!(r.clean, "{:?}", r.differences);
    }

    #[test]
    fn every_kind_of_difference_is_listed() {
        let mut returned = ours("p3", 1, 1_000);
        returned.method = "eft".into();
        let mut bank_p3 = theirs("p3", 1_000, PaymentStatus::Settled);
        bank_p3.method = "eft".into();
        let mut refunded = theirs("p4", 500, PaymentStatus::Captured);
        refunded.refunded_mills = 100;
        returned.returned_at_ms = Some(1);
        let r = compare(
            &[
                ours("p1", 1, 5_000),
                ours("p2", 1, 2_000),
                returned,
                ours("p4", 1, 500),
            ],
            &[
                theirs("p1", 4_000, PaymentStatus::Captured),
                bank_p3,
                refunded,
                theirs("p9", 1, PaymentStatus::Captured),
            ],
            &[meter(1, "SL0100000001"), meter(2, "SL0100000002")],
            &[device("SL0100000001", 1), device("SL0100000009", 0)],
        );
        let k = kinds(&r);
        for expected in [
            "amount_differs",
            "missing_at_bank",
            "return_unknown_to_bank",
            "refunds_differ",
            "unknown_at_bank",
            "resets_differ",
            "device_not_at_cmls",
            "device_unknown_here",
        ] {
            assert!(k.contains(&expected), "{expected} missing from {k:?}");
        }
        assert!(!r.clean);
    }
}
