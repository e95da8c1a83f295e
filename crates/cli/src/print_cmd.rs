//! `stampline print` and `stampline printers`: the printer flags (`--printer-cert`, `--format`)
//! and the output of a reprint and of a printer check. Printing is `stampline_client`'s.

use std::path::Path;

use base64::Engine as _;
use serde_json::{Value, json};
use stampline_client::jobs;
use stampline_client::print::{DocFormat, JobEnd, JobReport, PrintOptions, Printer};
use stampline_client::{Reprint, ReprintRequest};

use crate::args::{Global, PrintArgs, PrintersArgs};
use crate::client_cmds::connect;
use crate::output::{CliError, Out};

/// `--format` of `print` and `printers`: none, or one the printers take.
fn parse_formats(format: Option<&String>) -> Result<Vec<DocFormat>, CliError> {
    format.into_iter().map(|f| parse_format(f)).collect()
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

/// The jobs' ends as `--json` shows them.
pub fn jobs_json(reports: &[JobReport]) -> Value {
    Value::Array(
        reports
            .iter()
            .map(|r| json!({"job_id": r.job_id, "state": r.end.as_str(), "detail": r.detail}))
            .collect(),
    )
}

/// `stampline print SERIAL --printer URI`: fetch the item again (`reprint`, counted by the
/// server), check it, print it link-safely; an item still awaiting confirmation is confirmed from
/// the job's end, as in `buy`.
pub async fn print(global: &Global, a: PrintArgs, out: Out) -> Result<(), CliError> {
    let options = print_options(a.printer_cert.as_deref())?;
    let formats = parse_formats(a.format.as_ref())?;
    let targets = jobs::targets(&a.printer, &formats, &options)?;
    stampline_client::label::check_dpi(a.dpi)?;
    let client = connect(global).await?;
    let reprint = client
        .reprint(ReprintRequest {
            serial: a.serial.clone(),
            targets,
            dpi: a.dpi,
        })
        .await?;
    let _ = client.bye().await;
    let v = reprint_json(&reprint, &a.printer);
    out.done(
        &v,
        &format!(
            "printed {} on {} (reprint {}, {} left)",
            a.serial, a.printer, reprint.reprints, reprint.reprints_left
        ),
    );
    Ok(())
}

fn reprint_json(r: &Reprint, printer: &str) -> Value {
    let files: Vec<String> = r.files().iter().map(|p| p.display().to_string()).collect();
    json!({
        "serial": r.serial,
        "status": r.status,
        "printed": true,
        "reprints": r.reprints,
        "reprints_left": r.reprints_left,
        "printer": printer,
        "jobs": jobs_json(&r.jobs),
        "files": files,
    })
}

/// `stampline printers URI…`: each printer's state and what it takes; `--calibrate` prints a
/// calibration label (no link needed: it carries no value).
pub async fn printers(a: PrintersArgs, out: Out) -> Result<(), CliError> {
    let mut options = print_options(a.printer_cert.as_deref())?;
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
            let report = calibrate(uri, a.format.as_ref(), &options, a.dpi).await;
            match report {
                Ok(reports) => {
                    let done = reports.iter().all(|r| r.end == JobEnd::Completed);
                    all_ok &= done;
                    human.push_str(&format!(
                        "  calibration: {}\n",
                        reports
                            .iter()
                            .map(jobs::describe)
                            .collect::<Vec<_>>()
                            .join("; ")
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
    format: Option<&String>,
    options: &PrintOptions,
    dpi: u32,
) -> Result<Vec<JobReport>, CliError> {
    let targets = jobs::targets(uri, &parse_formats(format)?, options)?;
    Ok(jobs::calibrate(targets, dpi).await?)
}
