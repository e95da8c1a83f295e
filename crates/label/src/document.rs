//! Value documents: a ticket, a check, a coupon and a gift certificate, each a page a person
//! recognises at a glance, with the item's DataMatrix on it. Like the mail layouts (`page`) they
//! are lists of marks, so PNG, SVG, PDF and ZPL show the same page; the caller writes every
//! word (this crate never decides what the text says), the layout decides where it goes and how
//! large, shrinking a line that is too long down to [`MIN_TEXT_PT`](crate::page::MIN_TEXT_PT)
//! and refusing it beyond.
//!
//! Sizes (points, 72 to the inch):
//! - ticket: 4 × 2 in, the main part and a 1.5 in stub right of a perforation holding the
//!   symbol (up to about 250 item bytes);
//! - check: 8.5 × 3.5 in (a business check on standard stock), the MICR-style line in the
//!   bottom 5/8 in band as the banks' readers expect it, the symbol in the upper right;
//! - coupon: 4 × 2.5 in inside a dashed cut line;
//! - gift certificate: 4 × 3 in inside a double border.
//!
//! ZPL (thermal printers, at most 4 in wide) takes every document but the check.

use crate::page::{Anchor, Mark, Page, fit, lines, text};
use crate::pdf::PDF_MODULE_PT;
use crate::text::validate_text;
use crate::{Format, LabelError, QUIET_ZONE_MODULES, datamatrix, raster, svg};

/// Longest line of document text (shrunk to fit its room, never below the smallest size).
pub const MAX_DOCUMENT_LINE_CHARS: usize = 100;

/// The widest page a ZPL (thermal) printer takes: 4 in.
pub const ZPL_MAX_WIDTH_PT: f32 = 288.0;

/// A ticket to an event.
#[derive(Clone, Debug)]
pub struct Ticket<'a> {
    /// The item bytes, carried exactly in the DataMatrix.
    pub item: &'a [u8],
    pub event: String,
    pub venue: String,
    /// The date (and time) line, e.g. "SAT 2027-03-06".
    pub date: String,
    /// Seat or section, e.g. "ROW F SEAT 12".
    pub seat: String,
    /// The price as printed, e.g. "$45.00".
    pub price: String,
    /// The serial, printed under the symbol.
    pub serial: String,
}

/// A check drawn on the issuer's account.
#[derive(Clone, Debug)]
pub struct Check<'a> {
    pub item: &'a [u8],
    /// The account holder's name and address, upper left (up to 4 lines).
    pub drawer: Vec<String>,
    /// The check number, upper right.
    pub number: String,
    pub date: String,
    pub payee: String,
    /// The amount in figures, e.g. "$1,234.56".
    pub amount: String,
    /// The amount in words, e.g. "One thousand two hundred thirty-four and 56/100".
    pub words: String,
    pub memo: String,
    /// The MICR-style line: check number, routing and account number with their symbols as
    /// text (the caller's convention, e.g. `C000123C A021000021A 12345678C`).
    pub micr: String,
    pub serial: String,
}

/// A coupon: a discount its issuer honours.
#[derive(Clone, Debug)]
pub struct Coupon<'a> {
    pub item: &'a [u8],
    pub issuer: String,
    /// The offer in large type, e.g. "$5.00 OFF".
    pub amount: String,
    /// The terms, already cut into lines (see [`wrap_words`]; up to 4).
    pub terms: Vec<String>,
    /// E.g. "EXPIRES 2027-01-31", or empty.
    pub expires: String,
    pub serial: String,
}

/// A gift certificate.
#[derive(Clone, Debug)]
pub struct Certificate<'a> {
    pub item: &'a [u8],
    pub recipient: String,
    pub amount: String,
    /// The redemption code a merchant types in.
    pub code: String,
    /// E.g. "VALID UNTIL 2027-12-31", or empty.
    pub expires: String,
    pub serial: String,
}

/// One value document.
#[derive(Clone, Debug)]
pub enum Document<'a> {
    Ticket(Ticket<'a>),
    Check(Check<'a>),
    Coupon(Coupon<'a>),
    Certificate(Certificate<'a>),
}

impl Document<'_> {
    /// The page size in points.
    pub fn page_pt(&self) -> (f32, f32) {
        match self {
            Document::Ticket(_) => (288.0, 144.0),
            Document::Check(_) => (612.0, 252.0),
            Document::Coupon(_) => (288.0, 180.0),
            Document::Certificate(_) => (288.0, 216.0),
        }
    }
}

/// A serial (`SL0100001234-20000000007`) as two lines, cut after its hyphen, for narrow places.
fn serial_lines(serial: &str) -> Vec<String> {
    match serial.split_once('-') {
        Some((device, number)) => vec![format!("{device}-"), number.to_owned()],
        None => vec![serial.to_owned()],
    }
}

/// Cuts `text` into lines of at most `width` characters at spaces (a word longer than a line is
/// cut where it must). At most `max_lines` lines; more is an error naming how much fits.
pub fn wrap_words(text: &str, width: usize, max_lines: usize) -> Result<Vec<String>, LabelError> {
    let width = width.clamp(1, MAX_DOCUMENT_LINE_CHARS);
    let mut out: Vec<String> = Vec::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        let mut word = word;
        while word.len() > width {
            if !line.is_empty() {
                out.push(std::mem::take(&mut line));
            }
            let cut = (1..=width)
                .rev()
                .find(|&i| word.is_char_boundary(i))
                .unwrap_or(width);
            out.push(word[..cut].to_owned());
            word = &word[cut..];
        }
        if !line.is_empty() && line.len() + 1 + word.len() > width {
            out.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() {
        out.push(line);
    }
    if out.len() > max_lines {
        return Err(LabelError::DoesNotFit(format!(
            "{} lines of text where {max_lines} lines of {width} characters fit",
            out.len()
        )));
    }
    Ok(out)
}

/// Renders one document in `format` (`dpi` for PNG and ZPL, checked for all).
pub fn render_document(doc: &Document, format: Format, dpi: u32) -> Result<Vec<u8>, LabelError> {
    raster::PixelMetrics::for_dpi(dpi)?;
    let page = compose(doc)?;
    match format {
        Format::Png => raster::page_png(&page, dpi),
        Format::Svg => Ok(svg::page_svg(&page).into_bytes()),
        Format::Pdf => {
            let mut pdf = crate::pdf::PdfPages::new();
            pdf.add(&page)?;
            Ok(pdf.finish())
        }
        Format::Zpl => {
            if page.width > ZPL_MAX_WIDTH_PT {
                return Err(LabelError::DoesNotFit(format!(
                    "a {:.1} in wide page does not fit a 4 in thermal printer; use pdf, png or svg",
                    page.width / 72.0
                )));
            }
            Ok(crate::zpl::page_zpl(&raster::rasterize(&page, dpi)?).into_bytes())
        }
    }
}

/// The document's page.
pub(crate) fn compose(doc: &Document) -> Result<Page, LabelError> {
    let (width, height) = doc.page_pt();
    let mut marks = Vec::new();
    match doc {
        Document::Ticket(d) => ticket(&mut marks, d)?,
        Document::Check(d) => check(&mut marks, d)?,
        Document::Coupon(d) => coupon(&mut marks, d)?,
        Document::Certificate(d) => certificate(&mut marks, d)?,
    }
    Ok(Page {
        width,
        height,
        marks,
    })
}

/// The symbol with its quiet zone at `(x, y)`, at most `max_side` points; returns its side.
fn symbol(
    marks: &mut Vec<Mark>,
    item: &[u8],
    x: f32,
    y: f32,
    max_side: f32,
) -> Result<f32, LabelError> {
    let symbol = datamatrix(item)?;
    let quiet = QUIET_ZONE_MODULES as f32 * PDF_MODULE_PT;
    let side = symbol.size() as f32 * PDF_MODULE_PT + 2.0 * quiet;
    if side > max_side {
        return Err(LabelError::DoesNotFit(format!(
            "the item ({} bytes, a {1}x{1} symbol) needs {side:.0} pt and this document has {max_side:.0}; shorten its text",
            item.len(),
            symbol.size()
        )));
    }
    marks.push(Mark::DataMatrix { x, y, symbol });
    Ok(side)
}

/// One line at up to `nominal` points, shrunk to fit `width`; returns the y below it.
#[allow(clippy::too_many_arguments)]
fn line(
    marks: &mut Vec<Mark>,
    what: &str,
    value: &str,
    x: f32,
    y: f32,
    width: f32,
    nominal: f32,
    anchor: Anchor,
) -> Result<f32, LabelError> {
    let one = [value.to_owned()];
    validate_text(&one, MAX_DOCUMENT_LINE_CHARS)
        .map_err(|e| LabelError::BadText(format!("{what}: {e}")))?;
    let size = fit(what, &one, width, nominal)?;
    text(marks, x, y, size, anchor, value);
    Ok(y + size * crate::page::LEADING)
}

/// A box outline `t` points thick.
fn frame(marks: &mut Vec<Mark>, x: f32, y: f32, w: f32, h: f32, t: f32) {
    marks.push(Mark::Rect { x, y, w, h: t });
    marks.push(Mark::Rect {
        x,
        y: y + h - t,
        w,
        h: t,
    });
    marks.push(Mark::Rect { x, y, w: t, h });
    marks.push(Mark::Rect {
        x: x + w - t,
        y,
        w: t,
        h,
    });
}

/// A dashed line from `(x, y)`, horizontal or vertical, `len` points long.
fn dashes(marks: &mut Vec<Mark>, x: f32, y: f32, len: f32, vertical: bool) {
    let (dash, gap, t): (f32, f32, f32) = (4.0, 3.0, 0.75);
    let mut at = 0.0;
    while at < len {
        let d = dash.min(len - at);
        marks.push(if vertical {
            Mark::Rect {
                x,
                y: y + at,
                w: t,
                h: d,
            }
        } else {
            Mark::Rect {
                x: x + at,
                y,
                w: d,
                h: t,
            }
        });
        at += dash + gap;
    }
}

/// A rule to write on.
fn underline(marks: &mut Vec<Mark>, x: f32, y: f32, w: f32) {
    marks.push(Mark::Rect { x, y, w, h: 0.75 });
}

fn ticket(marks: &mut Vec<Mark>, d: &Ticket) -> Result<(), LabelError> {
    let (w, h) = (288.0, 144.0);
    frame(marks, 0.0, 0.0, w, h, 1.5);
    let stub_x = 180.0;
    dashes(marks, stub_x, 4.0, h - 8.0, true);
    let (x, inner) = (9.0, stub_x - 18.0);
    let mut y = 10.0;
    y = line(marks, "event", &d.event, x, y, inner, 15.0, Anchor::Left)? + 2.0;
    y = line(marks, "venue", &d.venue, x, y, inner, 9.0, Anchor::Left)?;
    line(marks, "date", &d.date, x, y, inner, 9.0, Anchor::Left)?;
    text(marks, x, 74.0, 6.0, Anchor::Left, "SEAT");
    line(marks, "seat", &d.seat, x, 82.0, inner, 13.0, Anchor::Left)?;
    text(marks, x, 106.0, 6.0, Anchor::Left, "PRICE");
    line(marks, "price", &d.price, x, 114.0, 90.0, 12.0, Anchor::Left)?;
    // Right of the price, clear of the perforation at `stub_x`.
    text(marks, x + 95.0, 119.0, 6.5, Anchor::Left, "ADMIT ONE");
    // The stub: the symbol, the serial under it.
    let stub_w = w - stub_x - 6.0;
    let side = symbol(marks, d.item, stub_x + 3.0, 5.0, stub_w.min(h - 26.0))?;
    let serial = serial_lines(&d.serial);
    let size = fit("serial", &serial, stub_w, 6.0)?;
    lines(marks, &serial, stub_x + 5.0, 8.0 + side, size);
    Ok(())
}

fn check(marks: &mut Vec<Mark>, d: &Check) -> Result<(), LabelError> {
    let w = 612.0;
    let margin = 18.0;
    frame(marks, 0.0, 0.0, w, 252.0, 1.0);
    // The symbol in the upper right, the number and the date left of it.
    let side = symbol(marks, d.item, w - margin - 96.0, 8.0, 96.0)?;
    let sym_x = w - margin - 96.0;
    validate_text(&d.drawer, MAX_DOCUMENT_LINE_CHARS)?;
    if d.drawer.len() > 4 {
        return Err(LabelError::BadText(format!(
            "the drawer's block has {} lines, at most 4",
            d.drawer.len()
        )));
    }
    let size = fit("drawer", &d.drawer, 240.0, 9.0)?;
    lines(marks, &d.drawer, margin, 14.0, size);
    text(marks, sym_x - 140.0, 18.0, 7.0, Anchor::Left, "NO.");
    line(
        marks,
        "check number",
        &d.number,
        sym_x - 118.0,
        14.0,
        110.0,
        13.0,
        Anchor::Left,
    )?;
    text(marks, sym_x - 140.0, 56.0, 7.0, Anchor::Left, "DATE");
    line(
        marks,
        "date",
        &d.date,
        sym_x - 118.0,
        53.0,
        110.0,
        10.0,
        Anchor::Left,
    )?;
    underline(marks, sym_x - 120.0, 66.0, 112.0);
    let pay_y = 8.0 + side.max(96.0) + 8.0;
    text(marks, margin, pay_y, 6.5, Anchor::Left, "PAY TO THE");
    text(marks, margin, pay_y + 8.0, 6.5, Anchor::Left, "ORDER OF");
    line(
        marks,
        "payee",
        &d.payee,
        82.0,
        pay_y + 1.0,
        350.0,
        12.0,
        Anchor::Left,
    )?;
    underline(marks, 80.0, pay_y + 16.0, 362.0);
    // The amount box.
    frame(marks, 452.0, pay_y - 4.0, w - margin - 452.0, 22.0, 0.75);
    line(
        marks,
        "amount",
        &d.amount,
        458.0,
        pay_y + 1.0,
        w - margin - 464.0,
        12.0,
        Anchor::Left,
    )?;
    let words_y = pay_y + 26.0;
    line(
        marks,
        "amount in words",
        &d.words,
        margin,
        words_y,
        w - 2.0 * margin - 60.0,
        10.0,
        Anchor::Left,
    )?;
    underline(marks, margin, words_y + 13.0, w - 2.0 * margin - 56.0);
    text(
        marks,
        w - margin - 50.0,
        words_y + 2.0,
        8.0,
        Anchor::Left,
        "DOLLARS",
    );
    let memo_y = words_y + 24.0;
    text(marks, margin, memo_y + 2.0, 6.5, Anchor::Left, "MEMO");
    line(
        marks,
        "memo",
        &d.memo,
        margin + 28.0,
        memo_y,
        220.0,
        9.0,
        Anchor::Left,
    )?;
    underline(marks, margin + 26.0, memo_y + 12.0, 224.0);
    underline(marks, 380.0, memo_y + 12.0, w - margin - 380.0);
    line(
        marks,
        "notice",
        "VERIFY THE BARCODE BEFORE PAYING",
        380.0,
        memo_y + 15.0,
        w - margin - 380.0,
        5.5,
        Anchor::Left,
    )?;
    let serial = [format!("ITEM {}", d.serial)];
    validate_text(&serial, MAX_DOCUMENT_LINE_CHARS)?;
    text(marks, 380.0, memo_y + 22.0, 5.5, Anchor::Left, &serial[0]);
    // The MICR band: the bottom 5/8 in, kept clear but for the line.
    line(
        marks,
        "MICR line",
        &d.micr,
        36.0,
        252.0 - 32.0,
        w - 72.0,
        12.0,
        Anchor::Left,
    )?;
    if memo_y + 28.0 > 252.0 - 45.0 {
        return Err(LabelError::DoesNotFit(
            "the check's text runs into the MICR band".to_owned(),
        ));
    }
    Ok(())
}

fn coupon(marks: &mut Vec<Mark>, d: &Coupon) -> Result<(), LabelError> {
    let (w, h) = (288.0, 180.0);
    // The cut line.
    for (x, y, len, vertical) in [
        (2.0, 2.0, w - 4.0, false),
        (2.0, h - 3.0, w - 4.0, false),
        (2.0, 2.0, h - 4.0, true),
        (w - 3.0, 2.0, h - 4.0, true),
    ] {
        dashes(marks, x, y, len, vertical);
    }
    let max_side = 100.0;
    let sym_x = w - 10.0 - max_side;
    let side = symbol(marks, d.item, sym_x, 10.0, max_side)?;
    let (x, inner) = (12.0, sym_x - 18.0);
    let mut y = 12.0;
    y = line(marks, "issuer", &d.issuer, x, y, inner, 11.0, Anchor::Left)? + 4.0;
    y = line(marks, "amount", &d.amount, x, y, inner, 24.0, Anchor::Left)? + 2.0;
    text(marks, x, y, 6.5, Anchor::Left, "COUPON");
    validate_text(&d.terms, MAX_DOCUMENT_LINE_CHARS)?;
    if d.terms.len() > 4 {
        return Err(LabelError::BadText(format!(
            "the terms have {} lines, at most 4",
            d.terms.len()
        )));
    }
    let terms_y = 12.0 + side.max(100.0) + 4.0;
    let size = fit("terms", &d.terms, w - 24.0, 8.0)?;
    let bottom = lines(marks, &d.terms, x, terms_y, size);
    if !d.expires.is_empty() {
        line(
            marks,
            "expiry",
            &d.expires,
            x,
            h - 18.0,
            150.0,
            8.0,
            Anchor::Left,
        )?;
    }
    // The serial lower right, beside the expiry and below the terms, on two lines.
    let serial = serial_lines(&d.serial);
    validate_text(&serial, MAX_DOCUMENT_LINE_CHARS)?;
    let size = fit("serial", &serial, w - 182.0, 6.0)?;
    lines(marks, &serial, 170.0, h - 19.0, size);
    if bottom > h - 20.0 {
        return Err(LabelError::DoesNotFit(
            "the coupon's terms run into its expiry line; shorten them".to_owned(),
        ));
    }
    Ok(())
}

fn certificate(marks: &mut Vec<Mark>, d: &Certificate) -> Result<(), LabelError> {
    let (w, h) = (288.0, 216.0);
    frame(marks, 3.0, 3.0, w - 6.0, h - 6.0, 2.0);
    frame(marks, 8.0, 8.0, w - 16.0, h - 16.0, 0.75);
    let center = w / 2.0;
    text(
        marks,
        center,
        18.0,
        14.0,
        Anchor::Center,
        "GIFT CERTIFICATE",
    );
    text(marks, 18.0, 44.0, 6.5, Anchor::Left, "PRESENTED TO");
    line(
        marks,
        "recipient",
        &d.recipient,
        18.0,
        54.0,
        w - 36.0,
        12.0,
        Anchor::Left,
    )?;
    underline(marks, 18.0, 69.0, w - 36.0);
    text(marks, 18.0, 78.0, 6.5, Anchor::Left, "IN THE AMOUNT OF");
    line(
        marks,
        "amount",
        &d.amount,
        18.0,
        88.0,
        150.0,
        24.0,
        Anchor::Left,
    )?;
    // The symbol lower right, the code and the expiry lower left.
    let max_side = 100.0;
    symbol(
        marks,
        d.item,
        w - 14.0 - max_side,
        h - 14.0 - max_side,
        max_side,
    )?;
    let left = w - 36.0 - max_side;
    text(marks, 18.0, 124.0, 6.5, Anchor::Left, "CODE");
    line(
        marks,
        "code",
        &d.code,
        18.0,
        134.0,
        left,
        11.0,
        Anchor::Left,
    )?;
    if !d.expires.is_empty() {
        line(
            marks,
            "expiry",
            &d.expires,
            18.0,
            156.0,
            left,
            8.0,
            Anchor::Left,
        )?;
    }
    line(
        marks,
        "serial",
        &d.serial,
        18.0,
        h - 24.0,
        left,
        6.0,
        Anchor::Left,
    )?;
    Ok(())
}
