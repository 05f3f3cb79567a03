//! `--target aws` against real S3 and STS APIs: moto's server on a free loopback port (one
//! per test), the `fleetgate` binary as a user runs it, real git repositories, and, where a
//! test needs to count, fail or hold requests, a proxy between the SDK and moto.
//!
//! moto maps the credentials AssumeRole returns to the role's account, so every account of
//! a fleet really is a separate account here: its own buckets, no access to the others'.

// Helpers outside #[test] functions panic on purpose too: a test that cannot set up fails.
#![allow(clippy::unwrap_used)]

#[path = "../../tests/src/lib.rs"]
#[allow(dead_code)] // shared helpers: not every test file uses each
mod support;

#[path = "../../tests/src/aws.rs"]
mod aws_support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::{Command, Output};

use aws_sdk_s3::primitives::ByteStream;
use aws_support::{Faults, Moto, Proxy};
use fleetgate::config::example_fleet::{self, FleetParams};
use serde_json::Value;
use support::{code, edit, example_git_repo, git, json, show, stderr, stdout};

/// A config repo in git and the AWS endpoint its commands use.
struct Fleet {
    tmp: tempfile::TempDir,
    repo: PathBuf,
    endpoint: String,
}

impl Fleet {
    fn example(endpoint: &str) -> Fleet {
        let tmp = tempfile::tempdir().unwrap();
        let repo = tmp.path().join("config");
        example_git_repo(&repo);
        Fleet {
            tmp,
            repo,
            endpoint: endpoint.to_string(),
        }
    }

    fn generated(endpoint: &str, accounts: usize) -> Fleet {
        let tmp = tempfile::tempdir().unwrap();
        let repo = tmp.path().join("config");
        let src = example_fleet::generate(&FleetParams { accounts, seed: 11 });
        example_fleet::write_to(&src, &repo).unwrap();
        git(&repo, &["init", "-q", "-b", "main"]);
        git(&repo, &["add", "."]);
        git(&repo, &["commit", "-q", "-m", "generated fleet"]);
        Fleet {
            tmp,
            repo,
            endpoint: endpoint.to_string(),
        }
    }

    fn repo(&self) -> &str {
        self.repo.to_str().unwrap()
    }

    /// The CLI with hub credentials in the environment (as in CI), nothing read from the
    /// user's AWS files, no instance metadata, and the endpoint given by `--endpoint-url`.
    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_fleetgate"));
        c.args(args)
            .args(["--endpoint-url", &self.endpoint])
            .env_remove("AWS_PROFILE")
            .env_remove("AWS_ENDPOINT_URL")
            .env_remove("AWS_SESSION_TOKEN")
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("AWS_REGION", "us-east-1")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("AWS_CONFIG_FILE", self.tmp.path().join("no-aws-config"))
            .env(
                "AWS_SHARED_CREDENTIALS_FILE",
                self.tmp.path().join("no-aws-credentials"),
            )
            .env("FLEETGATE_CACHE_DIR", self.tmp.path().join("cache"))
            .env("FLEETGATE_REDACTION_KEY", "test-key")
            .env("FLEETGATE_APPLIED_BY", "aws-test")
            .env("NO_COLOR", "1")
            .env("CI", "true");
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("fleetgate runs")
    }

    fn bootstrap(&self, extra: &[&str]) -> Output {
        let mut args = vec!["bootstrap", "--repo", self.repo(), "--target", "aws"];
        args.extend_from_slice(extra);
        self.run(&args)
    }

    fn plan(&self) -> Output {
        self.run(&[
            "plan",
            "--repo",
            self.repo(),
            "--target",
            "aws",
            "--format",
            "json",
        ])
    }

    fn apply(&self) -> Output {
        self.apply_with(&[])
    }

    /// `apply --all-at-once` with more arguments.
    fn apply_with(&self, extra: &[&str]) -> Output {
        let mut args = vec![
            "apply",
            "--repo",
            self.repo(),
            "--target",
            "aws",
            "--all-at-once",
        ];
        args.extend_from_slice(extra);
        self.run(&args)
    }

    /// The same repo, reached through another endpoint (a proxy), with its own cache.
    fn via(&self, endpoint: &str) -> Fleet {
        Fleet {
            tmp: tempfile::tempdir().unwrap(),
            repo: self.repo.clone(),
            endpoint: endpoint.to_string(),
        }
    }

    fn drift(&self) -> Output {
        self.run(&[
            "drift",
            "--repo",
            self.repo(),
            "--ref",
            "main",
            "--target",
            "aws",
            "--format",
            "json",
        ])
    }

    /// `fleetgate render` of one account from the working tree: its digest and bytes.
    fn render(&self, account: &str) -> (String, Vec<u8>) {
        let dir = self.tmp.path().join("rendered");
        let out = Command::new(env!("CARGO_BIN_EXE_fleetgate"))
            .args([
                "render",
                "--repo",
                self.repo(),
                "--account",
                account,
                "--out",
            ])
            .arg(&dir)
            .output()
            .unwrap();
        assert_eq!(code(&out), 0, "{}", show(&out));
        let digest = stdout(&out).split_whitespace().nth(1).unwrap().to_string();
        (
            digest,
            std::fs::read(dir.join(format!("{account}.json"))).unwrap(),
        )
    }

    fn commit(&self, file: &str, find: &str, replace: &str, message: &str) {
        edit(&self.repo, file, find, replace);
        git(&self.repo, &["commit", "-q", "-am", message]);
    }
}

/// name -> field of each entry of `accounts[]`.
fn by_account(doc: &Value, field: &str) -> BTreeMap<String, String> {
    doc["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["name"].as_str().unwrap().to_string(),
                a[field].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// A plain S3 client acting as `account_id` (what an engineer with console access would
/// use), through STS like fleetgate but without it.
async fn s3_as(endpoint: &str, account_id: &str, region: &str) -> aws_sdk_s3::Client {
    let hub = aws_support::hub_config(endpoint).await;
    let creds = aws_support::assume(&hub, account_id, "admin").await;
    aws_support::s3_with(&hub, creds, region)
}

async fn get_json(s3: &aws_sdk_s3::Client, bucket: &str, key: &str) -> Value {
    let out = s3
        .get_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .unwrap();
    serde_json::from_slice(&out.body.collect().await.unwrap().into_bytes()).unwrap()
}

/// acme-prod in the example fleet.
const ACME: (&str, &str, &str) = ("acme-prod", "423456789012", "us-east-1");
/// wayne-prod in the example fleet.
const WAYNE: (&str, &str, &str) = ("wayne-prod", "023456789012", "eu-west-1");

fn bucket(account_id: &str) -> String {
    format!("fleetgate-config-{account_id}")
}

#[test]
fn example_fleet_bootstraps_plans_applies_and_converges() {
    let moto = Moto::start();
    let proxy = Proxy::start(moto.addr, Faults::default());
    let fleet = Fleet::example(&proxy.endpoint());

    // Onboarding: every account's bucket, versioned, encrypted, not public; idempotent.
    let out = fleet.bootstrap(&[]);
    assert_eq!(code(&out), 0, "{}", show(&out));
    assert!(
        stdout(&out).contains("10 created, 0 already there, 0 failed"),
        "{}",
        show(&out)
    );
    let again = fleet.bootstrap(&["--accounts", "acme-*,stage=canary"]);
    assert!(
        stdout(&again).contains("0 created, 3 already there, 0 failed"),
        "{}",
        show(&again)
    );
    runtime().block_on(async {
        let s3 = s3_as(&moto.endpoint(), ACME.1, ACME.2).await;
        let b = bucket(ACME.1);
        // (moto's GetBucketVersioning answer has a root element the Rust SDK refuses;
        // versioning is checked below by the pointer's versions instead.)
        let enc = s3.get_bucket_encryption().bucket(&b).send().await.unwrap();
        assert!(enc.server_side_encryption_configuration().is_some());
        let pab = s3
            .get_public_access_block()
            .bucket(&b)
            .send()
            .await
            .unwrap();
        let pab = pab.public_access_block_configuration().unwrap();
        assert_eq!(
            (
                pab.block_public_acls(),
                pab.ignore_public_acls(),
                pab.block_public_policy(),
                pab.restrict_public_buckets()
            ),
            (Some(true), Some(true), Some(true), Some(true))
        );
    });

    // An apply that crashed between its two writes left acme-prod's bundle stored and no
    // pointer: the next apply finds the identical object and carries on.
    let (acme_digest, acme_bundle) = fleet.render("acme-prod");
    runtime().block_on(async {
        let s3 = s3_as(&moto.endpoint(), ACME.1, ACME.2).await;
        s3.put_object()
            .bucket(bucket(ACME.1))
            .key(format!(
                "fleetgate/acme-prod/bundles/{}.json",
                acme_digest.trim_start_matches("sha256:")
            ))
            .body(ByteStream::from(acme_bundle))
            .send()
            .await
            .unwrap();
    });

    // Every account new: plan exits 2 and says create for all ten.
    let plan = fleet.plan();
    assert_eq!(code(&plan), 2, "{}", show(&plan));
    let actions = by_account(&json(&plan), "action");
    assert_eq!(actions.len(), 10);
    assert!(actions.values().all(|a| a == "create"), "{actions:?}");

    proxy.reset_counts();
    let out = fleet.apply();
    assert_eq!(code(&out), 0, "{}", show(&out));
    assert!(
        stdout(&out).contains(
            "10 created, 0 updated, 0 unchanged, 0 conflicts (0 still to apply), 0 failed"
        ),
        "{}",
        show(&out)
    );
    assert_eq!(proxy.puts(), 20, "a bundle and a pointer per account");

    // The second apply writes nothing; the plan is then clean.
    proxy.reset_counts();
    let out = fleet.apply();
    assert_eq!(code(&out), 0, "{}", show(&out));
    assert!(
        stdout(&out).contains("0 created, 0 updated, 10 unchanged"),
        "{}",
        show(&out)
    );
    assert_eq!(proxy.puts(), 0, "a second apply writes nothing");
    let plan = fleet.plan();
    assert_eq!(code(&plan), 0, "{}", show(&plan));

    // What landed in S3 is the deployed-state layout: the pointer names the commit, the session,
    // and its facts are in the object's metadata too.
    let head = git(&fleet.repo, &["rev-parse", "HEAD"]);
    runtime().block_on(async {
        let s3 = s3_as(&moto.endpoint(), ACME.1, ACME.2).await;
        let key = "fleetgate/acme-prod/current.json";
        let pointer = get_json(&s3, &bucket(ACME.1), key).await;
        assert_eq!(pointer["commit"], head.trim());
        assert_eq!(pointer["applied_by"], "aws-test");
        assert!(pointer["previous"].is_null());
        let digest = pointer["digest"].as_str().unwrap();
        let head_obj = s3
            .head_object()
            .bucket(bucket(ACME.1))
            .key(key)
            .send()
            .await
            .unwrap();
        let meta = head_obj.metadata().unwrap();
        assert_eq!(meta["fleetgate-digest"], digest);
        assert_eq!(meta["fleetgate-commit"], head.trim());
        let bundle_key = format!(
            "fleetgate/acme-prod/bundles/{}.json",
            digest.trim_start_matches("sha256:")
        );
        let bundle = get_json(&s3, &bucket(ACME.1), &bundle_key).await;
        assert_eq!(bundle["account"]["name"], "acme-prod");
    });

    // A change to one account updates that account only, with `previous` set.
    fleet.commit(
        "accounts/acme-prod.yaml",
        "tier: enterprise",
        "tier: platinum",
        "acme is platinum now",
    );
    proxy.reset_counts();
    let out = fleet.apply();
    assert!(
        stdout(&out).contains("0 created, 1 updated, 9 unchanged"),
        "{}",
        show(&out)
    );
    assert_eq!(proxy.puts(), 2);
    runtime().block_on(async {
        let s3 = s3_as(&moto.endpoint(), ACME.1, ACME.2).await;
        let key = "fleetgate/acme-prod/current.json";
        let versions = s3
            .list_object_versions()
            .bucket(bucket(ACME.1))
            .prefix(key)
            .send()
            .await
            .unwrap();
        assert_eq!(
            versions.versions().len(),
            2,
            "the bucket is versioned: both pointers are kept"
        );
        let pointer = get_json(&s3, &bucket(ACME.1), key).await;
        assert!(pointer["previous"].as_str().unwrap().starts_with("sha256:"));
    });
    drop(proxy);
    drop(moto);
}

#[test]
fn plans_and_drift_reports_run_as_a_read_only_role() {
    let moto = Moto::start();
    let fleet = Fleet::example(&moto.endpoint());
    assert_eq!(code(&fleet.bootstrap(&[])), 0);
    assert_eq!(code(&fleet.apply()), 0);
    let deployer = moto.assumed_roles();
    assert!(
        deployer
            .iter()
            .all(|r| r.ends_with(":role/fleetgate-deployer"))
            && deployer.len() >= 10,
        "{deployer:?}"
    );

    // A pull request's plan and the scheduled drift report: fleet.yaml's roleName is the
    // deployer, the jobs name the reader (by flag, or by environment as the workflows do).
    let out = fleet.run(&[
        "plan",
        "--repo",
        fleet.repo(),
        "--target",
        "aws",
        "--role-name",
        "fleetgate-reader",
    ]);
    assert_eq!(code(&out), 0, "no changes: {}", show(&out));
    let out = fleet
        .command(&["drift", "--repo", fleet.repo(), "--target", "aws"])
        .env("FLEETGATE_ROLE_NAME", "fleetgate-reader")
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "in sync: {}", show(&out));
    let since = moto.assumed_roles().split_off(deployer.len());
    assert_eq!(
        since.len(),
        20,
        "one session per account and command: {since:?}"
    );
    let mut accounts: Vec<&str> = since
        .iter()
        .map(|role| {
            assert!(role.ends_with(":role/fleetgate-reader"), "{role}");
            role.split(':').nth(4).unwrap()
        })
        .collect();
    accounts.sort_unstable();
    accounts.dedup();
    assert_eq!(
        accounts.len(),
        10,
        "every account, as the reader: {since:?}"
    );

    let out = fleet.run(&[
        "plan",
        "--repo",
        fleet.repo(),
        "--target",
        "aws",
        "--role-name",
        "arn:aws:iam::123456789012:role/fleetgate-reader",
    ]);
    assert_eq!(code(&out), 1, "{}", show(&out));
    assert!(
        stderr(&out).contains("give a role's name (no path or ARN)"),
        "{}",
        show(&out)
    );
}

#[test]
fn a_fleet_of_120_accounts_applies_once_and_then_writes_nothing() {
    let moto = Moto::start();
    let proxy = Proxy::start(moto.addr, Faults::default());
    let fleet = Fleet::generated(&proxy.endpoint(), 120);
    let out = fleet.bootstrap(&[]);
    assert_eq!(code(&out), 0, "{}", show(&out));

    proxy.reset_counts();
    let out = fleet.apply();
    assert_eq!(code(&out), 0, "{}", show(&out));
    assert!(
        stdout(&out).contains("120 created, 0 updated"),
        "{}",
        show(&out)
    );
    assert_eq!(proxy.puts(), 240);
    // CI has no terminal: progress is plain counter lines, then a summary.
    assert!(
        stderr(&out).contains("apply: 120/120 accounts, 0 failed"),
        "{}",
        show(&out)
    );

    proxy.reset_counts();
    let out = fleet.apply();
    assert_eq!(code(&out), 0, "{}", show(&out));
    assert!(
        stdout(&out).contains("0 created, 0 updated, 120 unchanged"),
        "{}",
        show(&out)
    );
    assert_eq!(proxy.puts(), 0, "the second apply writes nothing");

    let drift = fleet.drift();
    assert_eq!(code(&drift), 0, "{}", show(&drift));
    let report = json(&drift);
    assert_eq!(report["summary"]["in_sync"], 120);
}

#[test]
fn drift_names_the_cause_of_each_drifted_account() {
    let moto = Moto::start();
    let fleet = Fleet::example(&moto.endpoint());
    assert_eq!(code(&fleet.bootstrap(&[])), 0);
    assert_eq!(code(&fleet.apply()), 0);
    let drift = fleet.drift();
    assert_eq!(code(&drift), 0, "{}", show(&drift));
    assert!(
        by_account(&json(&drift), "status")
            .values()
            .all(|s| s == "in-sync")
    );

    // Someone edits wayne-prod's pointer by hand with a plain S3 client.
    runtime().block_on(async {
        let s3 = s3_as(&moto.endpoint(), WAYNE.1, WAYNE.2).await;
        let key = "fleetgate/wayne-prod/current.json";
        let mut pointer = get_json(&s3, &bucket(WAYNE.1), key).await;
        pointer["digest"] = Value::from(format!("sha256:{}", "ab".repeat(32)));
        s3.put_object()
            .bucket(bucket(WAYNE.1))
            .key(key)
            .body(ByteStream::from(serde_json::to_vec(&pointer).unwrap()))
            .send()
            .await
            .unwrap();
    });
    let drift = fleet.drift();
    assert_eq!(code(&drift), 2, "{}", show(&drift));
    let report = json(&drift);
    let status = by_account(&report, "status");
    let cause = by_account(&report, "cause");
    assert_eq!(status["wayne-prod"], "drifted");
    assert!(
        cause["wayne-prod"].starts_with("out-of-band edit"),
        "{cause:?}"
    );
    assert_eq!(
        status.values().filter(|s| *s == "in-sync").count(),
        9,
        "{status:?}"
    );
    let wayne = report["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == "wayne-prod")
        .unwrap();
    assert_eq!(wayne["account_id"], WAYNE.1);

    // Someone rewrites acme-prod's deployed bundle in place.
    runtime().block_on(async {
        let s3 = s3_as(&moto.endpoint(), ACME.1, ACME.2).await;
        let pointer = get_json(&s3, &bucket(ACME.1), "fleetgate/acme-prod/current.json").await;
        let key = format!(
            "fleetgate/acme-prod/bundles/{}.json",
            pointer["digest"]
                .as_str()
                .unwrap()
                .trim_start_matches("sha256:")
        );
        let mut bundle = get_json(&s3, &bucket(ACME.1), &key).await;
        bundle["gateway"]["routes"] = Value::Array(vec![]);
        s3.put_object()
            .bucket(bucket(ACME.1))
            .key(&key)
            .body(ByteStream::from(serde_json::to_vec(&bundle).unwrap()))
            .send()
            .await
            .unwrap();
    });

    // git moves on for globex-prod, and stark-prod leaves git while still deployed.
    fleet.commit(
        "accounts/globex-prod.yaml",
        "stage: prod",
        "stage: prod\n  # moved to the new datacenter",
        "comment only",
    );
    fleet.commit(
        "accounts/globex-prod.yaml",
        "tier: enterprise",
        "tier: platinum",
        "globex goes platinum",
    );
    git(&fleet.repo, &["rm", "-q", "accounts/stark-prod.yaml"]);
    git(&fleet.repo, &["commit", "-q", "-m", "stark leaves"]);

    let drift = fleet.drift();
    assert_eq!(code(&drift), 2, "{}", show(&drift));
    let report = json(&drift);
    let status = by_account(&report, "status");
    let cause = by_account(&report, "cause");
    assert!(cause["acme-prod"].starts_with("tampered"), "{cause:?}");
    let applied = git(&fleet.repo, &["rev-parse", "--short=7", "HEAD~3"]);
    assert_eq!(
        cause["globex-prod"],
        format!("still on {}, 3 commits behind", applied.trim()),
        "{cause:?}"
    );
    assert_eq!(status["stark-prod"], "orphaned", "{status:?}");
    assert!(cause["wayne-prod"].starts_with("out-of-band edit"));
    assert_eq!(report["summary"]["in_sync"], 6, "{}", show(&drift));

    // The markdown report is for an issue: a table of what is not in sync.
    let md = fleet.run(&[
        "drift",
        "--repo",
        fleet.repo(),
        "--target",
        "aws",
        "--format",
        "markdown",
    ]);
    assert_eq!(code(&md), 2);
    assert!(
        stdout(&md).contains("| `stark-prod` | 723456789012 | orphaned |"),
        "{}",
        show(&md)
    );

    // Someone planted other bytes under the name of the bundle umbrella-early is about to
    // get: apply refuses to point at them and leaves the account as it was.
    fleet.commit(
        "accounts/umbrella-early.yaml",
        "tier: standard",
        "tier: gold",
        "umbrella goes gold",
    );
    let (digest, _) = fleet.render("umbrella-early");
    let digest = digest.as_str();
    let (name, id, region) = ("umbrella-early", "223456789012", "eu-central-1");
    let before = runtime().block_on(async {
        let s3 = s3_as(&moto.endpoint(), id, region).await;
        s3.put_object()
            .bucket(bucket(id))
            .key(format!(
                "fleetgate/{name}/bundles/{}.json",
                digest.trim_start_matches("sha256:")
            ))
            .body(ByteStream::from_static(b"{\"not\": \"the bundle\"}"))
            .send()
            .await
            .unwrap();
        get_json(&s3, &bucket(id), &format!("fleetgate/{name}/current.json")).await
    });
    let out = fleet.apply();
    assert_eq!(code(&out), 1, "{}", show(&out));
    assert!(
        stderr(&out).contains("failed [tampered] umbrella-early: bundle"),
        "{}",
        show(&out)
    );
    let after = runtime().block_on(async {
        let s3 = s3_as(&moto.endpoint(), id, region).await;
        get_json(&s3, &bucket(id), &format!("fleetgate/{name}/current.json")).await
    });
    assert_eq!(before, after, "the pointer did not move");
}

#[test]
fn two_applies_racing_lose_nothing_and_a_rerun_converges() {
    let moto = Moto::start();
    // Pointer writes are held until both appliers send theirs, so every account's
    // compare-and-swap is contested.
    let proxy = Proxy::start(
        moto.addr,
        Faults {
            pair_pointer_writes: true,
            ..Faults::default()
        },
    );
    let fleet = Fleet::example(&proxy.endpoint());
    assert_eq!(code(&fleet.bootstrap(&[])), 0);
    // Two commits that differ for every account: racer A applies the newer, B the older.
    let old = git(&fleet.repo, &["rev-parse", "HEAD"]).trim().to_string();
    fleet.commit(
        "base/gateway.yaml",
        "maxBodyBytes: 1048576",
        "maxBodyBytes: 2097152",
        "bigger bodies everywhere",
    );
    let new = git(&fleet.repo, &["rev-parse", "HEAD"]).trim().to_string();
    let render = |rev: &str| -> BTreeMap<String, String> {
        git(&fleet.repo, &["checkout", "-q", rev]);
        let out = Command::new(env!("CARGO_BIN_EXE_fleetgate"))
            .args(["render", "--repo", fleet.repo()])
            .output()
            .unwrap();
        git(&fleet.repo, &["checkout", "-q", "main"]);
        stdout(&out)
            .lines()
            .map(|l| {
                let (a, d) = l.split_once(' ').unwrap();
                (a.to_string(), d.to_string())
            })
            .collect()
    };
    let (old_digests, new_digests) = (render(&old), render(&new));
    assert!(old_digests.iter().all(|(a, d)| &new_digests[a] != d));

    let spawn = |who: &str, head: &str| {
        fleet
            .command(&[
                "apply",
                "--repo",
                fleet.repo(),
                "--head",
                head,
                "--target",
                "aws",
                "--all-at-once",
                // The proxy holds each pointer write up to 20 s for its pair: an attempt
                // must outlast that, or its retry would meet its own write.
                "--request-timeout",
                "60s",
            ])
            .env("FLEETGATE_APPLIED_BY", who)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let a = spawn("racer-a", &new);
    let b = spawn("racer-b", &old);
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());

    // Per account, exactly one of the two lost its compare-and-swap and said so.
    let conflicts = |o: &Output| -> BTreeSet<String> {
        stderr(o)
            .lines()
            .filter_map(|l| l.strip_prefix("conflict "))
            .map(|l| l.split(':').next().unwrap().to_string())
            .collect()
    };
    let (ca, cb) = (conflicts(&a), conflicts(&b));
    assert!(ca.is_disjoint(&cb), "{}\n{}", show(&a), show(&b));
    assert_eq!(
        ca.len() + cb.len(),
        10,
        "every account contested once\n{}\n{}",
        show(&a),
        show(&b)
    );

    // Nothing lost: each pointer is exactly its winner's, naming that racer's bundle.
    let examples = [
        ("acme-prod", "423456789012", "us-east-1"),
        ("wayne-prod", "023456789012", "eu-west-1"),
        ("globex-canary", "310987654321", "us-east-1"),
    ];
    runtime().block_on(async {
        for (name, id, region) in examples {
            let s3 = s3_as(&moto.endpoint(), id, region).await;
            let p = get_json(&s3, &bucket(id), &format!("fleetgate/{name}/current.json")).await;
            let (winner, digests) = if ca.contains(name) {
                ("racer-b", &old_digests)
            } else {
                ("racer-a", &new_digests)
            };
            assert_eq!(p["applied_by"], winner, "{name}: {p}");
            assert_eq!(p["digest"].as_str().unwrap(), digests[name], "{name}");
        }
    });

    // A rerun at the head converges, and the one after it writes nothing.
    let proxy_free = Fleet {
        tmp: tempfile::tempdir().unwrap(),
        repo: fleet.repo.clone(),
        endpoint: moto.endpoint(),
    };
    let out = proxy_free.apply();
    assert_eq!(code(&out), 0, "{}", show(&out));
    assert!(
        stdout(&out).contains(&format!("{} updated", ca.len())),
        "accounts racer B won move to the head\n{}",
        show(&out)
    );
    let out = proxy_free.apply();
    assert!(
        stdout(&out).contains("0 created, 0 updated, 10 unchanged"),
        "{}",
        show(&out)
    );
}

#[test]
fn accounts_denied_or_without_a_bucket_are_reported_while_the_rest_converge() {
    let moto = Moto::start();
    let fleet = Fleet::example(&moto.endpoint());
    // Onboard all but acme-prod (no bucket) and wayne-prod, whose bucket name another
    // account took first.
    let out = fleet.bootstrap(&[
        "--accounts",
        "globex-*,hooli-*,initech-*,internal-*,stark-*,umbrella-*",
    ]);
    assert_eq!(code(&out), 0, "{}", show(&out));
    runtime().block_on(async {
        let other = s3_as(&moto.endpoint(), "999999999999", WAYNE.2).await;
        other
            .create_bucket()
            .bucket(bucket(WAYNE.1))
            .create_bucket_configuration(
                aws_sdk_s3::types::CreateBucketConfiguration::builder()
                    .location_constraint(aws_sdk_s3::types::BucketLocationConstraint::EuWest1)
                    .build(),
            )
            .send()
            .await
            .unwrap();
    });

    let plan = fleet.plan();
    assert_eq!(
        code(&plan),
        1,
        "unreachable accounts make the plan fail\n{}",
        show(&plan)
    );
    let doc = json(&plan);
    let action = by_account(&doc, "action");
    let error = by_account(&doc, "error");
    assert_eq!(action["acme-prod"], "unreachable");
    assert_eq!(error["acme-prod"], "bucket-missing");
    assert_eq!(error["wayne-prod"], "access-denied");
    assert_eq!(action.values().filter(|a| *a == "create").count(), 8);

    let out = fleet.apply();
    assert_eq!(code(&out), 1, "{}", show(&out));
    assert!(
        stdout(&out).contains("8 created"),
        "the other accounts converge\n{}",
        show(&out)
    );
    let err = stderr(&out);
    assert!(
        err.contains("skipped acme-prod: acme-prod: bucket missing: GetObject s3://fleetgate-config-423456789012/"),
        "{}",
        show(&out)
    );
    assert!(
        err.contains("skipped wayne-prod: wayne-prod: access denied:"),
        "{}",
        show(&out)
    );

    // Bootstrapping the missing one fixes it; the taken name stays a clear failure.
    let out = fleet.bootstrap(&["--accounts", "acme-prod,wayne-prod"]);
    assert_eq!(code(&out), 1, "{}", show(&out));
    assert!(stdout(&out).contains("created acme-prod"), "{}", show(&out));
    assert!(
        stderr(&out).contains("failed [access denied] wayne-prod"),
        "{}",
        show(&out)
    );
    let out = fleet.apply();
    assert!(stdout(&out).contains("1 created"), "{}", show(&out));
    let drift = fleet.drift();
    assert_eq!(code(&drift), 1, "{}", show(&drift));
    let report = json(&drift);
    assert_eq!(report["summary"]["in_sync"], 9);
    assert_eq!(by_account(&report, "status")["wayne-prod"], "unreachable");
    assert_eq!(by_account(&report, "error")["wayne-prod"], "access-denied");
    moto.reset();
}

#[test]
fn throttling_and_server_errors_are_retried_and_the_fleet_converges() {
    let moto = Moto::start();
    // One SDK call in five fails its first attempt: 503 SlowDown or 500 InternalError.
    let proxy = Proxy::start(
        moto.addr,
        Faults {
            every: 5,
            ..Faults::default()
        },
    );
    let fleet = Fleet::generated(&proxy.endpoint(), 40);
    let out = fleet.bootstrap(&[]);
    assert_eq!(code(&out), 0, "{}", show(&out));
    let out = fleet.apply();
    assert_eq!(code(&out), 0, "{}", show(&out));
    assert!(stdout(&out).contains("40 created"), "{}", show(&out));
    let out = fleet.apply();
    assert!(
        stdout(&out).contains("0 created, 0 updated, 40 unchanged"),
        "{}",
        show(&out)
    );
    let drift = fleet.drift();
    assert_eq!(code(&drift), 0, "{}", show(&drift));
    assert!(
        proxy.injected() > 50,
        "faults were injected: {}",
        proxy.injected()
    );
}

#[test]
fn accounts_still_throttled_or_silent_are_classified_and_do_not_hold_up_the_rest() {
    let moto = Moto::start();
    let fleet = Fleet::example(&moto.endpoint());
    assert_eq!(code(&fleet.bootstrap(&[])), 0);
    // acme-prod's bucket always answers SlowDown; wayne-prod's never answers.
    let proxy = Proxy::start(
        moto.addr,
        Faults {
            throttle_always: Some(bucket(ACME.1)),
            stall: Some(bucket(WAYNE.1)),
            ..Faults::default()
        },
    );
    let through_proxy = fleet.via(&proxy.endpoint());
    let out = through_proxy.run(&[
        "apply",
        "--repo",
        fleet.repo(),
        "--target",
        "aws",
        "--account-timeout",
        "4s",
        "--all-at-once",
    ]);
    assert_eq!(code(&out), 1, "{}", show(&out));
    assert!(stdout(&out).contains("8 created"), "{}", show(&out));
    let err = stderr(&out);
    assert!(
        err.contains("skipped acme-prod: acme-prod: throttled after retries: GetObject"),
        "{}",
        show(&out)
    );
    assert!(
        err.contains("skipped wayne-prod: wayne-prod: timeout: no answer within 4s"),
        "{}",
        show(&out)
    );
    assert!(
        proxy.injected() >= 3,
        "the SDK retried the throttled call: {}",
        proxy.injected()
    );
}

/// Each account's digest at the repo's head, and its id and region: from `fleetgate render`.
fn rendered_accounts(fleet: &Fleet) -> BTreeMap<String, (String, String, String)> {
    let dir = fleet.tmp.path().join("rendered-all");
    let out = Command::new(env!("CARGO_BIN_EXE_fleetgate"))
        .args(["render", "--repo", fleet.repo(), "--all", "--out"])
        .arg(&dir)
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", show(&out));
    stdout(&out)
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(name, digest)| {
            let bundle: Value =
                serde_json::from_slice(&std::fs::read(dir.join(format!("{name}.json"))).unwrap())
                    .unwrap();
            let field = |k: &str| bundle["account"][k].as_str().unwrap().to_string();
            (
                name.to_string(),
                (digest.to_string(), field("id"), field("region")),
            )
        })
        .collect()
}

/// Every account's deployed digest as S3 says (read as each account, not through
/// fleetgate); `None`: no pointer.
fn deployed_digests(
    endpoint: &str,
    accounts: &BTreeMap<String, (String, String, String)>,
) -> BTreeMap<String, Option<String>> {
    runtime().block_on(async {
        let mut out = BTreeMap::new();
        for (name, (_, id, region)) in accounts {
            let s3 = s3_as(endpoint, id, region).await;
            let got = s3
                .get_object()
                .bucket(bucket(id))
                .key(format!("fleetgate/{name}/current.json"))
                .send()
                .await;
            let digest = match got {
                Ok(o) => {
                    let p: Value =
                        serde_json::from_slice(&o.body.collect().await.unwrap().into_bytes())
                            .unwrap();
                    p["digest"].as_str().map(str::to_string)
                }
                Err(_) => None,
            };
            out.insert(name.clone(), digest);
        }
        out
    })
}

/// The numbers of apply's summary line, by what they count.
fn summary_counts(stdout: &str) -> BTreeMap<String, usize> {
    let line = stdout
        .lines()
        .find(|l| l.starts_with("applied "))
        .unwrap_or_else(|| panic!("no summary in\n{stdout}"));
    let (_, counts) = line.split_once(": ").unwrap();
    counts
        .split(", ")
        .filter_map(|part| {
            let (n, what) = part.split_once(' ')?;
            let what = what.split(" (").next()?.to_string();
            Some((what, n.parse().ok()?))
        })
        .collect()
}

/// A faulty network between fleetgate and AWS (a seeded 3% of requests hung, reset,
/// throttled, or acted on with the answer lost): every account of a 300-account apply ends
/// in exactly one reported outcome, the summary adds up to the fleet, every reported outcome
/// is what S3 holds (a lost answer to its own write is its success, never "another apply"),
/// the retries and throttles are counted, and a rerun without faults converges.
#[test]
fn apply_under_network_faults_reports_every_account_as_s3_has_it() {
    let moto = Moto::start();
    let direct = Fleet::generated(&moto.endpoint(), 300);
    let out = direct.bootstrap(&[]);
    assert_eq!(code(&out), 0, "{}", show(&out));
    let accounts = rendered_accounts(&direct);
    assert_eq!(accounts.len(), 300);
    let proxy = Proxy::start(
        moto.addr,
        Faults {
            random: Some(aws_support::RandomFaults {
                seed: 7,
                per_mille: 30,
            }),
            ..Faults::default()
        },
    );
    let faulty = direct.via(&proxy.endpoint());
    let out = faulty.apply_with(&["--request-timeout", "1s", "--account-timeout", "60s"]);
    assert!(matches!(code(&out), 0 | 1), "{}", show(&out));
    for kind in [
        aws_support::Fault::Hang,
        aws_support::Fault::Reset,
        aws_support::Fault::Throttle,
        aws_support::Fault::LoseAnswer,
    ] {
        assert!(proxy.faults(kind) > 0, "{kind:?} was injected");
    }
    let (text, err) = (stdout(&out), stderr(&out));
    // One outcome per account: the summary adds up to the fleet.
    let counts = summary_counts(&text);
    let total: usize = [
        "created",
        "updated",
        "unchanged",
        "conflicts",
        "failed",
        "rolled back",
        "skipped",
        "held",
        "unreachable",
    ]
    .iter()
    .map(|k| counts.get(*k).copied().unwrap_or_default())
    .sum();
    assert_eq!(total, 300, "{counts:?}\n{}", show(&out));
    assert_eq!(counts["conflicts"], 0, "no other writer: {}", show(&out));
    // Every line about an account that did not make it says why.
    for line in err
        .lines()
        .filter(|l| l.starts_with("skipped ") || l.starts_with("failed "))
    {
        assert!(line.contains(": "), "no reason: {line}");
    }
    // What was reported is what S3 holds.
    let created: BTreeSet<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("created "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect();
    assert_eq!(created.len(), counts["created"]);
    let deployed = deployed_digests(&moto.endpoint(), &accounts);
    for (name, (digest, _, _)) in &accounts {
        let at_head = deployed[name].as_deref() == Some(digest.as_str());
        assert_eq!(
            at_head,
            created.contains(name),
            "{name}: reported {}, S3 has {:?}\n{}",
            if created.contains(name) {
                "created"
            } else {
                "not created"
            },
            deployed[name],
            show(&out)
        );
    }
    // The SDK's retries are counted, not silent.
    let requests = err
        .lines()
        .find(|l| l.starts_with("requests: "))
        .unwrap_or_else(|| panic!("no request counts: {}", show(&out)));
    let numbers: Vec<usize> = requests
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse().ok())
        .collect();
    assert!(
        numbers.len() == 4 && numbers[1] > 0 && numbers[2] > 0 && numbers[3] > 0,
        "{requests}"
    );

    // Without faults, a rerun converges.
    let out = direct.apply();
    assert_eq!(code(&out), 0, "{}", show(&out));
    let deployed = deployed_digests(&moto.endpoint(), &accounts);
    for (name, (digest, _, _)) in &accounts {
        assert_eq!(deployed[name].as_deref(), Some(digest.as_str()), "{name}");
    }
}

/// The answer to fleetgate's own pointer write is lost, and the SDK's retry finds the write
/// already there (412): that is this run's success, not "another apply deployed it".
#[test]
fn a_lost_answer_to_its_own_pointer_write_is_a_success_not_a_conflict() {
    let moto = Moto::start();
    let fleet = Fleet::example(&moto.endpoint());
    assert_eq!(code(&fleet.bootstrap(&[])), 0);
    let proxy = Proxy::start(
        moto.addr,
        Faults {
            lose_pointer_answers: true,
            ..Faults::default()
        },
    );
    let through_proxy = fleet.via(&proxy.endpoint());
    let out = through_proxy.apply_with(&["--request-timeout", "1s", "--account-timeout", "30s"]);
    assert_eq!(code(&out), 0, "{}", show(&out));
    assert!(
        stdout(&out).contains("10 created, 0 updated, 0 unchanged, 0 conflicts"),
        "{}",
        show(&out)
    );
    assert!(!stderr(&out).contains("conflict"), "{}", show(&out));
    let plan = json(&fleet.plan());
    assert_eq!(plan["summary"]["noChange"], 10, "{plan:#}");
}

/// An account whose write never gets an answer runs out of its --account-timeout mid-apply:
/// it is failed with that reason, counted in the summary, and apply exits 1; the others go on.
#[test]
fn an_account_whose_write_hangs_is_failed_with_its_reason() {
    let moto = Moto::start();
    let fleet = Fleet::example(&moto.endpoint());
    assert_eq!(code(&fleet.bootstrap(&[])), 0);
    let proxy = Proxy::start(
        moto.addr,
        Faults {
            stall_writes: Some(format!("{}/fleetgate/acme-prod/", bucket(ACME.1))),
            ..Faults::default()
        },
    );
    let through_proxy = fleet.via(&proxy.endpoint());
    let out = through_proxy.apply_with(&["--request-timeout", "30s", "--account-timeout", "3s"]);
    assert_eq!(code(&out), 1, "{}", show(&out));
    let counts = summary_counts(&stdout(&out));
    assert_eq!(
        (counts["created"], counts["failed"]),
        (9, 1),
        "{}",
        show(&out)
    );
    assert!(
        stderr(&out).contains("failed [timeout] acme-prod: timeout: no answer within 3s"),
        "{}",
        show(&out)
    );
}
