//! `stampline buy`: open the printer job, issue, check the item, render, print, confirm.

use std::path::PathBuf;

use base64::Engine as _;
use serde_json::{Value, json};
use stampline_client::print::DocFormat;
use stampline_client::{Endpoint, Link, LinkError, PublishedKey, new_request_id};
use stampline_items::Item;
use stampline_money::Amount;
use stampline_wire::Op;

use crate::args::{BuyArgs, Global};
use crate::client_cmds::{connect, dollars, ok_fields};
use crate::labels;
use crate::output::{CliError, Out};
use crate::print_cmd;

/// Output formats this version writes: PNG, PDF, SVG and ZPL labels, and `raw`, the item's exact
/// bytes (what `verify` also accepts). Files default to PNG and PDF; printers choose theirs.
pub const FORMATS: [&str; 5] = ["png", "pdf", "svg", "zpl", "raw"];
const DEFAULT_FORMATS: [&str; 2] = ["png", "pdf"];

fn today() -> String {
    time::OffsetDateTime::now_utc().date().to_string()
}

/// Find the item's key among the published ones and check the signature.
pub fn check_item(bytes: &[u8], keys: &[PublishedKey]) -> Result<Item, String> {
    let item = Item::parse(bytes).map_err(|e| format!("item does not parse: {e}"))?;
    let key_id = item.body.key_id().to_string();
    let key = keys
        .iter()
        .find(|k| k.key_id == key_id)
        .ok_or_else(|| format!("signing key {key_id} is not published"))?;
    item.verify(&key.spki_der)
        .map_err(|e| format!("signature: {e}"))?;
    key_in_force(key, time::OffsetDateTime::now_utc())?;
    Ok(item)
}

/// A signing key's items are accepted until it is revoked or its validity ends.
pub fn key_in_force(key: &PublishedKey, now: time::OffsetDateTime) -> Result<(), String> {
    use time::format_description::well_known::Rfc3339;
    let parse = |t: &str| {
        time::OffsetDateTime::parse(t, &Rfc3339)
            .map_err(|_| format!("signing key {} has a bad time {t:?}", key.key_id))
    };
    if let Some(at) = &key.revoked_at {
        return Err(format!(
            "signing key {} was revoked at {at}: {}",
            key.key_id,
            key.revocation_reason
                .as_deref()
                .unwrap_or("no reason given")
        ));
    }
    if let Some(until) = &key.valid_until
        && parse(until)? < now
    {
        return Err(format!("signing key {} expired at {until}", key.key_id));
    }
    Ok(())
}

/// The whole purchase on a live link. Returns the `--json` result.
///
/// Printer jobs are opened before the item is issued (a printer that is off or refuses costs
/// nothing), the document is sent only once the issue response is complete and checked, and the
/// item is confirmed from the printers' final job states (docs/DECISIONS.md, issue 6).
pub async fn do_buy(ep: &Endpoint, link: &Link, a: &BuyArgs) -> Result<Value, CliError> {
    let given = match &a.postage {
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
    // A rated purchase charges the quote (or the given postage, which the server checks).
    let postage = match (given, &weight_oz) {
        (Some(p), _) => p,
        (None, Some(w)) => {
            let q = ok_fields(
                link.request(Op::Quote {
                    class: a.class.clone(),
                    weight_oz: w.clone(),
                    from_zip: Some(a.from.clone()),
                    to_zip: Some(a.to.clone()),
                })
                .await?,
            )?;
            q["postage_mills"]
                .as_u64()
                .and_then(Amount::from_mills)
                .ok_or_else(|| CliError::new("bad_answer", "quote without postage"))?
        }
        (None, None) => {
            return Err(CliError::new(
                "bad_request",
                "give --postage DOLLARS or --weight-oz W",
            ));
        }
    };
    if let Some(f) = a.format.iter().find(|f| !FORMATS.contains(&f.as_str())) {
        return Err(CliError::new(
            "unsupported",
            format!("format {f:?}: this version writes png, pdf, svg, zpl and raw"),
        ));
    }
    if !(100..=1200).contains(&a.dpi) {
        return Err(CliError::new("bad_request", "--dpi must be 100 to 1200"));
    }
    let label_formats: Vec<String> = if a.format.is_empty() {
        DEFAULT_FORMATS.iter().map(|s| (*s).to_owned()).collect()
    } else {
        a.format.clone()
    };
    // Layout and addresses are checked before anything is charged.
    let (choice, to_zip) = labels::choose(a, &label_formats)?;
    let printer_targets = match &a.printer {
        Some(uri) => {
            let options = print_cmd::print_options(a.printer_cert.as_deref())?;
            Some(print_cmd::targets(uri, &a.format, &options)?)
        }
        None => None,
    };
    let keys = ep.keys().await?;

    let id = new_request_id();
    let op = Op::Issue {
        kind: "postage".into(),
        postage_mills: postage.mills(),
        from_zip: a.from.clone(),
        to_zip,
        mail_date: a.date.clone().unwrap_or_else(today),
        class: a.class.clone(),
        weight_oz,
    };
    // Open the printer jobs first: nothing is reserved if a printer is off or refuses.
    let early_jobs = match printer_targets {
        Some(t) => Some(print_cmd::start_jobs(t, &format!("stampline-{id}")).await?),
        None => None,
    };
    let issued = match link.request_with_id(id, op).await {
        Ok(r) => ok_fields(r),
        Err(e @ (LinkError::Lost(_) | LinkError::Timeout(_))) => Err(CliError::new(
            e.code(),
            format!(
                "{e}; if the item was issued it was not printed, and it will be voided and refunded when the confirmation window ends"
            ),
        )),
        Err(e) => Err(e.into()),
    };
    let issued = match issued {
        Ok(v) => v,
        Err(e) => {
            if let Some(jobs) = early_jobs {
                print_cmd::cancel_jobs(jobs, "the item was not issued").await;
            }
            return Err(e);
        }
    };
    let serial = issued["serial"].as_str().unwrap_or_default().to_owned();
    let item_bytes = base64::engine::general_purpose::STANDARD
        .decode(issued["item"].as_str().unwrap_or_default())
        .unwrap_or_default();
    if issued["print"]["spool"] != json!(false) || issued["print"]["copies"] != json!(1) {
        tracing::warn!("unexpected print policy; printing one copy without spooling");
    }
    let checked = check_item(&item_bytes, &keys).and_then(|item| {
        if item.body.serial().to_string() != serial || item.body.amount() != postage {
            Err("item does not match the request".to_owned())
        } else {
            Ok(item)
        }
    });
    let jobs = match early_jobs {
        Some(jobs) => Ok(jobs),
        None => {
            let base = a.out.clone().unwrap_or_else(|| PathBuf::from(&serial));
            let formats: Vec<String> = if a.format.is_empty() {
                DEFAULT_FORMATS.iter().map(|s| (*s).to_owned()).collect()
            } else {
                a.format.clone()
            };
            match print_cmd::file_targets(&base, &formats) {
                Ok(t) => print_cmd::start_jobs(t, &serial).await,
                Err(e) => Err(e),
            }
        }
    };
    let (item, jobs) = match (checked, jobs) {
        (Ok(item), Ok(jobs)) => (item, jobs),
        (checked, jobs) => {
            let why = match (&checked, &jobs) {
                (Err(e), _) => e.clone(),
                (_, Err(e)) => e.message.clone(),
                _ => String::new(),
            };
            if let Ok(jobs) = jobs {
                print_cmd::cancel_jobs(jobs, &why).await;
            }
            let confirm = link
                .request(Op::Confirm {
                    serial: serial.clone(),
                    printed: false,
                })
                .await;
            let tail = if matches!(&confirm, Ok(r) if r.ok) {
                "the item was voided and refunded"
            } else {
                "the item will be voided and refunded when the confirmation window ends"
            };
            return Err(CliError::new("print_failed", format!("{why}; {tail}")));
        }
    };

    let lost = link.watch_lost();
    let reports = print_cmd::finish_jobs(
        jobs,
        |format| match (choice.layout, format) {
            (None, _) => print_cmd::render(&item, &item_bytes, format, a.dpi),
            (Some(_), DocFormat::Raw) => Ok(item_bytes.clone()),
            (Some(_), f) => labels::render(&item, &item_bytes, f.name(), a.dpi, &choice),
        },
        &lost,
    )
    .await;
    let confirmed = print_cmd::settle(link, &serial, &reports).await?;
    let files: Vec<String> = print_cmd::files_of(&reports)
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    Ok(json!({
        "serial": serial,
        "postage_mills": postage.mills(),
        "balance_mills": confirmed["balance_mills"],
        "status": confirmed["status"],
        "files": files,
        "printed": true,
        "printer": a.printer,
        "jobs": print_cmd::jobs_json(&reports),
    }))
}

pub async fn buy(global: &Global, a: BuyArgs, out: Out) -> Result<(), CliError> {
    if let Some(file) = &a.batch {
        return crate::batch::buy_batch(global, &a, file, out).await;
    }
    let (ep, link) = connect(global).await?;
    let v = do_buy(&ep, &link, &a).await?;
    let _ = link.bye().await;
    let files = v["files"]
        .as_array()
        .map(|f| {
            f.iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default();
    let printed = match (&a.printer, files.is_empty()) {
        (Some(p), true) => format!("printed on {p}"),
        _ => format!("wrote {files}"),
    };
    let human = format!(
        "bought {} postage, serial {}; balance {}; {printed}",
        dollars(v["postage_mills"].as_u64().unwrap_or(0)),
        v["serial"].as_str().unwrap_or(""),
        dollars(v["balance_mills"].as_u64().unwrap_or(0)),
    );
    out.done(&v, &human);
    Ok(())
}
