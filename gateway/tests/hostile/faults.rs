//! A client's fault is the client's: a malformed or cut-short body, or a client that leaves,
//! is a 4xx (or a logged abort) under its own metric, never a 5xx or an upstream error that
//! a health gate would hold against a rollout.

use std::io::Write as _;
use std::net::TcpStream;
use std::time::Duration;

use serde_json::json;

use crate::support::*;

fn gateway() -> Gw {
    let up = echo_backend();
    let b = bundle(
        json!({
            "hosts": [HOST],
            "backends": {"echo": {"url": format!("http://{up}")}},
            "routes": [
                {"name": "upload", "methods": ["POST", "PUT"], "path": "/upload", "backend": "echo",
                 "public": true, "timeout": "2s"},
                {"name": "slow", "methods": ["GET"], "path": "/upload/slow", "backend": "echo",
                 "public": true},
                {"name": "upload.retried", "methods": ["PUT"], "path": "/retried", "backend": "echo",
                 "public": true, "timeout": "2s", "retries": {"attempts": 1}},
            ],
        }),
        json!({}),
    );
    Gw::start(&b, &[])
}

fn post(path: &str, method: &str, head: &str, body: &str) -> String {
    format!("{method} {path} HTTP/1.1\r\nhost: {HOST}\r\n{head}\r\n{body}")
}

#[test]
fn malformed_and_cut_short_bodies_are_client_errors_not_5xx() {
    let gw = gateway();
    // A good body first: the route works.
    let ok = gw.raw(
        post(
            "/upload",
            "POST",
            "content-length: 5\r\nconnection: close\r\n",
            "hello",
        )
        .as_bytes(),
        Duration::from_secs(5),
    );
    assert_eq!(status_of(&ok), 200, "{ok}");

    // Malformed chunked framing.
    for body in ["zz\r\nhello\r\n0\r\n\r\n", "5\r\nhelloXX0\r\n\r\n"] {
        let out = gw.raw(
            post("/upload", "POST", "transfer-encoding: chunked\r\n", body).as_bytes(),
            Duration::from_secs(5),
        );
        let status = status_of(&out);
        assert!(
            status == 400 || status == 0,
            "a malformed chunked body is the client's fault: {out}"
        );
    }
    // A body cut short: Content-Length 100, 10 bytes, then the client stops sending.
    let mut s = TcpStream::connect(gw.listen).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(post("/upload", "POST", "content-length: 100\r\n", "0123456789").as_bytes())
        .unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let mut out = String::new();
    let _ = std::io::Read::read_to_string(&mut s, &mut out);
    let status = status_of(&out);
    assert!(status == 400 || status == 0, "{out}");
    // A body that stalls: 10 of 100 bytes, then nothing until the route's timeout (2s).
    let stalled = gw.raw(
        post("/upload", "POST", "content-length: 100\r\n", "0123456789").as_bytes(),
        Duration::from_secs(6),
    );
    assert_eq!(status_of(&stalled), 408, "{stalled}");
    // The same on a route that buffers bodies for retries.
    let stalled = gw.raw(
        post("/retried", "PUT", "content-length: 100\r\n", "0123456789").as_bytes(),
        Duration::from_secs(6),
    );
    assert_eq!(status_of(&stalled), 408, "{stalled}");
    let bad = gw.raw(
        post(
            "/retried",
            "PUT",
            "transfer-encoding: chunked\r\n",
            "zz\r\nx\r\n0\r\n\r\n",
        )
        .as_bytes(),
        Duration::from_secs(5),
    );
    assert!(matches!(status_of(&bad), 400 | 0), "{bad}");

    // None of it counts against the gateway or the backend: not in /metrics, and not in
    // the status report that health gates read.
    let metrics = gw.metrics();
    assert_eq!(
        metric(&metrics, "fleetgate_gateway_upstream_errors_total", &[]),
        0.0,
        "{metrics}"
    );
    assert_eq!(
        metric(
            &metrics,
            "fleetgate_gateway_http_requests_total",
            &["status=\"5xx\""]
        ),
        0.0,
        "{metrics}"
    );
    assert!(
        metric(
            &metrics,
            "fleetgate_gateway_client_errors_total",
            &["route=\"upload\""]
        ) >= 3.0,
        "{metrics}"
    );
    assert!(
        metric(
            &metrics,
            "fleetgate_gateway_client_errors_total",
            &["kind=\"body_timeout\""]
        ) >= 2.0,
        "{metrics}"
    );
    let report = || -> serde_json::Value {
        std::fs::read_to_string(gw.dir.join("status/gw-1.json"))
            .ok()
            .and_then(|r| serde_json::from_str(&r).ok())
            .unwrap_or_default()
    };
    wait_for("a status report with every request", || {
        report()["requests_4xx"].as_u64().unwrap_or(0) >= 6
    });
    let r = report();
    assert_eq!(r["requests_5xx"], 0, "{r}");
    assert_eq!(r["upstream_errors"], 0, "{r}");
}

#[test]
fn a_client_that_leaves_before_the_answer_is_logged_as_aborted() {
    let gw = gateway();
    // The backend takes 2 s; the client hangs up after 300 ms.
    {
        let mut s = TcpStream::connect(gw.listen).unwrap();
        s.write_all(format!("GET /upload/slow HTTP/1.1\r\nhost: {HOST}\r\n\r\n").as_bytes())
            .unwrap();
        std::thread::sleep(Duration::from_millis(300));
    }
    wait_for("the abort to be logged", || {
        gw.log().contains("\"aborted\":true")
    });
    let line = gw
        .log()
        .lines()
        .find(|l| l.contains("\"aborted\":true"))
        .unwrap()
        .to_string();
    assert!(
        line.contains("\"status\":499") && line.contains("\"route\":\"slow\""),
        "{line}"
    );
    let metrics = gw.metrics();
    assert_eq!(
        metric(
            &metrics,
            "fleetgate_gateway_client_errors_total",
            &["kind=\"aborted\""]
        ),
        1.0,
        "{metrics}"
    );
    assert_eq!(
        metric(&metrics, "fleetgate_gateway_upstream_errors_total", &[]),
        0.0,
        "{metrics}"
    );
    assert_eq!(
        metric(
            &metrics,
            "fleetgate_gateway_http_requests_total",
            &["status=\"5xx\""]
        ),
        0.0,
        "{metrics}"
    );
}

#[test]
fn a_token_request_whose_body_never_arrives_does_not_hold_its_connection() {
    let up = echo_backend();
    let b = bundle(
        json!({
            "hosts": [HOST],
            "backends": {"echo": {"url": format!("http://{up}")}},
            "routes": [{"name": "pub", "methods": ["GET"], "path": "/pub", "backend": "echo", "public": true}],
        }),
        json!({"issuer": local_issuer()}),
    );
    let gw = Gw::start(&b, &[]);
    let started = std::time::Instant::now();
    let out = gw.raw(
        format!(
            "POST /oauth2/token HTTP/1.1\r\nhost: {HOST}\r\ncontent-type: application/x-www-form-urlencoded\r\ncontent-length: 100\r\n\r\ngrant_type="
        )
        .as_bytes(),
        Duration::from_secs(30),
    );
    assert_eq!(status_of(&out), 408, "{out}");
    assert!(
        started.elapsed() < Duration::from_secs(25),
        "{:?}",
        started.elapsed()
    );
}
