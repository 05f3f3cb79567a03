//! `fleetgate`: the reconciler's command line.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand, ValueEnum};
use fleetgate::connect::{AnyTarget, TargetSpec};
use fleetgate::diagnostics::{Diagnostic, Diagnostics};
use fleetgate::example_fleet::{self, FleetParams};
use fleetgate::git::GitRepo;
use fleetgate::pipeline::{self, PipelineError};
use fleetgate::plan;
use fleetgate::progress::StderrProgress;
use fleetgate::rollout::{AccountState, Executor, Outcome, RolloutReport};
use fleetgate::selector::Selector;
use fleetgate::target::{AccountRef, Bootstrapped, FanOut, Progress, Target as _};
use fleetgate::{DirSource, Repo, render, validate};

#[derive(Parser, Debug)]
#[command(
    name = "fleetgate",
    version,
    about = "GitOps for a fleet of AWS accounts: one config repo, one gateway bundle per account"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Report every problem of a config repo (exit 0 valid, 1 invalid).
    Validate {
        /// The config repo directory.
        #[arg(long, default_value = ".")]
        repo: PathBuf,
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// Render accounts' bundles: one line `<account> sha256:<hex>` each.
    Render {
        #[arg(long, default_value = ".")]
        repo: PathBuf,
        /// Render only these accounts (repeatable).
        #[arg(long = "account", value_name = "NAME", conflicts_with = "all")]
        accounts: Vec<String>,
        /// Render every account (the default).
        #[arg(long)]
        all: bool,
        /// Also write each canonical bundle to DIR/<account>.json.
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
    /// What would change in which account: the head against the target, or with --base only
    /// the accounts the base..head change can affect (exit 0 no changes, 2 changes, 1 error).
    Plan(PlanArgs),
    /// Deploy the head to every account that needs it, wave by wave (fleet.yaml): bundle
    /// first, then the pointer by compare-and-swap; each wave's gateways must serve the new
    /// bundle and stay healthy through the bake, or the wave is rolled back. Idempotent:
    /// accounts already at the head are not written. Exit 0 done, 1 failed or rolled back.
    Apply {
        #[command(flatten)]
        source: GitArgs,
        /// The revision to apply.
        #[arg(long, value_name = "REF", default_value = "HEAD")]
        head: String,
        #[command(flatten)]
        target: TargetArgs,
        /// Waves still go in order, but nothing waits for gateways: for a first deployment
        /// before any gateway runs, or break-glass.
        #[arg(long)]
        skip_health_gates: bool,
        /// No waves at all: every account at once, no gate, and one account's failure stops
        /// nothing (the first deployment of a fleet; break-glass).
        #[arg(long, conflicts_with = "skip_health_gates")]
        all_at_once: bool,
        /// Also write the rollout report as JSON to FILE.
        #[arg(long, value_name = "FILE")]
        report: Option<PathBuf>,
    },
    /// Point accounts back at the bundles of an earlier commit (or a digest): bundles already
    /// stored are not rewritten, pointers move by compare-and-swap, all at once unless
    /// --waves. Records a hold so the watch daemon does not roll the accounts forward until a
    /// newer commit lands on the branch (the revert) or `fleetgate release`.
    Rollback {
        #[command(flatten)]
        source: GitArgs,
        /// A commit (sha, tag, `HEAD~1`) or a bundle digest (`sha256:<hex>`).
        #[arg(long, value_name = "COMMIT|DIGEST")]
        to: String,
        /// The branch the fleet tracks: its accounts and fleet.yaml are used, and the hold
        /// lasts until it moves past its current head.
        #[arg(long, value_name = "REF", default_value = "HEAD")]
        branch: String,
        #[command(flatten)]
        target: TargetArgs,
        /// Which accounts: names, globs, stage=, label:<key>=<value>, wave= [default: all].
        #[arg(long, value_name = "SELECTOR")]
        accounts: Option<Selector>,
        /// Why, recorded in the hold.
        #[arg(long, value_name = "TEXT", default_value = "rollback")]
        reason: String,
        /// Go wave by wave with health gates, as apply does.
        #[arg(long)]
        waves: bool,
        /// Do not record a hold: the watch daemon may roll the accounts forward again.
        #[arg(long)]
        no_hold: bool,
    },
    /// Lift rollback holds, so the watch daemon rolls the accounts forward again.
    Release {
        #[command(flatten)]
        source: GitArgs,
        #[arg(long, value_name = "REF", default_value = "HEAD")]
        branch: String,
        #[command(flatten)]
        target: TargetArgs,
        /// Which accounts [default: all].
        #[arg(long, value_name = "SELECTOR")]
        accounts: Option<Selector>,
    },
    /// An account's pointer history, newest first: digest, commit, who and when, holds.
    History {
        #[command(flatten)]
        source: GitArgs,
        #[arg(long, value_name = "REF", default_value = "HEAD")]
        branch: String,
        #[command(flatten)]
        target: TargetArgs,
        #[arg(long, value_name = "NAME")]
        account: String,
        /// How many entries.
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// For every account: in sync with the head, or drifted with a cause (behind, out-of-band
    /// edit, tampered, never deployed), unreachable, or orphaned (exit 0 in sync, 2 drift,
    /// 1 error).
    Drift {
        #[command(flatten)]
        source: GitArgs,
        /// The branch (or any revision) the fleet should run.
        #[arg(long = "ref", value_name = "REF", default_value = "HEAD")]
        rev: String,
        #[command(flatten)]
        target: TargetArgs,
        #[arg(long, value_enum, default_value_t = PlanFormat::Text)]
        format: PlanFormat,
        /// Write the report to FILE instead of standard output.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
        /// Commits of the branch searched for deployed digests and removed accounts
        /// [default: fleet.yaml's drift.historyDepth, else 50].
        #[arg(long, value_name = "N")]
        history: Option<usize>,
    },
    /// Onboard accounts: create each selected account's config store when missing (S3: the
    /// bucket, versioned, encrypted by default, public access blocked), through its assumed
    /// role. Idempotent. For production onboarding, use the StackSet template
    /// deploy/aws/account.yaml instead.
    Bootstrap {
        #[command(flatten)]
        source: GitArgs,
        /// The revision whose accounts and fleet.yaml to use.
        #[arg(long = "ref", value_name = "REF", default_value = "HEAD")]
        rev: String,
        #[command(flatten)]
        target: TargetArgs,
        /// Which accounts: names, globs (acme-*), stage=, label:<key>=<value>, wave=,
        /// comma-separated [default: all].
        #[arg(long, value_name = "SELECTOR")]
        accounts: Option<Selector>,
    },
    /// Keep the fleet at the head of a branch: fetch on an interval or on a push webhook,
    /// roll each new head out wave by wave with health gates (one rollout at a time; a newer
    /// commit waits for the running one), check drift on a schedule, and serve /status,
    /// /health, /metrics and /webhook. Only the lease holder rolls out (docs/watch.md).
    Watch(Box<WatchArgs>),
    /// The whole loop on this machine, no AWS account needed: a git repo of the example
    /// fleet in DIR/repo, reconciled wave by wave to a file:// fleet by the watch daemon, one
    /// gateway with its identity provider per account on local ports, demo backends; prints
    /// what to try. Ctrl-C stops everything.
    #[cfg(feature = "up")]
    Up {
        /// The work directory (kept between runs: repo, fleet, generated local secrets).
        #[arg(long, value_name = "DIR", default_value = ".fleetgate-up")]
        dir: PathBuf,
        /// The first gateway's port (127.0.0.1); the others follow, the reconciler's
        /// /status is at PORT+1000 and the gateways' admin ports after it. 0: any free ports.
        #[arg(long, default_value_t = 18080)]
        port: u16,
        /// Every wave's bake is cut to at most this (fleet.yaml's are minutes).
        #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = humantime::parse_duration)]
        max_bake: std::time::Duration,
        /// How often the reconciler looks for new commits.
        #[arg(long, value_name = "DURATION", default_value = "2s", value_parser = humantime::parse_duration)]
        poll_interval: std::time::Duration,
    },
    /// Generate a config repo with N accounts (deterministic) for tests and benchmarks.
    ExampleFleet {
        #[arg(long, default_value_t = 1000)]
        accounts: usize,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// An absent or empty directory.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
    /// Write the manifests' JSON Schemas (generated from the types) into DIR.
    Schemas {
        #[arg(long, value_name = "DIR", default_value = "schemas")]
        out: PathBuf,
    },
}

#[derive(clap::Args, Debug)]
struct WatchArgs {
    #[command(flatten)]
    source: GitArgs,
    /// The branch the fleet tracks (`origin/<branch>` of a remote repo).
    #[arg(long, default_value = "main")]
    branch: String,
    #[command(flatten)]
    target: TargetArgs,
    /// Where /status, /health, /metrics and /webhook are served.
    #[arg(
        long,
        value_name = "ADDR",
        default_value = "127.0.0.1:9400",
        env = "FLEETGATE_WATCH_LISTEN"
    )]
    listen: std::net::SocketAddr,
    /// How often the remote is fetched (a webhook wakes the daemon sooner).
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = humantime::parse_duration)]
    poll_interval: std::time::Duration,
    /// How often drift is checked [default: fleet.yaml's drift.interval, else 6h].
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    drift_interval: Option<std::time::Duration>,
    /// This replica's part of the fleet, i/N: accounts split by a stable hash of their
    /// name; each shard has its own lease.
    #[arg(long, value_name = "i/N")]
    shard: Option<pipeline::Shard>,
    /// This daemon's name in the lease and in the pointers it writes [default: host and
    /// process id].
    #[arg(long, value_name = "NAME")]
    identity: Option<String>,
    /// How long the lease lasts without renewal (renewed every third of it): how long a
    /// dead holder blocks the others.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = humantime::parse_duration)]
    lease_ttl: std::time::Duration,
    /// The hub's state bucket for the lease with --target aws [default: fleet.yaml's
    /// stateBucket].
    #[arg(long, value_name = "BUCKET")]
    state_bucket: Option<String>,
    /// A file holding the webhook's secret (or set FLEETGATE_WEBHOOK_SECRET); without one
    /// /webhook answers 404.
    #[arg(long, value_name = "FILE")]
    webhook_secret_file: Option<PathBuf>,
    /// Longest wait between retries after errors.
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = humantime::parse_duration)]
    max_backoff: std::time::Duration,
    /// json (one object a line) or text.
    #[arg(long, default_value = "text", value_parser = ["json", "text"])]
    log_format: String,
}

#[derive(clap::Args, Debug)]
struct GitArgs {
    /// The config repo: a local git repository (working clone or bare), or a URL
    /// (file://, https://, ssh://) cloned into the cache as a bare repository.
    #[arg(long, value_name = "PATH|URL", default_value = ".")]
    repo: String,
    /// Where remote repositories are cached [default: $XDG_CACHE_HOME/fleetgate or
    /// ~/.cache/fleetgate].
    #[arg(long, value_name = "DIR", env = "FLEETGATE_CACHE_DIR")]
    cache_dir: Option<PathBuf>,
}

#[derive(clap::Args, Debug)]
struct TargetArgs {
    /// Where bundles are deployed: file://DIR (the embedded default, the accounts' S3 layout on
    /// a local directory) or aws (each account's bucket from fleet.yaml, through a role
    /// assumed in that account; hub credentials from the AWS default chain).
    #[arg(long, value_name = "file://DIR|aws")]
    target: TargetSpec,
    /// Accounts read or written at once [default: fleet.yaml's concurrency, else 32].
    #[arg(long, value_name = "N")]
    concurrency: Option<usize>,
    /// Longest one account may take per step (observe, apply, bootstrap), retries included.
    #[arg(long, value_name = "DURATION", default_value = "2m", value_parser = humantime::parse_duration)]
    account_timeout: std::time::Duration,
    /// S3 and STS endpoint for S3-compatible stores and tests (path-style addressing)
    /// [default: AWS_ENDPOINT_URL, else AWS].
    #[arg(long, value_name = "URL")]
    endpoint_url: Option<String>,
    /// Assume this role in every account instead of fleet.yaml's roleName: a read-only role
    /// for plans on pull requests and drift reports (deploy/aws/account.yaml makes
    /// `fleetgate-reader`), so those jobs never hold write access.
    #[arg(long, value_name = "NAME", env = "FLEETGATE_ROLE_NAME")]
    role_name: Option<String>,
}

impl TargetArgs {
    fn fan_out<'a>(
        &self,
        fleet: Option<&fleetgate::manifest::FleetSpec>,
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

    fn connect(
        &self,
        rt: &tokio::runtime::Runtime,
        fleet: Option<&fleetgate::manifest::FleetSpec>,
        commit: &str,
    ) -> Result<AnyTarget> {
        rt.block_on(self.target.connect(
            fleet,
            commit,
            self.endpoint_url.as_deref(),
            self.role_name.as_deref(),
        ))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum PlanFormat {
    Text,
    Markdown,
    Json,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Format {
    Text,
    Json,
}

fn main() -> ExitCode {
    // Usage errors exit 1, not clap's 2: `plan` uses 2 for "changes present".
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            let text = format!("{e:#}");
            let _ = writeln!(
                std::io::stderr(),
                "error: {}",
                fleetgate::redact::scrub_run(&text)
            );
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Validate { repo, format } => cmd_validate(&repo, format),
        Command::Render {
            repo,
            accounts,
            all: _,
            out,
        } => cmd_render(&repo, &accounts, out.as_deref()),
        Command::Plan(args) => cmd_plan(args),
        Command::Apply {
            source,
            head,
            target,
            skip_health_gates,
            all_at_once,
            report,
        } => cmd_apply(
            &source,
            &head,
            &target,
            skip_health_gates || all_at_once,
            all_at_once,
            report.as_deref(),
        ),
        Command::Rollback {
            source,
            to,
            branch,
            target,
            accounts,
            reason,
            waves,
            no_hold,
        } => cmd_rollback(&RollbackArgs {
            source,
            to,
            branch,
            target,
            accounts,
            reason,
            waves,
            no_hold,
        }),
        Command::Release {
            source,
            branch,
            target,
            accounts,
        } => cmd_release(&source, &branch, &target, accounts.as_ref()),
        Command::History {
            source,
            branch,
            target,
            account,
            limit,
        } => cmd_history(&source, &branch, &target, &account, limit),
        Command::Drift {
            source,
            rev,
            target,
            format,
            out,
            history,
        } => cmd_drift(&source, &rev, &target, format, out.as_deref(), history),
        Command::Bootstrap {
            source,
            rev,
            target,
            accounts,
        } => cmd_bootstrap(&source, &rev, &target, accounts.as_ref()),
        Command::Watch(args) => cmd_watch(*args),
        #[cfg(feature = "up")]
        Command::Up {
            dir,
            port,
            max_bake,
            poll_interval,
        } => cmd_up(dir, port, max_bake, poll_interval),
        Command::ExampleFleet {
            accounts,
            seed,
            out,
        } => {
            let src = example_fleet::generate(&FleetParams { accounts, seed });
            example_fleet::write_to(&src, &out)
                .with_context(|| format!("cannot write {}", out.display()))?;
            let _ = writeln!(
                std::io::stdout(),
                "wrote a fleet of {accounts} accounts to {}",
                out.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Schemas { out } => {
            std::fs::create_dir_all(&out)
                .with_context(|| format!("cannot create {}", out.display()))?;
            for (name, schema) in fleetgate::schema::all() {
                let path = out.join(name);
                std::fs::write(&path, fleetgate::schema::to_file_text(&schema))
                    .with_context(|| format!("cannot write {}", path.display()))?;
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn cmd_watch(args: WatchArgs) -> Result<ExitCode> {
    init_logging(&args.log_format);
    let secret = match (
        &args.webhook_secret_file,
        std::env::var_os("FLEETGATE_WEBHOOK_SECRET"),
    ) {
        (Some(path), _) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read the webhook secret {}", path.display()))?;
            Some(text.trim_end_matches(['\n', '\r']).as_bytes().to_vec())
        }
        (None, Some(s)) if !s.is_empty() => Some(s.as_encoded_bytes().to_vec()),
        _ => None,
    };
    if secret.as_ref().is_some_and(Vec::is_empty) {
        bail!("the webhook secret is empty");
    }
    let identity = args.identity.clone().unwrap_or_else(|| {
        let host = std::env::var("HOSTNAME")
            .ok()
            .filter(|h| !h.is_empty())
            .or_else(|| {
                std::fs::read_to_string("/etc/hostname")
                    .ok()
                    .map(|h| h.trim().to_string())
            })
            .unwrap_or_else(|| "localhost".into());
        format!("{host}-{}", std::process::id())
    });
    let settings = fleetgate::watch::Settings {
        repo: args.source.repo.clone(),
        branch: args.branch.clone(),
        cache_dir: cache_dir(&args.source),
        target: args.target.target.clone(),
        endpoint_url: args.target.endpoint_url.clone(),
        role_name: args.target.role_name.clone(),
        poll_interval: args.poll_interval,
        drift_interval: args.drift_interval,
        shard: args.shard,
        identity,
        lease_ttl: args.lease_ttl,
        state_bucket: args.state_bucket.clone(),
        webhook_secret: secret,
        concurrency: args.target.concurrency,
        account_timeout: args.target.account_timeout,
        max_backoff: args.max_backoff,
        max_bake: None,
    };
    let rt = runtime()?;
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("cannot listen on {}", args.listen))?;
        let addr = listener.local_addr()?;
        tracing::info!(
            %addr,
            repo = %settings.repo,
            branch = %settings.branch,
            identity = %settings.identity,
            shard = settings.shard.map(|s| s.to_string()).unwrap_or_default(),
            "watching"
        );
        let daemon = fleetgate::watch::Daemon::new(settings);
        fleetgate::watch::run(daemon, listener, shutdown_signal()).await
    })?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(feature = "up")]
fn cmd_up(
    dir: PathBuf,
    port: u16,
    max_bake: std::time::Duration,
    poll: std::time::Duration,
) -> Result<ExitCode> {
    // The guide goes to standard output; the log (warnings and up's own steps unless
    // FLEETGATE_LOG says otherwise) to standard error.
    init_logging_with("text", "warn,fleetgate::up=info");
    let settings = fleetgate::up::UpSettings {
        dir,
        port,
        max_bake,
        poll,
        cache_dir: cache_dir(&GitArgs {
            repo: String::new(),
            cache_dir: None,
        }),
    };
    let rt = runtime()?;
    rt.block_on(async {
        let mut out = std::io::stdout();
        fleetgate::up::run(settings, &mut out, shutdown_signal()).await
    })?;
    Ok(ExitCode::SUCCESS)
}

/// Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}

fn init_logging(format: &str) {
    init_logging_with(format, "info");
}

/// Logging to stderr at FLEETGATE_LOG's levels, else `default`'s.
fn init_logging_with(format: &str, default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("FLEETGATE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(fleetgate::redact::ScrubbedStderr);
    if format == "json" {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .init();
    } else {
        builder.init();
    }
}

fn open_repo(path: &Path) -> Result<Repo> {
    if !path.is_dir() {
        bail!("{} is not a directory", path.display());
    }
    Ok(Repo::load(&DirSource::new(path)))
}

fn print_diagnostics(list: &[Diagnostic]) {
    let mut err = std::io::stderr().lock();
    for d in list {
        let _ = writeln!(err, "{d}");
    }
    let _ = writeln!(
        err,
        "{} problem{} found",
        list.len(),
        if list.len() == 1 { "" } else { "s" }
    );
}

fn cmd_validate(path: &Path, format: Format) -> Result<ExitCode> {
    let repo = open_repo(path)?;
    let result = validate(&repo);
    match format {
        Format::Json => {
            let mut doc = Diagnostics::to_json(&result.diagnostics);
            doc["accounts"] = serde_json::json!(result.rendered.len());
            let _ = writeln!(std::io::stdout(), "{}", serde_json::to_string_pretty(&doc)?);
        }
        Format::Text if result.diagnostics.is_empty() => {
            let _ = writeln!(
                std::io::stdout(),
                "valid: {} accounts, {} overlays, {} service versions",
                result.rendered.len(),
                repo.overlays.len(),
                repo.services.len()
            );
        }
        Format::Text => print_diagnostics(&result.diagnostics),
    }
    Ok(if result.diagnostics.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn cmd_render(path: &Path, only: &[String], out: Option<&Path>) -> Result<ExitCode> {
    let repo = open_repo(path)?;
    // A repo with problems renders nothing: a bundle from a half-valid repo is not what
    // anyone reviewed.
    let mut problems = Diagnostics::new();
    problems.extend(repo.diagnostics.iter().cloned());
    let names: Vec<String> = if only.is_empty() {
        repo.account_names().map(str::to_string).collect()
    } else {
        only.to_vec()
    };
    let mut rendered = Vec::with_capacity(names.len());
    for name in &names {
        match render(&repo, name) {
            // Keep the bytes to write, not the whole bundle.
            Ok(r) => rendered.push((r.account, r.digest, r.canonical)),
            Err(errs) => problems.extend(errs),
        }
    }
    if !problems.is_empty() {
        print_diagnostics(&problems.into_sorted());
        return Ok(ExitCode::FAILURE);
    }
    if let Some(dir) = out {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        for (account, _, canonical) in &rendered {
            let dest = dir.join(format!("{account}.json"));
            let tmp = dir.join(format!(".{account}.json.tmp"));
            std::fs::write(&tmp, canonical)
                .with_context(|| format!("cannot write {}", tmp.display()))?;
            std::fs::rename(&tmp, &dest)
                .with_context(|| format!("cannot write {}", dest.display()))?;
        }
    }
    let mut stdout = std::io::stdout().lock();
    for (account, digest, _) in &rendered {
        let _ = writeln!(stdout, "{account} {digest}");
    }
    Ok(ExitCode::SUCCESS)
}

fn cache_dir(args: &GitArgs) -> PathBuf {
    if let Some(dir) = &args.cache_dir {
        return dir.clone();
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("fleetgate")
}

fn runtime() -> Result<tokio::runtime::Runtime> {
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
/// The same key fingerprints secrets in diagnostics, errors and logs (`fleetgate::redact`).
fn redaction_key() -> Result<Vec<u8>> {
    Ok(fleetgate::redact::run_key().to_vec())
}

/// Opens the repo and resolves the revisions; git errors name the ref or path.
fn open_git(args: &GitArgs) -> Result<GitRepo> {
    let repo = GitRepo::open(&args.repo, &cache_dir(args))?;
    Ok(repo)
}

fn report_pipeline_error(e: PipelineError) -> Result<ExitCode> {
    match e {
        PipelineError::Invalid {
            ref diagnostics, ..
        } => {
            let mut err = std::io::stderr().lock();
            for d in diagnostics {
                let _ = writeln!(err, "{d}");
            }
            let _ = writeln!(
                err,
                "error: {}",
                fleetgate::redact::scrub_run(&e.to_string())
            );
            Ok(ExitCode::FAILURE)
        }
        other => Err(other.into()),
    }
}

#[derive(clap::Args, Debug)]
struct PlanArgs {
    #[command(flatten)]
    source: GitArgs,
    /// Plan only the accounts the change from this revision to --head can affect.
    #[arg(long, value_name = "REF")]
    base: Option<String>,
    /// The revision to plan (a branch, tag, sha, `origin/main`, `HEAD~1`).
    #[arg(long, value_name = "REF", default_value = "HEAD")]
    head: String,
    #[command(flatten)]
    target: TargetArgs,
    /// text for terminals, markdown for PR comments, json for machines (docs/plan.md).
    #[arg(long, value_enum, default_value_t = PlanFormat::Text)]
    format: PlanFormat,
    /// Write the plan to FILE instead of standard output (never colored).
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    /// Warn when more than this percentage of the fleet would be updated at once.
    #[arg(long, value_name = "PERCENT", default_value_t = 25)]
    warn_fleet_percent: u32,
    /// Also read every deployed bundle and check it against its digest (by default only
    /// pointers are read for accounts already at the head; `fleetgate drift` checks all).
    #[arg(long)]
    verify_bundles: bool,
    /// Link to the full plan (e.g. a CI artifact) in markdown truncation notes.
    #[arg(long, value_name = "URL")]
    full_plan_url: Option<String>,
}

fn cmd_plan(args: PlanArgs) -> Result<ExitCode> {
    let repo = open_git(&args.source)?;
    let head = repo.resolve(&args.head)?;
    let base = args.base.as_deref().map(|b| repo.resolve(b)).transpose()?;
    let prepared = match pipeline::prepare(&repo, base.as_ref(), &head) {
        Ok(p) => p,
        Err(e) => return plan_invalid_head(&args, base.as_ref(), &head, e),
    };
    let options = plan::Options {
        redaction_key: redaction_key()?,
        fleet_change_percent: args.warn_fleet_percent,
        ..plan::Options::default()
    };
    let verify = if args.verify_bundles {
        pipeline::Verify::Bundles
    } else {
        pipeline::Verify::Pointers
    };
    let rt = runtime()?;
    let fleet = prepared.fleet.as_ref();
    let target = args.target.connect(&rt, fleet, &head.id.to_string())?;
    let progress = StderrProgress::new();
    let fan = args.target.fan_out(fleet, &progress);
    let superseded = |c: &str| repo.is_descendant(&head.id.to_string(), c);
    let (plan, _) = rt.block_on(pipeline::observe_and_plan(
        &prepared,
        &target,
        &options,
        &fan,
        verify,
        &superseded,
    ))?;
    let to_file = args.out.is_some();
    let text = match args.format {
        PlanFormat::Text => plan::format::text(&plan, !to_file),
        PlanFormat::Markdown => plan::format::markdown(
            &plan,
            plan::format::MARKDOWN_LIMIT,
            args.full_plan_url.as_deref(),
        ),
        PlanFormat::Json => plan::format::json(&plan),
    };
    write_plan(args.out.as_deref(), &text)?;
    Ok(if plan.summary.unreachable > 0 {
        ExitCode::FAILURE
    } else if plan.summary.has_changes() {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    })
}

/// Writes a plan (or an invalid head's errors) to `--out` or standard output.
fn write_plan(out: Option<&Path>, text: &str) -> Result<()> {
    match out {
        Some(path) => {
            std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
        }
        None => {
            // Colors only on a terminal, and never with NO_COLOR set.
            let mut out = anstream::AutoStream::auto(std::io::stdout().lock());
            out.write_all(text.as_bytes())
                .context("cannot write the plan")
        }
    }
}

/// A head with invalid manifests: every error on stderr (all formats), and for markdown
/// and json also as the output, so a PR comment or artifact shows them instead of nothing
/// (docs/plan.md, Formats). Exit 1.
fn plan_invalid_head(
    args: &PlanArgs,
    base: Option<&fleetgate::git::Commit>,
    head: &fleetgate::git::Commit,
    e: PipelineError,
) -> Result<ExitCode> {
    let PipelineError::Invalid {
        ref diagnostics, ..
    } = e
    else {
        return report_pipeline_error(e);
    };
    let revision = |c: &fleetgate::git::Commit| plan::Revision {
        rev: c.rev.clone(),
        commit: c.id.to_string(),
    };
    let (base, head) = (base.map(revision), revision(head));
    let invalid = plan::format::InvalidHead {
        repo: &args.source.repo,
        base: base.as_ref(),
        head: &head,
        errors: diagnostics,
    };
    let text = match args.format {
        PlanFormat::Text => None,
        PlanFormat::Markdown => Some(plan::format::invalid_markdown(
            &invalid,
            plan::format::MARKDOWN_LIMIT,
        )),
        PlanFormat::Json => Some(plan::format::invalid_json(&invalid)),
    };
    if let Some(text) = text {
        write_plan(args.out.as_deref(), &text)?;
    }
    report_pipeline_error(e)
}

fn cmd_apply(
    source: &GitArgs,
    head: &str,
    target_args: &TargetArgs,
    skip_gates: bool,
    all_at_once: bool,
    report_file: Option<&Path>,
) -> Result<ExitCode> {
    let repo = open_git(source)?;
    let head = repo.resolve(head)?;
    let mut prepared = match pipeline::prepare(&repo, None, &head) {
        Ok(p) => p,
        Err(e) => return report_pipeline_error(e),
    };
    if all_at_once {
        prepared.context.waves.clear();
        prepared.context.wave_of.clear();
    }
    let options = plan::Options {
        redaction_key: redaction_key()?,
        ..plan::Options::default()
    };
    let stamp = stamp();
    // Apply reads bundles only where it will replace them; drift checks the rest.
    let verify = pipeline::Verify::Pointers;
    let rt = runtime()?;
    let fleet = prepared.fleet.as_ref();
    let target = match target_args.connect(&rt, fleet, &head.id.to_string())? {
        // Apply is the one command that creates a missing file:// target directory.
        AnyTarget::File(t) => AnyTarget::File(t.create_if_missing()),
        other => other,
    };
    let progress = StderrProgress::new();
    let fan = target_args.fan_out(fleet, &progress);
    // Holds recorded before this head are over: the branch moved past them.
    let superseded = |c: &str| repo.is_descendant(&head.id.to_string(), c);
    let (plan, observed) = rt.block_on(pipeline::observe_and_plan(
        &prepared,
        &target,
        &options,
        &fan,
        verify,
        &superseded,
    ))?;
    let settings = fleet.map(|f| f.rollout.clone()).unwrap_or_default();
    let exec = Executor {
        target: &target,
        plan: &plan,
        desired: &prepared.desired,
        observed: &observed,
        stamp: &stamp,
        settings: &settings,
        fan,
        skip_gates,
        hold: None,
        record_commit: true,
        max_bake: None,
    };
    let report = run_rollout(&rt, &exec)?;
    if let Some(path) = report_file {
        let mut json = serde_json::to_string_pretty(&report)?;
        json.push('\n');
        std::fs::write(path, json).with_context(|| format!("cannot write {}", path.display()))?;
    }
    print_plan_leftovers(&plan);
    let failed: usize = report.waves.iter().map(|w| w.failed).sum();
    let count = |f: &dyn Fn(&fleetgate::rollout::AccountReport) -> bool| {
        report
            .waves
            .iter()
            .flat_map(|w| w.accounts.values())
            .filter(|a| f(a))
            .count()
    };
    let landed = |a: &fleetgate::rollout::AccountReport| {
        matches!(
            a.state,
            AccountState::Applied | AccountState::Serving | AccountState::Healthy
        )
    };
    let _ = writeln!(
        std::io::stdout(),
        "applied {} ({}) to {}: {} created, {} updated, {} unchanged, {} conflicts ({} still to apply), {} failed, {} rolled back, {} skipped, {} held, {} unreachable, {} orphaned (never deleted)",
        plan.head.rev,
        &plan.head.commit[..12.min(plan.head.commit.len())],
        plan.target,
        count(&|a| landed(a) && a.from.is_none()),
        count(&|a| landed(a) && a.from.is_some()),
        plan.summary.no_change,
        count(&|a| a.state == AccountState::Conflict),
        count(&|a| a.state == AccountState::Conflict
            && a.detail
                .as_deref()
                .is_some_and(|d| d.contains("still needs"))),
        count(&|a| a.state == AccountState::Failed),
        count(&|a| a.state == AccountState::RolledBack),
        count(&|a| a.state == AccountState::Skipped),
        plan.summary.held,
        plan.summary.unreachable,
        plan.summary.orphaned,
    );
    Ok(
        if report.outcome != Outcome::Succeeded || failed > 0 || plan.summary.unreachable > 0 {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        },
    )
}

fn stamp() -> pipeline::Stamp {
    pipeline::Stamp {
        applied_by: applied_by(),
        applied_at: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
    }
}

/// Runs a rollout, printing each account's outcome and each wave's as they end.
fn run_rollout<T: fleetgate::target::Target>(
    rt: &tokio::runtime::Runtime,
    exec: &Executor<'_, T>,
) -> Result<RolloutReport> {
    let live = std::sync::Arc::new(std::sync::Mutex::new(exec.initial_report()));
    let mut report = rt.block_on(exec.run(&live));
    fleetgate::redact::scrub_rollout(&mut report, fleetgate::redact::run_key());
    let mut out = std::io::stdout().lock();
    let mut err = std::io::stderr().lock();
    let short = |d: &str| {
        d.trim_start_matches("sha256:")
            .chars()
            .take(12)
            .collect::<String>()
    };
    let waved = exec.plan.waves.iter().any(|w| w.name != "(no wave)");
    for wave in &report.waves {
        if wave.accounts.is_empty() {
            continue;
        }
        if waved {
            let _ = writeln!(
                out,
                "wave {}: {} ({} account{}, {} failed, {} tolerated)",
                wave.name,
                serde_json::to_value(wave.state)?.as_str().unwrap_or("?"),
                wave.accounts.len(),
                if wave.accounts.len() == 1 { "" } else { "s" },
                wave.failed,
                wave.tolerated_failures
            );
        }
        for (name, a) in &wave.accounts {
            let detail = a
                .detail
                .as_deref()
                .map(|d| format!(": {d}"))
                .unwrap_or_default();
            match a.state {
                AccountState::Applied | AccountState::Serving | AccountState::Healthy => {
                    let _ = match &a.from {
                        None => writeln!(out, "created {name} {}{detail}", a.to),
                        Some(from) => writeln!(
                            out,
                            "updated {name} {} -> {}{detail}",
                            short(from),
                            short(&a.to)
                        ),
                    };
                }
                AccountState::Conflict => {
                    let _ = writeln!(err, "conflict {}", a.detail.as_deref().unwrap_or(name));
                }
                AccountState::Failed => {
                    let _ = match a.error {
                        // Target errors name their account.
                        Some(class) => writeln!(
                            err,
                            "failed [{class}] {}",
                            a.detail.as_deref().unwrap_or(name)
                        ),
                        None => writeln!(err, "failed [health] {name}{detail}"),
                    };
                }
                AccountState::RolledBack => {
                    let _ = writeln!(err, "rolled back {name}{detail}");
                }
                AccountState::Skipped | AccountState::Pending => {
                    let _ = writeln!(err, "skipped {name}{detail}");
                }
            }
        }
    }
    if let Some(reason) = &report.reason {
        let _ = writeln!(std::io::stderr(), "rollout stopped: {reason}");
    }
    Ok(report)
}

fn outcome_line(report: &RolloutReport) -> String {
    let count = |s: AccountState| {
        report
            .waves
            .iter()
            .flat_map(|w| w.accounts.values())
            .filter(|a| a.state == s)
            .count()
    };
    let changed =
        count(AccountState::Healthy) + count(AccountState::Serving) + count(AccountState::Applied);
    format!(
        "{} ({changed} changed, {} failed, {} rolled back, {} skipped)",
        serde_json::to_value(report.outcome)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default(),
        count(AccountState::Failed),
        count(AccountState::RolledBack),
        count(AccountState::Skipped)
    )
}

fn print_plan_leftovers(plan: &plan::Plan) {
    let mut err = std::io::stderr().lock();
    for a in &plan.accounts {
        match a.action {
            plan::Action::Unreachable => {
                let line = format!(
                    "skipped {}: {}",
                    a.name,
                    a.note.as_deref().unwrap_or("unreachable")
                );
                let _ = writeln!(err, "{}", plan::format::one_line(&line));
            }
            plan::Action::Held => {
                let line = format!("held {}: {}", a.name, a.note.as_deref().unwrap_or("held"));
                let _ = writeln!(err, "{}", plan::format::one_line(&line));
            }
            _ => {}
        }
    }
}

#[derive(Debug)]
struct RollbackArgs {
    source: GitArgs,
    to: String,
    branch: String,
    target: TargetArgs,
    accounts: Option<Selector>,
    reason: String,
    waves: bool,
    no_hold: bool,
}

/// The selected accounts of the repo (all without a selector), placed in the target.
fn select_accounts(config: &Repo, selector: Option<&Selector>) -> Result<Vec<AccountRef>> {
    let names: Vec<String> = match selector {
        Some(sel) => sel
            .select(config)
            .map_err(anyhow::Error::msg)?
            .into_iter()
            .collect(),
        None => config.account_names().map(str::to_string).collect(),
    };
    Ok(names
        .iter()
        .filter_map(|n| AccountRef::from_repo(config, n))
        .collect())
}

fn cmd_rollback(args: &RollbackArgs) -> Result<ExitCode> {
    let started = std::time::Instant::now();
    let Some(Connected {
        repo,
        commit: branch,
        config,
        rt,
        target,
    }) = connect_at(&args.source, &args.branch, &args.target)?
    else {
        return Ok(ExitCode::FAILURE);
    };
    let accounts = select_accounts(&config, args.accounts.as_ref())?;
    let fleet = config.fleet.as_ref().map(|f| &f.spec);
    let progress = StderrProgress::new();
    let fan = args.target.fan_out(fleet, &progress);

    // What each account goes back to: a digest already stored there, or the commit's render.
    let mut problems: Vec<String> = Vec::new();
    let mut desired: Vec<plan::Desired> = Vec::new();
    let (head, record_commit) = if let Some(hex) = args.to.strip_prefix("sha256:") {
        let digest: fleetgate_bundle::Digest = format!("sha256:{hex}")
            .parse()
            .map_err(|e| anyhow::anyhow!("--to {}: {e}", args.to))?;
        let read = rt.block_on(fan.run(
            "read bundle",
            accounts.iter(),
            |a| a,
            |a| {
                let digest = digest.clone();
                let target = &target;
                async move { target.read_bundle(a, &digest).await }
            },
        ));
        let by_name: std::collections::BTreeMap<&str, &AccountRef> =
            accounts.iter().map(|a| (a.name.as_str(), a)).collect();
        for (name, r) in read {
            match r {
                Ok(Some(bundle)) => desired.push(plan::Desired {
                    account: by_name[name.as_str()].clone(),
                    canonical: bundle.canonical_json(),
                    bundle,
                    digest: digest.clone(),
                    base_digest: None,
                }),
                Ok(None) => problems.push(format!(
                    "{name}: bundle {digest} is not stored there; roll back to a commit instead"
                )),
                Err(e) => problems.push(e.to_string()),
            }
        }
        (
            plan::Revision {
                rev: args.to.clone(),
                commit: digest.to_string(),
            },
            false,
        )
    } else {
        let to = repo.resolve(&args.to)?;
        let old = Repo::load(&repo.snapshot(&to)?);
        for a in &accounts {
            if !old.accounts.contains_key(&a.name) {
                problems.push(format!(
                    "{}: not in the repo at {} ({}): nothing to roll back to",
                    a.name,
                    args.to,
                    to.short()
                ));
                continue;
            }
            match render(&old, &a.name) {
                Ok(r) => desired.push(plan::Desired {
                    account: a.clone(),
                    bundle: r.bundle,
                    canonical: r.canonical,
                    digest: r.digest,
                    base_digest: None,
                }),
                Err(errs) => problems.push(format!(
                    "{}: does not render at {} ({}): {}",
                    a.name,
                    args.to,
                    to.short(),
                    errs.first().map(ToString::to_string).unwrap_or_default()
                )),
            }
        }
        (
            plan::Revision {
                rev: args.to.clone(),
                commit: to.id.to_string(),
            },
            true,
        )
    };
    for p in &problems {
        let _ = writeln!(std::io::stderr(), "cannot roll back {p}");
    }

    let refs: Vec<AccountRef> = desired.iter().map(|d| d.account.clone()).collect();
    let wanted: std::collections::BTreeMap<String, fleetgate_bundle::Digest> = desired
        .iter()
        .map(|d| (d.account.name.clone(), d.digest.clone()))
        .collect();
    let observed = rt.block_on(fleetgate::target::observe(
        &target,
        &refs,
        Some(&wanted),
        &fan,
    ));
    let (waves, concurrency, wave_of) = pipeline::rollout_order(&config);
    let context = plan::Context {
        repo: repo.location().to_string(),
        base: None,
        head: head.clone(),
        target: target.location(),
        fleet: config.account_names().map(str::to_string).collect(),
        deployed: Default::default(),
        rendered: plan::Rendered {
            base: 0,
            head: desired.len(),
        },
        // All at once unless asked: one wave of the fleet's concurrency, no gate.
        waves: if args.waves { waves } else { Vec::new() },
        concurrency,
        wave_of: if args.waves {
            wave_of
        } else {
            Default::default()
        },
    };
    let options = plan::Options {
        redaction_key: redaction_key()?,
        ignore_holds: true,
        ..plan::Options::default()
    };
    let plan = plan::plan(&context, &desired, &observed, &options);
    let stamp = stamp();
    let hold = (!args.no_hold).then(|| fleetgate::target::Hold {
        by: stamp.applied_by.clone(),
        at: stamp.applied_at.clone(),
        reason: args.reason.clone(),
        to: if record_commit {
            format!("{} ({})", args.to, &head.commit[..12])
        } else {
            args.to.clone()
        },
        branch_head: Some(branch.id.to_string()),
    });
    let settings = fleet.map(|f| f.rollout.clone()).unwrap_or_default();
    let exec = Executor {
        target: &target,
        plan: &plan,
        desired: &desired,
        observed: &observed,
        stamp: &stamp,
        settings: &settings,
        fan,
        skip_gates: !args.waves,
        hold: hold.clone(),
        record_commit,
        max_bake: None,
    };
    let report = run_rollout(&rt, &exec)?;
    // Accounts already on the bundle get the hold too, so none is rolled forward.
    let mut held_in_place = 0;
    if let Some(hold) = &hold {
        let at_target: Vec<&AccountRef> = plan
            .accounts
            .iter()
            .filter(|a| a.action == plan::Action::NoChange)
            .filter_map(|a| refs.iter().find(|r| r.name == a.name))
            .collect();
        for (name, r) in rt.block_on(fan.run(
            "hold",
            at_target,
            |a| a,
            |a| {
                let (target, stamp) = (&target, &stamp);
                async move { fleetgate::rollout::set_hold(target, a, Some(hold), stamp).await }
            },
        )) {
            match r {
                Ok(_) => held_in_place += 1,
                Err(e) => problems.push(format!("{name}: cannot record the hold: {e}")),
            }
        }
    }
    print_plan_leftovers(&plan);
    let _ = writeln!(
        std::io::stdout(),
        "rolled back to {} in {}: {}; {} already there{}; {} unreachable, {} could not be rolled back; {:.1}s",
        args.to,
        plan.target,
        outcome_line(&report),
        plan.summary.no_change,
        if hold.is_some() {
            format!(" (held: {held_in_place})")
        } else {
            String::new()
        },
        plan.summary.unreachable,
        problems.len(),
        started.elapsed().as_secs_f64()
    );
    let failed: usize = report.waves.iter().map(|w| w.failed).sum();
    Ok(
        if report.outcome != Outcome::Succeeded
            || failed + problems.len() + plan.summary.unreachable > 0
        {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        },
    )
}

fn cmd_release(
    source: &GitArgs,
    branch: &str,
    target_args: &TargetArgs,
    selector: Option<&Selector>,
) -> Result<ExitCode> {
    let Some(Connected {
        config, rt, target, ..
    }) = connect_at(source, branch, target_args)?
    else {
        return Ok(ExitCode::FAILURE);
    };
    let accounts = select_accounts(&config, selector)?;
    let fleet = config.fleet.as_ref().map(|f| &f.spec);
    let progress = StderrProgress::new();
    let fan = target_args.fan_out(fleet, &progress);
    let stamp = stamp();
    let mut results = rt.block_on(fan.run(
        "release",
        accounts.iter(),
        |a| a,
        |a| {
            let (target, stamp) = (&target, &stamp);
            async move { fleetgate::rollout::set_hold(target, a, None, stamp).await }
        },
    ));
    results.sort_by(|a, b| a.0.cmp(&b.0));
    let (mut released, mut failed) = (0, 0);
    for (name, r) in &results {
        match r {
            Ok(true) => {
                released += 1;
                let _ = writeln!(std::io::stdout(), "released {name}");
            }
            Ok(false) => {}
            Err(e) => {
                failed += 1;
                let _ = writeln!(std::io::stderr(), "failed [{}] {e}", e.class());
            }
        }
    }
    let _ = writeln!(
        std::io::stdout(),
        "released {released} hold{} in {} ({} accounts looked at, {failed} failed)",
        if released == 1 { "" } else { "s" },
        target.location(),
        results.len()
    );
    Ok(if failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn cmd_history(
    source: &GitArgs,
    branch: &str,
    target_args: &TargetArgs,
    account: &str,
    limit: usize,
) -> Result<ExitCode> {
    let repo = open_git(source)?;
    let branch = repo.resolve(branch)?;
    let Some(config) = load_valid(&repo, &branch)? else {
        return Ok(ExitCode::FAILURE);
    };
    let Some(account_ref) = AccountRef::from_repo(&config, account) else {
        bail!(
            "{account}: no such account in the repo at {}",
            branch.short()
        );
    };
    let fleet = config.fleet.as_ref().map(|f| &f.spec);
    let rt = runtime()?;
    let target = target_args.connect(&rt, fleet, &branch.id.to_string())?;
    let history = rt.block_on(target.pointer_history(&account_ref, limit))?;
    let mut out = std::io::stdout().lock();
    if history.is_empty() {
        let _ = writeln!(
            out,
            "{account}: no pointer history in {}",
            target.location()
        );
        return Ok(ExitCode::SUCCESS);
    }
    for (i, p) in history.iter().enumerate() {
        let commit = p.commit.as_deref().map_or_else(
            || "-".to_string(),
            |c| {
                let short = &c[..12.min(c.len())];
                match repo.summary(c) {
                    Some(subject) => format!("{short} {subject:?}"),
                    None => short.to_string(),
                }
            },
        );
        let _ = writeln!(
            out,
            "{} {} {} {commit} by {}{}{}",
            if i == 0 { "*" } else { " " },
            p.applied_at,
            p.digest.short(),
            p.applied_by,
            p.previous
                .as_ref()
                .map(|d| format!(" (was {})", d.short()))
                .unwrap_or_default(),
            p.hold
                .as_ref()
                .map(|h| format!(" [hold by {} at {}: {}]", h.by, h.at, h.reason))
                .unwrap_or_default()
        );
    }
    Ok(ExitCode::SUCCESS)
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

/// A commit's valid repo and a target connected with its fleet.yaml: where the commands
/// that work on deployed accounts start.
struct Connected {
    repo: GitRepo,
    commit: fleetgate::git::Commit,
    config: Repo,
    rt: tokio::runtime::Runtime,
    target: AnyTarget,
}

/// Opens the repo at `rev` and connects the target; `None` when the manifests are invalid
/// (every problem printed).
fn connect_at(source: &GitArgs, rev: &str, target_args: &TargetArgs) -> Result<Option<Connected>> {
    let repo = open_git(source)?;
    let commit = repo.resolve(rev)?;
    let Some(config) = load_valid(&repo, &commit)? else {
        return Ok(None);
    };
    let rt = runtime()?;
    let fleet = config.fleet.as_ref().map(|f| &f.spec);
    let target = target_args.connect(&rt, fleet, &commit.id.to_string())?;
    Ok(Some(Connected {
        repo,
        commit,
        config,
        rt,
        target,
    }))
}

/// The head's repo, every problem printed when it has any.
fn load_valid(repo: &GitRepo, commit: &fleetgate::git::Commit) -> Result<Option<Repo>> {
    let loaded = Repo::load(&repo.snapshot(commit)?);
    if loaded.diagnostics.is_empty() {
        return Ok(Some(loaded));
    }
    let mut ds = Diagnostics::new();
    ds.extend(loaded.diagnostics.iter().cloned());
    print_diagnostics(&ds.into_sorted());
    Ok(None)
}

fn cmd_bootstrap(
    source: &GitArgs,
    rev: &str,
    target_args: &TargetArgs,
    selector: Option<&Selector>,
) -> Result<ExitCode> {
    let Some(Connected {
        config, rt, target, ..
    }) = connect_at(source, rev, target_args)?
    else {
        return Ok(ExitCode::FAILURE);
    };
    let accounts = select_accounts(&config, selector)?;
    let fleet = config.fleet.as_ref().map(|f| &f.spec);
    let progress = StderrProgress::new();
    let fan = target_args.fan_out(fleet, &progress);
    let by_name: std::collections::BTreeMap<&str, &AccountRef> =
        accounts.iter().map(|a| (a.name.as_str(), a)).collect();
    let mut results =
        rt.block_on(fan.run("bootstrap", accounts.iter(), |a| a, |a| target.bootstrap(a)));
    results.sort_by(|a, b| a.0.cmp(&b.0));
    let (mut created, mut present, mut failed) = (0, 0, 0);
    let mut stdout = std::io::stdout().lock();
    for (name, r) in &results {
        let store = by_name
            .get(name.as_str())
            .map(|a| format!("s3://{}/{}", a.bucket, a.prefix))
            .unwrap_or_default();
        match r {
            Ok(Bootstrapped::Created) => {
                created += 1;
                let _ = writeln!(stdout, "created {name} {store}");
            }
            Ok(Bootstrapped::AlreadyThere) => {
                present += 1;
                let _ = writeln!(stdout, "present {name} {store}");
            }
            Err(e) => {
                failed += 1;
                let _ = writeln!(std::io::stderr(), "failed [{}] {e}", e.class());
            }
        }
    }
    let _ = writeln!(
        stdout,
        "bootstrapped {} account{} in {}: {created} created, {present} already there, {failed} failed",
        results.len(),
        if results.len() == 1 { "" } else { "s" },
        target.location()
    );
    Ok(if failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn cmd_drift(
    source: &GitArgs,
    rev: &str,
    target_args: &TargetArgs,
    format: PlanFormat,
    out: Option<&Path>,
    history: Option<usize>,
) -> Result<ExitCode> {
    let Some(Connected {
        repo,
        commit: head,
        config,
        rt,
        target,
    }) = connect_at(source, rev, target_args)?
    else {
        return Ok(ExitCode::FAILURE);
    };
    let fleet = config.fleet.as_ref().map(|f| &f.spec);
    let depth = history
        .or(fleet.map(|f| f.drift.history_depth as usize))
        .unwrap_or(50);
    let progress = StderrProgress::new();
    let fan = target_args.fan_out(fleet, &progress);
    let mut report = match rt.block_on(fleetgate::drift::run(&repo, &head, &target, &fan, depth)) {
        Ok(r) => r,
        Err(e) => return report_pipeline_error(e),
    };
    fleetgate::redact::scrub_drift(&mut report, fleetgate::redact::run_key());
    let text = match format {
        PlanFormat::Text => fleetgate::drift::text(&report),
        PlanFormat::Markdown => fleetgate::drift::markdown(&report),
        PlanFormat::Json => fleetgate::drift::json(&report),
    };
    match out {
        Some(path) => std::fs::write(path, &text)
            .with_context(|| format!("cannot write {}", path.display()))?,
        None => {
            std::io::stdout()
                .lock()
                .write_all(text.as_bytes())
                .context("cannot write the report")?;
        }
    }
    Ok(ExitCode::from(report.exit_code()))
}
