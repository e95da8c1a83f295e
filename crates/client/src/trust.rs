//! `trust.pem`: the server's TLS certificate and its auth public key, both pinned; and the TLS
//! configuration that accepts exactly that certificate over TLS 1.3.

use std::path::Path;
use std::sync::Arc;

use stampline_https::pem_blocks;

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
        stampline_https::pinned_client_config(&self.cert_der, alpn)
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
