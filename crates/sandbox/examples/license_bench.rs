//! How long the CMLS sandbox takes to license customers and register their devices, on a state
//! file (every change durable before it is answered).
//!
//! `cargo run --release -p stampline-sandbox --example license_bench [-- N]` (N = 5000 by default).

use std::time::Instant;

use stampline_sandbox::{Cmls as _, LicenseApplication, SandboxCmls};

fn main() {
    let n: u32 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(5_000);
    let dir = std::env::temp_dir().join(format!("stampline-license-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("cmls.json");
    let cmls = SandboxCmls::open(Some(&path)).expect("open");
    let started = Instant::now();
    let mut last_thousand = Instant::now();
    for i in 1..=n {
        let app = LicenseApplication {
            name: format!("Customer {i}"),
            address: format!("{i} Main St"),
            city: "Boston".into(),
            state: "MA".into(),
            zip: "02134".into(),
        };
        let licence = cmls
            .license_customer(&app, Some(&format!("bench:{i}")))
            .expect("licence");
        let device = format!("SL01{:08}", licence.device_serial);
        cmls.register_device(&licence.license_id, &device, "0a0b0c0d", &[0x30; 91])
            .expect("device");
        if i % 1_000 == 0 {
            println!(
                "{i:>6} licences: the last 1,000 in {:.2} s",
                last_thousand.elapsed().as_secs_f64()
            );
            last_thousand = Instant::now();
        }
    }
    let total = started.elapsed().as_secs_f64();
    println!(
        "{n} licences and devices in {total:.2} s ({:.2} ms each)",
        total * 1_000.0 / f64::from(n)
    );
    drop(cmls);
    let reopened = Instant::now();
    let cmls = SandboxCmls::open(Some(&path)).expect("reopen");
    let devices = cmls.devices().expect("devices").len();
    println!(
        "reopened with {devices} devices in {:.2} s",
        reopened.elapsed().as_secs_f64()
    );
    let _ = std::fs::remove_dir_all(&dir);
}
