//! Postage: quotes, issuing an item (checked against the rate, signed inside the ledger
//! transaction and the fresh signature verified before it commits), print confirmation, reprints,
//! and the confirmation window whose end voids unconfirmed items.

use std::sync::Arc;

use base64::Engine as _;
use stampline_items::{
    DeliveryPoint, DeviceId, ItemDate, PostageIndicium, RateCategory, SOFTWARE_ID, Zip5,
};
use stampline_ledger::{IssueInput, PieceState, ReprintLimits, SignedItem, UserId};
use stampline_money::Amount;
use stampline_wire::replies::{ConfirmReply, IssueReply, QuoteReply, ReprintReply};
use stampline_wire::{PrintPolicy, codes};

use super::{Caller, Core, CoreError, blocking};
use crate::rating;

/// The largest postage the indicium's 3-byte field holds, in mills ($16,777.215).
pub const MAX_POSTAGE_MILLS: u64 = 16_777_215;
/// How far ahead a date of mailing may be, in days.
pub const MAX_MAIL_DATE_AHEAD_DAYS: i64 = 30;
/// The policy every issued item is printed under.
pub const PRINT_POLICY: PrintPolicy = PrintPolicy {
    spool: false,
    copies: 1,
};
/// Reprints allowed per item (extension op `reprint`, docs/PROTOCOL.md).
pub const MAX_REPRINTS: u32 = 3;
/// How long after issue an item may be reprinted: 24 hours.
pub const REPRINT_WINDOW_MS: i64 = 24 * 3600 * 1000;

/// The `quote` op: the price of one piece.
pub(super) fn quote(
    class: &str,
    weight_oz: &serde_json::Number,
    from_zip: Option<&str>,
    to_zip: Option<&str>,
) -> Result<QuoteReply, CoreError> {
    let q = rating::quote(class, &weight_oz.to_string(), from_zip, to_zip)?;
    Ok(rating::quote_reply(&q))
}

/// A validated postage request.
pub(super) struct PostageOrder {
    postage: Amount,
    from_zip: Zip5,
    to: DeliveryPoint,
    mail_date: ItemDate,
    rate: RateCategory,
}

impl PostageOrder {
    /// Check an issue request's fields; the date of mailing against `today` (UTC).
    pub(super) fn check(
        kind: &str,
        postage_mills: u64,
        from_zip: &str,
        to_zip: &str,
        mail_date: &str,
        class: &str,
        today: time::Date,
    ) -> Result<PostageOrder, CoreError> {
        if kind != "postage" {
            return Err(CoreError::refused(
                codes::UNSUPPORTED,
                format!("items of kind {kind:?} are not offered by this server version"),
            ));
        }
        if postage_mills == 0 || postage_mills > MAX_POSTAGE_MILLS {
            return Err(CoreError::refused(
                codes::BAD_AMOUNT,
                "postage must be $0.001 to $16,777.215",
            ));
        }
        let postage = Amount::from_mills(postage_mills)
            .ok_or_else(|| CoreError::refused(codes::BAD_AMOUNT, "postage too large"))?;
        let from_zip = from_zip
            .parse::<Zip5>()
            .map_err(|_| CoreError::refused(codes::BAD_ZIP, "from_zip must be exactly 5 digits"))?;
        let to = to_zip.parse::<DeliveryPoint>().map_err(|_| {
            CoreError::refused(codes::BAD_ZIP, "to_zip must be a ZIP, ZIP+4 or ZIP+4+2")
        })?;
        let date = mail_date.parse::<ItemDate>().map_err(|_| {
            CoreError::refused(codes::BAD_DATE, "mail_date must be a valid YYYY-MM-DD")
        })?;
        check_mail_date(date, today)?;
        let rate = rating::class(class)?;
        Ok(PostageOrder {
            postage,
            from_zip,
            to,
            mail_date: date,
            rate,
        })
    }

    /// Refuse underpaid postage: at least the rate for the declared weight, or without a weight
    /// the class's lowest rate; and a weight the class does not take.
    pub(super) fn check_rate(&self, weight_oz: Option<&str>) -> Result<(), CoreError> {
        let needed = match weight_oz {
            Some(w) => {
                let from = self.from_zip.to_string();
                let to = self.to.as_str().get(..5).unwrap_or("").to_owned();
                rating::quote(self.rate.class_name(), w, Some(&from), Some(&to))?.postage
            }
            None => stampline_rates::table()
                .and_then(|t| t.minimum(self.rate))
                .map_err(|e| CoreError::Internal(e.to_string()))?,
        };
        if self.postage < needed {
            return Err(CoreError::refused(
                codes::UNDERPAID,
                format!(
                    "postage {} is below the rate {} for this piece",
                    self.postage, needed
                ),
            ));
        }
        Ok(())
    }
}

/// A date of mailing may be yesterday (time zones west of UTC) up to 30 days ahead of `today`.
fn check_mail_date(date: ItemDate, today: time::Date) -> Result<(), CoreError> {
    let Ok(month) = time::Month::try_from(date.month()) else {
        return Err(CoreError::refused(codes::BAD_DATE, "bad month"));
    };
    let d = time::Date::from_calendar_date(i32::from(date.year()), month, date.day())
        .map_err(|_| CoreError::refused(codes::BAD_DATE, "bad date"))?;
    let days = (d - today).whole_days();
    if !(-1..=MAX_MAIL_DATE_AHEAD_DAYS).contains(&days) {
        return Err(CoreError::refused(
            codes::BAD_DATE,
            format!("mail_date must be from yesterday to {MAX_MAIL_DATE_AHEAD_DAYS} days ahead"),
        ));
    }
    Ok(())
}

/// An item's bytes as the wire carries them.
fn base64(item: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(item)
}

impl Core {
    /// Issue: reserve, next piece, sign inside the ledger transaction, verify the fresh signature
    /// with the published key before the transaction commits. Returns the answer and whether the
    /// user's standing authorisation asks for a refill now.
    pub(super) async fn issue_postage(
        self: &Arc<Self>,
        caller: Caller,
        order: PostageOrder,
    ) -> Result<(IssueReply, bool), CoreError> {
        let core = Arc::clone(self);
        let queued = {
            let now = core.now_ms();
            let psd = Arc::clone(&core.psd);
            let sign = move |state: &PieceState| -> Result<SignedItem, String> {
                let device_id: DeviceId = state.device_id.parse().map_err(|_| {
                    "this account has no postage meter (admin accounts cannot buy postage)"
                        .to_string()
                })?;
                let body_for = |key_id| -> Result<stampline_items::Body, String> {
                    Ok(stampline_items::Body::Postage(PostageIndicium {
                        device_id,
                        key_id,
                        piece: state.piece,
                        ascending: Amount::from_mills(state.ascending_mills)
                            .ok_or("ascending register overflow")?,
                        descending: Amount::from_mills(state.descending_mills)
                            .ok_or("descending register overflow")?,
                        postage: order.postage,
                        mail_date: order.mail_date,
                        from_zip: order.from_zip,
                        to: order.to.clone(),
                        rate: order.rate,
                        software_id: SOFTWARE_ID,
                    }))
                };
                let (key_id, item) = super::sign_with_current_key(&*psd, body_for)?;
                let serial = item.body.serial().to_string();
                let bytes = item.to_bytes().map_err(|e| e.to_string())?;
                // Check the fresh signature with the key verifiers will use (one in
                // `verify_every`, the process's first included). The ledger commits the issue
                // only if the check passes; SQLite's writer has this request's thread run it
                // while it goes on with other requests.
                let n = core
                    .signed
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let check = n
                    .is_multiple_of(core.cfg.verify_every.max(1))
                    .then(|| super::fresh_check(Arc::clone(&psd), key_id, item));
                Ok(SignedItem {
                    serial,
                    bytes,
                    check,
                })
            };
            let input = IssueInput {
                kind: "postage",
                amount: order.postage,
                session: Some(caller.session.to_string()),
                valid_until_ms: None,
            };
            self.store.issue(&caller.key(), &input, Box::new(sign), now)
        };
        let out = queued.outcome().await?;
        let reply = IssueReply {
            serial: out.serial,
            item: base64(&out.item),
            kind: "postage".to_owned(),
            amount_mills: out.postage_mills,
            postage_mills: out.postage_mills,
            balance_mills: out.balance_mills,
            print: PRINT_POLICY,
        };
        Ok((reply, out.refill_due))
    }

    /// The client's word on an issued item: printed, or not (which voids it and returns the
    /// postage).
    pub(super) async fn confirm(
        self: &Arc<Self>,
        caller: Caller,
        serial: String,
        printed: bool,
    ) -> Result<ConfirmReply, CoreError> {
        let now = self.now_ms();
        let out = self
            .store
            .confirm(&caller.key(), &serial, printed, now)
            .outcome()
            .await?;
        Ok(ConfirmReply {
            serial: out.serial,
            status: out.status.as_str().to_owned(),
            balance_mills: out.balance_mills,
        })
    }

    /// An item's bytes again, to print, counted and limited.
    pub(super) async fn reprint(
        self: &Arc<Self>,
        caller: Caller,
        serial: String,
    ) -> Result<ReprintReply, CoreError> {
        let core = Arc::clone(self);
        let out = blocking(move || {
            let limits = ReprintLimits {
                max_reprints: MAX_REPRINTS,
                window_ms: REPRINT_WINDOW_MS,
            };
            Ok(core
                .store
                .reprint(&caller.key(), &serial, limits, core.now_ms())?)
        })
        .await?;
        tracing::info!(serial = %out.serial, reprint = out.reprints, "item reprinted");
        Ok(ReprintReply {
            serial: out.serial,
            status: out.status.as_str().to_owned(),
            item: base64(&out.item),
            reprints: out.reprints,
            reprints_left: out.reprints_left,
            print: PRINT_POLICY,
        })
    }

    /// A link ended: its user's unconfirmed items get the confirmation window.
    pub async fn link_ended(self: &Arc<Self>, user_id: UserId) {
        let core = Arc::clone(self);
        let result = blocking(move || {
            let deadline = core.now_ms().saturating_add(core.cfg.confirm_window_ms);
            Ok(core.store.start_confirm_window(Some(user_id), deadline)?)
        })
        .await;
        if let Err(e) = result {
            tracing::error!(error = %e, "could not start the confirmation window");
        }
    }

    /// At start: no link is live, so every unconfirmed item gets the window; then void the
    /// expired ones. Called periodically afterwards.
    pub async fn sweep(self: &Arc<Self>, at_start: bool) -> Result<Vec<String>, CoreError> {
        let core = Arc::clone(self);
        blocking(move || {
            let now = core.now_ms();
            if at_start {
                core.store
                    .start_confirm_window(None, now.saturating_add(core.cfg.confirm_window_ms))?;
            }
            Ok(core.store.void_expired(now)?)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postage_orders_are_validated() {
        let today = time::Date::from_calendar_date(2026, time::Month::December, 5).unwrap();
        let check = |postage, from: &str, to: &str, date: &str, class: &str| {
            PostageOrder::check("postage", postage, from, to, date, class, today)
                .err()
                .map(|e| e.code())
        };
        let letter = "first-class-letter";
        assert_eq!(check(780, "02134", "94105", "2026-12-05", letter), None);
        assert_eq!(check(780, "02134", "94105", "2026-12-04", letter), None);
        assert_eq!(check(780, "02134", "94105", "2027-01-04", letter), None);
        assert_eq!(
            check(0, "02134", "94105", "2026-12-05", letter),
            Some(codes::BAD_AMOUNT)
        );
        assert_eq!(
            check(780, "0213", "94105", "2026-12-05", letter),
            Some(codes::BAD_ZIP)
        );
        assert_eq!(
            check(780, "02134", "9410", "2026-12-05", letter),
            Some(codes::BAD_ZIP)
        );
        assert_eq!(
            check(780, "02134", "94105", "2001-01-01", letter),
            Some(codes::BAD_DATE)
        );
        assert_eq!(
            check(780, "02134", "94105", "2026-12-03", letter),
            Some(codes::BAD_DATE)
        );
        assert_eq!(
            check(780, "02134", "94105", "2027-01-05", letter),
            Some(codes::BAD_DATE)
        );
        assert_eq!(
            check(780, "02134", "94105", "2026-12-05", "pony-express"),
            Some(codes::BAD_CLASS)
        );
    }
}
