//! The firewall from the outside: a real server on port 0 with real TLS, attacked over raw
//! connections from several loopback addresses (127.0.0.1, 127.0.0.2, … are distinct sources).

#![allow(clippy::unwrap_used)]

mod common;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use rustls::pki_types::ServerName;
use serde_json::json;
use stampline_client::{Endpoint, Link, Trust};
use stampline_server::firewall::FirewallConfig;
use stampline_server::{Server, ServerConfig};
use stampline_wire::Frame;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::client::TlsStream;

const PASSWORD: &str = "correct horse battery staple";

struct World {
    addr: SocketAddr,
    cert: Vec<u8>,
    endpoint: Endpoint,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    _dir: tempfile::TempDir,
}

impl Drop for World {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

async fn world(firewall: FirewallConfig) -> World {
    world_with_admin(firewall, None).await
}

/// A world whose ledger also holds the admin `admin` (password [`PASSWORD`]), when given.
async fn world_with_admin(firewall: FirewallConfig, admin: Option<&str>) -> World {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = ServerConfig::new(dir.path().join("data"));
    cfg.firewall = firewall;
    let server = Server::open(cfg).unwrap();
    if let Some(admin) = admin {
        server.core().create_admin(admin, PASSWORD).unwrap();
    }
    let trust_pem = std::fs::read_to_string(server.trust_path()).unwrap();
    let cert = stampline_https::read_pinned_cert(server.trust_path()).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(server.run(listener, async {
        let _ = rx.await;
    }));
    World {
        addr,
        cert,
        endpoint: Endpoint::new(
            &format!("https://{addr}"),
            Trust::from_pem(&trust_pem).unwrap(),
        )
        .unwrap(),
        stop: Some(tx),
        _dir: dir,
    }
}

impl World {
    /// A TLS connection from `from` (a loopback address), or the error that ended it.
    async fn tls_from(&self, from: &str) -> std::io::Result<TlsStream<TcpStream>> {
        let socket = TcpSocket::new_v4()?;
        socket.bind(SocketAddr::new(from.parse::<IpAddr>().unwrap(), 0))?;
        let tcp = socket.connect(self.addr).await?;
        let connector = tokio_rustls::TlsConnector::from(stampline_https::pinned_client_config(
            &self.cert,
            &[b"http/1.1"],
        ));
        let name = ServerName::try_from("localhost").unwrap();
        tokio::time::timeout(Duration::from_secs(5), connector.connect(name, tcp))
            .await
            .map_err(|_| std::io::Error::other("handshake timed out"))?
    }

    /// Send `head` then `body` (raw HTTP) from `from`, and read the answer to its end.
    async fn http_from(&self, from: &str, head: &str, body: &[u8]) -> String {
        let mut tls = self.tls_from(from).await.unwrap();
        tls.write_all(head.as_bytes()).await.unwrap();
        tls.write_all(body).await.unwrap();
        tls.flush().await.unwrap();
        read_answer(&mut tls).await
    }

    /// `POST /v1/register` from `from` with the extra header lines `extra` (each ending in
    /// CRLF) and `body` as sent (raw): the answer.
    async fn post_register(&self, from: &str, extra: &str, body: &[u8]) -> String {
        let head = format!(
            "POST /v1/register HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n{extra}\r\n"
        );
        self.http_from(from, &head, body).await
    }

    async fn register(&self, user: &str) {
        self.endpoint
            .register(
                &json!({"user": user, "password": PASSWORD, "name": "Ann Example",
                "address": "1 Main St", "city": "Boston", "state": "MA", "zip": "02134"}),
            )
            .await
            .unwrap();
    }

    /// A hello over a raw link from `from`: the first frame the server answers.
    async fn hello_from(&self, from: &str, user: &str, password: &str) -> Frame {
        let tls = self.tls_from(from).await.unwrap();
        common::hello_over(tls, "localhost", self.addr.port(), user, password)
            .await
            .1
    }
}

/// Read an HTTP answer until the server closes or 5 s pass (a server that waits for more of the
/// request fails the test here).
async fn read_answer(tls: &mut TlsStream<TcpStream>) -> String {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        match tokio::time::timeout_at(deadline, tls.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => {
                buf.extend_from_slice(&chunk[..n]);
                let text = String::from_utf8_lossy(&buf);
                // One whole answer: headers and a body of the declared length.
                if let Some(end) = text.find("\r\n\r\n") {
                    let len = text[..end]
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length: ")
                                .map(|v| v.trim().parse::<usize>().unwrap())
                        })
                        .unwrap_or(0);
                    if buf.len() >= end + 4 + len {
                        break;
                    }
                }
            }
            Err(_) => panic!(
                "no whole answer within 5 s; got {:?}",
                String::from_utf8_lossy(&buf)
            ),
        }
    }
    String::from_utf8_lossy(&buf).into_owned()
}

fn status_of(answer: &str) -> &str {
    answer.split(' ').nth(1).unwrap_or("")
}

#[tokio::test]
async fn a_body_declared_over_the_limit_is_refused_without_being_read() {
    let w = world(FirewallConfig::default()).await;
    // A 1 MB body is declared and never sent: the answer comes from the headers alone.
    let answer = w
        .post_register("127.0.0.1", "Content-Length: 1000000\r\n", b"")
        .await;
    assert_eq!(status_of(&answer), "413", "{answer}");
    assert!(answer.contains("\"too_large\""), "{answer}");
}

#[tokio::test]
async fn a_chunked_body_is_cut_at_the_limit() {
    let w = world(FirewallConfig::default()).await;
    let chunk = vec![b'x'; 9 * 1024];
    let mut body = format!("{:x}\r\n", chunk.len()).into_bytes();
    body.extend_from_slice(&chunk);
    body.extend_from_slice(b"\r\n");
    let answer = w
        .post_register("127.0.0.1", "Transfer-Encoding: chunked\r\n", &body)
        .await;
    assert_eq!(status_of(&answer), "413", "{answer}");
}

#[tokio::test]
async fn a_body_that_trickles_is_cut_at_the_request_deadline() {
    let w = world(FirewallConfig {
        request_timeout_ms: 300,
        ..FirewallConfig::default()
    })
    .await;
    // 10 of a declared 100 bytes, then nothing.
    let answer = w
        .post_register("127.0.0.1", "Content-Length: 100\r\n", b"{\"user\":\"a")
        .await;
    assert_eq!(status_of(&answer), "408", "{answer}");
    assert!(answer.contains("\"request_timeout\""), "{answer}");
}

#[tokio::test]
async fn the_registration_rate_is_counted_before_the_body_is_read() {
    let mut fw = FirewallConfig::default();
    fw.registrations.per_source_burst = 2;
    let w = world(fw).await;
    for _ in 0..2 {
        let answer = w
            .post_register("127.0.0.1", "Content-Length: 2\r\n", b"{}")
            .await;
        assert_eq!(status_of(&answer), "400", "{answer}");
    }
    // Over the rate: refused before its (huge, never sent) body is even looked at.
    let answer = w
        .post_register("127.0.0.1", "Content-Length: 1000000\r\n", b"")
        .await;
    assert_eq!(status_of(&answer), "429", "{answer}");
    assert!(answer.contains("\"rate_limited\""), "{answer}");
    // Another source still registers.
    let answer = w
        .post_register("127.0.0.2", "Content-Length: 2\r\n", b"{}")
        .await;
    assert_eq!(status_of(&answer), "400", "{answer}");
}

#[tokio::test]
async fn an_items_status_is_rate_limited_like_every_route() {
    let mut fw = FirewallConfig {
        over_rate_cooldown_ms: 300,
        ..FirewallConfig::default()
    };
    fw.lookups.per_source_burst = 3;
    let w = world(fw).await;
    let get = "GET /v1/items/XXXX/status HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
    for _ in 0..3 {
        let answer = w.http_from("127.0.0.1", get, b"").await;
        assert_ne!(status_of(&answer), "429", "{answer}");
    }
    let answer = w.http_from("127.0.0.1", get, b"").await;
    assert_eq!(status_of(&answer), "429", "{answer}");
    // Over its rate, the source cools down: its new connections are closed unserved.
    assert!(
        w.tls_from("127.0.0.1").await.is_err(),
        "served while cooling down"
    );
    let keys = "GET /v1/keys HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
    assert_eq!(status_of(&w.http_from("127.0.0.3", keys, b"").await), "200");
    // Then it is served again.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(
        served(&w, "127.0.0.1").await,
        "not served after its cool-down"
    );
}

/// Whether a connection from `from` is served: a TLS handshake and an answer to a request.
async fn served(w: &World, from: &str) -> bool {
    let Ok(mut tls) = w.tls_from(from).await else {
        return false;
    };
    let get = "GET /v1/keys HTTP/1.1\r\nHost: localhost\r\n\r\n";
    if tls.write_all(get.as_bytes()).await.is_err() {
        return false;
    }
    let mut first = [0u8; 12];
    matches!(
        tokio::time::timeout(Duration::from_secs(5), tls.read_exact(&mut first)).await,
        Ok(Ok(_))
    )
}

/// Hold a connection from `from` open (handshake done, nothing sent).
async fn hold(w: &World, from: &str) -> TlsStream<TcpStream> {
    w.tls_from(from).await.unwrap()
}

#[tokio::test]
async fn a_source_holds_no_more_than_its_share_of_connections_and_linked_users_keep_room() {
    let w = world(FirewallConfig {
        max_connections_per_source: 2,
        max_prelogin_connections: 3,
        ..FirewallConfig::default()
    })
    .await;
    w.register("ann").await;

    let a1 = hold(&w, "127.0.0.1").await;
    let a2 = hold(&w, "127.0.0.1").await;
    assert!(!served(&w, "127.0.0.1").await, "a third from one source");
    let b1 = hold(&w, "127.0.0.2").await;
    assert!(
        !served(&w, "127.0.0.3").await,
        "a fourth before login in all"
    );
    drop((a1, a2, b1));

    // Logged-in links stop counting: two links from one source, and that source still gets
    // its two anonymous connections.
    let link_a = connect_when_served(&w, "ann").await;
    let link_b = connect_when_served(&w, "ann").await;
    let _c1 = hold(&w, "127.0.0.1").await;
    assert!(
        served(&w, "127.0.0.1").await,
        "linked users took the source's share"
    );
    drop((link_a, link_b));
}

/// A link for `user` (from 127.0.0.1), once connections dropped by the test have been closed.
async fn connect_when_served(w: &World, user: &str) -> Link {
    for _ in 0..50 {
        if let Ok(link) = Link::connect(&w.endpoint, user, PASSWORD).await {
            return link;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no link for {user}");
}

#[tokio::test]
async fn an_idle_connection_is_closed_at_the_header_deadline() {
    let w = world(FirewallConfig {
        handshake_timeout_ms: 300,
        ..FirewallConfig::default()
    })
    .await;
    // Nothing sent after the handshake.
    let mut idle = hold(&w, "127.0.0.1").await;
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(5), idle.read(&mut buf)).await;
    assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "{read:?}");
    // Kept alive after an answer, then idle.
    let mut kept = hold(&w, "127.0.0.1").await;
    kept.write_all(b"GET /v1/keys HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let answer = read_answer(&mut kept).await;
    assert_eq!(status_of(&answer), "200", "{answer}");
    let read = tokio::time::timeout(Duration::from_secs(5), kept.read(&mut buf)).await;
    assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "{read:?}");
}

#[tokio::test]
async fn a_denied_address_is_closed_before_its_handshake() {
    let mut fw = FirewallConfig::default();
    fw.public.deny = vec!["127.0.0.2/32".parse().unwrap()];
    let w = world(fw).await;
    assert!(w.tls_from("127.0.0.2").await.is_err());
    assert!(served(&w, "127.0.0.1").await);
}

#[tokio::test]
async fn logins_are_limited_per_source_and_in_all() {
    let mut fw = FirewallConfig::default();
    fw.logins.per_source_burst = 2;
    fw.logins.global_per_minute = 3;
    fw.logins.global_burst = 3;
    let w = world(fw).await;
    let code = |f: Frame| match f {
        Frame::Error { code, .. } => code,
        other => panic!("expected an error frame, got {other:?}"),
    };
    for _ in 0..2 {
        let f = w
            .hello_from("127.0.0.1", "nobody", "wrong password 1")
            .await;
        assert_eq!(code(f), "bad_credentials");
    }
    let f = w
        .hello_from("127.0.0.1", "nobody", "wrong password 1")
        .await;
    assert_eq!(code(f), "rate_limited", "over the source's rate");
    let f = w
        .hello_from("127.0.0.2", "nobody", "wrong password 1")
        .await;
    assert_eq!(code(f), "bad_credentials");
    let f = w
        .hello_from("127.0.0.3", "nobody", "wrong password 1")
        .await;
    assert_eq!(code(f), "rate_limited", "over the global rate");
}

#[tokio::test]
async fn an_admin_logs_in_only_from_the_admin_address_list() {
    let fw = FirewallConfig {
        admin: stampline_server::firewall::Acl {
            allow: vec!["127.0.0.2/32".parse().unwrap()],
            deny: Vec::new(),
        },
        ..FirewallConfig::default()
    };
    let w = world_with_admin(fw, Some("root")).await;
    w.register("ann").await;
    let code = |f: Frame| match f {
        Frame::Error { code, .. } => code,
        other => other.type_name().to_owned(),
    };
    assert_eq!(
        code(w.hello_from("127.0.0.1", "root", PASSWORD).await),
        "forbidden"
    );
    assert_eq!(
        code(w.hello_from("127.0.0.2", "root", PASSWORD).await),
        "welcome"
    );
    // Users are not bound by the admin list.
    assert_eq!(
        code(w.hello_from("127.0.0.1", "ann", PASSWORD).await),
        "welcome"
    );
}

#[tokio::test]
async fn the_server_refuses_impossible_firewall_settings() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = ServerConfig::new(dir.path().join("data"));
    cfg.firewall.max_prelogin_connections = cfg.firewall.max_connections + 1;
    let err = Server::open(cfg).unwrap_err().to_string();
    assert!(err.contains("max_prelogin_connections"), "{err}");
}
