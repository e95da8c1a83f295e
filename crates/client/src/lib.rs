//! The Stampline client: everything a program needs to buy and print postage from a Stampline
//! server — the CLI, the bench and the web portal's server-side tests all go through it.
//!
//! - The connection: pinned TLS 1.3 to the server, the plain HTTPS calls (register, keys, quote,
//!   item status) and the link of docs/DESIGN.md §3 — login, the server's signed challenge, heartbeat
//!   checks and the sealed request channel. The link is continuous or it is nothing: when a beat
//!   is missing, late or wrong, or a frame does not open, the link is marked lost, every pending
//!   request fails with the reason, and print jobs are cancelled.
//! - The purchase workflow, on a [`Client`] (endpoint, live link, published keys):
//!   [`Client::buy`] (quote → open print jobs → issue → check the item against the published keys
//!   → render → print → confirm printed, or void on failure), [`Client::buy_batch`] (many pieces
//!   into one file, each piece's result reported as it settles), [`Client::reprint`], and the
//!   one-request helpers (balance, fund, history, payment options, auto-refill, close, quote,
//!   issue, confirm), each answering its op's typed reply of `stampline_wire::replies`.
//! - Labels: [`label`] turns a bought item and the buyer's layout and addresses into the
//!   document a printer is sent (the drawing is `stampline-label`'s).
//! - Printing: [`print`](mod@print) sends documents straight to printers (IPP/IPPS, raw port 9100, file)
//!   under the server's print policy; [`jobs`] opens the jobs before the item is issued and reads
//!   the verdict the item is confirmed from.
//!
//! Every failure of the workflow is one [`ClientError`] with a snake_case code. Server answers
//! are decoded into `stampline-wire`'s typed replies in one module (`answers`). This crate never logs passwords or card data, and never
//! depends on the server.

mod answers;
mod batch;
mod buy;
mod check;
mod error;
mod http;
pub mod jobs;
pub mod label;
mod link;
pub mod print;
mod reprint;
mod session;
mod trust;
pub mod value;

pub use answers::{Confirmed, Issued};
pub use batch::{BatchEvent, BatchPiece, BatchReport, BatchRequest, PieceEnd, PieceResult};
pub use buy::{BuyRequest, Output, Purchase};
pub use check::{check_item, key_in_force, today};
pub use error::ClientError;
pub use http::{Endpoint, HttpError, PublishedKey};
pub use link::{BeatStats, CLIENT_NAME, Link, LinkError, REQUEST_TIMEOUT, new_request_id};
pub use reprint::{Reprint, ReprintRequest};
pub use session::{AutoRefill, Client, Payment, PostageIssue};
pub use trust::{Trust, TrustError};
pub use value::ValueRequest;
