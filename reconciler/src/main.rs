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
    /// Deploy the head to every account that needs it: bundle first, then the pointer by
    /// compare-and-swap. Idempotent: accounts already at the head are not written.
    Apply {
        #[command(flatten)]
        source: GitArgs,
        /// The revision to apply.
        #[arg(long, value_name = "REF", default_value = "HEAD")]
        head: String,
        #[command(flatten)]
        target: TargetArgs,
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
    /// role. Idempotent. For production onboarding deploy/ will ship a StackSet template.
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
    /// Where bundles are deployed: file://DIR (the embedded default, DESIGN.md's S3 layout on
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
        rt.block_on(
            self.target
                .connect(fleet, commit, self.endpoint_url.as_deref()),
        )
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
            let _ = writeln!(std::io::stderr(), "error: {e:#}");
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
        } => cmd_apply(&source, &head, &target),
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
        .build()
        .context("cannot start the async runtime")
}

/// The key of the fingerprints that stand in for sensitive values: random per run, or
/// FLEETGATE_REDACTION_KEY when outputs must compare across runs (keep it secret).
fn redaction_key() -> Result<Vec<u8>> {
    if let Some(key) = std::env::var_os("FLEETGATE_REDACTION_KEY").filter(|k| !k.is_empty()) {
        return Ok(key.as_encoded_bytes().to_vec());
    }
    let mut key = vec![0u8; 32];
    getrandom::fill(&mut key)
        .map_err(|e| anyhow::anyhow!("no randomness for the redaction key: {e}"))?;
    Ok(key)
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
            let _ = writeln!(err, "error: {e}");
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
        Err(e) => return report_pipeline_error(e),
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
    let (plan, _) = rt.block_on(pipeline::observe_and_plan(
        &prepared, &target, &options, &fan, verify,
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
    match &args.out {
        Some(path) => std::fs::write(path, &text)
            .with_context(|| format!("cannot write {}", path.display()))?,
        None => {
            // Colors only on a terminal, and never with NO_COLOR set.
            let mut out = anstream::AutoStream::auto(std::io::stdout().lock());
            out.write_all(text.as_bytes())
                .context("cannot write the plan")?;
        }
    }
    Ok(if plan.summary.unreachable > 0 {
        ExitCode::FAILURE
    } else if plan.summary.has_changes() {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    })
}

fn cmd_apply(source: &GitArgs, head: &str, target_args: &TargetArgs) -> Result<ExitCode> {
    let repo = open_git(source)?;
    let head = repo.resolve(head)?;
    let prepared = match pipeline::prepare(&repo, None, &head) {
        Ok(p) => p,
        Err(e) => return report_pipeline_error(e),
    };
    let options = plan::Options {
        redaction_key: redaction_key()?,
        ..plan::Options::default()
    };
    let stamp = pipeline::Stamp {
        applied_by: applied_by(),
        applied_at: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
    };
    // Apply reads bundles only where it will replace them; drift checks the rest.
    let verify = pipeline::Verify::Pointers;
    let rt = runtime()?;
    let fleet = prepared.fleet.as_ref();
    let target = target_args.connect(&rt, fleet, &head.id.to_string())?;
    let progress = StderrProgress::new();
    let fan = target_args.fan_out(fleet, &progress);
    let (plan, observed) = rt.block_on(pipeline::observe_and_plan(
        &prepared, &target, &options, &fan, verify,
    ))?;
    let results = rt.block_on(pipeline::apply(
        &plan,
        &prepared.desired,
        &observed,
        &target,
        &stamp,
        &fan,
    ));
    let mut stdout = std::io::stdout().lock();
    let (mut created, mut updated, mut failed, mut conflicts, mut unresolved) = (0, 0, 0, 0, 0);
    for (account, outcome) in &results {
        match outcome {
            pipeline::Applied::Created { digest } => {
                created += 1;
                let _ = writeln!(stdout, "created {account} {digest}");
            }
            pipeline::Applied::Updated { from, to } => {
                updated += 1;
                let _ = writeln!(
                    stdout,
                    "updated {account} {} -> {}",
                    from.short(),
                    to.short()
                );
            }
            pipeline::Applied::Conflict { reason, now } => {
                conflicts += 1;
                if *now != plan::Action::NoChange {
                    unresolved += 1;
                }
                let _ = writeln!(
                    std::io::stderr(),
                    "conflict {reason}; observed again: {}",
                    match now {
                        plan::Action::NoChange =>
                            "now at the head (another apply deployed it), nothing to do",
                        plan::Action::Unreachable => "unreachable now",
                        _ => "still needs the head: run apply again to re-plan and write",
                    }
                );
            }
            pipeline::Applied::Failed { reason, class } => {
                failed += 1;
                let _ = writeln!(std::io::stderr(), "failed [{class}] {reason}");
            }
        }
    }
    for a in plan
        .accounts
        .iter()
        .filter(|a| a.action == plan::Action::Unreachable)
    {
        let _ = writeln!(
            std::io::stderr(),
            "skipped {}: {}",
            a.name,
            a.note.as_deref().unwrap_or("unreachable")
        );
    }
    let _ = writeln!(
        stdout,
        "applied {} ({}) to {}: {created} created, {updated} updated, {} unchanged, {conflicts} conflicts ({unresolved} still to apply), {failed} failed, {} unreachable, {} orphaned (never deleted)",
        plan.head.rev,
        &plan.head.commit[..12.min(plan.head.commit.len())],
        plan.target,
        plan.summary.no_change,
        plan.summary.unreachable,
        plan.summary.orphaned,
    );
    Ok(if failed + unresolved + plan.summary.unreachable > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
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
    let repo = open_git(source)?;
    let head = repo.resolve(rev)?;
    let Some(config) = load_valid(&repo, &head)? else {
        return Ok(ExitCode::FAILURE);
    };
    let names: Vec<String> = match selector {
        Some(sel) => sel
            .select(&config)
            .map_err(anyhow::Error::msg)?
            .into_iter()
            .collect(),
        None => config.account_names().map(str::to_string).collect(),
    };
    let accounts: Vec<AccountRef> = names
        .iter()
        .filter_map(|n| AccountRef::from_repo(&config, n))
        .collect();
    let fleet = config.fleet.as_ref().map(|f| &f.spec);
    let rt = runtime()?;
    let target = target_args.connect(&rt, fleet, &head.id.to_string())?;
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
    let repo = open_git(source)?;
    let head = repo.resolve(rev)?;
    let Some(config) = load_valid(&repo, &head)? else {
        return Ok(ExitCode::FAILURE);
    };
    let fleet = config.fleet.as_ref().map(|f| &f.spec);
    let depth = history
        .or(fleet.map(|f| f.drift.history_depth as usize))
        .unwrap_or(50);
    let rt = runtime()?;
    let target = target_args.connect(&rt, fleet, &head.id.to_string())?;
    let progress = StderrProgress::new();
    let fan = target_args.fan_out(fleet, &progress);
    let report = match rt.block_on(fleetgate::drift::run(&repo, &head, &target, &fan, depth)) {
        Ok(r) => r,
        Err(e) => return report_pipeline_error(e),
    };
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
