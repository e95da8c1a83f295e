//! Writes every layout in every format, for looking at (the pictures in docs/ come from here):
//! `cargo run -p stampline-label --example layouts -- DIR [DPI]` writes
//! `DIR/envelope10.{png,svg,pdf}`, `DIR/label4x6.{png,svg,pdf,zpl}`, `DIR/sheet.{png,svg,pdf}`,
//! and the value documents `DIR/{ticket,coupon,certificate}.{png,svg,pdf,zpl}`, `DIR/check.{png,svg,pdf}`.

use stampline_label::{Format, Layout, Piece, render_document, render_layout, sample};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let dir = std::path::PathBuf::from(args.next().unwrap_or_else(|| ".".to_owned()));
    let dpi = match args.next() {
        Some(dpi) => dpi.parse()?,
        None => 300,
    };
    std::fs::create_dir_all(&dir)?;
    // A stand-in for a 126-byte postage item: the header, then filler.
    let mut item = b"SL\x01\x01\x00\x37".to_vec();
    item.extend((0..120u8).map(|i| i.wrapping_mul(37)));
    let mut piece = sample::piece(&item);
    piece.to.insert(1, "DIFFERENCE DEPT".to_owned());
    let sheet: Vec<Piece> = (0..7).map(|_| piece.clone()).collect();
    for (layout, name, pieces) in [
        (
            Layout::Envelope10,
            "envelope10",
            std::slice::from_ref(&piece),
        ),
        (Layout::Label4x6, "label4x6", std::slice::from_ref(&piece)),
        (Layout::Sheet, "sheet", &sheet[..]),
    ] {
        for (format, ext) in [
            (Format::Png, "png"),
            (Format::Svg, "svg"),
            (Format::Pdf, "pdf"),
            (Format::Zpl, "zpl"),
        ] {
            if format == Format::Zpl && layout != Layout::Label4x6 {
                continue;
            }
            let path = dir.join(format!("{name}.{ext}"));
            std::fs::write(&path, render_layout(layout, format, dpi, pieces)?)?;
            println!("wrote {}", path.display());
        }
    }
    // The value documents, with a stand-in the size of a ticket's item (160 bytes).
    let mut value_item = b"SL\x01\x02\x00\x59".to_vec();
    value_item.extend((0..154u8).map(|i| i.wrapping_mul(91)));
    for (name, doc) in sample::documents(&value_item) {
        for (format, ext) in [
            (Format::Png, "png"),
            (Format::Svg, "svg"),
            (Format::Pdf, "pdf"),
            (Format::Zpl, "zpl"),
        ] {
            if format == Format::Zpl
                && doc.page_pt().0 > stampline_label::document::ZPL_MAX_WIDTH_PT
            {
                continue;
            }
            let path = dir.join(format!("{name}.{ext}"));
            std::fs::write(&path, render_document(&doc, format, dpi)?)?;
            println!("wrote {}", path.display());
        }
    }
    Ok(())
}
