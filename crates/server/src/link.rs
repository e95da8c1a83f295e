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
    PROTOCOL_VERSION, Response, WireError, codes, decode_frame, encode_frame, parse_request,
};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use uuid::Uuid;

use crate::core::links::{BeatTicket, LINK_REPORT_MS, LinkReport, SessionHello};
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
/// Heartbeats asked of the private tier at a time (at the default 5 s, over five minutes' worth).
pub const BEAT_BATCH: u32 = 64;
/// More are asked for when no more than this many are left.
pub const BEAT_LOW_WATER: usize = 8;

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
    let (user, password, cn, client, platform) = match hello {
        Ok(Frame::Hello {
            version,
            user,
            password,
            client_nonce,
            client,
            platform,
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
                || platform
                    .as_ref()
                    .is_some_and(|p| p.len() > MAX_CLIENT_BYTES)
            {
                return end_with(&mut ws, fault(codes::BAD_FRAME, "field too long in hello")).await;
            }
            (user, password, client_nonce.0, client, platform)
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

    // 2. the private tier checks the password, signs the transcript and opens the link
    let up = state.tier.watch();
    let hello = SessionHello {
        user: user.clone(),
        password,
        client_nonce: Hex(cn),
        client: client.clone(),
        platform,
        peer,
    };
    let (mut grant, connection) = match state.tier.open_session(hello, BEAT_BATCH).await {
        Ok(g) => g,
        Err(e) => return end_with(&mut ws, e.into()).await,
    };
    let session = grant.session;
    // From here on the private tier holds the link's keys: every way out closes it there.
    let refusal = if grant.admin && !state.firewall.config.admin.allows(peer.ip()) {
        tracing::warn!(user = %user, %peer, "admin login refused: not from an admin address");
        Some(fault(
            codes::FORBIDDEN,
            "the admin role may not log in from this address",
        ))
    } else if state.sessions.count_for(grant.user_id) >= MAX_LINKS_PER_USER {
        Some(fault(
            codes::RATE_LIMITED,
            format!("at most {MAX_LINKS_PER_USER} live links per user"),
        ))
    } else {
        None
    };
    let channel = Channel::new(&grant.k_s.0, session, Direction::ServerToClient);
    let mut channel = match (refusal, channel) {
        (None, Ok(channel)) => channel,
        (Some(f), _) => {
            state.tier.close_session(session).await;
            return end_with(&mut ws, f).await;
        }
        (None, Err(_)) => {
            state.tier.close_session(session).await;
            return end_with(&mut ws, fault(codes::INTERNAL, "key derivation failed")).await;
        }
    };
    let welcome = Frame::Welcome {
        session,
        server_nonce: grant.server_nonce,
        key_id: grant.auth_key_id.clone(),
        signature: grant.signature,
        beat_interval_ms: state.link.beat_interval_ms,
        beat_timeout_ms: state.link.beat_timeout_ms,
    };
    if !send_frame(&mut ws, &welcome).await {
        state.tier.close_session(session).await;
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
            connected_at_ms: state.tier.now_ms(),
            last_beat_ms: None,
            round_trip_ms: None,
        },
    );
    let kicked = state.sessions.end_switch(session);
    tracing::info!(%session, user = %user, %peer, "link up");

    let beats: VecDeque<BeatTicket> = std::mem::take(&mut grant.beats).into();
    let live = Live {
        session,
        connection,
        up,
        next_fetch: beats.back().map_or(1, |b| b.seq.saturating_add(1)),
        beats,
    };
    drop(grant);
    let (done_tx, mut done_rx) = mpsc::channel::<Vec<u8>>(MAX_IN_FLIGHT_PER_LINK);
    let result = serve_link(
        &mut ws,
        &state,
        live,
        &mut channel,
        (done_tx, &mut done_rx),
        kicked,
    )
    .await;
    state.sessions.remove(&session);
    // Let requests already in the private tier finish, so that an item issued just as the link
    // broke is covered by the confirmation window that closing the link starts.
    while done_rx.recv().await.is_some() {}
    state.tier.close_session(session).await;
    match result {
        Ok(()) => {
            tracing::info!(%session, "link closed by bye");
            close(&mut ws, 1000, "bye").await;
        }
        Err(f) => end_with(&mut ws, f).await,
    }
}

/// What a live link holds besides its socket and channel.
struct Live {
    session: Uuid,
    /// The connection to the private tier the link was opened on (crate::tier::PrivateTier::watch).
    connection: u64,
    up: watch::Receiver<Option<u64>>,
    /// Heartbeats made in advance by the private tier, oldest first.
    beats: VecDeque<BeatTicket>,
    /// The sequence number of the first heartbeat to ask for next.
    next_fetch: u64,
}

impl Live {
    /// The next heartbeat, asking the private tier for more when few are left. A private tier
    /// that does not hand them out in time ends the link.
    async fn next_beat(&mut self, state: &AppState) -> Result<BeatTicket, Fault> {
        if self.beats.len() <= BEAT_LOW_WATER {
            let wait = Duration::from_millis(state.link.beat_timeout_ms.max(1));
            let more = state.tier.beats(self.session, self.next_fetch, BEAT_BATCH);
            match tokio::time::timeout(wait, more).await {
                Ok(Ok(more)) => {
                    if let Some(last) = more.last() {
                        self.next_fetch = last.seq.saturating_add(1);
                    }
                    self.beats.extend(more);
                }
                Ok(Err(e)) => return Err(e.into()),
                Err(_) => {
                    return Err(fault(
                        codes::UNAVAILABLE,
                        "the private tier did not answer in time",
                    ));
                }
            }
        }
        self.beats
            .pop_front()
            .ok_or_else(|| fault(codes::INTERNAL, "no heartbeat to send"))
    }
}

/// The live part of a link: returns Ok after a bye, Err with the fault that ended it otherwise.
async fn serve_link(
    ws: &mut WebSocket,
    state: &AppState,
    mut live: Live,
    channel: &mut Channel,
    (done_tx, done_rx): (mpsc::Sender<Vec<u8>>, &mut mpsc::Receiver<Vec<u8>>),
    mut kicked: watch::Receiver<Option<String>>,
) -> Result<(), Fault> {
    let session = live.session;
    let interval = Duration::from_millis(state.link.beat_interval_ms.max(1));
    let timeout = Duration::from_millis(state.link.beat_timeout_ms.max(1));
    let mut next_beat = Instant::now() + interval;
    // Beats sent and not yet acknowledged, oldest first: (seq, the ack's MAC, sent at).
    let mut outstanding: VecDeque<(u64, [u8; 32], Instant)> = VecDeque::new();
    let mut in_flight = 0usize;

    loop {
        let ack_deadline = outstanding.front().map(|(_, _, at)| *at + timeout);
        tokio::select! {
            _ = tokio::time::sleep_until(next_beat) => {
                let beat = live.next_beat(state).await?;
                let frame = Frame::Beat { seq: beat.seq, challenge: beat.challenge, mac: beat.mac };
                if !send_frame(ws, &frame).await {
                    return Err(fault(codes::SESSION_ENDED, "connection lost"));
                }
                outstanding.push_back((beat.seq, beat.ack.0, Instant::now()));
                next_beat += interval;
            }
            _ = async { match ack_deadline { Some(d) => tokio::time::sleep_until(d).await, None => std::future::pending().await } } => {
                return Err(fault(codes::BEAT_TIMEOUT, "heartbeat not acknowledged in time"));
            }
            Ok(()) = kicked.changed() => {
                let reason = kicked.borrow_and_update().clone().unwrap_or_default();
                tracing::info!(%session, %reason, "link ended by an administrator");
                return Err(fault(codes::KICKED, reason));
            }
            changed = live.up.changed() => {
                // The connection this link was opened on is gone: the private tier has forgotten
                // the link, which must not look alive.
                if changed.is_err() || *live.up.borrow_and_update() != Some(live.connection) {
                    return Err(fault(codes::UNAVAILABLE, "the private tier is unreachable; log in again shortly"));
                }
            }
            Some(response) = done_rx.recv() => {
                // Answers that are ready at the same time leave in one write (one TLS record and
                // one system call rather than one each).
                let mut next = Some(response);
                while let Some(response) = next {
                    in_flight -= 1;
                    let frame = channel.seal(&response)?;
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
                        let Some((want, expected, sent)) = outstanding.pop_front() else {
                            return Err(fault(codes::UNEXPECTED_FRAME, "ack without a beat"));
                        };
                        if seq != want {
                            return Err(fault(codes::BAD_SEQUENCE, format!("ack {seq} for beat {want}")));
                        }
                        aws_lc_rs::constant_time::verify_slices_are_equal(&expected, &mac.0)
                            .map_err(|_| Fault::from(WireError::BadMac))?;
                        let rtt = sent.elapsed();
                        if rtt > timeout {
                            return Err(fault(codes::BEAT_TIMEOUT, "heartbeat acknowledged late"));
                        }
                        if let Some(info) = state.sessions.lock().get_mut(&session) {
                            info.last_beat_ms = Some(state.tier.now_ms());
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
                        let tier = state.tier.clone();
                        let tx = done_tx.clone();
                        tokio::spawn(async move {
                            let resp = tier.handle(session, request, canonical, plain).await;
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

/// Every [`LINK_REPORT_MS`] while the process runs: tell the private tier when each live link
/// of this process last beat and how fast, and end the links an administrator ended there
/// (`admin_kick`, `admin_lock`) — well within one beat interval.
pub async fn report_loop(state: AppState) {
    let mut tick = tokio::time::interval(Duration::from_millis(LINK_REPORT_MS));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // What was last reported of each link: only links whose beat figures changed are sent again
    // (with beats every few seconds, a twentieth of them per report), so that thousands of links
    // cost little on the internal channel.
    let mut sent: std::collections::HashMap<Uuid, (Option<i64>, Option<u64>)> =
        std::collections::HashMap::new();
    loop {
        tick.tick().await;
        let live = state.sessions.list();
        if live.is_empty() {
            sent.clear();
            continue;
        }
        let mut reports = Vec::new();
        let mut now_sent = std::collections::HashMap::with_capacity(live.len());
        for s in live {
            let figures = (s.last_beat_ms, s.round_trip_ms);
            if sent.get(&s.session) != Some(&figures) {
                reports.push(LinkReport {
                    session: s.session,
                    last_beat_ms: s.last_beat_ms,
                    round_trip_ms: s.round_trip_ms,
                });
            }
            now_sent.insert(s.session, figures);
        }
        match state.tier.report_links(reports).await {
            Ok(ends) => {
                sent = now_sent;
                for end in ends {
                    state.sessions.end(&end.session, &end.reason);
                }
            }
            Err(e) => tracing::debug!(error = %e, "links not reported"),
        }
    }
}
