//! What the public tier's parts share: the state every HTTP handler and link gets
//! ([`AppState`]), the live links ([`Sessions`]) and the firewall ([`Firewall`]). Its own
//! module, so the router and the link each depend on it and not on each other.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use serde::Serialize;
use uuid::Uuid;

use crate::firewall::Firewall;
use crate::tier::PrivateTier;

/// The peer address of a connection, added to each request by the server loop.
#[derive(Clone, Copy, Debug)]
pub struct Peer(pub SocketAddr);

/// Everything the handlers share.
#[derive(Clone, Debug)]
pub struct AppState {
    /// The private tier: in this process or across the internal channel.
    pub tier: PrivateTier,
    pub sessions: Arc<Sessions>,
    pub link: LinkConfig,
    pub firewall: Arc<Firewall>,
}

/// Heartbeat settings.
#[derive(Clone, Copy, Debug)]
pub struct LinkConfig {
    pub beat_interval_ms: u64,
    pub beat_timeout_ms: u64,
}

/// What the public tier knows of a live link (the operators' view is the private tier's,
/// `admin_links`, fed by [`crate::link::report_loop`]).
#[derive(Clone, Debug, Serialize)]
pub struct SessionInfo {
    pub session: Uuid,
    pub user: String,
    pub user_id: i64,
    pub client: String,
    pub address: String,
    pub connected_at_ms: i64,
    pub last_beat_ms: Option<i64>,
    pub round_trip_ms: Option<u64>,
}

/// The live links, and for each the switch that ends it (an administrator's kick).
#[derive(Debug, Default)]
pub struct Sessions {
    live: Mutex<HashMap<Uuid, SessionInfo>>,
    ends: Mutex<HashMap<Uuid, tokio::sync::watch::Sender<Option<String>>>>,
}

impl Sessions {
    /// The switch a link watches: it ends with the reason once [`Sessions::end`] sets one.
    pub(crate) fn end_switch(&self, session: Uuid) -> tokio::sync::watch::Receiver<Option<String>> {
        let (tx, rx) = tokio::sync::watch::channel(None);
        self.ends
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(session, tx);
        rx
    }

    /// Ends a live link of this process with `reason` (it answers with the error frame `kicked`).
    pub(crate) fn end(&self, session: &Uuid, reason: &str) {
        if let Some(tx) = self
            .ends
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(session)
        {
            let _ = tx.send(Some(reason.to_owned()));
        }
    }

    /// Forgets a link that ended.
    pub(crate) fn remove(&self, session: &Uuid) {
        self.lock().remove(session);
        self.ends
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(session);
    }

    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, SessionInfo>> {
        self.live.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn list(&self) -> Vec<SessionInfo> {
        self.lock().values().cloned().collect()
    }

    pub(crate) fn count_for(&self, user_id: i64) -> usize {
        self.lock()
            .values()
            .filter(|s| s.user_id == user_id)
            .count()
    }
}
