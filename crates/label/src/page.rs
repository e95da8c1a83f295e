//! Pages: the three layouts as lists of marks placed in points (1/72 in) from the top-left
//! corner. The renderers (`raster`, `pdf`, `svg`, `zpl`) draw the same list, so every format
//! shows the same page.
//!
//! Geometry (USPS placement rules):
//! - `envelope10` (#10 envelope, 9.5 × 4.125 in = 684 × 297 pt): return address upper left; the
//!   FIM D (bars 1/32 in wide on a 1/16 in pitch, 5/8 in tall, the rightmost 2 in from the right
//!   edge, tops 1/16 in below the top edge); the indicium in the upper right below the 5/8 in FIM
//!   strip, ¼ in from the right edge, with ½ in kept clear to its left and below it; the delivery
//!   address under that, above the 5/8 in barcode clear zone at the bottom.
//! - `label4x6` (4 × 6 in = 288 × 432 pt): the indicium across the top, the return address, "SHIP
//!   TO:" and the delivery address, then the IMpb between two rules with "USPS TRACKING #" above
//!   it and the grouped tracking number below it.
//! - `sheet` (US Letter, 8.5 × 11 in = 612 × 792 pt): a grid of [`SHEET_COLUMNS`] × [`SHEET_ROWS`]
//!   cells of 4 × 2 in, one indicium in each; addresses are not printed.
//!
//! The indicium is always the symbol with its quiet zone, then its text lines to the right; text
//! is shrunk (never below [`MIN_TEXT_PT`]) until its longest line fits the room it has, reckoning
//! [`TEXT_EM_BUDGET`] em per character so that the wider bitmap font of the raster formats fits
//! too.

use crate::{
    LabelError, QUIET_ZONE_MODULES, Symbol, datamatrix, impb::Impb, pdf::PDF_MODULE_PT,
    text::validate_lines,
};

/// #10 envelope, 9.5 × 4.125 in, in points.
pub const ENVELOPE10_PT: (f32, f32) = (684.0, 297.0);
/// 4 × 6 in shipping label, in points.
pub const LABEL4X6_PT: (f32, f32) = (288.0, 432.0);
/// US Letter, 8.5 × 11 in, in points.
pub const LETTER_PT: (f32, f32) = (612.0, 792.0);

/// Indicia per row of a sheet.
pub const SHEET_COLUMNS: usize = 2;
/// Rows of indicia on a sheet.
pub const SHEET_ROWS: usize = 5;
/// Indicia on one sheet.
pub const SHEET_CELLS: usize = SHEET_COLUMNS * SHEET_ROWS;

/// Most lines in an address block.
pub const MAX_ADDRESS_LINES: usize = 6;

/// Largest DataMatrix side (quiet zone included) a layout has room for: 1.5 in, so symbols up to
/// 60×60 modules (about 280 bytes; a postage item needs 44×44).
pub const MAX_INDICIUM_SYMBOL_PT: f32 = 108.0;

/// Smallest text size a layout may shrink to.
pub const MIN_TEXT_PT: f32 = 5.0;

/// Width reckoned per character, in em, when fitting text: Helvetica averages about 0.6 em, the
/// raster bitmap font is at most 1.15 em (its scale is rounded down to keep it so).
pub const TEXT_EM_BUDGET: f32 = 1.15;

/// Distance between text baselines, as a multiple of the text size.
pub const LEADING: f32 = 1.2;

/// Side of one IMpb bar module in the vector formats: 14 mil (USPS asks 13 to 21 mil).
pub const BAR_MODULE_PT: f32 = 72.0 * 0.014;

/// Quiet zone each side of a linear symbol, in modules (Code 128 asks for 10).
pub const BAR_QUIET_MODULES: usize = 10;

/// Height of the IMpb bars: ¾ in.
pub const BAR_HEIGHT_PT: f32 = 54.0;

/// ½ inch, the clear zone left of and below an envelope's indicium.
const CLEAR_ZONE_PT: f32 = 36.0;
/// White between the symbol's quiet zone and the indicium text.
const INDICIUM_GAP_PT: f32 = 4.25;
/// Nominal text sizes.
const INDICIUM_TEXT_PT: f32 = 8.0;
const RETURN_TEXT_PT: f32 = 9.0;
const DELIVERY_TEXT_PT: f32 = 12.0;

/// FIM D as 9 positions, left to right: a bar where `true`.
const FIM_D: [bool; 9] = [true, true, true, false, true, false, true, true, true];
const FIM_PITCH_PT: f32 = 72.0 / 16.0;
const FIM_BAR_PT: f32 = 72.0 / 32.0;
const FIM_HEIGHT_PT: f32 = 72.0 * 5.0 / 8.0;
const FIM_TOP_PT: f32 = 72.0 / 16.0;
const FIM_RIGHT_BAR_FROM_RIGHT_PT: f32 = 144.0;

/// Which page a piece goes on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// A #10 envelope with FIM D, indicium and both addresses.
    Envelope10,
    /// A 4 × 6 in shipping label with indicium, addresses and IMpb.
    Label4x6,
    /// Indicia only, [`SHEET_CELLS`] to a US Letter page.
    Sheet,
}

impl Layout {
    /// The names the CLI uses.
    pub const NAMES: [&'static str; 3] = ["envelope10", "label4x6", "sheet"];

    /// Page size in points.
    pub fn page_pt(self) -> (f32, f32) {
        match self {
            Layout::Envelope10 => ENVELOPE10_PT,
            Layout::Label4x6 => LABEL4X6_PT,
            Layout::Sheet => LETTER_PT,
        }
    }

    /// Pieces on one page.
    pub fn pieces_per_page(self) -> usize {
        match self {
            Layout::Sheet => SHEET_CELLS,
            Layout::Envelope10 | Layout::Label4x6 => 1,
        }
    }
}

impl std::str::FromStr for Layout {
    type Err = LabelError;
    fn from_str(s: &str) -> Result<Self, LabelError> {
        match s {
            "envelope10" => Ok(Layout::Envelope10),
            "label4x6" => Ok(Layout::Label4x6),
            "sheet" => Ok(Layout::Sheet),
            other => Err(LabelError::DoesNotFit(format!(
                "unknown layout {other:?}; one of envelope10, label4x6, sheet"
            ))),
        }
    }
}

/// One mail piece to lay out.
#[derive(Clone, Debug)]
pub struct Piece<'a> {
    /// The item bytes, carried exactly in the DataMatrix.
    pub item: &'a [u8],
    /// The indicium's text lines ("US POSTAGE", the amount, the class, …), top to bottom.
    pub indicium: Vec<String>,
    /// Return address lines (envelope and 4×6 label).
    pub from: Vec<String>,
    /// Delivery address lines (envelope and 4×6 label).
    pub to: Vec<String>,
    /// The IMpb (4×6 label only, where it is required).
    pub tracking: Option<Impb>,
}

/// Horizontal anchor of a text line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Anchor {
    Left,
    Center,
}

/// One thing drawn on a page. Coordinates in points from the top-left corner, y downwards.
#[derive(Clone, Debug)]
pub(crate) enum Mark {
    /// A DataMatrix; `(x, y)` is the top-left corner of its quiet zone. Vector formats use
    /// [`PDF_MODULE_PT`] modules; rasters use whole pixels, never larger.
    DataMatrix { x: f32, y: f32, symbol: Symbol },
    /// A linear symbol centred on `center_x`, bars from `y` down `height`; modules are
    /// [`BAR_MODULE_PT`] wide in vector formats and whole pixels in rasters.
    Bars {
        center_x: f32,
        y: f32,
        height: f32,
        modules: Vec<bool>,
    },
    /// A black rectangle.
    Rect { x: f32, y: f32, w: f32, h: f32 },
    /// A line of text; `y` is the top of its capitals.
    Text {
        x: f32,
        y: f32,
        size: f32,
        anchor: Anchor,
        text: String,
    },
}

/// A page and what is on it.
#[derive(Clone, Debug)]
pub(crate) struct Page {
    pub width: f32,
    pub height: f32,
    pub marks: Vec<Mark>,
}

/// Lays out one page: one piece, or up to [`SHEET_CELLS`] on a sheet (extra pieces are an
/// error).
pub(crate) fn compose_page(layout: Layout, pieces: &[Piece]) -> Result<Page, LabelError> {
    if pieces.len() > layout.pieces_per_page() {
        return Err(LabelError::DoesNotFit(format!(
            "{} pieces on one page, at most {}",
            pieces.len(),
            layout.pieces_per_page()
        )));
    }
    let (width, height) = layout.page_pt();
    let mut marks = Vec::new();
    for (cell, piece) in pieces.iter().enumerate() {
        match layout {
            Layout::Envelope10 => envelope10(&mut marks, piece)?,
            Layout::Label4x6 => label4x6(&mut marks, piece)?,
            Layout::Sheet => sheet_cell(&mut marks, piece, cell)?,
        }
    }
    Ok(Page {
        width,
        height,
        marks,
    })
}

fn envelope10(marks: &mut Vec<Mark>, piece: &Piece) -> Result<(), LabelError> {
    let (width, height) = ENVELOPE10_PT;
    let margin = 18.0;
    for (i, bar) in FIM_D.iter().enumerate() {
        if *bar {
            let center = width - FIM_RIGHT_BAR_FROM_RIGHT_PT - (8 - i) as f32 * FIM_PITCH_PT;
            marks.push(Mark::Rect {
                x: center - FIM_BAR_PT / 2.0,
                y: FIM_TOP_PT,
                w: FIM_BAR_PT,
                h: FIM_HEIGHT_PT,
            });
        }
    }
    let indicium_width = 288.0;
    let indicium_x = width - margin - indicium_width;
    let indicium_y = FIM_TOP_PT + FIM_HEIGHT_PT + FIM_TOP_PT;
    let indicium_height = indicium(marks, indicium_x, indicium_y, indicium_width, piece)?;
    // Return address: upper left, kept ½ in away from the indicium.
    address(
        marks,
        "return",
        &piece.from,
        margin,
        margin,
        indicium_x - CLEAR_ZONE_PT - margin,
        RETURN_TEXT_PT,
    )?;
    // Delivery address: below the indicium's clear zone, above the bottom barcode clear zone.
    let to_y = indicium_y + indicium_height + CLEAR_ZONE_PT;
    let to_x = 198.0;
    let bottom = address(
        marks,
        "delivery",
        &piece.to,
        to_x,
        to_y,
        width - margin - to_x,
        DELIVERY_TEXT_PT,
    )?;
    if bottom > height - FIM_HEIGHT_PT {
        return Err(LabelError::DoesNotFit(format!(
            "delivery address ends {bottom:.0} pt from the top, inside the envelope's 5/8 in bottom clear zone; use fewer lines"
        )));
    }
    Ok(())
}

fn label4x6(marks: &mut Vec<Mark>, piece: &Piece) -> Result<(), LabelError> {
    let (width, _) = LABEL4X6_PT;
    let margin = 9.0;
    let inner = width - 2.0 * margin;
    let tracking = piece.tracking.as_ref().ok_or_else(|| {
        LabelError::BadBarcode("a 4x6 label needs an IMpb tracking number".to_owned())
    })?;
    let modules = tracking.modules()?;
    let human = tracking.human_readable()?;

    let top = indicium(marks, margin, margin, inner, piece)? + margin;
    rule(marks, top + 6.0, 1.0);
    let from_bottom = address(
        marks,
        "return",
        &piece.from,
        margin,
        top + 14.0,
        inner,
        RETURN_TEXT_PT,
    )?;
    let ship_to_y = from_bottom.max(top + 14.0) + 10.0;
    text(marks, margin, ship_to_y, 8.0, Anchor::Left, "SHIP TO:");
    let to_bottom = address(
        marks,
        "delivery",
        &piece.to,
        36.0,
        ship_to_y + 14.0,
        width - margin - 36.0,
        DELIVERY_TEXT_PT,
    )?;
    let rule_y = 296.0;
    if to_bottom > rule_y - 6.0 {
        return Err(LabelError::DoesNotFit(
            "the addresses do not leave room for the tracking barcode; use fewer lines".to_owned(),
        ));
    }
    let bar_width = (modules.len() + 2 * BAR_QUIET_MODULES) as f32 * BAR_MODULE_PT;
    if bar_width > width {
        return Err(LabelError::DoesNotFit(format!(
            "IMpb of {} modules is wider than the label",
            modules.len()
        )));
    }
    rule(marks, rule_y, 2.0);
    text(
        marks,
        width / 2.0,
        rule_y + 8.0,
        9.0,
        Anchor::Center,
        "USPS TRACKING #",
    );
    let bars_y = rule_y + 24.0;
    marks.push(Mark::Bars {
        center_x: width / 2.0,
        y: bars_y,
        height: BAR_HEIGHT_PT,
        modules,
    });
    text(
        marks,
        width / 2.0,
        bars_y + BAR_HEIGHT_PT + 7.0,
        10.0,
        Anchor::Center,
        &human,
    );
    rule(marks, bars_y + BAR_HEIGHT_PT + 26.0, 2.0);
    Ok(())
}

fn sheet_cell(marks: &mut Vec<Mark>, piece: &Piece, cell: usize) -> Result<(), LabelError> {
    let (cell_w, cell_h) = (288.0, 144.0);
    let x = 18.0 + (cell % SHEET_COLUMNS) as f32 * cell_w;
    let y = 36.0 + (cell / SHEET_COLUMNS) as f32 * cell_h;
    let padding = 9.0;
    indicium(
        marks,
        x + padding,
        y + padding,
        cell_w - 2.0 * padding,
        piece,
    )?;
    Ok(())
}

/// The indicium block: symbol at `(x, y)`, text lines to its right within `width`. Returns its
/// height.
fn indicium(
    marks: &mut Vec<Mark>,
    x: f32,
    y: f32,
    width: f32,
    piece: &Piece,
) -> Result<f32, LabelError> {
    validate_lines(&piece.indicium)?;
    let symbol = datamatrix(piece.item)?;
    let quiet = QUIET_ZONE_MODULES as f32 * PDF_MODULE_PT;
    let side = symbol.size() as f32 * PDF_MODULE_PT + 2.0 * quiet;
    if side > MAX_INDICIUM_SYMBOL_PT {
        return Err(LabelError::DoesNotFit(format!(
            "a {0}x{0} symbol ({1} item bytes) is larger than the {MAX_INDICIUM_SYMBOL_PT} pt a layout has room for",
            symbol.size(),
            piece.item.len()
        )));
    }
    marks.push(Mark::DataMatrix { x, y, symbol });
    let text_x = x + side + INDICIUM_GAP_PT;
    let size = fit(
        "indicium",
        &piece.indicium,
        width - side - INDICIUM_GAP_PT,
        INDICIUM_TEXT_PT,
    )?;
    let text_bottom = lines(marks, &piece.indicium, text_x, y + quiet, size);
    Ok(side.max(text_bottom + quiet - y))
}

/// An address block at `(x, y)` within `width`; returns the y where it ends (`y` if empty).
fn address(
    marks: &mut Vec<Mark>,
    what: &str,
    address: &[String],
    x: f32,
    y: f32,
    width: f32,
    nominal: f32,
) -> Result<f32, LabelError> {
    validate_lines(address)?;
    if address.len() > MAX_ADDRESS_LINES {
        return Err(LabelError::BadText(format!(
            "{what} address has {} lines, at most {MAX_ADDRESS_LINES}",
            address.len()
        )));
    }
    let size = fit(what, address, width, nominal)?;
    Ok(lines(marks, address, x, y, size))
}

/// The largest size up to `nominal` at which every line fits `width`.
pub(crate) fn fit(
    what: &str,
    lines: &[String],
    width: f32,
    nominal: f32,
) -> Result<f32, LabelError> {
    let longest = lines.iter().map(String::len).max().unwrap_or(0);
    if longest == 0 {
        return Ok(nominal);
    }
    let size = nominal.min(width / (longest as f32 * TEXT_EM_BUDGET));
    if size < MIN_TEXT_PT {
        return Err(LabelError::DoesNotFit(format!(
            "{what} text of {longest} characters does not fit {width:.0} pt at {MIN_TEXT_PT} pt or more"
        )));
    }
    Ok(size)
}

/// Left-aligned lines from `(x, y)`; returns the y of the last line's descenders.
pub(crate) fn lines(marks: &mut Vec<Mark>, lines: &[String], x: f32, y: f32, size: f32) -> f32 {
    for (i, line) in lines.iter().enumerate() {
        text(
            marks,
            x,
            y + i as f32 * size * LEADING,
            size,
            Anchor::Left,
            line,
        );
    }
    match lines.len() {
        0 => y,
        n => y + (n - 1) as f32 * size * LEADING + size,
    }
}

pub(crate) fn text(marks: &mut Vec<Mark>, x: f32, y: f32, size: f32, anchor: Anchor, text: &str) {
    marks.push(Mark::Text {
        x,
        y,
        size,
        anchor,
        text: text.to_owned(),
    });
}

/// A full-width horizontal rule on a 4×6 label.
fn rule(marks: &mut Vec<Mark>, y: f32, thickness: f32) {
    marks.push(Mark::Rect {
        x: 0.0,
        y,
        w: LABEL4X6_PT.0,
        h: thickness,
    });
}
