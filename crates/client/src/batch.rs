//! [`Client::buy_batch`]: many pieces, each its own `issue` (with its own request id, so a
//! retried request is answered once), all printed together as one multi-page PDF or one ZPL
//! stream, then each confirmed.
//!
//! Failure rules: the caller checks every piece (addresses laid out, ZIPs, amounts) before
//! anything is charged. If an `issue` fails mid-batch, the pieces charged so far are still
//! printed and confirmed, and the pieces after it are not charged. If printing fails, every
//! charged piece is confirmed as failed (voided and refunded).

use std::io::Write as _;
use std::path::{Path, PathBuf};

use stampline_items::Body;
use stampline_label::{Format, Layout, Piece};
use stampline_money::Amount;
use stampline_wire::replies::BalanceReply;

use crate::answers;
use crate::check::{check_item, today};
use crate::error::ClientError;
use crate::label;
use crate::link::new_request_id;
use crate::session::{Client, PostageIssue};

/// One piece of a batch, checked and priced.
#[derive(Clone, Debug)]
pub struct BatchPiece {
    /// Where the piece came from (a 1-based row number of the batch file).
    pub row: usize,
    pub postage: Amount,
    pub class: String,
    pub weight_oz: Option<serde_json::Number>,
    pub from_zip: String,
    pub to_zip: String,
    /// Address lines printed on the layout.
    pub from: Vec<String>,
    pub to: Vec<String>,
}

/// A batch to buy and print into one file.
#[derive(Debug)]
pub struct BatchRequest {
    pub pieces: Vec<BatchPiece>,
    pub layout: Layout,
    /// PDF or ZPL: the formats that hold many pages.
    pub format: Format,
    pub dpi: u32,
    /// The file written.
    pub path: PathBuf,
    /// `YYYY-MM-DD`; today (UTC) when `None`.
    pub mail_date: Option<String>,
}

/// How one charged piece ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PieceEnd {
    /// Printed and confirmed.
    Printed,
    /// Not printed, voided and refunded.
    Voided,
    /// The confirmation did not go through: the confirmation window voids it.
    Unconfirmed,
}

/// One charged piece's result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PieceResult {
    pub row: usize,
    pub serial: String,
    pub postage: Amount,
    pub end: PieceEnd,
}

/// What a batch reports while it runs, in order: each issue as it starts, then each charged
/// piece's result as it is confirmed.
#[derive(Debug)]
pub enum BatchEvent<'a> {
    Issuing { row: usize, rows: usize },
    Settled(&'a PieceResult),
}

/// The end of a batch.
#[derive(Debug)]
pub struct BatchReport {
    /// Every charged piece, in order.
    pub pieces: Vec<PieceResult>,
    /// The piece whose `issue` failed; it and the pieces after it were not charged.
    pub stopped: Option<(usize, ClientError)>,
    /// Why printing failed, when it did.
    pub print_error: Option<String>,
    /// The file written, when every charged piece printed.
    pub file: Option<PathBuf>,
    /// The balance after the batch, when it could be asked.
    pub balance_mills: Option<u64>,
}

impl BatchReport {
    /// The serials that ended `end`.
    pub fn serials(&self, end: PieceEnd) -> Vec<String> {
        self.pieces
            .iter()
            .filter(|p| p.end == end)
            .map(|p| p.serial.clone())
            .collect()
    }

    /// The postage of the pieces printed, in mills.
    pub fn printed_mills(&self) -> u64 {
        self.pieces
            .iter()
            .filter(|p| p.end == PieceEnd::Printed)
            .map(|p| p.postage.mills())
            .sum()
    }

    /// Every piece printed and confirmed.
    pub fn complete(&self) -> bool {
        self.stopped.is_none()
            && self.print_error.is_none()
            && self.pieces.iter().all(|p| p.end != PieceEnd::Unconfirmed)
    }
}

/// A charged piece waiting to be printed.
struct Charged<'a> {
    piece: &'a BatchPiece,
    serial: String,
    bytes: Vec<u8>,
    indicium: stampline_items::PostageIndicium,
}

impl Client {
    /// Buys and prints a batch; `events` hears of each step as it happens.
    pub async fn buy_batch(
        &self,
        request: BatchRequest,
        mut events: impl FnMut(BatchEvent<'_>),
    ) -> Result<BatchReport, ClientError> {
        label::check_dpi(request.dpi)?;
        let keys = self.keys().await?;
        let mail_date = request.mail_date.clone().unwrap_or_else(today);

        // Issue, one request per piece, stopping at the first failure.
        let mut charged: Vec<Charged<'_>> = Vec::new();
        let mut stopped = None;
        for piece in &request.pieces {
            events(BatchEvent::Issuing {
                row: piece.row,
                rows: request.pieces.len(),
            });
            let issue = PostageIssue {
                postage: piece.postage,
                class: piece.class.clone(),
                from_zip: piece.from_zip.clone(),
                to_zip: piece.to_zip.clone(),
                mail_date: mail_date.clone(),
                weight_oz: piece.weight_oz.clone(),
            };
            let checked = self
                .issue_postage(new_request_id(), &issue)
                .await
                .and_then(|issued| {
                    let bytes = issued
                        .item
                        .ok_or_else(|| ClientError::BadAnswer("item is not base64".into()))?;
                    let item = check_item(&bytes, keys).map_err(ClientError::BadItem)?;
                    let Body::Postage(indicium) = &item.body else {
                        return Err(ClientError::BadItem("not a postage item".into()));
                    };
                    if item.body.serial().to_string() != issued.serial
                        || item.body.amount() != piece.postage
                    {
                        return Err(ClientError::BadItem(
                            "item does not match the request".into(),
                        ));
                    }
                    Ok(Charged {
                        piece,
                        serial: issued.serial,
                        indicium: indicium.clone(),
                        bytes,
                    })
                });
            match checked {
                Ok(c) => charged.push(c),
                Err(e) => {
                    stopped = Some((piece.row, e));
                    break;
                }
            }
        }

        // Print everything charged as one file; any failure voids all of it.
        let printed: Result<(), String> = if charged.is_empty() {
            Ok(())
        } else {
            let pieces: Vec<Piece> = charged
                .iter()
                .map(|c| label::piece(&c.bytes, &c.indicium, &c.piece.from, &c.piece.to))
                .collect();
            stampline_label::render_layout(request.layout, request.format, request.dpi, &pieces)
                .map_err(|e| e.to_string())
                .and_then(|data| self.write_while_linked(&request.path, &data))
        };

        let mut results = Vec::new();
        for c in &charged {
            let end = match (self.confirm(&c.serial, printed.is_ok()).await, &printed) {
                (Ok(_), Ok(())) => PieceEnd::Printed,
                (Ok(_), Err(_)) => PieceEnd::Voided,
                (Err(_), _) => PieceEnd::Unconfirmed,
            };
            let result = PieceResult {
                row: c.piece.row,
                serial: c.serial.clone(),
                postage: c.piece.postage,
                end,
            };
            events(BatchEvent::Settled(&result));
            results.push(result);
        }
        let balance_mills = match self.link().request(stampline_wire::Op::Balance {}).await {
            Ok(r) => answers::reply::<BalanceReply>(r)
                .ok()
                .map(|b| b.balance_mills),
            Err(_) => None,
        };
        let file = (printed.is_ok() && !charged.is_empty()).then(|| request.path.clone());
        Ok(BatchReport {
            pieces: results,
            stopped,
            print_error: printed.err(),
            file,
            balance_mills,
        })
    }

    /// Writes the batch's file only on a live link, and removes it when the link was lost while
    /// it was written.
    fn write_while_linked(&self, path: &Path, data: &[u8]) -> Result<(), String> {
        if let Some(reason) = self.link().lost_reason() {
            return Err(format!("link lost before printing: {reason}"));
        }
        write_synced(path, data).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        if let Some(reason) = self.link().lost_reason() {
            let _ = std::fs::remove_file(path);
            return Err(format!("link lost before printing finished: {reason}"));
        }
        Ok(())
    }
}

fn write_synced(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut f = std::fs::File::create(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}
