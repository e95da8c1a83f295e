//! Signing throughput of both crypto devices: `cargo bench -p stampline-psd --bench signing`.
//!
//! Signs a 55-byte payload (an indicium's signed part is that size) with the current item key,
//! on 1, 2 and 4 threads, for about two seconds each, and prints signatures per second. The
//! PKCS#11 figures use SoftHSM2 with a throw-away token (`stampline_psd::testkit`): without `SOFTHSM2_CONF` set, the bench
//! makes one and re-runs itself with it (this crate may not set environment variables).
//! Also times opening the software device (the argon2id key derivation dominates).

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use stampline_psd::testkit::{init_softhsm_token, softhsm_available, softhsm_module};
use stampline_psd::{Passphrase, Pkcs11Config, Pkcs11Psd, Psd, SoftwarePsd};
use zeroize::Zeroizing;

const RUN: Duration = Duration::from_secs(2);
const TOKEN: &str = "stampline-bench";
const PIN: &str = "1234";

/// CPU time of this process so far (all threads), in clock ticks of 10 ms (Linux `/proc`).
fn cpu_ticks() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which is in parentheses); utime and stime are 14 and 15.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

/// (signatures per wall-clock second, signatures per CPU second).
fn throughput(psd: Arc<dyn Psd>, threads: usize) -> (f64, Option<f64>) {
    let key = psd.current_signing_key();
    let cpu_before = cpu_ticks();
    let start = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let psd = Arc::clone(&psd);
            std::thread::spawn(move || {
                let payload = [0x5au8; 55];
                let mut n = 0u64;
                while start.elapsed() < RUN {
                    psd.sign_item(key, &payload).unwrap();
                    n += 1;
                }
                n
            })
        })
        .collect();
    let total: u64 = handles.into_iter().map(|h| h.join().unwrap()).sum();
    let wall = total as f64 / start.elapsed().as_secs_f64();
    let cpu = match (cpu_before, cpu_ticks()) {
        (Some(a), Some(b)) if b > a => Some(total as f64 / ((b - a) as f64 / 100.0)),
        _ => None,
    };
    (wall, cpu)
}

fn report(name: &str, psd: Arc<dyn Psd>) {
    for threads in [1, 2, 4] {
        let (per_s, per_cpu_s) = throughput(Arc::clone(&psd), threads);
        let cpu = per_cpu_s.map_or_else(|| "?".to_owned(), |c| format!("{c:.0}"));
        println!(
            "{name:>9}  {threads} thread(s)  {per_s:>9.0} signatures/s  {cpu:>9} per CPU-second"
        );
    }
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    if std::env::var_os("SOFTHSM2_CONF").is_none() {
        println!("Stampline crypto device signing throughput (ECDSA P-256, 55-byte payload)");
        let pass = || Passphrase::given(Zeroizing::new("bench passphrase, long".into())).unwrap();
        let t = Instant::now();
        SoftwarePsd::open(dir.path(), pass(), 1).unwrap();
        println!(
            "software device, first open (keys made, argon2id): {:?}",
            t.elapsed()
        );
        let t = Instant::now();
        let psd = SoftwarePsd::open(dir.path(), pass(), 1).unwrap();
        println!(
            "software device, open (argon2id 64 MiB, 3 passes): {:?}",
            t.elapsed()
        );
        report("software", Arc::new(psd));
        let token = softhsm_available()
            .then(|| init_softhsm_token(dir.path(), TOKEN, PIN).ok())
            .flatten();
        match token {
            Some(conf) => {
                let status = std::process::Command::new(std::env::current_exe().unwrap())
                    .args(std::env::args().skip(1))
                    .env("SOFTHSM2_CONF", conf)
                    .status()
                    .unwrap();
                assert!(status.success());
            }
            None => println!("   pkcs11  skipped: SoftHSM2 not available"),
        }
        return;
    }
    let cfg = Pkcs11Config {
        module: softhsm_module(),
        token: TOKEN.into(),
        pin: Zeroizing::new(PIN.into()),
    };
    let psd = Pkcs11Psd::open(dir.path(), &cfg, 1).unwrap();
    report("pkcs11", Arc::new(psd));
}
