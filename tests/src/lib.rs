//! Helpers for the cross-crate integration tests in `tests/`: real git repositories built
//! with the git CLI in temp directories.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Runs git in `dir` with a fixed identity; panics with git's stderr on failure.
pub fn git(dir: &Path, args: &[&str]) -> String {
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
    String::from_utf8(out.stdout).expect("git prints UTF-8")
}

pub fn copy_dir(from: &Path, to: &Path) {
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

pub fn example_repo_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../config-repo-example")
}

/// A git repository in `dir` holding the example config repo as one commit on `main`.
pub fn example_git_repo(dir: &Path) -> String {
    copy_dir(&example_repo_dir(), dir);
    git(dir, &["init", "-q", "-b", "main"]);
    git(dir, &["add", "."]);
    git(dir, &["commit", "-q", "-m", "fleet as in the example"]);
    git(dir, &["rev-parse", "HEAD"]).trim().to_string()
}

/// The example config repo in git (`config/`) and an empty `file://` fleet directory
/// (`deployed/`, a fleet never deployed to) in one temp dir, removed on drop. Test files add
/// their own methods (`impl ExampleFleet` in the including crate).
#[derive(Debug)]
pub struct ExampleFleet {
    pub tmp: tempfile::TempDir,
    pub repo: PathBuf,
    pub target: String,
}

impl ExampleFleet {
    pub fn example() -> ExampleFleet {
        ExampleFleet::with_repo(|repo| {
            example_git_repo(repo);
        })
    }

    /// A fleet whose config repo `fill` writes into `config/` (an empty directory); what it
    /// leaves uncommitted is committed on `main`.
    pub fn with_repo(fill: impl FnOnce(&Path)) -> ExampleFleet {
        let tmp = tempfile::tempdir().expect("tempdir");
        let repo = tmp.path().join("config");
        std::fs::create_dir_all(&repo).expect("mkdir config");
        fill(&repo);
        if !repo.join(".git").exists() {
            git(&repo, &["init", "-q", "-b", "main"]);
        }
        git(&repo, &["add", "."]);
        if !git(&repo, &["status", "--porcelain"]).trim().is_empty() {
            git(&repo, &["commit", "-q", "-m", "fleet"]);
        }
        let deployed = tmp.path().join("deployed");
        std::fs::create_dir_all(&deployed).expect("mkdir deployed");
        let target = format!("file://{}", deployed.display());
        ExampleFleet { tmp, repo, target }
    }
}

/// Rewrites one file of a working tree.
pub fn edit(dir: &Path, file: &str, find: &str, replace: &str) {
    let path = dir.join(file);
    let text = std::fs::read_to_string(&path).expect("read");
    assert_eq!(text.matches(find).count(), 1, "{find:?} in {file}");
    std::fs::write(&path, text.replace(find, replace)).expect("write");
}

/// A finished command's exit code (-1 when killed by a signal).
pub fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Exit code, stdout and stderr, for assertion messages.
pub fn show(o: &Output) -> String {
    format!(
        "exit {}\n--- stdout\n{}\n--- stderr\n{}",
        code(o),
        stdout(o),
        stderr(o)
    )
}

/// Standard output parsed as JSON; panics with the whole output when it is not.
pub fn json(o: &Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("JSON: {e}\n{}", show(o)))
}

/// The workspace's `fleetgate-gateway` binary beside `fleetgate` (a test's
/// `env!("CARGO_BIN_EXE_fleetgate")`), built first when it is missing.
pub fn gateway_bin_beside(fleetgate: &Path) -> PathBuf {
    let bin =
        fleetgate.with_file_name(format!("fleetgate-gateway{}", std::env::consts::EXE_SUFFIX));
    if !bin.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "-q", "-p", "fleetgate-gateway"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .expect("cargo runs");
        assert!(status.success(), "cargo build -p fleetgate-gateway");
    }
    bin
}
