//! `fleetgate status` on a real git repository and a real `file://` fleet: each wave's
//! commits and counts, holds, never deployed and unreachable accounts, the last automatic
//! rollback, and the watch daemon's /status (a tiny server here; nothing listening there).

// Helpers outside #[test] functions panic on purpose too: a test that cannot set up fails.
#![allow(clippy::unwrap_used)]

#[path = "../../tests/src/lib.rs"]
#[allow(dead_code)] // shared helpers: not every test file uses each
mod support;

use std::path::PathBuf;
use std::process::{Command, Output};

use fleetgate::ops::status::{self, CommitInfo, Git, Member, NO_WAVE, Read};
use fleetgate::target::{ErrorClass, Pointer};
use serde_json::{Value, json};
use support::{ExampleFleet as Fleet, code, edit, git, show, stdout};

impl Fleet {
    fn target_dir(&self) -> PathBuf {
        self.tmp.path().join("deployed")
    }

    fn head(&self) -> String {
        git(&self.repo, &["rev-parse", "HEAD"]).trim().to_string()
    }

    fn commit(&self, file: &str, find: &str, replace: &str, message: &str) -> String {
        edit(&self.repo, file, find, replace);
        git(&self.repo, &["commit", "-q", "-am", message]);
        self.head()
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_fleetgate"))
            .args(args)
            .env("FLEETGATE_CACHE_DIR", self.tmp.path().join("cache"))
            .env("FLEETGATE_APPLIED_BY", "status-test")
            .env("FLEETGATE_REDACTION_KEY", "test-key")
            .env_remove("FLEETGATE_DAEMON_URL")
            .env("NO_COLOR", "1")
            .output()
            .expect("fleetgate runs")
    }

    /// A command on the fleet that must succeed.
    fn ok(&self, command: &str, extra: &[&str]) -> Output {
        let repo = self.repo.to_str().unwrap();
        let mut args = vec![command, "--repo", repo, "--target", &self.target];
        args.extend_from_slice(extra);
        let out = self.run(&args);
        assert_eq!(code(&out), 0, "{command} {extra:?}: {}", show(&out));
        out
    }

    fn status(&self, extra: &[&str]) -> Output {
        self.ok("status", extra)
    }

    fn status_json(&self, extra: &[&str]) -> Value {
        let mut args = vec!["--format", "json"];
        args.extend_from_slice(extra);
        support::json(&self.status(&args))
    }

    fn pointer_path(&self, account: &str) -> PathBuf {
        self.target_dir().join(account).join("current.json")
    }

    fn pointer(&self, account: &str) -> Value {
        serde_json::from_str(&std::fs::read_to_string(self.pointer_path(account)).unwrap()).unwrap()
    }
}

fn short(sha: &str) -> &str {
    &sha[..12]
}

/// The names of a JSON array of strings.
fn names(v: &Value) -> Vec<&str> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|n| n.as_str().unwrap())
        .collect()
}

/// The v1 fleet everywhere, v2 on the canary wave only, acme-prod rolled back and held,
/// wayne-prod's pointer gone, stark-prod's pointer unreadable.
fn on_call_fleet() -> (Fleet, String, String) {
    let fleet = Fleet::example();
    let v1 = fleet.head();
    fleet.ok("apply", &["--all-at-once"]);
    let v2 = fleet.commit(
        "base/gateway.yaml",
        "maxBodyBytes: 1048576",
        "maxBodyBytes: 2097152",
        "bigger bodies everywhere",
    );
    // Stands for a rollout that stopped after its canary wave: only canary runs v2.
    fleet.ok(
        "rollback",
        &["--to", &v2, "--accounts", "wave=canary", "--no-hold"],
    );
    fleet.ok(
        "rollback",
        &[
            "--to",
            &v1,
            "--accounts",
            "acme-prod",
            "--reason",
            "5xx on payments",
        ],
    );
    std::fs::remove_file(fleet.pointer_path("wayne-prod")).unwrap();
    std::fs::write(fleet.pointer_path("stark-prod"), "{not json").unwrap();
    (fleet, v1, v2)
}

#[test]
fn status_shows_each_waves_commits_holds_and_problems_and_the_head_count() {
    let (fleet, v1, v2) = on_call_fleet();

    let doc = fleet.status_json(&[]);
    assert_eq!(doc["format_version"], 1, "{doc}");
    assert_eq!(doc["head"]["commit"], v2.as_str());
    assert_eq!(doc["head"]["subject"], "bigger bodies everywhere");
    assert_eq!(
        doc["summary"],
        json!({"accounts": 10, "at_head": 2, "held": 1, "never_deployed": 1, "unreachable": 1}),
        "{doc}"
    );
    let waves = doc["waves"].as_array().unwrap();
    let wave_names: Vec<&str> = waves.iter().map(|w| w["name"].as_str().unwrap()).collect();
    assert_eq!(wave_names, ["canary", "early", "prod"], "{doc}");

    let canary = &waves[0];
    assert_eq!(canary["accounts"], 2);
    assert_eq!(canary["commits"].as_array().unwrap().len(), 1, "{canary}");
    let group = &canary["commits"][0];
    assert_eq!(group["commit"], v2.as_str());
    assert_eq!(group["is_head"], true);
    assert_eq!(group["count"], 2);
    assert_eq!(
        names(&group["accounts"]),
        ["globex-canary", "internal-canary"]
    );

    let early = &waves[1];
    assert_eq!(early["commits"].as_array().unwrap().len(), 1, "{early}");
    assert_eq!(early["commits"][0]["commit"], v1.as_str());
    assert_eq!(early["commits"][0]["subject"], "fleet as in the example");
    assert_eq!(early["commits"][0]["is_head"], false);
    assert_eq!(
        early["commits"][0]["runs_head_bundle"], 0,
        "v2 changed them"
    );
    assert_eq!(early["commits"][0]["count"], 3);

    let prod = &waves[2];
    assert_eq!(prod["accounts"], 5);
    assert_eq!(prod["commits"].as_array().unwrap().len(), 1, "{prod}");
    assert_eq!(prod["commits"][0]["commit"], v1.as_str());
    assert_eq!(
        names(&prod["commits"][0]["accounts"]),
        ["acme-prod", "globex-prod", "initech-prod"]
    );
    let held = prod["held"].as_array().unwrap();
    assert_eq!(held.len(), 1, "{prod}");
    assert_eq!(held[0]["account"], "acme-prod");
    assert_eq!(held[0]["reason"], "5xx on payments");
    assert_eq!(held[0]["by"], "status-test");
    // As the rollback recorded it: the commit named, whatever it adds.
    assert!(held[0]["to"].as_str().unwrap().starts_with(&v1), "{prod}");
    assert_eq!(held[0]["branch_head"], v2.as_str());
    assert_eq!(held[0]["superseded"], false);
    assert_eq!(names(&prod["never_deployed"]), ["wayne-prod"]);
    let unreachable = prod["unreachable"].as_array().unwrap();
    assert_eq!(unreachable.len(), 1, "{prod}");
    assert_eq!(unreachable[0]["account"], "stark-prod");
    assert_eq!(unreachable[0]["class"], "corrupt");
    for wave in &waves[..2] {
        assert_eq!(wave["held"], json!([]), "{wave}");
        assert_eq!(wave["never_deployed"], json!([]), "{wave}");
        assert_eq!(wave["unreachable"], json!([]), "{wave}");
    }
    assert_eq!(doc["last_auto_rollback"], Value::Null, "{doc}");
    assert_eq!(doc["daemon"], Value::Null, "not asked");

    let text = stdout(&fleet.status(&[]));
    for line in [
        format!(
            "main at {} \"bigger bodies everywhere\", target {}",
            short(&v2),
            fleet.target
        ),
        "2 of 10 accounts at the head; 1 held, 1 never deployed, 1 unreachable".to_string(),
        "wave canary: 2 accounts".to_string(),
        format!(
            "  {} \"bigger bodies everywhere\" (head): 2 globex-canary, internal-canary",
            short(&v2)
        ),
        format!(
            "  {} \"fleet as in the example\": 3 hooli-early, initech-early, umbrella-early",
            short(&v1)
        ),
        "wave prod: 5 accounts".to_string(),
        format!(
            "  {} \"fleet as in the example\": 3 acme-prod, globex-prod, initech-prod",
            short(&v1)
        ),
        "  never deployed (1): wayne-prod".to_string(),
        "last automatic rollback: none in these accounts' pointers".to_string(),
    ] {
        assert!(text.lines().any(|l| l == line), "{line:?} in\n{text}");
    }
    let held_line = text
        .lines()
        .find(|l| l.starts_with("  held 1 (") && l.ends_with("): acme-prod"))
        .unwrap_or_else(|| panic!("no hold in\n{text}"));
    assert!(
        held_line.contains("\"5xx on payments\" by status-test at "),
        "{held_line}"
    );
    assert!(held_line.contains(&format!(", to {v1}")), "{held_line}");
    assert!(
        held_line.contains(&format!(", branch head {}): ", short(&v2))),
        "{held_line}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("  unreachable [corrupt] stark-prod: ")),
        "{text}"
    );

    // A commit that changes no bundle: canary still runs the head's bundle, and the hold,
    // taken at v2, is over.
    std::fs::write(fleet.repo.join("NOTES.md"), "on-call notes\n").unwrap();
    git(&fleet.repo, &["add", "NOTES.md"]);
    git(&fleet.repo, &["commit", "-q", "-m", "notes"]);
    let doc = fleet.status_json(&[]);
    assert_eq!(doc["summary"]["at_head"], 2, "{doc}");
    assert_eq!(doc["waves"][0]["commits"][0]["is_head"], false, "{doc}");
    assert_eq!(
        doc["waves"][0]["commits"][0]["runs_head_bundle"], 2,
        "{doc}"
    );
    assert_eq!(doc["waves"][2]["held"][0]["superseded"], true, "{doc}");
    let text = stdout(&fleet.status(&[]));
    let line = format!(
        "  {} \"bigger bodies everywhere\" (the head's bundle): 2 globex-canary, internal-canary",
        short(&v2)
    );
    assert!(text.lines().any(|l| l == line), "{line:?} in\n{text}");
    assert!(
        text.lines().any(|l| l.starts_with("  held 1 (")
            && l.ends_with(" (over: the branch has moved past it)): acme-prod")),
        "{text}"
    );

    // --accounts narrows what is read; the waves stay the head's.
    let doc = fleet.status_json(&["--accounts", "wave=canary"]);
    assert_eq!(doc["summary"]["accounts"], 2, "{doc}");
    assert_eq!(doc["summary"]["at_head"], 2, "{doc}");
    assert_eq!(doc["waves"][2]["accounts"], 0, "{doc}");
}

#[test]
fn an_automatic_rollback_written_to_pointers_is_the_last_automatic_rollback() {
    let fleet = Fleet::example();
    let v1 = fleet.head();
    fleet.ok("apply", &["--all-at-once"]);
    let v2 = fleet.commit(
        "base/gateway.yaml",
        "maxBodyBytes: 1048576",
        "maxBodyBytes: 2097152",
        "bigger bodies everywhere",
    );
    fleet.ok("apply", &["--all-at-once"]);
    // What the executor writes when a wave fails its gate: back to the previous bundle,
    // `applied_by` marked. An older one on hooli-early; the newest on the canary wave.
    let back = |account: &str, at: &str| {
        let mut p = fleet.pointer(account);
        let (now, before) = (p["digest"].clone(), p["previous"].clone());
        p["digest"] = before.clone();
        p["previous"] = now;
        p["commit"] = json!(v1);
        p["applied_by"] = json!("watch@hub (auto-rollback)");
        p["applied_at"] = json!(at);
        std::fs::write(fleet.pointer_path(account), p.to_string()).unwrap();
        before
    };
    back("hooli-early", "2026-01-01T09:00:00Z");
    let globex = back("globex-canary", "2026-01-02T03:04:05Z");
    back("internal-canary", "2026-01-02T03:04:05Z");

    let doc = fleet.status_json(&[]);
    let last = &doc["last_auto_rollback"];
    assert_eq!(last["at"], "2026-01-02T03:04:05Z", "{doc}");
    assert_eq!(last["by"], "watch@hub");
    let accounts = last["accounts"].as_array().unwrap();
    let rolled: Vec<&str> = accounts
        .iter()
        .map(|a| a["account"].as_str().unwrap())
        .collect();
    assert_eq!(rolled, ["globex-canary", "internal-canary"], "{last}");
    assert_eq!(accounts[0]["digest"], globex);
    assert_eq!(accounts[0]["commit"], v1.as_str());
    assert_eq!(accounts[0]["subject"], "fleet as in the example");
    assert_eq!(doc["summary"]["at_head"], 7, "{doc}");

    let text = stdout(&fleet.status(&[]));
    for line in [
        "last automatic rollback: at 2026-01-02T03:04:05Z by watch@hub, 2 accounts back:"
            .to_string(),
        format!(
            "  to {} \"fleet as in the example\": globex-canary, internal-canary",
            short(&v1)
        ),
        format!(
            "  {} \"bigger bodies everywhere\" (head): 5 acme-prod, globex-prod, initech-prod, stark-prod, wayne-prod",
            short(&v2)
        ),
    ] {
        assert!(text.lines().any(|l| l == line), "{line:?} in\n{text}");
    }
}

#[test]
fn an_unreachable_daemon_is_one_line_and_the_rest_is_still_printed() {
    let fleet = Fleet::example();
    fleet.ok("apply", &["--all-at-once"]);
    // A loopback port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");

    let text = stdout(&fleet.status(&["--daemon", &url]));
    let line = text
        .lines()
        .find(|l| l.starts_with(&format!("daemon {url}: ")))
        .unwrap_or_else(|| panic!("no daemon line in\n{text}"));
    assert!(
        line.starts_with(&format!("daemon {url}: not reachable: ")),
        "{line}"
    );
    assert!(text.contains("wave prod: 5 accounts"), "{text}");
    assert!(text.contains("10 of 10 accounts at the head"), "{text}");

    // The same from the environment, as JSON.
    let repo = fleet.repo.to_str().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_fleetgate"))
        .args(["status", "--repo", repo, "--target", &fleet.target])
        .args(["--format", "json"])
        .env("FLEETGATE_CACHE_DIR", fleet.tmp.path().join("cache"))
        .env("FLEETGATE_DAEMON_URL", &url)
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", show(&out));
    let doc = support::json(&out);
    assert_eq!(doc["daemon"]["url"], url.as_str(), "{doc}");
    assert_eq!(doc["daemon"]["reachable"], false, "{doc}");
    assert!(
        doc["daemon"]["error"]
            .as_str()
            .is_some_and(|e| !e.is_empty())
    );
    assert_eq!(doc["summary"]["at_head"], 10, "{doc}");
}

#[test]
fn a_repo_or_target_that_cannot_be_read_exits_1() {
    let fleet = Fleet::example();
    let missing = fleet.tmp.path().join("no-such-repo");
    let out = fleet.run(&[
        "status",
        "--repo",
        missing.to_str().unwrap(),
        "--target",
        &fleet.target,
    ]);
    assert_eq!(code(&out), 1, "{}", show(&out));
    assert!(
        support::stderr(&out).starts_with("error: "),
        "{}",
        show(&out)
    );
    assert!(stdout(&out).is_empty(), "{}", show(&out));

    // Never applied: the target directory does not exist, and status creates nothing.
    let gone = fleet.tmp.path().join("no-such-fleet");
    let target = format!("file://{}", gone.display());
    let repo = fleet.repo.to_str().unwrap();
    let out = fleet.run(&["status", "--repo", repo, "--target", &target]);
    assert_eq!(code(&out), 1, "{}", show(&out));
    assert!(
        support::stderr(&out).contains("the directory does not exist"),
        "{}",
        show(&out)
    );
    assert!(!gone.exists());

    // Not one account could be read (here every pointer is corrupt): printed, and exit 1.
    fleet.ok("apply", &["--all-at-once"]);
    for entry in std::fs::read_dir(fleet.target_dir()).unwrap() {
        std::fs::write(entry.unwrap().path().join("current.json"), "{").unwrap();
    }
    let out = fleet.run(&["status", "--repo", repo, "--target", &fleet.target]);
    assert_eq!(code(&out), 1, "{}", show(&out));
    assert!(stdout(&out).contains("10 unreachable"), "{}", show(&out));
    assert!(
        support::stderr(&out).contains("error: none of the 10 accounts could be read"),
        "{}",
        show(&out)
    );
}

/// A server on a loopback port answering GET /status with `body`, for the test's life.
fn serve_status(body: String) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            let app = axum::Router::new().route(
                "/status",
                axum::routing::get(move || async move {
                    ([("content-type", "application/json")], body)
                }),
            );
            axum::serve(listener, app).await.unwrap();
        });
    });
    url
}

#[test]
fn the_daemons_rollout_in_progress_and_preempted_commit_are_shown() {
    let fleet = Fleet::example();
    fleet.ok("apply", &["--all-at-once"]);
    let (old, new) = ("a".repeat(40), "b".repeat(40));
    let account = |state: &str| json!({"state": state, "to": "sha256:00"});
    let status = json!({
        "repo": "file:///config",
        "branch": "main",
        "target": fleet.target,
        "identity": "watch-1",
        "lease": {"location": "file:///lease", "holder": "watch-1", "expires_at": 1, "held_by_me": true},
        "head": {"commit": new, "subject": "move on", "at": "2026-01-02T03:00:00Z"},
        "last_applied": {"commit": old, "at": "2026-01-01T03:00:00Z"},
        "queued": null,
        "rollout": {
            "commit": new,
            "outcome": "in-progress",
            "startedAt": "2026-01-02T03:00:01Z",
            "waves": [
                {"name": "canary", "state": "succeeded", "toleratedFailures": 0, "failed": 0,
                 "accounts": {"globex-canary": account("healthy"), "internal-canary": account("healthy")}},
                {"name": "early", "state": "baking", "toleratedFailures": 1, "failed": 0,
                 "accounts": {"hooli-early": account("serving"), "initech-early": account("applied"),
                              "umbrella-early": account("applied")}},
                {"name": "prod", "state": "pending", "toleratedFailures": 0, "failed": 0,
                 "accounts": {"acme-prod": account("pending")}}
            ]
        },
        "rejected": null,
        "preempted": {"commit": old, "by": new, "at": "2026-01-02T02:59:59Z",
                      "moved": ["globex-canary", "internal-canary"]},
        "held": [{"account": "acme-prod", "note": "held by on-call"}],
        "drift": null,
        "last_error": "fetch https://git.example/repo.git?token=hunter2hunter2 failed",
        "a_field_from_a_newer_daemon": {"anything": true}
    });
    let url = serve_status(status.to_string());

    let text = stdout(&fleet.status(&["--daemon", &url]));
    for line in [
        format!("daemon {url}: watch-1 tracking main, lease holder watch-1"),
        format!(
            "  head: {} \"move on\" at 2026-01-02T03:00:00Z",
            short(&new)
        ),
        format!("  last applied: {} at 2026-01-01T03:00:00Z", short(&old)),
        format!(
            "  rollout in progress of {}: in-progress, started 2026-01-02T03:00:01Z",
            short(&new)
        ),
        "    wave canary: succeeded (2 healthy)".to_string(),
        "    wave early: baking (2 applied, 1 serving)".to_string(),
        "    wave prod: pending (1 pending)".to_string(),
        format!(
            "  preempted: the rollout of {} stopped at 2026-01-02T02:59:59Z because the branch moved to {}; 2 accounts already moved: globex-canary, internal-canary",
            short(&old),
            short(&new)
        ),
        "  held acme-prod: held by on-call".to_string(),
    ] {
        assert!(text.lines().any(|l| l == line), "{line:?} in\n{text}");
    }
    // The daemon's texts go through the redaction too.
    assert!(!text.contains("hunter2"), "{text}");
    assert!(text.contains("  last error: fetch https://git.example/repo.git?token=(sensitive:"));

    let doc = fleet.status_json(&["--daemon", &url]);
    let d = &doc["daemon"];
    assert_eq!(d["reachable"], true, "{doc}");
    assert_eq!(d["error"], Value::Null, "{doc}");
    assert_eq!(d["rollout"]["in_progress"], true);
    assert_eq!(
        d["rollout"]["waves"][1]["account_states"],
        json!({"applied": 2, "serving": 1})
    );
    assert_eq!(d["preempted"]["commit"], old.as_str());
    assert_eq!(
        names(&d["preempted"]["moved"]),
        ["globex-canary", "internal-canary"]
    );
    assert!(!doc.to_string().contains("hunter2"), "{doc}");
}

#[test]
fn an_older_daemons_status_and_an_odd_member_still_read() {
    // No `preempted`, a rejected commit with the reason only in its rollout, `held` of a
    // shape this version does not know.
    let doc = json!({
        "identity": "old",
        "rollout": {"commit": "c1", "outcome": "rolled-back", "reason": "canary: 5xx over the gate",
                    "waves": [{"name": "canary", "state": "rolled-back", "accounts": {}}]},
        "rejected": {"commit": "c1"},
        "held": "not a list",
        "lease": null
    });
    let view = status::daemon_view("http://d", &doc);
    assert!(view.reachable);
    assert_eq!(view.identity.as_deref(), Some("old"));
    assert_eq!(view.preempted, None);
    assert!(view.held.is_empty());
    assert_eq!(view.lease_holder, None);
    let rejected = view.rejected.unwrap();
    assert_eq!(
        rejected.reason.as_deref(),
        Some("canary: 5xx over the gate")
    );
    let rollout = view.rollout.unwrap();
    assert!(!rollout.in_progress);
    assert_eq!(rollout.waves[0].state.as_deref(), Some("rolled-back"));
    assert_eq!(rollout.waves[0].accounts, 0);
}

#[test]
fn accounts_in_no_wave_come_last_and_pointers_without_a_commit_group_by_digest() {
    let digest = |c: char| {
        format!("sha256:{}", c.to_string().repeat(64))
            .parse()
            .unwrap()
    };
    let pointer = |commit: Option<&str>, d: char| {
        Read::Pointer(Box::new(Pointer {
            digest: digest(d),
            commit: commit.map(str::to_string),
            previous: None,
            applied_by: "t".into(),
            applied_at: "2026-01-01T00:00:00Z".into(),
            hold: None,
            decommissioned: None,
        }))
    };
    let member = |name: &str, wave: Option<usize>, expected: char, read: Read| Member {
        name: name.into(),
        wave,
        expected: Some(digest(expected)),
        read,
    };
    let members = [
        member("b", None, 'a', pointer(None, 'a')),
        member("a", None, 'b', pointer(None, 'a')),
        member("c", None, 'c', pointer(None, 'c')),
        member("w", Some(0), 'e', pointer(Some("old"), 'e')),
        member("x", Some(0), 'f', pointer(Some("old"), 'd')),
        member(
            "y",
            Some(0),
            'a',
            Read::Unreachable {
                error: "y: timeout".into(),
                class: ErrorClass::Timeout,
            },
        ),
    ];
    let head = CommitInfo {
        rev: "main".into(),
        commit: "head".into(),
        subject: None,
    };
    let report = status::assemble(
        "repo",
        "file:///fleet",
        head,
        &["canary".to_string()],
        &members,
        &Git {
            subject: &|c| (c == "old").then(|| "an old one".to_string()),
            superseded: &|_| false,
        },
    );
    let names: Vec<&str> = report.waves.iter().map(|w| w.name.as_str()).collect();
    assert_eq!(names, ["canary", NO_WAVE]);
    let no_wave = &report.waves[1];
    assert_eq!(no_wave.accounts, 3);
    assert_eq!(no_wave.commits.len(), 2);
    assert_eq!(no_wave.commits[0].accounts, ["a", "b"], "the biggest first");
    assert_eq!(no_wave.commits[0].commit, None);
    assert_eq!(
        no_wave.commits[0].digest.as_deref(),
        Some(format!("sha256:{}", "a".repeat(64)).as_str())
    );
    assert_eq!(no_wave.commits[0].runs_head_bundle, 1, "b only");
    let canary = &report.waves[0];
    assert_eq!(canary.commits.len(), 1);
    assert_eq!(canary.commits[0].subject.as_deref(), Some("an old one"));
    assert_eq!(canary.commits[0].runs_head_bundle, 1, "w only");
    assert_eq!(canary.unreachable[0].class, ErrorClass::Timeout);
    // b, c and w run the head's bundle, though no pointer records the head.
    assert_eq!(report.summary.at_head, 3);
    assert_eq!(report.summary.unreachable, 1);
    assert_eq!(report.last_auto_rollback, None);
}

#[test]
fn a_line_of_text_names_ten_accounts_and_the_report_all() {
    let members: Vec<Member> = (0..12)
        .map(|i| Member {
            name: format!("acct-{i:02}"),
            wave: Some(0),
            expected: None,
            read: Read::NeverDeployed,
        })
        .collect();
    let head = CommitInfo {
        rev: "main".into(),
        commit: "head".into(),
        subject: None,
    };
    let git = Git {
        subject: &|_| None,
        superseded: &|_| false,
    };
    let report = status::assemble("repo", "t", head, &["all".into()], &members, &git);
    assert_eq!(report.waves[0].never_deployed.len(), 12);
    let text = fleetgate::cli::status::text(&report);
    let line = text
        .lines()
        .find(|l| l.starts_with("  never deployed (12): "))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(line.ends_with("acct-08, acct-09, and 2 more"), "{line}");
    assert!(!line.contains("acct-10"), "{line}");
}
