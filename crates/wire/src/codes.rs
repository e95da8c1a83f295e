//! Every error code the server sends (snake_case), in one list: [`ALL`] pairs each with its
//! one-line meaning, and docs/PROTOCOL.md lists each with the same meaning (a test checks it).
//!
//! Link-level codes come in an error frame before the welcome, or before a close with 1008;
//! request-level codes in a sealed `ok:false` response (the link stays); HTTP codes in
//! `{"error","message"}` bodies. The ledger crate (which cannot depend on this one) names its codes
//! as strings; a server test checks that each of them is here.

// Link-level.
pub const BAD_FRAME: &str = "bad_frame";
pub const FRAME_TOO_LARGE: &str = "frame_too_large";
pub const UNSUPPORTED_VERSION: &str = "unsupported_version";
pub const BAD_CREDENTIALS: &str = "bad_credentials";
pub const RATE_LIMITED: &str = "rate_limited";
pub const BAD_SEQUENCE: &str = "bad_sequence";
pub const UNOPENABLE: &str = "unopenable";
pub const BAD_SIGNATURE: &str = "bad_signature";
pub const BAD_MAC: &str = "bad_mac";
pub const BEAT_TIMEOUT: &str = "beat_timeout";
pub const UNEXPECTED_FRAME: &str = "unexpected_frame";
pub const SESSION_ENDED: &str = "session_ended";
pub const INTERNAL: &str = "internal";

// Request-level.
pub const BAD_REQUEST: &str = "bad_request";
pub const UNKNOWN_OP: &str = "unknown_op";
pub const ID_REUSED: &str = "id_reused";
pub const INSUFFICIENT_FUNDS: &str = "insufficient_funds";
pub const BAD_AMOUNT: &str = "bad_amount";
pub const BAD_ZIP: &str = "bad_zip";
pub const BAD_DATE: &str = "bad_date";
pub const BAD_CLASS: &str = "bad_class";
pub const BAD_WEIGHT: &str = "bad_weight";
pub const TOO_HEAVY: &str = "too_heavy";
pub const UNDERPAID: &str = "underpaid";
pub const BAD_CARD: &str = "bad_card";
pub const BAD_ACCOUNT: &str = "bad_account";
pub const CARD_DECLINED: &str = "card_declined";
pub const PAYMENT_FAILED: &str = "payment_failed";
pub const UNKNOWN_ITEM: &str = "unknown_item";
pub const NOT_PENDING: &str = "not_pending";
pub const REFUND_WINDOW_CLOSED: &str = "refund_window_closed";
pub const REPRINT_LIMIT: &str = "reprint_limit";
pub const REPRINT_WINDOW_CLOSED: &str = "reprint_window_closed";
pub const ALREADY_PRINTED: &str = "already_printed";
pub const UNSUPPORTED: &str = "unsupported";
pub const SIGNING_FAILED: &str = "signing_failed";
pub const METER_FROZEN: &str = "meter_frozen";
pub const AUDIT_LOG_BROKEN: &str = "audit_log_broken";
pub const ACCOUNT_LOCKED: &str = "account_locked";
pub const ACCOUNT_CLOSED: &str = "account_closed";
pub const ACCOUNT_BUSY: &str = "account_busy";
pub const BUSY: &str = "busy";
pub const REFUND_UNAVAILABLE: &str = "refund_unavailable";
pub const UNKNOWN_USER: &str = "unknown_user";
pub const NOT_REDEEMABLE: &str = "not_redeemable";
pub const ALREADY_REDEEMED: &str = "already_redeemed";
pub const EXPIRED: &str = "expired";
pub const NOT_ALLOWED: &str = "not_allowed";
pub const KICKED: &str = "kicked";
pub const USER_LOCKED: &str = "user_locked";
pub const DUPLICATE_PAYMENT: &str = "duplicate_payment";
pub const INVALID_INPUT: &str = "invalid_input";
pub const OVERFLOW: &str = "overflow";
pub const NOT_LICENSED: &str = "not_licensed";
// Admin ops.
pub const FORBIDDEN: &str = "forbidden";
pub const UNKNOWN_KEY: &str = "unknown_key";
pub const KEY_CURRENT: &str = "key_current";

// HTTP (registration and the public routes).
pub const BAD_USER: &str = "bad_user";
pub const WEAK_PASSWORD: &str = "weak_password";
pub const BAD_STATE: &str = "bad_state";
pub const USER_EXISTS: &str = "user_exists";
pub const LICENSE_REFUSED: &str = "license_refused";
pub const TOO_LARGE: &str = "too_large";
pub const REQUEST_TIMEOUT: &str = "request_timeout";
pub const UNAVAILABLE: &str = "unavailable";

/// Every code with its one-line meaning, as docs/PROTOCOL.md lists it.
pub const ALL: &[(&str, &str)] = &[
    (
        BAD_FRAME,
        "not a protocol frame (bad JSON, wrong hex length, binary frame, field too long in hello)",
    ),
    (FRAME_TOO_LARGE, "a frame over 16 KiB"),
    (UNSUPPORTED_VERSION, "hello `version` is not 1"),
    (
        BAD_CREDENTIALS,
        "wrong user name or password (the same for an unknown user)",
    ),
    (
        RATE_LIMITED,
        "too many logins or registrations from this address, too many links for this user, or too many requests in flight on one link",
    ),
    (
        BAD_SEQUENCE,
        "a sealed frame or ack was repeated or skipped",
    ),
    (UNOPENABLE, "a sealed frame failed authentication"),
    (
        BAD_SIGNATURE,
        "the welcome's signature does not verify with the pinned auth key (the client ends the link)",
    ),
    (BAD_MAC, "a beat's or a beat ack's MAC is wrong"),
    (
        BEAT_TIMEOUT,
        "a beat was not acknowledged within `beat_timeout_ms`",
    ),
    (
        UNEXPECTED_FRAME,
        "a frame that does not belong at this point (e.g. a second hello)",
    ),
    (
        SESSION_ENDED,
        "the connection was lost or the peer closed the link",
    ),
    (INTERNAL, "a server fault (details logged, never sent)"),
    (
        BAD_REQUEST,
        "missing/invalid fields, wrong types, negative numbers, unknown fields",
    ),
    (UNKNOWN_OP, "`op` is not one of the v1 ops"),
    (
        ID_REUSED,
        "this request id was used for a different request",
    ),
    (
        INSUFFICIENT_FUNDS,
        "the amount is more than the spendable balance",
    ),
    (BAD_AMOUNT, "zero, too large, or more precise than a mill"),
    (
        BAD_ZIP,
        "ZIP not 5 digits (origin) or not ZIP/ZIP+4/ZIP+4+2 (destination)",
    ),
    (BAD_DATE, "mail date invalid or outside the allowed range"),
    (BAD_CLASS, "unknown mail class"),
    (
        BAD_WEIGHT,
        "weight not a positive number of ounces with at most 2 decimals, or over 70 lb",
    ),
    (
        TOO_HEAVY,
        "the class does not take that weight (a letter over 3.5 oz, a flat over 13 oz)",
    ),
    (
        UNDERPAID,
        "postage below the rate for the declared weight (or, with no weight, below the class's lowest rate)",
    ),
    (BAD_CARD, "card number, expiry or CVC invalid"),
    (
        BAD_ACCOUNT,
        "EFT routing number fails the ABA check, or account number invalid",
    ),
    (
        CARD_DECLINED,
        "the bank declined (including insufficient funds at the bank)",
    ),
    (
        PAYMENT_FAILED,
        "the bank could not be reached; nothing was credited; retry with the same id",
    ),
    (UNKNOWN_ITEM, "no such item for this user"),
    (
        NOT_PENDING,
        "the item is not awaiting confirmation (carries its status in the message)",
    ),
    (REFUND_WINDOW_CLOSED, "the item is too old to refund"),
    (
        REPRINT_LIMIT,
        "the item was already reprinted `MAX_REPRINTS` (3) times (extension `reprint`)",
    ),
    (
        REPRINT_WINDOW_CLOSED,
        "the item was issued more than 24 h ago (extension `reprint`)",
    ),
    (
        ALREADY_PRINTED,
        "the item's print was confirmed: it is never handed out again; refund or void it instead (extension `reprint`)",
    ),
    (
        UNSUPPORTED,
        "a v1 op or kind this server version does not offer yet (`card_token`, non-postage kinds)",
    ),
    (
        SIGNING_FAILED,
        "the crypto device could not sign the item (e.g. it raced a rotation, or its signature did not verify); nothing is charged, and the same request id may be retried",
    ),
    (
        METER_FROZEN,
        "the user's meter was changed behind the server's back (its register seal, or its descending register against the balance, does not hold); every money op on it is refused until an operator repairs it",
    ),
    (
        AUDIT_LOG_BROKEN,
        "the server's audit log lost entries behind its back (the newest entry it wrote is gone); it appends nothing more, so no money moves, until an operator has checked the log",
    ),
    (
        ACCOUNT_LOCKED,
        "an EFT debit was returned; pay exactly its amount by card to unlock",
    ),
    (ACCOUNT_CLOSED, "the account was closed"),
    (ACCOUNT_BUSY, "items still await print confirmation"),
    (
        BUSY,
        "the server is at capacity: the ledger's writer queue is full, or (hello, registration) every password-hashing slot is in use; nothing was done; retry later (a request with the same request id)",
    ),
    (
        REFUND_UNAVAILABLE,
        "the bank cannot refund part of the balance yet; try later",
    ),
    (UNKNOWN_USER, "the ledger holds no such user"),
    (
        NOT_LICENSED,
        "the account has no licensed meter yet (CMLS licenses it at the first funding); fund the account first",
    ),
    (NOT_REDEEMABLE, "the item's kind cannot be redeemed"),
    (
        ALREADY_REDEEMED,
        "nothing is left to redeem of the item (it was redeemed, in full)",
    ),
    (
        EXPIRED,
        "the item's valid-until day is over; it can no longer be redeemed",
    ),
    (
        KICKED,
        "an administrator ended the link (or locked the account); log in again if allowed",
    ),
    (
        USER_LOCKED,
        "an administrator locked the account: logins are refused until it is unlocked",
    ),
    (
        NOT_ALLOWED,
        "only the item's issuer and the users it allows (`redeemers add`) may redeem it",
    ),
    (DUPLICATE_PAYMENT, "the bank's payment was already recorded"),
    (
        INVALID_INPUT,
        "the ledger refused a malformed argument (empty or too long id, zero amount, unknown payment method)",
    ),
    (
        OVERFLOW,
        "a register, piece number or balance would leave its range; nothing changed",
    ),
    (
        FORBIDDEN,
        "the op needs the admin role, or an admin logged in from outside the admin address list",
    ),
    (UNKNOWN_KEY, "no signing key with that id"),
    (
        KEY_CURRENT,
        "the current signing key cannot be revoked; rotate first",
    ),
    (
        BAD_USER,
        "user name not 1 to 64 bytes of letters, digits, `. _ @ -`",
    ),
    (
        WEAK_PASSWORD,
        "password shorter than 12 or longer than 256 bytes, too common, or containing the user name",
    ),
    (BAD_STATE, "state is not a 2-letter code such as MA"),
    (USER_EXISTS, "that user name is taken"),
    (
        LICENSE_REFUSED,
        "CMLS refused to license the customer (at the first funding; nothing was charged)",
    ),
    (
        TOO_LARGE,
        "the HTTP request body is over the limit (8 KiB by default); refused from its declared length, unread",
    ),
    (
        REQUEST_TIMEOUT,
        "the HTTP request body did not arrive within the request deadline (10 s by default)",
    ),
    (
        UNAVAILABLE,
        "a system the server depends on (its private tier, CMLS) cannot be reached; nothing was done that sending the same request again would repeat",
    ),
];

/// The meaning of `code`, or `None` for a code this list does not hold.
pub fn meaning(code: &str) -> Option<&'static str> {
    ALL.iter().find(|(c, _)| *c == code).map(|(_, m)| *m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_is_listed_once_in_snake_case() {
        let mut seen = std::collections::BTreeSet::new();
        for (code, meaning) in ALL {
            assert!(seen.insert(*code), "{code} is listed twice");
            assert!(
                code.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{code}"
            );
            assert!(!meaning.is_empty() && !meaning.contains('|'), "{code}");
        }
        assert_eq!(
            meaning(BAD_CREDENTIALS),
            Some("wrong user name or password (the same for an unknown user)")
        );
        assert_eq!(meaning("no_such_code"), None);
    }
}
