//! `fleetgate-gateway` as operators run it: the binary, started on a `file://` source holding
//! a rendered example account, its backends pointed at a local server. It serves the routes,
//! refuses bad tokens, shows the digest in `/metrics`, swaps in a new pointer within a poll,
//! refuses a broken bundle and says so, writes `status/<instance>.json`, and drains on SIGTERM.

#![allow(clippy::unwrap_used)]

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fleetgate::config::example_fleet::example_repo;
use fleetgate::{Repo, render};
use fleetgate_bundle::Digest;
use serde_json::{Value, json};

fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// A one-thread HTTP backend answering 200 `{"ok":true}` to everything, until the test ends.
fn backend() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in l.incoming() {
            let Ok(mut s) = stream else { return };
            std::thread::spawn(move || {
                let mut buf = [0u8; 8192];
                while let Ok(n) = s.read(&mut buf) {
                    if n == 0 {
                        return;
                    }
                    let body = b"{\"ok\":true}";
                    let head = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
                        body.len()
                    );
                    if s.write_all(head.as_bytes())
                        .and_then(|_| s.write_all(body))
                        .is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// One request on a fresh connection: (status, headers and body as text).
fn http(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut req = format!(
        "GET {path} HTTP/1.1\r\nhost: api.acme-prod.fleetgate.example\r\nconnection: close\r\n"
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, out)
}

/// acme-prod as rendered, every backend pointed at `to`, its public health route limited
/// to `requests` per second (the tell of which bundle answers).
fn rendered(to: SocketAddr, requests: u32) -> Vec<u8> {
    let bytes = render(&Repo::load(&example_repo()), "acme-prod")
        .unwrap()
        .canonical;
    let mut doc: Value = serde_json::from_slice(&bytes).unwrap();
    for b in doc["gateway"]["backends"]
        .as_object_mut()
        .unwrap()
        .values_mut()
    {
        b["url"] = json!(format!("http://{to}"));
    }
    for r in doc["gateway"]["routes"].as_array_mut().unwrap() {
        if r["name"] == "customers.getCustomersHealth" {
            r["rateLimit"] = json!({"requests": requests, "per": "1s"});
        }
    }
    serde_json::to_vec(&doc).unwrap()
}

fn deploy(dir: &Path, bytes: &[u8], commit: &str) -> Digest {
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

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

struct Gateway(Child);

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn the_binary_serves_reloads_refuses_reports_and_drains() {
    serves_reloads_refuses_reports_and_drains(&[]);
}

/// One worker runs everything on tokio's current-thread scheduler: the same life, on one
/// thread (the poller, the status reporter, the admin listener and the drain included).
#[test]
fn one_worker_serves_reloads_refuses_reports_and_drains() {
    serves_reloads_refuses_reports_and_drains(&["--workers", "1"]);
}

fn serves_reloads_refuses_reports_and_drains(extra: &[&str]) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("acme-prod");
    let up = backend();
    let first = deploy(&dir, &rendered(up, 50), "c1");
    let (listen, admin) = (free_addr(), free_addr());
    let mut gw = Gateway(
        Command::new(env!("CARGO_BIN_EXE_fleetgate-gateway"))
            .args(["--source", &format!("file://{}", dir.display())])
            .args([
                "--listen",
                &listen.to_string(),
                "--admin-listen",
                &admin.to_string(),
            ])
            .args([
                "--poll",
                "200ms",
                "--status-every",
                "200ms",
                "--instance-id",
                "gw-1",
            ])
            .args(["--drain-timeout", "5s"])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for("ready", || {
        TcpStream::connect(admin).is_ok() && http(admin, "/ready", &[]).0 == 200
    });

    // Routes: a public one reaches the backend; a protected one wants a good token.
    let (status, text) = http(listen, "/customers/health", &[]);
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("ratelimit-policy: 50;w=1;burst=50"), "{text}");
    assert_eq!(http(listen, "/orders/1", &[]).0, 401);
    assert_eq!(
        http(
            listen,
            "/orders/1",
            &[("authorization", "Bearer not.a.token")]
        )
        .0,
        401
    );
    let (_, metrics) = http(admin, "/metrics", &[]);
    assert!(
        metrics.contains(&format!("digest=\"{first}\"")),
        "{metrics}"
    );

    // A new pointer: served within a poll or two.
    let second = deploy(&dir, &rendered(up, 60), "c2");
    wait_for("the new bundle", || {
        http(listen, "/customers/health", &[])
            .1
            .contains("ratelimit-policy: 60;w=1;burst=60")
    });
    // A broken bundle: refused, reported, the last good one keeps serving.
    let broken = deploy(&dir, &rendered(up, 70), "c3");
    std::fs::write(dir.join(format!("bundles/{}.json", broken.hex())), b"{}").unwrap();
    wait_for("the refusal", || {
        http(admin, "/status", &[]).1.contains("\"last_error\":\"")
    });
    let (_, status_text) = http(admin, "/status", &[]);
    assert!(status_text.contains(&second.to_string()), "{status_text}");
    assert!(
        http(listen, "/customers/health", &[])
            .1
            .contains("burst=60")
    );

    // The rollout's report, next to the pointer.
    wait_for("status/gw-1.json", || {
        std::fs::read_to_string(dir.join("status/gw-1.json"))
            .is_ok_and(|t| t.contains(&second.to_string()) && t.contains("\"reload_failures\": 1"))
    });

    // SIGTERM: a clean exit.
    let killed = Command::new("kill")
        .args(["-TERM", &gw.0.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    let code = loop {
        if let Some(s) = gw.0.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "no exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(code.success(), "{code:?}");
}
