//! The drift report: for every account, is what is deployed what git's head produces, and
//! if not, why. Meant for a cron job or scheduled CI (exit 0 in sync, 2 drift, 1 error).
//!
//! Causes, in the order they are decided:
//!
//! - **never deployed**: no pointer.
//! - **tampered**: the pointer names a bundle whose bytes do not hash to its digest.
//! - **behind**: the pointer names a digest the head does not produce, but the commit the
//!   pointer records is one of the branch's last N commits and renders exactly that digest
//!   for this account: "still on a1b2c3d, 3 commits behind".
//! - **out-of-band edit**: any other digest (the pointer was changed by hand, or applied
//!   from a commit not on the branch), a pointer naming a bundle that is not stored, or one
//!   that does not parse.
//! - **unreachable**: the state could not be read (the classified error).
//! - **orphaned**: deployed, but the account is no longer in git (found among accounts the
//!   branch's last N commits had; a file target also lists its directories).
//!
//! [`assess`] is pure; [`run`] gathers its inputs from git and the target.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use fleetgate_bundle::Digest;
use schemars::JsonSchema;
use serde::Serialize;

use crate::config::repo::Repo;
use crate::git::Commit;
use crate::git::history::History;
use crate::ops::pipeline::{self, PipelineError};
use crate::plan::Revision;
use crate::target::observe::observe_checked;
use crate::target::{AccountRef, ErrorClass, FanOut, Observed, Target};

/// The version of the JSON drift document.
pub const DRIFT_FORMAT_VERSION: u32 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
#[schemars(rename = "Status")]
pub enum DriftStatus {
    InSync,
    Drifted,
    Unreachable,
    Orphaned,
    /// Approved for decommission in fleet.yaml, and its pointer is a tombstone (or its state
    /// is gone): as git wants it.
    Decommissioned,
}

impl DriftStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            DriftStatus::InSync => "in-sync",
            DriftStatus::Drifted => "drifted",
            DriftStatus::Unreachable => "unreachable",
            DriftStatus::Orphaned => "orphaned",
            DriftStatus::Decommissioned => "decommissioned",
        }
    }
}

/// Why an account is not in sync (machine-readable; `cause` is the sentence).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum CauseKind {
    NeverDeployed,
    Tampered,
    Behind,
    OutOfBand,
    Unreachable,
    Orphaned,
    /// Approved for decommission, and still served: the next apply writes its tombstone.
    DecommissionPending,
}

/// What the account's pointer says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct Deployed {
    pub digest: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    pub applied_by: String,
    pub applied_at: String,
}

/// One account's line of the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct AccountDrift {
    pub name: String,
    pub account_id: String,
    pub status: DriftStatus,
    /// Why it is not in sync, in words; absent when in sync.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cause: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cause_kind: Option<CauseKind>,
    /// The classified error of an unreachable account.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorClass>,
    /// For `behind`: how many commits of the branch the deployed one is behind the head.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub commits_behind: Option<usize>,
    /// The digest the head renders (absent for orphans).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expected: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deployed: Option<Deployed>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, JsonSchema)]
pub struct DriftSummary {
    /// Accounts in git at the head (orphans are counted apart).
    pub accounts: usize,
    pub in_sync: usize,
    pub drifted: usize,
    pub unreachable: usize,
    pub orphaned: usize,
    /// Accounts approved for decommission whose pointer is a tombstone (not in `accounts`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub decommissioned: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// The whole report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct DriftReport {
    pub format_version: u32,
    pub repo: String,
    pub head: Revision,
    pub target: String,
    /// How many commits of the branch were searched for deployed digests.
    pub history_depth: usize,
    pub summary: DriftSummary,
    /// Sorted by status (drifted, unreachable, orphaned, in sync), then name.
    pub accounts: Vec<AccountDrift>,
}

impl DriftReport {
    /// Scrubs the texts a reader sees: the repo and target as given, and each account's
    /// cause.
    pub fn scrub(&mut self, key: &[u8]) {
        crate::redact::scrub_in_place(&mut self.repo, key);
        crate::redact::scrub_in_place(&mut self.target, key);
        for account in &mut self.accounts {
            crate::redact::scrub_opt(&mut account.cause, key);
        }
    }

    /// 0 in sync, 2 drift (drifted or orphaned accounts), 1 when any account could not be
    /// read.
    pub fn exit_code(&self) -> u8 {
        if self.summary.unreachable > 0 {
            1
        } else if self.summary.drifted + self.summary.orphaned > 0 {
            2
        } else {
            0
        }
    }
}

/// What the pointer's recorded commit turned out to be, found by rendering it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Behind {
    pub commit: String,
    /// Position on the branch: 1 = the head's parent.
    pub commits_behind: usize,
}

/// One account in git at the head, with what it should run and what it runs.
#[derive(Debug, Clone)]
pub struct Subject<'a> {
    pub account: &'a AccountRef,
    pub expected: &'a Digest,
    pub observed: &'a Observed,
    /// Set when the deployed digest was verified to be an older commit's.
    pub behind: Option<&'a Behind>,
}

fn deployed_of(observed: &Observed) -> Option<Deployed> {
    match observed {
        Observed::Deployed { pointer, .. }
        | Observed::Current { pointer, .. }
        | Observed::Pointed { pointer, .. } => Some(deployed_from(pointer)),
        _ => None,
    }
}

fn deployed_from(pointer: &crate::target::Pointer) -> Deployed {
    Deployed {
        digest: pointer.digest.to_string(),
        commit: pointer.commit.clone(),
        applied_by: pointer.applied_by.clone(),
        applied_at: pointer.applied_at.clone(),
    }
}

fn short(s: &str) -> &str {
    &s[..s.len().min(7)]
}

/// Decides one account's status and cause. Pure.
pub fn assess(subject: &Subject<'_>) -> AccountDrift {
    let mut out = AccountDrift {
        name: subject.account.name.clone(),
        account_id: subject.account.id.clone(),
        status: DriftStatus::Drifted,
        cause: None,
        cause_kind: None,
        error: None,
        commits_behind: None,
        expected: Some(subject.expected.to_string()),
        deployed: deployed_of(subject.observed),
    };
    let mut set = |kind: CauseKind, cause: String| {
        out.cause_kind = Some(kind);
        out.cause = Some(cause);
    };
    match subject.observed {
        // A tombstone keeps the digest: an account back in git still answers 410 until
        // the next apply replaces it.
        Observed::Deployed { pointer, .. }
        | Observed::Current { pointer, .. }
        | Observed::Pointed { pointer, .. }
            if pointer.is_tombstone() =>
        {
            set(
                CauseKind::OutOfBand,
                format!(
                    "{}: its pointer is a tombstone (decommissioned at {}) though the account is in git: it answers 410 until the next apply",
                    subject.account.name,
                    pointer
                        .decommissioned
                        .as_ref()
                        .map_or("-", |d| d.at.as_str())
                ),
            );
        }
        Observed::New => set(CauseKind::NeverDeployed, "never deployed".into()),
        Observed::Unreachable { reason, class } => match class {
            ErrorClass::Tampered => {
                set(CauseKind::Tampered, format!("tampered: {reason}"));
            }
            // A pointer naming a bundle nobody stored, or one that does not parse, was
            // written by hand: fleetgate stores the bundle before it moves the pointer.
            ErrorClass::MissingBundle | ErrorClass::Corrupt => {
                set(CauseKind::OutOfBand, format!("out-of-band edit: {reason}"));
            }
            _ => {
                set(CauseKind::Unreachable, reason.clone());
                out.status = DriftStatus::Unreachable;
                out.error = Some(*class);
            }
        },
        Observed::Deployed { pointer, .. }
        | Observed::Current { pointer, .. }
        | Observed::Pointed { pointer, .. }
            if &pointer.digest == subject.expected =>
        {
            out.status = DriftStatus::InSync;
        }
        Observed::Deployed { pointer, .. }
        | Observed::Current { pointer, .. }
        | Observed::Pointed { pointer, .. } => match subject.behind {
            Some(b) => {
                set(
                    CauseKind::Behind,
                    format!(
                        "still on {}, {} commit{} behind",
                        short(&b.commit),
                        b.commits_behind,
                        if b.commits_behind == 1 { "" } else { "s" }
                    ),
                );
                out.commits_behind = Some(b.commits_behind);
            }
            None => set(
                CauseKind::OutOfBand,
                format!(
                    "out-of-band edit: {} is not what {} renders{}",
                    pointer.digest.short(),
                    match &pointer.commit {
                        Some(c) => format!("its recorded commit {}", short(c)),
                        None => "any recorded commit".to_string(),
                    },
                    match &pointer.commit {
                        Some(_) => " (or that commit is not among the branch's recent ones)",
                        None => "",
                    }
                ),
            ),
        },
    }
    out
}

/// An account deployed in the target but gone from git.
pub fn orphan(account: &AccountRef, observed: &Observed) -> AccountDrift {
    AccountDrift {
        name: account.name.clone(),
        account_id: account.id.clone(),
        status: DriftStatus::Orphaned,
        cause: Some("deployed, but no longer in git (fleetgate never deletes it)".into()),
        cause_kind: Some(CauseKind::Orphaned),
        error: None,
        commits_behind: None,
        expected: None,
        deployed: deployed_of(observed),
    }
}

/// The line of an account approved for decommission, from its pointer.
fn decommission_line(
    account: &AccountRef,
    read: Result<Option<(crate::target::Pointer, crate::target::ETag)>, crate::target::TargetError>,
) -> AccountDrift {
    let mut line = AccountDrift {
        name: account.name.clone(),
        account_id: account.id.clone(),
        status: DriftStatus::Decommissioned,
        cause: None,
        cause_kind: None,
        error: None,
        commits_behind: None,
        expected: None,
        deployed: None,
    };
    match read {
        Ok(None) => {
            line.cause = Some("decommissioned: no state left (erased, or never deployed)".into());
        }
        Ok(Some((pointer, _))) => {
            line.deployed = Some(deployed_from(&pointer));
            match &pointer.decommissioned {
                Some(d) => {
                    line.cause = Some(format!("decommissioned at {} by {}", d.at, d.by));
                }
                None => {
                    line.status = DriftStatus::Drifted;
                    line.cause_kind = Some(CauseKind::DecommissionPending);
                    line.cause = Some(match &pointer.hold {
                        Some(h) => format!(
                            "{}: approved for decommission and still served: held by {} since {} ({}); `fleetgate release` lets it be decommissioned",
                            account.name, h.by, h.at, h.reason
                        ),
                        None => format!(
                            "{}: approved for decommission in fleet.yaml and still served: the next apply writes its tombstone",
                            account.name
                        ),
                    });
                }
            }
        }
        Err(e) => {
            line.status = DriftStatus::Unreachable;
            line.error = Some(e.class());
            line.cause_kind = Some(CauseKind::Unreachable);
            line.cause = Some(e.to_string());
        }
    }
    line
}

/// Sorts the lines (most urgent first) and counts them.
pub fn report(
    repo: &str,
    head: Revision,
    target: &str,
    history_depth: usize,
    mut accounts: Vec<AccountDrift>,
) -> DriftReport {
    let rank = |s: DriftStatus| match s {
        DriftStatus::Drifted => 0,
        DriftStatus::Unreachable => 1,
        DriftStatus::Orphaned => 2,
        DriftStatus::Decommissioned => 3,
        DriftStatus::InSync => 4,
    };
    accounts.sort_by(|a, b| {
        rank(a.status)
            .cmp(&rank(b.status))
            .then_with(|| a.name.cmp(&b.name))
    });
    let count = |s: DriftStatus| accounts.iter().filter(|a| a.status == s).count();
    let summary = DriftSummary {
        accounts: accounts.len()
            - count(DriftStatus::Orphaned)
            - count(DriftStatus::Decommissioned),
        in_sync: count(DriftStatus::InSync),
        drifted: count(DriftStatus::Drifted),
        unreachable: count(DriftStatus::Unreachable),
        orphaned: count(DriftStatus::Orphaned),
        decommissioned: count(DriftStatus::Decommissioned),
    };
    DriftReport {
        format_version: DRIFT_FORMAT_VERSION,
        repo: repo.to_string(),
        head,
        target: target.to_string(),
        history_depth,
        summary,
        accounts,
    }
}

/// Gathers the inputs: the head's bundles, every account's deployed state, the commits the
/// drifted pointers name (rendered once per commit), and accounts the branch's last
/// `depth` commits had but the head does not (for orphans).
pub async fn run(
    repo: &dyn History,
    head: &Commit,
    target: &dyn Target,
    fan: &FanOut<'_>,
    depth: usize,
) -> Result<DriftReport, PipelineError> {
    let prepared = pipeline::prepare(repo, None, head)?;
    let refs: Vec<AccountRef> = prepared.desired.iter().map(|d| d.account.clone()).collect();
    let observed = observe_checked(target, &refs, fan).await;
    let history = repo.first_parents(head, depth.max(1))?;
    let position: BTreeMap<String, usize> = history
        .iter()
        .enumerate()
        .map(|(i, c)| (c.id.to_string(), i))
        .collect();

    // Pointers that name an older commit of the branch: render that commit (once for all
    // its accounts) to check the claim.
    let mut claims: BTreeMap<usize, Vec<&str>> = BTreeMap::new();
    for d in &prepared.desired {
        if let Some(Observed::Pointed { pointer, .. }) = observed.get(&d.account.name)
            && pointer.digest != d.digest
            && let Some(commit) = &pointer.commit
            && let Some(&i) = position.get(commit)
            && i > 0
        {
            claims.entry(i).or_default().push(&d.account.name);
        }
    }
    let mut behind: BTreeMap<String, Behind> = BTreeMap::new();
    for (i, names) in claims {
        let old = Repo::load(&*repo.snapshot(&history[i])?);
        for name in names {
            let Some(Observed::Pointed { pointer, .. }) = observed.get(name) else {
                continue;
            };
            if let Ok(r) = crate::render(&old, name)
                && r.digest == pointer.digest
            {
                behind.insert(
                    name.to_string(),
                    Behind {
                        commit: history[i].id.to_string(),
                        commits_behind: i,
                    },
                );
            }
        }
    }

    let mut lines: Vec<AccountDrift> = prepared
        .desired
        .iter()
        .map(|d| {
            let observed = observed.get(&d.account.name).unwrap_or(&Observed::New);
            assess(&Subject {
                account: &d.account,
                expected: &d.digest,
                observed,
                behind: behind.get(&d.account.name),
            })
        })
        .collect();

    // Accounts approved for decommission: their pointers only (a tombstone's bundle may be
    // erased already).
    let approved = fan
        .run(
            "drift",
            prepared.decommissions.iter(),
            |(a, _)| a,
            |(a, _)| async move { target.read_pointer(a).await },
        )
        .await;
    for (name, read) in approved {
        let Some((account, _)) = prepared.decommissions.iter().find(|(a, _)| a.name == name) else {
            continue;
        };
        lines.push(decommission_line(account, read));
    }

    // Orphans: accounts the recent history had, and whatever the target can list, except
    // those approved for decommission.
    let fleet: BTreeSet<&str> = prepared
        .desired
        .iter()
        .map(|d| d.account.name.as_str())
        .chain(prepared.decommissions.iter().map(|(a, _)| a.name.as_str()))
        .collect();
    let mut former: BTreeMap<String, AccountRef> = BTreeMap::new();
    let head_accounts: BTreeSet<String> =
        repo.files_under(head, "accounts/")?.into_iter().collect();
    for commit in history.iter().skip(1) {
        // One tree walk per commit; only the (rarer) commits with account files the head
        // lacks are loaded.
        if repo
            .files_under(commit, "accounts/")?
            .iter()
            .all(|f| head_accounts.contains(f))
        {
            continue;
        }
        let old = Repo::load(&*repo.snapshot(commit)?);
        for name in old.account_names() {
            if !fleet.contains(name)
                && !former.contains_key(name)
                && let Some(r) = AccountRef::from_repo(&old, name)
            {
                former.insert(name.to_string(), r);
            }
        }
    }
    for name in target.deployed_accounts().await? {
        if !fleet.contains(name.as_str()) && !former.contains_key(&name) {
            former.insert(
                name.clone(),
                AccountRef {
                    name: name.clone(),
                    id: String::new(),
                    region: String::new(),
                    bucket: String::new(),
                    prefix: name,
                },
            );
        }
    }
    let former: Vec<AccountRef> = former.into_values().collect();
    let seen = observe_checked(target, &former, fan).await;
    for account in &former {
        match seen.get(&account.name) {
            Some(
                o @ (Observed::Deployed { .. }
                | Observed::Current { .. }
                | Observed::Pointed { .. }),
            ) => {
                lines.push(orphan(account, o));
            }
            // A removed account whose store is gone or closed to us was offboarded.
            None | Some(Observed::New) => {}
            Some(Observed::Unreachable {
                class:
                    ErrorClass::BucketMissing | ErrorClass::AccessDenied | ErrorClass::RoleNotAssumable,
                ..
            }) => {}
            // Anything else (throttled, timeout, a pointer that is there but broken) may
            // still be serving: say so rather than drop it.
            Some(Observed::Unreachable { reason, class }) => {
                let mut line = orphan(account, &Observed::New);
                line.status = DriftStatus::Unreachable;
                line.error = Some(*class);
                line.cause_kind = Some(CauseKind::Unreachable);
                line.cause = Some(format!(
                    "removed from git; its state could not be read: {reason}"
                ));
                lines.push(line);
            }
        }
    }

    Ok(report(
        repo.location(),
        Revision {
            rev: head.rev.clone(),
            commit: head.id.to_string(),
        },
        &target.location(),
        history.len(),
        lines,
    ))
}

/// The report as JSON (pretty), ending in a newline.
pub fn json(report: &DriftReport) -> String {
    let mut s = serde_json::to_string_pretty(report)
        .unwrap_or_else(|e| unreachable!("a drift report always serializes: {e}"));
    s.push('\n');
    s
}

fn headline(report: &DriftReport) -> String {
    let s = &report.summary;
    format!(
        "{} accounts in git: {} in sync, {} drifted, {} unreachable; {} orphaned{}",
        s.accounts,
        s.in_sync,
        s.drifted,
        s.unreachable,
        s.orphaned,
        if s.decommissioned > 0 {
            format!("; {} decommissioned", s.decommissioned)
        } else {
            String::new()
        }
    )
}

/// For terminals and logs: one line per account that is not in sync, then the summary.
pub fn text(report: &DriftReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Drift of {} against {} ({}), {} accounts, history {} commit{}\n",
        report.target,
        report.head.rev,
        short(&report.head.commit),
        report.summary.accounts,
        report.history_depth,
        if report.history_depth == 1 { "" } else { "s" }
    );
    for a in report
        .accounts
        .iter()
        .filter(|a| a.status != DriftStatus::InSync)
    {
        let _ = writeln!(
            out,
            "  {:<12} {}{}: {}",
            a.status.as_str(),
            a.name,
            if a.account_id.is_empty() {
                String::new()
            } else {
                format!(" ({})", a.account_id)
            },
            a.cause.as_deref().unwrap_or("")
        );
    }
    if report
        .accounts
        .iter()
        .any(|a| a.status != DriftStatus::InSync)
    {
        out.push('\n');
    }
    let _ = writeln!(out, "{}.", headline(report));
    out
}

/// For an issue or a chat post: a summary line, then a table of the accounts not in sync.
pub fn markdown(report: &DriftReport) -> String {
    let mut out = String::new();
    let icon = match report.exit_code() {
        0 => "✅",
        2 => "⚠️",
        _ => "❌",
    };
    let _ = writeln!(out, "<!-- fleetgate:drift -->");
    let _ = writeln!(
        out,
        "### {icon} Drift report: `{}` at `{}` against `{}`\n",
        report.head.rev,
        short(&report.head.commit),
        report.target
    );
    let _ = writeln!(out, "{}.\n", headline(report));
    let not_in_sync: Vec<&AccountDrift> = report
        .accounts
        .iter()
        .filter(|a| a.status != DriftStatus::InSync)
        .collect();
    if not_in_sync.is_empty() {
        return out;
    }
    let _ = writeln!(out, "| Account | Account id | Status | Cause |");
    let _ = writeln!(out, "|---|---|---|---|");
    for a in not_in_sync {
        let cause = a.cause.as_deref().unwrap_or("").replace('|', "\\|");
        let _ = writeln!(
            out,
            "| `{}` | {} | {} | {} |",
            a.name,
            a.account_id,
            a.status.as_str(),
            cause
        );
    }
    out
}

#[cfg(test)]
mod tests;
