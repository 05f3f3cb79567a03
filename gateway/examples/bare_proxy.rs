//! The floor of the gateway's HTTP stack, for `bench/gateway.sh` only: a reverse proxy with
//! nothing but hyper's server and hyper-util's pooled client, on the same tokio runtime the
//! gateway uses. No routing, auth, limits, metrics or logs. The gateway cannot be faster
//! than this; the benchmark prints both so the cost of the gateway's own work is visible.
//!
//! With `--affinity`, each client connection gets its own upstream connection (opened at its
//! first request, closed with it) instead of one from the shared pool: the other way past the
//! pool's costs that the benchmark measures side by side.
//!
//!     cargo run --release -p fleetgate-gateway --example bare_proxy -- LISTEN_ADDR BACKEND_URL [--affinity]

use std::convert::Infallible;
use std::net::SocketAddr;

use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};

#[allow(clippy::print_stderr)]
fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(listen), Some(backend)) = (args.next(), args.next()) else {
        eprintln!(
            "usage: bare_proxy LISTEN_ADDR BACKEND_URL (e.g. 127.0.0.1:8080 http://127.0.0.1:9000)"
        );
        std::process::exit(2);
    };
    let listen: SocketAddr = listen.parse().expect("LISTEN_ADDR is host:port");
    let backend: hyper::Uri = backend.parse().expect("BACKEND_URL is a URL");
    let affinity = args.next().as_deref() == Some("--affinity");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    runtime.block_on(async move {
        let client: Client<HttpConnector, Incoming> =
            Client::builder(TokioExecutor::new()).build(HttpConnector::new());
        let listener = tokio::net::TcpListener::bind(listen).await.expect("bind");
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            if affinity {
                tokio::spawn(serve_with_affinity(stream, backend.clone()));
                continue;
            }
            let (client, backend) = (client.clone(), backend.clone());
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
                    let client = client.clone();
                    let mut parts = backend.clone().into_parts();
                    parts.path_and_query = req.uri().path_and_query().cloned();
                    async move {
                        let Ok(uri) = hyper::Uri::from_parts(parts) else {
                            return Ok::<_, Infallible>(bad_gateway());
                        };
                        *req.uri_mut() = uri;
                        Ok(match client.request(req).await {
                            Ok(resp) => resp.map(http_body_util::Either::Left),
                            Err(_) => bad_gateway(),
                        })
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
}

/// One client connection, proxied over one upstream connection of its own.
async fn serve_with_affinity(stream: tokio::net::TcpStream, backend: hyper::Uri) {
    type Upstream = hyper::client::conn::http1::SendRequest<Incoming>;
    let slot: std::sync::Arc<tokio::sync::Mutex<Option<Upstream>>> = Default::default();
    let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
        let (slot, backend) = (slot.clone(), backend.clone());
        async move {
            let mut guard = slot.lock().await;
            if guard.as_ref().is_none_or(|s| s.is_closed()) {
                let authority = backend.authority().map(|a| a.as_str()).unwrap_or_default();
                let Ok(io) = tokio::net::TcpStream::connect(authority).await else {
                    return Ok::<_, Infallible>(bad_gateway());
                };
                let _ = io.set_nodelay(true);
                let Ok((send, conn)) =
                    hyper::client::conn::http1::handshake(TokioIo::new(io)).await
                else {
                    return Ok(bad_gateway());
                };
                tokio::spawn(conn);
                *guard = Some(send);
            }
            let Some(send) = guard.as_mut() else {
                return Ok(bad_gateway());
            };
            if send.ready().await.is_err() {
                *guard = None;
                return Ok(bad_gateway());
            }
            // The request line in origin form, as a client connection sends it.
            if let Some(pq) = req.uri().path_and_query().cloned() {
                *req.uri_mut() = pq.as_str().parse().unwrap_or_default();
            }
            if let Some(a) = backend.authority()
                && let Ok(v) = http::HeaderValue::from_str(a.as_str())
            {
                req.headers_mut().insert(http::header::HOST, v);
            }
            let sent = send.send_request(req);
            drop(guard);
            Ok(match sent.await {
                Ok(resp) => resp.map(http_body_util::Either::Left),
                Err(_) => bad_gateway(),
            })
        }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(stream), service)
        .await;
}

fn bad_gateway() -> Response<http_body_util::Either<Incoming, http_body_util::Empty<bytes::Bytes>>>
{
    let mut resp = Response::new(http_body_util::Either::Right(http_body_util::Empty::new()));
    *resp.status_mut() = StatusCode::BAD_GATEWAY;
    resp
}
