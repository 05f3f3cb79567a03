//! Bad input, data-driven: each `tests/fixtures/bad-input/<case>.yaml` mutates a copy of
//! `config-repo-example` and names the problems the CLI must report, and where.
//!
//! For every fixture, on a fresh copy of the example repo with the fixture's edits applied:
//! - `fleetgate validate` exits 1 and, for each expected problem, prints a line that starts
//!   with `FILE:LINE:COL: ` and contains the expected message;
//! - `fleetgate validate --format json` says `"valid": false` and lists an error at that
//!   file, line and column with that message;
//! - `fleetgate render --all --out DIR` exits 1 and writes nothing.
//!
//! Fixture format:
//!
//! ```yaml
//! description: what is wrong, and where the error belongs
//! edits:
//!   - {file: accounts/acme-prod.yaml, find: "  region: us-east-1\n", replace: "  regoin: us-east-1\n"}
//!   - {file: accounts/new.yaml, write: "...whole file..."}
//! expect:
//!   - {location: "accounts/acme-prod.yaml:11:3", message: "unknown field `regoin`"}
//! ```
//!
//! A `find` must occur exactly once in its file. `message` is a substring of the reported
//! message (without the trailing ` (account ...)`). With `exact: true`, the expected problems
//! must also be all that is reported: one mistake, one error, where it was made (not one per
//! account it affects).

use std::path::{Component, Path, PathBuf};
use std::process::{Command, Output};

use serde::Deserialize;

/// One fixture per case the suite must cover; more are welcome, none of these may go missing.
const REQUIRED: &[&str] = &[
    "unknown-field-in-account",
    "wrong-type-fleet-concurrency",
    "invalid-yaml-unclosed-flow-sequence",
    "duplicate-key",
    "duplicate-account-name",
    "duplicate-account-id",
    "account-id-not-12-digits",
    "unknown-overlay",
    "unknown-service-version",
    "unknown-service",
    "invalid-openapi",
    "route-method-path-collision",
    "undefined-backend",
    "weights-not-100",
    "unknown-issuer",
    "patch-delete-missing-route",
    "unknown-account-variable",
    "malformed-jwks-n-not-base64",
    "account-in-no-wave",
    "several-problems-in-different-files",
    "patch-duplicate-host",
    "overlay-duplicate-host",
    "patch-wrong-type-replaces-list",
    "patch-replaced-map-missing-field",
    "wave-stage-typo",
    "wave-selects-no-account",
    "wave-empty-because-accounts-broken",
    "account-stage-names-wave-stages",
    "account-id-hex",
    "account-id-underscores",
    "account-id-exponent",
    "account-id-decimal-point",
    "account-id-plus-sign",
    "binary-tag",
];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Fixture {
    description: String,
    edits: Vec<Edit>,
    expect: Vec<Expect>,
    /// The expected problems are the only ones reported.
    #[serde(default)]
    exact: bool,
}

/// Either `find` + `replace` (in an existing file) or `write` (the whole file).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Edit {
    file: String,
    find: Option<String>,
    replace: Option<String>,
    write: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Expect {
    /// `FILE:LINE:COL`, relative to the repo root.
    location: String,
    /// A substring of the message.
    message: String,
}

fn example_repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../config-repo-example")
}

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/bad-input")
}

/// Every fixture, sorted by name. Panics on anything that is not a readable, well-formed
/// `.yaml` fixture: a typo must not make a case silently disappear.
fn load_fixtures() -> Vec<(String, Fixture)> {
    let dir = fixtures_dir();
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|entry| entry.expect("readable directory entry").path())
        .collect();
    paths.sort();
    paths
        .into_iter()
        .map(|path| {
            assert!(
                path.is_file() && path.extension().is_some_and(|x| x == "yaml"),
                "{}: only <case>.yaml files belong in the fixtures directory",
                path.display()
            );
            let name = path
                .file_stem()
                .expect("a file name")
                .to_string_lossy()
                .into_owned();
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("fixture {name}: cannot read: {e}"));
            let fixture: Fixture = serde_saphyr::from_str(&text)
                .unwrap_or_else(|e| panic!("fixture {name}: not a valid fixture: {e}"));
            (name, fixture)
        })
        .collect()
}

/// Copies a directory tree (the example repo has only directories and regular files).
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap_or_else(|e| panic!("cannot create {}: {e}", to.display()));
    for entry in
        std::fs::read_dir(from).unwrap_or_else(|e| panic!("cannot read {}: {e}", from.display()))
    {
        let entry = entry.expect("readable directory entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target)
                .unwrap_or_else(|e| panic!("cannot copy {}: {e}", entry.path().display()));
        }
    }
}

/// A fresh copy of the example repo at `<tmp>/repo`.
fn copy_example(tmp: &Path) -> PathBuf {
    let repo = tmp.join("repo");
    copy_dir(&example_repo(), &repo);
    repo
}

fn apply_edits(repo: &Path, edits: &[Edit]) -> Result<(), String> {
    for (i, edit) in edits.iter().enumerate() {
        let what = format!("edit {} ({})", i + 1, edit.file);
        let rel = Path::new(&edit.file);
        if edit.file.is_empty() || !rel.components().all(|c| matches!(c, Component::Normal(_))) {
            return Err(format!(
                "{what}: `file` must be a relative path inside the repo"
            ));
        }
        let path = repo.join(rel);
        match (&edit.find, &edit.replace, &edit.write) {
            (Some(find), Some(replace), None) => {
                if find.is_empty() {
                    return Err(format!("{what}: `find` is empty"));
                }
                let text = std::fs::read_to_string(&path)
                    .map_err(|e| format!("{what}: cannot read the file to edit: {e}"))?;
                let n = text.matches(find.as_str()).count();
                if n != 1 {
                    return Err(format!(
                        "{what}: `find` must occur exactly once in the file, it occurs {n} times: `{find}`"
                    ));
                }
                std::fs::write(&path, text.replacen(find.as_str(), replace, 1))
                    .map_err(|e| format!("{what}: cannot write: {e}"))?;
            }
            (None, None, Some(content)) => {
                if let Some(parent) = path.parent() {
                    std::fs::create_dir_all(parent)
                        .map_err(|e| format!("{what}: cannot create its directory: {e}"))?;
                }
                std::fs::write(&path, content).map_err(|e| format!("{what}: cannot write: {e}"))?;
            }
            _ => {
                return Err(format!(
                    "{what}: give either `find` and `replace`, or `write`"
                ));
            }
        }
    }
    Ok(())
}

/// `FILE:LINE:COL` split into its parts.
fn parse_location(location: &str) -> Option<(&str, u64, u64)> {
    let mut parts = location.rsplitn(3, ':');
    let column = parts.next()?.parse().ok()?;
    let line = parts.next()?.parse().ok()?;
    let file = parts.next().filter(|f| !f.is_empty())?;
    Some((file, line, column))
}

fn fleetgate(args: &[&str], repo: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fleetgate"))
        .args(args)
        .arg("--repo")
        .arg(repo)
        .output()
        .expect("fleetgate runs")
}

fn exit_code(output: &Output) -> String {
    output
        .status
        .code()
        .map_or_else(|| "a signal".to_string(), |c| c.to_string())
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs one fixture. `Err` holds everything a reader needs: what failed, and the output.
fn check(fixture: &Fixture) -> Result<(), String> {
    if fixture.description.trim().is_empty() {
        return Err("the fixture has no description".into());
    }
    if fixture.edits.is_empty() {
        return Err("the fixture has no edits".into());
    }
    if fixture.expect.is_empty() {
        return Err("the fixture expects nothing".into());
    }
    let mut expected = Vec::with_capacity(fixture.expect.len());
    for e in &fixture.expect {
        let Some(loc) = parse_location(&e.location) else {
            return Err(format!(
                "expected location `{}` is not FILE:LINE:COL",
                e.location
            ));
        };
        if e.message.trim().is_empty() {
            return Err(format!(
                "the expected problem at {} has an empty message",
                e.location
            ));
        }
        expected.push((e, loc));
    }

    let tmp = tempfile::tempdir().expect("a temporary directory");
    let repo = copy_example(tmp.path());
    apply_edits(&repo, &fixture.edits)?;

    let mut failures = Vec::new();

    // Text output.
    let validate = fleetgate(&["validate"], &repo);
    let stderr = text(&validate.stderr);
    if validate.status.code() != Some(1) {
        failures.push(format!(
            "`validate` exited with {}, expected 1",
            exit_code(&validate)
        ));
    }
    for (e, _) in &expected {
        let prefix = format!("{}: ", e.location);
        if !stderr
            .lines()
            .any(|l| l.starts_with(&prefix) && l.contains(e.message.as_str()))
        {
            let at_location: Vec<&str> =
                stderr.lines().filter(|l| l.starts_with(&prefix)).collect();
            failures.push(if at_location.is_empty() {
                format!(
                    "`validate` reported nothing at {} (expected `{}`)",
                    e.location, e.message
                )
            } else {
                format!(
                    "`validate` reported at {} but without `{}`:\n    {}",
                    e.location,
                    e.message,
                    at_location.join("\n    ")
                )
            });
        }
    }
    let summary_ok = stderr.lines().last().is_some_and(|l| {
        l.split_once(' ').is_some_and(|(n, rest)| {
            n.parse::<usize>().is_ok_and(|n| n >= 1)
                && (rest == "problem found" || rest == "problems found")
        })
    });
    if !summary_ok {
        failures.push("`validate` did not end its output with `N problems found`".into());
    }

    // JSON output.
    let json = fleetgate(&["validate", "--format", "json"], &repo);
    let json_stdout = text(&json.stdout);
    let mut json_failed = false;
    if json.status.code() != Some(1) {
        failures.push(format!(
            "`validate --format json` exited with {}, expected 1",
            exit_code(&json)
        ));
        json_failed = true;
    }
    match serde_json::from_str::<serde_json::Value>(&json_stdout) {
        Err(e) => {
            failures.push(format!(
                "`validate --format json` printed no JSON document: {e}"
            ));
            json_failed = true;
        }
        Ok(doc) => {
            if doc["valid"] != serde_json::Value::Bool(false) {
                failures.push(format!(
                    "`validate --format json` says valid: {}",
                    doc["valid"]
                ));
                json_failed = true;
            }
            let errors = doc["errors"].as_array().cloned().unwrap_or_default();
            if fixture.exact && errors.len() != expected.len() {
                failures.push(format!(
                    "`validate --format json` reported {} problems, expected exactly {}",
                    errors.len(),
                    expected.len()
                ));
                json_failed = true;
            }
            for (e, (file, line, column)) in &expected {
                let found = errors.iter().any(|err| {
                    err["file"].as_str() == Some(*file)
                        && err["line"].as_u64() == Some(*line)
                        && err["column"].as_u64() == Some(*column)
                        && err["message"]
                            .as_str()
                            .is_some_and(|m| m.contains(e.message.as_str()))
                });
                if !found {
                    failures.push(format!(
                        "`validate --format json` has no error at {file}, line {line}, column {column} with `{}`",
                        e.message
                    ));
                    json_failed = true;
                }
            }
        }
    }

    // Render writes nothing.
    let out = tmp.path().join("out");
    let render = Command::new(env!("CARGO_BIN_EXE_fleetgate"))
        .args(["render", "--all", "--repo"])
        .arg(&repo)
        .arg("--out")
        .arg(&out)
        .output()
        .expect("fleetgate runs");
    let mut render_failed = false;
    if render.status.code() != Some(1) {
        failures.push(format!(
            "`render --all --out` exited with {}, expected 1",
            exit_code(&render)
        ));
        render_failed = true;
    }
    if out.exists() {
        let written: Vec<String> = std::fs::read_dir(&out)
            .expect("the output directory is readable")
            .map(|e| {
                e.expect("readable directory entry")
                    .file_name()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        if !written.is_empty() {
            failures.push(format!("`render --all --out` wrote {}", written.join(", ")));
            render_failed = true;
        }
    }

    if failures.is_empty() {
        return Ok(());
    }
    let mut report = format!(
        "- {}\n--- validate stderr ---\n{stderr}",
        failures.join("\n- ")
    );
    if json_failed {
        report.push_str(&format!(
            "--- validate --format json stdout ---\n{json_stdout}\n"
        ));
    }
    if render_failed {
        report.push_str(&format!(
            "--- render stdout ---\n{}--- render stderr ---\n{}",
            text(&render.stdout),
            text(&render.stderr)
        ));
    }
    Err(report)
}

#[test]
fn every_bad_input_fixture_is_reported_at_its_location_and_blocks_render() {
    let fixtures = load_fixtures();
    let names: Vec<&str> = fixtures.iter().map(|(n, _)| n.as_str()).collect();
    let missing: Vec<&str> = REQUIRED
        .iter()
        .copied()
        .filter(|r| !names.contains(r))
        .collect();
    assert!(
        missing.is_empty() && fixtures.len() >= REQUIRED.len(),
        "{}: {} fixtures, {} required; missing: {}",
        fixtures_dir().display(),
        fixtures.len(),
        REQUIRED.len(),
        missing.join(", ")
    );

    // Each case runs the CLI three times; run the cases side by side.
    let results: Vec<Result<(), String>> = std::thread::scope(|s| {
        let handles: Vec<_> = fixtures
            .iter()
            .map(|(_, fixture)| s.spawn(move || check(fixture)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a fixture check panicked"))
            .collect()
    });

    let failed: Vec<String> = fixtures
        .iter()
        .zip(&results)
        .filter_map(|((name, fixture), result)| {
            result.as_ref().err().map(|report| {
                format!(
                    "=== fixture {name}: {}\n{report}",
                    fixture.description.trim()
                )
            })
        })
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {} bad-input fixtures failed:\n\n{}",
        failed.len(),
        fixtures.len(),
        failed.join("\n\n")
    );
}

/// The harness is only as good as the copy: the unmodified example must be valid, and
/// render must write bundles for it (so "render wrote nothing" above means something).
#[test]
fn the_unmodified_copy_is_valid_and_renders() {
    let tmp = tempfile::tempdir().expect("a temporary directory");
    let repo = copy_example(tmp.path());

    let validate = fleetgate(&["validate"], &repo);
    assert_eq!(
        validate.status.code(),
        Some(0),
        "stdout:\n{}\nstderr:\n{}",
        text(&validate.stdout),
        text(&validate.stderr)
    );
    assert!(
        text(&validate.stdout).starts_with("valid: "),
        "{}",
        text(&validate.stdout)
    );

    let json = fleetgate(&["validate", "--format", "json"], &repo);
    assert_eq!(json.status.code(), Some(0), "{}", text(&json.stderr));
    let doc: serde_json::Value = serde_json::from_slice(&json.stdout).expect("a JSON document");
    assert_eq!(doc["valid"], serde_json::Value::Bool(true), "{doc}");
    assert_eq!(doc["errors"], serde_json::json!([]), "{doc}");

    let out = tmp.path().join("out");
    let render = Command::new(env!("CARGO_BIN_EXE_fleetgate"))
        .args(["render", "--all", "--repo"])
        .arg(&repo)
        .arg("--out")
        .arg(&out)
        .output()
        .expect("fleetgate runs");
    assert_eq!(render.status.code(), Some(0), "{}", text(&render.stderr));
    let written = std::fs::read_dir(&out)
        .expect("render created the output directory")
        .count();
    assert_eq!(written, 10, "one bundle per example account");
}

/// The checks above cannot pass vacuously: a wrong message, a wrong location or a `find`
/// that does not match exactly once each fail a fixture.
#[test]
fn the_harness_rejects_wrong_expectations_and_ambiguous_edits() {
    let fixture = |find: &str, location: &str, message: &str| Fixture {
        description: "self-test".into(),
        edits: vec![Edit {
            file: "accounts/acme-prod.yaml".into(),
            find: Some(find.into()),
            replace: Some("  regoin: us-east-1\n".into()),
            write: None,
        }],
        expect: vec![Expect {
            location: location.into(),
            message: message.into(),
        }],
        exact: false,
    };
    let right = fixture(
        "  region: us-east-1\n",
        "accounts/acme-prod.yaml:11:3",
        "unknown field `regoin`",
    );
    assert_eq!(check(&right), Ok(()));

    let wrong_message = fixture(
        "  region: us-east-1\n",
        "accounts/acme-prod.yaml:11:3",
        "no such message",
    );
    assert!(check(&wrong_message).is_err_and(|e| e.contains("without `no such message`")));

    let wrong_location = fixture(
        "  region: us-east-1\n",
        "accounts/acme-prod.yaml:11:4",
        "unknown field `regoin`",
    );
    assert!(
        check(&wrong_location)
            .is_err_and(|e| e.contains("reported nothing at accounts/acme-prod.yaml:11:4"))
    );

    let absent = fixture(
        "  region: eu-west-1\n",
        "accounts/acme-prod.yaml:11:3",
        "unknown field `regoin`",
    );
    assert!(check(&absent).is_err_and(|e| e.contains("it occurs 0 times")));

    let twice = fixture(
        "  ",
        "accounts/acme-prod.yaml:11:3",
        "unknown field `regoin`",
    );
    assert!(check(&twice).is_err_and(|e| e.contains("must occur exactly once")));

    let no_expectations = Fixture {
        expect: Vec::new(),
        ..fixture(
            "  region: us-east-1\n",
            "accounts/acme-prod.yaml:11:3",
            "unknown field `regoin`",
        )
    };
    assert!(check(&no_expectations).is_err());
}
