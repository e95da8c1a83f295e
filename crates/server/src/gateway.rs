//! The public tier's HTTP face: the router (registration, keys, item status, the link upgrade, a
//! small home page), each route behind the firewall's guard (its rate, then the body's size and
//! deadline: crate::firewall). One function, [`error_response`], turns every refusal into
//! `{"error","message"}` with its status.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Extension, Path, Query, State, WebSocketUpgrade};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Serialize;
use stampline_wire::codes;
use stampline_wire::replies::{HttpError, RegisterReply};

use crate::core::RegisterForm;
use crate::error::CoreError;
use crate::firewall::{RateKind, Ticket, guard};
use crate::link;
pub use crate::state::{AppState, Peer};

/// The router. Every route but the link is behind the firewall's guard (the link's hello has its
/// own rate: crate::link). The server adds each connection's [`Peer`] and [`Ticket`].
pub fn router(state: AppState) -> Router {
    let fw =
        |class| axum::middleware::from_fn_with_state((Arc::clone(&state.firewall), class), guard);
    Router::new()
        .route("/", get(home).layer(fw(RateKind::Lookups)))
        .route(
            "/v1/register",
            post(register).layer(fw(RateKind::Registrations)),
        )
        .route("/v1/keys", get(keys).layer(fw(RateKind::Lookups)))
        .route("/v1/quote", get(quote).layer(fw(RateKind::Lookups)))
        .route(
            "/v1/items/{serial}/status",
            get(item_status).layer(fw(RateKind::Lookups)),
        )
        .route("/v1/link", get(link_upgrade))
        .with_state(state)
}

/// The one place that maps a refusal to an HTTP response.
pub fn error_response(e: &CoreError) -> Response {
    let status = match e {
        CoreError::Refused { code, .. } if *code == codes::USER_EXISTS => StatusCode::CONFLICT,
        CoreError::Refused { code, .. } if *code == codes::RATE_LIMITED => {
            StatusCode::TOO_MANY_REQUESTS
        }
        CoreError::Refused { code, .. } if *code == codes::TOO_LARGE => {
            StatusCode::PAYLOAD_TOO_LARGE
        }
        CoreError::Refused { code, .. } if *code == codes::REQUEST_TIMEOUT => {
            StatusCode::REQUEST_TIMEOUT
        }
        CoreError::Refused { code, .. } if *code == codes::BUSY => StatusCode::SERVICE_UNAVAILABLE,
        CoreError::Refused { .. } => StatusCode::BAD_REQUEST,
        CoreError::BadCredentials => StatusCode::UNAUTHORIZED,
        CoreError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        CoreError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
    };
    json(
        status,
        &HttpError {
            error: e.code().into(),
            message: e.public_message(),
        },
    )
}

/// A JSON body, its keys in the order every answer of this server has (sorted).
fn json<T: Serialize>(status: StatusCode, body: &T) -> Response {
    match serde_json::to_value(body) {
        Ok(value) => (status, axum::Json(value)).into_response(),
        Err(e) => error_response(&CoreError::Internal(format!("answer: {e}"))),
    }
}

async fn home(State(state): State<AppState>) -> Response {
    let mode = if state.tier.sandbox() {
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

/// `POST /v1/register`: the guard has counted it against the registration rate and read its body
/// (within the size limit and the deadline).
async fn register(State(state): State<AppState>, body: Bytes) -> Response {
    let form: RegisterForm = match serde_json::from_slice(&body) {
        Ok(f) => f,
        Err(e) => {
            return error_response(&CoreError::refused(
                codes::BAD_REQUEST,
                format!("bad registration: {e}"),
            ));
        }
    };
    match state.tier.register(form).await {
        Ok(r) => json(
            StatusCode::CREATED,
            &RegisterReply {
                user: r.user,
                license_id: r.license_id,
                device_id: r.device_id,
            },
        ),
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
        return error_response(&CoreError::refused(
            codes::BAD_REQUEST,
            "give class, weight_oz, and for zoned classes from_zip and to_zip",
        ));
    };
    match crate::rating::quote(
        &q.class,
        &q.weight_oz,
        q.from_zip.as_deref(),
        q.to_zip.as_deref(),
    ) {
        Ok(quote) => json(StatusCode::OK, &crate::rating::quote_reply(&quote)),
        Err(e) => error_response(&e),
    }
}

async fn keys(State(state): State<AppState>) -> Response {
    match state.tier.keys().await {
        Ok(keys) => json(StatusCode::OK, &keys),
        Err(e) => error_response(&e),
    }
}

async fn item_status(State(state): State<AppState>, Path(serial): Path<String>) -> Response {
    match state.tier.item_status(serial).await {
        Ok(status) => json(StatusCode::OK, &status),
        Err(e) => error_response(&e),
    }
}

async fn link_upgrade(
    State(state): State<AppState>,
    Extension(peer): Extension<Peer>,
    Extension(ticket): Extension<Arc<Ticket>>,
    ws: WebSocketUpgrade,
) -> Response {
    // Frames just over our limit still arrive, so that the link can answer with a clear code;
    // far larger ones are cut by the WebSocket layer.
    ws.max_message_size(2 * stampline_wire::MAX_FRAME_BYTES)
        .max_frame_size(2 * stampline_wire::MAX_FRAME_BYTES)
        .read_buffer_size(stampline_wire::LINK_READ_BUFFER_BYTES)
        .on_upgrade(move |socket| link::run(socket, state, peer.0, ticket))
}
