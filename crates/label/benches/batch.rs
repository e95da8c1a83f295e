//! A 1,000-piece batch rendered into one PDF (and, for comparison, one ZPL stream and single
//! pages): wall time and peak memory. Run with `cargo bench -p stampline-label --bench batch`
//! (a release build); figures go to docs/BENCHMARKS.md.
//!
//! Peak memory is the process's high-water resident set (`VmHWM` in /proc/self/status, Linux),
//! read before and after each render; the batch runs first, in a fresh process, so its figure is
//! the batch's own peak. Each figure is the median of a few runs.

use std::time::{Duration, Instant};

use stampline_label::{Format, Layout, Piece, render_layout, sample};

const PIECES: usize = 1_000;
const RUNS: usize = 5;

fn status_kib(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn item(seed: u64) -> Vec<u8> {
    let mut state = seed;
    let mut item = b"SL\x01\x01\x00\x37".to_vec();
    item.extend((0..120).map(|_| {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (state >> 56) as u8
    }));
    item
}

/// The sample piece, made the `n`th of a batch: its own serial, recipient and tracking number.
fn piece(item: &[u8], n: usize) -> Piece<'_> {
    let mut piece = sample::piece(item);
    piece.indicium[6] = format!("SERIAL SL0100001234-{n}");
    piece.to[0] = format!("CUSTOMER {n}");
    piece.tracking = Some(sample::tracking("202600004", &format!("{n:07}")));
    piece
}

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

fn measure(name: &str, runs: usize, render: impl Fn() -> Vec<u8>) {
    let rss_before = status_kib("VmRSS:").unwrap_or(0);
    let mut times = Vec::new();
    let mut size = 0;
    for _ in 0..runs {
        let start = Instant::now();
        let out = render();
        times.push(start.elapsed());
        size = out.len();
    }
    let peak = status_kib("VmHWM:").unwrap_or(0);
    println!(
        "{name}: median {:.3} s over {runs} runs, output {:.2} MB, peak RSS {:.1} MiB (+{:.1} MiB over the {:.1} MiB before)",
        median(times).as_secs_f64(),
        size as f64 / 1e6,
        peak as f64 / 1024.0,
        peak.saturating_sub(rss_before) as f64 / 1024.0,
        rss_before as f64 / 1024.0,
    );
}

fn main() {
    let items: Vec<Vec<u8>> = (0..PIECES as u64).map(item).collect();
    let pieces: Vec<Piece> = items
        .iter()
        .enumerate()
        .map(|(n, item)| piece(item, n))
        .collect();
    measure("1,000 x label4x6 -> one PDF", RUNS, || {
        render_layout(Layout::Label4x6, Format::Pdf, 300, &pieces).expect("render")
    });
    measure("1,000 x envelope10 -> one PDF", RUNS, || {
        render_layout(Layout::Envelope10, Format::Pdf, 300, &pieces).expect("render")
    });
    measure("1,000 on sheets (100 pages) -> one PDF", RUNS, || {
        render_layout(Layout::Sheet, Format::Pdf, 300, &pieces).expect("render")
    });
    measure("1,000 x label4x6 -> one ZPL stream, 203 dpi", RUNS, || {
        render_layout(Layout::Label4x6, Format::Zpl, 203, &pieces).expect("render")
    });
    measure("1,000 x label4x6 -> one ZPL stream, 300 dpi", 3, || {
        render_layout(Layout::Label4x6, Format::Zpl, 300, &pieces).expect("render")
    });
    for (layout, dpi) in [
        (Layout::Label4x6, 203),
        (Layout::Label4x6, 300),
        (Layout::Envelope10, 300),
    ] {
        measure(
            &format!("100 x one {layout:?} PNG at {dpi} dpi (each)"),
            1,
            || {
                let mut last = Vec::new();
                for p in pieces.iter().take(100) {
                    last = render_layout(layout, Format::Png, dpi, std::slice::from_ref(p))
                        .expect("render");
                }
                last
            },
        );
    }
}
