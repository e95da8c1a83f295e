//! The Stampline client: pinned TLS 1.3 to the server, the plain HTTPS calls (register, keys,
//! item status) and the link of DESIGN.md §3 — login, the server's signed challenge, heartbeat
//! checks and the sealed request channel.
//!
//! The link is continuous or it is nothing: when a beat is missing, late or wrong, or a frame does
//! not open, the link is marked lost, every pending request fails with the reason, and callers
//! must stop metering and cancel print jobs. This crate never logs passwords or card data.
//!
//! [`print`] sends items straight to printers (IPP/IPPS, raw port 9100, file) under the server's
//! print policy, and cancels a job when the link is lost before it completes.

mod http;
mod link;
pub mod print;
mod trust;

pub use http::{Endpoint, HttpError, PublishedKey};
pub use link::{CLIENT_NAME, Link, LinkError, REQUEST_TIMEOUT, new_request_id};
pub use trust::{Trust, TrustError};
