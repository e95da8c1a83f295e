//! One link (docs/PROTOCOL.md) on the server side: hello → welcome, heartbeats and their acks,
//! sealed requests handed to the private tier, and the end of the link on any fault.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures_util::{SinkExt as _, StreamExt as _};
use stampline_wire::replies::ByeReply;
use stampline_wire::{
    Channel, Direction, Frame, Hex, MAX_CLIENT_BYTES, MAX_PASSWORD_BYTES, MAX_USER_BYTES,
    PROTOCOL_VERSION, Response, WireError, auth_transcript, beat_mac, codes, decode_frame,
    encode_frame, parse_request, session_key, verify_beat_ack_mac,
};
use tokio::sync::mpsc;
use tokio::time::Instant;
use uuid::Uuid;

use crate::error::CoreError;
use crate::firewall::{RateKind, Ticket};
use crate::state::AppState;
pub use crate::state::{LinkConfig, SessionInfo, Sessions};

/// How long a new link may take to send its hello.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// Requests one link may have in the private tier at once.
pub const MAX_IN_FLIGHT_PER_LINK: usize = 32;
/// Live links one user may hold.
pub const MAX_LINKS_PER_USER: usize = 16;

/// Why a link ended; sent as an error frame before a 1008 close (except a clean bye).
struct Fault {
    code: &'static str,
    message: String,
}

impl From<WireError> for Fault {
    fn from(e: WireError) -> Self {
        Fault {
            code: e.code(),
            message: e.to_string(),
        }
    }
}

fn fault(code: &'static str, message: impl Into<String>) -> Fault {
    Fault {
        code,
        message: message.into(),
    }
}

fn random8() -> [u8; 8] {
    let mut b = [0u8; 8];
    // aws-lc-rs's system RNG does not fail on supported platforms; a zero challenge would still
    // be MAC'd and unique per seq.
    let _ = aws_lc_rs::rand::fill(&mut b);
    b
}

async fn send_frame(ws: &mut WebSocket, frame: &Frame) -> bool {
    ws.send(Message::Text(encode_frame(frame).into()))
        .await
        .is_ok()
}

async fn close(ws: &mut WebSocket, code: u16, reason: &str) {
    let _ = ws
        .send(Message::Close(Some(CloseFrame {
            code,
            reason: reason.to_owned().into(),
        })))
        .await;
}

async fn end_with(ws: &mut WebSocket, f: Fault) {
    tracing::info!(code = f.code, message = %f.message, "link ended");
    let _ = send_frame(
        ws,
        &Frame::Error {
            code: f.code.into(),
            message: f.message,
        },
    )
    .await;
    close(ws, 1008, f.code).await;
}

/// Run one link to its end. `ticket` is the connection's place among those not yet logged in
/// (crate::firewall), given up once the link is up.
pub async fn run(mut ws: WebSocket, state: AppState, peer: SocketAddr, ticket: Arc<Ticket>) {
    // 1. hello
    let hello = match tokio::time::timeout(HELLO_TIMEOUT, ws.next()).await {
        Ok(Some(Ok(Message::Text(text)))) => decode_frame(text.as_str()),
        Ok(Some(Ok(_))) => Err(WireError::Malformed("expected a text frame".into())),
        _ => return,
    };
    let (user, password, cn, client) = match hello {
        Ok(Frame::Hello {
            version,
            user,
            password,
            client_nonce,
            client,
        }) => {
            if version != PROTOCOL_VERSION {
                return end_with(
                    &mut ws,
                    fault(
                        codes::UNSUPPORTED_VERSION,
                        format!("this server speaks version {PROTOCOL_VERSION}"),
                    ),
                )
                .await;
            }
            if user.is_empty()
                || user.len() > MAX_USER_BYTES
                || password.0.len() > MAX_PASSWORD_BYTES
                || client.len() > MAX_CLIENT_BYTES
            {
                return end_with(&mut ws, fault(codes::BAD_FRAME, "field too long in hello")).await;
            }
            (user, password, client_nonce.0, client)
        }
        Ok(other) => {
            return end_with(
                &mut ws,
                fault(
                    codes::UNEXPECTED_FRAME,
                    format!("expected hello, got {}", other.type_name()),
                ),
            )
            .await;
        }
        Err(e) => return end_with(&mut ws, e.into()).await,
    };
    if !state.firewall.allow(RateKind::Logins, peer.ip()) {
        return end_with(
            &mut ws,
            fault(codes::RATE_LIMITED, "too many logins from this address"),
        )
        .await;
    }

    // 2. check the password, sign the transcript
    let session = Uuid::new_v4();
    let sn = random8();
    let transcript = auth_transcript(&user, &cn, &sn, &session);
    let detail = format!("client={client} address={peer} session={session}");
    let grant = match state
        .core
        .login(
            user.clone(),
            password,
            transcript,
            detail,
            crate::source::SourceKey::of(peer.ip()),
        )
        .await
    {
        Ok(g) => g,
        Err(e) => {
            let code = e.code();
            return end_with(&mut ws, fault(code, e.public_message())).await;
        }
    };
    if grant.admin && !state.firewall.config.admin.allows(peer.ip()) {
        tracing::warn!(user = %user, %peer, "admin login refused: not from an admin address");
        return end_with(
            &mut ws,
            fault(
                codes::FORBIDDEN,
                "the admin role may not log in from this address",
            ),
        )
        .await;
    }
    if state.sessions.count_for(grant.user_id) >= MAX_LINKS_PER_USER {
        return end_with(
            &mut ws,
            fault(
                codes::RATE_LIMITED,
                format!("at most {MAX_LINKS_PER_USER} live links per user"),
            ),
        )
        .await;
    }
    let channel = session_key(&grant.k_user, &cn, &sn, &session)
        .and_then(|k_s| Channel::new(&k_s, session, Direction::ServerToClient));
    let Ok(mut channel) = channel else {
        return end_with(&mut ws, fault(codes::INTERNAL, "key derivation failed")).await;
    };
    let welcome = Frame::Welcome {
        session,
        server_nonce: Hex(sn),
        key_id: grant.auth_key_id.clone(),
        signature: Hex(grant.signature),
        beat_interval_ms: state.link.beat_interval_ms,
        beat_timeout_ms: state.link.beat_timeout_ms,
    };
    if !send_frame(&mut ws, &welcome).await {
        return;
    }
    // Logged in: the connection now counts against its user's links, not its source's.
    ticket.logged_in();
    state.sessions.lock().insert(
        session,
        SessionInfo {
            session,
            user: user.clone(),
            user_id: grant.user_id,
            client,
            address: peer.to_string(),
            connected_at_ms: state.core.clock().now_ms(),
            last_beat_ms: None,
            round_trip_ms: None,
        },
    );
    tracing::info!(%session, user = %user, %peer, "link up");

    let k_user = Arc::new(grant.k_user);
    let (done_tx, mut done_rx) = mpsc::channel::<Response>(MAX_IN_FLIGHT_PER_LINK);
    let result = serve_link(
        &mut ws,
        &state,
        session,
        grant.user_id,
        k_user,
        &mut channel,
        done_tx,
        &mut done_rx,
    )
    .await;
    state.sessions.lock().remove(&session);
    // Let requests already in the private tier finish, so that an item issued just as the link
    // broke is covered by the confirmation window started below.
    while done_rx.recv().await.is_some() {}
    state.core.link_ended(grant.user_id).await;
    match result {
        Ok(()) => {
            tracing::info!(%session, "link closed by bye");
            close(&mut ws, 1000, "bye").await;
        }
        Err(f) => end_with(&mut ws, f).await,
    }
}

/// The live part of a link: returns Ok after a bye, Err with the fault that ended it otherwise.
#[allow(clippy::too_many_arguments)]
async fn serve_link(
    ws: &mut WebSocket,
    state: &AppState,
    session: Uuid,
    user_id: i64,
    k_user: Arc<zeroize::Zeroizing<[u8; 32]>>,
    channel: &mut Channel,
    done_tx: mpsc::Sender<Response>,
    done_rx: &mut mpsc::Receiver<Response>,
) -> Result<(), Fault> {
    let interval = Duration::from_millis(state.link.beat_interval_ms.max(1));
    let timeout = Duration::from_millis(state.link.beat_timeout_ms.max(1));
    let mut next_beat = Instant::now() + interval;
    let mut beat_seq: u64 = 0;
    // Beats sent and not yet acknowledged, oldest first: (seq, challenge, sent at).
    let mut outstanding: VecDeque<(u64, [u8; 8], Instant)> = VecDeque::new();
    let mut in_flight = 0usize;

    loop {
        let ack_deadline = outstanding.front().map(|(_, _, at)| *at + timeout);
        tokio::select! {
            _ = tokio::time::sleep_until(next_beat) => {
                beat_seq += 1;
                let challenge = random8();
                let mac = beat_mac(&k_user, &session, beat_seq, &challenge);
                let frame = Frame::Beat { seq: beat_seq, challenge: Hex(challenge), mac: Hex(mac) };
                if !send_frame(ws, &frame).await {
                    return Err(fault(codes::SESSION_ENDED, "connection lost"));
                }
                outstanding.push_back((beat_seq, challenge, Instant::now()));
                next_beat += interval;
            }
            _ = async { match ack_deadline { Some(d) => tokio::time::sleep_until(d).await, None => std::future::pending().await } } => {
                return Err(fault(codes::BEAT_TIMEOUT, "heartbeat not acknowledged in time"));
            }
            Some(response) = done_rx.recv() => {
                // Answers that are ready at the same time leave in one write (one TLS record and
                // one system call rather than one each).
                let mut next = Some(response);
                while let Some(response) = next {
                    in_flight -= 1;
                    let frame = channel.seal(&response.to_json())?;
                    if ws.feed(Message::Text(encode_frame(&frame).into())).await.is_err() {
                        return Err(fault(codes::SESSION_ENDED, "connection lost"));
                    }
                    next = done_rx.try_recv().ok();
                }
                if ws.flush().await.is_err() {
                    return Err(fault(codes::SESSION_ENDED, "connection lost"));
                }
            }
            incoming = ws.next() => {
                let text = match incoming {
                    Some(Ok(Message::Text(text))) => text,
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                    Some(Ok(Message::Binary(_))) => return Err(fault(codes::BAD_FRAME, "binary frames are not part of the protocol")),
                    Some(Ok(Message::Close(_))) | None => return Err(fault(codes::SESSION_ENDED, "client closed the link")),
                    Some(Err(e)) => return Err(fault(codes::FRAME_TOO_LARGE, format!("frame refused: {e}"))),
                };
                match decode_frame(text.as_str())? {
                    Frame::BeatAck { seq, mac } => {
                        let Some((want, challenge, sent)) = outstanding.pop_front() else {
                            return Err(fault(codes::UNEXPECTED_FRAME, "ack without a beat"));
                        };
                        if seq != want {
                            return Err(fault(codes::BAD_SEQUENCE, format!("ack {seq} for beat {want}")));
                        }
                        verify_beat_ack_mac(&k_user, &session, seq, &challenge, &mac.0)?;
                        let rtt = sent.elapsed();
                        if rtt > timeout {
                            return Err(fault(codes::BEAT_TIMEOUT, "heartbeat acknowledged late"));
                        }
                        if let Some(info) = state.sessions.lock().get_mut(&session) {
                            info.last_beat_ms = Some(state.core.clock().now_ms());
                            info.round_trip_ms = Some(u64::try_from(rtt.as_millis()).unwrap_or(u64::MAX));
                        }
                    }
                    Frame::Sealed { seq, nonce, ct } => {
                        let plain = channel.open(seq, &nonce.0, &ct)?;
                        let (request, canonical) = match parse_request(&plain) {
                            Ok(r) => r,
                            Err(e) => {
                                let resp = Response::error(e.op.as_deref().unwrap_or(""), e.id.as_deref().unwrap_or(""), e.code, &e.message);
                                let frame = channel.seal(&resp.to_json())?;
                                if !send_frame(ws, &frame).await {
                                    return Err(fault(codes::SESSION_ENDED, "connection lost"));
                                }
                                continue;
                            }
                        };
                        if matches!(request.op, stampline_wire::Op::Bye {}) {
                            let resp = Response::ok_with("bye", &request.id.to_string(), &ByeReply {});
                            let frame = channel.seal(&resp.to_json())?;
                            let _ = send_frame(ws, &frame).await;
                            return Ok(());
                        }
                        if in_flight >= MAX_IN_FLIGHT_PER_LINK {
                            let resp = Response::error(request.op.name(), &request.id.to_string(), codes::RATE_LIMITED, "too many requests in flight on this link");
                            let frame = channel.seal(&resp.to_json())?;
                            if !send_frame(ws, &frame).await {
                                return Err(fault(codes::SESSION_ENDED, "connection lost"));
                            }
                            continue;
                        }
                        in_flight += 1;
                        let core = Arc::clone(&state.core);
                        let k = Arc::clone(&k_user);
                        let tx = done_tx.clone();
                        tokio::spawn(async move {
                            let resp = core.handle(user_id, k, request, canonical, session).await;
                            let _ = tx.send(resp).await;
                        });
                    }
                    other => {
                        return Err(fault(codes::UNEXPECTED_FRAME, format!("unexpected {} frame", other.type_name())));
                    }
                }
            }
        }
    }
}

impl From<CoreError> for Fault {
    fn from(e: CoreError) -> Self {
        Fault {
            code: e.code(),
            message: e.public_message(),
        }
    }
}
