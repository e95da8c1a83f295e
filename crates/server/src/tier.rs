//! The public tier's one way to the private tier: the core in the same process (`--role all`),
//! or a core across the internal channel (`--role gateway`, crate::internal). The router and the
//! links call only these methods, so both roles run the same public-tier code.

use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde_json::value::RawValue;
use stampline_wire::replies::{ItemStatusPublic, SigningKey};
use stampline_wire::{Request, Response, codes};
use tokio::sync::watch;
use uuid::Uuid;

use crate::core::links::{BeatTicket, LOCAL, LinkEnd, LinkReport, SessionGrant, SessionHello};
use crate::core::{Core, CoreError, RegisterForm, Registered};
use crate::internal::Call;
use crate::internal::client::CoreClient;

/// Where the private tier is.
#[derive(Clone, Debug)]
pub struct PrivateTier(Inner);

#[derive(Clone, Debug)]
enum Inner {
    /// In this process; the watch never changes (the core cannot be lost).
    Local(Arc<Core>, Arc<watch::Sender<Option<u64>>>),
    Remote(Arc<CoreClient>),
}

fn decode<T: DeserializeOwned>(raw: &RawValue) -> Result<T, CoreError> {
    serde_json::from_str(raw.get()).map_err(|e| CoreError::Internal(format!("core's answer: {e}")))
}

impl PrivateTier {
    pub fn local(core: Arc<Core>) -> PrivateTier {
        PrivateTier(Inner::Local(core, Arc::new(watch::channel(Some(0)).0)))
    }

    pub fn remote(client: Arc<CoreClient>) -> PrivateTier {
        PrivateTier(Inner::Remote(client))
    }

    /// The core, when it runs in this process.
    pub fn local_core(&self) -> Option<&Arc<Core>> {
        match &self.0 {
            Inner::Local(core, _) => Some(core),
            Inner::Remote(_) => None,
        }
    }

    /// Which connection to the private tier is up (`Some(0)` for ever in one process).
    pub fn watch(&self) -> watch::Receiver<Option<u64>> {
        match &self.0 {
            Inner::Local(_, up) => up.subscribe(),
            Inner::Remote(client) => client.watch(),
        }
    }

    /// The time the public tier shows (the core's clock in one process, so tests can move it).
    pub fn now_ms(&self) -> i64 {
        match &self.0 {
            Inner::Local(core, _) => core.clock().now_ms(),
            Inner::Remote(_) => crate::clock::now_ms(),
        }
    }

    /// Whether CMLS and the bank are the built-in stand-ins.
    pub fn sandbox(&self) -> bool {
        match &self.0 {
            Inner::Local(core, _) => core.cmls().is_sandbox() || core.bank().is_sandbox(),
            Inner::Remote(client) => client.sandbox(),
        }
    }

    async fn ask<T: DeserializeOwned>(client: &CoreClient, call: Call) -> Result<T, CoreError> {
        decode(&client.call(call).await?.0)
    }

    pub async fn register(&self, form: RegisterForm) -> Result<Registered, CoreError> {
        match &self.0 {
            Inner::Local(core, _) => core.register(form).await,
            Inner::Remote(client) => Self::ask(client, Call::Register { form }).await,
        }
    }

    /// The published signing keys.
    pub async fn keys(&self) -> Result<Vec<SigningKey>, CoreError> {
        match &self.0 {
            Inner::Local(core, _) => Ok(core.keys().iter().map(crate::core::signing_key).collect()),
            Inner::Remote(client) => Self::ask(client, Call::Keys {}).await,
        }
    }

    /// An item's public status by serial.
    pub async fn item_status(&self, serial: String) -> Result<ItemStatusPublic, CoreError> {
        match &self.0 {
            Inner::Local(core, _) => core.item_status_public(serial).await,
            Inner::Remote(client) => Self::ask(client, Call::ItemStatus { serial }).await,
        }
    }

    /// Check a hello and open its link; the grant and the connection it belongs to.
    pub async fn open_session(
        &self,
        hello: SessionHello,
        beats: u32,
    ) -> Result<(SessionGrant, u64), CoreError> {
        match &self.0 {
            Inner::Local(core, _) => Ok((core.open_session(hello, LOCAL, beats).await?, 0)),
            Inner::Remote(client) => {
                let (value, connection) = client.call(Call::OpenSession { hello, beats }).await?;
                Ok((decode(&value)?, connection))
            }
        }
    }

    /// The next heartbeats of a link.
    pub async fn beats(
        &self,
        session: Uuid,
        first_seq: u64,
        count: u32,
    ) -> Result<Vec<BeatTicket>, CoreError> {
        match &self.0 {
            Inner::Local(core, _) => core.beats(session, LOCAL, first_seq, count),
            Inner::Remote(client) => {
                Self::ask(
                    client,
                    Call::Beats {
                        session,
                        first_seq,
                        count,
                    },
                )
                .await
            }
        }
    }

    /// One request of a link (already parsed here from `plain`, the plaintext the client
    /// sealed); the response's JSON. Never fails: a lost core is an `unavailable` response.
    pub async fn handle(
        &self,
        session: Uuid,
        request: Request,
        canonical: Vec<u8>,
        plain: Vec<u8>,
    ) -> Vec<u8> {
        match &self.0 {
            Inner::Local(core, _) => core
                .handle_on(session, LOCAL, request, canonical)
                .await
                .to_json(),
            Inner::Remote(client) => {
                let error = |e: CoreError| {
                    Response::error(
                        request.op.name(),
                        &request.id.to_string(),
                        e.code(),
                        &e.public_message(),
                    )
                    .to_json()
                };
                // The link parsed it already: it is JSON.
                let Some(plain) = String::from_utf8(plain)
                    .ok()
                    .and_then(|p| RawValue::from_string(p).ok())
                else {
                    return error(CoreError::refused(codes::BAD_REQUEST, "not JSON"));
                };
                let call = Call::Handle {
                    session,
                    request: plain,
                };
                match client.call(call).await {
                    Ok((json, _)) => String::from(Box::<str>::from(json)).into_bytes(),
                    Err(e) => error(e),
                }
            }
        }
    }

    /// A link ended.
    /// Reports this process's links to the private tier; the answer names those to end.
    pub async fn report_links(&self, reports: Vec<LinkReport>) -> Result<Vec<LinkEnd>, CoreError> {
        match &self.0 {
            Inner::Local(core, _) => Ok(core.report_links(LOCAL, reports)),
            Inner::Remote(client) => Self::ask(client, Call::ReportLinks { reports }).await,
        }
    }

    pub async fn close_session(&self, session: Uuid) {
        match &self.0 {
            Inner::Local(core, _) => core.close_session(session, LOCAL).await,
            Inner::Remote(client) => {
                // A lost core has already forgotten the link.
                let _ = client.call(Call::CloseSession { session }).await;
            }
        }
    }
}
