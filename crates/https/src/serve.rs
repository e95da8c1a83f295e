//! The serving half: a self-signed TLS identity kept in a data dir, the `trust.pem` callers pin,
//! and an accept loop that does each TLS handshake in its connection's own task.

use std::fs;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::OwnedSemaphorePermit;

use crate::pinned::pem;

/// How long a caller may take to finish the TLS handshake and send its headers.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Most connections served at once by default; more wait in the kernel's backlog.
pub const MAX_CONNECTIONS: usize = 1_000;

/// A certificate and its key, read from or written to `DIR/tls/`.
#[derive(Debug)]
pub struct Identity {
    pub cert_der: Vec<u8>,
    key_der: Vec<u8>,
    pub trust_path: PathBuf,
}

/// Writes `bytes` to `path` whole or not at all: a fresh temporary file, fsynced, renamed over
/// it, then the directory fsynced (mode 0600 when `private`). A temporary file left by a crash is
/// removed first: reopening it would keep whatever mode it had.
pub fn write_file(path: &Path, bytes: &[u8], private: bool) -> std::io::Result<()> {
    use std::io::Write as _;
    let tmp = path.with_extension("tmp");
    match fs::remove_file(&tmp) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let mut opts = fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::OpenOptionsExt as _;
        opts.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = private;
    let mut f = opts.open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    fs::rename(tmp, path)?;
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::File::open(parent)?.sync_all()?;
    }
    Ok(())
}

/// A new self-signed certificate for `localhost`, 127.0.0.1 and `hostnames`, named
/// `common_name`: its DER and its key's PKCS#8 DER (the caller decides how the key is kept).
pub fn self_signed(
    common_name: &str,
    hostnames: &[String],
) -> Result<(Vec<u8>, Vec<u8>), rcgen::Error> {
    let mut names = vec!["localhost".to_string()];
    names.extend(hostnames.iter().cloned());
    let mut params = rcgen::CertificateParams::new(names)?;
    params
        .subject_alt_names
        .push(rcgen::SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, common_name);
    let key = rcgen::KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    Ok((cert.der().to_vec(), key.serialize_der()))
}

/// A rustls server configuration for one certificate: TLS 1.3 only, aws-lc-rs (the one
/// provider), ALPN http/1.1.
pub fn tls13_server_config(
    cert_der: &[u8],
    key_der: &[u8],
) -> Result<Arc<rustls::ServerConfig>, rustls::Error> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from(cert_der.to_vec())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key_der.to_vec())),
        )?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("TLS identity in {dir}: {detail}")]
    Failed { dir: String, detail: String },
}

impl Identity {
    /// Load `DIR/tls/`, or make a self-signed certificate for 127.0.0.1 and localhost named
    /// `common_name`. Always (re)writes `DIR/trust.pem` with the certificate.
    pub fn load_or_create(data_dir: &Path, common_name: &str) -> Result<Identity, IdentityError> {
        let fail = |detail: String| IdentityError::Failed {
            dir: data_dir.display().to_string(),
            detail,
        };
        let dir = data_dir.join("tls");
        fs::create_dir_all(&dir).map_err(|e| fail(e.to_string()))?;
        let cert_path = dir.join("cert.der");
        let key_path = dir.join("key.p8");
        if !cert_path.exists() || !key_path.exists() {
            let (cert, key) = self_signed(common_name, &[]).map_err(|e| fail(e.to_string()))?;
            write_file(&key_path, &key, true).map_err(|e| fail(e.to_string()))?;
            write_file(&cert_path, &cert, false).map_err(|e| fail(e.to_string()))?;
        }
        let cert_der = fs::read(&cert_path).map_err(|e| fail(e.to_string()))?;
        let key_der = fs::read(&key_path).map_err(|e| fail(e.to_string()))?;
        let trust_path = data_dir.join("trust.pem");
        write_file(&trust_path, pem("CERTIFICATE", &cert_der).as_bytes(), false)
            .map_err(|e| fail(e.to_string()))?;
        Ok(Identity {
            cert_der,
            key_der,
            trust_path,
        })
    }

    /// TLS 1.3 only, aws-lc-rs, ALPN http/1.1.
    pub fn server_config(&self) -> Result<Arc<rustls::ServerConfig>, rustls::Error> {
        tls13_server_config(&self.cert_der, &self.key_der)
    }
}

/// How many connections an accept loop serves at once, and how long each may take to say who it
/// is. The server and the sandboxes differ only in these numbers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Most connections served at once; more wait in the kernel's backlog.
    pub max_connections: usize,
    /// How long a caller may take to finish the TLS handshake, and then to send its headers.
    pub handshake_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: MAX_CONNECTIONS,
            handshake_timeout: HANDSHAKE_TIMEOUT,
        }
    }
}

/// Serve `router` over TLS on `listener` until `shutdown` completes, with the default [`Limits`].
pub async fn serve(
    listener: TcpListener,
    router: axum::Router,
    tls: Arc<rustls::ServerConfig>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    serve_with(
        listener,
        tls,
        Limits::default(),
        |_| Some(router.clone()),
        shutdown,
    )
    .await
}

/// The accept loop: each accepted connection gets the router `router_for(peer)` makes for it
/// (the server tags it with the caller's address and its firewall ticket) or, when that is
/// `None`, is closed at once; its TLS handshake in its own task (a slow caller stalls nobody),
/// HTTP/1.1 with upgrades (the server's WebSocket link), and at most `limits.max_connections` at
/// once. The handshake timeout also bounds each request's headers and an idle kept-alive
/// connection. Returns when `shutdown` completes; connections already accepted finish on their
/// own.
pub async fn serve_with(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    limits: Limits,
    router_for: impl Fn(SocketAddr) -> Option<axum::Router>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let timeout = limits.handshake_timeout;
    let serve = |tcp: TcpStream, peer: SocketAddr, permit: OwnedSemaphorePermit| {
        let Some(service) = router_for(peer) else {
            return;
        };
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let _ = tcp.set_nodelay(true);
            let tls = match tokio::time::timeout(timeout, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => return,
            };
            let service = hyper_util::service::TowerToHyperService::new(service);
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(timeout)
                .serve_connection(TokioIo::new(tls), service)
                .with_upgrades();
            if let Err(e) = conn.await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    };
    accept_loop(listener, limits.max_connections, serve, shutdown).await
}

/// The accept loop every listener here shares: at most `max_connections` connections at once
/// (the next waits in the kernel's backlog until one ends), a failed accept (out of file
/// descriptors, say) backs off 50 ms instead of spinning. `serve` gets each connection with its
/// place, to hold until the connection ends. Returns when `shutdown` completes.
pub async fn accept_loop(
    listener: TcpListener,
    max_connections: usize,
    mut serve: impl FnMut(TcpStream, SocketAddr, OwnedSemaphorePermit),
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let permits = Arc::new(tokio::sync::Semaphore::new(max_connections));
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            _ = &mut shutdown => break,
            p = Arc::clone(&permits).acquire_owned() => p.map_err(std::io::Error::other)?,
        };
        let (tcp, peer) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        serve(tcp, peer, permit);
    }
    Ok(())
}

#[cfg(all(test, unix))]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    #[test]
    fn a_private_file_is_0600_even_over_a_stale_world_readable_temporary_file() {
        let dir = std::env::temp_dir().join(format!("stampline-write-file-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("key.p8");
        let tmp = path.with_extension("tmp");
        fs::write(&tmp, b"left by a crash").unwrap();
        fs::set_permissions(&tmp, fs::Permissions::from_mode(0o644)).unwrap();
        write_file(&path, b"secret", true).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(fs::read(&path).unwrap(), b"secret");
        assert!(!tmp.exists());
        fs::remove_dir_all(&dir).unwrap();
    }
}

#[cfg(test)]
mod accept_loop_tests {
    use std::sync::Mutex;

    use rustls::pki_types::ServerName;
    use tokio::net::TcpStream;

    use super::*;
    use crate::pinned_client_config;

    async fn handshake(
        addr: SocketAddr,
        cert: &[u8],
    ) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
        let connector =
            tokio_rustls::TlsConnector::from(pinned_client_config(cert, &[b"http/1.1"]));
        let tcp = TcpStream::connect(addr).await?;
        let name = ServerName::try_from("localhost").map_err(std::io::Error::other)?;
        connector.connect(name, tcp).await
    }

    #[tokio::test]
    async fn the_loop_serves_no_more_connections_than_its_limit_and_names_each_peer() {
        let (cert, key) = self_signed("accept-loop-test", &[]).unwrap();
        let tls = tls13_server_config(&cert, &key).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let peers = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&peers);
        let limits = Limits {
            max_connections: 1,
            handshake_timeout: Duration::from_secs(5),
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve_with(
            listener,
            tls,
            limits,
            move |peer| {
                seen.lock().unwrap().push(peer);
                Some(axum::Router::new())
            },
            async {
                let _ = stopped.await;
            },
        ));

        let first = handshake(addr, &cert).await.unwrap();
        let first_addr = first.get_ref().0.local_addr().unwrap();
        assert_eq!(*peers.lock().unwrap(), vec![first_addr]);

        // The only permit is held by the first connection: the second is not even accepted.
        let second = tokio::spawn({
            let cert = cert.clone();
            async move { handshake(addr, &cert).await }
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!second.is_finished(), "a second connection was served");
        assert_eq!(peers.lock().unwrap().len(), 1);

        // Once the first goes, the second is served.
        drop(first);
        let second = tokio::time::timeout(Duration::from_secs(5), second)
            .await
            .expect("the second connection is served once the first ends")
            .unwrap()
            .unwrap();
        let second_addr = second.get_ref().0.local_addr().unwrap();
        assert_eq!(*peers.lock().unwrap(), vec![first_addr, second_addr]);

        stop.send(()).unwrap();
        server.await.unwrap().unwrap();
    }
}
