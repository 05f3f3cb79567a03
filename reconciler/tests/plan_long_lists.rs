//! Long account lists in the text and markdown plans: a generated fleet of 150 accounts,
//! deployed with the real `fleetgate apply` to a `file://` target, then a commit that changes
//! every account and removes 25 (orphans). Past `LIST_NAMES` names, a group's, a warning's
//! or the orphans' list shows the first names, the last and the count; the JSON plan keeps
//! every name.

// Helpers outside #[test] functions panic on purpose too: a test that cannot set up fails.
#![allow(clippy::unwrap_used)]

#[path = "../../tests/src/lib.rs"]
#[allow(dead_code)] // shared helpers: not every test file uses each
mod support;

use std::process::Command;

use fleetgate::config::example_fleet::{self, FleetParams};
use support::{ExampleFleet as Fleet, code, git, stderr};

/// Names one list shows in text and markdown (`plan::format::common::LIST_NAMES`).
const LIST_NAMES: usize = 20;
const ACCOUNTS: usize = 150;
const REMOVED: usize = 25;

fn fleetgate(fleet: &Fleet, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_fleetgate"))
        .args(args)
        .args([
            "--repo",
            fleet.repo.to_str().unwrap(),
            "--target",
            &fleet.target,
        ])
        .env("FLEETGATE_CACHE_DIR", fleet.tmp.path().join("cache"))
        .env("FLEETGATE_REDACTION_KEY", "test-key")
        .env("FLEETGATE_APPLIED_BY", "long-lists-test")
        .env("NO_COLOR", "1")
        .output()
        .expect("fleetgate runs")
}

/// The list as text shows it past the limit.
fn collapsed(names: &[String], quote: &str) -> String {
    let q = |n: &String| format!("{quote}{n}{quote}");
    let first: Vec<String> = names[..LIST_NAMES - 1].iter().map(q).collect();
    format!(
        "{}, ... {} ({} accounts)",
        first.join(", "),
        q(names.last().unwrap()),
        names.len()
    )
}

fn names(v: &serde_json::Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn long_account_lists_are_collapsed_in_text_and_markdown_and_whole_in_json() {
    let fleet = Fleet::with_repo(|repo| {
        let src = example_fleet::generate(&FleetParams {
            accounts: ACCOUNTS,
            seed: 7,
        });
        example_fleet::write_to(&src, repo).expect("write fleet");
    });
    let out = fleetgate(&fleet, &["apply", "--all-at-once"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));

    // Every account's bundle changes; the last REMOVED accounts leave git (orphans).
    support::edit(
        &fleet.repo,
        "base/gateway.yaml",
        "maxBodyBytes: 1048576",
        "maxBodyBytes: 1048577",
    );
    let mut files: Vec<String> = std::fs::read_dir(fleet.repo.join("accounts"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    for f in &files[ACCOUNTS - REMOVED..] {
        git(&fleet.repo, &["rm", "-q", &format!("accounts/{f}")]);
    }
    git(&fleet.repo, &["commit", "-q", "-am", "bump and remove"]);

    let dir = fleet.tmp.path();
    let (text, md, json) = (
        dir.join("plan.txt"),
        dir.join("plan.md"),
        dir.join("plan.json"),
    );
    let out = fleetgate(
        &fleet,
        &[
            "plan",
            "--out",
            &format!("text={}", text.display()),
            "--out",
            &format!("markdown={}", md.display()),
            "--out",
            &format!("json={}", json.display()),
        ],
    );
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    let text = std::fs::read_to_string(text).unwrap();
    let md = std::fs::read_to_string(md).unwrap();
    let plan: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(json).unwrap()).unwrap();

    // The JSON plan has every name.
    assert_eq!(
        plan["accounts"].as_array().unwrap().len(),
        ACCOUNTS - REMOVED
    );
    let orphans = names(&plan["orphans"]);
    assert_eq!(orphans.len(), REMOVED);

    // Groups: every list past the limit collapsed, with its count.
    let mut long_groups = 0;
    for g in plan["groups"].as_array().unwrap() {
        let accounts = names(&g["accounts"]);
        let n = accounts.len();
        if n <= LIST_NAMES {
            assert!(text.contains(&accounts.join(", ")), "{text}");
            continue;
        }
        long_groups += 1;
        let title = format!("same change in {n} accounts: {}", collapsed(&accounts, ""));
        assert!(
            text.contains(&format!("~ update {title}\n")),
            "{title}\n{text}"
        );
        assert!(
            md.contains(&format!(
                "<details><summary>show {LIST_NAMES} of {n} accounts</summary>\n\n{}\n</details>",
                collapsed(&accounts, "`")
            )),
            "{md}"
        );
        for hidden in &accounts[LIST_NAMES - 1..n - 1] {
            assert!(!text.contains(&format!(" {hidden},")), "{hidden} shown");
            assert!(!md.contains(&format!("`{hidden}`")), "{hidden} shown");
        }
    }
    assert!(
        long_groups > 0,
        "no group past {LIST_NAMES} accounts:\n{text}"
    );

    // Orphans.
    assert!(
        text.contains(&format!(
            "Orphaned (in the target, not in git, not approved for decommission; never deleted): {}\n",
            collapsed(&orphans, "")
        )),
        "{text}"
    );
    assert!(md.contains(&collapsed(&orphans, "`")), "{md}");

    // No line of the text plan names more accounts than the limit.
    for line in text.lines() {
        assert!(
            line.matches("tenant-").count() <= LIST_NAMES,
            "{} names on one line",
            line.matches("tenant-").count()
        );
    }
}
