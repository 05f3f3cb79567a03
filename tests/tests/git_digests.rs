//! Digests identify what an account runs, not which commit produced it: across two real git
//! commits that change one account, every other account's digest stays the same (so nothing
//! else rolls out), and the changed account's digest changes.

use std::path::Path;

use fleetgate::{DirSource, Repo, render};
use fleetgate_tests::{edit, example_git_repo, git};

/// Renders every account of the repo as of `commit`, from a clean export of that commit.
fn digests_at(repo: &Path, commit: &str, scratch: &Path) -> Vec<(String, String)> {
    let dir = scratch.join(commit);
    std::fs::create_dir_all(&dir).expect("mkdir");
    git(
        repo,
        &[
            "worktree",
            "add",
            "--detach",
            dir.to_str().expect("utf-8 path"),
            commit,
        ],
    );
    let loaded = Repo::load(&DirSource::new(&dir));
    assert!(loaded.diagnostics.is_empty(), "{:?}", loaded.diagnostics);
    loaded
        .account_names()
        .map(|n| {
            (
                n.to_string(),
                render(&loaded, n).expect("renders").digest.to_string(),
            )
        })
        .collect()
}

#[test]
fn a_commit_to_one_account_changes_only_that_accounts_digest() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let repo = tmp.path().join("config");
    let first = example_git_repo(&repo);

    // Bump one account's pin and, in the same commit, edit only a comment elsewhere.
    edit(
        &repo,
        "accounts/stark-prod.yaml",
        "customers: \"1.3.0\"",
        "customers: \"1.2.0\"",
    );
    edit(
        &repo,
        "accounts/acme-prod.yaml",
        "# Largest customer",
        "# Our largest customer",
    );
    git(
        &repo,
        &["commit", "-q", "-am", "stark: back to customers 1.2.0"],
    );
    let second = git(&repo, &["rev-parse", "HEAD"]).trim().to_string();
    assert_ne!(first, second);

    let scratch = tmp.path().join("trees");
    let before = digests_at(&repo, &first, &scratch);
    let after = digests_at(&repo, &second, &scratch);
    assert_eq!(before.len(), 10);
    let changed: Vec<&str> = before
        .iter()
        .zip(&after)
        .filter(|((a, da), (b, db))| {
            assert_eq!(a, b);
            da != db
        })
        .map(|((a, _), _)| a.as_str())
        .collect();
    assert_eq!(
        changed,
        ["stark-prod"],
        "only the edited account's bundle may change"
    );
}
