//! The gateway's side of the internal channel: one connection to the core, kept up by a task that
//! reconnects (with growing pauses, up to [`MAX_RECONNECT_PAUSE`]) whenever it is lost.
//!
//! [`CoreClient::watch`] tells the links which connection is up: `Some(n)` for the `n`th, `None`
//! while there is none. A link belongs to the connection it was opened on; when that one is gone
//! the core has forgotten the link, so the link ends (a link without a core must not look alive),
//! and new hellos are answered `unavailable` until the next connection is up.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::pki_types::ServerName;
use serde_json::value::RawValue;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, watch};

use super::{Call, CallFrame, CoreInfo, ReplyFrame, encode, read_message, write_loop};
use crate::core::CoreError;
use crate::internal_ca::CORE_SERVER_NAME;

/// The longest pause between two attempts to reach the core.
pub const MAX_RECONNECT_PAUSE: Duration = Duration::from_secs(1);
/// How long one call may wait for its answer.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// How long connecting (TCP and TLS) may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the gateway asks the core whether it is there, when nothing else is asked...
pub const KEEPALIVE_EVERY: Duration = Duration::from_secs(1);
/// ...and how long it waits for the answer before it takes the connection for lost (a core
/// cut off without a reset, its links would otherwise look alive).
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(3);

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<ReplyFrame>>>>;

/// One live connection: its number, its write queue and the calls awaiting answers.
#[derive(Clone)]
struct Conn {
    number: u64,
    tx: mpsc::Sender<Vec<u8>>,
    pending: Pending,
}

/// The gateway's way to the core.
pub struct CoreClient {
    addr: String,
    tls: Arc<rustls::ClientConfig>,
    conn: Mutex<Option<Conn>>,
    up: watch::Sender<Option<u64>>,
    next_id: AtomicU64,
    sandbox: AtomicBool,
}

impl std::fmt::Debug for CoreClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CoreClient")
            .field("addr", &self.addr)
            .field("up", &*self.up.borrow())
            .finish_non_exhaustive()
    }
}

fn unreachable_core() -> CoreError {
    CoreError::Unavailable("the private tier is unreachable; try again shortly".into())
}

impl CoreClient {
    /// A client for the core at `addr` (HOST:PORT); [`CoreClient::run`] keeps it connected.
    pub fn new(addr: String, tls: Arc<rustls::ClientConfig>) -> Arc<CoreClient> {
        Arc::new(CoreClient {
            addr,
            tls,
            conn: Mutex::new(None),
            up: watch::channel(None).0,
            next_id: AtomicU64::new(1),
            sandbox: AtomicBool::new(false),
        })
    }

    /// Which connection is up (`None`: none).
    pub fn watch(&self) -> watch::Receiver<Option<u64>> {
        self.up.subscribe()
    }

    /// Whether the core said it runs on the built-in sandboxes.
    pub fn sandbox(&self) -> bool {
        self.sandbox.load(Ordering::Relaxed)
    }

    fn current(&self) -> Option<Conn> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn set_current(&self, conn: Option<Conn>) {
        let number = conn.as_ref().map(|c| c.number);
        *self.conn.lock().unwrap_or_else(|e| e.into_inner()) = conn;
        self.up.send_replace(number);
    }

    /// Call the core; the answer and the number of the connection that carried it.
    pub async fn call(&self, call: Call) -> Result<(Box<RawValue>, u64), CoreError> {
        let conn = self.current().ok_or_else(unreachable_core)?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        conn.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, tx);
        if conn.tx.send(encode(&CallFrame { id, call })).await.is_err() {
            conn.pending
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&id);
            return Err(unreachable_core());
        }
        let reply = match tokio::time::timeout(CALL_TIMEOUT, rx).await {
            Ok(Ok(reply)) => reply,
            // The connection ended (its pending calls are dropped), or the core is too slow.
            Ok(Err(_)) => return Err(unreachable_core()),
            Err(_) => {
                conn.pending
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&id);
                return Err(CoreError::Unavailable(
                    "the private tier did not answer in time; retry with the same request id"
                        .into(),
                ));
            }
        };
        match (reply.ok, reply.err) {
            (_, Some(refusal)) => Err(refusal.into()),
            (Some(ok), None) => Ok((ok, conn.number)),
            (None, None) => Err(CoreError::Internal("the core sent an empty answer".into())),
        }
    }

    /// Keep a connection to the core up, for ever (abort the task to stop).
    pub async fn run(self: Arc<Self>) {
        let mut pause = Duration::from_millis(50);
        let mut number = 0u64;
        let mut last_error = String::new();
        loop {
            match self.connect().await {
                Ok(stream) => {
                    number += 1;
                    pause = Duration::from_millis(50);
                    last_error.clear();
                    self.serve_connection(stream, number).await;
                }
                Err(e) => {
                    let e = e.to_string();
                    if e != last_error {
                        tracing::warn!(core = %self.addr, error = %e, "cannot reach the core");
                        last_error = e;
                    }
                }
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(MAX_RECONNECT_PAUSE);
        }
    }

    async fn connect(&self) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
        let attempt = async {
            let tcp = TcpStream::connect(&self.addr).await?;
            let _ = tcp.set_nodelay(true);
            let name = ServerName::try_from(CORE_SERVER_NAME).map_err(std::io::Error::other)?;
            tokio_rustls::TlsConnector::from(Arc::clone(&self.tls))
                .connect(name, tcp)
                .await
        };
        tokio::time::timeout(CONNECT_TIMEOUT, attempt)
            .await
            .map_err(|_| std::io::Error::other("timed out"))?
    }

    /// Use one connection until it ends: learn what the core runs on, announce the connection,
    /// dispatch answers, ask every [`KEEPALIVE_EVERY`] whether the core is still there; then fail
    /// every call still waiting and announce that none is up.
    async fn serve_connection(
        &self,
        stream: tokio_rustls::client::TlsStream<TcpStream>,
        number: u64,
    ) {
        let (mut rd, wr) = tokio::io::split(stream);
        let (tx, rx) = mpsc::channel::<Vec<u8>>(1024);
        let writer = tokio::spawn(write_loop(tokio::io::BufWriter::new(wr), rx));
        let pending: Pending = Arc::default();
        let conn = Conn {
            number,
            tx,
            pending: Arc::clone(&pending),
        };
        *self.conn.lock().unwrap_or_else(|e| e.into_inner()) = Some(conn.clone());
        let reader = async {
            loop {
                let body = match read_message(&mut rd).await {
                    Ok(Some(b)) => b,
                    Ok(None) => return "closed by the core".to_owned(),
                    Err(e) => return format!("read: {e}"),
                };
                let reply: ReplyFrame = match serde_json::from_slice(&body) {
                    Ok(r) => r,
                    Err(e) => return format!("malformed reply: {e}"),
                };
                let waiting = pending
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&reply.id);
                if let Some(w) = waiting {
                    let _ = w.send(reply);
                }
            }
        };
        let greet = async {
            match self.call(Call::Info {}).await {
                Ok((info, _)) => {
                    let info: CoreInfo = serde_json::from_str(info.get()).unwrap_or_default();
                    self.sandbox.store(info.sandbox, Ordering::Relaxed);
                    self.set_current(Some(conn.clone()));
                    tracing::info!(core = %self.addr, connection = number, "connected to the core");
                }
                Err(e) => return format!("the core did not answer its first call: {e}"),
            }
            loop {
                tokio::time::sleep(KEEPALIVE_EVERY).await;
                let asked = tokio::time::timeout(KEEPALIVE_TIMEOUT, self.call(Call::Info {}));
                match asked.await {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => return format!("keep-alive: {e}"),
                    Err(_) => return "the core stopped answering".to_owned(),
                }
            }
        };
        let why = tokio::select! {
            why = reader => why,
            why = greet => why,
        };
        self.set_current(None);
        drop(conn);
        writer.abort();
        // Every call still waiting learns that the connection is gone.
        pending.lock().unwrap_or_else(|e| e.into_inner()).clear();
        tracing::warn!(core = %self.addr, connection = number, %why, "lost the core");
    }
}
