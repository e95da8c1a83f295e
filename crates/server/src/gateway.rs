//! The public tier's HTTP face: the router (registration, keys, item status, the link upgrade, a
//! small home page) and the firewall's limits. One function, [`error_response`], turns every
//! refusal into `{"error","message"}` with its status.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Extension, Path, Query, State, WebSocketUpgrade};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;

use crate::core::{Core, CoreError, RegisterForm};
use crate::link::{self, LinkConfig, Sessions};

/// Largest HTTP request body accepted (registration forms are < 1 KiB).
pub const MAX_BODY_BYTES: usize = 8 * 1024;
/// Registrations allowed per client address per minute.
pub const REGISTRATIONS_PER_MINUTE: u32 = 20;
/// Link logins (hello frames) allowed per client address per minute.
pub const LOGINS_PER_MINUTE: u32 = 120;

/// The peer address of a connection, added to each request by the server loop.
#[derive(Clone, Copy, Debug)]
pub struct Peer(pub SocketAddr);

/// A fixed-window counter per client address.
#[derive(Debug)]
pub struct RateLimit {
    per_minute: u32,
    windows: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

/// How many addresses a limiter remembers before it forgets expired windows.
const MAX_TRACKED_ADDRESSES: usize = 100_000;

impl RateLimit {
    pub fn new(per_minute: u32) -> RateLimit {
        RateLimit {
            per_minute,
            windows: Mutex::new(HashMap::new()),
        }
    }

    /// Count one attempt; false when the address is over its limit.
    pub fn allow(&self, ip: IpAddr) -> bool {
        let now = Instant::now();
        let mut map = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= MAX_TRACKED_ADDRESSES {
            map.retain(|_, (start, _)| now.duration_since(*start) < Duration::from_secs(60));
        }
        let entry = map.entry(ip).or_insert((now, 0));
        if now.duration_since(entry.0) >= Duration::from_secs(60) {
            *entry = (now, 0);
        }
        entry.1 = entry.1.saturating_add(1);
        entry.1 <= self.per_minute
    }
}

/// Everything the handlers share.
#[derive(Clone, Debug)]
pub struct AppState {
    pub core: Arc<Core>,
    pub sessions: Arc<Sessions>,
    pub link: LinkConfig,
    pub registrations: Arc<RateLimit>,
    pub logins: Arc<RateLimit>,
    pub sandbox: bool,
}

/// The router. Tests may drive it in memory; the server wraps it in TLS.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(home))
        .route("/v1/register", post(register))
        .route("/v1/keys", get(keys))
        .route("/v1/quote", get(quote))
        .route("/v1/items/{serial}/status", get(item_status))
        .route("/v1/link", get(link_upgrade))
        .with_state(state)
}

/// The one place that maps a refusal to an HTTP response.
pub fn error_response(e: &CoreError) -> Response {
    let status = match e {
        CoreError::Refused { code, .. } if *code == "user_exists" => StatusCode::CONFLICT,
        CoreError::Refused { code, .. } if *code == "rate_limited" => StatusCode::TOO_MANY_REQUESTS,
        CoreError::Refused { .. } => StatusCode::BAD_REQUEST,
        CoreError::BadCredentials => StatusCode::UNAUTHORIZED,
        CoreError::Locked { .. } => StatusCode::FORBIDDEN,
        CoreError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        CoreError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
    };
    (
        status,
        axum::Json(json!({"error": e.code(), "message": e.public_message()})),
    )
        .into_response()
}

async fn home(State(state): State<AppState>) -> Response {
    let mode = if state.sandbox {
        "<p><strong>Sandbox mode:</strong> the licensing system and the bank are built-in stand-ins; no real postage or money moves.</p>"
    } else {
        ""
    };
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        format!(
            "<!doctype html><html lang=en><meta charset=utf-8><title>Stampline</title>\
             <h1>Stampline</h1><p>Secure on-line postage. Clients link at <code>/v1/link</code>; \
             public keys are at <a href=\"/v1/keys\">/v1/keys</a>.</p>{mode}</html>"
        ),
    )
        .into_response()
}

async fn register(
    State(state): State<AppState>,
    Extension(peer): Extension<Peer>,
    body: Bytes,
) -> Response {
    if !state.registrations.allow(peer.0.ip()) {
        return error_response(&CoreError::Refused {
            code: "rate_limited",
            message: "too many registrations from this address; wait a minute".into(),
        });
    }
    if body.len() > MAX_BODY_BYTES {
        return error_response(&CoreError::Refused {
            code: "too_large",
            message: format!("request body over {MAX_BODY_BYTES} bytes"),
        });
    }
    let form: RegisterForm = match serde_json::from_slice(&body) {
        Ok(f) => f,
        Err(e) => {
            return error_response(&CoreError::Refused {
                code: "bad_request",
                message: format!("bad registration: {e}"),
            });
        }
    };
    match state.core.register(form).await {
        Ok(r) => (
            StatusCode::CREATED,
            axum::Json(
                json!({"user": r.user, "license_id": r.license_id, "device_id": r.device_id}),
            ),
        )
            .into_response(),
        Err(e) => error_response(&e),
    }
}

/// `GET /v1/quote?class=C&weight_oz=W&from_zip=Z&to_zip=Z`: prices are public, no login.
#[derive(Debug, serde::Deserialize)]
struct QuoteQuery {
    class: String,
    weight_oz: String,
    from_zip: Option<String>,
    to_zip: Option<String>,
}

async fn quote(query: Result<Query<QuoteQuery>, QueryRejection>) -> Response {
    let Ok(Query(q)) = query else {
        return error_response(&CoreError::Refused {
            code: "bad_request",
            message: "give class, weight_oz, and for zoned classes from_zip and to_zip".into(),
        });
    };
    match crate::rating::quote(
        &q.class,
        &q.weight_oz,
        q.from_zip.as_deref(),
        q.to_zip.as_deref(),
    ) {
        Ok(quote) => axum::Json(crate::rating::quote_json(&quote)).into_response(),
        Err(e) => error_response(&e),
    }
}

async fn keys(State(state): State<AppState>) -> Response {
    let keys: Vec<serde_json::Value> = state
        .core
        .keys()
        .iter()
        .map(crate::core::admin::key_json)
        .collect();
    axum::Json(keys).into_response()
}

async fn item_status(State(state): State<AppState>, Path(serial): Path<String>) -> Response {
    match state.core.item_status(serial.clone()).await {
        Ok(status) => {
            let status = status.map_or("unknown", |s| s.as_str());
            axum::Json(json!({"serial": serial, "status": status})).into_response()
        }
        Err(e) => error_response(&e),
    }
}

async fn link_upgrade(
    State(state): State<AppState>,
    Extension(peer): Extension<Peer>,
    ws: WebSocketUpgrade,
) -> Response {
    // Frames just over our limit still arrive, so that the link can answer with a clear code;
    // far larger ones are cut by the WebSocket layer.
    ws.max_message_size(2 * stampline_wire::MAX_FRAME_BYTES)
        .max_frame_size(2 * stampline_wire::MAX_FRAME_BYTES)
        .read_buffer_size(stampline_wire::LINK_READ_BUFFER_BYTES)
        .on_upgrade(move |socket| link::run(socket, state, peer.0))
}
