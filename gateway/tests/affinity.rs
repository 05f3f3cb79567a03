//! Upstream connection affinity, with the real binary on loopback: a client connection's
//! requests reach the backend over a connection of their own (`--upstream-affinity`), within
//! the gateway's bound, and a backend that closes its connections changes nothing a client
//! sees.

#![allow(clippy::unwrap_used)]

#[path = "hostile/support.rs"]
mod support;

use std::net::SocketAddr;

use http_body_util::BodyExt as _;
use support::*;

/// A backend that answers every request with the client port of the connection it came on,
/// as text; with `close`, it closes every connection after one answer.
fn port_backend(close: bool) -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            loop {
                let (stream, peer) = listener.accept().await.unwrap();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |_req| async move {
                        let mut resp = http::Response::new(http_body_util::Full::new(
                            bytes::Bytes::from(peer.port().to_string()),
                        ));
                        if close {
                            resp.headers_mut()
                                .insert(http::header::CONNECTION, "close".parse().unwrap());
                        }
                        Ok::<_, std::convert::Infallible>(resp)
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .keep_alive(!close)
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
    });
    addr
}

fn gateway(backend: SocketAddr, args: &[&str]) -> Gw {
    let b = bundle(
        serde_json::json!({
            "hosts": [HOST],
            "backends": {"app": {"url": format!("http://{backend}")}},
            "routes": [{"name": "pub", "methods": ["GET"], "path": "/pub",
                        "backend": "app", "public": true}],
        }),
        serde_json::json!({}),
    );
    Gw::start(&b, args)
}

/// A keep-alive client connection to the gateway.
struct Client {
    send: hyper::client::conn::http1::SendRequest<http_body_util::Empty<bytes::Bytes>>,
}

impl Client {
    async fn connect(addr: SocketAddr) -> Client {
        let io = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(io))
            .await
            .unwrap();
        tokio::spawn(conn);
        Client { send }
    }

    /// The backend port that answered, as the backend saw it.
    async fn backend_port(&mut self) -> String {
        self.send.ready().await.unwrap();
        let req = http::Request::get("/pub")
            .header(http::header::HOST, HOST)
            .body(http_body_util::Empty::new())
            .unwrap();
        let resp = self.send.send_request(req).await.unwrap();
        assert_eq!(resp.status(), 200);
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8(body.to_vec()).unwrap()
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Two client connections, their requests interleaved: (a's ports, b's ports). Both are
/// still open when `/metrics` is read into `metrics`.
fn interleaved_with(gw: &Gw, metrics: &mut String) -> (Vec<String>, Vec<String>) {
    runtime().block_on(async {
        let (mut a, mut b) = (
            Client::connect(gw.listen).await,
            Client::connect(gw.listen).await,
        );
        let (mut pa, mut pb) = (Vec::new(), Vec::new());
        for _ in 0..3 {
            pa.push(a.backend_port().await);
            pb.push(b.backend_port().await);
        }
        *metrics = gw.metrics();
        (pa, pb)
    })
}

fn interleaved(gw: &Gw) -> (Vec<String>, Vec<String>) {
    interleaved_with(gw, &mut String::new())
}

#[test]
fn each_client_connection_keeps_its_own_backend_connection() {
    let gw = gateway(port_backend(false), &[]);
    let mut metrics = String::new();
    let (a, b) = interleaved_with(&gw, &mut metrics);
    // The first request of a connection goes through the pool; from the second on, each
    // client connection has a backend connection of its own.
    assert!(a[1..].iter().all(|p| *p == a[1]), "{a:?}");
    assert!(b[1..].iter().all(|p| *p == b[1]), "{b:?}");
    assert_ne!(a[1], b[1]);
    assert!(
        metrics.contains("fleetgate_gateway_upstream_pinned_connections 2"),
        "{metrics}"
    );
    // Closed with their client connections.
    wait_for("the pinned connections to close", || {
        gw.metrics()
            .contains("fleetgate_gateway_upstream_pinned_connections 0")
    });
}

#[test]
fn one_request_per_connection_never_opens_a_pinned_connection() {
    let up = port_backend(false);
    let gw = gateway(up, &[]);
    let ports: std::collections::BTreeSet<String> = (0..5)
        .map(|_| {
            let (status, text) = gw.get("/pub", &[]);
            assert_eq!(status, 200, "{text}");
            text.rsplit("\r\n\r\n").next().unwrap().to_string()
        })
        .collect();
    // `Connection: close` clients share the pool's one connection.
    assert_eq!(ports.len(), 1, "{ports:?}");
}

#[test]
fn with_affinity_off_the_requests_share_the_pool() {
    let gw = gateway(port_backend(false), &["--upstream-affinity", "0"]);
    let (a, b) = interleaved(&gw);
    // Sequential requests reuse the pool's one idle connection, whichever client sent them.
    let all: std::collections::BTreeSet<_> = a.iter().chain(&b).collect();
    assert_eq!(all.len(), 1, "{a:?} {b:?}");
}

#[test]
fn past_the_bound_a_client_connection_uses_the_pool() {
    let gw = gateway(port_backend(false), &["--upstream-affinity", "1"]);
    let (a, b) = interleaved(&gw);
    // The first client connection holds the one pinned connection; the second one's
    // requests go through the pool, on a connection of the pool's.
    assert!(a[1..].iter().all(|p| *p == a[1]), "{a:?}");
    assert!(b.iter().all(|p| *p == b[0]), "{b:?}");
    assert_ne!(a[1], b[0]);
}

#[test]
fn a_backend_that_closes_every_connection_changes_nothing_for_the_client() {
    let gw = gateway(port_backend(true), &[]);
    let (a, b) = interleaved(&gw);
    // Every answer came (backend_port asserts 200), each over a new backend connection.
    let all: std::collections::BTreeSet<_> = a.iter().chain(&b).collect();
    assert_eq!(all.len(), 6, "{a:?} {b:?}");
    assert!(
        !gw.metrics().contains("upstream_errors_total{"),
        "{}",
        gw.metrics()
    );
}
