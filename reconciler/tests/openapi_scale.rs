//! OpenAPI specs at real size, through the real binary: a 10,000-path spec (about 21 MB) and
//! a 20 MiB spec whose bulk is component schemas, each generated here (nothing this big is
//! committed), put in a copy of `config-repo-example/` as service `inventory` pinned by
//! `hooli-early`, must validate and render. A YAML alias bomb must still be refused, with a
//! message naming the limit it breached.

#[path = "support/big_spec.rs"]
mod big_spec;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const SPEC_FILE: &str = "services/inventory/1.0.0/openapi.yaml";

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create the copy's directory");
    for entry in std::fs::read_dir(from).expect("read the example repo") {
        let entry = entry.expect("a directory entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("a file type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy a file");
        }
    }
}

/// A copy of the example with `spec` as `inventory` 1.0.0, pinned by `hooli-early`.
fn repo_with_spec(tmp: &Path, spec: &str) -> PathBuf {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config-repo-example");
    let repo = tmp.join("repo");
    copy_dir(&example, &repo);
    let spec_path = repo.join(SPEC_FILE);
    std::fs::create_dir_all(spec_path.parent().expect("a parent")).expect("create the version");
    std::fs::write(&spec_path, spec).expect("write the spec");
    let account = repo.join("accounts/hooli-early.yaml");
    let text = std::fs::read_to_string(&account).expect("read the account");
    let pin = "    customers: \"1.3.0\"\n";
    assert_eq!(text.matches(pin).count(), 1, "{text}");
    std::fs::write(
        &account,
        text.replace(pin, &format!("{pin}    inventory: \"1.0.0\"\n")),
    )
    .expect("pin the spec");
    repo
}

fn fleetgate(repo: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fleetgate"))
        .args(args)
        .arg("--repo")
        .arg(repo)
        .output()
        .expect("fleetgate runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Validates and renders the repo; returns the names of `hooli-early`'s routes.
fn validate_and_render(repo: &Path) -> Vec<String> {
    let validate = fleetgate(repo, &["validate"]);
    assert_eq!(
        validate.status.code(),
        Some(0),
        "validate\nstdout:\n{}\nstderr:\n{}",
        text(&validate.stdout),
        text(&validate.stderr)
    );
    assert!(
        text(&validate.stdout).starts_with("valid: 10 accounts, 2 overlays, 7 service versions"),
        "{}",
        text(&validate.stdout)
    );

    let out = repo.parent().expect("a parent").join("out");
    let render = fleetgate(
        repo,
        &[
            "render",
            "--account",
            "hooli-early",
            "--out",
            out.to_str().expect("a UTF-8 path"),
        ],
    );
    assert_eq!(
        render.status.code(),
        Some(0),
        "render\nstdout:\n{}\nstderr:\n{}",
        text(&render.stdout),
        text(&render.stderr)
    );
    let bundle: serde_json::Value = serde_json::from_slice(
        &std::fs::read(out.join("hooli-early.json")).expect("render wrote the bundle"),
    )
    .expect("the bundle is JSON");
    bundle["gateway"]["routes"]
        .as_array()
        .expect("routes")
        .iter()
        .map(|r| r["name"].as_str().expect("a route name").to_string())
        .collect()
}

fn inventory_routes(names: &[String]) -> usize {
    names.iter().filter(|n| n.starts_with("inventory.")).count()
}

#[test]
fn a_spec_of_10000_paths_and_21_mb_validates_and_renders() {
    let spec = big_spec::openapi_spec(10_000, 0);
    assert!(
        spec.len() > 20_000_000,
        "the spec is {} bytes: generate a bigger one",
        spec.len()
    );
    assert!(
        !spec.contains('&') && !spec.contains('*'),
        "no anchors or aliases"
    );
    let tmp = tempfile::tempdir().expect("a temporary directory");
    let repo = repo_with_spec(tmp.path(), &spec);
    drop(spec);

    let names = validate_and_render(&repo);
    // Two operations per path: every one a route.
    assert_eq!(inventory_routes(&names), 20_000);
    for name in [
        "inventory.listResource0Items",
        "inventory.deleteResource4999Item",
        "orders.listOrders",
    ] {
        assert!(names.iter().any(|n| n == name), "{name} is not rendered");
    }
}

#[test]
fn a_20_mib_spec_of_large_schemas_validates_and_renders() {
    let spec = big_spec::openapi_spec(600, 20 * 1024 * 1024);
    assert!(spec.len() >= 20 * 1024 * 1024);
    assert!(
        !spec.contains('&') && !spec.contains('*'),
        "no anchors or aliases"
    );
    let tmp = tempfile::tempdir().expect("a temporary directory");
    let repo = repo_with_spec(tmp.path(), &spec);
    drop(spec);

    let names = validate_and_render(&repo);
    assert_eq!(inventory_routes(&names), 1_200);
}

fn refused_at_the_spec(spec: &str) -> String {
    let tmp = tempfile::tempdir().expect("a temporary directory");
    let repo = repo_with_spec(tmp.path(), spec);
    let validate = fleetgate(&repo, &["validate"]);
    let stderr = text(&validate.stderr);
    assert_eq!(validate.status.code(), Some(1), "{stderr}");
    assert!(!stderr.contains("budget"), "{stderr}");
    let out = tmp.path().join("out");
    let render = fleetgate(
        &repo,
        &[
            "render",
            "--account",
            "hooli-early",
            "--out",
            out.to_str().expect("a UTF-8 path"),
        ],
    );
    assert_eq!(render.status.code(), Some(1), "{}", text(&render.stderr));
    stderr
        .lines()
        .find(|l| l.starts_with(SPEC_FILE))
        .unwrap_or_else(|| panic!("no error at {SPEC_FILE}:\n{stderr}"))
        .to_string()
}

/// The parser's limits still hold. Nine anchors, each aliasing the previous one ten times,
/// would expand to a billion scalars; one anchor of 1,000 items aliased 2,000 times, to two
/// million. Each is refused, naming the limit it breached.
#[test]
fn alias_bombs_are_refused_naming_the_limit() {
    let mut laughs = String::from(
        "openapi: 3.0.3\ninfo: {title: Bomb, version: 1.0.0}\npaths: {}\nx-lol0: &lol0 [lol]\n",
    );
    for i in 1..=9 {
        let prev = format!("*lol{}", i - 1);
        let items = [prev.as_str(); 10].join(", ");
        laughs.push_str(&format!("x-lol{i}: &lol{i} [{items}]\n"));
    }
    let line = refused_at_the_spec(&laughs);
    assert!(
        line.contains(": the document's anchors hold more than 1,000,000 parser events (aliases inside them expanded): the limit for one file"),
        "{line}"
    );

    let wide = format!(
        "openapi: 3.0.3\ninfo: {{title: Bomb, version: 1.0.0}}\npaths: {{}}\nx-big: &big [{}]\nx-copies: [{}]\n",
        vec!["lol"; 1_000].join(", "),
        vec!["*big"; 2_000].join(", ")
    );
    let line = refused_at_the_spec(&wide);
    assert!(
        line.contains(
            ": aliases expand to more than 1,000,000 parser events: the limit for one file"
        ),
        "{line}"
    );
}

/// Nesting is still bounded (the tree is converted recursively), and the message says by
/// how much.
#[test]
fn nesting_deeper_than_64_levels_is_refused_naming_the_limit() {
    let depth = 70;
    let spec = format!(
        "openapi: 3.0.3\ninfo: {{title: Deep, version: 1.0.0}}\npaths: {{}}\nx-deep: {}1{}\n",
        "[".repeat(depth),
        "]".repeat(depth)
    );
    let tmp = tempfile::tempdir().expect("a temporary directory");
    let repo = repo_with_spec(tmp.path(), &spec);
    let validate = fleetgate(&repo, &["validate"]);
    let stderr = text(&validate.stderr);
    assert_eq!(validate.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.lines().any(|l| l.starts_with(SPEC_FILE)
            && l.contains(": nested too deeply: more than 64 levels of mappings and sequences")),
        "{stderr}"
    );
}
