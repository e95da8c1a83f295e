//! Barcode and label rendering: DataMatrix, PNG, PDF; and decoding a label back to item bytes.
//!
//! This crate owns the picture of a printed item: the DataMatrix ECC200 symbol that carries the
//! item bytes (base-256 encodation, always square), the human-readable lines printed next to it,
//! and the two output formats (a PNG raster at a given resolution and a one-page vector PDF). It
//! also reads a label back: it finds the symbol in an image and returns its exact bytes.
//!
//! It must never interpret the bytes it carries (parsing, signing and verifying items belong to
//! `stampline-items`), never decide what the text says (the caller passes finished lines), never
//! do I/O, and never panic on any input — an image from a scanner is untrusted data.
//!
//! Map of the code:
//! - [`symbol`]: bytes → [`Symbol`] (the module grid), with a decode-back check.
//! - `text`: which characters a label may carry, the font8x8 bitmaps and the Helvetica metrics.
//! - [`render_png`] / [`render_pdf`]: the label layout in pixels and in points.
//! - [`decode_png`] / [`decode_luma`]: image → symbol (rxing) → bytes (`datamatrix` decodation).

mod decode;
mod pdf;
mod raster;
pub mod symbol;
mod text;

pub use decode::{decode_luma, decode_png};
pub use pdf::{PDF_FONT_PT, PDF_MODULE_PT, render_pdf};
pub use raster::render_png;
pub use symbol::{Symbol, datamatrix};

/// White modules kept clear on every side of the symbol. ISO/IEC 16022 asks for at least one
/// module; two give printers that bleed and readers that crop some margin, and cost only
/// 4 modules (≈ 2.4 mm) of width.
pub const QUIET_ZONE_MODULES: u32 = 2;

/// Resolution used when the caller has no printer-specific value (a common laser/inkjet value).
pub const DEFAULT_DPI: u32 = 300;

/// Lowest resolution [`render_png`] accepts: below it a module would be under 2 pixels.
pub const MIN_DPI: u32 = 100;

/// Highest resolution [`render_png`] accepts: bounds the image to a few tens of megabytes.
pub const MAX_DPI: u32 = 1200;

/// Most item bytes one symbol can hold: the largest square ECC200 symbol (144×144) has 1558 data
/// codewords, of which base-256 encodation spends one on the latch and two on the length.
pub const MAX_DATA_BYTES: usize = 1555;

/// Target size of one barcode module in micrometres. Rounded to whole pixels this gives 0.50 mm
/// at 203 dpi (4 px), 0.59 mm at 300 dpi (7 px) and 0.55 mm at 600 dpi (13 px): a 44×44 symbol
/// is about one inch wide.
pub const MODULE_TARGET_UM: u32 = 560;

/// Target cap height of the label text in micrometres (the 7-pixel capitals of font8x8 are
/// scaled by a whole factor: 2.6 mm at 203 dpi, 3.0 mm at 300 dpi, 2.7 mm at 600 dpi).
pub const CAP_HEIGHT_TARGET_UM: u32 = 2750;

/// Most text lines a label carries.
pub const MAX_LINES: usize = 10;

/// Most characters in one text line.
pub const MAX_LINE_CHARS: usize = 40;

/// Largest image (in pixels, width × height) the decoders accept: a US Letter page at 600 dpi
/// (5100 × 6600 = 33.7 M) fits. Larger inputs are refused before any big allocation.
pub const MAX_DECODE_PIXELS: u64 = 36_000_000;

/// What goes next to the barcode: the human-readable lines (e.g. "US POSTAGE", "$0.78",
/// "FIRST-CLASS MAIL", "11/29/2026", "FROM 02134", "ID# SL0100001234"), top to bottom.
///
/// Lines may hold printable ASCII only (`' '..='~'`), at most [`MAX_LINE_CHARS`] each and at
/// most [`MAX_LINES`] of them. `dpi` is used by [`render_png`] only; the PDF is resolution-free.
#[derive(Clone, Debug)]
pub struct LabelSpec<'a> {
    /// The item bytes to carry in the DataMatrix, exactly.
    pub item: &'a [u8],
    /// Text lines printed to the right of the symbol, top to bottom.
    pub lines: Vec<String>,
    /// Printer resolution for the PNG, in dots per inch ([`MIN_DPI`]..=[`MAX_DPI`]).
    pub dpi: u32,
}

/// Everything that can go wrong while rendering or reading a label.
#[derive(Debug, thiserror::Error)]
pub enum LabelError {
    /// The item does not fit the largest square DataMatrix symbol.
    #[error("item of {len} bytes does not fit a square DataMatrix symbol (at most {max} bytes)")]
    DataTooLarge {
        /// Length of the item that was refused.
        len: usize,
        /// [`MAX_DATA_BYTES`].
        max: usize,
    },
    /// No DataMatrix symbol could be found and read in the image.
    #[error("no readable DataMatrix symbol in the image")]
    NoBarcode,
    /// The input is not a usable image (not a PNG, corrupt, too large, wrong buffer size).
    #[error("bad image: {0}")]
    BadImage(String),
    /// A symbol was read but its content is not a plain byte string (it uses an ECI, say).
    #[error("symbol content is not a plain byte string: {0}")]
    BadContent(String),
    /// The requested resolution is outside the supported range.
    #[error("resolution {dpi} dpi is outside {min}..={max} dpi")]
    BadDpi {
        /// The resolution asked for.
        dpi: u32,
        /// [`MIN_DPI`].
        min: u32,
        /// [`MAX_DPI`].
        max: u32,
    },
    /// The label text breaks a limit or holds a character the label fonts cannot print.
    #[error("label text: {0}")]
    BadText(String),
    /// Producing the output failed (an encoder error, or a self-check that did not hold).
    #[error("rendering failed: {0}")]
    Render(String),
}
