//! `fleetgate-gateway`. For now it checks bundles: load, verify the digest when one is given,
//! compile, report. Serving traffic comes with the runtime.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use fleetgate_gateway::{Bundle, Digest, compile};

#[derive(Parser, Debug)]
#[command(
    name = "fleetgate-gateway",
    version,
    about = "fleetgate's API gateway runtime"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Load and compile bundle files and report whether each is runnable.
    Check {
        /// Bundle files (canonical JSON, e.g. from `fleetgate render --out`).
        #[arg(required = true)]
        bundles: Vec<PathBuf>,
        /// The digest the single bundle must have (as in `current.json`).
        #[arg(long)]
        digest: Option<Digest>,
    },
}

#[allow(clippy::print_stdout, clippy::print_stderr)]
fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check { bundles, digest } => {
            let mut failed = false;
            for path in &bundles {
                match check(path, digest.as_ref()) {
                    Ok(line) => println!("{}: {line}", path.display()),
                    Err(e) => {
                        failed = true;
                        eprintln!("{}: {e:#}", path.display());
                    }
                }
            }
            if failed {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            }
        }
    }
}

fn check(path: &std::path::Path, expected: Option<&Digest>) -> Result<String> {
    let bytes = std::fs::read(path).context("cannot read bundle")?;
    let digest = Digest::of(&bytes);
    let bundle = match expected {
        Some(d) => Bundle::from_stored(&bytes, d)?,
        None => serde_json::from_slice::<Bundle>(&bytes).context("not a bundle")?,
    };
    let compiled = compile(&bundle).map_err(|e| anyhow::anyhow!("bundle is not runnable:\n{e}"))?;
    Ok(format!(
        "ok {digest} account {} ({} routes)",
        compiled.bundle.account.name,
        compiled.routes.len()
    ))
}
