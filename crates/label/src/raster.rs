//! The PNG label: symbol (with quiet zone) at the left, text lines at its right.
//!
//! Everything is measured in whole pixels so that every module is an integer number of pixels
//! (no resampling blur at the printer) and the text is font8x8 scaled by an integer factor.
//! Layout, at resolution `dpi`:
//!
//! ```text
//! ┌──────────────────────────────────────────────────────────┐
//! │ quiet │ symbol │ quiet │ gap │ text lines │ margin        │
//! └──────────────────────────────────────────────────────────┘
//! ```
//! The symbol block and the text block are each centred vertically; the margin above and below
//! the text equals the quiet zone. The image is 8-bit grayscale, only 0 and 255, with a `pHYs`
//! chunk giving `dpi` so that printing software places it at its physical size.

use image::{ExtendedColorType, ImageEncoder, codecs::png::PngEncoder};

use crate::{
    CAP_HEIGHT_TARGET_UM, LabelError, LabelSpec, MAX_DPI, MIN_DPI, MODULE_TARGET_UM,
    QUIET_ZONE_MODULES, Symbol, datamatrix,
    page::{Anchor, Mark, Page, TEXT_EM_BUDGET},
    text::{GLYPH_CAP_ROWS, GLYPH_CELL, glyph, validate_lines},
};

const UM_PER_INCH: u64 = 25_400;

/// White space between the quiet zone and the text, in micrometres.
const TEXT_GAP_UM: u64 = 1_500;

/// Extra rows between text lines, in font pixels (before scaling): lines sit 11 font pixels apart.
const LINE_GAP_ROWS: usize = 3;

const WHITE: u8 = 255;
const BLACK: u8 = 0;

/// Pixel measures of a label at one resolution.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PixelMetrics {
    /// Pixels per barcode module.
    pub module_px: usize,
    /// Pixels per font8x8 pixel.
    pub text_scale: usize,
    /// White pixels between the quiet zone and the text.
    pub gap_px: usize,
}

impl PixelMetrics {
    pub(crate) fn for_dpi(dpi: u32) -> Result<Self, LabelError> {
        if !(MIN_DPI..=MAX_DPI).contains(&dpi) {
            return Err(LabelError::BadDpi {
                dpi,
                min: MIN_DPI,
                max: MAX_DPI,
            });
        }
        let dpi = u64::from(dpi);
        let round_div = |num: u64, den: u64| (num + den / 2) / den;
        let module_px = round_div(dpi * u64::from(MODULE_TARGET_UM), UM_PER_INCH).max(1);
        let text_scale = round_div(
            dpi * u64::from(CAP_HEIGHT_TARGET_UM),
            UM_PER_INCH * GLYPH_CAP_ROWS as u64,
        )
        .max(1);
        let gap_px = round_div(dpi * TEXT_GAP_UM, UM_PER_INCH);
        // All three are below a few hundred for dpi <= MAX_DPI: the casts cannot truncate.
        Ok(Self {
            module_px: module_px as usize,
            text_scale: text_scale as usize,
            gap_px: gap_px as usize,
        })
    }
}

/// A grayscale pixel buffer, white to start with.
pub(crate) struct Canvas {
    pub(crate) width: usize,
    pub(crate) height: usize,
    /// Row-major, one byte per pixel, 0 = black, 255 = white.
    pub(crate) luma: Vec<u8>,
}

impl Canvas {
    fn new(width: usize, height: usize) -> Self {
        Self {
            width,
            height,
            luma: vec![WHITE; width * height],
        }
    }

    /// Paints a black rectangle, clipped to the canvas.
    fn fill(&mut self, x: usize, y: usize, w: usize, h: usize) {
        let x_end = (x + w).min(self.width);
        for row in y..(y + h).min(self.height) {
            let start = row * self.width;
            if let Some(pixels) = self.luma.get_mut(start + x.min(x_end)..start + x_end) {
                pixels.fill(BLACK);
            }
        }
    }

    fn draw_symbol(&mut self, symbol: &Symbol, x0: usize, y0: usize, module_px: usize) {
        for y in 0..symbol.size() {
            for (x, len) in symbol.dark_runs(y) {
                self.fill(
                    x0 + x * module_px,
                    y0 + y * module_px,
                    len * module_px,
                    module_px,
                );
            }
        }
    }

    fn draw_text(&mut self, line: &str, x0: usize, y0: usize, scale: usize) {
        for (i, byte) in line.bytes().enumerate() {
            let cell_x = x0 + i * GLYPH_CELL * scale;
            for (row, bits) in glyph(byte).iter().enumerate() {
                for col in 0..GLYPH_CELL {
                    if bits & (1 << col) != 0 {
                        self.fill(cell_x + col * scale, y0 + row * scale, scale, scale);
                    }
                }
            }
        }
    }
}

/// A PNG indicium label: the DataMatrix (with a quiet zone of [`QUIET_ZONE_MODULES`], each module
/// a whole number of pixels close to [`MODULE_TARGET_UM`](crate::MODULE_TARGET_UM)) at the left
/// and the text lines at its right, black on white, 8-bit grayscale.
///
/// At 300 dpi a 126-byte postage item with the six usual lines gives a 1008 × 343 pixel image
/// (3.36 in × 1.14 in): 7-pixel modules (a 44×44 symbol is 1.03 in wide) and 5× font8x8 text
/// (capitals 35 px = 3.0 mm high).
///
/// # Errors
/// [`LabelError::DataTooLarge`], [`LabelError::BadDpi`], [`LabelError::BadText`], or
/// [`LabelError::Render`] if PNG encoding fails.
pub fn render_png(spec: &LabelSpec) -> Result<Vec<u8>, LabelError> {
    let metrics = PixelMetrics::for_dpi(spec.dpi)?;
    validate_lines(&spec.lines)?;
    let symbol = datamatrix(spec.item)?;

    let module_px = metrics.module_px;
    let quiet_px = QUIET_ZONE_MODULES as usize * module_px;
    let symbol_block = symbol.size() * module_px + 2 * quiet_px;

    let scale = metrics.text_scale;
    let line_pitch = (GLYPH_CELL + LINE_GAP_ROWS) * scale;
    let longest = spec.lines.iter().map(String::len).max().unwrap_or(0);
    let (text_width, text_height) = match spec.lines.len() {
        0 => (0, 0),
        n => (
            metrics.gap_px + longest * GLYPH_CELL * scale + quiet_px,
            (n - 1) * line_pitch + GLYPH_CELL * scale,
        ),
    };
    let width = symbol_block + text_width;
    let height = symbol_block.max(text_height + 2 * quiet_px);

    let mut canvas = Canvas::new(width, height);
    let symbol_top = (height - symbol_block) / 2 + quiet_px;
    canvas.draw_symbol(&symbol, quiet_px, symbol_top, module_px);
    let text_left = symbol_block + metrics.gap_px;
    let text_top = (height - text_height) / 2;
    for (i, line) in spec.lines.iter().enumerate() {
        canvas.draw_text(line, text_left, text_top + i * line_pitch, scale);
    }

    encode_png(&canvas, spec.dpi)
}

/// Most pixels a page raster may have: US Letter at [`MAX_DPI`] (10200 × 13200).
const MAX_PAGE_PIXELS: usize = 10_200 * 13_200;

/// Pixels per IMpb bar module at `dpi`: the fewest that make at least 13 mil (3 at 203 dpi,
/// 4 at 300, 8 at 600).
pub(crate) fn bar_module_px(dpi: u32) -> usize {
    (dpi as usize * 13).div_ceil(1000).max(1)
}

/// Pixels per font8x8 pixel for text of `size_pt`: the largest whole scale whose 8-pixel advance
/// stays within [`TEXT_EM_BUDGET`] em, at least 1.
pub(crate) fn text_scale(size_pt: f32, dpi: u32) -> usize {
    let em_px = size_pt * dpi as f32 / 72.0;
    // Non-negative and small (a few hundred at most): the cast cannot truncate.
    ((TEXT_EM_BUDGET * em_px / GLYPH_CELL as f32).floor() as usize).max(1)
}

/// Draws a laid-out page at `dpi`: every module and bar a whole number of pixels, positions
/// rounded to the nearest pixel.
pub(crate) fn rasterize(page: &Page, dpi: u32) -> Result<Canvas, LabelError> {
    let metrics = PixelMetrics::for_dpi(dpi)?;
    let scale = dpi as f32 / 72.0;
    // Page coordinates are small and non-negative: the casts cannot truncate.
    let px = |pt: f32| (pt.max(0.0) * scale).round() as usize;
    let (width, height) = (px(page.width), px(page.height));
    if width * height > MAX_PAGE_PIXELS {
        return Err(LabelError::Render(format!(
            "page of {width}x{height} pixels is over the limit"
        )));
    }
    let mut canvas = Canvas::new(width, height);
    for mark in &page.marks {
        match mark {
            Mark::DataMatrix { x, y, symbol } => {
                let quiet = QUIET_ZONE_MODULES as usize * metrics.module_px;
                canvas.draw_symbol(symbol, px(*x) + quiet, px(*y) + quiet, metrics.module_px);
            }
            Mark::Bars {
                center_x,
                y,
                height,
                modules,
            } => {
                let module = bar_module_px(dpi);
                let bars = modules.len() * module;
                let quiet = crate::page::BAR_QUIET_MODULES * module;
                let left = px(*center_x)
                    .checked_sub(bars / 2)
                    .filter(|left| *left >= quiet);
                let Some(left) = left.filter(|left| left + bars + quiet <= width) else {
                    return Err(LabelError::Render(format!(
                        "a {}-module barcode does not fit {width} pixels at {dpi} dpi",
                        modules.len()
                    )));
                };
                let (top, bar_height) = (px(*y), px(*y + *height) - px(*y));
                let mut i = 0;
                while i < modules.len() {
                    if modules.get(i) == Some(&true) {
                        let start = i;
                        while modules.get(i) == Some(&true) {
                            i += 1;
                        }
                        canvas.fill(left + start * module, top, (i - start) * module, bar_height);
                    } else {
                        i += 1;
                    }
                }
            }
            Mark::Rect { x, y, w, h } => {
                let (left, top) = (px(*x), px(*y));
                let w = (px(*x + *w) - left).max(1);
                let h = (px(*y + *h) - top).max(1);
                canvas.fill(left, top, w, h);
            }
            Mark::Text {
                x,
                y,
                size,
                anchor,
                text,
            } => {
                let scale = text_scale(*size, dpi);
                let left = match anchor {
                    Anchor::Left => px(*x),
                    Anchor::Center => px(*x).saturating_sub(text.len() * GLYPH_CELL * scale / 2),
                };
                canvas.draw_text(text, left, px(*y), scale);
            }
        }
    }
    Ok(canvas)
}

/// A laid-out page as a PNG at `dpi`.
pub(crate) fn page_png(page: &Page, dpi: u32) -> Result<Vec<u8>, LabelError> {
    encode_png(&rasterize(page, dpi)?, dpi)
}

pub(crate) fn encode_png(canvas: &Canvas, dpi: u32) -> Result<Vec<u8>, LabelError> {
    let too_big = |_| LabelError::Render("label larger than a PNG can hold".to_owned());
    let width = u32::try_from(canvas.width).map_err(too_big)?;
    let height = u32::try_from(canvas.height).map_err(too_big)?;
    let mut png = Vec::new();
    PngEncoder::new(&mut png)
        .write_image(&canvas.luma, width, height, ExtendedColorType::L8)
        .map_err(|e| LabelError::Render(format!("PNG encoding: {e}")))?;
    insert_phys(&mut png, dpi)?;
    Ok(png)
}

/// Length of the PNG signature plus the IHDR chunk, which always comes first.
const SIGNATURE_AND_IHDR_LEN: usize = 8 + 4 + 4 + 13 + 4;

/// Inserts a `pHYs` chunk (pixels per metre) right after IHDR; the `image` crate writes none.
fn insert_phys(png: &mut Vec<u8>, dpi: u32) -> Result<(), LabelError> {
    if png.get(12..16) != Some(b"IHDR".as_slice()) || png.len() < SIGNATURE_AND_IHDR_LEN {
        return Err(LabelError::Render(
            "PNG encoder output does not start with IHDR".to_owned(),
        ));
    }
    // dpi <= MAX_DPI, so pixels per metre (≈ 39.37 × dpi) fits in u32 with room to spare.
    let per_metre = ((u64::from(dpi) * 1_000_000 + UM_PER_INCH / 2) / UM_PER_INCH) as u32;
    let mut body = Vec::with_capacity(4 + 9);
    body.extend_from_slice(b"pHYs");
    body.extend_from_slice(&per_metre.to_be_bytes());
    body.extend_from_slice(&per_metre.to_be_bytes());
    body.push(1); // unit: metre
    let mut chunk = Vec::with_capacity(4 + body.len() + 4);
    chunk.extend_from_slice(&9u32.to_be_bytes());
    chunk.extend_from_slice(&body);
    chunk.extend_from_slice(&crc32(&body).to_be_bytes());
    png.splice(
        SIGNATURE_AND_IHDR_LEN..SIGNATURE_AND_IHDR_LEN,
        chunk.iter().copied(),
    );
    Ok(())
}

/// CRC-32 (ISO-HDLC, as PNG chunks use), bit by bit: one 13-byte chunk per label.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for byte in bytes {
        crc ^= u32::from(*byte);
        for _ in 0..8 {
            let mask = (crc & 1).wrapping_neg();
            crc = (crc >> 1) ^ (0xEDB8_8320 & mask);
        }
    }
    !crc
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // in tests a panic is the failure report
mod tests {
    use super::*;

    #[test]
    fn crc32_matches_the_reference_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn modules_are_half_a_millimetre_or_a_little_more_at_common_resolutions() {
        for (dpi, module_px) in [(203, 4), (300, 7), (600, 13)] {
            let metrics = PixelMetrics::for_dpi(dpi).unwrap();
            assert_eq!(metrics.module_px, module_px, "{dpi} dpi");
            let module_mm = metrics.module_px as f64 * 25.4 / f64::from(dpi);
            assert!(
                (0.5..=0.6).contains(&module_mm),
                "{dpi} dpi: {module_mm} mm"
            );
        }
    }

    #[test]
    fn text_cap_height_is_between_two_and_a_half_and_three_millimetres() {
        for dpi in [203, 300, 600] {
            let metrics = PixelMetrics::for_dpi(dpi).unwrap();
            let cap_mm = (GLYPH_CAP_ROWS * metrics.text_scale) as f64 * 25.4 / f64::from(dpi);
            assert!((2.5..=3.0).contains(&cap_mm), "{dpi} dpi: {cap_mm} mm");
        }
    }

    #[test]
    fn resolutions_outside_the_supported_range_are_refused() {
        assert!(matches!(
            PixelMetrics::for_dpi(MIN_DPI - 1),
            Err(LabelError::BadDpi { .. })
        ));
        assert!(matches!(
            PixelMetrics::for_dpi(MAX_DPI + 1),
            Err(LabelError::BadDpi { .. })
        ));
    }
}
