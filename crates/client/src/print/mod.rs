//! Printing an item straight to a printer, under the server's print policy (`spool: false,
//! copies: 1`) and tied to the link: a print only while the link is up (docs/DESIGN.md §2.5,
//! docs/DECISIONS.md).
//!
//! Three printers, one shape: [`Printer::start_job`] opens a job that holds no document yet (IPP:
//! Get-Printer-Attributes then Create-Job; raw 9100: a TCP connection; file: a checked path), so a
//! printer that is off or refuses is found *before* money is reserved. [`Job::finish`] is called
//! only once the issue response is complete: it sends the document and follows the job to its
//! end, cancelling it if the link is lost first; [`Job::cancel`] ends a job whose item never came.
//! The [`JobReport`] says how the job ended on the printer — the caller confirms `printed` only
//! for [`JobEnd::Completed`] on a live link.
//!
//! Policy: the document lives in memory only (zeroed when the job ends), is pushed to the printer
//! (never Print-URI, so no copy waits for the printer to fetch it), with `copies = 1` and, where
//! the printer lists them, `job-retain-until = none` and `job-hold-until = indefinite` (released
//! after the document arrived on a live link). No temporary or spool file is written; the file
//! printer writes only the file it was asked for, and removes it when the link was lost.

mod file;
mod ipp_printer;
mod socket;
mod tls;

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use tokio::sync::watch;
use zeroize::Zeroizing;

pub use ipp_printer::IppPolicy;

/// How often a job's state is asked for while it runs.
pub const JOB_POLL_INTERVAL: Duration = Duration::from_millis(250);
/// How long a job may take, from its document to a final state, before it is cancelled.
pub const JOB_TIMEOUT: Duration = Duration::from_secs(600);
/// How long a cancelled job is followed to its final state (a printer may finish the sheet first).
pub const CANCEL_TIMEOUT: Duration = Duration::from_secs(300);
/// How long a busy printer (`server-error-busy`: one job at a time) is retried before giving up.
pub const BUSY_RETRY_FOR: Duration = Duration::from_secs(120);
/// Pause between retries of a busy printer.
pub const BUSY_RETRY_PAUSE: Duration = Duration::from_millis(500);
/// Connect + request + response, for one IPP request or a raw-port connection.
pub const PRINTER_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest IPP response the client reads.
pub const MAX_IPP_RESPONSE_BYTES: usize = 1024 * 1024;
/// Largest document sent to a printer (a 1200 dpi PNG label is well under it).
pub const MAX_DOCUMENT_BYTES: usize = 64 * 1024 * 1024;
/// The `requesting-user-name` this client sends (it never sends the Stampline user name).
pub const IPP_USER_NAME: &str = "stampline";

/// What the printer is sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DocFormat {
    Pdf,
    Png,
    /// Bytes passed through as they are (the item bytes).
    Raw,
    /// Zebra ZPL II for thermal printers on the raw port: the label as one `^GF` graphic.
    Zpl,
    /// An SVG drawing of a layout (files only).
    Svg,
}

impl DocFormat {
    /// The `--format` name.
    pub fn name(self) -> &'static str {
        match self {
            DocFormat::Pdf => "pdf",
            DocFormat::Png => "png",
            DocFormat::Raw => "raw",
            DocFormat::Zpl => "zpl",
            DocFormat::Svg => "svg",
        }
    }

    /// The IPP `document-format`.
    pub fn mime(self) -> &'static str {
        match self {
            DocFormat::Pdf => "application/pdf",
            DocFormat::Png => "image/png",
            DocFormat::Svg => "image/svg+xml",
            // No registered type for ZPL: printers that take it over IPP auto-sense it.
            DocFormat::Raw | DocFormat::Zpl => "application/octet-stream",
        }
    }

    pub fn parse(name: &str) -> Option<DocFormat> {
        match name {
            "pdf" => Some(DocFormat::Pdf),
            "png" => Some(DocFormat::Png),
            "raw" => Some(DocFormat::Raw),
            "svg" => Some(DocFormat::Svg),
            "zpl" => Some(DocFormat::Zpl),
            _ => None,
        }
    }
}

/// A printer address: `ipp://HOST[:PORT]/PATH`, `ipps://…`, `socket://HOST[:PORT]` (raw, 9100 by
/// default) or `file:PATH`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PrinterUri {
    Ipp {
        tls: bool,
        host: String,
        port: u16,
        path: String,
    },
    Socket {
        host: String,
        port: u16,
    },
    File {
        path: PathBuf,
    },
}

/// The IANA port of IPP (and IPPS).
pub const IPP_PORT: u16 = 631;
/// The customary raw printing port (AppSocket / JetDirect).
pub const RAW_PORT: u16 = 9100;

fn host_port(rest: &str, default_port: u16, uri: &str) -> Result<(String, u16), PrintError> {
    let bad = || PrintError::BadUri(format!("{uri}: expected HOST[:PORT]"));
    if rest.is_empty() || rest.contains('@') {
        // User info would put a secret in logs and job attributes: refused.
        return Err(bad());
    }
    let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
        let (h, tail) = v6.split_once(']').ok_or_else(bad)?;
        let port = match tail.strip_prefix(':') {
            Some(p) => p.parse::<u16>().map_err(|_| bad())?,
            None if tail.is_empty() => default_port,
            None => return Err(bad()),
        };
        (h.to_owned(), port)
    } else {
        match rest.split_once(':') {
            Some((h, p)) => (h.to_owned(), p.parse::<u16>().map_err(|_| bad())?),
            None => (rest.to_owned(), default_port),
        }
    };
    if host.is_empty()
        || port == 0
        || !host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-:".contains(&b))
    {
        return Err(bad());
    }
    Ok((host, port))
}

impl PrinterUri {
    pub fn parse(uri: &str) -> Result<PrinterUri, PrintError> {
        if let Some(path) = uri.strip_prefix("file:") {
            let path = path.strip_prefix("//").unwrap_or(path);
            if path.is_empty() {
                return Err(PrintError::BadUri("file: needs a path".into()));
            }
            return Ok(PrinterUri::File {
                path: PathBuf::from(path),
            });
        }
        if let Some(rest) = uri.strip_prefix("socket://") {
            let rest = rest.trim_end_matches('/');
            if rest.contains('/') || rest.contains('?') {
                return Err(PrintError::BadUri(format!("{uri}: socket://HOST[:PORT]")));
            }
            let (host, port) = host_port(rest, RAW_PORT, uri)?;
            return Ok(PrinterUri::Socket { host, port });
        }
        let (tls, rest) = if let Some(r) = uri.strip_prefix("ipps://") {
            (true, r)
        } else if let Some(r) = uri.strip_prefix("ipp://") {
            (false, r)
        } else {
            return Err(PrintError::BadUri(format!(
                "{uri}: give ipp://…, ipps://…, socket://HOST:9100 or file:PATH"
            )));
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/ipp/print"),
        };
        if path.contains(['?', '#', ' ']) {
            return Err(PrintError::BadUri(format!("{uri}: no query or fragment")));
        }
        let (host, port) = host_port(authority, IPP_PORT, uri)?;
        Ok(PrinterUri::Ipp {
            tls,
            host,
            port,
            path: path.to_owned(),
        })
    }
}

impl fmt::Display for PrinterUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let host = |h: &str| {
            if h.contains(':') {
                format!("[{h}]")
            } else {
                h.to_owned()
            }
        };
        match self {
            PrinterUri::Ipp {
                tls,
                host: h,
                port,
                path,
            } => write!(
                f,
                "{}://{}:{port}{path}",
                if *tls { "ipps" } else { "ipp" },
                host(h)
            ),
            PrinterUri::Socket { host: h, port } => write!(f, "socket://{}:{port}", host(h)),
            PrinterUri::File { path } => write!(f, "file:{}", path.display()),
        }
    }
}

/// Why printing could not go on. Codes are snake_case for the CLI.
#[derive(Debug, thiserror::Error)]
pub enum PrintError {
    #[error("bad printer URI: {0}")]
    BadUri(String),
    #[error("printer unreachable: {0}")]
    Unreachable(String),
    #[error("printer not trusted: {0}")]
    Untrusted(String),
    #[error("printer refused: {0}")]
    Refused(String),
    #[error("printer does not support {0}")]
    Unsupported(String),
    #[error("printer answered nonsense: {0}")]
    Protocol(String),
    #[error("{0}")]
    Io(String),
}

impl PrintError {
    pub fn code(&self) -> &'static str {
        match self {
            PrintError::BadUri(_) => "bad_printer_uri",
            PrintError::Unreachable(_) => "printer_unreachable",
            PrintError::Untrusted(_) => "printer_untrusted",
            PrintError::Refused(_) => "printer_refused",
            PrintError::Unsupported(_) => "printer_unsupported",
            PrintError::Protocol(_) => "printer_protocol",
            PrintError::Io(_) => "print_io",
        }
    }
}

/// How a job ended on the printer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JobEnd {
    /// The printer says it printed (IPP `completed`; raw port: every byte delivered; file: written
    /// and synced).
    Completed,
    /// Cancelled (by us, or at the printer), or never sent.
    Canceled,
    /// The printer gave up (IPP `aborted`), refused the document, or did not finish in time.
    Aborted,
}

impl JobEnd {
    pub fn as_str(self) -> &'static str {
        match self {
            JobEnd::Completed => "completed",
            JobEnd::Canceled => "canceled",
            JobEnd::Aborted => "aborted",
        }
    }
}

/// The end of a job, as the printer told it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobReport {
    pub end: JobEnd,
    /// The IPP job id, when there was one.
    pub job_id: Option<i32>,
    /// What the printer said (state reasons and message), or what happened.
    pub detail: String,
    /// Set when the link was lost before the job completed (the job was then cancelled).
    pub link_lost: Option<String>,
    /// The file written (file printer only).
    pub file: Option<PathBuf>,
}

/// Settings for one printer.
#[derive(Clone, Debug, Default)]
pub struct PrintOptions {
    /// The printer's TLS certificate (DER), pinned byte for byte, for `ipps://`.
    pub pinned_cert_der: Option<Vec<u8>>,
    /// Overrides [`JOB_TIMEOUT`] (tests with a slow printer).
    pub job_timeout: Option<Duration>,
}

/// What `stampline printers` shows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PrinterStatus {
    pub uri: String,
    /// `idle`, `processing`, `stopped`, `reachable` (raw port), `writable` (file).
    pub state: String,
    pub reasons: Vec<String>,
    pub make_and_model: Option<String>,
    pub formats: Vec<String>,
    /// The policy attributes this printer takes (IPP), see [`IppPolicy`].
    pub policy: Option<IppPolicy>,
}

/// A printer this client can send to.
#[derive(Debug)]
pub struct Printer {
    uri: PrinterUri,
    options: PrintOptions,
}

/// A job opened on a printer, holding no document yet.
#[derive(Debug)]
pub struct Job {
    inner: JobInner,
    timeout: Duration,
}

#[derive(Debug)]
enum JobInner {
    Ipp(ipp_printer::IppJob),
    Socket(socket::SocketJob),
    File(file::FileJob),
}

impl Printer {
    pub fn new(uri: &str, options: PrintOptions) -> Result<Printer, PrintError> {
        Ok(Printer {
            uri: PrinterUri::parse(uri)?,
            options,
        })
    }

    pub fn uri(&self) -> &PrinterUri {
        &self.uri
    }

    /// The format this kind of printer is sent by default: PDF for IPP, ZPL for the raw port
    /// (thermal printers), the raw item bytes for a file.
    pub fn default_format(&self) -> DocFormat {
        match self.uri {
            PrinterUri::Ipp { .. } => DocFormat::Pdf,
            PrinterUri::Socket { .. } => DocFormat::Zpl,
            PrinterUri::File { .. } => DocFormat::Raw,
        }
    }

    /// The certificate an `ipps://` printer presents (DER) and its SHA-256 fingerprint (hex,
    /// colon-separated), fetched without trusting it, for the user to check and pin.
    pub async fn fetch_certificate(&self) -> Result<(Vec<u8>, String), PrintError> {
        let PrinterUri::Ipp {
            tls: true,
            host,
            port,
            ..
        } = &self.uri
        else {
            return Err(PrintError::BadUri(format!(
                "{}: only ipps:// printers have a certificate",
                self.uri
            )));
        };
        let der = tls::fetch_certificate(host, *port).await?;
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &der);
        let fingerprint = digest
            .as_ref()
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect::<Vec<_>>()
            .join(":");
        Ok((der, fingerprint))
    }

    /// Whether it is there and what it takes.
    pub async fn status(&self) -> Result<PrinterStatus, PrintError> {
        match &self.uri {
            PrinterUri::Ipp { .. } => {
                ipp_printer::IppClient::new(&self.uri, &self.options)?
                    .status()
                    .await
            }
            PrinterUri::Socket { host, port } => socket::status(host, *port, &self.uri).await,
            PrinterUri::File { path } => file::status(path, &self.uri),
        }
    }

    /// Opens a job for one document of `format`: checks the printer is there and takes the format
    /// and creates the job (no document yet). Call before the item is issued.
    pub async fn start_job(&self, format: DocFormat, job_name: &str) -> Result<Job, PrintError> {
        let inner = match &self.uri {
            PrinterUri::Ipp { .. } => JobInner::Ipp(
                ipp_printer::IppClient::new(&self.uri, &self.options)?
                    .create_job(format, job_name)
                    .await?,
            ),
            PrinterUri::Socket { host, port } => {
                JobInner::Socket(socket::SocketJob::connect(host, *port).await?)
            }
            PrinterUri::File { path } => JobInner::File(file::FileJob::check(path)?),
        };
        Ok(Job {
            inner,
            timeout: self.options.job_timeout.unwrap_or(JOB_TIMEOUT),
        })
    }
}

impl Job {
    /// The IPP job id, if any.
    pub fn job_id(&self) -> Option<i32> {
        match &self.inner {
            JobInner::Ipp(j) => Some(j.job_id()),
            _ => None,
        }
    }

    /// Sends the document (only if the link is still up) and follows the job to its end; if the
    /// link is lost before the job completes, cancels it and follows it to its final state.
    /// The document is zeroed when this returns.
    pub async fn finish(
        self,
        document: Zeroizing<Vec<u8>>,
        lost: watch::Receiver<Option<String>>,
    ) -> JobReport {
        if document.len() > MAX_DOCUMENT_BYTES {
            let report = self.cancel("document too large").await;
            return JobReport {
                end: JobEnd::Aborted,
                ..report
            };
        }
        match self.inner {
            JobInner::Ipp(j) => j.finish(document, lost, self.timeout).await,
            JobInner::Socket(j) => j.finish(document, lost).await,
            JobInner::File(j) => j.finish(document, lost),
        }
    }

    /// Ends a job that will get no document (the issue failed, or the item did not check out).
    pub async fn cancel(self, why: &str) -> JobReport {
        match self.inner {
            JobInner::Ipp(j) => j.cancel(why).await,
            JobInner::Socket(j) => j.cancel(why),
            JobInner::File(j) => j.cancel(why),
        }
    }
}

/// The reason the link was lost, if it was.
fn lost_now(lost: &watch::Receiver<Option<String>>) -> Option<String> {
    lost.borrow().clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printer_uris_parse_with_default_ports() {
        assert_eq!(
            PrinterUri::parse("ipp://localhost:8631/ipp/print").unwrap(),
            PrinterUri::Ipp {
                tls: false,
                host: "localhost".into(),
                port: 8631,
                path: "/ipp/print".into()
            }
        );
        assert_eq!(
            PrinterUri::parse("ipps://printer.example")
                .unwrap()
                .to_string(),
            "ipps://printer.example:631/ipp/print"
        );
        assert_eq!(
            PrinterUri::parse("socket://10.0.0.5").unwrap(),
            PrinterUri::Socket {
                host: "10.0.0.5".into(),
                port: 9100
            }
        );
        assert_eq!(
            PrinterUri::parse("socket://[::1]:9101")
                .unwrap()
                .to_string(),
            "socket://[::1]:9101"
        );
        assert_eq!(
            PrinterUri::parse("file:/tmp/label").unwrap(),
            PrinterUri::File {
                path: "/tmp/label".into()
            }
        );
    }

    #[test]
    fn bad_printer_uris_are_refused_with_a_code() {
        for bad in [
            "lpr://x",
            "ipp://",
            "ipp://user:secret@host/ipp/print",
            "ipp://host:99999/x",
            "socket://host/path",
            "ipp://host/ipp/print?x=1",
            "file:",
            "socket://ho st",
        ] {
            let e = PrinterUri::parse(bad).unwrap_err();
            assert_eq!(e.code(), "bad_printer_uri", "{bad}");
        }
    }

    #[test]
    fn formats_map_to_ipp_document_formats() {
        for f in [
            DocFormat::Pdf,
            DocFormat::Png,
            DocFormat::Raw,
            DocFormat::Zpl,
            DocFormat::Svg,
        ] {
            assert_eq!(DocFormat::parse(f.name()), Some(f));
        }
        assert_eq!(DocFormat::Png.mime(), "image/png");
        assert_eq!(DocFormat::Svg.mime(), "image/svg+xml");
        assert_eq!(DocFormat::parse("tiff"), None);
    }
}
