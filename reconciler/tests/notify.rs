//! Notifications end to end: the watch daemon and the CLI on the moto rig of the watch tests
//! (moto's S3 and STS, a real gateway per account, traffic, a real git repo), delivering to
//! real HTTP receivers on loopback: Slack and Teams webhooks, a signed generic webhook that
//! fails twice before it accepts, GitHub's deployments API, and two dead sinks (a closed
//! port, and a credential that is not set). Checked: every sink's payloads, the webhook's
//! signature and its retries under one delivery id, the deployment statuses of a good and a
//! failed rollout, the metrics, and that the dead sinks change nothing in the rollouts.

#![allow(clippy::unwrap_used)]

#[path = "../../tests/src/lib.rs"]
#[allow(dead_code)]
mod support;

#[path = "../../tests/src/aws.rs"]
#[allow(dead_code)]
mod aws_support;

#[path = "support/rig.rs"]
#[allow(dead_code)]
mod rig;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode};
use serde_json::{Value, json};

use rig::*;
use support::{code, show};

/// A request a receiver got.
#[derive(Debug, Clone)]
struct Received {
    path: String,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Received {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }

    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

#[derive(Clone, Default)]
struct Inbox {
    got: Arc<Mutex<Vec<Received>>>,
    /// How many more requests to /hook answer 500.
    hook_failures: Arc<Mutex<u32>>,
}

impl Inbox {
    fn all(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }

    fn at(&self, path: &str) -> Vec<Received> {
        self.all().into_iter().filter(|r| r.path == path).collect()
    }
}

const HOOK_KEY: &str = "hook-signing-key-for-the-test";
const GH_TOKEN: &str = "ghs_test_token_never_logged";

/// The receivers, on `listener` (bound before the rig, whose fleet.yaml names its port),
/// until the rig stops.
fn receivers(rig: &Rig, inbox: Inbox, listener: std::net::TcpListener) -> SocketAddr {
    async fn record(
        State(inbox): State<Inbox>,
        uri: http::Uri,
        headers: HeaderMap,
        body: axum::body::Bytes,
    ) -> (StatusCode, String) {
        let path = uri.path().to_string();
        inbox.got.lock().unwrap().push(Received {
            path: path.clone(),
            headers,
            body: body.to_vec(),
        });
        if path == "/hook" {
            let mut left = inbox.hook_failures.lock().unwrap();
            if *left > 0 {
                *left -= 1;
                return (StatusCode::INTERNAL_SERVER_ERROR, "try again\n".into());
            }
        }
        if path.ends_with("/deployments") {
            return (StatusCode::CREATED, json!({"id": 4242}).to_string());
        }
        (StatusCode::OK, "ok\n".into())
    }
    async fn by_path(
        state: State<Inbox>,
        _: UrlPath<String>,
        uri: http::Uri,
        headers: HeaderMap,
        body: axum::body::Bytes,
    ) -> (StatusCode, String) {
        record(state, uri, headers, body).await
    }
    let app = axum::Router::new()
        .route("/{*rest}", axum::routing::post(by_path))
        .with_state(inbox);
    let stop = rig.stop.clone();
    rig.rt.block_on(async {
        listener.set_nonblocking(true).unwrap();
        let listener = tokio::net::TcpListener::from_std(listener).unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                })
                .await
                .unwrap();
        });
        addr
    })
}

/// The rig's fleet.yaml with `notifications` added.
fn fleet_with(sinks: &str) -> String {
    FLEET.replace(
        "  drift: {interval: 1h, historyDepth: 20}\n",
        &format!(
            "  drift: {{interval: 1h, historyDepth: 20}}\n  notifications:\n    attempts: 4\n    retryBackoff: 100ms\n    sinks:\n{sinks}"
        ),
    )
}

/// Waits until `ok(inbox)`, or fails with what arrived.
fn wait_for(inbox: &Inbox, what: &str, ok: impl Fn(&[Received]) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let all = inbox.all();
        if ok(&all) {
            return;
        }
        if Instant::now() > deadline {
            let seen: Vec<String> = all
                .iter()
                .map(|r| format!("{} {}", r.path, String::from_utf8_lossy(&r.body)))
                .collect();
            panic!(
                "timed out waiting for {what}; received:\n{}",
                seen.join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The generic webhook's events, in the order they were accepted (retries dropped).
fn hook_events(inbox: &Inbox) -> Vec<Value> {
    let mut seen = std::collections::BTreeSet::new();
    inbox
        .at("/hook")
        .into_iter()
        .filter(|r| seen.insert(r.header("x-fleetgate-delivery").to_string()))
        .map(|r| r.json())
        .collect()
}

fn types(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| {
            let mut t = e["type"].as_str().unwrap().to_string();
            if let Some(w) = e["data"]["wave"].as_str() {
                t.push(':');
                t.push_str(w);
            }
            if let Some(o) = e["data"]["outcome"].as_str() {
                t.push(':');
                t.push_str(o);
            }
            t
        })
        .collect()
}

#[test]
fn every_sink_hears_the_rollouts_and_dead_sinks_change_nothing() {
    let inbox = Inbox::default();
    *inbox.hook_failures.lock().unwrap() = 2;
    // Bound before the rig: the receivers need its runtime, the rig's fleet.yaml their port.
    let dead = aws_support::free_port();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let sinks = format!(
        "      - {{type: slack, name: ops-slack, url: {{env: FLEETGATE_NOTIFY_TEST_SLACK_URL}}}}\n\
         \x20     - {{type: teams, name: ops-teams, url: {{file: teams/url}}, events: [wave, rollout]}}\n\
         \x20     - {{type: webhook, name: hook, url: \"http://127.0.0.1:{port}/hook\", secret: {{env: FLEETGATE_NOTIFY_TEST_HOOK_KEY}}}}\n\
         \x20     - {{type: githubDeployments, name: github, repository: acme/fleet-config, token: {{env: FLEETGATE_NOTIFY_TEST_GH_TOKEN}}, apiUrl: \"http://127.0.0.1:{port}/gh\", environment: production}}\n\
         \x20     - {{type: webhook, name: dead, url: \"http://127.0.0.1:{dead}/nobody\", secret: {{env: FLEETGATE_NOTIFY_TEST_HOOK_KEY}}}}\n\
         \x20     - {{type: slack, name: unset, url: {{env: FLEETGATE_NOTIFY_TEST_NOT_SET}}}}\n"
    );
    let mut rig = Rig::start_with(&fleet_with(&sinks));
    let addr = receivers(&rig, inbox.clone(), listener);
    let secrets = rig.tmp.path().join("notify-secrets");
    std::fs::create_dir_all(secrets.join("teams")).unwrap();
    std::fs::write(secrets.join("teams/url"), format!("http://{addr}/teams\n")).unwrap();
    rig.env = vec![
        (
            "FLEETGATE_NOTIFY_TEST_SLACK_URL".into(),
            format!("http://{addr}/slack"),
        ),
        ("FLEETGATE_NOTIFY_TEST_HOOK_KEY".into(), HOOK_KEY.into()),
        ("FLEETGATE_NOTIFY_TEST_GH_TOKEN".into(), GH_TOKEN.into()),
        (
            "FLEETGATE_NOTIFY_SECRETS_DIR".into(),
            secrets.display().to_string(),
        ),
        // The one GitHub API besides github.com's that the token may go to: the operator's.
        (
            "FLEETGATE_NOTIFY_GITHUB_API_URL".into(),
            format!("http://{addr}/gh"),
        ),
    ];

    // A good rollout: through every wave.
    let c0 = rig.head();
    let d = rig.daemon("notifier", "1h", &[]);
    rig.wait_applied(&d, &c0);
    wait_for(&inbox, "the first rollout's end at every sink", |all| {
        let n = |p: &str| {
            all.iter()
                .filter(|r| r.path == p && String::from_utf8_lossy(&r.body).contains("succeeded"))
                .count()
        };
        n("/slack") >= 1 && n("/teams") >= 1 && n("/hook") >= 1
    });
    let events = hook_events(&inbox);
    assert_eq!(
        types(&events),
        [
            "rollout.started",
            "wave.passed:canary",
            "wave.passed:early",
            "wave.passed:prod",
            "rollout.finished:succeeded",
        ],
        "{events:#?}"
    );
    let started = &events[0];
    assert_eq!(started["data"]["commit"], c0.as_str());
    assert_eq!(started["data"]["accounts"], 4);
    assert_eq!(started["data"]["waves"], json!(["canary", "early", "prod"]));
    assert_eq!(started["severity"], "info");
    assert_eq!(started["source"], "fleetgate-watch notifier");
    assert_eq!(started["formatVersion"], 1);

    // The webhook: signed, retried twice after 500 under one delivery id.
    let hooks = inbox.at("/hook");
    let first_id = hooks[0].header("x-fleetgate-delivery").to_string();
    assert_eq!(first_id.len(), 32);
    assert_eq!(
        hooks
            .iter()
            .filter(|r| r.header("x-fleetgate-delivery") == first_id)
            .count(),
        3,
        "two 500s, then delivered"
    );
    for r in &hooks {
        assert!(
            fleetgate::daemon::http::signature_ok(
                HOOK_KEY.as_bytes(),
                &r.body,
                Some(r.header("x-fleetgate-signature-256"))
            ),
            "every delivery is signed: {r:?}"
        );
        assert_eq!(
            r.header("x-fleetgate-event"),
            r.json()["type"].as_str().unwrap()
        );
    }

    // Slack: text and blocks. Teams: an Adaptive Card, waves and rollouts only.
    let slack = inbox.at("/slack");
    assert_eq!(slack.len(), 5, "started, three waves, finished");
    let body = slack.last().unwrap().json();
    assert!(
        body["text"].as_str().unwrap().contains("succeeded"),
        "{body:#}"
    );
    assert_eq!(body["blocks"][0]["type"], "section");
    let teams = inbox.at("/teams");
    assert!(
        teams
            .iter()
            .all(|r| !String::from_utf8_lossy(&r.body).contains("lease.taken")),
        "teams takes waves and rollouts only"
    );
    let card = teams.last().unwrap().json();
    assert_eq!(
        card["attachments"][0]["contentType"],
        "application/vnd.microsoft.card.adaptive"
    );

    // GitHub: one deployment of c0, then in_progress per step and success.
    let gh = inbox.all();
    let created: Vec<&Received> = gh
        .iter()
        .filter(|r| r.path == "/gh/repos/acme/fleet-config/deployments")
        .collect();
    assert_eq!(created.len(), 1, "one deployment per commit");
    let deployment = created[0].json();
    assert_eq!(deployment["ref"], c0.as_str());
    assert_eq!(deployment["environment"], "production");
    assert_eq!(
        created[0].header("authorization"),
        format!("Bearer {GH_TOKEN}")
    );
    let statuses: Vec<String> = gh
        .iter()
        .filter(|r| r.path == "/gh/repos/acme/fleet-config/deployments/4242/statuses")
        .map(|r| r.json()["state"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        statuses,
        [
            "in_progress",
            "in_progress",
            "in_progress",
            "in_progress",
            "success"
        ]
    );

    // A change whose canary fails: the wave's failure with the gate's figures.
    let c1 = rig.commit("upstreamPath: /ok", "upstreamPath: /bad", "hello broken");
    let d1 = rig.digests();
    rig.push_webhook(&d, &c1, Sig::Good);
    let status = rig.wait(
        &d,
        "the canary rolled back",
        Duration::from_secs(180),
        |s| s["rejected"]["commit"] == c1.as_str(),
    );
    assert_eq!(status["rollout"]["outcome"], "rolled-back", "{status:#}");
    assert_eq!(rig.digests(), d1, "the canaries are back");
    wait_for(&inbox, "the failed rollout's end", |all| {
        all.iter()
            .any(|r| r.path == "/hook" && String::from_utf8_lossy(&r.body).contains("rolled_back"))
    });
    let events = hook_events(&inbox);
    let tail: Vec<String> = types(&events).into_iter().skip(5).collect();
    assert_eq!(
        tail,
        [
            "rollout.started",
            "wave.failed:canary",
            "rollout.finished:rolled_back"
        ]
    );
    let failed = &events[6];
    assert_eq!(failed["severity"], "critical");
    let reason = failed["data"]["reason"].as_str().unwrap();
    assert!(reason.contains("5xx"), "the gate's figures: {reason}");
    assert_eq!(failed["data"]["rolledBack"], 2);
    assert_eq!(failed["data"]["failedTotal"], 2, "{failed:#}");
    let detail = failed["data"]["failed"][0]["detail"].as_str().unwrap();
    assert!(detail.contains("5xx"), "an account's figures: {detail}");
    let states: Vec<String> = inbox
        .all()
        .iter()
        .filter(|r| r.path.ends_with("/statuses"))
        .map(|r| r.json()["state"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(states.last().map(String::as_str), Some("failure"));

    // The CLI: a break-glass rollback sets holds, release lifts them; both are heard.
    let out = rig.fleetgate(&[
        "rollback",
        "--repo",
        rig.repo_str(),
        "--branch",
        "main",
        "--to",
        &c0,
        "--target",
        "aws",
        "--reason",
        "test",
    ]);
    assert_eq!(code(&out), 0, "{}", show(&out));
    let out = rig.fleetgate(&[
        "release",
        "--repo",
        rig.repo_str(),
        "--branch",
        "main",
        "--target",
        "aws",
    ]);
    assert_eq!(code(&out), 0, "{}", show(&out));
    wait_for(&inbox, "rollback.set and hold.released", |all| {
        let has = |t: &str| {
            all.iter()
                .any(|r| r.path == "/hook" && String::from_utf8_lossy(&r.body).contains(t))
        };
        has("rollback.set") && has("hold.released")
    });
    let events = hook_events(&inbox);
    let set = events.iter().find(|e| e["type"] == "rollback.set").unwrap();
    assert_eq!(set["data"]["to"], c0.as_str());
    assert_eq!(set["data"]["accountsTotal"], 4, "{set:#}");
    assert_eq!(set["source"], "operator");

    // The metrics: deliveries by sink and result; the dead sinks failed, nothing else did.
    // The dead webhook's last retries may still be under way: wait until it gave up on all.
    let value = |m: &str, sink: &str, result: &str| {
        metric(
            m,
            &format!("fleetgate_notifications_total{{sink=\"{sink}\",result=\"{result}\"}}"),
        )
        .unwrap_or(-1.0)
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let m = loop {
        let m = rig.metrics(&d);
        if value(&m, "dead", "failed") >= 8.0 && value(&m, "hook", "delivered") >= 8.0
            || Instant::now() > deadline
        {
            break m;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let value = |sink: &str, result: &str| value(&m, sink, result);
    assert_eq!(value("hook", "retried"), 2.0, "{m}");
    assert!(value("hook", "delivered") >= 8.0, "{m}");
    assert_eq!(value("hook", "failed"), 0.0, "{m}");
    assert!(value("dead", "failed") >= 8.0, "{m}");
    assert!(value("dead", "retried") >= 24.0, "3 retries each: {m}");
    assert!(value("unset", "failed") >= 8.0, "{m}");
    assert_eq!(value("github", "failed"), 0.0, "{m}");
    assert_eq!(value("ops-teams", "delivered"), 8.0, "{m}");
    assert_eq!(
        metric(&m, "fleetgate_notifications_queued"),
        Some(0.0),
        "nothing left waiting: {m}"
    );

    // No credential reaches a log.
    let log = std::fs::read_to_string(&d.log).unwrap();
    for secret in [HOOK_KEY, GH_TOKEN, &format!("http://{addr}/slack")] {
        assert!(!log.contains(secret), "{secret} in the daemon's log");
    }
    assert!(
        log.contains("notification sink disabled"),
        "the unset credential is reported: {log}"
    );

    // A failover: the daemon dies holding its lease; a successor takes it over when it
    // expires, and says so (a daemon taking a free lease at start does not).
    drop(d);
    let successor = rig.daemon("successor", "1h", &[]);
    rig.wait(
        &successor,
        "the lease taken over",
        Duration::from_secs(60),
        |s| s["lease"]["held_by_me"] == true,
    );
    wait_for(&inbox, "lease.taken", |all| {
        all.iter()
            .any(|r| r.path == "/hook" && String::from_utf8_lossy(&r.body).contains("lease.taken"))
    });
    let taken = hook_events(&inbox)
        .into_iter()
        .find(|e| e["type"] == "lease.taken")
        .unwrap();
    assert_eq!(taken["data"]["holder"], "successor");
    assert_eq!(taken["data"]["previous"], "notifier");
    assert_eq!(taken["severity"], "warning");
}
