//! Printing for `buy` and `print`, and the `printers` command: which printers and formats, opening
//! jobs before the item is issued, rendering, finishing jobs on the live link, and confirming from
//! the printers' final job states.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde_json::{Value, json};
use stampline_client::Link;
use stampline_client::print::{
    DocFormat, Job, JobEnd, JobReport, PrintOptions, Printer, PrinterUri,
};
use stampline_items::{Body, Item};
use stampline_wire::Op;
use tokio::sync::watch;
use zeroize::Zeroizing;

use crate::args::{Global, PrintArgs, PrintersArgs};
use crate::buy::check_item;
use crate::client_cmds::{connect, ok_fields};
use crate::output::{CliError, Out};

/// Formats written when printing to files and none is named.
const DEFAULT_FILE_FORMATS: [&str; 2] = ["png", "pdf"];
/// What a calibration label's DataMatrix carries: plainly not an item.
const CALIBRATION_BYTES: &[u8] = b"STAMPLINE CALIBRATION - NOT POSTAGE";

impl From<stampline_client::print::PrintError> for CliError {
    fn from(e: stampline_client::print::PrintError) -> Self {
        CliError::new(e.code(), e.to_string())
    }
}

/// One printer and the format it is sent.
#[derive(Debug)]
pub struct Target {
    pub printer: Printer,
    pub format: DocFormat,
}

fn parse_format(name: &str) -> Result<DocFormat, CliError> {
    DocFormat::parse(name).ok_or_else(|| {
        CliError::new(
            "unsupported",
            format!("format {name:?}: this version prints png, pdf, raw and zpl"),
        )
    })
}

/// Reads `--printer-cert` (PEM) into the pinned DER.
pub fn print_options(cert: Option<&Path>) -> Result<PrintOptions, CliError> {
    let pinned_cert_der = match cert {
        None => None,
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| {
                CliError::new(
                    "bad_printer_cert",
                    format!("cannot read {}: {e}", path.display()),
                )
            })?;
            let body: String = text
                .lines()
                .skip_while(|l| !l.starts_with("-----BEGIN CERTIFICATE-----"))
                .skip(1)
                .take_while(|l| !l.starts_with("-----END"))
                .collect();
            let der = base64::engine::general_purpose::STANDARD
                .decode(body.trim())
                .ok()
                .filter(|d| !d.is_empty())
                .ok_or_else(|| {
                    CliError::new(
                        "bad_printer_cert",
                        format!("{} holds no PEM CERTIFICATE block", path.display()),
                    )
                })?;
            Some(der)
        }
    };
    Ok(PrintOptions {
        pinned_cert_der,
        job_timeout: None,
    })
}

/// The jobs a `--printer` asks for: one per format for `file:PATH` (the extension set per format,
/// PNG and PDF by default), exactly one for IPP and the raw port.
pub fn targets(
    uri: &str,
    formats: &[String],
    options: &PrintOptions,
) -> Result<Vec<Target>, CliError> {
    let parsed = PrinterUri::parse(uri)?;
    match parsed {
        PrinterUri::File { path } => {
            let names: Vec<String> = if formats.is_empty() {
                DEFAULT_FILE_FORMATS
                    .iter()
                    .map(|s| (*s).to_owned())
                    .collect()
            } else {
                formats.to_vec()
            };
            let mut out = Vec::new();
            for name in dedup(names) {
                let format = parse_format(&name)?;
                let file = path.with_extension(format.name());
                out.push(Target {
                    printer: Printer::new(&format!("file:{}", file.display()), options.clone())?,
                    format,
                });
            }
            Ok(out)
        }
        _ => {
            let printer = Printer::new(uri, options.clone())?;
            let format = match formats {
                [] => printer.default_format(),
                [one] => parse_format(one)?,
                _ => {
                    return Err(CliError::new(
                        "bad_request",
                        "a printer takes one --format; give one of png, pdf, raw, zpl",
                    ));
                }
            };
            Ok(vec![Target { printer, format }])
        }
    }
}

fn dedup(names: Vec<String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for n in names {
        if !out.contains(&n) {
            out.push(n);
        }
    }
    out
}

/// File targets for `buy` without `--printer`: `--out` or `./SERIAL`, one file per format.
pub fn file_targets(base: &Path, formats: &[String]) -> Result<Vec<Target>, CliError> {
    targets(
        &format!("file:{}", base.display()),
        formats,
        &PrintOptions::default(),
    )
}

/// Opens every job (no document yet). On a failure, the jobs already open are cancelled.
pub async fn start_jobs(
    targets: Vec<Target>,
    job_name: &str,
) -> Result<Vec<(DocFormat, Job)>, CliError> {
    let mut jobs = Vec::new();
    for t in targets {
        match t.printer.start_job(t.format, job_name).await {
            Ok(job) => jobs.push((t.format, job)),
            Err(e) => {
                cancel_jobs(jobs, "another printer refused").await;
                return Err(e.into());
            }
        }
    }
    Ok(jobs)
}

pub async fn cancel_jobs(jobs: Vec<(DocFormat, Job)>, why: &str) {
    for (_, job) in jobs {
        let r = job.cancel(why).await;
        tracing::info!(end = r.end.as_str(), detail = %r.detail, "job cancelled");
    }
}

/// Renders the item in one format.
pub fn render(item: &Item, bytes: &[u8], format: DocFormat, dpi: u32) -> Result<Vec<u8>, String> {
    let Body::Postage(indicium) = &item.body else {
        return Err("only postage is printed by this version".into());
    };
    render_label(bytes, indicium.label_lines(), format, dpi)
}

fn render_label(
    bytes: &[u8],
    lines: Vec<String>,
    format: DocFormat,
    dpi: u32,
) -> Result<Vec<u8>, String> {
    let spec = stampline_label::LabelSpec {
        item: bytes,
        lines,
        dpi,
    };
    match format {
        DocFormat::Png => stampline_label::render_png(&spec).map_err(|e| e.to_string()),
        DocFormat::Pdf => stampline_label::render_pdf(&spec).map_err(|e| e.to_string()),
        DocFormat::Raw => Ok(bytes.to_vec()),
        DocFormat::Svg => Err("svg needs --layout".into()),
        DocFormat::Zpl => {
            let png = stampline_label::render_png(&spec).map_err(|e| e.to_string())?;
            zpl_from_png(&png)
        }
    }
}

/// A minimal ZPL II label: the PNG raster as one `^GFA` graphic field (1 = black dot), one copy
/// (`^PQ1`). The raster is rendered at `--dpi`, which should be the printer's (203 or 300).
pub fn zpl_from_png(png: &[u8]) -> Result<Vec<u8>, String> {
    let img = image::load_from_memory_with_format(png, image::ImageFormat::Png)
        .map_err(|e| format!("label raster: {e}"))?
        .to_luma8();
    let (width, height) = (img.width() as usize, img.height() as usize);
    let row_bytes = width.div_ceil(8);
    let total = row_bytes * height;
    let mut out = format!("^XA^PQ1^FO0,0^GFA,{total},{total},{row_bytes},").into_bytes();
    out.reserve(total * 2 + 8);
    for y in 0..height {
        for chunk in 0..row_bytes {
            let mut byte = 0u8;
            for bit in 0..8 {
                let x = chunk * 8 + bit;
                // Pixels are u32-indexed; x < width and y < height fit by construction.
                let dark = x < width
                    && img
                        .get_pixel_checked(x as u32, y as u32)
                        .is_some_and(|p| p.0[0] < 128);
                if dark {
                    byte |= 0x80 >> bit;
                }
            }
            out.extend_from_slice(format!("{byte:02X}").as_bytes());
        }
    }
    out.extend_from_slice(b"^FS^XZ\n");
    Ok(out)
}

/// Finishes the jobs one after another with the rendered item. After the first job that does not
/// complete, the rest are cancelled (one failed print voids the item, so none may print).
pub async fn finish_jobs(
    jobs: Vec<(DocFormat, Job)>,
    mut document: impl FnMut(DocFormat) -> Result<Vec<u8>, String>,
    lost: &watch::Receiver<Option<String>>,
) -> Vec<JobReport> {
    let mut reports: Vec<JobReport> = Vec::new();
    for (format, job) in jobs {
        if reports.iter().any(|r| r.end != JobEnd::Completed) {
            reports.push(job.cancel("an earlier job did not print").await);
            continue;
        }
        let report = match document(format) {
            Ok(doc) => job.finish(Zeroizing::new(doc), lost.clone()).await,
            Err(e) => {
                let mut r = job
                    .cancel(&format!("cannot render {}: {e}", format.name()))
                    .await;
                r.end = JobEnd::Aborted;
                r
            }
        };
        reports.push(report);
    }
    reports
}

/// How the jobs came out, for confirming.
pub enum Verdict {
    /// Every job completed on a live link: confirm printed.
    Printed,
    /// The link was lost before every job completed: nothing can be confirmed.
    LinkLost(String),
    /// A job was refused, aborted or cancelled at the printer: confirm failed.
    Failed(String),
}

fn describe(r: &JobReport) -> String {
    match r.job_id {
        Some(id) => format!("job {id} {}: {}", r.end.as_str(), r.detail),
        None => format!("{}: {}", r.end.as_str(), r.detail),
    }
}

pub fn verdict(reports: &[JobReport], link: &Link) -> Verdict {
    let lost = reports
        .iter()
        .find_map(|r| r.link_lost.clone())
        .or_else(|| link.lost_reason());
    let detail = reports.iter().map(describe).collect::<Vec<_>>().join("; ");
    if let Some(reason) = lost {
        let printed_anyway = reports.iter().any(|r| r.end == JobEnd::Completed);
        let tail = if printed_anyway {
            " — a label came out, but it will be void: do not use it"
        } else {
            ""
        };
        return Verdict::LinkLost(format!("{reason}; printer: {detail}{tail}"));
    }
    if reports.iter().all(|r| r.end == JobEnd::Completed) {
        Verdict::Printed
    } else {
        Verdict::Failed(detail)
    }
}

/// Files of completed file jobs, and removing them when the item is not confirmed.
pub fn files_of(reports: &[JobReport]) -> Vec<PathBuf> {
    reports.iter().filter_map(|r| r.file.clone()).collect()
}

pub fn remove_files(reports: &[JobReport]) {
    for f in files_of(reports) {
        let _ = std::fs::remove_file(f);
    }
}

pub fn jobs_json(reports: &[JobReport]) -> Value {
    Value::Array(
        reports
            .iter()
            .map(|r| json!({"job_id": r.job_id, "state": r.end.as_str(), "detail": r.detail}))
            .collect(),
    )
}

/// Confirms `printed` or `failed` for an item whose confirmation is pending, from the verdict.
/// Returns the confirm answer's fields on success; the error says what happened to the money.
pub async fn settle(link: &Link, serial: &str, reports: &[JobReport]) -> Result<Value, CliError> {
    match verdict(reports, link) {
        Verdict::Printed => {
            let r = link
                .request(Op::Confirm {
                    serial: serial.to_owned(),
                    printed: true,
                })
                .await;
            match r {
                Ok(r) => ok_fields(r),
                Err(e) => Err(CliError::new(
                    e.code(),
                    format!(
                        "printed, but the confirmation did not arrive ({e}); the item will be voided when the confirmation window ends: do not use the label"
                    ),
                )),
            }
        }
        Verdict::LinkLost(why) => {
            remove_files(reports);
            Err(CliError::new(
                "link_lost",
                format!(
                    "link lost while printing, so the job was cancelled: {why}; the item was not confirmed and will be voided and refunded when the confirmation window ends"
                ),
            ))
        }
        Verdict::Failed(why) => {
            remove_files(reports);
            let confirm = link
                .request(Op::Confirm {
                    serial: serial.to_owned(),
                    printed: false,
                })
                .await;
            let tail = if matches!(&confirm, Ok(r) if r.ok) {
                "the item was voided and refunded"
            } else {
                "the item will be voided and refunded when the confirmation window ends"
            };
            Err(CliError::new(
                "print_failed",
                format!("the printer did not print: {why}; {tail}"),
            ))
        }
    }
}

/// `stampline print SERIAL --printer URI`: fetch the item again (`reprint`, counted by the
/// server), check it, print it link-safely; an item still awaiting confirmation is confirmed from
/// the job's end, as in `buy`.
pub async fn print(global: &Global, a: PrintArgs, out: Out) -> Result<(), CliError> {
    let options = print_options(a.printer_cert.as_deref())?;
    let formats: Vec<String> = a.format.iter().cloned().collect();
    let targets = targets(&a.printer, &formats, &options)?;
    if !(100..=1200).contains(&a.dpi) {
        return Err(CliError::new("bad_request", "--dpi must be 100 to 1200"));
    }
    let (ep, link) = connect(global).await?;
    let keys = ep.keys().await?;
    let jobs = start_jobs(targets, &a.serial).await?;
    let answer = match link
        .request(Op::Reprint {
            serial: a.serial.clone(),
        })
        .await
    {
        Ok(r) => ok_fields(r),
        Err(e) => Err(e.into()),
    };
    let fields = match answer {
        Ok(f) => f,
        Err(e) => {
            cancel_jobs(jobs, "the server did not hand out the item").await;
            return Err(e);
        }
    };
    let status = fields["status"].as_str().unwrap_or_default().to_owned();
    let item_bytes = base64::engine::general_purpose::STANDARD
        .decode(fields["item"].as_str().unwrap_or_default())
        .unwrap_or_default();
    let item = match check_item(&item_bytes, &keys) {
        Ok(item) if item.body.serial().to_string() == a.serial => item,
        Ok(_) => {
            cancel_jobs(jobs, "wrong item").await;
            return Err(CliError::new("bad_answer", "the server sent another item"));
        }
        Err(e) => {
            cancel_jobs(jobs, &e).await;
            return Err(CliError::new("bad_item", e));
        }
    };
    let lost = link.watch_lost();
    let reports = finish_jobs(
        jobs,
        |format| render(&item, &item_bytes, format, a.dpi),
        &lost,
    )
    .await;
    let reprints = fields["reprints"].as_u64().unwrap_or(0);
    let left = fields["reprints_left"].as_u64().unwrap_or(0);
    let final_status = if status == "issued" {
        let confirmed = settle(&link, &a.serial, &reports).await?;
        confirmed["status"].as_str().unwrap_or("printed").to_owned()
    } else {
        match verdict(&reports, &link) {
            Verdict::Printed => status.clone(),
            Verdict::LinkLost(why) | Verdict::Failed(why) => {
                remove_files(&reports);
                return Err(CliError::new(
                    "print_failed",
                    format!(
                        "the reprint did not print: {why}; the item stays {status}, {left} reprints left"
                    ),
                ));
            }
        }
    };
    let _ = link.bye().await;
    let files: Vec<String> = files_of(&reports)
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    let v = json!({
        "serial": a.serial,
        "status": final_status,
        "printed": true,
        "reprints": reprints,
        "reprints_left": left,
        "printer": a.printer,
        "jobs": jobs_json(&reports),
        "files": files,
    });
    out.done(
        &v,
        &format!(
            "printed {} on {} (reprint {reprints}, {left} left)",
            a.serial, a.printer
        ),
    );
    Ok(())
}

/// `stampline printers URI…`: each printer's state and what it takes; `--calibrate` prints a
/// calibration label (no link needed: it carries no value).
pub async fn printers(a: PrintersArgs, out: Out) -> Result<(), CliError> {
    let mut options = print_options(a.printer_cert.as_deref())?;
    let formats: Vec<String> = a.format.iter().cloned().collect();
    let mut list = Vec::new();
    let mut human = String::new();
    let mut fingerprint = None;
    if let Some(path) = &a.save_cert {
        let [uri] = a.uris.as_slice() else {
            return Err(CliError::new(
                "bad_request",
                "--save-cert takes exactly one ipps:// printer",
            ));
        };
        let (der, fp) = Printer::new(uri, options.clone())?
            .fetch_certificate()
            .await?;
        let b64 = base64::engine::general_purpose::STANDARD.encode(&der);
        let mut pem = String::from("-----BEGIN CERTIFICATE-----\n");
        for chunk in b64.as_bytes().chunks(64) {
            pem.push_str(&String::from_utf8_lossy(chunk));
            pem.push('\n');
        }
        pem.push_str("-----END CERTIFICATE-----\n");
        std::fs::write(path, pem).map_err(|e| {
            CliError::new("print_io", format!("cannot write {}: {e}", path.display()))
        })?;
        human.push_str(&format!(
            "saved the certificate of {uri} to {} — SHA-256 {fp}; check it against the printer's own before pinning it\n",
            path.display()
        ));
        options.pinned_cert_der = Some(der);
        fingerprint = Some(fp);
    }
    let mut all_ok = true;
    for uri in &a.uris {
        let printer = match Printer::new(uri, options.clone()) {
            Ok(p) => p,
            Err(e) => {
                all_ok = false;
                list.push(json!({"uri": uri, "error": e.code(), "message": e.to_string()}));
                human.push_str(&format!("{uri}: {e}\n"));
                continue;
            }
        };
        let mut entry = match printer.status().await {
            Ok(s) => {
                human.push_str(&format!(
                    "{}: {}{}{}\n",
                    s.uri,
                    s.state,
                    if s.reasons.is_empty() {
                        String::new()
                    } else {
                        format!(" ({})", s.reasons.join(", "))
                    },
                    s.make_and_model
                        .as_deref()
                        .map(|m| format!(" — {m}"))
                        .unwrap_or_default()
                ));
                json!({
                    "uri": s.uri,
                    "state": s.state,
                    "reasons": s.reasons,
                    "make_and_model": s.make_and_model,
                    "formats": s.formats,
                    "policy": s.policy.map(|p| json!({
                        "copies_1": p.copies, "retain_none": p.retain_none, "hold": p.hold
                    })),
                })
            }
            Err(e) => {
                all_ok = false;
                human.push_str(&format!("{uri}: {e}\n"));
                list.push(json!({"uri": uri, "error": e.code(), "message": e.to_string()}));
                continue;
            }
        };
        if a.calibrate {
            let report = calibrate(uri, &formats, &options, a.dpi).await;
            match report {
                Ok(reports) => {
                    let done = reports.iter().all(|r| r.end == JobEnd::Completed);
                    all_ok &= done;
                    human.push_str(&format!(
                        "  calibration: {}\n",
                        reports.iter().map(describe).collect::<Vec<_>>().join("; ")
                    ));
                    entry["calibration"] = jobs_json(&reports);
                }
                Err(e) => {
                    all_ok = false;
                    human.push_str(&format!("  calibration: {}\n", e.message));
                    entry["calibration"] = json!({"error": e.code, "message": e.message});
                }
            }
        }
        list.push(entry);
    }
    let v = json!({ "printers": list, "certificate_sha256": fingerprint });
    if !all_ok {
        if out.json {
            // The error shape scripts rely on, with the per-printer details beside it.
            let mut v = v;
            v["error"] = json!("printer_problem");
            v["message"] = json!(human.trim_end());
            println!("{v}");
            std::process::exit(1);
        }
        return Err(CliError::new(
            "printer_problem",
            human.trim_end().to_owned(),
        ));
    }
    out.done(&v, human.trim_end());
    Ok(())
}

async fn calibrate(
    uri: &str,
    formats: &[String],
    options: &PrintOptions,
    dpi: u32,
) -> Result<Vec<JobReport>, CliError> {
    let jobs = start_jobs(targets(uri, formats, options)?, "stampline-calibration").await?;
    // No link: a watch that never reports a loss.
    let (_keep, lost) = watch::channel(None);
    let lines = vec![
        "CALIBRATION".to_owned(),
        "NOT POSTAGE".to_owned(),
        "STAMPLINE".to_owned(),
    ];
    Ok(finish_jobs(
        jobs,
        |format| render_label(CALIBRATION_BYTES, lines.clone(), format, dpi),
        &lost,
    )
    .await)
}
