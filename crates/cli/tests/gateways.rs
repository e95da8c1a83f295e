//! `stampline admin gateway-credentials | gateways | gateway-revoke` run for real on a data dir:
//! issued credentials load on the gateway's side, the list shows them, revocation is recorded,
//! and the operator's mistakes are refused with their codes.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::Value;
use stampline_server::internal_ca::{GatewayCredentials, GatewayRefusal, GatewayRegistry};

const BIN: &str = env!("CARGO_BIN_EXE_stampline");

/// `stampline --json admin ARGS`: whether it succeeded, and its JSON.
fn admin(args: &[&str]) -> (bool, Value) {
    let out = Command::new(BIN)
        .arg("--json")
        .arg("admin")
        .args(args)
        .env_remove("STAMPLINE_PSD_PASSPHRASE")
        .env_remove("STAMPLINE_PSD_PASSPHRASE_FILE")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let v = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| {
        panic!(
            "not JSON: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.success(), v)
}

fn issue(data: &Path, name: &str, out: &Path) -> (bool, Value) {
    admin(&[
        "gateway-credentials",
        "--data-dir",
        data.to_str().unwrap(),
        "--name",
        name,
        "--out",
        out.to_str().unwrap(),
    ])
}

fn refused(result: (bool, Value), code: &str) {
    let (ok, v) = result;
    assert!(!ok, "{v}");
    assert_eq!(v["error"], code, "{v}");
}

#[test]
fn credentials_are_issued_listed_and_revoked() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let gw = tmp.path().join("gw-edge-1");

    let (ok, v) = issue(&data, "edge-1", &gw);
    assert!(ok, "{v}");
    assert_eq!(v["name"], "edge-1");
    assert_eq!(v["out"], gw.to_str().unwrap());
    assert_eq!(v["fingerprint"].as_str().unwrap().len(), 64);
    let fingerprint = v["fingerprint"].clone();
    assert!(v["not_after"].as_str().unwrap().ends_with('Z'), "{v}");
    let creds = GatewayCredentials::load(&gw).unwrap();
    assert_eq!(creds.name, "edge-1");
    creds.core_client_config().unwrap();
    creds.public_server_config().unwrap();
    assert_eq!(
        std::fs::read(creds.trust_path()).unwrap(),
        std::fs::read(data.join("trust.pem")).unwrap()
    );

    // The operator's mistakes.
    refused(issue(&data, "Edge_1", &tmp.path().join("x")), "bad_name");
    refused(
        issue(&data, "edge-1", &tmp.path().join("y")),
        "gateway_exists",
    );
    refused(issue(&data, "edge-2", &gw), "credentials_exist");
    refused(
        issue(&tmp.path().join("nowhere"), "edge-2", &tmp.path().join("z")),
        "bad_data_dir",
    );
    assert!(!tmp.path().join("x").exists());
    assert!(!tmp.path().join("y").exists());

    let gw2 = tmp.path().join("gw-edge-2");
    let (ok, v) = issue(&data, "edge-2", &gw2);
    assert!(ok, "{v}");

    let data_arg = data.to_str().unwrap();
    let (ok, v) = admin(&["gateways", "--data-dir", data_arg]);
    assert!(ok, "{v}");
    let list = v["gateways"].as_array().unwrap();
    assert_eq!(list.len(), 2);
    assert_eq!(list[0]["name"], "edge-1");
    assert_eq!(list[0]["fingerprint"], fingerprint);
    assert!(list.iter().all(|r| r["revoked_at_ms"].is_null()));

    let (ok, v) = admin(&["gateway-revoke", "edge-1", "--data-dir", data_arg]);
    assert!(ok, "{v}");
    assert_eq!(v, serde_json::json!({"name": "edge-1", "revoked": 1}));
    refused(
        admin(&["gateway-revoke", "edge-1", "--data-dir", data_arg]),
        "no_such_gateway",
    );
    refused(
        admin(&["gateway-revoke", "nobody", "--data-dir", data_arg]),
        "no_such_gateway",
    );

    let (_, v) = admin(&["gateways", "--data-dir", data_arg]);
    assert!(v["gateways"][0]["revoked_at_ms"].is_i64(), "{v}");
    assert!(v["gateways"][1]["revoked_at_ms"].is_null(), "{v}");
    // What the core reads at a gateway's next connection.
    let registry = GatewayRegistry::load(&data).unwrap();
    assert_eq!(
        registry.admit(creds.cert_der()),
        Err(GatewayRefusal::Revoked {
            name: "edge-1".into()
        })
    );
    let creds2 = GatewayCredentials::load(&gw2).unwrap();
    assert_eq!(registry.admit(creds2.cert_der()), Ok("edge-2".into()));

    // Revoked, the name may be issued again.
    let (ok, v) = issue(&data, "edge-1", &tmp.path().join("gw-edge-1b"));
    assert!(ok, "{v}");
}

#[test]
fn the_human_list_is_a_table() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let out = Command::new(BIN)
        .args(["admin", "gateways", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "no gateway credentials issued"
    );
    let (ok, _) = issue(&data, "edge-1", &tmp.path().join("gw"));
    assert!(ok);
    let out = Command::new(BIN)
        .args(["admin", "gateways", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(lines[0].starts_with("name"), "{text}");
    assert!(
        lines[1].starts_with("edge-1") && lines[1].contains("active"),
        "{text}"
    );
}
