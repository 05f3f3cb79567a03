//! The admin listener's router: `/health`, `/ready`, `/status` and `/metrics`, read from the
//! [`Gateway`] the reload loop keeps. Imports [`crate::reload`] only.

use std::sync::Arc;

use crate::reload::Gateway;

/// `/health`, `/ready`, `/status` and `/metrics`, for the admin listener.
pub fn admin_router(gateway: Arc<Gateway>, source: String) -> axum::Router {
    use axum::http::{StatusCode, header};
    use axum::routing::get;
    let source = Arc::new(source);
    let ready_gw = gateway.clone();
    let status_gw = gateway.clone();
    let metrics_gw = gateway;
    axum::Router::new()
        .route(
            "/health",
            get(|| async { axum::Json(serde_json::json!({"status": "alive"})) }),
        )
        .route(
            "/ready",
            get(move || {
                let gw = ready_gw.clone();
                async move {
                    // A decommissioned account's gateway stays ready: it answers 410 itself,
                    // and a load balancer must not send its clients elsewhere.
                    if let Some(d) = gw.decommissioned()
                        && !gw.is_draining()
                    {
                        return (
                            StatusCode::OK,
                            axum::Json(serde_json::json!({"ready": true, "decommissioned_at": d.at})),
                        );
                    }
                    match gw.current() {
                        Some(_) if gw.is_draining() => (
                            StatusCode::SERVICE_UNAVAILABLE,
                            axum::Json(serde_json::json!({"ready": false, "reason": "draining"})),
                        ),
                        Some(c) => (
                            StatusCode::OK,
                            axum::Json(serde_json::json!({"ready": true, "digest": c.digest.to_string()})),
                        ),
                        None => (
                            StatusCode::SERVICE_UNAVAILABLE,
                            axum::Json(serde_json::json!({"ready": false, "reason": "no good bundle loaded yet"})),
                        ),
                    }
                }
            }),
        )
        .route(
            "/status",
            get(move || {
                let (gw, source) = (status_gw.clone(), source.clone());
                async move { axum::Json(gw.status(&source)) }
            }),
        )
        .route(
            "/metrics",
            get(move || {
                let gw = metrics_gw.clone();
                async move {
                    (
                        [(
                            header::CONTENT_TYPE,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        gw.metrics_text(),
                    )
                }
            }),
        )
}
