//! `stampline buy --batch FILE.csv`: one row per piece, each piece its own `issue` (with its own
//! request id, so a retried request is answered once), all printed together as one multi-page
//! PDF or one ZPL stream, then each confirmed.
//!
//! Failure rules: every row is checked (addresses laid out, ZIPs, amounts) before anything is
//! charged. If an `issue` fails mid-batch, the pieces charged so far are still printed and
//! confirmed, and the rows after it are not charged. If printing fails, every charged piece is
//! confirmed as failed (voided and refunded). The summary lists which serials were printed and
//! which voided, and which rows were not charged; the exit status is non-zero unless every row
//! was printed.
//!
//! CSV: a header row naming the columns, in any order — `to_address` (required, lines separated
//! by `|`, ending in the ZIP or ZIP+4), `from_address`, `class`, `weight_oz`, `postage`. Missing
//! values fall back to the `buy` flags (`--from-address`, `--class`, `--from` for the origin ZIP,
//! else the return address's ZIP). Without `postage` (per row or `--postage`, in dollars) the rate
//! engine prices the row's class and `weight_oz`.

use std::io::Write as _;
use std::path::Path;

use base64::Engine as _;
use serde_json::json;
use stampline_client::new_request_id;
use stampline_items::Body;
use stampline_label::{Format, Layout, Piece};
use stampline_money::Amount;
use stampline_wire::Op;

use crate::args::{BuyArgs, Global};
use crate::buy::check_item;
use crate::client_cmds::{connect, dollars, ok_fields};
use crate::labels;
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
        let to =
            labels::parse_address("to_address", &to_text).map_err(|e| bad(number, e.message))?;
        let from = match get(from_col).or_else(|| a.from_address.clone()) {
            Some(text) => {
                labels::parse_address("from_address", &text).map_err(|e| bad(number, e.message))?
            }
            None => Vec::new(),
        };
        let to_zip = labels::address_zip(&to)
            .ok_or_else(|| bad(number, "to_address must end with the ZIP or ZIP+4"))?;
        let from_zip = match (a.from.is_empty(), labels::address_zip(&from)) {
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
        let choice = labels::LabelChoice {
            layout: Some(layout),
            from: from.clone(),
            to: to.clone(),
        };
        labels::check_before_issue(&choice, a.dpi).map_err(|e| bad(number, e.message))?;
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

/// A charged piece waiting to be printed.
struct Charged {
    row: usize,
    serial: String,
    bytes: Vec<u8>,
    lines: Vec<String>,
    tracking: stampline_label::Impb,
}

pub async fn buy_batch(
    global: &Global,
    a: &BuyArgs,
    file: &Path,
    out: Out,
) -> Result<(), CliError> {
    let format = match a.format.as_slice() {
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
    let layout = labels::choose_layout(a.layout.as_deref(), &[])?.unwrap_or(Layout::Label4x6);
    if !(100..=1200).contains(&a.dpi) {
        return Err(CliError::new("bad_request", "--dpi must be 100 to 1200"));
    }
    let meta = std::fs::metadata(file)
        .map_err(|e| CliError::new("no_file", format!("{}: {e}", file.display())))?;
    if meta.len() > MAX_BATCH_FILE_BYTES {
        return Err(CliError::new("too_large", "batch file is over 16 MiB"));
    }
    let csv_bytes = std::fs::read(file)
        .map_err(|e| CliError::new("no_file", format!("{}: {e}", file.display())))?;
    let rows = parse_rows(&csv_bytes, a, layout)?;
    let prices = rows.iter().map(price).collect::<Result<Vec<_>, _>>()?;
    let ext = if format == Format::Pdf { "pdf" } else { "zpl" };
    let path = match &a.out {
        Some(base) => base.with_extension(ext),
        None => file.with_extension(ext),
    };

    let (ep, link) = connect(global).await?;
    let keys = ep.keys().await?;
    let mail_date = a
        .date
        .clone()
        .unwrap_or_else(|| time::OffsetDateTime::now_utc().date().to_string());

    // Issue, one request per row, stopping at the first failure.
    let mut charged: Vec<Charged> = Vec::new();
    let mut stopped: Option<(usize, CliError)> = None;
    for (row, postage) in rows.iter().zip(&prices) {
        if !out.json {
            eprint!("\rissuing {}/{}", row.number, rows.len());
        }
        let op = Op::Issue {
            kind: "postage".into(),
            postage_mills: postage.mills(),
            from_zip: row.from_zip.clone(),
            to_zip: row.to_zip.clone(),
            mail_date: mail_date.clone(),
            class: row.class.clone(),
            weight_oz: row
                .weight_oz
                .as_deref()
                .and_then(|w| w.parse::<serde_json::Number>().ok()),
        };
        let issued = match link.request_with_id(new_request_id(), op).await {
            Ok(r) => ok_fields(r),
            Err(e) => Err(e.into()),
        };
        let piece = issued.and_then(|fields| {
            let serial = fields["serial"].as_str().unwrap_or_default().to_owned();
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(fields["item"].as_str().unwrap_or_default())
                .map_err(|_| CliError::new("bad_answer", "item is not base64"))?;
            let item = check_item(&bytes, &keys).map_err(|e| CliError::new("bad_item", e))?;
            let Body::Postage(indicium) = &item.body else {
                return Err(CliError::new("bad_item", "not a postage item"));
            };
            if item.body.serial().to_string() != serial || item.body.amount() != *postage {
                return Err(CliError::new("bad_item", "item does not match the request"));
            }
            Ok(Charged {
                row: row.number,
                serial,
                lines: indicium.label_lines(),
                tracking: labels::tracking(indicium),
                bytes,
            })
        });
        match piece {
            Ok(piece) => charged.push(piece),
            Err(e) => {
                stopped = Some((row.number, e));
                break;
            }
        }
    }
    if !out.json {
        eprintln!();
    }

    // Print everything charged as one file; any failure voids all of it.
    let printed: Result<(), String> = if charged.is_empty() {
        Ok(())
    } else {
        let pieces: Vec<Piece> = charged
            .iter()
            .map(|c| {
                let row = &rows[c.row - 1];
                Piece {
                    item: &c.bytes,
                    indicium: c.lines.clone(),
                    from: row.from.clone(),
                    to: row.to.clone(),
                    tracking: Some(c.tracking.clone()),
                }
            })
            .collect();
        stampline_label::render_layout(layout, format, a.dpi, &pieces)
            .map_err(|e| e.to_string())
            .and_then(|data| {
                if let Some(reason) = link.lost_reason() {
                    return Err(format!("link lost before printing: {reason}"));
                }
                write_synced(&path, &data)
                    .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
                if let Some(reason) = link.lost_reason() {
                    let _ = std::fs::remove_file(&path);
                    return Err(format!("link lost before printing finished: {reason}"));
                }
                Ok(())
            })
    };

    let mut printed_serials = Vec::new();
    let mut voided_serials = Vec::new();
    let mut unconfirmed = Vec::new();
    for piece in &charged {
        let confirm = link
            .request(Op::Confirm {
                serial: piece.serial.clone(),
                printed: printed.is_ok(),
            })
            .await;
        match (confirm, printed.is_ok()) {
            (Ok(r), true) if r.ok => printed_serials.push(piece.serial.clone()),
            (Ok(r), false) if r.ok => voided_serials.push(piece.serial.clone()),
            _ => unconfirmed.push(piece.serial.clone()),
        }
    }
    let balance = link
        .request(Op::Balance {})
        .await
        .ok()
        .and_then(|r| ok_fields(r).ok());
    let _ = link.bye().await;

    let first_not_charged = stopped.as_ref().map(|(row, _)| *row);
    let printed_mills: u64 = charged
        .iter()
        .zip(&prices)
        .filter(|(c, _)| printed_serials.contains(&c.serial))
        .map(|(_, p)| p.mills())
        .sum();
    let complete = stopped.is_none() && printed.is_ok() && unconfirmed.is_empty();
    let summary = json!({
        "rows": rows.len(),
        "printed": printed_serials,
        "voided": voided_serials,
        "unconfirmed": unconfirmed,
        "not_charged_from_row": first_not_charged,
        "error": stopped.as_ref().map(|(row, e)| json!({"row": row, "code": e.code, "message": e.message})),
        "print_error": printed.as_ref().err(),
        "file": (printed.is_ok() && !charged.is_empty()).then(|| path.display().to_string()),
        "postage_mills": printed_mills,
        "balance_mills": balance.as_ref().map(|b| b["balance_mills"].clone()),
        "complete": complete,
    });
    let mut human = format!(
        "batch of {}: {} printed ({}) into {}",
        rows.len(),
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
    if let Some((row, e)) = &stopped {
        human.push_str(&format!(
            "; stopped at row {row}: {} ({}); rows {row}.. not charged",
            e.message, e.code
        ));
    }
    if let Err(reason) = &printed {
        human.push_str(&format!("; printing failed: {reason}"));
    }
    out.done(&summary, &human);
    if !complete {
        std::process::exit(1);
    }
    Ok(())
}

fn write_synced(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut f = std::fs::File::create(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}
