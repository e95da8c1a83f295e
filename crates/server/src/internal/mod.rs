//! The internal channel between a gateway (public tier) and the core (private tier), when they
//! run as two processes: one mutual-TLS 1.3 connection per gateway under the core's internal CA
//! (crate::internal_ca), carrying calls and their replies, many at once.
//!
//! A message is a 4-byte big-endian length and that many bytes of JSON: a [`CallFrame`] from the
//! gateway, a [`ReplyFrame`] from the core, matched by `id`. The core checks everything it is
//! given again (requests are re-parsed from their plaintext; the gateway's parse is a filter, not
//! a trust boundary). Refusals travel as their code and public message; internal details never
//! leave the core.

pub mod client;
pub mod serve;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use stampline_wire::codes;
use tokio::io::{AsyncRead, AsyncReadExt as _};
use uuid::Uuid;

use crate::core::links::SessionHello;
use crate::core::{CoreError, RegisterForm};

/// Largest message either side accepts (an issue's answer is a few KiB).
pub const MAX_MESSAGE_BYTES: usize = 1 << 20;

/// What a gateway asks of the core.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Call {
    /// What the core runs on (sandbox or not), asked once per connection.
    Info {},
    Register {
        form: RegisterForm,
    },
    Keys {},
    ItemStatus {
        serial: String,
    },
    OpenSession {
        hello: SessionHello,
        beats: u32,
    },
    Beats {
        session: Uuid,
        first_seq: u64,
        count: u32,
    },
    /// One request of a live link, as the plaintext the client sealed (a JSON object, carried
    /// as it is).
    Handle {
        session: Uuid,
        request: Box<RawValue>,
    },
    CloseSession {
        session: Uuid,
    },
    /// The gateway's links: their beats; the answer names those an administrator ended.
    ReportLinks {
        reports: Vec<crate::core::links::LinkReport>,
    },
}

/// A call and its number on the connection.
#[derive(Debug, Serialize, Deserialize)]
pub struct CallFrame {
    pub id: u64,
    pub call: Call,
}

/// A refusal as it crosses the channel.
#[derive(Debug, Serialize, Deserialize)]
pub struct Refusal {
    pub code: String,
    pub message: String,
}

/// The answer to the call numbered `id`: `ok` or `err`.
#[derive(Debug, Serialize, Deserialize)]
pub struct ReplyFrame {
    pub id: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ok: Option<Box<RawValue>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub err: Option<Refusal>,
}

/// What `Info` answers.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
pub struct CoreInfo {
    pub sandbox: bool,
}

impl From<&CoreError> for Refusal {
    fn from(e: &CoreError) -> Self {
        Refusal {
            code: e.code().to_owned(),
            message: e.public_message(),
        }
    }
}

impl From<Refusal> for CoreError {
    /// The core's refusal, as the gateway's own error: codes outside the documented list are
    /// internal.
    fn from(r: Refusal) -> Self {
        match r.code.as_str() {
            codes::BAD_CREDENTIALS => CoreError::BadCredentials,
            codes::UNAVAILABLE => CoreError::Unavailable(r.message),
            codes::INTERNAL => CoreError::Internal(format!("core: {}", r.message)),
            code => match codes::ALL.iter().find(|(c, _)| *c == code) {
                Some((c, _)) => CoreError::refused(c, r.message),
                None => CoreError::Internal(format!("core sent an unknown code {code}")),
            },
        }
    }
}

/// One message, framed.
pub fn encode<T: Serialize>(message: &T) -> Vec<u8> {
    // Serialising these plain structs cannot fail.
    let body = serde_json::to_vec(message).unwrap_or_default();
    let mut out = Vec::with_capacity(4 + body.len());
    out.extend_from_slice(&u32::try_from(body.len()).unwrap_or(u32::MAX).to_be_bytes());
    out.extend_from_slice(&body);
    out
}

/// The next message's bytes; `None` at a clean end of the stream.
pub async fn read_message<R: AsyncRead + Unpin>(r: &mut R) -> std::io::Result<Option<Vec<u8>>> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_MESSAGE_BYTES {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("internal message of {len} bytes (limit {MAX_MESSAGE_BYTES})"),
        ));
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).await?;
    Ok(Some(body))
}

/// Writes queued messages, flushing when the queue is empty (answers ready together leave in one
/// TLS record and one system call).
pub(crate) async fn write_loop<W: tokio::io::AsyncWrite + Unpin>(
    mut w: W,
    mut queue: tokio::sync::mpsc::Receiver<Vec<u8>>,
) {
    use tokio::io::AsyncWriteExt as _;
    while let Some(message) = queue.recv().await {
        if w.write_all(&message).await.is_err() {
            return;
        }
        while let Ok(more) = queue.try_recv() {
            if w.write_all(&more).await.is_err() {
                return;
            }
        }
        if w.flush().await.is_err() {
            return;
        }
    }
    let _ = w.shutdown().await;
}
