//! Printed item formats v1 for Stampline (docs/DESIGN.md §4, normative and byte-exact): the postage
//! indicium and the value items (ticket, check, coupon, gift certificate), their bytes, the
//! payload a signature covers, strict parsing and signature verification.
//!
//! This crate owns the format, its field types ([`DeviceId`], [`KeyId`], [`Serial`],
//! [`ItemDate`], [`Zip5`], [`DeliveryPoint`], [`RateCategory`]) and [`ItemError`]. It is pure: it
//! must never do I/O, hold private keys or sign (the crypto device signs [`Body::signed_payload`]),
//! and never panic on any input — [`Item::parse`] is meant to be fuzzed. Every value that can be
//! encoded parses back to itself, and parsing accepts exactly what encoding produces.
//!
//! Layout (all integers big-endian, amounts in mills):
//! ```text
//! offset size field
//! 0      2    magic "SL"
//! 2      1    format version = 1
//! 3      1    kind: 1 postage, 2 ticket, 3 check, 4 coupon, 5 certificate
//! 4      2    body length L
//! 6      L    body (postage: 55 bytes; other kinds: 33 + fields, at most 1024)
//! 6+L    1    signature algorithm: 1 = ECDSA P-256 / SHA-256
//! 7+L    64   signature r||s over bytes [0, 7+L)
//! ```
//! Code map: `item` (bodies, encoding, parsing, verification), `ids` (device id, key id,
//! serial), `date`, `postal` (rate category, ZIP, delivery point), `kind` (kinds and field tags),
//! `error`.

mod date;
mod error;
mod ids;
mod item;
mod kind;
mod postal;

pub use date::{ItemDate, MAX_YEAR, MIN_YEAR};
pub use error::ItemError;
pub use ids::{
    DEVICE_ID_LEN, DEVICE_MODEL_LEN, DEVICE_SERIAL_MIN_DIGITS, DeviceId, KEY_ID_LEN, KeyId, Serial,
    TEST_DEVICE_MODEL,
};
pub use item::{Body, Field, Item, PostageIndicium, ValueItem};
pub use kind::{Kind, field_tag};
pub use postal::{DELIVERY_POINT_LEN, DeliveryPoint, MAX_ZIP5, RateCategory, Zip5};
/// Re-exported: the amounts in items are `stampline_money::Amount`.
pub use stampline_money::Amount;

/// The two magic bytes every item starts with.
pub const MAGIC: [u8; 2] = *b"SL";
/// The item format version this crate writes and reads (byte 2).
pub const FORMAT_VERSION: u8 = 1;
/// The postage indicium version (first body byte of a postage item).
pub const INDICIUM_VERSION: u8 = 1;
/// Signature algorithm 1: ECDSA P-256 with SHA-256, signature as fixed-size r||s.
pub const SIG_ALG_ECDSA_P256_SHA256: u8 = 1;
/// Bytes of an ECDSA P-256 signature as r||s.
pub const SIGNATURE_LEN: usize = 64;
/// Bytes before the body: magic, version, kind, body length.
pub const HEADER_LEN: usize = 6;
/// Bytes of a postage body (kind 1), fixed.
pub const POSTAGE_BODY_LEN: usize = 55;
/// Bytes of a whole postage item: header, body, algorithm byte, signature (a 44×44 DataMatrix).
pub const POSTAGE_ITEM_LEN: usize = HEADER_LEN + POSTAGE_BODY_LEN + 1 + SIGNATURE_LEN;
/// Fixed part of a value-item body: device id 8, key id 4, serial 8, amount 5, issue date 4,
/// valid-until 4.
pub const VALUE_BODY_FIXED_LEN: usize = 33;
/// The largest body of a value item, fields included: keeps every item within one DataMatrix
/// symbol (the largest square ECC200 symbol holds 1,556 bytes).
pub const MAX_BODY_LEN: usize = 1024;
/// The largest item of any kind.
pub const MAX_ITEM_LEN: usize = HEADER_LEN + MAX_BODY_LEN + 1 + SIGNATURE_LEN;
/// The largest field value in a value item, in bytes (its length is one byte).
pub const MAX_FIELD_VALUE_LEN: usize = 255;
/// The largest postage in one indicium: the 3-byte field's limit, 16,777,215 mills ($16,777.215).
pub const MAX_POSTAGE_MILLS: u64 = (1 << 24) - 1;
/// Stampline's software id, written in every indicium it builds.
pub const SOFTWARE_ID: u32 = 1;
