//! Manifests read from git at any revision without a checkout, from a local repository or a
//! remote cloned into a cache: the same bundles as reading the files from disk.

use std::collections::BTreeMap;
use std::path::Path;

use fleetgate::git::GitRepo;
use fleetgate::{ConfigSource, DirSource, Repo, render};
use fleetgate_tests::{edit, example_git_repo, example_repo_dir, git};

fn digests(src: &dyn ConfigSource) -> BTreeMap<String, String> {
    let repo = Repo::load(src);
    assert!(repo.diagnostics.is_empty(), "{:?}", repo.diagnostics);
    repo.account_names()
        .map(|n| {
            (
                n.to_string(),
                render(&repo, n).expect("renders").digest.to_string(),
            )
        })
        .collect()
}

#[test]
fn any_revision_renders_from_the_object_database_without_a_checkout() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("config");
    example_git_repo(&dir);
    edit(
        &dir,
        "accounts/stark-prod.yaml",
        "customers: \"1.3.0\"",
        "customers: \"1.2.0\"",
    );
    git(&dir, &["commit", "-q", "-am", "stark: customers 1.2.0"]);
    // Wreck the working tree: nothing below may read it.
    std::fs::remove_dir_all(dir.join("accounts")).unwrap();
    std::fs::write(dir.join("base/gateway.yaml"), "garbage: [").unwrap();

    let repo = GitRepo::open(dir.to_str().unwrap(), &tmp.path().join("cache")).unwrap();
    let (base, head) = (
        repo.resolve("HEAD~1").unwrap(),
        repo.resolve("main").unwrap(),
    );
    assert_ne!(base.id, head.id);
    let from_disk = digests(&DirSource::new(example_repo_dir()));
    assert_eq!(
        digests(&repo.snapshot(&base).unwrap()),
        from_disk,
        "HEAD~1 is the example as committed"
    );
    let at_head = digests(&repo.snapshot(&head).unwrap());
    let changed: Vec<&String> = at_head
        .iter()
        .filter(|(k, v)| from_disk[*k] != **v)
        .map(|(k, _)| k)
        .collect();
    assert_eq!(changed, ["stark-prod"]);

    let paths: Vec<String> = repo
        .changed_paths(&base, &head)
        .unwrap()
        .into_iter()
        .collect();
    assert_eq!(paths, ["accounts/stark-prod.yaml"]);
}

#[test]
fn bad_revisions_and_non_repositories_are_named_in_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("config");
    example_git_repo(&dir);
    let repo = GitRepo::open(dir.to_str().unwrap(), tmp.path()).unwrap();
    let e = repo.resolve("no-such-branch").unwrap_err().to_string();
    assert!(
        e.starts_with("unknown revision \"no-such-branch\" in "),
        "{e}"
    );
    let e = repo.resolve("HEAD~5").unwrap_err().to_string();
    assert!(e.contains("\"HEAD~5\""), "{e}");

    let not_git = tmp.path().join("plain");
    std::fs::create_dir_all(&not_git).unwrap();
    let e = GitRepo::open(not_git.to_str().unwrap(), tmp.path())
        .unwrap_err()
        .to_string();
    assert!(e.contains("plain is not a git repository"), "{e}");
}

#[test]
fn a_remote_is_cloned_into_the_cache_and_fetched_on_every_open() {
    let tmp = tempfile::tempdir().unwrap();
    let origin = tmp.path().join("origin");
    let first = example_git_repo(&origin);
    let url = format!("file://{}", origin.display());
    let cache = tmp.path().join("cache");

    let repo = GitRepo::open(&url, &cache).unwrap();
    assert_eq!(repo.resolve("origin/main").unwrap().id.to_string(), first);
    assert_eq!(
        repo.resolve("HEAD").unwrap().id.to_string(),
        first,
        "HEAD follows the remote's default branch"
    );
    drop(repo);

    edit(
        &origin,
        "accounts/acme-prod.yaml",
        "requests: 50, per: 1s, burst: 50",
        "requests: 60, per: 1s, burst: 60",
    );
    git(&origin, &["commit", "-q", "-am", "acme: 60 payments/s"]);
    let second = git(&origin, &["rev-parse", "HEAD"]).trim().to_string();
    git(&origin, &["tag", "v2"]);

    let repo = GitRepo::open(&url, &cache).unwrap();
    assert_eq!(repo.resolve("origin/main").unwrap().id.to_string(), second);
    assert_eq!(repo.resolve("v2").unwrap().id.to_string(), second);
    // A branch is named as in a clone: `main` is the remote's main.
    assert_eq!(repo.resolve("main").unwrap().id.to_string(), second);
    assert_eq!(repo.resolve("main~1").unwrap().id.to_string(), first);
    let e = repo.resolve("no-such-branch").unwrap_err().to_string();
    assert!(e.contains("no-such-branch"), "{e}");
    let caches: Vec<_> = std::fs::read_dir(&cache).unwrap().collect();
    assert_eq!(caches.len(), 1, "one cached clone per URL");
    let snapshot = repo
        .snapshot(&repo.resolve("origin/main").unwrap())
        .unwrap();
    assert!(
        String::from_utf8(snapshot.read("accounts/acme-prod.yaml").unwrap())
            .unwrap()
            .contains("requests: 60")
    );
    assert!(Path::new(&cache).exists());
}
