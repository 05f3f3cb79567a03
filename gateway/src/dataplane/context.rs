//! What every step of the request path shares: the listener's state ([`DataPlane`]), the
//! per-request facts ([`Ctx`]) and the shape of every answer the gateway makes itself
//! ([`json_error`]).
//!
//! Imports only [`crate::reload`]'s [`Gateway`](crate::reload::Gateway); the parent,
//! [`serve`](super::serve) and [`aggregate`](super::aggregate) import it.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::response::{IntoResponse, Response};
use http::header::HeaderValue;
use http::{Method as HttpMethod, StatusCode};

/// The state of the customer listener.
#[derive(Debug, Clone)]
pub struct DataPlane {
    pub gateway: Arc<crate::reload::Gateway>,
}

/// Per-request facts that every step and the access log use.
#[derive(Debug, Clone)]
pub(super) struct Ctx {
    pub(super) request_id: HeaderValue,
    pub(super) traceparent: HeaderValue,
    pub(super) client_ip: IpAddr,
    pub(super) host: String,
    pub(super) method: HttpMethod,
    pub(super) path: String,
    pub(super) start: Instant,
}

pub(super) fn json_error(ctx: &Ctx, status: StatusCode, code: &str, message: &str) -> Response {
    let body = serde_json::json!({
        "error": code,
        "message": message,
        "request_id": ctx.request_id.to_str().unwrap_or_default(),
    });
    (status, axum::Json(body)).into_response()
}
