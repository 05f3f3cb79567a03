//! The floor of the gateway's HTTP stack, for `bench/gateway.sh` only: a reverse proxy with
//! nothing but hyper's server and hyper-util's pooled client, on the same tokio runtime the
//! gateway uses. No routing, auth, limits, metrics or logs. The gateway cannot be faster
//! than this; the benchmark prints both so the cost of the gateway's own work is visible.
//!
//!     cargo run --release -p fleetgate-gateway --example bare_proxy -- LISTEN_ADDR BACKEND_URL

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

fn bad_gateway() -> Response<http_body_util::Either<Incoming, http_body_util::Empty<bytes::Bytes>>>
{
    let mut resp = Response::new(http_body_util::Either::Right(http_body_util::Empty::new()));
    *resp.status_mut() = StatusCode::BAD_GATEWAY;
    resp
}
