//! Flags, exactly as DESIGN.md §7 names them.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "stampline",
    version,
    about = "Secure on-line postage: server, client and verifier"
)]
pub struct Cli {
    /// Machine-readable JSON output (errors too: {"error","message"}).
    #[arg(long, global = true)]
    pub json: bool,
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

/// Where the server is and who we are.
#[derive(Debug, Args)]
pub struct Global {
    /// Server URL, e.g. https://127.0.0.1:8443.
    #[arg(long, global = true, env = "STAMPLINE_SERVER")]
    pub server: Option<String>,
    /// The server's trust.pem (pinned certificate and auth key).
    #[arg(long, global = true, env = "STAMPLINE_TRUST")]
    pub trust: Option<PathBuf>,
    /// User name.
    #[arg(long, global = true, env = "STAMPLINE_USER")]
    pub user: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server (both tiers in one process).
    Server(ServerArgs),
    /// The whole flow on embedded defaults in a temporary directory; writes a label.
    Demo(DemoArgs),
    /// Create an account (password from STAMPLINE_PASSWORD or a prompt).
    Register(RegisterArgs),
    /// Add funds by card or EFT.
    Fund(FundArgs),
    /// Show the balance and the meter's registers.
    Balance,
    /// List recent items.
    History(HistoryArgs),
    /// Buy postage and print it.
    Buy(BuyArgs),
    /// Verify a printed item (PNG, or the raw item bytes).
    Verify(VerifyArgs),
    /// Check the ledger, registers and audit log of a data dir.
    Audit(AuditArgs),
    /// Load generator: N live links issue and confirm M items against a running server.
    Bench(BenchArgs),
}

#[derive(Debug, Args)]
pub struct ServerArgs {
    #[arg(long, default_value = "./stampline-data")]
    pub data_dir: PathBuf,
    #[arg(long, default_value = "127.0.0.1:8443")]
    pub listen: String,
    /// sqlite (default, DIR/ledger.sqlite) or postgres://USER@HOST:PORT/DB (several servers may
    /// share one; each needs the same crypto device keys in its data dir).
    #[arg(long, env = "STAMPLINE_DATABASE")]
    pub database: Option<String>,
    /// Crypto device: "software" (default).
    #[arg(long)]
    pub psd: Option<String>,
    /// Licensing system URL (default: built-in sandbox).
    #[arg(long)]
    pub cmls: Option<String>,
    /// Financial system URL (default: built-in sandbox).
    #[arg(long)]
    pub bank: Option<String>,
    #[arg(long, default_value = "all")]
    pub role: String,
    #[arg(long, default_value_t = 5000)]
    pub beat_interval_ms: u64,
    #[arg(long, default_value_t = 5000)]
    pub beat_timeout_ms: u64,
    #[arg(long, default_value_t = 600_000)]
    pub confirm_window_ms: u64,
    /// Extra DNS names for the certificate (repeatable).
    #[arg(long)]
    pub hostname: Vec<String>,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Where to put the demo's data and labels (default: a new temporary directory).
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct RegisterArgs {
    #[arg(long)]
    pub name: String,
    #[arg(long)]
    pub address: String,
    #[arg(long)]
    pub city: String,
    #[arg(long)]
    pub state: String,
    #[arg(long)]
    pub zip: String,
}

#[derive(Debug, Args)]
pub struct FundArgs {
    /// Amount in dollars, e.g. 20 or 20.00.
    #[arg(long, allow_hyphen_values = true)]
    pub amount: String,
    #[arg(long, requires_all = ["exp", "cvc"], conflicts_with_all = ["eft_routing", "eft_account"])]
    pub card: Option<String>,
    #[arg(long)]
    pub exp: Option<String>,
    #[arg(long)]
    pub cvc: Option<String>,
    #[arg(long, requires = "eft_account")]
    pub eft_routing: Option<String>,
    #[arg(long, requires = "eft_routing")]
    pub eft_account: Option<String>,
}

#[derive(Debug, Args)]
pub struct HistoryArgs {
    #[arg(long, default_value_t = 20)]
    pub limit: u32,
}

#[derive(Debug, Args)]
pub struct BuyArgs {
    /// Postage in dollars, e.g. 0.78.
    #[arg(long, allow_hyphen_values = true)]
    pub postage: Option<String>,
    /// Mail class: first-class-letter, first-class-flat, priority-mail, ground-advantage.
    #[arg(long, default_value = "first-class-letter")]
    pub class: String,
    /// Weight in ounces (rated purchases come with the rate engine).
    #[arg(long)]
    pub weight_oz: Option<String>,
    #[arg(long)]
    pub from: String,
    #[arg(long)]
    pub to: String,
    /// Date of mailing, YYYY-MM-DD (default: today).
    #[arg(long)]
    pub date: Option<String>,
    /// Output formats (repeatable): png, pdf, raw (the item's bytes). Default: png and pdf.
    #[arg(long)]
    pub format: Vec<String>,
    /// Output path; the extension is set per format. Default: ./SERIAL.png / .pdf.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Printer URI (file:PATH for now).
    #[arg(long)]
    pub printer: Option<String>,
    /// Label resolution for PNG.
    #[arg(long, default_value_t = 300)]
    pub dpi: u32,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    pub file: PathBuf,
    /// Published keys as saved from GET /v1/keys, for offline verification.
    #[arg(long)]
    pub keys: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct AuditArgs {
    /// The server's data dir: its SQLite ledger (unless --database) and its crypto device, which
    /// checks the register seals (default ./stampline-data without --database).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// A postgres:// URL to audit instead of DIR/ledger.sqlite.
    #[arg(long)]
    pub database: Option<String>,
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Live links (each with a real login, heartbeats and sealing).
    #[arg(long, default_value_t = 16)]
    pub links: usize,
    /// Items to issue and confirm in total.
    #[arg(long, default_value_t = 10_000)]
    pub count: u64,
    /// Requests in flight per link.
    #[arg(long, default_value_t = 8)]
    pub depth: usize,
}
