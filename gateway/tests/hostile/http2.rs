//! The data plane speaks HTTP/1.1 only (the load balancer in front terminates TLS and
//! HTTP/2): a client opening with the HTTP/2 preface gets no HTTP/2 connection.

use std::time::Duration;

use crate::support::*;

#[test]
fn a_cleartext_http2_preface_gets_no_http2_connection() {
    let gw = Gw::start(
        &bundle(serde_json::json!({"hosts": [HOST]}), serde_json::json!({})),
        &[],
    );
    let mut preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    // An empty SETTINGS frame, as a client sends right after the preface.
    preface.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
    let out = gw.raw(&preface, Duration::from_secs(3));
    // An HTTP/2 server answers with its own SETTINGS frame: type 4 in the fourth byte.
    assert_ne!(
        out.as_bytes().get(3),
        Some(&4),
        "an HTTP/2 SETTINGS frame came back"
    );
    assert!(
        out.is_empty() || out.starts_with("HTTP/1.1 "),
        "not an HTTP/1.1 answer: {out:?}"
    );
    // HTTP/1.1 on the same listener is served.
    assert_eq!(gw.get("/anything", &[]).0, 404);
}

#[test]
fn an_h2c_upgrade_request_is_answered_over_http1() {
    let gw = Gw::start(
        &bundle(serde_json::json!({"hosts": [HOST]}), serde_json::json!({})),
        &[],
    );
    let out = gw.raw(
        format!(
            "GET /anything HTTP/1.1\r\nhost: {HOST}\r\nconnection: Upgrade, HTTP2-Settings, close\r\n\
             upgrade: h2c\r\nhttp2-settings: AAMAAABkAAQAAP__\r\n\r\n"
        )
        .as_bytes(),
        Duration::from_secs(5),
    );
    assert!(out.starts_with("HTTP/1.1 404 "), "{out}");
}
