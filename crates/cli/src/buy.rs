//! `stampline buy`: issue, check the item, render, print (to a file for now), confirm.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde_json::{Value, json};
use stampline_client::{Endpoint, Link, LinkError, PublishedKey};
use stampline_items::Item;
use stampline_money::Amount;
use stampline_wire::Op;
use uuid::Uuid;

use crate::args::{BuyArgs, Global};
use crate::client_cmds::{connect, dollars, ok_fields};
use crate::labels;
use crate::output::{CliError, Out};

/// Output formats this version writes: PNG, PDF, SVG and ZPL labels, and `raw`, the item's exact
/// bytes (what `verify` also accepts). The default is PNG and PDF.
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
    Ok(item)
}

fn write_synced(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut f = std::fs::File::create(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

fn render(
    item: &Item,
    bytes: &[u8],
    format: &str,
    dpi: u32,
    choice: &labels::LabelChoice,
) -> Result<Vec<u8>, String> {
    match format {
        "raw" => Ok(bytes.to_vec()),
        other => labels::render(item, bytes, other, dpi, choice),
    }
}

/// The whole purchase on a live link. Returns the `--json` result.
pub async fn do_buy(ep: &Endpoint, link: &Link, a: &BuyArgs) -> Result<Value, CliError> {
    let postage = match (&a.postage, &a.weight_oz) {
        (Some(p), None) => {
            Amount::parse_dollars(p).map_err(|e| CliError::new("bad_amount", e.to_string()))?
        }
        (None, Some(_)) => {
            return Err(CliError::new(
                "unsupported",
                "rated purchases (--weight-oz) come with the rate engine; give --postage",
            ));
        }
        _ => return Err(CliError::new("bad_request", "give --postage DOLLARS")),
    };
    let mut formats: Vec<String> = if a.format.is_empty() {
        DEFAULT_FORMATS.iter().map(|s| (*s).to_owned()).collect()
    } else {
        a.format.clone()
    };
    formats.dedup();
    if let Some(f) = formats.iter().find(|f| !FORMATS.contains(&f.as_str())) {
        return Err(CliError::new(
            "unsupported",
            format!("format {f:?}: this version writes png, pdf, svg, zpl and raw"),
        ));
    }
    if !(100..=1200).contains(&a.dpi) {
        return Err(CliError::new("bad_request", "--dpi must be 100 to 1200"));
    }
    let (choice, to_zip) = labels::choose(a, &formats)?;
    let out_base: Option<PathBuf> = match (&a.printer, &a.out) {
        (Some(p), _) => Some(PathBuf::from(p.strip_prefix("file:").ok_or_else(|| {
            CliError::new("unsupported", "this version prints to file:PATH only")
        })?)),
        (None, out) => out.clone(),
    };
    let keys = ep.keys().await?;

    let id = Uuid::new_v4();
    let op = Op::Issue {
        kind: "postage".into(),
        postage_mills: postage.mills(),
        from_zip: a.from.clone(),
        to_zip,
        mail_date: a.date.clone().unwrap_or_else(today),
        class: a.class.clone(),
    };
    let issued = match link.request_with_id(id, op).await {
        Ok(r) => ok_fields(r)?,
        Err(e @ (LinkError::Lost(_) | LinkError::Timeout(_))) => {
            return Err(CliError::new(
                e.code(),
                format!(
                    "{e}; if the item was issued it was not printed, and it will be voided and refunded when the confirmation window ends"
                ),
            ));
        }
        Err(e) => return Err(e.into()),
    };
    let serial = issued["serial"].as_str().unwrap_or_default().to_owned();
    let item_bytes = base64::engine::general_purpose::STANDARD
        .decode(issued["item"].as_str().unwrap_or_default())
        .map_err(|_| CliError::new("bad_answer", "item is not base64"))?;
    if issued["print"]["spool"] != json!(false) || issued["print"]["copies"] != json!(1) {
        tracing::warn!("unexpected print policy; printing one copy without spooling");
    }

    // Print: render each format and write it; any failure voids the item.
    let printed: Result<Vec<String>, String> = async {
        let item = check_item(&item_bytes, &keys)?;
        if item.body.serial().to_string() != serial || item.body.amount() != postage {
            return Err("item does not match the request".into());
        }
        let mut files = Vec::new();
        for format in &formats {
            let data = render(&item, &item_bytes, format, a.dpi, &choice)?;
            let path = match &out_base {
                Some(base) => base.with_extension(format),
                None => PathBuf::from(format!("{serial}.{format}")),
            };
            if let Some(reason) = link.lost_reason() {
                return Err(format!("link lost before printing finished: {reason}"));
            }
            write_synced(&path, &data)
                .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
            files.push(path.display().to_string());
        }
        // The job completes only on a continuous link: if it broke, cancel (remove) what was written.
        if let Some(reason) = link.lost_reason() {
            for f in &files {
                let _ = std::fs::remove_file(f);
            }
            return Err(format!("link lost before printing finished: {reason}"));
        }
        Ok(files)
    }
    .await;

    let (files, ok) = match printed {
        Ok(files) => (files, true),
        Err(reason) => {
            let confirm = link
                .request(Op::Confirm {
                    serial: serial.clone(),
                    printed: false,
                })
                .await;
            let refunded = matches!(&confirm, Ok(r) if r.ok);
            let tail = if refunded {
                "the item was voided and refunded"
            } else {
                "the item will be voided and refunded when the confirmation window ends"
            };
            return Err(CliError::new("print_failed", format!("{reason}; {tail}")));
        }
    };
    let confirmed = ok_fields(
        link.request(Op::Confirm {
            serial: serial.clone(),
            printed: true,
        })
        .await?,
    )?;
    Ok(json!({
        "serial": serial,
        "postage_mills": postage.mills(),
        "balance_mills": confirmed["balance_mills"],
        "status": confirmed["status"],
        "files": files,
        "printed": ok,
    }))
}

pub async fn buy(global: &Global, a: BuyArgs, out: Out) -> Result<(), CliError> {
    if let Some(file) = &a.batch {
        return crate::batch::buy_batch(global, &a, file, out).await;
    }
    let (ep, link) = connect(global).await?;
    let v = do_buy(&ep, &link, &a).await?;
    let _ = link.bye().await;
    let human = format!(
        "bought {} postage, serial {}; balance {}; wrote {}",
        dollars(v["postage_mills"].as_u64().unwrap_or(0)),
        v["serial"].as_str().unwrap_or(""),
        dollars(v["balance_mills"].as_u64().unwrap_or(0)),
        v["files"]
            .as_array()
            .map(|f| f
                .iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(", "))
            .unwrap_or_default()
    );
    out.done(&v, &human);
    Ok(())
}
