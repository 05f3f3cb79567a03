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
