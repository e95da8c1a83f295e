//! What the public tier's parts share: the state every HTTP handler and link gets
//! ([`AppState`]), the live links ([`Sessions`]) and the firewall's per-address counters. Its own
//! module, so the router and the link each depend on it and not on each other.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use uuid::Uuid;

use crate::core::Core;

/// The peer address of a connection, added to each request by the server loop.
#[derive(Clone, Copy, Debug)]
pub struct Peer(pub SocketAddr);

/// A fixed-window counter per client address.
#[derive(Debug)]
pub struct RateLimit {
    per_minute: u32,
    windows: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

/// How many addresses a limiter remembers before it forgets expired windows.
const MAX_TRACKED_ADDRESSES: usize = 100_000;

impl RateLimit {
    pub fn new(per_minute: u32) -> RateLimit {
        RateLimit {
            per_minute,
            windows: Mutex::new(HashMap::new()),
        }
    }

    /// Count one attempt; false when the address is over its limit.
    pub fn allow(&self, ip: IpAddr) -> bool {
        let now = Instant::now();
        let mut map = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= MAX_TRACKED_ADDRESSES {
            map.retain(|_, (start, _)| now.duration_since(*start) < Duration::from_secs(60));
        }
        let entry = map.entry(ip).or_insert((now, 0));
        if now.duration_since(entry.0) >= Duration::from_secs(60) {
            *entry = (now, 0);
        }
        entry.1 = entry.1.saturating_add(1);
        entry.1 <= self.per_minute
    }
}

/// Everything the handlers share.
#[derive(Clone, Debug)]
pub struct AppState {
    pub core: Arc<Core>,
    pub sessions: Arc<Sessions>,
    pub link: LinkConfig,
    pub registrations: Arc<RateLimit>,
    pub logins: Arc<RateLimit>,
    pub sandbox: bool,
}

/// Heartbeat settings.
#[derive(Clone, Copy, Debug)]
pub struct LinkConfig {
    pub beat_interval_ms: u64,
    pub beat_timeout_ms: u64,
}

/// What the admin console will show of a live link.
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

/// The live links.
#[derive(Debug, Default)]
pub struct Sessions {
    live: Mutex<HashMap<Uuid, SessionInfo>>,
}

impl Sessions {
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
