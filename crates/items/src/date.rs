//! Calendar dates printed in items.

use std::fmt;
use std::str::FromStr;

use time::{Date, Month};

use crate::ItemError;

/// The first year an item date may have.
pub const MIN_YEAR: u16 = 2000;
/// The last year an item date may have.
pub const MAX_YEAR: u16 = 2099;

/// A valid calendar date from 2000-01-01 to 2099-12-31, stored in items as the integer YYYYMMDD
/// (docs/DESIGN.md §4) and written as `"YYYY-MM-DD"`.
///
/// Why only 2000..=2099: items carry the date of mailing or issue, which is always near today;
/// a date outside this century is a corrupted or forged field, and the narrow range keeps the
/// integer form at exactly 8 digits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ItemDate(Date);

impl ItemDate {
    /// The date `y`-`m`-`d`; fails unless it exists and `y` is 2000..=2099.
    pub fn from_ymd(y: u16, m: u8, d: u8) -> Result<ItemDate, ItemError> {
        if !(MIN_YEAR..=MAX_YEAR).contains(&y) {
            return Err(ItemError::BadDate);
        }
        let month = Month::try_from(m).map_err(|_| ItemError::BadDate)?;
        Date::from_calendar_date(i32::from(y), month, d)
            .map(ItemDate)
            .map_err(|_| ItemError::BadDate)
    }

    /// The date as a `time` date.
    pub fn from_date(date: Date) -> Result<ItemDate, ItemError> {
        let year = u16::try_from(date.year()).map_err(|_| ItemError::BadDate)?;
        ItemDate::from_ymd(year, u8::from(date.month()), date.day())
    }

    /// This date as a `time` date (for arithmetic such as "valid for 30 days").
    pub fn to_date(self) -> Date {
        self.0
    }

    /// The integer written in items, e.g. 20261129.
    pub fn to_yyyymmdd(self) -> u32 {
        u32::from(self.year()) * 10_000 + u32::from(self.month()) * 100 + u32::from(self.day())
    }

    /// The date from its item integer; fails for anything that is not a valid date in range
    /// (including 0).
    pub fn from_yyyymmdd(value: u32) -> Result<ItemDate, ItemError> {
        let year = u16::try_from(value / 10_000).map_err(|_| ItemError::BadDate)?;
        // Both remainders are below 100, so they fit a u8.
        let month = u8::try_from(value / 100 % 100).map_err(|_| ItemError::BadDate)?;
        let day = u8::try_from(value % 100).map_err(|_| ItemError::BadDate)?;
        ItemDate::from_ymd(year, month, day)
    }

    /// The year, 2000..=2099.
    pub fn year(self) -> u16 {
        // The constructor admits only 2000..=2099.
        u16::try_from(self.0.year()).unwrap_or(MIN_YEAR)
    }

    /// The month, 1..=12.
    pub fn month(self) -> u8 {
        u8::from(self.0.month())
    }

    /// The day of the month, 1..=31.
    pub fn day(self) -> u8 {
        self.0.day()
    }

    /// US postal form for labels: `"11/29/2026"` (MM/DD/YYYY).
    pub fn us_format(self) -> String {
        format!("{:02}/{:02}/{:04}", self.month(), self.day(), self.year())
    }
}

/// `"2026-11-29"`.
impl fmt::Display for ItemDate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:04}-{:02}-{:02}",
            self.year(),
            self.month(),
            self.day()
        )
    }
}

/// Strict: exactly `YYYY-MM-DD` with ASCII digits.
impl FromStr for ItemDate {
    type Err = ItemError;

    fn from_str(text: &str) -> Result<ItemDate, ItemError> {
        let bytes = text.as_bytes();
        let [y0, y1, y2, y3, b'-', m0, m1, b'-', d0, d1] = bytes else {
            return Err(ItemError::BadDate);
        };
        let number = |digits: &[u8]| {
            crate::ids::parse_decimal(digits)
                .and_then(|value| u16::try_from(value).ok())
                .ok_or(ItemError::BadDate)
        };
        let year = number(&[*y0, *y1, *y2, *y3])?;
        let month = u8::try_from(number(&[*m0, *m1])?).map_err(|_| ItemError::BadDate)?;
        let day = u8::try_from(number(&[*d0, *d1])?).map_err(|_| ItemError::BadDate)?;
        ItemDate::from_ymd(year, month, day)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_round_trip_through_yyyymmdd_and_text() {
        let date = ItemDate::from_ymd(2026, 11, 29).expect("valid date");
        assert_eq!(date.to_yyyymmdd(), 20_261_129);
        assert_eq!(ItemDate::from_yyyymmdd(20_261_129), Ok(date));
        assert_eq!(date.to_string(), "2026-11-29");
        assert_eq!("2026-11-29".parse::<ItemDate>(), Ok(date));
        assert_eq!(date.us_format(), "11/29/2026");
        assert_eq!((date.year(), date.month(), date.day()), (2026, 11, 29));
        assert_eq!(ItemDate::from_date(date.to_date()), Ok(date));
    }

    #[test]
    fn dates_that_do_not_exist_are_rejected() {
        assert_eq!(ItemDate::from_ymd(2026, 2, 30), Err(ItemError::BadDate));
        assert_eq!(ItemDate::from_ymd(2026, 2, 29), Err(ItemError::BadDate));
        assert!(ItemDate::from_ymd(2028, 2, 29).is_ok());
        assert_eq!(ItemDate::from_ymd(2026, 13, 1), Err(ItemError::BadDate));
        assert_eq!(ItemDate::from_ymd(2026, 0, 1), Err(ItemError::BadDate));
        assert_eq!(ItemDate::from_ymd(2026, 1, 0), Err(ItemError::BadDate));
        assert_eq!("2026-02-30".parse::<ItemDate>(), Err(ItemError::BadDate));
        assert_eq!(ItemDate::from_yyyymmdd(20_260_230), Err(ItemError::BadDate));
        assert_eq!(ItemDate::from_yyyymmdd(0), Err(ItemError::BadDate));
        assert_eq!(ItemDate::from_yyyymmdd(u32::MAX), Err(ItemError::BadDate));
    }

    #[test]
    fn dates_outside_2000_to_2099_are_rejected() {
        assert_eq!(ItemDate::from_ymd(1999, 12, 31), Err(ItemError::BadDate));
        assert_eq!(ItemDate::from_ymd(2100, 1, 1), Err(ItemError::BadDate));
        assert!(ItemDate::from_ymd(2000, 1, 1).is_ok());
        assert!(ItemDate::from_ymd(2099, 12, 31).is_ok());
        assert_eq!(ItemDate::from_yyyymmdd(19_991_231), Err(ItemError::BadDate));
    }

    #[test]
    fn date_text_must_be_exactly_yyyy_mm_dd() {
        for bad in [
            "",
            "2026-1-29",
            "2026-11-9",
            "2026/11/29",
            "20261129",
            "2026-11-29 ",
            "+026-11-29",
            "2026-+1-29",
            "11/29/2026",
            "２026-11-29",
        ] {
            assert_eq!(bad.parse::<ItemDate>(), Err(ItemError::BadDate), "{bad:?}");
        }
    }

    #[test]
    fn dates_order_chronologically() {
        let a = ItemDate::from_ymd(2026, 1, 31).expect("valid date");
        let b = ItemDate::from_ymd(2026, 2, 1).expect("valid date");
        assert!(a < b);
    }
}
