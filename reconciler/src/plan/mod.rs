//! `plan(desired, observed) -> Plan`: what would change in which account, decided before
//! anything is written. Pure and deterministic: the same inputs (and the same redaction key)
//! give the same plan, byte for byte, in every format.
//!
//! Per account the action is `create` (never deployed), `update`, `no-change` or
//! `unreachable` (its state could not be read or trusted); an update carries a semantic
//! summary ([`changes`]) and a unified diff of the redacted, pretty canonical bundles
//! ([`diff`]). Accounts whose change is the same, once each account's own values are written
//! as `${account.*}` variables, are grouped, so a plan over 1,000 accounts reads as a
//! handful of changes. Risky changes ([`risks`]) come first in every format.
//! Accounts deployed in the target but gone from git are listed as orphans and never deleted.
//!
//! May import: [`crate::config`], [`mod@crate::render`], [`crate::redact`], the bundle contract,
//! and the types of deployed state it plans against ([`crate::target::AccountRef`],
//! [`crate::target::Observed`], [`crate::target::ErrorClass`], [`crate::target::Hold`]);
//! never execution, the operations, the daemon or the CLI, tokio, HTTP, AWS or git2.

pub mod changes;
pub mod diff;
pub mod format;
pub mod risks;

use std::collections::{BTreeMap, BTreeSet};

use fleetgate_bundle::sensitive::redacting;
use fleetgate_bundle::{Bundle, Digest};
use schemars::JsonSchema;
use serde::Serialize;

use crate::config::template::{Occurrence, Values, Vars, write_template};
use crate::redact::scrub_in_place;
use crate::target::{AccountRef, ETag, ErrorClass, Observed, Pointer};
pub use changes::{Area, Change, Op};
pub use risks::{Warning, WarningKind};

/// The version of the JSON plan document (`formatVersion`). Bumped on any change that is
/// not an addition.
pub const PLAN_FORMAT_VERSION: u32 = 1;

/// One account's desired state: its bundle rendered at the head.
#[derive(Debug, Clone)]
pub struct Desired {
    pub account: AccountRef,
    pub bundle: Bundle,
    /// The canonical bytes (what apply stores).
    pub canonical: Vec<u8>,
    pub digest: Digest,
    /// The digest rendered at the plan's base, when it has one and the account rendered
    /// there: tells a drifted target apart from a change in git.
    pub base_digest: Option<Digest>,
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
}

impl Default for Options {
    fn default() -> Options {
        Options {
            redaction_key: Vec::new(),
            context_lines: 3,
            fleet_change_percent: 25,
            ignore_holds: false,
            released_holds: BTreeSet::new(),
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
    /// Deployed in the target, absent from git. Never deleted by fleetgate.
    pub orphans: Vec<String>,
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
}

impl Summary {
    /// Whether applying would write anything (the `2` of exit codes).
    pub fn has_changes(&self) -> bool {
        self.create + self.update > 0
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
    pub diff: String,
    /// The deployed pointer and its version this plan was made against. Execution replaces
    /// exactly that version (compare-and-swap; `None`: there must be no pointer), so a
    /// pointer that moved after the plan is a conflict, never overwritten. Not part of the
    /// plan's documents.
    #[serde(skip)]
    #[schemars(skip)]
    pub expected: Option<Expected>,
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

/// The redacted, pretty, canonical text of a bundle: what diffs are made of.
pub fn redacted_pretty(bundle: &Bundle, key: &[u8]) -> String {
    let mut text = redacting(key, || bundle.pretty_json());
    text.push('\n');
    text
}

/// Decides the plan. `desired` are the accounts to plan (all of them, or with a base the
/// ones the change can affect); `observed` holds their deployed state by name (an account
/// missing from it counts as never deployed).
pub fn plan(
    context: &Context,
    desired: &[Desired],
    observed: &BTreeMap<String, Observed>,
    options: &Options,
) -> Plan {
    let key = options.redaction_key.as_slice();
    let mut accounts: Vec<AccountPlan> = Vec::with_capacity(desired.len());
    // Each account's `${account.*}` values, as its rendered bundle records them: grouping
    // writes them back as variables.
    let mut vars: Vec<Vars> = Vec::with_capacity(desired.len());
    let mut warnings: BTreeMap<(WarningKind, String), BTreeSet<String>> = BTreeMap::new();
    let mut sorted: Vec<&Desired> = desired.iter().collect();
    sorted.sort_by(|a, b| a.account.name.cmp(&b.account.name));
    sorted.dedup_by(|a, b| a.account.name == b.account.name);

    for d in sorted {
        let name = &d.account.name;
        let mut entry = AccountPlan {
            name: name.clone(),
            account_id: d.account.id.clone(),
            action: Action::NoChange,
            from: None,
            to: d.digest.to_string(),
            deployed_commit: None,
            note: None,
            error: None,
            group: None,
            changes: Vec::new(),
            diff: String::new(),
            expected: None,
        };
        let seen = observed.get(name).unwrap_or(&Observed::New);
        if let Observed::Current { pointer, etag } | Observed::Deployed { pointer, etag, .. } = seen
        {
            entry.expected = Some(Expected {
                pointer: pointer.clone(),
                etag: etag.clone(),
            });
        }
        match seen {
            Observed::New => {
                entry.action = Action::Create;
                entry.changes = vec![changes::created(&d.bundle)];
                entry.diff =
                    diff::unified("", &redacted_pretty(&d.bundle, key), options.context_lines);
            }
            Observed::Unreachable { reason, class } => {
                entry.action = Action::Unreachable;
                entry.note = Some(reason.clone());
                entry.error = Some(*class);
            }
            Observed::Current { pointer, .. } | Observed::Deployed { pointer, .. }
                if pointer
                    .hold
                    .as_ref()
                    .is_some_and(|h| !hold_released(h, options))
                    && pointer.digest != d.digest =>
            {
                entry.action = Action::Held;
                entry.from = Some(pointer.digest.to_string());
                entry.deployed_commit = pointer.commit.clone();
                if let Some(hold) = &pointer.hold {
                    entry.note = Some(held_note(hold));
                }
            }
            Observed::Current { pointer, .. } => {
                entry.from = Some(pointer.digest.to_string());
                entry.deployed_commit = pointer.commit.clone();
                if pointer.digest != d.digest {
                    // Only observe decides "current", and only for this digest; anything
                    // else is a caller's mistake, shown rather than hidden.
                    entry.action = Action::Unreachable;
                    entry.note = Some(format!(
                        "{name}: observed as current at {}, which is not the head's {}",
                        pointer.digest.short(),
                        d.digest.short()
                    ));
                    entry.error = Some(ErrorClass::Other);
                }
            }
            Observed::Deployed {
                pointer, bundle, ..
            } => {
                entry.from = Some(pointer.digest.to_string());
                entry.deployed_commit = pointer.commit.clone();
                if let Some(base) = &d.base_digest
                    && &pointer.digest != base
                    && pointer.digest != d.digest
                {
                    entry.note = Some(format!(
                        "the deployed bundle {} is neither the base's ({}) nor the head's: the target is behind the base or was changed out of band; the diff is against what is deployed",
                        pointer.digest.short(),
                        base.short()
                    ));
                }
                if pointer.digest != d.digest {
                    entry.action = Action::Update;
                    let old = redacted_pretty(bundle, key);
                    let new = redacted_pretty(&d.bundle, key);
                    entry.changes = changes::between(bundle, &d.bundle, key);
                    changes::order(&mut entry.changes);
                    entry.diff = diff::unified(&old, &new, options.context_lines);
                    for risk in risks::between(bundle, &d.bundle) {
                        warnings
                            .entry((risk.kind, risk.message))
                            .or_default()
                            .insert(name.clone());
                    }
                }
            }
        }
        accounts.push(entry);
        vars.push(Vars::of_bundle(&d.bundle.account));
    }

    let groups = group(&mut accounts, &vars);
    let count = |a: Action| accounts.iter().filter(|p| p.action == a).count();
    let orphans: Vec<String> = context
        .deployed
        .iter()
        .filter(|a| !context.fleet.contains(*a))
        .cloned()
        .collect();
    let summary = Summary {
        fleet: context.fleet.len(),
        planned: accounts.len(),
        create: count(Action::Create),
        update: count(Action::Update),
        no_change: count(Action::NoChange),
        unreachable: count(Action::Unreachable),
        held: count(Action::Held),
        not_affected: context
            .fleet
            .iter()
            .filter(|a| accounts.binary_search_by(|p| p.name.cmp(a)).is_err())
            .count(),
        orphaned: orphans.len(),
    };

    let mut warnings: Vec<Warning> = warnings
        .into_iter()
        .map(|((kind, message), accounts)| Warning {
            kind,
            message,
            accounts: accounts.into_iter().collect(),
        })
        .collect();
    if let Some(w) = risks::fleet_share(summary.update, summary.fleet, options.fleet_change_percent)
    {
        warnings.push(w);
    }
    // Most severe kind first, then the most widespread.
    warnings.sort_by(|a, b| {
        (a.kind, std::cmp::Reverse(a.accounts.len()), &a.message).cmp(&(
            b.kind,
            std::cmp::Reverse(b.accounts.len()),
            &b.message,
        ))
    });

    let waves = wave_plans(context, &accounts);
    let mut plan = Plan {
        warnings,
        format_version: PLAN_FORMAT_VERSION,
        summary,
        rendered: context.rendered,
        repo: context.repo.clone(),
        base: context.base.clone(),
        head: context.head.clone(),
        target: context.target.clone(),
        groups,
        waves,
        accounts,
        orphans,
    };
    // Every text of the plan a reader sees, secret material fingerprinted.
    scrub_plan(&mut plan, key);
    plan
}

/// Scrubs every text of a plan a reader sees: warnings, notes, changes and diffs of the
/// accounts and groups, and the repo and target as given (a URL may carry a token).
/// Names of accounts and digests are identifiers the rollout follows and are left as they
/// are (no rule matches them).
pub fn scrub_plan(plan: &mut Plan, key: &[u8]) {
    let s = |text: &mut String| scrub_in_place(text, key);
    let changes = |list: &mut Vec<Change>| {
        for c in list {
            s(&mut c.name);
            c.details.iter_mut().for_each(s);
        }
    };
    plan.warnings.iter_mut().for_each(|w| s(&mut w.message));
    s(&mut plan.repo);
    s(&mut plan.target);
    for g in &mut plan.groups {
        changes(&mut g.changes);
        s(&mut g.diff);
    }
    for a in &mut plan.accounts {
        if let Some(note) = &mut a.note {
            s(note);
        }
        changes(&mut a.changes);
        s(&mut a.diff);
    }
}

/// Whether a hold no longer stands: ignored by the caller, or superseded by the branch.
pub fn hold_released(hold: &crate::target::Hold, options: &Options) -> bool {
    options.ignore_holds
        || hold
            .branch_head
            .as_ref()
            .is_some_and(|b| options.released_holds.contains(b))
}

fn held_note(hold: &crate::target::Hold) -> String {
    format!(
        "held at {} by {} since {}: {}; a newer commit on the branch or `fleetgate release` lifts it",
        hold.to, hold.by, hold.at, hold.reason
    )
}

/// Each wave with the accounts it changes. Accounts without a wave (every account when the
/// context has no waves: `apply --all-at-once`, `rollback` without `--waves`) go in a last
/// wave of their own, which tolerates any number of failures.
fn wave_plans(context: &Context, accounts: &[AccountPlan]) -> Vec<WavePlan> {
    let mut waves: Vec<WavePlan> = context
        .waves
        .iter()
        .map(|w| WavePlan {
            name: w.name.clone(),
            accounts: Vec::new(),
            untouched: 0,
            max_concurrency: w
                .max_concurrency
                .map_or(context.concurrency, |n| n as usize)
                .max(1),
            tolerated_failures: 0,
            bake_time: w.bake_time,
            health_gate: w.health_gate.clone(),
        })
        .collect();
    let unassigned = waves.len();
    for a in accounts {
        let i = context.wave_of.get(&a.name).copied().unwrap_or(unassigned);
        if i == waves.len() {
            waves.push(WavePlan {
                name: "(no wave)".into(),
                accounts: Vec::new(),
                untouched: 0,
                max_concurrency: context.concurrency.max(1),
                tolerated_failures: 0,
                bake_time: fleetgate_bundle::Duration::default(),
                health_gate: crate::config::manifest::HealthGate::default(),
            });
        }
        if matches!(a.action, Action::Create | Action::Update) {
            waves[i].accounts.push(a.name.clone());
        } else {
            waves[i].untouched += 1;
        }
    }
    for (i, w) in waves.iter_mut().enumerate() {
        w.accounts.sort();
        w.tolerated_failures = match context.waves.get(i) {
            Some(spec) => spec.failure_tolerance.allowed(w.accounts.len()),
            // Without waves everything goes at once and one account's failure stops
            // nothing.
            None => w.accounts.len(),
        };
    }
    waves
}

/// How one position (an occurrence of some account's value) is written in a group: as the
/// text it is, the same in every account of the group, or as the variable whose value it
/// is in each of them.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Rep {
    Literal(usize),
    Variable(String),
}

/// The texts of one account's change, cut at the values found in them: the summary's
/// strings and the diff's lines, each with its occurrences.
struct Cut {
    /// Per change: the name's occurrences, then each detail's.
    changes: Vec<Vec<Vec<Occurrence>>>,
    /// Per diff line: its occurrences.
    lines: Vec<Vec<Occurrence>>,
}

impl Cut {
    fn new(values: &Values, a: &AccountPlan) -> Cut {
        Cut {
            changes: a
                .changes
                .iter()
                .map(|c| {
                    std::iter::once(&c.name)
                        .chain(&c.details)
                        .map(|t| values.find(t))
                        .collect()
                })
                .collect(),
            lines: a.diff.lines().map(|l| values.find(l)).collect(),
        }
    }
}

/// Whether a diff line says what changes (hunk header, `+`, `-`) rather than giving context.
fn is_changed_line(line: &str) -> bool {
    !line.starts_with(' ')
}

/// The form of one account's change with every value found left out: what a group needs in
/// common (with the action). Hashed, so 1,000 creates (whole bundles) stay small. `context`
/// adds the diff's context lines.
fn skeleton(action: Action, a: &AccountPlan, cut: &Cut, context: bool) -> [u8; 32] {
    use sha2::{Digest as _, Sha256};
    let mut h = Sha256::new();
    let mut piece = |text: &str, found: &[Occurrence]| {
        let mut at = 0;
        for o in found {
            h.update([0]);
            h.update(((o.start - at) as u64).to_le_bytes());
            h.update(&text.as_bytes()[at..o.start]);
            h.update([1]);
            at = o.end;
        }
        h.update([0]);
        h.update(((text.len() - at) as u64).to_le_bytes());
        h.update(&text.as_bytes()[at..]);
        h.update([2]);
    };
    piece(action.as_str(), &[]);
    for (c, found) in a.changes.iter().zip(&cut.changes) {
        piece(c.area.as_str(), &[]);
        piece(c.op.as_str(), &[]);
        piece(&c.details.len().to_string(), &[]);
        for (text, f) in std::iter::once(&c.name).chain(&c.details).zip(found) {
            piece(text, f);
        }
    }
    for (line, found) in a.diff.lines().zip(&cut.lines) {
        if context || is_changed_line(line) {
            piece(line, found);
        }
    }
    h.update([3]);
    h.finalize().into()
}

/// The values at the positions a group is keyed on (summary, then changed lines), in order.
fn key_positions(a: &AccountPlan, cut: &Cut) -> Vec<usize> {
    let changes = cut.changes.iter().flatten().flatten();
    let lines = a
        .diff
        .lines()
        .zip(&cut.lines)
        .filter(|(l, _)| is_changed_line(l))
        .flat_map(|(_, f)| f);
    changes.chain(lines).map(|o| o.value).collect()
}

/// Each account of `set` with the value it has at key position `p`.
fn column(positions: &BTreeMap<usize, Vec<usize>>, set: &[usize], p: usize) -> Vec<(usize, usize)> {
    set.iter().map(|&i| (i, positions[&i][p])).collect()
}

/// Whether account `a` (with `vars`) has `rep` where its text holds value `value`.
fn supports(values: &Values, vars: &Vars, value: usize, rep: &Rep) -> bool {
    match rep {
        Rep::Literal(v) => *v == value,
        Rep::Variable(name) => vars
            .variables_with(values.value(value))
            .contains(&name.as_str()),
    }
}

/// The way of writing one position that the most of `accounts` (each with the value it has
/// there) support, among those `allowed`; a literal on a tie (a group whose accounts share a
/// value shows it), then the earliest account's, then the most specific variable.
fn best_rep(
    values: &Values,
    vars: &[Vars],
    accounts: &[(usize, usize)],
    allowed: &dyn Fn(&Rep) -> bool,
) -> Option<Rep> {
    // Per way of writing: how many accounts support it, and the first of them.
    let mut support: BTreeMap<Rep, (usize, usize)> = BTreeMap::new();
    for &(i, value) in accounts {
        let mut reps = vec![Rep::Literal(value)];
        reps.extend(
            vars[i]
                .variables_with(values.value(value))
                .into_iter()
                .map(|n| Rep::Variable(n.to_string())),
        );
        for rep in reps.into_iter().filter(|r| allowed(r)) {
            support.entry(rep).or_insert((0, i)).0 += 1;
        }
    }
    support
        .into_iter()
        .min_by(|(ra, (na, fa)), (rb, (nb, fb))| {
            let kind = |r: &Rep| match r {
                Rep::Literal(_) => 0,
                Rep::Variable(_) => 1,
            };
            (std::cmp::Reverse(*na), kind(ra), *fa)
                .cmp(&(std::cmp::Reverse(*nb), kind(rb), *fb))
                .then_with(|| match (ra, rb) {
                    (Rep::Variable(a), Rep::Variable(b)) => crate::config::template::specificity(a)
                        .cmp(&crate::config::template::specificity(b)),
                    _ => std::cmp::Ordering::Equal,
                })
        })
        .map(|(r, _)| r)
}

/// Groups creates and updates whose changes are the same once each account's own values
/// (`${account.*}`: id, region, name, tenant, stage, labels) are written as variables, and
/// points each account at its group.
///
/// Every value of every planned account is found in each account's summary and changed diff
/// lines (whole tokens only, longest first). Accounts whose texts agree everywhere else are
/// candidates for one group. Then each position where a value was found is decided in turn,
/// by what the most remaining accounts have in common there: the same text (shown as it
/// is), or each its own value of one variable (shown as `${account.region}`); a tie goes to
/// the text. Accounts that do not fit a decision wait for the next group; the positions are
/// then decided again for the accounts that stayed. So a fleet-wide
/// rotation whose secret ARN holds each account's region and id is one group showing
/// `${account.region}:${account.id}`, while a value every account writes literally (a region
/// that is also some accounts' own, a stage word inside a host) stays text and splits no one.
///
/// Order: updates before creates, bigger groups first, then by first account.
fn group(accounts: &mut [AccountPlan], vars: &[Vars]) -> Vec<Group> {
    let planned: Vec<usize> = (0..accounts.len())
        .filter(|&i| matches!(accounts[i].action, Action::Create | Action::Update))
        .collect();
    let values = Values::new(planned.iter().map(|&i| &vars[i]));
    let mut cuts: BTreeMap<usize, Cut> = BTreeMap::new();
    let mut buckets: BTreeMap<[u8; 32], Vec<usize>> = BTreeMap::new();
    let mut positions: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for &i in &planned {
        let a = &accounts[i];
        let cut = Cut::new(&values, a);
        buckets
            .entry(skeleton(a.action, a, &cut, false))
            .or_default()
            .push(i);
        positions.insert(i, key_positions(a, &cut));
        cuts.insert(i, cut);
    }

    let mut members: Vec<(Action, Vec<usize>, Vec<Rep>)> = Vec::new();
    for bucket in buckets.into_values() {
        let mut remaining = bucket;
        while let Some(&first) = remaining.first() {
            let mut set = remaining.clone();
            let mut reps = Vec::new();
            let count = positions[&first].len();
            for p in 0..count {
                let here = column(&positions, &set, p);
                // Every account supports its own text, so there is always a choice.
                let rep = best_rep(&values, vars, &here, &|_| true)
                    .unwrap_or(Rep::Literal(positions[&first][p]));
                set.retain(|&i| supports(&values, &vars[i], positions[&i][p], &rep));
                reps.push(rep);
            }
            // Decided again for the accounts that stayed: a position decided for a wider
            // set may be text they all share (every one of them supports the first choice,
            // so whatever wins now, all of them do).
            let reps: Vec<Rep> = (0..reps.len())
                .map(|p| {
                    let here = column(&positions, &set, p);
                    best_rep(&values, vars, &here, &|_| true).unwrap_or_else(|| reps[p].clone())
                })
                .collect();
            let taken: BTreeSet<usize> = set.iter().copied().collect();
            remaining.retain(|i| !taken.contains(i));
            members.push((accounts[first].action, set, reps));
        }
    }

    members.sort_by(|(a, x, _), (b, y, _)| {
        let rank = |a: &Action| if *a == Action::Update { 0 } else { 1 };
        (rank(a), std::cmp::Reverse(x.len()), x[0]).cmp(&(
            rank(b),
            std::cmp::Reverse(y.len()),
            y[0],
        ))
    });
    let mut groups = Vec::with_capacity(members.len());
    for (g, (action, idx, reps)) in members.into_iter().enumerate() {
        let first = idx[0];
        let (a, cut) = (&accounts[first], &cuts[&first]);

        // Context lines are not what the group is keyed on: each of the first account's
        // values there is written the way most of the accounts whose diff has the same form
        // agree on; where one of them does not, the diff's context is the first account's.
        let full = skeleton(action, a, cut, true);
        let aligned: Vec<usize> = idx
            .iter()
            .copied()
            .filter(|&i| skeleton(action, &accounts[i], &cuts[&i], true) == full)
            .collect();
        let mut context_differs = aligned.len() < idx.len();
        let mut line_reps: Vec<Vec<Rep>> = Vec::with_capacity(cut.lines.len());
        let mut next = cut.changes.iter().flatten().flatten().count();
        for (n, (line, found)) in a.diff.lines().zip(&cut.lines).enumerate() {
            if is_changed_line(line) {
                line_reps.push(reps[next..next + found.len()].to_vec());
                next += found.len();
                continue;
            }
            let mut these = Vec::with_capacity(found.len());
            for (k, o) in found.iter().enumerate() {
                let here: Vec<(usize, usize)> = aligned
                    .iter()
                    .map(|&i| (i, cuts[&i].lines[n][k].value))
                    .collect();
                let own = |r: &Rep| supports(&values, &vars[first], o.value, r);
                let rep = best_rep(&values, vars, &here, &own).unwrap_or(Rep::Literal(o.value));
                context_differs |= here
                    .iter()
                    .any(|&(i, v)| !supports(&values, &vars[i], v, &rep));
                these.push(rep);
            }
            line_reps.push(these);
        }

        let templated = reps
            .iter()
            .chain(line_reps.iter().flatten())
            .any(|r| matches!(r, Rep::Variable(_)));
        let mut used: BTreeSet<String> = BTreeSet::new();
        let mut write = |text: &str, found: &[Occurrence], reps: &[Rep]| -> String {
            if !templated {
                return text.to_string();
            }
            for r in reps {
                if let Rep::Variable(name) = r {
                    used.insert(name.clone());
                }
            }
            write_template(text, found, &|k| match reps.get(k) {
                Some(Rep::Variable(name)) => Some(name.clone()),
                _ => None,
            })
        };
        let mut next = 0;
        let changes: Vec<Change> = a
            .changes
            .iter()
            .zip(&cut.changes)
            .map(|(c, found)| {
                let mut texts =
                    std::iter::once(&c.name)
                        .chain(&c.details)
                        .zip(found)
                        .map(|(t, f)| {
                            let out = write(t, f, &reps[next..next + f.len()]);
                            next += f.len();
                            out
                        });
                let name = texts.next().unwrap_or_default();
                Change {
                    area: c.area,
                    op: c.op,
                    name,
                    details: texts.collect(),
                }
            })
            .collect();
        let diff: String = a
            .diff
            .lines()
            .zip(&cut.lines)
            .zip(&line_reps)
            .flat_map(|((line, found), reps)| [write(line, found, reps), "\n".to_string()])
            .collect();
        groups.push(Group {
            action,
            accounts: idx.iter().map(|&i| accounts[i].name.clone()).collect(),
            changes,
            diff,
            context_from: context_differs.then(|| a.name.clone()),
            variables: used.into_iter().collect(),
        });
        for i in idx {
            accounts[i].group = Some(g);
        }
    }
    groups
}

#[cfg(test)]
mod tests;
