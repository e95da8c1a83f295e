//! IPP/IPPS straight to the printer (RFC 8011): Get-Printer-Attributes, Create-Job, Send-Document,
//! Get-Job-Attributes until `completed`/`aborted`/`canceled`, Cancel-Job, and Release-Job where the
//! printer offers holding. Messages are built and parsed by the `ipp` crate; each goes as one
//! HTTP/1.1 POST over a fresh connection (plain for `ipp://`, pinned TLS for `ipps://`).
//!
//! Job attributes sent with Create-Job, and why:
//! - `copies = 1` (when the printer lists `copies` among its job-creation attributes, or has
//!   `copies-supported`): the policy's one copy, whatever the printer's `copies-default`.
//! - `job-retain-until = none` (when `job-retain-until-supported` lists `none`, PWG 5100.7): the
//!   printer keeps no copy of the job after it ends, so it cannot be reprinted from the printer.
//! - `job-hold-until = indefinite` (when `job-hold-until-supported` lists it and the printer offers
//!   Release-Job): the job waits held until the client releases it on a live link.
//! - `job-name` = the item serial, `requesting-user-name` = "stampline" (no personal data).
//!
//! The document is pushed with Send-Document (`last-document = true`), never Print-URI.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper_util::rt::TokioIo;
use ipp::attribute::IppAttribute;
use ipp::model::{DelimiterTag, IppVersion, Operation, StatusCode};
use ipp::operation::{
    CancelJob, CreateJob, GetJobAttributes, GetPrinterAttributes, IppOperation as _, SendDocument,
};
use ipp::parser::IppParser;
use ipp::payload::IppPayload;
use ipp::reader::IppReader;
use ipp::request::IppRequestResponse;
use ipp::value::IppValue;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::watch;
use zeroize::Zeroizing;

use super::{
    BUSY_RETRY_FOR, BUSY_RETRY_PAUSE, CANCEL_TIMEOUT, DocFormat, IPP_USER_NAME, JOB_POLL_INTERVAL,
    JobEnd, JobReport, MAX_IPP_RESPONSE_BYTES, PRINTER_REQUEST_TIMEOUT, PrintError, PrintOptions,
    PrinterStatus, PrinterUri, lost_now, tls,
};

/// Consecutive failed Get-Job-Attributes before the job's end is taken as unknown (→ aborted).
pub const MAX_POLL_FAILURES: u32 = 20;

// IPP operation codes checked in `operations-supported` (RFC 8011 §5.4.15).
const OP_HOLD_JOB: i32 = 0x000C;
const OP_RELEASE_JOB: i32 = 0x000D;

// `job-state` values (RFC 8011 §5.3.7).
const JOB_CANCELED: i32 = 7;
const JOB_ABORTED: i32 = 8;
const JOB_COMPLETED: i32 = 9;
// `printer-state` stopped.
const PRINTER_STOPPED: i32 = 5;

/// Which of the print policy's attributes a printer takes (shown by `stampline printers`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IppPolicy {
    /// `copies = 1` is sent.
    pub copies: bool,
    /// `job-retain-until = none` is sent.
    pub retain_none: bool,
    /// The job is created held and released on a live link.
    pub hold: bool,
}

/// The printer attributes this client reads.
#[derive(Clone, Debug, Default)]
struct PrinterFacts {
    state: Option<i32>,
    reasons: Vec<String>,
    accepting: Option<bool>,
    make_and_model: Option<String>,
    formats: Vec<String>,
    policy: IppPolicy,
}

fn values(v: &IppValue) -> Vec<String> {
    v.into_iter().map(ToString::to_string).collect()
}

fn find<'a>(r: &'a IppRequestResponse, tag: DelimiterTag, name: &str) -> Option<&'a IppValue> {
    r.attributes()
        .groups_of(tag)
        .find_map(|g| g.get(name))
        .map(IppAttribute::value)
}

impl PrinterFacts {
    fn read(r: &IppRequestResponse) -> PrinterFacts {
        let get = |name| find(r, DelimiterTag::PrinterAttributes, name);
        let list = |name| get(name).map(values).unwrap_or_default();
        let ops: Vec<i32> = get("operations-supported")
            .map(|v| v.into_iter().filter_map(|x| x.as_enum().copied()).collect())
            .unwrap_or_default();
        let creation = list("job-creation-attributes-supported");
        PrinterFacts {
            state: get("printer-state").and_then(|v| v.as_enum().copied()),
            reasons: list("printer-state-reasons"),
            accepting: get("printer-is-accepting-jobs").and_then(|v| v.as_boolean().copied()),
            make_and_model: get("printer-make-and-model").map(ToString::to_string),
            formats: list("document-format-supported"),
            policy: IppPolicy {
                copies: creation.iter().any(|a| a == "copies") || get("copies-supported").is_some(),
                retain_none: list("job-retain-until-supported")
                    .iter()
                    .any(|k| k == "none"),
                hold: ops.contains(&OP_HOLD_JOB)
                    && ops.contains(&OP_RELEASE_JOB)
                    && list("job-hold-until-supported")
                        .iter()
                        .any(|k| k == "indefinite"),
            },
        }
    }

    fn state_name(&self) -> String {
        match self.state {
            Some(3) => "idle".into(),
            Some(4) => "processing".into(),
            Some(5) => "stopped".into(),
            Some(n) => format!("state {n}"),
            None => "unknown".into(),
        }
    }
}

/// One printer, spoken to over IPP.
#[derive(Clone)]
pub(super) struct IppClient {
    display: String,
    printer_uri: ipp::prelude::Uri,
    host: String,
    port: u16,
    path: String,
    tls: Option<Arc<rustls::ClientConfig>>,
}

impl std::fmt::Debug for IppClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IppClient")
            .field("uri", &self.display)
            .finish_non_exhaustive()
    }
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

fn status_error(what: &str, r: &IppRequestResponse) -> PrintError {
    let message = find(r, DelimiterTag::OperationAttributes, "status-message")
        .map(|v| format!(": {v}"))
        .unwrap_or_default();
    PrintError::Refused(format!(
        "{what}: {} (0x{:04x}){message}",
        r.header().status_code(),
        r.header().operation_or_status
    ))
}

fn attr(name: &str, value: IppValue) -> Result<IppAttribute, PrintError> {
    IppAttribute::with_name(name, value).map_err(|e| PrintError::Protocol(e.to_string()))
}

fn add_operation_attr(
    req: &mut IppRequestResponse,
    name: &str,
    value: IppValue,
) -> Result<(), PrintError> {
    req.attributes_mut()
        .add(DelimiterTag::OperationAttributes, attr(name, value)?);
    Ok(())
}

fn keyword(k: &str) -> Result<IppValue, PrintError> {
    Ok(IppValue::Keyword(k.try_into().map_err(|_| {
        PrintError::Protocol(format!("bad keyword {k}"))
    })?))
}

fn name_value(n: &str) -> Result<IppValue, PrintError> {
    Ok(IppValue::NameWithoutLanguage(n.try_into().map_err(
        |_| PrintError::Protocol(format!("bad name {n}")),
    )?))
}

impl IppClient {
    pub(super) fn new(uri: &PrinterUri, options: &PrintOptions) -> Result<IppClient, PrintError> {
        let PrinterUri::Ipp {
            tls,
            host,
            port,
            path,
        } = uri
        else {
            return Err(PrintError::BadUri(format!("{uri} is not an IPP printer")));
        };
        let display = uri.to_string();
        let printer_uri = display
            .parse::<ipp::prelude::Uri>()
            .map_err(|e| PrintError::BadUri(format!("{display}: {e}")))?;
        let tls = if *tls {
            let cert = options.pinned_cert_der.as_deref().ok_or_else(|| {
                PrintError::Untrusted(format!(
                    "{display}: ipps needs the printer's certificate pinned (--printer-cert FILE, \
                     the PEM certificate the printer shows on its web page or setup report)"
                ))
            })?;
            Some(tls::pinned_config(cert)?)
        } else {
            None
        };
        Ok(IppClient {
            display,
            printer_uri,
            host: host.clone(),
            port: *port,
            path: path.clone(),
            tls,
        })
    }

    /// One IPP request (and the document after it, if any) as an HTTP POST.
    async fn send(
        &self,
        request: IppRequestResponse,
        document: Option<&[u8]>,
    ) -> Result<IppRequestResponse, PrintError> {
        tokio::time::timeout(PRINTER_REQUEST_TIMEOUT, self.send_inner(request, document))
            .await
            .map_err(|_| PrintError::Unreachable(format!("{}: no answer in time", self.display)))?
    }

    async fn send_inner(
        &self,
        request: IppRequestResponse,
        document: Option<&[u8]>,
    ) -> Result<IppRequestResponse, PrintError> {
        let head = request.to_bytes();
        let mut body = Zeroizing::new(Vec::with_capacity(
            head.len() + document.map_or(0, <[u8]>::len),
        ));
        body.extend_from_slice(&head);
        if let Some(d) = document {
            body.extend_from_slice(d);
        }
        let tcp = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|e| PrintError::Unreachable(format!("{}: {e}", self.display)))?;
        let _ = tcp.set_nodelay(true);
        let io: Box<dyn Io> = match &self.tls {
            Some(cfg) => {
                let name = ServerName::try_from(self.host.clone())
                    .map_err(|_| PrintError::BadUri(self.display.clone()))?;
                let tls = tokio_rustls::TlsConnector::from(Arc::clone(cfg))
                    .connect(name, tcp)
                    .await
                    .map_err(|e| PrintError::Untrusted(format!("{}: {e}", self.display)))?;
                Box::new(tls)
            }
            None => Box::new(tcp),
        };
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
            .await
            .map_err(|e| PrintError::Unreachable(format!("{}: {e}", self.display)))?;
        let conn = tokio::spawn(conn);
        let http_request = hyper::Request::builder()
            .method("POST")
            .uri(self.path.as_str())
            .header(hyper::header::HOST, format!("{}:{}", self.host, self.port))
            .header(hyper::header::CONTENT_TYPE, "application/ipp")
            // The body is copied into hyper's buffer; our copy is zeroed when `body` drops.
            .body(Full::new(Bytes::copy_from_slice(&body)))
            .map_err(|e| PrintError::Protocol(e.to_string()))?;
        let response = sender
            .send_request(http_request)
            .await
            .map_err(|e| PrintError::Unreachable(format!("{}: {e}", self.display)));
        let response = match response {
            Ok(r) => r,
            Err(e) => {
                conn.abort();
                return Err(e);
            }
        };
        let status = response.status();
        let bytes = Limited::new(response.into_body(), MAX_IPP_RESPONSE_BYTES)
            .collect()
            .await
            .map_err(|e| PrintError::Protocol(format!("{}: {e}", self.display)))?
            .to_bytes();
        conn.abort();
        if !status.is_success() {
            return Err(PrintError::Refused(format!(
                "{}: HTTP {status}",
                self.display
            )));
        }
        IppParser::new(IppReader::new(std::io::Cursor::new(bytes.to_vec())))
            .parse()
            .map_err(|e| PrintError::Protocol(format!("{}: {e}", self.display)))
    }

    async fn facts(&self) -> Result<PrinterFacts, PrintError> {
        let req = GetPrinterAttributes::new(self.printer_uri.clone())
            .map_err(|e| PrintError::Protocol(e.to_string()))?
            .into_ipp_request();
        let resp = self.send(req, None).await?;
        if !resp.header().status_code().is_success() {
            return Err(status_error("Get-Printer-Attributes", &resp));
        }
        Ok(PrinterFacts::read(&resp))
    }

    pub(super) async fn status(&self) -> Result<PrinterStatus, PrintError> {
        let facts = self.facts().await?;
        Ok(PrinterStatus {
            uri: self.display.clone(),
            state: facts.state_name(),
            reasons: facts.reasons.clone(),
            make_and_model: facts.make_and_model.clone(),
            formats: facts.formats.clone(),
            policy: Some(facts.policy),
        })
    }

    /// Checks the printer, then Create-Job with the policy's attributes (retrying while busy).
    pub(super) async fn create_job(
        self,
        format: DocFormat,
        job_name: &str,
    ) -> Result<IppJob, PrintError> {
        let facts = self.facts().await?;
        if facts.state == Some(PRINTER_STOPPED) || facts.accepting == Some(false) {
            return Err(PrintError::Refused(format!(
                "{} is not accepting jobs ({}: {})",
                self.display,
                facts.state_name(),
                facts.reasons.join(", ")
            )));
        }
        let mime = format.mime();
        if !facts.formats.is_empty() && !facts.formats.iter().any(|f| f == mime) {
            return Err(PrintError::Unsupported(format!(
                "{mime} (it takes {})",
                facts.formats.join(", ")
            )));
        }
        let policy = facts.policy;
        let started = Instant::now();
        loop {
            let mut op = CreateJob::new(self.printer_uri.clone(), Some(job_name))
                .map_err(|e| PrintError::Protocol(e.to_string()))?;
            if policy.copies {
                op.add_attribute(attr("copies", IppValue::Integer(1))?);
            }
            if policy.retain_none {
                op.add_attribute(attr("job-retain-until", keyword("none")?)?);
            }
            if policy.hold {
                op.add_attribute(attr("job-hold-until", keyword("indefinite")?)?);
            }
            let mut req = op.into_ipp_request();
            add_operation_attr(&mut req, "requesting-user-name", name_value(IPP_USER_NAME)?)?;
            let resp = self.send(req, None).await?;
            let code = resp.header().status_code();
            if code == StatusCode::ServerErrorBusy && started.elapsed() < BUSY_RETRY_FOR {
                tracing::debug!(printer = %self.display, "printer busy; retrying Create-Job");
                tokio::time::sleep(BUSY_RETRY_PAUSE).await;
                continue;
            }
            if !code.is_success() {
                return Err(status_error("Create-Job", &resp));
            }
            let job_id = find(&resp, DelimiterTag::JobAttributes, "job-id")
                .and_then(|v| v.as_integer().copied())
                .ok_or_else(|| PrintError::Protocol("Create-Job answered no job-id".into()))?;
            tracing::info!(printer = %self.display, job_id, ?policy, "print job created");
            return Ok(IppJob {
                client: self,
                job_id,
                format,
                held: policy.hold,
            });
        }
    }
}

/// A job created on an IPP printer.
#[derive(Debug)]
pub(super) struct IppJob {
    client: IppClient,
    job_id: i32,
    format: DocFormat,
    held: bool,
}

/// What one Get-Job-Attributes said.
struct JobState {
    state: i32,
    detail: String,
}

impl IppJob {
    pub(super) fn job_id(&self) -> i32 {
        self.job_id
    }

    fn report(&self, end: JobEnd, detail: String, link_lost: Option<String>) -> JobReport {
        JobReport {
            end,
            job_id: Some(self.job_id),
            detail,
            link_lost,
            file: None,
        }
    }

    fn user(&self) -> Option<&'static str> {
        Some(IPP_USER_NAME)
    }

    async fn job_state(&self) -> Result<JobState, PrintError> {
        let req = GetJobAttributes::new(self.client.printer_uri.clone(), self.job_id, self.user())
            .map_err(|e| PrintError::Protocol(e.to_string()))?
            .into_ipp_request();
        let resp = self.client.send(req, None).await?;
        if !resp.header().status_code().is_success() {
            return Err(status_error("Get-Job-Attributes", &resp));
        }
        let state = find(&resp, DelimiterTag::JobAttributes, "job-state")
            .and_then(|v| v.as_enum().copied())
            .ok_or_else(|| PrintError::Protocol("no job-state".into()))?;
        let mut detail = find(&resp, DelimiterTag::JobAttributes, "job-state-reasons")
            .map(values)
            .unwrap_or_default()
            .join(", ");
        if let Some(m) = find(&resp, DelimiterTag::JobAttributes, "job-state-message") {
            let m = m.to_string();
            if !m.is_empty() {
                detail = format!("{detail} ({m})");
            }
        }
        Ok(JobState { state, detail })
    }

    async fn send_cancel(&self) {
        let req = match CancelJob::new(self.client.printer_uri.clone(), self.job_id, self.user()) {
            Ok(op) => op.into_ipp_request(),
            Err(e) => {
                tracing::warn!(error = %e, "cannot build Cancel-Job");
                return;
            }
        };
        match self.client.send(req, None).await {
            Ok(r) if r.header().status_code().is_success() => {
                tracing::info!(job_id = self.job_id, "print job cancelled");
            }
            // Already ended, or the printer is gone: following the job tells which.
            Ok(r) => {
                tracing::info!(job_id = self.job_id, status = %r.header().status_code(), "Cancel-Job refused")
            }
            Err(e) => tracing::warn!(job_id = self.job_id, error = %e, "Cancel-Job failed"),
        }
    }

    async fn release(&self) -> Result<(), PrintError> {
        let mut req = IppRequestResponse::new(
            IppVersion::v1_1(),
            Operation::ReleaseJob,
            Some(self.client.printer_uri.clone()),
        )
        .map_err(|e| PrintError::Protocol(e.to_string()))?;
        add_operation_attr(&mut req, "job-id", IppValue::Integer(self.job_id))?;
        add_operation_attr(&mut req, "requesting-user-name", name_value(IPP_USER_NAME)?)?;
        let resp = self.client.send(req, None).await?;
        if !resp.header().status_code().is_success() {
            return Err(status_error("Release-Job", &resp));
        }
        Ok(())
    }

    /// Cancels a job that will get no document and follows it to its end.
    pub(super) async fn cancel(self, why: &str) -> JobReport {
        self.send_cancel().await;
        let deadline = Instant::now() + CANCEL_TIMEOUT;
        let (_, rx) = watch::channel(None);
        let mut report = self.follow(rx, deadline, true).await;
        report.detail = format!("{why}; {}", report.detail);
        report
    }

    pub(super) async fn finish(
        self,
        document: Zeroizing<Vec<u8>>,
        lost: watch::Receiver<Option<String>>,
        timeout: Duration,
    ) -> JobReport {
        if let Some(reason) = lost_now(&lost) {
            let mut r = self.cancel("document not sent").await;
            r.link_lost = Some(reason);
            return r;
        }
        let req = match SendDocument::new(
            self.client.printer_uri.clone(),
            self.job_id,
            IppPayload::empty(),
            self.user(),
            Some(self.format.mime()),
            true,
        ) {
            Ok(op) => op.into_ipp_request(),
            Err(e) => {
                return self
                    .cancel(&format!("cannot build Send-Document: {e}"))
                    .await;
            }
        };
        let sent = self.client.send(req, Some(&document)).await;
        drop(document);
        match sent {
            Ok(r) if r.header().status_code().is_success() => {}
            Ok(r) => {
                let why = status_error("Send-Document", &r).to_string();
                let mut report = self.cancel(&why).await;
                if report.end == JobEnd::Completed {
                    report.end = JobEnd::Aborted;
                }
                return report;
            }
            Err(e) => {
                // The document may or may not have arrived: cancel, and let the printer's final
                // state say what happened.
                let why = e.to_string();
                return self.cancel(&why).await;
            }
        }
        if self.held {
            if let Some(reason) = lost_now(&lost) {
                let mut r = self.cancel("held job not released").await;
                r.link_lost = Some(reason);
                return r;
            }
            if let Err(e) = self.release().await {
                return self.cancel(&e.to_string()).await;
            }
        }
        self.follow(lost, Instant::now() + timeout, false).await
    }

    /// Polls the job to a final state. Cancels it when the link is lost (or the deadline passes)
    /// first, then follows it for up to [`CANCEL_TIMEOUT`] more.
    async fn follow(
        &self,
        mut lost: watch::Receiver<Option<String>>,
        mut deadline: Instant,
        mut cancelled: bool,
    ) -> JobReport {
        let mut link_lost: Option<String> = None;
        let mut watching = !cancelled;
        let mut failures = 0u32;
        let mut last_detail;
        loop {
            match self.job_state().await {
                Ok(s) => {
                    failures = 0;
                    last_detail = s.detail.clone();
                    let end = match s.state {
                        JOB_COMPLETED => Some(JobEnd::Completed),
                        JOB_CANCELED => Some(JobEnd::Canceled),
                        JOB_ABORTED => Some(JobEnd::Aborted),
                        _ => None,
                    };
                    if let Some(end) = end {
                        return self.report(end, s.detail, link_lost);
                    }
                }
                Err(e) => {
                    failures += 1;
                    last_detail = e.to_string();
                    if failures >= MAX_POLL_FAILURES {
                        // Unknown end: treated as not printed.
                        return self.report(
                            JobEnd::Aborted,
                            format!("lost contact with the printer: {e}"),
                            link_lost,
                        );
                    }
                }
            }
            if !cancelled && Instant::now() >= deadline {
                tracing::warn!(job_id = self.job_id, "print job took too long; cancelling");
                self.send_cancel().await;
                cancelled = true;
                watching = false;
                deadline = Instant::now() + CANCEL_TIMEOUT;
                continue;
            }
            if cancelled && Instant::now() >= deadline {
                return self.report(
                    JobEnd::Aborted,
                    format!("no final state after cancelling: {last_detail}"),
                    link_lost,
                );
            }
            let lost_now = tokio::select! {
                _ = tokio::time::sleep(JOB_POLL_INTERVAL) => None,
                r = lost.wait_for(Option::is_some), if watching => match r {
                    Ok(reason) => reason.clone(),
                    // The link is gone without a reason: it cannot confirm either.
                    Err(_) => Some("link closed".into()),
                },
            };
            if let Some(reason) = lost_now {
                tracing::warn!(job_id = self.job_id, %reason, "link lost while printing; cancelling the job");
                link_lost = Some(reason);
                watching = false;
                self.send_cancel().await;
                cancelled = true;
                deadline = Instant::now() + CANCEL_TIMEOUT;
            }
        }
    }
}
