//! The commands on deployed accounts: `apply`, `rollback`, `release`, `history`, `drift`,
//! `bootstrap`. Each runs its operation ([`crate::ops`]) and prints the report.

use std::io::Write as _;
use std::process::ExitCode;

use anyhow::{Context as _, Result, bail};

use crate::cli::args::{
    ApplyArgs, BootstrapArgs, DriftArgs, EraseArgs, HistoryArgs, PlanFormat, ReleaseArgs,
    RollbackArgs, RolloutFormat,
};
use crate::cli::output;
use crate::cli::progress::StderrProgress;
use crate::cli::session::{
    Session, connect_at, load_valid, open_git, redaction_key, runtime, select_accounts, stamp,
};
use crate::config::manifest::FleetSpec;
use crate::execute::report::AccountState;
use crate::notify::watch::RolloutWatch;
use crate::notify::{Notifier, NotifyMetrics, SecretStore};
use crate::ops::apply::ApplyOptions;
use crate::ops::pipeline;
use crate::ops::reconcile::Gates;
use crate::ops::rollback::RollbackRequest;
use crate::plan;
use crate::target::connect::Purpose;
use crate::target::{AccountRef, Bootstrapped};

/// How long a command waits, before it exits, for its notifications to be delivered.
const NOTIFY_BUDGET: std::time::Duration = std::time::Duration::from_secs(15);

/// The sinks of fleet.yaml's `notifications`, started on `rt`; `by` is who acts.
fn notifier(rt: &tokio::runtime::Runtime, fleet: Option<&FleetSpec>, by: &str) -> Notifier {
    match fleet.filter(|f| !f.notifications.is_empty()) {
        Some(f) => {
            let _in_runtime = rt.enter();
            Notifier::start(
                &f.notifications,
                by,
                NotifyMetrics::default(),
                &SecretStore::default(),
            )
        }
        None => Notifier::none(),
    }
}

pub fn apply(args: &ApplyArgs) -> Result<ExitCode> {
    let repo = open_git(&args.source)?;
    let head = repo.resolve(&args.head)?;
    let prepared = match pipeline::prepare(&repo, None, &head) {
        Ok(p) => p,
        Err(e) => return output::report_pipeline_error(e),
    };
    let plan_options = plan::Options {
        redaction_key: redaction_key(),
        // Apply prints outcomes, not the plan.
        outcomes_only: true,
        ..plan::Options::default()
    };
    let stamp = stamp();
    let rt = runtime()?;
    let fleet = prepared.fleet.clone();
    // Apply is the one command that creates a missing file:// target directory.
    let target = args
        .target
        .connect(&rt, fleet.as_ref(), &head.id.to_string(), Purpose::Apply)?;
    let progress = StderrProgress::new();
    let fan = args.target.fan_out(fleet.as_ref(), &progress);
    let printer = output::Printer {
        jsonl: args.format == RolloutFormat::Jsonl,
    };
    let notifier = notifier(&rt, fleet.as_ref(), &stamp.applied_by);
    let watch = RolloutWatch::new(
        &head.id.to_string(),
        repo.summary(&head.id.to_string()),
        &notifier,
        Some(&printer),
        None,
    );
    // Holds recorded before this head are over: the branch moved past them.
    let superseded = |c: &str| repo.is_descendant(&head.id.to_string(), c);
    let options = ApplyOptions {
        gates: if args.skip_health_gates || args.all_at_once {
            Gates::Skip
        } else {
            Gates::Wait
        },
        all_at_once: args.all_at_once,
        allow_backwards: args.allow_backwards,
        watch: Some(&watch),
    };
    let head_id = head.id.to_string();
    // An account at a commit that descends from the head would be moved back.
    let newer = |c: &str| repo.is_descendant(c, &head_id);
    let applied = rt.block_on(crate::ops::apply::apply(
        prepared,
        target.target.as_ref(),
        fan,
        &stamp,
        &plan_options,
        options,
        &superseded,
        &newer,
    ));
    drop(watch);
    rt.block_on(notifier.flush(NOTIFY_BUDGET));
    let mut applied = match applied {
        Ok(a) => a,
        Err(e) => return output::report_pipeline_error(e),
    };
    applied.rollout.requests = target.target.requests();
    output::finish_rollout(&mut applied.rollout, &printer);
    if let Some(path) = &args.report {
        let mut json = serde_json::to_string_pretty(&applied.rollout)?;
        json.push('\n');
        std::fs::write(path, json).with_context(|| format!("cannot write {}", path.display()))?;
    }
    let plan = &applied.plan;
    output::print_plan_leftovers(plan);
    let mut decommissioned = 0;
    for (name, r) in &applied.decommissioned {
        use crate::ops::decommission::Outcome as D;
        match r {
            Ok(D::Decommissioned) => {
                decommissioned += 1;
                let _ = writeln!(
                    std::io::stdout(),
                    "decommissioned {name}: its gateways answer 410, its identity provider issues no token"
                );
            }
            Ok(D::Conflict) => {
                let _ = writeln!(
                    std::io::stderr(),
                    "conflict {name}: its pointer changed since it was read; not decommissioned (apply again)"
                );
            }
            Err(e) => {
                let _ = writeln!(std::io::stderr(), "failed [{}] {e}", e.class());
            }
        }
    }
    if plan.summary.decommission > 0 && applied.decommissioned.is_empty() {
        let _ = writeln!(
            std::io::stderr(),
            "not decommissioned: {} account(s), because the rollout did not succeed",
            plan.summary.decommission
        );
    }
    let t = applied.tally();
    if printer.jsonl {
        let line = serde_json::json!({
            "event": "summary", "rev": plan.head.rev, "commit": plan.head.commit,
            "target": plan.target, "outcome": applied.rollout.outcome,
            "created": t.created, "updated": t.updated, "unchanged": plan.summary.no_change,
            "conflicts": t.conflicts, "still_to_apply": t.still_needed, "failed": t.failed,
            "rolled_back": t.rolled_back, "skipped": t.skipped, "held": plan.summary.held,
            "unreachable": plan.summary.unreachable, "orphaned": plan.summary.orphaned,
            "decommissioned": decommissioned,
            "requests": applied.rollout.requests,
        });
        let _ = writeln!(
            std::io::stdout(),
            "{}",
            crate::redact::scrub(&line.to_string(), crate::redact::run_key())
        );
    } else {
        let _ = writeln!(
            std::io::stdout(),
            "applied {} ({}) to {}: {} created, {} updated, {} unchanged, {} conflicts ({} still to apply), {} failed, {} rolled back, {} skipped, {} held, {} unreachable, {} orphaned (never deleted){}",
            plan.head.rev,
            &plan.head.commit[..12.min(plan.head.commit.len())],
            plan.target,
            t.created,
            t.updated,
            plan.summary.no_change,
            t.conflicts,
            t.still_needed,
            t.failed,
            t.rolled_back,
            t.skipped,
            plan.summary.held,
            plan.summary.unreachable,
            plan.summary.orphaned,
            if decommissioned > 0 {
                format!(", {decommissioned} decommissioned")
            } else {
                String::new()
            },
        );
    }
    Ok(if applied.succeeded() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

pub fn rollback(args: &RollbackArgs) -> Result<ExitCode> {
    let started = std::time::Instant::now();
    // The hold names the head the watch daemon follows: the remote's, fetched now. A hold
    // recorded at a stale local head would be over at once.
    let tracked = open_git(&args.source)?
        .tracked(&args.branch)
        .with_context(|| {
            format!(
                "cannot check --branch {} against its remote, whose head the hold must name; to hold a given commit instead, pass --branch <sha>",
                args.branch
            )
        })?;
    if let Some(t) = tracked.as_ref().filter(|t| t.behind > 0) {
        bail!(
            "{} here ({}) is {} commit{} behind {} ({}), which the watch daemon follows: a hold recorded here would be over at once and the accounts rolled forward again. Nothing was written. Pull first (git pull), or hold the remote's head: --branch {}",
            args.branch,
            t.local.short(),
            t.behind,
            if t.behind == 1 { "" } else { "s" },
            t.remote_branch,
            t.tip.short(),
            t.remote_branch
        );
    }
    let Some(Session {
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
    let target = target.target.as_ref();

    // What each account goes back to: a digest already stored there, or the commit's render.
    let targets = rt.block_on(crate::ops::rollback::targets(
        &repo, &args.to, &accounts, target, &fan,
    ))?;
    for p in &targets.refused {
        let _ = writeln!(std::io::stderr(), "cannot roll back {p}");
    }
    let request = RollbackRequest {
        to: args.to.clone(),
        branch_head: tracked.map_or_else(|| branch.id.to_string(), |t| t.tip.id.to_string()),
        reason: args.reason.clone(),
        waves: args.waves,
        hold: !args.no_hold,
    };
    let stamp = stamp();
    let printer = output::Printer { jsonl: false };
    let notifier = notifier(&rt, fleet, &stamp.applied_by);
    let watch = RolloutWatch::new(
        &targets.to.commit,
        Some(format!(
            "fleetgate rollback --to {} by {}",
            args.to, stamp.applied_by
        )),
        &notifier,
        Some(&printer),
        None,
    );
    let mut done = rt.block_on(crate::ops::rollback::rollback(
        repo.location(),
        &config,
        targets,
        &request,
        target,
        fan,
        &stamp,
        redaction_key(),
        Some(&watch),
    ));
    drop(watch);
    if done.held {
        let moved = done
            .rollout
            .waves
            .iter()
            .flat_map(|w| w.accounts.iter())
            .filter(|(_, a)| {
                matches!(
                    a.state,
                    AccountState::Applied | AccountState::Serving | AccountState::Healthy
                )
            })
            .map(|(n, _)| n.clone());
        let (accounts, moved_total) = crate::notify::event::bounded(moved);
        notifier.notify(crate::notify::Event::RollbackSet {
            to: done.to.commit.clone(),
            accounts,
            accounts_total: moved_total + done.held_in_place,
            by: stamp.applied_by.clone(),
        });
    }
    rt.block_on(notifier.flush(NOTIFY_BUDGET));
    done.rollout.requests = target.requests();
    output::finish_rollout(&mut done.rollout, &printer);
    let plan = &done.plan;
    output::print_plan_leftovers(plan);
    let _ = writeln!(
        std::io::stdout(),
        "rolled back to {} in {}: {}; {} already there{}; {} unreachable, {} could not be rolled back; {:.1}s",
        args.to,
        plan.target,
        output::outcome_line(&done.rollout),
        plan.summary.no_change,
        if done.held {
            format!(" (held: {})", done.held_in_place)
        } else {
            String::new()
        },
        plan.summary.unreachable,
        done.refused.len() + done.hold_failures.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(if done.succeeded() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

pub fn release(args: &ReleaseArgs) -> Result<ExitCode> {
    let Some(Session {
        config, rt, target, ..
    }) = connect_at(&args.source, &args.branch, &args.target)?
    else {
        return Ok(ExitCode::FAILURE);
    };
    let accounts = select_accounts(&config, args.accounts.as_ref())?;
    let fleet = config.fleet.as_ref().map(|f| &f.spec);
    let progress = StderrProgress::new();
    let fan = args.target.fan_out(fleet, &progress);
    let stamp = stamp();
    let report = rt.block_on(crate::ops::release::release(
        target.target.as_ref(),
        &fan,
        &accounts,
        &stamp,
    ));
    let (mut released, mut failed) = (0, 0);
    let mut names = Vec::new();
    for (name, r) in &report.results {
        match r {
            Ok(true) => {
                released += 1;
                names.push(name.clone());
                let _ = writeln!(std::io::stdout(), "released {name}");
            }
            Ok(false) => {}
            Err(e) => {
                failed += 1;
                let _ = writeln!(std::io::stderr(), "failed [{}] {e}", e.class());
            }
        }
    }
    if !names.is_empty() {
        let notifier = notifier(&rt, fleet, &stamp.applied_by);
        let (accounts, accounts_total) = crate::notify::event::bounded(names);
        notifier.notify(crate::notify::Event::HoldReleased {
            accounts,
            accounts_total,
            by: stamp.applied_by.clone(),
        });
        rt.block_on(notifier.flush(NOTIFY_BUDGET));
    }
    let _ = writeln!(
        std::io::stdout(),
        "released {released} hold{} in {} ({} accounts looked at, {failed} failed)",
        if released == 1 { "" } else { "s" },
        target.target.location(),
        report.results.len()
    );
    Ok(if failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

pub fn erase(args: &EraseArgs) -> Result<ExitCode> {
    use crate::ops::erase::{EraseRequest, Erased, FileReceipts, ReceiptStore, S3Receipts};
    use crate::target::connect::Home;
    let Some(Session {
        config, rt, target, ..
    }) = connect_at(&args.source, &args.branch, &args.target)?
    else {
        return Ok(ExitCode::FAILURE);
    };
    let Some(fleet) = config.fleet.as_ref().map(|f| &f.spec) else {
        bail!("the repo has no fleet.yaml: nothing is approved for decommission");
    };
    let approvals = &fleet.offboarding.decommission;
    let chosen: Vec<&crate::config::manifest::DecommissionSpec> = match &args.tenant {
        Some(t) => approvals.iter().filter(|d| &d.tenant == t).collect(),
        None => {
            let mut out = Vec::new();
            for name in &args.account {
                if config.accounts.contains_key(name) {
                    bail!(
                        "{name}: not erased: accounts/{name}.yaml is in git at {}: it is live. Decommission it first (docs/operator.md, \"Offboarding a customer\")",
                        args.branch
                    );
                }
                match approvals.iter().find(|d| &d.account == name) {
                    Some(d) => out.push(d),
                    None => bail!(
                        "{name}: not erased: fleet.yaml's offboarding.decommission does not approve it"
                    ),
                }
            }
            out
        }
    };
    if chosen.is_empty() {
        bail!(
            "no account of tenant {:?} is approved for decommission",
            args.tenant.as_deref().unwrap_or_default()
        );
    }
    let store: Box<dyn ReceiptStore> = match &target.home {
        Home::Dir(root) => Box::new(FileReceipts {
            dir: root.join(".fleetgate").join("erasures"),
        }),
        Home::Hub(s3) => Box::new(S3Receipts {
            s3: s3.clone(),
            bucket: args
                .state_bucket
                .clone()
                .or_else(|| fleet.state_bucket.clone())
                .context("--target aws keeps erasure receipts in the hub's state bucket: fleet.yaml's stateBucket or --state-bucket")?,
        }),
    };
    let stamp = stamp();
    let mut failed = 0;
    for d in chosen {
        let Some(account) = AccountRef::from_decommission(fleet, d) else {
            failed += 1;
            let _ = writeln!(
                std::io::stderr(),
                "{}: not erased: fleet.yaml's bucket or prefix cannot be filled in for it",
                d.account
            );
            continue;
        };
        let req = EraseRequest {
            account: &account,
            tenant: &d.tenant,
            grace: fleet.offboarding.grace_period.0,
            report_max_age: fleet.rollout.report_max_age.0,
            now: std::time::SystemTime::now(),
            by: &stamp.applied_by,
        };
        match rt.block_on(crate::ops::erase::erase(
            target.target.as_ref(),
            store.as_ref(),
            &req,
        )) {
            Ok(done) => {
                let (what, receipt) = match done {
                    Erased::Now(r) => ("erased", r),
                    Erased::Already(r) => ("already erased", r),
                };
                let _ = writeln!(
                    std::io::stderr(),
                    "{what} {} ({} object versions); receipt: {}",
                    d.account,
                    receipt.versions.len(),
                    store.location(&d.account)
                );
                let mut shown = receipt.clone();
                // The receipt printed names keys and counts; its version ids stay in the store.
                shown.versions.clear();
                let _ = writeln!(
                    std::io::stdout(),
                    "{}",
                    serde_json::to_string_pretty(&shown)?
                );
            }
            Err(e) => {
                failed += 1;
                let _ = writeln!(std::io::stderr(), "{e}");
            }
        }
    }
    Ok(if failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

pub fn history(args: &HistoryArgs) -> Result<ExitCode> {
    let account = &args.account;
    let repo = open_git(&args.source)?;
    let branch = repo.resolve(&args.branch)?;
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
    let target = args
        .target
        .connect(&rt, fleet, &branch.id.to_string(), Purpose::Read)?;
    let target = target.target.as_ref();
    let history = rt.block_on(crate::ops::history::history(
        &repo,
        target,
        &account_ref,
        args.limit,
    ))?;
    let mut out = std::io::stdout().lock();
    if history.is_empty() {
        let _ = writeln!(
            out,
            "{account}: no pointer history in {}",
            target.location()
        );
        return Ok(ExitCode::SUCCESS);
    }
    for (i, entry) in history.iter().enumerate() {
        let p = &entry.pointer;
        let commit = p.commit.as_deref().map_or_else(
            || "-".to_string(),
            |c| {
                let short = &c[..12.min(c.len())];
                match &entry.subject {
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

pub fn bootstrap(args: &BootstrapArgs) -> Result<ExitCode> {
    let Some(Session {
        config, rt, target, ..
    }) = connect_at(&args.source, &args.rev, &args.target)?
    else {
        return Ok(ExitCode::FAILURE);
    };
    let accounts = select_accounts(&config, args.accounts.as_ref())?;
    let fleet = config.fleet.as_ref().map(|f| &f.spec);
    let progress = StderrProgress::new();
    let fan = args.target.fan_out(fleet, &progress);
    let by_name: std::collections::BTreeMap<&str, &AccountRef> =
        accounts.iter().map(|a| (a.name.as_str(), a)).collect();
    let report = rt.block_on(crate::ops::bootstrap::bootstrap(
        target.target.as_ref(),
        &fan,
        &accounts,
    ));
    let results = &report.results;
    let (mut created, mut present, mut failed) = (0, 0, 0);
    let mut stdout = std::io::stdout().lock();
    for (name, r) in results {
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
        target.target.location()
    );
    Ok(if failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

pub fn drift(args: &DriftArgs) -> Result<ExitCode> {
    let Some(Session {
        repo,
        commit: head,
        config,
        rt,
        target,
    }) = connect_at(&args.source, &args.rev, &args.target)?
    else {
        return Ok(ExitCode::FAILURE);
    };
    let fleet = config.fleet.as_ref().map(|f| &f.spec);
    let depth = args
        .history
        .or(fleet.map(|f| f.drift.history_depth as usize))
        .unwrap_or(50);
    let progress = StderrProgress::new();
    let fan = args.target.fan_out(fleet, &progress);
    let mut report = match rt.block_on(crate::ops::drift::run(
        &repo,
        &head,
        target.target.as_ref(),
        &fan,
        depth,
    )) {
        Ok(r) => r,
        Err(e) => return output::report_pipeline_error(e),
    };
    report.scrub(crate::redact::run_key());
    let text = match args.format {
        PlanFormat::Text => crate::ops::drift::text(&report),
        PlanFormat::Markdown => crate::ops::drift::markdown(&report),
        PlanFormat::Json => crate::ops::drift::json(&report),
    };
    match &args.out {
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
