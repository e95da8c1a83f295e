//! The client side of a link: hello, the welcome's signature check against the pinned auth key,
//! heartbeat checks and acks, sealed requests and their responses.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use stampline_wire::{
    Channel, Direction, Frame, Hex, Op, PROTOCOL_VERSION, Request, Response, Secret, WireError,
    auth_transcript, beat_ack_mac, codes, decode_frame, encode_frame, session_key, user_key,
    verify_auth_signature, verify_beat_mac,
};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use uuid::Uuid;
use zeroize::Zeroizing;

use crate::http::{Endpoint, HttpError};

/// How long one request may wait for its response.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the server may take to answer hello.
pub const WELCOME_TIMEOUT: Duration = Duration::from_secs(30);
/// This client's name in hello.
pub const CLIENT_NAME: &str = concat!("stampline-cli/", env!("CARGO_PKG_VERSION"));
/// The platform the client tells the server in its hello: its operating system and
/// architecture, e.g. `linux-x86_64`.
pub fn platform() -> String {
    format!("{}-{}", std::env::consts::OS, std::env::consts::ARCH)
}

#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error(transparent)]
    Http(#[from] HttpError),
    #[error("server refused the link: {code}: {message}")]
    Refused { code: String, message: String },
    #[error("the server's signature of our challenge does not verify with the pinned key")]
    BadServerSignature,
    #[error("link lost: {0}")]
    Lost(String),
    #[error("protocol error: {0}")]
    Protocol(String),
    #[error("no response within {0:?}")]
    Timeout(Duration),
}

impl LinkError {
    pub fn code(&self) -> String {
        match self {
            LinkError::Http(e) => e.code(),
            LinkError::Refused { code, .. } => code.clone(),
            LinkError::BadServerSignature => "bad_server_signature".into(),
            LinkError::Lost(_) => "link_lost".into(),
            LinkError::Protocol(_) => "protocol_error".into(),
            LinkError::Timeout(_) => "timeout".into(),
        }
    }
}

type Pending = Arc<Mutex<HashMap<String, oneshot::Sender<Response>>>>;

struct Shared {
    channel: Mutex<Channel>,
    out: mpsc::UnboundedSender<Message>,
    pending: Pending,
    lost: watch::Sender<Option<String>>,
    /// Valid heartbeats received.
    beats: std::sync::atomic::AtomicU64,
    /// The longest wait for a valid heartbeat so far (from the welcome, then from each beat), µs.
    max_gap_us: std::sync::atomic::AtomicU64,
}

/// What a link has seen of its heartbeats.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BeatStats {
    /// Valid heartbeats received.
    pub beats: u64,
    /// The longest wait for one (from the welcome, then from the previous beat).
    pub max_gap: Duration,
}

impl Shared {
    fn lose(&self, reason: String) {
        self.lost.send_if_modified(|r| {
            if r.is_none() {
                *r = Some(reason);
                true
            } else {
                false
            }
        });
        // Dropping the senders fails every waiting request.
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        let _ = self.out.send(Message::Close(None));
    }
}

/// A live link. Cheap to share by reference; requests may run concurrently.
pub struct Link {
    shared: Arc<Shared>,
    lost: watch::Receiver<Option<String>>,
    session: Uuid,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link")
            .field("session", &self.session)
            .finish_non_exhaustive()
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

fn random8() -> [u8; 8] {
    let mut b = [0u8; 8];
    // The system RNG does not fail on supported platforms.
    let _ = aws_lc_rs::rand::fill(&mut b);
    b
}

/// A fresh request id (idempotency key): a UUID version 7, time-ordered with 74 random bits.
/// Ids that grow with time land at the end of the user's range of the server's request index, so a
/// busy ledger writes one index page per user instead of one random page per request (measured:
/// docs/BENCHMARKS.md).
pub fn new_request_id() -> Uuid {
    Uuid::now_v7()
}

/// The pauses before a hello answered `busy` (every password-hashing slot of the server in use,
/// as in a flood of hellos) is sent again, each jittered between half and the whole: 1 to 2 s
/// in all before the last `busy` is the answer.
pub const BUSY_HELLO_PAUSES_MS: [u64; 4] = [150, 300, 600, 1_000];

impl Link {
    /// Log in and bring the link up. `K_user` is derived first (PBKDF2, 600,000 rounds) so the
    /// first heartbeat can be checked the moment it arrives. A hello answered `busy` is sent
    /// again after the pauses of [`BUSY_HELLO_PAUSES_MS`].
    pub async fn connect(
        endpoint: &Endpoint,
        user: &str,
        password: &str,
    ) -> Result<Link, LinkError> {
        let (pw, u) = (password.to_owned(), user.to_owned());
        let k_user: Zeroizing<[u8; 32]> = tokio::task::spawn_blocking(move || user_key(&pw, &u))
            .await
            .map_err(|e| LinkError::Protocol(e.to_string()))?;
        Link::connect_with_key(endpoint, user, password, k_user).await
    }

    /// [`Link::connect`] with `K_user` derived already (`stampline_wire::user_key` of this user
    /// and password): a client that opens many links for one user (the load generator) derives it
    /// once instead of 600,000 PBKDF2 rounds a link.
    pub async fn connect_with_key(
        endpoint: &Endpoint,
        user: &str,
        password: &str,
        k_user: Zeroizing<[u8; 32]>,
    ) -> Result<Link, LinkError> {
        let mut pauses = BUSY_HELLO_PAUSES_MS.iter();
        loop {
            match Link::hello(endpoint, user, password, k_user.clone()).await {
                Err(LinkError::Refused { code, message }) if code == codes::BUSY => {
                    let Some(&pause_ms) = pauses.next() else {
                        return Err(LinkError::Refused { code, message });
                    };
                    // Jittered (half to the whole pause), so that clients refused together do
                    // not all come back together.
                    let jitter = u64::from(random8()[0]) * pause_ms / 2 / 255;
                    tokio::time::sleep(Duration::from_millis(pause_ms / 2 + jitter)).await;
                }
                other => return other,
            }
        }
    }

    /// One hello: TLS, WebSocket, hello, welcome (or the server's refusal), the link up.
    async fn hello(
        endpoint: &Endpoint,
        user: &str,
        password: &str,
        k_user: Zeroizing<[u8; 32]>,
    ) -> Result<Link, LinkError> {
        let tls = endpoint.connect_tls(&[b"http/1.1"]).await?;
        let url = format!("wss://{}:{}/v1/link", endpoint.host, endpoint.port);
        let mut config = WebSocketConfig::default();
        config.max_message_size = Some(2 * stampline_wire::MAX_FRAME_BYTES);
        config.max_frame_size = Some(2 * stampline_wire::MAX_FRAME_BYTES);
        config.read_buffer_size = stampline_wire::LINK_READ_BUFFER_BYTES;
        let (mut ws, _) = tokio_tungstenite::client_async_with_config(url, tls, Some(config))
            .await
            .map_err(|e| LinkError::Protocol(format!("WebSocket handshake: {e}")))?;

        let cn = random8();
        let hello = Frame::Hello {
            version: PROTOCOL_VERSION,
            user: user.to_owned(),
            password: Secret(password.to_owned()),
            client_nonce: Hex(cn),
            client: CLIENT_NAME.into(),
            platform: Some(platform()),
        };
        ws.send(Message::text(encode_frame(&hello)))
            .await
            .map_err(|e| LinkError::Lost(e.to_string()))?;
        let first = tokio::time::timeout(WELCOME_TIMEOUT, ws.next())
            .await
            .map_err(|_| LinkError::Timeout(WELCOME_TIMEOUT))?;
        let text = match first {
            Some(Ok(Message::Text(t))) => t,
            Some(Ok(Message::Close(c))) => {
                return Err(LinkError::Lost(format!(
                    "closed before welcome: {}",
                    c.map(|c| c.reason.to_string()).unwrap_or_default()
                )));
            }
            Some(Ok(_)) => return Err(LinkError::Protocol("expected a text frame".into())),
            Some(Err(e)) => return Err(LinkError::Lost(e.to_string())),
            None => return Err(LinkError::Lost("closed before welcome".into())),
        };
        let (session, sn, signature, beat_interval_ms, beat_timeout_ms) =
            match decode_frame(text.as_str()).map_err(|e| LinkError::Protocol(e.to_string()))? {
                Frame::Welcome {
                    session,
                    server_nonce,
                    signature,
                    beat_interval_ms,
                    beat_timeout_ms,
                    ..
                } => (
                    session,
                    server_nonce.0,
                    signature.0,
                    beat_interval_ms,
                    beat_timeout_ms,
                ),
                Frame::Error { code, message } => return Err(LinkError::Refused { code, message }),
                other => {
                    return Err(LinkError::Protocol(format!(
                        "expected welcome, got {}",
                        other.type_name()
                    )));
                }
            };
        let transcript = auth_transcript(user, &cn, &sn, &session);
        if verify_auth_signature(&endpoint.trust.auth_spki_der, &transcript, &signature).is_err() {
            let _ = ws.close(None).await;
            return Err(LinkError::BadServerSignature);
        }
        let k_s = session_key(&k_user, &cn, &sn, &session)
            .map_err(|e| LinkError::Protocol(e.to_string()))?;
        let channel = Channel::new(&k_s, session, Direction::ClientToServer)
            .map_err(|e| LinkError::Protocol(e.to_string()))?;

        let (sink, stream) = ws.split();
        let (out_tx, out_rx) = mpsc::unbounded_channel::<Message>();
        let (lost_tx, lost_rx) = watch::channel(None);
        let shared = Arc::new(Shared {
            channel: Mutex::new(channel),
            out: out_tx,
            pending: Arc::new(Mutex::new(HashMap::new())),
            lost: lost_tx,
            beats: std::sync::atomic::AtomicU64::new(0),
            max_gap_us: std::sync::atomic::AtomicU64::new(0),
        });
        let writer = tokio::spawn(write_loop(sink, out_rx, Arc::clone(&shared)));
        let reader = tokio::spawn(read_loop(
            stream,
            Arc::clone(&shared),
            Arc::new(k_user),
            session,
            Duration::from_millis(beat_interval_ms.saturating_add(beat_timeout_ms)),
        ));
        Ok(Link {
            shared,
            lost: lost_rx,
            session,
            tasks: vec![writer, reader],
        })
    }

    pub fn session(&self) -> Uuid {
        self.session
    }

    /// The heartbeats seen so far.
    pub fn beat_stats(&self) -> BeatStats {
        use std::sync::atomic::Ordering::Relaxed;
        BeatStats {
            beats: self.shared.beats.load(Relaxed),
            max_gap: Duration::from_micros(self.shared.max_gap_us.load(Relaxed)),
        }
    }

    /// Why the link was lost, if it was.
    pub fn lost_reason(&self) -> Option<String> {
        self.lost.borrow().clone()
    }

    /// A watch that changes once, when the link is lost (to cancel print jobs).
    pub fn watch_lost(&self) -> watch::Receiver<Option<String>> {
        self.lost.clone()
    }

    /// Send a request with a fresh id.
    pub async fn request(&self, op: Op) -> Result<Response, LinkError> {
        self.request_with_id(new_request_id(), op).await
    }

    /// Send a request with the given id (its idempotency key: reuse it to retry).
    pub async fn request_with_id(&self, id: Uuid, op: Op) -> Result<Response, LinkError> {
        let request = Request { id, op };
        self.request_raw(&id.to_string(), &request.to_json()).await
    }

    /// Seal and send any plaintext and wait for the response that echoes `id`. Callers other than
    /// [`Link::request_with_id`] are protocol tests that send what a well-behaved client would not.
    pub async fn request_raw(&self, id: &str, plaintext: &[u8]) -> Result<Response, LinkError> {
        if let Some(reason) = self.lost_reason() {
            return Err(LinkError::Lost(reason));
        }
        let (tx, rx) = oneshot::channel();
        let key = id.to_owned();
        self.shared
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key.clone(), tx);
        {
            // Seal and queue under one lock, so frames leave in sequence order.
            let mut channel = self
                .shared
                .channel
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            let frame = channel
                .seal(plaintext)
                .map_err(|e| LinkError::Protocol(e.to_string()))?;
            self.shared
                .out
                .send(Message::text(encode_frame(&frame)))
                .map_err(|_| LinkError::Lost(self.lost_reason().unwrap_or_default()))?;
        }
        match tokio::time::timeout(REQUEST_TIMEOUT, rx).await {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(_)) => Err(LinkError::Lost(
                self.lost_reason().unwrap_or_else(|| "link closed".into()),
            )),
            Err(_) => {
                self.shared
                    .pending
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&key);
                Err(LinkError::Timeout(REQUEST_TIMEOUT))
            }
        }
    }

    /// Send a raw text frame exactly as given (for protocol tests of the server).
    pub fn send_raw(&self, text: String) {
        let _ = self.shared.out.send(Message::text(text));
    }

    /// Seal arbitrary plaintext as the next frame and return the frame's text without sending it
    /// (for protocol tests: replay, tamper).
    pub fn seal_raw(&self, plaintext: &[u8]) -> Result<String, LinkError> {
        let mut channel = self
            .shared
            .channel
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let frame = channel
            .seal(plaintext)
            .map_err(|e| LinkError::Protocol(e.to_string()))?;
        Ok(encode_frame(&frame))
    }

    /// Wait until the link is lost, or `limit` passes; returns the reason.
    pub async fn wait_lost(&self, limit: Duration) -> Option<String> {
        let mut rx = self.lost.clone();
        let _ = tokio::time::timeout(limit, rx.wait_for(Option::is_some)).await;
        self.lost_reason()
    }

    /// Say bye and close cleanly.
    pub async fn bye(self) -> Result<(), LinkError> {
        let r = self.request(Op::Bye {}).await?;
        if !r.ok {
            return Err(LinkError::Protocol("bye refused".into()));
        }
        Ok(())
    }
}

async fn write_loop(
    mut sink: futures_util::stream::SplitSink<
        tokio_tungstenite::WebSocketStream<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>,
        Message,
    >,
    mut rx: mpsc::UnboundedReceiver<Message>,
    shared: Arc<Shared>,
) {
    while let Some(msg) = rx.recv().await {
        // Frames queued at the same time leave in one write (one TLS record, one system call).
        let mut next = Some(msg);
        let mut closing = false;
        while let Some(msg) = next.take() {
            closing = matches!(msg, Message::Close(_));
            if let Err(e) = sink.feed(msg).await {
                shared.lose(format!("connection lost: {e}"));
                return;
            }
            if !closing {
                next = rx.try_recv().ok();
            }
        }
        if let Err(e) = sink.flush().await {
            shared.lose(format!("connection lost: {e}"));
            break;
        }
        if closing {
            break;
        }
    }
}

async fn read_loop(
    mut stream: futures_util::stream::SplitStream<
        tokio_tungstenite::WebSocketStream<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>,
    >,
    shared: Arc<Shared>,
    k_user: Arc<Zeroizing<[u8; 32]>>,
    session: Uuid,
    beat_window: Duration,
) {
    let mut deadline = Instant::now() + beat_window;
    let mut last_beat = Instant::now();
    let mut last_seq: u64 = 0;
    let reason = loop {
        let next = tokio::select! {
            _ = tokio::time::sleep_until(deadline) => {
                break format!("no valid heartbeat within {} ms", beat_window.as_millis());
            }
            next = stream.next() => next,
        };
        let text = match next {
            Some(Ok(Message::Text(t))) => t,
            Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
            Some(Ok(Message::Binary(_))) => break "server sent a binary frame".into(),
            Some(Ok(Message::Close(c))) => {
                break match c {
                    Some(c) if u16::from(c.code) == 1000 => "closed by the server".into(),
                    Some(c) => {
                        format!("closed by the server ({}): {}", u16::from(c.code), c.reason)
                    }
                    None => "closed by the server".into(),
                };
            }
            Some(Err(e)) => break format!("connection lost: {e}"),
            None => break "connection lost".into(),
        };
        match decode_frame(text.as_str()) {
            Ok(Frame::Beat {
                seq,
                challenge,
                mac,
            }) => {
                if seq != last_seq + 1 {
                    break format!("heartbeat out of sequence ({seq} after {last_seq})");
                }
                if verify_beat_mac(&k_user, &session, seq, &challenge.0, &mac.0).is_err() {
                    break "heartbeat MAC does not verify".into();
                }
                last_seq = seq;
                let now = Instant::now();
                let gap =
                    u64::try_from(now.duration_since(last_beat).as_micros()).unwrap_or(u64::MAX);
                last_beat = now;
                shared
                    .beats
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                shared
                    .max_gap_us
                    .fetch_max(gap, std::sync::atomic::Ordering::Relaxed);
                deadline = now + beat_window;
                let ack = Frame::BeatAck {
                    seq,
                    mac: Hex(beat_ack_mac(&k_user, &session, seq, &challenge.0)),
                };
                let _ = shared.out.send(Message::text(encode_frame(&ack)));
            }
            Ok(Frame::Sealed { seq, nonce, ct }) => {
                let opened = shared
                    .channel
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .open(seq, &nonce.0, &ct);
                let plain = match opened {
                    Ok(p) => p,
                    Err(e) => break format!("sealed frame refused: {e}"),
                };
                match Response::from_json(&plain) {
                    Ok(resp) => {
                        let waiter = shared
                            .pending
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .remove(&resp.id);
                        if let Some(w) = waiter {
                            let _ = w.send(resp);
                        }
                    }
                    Err(e) => break format!("bad response: {e}"),
                }
            }
            Ok(Frame::Error { code, message }) => {
                break format!("server ended the link: {code}: {message}");
            }
            Ok(other) => break format!("unexpected {} frame", other.type_name()),
            Err(WireError::FrameTooLarge) => break "oversized frame from the server".into(),
            Err(e) => break format!("bad frame from the server: {e}"),
        }
    };
    shared.lose(reason);
}
