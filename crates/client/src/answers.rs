//! Reading the server's answers. Every field the workflow takes from a response is read here, so
//! that switching to typed responses touches this module only.

use base64::Engine as _;
use serde_json::{Map, Value, json};
use stampline_wire::Response;

use crate::error::ClientError;

/// A response's fields, or its error.
pub fn fields(r: Response) -> Result<Map<String, Value>, ClientError> {
    if r.ok {
        Ok(r.fields)
    } else {
        Err(ClientError::Refused {
            code: r.code().unwrap_or("error").to_owned(),
            message: r.message().unwrap_or("request refused").to_owned(),
        })
    }
}

fn decode_item(fields: &Map<String, Value>) -> Option<Vec<u8>> {
    base64::engine::general_purpose::STANDARD
        .decode(fields.get("item")?.as_str()?)
        .ok()
}

fn text(fields: &Map<String, Value>, name: &str) -> String {
    fields
        .get(name)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
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

impl Issued {
    pub fn from_fields(fields: &Map<String, Value>) -> Issued {
        let print = fields.get("print").cloned().unwrap_or(Value::Null);
        Issued {
            serial: text(fields, "serial"),
            item: decode_item(fields),
            policy_as_expected: print["spool"] == json!(false) && print["copies"] == json!(1),
        }
    }
}

/// The answer to `confirm`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Confirmed {
    pub status: Option<String>,
    pub balance_mills: Option<u64>,
}

impl Confirmed {
    pub fn from_fields(fields: &Map<String, Value>) -> Confirmed {
        Confirmed {
            status: fields
                .get("status")
                .and_then(Value::as_str)
                .map(str::to_owned),
            balance_mills: balance_mills(fields),
        }
    }
}

/// `balance_mills` of an answer that carries it.
pub fn balance_mills(fields: &Map<String, Value>) -> Option<u64> {
    fields.get("balance_mills").and_then(Value::as_u64)
}

/// `postage_mills` of a quote.
pub fn postage_mills(fields: &Map<String, Value>) -> Option<u64> {
    fields.get("postage_mills").and_then(Value::as_u64)
}

/// The answer to `reprint`.
#[derive(Clone, Debug)]
pub struct Reprinted {
    /// The item's status before this print: `issued` (never confirmed) or `printed`.
    pub status: String,
    pub item: Vec<u8>,
    pub reprints: u64,
    pub reprints_left: u64,
}

impl Reprinted {
    pub fn from_fields(fields: &Map<String, Value>) -> Reprinted {
        let count = |name: &str| fields.get(name).and_then(Value::as_u64).unwrap_or(0);
        Reprinted {
            status: text(fields, "status"),
            item: decode_item(fields).unwrap_or_default(),
            reprints: count("reprints"),
            reprints_left: count("reprints_left"),
        }
    }
}
