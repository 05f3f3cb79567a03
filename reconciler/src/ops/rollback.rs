//! `fleetgate rollback`: accounts back to the bundles of an earlier commit (or a digest
//! already stored there), through the one reconcile path with a hold, so the watch daemon
//! does not roll them forward until the branch moves on or `fleetgate release`.

use std::collections::BTreeMap;

use fleetgate_bundle::Digest;

use crate::config::repo::Repo;
use crate::execute::Stamp;
use crate::execute::rollout::{Live, Outcome, RolloutReport, Watch};
use crate::git::history::History;
use crate::ops::pipeline;
use crate::ops::reconcile::{Change, Gates, Holds, Reconcile};
use crate::plan::{self, Desired, Plan, Revision};
use crate::render::render;
use crate::target::{AccountRef, FanOut, Hold, Target, TargetError, observe_pointers};

/// What to roll back to, and how.
#[derive(Debug, Clone)]
pub struct RollbackRequest {
    /// A commit (sha, tag, `HEAD~1`) or a bundle digest (`sha256:<hex>`).
    pub to: String,
    /// The tracked branch's head: the hold lasts until the branch moves past it.
    pub branch_head: String,
    /// Why, recorded in the hold.
    pub reason: String,
    /// Wave by wave with health gates, as apply does; else all at once, no gate.
    pub waves: bool,
    /// Record a hold (the default).
    pub hold: bool,
}

/// What a rollback did.
#[derive(Debug)]
pub struct RollbackReport {
    /// What the accounts went back to: the commit, or the digest.
    pub to: Revision,
    pub plan: Plan,
    pub rollout: RolloutReport,
    /// Accounts that cannot go back (not in the repo then, does not render, bundle not
    /// stored), each message naming its account.
    pub refused: Vec<String>,
    /// Whether a hold was recorded.
    pub held: bool,
    /// Accounts already at the bundle that got the hold.
    pub held_in_place: usize,
    /// Accounts whose hold could not be recorded.
    pub hold_failures: Vec<String>,
}

impl RollbackReport {
    /// Every selected account could go back and did.
    pub fn succeeded(&self) -> bool {
        self.rollout.outcome == Outcome::Succeeded
            && self.rollout.failed()
                + self.refused.len()
                + self.hold_failures.len()
                + self.plan.summary.unreachable
                == 0
    }
}

/// Where each account goes back to: its bundle, or why it cannot.
#[derive(Debug)]
pub struct Targets {
    pub to: Revision,
    pub desired: Vec<Desired>,
    pub refused: Vec<String>,
    /// Whether the pointers record the commit (not for a digest).
    pub record_commit: bool,
}

/// Works out each account's bundle at `to`: a digest already stored in the account, or the
/// commit's render.
pub async fn targets(
    repo: &dyn History,
    to: &str,
    accounts: &[AccountRef],
    target: &dyn Target,
    fan: &FanOut<'_>,
) -> anyhow::Result<Targets> {
    let mut refused: Vec<String> = Vec::new();
    let mut desired: Vec<Desired> = Vec::new();
    if let Some(hex) = to.strip_prefix("sha256:") {
        let digest: Digest = format!("sha256:{hex}")
            .parse()
            .map_err(|e| anyhow::anyhow!("--to {to}: {e}"))?;
        let read = fan
            .run(
                "read bundle",
                accounts.iter(),
                |a| a,
                |a| {
                    let digest = digest.clone();
                    async move { target.read_bundle(a, &digest).await }
                },
            )
            .await;
        let by_name: BTreeMap<&str, &AccountRef> =
            accounts.iter().map(|a| (a.name.as_str(), a)).collect();
        for (name, r) in read {
            match r {
                Ok(Some(bundle)) => desired.push(Desired::new(
                    by_name[name.as_str()].clone(),
                    &bundle,
                    &bundle.canonical_json(),
                    digest.clone(),
                )),
                Ok(None) => refused.push(format!(
                    "{name}: bundle {digest} is not stored there; roll back to a commit instead"
                )),
                Err(e) => refused.push(e.to_string()),
            }
        }
        return Ok(Targets {
            to: Revision {
                rev: to.to_string(),
                commit: digest.to_string(),
            },
            desired,
            refused,
            record_commit: false,
        });
    }
    let commit = repo.resolve(to)?;
    let old = Repo::load(&*repo.snapshot(&commit)?);
    for a in accounts {
        if !old.accounts.contains_key(&a.name) {
            refused.push(format!(
                "{}: not in the repo at {to} ({}): nothing to roll back to",
                a.name,
                commit.short()
            ));
            continue;
        }
        match render(&old, &a.name) {
            Ok(r) => desired.push(Desired::new(a.clone(), &r.bundle, &r.canonical, r.digest)),
            Err(errs) => refused.push(format!(
                "{}: does not render at {to} ({}): {}",
                a.name,
                commit.short(),
                errs.first().map(ToString::to_string).unwrap_or_default()
            )),
        }
    }
    Ok(Targets {
        to: Revision {
            rev: to.to_string(),
            commit: commit.id.to_string(),
        },
        desired,
        refused,
        record_commit: true,
    })
}

/// Rolls the accounts of `targets` back: observes them, plans (holds ignored: a rollback
/// overrides the last one), and runs the one reconcile path with the hold.
#[allow(clippy::too_many_arguments)] // each is one of the operation's inputs
pub async fn rollback(
    repo_location: &str,
    config: &Repo,
    targets: Targets,
    request: &RollbackRequest,
    target: &dyn Target,
    fan: FanOut<'_>,
    stamp: &Stamp,
    redaction_key: Vec<u8>,
    watch: Option<&dyn Watch>,
) -> RollbackReport {
    let Targets {
        to,
        desired,
        refused,
        record_commit,
    } = targets;
    let refs: Vec<AccountRef> = desired.iter().map(|d| d.account.clone()).collect();
    let wanted: BTreeMap<String, Digest> = desired
        .iter()
        .map(|d| (d.account.name.clone(), d.digest.clone()))
        .collect();
    // Pointers only: a rollback shows no diff, and checks each bundle it points at when
    // it moves the pointer (the executor's `stored_first`).
    let observed = observe_pointers(target, &refs, &wanted, &fan).await;
    let (waves, concurrency, wave_of) = pipeline::rollout_order(config);
    let context = plan::Context {
        repo: repo_location.to_string(),
        base: None,
        head: to.clone(),
        target: target.location(),
        fleet: config.account_names().map(str::to_string).collect(),
        deployed: Default::default(),
        decommission: Default::default(),
        rendered: plan::RenderCounts {
            base: 0,
            head: desired.len(),
        },
        // All at once unless asked: one wave of the fleet's concurrency, no gate.
        waves: if request.waves { waves } else { Vec::new() },
        concurrency,
        wave_of: if request.waves {
            wave_of
        } else {
            Default::default()
        },
    };
    let options = plan::Options {
        redaction_key,
        outcomes_only: true,
        ignore_holds: true,
        ..plan::Options::default()
    };
    let plan = plan::plan(&context, &desired, &observed, &options);
    let hold = request.hold.then(|| Hold {
        by: stamp.applied_by.clone(),
        at: stamp.applied_at.clone(),
        reason: request.reason.clone(),
        to: if record_commit {
            format!("{} ({})", request.to, &to.commit[..12])
        } else {
            request.to.clone()
        },
        branch_head: Some(request.branch_head.clone()),
    });
    let settings = config
        .fleet
        .as_ref()
        .map(|f| f.spec.rollout.clone())
        .unwrap_or_default();
    let change = Change {
        plan: &plan,
        desired: &desired,
        settings: &settings,
        execute: true,
        gates: if request.waves {
            Gates::Wait
        } else {
            Gates::Skip
        },
        holds: hold.as_ref().map_or(Holds::Keep, Holds::Set),
        record_commit,
        max_bake: None,
        preempt: None,
        reuse_stored: true,
        watch,
    };
    let pass = Reconcile::new(target, fan, stamp, change);
    let live: Live = std::sync::Arc::new(std::sync::Mutex::new(pass.initial_report()));
    let done = pass.run(&live).await;
    let (held_in_place, hold_failures) = count_holds(done.holds);
    let rollout = done.report.unwrap_or_else(|| pass.initial_report());
    RollbackReport {
        to,
        plan,
        rollout,
        refused,
        held: hold.is_some(),
        held_in_place,
        hold_failures,
    }
}

/// Holds recorded, and the accounts where recording failed.
fn count_holds(results: Vec<(String, Result<bool, TargetError>)>) -> (usize, Vec<String>) {
    let mut held = 0;
    let mut failed = Vec::new();
    for (name, r) in results {
        match r {
            Ok(_) => held += 1,
            Err(e) => failed.push(format!("{name}: cannot record the hold: {e}")),
        }
    }
    (held, failed)
}
