//! The PKCS#11 device against SoftHSM2: keys generated in the token, sensitive and never
//! extractable; signing, wrapping, seals, rotation and revocation through the token.
//!
//! SoftHSM2 reads its configuration (`SOFTHSM2_CONF`) when the module is initialised, once per
//! process, and this crate may not set environment variables; so the test makes a throw-away
//! token (`stampline_psd::testkit`) and re-runs itself as a child process with `SOFTHSM2_CONF`
//! pointing at it.

#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::process::Command;

use stampline_psd::testkit::{softhsm_module, softhsm_token};
use stampline_psd::{Pkcs11Config, Pkcs11Psd, Psd, PsdError, verify_signature};
use zeroize::Zeroizing;

const CHILD: &str = "STAMPLINE_PKCS11_TEST_CHILD";
const PIN: &str = "1234";
const TOKEN: &str = "stampline-test";

/// Run `name` again in a child process with the token's config; true when this is the child.
fn in_child(name: &str) -> bool {
    if std::env::var_os(CHILD).is_some() {
        return true;
    }
    let dir = tempfile::tempdir().unwrap();
    let Some(conf) = softhsm_token(dir.path(), TOKEN, PIN) else {
        return false;
    };
    let out = Command::new(std::env::current_exe().unwrap())
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env("SOFTHSM2_CONF", &conf)
        .env(CHILD, dir.path().join("data"))
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "child failed:\n{text}");
    assert!(text.contains("1 passed"), "child ran no test:\n{text}");
    false
}

fn cfg(pin: &str) -> Pkcs11Config {
    Pkcs11Config {
        module: softhsm_module(),
        token: TOKEN.into(),
        pin: Zeroizing::new(pin.into()),
    }
}

fn data_dir() -> PathBuf {
    PathBuf::from(std::env::var_os(CHILD).unwrap())
}

#[test]
fn keys_live_in_the_token_sensitive_and_never_extractable() {
    if !in_child("keys_live_in_the_token_sensitive_and_never_extractable") {
        return;
    }
    let data = data_dir();
    let wrong = Pkcs11Psd::open(&data, &cfg("9999"), 1).unwrap_err();
    assert!(matches!(wrong, PsdError::Config(_)), "{wrong}");
    let mut other = cfg(PIN);
    other.token = "no-such-token".into();
    assert!(
        Pkcs11Psd::open(&data, &other, 1)
            .unwrap_err()
            .to_string()
            .contains("no-such-token")
    );

    let psd = Pkcs11Psd::open(&data, &cfg(PIN), 100).unwrap();
    let attrs = psd.key_attributes().unwrap();
    let labels: Vec<&str> = attrs.iter().map(|a| a.label.as_str()).collect();
    assert!(labels.contains(&"stampline-auth"), "{labels:?}");
    assert!(labels.contains(&"stampline-wrap"), "{labels:?}");
    assert!(labels.contains(&"stampline-seal"), "{labels:?}");
    let current = psd.current_signing_key();
    assert!(labels.contains(&format!("stampline-sign-{current}").as_str()));
    for a in &attrs {
        assert!(a.sensitive, "{a:?}");
        assert!(!a.extractable, "{a:?}");
        assert!(a.always_sensitive, "{a:?}");
        assert!(a.never_extractable, "{a:?}");
        assert!(a.local, "{a:?}");
        assert!(!a.value_readable, "{a:?}");
    }

    // Signing (hashed here, signed in the token), wrapping and seals.
    let key = psd.published_keys().pop().unwrap();
    let sig = psd.sign_item(current, b"payload").unwrap();
    assert!(verify_signature(&key.spki_der, b"payload", &sig));
    assert!(!verify_signature(&key.spki_der, b"payloaD", &sig));
    let auth_sig = psd.sign_auth(b"transcript").unwrap();
    assert!(verify_signature(
        &psd.auth_public_key(),
        b"transcript",
        &auth_sig
    ));
    let w = psd.wrap_user_key(&[4; 32], b"ann").unwrap();
    assert_eq!(w.len(), stampline_psd::WRAPPED_KEY_LEN);
    assert_eq!(*psd.unwrap_user_key(&w, b"ann").unwrap(), [4; 32]);
    assert!(psd.unwrap_user_key(&w, b"bob").is_err());
    assert_eq!(psd.seal(b"r").unwrap(), psd.seal(b"r").unwrap());

    // Rotation and revocation survive reopening the token.
    let r = psd.rotate_signing_key(200).unwrap();
    assert_eq!(r.old_key.key_id, current);
    assert!(matches!(
        psd.sign_item(current, b"x"),
        Err(PsdError::KeyRetired(_))
    ));
    let sig = psd.sign_item(r.new_key.key_id, b"x").unwrap();
    assert!(verify_signature(&r.new_key.spki_der, b"x", &sig));
    psd.revoke_signing_key(current, 300, "test revocation")
        .unwrap();
    let auth = psd.auth_public_key();
    drop(psd);
    let psd = Pkcs11Psd::open(&data, &cfg(PIN), 400).unwrap();
    assert_eq!(psd.auth_public_key(), auth);
    assert_eq!(psd.current_signing_key(), r.new_key.key_id);
    assert_eq!(psd.published_keys()[0].status(), "revoked");
    assert_eq!(*psd.unwrap_user_key(&w, b"ann").unwrap(), [4; 32]);
    assert!(
        psd.key_attributes()
            .unwrap()
            .iter()
            .all(|a| a.sensitive && a.never_extractable && !a.value_readable)
    );
}
