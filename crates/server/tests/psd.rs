//! The server and its crypto device: a data dir from before encryption at rest (plaintext device
//! keys and TLS key) is migrated at start and keeps its identity; no plaintext key remains.

#![allow(clippy::unwrap_used)]

use stampline_psd::testkit::write_plaintext_layout;
use stampline_server::{Server, ServerConfig};

#[test]
fn a_plaintext_data_dir_is_migrated_and_keeps_its_keys_and_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let psd = data.join("psd");
    let tls = data.join("tls");
    std::fs::create_dir_all(&tls).unwrap();
    let old = write_plaintext_layout(&psd);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    std::fs::write(tls.join("key.p8"), key.serialize_der()).unwrap();
    std::fs::write(tls.join("cert.der"), cert.der()).unwrap();

    let server = Server::open(ServerConfig::new(data.clone())).unwrap();
    assert_eq!(server.core().psd().auth_public_key(), old.auth_spki);
    assert_eq!(server.core().psd().current_signing_key(), old.sign_id);
    assert!(server.psd_dev_mode());
    drop(server);
    assert!(!tls.join("key.p8").exists());
    assert!(tls.join("key.wrapped").exists());
    assert!(!psd.join("auth-key.p8").exists());
    assert_eq!(
        std::fs::read(tls.join("cert.der")).unwrap(),
        cert.der().to_vec()
    );
    let wrapped = std::fs::read(tls.join("key.wrapped")).unwrap();
    assert!(
        !wrapped.windows(16).any(|w| w == &key.serialize_der()[..16]),
        "the TLS key is not in the clear"
    );
    // And it opens again from the migrated layout.
    let again = Server::open(ServerConfig::new(data)).unwrap();
    assert_eq!(again.core().psd().current_signing_key(), old.sign_id);
}
