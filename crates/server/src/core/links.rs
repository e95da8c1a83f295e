//! The links as the private tier sees them. A hello is checked here (`accounts::login`); the
//! link's long-term secret, `K_user`, then stays here for the life of the link, keyed by its
//! session id. The public tier gets only what its part of the link needs (docs/DEPLOY.md):
//! - the session key `K_s`, for sealing and opening frames;
//! - heartbeats made in advance ([`BeatTicket`]: challenge, MAC and the ack MAC to expect), a
//!   batch at a time, so that a gateway can run beats without ever holding `K_user` — and stops
//!   beating when the private tier stops handing out batches.
//!
//! Each link belongs to an [`Owner`]: [`LOCAL`] in a one-process server, or the internal
//! connection of the gateway that opened it, so that a gateway can only use its own links and
//! every link of a gateway ends when its connection does.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use stampline_ledger::UserId;
use stampline_wire::replies::{AdminKickReply, AdminLinksReply, LiveLink};
use stampline_wire::{
    Hex, Request, Response, Secret, auth_transcript, beat_ack_mac, beat_mac, codes, session_key,
};
use uuid::Uuid;
use zeroize::Zeroizing;

use super::{Core, CoreError};
use crate::source::SourceKey;

/// Who holds a link: `LOCAL`, or the number of a gateway's internal connection.
pub type Owner = u64;
/// The public tier of the same process.
pub const LOCAL: Owner = 0;
/// Most heartbeats handed out at once.
pub const MAX_BEATS_PER_BATCH: u32 = 256;

/// A hello as the public tier passes it on: its fields, and the client's address (which the
/// private tier trusts its public tier to report).
#[derive(Debug, Serialize, Deserialize)]
pub struct SessionHello {
    pub user: String,
    pub password: Secret,
    pub client_nonce: Hex<8>,
    pub client: String,
    /// The client's operating system and architecture, if it said.
    #[serde(default)]
    pub platform: Option<String>,
    pub peer: SocketAddr,
}

/// What a public tier tells the private tier of one of its links now and then (the
/// heartbeats are the public tier's): when its last beat was acknowledged, and how fast.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LinkReport {
    pub session: Uuid,
    pub last_beat_ms: Option<i64>,
    pub round_trip_ms: Option<u64>,
}

/// A link the public tier must end, and why (an administrator's kick or lock).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct LinkEnd {
    pub session: Uuid,
    pub reason: String,
}

/// How often a public tier reports its links and learns which to end: an administrator's
/// kick ends a link within this (plus one round trip), well inside one beat interval.
pub const LINK_REPORT_MS: u64 = 250;

/// One heartbeat made in advance: what the beat frame carries and the ack MAC to expect.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BeatTicket {
    pub seq: u64,
    pub challenge: Hex<8>,
    pub mac: Hex<32>,
    pub ack: Hex<32>,
}

/// What an accepted hello gives the public tier: the welcome's fields, `K_s`, the first beats.
#[derive(Serialize, Deserialize)]
pub struct SessionGrant {
    pub session: Uuid,
    pub server_nonce: Hex<8>,
    pub user_id: UserId,
    pub admin: bool,
    pub auth_key_id: String,
    pub signature: Hex<64>,
    pub k_s: Hex<32>,
    pub beats: Vec<BeatTicket>,
}

impl std::fmt::Debug for SessionGrant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionGrant")
            .field("session", &self.session)
            .field("user_id", &self.user_id)
            .finish_non_exhaustive()
    }
}

impl Drop for SessionGrant {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.k_s.0);
    }
}

/// A live link's keys, kept by the private tier, and what the operators see of it.
struct LinkKeys {
    user_id: UserId,
    k_user: Arc<Zeroizing<[u8; 32]>>,
    owner: Owner,
    /// The user name as sent in the hello.
    user: String,
    client: String,
    platform: Option<String>,
    address: String,
    since_ms: i64,
    last_beat_ms: Option<i64>,
    round_trip_ms: Option<u64>,
    /// Items issued on this link.
    issued: u64,
    /// Set when an administrator ended the link: the public tier ends it at its next report.
    end: Option<String>,
}

/// A live link's user and `K_user`.
struct LinkOf {
    user_id: UserId,
    k_user: Arc<Zeroizing<[u8; 32]>>,
}

/// The live links' keys.
#[derive(Default)]
pub(super) struct Links {
    live: Mutex<HashMap<Uuid, LinkKeys>>,
}

impl std::fmt::Debug for Links {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Links")
            .field("live", &self.lock().len())
            .finish()
    }
}

impl Links {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, LinkKeys>> {
        self.live.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The user and `K_user` of `owner`'s link `session`.
    fn get(&self, session: &Uuid, owner: Owner) -> Result<LinkOf, CoreError> {
        match self.lock().get(session) {
            Some(k) if k.owner == owner => Ok(LinkOf {
                user_id: k.user_id,
                k_user: Arc::clone(&k.k_user),
            }),
            _ => Err(CoreError::refused(
                codes::SESSION_ENDED,
                "no such link on this server",
            )),
        }
    }
}

fn random<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    // aws-lc-rs's system RNG does not fail on supported platforms.
    let _ = aws_lc_rs::rand::fill(&mut b);
    b
}

/// `count` heartbeats from `first_seq` on, made with `k_user`.
fn beat_tickets(k_user: &[u8; 32], session: &Uuid, first_seq: u64, count: u32) -> Vec<BeatTicket> {
    (0..u64::from(count.min(MAX_BEATS_PER_BATCH)))
        .map(|i| {
            let seq = first_seq.saturating_add(i);
            let challenge = random::<8>();
            BeatTicket {
                seq,
                challenge: Hex(challenge),
                mac: Hex(beat_mac(k_user, session, seq, &challenge)),
                ack: Hex(beat_ack_mac(k_user, session, seq, &challenge)),
            }
        })
        .collect()
}

impl Core {
    /// Check a hello and open its link: a new session id and server nonce, the password checked
    /// (`login`: its back-off, hash pool and audit), the transcript signed, `K_s` derived, and
    /// the first `beats` heartbeats made.
    pub async fn open_session(
        self: &Arc<Self>,
        hello: SessionHello,
        owner: Owner,
        beats: u32,
    ) -> Result<SessionGrant, CoreError> {
        let session = Uuid::new_v4();
        let sn = random::<8>();
        let cn = hello.client_nonce.0;
        let transcript = auth_transcript(&hello.user, &cn, &sn, &session);
        let detail = format!(
            "client={} platform={} address={} session={session}",
            hello.client,
            hello.platform.as_deref().unwrap_or("-"),
            hello.peer
        );
        let source = SourceKey::of(hello.peer.ip());
        let grant = self
            .login(
                hello.user.clone(),
                hello.password,
                transcript,
                detail,
                source,
            )
            .await?;
        let k_s = session_key(&grant.k_user, &cn, &sn, &session)
            .map_err(|e| CoreError::Internal(format!("session key: {e}")))?;
        let tickets = beat_tickets(&grant.k_user, &session, 1, beats);
        self.links.lock().insert(
            session,
            LinkKeys {
                user_id: grant.user_id,
                k_user: Arc::new(grant.k_user),
                owner,
                user: hello.user,
                client: hello.client,
                platform: hello.platform,
                address: hello.peer.to_string(),
                since_ms: self.now_ms(),
                last_beat_ms: None,
                round_trip_ms: None,
                issued: 0,
                end: None,
            },
        );
        Ok(SessionGrant {
            session,
            server_nonce: Hex(sn),
            user_id: grant.user_id,
            admin: grant.admin,
            auth_key_id: grant.auth_key_id,
            signature: Hex(grant.signature),
            k_s: Hex(*k_s),
            beats: tickets,
        })
    }

    /// The next heartbeats of a live link (at most [`MAX_BEATS_PER_BATCH`]).
    pub fn beats(
        &self,
        session: Uuid,
        owner: Owner,
        first_seq: u64,
        count: u32,
    ) -> Result<Vec<BeatTicket>, CoreError> {
        let link = self.links.get(&session, owner)?;
        Ok(beat_tickets(&link.k_user, &session, first_seq, count))
    }

    /// Handle one request of a live link: the user and `K_user` (which keys its idempotency
    /// fingerprint) are the link's.
    pub async fn handle_on(
        self: &Arc<Self>,
        session: Uuid,
        owner: Owner,
        request: Request,
        canonical: Vec<u8>,
    ) -> Response {
        match self.links.get(&session, owner) {
            Ok(link) => {
                let issue = matches!(request.op, stampline_wire::Op::Issue { .. });
                let response = self
                    .handle(link.user_id, link.k_user, request, canonical, session)
                    .await;
                if issue
                    && response.ok
                    && let Some(k) = self.links.lock().get_mut(&session)
                {
                    k.issued = k.issued.saturating_add(1);
                }
                response
            }
            Err(e) => Response::error(
                request.op.name(),
                &request.id.to_string(),
                e.code(),
                &e.public_message(),
            ),
        }
    }

    /// A link ended: forget its keys and start its user's confirmation window.
    pub async fn close_session(self: &Arc<Self>, session: Uuid, owner: Owner) {
        let ended = {
            let mut live = self.links.lock();
            match live.get(&session) {
                Some(k) if k.owner == owner => live.remove(&session).map(|k| k.user_id),
                _ => None,
            }
        };
        if let Some(user_id) = ended {
            self.link_ended(user_id).await;
        }
    }

    /// Every link of `owner` ended (its gateway's connection is gone).
    pub async fn close_owner(self: &Arc<Self>, owner: Owner) -> usize {
        let ended: Vec<UserId> = {
            let mut live = self.links.lock();
            let sessions: Vec<Uuid> = live
                .iter()
                .filter(|(_, k)| k.owner == owner)
                .map(|(s, _)| *s)
                .collect();
            sessions
                .iter()
                .filter_map(|s| live.remove(s).map(|k| k.user_id))
                .collect()
        };
        for user_id in &ended {
            self.link_ended(*user_id).await;
        }
        ended.len()
    }

    /// How many links the private tier holds keys for.
    pub fn live_links(&self) -> usize {
        self.links.lock().len()
    }

    /// A public tier's report on its links (`owner`'s): their beats are recorded; the answer
    /// is the links of its that an administrator ended.
    pub fn report_links(&self, owner: Owner, reports: Vec<LinkReport>) -> Vec<LinkEnd> {
        let mut live = self.links.lock();
        for r in reports {
            if let Some(k) = live.get_mut(&r.session).filter(|k| k.owner == owner) {
                k.last_beat_ms = r.last_beat_ms;
                k.round_trip_ms = r.round_trip_ms;
            }
        }
        live.iter()
            .filter(|(_, k)| k.owner == owner)
            .filter_map(|(s, k)| {
                k.end.clone().map(|reason| LinkEnd {
                    session: *s,
                    reason,
                })
            })
            .collect()
    }

    /// Marks the links for which `pick` says so to be ended with `reason`; returns their
    /// sessions. Their public tiers end them at their next report ([`LINK_REPORT_MS`]).
    fn end_links(&self, reason: &str, pick: impl Fn(&Uuid, UserId) -> bool) -> Vec<String> {
        let mut live = self.links.lock();
        let mut ended: Vec<String> = Vec::new();
        for (s, k) in live.iter_mut() {
            if pick(s, k.user_id) {
                k.end.get_or_insert_with(|| reason.to_owned());
                ended.push(s.to_string());
            }
        }
        ended.sort();
        ended
    }

    /// The address an administrator's own link comes from (for the audit log).
    fn address_of(&self, session: &Uuid) -> String {
        self.links
            .lock()
            .get(session)
            .map_or_else(|| "unknown".to_owned(), |k| k.address.clone())
    }

    /// `admin_links`: every live link, oldest first.
    pub(super) async fn admin_links(
        self: &Arc<Self>,
        user_id: UserId,
    ) -> Result<AdminLinksReply, CoreError> {
        self.as_admin(user_id, "admin_links", |core, _| {
            let time = |ms: i64| super::rfc3339(ms.div_euclid(1000));
            let mut links: Vec<(i64, LiveLink)> = core
                .links
                .lock()
                .iter()
                .map(|(s, k)| {
                    (
                        k.since_ms,
                        LiveLink {
                            session: s.to_string(),
                            user: k.user.clone(),
                            client: k.client.clone(),
                            platform: k.platform.clone(),
                            address: k.address.clone(),
                            linked_since: time(k.since_ms).unwrap_or_default(),
                            last_beat: k.last_beat_ms.and_then(time),
                            round_trip_ms: k.round_trip_ms,
                            issued: k.issued,
                        },
                    )
                })
                .collect();
            links.sort_by(|a, b| (a.0, &a.1.session).cmp(&(b.0, &b.1.session)));
            Ok(AdminLinksReply {
                links: links.into_iter().map(|(_, l)| l).collect(),
            })
        })
        .await
    }

    /// `admin_kick`: end one link (`session`) or every link of a user; audited with the
    /// administrator's address.
    pub(super) async fn admin_kick(
        self: &Arc<Self>,
        caller: (UserId, Uuid),
        session: Option<String>,
        user: Option<String>,
    ) -> Result<AdminKickReply, CoreError> {
        let (user_id, own) = caller;
        let target = match (session, user) {
            (Some(s), None) => Target::Session(Uuid::parse_str(&s).map_err(|_| {
                CoreError::refused(codes::BAD_REQUEST, "session must be a link's UUID")
            })?),
            (None, Some(u)) => Target::User(check_and_key(&u)?),
            _ => {
                return Err(CoreError::refused(
                    codes::BAD_REQUEST,
                    "give the session or the user to end the links of",
                ));
            }
        };
        self.as_admin(user_id, "admin_kick", move |core, admin| {
            let from = core.address_of(&own);
            let (ended, what) = match &target {
                Target::Session(s) => (
                    core.end_links("ended by an administrator", |session, _| session == s),
                    serde_json::json!({ "session": s.to_string() }),
                ),
                Target::User(key) => {
                    let id = core.store.user_by_key(key)?.map(|u| u.id);
                    (
                        core.end_links("ended by an administrator", |_, u| Some(u) == id),
                        serde_json::json!({ "user": key }),
                    )
                }
            };
            let detail = serde_json::json!({ "target": what, "ended": ended, "from": from });
            core.store
                .append_audit(&admin.actor, "kick", &detail.to_string(), core.now_ms())?;
            tracing::info!(actor = %admin.actor, %from, ?ended, "links ended by an administrator");
            Ok(AdminKickReply {
                ended,
                locked: false,
            })
        })
        .await
    }

    /// `admin_lock`: refuse the user's logins until unlocked and end its links; audited.
    pub(super) async fn admin_lock(
        self: &Arc<Self>,
        caller: (UserId, Uuid),
        user: String,
    ) -> Result<AdminKickReply, CoreError> {
        let (user_id, own) = caller;
        let key = check_and_key(&user)?;
        self.as_admin(user_id, "admin_lock", move |core, admin| {
            let record = core.store.user_by_key(&key)?.ok_or_else(|| {
                CoreError::refused(codes::UNKNOWN_USER, format!("no user {key:?}"))
            })?;
            if record.id == user_id {
                return Err(CoreError::refused(
                    codes::BAD_REQUEST,
                    "an administrator does not lock itself out",
                ));
            }
            core.store
                .set_user_locked(&key, true, &admin.actor, core.now_ms())?;
            let ended = core.end_links("the account was locked by an administrator", |_, u| {
                u == record.id
            });
            let from = core.address_of(&own);
            let detail = serde_json::json!({ "user": key, "ended": ended, "from": from });
            core.store
                .append_audit(&admin.actor, "lock", &detail.to_string(), core.now_ms())?;
            tracing::info!(actor = %admin.actor, %from, user = %key, "user locked by an administrator");
            Ok(AdminKickReply {
                ended,
                locked: true,
            })
        })
        .await
    }
}

/// What `admin_kick` ends.
enum Target {
    Session(Uuid),
    /// A user, by its lowercase NFC key.
    User(String),
}

/// A user name as the ledger keys it, refusing one that cannot be a user's.
fn check_and_key(user: &str) -> Result<String, CoreError> {
    super::check_user_name(user)?;
    Ok(stampline_wire::normalize_user(user))
}
