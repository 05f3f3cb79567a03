//! `fleetgate plan` and `fleetgate apply` on real git repositories (made with the git CLI in
//! temp dirs) and a real `file://` target: affected accounts, exit codes, the loop closing,
//! grouped markdown for 1,000 accounts, planted secrets, and bad input.

// Helpers outside #[test] functions panic on purpose too: a test that cannot set up fails.
#![allow(clippy::unwrap_used)]

#[path = "../../tests/src/lib.rs"]
#[allow(dead_code)] // shared helpers: not every test file uses each
mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use fleetgate::config::example_fleet::{self, FleetParams};
use fleetgate::git::GitRepo;
use fleetgate::ops::pipeline;
use fleetgate::plan::{self, Action, Plan, format};
use fleetgate::target::{FanOut, FileTarget};
use serde_json::Value;
use support::{ExampleFleet as Fleet, code, edit, git, json, stderr, stdout};

impl Fleet {
    fn generated(accounts: usize) -> Fleet {
        Fleet::with_repo(|repo| {
            let src = example_fleet::generate(&FleetParams { accounts, seed: 7 });
            example_fleet::write_to(&src, repo).expect("write fleet");
        })
    }

    fn target_dir(&self) -> PathBuf {
        self.tmp.path().join("deployed")
    }

    fn commit(&self, file: &str, find: &str, replace: &str, message: &str) {
        edit(&self.repo, file, find, replace);
        git(&self.repo, &["commit", "-q", "-am", message]);
    }

    /// Runs the CLI with a private cache, no color, and a fixed redaction key.
    fn run(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_fleetgate"))
            .args(args)
            .env("FLEETGATE_CACHE_DIR", self.tmp.path().join("cache"))
            .env("FLEETGATE_REDACTION_KEY", "test-key")
            .env("FLEETGATE_APPLIED_BY", "plan-test")
            .env("NO_COLOR", "1")
            .output()
            .expect("fleetgate runs")
    }

    fn plan(&self, extra: &[&str]) -> Output {
        let repo = self.repo.to_str().expect("utf-8 path");
        let mut args = vec!["plan", "--repo", repo, "--target", &self.target];
        args.extend_from_slice(extra);
        self.run(&args)
    }

    fn apply(&self) -> Output {
        let repo = self.repo.to_str().expect("utf-8 path");
        self.run(&[
            "apply",
            "--repo",
            repo,
            "--target",
            &self.target,
            "--all-at-once",
        ])
    }

    /// The plan as a value, through the library (for snapshots and big fleets).
    fn plan_value(&self, base: Option<&str>, head: &str) -> Plan {
        let repo = GitRepo::open(self.repo.to_str().unwrap(), &self.tmp.path().join("cache"))
            .expect("opens");
        let head = repo.resolve(head).expect("head");
        let base = base.map(|b| repo.resolve(b).expect("base"));
        let prepared = pipeline::prepare(&repo, base.as_ref(), &head).expect("prepares");
        let options = plan::Options {
            redaction_key: b"test-key".to_vec(),
            ..plan::Options::default()
        };
        let target = FileTarget::new(&self.target);
        let rt = tokio::runtime::Runtime::new().unwrap();
        let mut plan = rt
            .block_on(pipeline::observe_and_plan(
                &prepared,
                &target,
                &options,
                &FanOut::quiet(8),
                pipeline::Verify::Pointers,
                &|_| false,
            ))
            .expect("plans");
        // Stable text for snapshots: temp paths and commit ids vary from run to run.
        plan.repo = "config".into();
        plan.target = "file://deployed".into();
        plan.head.commit = "1111111111111111111111111111111111111111".into();
        if let Some(b) = &mut plan.base {
            b.commit = "0000000000000000000000000000000000000000".into();
        }
        plan
    }
}

fn actions(plan: &Value) -> Vec<(String, String)> {
    plan["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["name"].as_str().unwrap().to_string(),
                a["action"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// Every file of a directory with its bytes and modification time.
fn snapshot_dir(dir: &Path) -> BTreeMap<PathBuf, (Vec<u8>, std::time::SystemTime)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else {
                let meta = e.metadata().unwrap();
                out.insert(
                    e.path(),
                    (std::fs::read(e.path()).unwrap(), meta.modified().unwrap()),
                );
            }
        }
    }
    out
}

fn plan_schema() -> jsonschema::Validator {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../schemas/plan.schema.json"),
    )
    .unwrap();
    jsonschema::validator_for(&serde_json::from_str(&text).unwrap()).unwrap()
}

#[test]
fn a_one_account_change_plans_that_account_and_apply_closes_the_loop() {
    let fleet = Fleet::example();

    // Nothing deployed: every account is new.
    let first = fleet.plan(&["--format", "json"]);
    assert_eq!(code(&first), 2, "{}", stderr(&first));
    let first = json(&first);
    assert_eq!(first["summary"]["create"], 10);
    assert_eq!(
        first["rendered"],
        serde_json::json!({"base": 0, "head": 10})
    );

    let applied = fleet.apply();
    assert_eq!(code(&applied), 0, "{}", stderr(&applied));
    assert!(
        stdout(&applied).contains("10 created, 0 updated"),
        "{}",
        stdout(&applied)
    );
    let before = snapshot_dir(&fleet.target_dir());
    let again = fleet.apply();
    assert_eq!(code(&again), 0, "{}", stderr(&again));
    assert!(
        stdout(&again).contains("0 created, 0 updated, 10 unchanged"),
        "{}",
        stdout(&again)
    );
    assert_eq!(
        snapshot_dir(&fleet.target_dir()),
        before,
        "a second apply writes nothing"
    );
    let clean = fleet.plan(&[]);
    assert_eq!(code(&clean), 0, "{}{}", stdout(&clean), stderr(&clean));

    // One account's change: one account rendered per side, exactly it planned.
    fleet.commit(
        "accounts/acme-prod.yaml",
        "requests: 50, per: 1s, burst: 50",
        "requests: 80, per: 1s, burst: 80",
        "acme: raise the payment rate limit",
    );
    let out = fleet.plan(&["--base", "HEAD~1", "--head", "HEAD", "--format", "json"]);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    let p = json(&out);
    assert!(
        plan_schema().is_valid(&p),
        "the plan matches schemas/plan.schema.json"
    );
    assert_eq!(
        actions(&p),
        [("acme-prod".to_string(), "update".to_string())]
    );
    assert_eq!(p["rendered"], serde_json::json!({"base": 1, "head": 1}));
    assert_eq!(p["summary"]["notAffected"], 9);
    let acme = &p["accounts"][0];
    let diff = acme["diff"].as_str().unwrap();
    assert!(
        diff.contains("-          \"burst\": 50,") && diff.contains("+          \"burst\": 80,"),
        "{diff}"
    );
    assert_eq!(
        acme["changes"][0]["name"], "payments.createPayment",
        "{acme}"
    );

    // The same from a remote URL, cloned into the cache, with git's ref syntax.
    let url = format!("file://{}", fleet.repo.display());
    let remote = fleet.run(&[
        "plan",
        "--repo",
        &url,
        "--base",
        "origin/main~1",
        "--head",
        "origin/main",
        "--target",
        &fleet.target,
        "--format",
        "json",
    ]);
    assert_eq!(code(&remote), 2, "{}", stderr(&remote));
    assert_eq!(actions(&json(&remote)), actions(&p));

    let applied = fleet.apply();
    assert_eq!(code(&applied), 0, "{}", stderr(&applied));
    assert!(
        stdout(&applied).contains("updated acme-prod"),
        "{}",
        stdout(&applied)
    );
    let pointer: Value = serde_json::from_slice(
        &std::fs::read(fleet.target_dir().join("acme-prod/current.json")).unwrap(),
    )
    .unwrap();
    let head = git(&fleet.repo, &["rev-parse", "HEAD"]);
    assert_eq!(pointer["commit"], head.trim());
    assert_eq!(pointer["previous"], acme["from"]);
    assert_eq!(pointer["digest"], acme["to"]);
    assert_eq!(pointer["applied_by"], "plan-test");
    for args in [&[][..], &["--base", "HEAD~1"][..]] {
        let out = fleet.plan(args);
        assert_eq!(code(&out), 0, "{args:?}: {}", stdout(&out));
    }
}

#[test]
fn plans_read_as_reviewers_need_them() {
    // A route added to the base: every account, in a few groups.
    let fleet = Fleet::example();
    assert_eq!(code(&fleet.apply()), 0);
    fleet.commit(
        "base/gateway.yaml",
        "  routes:\n",
        "  routes:\n    - name: probe\n      methods: [GET]\n      path: /probe\n      backend: orders\n      public: true\n",
        "a public status route",
    );
    let p = fleet.plan_value(Some("HEAD~1"), "HEAD");
    assert_eq!(p.summary.update, 10);
    assert!(
        p.groups.len() < 10,
        "identical changes group: {}",
        p.groups.len()
    );
    insta::assert_snapshot!("route_added_text", format::text(&p, false));
    insta::assert_snapshot!(
        "route_added_markdown",
        format::markdown(&p, format::MARKDOWN_LIMIT, None)
    );

    // A pin bumped in one overlay: its accounts only.
    let fleet = Fleet::example();
    fleet.commit(
        "overlays/enterprise/tier.yaml",
        "payments: \"3.2.0\"",
        "payments: \"3.1.0\"",
        "enterprise: payments 3.1.0",
    );
    assert_eq!(code(&fleet.apply()), 0);
    fleet.commit(
        "overlays/enterprise/tier.yaml",
        "payments: \"3.1.0\"",
        "payments: \"3.2.0\"",
        "enterprise: payments 3.2.0",
    );
    let p = fleet.plan_value(Some("HEAD~1"), "HEAD");
    assert!(
        p.summary.update > 0 && p.summary.not_affected > 0,
        "{:?}",
        p.summary
    );
    assert_eq!(p.rendered.base, p.rendered.head);
    insta::assert_snapshot!("pin_bumped_text", format::text(&p, false));
    insta::assert_snapshot!(
        "pin_bumped_markdown",
        format::markdown(&p, format::MARKDOWN_LIMIT, None)
    );

    // A signing key replaced without publishing it first: warned about, first.
    let fleet = Fleet::example();
    assert_eq!(code(&fleet.apply()), 0);
    fleet.commit(
        "base/idp.yaml",
        "kid: idp-2026-09",
        "kid: idp-2026-11",
        "rotate the IdP key (too fast)",
    );
    let p = fleet.plan_value(Some("HEAD~1"), "HEAD");
    assert_eq!(
        p.warnings[0].kind,
        plan::WarningKind::SigningKeyWithoutOverlap
    );
    assert_eq!(
        p.warnings[0].accounts.len(),
        10,
        "one warning for the whole fleet"
    );
    let text = format::text(&p, false);
    let md = format::markdown(&p, format::MARKDOWN_LIMIT, None);
    assert!(text.find("Warnings").unwrap() < text.find("~ update").unwrap());
    assert!(md.find("Warnings").unwrap() < md.find("<details>").unwrap());
    insta::assert_snapshot!("key_rotation_text", text);
    insta::assert_snapshot!("key_rotation_markdown", md);

    // Published as `next` first: no warning.
    let fleet = Fleet::example();
    assert_eq!(code(&fleet.apply()), 0);
    fleet.commit(
        "base/idp.yaml",
        "        privateKey: {awsSecretsManager: \"arn:aws:secretsmanager:${account.region}:${account.id}:secret:fleetgate/idp/signing-2026-09\"}\n",
        "        privateKey: {awsSecretsManager: \"arn:aws:secretsmanager:${account.region}:${account.id}:secret:fleetgate/idp/signing-2026-09\"}\n      next:\n        kid: idp-2026-11\n        algorithm: RS256\n        privateKey: {awsSecretsManager: \"arn:aws:secretsmanager:${account.region}:${account.id}:secret:fleetgate/idp/signing-2026-11\"}\n",
        "publish the next IdP key",
    );
    let p = fleet.plan_value(Some("HEAD~1"), "HEAD");
    assert_eq!(p.summary.update, 10);
    assert!(
        p.warnings
            .iter()
            .all(|w| w.kind == plan::WarningKind::FleetShare),
        "{:?}",
        p.warnings
    );
}

#[test]
fn a_thousand_account_change_fits_one_pr_comment_and_groups() {
    let fleet = Fleet::generated(1000);
    // Nothing deployed yet: 1,000 distinct creates must still fit, by truncation.
    let fresh = fleet.plan_value(None, "HEAD");
    assert_eq!(fresh.summary.create, 1000);
    let md = format::markdown(
        &fresh,
        format::MARKDOWN_LIMIT,
        Some("https://ci.example/plan.json"),
    );
    assert!(md.len() <= format::MARKDOWN_LIMIT, "{} bytes", md.len());
    assert!(
        md.contains("https://ci.example/plan.json"),
        "truncation points at the full plan"
    );
    assert!(md.starts_with("| fleetgate plan |"));

    assert_eq!(code(&fleet.apply()), 0);
    let text = std::fs::read_to_string(fleet.repo.join("base/gateway.yaml")).unwrap();
    let (find, replace) = if text.contains("timeout: 5s") {
        ("timeout: 5s", "timeout: 7s")
    } else {
        (
            "  routes:\n",
            "  routes:\n    - {name: probe, methods: [GET], path: /probe, backend: orders, public: true}\n",
        )
    };
    fleet.commit("base/gateway.yaml", find, replace, "a fleet-wide change");
    let p = fleet.plan_value(Some("HEAD~1"), "HEAD");
    let md = format::markdown(&p, format::MARKDOWN_LIMIT, None);
    assert!(md.len() <= format::MARKDOWN_LIMIT, "{} bytes", md.len());
    assert!(md.starts_with("| fleetgate plan |"), "{}", &md[..200]);
    assert!(md.contains(format::MARKDOWN_MARKER));
    assert!(md.contains("same change in"), "identical diffs are grouped");
    assert!(!md.contains("truncated"), "a grouped change fits whole");
    assert_eq!(p.summary.update, 1000);
    assert_eq!(
        p.rendered,
        plan::RenderCounts {
            base: 1000,
            head: 1000
        }
    );
    assert!(
        p.groups.len() <= 50,
        "{} groups for one change",
        p.groups.len()
    );
    assert_eq!(
        p.warnings.last().unwrap().kind,
        plan::WarningKind::FleetShare
    );

    // One account's file: one account rendered on each side.
    let name = p.accounts[500].name.clone();
    let file = format!("accounts/{name}.yaml");
    let text = std::fs::read_to_string(fleet.repo.join(&file)).unwrap();
    std::fs::write(fleet.repo.join(&file), format!("{text}# reviewed\n")).unwrap();
    git(&fleet.repo, &["commit", "-q", "-am", "touch one account"]);
    let p = fleet.plan_value(Some("HEAD~1"), "HEAD");
    assert_eq!(p.rendered, plan::RenderCounts { base: 1, head: 1 });
    assert_eq!(p.summary.planned, 1);
    assert_eq!(p.summary.not_affected, 999);
}

const SALT_ONE: &str = "UExBTlRFRHNhbHQtb25l";
const SALT_TWO: &str = "UExBTlRFRHNhbHQtdHdv";
const HASH_ONE: &str = "UExBTlRFRC1zZWNyZXQtaGFzaC1udW1iZXItb25lISE";
const HASH_TWO: &str = "UExBTlRFRC1zZWNyZXQtaGFzaC1udW1iZXItdHdvISE";
const PLAIN: &str = "hunter2-PLANTED-plaintext";

fn phc(salt: &str, hash: &str) -> String {
    format!("$argon2id$v=19$m=19456,t=2,p=1${salt}${hash}")
}

#[test]
fn planted_secrets_never_appear_in_any_output() {
    let fleet = Fleet::example();
    let current = "$argon2id$v=19$m=19456,t=2,p=1$ZmxlZXRnYXRlLWRlbW8x$A68me9I+LlqZr7RRrOAfN7JHQxw3ORylYavJ1+KbeN8";
    fleet.commit(
        "base/idp.yaml",
        current,
        &phc(SALT_ONE, HASH_ONE),
        "plant secret one",
    );
    let mut outputs: Vec<(String, Output)> = Vec::new();
    for f in ["text", "markdown", "json"] {
        outputs.push((format!("fresh {f}"), fleet.plan(&["--format", f])));
    }
    outputs.push(("apply".into(), fleet.apply()));
    fleet.commit(
        "base/idp.yaml",
        &phc(SALT_ONE, HASH_ONE),
        &phc(SALT_TWO, HASH_TWO),
        "rotate the planted secret",
    );
    for f in ["text", "markdown", "json"] {
        outputs.push((format!("update {f}"), fleet.plan(&["--format", f])));
        outputs.push((
            format!("base {f}"),
            fleet.plan(&["--base", "HEAD~1", "--format", f]),
        ));
    }
    // The change is visible as a change, without the values.
    let text = stdout(&outputs.last().unwrap().1);
    assert!(text.contains("(sensitive value changed)"), "{text}");
    // An invalid head that carries a plain secret fails without echoing it.
    fleet.commit(
        "base/idp.yaml",
        &phc(SALT_TWO, HASH_TWO),
        PLAIN,
        "paste a plain secret by mistake",
    );
    let bad = fleet.plan(&["--base", "HEAD~1"]);
    assert_eq!(code(&bad), 1);
    assert!(stderr(&bad).contains("base/idp.yaml:"), "{}", stderr(&bad));
    outputs.push(("invalid".into(), bad));
    outputs.push(("invalid apply".into(), fleet.apply()));

    for (what, o) in &outputs {
        for stream in [stdout(o), stderr(o)] {
            for planted in [SALT_ONE, SALT_TWO, HASH_ONE, HASH_TWO, PLAIN, "PLANTED"] {
                assert!(
                    !stream.contains(planted),
                    "{what} shows {planted}:\n{stream}"
                );
            }
        }
    }
}

#[test]
fn bad_input_fails_clearly_or_stays_with_its_account() {
    let fleet = Fleet::example();

    let out = fleet.plan(&["--head", "no-such-branch"]);
    assert_eq!(code(&out), 1);
    assert!(
        stderr(&out).contains("unknown revision \"no-such-branch\""),
        "{}",
        stderr(&out)
    );

    let plain = fleet.tmp.path().join("plain");
    std::fs::create_dir_all(&plain).unwrap();
    let out = fleet.run(&[
        "plan",
        "--repo",
        plain.to_str().unwrap(),
        "--target",
        &fleet.target,
    ]);
    assert_eq!(code(&out), 1);
    assert!(
        stderr(&out).contains("is not a git repository"),
        "{}",
        stderr(&out)
    );

    let out = fleet.run(&[
        "plan",
        "--repo",
        fleet.repo.to_str().unwrap(),
        "--target",
        "s4://nowhere",
    ]);
    assert_eq!(code(&out), 1);
    assert!(
        stderr(&out).contains("unsupported target"),
        "{}",
        stderr(&out)
    );

    // Invalid manifests at the head: every problem with file:line, nothing planned.
    fleet.commit(
        "accounts/acme-prod.yaml",
        "stage: prod",
        "stage: [prod",
        "break acme",
    );
    let out = fleet.plan(&["--base", "HEAD~1", "--format", "json"]);
    assert_eq!(code(&out), 1);
    // No plan on invalid input: the errors instead (comment_integrity.rs tests them).
    let errors = json(&out);
    assert_eq!(errors["valid"], false, "{errors}");
    assert!(errors.get("summary").is_none(), "{errors}");
    assert!(
        stderr(&out).contains("accounts/acme-prod.yaml:"),
        "{}",
        stderr(&out)
    );
    let out = fleet.apply();
    assert_eq!(code(&out), 1);
    assert!(
        std::fs::read_dir(fleet.target_dir())
            .unwrap()
            .next()
            .is_none(),
        "nothing applied"
    );
    git(&fleet.repo, &["revert", "--no-edit", "HEAD"]);

    // A corrupt pointer and a tampered bundle: those accounts are reported, the rest planned.
    assert_eq!(code(&fleet.apply()), 0);
    let dir = fleet.target_dir();
    std::fs::write(dir.join("globex-prod/current.json"), "{\"digest\": 12").unwrap();
    let pointer: Value =
        serde_json::from_slice(&std::fs::read(dir.join("acme-prod/current.json")).unwrap())
            .unwrap();
    let digest = pointer["digest"]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:")
        .to_string();
    let bundle = dir.join(format!("acme-prod/bundles/{digest}.json"));
    let text = std::fs::read_to_string(&bundle).unwrap();
    std::fs::write(&bundle, text.replace("acme", "evil")).unwrap();
    std::fs::create_dir_all(dir.join("retired-customer/bundles")).unwrap();

    // A plain plan reads only the pointer of an account already at the head; the tampered
    // bundle behind acme-prod's intact pointer is for --verify-bundles and drift to find.
    let out = fleet.plan(&["--format", "json"]);
    assert_eq!(code(&out), 1, "globex-prod is unreachable");
    let p = json(&out);
    let by_name: BTreeMap<String, String> = actions(&p).into_iter().collect();
    assert_eq!(by_name["acme-prod"], "no-change");
    assert_eq!(by_name["globex-prod"], "unreachable");
    let repo = fleet.repo.to_str().unwrap();
    let drift = fleet.run(&[
        "drift",
        "--repo",
        repo,
        "--target",
        &fleet.target,
        "--format",
        "json",
    ]);
    assert_eq!(code(&drift), 2, "drift, and nothing unreachable");
    let report = json(&drift);
    let globex = report["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == "globex-prod")
        .unwrap();
    assert!(
        globex["cause"]
            .as_str()
            .unwrap()
            .starts_with("out-of-band edit: globex-prod: current.json is corrupt"),
        "{globex}"
    );
    let acme = report["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == "acme-prod")
        .unwrap();
    assert_eq!(acme["status"], "drifted");
    assert!(
        acme["cause"].as_str().unwrap().starts_with("tampered"),
        "{acme}"
    );
    let out = fleet.plan(&["--format", "json", "--verify-bundles"]);
    assert_eq!(
        code(&out),
        1,
        "unreachable accounts make the plan incomplete"
    );
    let p = json(&out);
    let by_name: BTreeMap<String, String> = actions(&p).into_iter().collect();
    assert_eq!(by_name["acme-prod"], "unreachable");
    assert_eq!(by_name["globex-prod"], "unreachable");
    assert_eq!(by_name.values().filter(|a| *a == "no-change").count(), 8);
    assert_eq!(p["orphans"], serde_json::json!(["retired-customer"]));
    let notes: Vec<&str> = p["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a["note"].as_str())
        .collect();
    assert!(
        notes
            .iter()
            .any(|n| n.starts_with("acme-prod: bundle") && n.contains("does not match its digest")),
        "{notes:?}"
    );
    assert!(
        notes
            .iter()
            .any(|n| n.starts_with("globex-prod: current.json is corrupt")),
        "{notes:?}"
    );
    let text = stdout(&fleet.plan(&[]));
    assert!(text.contains("Unreachable"), "{text}");
    assert!(text.contains("retired-customer"), "{text}");

    // Apply leaves them alone, writes nothing else, and says so.
    let out = fleet.apply();
    assert_eq!(code(&out), 1);
    assert!(
        stderr(&out).contains("skipped globex-prod"),
        "{}",
        stderr(&out)
    );
    assert!(
        stdout(&out).contains("0 created, 0 updated, 9 unchanged"),
        "acme-prod's pointer is at the head: nothing to write\n{}",
        stdout(&out)
    );
    assert!(
        dir.join("retired-customer").exists(),
        "orphans are never deleted"
    );
    assert!(
        std::fs::read_to_string(&bundle).unwrap().contains("evil"),
        "a tampered bundle is left for a human to look at"
    );
    let plan = json(&fleet.plan(&["--format", "json"]));
    assert!(
        plan["accounts"]
            .as_array()
            .unwrap()
            .iter()
            .all(|a| a["action"] != Action::Create.as_str())
    );
}

/// One plan, several documents: one read of the target and one redaction key, so the PR
/// comment and the JSON artifact show the same fingerprints (three runs used three keys).
#[test]
fn one_plan_run_writes_every_format_asked_for_with_one_redaction_key() {
    let fleet = Fleet::example();
    let dir = fleet.tmp.path();
    let (md, js, txt) = (
        dir.join("plan.md"),
        dir.join("plan.json"),
        dir.join("plan.txt"),
    );
    let out = Command::new(env!("CARGO_BIN_EXE_fleetgate"))
        .args([
            "plan",
            "--repo",
            fleet.repo.to_str().unwrap(),
            "--target",
            &fleet.target,
        ])
        .arg("--out")
        .arg(format!("markdown={}", md.display()))
        .arg("--out")
        .arg(format!("json={}", js.display()))
        .arg("--out")
        .arg(format!("text={}", txt.display()))
        .env("FLEETGATE_CACHE_DIR", dir.join("cache"))
        .env_remove("FLEETGATE_REDACTION_KEY")
        .output()
        .unwrap();
    assert_eq!(code(&out), 2, "changes: {}", stderr(&out));
    assert!(stdout(&out).is_empty(), "every document went to its file");
    let (md, js, txt) = (
        std::fs::read_to_string(md).unwrap(),
        std::fs::read_to_string(js).unwrap(),
        std::fs::read_to_string(txt).unwrap(),
    );
    assert!(md.contains(format::MARKDOWN_MARKER));
    let doc: Value = serde_json::from_str(&js).unwrap();
    assert_eq!(doc["summary"]["create"], 10);
    assert!(
        txt.contains("acme-prod") && !txt.contains('\u{1b}'),
        "{txt}"
    );
    let fingerprints = |s: &str| -> std::collections::BTreeSet<String> {
        s.match_indices("(sensitive:")
            .map(|(i, _)| s[i..i + 24.min(s.len() - i)].to_string())
            .collect()
    };
    let (in_text, in_json) = (fingerprints(&txt), fingerprints(&js));
    assert!(
        !in_text.is_empty(),
        "the example's secrets show as fingerprints"
    );
    assert!(in_text.is_subset(&in_json), "{in_text:?}\n{in_json:?}");
}
