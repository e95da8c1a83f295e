//! `stampline verify FILE`: decode, parse, check the signature with the published key, check the
//! item's status (the void list).

use std::path::Path;

use serde_json::{Value, json};
use stampline_client::{Endpoint, PublishedKey, check_item};
use stampline_items::Item;

use crate::args::{Global, VerifyArgs};
use crate::client_cmds::endpoint;
use crate::output::{CliError, Out};

/// Largest file `verify` reads.
pub const MAX_VERIFY_FILE_BYTES: u64 = 64 * 1024 * 1024;

/// Resolution at which a PDF's first page is rasterised for decoding.
pub const PDF_RASTER_DPI: u32 = 300;

/// The item bytes inside a file: a PNG label is decoded; a PDF's first page is rasterised with
/// poppler's `pdftoppm` and decoded; anything else is taken as raw bytes.
pub fn item_bytes_of(data: &[u8]) -> Result<Vec<u8>, CliError> {
    if data.starts_with(b"\x89PNG\r\n\x1a\n") {
        return stampline_label::decode_png(data)
            .map_err(|e| CliError::new("no_barcode", e.to_string()));
    }
    if data.starts_with(b"%PDF") {
        let png = rasterise_pdf(data)?;
        return stampline_label::decode_png(&png)
            .map_err(|e| CliError::new("no_barcode", format!("first page of the PDF: {e}")));
    }
    Ok(data.to_vec())
}

/// The first page of a PDF as a PNG at [`PDF_RASTER_DPI`], by `pdftoppm` (poppler-utils), in a
/// private scratch directory that is removed afterwards.
fn rasterise_pdf(pdf: &[u8]) -> Result<Vec<u8>, CliError> {
    let dir = std::env::temp_dir().join(format!("stampline-verify-{}", uuid::Uuid::new_v4()));
    let scratch = |e: std::io::Error| CliError::new("io_error", format!("scratch directory: {e}"));
    std::fs::create_dir(&dir).map_err(scratch)?;
    let result =
        (|| {
            let input = dir.join("label.pdf");
            std::fs::write(&input, pdf).map_err(scratch)?;
            let output = std::process::Command::new("pdftoppm")
            .args(["-r", &PDF_RASTER_DPI.to_string(), "-f", "1", "-l", "1", "-png", "-singlefile"])
            .arg(&input)
            .arg(dir.join("page"))
            .output()
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => CliError::new(
                    "pdf_tool_missing",
                    "verifying a PDF needs pdftoppm (Debian package poppler-utils); install it, \
                     or verify the PNG or the raw item",
                ),
                _ => CliError::new("pdf_tool_failed", format!("pdftoppm: {e}")),
            })?;
            if !output.status.success() {
                let stderr = String::from_utf8_lossy(&output.stderr);
                return Err(CliError::new(
                    "bad_pdf",
                    format!("pdftoppm could not render the PDF: {}", stderr.trim()),
                ));
            }
            std::fs::read(dir.join("page.png")).map_err(scratch)
        })();
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn keys_from_file(path: &Path) -> Result<Vec<PublishedKey>, CliError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| CliError::new("bad_keys", format!("{}: {e}", path.display())))?;
    let v: Value =
        serde_json::from_str(&text).map_err(|e| CliError::new("bad_keys", e.to_string()))?;
    v.as_array()
        .ok_or_else(|| {
            CliError::new(
                "bad_keys",
                "keys file must be the JSON array of GET /v1/keys",
            )
        })?
        .iter()
        .map(|k| PublishedKey::from_json(k).map_err(|e| CliError::new("bad_keys", e)))
        .collect()
}

fn describe(item: &Item) -> Value {
    json!({
        "kind": item.body.kind().name(),
        "device_id": item.body.device_id().to_string(),
        "key_id": item.body.key_id().to_string(),
        "serial": item.body.serial().to_string(),
        "amount_mills": item.body.amount().mills(),
        // Signed by a sandbox device (the reserved test model): not postage.
        "test_item": item.body.device_id().is_test(),
    })
}

/// Verify a file. `Ok` carries the verdict (valid or not); `Err` is for "could not tell".
pub async fn do_verify(
    ep: Option<&Endpoint>,
    keys_file: Option<&Path>,
    file: &Path,
) -> Result<Value, CliError> {
    let meta = std::fs::metadata(file)
        .map_err(|e| CliError::new("no_file", format!("{}: {e}", file.display())))?;
    if meta.len() > MAX_VERIFY_FILE_BYTES {
        return Err(CliError::new("too_large", "file is over 64 MiB"));
    }
    let data = std::fs::read(file)
        .map_err(|e| CliError::new("no_file", format!("{}: {e}", file.display())))?;
    let bytes = item_bytes_of(&data)?;
    let keys = match (keys_file, ep) {
        (Some(path), _) => keys_from_file(path)?,
        (None, Some(ep)) => ep.keys().await?,
        (None, None) => {
            return Err(CliError::new(
                "no_keys",
                "give --keys FILE or a server (--server, --trust)",
            ));
        }
    };
    let invalid = |reason: String, details: Value| {
        let mut v = json!({"valid": false, "reason": reason});
        if let (Value::Object(m), Value::Object(d)) = (&mut v, details) {
            m.extend(d);
        }
        v
    };
    let item = match check_item(&bytes, &keys) {
        Ok(item) => item,
        Err(reason) => {
            let details = Item::parse(&bytes)
                .map(|i| describe(&i))
                .unwrap_or(json!({}));
            return Ok(invalid(reason, details));
        }
    };
    let mut v = describe(&item);
    let status = match ep {
        Some(ep) => Some(ep.item_status(&item.body.serial().to_string()).await?),
        None => None,
    };
    if let (Value::Object(m), Some(s)) = (&mut v, &status) {
        m.insert("status".into(), json!(s.status));
        if let Some(left) = s.remaining_mills {
            m.insert("remaining_mills".into(), json!(left));
        }
        if let Some(until) = &s.valid_until {
            m.insert("valid_until".into(), json!(until));
        }
    }
    let reason = status.as_ref().and_then(|s| status_problem(&s.status));
    if let Value::Object(m) = &mut v {
        m.insert("valid".into(), json!(reason.is_none()));
        if status.is_none() {
            m.insert("status".into(), Value::Null);
        }
        if let Some(reason) = reason {
            m.insert("reason".into(), json!(reason));
        }
    }
    Ok(v)
}

/// Why an item whose signature holds is still not good, by its status: voided, refunded,
/// redeemed (in full: a gift certificate redeemed in part stays `printed`), expired, or unknown
/// to the server.
fn status_problem(status: &str) -> Option<String> {
    match status {
        "voided" | "refunded" | "unknown" => Some(format!("item is {status}")),
        "redeemed" => Some("item was already redeemed".into()),
        "expired" => Some("item expired (its valid-until day is over)".into()),
        _ => None,
    }
}

pub async fn verify_cmd(global: &Global, a: VerifyArgs, out: Out) -> Result<(), CliError> {
    let ep = if global.server.is_some() {
        Some(endpoint(global)?)
    } else {
        None
    };
    let v = do_verify(ep.as_ref(), a.keys.as_deref(), &a.file).await?;
    let valid = v["valid"] == json!(true);
    let human = if valid {
        let test = if v["test_item"] == json!(true) {
            "TEST ITEM (signed by a sandbox device; not postage) "
        } else {
            ""
        };
        let left = v["remaining_mills"]
            .as_u64()
            .filter(|left| Some(*left) != v["amount_mills"].as_u64())
            .map(|left| format!(", {left} mills left"))
            .unwrap_or_default();
        format!(
            "VALID {test}{} {} — {} mills, status {}{left}",
            v["kind"].as_str().unwrap_or(""),
            v["serial"].as_str().unwrap_or(""),
            v["amount_mills"],
            v["status"].as_str().unwrap_or("not checked (offline)")
        )
    } else {
        format!(
            "INVALID: {}",
            v["reason"].as_str().unwrap_or("unknown reason")
        )
    };
    out.done(&v, &human);
    if !valid {
        std::process::exit(1);
    }
    Ok(())
}
