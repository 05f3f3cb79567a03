//! What the commands share: the runtime, the repo and revision they open, the target
//! they connect, who and when they record, which accounts they select.

use std::path::PathBuf;

use anyhow::{Context as _, Result};

use crate::cli::args::{GitArgs, TargetArgs};
use crate::cli::output;
use crate::config::diagnostics::Diagnostics;
use crate::config::repo::Repo;
use crate::config::selector::Selector;
use crate::execute::Stamp;
use crate::git::{Commit, GitRepo};
use crate::target::AccountRef;
use crate::target::connect::{Connected, Purpose};

/// Where remote repositories are cached.
pub fn cache_dir(args: &GitArgs) -> PathBuf {
    if let Some(dir) = &args.cache_dir {
        return dir.clone();
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("fleetgate")
}

pub fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        // The main thread's size: manifests and specs are parsed and converted recursively
        // on these threads too (the watch daemon), up to the YAML nesting limit.
        .thread_stack_size(8 << 20)
        .build()
        .context("cannot start the async runtime")
}

/// The key of the fingerprints that stand in for sensitive values: random per run, or
/// FLEETGATE_REDACTION_KEY when outputs must compare across runs (keep it secret).
/// The same key fingerprints secrets in diagnostics, errors and logs (`crate::redact`).
pub fn redaction_key() -> Vec<u8> {
    crate::redact::run_key().to_vec()
}

/// Opens the repo and resolves the revisions; git errors name the ref or path.
pub fn open_git(args: &GitArgs) -> Result<GitRepo> {
    Ok(GitRepo::open(&args.repo, &cache_dir(args))?)
}

/// Who and when, for the pointers this run writes.
pub fn stamp() -> Stamp {
    Stamp {
        applied_by: applied_by(),
        applied_at: crate::clock::Clock::start().rfc3339(),
    }
}

fn applied_by() -> String {
    if let Ok(who) = std::env::var("FLEETGATE_APPLIED_BY")
        && !who.is_empty()
    {
        return who;
    }
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("USERNAME"))
        .unwrap_or_else(|_| "unknown".into());
    let host = std::env::var("HOSTNAME").unwrap_or_default();
    if host.is_empty() {
        format!("fleetgate/{} {user}", env!("CARGO_PKG_VERSION"))
    } else {
        format!("fleetgate/{} {user}@{host}", env!("CARGO_PKG_VERSION"))
    }
}

/// The selected accounts of the repo (all without a selector), placed in the target.
pub fn select_accounts(config: &Repo, selector: Option<&Selector>) -> Result<Vec<AccountRef>> {
    let names: Vec<String> = match selector {
        Some(sel) => sel
            .select(config)
            .map_err(anyhow::Error::msg)?
            .into_iter()
            .collect(),
        None => config.account_names().map(str::to_string).collect(),
    };
    let approved = |n: &str| {
        let fleet = &config.fleet.as_ref()?.spec;
        let d = fleet
            .offboarding
            .decommission
            .iter()
            .find(|d| d.account == n)?;
        AccountRef::from_decommission(fleet, d)
    };
    Ok(names
        .iter()
        .filter_map(|n| AccountRef::from_repo(config, n).or_else(|| approved(n)))
        .collect())
}

/// A commit's valid repo and a target connected with its fleet.yaml: where the commands
/// that work on deployed accounts start.
#[derive(Debug)]
pub struct Session {
    pub repo: GitRepo,
    pub commit: Commit,
    pub config: Repo,
    pub rt: tokio::runtime::Runtime,
    pub target: Connected,
}

/// Opens the repo at `rev` and connects the target; `None` when the manifests are invalid
/// (every problem printed).
pub fn connect_at(
    source: &GitArgs,
    rev: &str,
    target_args: &TargetArgs,
) -> Result<Option<Session>> {
    let repo = open_git(source)?;
    let commit = repo.resolve(rev)?;
    let Some(config) = load_valid(&repo, &commit)? else {
        return Ok(None);
    };
    let rt = runtime()?;
    let fleet = config.fleet.as_ref().map(|f| &f.spec);
    let target = target_args.connect(&rt, fleet, &commit.id.to_string(), Purpose::Read)?;
    Ok(Some(Session {
        repo,
        commit,
        config,
        rt,
        target,
    }))
}

/// The head's repo, every problem printed when it has any.
pub fn load_valid(repo: &GitRepo, commit: &Commit) -> Result<Option<Repo>> {
    let loaded = Repo::load(&repo.snapshot(commit)?);
    if loaded.diagnostics.is_empty() {
        return Ok(Some(loaded));
    }
    let mut ds = Diagnostics::new();
    ds.extend(loaded.diagnostics.iter().cloned());
    output::print_diagnostics(&ds.into_sorted());
    Ok(None)
}
