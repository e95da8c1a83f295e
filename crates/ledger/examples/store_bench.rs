//! The ledger alone, without network, TLS or signing: THREADS threads each issue and confirm
//! ITEMS items for their own user, and the rate of issue+confirm pairs is printed. Used for
//! docs/BENCHMARKS.md ("where the time goes").
//!
//! ```sh
//! cargo run --release -p stampline-ledger --example store_bench -- sqlite 16 500 [GROUP_MAX]
//! cargo run --release -p stampline-ledger --example store_bench -- postgres://postgres@127.0.0.1/bench 16 500
//! ```
//! The PostgreSQL database must exist and be empty (or hold only an earlier run's schema).

use std::sync::Arc;
use std::time::Instant;

use stampline_ledger::testsuite::{self, TestSealer};
use stampline_ledger::{PgStore, SqliteStore, Store};

fn main() -> Result<(), String> {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: store_bench (sqlite|postgres://URL) THREADS ITEMS [GROUP_MAX]";
    let backend = args.get(1).ok_or(usage)?;
    let threads: u32 = args.get(2).and_then(|a| a.parse().ok()).ok_or(usage)?;
    let items: u32 = args.get(3).and_then(|a| a.parse().ok()).ok_or(usage)?;
    let group_max: Option<usize> = args.get(4).and_then(|a| a.parse().ok());
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let store: Arc<dyn Store> = if backend == "sqlite" {
        let mut s = SqliteStore::open(&dir.path().join("bench.sqlite"))
            .map_err(|e| e.to_string())?
            .with_sealer(Arc::new(TestSealer));
        if let Some(max) = group_max {
            s = s.with_max_group(max);
        }
        Arc::new(s)
    } else {
        Arc::new(
            PgStore::connect(backend)
                .map_err(|e| e.to_string())?
                .with_sealer(Arc::new(TestSealer)),
        )
    };
    // Users numbered from a per-run base so a PostgreSQL database can be reused.
    let base = (std::process::id() % 100_000) * 1000;
    let users: Vec<_> = (0..threads)
        .map(|t| {
            let u = testsuite::add_user(&*store, base + t);
            testsuite::fund(&*store, u, "f", u64::from(items) * testsuite::PRICE_MILLS);
            u
        })
        .collect();
    let started = Instant::now();
    std::thread::scope(|scope| {
        for &u in &users {
            let store = Arc::clone(&store);
            scope.spawn(move || {
                for n in 0..items {
                    let item =
                        testsuite::issue(&*store, u, &format!("i{n}"), testsuite::PRICE_MILLS);
                    testsuite::try_confirm(
                        &*store,
                        u,
                        &format!("c{n}"),
                        &item.serial,
                        true,
                        testsuite::T0_MS,
                    )
                    .map_err(|e| e.to_string())
                    .ok();
                }
            });
        }
    });
    let elapsed = started.elapsed().as_secs_f64();
    let pairs = f64::from(threads) * f64::from(items);
    println!(
        "{backend_name}: {threads} threads, {pairs} issue+confirm pairs in {elapsed:.2} s = {:.0} pairs/s",
        pairs / elapsed,
        backend_name = if backend == "sqlite" {
            "sqlite"
        } else {
            "postgres"
        },
    );
    Ok(())
}
