//! The label text: which characters are allowed, their font8x8 bitmaps (PNG) and their
//! Helvetica advance widths (PDF).
//!
//! Text is limited to printable ASCII. Both fonts cover it completely and identically (the PDF
//! uses WinAnsiEncoding, where `'` and `` ` `` are the straight quote and the grave accent, like
//! ASCII), so the PNG and the PDF always show the same characters and nothing is replaced
//! silently: anything else is refused.

use font8x8::legacy::BASIC_LEGACY;

use crate::{LabelError, MAX_LINE_CHARS, MAX_LINES};

/// Checks every limit on the label text.
pub(crate) fn validate_lines(lines: &[String]) -> Result<(), LabelError> {
    if lines.len() > MAX_LINES {
        return Err(LabelError::BadText(format!(
            "{} lines, at most {MAX_LINES}",
            lines.len()
        )));
    }
    validate_text(lines, MAX_LINE_CHARS)
}

/// Checks that every line is printable ASCII of at most `max_chars` characters.
pub(crate) fn validate_text(lines: &[String], max_chars: usize) -> Result<(), LabelError> {
    for (index, line) in lines.iter().enumerate() {
        let line_number = index + 1;
        if let Some(ch) = line.chars().find(|ch| !is_printable_ascii(*ch)) {
            return Err(LabelError::BadText(format!(
                "line {line_number} holds {ch:?}; only printable ASCII can be printed"
            )));
        }
        // Printable ASCII: one byte per character.
        if line.len() > max_chars {
            return Err(LabelError::BadText(format!(
                "line {line_number} has {} characters, at most {max_chars}",
                line.len()
            )));
        }
    }
    Ok(())
}

fn is_printable_ascii(ch: char) -> bool {
    (' '..='~').contains(&ch)
}

/// Rows of pixels in a font8x8 glyph cell (the last row is for descenders).
pub(crate) const GLYPH_CELL: usize = 8;

/// Rows of a font8x8 capital letter (rows 0..=6 of the cell).
pub(crate) const GLYPH_CAP_ROWS: usize = 7;

/// The 8×8 bitmap of an ASCII byte: 8 rows top to bottom, bit 0 is the leftmost pixel.
pub(crate) fn glyph(byte: u8) -> [u8; 8] {
    BASIC_LEGACY
        .get(usize::from(byte))
        .copied()
        .unwrap_or([0; 8])
}

/// Helvetica cap height in thousandths of the font size (from the Adobe AFM).
pub(crate) const HELVETICA_CAP_HEIGHT: f32 = 718.0;

/// Helvetica descender depth in thousandths of the font size (from the Adobe AFM).
pub(crate) const HELVETICA_DESCENT: f32 = 207.0;

/// Helvetica advance widths for ' '..='~' under WinAnsiEncoding, in thousandths of the font
/// size (from the Adobe AFM of the base-14 font).
const HELVETICA_WIDTHS: [u16; 95] = [
    278, 278, 355, 556, 556, 889, 667, 191, 333, 333, 389, 584, 278, 333, 278,
    278, // ' '..'/'
    556, 556, 556, 556, 556, 556, 556, 556, 556, 556, // '0'..'9'
    278, 278, 584, 584, 584, 556, 1015, // ':'..'@'
    667, 667, 722, 722, 667, 611, 778, 722, 278, 500, 667, 556, 833, // 'A'..'M'
    722, 778, 667, 778, 722, 667, 611, 722, 667, 944, 667, 667, 611, // 'N'..'Z'
    278, 278, 278, 469, 556, 333, // '['..'`'
    556, 556, 500, 556, 556, 278, 556, 556, 222, 222, 500, 222, 833, // 'a'..'m'
    556, 556, 556, 556, 333, 500, 278, 556, 500, 722, 500, 500, 500, // 'n'..'z'
    334, 260, 334, 584, // '{'..'~'
];

/// Width of a validated line in Helvetica, in thousandths of the font size.
pub(crate) fn helvetica_width(line: &str) -> f32 {
    line.bytes()
        .map(|byte| {
            usize::from(byte)
                .checked_sub(0x20)
                .and_then(|i| HELVETICA_WIDTHS.get(i))
                .copied()
                // Not reached for validated text; a full em is the safe over-estimate.
                .unwrap_or(1000)
        })
        .map(f32::from)
        .sum()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // in tests a panic is the failure report
mod tests {
    use super::*;

    #[test]
    fn validate_lines_accepts_postage_text() {
        validate_lines(&crate::sample::postage_lines()).unwrap();
    }

    #[test]
    fn validate_lines_refuses_non_ascii_and_control_characters() {
        assert!(validate_lines(&["caf\u{e9}".to_owned()]).is_err());
        assert!(validate_lines(&["tab\there".to_owned()]).is_err());
    }

    #[test]
    fn validate_lines_refuses_too_many_or_too_long_lines() {
        assert!(validate_lines(&vec!["x".to_owned(); MAX_LINES + 1]).is_err());
        assert!(validate_lines(&["x".repeat(MAX_LINE_CHARS + 1)]).is_err());
        validate_lines(&vec!["x".repeat(MAX_LINE_CHARS); MAX_LINES]).unwrap();
    }

    #[test]
    fn helvetica_width_uses_afm_values() {
        assert_eq!(helvetica_width("A"), 667.0);
        assert_eq!(helvetica_width("i i"), 222.0 + 278.0 + 222.0);
        assert_eq!(helvetica_width("~"), 584.0);
    }

    #[test]
    fn glyph_of_capital_a_is_drawn_and_space_is_blank() {
        assert_ne!(glyph(b'A'), [0; 8]);
        assert_eq!(glyph(b' '), [0; 8]);
    }
}
