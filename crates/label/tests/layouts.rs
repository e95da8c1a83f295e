//! The three layouts in every format, read back by this crate (rxing) and by independent
//! decoders when installed: zxing-cpp (PyPI `zxing-cpp`, through `tests/zxing_read.py`), libdmtx
//! (`dmtxread`) and poppler (`pdftoppm`, `pdfinfo`). With `STAMPLINE_REQUIRE_ALL=1` a missing
//! tool fails the test instead of skipping it.
//!
//! zxing-cpp runs under the Python named by `STAMPLINE_ZXING_PYTHON` (`.ci/run` makes a venv),
//! else `python3`.

// In tests a panic is the failure report.
#![allow(clippy::unwrap_used)]

use std::{
    path::{Path, PathBuf},
    process::Command,
};

mod common;
use common::{ScratchDir, find_tool, png_of_luma, random_bytes, skip_or_fail};

use stampline_label::{
    Format, LabelError, Layout, MAX_BATCH_PIECES, Piece, decode_luma, decode_png,
    impb::mod10_check_digit, page::MAX_ADDRESS_LINES, render_document, render_layout, sample,
};

const LAYOUTS: [Layout; 3] = [Layout::Envelope10, Layout::Label4x6, Layout::Sheet];

/// A postage-sized item (126 bytes) holding NUL, 0xFF and everything between.
fn item(seed: u64) -> Vec<u8> {
    let mut item = random_bytes(seed, 126);
    item[0] = 0x00;
    item[125] = 0xFF;
    item
}

fn luma_of_png(png: &[u8]) -> (u32, u32, Vec<u8>) {
    let image = image::load_from_memory(png).unwrap().into_luma8();
    let (w, h) = image.dimensions();
    (w, h, image.into_raw())
}

// ---- In-process ---------------------------------------------------------------------------

#[test]
fn every_layout_as_png_at_203_300_and_600_dpi_reads_back_to_the_exact_bytes() {
    for (n, layout) in LAYOUTS.into_iter().enumerate() {
        for dpi in [203, 300, 600] {
            let item = item(n as u64 * 1000 + u64::from(dpi));
            let png = render_layout(layout, Format::Png, dpi, &[sample::piece(&item)]).unwrap();
            assert_eq!(decode_png(&png).unwrap(), item, "{layout:?} at {dpi} dpi");
        }
    }
}

#[test]
fn png_pages_have_the_exact_pixel_size_of_the_page() {
    for (layout, dpi, size) in [
        (Layout::Label4x6, 203, (812, 1218)),
        (Layout::Label4x6, 300, (1200, 1800)),
        (Layout::Envelope10, 300, (2850, 1238)),
        (Layout::Sheet, 300, (2550, 3300)),
    ] {
        let png = render_layout(layout, Format::Png, dpi, &[sample::piece(&item(1))]).unwrap();
        let (w, h, _) = luma_of_png(&png);
        assert_eq!((w, h), size, "{layout:?} at {dpi} dpi");
    }
}

#[test]
fn the_envelope_has_fim_d_bars_two_inches_from_the_right_edge() {
    let dpi = 300;
    let png = render_layout(
        Layout::Envelope10,
        Format::Png,
        dpi,
        &[sample::piece(&item(2))],
    )
    .unwrap();
    let (w, _, luma) = luma_of_png(&png);
    // A row 0.3 in from the top, right of the return address, crosses the FIM bars only.
    let row = &luma[(w as usize) * 90..(w as usize) * 91];
    let mut bars = Vec::new();
    let mut x = w as usize / 2;
    while x < row.len() {
        if row[x] == 0 {
            let start = x;
            while x < row.len() && row[x] == 0 {
                x += 1;
            }
            bars.push((start, x - start));
        } else {
            x += 1;
        }
    }
    // FIM D is 111010111: bars at positions 0,1,2,4,6,7,8 of a 1/16 in (18.75 px) pitch.
    assert_eq!(bars.len(), 7, "{bars:?}");
    let pitch = 300.0 / 16.0;
    let first = bars[0].0 as f64;
    for ((start, width), position) in bars.iter().zip([0, 1, 2, 4, 6, 7, 8]) {
        assert!((*start as f64 - first - position as f64 * pitch).abs() <= 1.0);
        assert!((9..=10).contains(width), "1/32 in wide: {width} px");
    }
    let right_bar_center = bars[6].0 as f64 + bars[6].1 as f64 / 2.0;
    let from_right_in = (f64::from(w) - right_bar_center) / f64::from(dpi);
    assert!(
        (from_right_in - 2.0).abs() < 1.0 / 32.0,
        "{from_right_in} in"
    );
}

#[test]
fn svg_holds_the_module_grid_of_the_exact_item_and_the_page_size_in_inches() {
    let item = item(3);
    for (layout, size) in [
        (Layout::Envelope10, "width=\"9.5in\" height=\"4.125in\""),
        (Layout::Label4x6, "width=\"4in\" height=\"6in\""),
        (Layout::Sheet, "width=\"8.5in\" height=\"11in\""),
    ] {
        let svg = String::from_utf8(
            render_layout(layout, Format::Svg, 300, &[sample::piece(&item)]).unwrap(),
        )
        .unwrap();
        assert!(svg.contains(size), "{layout:?}");
        // Read the runs `M{col} {row}h{len}v1h-{len}z` of the symbol's path back into a grid.
        let start = svg.find("class=\"datamatrix\"").unwrap();
        let d = &svg[start..];
        let d = &d[d.find(" d=\"").unwrap() + 4..];
        let d = &d[..d.find('"').unwrap()];
        let runs: Vec<(usize, usize, usize)> = d
            .split('z')
            .filter(|run| !run.is_empty())
            .map(|run| {
                let run = run.strip_prefix('M').unwrap();
                let (col, rest) = run.split_once(' ').unwrap();
                let (row, rest) = rest.split_once('h').unwrap();
                let (len, _) = rest.split_once('v').unwrap();
                (
                    col.parse().unwrap(),
                    row.parse().unwrap(),
                    len.parse().unwrap(),
                )
            })
            .collect();
        let size = runs.iter().map(|(_, row, _)| row + 1).max().unwrap();
        let mut grid = vec![false; size * size];
        for (col, row, len) in runs {
            grid[row * size + col..row * size + col + len].fill(true);
        }
        assert_eq!(datamatrix::DataMatrix::decode(&grid, size).unwrap(), item);
    }
}

/// Reads a `^GFA` field back into pixels, independently of the encoder: hex rows with ZPL's
/// ASCII compression (`G`..`Y`, `g`..`z` counts, `,` `!` fills, `:` repeat).
fn zpl_graphic(label: &str) -> (u32, u32, Vec<u8>) {
    let field = &label[label.find("^GFA,").unwrap() + 5..];
    let field = &field[..field.find("^FS").unwrap()];
    let mut parts = field.splitn(4, ',');
    let total: usize = parts.next().unwrap().parse().unwrap();
    assert_eq!(parts.next().unwrap().parse::<usize>().unwrap(), total);
    let row_bytes: usize = parts.next().unwrap().parse().unwrap();
    let data = parts.next().unwrap();
    let height = total / row_bytes;
    let mut rows: Vec<String> = Vec::new();
    let mut row = String::new();
    let mut count = 0usize;
    for ch in data.chars().filter(|c| !c.is_whitespace()) {
        match ch {
            'G'..='Y' => count += ch as usize - 'G' as usize + 1,
            'g'..='z' => count += (ch as usize - 'g' as usize + 1) * 20,
            ',' | '!' => {
                let fill = if ch == ',' { '0' } else { 'F' };
                while row.len() < 2 * row_bytes {
                    row.push(fill);
                }
            }
            ':' => row = rows.last().unwrap().clone(),
            '0'..='9' | 'A'..='F' => {
                for _ in 0..count.max(1) {
                    row.push(ch);
                }
                count = 0;
            }
            other => panic!("unexpected {other:?} in ^GF data"),
        }
        assert!(row.len() <= 2 * row_bytes, "row overflows");
        if row.len() == 2 * row_bytes {
            rows.push(std::mem::take(&mut row));
        }
    }
    assert_eq!(rows.len(), height, "rows");
    let width = row_bytes * 8;
    let mut luma = vec![255u8; width * height];
    for (y, hex) in rows.iter().enumerate() {
        for (i, byte) in hex.as_bytes().chunks(2).enumerate() {
            let byte = u8::from_str_radix(std::str::from_utf8(byte).unwrap(), 16).unwrap();
            for bit in 0..8 {
                if byte & (0x80 >> bit) != 0 {
                    luma[y * width + i * 8 + bit] = 0;
                }
            }
        }
    }
    (width as u32, height as u32, luma)
}

#[test]
fn zpl_is_one_xa_xz_label_per_piece_whose_graphic_reads_back_to_the_exact_bytes() {
    for dpi in [203, 300] {
        let items: Vec<Vec<u8>> = (0..3).map(|i| item(40 + i + u64::from(dpi))).collect();
        let pieces: Vec<Piece> = items.iter().map(|item| sample::piece(item)).collect();
        let zpl =
            String::from_utf8(render_layout(Layout::Label4x6, Format::Zpl, dpi, &pieces).unwrap())
                .unwrap();
        assert!(zpl.starts_with("^XA"));
        assert!(zpl.trim_end().ends_with("^XZ"));
        let labels: Vec<&str> = zpl.split("^XZ").filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(labels.len(), 3);
        let png = render_layout(Layout::Label4x6, Format::Png, dpi, &pieces[..1]).unwrap();
        let (pw, ph, png_luma) = luma_of_png(&png);
        for (label, item) in labels.iter().zip(&items) {
            assert!(label.trim_start().starts_with("^XA"));
            assert!(label.contains(&format!("^PW{pw}")) && label.contains(&format!("^LL{ph}")));
            let (w, h, luma) = zpl_graphic(label);
            assert_eq!((w as usize).div_ceil(8) * 8, (pw as usize).div_ceil(8) * 8);
            assert_eq!(h, ph);
            assert_eq!(decode_luma(w, h, &luma).unwrap(), *item, "{dpi} dpi");
        }
        // The first label's graphic is the PNG's pixels, dot for dot.
        let (w, _, luma) = zpl_graphic(labels[0]);
        for y in 0..ph as usize {
            for x in 0..pw as usize {
                assert_eq!(
                    luma[y * w as usize + x] < 128,
                    png_luma[y * pw as usize + x] < 128,
                    "dot {x},{y}"
                );
            }
        }
    }
}

#[test]
fn a_batch_is_one_page_per_piece_in_a_pdf_and_ten_to_a_sheet() {
    let items: Vec<Vec<u8>> = (0..23).map(|i| item(100 + i)).collect();
    let pieces: Vec<Piece> = items.iter().map(|item| sample::piece(item)).collect();
    for (layout, pages) in [
        (Layout::Envelope10, 23),
        (Layout::Label4x6, 23),
        (Layout::Sheet, 3),
    ] {
        let pdf = render_layout(layout, Format::Pdf, 300, &pieces).unwrap();
        let text = String::from_utf8_lossy(&pdf);
        assert!(text.contains(&format!("/Count {pages}")), "{layout:?}");
        assert_eq!(
            text.matches("/Type /Page\n").count()
                + text.matches("/Type /Page ").count()
                + text.matches("/Type /Page/").count(),
            pages,
            "{layout:?}"
        );
    }
}

#[test]
fn layouts_formats_and_contents_that_do_not_go_together_are_refused() {
    let item = item(5);
    let one = [sample::piece(&item)];
    let two = [sample::piece(&item), sample::piece(&item)];
    let does_not_fit = |r: Result<Vec<u8>, LabelError>| matches!(r, Err(LabelError::DoesNotFit(_)));
    assert!(does_not_fit(render_layout(
        Layout::Label4x6,
        Format::Png,
        300,
        &two
    )));
    assert!(does_not_fit(render_layout(
        Layout::Label4x6,
        Format::Svg,
        300,
        &two
    )));
    assert!(does_not_fit(render_layout(
        Layout::Envelope10,
        Format::Zpl,
        203,
        &one
    )));
    assert!(does_not_fit(render_layout(
        Layout::Sheet,
        Format::Pdf,
        300,
        &[]
    )));
    let too_many = vec![sample::piece(&item); MAX_BATCH_PIECES + 1];
    assert!(does_not_fit(render_layout(
        Layout::Sheet,
        Format::Pdf,
        300,
        &too_many
    )));
    // Eleven on a sheet PNG is two pages.
    let eleven = vec![sample::piece(&item); 11];
    assert!(does_not_fit(render_layout(
        Layout::Sheet,
        Format::Png,
        300,
        &eleven
    )));
    assert!(render_layout(Layout::Sheet, Format::Png, 300, &eleven[..10]).is_ok());

    let mut no_tracking = sample::piece(&item);
    no_tracking.tracking = None;
    assert!(matches!(
        render_layout(Layout::Label4x6, Format::Pdf, 300, &[no_tracking.clone()]),
        Err(LabelError::BadBarcode(_))
    ));
    assert!(render_layout(Layout::Envelope10, Format::Pdf, 300, &[no_tracking]).is_ok());

    let mut long_address = sample::piece(&item);
    long_address.to = vec!["LINE".to_owned(); MAX_ADDRESS_LINES + 1];
    assert!(matches!(
        render_layout(Layout::Envelope10, Format::Pdf, 300, &[long_address]),
        Err(LabelError::BadText(_))
    ));
    let mut accented = sample::piece(&item);
    accented.from = vec!["CAF\u{c9}".to_owned()];
    assert!(matches!(
        render_layout(Layout::Label4x6, Format::Pdf, 300, &[accented]),
        Err(LabelError::BadText(_))
    ));
    let big = random_bytes(6, 600);
    assert!(does_not_fit(render_layout(
        Layout::Envelope10,
        Format::Pdf,
        300,
        &[sample::piece(&big)]
    )));
    assert!(matches!(
        render_layout(Layout::Label4x6, Format::Png, 72, &one),
        Err(LabelError::BadDpi { .. })
    ));
}

#[test]
fn long_address_lines_shrink_to_fit_and_still_read_back() {
    let item = item(7);
    let mut wide = sample::piece(&item);
    wide.to = vec!["W".repeat(40); MAX_ADDRESS_LINES];
    wide.from = vec!["M".repeat(40); MAX_ADDRESS_LINES];
    for layout in [Layout::Envelope10, Layout::Label4x6] {
        let png = render_layout(layout, Format::Png, 203, std::slice::from_ref(&wide)).unwrap();
        assert_eq!(decode_png(&png).unwrap(), item, "{layout:?}");
    }
}

// ---- Independent tools --------------------------------------------------------------------

/// The Python that can `import zxingcpp`, or `None` after skipping.
fn zxing_python() -> Option<String> {
    let python = std::env::var("STAMPLINE_ZXING_PYTHON").unwrap_or_else(|_| "python3".to_owned());
    let works = Command::new(&python)
        .args(["-c", "import zxingcpp, PIL"])
        .output()
        .is_ok_and(|out| out.status.success());
    if works {
        Some(python)
    } else {
        skip_or_fail(
            "zxing-cpp",
            &format!("{python} cannot import zxingcpp and PIL; set STAMPLINE_ZXING_PYTHON"),
        );
        None
    }
}

/// One barcode as zxing-cpp reports it.
#[derive(Debug)]
struct Read {
    format: String,
    symbology: String,
    bytes: Vec<u8>,
    text: String,
}

fn zxing_read(python: &str, file: &Path) -> Vec<Read> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/zxing_read.py");
    let out = Command::new(python).arg(script).arg(file).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|line| {
            let f: Vec<&str> = line.split('\t').collect();
            Read {
                format: f[1].to_owned(),
                symbology: f[2].to_owned(),
                bytes: (0..f[3].len())
                    .step_by(2)
                    .map(|i| u8::from_str_radix(&f[3][i..i + 2], 16).unwrap())
                    .collect(),
                text: f.get(4).copied().unwrap_or_default().to_owned(),
            }
        })
        .collect()
}

fn dmtxread(tool: &Path, file: &Path) -> Vec<u8> {
    let out = Command::new(tool).arg("-N1").arg(file).output().unwrap();
    assert!(
        out.status.success(),
        "dmtxread found nothing in {}",
        file.display()
    );
    out.stdout
}

/// Every layout's images for the outside decoders: PNG at 203 and 300 dpi, the PDF rendered by
/// pdftoppm at 300 dpi, and (4×6) the ZPL graphic at 203 and 300 dpi. `(name, file, item)`.
fn images_for_outside_decoders(
    dir: &ScratchDir,
    pdftoppm: &Path,
) -> Vec<(String, PathBuf, Vec<u8>)> {
    let mut images = Vec::new();
    for (n, layout) in LAYOUTS.into_iter().enumerate() {
        for dpi in [203, 300] {
            let item = item(200 + n as u64 * 10 + u64::from(dpi));
            let png = render_layout(layout, Format::Png, dpi, &[sample::piece(&item)]).unwrap();
            let name = format!("{layout:?}-{dpi}.png");
            images.push((name.clone(), dir.file(&name, &png), item));
        }
        let item = item(300 + n as u64);
        let pdf = render_layout(layout, Format::Pdf, 300, &[sample::piece(&item)]).unwrap();
        let pdf_path = dir.file(&format!("{layout:?}.pdf"), &pdf);
        let stem = dir.path().join(format!("{layout:?}-pdf"));
        let status = Command::new(pdftoppm)
            .args(["-r", "300", "-png", "-singlefile"])
            .arg(&pdf_path)
            .arg(&stem)
            .status()
            .unwrap();
        assert!(status.success(), "pdftoppm failed");
        images.push((
            format!("{layout:?} PDF at 300 dpi"),
            stem.with_extension("png"),
            item,
        ));
    }
    for dpi in [203, 300] {
        let item = item(400 + u64::from(dpi));
        let zpl =
            render_layout(Layout::Label4x6, Format::Zpl, dpi, &[sample::piece(&item)]).unwrap();
        let (w, h, luma) = zpl_graphic(std::str::from_utf8(&zpl).unwrap());
        let name = format!("zpl-{dpi}.png");
        images.push((
            name.clone(),
            dir.file(&name, &png_of_luma(w, h, &luma)),
            item,
        ));
    }
    images
}

#[test]
fn zxing_cpp_and_dmtxread_read_every_layout_back_to_the_exact_bytes() {
    let (Some(pdftoppm), Some(dmtx), Some(python)) = (
        find_tool("pdftoppm", "poppler-utils"),
        find_tool("dmtxread", "dmtx-utils"),
        zxing_python(),
    ) else {
        return;
    };
    let dir = ScratchDir::new("decoders");
    for (name, file, item) in images_for_outside_decoders(&dir, &pdftoppm) {
        let reads = zxing_read(&python, &file);
        let matrices: Vec<&Read> = reads.iter().filter(|r| r.format == "Data Matrix").collect();
        assert_eq!(matrices.len(), 1, "{name}: {reads:?}");
        assert_eq!(matrices[0].bytes, item, "zxing-cpp on {name}");
        assert_eq!(dmtxread(&dmtx, &file), item, "dmtxread on {name}");
        // Our own reader agrees.
        assert_eq!(
            decode_png(&std::fs::read(&file).unwrap()).unwrap(),
            item,
            "rxing on {name}"
        );
    }
}

#[test]
fn the_impb_reads_back_as_gs1_128_with_the_expected_digits_and_check_digit() {
    let (Some(pdftoppm), Some(python)) = (find_tool("pdftoppm", "poppler-utils"), zxing_python())
    else {
        return;
    };
    let dir = ScratchDir::new("impb");
    let item = item(9);
    let mut images = Vec::new();
    for (zip, serial) in [("20260", "1234567"), ("202600004", "0000042")] {
        let mut piece = sample::piece(&item);
        piece.tracking = Some(sample::tracking(zip, serial));
        for dpi in [203, 300] {
            let png = render_layout(Layout::Label4x6, Format::Png, dpi, &[piece.clone()]).unwrap();
            images.push((
                zip,
                serial,
                dir.file(&format!("impb-{zip}-{dpi}.png"), &png),
            ));
        }
        let pdf = render_layout(Layout::Label4x6, Format::Pdf, 300, &[piece]).unwrap();
        let pdf_path = dir.file(&format!("impb-{zip}.pdf"), &pdf);
        let stem = dir.path().join(format!("impb-{zip}-pdf"));
        assert!(
            Command::new(&pdftoppm)
                .args(["-r", "300", "-png", "-singlefile"])
                .arg(&pdf_path)
                .arg(&stem)
                .status()
                .unwrap()
                .success()
        );
        images.push((zip, serial, stem.with_extension("png")));
    }
    for (zip, serial, file) in images {
        let reads = zxing_read(&python, &file);
        let code128: Vec<&Read> = reads.iter().filter(|r| r.format == "Code 128").collect();
        assert_eq!(code128.len(), 1, "{}: {reads:?}", file.display());
        let read = code128[0];
        // ]C1: Code 128 with FNC1 in the first position, i.e. GS1-128.
        assert_eq!(read.symbology, "]C1", "{}", file.display());
        let expected_body = format!("94001900000001{serial}");
        let check = mod10_check_digit(&expected_body).unwrap();
        assert_eq!(
            read.text,
            format!("(420){zip}(94){}{check}", &expected_body[2..])
        );
        // The raw content: 420, the ZIP, the GS separator, the 22-digit PIC.
        let pic = format!("{expected_body}{check}");
        assert_eq!(read.bytes, format!("420{zip}\u{1d}{pic}").into_bytes());
        let digits = pic.as_bytes();
        assert_eq!(
            mod10_check_digit(&pic[..21]),
            Some(digits[21] - b'0'),
            "check digit"
        );
    }
}

#[test]
fn pdfinfo_shows_the_exact_page_size_of_every_layout() {
    let Some(pdfinfo) = find_tool("pdfinfo", "poppler-utils") else {
        return;
    };
    let dir = ScratchDir::new("pdfinfo");
    let item = item(11);
    let pieces = vec![sample::piece(&item); 12];
    for (layout, count, size, pages) in [
        (1, Layout::Label4x6, "288 x 432 pts", 1),
        (1, Layout::Envelope10, "684 x 297 pts", 1),
        (1, Layout::Sheet, "612 x 792 pts (letter)", 1),
        (12, Layout::Label4x6, "288 x 432 pts", 12),
        (12, Layout::Sheet, "612 x 792 pts (letter)", 2),
    ]
    .map(|(count, layout, size, pages)| (layout, count, size, pages))
    {
        let pdf = render_layout(layout, Format::Pdf, 300, &pieces[..count]).unwrap();
        let path = dir.file(&format!("{layout:?}-{count}.pdf"), &pdf);
        let out = Command::new(&pdfinfo).arg(&path).output().unwrap();
        assert!(out.status.success());
        let info = String::from_utf8(out.stdout).unwrap();
        assert!(
            info.contains(&format!("Page size:       {size}")),
            "{layout:?}: {info}"
        );
        assert!(
            info.contains(&format!("Pages:           {pages}\n")),
            "{layout:?}: {info}"
        );
    }
}

// ---- Value documents (ticket, check, coupon, gift certificate) ----------------------------

/// An item the size of a value item with a few fields (160 bytes).
fn value_item(seed: u64) -> Vec<u8> {
    random_bytes(seed, 160)
}

#[test]
fn every_document_as_png_at_203_300_and_600_dpi_reads_back_and_has_its_page_size() {
    for dpi in [203, 300, 600] {
        let item = value_item(u64::from(dpi));
        for (name, doc) in sample::documents(&item) {
            let png = render_document(&doc, Format::Png, dpi).unwrap();
            assert_eq!(decode_png(&png).unwrap(), item, "{name} at {dpi} dpi");
            let (w, h, _) = luma_of_png(&png);
            let (pw, ph) = doc.page_pt();
            let px = |pt: f32| (pt / 72.0 * dpi as f32).round() as u32;
            assert_eq!((w, h), (px(pw), px(ph)), "{name} at {dpi} dpi");
        }
    }
}

#[test]
fn zxing_cpp_and_dmtxread_read_every_document_from_png_pdf_and_zpl() {
    let (Some(pdftoppm), Some(dmtx), Some(python)) = (
        find_tool("pdftoppm", "poppler-utils"),
        find_tool("dmtxread", "dmtx-utils"),
        zxing_python(),
    ) else {
        return;
    };
    let dir = ScratchDir::new("documents");
    let item = value_item(77);
    let mut images = Vec::new();
    for (name, doc) in sample::documents(&item) {
        for dpi in [203, 300] {
            let png = render_document(&doc, Format::Png, dpi).unwrap();
            images.push((
                format!("{name} png {dpi}"),
                dir.file(&format!("{name}-{dpi}.png"), &png),
            ));
        }
        let pdf = render_document(&doc, Format::Pdf, 300).unwrap();
        let pdf_path = dir.file(&format!("{name}.pdf"), &pdf);
        let stem = dir.path().join(format!("{name}-pdf"));
        let status = Command::new(&pdftoppm)
            .args(["-r", "300", "-png", "-singlefile"])
            .arg(&pdf_path)
            .arg(&stem)
            .status()
            .unwrap();
        assert!(status.success(), "pdftoppm failed on {name}");
        images.push((format!("{name} pdf"), stem.with_extension("png")));
        if name != "check" {
            let zpl = render_document(&doc, Format::Zpl, 203).unwrap();
            let (w, h, luma) = zpl_graphic(std::str::from_utf8(&zpl).unwrap());
            images.push((
                format!("{name} zpl"),
                dir.file(&format!("{name}-zpl.png"), &png_of_luma(w, h, &luma)),
            ));
        }
    }
    for (name, file) in images {
        let reads = zxing_read(&python, &file);
        let matrices: Vec<&Read> = reads.iter().filter(|r| r.format == "Data Matrix").collect();
        assert_eq!(matrices.len(), 1, "{name}: {reads:?}");
        assert_eq!(matrices[0].bytes, item, "zxing-cpp on {name}");
        assert_eq!(dmtxread(&dmtx, &file), item, "dmtxread on {name}");
    }
}

#[test]
fn documents_refuse_what_they_cannot_print_and_say_why() {
    use stampline_label::Document;
    let item = value_item(5);
    let docs = sample::documents(&item);
    let doc = |kind: &str| docs.iter().find(|(n, _)| *n == kind).unwrap().1.clone();
    let message = |r: Result<Vec<u8>, LabelError>| r.unwrap_err().to_string();

    // A check is not a thermal label.
    let m = message(render_document(&doc("check"), Format::Zpl, 203));
    assert!(m.contains("4 in thermal printer"), "{m}");
    // Only printable ASCII is printed.
    let Document::Ticket(mut ticket) = doc("ticket") else {
        unreachable!()
    };
    ticket.event = "CAF\u{c9} CONCERT".to_owned();
    let m = message(render_document(
        &Document::Ticket(ticket.clone()),
        Format::Png,
        203,
    ));
    assert!(m.contains("event") && m.contains("printable ASCII"), "{m}");
    // A line too long even at the smallest size.
    ticket.event = "X".repeat(101);
    let m = message(render_document(&Document::Ticket(ticket), Format::Pdf, 203));
    assert!(m.contains("event") && m.contains("at most 100"), "{m}");
    // An item too large for the ticket's stub.
    let big = random_bytes(6, 400);
    let Document::Ticket(mut ticket) = doc("ticket") else {
        unreachable!()
    };
    ticket.item = &big;
    let m = message(render_document(&Document::Ticket(ticket), Format::Png, 203));
    assert!(m.contains("400 bytes") && m.contains("shorten"), "{m}");
    // Terms of more than four lines.
    let Document::Coupon(mut coupon) = doc("coupon") else {
        unreachable!()
    };
    coupon.terms = vec!["SOME TERMS".to_owned(); 5];
    let m = message(render_document(&Document::Coupon(coupon), Format::Png, 203));
    assert!(m.contains("at most 4"), "{m}");
}

#[test]
fn terms_are_wrapped_at_spaces_within_the_width() {
    use stampline_label::document::wrap_words;
    assert_eq!(
        wrap_words("one two three four five", 9, 4).unwrap(),
        vec!["one two", "three", "four five"]
    );
    assert_eq!(
        wrap_words("abcdefghijkl mn", 5, 4).unwrap(),
        vec!["abcde", "fghij", "kl mn"]
    );
    assert!(wrap_words("", 10, 1).unwrap().is_empty());
    let e = wrap_words("a b c d e", 1, 3).unwrap_err().to_string();
    assert!(e.contains("5 lines") && e.contains("3 lines"), "{e}");
}
