//! Clients behind a load balancer: with `--trusted-proxies` each client is counted and
//! logged as itself (the right-most untrusted `X-Forwarded-For` hop); without it, an
//! `X-Forwarded-For` a client sends is not believed.

use serde_json::Value;

use crate::support::*;

/// One route limited to one request a minute per client IP.
fn limited_route() -> Vec<u8> {
    let up = echo_backend();
    bundle(
        serde_json::json!({
            "hosts": [HOST],
            "backends": {"echo": {"url": format!("http://{up}")}},
            "routes": [{"name": "pub", "methods": ["GET"], "path": "/pub/{*rest}",
                        "backend": "echo", "public": true,
                        "rateLimit": {"requests": 1, "per": "1m", "burst": 1, "key": "ip"}}],
        }),
        serde_json::json!({}),
    )
}

/// The client addresses of the access log's lines, in order (the gateway runs with
/// `--log-client-address full`).
fn access_clients(gw: &Gw) -> Vec<String> {
    gw.log()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|l| l["target"] == "fleetgate::access")
        .map(|l| l["client"].as_str().unwrap_or_default().to_string())
        .collect()
}

fn header<'a>(echoed: &'a Value, name: &str) -> Vec<&'a str> {
    echoed["headers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h[0] == name)
        .map(|h| h[1].as_str().unwrap())
        .collect()
}

#[test]
fn behind_a_trusted_proxy_each_forwarded_client_has_its_own_limit_and_log_line() {
    let gw = Gw::start(
        &limited_route(),
        &[
            "--trusted-proxies",
            "127.0.0.0/8",
            "--log-client-address",
            "full",
        ],
    );
    let a = [("x-forwarded-for", "203.0.113.1")];
    let b = [("x-forwarded-for", "203.0.113.2")];
    // A spoofed left-most hop does not make a client someone else.
    let spoofed = [("x-forwarded-for", "198.51.100.50, 203.0.113.1")];
    let echoed = gw.echoed("/pub/a", &a);
    assert_eq!(
        gw.get("/pub/a", &spoofed).0,
        429,
        "client a's second request"
    );
    assert_eq!(gw.get("/pub/b", &b).0, 200, "client b has its own bucket");
    // The backend gets the chain as it came, with the proxy appended.
    assert_eq!(
        header(&echoed, "x-forwarded-for"),
        ["203.0.113.1, 127.0.0.1"]
    );
    wait_for("the access log lines", || access_clients(&gw).len() == 3);
    assert_eq!(
        access_clients(&gw),
        ["203.0.113.1", "203.0.113.1", "203.0.113.2"]
    );
}

#[test]
fn without_trusted_proxies_a_forwarded_for_header_is_not_believed() {
    let gw = Gw::start(&limited_route(), &["--log-client-address", "full"]);
    let echoed = gw.echoed("/pub/a", &[("x-forwarded-for", "203.0.113.1")]);
    assert_eq!(
        gw.get("/pub/b", &[("x-forwarded-for", "203.0.113.2")]).0,
        429,
        "every request from one peer shares its bucket, whatever it claims"
    );
    // What an untrusted client claims is not passed on either: the backend sees the peer.
    assert_eq!(header(&echoed, "x-forwarded-for"), ["127.0.0.1"]);
    wait_for("the access log lines", || access_clients(&gw).len() == 2);
    assert_eq!(access_clients(&gw), ["127.0.0.1", "127.0.0.1"]);
}
