//! `fleetgate plan`: what would change in which account, as text, markdown (the PR
//! comment) or JSON.

use std::process::ExitCode;

use anyhow::Result;

use crate::cli::args::{PlanArgs, PlanFormat};
use crate::cli::output;
use crate::cli::progress::StderrProgress;
use crate::cli::session::{open_git, redaction_key, runtime};
use crate::git::Commit;
use crate::ops::pipeline::{self, PipelineError};
use crate::plan;
use crate::target::connect::Purpose;

pub fn plan(args: &PlanArgs) -> Result<ExitCode> {
    let repo = open_git(&args.source)?;
    let head = repo.resolve(&args.head)?;
    let base = args.base.as_deref().map(|b| repo.resolve(b)).transpose()?;
    let prepared = match pipeline::prepare(&repo, base.as_ref(), &head) {
        Ok(p) => p,
        Err(e) => return plan_invalid_head(args, base.as_ref(), &head, e),
    };
    let options = plan::Options {
        redaction_key: redaction_key(),
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
    let target = args
        .target
        .connect(&rt, fleet, &head.id.to_string(), Purpose::Read)?;
    let progress = StderrProgress::new();
    let fan = args.target.fan_out(fleet, &progress);
    let superseded = |c: &str| repo.is_descendant(&head.id.to_string(), c);
    let plan = rt.block_on(pipeline::observe_and_plan(
        &prepared,
        target.target.as_ref(),
        &options,
        &fan,
        verify,
        &superseded,
    ))?;
    for (format, path) in outputs(args) {
        match format {
            // Colors only on a terminal: never in a file.
            PlanFormat::Text => {
                output::write_plan(path, &plan::format::text(&plan, path.is_none()))?
            }
            PlanFormat::Markdown => output::write_plan(
                path,
                &plan::format::markdown(
                    &plan,
                    plan::format::MARKDOWN_LIMIT,
                    args.full_plan_url.as_deref(),
                ),
            )?,
            PlanFormat::Json => {
                output::write_plan_with(path, &mut |w| plan::format::write_json(&plan, w))?
            }
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

/// A head with invalid manifests: every error on stderr (all formats), and for markdown
/// and json also as the output, so a PR comment or artifact shows them instead of nothing
/// (docs/plan.md, Formats). Exit 1.
fn plan_invalid_head(
    args: &PlanArgs,
    base: Option<&Commit>,
    head: &Commit,
    e: PipelineError,
) -> Result<ExitCode> {
    let PipelineError::Invalid {
        ref diagnostics, ..
    } = e
    else {
        return output::report_pipeline_error(e);
    };
    let revision = |c: &Commit| plan::Revision {
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
    for (format, path) in outputs(args) {
        let text = match format {
            PlanFormat::Text => continue,
            PlanFormat::Markdown => {
                plan::format::invalid_markdown(&invalid, plan::format::MARKDOWN_LIMIT)
            }
            PlanFormat::Json => plan::format::invalid_json(&invalid),
        };
        output::write_plan(path, &text)?;
    }
    output::report_pipeline_error(e)
}

/// Where each document of the plan goes: every `--out`, or standard output in `--format`.
fn outputs(args: &PlanArgs) -> Vec<(PlanFormat, Option<&std::path::Path>)> {
    if args.out.is_empty() {
        return vec![(args.format, None)];
    }
    args.out
        .iter()
        .map(|o| (o.format.unwrap_or(args.format), Some(o.path.as_path())))
        .collect()
}
