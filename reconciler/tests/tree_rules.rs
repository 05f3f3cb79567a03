//! The working tree is read the way git stores it: regular files only, symlinks followed only
//! to regular files inside the repo, a per-file size limit, special files refused without
//! being opened. Each case is a real directory (the example repo in a temp dir) that is also
//! a real git repository holding the same tree, and `fleetgate validate` of the directory must
//! give the same verdict, with the same located messages, as `fleetgate plan` of the commit.
//!
//! Every run of the binary has a watchdog: a run that has not ended after a minute is
//! killed and the test fails (a hang guard, not a timing assertion).

// Helpers outside #[test] functions panic on purpose too: a test that cannot set up fails.
#![allow(clippy::unwrap_used)]

#[path = "../../tests/src/lib.rs"]
#[allow(dead_code)] // shared helpers: not every test file uses each
mod support;

use std::collections::BTreeSet;
use std::io::Read as _;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use fleetgate::config::source::MAX_FILE_BYTES;
use support::{copy_dir, example_repo_dir, git};

/// How long a run may take before the watchdog kills it. Every run here ends in well under a
/// second; only a hang reaches this.
const WATCHDOG: Duration = Duration::from_secs(60);

/// A finished run: exit code and everything it printed.
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    /// Every `file:line:col: message` line, from either stream.
    fn diagnostics(&self) -> BTreeSet<String> {
        self.stdout
            .lines()
            .chain(self.stderr.lines())
            .filter(|line| is_diagnostic(line))
            .map(str::to_string)
            .collect()
    }

    fn show(&self) -> String {
        format!(
            "exit {}\n--- stdout\n{}\n--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

fn is_diagnostic(line: &str) -> bool {
    let mut parts = line.splitn(4, ':');
    let (Some(file), Some(l), Some(c), Some(rest)) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    !file.is_empty()
        && !file.contains(' ')
        && l.parse::<u64>().is_ok()
        && c.parse::<u64>().is_ok()
        && rest.starts_with(' ')
}

/// Runs the binary with a watchdog: a run still going after [`WATCHDOG`] is killed and the
/// test fails, naming what hung.
fn run_fleetgate(dir: &Path, args: &[&str]) -> Run {
    let mut child = Command::new(env!("CARGO_BIN_EXE_fleetgate"))
        .args(args)
        .env("FLEETGATE_CACHE_DIR", dir.join("cache"))
        .env("FLEETGATE_REDACTION_KEY", "test-key")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("fleetgate starts");
    let drain = |mut r: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut out = Vec::new();
            let _ = r.read_to_end(&mut out);
            String::from_utf8_lossy(&out).into_owned()
        })
    };
    let out = drain(Box::new(child.stdout.take().unwrap()));
    let err = drain(Box::new(child.stderr.take().unwrap()));
    let deadline = Instant::now() + WATCHDOG;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "fleetgate {} did not end within {}s and was killed (a hang)",
                args.join(" "),
                WATCHDOG.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    Run {
        code: status.code().unwrap_or(-1),
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    }
}

/// The example config repo in `<tmp>/config`, a git repository once [`Case::commit`] runs.
struct Case {
    tmp: tempfile::TempDir,
}

#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    Valid,
    Invalid(BTreeSet<String>),
}

impl Case {
    fn new() -> Case {
        let tmp = tempfile::tempdir().expect("tempdir");
        copy_dir(&example_repo_dir(), &tmp.path().join("config"));
        git(&tmp.path().join("config"), &["init", "-q", "-b", "main"]);
        std::fs::create_dir(tmp.path().join("deployed")).unwrap();
        Case { tmp }
    }

    fn repo(&self) -> PathBuf {
        self.tmp.path().join("config")
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.repo().join(rel)
    }

    /// A file outside the repo: a valid account manifest, so that reading it is not an error
    /// in itself.
    fn outside_file(&self) -> PathBuf {
        let path = self.tmp.path().join("outside.yaml");
        let text = std::fs::read_to_string(self.path("accounts/acme-prod.yaml"))
            .unwrap()
            .replace("name: acme-prod", "name: outsider")
            .replace("accountId: \"423456789012\"", "accountId: \"423456789099\"");
        std::fs::write(&path, text).unwrap();
        path
    }

    fn link(&self, link: &str, target: impl AsRef<Path>) {
        symlink(target, self.path(link)).unwrap();
    }

    /// Commits the working tree as it is (git stores symlinks as symlinks).
    fn commit(&self) {
        git(&self.repo(), &["add", "-A"]);
        git(&self.repo(), &["commit", "-q", "-m", "the tree under test"]);
        assert_eq!(
            git(&self.repo(), &["status", "--porcelain"]),
            "",
            "the working tree is the commit"
        );
    }

    fn validate(&self) -> (Verdict, Run) {
        let repo = self.repo();
        let run = run_fleetgate(
            self.tmp.path(),
            &["validate", "--repo", repo.to_str().unwrap()],
        );
        let verdict = match run.code {
            0 => {
                assert!(run.stdout.starts_with("valid:"), "{}", run.show());
                Verdict::Valid
            }
            1 => Verdict::Invalid(run.diagnostics()),
            _ => panic!("validate: {}", run.show()),
        };
        (verdict, run)
    }

    /// The verdict of `plan` on the commit: git's side.
    fn plan(&self) -> (Verdict, Run) {
        let repo = self.repo();
        let target = format!("file://{}", self.tmp.path().join("deployed").display());
        let run = run_fleetgate(
            self.tmp.path(),
            &[
                "plan",
                "--repo",
                repo.to_str().unwrap(),
                "--head",
                "main",
                "--target",
                &target,
            ],
        );
        let verdict = match run.code {
            // Planned: no change, or changes (every account is new to the empty target).
            0 | 2 => Verdict::Valid,
            1 => Verdict::Invalid(run.diagnostics()),
            _ => panic!("plan: {}", run.show()),
        };
        (verdict, run)
    }

    /// Validate of the directory and plan of the commit agree; the verdict.
    fn same_verdict(&self) -> Verdict {
        let (from_dir, dir_run) = self.validate();
        let (from_git, git_run) = self.plan();
        assert_eq!(
            from_dir,
            from_git,
            "the working tree and git disagree\n=== validate\n{}\n=== plan\n{}",
            dir_run.show(),
            git_run.show()
        );
        from_dir
    }
}

fn invalid(lines: &[&str]) -> Verdict {
    Verdict::Invalid(lines.iter().map(|l| l.to_string()).collect())
}

#[test]
fn a_fifo_is_refused_without_being_opened() {
    let case = Case::new();
    let fifo = case.path("accounts/x.yaml");
    let status = Command::new("mkfifo").arg(&fifo).status().expect("mkfifo");
    assert!(status.success());
    // Opening it for reading would block until a writer comes: validate must not.
    let (verdict, run) = case.validate();
    assert_eq!(
        verdict,
        invalid(&[
            "accounts/x.yaml:1:1: is a FIFO (named pipe); only regular files are read, and it was not opened"
        ]),
        "{}",
        run.show()
    );
    assert!(run.stderr.contains("1 problem found"), "{}", run.show());
    // The same as JSON, located.
    let repo = case.repo();
    let json = run_fleetgate(
        case.tmp.path(),
        &[
            "validate",
            "--repo",
            repo.to_str().unwrap(),
            "--format",
            "json",
        ],
    );
    assert_eq!(json.code, 1, "{}", json.show());
    let doc: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(doc["valid"], false);
    assert_eq!(doc["errors"][0]["file"], "accounts/x.yaml");
    assert_eq!(doc["errors"][0]["line"], 1);
    assert_eq!(doc["errors"][0]["column"], 1);
    // git stores no FIFO: `git add` leaves it out, so the commit holds the example alone.
    case.commit();
    assert_eq!(case.plan().0, Verdict::Valid);
}

#[test]
fn a_symlink_to_dev_zero_is_refused_from_the_tree_and_from_git() {
    let case = Case::new();
    case.link("accounts/zero.yaml", "/dev/zero");
    case.commit();
    assert_eq!(
        case.same_verdict(),
        invalid(&[
            "accounts/zero.yaml:1:1: symlink to \"/dev/zero\" is not followed: an absolute target is outside the repo"
        ])
    );
}

#[test]
fn symlinks_to_files_outside_the_repo_are_refused_from_the_tree_and_from_git() {
    let case = Case::new();
    let outside = case.outside_file();
    // Absolute, and relative with `..` above the root: both lead to a valid manifest that
    // must not be read.
    case.link("accounts/outsider.yaml", &outside);
    case.link("accounts/sneaky.yaml", "../../outside.yaml");
    case.commit();
    assert_eq!(
        case.same_verdict(),
        invalid(&[
            &format!(
                "accounts/outsider.yaml:1:1: symlink to {:?} is not followed: an absolute target is outside the repo",
                outside.display().to_string()
            ),
            "accounts/sneaky.yaml:1:1: symlink to \"../../outside.yaml\" is not followed: its target leaves the repo (`..` above the root)",
        ])
    );
}

#[test]
fn a_symlink_to_a_file_inside_the_repo_is_followed_from_the_tree_and_from_git() {
    let case = Case::new();
    // A new service version sharing an existing spec: every services/*/*/openapi.* is
    // checked, so the target is read and imported through the link.
    std::fs::create_dir_all(case.path("services/customers/9.9.9")).unwrap();
    case.link(
        "services/customers/9.9.9/openapi.yaml",
        "../1.3.0/openapi.yaml",
    );
    case.commit();
    assert_eq!(case.same_verdict(), Verdict::Valid);
    // The spec was read through the link: one more service version than the example has.
    let versions = |run: &Run| -> usize {
        let line = run.stdout.lines().next().unwrap_or_default();
        let count = line
            .strip_suffix(" service versions")
            .and_then(|l| l.rsplit(' ').next())
            .unwrap_or_else(|| panic!("a count of service versions: {line}"));
        count.parse().unwrap()
    };
    let example = Case::new().validate().1;
    assert_eq!(versions(&case.validate().1), versions(&example) + 1);
}

#[test]
fn symlinks_inside_the_repo_to_anything_but_a_regular_file_are_refused_alike() {
    let case = Case::new();
    case.link("accounts/to-link.yaml", "zero.yaml");
    case.link("accounts/zero.yaml", "/dev/zero");
    case.link("accounts/to-dir.yaml", "../base");
    case.link("accounts/to-git.yaml", "../.git/config");
    case.link("accounts/dangling.yaml", "nowhere.yaml");
    // Through a directory that is a symlink: not a path of the repo's tree.
    case.link("linked-dir", "accounts");
    case.link("accounts/via-link.yaml", "../linked-dir/acme-prod.yaml");
    case.commit();
    assert_eq!(
        case.same_verdict(),
        invalid(&[
            "accounts/dangling.yaml:1:1: symlink to \"nowhere.yaml\" is not followed: no such file in the repo",
            "accounts/to-dir.yaml:1:1: symlink to \"../base\" is not followed: its target is a directory, not a file",
            "accounts/to-git.yaml:1:1: symlink to \"../.git/config\" is not followed: its target is inside a hidden path (such as .git), which is not part of the config repo",
            "accounts/to-link.yaml:1:1: symlink to \"zero.yaml\" is not followed: its target is itself a symlink (link to the file directly)",
            "accounts/via-link.yaml:1:1: symlink to \"../linked-dir/acme-prod.yaml\" is not followed: no such file in the repo",
            "accounts/zero.yaml:1:1: symlink to \"/dev/zero\" is not followed: an absolute target is outside the repo",
        ])
    );
}

#[test]
fn a_file_over_the_size_limit_is_refused_naming_the_limit_from_the_tree_and_from_git() {
    let case = Case::new();
    std::fs::create_dir_all(case.path("services/huge/1.0.0")).unwrap();
    // Sparse: one byte over the limit costs no disk (git compresses the zeros to little).
    let file = std::fs::File::create(case.path("services/huge/1.0.0/openapi.yaml")).unwrap();
    file.set_len(MAX_FILE_BYTES + 1).unwrap();
    drop(file);
    // Through a link, the target's size counts.
    std::fs::create_dir_all(case.path("services/huge/3.0.0")).unwrap();
    case.link("services/huge/3.0.0/openapi.yaml", "../1.0.0/openapi.yaml");
    case.commit();
    assert_eq!(
        case.same_verdict(),
        invalid(&[
            "services/huge/1.0.0/openapi.yaml:1:1: is larger than the per-file limit of 32 MiB (33554432 bytes)",
            "services/huge/3.0.0/openapi.yaml:1:1: symlink to \"../1.0.0/openapi.yaml\" is not followed: its target is larger than the per-file limit of 32 MiB (33554432 bytes)",
        ])
    );
    assert_eq!(MAX_FILE_BYTES, 32 * 1024 * 1024);
}

#[test]
fn a_submodule_where_a_manifest_belongs_is_refused_from_the_tree_and_from_git() {
    let case = Case::new();
    case.commit();
    // A gitlink entry (what `git submodule add` writes) at accounts/vendored.
    let head = git(&case.repo(), &["rev-parse", "HEAD"]);
    git(
        &case.repo(),
        &[
            "update-index",
            "--add",
            "--cacheinfo",
            &format!("160000,{},accounts/vendored", head.trim()),
        ],
    );
    git(&case.repo(), &["commit", "-q", "-m", "a submodule"]);
    // Checked out, a submodule is a directory holding a .git; its files are another
    // repository's, whatever is checked out there.
    std::fs::create_dir_all(case.path("accounts/vendored/.git")).unwrap();
    std::fs::copy(
        case.path("accounts/acme-prod.yaml"),
        case.path("accounts/vendored/acme-copy.yaml"),
    )
    .unwrap();
    assert_eq!(
        case.same_verdict(),
        invalid(&[
            "accounts/vendored:1:1: is a git submodule; only files stored in this repository are read"
        ])
    );
}
