//! The hostile-client suite: the release-shaped `fleetgate-gateway` binary on loopback,
//! attacked the way an anonymous internet client would. One module per class of attack;
//! each test failed on the gateway before the edge hardening and must keep passing.

#![allow(clippy::unwrap_used)]

mod http2;
mod idp;
mod jwt;
mod proxies;
mod secrets_status;
mod support;
mod timeouts;

use support::*;

/// The harness itself: the binary starts on a bundle and proxies to the echo backend.
#[test]
fn the_harness_serves_a_public_route_through_the_echo_backend() {
    let up = echo_backend();
    let b = bundle(
        serde_json::json!({
            "hosts": [HOST],
            "backends": {"echo": {"url": format!("http://{up}")}},
            "routes": [{"name": "pub", "methods": ["GET"], "path": "/pub/{*rest}",
                        "backend": "echo", "public": true}],
        }),
        serde_json::json!({}),
    );
    let gw = Gw::start(&b, &[]);
    let echoed = gw.echoed("/pub/x", &[]);
    assert_eq!(echoed["path"], "/pub/x");
    assert!(gw.metrics().contains("http_requests_total"));
}

mod bounded;
mod faults;
mod headers;
mod path;
