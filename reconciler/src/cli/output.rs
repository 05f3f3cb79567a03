//! What the commands print: diagnostics, plans, rollout outcomes.

use std::io::Write as _;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context as _, Result};

use crate::config::diagnostics::Diagnostic;
use crate::execute::rollout::{AccountState, RolloutReport};
use crate::ops::pipeline::PipelineError;
use crate::plan;

pub fn print_diagnostics(list: &[Diagnostic]) {
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

/// Writes a plan (or an invalid head's errors) to `--out` or standard output.
pub fn write_plan(out: Option<&Path>, text: &str) -> Result<()> {
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

pub fn report_pipeline_error(e: PipelineError) -> Result<ExitCode> {
    match e {
        PipelineError::Invalid {
            ref diagnostics, ..
        } => {
            let mut err = std::io::stderr().lock();
            for d in diagnostics {
                let _ = writeln!(err, "{d}");
            }
            let _ = writeln!(err, "error: {}", crate::redact::scrub_run(&e.to_string()));
            Ok(ExitCode::FAILURE)
        }
        other => Err(other.into()),
    }
}

/// Prints each account's outcome and each wave's; `waved`: whether the plan has waves
/// (a single unnamed wave is not announced). The report is scrubbed first.
pub fn print_rollout(report: &mut RolloutReport, waved: bool) -> Result<()> {
    report.scrub(crate::redact::run_key());
    let mut out = std::io::stdout().lock();
    let mut err = std::io::stderr().lock();
    let short = |d: &str| {
        d.trim_start_matches("sha256:")
            .chars()
            .take(12)
            .collect::<String>()
    };
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
    if let Some(requests) = &report.requests {
        let _ = writeln!(std::io::stderr(), "requests: {requests}");
    }
    Ok(())
}

/// Whether a plan's rollout goes in named waves.
pub fn waved(plan: &plan::Plan) -> bool {
    plan.waves.iter().any(|w| w.name != "(no wave)")
}

pub fn outcome_line(report: &RolloutReport) -> String {
    let t = report.tally();
    format!(
        "{} ({} changed, {} failed, {} rolled back, {} skipped)",
        serde_json::to_value(report.outcome)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default(),
        t.created + t.updated,
        t.failed,
        t.rolled_back,
        t.skipped
    )
}

pub fn print_plan_leftovers(plan: &plan::Plan) {
    let mut err = std::io::stderr().lock();
    for a in &plan.accounts {
        match a.action {
            plan::Action::Unreachable => {
                let line = format!(
                    "skipped {}: {}",
                    a.name,
                    a.note.as_deref().unwrap_or("unreachable")
                );
                let _ = writeln!(err, "{}", crate::redact::one_line(&line));
            }
            plan::Action::Held => {
                let line = format!("held {}: {}", a.name, a.note.as_deref().unwrap_or("held"));
                let _ = writeln!(err, "{}", crate::redact::one_line(&line));
            }
            _ => {}
        }
    }
}
