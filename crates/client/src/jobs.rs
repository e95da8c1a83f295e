//! Print jobs for one item: which printers and formats, opening the jobs before the item is
//! issued, finishing them with the rendered document on the live link, and reading the verdict
//! the item is confirmed from. The printers themselves are [`crate::print`]'s.

use std::path::PathBuf;

use tokio::sync::watch;
use zeroize::Zeroizing;

use crate::error::ClientError;
use crate::label;
use crate::print::{DocFormat, Job, JobEnd, JobReport, PrintOptions, Printer, PrinterUri};

/// Formats written when printing to files and none is named.
pub const DEFAULT_FILE_FORMATS: [DocFormat; 2] = [DocFormat::Png, DocFormat::Pdf];
/// What a calibration label's DataMatrix carries: plainly not an item.
const CALIBRATION_BYTES: &[u8] = b"STAMPLINE CALIBRATION - NOT POSTAGE";

/// One printer and the format it is sent.
#[derive(Debug)]
pub struct Target {
    pub printer: Printer,
    pub format: DocFormat,
}

/// The jobs a printer URI asks for: one per format for `file:PATH` (the extension set per format,
/// PNG and PDF by default), exactly one for IPP and the raw port.
pub fn targets(
    uri: &str,
    formats: &[DocFormat],
    options: &PrintOptions,
) -> Result<Vec<Target>, ClientError> {
    match PrinterUri::parse(uri)? {
        PrinterUri::File { path } => {
            let formats = if formats.is_empty() {
                &DEFAULT_FILE_FORMATS[..]
            } else {
                formats
            };
            let mut out: Vec<Target> = Vec::new();
            for &format in formats {
                if out.iter().any(|t| t.format == format) {
                    continue;
                }
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
                [one] => *one,
                _ => {
                    return Err(ClientError::BadRequest(
                        "a printer takes one --format; give one of png, pdf, raw, zpl".into(),
                    ));
                }
            };
            Ok(vec![Target { printer, format }])
        }
    }
}

/// File targets: `base` with one extension per format.
pub fn file_targets(
    base: &std::path::Path,
    formats: &[DocFormat],
) -> Result<Vec<Target>, ClientError> {
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
) -> Result<Vec<(DocFormat, Job)>, ClientError> {
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

/// Ends jobs that will get no document.
pub async fn cancel_jobs(jobs: Vec<(DocFormat, Job)>, why: &str) {
    for (_, job) in jobs {
        let r = job.cancel(why).await;
        tracing::info!(end = r.end.as_str(), detail = %r.detail, "job cancelled");
    }
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
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Every job completed on a live link: confirm printed.
    Printed,
    /// The link was lost before every job completed: nothing can be confirmed.
    LinkLost(String),
    /// A job was refused, aborted or cancelled at the printer: confirm failed.
    Failed(String),
}

/// One job's end in words: `job 7 completed: …`.
pub fn describe(r: &JobReport) -> String {
    match r.job_id {
        Some(id) => format!("job {id} {}: {}", r.end.as_str(), r.detail),
        None => format!("{}: {}", r.end.as_str(), r.detail),
    }
}

/// The verdict of finished jobs; `link_lost` is the link's own loss reason, if any.
pub fn verdict(reports: &[JobReport], link_lost: Option<String>) -> Verdict {
    let lost = reports
        .iter()
        .find_map(|r| r.link_lost.clone())
        .or(link_lost);
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

/// Files of completed file jobs.
pub fn files_of(reports: &[JobReport]) -> Vec<PathBuf> {
    reports.iter().filter_map(|r| r.file.clone()).collect()
}

/// Removes the files of an item that is not confirmed printed.
pub fn remove_files(reports: &[JobReport]) {
    for f in files_of(reports) {
        let _ = std::fs::remove_file(f);
    }
}

/// Prints a calibration label (a DataMatrix that is not postage) on `targets`. No link is
/// needed: it carries no value.
pub async fn calibrate(targets: Vec<Target>, dpi: u32) -> Result<Vec<JobReport>, ClientError> {
    let jobs = start_jobs(targets, "stampline-calibration").await?;
    // No link: a watch that never reports a loss.
    let (_keep, lost) = watch::channel(None);
    let lines = vec![
        "CALIBRATION".to_owned(),
        "NOT POSTAGE".to_owned(),
        "STAMPLINE".to_owned(),
    ];
    Ok(finish_jobs(
        jobs,
        |format| label::render_bare(CALIBRATION_BYTES, lines.clone(), format, dpi),
        &lost,
    )
    .await)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(end: JobEnd, link_lost: Option<&str>) -> JobReport {
        JobReport {
            end,
            job_id: Some(7),
            detail: "done".into(),
            link_lost: link_lost.map(str::to_owned),
            file: None,
        }
    }

    #[test]
    fn an_item_is_printed_only_when_every_job_completed_on_a_live_link() {
        let done = report(JobEnd::Completed, None);
        assert_eq!(
            verdict(&[done.clone(), done.clone()], None),
            Verdict::Printed
        );
        assert_eq!(
            verdict(&[done.clone(), report(JobEnd::Canceled, None)], None),
            Verdict::Failed("job 7 completed: done; job 7 canceled: done".into())
        );
        let Verdict::LinkLost(why) = verdict(std::slice::from_ref(&done), Some("beat late".into()))
        else {
            panic!("a lost link is not a print");
        };
        assert!(
            why.starts_with("beat late; printer: job 7 completed"),
            "{why}"
        );
        assert!(why.ends_with("do not use it"), "{why}");
        assert!(matches!(
            verdict(&[report(JobEnd::Canceled, Some("gone"))], None),
            Verdict::LinkLost(w) if !w.contains("do not use it")
        ));
    }

    #[test]
    fn a_file_printer_gets_one_job_per_format_and_other_printers_one() {
        let t = targets("file:/tmp/x", &[], &PrintOptions::default()).unwrap();
        let formats: Vec<_> = t.iter().map(|t| t.format).collect();
        assert_eq!(formats, DEFAULT_FILE_FORMATS);
        let t = targets(
            "file:/tmp/x",
            &[DocFormat::Raw, DocFormat::Raw, DocFormat::Zpl],
            &PrintOptions::default(),
        )
        .unwrap();
        assert_eq!(t.len(), 2);
        let e = targets(
            "socket://127.0.0.1:9100",
            &[DocFormat::Pdf, DocFormat::Zpl],
            &PrintOptions::default(),
        )
        .unwrap_err();
        assert_eq!(e.code(), "bad_request");
        let t = targets("socket://127.0.0.1:9100", &[], &PrintOptions::default()).unwrap();
        assert_eq!(t[0].format, DocFormat::Zpl);
    }
}
