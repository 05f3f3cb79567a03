//! What the commands print: diagnostics, plans, rollout outcomes.

use std::io::Write as _;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context as _, Result};

use crate::config::diagnostics::Diagnostic;
use crate::execute::rollout::{AccountReport, AccountState, RolloutReport, Watch, WaveReport};
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
    write_plan_with(out, &mut |w| w.write_all(text.as_bytes()))
}

/// Writes a plan to `--out` or standard output as `write` produces it.
pub fn write_plan_with(
    out: Option<&Path>,
    write: &mut dyn FnMut(&mut dyn std::io::Write) -> std::io::Result<()>,
) -> Result<()> {
    match out {
        Some(path) => {
            let cannot = || format!("cannot write {}", path.display());
            let mut file = std::fs::File::create(path).with_context(cannot)?;
            write(&mut file).with_context(cannot)
        }
        None => {
            // Colors only on a terminal, and never with NO_COLOR set.
            let mut out = anstream::AutoStream::auto(std::io::stdout().lock());
            write(&mut out).context("cannot write the plan")
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

/// Prints each account's outcome and each wave's end as the rollout decides them (a killed
/// run's output shows what it did), redacted like everything printed: text lines (accounts
/// that changed on stdout, the others on stderr) or, with `jsonl`, one JSON object a line on
/// stdout.
#[derive(Debug)]
pub struct Printer {
    pub jsonl: bool,
}

impl Printer {
    fn out(&self, changed: bool, line: &str) {
        let line = crate::redact::scrub(line, crate::redact::run_key());
        // Each line whole and at once, flushed: the record survives a kill right after.
        if changed || self.jsonl {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{line}");
            let _ = out.flush();
        } else {
            let _ = writeln!(std::io::stderr().lock(), "{line}");
        }
    }
}

fn short_digest(d: &str) -> String {
    d.trim_start_matches("sha256:").chars().take(12).collect()
}

fn kebab<T: serde::Serialize>(v: T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

impl Watch for Printer {
    fn account(&self, wave: &str, name: &str, a: &AccountReport) {
        if self.jsonl {
            let line = serde_json::json!({
                "event": "account", "wave": wave, "account": name, "state": kebab(a.state),
                "from": a.from, "to": a.to, "detail": a.detail, "error": a.error,
            });
            self.out(true, &line.to_string());
            return;
        }
        let detail = a
            .detail
            .as_deref()
            .map(|d| format!(": {d}"))
            .unwrap_or_default();
        match a.state {
            AccountState::Applied | AccountState::Serving | AccountState::Healthy => {
                let line = match &a.from {
                    None => format!("created {name} {}{detail}", a.to),
                    Some(from) => format!(
                        "updated {name} {} -> {}{detail}",
                        short_digest(from),
                        short_digest(&a.to)
                    ),
                };
                self.out(true, &line);
            }
            AccountState::Conflict => {
                self.out(
                    false,
                    &format!("conflict {}", a.detail.as_deref().unwrap_or(name)),
                );
            }
            // Target errors name their account.
            AccountState::Failed => self.out(
                false,
                &match a.error {
                    Some(class) => {
                        format!("failed [{class}] {}", a.detail.as_deref().unwrap_or(name))
                    }
                    None => format!("failed [health] {name}{detail}"),
                },
            ),
            AccountState::RolledBack => self.out(false, &format!("rolled back {name}{detail}")),
            AccountState::Skipped | AccountState::Pending => {
                self.out(false, &format!("skipped {name}{detail}"));
            }
        }
    }

    fn wave(&self, w: &WaveReport, _failure: Option<&str>) {
        if self.jsonl {
            let line = serde_json::json!({
                "event": "wave", "wave": w.name, "state": kebab(w.state),
                "accounts": w.accounts.len(), "failed": w.failed,
                "tolerated": w.tolerated_failures,
            });
            self.out(true, &line.to_string());
        } else if w.name != "(no wave)" {
            // A single unnamed wave (all at once) is not announced.
            self.out(
                true,
                &format!(
                    "wave {}: {} ({} account{}, {} failed, {} tolerated)",
                    w.name,
                    kebab(w.state),
                    w.accounts.len(),
                    if w.accounts.len() == 1 { "" } else { "s" },
                    w.failed,
                    w.tolerated_failures
                ),
            );
        }
    }
}

/// After a rollout whose accounts were printed as they went: the accounts it never reached
/// (each with why), why it stopped, and what the AWS calls cost. The report is scrubbed.
pub fn finish_rollout(report: &mut RolloutReport, printer: &Printer) {
    report.scrub(crate::redact::run_key());
    let why = report
        .reason
        .as_deref()
        .map_or("the rollout stopped first".to_string(), |r| {
            format!("the rollout stopped first ({r})")
        });
    for wave in &report.waves {
        for (name, a) in &wave.accounts {
            if a.state == AccountState::Pending {
                let a = AccountReport {
                    state: AccountState::Skipped,
                    detail: Some(format!("not started: {why}")),
                    ..a.clone()
                };
                printer.account(&wave.name, name, &a);
            }
        }
    }
    if let Some(reason) = &report.reason {
        let _ = writeln!(std::io::stderr(), "rollout stopped: {reason}");
    }
    if let Some(requests) = &report.requests {
        let _ = writeln!(std::io::stderr(), "requests: {requests}");
    }
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
