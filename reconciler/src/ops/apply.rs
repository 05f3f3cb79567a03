//! `fleetgate apply`: the head, planned against the target and rolled out by the one
//! reconcile path ([`crate::ops::reconcile`]).

use std::sync::{Arc, Mutex};

use crate::execute::Stamp;
use crate::execute::rollout::{Outcome, RolloutReport, Tally, Watch};
use crate::ops::pipeline::{self, PipelineError, Prepared};
use crate::ops::reconcile::{Change, Gates, Holds, Reconcile};
use crate::plan::{self, Plan};
use crate::target::{FanOut, Target};

/// How to apply.
#[derive(Debug, Clone, Copy)]
pub struct ApplyOptions<'a> {
    pub gates: Gates,
    /// No waves at all: every account at once, and one account's failure stops nothing.
    pub all_at_once: bool,
    /// Apply even where an account runs a newer commit of the repo than the head (a move
    /// back, which is `fleetgate rollback`'s job: it records a hold).
    pub allow_backwards: bool,
    /// Hears of each account's outcome as it happens.
    pub watch: Option<&'a dyn Watch>,
}

/// What an apply did.
#[derive(Debug)]
pub struct ApplyReport {
    pub plan: Plan,
    pub rollout: RolloutReport,
    /// The tombstones written (after a rollout that succeeded), one result per account the
    /// plan decommissions.
    pub decommissioned: Vec<(
        String,
        Result<crate::ops::decommission::Outcome, crate::target::TargetError>,
    )>,
}

impl ApplyReport {
    pub fn tally(&self) -> Tally {
        self.rollout.tally()
    }

    /// Whether every account that needed the head has it, and every approved decommission
    /// is written.
    pub fn succeeded(&self) -> bool {
        self.rollout.outcome == Outcome::Succeeded
            && self.rollout.failed() == 0
            && self.plan.summary.unreachable == 0
            && self.decommissioned.len() == self.plan.summary.decommission
            && self
                .decommissioned
                .iter()
                .all(|(_, r)| matches!(r, Ok(crate::ops::decommission::Outcome::Decommissioned)))
    }
}

/// The accounts a plan would move back: updates of accounts whose pointer records a commit
/// `newer` than the head (a descendant of it), with that commit.
pub fn backwards(plan: &Plan, newer: &dyn Fn(&str) -> bool) -> Vec<(String, String)> {
    plan.accounts
        .iter()
        .filter(|a| a.action == plan::Action::Update)
        .filter_map(|a| {
            let commit = a.expected.as_ref()?.pointer.commit.as_deref()?;
            (commit != plan.head.commit && newer(commit))
                .then(|| (a.name.clone(), commit.to_string()))
        })
        .collect()
}

/// Plans `prepared` against `target` and rolls it out. `superseded(commit)`: whether the
/// branch has moved past a commit (holds recorded there are over); `newer(commit)`: whether a
/// commit descends from the head (an account there would be moved back).
#[allow(clippy::too_many_arguments)] // the operation's inputs, one each
pub async fn apply(
    mut prepared: Prepared,
    target: &dyn Target,
    fan: FanOut<'_>,
    stamp: &Stamp,
    plan_options: &plan::Options,
    options: ApplyOptions<'_>,
    superseded: &dyn Fn(&str) -> bool,
    newer: &dyn Fn(&str) -> bool,
) -> Result<ApplyReport, PipelineError> {
    if options.all_at_once {
        prepared.context.waves.clear();
        prepared.context.wave_of.clear();
    }
    // Apply reads pointers only: it prints outcomes, not diffs (that is `plan`'s job), and
    // tampered bundles are drift's.
    let plan = pipeline::observe_and_plan(
        &prepared,
        target,
        plan_options,
        &fan,
        pipeline::Verify::PointersOnly,
        superseded,
    )
    .await?;
    let back = backwards(&plan, newer);
    if !back.is_empty() && !options.allow_backwards {
        return Err(PipelineError::Backwards {
            rev: plan.head.rev.clone(),
            commit: plan.head.commit.clone(),
            accounts: back,
        });
    }
    let settings = prepared
        .fleet
        .as_ref()
        .map(|f| f.rollout.clone())
        .unwrap_or_default();
    let change = Change {
        plan: &plan,
        desired: &prepared.desired,
        settings: &settings,
        execute: true,
        gates: options.gates,
        holds: Holds::Keep,
        record_commit: true,
        max_bake: None,
        preempt: None,
        reuse_stored: false,
        watch: options.watch,
    };
    let fan_again = fan;
    let pass = Reconcile::new(target, fan, stamp, change);
    let live = Arc::new(Mutex::new(pass.initial_report()));
    let rollout = pass
        .run(&live)
        .await
        .report
        .unwrap_or_else(|| pass.initial_report());
    // Decommissions after the rollout, and only when it succeeded: a change rolled back is
    // not applied in part.
    let decommissioned = if rollout.outcome == Outcome::Succeeded {
        crate::ops::decommission::decommission(target, &fan_again, &plan, stamp).await
    } else {
        Vec::new()
    };
    Ok(ApplyReport {
        plan,
        rollout,
        decommissioned,
    })
}
