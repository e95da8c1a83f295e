//! Safe by default: a server on the public development passphrase (DEV MODE) or on the built-in
//! stand-ins (SANDBOX MODE) listens on loopback only unless told `--insecure-dev`, and its
//! listening line says which modes it runs in.

#![allow(clippy::unwrap_used)]

mod common;

use std::process::{Command, Stdio};

use common::{BIN, spawn_listening};

fn server_on(data: &std::path::Path, listen: &str, extra: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(["server", "--json", "--listen", listen, "--data-dir"])
        .arg(data)
        .args(extra)
        .env_remove("STAMPLINE_PSD_PASSPHRASE")
        .env_remove("STAMPLINE_PSD_PASSPHRASE_FILE")
        .stderr(Stdio::null());
    cmd
}

#[test]
fn a_dev_or_sandbox_server_refuses_a_non_loopback_address_without_insecure_dev() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let refused = spawn_listening(&mut server_on(&data, "0.0.0.0:0", &[]))
        .err()
        .expect("a dev-mode sandbox server must not listen on 0.0.0.0");
    assert_eq!(refused["error"], "insecure_listen", "{refused}");
    let message = refused["message"].as_str().unwrap();
    assert!(
        message.contains("--insecure-dev") && message.contains("DEV MODE"),
        "{message}"
    );

    let mut accepted = spawn_listening(&mut server_on(&data, "0.0.0.0:0", &["--insecure-dev"]))
        .expect("--insecure-dev listens anyway");
    assert_eq!(accepted.line["dev_mode"], true, "{}", accepted.line);
    assert_eq!(accepted.line["sandbox"], true, "{}", accepted.line);
    accepted.child.kill().unwrap();
    accepted.child.wait().unwrap();
}

#[test]
fn loopback_addresses_need_no_flag_and_the_listening_line_names_the_modes() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // With a passphrase the device is not in DEV MODE; the stand-ins still make it a sandbox.
    let mut v4 = spawn_listening(
        server_on(&data, "127.0.0.1:0", &[])
            .env("STAMPLINE_PSD_PASSPHRASE", "a long private test passphrase"),
    )
    .expect("127.0.0.1 is loopback");
    assert_eq!(v4.line["dev_mode"], false, "{}", v4.line);
    assert_eq!(v4.line["sandbox"], true, "{}", v4.line);
    v4.child.kill().unwrap();
    v4.child.wait().unwrap();
    // IPv6 loopback, where the machine has it.
    if std::net::TcpListener::bind("[::1]:0").is_ok() {
        let other = dir.path().join("data6");
        let mut v6 =
            spawn_listening(&mut server_on(&other, "[::1]:0", &[])).expect("::1 is loopback");
        assert_eq!(v6.line["dev_mode"], true, "{}", v6.line);
        v6.child.kill().unwrap();
        v6.child.wait().unwrap();
    } else {
        eprintln!("skipped the ::1 case: this machine has no IPv6 loopback");
    }
}
