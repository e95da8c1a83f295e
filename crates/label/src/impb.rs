//! The Intelligent Mail package barcode (IMpb): a GS1-128 symbol carrying the destination ZIP
//! (AI 420) and the package identification code (PIC), and the PIC's human-readable form.
//!
//! The PIC is `channel (2) · service type (3) · Mailer ID (9 or 6) · serial (7 or 10) · check (1)`,
//! always 22 digits; the check digit is the GS1 mod-10 over the 21 digits before it. The symbol's
//! data is `FNC1 420 ZIP FNC1 PIC` (AI 420 is variable-length, so a separator FNC1 follows it).
//! rxing's Code 128 writer turns that into modules (all digits: code set C throughout).
//!
//! This module does not decide the service type, Mailer ID or serial: the caller passes them.

use rxing::oned::{Code128Writer, OneDimensionalCodeWriter};

use crate::LabelError;

/// Digits in a package identification code (the tracking number).
pub const PIC_DIGITS: usize = 22;

/// The FNC1 function character, as rxing's Code 128 writer spells it in its input text.
const FNC1: char = '\u{00f1}';

/// Parts of an IMpb, each a string of ASCII digits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Impb {
    /// Destination ZIP: 5 digits, or 9 (ZIP+4), without a hyphen.
    pub zip: String,
    /// Channel application identifier: "92", "93" (commercial) or "94" (online / PC postage).
    pub channel: String,
    /// Service type code, 3 digits.
    pub service_type: String,
    /// Mailer ID: 9 digits (starting with 9) or 6 digits (not starting with 9).
    pub mailer_id: String,
    /// Serial within the Mailer ID: 7 digits with a 9-digit Mailer ID, 10 with a 6-digit one.
    pub serial: String,
}

impl Impb {
    /// Checks every part; returns the 22-digit PIC with its check digit.
    ///
    /// # Errors
    /// [`LabelError::BadBarcode`] naming the part that is wrong.
    pub fn pic(&self) -> Result<String, LabelError> {
        let bad = |what: &str| Err(LabelError::BadBarcode(what.to_owned()));
        if !matches!(self.zip.len(), 5 | 9) || !all_digits(&self.zip) {
            return bad("IMpb ZIP must be 5 or 9 digits");
        }
        if !matches!(self.channel.as_str(), "92" | "93" | "94") {
            return bad("IMpb channel must be 92, 93 or 94");
        }
        if self.service_type.len() != 3 || !all_digits(&self.service_type) {
            return bad("IMpb service type must be 3 digits");
        }
        let serial_len = match (self.mailer_id.len(), self.mailer_id.starts_with('9')) {
            (9, true) => 7,
            (6, false) => 10,
            _ => return bad("IMpb Mailer ID must be 9 digits starting with 9, or 6 digits"),
        };
        if !all_digits(&self.mailer_id) {
            return bad("IMpb Mailer ID must be digits");
        }
        if self.serial.len() != serial_len || !all_digits(&self.serial) {
            return bad("IMpb serial must be 7 digits (9-digit Mailer ID) or 10 (6-digit)");
        }
        let mut pic = format!(
            "{}{}{}{}",
            self.channel, self.service_type, self.mailer_id, self.serial
        );
        let check = mod10_check_digit(&pic)
            .ok_or(LabelError::BadBarcode("IMpb PIC must be digits".to_owned()))?;
        pic.push(char::from(b'0' + check));
        debug_assert_eq!(pic.len(), PIC_DIGITS);
        Ok(pic)
    }

    /// The GS1 element string the symbol carries, in the bracketed human-readable form:
    /// `(420)ZIP(94)…`.
    ///
    /// # Errors
    /// As [`Impb::pic`].
    pub fn element_string(&self) -> Result<String, LabelError> {
        let pic = self.pic()?;
        let (ai, rest) = pic.split_at(2);
        Ok(format!("(420){}({ai}){rest}", self.zip))
    }

    /// The tracking number as printed under the barcode: the PIC in groups of four digits.
    ///
    /// # Errors
    /// As [`Impb::pic`].
    pub fn human_readable(&self) -> Result<String, LabelError> {
        let pic = self.pic()?;
        let groups: Vec<&str> = pic
            .as_bytes()
            .chunks(4)
            .filter_map(|chunk| std::str::from_utf8(chunk).ok())
            .collect();
        Ok(groups.join(" "))
    }

    /// The symbol's modules, left to right (`true` = bar), from the start character to the stop
    /// pattern, without quiet zones.
    ///
    /// # Errors
    /// As [`Impb::pic`]; [`LabelError::Render`] if the encoder fails.
    pub fn modules(&self) -> Result<Vec<bool>, LabelError> {
        let pic = self.pic()?;
        let data = format!("{FNC1}420{}{FNC1}{pic}", self.zip);
        Code128Writer
            .encode_oned(&data)
            .map_err(|e| LabelError::Render(format!("Code 128: {e}")))
    }
}

fn all_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// The GS1 mod-10 check digit of a digit string: weights 3, 1, 3, … from the rightmost digit.
/// `None` if `digits` holds anything but ASCII digits.
pub fn mod10_check_digit(digits: &str) -> Option<u8> {
    let mut sum = 0u32;
    for (i, byte) in digits.bytes().rev().enumerate() {
        if !byte.is_ascii_digit() {
            return None;
        }
        let digit = u32::from(byte - b'0');
        sum += if i % 2 == 0 { 3 * digit } else { digit };
    }
    // `sum % 10` is below 10, so the result is a single digit.
    Some(((10 - sum % 10) % 10) as u8)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // in tests a panic is the failure report
mod tests {
    use super::*;

    fn sample() -> Impb {
        Impb {
            zip: "20260".to_owned(),
            channel: "94".to_owned(),
            service_type: "001".to_owned(),
            mailer_id: "900000001".to_owned(),
            serial: "0000042".to_owned(),
        }
    }

    #[test]
    fn the_check_digit_matches_published_gs1_examples() {
        // GTIN-13 4006381333931 and SSCC 106141411234567897 (GS1 General Specifications).
        assert_eq!(mod10_check_digit("400638133393"), Some(1));
        assert_eq!(mod10_check_digit("10614141123456789"), Some(7));
        assert_eq!(mod10_check_digit("12a"), None);
    }

    #[test]
    fn the_pic_has_22_digits_and_ends_with_its_check_digit() {
        let pic = sample().pic().unwrap();
        assert_eq!(pic.len(), PIC_DIGITS);
        assert!(pic.starts_with("94001900000001"));
        let (body, check) = pic.split_at(21);
        assert_eq!(mod10_check_digit(body), Some(check.as_bytes()[0] - b'0'));
    }

    #[test]
    fn the_human_readable_number_is_grouped_by_four() {
        let text = sample().human_readable().unwrap();
        assert_eq!(text.len(), 22 + 5);
        assert_eq!(text.replace(' ', ""), sample().pic().unwrap());
    }

    #[test]
    fn bad_parts_are_refused() {
        let cases: [fn(&mut Impb); 6] = [
            |i| i.zip = "2026".to_owned(),
            |i| i.zip = "2026O".to_owned(),
            |i| i.channel = "91".to_owned(),
            |i| i.service_type = "01".to_owned(),
            |i| i.mailer_id = "800000001".to_owned(),
            |i| i.serial = "42".to_owned(),
        ];
        for (n, spoil) in cases.iter().enumerate() {
            let mut impb = sample();
            spoil(&mut impb);
            assert!(
                matches!(impb.pic(), Err(LabelError::BadBarcode(_))),
                "case {n}"
            );
        }
    }

    #[test]
    fn the_symbol_starts_in_code_set_c_and_has_code_128_widths() {
        let modules = sample().modules().unwrap();
        // START C = 11010011100; every symbol character is 11 modules, the stop 13.
        let start: Vec<bool> = "11010011100".bytes().map(|b| b == b'1').collect();
        assert_eq!(&modules[..11], &start[..]);
        assert_eq!((modules.len() - 13) % 11, 0);
        // START C, FNC1, 4 pairs for 42020260, FNC1, 11 pairs for the PIC, check, stop.
        assert_eq!(modules.len(), 11 * (1 + 1 + 4 + 1 + 11 + 1) + 13);
    }
}
