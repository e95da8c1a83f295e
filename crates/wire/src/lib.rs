//! The Stampline link protocol v1 (docs/PROTOCOL.md): the JSON frames, the key derivations, the
//! heartbeat MACs and the sealed (AES-256-GCM) request/response channel.
//!
//! This crate is pure: it does no I/O, holds no long-lived secrets of its own and never panics on
//! bytes from the network. Both the server and the client use it, so the two sides cannot drift:
//! requests are [`Op`]s, answers are the structs of [`replies`], refusals are the [`codes`].
//! It never logs: secrets it handles (passwords, keys) are wrapped so `Debug` cannot print them.

pub mod codes;
mod crypto;
mod frame;
mod ops;
pub mod replies;

pub use crypto::{
    AUTH_CONTEXT, Channel, Direction, PBKDF2_ROUNDS, SessionKey, UserKey, auth_transcript,
    beat_ack_mac, beat_mac, normalize_user, request_fingerprint, session_key, user_key,
    verify_auth_signature, verify_beat_ack_mac, verify_beat_mac,
};
pub use frame::{Frame, Hex, Secret, decode_frame, encode_frame};
pub use ops::{Card, Eft, Op, PrintPolicy, Request, RequestError, Response, parse_request};

/// The only protocol version this crate speaks.
pub const PROTOCOL_VERSION: u32 = 1;
/// Largest WebSocket text frame either side accepts, in bytes. A sealed request is small (a fund
/// request with card data is < 1 KiB); items are ≤ 1.2 KiB, base64 and sealed ≈ 2 KiB.
pub const MAX_FRAME_BYTES: usize = 16 * 1024;
/// The WebSocket layer's read buffer on both ends of a link: one TLS record's plaintext, the most
/// one read returns. (The WebSocket crate's default, 128 KiB, is zero-filled before every read:
/// measured at 1.2 % of the server's CPU under load.)
pub const LINK_READ_BUFFER_BYTES: usize = 16 * 1024;
/// Longest user name, in bytes of UTF-8.
pub const MAX_USER_BYTES: usize = 64;
/// Longest password, in bytes of UTF-8 (argon2 and PBKDF2 take any length; this bounds the work).
pub const MAX_PASSWORD_BYTES: usize = 256;
/// Shortest password accepted at registration (at least 12 characters).
pub const MIN_PASSWORD_CHARS: usize = 12;
/// Longest `client` identification string in hello.
pub const MAX_CLIENT_BYTES: usize = 64;

/// Errors of this crate; each maps to one documented wire code through [`WireError::code`].
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WireError {
    #[error("frame is larger than {MAX_FRAME_BYTES} bytes")]
    FrameTooLarge,
    #[error("malformed frame: {0}")]
    Malformed(String),
    #[error("sealed frame out of sequence: expected {expected}, got {got}")]
    Sequence { expected: u64, got: u64 },
    #[error("sealed frame could not be opened")]
    Unopenable,
    #[error("signature does not verify")]
    BadSignature,
    #[error("heartbeat MAC does not verify")]
    BadMac,
    #[error("cryptographic failure")]
    Crypto,
}

impl WireError {
    /// The snake_case code sent on the wire for this error.
    pub fn code(&self) -> &'static str {
        match self {
            WireError::FrameTooLarge => codes::FRAME_TOO_LARGE,
            WireError::Malformed(_) => codes::BAD_FRAME,
            WireError::Sequence { .. } => codes::BAD_SEQUENCE,
            WireError::Unopenable => codes::UNOPENABLE,
            WireError::BadSignature => codes::BAD_SIGNATURE,
            WireError::BadMac => codes::BAD_MAC,
            WireError::Crypto => codes::INTERNAL,
        }
    }
}
