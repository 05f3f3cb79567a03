//! The gateway's tests' common parts: servers on free loopback ports, test keys, deploying a
//! bundle to a `file://` account directory, and a small HTTP client. Included by the test
//! files that need it with `#[path]`.

#![allow(dead_code, clippy::unwrap_used)]

use std::net::SocketAddr;
use std::path::Path;

use fleetgate_bundle::Digest;
use serde_json::{Value, json};

/// A server on a free loopback port, stopped when dropped.
pub struct Server {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub async fn serve(router: axum::Router) -> Server {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        axum::serve(
            listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .unwrap();
    });
    Server { addr, task }
}

pub fn fixture(name: &str) -> String {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/keys");
    std::fs::read_to_string(dir.join(name)).unwrap()
}

/// Stores `bytes` as a bundle of the account directory `dir` and points `current.json` at it.
pub fn deploy(dir: &Path, bytes: &[u8], commit: &str) -> Digest {
    let digest = Digest::of(bytes);
    std::fs::create_dir_all(dir.join("bundles")).unwrap();
    std::fs::write(dir.join(format!("bundles/{}.json", digest.hex())), bytes).unwrap();
    let pointer = json!({
        "digest": digest.to_string(), "commit": commit,
        "applied_by": "test", "applied_at": "2026-11-23T00:00:00Z",
    });
    let tmp = dir.join(".current.json.tmp");
    std::fs::write(&tmp, serde_json::to_vec(&pointer).unwrap()).unwrap();
    std::fs::rename(tmp, dir.join("current.json")).unwrap();
    digest
}

/// A small HTTP/1 client on hyper (keep-alive pool), returning status, headers and body.
pub mod reqwest_like {
    use super::*;
    use http_body_util::BodyExt as _;
    use http_body_util::Full;
    use hyper_util::client::legacy::Client as Hyper;
    use hyper_util::client::legacy::connect::HttpConnector;

    #[derive(Debug)]
    pub struct Resp {
        pub status: u16,
        pub headers: http::HeaderMap,
        pub body: String,
    }

    impl Resp {
        pub fn json(&self) -> Value {
            serde_json::from_str(&self.body)
                .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
        }
        pub fn header(&self, name: &str) -> &str {
            self.headers
                .get(name)
                .map(|v| v.to_str().unwrap())
                .unwrap_or("")
        }
    }

    #[derive(Clone, Debug)]
    pub struct Client {
        addr: SocketAddr,
        host: String,
        inner: Hyper<HttpConnector, Full<HBytes>>,
    }

    use hyper::body::Bytes as HBytes;

    impl Client {
        /// Requests to `addr` with `Host: host`.
        pub fn new(addr: SocketAddr, host: &str) -> Client {
            Client {
                addr,
                host: host.to_string(),
                inner: Hyper::builder(hyper_util::rt::TokioExecutor::new()).build_http(),
            }
        }

        pub async fn send(
            &self,
            method: &str,
            path: &str,
            headers: &[(&str, &str)],
            body: &[u8],
        ) -> Resp {
            let mut b = http::Request::builder()
                .method(method)
                .uri(format!("http://{}{path}", self.addr))
                .header("host", &self.host);
            for (k, v) in headers {
                b = b.header(*k, *v);
            }
            let req = b.body(Full::new(HBytes::copy_from_slice(body))).unwrap();
            let resp = self.inner.request(req).await.unwrap();
            let status = resp.status().as_u16();
            let headers = resp.headers().clone();
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            Resp {
                status,
                headers,
                body: String::from_utf8_lossy(&body).into_owned(),
            }
        }

        pub async fn get(&self, path: &str, headers: &[(&str, &str)]) -> Resp {
            self.send("GET", path, headers, b"").await
        }
    }
}

pub fn public_route(name: &str, path: &str, extra: Value) -> Value {
    let mut r = json!({"name": name, "methods": ["GET"], "path": path, "public": true});
    if let (Some(obj), Some(extra)) = (r.as_object_mut(), extra.as_object()) {
        obj.extend(extra.clone());
    }
    r
}
