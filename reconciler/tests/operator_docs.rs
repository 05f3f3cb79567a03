//! docs/operator.md's generated parts, checked against the code: the metric tables of both
//! binaries (every family their registries hold, with its type and help) and the example
//! payload of each notification sink (made by the functions that make the real ones).
//!
//! A section sits between `<!-- generated: NAME -->` and `<!-- end: NAME -->`. When the code
//! changes, `FLEETGATE_UPDATE_DOCS=1 cargo test -p fleetgate --test operator_docs` rewrites
//! them; the test fails while the document differs.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use fleetgate::notify::event::{self, DriftedAccount, Event, FailedAccount, Notice, github_status};

fn doc_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .join("docs/operator.md")
}

/// A metric catalog (name, help, type) as a markdown table; counters as scraped (`_total`).
fn metrics_table(families: &[(String, String, String)]) -> String {
    let mut out = String::from("| Metric | Type | What it counts |\n| --- | --- | --- |\n");
    for (name, help, kind) in families {
        let shown = match kind.as_str() {
            "counter" => format!("{name}_total"),
            _ => name.clone(),
        };
        let help = help.replace('|', "\\|");
        out.push_str(&format!("| `{shown}` | {kind} | {help} |\n"));
    }
    out
}

fn notice(event: Event) -> Notice {
    Notice {
        id: "5b0e6f3c9d1a4e7f8a2b6c0d4e8f1a3b".into(),
        at: "2026-12-05T14:03:27Z".into(),
        source: "fleetgate-watch fleetgate-reconciler-0".into(),
        shard: None,
        event,
    }
}

const COMMIT: &str = "6b593c4e0d1f2a3b4c5d6e7f8091a2b3c4d5e6f7";

fn wave_failed() -> Event {
    Event::WaveFailed {
        commit: COMMIT.into(),
        wave: "canary".into(),
        reason: "wave canary: 2 of 2 accounts failed, 0 tolerated".into(),
        failed: vec![
            FailedAccount {
                account: "globex-canary".into(),
                detail: "5xx ratio 0.31 over 0.05 (31 of 100 requests); rolled back to sha256:9f2c1e0a7b3d".into(),
            },
            FailedAccount {
                account: "internal-canary".into(),
                detail: "5xx ratio 0.27 over 0.05 (27 of 100 requests); rolled back to sha256:9f2c1e0a7b3d".into(),
            },
        ],
        failed_total: 2,
        rolled_back: 2,
        duration_seconds: Duration::from_secs(94),
    }
}

fn json_block(v: &serde_json::Value) -> String {
    format!(
        "```json\n{}\n```\n",
        serde_json::to_string_pretty(v).unwrap()
    )
}

/// Every generated section: (name, its text).
fn sections() -> Vec<(&'static str, String)> {
    let drift = Event::DriftFound {
        commit: COMMIT.into(),
        accounts: vec![DriftedAccount {
            account: "acme-prod".into(),
            cause: "out-of-band edit: the pointer was written by hand".into(),
        }],
        drifted_total: 1,
        unreachable_total: 0,
        fingerprint: 0,
    };
    let finished = Event::RolloutFinished {
        commit: COMMIT.into(),
        outcome: "rolled_back".into(),
        reason: Some("wave canary: 2 of 2 accounts failed, 0 tolerated".into()),
        rolled_back: 2,
        duration_seconds: Duration::from_secs(131),
    };
    let passed = Event::WavePassed {
        commit: COMMIT.into(),
        wave: "early".into(),
        accounts: 11,
        tolerated_failures: 1,
        duration_seconds: Duration::from_secs(312),
    };
    let (state, description) = github_status(&wave_failed()).unwrap();
    let github = format!(
        "`POST {{apiUrl}}/repos/{{repository}}/deployments`, at a commit's first event:\n\n{}\n`POST {{apiUrl}}/repos/{{repository}}/deployments/{{id}}/statuses`, at each event (here `wave.failed`):\n\n{}",
        json_block(&event::github_deployment_body(
            COMMIT,
            "production",
            "fleetgate-watch fleetgate-reconciler-0"
        )),
        json_block(&event::github_status_body(
            state,
            &description,
            "production"
        ))
    );
    vec![
        (
            "reconciler-metrics",
            metrics_table(&fleetgate::daemon::http::metric_families()),
        ),
        (
            "gateway-metrics",
            metrics_table(&fleetgate_gateway::Gateway::metric_families()),
        ),
        (
            "payload-webhook",
            json_block(&event::webhook_body(&notice(wave_failed()))),
        ),
        (
            "payload-slack",
            json_block(&event::slack_body(&notice(finished))),
        ),
        (
            "payload-teams",
            json_block(&event::teams_body(&notice(passed))),
        ),
        (
            "payload-drift",
            json_block(&event::webhook_body(&notice(drift))),
        ),
        ("payload-github", github),
    ]
}

#[test]
fn the_operator_guide_matches_the_code() {
    let path = doc_path();
    let mut doc = std::fs::read_to_string(&path).unwrap();
    let update = std::env::var_os("FLEETGATE_UPDATE_DOCS").is_some();
    let mut stale = Vec::new();
    for (name, text) in sections() {
        let open = format!("<!-- generated: {name} -->\n");
        let close = format!("<!-- end: {name} -->");
        let Some(start) = doc.find(&open).map(|i| i + open.len()) else {
            stale.push(format!("{name}: no `{}` in docs/operator.md", open.trim()));
            continue;
        };
        let end = start + doc[start..].find(&close).unwrap();
        if doc[start..end] != text {
            stale.push(name.to_string());
            doc.replace_range(start..end, &text);
        }
    }
    if update {
        std::fs::write(&path, &doc).unwrap();
        return;
    }
    assert!(
        stale.is_empty(),
        "docs/operator.md differs from the code in: {}\n(FLEETGATE_UPDATE_DOCS=1 cargo test -p fleetgate --test operator_docs rewrites them)",
        stale.join(", ")
    );
}

#[test]
fn every_metric_family_is_in_a_table() {
    let tables: String = sections()
        .into_iter()
        .filter(|(n, _)| n.ends_with("-metrics"))
        .map(|(_, t)| t)
        .collect();
    for name in [
        "fleetgate_build_info",
        "fleetgate_rollout_duration_seconds",
        "fleetgate_wave_duration_seconds",
        "fleetgate_notifications_total",
        "fleetgate_drift_accounts_by_cause",
        "fleetgate_gateway_build_info",
        "fleetgate_gateway_upstream_duration_seconds",
        "fleetgate_gateway_bundle_stale",
        "fleetgate_gateway_http_request_duration_seconds",
    ] {
        assert!(tables.contains(&format!("`{name}`")), "{name}:\n{tables}");
    }
}
