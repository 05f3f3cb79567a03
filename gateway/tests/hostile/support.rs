//! The hostile-client suite's harness: the real `fleetgate-gateway` binary on free loopback
//! ports with a `file://` source, an echo backend that tells what reached it, and raw
//! sockets to send what no well-behaved client would.

#![allow(dead_code, clippy::unwrap_used)]

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use axum::extract::Request;
use fleetgate_bundle::Digest;
use http_body_util::BodyExt as _;
use serde_json::{Value, json};

pub const HOST: &str = "api.test.example";
pub const AUD: &str = "https://api.test.example";
pub const ISS: &str = "https://sso.partner.example";

pub fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// A fixture of the workspace's test keys (tests/fixtures/keys).
pub fn fixture_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/keys")
        .join(name)
}

pub fn fixture(name: &str) -> String {
    std::fs::read_to_string(fixture_path(name)).unwrap()
}

/// A backend on a free loopback port that answers every request with what it received:
/// `{"method", "path" (as sent on the wire), "query", "headers": [[name, value], ...],
/// "body_len"}`; a path with `/slow` in it is answered after 2 s. Runs on its own thread and runtime until the test process ends.
pub fn echo_backend() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            let app = axum::Router::new().fallback(|req: Request| async move {
                let headers: Vec<Value> = req
                    .headers()
                    .iter()
                    .map(|(k, v)| json!([k.as_str(), String::from_utf8_lossy(v.as_bytes())]))
                    .collect();
                let method = req.method().to_string();
                let path = req.uri().path().to_string();
                if path.contains("/slow") {
                    tokio::time::sleep(Duration::from_secs(2)).await;
                }
                let query = req.uri().query().map(String::from);
                let body_len = match req.into_body().collect().await {
                    Ok(b) => b.to_bytes().len() as i64,
                    Err(_) => -1,
                };
                axum::Json(json!({
                    "method": method, "path": path, "query": query,
                    "headers": headers, "body_len": body_len,
                }))
            });
            axum::serve(listener, app).await.unwrap();
        });
    });
    addr
}

/// A bundle document of account `test` (compiled here, so a typo fails the test at once).
pub fn bundle(gateway: Value, idp: Value) -> Vec<u8> {
    let doc = json!({
        "apiVersion": fleetgate_bundle::bundle::BUNDLE_API_VERSION,
        "account": {"name": "test", "id": "123456789012", "region": "eu-west-1", "stage": "prod", "tenant": "acme"},
        "gateway": gateway,
        "idp": idp,
    });
    let parsed: fleetgate_bundle::Bundle = serde_json::from_value(doc).unwrap();
    if let Err(e) = fleetgate_bundle::compile(&parsed) {
        panic!("test bundle does not compile:\n{e}");
    }
    serde_json::to_vec(&parsed).unwrap()
}

/// The embedded IdP of the test account, signing with the fixture EC key.
pub fn local_issuer() -> Value {
    json!({
        "url": "https://idp.test.example",
        "audiences": [AUD],
        "signingKeys": {"active": {"kid": "local-ec", "algorithm": "ES256",
            "privateKey": {"file": fixture_path("local-ec.pem").to_str().unwrap()}}},
    })
}

/// Stores `bytes` as a bundle of the account directory `dir` and points `current.json` at it.
pub fn deploy(dir: &Path, bytes: &[u8], commit: &str) -> Digest {
    let digest = Digest::of(bytes);
    std::fs::create_dir_all(dir.join("bundles")).unwrap();
    std::fs::write(dir.join(format!("bundles/{}.json", digest.hex())), bytes).unwrap();
    let pointer = json!({"digest": digest.to_string(), "commit": commit,
        "applied_by": "test", "applied_at": "2026-11-23T00:00:00Z"});
    let tmp = dir.join(".current.tmp");
    std::fs::write(&tmp, serde_json::to_vec(&pointer).unwrap()).unwrap();
    std::fs::rename(tmp, dir.join("current.json")).unwrap();
    digest
}

pub fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A running `fleetgate-gateway`, killed when dropped.
pub struct Gw {
    child: Child,
    pub listen: SocketAddr,
    pub admin: SocketAddr,
    pub dir: PathBuf,
    pub log: PathBuf,
    _tmp: tempfile::TempDir,
}

impl Drop for Gw {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Gw {
    /// Starts the binary on `bundle` with `args` added to its command line, and waits until
    /// it is ready.
    pub fn start(bundle: &[u8], args: &[&str]) -> Gw {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("test");
        deploy(&dir, bundle, "c1");
        let (listen, admin) = (free_addr(), free_addr());
        let log = tmp.path().join("gateway.log");
        let child = Command::new(env!("CARGO_BIN_EXE_fleetgate-gateway"))
            .args(["--source", &format!("file://{}", dir.display())])
            .args(["--listen", &listen.to_string()])
            .args(["--admin-listen", &admin.to_string()])
            .args(["--poll", "200ms", "--status-every", "200ms"])
            .args(["--instance-id", "gw-1", "--drain-timeout", "2s"])
            .args(args)
            .env("FLEETGATE_LOG", "info")
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let gw = Gw {
            child,
            listen,
            admin,
            dir,
            log,
            _tmp: tmp,
        };
        wait_for("the gateway to be ready", || {
            TcpStream::connect(admin).is_ok() && http_get(admin, "/ready", &[]).0 == 200
        });
        gw
    }

    /// A GET on the data plane with `Host: HOST` on a fresh connection.
    pub fn get(&self, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
        http_get(self.listen, path, headers)
    }

    /// The JSON body of a GET answered by the echo backend (panics otherwise).
    pub fn echoed(&self, path: &str, headers: &[(&str, &str)]) -> Value {
        let (status, text) = self.get(path, headers);
        assert_eq!(status, 200, "GET {path}: {text}");
        body_json(&text)
    }

    /// `bytes` as they are on a fresh connection; what came back until the gateway closed
    /// the connection or `wait` passed.
    pub fn raw(&self, bytes: &[u8], wait: Duration) -> String {
        raw(self.listen, bytes, wait)
    }

    pub fn metrics(&self) -> String {
        http_get(self.admin, "/metrics", &[]).1
    }

    pub fn status(&self) -> Value {
        body_json(&http_get(self.admin, "/status", &[]).1)
    }

    /// The gateway's access log and other log lines so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The process's resident set size, in KiB.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

/// One GET with `Host: HOST` and `connection: close`: (status, the whole response as text).
pub fn http_get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let mut req = format!("GET {path} HTTP/1.1\r\nhost: {HOST}\r\nconnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    let out = raw(addr, req.as_bytes(), Duration::from_secs(10));
    (status_of(&out), out)
}

/// The status code of a raw HTTP/1 response (0 when there is none).
pub fn status_of(response: &str) -> u16 {
    response
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// The JSON body of a raw HTTP/1 response (chunked or not).
pub fn body_json(response: &str) -> Value {
    let (head, body) = response
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no body in {response}"));
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        let mut out = String::new();
        let mut rest = body;
        while let Some((size, tail)) = rest.split_once("\r\n") {
            let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
            if n == 0 {
                break;
            }
            out.push_str(&tail[..n]);
            rest = &tail[n + 2..];
        }
        out
    } else {
        body.to_string()
    };
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("not JSON ({e}): {response}"))
}

/// Sends `bytes` on a fresh connection to `addr`; returns what came back until the peer
/// closed or `wait` passed without more data.
pub fn raw(addr: SocketAddr, bytes: &[u8], wait: Duration) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(wait)).unwrap();
    let _ = s.write_all(bytes);
    let mut out = Vec::new();
    let mut buf = [0u8; 16384];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(_) => break,
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The value of the counter or gauge line `name{labels}` in a /metrics text (labels given
/// as they appear, e.g. `route="a",method="GET"`), summed over lines that contain them.
pub fn metric(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.split(['{', ' ']).next().is_some_and(|n| n == name))
        .filter(|l| labels.iter().all(|want| l.contains(want)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// How many series a /metrics text has (non-comment lines).
pub fn series_count(text: &str) -> usize {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .count()
}
