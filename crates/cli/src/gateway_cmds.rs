//! `stampline admin gateway-credentials | gateway-revoke | gateways`: the internal CA's gateway
//! certificates, on the core's machine (its data dir and crypto device), off the async runtime.

use std::path::{Path, PathBuf};

use serde_json::json;
use stampline_psd::PsdSpec;
use stampline_server::internal_ca::{GatewayRecord, GatewayRegistry, InternalCa, InternalCaError};
use stampline_server::tls::TlsIdentity;

use crate::output::{CliError, Out};

/// An internal CA error as the CLI reports it: the operator's mistakes by their own code.
fn ca_error(e: anyhow::Error) -> CliError {
    match e.downcast_ref::<InternalCaError>() {
        Some(known) => CliError::new(known.code(), known.to_string()),
        None => CliError::new("internal_ca", format!("{e:#}")),
    }
}

/// The data dir must be there already: a typo must not make a new crypto device and CA.
fn existing_data_dir(data_dir: &Path) -> Result<(), CliError> {
    if data_dir.is_dir() {
        Ok(())
    } else {
        Err(CliError::new(
            "bad_data_dir",
            format!("no data dir at {}", data_dir.display()),
        ))
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, CliError> + Send + 'static,
) -> Result<T, CliError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| CliError::new("internal", e.to_string()))?
}

pub async fn credentials(
    data_dir: PathBuf,
    psd: Option<String>,
    name: String,
    dir: PathBuf,
    hostnames: Vec<String>,
    out: Out,
) -> Result<(), CliError> {
    let spec: PsdSpec = psd
        .as_deref()
        .unwrap_or("software")
        .parse()
        .map_err(|e: stampline_psd::PsdError| CliError::new(e.code(), e.to_string()))?;
    let target = dir.clone();
    let record = blocking(move || {
        existing_data_dir(&data_dir)?;
        // The CA's keys go in: the data dir is made private first, as the server does at start.
        stampline_server::data_dir::prepare(&data_dir)
            .map_err(|e| CliError::new("bad_data_dir", format!("{}: {e}", data_dir.display())))?;
        let now_unix = stampline_server::clock::now_ms() / 1000;
        let device = stampline_psd::open_device(&spec, &data_dir, now_unix)
            .map_err(|e| CliError::new(e.code(), format!("crypto device: {e}")))?;
        let tls = TlsIdentity::load_or_create(&data_dir, &hostnames, device.psd.as_ref())
            .map_err(|e| CliError::new("tls", format!("{e:#}")))?;
        let ca = InternalCa::load_or_create(&data_dir, device.psd.as_ref()).map_err(ca_error)?;
        ca.issue_gateway(&tls, &tls.trust_path, &name, &target)
            .map_err(ca_error)
    })
    .await?;
    out.done(
        &json!({
            "name": record.name,
            "fingerprint": record.fingerprint,
            "not_after": record.not_after,
            "out": dir.display().to_string(),
        }),
        &format!(
            "gateway {}: credentials in {} (certificate {}, valid until {})",
            record.name,
            dir.display(),
            record.fingerprint,
            record.not_after
        ),
    );
    Ok(())
}

pub async fn revoke(data_dir: PathBuf, name: String, out: Out) -> Result<(), CliError> {
    let n = name.clone();
    let revoked = blocking(move || {
        existing_data_dir(&data_dir)?;
        GatewayRegistry::revoke(&data_dir, &n, stampline_server::clock::now_ms()).map_err(ca_error)
    })
    .await?;
    out.done(
        &json!({"name": name, "revoked": revoked.len()}),
        &format!(
            "gateway {name}: {} certificate{} revoked; the core refuses it at its next connection",
            revoked.len(),
            if revoked.len() == 1 { "" } else { "s" }
        ),
    );
    Ok(())
}

pub async fn list(data_dir: PathBuf, out: Out) -> Result<(), CliError> {
    let records = blocking(move || {
        existing_data_dir(&data_dir)?;
        GatewayRegistry::load(&data_dir)
            .map(|r| r.list().to_vec())
            .map_err(ca_error)
    })
    .await?;
    out.done(&json!({ "gateways": records }), &table(&records));
    Ok(())
}

/// One line per certificate: name, status, issued, valid until, fingerprint.
fn table(records: &[GatewayRecord]) -> String {
    if records.is_empty() {
        return "no gateway credentials issued".into();
    }
    let day = |ms: i64| {
        stampline_server::core::rfc3339(ms.div_euclid(1000)).unwrap_or_else(|| "-".into())
    };
    let width = records
        .iter()
        .map(|r| r.name.len())
        .max()
        .unwrap_or(4)
        .max(4);
    let mut out = format!(
        "{:width$}  {:29}  {:20}  {:20}  fingerprint",
        "name", "status", "issued", "not after"
    );
    for r in records {
        let status = match r.revoked_at_ms {
            Some(ms) => format!("revoked {}", day(ms)),
            None => "active".into(),
        };
        out.push_str(&format!(
            "\n{:width$}  {status:29}  {:20}  {:20}  {}",
            r.name,
            day(r.issued_at_ms),
            r.not_after,
            r.fingerprint
        ));
    }
    out
}
