//! `stampline server` and `stampline audit`.

use std::sync::Arc;

use serde_json::json;
use stampline_ledger::{SqliteStore, Store as _};
use stampline_server::{Server, ServerConfig};

use crate::args::{AuditArgs, ServerArgs};
use crate::output::{CliError, Out};

fn unsupported(flag: &str, why: &str) -> CliError {
    CliError::new("unsupported", format!("{flag}: {why}"))
}

pub fn config(a: &ServerArgs) -> Result<ServerConfig, CliError> {
    if let Some(db) = &a.database
        && db != "sqlite"
    {
        return Err(unsupported(
            "--database",
            "this version stores the ledger in SQLite in the data dir",
        ));
    }
    let psd: stampline_psd::PsdSpec = a
        .psd
        .as_deref()
        .unwrap_or("software")
        .parse()
        .map_err(|e: stampline_psd::PsdError| CliError::new("bad_flag", e.to_string()))?;
    if a.role != "all" {
        return Err(unsupported(
            "--role",
            "this version runs both tiers in one process (--role all)",
        ));
    }
    if a.beat_interval_ms == 0 || a.beat_timeout_ms == 0 || a.confirm_window_ms == 0 {
        return Err(CliError::new(
            "bad_flag",
            "intervals and windows must be positive",
        ));
    }
    let mut cfg = ServerConfig::new(a.data_dir.clone());
    cfg.external = crate::external::external_config(
        a.cmls.as_ref().zip(a.cmls_trust.as_ref()),
        a.bank.as_ref().zip(a.bank_trust.as_ref()),
    );
    cfg.external.timeout = std::time::Duration::from_millis(a.external_timeout_ms.max(1));
    cfg.external.settlement_poll = std::time::Duration::from_millis(a.settlement_poll_ms.max(1));
    cfg.external.usage_report = std::time::Duration::from_millis(a.usage_report_ms);
    cfg.hostnames = a.hostname.clone();
    cfg.psd = psd;
    cfg.beat_interval_ms = a.beat_interval_ms;
    cfg.beat_timeout_ms = a.beat_timeout_ms;
    cfg.core.confirm_window_ms = i64::try_from(a.confirm_window_ms)
        .map_err(|_| CliError::new("bad_flag", "--confirm-window-ms too large"))?;
    Ok(cfg)
}

pub async fn server(a: ServerArgs, out: Out) -> Result<(), CliError> {
    let cfg = config(&a)?;
    let server = Server::open(cfg).map_err(|e| CliError::new("server_start", format!("{e:#}")))?;
    let listener = tokio::net::TcpListener::bind(&a.listen)
        .await
        .map_err(|e| CliError::new("listen", format!("cannot listen on {}: {e}", a.listen)))?;
    let addr = listener
        .local_addr()
        .map_err(|e| CliError::new("listen", e.to_string()))?;
    let url = format!("https://{addr}");
    let trust = server.trust_path().display().to_string();
    if server.is_sandbox() {
        eprintln!(
            "stampline: SANDBOX MODE — the licensing system and the bank are built-in stand-ins; no real postage or money moves."
        );
    }
    out.done(
        &json!({"event": "listening", "url": url, "trust": trust}),
        &format!("listening on {url}\ntrust file: {trust}"),
    );
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    server
        .run(listener, shutdown)
        .await
        .map_err(|e| CliError::new("server", format!("{e:#}")))
}

pub fn audit(a: AuditArgs, out: Out) -> Result<(), CliError> {
    let path = a.data_dir.join("ledger.sqlite");
    if !path.exists() {
        return Err(CliError::new(
            "no_ledger",
            format!("no ledger at {}", path.display()),
        ));
    }
    let store =
        Arc::new(SqliteStore::open(&path).map_err(|e| CliError::new("audit", e.to_string()))?);
    let report = store
        .audit()
        .map_err(|e| CliError::new("audit", e.to_string()))?;
    let clean = report.problems.is_empty();
    let value = json!({"clean": clean, "problems": report.problems, "accounts": report.accounts,
        "transfers": report.transfers, "items": report.items, "audit_entries": report.audit_entries});
    if !clean {
        if out.json {
            println!("{value}");
        } else {
            for p in &report.problems {
                eprintln!("audit: {p}");
            }
        }
        std::process::exit(1);
    }
    out.done(
        &value,
        &format!(
            "audit clean: {} accounts, {} transfers, {} items, {} audit entries",
            report.accounts, report.transfers, report.items, report.audit_entries
        ),
    );
    Ok(())
}
