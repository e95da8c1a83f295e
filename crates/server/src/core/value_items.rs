//! Value items: tickets, checks, coupons and gift certificates — validated, numbered by the
//! issuer's own sequence of the kind (a check's number is its place in that sequence), signed
//! inside the ledger transaction like postage and printed under the same print-then-confirm
//! rule; redeemed once (a certificate in parts) by the issuer or the users it allows; and their
//! public status (`expired` past the valid-until day).

use std::collections::BTreeMap;
use std::sync::Arc;

use base64::Engine as _;
use stampline_items::{DeviceId, Field, Item, ItemDate, Kind, Serial, ValueItem, field_tag};
use stampline_ledger::{IssueInput, ItemStatus, PieceState, SignedItem, UserId};
use stampline_money::Amount;
use stampline_wire::codes;
use stampline_wire::replies::{
    CheckLine, ChecksReply, IssueReply, ItemStatusPublic, RedeemReply, RedeemersReply,
};

use super::postage::PRINT_POLICY;
use super::{Caller, Core, CoreError, blocking};

/// The largest face value of one value item: $1,000,000.
pub const MAX_VALUE_ITEM_MILLS: u64 = 1_000_000_000;
/// How far ahead a valid-until day may be: ten years.
pub const MAX_VALID_DAYS: i64 = 3660;
/// Longest text of one field, in characters (the label prints it on one line; the item format
/// allows 255 bytes).
pub const MAX_FIELD_CHARS: usize = 100;
/// Longest coupon terms, in characters (printed on up to four lines of 45).
pub const MAX_TERMS_CHARS: usize = 180;

/// What a kind's fields are: (name, tag, required, longest in characters). The check number is
/// the server's, never the client's; a certificate's code is the server's too.
fn field_rules(kind: Kind) -> &'static [(&'static str, u8, bool, usize)] {
    use field_tag::*;
    match kind {
        Kind::Ticket => &[
            ("event", ticket::EVENT, true, MAX_FIELD_CHARS),
            ("venue", ticket::VENUE, true, MAX_FIELD_CHARS),
            ("seat", ticket::SEAT, true, MAX_FIELD_CHARS),
        ],
        Kind::Check => &[
            ("payee", check::PAYEE, true, MAX_FIELD_CHARS),
            ("memo", check::MEMO, false, MAX_FIELD_CHARS),
        ],
        Kind::Coupon => &[
            ("issuer", coupon::ISSUER, true, MAX_FIELD_CHARS),
            ("terms", coupon::TERMS, true, MAX_TERMS_CHARS),
        ],
        Kind::Certificate => &[("recipient", certificate::RECIPIENT, true, MAX_FIELD_CHARS)],
        Kind::Postage => &[],
    }
}

/// A validated value-item request.
pub(super) struct ValueOrder {
    kind: Kind,
    amount: Amount,
    fields: Vec<Field>,
    valid_until: Option<ItemDate>,
    issue_date: ItemDate,
}

impl ValueOrder {
    /// Checks an `issue` request for a value item against `today` (UTC).
    pub(super) fn check(
        kind: &str,
        amount_mills: Option<u64>,
        fields: &BTreeMap<String, String>,
        valid_until: Option<&str>,
        today: time::Date,
    ) -> Result<ValueOrder, CoreError> {
        let kind = Kind::from_name(kind)
            .filter(|k| *k != Kind::Postage)
            .ok_or_else(|| {
                CoreError::refused(
                    codes::BAD_REQUEST,
                    format!(
                        "unknown item kind {kind:?}: postage, ticket, check, coupon or certificate"
                    ),
                )
            })?;
        let mills = amount_mills.ok_or_else(|| {
            CoreError::refused(codes::BAD_AMOUNT, format!("a {kind} needs amount_mills"))
        })?;
        if mills == 0 || mills > MAX_VALUE_ITEM_MILLS {
            return Err(CoreError::refused(
                codes::BAD_AMOUNT,
                format!("a {kind}'s amount must be $0.001 to $1,000,000"),
            ));
        }
        let amount = Amount::from_mills(mills)
            .ok_or_else(|| CoreError::refused(codes::BAD_AMOUNT, "amount too large"))?;
        if kind == Kind::Check && !amount.is_whole_cents() {
            return Err(CoreError::refused(
                codes::BAD_AMOUNT,
                "a check pays whole cents, not mills",
            ));
        }
        let rules = field_rules(kind);
        if let Some(unknown) = fields
            .keys()
            .find(|name| !rules.iter().any(|(known, ..)| known == name))
        {
            let known: Vec<&str> = rules.iter().map(|(name, ..)| *name).collect();
            return Err(CoreError::refused(
                codes::BAD_REQUEST,
                format!(
                    "a {kind} has no field {unknown:?} (its fields: {})",
                    known.join(", ")
                ),
            ));
        }
        let mut out = Vec::new();
        for (name, tag, required, max_chars) in rules {
            let value = fields.get(*name).map(|v| v.trim()).unwrap_or("");
            if value.is_empty() {
                if *required {
                    return Err(CoreError::refused(
                        codes::BAD_REQUEST,
                        format!("a {kind} needs its {name}"),
                    ));
                }
                continue;
            }
            let chars = value.chars().count();
            if chars > *max_chars || value.len() > stampline_items::MAX_FIELD_VALUE_LEN {
                return Err(CoreError::refused(
                    codes::BAD_REQUEST,
                    format!("the {name} is {chars} characters; at most {max_chars} fit"),
                ));
            }
            if value.chars().any(char::is_control) {
                return Err(CoreError::refused(
                    codes::BAD_REQUEST,
                    format!("the {name} holds a control character"),
                ));
            }
            out.push(Field::new(*tag, value));
        }
        let issue_date = ItemDate::from_date(today)
            .map_err(|e| CoreError::Internal(format!("today is no item date: {e}")))?;
        let valid_until = match valid_until {
            None => None,
            Some(text) => {
                let date = text.parse::<ItemDate>().map_err(|_| {
                    CoreError::refused(codes::BAD_DATE, "valid_until must be a valid YYYY-MM-DD")
                })?;
                let days = (date.to_date() - today).whole_days();
                if !(0..=MAX_VALID_DAYS).contains(&days) {
                    return Err(CoreError::refused(
                        codes::BAD_DATE,
                        "valid_until must be from today to ten years ahead",
                    ));
                }
                Some(date)
            }
        };
        Ok(ValueOrder {
            kind,
            amount,
            fields: out,
            valid_until,
            issue_date,
        })
    }
}

/// The last millisecond of a valid-until day (UTC).
fn end_of_day_ms(date: ItemDate) -> i64 {
    let next = date.to_date().next_day().unwrap_or(date.to_date());
    let midnight = next.midnight().assume_utc().unix_timestamp();
    midnight.saturating_mul(1000).saturating_sub(1)
}

/// A gift certificate's redemption code: 12 characters of Crockford's base 32 from the crypto
/// RNG, in three groups ("7K4M-Q2ZD-9XHP"); a merchant types it.
fn certificate_code() -> Result<String, String> {
    const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
    let mut bytes = [0u8; 12];
    aws_lc_rs::rand::fill(&mut bytes).map_err(|_| "no randomness for the certificate code")?;
    let chars: Vec<char> = bytes
        .iter()
        .map(|b| char::from(ALPHABET[usize::from(b & 31)]))
        .collect();
    Ok(chars
        .chunks(4)
        .map(|c| c.iter().collect::<String>())
        .collect::<Vec<_>>()
        .join("-"))
}

/// Midnight (UTC) starting `date`, in Unix ms.
fn midnight_ms(date: time::Date) -> i64 {
    date.midnight()
        .assume_utc()
        .unix_timestamp()
        .saturating_mul(1000)
}

/// A positive-pay period: `from` through `to`, inclusive, as `[start, end)` in Unix ms.
fn period(from: &str, to: &str) -> Result<(i64, i64), CoreError> {
    let parse = |what: &str, text: &str| {
        text.parse::<ItemDate>()
            .map(ItemDate::to_date)
            .map_err(|_| {
                CoreError::refused(
                    codes::BAD_DATE,
                    format!("{what} must be a valid YYYY-MM-DD"),
                )
            })
    };
    let (from, to) = (parse("from", from)?, parse("to", to)?);
    if to < from {
        return Err(CoreError::refused(codes::BAD_DATE, "to is before from"));
    }
    let end = to.next_day().unwrap_or(to);
    Ok((midnight_ms(from), midnight_ms(end)))
}

/// A stored check as the positive-pay file lists it.
fn check_line(record: &stampline_ledger::ItemRecord) -> Result<CheckLine, CoreError> {
    let item = Item::parse(&record.bytes)
        .map_err(|e| CoreError::Internal(format!("stored check {}: {e}", record.serial)))?;
    let stampline_items::Body::Value(check) = &item.body else {
        return Err(CoreError::Internal(format!(
            "stored check {} is postage",
            record.serial
        )));
    };
    let number = check
        .field(field_tag::check::CHECK_NUMBER)
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| CoreError::Internal(format!("check {} has no number", record.serial)))?;
    Ok(CheckLine {
        check_number: number,
        serial: record.serial.clone(),
        issue_date: check.issue_date.to_date().to_string(),
        amount_mills: record.amount_mills,
        payee: check
            .field(field_tag::check::PAYEE)
            .unwrap_or("")
            .to_owned(),
        status: record.status.as_str().to_owned(),
        void: matches!(record.status, ItemStatus::Voided | ItemStatus::Refunded),
    })
}

impl Core {
    /// The caller's checks issued in a period, for a bank's positive-pay file.
    pub(super) async fn checks(
        self: &Arc<Self>,
        user_id: UserId,
        from: String,
        to: String,
    ) -> Result<ChecksReply, CoreError> {
        let (start, end) = period(&from, &to)?;
        let core = Arc::clone(self);
        let (records, meter) = blocking(move || {
            Ok((
                core.store.items_of_kind(user_id, "check", start, end)?,
                core.store.meter(user_id)?,
            ))
        })
        .await?;
        let checks = records
            .iter()
            .map(check_line)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(ChecksReply {
            account: meter.and_then(|m| m.device_id).unwrap_or_default(),
            checks,
        })
    }

    /// Issue a value item: reserve its face value (not for a coupon), take the next number of
    /// the kind's sequence, sign inside the ledger transaction; the fresh signature is checked
    /// before the item commits, as for postage.
    pub(super) async fn issue_value(
        self: &Arc<Self>,
        caller: Caller,
        order: ValueOrder,
    ) -> Result<(IssueReply, bool), CoreError> {
        let now = self.now_ms();
        let psd = Arc::clone(&self.psd);
        let kind = order.kind;
        let valid_until_ms = order.valid_until.map(end_of_day_ms);
        let sign = move |state: &PieceState| -> Result<SignedItem, String> {
            let device_id: DeviceId = state.device_id.parse().map_err(|_| {
                "this account has no meter (admin accounts issue nothing)".to_string()
            })?;
            let mut fields = order.fields.clone();
            match kind {
                Kind::Check => fields.push(Field::new(
                    field_tag::check::CHECK_NUMBER,
                    state.piece.to_string(),
                )),
                Kind::Certificate => fields.push(Field::new(
                    field_tag::certificate::CODE,
                    certificate_code()?,
                )),
                _ => {}
            }
            let body_for = |key_id| -> Result<stampline_items::Body, String> {
                Ok(stampline_items::Body::Value(ValueItem {
                    kind,
                    device_id,
                    key_id,
                    serial: state.number,
                    amount: order.amount,
                    issue_date: order.issue_date,
                    valid_until: order.valid_until,
                    fields: fields.clone(),
                }))
            };
            let (key_id, item) = super::sign_with_current_key(&*psd, body_for)?;
            let serial = item.body.serial().to_string();
            let bytes = item.to_bytes().map_err(|e| e.to_string())?;
            // Every value item's fresh signature is checked before it commits (they are few).
            let check = super::fresh_check(Arc::clone(&psd), key_id, item);
            Ok(SignedItem {
                serial,
                bytes,
                check: Some(check),
            })
        };
        let input = IssueInput {
            kind: kind.name(),
            amount: order.amount,
            session: Some(caller.session.to_string()),
            valid_until_ms,
        };
        let out = self
            .store
            .issue(&caller.key(), &input, Box::new(sign), now)
            .outcome()
            .await?;
        let reply = IssueReply {
            serial: out.serial,
            item: base64::engine::general_purpose::STANDARD.encode(&out.item),
            kind: kind.name().to_owned(),
            amount_mills: out.postage_mills,
            postage_mills: 0,
            balance_mills: out.balance_mills,
            print: PRINT_POLICY,
        };
        Ok((reply, out.refill_due))
    }

    /// Redeem a value item (the whole, or part of a gift certificate).
    pub(super) async fn redeem(
        self: &Arc<Self>,
        caller: Caller,
        serial: String,
        amount_mills: Option<u64>,
    ) -> Result<RedeemReply, CoreError> {
        let amount = match amount_mills {
            None => None,
            Some(mills) => Some(
                Amount::from_mills(mills)
                    .filter(|a| !a.is_zero() && mills <= MAX_VALUE_ITEM_MILLS)
                    .ok_or_else(|| {
                        CoreError::refused(
                            codes::BAD_AMOUNT,
                            "the amount to redeem must be $0.001 to $1,000,000",
                        )
                    })?,
            ),
        };
        let core = Arc::clone(self);
        let out = blocking(move || {
            Ok(core
                .store
                .redeem(&caller.key(), &serial, amount, core.now_ms())?)
        })
        .await?;
        tracing::info!(serial = %out.serial, kind = %out.kind, mills = out.redeemed_mills, "item redeemed");
        Ok(RedeemReply {
            serial: out.serial,
            kind: out.kind,
            status: out.status.as_str().to_owned(),
            redeemed_mills: out.redeemed_mills,
            remaining_mills: out.remaining_mills,
            balance_mills: out.balance_mills,
        })
    }

    /// The users allowed to redeem the caller's items, after adding or removing one.
    pub(super) async fn redeemers(
        self: &Arc<Self>,
        user_id: UserId,
        add: Option<String>,
        remove: Option<String>,
    ) -> Result<RedeemersReply, CoreError> {
        let core = Arc::clone(self);
        blocking(move || {
            let now = core.now_ms();
            let find = |name: &str| -> Result<UserId, CoreError> {
                let key = stampline_wire::normalize_user(name);
                core.store.user_by_key(&key)?.map(|u| u.id).ok_or_else(|| {
                    CoreError::refused(codes::UNKNOWN_USER, format!("no user {name:?}"))
                })
            };
            if let Some(name) = add {
                let redeemer = find(&name)?;
                if redeemer == user_id {
                    return Err(CoreError::refused(
                        codes::BAD_REQUEST,
                        "you redeem your own items already",
                    ));
                }
                core.store.add_redeemer(user_id, redeemer, now)?;
            }
            if let Some(name) = remove {
                let redeemer = find(&name)?;
                core.store.remove_redeemer(user_id, redeemer, now)?;
            }
            let redeemers = core
                .store
                .redeemers(user_id)?
                .into_iter()
                .map(|(_, name)| name)
                .collect();
            Ok(RedeemersReply { redeemers })
        })
        .await
    }

    /// What anybody may learn of an item by its serial (`GET /v1/items/SERIAL/status`): its
    /// status (`expired` for a value item past its day and not redeemed; `unknown`), and for
    /// value items the kind, face value, what is left and the valid-until day.
    pub async fn item_status_public(
        self: &Arc<Self>,
        serial: String,
    ) -> Result<ItemStatusPublic, CoreError> {
        let unknown = ItemStatusPublic {
            serial: serial.clone(),
            status: "unknown".into(),
            kind: None,
            amount_mills: None,
            remaining_mills: None,
            valid_until: None,
        };
        if serial.parse::<Serial>().is_err() {
            return Ok(unknown);
        }
        let core = Arc::clone(self);
        let lookup = serial.clone();
        let Some(state) = blocking(move || Ok(core.store.item_state(&lookup)?)).await? else {
            return Ok(unknown);
        };
        if state.kind == "postage" {
            return Ok(ItemStatusPublic {
                status: state.status.as_str().into(),
                ..unknown
            });
        }
        let now = self.now_ms();
        let past = state.valid_until_ms.is_some_and(|until| now > until);
        let status = match state.status {
            ItemStatus::Issued | ItemStatus::Printed if past => "expired",
            other => other.as_str(),
        };
        let valid_until = state.valid_until_ms.and_then(|ms| {
            time::OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000))
                .ok()
                .map(|t| t.date().to_string())
        });
        Ok(ItemStatusPublic {
            serial,
            status: status.into(),
            kind: Some(state.kind),
            amount_mills: Some(state.amount_mills),
            remaining_mills: state.remaining_mills,
            valid_until,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn today() -> time::Date {
        time::Date::from_calendar_date(2026, time::Month::December, 6).unwrap()
    }

    fn fields(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn code(
        kind: &str,
        mills: Option<u64>,
        f: &[(&str, &str)],
        until: Option<&str>,
    ) -> Option<&'static str> {
        ValueOrder::check(kind, mills, &fields(f), until, today())
            .err()
            .map(|e| e.code())
    }

    #[test]
    fn value_orders_are_validated() {
        let ticket = [("event", "Concert"), ("venue", "Hall"), ("seat", "F12")];
        assert_eq!(code("ticket", Some(45_000), &ticket, None), None);
        assert_eq!(
            code("ticket", Some(45_000), &ticket, Some("2026-12-06")),
            None
        );
        assert_eq!(
            code("ticket", Some(0), &ticket, None),
            Some(codes::BAD_AMOUNT)
        );
        assert_eq!(code("ticket", None, &ticket, None), Some(codes::BAD_AMOUNT));
        assert_eq!(
            code("ticket", Some(MAX_VALUE_ITEM_MILLS + 1), &ticket, None),
            Some(codes::BAD_AMOUNT)
        );
        assert_eq!(
            code("ticket", Some(1), &ticket[..2], None),
            Some(codes::BAD_REQUEST),
            "a ticket needs its seat"
        );
        assert_eq!(
            code(
                "ticket",
                Some(1),
                &[
                    ("event", "x"),
                    ("venue", "y"),
                    ("seat", "z"),
                    ("payee", "p")
                ],
                None
            ),
            Some(codes::BAD_REQUEST)
        );
        let long = "x".repeat(MAX_FIELD_CHARS + 1);
        assert_eq!(
            code("check", Some(10), &[("payee", &long)], None),
            Some(codes::BAD_REQUEST)
        );
        assert_eq!(
            code("check", Some(10), &[("payee", "Ann\nBob")], None),
            Some(codes::BAD_REQUEST)
        );
        assert_eq!(code("check", Some(10), &[("payee", "Ann")], None), None);
        assert_eq!(
            code("check", Some(1), &[("payee", "Ann")], None),
            Some(codes::BAD_AMOUNT),
            "a check pays whole cents"
        );
        assert_eq!(
            code(
                "check",
                Some(10),
                &[("payee", "Ann"), ("check-number", "7")],
                None
            ),
            Some(codes::BAD_REQUEST),
            "the server numbers checks"
        );
        assert_eq!(
            code("coupon", Some(1), &[("issuer", "Bakery")], None),
            Some(codes::BAD_REQUEST)
        );
        assert_eq!(
            code(
                "certificate",
                Some(1),
                &[("recipient", "Jane")],
                Some("2026-12-05")
            ),
            Some(codes::BAD_DATE)
        );
        assert_eq!(
            code(
                "certificate",
                Some(1),
                &[("recipient", "Jane")],
                Some("2026-02-30")
            ),
            Some(codes::BAD_DATE)
        );
        assert_eq!(code("bond", Some(1), &[], None), Some(codes::BAD_REQUEST));
    }

    #[test]
    fn a_period_runs_from_its_first_midnight_to_the_day_after_its_last() {
        let (start, end) = period("2026-12-06", "2026-12-06").unwrap();
        assert_eq!(end - start, 24 * 3600 * 1000);
        assert_eq!(end, 1_796_601_600_000);
        assert_eq!(
            period("2026-12-07", "2026-12-06").err().map(|e| e.code()),
            Some(codes::BAD_DATE)
        );
        assert_eq!(
            period("2026-13-01", "2026-12-06").err().map(|e| e.code()),
            Some(codes::BAD_DATE)
        );
    }

    #[test]
    fn a_valid_until_day_ends_at_its_last_millisecond() {
        let day = ItemDate::from_ymd(2026, 12, 6).unwrap();
        // 2026-12-07T00:00:00Z is 1796601600.
        assert_eq!(end_of_day_ms(day), 1_796_601_600_000 - 1);
    }

    #[test]
    fn certificate_codes_are_three_groups_of_four() {
        let a = certificate_code().unwrap();
        let b = certificate_code().unwrap();
        assert_eq!(a.len(), 14);
        assert_eq!(a.matches('-').count(), 2);
        assert_ne!(a, b);
    }
}
