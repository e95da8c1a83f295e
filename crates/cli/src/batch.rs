//! `stampline buy --batch FILE.csv`: one row per piece, bought and printed together into one
//! multi-page PDF or one ZPL stream by [`stampline_client::Client::buy_batch`] (which says what
//! happens when an issue or the printing fails).
//!
//! Every row is checked (addresses laid out, ZIPs, amounts) and priced here, before anything is
//! charged. The summary lists which serials were printed and which voided, and which rows were
//! not charged; the exit status is non-zero unless every row was printed.
//!
//! CSV: a header row naming the columns, in any order — `to_address` (required, lines separated
//! by `|`, ending in the ZIP or ZIP+4), `from_address`, `class`, `weight_oz`, `postage`. Missing
//! values fall back to the `buy` flags (`--from-address`, `--class`, `--from` for the origin ZIP,
//! else the return address's ZIP). Without `postage` (per row or `--postage`, in dollars) the rate
//! engine prices the row's class and `weight_oz`.

use std::path::Path;

use serde_json::json;
use stampline_client::label::{self, LabelChoice};
use stampline_client::{BatchEvent, BatchPiece, BatchRequest, PieceEnd};
use stampline_label::{Format, Layout};
use stampline_money::Amount;

use crate::args::{BuyArgs, Global};
use crate::client_cmds::{connect, dollars};
use crate::output::{CliError, Out};

/// Most rows a batch file may hold (the label crate's limit per render).
pub const MAX_BATCH_ROWS: usize = stampline_label::MAX_BATCH_PIECES;

/// Largest batch file read.
pub const MAX_BATCH_FILE_BYTES: u64 = 16 * 1024 * 1024;

/// One checked row.
#[derive(Clone, Debug)]
pub struct Row {
    /// 1-based row number in the file, header excluded.
    pub number: usize,
    pub to: Vec<String>,
    pub from: Vec<String>,
    pub to_zip: String,
    pub from_zip: String,
    pub class: String,
    pub weight_oz: Option<String>,
    pub postage: Option<Amount>,
}

fn bad(row: usize, message: impl std::fmt::Display) -> CliError {
    CliError::new("bad_batch", format!("row {row}: {message}"))
}

/// Parses and checks every row; nothing is charged if any row is wrong.
pub fn parse_rows(csv_bytes: &[u8], a: &BuyArgs, layout: Layout) -> Result<Vec<Row>, CliError> {
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_reader(csv_bytes);
    let headers = reader
        .headers()
        .map_err(|e| CliError::new("bad_batch", format!("header: {e}")))?
        .clone();
    let column = |name: &str| headers.iter().position(|h| h == name);
    let known = [
        "to_address",
        "from_address",
        "class",
        "weight_oz",
        "postage",
    ];
    if let Some(unknown) = headers.iter().find(|h| !known.contains(h)) {
        return Err(CliError::new(
            "bad_batch",
            format!(
                "unknown column {unknown:?}; columns are {}",
                known.join(", ")
            ),
        ));
    }
    let to_col = column("to_address")
        .ok_or_else(|| CliError::new("bad_batch", "the header has no to_address column"))?;
    let (from_col, class_col, weight_col, postage_col) = (
        column("from_address"),
        column("class"),
        column("weight_oz"),
        column("postage"),
    );
    let mut rows = Vec::new();
    for (index, record) in reader.records().enumerate() {
        let number = index + 1;
        if number > MAX_BATCH_ROWS {
            return Err(CliError::new(
                "bad_batch",
                format!("more than {MAX_BATCH_ROWS} rows"),
            ));
        }
        let record = record.map_err(|e| bad(number, e))?;
        let get = |col: Option<usize>| {
            col.and_then(|c| record.get(c))
                .filter(|v| !v.is_empty())
                .map(str::to_owned)
        };
        let to_text = get(Some(to_col)).ok_or_else(|| bad(number, "to_address is empty"))?;
        let to = label::parse_address("to_address", &to_text).map_err(|e| bad(number, e))?;
        let from = match get(from_col).or_else(|| a.from_address.clone()) {
            Some(text) => {
                label::parse_address("from_address", &text).map_err(|e| bad(number, e))?
            }
            None => Vec::new(),
        };
        let to_zip = label::address_zip(&to)
            .ok_or_else(|| bad(number, "to_address must end with the ZIP or ZIP+4"))?;
        let from_zip = match (a.from.is_empty(), label::address_zip(&from)) {
            (false, _) => a.from.clone(),
            (true, Some(zip)) => zip.chars().take(5).collect(),
            (true, None) => {
                return Err(bad(
                    number,
                    "no origin ZIP: give --from or a from_address ending in a ZIP",
                ));
            }
        };
        let postage = match get(postage_col).or_else(|| a.postage.clone()) {
            Some(text) => Some(Amount::parse_dollars(&text).map_err(|e| bad(number, e))?),
            None => None,
        };
        let choice = LabelChoice {
            layout: Some(layout),
            from: from.clone(),
            to: to.clone(),
        };
        label::check_before_issue(&choice, a.output.dpi).map_err(|e| bad(number, e))?;
        rows.push(Row {
            number,
            to,
            from,
            to_zip,
            from_zip,
            class: get(class_col).unwrap_or_else(|| a.class.clone()),
            weight_oz: get(weight_col),
            postage,
        });
    }
    if rows.is_empty() {
        return Err(CliError::new("bad_batch", "the file has no rows"));
    }
    Ok(rows)
}

/// The postage of a row: its own (or `--postage`), else the rate for its class and weight from
/// the rate engine (the same compiled-in table the server checks against).
fn price(row: &Row) -> Result<Amount, CliError> {
    if let Some(p) = row.postage {
        return Ok(p);
    }
    let Some(weight) = &row.weight_oz else {
        return Err(bad(row.number, "give postage or weight_oz"));
    };
    let class = stampline_items::RateCategory::from_class_name(&row.class)
        .ok_or_else(|| bad(row.number, format!("unknown class {:?}", row.class)))?;
    let weight: stampline_rates::Weight = weight
        .parse()
        .map_err(|e: stampline_rates::RateError| bad(row.number, e.to_string()))?;
    let zip = |z: &str| {
        z.get(..5)
            .unwrap_or(z)
            .parse::<stampline_items::Zip5>()
            .map_err(|_| bad(row.number, format!("bad ZIP {z:?}")))
    };
    let table = stampline_rates::table().map_err(|e| CliError::new("internal", e.to_string()))?;
    table
        .quote(class, weight, zip(&row.from_zip)?, zip(&row.to_zip)?)
        .map(|q| q.postage)
        .map_err(|e| bad(row.number, e.to_string()))
}

pub async fn buy_batch(
    global: &Global,
    a: &BuyArgs,
    file: &Path,
    out: Out,
) -> Result<(), CliError> {
    let format = match a.output.format.as_slice() {
        [] => Format::Pdf,
        [one] if one == "pdf" => Format::Pdf,
        [one] if one == "zpl" => Format::Zpl,
        _ => {
            return Err(CliError::new(
                "bad_request",
                "a batch writes one file: --format pdf (default) or --format zpl",
            ));
        }
    };
    let layout = label::choose_layout(a.layout.as_deref(), &[])?.unwrap_or(Layout::Label4x6);
    stampline_client::label::check_dpi(a.output.dpi)?;
    let meta = std::fs::metadata(file)
        .map_err(|e| CliError::new("no_file", format!("{}: {e}", file.display())))?;
    if meta.len() > MAX_BATCH_FILE_BYTES {
        return Err(CliError::new("too_large", "batch file is over 16 MiB"));
    }
    let csv_bytes = std::fs::read(file)
        .map_err(|e| CliError::new("no_file", format!("{}: {e}", file.display())))?;
    let rows = parse_rows(&csv_bytes, a, layout)?;
    let mut pieces = Vec::with_capacity(rows.len());
    for row in rows {
        pieces.push(BatchPiece {
            postage: price(&row)?,
            row: row.number,
            weight_oz: row
                .weight_oz
                .as_deref()
                .and_then(|w| w.parse::<serde_json::Number>().ok()),
            class: row.class,
            from_zip: row.from_zip,
            to_zip: row.to_zip,
            from: row.from,
            to: row.to,
        });
    }
    let ext = if format == Format::Pdf { "pdf" } else { "zpl" };
    let path = match &a.output.out {
        Some(base) => base.with_extension(ext),
        None => file.with_extension(ext),
    };
    let rows = pieces.len();

    let client = connect(global).await?;
    let request = BatchRequest {
        pieces,
        layout,
        format,
        dpi: a.output.dpi,
        path: path.clone(),
        mail_date: a.date.clone(),
    };
    let report = client
        .buy_batch(request, |event| {
            if let (BatchEvent::Issuing { row, rows }, false) = (event, out.json) {
                eprint!("\rissuing {row}/{rows}");
            }
        })
        .await?;
    if !out.json {
        eprintln!();
    }
    let _ = client.bye().await;

    let printed_serials = report.serials(PieceEnd::Printed);
    let voided_serials = report.serials(PieceEnd::Voided);
    let unconfirmed = report.serials(PieceEnd::Unconfirmed);
    let printed_mills = report.printed_mills();
    let complete = report.complete();
    let stopped = report.stopped.as_ref();
    let summary = json!({
        "rows": rows,
        "printed": printed_serials,
        "voided": voided_serials,
        "unconfirmed": unconfirmed,
        "not_charged_from_row": stopped.map(|(row, _)| *row),
        "error": stopped.map(|(row, e)| json!({"row": row, "code": e.code(), "message": e.to_string()})),
        "print_error": report.print_error,
        "file": report.file.as_ref().map(|f| f.display().to_string()),
        "postage_mills": printed_mills,
        "balance_mills": report.balance_mills,
        "complete": complete,
    });
    let mut human = format!(
        "batch of {rows}: {} printed ({}) into {}",
        printed_serials.len(),
        dollars(printed_mills),
        path.display()
    );
    if !voided_serials.is_empty() {
        human.push_str(&format!("; {} voided and refunded", voided_serials.len()));
    }
    if !unconfirmed.is_empty() {
        human.push_str(&format!(
            "; {} unconfirmed (voided and refunded when the confirmation window ends)",
            unconfirmed.len()
        ));
    }
    if let Some((row, e)) = stopped {
        human.push_str(&format!(
            "; stopped at row {row}: {e} ({}); rows {row}.. not charged",
            e.code()
        ));
    }
    if let Some(reason) = &report.print_error {
        human.push_str(&format!("; printing failed: {reason}"));
    }
    out.done(&summary, &human);
    if !complete {
        std::process::exit(1);
    }
    Ok(())
}
