//! A wave bakes while an anonymous client sends 1,000 malformed request bodies to the
//! account's gateway: those are the client's faults (4xx), not the gateway's or a backend's,
//! so the health gate passes and the wave is not rolled back. Real parts: a git repo of the
//! example fleet, a `file://` fleet, `fleetgate apply` with its waves and gate, a real
//! `fleetgate-gateway` process and a real backend.

#![allow(clippy::unwrap_used)]

#[path = "../../tests/src/lib.rs"]
#[allow(dead_code)] // shared helpers: not every test file uses each
mod support;

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{edit, example_git_repo, git, show};

const ACCOUNT: &str = "globex-canary";
const HOST: &str = "api.globex-canary.fleetgate.example";

/// The workspace's gateway binary, next to `fleetgate`.
fn gateway_bin() -> PathBuf {
    support::gateway_bin_beside(Path::new(env!("CARGO_BIN_EXE_fleetgate")))
}

/// A process killed (and reaped) on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// A backend answering 200 to every request once it has read the request's body (by its
/// Content-Length, or chunked up to the last chunk), on its own threads until the test ends.
fn backend() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in l.incoming() {
            let Ok(mut s) = stream else { return };
            std::thread::spawn(move || {
                let mut seen = Vec::new();
                let mut buf = [0u8; 8192];
                while let Ok(n) = s.read(&mut buf) {
                    if n == 0 {
                        return;
                    }
                    seen.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&seen).to_ascii_lowercase();
                    let Some(head_end) = text.find("\r\n\r\n") else {
                        continue;
                    };
                    let body = &text[head_end + 4..];
                    let complete = if text[..head_end].contains("transfer-encoding: chunked") {
                        body.contains("0\r\n\r\n")
                    } else {
                        let len = text[..head_end]
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .and_then(|v| v.trim().parse::<usize>().ok())
                            .unwrap_or(0);
                        body.len() >= len
                    };
                    if !complete {
                        continue;
                    }
                    seen.clear();
                    let reply = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 11\r\n\r\n{\"ok\":true}";
                    if s.write_all(reply.as_bytes()).is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

fn http(addr: SocketAddr, request: &str) -> String {
    let Ok(mut s) = TcpStream::connect(addr) else {
        return String::new();
    };
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = s.write_all(request.as_bytes());
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

fn get(addr: SocketAddr, path: &str) -> String {
    http(
        addr,
        &format!("GET {path} HTTP/1.1\r\nhost: {HOST}\r\nconnection: close\r\n\r\n"),
    )
}

fn wait_for(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_wave_bakes_through_a_flood_of_malformed_bodies_and_passes() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("config");
    example_git_repo(&repo);
    let fleet = tmp.path().join("deployed");
    let target = format!("file://{}", fleet.display());
    let up = backend();

    // One wave for the whole fleet with a short bake and a strict gate; accounts without a
    // gateway (all but the one this test runs) count as healthy.
    let fleet_yaml = std::fs::read_to_string(repo.join("fleet.yaml")).unwrap();
    let start = fleet_yaml.find("  waves:\n").unwrap();
    let end = fleet_yaml.find("  drift:\n").unwrap();
    let waves = "  waves:\n    - name: all\n      bakeTime: 6s\n      healthGate: {max5xxRatio: 0.01, maxUpstreamErrorRatio: 0.01, timeout: 60s, noGateway: skip, minRequests: 10}\n  rollout:\n    pollInterval: 500ms\n";
    std::fs::write(
        repo.join("fleet.yaml"),
        format!("{}{waves}{}", &fleet_yaml[..start], &fleet_yaml[end..]),
    )
    .unwrap();
    // The orders backend is this test's; a public upload route streams bodies to it.
    edit(
        &repo,
        "base/gateway.yaml",
        "orders: {url: \"http://orders.${account.region}.svc.internal:8080\", connectTimeout: 2s}",
        &format!("orders: {{url: \"http://{up}\", connectTimeout: 2s}}"),
    );
    edit(
        &repo,
        "base/gateway.yaml",
        "  routes:\n",
        "  routes:\n    - {name: upload, methods: [POST], path: /upload, backend: orders, public: true, rateLimit: {requests: 100000, per: 1s, key: ip}}\n",
    );
    git(&repo, &["commit", "-qam", "an upload route"]);
    let fleetgate = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_fleetgate"))
            .args(args)
            .args(["--repo", repo.to_str().unwrap(), "--target", &target])
            .output()
            .unwrap()
    };
    let first = fleetgate(&["apply", "--all-at-once"]);
    assert!(first.status.success(), "{}", show(&first));

    // The account's gateway, serving what the first apply deployed.
    let (listen, admin) = (free_addr(), free_addr());
    let _gateway = Proc(
        Command::new(gateway_bin())
            .args([
                "--source",
                &format!("file://{}", fleet.join(ACCOUNT).display()),
            ])
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
                "300ms",
                "--instance-id",
                "gw-1",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for("the gateway", Duration::from_secs(30), || {
        get(admin, "/ready").contains(" 200 ")
    });
    let served = |admin: SocketAddr| -> Option<String> {
        let out = get(admin, "/status");
        let body = out.split_once("\r\n\r\n")?.1;
        let v: Value = serde_json::from_str(body).ok()?;
        v["digest"].as_str().map(String::from)
    };
    let before = served(admin).unwrap();

    // A change for every account, rolled out in the wave with its gate and bake.
    edit(
        &repo,
        "base/gateway.yaml",
        "requests: 100000, per: 1s",
        "requests: 100001, per: 1s",
    );
    git(&repo, &["commit", "-qam", "a new limit"]);
    let report = tmp.path().join("report.json");
    let apply = Command::new(env!("CARGO_BIN_EXE_fleetgate"))
        .args([
            "apply",
            "--repo",
            repo.to_str().unwrap(),
            "--target",
            &target,
        ])
        .args(["--report", report.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut apply = Proc(apply);
    wait_for(
        "the gateway to serve the new bundle",
        Duration::from_secs(60),
        || served(admin).is_some_and(|d| d != before),
    );

    // The hostile client, during the bake: malformed chunked framing and bodies cut short.
    let mut statuses = std::collections::BTreeMap::<String, usize>::new();
    for i in 0..1_000 {
        let request = if i % 2 == 0 {
            format!(
                "POST /upload HTTP/1.1\r\nhost: {HOST}\r\ntransfer-encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n"
            )
        } else {
            format!(
                "POST /upload HTTP/1.1\r\nhost: {HOST}\r\ncontent-length: 100\r\n\r\n0123456789"
            )
        };
        let mut s = TcpStream::connect(listen).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(request.as_bytes()).unwrap();
        if i % 2 == 1 {
            s.shutdown(std::net::Shutdown::Write).unwrap();
        }
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        let status = out.split(' ').nth(1).unwrap_or("none").to_string();
        *statuses.entry(status).or_default() += 1;
    }

    let out = {
        let child = &mut apply.0;
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if child.try_wait().unwrap().is_some() {
                break;
            }
            assert!(Instant::now() < deadline, "apply did not finish");
            std::thread::sleep(Duration::from_millis(200));
        }
        let mut stdout = String::new();
        let mut stderr = String::new();
        child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut stdout)
            .unwrap();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut stderr)
            .unwrap();
        (child.wait().unwrap(), stdout, stderr)
    };
    assert!(
        out.0.success(),
        "the wave must pass its gate: {statuses:?}\n--- stdout\n{}\n--- stderr\n{}",
        out.1,
        out.2
    );
    assert!(
        statuses.keys().all(|s| s.starts_with('4') || s == "none"),
        "the hostile requests must be answered as client errors: {statuses:?}"
    );
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    let text = report.to_string();
    assert!(
        !text.contains("rolled_back") && !text.contains("5xx ratio"),
        "{report}"
    );
    assert_ne!(served(admin).unwrap(), before, "the new bundle stays");
}
