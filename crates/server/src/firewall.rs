//! The firewall in front of the public tier: which addresses may connect, how many connections a
//! source may hold before it logs in, how fast a source (and everyone together) may register, log
//! in and look things up, and how large and how slow a request may be. Everything here runs
//! before a request body is read or a password is hashed.
//!
//! Its settings are one section, [`FirewallConfig`] (`[firewall]` in the server's config file),
//! with the defaults documented in docs/FIREWALL.md. Sources are counted by [`SourceKey`]: an
//! IPv4 address or an IPv6 /64.

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Extension, Request, State};
use axum::http::header::CONTENT_LENGTH;
use axum::middleware::Next;
use axum::response::Response;
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use stampline_wire::codes;

use crate::error::CoreError;
use crate::source::SourceKey;
use crate::state::Peer;

/// One rate: what a single source may do per minute (with a burst), and what all sources together
/// may (0: no global limit).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rate {
    pub per_source_per_minute: u32,
    /// How many a source may make at once before the per-minute pace applies.
    pub per_source_burst: u32,
    /// All sources together, per minute; 0 = no global limit.
    pub global_per_minute: u32,
    /// How many all sources together may make at once.
    pub global_burst: u32,
}

/// Addresses a listener serves: a deny list, and an allow list that, when not empty, is the only
/// addresses served. Deny wins.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Acl {
    pub allow: Vec<IpNet>,
    pub deny: Vec<IpNet>,
}

impl Acl {
    /// Whether `ip` may connect. An IPv4-mapped IPv6 address is judged as its IPv4 address.
    pub fn allows(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        if self.deny.iter().any(|net| net.contains(&ip)) {
            return false;
        }
        self.allow.is_empty() || self.allow.iter().any(|net| net.contains(&ip))
    }

    /// Loopback only (IPv4 127.0.0.0/8 and IPv6 ::1).
    pub fn loopback() -> Acl {
        Acl {
            allow: vec![
                IpNet::V4("127.0.0.0/8".parse().expect("a valid network")),
                IpNet::V6("::1/128".parse().expect("a valid network")),
            ],
            deny: Vec::new(),
        }
    }
}

/// The firewall's settings, with the defaults of docs/FIREWALL.md.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FirewallConfig {
    /// All connections at once, logged in or not; more wait in the kernel's backlog.
    pub max_connections: usize,
    /// The kernel's queue of connections not yet accepted (capped by the system's
    /// `net.core.somaxconn`).
    pub listen_backlog: u32,
    /// Connections not (yet) carrying a logged-in link; more are closed as they arrive. The rest of
    /// `max_connections` is kept for logged-in links.
    pub max_prelogin_connections: usize,
    /// Connections one source may hold before they log in; more are closed as they arrive.
    pub max_connections_per_source: usize,
    /// How long a caller may take for the TLS handshake, and then for each request's headers (an
    /// idle kept-alive connection is closed after it too).
    pub handshake_timeout_ms: u64,
    /// How long a request's body may take to arrive once its headers are in.
    pub request_timeout_ms: u64,
    /// Largest request body; a larger declared length is refused without reading it.
    pub max_body_bytes: usize,
    /// Sources each rate remembers; past it, new sources share one bucket until old ones expire.
    pub max_tracked_sources: usize,
    /// After a source goes over a rate, its new connections are closed as they arrive for this
    /// long (no TLS handshake is spent on it); its open connections and links are untouched.
    pub over_rate_cooldown_ms: u64,
    /// `POST /v1/register`.
    pub registrations: Rate,
    /// Link logins (`hello`).
    pub logins: Rate,
    /// Every other public route: the home page, keys, quotes, an item's status.
    pub lookups: Rate,
    /// Who may connect at all.
    pub public: Acl,
    /// Where a user with the admin role may log in from.
    pub admin: Acl,
}

impl Default for FirewallConfig {
    fn default() -> Self {
        FirewallConfig {
            max_connections: 10_000,
            listen_backlog: 4_096,
            max_prelogin_connections: 2_000,
            max_connections_per_source: 64,
            handshake_timeout_ms: 10_000,
            request_timeout_ms: 10_000,
            max_body_bytes: 8 * 1024,
            max_tracked_sources: 100_000,
            over_rate_cooldown_ms: 1_000,
            registrations: Rate {
                per_source_per_minute: 5,
                per_source_burst: 5,
                global_per_minute: 120,
                global_burst: 20,
            },
            logins: Rate {
                per_source_per_minute: 60,
                per_source_burst: 20,
                global_per_minute: 1_200,
                global_burst: 200,
            },
            lookups: Rate {
                per_source_per_minute: 600,
                per_source_burst: 100,
                global_per_minute: 0,
                global_burst: 0,
            },
            public: Acl::default(),
            admin: Acl::loopback(),
        }
    }
}

impl FirewallConfig {
    /// Refuse settings that cannot work (a zero limit, a pre-login share over the total).
    pub fn check(&self) -> Result<(), String> {
        let positive = [
            ("max_connections", self.max_connections as u64),
            ("listen_backlog", u64::from(self.listen_backlog)),
            (
                "max_prelogin_connections",
                self.max_prelogin_connections as u64,
            ),
            (
                "max_connections_per_source",
                self.max_connections_per_source as u64,
            ),
            ("handshake_timeout_ms", self.handshake_timeout_ms),
            ("request_timeout_ms", self.request_timeout_ms),
            ("max_body_bytes", self.max_body_bytes as u64),
            ("max_tracked_sources", self.max_tracked_sources as u64),
        ];
        for (name, value) in positive {
            if value == 0 {
                return Err(format!("firewall.{name} must be positive"));
            }
        }
        if self.max_prelogin_connections > self.max_connections {
            return Err("firewall.max_prelogin_connections must not exceed max_connections".into());
        }
        for (name, rate) in [
            ("registrations", self.registrations),
            ("logins", self.logins),
            ("lookups", self.lookups),
        ] {
            if rate.per_source_per_minute == 0 || rate.per_source_burst == 0 {
                return Err(format!(
                    "firewall.{name}: per_source_per_minute and per_source_burst must be positive"
                ));
            }
            if rate.global_per_minute > 0 && rate.global_burst == 0 {
                return Err(format!(
                    "firewall.{name}: global_burst must be positive with a global rate"
                ));
            }
        }
        Ok(())
    }

    pub fn handshake_timeout(&self) -> Duration {
        Duration::from_millis(self.handshake_timeout_ms)
    }

    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }
}

/// A rate for many sources: one bucket per source (a sharded map, no global lock) and, if set,
/// one bucket for everyone. Memory is bounded: past `max_tracked` sources the map forgets the
/// ones whose buckets are full again, and while it is still full, every source shares one bucket
/// (the keyed map cannot be asked whether it knows a key without adding it).
#[derive(Debug)]
pub struct Limiter {
    per_source: DefaultKeyedRateLimiter<SourceKey>,
    global: Option<DefaultDirectRateLimiter>,
    overflow: DefaultDirectRateLimiter,
    max_tracked: usize,
    created: Instant,
    /// When the map was last pruned (ms since `created`).
    last_prune_ms: AtomicU64,
}

fn nonzero(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN)
}

impl Limiter {
    pub fn new(rate: Rate, max_tracked: usize) -> Limiter {
        let per_source = Quota::per_minute(nonzero(rate.per_source_per_minute))
            .allow_burst(nonzero(rate.per_source_burst));
        let global = (rate.global_per_minute > 0).then(|| {
            let quota = Quota::per_minute(nonzero(rate.global_per_minute))
                .allow_burst(nonzero(rate.global_burst));
            RateLimiter::direct(quota)
        });
        Limiter {
            per_source: RateLimiter::keyed(per_source),
            global,
            overflow: RateLimiter::direct(per_source),
            max_tracked: max_tracked.max(1),
            created: Instant::now(),
            last_prune_ms: AtomicU64::new(0),
        }
    }

    /// Count one attempt from `source`: refused when it, or everyone together, is over the rate.
    pub fn check(&self, source: SourceKey) -> Result<(), Over> {
        let own = if self.per_source.len() < self.max_tracked || self.prune() {
            self.per_source.check_key(&source).is_ok()
        } else {
            self.overflow.check().is_ok()
        };
        if !own {
            return Err(Over::Source);
        }
        match &self.global {
            Some(global) if global.check().is_err() => Err(Over::Global),
            _ => Ok(()),
        }
    }

    /// [`Limiter::check`] as a yes or no.
    pub fn allow(&self, source: SourceKey) -> bool {
        self.check(source).is_ok()
    }

    /// Forget sources whose buckets are full again (at most once a second); true when that made
    /// room.
    fn prune(&self) -> bool {
        let now_ms = u64::try_from(self.created.elapsed().as_millis()).unwrap_or(u64::MAX);
        let last = self.last_prune_ms.load(Ordering::Relaxed);
        if now_ms.saturating_sub(last) >= 1_000
            && self
                .last_prune_ms
                .compare_exchange(last, now_ms, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.per_source.retain_recent();
            self.per_source.shrink_to_fit();
        }
        self.per_source.len() < self.max_tracked
    }

    /// Sources remembered now.
    pub fn tracked(&self) -> usize {
        self.per_source.len()
    }
}

/// Whose rate an attempt went over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Over {
    /// The source's own.
    Source,
    /// Everyone's together.
    Global,
}

/// The connections not yet logged in, per source and in all. Each admitted connection holds a
/// [`Ticket`]; a link that logs in gives its ticket up (it then counts against its user's links).
#[derive(Debug)]
pub struct Connections {
    counts: Mutex<Counts>,
    max_per_source: usize,
    max_prelogin: usize,
    max_cooling: usize,
}

/// Open connections not yet logged in: per source (only sources with some) and in all; and the
/// sources cooling down after going over a rate, with when they may connect again.
#[derive(Debug, Default)]
struct Counts {
    per_source: HashMap<SourceKey, usize>,
    total: usize,
    cooling: HashMap<SourceKey, Instant>,
}

/// One admitted connection's place in [`Connections`], released when the connection ends or logs in.
#[derive(Debug)]
pub struct Ticket {
    connections: Arc<Connections>,
    source: SourceKey,
    counted: AtomicBool,
}

impl Connections {
    pub fn new(max_per_source: usize, max_prelogin: usize, max_cooling: usize) -> Arc<Connections> {
        Arc::new(Connections {
            counts: Mutex::new(Counts::default()),
            max_per_source,
            max_prelogin,
            max_cooling,
        })
    }

    /// Close `source`'s new connections until `until`. Bounded: when as many sources as allowed
    /// are cooling down, the ones done are forgotten first, and a source that finds no room is not
    /// cooled (its rates still refuse it).
    pub fn cool_down(&self, source: SourceKey, until: Instant) {
        let mut counts = self.counts();
        if counts.cooling.len() >= self.max_cooling && !counts.cooling.contains_key(&source) {
            let now = Instant::now();
            counts.cooling.retain(|_, t| *t > now);
            if counts.cooling.len() >= self.max_cooling {
                return;
            }
        }
        counts.cooling.insert(source, until);
    }

    fn counts(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A place for a new connection from `ip`, or None when its source, or everyone not yet
    /// logged in, holds all there are.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<Ticket> {
        let source = SourceKey::of(ip);
        let mut counts = self.counts();
        if let Some(until) = counts.cooling.get(&source).copied() {
            if until > Instant::now() {
                return None;
            }
            counts.cooling.remove(&source);
        }
        let own = counts.per_source.get(&source).copied().unwrap_or(0);
        if own >= self.max_per_source || counts.total >= self.max_prelogin {
            return None;
        }
        counts.per_source.insert(source, own + 1);
        counts.total += 1;
        Some(Ticket {
            connections: Arc::clone(self),
            source,
            counted: AtomicBool::new(true),
        })
    }

    /// Connections not yet logged in, in all.
    pub fn prelogin(&self) -> usize {
        self.counts().total
    }
}

impl Ticket {
    /// The connection logged in: it no longer counts against its source or the pre-login total.
    pub fn logged_in(&self) {
        self.release();
    }

    fn release(&self) {
        if self.counted.swap(false, Ordering::AcqRel) {
            let mut counts = self.connections.counts();
            if let Some(n) = counts.per_source.get_mut(&self.source) {
                *n -= 1;
                if *n == 0 {
                    counts.per_source.remove(&self.source);
                }
                counts.total -= 1;
            }
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.release();
    }
}

/// The firewall's live state: its settings, its rates and its connection counts.
#[derive(Debug)]
pub struct Firewall {
    pub config: FirewallConfig,
    pub registrations: Limiter,
    pub logins: Limiter,
    pub lookups: Limiter,
    pub connections: Arc<Connections>,
}

impl Firewall {
    pub fn new(config: FirewallConfig) -> Firewall {
        let tracked = config.max_tracked_sources;
        Firewall {
            registrations: Limiter::new(config.registrations, tracked),
            logins: Limiter::new(config.logins, tracked),
            lookups: Limiter::new(config.lookups, tracked),
            connections: Connections::new(
                config.max_connections_per_source,
                config.max_prelogin_connections,
                tracked,
            ),
            config,
        }
    }

    /// Admit a new connection from `ip`: on the public allow list, not denied, and within its
    /// source's and the pre-login share of connections.
    pub fn admit(&self, ip: IpAddr) -> Option<Ticket> {
        if !self.config.public.allows(ip) {
            tracing::debug!(%ip, "connection refused by the address lists");
            return None;
        }
        let ticket = self.connections.admit(ip);
        if ticket.is_none() {
            tracing::debug!(source = %SourceKey::of(ip), "connection refused: too many open");
        }
        ticket
    }
}

/// The rates the firewall keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RateKind {
    Registrations,
    Logins,
    Lookups,
}

impl Firewall {
    /// Count one attempt from `ip` against `kind`'s rate. Over its own rate, the source also
    /// cools down: its new connections are closed as they arrive for `over_rate_cooldown_ms`.
    /// (Over the global rate only, it did nothing wrong and does not.)
    pub fn allow(&self, kind: RateKind, ip: IpAddr) -> bool {
        let source = SourceKey::of(ip);
        let limiter = match kind {
            RateKind::Registrations => &self.registrations,
            RateKind::Logins => &self.logins,
            RateKind::Lookups => &self.lookups,
        };
        match limiter.check(source) {
            Ok(()) => true,
            Err(Over::Source) => {
                let cooldown = Duration::from_millis(self.config.over_rate_cooldown_ms);
                self.connections
                    .cool_down(source, Instant::now() + cooldown);
                false
            }
            Err(Over::Global) => false,
        }
    }
}

/// The guard in front of every HTTP route but the link: the route's rate for the caller's source,
/// then the body's declared size, then the body itself, read whole within the request deadline
/// and no larger than the limit. A refusal reads nothing more and changes nothing.
pub async fn guard(
    State((firewall, kind)): State<(Arc<Firewall>, RateKind)>,
    Extension(peer): Extension<Peer>,
    request: Request,
    next: Next,
) -> Response {
    let what = match kind {
        RateKind::Registrations => "registrations",
        RateKind::Logins => "logins",
        RateKind::Lookups => "requests",
    };
    if !firewall.allow(kind, peer.0.ip()) {
        return crate::gateway::error_response(&CoreError::refused(
            codes::RATE_LIMITED,
            format!("too many {what} from this address; wait a minute"),
        ));
    }
    let max = firewall.config.max_body_bytes;
    let too_large = || {
        crate::gateway::error_response(&CoreError::refused(
            codes::TOO_LARGE,
            format!("request body over {max} bytes"),
        ))
    };
    let declared = request
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return too_large();
    }
    let (parts, body) = request.into_parts();
    let read = tokio::time::timeout(
        firewall.config.request_timeout(),
        axum::body::to_bytes(body, max),
    )
    .await;
    let bytes = match read {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(e)) if is_length_limit(&e) => return too_large(),
        Ok(Err(_)) => {
            return crate::gateway::error_response(&CoreError::refused(
                codes::BAD_REQUEST,
                "the request body could not be read",
            ));
        }
        Err(_) => {
            return crate::gateway::error_response(&CoreError::refused(
                codes::REQUEST_TIMEOUT,
                format!(
                    "the request body did not arrive within {} ms",
                    firewall.config.request_timeout_ms
                ),
            ));
        }
    };
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

/// Whether a body error is the length limit (and not the caller going away).
fn is_length_limit(e: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if err.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = err.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn rate(per_minute: u32, burst: u32, global_per_minute: u32, global_burst: u32) -> Rate {
        Rate {
            per_source_per_minute: per_minute,
            per_source_burst: burst,
            global_per_minute,
            global_burst,
        }
    }

    #[test]
    fn deny_wins_and_a_non_empty_allow_list_is_the_only_way_in() {
        let acl = Acl {
            allow: vec!["10.0.0.0/8".parse().unwrap()],
            deny: vec!["10.1.0.0/16".parse().unwrap()],
        };
        assert!(acl.allows(ip("10.2.3.4")));
        assert!(!acl.allows(ip("10.1.3.4")));
        assert!(!acl.allows(ip("192.0.2.1")));
        assert!(acl.allows(ip("::ffff:10.2.3.4")));
        assert!(Acl::default().allows(ip("192.0.2.1")));
        assert!(Acl::loopback().allows(ip("127.0.0.1")));
        assert!(Acl::loopback().allows(ip("::1")));
        assert!(!Acl::loopback().allows(ip("192.0.2.1")));
    }

    #[test]
    fn a_source_gets_its_burst_and_other_sources_keep_theirs() {
        let rate = rate(1, 3, 0, 0);
        let limiter = Limiter::new(rate, 1_000);
        let a = SourceKey::of(ip("192.0.2.1"));
        assert!((0..3).all(|_| limiter.allow(a)));
        assert!(!limiter.allow(a));
        // Another address of the same IPv6 /64 is the same source; another /64 is not.
        let v6 = SourceKey::of(ip("2001:db8::1"));
        assert!((0..3).all(|_| limiter.allow(v6)));
        assert!(!limiter.allow(SourceKey::of(ip("2001:db8::2"))));
        assert!(limiter.allow(SourceKey::of(ip("2001:db8:0:1::2"))));
        assert!(limiter.allow(SourceKey::of(ip("192.0.2.2"))));
    }

    #[test]
    fn the_global_rate_holds_across_sources() {
        let rate = rate(60, 60, 120, 2);
        let limiter = Limiter::new(rate, 1_000);
        let allowed = (0..10u8)
            .filter(|i| limiter.allow(SourceKey::of(IpAddr::from([192, 0, 2, *i]))))
            .count();
        // The global burst, whichever sources ask.
        assert_eq!(allowed, 2);
    }

    #[test]
    fn memory_is_bounded_however_many_sources_come() {
        let rate = rate(1, 1, 0, 0);
        let limiter = Limiter::new(rate, 100);
        let mut allowed = 0;
        for i in 0..10_000u32 {
            let [a, b, c, d] = i.to_be_bytes();
            let (high, low) = (u16::from_be_bytes([a, b]), u16::from_be_bytes([c, d]));
            let net = std::net::Ipv6Addr::from([0x2001, 0xdb8, high, low, 0, 0, 0, 1]);
            if limiter.allow(SourceKey::of(IpAddr::V6(net))) {
                allowed += 1;
            }
        }
        assert!(
            limiter.tracked() <= 100,
            "{} sources remembered",
            limiter.tracked()
        );
        // The first 100 sources got their own bucket; the rest shared one (a burst of 1).
        assert_eq!(allowed, 101);
    }

    #[test]
    fn a_source_holds_at_most_its_share_of_connections_until_one_ends_or_logs_in() {
        let conns = Connections::new(2, 3, 10);
        let a = ip("192.0.2.1");
        let first = conns.admit(a).expect("first");
        let second = conns.admit(a).expect("second");
        assert!(conns.admit(a).is_none(), "a third from one source");
        // Another source gets the last pre-login place; then nobody does.
        let b = conns.admit(ip("192.0.2.2")).expect("another source");
        assert!(
            conns.admit(ip("192.0.2.3")).is_none(),
            "over the pre-login total"
        );
        drop(first);
        let third = conns.admit(a).expect("a place was freed");
        // Logging in frees the place too, once.
        second.logged_in();
        second.logged_in();
        assert_eq!(conns.prelogin(), 2);
        drop(second);
        assert_eq!(conns.prelogin(), 2);
        drop((third, b));
        assert_eq!(conns.prelogin(), 0);
    }

    #[test]
    fn a_source_over_a_rate_cools_down_and_others_do_not() {
        let fw = Firewall::new(FirewallConfig {
            logins: rate(1, 1, 0, 0),
            over_rate_cooldown_ms: 200,
            ..FirewallConfig::default()
        });
        let (a, b) = (ip("192.0.2.1"), ip("192.0.2.2"));
        assert!(fw.allow(RateKind::Logins, a));
        assert!(fw.admit(a).is_some());
        assert!(!fw.allow(RateKind::Logins, a));
        assert!(fw.admit(a).is_none(), "cooling down");
        assert!(fw.admit(b).is_some(), "another source");
        std::thread::sleep(Duration::from_millis(250));
        assert!(fw.admit(a).is_some(), "cooled down");
    }

    #[test]
    fn cooling_sources_are_bounded() {
        let conns = Connections::new(10, 10, 2);
        let later = Instant::now() + Duration::from_secs(60);
        for i in 1..=3u8 {
            conns.cool_down(SourceKey::of(IpAddr::from([192, 0, 2, i])), later);
        }
        assert!(conns.admit(ip("192.0.2.1")).is_none());
        assert!(
            conns.admit(ip("192.0.2.3")).is_some(),
            "no room: not cooled"
        );
    }

    #[test]
    fn the_defaults_are_valid_and_bad_settings_are_refused() {
        assert_eq!(FirewallConfig::default().check(), Ok(()));
        let mut cfg = FirewallConfig::default();
        cfg.max_prelogin_connections = cfg.max_connections + 1;
        assert!(cfg.check().is_err());
        let mut cfg = FirewallConfig::default();
        cfg.logins.per_source_burst = 0;
        assert!(cfg.check().unwrap_err().contains("logins"));
    }
}
