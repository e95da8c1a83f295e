//! How much a bank call costs: the in-process sandbox against the same sandbox as an HTTPS
//! service through the server's adapter (new TLS 1.3 connection per call, state fsynced).
//! `cargo run --release -p stampline-server --example external_bench [N]`; figures in
//! docs/BENCHMARKS.md.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use stampline_sandbox::service::{Kind, Service};
use stampline_sandbox::{Bank, SandboxBank};
use stampline_server::adapters::HttpBank;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn run(name: &str, bank: &dyn Bank, n: usize) {
    let token = bank
        .tokenize_card("4242424242424242", "12/30", "123", &format!("{name}-tok"))
        .unwrap()
        .token;
    let mut times = Vec::with_capacity(n);
    let start = Instant::now();
    for i in 0..n {
        let t = Instant::now();
        bank.charge(&token, 1_000, &format!("{name}-{i}")).unwrap();
        times.push(t.elapsed());
    }
    let total = start.elapsed();
    times.sort();
    println!(
        "{name}: {n} charges, {:.0}/s, p50 {:?}, p99 {:?}",
        n as f64 / total.as_secs_f64(),
        percentile(&times, 0.5),
        percentile(&times, 0.99)
    );
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(500);
    let dir = tempfile::tempdir().unwrap();
    let local = SandboxBank::open(Some(&dir.path().join("local.json"))).unwrap();
    run("in-process sandbox", &local, n);

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let service_dir = dir.path().join("bank");
    let service = Service::open(Kind::Bank, &service_dir, None, Vec::new()).unwrap();
    let trust = service.trust_path.clone();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let url = format!("https://{}", listener.local_addr().unwrap());
    rt.spawn(service.run(listener, std::future::pending()));
    let _guard = rt.enter();
    let http = HttpBank::open(&url, &trust, Duration::from_secs(10)).unwrap();
    // The adapter blocks on the runtime, so it is driven from a plain thread.
    std::thread::scope(|s| {
        s.spawn(|| run("HTTPS service via adapter", &http, n));
    });
}
