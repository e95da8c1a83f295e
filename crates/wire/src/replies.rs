//! The answer of every op, typed: the server builds its responses from these and clients decode
//! them ([`crate::Response::ok_with`], [`crate::Response::decode`]). Field names are the wire's;
//! docs/PROTOCOL.md lists them. Decoding refuses unknown fields, so a drift between the two sides
//! shows at once.

use serde::{Deserialize, Serialize};

use crate::PrintPolicy;

/// `balance`: the account and its meter's registers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BalanceReply {
    pub balance_mills: u64,
    pub ascending_mills: u64,
    pub descending_mills: u64,
    pub pieces: u64,
    pub reserved_mills: u64,
    /// The meter's licence and device id; null until the first funding licenses it.
    pub license_id: Option<String>,
    pub device_id: Option<String>,
}

/// `quote` (and `GET /v1/quote`): the price of one piece.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuoteReply {
    pub postage_mills: u64,
    pub class: String,
    /// The weight as a decimal string ("3.5").
    pub weight_oz: String,
    /// 1–9, or null for classes not priced by zone.
    pub zone: Option<u8>,
    /// The rate table's version.
    pub rate_table: String,
}

/// `issue`: the new item, base64, and how to print it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssueReply {
    pub serial: String,
    /// The item's bytes, base64 (standard alphabet, padded).
    pub item: String,
    /// `postage`, `ticket`, `check`, `coupon` or `certificate`.
    pub kind: String,
    /// The postage, or a value item's face value.
    pub amount_mills: u64,
    /// The postage (0 for value items).
    pub postage_mills: u64,
    pub balance_mills: u64,
    pub print: PrintPolicy,
}

/// `confirm` and `refund`: an item's new status and the balance after it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ItemStatusReply {
    pub serial: String,
    /// `issued`, `printed`, `voided`, `refunded` or `redeemed`.
    pub status: String,
    pub balance_mills: u64,
}

/// `confirm`.
pub type ConfirmReply = ItemStatusReply;
/// `refund`.
pub type RefundReply = ItemStatusReply;

/// `reprint`: the item's bytes again, with the count.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReprintReply {
    pub serial: String,
    pub status: String,
    /// The item's bytes exactly as issued, base64.
    pub item: String,
    /// Reprints so far, this one included.
    pub reprints: u32,
    pub reprints_left: u32,
    pub print: PrintPolicy,
}

/// `fund`: the payment and the balance after it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FundReply {
    pub payment_id: String,
    pub amount_mills: u64,
    pub balance_mills: u64,
}

/// One line of `history`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryLine {
    pub serial: String,
    pub kind: String,
    pub amount_mills: u64,
    pub status: String,
    pub issued_at_ms: i64,
}

/// `history`: the newest items first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryReply {
    pub items: Vec<HistoryLine>,
}

/// `bye`: no fields.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ByeReply {}

/// A signing key as `GET /v1/keys` and the admin ops show it. Times are RFC 3339 (null when
/// unset or out of range).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SigningKey {
    pub key_id: String,
    pub algorithm: String,
    pub public_key_spki_der_base64: String,
    pub valid_from: Option<String>,
    pub valid_until: Option<String>,
    /// `current`, `retired` or `revoked`.
    pub status: String,
    pub retired_at: Option<String>,
    pub revoked_at: Option<String>,
    pub revocation_reason: Option<String>,
}

/// `admin_keys`: the current key's id and every key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminKeysReply {
    pub current: String,
    pub keys: Vec<SigningKey>,
}

/// `admin_rotate_key`: the new current key and the one it retired.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminRotateKeyReply {
    pub key_id: String,
    pub new_key: SigningKey,
    pub old_key: SigningKey,
    pub cmls_registered: bool,
}

/// `admin_revoke_key`: the revoked key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminRevokeKeyReply {
    pub key_id: String,
    pub key: SigningKey,
    pub cmls_registered: bool,
}

/// One login back-off: failed logins for a user name (lowercase) from a source (an IPv4 address
/// or an IPv6 /64), and until when that source is refused for that name (`null`: not now).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginThrottle {
    pub user: String,
    pub source: String,
    pub failures: u32,
    pub until_ms: Option<i64>,
}

/// `admin_throttles`: every back-off not yet forgotten, by user name and source.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminThrottlesReply {
    pub throttles: Vec<LoginThrottle>,
}

/// `admin_unlock`: the user name (lowercase) and how many (name, source) back-offs were cleared.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminUnlockReply {
    pub user: String,
    pub cleared: u64,
}

/// A standing authorisation to refill: `{"active":false}`, or active with its terms.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AutoRefillState {
    pub active: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last4: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold_mills: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amount_mills: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cap_mills: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub used_mills: Option<u64>,
}

/// `payment_options`: what the client shows before a payment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PaymentOptionsReply {
    /// `["card","eft"]`.
    pub methods: Vec<String>,
    pub max_amount_mills: u64,
    pub auto_refill: AutoRefillState,
    /// The lock's message while a returned debit is unpaid, else null.
    pub locked: Option<String>,
}

/// `auto_refill`: the standing authorisation as it now is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AutoRefillReply {
    pub auto_refill: AutoRefillState,
}

/// One refund of a closure.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CloseRefund {
    pub payment_id: String,
    pub refund_id: String,
    pub amount_mills: u64,
}

/// `close`: the account is closed and its balance refunded.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CloseReply {
    /// Always `closed`.
    pub status: String,
    pub refunded_mills: u64,
    pub refunds: Vec<CloseRefund>,
    pub balance_mills: u64,
}

/// `POST /v1/register` (201).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterReply {
    pub user: String,
    /// Null: CMLS licenses the customer at the first funding (see `balance`).
    pub license_id: Option<String>,
    pub device_id: Option<String>,
}

/// `GET /v1/items/SERIAL/status`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ItemStatusPublic {
    pub serial: String,
    /// An item status, `expired` (a value item past its valid-until day, not redeemed), or
    /// `unknown`.
    pub status: String,
    /// Value items: the kind, the face value and what is left to redeem (a gift certificate
    /// redeems in parts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amount_mills: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remaining_mills: Option<u64>,
    /// Value items: redeemable through this day (UTC), "YYYY-MM-DD".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_until: Option<String>,
}

/// `redeem`: what this redemption took, what is left, and the redeemer's balance after it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedeemReply {
    pub serial: String,
    pub kind: String,
    /// `redeemed`, or `printed` while part of a gift certificate is left.
    pub status: String,
    pub redeemed_mills: u64,
    pub remaining_mills: u64,
    pub balance_mills: u64,
}

/// One live link as the operators see it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LiveLink {
    pub session: String,
    pub user: String,
    /// The client's name and version from its hello ("stampline-cli/0.1.0").
    pub client: String,
    /// Its operating system and architecture, when it said.
    pub platform: Option<String>,
    /// The address the link comes from.
    pub address: String,
    /// RFC 3339.
    pub linked_since: String,
    pub last_beat: Option<String>,
    pub round_trip_ms: Option<u64>,
    /// Items issued on this link.
    pub issued: u64,
}

/// `admin_links`: every live link, oldest first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminLinksReply {
    pub links: Vec<LiveLink>,
}

/// `admin_kick` and `admin_lock`: the links that will end (each within a beat interval).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminKickReply {
    pub ended: Vec<String>,
    /// `admin_lock`: the user is locked now.
    #[serde(default)]
    pub locked: bool,
}

/// One check as a bank's positive-pay file lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckLine {
    pub check_number: u64,
    pub serial: String,
    /// The issue date, "YYYY-MM-DD".
    pub issue_date: String,
    pub amount_mills: u64,
    pub payee: String,
    /// `issued`, `printed`, `voided`, `refunded` or `redeemed`.
    pub status: String,
    /// The bank must not pay it: voided, or refunded (a void after printing).
    pub void: bool,
}

/// `checks`: the account the checks are drawn on (the meter's device id) and its checks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChecksReply {
    pub account: String,
    pub checks: Vec<CheckLine>,
}

/// `redeemers`: the users allowed to redeem the caller's items, by name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedeemersReply {
    pub redeemers: Vec<String>,
}

/// Every HTTP refusal's body.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpError {
    /// A code of [`crate::codes::ALL`].
    pub error: String,
    pub message: String,
}
