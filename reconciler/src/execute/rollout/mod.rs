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
use std::time::Duration;

use fleetgate_bundle::Digest;

pub use crate::execute::health::{Serving, fresh, judge, serving};
pub use crate::execute::report::{
    AccountReport, AccountState, Conflict, Live, Outcome, RolloutReport, Tally, Watch, WaveReport,
    WaveState,
};

use crate::clock::Clock;
use crate::config::manifest::{RollbackScope, RolloutSpec};
use crate::execute::{Preempt, Stamp};
use crate::plan::{Desired, Plan, WavePlan};
use crate::target::{
    AccountRef, ETag, ErrorClass, FanOut, Hold, InstanceReport, Pointer, Target, TargetError,
};

/// What one account's pointer was before and after this rollout wrote it.
#[derive(Debug, Clone)]
struct Written {
    previous: Option<Pointer>,
    etag: ETag,
}

/// Executes `plan` against `target`. `live` is updated as the rollout goes; the final report
/// is returned too.
#[derive(Debug)]
pub struct Executor<'a> {
    pub target: &'a dyn Target,
    pub plan: &'a Plan,
    pub desired: &'a [Desired],
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
    /// A newer commit stops the rollout at its next safe point (the watch daemon).
    pub preempt: Option<&'a Preempt>,
    /// The bundles are stored already (a rollback): each is read and checked against its
    /// digest before a pointer moves onto it, and written only where it is missing.
    pub reuse_stored: bool,
    /// Hears of each account's outcome and each wave's end as they happen (the CLI prints
    /// them at once, so a killed run's output shows what it did).
    pub watch: Option<&'a dyn Watch>,
}

/// Why a wave stopped the rollout.
enum Stop {
    /// It breached its tolerance: the reason.
    Failed(String),
    /// A newer commit preempted the rollout: that commit.
    Preempted(String),
}

impl Executor<'_> {
    /// A report with every wave pending.
    pub fn initial_report(&self) -> RolloutReport {
        let planned: BTreeMap<&str, &crate::plan::AccountPlan> = self
            .plan
            .accounts
            .iter()
            .map(|a| (a.name.as_str(), a))
            .collect();
        RolloutReport {
            requests: None,
            commit: self.plan.head.commit.clone(),
            outcome: Outcome::InProgress,
            started_at: Clock::start().rfc3339(),
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
                                    conflict: None,
                                },
                            )
                        })
                        .collect(),
                })
                .collect(),
        }
    }

    /// Runs every wave in order until one fails or a newer commit preempts the rollout.
    pub async fn run(&self, live: &Live) -> RolloutReport {
        if let Some(w) = self.watch {
            w.rollout_started(&snapshot(live));
        }
        let report = self.run_waves(live).await;
        if let Some(w) = self.watch {
            w.rollout_finished(&report);
        }
        report
    }

    async fn run_waves(&self, live: &Live) -> RolloutReport {
        let clock = Clock::start();
        let mut written: Vec<BTreeMap<String, Written>> =
            vec![BTreeMap::new(); self.plan.waves.len()];
        for (i, wave) in self.plan.waves.iter().enumerate() {
            let stop = match self.preempted() {
                Some(by) => Err(Stop::Preempted(by)),
                None if wave.accounts.is_empty() => Ok(()),
                None => {
                    if let Some(w) = self.watch {
                        w.wave_started(&wave.name);
                    }
                    self.run_wave(i, wave, &clock, live, &mut written[i]).await
                }
            };
            match stop {
                Ok(()) => {
                    set(live, |r| r.waves[i].state = WaveState::Succeeded);
                    if !wave.accounts.is_empty() {
                        self.emit_wave(live, i, None);
                    }
                }
                Err(Stop::Failed(reason)) => {
                    self.fail(
                        i,
                        &format!("wave {}: {reason}", wave.name),
                        &written,
                        &clock,
                        live,
                    )
                    .await;
                    return snapshot(live);
                }
                Err(Stop::Preempted(by)) => {
                    set(live, |r| {
                        r.waves[i].state = if wave.accounts.is_empty() {
                            WaveState::NotStarted
                        } else {
                            WaveState::Preempted
                        };
                        for w in &mut r.waves[i + 1..] {
                            w.state = WaveState::NotStarted;
                        }
                        r.reason = Some(format!(
                            "preempted in wave {} by {}: the accounts it moved are part of the newer commit's rollout",
                            wave.name,
                            &by[..by.len().min(12)]
                        ));
                        r.outcome = Outcome::Preempted;
                        r.finished_at = Some(clock.rfc3339());
                    });
                    if !wave.accounts.is_empty() {
                        self.emit_wave(live, i, None);
                    }
                    return snapshot(live);
                }
            }
        }
        set(live, |r| {
            r.outcome = Outcome::Succeeded;
            r.finished_at = Some(clock.rfc3339());
        });
        snapshot(live)
    }

    /// Wave `i` failed: later waves do not start, and the accounts written are rolled back
    /// as fleet.yaml's `rollout.rollback` says.
    async fn fail(
        &self,
        i: usize,
        reason: &str,
        written: &[BTreeMap<String, Written>],
        clock: &Clock,
        live: &Live,
    ) {
        set(live, |r| {
            r.waves[i].state = WaveState::Failed;
            for w in &mut r.waves[i + 1..] {
                w.state = WaveState::NotStarted;
            }
            r.reason = Some(reason.to_string());
        });
        let scope: Vec<usize> = match self.settings.rollback {
            RollbackScope::None => Vec::new(),
            RollbackScope::Wave => vec![i],
            RollbackScope::All => (0..=i).collect(),
        };
        for w in &scope {
            self.roll_back(*w, &written[*w], clock, live).await;
        }
        set(live, |r| {
            r.outcome = if scope.is_empty() {
                Outcome::Halted
            } else {
                Outcome::RolledBack
            };
            r.finished_at = Some(clock.rfc3339());
        });
        // The failed wave, and the earlier ones its rollback reached.
        for w in scope.iter().copied().filter(|w| *w != i) {
            self.emit_wave(live, w, None);
        }
        self.emit_wave(live, i, Some(reason));
    }

    /// Marks an account failed once, counting it against its wave's tolerance; `class`: the
    /// kind of target failure, when it was one.
    fn fail_account(
        &self,
        live: &Live,
        i: usize,
        name: &str,
        detail: String,
        class: Option<ErrorClass>,
    ) {
        let mut changed = false;
        set(live, |r| {
            let w = &mut r.waves[i];
            if let Some(a) = w.accounts.get_mut(name)
                && a.state != AccountState::Failed
            {
                a.state = AccountState::Failed;
                a.detail = Some(detail);
                a.error = class.or(a.error);
                w.failed += 1;
                changed = true;
            }
        });
        if changed {
            self.emit(live, i, name);
        }
    }

    /// Reads back the pointer of an account whose write ended without saying whether it
    /// landed: this run's write is there (its digest, by this run's stamp), or not, or the
    /// read failed too (within the per-account timeout).
    async fn confirm(&self, d: &Desired) -> ReadBack {
        let read = tokio::time::timeout(self.fan.timeout, self.target.read_pointer(&d.account));
        match read.await {
            Ok(Ok(Some((p, etag))))
                if p.digest == d.digest
                    && p.applied_by == self.stamp.applied_by
                    && p.applied_at == self.stamp.applied_at =>
            {
                ReadBack::Landed(etag)
            }
            Ok(Ok(_)) => ReadBack::NotLanded,
            Ok(Err(e)) => ReadBack::Unknown(e.to_string()),
            Err(_) => ReadBack::Unknown(format!(
                "no answer within {}",
                humantime::format_duration(self.fan.timeout)
            )),
        }
    }

    /// Tells the watcher (if any) what became of an account, as it happens.
    fn emit(&self, live: &Live, i: usize, name: &str) {
        let Some(watch) = self.watch else { return };
        let seen = snapshot_wave(live, i, |w| {
            w.accounts.get(name).map(|a| (w.name.clone(), a.clone()))
        });
        if let Some((wave, account)) = seen {
            watch.account(&wave, name, &account);
        }
    }

    /// Tells the watcher (if any) how a wave ended.
    fn emit_wave(&self, live: &Live, i: usize, failure: Option<&str>) {
        let Some(watch) = self.watch else { return };
        let wave = snapshot_wave(live, i, Clone::clone);
        watch.wave(&wave, failure);
    }

    /// The commit that preempted this rollout, once one has.
    fn preempted(&self) -> Option<String> {
        self.preempt.and_then(Preempt::by)
    }

    /// Sleeps `d`, or less when a newer commit preempts the rollout (then its commit).
    async fn pause(&self, d: Duration) -> Result<(), Stop> {
        let Some(preempt) = self.preempt else {
            tokio::time::sleep(d).await;
            return Ok(());
        };
        tokio::select! {
            () = tokio::time::sleep(d) => Ok(()),
            by = preempt.wait() => Err(Stop::Preempted(by)),
        }
    }

    /// One wave: apply, verify, bake.
    async fn run_wave(
        &self,
        i: usize,
        wave: &WavePlan,
        clock: &Clock,
        live: &Live,
        written: &mut BTreeMap<String, Written>,
    ) -> Result<(), Stop> {
        self.apply_wave(i, wave, live, written).await?;
        if self.skip_gates {
            return Ok(());
        }
        let by_name: BTreeMap<&str, &Desired> = self
            .desired
            .iter()
            .map(|d| (d.account.name.as_str(), d))
            .collect();
        let wanted: BTreeMap<String, Digest> = written
            .keys()
            .filter_map(|n| {
                by_name
                    .get(n.as_str())
                    .map(|d| (n.clone(), d.digest.clone()))
            })
            .collect();
        self.verify_wave(i, wave, clock, live, &wanted).await?;
        self.bake_wave(i, wave, clock, live, &wanted).await
    }

    /// How often gateway reports are read, and how old one may be.
    fn timing(&self) -> (Duration, Duration) {
        (
            Duration::from(self.settings.poll_interval).max(Duration::from_millis(10)),
            Duration::from(self.settings.report_max_age),
        )
    }

    /// Step 1: bundle, then pointer by compare-and-swap against the version the plan saw;
    /// once the wave has breached its tolerance, the accounts not yet started are skipped.
    async fn apply_wave(
        &self,
        i: usize,
        wave: &WavePlan,
        live: &Live,
        written: &mut BTreeMap<String, Written>,
    ) -> Result<(), Stop> {
        let by_name: BTreeMap<&str, &Desired> = self
            .desired
            .iter()
            .map(|d| (d.account.name.as_str(), d))
            .collect();
        let planned: BTreeMap<&str, &crate::plan::AccountPlan> = self
            .plan
            .accounts
            .iter()
            .map(|a| (a.name.as_str(), a))
            .collect();
        let planned = &planned;
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
                    // A safe point: nothing of this account is written yet.
                    if breached(live, i, wave) {
                        return Ok(Err("not started: the wave had failed".to_string()));
                    }
                    if let Some(by) = self.preempted() {
                        return Ok(Err(format!(
                            "not started: preempted by {}",
                            &by[..by.len().min(12)]
                        )));
                    }
                    let entry = planned.get(d.account.name.as_str());
                    // The version the plan was made against: the write replaces exactly it.
                    let previous = entry
                        .and_then(|a| a.expected.as_ref())
                        .map(|e| (e.pointer.clone(), e.etag.clone()));
                    let carried = entry.and_then(|a| a.carried.as_ref());
                    let r = match (carried, &previous) {
                        // Moved here by a preempted rollout: only its verification is due.
                        (Some(_), Some((p, etag))) if p.digest == d.digest => Ok(etag.clone()),
                        _ => {
                            write(
                                self.target,
                                d,
                                previous.as_ref(),
                                commit,
                                self.stamp,
                                self.hold.as_ref(),
                                self.reuse_stored,
                            )
                            .await
                        }
                    };
                    // An error that does not say whether the pointer moved (no answer,
                    // a dropped connection): read it back; this run's write there is its
                    // success.
                    let r = match r {
                        Err(e) if unsure(&e) => match self.confirm(d).await {
                            ReadBack::Landed(etag) => Ok(etag),
                            ReadBack::NotLanded => Err(e),
                            ReadBack::Unknown(why) => Err(unknown(e, &why)),
                        },
                        r => r,
                    };
                    match r {
                        Ok(etag) => {
                            set(live, |r| {
                                if let Some(a) = r.waves[i].accounts.get_mut(&d.account.name) {
                                    a.state = AccountState::Applied;
                                    a.detail = carried.and_then(|_| entry?.note.clone());
                                }
                            });
                            self.emit(live, i, &d.account.name);
                            Ok(Ok(Written {
                                // A rollback takes a carried account back to where it was
                                // before the preempted rollout, not to its unverified bundle.
                                previous: entry.and_then(|a| a.before()),
                                etag,
                            }))
                        }
                        Err(e @ TargetError::Conflict { .. }) => {
                            // Observe it again: another applier may have deployed the
                            // same bundle, which is no failure.
                            let now = self.target.read_pointer(&d.account).await;
                            let (conflict, now) = observed_again(&now, &d.digest);
                            set(live, |r| {
                                let w = &mut r.waves[i];
                                if let Some(a) = w.accounts.get_mut(&d.account.name) {
                                    a.state = AccountState::Conflict;
                                    a.error = Some(ErrorClass::Conflict);
                                    a.conflict = Some(conflict);
                                    a.detail = Some(format!("{e}; observed again: {now}"));
                                    if conflict != Conflict::AtHead {
                                        w.failed += 1;
                                    }
                                }
                            });
                            self.emit(live, i, &d.account.name);
                            Err(e)
                        }
                        Err(e) => {
                            self.fail_account(
                                live,
                                i,
                                &d.account.name,
                                e.to_string(),
                                Some(e.class()),
                            );
                            Err(e)
                        }
                    }
                },
            )
            .await;
        for (name, r) in results {
            match r {
                Ok(Ok(w)) => {
                    written.insert(name, w);
                }
                Ok(Err(why)) => {
                    set(live, |r| {
                        if let Some(a) = r.waves[i].accounts.get_mut(&name) {
                            a.state = AccountState::Skipped;
                            a.detail = Some(why);
                        }
                    });
                    self.emit(live, i, &name);
                }
                // The step recorded its own failure, unless the fan-out ended it first (its
                // per-account timeout): then it is recorded here, so no account is left
                // pending without a reason.
                Err(e) => {
                    let pending = snapshot_wave(live, i, |w| {
                        w.accounts
                            .get(&name)
                            .is_some_and(|a| a.state == AccountState::Pending)
                    });
                    if !pending {
                        continue;
                    }
                    // Cut off mid-step: whether its pointer moved is read, not guessed.
                    let confirmed = match by_name.get(name.as_str()) {
                        Some(d) => self.confirm(d).await,
                        None => ReadBack::NotLanded,
                    };
                    match confirmed {
                        ReadBack::Landed(etag) => {
                            set(live, |r| {
                                if let Some(a) = r.waves[i].accounts.get_mut(&name) {
                                    a.state = AccountState::Applied;
                                }
                            });
                            self.emit(live, i, &name);
                            let previous = planned.get(name.as_str()).and_then(|a| a.before());
                            written.insert(name, Written { previous, etag });
                        }
                        ReadBack::NotLanded => {
                            self.fail_account(live, i, &name, e.to_string(), Some(e.class()));
                        }
                        ReadBack::Unknown(why) => {
                            let e = unknown(e, &why);
                            self.fail_account(live, i, &name, e.to_string(), Some(e.class()));
                        }
                    }
                }
            }
        }
        if breached(live, i, wave) {
            return Err(Stop::Failed(self.breach_reason(i, wave, live)));
        }
        match self.preempted() {
            Some(by) => Err(Stop::Preempted(by)),
            None => Ok(()),
        }
    }

    /// Step 2: every reporting instance serves the new digest, until the gate's timeout.
    async fn verify_wave(
        &self,
        i: usize,
        wave: &WavePlan,
        clock: &Clock,
        live: &Live,
        wanted: &BTreeMap<String, Digest>,
    ) -> Result<(), Stop> {
        set(live, |r| r.waves[i].state = WaveState::Verifying);
        let gate = &wave.health_gate;
        let (poll, max_age) = self.timing();
        let deadline = tokio::time::Instant::now() + Duration::from(gate.timeout);
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
                    Serving::Fail(why) => self.fail_account(live, i, &name, why, None),
                    Serving::NotYet(why) => still.push((name, why)),
                }
            }
            if breached(live, i, wave) {
                return Err(Stop::Failed(self.breach_reason(i, wave, live)));
            }
            if still.is_empty() {
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                for (name, why) in still {
                    self.fail_account(
                        live,
                        i,
                        &name,
                        format!("health gate timed out after {}: {why}", gate.timeout),
                        None,
                    );
                }
                if breached(live, i, wave) {
                    return Err(Stop::Failed(self.breach_reason(i, wave, live)));
                }
                break;
            }
            waiting = still.into_iter().map(|(n, _)| n).collect();
            self.pause(poll.min(deadline - tokio::time::Instant::now()))
                .await?;
        }
        Ok(())
    }

    /// Step 3: the serving accounts' error ratios stay under the gate through the bake.
    async fn bake_wave(
        &self,
        i: usize,
        wave: &WavePlan,
        clock: &Clock,
        live: &Live,
        wanted: &BTreeMap<String, Digest>,
    ) -> Result<(), Stop> {
        set(live, |r| r.waves[i].state = WaveState::Baking);
        let gate = &wave.health_gate;
        let (poll, max_age) = self.timing();
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
                    self.fail_account(live, i, name, why, None);
                }
            }
            if breached(live, i, wave) {
                return Err(Stop::Failed(self.breach_reason(i, wave, live)));
            }
            let now = tokio::time::Instant::now();
            if now >= bake_end {
                break;
            }
            self.pause(poll.min(bake_end - now)).await?;
        }
        set(live, |r| {
            for a in r.waves[i].accounts.values_mut() {
                if a.state == AccountState::Serving {
                    a.state = AccountState::Healthy;
                }
            }
        });
        Ok(())
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
                        // Never back onto a bundle that no longer matches its digest.
                        match self.target.read_bundle(&d.account, &prev.digest).await {
                            Ok(Some(_)) => {}
                            Ok(None) => {
                                return Ok(Err(format!(
                                    "the previous bundle {} is not stored, left as is",
                                    prev.digest.short()
                                )));
                            }
                            Err(e) => return Ok(Err(e.to_string())),
                        }
                        let pointer = Pointer {
                            digest: prev.digest.clone(),
                            commit: prev.commit.clone(),
                            previous: Some(d.digest.clone()),
                            applied_by,
                            applied_at: at,
                            hold: None,
                            decommissioned: None,
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
        for (name, _) in &results {
            self.emit(live, i, name);
        }
    }
}

/// What observing a conflicting account again found: at the head (another writer deployed
/// the same bundle: no failure), still needing it (who holds it now, named), or unknown (the
/// read failed: counted as failed, as nothing says the account converged).
fn observed_again(
    now: &Result<Option<(Pointer, ETag)>, TargetError>,
    digest: &Digest,
) -> (Conflict, String) {
    match now {
        Ok(Some((p, _))) if &p.digest == digest => (
            Conflict::AtHead,
            format!(
                "now at the head (written by {}{}), nothing to do",
                p.applied_by,
                p.commit
                    .as_deref()
                    .map(|c| format!(" at {}", &c[..c.len().min(12)]))
                    .unwrap_or_default()
            ),
        ),
        Ok(Some((p, _))) => (
            Conflict::StillNeeded,
            format!(
                "now at {} (written by {}{} at {}); still needs the head: run apply again to re-plan and write",
                p.digest.short(),
                p.applied_by,
                p.commit
                    .as_deref()
                    .map(|c| format!(", commit {}", &c[..c.len().min(12)]))
                    .unwrap_or_default(),
                p.applied_at
            ),
        ),
        Ok(None) => (
            Conflict::StillNeeded,
            "no pointer now (deleted by someone else); still needs the head: run apply again"
                .into(),
        ),
        Err(e) => (
            Conflict::Unknown,
            format!("unreachable now ({e}); run plan and apply again"),
        ),
    }
}

/// What reading back an unsure write found.
enum ReadBack {
    Landed(ETag),
    NotLanded,
    /// The read failed as well: `why`.
    Unknown(String),
}

/// The failure of a write whose outcome nobody can tell: the message says so.
fn unknown(e: TargetError, why: &str) -> TargetError {
    let not_known = format!(
        "whether the pointer moved is not known: reading it back failed ({why}); run plan to see"
    );
    match e {
        TargetError::Remote {
            account,
            class,
            message,
        } => TargetError::Remote {
            account,
            class,
            message: format!("{message}; {not_known}"),
        },
        TargetError::Timeout { account, after } => TargetError::Remote {
            account,
            class: ErrorClass::Timeout,
            message: format!("no answer within {after}; {not_known}"),
        },
        other => other,
    }
}

/// An error after which the write may or may not have happened.
fn unsure(e: &TargetError) -> bool {
    matches!(
        e.class(),
        ErrorClass::Timeout | ErrorClass::Network | ErrorClass::ServerError
    )
}

/// Whether wave `i` has more failed accounts than it tolerates.
fn breached(live: &Live, i: usize, wave: &WavePlan) -> bool {
    snapshot_wave(live, i, |w| w.failed) > wave.tolerated_failures
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

/// Bundle first, then the pointer by compare-and-swap against what was observed.
async fn write(
    target: &dyn Target,
    d: &Desired,
    current: Option<&(Pointer, ETag)>,
    commit: Option<&str>,
    stamp: &Stamp,
    hold: Option<&Hold>,
    reuse_stored: bool,
) -> Result<ETag, TargetError> {
    // Bundles are immutable and never deleted: the one the pointer replaced is still
    // stored, so going back to it (or any rollback) writes no bundle. What is stored under
    // its name is checked against its digest first: an object overwritten in place is a
    // tampered target, and no pointer is moved onto it.
    if reuse_stored || current.is_some_and(|(p, _)| p.previous.as_ref() == Some(&d.digest)) {
        if target.read_bundle(&d.account, &d.digest).await?.is_none() {
            target
                .write_bundle(&d.account, &d.canonical.unpack())
                .await?;
        }
    } else {
        target
            .write_bundle(&d.account, &d.canonical.unpack())
            .await?;
    }
    let pointer = Pointer {
        digest: d.digest.clone(),
        commit: commit.map(str::to_string),
        previous: current.map(|(p, _)| p.digest.clone()),
        applied_by: stamp.applied_by.clone(),
        applied_at: stamp.applied_at.clone(),
        hold: hold.cloned(),
        decommissioned: None,
    };
    target
        .write_pointer(&d.account, &pointer, current.map(|(_, e)| e))
        .await
}

#[cfg(test)]
mod tests;
