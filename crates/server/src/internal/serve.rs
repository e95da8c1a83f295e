//! The core's side of the internal channel: it accepts only gateways whose certificate the
//! internal CA issued and the gateway registry still lists as not revoked (checked at each
//! connection, and again every [`REVOCATION_CHECK`] on live ones), answers their calls, and ends
//! every link of a gateway when its connection ends.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;
use serde_json::value::RawValue;
use stampline_wire::{Response, parse_request};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use super::{Call, CallFrame, CoreInfo, Refusal, ReplyFrame, encode, read_message, write_loop};
use crate::core::links::Owner;
use crate::core::{Core, CoreError};
use crate::internal_ca::GatewayRegistry;

/// How often a live gateway connection is checked against the registry (revocation).
pub const REVOCATION_CHECK: Duration = Duration::from_secs(1);
/// How long a gateway may take to finish its TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// A gateway asks every second (crate::internal::client::KEEPALIVE_EVERY); one silent this long
/// is taken for gone, and its links end.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections at once on the internal port, gateways and handshakes in progress together
/// (the port should be reachable from the gateways only; this bounds what anyone else can hold).
pub const MAX_CONNECTIONS: usize = 256;
/// Calls one gateway connection may have in the core at once (a gateway's links have at most
/// 32 each in flight; this bounds what one connection can ask of the core).
pub const MAX_CALLS_IN_FLIGHT: usize = 4096;

/// Serve gateways on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    core: Arc<Core>,
    data_dir: PathBuf,
    tls: Arc<rustls::ServerConfig>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    // Owner 0 is the local public tier; gateway connections count from 1.
    let next_owner = AtomicU64::new(1);
    let serve = |tcp: TcpStream, peer: SocketAddr, permit| {
        let owner = next_owner.fetch_add(1, Ordering::Relaxed);
        let conn = connection(
            tcp,
            peer,
            acceptor.clone(),
            Arc::clone(&core),
            data_dir.clone(),
            owner,
        );
        tokio::spawn(async move {
            let _permit = permit;
            conn.await;
        });
    };
    stampline_https::serve::accept_loop(listener, MAX_CONNECTIONS, serve, shutdown).await
}

/// Whether the registry (read afresh) admits this certificate; the gateway's name if so.
fn admitted(data_dir: &std::path::Path, cert: &[u8]) -> Result<String, String> {
    let registry = GatewayRegistry::load(data_dir).map_err(|e| format!("registry: {e:#}"))?;
    registry.admit(cert).map_err(|e| e.to_string())
}

async fn connection(
    tcp: TcpStream,
    peer: SocketAddr,
    acceptor: tokio_rustls::TlsAcceptor,
    core: Arc<Core>,
    data_dir: PathBuf,
    owner: Owner,
) {
    let _ = tcp.set_nodelay(true);
    // The CA check is rustls's: a peer without a certificate the internal CA issued fails here.
    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            tracing::warn!(%peer, error = %e, "internal connection refused at the TLS handshake");
            return;
        }
        Err(_) => return,
    };
    let cert = match tls.get_ref().1.peer_certificates().and_then(|c| c.first()) {
        Some(c) => c.to_vec(),
        None => return,
    };
    let name = match admitted(&data_dir, &cert) {
        Ok(name) => name,
        Err(why) => {
            tracing::warn!(%peer, %why, "gateway refused");
            return;
        }
    };
    tracing::info!(gateway = %name, %peer, "gateway connected");
    let (mut rd, wr) = tokio::io::split(tls);
    let (tx, rx) = mpsc::channel::<Vec<u8>>(1024);
    let writer = tokio::spawn(write_loop(tokio::io::BufWriter::new(wr), rx));
    let calls = Arc::new(tokio::sync::Semaphore::new(MAX_CALLS_IN_FLIGHT));
    // Calls are read and dispatched in their own task, never cut off half way (the framing would
    // be lost); the revocation check runs beside it, and whichever ends first ends the other.
    let reading = {
        let (core, tx, calls) = (Arc::clone(&core), tx.clone(), Arc::clone(&calls));
        async move {
            loop {
                let body = match tokio::time::timeout(IDLE_TIMEOUT, read_message(&mut rd)).await {
                    Err(_) => return format!("silent for {} s", IDLE_TIMEOUT.as_secs()),
                    Ok(Ok(Some(b))) => b,
                    Ok(Ok(None)) => return "closed by the gateway".to_owned(),
                    Ok(Err(e)) => return format!("read: {e}"),
                };
                let frame: CallFrame = match serde_json::from_slice(&body) {
                    Ok(f) => f,
                    Err(e) => return format!("malformed call: {e}"),
                };
                let Ok(permit) = Arc::clone(&calls).acquire_owned().await else {
                    return "closing".to_owned();
                };
                let (core, tx) = (Arc::clone(&core), tx.clone());
                tokio::spawn(async move {
                    let _permit = permit;
                    let reply = match execute(&core, owner, frame.call).await {
                        Ok(ok) => ReplyFrame {
                            id: frame.id,
                            ok: Some(ok),
                            err: None,
                        },
                        Err(e) => ReplyFrame {
                            id: frame.id,
                            ok: None,
                            err: Some(Refusal::from(&e)),
                        },
                    };
                    let _ = tx.send(encode(&reply)).await;
                });
            }
        }
    };
    let reader = tokio::spawn(reading);
    let revoked = async {
        let mut check = tokio::time::interval(REVOCATION_CHECK);
        loop {
            check.tick().await;
            if let Err(why) = admitted(&data_dir, &cert) {
                return format!("no longer admitted: {why}");
            }
        }
    };
    let reader_abort = reader.abort_handle();
    let why = tokio::select! {
        why = reader => why.unwrap_or_else(|e| format!("reader: {e}")),
        why = revoked => why,
    };
    reader_abort.abort();
    drop(tx);
    // Calls already in the core finish first, so that an item issued just as the connection broke
    // is covered by the confirmation window that ending its link starts.
    let all = u32::try_from(MAX_CALLS_IN_FLIGHT).unwrap_or(u32::MAX);
    let _ = tokio::time::timeout(Duration::from_secs(60), calls.acquire_many(all)).await;
    writer.abort();
    let ended = core.close_owner(owner).await;
    tracing::warn!(gateway = %name, %peer, %why, links_ended = ended, "gateway disconnected");
}

fn value<T: Serialize>(v: &T) -> Result<Box<RawValue>, CoreError> {
    serde_json::value::to_raw_value(v).map_err(|e| CoreError::Internal(format!("reply: {e}")))
}

/// One call, answered by the core's own methods.
async fn execute(core: &Arc<Core>, owner: Owner, call: Call) -> Result<Box<RawValue>, CoreError> {
    match call {
        Call::Info {} => value(&CoreInfo {
            sandbox: core.cmls().is_sandbox() || core.bank().is_sandbox(),
        }),
        Call::Register { form } => value(&core.register(form).await?),
        Call::Keys {} => value(
            &core
                .keys()
                .iter()
                .map(crate::core::signing_key)
                .collect::<Vec<_>>(),
        ),
        Call::ItemStatus { serial } => value(&core.item_status_public(serial).await?),
        Call::OpenSession { hello, beats } => value(&core.open_session(hello, owner, beats).await?),
        Call::Beats {
            session,
            first_seq,
            count,
        } => value(&core.beats(session, owner, first_seq, count)?),
        Call::Handle { session, request } => {
            let response = match parse_request(request.get().as_bytes()) {
                Ok((request, canonical)) => {
                    core.handle_on(session, owner, request, canonical).await
                }
                Err(e) => Response::error(
                    e.op.as_deref().unwrap_or(""),
                    e.id.as_deref().unwrap_or(""),
                    e.code,
                    &e.message,
                ),
            };
            String::from_utf8(response.to_json())
                .ok()
                .and_then(|json| RawValue::from_string(json).ok())
                .ok_or_else(|| CoreError::Internal("a response that is not JSON".into()))
        }
        Call::ReportLinks { reports } => value(&core.report_links(owner, reports)),
        Call::CloseSession { session } => {
            core.close_session(session, owner).await;
            value(&())
        }
    }
}
