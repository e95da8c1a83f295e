//! What the server's test files share: a world (a real server on port 0 with real TLS, its core
//! and live links), the ops the tests send, and a raw link hello over a TLS stream the test made
//! itself (from a chosen source address, say), for tests that misbehave on purpose.

#![allow(clippy::unwrap_used, dead_code)]

use std::sync::Arc;

use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::json;
use stampline_client::{Endpoint, Link, Trust};
use stampline_server::clock::{Clock, ManualClock, now_ms};
use stampline_server::core::Core;
use stampline_server::link::Sessions;
use stampline_server::{Server, ServerConfig};
use stampline_wire::{Card, Op};
use stampline_wire::{Frame, Hex, Secret, decode_frame, encode_frame};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

pub type RawLink = WebSocketStream<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>;

/// Upgrade `tls` (to `host:port`) to the link, send a hello for `user`, and return the socket
/// with the first frame the server answered (a welcome, or an error).
pub async fn hello_over(
    tls: tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
    host: &str,
    port: u16,
    user: &str,
    password: &str,
) -> (RawLink, Frame) {
    let (mut ws, _) = tokio_tungstenite::client_async(format!("wss://{host}:{port}/v1/link"), tls)
        .await
        .unwrap();
    let hello = Frame::Hello {
        version: 1,
        user: user.into(),
        password: Secret(password.into()),
        client_nonce: Hex([7; 8]),
        client: "raw-test/1".into(),
        platform: None,
    };
    ws.send(Message::text(encode_frame(&hello))).await.unwrap();
    let first = match ws.next().await {
        Some(Ok(Message::Text(t))) => decode_frame(t.as_str()).unwrap(),
        other => panic!("expected a frame, got {other:?}"),
    };
    (ws, first)
}

pub const PASSWORD: &str = "correct horse battery staple";

pub struct World {
    pub endpoint: Endpoint,
    pub sessions: Arc<Sessions>,
    pub core: Arc<Core>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    /// The temporary directory that holds the data dir (`data`).
    pub dir: tempfile::TempDir,
}

impl Drop for World {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

pub async fn world(beat_interval_ms: u64, beat_timeout_ms: u64, confirm_window_ms: i64) -> World {
    world_on(
        beat_interval_ms,
        beat_timeout_ms,
        confirm_window_ms,
        Clock::system(),
    )
    .await
}

/// A world whose private tier reads time from `clock`.
pub async fn world_on(
    beat_interval_ms: u64,
    beat_timeout_ms: u64,
    confirm_window_ms: i64,
    clock: Clock,
) -> World {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = ServerConfig::new(dir.path().join("data"));
    cfg.beat_interval_ms = beat_interval_ms;
    cfg.beat_timeout_ms = beat_timeout_ms;
    cfg.core.confirm_window_ms = confirm_window_ms;
    cfg.core.clock = clock;
    let server = Server::open(cfg).unwrap();
    let core = Arc::clone(server.core());
    let trust = Trust::from_file(server.trust_path()).unwrap();
    let sessions = server.sessions();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(server.run(listener, async {
        let _ = rx.await;
    }));
    World {
        endpoint: Endpoint::new(&format!("https://{addr}"), trust).unwrap(),
        sessions,
        core,
        stop: Some(tx),
        dir,
    }
}

impl World {
    pub async fn user(&self, name: &str, fund_mills: u64) -> Link {
        self.endpoint
            .register(
                &json!({"user": name, "password": PASSWORD, "name": "Ann Example",
                "address": "1 Main St", "city": "Boston", "state": "MA", "zip": "02134"}),
            )
            .await
            .unwrap();
        let link = Link::connect(&self.endpoint, name, PASSWORD).await.unwrap();
        if fund_mills > 0 {
            let r = link
                .request(fund(fund_mills, "4242424242424242"))
                .await
                .unwrap();
            assert!(r.ok, "{r:?}");
        }
        link
    }
}

pub fn fund(amount_mills: u64, number: &str) -> Op {
    Op::Fund {
        amount_mills,
        card: Some(Card {
            number: Secret(number.into()),
            exp: "12/30".into(),
            cvc: Secret("123".into()),
        }),
        card_token: None,
        eft: None,
    }
}

pub fn today() -> String {
    time::OffsetDateTime::now_utc().date().to_string()
}

pub fn issue(postage_mills: u64, from_zip: &str, to_zip: &str) -> Op {
    Op::Issue {
        kind: "postage".into(),
        postage_mills,
        from_zip: from_zip.into(),
        to_zip: to_zip.into(),
        mail_date: today(),
        class: "first-class-letter".into(),
        weight_oz: None,
        amount_mills: None,
        fields: Default::default(),
        valid_until: None,
    }
}

/// A world on a manual clock starting now, and the hand that moves it.
pub async fn world_on_manual_clock(confirm_window_ms: i64) -> (World, Arc<ManualClock>) {
    let (clock, hand) = Clock::manual(now_ms());
    (world_on(500, 2_000, confirm_window_ms, clock).await, hand)
}

/// A raw link: TLS + WebSocket + hello, returning the socket right after the welcome (or error).
pub async fn raw_hello(ep: &Endpoint, user: &str, password: &str) -> (RawLink, Frame) {
    let tls = ep.connect_tls(&[b"http/1.1"]).await.unwrap();
    hello_over(tls, &ep.host, ep.port, user, password).await
}
