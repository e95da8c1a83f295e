//! The one error type of this crate.

use crate::Kind;

/// Why bytes or text are not a valid printed item (or part of one), or why an item does not verify.
///
/// Parsing never panics: every malformed input maps to one of these variants.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ItemError {
    // --- framing -------------------------------------------------------------------------------
    #[error("item is too short (truncated)")]
    TooShort,
    #[error("item does not start with the magic \"SL\"")]
    BadMagic,
    #[error("unsupported item format version {0} (this software reads version 1)")]
    UnsupportedVersion(u8),
    #[error("unknown item kind {0} (known: 1 postage, 2 ticket, 3 check, 4 coupon, 5 certificate)")]
    UnknownKind(u8),
    #[error(
        "body length {len} is not valid for a {kind} item (postage: exactly 55 bytes; other kinds: \
         33 to 1024 bytes)"
    )]
    BodyLength { kind: Kind, len: usize },
    #[error("item has trailing bytes after the signature")]
    TrailingBytes,
    #[error("unsupported signature algorithm {0} (this software knows 1 = ECDSA P-256/SHA-256)")]
    UnsupportedSignatureAlgorithm(u8),

    // --- fields --------------------------------------------------------------------------------
    #[error("unsupported indicium version {0} (this software reads version 1)")]
    UnsupportedIndiciumVersion(u8),
    #[error(
        "invalid device id (4 characters A-Z or 0-9, then the serial as 8 zero-padded digits, \
         e.g. SL0100001234)"
    )]
    BadDeviceId,
    #[error("invalid key id (8 lowercase hex characters, e.g. 1a2b3c4d)")]
    BadKeyId,
    #[error("invalid serial (DEVICEID-N, e.g. SL0100001234-42, N without leading zeros)")]
    BadSerial,
    #[error(
        "invalid date (a real calendar date from 2000-01-01 to 2099-12-31, written YYYY-MM-DD)"
    )]
    BadDate,
    #[error("valid-until date is before the issue date")]
    ValidUntilBeforeIssue,
    #[error("invalid ZIP code (exactly 5 digits)")]
    BadZip,
    #[error(
        "invalid delivery point (5, 9 or 11 digits: ZIP, ZIP+4 or ZIP+4+2, optionally with a \
         hyphen after the fifth digit)"
    )]
    BadDeliveryPoint,
    #[error("unknown rate category {0} (known: 1 to 4)")]
    BadRateCategory(u16),
    #[error("postage must not be zero")]
    ZeroPostage,
    #[error("piece number must not be zero (pieces are numbered from 1)")]
    ZeroPiece,
    #[error("{0} does not fit its field in the item")]
    FieldTooLarge(&'static str),
    #[error("a value item cannot have the kind postage (postage uses the postage indicium)")]
    PostageAsValueItem,

    // --- value-item fields (tag, length, UTF-8) ------------------------------------------------
    #[error("field list is truncated")]
    TruncatedField,
    #[error("field tag {tag} is not defined for a {kind} item")]
    UnknownFieldTag { kind: Kind, tag: u8 },
    #[error("field tag {0} appears more than once")]
    DuplicateFieldTag(u8),
    #[error("field {tag}: {reason}")]
    BadFieldValue { tag: u8, reason: &'static str },

    // --- verification --------------------------------------------------------------------------
    #[error("the public key's key id does not match the key id in the item")]
    KeyIdMismatch,
    #[error("the signature does not verify")]
    BadSignature,
    #[error("the public key is not a valid ECDSA P-256 SubjectPublicKeyInfo (DER)")]
    BadPublicKey,
}
