//! `fleetgate apply`: the head, planned against the target and rolled out by the one
//! reconcile path ([`crate::ops::reconcile`]).

use std::sync::{Arc, Mutex};

use crate::execute::Stamp;
use crate::execute::rollout::{Outcome, RolloutReport, Tally};
use crate::ops::pipeline::{self, PipelineError, Prepared};
use crate::ops::reconcile::{Change, Gates, Holds, Reconcile};
use crate::plan::{self, Plan};
use crate::target::{FanOut, Target};

/// How to apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApplyOptions {
    pub gates: Gates,
    /// No waves at all: every account at once, and one account's failure stops nothing.
    pub all_at_once: bool,
}

/// What an apply did.
#[derive(Debug)]
pub struct ApplyReport {
    pub plan: Plan,
    pub rollout: RolloutReport,
}

impl ApplyReport {
    pub fn tally(&self) -> Tally {
        self.rollout.tally()
    }

    /// Whether every account that needed the head has it.
    pub fn succeeded(&self) -> bool {
        self.rollout.outcome == Outcome::Succeeded
            && self.rollout.failed() == 0
            && self.plan.summary.unreachable == 0
    }
}

/// Plans `prepared` against `target` and rolls it out. `superseded(commit)`: whether the
/// branch has moved past a commit (holds recorded there are over).
pub async fn apply(
    mut prepared: Prepared,
    target: &dyn Target,
    fan: FanOut<'_>,
    stamp: &Stamp,
    plan_options: &plan::Options,
    options: ApplyOptions,
    superseded: &dyn Fn(&str) -> bool,
) -> Result<ApplyReport, PipelineError> {
    if options.all_at_once {
        prepared.context.waves.clear();
        prepared.context.wave_of.clear();
    }
    // Apply reads bundles only where it will replace them; drift checks the rest.
    let (plan, _) = pipeline::observe_and_plan(
        &prepared,
        target,
        plan_options,
        &fan,
        pipeline::Verify::Pointers,
        superseded,
    )
    .await?;
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
    };
    let pass = Reconcile::new(target, fan, stamp, change);
    let live = Arc::new(Mutex::new(pass.initial_report()));
    let rollout = pass
        .run(&live)
        .await
        .report
        .unwrap_or_else(|| pass.initial_report());
    Ok(ApplyReport { plan, rollout })
}
