//! The one code path that changes deployed state. `fleetgate apply` runs it once,
//! `fleetgate rollback` runs it with a hold, and `fleetgate watch` runs it on every pass.
//!
//! A pass, given a plan, has two steps:
//! - **rollout**: the plan's creates and updates, wave by wave with health gates, by the
//!   one [`Executor`], every pointer written by compare-and-swap against the version the
//!   plan observed ([`crate::plan::AccountPlan::expected`]);
//! - **holds** on the accounts the plan leaves as they are: the daemon lifts the holds its
//!   branch has moved past (before its rollout), a rollback holds them too, so none is
//!   rolled forward (after its rollout).

use std::time::Duration;

use crate::config::manifest::RolloutSpec;
use crate::execute::rollout::{Executor, Live, RolloutReport, Watch};
use crate::execute::{Preempt, Stamp};
use crate::ops::holds::set_holds;
use crate::plan::{Action, Desired, Plan};
use crate::target::{AccountRef, FanOut, Hold, Target, TargetError};

/// Whether each wave waits for its gateways.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gates {
    /// Health gate and bake after each wave.
    Wait,
    /// Waves still go in order, but nothing waits (`--skip-health-gates`, a rollback
    /// without `--waves`).
    Skip,
}

/// What a pass does about rollback holds.
#[derive(Clone, Copy)]
pub enum Holds<'a> {
    /// Leaves them as they are (`fleetgate apply`).
    Keep,
    /// Writes this hold into every pointer the rollout writes and onto the accounts already
    /// at the plan's bundle (`fleetgate rollback`).
    Set(&'a Hold),
    /// Lifts the holds of unchanged accounts that were recorded at a branch head the branch
    /// has since moved past (the watch daemon): `superseded(head)` says so.
    ReleaseSuperseded(&'a dyn Fn(&str) -> bool),
}

impl std::fmt::Debug for Holds<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Holds::Keep => f.write_str("Keep"),
            Holds::Set(h) => f.debug_tuple("Set").field(h).finish(),
            Holds::ReleaseSuperseded(_) => f.write_str("ReleaseSuperseded"),
        }
    }
}

/// A change to deployed state: the plan to follow and how.
#[derive(Debug, Clone, Copy)]
pub struct Change<'a> {
    pub plan: &'a Plan,
    /// The bundles the plan's accounts go to.
    pub desired: &'a [Desired],
    /// fleet.yaml's rollout settings (gates, bakes, rollback scope).
    pub settings: &'a RolloutSpec,
    /// `false`: the holds step only (a head the daemon does not retry).
    pub execute: bool,
    pub gates: Gates,
    pub holds: Holds<'a>,
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
    /// Hears of each account's outcome and each wave's end as they happen.
    pub watch: Option<&'a dyn Watch>,
}

/// What a pass did.
#[derive(Debug)]
pub struct Reconciled {
    /// The rollout's report; `None` when the change was not executed.
    pub report: Option<RolloutReport>,
    /// One entry per account whose hold the pass set or lifted (or failed to): whether
    /// anything was written.
    pub holds: Vec<(String, Result<bool, TargetError>)>,
}

/// A pass, ready to run: its rollout report can be shown before it starts.
#[derive(Debug)]
pub struct Reconcile<'a> {
    change: Change<'a>,
    executor: Executor<'a>,
}

impl<'a> Reconcile<'a> {
    /// The one place a rollout [`Executor`] is built.
    pub fn new(
        target: &'a dyn Target,
        fan: FanOut<'a>,
        stamp: &'a Stamp,
        change: Change<'a>,
    ) -> Reconcile<'a> {
        let executor = Executor {
            target,
            plan: change.plan,
            desired: change.desired,
            stamp,
            settings: change.settings,
            fan,
            skip_gates: change.gates == Gates::Skip,
            hold: match change.holds {
                Holds::Set(h) => Some(h.clone()),
                Holds::Keep | Holds::ReleaseSuperseded(_) => None,
            },
            record_commit: change.record_commit,
            max_bake: change.max_bake,
            preempt: change.preempt,
            reuse_stored: change.reuse_stored,
            watch: change.watch,
        };
        Reconcile { change, executor }
    }

    /// The rollout's report before it starts: every wave pending.
    pub fn initial_report(&self) -> RolloutReport {
        self.executor.initial_report()
    }

    /// Runs the pass; `live` follows the rollout as it goes. Holds a pass lifts are lifted
    /// before its rollout; a hold it sets (a rollback's) is set on the accounts already
    /// there once the rollout has moved the others.
    pub async fn run(&self, live: &Live) -> Reconciled {
        let setting = matches!(self.change.holds, Holds::Set(_));
        let mut holds = if setting {
            Vec::new()
        } else {
            self.holds().await
        };
        let report = if self.change.execute {
            Some(self.rollout(live).await)
        } else {
            None
        };
        if setting {
            holds = self.holds().await;
        }
        Reconciled { report, holds }
    }

    /// The rollout step alone: the plan's creates and updates, wave by wave (the daemon
    /// runs it against its lease, after [`Reconcile::holds`]).
    pub async fn rollout(&self, live: &Live) -> RolloutReport {
        self.executor.run(live).await
    }

    /// The holds step, on the accounts the plan leaves as they are: one entry per account
    /// whose hold it set or lifted (or failed to).
    pub async fn holds(&self) -> Vec<(String, Result<bool, TargetError>)> {
        let plan = self.change.plan;
        let unchanged = plan
            .accounts
            .iter()
            .filter(|a| a.action == Action::NoChange);
        let (hold, accounts, what): (Option<&Hold>, Vec<&AccountRef>, &str) =
            match self.change.holds {
                Holds::Keep => return Vec::new(),
                Holds::Set(hold) => (Some(hold), self.refs(unchanged), "hold"),
                Holds::ReleaseSuperseded(superseded) => {
                    let stale = unchanged.filter(|a| {
                        a.expected
                            .as_ref()
                            .and_then(|e| e.pointer.hold.as_ref())
                            .and_then(|h| h.branch_head.as_deref())
                            .is_some_and(superseded)
                    });
                    (None, self.refs(stale), "release")
                }
            };
        let e = &self.executor;
        set_holds(e.target, &e.fan, what, accounts, hold, e.stamp).await
    }

    /// The accounts' references, in the plan's order.
    fn refs<'p>(
        &self,
        accounts: impl Iterator<Item = &'p crate::plan::AccountPlan>,
    ) -> Vec<&'a AccountRef> {
        let by_name: std::collections::BTreeMap<&str, &'a AccountRef> = self
            .change
            .desired
            .iter()
            .map(|d| (d.account.name.as_str(), &d.account))
            .collect();
        accounts
            .filter_map(|a| by_name.get(a.name.as_str()).copied())
            .collect()
    }
}
