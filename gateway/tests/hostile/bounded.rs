//! Bounded by construction: no client-chosen value becomes a metric label or a map entry that
//! outlives its use, and a flood of hostile requests from many addresses leaves memory flat.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};

use crate::support::*;

/// A client secret hash with small argon2 parameters, so the flood is cheap to verify.
fn partner_hash() -> String {
    use argon2::PasswordHasher as _;
    let params = argon2::Params::new(8192, 1, 1, None).unwrap();
    let salt = argon2::password_hash::SaltString::encode_b64(b"hostile-suite-16").unwrap();
    argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
        .hash_password(b"partner-secret", &salt)
        .unwrap()
        .to_string()
}

fn gateway_doc(up: SocketAddr, route_a: &str) -> Vec<u8> {
    // The bundle that renames route `a` also drops the IdP's client.
    let clients = if route_a == "a" {
        json!([{"id": "partner", "secret": {"argon2Hash": partner_hash()}, "scopes": []}])
    } else {
        json!([])
    };
    bundle(
        json!({
            "hosts": [HOST],
            "backends": {"echo": {"url": format!("http://{up}")}},
            "authPolicies": {"own": {"issuers": ["local"]}},
            "routes": [
                {"name": route_a, "methods": ["GET", "POST"], "path": "/a/{*rest}", "backend": "echo", "public": true},
                {"name": "keyed", "methods": ["GET"], "path": "/keyed", "backend": "echo", "public": true,
                 "rateLimit": {"requests": 1000, "per": "1s", "key": {"header": "x-api-key"}}},
                {"name": "by-ip", "methods": ["GET"], "path": "/by-ip", "backend": "echo", "public": true,
                 "rateLimit": {"requests": 1000, "per": "1s", "key": "ip"}},
                {"name": "own", "methods": ["GET"], "path": "/own", "backend": "echo", "auth": {"policy": "own"}},
            ],
        }),
        json!({
            "issuer": local_issuer(),
            "clients": clients,
        }),
    )
}

fn rand_token(len: usize) -> String {
    std::iter::repeat_with(fastrand::alphanumeric)
        .take(len)
        .collect()
}

/// One hostile request of `n`: random methods, paths, hosts, API keys, bearer tokens and
/// token requests for unknown clients.
fn hostile(gw: SocketAddr, n: usize) -> http::Request<Full<Bytes>> {
    let uri = |path: &str| format!("http://{gw}{path}");
    let b = http::Request::builder().header("host", HOST);
    // One in fifty is a token request for an unknown client (argon2 work, bounded by the
    // IdP's limits); the rest are cheap.
    let kind = if n.is_multiple_of(50) {
        6
    } else {
        match n % 8 {
            6 => 7,
            k => k,
        }
    };
    let req = match kind {
        0 => b
            .method(http::Method::from_bytes(format!("M{}", rand_token(8)).as_bytes()).unwrap())
            .uri(uri("/a/x")),
        1 => b.uri(uri(&format!("/{}/{}", rand_token(12), rand_token(12)))),
        2 => http::Request::builder()
            .header("host", format!("{}.example", rand_token(16)))
            .uri(uri("/a/x")),
        3 => b.uri(uri("/keyed")).header("x-api-key", rand_token(200)),
        4 => b.uri(uri("/by-ip")),
        5 => b.uri(uri("/own")).header(
            "authorization",
            format!(
                "Bearer {}.{}.{}",
                rand_token(40),
                rand_token(80),
                rand_token(40)
            ),
        ),
        6 => {
            let body = format!(
                "grant_type=client_credentials&client_id={}&client_secret={}",
                rand_token(24),
                rand_token(24)
            );
            return b
                .method("POST")
                .uri(uri("/oauth2/token"))
                .header("content-type", "application/x-www-form-urlencoded")
                .body(Full::new(Bytes::from(body)))
                .unwrap();
        }
        _ => b.uri(uri(&format!("/a/{}?q={}", rand_token(30), rand_token(30)))),
    };
    req.body(Full::new(Bytes::new())).unwrap()
}

/// Sends `count` hostile requests from `addresses` loopback source addresses (127.0.x.y),
/// `concurrency` at a time; returns how many got an answer.
fn flood(gw: SocketAddr, count: usize, addresses: usize, concurrency: usize) -> usize {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let clients: Vec<Client<HttpConnector, Full<Bytes>>> = (0..addresses)
            .map(|i| {
                let mut c = HttpConnector::new();
                let ip = Ipv4Addr::new(127, 0, 1 + (i / 250) as u8, 1 + (i % 250) as u8);
                c.set_local_address(Some(IpAddr::V4(ip)));
                Client::builder(TokioExecutor::new())
                    // Each request on its own connection: open idle connections cost memory
                    // by design (bounded by --keep-alive-timeout); what is measured here is
                    // what the requests leave behind.
                    .pool_max_idle_per_host(0)
                    .build(c)
            })
            .collect();
        let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let answered = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let workers: Vec<_> = (0..concurrency)
            .map(|_| {
                let (clients, next, answered) = (clients.clone(), next.clone(), answered.clone());
                tokio::spawn(async move {
                    loop {
                        let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        if n >= count {
                            return;
                        }
                        let client = &clients[n % clients.len()];
                        let call = client.request(hostile(gw, n));
                        if let Ok(Ok(resp)) =
                            tokio::time::timeout(Duration::from_secs(30), call).await
                        {
                            let _ = resp.into_body().collect().await;
                            answered.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                    }
                })
            })
            .collect();
        for w in workers {
            w.await.unwrap();
        }
        answered.load(std::sync::atomic::Ordering::Relaxed)
    })
}

fn label_values(metrics: &str, label: &str) -> std::collections::BTreeSet<String> {
    metrics
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(&format!("{label}=\"")).nth(1))
        .filter_map(|v| v.split('"').next())
        .map(String::from)
        .collect()
}

/// Every label value of every series comes from the bundle or from a fixed set: none is a
/// value a client chose.
fn assert_labels_bounded(metrics: &str, routes: &[&str]) {
    let fixed = |label: &str, v: &str| -> bool {
        match label {
            "route" => routes.contains(&v) || v == "-" || v.starts_with("idp."),
            "method" => [
                "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE",
                "other",
            ]
            .contains(&v),
            "status" => [
                "1xx", "2xx", "3xx", "4xx", "5xx", "other", "400", "401", "403", "503",
            ]
            .contains(&v),
            "client" => v == "-" || v == "partner",
            "backend" => v == "echo",
            "account" => v == "test",
            "result" | "kind" => {
                v.len() <= 40 && v.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
            }
            "digest" | "commit" | "le" => v.len() <= 80,
            // build_info: the binary's own.
            "version" => v == env!("CARGO_PKG_VERSION"),
            "revision" => v.len() <= 80 && !v.contains(' '),
            _ => false,
        }
    };
    for line in metrics.lines().filter(|l| !l.starts_with('#')) {
        let Some((_, rest)) = line.split_once('{') else {
            continue;
        };
        let Some((labels, _)) = rest.rsplit_once('}') else {
            continue;
        };
        for pair in labels.split("\",").filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once("=\"").unwrap_or((pair, ""));
            let v = v.trim_end_matches('"');
            assert!(
                fixed(k, v),
                "label {k}={v:?} is not from the bundle or a fixed set: {line}"
            );
        }
    }
}

#[test]
fn client_chosen_values_never_become_metric_series() {
    let up = echo_backend();
    let gw = Gw::start(&gateway_doc(up, "a"), &[]);
    // Every kind of request, so every series a kind can make exists.
    assert_eq!(flood(gw.listen, 400, 4, 8), 400);
    let before = gw.metrics();
    assert_eq!(flood(gw.listen, 2_000, 20, 16), 2_000);
    let after = gw.metrics();
    assert_labels_bounded(&after, &["a", "keyed", "by-ip", "own"]);
    assert!(label_values(&after, "method").contains("other"), "{after}");
    assert_eq!(
        series_count(&before),
        series_count(&after),
        "new series:\n{after}"
    );

    // The partner's client gets a token: a series with client="partner".
    let form = "grant_type=client_credentials&client_id=partner&client_secret=partner-secret";
    let issued = gw.raw(
        format!(
            "POST /oauth2/token HTTP/1.1\r\nhost: {HOST}\r\ncontent-type: application/x-www-form-urlencoded\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{form}",
            form.len()
        )
        .as_bytes(),
        Duration::from_secs(10),
    );
    assert_eq!(status_of(&issued), 200, "{issued}");
    assert!(gw.metrics().contains("client=\"partner\""));

    // A new bundle without route `a` or the client: their series, and the old bundle's, are
    // gone.
    let old_digest = gw.status()["digest"].as_str().unwrap().to_string();
    deploy(&gw.dir, &gateway_doc(up, "renamed"), "c2");
    wait_for("the new bundle", || {
        gw.status()["digest"].as_str() != Some(old_digest.as_str())
    });
    let metrics = gw.metrics();
    assert!(!metrics.contains("route=\"a\""), "{metrics}");
    assert!(!metrics.contains(&old_digest), "{metrics}");
    assert!(!metrics.contains("client=\"partner\""), "{metrics}");
}

#[test]
fn a_hostile_flood_from_a_thousand_addresses_leaves_memory_and_series_flat() {
    let up = echo_backend();
    let gw = Gw::start(&gateway_doc(up, "a"), &[]);
    assert_eq!(flood(gw.listen, 800, 8, 8), 800);
    let before = gw.metrics();
    let rss_before = gw.rss_kib();
    let answered = flood(gw.listen, 100_000, 1_000, 64);
    assert!(answered >= 99_000, "only {answered} of 100,000 answered");
    let after = gw.metrics();
    let rss_after = gw.rss_kib();
    eprintln!(
        "series {} -> {}, RSS {rss_before} KiB -> {rss_after} KiB",
        series_count(&before),
        series_count(&after)
    );
    // Overload may show a fixed series not seen before (the token endpoint answering 503
    // busy); no series carries a value a client chose.
    assert_labels_bounded(&after, &["a", "keyed", "by-ip", "own"]);
    assert!(series_count(&after) <= series_count(&before) + 8, "{after}");
    assert!(
        rss_after < 64 * 1024,
        "RSS {rss_after} KiB after the flood (before: {rss_before} KiB)"
    );
    // And the gateway still works for a real client.
    let echoed: Value = gw.echoed("/a/still-here", &[]);
    assert_eq!(echoed["path"], "/a/still-here");
}
