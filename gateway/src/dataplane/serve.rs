//! Steps 4 to 10 of a matched route (see the [data plane](super)): kill switch, CORS, rate
//! limits, auth, backend choice and the proxied request, with the answers to a client's
//! or a backend's failure.
//!
//! Owns the header hygiene (a client's copies of the gateway's own headers are dropped)
//! and the 413 and 429 answers.
//!
//! Imports [`context`](super::context) (the request's facts and the JSON error answer),
//! [`aggregate`](super::aggregate), and what the request path uses; never the parent.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use http::StatusCode;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use super::aggregate::aggregate;
use super::context::{Ctx, DataPlane, json_error};
use crate::auth;
use crate::metrics::{AuthLabels, Metrics, RouteLabels, UpstreamLabels};
use crate::ratelimit::{self, BoundedLimiter, Decision};
use crate::reload::Loaded;
use crate::runtime::{RouteRuntime, Runtime, Target};
use crate::split::{Choice, Split};
use crate::upstream::{self, Failure, Outgoing, OutgoingBody, Upstream};
use fleetgate_bundle::bundle::RateLimitKey;
use fleetgate_bundle::route::PathTemplate;

/// Counts and logs a request whose client went away before its answer: the server drops
/// the request's future, so nothing else would.
struct AbortGuard<'a> {
    plane: &'a DataPlane,
    route: &'a RouteRuntime,
    digest: &'a str,
    ctx: &'a Ctx,
    armed: bool,
}

impl Drop for AbortGuard<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let shared = self.plane.gateway.shared();
        shared.metrics.client_error(&self.route.name, "aborted");
        // The access log line's fields, as `finish` writes them.
        let log = self.ctx.log(&shared.options.log_client_address);
        tracing::info!(
            target: "fleetgate::access",
            request_id = log.request_id,
            trace_id = log.trace_id,
            client = log.client(),
            method = crate::metrics::method_label(&self.ctx.method),
            route = %self.route.name,
            path_template = %self.route.path_template,
            status = 499u16,
            aborted = true,
            duration_ms = self.ctx.start.elapsed().as_secs_f64() * 1000.0,
            digest = self.digest,
        );
    }
}

pub(super) async fn serve_route<K: AsRef<str>>(
    plane: &DataPlane,
    loaded: &Arc<Loaded>,
    index: usize,
    params: &[(K, String)],
    ctx: &Ctx,
    req: Request,
) -> Response {
    let mut guard = AbortGuard {
        plane,
        route: &loaded.runtime.routes[index],
        digest: loaded.digest.short(),
        ctx,
        armed: true,
    };
    let resp = serve_route_inner(plane, loaded, index, params, ctx, req).await;
    guard.armed = false;
    resp
}

async fn serve_route_inner<K: AsRef<str>>(
    plane: &DataPlane,
    loaded: &Arc<Loaded>,
    index: usize,
    params: &[(K, String)],
    ctx: &Ctx,
    mut req: Request,
) -> Response {
    let rt = &loaded.runtime;
    let route = &rt.routes[index];
    let m = &plane.gateway.shared().metrics;
    if let Some(status) = route.disabled {
        return json_error(
            ctx,
            status,
            "route_disabled",
            "this operation is switched off",
        );
    }
    // Claim headers are the gateway's to set; a client's copies, in any spelling, are
    // dropped on every route.
    strip_gateway_headers(req.headers_mut(), &rt.claim_headers);
    let mut rate_headers = None;
    if let Some(l) = &route.limiter
        && l.config.key != RateLimitKey::Subject
    {
        let key = ratelimit::client_key(&l.config.key, req.headers(), None, ctx.client_ip);
        let d = l.check(&key);
        if let Some(resp) = limited(ctx, route, l, d, m) {
            return resp;
        }
        rate_headers = Some((d, l.policy_value()));
    }
    let mut principal = None;
    if !route.requirements.is_empty() {
        match auth::authenticate(
            req.headers(),
            &route.requirements,
            &rt.issuers,
            &rt.verified,
        )
        .await
        {
            Ok(p) => principal = Some(p),
            Err(e) => {
                if let Some(why) = &e.unavailable {
                    let log = ctx.log(&plane.gateway.shared().options.log_client_address);
                    tracing::warn!(
                        request_id = log.request_id,
                        trace_id = log.trace_id,
                        route = %route.name,
                        issuer = %why.issuer,
                        reason = %why.reason,
                        "cannot verify the token: the issuer's keys are unavailable"
                    );
                }
                m.auth_rejected
                    .get_or_create(&AuthLabels {
                        route: route.name.clone(),
                        status: e.status,
                    })
                    .inc();
                let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::UNAUTHORIZED);
                let code = match e.status {
                    403 => "forbidden",
                    503 => "auth_unavailable",
                    _ => "unauthorized",
                };
                let mut resp = json_error(ctx, status, code, &e.description);
                if let Some(v) = e
                    .www_authenticate()
                    .and_then(|v| HeaderValue::from_str(&v).ok())
                {
                    resp.headers_mut().insert(header::WWW_AUTHENTICATE, v);
                }
                return resp;
            }
        }
    }
    if let Some(l) = &route.limiter
        && l.config.key == RateLimitKey::Subject
    {
        let subject = principal.as_ref().and_then(|p| p.subject.as_deref());
        let key = ratelimit::client_key(&l.config.key, req.headers(), subject, ctx.client_ip);
        let d = l.check(&key);
        if let Some(resp) = limited(ctx, route, l, d, m) {
            return resp;
        }
        rate_headers = Some((d, l.policy_value()));
    }
    if let Some(len) = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        && len > route.max_body
    {
        return too_large(ctx, route);
    }

    // Headers for the backend.
    let (parts, body) = req.into_parts();
    let headers = backend_headers(plane, ctx, parts.headers, principal.as_ref());
    let values: BTreeMap<&str, &str> = params
        .iter()
        .map(|(k, v)| (k.as_ref(), v.as_str()))
        .collect();
    let query = parts.uri.query();

    let mut resp = match &route.target {
        Target::Split(split) => {
            match proxy_split(
                plane,
                rt,
                route,
                split,
                ctx,
                headers,
                &values,
                query,
                &parts.method,
                body,
            )
            .await
            {
                Ok(resp) => resp,
                Err(refused) => return refused,
            }
        }
        Target::Aggregate(agg) => {
            aggregate(
                plane,
                rt,
                route,
                agg,
                &parts.method,
                &headers,
                &values,
                query,
                ctx,
            )
            .await
        }
    };
    if let Some((d, policy)) = rate_headers {
        d.headers(policy, resp.headers_mut());
    }
    resp
}

/// The request's headers as the backend gets them: hop-by-hop and `Host` removed, a
/// client's own forwarding headers dropped unless it is a trusted proxy, the gateway's
/// forwarding headers, request id, trace context and forwarded claims added.
fn backend_headers(
    plane: &DataPlane,
    ctx: &Ctx,
    mut headers: HeaderMap,
    principal: Option<&auth::Principal>,
) -> HeaderMap {
    upstream::strip_hop_by_hop(&mut headers);
    headers.remove(header::HOST);
    let peer = ctx.peer;
    // Forwarding headers are a proxy's to write: from a client that is not a trusted proxy
    // they are claims about itself, dropped before the gateway writes its own.
    if !plane
        .gateway
        .shared()
        .options
        .trusted_proxies
        .contains(peer)
    {
        for h in &upstream::FORWARDING {
            headers.remove(h);
        }
    }
    upstream::add_forwarded(&mut headers, peer, &ctx.host);
    headers.insert(
        HeaderName::from_static("x-request-id"),
        ctx.request_id.clone(),
    );
    headers.insert(
        HeaderName::from_static("traceparent"),
        ctx.traceparent.clone(),
    );
    if let Some(p) = principal {
        for (name, value) in &p.forward {
            if let (Ok(n), Ok(v)) = (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_str(value),
            ) {
                headers.insert(n, v);
            }
        }
    }
    headers
}

/// Step 10 for a route with backends: one backend chosen (variants, canary weights,
/// stickiness), the request sent with the route's retries and timeout. `Err`: refused
/// before any backend was asked (answered without rate-limit headers).
#[allow(clippy::too_many_arguments)]
async fn proxy_split(
    plane: &DataPlane,
    rt: &Runtime,
    route: &RouteRuntime,
    split: &Split,
    ctx: &Ctx,
    headers: HeaderMap,
    values: &BTreeMap<&str, &str>,
    query: Option<&str>,
    method: &http::Method,
    body: Body,
) -> Result<Response, Response> {
    let m = &plane.gateway.shared().metrics;
    let Some((backend, choice)) = split.choose(&headers, fastrand::u64(..)) else {
        return Err(json_error(
            ctx,
            StatusCode::SERVICE_UNAVAILABLE,
            "no_backend",
            "no backend takes traffic for this route",
        ));
    };
    let Some(up) = rt.backends.get(backend) else {
        return Err(json_error(
            ctx,
            StatusCode::BAD_GATEWAY,
            "bad_gateway",
            "the backend is not configured",
        ));
    };
    let uri = match &route.upstream_path {
        Some(t) => up.uri_with(|out| PathTemplate::render_into(t, values, out), query),
        None => up.uri(&ctx.path, query),
    };
    let Ok(uri) = uri else {
        return Err(json_error(
            ctx,
            StatusCode::BAD_REQUEST,
            "bad_request",
            "the request path cannot be forwarded",
        ));
    };
    let (retries, backoff) = route
        .retries
        .as_ref()
        .map(|r| {
            (
                r.attempts,
                r.backoff
                    .map(|b| b.as_std())
                    .unwrap_or(Duration::from_millis(25)),
            )
        })
        .unwrap_or((0, Duration::ZERO));
    // Set when the client's body streams to the backend.
    let mut watch = None;
    let body = if retries > 0 && upstream::idempotent(method) {
        match tokio::time::timeout(route.timeout, upstream::buffer(body, route.max_body)).await {
            Ok(Ok(b)) => OutgoingBody::Buffered(b),
            Ok(Err(Failure::BodyTooLarge)) => {
                return Err(too_large(ctx, route));
            }
            Ok(Err(f)) => return Err(client_fault(plane, route, ctx, f.kind())),
            Err(_) => return Err(client_fault(plane, route, ctx, "body_timeout")),
        }
    } else if hyper::body::Body::is_end_stream(&body) {
        OutgoingBody::Empty
    } else {
        let w = Arc::new(upstream::BodyWatch::default());
        watch = Some(w.clone());
        OutgoingBody::Stream(
            Body::new(upstream::WatchedBody::new(body, w)),
            route.max_body,
        )
    };
    route.series.sent(m, &up.name);
    let timeout = up.timeout.map_or(route.timeout, |t| t.min(route.timeout));
    let out = Outgoing {
        method: method.clone(),
        uri,
        headers,
        body,
    };
    let sent_at = std::time::Instant::now();
    Ok(
        match upstream::send(up, ctx.pinned.as_deref(), out, timeout, retries, backoff).await {
            Ok(r) => {
                route
                    .series
                    .responded(m, &up.name, sent_at.elapsed().as_secs_f64());
                let (mut p, b) = r.into_parts();
                upstream::strip_hop_by_hop(&mut p.headers);
                if let Choice::Variant(name) = choice
                    && let Ok(v) = HeaderValue::from_str(name)
                {
                    p.headers
                        .insert(HeaderName::from_static("x-fleetgate-variant"), v);
                }
                Response::from_parts(p, Body::new(b))
            }
            Err(Failure::ClientBody(kind)) => client_fault(plane, route, ctx, kind),
            // Out of time while the backend was still waiting for the client's body.
            Err(Failure::Timeout) if watch.is_some_and(|w| w.waiting_on_client()) => {
                client_fault(plane, route, ctx, "body_timeout")
            }
            Err(f) => upstream_failure(plane, rt, route, up, ctx, f),
        },
    )
}

/// A request that failed through the client's fault (`kind` of [`CLIENT_ERROR_KINDS`]):
/// a 4xx, counted as a client error, never as an upstream error or a 5xx.
fn client_fault(
    plane: &DataPlane,
    route: &RouteRuntime,
    ctx: &Ctx,
    kind: &'static str,
) -> Response {
    plane
        .gateway
        .shared()
        .metrics
        .client_error(&route.name, kind);
    let log = ctx.log(&plane.gateway.shared().options.log_client_address);
    tracing::info!(
        request_id = log.request_id,
        trace_id = log.trace_id,
        route = %route.name,
        kind,
        "request failed through the client's fault"
    );
    match kind {
        "body_timeout" => json_error(
            ctx,
            StatusCode::REQUEST_TIMEOUT,
            "request_timeout",
            "the request body did not arrive in time",
        ),
        "body_incomplete" => json_error(
            ctx,
            StatusCode::BAD_REQUEST,
            "bad_request",
            "the request body ended before its announced length",
        ),
        _ => json_error(
            ctx,
            StatusCode::BAD_REQUEST,
            "bad_request",
            "the request body is malformed",
        ),
    }
}

fn upstream_failure(
    plane: &DataPlane,
    rt: &Runtime,
    route: &RouteRuntime,
    up: &Upstream,
    ctx: &Ctx,
    f: Failure,
) -> Response {
    if let Failure::BodyTooLarge = f {
        return too_large(ctx, route);
    }
    rt.counts.upstream_errors.fetch_add(1, Ordering::Relaxed);
    plane
        .gateway
        .shared()
        .metrics
        .upstream_errors
        .get_or_create(&UpstreamLabels {
            route: route.name.clone(),
            backend: up.name.clone(),
            kind: f.kind(),
        })
        .inc();
    let detail = match &f {
        Failure::Connect(s) | Failure::Other(s) => s.as_str(),
        _ => "",
    };
    let log = ctx.log(&plane.gateway.shared().options.log_client_address);
    tracing::warn!(
        request_id = log.request_id,
        trace_id = log.trace_id,
        route = %route.name,
        backend = %up.name,
        kind = f.kind(),
        detail,
        "upstream failed"
    );
    match f {
        Failure::Timeout => json_error(
            ctx,
            StatusCode::GATEWAY_TIMEOUT,
            "upstream_timeout",
            "the service did not answer in time",
        ),
        _ => json_error(
            ctx,
            StatusCode::BAD_GATEWAY,
            "bad_gateway",
            "the service could not be reached",
        ),
    }
}

/// 413 for a body over the route's limit, announced or streamed.
fn too_large(ctx: &Ctx, route: &RouteRuntime) -> Response {
    json_error(
        ctx,
        StatusCode::PAYLOAD_TOO_LARGE,
        "body_too_large",
        &format!("the request body is larger than {} bytes", route.max_body),
    )
}

/// Whether `name` is another spelling of a header the gateway sets itself (forwarded claims,
/// `x-fleetgate-*`, the forwarding headers): `_` for `-`. CGI, WSGI, Rack and PHP read
/// `X_Fleetgate_Tenant` as `X-Fleetgate-Tenant`, so such a header would pose as the gateway's.
fn spoofs_gateway_header(name: &HeaderName, claim_headers: &[HeaderName]) -> bool {
    let n = name.as_str();
    if n.starts_with("x-fleetgate-") {
        return true;
    }
    if !n.contains('_') {
        return false;
    }
    let dashed = n.replace('_', "-");
    dashed.starts_with("x-fleetgate-")
        || dashed.starts_with("x-forwarded-")
        || matches!(dashed.as_str(), "x-request-id" | "x-real-ip" | "forwarded")
        || claim_headers.iter().any(|h| h.as_str() == dashed)
}

/// Removes every client copy of a header the gateway sets: exact names and other spellings.
fn strip_gateway_headers(headers: &mut HeaderMap, claim_headers: &[HeaderName]) {
    for h in claim_headers {
        headers.remove(h);
    }
    let spoofed: Vec<HeaderName> = headers
        .keys()
        .filter(|n| spoofs_gateway_header(n, claim_headers))
        .cloned()
        .collect();
    for h in spoofed {
        headers.remove(h);
    }
}

fn limited(
    ctx: &Ctx,
    route: &RouteRuntime,
    limiter: &BoundedLimiter,
    d: Decision,
    m: &Metrics,
) -> Option<Response> {
    if let Decision::Limited { .. } = d {
        m.rate_limited
            .get_or_create(&RouteLabels {
                route: route.name.clone(),
            })
            .inc();
        let mut resp = json_error(
            ctx,
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            "too many requests; retry later",
        );
        d.headers(limiter.policy_value(), resp.headers_mut());
        return Some(resp);
    }
    None
}
