//! The customer-facing listener. A request goes through these steps, each with its reason:
//!
//! 1. **Request id and trace context**: accepted from the client when well formed, generated
//!    otherwise, and passed upstream, so one id follows the request through every log.
//! 2. **The bundle**: the request holds the bundle it started with until it ends; a reload
//!    never changes a request in flight. No bundle yet: 503.
//! 3. **Routing** (pure, [`fleetgate_bundle::route::RouteTable`]): 404 or 405 with `Allow`.
//! 4. **Kill switch / flag**: a switched-off route answers its status without a backend.
//! 5. **CORS** (tower-http), which also answers preflights for the route.
//! 6. **Rate limit by IP or header** before auth, so unauthenticated floods are cut cheaply.
//! 7. **Auth**: bearer token, issuer, key, claims, scopes ([`crate::auth`]).
//! 8. **Rate limit by subject**, which needs the verified token.
//! 9. **Backend choice** (pure, [`crate::split`]): variants, canary weights, stickiness.
//! 10. **Proxy or aggregate** ([`crate::upstream`]).
//!
//! Every answer the gateway makes itself is a small JSON body; none carries internal
//! details (backend addresses, error chains), which go to the log with the request id.
//!
//! Imports the parts of the request path ([`crate::runtime`], [`crate::auth`], [`crate::idp`],
//! [`crate::ratelimit`], [`crate::split`], [`crate::upstream`], ...) and [`crate::reload`]'s
//! [`Gateway`](crate::reload::Gateway); nothing imports it but [`crate::server`].
//!
//! This file takes a request through steps 1 to 3 and writes the access log; steps 4 to 10
//! are `serve.rs`'s (aggregate routes `aggregate.rs`'s). What they all share (the listener's
//! state, the request's facts, the JSON error answer) is `context.rs`'s, which imports none
//! of them; the children never import this file.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::response::{IntoResponse, Response};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method as HttpMethod, StatusCode};
use tower::{Layer as _, ServiceExt as _};

use crate::idp;
use crate::metrics::RouteSeries;
use crate::reload::Loaded;
use fleetgate_bundle::bundle::Method;
use fleetgate_bundle::route::RouteMatch;

mod aggregate;
mod context;
mod serve;

pub use context::DataPlane;
use context::{Ctx, ReqPath, json_error};
use serve::serve_route;

/// The customer-facing router. Serve it with connect info (`into_make_service_with_connect_info::<SocketAddr>`).
pub fn router(gateway: Arc<crate::reload::Gateway>) -> axum::Router {
    axum::Router::new()
        .fallback(handle)
        .with_state(DataPlane { gateway })
}

/// The data plane's state, for [`serve`].
pub fn plane(gateway: Arc<crate::reload::Gateway>) -> DataPlane {
    DataPlane { gateway }
}

/// One request from `peer`, answered: what [`router`] does, without a router's dispatch
/// in front (the data plane has one handler; the listener calls it directly). The
/// peer travels in the request's context, not in its extensions.
pub async fn serve(plane: DataPlane, peer: SocketAddr, req: Request) -> Response {
    answer(plane, peer, None, req).await
}

/// [`serve`] for a request of a client connection that may own upstream connections
/// ([`crate::upstream::Pinned`], one per client connection; `None`: the pool only).
pub async fn serve_on(
    plane: DataPlane,
    peer: SocketAddr,
    pinned: Option<Arc<crate::upstream::Pinned>>,
    req: Request,
) -> Response {
    answer(plane, peer, pinned, req).await
}

/// `N` random bytes written as lowercase hex into `out` (2 * N bytes), never all zero (W3C
/// trace context forbids an all-zero trace or span id).
fn hex_id<const N: usize>(out: &mut [u8]) {
    let mut raw = [0u8; N];
    fastrand::fill(&mut raw);
    if raw.iter().all(|b| *b == 0) {
        raw[N - 1] = 1;
    }
    // Cannot fail: `out` is exactly twice as long as `raw`.
    let _ = hex::encode_to_slice(raw, out);
}

/// The client's `x-request-id` when it is a sane token, else a new one.
fn request_id(headers: &HeaderMap) -> HeaderValue {
    headers
        .get("x-request-id")
        .filter(|v| {
            let b = v.as_bytes();
            (1..=128).contains(&b.len())
                && b.iter()
                    .all(|c| c.is_ascii_alphanumeric() || b"-_.:".contains(c))
        })
        .cloned()
        .unwrap_or_else(|| {
            let mut id = [0u8; 32];
            hex_id::<16>(&mut id);
            HeaderValue::from_bytes(&id).unwrap_or(HeaderValue::from_static("0"))
        })
}

/// W3C trace context: keep the trace id and flags of a valid incoming `traceparent`, with
/// this gateway's own span id as the parent for the backend; start a trace otherwise.
fn traceparent(headers: &HeaderMap) -> HeaderValue {
    // version "-" trace-id "-" parent-id "-" flags
    let mut out = *b"00-00000000000000000000000000000000-0000000000000000-00";
    let lower_hex = |s: &[u8]| {
        s.iter()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))
    };
    let incoming = headers.get("traceparent").and_then(|v| {
        let v = v.to_str().ok()?.trim();
        let mut parts = v.split('-');
        let (version, trace, parent, flags) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        let valid = version.len() == 2
            && lower_hex(version.as_bytes())
            && version != "ff"
            && trace.len() == 32
            && lower_hex(trace.as_bytes())
            && trace.bytes().any(|b| b != b'0')
            && parent.len() == 16
            && lower_hex(parent.as_bytes())
            && parent.bytes().any(|b| b != b'0')
            && flags.len() == 2
            && lower_hex(flags.as_bytes());
        valid.then_some((trace, flags))
    });
    match incoming {
        Some((trace, flags)) => {
            out[3..35].copy_from_slice(trace.as_bytes());
            out[53..55].copy_from_slice(flags.as_bytes());
        }
        None => hex_id::<16>(&mut out[3..35]),
    }
    hex_id::<8>(&mut out[36..52]);
    HeaderValue::from_bytes(&out).unwrap_or(HeaderValue::from_static(
        "00-00000000000000000000000000000001-0000000000000001-00",
    ))
}

async fn handle(
    State(plane): State<DataPlane>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
) -> Response {
    answer(plane, peer, None, req).await
}

async fn answer(
    plane: DataPlane,
    peer: SocketAddr,
    pinned: Option<Arc<crate::upstream::Pinned>>,
    req: Request,
) -> Response {
    let headers = req.headers();
    // RFC 9112 3.2.2: a request in absolute form names its host in the target, and the
    // Host header is ignored. Its userinfo (`http://x@host/`) is no part of the host.
    let host = match req.uri().authority() {
        Some(a) => {
            let named = match a.port() {
                Some(port) => format!("{}:{port}", a.host()),
                None => a.host().to_string(),
            };
            HeaderValue::from_str(&named).ok()
        }
        None => headers.get(header::HOST).cloned(),
    }
    .filter(|h| h.to_str().is_ok())
    .unwrap_or(HeaderValue::from_static(""));
    let mut ctx = Ctx {
        request_id: request_id(headers),
        traceparent: traceparent(headers),
        peer: peer.ip().to_canonical(),
        client_ip: crate::client_addr::client_ip(
            peer.ip(),
            headers,
            &plane.gateway.shared().options.trusted_proxies,
        ),
        host,
        method: req.method().clone(),
        path: ReqPath::Normalized(String::new()),
        start: Instant::now(),
        pinned,
    };
    // One normalized path is routed, authorized, logged and forwarded.
    match crate::normalize::normalize_path(req.uri().path()) {
        Ok(Cow::Borrowed(_)) => {
            ctx.path = match req.uri().path_and_query() {
                Some(p) => ReqPath::Raw(p.clone()),
                None => ReqPath::Normalized("/".into()),
            }
        }
        Ok(Cow::Owned(p)) => ctx.path = ReqPath::Normalized(p),
        Err(why) => {
            ctx.path = ReqPath::Normalized("-".into());
            let resp = json_error(&ctx, StatusCode::BAD_REQUEST, "bad_path", &why.to_string());
            return finish(&plane, None, UNMATCHED, Counted::Unmatched, &ctx, resp);
        }
    }
    if let Some(why) = ambiguous_headers(req.headers()) {
        let resp = json_error(&ctx, StatusCode::BAD_REQUEST, "bad_request", why);
        return finish(&plane, None, UNMATCHED, Counted::Unmatched, &ctx, resp);
    }
    let Some(loaded) = plane.gateway.current() else {
        if plane.gateway.decommissioned().is_some() {
            // Every route, the identity provider's endpoints included: no token is issued
            // and none is accepted. 410 tells clients and caches not to come back.
            let mut resp = json_error(
                &ctx,
                StatusCode::GONE,
                "decommissioned",
                "this service has been decommissioned and is no longer available",
            );
            resp.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            return finish(&plane, None, UNMATCHED, Counted::Unmatched, &ctx, resp);
        }
        let resp = json_error(
            &ctx,
            StatusCode::SERVICE_UNAVAILABLE,
            "not_ready",
            "the gateway has no configuration loaded yet",
        );
        return finish(&plane, None, UNMATCHED, Counted::Unmatched, &ctx, resp);
    };
    if let Some(idp) = &loaded.runtime.idp
        && let Some(endpoint) = idp::Endpoint::of(&ctx.path)
    {
        let shared = plane.gateway.shared();
        let log = ctx.log(&shared.options.log_client_address);
        let (resp, token) =
            idp::serve(idp, endpoint, &shared.verifier, ctx.client_ip, &log, req).await;
        if let Some((client, result)) = token {
            shared.metrics.record_token(client, result);
        }
        // The endpoint's own fixed path: it matched one exactly.
        let path = idp::PATHS
            .into_iter()
            .find(|p| *p == &*ctx.path)
            .unwrap_or("-");
        return finish(
            &plane,
            Some(&loaded),
            (endpoint.name(), path),
            Counted::Named,
            &ctx,
            resp,
        );
    }
    let (route_idx, resp) = route_and_serve(&plane, &loaded, &ctx, req).await;
    let (named, counted) = match route_idx.map(|i| &loaded.runtime.routes[i]) {
        Some(r) => (
            (r.name.as_str(), r.path_template.as_str()),
            Counted::Route(&r.series),
        ),
        None => (UNMATCHED, Counted::Unmatched),
    };
    finish(&plane, Some(&loaded), named, counted, &ctx, resp)
}

/// The route name and path template of a request no route answered.
const UNMATCHED: (&str, &str) = ("-", "-");

/// Headers a request may carry at most once: with two, the gateway and the backend could
/// each act on a different one (RFC 9112 3.2 for Host; one credential per request).
fn ambiguous_headers(headers: &HeaderMap) -> Option<&'static str> {
    let twice = |name: &HeaderName| {
        let mut all = headers.get_all(name).iter();
        all.next().is_some() && all.next().is_some()
    };
    if twice(&header::HOST) {
        Some("more than one Host header")
    } else if twice(&header::AUTHORIZATION) {
        Some("more than one Authorization header")
    } else {
        None
    }
}

/// Which series a finished request is counted in.
#[derive(Clone, Copy)]
enum Counted<'a> {
    /// A route's resolved handles.
    Route(&'a RouteSeries),
    /// Looked up by name: the IdP's endpoints.
    Named,
    /// No route matched (`-`).
    Unmatched,
}

/// Metrics, counts and the access log for a finished request. `(route_name, path_template)`
/// name what answered it: a route, an IdP endpoint, or `-` for neither.
fn finish(
    plane: &DataPlane,
    loaded: Option<&Loaded>,
    (route_name, path_template): (&str, &str),
    counted: Counted<'_>,
    ctx: &Ctx,
    mut resp: Response,
) -> Response {
    let status = resp.status().as_u16();
    let m = &plane.gateway.shared().metrics;
    let elapsed = ctx.start.elapsed();
    let secs = elapsed.as_secs_f64();
    match counted {
        Counted::Route(series) => series.answered(m, &ctx.method, status, secs),
        Counted::Unmatched => m.unmatched.answered(m, &ctx.method, status, secs),
        Counted::Named => m.answered(route_name, &ctx.method, status, secs),
    }
    if let Some(l) = loaded {
        l.runtime.counts.record(status);
    }
    resp.headers_mut().insert(
        HeaderName::from_static("x-request-id"),
        ctx.request_id.clone(),
    );
    // The route's template, never the request's path, query or host: those carry whatever
    // the client put in them (emails, tokens). The client's address as the policy allows.
    let log = ctx.log(&plane.gateway.shared().options.log_client_address);
    tracing::info!(
        target: "fleetgate::access",
        request_id = log.request_id,
        trace_id = log.trace_id,
        client = log.client(),
        method = crate::metrics::method_label(&ctx.method),
        route = route_name,
        path_template,
        status,
        duration_ms = elapsed.as_secs_f64() * 1000.0,
        digest = loaded.map(|l| l.digest.short()).unwrap_or("-"),
    );
    resp
}

async fn route_and_serve(
    plane: &DataPlane,
    loaded: &Arc<Loaded>,
    ctx: &Ctx,
    req: Request,
) -> (Option<usize>, Response) {
    let compiled = &loaded.compiled;
    let Some(method) = Method::parse(req.method().as_str()) else {
        return (
            None,
            json_error(
                ctx,
                StatusCode::NOT_IMPLEMENTED,
                "method_not_supported",
                "this method is not supported",
            ),
        );
    };
    let found = compiled.table.find(ctx.host(), method, &ctx.path);
    let (index, params) = match found {
        RouteMatch::Found { route, params } => (route, params),
        RouteMatch::MethodNotAllowed { allowed } => {
            // A CORS preflight asks about the method it will use, not OPTIONS.
            if method == Method::Options
                && let Some(preflight) = preflight(loaded, ctx, &req)
            {
                return preflight.await;
            }
            let allow = allowed
                .iter()
                .map(|m| m.as_str())
                .collect::<Vec<_>>()
                .join(", ");
            let mut resp = json_error(
                ctx,
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                &format!("{} is not allowed here; allowed: {allow}", ctx.method),
            );
            if let Ok(v) = HeaderValue::from_str(&allow) {
                resp.headers_mut().insert(header::ALLOW, v);
            }
            return (None, resp);
        }
        RouteMatch::NotFound => {
            return (
                None,
                json_error(
                    ctx,
                    StatusCode::NOT_FOUND,
                    "not_found",
                    &format!("no route for {} {}", ctx.method, ctx.path),
                ),
            );
        }
    };
    let route = &loaded.runtime.routes[index];
    let resp = match &route.cors {
        Some(cors) => {
            let (plane, loaded, ctx2) = (plane.clone(), loaded.clone(), ctx.clone());
            // The layer's service is 'static: the parameters are copied for it.
            let params: Vec<(String, String)> = params
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect();
            let inner = tower::service_fn(move |req: Request| {
                let (plane, loaded, ctx, params) =
                    (plane.clone(), loaded.clone(), ctx2.clone(), params.clone());
                async move {
                    Ok::<_, std::convert::Infallible>(
                        serve_route(&plane, &loaded, index, &params, &ctx, req).await,
                    )
                }
            });
            match cors.layer(inner).oneshot(req).await {
                Ok(r) => r.map(Body::new),
                Err(never) => match never {},
            }
        }
        None => serve_route(plane, loaded, index, &params, ctx, req).await,
    };
    (Some(index), resp)
}

/// Answers a CORS preflight for the route the preflight asks about, if it has CORS.
fn preflight<'a>(
    loaded: &'a Arc<Loaded>,
    ctx: &'a Ctx,
    req: &Request,
) -> Option<impl Future<Output = (Option<usize>, Response)> + 'a> {
    let asked = req
        .headers()
        .get(header::ACCESS_CONTROL_REQUEST_METHOD)
        .and_then(|v| v.to_str().ok())
        .and_then(Method::parse)?;
    req.headers().get(header::ORIGIN)?;
    let RouteMatch::Found { route, .. } = loaded.compiled.table.find(ctx.host(), asked, &ctx.path)
    else {
        return None;
    };
    let cors = loaded.runtime.routes[route].cors.clone()?;
    let mut pre = http::Request::new(Body::empty());
    *pre.method_mut() = HttpMethod::OPTIONS;
    *pre.uri_mut() = req.uri().clone();
    *pre.headers_mut() = req.headers().clone();
    Some(async move {
        let inner = tower::service_fn(|_req: Request| async {
            Ok::<_, std::convert::Infallible>(StatusCode::NO_CONTENT.into_response())
        });
        let resp = match cors.layer(inner).oneshot(pre).await {
            Ok(r) => r.map(Body::new),
            Err(never) => match never {},
        };
        (Some(route), resp)
    })
}

#[cfg(test)]
mod tests {
    use http::{HeaderMap, HeaderValue};

    fn id<const N: usize>() -> String {
        let mut out = vec![0u8; 2 * N];
        super::hex_id::<N>(&mut out);
        String::from_utf8(out).expect("hex is ASCII")
    }

    #[test]
    fn ids_are_lowercase_hex_of_their_length_and_differ() {
        fn check<const N: usize>() {
            let (a, b) = (id::<N>(), id::<N>());
            assert_eq!(a.len(), N * 2);
            assert!(
                a.bytes()
                    .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c)),
                "{a}"
            );
            assert!(a.bytes().any(|c| c != b'0'), "{a}");
            assert_ne!(a, b);
        }
        check::<8>();
        check::<16>();
    }

    fn traceparent(incoming: Option<&str>) -> String {
        let mut h = HeaderMap::new();
        if let Some(v) = incoming {
            h.insert("traceparent", HeaderValue::from_str(v).expect("value"));
        }
        super::traceparent(&h).to_str().expect("ascii").to_string()
    }

    #[test]
    fn a_valid_traceparent_keeps_its_trace_and_flags_with_a_new_parent() {
        let incoming = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let out = traceparent(Some(incoming));
        assert_eq!(out.len(), 55, "{out}");
        assert_eq!(&out[..36], &incoming[..36]);
        assert_ne!(&out[36..52], &incoming[36..52]);
        assert_eq!(&out[52..], "-01");
        // A later version may add fields: its first four are read.
        let future = "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-09-what-comes";
        let out = traceparent(Some(future));
        assert_eq!(&out[3..35], &future[3..35]);
        assert_eq!(&out[52..], "-09");
    }

    #[test]
    fn an_invalid_traceparent_starts_a_new_trace() {
        for bad in [
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "garbage",
        ] {
            let out = traceparent(Some(bad));
            assert_eq!(out.len(), 55, "{bad} -> {out}");
            assert!(
                out.starts_with("00-") && out.ends_with("-00"),
                "{bad} -> {out}"
            );
            assert_ne!(&out[3..35], bad.get(3..35).unwrap_or_default(), "{bad}");
            assert!(out[3..35].bytes().any(|c| c != b'0'), "{out}");
        }
        let fresh = traceparent(None);
        assert!(
            fresh.starts_with("00-") && fresh.ends_with("-00"),
            "{fresh}"
        );
    }
}
