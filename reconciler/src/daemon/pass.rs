//! One reconcile pass of the watch daemon: fetch the branch, prepare its head, connect the
//! target and take the lease, plan, then run the one reconcile path
//! ([`crate::ops::reconcile`]) and check drift when due. Errors are values ([`PassError`])
//! that the error policy turns into requeue actions with backoff.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::config::manifest::FleetSpec;
use crate::daemon::http::{CommitView, Daemon, HeldAccount, Preempted, lock};
use crate::daemon::leader::{LeaseHolder, lease_name, spawn_renewer};
use crate::daemon::lease::{FileLeaseStore, Lease, LeaseStore, Rejected, S3LeaseStore};
use crate::daemon::settings::Settings;
use crate::execute::rollout::{Live, Outcome, RolloutReport};
use crate::execute::{Preempt, Stamp};
use crate::git::{Commit, GitRepo};
use crate::ops::pipeline::{self, PipelineError, Prepared};
use crate::ops::reconcile::{Change, Gates, Holds, Reconcile};
use crate::plan::{self, Action as PlanAction, Carried, Plan};
use crate::target::connect::{Connected, Home, Purpose};
use crate::target::{FanOut, NoProgress};

/// What a reconcile pass says to do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Come back after this long (or sooner, when a webhook arrives).
    Requeue(Duration),
}

/// The next wait after `failures` errors in a row: doubling from 5 s up to `max`.
pub fn backoff(failures: u32, max: Duration) -> Duration {
    let secs = 5u64.saturating_mul(1u64 << failures.saturating_sub(1).min(16));
    Duration::from_secs(secs).min(max)
}

/// Why a pass stopped early.
#[derive(Debug)]
pub(super) enum PassError {
    /// Retried with backoff; `what` is the step, `message` the cause.
    Failed { what: &'static str, message: String },
    /// The head's manifests are invalid: reported once, retried at the poll interval (only
    /// a new commit can fix it).
    InvalidHead,
}

impl PassError {
    fn failed(what: &'static str, message: impl std::fmt::Display) -> PassError {
        PassError::Failed {
            what,
            message: message.to_string(),
        }
    }
}

/// How a pass ended, for the metrics and the next wait.
type Passed = (&'static str, Next);

/// The loop's own state, between passes.
pub(super) struct Looper {
    daemon: Arc<Daemon>,
    pub(super) lease: Option<Arc<LeaseHolder>>,
    target: Option<Arc<(Option<FleetSpec>, Connected)>>,
    failures: u32,
    next_drift: Option<tokio::time::Instant>,
    /// A head whose manifests are invalid: reported once, not retried.
    invalid_head: Option<String>,
    /// Renews the lease from the moment it exists, rollouts included.
    pub(super) renewer: Option<tokio::task::JoinHandle<()>>,
    stop: tokio::sync::watch::Receiver<bool>,
    /// Accounts a preempted rollout moved before their wave was verified: the next
    /// rollout's, whatever its head.
    carried: BTreeMap<String, Carried>,
    /// The head's subject line, for notifications.
    head_subject: Option<String>,
}

impl Looper {
    pub(super) fn new(daemon: Arc<Daemon>, stop: tokio::sync::watch::Receiver<bool>) -> Looper {
        Looper {
            daemon,
            lease: None,
            target: None,
            failures: 0,
            next_drift: None,
            invalid_head: None,
            renewer: None,
            stop,
            carried: BTreeMap::new(),
            head_subject: None,
        }
    }

    fn settings(&self) -> &Settings {
        &self.daemon.settings
    }

    /// One pass, its errors turned into requeues.
    pub(super) async fn pass(&mut self) -> Passed {
        match self.reconcile().await {
            Ok(passed) => passed,
            Err(e) => self.error_policy(e),
        }
    }

    /// The error policy: failures back off (doubling up to `--max-backoff`); an invalid
    /// head waits for the next poll.
    fn error_policy(&mut self, e: PassError) -> Passed {
        match e {
            PassError::InvalidHead => ("error", Next::Requeue(self.settings().poll_interval)),
            PassError::Failed { what, message } => {
                self.failures += 1;
                let wait = backoff(self.failures, self.settings().max_backoff);
                tracing::error!(error = %message, retry_in = ?wait, "{what}");
                self.daemon
                    .update(|s| s.last_error = Some(format!("{what}: {message}")));
                ("error", Next::Requeue(wait))
            }
        }
    }

    /// One pass: fetch, plan, roll out if needed, check drift when due.
    async fn reconcile(&mut self) -> Result<Passed, PassError> {
        let poll = self.settings().poll_interval;
        let (repo, head) = self.fetch().await?;
        let head_id = head.id.to_string();
        let prepared = self.prepare(&repo, &head)?;
        self.daemon.configure_notifications(
            &prepared
                .fleet
                .as_ref()
                .map(|f| f.notifications.clone())
                .unwrap_or_default(),
        );
        if let Some(f) = &prepared.fleet {
            let waves: Vec<&str> = f.waves.iter().map(|w| w.name.as_str()).collect();
            self.daemon.forget_waves(&waves);
        }
        let connected = self.connect(&prepared).await?;
        let Some(holder) = self.lease.clone() else {
            return Err(PassError::failed(
                "no lease",
                "the lease store is not set up",
            ));
        };
        let rejected = match holder.hold(&self.daemon, None).await {
            Ok((true, rejected)) => rejected,
            Ok((false, _)) => {
                // Somebody else rolls out; come back before its lease could expire.
                self.failures = 0;
                let wait = (self.settings().lease_ttl / 3).max(Duration::from_millis(200));
                return Ok(("not_leader", Next::Requeue(wait.min(poll))));
            }
            Err(e) => return Err(PassError::failed("cannot take the lease", e)),
        };
        self.daemon.update(|s| s.rejected = rejected.clone());
        let rejected_here = rejected.as_ref().is_some_and(|r| r.commit == head_id);

        let target = connected.1.target.as_ref();
        let fleet = prepared.fleet.clone();
        let fan = FanOut {
            concurrency: self
                .settings()
                .concurrency
                .or(fleet.as_ref().map(|f| f.concurrency as usize))
                .unwrap_or(32)
                .max(1),
            timeout: self.settings().account_timeout,
            progress: &NoProgress,
        };
        let options = plan::Options {
            redaction_key: b"watch".to_vec(),
            carried: self.carried.clone(),
            outcomes_only: true,
            ..plan::Options::default()
        };
        let superseded = |c: &str| repo.is_descendant(&head_id, c);
        let plan = pipeline::observe_and_plan(
            &prepared,
            target,
            &options,
            &fan,
            pipeline::Verify::PointersOnly,
            &superseded,
        )
        .await
        .map_err(|e| PassError::failed("cannot observe the target", e))?;
        let held: Vec<HeldAccount> = plan
            .accounts
            .iter()
            .filter(|a| a.action == PlanAction::Held)
            .map(|a| HeldAccount {
                account: a.name.clone(),
                note: a.note.clone().unwrap_or_default(),
            })
            .collect();
        self.daemon.update(|s| s.held = held);

        let changes = plan.summary.create + plan.summary.update;
        if changes > 0 && rejected_here {
            self.daemon.update(|s| {
                s.last_error = Some(format!(
                    "{} was rolled back and is not retried: push a fix or a revert",
                    &head_id[..12]
                ));
            });
        }
        let stamp = Stamp {
            applied_by: format!("fleetgate-watch {}", self.settings().identity),
            applied_at: self.daemon.clock.rfc3339(),
        };
        let settings = fleet
            .as_ref()
            .map(|f| f.rollout.clone())
            .unwrap_or_default();
        let change = Change {
            plan: &plan,
            desired: &prepared.desired,
            settings: &settings,
            // A head rolled back before is not retried; holds are still looked after.
            execute: changes > 0 && !rejected_here,
            gates: Gates::Wait,
            // Holds the branch has moved past, on accounts that need no change: lifted, so
            // the next rollback's hold is the only one standing.
            holds: Holds::ReleaseSuperseded(&superseded),
            record_commit: true,
            max_bake: self.settings().max_bake,
            preempt: None,
            reuse_stored: false,
            watch: None,
        };
        self.head_subject = repo.summary(&head_id);
        let report = self
            .roll_out(target, fan, &stamp, change, &holder, &head_id)
            .await?;

        let mut result = "no_change";
        // Accounts the rollout tolerated as failed: retried on the next pass.
        let mut rollout_failed = 0;
        if let Some(report) = report {
            if report.outcome == Outcome::Preempted {
                return Ok(self.preempted(&report, &plan));
            }
            self.carried.clear();
            if let Some(rejected) = self.judge(&report, &head_id, &holder).await {
                return Ok(rejected);
            }
            result = "applied";
            rollout_failed = report.failed();
        }
        // Approved decommissions, once the head's rollout (if any) succeeded: tombstones by
        // compare-and-swap. A conflict or failure is planned again at the next pass.
        if plan.summary.decommission > 0 && !rejected_here {
            for (name, r) in
                crate::ops::decommission::decommission(target, &fan, &plan, &stamp).await
            {
                use crate::ops::decommission::Outcome as D;
                match r {
                    Ok(D::Decommissioned) => {
                        result = "applied";
                        tracing::warn!(account = %name, "decommissioned: its gateways answer 410");
                    }
                    Ok(D::Conflict) => {
                        rollout_failed += 1;
                        tracing::warn!(account = %name, "not decommissioned: its pointer changed since it was read");
                    }
                    Err(e) => {
                        rollout_failed += 1;
                        tracing::error!(account = %name, error = %e, "cannot decommission");
                    }
                }
            }
        }
        let failed = plan.summary.unreachable + rollout_failed;
        if failed == 0 && plan.summary.held == 0 && (changes == 0 || result == "applied") {
            let subject = repo.summary(&head_id);
            self.daemon.update(|s| {
                if s.last_applied.as_ref().is_none_or(|c| c.commit != head_id) {
                    s.last_applied = Some(CommitView {
                        commit: head_id.clone(),
                        subject,
                        at: self.daemon.clock.rfc3339(),
                    });
                }
                s.last_error = None;
            });
        }
        self.check_drift(&repo, &head, target, &fan, fleet.as_ref())
            .await;
        self.daemon.record_requests(target.requests());

        if failed > 0 {
            self.failures += 1;
            return Ok((
                result,
                Next::Requeue(backoff(self.failures, poll.max(Duration::from_secs(5)))),
            ));
        }
        self.failures = 0;
        Ok((result, Next::Requeue(poll)))
    }

    /// The repo, fetched now (read on this task: git2 is not `Sync`), and the branch's head.
    async fn fetch(&mut self) -> Result<(GitRepo, Commit), PassError> {
        let settings = self.settings().clone();
        let repo =
            tokio::task::spawn_blocking(move || GitRepo::open(&settings.repo, &settings.cache_dir))
                .await
                .map_err(|e| PassError::failed("cannot fetch the config repo", e))?
                .map_err(|e| PassError::failed("cannot fetch the config repo", e))?;
        let rev = repo.branch_rev(&self.settings().branch);
        let head = repo
            .resolve(&rev)
            .map_err(|e| PassError::failed("cannot resolve the branch", e))?;
        let head_id = head.id.to_string();
        let subject = repo.summary(&head_id);
        self.daemon.update(|s| {
            if s.head.as_ref().is_none_or(|h| h.commit != head_id) {
                s.head = Some(CommitView {
                    commit: head_id.clone(),
                    subject: subject.clone(),
                    at: self.daemon.clock.rfc3339(),
                });
            }
            if s.queued.as_deref() == Some(head_id.as_str()) {
                s.queued = None;
            }
        });
        Ok((repo, head))
    }

    /// The head's bundles (this shard's accounts); invalid manifests are reported once.
    fn prepare(&mut self, repo: &GitRepo, head: &Commit) -> Result<Prepared, PassError> {
        let head_id = head.id.to_string();
        let mut prepared = match pipeline::prepare(repo, None, head) {
            Ok(p) => p,
            Err(PipelineError::Invalid { diagnostics, .. }) => {
                if self.invalid_head.as_deref() != Some(head_id.as_str()) {
                    for d in &diagnostics {
                        tracing::error!(commit = %head_id, "{d}");
                    }
                    self.invalid_head = Some(head_id.clone());
                }
                self.daemon.update(|s| {
                    s.last_error = Some(format!(
                        "{} has invalid manifests ({} problems): nothing applied; waiting for a fix",
                        &head_id[..12],
                        diagnostics.len()
                    ));
                });
                return Err(PassError::InvalidHead);
            }
            Err(e) => return Err(PassError::failed("cannot render the head", e)),
        };
        if let Some(shard) = self.settings().shard {
            prepared.restrict_to(shard);
        }
        Ok(prepared)
    }

    /// The target, connected once (again when fleet.yaml's access settings change), and
    /// the lease set up next to it.
    async fn connect(
        &mut self,
        prepared: &Prepared,
    ) -> Result<Arc<(Option<FleetSpec>, Connected)>, PassError> {
        if let Some(c) = &self.target
            && same_access(c.0.as_ref(), prepared.fleet.as_ref())
        {
            return Ok(c.clone());
        }
        let settings = self.settings();
        // The daemon applies, so like `apply` it creates a missing file:// root.
        let connected = settings
            .target
            .connect(
                prepared.fleet.as_ref(),
                "watch",
                &settings.access,
                Purpose::Apply,
            )
            .await
            .map_err(|e| PassError::failed("cannot connect to the target", format!("{e:#}")))?;
        if self.lease.is_none() {
            let store = self
                .lease_store(&connected.home, prepared.fleet.as_ref())
                .map_err(|e| PassError::failed("no place for the lease", e))?;
            let holder = Arc::new(LeaseHolder {
                lease: Lease {
                    store,
                    identity: settings.identity.clone(),
                    ttl: settings.lease_ttl,
                    shard: settings.shard.map(|s| s.to_string()),
                },
                guard: tokio::sync::Mutex::new(()),
                held: false.into(),
            });
            self.renewer = Some(spawn_renewer(
                self.daemon.clone(),
                holder.clone(),
                self.stop.clone(),
            ));
            self.lease = Some(holder);
        }
        let c = Arc::new((prepared.fleet.clone(), connected));
        self.target = Some(c.clone());
        Ok(c)
    }

    /// Runs the change through the one reconcile path: the holds step, then the rollout,
    /// serving its live report, which stops where it is if the lease is lost: pointers are
    /// only ever moved by CAS with bundles stored first, so stopping anywhere is safe. While
    /// it runs, the branch is checked on every webhook and poll: a newer head preempts it.
    async fn roll_out(
        &self,
        target: &dyn crate::target::Target,
        fan: FanOut<'_>,
        stamp: &Stamp,
        change: Change<'_>,
        holder: &LeaseHolder,
        head: &str,
    ) -> Result<Option<RolloutReport>, PassError> {
        let (preempt_tx, preempt) = Preempt::channel();
        let notifier = self.daemon.notifier();
        let watch = crate::notify::watch::RolloutWatch::new(
            head,
            self.head_subject.clone(),
            &notifier,
            None,
            Some(&*self.daemon),
        );
        let change = Change {
            preempt: Some(&preempt),
            watch: Some(&watch),
            ..change
        };
        let pass = Reconcile::new(target, fan, stamp, change);
        // Holds the branch has moved past, lifted first: not bound to the lease (each is a
        // compare-and-swap of one pointer, safe whoever holds it).
        let mut released = Vec::new();
        for (name, r) in pass.holds().await {
            match r {
                Ok(_) => {
                    tracing::info!(account = %name, "hold released: the branch moved on");
                    released.push(name);
                }
                Err(e) => tracing::warn!(account = %name, error = %e, "cannot release a hold"),
            }
        }
        if !released.is_empty() {
            let (accounts, accounts_total) = crate::notify::event::bounded(released);
            self.daemon.notify(crate::notify::Event::HoldReleased {
                accounts,
                accounts_total,
                by: format!(
                    "fleetgate-watch {} (the branch moved on)",
                    self.settings().identity
                ),
            });
        }
        if !change.execute {
            return Ok(None);
        }
        let live: Live = Arc::new(Mutex::new(pass.initial_report()));
        lock(&self.daemon.shared).live = Some(live.clone());
        let accounts = change.plan.summary.create + change.plan.summary.update;
        tracing::info!(
            commit = %change.plan.head.commit,
            accounts,
            "rollout starts"
        );

        let lost = async {
            loop {
                tokio::time::sleep(Duration::from_millis(250)).await;
                if !holder.held.load(std::sync::atomic::Ordering::SeqCst) {
                    return;
                }
            }
        };
        let report = tokio::select! {
            r = pass.rollout(&live) => Some(r),
            () = lost => None,
            () = self.watch_branch(head, preempt_tx) => None,
        };
        let snapshot = {
            let mut shared = lock(&self.daemon.shared);
            shared.live = None;
            let snapshot = live
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone();
            shared.status.rollout = Some(report.clone().unwrap_or(snapshot.clone()));
            snapshot
        };
        match report {
            Some(r) => Ok(Some(r)),
            None => {
                let why = "the lease was lost mid-rollout; the new holder carries on";
                watch.interrupted(&snapshot, why);
                Err(PassError::failed("rollout stopped", why))
            }
        }
    }

    /// While a rollout runs: on every webhook and poll interval, the branch's tip; once it
    /// is not `head`, tells the rollout (which stops at its next safe point). Never returns.
    async fn watch_branch(&self, head: &str, preempt: tokio::sync::watch::Sender<Option<String>>) {
        let settings = self.settings().clone();
        loop {
            tokio::select! {
                () = self.daemon.wake.notified() => {}
                () = tokio::time::sleep(settings.poll_interval) => {}
            }
            match branch_tip(&settings).await {
                Ok(tip) if tip != head => {
                    tracing::info!(
                        running = %head,
                        newer = %tip,
                        "the branch moved: the running rollout stops at its next safe point"
                    );
                    self.daemon.update(|s| s.queued = Some(tip.clone()));
                    let _ = preempt.send(Some(tip));
                    break;
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "cannot check the branch during the rollout"),
            }
        }
        std::future::pending::<()>().await;
    }

    /// Records a rollout a newer commit stopped: `/status` says so, the accounts it moved
    /// before their wave was verified are carried into the next plan, and the next pass
    /// starts at once. The commit is not rejected: it was superseded, not judged.
    fn preempted(&mut self, report: &RolloutReport, plan: &Plan) -> Passed {
        let by = lock(&self.daemon.shared)
            .status
            .queued
            .clone()
            .unwrap_or_default();
        let moved = report.moved();
        let carried = report.carried(plan);
        tracing::info!(
            commit = %report.commit,
            by = %by,
            moved = moved.len(),
            carried = carried.len(),
            "rollout preempted"
        );
        self.carried = carried;
        self.daemon.update(|s| {
            s.preempted = Some(Preempted {
                commit: report.commit.clone(),
                by,
                at: self.daemon.clock.rfc3339(),
                moved,
            });
        });
        self.failures = 0;
        ("preempted", Next::Requeue(Duration::ZERO))
    }

    /// Records a finished rollout; a rollout that did not succeed rejects its commit (not
    /// retried until the branch moves on), and the pass ends there.
    async fn judge(
        &mut self,
        report: &RolloutReport,
        head_id: &str,
        holder: &LeaseHolder,
    ) -> Option<Passed> {
        let rolled_back = report.tally().rolled_back;
        self.daemon.metrics.rollbacks.inc_by(rolled_back as u64);
        let outcome = crate::notify::watch::outcome_name(report.outcome);
        tracing::info!(commit = %head_id, outcome, rolled_back, "rollout ends");
        if report.outcome == Outcome::Succeeded {
            return None;
        }
        let reject = Rejected {
            commit: head_id.to_string(),
            reason: report.reason.clone().unwrap_or_else(|| outcome.into()),
        };
        if let Err(e) = holder.hold(&self.daemon, Some(Some(reject.clone()))).await {
            tracing::warn!(error = %e, "cannot record the rejected commit in the lease");
        }
        self.daemon.update(|s| s.rejected = Some(reject));
        self.failures = 0;
        Some(("rolled_back", Next::Requeue(self.settings().poll_interval)))
    }

    /// Drift, when due (and right after start).
    async fn check_drift(
        &mut self,
        repo: &GitRepo,
        head: &Commit,
        target: &dyn crate::target::Target,
        fan: &FanOut<'_>,
        fleet: Option<&FleetSpec>,
    ) {
        let every = self
            .settings()
            .drift_interval
            .or(fleet.map(|f| f.drift.interval.0))
            .unwrap_or(Duration::from_secs(6 * 3600));
        let now = tokio::time::Instant::now();
        if self.next_drift.is_some_and(|t| now < t) {
            return;
        }
        self.next_drift = Some(now + every);
        let depth = fleet.map(|f| f.drift.history_depth as usize).unwrap_or(50);
        match crate::ops::drift::run(repo, head, target, fan, depth).await {
            Ok(mut report) => {
                if let Some(shard) = self.settings().shard {
                    let accounts = std::mem::take(&mut report.accounts)
                        .into_iter()
                        .filter(|a| shard.contains(&a.name))
                        .collect();
                    report = crate::ops::drift::report(
                        &report.repo,
                        report.head.clone(),
                        &report.target,
                        report.history_depth,
                        accounts,
                    );
                }
                let n = report.summary.drifted + report.summary.unreachable;
                self.daemon.metrics.drifted.set(n as i64);
                self.daemon.record_drift_causes(&report);
                self.daemon.notify(drift_event(&report));
                tracing::info!(
                    drifted = report.summary.drifted,
                    unreachable = report.summary.unreachable,
                    orphaned = report.summary.orphaned,
                    "drift report"
                );
                self.daemon.update(|s| s.drift = Some(report));
            }
            Err(e) => tracing::warn!(error = %e, "drift check failed"),
        }
    }

    fn lease_store(
        &self,
        home: &Home,
        fleet: Option<&FleetSpec>,
    ) -> Result<Box<dyn LeaseStore>, String> {
        let name = lease_name(self.settings().shard);
        match home {
            Home::Dir(root) => Ok(Box::new(FileLeaseStore {
                path: root.join(".fleetgate").join(name),
            })),
            Home::Hub(s3) => {
                let bucket = self
                    .settings()
                    .state_bucket
                    .clone()
                    .or_else(|| fleet.and_then(|f| f.state_bucket.clone()))
                    .ok_or_else(|| {
                        "--target aws needs the hub's state bucket for the lease: fleet.yaml's stateBucket or --state-bucket".to_string()
                    })?;
                Ok(Box::new(S3LeaseStore {
                    s3: s3.clone(),
                    bucket,
                    key: format!("fleetgate/leases/{name}"),
                }))
            }
        }
    }
}

/// A drift report as a notification: found (the accounts and causes) or cleared.
fn drift_event(report: &crate::ops::drift::DriftReport) -> crate::notify::Event {
    use crate::ops::drift::DriftStatus;
    let off: Vec<&crate::ops::drift::AccountDrift> = report
        .accounts
        .iter()
        .filter(|a| matches!(a.status, DriftStatus::Drifted | DriftStatus::Unreachable))
        .collect();
    if off.is_empty() {
        return crate::notify::Event::DriftCleared {
            commit: report.head.commit.clone(),
        };
    }
    crate::notify::Event::DriftFound {
        commit: report.head.commit.clone(),
        accounts: off
            .iter()
            .take(crate::notify::event::MAX_NAMED_ACCOUNTS)
            .map(|a| crate::notify::DriftedAccount {
                account: a.name.clone(),
                cause: a
                    .cause
                    .clone()
                    .unwrap_or_else(|| a.status.as_str().to_string()),
            })
            .collect(),
        drifted_total: report.summary.drifted,
        unreachable_total: report.summary.unreachable,
        fingerprint: crate::notify::event::drift_fingerprint(off.iter().map(|a| {
            (
                a.name.as_str(),
                a.cause_kind
                    .map(crate::daemon::http::cause_label)
                    .unwrap_or(a.status.as_str()),
            )
        })),
    }
}

/// The tracked branch's tip now: the repo fetched (a remote) or read (a local path) on a
/// blocking thread, as a pass does.
async fn branch_tip(settings: &Settings) -> anyhow::Result<String> {
    let (location, cache, branch) = (
        settings.repo.clone(),
        settings.cache_dir.clone(),
        settings.branch.clone(),
    );
    tokio::task::spawn_blocking(move || {
        let repo = GitRepo::open(&location, &cache)?;
        Ok(repo.resolve(&repo.branch_rev(&branch))?.id.to_string())
    })
    .await?
}

/// Whether two fleet.yaml's reach accounts the same way (a change means reconnecting).
fn same_access(a: Option<&FleetSpec>, b: Option<&FleetSpec>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => {
            a.role_name == b.role_name
                && a.external_id == b.external_id
                && a.session_duration == b.session_duration
                && a.hub_region == b.hub_region
        }
        (None, None) => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::target::connect::TargetSpec;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let max = Duration::from_secs(300);
        let waits: Vec<u64> = (1..=9).map(|n| backoff(n, max).as_secs()).collect();
        assert_eq!(waits, [5, 10, 20, 40, 80, 160, 300, 300, 300]);
    }

    /// A bare-bones git repo in `dir` whose `main` holds `files`, committed in-process.
    fn commit(dir: &std::path::Path, files: &crate::MemSource, subject: &str) -> String {
        let repo = git2::Repository::open(dir)
            .or_else(|_| git2::Repository::init(dir))
            .unwrap();
        // Nested paths go through an index built in memory (no working tree).
        let mut index = git2::Index::new().unwrap();
        for (path, bytes) in &files.files {
            let oid = repo.blob(bytes).unwrap();
            let entry = git2::IndexEntry {
                ctime: git2::IndexTime::new(0, 0),
                mtime: git2::IndexTime::new(0, 0),
                dev: 0,
                ino: 0,
                mode: 0o100644,
                uid: 0,
                gid: 0,
                file_size: bytes.len() as u32,
                id: oid,
                flags: 0,
                flags_extended: 0,
                path: path.as_bytes().to_vec(),
            };
            index.add(&entry).unwrap();
        }
        let tree = repo.find_tree(index.write_tree_to(&repo).unwrap()).unwrap();
        let sig = git2::Signature::new("t", "t@example.com", &git2::Time::new(0, 0)).unwrap();
        let parent = repo
            .find_reference("refs/heads/main")
            .ok()
            .and_then(|r| r.peel_to_commit().ok());
        let parents: Vec<&git2::Commit<'_>> = parent.iter().collect();
        let id = repo
            .commit(
                Some("refs/heads/main"),
                &sig,
                &sig,
                subject,
                &tree,
                &parents,
            )
            .unwrap();
        id.to_string()
    }

    fn settings(repo: &std::path::Path, fleet: &std::path::Path) -> Settings {
        Settings {
            repo: repo.display().to_string(),
            branch: "main".into(),
            cache_dir: repo.join(".cache"),
            target: TargetSpec::File(fleet.display().to_string()),
            access: Default::default(),
            poll_interval: Duration::from_secs(7),
            drift_interval: None,
            shard: None,
            identity: "unit".into(),
            lease_ttl: Duration::from_secs(30),
            state_bucket: None,
            webhook_secret: None,
            concurrency: None,
            account_timeout: Duration::from_secs(30),
            max_backoff: Duration::from_secs(60),
            max_bake: Some(Duration::ZERO),
        }
    }

    /// The daemon's pass, in-process: a first rollout whose canary has no gateway fails
    /// its gate (the example's canary wave says `noGateway: fail`), is rolled back, and
    /// its commit is rejected; the next pass does not retry it; an invalid head is waited
    /// out at the poll interval. No gateway, git or daemon process.
    #[tokio::test]
    async fn a_rejected_head_is_not_retried_and_an_invalid_head_waits_for_a_fix() {
        let tmp = tempfile::tempdir().unwrap();
        let (repo_dir, fleet_dir) = (tmp.path().join("repo"), tmp.path().join("fleet"));
        std::fs::create_dir_all(&repo_dir).unwrap();
        let head = commit(
            &repo_dir,
            &crate::config::example_fleet::example_repo(),
            "the example",
        );
        let daemon = Daemon::new(settings(&repo_dir, &fleet_dir));
        let (_stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let mut looper = Looper::new(daemon.clone(), stop_rx);

        let (result, Next::Requeue(after)) = looper.pass().await;
        assert_eq!(result, "rolled_back");
        assert_eq!(after, Duration::from_secs(7));
        let status = daemon.status();
        assert_eq!(
            status.rejected.as_ref().map(|r| r.commit.as_str()),
            Some(head.as_str())
        );
        let rollout = status.rollout.expect("the rollout is recorded");
        assert_ne!(rollout.outcome, Outcome::Succeeded, "{rollout:#?}");

        let (result, _) = looper.pass().await;
        assert_eq!(result, "no_change", "a rejected head is not retried");
        assert!(
            daemon
                .status()
                .last_error
                .is_some_and(|e| e.contains("is not retried")),
        );

        let mut broken = crate::config::example_fleet::example_repo();
        broken.insert("fleet.yaml", "apiVersion: fleetgate.dev/v1\nkind: Fleet\n");
        commit(&repo_dir, &broken, "broken");
        let (result, Next::Requeue(after)) = looper.pass().await;
        assert_eq!((result, after), ("error", Duration::from_secs(7)));
        assert!(
            daemon
                .status()
                .last_error
                .is_some_and(|e| e.contains("invalid manifests")),
        );
        if let Some(r) = looper.renewer.take() {
            r.abort();
        }
    }
}
