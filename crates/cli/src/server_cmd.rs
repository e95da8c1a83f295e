//! `stampline server` and `stampline audit`.

use std::sync::Arc;

use serde_json::json;
use stampline_psd::Psd;
use stampline_server::config_file::ConfigFile;
use stampline_server::database::{Database, SQLITE_FILE, open_store};
use stampline_server::{GatewayConfig, GatewayServer, Server, ServerConfig};

use crate::args::{AuditArgs, ServerArgs};
use crate::output::{CliError, Out};

fn unsupported(flag: &str, why: &str) -> CliError {
    CliError::new("unsupported", format!("{flag}: {why}"))
}

pub fn config(a: &ServerArgs) -> Result<ServerConfig, CliError> {
    let database = Database::parse(a.database.as_deref())
        .map_err(|why| CliError::new("bad_flag", format!("--database: {why}")))?;
    let psd: stampline_psd::PsdSpec = a
        .psd
        .as_deref()
        .unwrap_or("software")
        .parse()
        .map_err(|e: stampline_psd::PsdError| CliError::new("bad_flag", e.to_string()))?;
    if a.beat_interval_ms == 0
        || a.beat_timeout_ms == 0
        || a.confirm_window_ms == 0
        || a.verify_signatures_every == 0
    {
        return Err(CliError::new(
            "bad_flag",
            "intervals, windows and --verify-signatures-every must be positive",
        ));
    }
    let mut cfg = ServerConfig::new(a.data_dir.clone());
    if let Some(path) = &a.config {
        let file = ConfigFile::load(path).map_err(|e| CliError::new("bad_config", e))?;
        cfg.firewall = file.firewall;
    }
    cfg.database = database;
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
    cfg.core.verify_every = a.verify_signatures_every;
    Ok(cfg)
}

/// A server on public keys (DEV MODE) or on stand-ins (SANDBOX MODE) listens on loopback only,
/// unless `--insecure-dev` says to listen anyway (with a warning).
fn check_listen(
    addr: std::net::SocketAddr,
    dev_mode: bool,
    sandbox: bool,
    insecure_dev: bool,
) -> Result<(), CliError> {
    if addr.ip().is_loopback() || !(dev_mode || sandbox) {
        return Ok(());
    }
    let why = match (dev_mode, sandbox) {
        (true, true) => {
            "DEV MODE (keys sealed under the public development passphrase) and SANDBOX MODE (built-in licensing system and bank)"
        }
        (true, false) => "DEV MODE (keys sealed under the public development passphrase)",
        _ => "SANDBOX MODE (built-in licensing system or bank)",
    };
    if insecure_dev {
        eprintln!("stampline: WARNING: listening on {addr} in {why} (--insecure-dev)");
        return Ok(());
    }
    Err(CliError::new(
        "insecure_listen",
        format!(
            "refusing to listen on {addr}, which is not loopback, in {why}; listen on 127.0.0.1 or ::1, \
             configure a passphrase (STAMPLINE_PSD_PASSPHRASE), --cmls and --bank, or pass --insecure-dev"
        ),
    ))
}

/// What `--role gateway` is told; the private tier's flags do not apply to it.
fn gateway_config(a: &ServerArgs) -> Result<GatewayConfig, CliError> {
    let (Some(core), Some(credentials)) = (&a.core, &a.credentials) else {
        return Err(CliError::new(
            "bad_flag",
            "--role gateway needs --core HOST:PORT and --credentials DIR",
        ));
    };
    let private_only = [
        ("--hostname", !a.hostname.is_empty()),
        ("--database", a.database.is_some()),
        ("--psd", a.psd.is_some()),
        ("--cmls", a.cmls.is_some()),
        ("--bank", a.bank.is_some()),
    ];
    if let Some((flag, _)) = private_only.iter().find(|(_, given)| *given) {
        return Err(unsupported(
            flag,
            "a gateway holds no ledger, device or outside links; give it to the core",
        ));
    }
    if a.beat_interval_ms == 0 || a.beat_timeout_ms == 0 {
        return Err(CliError::new("bad_flag", "intervals must be positive"));
    }
    let mut firewall = stampline_server::firewall::FirewallConfig::default();
    if let Some(path) = &a.config {
        firewall = ConfigFile::load(path)
            .map_err(|e| CliError::new("bad_config", e))?
            .firewall;
    }
    Ok(GatewayConfig {
        credentials: credentials.clone(),
        core_addr: core.clone(),
        beat_interval_ms: a.beat_interval_ms,
        beat_timeout_ms: a.beat_timeout_ms,
        firewall,
    })
}

/// The interrupt that stops a server, installed before it announces its address (so that an
/// interrupt sent as soon as "listening" appears shuts it down instead of killing it).
fn interrupt() -> Result<impl std::future::Future<Output = ()>, CliError> {
    #[cfg(unix)]
    let mut interrupt =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
            .map_err(|e| CliError::new("server_start", format!("signal handler: {e}")))?;
    Ok(async move {
        #[cfg(unix)]
        interrupt.recv().await;
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
    })
}

/// `stampline server --role gateway`.
async fn gateway(a: ServerArgs, out: Out) -> Result<(), CliError> {
    let cfg = gateway_config(&a)?;
    let gateway =
        GatewayServer::open(cfg).map_err(|e| CliError::new("server_start", format!("{e:#}")))?;
    let listener = gateway
        .listen(&a.listen)
        .await
        .map_err(|e| CliError::new("listen", format!("cannot listen on {}: {e}", a.listen)))?;
    let addr = listener
        .local_addr()
        .map_err(|e| CliError::new("listen", e.to_string()))?;
    let url = format!("https://{addr}");
    let trust = gateway.trust_path().display().to_string();
    let shutdown = interrupt()?;
    out.done(
        &json!({"event": "listening", "role": "gateway", "name": gateway.name(), "url": url,
            "trust": trust, "core": a.core}),
        &format!(
            "gateway {} listening on {url}\ntrust file: {trust}",
            gateway.name()
        ),
    );
    gateway
        .run(listener, shutdown)
        .await
        .map_err(|e| CliError::new("server", format!("{e:#}")))
}

pub async fn server(a: ServerArgs, out: Out) -> Result<(), CliError> {
    if a.role == "gateway" {
        return gateway(a, out).await;
    }
    if a.core.is_some() || a.credentials.is_some() {
        return Err(unsupported(
            "--core/--credentials",
            "only a gateway (--role gateway) is told where the core is",
        ));
    }
    if a.role == "core" && a.config.is_some() {
        return Err(unsupported(
            "--config",
            "the firewall runs on the gateways (--role gateway --config FILE); the core's port is for gateways only",
        ));
    }
    let cfg = config(&a)?;
    // Opening may connect to PostgreSQL with its blocking client, which must not run on the
    // async runtime's threads.
    let server = tokio::task::spawn_blocking(move || Server::open(cfg))
        .await
        .map_err(|e| CliError::new("internal", format!("server start: {e}")))?
        .map_err(|e| CliError::new("server_start", format!("{e:#}")))?;
    let listener = server
        .listen(&a.listen)
        .await
        .map_err(|e| CliError::new("listen", format!("cannot listen on {}: {e}", a.listen)))?;
    let addr = listener
        .local_addr()
        .map_err(|e| CliError::new("listen", e.to_string()))?;
    let (dev_mode, sandbox) = (server.psd_dev_mode(), server.is_sandbox());
    check_listen(addr, dev_mode, sandbox, a.insecure_dev)?;
    let url = format!("https://{addr}");
    let trust = server.trust_path().display().to_string();
    if server.is_sandbox() {
        eprintln!(
            "stampline: SANDBOX MODE — the licensing system and the bank are built-in stand-ins; no real postage or money moves."
        );
    }
    let shutdown = interrupt()?;
    if a.role == "core" {
        let internal = addr.to_string();
        out.done(
            &json!({"event": "listening", "role": "core", "internal": internal, "trust": trust,
                "dev_mode": dev_mode, "sandbox": sandbox}),
            &format!("core listening for gateways on {internal}\ntrust file: {trust}"),
        );
        return server
            .run_core(listener, shutdown)
            .await
            .map_err(|e| CliError::new("server", format!("{e:#}")));
    }
    out.done(
        &json!({"event": "listening", "role": "all", "url": url, "trust": trust,
            "dev_mode": dev_mode, "sandbox": sandbox}),
        &format!("listening on {url}\ntrust file: {trust}"),
    );
    server
        .run(listener, shutdown)
        .await
        .map_err(|e| CliError::new("server", format!("{e:#}")))
}

/// `stampline audit`, off the async runtime (the PostgreSQL client blocks).
pub async fn audit(a: AuditArgs, out: Out) -> Result<(), CliError> {
    tokio::task::spawn_blocking(move || audit_blocking(a, out))
        .await
        .map_err(|e| CliError::new("internal", format!("audit: {e}")))?
}

fn audit_blocking(a: AuditArgs, out: Out) -> Result<(), CliError> {
    let database = Database::parse(a.database.as_deref())
        .map_err(|why| CliError::new("bad_flag", format!("--database: {why}")))?;
    let data_dir = match (&a.data_dir, &database) {
        (Some(dir), _) => Some(dir.clone()),
        (None, Database::Sqlite) => Some(std::path::PathBuf::from("./stampline-data")),
        (None, Database::Postgres(_)) => None,
    };
    if database == Database::Sqlite {
        let path = data_dir
            .as_deref()
            .unwrap_or(std::path::Path::new("."))
            .join(SQLITE_FILE);
        if !path.exists() {
            return Err(CliError::new(
                "no_ledger",
                format!("no ledger at {}", path.display()),
            ));
        }
    }
    // The crypto device checks the register seals; it is only opened where it already exists,
    // never created (new keys would make every seal look broken). A device that cannot be opened
    // here (no passphrase, another device's keys) leaves the seals unchecked, and says so.
    let spec: stampline_psd::PsdSpec = a
        .psd
        .as_deref()
        .unwrap_or("software")
        .parse()
        .map_err(|e: stampline_psd::PsdError| CliError::new("bad_flag", e.to_string()))?;
    let psd: Option<Arc<dyn Psd>> = match &data_dir {
        Some(dir) if dir.join("psd").is_dir() => {
            let now_unix = stampline_server::clock::now_ms() / 1000;
            match stampline_psd::open_device(&spec, dir, now_unix) {
                Ok(device) => Some(device.psd),
                Err(e) => {
                    eprintln!("audit: register seals not checked: crypto device: {e}");
                    None
                }
            }
        }
        _ => None,
    };
    let seals_checked = psd.is_some();
    let store = open_store(
        &database,
        data_dir.as_deref().unwrap_or(std::path::Path::new(".")),
        psd,
    )
    .map_err(|e| CliError::new("audit", format!("{e:#}")))?;
    let report = store
        .audit()
        .map_err(|e| CliError::new("audit", e.to_string()))?;
    let clean = report.problems.is_empty();
    let value = json!({"clean": clean, "problems": report.problems, "accounts": report.accounts,
        "transfers": report.transfers, "items": report.items, "audit_entries": report.audit_entries,
        "seals_checked": seals_checked});
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
    let seals = if seals_checked {
        "register seals checked"
    } else {
        "register seals NOT checked (no crypto device: pass --data-dir)"
    };
    out.done(
        &value,
        &format!(
            "audit clean: {} accounts, {} transfers, {} items, {} audit entries; {seals}",
            report.accounts, report.transfers, report.items, report.audit_entries
        ),
    );
    Ok(())
}
