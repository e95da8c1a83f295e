//! Postal fields of the indicium: rate category, originating ZIP, destination delivery point.

use std::fmt;
use std::str::FromStr;

use crate::ItemError;

/// The largest 5-digit ZIP value.
pub const MAX_ZIP5: u32 = 99_999;
/// Bytes of the delivery-point field in a postage indicium (ZIP+4+2, space-padded).
pub const DELIVERY_POINT_LEN: usize = 11;

/// Mail class and shape, a 2-byte code in the indicium (docs/DESIGN.md §4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum RateCategory {
    FirstClassLetter = 1,
    FirstClassFlat = 2,
    PriorityMail = 3,
    GroundAdvantage = 4,
}

impl RateCategory {
    /// Every category, in code order.
    pub const ALL: [RateCategory; 4] = [
        RateCategory::FirstClassLetter,
        RateCategory::FirstClassFlat,
        RateCategory::PriorityMail,
        RateCategory::GroundAdvantage,
    ];

    /// The code written in the indicium.
    pub fn code(self) -> u16 {
        self as u16
    }

    /// The category for a code, or `None` if unknown.
    pub fn from_code(code: u16) -> Option<RateCategory> {
        RateCategory::ALL
            .into_iter()
            .find(|rate| rate.code() == code)
    }

    /// The name used in JSON and on the command line: `"first-class-letter"`,
    /// `"first-class-flat"`, `"priority-mail"`, `"ground-advantage"`.
    pub fn class_name(self) -> &'static str {
        match self {
            RateCategory::FirstClassLetter => "first-class-letter",
            RateCategory::FirstClassFlat => "first-class-flat",
            RateCategory::PriorityMail => "priority-mail",
            RateCategory::GroundAdvantage => "ground-advantage",
        }
    }

    /// The category with this exact name.
    pub fn from_class_name(name: &str) -> Option<RateCategory> {
        RateCategory::ALL
            .into_iter()
            .find(|rate| rate.class_name() == name)
    }

    /// The class marking printed next to the indicium (USPS markings: "FIRST-CLASS MAIL",
    /// "PRIORITY MAIL", …). Letters and flats (large envelopes) both print "FIRST-CLASS MAIL":
    /// the marking names the mail class, and the shape is already in the signed rate category.
    pub fn label_text(self) -> &'static str {
        match self {
            RateCategory::FirstClassLetter | RateCategory::FirstClassFlat => "FIRST-CLASS MAIL",
            RateCategory::PriorityMail => "PRIORITY MAIL",
            RateCategory::GroundAdvantage => "USPS GROUND ADVANTAGE",
        }
    }
}

/// The class name, as [`RateCategory::class_name`].
impl fmt::Display for RateCategory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.class_name())
    }
}

/// A 5-digit ZIP code held as an integer 0..=99999 (the indicium stores the originating ZIP as an
/// integer); written zero-padded, e.g. `"02134"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Zip5(u32);

impl Zip5 {
    /// The ZIP as an integer (02134 is 2134).
    pub fn value(self) -> u32 {
        self.0
    }

    /// The ZIP with this integer value; fails above 99999.
    pub fn from_value(value: u32) -> Result<Zip5, ItemError> {
        if value <= MAX_ZIP5 {
            Ok(Zip5(value))
        } else {
            Err(ItemError::BadZip)
        }
    }
}

/// `"02134"`.
impl fmt::Display for Zip5 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:05}", self.0)
    }
}

/// Strict: exactly 5 ASCII digits.
impl FromStr for Zip5 {
    type Err = ItemError;

    fn from_str(text: &str) -> Result<Zip5, ItemError> {
        if text.len() != 5 {
            return Err(ItemError::BadZip);
        }
        let value = crate::ids::parse_decimal(text.as_bytes()).ok_or(ItemError::BadZip)?;
        Zip5::from_value(u32::try_from(value).map_err(|_| ItemError::BadZip)?)
    }
}

/// The destination delivery point: 5, 9 or 11 ASCII digits (ZIP, ZIP+4, ZIP+4+2), stored
/// without a hyphen. In the indicium it is padded with spaces on the right to 11 bytes.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct DeliveryPoint(String);

fn is_delivery_point_len(len: usize) -> bool {
    matches!(len, 5 | 9 | 11)
}

impl DeliveryPoint {
    /// The digits, without hyphen: `"02134"`, `"021341234"` or `"02134123401"`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The 5-digit ZIP at the start.
    pub fn zip5(&self) -> Zip5 {
        // The constructor guarantees at least 5 ASCII digits.
        let value = crate::ids::parse_decimal(self.0.as_bytes().get(..5).unwrap_or_default());
        Zip5(value.and_then(|v| u32::try_from(v).ok()).unwrap_or(0))
    }

    /// The delivery point of a plain 5-digit ZIP.
    pub fn from_zip5(zip: Zip5) -> DeliveryPoint {
        DeliveryPoint(zip.to_string())
    }

    /// The 11 bytes written in the indicium: the digits, then spaces.
    pub fn to_field(&self) -> [u8; DELIVERY_POINT_LEN] {
        let mut field = [b' '; DELIVERY_POINT_LEN];
        for (out, byte) in field.iter_mut().zip(self.0.bytes()) {
            *out = byte;
        }
        field
    }

    /// The delivery point from its 11-byte indicium field: 5, 9 or 11 digits, then only spaces.
    pub fn from_field(field: &[u8; DELIVERY_POINT_LEN]) -> Result<DeliveryPoint, ItemError> {
        let digits = field
            .iter()
            .take_while(|byte| byte.is_ascii_digit())
            .count();
        let padding = field.get(digits..).unwrap_or_default();
        if !is_delivery_point_len(digits) || padding.iter().any(|byte| *byte != b' ') {
            return Err(ItemError::BadDeliveryPoint);
        }
        let text = field
            .get(..digits)
            .and_then(|digits| std::str::from_utf8(digits).ok())
            .ok_or(ItemError::BadDeliveryPoint)?;
        Ok(DeliveryPoint(text.to_owned()))
    }
}

/// The stored digits, without hyphen (the form [`FromStr`] accepts and the indicium holds).
impl fmt::Display for DeliveryPoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// 5, 9 or 11 ASCII digits, with at most one optional hyphen right after the fifth digit:
/// `"02134"`, `"02134-1234"`, `"021341234"`, `"02134-123401"`.
impl FromStr for DeliveryPoint {
    type Err = ItemError;

    fn from_str(text: &str) -> Result<DeliveryPoint, ItemError> {
        let digits = match (text.get(..5), text.get(5..)) {
            (Some(zip), Some(rest)) if rest.starts_with('-') => {
                let rest = rest.get(1..).unwrap_or_default();
                // A hyphen must be followed by the +4 (and optionally +2) part.
                if rest.is_empty() {
                    return Err(ItemError::BadDeliveryPoint);
                }
                format!("{zip}{rest}")
            }
            _ => text.to_owned(),
        };
        if !is_delivery_point_len(digits.len()) || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ItemError::BadDeliveryPoint);
        }
        Ok(DeliveryPoint(digits))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_categories_map_codes_names_and_label_text() {
        for rate in RateCategory::ALL {
            assert_eq!(RateCategory::from_code(rate.code()), Some(rate));
            assert_eq!(RateCategory::from_class_name(rate.class_name()), Some(rate));
        }
        assert_eq!(RateCategory::FirstClassLetter.code(), 1);
        assert_eq!(RateCategory::GroundAdvantage.code(), 4);
        assert_eq!(RateCategory::from_code(0), None);
        assert_eq!(RateCategory::from_code(5), None);
        assert_eq!(RateCategory::from_class_name("Priority-Mail"), None);
        assert_eq!(RateCategory::PriorityMail.label_text(), "PRIORITY MAIL");
        assert_eq!(
            RateCategory::FirstClassFlat.label_text(),
            "FIRST-CLASS MAIL"
        );
        assert_eq!(
            RateCategory::GroundAdvantage.label_text(),
            "USPS GROUND ADVANTAGE"
        );
    }

    #[test]
    fn zip5_is_exactly_five_digits() {
        let zip: Zip5 = "02134".parse().expect("valid zip");
        assert_eq!(zip.value(), 2134);
        assert_eq!(zip.to_string(), "02134");
        assert_eq!(Zip5::from_value(99_999).map(Zip5::value), Ok(99_999));
        assert_eq!(Zip5::from_value(100_000), Err(ItemError::BadZip));
        for bad in ["", "2134", "021345", "0213a", "+2134", " 2134", "０2134"] {
            assert_eq!(bad.parse::<Zip5>(), Err(ItemError::BadZip), "{bad:?}");
        }
    }

    #[test]
    fn delivery_point_accepts_zip_zip4_and_zip4_2_with_optional_hyphen() {
        for (text, stored) in [
            ("02134", "02134"),
            ("021341234", "021341234"),
            ("02134-1234", "021341234"),
            ("02134123401", "02134123401"),
            ("02134-123401", "02134123401"),
        ] {
            let point: DeliveryPoint = text.parse().expect("valid delivery point");
            assert_eq!(point.as_str(), stored);
            assert_eq!(point.to_string(), stored);
            assert_eq!(point.zip5().to_string(), "02134");
        }
    }

    #[test]
    fn delivery_point_rejects_letters_wrong_lengths_and_stray_hyphens() {
        for bad in [
            "",
            "2134",
            "021341",
            "0213412345",
            "021341234012",
            "02134-",
            "02134-12",
            "0213A",
            "02134-12A4",
            "0213-41234",
            "02134--1234",
            "02134-1234-01",
            "02134 1234",
            "é2134",
        ] {
            assert_eq!(
                bad.parse::<DeliveryPoint>(),
                Err(ItemError::BadDeliveryPoint),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn delivery_point_field_is_space_padded_on_the_right_only() {
        let point: DeliveryPoint = "02134-1234".parse().expect("valid delivery point");
        assert_eq!(&point.to_field(), b"021341234  ");
        assert_eq!(DeliveryPoint::from_field(b"021341234  "), Ok(point));
        for bad in [
            b"  021341234",
            b"02134 1234 ",
            b"0213412    ",
            b"           ",
            b"02134\0\0\0\0\0\0",
            b"02134     x",
        ] {
            assert_eq!(
                DeliveryPoint::from_field(bad),
                Err(ItemError::BadDeliveryPoint)
            );
        }
    }
}
