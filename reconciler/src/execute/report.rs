//! The rollout's report, as it goes and when it ends: what the CLI prints, the daemon
//! serves in `/status`, and `apply --report` writes.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use serde::Serialize;

use crate::plan::{Carried, Plan};
use crate::target::ErrorClass;

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
    /// The remote target's calls, retries, throttles and timeouts during the run (the
    /// command fills it in).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requests: Option<crate::target::RequestStats>,
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
    /// A newer commit landed: stopped at a safe point; the accounts it moved are the next
    /// rollout's (verified again in their waves, rolled back with it).
    Preempted,
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
    /// Not started: an earlier wave failed, or a newer commit preempted the rollout.
    NotStarted,
    /// Stopped by a newer commit while it applied, verified or baked.
    Preempted,
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
    /// For [`AccountState::Conflict`]: what observing the account again found (the report's
    /// documents say it in `detail`).
    #[serde(skip)]
    pub conflict: Option<Conflict>,
}

/// How many accounts of a rollout ended how.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    /// Pointers written where there was none.
    pub created: usize,
    /// Pointers moved from another bundle.
    pub updated: usize,
    pub conflicts: usize,
    /// Conflicts whose account still needs the head.
    pub still_needed: usize,
    pub failed: usize,
    pub rolled_back: usize,
    pub skipped: usize,
}

impl RolloutReport {
    /// Counts the accounts by how they ended.
    pub fn tally(&self) -> Tally {
        let mut t = Tally::default();
        for a in self.waves.iter().flat_map(|w| w.accounts.values()) {
            match a.state {
                AccountState::Applied | AccountState::Serving | AccountState::Healthy => {
                    if a.from.is_none() {
                        t.created += 1;
                    } else {
                        t.updated += 1;
                    }
                }
                AccountState::Conflict => {
                    t.conflicts += 1;
                    if matches!(a.conflict, Some(Conflict::StillNeeded | Conflict::Unknown)) {
                        t.still_needed += 1;
                    }
                }
                AccountState::Failed => t.failed += 1,
                AccountState::RolledBack => t.rolled_back += 1,
                AccountState::Skipped => t.skipped += 1,
                AccountState::Pending => {}
            }
        }
        t
    }

    /// Scrubs the texts a reader sees: why accounts failed or were skipped, why the
    /// rollout stopped (a target's error may quote a URL with its credentials).
    pub fn scrub(&mut self, key: &[u8]) {
        crate::redact::scrub_opt(&mut self.reason, key);
        for wave in &mut self.waves {
            for account in wave.accounts.values_mut() {
                crate::redact::scrub_opt(&mut account.detail, key);
            }
        }
    }

    /// The accounts whose pointer this rollout moved (and did not move back).
    pub fn moved(&self) -> Vec<String> {
        self.accounts()
            .filter(|(_, a)| a.state.moved())
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// After a preempted rollout: the accounts it moved whose wave had not passed its bake,
    /// for the next plan ([`crate::plan::Options::carried`]), each with the pointer it had
    /// before (`plan` is the plan this rollout followed; an account it carried already
    /// keeps the pointer from before the first preempted rollout).
    pub fn carried(&self, plan: &Plan) -> BTreeMap<String, Carried> {
        let planned: BTreeMap<&str, &crate::plan::AccountPlan> =
            plan.accounts.iter().map(|a| (a.name.as_str(), a)).collect();
        self.accounts()
            .filter(|(_, a)| matches!(a.state, AccountState::Applied | AccountState::Serving))
            .filter_map(|(name, a)| {
                let before = planned.get(name.as_str())?.before();
                Some((
                    name.clone(),
                    Carried {
                        moved_to: a.to.parse().ok()?,
                        commit: self.commit.clone(),
                        before,
                    },
                ))
            })
            .collect()
    }

    fn accounts(&self) -> impl Iterator<Item = (&String, &AccountReport)> {
        self.waves.iter().flat_map(|w| &w.accounts)
    }

    /// Failed accounts the waves counted against their tolerance (conflicts that still
    /// need the head included).
    pub fn failed(&self) -> usize {
        self.waves.iter().map(|w| w.failed).sum()
    }
}

/// A lost compare-and-swap, observed again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Conflict {
    /// Another applier deployed the same bundle: nothing to do, not a failure.
    AtHead,
    /// The account still needs the head: a failure until the next apply re-plans it.
    StillNeeded,
    /// Reading it again failed: whether it converged is not known, a failure.
    Unknown,
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

impl AccountState {
    /// Its pointer names the rollout's bundle.
    pub fn moved(self) -> bool {
        matches!(
            self,
            AccountState::Applied | AccountState::Serving | AccountState::Healthy
        )
    }
}

/// Hears of a rollout as it goes: each account's outcome when it is decided (applied,
/// failed, conflict, skipped, rolled back), and each wave's end.
pub trait Watch: Sync + std::fmt::Debug {
    fn account(&self, wave: &str, name: &str, account: &AccountReport);
    /// A wave ended; `failure` is the reason of the wave that failed the rollout (after its
    /// rollback), `None` for the others (an earlier wave its rollback reached included).
    fn wave(&self, wave: &WaveReport, failure: Option<&str>);
    /// A wave starts applying.
    fn wave_started(&self, _wave: &str) {}
    /// The rollout starts: every wave pending.
    fn rollout_started(&self, _report: &RolloutReport) {}
    /// The rollout ended (succeeded, rolled back, halted or preempted).
    fn rollout_finished(&self, _report: &RolloutReport) {}
}

/// The live report, shared with whoever shows it.
pub type Live = Arc<Mutex<RolloutReport>>;
