//! `fleetgate`: the reconciler's command line.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand, ValueEnum};
use fleetgate::diagnostics::{Diagnostic, Diagnostics};
use fleetgate::example_fleet::{self, FleetParams};
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

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Format {
    Text,
    Json,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
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
