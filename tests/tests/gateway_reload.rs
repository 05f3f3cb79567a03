//! The gateway's hot reload on a real `file://` target directory: the first good bundle makes
//! it ready; a moved pointer swaps the bundle; a tampered or uncompilable bundle is refused,
//! counted and shown while the last good one keeps serving; the admin endpoints say so.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use fleetgate::config::example_fleet::example_repo;
use fleetgate::{Repo, render};
use fleetgate_bundle::Digest;
use fleetgate_gateway::admin::admin_router;
use fleetgate_gateway::source::FileSource;
use fleetgate_gateway::{Gateway, ReloadOutcome};
use http_body_util::BodyExt as _;
use tower::ServiceExt as _;

/// acme-prod's bundle as the example renders it, and with a changed rate limit.
fn two_bundles() -> (Vec<u8>, Vec<u8>) {
    let mut src = example_repo();
    let a = render(&Repo::load(&src), "acme-prod").unwrap().canonical;
    let path = "accounts/acme-prod.yaml";
    let text = String::from_utf8(src.files[path].clone()).unwrap();
    src.insert(
        path,
        &text.replace(
            "requests: 50, per: 1s, burst: 50",
            "requests: 60, per: 1s, burst: 60",
        ),
    );
    let b = render(&Repo::load(&src), "acme-prod").unwrap().canonical;
    assert_ne!(a, b);
    (a, b)
}

/// Stores a bundle and points current.json at it, the way apply does.
fn deploy(dir: &Path, bytes: &[u8], commit: &str) -> Digest {
    let digest = Digest::of(bytes);
    std::fs::create_dir_all(dir.join("bundles")).unwrap();
    std::fs::write(dir.join(format!("bundles/{}.json", digest.hex())), bytes).unwrap();
    let pointer = serde_json::json!({
        "digest": digest.to_string(),
        "commit": commit,
        "applied_by": "test",
        "applied_at": "2026-11-23T00:00:00Z",
    });
    std::fs::write(
        dir.join("current.json"),
        serde_json::to_vec(&pointer).unwrap(),
    )
    .unwrap();
    digest
}

async fn get(router: &axum::Router, path: &str) -> (StatusCode, String) {
    let resp = router
        .clone()
        .oneshot(Request::get(path).body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8(body.to_vec()).unwrap())
}

#[tokio::test]
async fn good_bundles_swap_in_and_bad_ones_are_refused_and_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("acme-prod");
    let source = FileSource::new(&format!("file://{}", dir.display()));
    let gw = Arc::new(Gateway::new());
    let admin = admin_router(gw.clone(), "file://test".into());

    // Nothing deployed yet: alive, not ready, and the source error is shown.
    assert!(matches!(
        gw.reload_once(&source).await,
        ReloadOutcome::Unavailable { .. }
    ));
    assert_eq!(get(&admin, "/health").await.0, StatusCode::OK);
    assert_eq!(
        get(&admin, "/ready").await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );
    let (_, status) = get(&admin, "/status").await;
    assert!(status.contains("current.json"), "{status}");

    let (a, b) = two_bundles();
    let da = deploy(&dir, &a, "1111111");
    assert_eq!(
        gw.reload_once(&source).await,
        ReloadOutcome::Swapped { digest: da.clone() }
    );
    assert_eq!(gw.reload_once(&source).await, ReloadOutcome::Unchanged);
    assert_eq!(get(&admin, "/ready").await.0, StatusCode::OK);
    let (_, metrics) = get(&admin, "/metrics").await;
    assert!(
        metrics.contains(&format!(
            "fleetgate_gateway_bundle{{account=\"acme-prod\",digest=\"{da}\",commit=\"1111111\"}} 1"
        )),
        "{metrics}"
    );
    let held = gw.current().unwrap();

    // A tampered bundle: bytes that do not hash to the name the pointer uses.
    let db = Digest::of(&b);
    deploy(&dir, &b, "2222222");
    std::fs::write(dir.join(format!("bundles/{}.json", db.hex())), &a).unwrap();
    let outcome = gw.reload_once(&source).await;
    let ReloadOutcome::Rejected { reason } = outcome else {
        panic!("{outcome:?}")
    };
    assert!(reason.contains("does not match its digest"), "{reason}");
    assert_eq!(
        gw.current().unwrap().digest,
        da,
        "the last good bundle serves"
    );
    assert_eq!(
        gw.reload_once(&source).await,
        ReloadOutcome::Unchanged,
        "not retried"
    );

    // A bundle that hashes right but does not compile: a route names a missing backend.
    let mut broken: serde_json::Value = serde_json::from_slice(&b).unwrap();
    let routes = broken["gateway"]["routes"].as_array_mut().unwrap();
    routes[0]["backend"] = serde_json::json!("no-such-backend");
    let broken = serde_json::to_vec(&broken).unwrap();
    deploy(&dir, &broken, "3333333");
    let outcome = gw.reload_once(&source).await;
    let ReloadOutcome::Rejected { reason } = outcome else {
        panic!("{outcome:?}")
    };
    assert!(reason.contains("does not compile"), "{reason}");
    assert_eq!(gw.current().unwrap().digest, da);
    let (_, status) = get(&admin, "/status").await;
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(status["digest"], da.to_string());
    assert_eq!(status["reload_failures"], 3);
    assert!(
        status["last_error"]
            .as_str()
            .unwrap()
            .contains("does not compile")
    );

    // A good bundle again: swapped in; a request that started on the old one keeps it.
    let db = deploy(&dir, &b, "4444444");
    assert_eq!(
        gw.reload_once(&source).await,
        ReloadOutcome::Swapped { digest: db.clone() }
    );
    assert_eq!(gw.current().unwrap().digest, db);
    assert_eq!(
        held.digest, da,
        "in-flight requests keep the bundle they started with"
    );
    let (_, metrics) = get(&admin, "/metrics").await;
    // The replaced bundle's series is gone, not left at 0 forever.
    assert!(!metrics.contains(&format!("digest=\"{da}\"")), "{metrics}");
    assert!(
        metrics.contains(&format!("digest=\"{db}\",commit=\"4444444\"}} 1")),
        "{metrics}"
    );
    assert!(
        metrics.contains("fleetgate_gateway_reloads_total 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("fleetgate_gateway_reload_failures_total{kind=\"bundle\"} 2"),
        "{metrics}"
    );
}

/// A tombstone pointer: the gateway drops the bundle, answers every request (a route, the
/// identity provider's token and discovery endpoints) 410, stays ready, reports and counts
/// the decommission; a pointer back to the bundle (a rollback) serves it again.
#[tokio::test]
async fn a_tombstone_answers_410_everywhere_stays_ready_and_a_rollback_revives_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("acme-prod");
    let source = FileSource::new(&format!("file://{}", dir.display()));
    let gw = Arc::new(Gateway::new());
    let admin = admin_router(gw.clone(), "file://test".into());
    // The data plane as the listener serves it: the client's address comes with the request.
    let data = fleetgate_gateway::dataplane::router(gw.clone()).layer(axum::Extension(
        axum::extract::ConnectInfo(std::net::SocketAddr::from(([127, 0, 0, 1], 40000))),
    ));
    let (a, _) = two_bundles();
    let digest = deploy(&dir, &a, "c1");
    assert!(matches!(
        gw.reload_once(&source).await,
        ReloadOutcome::Swapped { .. }
    ));
    let served = get(&data, "/.well-known/openid-configuration").await;
    assert_eq!(served.0, StatusCode::OK, "{}", served.1);
    // A request on a route (refused by auth: no backend is called), so the bundle's route
    // series exist before the tombstone.
    data.clone()
        .oneshot(
            Request::get("/overview/c-1")
                .header("host", "api.acme-prod.fleetgate.example")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    let (_, metrics) = get(&admin, "/metrics").await;
    assert!(metrics.contains("route=\"account-overview\""), "{metrics}");

    let tomb = serde_json::json!({
        "digest": digest.to_string(),
        "commit": "c1",
        "previous": digest.to_string(),
        "applied_by": "fleetgate-watch w",
        "applied_at": "2026-12-05T10:00:00Z",
        "decommissioned": {"at": "2026-12-05T10:00:00Z", "by": "fleetgate-watch w",
                           "commit": "c2", "tenant": "acme", "reason": "contract ended"},
    });
    std::fs::write(dir.join("current.json"), serde_json::to_vec(&tomb).unwrap()).unwrap();
    // The bundle may be erased already: a tombstone never needs it.
    std::fs::remove_dir_all(dir.join("bundles")).unwrap();
    assert_eq!(gw.reload_once(&source).await, ReloadOutcome::Decommissioned);
    assert_eq!(gw.reload_once(&source).await, ReloadOutcome::Unchanged);
    for path in [
        "/orders/1",
        "/.well-known/openid-configuration",
        "/.well-known/jwks.json",
        "/nowhere",
    ] {
        let (status, body) = get(&data, path).await;
        assert_eq!(status, StatusCode::GONE, "{path}: {body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["error"], "decommissioned", "{path}: {body}");
    }
    let token = data
        .clone()
        .oneshot(
            Request::post("/oauth2/token")
                .header("content-type", "application/x-www-form-urlencoded")
                .body(Body::from(
                    "grant_type=client_credentials&client_id=web-portal&client_secret=demo-web-portal-secret",
                ))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(token.status(), StatusCode::GONE, "no token is issued");

    let (status, body) = get(&admin, "/ready").await;
    assert_eq!(status, StatusCode::OK, "stays ready: {body}");
    assert!(body.contains("decommissioned_at"), "{body}");
    let (_, status_body) = get(&admin, "/status").await;
    let status: serde_json::Value = serde_json::from_str(&status_body).unwrap();
    assert_eq!(status["decommissioned_at"], "2026-12-05T10:00:00Z");
    assert_eq!(status["ready"], true);
    assert!(status["digest"].is_null(), "no bundle is held: {status}");
    let report = gw.report("gw-1");
    assert_eq!(
        report.decommissioned_at.as_deref(),
        Some("2026-12-05T10:00:00Z")
    );
    assert!(report.ready);
    let (_, metrics) = get(&admin, "/metrics").await;
    assert!(
        metrics.contains("fleetgate_gateway_decommissioned 1"),
        "{metrics}"
    );
    assert!(
        !metrics.contains("route=\"account-overview\""),
        "the dropped bundle's route series are gone: {metrics}"
    );

    // Rolled back: the bundle is stored again and the pointer names it.
    deploy(&dir, &a, "c1");
    assert!(matches!(
        gw.reload_once(&source).await,
        ReloadOutcome::Swapped { .. }
    ));
    assert_eq!(
        get(&data, "/.well-known/openid-configuration").await.0,
        StatusCode::OK
    );
    assert!(gw.decommissioned().is_none());
    let (_, metrics) = get(&admin, "/metrics").await;
    assert!(
        metrics.contains("fleetgate_gateway_decommissioned 0"),
        "{metrics}"
    );
}
