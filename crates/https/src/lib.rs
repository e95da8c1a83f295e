//! Pinned TLS 1.3 for Stampline's HTTPS/JSON links: the client side pins one exact certificate
//! (no CA logic), and — with the `serve` feature — a self-signed identity that writes the
//! `trust.pem` its callers pin, plus an accept loop that serves an axum router over it.
//!
//! The client crate (talking to the server) and the server crate (talking to the CMLS and bank
//! services) both call out through [`JsonCaller`]; the sandbox services serve through
//! [`serve::serve`]. This crate knows no Stampline type, never logs bodies, and never panics on
//! bytes from the network.

mod call;
mod pinned;
pub mod proxy;
#[cfg(feature = "serve")]
pub mod serve;

pub use call::{CallError, JsonCaller, MAX_RESPONSE_BYTES, parse_https_url};
pub use pinned::{
    PinError, pem, pem_blocks, pinned_client_config, pinned_client_config_for, read_pinned_cert,
};
pub use proxy::{Proxy, ProxyError};
