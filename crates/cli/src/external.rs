//! The external services from the command line: `stampline sandbox cmls|bank`, `stampline admin
//! reconcile` and `stampline admin report-usage`. The admin commands run on the server's machine against its
//! data dir and the same CMLS/bank flags as the server (no admin link is needed).

use std::path::PathBuf;

use serde_json::json;
use stampline_sandbox::service::{Kind, Service};
use stampline_server::database::{Database, SQLITE_FILE};
use stampline_server::{ExternalConfig, Server, ServerConfig};

use crate::args::{ExternalArgs, ReportUsageArgs, SandboxArgs, SandboxService};
use crate::output::{CliError, Out};

/// The server's external links from (URL, trust) pairs; `None` = built-in sandbox.
pub fn external_config(
    cmls: Option<(&String, &PathBuf)>,
    bank: Option<(&String, &PathBuf)>,
) -> ExternalConfig {
    ExternalConfig {
        cmls: cmls.map(|(u, t)| (u.clone(), t.clone())),
        bank: bank.map(|(u, t)| (u.clone(), t.clone())),
        ..ExternalConfig::default()
    }
}

pub async fn sandbox(a: SandboxArgs, out: Out) -> Result<(), CliError> {
    let (kind, args) = match a.service {
        SandboxService::Cmls(args) => (Kind::Cmls, args),
        SandboxService::Bank(args) => (Kind::Bank, args),
    };
    let dir = args
        .data_dir
        .unwrap_or_else(|| PathBuf::from(format!("./stampline-{}", kind.name())));
    let settle = match args.settle_after_ms {
        Some(ms) => Some(
            i64::try_from(ms)
                .map_err(|_| CliError::new("bad_flag", "--settle-after-ms too large"))?,
        ),
        None => None,
    };
    let faults = args
        .fault
        .iter()
        .map(|f| stampline_sandbox::service::Fault::parse(f))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| CliError::new("bad_flag", e))?;
    let service =
        Service::open(kind, &dir, settle, faults).map_err(|e| CliError::new("sandbox_start", e))?;
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .map_err(|e| CliError::new("listen", format!("cannot listen on {}: {e}", args.listen)))?;
    let addr = listener
        .local_addr()
        .map_err(|e| CliError::new("listen", e.to_string()))?;
    let url = format!("https://{addr}");
    let trust = service.trust_path.display().to_string();
    eprintln!(
        "stampline: SANDBOX {} — a stand-in; no real licences or money.",
        kind.name()
    );
    out.done(
        &json!({"event": "listening", "service": kind.name(), "url": url, "trust": trust}),
        &format!(
            "{} sandbox listening on {url}\ntrust file: {trust}",
            kind.name()
        ),
    );
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    service
        .run(listener, shutdown)
        .await
        .map_err(|e| CliError::new("sandbox", e.to_string()))
}

fn open_server(a: &ExternalArgs) -> Result<Server, CliError> {
    let database = Database::parse(a.database.as_deref())
        .map_err(|why| CliError::new("bad_flag", format!("--database: {why}")))?;
    if database == Database::Sqlite && !a.data_dir.join(SQLITE_FILE).exists() {
        return Err(CliError::new(
            "no_ledger",
            format!("no ledger in {}", a.data_dir.display()),
        ));
    }
    let mut cfg = ServerConfig::new(a.data_dir.clone());
    cfg.database = database;
    cfg.external = external_config(
        a.cmls.as_ref().zip(a.cmls_trust.as_ref()),
        a.bank.as_ref().zip(a.bank_trust.as_ref()),
    );
    // The PostgreSQL client blocks: open off the runtime's async workers.
    tokio::task::block_in_place(|| Server::open(cfg))
        .map_err(|e| CliError::new("open", format!("{e:#}")))
}

/// `stampline admin reconcile`: exit 1 on any difference.
pub async fn reconcile(ext: ExternalArgs, out: Out) -> Result<(), CliError> {
    {
        {
            let server = open_server(&ext)?;
            let core = server.core();
            // First learn of any returned debits, so a return is not reported as a difference.
            let settled = core
                .check_settlements()
                .await
                .map_err(|e| CliError::new(e.code(), e.public_message()))?;
            let report = core
                .reconcile()
                .await
                .map_err(|e| CliError::new(e.code(), e.public_message()))?;
            let value = json!({"clean": report.clean, "differences": report.differences,
                "payments_checked": report.payments_checked, "devices_checked": report.devices_checked,
                "returns_recorded": settled.returned});
            if !report.clean {
                if out.json {
                    println!("{value}");
                } else {
                    for d in &report.differences {
                        println!("{} {}: {}", d.kind, d.id, d.detail);
                    }
                    eprintln!("reconcile: {} difference(s)", report.differences.len());
                }
                std::process::exit(1);
            }
            out.done(
                &value,
                &format!(
                    "reconcile clean: {} payments, {} devices",
                    report.payments_checked, report.devices_checked
                ),
            );
            Ok(())
        }
    }
}

/// `stampline admin report-usage`: the daily usage report of every device to CMLS.
pub async fn report_usage(r: ReportUsageArgs, out: Out) -> Result<(), CliError> {
    {
        {
            let server = open_server(&r.external)?;
            let date = r
                .date
                .unwrap_or_else(|| time::OffsetDateTime::now_utc().date().to_string());
            let sent = server
                .core()
                .send_usage_reports(date)
                .await
                .map_err(|e| CliError::new(e.code(), e.public_message()))?;
            let flagged = sent.iter().filter(|(_, f)| !f.is_empty()).count();
            let value = json!({"reports": sent.iter().map(|(d, f)| json!({"device_id": d, "flags": f})).collect::<Vec<_>>()});
            out.done(
                &value,
                &format!("sent {} usage reports; {flagged} flagged", sent.len()),
            );
            Ok(())
        }
    }
}
