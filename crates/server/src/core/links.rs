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
    pub peer: SocketAddr,
}

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

/// A live link's keys, kept by the private tier.
struct LinkKeys {
    user_id: UserId,
    k_user: Arc<Zeroizing<[u8; 32]>>,
    owner: Owner,
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
            "client={} address={} session={session}",
            hello.client, hello.peer
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
                self.handle(link.user_id, link.k_user, request, canonical, session)
                    .await
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
}
