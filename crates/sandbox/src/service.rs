//! `stampline sandbox cmls|bank`: the two stand-ins as HTTPS/JSON services (docs/SANDBOXES.md).
//!
//! Each keeps its state in its own data dir (`cmls.json` / `bank.json`), its own TLS identity and
//! `trust.pem` (the certificate callers pin). Every POST that changes something needs an
//! `Idempotency-Key` header. `/v1/test/...` routes are test controls: fault injection, a returned
//! ACH debit, a planted payment. Errors are `{"error": CODE, "message": TEXT}`.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path as UrlPath, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::{
    Bank, BankError, Cmls, CmlsError, KeyRegistration, LicenseApplication, RegisterReport,
    SandboxBank, SandboxCmls, UsageReport,
};

/// Largest request body a sandbox reads.
pub const MAX_BODY_BYTES: usize = 16 * 1024;
/// Most faults queued at once.
pub const MAX_FAULTS: usize = 100;
/// Longest injected delay.
pub const MAX_FAULT_MS: u64 = 120_000;

/// Which stand-in to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Cmls,
    Bank,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Cmls => "cmls",
            Kind::Bank => "bank",
        }
    }
}

/// One injected fault, consumed by the next request whose path starts with `path`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fault {
    /// `latency` (wait, then answer), `error_5xx` (answer 503, change nothing), `timeout` (wait,
    /// then 504, change nothing), `drop_after_commit` (do the work, then hold the answer back).
    pub kind: String,
    #[serde(default = "one")]
    pub count: u32,
    #[serde(default)]
    pub ms: u64,
    #[serde(default)]
    pub path: String,
}

fn one() -> u32 {
    1
}

impl Fault {
    /// Refuse unknown kinds and over-long waits.
    pub fn check(&self) -> Result<(), String> {
        if !matches!(
            self.kind.as_str(),
            "latency" | "error_5xx" | "timeout" | "drop_after_commit"
        ) || self.ms > MAX_FAULT_MS
        {
            return Err(format!(
                "fault kind must be latency, error_5xx, timeout or drop_after_commit, ms at most {MAX_FAULT_MS}"
            ));
        }
        Ok(())
    }

    /// `KIND[:COUNT[:MS[:PATH]]]`, e.g. `drop_after_commit:1:3000:/v1/charges` (the `--fault`
    /// flag of `stampline sandbox`).
    pub fn parse(text: &str) -> Result<Fault, String> {
        let mut parts = text.splitn(4, ':');
        let kind = parts.next().unwrap_or_default().to_owned();
        let number = |p: Option<&str>, default: u64| -> Result<u64, String> {
            p.map_or(Ok(default), |v| {
                v.parse()
                    .map_err(|_| format!("bad number {v:?} in fault {text:?}"))
            })
        };
        let count = u32::try_from(number(parts.next(), 1)?)
            .map_err(|_| format!("count too large in fault {text:?}"))?;
        let ms = number(parts.next(), 0)?;
        let path = parts.next().unwrap_or_default().to_owned();
        let fault = Fault {
            kind,
            count,
            ms,
            path,
        };
        fault.check()?;
        Ok(fault)
    }
}

#[derive(Debug)]
struct Shared {
    bank: Option<SandboxBank>,
    cmls: Option<SandboxCmls>,
    faults: Mutex<Vec<Fault>>,
}

type St = State<Arc<Shared>>;

/// An error answer.
#[derive(Debug)]
pub struct ApiError(StatusCode, String, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.0,
            axum::Json(json!({"error": self.1, "message": self.2})),
        )
            .into_response()
    }
}

fn bad(code: &str, message: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, code.into(), message.into())
}

impl From<BankError> for ApiError {
    fn from(e: BankError) -> Self {
        let status = match e {
            BankError::UnknownPayment | BankError::UnknownToken => StatusCode::NOT_FOUND,
            BankError::KeyReused | BankError::BadState(_) => StatusCode::CONFLICT,
            BankError::Declined | BankError::InsufficientFunds => StatusCode::PAYMENT_REQUIRED,
            BankError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::BAD_REQUEST,
        };
        ApiError(status, e.code().into(), e.to_string())
    }
}

impl From<CmlsError> for ApiError {
    fn from(e: CmlsError) -> Self {
        let status = match e {
            CmlsError::Refused(_) => StatusCode::UNPROCESSABLE_ENTITY,
            CmlsError::Unknown(_) => StatusCode::NOT_FOUND,
            CmlsError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        };
        let message = match &e {
            CmlsError::Refused(m) | CmlsError::Unknown(m) | CmlsError::Unavailable(m) => m.clone(),
        };
        ApiError(status, e.code().into(), message)
    }
}

fn parse<T: DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| bad("bad_request", format!("bad JSON body: {e}")))
}

fn idem(headers: &HeaderMap) -> Result<String, ApiError> {
    headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .ok_or_else(|| bad("missing_idempotency_key", "send an Idempotency-Key header"))
}

fn bank(s: &Shared) -> Result<&SandboxBank, ApiError> {
    s.bank
        .as_ref()
        .ok_or_else(|| bad("not_found", "no such route"))
}

fn cmls(s: &Shared) -> Result<&SandboxCmls, ApiError> {
    s.cmls
        .as_ref()
        .ok_or_else(|| bad("not_found", "no such route"))
}

type Answer = Result<axum::Json<Value>, ApiError>;

fn to_json<T: serde::Serialize>(v: &T) -> Answer {
    serde_json::to_value(v).map(axum::Json).map_err(|e| {
        ApiError(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal".into(),
            e.to_string(),
        )
    })
}

// ---- bank ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CardIn {
    number: String,
    exp: String,
    cvc: String,
}

async fn tokens(State(s): St, headers: HeaderMap, body: Bytes) -> Answer {
    let key = idem(&headers)?;
    let c: CardIn = parse(&body)?;
    to_json(&bank(&s)?.tokenize_card(&c.number, &c.exp, &c.cvc, &key)?)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ChargeIn {
    token: String,
    amount_mills: u64,
    #[serde(default = "yes")]
    capture: bool,
}

fn yes() -> bool {
    true
}

async fn charges(State(s): St, headers: HeaderMap, body: Bytes) -> Answer {
    let key = idem(&headers)?;
    let c: ChargeIn = parse(&body)?;
    let b = bank(&s)?;
    let p = if c.capture {
        b.charge(&c.token, c.amount_mills, &key)?
    } else {
        b.authorize(&c.token, c.amount_mills, &key)?
    };
    to_json(&b.payment(&p.payment_id)?)
}

async fn capture(State(s): St, UrlPath(id): UrlPath<String>, headers: HeaderMap) -> Answer {
    let key = idem(&headers)?;
    let b = bank(&s)?;
    let p = b.capture(&id, &key)?;
    to_json(&b.payment(&p.payment_id)?)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AmountIn {
    amount_mills: u64,
}

async fn refunds(
    State(s): St,
    UrlPath(id): UrlPath<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Answer {
    let key = idem(&headers)?;
    let a: AmountIn = parse(&body)?;
    to_json(&bank(&s)?.refund(&id, a.amount_mills, &key)?)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DebitIn {
    routing: String,
    account: String,
    amount_mills: u64,
}

async fn debits(State(s): St, headers: HeaderMap, body: Bytes) -> Answer {
    let key = idem(&headers)?;
    let d: DebitIn = parse(&body)?;
    let b = bank(&s)?;
    let p = b.debit_eft(&d.routing, &d.account, d.amount_mills, &key)?;
    to_json(&b.payment(&p.payment_id)?)
}

async fn payments(State(s): St) -> Answer {
    to_json(&bank(&s)?.payments()?)
}

async fn payment(State(s): St, UrlPath(id): UrlPath<String>) -> Answer {
    to_json(&bank(&s)?.payment(&id)?)
}

async fn return_debit(State(s): St, UrlPath(id): UrlPath<String>) -> Answer {
    to_json(&bank(&s)?.return_debit(&id)?)
}

async fn plant(State(s): St, body: Bytes) -> Answer {
    let a: AmountIn = parse(&body)?;
    to_json(&bank(&s)?.plant_payment(a.amount_mills)?)
}

// ---- CMLS ----

async fn licenses(State(s): St, headers: HeaderMap, body: Bytes) -> Answer {
    let app: LicenseApplication = parse(&body)?;
    let key = headers.get("idempotency-key").and_then(|v| v.to_str().ok());
    to_json(&cmls(&s)?.license_customer(&app, key)?)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeviceIn {
    license_id: String,
    device_id: String,
    key_id: String,
    public_key_spki_der_base64: String,
}

async fn devices_post(State(s): St, body: Bytes) -> Answer {
    use base64::Engine as _;
    let d: DeviceIn = parse(&body)?;
    let spki = base64::engine::general_purpose::STANDARD
        .decode(&d.public_key_spki_der_base64)
        .map_err(|_| bad("bad_request", "public key must be base64"))?;
    let c = cmls(&s)?;
    c.register_device(&d.license_id, &d.device_id, &d.key_id, &spki)?;
    to_json(&c.device_status(&d.device_id)?)
}

/// A reset or refund report on the device in the URL (an Idempotency-Key is required).
fn record_registers(
    s: &Shared,
    id: &str,
    headers: &HeaderMap,
    body: &Bytes,
    report: fn(&SandboxCmls, &str, &RegisterReport) -> Result<(), CmlsError>,
) -> Answer {
    idem(headers)?;
    let r: RegisterReport = parse(body)?;
    report(cmls(s)?, id, &r)?;
    Ok(axum::Json(json!({"recorded": true})))
}

async fn resets(
    State(s): St,
    UrlPath(id): UrlPath<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Answer {
    record_registers(&s, &id, &headers, &body, SandboxCmls::report_reset)
}

async fn device_refunds(
    State(s): St,
    UrlPath(id): UrlPath<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Answer {
    record_registers(&s, &id, &headers, &body, SandboxCmls::report_refund)
}

async fn reports(State(s): St, UrlPath(id): UrlPath<String>, body: Bytes) -> Answer {
    let r: UsageReport = parse(&body)?;
    if r.device_id != id {
        return Err(bad("bad_request", "device_id differs from the URL"));
    }
    let flags = cmls(&s)?.report_usage(&r)?;
    Ok(axum::Json(json!({"flags": flags})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WithdrawIn {
    reason: String,
}

async fn withdraw(State(s): St, UrlPath(id): UrlPath<String>, body: Bytes) -> Answer {
    let w: WithdrawIn = parse(&body)?;
    to_json(&cmls(&s)?.withdraw_device(&id, &w.reason)?)
}

async fn device_get(State(s): St, UrlPath(id): UrlPath<String>) -> Answer {
    to_json(&cmls(&s)?.device_status(&id)?)
}

async fn devices_get(State(s): St) -> Answer {
    to_json(&cmls(&s)?.devices()?)
}

/// `POST /v1/keys`: register or update an item-signing key (the same key id again updates it).
async fn keys_post(State(s): St, body: Bytes) -> Answer {
    let k: KeyRegistration = parse(&body)?;
    cmls(&s)?.register_key(&k)?;
    to_json(&k)
}

/// `GET /v1/keys`: every signing key registered, by key id (what verifiers consult).
async fn keys_get(State(s): St) -> Answer {
    let mut keys = cmls(&s)?.registered_keys();
    keys.sort_by(|a, b| a.key_id.cmp(&b.key_id));
    to_json(&keys)
}

// ---- both ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FaultsIn {
    faults: Vec<Fault>,
}

async fn queue_faults(State(s): St, body: Bytes) -> Answer {
    let f: FaultsIn = parse(&body)?;
    for fault in &f.faults {
        fault.check().map_err(|m| bad("bad_fault", m))?;
    }
    let mut q = s.faults.lock().unwrap_or_else(|e| e.into_inner());
    if q.len() + f.faults.len() > MAX_FAULTS {
        return Err(bad(
            "bad_fault",
            format!("at most {MAX_FAULTS} faults queued"),
        ));
    }
    q.extend(f.faults);
    Ok(axum::Json(json!({"queued": q.len()})))
}

/// Take the next fault that applies to `path`, if any.
fn next_fault(s: &Shared, path: &str) -> Option<Fault> {
    if path.starts_with("/v1/test/") || path == "/v1/health" {
        return None;
    }
    let mut q = s.faults.lock().unwrap_or_else(|e| e.into_inner());
    let i = q.iter().position(|f| path.starts_with(&f.path))?;
    let fault = q[i].clone();
    if q[i].count <= 1 {
        q.remove(i);
    } else {
        q[i].count -= 1;
    }
    Some(fault)
}

async fn inject(State(s): St, request: Request, next: Next) -> Response {
    let Some(fault) = next_fault(&s, request.uri().path()) else {
        return next.run(request).await;
    };
    let wait = Duration::from_millis(fault.ms);
    tracing::info!(kind = %fault.kind, path = %request.uri().path(), "injecting a fault");
    match fault.kind.as_str() {
        "latency" => {
            tokio::time::sleep(wait).await;
            next.run(request).await
        }
        "error_5xx" => ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            "injected_fault".into(),
            "injected 503: nothing was done".into(),
        )
        .into_response(),
        "timeout" => {
            tokio::time::sleep(wait).await;
            ApiError(
                StatusCode::GATEWAY_TIMEOUT,
                "injected_fault".into(),
                "injected timeout: nothing was done".into(),
            )
            .into_response()
        }
        _ => {
            let answer = next.run(request).await;
            tokio::time::sleep(wait).await;
            answer
        }
    }
}

async fn health(State(s): St) -> Answer {
    let name = if s.bank.is_some() { "bank" } else { "cmls" };
    Ok(axum::Json(json!({"service": name, "sandbox": true})))
}

/// The router of one stand-in over its state in `data_dir`.
pub fn router(
    kind: Kind,
    data_dir: &Path,
    settle_after_ms: Option<i64>,
    faults: Vec<Fault>,
) -> Result<Router, String> {
    if faults.len() > MAX_FAULTS {
        return Err(format!("at most {MAX_FAULTS} faults"));
    }
    let mut shared = Shared {
        bank: None,
        cmls: None,
        faults: Mutex::new(faults),
    };
    let common = Router::new()
        .route("/v1/health", get(health))
        .route("/v1/test/faults", post(queue_faults));
    let routes = match kind {
        Kind::Bank => {
            let mut b =
                SandboxBank::open(Some(&data_dir.join("bank.json"))).map_err(|e| e.to_string())?;
            if let Some(ms) = settle_after_ms {
                b = b.with_settle_after_ms(ms);
            }
            shared.bank = Some(b);
            common
                .route("/v1/tokens", post(tokens))
                .route("/v1/charges", post(charges))
                .route("/v1/debits", post(debits))
                .route("/v1/payments", get(payments))
                .route("/v1/payments/{id}", get(payment))
                .route("/v1/payments/{id}/capture", post(capture))
                .route("/v1/payments/{id}/refunds", post(refunds))
                .route("/v1/test/debits/{id}/return", post(return_debit))
                .route("/v1/test/plant", post(plant))
        }
        Kind::Cmls => {
            shared.cmls = Some(
                SandboxCmls::open(Some(&data_dir.join("cmls.json"))).map_err(|e| e.to_string())?,
            );
            common
                .route("/v1/licenses", post(licenses))
                .route("/v1/devices", post(devices_post).get(devices_get))
                .route("/v1/keys", post(keys_post).get(keys_get))
                .route("/v1/devices/{id}", get(device_get))
                .route("/v1/devices/{id}/resets", post(resets))
                .route("/v1/devices/{id}/refunds", post(device_refunds))
                .route("/v1/devices/{id}/reports", post(reports))
                .route("/v1/devices/{id}/withdraw", post(withdraw))
        }
    };
    let shared = Arc::new(shared);
    Ok(routes
        .fallback(|| async { bad("not_found", "no such route") })
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&shared),
            inject,
        ))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(shared))
}

/// A prepared stand-in: its router, TLS identity and trust file.
#[derive(Debug)]
pub struct Service {
    router: Router,
    tls: Arc<rustls::ServerConfig>,
    pub trust_path: PathBuf,
}

impl Service {
    /// Create or open `data_dir`: the state file, `tls/` and `trust.pem`; `faults` are queued
    /// from the start.
    pub fn open(
        kind: Kind,
        data_dir: &Path,
        settle_after_ms: Option<i64>,
        faults: Vec<Fault>,
    ) -> Result<Service, String> {
        std::fs::create_dir_all(data_dir)
            .map_err(|e| format!("cannot create {}: {e}", data_dir.display()))?;
        let identity = stampline_https::serve::Identity::load_or_create(
            data_dir,
            &format!("Stampline sandbox {}", kind.name()),
        )
        .map_err(|e| e.to_string())?;
        Ok(Service {
            router: router(kind, data_dir, settle_after_ms, faults)?,
            tls: identity.server_config().map_err(|e| e.to_string())?,
            trust_path: identity.trust_path,
        })
    }

    /// Serve on `listener` until `shutdown` completes.
    pub async fn run(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> std::io::Result<()> {
        stampline_https::serve::serve(listener, self.router, self.tls, shutdown).await
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn fault_flags_parse_and_bad_ones_are_refused() {
        let f = Fault::parse("drop_after_commit:2:3000:/v1/charges").unwrap();
        assert_eq!(
            (f.kind.as_str(), f.count, f.ms, f.path.as_str()),
            ("drop_after_commit", 2, 3000, "/v1/charges")
        );
        let f = Fault::parse("error_5xx").unwrap();
        assert_eq!((f.count, f.ms, f.path.as_str()), (1, 0, ""));
        assert!(Fault::parse("explode").is_err());
        assert!(Fault::parse("latency:1:999999").is_err());
        assert!(Fault::parse("latency:x").is_err());
    }
}
