//! The one error of the client's workflow (buy, batch, reprint and the one-request helpers), with
//! the snake_case code each case carries to the CLI's JSON errors.

use crate::http::HttpError;
use crate::link::LinkError;
use crate::print::PrintError;
use crate::trust::TrustError;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(transparent)]
    Link(#[from] LinkError),
    #[error(transparent)]
    Http(#[from] HttpError),
    #[error(transparent)]
    Print(#[from] PrintError),
    #[error(transparent)]
    Trust(#[from] TrustError),
    /// The server answered the request with `ok: false`.
    #[error("{message}")]
    Refused { code: String, message: String },
    /// The link was lost (or the answer did not come) while an issue was in flight: whether the
    /// item was issued is not known.
    #[error(
        "{0}; if the item was issued it was not printed, and it will be voided and refunded when the confirmation window ends"
    )]
    IssueInDoubt(LinkError),
    /// Every job printed, but the printed confirmation did not reach the server.
    #[error(
        "printed, but the confirmation did not arrive ({0}); the item will be voided when the confirmation window ends: do not use the label"
    )]
    ConfirmInDoubt(LinkError),
    /// The request is incomplete or contradicts itself.
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    BadAmount(String),
    #[error("{0}")]
    BadWeight(String),
    /// A format this version does not write.
    #[error("{0}")]
    Unsupported(String),
    #[error("{0}")]
    BadAddress(String),
    /// The destination ZIP and the delivery address's ZIP differ.
    #[error("{0}")]
    AddressMismatch(String),
    /// The chosen layout cannot be drawn.
    #[error("{0}")]
    BadLabel(String),
    /// The item the server sent does not parse, verify or match the request.
    #[error("{0}")]
    BadItem(String),
    /// The server's answer lacks what the protocol promises.
    #[error("{0}")]
    BadAnswer(String),
    /// The printer did not print; what happened to the money is in the message.
    #[error("{0}")]
    PrintFailed(String),
    /// The link was lost while printing; the item was not confirmed.
    #[error("{0}")]
    LinkLost(String),
    /// A fault of this program (a compiled-in table that does not load).
    #[error("{0}")]
    Internal(String),
}

impl ClientError {
    /// The snake_case code of docs/DESIGN.md §3 and the CLI's `{"error": CODE}`.
    pub fn code(&self) -> String {
        match self {
            ClientError::Link(e)
            | ClientError::IssueInDoubt(e)
            | ClientError::ConfirmInDoubt(e) => e.code(),
            ClientError::Http(e) => e.code(),
            ClientError::Print(e) => e.code().into(),
            ClientError::Trust(_) => "bad_trust".into(),
            ClientError::Refused { code, .. } => code.clone(),
            ClientError::BadRequest(_) => "bad_request".into(),
            ClientError::BadAmount(_) => "bad_amount".into(),
            ClientError::BadWeight(_) => "bad_weight".into(),
            ClientError::Unsupported(_) => "unsupported".into(),
            ClientError::BadAddress(_) => "bad_address".into(),
            ClientError::AddressMismatch(_) => "address_mismatch".into(),
            ClientError::BadLabel(_) => "bad_label".into(),
            ClientError::BadItem(_) => "bad_item".into(),
            ClientError::BadAnswer(_) => "bad_answer".into(),
            ClientError::PrintFailed(_) => "print_failed".into(),
            ClientError::LinkLost(_) => "link_lost".into(),
            ClientError::Internal(_) => "internal".into(),
        }
    }
}
