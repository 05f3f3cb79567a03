//! The plan as a value: what is planned from (desired state, context, options) and what a
//! plan says (accounts, actions, waves, groups, summary), serialized as the JSON plan.

use std::collections::{BTreeMap, BTreeSet};

use fleetgate_bundle::{Bundle, Digest};
use schemars::JsonSchema;
use serde::Serialize;

use crate::config::template::Vars;
use crate::plan::changes::Change;
use crate::plan::risks::Warning;
use crate::render::packed::{Packed, PackedText};
use crate::target::{AccountRef, ETag, ErrorClass, Pointer};

/// The version of the JSON plan document (`formatVersion`). Bumped on any change that is
/// not an addition.
pub const PLAN_FORMAT_VERSION: u32 = 1;

/// One account's desired state: its bundle rendered at the head. Held for every planned
/// account from render to write, so only the packed canonical bytes are kept (a few KiB);
/// [`Desired::bundle`] decodes them where a plan needs the bundle itself.
#[derive(Debug, Clone)]
pub struct Desired {
    pub account: AccountRef,
    /// The canonical bytes (what apply stores), packed.
    pub canonical: Packed,
    /// The `${account.*}` values its bundle records (grouping writes them back as variables).
    pub vars: Vars,
    pub digest: Digest,
    /// The digest rendered at the plan's base, when it has one and the account rendered
    /// there: tells a drifted target apart from a change in git.
    pub base_digest: Option<Digest>,
}

impl Desired {
    pub fn new(account: AccountRef, bundle: &Bundle, canonical: &[u8], digest: Digest) -> Desired {
        Desired {
            account,
            canonical: Packed::new(canonical),
            vars: Vars::of_bundle(&bundle.account),
            digest,
            base_digest: None,
        }
    }

    /// The bundle, decoded from its canonical bytes (which were encoded from a bundle in
    /// this process: by render, or from a stored bundle a rollback goes back to).
    pub fn bundle(&self) -> Bundle {
        serde_json::from_slice(&self.canonical.unpack())
            .expect("canonical bytes encoded from a bundle decode to it")
    }
}

/// Where the plan's inputs came from; carried into the plan for its readers.
#[derive(Debug, Clone)]
pub struct Context {
    pub repo: String,
    pub base: Option<Revision>,
    pub head: Revision,
    pub target: String,
    /// Every account in git at the head.
    pub fleet: BTreeSet<String>,
    /// Accounts the target holds state for (orphans are those not in `fleet`).
    pub deployed: BTreeSet<String>,
    /// Accounts fleet.yaml approves for decommission (never orphans).
    pub decommission: BTreeSet<String>,
    pub rendered: RenderCounts,
    /// fleet.yaml's waves, in order, and the fleet's concurrency (a wave's default).
    pub waves: Vec<crate::config::manifest::Wave>,
    pub concurrency: usize,
    /// The wave of each account (an index into `waves`).
    pub wave_of: BTreeMap<String, usize>,
}

/// Settings that shape the output, not the decision.
#[derive(Debug, Clone)]
pub struct Options {
    /// Key of the fingerprints that stand in for sensitive values. One per plan (random by
    /// default), so fingerprints compare within a plan and cannot be looked up across plans.
    pub redaction_key: Vec<u8>,
    /// Lines of context around each change in a diff.
    pub context_lines: usize,
    /// Warn when more than this percentage of the fleet's accounts would be updated at once.
    pub fleet_change_percent: u32,
    /// Plan held accounts like any other (`fleetgate rollback --to` replaces holds).
    pub ignore_holds: bool,
    /// Branch heads the tracked branch has moved past: a hold recorded at one of them is
    /// over (the revert, or any newer commit, landed), and its account is planned as usual.
    pub released_holds: BTreeSet<String>,
    /// Accounts a preempted rollout moved before their wave's bake was over: planned as
    /// updates (even when already at the head) so the new rollout verifies them in their
    /// waves, and takes them back to where they were before if it rolls back.
    pub carried: BTreeMap<String, Carried>,
    /// Decide actions only: no changes, diffs or risks (apply, the daemon and rollback
    /// print outcomes, not plans), so no text the size of a bundle is kept per account.
    pub outcomes_only: bool,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            redaction_key: Vec::new(),
            context_lines: 3,
            fleet_change_percent: 25,
            ignore_holds: false,
            released_holds: BTreeSet::new(),
            carried: BTreeMap::new(),
            outcomes_only: false,
        }
    }
}

/// A commit as the user named it and as git resolved it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct Revision {
    /// As given: `HEAD~1`, `origin/main`, a tag.
    pub rev: String,
    /// The full commit id.
    pub commit: String,
}

/// How many accounts were rendered on each side.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, JsonSchema)]
#[schemars(rename = "Rendered")]
pub struct RenderCounts {
    pub base: usize,
    pub head: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// First deployment: the account has no pointer.
    Create,
    Update,
    NoChange,
    /// Its deployed state could not be read or cannot be trusted; nothing will be written.
    Unreachable,
    /// `fleetgate rollback --to` pinned it to its bundle; it is not rolled forward until a
    /// newer commit lands or `fleetgate release` lifts the hold.
    Held,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Create => "create",
            Action::Update => "update",
            Action::NoChange => "no-change",
            Action::Unreachable => "unreachable",
            Action::Held => "held",
        }
    }
}

/// The plan. Its JSON form is documented in docs/plan.md and schemas/plan.schema.json.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Plan {
    /// Risky changes, first in every format; each names the accounts it applies to.
    pub warnings: Vec<Warning>,
    pub format_version: u32,
    pub summary: Summary,
    /// Accounts rendered at the base and at the head. With a base, only the accounts the
    /// change can affect are rendered; without one, every account at the head.
    pub rendered: RenderCounts,
    pub repo: String,
    pub base: Option<Revision>,
    pub head: Revision,
    pub target: String,
    /// The same change, each shown once with the accounts it applies to (as a template when
    /// it differs between them only in their `${account.*}` values). Updates first,
    /// then creates; within each, the biggest group first.
    pub groups: Vec<Group>,
    /// The rollout order: fleet.yaml's waves, each with the accounts it creates or updates.
    /// Execution follows it, wave by wave.
    pub waves: Vec<WavePlan>,
    /// Every planned account, by name.
    pub accounts: Vec<AccountPlan>,
    /// Deployed in the target, absent from git, and not approved for decommission. Never
    /// deleted by fleetgate.
    pub orphans: Vec<String>,
    /// The accounts fleet.yaml's `offboarding.decommission` approves, by name: the tombstones
    /// to write (`decommission`), those already written, and those that cannot be reached.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub decommissions: Vec<DecommissionPlan>,
}

/// What becomes of an account approved for decommission.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum DecommissionAction {
    /// Its pointer becomes a tombstone: its gateways answer 410 and issue no token.
    Decommission,
    /// Its pointer is a tombstone already.
    Decommissioned,
    /// `fleetgate rollback` brought it back and holds it there: not decommissioned again
    /// until `fleetgate release` lifts the hold.
    Held,
    /// It has no pointer: nothing was ever deployed, nothing to write.
    NeverDeployed,
    /// Its pointer could not be read; nothing will be written.
    Unreachable,
}

impl DecommissionAction {
    pub fn as_str(self) -> &'static str {
        match self {
            DecommissionAction::Decommission => "decommission",
            DecommissionAction::Decommissioned => "decommissioned",
            DecommissionAction::Held => "held",
            DecommissionAction::NeverDeployed => "never-deployed",
            DecommissionAction::Unreachable => "unreachable",
        }
    }
}

/// One account approved for decommission.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DecommissionPlan {
    pub name: String,
    pub account_id: String,
    pub tenant: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Where its state is (`s3://<bucket>/<prefix>/`): what the tombstone and a later erasure
    /// touch, for the reviewer to check.
    pub location: String,
    pub action: DecommissionAction,
    /// The digest deployed now (kept in the tombstone, so a rollback can restore it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// When it was decommissioned, who holds it, or why it is unreachable.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// Where the account is (its file is gone from git). Not part of the plan's documents.
    #[serde(skip)]
    #[schemars(skip)]
    pub account: Option<AccountRef>,
    /// The pointer the tombstone replaces, by compare-and-swap. Not part of the plan's
    /// documents.
    #[serde(skip)]
    #[schemars(skip)]
    pub expected: Option<Expected>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    /// Accounts in git at the head.
    pub fleet: usize,
    /// Accounts this plan looked at (with a base: those the change can affect).
    pub planned: usize,
    pub create: usize,
    pub update: usize,
    pub no_change: usize,
    pub unreachable: usize,
    /// Pinned by a rollback hold: not rolled forward.
    pub held: usize,
    /// Accounts in the fleet the change cannot affect (not rendered, not observed).
    pub not_affected: usize,
    pub orphaned: usize,
    /// Tombstones to write: accounts approved for decommission and still served.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub decommission: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

impl Summary {
    /// Whether applying would write anything (the `2` of exit codes).
    pub fn has_changes(&self) -> bool {
        self.create + self.update + self.decommission > 0
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AccountPlan {
    pub name: String,
    pub account_id: String,
    pub action: Action,
    /// The digest deployed now.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// The digest the head renders.
    pub to: String,
    /// The commit recorded in the deployed pointer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deployed_commit: Option<String>,
    /// Why it is unreachable, or that the target drifted from the base.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// The kind of failure of an unreachable account.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorClass>,
    /// Index into `groups` (creates and updates).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<usize>,
    pub changes: Vec<Change>,
    /// Unified diff of the redacted pretty bundles (deployed -> head); empty when nothing
    /// changes. Hunk headers name the place in the bundle instead of line numbers.
    // Held packed until the document is written.
    pub diff: PackedText,
    /// The deployed pointer and its version this plan was made against. Execution replaces
    /// exactly that version (compare-and-swap; `None`: there must be no pointer), so a
    /// pointer that moved after the plan is a conflict, never overwritten. Not part of the
    /// plan's documents.
    #[serde(skip)]
    #[schemars(skip)]
    pub expected: Option<Expected>,
    /// Moved by a preempted rollout and not verified yet ([`Options::carried`]). Not part
    /// of the plan's documents (`note` says it).
    #[serde(skip)]
    #[schemars(skip)]
    pub carried: Option<Carried>,
}

/// An account a preempted rollout moved (its pointer written) before the account's wave
/// had passed its bake.
#[derive(Debug, Clone, PartialEq)]
pub struct Carried {
    /// The digest the preempted rollout moved it to.
    pub moved_to: Digest,
    /// The preempted rollout's commit.
    pub commit: String,
    /// The account's pointer before the preempted rollout; `None`: it was a first
    /// deployment. An automatic rollback goes back to it, not to `moved_to`.
    pub before: Option<Pointer>,
}

impl AccountPlan {
    /// The pointer an automatic rollback takes this account back to: what it ran before a
    /// preempted rollout moved it (when carried), else the pointer this plan replaces;
    /// `None` for a first deployment.
    pub fn before(&self) -> Option<Pointer> {
        match &self.carried {
            Some(c) => c.before.clone(),
            None => self.expected.as_ref().map(|e| e.pointer.clone()),
        }
    }
}

/// A pointer as observed, with the version a compare-and-swap names.
#[derive(Debug, Clone, PartialEq)]
pub struct Expected {
    pub pointer: Pointer,
    pub etag: ETag,
}

/// One wave of the rollout.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WavePlan {
    pub name: String,
    /// The wave's accounts this plan creates or updates, sorted: what the wave changes.
    pub accounts: Vec<String>,
    /// The wave's planned accounts with nothing to write (unchanged, held, unreachable).
    pub untouched: usize,
    /// Accounts changed at once.
    pub max_concurrency: usize,
    /// Failed accounts the wave tolerates before it stops and rolls back (fleet.yaml's
    /// failureTolerance applied to `accounts`).
    pub tolerated_failures: usize,
    pub bake_time: fleetgate_bundle::Duration,
    pub health_gate: crate::config::manifest::HealthGate,
}

/// Accounts that share one change: the same action, the same summary and the same changed
/// lines once each account's own values are written as `${account.*}` variables (context
/// lines may differ: they can hold other accounts' values, or text that differs).
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Group {
    pub action: Action,
    pub accounts: Vec<String>,
    /// The first account's summary, written as a template when `variables` is not empty.
    pub changes: Vec<Change>,
    /// The first account's diff, written as a template when `variables` is not empty.
    pub diff: String,
    /// Set when the accounts' diffs differ in context lines only: the account whose context
    /// `diff` shows.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub context_from: Option<String>,
    /// The `${account.*}` variables `changes` and `diff` are written with, sorted. Each
    /// stands for every account's own value (`${account.id}`: each account's id); a literal
    /// `${` in such a group's text is written `$${`. Empty: the text is literally every
    /// account's. Each account's own `changes` and `diff` (the plan's `accounts`) stay literal.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub variables: Vec<String>,
}
