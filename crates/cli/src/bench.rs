//! `stampline bench`: a load generator against a running server (STAMPLINE_SERVER,
//! STAMPLINE_TRUST; `--also URL` spreads the links over several gateways of one core). It registers one user per link, logs each in on its own live link (real
//! logins, heartbeats and sealed frames) and funds it over that link through the sandbox bank,
//! then issues `--count` items in total — `--depth` requests in flight per link — and confirms
//! each as printed. It reports the issue rate and the latency of each issue request (send →
//! signed indicium back); confirmations run in the same workers and count in the time. Set-up is
//! paced to the server's firewall (registrations and logins per minute per address): a
//! `rate_limited` answer is retried after [`RATE_LIMIT_PAUSE`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use stampline_client::{Client, Endpoint, Payment, PostageIssue, new_request_id, today};
use stampline_money::Amount;
use stampline_wire::{Card, Secret};
use uuid::Uuid;

use crate::args::{BenchArgs, Global};
use crate::client_cmds::endpoint;
use crate::output::{CliError, Out};

/// How long set-up waits before retrying a `rate_limited` registration or login.
pub const RATE_LIMIT_PAUSE: Duration = Duration::from_secs(5);
/// Most retries of one rate-limited set-up step (about two minutes).
pub const MAX_RATE_LIMIT_RETRIES: u32 = 25;
/// Most requests in flight per link the server allows.
pub const MAX_DEPTH: usize = 32;
/// Most links (and users) one bench opens; beyond the firewall's per-source allowance of
/// registrations and logins (docs/FIREWALL.md; scripts/bench-e2e.sh raises it) set-up waits.
pub const MAX_LINKS: usize = 100;
/// Most items one bench issues.
pub const MAX_COUNT: u64 = 10_000_000;
/// Highest `--rate`, indicia per second.
pub const MAX_RATE: u64 = 1_000_000;
/// The postage each bench item carries (a First-Class letter).
pub const BENCH_POSTAGE_MILLS: u64 = 780;
/// The largest single funding the server accepts ($5,000).
const MAX_FUND_MILLS: u64 = 5_000_000;

const PASSWORD: &str = "bench password not for production";

pub fn percentile_ms(sorted_us: &[u64], p: f64) -> f64 {
    if sorted_us.is_empty() {
        return 0.0;
    }
    // Nearest rank: the smallest value with at least p of the samples at or below it.
    let rank = (p * sorted_us.len() as f64).ceil() as usize;
    let i = rank.clamp(1, sorted_us.len()) - 1;
    sorted_us[i] as f64 / 1000.0
}

/// Retries `step` while the server answers `rate_limited`.
async fn paced<T, F, Fut>(what: &str, mut step: F) -> Result<T, CliError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, CliError>>,
{
    let mut tries = 0;
    loop {
        match step().await {
            Err(e) if e.code == "rate_limited" && tries < MAX_RATE_LIMIT_RETRIES => {
                tries += 1;
                tracing::info!("{what}: rate limited by the server; waiting");
                tokio::time::sleep(RATE_LIMIT_PAUSE).await;
            }
            other => return other,
        }
    }
}

/// Registers `user`, logs in its link and funds it for `items` purchases over that link.
async fn user_client(ep: &Endpoint, user: &str, items: u64) -> Result<Client, CliError> {
    let form = json!({"user": user, "password": PASSWORD, "name": "Bench User",
        "address": "1 Main St", "city": "Boston", "state": "MA", "zip": "02134"});
    paced("register", || async { Ok(ep.register(&form).await?) }).await?;
    let client = paced("login", || async {
        Ok(Client::connect(ep.clone(), user, PASSWORD).await?)
    })
    .await?;
    let mut needed = items.saturating_mul(BENCH_POSTAGE_MILLS);
    while needed > 0 {
        let amount_mills = needed.min(MAX_FUND_MILLS);
        let amount = Amount::from_mills(amount_mills)
            .ok_or_else(|| CliError::new("internal", "bench funding out of range"))?;
        client.fund(amount, Payment::Card(bench_card())).await?;
        needed -= amount_mills;
    }
    Ok(client)
}

/// When a worker issues under `--rate`: its first request at `first`, then one every `every`.
#[derive(Clone, Copy)]
struct Schedule {
    first: tokio::time::Instant,
    every: Duration,
}

/// What every bench purchase is: a First-Class letter from 02134 to 94105, mailed today.
pub fn bench_issue() -> PostageIssue {
    PostageIssue {
        postage: Amount::from_mills(BENCH_POSTAGE_MILLS).unwrap_or(Amount::ZERO),
        class: "first-class-letter".into(),
        from_zip: "02134".into(),
        to_zip: "94105".into(),
        mail_date: today(),
        weight_oz: None,
    }
}

/// The sandbox bank's test card every bench user funds with.
pub fn bench_card() -> Card {
    Card {
        number: Secret("4242424242424242".into()),
        exp: "12/30".into(),
        cvc: Secret("123".into()),
    }
}

/// Issues and confirms `count` items on `link` (on `schedule`, or back to back); returns the issue
/// latencies in µs and the number of failed requests.
async fn worker(client: Arc<Client>, count: u64, schedule: Option<Schedule>) -> (Vec<u64>, u64) {
    let issue = bench_issue();
    let mut latencies = Vec::with_capacity(usize::try_from(count).unwrap_or(0));
    let mut errors = 0u64;
    for n in 0..count {
        // Scheduled requests count from their scheduled time, even when sent late.
        let started = match schedule {
            Some(s) => {
                let at = s.first + s.every * u32::try_from(n).unwrap_or(u32::MAX);
                tokio::time::sleep_until(at).await;
                at.into_std()
            }
            None => Instant::now(),
        };
        let serial = match client.issue_postage(new_request_id(), &issue).await {
            Ok(issued) => issued.serial,
            Err(e) => {
                errors += 1;
                tracing::warn!(code = %e.code(), "bench issue failed");
                continue;
            }
        };
        latencies.push(u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX));
        if client.confirm(&serial, true).await.is_err() {
            errors += 1;
        }
    }
    (latencies, errors)
}

pub async fn bench(global: &Global, a: BenchArgs, out: Out) -> Result<(), CliError> {
    if a.links == 0 || a.links > MAX_LINKS {
        return Err(CliError::new(
            "bad_flag",
            format!("--links must be 1 to {MAX_LINKS}"),
        ));
    }
    if a.depth == 0 || a.depth > MAX_DEPTH {
        return Err(CliError::new(
            "bad_flag",
            format!("--depth must be 1 to {MAX_DEPTH}"),
        ));
    }
    if a.count == 0 || a.count > MAX_COUNT {
        return Err(CliError::new(
            "bad_flag",
            format!("--count must be 1 to {MAX_COUNT}"),
        ));
    }
    if a.rate > MAX_RATE {
        return Err(CliError::new(
            "bad_flag",
            format!("--rate must be 0 (as fast as possible) to {MAX_RATE}"),
        ));
    }
    let ep = endpoint(global)?;
    let mut endpoints = vec![ep.clone()];
    for url in &a.also {
        endpoints.push(Endpoint::new(url, ep.trust.clone())?);
    }
    let run = &Uuid::new_v4().simple().to_string()[..8];
    let count = a.count;
    let per_link =
        |l: usize| count / a.links as u64 + u64::from((l as u64) < count % a.links as u64);

    // Set-up: one user per link, registered, logged in and funded.
    let setup_started = Instant::now();
    let mut links = Vec::with_capacity(a.links);
    for l in 0..a.links {
        let ep = &endpoints[l % endpoints.len()];
        let client = user_client(ep, &format!("bench-{run}-{l}"), per_link(l)).await?;
        links.push(Arc::new(client));
    }
    let setup_s = setup_started.elapsed().as_secs_f64();

    // The measured run. Under `--rate`, the workers take turns: worker k of W issues at
    // k/rate, then every W/rate.
    let started = Instant::now();
    let workers = a.links * a.depth;
    let schedule = |k: usize| {
        (a.rate > 0).then(|| Schedule {
            first: tokio::time::Instant::from_std(started)
                + Duration::from_secs_f64(k as f64 / a.rate as f64),
            every: Duration::from_secs_f64(workers as f64 / a.rate as f64),
        })
    };
    let mut tasks = Vec::new();
    for (l, link) in links.iter().enumerate() {
        let mine = per_link(l);
        for d in 0..a.depth {
            let share = mine / a.depth as u64 + u64::from((d as u64) < mine % a.depth as u64);
            if share > 0 {
                let k = d * a.links + l;
                tasks.push(tokio::spawn(worker(Arc::clone(link), share, schedule(k))));
            }
        }
    }
    let mut latencies = Vec::with_capacity(usize::try_from(count).unwrap_or(0));
    let mut errors = 0u64;
    for t in tasks {
        let (lat, err) = t
            .await
            .map_err(|e| CliError::new("internal", format!("bench worker: {e}")))?;
        latencies.extend(lat);
        errors += err;
    }
    let elapsed = started.elapsed().max(Duration::from_micros(1));
    for client in links {
        if let Ok(client) = Arc::try_unwrap(client) {
            let _ = client.bye().await;
        }
    }
    latencies.sort_unstable();
    let issued = latencies.len() as u64;
    let per_s = issued as f64 / elapsed.as_secs_f64();
    let v: Value = json!({
        "links": a.links,
        "depth": a.depth,
        "rate": a.rate,
        "count": count,
        "issued": issued,
        "errors": errors,
        "elapsed_s": (elapsed.as_secs_f64() * 1000.0).round() / 1000.0,
        "setup_s": (setup_s * 1000.0).round() / 1000.0,
        "indicia_per_s": per_s.round(),
        "p50_ms": percentile_ms(&latencies, 0.50),
        "p99_ms": percentile_ms(&latencies, 0.99),
        "p999_ms": percentile_ms(&latencies, 0.999),
        "max_ms": percentile_ms(&latencies, 1.0),
    });
    let human = format!(
        "issued and confirmed {issued} indicia over {} links (depth {}) in {:.2} s: {:.0} indicia/s; \
         issue latency p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms; {errors} errors",
        a.links,
        a.depth,
        elapsed.as_secs_f64(),
        per_s,
        v["p50_ms"].as_f64().unwrap_or(0.0),
        v["p99_ms"].as_f64().unwrap_or(0.0),
        v["p999_ms"].as_f64().unwrap_or(0.0),
    );
    out.done(&v, &human);
    if errors > 0 {
        return Err(CliError::new(
            "bench_errors",
            format!("{errors} requests failed (see the log)"),
        ));
    }
    Ok(())
}
