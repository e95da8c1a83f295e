//! Flags, exactly as docs/DESIGN.md §7 names them.

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
    /// Price a piece (no login needed).
    Quote(QuoteArgs),
    /// List recent items.
    History(HistoryArgs),
    /// Buy postage and print it.
    Buy(BuyArgs),
    /// Issue a ticket, check, coupon or gift certificate and print it.
    #[command(subcommand)]
    Issue(IssueCommand),
    /// Redeem a value item (FILE: its PNG, PDF or raw bytes; or its SERIAL), once.
    Redeem(RedeemArgs),
    /// The users allowed to redeem your value items.
    Redeemers(RedeemersArgs),
    /// Your checks: `checks positive-pay --from DATE --to DATE` for your bank.
    #[command(subcommand)]
    Checks(ChecksCommand),
    /// Refund a printed item that was not used (postage, or an unredeemed value item).
    Refund(SerialArgs),
    /// Void an item: an issued one not yet confirmed, or a printed check not yet presented
    /// (its amount comes back).
    Void(SerialArgs),
    /// Print an issued item again (limited and logged by the server), or for the first time.
    Print(PrintArgs),
    /// Show printers' state; with --calibrate, print a calibration label (not postage).
    Printers(PrintersArgs),
    /// Verify a printed item (PNG, PDF, or the raw item bytes).
    Verify(VerifyArgs),
    /// Check the ledger, registers and audit log of a data dir.
    Audit(AuditArgs),
    /// Load generator: N live links issue and confirm M items against a running server.
    Bench(BenchArgs),
    /// Administration: admin accounts, signing keys and gateway credentials.
    Admin(AdminArgs),
    /// Show the payment methods offered, the standing authorisation and any lock.
    PaymentOptions,
    /// Authorise automatic refills from a card below a threshold, up to a cap (or --off).
    AutoRefill(AutoRefillArgs),
    /// Close the account: the balance is refunded to the card or bank account it came from.
    CloseAccount(CloseAccountArgs),
    /// Run a stand-in for the licensing system or the bank as an HTTPS service.
    Sandbox(SandboxArgs),
}

#[derive(Debug, Args)]
pub struct AutoRefillArgs {
    /// Refill when the balance falls below this many dollars.
    #[arg(long, required_unless_present = "off")]
    pub threshold: Option<String>,
    /// Dollars per refill.
    #[arg(long, required_unless_present = "off")]
    pub amount: Option<String>,
    /// Most dollars all refills under this authorisation may charge.
    #[arg(long, required_unless_present = "off")]
    pub cap: Option<String>,
    #[arg(long, required_unless_present = "off", requires_all = ["exp", "cvc"])]
    pub card: Option<String>,
    #[arg(long)]
    pub exp: Option<String>,
    #[arg(long)]
    pub cvc: Option<String>,
    /// Remove the standing authorisation.
    #[arg(long, conflicts_with_all = ["threshold", "amount", "cap", "card"])]
    pub off: bool,
}

#[derive(Debug, Args)]
pub struct CloseAccountArgs {
    /// Confirm: closing cannot be undone.
    #[arg(long)]
    pub yes: bool,
}

#[derive(Debug, Args)]
pub struct SandboxArgs {
    #[command(subcommand)]
    pub service: SandboxService,
}

#[derive(Debug, Subcommand)]
pub enum SandboxService {
    /// The postal licensing system (CMLS) stand-in.
    Cmls(SandboxServiceArgs),
    /// The financial system (card processor and ACH) stand-in.
    Bank(SandboxServiceArgs),
}

#[derive(Debug, Args)]
pub struct SandboxServiceArgs {
    /// Address to listen on (default: a free port on 127.0.0.1; the listening line names it).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: String,
    /// State, TLS identity and trust.pem (default ./stampline-cmls or ./stampline-bank).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Bank: how long an ACH debit stays pending before it settles.
    #[arg(long)]
    pub settle_after_ms: Option<u64>,
    /// Queue a fault for tests (repeatable): KIND[:COUNT[:MS[:PATH]]], KIND one of latency,
    /// error_5xx, timeout, drop_after_commit (docs/SANDBOXES.md).
    #[arg(long)]
    pub fault: Vec<String>,
}

/// The server's data dir and where its CMLS and bank are (as given to `stampline server`).
#[derive(Debug, Args)]
pub struct ExternalArgs {
    #[arg(long, default_value = "./stampline-data")]
    pub data_dir: PathBuf,
    /// sqlite (default, DIR/ledger.sqlite) or postgres://USER@HOST:PORT/DB (as the server's).
    #[arg(long, env = "STAMPLINE_DATABASE")]
    pub database: Option<String>,
    #[arg(long, requires = "cmls_trust")]
    pub cmls: Option<String>,
    #[arg(long)]
    pub cmls_trust: Option<PathBuf>,
    #[arg(long, requires = "bank_trust")]
    pub bank: Option<String>,
    #[arg(long)]
    pub bank_trust: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ReportUsageArgs {
    #[command(flatten)]
    pub external: ExternalArgs,
    /// The day reported, YYYY-MM-DD (default: today, UTC).
    #[arg(long)]
    pub date: Option<String>,
}

#[derive(Debug, Args)]
pub struct ServerArgs {
    #[arg(long, default_value = "./stampline-data")]
    pub data_dir: PathBuf,
    /// Address to listen on. In DEV MODE (the public development passphrase) or SANDBOX MODE
    /// (built-in CMLS or bank) only a loopback address is accepted without --insecure-dev.
    #[arg(long, default_value = "127.0.0.1:8443")]
    pub listen: String,
    /// Listen on a non-loopback address although the keys are sealed under the public
    /// development passphrase or the licensing system / bank are the built-in stand-ins.
    #[arg(long)]
    pub insecure_dev: bool,
    /// sqlite (default, DIR/ledger.sqlite) or postgres://USER@HOST:PORT/DB (several servers may
    /// share one; each needs the same crypto device keys in its data dir).
    #[arg(long, env = "STAMPLINE_DATABASE")]
    pub database: Option<String>,
    /// Crypto device: "software" (default; passphrase from STAMPLINE_PSD_PASSPHRASE or
    /// STAMPLINE_PSD_PASSPHRASE_FILE) or "pkcs11:module=PATH;token=LABEL;pin-env=VAR".
    #[arg(long)]
    pub psd: Option<String>,
    /// Licensing system URL (default: built-in sandbox).
    #[arg(long, requires = "cmls_trust")]
    pub cmls: Option<String>,
    /// Financial system URL (default: built-in sandbox).
    #[arg(long, requires = "bank_trust")]
    pub bank: Option<String>,
    /// The licensing system's trust.pem (its pinned certificate).
    #[arg(long)]
    pub cmls_trust: Option<PathBuf>,
    /// The financial system's trust.pem (its pinned certificate).
    #[arg(long)]
    pub bank_trust: Option<PathBuf>,
    /// Time limit of one call to CMLS or the bank (retried up to 3 times).
    #[arg(long, default_value_t = 10_000)]
    pub external_timeout_ms: u64,
    /// How often EFT debits are checked for returns.
    #[arg(long, default_value_t = 900_000)]
    pub settlement_poll_ms: u64,
    /// How often the daily usage report is sent to CMLS (0 = only by `stampline admin report-usage`).
    #[arg(long, default_value_t = 86_400_000)]
    pub usage_report_ms: u64,
    /// all (both tiers in one process, the default), core (the private tier: --listen is its
    /// internal address, for gateways only) or gateway (the public tier: --core and
    /// --credentials; docs/DEPLOY.md).
    #[arg(long, default_value = "all", value_parser = ["all", "core", "gateway"])]
    pub role: String,
    /// For --role gateway: the core's internal address, HOST:PORT.
    #[arg(long)]
    pub core: Option<String>,
    /// For --role gateway: the directory `stampline admin gateway-credentials` wrote.
    #[arg(long)]
    pub credentials: Option<PathBuf>,
    #[arg(long, default_value_t = 5000)]
    pub beat_interval_ms: u64,
    #[arg(long, default_value_t = 5000)]
    pub beat_timeout_ms: u64,
    #[arg(long, default_value_t = 600_000)]
    pub confirm_window_ms: u64,
    /// Verify one fresh item signature in N with the published key before returning it (1 = every
    /// one; clients verify every item before printing; docs/DECISIONS.md).
    #[arg(long, default_value_t = stampline_server::core::DEFAULT_VERIFY_EVERY)]
    pub verify_signatures_every: u64,
    /// Extra DNS names for the certificate (repeatable).
    #[arg(long)]
    pub hostname: Vec<String>,
    /// A TOML config file; its `[firewall]` section sets the public tier's limits and address
    /// lists (docs/FIREWALL.md; every key optional, unknown keys refused).
    #[arg(long)]
    pub config: Option<PathBuf>,
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
pub struct QuoteArgs {
    /// first-class-letter, first-class-flat, priority-mail or ground-advantage.
    #[arg(long)]
    pub class: String,
    /// Weight in ounces, e.g. 3.5.
    #[arg(long)]
    pub weight_oz: String,
    #[arg(long)]
    pub from: Option<String>,
    #[arg(long)]
    pub to: Option<String>,
}

#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// How many items (newest first; pages are walked as needed).
    #[arg(long, default_value_t = 20)]
    pub limit: u32,
    /// Start after this item (the last serial of the page before): the next page.
    #[arg(long)]
    pub before: Option<String>,
    /// Only items of this kind: postage, ticket, check, coupon or certificate.
    #[arg(long)]
    pub kind: Option<String>,
    /// Every item issued from this day (YYYY-MM-DD, UTC) …
    #[arg(long)]
    pub from: Option<String>,
    /// … through this day, included (with --from: the whole period, --limit ignored).
    #[arg(long)]
    pub to: Option<String>,
    /// table (the default) or csv.
    #[arg(long, default_value = "table")]
    pub format: String,
    /// With --format csv: write the file here instead of stdout.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// `issue KIND`: one value item.
#[derive(Debug, Subcommand)]
pub enum IssueCommand {
    /// A ticket to an event: `--event E --venue V --seat S --price DOLLARS`.
    Ticket {
        #[arg(long)]
        event: String,
        #[arg(long)]
        venue: String,
        #[arg(long)]
        seat: String,
        /// The price in dollars (taken from your balance).
        #[arg(long, allow_hyphen_values = true)]
        price: String,
        #[command(flatten)]
        common: IssueCommon,
    },
    /// A check drawn on your balance: `--payee P --amount DOLLARS [--memo M]`; the server numbers
    /// it from your own check sequence.
    Check {
        #[arg(long)]
        payee: String,
        #[arg(long, allow_hyphen_values = true)]
        amount: String,
        #[arg(long)]
        memo: Option<String>,
        #[command(flatten)]
        common: IssueCommon,
    },
    /// A coupon: `--issuer I --amount DOLLARS --terms T` (a promise of a discount; nothing is
    /// taken from your balance).
    Coupon {
        #[arg(long)]
        issuer: String,
        #[arg(long, allow_hyphen_values = true)]
        amount: String,
        #[arg(long)]
        terms: String,
        #[command(flatten)]
        common: IssueCommon,
    },
    /// A gift certificate: `--recipient R --amount DOLLARS` (redeems in parts).
    Certificate {
        #[arg(long)]
        recipient: String,
        #[arg(long, allow_hyphen_values = true)]
        amount: String,
        #[command(flatten)]
        common: IssueCommon,
    },
}

/// What every `issue KIND` takes.
#[derive(Debug, Args)]
pub struct IssueCommon {
    /// Redeemable through this day (UTC), YYYY-MM-DD.
    #[arg(long)]
    pub valid_until: Option<String>,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Debug, Args)]
pub struct RedeemArgs {
    /// The item: a PNG, PDF or raw-bytes file of it, or its serial.
    pub item: String,
    /// Part of a gift certificate, in dollars (default: all that is left).
    #[arg(long, allow_hyphen_values = true)]
    pub amount: Option<String>,
}

#[derive(Debug, Args)]
pub struct RedeemersArgs {
    #[command(subcommand)]
    pub action: Option<RedeemersAction>,
}

#[derive(Debug, Subcommand)]
pub enum RedeemersAction {
    /// Allow USER to redeem your items.
    Add {
        #[arg(value_name = "USER")]
        redeemer: String,
    },
    /// Withdraw USER's permission.
    Remove {
        #[arg(value_name = "USER")]
        redeemer: String,
    },
    /// List who may redeem your items (the default).
    List,
}

#[derive(Debug, Subcommand)]
pub enum ChecksCommand {
    /// The checks issued in a period as a bank's positive-pay file (CSV: account, check number,
    /// issue date, amount, payee, void indicator) on stdout or into --out.
    PositivePay {
        /// First day, YYYY-MM-DD (UTC).
        #[arg(long)]
        from: String,
        /// Last day, YYYY-MM-DD (UTC), included.
        #[arg(long)]
        to: String,
        /// csv (the default) or json.
        #[arg(long, default_value = "csv")]
        format: String,
        /// Write the file here instead of stdout.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

#[derive(Debug, Args)]
pub struct SerialArgs {
    /// The item's serial, e.g. SL0100000001-30000000001.
    pub serial: String,
}

#[derive(Debug, Args)]
pub struct BuyArgs {
    /// Postage in dollars, e.g. 0.78.
    #[arg(long, allow_hyphen_values = true)]
    pub postage: Option<String>,
    /// Mail class: first-class-letter, first-class-flat, priority-mail, ground-advantage.
    #[arg(long, default_value = "first-class-letter")]
    pub class: String,
    /// Weight in ounces: the postage is the rate for it (or --postage, if not lower).
    #[arg(long)]
    pub weight_oz: Option<String>,
    /// Origin ZIP (required except with --batch).
    #[arg(long, default_value = "", hide_default_value = true)]
    pub from: String,
    /// Destination ZIP or ZIP+4 (required except with --batch).
    #[arg(long, default_value = "", hide_default_value = true)]
    pub to: String,
    /// Date of mailing, YYYY-MM-DD (default: today).
    #[arg(long)]
    pub date: Option<String>,
    /// Page layout: envelope10 (#10 envelope), label4x6 (shipping label with IMpb), sheet
    /// (indicia on US Letter). Default: the bare indicium (png, pdf); label4x6 for zpl.
    #[arg(long)]
    pub layout: Option<String>,
    /// Delivery address printed on the layout, lines separated by '|'; a ZIP+4 at its end goes
    /// into the indicium.
    #[arg(long)]
    pub to_address: Option<String>,
    /// Return address printed on the layout, lines separated by '|'.
    #[arg(long)]
    pub from_address: Option<String>,
    /// Buy one piece per row of a CSV file (to_address, from_address, class, weight_oz,
    /// postage) and print them all into one PDF (default) or ZPL file.
    #[arg(long)]
    pub batch: Option<PathBuf>,
    #[command(flatten)]
    pub output: OutputArgs,
}

/// Where an issued item goes, and as what: what `buy` and `issue KIND` share.
#[derive(Debug, Args)]
pub struct OutputArgs {
    /// Output formats (repeatable): png, pdf, svg, zpl (not for checks), raw (the item's bytes).
    /// Default: png and pdf for files, pdf for IPP, zpl for socket://.
    #[arg(long)]
    pub format: Vec<String>,
    /// Output path; the extension is set per format. Default: ./SERIAL.png / .pdf.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Printer URI: ipp://HOST:PORT/PATH, ipps://…, socket://HOST:9100 or file:PATH.
    #[arg(long)]
    pub printer: Option<String>,
    /// The ipps printer's certificate (PEM), pinned.
    #[arg(long, env = "STAMPLINE_PRINTER_CERT")]
    pub printer_cert: Option<PathBuf>,
    /// Resolution for PNG and ZPL.
    #[arg(long, default_value_t = 300)]
    pub dpi: u32,
}

#[derive(Debug, Args)]
pub struct PrintArgs {
    /// The item's serial, e.g. SL0100000001-1.
    pub serial: String,
    /// Printer URI: ipp://…, ipps://…, socket://HOST:9100 or file:PATH.
    #[arg(long)]
    pub printer: String,
    /// png, pdf, raw or zpl (default: pdf for IPP, zpl for socket, png and pdf for files).
    #[arg(long)]
    pub format: Option<String>,
    /// The ipps printer's certificate (PEM), pinned.
    #[arg(long, env = "STAMPLINE_PRINTER_CERT")]
    pub printer_cert: Option<PathBuf>,
    /// Label resolution for PNG.
    #[arg(long, default_value_t = 300)]
    pub dpi: u32,
}

#[derive(Debug, Args)]
pub struct PrintersArgs {
    /// Printer URIs to check.
    #[arg(required = true)]
    pub uris: Vec<String>,
    /// Print a calibration label (a DataMatrix that is not postage) on each.
    #[arg(long)]
    pub calibrate: bool,
    /// For one ipps:// printer: fetch the certificate it presents, write it here (PEM) and show its
    /// SHA-256 fingerprint to compare with the printer's own; then pin it with --printer-cert.
    #[arg(long)]
    pub save_cert: Option<PathBuf>,
    /// Calibration format: png, pdf, raw or zpl (default: pdf for IPP, zpl for socket, png and pdf for files).
    #[arg(long)]
    pub format: Option<String>,
    /// The ipps printer's certificate (PEM), pinned.
    #[arg(long, env = "STAMPLINE_PRINTER_CERT")]
    pub printer_cert: Option<PathBuf>,
    /// Label resolution for PNG and ZPL (203 and 300 for thermal printers, 600).
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
    /// The server's crypto device (as `stampline server --psd`), to check the register seals.
    #[arg(long)]
    pub psd: Option<String>,
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct BenchArgs {
    /// Other benchmarks (without one: the issue → confirm throughput run).
    #[command(subcommand)]
    pub other: Option<BenchCommand>,
    /// Live links (each with a real login, heartbeats and sealing).
    #[arg(long, default_value_t = 16)]
    pub links: usize,
    /// Items to issue and confirm in total.
    #[arg(long, default_value_t = 10_000)]
    pub count: u64,
    /// Requests in flight per link.
    #[arg(long, default_value_t = 8)]
    pub depth: usize,
    /// Issue at this many indicia per second in total, on a fixed schedule (0: as fast as the
    /// server answers). Latency is then counted from each request's scheduled time, so that a
    /// server falling behind shows in the percentiles.
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// More servers of the same system (gateways of one core, pinned by the same trust file):
    /// the links are spread over the server and these in turn.
    #[arg(long)]
    pub also: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// One pre-login attack from several loopback sources while a legitimate user logs in and
    /// buys; reports the user's latencies (scripts/bench-flood.sh runs them all).
    Flood(FloodArgs),
    /// Many idle links held with beats (scripts/bench-links.sh measures the server meanwhile).
    Links(LinksArgs),
}

#[derive(Debug, Args)]
pub struct LinksArgs {
    /// Links to hold.
    #[arg(long, default_value_t = 1_000)]
    pub count: usize,
    /// Links per user (each user registered once; the server allows 16).
    #[arg(long, default_value_t = 16)]
    pub per_user: usize,
    /// Seconds to hold them once all are up.
    #[arg(long, default_value_t = 60)]
    pub hold: u64,
    /// More gateways of the same core: the links are spread over them in turn.
    #[arg(long)]
    pub also: Vec<String>,
}

#[derive(Debug, Args)]
pub struct FloodArgs {
    /// slow-body, big-body, connections, hello, lockout, signup or status.
    #[arg(long)]
    pub attack: String,
    /// How long the attack lasts.
    #[arg(long, default_value_t = 20)]
    pub seconds: u64,
    /// Attacking source addresses (127.0.1.10 on; Linux routes all of 127/8 to loopback).
    #[arg(long, default_value_t = 8)]
    pub sources: u32,
    /// Attacking tasks (each one connection or request at a time).
    #[arg(long, default_value_t = 200)]
    pub tasks: u64,
}

#[derive(Debug, Args)]
pub struct AdminArgs {
    #[command(subcommand)]
    pub command: AdminCommand,
}

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Make an admin account in a data dir, on the server's machine (user from --user, password
    /// from STAMPLINE_PASSWORD or a prompt).
    Create {
        #[arg(long, default_value = "./stampline-data")]
        data_dir: PathBuf,
        /// The server's crypto device (as `stampline server --psd`).
        #[arg(long)]
        psd: Option<String>,
    },
    /// List the signing keys with their status.
    Keys,
    /// On the server's machine: compare our ledger with the bank's and CMLS's records; exit 1 on
    /// any difference.
    Reconcile(ExternalArgs),
    /// On the server's machine: send CMLS the daily usage report of every device.
    ReportUsage(ReportUsageArgs),
    /// Make a new signing key; new items use it, the old key's items stay valid for a while.
    RotateKey,
    /// Revoke a retired signing key: items it signed fail `verify` from now on.
    RevokeKey {
        key_id: String,
        #[arg(long, default_value = "revoked by an administrator")]
        reason: String,
    },
    /// List the login back-offs: failed logins per user name and source, and until when.
    Throttles,
    /// On the core's machine: issue a gateway its credentials for the internal channel (a
    /// certificate of the internal CA, its key, the public certificate and key it serves,
    /// trust.pem) into a new directory, to copy to the gateway's machine.
    GatewayCredentials {
        #[arg(long, default_value = "./stampline-data")]
        data_dir: PathBuf,
        /// The core's crypto device (as `stampline server --psd`).
        #[arg(long)]
        psd: Option<String>,
        /// The gateway's name: 1 to 64 characters of a-z, 0-9 and '-'.
        #[arg(long)]
        name: String,
        /// Where to write the credentials: a new (or empty) directory, made 0700.
        #[arg(long)]
        out: PathBuf,
        /// Extra DNS names for the public certificate, used only when the data dir has none yet
        /// (as `stampline server --hostname`).
        #[arg(long)]
        hostname: Vec<String>,
    },
    /// On the core's machine: revoke every certificate of a gateway; the core refuses it at its
    /// next connection.
    GatewayRevoke {
        /// The gateway's name.
        name: String,
        #[arg(long, default_value = "./stampline-data")]
        data_dir: PathBuf,
    },
    /// On the core's machine: list every gateway certificate issued, revoked ones too.
    Gateways {
        #[arg(long, default_value = "./stampline-data")]
        data_dir: PathBuf,
    },
    /// Clear every login back-off of a user name, from every source, and lift an `admin lock`.
    Unlock {
        /// The user name.
        name: String,
    },
    /// Every live link on the server: user, client and platform, address, since, last beat,
    /// round trip, items issued.
    Links,
    /// End a link (its session id) or every link of a user, within a beat interval.
    Kick {
        /// A session id (from `admin links`) or a user name.
        target: String,
    },
    /// Refuse a user's logins until `admin unlock`, and end its links.
    Lock {
        /// The user name.
        name: String,
    },
}
