//! `stampline bench flood --attack NAME`: one pre-login attack against a running server
//! (STAMPLINE_SERVER, STAMPLINE_TRUST) from several loopback sources (127.0.0.10 on), while a
//! legitimate user, from 127.0.0.1, logs in once a second and buys (issue + confirm) on a link it
//! keeps. It reports the legitimate user's latencies (p50/p99) and failures, and what the attack
//! got through. scripts/bench-flood.sh runs every attack against a release server and adds the
//! server's memory and threads (docs/BENCHMARKS.md). A benchmark, never a test: it measures.
//!
//! The attacks (what an attacker tried when the firewall was measured; docs/FIREWALL.md):
//! - `slow-body`: connections that declare a 1 MB registration and send a byte a second;
//! - `big-body`: registrations of 1.9 MB sent at full speed;
//! - `connections`: connections that finish the TLS handshake and send nothing;
//! - `hello`: link logins with random names and passwords, as fast as answered;
//! - `lockout`: wrong passwords for the legitimate user's name;
//! - `signup`: valid registrations of new names;
//! - `status`: item status lookups walking serials.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::{SinkExt as _, StreamExt as _};
use rustls::pki_types::ServerName;
use serde_json::{Value, json};
use stampline_client::{Client, Endpoint, Payment, new_request_id};
use stampline_money::Amount;
use stampline_wire::{Frame, Hex, Secret, decode_frame, encode_frame};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::tungstenite::Message;
use uuid::Uuid;

use crate::args::{FloodArgs, Global};
use crate::bench::{BENCH_POSTAGE_MILLS, bench_card, bench_issue, percentile_ms};
use crate::client_cmds::endpoint;
use crate::output::{CliError, Out};

const PASSWORD: &str = "flood bench password not for production";
/// How often the legitimate user logs in (within the firewall's per-source login rate).
const LOGIN_EVERY: Duration = Duration::from_secs(1);
/// How often the legitimate user buys on its link.
const BUY_EVERY: Duration = Duration::from_millis(100);
/// The attacks, by name.
pub const ATTACKS: [&str; 7] = [
    "slow-body",
    "big-body",
    "connections",
    "hello",
    "lockout",
    "signup",
    "status",
];

/// What the attack's tasks count.
#[derive(Debug, Default)]
struct Tally {
    /// Connections or requests the attacker started.
    attempts: AtomicU64,
    /// Connections closed before a TLS handshake completed (refused by the firewall).
    refused_connections: AtomicU64,
    /// Answers by code (HTTP status or link error code), kept small.
    answers: std::sync::Mutex<std::collections::BTreeMap<String, u64>>,
}

impl Tally {
    fn answer(&self, what: impl Into<String>) {
        let mut m = self.answers.lock().unwrap_or_else(|e| e.into_inner());
        *m.entry(what.into()).or_insert(0) += 1;
    }
}

/// Where the attacker connects from and to.
#[derive(Clone)]
struct Target {
    addr: SocketAddr,
    tls: tokio_rustls::TlsConnector,
    sources: Vec<IpAddr>,
}

impl Target {
    fn source(&self, n: u64) -> IpAddr {
        self.sources[usize::try_from(n).unwrap_or(0) % self.sources.len()]
    }

    async fn tls(&self, from: IpAddr) -> std::io::Result<TlsStream<TcpStream>> {
        let socket = TcpSocket::new_v4()?;
        socket.bind(SocketAddr::new(from, 0))?;
        let tcp = socket.connect(self.addr).await?;
        let name = ServerName::try_from("localhost").map_err(std::io::Error::other)?;
        tokio::time::timeout(Duration::from_secs(15), self.tls.connect(name, tcp))
            .await
            .map_err(|_| std::io::Error::other("handshake timed out"))?
    }
}

/// The first line's status of an HTTP answer read from `tls` (or "closed").
async fn status_line(tls: &mut TlsStream<TcpStream>) -> String {
    let mut buf = [0u8; 512];
    match tokio::time::timeout(Duration::from_secs(15), tls.read(&mut buf)).await {
        Ok(Ok(n)) if n > 0 => String::from_utf8_lossy(&buf[..n])
            .split(' ')
            .nth(1)
            .unwrap_or("?")
            .to_owned(),
        Ok(_) => "closed".into(),
        Err(_) => "no answer".into(),
    }
}

fn register_head(len: usize) -> String {
    format!(
        "POST /v1/register HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {len}\r\n\r\n"
    )
}

/// One attacker task's loop, until `stop`. `victim` is the legitimate user's name (the lockout
/// attack's target).
async fn attack_task(
    attack: &'static str,
    t: Target,
    n: u64,
    victim: Arc<str>,
    tally: Arc<Tally>,
    stop: Instant,
) {
    let mut round = 0u64;
    while Instant::now() < stop {
        round += 1;
        tally.attempts.fetch_add(1, Ordering::Relaxed);
        let from = t.source(n);
        let mut tls = match t.tls(from).await {
            Ok(tls) => tls,
            Err(_) => {
                tally.refused_connections.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        match attack {
            "slow-body" => {
                let _ = tls.write_all(register_head(1_000_000).as_bytes()).await;
                let mut answered = "held to the end".to_string();
                while Instant::now() < stop {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    if tls.write_all(b"x").await.is_err() || tls.flush().await.is_err() {
                        answered = "cut".into();
                        break;
                    }
                }
                tally.answer(answered);
            }
            "big-body" => {
                let body = vec![b' '; 1_900_000];
                let _ = tls.write_all(register_head(body.len()).as_bytes()).await;
                let _ = tls.write_all(&body).await;
                let status = status_line(&mut tls).await;
                tally.answer(status);
            }
            "connections" => {
                let mut buf = [0u8; 16];
                let _ = tokio::time::timeout(
                    stop.saturating_duration_since(Instant::now()),
                    tls.read(&mut buf),
                )
                .await;
                tally.answer("held until closed");
            }
            "hello" | "lockout" => {
                let (user, password) = if attack == "lockout" {
                    (victim.to_string(), format!("wrong password {round}"))
                } else {
                    (
                        format!("nobody-{n}-{round}"),
                        format!("random password {round}"),
                    )
                };
                let code = hello(tls, t.addr.port(), &user, &password).await;
                tally.answer(code);
            }
            "signup" => {
                let form = json!({"user": format!("flood-{n}-{round}-{}", &Uuid::new_v4().simple().to_string()[..6]),
                    "password": PASSWORD, "name": "Flood User", "address": "1 Main St",
                    "city": "Boston", "state": "MA", "zip": "02134"})
                .to_string();
                let _ = tls.write_all(register_head(form.len()).as_bytes()).await;
                let _ = tls.write_all(form.as_bytes()).await;
                let status = status_line(&mut tls).await;
                tally.answer(status);
            }
            "status" => {
                // Keep-alive: as many lookups per connection as the server answers.
                for k in 0..100u64 {
                    let get = format!(
                        "GET /v1/items/US-TEST0000{:08}/status HTTP/1.1\r\nHost: localhost\r\n\r\n",
                        round * 100 + k
                    );
                    if tls.write_all(get.as_bytes()).await.is_err() {
                        break;
                    }
                    let status = status_line(&mut tls).await;
                    let closed = status == "closed";
                    tally.answer(status);
                    if closed || Instant::now() >= stop {
                        break;
                    }
                }
            }
            _ => return,
        }
    }
}

/// A link hello over `tls`; the code of the first frame answered (`welcome` for a login).
async fn hello(tls: TlsStream<TcpStream>, port: u16, user: &str, password: &str) -> String {
    let Ok((mut ws, _)) =
        tokio_tungstenite::client_async(format!("wss://localhost:{port}/v1/link"), tls).await
    else {
        return "upgrade refused".into();
    };
    let frame = Frame::Hello {
        version: 1,
        user: user.into(),
        password: Secret(password.into()),
        client_nonce: Hex([7; 8]),
        client: "stampline-flood/1".into(),
        platform: None,
    };
    if ws.send(Message::text(encode_frame(&frame))).await.is_err() {
        return "closed".into();
    }
    match tokio::time::timeout(Duration::from_secs(30), ws.next()).await {
        Ok(Some(Ok(Message::Text(t)))) => match decode_frame(t.as_str()) {
            Ok(Frame::Error { code, .. }) => code,
            Ok(other) => other.type_name().to_owned(),
            Err(_) => "bad frame".into(),
        },
        Ok(_) => "closed".into(),
        Err(_) => "no answer".into(),
    }
}

/// The legitimate user: logs in once a second (then says bye); returns latencies (µs) and
/// failures with their codes.
async fn legit_logins(ep: Endpoint, user: String, stop: Instant) -> (Vec<u64>, Vec<String>) {
    let mut latencies = Vec::new();
    let mut failures = Vec::new();
    let mut next = tokio::time::Instant::now();
    while Instant::now() < stop {
        tokio::time::sleep_until(next).await;
        next += LOGIN_EVERY;
        let started = Instant::now();
        match Client::connect(ep.clone(), &user, PASSWORD).await {
            Ok(client) => {
                latencies.push(u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX));
                let _ = client.bye().await;
            }
            Err(e) => failures.push(e.code()),
        }
    }
    (latencies, failures)
}

/// The legitimate user's link: a buy (issue, then confirm) every [`BUY_EVERY`].
async fn legit_buys(client: Arc<Client>, stop: Instant) -> (Vec<u64>, Vec<String>) {
    let issue = bench_issue();
    let mut latencies = Vec::new();
    let mut failures = Vec::new();
    let mut next = tokio::time::Instant::now();
    while Instant::now() < stop {
        tokio::time::sleep_until(next).await;
        next += BUY_EVERY;
        let started = Instant::now();
        let bought = async {
            let issued = client.issue_postage(new_request_id(), &issue).await?;
            client.confirm(&issued.serial, true).await
        }
        .await;
        match bought {
            Ok(_) => {
                latencies.push(u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX))
            }
            Err(e) => failures.push(e.code()),
        }
    }
    (latencies, failures)
}

fn summary(mut latencies: Vec<u64>, failures: Vec<String>) -> Value {
    latencies.sort_unstable();
    let mut codes = std::collections::BTreeMap::<String, u64>::new();
    for f in failures.iter() {
        *codes.entry(f.clone()).or_insert(0) += 1;
    }
    json!({
        "ok": latencies.len(),
        "failed": failures.len(),
        "failures": codes,
        "p50_ms": percentile_ms(&latencies, 0.50),
        "p99_ms": percentile_ms(&latencies, 0.99),
        "max_ms": percentile_ms(&latencies, 1.0),
    })
}

/// Registers the legitimate user (one per run) and funds it for the buys.
async fn legit_user(ep: &Endpoint, user: &str, seconds: u64) -> Result<Client, CliError> {
    let form = json!({"user": user, "password": PASSWORD, "name": "Legit User",
        "address": "1 Main St", "city": "Boston", "state": "MA", "zip": "02134"});
    ep.register(&form).await?;
    let client = Client::connect(ep.clone(), user, PASSWORD).await?;
    let buys = seconds * 1000 / u64::try_from(BUY_EVERY.as_millis()).unwrap_or(100) + 10;
    let amount = Amount::from_mills(buys * BENCH_POSTAGE_MILLS)
        .ok_or_else(|| CliError::new("internal", "flood funding out of range"))?;
    client.fund(amount, Payment::Card(bench_card())).await?;
    Ok(client)
}

pub async fn flood(global: &Global, a: FloodArgs, out: Out) -> Result<(), CliError> {
    let attack: &'static str = ATTACKS
        .iter()
        .find(|name| **name == a.attack)
        .copied()
        .ok_or_else(|| {
            CliError::new(
                "bad_flag",
                format!("--attack must be one of {}", ATTACKS.join(", ")),
            )
        })?;
    if a.sources == 0 || a.sources > 200 || a.tasks == 0 || a.tasks > 20_000 || a.seconds == 0 {
        return Err(CliError::new(
            "bad_flag",
            "--sources 1 to 200, --tasks 1 to 20000, --seconds positive",
        ));
    }
    let ep = endpoint(global)?;
    let addr = tokio::net::lookup_host((ep.host.as_str(), ep.port))
        .await
        .map_err(|e| CliError::new("connect", e.to_string()))?
        .next()
        .ok_or_else(|| CliError::new("connect", "no address for the server"))?;
    let target = Target {
        addr,
        tls: tokio_rustls::TlsConnector::from(ep.trust.client_config(&[b"http/1.1"])),
        sources: (0..a.sources)
            .map(|i| {
                IpAddr::V4(Ipv4Addr::new(
                    127,
                    0,
                    1 + (i / 250) as u8,
                    10 + (i % 250) as u8,
                ))
            })
            .collect(),
    };
    let run = &Uuid::new_v4().simple().to_string()[..8];
    let user = format!("flood-legit-{run}");
    let client = Arc::new(legit_user(&ep, &user, a.seconds).await?);
    let victim: Arc<str> = Arc::from(user.as_str());

    let started = Instant::now();
    let stop = started + Duration::from_secs(a.seconds);
    let tally = Arc::new(Tally::default());
    let mut attackers = Vec::new();
    for n in 0..a.tasks {
        let (t, tally) = (target.clone(), Arc::clone(&tally));
        attackers.push(tokio::spawn(attack_task(
            attack,
            t,
            n,
            Arc::clone(&victim),
            tally,
            stop,
        )));
    }
    // Give the attack a moment to build up before measuring.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let logins = tokio::spawn(legit_logins(ep.clone(), user.clone(), stop));
    let buys = tokio::spawn(legit_buys(Arc::clone(&client), stop));
    let (login_lat, login_fail) = logins
        .await
        .map_err(|e| CliError::new("internal", e.to_string()))?;
    let (buy_lat, buy_fail) = buys
        .await
        .map_err(|e| CliError::new("internal", e.to_string()))?;
    for t in attackers {
        t.abort();
    }
    let answers = tally
        .answers
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let v = json!({
        "attack": attack,
        "seconds": a.seconds,
        "sources": a.sources,
        "tasks": a.tasks,
        "attack_attempts": tally.attempts.load(Ordering::Relaxed),
        "attack_refused_connections": tally.refused_connections.load(Ordering::Relaxed),
        "attack_answers": answers,
        "legit_login": summary(login_lat, login_fail),
        "legit_buy": summary(buy_lat, buy_fail),
    });
    let human = format!(
        "{attack}: legitimate login p50 {} ms p99 {} ms ({} failed); buy p50 {} ms p99 {} ms ({} failed)",
        v["legit_login"]["p50_ms"],
        v["legit_login"]["p99_ms"],
        v["legit_login"]["failed"],
        v["legit_buy"]["p50_ms"],
        v["legit_buy"]["p99_ms"],
        v["legit_buy"]["failed"],
    );
    out.done(&v, &human);
    if let Ok(client) = Arc::try_unwrap(client) {
        let _ = client.bye().await;
    }
    Ok(())
}
