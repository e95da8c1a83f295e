//! ZPL II for Zebra-class thermal printers: each page is one `^GF` graphic field holding the
//! page raster (the same pixels as the PNG at that resolution), in ZPL's ASCII compression.
//!
//! Why a graphic and not the printer's own `^BX` DataMatrix and fonts (docs/DECISIONS.md): the
//! graphic is the exact symbol we encoded and checked (base-256, square, every module whole
//! dots), it can be decoded back here without a printer, and every format shows the same page.
//! `^BX` would leave the encodation, symbol size and module placement to the printer's firmware,
//! which no test here can see.
//!
//! `^GFA` data is hexadecimal, two digits per byte, one row of `ceil(width / 8)` bytes after
//! another (bit 7 = leftmost dot, 1 = black). Each row is compressed with ZPL's run-length code:
//! a count (`G`..`Y` = 1..19, `g`..`z` = 20..400 in steps of 20, summed) before a hex digit
//! repeats it; `,` fills the rest of the row with `0`, `!` with `F`; `:` repeats the row above.

use std::fmt::Write as _;

use crate::raster::Canvas;

/// Longest run one count prefix may say (`z` + `Y` = 400 + 19).
const MAX_RUN: usize = 419;

/// A page raster as one ZPL label: `^XA`, print width and length, the `^GF` field, `^XZ`.
pub(crate) fn page_zpl(canvas: &Canvas) -> String {
    let row_bytes = canvas.width.div_ceil(8);
    let total = row_bytes * canvas.height;
    let mut zpl = String::with_capacity(total / 4 + 64);
    // Writing to a String cannot fail: the `let _` below discard an always-Ok result.
    let _ = write!(
        zpl,
        "^XA\n^PW{}\n^LL{}\n^LH0,0\n^FO0,0^GFA,{total},{total},{row_bytes},",
        canvas.width, canvas.height
    );
    let mut previous: Option<String> = None;
    for row in canvas.luma.chunks(canvas.width.max(1)) {
        let hex = row_hex(row, row_bytes);
        if previous.as_deref() == Some(hex.as_str()) {
            zpl.push(':');
        } else {
            compress_row(&hex, &mut zpl);
            previous = Some(hex);
        }
    }
    zpl.push_str("^FS\n^XZ\n");
    zpl
}

/// One raster row as uppercase hex, `row_bytes` bytes, dark pixels (below mid-gray) as 1 bits.
fn row_hex(row: &[u8], row_bytes: usize) -> String {
    const DIGITS: &[u8; 16] = b"0123456789ABCDEF";
    let mut hex = String::with_capacity(2 * row_bytes);
    for byte_index in 0..row_bytes {
        let mut byte = 0u8;
        for bit in 0..8 {
            let dark = row
                .get(byte_index * 8 + bit)
                .is_some_and(|luma| *luma < 128);
            if dark {
                byte |= 0x80 >> bit;
            }
        }
        hex.push(char::from(DIGITS[usize::from(byte >> 4)]));
        hex.push(char::from(DIGITS[usize::from(byte & 0x0F)]));
    }
    hex
}

/// Appends one hex row in ZPL ASCII compression.
fn compress_row(hex: &str, out: &mut String) {
    let bytes = hex.as_bytes();
    // A trailing run of 0 or F becomes `,` or `!`.
    let (body, tail) = match bytes.last() {
        Some(&last @ (b'0' | b'F')) => {
            let run = bytes.iter().rev().take_while(|b| **b == last).count();
            (
                &bytes[..bytes.len() - run],
                Some(if last == b'0' { ',' } else { '!' }),
            )
        }
        _ => (bytes, None),
    };
    let mut i = 0;
    while i < body.len() {
        let digit = body[i];
        let run = body[i..].iter().take_while(|b| **b == digit).count();
        let mut left = run;
        while left > 0 {
            let chunk = left.min(MAX_RUN);
            if chunk > 1 {
                push_count(chunk, out);
            }
            out.push(char::from(digit));
            left -= chunk;
        }
        i += run;
    }
    if let Some(fill) = tail {
        out.push(fill);
    }
}

/// The count prefix for 2..=419 repeats.
fn push_count(count: usize, out: &mut String) {
    let (twenties, ones) = (count / 20, count % 20);
    if twenties > 0 {
        // 1..=20 twenties: 'g'..='z'.
        out.push(char::from(b'g' + (twenties - 1) as u8));
    }
    if ones > 0 {
        // 1..=19: 'G'..='Y'.
        out.push(char::from(b'G' + (ones - 1) as u8));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compressed(hex: &str) -> String {
        let mut out = String::new();
        compress_row(hex, &mut out);
        out
    }

    #[test]
    fn runs_use_the_zpl_count_letters() {
        assert_eq!(compressed("A"), "A");
        assert_eq!(compressed("AA"), "HA");
        assert_eq!(compressed(&"B".repeat(327)), "vMB");
        assert_eq!(compressed(&"C".repeat(20)), "gC");
        assert_eq!(compressed(&"C".repeat(419 + 2)), "zYCHC");
    }

    #[test]
    fn trailing_zeros_and_fs_become_fill_marks() {
        assert_eq!(compressed("A1000"), "A1,");
        assert_eq!(compressed("0000"), ",");
        assert_eq!(compressed("7FFF"), "7!");
    }

    #[test]
    fn the_leftmost_dot_is_the_high_bit() {
        assert_eq!(
            row_hex(&[0, 255, 255, 255, 255, 255, 255, 255, 0], 2),
            "8080"
        );
    }
}
