//! How long printing adds around an issue, against a real printer (ippeveprinter here):
//! `cargo run --release -p stampline-client --example print_bench -- ipp://localhost:PORT/ipp/print [JOBS]`
//!
//! Per job it times the part before the issue (printer check + Create-Job), the part after it
//! (Send-Document of a 300 dpi label PNG, then polling to `completed`), and, separately, opening
//! and cancelling a job that never gets its document (an issue that failed). Figures go to
//! docs/BENCHMARKS.md.

use std::time::{Duration, Instant};

use stampline_client::print::{DocFormat, JobEnd, PrintOptions, Printer};
use zeroize::Zeroizing;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

fn label() -> Result<Vec<u8>, Box<dyn std::error::Error>> {
    let mut item = b"SL\x01\x01\x00\x37".to_vec();
    item.extend((0..120u8).map(|i| i.wrapping_mul(37)));
    let spec = stampline_label::LabelSpec {
        item: &item,
        lines: ["US POSTAGE", "$0.78", "FIRST-CLASS MAIL", "FROM 02134"]
            .map(String::from)
            .to_vec(),
        dpi: 300,
    };
    Ok(stampline_label::render_png(&spec)?)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let uri = args.next().ok_or("give a printer URI")?;
    let jobs: usize = args.next().map_or(Ok(20), |n| n.parse())?;
    let printer = Printer::new(&uri, PrintOptions::default())?;
    let doc = label()?;
    let (_keep, lost) = tokio::sync::watch::channel(None);

    let (mut before, mut after, mut cancel) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..jobs {
        let t0 = Instant::now();
        let job = printer.start_job(DocFormat::Png, "bench").await?;
        let t1 = Instant::now();
        let report = job.finish(Zeroizing::new(doc.clone()), lost.clone()).await;
        let t2 = Instant::now();
        if report.end != JobEnd::Completed {
            return Err(format!("job ended {}: {}", report.end.as_str(), report.detail).into());
        }
        before.push(t1 - t0);
        after.push(t2 - t1);

        let t3 = Instant::now();
        let job = printer.start_job(DocFormat::Png, "bench-cancel").await?;
        let report = job.cancel("bench").await;
        cancel.push(t3.elapsed());
        if report.end == JobEnd::Completed {
            return Err("a cancelled job completed".into());
        }
    }
    println!(
        "{jobs} jobs, {} byte PNG: before issue (check + Create-Job) median {:?}; \
         after issue (Send-Document → completed) median {:?}; open + cancel median {:?}",
        doc.len(),
        median(before),
        median(after),
        median(cancel)
    );
    Ok(())
}
