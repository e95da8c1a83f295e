//! The crypto device end to end, with the real `stampline` binary: the whole flow with the
//! software device (encrypted under a passphrase) and with SoftHSM2 over PKCS#11; no private key
//! in the clear in the data dir; the token's keys sensitive and never extractable (read with
//! `pkcs11-tool`); admins; key rotation and revocation as `verify` sees them; refusal to start on
//! a wrong or missing passphrase or a damaged key store.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use serde_json::Value;
use stampline_psd::testkit;

mod common;
use common::{BIN, Cli, PASSWORD, last_json, spawn_listening};
const ADMIN_PASSWORD: &str = "admin horse battery staple";
const PASSPHRASE: &str = "the device passphrase for tests";
const TOKEN: &str = "stampline-e2e";
const PIN: &str = "4321";

/// How a test runs every `stampline` process: extra environment and `--psd`.
#[derive(Clone, Debug, Default)]
struct Device {
    env: BTreeMap<String, String>,
    psd: Option<String>,
}

impl Device {
    fn software(passphrase: Option<&str>) -> Device {
        let mut env = BTreeMap::new();
        if let Some(p) = passphrase {
            env.insert("STAMPLINE_PSD_PASSPHRASE".into(), p.into());
        }
        Device { env, psd: None }
    }

    fn command(&self) -> Command {
        let mut c = Command::new(BIN);
        c.env_remove("STAMPLINE_PSD_PASSPHRASE")
            .env_remove("STAMPLINE_PSD_PASSPHRASE_FILE")
            .envs(&self.env)
            .stdin(Stdio::null());
        c
    }

    fn psd_args(&self) -> Vec<String> {
        self.psd
            .iter()
            .flat_map(|p| ["--psd".to_owned(), p.clone()])
            .collect()
    }
}

/// A SoftHSM2 token in `dir` with its own SOFTHSM2_CONF, or None (skipped) without SoftHSM2 and
/// `pkcs11-tool` (which reads the token's key attributes).
fn softhsm(dir: &Path) -> Option<Device> {
    if Command::new("pkcs11-tool").arg("--help").output().is_err() {
        testkit::skip_missing("pkcs11-tool", "install opensc");
        return None;
    }
    let conf = testkit::softhsm_token(dir, TOKEN, PIN)?;
    let mut env = BTreeMap::new();
    env.insert("SOFTHSM2_CONF".into(), conf.display().to_string());
    env.insert("TEST_TOKEN_PIN".into(), PIN.into());
    let module = testkit::softhsm_module();
    Some(Device {
        env,
        psd: Some(format!(
            "pkcs11:module={};token={TOKEN};pin-env=TEST_TOKEN_PIN",
            module.display()
        )),
    })
}

struct TestServer {
    child: Child,
    url: String,
    trust: PathBuf,
    device: Device,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Start `stampline server` on `data`; Err carries the JSON error it printed.
fn start(data: &Path, device: &Device) -> Result<TestServer, Value> {
    let server = spawn_listening(
        device
            .command()
            .args(["server", "--json", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data)
            .args(device.psd_args())
            .stderr(Stdio::null()),
    )?;
    Ok(TestServer {
        child: server.child,
        url: server.url,
        trust: server.trust,
        device: device.clone(),
    })
}

impl TestServer {
    /// `user` logs in with `password`.
    fn run_as(&self, user: &str, password: &str, args: &[&str]) -> (bool, Value) {
        let out = self
            .device
            .command()
            .arg("--json")
            .args(args)
            .env("STAMPLINE_SERVER", &self.url)
            .env("STAMPLINE_TRUST", &self.trust)
            .env("STAMPLINE_USER", user)
            .env("STAMPLINE_PASSWORD", password)
            .output()
            .unwrap();
        last_json(&out)
    }

    /// Buy $0.78 as raw bytes into `dir/NAME.raw`; returns (path, key id).
    fn buy(&self, user: &str, dir: &Path, name: &str) -> (PathBuf, String) {
        let out = dir.join(name);
        self.ok(user, &common::buy_raw(out.to_str().unwrap()));
        let path = out.with_extension("raw");
        let v = self.ok(user, &["verify", path.to_str().unwrap()]);
        (path, v["key_id"].as_str().unwrap().to_owned())
    }
}

/// The admin `root` logs in with its own password, every other user with [`PASSWORD`].
impl Cli for TestServer {
    fn run(&self, user: &str, args: &[&str]) -> (bool, Value) {
        let password = if user == "root" {
            ADMIN_PASSWORD
        } else {
            PASSWORD
        };
        self.run_as(user, password, args)
    }
}

fn admin_create(data: &Path, device: &Device, user: &str) -> (bool, Value) {
    let out = device
        .command()
        .args(["--json", "admin", "create", "--data-dir"])
        .arg(data)
        .args(device.psd_args())
        .args(["--user", user])
        .env("STAMPLINE_PASSWORD", ADMIN_PASSWORD)
        .output()
        .unwrap();
    let v = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (out.status.success(), v)
}

fn assert_no_private_key_in(dir: &Path) {
    let all = testkit::files(dir);
    assert!(all.len() > 3, "{all:?}");
    for f in all {
        let bytes = std::fs::read(&f).unwrap();
        assert_eq!(testkit::holds_private_key(&bytes), None, "{}", f.display());
    }
}

/// Admin, user, items A and B around a rotation, then revocation of A's key.
fn rotation_flow(data: &Path, device: &Device) {
    let (ok, v) = admin_create(data, device, "root");
    assert!(ok, "{v}");
    assert_eq!(v["role"], "admin");
    let server = start(data, device).unwrap();
    server.ok("ann", &common::REGISTER);
    server.ok("ann", &common::fund_card("10"));
    let out = tempfile::tempdir().unwrap();
    let (a, key_a) = server.buy("ann", out.path(), "a");

    // Ordinary users are refused admin ops with a clear code.
    let v = server.fails_with("ann", &["admin", "rotate-key"], "forbidden");
    assert!(v["message"].as_str().unwrap().contains("admin role"), "{v}");
    server.fails_with("ann", &["admin", "revoke-key", &key_a], "forbidden");
    // The current key cannot be revoked.
    server.fails_with("root", &["admin", "revoke-key", &key_a], "key_current");

    let rot = server.ok("root", &["admin", "rotate-key"]);
    let key_b = rot["key_id"].as_str().unwrap().to_owned();
    assert_ne!(key_b, key_a);
    assert_eq!(rot["old_key"]["key_id"], key_a.as_str());
    assert_eq!(rot["old_key"]["status"], "retired");
    assert!(rot["old_key"]["valid_until"].is_string(), "{rot}");
    assert_eq!(rot["new_key"]["valid_until"], Value::Null);
    assert_eq!(rot["cmls_registered"], true);

    let (b, signed_b) = server.buy("ann", out.path(), "b");
    assert_eq!(signed_b, key_b, "new items use the new key");
    for item in [&a, &b] {
        let v = server.ok("ann", &["verify", item.to_str().unwrap()]);
        assert_eq!(v["valid"], true, "{v}");
    }
    let keys = server.ok("root", &["admin", "keys"]);
    assert_eq!(keys["current"], key_b.as_str());
    assert_eq!(keys["keys"].as_array().unwrap().len(), 2);

    let rev = server.ok(
        "root",
        &["admin", "revoke-key", &key_a, "--reason", "key compromised"],
    );
    assert_eq!(rev["key"]["status"], "revoked");
    let (ok, v) = server.run("ann", &["verify", a.to_str().unwrap()]);
    assert!(!ok, "{v}");
    assert_eq!(v["valid"], false);
    let reason = v["reason"].as_str().unwrap();
    assert!(
        reason.contains("revoked") && reason.contains("key compromised"),
        "{reason}"
    );
    assert!(reason.contains(&key_a), "{reason}");
    let v = server.ok("ann", &["verify", b.to_str().unwrap()]);
    assert_eq!(v["valid"], true, "{v}");

    // Offline, with a saved copy of the keys (the `keys` array has the shape of /v1/keys).
    let keys = server.ok("root", &["admin", "keys"]);
    let keys_file = out.path().join("keys.json");
    std::fs::write(&keys_file, keys["keys"].to_string()).unwrap();
    let offline = |item: &Path| {
        let out = Command::new(BIN)
            .args(["--json", "verify", "--keys"])
            .arg(&keys_file)
            .arg(item)
            .env_remove("STAMPLINE_SERVER")
            .output()
            .unwrap();
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        (out.status.success(), v)
    };
    let (ok, v) = offline(&a);
    assert!(
        !ok && v["reason"].as_str().unwrap().contains("revoked"),
        "{v}"
    );
    let (ok, v) = offline(&b);
    assert!(ok, "{v}");

    // CMLS (the sandbox) knows both keys and the revocation.
    let cmls = stampline_sandbox::state_json(&data.join("sandbox-cmls.json")).unwrap();
    assert!(cmls["keys"][&key_b].is_object(), "{cmls}");
    assert_eq!(cmls["keys"][&key_a]["revocation_reason"], "key compromised");

    // The rotation survives a restart: new items still use key B.
    drop(server);
    let server = start(data, device).unwrap();
    let (_, signed_c) = server.buy("ann", out.path(), "c");
    assert_eq!(signed_c, key_b);
    let (ok, _) = server.run("ann", &["verify", a.to_str().unwrap()]);
    assert!(!ok);
    drop(server);

    // Admin accounts and key changes leave the ledger and its audit chain consistent.
    common::assert_audit_passes(data);
    // A second admin of the same name is refused.
    let (ok, v) = admin_create(data, device, "root");
    assert!(!ok);
    assert_eq!(v["error"], "user_exists", "{v}");
}

#[test]
fn the_whole_flow_and_rotation_run_with_the_software_device_under_a_passphrase() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let device = Device::software(Some(PASSPHRASE));
    rotation_flow(&data, &device);
    assert_no_private_key_in(&data);
}

#[test]
fn an_admin_lists_and_clears_login_back_offs() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let device = Device::software(Some(PASSPHRASE));
    let (ok, v) = admin_create(&data, &device, "root");
    assert!(ok, "{v}");
    let server = start(&data, &device).unwrap();
    server.ok("ann", &common::REGISTER);
    for _ in 0..5 {
        let (ok, v) = server.run_as("ann", "wrong password entirely", &["balance"]);
        assert!(!ok);
        assert_eq!(v["error"], "bad_credentials", "{v}");
    }
    let listed = server.ok("root", &["admin", "throttles"]);
    let throttles = listed["throttles"].as_array().unwrap();
    assert_eq!(throttles.len(), 1, "{listed}");
    assert_eq!(throttles[0]["user"], "ann");
    assert_eq!(throttles[0]["source"], "127.0.0.1");
    assert_eq!(throttles[0]["failures"], 5);
    let cleared = server.ok("root", &["admin", "unlock", "ann"]);
    assert_eq!(cleared["cleared"], 1, "{cleared}");
    let listed = server.ok("root", &["admin", "throttles"]);
    assert_eq!(listed["throttles"], serde_json::json!([]));
    server.ok("ann", &["balance"]);
}

#[test]
fn the_whole_flow_and_rotation_run_with_softhsm2_over_pkcs11() {
    let dir = tempfile::tempdir().unwrap();
    let Some(device) = softhsm(dir.path()) else {
        return;
    };
    let data = dir.path().join("data");
    rotation_flow(&data, &device);
    assert_no_private_key_in(&data);

    // Read the keys' attributes through PKCS#11 with another program.
    let out = Command::new("pkcs11-tool")
        .arg("--module")
        .arg(testkit::softhsm_module())
        .args(["--token-label", TOKEN, "--login"])
        .args(["--pin", PIN, "--list-objects"])
        .env("SOFTHSM2_CONF", &device.env["SOFTHSM2_CONF"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    // Objects start at an unindented line; their attributes are indented.
    let mut blocks: Vec<String> = Vec::new();
    for line in text.lines() {
        if !line.starts_with(char::is_whitespace) || blocks.is_empty() {
            blocks.push(String::new());
        }
        if let Some(b) = blocks.last_mut() {
            b.push_str(line);
            b.push('\n');
        }
    }
    let objects: Vec<&String> = blocks
        .iter()
        .filter(|o| {
            o.contains("label:      stampline-")
                && (o.starts_with("Private Key Object") || o.starts_with("Secret Key Object"))
        })
        .collect();
    // auth, wrap, seal, and the two signing keys.
    assert_eq!(objects.len(), 5, "{text}");
    for o in objects {
        let access = o
            .lines()
            .find(|l| l.trim_start().starts_with("Access:"))
            .unwrap_or_else(|| panic!("no access line: {o}"));
        assert!(access.contains("sensitive"), "{o}");
        assert!(access.contains("never extractable"), "{o}");
        assert!(
            !access
                .replace("never extractable", "")
                .contains("extractable"),
            "{o}"
        );
    }
}

#[test]
fn the_server_refuses_to_start_on_a_wrong_or_missing_passphrase_or_a_damaged_key_store() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let good = Device::software(Some(PASSPHRASE));
    drop(start(&data, &good).unwrap());

    let e = start(&data, &Device::software(Some("not the passphrase at all")))
        .err()
        .unwrap();
    assert_eq!(e["error"], "server_start", "{e}");
    assert!(
        e["message"].as_str().unwrap().contains("wrong passphrase"),
        "{e}"
    );
    let e = start(&data, &Device::software(None)).err().unwrap();
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains("STAMPLINE_PSD_PASSPHRASE"),
        "{e}"
    );
    let e = start(&data, &Device::software(Some("short")))
        .err()
        .unwrap();
    assert!(e["message"].as_str().unwrap().contains("passphrase"), "{e}");

    // The passphrase may come from a file instead (its first line).
    let file = dir.path().join("passphrase.txt");
    std::fs::write(&file, format!("{PASSPHRASE}\n")).unwrap();
    let mut from_file = Device::software(None);
    from_file.env.insert(
        "STAMPLINE_PSD_PASSPHRASE_FILE".into(),
        file.display().to_string(),
    );
    drop(start(&data, &from_file).unwrap());
    let mut both = from_file.clone();
    both.env
        .insert("STAMPLINE_PSD_PASSPHRASE".into(), PASSPHRASE.into());
    let e = start(&data, &both).err().unwrap();
    assert!(e["message"].as_str().unwrap().contains("not both"), "{e}");

    // A damaged key store fails the device's checks: no serving.
    let store = data.join("psd/keystore.json");
    let mut v: Value = serde_json::from_slice(&std::fs::read(&store).unwrap()).unwrap();
    let ct = v["ciphertext"].as_str().unwrap().to_owned();
    let flipped = format!(
        "{}{}",
        if ct.starts_with('0') { "1" } else { "0" },
        &ct[1..]
    );
    v["ciphertext"] = Value::String(flipped);
    std::fs::write(&store, serde_json::to_vec(&v).unwrap()).unwrap();
    let e = start(&data, &good).err().unwrap();
    assert!(
        e["message"].as_str().unwrap().contains("crypto device"),
        "{e}"
    );

    // The quick start's development mode still works with no configuration, and says so.
    let dev = dir.path().join("dev");
    drop(start(&dev, &Device::software(None)).unwrap());
    let ks: Value =
        serde_json::from_slice(&std::fs::read(dev.join("psd/keystore.json")).unwrap()).unwrap();
    assert_eq!(ks["header"]["dev_mode"], true);
    assert_no_private_key_in(&dev);
}

#[test]
fn a_bad_psd_value_is_refused_before_anything_starts() {
    let dir = tempfile::tempdir().unwrap();
    let mut device = Device::software(None);
    device.psd = Some("pkcs11:module=/nonexistent.so;token=t".into());
    let e = start(&dir.path().join("data"), &device).err().unwrap();
    assert_eq!(e["error"], "bad_flag", "{e}");
    device.psd = Some("pkcs11:module=/nonexistent.so;token=t;pin-env=NO_SUCH_PIN_VAR".into());
    let e = start(&dir.path().join("data"), &device).err().unwrap();
    assert!(
        e["message"].as_str().unwrap().contains("NO_SUCH_PIN_VAR"),
        "{e}"
    );
}
