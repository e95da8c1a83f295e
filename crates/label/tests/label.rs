//! End-to-end behaviour of the label crate: symbol sizes, PNG and PDF rendering, and reading a
//! label back to the exact item bytes — with rxing, and with independent tools (poppler's
//! `pdftoppm`, libdmtx's `dmtxread`) when they are installed.

// In tests a panic is the failure report.
#![allow(clippy::unwrap_used)]

use std::process::Command;

mod common;
use common::{ScratchDir, find_tool, png_of_luma, random_bytes};

use stampline_label::{
    DEFAULT_DPI, LabelError, LabelSpec, MAX_DATA_BYTES, datamatrix, decode_luma, decode_png,
    render_pdf, render_png, sample,
};

/// Every byte value once, in a shuffled order, with NUL and 0xFF at both ends.
fn all_byte_values() -> Vec<u8> {
    let mut bytes: Vec<u8> = (1..=254).collect();
    let order = random_bytes(7, bytes.len());
    let mut keyed: Vec<(u8, u8)> = order.into_iter().zip(bytes.drain(..)).collect();
    keyed.sort();
    let mut out = vec![0x00, 0xFF];
    out.extend(keyed.into_iter().map(|(_, b)| b));
    out.extend([0xFF, 0x00]);
    out
}

fn spec(item: &[u8], dpi: u32) -> LabelSpec<'_> {
    LabelSpec {
        item,
        lines: sample::postage_lines(),
        dpi,
    }
}

fn png_dimensions(png: &[u8]) -> (u32, u32) {
    let image = image::load_from_memory_with_format(png, image::ImageFormat::Png).unwrap();
    (image.width(), image.height())
}

#[test]
fn a_126_byte_item_gives_a_44_by_44_symbol() {
    let symbol = datamatrix(&random_bytes(1, 126)).unwrap();
    assert_eq!(symbol.size(), 44);
}

#[test]
fn symbols_are_square_and_grow_with_the_data() {
    let mut last = 0;
    for len in [0, 1, 10, 50, 126, 127, 300, 800, MAX_DATA_BYTES] {
        let symbol = datamatrix(&random_bytes(len as u64, len)).unwrap();
        assert!(symbol.size() >= last, "{len} bytes");
        last = symbol.size();
        // The L-shaped finder: left column and bottom row all dark.
        for i in 0..symbol.size() {
            assert!(symbol.is_dark(0, i) && symbol.is_dark(i, symbol.size() - 1));
        }
        assert!(
            !symbol.is_dark(symbol.size(), 0),
            "outside the grid is light"
        );
    }
    assert_eq!(last, 144);
}

#[test]
fn an_item_over_the_limit_is_refused_with_the_limit_named() {
    let err = datamatrix(&vec![0xA5; MAX_DATA_BYTES + 1]).unwrap_err();
    assert!(matches!(
        err,
        LabelError::DataTooLarge { len, max: MAX_DATA_BYTES } if len == MAX_DATA_BYTES + 1
    ));
    assert!(err.to_string().contains(&MAX_DATA_BYTES.to_string()));
}

#[test]
fn png_round_trips_the_exact_bytes_at_203_300_and_600_dpi() {
    let payloads = [
        all_byte_values(),
        random_bytes(11, 126),
        random_bytes(12, 126),
        vec![0x00; 126],
        vec![0xFF; 40],
        b"SL".to_vec(),
    ];
    for dpi in [203, 300, 600] {
        for (i, item) in payloads.iter().enumerate() {
            let png = render_png(&spec(item, dpi)).unwrap();
            assert_eq!(&decode_png(&png).unwrap(), item, "payload {i} at {dpi} dpi");
        }
    }
}

#[test]
fn png_round_trips_the_largest_item() {
    let item = random_bytes(99, MAX_DATA_BYTES);
    let png = render_png(&spec(&item, DEFAULT_DPI)).unwrap();
    assert_eq!(decode_png(&png).unwrap(), item);
}

#[test]
fn png_without_text_lines_is_just_the_symbol_and_round_trips() {
    let item = random_bytes(5, 126);
    let png = render_png(&LabelSpec {
        item: &item,
        lines: Vec::new(),
        dpi: 300,
    })
    .unwrap();
    // 44 modules + 2 × 2 quiet modules, 7 px each.
    assert_eq!(png_dimensions(&png), (48 * 7, 48 * 7));
    assert_eq!(decode_png(&png).unwrap(), item);
}

#[test]
fn a_postage_label_at_300_dpi_is_about_three_and_a_third_by_one_and_an_eighth_inches() {
    let png = render_png(&spec(&random_bytes(3, 126), 300)).unwrap();
    assert_eq!(png_dimensions(&png), (1008, 343));
}

#[test]
fn png_records_its_resolution_in_a_phys_chunk() {
    let png = render_png(&spec(b"x", 600)).unwrap();
    let at = png.windows(4).position(|w| w == b"pHYs").unwrap();
    let per_metre = u32::from_be_bytes(png[at + 4..at + 8].try_into().unwrap());
    assert_eq!(per_metre, 23_622); // 600 dpi
    assert_eq!(png[at + 12], 1, "unit is the metre");
}

#[test]
fn a_label_turned_a_quarter_turn_still_decodes() {
    let item = all_byte_values();
    let png = render_png(&spec(&item, 300)).unwrap();
    let image = image::load_from_memory(&png)
        .unwrap()
        .rotate90()
        .into_luma8();
    let (width, height) = image.dimensions();
    assert_eq!(decode_luma(width, height, image.as_raw()).unwrap(), item);
}

#[test]
fn a_png_without_a_barcode_is_no_barcode() {
    let (width, height) = (400, 200);
    let mut luma = vec![255u8; (width * height) as usize];
    // Some black bars, so the binarizer has something to look at.
    for y in 50..150 {
        for x in (40..360).step_by(20) {
            for dx in 0..8 {
                luma[(y * width + x + dx) as usize] = 0;
            }
        }
    }
    let png = png_of_luma(width, height, &luma);
    assert!(matches!(decode_png(&png), Err(LabelError::NoBarcode)));
    let blank = png_of_luma(50, 50, &[255; 2500]);
    assert!(matches!(decode_png(&blank), Err(LabelError::NoBarcode)));
}

#[test]
fn garbage_bytes_are_a_bad_image() {
    for garbage in [
        Vec::new(),
        b"not a png at all".to_vec(),
        random_bytes(4, 4096),
    ] {
        assert!(matches!(decode_png(&garbage), Err(LabelError::BadImage(_))));
    }
}

#[test]
fn a_truncated_png_is_a_bad_image() {
    let png = render_png(&spec(b"truncated", 300)).unwrap();
    for len in [8, 40, png.len() / 2] {
        assert!(matches!(
            decode_png(&png[..len]),
            Err(LabelError::BadImage(_))
        ));
    }
}

#[test]
fn damaged_pngs_give_errors_and_never_panic() {
    let png = render_png(&spec(&random_bytes(8, 126), 203)).unwrap();
    let noise = random_bytes(9, 600);
    for (i, pair) in noise.chunks_exact(3).enumerate() {
        let mut damaged = png.clone();
        let at = (usize::from(pair[0]) << 8 | usize::from(pair[1])) % damaged.len();
        damaged[at] ^= pair[2] | 1;
        // Any outcome but a panic is fine; a CRC-checked PNG is usually refused outright.
        let _ = decode_png(&damaged);
        if i % 50 == 0 {
            let _ = decode_png(&damaged[..at]);
        }
    }
}

#[test]
fn damaged_and_noisy_images_give_errors_and_never_panic() {
    let png = render_png(&spec(&random_bytes(10, 126), 203)).unwrap();
    let label = image::load_from_memory(&png).unwrap().into_luma8();
    let (width, height) = label.dimensions();
    let noise = random_bytes(13, 3 * 40);
    for (round, spots) in noise.chunks_exact(3 * 8).enumerate() {
        let mut luma = label.as_raw().clone();
        // Paint eight random squares black or white over the label.
        for spot in spots.chunks_exact(3) {
            let x0 = u32::from(spot[0]) * width / 256;
            let y0 = u32::from(spot[1]) * height / 256;
            let side = 4 + u32::from(spot[2] % 24);
            let value = if spot[2] & 1 == 0 { 0 } else { 255 };
            for y in y0..(y0 + side).min(height) {
                for x in x0..(x0 + side).min(width) {
                    luma[(y * width + x) as usize] = value;
                }
            }
        }
        // Error correction may still read it; any answer but a panic is acceptable.
        let _ = decode_luma(width, height, &luma);
        // Pure noise.
        let random = random_bytes(round as u64, 300 * 200);
        assert!(decode_luma(300, 200, &random).is_err());
    }
}

#[test]
fn an_oversized_png_header_is_refused_before_decoding() {
    // A valid 1-pixel PNG whose IHDR claims 100000 × 100000.
    let mut png = png_of_luma(1, 1, &[255]);
    png[16..20].copy_from_slice(&100_000u32.to_be_bytes());
    png[20..24].copy_from_slice(&100_000u32.to_be_bytes());
    assert!(matches!(decode_png(&png), Err(LabelError::BadImage(_))));
}

#[test]
fn text_with_unprintable_characters_is_refused() {
    let item = b"x";
    let result = render_png(&LabelSpec {
        item,
        lines: vec!["\u{1F4EE} POSTAGE".to_owned()],
        dpi: 300,
    });
    assert!(matches!(result, Err(LabelError::BadText(_))));
    let result = render_pdf(&LabelSpec {
        item,
        lines: vec!["line\nbreak".to_owned()],
        dpi: 300,
    });
    assert!(matches!(result, Err(LabelError::BadText(_))));
}

#[test]
fn an_unsupported_resolution_is_refused() {
    assert!(matches!(
        render_png(&spec(b"x", 72)),
        Err(LabelError::BadDpi { dpi: 72, .. })
    ));
}

#[test]
fn pdf_starts_with_the_header_and_holds_the_text_lines() {
    let pdf = render_pdf(&spec(&random_bytes(6, 126), DEFAULT_DPI)).unwrap();
    assert!(pdf.starts_with(b"%PDF-"));
    let text = String::from_utf8_lossy(&pdf);
    for line in sample::postage_lines() {
        assert!(text.contains(&format!("({line})")), "{line}");
    }
    assert!(text.contains("/BaseFont /Helvetica"));
    assert!(
        !text.contains("/FontFile"),
        "the base-14 font is not embedded"
    );
}

// ---- Independent tools -------------------------------------------------------------------

#[test]
fn pdf_rasterised_by_pdftoppm_at_300_dpi_decodes_to_the_exact_bytes() {
    let Some(pdftoppm) = find_tool("pdftoppm", "poppler-utils") else {
        return;
    };
    let payloads = [all_byte_values(), random_bytes(21, 126)];
    // 300 dpi as asked; 203 (thermal printers, 4.74 px per module) and 600 as well.
    for (i, (item, dpi)) in [
        (&payloads[0], "300"),
        (&payloads[1], "300"),
        (&payloads[1], "203"),
        (&payloads[0], "600"),
    ]
    .into_iter()
    .enumerate()
    {
        let dir = ScratchDir::new("pdf");
        let pdf_path = dir.path().join("label.pdf");
        std::fs::write(&pdf_path, render_pdf(&spec(item, DEFAULT_DPI)).unwrap()).unwrap();
        let status = Command::new(&pdftoppm)
            .args(["-r", dpi, "-png", "-singlefile"])
            .arg(&pdf_path)
            .arg(dir.path().join("page"))
            .status()
            .unwrap();
        assert!(status.success(), "pdftoppm failed");
        let png = std::fs::read(dir.path().join("page.png")).unwrap();
        assert_eq!(&decode_png(&png).unwrap(), item, "case {i} at {dpi} dpi");
    }
}

#[test]
fn dmtxread_reads_the_png_back_byte_exact() {
    let Some(dmtxread) = find_tool("dmtxread", "dmtx-utils") else {
        return;
    };
    for (i, (item, dpi)) in [
        (all_byte_values(), 300),
        (random_bytes(31, 126), 203),
        (random_bytes(32, 126), 600),
    ]
    .iter()
    .enumerate()
    {
        let dir = ScratchDir::new("dmtx");
        let png_path = dir.path().join("label.png");
        std::fs::write(&png_path, render_png(&spec(item, *dpi)).unwrap()).unwrap();
        let output = Command::new(&dmtxread)
            .arg("-N1")
            .arg(&png_path)
            .output()
            .unwrap();
        assert!(output.status.success(), "dmtxread failed on payload {i}");
        assert_eq!(&output.stdout, item, "payload {i} at {dpi} dpi");
    }
}

/// Paints a module grid (4 px per module, 2-module quiet zone) into a luma buffer.
fn paint_grid(bits: &[bool], size: usize) -> (u32, u32, Vec<u8>) {
    let px = 4;
    let side = (size + 4) * px;
    let mut luma = vec![255u8; side * side];
    for (i, dark) in bits.iter().enumerate() {
        if *dark {
            let (x, y) = (i % size + 2, i / size + 2);
            for row in y * px..(y + 1) * px {
                luma[row * side + x * px..row * side + (x + 1) * px].fill(0);
            }
        }
    }
    (side as u32, side as u32, luma)
}

/// Readers accept any ECC200 encodation (docs/DESIGN.md §4). The last case is a base-256 segment
/// followed by ASCII digits and an upper-shifted 0xE9, where rxing's text result comes back empty.
#[test]
fn symbols_in_other_encodations_decode_to_their_exact_bytes() {
    use datamatrix::{DataMatrix, SymbolList};
    let mut mixed = b"SL0100001234 HELLO world 0123456789".to_vec();
    mixed.extend(all_byte_values());
    mixed.extend(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ 0123456789 \xE9\xFF\x80text");
    for (i, item) in [
        b"0123456789012345678901234567890123456789".to_vec(),
        b"UPPER CASE TEXT 123 and lower case text".to_vec(),
        b"caf\xE9 \xE9t\xE9 ABC".to_vec(),
        mixed,
        [
            &[
                0xF0u8, 0x9F, 0x80, 0xC3, 0xA9, 0xFF, 0xFE, 0x81, 0x82, 0x83, 0x84, 0x85,
            ][..],
            b"12345678901234567890123456789012",
            b"\xE9",
            b"12345678901234567890123456789012",
        ]
        .concat(),
    ]
    .iter()
    .enumerate()
    {
        let code = DataMatrix::encode(item, SymbolList::default().enforce_square()).unwrap();
        let bitmap = code.bitmap();
        let mut bits = vec![false; bitmap.width() * bitmap.height()];
        for (x, y) in bitmap.pixels() {
            bits[y * bitmap.width() + x] = true;
        }
        let (w, h, luma) = paint_grid(&bits, bitmap.width());
        assert_eq!(&decode_luma(w, h, &luma).unwrap(), item, "case {i}");
    }
}

#[test]
fn a_symbol_with_an_eci_is_not_an_item() {
    use datamatrix::{DataMatrix, SymbolList};
    // Not Latin-1, so the encoder declares UTF-8 with an ECI.
    let code =
        DataMatrix::encode_str("\u{1F4EE} mail", SymbolList::default().enforce_square()).unwrap();
    let bitmap = code.bitmap();
    let mut bits = vec![false; bitmap.width() * bitmap.height()];
    for (x, y) in bitmap.pixels() {
        bits[y * bitmap.width() + x] = true;
    }
    let (w, h, luma) = paint_grid(&bits, bitmap.width());
    assert!(matches!(
        decode_luma(w, h, &luma),
        Err(LabelError::BadContent(_))
    ));
}
