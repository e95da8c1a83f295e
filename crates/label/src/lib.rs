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
//! - [`render_png`] / [`render_pdf`]: the bare indicium (symbol and text, sized to its content).
//! - [`page`]: the layouts (#10 envelope, 4×6 label, sheet of indicia) as marks in points;
//!   [`render_layout`] draws them as PNG (`raster`), SVG (`svg`), multi-page PDF (`pdf`) or ZPL
//!   (`zpl`, a `^GF` graphic of the raster) — one piece or a whole batch.
//! - [`document`]: value documents (ticket, check, coupon, gift certificate) as pages of the same
//!   marks, rendered by the same four formats ([`render_document`]).
//! - [`impb`]: the IMpb tracking number and its GS1-128 symbol (rxing's Code 128 writer).
//! - [`decode_png`] / [`decode_luma`]: image → symbol (rxing) → bytes (`datamatrix` decodation).

mod decode;
pub mod document;
pub mod impb;
pub mod page;
mod pdf;
mod raster;
pub mod sample;
mod svg;
pub mod symbol;
mod text;
mod zpl;

pub use decode::{decode_luma, decode_png};
pub use document::{Document, render_document};
pub use impb::Impb;
pub use page::{Layout, Piece};
pub use pdf::{PDF_FONT_PT, PDF_MODULE_PT, render_pdf};
pub use raster::render_png;
pub use symbol::{Symbol, datamatrix};

/// Most pieces one [`render_layout`] call takes (a batch): 10,000 4×6 pages are about 40 MB of
/// PDF.
pub const MAX_BATCH_PIECES: usize = 10_000;

/// Output formats of [`render_layout`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// One page as an 8-bit grayscale PNG at the given resolution.
    Png,
    /// One page as SVG (vector, sized in inches).
    Svg,
    /// Every page in one PDF, each at the layout's exact page size.
    Pdf,
    /// Every page as one `^XA`…`^XZ` label of one ZPL stream (4×6 labels only).
    Zpl,
}

impl Format {
    /// The names the CLI uses.
    pub const NAMES: [&'static str; 4] = ["png", "svg", "pdf", "zpl"];

    /// Whether a file in this format holds more than one page.
    pub fn is_multi_page(self) -> bool {
        matches!(self, Format::Pdf | Format::Zpl)
    }
}

impl std::str::FromStr for Format {
    type Err = LabelError;
    fn from_str(s: &str) -> Result<Self, LabelError> {
        match s {
            "png" => Ok(Format::Png),
            "svg" => Ok(Format::Svg),
            "pdf" => Ok(Format::Pdf),
            "zpl" => Ok(Format::Zpl),
            other => Err(LabelError::DoesNotFit(format!(
                "unknown format {other:?}; one of png, svg, pdf, zpl"
            ))),
        }
    }
}

/// Lays `pieces` out on `layout` pages and renders them in `format`: one piece per page (a
/// [`Layout::Sheet`] takes [`page::SHEET_CELLS`]), in order. This is both the single label and
/// the batch: a batch of N pieces is one N-page PDF or one ZPL stream of N labels. PNG and SVG
/// hold one page. `dpi` sets the raster resolution (PNG, ZPL) and is checked for every format.
///
/// Pages are laid out and written one at a time, so memory grows with the output, not with the
/// layouts.
///
/// # Errors
/// [`LabelError::DoesNotFit`] for no pieces, more than [`MAX_BATCH_PIECES`], several pages in a
/// one-page format, ZPL on a layout other than 4×6, or content that does not fit the page;
/// otherwise as [`render_png`] and [`Impb::pic`].
pub fn render_layout(
    layout: Layout,
    format: Format,
    dpi: u32,
    pieces: &[Piece],
) -> Result<Vec<u8>, LabelError> {
    raster::PixelMetrics::for_dpi(dpi)?;
    if pieces.is_empty() || pieces.len() > MAX_BATCH_PIECES {
        return Err(LabelError::DoesNotFit(format!(
            "{} pieces; a render takes 1 to {MAX_BATCH_PIECES}",
            pieces.len()
        )));
    }
    let pages = pieces.len().div_ceil(layout.pieces_per_page());
    if pages > 1 && !format.is_multi_page() {
        return Err(LabelError::DoesNotFit(format!(
            "{} pieces need {pages} pages and a {format:?} file holds one; use pdf or zpl",
            pieces.len()
        )));
    }
    if format == Format::Zpl && layout != Layout::Label4x6 {
        return Err(LabelError::DoesNotFit(
            "ZPL is for 4x6 thermal labels; use --layout label4x6".to_owned(),
        ));
    }
    let mut chunks = pieces.chunks(layout.pieces_per_page());
    match format {
        Format::Png | Format::Svg => {
            let page = page::compose_page(layout, chunks.next().unwrap_or_default())?;
            match format {
                Format::Png => raster::page_png(&page, dpi),
                _ => Ok(svg::page_svg(&page).into_bytes()),
            }
        }
        Format::Pdf => {
            let mut pdf = pdf::PdfPages::new();
            for chunk in chunks {
                pdf.add(&page::compose_page(layout, chunk)?)?;
            }
            Ok(pdf.finish())
        }
        Format::Zpl => {
            let mut zpl = String::new();
            for chunk in chunks {
                let page = page::compose_page(layout, chunk)?;
                zpl.push_str(&zpl::page_zpl(&raster::rasterize(&page, dpi)?));
            }
            Ok(zpl.into_bytes())
        }
    }
}

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
    /// An IMpb part is malformed, or a layout that needs an IMpb has none.
    #[error("tracking barcode: {0}")]
    BadBarcode(String),
    /// The content does not fit the layout, or the layout, format and page count do not go
    /// together.
    #[error("does not fit: {0}")]
    DoesNotFit(String),
    /// Producing the output failed (an encoder error, or a self-check that did not hold).
    #[error("rendering failed: {0}")]
    Render(String),
}
