//! Decommissioning on the example fleet, through the CLI, on a real git repository and a
//! `file://` fleet: an account removed from git without approval stays orphaned (a warning,
//! nothing written); with fleet.yaml's approval the plan shows `decommission` on its own, in
//! the text and the PR comment; apply writes tombstones by compare-and-swap, keeping the
//! digest; drift says `decommissioned`; a second apply writes nothing; `rollback --to` brings
//! the account back.

#![allow(clippy::unwrap_used)]

#[path = "../../tests/src/lib.rs"]
#[allow(dead_code)]
mod support;

use std::path::PathBuf;
use std::process::{Command, Output};

use serde_json::Value;
use support::{ExampleFleet as Fleet, code, git, show, stdout};

impl Fleet {
    fn run(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_fleetgate"))
            .args(args)
            .env("FLEETGATE_CACHE_DIR", self.tmp.path().join("cache"))
            .env("FLEETGATE_REDACTION_KEY", "test-key")
            .env("FLEETGATE_APPLIED_BY", "offboarding-test")
            .env("NO_COLOR", "1")
            .output()
            .expect("fleetgate runs")
    }

    fn repo_str(&self) -> &str {
        self.repo.to_str().unwrap()
    }

    fn apply(&self) -> Output {
        self.run(&[
            "apply",
            "--repo",
            self.repo_str(),
            "--target",
            &self.target,
            "--skip-health-gates",
        ])
    }

    fn deployed(&self, account: &str) -> PathBuf {
        self.tmp.path().join("deployed").join(account)
    }

    fn receipts(&self) -> PathBuf {
        self.tmp.path().join("deployed/.fleetgate/erasures")
    }

    fn receipt(&self, account: &str) -> Value {
        serde_json::from_slice(
            &std::fs::read(self.receipts().join(format!("{account}.json"))).unwrap(),
        )
        .unwrap()
    }

    fn pointer(&self, account: &str) -> Value {
        let path: PathBuf = self
            .tmp
            .path()
            .join("deployed")
            .join(account)
            .join("current.json");
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap()
    }
}

const APPROVAL: &str = "
offboarding:
  gracePeriod: 0s
  decommission:
    - {account: globex-canary, accountId: \"310987654321\", region: eu-west-1, tenant: globex, reason: \"contract ended (TICKET-42)\"}
    - {account: globex-prod, accountId: \"523456789012\", region: eu-west-1, tenant: globex, reason: \"contract ended (TICKET-42)\"}
";

#[test]
fn a_tenant_is_decommissioned_only_with_approval_and_can_come_back() {
    let fleet = Fleet::example();
    let out = fleet.apply();
    assert_eq!(code(&out), 0, "{}", show(&out));
    let before = fleet.pointer("globex-prod");
    let first = git(&fleet.repo, &["rev-parse", "HEAD"]).trim().to_string();

    // Removed from git without an approval: orphaned, a warning, nothing written.
    git(
        &fleet.repo,
        &[
            "rm",
            "-q",
            "accounts/globex-prod.yaml",
            "accounts/globex-canary.yaml",
        ],
    );
    git(&fleet.repo, &["commit", "-q", "-m", "globex leaves"]);
    let out = fleet.run(&[
        "plan",
        "--repo",
        fleet.repo_str(),
        "--target",
        &fleet.target,
    ]);
    let text = stdout(&out);
    assert!(text.contains("removed without approval"), "{text}");
    assert!(text.contains("Orphaned"), "{text}");
    assert!(!text.contains("Decommission ("), "{text}");
    let out = fleet.apply();
    assert_eq!(code(&out), 0, "{}", show(&out));
    assert_eq!(fleet.pointer("globex-prod"), before, "nothing written");

    // An approval still naming a file in git is refused, with where.
    let fleet_yaml = std::fs::read_to_string(fleet.repo.join("fleet.yaml")).unwrap();
    std::fs::write(
        fleet.repo.join("accounts/globex-prod.yaml"),
        git(
            &fleet.repo,
            &["show", &format!("{first}:accounts/globex-prod.yaml")],
        ),
    )
    .unwrap();
    // The approval goes under spec: indented.
    let indented: String = APPROVAL
        .lines()
        .map(|l| {
            if l.is_empty() {
                String::new()
            } else {
                format!("  {l}")
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(
        fleet.repo.join("fleet.yaml"),
        format!("{}{indented}\n", fleet_yaml.trim_end()),
    )
    .unwrap();
    let out = fleet.run(&["validate", "--repo", fleet.repo_str()]);
    assert_ne!(code(&out), 0, "{}", show(&out));
    assert!(
        show(&out).contains("accounts/globex-prod.yaml is still there"),
        "{}",
        show(&out)
    );

    // Approved: the plan shows each decommission, and a warning naming the tenant.
    std::fs::remove_file(fleet.repo.join("accounts/globex-prod.yaml")).unwrap();
    git(&fleet.repo, &["add", "-A"]);
    git(
        &fleet.repo,
        &["commit", "-q", "-m", "offboard globex (TICKET-42)"],
    );
    let approved = git(&fleet.repo, &["rev-parse", "HEAD"]).trim().to_string();
    let out = fleet.run(&[
        "plan",
        "--repo",
        fleet.repo_str(),
        "--target",
        &fleet.target,
    ]);
    assert_eq!(code(&out), 2, "changes to apply: {}", show(&out));
    let text = stdout(&out);
    for want in [
        "decommission globex-canary (tenant globex, account 310987654321, s3://fleetgate-config-310987654321/fleetgate/globex-canary/)",
        "decommission globex-prod (tenant globex, account 523456789012, s3://fleetgate-config-523456789012/fleetgate/globex-prod/)",
        "2 to decommission",
    ] {
        assert!(text.contains(want), "{want:?} in:\n{text}");
    }
    assert!(
        !text.contains("Orphaned"),
        "approved accounts are not orphans: {text}"
    );
    let out = fleet.run(&[
        "plan",
        "--repo",
        fleet.repo_str(),
        "--target",
        &fleet.target,
        "--format",
        "markdown",
    ]);
    let md = stdout(&out);
    assert!(md.contains("### 🛑 Decommission"), "{md}");
    assert!(md.contains("**decommission** `globex-prod`"), "{md}");
    assert!(
        md.contains("**decommission**: 2 accounts of tenant globex"),
        "{md}"
    );
    let out = fleet.run(&[
        "plan",
        "--repo",
        fleet.repo_str(),
        "--target",
        &fleet.target,
        "--format",
        "json",
    ]);
    let plan: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(plan["summary"]["decommission"], 2);
    assert_eq!(plan["decommissions"][1]["action"], "decommission");
    assert_eq!(plan["decommissions"][1]["tenant"], "globex");

    // Applied: tombstones keeping the digest; the rest of the fleet untouched.
    let acme = fleet.pointer("acme-prod");
    let out = fleet.apply();
    assert_eq!(code(&out), 0, "{}", show(&out));
    assert!(
        stdout(&out).contains("decommissioned globex-prod"),
        "{}",
        show(&out)
    );
    let tomb = fleet.pointer("globex-prod");
    assert_eq!(tomb["digest"], before["digest"], "the digest is kept");
    assert_eq!(tomb["decommissioned"]["commit"], approved.as_str());
    assert_eq!(tomb["decommissioned"]["tenant"], "globex");
    assert_eq!(
        tomb["decommissioned"]["reason"],
        "contract ended (TICKET-42)"
    );
    assert_eq!(tomb["decommissioned"]["by"], "offboarding-test");
    assert_eq!(fleet.pointer("acme-prod"), acme);

    // Drift: decommissioned, in sync (exit 0); a second apply writes nothing.
    let out = fleet.run(&[
        "drift",
        "--repo",
        fleet.repo_str(),
        "--target",
        &fleet.target,
    ]);
    assert_eq!(code(&out), 0, "{}", show(&out));
    let text = stdout(&out);
    assert!(text.contains("decommissioned globex-prod"), "{text}");
    assert!(text.contains("2 decommissioned"), "{text}");
    assert!(!text.contains("orphaned     globex"), "{text}");
    let out = fleet.run(&[
        "plan",
        "--repo",
        fleet.repo_str(),
        "--target",
        &fleet.target,
    ]);
    assert_eq!(code(&out), 0, "nothing left to do: {}", show(&out));
    let out = fleet.apply();
    assert_eq!(code(&out), 0, "{}", show(&out));
    assert_eq!(fleet.pointer("globex-prod"), tomb);

    // A glob never selects a decommissioned account (an incident's `rollback --accounts '*'`
    // must not bring a tenant back); its exact name does.
    let out = fleet.run(&[
        "release",
        "--repo",
        fleet.repo_str(),
        "--target",
        &fleet.target,
        "--accounts",
        "globex-*",
    ]);
    assert_ne!(code(&out), 0, "{}", show(&out));
    assert!(show(&out).contains("no account matches"), "{}", show(&out));

    // Rolled back to before the decommission: the account serves its bundle again.
    let out = fleet.run(&[
        "rollback",
        "--repo",
        fleet.repo_str(),
        "--branch",
        &approved,
        "--to",
        &first,
        "--target",
        &fleet.target,
        "--accounts",
        "globex-prod",
        "--reason",
        "the customer came back",
    ]);
    assert_eq!(code(&out), 0, "{}", show(&out));
    let back = fleet.pointer("globex-prod");
    assert!(back.get("decommissioned").is_none(), "{back:#}");
    assert_eq!(back["digest"], before["digest"]);
    // Held there: the approval still in fleet.yaml does not decommission it again until
    // the hold is released.
    let out = fleet.run(&[
        "plan",
        "--repo",
        fleet.repo_str(),
        "--target",
        &fleet.target,
    ]);
    assert!(stdout(&out).contains("held globex-prod"), "{}", show(&out));
    let out = fleet.apply();
    assert_eq!(code(&out), 0, "{}", show(&out));
    assert!(fleet.pointer("globex-prod").get("decommissioned").is_none());
    let out = fleet.run(&[
        "release",
        "--repo",
        fleet.repo_str(),
        "--target",
        &fleet.target,
        "--accounts",
        "globex-prod",
    ]);
    assert_eq!(code(&out), 0, "{}", show(&out));
    let out = fleet.apply();
    assert_eq!(code(&out), 0, "{}", show(&out));
    let tomb = fleet.pointer("globex-prod");
    assert!(tomb["decommissioned"].is_object());

    // Erasure. A live account is refused, and so is one inside its grace period.
    let erase = |extra: &[&str]| {
        let mut args = vec![
            "erase",
            "--repo",
            fleet.repo_str(),
            "--target",
            &fleet.target,
        ];
        args.extend_from_slice(extra);
        fleet.run(&args)
    };
    let out = erase(&["--account", "acme-prod"]);
    assert_eq!(code(&out), 1, "{}", show(&out));
    assert!(show(&out).contains("it is live"), "{}", show(&out));
    support::edit(
        &fleet.repo,
        "fleet.yaml",
        "gracePeriod: 0s",
        "gracePeriod: 1h",
    );
    git(&fleet.repo, &["commit", "-q", "-am", "an hour of grace"]);
    let out = erase(&["--account", "globex-prod"]);
    assert_eq!(code(&out), 1, "{}", show(&out));
    assert!(show(&out).contains("grace period"), "{}", show(&out));
    assert!(fleet.deployed("globex-prod").exists(), "nothing deleted");
    support::edit(
        &fleet.repo,
        "fleet.yaml",
        "gracePeriod: 1h",
        "gracePeriod: 0s",
    );
    git(&fleet.repo, &["commit", "-q", "-am", "no grace"]);

    // Erased: nothing left under its prefix; the receipt says what went, and names no
    // tenant data beyond the ids.
    let out = erase(&["--account", "globex-prod"]);
    assert_eq!(code(&out), 0, "{}", show(&out));
    assert!(!fleet.deployed("globex-prod").exists(), "every object gone");
    let receipt: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(receipt["status"], "complete");
    assert_eq!(receipt["account"], "globex-prod");
    assert_eq!(receipt["accountId"], "523456789012");
    assert_eq!(receipt["tenant"], "globex");
    assert_eq!(
        receipt["decommissionCommit"],
        tomb["decommissioned"]["commit"]
    );
    assert_eq!(receipt["erasedBy"], "offboarding-test");
    assert!(
        receipt["deleted"]["bundle"].as_u64().unwrap() >= 1,
        "{receipt:#}"
    );
    assert_eq!(receipt["deleted"]["pointer"], 1, "{receipt:#}");
    assert!(
        receipt["keys"]
            .as_array()
            .unwrap()
            .iter()
            .any(|k| k == "current.json"),
        "{receipt:#}"
    );
    let stored = fleet.receipt("globex-prod");
    assert_eq!(stored["status"], "complete");
    // Again: nothing to do, the same receipt.
    let out = erase(&["--account", "globex-prod"]);
    assert_eq!(code(&out), 0, "{}", show(&out));
    assert!(show(&out).contains("already erased"), "{}", show(&out));
    assert_eq!(fleet.receipt("globex-prod"), stored);

    // A run killed midway (its receipt in progress, some objects deleted, the pointer still
    // there): the next one finishes, by tenant.
    let canary = fleet.deployed("globex-canary");
    let bundles: Vec<PathBuf> = std::fs::read_dir(canary.join("bundles"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    std::fs::create_dir_all(fleet.receipts()).unwrap();
    let first_bundle = format!(
        "bundles/{}",
        bundles[0].file_name().unwrap().to_string_lossy()
    );
    std::fs::write(
        fleet.receipts().join("globex-canary.json"),
        serde_json::to_vec(&serde_json::json!({
            "formatVersion": 1, "account": "globex-canary", "accountId": "310987654321",
            "tenant": "globex", "status": "in-progress",
            "location": format!("{}/globex-canary/", fleet.target),
            "erasedBy": "offboarding-test", "startedAt": "2026-12-05T10:00:00Z",
            "deleted": {}, "keys": [],
            "versions": [{"key": first_bundle}],
        }))
        .unwrap(),
    )
    .unwrap();
    std::fs::remove_file(&bundles[0]).unwrap();
    // It had got as far as the pointer: what is left is found without one.
    std::fs::remove_file(canary.join("current.json")).unwrap();
    let out = erase(&["--tenant", "globex"]);
    assert_eq!(code(&out), 0, "{}", show(&out));
    assert!(!canary.exists());
    let finished = fleet.receipt("globex-canary");
    assert_eq!(finished["status"], "complete");
    assert!(
        finished["keys"]
            .as_array()
            .unwrap()
            .iter()
            .any(|k| k == first_bundle.as_str()),
        "the killed run's deletion is counted: {finished:#}"
    );
    // The rest of the fleet is untouched.
    assert_eq!(fleet.pointer("acme-prod"), acme);
}
