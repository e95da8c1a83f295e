//! The file printer: writes exactly the file asked for (no temporary file next to it), syncs it,
//! and removes it again if the link was lost before the job completed.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use tokio::sync::watch;
use zeroize::Zeroizing;

use super::{JobEnd, JobReport, PrintError, PrinterStatus, PrinterUri, lost_now};

#[derive(Debug)]
pub(super) struct FileJob {
    path: PathBuf,
}

fn parent_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

pub(super) fn status(path: &Path, uri: &PrinterUri) -> Result<PrinterStatus, PrintError> {
    FileJob::check(path)?;
    Ok(PrinterStatus {
        uri: uri.to_string(),
        state: "writable".into(),
        reasons: vec![],
        make_and_model: None,
        formats: vec!["pdf".into(), "png".into(), "raw".into()],
        policy: None,
    })
}

impl FileJob {
    /// The directory must exist and the path must not be a directory; nothing is created yet.
    pub(super) fn check(path: &Path) -> Result<FileJob, PrintError> {
        let parent = parent_of(path);
        if !parent.is_dir() {
            return Err(PrintError::Io(format!(
                "directory {} does not exist",
                parent.display()
            )));
        }
        if path.is_dir() {
            return Err(PrintError::Io(format!("{} is a directory", path.display())));
        }
        Ok(FileJob {
            path: path.to_owned(),
        })
    }

    fn report(&self, end: JobEnd, detail: String, link_lost: Option<String>) -> JobReport {
        JobReport {
            end,
            job_id: None,
            detail,
            link_lost,
            file: (end == JobEnd::Completed).then(|| self.path.clone()),
        }
    }

    pub(super) fn finish(
        self,
        document: Zeroizing<Vec<u8>>,
        lost: watch::Receiver<Option<String>>,
    ) -> JobReport {
        if let Some(reason) = lost_now(&lost) {
            return self.report(JobEnd::Canceled, "not written".into(), Some(reason));
        }
        let written = (|| {
            let mut f = std::fs::File::create(&self.path)?;
            f.write_all(&document)?;
            f.sync_all()
        })();
        if let Err(e) = written {
            let _ = std::fs::remove_file(&self.path);
            return self.report(
                JobEnd::Aborted,
                format!("cannot write {}: {e}", self.path.display()),
                None,
            );
        }
        // The job completes only on a continuous link: if it broke meanwhile, take the file back.
        if let Some(reason) = lost_now(&lost) {
            let _ = std::fs::remove_file(&self.path);
            return self.report(
                JobEnd::Canceled,
                "written, then removed".into(),
                Some(reason),
            );
        }
        self.report(
            JobEnd::Completed,
            format!("wrote {}", self.path.display()),
            None,
        )
    }

    pub(super) fn cancel(self, why: &str) -> JobReport {
        self.report(JobEnd::Canceled, format!("not written: {why}"), None)
    }
}
