//! What on-call relies on when undoing a change: an apply never moves accounts back to an
//! older commit behind anyone's back (that is a rollback, which holds them).

#![allow(clippy::unwrap_used)]

#[path = "../../tests/src/lib.rs"]
#[allow(dead_code)] // shared helpers: not every test file uses each
mod support;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Output};

use support::{ExampleFleet as Fleet, code, edit, git, show, stderr};

impl Fleet {
    fn target_dir(&self) -> PathBuf {
        self.tmp.path().join("deployed")
    }

    fn commit(&self, file: &str, find: &str, replace: &str, message: &str) {
        edit(&self.repo, file, find, replace);
        git(&self.repo, &["commit", "-q", "-am", message]);
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_fleetgate"))
            .args(args)
            .env("FLEETGATE_CACHE_DIR", self.tmp.path().join("cache"))
            .env("FLEETGATE_APPLIED_BY", "on-call-test")
            .env("NO_COLOR", "1")
            .output()
            .expect("fleetgate runs")
    }

    fn apply(&self, extra: &[&str]) -> Output {
        let repo = self.repo.to_str().unwrap();
        let mut args = vec![
            "apply",
            "--repo",
            repo,
            "--target",
            &self.target,
            "--all-at-once",
        ];
        args.extend_from_slice(extra);
        self.run(&args)
    }

    /// Every account's pointer file, as written.
    fn pointers(&self) -> BTreeMap<String, String> {
        std::fs::read_dir(self.target_dir())
            .unwrap()
            .filter_map(|e| {
                let e = e.unwrap();
                let name = e.file_name().to_string_lossy().into_owned();
                let text = std::fs::read_to_string(e.path().join("current.json")).ok()?;
                Some((name, text))
            })
            .collect()
    }
}

#[test]
fn an_apply_that_would_move_accounts_back_is_refused_and_says_to_roll_back() {
    let fleet = Fleet::example();
    assert_eq!(code(&fleet.apply(&[])), 0);
    fleet.commit(
        "base/gateway.yaml",
        "maxBodyBytes: 1048576",
        "maxBodyBytes: 2097152",
        "bigger bodies everywhere",
    );
    let out = fleet.apply(&[]);
    assert_eq!(code(&out), 0, "{}", show(&out));
    let newer = fleet.pointers();
    assert_eq!(newer.len(), 10);

    // From the older commit: refused, and nothing is written.
    let out = fleet.apply(&["--head", "HEAD~1"]);
    assert_eq!(code(&out), 1, "{}", show(&out));
    let err = stderr(&out);
    assert!(err.contains("is older than what 10 accounts run"), "{err}");
    assert!(err.contains("acme-prod at "), "{err}");
    assert!(
        err.contains("This is a rollback: use `fleetgate rollback --to HEAD~1`"),
        "{err}"
    );
    assert!(err.contains("--allow-backwards"), "{err}");
    assert_eq!(fleet.pointers(), newer, "nothing written");

    // Asked for: it goes back.
    let out = fleet.apply(&["--head", "HEAD~1", "--allow-backwards"]);
    assert_eq!(code(&out), 0, "{}", show(&out));
    let older = fleet.pointers();
    assert!(older.iter().all(|(a, p)| &newer[a] != p));

    // The head again is a forward move: no flag needed.
    let out = fleet.apply(&[]);
    assert_eq!(code(&out), 0, "{}", show(&out));
}

/// The hold a rollback records, per account.
fn holds(fleet: &Fleet) -> BTreeMap<String, Option<String>> {
    fleet
        .pointers()
        .into_iter()
        .map(|(a, text)| {
            let p: serde_json::Value = serde_json::from_str(&text).unwrap();
            (a, p["hold"]["branch_head"].as_str().map(str::to_string))
        })
        .collect()
}

#[test]
fn a_rollback_from_a_stale_clone_is_refused_and_holds_name_the_remote_head() {
    // The team's repo (`config`) at v2, deployed; on-call's clone is still at v1.
    let fleet = Fleet::example();
    assert_eq!(code(&fleet.apply(&[])), 0);
    let v1 = git(&fleet.repo, &["rev-parse", "HEAD"]).trim().to_string();
    let clone = fleet.tmp.path().join("on-call");
    git(
        fleet.tmp.path(),
        &[
            "clone",
            "-q",
            fleet.repo.to_str().unwrap(),
            clone.to_str().unwrap(),
        ],
    );
    fleet.commit(
        "base/gateway.yaml",
        "maxBodyBytes: 1048576",
        "maxBodyBytes: 2097152",
        "bigger bodies everywhere",
    );
    let v2 = git(&fleet.repo, &["rev-parse", "HEAD"]).trim().to_string();
    assert_eq!(code(&fleet.apply(&[])), 0);
    let deployed = fleet.pointers();

    let rollback = |extra: &[&str]| {
        let mut args = vec![
            "rollback",
            "--repo",
            clone.to_str().unwrap(),
            "--to",
            &v1,
            "--target",
            &fleet.target,
        ];
        args.extend_from_slice(extra);
        fleet.run(&args)
    };

    // Behind the remote: refused, nothing written, and it says what to do.
    let out = rollback(&[]);
    assert_eq!(code(&out), 1, "{}", show(&out));
    let err = stderr(&out);
    assert!(err.contains("1 commit behind origin/main"), "{err}");
    assert!(err.contains("git pull"), "{err}");
    assert!(err.contains("--branch origin/main"), "{err}");
    assert_eq!(fleet.pointers(), deployed, "nothing written");

    // Told which head to hold: the remote's, fetched now.
    let out = rollback(&["--branch", "origin/main"]);
    assert_eq!(code(&out), 0, "{}", show(&out));
    assert!(
        holds(&fleet)
            .values()
            .all(|h| h.as_deref() == Some(v2.as_str())),
        "{:?}",
        holds(&fleet)
    );
    // So the branch (still at v2) does not roll them forward: plan shows them held.
    let out = fleet.run(&[
        "plan",
        "--repo",
        fleet.repo.to_str().unwrap(),
        "--target",
        &fleet.target,
        "--format",
        "json",
    ]);
    assert_eq!(code(&out), 0, "no change while held: {}", show(&out));
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(plan["summary"]["held"], 10, "{plan}");

    // After a pull, the default (the checkout's branch) holds the remote's head too.
    git(&clone, &["pull", "-q"]);
    assert_eq!(
        code(&fleet.apply(&[])),
        0,
        "back to v2 (holds kept by apply)"
    );
    let out = fleet.run(&[
        "release",
        "--repo",
        fleet.repo.to_str().unwrap(),
        "--target",
        &fleet.target,
    ]);
    assert_eq!(code(&out), 0, "{}", show(&out));
    assert_eq!(code(&fleet.apply(&[])), 0);
    let out = rollback(&[]);
    assert_eq!(code(&out), 0, "{}", show(&out));
    assert!(
        holds(&fleet)
            .values()
            .all(|h| h.as_deref() == Some(v2.as_str())),
        "{:?}",
        holds(&fleet)
    );
}

#[test]
fn a_rollback_onto_a_tampered_bundle_is_refused_for_that_account() {
    let fleet = Fleet::example();
    assert_eq!(code(&fleet.apply(&[])), 0);
    let v1 = git(&fleet.repo, &["rev-parse", "HEAD"]).trim().to_string();
    let before: serde_json::Value = serde_json::from_str(&fleet.pointers()["acme-prod"]).unwrap();
    let v1_digest = before["digest"].as_str().unwrap().to_string();
    fleet.commit(
        "base/gateway.yaml",
        "maxBodyBytes: 1048576",
        "maxBodyBytes: 2097152",
        "bigger bodies everywhere",
    );
    assert_eq!(code(&fleet.apply(&[])), 0);
    let at_v2 = fleet.pointers();

    // Someone with write access overwrites acme-prod's previous bundle in place.
    let stored = fleet
        .target_dir()
        .join("acme-prod/bundles")
        .join(format!("{}.json", v1_digest.trim_start_matches("sha256:")));
    let text = std::fs::read_to_string(&stored).unwrap();
    std::fs::write(&stored, text.replacen("1048576", "9999999", 1)).unwrap();

    let out = fleet.run(&[
        "rollback",
        "--repo",
        fleet.repo.to_str().unwrap(),
        "--to",
        &v1,
        "--target",
        &fleet.target,
    ]);
    assert_eq!(code(&out), 1, "{}", show(&out));
    let err = stderr(&out);
    assert!(err.contains("failed [tampered] acme-prod"), "{err}");
    // acme-prod's pointer stays where it was; the others went back.
    let after = fleet.pointers();
    assert_eq!(after["acme-prod"], at_v2["acme-prod"]);
    assert!(
        after
            .iter()
            .filter(|(a, _)| a.as_str() != "acme-prod")
            .all(|(a, p)| p != &at_v2[a])
    );
}

/// A rollback reads pointers, never the deployed bundles (so one that is missing or
/// unreadable does not stop it), and rewrites no bundle that is stored: going back two
/// commits (not to the bundle each pointer replaced) checks the stored bundles and leaves
/// them as they are.
#[test]
fn a_rollback_reads_pointers_only_and_rewrites_no_stored_bundle() {
    let fleet = Fleet::example();
    assert_eq!(code(&fleet.apply(&[])), 0);
    let v1 = git(&fleet.repo, &["rev-parse", "HEAD"]).trim().to_string();
    let at_v1 = fleet.pointers();
    let digest = |pointer: &str| -> String {
        let p: serde_json::Value = serde_json::from_str(pointer).unwrap();
        p["digest"]
            .as_str()
            .unwrap()
            .trim_start_matches("sha256:")
            .to_string()
    };
    let bundle = |account: &str, pointer: &str| -> PathBuf {
        fleet
            .target_dir()
            .join(account)
            .join("bundles")
            .join(format!("{}.json", digest(pointer)))
    };
    for (from, to) in [("1048576", "2097152"), ("2097152", "3145728")] {
        fleet.commit(
            "base/gateway.yaml",
            &format!("maxBodyBytes: {from}"),
            &format!("maxBodyBytes: {to}"),
            "bigger bodies",
        );
        assert_eq!(code(&fleet.apply(&[])), 0);
    }
    let at_v3 = fleet.pointers();
    assert!(at_v3.iter().all(|(a, p)| digest(p) != digest(&at_v1[a])));

    // The stored v1 bundles get an old timestamp: a rewrite would change it.
    let old = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000_000);
    for (account, pointer) in &at_v1 {
        std::fs::File::options()
            .write(true)
            .open(bundle(account, pointer))
            .unwrap()
            .set_modified(old)
            .unwrap();
    }
    // acme-prod's deployed bundle is gone: a rollback does not need it.
    std::fs::remove_file(bundle("acme-prod", &at_v3["acme-prod"])).unwrap();

    let out = fleet.run(&[
        "rollback",
        "--repo",
        fleet.repo.to_str().unwrap(),
        "--to",
        &v1,
        "--target",
        &fleet.target,
    ]);
    assert_eq!(code(&out), 0, "{}", show(&out));
    let after = fleet.pointers();
    for (account, pointer) in &at_v1 {
        assert_eq!(digest(&after[account]), digest(pointer), "{account}");
        let modified = std::fs::metadata(bundle(account, pointer))
            .unwrap()
            .modified()
            .unwrap();
        assert_eq!(
            modified, old,
            "{account}: its stored v1 bundle was rewritten"
        );
    }
}

/// apply prints each account's line when the account is done, not at the end: killed in
/// the middle of a rollout (the canary waits for gateways that never report), its output
/// already says which pointers it moved, and the canaries' pointers are where it says.
#[test]
fn a_killed_apply_has_printed_what_it_did() {
    let fleet = Fleet::example();
    assert_eq!(code(&fleet.apply(&[])), 0);
    edit(
        &fleet.repo,
        "fleet.yaml",
        "timeout: 5m, noGateway: fail",
        "timeout: 10m, noGateway: wait",
    );
    fleet.commit(
        "base/gateway.yaml",
        "maxBodyBytes: 1048576",
        "maxBodyBytes: 2097152",
        "bigger bodies; the canary waits for its gateways",
    );
    let before = fleet.pointers();
    let out_path = fleet.tmp.path().join("apply.out");
    let mut child = Command::new(env!("CARGO_BIN_EXE_fleetgate"))
        .args([
            "apply",
            "--repo",
            fleet.repo.to_str().unwrap(),
            "--target",
            &fleet.target,
        ])
        .env("FLEETGATE_CACHE_DIR", fleet.tmp.path().join("cache"))
        .env("NO_COLOR", "1")
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Until both canaries' pointers moved (the rollout then waits in the canary's verify).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let moved = |p: &BTreeMap<String, String>| {
        ["globex-canary", "internal-canary"]
            .iter()
            .all(|a| p[*a] != before[*a])
    };
    while !moved(&fleet.pointers()) {
        assert!(
            std::time::Instant::now() < deadline,
            "the canaries never moved"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    child.kill().unwrap();
    child.wait().unwrap();
    let printed = std::fs::read_to_string(&out_path).unwrap();
    for canary in ["globex-canary", "internal-canary"] {
        assert!(
            printed
                .lines()
                .any(|l| l.starts_with(&format!("updated {canary} "))),
            "{canary} not in the killed apply's output:\n{printed}"
        );
    }
    let after = fleet.pointers();
    assert!(
        after
            .iter()
            .filter(|(a, _)| !a.ends_with("-canary"))
            .all(|(a, p)| p == &before[a]),
        "only the canaries moved"
    );
}

/// `apply --format jsonl`: one JSON object a line, each account's outcome as it is decided,
/// and a summary whose counts add up to the fleet.
#[test]
fn apply_as_json_lines_reports_each_account_then_a_summary() {
    let fleet = Fleet::example();
    let out = fleet.apply(&["--format", "jsonl"]);
    assert_eq!(code(&out), 0, "{}", show(&out));
    let lines: Vec<serde_json::Value> = support::stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let accounts: Vec<&str> = lines
        .iter()
        .filter(|l| l["event"] == "account")
        .map(|l| l["account"].as_str().unwrap())
        .collect();
    assert_eq!(accounts.len(), 10, "{lines:#?}");
    assert!(
        lines
            .iter()
            .filter(|l| l["event"] == "account")
            .all(|l| l["state"] == "applied" && l["from"].is_null())
    );
    let summary = lines.last().unwrap();
    assert_eq!(summary["event"], "summary", "{summary:#}");
    assert_eq!(summary["created"], 10);
    assert_eq!(summary["outcome"], "succeeded");
}

/// apply reads pointers, not the bundles it replaces (it prints outcomes, not diffs): an
/// account whose deployed bundle is gone is still updated (before, it was unreachable).
#[test]
fn an_apply_reads_pointers_only() {
    let fleet = Fleet::example();
    assert_eq!(code(&fleet.apply(&[])), 0);
    let at_v1 = fleet.pointers();
    let p: serde_json::Value = serde_json::from_str(&at_v1["acme-prod"]).unwrap();
    let hex = p["digest"].as_str().unwrap().trim_start_matches("sha256:");
    std::fs::remove_file(
        fleet
            .target_dir()
            .join("acme-prod/bundles")
            .join(format!("{hex}.json")),
    )
    .unwrap();
    fleet.commit(
        "base/gateway.yaml",
        "maxBodyBytes: 1048576",
        "maxBodyBytes: 2097152",
        "bigger bodies everywhere",
    );
    let out = fleet.apply(&[]);
    assert_eq!(code(&out), 0, "{}", show(&out));
    assert!(
        support::stdout(&out).contains("10 updated"),
        "{}",
        show(&out)
    );
    assert_ne!(fleet.pointers()["acme-prod"], at_v1["acme-prod"]);
}
