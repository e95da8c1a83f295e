//! PEM helpers and the verifier that accepts exactly one certificate.

use std::path::Path;
use std::sync::Arc;

use base64::Engine as _;
use rustls::DigitallySignedStruct;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};

#[derive(Debug, thiserror::Error)]
pub enum PinError {
    #[error("cannot read trust file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("trust file {0} holds no CERTIFICATE block")]
    NoCertificate(String),
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

/// Every well-formed PEM block in `text`: (label, DER). Malformed blocks are skipped.
pub fn pem_blocks(text: &str) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut label: Option<String> = None;
    let mut body = String::new();
    for line in text.lines() {
        let line = line.trim();
        if let Some(rest) = line.strip_prefix("-----BEGIN ") {
            label = rest.strip_suffix("-----").map(str::to_owned);
            body.clear();
        } else if line.starts_with("-----END ") {
            if let Some(l) = label.take()
                && let Ok(der) = base64::engine::general_purpose::STANDARD.decode(body.as_bytes())
            {
                out.push((l, der));
            }
        } else if label.is_some() {
            body.push_str(line);
        }
    }
    out
}

/// The first CERTIFICATE block of a trust file (other blocks are ignored).
pub fn read_pinned_cert(path: &Path) -> Result<Vec<u8>, PinError> {
    let text = std::fs::read_to_string(path).map_err(|source| PinError::Read {
        path: path.display().to_string(),
        source,
    })?;
    pem_blocks(&text)
        .into_iter()
        .find(|(l, _)| l == "CERTIFICATE")
        .map(|(_, der)| der)
        .ok_or_else(|| PinError::NoCertificate(path.display().to_string()))
}

/// A TLS 1.3-only client configuration (aws-lc-rs) that accepts only `cert_der`, byte for byte,
/// and checks the handshake signature with it.
pub fn pinned_client_config(cert_der: &[u8], alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let verifier = Arc::new(PinnedCert {
        cert_der: cert_der.to_vec(),
        provider: Arc::clone(&provider),
    });
    // TLS 1.3 is supported by the aws-lc-rs provider, so this cannot fail.
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap_or_else(|_| unreachable_tls13());
    let mut cfg = builder
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(cfg)
}

#[allow(clippy::panic)]
fn unreachable_tls13() -> rustls::ConfigBuilder<rustls::ClientConfig, rustls::WantsVerifier> {
    panic!("the aws-lc-rs provider supports TLS 1.3")
}

#[derive(Debug)]
struct PinnedCert {
    cert_der: Vec<u8>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinnedCert {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if end_entity.as_ref() == self.cert_der.as_slice() {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(
                "server certificate does not match the pinned trust file".into(),
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("TLS 1.2 is not allowed".into()))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_trust_file_with_only_a_certificate_is_enough_to_pin() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("trust.pem");
        std::fs::write(&path, pem("CERTIFICATE", &[1, 2, 3])).unwrap();
        assert_eq!(read_pinned_cert(&path).unwrap(), vec![1, 2, 3]);
        std::fs::write(&path, pem("PUBLIC KEY", &[4])).unwrap();
        assert!(matches!(
            read_pinned_cert(&path),
            Err(PinError::NoCertificate(_))
        ));
    }
}
