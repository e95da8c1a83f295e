//! `trust.pem`: the server's TLS certificate and its auth public key, both pinned; and the TLS
//! configuration that accepts exactly that certificate over TLS 1.3.

use std::path::Path;
use std::sync::Arc;

use base64::Engine as _;
use rustls::DigitallySignedStruct;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};

#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error("cannot read trust file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("trust file must hold a CERTIFICATE block then a PUBLIC KEY block")]
    Format,
}

/// The pinned server identity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Trust {
    pub cert_der: Vec<u8>,
    pub auth_spki_der: Vec<u8>,
}

fn pem_blocks(text: &str) -> Vec<(String, Vec<u8>)> {
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

impl Trust {
    pub fn from_pem(text: &str) -> Result<Trust, TrustError> {
        let blocks = pem_blocks(text);
        let cert = blocks.iter().find(|(l, _)| l == "CERTIFICATE");
        let key = blocks.iter().find(|(l, _)| l == "PUBLIC KEY");
        match (cert, key) {
            (Some(c), Some(k)) => Ok(Trust {
                cert_der: c.1.clone(),
                auth_spki_der: k.1.clone(),
            }),
            _ => Err(TrustError::Format),
        }
    }

    pub fn from_file(path: &Path) -> Result<Trust, TrustError> {
        let text = std::fs::read_to_string(path).map_err(|source| TrustError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Trust::from_pem(&text)
    }

    /// A TLS 1.3-only client configuration that accepts only the pinned certificate.
    pub fn client_config(&self, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let verifier = Arc::new(PinnedCert {
            cert_der: self.cert_der.clone(),
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
}

#[allow(clippy::panic)]
fn unreachable_tls13() -> rustls::ConfigBuilder<rustls::ClientConfig, rustls::WantsVerifier> {
    panic!("the aws-lc-rs provider supports TLS 1.3")
}

/// Accepts exactly one certificate (byte for byte) and checks the handshake signature with it.
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
    use super::*;

    #[test]
    fn trust_files_need_both_blocks() {
        let cert = "-----BEGIN CERTIFICATE-----\nAQID\n-----END CERTIFICATE-----\n";
        let key = "-----BEGIN PUBLIC KEY-----\nBAUG\n-----END PUBLIC KEY-----\n";
        let t = Trust::from_pem(&format!("{cert}{key}")).unwrap();
        assert_eq!(t.cert_der, vec![1, 2, 3]);
        assert_eq!(t.auth_spki_der, vec![4, 5, 6]);
        assert!(Trust::from_pem(cert).is_err());
        assert!(Trust::from_pem("garbage").is_err());
    }
}
