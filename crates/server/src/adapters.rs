//! The CMLS and bank adapters: the [`Cmls`] and [`Bank`] traits over HTTPS/JSON to the services
//! of docs/SANDBOXES.md (`stampline sandbox cmls|bank`, or a real system speaking that API).
//!
//! Each call has a timeout; a call that may be repeated safely (every bank call carries an
//! idempotency key, CMLS reports are keyed by payment or serial) is retried after a timeout, a
//! lost connection or a 5xx, with the same key, at most [`MAX_ATTEMPTS`] times. A licence
//! application without a key and a usage report are retried only when the connection could not
//! be made (nothing reached CMLS).
//! The traits are synchronous; the private tier calls them from blocking threads, and the adapter
//! runs the async call on the runtime it was made in.

use std::path::Path;
use std::time::Duration;

use base64::Engine as _;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use stampline_https::{CallError, JsonCaller};
use stampline_sandbox::{
    Bank, BankError, CardToken, Cmls, CmlsError, DeviceStatus, KeyRegistration, License,
    LicenseApplication, Payment, PaymentRecord, Refund, RegisterReport, UsageReport,
};

/// Attempts per call, the first included.
pub const MAX_ATTEMPTS: u32 = 3;
/// Wait before the second attempt; doubles each time.
pub const RETRY_BACKOFF: Duration = Duration::from_millis(200);
/// Default time one attempt may take.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone, Copy, PartialEq, Eq)]
enum Retry {
    /// Idempotent: retry on timeout, lost connection and 5xx.
    Safe,
    /// Not idempotent: retry only when the connection was never made.
    ConnectOnly,
}

/// The failure of one call, before it is mapped to the trait's error.
enum Failure {
    /// No usable answer (the message says why).
    Unreachable(String),
    /// The service answered an error.
    Refused { code: String, message: String },
}

#[derive(Debug)]
struct Link {
    caller: JsonCaller,
    runtime: tokio::runtime::Handle,
    what: &'static str,
}

impl Link {
    fn open(
        what: &'static str,
        url: &str,
        trust: &Path,
        timeout: Duration,
    ) -> anyhow::Result<Link> {
        let (host, port) = stampline_https::parse_https_url(url)
            .map_err(|e| anyhow::anyhow!("{what} URL: {e}"))?;
        let cert = stampline_https::read_pinned_cert(trust)
            .map_err(|e| anyhow::anyhow!("{what} trust: {e}"))?;
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| anyhow::anyhow!("the {what} adapter must be made inside a runtime"))?;
        Ok(Link {
            caller: JsonCaller::new(
                host,
                port,
                stampline_https::pinned_client_config(&cert, &[b"http/1.1"]),
                timeout,
            ),
            runtime,
            what,
        })
    }

    fn call<T: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        key: Option<&str>,
        body: Option<&Value>,
        retry: Retry,
    ) -> Result<T, Failure> {
        let headers: Vec<(&str, &str)> = key.map(|k| ("idempotency-key", k)).into_iter().collect();
        let mut backoff = RETRY_BACKOFF;
        let mut last = String::new();
        for attempt in 1..=MAX_ATTEMPTS {
            let result = self
                .runtime
                .block_on(self.caller.call(method, path, &headers, body));
            let retryable = match result {
                Ok((status, value)) if status < 400 => {
                    return serde_json::from_value(value).map_err(|e| {
                        Failure::Unreachable(format!(
                            "{} answered an unexpected shape: {e}",
                            self.what
                        ))
                    });
                }
                Ok((status, value)) => {
                    let code = value["error"].as_str().unwrap_or("error").to_owned();
                    let message = value["message"].as_str().unwrap_or("").to_owned();
                    if status < 500 {
                        return Err(Failure::Refused { code, message });
                    }
                    last = format!("{} answered {status} ({code}: {message})", self.what);
                    retry == Retry::Safe
                }
                Err(CallError::Connect(m)) => {
                    last = format!("cannot reach {}: {m}", self.what);
                    true
                }
                Err(
                    e @ (CallError::Timeout(_)
                    | CallError::Tls(_)
                    | CallError::Lost(_)
                    | CallError::BadAnswer(_)),
                ) => {
                    last = format!("{}: {e}", self.what);
                    retry == Retry::Safe
                }
                Err(e @ CallError::BadUrl(_)) => return Err(Failure::Unreachable(e.to_string())),
            };
            tracing::warn!(attempt, path, error = %last, "external call failed");
            if !retryable || attempt == MAX_ATTEMPTS {
                break;
            }
            std::thread::sleep(backoff);
            backoff = backoff.saturating_mul(2);
        }
        Err(Failure::Unreachable(format!(
            "{last} (after at most {MAX_ATTEMPTS} attempts)"
        )))
    }
}

/// The financial system over HTTPS.
#[derive(Debug)]
pub struct HttpBank(Link);

impl HttpBank {
    pub fn open(url: &str, trust: &Path, timeout: Duration) -> anyhow::Result<HttpBank> {
        Ok(HttpBank(Link::open("the bank", url, trust, timeout)?))
    }

    fn post<T: DeserializeOwned>(
        &self,
        path: &str,
        key: &str,
        body: Value,
    ) -> Result<T, BankError> {
        self.0
            .call("POST", path, Some(key), Some(&body), Retry::Safe)
            .map_err(bank_failure)
    }

    fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, BankError> {
        self.0
            .call("GET", path, None, None, Retry::Safe)
            .map_err(bank_failure)
    }
}

impl HttpBank {
    /// A card charge (`capture`) or authorisation.
    fn card_payment(
        &self,
        token: &str,
        amount_mills: u64,
        key: &str,
        capture: bool,
    ) -> Result<Payment, BankError> {
        let r: PaymentRecord = self.post(
            "/v1/charges",
            key,
            json!({"token": token, "amount_mills": amount_mills, "capture": capture}),
        )?;
        Ok(r.payment())
    }
}

fn bank_failure(f: Failure) -> BankError {
    match f {
        Failure::Unreachable(m) => BankError::Unavailable(m),
        Failure::Refused { code, message, .. } => BankError::from_code(&code, &message),
    }
}

fn path_id(id: &str) -> Result<&str, BankError> {
    if !id.is_empty()
        && id.len() <= 100
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        Ok(id)
    } else {
        Err(BankError::UnknownPayment)
    }
}

impl Bank for HttpBank {
    fn is_sandbox(&self) -> bool {
        false
    }

    fn tokenize_card(
        &self,
        number: &str,
        exp: &str,
        cvc: &str,
        idempotency_key: &str,
    ) -> Result<CardToken, BankError> {
        self.post(
            "/v1/tokens",
            idempotency_key,
            json!({"number": number, "exp": exp, "cvc": cvc}),
        )
    }

    fn charge(&self, token: &str, amount_mills: u64, key: &str) -> Result<Payment, BankError> {
        self.card_payment(token, amount_mills, key, true)
    }

    fn authorize(&self, token: &str, amount_mills: u64, key: &str) -> Result<Payment, BankError> {
        self.card_payment(token, amount_mills, key, false)
    }

    fn capture(&self, payment_id: &str, key: &str) -> Result<Payment, BankError> {
        let id = path_id(payment_id)?;
        let r: PaymentRecord = self.post(&format!("/v1/payments/{id}/capture"), key, json!({}))?;
        Ok(r.payment())
    }

    fn refund(&self, payment_id: &str, amount_mills: u64, key: &str) -> Result<Refund, BankError> {
        let id = path_id(payment_id)?;
        self.post(
            &format!("/v1/payments/{id}/refunds"),
            key,
            json!({"amount_mills": amount_mills}),
        )
    }

    fn debit_eft(
        &self,
        routing: &str,
        account: &str,
        amount_mills: u64,
        key: &str,
    ) -> Result<Payment, BankError> {
        let r: PaymentRecord = self.post(
            "/v1/debits",
            key,
            json!({"routing": routing, "account": account, "amount_mills": amount_mills}),
        )?;
        Ok(r.payment())
    }

    fn payment(&self, payment_id: &str) -> Result<PaymentRecord, BankError> {
        self.get(&format!("/v1/payments/{}", path_id(payment_id)?))
    }

    fn payments(&self) -> Result<Vec<PaymentRecord>, BankError> {
        self.get("/v1/payments")
    }
}

/// The licensing system over HTTPS.
#[derive(Debug)]
pub struct HttpCmls(Link);

impl HttpCmls {
    pub fn open(url: &str, trust: &Path, timeout: Duration) -> anyhow::Result<HttpCmls> {
        Ok(HttpCmls(Link::open(
            "the licensing system",
            url,
            trust,
            timeout,
        )?))
    }

    fn call<T: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        key: Option<&str>,
        body: Option<Value>,
        retry: Retry,
    ) -> Result<T, CmlsError> {
        self.0
            .call(method, path, key, body.as_ref(), retry)
            .map_err(|f| match f {
                Failure::Unreachable(m) => CmlsError::Unavailable(m),
                Failure::Refused { code, message, .. } => CmlsError::from_code(&code, &message),
            })
    }
}

impl HttpCmls {
    /// Post a register report (a reset or a refund) under its idempotency key; safe to repeat.
    fn post_registers(
        &self,
        path: &str,
        key: &str,
        report: &RegisterReport,
    ) -> Result<(), CmlsError> {
        let body =
            serde_json::to_value(report).map_err(|e| CmlsError::Unavailable(e.to_string()))?;
        let _: Value = self.call("POST", path, Some(key), Some(body), Retry::Safe)?;
        Ok(())
    }
}

fn device_path(device_id: &str) -> Result<&str, CmlsError> {
    if !device_id.is_empty()
        && device_id.len() <= 32
        && device_id.bytes().all(|b| b.is_ascii_alphanumeric())
    {
        Ok(device_id)
    } else {
        Err(CmlsError::Unknown(device_id.to_owned()))
    }
}

impl Cmls for HttpCmls {
    fn is_sandbox(&self) -> bool {
        false
    }

    fn license_customer(
        &self,
        app: &LicenseApplication,
        idempotency_key: Option<&str>,
    ) -> Result<License, CmlsError> {
        let body = serde_json::to_value(app).map_err(|e| CmlsError::Unavailable(e.to_string()))?;
        // With a key the application may be repeated safely; without one, only when it never
        // reached CMLS.
        let retry = if idempotency_key.is_some() {
            Retry::Safe
        } else {
            Retry::ConnectOnly
        };
        self.call("POST", "/v1/licenses", idempotency_key, Some(body), retry)
    }

    fn register_device(
        &self,
        license_id: &str,
        device_id: &str,
        key_id: &str,
        spki_der: &[u8],
    ) -> Result<(), CmlsError> {
        let body = json!({"license_id": license_id, "device_id": device_id, "key_id": key_id,
            "public_key_spki_der_base64": base64::engine::general_purpose::STANDARD.encode(spki_der)});
        let _: Value = self.call("POST", "/v1/devices", None, Some(body), Retry::Safe)?;
        Ok(())
    }

    /// Registering the same key again updates it (an upsert): safe to retry.
    fn register_key(&self, key: &KeyRegistration) -> Result<(), CmlsError> {
        let body = serde_json::to_value(key).map_err(|e| CmlsError::Unavailable(e.to_string()))?;
        let _: Value = self.call("POST", "/v1/keys", None, Some(body), Retry::Safe)?;
        Ok(())
    }

    fn report_reset(&self, device_id: &str, report: &RegisterReport) -> Result<(), CmlsError> {
        let id = device_path(device_id)?;
        let key = format!("reset:{id}:{}", report.reference);
        self.post_registers(&format!("/v1/devices/{id}/resets"), &key, report)
    }

    fn report_refund(&self, device_id: &str, report: &RegisterReport) -> Result<(), CmlsError> {
        let id = device_path(device_id)?;
        let key = format!("refund:{}", report.reference);
        self.post_registers(&format!("/v1/devices/{id}/refunds"), &key, report)
    }

    fn report_usage(&self, report: &UsageReport) -> Result<Vec<String>, CmlsError> {
        let id = device_path(&report.device_id)?;
        let body =
            serde_json::to_value(report).map_err(|e| CmlsError::Unavailable(e.to_string()))?;
        // A repeated report would be checked against itself and flagged, so it is not retried
        // after a timeout.
        let v: Value = self.call(
            "POST",
            &format!("/v1/devices/{id}/reports"),
            None,
            Some(body),
            Retry::ConnectOnly,
        )?;
        Ok(v["flags"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|f| f.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default())
    }

    fn withdraw_device(&self, device_id: &str, reason: &str) -> Result<DeviceStatus, CmlsError> {
        let id = device_path(device_id)?;
        self.call(
            "POST",
            &format!("/v1/devices/{id}/withdraw"),
            None,
            Some(json!({"reason": reason})),
            Retry::Safe,
        )
    }

    fn device_status(&self, device_id: &str) -> Result<DeviceStatus, CmlsError> {
        let id = device_path(device_id)?;
        self.call("GET", &format!("/v1/devices/{id}"), None, None, Retry::Safe)
    }

    fn devices(&self) -> Result<Vec<DeviceStatus>, CmlsError> {
        self.call("GET", "/v1/devices", None, None, Retry::Safe)
    }
}
