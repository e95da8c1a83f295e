//! The raw port (AppSocket / JetDirect, usually 9100): bytes in, nothing out. Such a printer has
//! no job to cancel and no state to ask, so link safety is "never send on a broken link": the
//! connection is opened before the item is issued and the bytes are written only if the link is
//! still up once they are ready. Once written, they are printed.

use tokio::io::AsyncWriteExt as _;
use tokio::net::TcpStream;
use tokio::sync::watch;
use zeroize::Zeroizing;

use super::{
    JobEnd, JobReport, PRINTER_REQUEST_TIMEOUT, PrintError, PrinterStatus, PrinterUri, lost_now,
};

#[derive(Debug)]
pub(super) struct SocketJob {
    stream: TcpStream,
    peer: String,
}

async fn connect(host: &str, port: u16) -> Result<TcpStream, PrintError> {
    let peer = format!("{host}:{port}");
    tokio::time::timeout(PRINTER_REQUEST_TIMEOUT, TcpStream::connect((host, port)))
        .await
        .map_err(|_| PrintError::Unreachable(format!("{peer}: no answer")))?
        .map_err(|e| PrintError::Unreachable(format!("{peer}: {e}")))
}

pub(super) async fn status(
    host: &str,
    port: u16,
    uri: &PrinterUri,
) -> Result<PrinterStatus, PrintError> {
    // Connect and close without a byte: a raw port prints nothing for an empty connection.
    drop(connect(host, port).await?);
    Ok(PrinterStatus {
        uri: uri.to_string(),
        state: "reachable".into(),
        reasons: vec![],
        make_and_model: None,
        formats: vec!["raw".into()],
        policy: None,
    })
}

impl SocketJob {
    pub(super) async fn connect(host: &str, port: u16) -> Result<SocketJob, PrintError> {
        Ok(SocketJob {
            stream: connect(host, port).await?,
            peer: format!("{host}:{port}"),
        })
    }

    fn report(&self, end: JobEnd, detail: String, link_lost: Option<String>) -> JobReport {
        JobReport {
            end,
            job_id: None,
            detail,
            link_lost,
            file: None,
        }
    }

    pub(super) async fn finish(
        mut self,
        document: Zeroizing<Vec<u8>>,
        lost: watch::Receiver<Option<String>>,
    ) -> JobReport {
        if let Some(reason) = lost_now(&lost) {
            return self.report(JobEnd::Canceled, "nothing sent".into(), Some(reason));
        }
        let sent = tokio::time::timeout(PRINTER_REQUEST_TIMEOUT, async {
            self.stream.write_all(&document).await?;
            self.stream.flush().await?;
            self.stream.shutdown().await
        })
        .await;
        match sent {
            Ok(Ok(())) => self.report(
                JobEnd::Completed,
                format!("{} bytes delivered to {}", document.len(), self.peer),
                None,
            ),
            Ok(Err(e)) => self.report(
                JobEnd::Aborted,
                format!("sending to {}: {e}", self.peer),
                None,
            ),
            Err(_) => self.report(
                JobEnd::Aborted,
                format!("{} did not take the bytes in time", self.peer),
                None,
            ),
        }
    }

    pub(super) fn cancel(self, why: &str) -> JobReport {
        // Closing without a byte prints nothing.
        self.report(JobEnd::Canceled, format!("nothing sent: {why}"), None)
    }
}
