//! Reading the server's answers: every response is decoded into its op's typed reply of
//! [`stampline_wire::replies`]; the few the workflow reshapes (the item's bytes, the print policy)
//! are reshaped here.

use base64::Engine as _;
use serde::de::DeserializeOwned;
use stampline_wire::Response;
use stampline_wire::replies::{ConfirmReply, IssueReply, ReprintReply};

use crate::error::ClientError;

/// A response as the op's typed reply, or its refusal. A reply that does not fit the protocol's
/// shape is [`ClientError::BadAnswer`].
pub fn reply<T: DeserializeOwned>(r: Response) -> Result<T, ClientError> {
    if !r.ok {
        return Err(ClientError::Refused {
            code: r.code().unwrap_or("error").to_owned(),
            message: r.message().unwrap_or("request refused").to_owned(),
        });
    }
    r.decode::<T>().map_err(|e| {
        ClientError::BadAnswer(format!(
            "the server's answer does not follow the protocol: {e}"
        ))
    })
}

fn decode_item(item: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::STANDARD.decode(item).ok()
}

/// The answer to `issue`.
#[derive(Clone, Debug)]
pub struct Issued {
    pub serial: String,
    /// The item's bytes; `None` when the answer's `item` is not base64.
    pub item: Option<Vec<u8>>,
    /// Whether the print policy is the one this client follows (no spooling, one copy).
    pub policy_as_expected: bool,
}

impl From<IssueReply> for Issued {
    fn from(r: IssueReply) -> Issued {
        Issued {
            item: decode_item(&r.item),
            policy_as_expected: !r.print.spool && r.print.copies == 1,
            serial: r.serial,
        }
    }
}

/// The answer to `confirm`: the item's new status and the balance after it.
pub type Confirmed = ConfirmReply;

/// The answer to `reprint` (always for an unconfirmed item: a printed one is refused with
/// `already_printed`).
#[derive(Clone, Debug)]
pub struct Reprinted {
    /// The item's bytes; empty when the answer's `item` is not base64 (the item check refuses it).
    pub item: Vec<u8>,
    pub reprints: u64,
    pub reprints_left: u64,
}

impl From<ReprintReply> for Reprinted {
    fn from(r: ReprintReply) -> Reprinted {
        Reprinted {
            item: decode_item(&r.item).unwrap_or_default(),
            reprints: r.reprints.into(),
            reprints_left: r.reprints_left.into(),
        }
    }
}
