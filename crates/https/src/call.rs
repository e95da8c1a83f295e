//! One HTTP/1.1 request with a JSON body over pinned TLS 1.3, one connection per call.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use serde_json::Value;
use tokio::net::TcpStream;

use crate::proxy::{Proxy, dial};

/// Largest response body read.
pub const MAX_RESPONSE_BYTES: usize = 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("URL must look like https://HOST:PORT: {0}")]
    BadUrl(String),
    #[error("cannot reach {0}")]
    Connect(String),
    #[error("TLS failed: {0}")]
    Tls(String),
    /// The connection failed after the request may have been sent: it may have taken effect.
    #[error("connection lost during the request: {0}")]
    Lost(String),
    #[error("no answer within {0} ms")]
    Timeout(u128),
    #[error("unexpected answer: {0}")]
    BadAnswer(String),
}

/// `https://HOST[:PORT][/]` → (host, port); the port defaults to 443. Paths are refused.
pub fn parse_https_url(url: &str) -> Result<(String, u16), CallError> {
    let rest = url
        .strip_prefix("https://")
        .ok_or_else(|| CallError::BadUrl(url.into()))?
        .trim_end_matches('/');
    if rest.is_empty() || rest.contains('/') {
        return Err(CallError::BadUrl(url.into()));
    }
    Ok(match rest.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => (
            h.trim_start_matches('[').trim_end_matches(']').to_owned(),
            p.parse::<u16>()
                .map_err(|_| CallError::BadUrl(url.into()))?,
        ),
        _ => (rest.to_owned(), 443),
    })
}

/// Calls one HTTPS/JSON service whose certificate is pinned.
#[derive(Clone, Debug)]
pub struct JsonCaller {
    pub host: String,
    pub port: u16,
    tls: Arc<rustls::ClientConfig>,
    pub timeout: Duration,
    /// The HTTP proxy to tunnel through (`None`: connect directly).
    pub proxy: Option<Proxy>,
}

impl JsonCaller {
    pub fn new(
        host: String,
        port: u16,
        tls: Arc<rustls::ClientConfig>,
        timeout: Duration,
    ) -> JsonCaller {
        JsonCaller {
            host,
            port,
            tls,
            timeout,
            proxy: None,
        }
    }

    /// The same caller, through `proxy` (or directly with `None`).
    pub fn with_proxy(mut self, proxy: Option<Proxy>) -> JsonCaller {
        self.proxy = proxy;
        self
    }

    pub fn url(&self) -> String {
        format!("https://{}:{}", self.host, self.port)
    }

    /// A TCP connection (through the proxy, if any) with the pinned TLS configuration (no
    /// timeout of its own).
    pub async fn connect(&self) -> Result<tokio_rustls::client::TlsStream<TcpStream>, CallError> {
        let tcp = dial(&self.host, self.port, self.proxy.as_ref())
            .await
            .map_err(|e| CallError::Connect(format!("{}: {e}", self.url())))?;
        let name = ServerName::try_from(self.host.clone())
            .map_err(|_| CallError::BadUrl(self.host.clone()))?;
        tokio_rustls::TlsConnector::from(Arc::clone(&self.tls))
            .connect(name, tcp)
            .await
            .map_err(|e| CallError::Tls(e.to_string()))
    }

    /// Send `method path` with the JSON `body` (or none) and `headers`; the whole exchange must
    /// finish within the timeout. Returns the status and the JSON answer, whatever the status.
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&Value>,
    ) -> Result<(u16, Value), CallError> {
        tokio::time::timeout(self.timeout, self.call_inner(method, path, headers, body))
            .await
            .map_err(|_| CallError::Timeout(self.timeout.as_millis()))?
    }

    async fn call_inner(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&Value>,
    ) -> Result<(u16, Value), CallError> {
        let tls = self.connect().await?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| CallError::Connect(e.to_string()))?;
        tokio::spawn(conn);
        let bytes = match body {
            Some(b) => serde_json::to_vec(b).map_err(|e| CallError::BadAnswer(e.to_string()))?,
            None => Vec::new(),
        };
        let mut request = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, format!("{}:{}", self.host, self.port))
            .header(hyper::header::CONTENT_TYPE, "application/json");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request
            .body(Full::new(Bytes::from(bytes)))
            .map_err(|e| CallError::BadAnswer(e.to_string()))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| CallError::Lost(e.to_string()))?;
        let status = response.status().as_u16();
        let body = Limited::new(response.into_body(), MAX_RESPONSE_BYTES)
            .collect()
            .await
            .map_err(|e| CallError::BadAnswer(e.to_string()))?
            .to_bytes();
        let value: Value = serde_json::from_slice(&body)
            .map_err(|_| CallError::BadAnswer(format!("status {status}, body is not JSON")))?;
        Ok((status, value))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn urls_parse_to_host_and_port() {
        assert_eq!(
            parse_https_url("https://127.0.0.1:8443").unwrap(),
            ("127.0.0.1".into(), 8443)
        );
        assert_eq!(
            parse_https_url("https://localhost/").unwrap(),
            ("localhost".into(), 443)
        );
        assert!(parse_https_url("http://localhost:1").is_err());
        assert!(parse_https_url("https://h:99999").is_err());
        assert!(parse_https_url("https://h:1/path").is_err());
    }
}
