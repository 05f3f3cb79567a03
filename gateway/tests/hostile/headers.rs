//! Header hygiene: the identity headers the gateway sets cannot be sent by a client in any
//! spelling, and a request with two Host or two Authorization headers is refused.

use serde_json::{Value, json};

use crate::support::*;

fn gateway() -> Gw {
    let up = echo_backend();
    let b = bundle(
        json!({
            "hosts": [HOST],
            "backends": {"echo": {"url": format!("http://{up}")}},
            "authPolicies": {"own": {"issuers": ["local"],
                "forwardClaims": {"sub": "X-Fleetgate-Subject", "tenant": "X-Fleetgate-Tenant", "email": "X-User-Email"}}},
            "routes": [
                {"name": "pub", "methods": ["GET"], "path": "/pub/{*rest}", "backend": "echo", "public": true},
                {"name": "own", "methods": ["GET"], "path": "/own", "backend": "echo", "auth": {"policy": "own"}},
            ],
        }),
        json!({"issuer": local_issuer()}),
    );
    Gw::start(&b, &[])
}

fn names(echoed: &Value) -> Vec<String> {
    echoed["headers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h[0].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn identity_headers_are_stripped_in_every_spelling() {
    let gw = gateway();
    let echoed = gw.echoed(
        "/pub/x",
        &[
            ("X-Fleetgate-Tenant", "evil"),
            ("X_Fleetgate_Tenant", "evil"),
            ("x_fleetgate_subject", "evil"),
            ("X_User_Email", "evil@example.com"),
            ("X-USER-EMAIL", "evil@example.com"),
            ("X_Forwarded_For", "10.9.9.9"),
            ("X_Request_Id", "evil"),
            ("X-Custom_Header", "kept"),
            ("X-Fleetgate-Anything", "evil"),
            ("X-Real-IP", "10.9.9.9"),
            ("Forwarded", "for=10.9.9.9;proto=https"),
            ("X-Forwarded-Proto", "https"),
            ("X-Forwarded-For", "10.9.9.9"),
        ],
    );
    // Forwarding headers from a client that is not a trusted proxy are replaced by the
    // gateway's own.
    let value = |name: &str| -> Vec<String> {
        echoed["headers"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|h| h[0] == name)
            .map(|h| h[1].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(value("x-forwarded-for"), ["127.0.0.1"], "{echoed}");
    assert_eq!(value("x-forwarded-proto"), ["http"], "{echoed}");
    assert!(
        value("x-real-ip").is_empty() && value("forwarded").is_empty(),
        "{echoed}"
    );
    assert!(value("x-fleetgate-anything").is_empty(), "{echoed}");
    let names = names(&echoed);
    for spoofed in [
        "x-fleetgate-tenant",
        "x_fleetgate_tenant",
        "x_fleetgate_subject",
        "x_user_email",
        "x-user-email",
        "x_forwarded_for",
        "x_request_id",
    ] {
        assert!(
            !names.iter().any(|n| n == spoofed),
            "{spoofed} reached the backend: {echoed}"
        );
    }
    assert!(names.iter().any(|n| n == "x-custom_header"), "{echoed}");
}

#[test]
fn two_host_or_two_authorization_headers_are_refused() {
    let gw = gateway();
    let two_hosts = format!(
        "GET /pub/x HTTP/1.1\r\nhost: {HOST}\r\nhost: other.example\r\nconnection: close\r\n\r\n"
    );
    let out = gw.raw(two_hosts.as_bytes(), std::time::Duration::from_secs(5));
    assert_eq!(status_of(&out), 400, "{out}");
    let (status, out) = gw.get(
        "/own",
        &[
            ("authorization", "Bearer a.b.c"),
            ("authorization", "Bearer d.e.f"),
        ],
    );
    assert_eq!(status, 400, "{out}");
    assert!(out.contains("more than one Authorization header"), "{out}");
    // An absolute-form target names the host, without its userinfo.
    let absolute = "GET http://user@api.test.example/pub/x HTTP/1.1\r\nhost: other.example\r\nconnection: close\r\n\r\n";
    let out = gw.raw(absolute.as_bytes(), std::time::Duration::from_secs(5));
    assert_eq!(status_of(&out), 200, "{out}");
    assert!(out.contains("\"api.test.example\""), "{out}");
    // Also on a public route: the backend would see both.
    let (status, _) = gw.get(
        "/pub/x",
        &[
            ("authorization", "Basic YTpi"),
            ("authorization", "Basic Yzpk"),
        ],
    );
    assert_eq!(status, 400);
}
