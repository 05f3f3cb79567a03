//! Strict where it matters, through the real `fleetgate` binary on real git repositories and
//! real `file://` targets in temp dirs:
//!
//! - a `file://` target whose directory does not exist is an error (exit 1, naming the path)
//!   for every command that reads it; only `apply` creates it;
//! - account ids are exactly 12 digits as written, and the accepted spellings stay accepted;
//! - a value an account's patch wrote is reported at the patch by `plan` too, not at the base.
//!
//! Bad manifests of one file each are in `bad_input.rs` (fixtures); these need git and a target.

#![allow(clippy::unwrap_used)]

#[path = "../../tests/src/lib.rs"]
#[allow(dead_code)] // shared helpers: not every test file uses each
mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use support::{code, edit, example_git_repo, git, show, stderr, stdout};

struct Rig {
    tmp: tempfile::TempDir,
    repo: PathBuf,
}

impl Rig {
    fn new() -> Rig {
        let tmp = tempfile::tempdir().unwrap();
        let repo = tmp.path().join("config");
        example_git_repo(&repo);
        Rig { tmp, repo }
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_fleetgate"))
            .args(args)
            .arg("--repo")
            .arg(&self.repo)
            .env("FLEETGATE_CACHE_DIR", self.tmp.path().join("cache"))
            .env("FLEETGATE_REDACTION_KEY", "test-key")
            .env("FLEETGATE_APPLIED_BY", "strict-test")
            .env("NO_COLOR", "1")
            .output()
            .unwrap()
    }

    fn path(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }
}

fn file_target(dir: &Path) -> String {
    format!("file://{}", dir.display())
}

#[test]
fn a_missing_file_target_is_an_error_for_every_reader_and_apply_creates_it() {
    let rig = Rig::new();
    let missing = rig.path("no-such-dir");
    let target = file_target(&missing);
    let shown = missing.display().to_string();

    let readers: [&[&str]; 7] = [
        &["plan"],
        &["plan", "--format", "json"],
        &["plan", "--format", "markdown"],
        &["drift"],
        &["rollback", "--to", "HEAD", "--no-hold"],
        &["history", "--account", "acme-prod"],
        &["release"],
    ];
    for args in readers {
        let mut args = args.to_vec();
        args.extend(["--target", target.as_str()]);
        let out = rig.run(&args);
        assert_eq!(code(&out), 1, "{args:?} must fail:\n{}", show(&out));
        let err = stderr(&out);
        assert!(
            err.contains(&shown) && err.contains("cannot be listed"),
            "{args:?} must name the path it cannot list:\n{}",
            show(&out)
        );
        // Never read as "nothing deployed": no account is planned as a create.
        assert!(
            !stdout(&out).contains("create"),
            "{args:?} planned creates:\n{}",
            show(&out)
        );
        assert!(!missing.exists(), "{args:?} created the target directory");
    }

    // A path that is a file is not a target either.
    let file = rig.path("a-file");
    std::fs::write(&file, "").unwrap();
    let out = rig.run(&["plan", "--target", &file_target(&file)]);
    assert_eq!(code(&out), 1, "{}", show(&out));
    assert!(stderr(&out).contains("not a directory"), "{}", show(&out));

    // apply creates it, and from then on it is a target like any other.
    let out = rig.run(&["apply", "--all-at-once", "--target", &target]);
    assert_eq!(code(&out), 0, "{}", show(&out));
    assert!(missing.join("acme-prod").join("current.json").is_file());
    let out = rig.run(&["plan", "--target", &target]);
    assert_eq!(code(&out), 0, "{}", show(&out));
    let out = rig.run(&["drift", "--target", &target]);
    assert_eq!(code(&out), 0, "{}", show(&out));

    // An existing, empty directory is a fleet never deployed: every account is a create.
    let empty = rig.path("empty");
    std::fs::create_dir(&empty).unwrap();
    let out = rig.run(&["plan", "--format", "json", "--target", &file_target(&empty)]);
    assert_eq!(code(&out), 2, "{}", show(&out));
}

#[test]
fn account_ids_written_as_their_12_digits_are_accepted_in_every_spelling() {
    let rig = Rig::new();
    // Quoted ids are what the example has; plain ones, with and without a leading zero:
    edit(
        &rig.repo,
        "accounts/acme-prod.yaml",
        "  accountId: \"423456789012\"\n",
        "  accountId: 423456789012\n",
    );
    edit(
        &rig.repo,
        "accounts/wayne-prod.yaml",
        "  accountId: \"023456789012\"\n",
        "  accountId: 023456789012\n",
    );
    let out = rig.run(&["validate", "--format", "json"]);
    assert_eq!(code(&out), 0, "{}", show(&out));
    git(&rig.repo, &["commit", "-q", "-am", "ids unquoted"]);
    let target = rig.path("deployed");
    std::fs::create_dir(&target).unwrap();
    let out = rig.run(&[
        "plan",
        "--format",
        "json",
        "--target",
        &file_target(&target),
    ]);
    assert_eq!(code(&out), 2, "{}", show(&out));
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let ids: Vec<&str> = plan["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a["accountId"].as_str())
        .collect();
    assert!(ids.contains(&"423456789012"), "{ids:?}");
    assert!(ids.contains(&"023456789012"), "{ids:?}");
}

#[test]
fn account_ids_yaml_would_convert_are_refused_by_plan_at_the_id() {
    let rig = Rig::new();
    edit(
        &rig.repo,
        "accounts/acme-prod.yaml",
        "  accountId: \"423456789012\"\n",
        "  accountId: 0x62A7DA2E14\n",
    );
    git(&rig.repo, &["commit", "-q", "-am", "hex id"]);
    let target = rig.path("deployed");
    std::fs::create_dir(&target).unwrap();
    let out = rig.run(&["plan", "--target", &file_target(&target)]);
    assert_eq!(code(&out), 1, "{}", show(&out));
    assert!(
        stderr(&out).contains("accounts/acme-prod.yaml:10:14: spec.accountId: account id 0x62A7DA2E14 must be exactly 12 digits as written"),
        "{}",
        show(&out)
    );
}

#[test]
fn plan_reports_a_patch_written_duplicate_host_at_the_patch() {
    let rig = Rig::new();
    edit(
        &rig.repo,
        "accounts/acme-prod.yaml",
        "    gateway:\n      routes:\n",
        "    gateway:\n      hosts: [api.acme.example, api.acme.example]\n      routes:\n",
    );
    git(&rig.repo, &["commit", "-q", "-am", "duplicate host"]);
    let target = rig.path("deployed");
    std::fs::create_dir(&target).unwrap();
    let out = rig.run(&["plan", "--target", &file_target(&target)]);
    assert_eq!(code(&out), 1, "{}", show(&out));
    let err = stderr(&out);
    assert!(
        err.contains(
            "accounts/acme-prod.yaml:20:7: gateway: host \"api.acme.example\" is listed twice"
        ),
        "{}",
        show(&out)
    );
    assert!(!err.contains("base/gateway.yaml"), "{}", show(&out));
}
