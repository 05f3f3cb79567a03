//! Step 10 for aggregate routes: the parts requested concurrently and merged into one
//! answer (see the [data plane](super)).
//!
//! Imports [`context`](super::context) (the request's facts and the JSON error answer) and
//! what the request path uses; never the parent.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::response::{IntoResponse, Response};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method as HttpMethod, StatusCode};

use crate::metrics::UpstreamLabels;
use crate::runtime::{RouteRuntime, Runtime};
use crate::upstream::{self, Failure, Outgoing, OutgoingBody, PartResult};
use fleetgate_bundle::bundle::{Aggregate, PartialFailure};
use fleetgate_bundle::route::PathTemplate;

use super::context::{Ctx, DataPlane, json_error};

#[allow(clippy::too_many_arguments)]
pub(super) async fn aggregate(
    plane: &DataPlane,
    rt: &Runtime,
    route: &RouteRuntime,
    agg: &Aggregate,
    method: &HttpMethod,
    headers: &HeaderMap,
    values: &BTreeMap<&str, &str>,
    query: Option<&str>,
    ctx: &Ctx,
) -> Response {
    let m = &plane.gateway.shared().metrics;
    let calls = agg.parts.iter().map(|part| async move {
        let Some(up) = rt.backends.get(&part.backend) else {
            return PartResult::Failed {
                timeout: false,
                why: format!("backend {} is not configured", part.backend),
            };
        };
        let uri = match &part.path {
            Some(t) => up.uri_with(|out| PathTemplate::render_into(t, values, out), query),
            None => up.uri(&ctx.path, query),
        };
        let Ok(uri) = uri else {
            return PartResult::Failed {
                timeout: false,
                why: "bad path".into(),
            };
        };
        route.series.sent(m, &up.name);
        let mut h = headers.clone();
        h.remove(header::CONTENT_LENGTH);
        h.remove(header::CONTENT_TYPE);
        let out = Outgoing {
            method: method.clone(),
            uri,
            headers: h,
            body: OutgoingBody::Buffered(bytes::Bytes::new()),
        };
        let timeout = up.timeout.map_or(route.timeout, |t| t.min(route.timeout));
        let retries = route.retries.as_ref().map_or(0, |r| r.attempts);
        let sent_at = std::time::Instant::now();
        let result =
            // The parts go out at once: the pool, not the client connection's own connection.
            match upstream::send(up, None, out, timeout, retries, Duration::from_millis(25)).await {
                Ok(r) => {
                    route.series.responded(m, &up.name, sent_at.elapsed().as_secs_f64());
                    match tokio::time::timeout(timeout, upstream::read_part(r)).await {
                        Ok(p) => p,
                        Err(_) => PartResult::Failed {
                            timeout: true,
                            why: "body timed out".into(),
                        },
                    }
                }
                Err(f) => PartResult::Failed {
                    timeout: matches!(f, Failure::Timeout),
                    why: format!(
                        "{}: {}",
                        f.kind(),
                        match &f {
                            Failure::Connect(s) | Failure::Other(s) => s.as_str(),
                            _ => "",
                        }
                    ),
                },
            };
        if let PartResult::Failed { timeout, why } = &result {
            rt.counts.upstream_errors.fetch_add(1, Ordering::Relaxed);
            m.upstream_errors
                .get_or_create(&UpstreamLabels {
                    route: route.name.clone(),
                    backend: up.name.clone(),
                    kind: if *timeout { "timeout" } else { "part" },
                })
                .inc();
            let log = ctx.log(&plane.gateway.shared().options.log_client_address);
            tracing::warn!(
                request_id = log.request_id,
                trace_id = log.trace_id,
                route = %route.name,
                backend = %up.name,
                detail = %why,
                "aggregated part failed"
            );
        }
        result
    });
    let results = futures::future::join_all(calls).await;
    let any_timeout = results
        .iter()
        .any(|r| matches!(r, PartResult::Failed { timeout: true, .. }));
    let parts: Vec<(Option<&str>, PartResult)> = agg
        .parts
        .iter()
        .map(|p| p.group.as_deref())
        .zip(results)
        .collect();
    let (merged, complete) = upstream::merge_parts(&parts);
    if !complete && agg.on_partial_failure == PartialFailure::Fail {
        return if any_timeout {
            json_error(
                ctx,
                StatusCode::GATEWAY_TIMEOUT,
                "upstream_timeout",
                "a service did not answer in time",
            )
        } else {
            json_error(
                ctx,
                StatusCode::BAD_GATEWAY,
                "bad_gateway",
                "a service could not be reached",
            )
        };
    }
    let mut resp = (
        StatusCode::OK,
        axum::Json(serde_json::Value::Object(merged)),
    )
        .into_response();
    resp.headers_mut().insert(
        HeaderName::from_static("x-fleetgate-completed"),
        HeaderValue::from_static(if complete { "true" } else { "false" }),
    );
    resp
}
