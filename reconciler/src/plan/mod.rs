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
pub mod group;
pub mod model;
pub mod risks;

use std::collections::{BTreeMap, BTreeSet};

use fleetgate_bundle::Bundle;
use fleetgate_bundle::sensitive::redacting;

use crate::config::template::Vars;
use crate::redact::scrub_in_place;
use crate::render::packed::PackedText;
use crate::target::{ErrorClass, Observed};
pub use changes::{Area, Change, Op};
pub use model::{
    AccountPlan, Action, Carried, Context, DecommissionAction, DecommissionPlan, Desired, Expected,
    Group, Options, PLAN_FORMAT_VERSION, Plan, RenderCounts, Revision, Summary, WavePlan,
};
pub use risks::{Warning, WarningKind};

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
    let planned = desired
        .iter()
        .map(|d| {
            let seen = observed.get(&d.account.name).unwrap_or(&Observed::New);
            plan_account(d, seen, options, &|_| false)
        })
        .collect();
    assemble(context, planned, Vec::new(), options)
}

/// One account, planned: its entry of the plan (texts scrubbed, diff packed), the risks its
/// change carries, and its `${account.*}` values (grouping writes them back as variables).
/// What a plan keeps of an account once its bundles are dropped.
#[derive(Debug, Clone)]
pub struct PlannedAccount {
    pub entry: AccountPlan,
    pub risks: Vec<risks::Risk>,
    pub vars: Vars,
}

/// The plan from its accounts, each planned on its own ([`plan_account`], as soon as its
/// state is observed): groups, waves, warnings and the summary.
/// The decision for an account approved for decommission, from its pointer. A hold keeps it
/// served (a rollback brought it back) unless the branch has moved past it (`superseded`).
pub fn plan_decommission(
    account: &crate::target::AccountRef,
    approval: &crate::config::manifest::DecommissionSpec,
    seen: &Observed,
    superseded: &dyn Fn(&str) -> bool,
) -> DecommissionPlan {
    let mut entry = DecommissionPlan {
        name: account.name.clone(),
        account_id: account.id.clone(),
        tenant: approval.tenant.clone(),
        reason: approval.reason.clone(),
        location: format!("s3://{}/{}/", account.bucket, account.prefix),
        action: DecommissionAction::NeverDeployed,
        from: None,
        note: None,
        account: Some(account.clone()),
        expected: None,
    };
    match seen {
        Observed::New => {}
        Observed::Unreachable { reason, .. } => {
            entry.action = DecommissionAction::Unreachable;
            entry.note = Some(reason.clone());
        }
        Observed::Current { pointer, etag }
        | Observed::Pointed { pointer, etag }
        | Observed::Deployed { pointer, etag, .. } => {
            entry.from = Some(pointer.digest.to_string());
            let hold = pointer
                .hold
                .as_ref()
                .filter(|h| !h.branch_head.as_deref().is_some_and(superseded));
            entry.action = match (&pointer.decommissioned, hold) {
                (Some(d), _) => {
                    entry.note = Some(format!("decommissioned at {} by {}", d.at, d.by));
                    DecommissionAction::Decommissioned
                }
                (None, Some(h)) => {
                    entry.note = Some(format!(
                        "held by {} since {} ({}): `fleetgate release` lets it be decommissioned",
                        h.by, h.at, h.reason
                    ));
                    DecommissionAction::Held
                }
                (None, None) => DecommissionAction::Decommission,
            };
            entry.expected = Some(Expected {
                pointer: pointer.clone(),
                etag: etag.clone(),
            });
        }
    }
    entry
}

pub fn assemble(
    context: &Context,
    mut planned: Vec<PlannedAccount>,
    mut decommissions: Vec<DecommissionPlan>,
    options: &Options,
) -> Plan {
    let key = options.redaction_key.as_slice();
    planned.sort_by(|a, b| a.entry.name.cmp(&b.entry.name));
    planned.dedup_by(|a, b| a.entry.name == b.entry.name);
    let mut accounts: Vec<AccountPlan> = Vec::with_capacity(planned.len());
    let mut vars: Vec<Vars> = Vec::with_capacity(planned.len());
    let mut warnings: BTreeMap<(WarningKind, String), BTreeSet<String>> = BTreeMap::new();
    for p in planned {
        for risk in p.risks {
            warnings
                .entry((risk.kind, risk.message))
                .or_default()
                .insert(p.entry.name.clone());
        }
        accounts.push(p.entry);
        vars.push(p.vars);
    }

    let groups = group::group(&mut accounts, &vars);
    let count = |a: Action| accounts.iter().filter(|p| p.action == a).count();
    let orphans: Vec<String> = context
        .deployed
        .iter()
        .filter(|a| !context.fleet.contains(*a) && !context.decommission.contains(*a))
        .cloned()
        .collect();
    decommissions.sort_by(|a, b| a.name.cmp(&b.name));
    let to_decommission: Vec<&DecommissionPlan> = decommissions
        .iter()
        .filter(|d| d.action == DecommissionAction::Decommission)
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
        decommission: to_decommission.len(),
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
    if !to_decommission.is_empty() {
        let tenants: BTreeSet<&str> = to_decommission.iter().map(|d| d.tenant.as_str()).collect();
        warnings.push(Warning {
            kind: WarningKind::Decommission,
            message: format!(
                "{} account{} of tenant{} {} stop being served: every request is answered 410 and their identity provider issues no token and accepts none. `fleetgate rollback` can restore them until they are erased",
                to_decommission.len(),
                if to_decommission.len() == 1 { "" } else { "s" },
                if tenants.len() == 1 { "" } else { "s" },
                tenants.into_iter().collect::<Vec<_>>().join(", ")
            ),
            accounts: to_decommission.iter().map(|d| d.name.clone()).collect(),
        });
    }
    if !orphans.is_empty() {
        warnings.push(Warning {
            kind: WarningKind::RemovedWithoutApproval,
            message: "gone from git without an approval to decommission: each keeps serving its last bundle, and its identity provider keeps issuing tokens. To stop serving it, name it in fleet.yaml's offboarding.decommission".into(),
            accounts: orphans.clone(),
        });
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
        decommissions,
    };
    // Every text of the plan a reader sees, secret material fingerprinted.
    scrub_plan(&mut plan, key);
    plan
}

/// One account's entry of the plan, from its desired and observed state, and the risks its
/// change carries. `superseded` says whether the tracked branch has moved past a commit: a
/// hold recorded there is over (as are those at [`Options::released_holds`]). Its texts are
/// scrubbed and its diff packed here, so the bundles it was made from can be dropped.
pub fn plan_account(
    d: &Desired,
    seen: &Observed,
    options: &Options,
    superseded: &dyn Fn(&str) -> bool,
) -> PlannedAccount {
    let key = options.redaction_key.as_slice();
    let released = |h: &crate::target::Hold| {
        hold_released(h, options) || h.branch_head.as_deref().is_some_and(superseded)
    };
    let mut risks = Vec::new();
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
        diff: PackedText::default(),
        expected: None,
        carried: None,
    };
    let mut diff = String::new();
    if let Observed::Current { pointer, etag }
    | Observed::Pointed { pointer, etag }
    | Observed::Deployed { pointer, etag, .. } = seen
    {
        entry.expected = Some(Expected {
            pointer: pointer.clone(),
            etag: etag.clone(),
        });
    }
    match seen {
        Observed::New => {
            entry.action = Action::Create;
            if !options.outcomes_only {
                let bundle = d.bundle();
                entry.changes = vec![changes::created(&bundle)];
                diff = diff::unified("", &redacted_pretty(&bundle, key), options.context_lines);
            }
        }
        Observed::Unreachable { reason, class } => {
            entry.action = Action::Unreachable;
            entry.note = Some(reason.clone());
            entry.error = Some(*class);
        }
        Observed::Current { pointer, .. }
        | Observed::Pointed { pointer, .. }
        | Observed::Deployed { pointer, .. }
            if pointer.hold.as_ref().is_some_and(|h| !released(h))
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
            if let Some(c) = carried(name, pointer, options) {
                // At the head already, but unverified: its wave checks it again.
                entry.action = Action::Update;
                entry.note = Some(carried_note(&c));
                entry.carried = Some(c);
            } else if pointer.digest != d.digest {
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
        // Pointers only (a rollback): an update whose diff is not read, nor its risks.
        Observed::Pointed { pointer, .. } => {
            entry.from = Some(pointer.digest.to_string());
            entry.deployed_commit = pointer.commit.clone();
            if pointer.digest != d.digest {
                entry.action = Action::Update;
            }
            if let Some(c) = carried(name, pointer, options) {
                entry.action = Action::Update;
                entry.note = Some(carried_note(&c));
                entry.carried = Some(c);
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
            if let Some(c) = carried(name, pointer, options) {
                entry.action = Action::Update;
                entry.note = Some(carried_note(&c));
                entry.carried = Some(c);
            }
            if pointer.digest != d.digest && options.outcomes_only {
                entry.action = Action::Update;
            } else if pointer.digest != d.digest {
                entry.action = Action::Update;
                let head = d.bundle();
                let old = redacted_pretty(bundle, key);
                let new = redacted_pretty(&head, key);
                entry.changes = changes::between(bundle, &head, key);
                changes::order(&mut entry.changes);
                diff = diff::unified(&old, &new, options.context_lines);
                risks = risks::between(bundle, &head);
            }
        }
    }
    // A decommissioned account back in git: its tombstone is replaced even when its bundle
    // is the one the tombstone kept, or it would keep answering 410.
    if let Some(e) = &entry.expected
        && e.pointer.is_tombstone()
        && matches!(entry.action, Action::NoChange)
    {
        entry.action = Action::Update;
        entry.note = Some(format!(
            "{name} is decommissioned (since {}): this change serves it again",
            e.pointer
                .decommissioned
                .as_ref()
                .map_or("-", |d| d.at.as_str())
        ));
    }
    // Every text of the entry a reader sees, secret material fingerprinted.
    let s = |text: &mut String| scrub_in_place(text, key);
    if let Some(note) = &mut entry.note {
        s(note);
    }
    scrub_changes(&mut entry.changes, key);
    s(&mut diff);
    entry.diff = PackedText::new(&diff);
    PlannedAccount {
        entry,
        risks,
        vars: d.vars.clone(),
    }
}

/// The account's carried state, when the preempted rollout's write is still what is there.
fn carried(name: &str, pointer: &crate::target::Pointer, options: &Options) -> Option<Carried> {
    options
        .carried
        .get(name)
        .filter(|c| c.moved_to == pointer.digest)
        .cloned()
}

fn carried_note(c: &Carried) -> String {
    format!(
        "moved to {} by the rollout of {} that a newer commit preempted before its wave was verified: part of this rollout, verified in its wave (and rolled back with it, to {})",
        c.moved_to.short(),
        &c.commit[..c.commit.len().min(12)],
        c.before.as_ref().map_or_else(
            || "nothing: it was a first deployment".to_string(),
            |p| p.digest.short().to_string()
        )
    )
}

/// Scrubs the texts of a plan a reader sees beyond each account's own (notes, changes and
/// diffs, scrubbed when the account is planned, [`plan_account`]): warnings, the groups'
/// changes and diffs, and the repo and target as given (a URL may carry a token). Names of
/// accounts and digests are identifiers the rollout follows and are left as they are (no
/// rule matches them).
pub fn scrub_plan(plan: &mut Plan, key: &[u8]) {
    let s = |text: &mut String| scrub_in_place(text, key);
    let changes = |list: &mut Vec<Change>| scrub_changes(list, key);
    plan.warnings.iter_mut().for_each(|w| s(&mut w.message));
    s(&mut plan.repo);
    s(&mut plan.target);
    for g in &mut plan.groups {
        changes(&mut g.changes);
        s(&mut g.diff);
    }
}

fn scrub_changes(list: &mut [Change], key: &[u8]) {
    for c in list {
        scrub_in_place(&mut c.name, key);
        for d in &mut c.details {
            scrub_in_place(d, key);
        }
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

#[cfg(test)]
mod tests;
