//! [`Client::buy`]: one piece of postage, from the quote to the confirmation.
//!
//! Printer jobs are opened before the item is issued (a printer that is off or refuses costs
//! nothing), the document is sent only once the issue response is complete and the item checked
//! against the published keys, and the item is confirmed from the printers' final job states:
//! printed when every job completed on a live link, voided and refunded when a job failed, left
//! to the confirmation window when the link was lost (docs/DECISIONS.md).

use std::path::PathBuf;

use stampline_items::Item;
use stampline_money::Amount;

use crate::answers::Confirmed;
use crate::check::{check_item, today};
use crate::error::ClientError;
use crate::jobs::{self, Target};
use crate::label::{self, LabelChoice};
use crate::link::{LinkError, new_request_id};
use crate::print::{DocFormat, JobReport};
use crate::session::{Client, PostageIssue};

/// One piece of postage to buy and print.
#[derive(Debug)]
pub struct BuyRequest {
    /// Mail class: `first-class-letter`, `first-class-flat`, `priority-mail`, `ground-advantage`.
    pub class: String,
    /// The postage to pay; without it, the server's quote for `class` and `weight_oz`.
    pub postage: Option<Amount>,
    pub weight_oz: Option<serde_json::Number>,
    pub from_zip: String,
    /// The destination ZIP, ZIP+4 or ZIP+4+2 (see [`label::destination`]).
    pub to_zip: String,
    /// `YYYY-MM-DD`; today (UTC) when `None`.
    pub mail_date: Option<String>,
    /// The layout and addresses, checked with [`label::check_before_issue`].
    pub label: LabelChoice,
    /// Label resolution.
    pub dpi: u32,
    pub output: Output,
}

/// Where the item goes.
#[derive(Debug)]
pub enum Output {
    /// Files `base` (default `./SERIAL`) with one extension per format.
    Files {
        base: Option<PathBuf>,
        formats: Vec<DocFormat>,
    },
    /// Printers (see [`jobs::targets`]); their jobs are opened before the item is issued.
    Printers(Vec<Target>),
}

/// An item bought (postage) or issued (a value item), printed and confirmed.
#[derive(Debug)]
pub struct Purchase {
    pub serial: String,
    /// The postage, or a value item's face value.
    pub postage: Amount,
    /// The item's bytes, checked against the published keys.
    pub item: Vec<u8>,
    /// The confirmation's answer: the item's status and the balance after it.
    pub confirmed: Confirmed,
    /// How each print job ended.
    pub jobs: Vec<JobReport>,
}

impl Purchase {
    /// The files written.
    pub fn files(&self) -> Vec<PathBuf> {
        jobs::files_of(&self.jobs)
    }
}

impl Client {
    /// Buys one piece of postage and prints it (see the module doc for the order of steps).
    pub async fn buy(&self, request: BuyRequest) -> Result<Purchase, ClientError> {
        let postage = match (request.postage, &request.weight_oz) {
            (Some(p), _) => p,
            // A rated purchase charges the quote (a given postage is checked by the server).
            (None, Some(w)) => {
                self.quote(&request.class, w, &request.from_zip, &request.to_zip)
                    .await?
            }
            (None, None) => {
                return Err(ClientError::BadRequest(
                    "give --postage DOLLARS or --weight-oz W".into(),
                ));
            }
        };
        label::check_dpi(request.dpi)?;
        label::check_before_issue(&request.label, request.dpi)?;

        let id = new_request_id();
        let issue = PostageIssue {
            postage,
            class: request.class.clone(),
            from_zip: request.from_zip.clone(),
            to_zip: request.to_zip.clone(),
            mail_date: request.mail_date.clone().unwrap_or_else(today),
            weight_oz: request.weight_oz.clone(),
        };
        let dpi = request.dpi;
        let choice = request.label;
        self.issue_and_print(
            id,
            request.output,
            postage,
            self.issue_postage(id, &issue),
            move |item: &Item, bytes: &[u8], format| {
                label::render(item, bytes, format, dpi, &choice)
            },
        )
        .await
    }

    /// The path every item takes once its request is ready: open the printer jobs (nothing is
    /// reserved if a printer is off or refuses), issue, check the item against the published keys
    /// and the request (`amount`), send the rendered document, and confirm from the jobs' final
    /// states — printed, or voided and refunded (see the module doc).
    pub(crate) async fn issue_and_print<R>(
        &self,
        id: uuid::Uuid,
        output: Output,
        amount: Amount,
        issue: impl std::future::Future<Output = Result<crate::answers::Issued, ClientError>>,
        render: R,
    ) -> Result<Purchase, ClientError>
    where
        R: Fn(&Item, &[u8], DocFormat) -> Result<Vec<u8>, String>,
    {
        let keys = self.keys().await?;
        // Open the printer jobs first: nothing is reserved if a printer is off or refuses.
        let (early_jobs, file_output) = match output {
            Output::Printers(targets) => (
                Some(jobs::start_jobs(targets, &format!("stampline-{id}")).await?),
                None,
            ),
            Output::Files { base, formats } => (None, Some((base, formats))),
        };
        let issued = match issue.await {
            Ok(issued) => issued,
            Err(e) => {
                if let Some(jobs) = early_jobs {
                    jobs::cancel_jobs(jobs, "the item was not issued").await;
                }
                return Err(match e {
                    ClientError::Link(e @ (LinkError::Lost(_) | LinkError::Timeout(_))) => {
                        ClientError::IssueInDoubt(e)
                    }
                    other => other,
                });
            }
        };
        let serial = issued.serial;
        let item_bytes = issued.item.unwrap_or_default();
        if !issued.policy_as_expected {
            tracing::warn!("unexpected print policy; printing one copy without spooling");
        }
        let checked = check_item(&item_bytes, keys).and_then(|item| {
            if item.body.serial().to_string() != serial || item.body.amount() != amount {
                Err("item does not match the request".to_owned())
            } else {
                Ok(item)
            }
        });
        let opened = match early_jobs {
            Some(jobs) => Ok(jobs),
            None => {
                let (base, formats) = file_output.unwrap_or_default();
                let base = base.unwrap_or_else(|| PathBuf::from(&serial));
                match jobs::file_targets(&base, &formats) {
                    Ok(t) => jobs::start_jobs(t, &serial).await,
                    Err(e) => Err(e),
                }
            }
        };
        let (item, opened): (Item, _) = match (checked, opened) {
            (Ok(item), Ok(opened)) => (item, opened),
            (checked, opened) => {
                let why = match (&checked, &opened) {
                    (Err(e), _) => e.clone(),
                    (_, Err(e)) => e.to_string(),
                    _ => String::new(),
                };
                if let Ok(opened) = opened {
                    jobs::cancel_jobs(opened, &why).await;
                }
                let tail = self.void(&serial).await;
                return Err(ClientError::PrintFailed(format!("{why}; {tail}")));
            }
        };

        let lost = self.link().watch_lost();
        let reports =
            jobs::finish_jobs(opened, |format| render(&item, &item_bytes, format), &lost).await;
        let confirmed = self.settle(&serial, &reports).await?;
        Ok(Purchase {
            serial,
            postage: amount,
            item: item_bytes,
            confirmed,
            jobs: reports,
        })
    }
}
