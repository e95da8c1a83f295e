//! The public rate engine's face: turn request strings into a quote with clear refusal codes.
//! Used by the `quote` op, `GET /v1/quote` (no login) and the issue check for underpayment.

use stampline_items::{RateCategory, Zip5};
use stampline_rates::{Quote, Weight, table};
use stampline_wire::codes;
use stampline_wire::replies::QuoteReply;

use crate::error::CoreError;

/// The refusal of an unknown mail class.
pub const BAD_CLASS_MESSAGE: &str =
    "class must be first-class-letter, first-class-flat, priority-mail or ground-advantage";

pub fn class(name: &str) -> Result<RateCategory, CoreError> {
    RateCategory::from_class_name(name)
        .ok_or_else(|| CoreError::refused(codes::BAD_CLASS, BAD_CLASS_MESSAGE))
}

pub fn weight(text: &str) -> Result<Weight, CoreError> {
    text.parse::<Weight>()
        .map_err(|e| CoreError::refused(codes::BAD_WEIGHT, e.to_string()))
}

fn zip(what: &str, text: Option<&str>) -> Result<Zip5, CoreError> {
    // Letters and flats are not zoned; a missing ZIP is fine for them.
    let text = text.unwrap_or("00000");
    let five = text.get(..5).unwrap_or(text);
    five.parse::<Zip5>()
        .map_err(|_| CoreError::refused(codes::BAD_ZIP, format!("{what} must start with 5 digits")))
}

/// Price one piece.
pub fn quote(
    class_name: &str,
    weight_oz: &str,
    from: Option<&str>,
    to: Option<&str>,
) -> Result<Quote, CoreError> {
    let class = class(class_name)?;
    let weight = weight(weight_oz)?;
    if matches!(
        class,
        RateCategory::PriorityMail | RateCategory::GroundAdvantage
    ) && (from.is_none() || to.is_none())
    {
        return Err(CoreError::refused(
            codes::BAD_ZIP,
            "zoned classes need from_zip and to_zip",
        ));
    }
    let (from, to) = (zip("from_zip", from)?, zip("to_zip", to)?);
    Ok(table()?.quote(class, weight, from, to)?)
}

/// The answer to a quote.
pub fn quote_reply(q: &Quote) -> QuoteReply {
    let version = table().map(|t| t.version.clone()).unwrap_or_default();
    QuoteReply {
        postage_mills: q.postage.mills(),
        class: q.class.class_name().to_owned(),
        weight_oz: q.weight.to_string(),
        zone: q.zone,
        rate_table: version,
    }
}
