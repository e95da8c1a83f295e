//! The software crypto device: encrypted at rest, refuses a wrong or missing passphrase, migrates
//! the walking skeleton's plaintext layout, rotates and revokes keys.

#![allow(clippy::unwrap_used)]

use stampline_items::KeyId;
use stampline_psd::testkit::{
    PLAINTEXT_WRAP_KEY, files, holds_private_key, write_plaintext_layout,
};
use stampline_psd::{
    KEYSTORE_FILE, Passphrase, Psd, PsdError, RETIRED_KEY_VALIDITY_SECS, SoftwarePsd,
    verify_signature,
};
use zeroize::Zeroizing;

fn pass(p: &str) -> Passphrase {
    Passphrase::given(Zeroizing::new(p.to_owned())).unwrap()
}

const PASS: &str = "a long test passphrase";

#[test]
fn keys_persist_across_reopening_under_the_passphrase() {
    let dir = tempfile::tempdir().unwrap();
    let a = SoftwarePsd::open(dir.path(), pass(PASS), 1).unwrap();
    let b = SoftwarePsd::open(dir.path(), pass(PASS), 2).unwrap();
    assert_eq!(a.auth_public_key(), b.auth_public_key());
    assert_eq!(a.current_signing_key(), b.current_signing_key());
    let w = a.wrap_user_key(&[1; 32], b"ann").unwrap();
    assert_eq!(*b.unwrap_user_key(&w, b"ann").unwrap(), [1; 32]);
    assert!(!b.is_dev_mode());
    assert!(!b.describe().contains("DEV MODE"));
}

#[test]
fn a_wrong_or_missing_passphrase_is_refused_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    SoftwarePsd::open(dir.path(), pass(PASS), 1).unwrap();
    let wrong = SoftwarePsd::open(dir.path(), pass("another long passphrase"), 1).unwrap_err();
    assert!(matches!(wrong, PsdError::Passphrase(_)));
    assert!(wrong.to_string().contains("wrong passphrase"), "{wrong}");
    let missing = SoftwarePsd::open(dir.path(), Passphrase::Dev, 1).unwrap_err();
    assert!(matches!(missing, PsdError::Passphrase(_)));
    assert!(
        missing.to_string().contains("STAMPLINE_PSD_PASSPHRASE"),
        "{missing}"
    );
    assert!(Passphrase::given(Zeroizing::new("short".into())).is_err());
}

#[test]
fn a_development_mode_store_is_resealed_when_a_passphrase_is_given() {
    let dir = tempfile::tempdir().unwrap();
    let dev = SoftwarePsd::open(dir.path(), Passphrase::Dev, 1).unwrap();
    assert!(dev.is_dev_mode());
    assert!(dev.describe().contains("DEV MODE"));
    let auth = dev.auth_public_key();
    drop(dev);
    let real = SoftwarePsd::open(dir.path(), pass(PASS), 2).unwrap();
    assert_eq!(real.auth_public_key(), auth);
    drop(real);
    assert!(matches!(
        SoftwarePsd::open(dir.path(), Passphrase::Dev, 3),
        Err(PsdError::Passphrase(_))
    ));
}

#[test]
fn the_data_dir_holds_no_private_key_in_the_clear() {
    let dir = tempfile::tempdir().unwrap();
    let psd = SoftwarePsd::open(dir.path(), pass(PASS), 1).unwrap();
    psd.rotate_signing_key(5).unwrap();
    let all = files(dir.path());
    assert!(all.iter().any(|p| p.ends_with(KEYSTORE_FILE)));
    for f in all {
        let bytes = std::fs::read(&f).unwrap();
        assert_eq!(holds_private_key(&bytes), None, "{}", f.display());
    }
    // The detector does find a key in the clear.
    let doc = aws_lc_rs::signature::EcdsaKeyPair::generate_pkcs8(
        &aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
        &aws_lc_rs::rand::SystemRandom::new(),
    )
    .unwrap();
    assert!(holds_private_key(doc.as_ref()).is_some());
    assert!(holds_private_key(hex::encode(doc.as_ref()).as_bytes()).is_some());
}

#[test]
fn a_walking_skeleton_plaintext_data_dir_is_migrated_and_its_key_files_removed() {
    let dir = tempfile::tempdir().unwrap();
    let psd_dir = dir.path().join("psd");
    let old = write_plaintext_layout(&psd_dir);
    // A link key wrapped by the old device (AES-256-GCM under wrap.key, nonce first).
    let old_wrap = aws_lc_rs::aead::LessSafeKey::new(
        aws_lc_rs::aead::UnboundKey::new(&aws_lc_rs::aead::AES_256_GCM, &PLAINTEXT_WRAP_KEY)
            .unwrap(),
    );
    let mut buf = vec![3u8; 32];
    old_wrap
        .seal_in_place_append_tag(
            aws_lc_rs::aead::Nonce::assume_unique_for_key([1; 12]),
            aws_lc_rs::aead::Aad::from(b"ann"),
            &mut buf,
        )
        .unwrap();
    let mut wrapped = vec![1u8; 12];
    wrapped.extend(buf);

    let psd = SoftwarePsd::open(dir.path(), pass(PASS), 200).unwrap();
    assert_eq!(psd.auth_public_key(), old.auth_spki);
    assert_eq!(psd.current_signing_key(), old.sign_id);
    assert_eq!(psd.published_keys()[0].valid_from_unix, 100);
    assert_eq!(*psd.unwrap_user_key(&wrapped, b"ann").unwrap(), [3u8; 32]);
    for f in files(dir.path()) {
        assert_eq!(
            holds_private_key(&std::fs::read(&f).unwrap()),
            None,
            "{}",
            f.display()
        );
    }
    assert!(!psd_dir.join("auth-key.p8").exists());
    assert!(!psd_dir.join("wrap.key").exists());
}

#[test]
fn rotation_makes_a_new_current_key_and_retires_the_old_one_across_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let psd = SoftwarePsd::open(dir.path(), pass(PASS), 100).unwrap();
    let a = psd.current_signing_key();
    let r = psd.rotate_signing_key(200).unwrap();
    let b = r.new_key.key_id;
    assert_ne!(a, b);
    assert_eq!(r.old_key.key_id, a);
    assert_eq!(psd.current_signing_key(), b);
    assert!(matches!(
        psd.sign_item(a, b"x"),
        Err(PsdError::KeyRetired(_))
    ));
    let sig = psd.sign_item(b, b"x").unwrap();
    assert!(verify_signature(&r.new_key.spki_der, b"x", &sig));
    drop(psd);

    let psd = SoftwarePsd::open(dir.path(), pass(PASS), 300).unwrap();
    assert_eq!(psd.current_signing_key(), b);
    let keys = psd.published_keys();
    assert_eq!(keys.len(), 2);
    assert_eq!(
        keys[0].valid_until_unix,
        Some(200 + RETIRED_KEY_VALIDITY_SECS)
    );
    assert_eq!(keys[1].valid_until_unix, None);
    assert!(matches!(
        psd.revoke_signing_key(b, 300, "test"),
        Err(PsdError::KeyIsCurrent(_))
    ));
    let revoked = psd.revoke_signing_key(a, 300, "key compromised").unwrap();
    assert_eq!(revoked.status(), "revoked");
    drop(psd);
    let psd = SoftwarePsd::open(dir.path(), pass(PASS), 400).unwrap();
    assert_eq!(
        psd.published_keys()[0].revocation_reason.as_deref(),
        Some("key compromised")
    );
}

#[test]
fn an_edited_key_index_makes_the_device_refuse_to_open() {
    let dir = tempfile::tempdir().unwrap();
    let psd = SoftwarePsd::open(dir.path(), pass(PASS), 100).unwrap();
    let a = psd.current_signing_key();
    psd.rotate_signing_key(200).unwrap();
    psd.revoke_signing_key(a, 300, "lost").unwrap();
    drop(psd);
    let path = dir.path().join("psd/signing-keys.json");
    let text = std::fs::read_to_string(&path).unwrap();
    // Un-revoke the key behind the device's back.
    let edited = text.replace("\"revoked_at\": 300", "\"revoked_at\": null");
    assert_ne!(edited, text);
    std::fs::write(&path, edited).unwrap();
    let e = SoftwarePsd::open(dir.path(), pass(PASS), 400).unwrap_err();
    assert!(e.to_string().contains("altered"), "{e}");
}

#[test]
fn a_wrapped_key_does_not_open_under_another_context_or_when_tampered() {
    let dir = tempfile::tempdir().unwrap();
    let psd = SoftwarePsd::open(dir.path(), Passphrase::Dev, 1).unwrap();
    let mut w = psd.wrap_user_key(&[9; 32], b"ann").unwrap();
    assert!(psd.unwrap_user_key(&w, b"bob").is_err());
    w[20] ^= 1;
    assert!(psd.unwrap_user_key(&w, b"ann").is_err());
    assert!(psd.unwrap_user_key(&w[..10], b"ann").is_err());
    let secret = psd.wrap_secret(&[5; 200], b"tls").unwrap();
    assert_eq!(
        &**psd.unwrap_secret(&secret, b"tls").unwrap(),
        &[5u8; 200][..]
    );
}

#[test]
fn a_corrupted_key_store_makes_the_device_refuse_to_open() {
    let dir = tempfile::tempdir().unwrap();
    SoftwarePsd::open(dir.path(), Passphrase::Dev, 1).unwrap();
    std::fs::write(dir.path().join("psd").join(KEYSTORE_FILE), b"garbage").unwrap();
    assert!(SoftwarePsd::open(dir.path(), Passphrase::Dev, 1).is_err());
}

#[test]
fn unknown_signing_keys_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let psd = SoftwarePsd::open(dir.path(), Passphrase::Dev, 1).unwrap();
    assert!(matches!(
        psd.sign_item(KeyId([1, 2, 3, 4]), b"x"),
        Err(PsdError::UnknownKey(_))
    ));
}
