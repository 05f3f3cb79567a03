//! The executor against a directory target, with stand-in gateways on tokio's paused clock.

use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use super::*;
use crate::config::manifest::{HealthGate, NoGatewayPolicy};
use crate::execute::Preempt;
use crate::plan::{Action, Context, Revision};
use crate::target::FileTarget;

/// An account's pointer as the file target stores it (`DIR/<account>/current.json`),
/// read directly: the test's own view of the deployed state.
fn read_pointer(target: &FileTarget, account: &str) -> Result<Option<(Pointer, ())>, String> {
    let path = target.root().join(account).join("current.json");
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(|p| Some((p, ())))
            .map_err(|e| e.to_string()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e.to_string()),
    }
}

/// The example repo (canary -> early -> prod), with `edit` applied to base/gateway.yaml.
fn repo(edit: Option<(&str, &str)>) -> crate::Repo {
    let mut src = crate::config::example_fleet::example_repo();
    if let Some((from, to)) = edit {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../config-repo-example/base/gateway.yaml"
        );
        let text = std::fs::read_to_string(path).unwrap();
        assert!(text.contains(from));
        src.insert("base/gateway.yaml", &text.replacen(from, to, 1));
    }
    let repo = crate::Repo::load(&src);
    assert!(repo.diagnostics.is_empty(), "{:?}", repo.diagnostics);
    repo
}

fn desired(repo: &crate::Repo) -> Vec<Desired> {
    repo.account_names()
        .map(|n| {
            let r = crate::render(repo, n).unwrap();
            Desired::new(
                AccountRef::from_repo(repo, n).unwrap(),
                &r.bundle,
                &r.canonical,
                r.digest,
            )
        })
        .collect()
}

fn stamp() -> Stamp {
    Stamp {
        applied_by: "test".into(),
        applied_at: "2026-11-24T00:00:00Z".into(),
    }
}

/// Deploys `repo` everywhere at once, with no gate.
async fn deploy(target: &FileTarget, repo: &crate::Repo, spec: &RolloutSpec) {
    let report = execute(target, repo, spec, true).await;
    assert_eq!(report.outcome, Outcome::Succeeded, "{report:#?}");
}

async fn execute(
    target: &FileTarget,
    repo: &crate::Repo,
    spec: &RolloutSpec,
    skip_gates: bool,
) -> RolloutReport {
    execute_with(target, repo, spec, skip_gates, &Default::default(), None)
        .await
        .0
}

/// As [`execute`], with plan options and a preemption signal; the plan too.
async fn execute_with(
    target: &FileTarget,
    repo: &crate::Repo,
    spec: &RolloutSpec,
    skip_gates: bool,
    options: &crate::plan::Options,
    preempt: Option<&Preempt>,
) -> (RolloutReport, Plan) {
    let desired = desired(repo);
    let (waves, concurrency, wave_of) = crate::ops::pipeline::rollout_order(repo);
    let context = Context {
        repo: "test".into(),
        base: None,
        head: Revision {
            rev: "HEAD".into(),
            commit: "c0ffee".into(),
        },
        target: target.location(),
        fleet: repo.account_names().map(str::to_string).collect(),
        deployed: Default::default(),
        decommission: Default::default(),
        rendered: Default::default(),
        waves,
        concurrency,
        wave_of,
    };
    let fan = FanOut::quiet(8);
    let refs: Vec<AccountRef> = desired.iter().map(|d| d.account.clone()).collect();
    let observed = crate::target::observe(target, &refs, None, &fan).await;
    let plan = crate::plan::plan(&context, &desired, &observed, options);
    let stamp = stamp();
    let exec = Executor {
        target,
        plan: &plan,
        desired: &desired,
        stamp: &stamp,
        settings: spec,
        fan,
        skip_gates,
        hold: None,
        record_commit: true,
        max_bake: None,
        preempt,
        reuse_stored: false,
        watch: None,
    };
    let live = Arc::new(Mutex::new(exec.initial_report()));
    let report = exec.run(&live).await;
    (report, plan)
}

/// Stands in for every account's gateway: reports the digest its pointer names, with
/// 100 requests of which `bad(digest)` are 5xx, on tokio's (paused) clock.
fn gateways(
    target: &FileTarget,
    accounts: Vec<String>,
    bad: impl Fn(&Digest) -> u64 + Send + 'static,
) -> tokio::task::JoinHandle<()> {
    let target = target.clone();
    let clock = Clock::start();
    tokio::spawn(async move {
        loop {
            for name in &accounts {
                let Ok(Some((pointer, _))) = read_pointer(&target, name) else {
                    continue;
                };
                let report = InstanceReport {
                    instance: "gw-1".into(),
                    ready: true,
                    account: Some(name.clone()),
                    digest: Some(pointer.digest.clone()),
                    commit: pointer.commit.clone(),
                    since: None,
                    requests_2xx: 100 - bad(&pointer.digest),
                    requests_3xx: 0,
                    requests_4xx: 0,
                    requests_5xx: bad(&pointer.digest),
                    upstream_errors: 0,
                    reloads: 1,
                    reload_failures: 0,
                    last_reload_error: None,
                    last_reload_error_at: None,
                    secret_failures: Vec::new(),
                    decommissioned_at: None,
                    written_at: clock.rfc3339(),
                };
                let dir = target.root().join(name).join("status");
                std::fs::create_dir_all(&dir).unwrap();
                std::fs::write(dir.join("gw-1.json"), serde_json::to_vec(&report).unwrap())
                    .unwrap();
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    })
}

/// Lets the stand-in gateways write their first reports, as running ones long have.
async fn settle() {
    tokio::time::sleep(Duration::from_secs(2)).await;
}

fn pointers(target: &FileTarget, names: &[String]) -> BTreeMap<String, Digest> {
    names
        .iter()
        .map(|n| {
            (
                n.clone(),
                read_pointer(target, n).unwrap().unwrap().0.digest,
            )
        })
        .collect()
}

#[tokio::test(start_paused = true)]
async fn a_good_change_rolls_through_every_wave_in_order() {
    let tmp = tempfile::tempdir().unwrap();
    let target = FileTarget::new(tmp.path().to_str().unwrap());
    let spec = RolloutSpec::default();
    let v1 = repo(None);
    deploy(&target, &v1, &spec).await;
    let names: Vec<String> = v1.account_names().map(str::to_string).collect();
    let gw = gateways(&target, names.clone(), |_| 0);
    settle().await;

    let v2 = repo(Some(("timeout: 15s", "timeout: 20s")));
    let started = tokio::time::Instant::now();
    let report = execute(&target, &v2, &spec, false).await;
    gw.abort();
    assert_eq!(report.outcome, Outcome::Succeeded, "{report:#?}");
    let states: Vec<(&str, WaveState, usize)> = report
        .waves
        .iter()
        .map(|w| (w.name.as_str(), w.state, w.accounts.len()))
        .collect();
    assert_eq!(
        states,
        [
            ("canary", WaveState::Succeeded, 2),
            ("early", WaveState::Succeeded, 3),
            ("prod", WaveState::Succeeded, 5)
        ]
    );
    assert!(
        report
            .waves
            .iter()
            .flat_map(|w| w.accounts.values())
            .all(|a| a.state == AccountState::Healthy)
    );
    let want: BTreeMap<String, Digest> = desired(&v2)
        .into_iter()
        .map(|d| (d.account.name, d.digest))
        .collect();
    assert_eq!(pointers(&target, &names), want);
    // The bakes ran, one after the other: 10m + 15m + 5m of (virtual) time at least.
    assert!(
        started.elapsed() >= Duration::from_secs(30 * 60),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test(start_paused = true)]
async fn a_sick_canary_is_rolled_back_and_later_waves_never_change() {
    let tmp = tempfile::tempdir().unwrap();
    let target = FileTarget::new(tmp.path().to_str().unwrap());
    let spec = RolloutSpec::default();
    let v1 = repo(None);
    deploy(&target, &v1, &spec).await;
    let names: Vec<String> = v1.account_names().map(str::to_string).collect();
    let before = pointers(&target, &names);
    let v2 = repo(Some(("timeout: 15s", "timeout: 20s")));
    let sick: Vec<Digest> = desired(&v2).into_iter().map(|d| d.digest).collect();
    let gw = gateways(&target, names.clone(), move |d| {
        if sick.contains(d) { 40 } else { 0 }
    });
    settle().await;

    let report = execute(&target, &v2, &spec, false).await;
    gw.abort();
    assert_eq!(report.outcome, Outcome::RolledBack, "{report:#?}");
    let reason = report.reason.as_deref().unwrap();
    assert!(
        reason.starts_with("wave canary: 2 failed accounts of 2, 0 tolerated"),
        "{reason}"
    );
    assert!(
        reason.contains("5xx ratio 0.400 (40 of 100 requests)"),
        "{reason}"
    );
    assert_eq!(report.waves[0].state, WaveState::RolledBack);
    assert!(
        report.waves[0]
            .accounts
            .values()
            .all(|a| a.state == AccountState::RolledBack)
    );
    assert_eq!(report.waves[1].state, WaveState::NotStarted);
    assert_eq!(report.waves[2].state, WaveState::NotStarted);
    // Every pointer names what it named before: the canaries' by rollback, the others
    // because they were never touched.
    assert_eq!(pointers(&target, &names), before);
    let (canary, _) = read_pointer(&target, "globex-canary").unwrap().unwrap();
    assert!(canary.applied_by.ends_with("(auto-rollback)"), "{canary:?}");
    for untouched in ["acme-prod", "hooli-early"] {
        let (p, _) = read_pointer(&target, untouched).unwrap().unwrap();
        assert_eq!(p.applied_by, "test", "{untouched} was written: {p:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn no_gateway_follows_the_wave_policy_and_tolerance_counts() {
    let tmp = tempfile::tempdir().unwrap();
    let target = FileTarget::new(tmp.path().to_str().unwrap());
    let v1 = repo(None);
    let spec = RolloutSpec::default();
    deploy(&target, &v1, &spec).await;
    // No gateway anywhere: the canary wave's policy is `fail`.
    let v2 = repo(Some(("timeout: 15s", "timeout: 20s")));
    let report = execute(&target, &v2, &spec, false).await;
    assert_eq!(report.outcome, Outcome::RolledBack);
    assert!(
        report
            .reason
            .as_deref()
            .unwrap()
            .contains("no gateway reports status (noGateway: fail)"),
        "{report:#?}"
    );

    // With rollback: none the failed canaries stay where they are.
    let halt = RolloutSpec {
        rollback: RollbackScope::None,
        ..RolloutSpec::default()
    };
    let report = execute(&target, &v2, &halt, false).await;
    assert_eq!(report.outcome, Outcome::Halted);
    let want = desired(&v2);
    let canary = want
        .iter()
        .find(|d| d.account.name == "globex-canary")
        .unwrap();
    assert_eq!(
        read_pointer(&target, "globex-canary")
            .unwrap()
            .unwrap()
            .0
            .digest,
        canary.digest
    );
}

#[test]
fn the_gate_judges_fresh_reports_on_the_new_digest() {
    let new = Digest::of(b"new");
    let old = Digest::of(b"old");
    let now = SystemTime::now();
    let report = |instance: &str, digest: &Digest, ok: u64, bad: u64, age: u64| InstanceReport {
        instance: instance.into(),
        ready: true,
        account: None,
        digest: Some(digest.clone()),
        commit: None,
        since: None,
        requests_2xx: ok,
        requests_3xx: 0,
        requests_4xx: 0,
        requests_5xx: bad,
        upstream_errors: 0,
        reloads: 1,
        reload_failures: 0,
        last_reload_error: None,
        last_reload_error_at: None,
        secret_failures: Vec::new(),
        decommissioned_at: None,
        written_at: humantime::format_rfc3339_seconds(now - Duration::from_secs(age)).to_string(),
    };
    let reports = vec![
        report("a", &new, 90, 0, 1),
        report("b", &old, 5, 5, 1),
        report("gone", &old, 0, 0, 600),
    ];
    let fresh = fresh(&reports, now, Duration::from_secs(120));
    assert_eq!(fresh.len(), 2, "the stale instance is not counted");
    assert!(
        matches!(serving(&fresh, &new, NoGatewayPolicy::Wait), Serving::NotYet(why) if why.contains("b serves"))
    );
    assert_eq!(
        serving(&fresh[..1], &new, NoGatewayPolicy::Wait),
        Serving::Yes(None)
    );
    assert!(matches!(
        serving(&[], &new, NoGatewayPolicy::Skip),
        Serving::Yes(Some(_))
    ));
    assert!(matches!(
        serving(&[], &new, NoGatewayPolicy::Fail),
        Serving::Fail(_)
    ));

    let gate = HealthGate::default();
    // Only instances on the new digest count: b's 50% of 5xx is the old bundle's.
    assert_eq!(judge(&fresh, &new, &gate), Ok(()));
    // Under minRequests there is nothing to judge.
    assert_eq!(judge(&[report("a", &new, 2, 5, 0)], &new, &gate), Ok(()));
    let e = judge(
        &[report("a", &new, 98, 1, 0), report("c", &new, 99, 2, 0)],
        &new,
        &gate,
    )
    .unwrap_err();
    assert!(e.starts_with("5xx ratio 0.015 (3 of 200 requests)"), "{e}");
}

/// A newer commit lands while the canary bakes: the rollout stops at once (no 10 minutes of
/// bake, later waves never written) and says so; the canaries it moved are carried into the
/// next plan as updates although already at its bundle, verified in their wave, and a
/// failing gate takes them back to where they were before the preempted rollout.
#[tokio::test(start_paused = true)]
async fn a_newer_commit_preempts_a_bake_and_the_next_rollout_owns_what_it_moved() {
    let tmp = tempfile::tempdir().unwrap();
    let target = FileTarget::new(tmp.path().to_str().unwrap());
    let spec = RolloutSpec::default();
    let v1 = repo(None);
    deploy(&target, &v1, &spec).await;
    let names: Vec<String> = v1.account_names().map(str::to_string).collect();
    let before = pointers(&target, &names);
    let v2 = repo(Some(("timeout: 15s", "timeout: 20s")));
    let v2_digests: Vec<Digest> = desired(&v2).into_iter().map(|d| d.digest).collect();
    let sick = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let gw = {
        let sick = sick.clone();
        gateways(&target, names.clone(), move |d| {
            if sick.load(std::sync::atomic::Ordering::SeqCst) && v2_digests.contains(d) {
                40
            } else {
                0
            }
        })
    };
    settle().await;

    let (tx, preempt) = Preempt::channel();
    let newer = tokio::spawn(async move {
        // The canary wave bakes 10 minutes; a newer commit lands one minute in.
        tokio::time::sleep(Duration::from_secs(60)).await;
        tx.send(Some("feedc0ffee0123456789".into())).unwrap();
        tx
    });
    let started = tokio::time::Instant::now();
    let (report, plan) = execute_with(
        &target,
        &v2,
        &spec,
        false,
        &Default::default(),
        Some(&preempt),
    )
    .await;
    let _tx = newer.await.unwrap();
    assert_eq!(report.outcome, Outcome::Preempted, "{report:#?}");
    assert!(
        started.elapsed() < Duration::from_secs(120),
        "stopped mid-bake, not after it: {:?}",
        started.elapsed()
    );
    let reason = report.reason.as_deref().unwrap();
    assert!(
        reason.starts_with("preempted in wave canary by feedc0ffee01"),
        "{reason}"
    );
    let states: Vec<WaveState> = report.waves.iter().map(|w| w.state).collect();
    assert_eq!(
        states,
        [
            WaveState::Preempted,
            WaveState::NotStarted,
            WaveState::NotStarted
        ]
    );
    let canaries = report.moved();
    assert_eq!(canaries, ["globex-canary", "internal-canary"]);
    let now = pointers(&target, &names);
    for n in &names {
        assert_eq!(
            now[n] != before[n],
            canaries.contains(n),
            "{n}: only the canaries were written"
        );
    }

    // The newer commit renders the same bundles (say, a docs change): the canaries are at
    // them already, but nothing verified them, so they are the next rollout's too.
    let carried = report.carried(&plan);
    assert_eq!(carried.keys().cloned().collect::<Vec<_>>(), canaries);
    for (n, c) in &carried {
        assert_eq!(c.before.as_ref().map(|p| &p.digest), Some(&before[n]));
    }
    sick.store(true, std::sync::atomic::Ordering::SeqCst);
    let options = crate::plan::Options {
        carried,
        ..Default::default()
    };
    let (report, plan) = execute_with(&target, &v2, &spec, false, &options, None).await;
    gw.abort();
    for n in &canaries {
        let entry = plan.accounts.iter().find(|a| &a.name == n).unwrap();
        assert_eq!(entry.action, Action::Update, "{entry:#?}");
        assert!(
            entry.note.as_deref().unwrap().contains("preempted"),
            "{entry:#?}"
        );
    }
    assert_eq!(report.outcome, Outcome::RolledBack, "{report:#?}");
    assert_eq!(report.waves[1].state, WaveState::NotStarted);
    assert_eq!(
        pointers(&target, &names),
        before,
        "the canaries went back to where they were before the preempted rollout"
    );
}

/// What a flaky network does to one call of the faulty target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    Pass,
    /// Fails before doing anything.
    Refuse,
    /// Does it, then fails (the answer is lost).
    LoseAnswer,
    /// Does it, then never answers (the fan-out's timeout ends it).
    HangAfter,
    /// Never answers, does nothing.
    Hang,
}

/// A real directory target behind a flaky network: each call takes the next fault of a
/// schedule (the property test draws it).
#[derive(Debug)]
struct Faulty {
    inner: FileTarget,
    schedule: Vec<Fault>,
    next: std::sync::atomic::AtomicUsize,
}

impl Faulty {
    async fn call<T>(
        &self,
        account: &AccountRef,
        op: impl Future<Output = Result<T, TargetError>>,
    ) -> Result<T, TargetError> {
        let n = self.next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let lost = || TargetError::Remote {
            account: account.name.clone(),
            class: ErrorClass::Network,
            message: "connection reset".into(),
        };
        match self.schedule[n % self.schedule.len()] {
            Fault::Pass => op.await,
            Fault::Refuse => Err(lost()),
            Fault::LoseAnswer => op.await.and_then(|_| Err(lost())),
            Fault::HangAfter => {
                let _ = op.await;
                std::future::pending().await
            }
            Fault::Hang => std::future::pending().await,
        }
    }
}

#[async_trait::async_trait]
impl Target for Faulty {
    fn location(&self) -> String {
        self.inner.location()
    }
    async fn deployed_accounts(&self) -> Result<Vec<String>, TargetError> {
        self.inner.deployed_accounts().await
    }
    async fn read_pointer(&self, a: &AccountRef) -> Result<Option<(Pointer, ETag)>, TargetError> {
        self.call(a, self.inner.read_pointer(a)).await
    }
    async fn read_bundle(
        &self,
        a: &AccountRef,
        digest: &Digest,
    ) -> Result<Option<fleetgate_bundle::Bundle>, TargetError> {
        self.call(a, self.inner.read_bundle(a, digest)).await
    }
    async fn write_bundle(&self, a: &AccountRef, canonical: &[u8]) -> Result<bool, TargetError> {
        self.call(a, self.inner.write_bundle(a, canonical)).await
    }
    async fn write_pointer(
        &self,
        a: &AccountRef,
        pointer: &Pointer,
        expected: Option<&ETag>,
    ) -> Result<ETag, TargetError> {
        self.call(a, self.inner.write_pointer(a, pointer, expected))
            .await
    }
    async fn pointer_history(
        &self,
        a: &AccountRef,
        limit: usize,
    ) -> Result<Vec<Pointer>, TargetError> {
        self.inner.pointer_history(a, limit).await
    }
    async fn read_statuses(&self, a: &AccountRef) -> Result<Vec<InstanceReport>, TargetError> {
        self.inner.read_statuses(a).await
    }
    async fn bootstrap(&self, a: &AccountRef) -> Result<crate::target::Bootstrapped, TargetError> {
        self.inner.bootstrap(a).await
    }
    async fn list_stored(
        &self,
        a: &AccountRef,
    ) -> Result<Vec<crate::target::StoredObject>, TargetError> {
        self.inner.list_stored(a).await
    }
    async fn delete_stored(
        &self,
        a: &AccountRef,
        objects: &[crate::target::StoredObject],
    ) -> Result<(), TargetError> {
        self.inner.delete_stored(a, objects).await
    }
}

fn fault() -> impl proptest::strategy::Strategy<Value = Fault> {
    use proptest::prelude::*;
    prop_oneof![
        6 => Just(Fault::Pass),
        1 => Just(Fault::Refuse),
        1 => Just(Fault::LoseAnswer),
        1 => Just(Fault::HangAfter),
        1 => Just(Fault::Hang),
    ]
}

proptest::proptest! {
    #![proptest_config(proptest::test_runner::Config::with_cases(24))]

    /// Whatever the faults, every account of an apply ends in exactly one reported outcome,
    /// the tally adds up to the accounts the plan changes, and what is reported is what the
    /// target holds: applied exactly where the pointer names the new bundle.
    #[test]
    fn every_account_ends_in_one_outcome_that_matches_the_target(
        schedule in proptest::collection::vec(fault(), 1..40)
    ) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .unwrap();
        rt.block_on(async {
            let tmp = tempfile::tempdir().unwrap();
            let inner = FileTarget::new(tmp.path().to_str().unwrap());
            // A failed wave stops the later ones, but nothing is moved back: what the apply
            // step did is what the property checks.
            let spec = RolloutSpec {
                rollback: RollbackScope::None,
                ..RolloutSpec::default()
            };
            let v1 = repo(None);
            deploy(&inner, &v1, &spec).await;
            let v2 = repo(Some(("timeout: 15s", "timeout: 20s")));
            let faulty = Faulty {
                inner: inner.clone(),
                schedule,
                next: Default::default(),
            };
            let desired = desired(&v2);
            let (waves, concurrency, wave_of) = crate::ops::pipeline::rollout_order(&v2);
            let context = Context {
                repo: "test".into(),
                base: None,
                head: Revision { rev: "HEAD".into(), commit: "c0ffee".into() },
                target: faulty.location(),
                fleet: v2.account_names().map(str::to_string).collect(),
                deployed: Default::default(),
                decommission: Default::default(),
                rendered: Default::default(),
                waves,
                concurrency,
                wave_of,
            };
            let fan = FanOut {
                timeout: Duration::from_secs(30),
                ..FanOut::quiet(4)
            };
            let refs: Vec<AccountRef> = desired.iter().map(|d| d.account.clone()).collect();
            // The plan is made on a clear line: the faults are the rollout's.
            let observed = crate::target::observe(&inner, &refs, None, &fan).await;
            let plan = crate::plan::plan(&context, &desired, &observed, &Default::default());
            let stamp = stamp();
            let exec = Executor {
                target: &faulty,
                plan: &plan,
                desired: &desired,
                stamp: &stamp,
                settings: &spec,
                fan,
                skip_gates: true,
                hold: None,
                record_commit: true,
                max_bake: None,
                preempt: None,
                reuse_stored: false,
                watch: None,
            };
            let live = Arc::new(Mutex::new(exec.initial_report()));
            let report = exec.run(&live).await;
            let changed = plan.summary.create + plan.summary.update;
            let t = report.tally();
            let not_started: usize = report
                .waves
                .iter()
                .filter(|w| w.state == WaveState::NotStarted)
                .map(|w| w.accounts.len())
                .sum();
            proptest::prop_assert_eq!(
                t.created + t.updated + t.conflicts + t.failed + t.rolled_back + t.skipped
                    + not_started,
                changed,
                "{:#?}",
                report
            );
            let want: BTreeMap<String, Digest> = desired
                .iter()
                .map(|d| (d.account.name.clone(), d.digest.clone()))
                .collect();
            for wave in &report.waves {
                for (name, a) in &wave.accounts {
                    proptest::prop_assert!(
                        a.state != AccountState::Pending || wave.state == WaveState::NotStarted,
                        "{} left pending in {}: {:#?}", name, wave.name, report
                    );
                    let (p, _) = read_pointer(&inner, name).unwrap().unwrap();
                    let at_head = p.digest == want[name];
                    // A write whose answer was lost and whose read-back failed too: nobody
                    // can tell, and the report says exactly that.
                    if a.detail.as_deref().is_some_and(|d| d.contains("is not known")) {
                        proptest::prop_assert_eq!(a.state, AccountState::Failed);
                        continue;
                    }
                    let reported = matches!(
                        a.state,
                        AccountState::Applied | AccountState::Serving | AccountState::Healthy
                    ) || a.conflict == Some(Conflict::AtHead);
                    proptest::prop_assert_eq!(
                        at_head, reported,
                        "{}: {:?} ({:?}), pointer at {}", name, a.state, a.detail, p.digest
                    );
                }
            }
            Ok(())
        })?;
    }
}

/// A conflict observed again: at the head, still needing it (who holds it now), or, when
/// the read fails, not known (a failure; never taken for "still needs the head").
#[test]
fn a_conflict_observed_again_names_the_other_writer_or_says_it_is_not_known() {
    let head: Digest = format!("sha256:{}", "a".repeat(64)).parse().unwrap();
    let other: Digest = format!("sha256:{}", "b".repeat(64)).parse().unwrap();
    let pointer = |digest: &Digest| Pointer {
        digest: digest.clone(),
        commit: Some("0123456789abcdef".into()),
        previous: None,
        applied_by: "ci@runner".into(),
        applied_at: "2026-12-05T10:00:00Z".into(),
        hold: None,
        decommissioned: None,
    };
    let etag = ETag("e".into());
    let (c, text) = observed_again(&Ok(Some((pointer(&head), etag.clone()))), &head);
    assert_eq!(c, Conflict::AtHead);
    assert!(
        text.contains("written by ci@runner at 0123456789ab"),
        "{text}"
    );
    let (c, text) = observed_again(&Ok(Some((pointer(&other), etag))), &head);
    assert_eq!(c, Conflict::StillNeeded);
    assert!(
        text.contains("written by ci@runner, commit 0123456789ab"),
        "{text}"
    );
    let failed = Err(TargetError::Remote {
        account: "acme-prod".into(),
        class: ErrorClass::Network,
        message: "connection reset".into(),
    });
    let (c, text) = observed_again(&failed, &head);
    assert_eq!(c, Conflict::Unknown);
    assert!(text.starts_with("unreachable now"), "{text}");
    let report = RolloutReport {
        commit: "c".into(),
        outcome: Outcome::Halted,
        started_at: String::new(),
        finished_at: None,
        reason: None,
        requests: None,
        waves: vec![WaveReport {
            name: "w".into(),
            state: WaveState::Failed,
            tolerated_failures: 0,
            failed: 1,
            accounts: BTreeMap::from([(
                "acme-prod".to_string(),
                AccountReport {
                    state: AccountState::Conflict,
                    from: None,
                    to: head.to_string(),
                    detail: Some(text),
                    error: Some(ErrorClass::Conflict),
                    conflict: Some(c),
                },
            )]),
        }],
    };
    let t = report.tally();
    assert_eq!(
        (t.conflicts, t.still_needed),
        (1, 1),
        "counted as not converged"
    );
}
