//! The PDF label: one page sized to its content, the same layout as the PNG.
//!
//! The symbol is vector art: one filled path holding a rectangle per run of dark modules, so
//! adjacent modules merge without hairline seams at any rasterisation. A module is 7/300 inch
//! (1.68 pt, 0.59 mm) — a whole number of device pixels at 300 and 600 dpi, the usual printer
//! resolutions. The text is 11 pt Helvetica (cap height 2.8 mm), the base-14 Type 1 font every
//! PDF reader has, so nothing is embedded.

use pdf_writer::{Content, Filter, Name, Pdf, Rect, Ref, Str};

use crate::{
    LabelError, LabelSpec, QUIET_ZONE_MODULES, datamatrix,
    page::{Anchor, BAR_MODULE_PT, Mark, Page},
    text::{HELVETICA_CAP_HEIGHT, HELVETICA_DESCENT, helvetica_width, validate_lines},
};

/// Side of one barcode module, in points: 7 pixels at 300 dpi.
pub const PDF_MODULE_PT: f32 = 72.0 * 7.0 / 300.0;

/// Size of the label text, in points.
pub const PDF_FONT_PT: f32 = 11.0;

/// Distance between text baselines, in points.
const LEADING_PT: f32 = 13.0;

/// White space between the quiet zone and the text, in points (1.5 mm).
const TEXT_GAP_PT: f32 = 1.5 * 72.0 / 25.4;

const FONT_NAME: Name<'static> = Name(b"F1");

/// A one-page PDF of the same label as [`render_png`](crate::render_png): the symbol (with its
/// quiet zone) at the left as filled rectangles, the text lines in Helvetica at its right. The
/// page is sized to the content; a 126-byte postage item with the six usual lines gives a page
/// of 188.5 pt × 81.9 pt (2.62 in × 1.14 in). `spec.dpi` is not used.
///
/// # Errors
/// [`LabelError::DataTooLarge`] or [`LabelError::BadText`].
pub fn render_pdf(spec: &LabelSpec) -> Result<Vec<u8>, LabelError> {
    validate_lines(&spec.lines)?;
    let symbol = datamatrix(spec.item)?;

    let module = PDF_MODULE_PT;
    let quiet = QUIET_ZONE_MODULES as f32 * module;
    let symbol_block = symbol.size() as f32 * module + 2.0 * quiet;

    let cap = PDF_FONT_PT * HELVETICA_CAP_HEIGHT / 1000.0;
    let descent = PDF_FONT_PT * HELVETICA_DESCENT / 1000.0;
    let longest = spec
        .lines
        .iter()
        .map(|line| helvetica_width(line) * PDF_FONT_PT / 1000.0)
        .fold(0.0f32, f32::max);
    let (text_width, text_height) = match spec.lines.len() {
        0 => (0.0, 0.0),
        n => (
            TEXT_GAP_PT + longest + quiet,
            cap + (n - 1) as f32 * LEADING_PT + descent,
        ),
    };
    let width = symbol_block + text_width;
    let height = symbol_block.max(text_height + 2.0 * quiet);

    let mut content = Content::new();
    // The symbol: PDF space grows upwards, rows are counted from the top.
    let symbol_top = height - (height - symbol_block) / 2.0 - quiet;
    content.set_fill_gray(0.0);
    for y in 0..symbol.size() {
        let row_bottom = symbol_top - (y + 1) as f32 * module;
        for (x, len) in symbol.dark_runs(y) {
            content.rect(
                quiet + x as f32 * module,
                row_bottom,
                len as f32 * module,
                module,
            );
        }
    }
    content.fill_nonzero();
    // The text, each line's baseline `LEADING_PT` below the previous one.
    if !spec.lines.is_empty() {
        let first_baseline = height - (height - text_height) / 2.0 - cap;
        content.begin_text();
        content.set_font(FONT_NAME, PDF_FONT_PT);
        content.next_line(symbol_block + TEXT_GAP_PT, first_baseline);
        for (i, line) in spec.lines.iter().enumerate() {
            if i > 0 {
                content.next_line(0.0, -LEADING_PT);
            }
            content.show(Str(line.as_bytes()));
        }
        content.end_text();
    }
    let content = content.finish();

    let catalog_id = Ref::new(1);
    let pages_id = Ref::new(2);
    let page_id = Ref::new(3);
    let content_id = Ref::new(4);
    let font_id = Ref::new(5);
    let mut pdf = Pdf::new();
    pdf.catalog(catalog_id).pages(pages_id);
    pdf.pages(pages_id).kids([page_id]).count(1);
    let mut page = pdf.page(page_id);
    page.parent(pages_id)
        .media_box(Rect::new(0.0, 0.0, width, height))
        .contents(content_id);
    page.resources().fonts().pair(FONT_NAME, font_id);
    drop(page);
    pdf.type1_font(font_id)
        .base_font(Name(b"Helvetica"))
        .encoding_predefined(Name(b"WinAnsiEncoding"));
    pdf.stream(content_id, &content);
    Ok(pdf.finish())
}

/// The content stream of one laid-out page: all black shapes as one filled path (symbol runs,
/// bars, rules, FIM bars), then the text in Helvetica.
fn page_content(page: &Page) -> pdf_writer::Buf {
    let height = page.height;
    let mut content = Content::new();
    content.set_fill_gray(0.0);
    for mark in &page.marks {
        match mark {
            Mark::DataMatrix { x, y, symbol } => {
                let module = PDF_MODULE_PT;
                let left = x + QUIET_ZONE_MODULES as f32 * module;
                let top = y + QUIET_ZONE_MODULES as f32 * module;
                for row in 0..symbol.size() {
                    let bottom = height - (top + (row + 1) as f32 * module);
                    for (col, len) in symbol.dark_runs(row) {
                        content.rect(
                            left + col as f32 * module,
                            bottom,
                            len as f32 * module,
                            module,
                        );
                    }
                }
            }
            Mark::Bars {
                center_x,
                y,
                height: bar_height,
                modules,
            } => {
                let left = center_x - modules.len() as f32 * BAR_MODULE_PT / 2.0;
                for (start, len) in runs(modules) {
                    content.rect(
                        left + start as f32 * BAR_MODULE_PT,
                        height - (y + bar_height),
                        len as f32 * BAR_MODULE_PT,
                        *bar_height,
                    );
                }
            }
            Mark::Rect { x, y, w, h } => {
                content.rect(*x, height - (y + h), *w, *h);
            }
            Mark::Text { .. } => {}
        }
    }
    content.fill_nonzero();
    content.begin_text();
    for mark in &page.marks {
        if let Mark::Text {
            x,
            y,
            size,
            anchor,
            text,
        } = mark
        {
            let left = match anchor {
                Anchor::Left => *x,
                Anchor::Center => x - helvetica_width(text) * size / 1000.0 / 2.0,
            };
            let baseline = height - (y + size * HELVETICA_CAP_HEIGHT / 1000.0);
            content.set_font(FONT_NAME, *size);
            content.set_text_matrix([1.0, 0.0, 0.0, 1.0, left, baseline]);
            content.show(Str(text.as_bytes()));
        }
    }
    content.end_text();
    content.finish()
}

/// Runs of `true`, as `(first index, length)`.
fn runs(modules: &[bool]) -> Vec<(usize, usize)> {
    let mut runs = Vec::new();
    let mut i = 0;
    while i < modules.len() {
        if modules.get(i) == Some(&true) {
            let start = i;
            while modules.get(i) == Some(&true) {
                i += 1;
            }
            runs.push((start, i - start));
        } else {
            i += 1;
        }
    }
    runs
}

/// Builds a multi-page PDF one page at a time: `add` lays out and writes a page, `finish`
/// writes the page tree. Only the finished content streams are kept, not the layouts.
pub(crate) struct PdfPages {
    pdf: Pdf,
    page_ids: Vec<Ref>,
    next_id: i32,
}

/// zlib level for page content streams: 6 is the usual speed/size balance.
const DEFLATE_LEVEL: u8 = 6;

const CATALOG_ID: Ref = Ref::new(1);
const PAGES_ID: Ref = Ref::new(2);
const PAGE_FONT_ID: Ref = Ref::new(3);

impl PdfPages {
    pub(crate) fn new() -> Self {
        let mut pdf = Pdf::new();
        pdf.type1_font(PAGE_FONT_ID)
            .base_font(Name(b"Helvetica"))
            .encoding_predefined(Name(b"WinAnsiEncoding"));
        Self {
            pdf,
            page_ids: Vec::new(),
            next_id: 4,
        }
    }

    pub(crate) fn add(&mut self, page: &Page) -> Result<(), LabelError> {
        let too_many = || LabelError::Render("too many PDF objects".to_owned());
        let page_id = Ref::new(self.next_id);
        let content_id = Ref::new(self.next_id.checked_add(1).ok_or_else(too_many)?);
        self.next_id = self.next_id.checked_add(2).ok_or_else(too_many)?;
        let mut pdf_page = self.pdf.page(page_id);
        pdf_page
            .parent(PAGES_ID)
            .media_box(Rect::new(0.0, 0.0, page.width, page.height))
            .contents(content_id);
        pdf_page.resources().fonts().pair(FONT_NAME, PAGE_FONT_ID);
        drop(pdf_page);
        let compressed =
            miniz_oxide::deflate::compress_to_vec_zlib(&page_content(page), DEFLATE_LEVEL);
        self.pdf
            .stream(content_id, &compressed)
            .filter(Filter::FlateDecode);
        self.page_ids.push(page_id);
        Ok(())
    }

    pub(crate) fn finish(mut self) -> Vec<u8> {
        self.pdf.catalog(CATALOG_ID).pages(PAGES_ID);
        let count = i32::try_from(self.page_ids.len()).unwrap_or(i32::MAX);
        self.pdf
            .pages(PAGES_ID)
            .kids(self.page_ids.iter().copied())
            .count(count);
        self.pdf.finish()
    }
}
