//! Executing a plan wave by wave: apply, health gate, bake, and undo on failure.
//!
//! The [`Plan`] decided which accounts change and in which wave; this module only follows
//! it. For each wave in order:
//!
//! 1. **apply**: bundle first, then the pointer by compare-and-swap, `maxConcurrency` at a
//!    time. Once the wave has more failed accounts than it tolerates, the accounts not yet
//!    started are skipped.
//! 2. **verify**: until the gate's timeout, every gateway instance that reports status in
//!    each changed account must serve the new digest. Accounts where no instance reports
//!    follow the gate's `noGateway` policy (wait, skip, fail).
//! 3. **bake**: for the bake time, the instances' 5xx and upstream-error ratios on the new
//!    bundle (their counters restart at each swap) must stay under the gate's thresholds,
//!    judged once an account has served `minRequests`.
//!
//! A wave with more failed accounts than it tolerates stops the rollout: the accounts it
//! changed go back to their previous bundle by compare-and-swap (bundles are stored,
//! nothing is re-rendered), and the earlier waves' too when fleet.yaml's
//! `rollout.rollback` is `all`. Later waves are never touched.
//!
//! Time is tokio's: tests run it paused.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use fleetgate_bundle::Digest;
use serde::Serialize;

use crate::manifest::{HealthGate, NoGatewayPolicy, RollbackScope, RolloutSpec};
use crate::pipeline::Stamp;
use crate::plan::{Desired, Plan, WavePlan};
use crate::target::{
    AccountRef, ETag, ErrorClass, FanOut, Hold, InstanceReport, Observed, Pointer, Target,
    TargetError,
};

/// What happened to a rollout, as it goes: the watch daemon serves it in `/status`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RolloutReport {
    pub commit: String,
    pub outcome: Outcome,
    pub started_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    /// Why the rollout stopped, when it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub waves: Vec<WaveReport>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    InProgress,
    /// Every wave passed.
    Succeeded,
    /// A wave failed and its accounts (and per policy earlier waves') were rolled back.
    RolledBack,
    /// A wave failed and fleet.yaml says not to roll back: accounts stay where they are.
    Halted,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WaveReport {
    pub name: String,
    pub state: WaveState,
    pub tolerated_failures: usize,
    pub failed: usize,
    pub accounts: BTreeMap<String, AccountReport>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum WaveState {
    Pending,
    Applying,
    Verifying,
    Baking,
    Succeeded,
    Failed,
    RolledBack,
    /// Not started: an earlier wave failed.
    NotStarted,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AccountReport {
    pub state: AccountState,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    pub to: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// The kind of target failure, when a read or write failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorClass>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum AccountState {
    Pending,
    /// The pointer names the new bundle.
    Applied,
    /// Every reporting gateway serves the new bundle (or none reports and the policy skips).
    Serving,
    /// Passed the bake.
    Healthy,
    Failed,
    /// Back on its previous bundle.
    RolledBack,
    /// Not started: its wave stopped first.
    Skipped,
    /// Someone else moved the pointer between observe and write: nothing was overwritten.
    /// Observed again: `detail` says whether it is at the head now (then it is not counted
    /// as a failure).
    Conflict,
}

/// The live report, shared with whoever shows it.
pub type Live = Arc<Mutex<RolloutReport>>;

/// What one account's pointer was before and after this rollout wrote it.
#[derive(Debug, Clone)]
struct Written {
    previous: Option<Pointer>,
    etag: ETag,
}

/// Executes `plan` against `target`. `live` is updated as the rollout goes; the final report
/// is returned too.
#[derive(Debug)]
pub struct Executor<'a, T: Target> {
    pub target: &'a T,
    pub plan: &'a Plan,
    pub desired: &'a [Desired],
    pub observed: &'a BTreeMap<String, Observed>,
    pub stamp: &'a Stamp,
    pub settings: &'a RolloutSpec,
    /// Per-account timeout and progress; the concurrency is each wave's own.
    pub fan: FanOut<'a>,
    /// Skip health gates and bakes (`apply --skip-health-gates`): waves still go in order.
    pub skip_gates: bool,
    /// Written into every pointer (`fleetgate rollback --to`).
    pub hold: Option<Hold>,
    /// Record the plan's head commit in the pointers (off for a rollback to a digest, whose
    /// commit is not known).
    pub record_commit: bool,
    /// Shortens every wave's bake to at most this (`fleetgate up`'s demo pace).
    pub max_bake: Option<Duration>,
}

/// The wall clock as tokio sees it: real time normally, virtual time under
/// `tokio::time::pause()`.
#[derive(Debug, Clone, Copy)]
struct Clock {
    wall: SystemTime,
    at: tokio::time::Instant,
}

impl Clock {
    fn start() -> Clock {
        Clock {
            wall: SystemTime::now(),
            at: tokio::time::Instant::now(),
        }
    }

    fn now(&self) -> SystemTime {
        self.wall + self.at.elapsed()
    }

    fn rfc3339(&self) -> String {
        humantime::format_rfc3339_seconds(self.now()).to_string()
    }
}

impl<'a, T: Target> Executor<'a, T> {
    /// A report with every wave pending.
    pub fn initial_report(&self) -> RolloutReport {
        let planned: BTreeMap<&str, &crate::plan::AccountPlan> = self
            .plan
            .accounts
            .iter()
            .map(|a| (a.name.as_str(), a))
            .collect();
        RolloutReport {
            commit: self.plan.head.commit.clone(),
            outcome: Outcome::InProgress,
            started_at: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
            finished_at: None,
            reason: None,
            waves: self
                .plan
                .waves
                .iter()
                .map(|w| WaveReport {
                    name: w.name.clone(),
                    state: WaveState::Pending,
                    tolerated_failures: w.tolerated_failures,
                    failed: 0,
                    accounts: w
                        .accounts
                        .iter()
                        .map(|n| {
                            (
                                n.clone(),
                                AccountReport {
                                    state: AccountState::Pending,
                                    from: planned.get(n.as_str()).and_then(|a| a.from.clone()),
                                    to: planned
                                        .get(n.as_str())
                                        .map(|a| a.to.clone())
                                        .unwrap_or_default(),
                                    detail: None,
                                    error: None,
                                },
                            )
                        })
                        .collect(),
                })
                .collect(),
        }
    }

    /// Runs every wave in order until one fails.
    pub async fn run(&self, live: &Live) -> RolloutReport {
        let clock = Clock::start();
        let mut written: Vec<BTreeMap<String, Written>> =
            vec![BTreeMap::new(); self.plan.waves.len()];
        for (i, wave) in self.plan.waves.iter().enumerate() {
            if wave.accounts.is_empty() {
                set(live, |r| r.waves[i].state = WaveState::Succeeded);
                continue;
            }
            let failure = self.run_wave(i, wave, &clock, live, &mut written[i]).await;
            if let Some(reason) = failure {
                set(live, |r| {
                    r.waves[i].state = WaveState::Failed;
                    for w in &mut r.waves[i + 1..] {
                        w.state = WaveState::NotStarted;
                    }
                    r.reason = Some(format!("wave {}: {reason}", wave.name));
                });
                let scope: Vec<usize> = match self.settings.rollback {
                    RollbackScope::None => Vec::new(),
                    RollbackScope::Wave => vec![i],
                    RollbackScope::All => (0..=i).collect(),
                };
                for w in &scope {
                    self.roll_back(*w, &written[*w], &clock, live).await;
                }
                set(live, |r| {
                    r.outcome = if scope.is_empty() {
                        Outcome::Halted
                    } else {
                        Outcome::RolledBack
                    };
                    r.finished_at = Some(clock.rfc3339());
                });
                return snapshot(live);
            }
            set(live, |r| r.waves[i].state = WaveState::Succeeded);
        }
        set(live, |r| {
            r.outcome = Outcome::Succeeded;
            r.finished_at = Some(clock.rfc3339());
        });
        snapshot(live)
    }

    /// One wave; `Some(reason)` when it breached its tolerance.
    async fn run_wave(
        &self,
        i: usize,
        wave: &WavePlan,
        clock: &Clock,
        live: &Live,
        written: &mut BTreeMap<String, Written>,
    ) -> Option<String> {
        let by_name: BTreeMap<&str, &Desired> = self
            .desired
            .iter()
            .map(|d| (d.account.name.as_str(), d))
            .collect();
        let breached = |live: &Live| snapshot_wave(live, i, |w| w.failed) > wave.tolerated_failures;
        let fail = |live: &Live, name: &str, detail: String| fail_account(live, i, name, detail);
        let (breached, fail) = (&breached, &fail);

        // 1. Apply.
        set(live, |r| r.waves[i].state = WaveState::Applying);
        let fan = FanOut {
            concurrency: wave.max_concurrency,
            ..self.fan
        };
        let todo: Vec<&Desired> = wave
            .accounts
            .iter()
            .filter_map(|n| by_name.get(n.as_str()).copied())
            .collect();
        let commit = self.record_commit.then_some(self.plan.head.commit.as_str());
        let results = fan
            .run(
                "apply",
                todo,
                |d| &d.account,
                |d| async move {
                    if breached(live) {
                        return Ok(None);
                    }
                    let previous = match self.observed.get(&d.account.name) {
                        Some(Observed::Deployed { pointer, etag, .. }) => {
                            Some((pointer.clone(), etag.clone()))
                        }
                        _ => None,
                    };
                    let r = write(
                        self.target,
                        d,
                        previous.as_ref(),
                        commit,
                        self.stamp,
                        self.hold.as_ref(),
                    )
                    .await;
                    match r {
                        Ok(etag) => {
                            set(live, |r| {
                                if let Some(a) = r.waves[i].accounts.get_mut(&d.account.name) {
                                    a.state = AccountState::Applied;
                                }
                            });
                            Ok(Some(Written {
                                previous: previous.map(|(p, _)| p),
                                etag,
                            }))
                        }
                        Err(e @ TargetError::Conflict { .. }) => {
                            // Observe it again: another applier may have deployed the
                            // same bundle, which is no failure.
                            let now = self.target.read_pointer(&d.account).await;
                            let at_head = matches!(&now, Ok(Some((p, _))) if p.digest == d.digest);
                            set(live, |r| {
                                let w = &mut r.waves[i];
                                if let Some(a) = w.accounts.get_mut(&d.account.name) {
                                    a.state = AccountState::Conflict;
                                    a.error = Some(ErrorClass::Conflict);
                                    a.detail = Some(format!(
                                        "{e}; observed again: {}",
                                        if at_head {
                                            "now at the head (another apply deployed it), nothing to do"
                                        } else {
                                            "still needs the head: run apply again to re-plan and write"
                                        }
                                    ));
                                    if !at_head {
                                        w.failed += 1;
                                    }
                                }
                            });
                            Err(e)
                        }
                        Err(e) => {
                            let class = e.class();
                            fail(live, &d.account.name, e.to_string());
                            set(live, |r| {
                                if let Some(a) = r.waves[i].accounts.get_mut(&d.account.name) {
                                    a.error = Some(class);
                                }
                            });
                            Err(e)
                        }
                    }
                },
            )
            .await;
        for (name, r) in results {
            match r {
                Ok(Some(w)) => {
                    written.insert(name, w);
                }
                Ok(None) => set(live, |r| {
                    if let Some(a) = r.waves[i].accounts.get_mut(&name) {
                        a.state = AccountState::Skipped;
                        a.detail = Some("not started: the wave had failed".into());
                    }
                }),
                Err(_) => {}
            }
        }
        if breached(live) {
            return Some(self.breach_reason(i, wave, live));
        }
        if self.skip_gates {
            return None;
        }

        // 2. Verify: every reporting instance serves the new digest.
        set(live, |r| r.waves[i].state = WaveState::Verifying);
        let gate = &wave.health_gate;
        let poll = Duration::from(self.settings.poll_interval).max(Duration::from_millis(10));
        let max_age = Duration::from(self.settings.report_max_age);
        let deadline = tokio::time::Instant::now() + Duration::from(gate.timeout);
        let wanted: BTreeMap<String, Digest> = written
            .keys()
            .filter_map(|n| {
                by_name
                    .get(n.as_str())
                    .map(|d| (n.clone(), d.digest.clone()))
            })
            .collect();
        let mut waiting: Vec<String> = wanted.keys().cloned().collect();
        loop {
            let reads = self.read_reports(&waiting).await;
            let now = clock.now();
            let mut still = Vec::new();
            for name in waiting {
                let reports = match reads.get(&name) {
                    Some(Ok(r)) => fresh(r, now, max_age),
                    Some(Err(e)) => {
                        // A read error is not the gateway's fault: try again until the
                        // deadline, and say so if it comes.
                        still.push((name, format!("cannot read status: {e}")));
                        continue;
                    }
                    None => Vec::new(),
                };
                match serving(&reports, &wanted[&name], gate.no_gateway) {
                    Serving::Yes(detail) => set(live, |r| {
                        if let Some(a) = r.waves[i].accounts.get_mut(&name) {
                            a.state = AccountState::Serving;
                            a.detail = detail;
                        }
                    }),
                    Serving::Fail(why) => fail(live, &name, why),
                    Serving::NotYet(why) => still.push((name, why)),
                }
            }
            if breached(live) {
                return Some(self.breach_reason(i, wave, live));
            }
            if still.is_empty() {
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                for (name, why) in still {
                    fail(
                        live,
                        &name,
                        format!("health gate timed out after {}: {why}", gate.timeout),
                    );
                }
                if breached(live) {
                    return Some(self.breach_reason(i, wave, live));
                }
                break;
            }
            waiting = still.into_iter().map(|(n, _)| n).collect();
            tokio::time::sleep(poll.min(deadline - tokio::time::Instant::now())).await;
        }

        // 3. Bake: the serving accounts' error ratios stay under the gate.
        set(live, |r| r.waves[i].state = WaveState::Baking);
        let bake = Duration::from(wave.bake_time);
        let bake_end =
            tokio::time::Instant::now() + self.max_bake.map_or(bake, |max| bake.min(max));
        loop {
            let serving: Vec<String> = snapshot_wave(live, i, |w| {
                w.accounts
                    .iter()
                    .filter(|(_, a)| a.state == AccountState::Serving)
                    .map(|(n, _)| n.clone())
                    .collect()
            });
            let reads = self.read_reports(&serving).await;
            let now = clock.now();
            for name in &serving {
                if let Some(Ok(reports)) = reads.get(name)
                    && let Err(why) = judge(&fresh(reports, now, max_age), &wanted[name], gate)
                {
                    fail(live, name, why);
                }
            }
            if breached(live) {
                return Some(self.breach_reason(i, wave, live));
            }
            let now = tokio::time::Instant::now();
            if now >= bake_end {
                break;
            }
            tokio::time::sleep(poll.min(bake_end - now)).await;
        }
        set(live, |r| {
            for a in r.waves[i].accounts.values_mut() {
                if a.state == AccountState::Serving {
                    a.state = AccountState::Healthy;
                }
            }
        });
        None
    }

    fn breach_reason(&self, i: usize, wave: &WavePlan, live: &Live) -> String {
        let failed: Vec<String> = snapshot_wave(live, i, |w| {
            w.accounts
                .iter()
                .filter(|(_, a)| a.state == AccountState::Failed)
                .map(|(n, a)| format!("{n} ({})", a.detail.as_deref().unwrap_or("failed")))
                .collect()
        });
        format!(
            "{} failed account{} of {}, {} tolerated: {}",
            failed.len(),
            if failed.len() == 1 { "" } else { "s" },
            wave.accounts.len(),
            wave.tolerated_failures,
            failed.join("; ")
        )
    }

    async fn read_reports(
        &self,
        names: &[String],
    ) -> BTreeMap<String, Result<Vec<InstanceReport>, TargetError>> {
        let names: std::collections::BTreeSet<&str> = names.iter().map(String::as_str).collect();
        let refs: Vec<&AccountRef> = self
            .desired
            .iter()
            .filter(|d| names.contains(d.account.name.as_str()))
            .map(|d| &d.account)
            .collect();
        let fan = FanOut {
            progress: &crate::target::NoProgress,
            ..self.fan
        };
        fan.run("status", refs, |a| a, |a| self.target.read_statuses(a))
            .await
            .into_iter()
            .collect()
    }

    /// Moves the pointers this rollout wrote in wave `i` back to what they were.
    async fn roll_back(
        &self,
        i: usize,
        written: &BTreeMap<String, Written>,
        clock: &Clock,
        live: &Live,
    ) {
        let by_name: BTreeMap<&str, &Desired> = self
            .desired
            .iter()
            .map(|d| (d.account.name.as_str(), d))
            .collect();
        let items: Vec<(&Desired, &Written)> = written
            .iter()
            .filter_map(|(n, w)| by_name.get(n.as_str()).map(|d| (*d, w)))
            .collect();
        let applied_by = format!("{} (auto-rollback)", self.stamp.applied_by);
        let at = clock.rfc3339();
        let results = self
            .fan
            .run(
                "rollback",
                items,
                |(d, _)| &d.account,
                |(d, w)| {
                    let (applied_by, at) = (applied_by.clone(), at.clone());
                    async move {
                        let Some(prev) = &w.previous else {
                            return Ok(Err(
                                "first deployment: no previous bundle to go back to, left as is"
                                    .to_string(),
                            ));
                        };
                        let pointer = Pointer {
                            digest: prev.digest.clone(),
                            commit: prev.commit.clone(),
                            previous: Some(d.digest.clone()),
                            applied_by,
                            applied_at: at,
                            hold: None,
                        };
                        self.target
                            .write_pointer(&d.account, &pointer, Some(&w.etag))
                            .await
                            .map(|_| Ok(prev.digest.short().to_string()))
                    }
                },
            )
            .await;
        set(live, |r| {
            let wave = &mut r.waves[i];
            for (name, result) in &results {
                let Some(a) = wave.accounts.get_mut(name) else {
                    continue;
                };
                let before = a.detail.take();
                let (state, note) = match result {
                    Ok(Ok(to)) => (AccountState::RolledBack, format!("rolled back to {to}")),
                    Ok(Err(why)) => (a.state, format!("not rolled back: {why}")),
                    Err(e) => (a.state, format!("rollback failed: {e}")),
                };
                a.state = state;
                a.detail = Some(match before {
                    Some(b) => format!("{b}; {note}"),
                    None => note,
                });
            }
            wave.state = WaveState::RolledBack;
        });
    }
}

/// Marks an account failed once, counting it against its wave's tolerance.
fn fail_account(live: &Live, i: usize, name: &str, detail: String) {
    set(live, |r| {
        let w = &mut r.waves[i];
        if let Some(a) = w.accounts.get_mut(name)
            && a.state != AccountState::Failed
        {
            a.state = AccountState::Failed;
            a.detail = Some(detail);
            w.failed += 1;
        }
    });
}

fn set(live: &Live, f: impl FnOnce(&mut RolloutReport)) {
    let mut r = live
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    f(&mut r);
}

fn snapshot(live: &Live) -> RolloutReport {
    live.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone()
}

fn snapshot_wave<R>(live: &Live, i: usize, f: impl FnOnce(&WaveReport) -> R) -> R {
    f(&live
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .waves[i])
}

/// Sets or lifts the hold on an account's pointer, by compare-and-swap, keeping its bundle.
/// Whether anything was written (`false`: no pointer, or the hold is already so).
pub async fn set_hold<T: Target>(
    target: &T,
    account: &AccountRef,
    hold: Option<&Hold>,
    stamp: &Stamp,
) -> Result<bool, TargetError> {
    let Some((mut pointer, etag)) = target.read_pointer(account).await? else {
        return Ok(false);
    };
    if pointer.hold.as_ref() == hold {
        return Ok(false);
    }
    pointer.hold = hold.cloned();
    pointer.applied_by = stamp.applied_by.clone();
    pointer.applied_at = stamp.applied_at.clone();
    target.write_pointer(account, &pointer, Some(&etag)).await?;
    Ok(true)
}

/// Bundle first, then the pointer by compare-and-swap against what was observed.
async fn write<T: Target>(
    target: &T,
    d: &Desired,
    current: Option<&(Pointer, ETag)>,
    commit: Option<&str>,
    stamp: &Stamp,
    hold: Option<&Hold>,
) -> Result<ETag, TargetError> {
    // Bundles are immutable and never deleted: the one the pointer replaced is still
    // stored, so going back to it (a rollback) is a pointer write alone.
    if current.is_none_or(|(p, _)| p.previous.as_ref() != Some(&d.digest)) {
        target.write_bundle(&d.account, &d.canonical).await?;
    }
    let pointer = Pointer {
        digest: d.digest.clone(),
        commit: commit.map(str::to_string),
        previous: current.map(|(p, _)| p.digest.clone()),
        applied_by: stamp.applied_by.clone(),
        applied_at: stamp.applied_at.clone(),
        hold: hold.cloned(),
    };
    target
        .write_pointer(&d.account, &pointer, current.map(|(_, e)| e))
        .await
}

/// The reports written within `max_age` of `now`: older ones are from instances that are
/// gone (a report whose time does not parse counts as gone too).
pub fn fresh(
    reports: &[InstanceReport],
    now: SystemTime,
    max_age: Duration,
) -> Vec<InstanceReport> {
    reports
        .iter()
        .filter(|r| {
            humantime::parse_rfc3339(&r.written_at)
                .is_ok_and(|t| now.duration_since(t).map_or(true, |age| age <= max_age))
        })
        .cloned()
        .collect()
}

/// Whether an account's gateways serve `digest`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Serving {
    /// With a note when no gateway reports and the policy skips the account.
    Yes(Option<String>),
    NotYet(String),
    Fail(String),
}

/// The verify step's decision for one account, from its fresh reports.
pub fn serving(reports: &[InstanceReport], digest: &Digest, policy: NoGatewayPolicy) -> Serving {
    if reports.is_empty() {
        return match policy {
            NoGatewayPolicy::Skip => Serving::Yes(Some(
                "no gateway reports status: not verified (noGateway: skip)".into(),
            )),
            NoGatewayPolicy::Fail => {
                Serving::Fail("no gateway reports status (noGateway: fail)".into())
            }
            NoGatewayPolicy::Wait => Serving::NotYet("no gateway reports status yet".into()),
        };
    }
    let behind: Vec<String> = reports
        .iter()
        .filter(|r| r.digest.as_ref() != Some(digest))
        .map(|r| {
            let serves = r
                .digest
                .as_ref()
                .map_or_else(|| "nothing".to_string(), |d| d.short().to_string());
            match &r.last_reload_error {
                Some(e) => format!("{} serves {serves} (last reload error: {e})", r.instance),
                None => format!("{} serves {serves}", r.instance),
            }
        })
        .collect();
    if behind.is_empty() {
        Serving::Yes(None)
    } else {
        Serving::NotYet(format!(
            "{} of {} instance{} not on {} yet: {}",
            behind.len(),
            reports.len(),
            if reports.len() == 1 { "" } else { "s" },
            digest.short(),
            behind.join(", ")
        ))
    }
}

/// The bake step's decision for one account: its instances on `digest`, summed, against
/// the gate. Below `minRequests` there is not enough traffic to judge, which passes.
pub fn judge(reports: &[InstanceReport], digest: &Digest, gate: &HealthGate) -> Result<(), String> {
    let on: Vec<&InstanceReport> = reports
        .iter()
        .filter(|r| r.digest.as_ref() == Some(digest))
        .collect();
    let total: u64 = on
        .iter()
        .map(|r| r.requests_2xx + r.requests_3xx + r.requests_4xx + r.requests_5xx)
        .sum();
    if total == 0 || total < gate.min_requests {
        return Ok(());
    }
    let errors_5xx: u64 = on.iter().map(|r| r.requests_5xx).sum();
    let upstream: u64 = on.iter().map(|r| r.upstream_errors).sum();
    let ratio = |n: u64| n as f64 / total as f64;
    if ratio(errors_5xx) > gate.max_5xx_ratio {
        return Err(format!(
            "5xx ratio {:.3} ({errors_5xx} of {total} requests) is over the gate's {}",
            ratio(errors_5xx),
            gate.max_5xx_ratio
        ));
    }
    if ratio(upstream) > gate.max_upstream_error_ratio {
        return Err(format!(
            "upstream error ratio {:.3} ({upstream} of {total} requests) is over the gate's {}",
            ratio(upstream),
            gate.max_upstream_error_ratio
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{Context, Revision};
    use crate::target::FileTarget;

    /// The example repo (canary -> early -> prod), with `edit` applied to base/gateway.yaml.
    fn repo(edit: Option<(&str, &str)>) -> crate::Repo {
        let mut src = crate::example_fleet::example_repo();
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
                Desired {
                    account: AccountRef::from_repo(repo, n).unwrap(),
                    bundle: r.bundle,
                    canonical: r.canonical,
                    digest: r.digest,
                    base_digest: None,
                }
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
        let desired = desired(repo);
        let (waves, concurrency, wave_of) = crate::pipeline::rollout_order(repo);
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
            rendered: Default::default(),
            waves,
            concurrency,
            wave_of,
        };
        let fan = FanOut::quiet(8);
        let refs: Vec<AccountRef> = desired.iter().map(|d| d.account.clone()).collect();
        let observed = crate::target::observe(target, &refs, None, &fan).await;
        let plan = crate::plan::plan(&context, &desired, &observed, &Default::default());
        let stamp = stamp();
        let exec = Executor {
            target,
            plan: &plan,
            desired: &desired,
            observed: &observed,
            stamp: &stamp,
            settings: spec,
            fan,
            skip_gates,
            hold: None,
            record_commit: true,
            max_bake: None,
        };
        let live = Arc::new(Mutex::new(exec.initial_report()));
        exec.run(&live).await
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
                    let Ok(Some((pointer, _))) = target.read_pointer(name) else {
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
            .map(|n| (n.clone(), target.read_pointer(n).unwrap().unwrap().0.digest))
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
        let (canary, _) = target.read_pointer("globex-canary").unwrap().unwrap();
        assert!(canary.applied_by.ends_with("(auto-rollback)"), "{canary:?}");
        for untouched in ["acme-prod", "hooli-early"] {
            let (p, _) = target.read_pointer(untouched).unwrap().unwrap();
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
            target
                .read_pointer("globex-canary")
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
        let report =
            |instance: &str, digest: &Digest, ok: u64, bad: u64, age: u64| InstanceReport {
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
                written_at: humantime::format_rfc3339_seconds(now - Duration::from_secs(age))
                    .to_string(),
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
}
