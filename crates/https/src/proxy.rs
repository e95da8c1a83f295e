//! HTTPS through an HTTP proxy: `CONNECT host:port` (with optional basic auth), then TLS end to end
//! through the tunnel — the proxy sees only the host and port. The proxy comes from
//! `HTTPS_PROXY` / `https_proxy` (`http://[user:pass@]host[:port]`, port 1080 by default as curl
//! does), unless `NO_PROXY` / `no_proxy` names the host (`*`, a host, a domain and its subdomains
//! with or without a leading dot, or an IP address; commas between).

use std::fmt;

use base64::Engine as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// The longest proxy answer to a CONNECT read before giving up.
const MAX_CONNECT_ANSWER: usize = 8 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("proxy URL must look like http://[user:pass@]host[:port]: {0}")]
    BadUrl(String),
    #[error("cannot reach the proxy {0}")]
    Connect(String),
    #[error("the proxy refused the tunnel: {0}")]
    Refused(String),
}

/// An HTTP proxy. Its credentials never show in `Debug` or errors.
#[derive(Clone, PartialEq, Eq)]
pub struct Proxy {
    pub host: String,
    pub port: u16,
    /// `user:pass`, base64, for `Proxy-Authorization: Basic`.
    basic: Option<String>,
}

impl fmt::Debug for Proxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Proxy")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("auth", &self.basic.as_ref().map(|_| "…"))
            .finish()
    }
}

/// Percent-decoding of a URL's user or password (`%40` is `@`).
fn unescape(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

impl Proxy {
    /// `http://[user:pass@]host[:port][/]` (a bare `host:port` is taken as http too).
    pub fn parse(url: &str) -> Result<Proxy, ProxyError> {
        // The URL may hold a password: errors name only that it is bad.
        let bad = || ProxyError::BadUrl("(as given)".into());
        let rest = match url.split_once("://") {
            Some(("http", rest)) => rest,
            Some(_) => return Err(ProxyError::BadUrl("only http:// proxies".into())),
            None => url,
        };
        let rest = rest.trim_end_matches('/');
        if rest.contains('/') || rest.is_empty() {
            return Err(bad());
        }
        let (auth, hostport) = match rest.rsplit_once('@') {
            Some((auth, hostport)) => (Some(auth), hostport),
            None => (None, rest),
        };
        let basic = match auth {
            Some(auth) => {
                let (user, pass) = auth.split_once(':').unwrap_or((auth, ""));
                let plain = format!(
                    "{}:{}",
                    unescape(user).ok_or_else(bad)?,
                    unescape(pass).ok_or_else(bad)?
                );
                Some(base64::engine::general_purpose::STANDARD.encode(plain))
            }
            None => None,
        };
        let (host, port) = match hostport.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => {
                (h, p.parse::<u16>().map_err(|_| bad())?)
            }
            _ => (hostport, 1080),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(bad());
        }
        Ok(Proxy {
            host: host.to_owned(),
            port,
            basic,
        })
    }

    /// The proxy to reach `host` through, from the environment: `HTTPS_PROXY` (or `https_proxy`)
    /// unless `NO_PROXY` (or `no_proxy`) names the host. `None`: connect directly.
    pub fn from_env_for(host: &str) -> Result<Option<Proxy>, ProxyError> {
        let var = |names: [&str; 2]| {
            names
                .iter()
                .find_map(|n| std::env::var(n).ok().filter(|v| !v.trim().is_empty()))
        };
        let Some(url) = var(["HTTPS_PROXY", "https_proxy"]) else {
            return Ok(None);
        };
        if var(["NO_PROXY", "no_proxy"]).is_some_and(|list| no_proxy_matches(&list, host)) {
            return Ok(None);
        }
        Proxy::parse(url.trim()).map(Some)
    }

    /// A TCP connection to `host:port` tunnelled through this proxy (`CONNECT`); what is sent on
    /// it next (the TLS handshake) goes to `host:port` unread by the proxy.
    pub async fn tunnel(&self, host: &str, port: u16) -> Result<TcpStream, ProxyError> {
        // The host goes into the request line: nothing that could end it or add a header.
        if host.is_empty() || host.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(ProxyError::BadUrl(format!("bad server host {host:?}")));
        }
        let mut tcp = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|e| ProxyError::Connect(format!("{}:{}: {e}", self.host, self.port)))?;
        let _ = tcp.set_nodelay(true);
        let target = if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        let mut request = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n");
        if let Some(basic) = &self.basic {
            request.push_str(&format!("Proxy-Authorization: Basic {basic}\r\n"));
        }
        request.push_str("\r\n");
        let lost =
            |e: std::io::Error| ProxyError::Connect(format!("{}:{}: {e}", self.host, self.port));
        tcp.write_all(request.as_bytes()).await.map_err(lost)?;
        // Read the answer's head byte by byte: what follows it is the tunnel's, not ours.
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            if head.len() >= MAX_CONNECT_ANSWER {
                return Err(ProxyError::Refused("answer too long".into()));
            }
            let mut byte = [0u8; 1];
            if tcp.read(&mut byte).await.map_err(lost)? == 0 {
                return Err(ProxyError::Refused("closed before answering".into()));
            }
            head.push(byte[0]);
        }
        let status_line = String::from_utf8_lossy(&head)
            .lines()
            .next()
            .unwrap_or_default()
            .to_owned();
        match status_line.split(' ').nth(1) {
            Some(code) if code.starts_with('2') => Ok(tcp),
            _ => Err(ProxyError::Refused(status_line)),
        }
    }
}

/// Whether a `NO_PROXY` list names `host`.
pub fn no_proxy_matches(list: &str, host: &str) -> bool {
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_ascii_lowercase();
    list.split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .any(|entry| {
            let entry = entry.to_ascii_lowercase();
            // A port in the entry is ignored (the client connects to one port per host).
            let entry = match entry.rsplit_once(':') {
                Some((h, p)) if p.parse::<u16>().is_ok() && !h.contains(':') => h.to_owned(),
                _ => entry,
            };
            let domain = entry.trim_start_matches('.').trim_start_matches("*.");
            entry == "*" || host == domain || host.ends_with(&format!(".{domain}"))
        })
}

/// A TCP connection to `host:port`: through `proxy` when there is one, else directly.
pub async fn dial(host: &str, port: u16, proxy: Option<&Proxy>) -> Result<TcpStream, String> {
    match proxy {
        Some(p) => p.tunnel(host, port).await.map_err(|e| e.to_string()),
        None => {
            let tcp = TcpStream::connect((host, port))
                .await
                .map_err(|e| format!("{host}:{port}: {e}"))?;
            let _ = tcp.set_nodelay(true);
            Ok(tcp)
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn proxy_urls_parse_with_and_without_credentials() {
        let p = Proxy::parse("http://proxy.example:3128/").unwrap();
        assert_eq!(
            (p.host.as_str(), p.port, p.basic.is_none()),
            ("proxy.example", 3128, true)
        );
        assert_eq!(Proxy::parse("proxy.example").unwrap().port, 1080);
        let p = Proxy::parse("http://ann:s%40cret@127.0.0.1:8888").unwrap();
        assert_eq!(p.host, "127.0.0.1");
        let plain = base64::engine::general_purpose::STANDARD
            .decode(p.basic.as_ref().unwrap())
            .unwrap();
        assert_eq!(plain, b"ann:s@cret");
        assert!(!format!("{p:?}").contains("cret"));
        assert!(Proxy::parse("https://proxy:1").is_err());
        assert!(Proxy::parse("http://proxy:1/path").is_err());
        assert!(Proxy::parse("http://ann:pw@proxy:99999").is_err());
        let err = Proxy::parse("http://ann:hunter2@proxy:x")
            .unwrap_err()
            .to_string();
        assert!(!err.contains("hunter2"), "{err}");
        assert_eq!(Proxy::parse("http://[::1]:3128").unwrap().host, "::1");
    }

    #[tokio::test]
    async fn a_host_that_would_break_the_connect_line_is_refused_before_connecting() {
        // Port 9 on loopback: nothing is sent, so nothing needs to listen there.
        let p = Proxy::parse("http://127.0.0.1:9").unwrap();
        let err = p.tunnel("evil\r\nX-Injected: 1", 443).await.unwrap_err();
        assert!(matches!(err, ProxyError::BadUrl(_)), "{err}");
    }

    #[test]
    fn no_proxy_names_hosts_domains_addresses_and_everything() {
        let list = "localhost, .internal.example,example.org:443, 10.0.0.7";
        assert!(no_proxy_matches(list, "localhost"));
        assert!(no_proxy_matches(list, "a.internal.example"));
        assert!(no_proxy_matches(list, "internal.example"));
        assert!(no_proxy_matches(list, "example.org"));
        assert!(no_proxy_matches(list, "www.example.org"));
        assert!(no_proxy_matches(list, "10.0.0.7"));
        assert!(!no_proxy_matches(list, "notexample.org"));
        assert!(!no_proxy_matches(list, "10.0.0.70"));
        assert!(no_proxy_matches("*", "anything"));
        assert!(!no_proxy_matches("", "anything"));
    }
}
