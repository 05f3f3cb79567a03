//! One normalized request target: dot segments, in any spelling, never reach a route or a
//! backend that did not authorize them.

use serde_json::json;

use crate::support::*;

fn gateway() -> Gw {
    let up = echo_backend();
    let b = bundle(
        json!({
            "hosts": [HOST],
            "backends": {"echo": {"url": format!("http://{up}")}},
            "authPolicies": {"own": {"issuers": ["local"]}},
            "routes": [
                {"name": "pub", "methods": ["GET"], "path": "/pub/{*rest}", "backend": "echo", "public": true},
                {"name": "admin", "methods": ["GET"], "path": "/admin/{*rest}", "backend": "echo",
                 "auth": {"policy": "own"}},
            ],
        }),
        json!({"issuer": local_issuer()}),
    );
    Gw::start(&b, &[])
}

#[test]
fn dot_segments_cannot_reach_a_route_that_did_not_authorize_them() {
    let gw = gateway();
    // Each spelling climbs out of the public route into the protected one: once
    // normalized, it is the protected route that answers, and it wants a token.
    for path in [
        "/pub/../admin/x",
        "/pub/%2e%2e/admin/x",
        "/pub/.%2e/admin/x",
        "/pub/%2E%2E/admin/x",
        "/pub/./../admin/x",
    ] {
        let (status, text) = gw.get(path, &[]);
        assert_eq!(
            status, 401,
            "{path} must be the admin route's, unauthenticated: {text}"
        );
    }
    // What cannot be normalized safely is refused before routing.
    for path in [
        "/pub/..%2fadmin/x",
        "/pub/..%2Fadmin/x",
        "/pub/..%5cadmin/x",
        "/pub/..;/admin/x",
        "/pub/..%3B/admin/x",
        "//admin/x",
        "/pub//../admin/x",
        "/pub/%00",
        "/pub/%zz",
        "/../admin/x",
        "/pub/../../admin/x",
    ] {
        let (status, text) = gw.get(path, &[]);
        assert_eq!(status, 400, "{path}: {text}");
        assert_eq!(body_json(&text)["error"], "bad_path", "{path}: {text}");
    }
    // The normalized path is the one forwarded; the log names the route that answered it
    // by its template, never by the path as sent.
    let echoed = gw.echoed("/pub/a/./b/../c/%7Ex", &[]);
    assert_eq!(echoed["path"], "/pub/a/c/~x");
    wait_for("the access log line", || {
        gw.log()
            .contains("\"path_template\":\"/pub/{*rest}\",\"status\":200")
    });
    assert!(!gw.log().contains("/pub/a/./b"), "{}", gw.log());
}
