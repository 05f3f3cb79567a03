//! The command line: arguments ([`args`]), one module per group of commands, what they print
//! ([`output`]) and progress ([`progress`]). The only layer that prints; the work is the
//! operations' ([`crate::ops`]), whose reports the commands turn into text and exit codes.
//!
//! May import everything but the daemon's internals.

pub mod args;
pub mod deploy;
pub mod output;
pub mod plan;
pub mod progress;
pub mod repo;
pub mod service;
pub mod session;
pub mod status;

use std::io::Write as _;
use std::process::ExitCode;

use anyhow::Result;
use clap::Parser as _;

use args::{Cli, Command};

/// `fleetgate`'s entry point.
pub fn main() -> ExitCode {
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
                crate::redact::scrub_run(&text)
            );
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Validate(args) => repo::validate(&args),
        Command::Render(args) => repo::render(&args),
        Command::Plan(args) => plan::plan(&args),
        Command::Apply(args) => deploy::apply(&args),
        Command::Rollback(args) => deploy::rollback(&args),
        Command::Release(args) => deploy::release(&args),
        Command::Erase(args) => deploy::erase(&args),
        Command::History(args) => deploy::history(&args),
        Command::Drift(args) => deploy::drift(&args),
        Command::Status(args) => status::status(&args),
        Command::Bootstrap(args) => deploy::bootstrap(&args),
        Command::Watch(args) => service::watch(*args),
        #[cfg(feature = "up")]
        Command::Up(args) => service::up(args),
        Command::ExampleFleet(args) => repo::example_fleet(&args),
        Command::Schemas(args) => repo::schemas(&args),
    }
}
