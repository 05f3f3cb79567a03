//! What every step of the request path shares: the listener's state ([`DataPlane`]), the
//! per-request facts ([`Ctx`]) and the shape of every answer the gateway makes itself
//! ([`json_error`]).
//!
//! Imports only [`crate::reload`]'s [`Gateway`](crate::reload::Gateway) and
//! [`crate::logging`]'s request ids; the parent,
//! [`serve`](super::serve) and [`aggregate`](super::aggregate) import it.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::response::{IntoResponse, Response};
use http::header::HeaderValue;
use http::{Method as HttpMethod, StatusCode};

use crate::logging::{ClientAddressLog, RequestLog};

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
    /// The TCP peer (a trusted proxy's address when one is in front).
    pub(super) peer: IpAddr,
    pub(super) client_ip: IpAddr,
    /// The request's host, as the client named it (empty when it is not visible ASCII).
    pub(super) host: HeaderValue,
    pub(super) method: HttpMethod,
    pub(super) path: ReqPath,
    pub(super) start: Instant,
    /// The client connection's own upstream connections, when it may have them.
    pub(super) pinned: Option<Arc<crate::upstream::Pinned>>,
}

impl Ctx {
    pub(super) fn host(&self) -> &str {
        self.host.to_str().unwrap_or_default()
    }

    /// What every log line about this request names it by, with its client as `policy`
    /// allows.
    pub(super) fn log<'a>(&'a self, policy: &'a ClientAddressLog) -> RequestLog<'a> {
        RequestLog::new(
            self.request_id.to_str().unwrap_or_default(),
            // version "-" trace-id "-" ...: the 32 hex digits of the trace id.
            self.traceparent
                .to_str()
                .unwrap_or_default()
                .get(3..35)
                .unwrap_or_default(),
            self.client_ip,
            policy,
        )
    }
}

/// The request's normalized path: the request target's own bytes when normalizing changed
/// nothing (the common case, no copy), else the normalized text.
#[derive(Debug, Clone)]
pub(super) enum ReqPath {
    Raw(http::uri::PathAndQuery),
    Normalized(String),
}

impl std::ops::Deref for ReqPath {
    type Target = str;
    fn deref(&self) -> &str {
        match self {
            ReqPath::Raw(p) => p.path(),
            ReqPath::Normalized(s) => s,
        }
    }
}

impl std::fmt::Display for ReqPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self)
    }
}

pub(super) fn json_error(ctx: &Ctx, status: StatusCode, code: &str, message: &str) -> Response {
    let body = serde_json::json!({
        "error": code,
        "message": message,
        "request_id": ctx.request_id.to_str().unwrap_or_default(),
    });
    (status, axum::Json(body)).into_response()
}
