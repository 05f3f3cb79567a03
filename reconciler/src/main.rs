//! `fleetgate`: the reconciler's command line ([`fleetgate::cli`]).

use std::io::Write as _;
use std::process::ExitCode;

/// Rendering and planning thousands of bundles is allocation-bound: mimalloc takes a third
/// off a plan's CPU against the system allocator (docs/benchmarks.md, "Scale").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    if let Err(e) = init_logging() {
        let _ = writeln!(std::io::stderr(), "error: {e}");
        return ExitCode::FAILURE;
    }
    fleetgate::cli::main()
}

/// Logging of the commands that do not set up their own (all but `watch` and `up`): on
/// stderr through the redacting writer, as `watch` logs, in the format FLEETGATE_LOG_FORMAT
/// names (`json`: one object a line, `timestamp`, `level`, `target` and the event's fields;
/// `text`, the default). Levels from FLEETGATE_LOG, else warnings and errors only: a
/// command's report is its output, its log what went wrong on the way (a notification not
/// delivered, a status report that does not parse).
fn init_logging() -> Result<(), String> {
    use clap::Parser as _;
    // A command line that does not parse is `cli::main`'s to report.
    let Ok(cli) = fleetgate::cli::args::Cli::try_parse() else {
        return Ok(());
    };
    if cli.command.sets_up_logging() {
        return Ok(());
    }
    let json = match std::env::var("FLEETGATE_LOG_FORMAT") {
        Err(std::env::VarError::NotPresent) => false,
        Ok(f) if f == "text" => false,
        Ok(f) if f == "json" => true,
        _ => return Err("FLEETGATE_LOG_FORMAT must be json or text".into()),
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("FLEETGATE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(fleetgate::redact::ScrubbedStderr);
    if json {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .init();
    } else {
        builder.init();
    }
    Ok(())
}
