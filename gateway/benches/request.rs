//! One request through the data plane's handler (`dataplane::serve`), in process, against a
//! real backend on loopback: the public route and the route with JWT validation (RS256) and
//! a rate limit by subject, the two gateway rows of `bench/gateway.sh`. No server or socket
//! on the client side, so what is measured is the gateway's own work plus its upstream call.
//!
//! Before criterion's timing, a counting allocator (allocation-counter's, which counts the
//! allocations of the measuring thread only: the gateway's current-thread runtime, not the
//! backend's thread) reports the heap allocations and bytes of
//! one request of each route (the median of 1,000): the number that "no allocation per
//! request that can be avoided" is about. Lower is better; it is exact, not noisy.
//!
//! `cargo bench -p fleetgate-gateway --bench request`

use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::Arc;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use http_body_util::BodyExt as _;
use serde_json::json;

const HOST: &str = "api.bench.example";
const ISS: &str = "https://sso.bench.example";

fn keys() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/keys")
}

/// A backend answering every request with 512 bytes, on its own thread and runtime.
fn backend() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
            let body = bytes::Bytes::from(vec![b'x'; 512]);
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let body = body.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |_req| {
                        let body = body.clone();
                        async move {
                            Ok::<_, std::convert::Infallible>(http::Response::new(
                                http_body_util::Full::new(body),
                            ))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
    });
    addr
}

fn bundle(backend: SocketAddr) -> Vec<u8> {
    let jwks: serde_json::Value =
        serde_json::from_slice(&std::fs::read(keys().join("jwks.json")).expect("jwks"))
            .expect("jwks json");
    let doc = json!({
        "apiVersion": fleetgate_bundle::bundle::BUNDLE_API_VERSION,
        "account": {"name": "bench", "id": "123456789012", "region": "eu-west-1",
                    "stage": "prod", "tenant": "bench"},
        "gateway": {
            "hosts": [HOST],
            "backends": {"app": {"url": format!("http://{backend}")}},
            "authPolicies": {"partner": {"issuers": ["bench-sso"]}},
            "routes": [
                {"name": "public", "methods": ["GET"], "path": "/public", "backend": "app",
                 "upstreamPath": "/", "public": true},
                {"name": "secured", "methods": ["GET"], "path": "/secured", "backend": "app",
                 "upstreamPath": "/", "auth": {"policy": "partner", "scopes": ["bench:read"]},
                 "rateLimit": {"requests": 100_000_000, "per": "1s", "key": "subject"}},
            ],
        },
        "idp": {"trustedIssuers": [{
            "name": "bench-sso", "issuer": ISS, "jwks": {"keys": [jwks["issuer-rsa"].clone()]},
            "audiences": [format!("https://{HOST}")], "algorithms": ["RS256"]}]},
    });
    let parsed: fleetgate_bundle::Bundle = serde_json::from_value(doc).expect("bundle");
    serde_json::to_vec(&parsed).expect("encode")
}

fn token() -> String {
    let key = jsonwebtoken::EncodingKey::from_rsa_pem(
        &std::fs::read(keys().join("issuer-rsa.pem")).expect("key"),
    )
    .expect("rsa key");
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    header.kid = Some("issuer-rsa".into());
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
        + 24 * 3600;
    let claims = json!({"iss": ISS, "aud": format!("https://{HOST}"), "sub": "bench",
                        "scope": "bench:read", "exp": exp});
    jsonwebtoken::encode(&header, &claims, &key).expect("sign")
}

struct Setup {
    rt: tokio::runtime::Runtime,
    plane: fleetgate_gateway::dataplane::DataPlane,
    token: String,
    _dir: tempfile::TempDir,
}

fn setup() -> Setup {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let bytes = bundle(backend());
    let digest = fleetgate_bundle::Digest::of(&bytes);
    std::fs::create_dir_all(dir.path().join("bundles")).expect("mkdir");
    std::fs::write(
        dir.path().join(format!("bundles/{}.json", digest.hex())),
        &bytes,
    )
    .expect("write bundle");
    std::fs::write(
        dir.path().join("current.json"),
        serde_json::to_vec(&json!({"digest": digest.to_string(), "commit": null,
            "applied_by": "bench", "applied_at": "2026-12-05T00:00:00Z"}))
        .expect("pointer"),
    )
    .expect("write pointer");
    let gateway = Arc::new(fleetgate_gateway::reload::Gateway::new());
    let source = fleetgate_gateway::source::FileSource::new(&dir.path().display().to_string());
    let outcome = rt.block_on(gateway.reload_once(&source));
    assert!(
        matches!(
            outcome,
            fleetgate_gateway::reload::ReloadOutcome::Swapped { .. }
        ),
        "{outcome:?}"
    );
    Setup {
        rt,
        plane: fleetgate_gateway::dataplane::plane(gateway),
        token: token(),
        _dir: dir,
    }
}

fn request(s: &Setup, path: &str, auth: bool) -> http::Request<axum::body::Body> {
    let mut req = http::Request::get(path)
        .header(http::header::HOST, HOST)
        .body(axum::body::Body::empty())
        .expect("request");
    if auth {
        req.headers_mut().insert(
            http::header::AUTHORIZATION,
            http::HeaderValue::from_str(&format!("Bearer {}", s.token)).expect("header"),
        );
    }
    req
}

/// One request answered, its body read to the end.
async fn one(s: &Setup, req: http::Request<axum::body::Body>) -> usize {
    let peer: SocketAddr = "127.0.0.1:40000".parse().expect("peer");
    let resp = fleetgate_gateway::dataplane::serve(s.plane.clone(), peer, req).await;
    assert_eq!(resp.status(), 200);
    resp.into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes()
        .len()
}

/// Median heap allocations and bytes of one request, over `n`.
fn per_request(s: &Setup, path: &str, auth: bool, n: usize) -> (u64, u64) {
    let mut counts = Vec::with_capacity(n);
    let mut bytes = Vec::with_capacity(n);
    for _ in 0..n {
        let req = request(s, path, auth);
        let info = allocation_counter::measure(|| {
            black_box(s.rt.block_on(one(s, req)));
        });
        counts.push(info.count_total);
        bytes.push(info.bytes_total);
    }
    counts.sort_unstable();
    bytes.sort_unstable();
    (counts[n / 2], bytes[n / 2])
}

#[allow(clippy::print_stdout)]
fn bench(c: &mut Criterion) {
    let s = setup();
    // Warm up: the upstream connection, the verified-token cache.
    for _ in 0..100 {
        s.rt.block_on(one(&s, request(&s, "/public", false)));
        s.rt.block_on(one(&s, request(&s, "/secured", true)));
    }
    for (name, path, auth) in [
        ("public", "/public", false),
        ("jwt_ratelimit", "/secured", true),
    ] {
        let (allocs, bytes) = per_request(&s, path, auth, 1000);
        println!(
            "request/{name}: {allocs} allocations, {bytes} bytes per request (median of 1,000; \
             the gateway's thread only)"
        );
    }
    let mut group = c.benchmark_group("request");
    group.bench_function("public", |b| {
        b.iter_batched(
            || request(&s, "/public", false),
            |req| black_box(s.rt.block_on(one(&s, req))),
            BatchSize::SmallInput,
        )
    });
    group.bench_function("jwt_ratelimit", |b| {
        b.iter_batched(
            || request(&s, "/secured", true),
            |req| black_box(s.rt.block_on(one(&s, req))),
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
