//! From a bought item to the document a printer is sent: the layout and its addresses, the
//! IMpb's parts, and the bare indicium label (PNG, PDF, ZPL) when there is no layout. The drawing
//! itself is `stampline-label`'s; this module only turns an item and the buyer's choices into a
//! [`Piece`], and checks those choices before anything is charged.

use stampline_items::{Body, Item, PostageIndicium, RateCategory};
use stampline_label::{Format, Impb, Layout, Piece};

use crate::error::ClientError;
use crate::print::DocFormat;

/// The Mailer ID printed in IMpb tracking numbers. USPS assigns each provider its own; this is a
/// placeholder of the right shape (9 digits, starting with 9) until one is configured.
pub const SANDBOX_MAILER_ID: &str = "900000001";

/// Channel application identifier of the IMpb: 94, PC postage / online.
pub const IMPB_CHANNEL: &str = "94";

/// Separator between address lines in `--to-address` / `--from-address`, besides a newline.
pub const ADDRESS_LINE_SEPARATOR: char = '|';

/// The IMpb service type code of a class (USPS's STC list; only Priority Mail's 055 is confirmed
/// here, see docs/DECISIONS.md).
pub fn service_type(rate: RateCategory) -> &'static str {
    match rate {
        RateCategory::PriorityMail => "055",
        RateCategory::FirstClassLetter
        | RateCategory::FirstClassFlat
        | RateCategory::GroundAdvantage => "001",
    }
}

/// Address lines from a flag: lines split at `|` or newlines, trimmed, empty ones dropped,
/// upper-cased (as USPS asks for machine-read addresses). Limits and characters are checked
/// when the label is laid out.
pub fn parse_address(flag: &str, text: &str) -> Result<Vec<String>, ClientError> {
    let lines: Vec<String> = text
        .split([ADDRESS_LINE_SEPARATOR, '\n'])
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .map(str::to_ascii_uppercase)
        .collect();
    if lines.is_empty() {
        return Err(ClientError::BadAddress(format!(
            "{flag} is empty; give lines separated by '|'"
        )));
    }
    Ok(lines)
}

/// Label resolutions this client renders, dots per inch.
pub const DPI_RANGE: std::ops::RangeInclusive<u32> = 100..=1200;

/// Checks a label resolution against [`DPI_RANGE`].
pub fn check_dpi(dpi: u32) -> Result<(), ClientError> {
    if !DPI_RANGE.contains(&dpi) {
        return Err(ClientError::BadRequest("--dpi must be 100 to 1200".into()));
    }
    Ok(())
}

/// The ZIP or ZIP+4 at the end of an address's last line, as digits: `"20260"` or
/// `"202600004"`.
pub fn address_zip(lines: &[String]) -> Option<String> {
    let last = lines.last()?.trim_end();
    let word = last.rsplit(' ').next()?;
    let digits: String = match word.split_once('-') {
        Some((zip, plus4)) if zip.len() == 5 && plus4.len() == 4 => format!("{zip}{plus4}"),
        Some(_) => return None,
        None if word.len() == 5 => word.to_owned(),
        None => return None,
    };
    digits.bytes().all(|b| b.is_ascii_digit()).then_some(digits)
}

/// The destination the `issue` request carries: the delivery address's ZIP+4 when it has one
/// (it must agree with `--to`), else `--to` as given.
pub fn destination(to: &str, to_address: Option<&[String]>) -> Result<String, ClientError> {
    let Some(address) = to_address else {
        return Ok(to.to_owned());
    };
    let Some(zip) = address_zip(address) else {
        return Ok(to.to_owned());
    };
    let to_digits: String = to.chars().filter(char::is_ascii_digit).collect();
    if zip.get(..5) != to_digits.get(..5) {
        return Err(ClientError::AddressMismatch(format!(
            "--to {to} and the delivery address's ZIP {zip} differ"
        )));
    }
    Ok(if zip.len() > to_digits.len() {
        zip
    } else {
        to.to_owned()
    })
}

/// The IMpb of a postage item: the destination (ZIP+4 when the item has it), channel 94, the
/// class's service type, the Mailer ID, and the piece number as the 7-digit serial.
pub fn tracking(indicium: &PostageIndicium) -> Impb {
    let to = indicium.to.as_str();
    let zip = to.get(..9).or_else(|| to.get(..5)).unwrap_or(to);
    Impb {
        zip: zip.to_owned(),
        channel: IMPB_CHANNEL.to_owned(),
        service_type: service_type(indicium.rate).to_owned(),
        mailer_id: SANDBOX_MAILER_ID.to_owned(),
        serial: format!("{:07}", indicium.piece % 10_000_000),
    }
}

/// What `buy` prints, per piece: the layout (none = the bare indicium), and the address lines.
#[derive(Clone, Debug, Default)]
pub struct LabelChoice {
    pub layout: Option<Layout>,
    pub from: Vec<String>,
    pub to: Vec<String>,
}

/// Parses `--layout`; ZPL without a layout means the 4×6 label, the only one ZPL prints.
pub fn choose_layout(
    layout: Option<&str>,
    formats: &[DocFormat],
) -> Result<Option<Layout>, ClientError> {
    match layout {
        Some(name) => name.parse().map(Some).map_err(|_| {
            ClientError::BadRequest(format!(
                "--layout {name:?}: one of {}",
                Layout::NAMES.join(", ")
            ))
        }),
        None if formats.contains(&DocFormat::Zpl) => Ok(Some(Layout::Label4x6)),
        None if formats.contains(&DocFormat::Svg) => Err(ClientError::BadRequest(format!(
            "--format svg needs --layout ({})",
            Layout::NAMES.join(", ")
        ))),
        None => Ok(None),
    }
}

/// Lays the chosen page out once with a stand-in item of postage size, before anything is
/// charged, so that addresses that do not fit or cannot be printed are refused up front.
pub fn check_before_issue(choice: &LabelChoice, dpi: u32) -> Result<(), ClientError> {
    let Some(layout) = choice.layout else {
        return Ok(());
    };
    let item = [0u8; STAND_IN_ITEM_LEN];
    let piece = Piece {
        item: &item,
        indicium: STAND_IN_LINES.iter().map(|l| (*l).to_owned()).collect(),
        from: choice.from.clone(),
        to: choice.to.clone(),
        tracking: Some(Impb {
            zip: "000000000".to_owned(),
            channel: IMPB_CHANNEL.to_owned(),
            service_type: "000".to_owned(),
            mailer_id: SANDBOX_MAILER_ID.to_owned(),
            serial: "0000000".to_owned(),
        }),
    };
    match stampline_label::render_layout(layout, Format::Svg, dpi, &[piece]) {
        Ok(_) => Ok(()),
        Err(e @ stampline_label::LabelError::BadText(_)) => {
            Err(ClientError::BadAddress(e.to_string()))
        }
        Err(e) => Err(ClientError::BadLabel(e.to_string())),
    }
}

/// Size of a postage item (docs/DESIGN.md §4), for the stand-in of [`check_before_issue`].
const STAND_IN_ITEM_LEN: usize = 126;

/// The longest indicium lines a postage item prints.
const STAND_IN_LINES: [&str; 7] = [
    "US POSTAGE",
    "$16777.215",
    "USPS GROUND ADVANTAGE",
    "MAILED 12/31/2026",
    "FROM ZIP 99999",
    "ID# SL0199999999",
    "SERIAL SL0199999999-4294967295",
];

/// The label piece of a postage item on a layout: its indicium lines, the addresses and its IMpb.
pub fn piece<'a>(
    bytes: &'a [u8],
    indicium: &PostageIndicium,
    from: &[String],
    to: &[String],
) -> Piece<'a> {
    Piece {
        item: bytes,
        indicium: indicium.label_lines(),
        from: from.to_vec(),
        to: to.to_vec(),
        tracking: Some(tracking(indicium)),
    }
}

/// Renders one bought item in `format`: on the chosen layout, or as the bare indicium without
/// one; a value item as its document. `raw` is the item's own bytes either way.
pub fn render(
    item: &Item,
    bytes: &[u8],
    format: DocFormat,
    dpi: u32,
    choice: &LabelChoice,
) -> Result<Vec<u8>, String> {
    let Body::Postage(indicium) = &item.body else {
        // A value item (a reprint, or `print` after a crash): its own document, without the
        // drawer block a check has when it is first issued.
        return crate::value::render(item, bytes, format, dpi, &[]);
    };
    let layout_format = match format {
        DocFormat::Png => Format::Png,
        DocFormat::Svg => Format::Svg,
        DocFormat::Pdf => Format::Pdf,
        DocFormat::Zpl => Format::Zpl,
        DocFormat::Raw => return Ok(bytes.to_vec()),
    };
    match choice.layout {
        None => render_bare(bytes, indicium.label_lines(), format, dpi),
        Some(layout) => {
            let piece = piece(bytes, indicium, &choice.from, &choice.to);
            stampline_label::render_layout(layout, layout_format, dpi, &[piece])
                .map_err(|e| e.to_string())
        }
    }
}

/// The bare indicium label: the DataMatrix of `bytes` beside `lines`, in one format.
pub fn render_bare(
    bytes: &[u8],
    lines: Vec<String>,
    format: DocFormat,
    dpi: u32,
) -> Result<Vec<u8>, String> {
    let spec = stampline_label::LabelSpec {
        item: bytes,
        lines,
        dpi,
    };
    match format {
        DocFormat::Png => stampline_label::render_png(&spec).map_err(|e| e.to_string()),
        DocFormat::Pdf => stampline_label::render_pdf(&spec).map_err(|e| e.to_string()),
        DocFormat::Raw => Ok(bytes.to_vec()),
        DocFormat::Svg => Err("svg needs --layout".into()),
        DocFormat::Zpl => {
            let png = stampline_label::render_png(&spec).map_err(|e| e.to_string())?;
            zpl_from_png(&png)
        }
    }
}

/// A minimal ZPL II label: the PNG raster as one `^GFA` graphic field (1 = black dot), one copy
/// (`^PQ1`). The raster is rendered at `--dpi`, which should be the printer's (203 or 300).
pub fn zpl_from_png(png: &[u8]) -> Result<Vec<u8>, String> {
    let img = image::load_from_memory_with_format(png, image::ImageFormat::Png)
        .map_err(|e| format!("label raster: {e}"))?
        .to_luma8();
    let (width, height) = (img.width() as usize, img.height() as usize);
    let row_bytes = width.div_ceil(8);
    let total = row_bytes * height;
    let mut out = format!("^XA^PQ1^FO0,0^GFA,{total},{total},{row_bytes},").into_bytes();
    out.reserve(total * 2 + 8);
    for y in 0..height {
        for chunk in 0..row_bytes {
            let mut byte = 0u8;
            for bit in 0..8 {
                let x = chunk * 8 + bit;
                // Pixels are u32-indexed; x < width and y < height fit by construction.
                let dark = x < width
                    && img
                        .get_pixel_checked(x as u32, y as u32)
                        .is_some_and(|p| p.0[0] < 128);
                if dark {
                    byte |= 0x80 >> bit;
                }
            }
            out.extend_from_slice(format!("{byte:02X}").as_bytes());
        }
    }
    out.extend_from_slice(b"^FS^XZ\n");
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // in tests a panic is the failure report
mod tests {
    use super::*;

    fn lines(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn addresses_split_at_bars_and_newlines_and_are_upper_cased() {
        assert_eq!(
            parse_address(
                "--to-address",
                "Ada Lovelace | 12 Main St\nBoston MA 02134-1204 "
            )
            .unwrap(),
            lines(&["ADA LOVELACE", "12 MAIN ST", "BOSTON MA 02134-1204"])
        );
        assert_eq!(
            parse_address("--to-address", " | ").unwrap_err().code(),
            "bad_address"
        );
    }

    #[test]
    fn the_zip_plus_4_of_the_delivery_address_goes_into_the_issue() {
        let address = lines(&["X", "WASHINGTON DC 20260-0004"]);
        assert_eq!(address_zip(&address).as_deref(), Some("202600004"));
        assert_eq!(destination("20260", Some(&address)).unwrap(), "202600004");
        assert_eq!(destination("20260", None).unwrap(), "20260");
        assert_eq!(
            destination("02134", Some(&address)).unwrap_err().code(),
            "address_mismatch"
        );
        let plain = lines(&["X", "WASHINGTON DC 20260"]);
        assert_eq!(
            destination("20260-0004", Some(&plain)).unwrap(),
            "20260-0004"
        );
        assert_eq!(address_zip(&lines(&["NO ZIP HERE"])), None);
        assert_eq!(address_zip(&lines(&["DC 2026-00004"])), None);
    }

    #[test]
    fn zpl_defaults_to_the_4x6_label_and_svg_needs_a_layout() {
        use DocFormat::{Pdf, Png, Svg, Zpl};
        assert_eq!(choose_layout(None, &[Zpl]).unwrap(), Some(Layout::Label4x6));
        assert_eq!(choose_layout(None, &[Png, Pdf]).unwrap(), None);
        assert!(choose_layout(None, &[Svg]).is_err());
        assert_eq!(
            choose_layout(Some("envelope10"), &[Svg]).unwrap(),
            Some(Layout::Envelope10)
        );
        assert_eq!(
            choose_layout(Some("a4"), &[Pdf]).unwrap_err().code(),
            "bad_request"
        );
    }
}
