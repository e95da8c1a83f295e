//! Writes a sample postage label as PNG and PDF, for looking at:
//! `cargo run -p stampline-label --example sample -- /tmp/label-sample [DPI]`
//! writes `/tmp/label-sample.png` and `/tmp/label-sample.pdf`.

use stampline_label::{DEFAULT_DPI, LabelSpec, render_pdf, render_png, sample};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let stem = args.next().unwrap_or_else(|| "label-sample".to_owned());
    let dpi = match args.next() {
        Some(dpi) => dpi.parse()?,
        None => DEFAULT_DPI,
    };
    // A stand-in for a 126-byte postage item: the header, then filler.
    let mut item = b"SL\x01\x01\x00\x37".to_vec();
    item.extend((0..120u8).map(|i| i.wrapping_mul(37)));
    let spec = LabelSpec {
        item: &item,
        lines: sample::postage_lines(),
        dpi,
    };
    std::fs::write(format!("{stem}.png"), render_png(&spec)?)?;
    std::fs::write(format!("{stem}.pdf"), render_pdf(&spec)?)?;
    println!("wrote {stem}.png ({dpi} dpi) and {stem}.pdf");
    Ok(())
}
