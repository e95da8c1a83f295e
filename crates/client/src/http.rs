//! The server's address and the plain HTTPS calls: registration, published keys, quotes, item
//! status.

use std::time::Duration;

use base64::Engine as _;
use rustls::pki_types::ServerName;
use serde_json::Value;
use stampline_https::{CallError, Proxy};
use stampline_wire::replies::{
    HttpError as Refusal, ItemStatusPublic, QuoteReply, RegisterReply, SigningKey,
};
use tokio::net::TcpStream;

use crate::trust::Trust;

/// Connect + TLS handshake + response, for one HTTP call.
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("server URL must look like https://HOST:PORT: {0}")]
    BadUrl(String),
    #[error("cannot reach the server: {0}")]
    Connect(String),
    #[error("TLS with the server failed: {0}")]
    Tls(String),
    #[error("server answered {status}: {code}: {message}")]
    Refused {
        status: u16,
        code: String,
        message: String,
    },
    #[error("unexpected answer from the server: {0}")]
    BadAnswer(String),
    #[error("the server did not answer in time")]
    Timeout,
    #[error("{0}")]
    Proxy(String),
}

impl HttpError {
    /// A snake_case code for the CLI's JSON errors.
    pub fn code(&self) -> String {
        match self {
            HttpError::BadUrl(_) => "bad_url".into(),
            HttpError::Connect(_) => "unreachable".into(),
            HttpError::Tls(_) => "tls_failed".into(),
            HttpError::Refused { code, .. } => code.clone(),
            HttpError::BadAnswer(_) => "bad_answer".into(),
            HttpError::Timeout => "timeout".into(),
            HttpError::Proxy(_) => "bad_proxy".into(),
        }
    }
}

/// A published signing key, as `GET /v1/keys` lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublishedKey {
    pub key_id: String,
    pub spki_der: Vec<u8>,
    pub valid_from: String,
    pub valid_until: Option<String>,
    /// When the key was revoked (RFC 3339); items it signed are then invalid.
    pub revoked_at: Option<String>,
    pub revocation_reason: Option<String>,
}

impl PublishedKey {
    /// One entry of a saved copy of `GET /v1/keys` (read leniently: only the id and the key
    /// are required).
    pub fn from_json(k: &Value) -> Result<PublishedKey, String> {
        let spki_der = k["public_key_spki_der_base64"]
            .as_str()
            .and_then(|s| base64::engine::general_purpose::STANDARD.decode(s).ok())
            .ok_or("bad public key")?;
        let text = |name: &str| k[name].as_str().map(str::to_owned);
        Ok(PublishedKey {
            key_id: text("key_id").ok_or("key without key_id")?,
            spki_der,
            valid_from: text("valid_from").unwrap_or_default(),
            valid_until: text("valid_until"),
            revoked_at: text("revoked_at"),
            revocation_reason: text("revocation_reason"),
        })
    }
}

impl TryFrom<SigningKey> for PublishedKey {
    type Error = String;

    /// A key as `GET /v1/keys` answers it.
    fn try_from(k: SigningKey) -> Result<PublishedKey, String> {
        let spki_der = base64::engine::general_purpose::STANDARD
            .decode(&k.public_key_spki_der_base64)
            .map_err(|_| "bad public key")?;
        Ok(PublishedKey {
            key_id: k.key_id,
            spki_der,
            valid_from: k.valid_from.unwrap_or_default(),
            valid_until: k.valid_until,
            revoked_at: k.revoked_at,
            revocation_reason: k.revocation_reason,
        })
    }
}

/// Where the server is, who it must be, and the HTTP proxy on the way (if any).
#[derive(Clone, Debug)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
    pub trust: Trust,
    /// From `HTTPS_PROXY`/`NO_PROXY` at [`Endpoint::new`]; every connection to the server (the
    /// HTTPS calls and the link) tunnels through it, TLS end to end.
    pub proxy: Option<Proxy>,
}

impl Endpoint {
    /// `https://HOST:PORT` (a trailing slash is fine; the port defaults to 443), through the
    /// proxy the environment names for HOST (`HTTPS_PROXY`, `NO_PROXY`), if any.
    pub fn new(url: &str, trust: Trust) -> Result<Endpoint, HttpError> {
        let (host, port) =
            stampline_https::parse_https_url(url).map_err(|_| HttpError::BadUrl(url.into()))?;
        let proxy = Proxy::from_env_for(&host)
            .map_err(|e| HttpError::Proxy(format!("HTTPS_PROXY: {e}")))?;
        Ok(Endpoint {
            host,
            port,
            trust,
            proxy,
        })
    }

    /// The same server reached through `proxy` (or directly with `None`), whatever the
    /// environment says.
    pub fn with_proxy(mut self, proxy: Option<Proxy>) -> Endpoint {
        self.proxy = proxy;
        self
    }

    pub fn url(&self) -> String {
        format!("https://{}:{}", self.host, self.port)
    }

    /// A TCP connection with pinned TLS 1.3.
    pub async fn connect_tls(
        &self,
        alpn: &[&[u8]],
    ) -> Result<tokio_rustls::client::TlsStream<TcpStream>, HttpError> {
        let tcp = stampline_https::proxy::dial(&self.host, self.port, self.proxy.as_ref())
            .await
            .map_err(|e| HttpError::Connect(format!("{}: {e}", self.url())))?;
        let name = ServerName::try_from(self.host.clone())
            .map_err(|_| HttpError::BadUrl(self.host.clone()))?;
        let connector = tokio_rustls::TlsConnector::from(self.trust.client_config(alpn));
        connector
            .connect(name, tcp)
            .await
            .map_err(|e| HttpError::Tls(e.to_string()))
    }

    /// One HTTP/1.1 request with a JSON body (or none); returns the status and the JSON answer.
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(u16, Value), HttpError> {
        tokio::time::timeout(HTTP_TIMEOUT, self.call_inner(method, path, body))
            .await
            .map_err(|_| HttpError::Timeout)?
    }

    async fn call_inner(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(u16, Value), HttpError> {
        let caller = stampline_https::JsonCaller::new(
            self.host.clone(),
            self.port,
            self.trust.client_config(&[b"http/1.1"]),
            HTTP_TIMEOUT,
        )
        .with_proxy(self.proxy.clone());
        let (status, value) = caller
            .call(method, path, &[], body)
            .await
            .map_err(|e| match e {
                CallError::BadUrl(u) => HttpError::BadUrl(u),
                CallError::Connect(m) | CallError::Lost(m) => HttpError::Connect(m),
                CallError::Tls(m) => HttpError::Tls(m),
                CallError::Timeout(_) => HttpError::Timeout,
                CallError::BadAnswer(m) => HttpError::BadAnswer(m),
            })?;
        if status >= 400 {
            // Every refusal's body is `{"error": CODE, "message": …}`; one that is not still
            // refuses, with the code `error`.
            let (code, message) = match serde_json::from_value::<Refusal>(value) {
                Ok(r) => (r.error, r.message),
                Err(_) => ("error".to_owned(), String::new()),
            };
            return Err(HttpError::Refused {
                status,
                code,
                message,
            });
        }
        Ok((status, value))
    }

    /// `POST /v1/register`.
    pub async fn register(&self, form: &Value) -> Result<RegisterReply, HttpError> {
        typed(self.call("POST", "/v1/register", Some(form)).await?.1)
    }

    /// `GET /v1/keys`.
    pub async fn keys(&self) -> Result<Vec<PublishedKey>, HttpError> {
        let (_, v) = self.call("GET", "/v1/keys", None).await?;
        typed::<Vec<SigningKey>>(v)?
            .into_iter()
            .map(|k| PublishedKey::try_from(k).map_err(HttpError::BadAnswer))
            .collect()
    }

    /// `GET /v1/quote`: the rate engine's price of a piece (no login needed), as the server
    /// answers it.
    pub async fn quote(
        &self,
        class: &str,
        weight_oz: &str,
        from_zip: Option<&str>,
        to_zip: Option<&str>,
    ) -> Result<QuoteReply, HttpError> {
        let mut query = format!(
            "/v1/quote?class={}&weight_oz={}",
            enc(class),
            enc(weight_oz)
        );
        if let Some(f) = from_zip {
            query.push_str(&format!("&from_zip={}", enc(f)));
        }
        if let Some(t) = to_zip {
            query.push_str(&format!("&to_zip={}", enc(t)));
        }
        typed(self.call("GET", &query, None).await?.1)
    }

    /// `GET /v1/items/SERIAL/status` → the status (and a value item's kind, amount, what is
    /// left and its valid-until day).
    pub async fn item_status(&self, serial: &str) -> Result<ItemStatusPublic, HttpError> {
        if !serial
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err(HttpError::BadAnswer("bad serial".into()));
        }
        let (_, v) = self
            .call("GET", &format!("/v1/items/{serial}/status"), None)
            .await?;
        typed::<ItemStatusPublic>(v)
    }
}

/// An answer as its typed reply of [`stampline_wire::replies`]; one that does not fit the
/// protocol's shape is [`HttpError::BadAnswer`].
fn typed<T: serde::de::DeserializeOwned>(v: Value) -> Result<T, HttpError> {
    serde_json::from_value(v).map_err(|e| HttpError::BadAnswer(e.to_string()))
}

/// Percent-encode a query value (everything but unreserved characters).
fn enc(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trust() -> Trust {
        Trust {
            cert_der: vec![],
            auth_spki_der: vec![],
        }
    }

    #[test]
    fn urls_parse_to_host_and_port() {
        let e = Endpoint::new("https://127.0.0.1:8443", trust()).unwrap();
        assert_eq!((e.host.as_str(), e.port), ("127.0.0.1", 8443));
        let e = Endpoint::new("https://localhost/", trust()).unwrap();
        assert_eq!((e.host.as_str(), e.port), ("localhost", 443));
        assert!(Endpoint::new("http://localhost:1", trust()).is_err());
        assert!(Endpoint::new("https://h:99999", trust()).is_err());
        assert!(Endpoint::new("https://h:1/path", trust()).is_err());
    }

    #[test]
    fn query_values_are_percent_encoded() {
        assert_eq!(enc("first-class-letter"), "first-class-letter");
        assert_eq!(enc("3.5"), "3.5");
        assert_eq!(enc("a b&c=d"), "a%20b%26c%3Dd");
    }
}
