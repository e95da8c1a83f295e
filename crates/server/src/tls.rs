//! The server's TLS identity: a self-signed certificate made on first start, `trust.pem` for
//! clients to pin, and a TLS 1.3-only rustls configuration.

use std::fs;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use stampline_psd::Psd;
use zeroize::Zeroizing;

/// The wrapping context of the TLS private key.
const TLS_KEY_CONTEXT: &[u8] = b"stampline/v1/tls-key";

/// What the TLS layer needs, read from or written to the data dir.
pub struct TlsIdentity {
    pub cert_der: Vec<u8>,
    key_der: Zeroizing<Vec<u8>>,
    pub trust_path: PathBuf,
}

impl std::fmt::Debug for TlsIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsIdentity")
            .field("trust_path", &self.trust_path)
            .finish_non_exhaustive()
    }
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
    /// The private key is kept wrapped by the crypto device (`tls/key.wrapped`), never in the
    /// clear; a plaintext `tls/key.p8` from an older version is wrapped and removed.
    /// Always (re)writes `DIR/trust.pem`: the certificate, then the auth public key.
    pub fn load_or_create(
        data_dir: &Path,
        hostnames: &[String],
        psd: &dyn Psd,
    ) -> anyhow::Result<TlsIdentity> {
        let dir = data_dir.join("tls");
        fs::create_dir_all(&dir)?;
        let cert_path = dir.join("cert.der");
        let key_path = dir.join("key.wrapped");
        let legacy_key_path = dir.join("key.p8");
        if cert_path.exists() && legacy_key_path.exists() && !key_path.exists() {
            let key = Zeroizing::new(fs::read(&legacy_key_path)?);
            write_file(&key_path, &psd.wrap_secret(&key, TLS_KEY_CONTEXT)?, true)?;
            fs::remove_file(&legacy_key_path)?;
        }
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
            let key_der = Zeroizing::new(key.serialize_der());
            write_file(
                &key_path,
                &psd.wrap_secret(&key_der, TLS_KEY_CONTEXT)?,
                true,
            )?;
            write_file(&cert_path, cert.der(), false)?;
        }
        let cert_der = fs::read(&cert_path)?;
        let key_der = psd
            .unwrap_secret(&fs::read(&key_path)?, TLS_KEY_CONTEXT)
            .map_err(|e| anyhow::anyhow!("TLS key ({}): {e}", key_path.display()))?;
        let trust_path = data_dir.join("trust.pem");
        let trust = format!(
            "{}{}",
            pem("CERTIFICATE", &cert_der),
            pem("PUBLIC KEY", &psd.auth_public_key())
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
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_der.to_vec())),
            )?;
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(cfg))
    }
}
