//! Grouping by the change, not its text: on real git repositories (the git CLI in temp
//! dirs), deployed with the real `fleetgate apply` to a `file://` target, and planned base ->
//! head. Changes that differ only in each account's own `${account.*}` values are one group
//! showing the template; a version bump's group leads with the routes it brings; changes that
//! really differ still split.

// Helpers outside #[test] functions panic on purpose too: a test that cannot set up fails.
#![allow(clippy::unwrap_used)]

#[path = "../../tests/src/lib.rs"]
#[allow(dead_code)] // shared helpers: not every test file uses each
mod support;

use std::collections::BTreeSet;
use std::process::{Command, Output};

use fleetgate::config::example_fleet::{self, FleetParams};
use fleetgate::git::GitRepo;
use fleetgate::ops::pipeline;
use fleetgate::plan::{self, Action, Area, Plan, format};
use fleetgate::target::{FanOut, FileTarget};
use support::{ExampleFleet as Fleet, code, edit, git, stderr};

impl Fleet {
    fn generated(accounts: usize) -> Fleet {
        Fleet::with_repo(|repo| {
            let src = example_fleet::generate(&FleetParams { accounts, seed: 7 });
            example_fleet::write_to(&src, repo).expect("write fleet");
        })
    }

    fn commit(&self, edits: &[(&str, &str, &str)], message: &str) {
        for (file, find, replace) in edits {
            edit(&self.repo, file, find, replace);
        }
        git(&self.repo, &["commit", "-q", "-am", message]);
    }

    /// Deploys the head with the real binary.
    fn apply(&self) {
        let out: Output = Command::new(env!("CARGO_BIN_EXE_fleetgate"))
            .args([
                "apply",
                "--repo",
                self.repo.to_str().unwrap(),
                "--target",
                &self.target,
                "--all-at-once",
            ])
            .env("FLEETGATE_CACHE_DIR", self.tmp.path().join("cache"))
            .env("FLEETGATE_REDACTION_KEY", "test-key")
            .env("FLEETGATE_APPLIED_BY", "grouping-test")
            .env("NO_COLOR", "1")
            .output()
            .expect("fleetgate runs");
        assert_eq!(code(&out), 0, "{}", stderr(&out));
    }

    /// The plan of `HEAD~1 -> HEAD` against what is deployed, through the library.
    fn plan(&self) -> Plan {
        let repo = GitRepo::open(self.repo.to_str().unwrap(), &self.tmp.path().join("cache"))
            .expect("opens");
        let head = repo.resolve("HEAD").expect("head");
        let base = repo.resolve("HEAD~1").expect("base");
        let prepared = pipeline::prepare(&repo, Some(&base), &head).expect("prepares");
        let options = plan::Options {
            redaction_key: b"test-key".to_vec(),
            ..plan::Options::default()
        };
        let target = FileTarget::new(&self.target);
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(pipeline::observe_and_plan(
            &prepared,
            &target,
            &options,
            &FanOut::quiet(8),
            pipeline::Verify::Pointers,
            &|_| false,
        ))
        .expect("plans")
    }

    /// `spec.region` of an account, as its file says.
    fn region(&self, account: &str) -> String {
        let text =
            std::fs::read_to_string(self.repo.join(format!("accounts/{account}.yaml"))).unwrap();
        text.lines()
            .find_map(|l| l.trim().strip_prefix("region: "))
            .unwrap()
            .to_string()
    }
}

const ACTIVE_KEY: &str = "        kid: idp-2026-09\n        algorithm: RS256\n        privateKey: {awsSecretsManager: \"arn:aws:secretsmanager:${account.region}:${account.id}:secret:fleetgate/idp/signing-2026-09\"}\n";
const ROTATED_KEY: &str = "        kid: idp-2026-11\n        algorithm: RS256\n        privateKey: {awsSecretsManager: \"arn:aws:secretsmanager:${account.region}:${account.id}:secret:fleetgate/idp/signing-2026-11\"}\n";
const TEMPLATE_ARN: &str =
    "arn:aws:secretsmanager:${account.region}:${account.id}:secret:fleetgate/idp/signing-2026-11";

fn changed_lines(diff: &str) -> Vec<&str> {
    diff.lines().filter(|l| !l.starts_with(' ')).collect()
}

#[test]
fn a_fleet_wide_key_rotation_is_one_group_showing_the_template() {
    let fleet = Fleet::generated(1000);
    fleet.apply();
    fleet.commit(
        &[("base/idp.yaml", ACTIVE_KEY, ROTATED_KEY)],
        "rotate the IdP signing key",
    );
    let p = fleet.plan();
    assert_eq!(p.summary.update, 1000);
    let regions: BTreeSet<String> = p.accounts.iter().map(|a| fleet.region(&a.name)).collect();
    assert!(regions.len() >= 3, "several regions: {regions:?}");

    assert_eq!(p.groups.len(), 1, "one change, one group");
    let g = &p.groups[0];
    assert_eq!(g.action, Action::Update);
    assert_eq!(g.accounts.len(), 1000);
    assert_eq!(g.variables, ["account.id", "account.region"]);
    let lines = changed_lines(&g.diff);
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with('+') && l.contains(TEMPLATE_ARN)),
        "{}",
        g.diff
    );
    assert!(
        g.context_from.is_none(),
        "the context lines are the same template too: {:?}\n{}",
        g.context_from,
        g.diff
    );

    // Each account keeps its own, literal change; the template gives it back.
    for a in p.accounts.iter().step_by(97) {
        assert_eq!(a.group, Some(0));
        assert!(!a.diff.unpack().contains("${account."), "{}", a.diff);
        let own = TEMPLATE_ARN
            .replace("${account.region}", &fleet.region(&a.name))
            .replace("${account.id}", &a.account_id);
        assert!(
            changed_lines(&a.diff.unpack())
                .iter()
                .any(|l| l.starts_with('+') && l.contains(&own)),
            "{}: {}",
            a.name,
            a.diff
        );
    }

    // The PR comment shows the one group with its template, not "... not shown".
    let md = format::markdown(&p, format::MARKDOWN_LIMIT, None);
    assert!(md.len() <= format::MARKDOWN_LIMIT);
    assert!(md.contains("same change in 1000 accounts"), "{md}");
    assert!(md.contains(TEMPLATE_ARN), "{md}");
    assert!(!md.contains("not shown"), "{md}");
    assert!(!md.contains("Diff truncated"), "{md}");
    assert_eq!(md.matches("<details><summary><b>update</b>").count(), 1);
    let text = format::text(&p, false);
    assert!(text.contains(TEMPLATE_ARN), "{text}");
}

#[test]
fn a_version_bump_leads_with_the_routes_and_policies_it_brings() {
    let fleet = Fleet::example();
    // The enterprise accounts (whose overlay defines the partner policy) pin payments in
    // their own files: 3.1.0, deployed; then 3.2.0, whose spec adds the refund routes and a
    // partner alternative on getPayment.
    let pinned = ["acme-prod", "globex-prod", "hooli-early", "internal-canary"];
    let files: Vec<String> = pinned
        .iter()
        .map(|a| format!("accounts/{a}.yaml"))
        .collect();
    let pin = |version: &str| format!("    customers: \"1.3.0\"\n    payments: \"{version}\"\n");
    let (old, new) = (pin("3.1.0"), pin("3.2.0"));
    let edits: Vec<(&str, &str, &str)> = files
        .iter()
        .map(|f| (f.as_str(), "    customers: \"1.3.0\"\n", old.as_str()))
        .collect();
    fleet.commit(&edits, "enterprise accounts pin payments 3.1.0");
    fleet.apply();
    let edits: Vec<(&str, &str, &str)> = files
        .iter()
        .map(|f| (f.as_str(), old.as_str(), new.as_str()))
        .collect();
    fleet.commit(&edits, "payments 3.2.0");
    let p = fleet.plan();
    assert_eq!(p.summary.update, pinned.len(), "{:?}", p.summary);
    assert!(!p.groups.is_empty());

    let bookkeeping = |c: &plan::Change| {
        c.area == Area::Route && c.details.iter().all(|d| d.starts_with("service.version:"))
    };
    for g in &p.groups {
        let first = &g.changes[0];
        assert!(
            matches!(first.area, Area::Route | Area::AuthPolicy | Area::Backend)
                && !bookkeeping(first),
            "the headline is what the bump brings, not its version line: {first}\n{:#?}",
            g.changes
        );
        assert!(
            g.changes.iter().any(bookkeeping),
            "the version lines are still listed"
        );
        let last_substantive = g.changes.iter().rposition(|c| !bookkeeping(c)).unwrap();
        let first_bookkeeping = g.changes.iter().position(bookkeeping).unwrap();
        assert!(
            last_substantive < first_bookkeeping,
            "version-only lines come last: {:#?}",
            g.changes
        );
    }
    let headline = p.groups[0].changes[0].to_string();
    assert!(
        headline.contains("refund") || headline.contains("auth"),
        "{headline}"
    );
    // The comment's collapsed headline is that change.
    let md = format::markdown(&p, format::MARKDOWN_LIMIT, None);
    let summary = md
        .lines()
        .find(|l| l.starts_with("<details><summary><b>update</b>"))
        .unwrap();
    // `<summary>` text is written as numeric character references: read it as GitHub does.
    let summary = &unescape_numeric(summary);
    assert!(
        summary.contains(&format!(
            "route {} {}",
            p.groups[0].changes[0].name,
            p.groups[0].changes[0].op.as_str()
        )),
        "{summary}"
    );
}

#[test]
fn changes_that_really_differ_still_split_and_coincidences_stay_literal() {
    let fleet = Fleet::example();
    fleet.apply();
    // The fleet rotates its key; two accounts point their key at each other's account id
    // (an id is only a variable in its own account).
    let swapped = |id: &str| {
        format!(
            "  patches:\n    idp:\n      issuer:\n        signingKeys:\n          active:\n            privateKey: {{awsSecretsManager: \"arn:aws:secretsmanager:${{account.region}}:{id}:secret:fleetgate/idp/signing-2026-11\"}}\n"
        )
    };
    let acme = swapped("623456789012");
    let initech = format!("    payments: \"3.1.0\"\n{}", swapped("423456789012"));
    fleet.commit(
        &[
            ("base/idp.yaml", ACTIVE_KEY, ROTATED_KEY),
            ("accounts/acme-prod.yaml", "  patches:\n", &acme),
            (
                "accounts/initech-prod.yaml",
                "    payments: \"3.1.0\"\n",
                &initech,
            ),
        ],
        "rotate; two accounts swap key ids",
    );
    let p = fleet.plan();
    assert_eq!(p.summary.update, 10);
    let sizes: Vec<usize> = p.groups.iter().map(|g| g.accounts.len()).collect();
    assert_eq!(sizes, [8, 1, 1], "{:#?}", p.groups);
    assert_eq!(p.groups[0].variables, ["account.id", "account.region"]);
    assert!(p.groups[0].diff.contains(TEMPLATE_ARN));
    let alone: BTreeSet<&str> = p.groups[1..]
        .iter()
        .map(|g| g.accounts[0].as_str())
        .collect();
    assert_eq!(alone, BTreeSet::from(["acme-prod", "initech-prod"]));
    // The JSON plan, with and without `variables`, is what its schema says.
    let schema: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../schemas/plan.schema.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let document: serde_json::Value = serde_json::from_str(&format::json(&p)).unwrap();
    assert!(
        jsonschema::validator_for(&schema)
            .unwrap()
            .is_valid(&document)
    );
    assert_eq!(
        document["groups"][0]["variables"],
        serde_json::json!(["account.id", "account.region"])
    );
    assert!(
        document["groups"][1].get("variables").is_none(),
        "{:#?}",
        p.groups[1]
    );
    for g in &p.groups[1..] {
        let other = if g.accounts[0] == "acme-prod" {
            "623456789012"
        } else {
            "423456789012"
        };
        assert!(
            changed_lines(&g.diff).iter().any(|l| l.contains(other)),
            "the other account's id stays literal: {}",
            g.diff
        );
    }

    // A value the whole fleet writes literally (a region and an id that are some accounts'
    // own): the same text everywhere, so one group, and shown as written.
    fleet.apply();
    let shared = "arn:aws:secretsmanager:us-east-1:423456789012:secret:fleetgate/idp/shared";
    fleet.commit(
        &[(
            "base/idp.yaml",
            ROTATED_KEY,
            &ROTATED_KEY.replace(TEMPLATE_ARN, shared),
        )],
        "one shared key for the fleet",
    );
    let p = fleet.plan();
    assert_eq!(p.summary.update, 8, "the two patched accounts keep theirs");
    assert_eq!(p.groups.len(), 1, "{:#?}", p.groups);
    let g = &p.groups[0];
    // What goes is each account's own ARN; what comes is the same text everywhere, though
    // `us-east-1` is the region of two of them.
    assert_eq!(g.variables, ["account.id", "account.region"]);
    let lines = changed_lines(&g.diff);
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with('-') && l.contains(TEMPLATE_ARN)),
        "{}",
        g.diff
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with('+') && l.contains(shared) && !l.contains("${")),
        "{}",
        g.diff
    );
}

/// `&#NN;` references back to their characters (what a browser shows).
fn unescape_numeric(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find("&#") {
        out.push_str(&rest[..i]);
        let tail = &rest[i + 2..];
        match tail.find(';').and_then(|j| {
            let n: u32 = tail[..j].parse().ok()?;
            Some((char::from_u32(n)?, j))
        }) {
            Some((c, j)) => {
                out.push(c);
                rest = &tail[j + 1..];
            }
            None => {
                out.push_str("&#");
                rest = tail;
            }
        }
    }
    out.push_str(rest);
    out
}
