//! `buy`'s label choices: which layout and format, the address flags, the IMpb's parts. The
//! drawing itself is `stampline-label`'s; this file only turns a bought item and the flags into
//! a [`Piece`].

use stampline_items::{Body, Item, PostageIndicium, RateCategory};
use stampline_label::{Format, Impb, Layout, Piece};

use crate::args::BuyArgs;
use crate::output::CliError;

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
pub fn parse_address(flag: &str, text: &str) -> Result<Vec<String>, CliError> {
    let lines: Vec<String> = text
        .split([ADDRESS_LINE_SEPARATOR, '\n'])
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .map(str::to_ascii_uppercase)
        .collect();
    if lines.is_empty() {
        return Err(CliError::new(
            "bad_address",
            format!("{flag} is empty; give lines separated by '|'"),
        ));
    }
    Ok(lines)
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
pub fn destination(to: &str, to_address: Option<&[String]>) -> Result<String, CliError> {
    let Some(address) = to_address else {
        return Ok(to.to_owned());
    };
    let Some(zip) = address_zip(address) else {
        return Ok(to.to_owned());
    };
    let to_digits: String = to.chars().filter(char::is_ascii_digit).collect();
    if zip.get(..5) != to_digits.get(..5) {
        return Err(CliError::new(
            "address_mismatch",
            format!("--to {to} and the delivery address's ZIP {zip} differ"),
        ));
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

/// Everything `buy` needs from its label flags, checked before anything is charged: the layout
/// and addresses, and the destination for the `issue` request.
pub fn choose(a: &BuyArgs, formats: &[String]) -> Result<(LabelChoice, String), CliError> {
    if a.from.is_empty() || a.to.is_empty() {
        return Err(CliError::new(
            "bad_request",
            "give --from ZIP and --to ZIP (or --batch FILE.csv)",
        ));
    }
    let choice = LabelChoice {
        layout: choose_layout(a.layout.as_deref(), formats)?,
        from: match &a.from_address {
            Some(text) => parse_address("--from-address", text)?,
            None => Vec::new(),
        },
        to: match &a.to_address {
            Some(text) => parse_address("--to-address", text)?,
            None => Vec::new(),
        },
    };
    check_before_issue(&choice, a.dpi)?;
    let to_zip = destination(&a.to, a.to_address.as_ref().map(|_| choice.to.as_slice()))?;
    Ok((choice, to_zip))
}

/// Parses `--layout`; ZPL without a layout means the 4×6 label, the only one ZPL prints.
pub fn choose_layout(layout: Option<&str>, formats: &[String]) -> Result<Option<Layout>, CliError> {
    match layout {
        Some(name) => name.parse().map(Some).map_err(|_| {
            CliError::new(
                "bad_request",
                format!("--layout {name:?}: one of {}", Layout::NAMES.join(", ")),
            )
        }),
        None if formats.iter().any(|f| f == "zpl") => Ok(Some(Layout::Label4x6)),
        None if formats.iter().any(|f| f == "svg") => Err(CliError::new(
            "bad_request",
            format!("--format svg needs --layout ({})", Layout::NAMES.join(", ")),
        )),
        None => Ok(None),
    }
}

/// Lays the chosen page out once with a stand-in item of postage size, before anything is
/// charged, so that addresses that do not fit or cannot be printed are refused up front.
pub fn check_before_issue(choice: &LabelChoice, dpi: u32) -> Result<(), CliError> {
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
            Err(CliError::new("bad_address", e.to_string()))
        }
        Err(e) => Err(CliError::new("bad_label", e.to_string())),
    }
}

/// Size of a postage item (DESIGN §4), for the stand-in of [`check_before_issue`].
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

/// Renders one bought item in `format` (`png`, `svg`, `pdf`, `zpl`) on the chosen layout, or as
/// the bare indicium (`png`, `pdf`) without one.
pub fn render(
    item: &Item,
    bytes: &[u8],
    format: &str,
    dpi: u32,
    choice: &LabelChoice,
) -> Result<Vec<u8>, String> {
    let Body::Postage(indicium) = &item.body else {
        return Err("only postage is printed by this version".into());
    };
    let Some(layout) = choice.layout else {
        let spec = stampline_label::LabelSpec {
            item: bytes,
            lines: indicium.label_lines(),
            dpi,
        };
        return match format {
            "png" => stampline_label::render_png(&spec).map_err(|e| e.to_string()),
            "pdf" => stampline_label::render_pdf(&spec).map_err(|e| e.to_string()),
            other => Err(format!("format {other} needs --layout")),
        };
    };
    let format: Format = format
        .parse()
        .map_err(|e: stampline_label::LabelError| e.to_string())?;
    let piece = Piece {
        item: bytes,
        indicium: indicium.label_lines(),
        from: choice.from.clone(),
        to: choice.to.clone(),
        tracking: Some(tracking(indicium)),
    };
    stampline_label::render_layout(layout, format, dpi, &[piece]).map_err(|e| e.to_string())
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
            parse_address("--to-address", " | ").unwrap_err().code,
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
            destination("02134", Some(&address)).unwrap_err().code,
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
        let f = |v: &[&str]| lines(v);
        assert_eq!(
            choose_layout(None, &f(&["zpl"])).unwrap(),
            Some(Layout::Label4x6)
        );
        assert_eq!(choose_layout(None, &f(&["png", "pdf"])).unwrap(), None);
        assert!(choose_layout(None, &f(&["svg"])).is_err());
        assert_eq!(
            choose_layout(Some("envelope10"), &f(&["svg"])).unwrap(),
            Some(Layout::Envelope10)
        );
        assert_eq!(
            choose_layout(Some("a4"), &f(&["pdf"])).unwrap_err().code,
            "bad_request"
        );
    }
}
