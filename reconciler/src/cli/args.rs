//! The command line's arguments: one struct per command.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand, ValueEnum};

use crate::config::selector::Selector;
use crate::ops::pipeline;
use crate::target::connect::{Access, Connected, Purpose, TargetSpec};
use crate::target::{FanOut, Progress};

#[derive(Parser, Debug)]
#[command(
    name = "fleetgate",
    version,
    about = "GitOps for a fleet of AWS accounts: one config repo, one gateway bundle per account"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Report every problem of a config repo (exit 0 valid, 1 invalid).
    Validate(ValidateArgs),
    /// Render accounts' bundles: one line `<account> sha256:<hex>` each.
    Render(RenderArgs),
    /// What would change in which account: the head against the target, or with --base only
    /// the accounts the base..head change can affect (exit 0 no changes, 2 changes, 1 error).
    Plan(PlanArgs),
    /// Deploy the head to every account that needs it, wave by wave (fleet.yaml): bundle
    /// first, then the pointer by compare-and-swap; each wave's gateways must serve the new
    /// bundle and stay healthy through the bake, or the wave is rolled back. Idempotent:
    /// accounts already at the head are not written. Exit 0 done, 1 failed or rolled back.
    Apply(ApplyArgs),
    /// Point accounts back at the bundles of an earlier commit (or a digest): bundles already
    /// stored are not rewritten, pointers move by compare-and-swap, all at once unless
    /// --waves. Records a hold so the watch daemon does not roll the accounts forward until a
    /// newer commit lands on the branch (the revert) or `fleetgate release`.
    Rollback(RollbackArgs),
    /// Lift rollback holds, so the watch daemon rolls the accounts forward again.
    Release(ReleaseArgs),
    /// Delete everything stored for decommissioned accounts past fleet.yaml's grace period:
    /// every version of every object under each account's prefix (bundles, pointer, history,
    /// gateway status reports), with a receipt in the hub's state store, printed. Only for
    /// accounts approved in fleet.yaml's offboarding.decommission and gone from accounts/.
    /// Idempotent and resumable. Exit 0 erased (or already), 1 refused or failed.
    Erase(EraseArgs),
    /// An account's pointer history, newest first: digest, commit, who and when, holds.
    History(HistoryArgs),
    /// For every account: in sync with the head, or drifted with a cause (behind, out-of-band
    /// edit, tampered, never deployed), unreachable, or orphaned (exit 0 in sync, 2 drift,
    /// 1 error).
    Drift(DriftArgs),
    /// For on-call, one read of every account's pointer: per wave of fleet.yaml which
    /// accounts run which commit, holds, never deployed and unreachable accounts, the last
    /// automatic rollback, and with --daemon the watch daemon's rollout (exit 0 read, 1 error).
    Status(StatusArgs),
    /// Onboard accounts: create each selected account's config store when missing (S3: the
    /// bucket, versioned, encrypted by default, public access blocked), through its assumed
    /// role. Idempotent. For production onboarding, use the StackSet template
    /// deploy/aws/account.yaml instead.
    Bootstrap(BootstrapArgs),
    /// Keep the fleet at the head of a branch: fetch on an interval or on a push webhook,
    /// roll each new head out wave by wave with health gates (one rollout at a time; a newer
    /// commit preempts the running one at its next safe point), check drift on a schedule,
    /// and serve /status, /health, /metrics and /webhook. Only the lease holder rolls out
    /// (docs/watch.md).
    Watch(Box<WatchArgs>),
    /// The whole loop on this machine, no AWS account needed: a git repo of the example
    /// fleet in DIR/repo, reconciled wave by wave to a file:// fleet by the watch daemon, one
    /// gateway with its identity provider per account on local ports, demo backends; prints
    /// what to try. Ctrl-C stops everything.
    #[cfg(feature = "up")]
    Up(UpArgs),
    /// Generate a config repo with N accounts (deterministic) for tests and benchmarks.
    ExampleFleet(ExampleFleetArgs),
    /// Write the manifests' JSON Schemas (generated from the types) into DIR.
    Schemas(SchemasArgs),
}

impl Command {
    /// Whether the command sets up its own logging: `watch` from its `--log-format`, `up`
    /// as text for the person reading its guide. The others log as `main` sets up, in the
    /// format FLEETGATE_LOG_FORMAT names.
    pub fn sets_up_logging(&self) -> bool {
        match self {
            Command::Watch(_) => true,
            #[cfg(feature = "up")]
            Command::Up(_) => true,
            _ => false,
        }
    }
}

#[derive(clap::Args, Debug)]
pub struct WatchArgs {
    #[command(flatten)]
    pub source: GitArgs,
    /// The branch the fleet tracks (`origin/<branch>` of a remote repo).
    #[arg(long, default_value = "main")]
    pub branch: String,
    #[command(flatten)]
    pub target: TargetArgs,
    /// Where /status, /health, /metrics and /webhook are served.
    #[arg(
        long,
        value_name = "ADDR",
        default_value = "127.0.0.1:9400",
        env = "FLEETGATE_WATCH_LISTEN"
    )]
    pub listen: std::net::SocketAddr,
    /// How often the remote is fetched (a webhook wakes the daemon sooner).
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = humantime::parse_duration)]
    pub poll_interval: std::time::Duration,
    /// How often drift is checked [default: fleet.yaml's drift.interval, else 6h].
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub drift_interval: Option<std::time::Duration>,
    /// This replica's part of the fleet, i/N: accounts split by a stable hash of their
    /// name; each shard has its own lease.
    #[arg(long, value_name = "i/N")]
    pub shard: Option<pipeline::Shard>,
    /// This daemon's name in the lease and in the pointers it writes [default: host and
    /// process id].
    #[arg(long, value_name = "NAME")]
    pub identity: Option<String>,
    /// How long the lease lasts without renewal (renewed every third of it): how long a
    /// dead holder blocks the others.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = humantime::parse_duration)]
    pub lease_ttl: std::time::Duration,
    /// The hub's state bucket for the lease with --target aws [default: fleet.yaml's
    /// stateBucket].
    #[arg(long, value_name = "BUCKET")]
    pub state_bucket: Option<String>,
    /// A file holding the webhook's secret (or set FLEETGATE_WEBHOOK_SECRET); without one
    /// /webhook answers 404.
    #[arg(long, value_name = "FILE")]
    pub webhook_secret_file: Option<PathBuf>,
    /// Longest wait between retries after errors.
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = humantime::parse_duration)]
    pub max_backoff: std::time::Duration,
    /// json (one object a line: timestamp, level, target and the event's fields) or text.
    #[arg(long, env = "FLEETGATE_LOG_FORMAT", default_value = "text", value_parser = ["json", "text"])]
    pub log_format: String,
}

#[derive(clap::Args, Debug)]
pub struct GitArgs {
    /// The config repo: a local git repository (working clone or bare), or a URL
    /// (file://, https://, ssh://) cloned into the cache as a bare repository.
    #[arg(long, value_name = "PATH|URL", default_value = ".")]
    pub repo: String,
    /// Where remote repositories are cached [default: $XDG_CACHE_HOME/fleetgate or
    /// ~/.cache/fleetgate].
    #[arg(long, value_name = "DIR", env = "FLEETGATE_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
}

#[derive(clap::Args, Debug)]
pub struct TargetArgs {
    /// Where bundles are deployed: file://DIR (the embedded default, the accounts' S3 layout on
    /// a local directory) or aws (each account's bucket from fleet.yaml, through a role
    /// assumed in that account; hub credentials from the AWS default chain).
    #[arg(long, value_name = "file://DIR|aws")]
    pub target: TargetSpec,
    /// Accounts read or written at once [default: fleet.yaml's concurrency, else 32].
    #[arg(long, value_name = "N")]
    pub concurrency: Option<usize>,
    /// Longest one account may take per step (observe, apply, bootstrap), retries included.
    #[arg(long, value_name = "DURATION", default_value = "2m", value_parser = humantime::parse_duration)]
    pub account_timeout: std::time::Duration,
    /// S3 and STS endpoint for S3-compatible stores and tests (path-style addressing)
    /// [default: AWS_ENDPOINT_URL, else AWS].
    #[arg(long, value_name = "URL")]
    pub endpoint_url: Option<String>,
    /// Assume this role in every account instead of fleet.yaml's roleName: a read-only role
    /// for plans on pull requests and drift reports (deploy/aws/account.yaml makes
    /// `fleetgate-reader`), so those jobs never hold write access.
    #[arg(long, value_name = "NAME", env = "FLEETGATE_ROLE_NAME")]
    pub role_name: Option<String>,
    /// Longest one attempt of one AWS call may take (connect, send, answer); a timed-out
    /// attempt is retried with the SDK's backoff, like a throttled one (AWS_MAX_ATTEMPTS
    /// attempts, default 3), all within --account-timeout.
    #[arg(long, value_name = "DURATION", default_value = "20s", value_parser = humantime::parse_duration)]
    pub request_timeout: std::time::Duration,
}

impl TargetArgs {
    pub fn fan_out<'a>(
        &self,
        fleet: Option<&crate::config::manifest::FleetSpec>,
        progress: &'a dyn Progress,
    ) -> FanOut<'a> {
        FanOut {
            concurrency: self
                .concurrency
                .or(fleet.map(|f| f.concurrency as usize))
                .unwrap_or(32)
                .max(1),
            timeout: self.account_timeout,
            progress,
        }
    }

    pub fn connect(
        &self,
        rt: &tokio::runtime::Runtime,
        fleet: Option<&crate::config::manifest::FleetSpec>,
        commit: &str,
        purpose: Purpose,
    ) -> Result<Connected> {
        rt.block_on(self.target.connect(fleet, commit, &self.access(), purpose))
    }

    /// How the accounts are reached, as the command line says.
    pub fn access(&self) -> Access {
        Access {
            endpoint_url: self.endpoint_url.clone(),
            role_name: self.role_name.clone(),
            request_timeout: self.request_timeout,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum RolloutFormat {
    Text,
    Jsonl,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum PlanFormat {
    Text,
    Markdown,
    Json,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Text,
    Json,
}

#[derive(clap::Args, Debug)]
pub struct ValidateArgs {
    /// The config repo directory.
    #[arg(long, default_value = ".")]
    pub repo: PathBuf,
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

#[derive(clap::Args, Debug)]
pub struct RenderArgs {
    #[arg(long, default_value = ".")]
    pub repo: PathBuf,
    /// Render only these accounts (repeatable).
    #[arg(long = "account", value_name = "NAME", conflicts_with = "all")]
    pub accounts: Vec<String>,
    /// Render every account (the default).
    #[arg(long)]
    pub all: bool,
    /// Also write each canonical bundle to DIR/<account>.json.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

#[derive(clap::Args, Debug)]
pub struct ApplyArgs {
    #[command(flatten)]
    pub source: GitArgs,
    /// The revision to apply.
    #[arg(long, value_name = "REF", default_value = "HEAD")]
    pub head: String,
    #[command(flatten)]
    pub target: TargetArgs,
    /// Waves still go in order, but nothing waits for gateways: for a first deployment
    /// before any gateway runs, or break-glass.
    #[arg(long)]
    pub skip_health_gates: bool,
    /// No waves at all: every account at once, no gate, and one account's failure stops
    /// nothing (the first deployment of a fleet; break-glass).
    #[arg(long, conflicts_with = "skip_health_gates")]
    pub all_at_once: bool,
    /// Apply even where an account runs a newer commit of the repo than the head (a move
    /// back). Prefer `fleetgate rollback`, which also holds the accounts.
    #[arg(long)]
    pub allow_backwards: bool,
    /// What to print as accounts finish: `text` lines, or `jsonl` (one JSON object a line:
    /// each account's outcome, each wave's end, then the summary).
    #[arg(long, value_enum, default_value = "text")]
    pub format: RolloutFormat,
    /// Also write the rollout report as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
}

#[derive(clap::Args, Debug)]
pub struct RollbackArgs {
    #[command(flatten)]
    pub source: GitArgs,
    /// A commit (sha, tag, `HEAD~1`) or a bundle digest (`sha256:<hex>`).
    #[arg(long, value_name = "COMMIT|DIGEST")]
    pub to: String,
    /// The branch the fleet tracks: its accounts and fleet.yaml are used, and the hold
    /// lasts until it moves past its current head. In a local clone, the head held is its
    /// upstream's (origin/main), fetched now; a checkout behind it is refused.
    #[arg(long, value_name = "REF", default_value = "HEAD")]
    pub branch: String,
    #[command(flatten)]
    pub target: TargetArgs,
    /// Which accounts: names, globs, stage=, label:<key>=<value>, wave= [default: all].
    #[arg(long, value_name = "SELECTOR")]
    pub accounts: Option<Selector>,
    /// Why, recorded in the hold.
    #[arg(long, value_name = "TEXT", default_value = "rollback")]
    pub reason: String,
    /// Go wave by wave with health gates, as apply does.
    #[arg(long)]
    pub waves: bool,
    /// Do not record a hold: the watch daemon may roll the accounts forward again.
    #[arg(long)]
    pub no_hold: bool,
}

#[derive(clap::Args, Debug)]
pub struct EraseArgs {
    #[command(flatten)]
    pub source: GitArgs,
    /// The branch the fleet tracks: its fleet.yaml names the approvals and the grace period.
    #[arg(long, value_name = "REF", default_value = "HEAD")]
    pub branch: String,
    #[command(flatten)]
    pub target: TargetArgs,
    /// The accounts to erase, by name (comma-separated).
    #[arg(
        long,
        value_name = "NAMES",
        value_delimiter = ',',
        required_unless_present = "tenant",
        conflicts_with = "tenant"
    )]
    pub account: Vec<String>,
    /// Every account of this tenant that fleet.yaml approves for decommission.
    #[arg(long, value_name = "TENANT")]
    pub tenant: Option<String>,
    /// The hub's state bucket, where receipts are kept (--target aws) [default: fleet.yaml's
    /// stateBucket].
    #[arg(long, value_name = "BUCKET", env = "FLEETGATE_STATE_BUCKET")]
    pub state_bucket: Option<String>,
}

#[derive(clap::Args, Debug)]
pub struct ReleaseArgs {
    #[command(flatten)]
    pub source: GitArgs,
    #[arg(long, value_name = "REF", default_value = "HEAD")]
    pub branch: String,
    #[command(flatten)]
    pub target: TargetArgs,
    /// Which accounts [default: all].
    #[arg(long, value_name = "SELECTOR")]
    pub accounts: Option<Selector>,
}

#[derive(clap::Args, Debug)]
pub struct HistoryArgs {
    #[command(flatten)]
    pub source: GitArgs,
    #[arg(long, value_name = "REF", default_value = "HEAD")]
    pub branch: String,
    #[command(flatten)]
    pub target: TargetArgs,
    #[arg(long, value_name = "NAME")]
    pub account: String,
    /// How many entries.
    #[arg(long, default_value_t = 20)]
    pub limit: usize,
}

#[derive(clap::Args, Debug)]
pub struct DriftArgs {
    #[command(flatten)]
    pub source: GitArgs,
    /// The branch (or any revision) the fleet should run.
    #[arg(long = "ref", value_name = "REF", default_value = "HEAD")]
    pub rev: String,
    #[command(flatten)]
    pub target: TargetArgs,
    #[arg(long, value_enum, default_value_t = PlanFormat::Text)]
    pub format: PlanFormat,
    /// Write the report to FILE instead of standard output.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Commits of the branch searched for deployed digests and removed accounts
    /// [default: fleet.yaml's drift.historyDepth, else 50].
    #[arg(long, value_name = "N")]
    pub history: Option<usize>,
}

#[derive(clap::Args, Debug)]
pub struct StatusArgs {
    #[command(flatten)]
    pub source: GitArgs,
    /// The branch the fleet tracks: its waves, its accounts and its head (in a local clone,
    /// `origin/main` for the remote's head as last fetched).
    #[arg(long, value_name = "REF", default_value = "main")]
    pub branch: String,
    #[command(flatten)]
    pub target: TargetArgs,
    /// Which accounts: names, globs, stage=, label:<key>=<value>, wave= [default: all].
    #[arg(long, value_name = "SELECTOR")]
    pub accounts: Option<Selector>,
    /// The watch daemon whose /status to show too (http://HOST:PORT); when it cannot be
    /// reached, one line says so and the rest is printed.
    #[arg(long, value_name = "URL", env = "FLEETGATE_DAEMON_URL")]
    pub daemon: Option<String>,
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

#[derive(clap::Args, Debug)]
pub struct BootstrapArgs {
    #[command(flatten)]
    pub source: GitArgs,
    /// The revision whose accounts and fleet.yaml to use.
    #[arg(long = "ref", value_name = "REF", default_value = "HEAD")]
    pub rev: String,
    #[command(flatten)]
    pub target: TargetArgs,
    /// Which accounts: names, globs (acme-*), stage=, label:<key>=<value>, wave=,
    /// comma-separated [default: all].
    #[arg(long, value_name = "SELECTOR")]
    pub accounts: Option<Selector>,
}

#[cfg(feature = "up")]
#[derive(clap::Args, Debug)]
pub struct UpArgs {
    /// The work directory (kept between runs: repo, fleet, generated local secrets).
    #[arg(long, value_name = "DIR", default_value = ".fleetgate-up")]
    pub dir: PathBuf,
    /// The first gateway's port (127.0.0.1); the others follow, the reconciler's
    /// /status is at PORT+1000 and the gateways' admin ports after it. 0: any free ports.
    #[arg(long, default_value_t = 18080)]
    pub port: u16,
    /// Every wave's bake is cut to at most this (fleet.yaml's are minutes).
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = humantime::parse_duration)]
    pub max_bake: std::time::Duration,
    /// How often the reconciler looks for new commits.
    #[arg(long, value_name = "DURATION", default_value = "2s", value_parser = humantime::parse_duration)]
    pub poll_interval: std::time::Duration,
}

#[derive(clap::Args, Debug)]
pub struct ExampleFleetArgs {
    #[arg(long, default_value_t = 1000)]
    pub accounts: usize,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// An absent or empty directory.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
}

#[derive(clap::Args, Debug)]
pub struct SchemasArgs {
    #[arg(long, value_name = "DIR", default_value = "schemas")]
    pub out: PathBuf,
}

#[derive(clap::Args, Debug)]
pub struct PlanArgs {
    #[command(flatten)]
    pub source: GitArgs,
    /// Plan only the accounts the change from this revision to --head can affect.
    #[arg(long, value_name = "REF")]
    pub base: Option<String>,
    /// The revision to plan (a branch, tag, sha, `origin/main`, `HEAD~1`).
    #[arg(long, value_name = "REF", default_value = "HEAD")]
    pub head: String,
    #[command(flatten)]
    pub target: TargetArgs,
    /// text for terminals, markdown for PR comments, json for machines (docs/plan.md).
    #[arg(long, value_enum, default_value_t = PlanFormat::Text)]
    pub format: PlanFormat,
    /// Write the plan to FILE instead of standard output (never colored). FORMAT=FILE
    /// (text, markdown or json) writes that format; repeat --out for several documents of
    /// one plan: one read of the target, one redaction key.
    #[arg(long, value_name = "[FORMAT=]FILE")]
    pub out: Vec<PlanOut>,
    /// Warn when more than this percentage of the fleet would be updated at once.
    #[arg(long, value_name = "PERCENT", default_value_t = 25)]
    pub warn_fleet_percent: u32,
    /// Also read every deployed bundle and check it against its digest (by default only
    /// pointers are read for accounts already at the head; `fleetgate drift` checks all).
    #[arg(long)]
    pub verify_bundles: bool,
    /// Link to the full plan (e.g. a CI artifact) in markdown truncation notes.
    #[arg(long, value_name = "URL")]
    pub full_plan_url: Option<String>,
}

/// One `plan --out`: a file, and the format written there (`--format`'s when not given).
#[derive(Debug, Clone)]
pub struct PlanOut {
    pub format: Option<PlanFormat>,
    pub path: PathBuf,
}

impl std::str::FromStr for PlanOut {
    type Err = String;

    fn from_str(s: &str) -> Result<PlanOut, String> {
        let format = |name: &str| match name {
            "text" => Some(PlanFormat::Text),
            "markdown" => Some(PlanFormat::Markdown),
            "json" => Some(PlanFormat::Json),
            _ => None,
        };
        let (format, path) = match s.split_once('=') {
            Some((name, path)) if format(name).is_some() => (format(name), path),
            _ => (None, s),
        };
        if path.is_empty() {
            return Err(format!("{s:?}: give a file, FORMAT=FILE or FILE"));
        }
        Ok(PlanOut {
            format,
            path: PathBuf::from(path),
        })
    }
}
