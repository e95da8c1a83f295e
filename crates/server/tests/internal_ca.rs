//! The internal CA over real TLS: a gateway with issued credentials reaches the core and is
//! admitted by name; a client without a certificate, a certificate from another CA, a revoked or
//! unknown certificate are refused; the gateway refuses a core from another CA; the credentials
//! directory is private.

#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use rustls::pki_types::{CertificateDer, ServerName};
use stampline_psd::{Passphrase, SoftwarePsd};
use stampline_server::internal_ca::{
    CORE_SERVER_NAME, GatewayCredentials, GatewayRefusal, GatewayRegistry, INTERNAL_ALPN,
    InternalCa, InternalCaError,
};
use stampline_server::tls::TlsIdentity;
use tokio::net::{TcpListener, TcpStream};

/// A core's data dir: its device, public TLS identity and internal CA.
struct Core {
    _tmp: tempfile::TempDir,
    data: PathBuf,
    tls: TlsIdentity,
    ca: InternalCa,
}

impl Core {
    fn new() -> Core {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("data");
        stampline_server::data_dir::prepare(&data).unwrap();
        let psd = SoftwarePsd::open(&data, Passphrase::Dev, 1).unwrap();
        let tls = TlsIdentity::load_or_create(&data, &[], &psd).unwrap();
        let ca = InternalCa::load_or_create(&data, &psd).unwrap();
        Core {
            _tmp: tmp,
            data,
            tls,
            ca,
        }
    }

    /// Issue gateway `name` into a fresh directory beside the data dir.
    fn issue(&self, name: &str) -> (PathBuf, GatewayCredentials) {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let out = self.data.with_file_name(format!("gw-{name}-{n}"));
        self.ca
            .issue_gateway(&self.tls, &self.tls.trust_path, name, &out)
            .unwrap();
        let creds = GatewayCredentials::load(&out).unwrap();
        (out, creds)
    }
}

/// The core's listener on loopback, accepting one connection: the client's certificates, or
/// the handshake's error.
async fn core_once(
    config: Arc<rustls::ServerConfig>,
) -> (
    SocketAddr,
    tokio::task::JoinHandle<Result<Vec<CertificateDer<'static>>, String>>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let task = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let tls = acceptor.accept(tcp).await.map_err(|e| e.to_string())?;
        let (_, conn) = tls.get_ref();
        assert_eq!(conn.alpn_protocol(), Some(INTERNAL_ALPN));
        Ok(conn
            .peer_certificates()
            .map(|c| c.iter().map(|c| c.clone().into_owned()).collect())
            .unwrap_or_default())
    });
    (addr, task)
}

/// Dial the core as `CORE_SERVER_NAME` with `config`.
async fn dial(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from(CORE_SERVER_NAME).unwrap();
    tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
}

async fn core_result(
    task: tokio::task::JoinHandle<Result<Vec<CertificateDer<'static>>, String>>,
) -> Result<Vec<CertificateDer<'static>>, String> {
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("the core's handshake ends")
        .unwrap()
}

#[tokio::test]
async fn an_issued_gateway_reaches_the_core_and_is_admitted_by_name() {
    let core = Core::new();
    let (_, gw) = core.issue("edge-1");
    assert_eq!(gw.name, "edge-1");
    let (addr, task) = core_once(core.ca.core_server_config().unwrap()).await;
    let client = dial(addr, gw.core_client_config().unwrap()).await.unwrap();
    assert_eq!(client.get_ref().1.alpn_protocol(), Some(INTERNAL_ALPN));
    assert_eq!(
        client.get_ref().1.peer_certificates().unwrap()[0].as_ref(),
        core.ca.core_cert_der()
    );
    let certs = core_result(task).await.unwrap();
    assert_eq!(certs.len(), 1);
    assert_eq!(certs[0].as_ref(), gw.cert_der());
    let registry = GatewayRegistry::load(&core.data).unwrap();
    assert_eq!(registry.admit(&certs[0]), Ok("edge-1".to_string()));
    assert_eq!(registry.list().len(), 1);
    assert_eq!(registry.list()[0].name, "edge-1");
}

#[tokio::test]
async fn a_client_without_a_certificate_is_refused() {
    let core = Core::new();
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from(core.ca.ca_cert_der().to_vec()))
        .unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![INTERNAL_ALPN.to_vec()];
    let (addr, task) = core_once(core.ca.core_server_config().unwrap()).await;
    // In TLS 1.3 the client may finish before the core has read its (empty) certificate: the
    // refusal is the core's.
    let _client = dial(addr, Arc::new(cfg)).await;
    let err = core_result(task).await.unwrap_err();
    assert!(err.contains("no certificate"), "{err}");
}

#[tokio::test]
async fn a_gateway_certificate_from_another_ca_is_refused() {
    let core = Core::new();
    let other = Core::new();
    let (out, stranger) = other.issue("edge-1");
    // A client that trusts this core (so the refusal is the core's), presenting the other CA's
    // gateway certificate and its key.
    let text = std::fs::read_to_string(out.join("gateway-key.pem")).unwrap();
    let key = stampline_https::pem_blocks(&text).remove(0).1;
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from(core.ca.ca_cert_der().to_vec()))
        .unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(
            vec![CertificateDer::from(stranger.cert_der().to_vec())],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.into()),
        )
        .unwrap();
    cfg.alpn_protocols = vec![INTERNAL_ALPN.to_vec()];
    let (addr, task) = core_once(core.ca.core_server_config().unwrap()).await;
    let _ = dial(addr, Arc::new(cfg)).await;
    let err = core_result(task).await.unwrap_err();
    assert!(err.contains("UnknownIssuer"), "{err}");
    // Nor would the allow-list know it.
    let registry = GatewayRegistry::load(&core.data).unwrap();
    assert_eq!(
        registry.admit(stranger.cert_der()),
        Err(GatewayRefusal::Unknown)
    );
}

#[tokio::test]
async fn the_gateway_refuses_a_core_of_another_ca() {
    let core = Core::new();
    let other = Core::new();
    let (_, gw) = core.issue("edge-1");
    let (addr, task) = core_once(other.ca.core_server_config().unwrap()).await;
    let err = dial(addr, gw.core_client_config().unwrap())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("UnknownIssuer"), "{err}");
    assert!(core_result(task).await.is_err());
}

#[tokio::test]
async fn a_gateway_certificate_cannot_serve_as_the_core() {
    // clientAuth only: a stolen gateway credential cannot impersonate the core to other gateways.
    let core = Core::new();
    let (out, gw) = core.issue("edge-1");
    let (_, gw2) = core.issue("edge-2");
    let text = std::fs::read_to_string(out.join("gateway-key.pem")).unwrap();
    let key = stampline_https::pem_blocks(&text).remove(0).1;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from(gw.cert_der().to_vec())],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.into()),
        )
        .unwrap();
    cfg.alpn_protocols = vec![INTERNAL_ALPN.to_vec()];
    let (addr, _task) = core_once(Arc::new(cfg)).await;
    let err = dial(addr, gw2.core_client_config().unwrap())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("extended key usage"), "{err}");
}

#[test]
fn revoked_and_unknown_certificates_are_refused_by_the_registry() {
    let core = Core::new();
    let (_, gw) = core.issue("edge-1");
    let (_, gw2) = core.issue("edge-2");
    let registry = GatewayRegistry::load(&core.data).unwrap();
    assert_eq!(registry.admit(gw.cert_der()), Ok("edge-1".into()));
    assert_eq!(
        registry.admit(core.ca.core_cert_der()),
        Err(GatewayRefusal::Unknown)
    );

    let revoked = GatewayRegistry::revoke(&core.data, "edge-1", 42).unwrap();
    assert_eq!(revoked.len(), 1);
    assert_eq!(revoked[0].revoked_at_ms, Some(42));
    let registry = GatewayRegistry::load(&core.data).unwrap();
    assert_eq!(
        registry.admit(gw.cert_der()),
        Err(GatewayRefusal::Revoked {
            name: "edge-1".into()
        })
    );
    assert_eq!(registry.admit(gw2.cert_der()), Ok("edge-2".into()));

    // Revoking again: nothing left to revoke.
    let err = GatewayRegistry::revoke(&core.data, "edge-1", 43).unwrap_err();
    assert!(matches!(
        err.downcast_ref::<InternalCaError>(),
        Some(InternalCaError::NoSuchGateway(_))
    ));
    // Once revoked, the name may be issued again; the old certificate stays refused.
    let (_, again) = core.issue("edge-1");
    let registry = GatewayRegistry::load(&core.data).unwrap();
    assert_eq!(registry.admit(again.cert_der()), Ok("edge-1".into()));
    assert!(registry.admit(gw.cert_der()).is_err());
    assert_eq!(registry.list().len(), 3);
}

#[test]
fn issuing_refuses_bad_names_live_names_and_used_directories() {
    let core = Core::new();
    let code = |name: &str, out: &Path| {
        let err = core
            .ca
            .issue_gateway(&core.tls, &core.tls.trust_path, name, out)
            .unwrap_err();
        err.downcast_ref::<InternalCaError>().unwrap().code()
    };
    let fresh = core.data.with_file_name("fresh");
    for bad in ["", "Edge", "edge_1", "edge.1", "../x", &"a".repeat(65)] {
        assert_eq!(code(bad, &fresh), "bad_name", "{bad:?}");
    }
    assert!(!fresh.exists());
    let (out, _) = core.issue("edge-1");
    assert_eq!(code("edge-1", &fresh), "gateway_exists");
    assert_eq!(code("edge-2", &out), "credentials_exist");
    let busy = core.data.with_file_name("busy");
    std::fs::create_dir_all(&busy).unwrap();
    std::fs::write(busy.join("notes.txt"), b"x").unwrap();
    assert_eq!(code("edge-2", &busy), "out_not_empty");
    assert_eq!(GatewayRegistry::load(&core.data).unwrap().list().len(), 1);
}

#[cfg(unix)]
#[test]
fn the_credentials_directory_is_private_and_holds_what_the_gateway_serves() {
    use std::os::unix::fs::PermissionsExt as _;
    let core = Core::new();
    let (out, gw) = core.issue("edge-1");
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&out), 0o700);
    let mut names: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "ca.pem",
            "gateway-key.pem",
            "gateway.json",
            "gateway.pem",
            "public-cert.der",
            "public-key.p8",
            "trust.pem"
        ]
    );
    for n in &names {
        assert_eq!(mode(&out.join(n)), 0o600, "{n}");
    }
    assert_eq!(
        std::fs::read(out.join("public-cert.der")).unwrap(),
        core.tls.cert_der
    );
    assert_eq!(
        std::fs::read(gw.trust_path()).unwrap(),
        std::fs::read(&core.tls.trust_path).unwrap()
    );
    // The public listener serves the certificate clients pin.
    gw.public_server_config().unwrap();
    // The internal directory is private too.
    let internal = core.data.join("internal");
    assert_eq!(mode(&internal), 0o700);
    for e in std::fs::read_dir(&internal).unwrap() {
        assert_eq!(mode(&e.unwrap().path()), 0o600);
    }
}

#[test]
fn the_ca_is_made_once_and_loaded_after() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    stampline_server::data_dir::prepare(&data).unwrap();
    let psd = SoftwarePsd::open(&data, Passphrase::Dev, 1).unwrap();
    let a = InternalCa::load_or_create(&data, &psd).unwrap();
    let b = InternalCa::load_or_create(&data, &psd).unwrap();
    assert_eq!(a.ca_cert_der(), b.ca_cert_der());
    assert_eq!(a.core_cert_der(), b.core_cert_der());
    // No key material in its Debug.
    let debug = format!("{a:?}");
    assert!(!debug.to_lowercase().contains("key"), "{debug}");
}

#[test]
fn missing_credentials_name_the_missing_file() {
    let core = Core::new();
    let (out, _) = core.issue("edge-1");
    std::fs::remove_file(out.join("gateway-key.pem")).unwrap();
    let err = GatewayCredentials::load(&out).unwrap_err().to_string();
    assert!(err.contains("gateway-key.pem"), "{err}");
}
