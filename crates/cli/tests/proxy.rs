//! The client behind a real HTTP proxy (tinyproxy): registration, the link and every HTTPS call
//! tunnel through it with `CONNECT` (its log says so), TLS end to end; `NO_PROXY` goes around it;
//! a proxy that wants credentials gets them from the URL, and wrong ones are a clear refusal.
//! Needs `tinyproxy` (Debian package tinyproxy): `skipped: …` without it, unless
//! STAMPLINE_REQUIRE_ALL=1, when that is a failure.

#![allow(clippy::unwrap_used)]

mod common;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::TestServer;
use stampline_psd::testkit::skip_missing;

struct Tinyproxy {
    child: Child,
    port: u16,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Tinyproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Tinyproxy {
    /// A tinyproxy on a free local port that may tunnel to `server_port` only, asking for
    /// `auth` (user, password) when given; `None` when tinyproxy is not installed (a skip).
    fn start(server_port: u16, auth: Option<(&str, &str)>) -> Option<Tinyproxy> {
        let program = ["/usr/bin/tinyproxy", "/usr/sbin/tinyproxy"]
            .into_iter()
            .map(PathBuf::from)
            .find(|p| p.exists());
        let Some(program) = program else {
            skip_missing("tinyproxy", "Debian package tinyproxy");
            return None;
        };
        let dir = tempfile::tempdir().unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let log = dir.path().join("tinyproxy.log");
        let mut conf = format!(
            "Port {port}\nListen 127.0.0.1\nAllow 127.0.0.1\nConnectPort {server_port}\n\
             LogFile \"{}\"\nLogLevel Info\nMaxClients 50\nTimeout 60\n",
            log.display()
        );
        if let Some((user, password)) = auth {
            conf.push_str(&format!("BasicAuth {user} {password}\n"));
        }
        let conf_path = dir.path().join("tinyproxy.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let child = Command::new(program)
            .arg("-d")
            .arg("-c")
            .arg(&conf_path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "tinyproxy did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(Tinyproxy {
            child,
            port,
            log,
            _dir: dir,
        })
    }

    /// The tunnels the proxy opened to `target` (HOST:PORT), from its log.
    fn tunnels_to(&self, target: &str) -> usize {
        read_log(&self.log)
            .lines()
            .filter(|l| l.contains("CONNECT") && l.contains(target))
            .count()
    }
}

fn read_log(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

fn server_port(server: &TestServer) -> u16 {
    server.url.rsplit(':').next().unwrap().parse().unwrap()
}

#[test]
fn a_client_behind_a_proxy_registers_links_and_buys_through_it() {
    let server = TestServer::start();
    let port = server_port(&server);
    let Some(proxy) = Tinyproxy::start(port, None) else {
        return;
    };
    let url = format!("http://127.0.0.1:{}", proxy.port);
    let env = [("HTTPS_PROXY", url.as_str())];
    let target = format!("127.0.0.1:{port}");
    let ok = |args: &[&str]| {
        let (ok, v) = server.run_with_env("pat", args, &env);
        assert!(ok, "{args:?} through the proxy: {v}");
        v
    };
    ok(&common::REGISTER);
    let after_register = proxy.tunnels_to(&target);
    assert!(
        after_register >= 1,
        "registration did not go through the proxy"
    );
    ok(&common::fund_card("5"));
    let quote = ok(&["quote", "--class", "first-class-letter", "--weight-oz", "1"]);
    assert!(quote["postage_mills"].as_u64().is_some(), "{quote}");
    let balance = ok(&["balance"]);
    assert_eq!(balance["balance_mills"], 5_000, "{balance}");
    // Funding and balance each went over a link, the quote over HTTPS: each a tunnel of its own.
    assert!(
        proxy.tunnels_to(&target) >= after_register + 3,
        "{}",
        read_log(&proxy.log)
    );
}

#[test]
fn no_proxy_goes_around_the_proxy() {
    let server = TestServer::start();
    let Some(proxy) = Tinyproxy::start(server_port(&server), None) else {
        return;
    };
    let url = format!("http://127.0.0.1:{}", proxy.port);
    let env = [
        ("HTTPS_PROXY", url.as_str()),
        ("NO_PROXY", "localhost,127.0.0.1"),
    ];
    let (ok, v) = server.run_with_env("quinn", &common::REGISTER, &env);
    assert!(ok, "{v}");
    let (ok, v) = server.run_with_env("quinn", &["balance"], &env);
    assert!(ok, "{v}");
    assert_eq!(
        proxy.tunnels_to(&format!("127.0.0.1:{}", server_port(&server))),
        0,
        "{}",
        read_log(&proxy.log)
    );
}

#[test]
fn a_proxy_that_wants_credentials_gets_them_from_the_url_and_refuses_wrong_ones() {
    let server = TestServer::start();
    let port = server_port(&server);
    let Some(proxy) = Tinyproxy::start(port, Some(("office", "pr0xy-pass"))) else {
        return;
    };
    let good = format!("http://office:pr0xy-pass@127.0.0.1:{}", proxy.port);
    let (ok, v) = server.run_with_env("rae", &common::REGISTER, &[("HTTPS_PROXY", &good)]);
    assert!(ok, "{v}");
    let (ok, v) = server.run_with_env("rae", &["balance"], &[("HTTPS_PROXY", &good)]);
    assert!(ok, "{v}");
    assert!(proxy.tunnels_to(&format!("127.0.0.1:{port}")) >= 2);

    let bad = format!("http://office:wrong-pass@127.0.0.1:{}", proxy.port);
    let (ok, v) = server.run_with_env("rae", &["balance"], &[("HTTPS_PROXY", &bad)]);
    assert!(!ok, "{v}");
    assert_eq!(v["error"], "unreachable", "{v}");
    let message = v["message"].as_str().unwrap();
    // 407 is the standard answer; tinyproxy 1.11 answers 401.
    assert!(
        message.contains("407") || message.contains("401"),
        "{message}"
    );
    assert!(
        !message.contains("wrong-pass"),
        "the password leaked: {message}"
    );
}
