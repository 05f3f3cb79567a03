//! The rollout engine and `fleetgate watch`, end to end: moto's server for S3 and STS (every
//! account its own moto account), real `fleetgate-gateway` processes, one per account,
//! polling their account's S3 prefix with that account's credentials and writing status
//! reports, a real backend behind them (`/ok*` answers 200, `/bad` 500), traffic through
//! every gateway all along, a real git repository, and the `fleetgate` binary.
//!
//! The gateway binary is the workspace's own (`cargo test --workspace` builds it next to
//! `fleetgate`; run alone, this file builds it when missing).

// Helpers outside #[test] functions panic on purpose too: a test that cannot set up fails.
#![allow(clippy::unwrap_used)]

#[path = "../../tests/src/lib.rs"]
#[allow(dead_code)] // shared helpers: not every test file uses each
mod support;

#[path = "../../tests/src/aws.rs"]
#[allow(dead_code)]
mod aws_support;

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use aws_support::{Moto, assume, hub_config, s3_with};
use serde_json::Value;
use support::{code, git, show, stdout};

#[path = "support/rig.rs"]
#[allow(dead_code)] // shared with other test files: not every one uses each part
mod rig;

use rig::*;

/// (1) a good change rolls through every wave, visible in /status and /metrics while it
/// runs; (5) a webhook with a bad signature is refused and triggers nothing, a signed one
/// triggers the rollout; (2) a change that makes the backend answer 500 breaches the canary
/// wave: the canary accounts are rolled back, early and prod never change, and the commit
/// is not retried.
#[test]
fn waves_roll_a_good_change_and_roll_back_a_sick_canary() {
    let rig = Rig::start();
    let c0 = rig.head();
    // Polling once an hour: after the first pass, only webhooks wake the daemon.
    let d = rig.daemon("solo", "1h", &[]);
    let status = rig.wait_applied(&d, &c0);
    let d0 = rig.rendered();
    assert_eq!(rig.digests(), d0);
    for (wave, accounts) in rollout_states(&status) {
        for (account, state) in accounts {
            assert_eq!(state, "healthy", "{wave}/{account}");
        }
    }
    assert_eq!(status["lease"]["held_by_me"], true);

    // (5) A new commit, announced with a bad signature, then unsigned: refused, nothing runs.
    let c1 = rig.commit("upstreamPath: /ok", "upstreamPath: /ok2", "hello v2");
    let before = rig.status(&d).unwrap();
    let (code, _) = rig.push_webhook(&d, &c1, Sig::Wrong);
    assert_eq!(code, 401);
    let (code, _) = rig.push_webhook(&d, &c1, Sig::Missing);
    assert_eq!(code, 401);
    std::thread::sleep(Duration::from_secs(2));
    let after = rig.status(&d).unwrap();
    assert_eq!(
        after["head"]["commit"], c0,
        "a refused webhook triggers nothing"
    );
    assert_eq!(after["last_reconcile_at"], before["last_reconcile_at"]);
    assert_eq!(rig.digests(), d0);
    let log = std::fs::read_to_string(&d.log).unwrap();
    assert!(log.contains("webhook refused"), "{log}");
    assert!(!log.contains(SECRET), "the secret never reaches the log");
    assert!(
        rig.metrics(&d)
            .contains("fleetgate_webhooks_total{result=\"bad_signature\"} 2")
    );

    // (1) Signed: the daemon rolls c1 out wave by wave; /status shows it while it runs.
    let (code, _) = rig.push_webhook(&d, &c1, Sig::Good);
    assert_eq!(code, 202);
    let during = rig.wait(&d, "the rollout in flight", Duration::from_secs(120), |s| {
        s["rollout"]["commit"] == c1.as_str() && s["rollout"]["outcome"] == "in-progress"
    });
    assert_eq!(
        rollout_states(&during).keys().cloned().collect::<Vec<_>>(),
        ["canary", "early", "prod"]
    );
    let metrics = rig.metrics(&d);
    assert!(metrics.contains("fleetgate_accounts{state="), "{metrics}");
    let status = rig.wait_applied(&d, &c1);
    let d1 = rig.rendered();
    assert_eq!(rig.digests(), d1);
    let waves = status["rollout"]["waves"].as_array().unwrap();
    assert!(
        waves.iter().all(|w| w["state"] == "succeeded"),
        "{status:#}"
    );
    let metrics = rig.metrics(&d);
    assert_eq!(
        metric(&metrics, "fleetgate_rollouts_total{result=\"succeeded\"}"),
        Some(2.0),
        "{metrics}"
    );
    assert_eq!(metric(&metrics, "fleetgate_lease_held"), Some(1.0));

    // (2) A route to a backend path that answers 500.
    let untouched: BTreeMap<String, Value> = rig
        .pointers()
        .into_iter()
        .filter(|(n, _)| n == "e1" || n == "p1")
        .collect();
    let c2 = rig.commit("upstreamPath: /ok2", "upstreamPath: /bad", "hello broken");
    assert_eq!(rig.push_webhook(&d, &c2, Sig::Good).0, 202);
    let status = rig.wait(
        &d,
        "the canary rolled back",
        Duration::from_secs(180),
        |s| s["rejected"]["commit"] == c2.as_str(),
    );
    assert_eq!(status["rollout"]["outcome"], "rolled-back", "{status:#}");
    let states = rollout_states(&status);
    assert_eq!(states["canary"]["c1"], "rolled-back", "{status:#}");
    assert_eq!(states["canary"]["c2"], "rolled-back", "{status:#}");
    assert_eq!(states["early"]["e1"], "pending");
    assert_eq!(states["prod"]["p1"], "pending");
    let reason = status["rollout"]["reason"].as_str().unwrap();
    assert!(reason.contains("5xx"), "{reason}");
    assert_eq!(rig.digests(), d1, "canaries back on the last good bundles");
    let now: BTreeMap<String, Value> = rig
        .pointers()
        .into_iter()
        .filter(|(n, _)| n == "e1" || n == "p1")
        .collect();
    assert_eq!(now, untouched, "early and prod were never written");
    assert_eq!(
        metric(&rig.metrics(&d), "fleetgate_account_rollbacks_total"),
        Some(2.0)
    );

    // Not retried: another wake-up leaves the fleet alone and says why.
    assert_eq!(rig.push_webhook(&d, &c2, Sig::Good).0, 202);
    let status = rig.wait(&d, "the rejection reported", Duration::from_secs(60), |s| {
        s["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("not retried"))
    });
    assert_eq!(status["rollout"]["outcome"], "rolled-back");
    assert_eq!(rig.digests(), d1);
}

/// (3) a revert commit rolls the fleet back through the daemon; (4) `rollback --to` on the
/// whole fleet while the daemon runs: the daemon holds (shows it, does not roll forward)
/// until the revert lands, then goes on with newer commits.
#[test]
fn revert_and_rollback_to_with_holds_the_daemon_respects() {
    let rig = Rig::start();
    let c0 = rig.head();
    let d = rig.daemon("solo", "500ms", &[]);
    rig.wait_applied(&d, &c0);
    let d0 = rig.rendered();

    let c1 = rig.commit("upstreamPath: /ok", "upstreamPath: /ok1", "hello v1");
    rig.wait_applied(&d, &c1);
    assert_ne!(rig.digests(), d0);

    // (3) Revert: the daemon rolls every account back to c0's bundles.
    let c2 = rig.revert(&c1);
    rig.wait_applied(&d, &c2);
    assert_eq!(rig.digests(), d0, "the revert rolled the fleet back");

    let c3 = rig.commit("upstreamPath: /ok", "upstreamPath: /ok3", "hello v3");
    rig.wait_applied(&d, &c3);
    let d3 = rig.rendered();
    assert_eq!(rig.digests(), d3);

    // (4) Break-glass while the daemon runs: the whole fleet back to c2, at once.
    let out = rig.fleetgate(&[
        "rollback",
        "--repo",
        rig.repo_str(),
        "--branch",
        "main",
        "--to",
        &c2,
        "--target",
        "aws",
        "--reason",
        "v3 breaks checkout",
    ]);
    assert_eq!(code(&out), 0, "{}", show(&out));
    assert!(stdout(&out).contains("rolled back to"), "{}", show(&out));
    assert_eq!(rig.digests(), d0);
    for (name, p) in rig.pointers() {
        assert_eq!(p["hold"]["reason"], "v3 breaks checkout", "{name}: {p:#}");
        assert_eq!(p["hold"]["branch_head"], c3.as_str());
    }
    // The daemon sees the holds and leaves the accounts alone, pass after pass.
    let first = rig.wait(&d, "the holds shown", Duration::from_secs(30), |s| {
        s["held"].as_array().is_some_and(|h| h.len() == 4)
    });
    rig.wait(&d, "two more passes", Duration::from_secs(30), |s| {
        s["last_reconcile_at"] != first["last_reconcile_at"]
    });
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(rig.digests(), d0, "held accounts are not rolled forward");
    let metrics = rig.metrics(&d);
    assert_eq!(
        metric(&metrics, "fleetgate_accounts{state=\"held\"}"),
        Some(4.0),
        "{metrics}"
    );

    // The revert lands: the holds end, and the fleet follows the branch again.
    let c4 = rig.revert(&c3);
    let status = rig.wait_applied(&d, &c4);
    assert_eq!(status["held"].as_array().unwrap().len(), 0);
    assert_eq!(rig.digests(), d0);
    for (name, p) in rig.pointers() {
        assert!(
            p.get("hold").is_none_or(Value::is_null),
            "{name}: hold lifted: {p:#}"
        );
    }
    let c5 = rig.commit("upstreamPath: /ok", "upstreamPath: /ok5", "hello v5, fixed");
    rig.wait_applied(&d, &c5);
    assert_eq!(
        rig.digests(),
        rig.rendered(),
        "rolled forward once the hold ended"
    );

    // The history of an account shows all of it.
    let out = rig.fleetgate(&[
        "history",
        "--repo",
        rig.repo_str(),
        "--target",
        "aws",
        "--account",
        "c1",
    ]);
    assert_eq!(code(&out), 0, "{}", show(&out));
    assert!(stdout(&out).contains("hold by operator"), "{}", show(&out));
}

/// (8) A newer commit preempts a rollout: a bad change bakes in the canary (a 10-minute
/// bake), its revert is pushed, and the daemon stops the bake at once: the canaries are back
/// on their previous bundles within seconds (not after the bake), early and prod are never
/// written, and `/status` says what was preempted, by which commit, and what it had moved.
#[test]
fn a_revert_preempts_a_bad_change_baking_in_the_canary() {
    let fleet = FLEET.replacen("bakeTime: 2s", "bakeTime: 10m", 1);
    let rig = Rig::start_with(&fleet);
    let c0 = rig.head();
    // The first deployment, without gates: a 10-minute canary bake is not what is tested.
    let out = rig.fleetgate(&[
        "apply",
        "--repo",
        rig.repo_str(),
        "--target",
        "aws",
        "--skip-health-gates",
    ]);
    assert_eq!(code(&out), 0, "{}", show(&out));
    let d0 = rig.rendered();
    assert_eq!(rig.digests(), d0);
    // Polling once an hour: only webhooks wake the daemon.
    let d = rig.daemon("solo", "1h", &[]);
    rig.wait_applied(&d, &c0);
    let later_waves = |rig: &Rig| -> BTreeMap<String, Value> {
        rig.pointers()
            .into_iter()
            .filter(|(n, _)| n == "e1" || n == "p1")
            .collect()
    };
    let untouched = later_waves(&rig);

    // The bad change: it passes the gate (the backend answers 200), and bakes in the canary.
    let c1 = rig.commit(
        "upstreamPath: /ok",
        "upstreamPath: /ok-v2",
        "hello v2 (the bad one)",
    );
    let d1 = rig.rendered();
    assert_eq!(rig.push_webhook(&d, &c1, Sig::Good).0, 202);
    rig.wait(&d, "the canary baking c1", Duration::from_secs(120), |s| {
        s["rollout"]["commit"] == c1.as_str() && s["rollout"]["waves"][0]["state"] == "baking"
    });
    let canaries = |digests: &BTreeMap<String, String>| -> Vec<String> {
        ["c1", "c2"].iter().map(|n| digests[*n].clone()).collect()
    };
    assert_eq!(canaries(&rig.digests()), canaries(&d1));
    assert_ne!(canaries(&d1), canaries(&d0));

    // Its revert: the bake is cut short and the canaries go back.
    let c2 = rig.revert(&c1);
    let pushed = Instant::now();
    assert_eq!(rig.push_webhook(&d, &c2, Sig::Good).0, 202);
    let deadline = pushed + Duration::from_secs(90);
    while canaries(&rig.digests()) != canaries(&d0) {
        assert!(
            Instant::now() < deadline,
            "the canaries are still on c1 {:?} after the revert: the bad rollout was not preempted\n{:#}\n{}",
            pushed.elapsed(),
            rig.status(&d).unwrap_or_default(),
            std::fs::read_to_string(&d.log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!(
        "the canaries were back {:?} after the revert's webhook",
        pushed.elapsed()
    );
    let status = rig.wait(
        &d,
        "the preemption reported",
        Duration::from_secs(30),
        |s| s["preempted"]["commit"] == c1.as_str() && s["rollout"]["commit"] == c2.as_str(),
    );
    assert_eq!(status["preempted"]["by"], c2.as_str(), "{status:#}");
    assert_eq!(
        status["preempted"]["moved"],
        serde_json::json!(["c1", "c2"]),
        "{status:#}"
    );
    assert_eq!(
        later_waves(&rig),
        untouched,
        "early and prod were never written"
    );
    assert!(
        status["rejected"].is_null(),
        "a preempted commit is superseded, not rejected: {status:#}"
    );
    let metrics = rig.metrics(&d);
    assert_eq!(
        metric(&metrics, "fleetgate_rollouts_total{result=\"preempted\"}"),
        Some(1.0),
        "{metrics}"
    );
    let log = std::fs::read_to_string(&d.log).unwrap();
    assert!(log.contains("rollout preempted"), "{log}");
}

/// (6) Two daemons: only the lease holder rolls out; when it dies (killed, no goodbye), the
/// other takes the lease after it expires and converges the fleet.
#[test]
fn only_the_lease_holder_rolls_out_and_a_standby_takes_over() {
    let rig = Rig::start();
    let c0 = rig.head();
    let mut a = rig.daemon("alpha", "500ms", &[]);
    rig.wait_applied(&a, &c0);
    let b = rig.daemon("bravo", "500ms", &[]);
    let status = rig.wait(
        &b,
        "bravo sees alpha's lease",
        Duration::from_secs(30),
        |s| s["lease"]["holder"] == "alpha",
    );
    assert_eq!(status["lease"]["held_by_me"], false);
    assert_eq!(
        metric(&rig.metrics(&b), "fleetgate_lease_holder{holder=\"alpha\"}"),
        Some(1.0)
    );

    let c1 = rig.commit("upstreamPath: /ok", "upstreamPath: /ok1", "hello v1");
    rig.wait_applied(&a, &c1);
    for (name, p) in rig.pointers() {
        assert!(
            p["applied_by"].as_str().unwrap().contains("alpha"),
            "{name}: {p:#}"
        );
    }
    let status = rig.status(&b).unwrap();
    assert!(
        status["rollout"].is_null(),
        "bravo never rolled out: {status:#}"
    );
    assert!(status["last_applied"].is_null());

    // alpha dies without releasing its lease.
    a.proc.0.kill().unwrap();
    a.proc.0.wait().unwrap();
    let c2 = rig.commit("upstreamPath: /ok1", "upstreamPath: /ok2", "hello v2");
    let status = rig.wait_applied(&b, &c2);
    assert_eq!(status["lease"]["holder"], "bravo");
    assert_eq!(rig.digests(), rig.rendered());
    for (name, p) in rig.pointers() {
        assert!(
            p["applied_by"].as_str().unwrap().contains("bravo"),
            "{name}: {p:#}"
        );
    }
}

/// (7) `fleetgate apply` killed at random points, 20 times, each time with new work: no
/// pointer ever names a bundle that is not stored, and the next run converges.
#[test]
fn an_apply_killed_at_random_points_never_breaks_a_pointer() {
    let moto = Moto::start();
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("config");
    let src = fleetgate::config::example_fleet::generate(
        &fleetgate::config::example_fleet::FleetParams {
            accounts: 24,
            seed: 7,
        },
    );
    fleetgate::config::example_fleet::write_to(&src, &repo).unwrap();
    git(&repo, &["init", "-q", "-b", "main"]);
    git(&repo, &["add", "."]);
    git(&repo, &["commit", "-q", "-m", "generated fleet"]);
    let run = |args: &[&str]| -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_fleetgate"));
        c.args(args)
            .args(["--repo", repo.to_str().unwrap(), "--target", "aws"])
            .args(["--endpoint-url", &moto.endpoint()])
            .env_remove("AWS_PROFILE")
            .env_remove("AWS_SESSION_TOKEN")
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("AWS_REGION", "us-east-1")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("AWS_CONFIG_FILE", tmp.path().join("none"))
            .env("AWS_SHARED_CREDENTIALS_FILE", tmp.path().join("none"))
            .env("FLEETGATE_CACHE_DIR", tmp.path().join("cache"))
            .env("CI", "true");
        c
    };
    let out = run(&["bootstrap"]).output().unwrap();
    assert_eq!(code(&out), 0, "{}", show(&out));
    let config = fleetgate::Repo::load(&fleetgate::DirSource::new(&repo));
    let accounts: Vec<fleetgate::target::AccountRef> = config
        .account_names()
        .filter_map(|n| fleetgate::target::AccountRef::from_repo(&config, n))
        .collect();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let clients: Vec<aws_sdk_s3::Client> = rt.block_on(async {
        let hub = hub_config(&moto.endpoint()).await;
        let mut out = Vec::new();
        for a in &accounts {
            out.push(s3_with(
                &hub,
                assume(&hub, &a.id, "auditor").await,
                &a.region,
            ));
        }
        out
    });
    // Every pointer names a stored bundle whose bytes hash to it.
    let check = |round: usize| {
        rt.block_on(async {
            for (a, s3) in accounts.iter().zip(&clients) {
                let key = format!("{}/current.json", a.prefix);
                let Some(p) = get_json(s3, &a.bucket, &key).await else {
                    continue;
                };
                let digest = p["digest"].as_str().unwrap();
                let hex = digest.trim_start_matches("sha256:");
                let bundle = s3
                    .get_object()
                    .bucket(&a.bucket)
                    .key(format!("{}/bundles/{hex}.json", a.prefix))
                    .send()
                    .await
                    .unwrap_or_else(|e| {
                        panic!("round {round}: {}'s pointer names {digest}, which is not stored: {e:?}", a.name)
                    });
                let bytes = bundle.body.collect().await.unwrap().into_bytes();
                assert_eq!(
                    fleetgate_bundle::Digest::of(&bytes).to_string(),
                    digest,
                    "round {round}: {}'s bundle is torn",
                    a.name
                );
            }
        });
    };

    // How long a whole apply of every account takes on this machine: kill points are drawn
    // within it, so most runs are cut mid-apply however fast or slow the machine is.
    support::edit(&repo, "base/gateway.yaml", "timeout: 15s", "timeout: 16s");
    git(&repo, &["commit", "-q", "-am", "timed change"]);
    let started = Instant::now();
    let out = run(&["apply", "--skip-health-gates", "--concurrency", "4"])
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", show(&out));
    let whole = (started.elapsed().as_millis() as u64).max(100);
    let seed = fastrand::u64(..);
    let mut rng = fastrand::Rng::with_seed(seed);
    eprintln!("kill points from seed {seed}, within {whole} ms");
    let mut killed = 0;
    for round in 0..20 {
        // New work every round: every account's bundle changes.
        support::edit(
            &repo,
            "base/gateway.yaml",
            &format!("maxBodyBytes: {}", 1_048_576 + round),
            &format!("maxBodyBytes: {}", 1_048_576 + round + 1),
        );
        git(&repo, &["commit", "-q", "-am", &format!("round {round}")]);
        let mut child = run(&["apply", "--skip-health-gates", "--concurrency", "4"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(rng.u64(10..whole * 8 / 10)));
        if child.try_wait().unwrap().is_none() {
            killed += 1;
        }
        let _ = child.kill();
        child.wait().unwrap();
        check(round);
    }
    assert!(
        killed >= 10,
        "only {killed} of 20 runs were killed mid-apply"
    );

    // The next run converges, and then there is nothing left to do.
    let out = run(&["apply", "--skip-health-gates"]).output().unwrap();
    assert_eq!(code(&out), 0, "{}", show(&out));
    check(20);
    let out = run(&["plan", "--format", "json"]).output().unwrap();
    assert_eq!(code(&out), 0, "no changes left: {}", show(&out));
    let out = run(&["drift", "--format", "json"]).output().unwrap();
    assert_eq!(code(&out), 0, "in sync: {}", show(&out));
}
