//! The gateway's data plane on real sockets: a real backend server started by each test,
//! the gateway's router served on 127.0.0.1, a bundle deployed to a `file://` directory and
//! loaded the way the running gateway loads it.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::extract::{Path as UrlPath, Request};
use axum::routing::{any, get};
use fleetgate_bundle::Bundle;
use fleetgate_gateway::Options;
use fleetgate_gateway::source::FileSource;
use fleetgate_gateway::{Gateway, ReloadOutcome};
use http_body_util::BodyExt as _;
use serde_json::{Value, json};

#[path = "../src/gateway_support.rs"]
mod support;
use support::{Server, deploy, fixture, public_route, reqwest_like, serve};

const HOST: &str = "api.test.example";
const ISS: &str = "https://sso.partner.example";
const AUD: &str = "https://api.test.example";

/// The backend: `/echo/...` answers with what it received, plus named behaviours.
async fn backend(name: &'static str) -> Server {
    async fn echo(name: &'static str, req: Request) -> axum::Json<Value> {
        let headers: serde_json::Map<String, Value> = req
            .headers()
            .iter()
            .map(|(k, v)| (k.to_string(), json!(v.to_str().unwrap_or("?"))))
            .collect();
        let method = req.method().to_string();
        let path = req.uri().path().to_string();
        let query = req.uri().query().map(String::from);
        let body = req.into_body().collect().await.unwrap().to_bytes();
        axum::Json(json!({
            "backend": name,
            "method": method,
            "path": path,
            "query": query,
            "headers": headers,
            "body_len": body.len(),
        }))
    }
    let router = axum::Router::new()
        .route("/echo/{*rest}", any(move |req: Request| echo(name, req)))
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(3)).await;
                "late"
            }),
        )
        .route(
            "/status/{code}",
            get(|UrlPath(code): UrlPath<u16>| async move {
                (http::StatusCode::from_u16(code).unwrap(), "x")
            }),
        )
        .route(
            "/part/{id}",
            get(|UrlPath(id): UrlPath<String>| async move {
                match id.as_str() {
                    "fail" => (
                        http::StatusCode::INTERNAL_SERVER_ERROR,
                        axum::Json(json!({})),
                    ),
                    other => (
                        http::StatusCode::OK,
                        axum::Json(json!({ other: true, "shared": other })),
                    ),
                }
            }),
        );
    serve(router).await
}

/// A port nothing listens on.
fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

fn jwk(name: &str) -> Value {
    let all: Value = serde_json::from_str(&fixture("jwks.json")).unwrap();
    all[name].clone()
}

fn bundle(gateway: Value, idp: Value) -> Vec<u8> {
    let doc = json!({
        "apiVersion": fleetgate_bundle::bundle::BUNDLE_API_VERSION,
        "account": {"name": "test", "id": "123456789012", "region": "eu-west-1", "stage": "prod", "tenant": "acme"},
        "gateway": gateway,
        "idp": idp,
    });
    let parsed: Bundle = serde_json::from_value(doc).unwrap();
    if let Err(e) = fleetgate_bundle::compile(&parsed) {
        panic!("test bundle does not compile:\n{e}");
    }
    serde_json::to_vec(&parsed).unwrap()
}

/// The gateway under test: its data plane on a real socket, its bundle in a temp dir.
struct Harness {
    gw: Arc<Gateway>,
    source: FileSource,
    dir: std::path::PathBuf,
    server: Server,
    client: reqwest_like::Client,
    _tmp: tempfile::TempDir,
}

impl Harness {
    async fn start(bytes: &[u8], options: Options) -> Harness {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("test");
        deploy(&dir, bytes, "c1");
        let source = FileSource::new(&format!("file://{}", dir.display()));
        let gw = Arc::new(Gateway::with_options(options));
        let outcome = gw.reload_once(&source).await;
        assert!(
            matches!(outcome, ReloadOutcome::Swapped { .. }),
            "{outcome:?}"
        );
        let server = serve(fleetgate_gateway::dataplane::router(gw.clone())).await;
        Harness {
            gw,
            source,
            dir,
            client: reqwest_like::Client::new(server.addr, HOST),
            server,
            _tmp: tmp,
        }
    }

    async fn swap(&self, bytes: &[u8], commit: &str) -> ReloadOutcome {
        deploy(&self.dir, bytes, commit);
        self.gw.reload_once(&self.source).await
    }
}

#[tokio::test]
async fn the_proxy_forwards_requests_and_rewrites_headers() {
    let b = backend("orders").await;
    let dead = closed_port();
    let bytes = bundle(
        json!({
            "hosts": [HOST],
            "backends": {
                "orders": {"url": format!("http://{}", b.addr)},
                "dead": {"url": format!("http://127.0.0.1:{dead}")},
            },
            "routes": [
                public_route("orders.get", "/orders/{id}", json!({"backend": "orders", "upstreamPath": "/echo/v1/orders/{id}", "methods": ["GET", "PUT", "POST"]})),
                public_route("slow", "/slow", json!({"backend": "orders", "timeout": "200ms"})),
                public_route("dead", "/dead", json!({"backend": "dead", "retries": {"attempts": 2, "backoff": "10ms"}})),
                public_route("small", "/small/{*rest}", json!({"backend": "orders", "upstreamPath": "/echo/{rest}", "methods": ["POST"], "maxBodyBytes": 100})),
            ],
        }),
        json!({}),
    );
    let h = Harness::start(&bytes, Options::default()).await;

    let r = h
        .client
        .get(
            "/orders/42?expand=items",
            &[
                ("x-request-id", "req-123"),
                (
                    "traceparent",
                    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                ),
                ("connection", "x-hop"),
                ("x-hop", "secret"),
                ("x-forwarded-for", "198.51.100.7"),
            ],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let echo = r.json();
    assert_eq!(echo["path"], "/echo/v1/orders/42");
    assert_eq!(echo["query"], "expand=items");
    let up = &echo["headers"];
    assert_eq!(up["x-request-id"], "req-123");
    assert_eq!(r.header("x-request-id"), "req-123");
    let tp = up["traceparent"].as_str().unwrap();
    assert!(
        tp.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
        "{tp}"
    );
    assert!(
        !tp.contains("00f067aa0ba902b7"),
        "the gateway is the new parent: {tp}"
    );
    assert!(
        up.get("x-hop").is_none(),
        "hop-by-hop header forwarded: {up}"
    );
    // No trusted proxies: what the client claimed is dropped, the backend sees the peer.
    assert_eq!(up["x-forwarded-for"], "127.0.0.1");
    assert_eq!(up["x-forwarded-host"], HOST);
    assert_eq!(up["x-forwarded-proto"], "http");
    assert_eq!(up["host"], b.addr.to_string());

    // Without an id, one is made and passed on.
    let r = h.client.get("/orders/1", &[]).await;
    assert_eq!(
        r.json()["headers"]["x-request-id"],
        r.header("x-request-id")
    );
    assert_eq!(r.header("x-request-id").len(), 32);

    // A body goes through.
    let r = h.client.send("PUT", "/orders/9", &[], &[7u8; 5000]).await;
    assert_eq!(r.json()["body_len"], 5000);

    // Timeouts and unreachable backends: 504 / 502, with nothing internal in the body.
    let r = h.client.get("/slow", &[]).await;
    assert_eq!(r.status, 504, "{}", r.body);
    assert_eq!(r.json()["error"], "upstream_timeout");
    let r = h.client.get("/dead", &[]).await;
    assert_eq!(r.status, 502, "{}", r.body);
    assert!(
        !r.body.contains("127.0.0.1") && !r.body.contains(&dead.to_string()),
        "{}",
        r.body
    );

    // Body limit: announced or streamed.
    let r = h.client.send("POST", "/small/x", &[], &[1u8; 101]).await;
    assert_eq!(r.status, 413, "{}", r.body);
    let r = h.client.send("POST", "/small/x", &[], &[1u8; 100]).await;
    assert_eq!(r.status, 200, "{}", r.body);

    // Routing answers of the gateway's own.
    let r = h.client.get("/nothing", &[]).await;
    assert_eq!(
        (r.status, r.json()["error"].as_str()),
        (404, Some("not_found"))
    );
    let r = h.client.send("DELETE", "/orders/1", &[], b"").await;
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), "GET, POST, PUT");

    // The metrics count by route and status, and upstream errors by kind.
    let m = h.gw.metrics_text();
    assert!(m.contains(r#"fleetgate_gateway_http_requests_total{route="orders.get",method="GET",status="2xx"} 2"#), "{m}");
    assert!(m.contains(r#"fleetgate_gateway_upstream_errors_total{route="dead",backend="dead",kind="connect"} 1"#), "{m}");
    assert!(m.contains(r#"fleetgate_gateway_upstream_errors_total{route="slow",backend="orders",kind="timeout"} 1"#), "{m}");
    let report = h.gw.report("i-1");
    assert_eq!(report.upstream_errors, 2);
    assert!(
        report.requests_5xx >= 2 && report.requests_2xx >= 4,
        "{report:?}"
    );
    drop(h.server);
}

/// Signs `claims` with the fixture key `key` (RS256 unless said otherwise).
fn token(key: &str, kid: Option<&str>, claims: Value) -> String {
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    header.kid = kid.map(String::from);
    let k =
        jsonwebtoken::EncodingKey::from_rsa_pem(fixture(&format!("{key}.pem")).as_bytes()).unwrap();
    jsonwebtoken::encode(&header, &claims, &k).unwrap()
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn claims(extra: Value) -> Value {
    let mut c = json!({"iss": ISS, "aud": AUD, "sub": "user-1", "tenant": "acme", "exp": now() + 600, "scope": "orders:read"});
    c.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    c
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

async fn jwks_server(hits: Arc<AtomicUsize>) -> Server {
    let doc = json!({"keys": [jwk("issuer-rsa")]});
    serve(axum::Router::new().route(
        "/jwks.json",
        get(move || {
            let (doc, hits) = (doc.clone(), hits.clone());
            async move {
                hits.fetch_add(1, Ordering::SeqCst);
                axum::Json(doc)
            }
        }),
    ))
    .await
}

fn auth_bundle(backend: SocketAddr, jwks_url: &str) -> Vec<u8> {
    bundle(
        json!({
            "hosts": [HOST],
            "backends": {"orders": {"url": format!("http://{backend}")}},
            "authPolicies": {
                "partner": {
                    "issuers": ["partner-sso"],
                    "requiredClaims": {"tenant": ["acme"]},
                    "forwardClaims": {"sub": "X-Fleetgate-Subject", "tenant": "X-Fleetgate-Tenant"},
                },
                "own": {"issuers": ["local"]},
            },
            "routes": [
                {"name": "orders.get", "methods": ["GET"], "path": "/orders/{id}", "backend": "orders",
                 "upstreamPath": "/echo/orders/{id}",
                 "auth": {"policy": "partner", "scopes": ["orders:read"]}},
                {"name": "orders.local", "methods": ["GET"], "path": "/local/{id}", "backend": "orders",
                 "upstreamPath": "/echo/local/{id}", "auth": {"policy": "own"}},
                {"name": "public", "methods": ["GET"], "path": "/public", "backend": "orders",
                 "upstreamPath": "/echo/public", "public": true},
            ],
        }),
        json!({
            "issuer": {
                "url": "https://idp.test.example",
                "audiences": [AUD],
                "signingKeys": {"active": {"kid": "local-ec", "algorithm": "ES256",
                    "privateKey": {"file": Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/keys/local-ec.pem").to_str().unwrap()}}},
            },
            "trustedIssuers": [{
                "name": "partner-sso", "issuer": ISS, "jwksUrl": jwks_url,
                "audiences": [AUD], "algorithms": ["RS256"],
            }],
        }),
    )
}

#[tokio::test]
async fn jwt_table_every_bad_token_gets_the_right_status() {
    let b = backend("orders").await;
    let hits = Arc::new(AtomicUsize::new(0));
    let jwks = jwks_server(hits.clone()).await;
    let url = format!("http://{}/jwks.json", jwks.addr);
    let options = Options {
        jwks_refetch_interval: Duration::from_secs(3600),
        ..Options::default()
    };
    let h = Harness::start(&auth_bundle(b.addr, &url), options).await;
    let good = token("issuer-rsa", Some("issuer-rsa"), claims(json!({})));
    let bearer = |t: &str| format!("Bearer {t}");

    // HS256 "signed" with the issuer's RSA public key as the HMAC secret.
    let hs256 = {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
        header.kid = Some("issuer-rsa".into());
        let k = jsonwebtoken::EncodingKey::from_secret(fixture("issuer-rsa.pub.pem").as_bytes());
        jsonwebtoken::encode(&header, &claims(json!({})), &k).unwrap()
    };
    let none = format!(
        "{}.{}.",
        b64(br#"{"alg":"none","typ":"JWT","kid":"issuer-rsa"}"#),
        b64(claims(json!({})).to_string().as_bytes())
    );
    // (what, token, extra headers, expected status)
    type Case<'a> = (&'a str, Option<String>, Vec<(&'a str, &'a str)>, u16);
    let cases: Vec<Case> = vec![
        ("valid", Some(good.clone()), vec![], 200),
        ("no token", None, vec![], 401),
        (
            "expired",
            Some(token(
                "issuer-rsa",
                Some("issuer-rsa"),
                claims(json!({"exp": now() - 120})),
            )),
            vec![],
            401,
        ),
        (
            "expired within leeway",
            Some(token(
                "issuer-rsa",
                Some("issuer-rsa"),
                claims(json!({"exp": now() - 5})),
            )),
            vec![],
            200,
        ),
        (
            "not yet valid",
            Some(token(
                "issuer-rsa",
                Some("issuer-rsa"),
                claims(json!({"nbf": now() + 300})),
            )),
            vec![],
            401,
        ),
        (
            "wrong issuer",
            Some(token(
                "issuer-rsa",
                Some("issuer-rsa"),
                claims(json!({"iss": "https://evil.example"})),
            )),
            vec![],
            401,
        ),
        (
            "wrong audience",
            Some(token(
                "issuer-rsa",
                Some("issuer-rsa"),
                claims(json!({"aud": "https://billing.example"})),
            )),
            vec![],
            401,
        ),
        ("alg none", Some(none), vec![], 401),
        ("HS256 with the RSA public key", Some(hs256), vec![], 401),
        (
            "unknown kid",
            Some(token("other-rsa", Some("other-rsa"), claims(json!({})))),
            vec![],
            401,
        ),
        (
            "known kid, wrong key",
            Some(token("other-rsa", Some("issuer-rsa"), claims(json!({})))),
            vec![],
            401,
        ),
        (
            "missing scope",
            Some(token(
                "issuer-rsa",
                Some("issuer-rsa"),
                claims(json!({"scope": "payments:read"})),
            )),
            vec![],
            403,
        ),
        (
            "other tenant",
            Some(token(
                "issuer-rsa",
                Some("issuer-rsa"),
                claims(json!({"tenant": "globex"})),
            )),
            vec![],
            403,
        ),
        (
            "no exp",
            Some(token("issuer-rsa", Some("issuer-rsa"), {
                let mut c = claims(json!({}));
                c.as_object_mut().unwrap().remove("exp");
                c
            })),
            vec![],
            401,
        ),
    ];
    for (what, tok, extra, want) in &cases {
        let auth = tok.as_deref().map(bearer);
        let mut headers: Vec<(&str, &str)> = extra.clone();
        if let Some(a) = &auth {
            headers.push(("authorization", a));
        }
        let r = h.client.get("/orders/7", &headers).await;
        assert_eq!(r.status, *want, "{what}: {}", r.body);
        match want {
            401 => assert!(
                r.header("www-authenticate")
                    .starts_with("Bearer realm=\"fleetgate\""),
                "{what}"
            ),
            403 => assert!(
                r.header("www-authenticate")
                    .contains("error=\"insufficient_scope\""),
                "{what}"
            ),
            _ => {}
        }
        // The gateway's refusals never quote the token (a 200 is the backend's echo).
        if let Some(t) = tok.as_ref().filter(|_| *want != 200) {
            assert!(!r.body.contains(t.as_str()), "{what}: the token is echoed");
        }
    }

    // Spoofed claim headers are replaced by the verified claims, on public routes removed.
    let a = bearer(&good);
    let r = h
        .client
        .get(
            "/orders/7",
            &[
                ("authorization", &a),
                ("x-fleetgate-subject", "admin"),
                ("x-fleetgate-tenant", "globex"),
            ],
        )
        .await;
    let up = &r.json()["headers"];
    assert_eq!(
        (
            up["x-fleetgate-subject"].as_str(),
            up["x-fleetgate-tenant"].as_str()
        ),
        (Some("user-1"), Some("acme"))
    );
    let r = h
        .client
        .get("/public", &[("x-fleetgate-subject", "admin")])
        .await;
    assert_eq!(r.status, 200);
    assert!(r.json()["headers"].get("x-fleetgate-subject").is_none());

    // The account's own issuer: its key comes from the file secret.
    let local = {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        header.kid = Some("local-ec".into());
        let k = jsonwebtoken::EncodingKey::from_ec_pem(fixture("local-ec.pem").as_bytes()).unwrap();
        jsonwebtoken::encode(&header, &json!({"iss": "https://idp.test.example", "aud": AUD, "sub": "svc", "exp": now() + 60}), &k).unwrap()
    };
    let r = h
        .client
        .get("/local/1", &[("authorization", &bearer(&local))])
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    // ... and a partner token is not accepted there.
    let r = h.client.get("/local/1", &[("authorization", &a)]).await;
    assert_eq!(r.status, 401, "{}", r.body);

    // Unknown kid flood: at most one refetch in the interval, whatever the number of tokens.
    let before = hits.load(Ordering::SeqCst);
    let mut flood = Vec::new();
    for i in 0..40 {
        let c = h.client.clone();
        let t = token(
            "other-rsa",
            Some(&format!("made-up-{i}")),
            claims(json!({})),
        );
        flood.push(tokio::spawn(async move {
            c.get("/orders/1", &[("authorization", &format!("Bearer {t}"))])
                .await
                .status
        }));
    }
    for f in flood {
        assert_eq!(f.await.unwrap(), 401);
    }
    let fetched = hits.load(Ordering::SeqCst) - before;
    assert!(fetched <= 1, "JWKS fetched {fetched} times for one flood");
    let m = h.gw.metrics_text();
    assert!(
        m.contains(r#"fleetgate_gateway_auth_rejected_total{route="orders.get",status="403"} 2"#),
        "{m}"
    );
    drop((b, jwks));
}

#[tokio::test]
async fn rate_limits_answer_429_with_retry_after() {
    let b = backend("orders").await;
    let bytes = bundle(
        json!({
            "hosts": [HOST],
            "backends": {"orders": {"url": format!("http://{}", b.addr)}},
            "routes": [public_route("limited", "/limited", json!({"backend": "orders", "upstreamPath": "/echo/l",
                "rateLimit": {"requests": 2, "per": "1m", "key": {"header": "x-api-key"}}}))],
        }),
        json!({}),
    );
    let h = Harness::start(&bytes, Options::default()).await;
    for left in ["1", "0"] {
        let r = h.client.get("/limited", &[("x-api-key", "k1")]).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.header("ratelimit-remaining"), left);
        assert_eq!(r.header("ratelimit-limit"), "2");
    }
    let r = h.client.get("/limited", &[("x-api-key", "k1")]).await;
    assert_eq!(r.status, 429, "{}", r.body);
    let retry: u64 = r.header("retry-after").parse().unwrap();
    assert!((1..=30).contains(&retry), "{retry}");
    assert_eq!(r.header("ratelimit-remaining"), "0");
    // Another key, its own bucket; the limit survives a reload of an unchanged limit.
    assert_eq!(
        h.client
            .get("/limited", &[("x-api-key", "k2")])
            .await
            .status,
        200
    );
    let mut doc: Value = serde_json::from_slice(&bytes).unwrap();
    doc["gateway"]["flags"] = json!({"unused": {"enabled": true}});
    let changed = serde_json::to_vec(&doc).unwrap();
    assert!(matches!(
        h.swap(&changed, "c2").await,
        ReloadOutcome::Swapped { .. }
    ));
    assert_eq!(
        h.client
            .get("/limited", &[("x-api-key", "k1")])
            .await
            .status,
        429
    );
    assert!(
        h.gw.metrics_text()
            .contains(r#"fleetgate_gateway_rate_limited_total{route="limited"} 2"#)
    );
}

#[tokio::test]
async fn canary_sticky_ab_flags_and_cors() {
    let (stable, canary, beta) = (
        backend("stable").await,
        backend("canary").await,
        backend("beta").await,
    );
    let bytes = bundle(
        json!({
            "hosts": [HOST],
            "backends": {
                "stable": {"url": format!("http://{}", stable.addr)},
                "canary": {"url": format!("http://{}", canary.addr)},
                "beta": {"url": format!("http://{}", beta.addr)},
            },
            "flags": {"new-checkout": {"enabled": false}},
            "routes": [
                public_route("split", "/split", json!({"upstreamPath": "/echo/s",
                    "backends": [{"backend": "stable", "weight": 80}, {"backend": "canary", "weight": 20}],
                    "sticky": {"cookie": "uid"},
                    "variants": [{"name": "beta-testers", "match": {"header": {"name": "x-beta", "value": "1"}}, "backend": "beta"}],
                    "cors": {"allowOrigins": ["https://app.example"], "allowMethods": ["GET"], "allowHeaders": ["authorization"], "maxAge": "10m"}})),
                public_route("checkout", "/checkout", json!({"backend": "stable", "flag": "new-checkout"})),
                public_route("killed", "/killed", json!({"backend": "stable", "enabled": false, "disabledStatus": 410})),
            ],
        }),
        json!({}),
    );
    let h = Harness::start(&bytes, Options::default()).await;
    let mut counts = std::collections::BTreeMap::new();
    for _ in 0..400 {
        let r = h.client.get("/split", &[]).await;
        *counts
            .entry(r.json()["backend"].as_str().unwrap().to_string())
            .or_insert(0) += 1;
    }
    let c = counts.get("canary").copied().unwrap_or(0);
    // 20% of 400 = 80; far tails excluded (binomial sd = 8).
    assert!((40..=120).contains(&c), "{counts:?}");
    assert!(!counts.contains_key("beta"));
    for user in 0..20 {
        let cookie = format!("uid=u{user}");
        let first = h.client.get("/split", &[("cookie", &cookie)]).await.json()["backend"].clone();
        for _ in 0..5 {
            assert_eq!(
                h.client.get("/split", &[("cookie", &cookie)]).await.json()["backend"],
                first
            );
        }
    }
    let r = h.client.get("/split", &[("x-beta", "1")]).await;
    assert_eq!(r.json()["backend"], "beta");
    assert_eq!(r.header("x-fleetgate-variant"), "beta-testers");

    let r = h.client.get("/checkout", &[]).await;
    assert_eq!(
        (r.status, r.json()["error"].as_str()),
        (503, Some("route_disabled"))
    );
    assert_eq!(h.client.get("/killed", &[]).await.status, 410);

    // CORS: a preflight for the route, and the header on the real request.
    let r = h
        .client
        .send(
            "OPTIONS",
            "/split",
            &[
                ("origin", "https://app.example"),
                ("access-control-request-method", "GET"),
            ],
            b"",
        )
        .await;
    assert!(r.status < 300, "{} {}", r.status, r.body);
    assert_eq!(
        r.header("access-control-allow-origin"),
        "https://app.example"
    );
    assert_eq!(r.header("access-control-max-age"), "600");
    let r = h
        .client
        .get("/split", &[("origin", "https://app.example")])
        .await;
    assert_eq!(
        r.header("access-control-allow-origin"),
        "https://app.example"
    );
    let r = h
        .client
        .get("/split", &[("origin", "https://evil.example")])
        .await;
    assert_eq!(r.header("access-control-allow-origin"), "");
    drop((stable, canary, beta));
}

#[tokio::test]
async fn aggregation_merges_parts_and_reports_partial_results() {
    let b = backend("parts").await;
    let dead = closed_port();
    let bytes = bundle(
        json!({
            "hosts": [HOST],
            "backends": {
                "parts": {"url": format!("http://{}", b.addr)},
                "dead": {"url": format!("http://127.0.0.1:{dead}")},
            },
            "routes": [
                public_route("overview", "/overview/{id}", json!({"aggregate": {"parts": [
                    {"backend": "parts", "path": "/part/a"},
                    {"backend": "parts", "path": "/part/b"},
                    {"backend": "parts", "path": "/part/{id}", "group": "detail"},
                ]}})),
                public_route("strict", "/strict", json!({"aggregate": {"parts": [
                    {"backend": "parts", "path": "/part/a"},
                    {"backend": "parts", "path": "/part/fail"},
                ]}})),
                public_route("lenient", "/lenient", json!({"aggregate": {"onPartialFailure": "partial", "parts": [
                    {"backend": "parts", "path": "/part/a"},
                    {"backend": "dead", "path": "/part/x", "group": "gone"},
                ]}})),
            ],
        }),
        json!({}),
    );
    let h = Harness::start(&bytes, Options::default()).await;
    let r = h.client.get("/overview/c", &[]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.json(),
        json!({"a": true, "b": true, "shared": "b", "detail": {"c": true, "shared": "c"}})
    );
    assert_eq!(r.header("x-fleetgate-completed"), "true");
    let r = h.client.get("/strict", &[]).await;
    assert_eq!(r.status, 502, "{}", r.body);
    let r = h.client.get("/lenient", &[]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json(), json!({"a": true, "shared": "a"}));
    assert_eq!(r.header("x-fleetgate-completed"), "false");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_reload_under_load_drops_no_request() {
    let b = backend("orders").await;
    let version = |n: usize| {
        bundle(
            json!({
                "hosts": [HOST],
                "backends": {"orders": {"url": format!("http://{}", b.addr)}},
                "routes": [public_route("v", "/v", json!({"backend": "orders", "upstreamPath": format!("/echo/version-{n}")}))],
            }),
            json!({}),
        )
    };
    let h = Harness::start(&version(0), Options::default()).await;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut clients = Vec::new();
    for _ in 0..4 {
        let (c, stop) = (h.client.clone(), stop.clone());
        clients.push(tokio::spawn(async move {
            let mut seen = BTreeSet::new();
            let mut failed = Vec::new();
            let mut n = 0usize;
            while !stop.load(Ordering::SeqCst) {
                let r = c.get("/v", &[]).await;
                n += 1;
                if r.status == 200 {
                    seen.insert(r.json()["path"].as_str().unwrap().to_string());
                } else {
                    failed.push(format!("{} {}", r.status, r.body));
                }
            }
            (seen, failed, n)
        }));
    }
    let mut good = BTreeSet::from(["/echo/version-0".to_string()]);
    let mut rejected = 0;
    for i in 1..=50 {
        let outcome = if i % 10 == 5 {
            // Broken: a bundle whose bytes do not match the digest the pointer names.
            let digest = deploy(&h.dir, &version(1000 + i), &format!("broken-{i}"));
            std::fs::write(
                h.dir.join(format!("bundles/{}.json", digest.hex())),
                b"{\"tampered\": true}",
            )
            .unwrap();
            h.gw.reload_once(&h.source).await
        } else {
            good.insert(format!("/echo/version-{i}"));
            h.swap(&version(i), &format!("c{i}")).await
        };
        match outcome {
            ReloadOutcome::Swapped { .. } => assert!(i % 10 != 5, "broken bundle {i} swapped in"),
            ReloadOutcome::Rejected { .. } => rejected += 1,
            other => panic!("bundle {i}: {other:?}"),
        }
        // Let each version serve a few requests.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    stop.store(true, Ordering::SeqCst);
    let mut seen = BTreeSet::new();
    let mut total = 0;
    for c in clients {
        let (s, failed, n) = c.await.unwrap();
        assert!(
            failed.is_empty(),
            "failed requests during reloads: {failed:?}"
        );
        seen.extend(s);
        total += n;
    }
    assert_eq!(rejected, 5);
    assert_eq!(
        seen, good,
        "every good bundle served ({total} requests), no broken one"
    );
    let status = h.gw.status("test");
    assert_eq!(status.reload_failures, 5);
    let last = status.last_error.unwrap();
    assert!(last.contains("sha256"), "{last}");
}
