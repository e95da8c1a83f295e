//! The Stampline server: the public tier (TLS 1.3, the WebSocket link, sessions, the firewall's
//! limits, HTTP routes) and the private tier ([`core::Core`]: ledger, crypto device, CMLS, bank).
//!
//! [`Server::open`] prepares a data dir (keys, certificate, `trust.pem`, database); [`Server::run`]
//! takes an already-bound listener and a shutdown future, so tests bind port 0 and drive the real
//! server. The public tier reaches the private tier only through `Core`'s methods.
//! This crate never holds card numbers beyond one request, and never logs secrets.

pub mod adapters;
pub mod anchor;
pub mod clock;
pub mod config_file;
pub mod core;
pub mod data_dir;
pub mod database;
pub mod error;
pub mod firewall;
pub mod gateway;
pub mod internal;
pub mod internal_ca;
pub mod link;
pub mod rating;
pub mod source;
pub mod state;
pub mod tier;
pub mod tls;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use stampline_psd::PsdSpec;
use stampline_sandbox::{Bank, Cmls, SandboxBank, SandboxCmls};
use tokio::net::TcpListener;

use crate::core::{Core, CoreConfig};
use crate::firewall::{Firewall, FirewallConfig};
use crate::gateway::{AppState, Peer};
use crate::link::{LinkConfig, Sessions};
use crate::tier::PrivateTier;

/// Everything `stampline server` can be told.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub data_dir: PathBuf,
    pub hostnames: Vec<String>,
    pub beat_interval_ms: u64,
    pub beat_timeout_ms: u64,
    pub core: CoreConfig,
    /// Where the ledger lives (default: SQLite in the data dir).
    pub database: database::Database,
    /// The crypto device (`--psd`); the software device by default.
    pub psd: PsdSpec,
    /// CMLS and bank services; `None` = the built-in in-process sandboxes.
    pub external: ExternalConfig,
    /// The public tier's limits and address lists.
    pub firewall: FirewallConfig,
}

/// Where the licensing system and the bank are, when they are network services.
#[derive(Clone, Debug)]
pub struct ExternalConfig {
    /// (URL, trust file with the service's pinned certificate).
    pub cmls: Option<(String, PathBuf)>,
    pub bank: Option<(String, PathBuf)>,
    /// One attempt's time limit.
    pub timeout: Duration,
    /// How often EFT debits are checked for returns.
    pub settlement_poll: Duration,
    /// How often the daily usage report goes to CMLS (zero: never on its own).
    pub usage_report: Duration,
}

impl Default for ExternalConfig {
    fn default() -> Self {
        ExternalConfig {
            cmls: None,
            bank: None,
            timeout: adapters::DEFAULT_TIMEOUT,
            settlement_poll: DEFAULT_SETTLEMENT_POLL,
            usage_report: Duration::from_secs(24 * 3600),
        }
    }
}

/// How often EFT debits are checked for returns by default.
pub const DEFAULT_SETTLEMENT_POLL: Duration = Duration::from_secs(15 * 60);

impl ServerConfig {
    pub fn new(data_dir: PathBuf) -> ServerConfig {
        ServerConfig {
            data_dir,
            hostnames: Vec::new(),
            beat_interval_ms: 5_000,
            beat_timeout_ms: 5_000,
            core: CoreConfig::default(),
            database: database::Database::Sqlite,
            psd: PsdSpec::Software,
            external: ExternalConfig::default(),
            firewall: FirewallConfig::default(),
        }
    }
}

/// A prepared server: both tiers (`--role all`), or the private tier alone (`--role core`).
#[derive(Debug)]
pub struct Server {
    state: AppState,
    core: Arc<Core>,
    /// Where the audit log's anchor is kept (the data dir).
    data_dir: PathBuf,
    tls: Arc<rustls::ServerConfig>,
    trust_path: PathBuf,
    psd_dev_mode: bool,
    settlement_poll: Duration,
    usage_report: Duration,
}

impl Server {
    /// Create or open the data dir: the crypto device (`cfg.psd`, self-tested; a failing device
    /// stops here), TLS identity and `trust.pem`, the ledger (SQLite in the data dir, or
    /// PostgreSQL, sealing its registers with the device), the CMLS and bank (built-in sandboxes or
    /// services); then register the signing keys with CMLS.
    /// With PostgreSQL it connects with a blocking client: call it off the async runtime's
    /// worker threads (`spawn_blocking`), as `stampline server` does.
    pub fn open(cfg: ServerConfig) -> anyhow::Result<Server> {
        cfg.firewall.check().map_err(anyhow::Error::msg)?;
        // The data dir is the server's alone: 0700, every file in it 0600 (`data_dir`).
        data_dir::prepare(&cfg.data_dir)?;
        let now_unix = cfg.core.clock.now_unix();
        // The device self-tests as it opens; a failing device refuses to serve.
        let device = stampline_psd::open_device(&cfg.psd, &cfg.data_dir, now_unix)
            .map_err(|e| anyhow::anyhow!("crypto device: {e}"))?;
        if device.dev_mode {
            tracing::warn!("{}", stampline_psd::DEV_PASSPHRASE_NOTICE);
        }
        let psd = device.psd;
        let identity =
            tls::TlsIdentity::load_or_create(&cfg.data_dir, &cfg.hostnames, psd.as_ref())?;
        let store = database::open_store(&cfg.database, &cfg.data_dir, Some(Arc::clone(&psd)))?;
        // An audit log edited while the server was down (an entry deleted or changed) stops it
        // here, as a failing crypto device does; a running server finds deleted newest entries
        // at its next append (`audit_log_broken`).
        let broken = store.check_audit_chains()?;
        if let Some(first) = broken.first() {
            anyhow::bail!(
                "the audit log was changed behind the server's back ({} problem{}; first: {first}); \
                 run `stampline audit` for the full report",
                broken.len(),
                if broken.len() == 1 { "" } else { "s" }
            );
        }
        // Entries deleted while the server was down leave whole chains: the anchor finds them.
        anchor::check(&cfg.data_dir, store.as_ref(), psd.as_ref())?;
        anchor::write(&cfg.data_dir, store.as_ref(), psd.as_ref())?;
        let (cmls, bank) = external_links(&cfg)?;
        let core = Core::new(store, psd, cmls, bank, cfg.core.clone())
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        core.register_keys_with_cmls();
        let core = Arc::new(core);
        let state = AppState {
            tier: PrivateTier::local(Arc::clone(&core)),
            sessions: Arc::new(Sessions::default()),
            link: LinkConfig {
                beat_interval_ms: cfg.beat_interval_ms,
                beat_timeout_ms: cfg.beat_timeout_ms,
            },
            firewall: Arc::new(Firewall::new(cfg.firewall.clone())),
        };
        Ok(Server {
            core,
            settlement_poll: cfg.external.settlement_poll,
            usage_report: cfg.external.usage_report,
            state,
            data_dir: cfg.data_dir.clone(),
            tls: identity.server_config()?,
            trust_path: identity.trust_path,
            psd_dev_mode: device.dev_mode,
        })
    }

    /// `DIR/trust.pem`: the certificate and the auth public key clients pin.
    pub fn trust_path(&self) -> &std::path::Path {
        &self.trust_path
    }

    /// Whether the software crypto device runs on the public development passphrase.
    pub fn psd_dev_mode(&self) -> bool {
        self.psd_dev_mode
    }

    /// Whether CMLS and the bank are the built-in stand-ins.
    pub fn is_sandbox(&self) -> bool {
        self.state.tier.sandbox()
    }

    /// The live links (what the admin console shows).
    pub fn sessions(&self) -> Arc<Sessions> {
        Arc::clone(&self.state.sessions)
    }

    /// The private tier, for in-process callers (tests, `demo`).
    pub fn core(&self) -> &Arc<Core> {
        &self.core
    }

    /// A listening socket on `addr` (HOST:PORT) with the firewall's `listen_backlog`: room in the
    /// kernel for connections arriving faster than they are accepted (a connection that finds the
    /// queue full waits a second for its SYN to be sent again).
    pub async fn listen(&self, addr: &str) -> std::io::Result<TcpListener> {
        listen(addr, self.state.firewall.config.listen_backlog).await
    }

    /// Serve both tiers on `listener` until `shutdown` completes.
    pub async fn run(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> anyhow::Result<()> {
        let background = self.start_background().await?;
        let served = serve_public(listener, self.tls, self.state, shutdown).await;
        background.stop().await;
        Ok(served?)
    }

    /// Serve the private tier alone (`--role core`): gateways connect to `listener` over mutual
    /// TLS under the internal CA (crate::internal_ca, created in the data dir on first use).
    pub async fn run_core(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> anyhow::Result<()> {
        let ca = internal_ca::InternalCa::load_or_create(&self.data_dir, self.core.psd().as_ref())?;
        let tls = ca.core_server_config()?;
        let background = self.start_background().await?;
        let served = internal::serve::serve(
            listener,
            Arc::clone(&self.core),
            self.data_dir.clone(),
            tls,
            shutdown,
        )
        .await;
        background.stop().await;
        Ok(served?)
    }

    /// The private tier's own loops: the sweep at start and then periodically, expiry of
    /// unfunded accounts, the audit anchor, settlements and usage reports.
    async fn start_background(&self) -> anyhow::Result<Background> {
        let core = &self.core;
        let voided = core.sweep(true).await.map_err(|e| anyhow::anyhow!("{e}"))?;
        if !voided.is_empty() {
            tracing::info!(
                count = voided.len(),
                "voided items whose confirmation window had passed"
            );
        }
        let mut tasks = vec![
            tokio::spawn(sweep_loop(Arc::clone(core))),
            tokio::spawn(expiry_loop(Arc::clone(core))),
            tokio::spawn(anchor_loop(Arc::clone(core), self.data_dir.clone())),
            tokio::spawn(settlement_loop(Arc::clone(core), self.settlement_poll)),
        ];
        if !self.usage_report.is_zero() {
            tasks.push(tokio::spawn(usage_report_loop(
                Arc::clone(core),
                self.usage_report,
            )));
        }
        Ok(Background {
            tasks,
            core: Arc::clone(core),
            data_dir: self.data_dir.clone(),
        })
    }
}

/// The private tier's loops, stopped (and the audit anchor written) when serving ends.
struct Background {
    tasks: Vec<tokio::task::JoinHandle<()>>,
    core: Arc<Core>,
    data_dir: PathBuf,
}

impl Background {
    async fn stop(self) {
        for t in &self.tasks {
            t.abort();
        }
        write_anchor(self.core, self.data_dir).await;
    }
}

/// A listening socket on `addr` (HOST:PORT) with `backlog` places in the kernel's queue.
pub async fn listen(addr: &str, backlog: u32) -> std::io::Result<TcpListener> {
    let addr = tokio::net::lookup_host(addr)
        .await?
        .next()
        .ok_or_else(|| std::io::Error::other("the address resolves to nothing"))?;
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(backlog)
}

/// The public tier on `listener`: TLS for clients, the firewall, the router and the links.
async fn serve_public(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    state: AppState,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let firewall = Arc::clone(&state.firewall);
    let limits = stampline_https::serve::Limits {
        max_connections: firewall.config.max_connections,
        handshake_timeout: firewall.config.handshake_timeout(),
    };
    let reporter = tokio::spawn(link::report_loop(state.clone()));
    let router = gateway::router(state);
    // A connection the firewall does not admit is closed before its TLS handshake.
    let served = stampline_https::serve::serve_with(
        listener,
        tls,
        limits,
        |peer| {
            let ticket = Arc::new(firewall.admit(peer.ip())?);
            Some(
                router
                    .clone()
                    .layer(axum::Extension(ticket))
                    .layer(axum::Extension(Peer(peer))),
            )
        },
        shutdown,
    )
    .await;
    reporter.abort();
    served
}

/// What `stampline server --role gateway` is told.
#[derive(Clone, Debug)]
pub struct GatewayConfig {
    /// The credentials directory `stampline admin gateway-credentials` wrote.
    pub credentials: PathBuf,
    /// The core's internal address (HOST:PORT).
    pub core_addr: String,
    pub beat_interval_ms: u64,
    pub beat_timeout_ms: u64,
    pub firewall: FirewallConfig,
}

/// The public tier alone (`--role gateway`): it holds no ledger, no signing keys, no password
/// hashes and no card data; it reaches the core over the internal channel (crate::internal).
#[derive(Debug)]
pub struct GatewayServer {
    state: AppState,
    client: Arc<internal::client::CoreClient>,
    tls: Arc<rustls::ServerConfig>,
    trust_path: PathBuf,
    name: String,
}

impl GatewayServer {
    pub fn open(cfg: GatewayConfig) -> anyhow::Result<GatewayServer> {
        cfg.firewall.check().map_err(anyhow::Error::msg)?;
        let creds = internal_ca::GatewayCredentials::load(&cfg.credentials)?;
        let client =
            internal::client::CoreClient::new(cfg.core_addr.clone(), creds.core_client_config()?);
        let state = AppState {
            tier: PrivateTier::remote(Arc::clone(&client)),
            sessions: Arc::new(Sessions::default()),
            link: LinkConfig {
                beat_interval_ms: cfg.beat_interval_ms,
                beat_timeout_ms: cfg.beat_timeout_ms,
            },
            firewall: Arc::new(Firewall::new(cfg.firewall)),
        };
        Ok(GatewayServer {
            state,
            client,
            tls: creds.public_server_config()?,
            trust_path: creds.trust_path(),
            name: creds.name.clone(),
        })
    }

    /// The gateway's name, as its certificate gives it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The trust file clients pin (the same for every gateway of one core).
    pub fn trust_path(&self) -> &std::path::Path {
        &self.trust_path
    }

    /// The live links of this gateway.
    pub fn sessions(&self) -> Arc<Sessions> {
        Arc::clone(&self.state.sessions)
    }

    /// Which connection to the core is up (`None`: none).
    pub fn core_watch(&self) -> tokio::sync::watch::Receiver<Option<u64>> {
        self.client.watch()
    }

    /// A listening socket with the firewall's backlog (as [`Server::listen`]).
    pub async fn listen(&self, addr: &str) -> std::io::Result<TcpListener> {
        listen(addr, self.state.firewall.config.listen_backlog).await
    }

    /// Serve clients on `listener` until `shutdown` completes, keeping a connection to the core.
    pub async fn run(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> anyhow::Result<()> {
        let keeper = tokio::spawn(Arc::clone(&self.client).run());
        let served = serve_public(listener, self.tls, self.state, shutdown).await;
        keeper.abort();
        Ok(served?)
    }
}

/// Writes the audit log's anchor (off the async threads: the store may block).
async fn write_anchor(core: Arc<Core>, data_dir: PathBuf) {
    let written = tokio::task::spawn_blocking(move || {
        anchor::write(&data_dir, core.store().as_ref(), core.psd().as_ref())
    })
    .await;
    if let Ok(Err(e)) | Err(e) = written.map_err(anyhow::Error::from) {
        tracing::error!(error = %e, "could not write the audit log's anchor");
    }
}

/// Write the audit log's anchor every [`anchor::ANCHOR_EVERY`].
async fn anchor_loop(core: Arc<Core>, data_dir: PathBuf) {
    loop {
        tokio::time::sleep(anchor::ANCHOR_EVERY).await;
        write_anchor(Arc::clone(&core), data_dir.clone()).await;
    }
}

/// The CMLS and bank links: network adapters where configured, else the built-in sandboxes.
fn external_links(cfg: &ServerConfig) -> anyhow::Result<(Arc<dyn Cmls>, Arc<dyn Bank>)> {
    let ext = &cfg.external;
    let cmls: Arc<dyn Cmls> = match &ext.cmls {
        Some((url, trust)) => Arc::new(adapters::HttpCmls::open(url, trust, ext.timeout)?),
        None => Arc::new(SandboxCmls::open(Some(
            &cfg.data_dir.join("sandbox-cmls.json"),
        ))?),
    };
    let bank: Arc<dyn Bank> = match &ext.bank {
        Some((url, trust)) => Arc::new(adapters::HttpBank::open(url, trust, ext.timeout)?),
        None => Arc::new(SandboxBank::open(Some(
            &cfg.data_dir.join("sandbox-bank.json"),
        ))?),
    };
    Ok((cmls, bank))
}

/// Check EFT debits for returns every `every`.
async fn settlement_loop(core: Arc<Core>, every: Duration) {
    let every = every.max(Duration::from_millis(100));
    loop {
        tokio::time::sleep(every).await;
        match core.check_settlements().await {
            Ok(r) if !r.returned.is_empty() => {
                tracing::warn!(returned = ?r.returned, "EFT debits returned; accounts locked")
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "settlement check failed"),
        }
    }
}

/// Send CMLS the usage report of every device every `every` (daily by default).
async fn usage_report_loop(core: Arc<Core>, every: Duration) {
    let every = every.max(Duration::from_secs(1));
    loop {
        tokio::time::sleep(every).await;
        let date = core.clock().today_utc().to_string();
        match core.send_usage_reports(date).await {
            Ok(sent) => {
                for (device, flags) in sent.iter().filter(|(_, f)| !f.is_empty()) {
                    tracing::warn!(%device, ?flags, "CMLS flagged a usage report");
                }
            }
            Err(e) => tracing::warn!(error = %e, "usage report failed"),
        }
    }
}

/// How often accounts never funded are looked for (they expire after
/// `CoreConfig::unfunded_expiry_ms`, 7 days by default).
pub const EXPIRY_SWEEP_EVERY: Duration = Duration::from_secs(10 * 60);

/// Delete accounts never funded once they are older than the expiry, at start and every
/// [`EXPIRY_SWEEP_EVERY`].
async fn expiry_loop(core: Arc<Core>) {
    loop {
        if let Err(e) = core.expire_unfunded().await {
            tracing::warn!(error = %e, "expiring unfunded accounts failed");
        }
        tokio::time::sleep(EXPIRY_SWEEP_EVERY).await;
    }
}

/// Void items whose confirmation window has passed, a few times per window.
async fn sweep_loop(core: Arc<Core>) {
    let every_ms = (core.config().confirm_window_ms / 4).clamp(50, 5_000);
    let every = Duration::from_millis(u64::try_from(every_ms).unwrap_or(5_000));
    loop {
        tokio::time::sleep(every).await;
        match core.sweep(false).await {
            Ok(v) if !v.is_empty() => tracing::info!(count = v.len(), "voided unconfirmed items"),
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, "sweep failed"),
        }
    }
}
