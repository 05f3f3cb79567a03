//! Decommissioning: each account fleet.yaml's `offboarding.decommission` approves gets a
//! tombstone pointer, written by compare-and-swap over the pointer the plan read, keeping
//! its digest (so `fleetgate rollback` can restore the bundle until the account is erased).

use fleetgate_bundle::pointer::Decommissioned;

use crate::execute::Stamp;
use crate::plan::{DecommissionAction, Plan};
use crate::target::{FanOut, Target, TargetError};

/// What became of one approved account.
#[derive(Debug)]
pub enum Outcome {
    /// Its tombstone was written.
    Decommissioned,
    /// Its pointer changed since the plan read it: nothing written (the next pass plans it
    /// again).
    Conflict,
}

/// Writes the tombstones the plan calls for (action `decommission`); one result per account.
pub async fn decommission(
    target: &dyn Target,
    fan: &FanOut<'_>,
    plan: &Plan,
    stamp: &Stamp,
) -> Vec<(String, Result<Outcome, TargetError>)> {
    let todo: Vec<_> = plan
        .decommissions
        .iter()
        .filter(|d| d.action == DecommissionAction::Decommission)
        .filter_map(|d| Some((d, d.account.as_ref()?, d.expected.as_ref()?)))
        .collect();
    let commit = plan.head.commit.clone();
    let mut results = fan
        .run(
            "decommission",
            todo.iter(),
            |t| t.1,
            |&(d, account, expected)| {
                let commit = commit.clone();
                async move {
                    let mut pointer = expected.pointer.clone();
                    pointer.previous = Some(pointer.digest.clone());
                    pointer.applied_by = stamp.applied_by.clone();
                    pointer.applied_at = stamp.applied_at.clone();
                    // A hold would pin a bundle the account no longer serves.
                    pointer.hold = None;
                    pointer.decommissioned = Some(Decommissioned {
                        at: stamp.applied_at.clone(),
                        by: stamp.applied_by.clone(),
                        commit: Some(commit),
                        tenant: Some(d.tenant.clone()),
                        reason: d.reason.clone(),
                    });
                    match target
                        .write_pointer(account, &pointer, Some(&expected.etag))
                        .await
                    {
                        Ok(_) => Ok(Outcome::Decommissioned),
                        Err(TargetError::Conflict { .. }) => Ok(Outcome::Conflict),
                        Err(e) => Err(e),
                    }
                }
            },
        )
        .await;
    results.sort_by(|a, b| a.0.cmp(&b.0));
    results
}
