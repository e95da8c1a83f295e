//! The server and its crypto device: a data dir from before encryption at rest (plaintext device
//! keys and TLS key) is migrated at start and keeps its identity; no plaintext key remains.

#![allow(clippy::unwrap_used)]

use aws_lc_rs::encoding::AsDer as _;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _};
use stampline_items::KeyId;
use stampline_server::{Server, ServerConfig};

#[test]
fn a_plaintext_data_dir_is_migrated_and_keeps_its_keys_and_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let psd = data.join("psd");
    let tls = data.join("tls");
    std::fs::create_dir_all(&psd).unwrap();
    std::fs::create_dir_all(&tls).unwrap();
    let rng = aws_lc_rs::rand::SystemRandom::new();
    let auth = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
    let sign = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
    let spki = |doc: &[u8]| {
        EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, doc)
            .unwrap()
            .public_key()
            .as_der()
            .unwrap()
            .as_ref()
            .to_vec()
    };
    let sign_id = KeyId::of_spki(&spki(sign.as_ref()));
    std::fs::write(psd.join("auth-key.p8"), auth.as_ref()).unwrap();
    std::fs::write(psd.join("wrap.key"), [7u8; 32]).unwrap();
    std::fs::write(psd.join("seal.key"), [8u8; 32]).unwrap();
    std::fs::write(psd.join(format!("sign-{sign_id}.p8")), sign.as_ref()).unwrap();
    std::fs::write(psd.join("signing-keys.txt"), format!("{sign_id} 100 -\n")).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    std::fs::write(tls.join("key.p8"), key.serialize_der()).unwrap();
    std::fs::write(tls.join("cert.der"), cert.der()).unwrap();

    let server = Server::open(ServerConfig::new(data.clone())).unwrap();
    assert_eq!(server.core().psd().auth_public_key(), spki(auth.as_ref()));
    assert_eq!(server.core().psd().current_signing_key(), sign_id);
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
    assert_eq!(again.core().psd().current_signing_key(), sign_id);
}
