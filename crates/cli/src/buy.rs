//! `stampline buy`: the flags become a [`BuyRequest`]; the purchase is
//! [`stampline_client::Client::buy`]'s; this prints what it bought.

use serde_json::{Value, json};
use stampline_client::label::{self, LabelChoice};
use stampline_client::print::DocFormat;
use stampline_client::{BuyRequest, Client, Output, Purchase, jobs};
use stampline_money::Amount;

use crate::args::{BuyArgs, Global};
use crate::client_cmds::{connect, dollars};
use crate::output::{CliError, Out};
use crate::print_cmd;

/// Output formats this version writes: PNG, PDF, SVG and ZPL labels, and `raw`, the item's exact
/// bytes (what `verify` also accepts). Files default to PNG and PDF; printers choose theirs.
pub const FORMATS: [&str; 5] = ["png", "pdf", "svg", "zpl", "raw"];

/// `--format` names as document formats, refusing any this version does not write.
pub fn parse_formats(names: &[String]) -> Result<Vec<DocFormat>, CliError> {
    names
        .iter()
        .map(|f| {
            DocFormat::parse(f)
                .filter(|_| FORMATS.contains(&f.as_str()))
                .ok_or_else(|| {
                    CliError::new(
                        "unsupported",
                        format!("format {f:?}: this version writes png, pdf, svg, zpl and raw"),
                    )
                })
        })
        .collect()
}

/// Where an item goes: the `--printer` (in `formats`, or the printer's own), or files named
/// after `out` in `file_formats`.
pub fn output(
    printer: Option<&str>,
    printer_cert: Option<&std::path::Path>,
    formats: &[DocFormat],
    out: Option<std::path::PathBuf>,
    file_formats: &[DocFormat],
) -> Result<Output, CliError> {
    Ok(match printer {
        Some(uri) => {
            let options = print_cmd::print_options(printer_cert)?;
            Output::Printers(jobs::targets(uri, formats, &options)?)
        }
        None => Output::Files {
            base: out,
            formats: file_formats.to_vec(),
        },
    })
}

/// The flags of one purchase as the library's request, checked before anything is charged.
pub fn request(a: &BuyArgs) -> Result<BuyRequest, CliError> {
    let postage = match &a.postage {
        Some(p) => {
            Some(Amount::parse_dollars(p).map_err(|e| CliError::new("bad_amount", e.to_string()))?)
        }
        None => None,
    };
    let weight_oz = match &a.weight_oz {
        Some(w) => Some(w.parse::<serde_json::Number>().map_err(|_| {
            CliError::new(
                "bad_weight",
                format!("weight {w:?} is not a number of ounces"),
            )
        })?),
        None => None,
    };
    let formats = parse_formats(&a.output.format)?;
    label::check_dpi(a.output.dpi)?;
    if a.from.is_empty() || a.to.is_empty() {
        return Err(CliError::new(
            "bad_request",
            "give --from ZIP and --to ZIP (or --batch FILE.csv)",
        ));
    }
    // The layout follows the formats written: files default to PNG and PDF.
    let label_formats = if formats.is_empty() {
        &jobs::DEFAULT_FILE_FORMATS[..]
    } else {
        &formats[..]
    };
    let choice = LabelChoice {
        layout: label::choose_layout(a.layout.as_deref(), label_formats)?,
        from: match &a.from_address {
            Some(text) => label::parse_address("--from-address", text)?,
            None => Vec::new(),
        },
        to: match &a.to_address {
            Some(text) => label::parse_address("--to-address", text)?,
            None => Vec::new(),
        },
    };
    let to_zip = label::destination(&a.to, a.to_address.as_ref().map(|_| choice.to.as_slice()))?;
    let output = output(
        a.output.printer.as_deref(),
        a.output.printer_cert.as_deref(),
        &formats,
        a.output.out.clone(),
        label_formats,
    )?;
    Ok(BuyRequest {
        class: a.class.clone(),
        postage,
        weight_oz,
        from_zip: a.from.clone(),
        to_zip,
        mail_date: a.date.clone(),
        label: choice,
        dpi: a.output.dpi,
        output,
    })
}

/// The `--json` result of a purchase.
pub fn purchase_json(p: &Purchase, printer: Option<&str>) -> Value {
    let files: Vec<String> = p.files().iter().map(|f| f.display().to_string()).collect();
    json!({
        "serial": p.serial,
        "postage_mills": p.postage.mills(),
        "balance_mills": p.confirmed.balance_mills,
        "status": p.confirmed.status,
        "files": files,
        "printed": true,
        "printer": printer,
        "jobs": print_cmd::jobs_json(&p.jobs),
    })
}

/// The whole purchase on a live client.
pub async fn do_buy(client: &Client, a: &BuyArgs) -> Result<Purchase, CliError> {
    Ok(client.buy(request(a)?).await?)
}

pub async fn buy(global: &Global, a: BuyArgs, out: Out) -> Result<(), CliError> {
    let client = connect(global).await?;
    let p = do_buy(&client, &a).await?;
    let _ = client.bye().await;
    let files = p
        .files()
        .iter()
        .map(|f| f.display().to_string())
        .collect::<Vec<_>>()
        .join(", ");
    let printed = match (&a.output.printer, files.is_empty()) {
        (Some(p), true) => format!("printed on {p}"),
        _ => format!("wrote {files}"),
    };
    let human = format!(
        "bought {} postage, serial {}; balance {}; {printed}",
        dollars(p.postage.mills()),
        p.serial,
        dollars(p.confirmed.balance_mills),
    );
    out.done(&purchase_json(&p, a.output.printer.as_deref()), &human);
    Ok(())
}
