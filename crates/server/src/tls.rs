//! The server's TLS identity: a self-signed certificate made on first start, `trust.pem` for
//! clients to pin, and a TLS 1.3-only rustls configuration.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use stampline_https::pem;
use stampline_https::serve::{self_signed, tls13_server_config, write_file};
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
        crate::data_dir::private_dir(&dir)?;
        let cert_path = dir.join("cert.der");
        let key_path = dir.join("key.wrapped");
        let legacy_key_path = dir.join("key.p8");
        if cert_path.exists() && legacy_key_path.exists() && !key_path.exists() {
            let key = Zeroizing::new(fs::read(&legacy_key_path)?);
            write_file(&key_path, &psd.wrap_secret(&key, TLS_KEY_CONTEXT)?, true)?;
            fs::remove_file(&legacy_key_path)?;
        }
        if !cert_path.exists() || !key_path.exists() {
            let (cert, key_der) = self_signed("Stampline server", hostnames)?;
            let key_der = Zeroizing::new(key_der);
            write_file(
                &key_path,
                &psd.wrap_secret(&key_der, TLS_KEY_CONTEXT)?,
                true,
            )?;
            write_file(&cert_path, &cert, true)?;
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
        // Public, but in the data dir, where every file is 0600: clients get a copy.
        write_file(&trust_path, trust.as_bytes(), true)?;
        Ok(TlsIdentity {
            cert_der,
            key_der,
            trust_path,
        })
    }

    /// The private key's PKCS#8 DER, for the internal CA to hand a gateway (which serves this
    /// same certificate) in its credentials.
    pub(crate) fn key_der(&self) -> &[u8] {
        &self.key_der
    }

    /// A rustls server configuration that speaks TLS 1.3 only, with the aws-lc-rs provider.
    pub fn server_config(&self) -> anyhow::Result<Arc<rustls::ServerConfig>> {
        Ok(tls13_server_config(&self.cert_der, &self.key_der)?)
    }
}
