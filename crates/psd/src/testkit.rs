//! Test helpers for the crypto devices, behind the `testkit` cargo feature (enabled by this
//! crate's own tests and benches and by other crates' tests through their dev-dependencies):
//! a throw-away SoftHSM2 token, a check for private keys in the clear, and the plaintext
//! data-dir layout from before encryption at rest.
//!
//! SoftHSM2 reads its configuration (`SOFTHSM2_CONF`) once per process when the module is
//! initialised, and test code may not set environment variables; so a caller makes a token here
//! and runs the code under test in a child process with `SOFTHSM2_CONF` pointing at it.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use aws_lc_rs::encoding::AsDer as _;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _};
use stampline_items::KeyId;

/// Where SoftHSM2's PKCS#11 module is looked for when `STAMPLINE_PKCS11_MODULE` is not set.
pub const SOFTHSM_MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";

/// SoftHSM2's PKCS#11 module: `STAMPLINE_PKCS11_MODULE`, else [`SOFTHSM_MODULE`].
pub fn softhsm_module() -> PathBuf {
    std::env::var_os("STAMPLINE_PKCS11_MODULE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(SOFTHSM_MODULE))
}

/// Whether SoftHSM2 is installed: its module and `softhsm2-util`.
pub fn softhsm_available() -> bool {
    softhsm_module().exists()
        && Command::new("softhsm2-util")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
}

/// A test that needs `what` finds it missing: it fails when `STAMPLINE_REQUIRE_ALL=1` (CI
/// installs everything), otherwise it says it is skipped (`hint` tells what to install).
pub fn skip_missing(what: &str, hint: &str) {
    if std::env::var("STAMPLINE_REQUIRE_ALL").as_deref() == Ok("1") {
        panic!("{what} is required (STAMPLINE_REQUIRE_ALL=1) but not installed");
    }
    eprintln!("skipped: {what} not available ({hint})");
}

/// Make a fresh SoftHSM2 token labelled `label` with user PIN `pin` in `dir` (its own token
/// directory and config file); the config's path, or what `softhsm2-util` said on failure.
pub fn init_softhsm_token(dir: &Path, label: &str, pin: &str) -> Result<PathBuf, String> {
    let tokens = dir.join("tokens");
    std::fs::create_dir_all(&tokens).map_err(|e| e.to_string())?;
    let conf = dir.join("softhsm2.conf");
    std::fs::write(
        &conf,
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
            tokens.display()
        ),
    )
    .map_err(|e| e.to_string())?;
    let out = Command::new("softhsm2-util")
        .args(["--init-token", "--free", "--label", label, "--pin", pin])
        .args(["--so-pin", "5678"])
        .env("SOFTHSM2_CONF", &conf)
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    Ok(conf)
}

/// A fresh SoftHSM2 token in `dir` (see [`init_softhsm_token`]); its config path, or None
/// (skipped, see [`skip_missing`]) without SoftHSM2. Panics when the token cannot be made.
pub fn softhsm_token(dir: &Path, label: &str, pin: &str) -> Option<PathBuf> {
    if !softhsm_available() {
        skip_missing("SoftHSM2", "install softhsm2");
        return None;
    }
    Some(init_softhsm_token(dir, label, pin).unwrap_or_else(|e| panic!("{e}")))
}

/// Every file under `dir`, recursively.
pub fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(files(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// The start of every PKCS#8 P-256 key (version 0, id-ecPublicKey).
const PKCS8_EC_PREFIX: [u8; 16] = [
    0x02, 0x01, 0x00, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08,
];
/// The start of a SEC1 EC private key.
const SEC1_EC_PREFIX: [u8; 7] = [0x30, 0x77, 0x02, 0x01, 0x01, 0x04, 0x20];

/// Private key material in the clear in a file's bytes: PEM, DER, or DER as hex or base64.
pub fn holds_private_key(bytes: &[u8]) -> Option<&'static str> {
    let find = |needle: &[u8]| bytes.windows(needle.len()).any(|w| w == needle);
    let text = String::from_utf8_lossy(bytes).to_lowercase();
    if text.contains("private key") {
        return Some("a PEM private key");
    }
    if find(&PKCS8_EC_PREFIX) || find(&SEC1_EC_PREFIX) {
        return Some("a DER private key");
    }
    if text.contains(&hex::encode(PKCS8_EC_PREFIX)) || text.contains(&hex::encode(SEC1_EC_PREFIX)) {
        return Some("a hex DER private key");
    }
    // "MIGHAgEAMBMGByqGSM49AgEG" is the base64 start of every PKCS#8 P-256 key.
    if text.contains(&"MIGHAgEAMBMGByqGSM49AgEG".to_lowercase()) {
        return Some("a base64 DER private key");
    }
    None
}

/// The wrapping key of the plaintext layout ([`write_plaintext_layout`]), in `wrap.key`.
pub const PLAINTEXT_WRAP_KEY: [u8; 32] = [7; 32];

/// What [`write_plaintext_layout`] wrote: the keys a migrated device must keep.
#[derive(Debug)]
pub struct PlaintextLayout {
    /// The link-auth key's public key (SPKI DER).
    pub auth_spki: Vec<u8>,
    /// The one item-signing key, valid from 100 (Unix seconds).
    pub sign_id: KeyId,
}

/// Write the walking skeleton's plaintext device keys into `psd_dir` (made if missing): an auth
/// key, a wrapping key ([`PLAINTEXT_WRAP_KEY`]), a seal key and one signing key with its index.
pub fn write_plaintext_layout(psd_dir: &Path) -> PlaintextLayout {
    std::fs::create_dir_all(psd_dir).unwrap();
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
    std::fs::write(psd_dir.join("auth-key.p8"), auth.as_ref()).unwrap();
    std::fs::write(psd_dir.join("wrap.key"), PLAINTEXT_WRAP_KEY).unwrap();
    std::fs::write(psd_dir.join("seal.key"), [8u8; 32]).unwrap();
    std::fs::write(psd_dir.join(format!("sign-{sign_id}.p8")), sign.as_ref()).unwrap();
    std::fs::write(
        psd_dir.join("signing-keys.txt"),
        format!("{sign_id} 100 -\n"),
    )
    .unwrap();
    PlaintextLayout {
        auth_spki: spki(auth.as_ref()),
        sign_id,
    }
}
