//! Amounts of money for Stampline: [`Amount`], an integer number of mills (1/1000 US dollar), with
//! checked arithmetic, parsing of dollar text such as `"$4.155"` and display as `"$4.155"`.
//!
//! This crate owns the one representation of money that every other crate uses (docs/DESIGN.md §5).
//! It must never use floating point, never wrap or saturate silently (every operation that could
//! leave the range returns `None` or an error), never panic on input, and never do I/O.
//!
//! The range is `0..=2^40 - 1` mills, the largest value a 5-byte meter register in a printed
//! indicium can hold (docs/DESIGN.md §4), so any `Amount` can be written into a register field.

use std::fmt;
use std::str::FromStr;

/// The largest amount in mills: 2^40 − 1, the limit of a 5-byte register (docs/DESIGN.md §4).
pub const MAX_MILLS: u64 = (1 << 40) - 1;

/// Mills in one US dollar.
pub const MILLS_PER_DOLLAR: u64 = 1_000;

/// The most digits accepted after the decimal point: one mill is 1/1000 dollar.
pub const MAX_DECIMAL_PLACES: usize = 3;

/// An amount of US money in mills (1/1000 dollar), between [`Amount::ZERO`] and [`Amount::MAX`].
///
/// `$0.78` is 780 mills, `$4.155` is 4,155 mills. Amounts are never negative: a movement in the
/// other direction is a different transfer, not a negative amount.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Amount(u64);

impl Amount {
    /// No money.
    pub const ZERO: Amount = Amount(0);
    /// The largest amount: [`MAX_MILLS`] (1,099,511,627,775 mills, about $1.1 billion).
    pub const MAX: Amount = Amount(MAX_MILLS);

    /// The amount of `mills`, or `None` above [`Amount::MAX`].
    pub const fn from_mills(mills: u64) -> Option<Amount> {
        if mills <= MAX_MILLS {
            Some(Amount(mills))
        } else {
            None
        }
    }

    /// This amount in mills.
    pub const fn mills(self) -> u64 {
        self.0
    }

    /// `self + other`, or `None` above [`Amount::MAX`].
    pub fn checked_add(self, other: Amount) -> Option<Amount> {
        self.0.checked_add(other.0).and_then(Amount::from_mills)
    }

    /// `self - other`, or `None` below zero.
    pub fn checked_sub(self, other: Amount) -> Option<Amount> {
        self.0.checked_sub(other.0).map(Amount)
    }

    /// `self × count` (for example a price times a number of pieces), or `None` above
    /// [`Amount::MAX`].
    pub fn checked_mul(self, count: u64) -> Option<Amount> {
        self.0.checked_mul(count).and_then(Amount::from_mills)
    }

    /// Whether this is no money at all.
    pub fn is_zero(self) -> bool {
        self.0 == 0
    }

    /// Parses dollar text: an optional `$`, at least one digit, then optionally a `.` followed by
    /// one to three digits. Accepted: `"20"`, `"20.5"`, `"0.78"`, `"4.155"`, `"$0.78"`.
    ///
    /// Rejected, each with its own [`MoneyError`]: empty text, signs (`+`, `-`), whitespace,
    /// thousands separators (`"1,000.00"`), exponents, any other non-digit, more than three
    /// decimals, a point without digits on both sides (`"."`, `"1."`, `".5"`), and amounts above
    /// [`Amount::MAX`]. Leading zeros are accepted (`"007.50"` is $7.50): they are unambiguous.
    pub fn parse_dollars(text: &str) -> Result<Amount, MoneyError> {
        let digits = text.strip_prefix('$').unwrap_or(text);
        if digits.is_empty() {
            return Err(MoneyError::Empty);
        }
        if let Some(bad) = digits.chars().find(|c| !c.is_ascii_digit() && *c != '.') {
            return Err(match bad {
                '+' | '-' => MoneyError::Signed,
                c if c.is_whitespace() => MoneyError::Whitespace,
                c => MoneyError::InvalidCharacter(c),
            });
        }
        // Only ASCII digits and '.' remain, so every byte index below is a char boundary.
        let (whole, fraction) = match digits.split_once('.') {
            Some((whole, fraction)) => (whole, Some(fraction)),
            None => (digits, None),
        };
        if whole.is_empty() {
            return Err(MoneyError::MissingWholeDigits);
        }
        let mut whole_dollars: u64 = 0;
        for byte in whole.bytes() {
            whole_dollars = whole_dollars
                .checked_mul(10)
                .and_then(|value| value.checked_add(u64::from(byte - b'0')))
                .ok_or(MoneyError::TooLarge)?;
        }
        let mut fraction_mills: u64 = 0;
        if let Some(fraction) = fraction {
            if fraction.contains('.') {
                return Err(MoneyError::InvalidCharacter('.'));
            }
            if fraction.is_empty() {
                return Err(MoneyError::MissingFractionDigits);
            }
            if fraction.len() > MAX_DECIMAL_PLACES {
                return Err(MoneyError::TooManyDecimalPlaces);
            }
            // Right-pad to three digits: ".5" is 500 mills, ".05" is 50.
            let mut place = 100;
            for byte in fraction.bytes() {
                fraction_mills += u64::from(byte - b'0') * place;
                place /= 10;
            }
        }
        whole_dollars
            .checked_mul(MILLS_PER_DOLLAR)
            .and_then(|mills| mills.checked_add(fraction_mills))
            .and_then(Amount::from_mills)
            .ok_or(MoneyError::TooLarge)
    }
}

impl Amount {
    /// Whether this is a whole number of cents (what a check, a bank or a card can pay).
    pub fn is_whole_cents(self) -> bool {
        self.0.is_multiple_of(10)
    }

    /// The amount written out as on a check's legal line: `"One hundred twenty-three and 45/100"`,
    /// `"Zero and 05/100"`. Whole dollars in words, cents as a fraction; `None` when the amount
    /// is not a whole number of cents (a check cannot say a mill).
    pub fn check_words(self) -> Option<String> {
        if !self.is_whole_cents() {
            return None;
        }
        let dollars = self.0 / MILLS_PER_DOLLAR;
        let cents = (self.0 % MILLS_PER_DOLLAR) / 10;
        let mut words = number_words(dollars);
        if let Some(first) = words.get_mut(..1) {
            first.make_ascii_uppercase();
        }
        Some(format!("{words} and {cents:02}/100"))
    }

    /// `"$1,234.56"`: as [`Display`](fmt::Display), with a comma between thousands (for people
    /// to read on a printed item; it does not parse back).
    pub fn with_separators(self) -> String {
        let plain = self.to_string();
        let (int, frac) = plain[1..].split_once('.').unwrap_or((&plain[1..], ""));
        let mut grouped = String::new();
        for (i, digit) in int.chars().enumerate() {
            if i > 0 && (int.len() - i).is_multiple_of(3) {
                grouped.push(',');
            }
            grouped.push(digit);
        }
        format!("${grouped}.{frac}")
    }
}

/// `n` in English words, lower case: "zero", "forty-two", "one million two hundred thousand".
fn number_words(n: u64) -> String {
    const ONES: [&str; 20] = [
        "zero",
        "one",
        "two",
        "three",
        "four",
        "five",
        "six",
        "seven",
        "eight",
        "nine",
        "ten",
        "eleven",
        "twelve",
        "thirteen",
        "fourteen",
        "fifteen",
        "sixteen",
        "seventeen",
        "eighteen",
        "nineteen",
    ];
    const TENS: [&str; 10] = [
        "", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety",
    ];
    const SCALES: [(u64, &str); 4] = [
        (1_000_000_000_000, "trillion"),
        (1_000_000_000, "billion"),
        (1_000_000, "million"),
        (1_000, "thousand"),
    ];
    fn below_thousand(n: u64, out: &mut Vec<String>) {
        let (hundreds, rest) = (n / 100, n % 100);
        if hundreds > 0 {
            out.push(format!("{} hundred", ONES[hundreds as usize]));
        }
        match rest {
            0 => {}
            1..=19 => out.push(ONES[rest as usize].to_owned()),
            _ if rest % 10 == 0 => out.push(TENS[(rest / 10) as usize].to_owned()),
            _ => out.push(format!(
                "{}-{}",
                TENS[(rest / 10) as usize],
                ONES[(rest % 10) as usize]
            )),
        }
    }
    if n == 0 {
        return ONES[0].to_owned();
    }
    let mut out = Vec::new();
    let mut rest = n;
    for (scale, name) in SCALES {
        if rest >= scale {
            below_thousand(rest / scale, &mut out);
            out.push(name.to_owned());
            rest %= scale;
        }
    }
    below_thousand(rest, &mut out);
    out.join(" ")
}

/// `"$0.78"`, `"$20.00"`, `"$4.155"`, `"$0.00"`: always at least two decimals, a third only when
/// the amount is not a whole number of cents. No thousands separators, so the text parses back.
impl fmt::Display for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let dollars = self.0 / MILLS_PER_DOLLAR;
        let mills = self.0 % MILLS_PER_DOLLAR;
        if mills.is_multiple_of(10) {
            write!(f, "${dollars}.{:02}", mills / 10)
        } else {
            write!(f, "${dollars}.{mills:03}")
        }
    }
}

/// Same as [`Amount::parse_dollars`].
impl FromStr for Amount {
    type Err = MoneyError;

    fn from_str(text: &str) -> Result<Amount, MoneyError> {
        Amount::parse_dollars(text)
    }
}

/// Mills to an amount; fails above [`Amount::MAX`].
impl TryFrom<u64> for Amount {
    type Error = MoneyError;

    fn try_from(mills: u64) -> Result<Amount, MoneyError> {
        Amount::from_mills(mills).ok_or(MoneyError::TooLarge)
    }
}

impl From<Amount> for u64 {
    fn from(amount: Amount) -> u64 {
        amount.0
    }
}

/// Why text or a number is not an [`Amount`].
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MoneyError {
    #[error("amount is empty")]
    Empty,
    #[error("amount must not carry a sign (+ or -)")]
    Signed,
    #[error("amount must not contain whitespace")]
    Whitespace,
    #[error(
        "unexpected character {0:?} in amount (write digits with an optional $ and one decimal \
         point, e.g. $4.155)"
    )]
    InvalidCharacter(char),
    #[error("amount needs at least one digit before the decimal point (e.g. 0.50)")]
    MissingWholeDigits,
    #[error("amount needs at least one digit after the decimal point")]
    MissingFractionDigits,
    #[error("amount has more than 3 decimal places")]
    TooManyDecimalPlaces,
    #[error("amount is above the maximum of $1099511627.775")]
    TooLarge,
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse(text: &str) -> Result<u64, MoneyError> {
        Amount::parse_dollars(text).map(Amount::mills)
    }

    #[test]
    fn max_is_the_five_byte_register_limit() {
        assert_eq!(Amount::MAX.mills(), 1_099_511_627_775);
        assert_eq!(Amount::MAX.mills(), (1u64 << 40) - 1);
        assert_eq!(Amount::from_mills(MAX_MILLS), Some(Amount::MAX));
        assert_eq!(Amount::from_mills(MAX_MILLS + 1), None);
        assert_eq!(Amount::from_mills(u64::MAX), None);
        assert_eq!(Amount::default(), Amount::ZERO);
    }

    #[test]
    fn parse_accepts_plain_and_dollar_text() {
        assert_eq!(parse("20"), Ok(20_000));
        assert_eq!(parse("20.5"), Ok(20_500));
        assert_eq!(parse("0.78"), Ok(780));
        assert_eq!(parse("4.155"), Ok(4_155));
        assert_eq!(parse("$0.78"), Ok(780));
        assert_eq!(parse("$0"), Ok(0));
        assert_eq!(parse("0.05"), Ok(50));
        assert_eq!(parse("0.005"), Ok(5));
        assert_eq!(parse("007.50"), Ok(7_500));
        assert_eq!(parse("1099511627.775"), Ok(MAX_MILLS));
    }

    #[test]
    fn parse_rejects_malformed_text_with_specific_errors() {
        assert_eq!(parse(""), Err(MoneyError::Empty));
        assert_eq!(parse("$"), Err(MoneyError::Empty));
        assert_eq!(parse("-1"), Err(MoneyError::Signed));
        assert_eq!(parse("+1"), Err(MoneyError::Signed));
        assert_eq!(parse("$-0.78"), Err(MoneyError::Signed));
        assert_eq!(parse(" 1"), Err(MoneyError::Whitespace));
        assert_eq!(parse("1 "), Err(MoneyError::Whitespace));
        assert_eq!(parse("1\u{a0}0"), Err(MoneyError::Whitespace));
        assert_eq!(parse("$1,000.00"), Err(MoneyError::InvalidCharacter(',')));
        assert_eq!(parse("1e3"), Err(MoneyError::InvalidCharacter('e')));
        assert_eq!(parse("$$1"), Err(MoneyError::InvalidCharacter('$')));
        assert_eq!(parse("1$"), Err(MoneyError::InvalidCharacter('$')));
        assert_eq!(parse("١"), Err(MoneyError::InvalidCharacter('١')));
        assert_eq!(parse("1.2.3"), Err(MoneyError::InvalidCharacter('.')));
        assert_eq!(parse("."), Err(MoneyError::MissingWholeDigits));
        assert_eq!(parse(".5"), Err(MoneyError::MissingWholeDigits));
        assert_eq!(parse("1."), Err(MoneyError::MissingFractionDigits));
        assert_eq!(parse("1.2345"), Err(MoneyError::TooManyDecimalPlaces));
        assert_eq!(parse("0.0000"), Err(MoneyError::TooManyDecimalPlaces));
    }

    #[test]
    fn parse_rejects_amounts_above_max() {
        assert_eq!(parse("1099511627.776"), Err(MoneyError::TooLarge));
        assert_eq!(parse("1099511628"), Err(MoneyError::TooLarge));
        assert_eq!(parse("18446744073709551616"), Err(MoneyError::TooLarge));
        assert_eq!(
            parse("99999999999999999999999999999999.999"),
            Err(MoneyError::TooLarge)
        );
    }

    #[test]
    fn error_messages_are_clear() {
        assert_eq!(
            MoneyError::TooManyDecimalPlaces.to_string(),
            "amount has more than 3 decimal places"
        );
        assert_eq!(
            MoneyError::TooLarge.to_string(),
            format!("amount is above the maximum of {}", Amount::MAX)
        );
    }

    #[test]
    fn display_shows_two_decimals_and_a_third_only_for_fractions_of_a_cent() {
        let show = |mills| Amount::from_mills(mills).map(|a| a.to_string());
        assert_eq!(show(780).as_deref(), Some("$0.78"));
        assert_eq!(show(20_000).as_deref(), Some("$20.00"));
        assert_eq!(show(4_155).as_deref(), Some("$4.155"));
        assert_eq!(show(0).as_deref(), Some("$0.00"));
        assert_eq!(show(5).as_deref(), Some("$0.005"));
        assert_eq!(show(50).as_deref(), Some("$0.05"));
        assert_eq!(show(1_000_500).as_deref(), Some("$1000.50"));
        assert_eq!(show(MAX_MILLS).as_deref(), Some("$1099511627.775"));
    }

    #[test]
    fn from_str_matches_parse_dollars() {
        assert_eq!("$4.155".parse::<Amount>(), Amount::parse_dollars("4.155"));
        assert_eq!(
            "x".parse::<Amount>(),
            Err(MoneyError::InvalidCharacter('x'))
        );
    }

    #[test]
    fn checked_add_stops_at_max_and_checked_sub_at_zero() {
        let one = Amount::from_mills(1).expect("1 mill is in range");
        assert_eq!(Amount::MAX.checked_add(one), None);
        assert_eq!(Amount::MAX.checked_add(Amount::ZERO), Some(Amount::MAX));
        assert_eq!(Amount::ZERO.checked_sub(one), None);
        assert_eq!(one.checked_sub(one), Some(Amount::ZERO));
        assert!(Amount::ZERO.is_zero());
        assert!(!one.is_zero());
        assert_eq!(Amount::MAX.checked_mul(2), None);
        assert_eq!(one.checked_mul(u64::MAX), None);
        assert_eq!(one.checked_mul(3).map(Amount::mills), Some(3));
    }

    #[test]
    fn try_from_u64_rejects_values_above_max() {
        assert_eq!(Amount::try_from(780), Ok(Amount(780)));
        assert_eq!(Amount::try_from(MAX_MILLS + 1), Err(MoneyError::TooLarge));
        assert_eq!(u64::from(Amount(780)), 780);
    }

    proptest! {
        #[test]
        fn display_then_parse_round_trips(mills in 0..=MAX_MILLS) {
            let amount = Amount(mills);
            prop_assert_eq!(Amount::parse_dollars(&amount.to_string()), Ok(amount));
        }

        #[test]
        fn parse_never_panics_on_arbitrary_text(text in any::<String>()) {
            let _ = Amount::parse_dollars(&text);
        }

        #[test]
        fn parse_never_panics_on_money_like_text(text in "[$0-9.,+ -]{0,24}") {
            if let Ok(amount) = Amount::parse_dollars(&text) {
                prop_assert!(amount <= Amount::MAX);
            }
        }

        #[test]
        fn checked_add_and_sub_agree_with_u64(a in 0..=MAX_MILLS, b in 0..=MAX_MILLS) {
            let (x, y) = (Amount(a), Amount(b));
            let sum = a + b; // cannot overflow: both are below 2^40
            prop_assert_eq!(x.checked_add(y).map(Amount::mills), (sum <= MAX_MILLS).then_some(sum));
            prop_assert_eq!(x.checked_sub(y).map(Amount::mills), a.checked_sub(b));
            if let Some(total) = x.checked_add(y) {
                prop_assert_eq!(total.checked_sub(y), Some(x));
            }
        }
    }

    #[test]
    fn check_words_write_dollars_out_and_cents_as_a_fraction() {
        let words = |mills: u64| Amount::from_mills(mills).unwrap().check_words();
        assert_eq!(
            words(123_450).as_deref(),
            Some("One hundred twenty-three and 45/100")
        );
        assert_eq!(words(50).as_deref(), Some("Zero and 05/100"));
        assert_eq!(words(1_000).as_deref(), Some("One and 00/100"));
        assert_eq!(words(40_000).as_deref(), Some("Forty and 00/100"));
        assert_eq!(words(19_990).as_deref(), Some("Nineteen and 99/100"));
        assert_eq!(
            words(1_200_015_000).as_deref(),
            Some("One million two hundred thousand fifteen and 00/100")
        );
        assert_eq!(
            words(MAX_MILLS - MAX_MILLS % 10).as_deref(),
            Some(
                "One billion ninety-nine million five hundred eleven thousand six hundred \
                 twenty-seven and 77/100"
            )
        );
        // A mill is not something a check can say.
        assert_eq!(words(4_155), None);
    }

    #[test]
    fn separators_group_thousands_for_reading() {
        let sep = |mills: u64| Amount::from_mills(mills).unwrap().with_separators();
        assert_eq!(sep(0), "$0.00");
        assert_eq!(sep(999_990), "$999.99");
        assert_eq!(sep(1_234_560), "$1,234.56");
        assert_eq!(sep(1_000_000_005), "$1,000,000.005");
    }
}
