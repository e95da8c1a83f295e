//! `stampline bench links`: what idle links cost. Registers one user per `--per-user` links,
//! logs every link in (a real hello, argon2id on the server; `K_user` derived once per user
//! here), prints `{"event":"registered",…}` when the users exist, `{"event":"warm",…}` when half
//! of the links are up and `{"event":"linked",…}` when all are, holds them `--hold` seconds while the
//! server beats them, then reports how many stayed up and how the beats arrived (the longest wait
//! each link saw for a beat). `scripts/bench-links.sh` reads the server's CPU and memory around
//! the hold. The firewall's per-source limits must allow the load (the script's config does);
//! nothing here gets around them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use stampline_client::{Endpoint, Link, LinkError};
use tokio::sync::Semaphore;
use uuid::Uuid;

use crate::args::{Global, LinksArgs};
use crate::bench::percentile_ms;
use crate::client_cmds::endpoint;
use crate::output::{CliError, Out};

/// Most links one run holds.
pub const MAX_LINKS: usize = 20_000;
/// Logins in flight at once (the server answers `busy` beyond its hash pool; the client waits
/// and retries those).
const LOGINS_AT_ONCE: usize = 32;
const PASSWORD: &str = "bench password not for production";

fn bad_flag(message: String) -> CliError {
    CliError::new("bad_flag", message)
}

/// One link, retried while the server paces the set-up (`rate_limited`, `busy`).
async fn link(
    ep: &Endpoint,
    user: &str,
    k_user: &stampline_wire::UserKey,
) -> Result<Link, CliError> {
    let mut tries = 0;
    loop {
        match Link::connect_with_key(ep, user, PASSWORD, k_user.clone()).await {
            Err(LinkError::Refused { code, .. })
                if (code == "rate_limited" || code == "busy") && tries < 60 =>
            {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            other => return other.map_err(CliError::from),
        }
    }
}

pub async fn bench_links(global: &Global, a: LinksArgs, out: Out) -> Result<(), CliError> {
    if a.count == 0 || a.count > MAX_LINKS {
        return Err(bad_flag(format!("--count must be 1 to {MAX_LINKS}")));
    }
    if a.per_user == 0 || a.per_user > stampline_server::link::MAX_LINKS_PER_USER {
        return Err(bad_flag(format!(
            "--per-user must be 1 to {}",
            stampline_server::link::MAX_LINKS_PER_USER
        )));
    }
    if a.hold == 0 || a.hold > 3_600 {
        return Err(bad_flag("--hold must be 1 to 3600 seconds".into()));
    }
    let ep = endpoint(global)?;
    let mut endpoints = vec![ep.clone()];
    for url in &a.also {
        endpoints.push(Endpoint::new(url, ep.trust.clone())?);
    }
    let run = Uuid::new_v4().simple().to_string()[..8].to_owned();
    let users = a.count.div_ceil(a.per_user);
    let started = Instant::now();

    // Users, each registered and its K_user derived once.
    let gate = Arc::new(Semaphore::new(LOGINS_AT_ONCE));
    let mut made = Vec::with_capacity(users);
    for u in 0..users {
        let (ep, gate) = (endpoints[u % endpoints.len()].clone(), Arc::clone(&gate));
        let name = format!("links-{run}-{u}");
        made.push(tokio::spawn(async move {
            let _slot = gate.acquire_owned().await;
            let form = json!({"user": name, "password": PASSWORD, "name": "Bench User",
                "address": "1 Main St", "city": "Boston", "state": "MA", "zip": "02134"});
            let mut tries = 0;
            loop {
                match ep.register(&form).await {
                    Err(e) if (e.code() == "rate_limited" || e.code() == "busy") && tries < 60 => {
                        tries += 1;
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                    other => break other.map(|_| ()).map_err(CliError::from)?,
                }
            }
            let key_name = name.clone();
            let k_user =
                tokio::task::spawn_blocking(move || stampline_wire::user_key(PASSWORD, &key_name))
                    .await
                    .map_err(|e| CliError::new("internal", e.to_string()))?;
            Ok::<_, CliError>((name, Arc::new(k_user)))
        }));
    }
    let mut accounts = Vec::with_capacity(users);
    for m in made {
        accounts.push(
            m.await
                .map_err(|e| CliError::new("internal", e.to_string()))??,
        );
    }

    println!("{}", json!({"event": "registered", "users": users}));

    // The links, LOGINS_AT_ONCE at a time: the first half, a line (the script reads the server's
    // memory there: by then its password-hash pool has run at full width long enough to hold all
    // its allocator keeps, so what grows after is the links'), then the rest.
    let login_started = Instant::now();
    let warm = a.count / 2;
    let mut links = Vec::with_capacity(a.count);
    for (from, to) in [(0, warm), (warm, a.count)] {
        let mut opening = Vec::with_capacity(to - from);
        for l in from..to {
            let (name, k_user) = accounts[l / a.per_user].clone();
            let (ep, gate) = (endpoints[l % endpoints.len()].clone(), Arc::clone(&gate));
            opening.push(tokio::spawn(async move {
                let _slot = gate.acquire_owned().await;
                link(&ep, &name, &k_user).await
            }));
        }
        for o in opening {
            links.push(
                o.await
                    .map_err(|e| CliError::new("internal", e.to_string()))??,
            );
        }
        if from == 0 {
            println!("{}", json!({"event": "warm", "links": links.len()}));
        }
    }
    let login_s = login_started.elapsed().as_secs_f64();
    let setup_s = started.elapsed().as_secs_f64();
    // The script measures the server from here: one line, then the hold.
    println!(
        "{}",
        json!({"event": "linked", "links": links.len(), "setup_s": round3(setup_s)})
    );
    let before: Vec<u64> = links.iter().map(|l| l.beat_stats().beats).collect();
    tokio::time::sleep(Duration::from_secs(a.hold)).await;

    let lost = links.iter().filter(|l| l.lost_reason().is_some()).count();
    let mut gaps: Vec<u64> = links
        .iter()
        .map(|l| u64::try_from(l.beat_stats().max_gap.as_micros()).unwrap_or(u64::MAX))
        .collect();
    gaps.sort_unstable();
    let beats: u64 = links
        .iter()
        .zip(&before)
        .map(|(l, b)| l.beat_stats().beats.saturating_sub(*b))
        .sum();
    let v = json!({
        "links": links.len(),
        "users": users,
        "gateways": endpoints.len(),
        "hold_s": a.hold,
        "setup_s": round3(setup_s),
        "logins_per_s": (a.count as f64 / login_s.max(1e-6)).round(),
        "lost": lost,
        "beats_during_hold": beats,
        "max_beat_gap_p50_ms": percentile_ms(&gaps, 0.50),
        "max_beat_gap_p99_ms": percentile_ms(&gaps, 0.99),
        "max_beat_gap_max_ms": percentile_ms(&gaps, 1.0),
    });
    let human = format!(
        "{} links held {} s: {lost} lost, {beats} beats; longest wait for a beat per link p50 {:.0} ms, p99 {:.0} ms",
        links.len(),
        a.hold,
        v["max_beat_gap_p50_ms"].as_f64().unwrap_or(0.0),
        v["max_beat_gap_p99_ms"].as_f64().unwrap_or(0.0),
    );
    out.done(&v, &human);
    if lost > 0 {
        return Err(CliError::new(
            "links_lost",
            format!("{lost} links ended during the hold"),
        ));
    }
    Ok(())
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}
