//! `fleetgate up` as a new user runs it: the binary started with a fresh work directory,
//! the commands it prints pasted into a shell (curl gets a token from a local account's IdP,
//! then calls an API with it through that account's gateway), then Ctrl-C: everything it
//! started stops and the process exits cleanly.

#![allow(clippy::unwrap_used)]

use std::io::{BufRead as _, BufReader};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The printed command that starts with `prefix` (indented by two spaces).
fn printed<'a>(lines: &'a [String], prefix: &str) -> &'a str {
    lines
        .iter()
        .map(|l| l.trim_start())
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| {
            panic!(
                "no printed command starting with {prefix:?}:\n{}",
                lines.join("\n")
            )
        })
}

/// The `fleetgate up` process, killed if the test ends without stopping it.
struct Up(std::process::Child);

impl Drop for Up {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn sh(script: &str) -> String {
    let out = Command::new("sh").arg("-c").arg(script).output().unwrap();
    assert!(
        out.status.success(),
        "{script}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn up_prints_commands_that_get_a_token_and_call_an_api_and_stops_cleanly_on_ctrl_c() {
    assert!(
        Command::new("curl").arg("--version").output().is_ok(),
        "this test runs the curl commands fleetgate up prints: install curl"
    );
    let tmp = tempfile::tempdir().unwrap();
    let mut up = Up(Command::new(env!("CARGO_BIN_EXE_fleetgate"))
        .args([
            "up",
            "--port",
            "0",
            "--max-bake",
            "1s",
            "--poll-interval",
            "1s",
        ])
        .arg("--dir")
        .arg(tmp.path().join("up"))
        .env("XDG_CACHE_HOME", tmp.path().join("cache"))
        .env_remove("FLEETGATE_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(tmp.path().join("up.log")).unwrap())
        .spawn()
        .unwrap());
    let child = &mut up.0;
    let (tx, rx) = mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let mut lines = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(240);
    while !lines
        .iter()
        .any(|l: &String| l.contains("Ctrl-C stops everything"))
    {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(line) => lines.push(line),
            Err(_) => {
                let _ = child.kill();
                let log = std::fs::read_to_string(tmp.path().join("up.log")).unwrap_or_default();
                panic!(
                    "fleetgate up printed no guide in time:\n{}\n--- its log:\n{log}",
                    lines.join("\n")
                );
            }
        }
    }
    let get_token = printed(&lines, "TOKEN=$(curl");
    let call = printed(&lines, "curl -s -w");

    // Pasted as printed: a token, then an authenticated call answered by the backend.
    let out = sh(&format!("{get_token}\n{call}"));
    assert!(out.trim_end().ends_with("HTTP 200"), "{out}");
    let body: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert_eq!(body["tenant"], "acme", "{out}");
    assert_eq!(body["subject"], "web-portal", "{out}");

    // The same with a wrong secret: no token, so the call is refused.
    let wrong = get_token.replace("demo-web-portal-secret", "not-the-secret");
    assert_ne!(wrong, get_token);
    let out = sh(&format!("{wrong}\n{call}"));
    assert!(out.trim_end().ends_with("HTTP 401"), "{out}");

    // The reconciler's /status, as printed.
    let status: serde_json::Value =
        serde_json::from_str(&sh(printed(&lines, "curl -s http://"))).unwrap();
    assert_eq!(status["rollout"]["outcome"], "succeeded", "{status}");

    // Ctrl-C: every listener closes and the process exits 0.
    let gateway = call
        .rsplit(' ')
        .next()
        .unwrap()
        .trim_start_matches("http://")
        .trim_end_matches("/orders")
        .to_string();
    assert!(TcpStream::connect(&gateway).is_ok());
    let kill = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("fleetgate up did not stop within 60 s of Ctrl-C");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "{status}");
    let rest: Vec<String> = rx.try_iter().collect();
    assert!(rest.iter().any(|l| l == "Stopped."), "{rest:?}");
    assert!(
        TcpStream::connect(&gateway).is_err(),
        "{gateway} still listens"
    );
}
