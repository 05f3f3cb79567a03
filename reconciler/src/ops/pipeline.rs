//! The plan and apply pipelines: git -> load -> (affected) -> render -> observe -> plan ->
//! (apply). The adapters (git, target, clock) are passed in; the decisions are the pure
//! functions of [`crate::render::affected`], [`crate::render`] and [`crate::plan`].

use std::collections::{BTreeMap, BTreeSet};

use fleetgate_bundle::Digest;

use crate::config::diagnostics::{Diagnostic, Diagnostics};
use crate::config::manifest::DecommissionSpec;
use crate::config::repo::Repo;
use crate::git::history::History;
use crate::git::{Commit, GitError};
use crate::plan::{self, Context, Desired, Plan, Revision};
use crate::render::affected::affected;
use crate::render::render;
use crate::target::observe::{Read, observe_account};
use crate::target::{AccountRef, FanOut, Observed, Target, TargetError};

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Git(#[from] GitError),
    #[error(
        "{rev} ({commit}) has invalid manifests ({} problem{}); nothing was planned or applied",
        .diagnostics.len(),
        if .diagnostics.len() == 1 { "" } else { "s" }
    )]
    Invalid {
        rev: String,
        commit: String,
        diagnostics: Vec<Diagnostic>,
    },
    #[error(transparent)]
    Target(#[from] TargetError),
    #[error(
        "{rev} ({}) is older than what {} run{}: {}; applying it would move {} back without a hold. \
         This is a rollback: use `fleetgate rollback --to {rev}` (it holds the accounts, so the \
         watch daemon does not roll them forward again), or pass --allow-backwards. Nothing was written",
        &commit[..12.min(commit.len())],
        backwards_count(accounts),
        if accounts.len() == 1 { "s" } else { "" },
        backwards_list(accounts),
        if accounts.len() == 1 { "it" } else { "them" }
    )]
    Backwards {
        rev: String,
        commit: String,
        /// Account, and the newer commit its pointer records.
        accounts: Vec<(String, String)>,
    },
}

fn backwards_count(accounts: &[(String, String)]) -> String {
    match accounts.len() {
        1 => "1 account".to_string(),
        n => format!("{n} accounts"),
    }
}

/// The first accounts a backwards apply would move, with the commit each runs.
fn backwards_list(accounts: &[(String, String)]) -> String {
    const SHOWN: usize = 10;
    let mut list: Vec<String> = accounts
        .iter()
        .take(SHOWN)
        .map(|(a, c)| format!("{a} at {}", &c[..12.min(c.len())]))
        .collect();
    if accounts.len() > SHOWN {
        list.push(format!("and {} more", accounts.len() - SHOWN));
    }
    list.join(", ")
}

/// Everything decided from git alone: the head's bundles for the accounts to plan.
#[derive(Debug)]
pub struct Prepared {
    pub context: Context,
    pub desired: Vec<Desired>,
    /// The accounts fleet.yaml approves for decommission, where each is.
    pub decommissions: Vec<(AccountRef, DecommissionSpec)>,
    /// The head's fleet.yaml (how accounts are reached).
    pub fleet: Option<crate::config::manifest::FleetSpec>,
    /// Set by [`Prepared::restrict_to`].
    pub shard: Option<Shard>,
}

fn revision(c: &Commit) -> Revision {
    Revision {
        rev: c.rev.clone(),
        commit: c.id.to_string(),
    }
}

/// Loads the head (and the base), works out which accounts the change can affect, and
/// renders those on both sides (every account at the head when there is no base). Invalid
/// manifests at the head fail the whole plan with every problem located; the base is only
/// context, so its problems are not the plan's.
pub fn prepare(
    repo: &dyn History,
    base: Option<&Commit>,
    head: &Commit,
) -> Result<Prepared, PipelineError> {
    let head_repo = Repo::load(&*repo.snapshot(head)?);
    let invalid = |diagnostics: Vec<Diagnostic>| PipelineError::Invalid {
        rev: head.rev.clone(),
        commit: head.short(),
        diagnostics,
    };
    if !head_repo.diagnostics.is_empty() {
        let mut ds = Diagnostics::new();
        ds.extend(head_repo.diagnostics.iter().cloned());
        return Err(invalid(ds.into_sorted()));
    }

    let (to_render, base_repo, changed) = match base {
        Some(base) => {
            let base_repo = Repo::load(&*repo.snapshot(base)?);
            let changed = repo.changed_paths(base, head)?;
            let a = affected(&base_repo, &head_repo, &changed);
            (a.accounts, Some(base_repo), Some(changed))
        }
        None => (
            head_repo.account_names().map(str::to_string).collect(),
            None,
            None,
        ),
    };

    let mut problems = Diagnostics::new();
    let mut desired = Vec::new();
    let mut rendered = plan::RenderCounts::default();
    for name in to_render
        .iter()
        .filter(|n| head_repo.accounts.contains_key(*n))
    {
        match render(&head_repo, name) {
            Ok(r) => {
                rendered.head += 1;
                // A repo without problems places every account (validate checks the
                // templates).
                let Some(account) = AccountRef::from_repo(&head_repo, name) else {
                    continue;
                };
                desired.push(Desired::new(account, &r.bundle, &r.canonical, r.digest));
            }
            Err(errs) => problems.extend(errs),
        }
    }
    // An overlay no account selects must still apply cleanly; check the ones this change
    // touches (all of them without a base).
    for overlay in crate::config::repo::unused_overlays(&head_repo) {
        let dir = format!("overlays/{overlay}/");
        if changed
            .as_ref()
            .is_none_or(|c| c.iter().any(|p| p.starts_with(&dir)))
        {
            problems.extend(crate::render::validate::check_overlay_alone(
                &head_repo, overlay,
            ));
        }
    }
    if !problems.is_empty() {
        return Err(invalid(problems.into_sorted()));
    }

    if let Some(base_repo) = &base_repo {
        let mut base_digests: BTreeMap<&str, Digest> = BTreeMap::new();
        for name in to_render
            .iter()
            .filter(|n| base_repo.accounts.contains_key(*n))
        {
            // A base that does not render is history, not this plan's problem: its accounts
            // simply have no base digest to compare with.
            rendered.base += 1;
            if let Ok(r) = render(base_repo, name) {
                base_digests.insert(name, r.digest);
            }
        }
        for d in &mut desired {
            d.base_digest = base_digests.remove(d.account.name.as_str());
        }
    }

    let (waves, concurrency, wave_of) = rollout_order(&head_repo);
    let decommissions: Vec<(AccountRef, DecommissionSpec)> = head_repo
        .fleet
        .as_ref()
        .map(|f| {
            f.spec
                .offboarding
                .decommission
                .iter()
                .filter_map(|d| Some((AccountRef::from_decommission(&f.spec, d)?, d.clone())))
                .collect()
        })
        .unwrap_or_default();
    Ok(Prepared {
        context: Context {
            repo: repo.location().to_string(),
            base: base.map(revision),
            head: revision(head),
            target: String::new(),
            fleet: head_repo.account_names().map(str::to_string).collect(),
            deployed: BTreeSet::new(),
            decommission: decommissions.iter().map(|(a, _)| a.name.clone()).collect(),
            rendered,
            waves,
            concurrency,
            wave_of,
        },
        desired,
        decommissions,
        fleet: head_repo.fleet.as_ref().map(|f| f.spec.clone()),
        shard: None,
    })
}

/// fleet.yaml's waves, the fleet's concurrency, and each account's wave: what the plan
/// needs to order the rollout.
pub fn rollout_order(
    repo: &Repo,
) -> (
    Vec<crate::config::manifest::Wave>,
    usize,
    BTreeMap<String, usize>,
) {
    let Some(fleet) = repo.fleet.as_ref() else {
        return (Vec::new(), 32, BTreeMap::new());
    };
    let waves = &fleet.spec.waves;
    let wave_of = repo
        .accounts
        .values()
        .filter_map(|a| {
            let i =
                crate::config::waves::wave_of(waves, &a.doc.spec.stage, &a.doc.metadata.labels)?;
            Some((a.name.clone(), i))
        })
        .collect();
    (waves.clone(), fleet.spec.concurrency as usize, wave_of)
}

/// How much of the deployed state a plan reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Verify {
    /// Pointers, and bundles only where a diff needs them: an account already at the head
    /// costs one read (AssumeRole aside). Tampered bundles are the drift report's job.
    #[default]
    Pointers,
    /// Every deployed bundle too, checked against its digest.
    Bundles,
    /// Pointers only, never a deployed bundle: no diff to show (apply, the daemon and
    /// rollback print outcomes, not diffs), one request per account.
    PointersOnly,
}

impl Verify {
    fn read(self, wanted: &Digest) -> Read<'_> {
        match self {
            Verify::Pointers => Read::Unless(wanted),
            Verify::Bundles => Read::Bundle,
            Verify::PointersOnly => Read::PointerOnly(wanted),
        }
    }
}

/// Observes the prepared accounts in the target and decides the plan. `superseded` says
/// whether the tracked branch has moved past a commit (holds recorded there are over).
///
/// Each account is planned as soon as its state is read, in its own step of the fan-out,
/// and only what the plan shows of it is kept ([`plan::PlannedAccount`]: its entry with the
/// diff packed): the deployed bundle it was compared with is dropped there, so memory grows
/// with the plan, not with the bundles read.
pub async fn observe_and_plan(
    prepared: &Prepared,
    target: &dyn Target,
    options: &plan::Options,
    fan: &FanOut<'_>,
    verify: Verify,
    superseded: &dyn Fn(&str) -> bool,
) -> Result<Plan, PipelineError> {
    let deployed: BTreeSet<String> = target
        .deployed_accounts()
        .await?
        .into_iter()
        .filter(|a| prepared.shard.is_none_or(|s| s.contains(a)))
        .collect();
    // Every held account names the branch head its hold was recorded at: asked once each.
    let answers: std::sync::Mutex<BTreeMap<String, bool>> = Default::default();
    let superseded = |head: &str| -> bool {
        let known = answers.lock().map(|a| a.get(head).copied()).ok().flatten();
        known.unwrap_or_else(|| {
            let answer = superseded(head);
            if let Ok(mut a) = answers.lock() {
                a.insert(head.to_string(), answer);
            }
            answer
        })
    };
    let superseded = &superseded;
    let results = fan
        .run(
            "observe",
            prepared.desired.iter(),
            |d| &d.account,
            |d| async move {
                let seen = observe_account(target, &d.account, verify.read(&d.digest)).await?;
                Ok(plan::plan_account(d, &seen, options, superseded))
            },
        )
        .await;
    let by_name: BTreeMap<&str, &Desired> = prepared
        .desired
        .iter()
        .map(|d| (d.account.name.as_str(), d))
        .collect();
    let planned = results
        .into_iter()
        .map(|(name, r)| {
            r.unwrap_or_else(|e| {
                let seen = Observed::from_error(&e);
                plan::plan_account(by_name[name.as_str()], &seen, options, superseded)
            })
        })
        .collect();
    // The accounts approved for decommission: their pointers only (the tombstone keeps the
    // digest), each decided as it is read.
    let decommissions = fan
        .run(
            "observe",
            prepared.decommissions.iter(),
            |(a, _)| a,
            |(a, d)| async move {
                let seen = match target.read_pointer(a).await? {
                    None => Observed::New,
                    Some((pointer, etag)) => Observed::Pointed { pointer, etag },
                };
                Ok(plan::plan_decommission(a, d, &seen, superseded))
            },
        )
        .await;
    let by_name: BTreeMap<&str, &(AccountRef, DecommissionSpec)> = prepared
        .decommissions
        .iter()
        .map(|p| (p.0.name.as_str(), p))
        .collect();
    let decommissions = decommissions
        .into_iter()
        .map(|(name, r)| {
            r.unwrap_or_else(|e| {
                let (a, d) = by_name[name.as_str()];
                plan::plan_decommission(a, d, &Observed::from_error(&e), superseded)
            })
        })
        .collect();
    let mut context = prepared.context.clone();
    context.target = target.location();
    context.deployed = deployed;
    Ok(plan::assemble(&context, planned, decommissions, options))
}

/// One of N disjoint parts of the fleet (`fleetgate watch --shard i/N`): an account's part
/// is a stable hash of its name, so it never moves while N stays the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: u32,
    pub count: u32,
}

impl Shard {
    pub fn of(name: &str, count: u32) -> u32 {
        use sha2::Digest as _;
        let h = sha2::Sha256::digest(name.as_bytes());
        let mut first = [0u8; 8];
        first.copy_from_slice(&h[..8]);
        (u64::from_be_bytes(first) % u64::from(count.max(1))) as u32
    }

    pub fn contains(&self, name: &str) -> bool {
        Shard::of(name, self.count) == self.index
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl std::str::FromStr for Shard {
    type Err = String;

    fn from_str(s: &str) -> Result<Shard, String> {
        let err = || format!("{s:?}: a shard is i/N with 0 <= i < N, e.g. 0/3");
        let (i, n) = s.split_once('/').ok_or_else(err)?;
        let (index, count): (u32, u32) = (
            i.trim().parse().map_err(|_| err())?,
            n.trim().parse().map_err(|_| err())?,
        );
        if count == 0 || index >= count {
            return Err(err());
        }
        Ok(Shard { index, count })
    }
}

impl Prepared {
    /// Keeps only the shard's accounts: the plan, the rollout and orphans are the shard's.
    pub fn restrict_to(&mut self, shard: Shard) {
        self.desired.retain(|d| shard.contains(&d.account.name));
        self.decommissions.retain(|(a, _)| shard.contains(&a.name));
        self.context.decommission.retain(|n| shard.contains(n));
        self.context.fleet.retain(|n| shard.contains(n));
        self.context.wave_of.retain(|n, _| shard.contains(n));
        self.shard = Some(shard);
    }
}
