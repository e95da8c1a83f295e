//! [`Client::reprint`]: fetch an item still awaiting its print confirmation again (`reprint`,
//! limited and counted by the server), check it, print it link-safely and confirm it from the
//! jobs' end, as in [`Client::buy`]. A printed item is never handed out again: the server answers
//! `already_printed` (the user refunds or voids it instead) and the opened jobs are cancelled.

use stampline_wire::replies::ReprintReply;

use crate::answers::{self, Reprinted};
use crate::check::check_item;
use crate::error::ClientError;
use crate::jobs::{self, Target};
use crate::label;
use crate::print::JobReport;
use crate::session::Client;

/// An item to print again.
#[derive(Debug)]
pub struct ReprintRequest {
    /// `DEVICEID-N`.
    pub serial: String,
    /// Printers (see [`jobs::targets`]); their jobs are opened before the item is fetched.
    pub targets: Vec<Target>,
    /// Label resolution.
    pub dpi: u32,
}

/// An item printed again.
#[derive(Debug)]
pub struct Reprint {
    pub serial: String,
    /// The item's status now.
    pub status: String,
    /// Reprints so far, this one included, and how many are left.
    pub reprints: u64,
    pub reprints_left: u64,
    pub jobs: Vec<JobReport>,
}

impl Reprint {
    /// The files written.
    pub fn files(&self) -> Vec<std::path::PathBuf> {
        jobs::files_of(&self.jobs)
    }
}

impl Client {
    /// Prints an unconfirmed item again (or for the first time, when its print never completed).
    pub async fn reprint(&self, request: ReprintRequest) -> Result<Reprint, ClientError> {
        label::check_dpi(request.dpi)?;
        let serial = request.serial;
        let keys = self.keys().await?;
        let opened = jobs::start_jobs(request.targets, &serial).await?;
        let answer = match self
            .link()
            .request(stampline_wire::Op::Reprint {
                serial: serial.clone(),
            })
            .await
        {
            Ok(r) => answers::reply::<ReprintReply>(r).map(Reprinted::from),
            Err(e) => Err(e.into()),
        };
        let answer = match answer {
            Ok(a) => a,
            Err(e) => {
                jobs::cancel_jobs(opened, "the server did not hand out the item").await;
                return Err(e);
            }
        };
        let item = match check_item(&answer.item, keys) {
            Ok(item) if item.body.serial().to_string() == serial => item,
            Ok(_) => {
                jobs::cancel_jobs(opened, "wrong item").await;
                return Err(ClientError::BadAnswer(
                    "the server sent another item".into(),
                ));
            }
            Err(e) => {
                jobs::cancel_jobs(opened, &e).await;
                return Err(ClientError::BadItem(e));
            }
        };
        let lost = self.link().watch_lost();
        let bare = label::LabelChoice::default();
        let reports = jobs::finish_jobs(
            opened,
            |format| label::render(&item, &answer.item, format, request.dpi, &bare),
            &lost,
        )
        .await;
        let status = self.settle(&serial, &reports).await?.status;
        Ok(Reprint {
            serial,
            status,
            reprints: answer.reprints,
            reprints_left: answer.reprints_left,
            jobs: reports,
        })
    }
}
