//! Digests identify what an account runs, not which commit produced it: across two real git
//! commits that change one account, every other account's digest stays the same (so nothing
//! else rolls out), and the changed account's digest changes.

use std::path::Path;
use std::process::Command;

use fleetgate::{DirSource, Repo, render};

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args([
            "-c",
            "user.name=fleetgate-test",
            "-c",
            "user.email=test@fleetgate.invalid",
            "-c",
            "commit.gpgsign=false",
        ])
        .args(args)
        .current_dir(dir)
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("readable") {
        let entry = entry.expect("entry");
        let dest = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_dir(&entry.path(), &dest);
        } else {
            std::fs::copy(entry.path(), dest).expect("copy");
        }
    }
}

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
    copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("../config-repo-example"),
        &repo,
    );
    git(&repo, &["init", "-q", "-b", "main"]);
    git(&repo, &["add", "."]);
    git(&repo, &["commit", "-q", "-m", "fleet as in the example"]);
    let first = git(&repo, &["rev-parse", "HEAD"]).trim().to_string();

    // Bump one account's pin and, in the same commit, edit only comments elsewhere.
    let stark = repo.join("accounts/stark-prod.yaml");
    let text = std::fs::read_to_string(&stark)
        .expect("read")
        .replace("customers: \"1.3.0\"", "customers: \"1.2.0\"");
    std::fs::write(&stark, text).expect("write");
    let acme = repo.join("accounts/acme-prod.yaml");
    let text = std::fs::read_to_string(&acme)
        .expect("read")
        .replace("# Largest customer", "# Our largest customer");
    std::fs::write(&acme, text).expect("write");
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
