//! The server's TLS identity: a self-signed certificate made on first start, `trust.pem` for
//! clients to pin, and a TLS 1.3-only rustls configuration.

use std::fs;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// What the TLS layer needs, read from or written to the data dir.
#[derive(Debug)]
pub struct TlsIdentity {
    pub cert_der: Vec<u8>,
    key_der: Vec<u8>,
    pub trust_path: PathBuf,
}

/// PEM-encode DER bytes under `label` (64-character lines).
pub fn pem(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

fn write_file(path: &Path, bytes: &[u8], private: bool) -> std::io::Result<()> {
    use std::io::Write as _;
    let tmp = path.with_extension("tmp");
    let mut opts = fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
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
    fs::rename(tmp, path)
}

impl TlsIdentity {
    /// Load `DIR/tls/`, or make a new certificate for 127.0.0.1, localhost and `hostnames`.
    /// Always (re)writes `DIR/trust.pem`: the certificate, then the auth public key.
    pub fn load_or_create(
        data_dir: &Path,
        hostnames: &[String],
        auth_spki_der: &[u8],
    ) -> anyhow::Result<TlsIdentity> {
        let dir = data_dir.join("tls");
        fs::create_dir_all(&dir)?;
        let cert_path = dir.join("cert.der");
        let key_path = dir.join("key.p8");
        if !cert_path.exists() || !key_path.exists() {
            let mut names = vec!["localhost".to_string()];
            names.extend(hostnames.iter().cloned());
            let mut params = rcgen::CertificateParams::new(names)?;
            params
                .subject_alt_names
                .push(rcgen::SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, "Stampline server");
            let key = rcgen::KeyPair::generate()?;
            let cert = params.self_signed(&key)?;
            write_file(&key_path, &key.serialize_der(), true)?;
            write_file(&cert_path, cert.der(), false)?;
        }
        let cert_der = fs::read(&cert_path)?;
        let key_der = fs::read(&key_path)?;
        let trust_path = data_dir.join("trust.pem");
        let trust = format!(
            "{}{}",
            pem("CERTIFICATE", &cert_der),
            pem("PUBLIC KEY", auth_spki_der)
        );
        write_file(&trust_path, trust.as_bytes(), false)?;
        Ok(TlsIdentity {
            cert_der,
            key_der,
            trust_path,
        })
    }

    /// A rustls server configuration that speaks TLS 1.3 only, with the aws-lc-rs provider.
    pub fn server_config(&self) -> anyhow::Result<Arc<rustls::ServerConfig>> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_no_client_auth()
            .with_single_cert(
                vec![CertificateDer::from(self.cert_der.clone())],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_der.clone())),
            )?;
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(cfg))
    }
}
