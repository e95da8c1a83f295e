//! Image → DataMatrix → exact item bytes.
//!
//! rxing finds the symbol, samples its modules and corrects errors; its result carries the
//! corrected data codewords (`getRawBytes`). Those are turned into bytes by the `datamatrix`
//! crate's decodation, which is byte-native for every ECC200 encodation (ASCII, C40, Text, X12,
//! EDIFACT, base-256, and mixtures of them).
//!
//! rxing's own text result is deliberately not used: it maps bytes to Latin-1 characters, which
//! works for a symbol in base-256 alone, but when a base-256 segment holding bytes above 0x7F is
//! followed by ASCII-mode upper-shifted bytes it returns an empty string — silent data loss
//! (see the test `symbols_in_other_encodations_decode_to_their_exact_bytes`). A symbol with an
//! ECI (text in a declared character set) is not an item and is refused.
//!
//! Images are untrusted input: sizes are checked before allocation, and the decoder calls run
//! under `catch_unwind` because rxing is a large port of Java code whose every path we cannot
//! prove panic-free; a panic there becomes [`LabelError::NoBarcode`].

use std::{
    io::Cursor,
    panic::{AssertUnwindSafe, catch_unwind},
};

use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader, Limits};
use rxing::{BarcodeFormat, DecodeHints};

use crate::{LabelError, MAX_DECODE_PIXELS};

/// Most bytes the PNG decoder may allocate at once (the decoded image included): an RGBA8 image
/// of [`MAX_DECODE_PIXELS`] pixels, plus room for the decoder's own buffers.
const MAX_DECODE_ALLOC_BYTES: u64 = 4 * MAX_DECODE_PIXELS + 64 * 1024 * 1024;

/// Find and decode the (single) DataMatrix in a PNG image and return its exact bytes. Any colour
/// type and bit depth is accepted; transparent pixels count as white.
///
/// # Errors
/// [`LabelError::BadImage`] if `png` is not a decodable PNG of at most [`MAX_DECODE_PIXELS`];
/// [`LabelError::NoBarcode`] if no symbol is found; [`LabelError::BadContent`] if the symbol's
/// content is not a byte string.
pub fn decode_png(png: &[u8]) -> Result<Vec<u8>, LabelError> {
    let bad = |e: image::ImageError| LabelError::BadImage(e.to_string());
    let mut reader = ImageReader::with_format(Cursor::new(png), ImageFormat::Png);
    let mut limits = Limits::default();
    limits.max_alloc = Some(MAX_DECODE_ALLOC_BYTES);
    reader.limits(limits);
    let decoder = reader.into_decoder().map_err(bad)?;
    // Checked from the header, before the pixels are allocated.
    let (width, height) = decoder.dimensions();
    check_pixel_count(width, height)?;
    let image = DynamicImage::from_decoder(decoder).map_err(bad)?;
    let luma = luma_on_white(image);
    decode_luma(width, height, &luma)
}

/// Same as [`decode_png`] from an already-decoded grayscale image: `width × height` luma bytes,
/// row-major, 0 = black.
///
/// # Errors
/// [`LabelError::BadImage`] if the buffer does not hold exactly `width × height` bytes or the
/// image is empty or larger than [`MAX_DECODE_PIXELS`]; otherwise as [`decode_png`].
pub fn decode_luma(width: u32, height: u32, luma: &[u8]) -> Result<Vec<u8>, LabelError> {
    let pixels = check_pixel_count(width, height)?;
    if luma.len() as u64 != pixels {
        return Err(LabelError::BadImage(format!(
            "{width}x{height} image needs {pixels} luma bytes, got {}",
            luma.len()
        )));
    }
    let mut hints = DecodeHints {
        TryHarder: Some(true),
        ..DecodeHints::default()
    };
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        let result = rxing::helpers::detect_in_luma_slice_with_hints(
            luma,
            width,
            height,
            Some(BarcodeFormat::DATA_MATRIX),
            &mut hints,
        )
        .ok()?;
        if *result.getBarcodeFormat() != BarcodeFormat::DATA_MATRIX {
            return None;
        }
        Some(datamatrix::data::decode_data(result.getRawBytes()))
    }));
    match outcome {
        Ok(Some(Ok(bytes))) => Ok(bytes),
        Ok(Some(Err(e))) => Err(LabelError::BadContent(format!("{e:?}"))),
        // The input was checked above, so every failure (not found, checksum, format, a
        // panic) means the same: no symbol we can read in this image.
        Ok(None) | Err(_) => Err(LabelError::NoBarcode),
    }
}

/// Refuses empty and oversized images; returns the pixel count.
fn check_pixel_count(width: u32, height: u32) -> Result<u64, LabelError> {
    let pixels = u64::from(width) * u64::from(height);
    if pixels == 0 {
        return Err(LabelError::BadImage(format!(
            "empty {width}x{height} image"
        )));
    }
    if pixels > MAX_DECODE_PIXELS {
        return Err(LabelError::BadImage(format!(
            "{width}x{height} image has more than {MAX_DECODE_PIXELS} pixels"
        )));
    }
    Ok(pixels)
}

/// Grayscale bytes of an image, with any transparency composited over white.
fn luma_on_white(image: DynamicImage) -> Vec<u8> {
    if !image.color().has_alpha() {
        return image.into_luma8().into_raw();
    }
    image
        .into_luma_alpha8()
        .pixels()
        .map(|pixel| {
            let [luma, alpha] = pixel.0;
            let (luma, alpha) = (u16::from(luma), u16::from(alpha));
            // luma·α + 255·(1 − α), rounded; at most 255, so the cast cannot truncate.
            ((luma * alpha + 255 * (255 - alpha) + 127) / 255) as u8
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // in tests a panic is the failure report
mod tests {
    use super::*;

    #[test]
    fn decode_luma_refuses_a_buffer_of_the_wrong_size() {
        assert!(matches!(
            decode_luma(10, 10, &[255; 99]),
            Err(LabelError::BadImage(_))
        ));
        assert!(matches!(
            decode_luma(0, 10, &[]),
            Err(LabelError::BadImage(_))
        ));
    }

    #[test]
    fn transparent_pixels_count_as_white() {
        let image = DynamicImage::ImageLumaA8(
            image::ImageBuffer::from_raw(2, 1, vec![0, 0, 0, 255]).unwrap(),
        );
        assert_eq!(luma_on_white(image), vec![255, 0]);
    }
}
