//! Reports: the balance and history a user asks for, the daily usage report to CMLS, and the
//! reconciliation of our ledger with the bank's and CMLS's records.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;
use stampline_ledger::{MeterState, PaymentRow, UserId};
use stampline_sandbox::{PaymentStatus, UsageReport};
use stampline_wire::codes;
use stampline_wire::replies::{BalanceReply, HistoryLine, HistoryReply};

use super::{Core, CoreError, blocking};
use crate::error::{bank_error, cmls_error, dollars};

/// Most history entries one request returns.
pub const MAX_HISTORY: u32 = 100;

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

impl Core {
    /// The `balance` op.
    pub(super) async fn balance(
        self: &Arc<Self>,
        user_id: UserId,
    ) -> Result<BalanceReply, CoreError> {
        let core = Arc::clone(self);
        let (b, meter) =
            blocking(move || Ok((core.store.balance(user_id)?, core.store.meter(user_id)?)))
                .await?;
        let (license_id, device_id) = meter.map_or((None, None), |m| (m.license_id, m.device_id));
        Ok(BalanceReply {
            balance_mills: b.balance_mills,
            ascending_mills: b.ascending_mills,
            descending_mills: b.descending_mills,
            pieces: b.pieces,
            reserved_mills: b.reserved_mills,
            license_id,
            device_id,
        })
    }

    /// The `history` op: the newest `limit` items (1 to [`MAX_HISTORY`]), or those before the
    /// user's item `before`.
    pub(super) async fn history(
        self: &Arc<Self>,
        user_id: UserId,
        before: Option<String>,
        limit: u32,
    ) -> Result<HistoryReply, CoreError> {
        if limit == 0 || limit > MAX_HISTORY {
            return Err(CoreError::refused(
                codes::BAD_REQUEST,
                format!("limit must be 1 to {MAX_HISTORY}"),
            ));
        }
        let core = Arc::clone(self);
        let items =
            blocking(move || Ok(core.store.history_page(user_id, before.as_deref(), limit)?))
                .await?;
        Ok(HistoryReply {
            items: items
                .into_iter()
                .map(|i| HistoryLine {
                    serial: i.serial,
                    kind: i.kind,
                    amount_mills: i.amount_mills,
                    status: i.status.as_str().to_owned(),
                    issued_at_ms: i.issued_at_ms,
                })
                .collect(),
        })
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
            // A meter not licensed yet has no device at CMLS and nothing to report.
            for (m, device_id) in core
                .store
                .meters()?
                .into_iter()
                .filter_map(|m| m.device_id.clone().map(|d| (m, d)))
            {
                let status = core.cmls.device_status(&device_id).map_err(cmls_error)?;
                let (prev_piece, prev_asc) = status
                    .last_report
                    .as_ref()
                    .map_or((0, 0), |r| (r.last_piece, r.ascending_mills));
                let report = UsageReport {
                    device_id: device_id.clone(),
                    date: date.clone(),
                    pieces: u64::from(m.piece).saturating_sub(prev_piece),
                    postage_mills: m.ascending_mills.saturating_sub(prev_asc),
                    last_piece: u64::from(m.piece),
                    ascending_mills: m.ascending_mills,
                    descending_mills: m.descending_mills,
                };
                let flags = core.cmls.report_usage(&report).map_err(cmls_error)?;
                out.push((device_id, flags));
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
                format!("we credited {} the bank does not show", dollars(*amount)),
            ));
            continue;
        };
        if r.amount_mills != *amount {
            out.push(diff(
                "amount_differs",
                id,
                format!(
                    "ours {}, bank {}",
                    dollars(*amount),
                    dollars(r.amount_mills)
                ),
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
                    dollars(*refunded),
                    dollars(r.refunded_mills)
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
                    dollars(r.amount_mills),
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
    // Meters not licensed yet have no device at CMLS.
    let licensed: Vec<(&MeterState, &str)> = meters
        .iter()
        .filter_map(|m| m.device_id.as_deref().map(|d| (m, d)))
        .collect();
    for &(m, device_id) in &licensed {
        let Some(d) = at_cmls.get(device_id) else {
            out.push(diff(
                "device_not_at_cmls",
                device_id,
                "our meter's device is not registered with CMLS".into(),
            ));
            continue;
        };
        let ours = funded.get(&m.user_id).copied().unwrap_or(0);
        if d.reset_total_mills != ours {
            out.push(diff(
                "resets_differ",
                device_id,
                format!(
                    "we credited {}, CMLS holds resets of {}",
                    dollars(ours),
                    dollars(d.reset_total_mills)
                ),
            ));
        }
    }
    let ours_devices: std::collections::BTreeSet<&str> = licensed.iter().map(|&(_, d)| d).collect();
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
            device_id: Some(device.into()),
            license_id: Some("LIC-1".into()),
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
