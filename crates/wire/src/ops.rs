//! The plaintext inside sealed frames: requests `{"op","id",…}` and responses
//! `{"op","id","ok",…}`, and the documented error codes.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::frame::Secret;
use crate::{WireError, codes};

/// Card data: travels only sealed; `Debug` never shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Card {
    pub number: Secret,
    pub exp: String,
    pub cvc: Secret,
}

/// An EFT (ACH) debit: ABA routing number and account number.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Eft {
    pub routing: String,
    pub account: Secret,
}

/// The server's print policy, sent with every issued item.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrintPolicy {
    pub spool: bool,
    pub copies: u32,
}

/// Every operation of protocol v1 and its request fields.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Op {
    Balance {},
    Quote {
        class: String,
        weight_oz: serde_json::Number,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        from_zip: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        to_zip: Option<String>,
    },
    /// Postage (`kind` "postage": `postage_mills`, the ZIPs, `mail_date`, `class`, optional
    /// `weight_oz`) or a value item (`kind` "ticket", "check", "coupon" or "certificate":
    /// `amount_mills`, the kind's `fields` by name, optional `valid_until` "YYYY-MM-DD").
    Issue {
        kind: String,
        #[serde(default, skip_serializing_if = "is_zero")]
        postage_mills: u64,
        #[serde(default, skip_serializing_if = "String::is_empty")]
        from_zip: String,
        #[serde(default, skip_serializing_if = "String::is_empty")]
        to_zip: String,
        #[serde(default, skip_serializing_if = "String::is_empty")]
        mail_date: String,
        #[serde(default, skip_serializing_if = "String::is_empty")]
        class: String,
        /// The piece's weight; when given, the postage must be at least the rate for it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        weight_oz: Option<serde_json::Number>,
        /// A value item's face value.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        amount_mills: Option<u64>,
        /// A value item's text fields by name (`event`, `venue`, `seat`; `payee`, `memo`;
        /// `issuer`, `terms`; `recipient`).
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        fields: BTreeMap<String, String>,
        /// A value item is redeemable through this day (UTC).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        valid_until: Option<String>,
    },
    /// Value items: redeem one (the whole, or `amount_mills` of a gift certificate), as its
    /// issuer or a user the issuer allows.
    Redeem {
        serial: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        amount_mills: Option<u64>,
    },
    /// Value items: the caller's checks issued from `from` through `to` ("YYYY-MM-DD", UTC),
    /// oldest first, for a bank's positive-pay file.
    Checks {
        from: String,
        to: String,
    },
    /// Value items: the users allowed to redeem the caller's items, after allowing `add` or
    /// withdrawing `remove` (user names), if given.
    Redeemers {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        add: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        remove: Option<String>,
    },
    Confirm {
        serial: String,
        printed: bool,
    },
    Fund {
        amount_mills: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        card: Option<Card>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        card_token: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        eft: Option<Eft>,
    },
    Refund {
        serial: String,
    },
    /// The newest `limit` items, or with `before` (a serial of the user's) the `limit` items
    /// issued before it: pages walked from the last serial of each.
    History {
        limit: u32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        before: Option<String>,
    },
    Bye {},
    /// Admin role only: every signing key with its status.
    AdminKeys {},
    /// Admin role only: make a new signing key; the current one retires.
    AdminRotateKey {},
    /// Admin role only: revoke a retired signing key.
    AdminRevokeKey {
        key_id: String,
        reason: String,
    },
    /// Admin role only: every login back-off not yet forgotten (user name, source, failures, until).
    AdminThrottles {},
    /// Admin role only: forget every failed login of a user name, from every source, and lift
    /// an administrator's lock on it.
    AdminUnlock {
        user: String,
    },
    /// Admin role only: every live link on the server.
    AdminLinks {},
    /// Admin role only: end a link (`session`) or every link of a user (`user`).
    AdminKick {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        session: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        user: Option<String>,
    },
    /// Admin role only: refuse the user's logins until `admin_unlock`, and end its links.
    AdminLock {
        user: String,
    },
    /// Extension of v1 (docs/PROTOCOL.md): the item's bytes again, to print, counted and limited.
    Reprint {
        serial: String,
    },
    /// Funding extension: the payment methods offered, the standing authorisation, any lock.
    PaymentOptions {},
    /// Funding extension: set a standing authorisation to refill from a card when the balance
    /// falls below `threshold_mills` (`amount_mills` each time, at most `cap_mills` in all), or
    /// remove it with `off: true`.
    AutoRefill {
        #[serde(default)]
        threshold_mills: u64,
        #[serde(default)]
        amount_mills: u64,
        #[serde(default)]
        cap_mills: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        card: Option<Card>,
        #[serde(default)]
        off: bool,
    },
    /// Funding extension: close the account; the balance is refunded to the payments it came
    /// from and the device is withdrawn at CMLS.
    Close {},
}

impl Op {
    pub fn name(&self) -> &'static str {
        match self {
            Op::Balance {} => "balance",
            Op::Quote { .. } => "quote",
            Op::Issue { .. } => "issue",
            Op::Confirm { .. } => "confirm",
            Op::Fund { .. } => "fund",
            Op::Refund { .. } => "refund",
            Op::History { .. } => "history",
            Op::Bye {} => "bye",
            Op::AdminKeys {} => "admin_keys",
            Op::AdminRotateKey {} => "admin_rotate_key",
            Op::AdminRevokeKey { .. } => "admin_revoke_key",
            Op::AdminThrottles {} => "admin_throttles",
            Op::AdminUnlock { .. } => "admin_unlock",
            Op::AdminLinks {} => "admin_links",
            Op::AdminKick { .. } => "admin_kick",
            Op::AdminLock { .. } => "admin_lock",
            Op::Reprint { .. } => "reprint",
            Op::PaymentOptions {} => "payment_options",
            Op::AutoRefill { .. } => "auto_refill",
            Op::Close {} => "close",
            Op::Redeem { .. } => "redeem",
            Op::Redeemers { .. } => "redeemers",
            Op::Checks { .. } => "checks",
        }
    }

    /// Whether the op changes state (and so is bound to its request id).
    pub fn is_mutating(&self) -> bool {
        matches!(
            self,
            Op::Issue { .. }
                | Op::Confirm { .. }
                | Op::Fund { .. }
                | Op::Refund { .. }
                | Op::Reprint { .. }
                | Op::AutoRefill { .. }
                | Op::Close {}
                | Op::Redeem { .. }
                | Op::Redeemers { .. }
                | Op::AdminKick { .. }
                | Op::AdminLock { .. }
        )
    }
}

const OPS: [&str; 23] = [
    "balance",
    "quote",
    "issue",
    "confirm",
    "fund",
    "refund",
    "history",
    "bye",
    "admin_keys",
    "admin_rotate_key",
    "admin_revoke_key",
    "admin_throttles",
    "admin_unlock",
    "reprint",
    "payment_options",
    "auto_refill",
    "close",
    "redeem",
    "redeemers",
    "checks",
    "admin_links",
    "admin_kick",
    "admin_lock",
];

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// A request: its id (also its idempotency key) and its op.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub id: Uuid,
    pub op: Op,
}

impl Request {
    /// The plaintext JSON of this request.
    pub fn to_json(&self) -> Vec<u8> {
        let mut value = serde_json::to_value(&self.op).unwrap_or(Value::Null);
        if let Value::Object(map) = &mut value {
            map.insert("id".into(), Value::String(self.id.to_string()));
        }
        serde_json::to_vec(&value).unwrap_or_default()
    }
}

/// Why a request's plaintext was refused, with what can be echoed back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestError {
    pub op: Option<String>,
    pub id: Option<String>,
    pub code: &'static str,
    pub message: String,
}

/// Parse a request's plaintext. Returns the request and its canonical JSON (keys sorted), which the
/// server fingerprints for idempotency.
pub fn parse_request(plain: &[u8]) -> Result<(Request, Vec<u8>), RequestError> {
    let value: Value = serde_json::from_slice(plain).map_err(|e| RequestError {
        op: None,
        id: None,
        code: codes::BAD_REQUEST,
        message: format!("request is not JSON: {e}"),
    })?;
    let Value::Object(mut map) = value else {
        return Err(RequestError {
            op: None,
            id: None,
            code: codes::BAD_REQUEST,
            message: "request must be a JSON object".into(),
        });
    };
    let op = map.get("op").and_then(Value::as_str).map(str::to_owned);
    let id_text = map.get("id").and_then(Value::as_str).map(str::to_owned);
    let fail = |code, message: String| RequestError {
        op: op.clone(),
        id: id_text.clone(),
        code,
        message,
    };
    let Some(op_name) = op.as_deref() else {
        return Err(fail(codes::BAD_REQUEST, "request has no \"op\"".into()));
    };
    if !OPS.contains(&op_name) {
        return Err(fail(codes::UNKNOWN_OP, format!("unknown op {op_name:?}")));
    }
    let id = id_text
        .as_deref()
        .and_then(|t| Uuid::parse_str(t).ok())
        .ok_or_else(|| fail(codes::BAD_REQUEST, "\"id\" must be a UUID string".into()))?;
    // serde_json's default Map is ordered by key, so this is the canonical form.
    let canonical = serde_json::to_vec(&map).unwrap_or_default();
    map.remove("id");
    let op: Op = serde_json::from_value(Value::Object(map))
        .map_err(|e| fail(codes::BAD_REQUEST, format!("bad {op_name} request: {e}")))?;
    Ok((Request { id, op }, canonical))
}

/// A response: `op`, `id`, `ok` and the op's fields (or `code` and `message`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Response {
    pub op: String,
    pub id: String,
    pub ok: bool,
    #[serde(flatten)]
    pub fields: Map<String, Value>,
}

impl Response {
    pub fn ok(op: &str, id: &str, fields: Value) -> Response {
        let fields = match fields {
            Value::Object(map) => map,
            _ => Map::new(),
        };
        Response {
            op: op.into(),
            id: id.into(),
            ok: true,
            fields,
        }
    }

    /// A successful response whose fields are those of `reply` (a struct of [`crate::replies`]).
    /// A reply that is not a JSON object (never one of ours) gives no fields.
    pub fn ok_with<T: Serialize>(op: &str, id: &str, reply: &T) -> Response {
        Response::ok(op, id, serde_json::to_value(reply).unwrap_or(Value::Null))
    }

    /// The fields of a successful response as the op's typed reply; an error response, or fields
    /// that do not fit `T` (missing, mistyped or unknown), are [`WireError::Malformed`].
    pub fn decode<T: serde::de::DeserializeOwned>(&self) -> Result<T, WireError> {
        if !self.ok {
            return Err(WireError::Malformed(format!(
                "{} failed: {} ({})",
                self.op,
                self.message().unwrap_or(""),
                self.code().unwrap_or("")
            )));
        }
        serde_json::from_value(Value::Object(self.fields.clone()))
            .map_err(|e| WireError::Malformed(format!("bad {} response: {e}", self.op)))
    }

    pub fn error(op: &str, id: &str, code: &str, message: &str) -> Response {
        let mut fields = Map::new();
        fields.insert("code".into(), Value::String(code.into()));
        fields.insert("message".into(), Value::String(message.into()));
        Response {
            op: op.into(),
            id: id.into(),
            ok: false,
            fields,
        }
    }

    pub fn code(&self) -> Option<&str> {
        self.fields.get("code").and_then(Value::as_str)
    }

    pub fn message(&self) -> Option<&str> {
        self.fields.get("message").and_then(Value::as_str)
    }

    pub fn u64_field(&self, name: &str) -> Option<u64> {
        self.fields.get(name).and_then(Value::as_u64)
    }

    pub fn str_field(&self, name: &str) -> Option<&str> {
        self.fields.get(name).and_then(Value::as_str)
    }

    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn from_json(bytes: &[u8]) -> Result<Response, WireError> {
        serde_json::from_slice(bytes).map_err(|e| WireError::Malformed(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_balance_request_round_trips() {
        let req = Request {
            id: Uuid::from_bytes([1; 16]),
            op: Op::Balance {},
        };
        let (back, canonical) = parse_request(&req.to_json()).unwrap();
        assert_eq!(back, req);
        assert!(String::from_utf8(canonical).unwrap().starts_with("{\"id\""));
    }

    #[test]
    fn an_issue_request_parses_with_all_fields() {
        let text = r#"{"op":"issue","id":"6f1c2b1e-6f4f-4d55-9a57-2b8f9b8f2a10","kind":"postage",
            "postage_mills":780,"from_zip":"02134","to_zip":"94105","mail_date":"2026-11-29",
            "class":"first-class-letter"}"#;
        let (req, _) = parse_request(text.as_bytes()).unwrap();
        assert!(matches!(
            req.op,
            Op::Issue {
                postage_mills: 780,
                ..
            }
        ));
    }

    #[test]
    fn unknown_ops_and_fields_are_refused_with_codes() {
        let e = parse_request(br#"{"op":"steal","id":"6f1c2b1e-6f4f-4d55-9a57-2b8f9b8f2a10"}"#)
            .unwrap_err();
        assert_eq!(e.code, codes::UNKNOWN_OP);
        assert_eq!(e.op.as_deref(), Some("steal"));
        let e =
            parse_request(br#"{"op":"balance","id":"6f1c2b1e-6f4f-4d55-9a57-2b8f9b8f2a10","x":1}"#)
                .unwrap_err();
        assert_eq!(e.code, codes::BAD_REQUEST);
        let e = parse_request(br#"{"op":"balance","id":"nope"}"#).unwrap_err();
        assert_eq!(e.code, codes::BAD_REQUEST);
        let e = parse_request(br#"[1]"#).unwrap_err();
        assert_eq!(e.code, codes::BAD_REQUEST);
    }

    #[test]
    fn admin_ops_parse_by_name() {
        let (req, _) = parse_request(
            br#"{"op":"admin_revoke_key","id":"6f1c2b1e-6f4f-4d55-9a57-2b8f9b8f2a10","key_id":"0a0b0c0d","reason":"lost"}"#,
        )
        .unwrap();
        assert_eq!(req.op.name(), "admin_revoke_key");
        let (req, _) = parse_request(
            br#"{"op":"admin_rotate_key","id":"6f1c2b1e-6f4f-4d55-9a57-2b8f9b8f2a10"}"#,
        )
        .unwrap();
        assert_eq!(req.op, Op::AdminRotateKey {});
    }

    #[test]
    fn negative_amounts_do_not_parse() {
        let e = parse_request(
            br#"{"op":"fund","id":"6f1c2b1e-6f4f-4d55-9a57-2b8f9b8f2a10","amount_mills":-5}"#,
        )
        .unwrap_err();
        assert_eq!(e.code, codes::BAD_REQUEST);
    }

    #[test]
    fn a_reprint_request_parses_and_is_mutating() {
        let text = r#"{"op":"reprint","id":"6f1c2b1e-6f4f-4d55-9a57-2b8f9b8f2a10","serial":"SL0100000001-1"}"#;
        let (req, _) = parse_request(text.as_bytes()).unwrap();
        assert_eq!(req.op.name(), "reprint");
        assert!(req.op.is_mutating());
    }

    #[test]
    fn card_data_never_shows_in_debug() {
        let op = Op::Fund {
            amount_mills: 1000,
            card: Some(Card {
                number: Secret("4242424242424242".into()),
                exp: "12/30".into(),
                cvc: Secret("123".into()),
            }),
            card_token: None,
            eft: None,
        };
        let shown = format!("{op:?}");
        assert!(!shown.contains("4242"), "{shown}");
        assert!(!shown.contains("123\""), "{shown}");
    }

    #[test]
    fn responses_echo_op_and_id_and_flatten_fields() {
        let r = Response::ok("balance", "x", serde_json::json!({"balance_mills": 5}));
        let text = String::from_utf8(r.to_json()).unwrap();
        assert!(text.contains(r#""ok":true"#) && text.contains(r#""balance_mills":5"#));
        let back = Response::from_json(text.as_bytes()).unwrap();
        assert_eq!(back.u64_field("balance_mills"), Some(5));
        let e = Response::error("issue", "y", codes::INSUFFICIENT_FUNDS, "short");
        assert_eq!(e.code(), Some("insufficient_funds"));
    }

    #[test]
    fn typed_replies_build_the_same_json_as_field_maps_and_decode_back() {
        use crate::replies::{AutoRefillState, BalanceReply, PaymentOptionsReply};
        let reply = BalanceReply {
            balance_mills: 5,
            ascending_mills: 7,
            descending_mills: 5,
            pieces: 1,
            reserved_mills: 0,
            license_id: Some("LIC-1".into()),
            device_id: None,
        };
        let typed = Response::ok_with("balance", "x", &reply);
        let by_map = Response::ok(
            "balance",
            "x",
            serde_json::json!({"balance_mills": 5, "ascending_mills": 7, "descending_mills": 5,
                "pieces": 1, "reserved_mills": 0, "license_id": "LIC-1", "device_id": null}),
        );
        assert_eq!(typed.to_json(), by_map.to_json());
        let back = Response::from_json(&typed.to_json()).unwrap();
        assert_eq!(back.decode::<BalanceReply>().unwrap(), reply);
        assert_eq!(back.u64_field("pieces"), Some(1));

        let options = PaymentOptionsReply {
            methods: vec!["card".into(), "eft".into()],
            max_amount_mills: 9,
            auto_refill: AutoRefillState::default(),
            locked: None,
        };
        let text = String::from_utf8(Response::ok_with("payment_options", "y", &options).to_json())
            .unwrap();
        assert!(
            text.contains(r#""auto_refill":{"active":false}"#) && text.contains(r#""locked":null"#),
            "{text}"
        );
    }

    #[test]
    fn decoding_refuses_unknown_fields_and_error_responses() {
        use crate::replies::FundReply;
        let extra = Response::ok(
            "fund",
            "x",
            serde_json::json!({"payment_id": "p", "amount_mills": 1, "balance_mills": 1, "x": 1}),
        );
        assert!(matches!(
            extra.decode::<FundReply>(),
            Err(WireError::Malformed(_))
        ));
        let refused = Response::error("fund", "x", codes::CARD_DECLINED, "declined");
        let e = refused.decode::<FundReply>().unwrap_err().to_string();
        assert!(e.contains("card_declined"), "{e}");
    }
}
