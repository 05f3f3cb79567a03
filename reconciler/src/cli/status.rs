//! `fleetgate status`: runs the status operation ([`crate::ops::status`]), asks the watch
//! daemon when given one, and prints the report as text or JSON, every text through the
//! redaction point.

use std::fmt::Write as _;
use std::io::Write as _;
use std::process::ExitCode;

use anyhow::{Context as _, Result};

use crate::cli::args::{Format, StatusArgs};
use crate::cli::progress::StderrProgress;
use crate::cli::session::{Session, connect_at, select_accounts};
use crate::ops::status::{
    AutoRollback, CommitGroup, DaemonCommit, DaemonView, HeldAccount, StatusReport, WaveStatus,
};
use crate::redact::one_line;

/// Names listed on one line of text before "and N more" (JSON lists them all).
const NAMES_PER_LINE: usize = 10;

pub fn status(args: &StatusArgs) -> Result<ExitCode> {
    let Some(Session {
        repo,
        commit: head,
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
    let mut report = rt.block_on(crate::ops::status::read(
        &repo,
        &head,
        &config,
        &accounts,
        target.target.as_ref(),
        &fan,
    ))?;
    if let Some(url) = args.daemon.as_deref().filter(|u| !u.is_empty()) {
        report.daemon = Some(rt.block_on(crate::ops::status::daemon(url)));
    }
    let key = crate::redact::run_key();
    let out = match args.format {
        Format::Json => {
            let mut v = serde_json::to_value(&report).context("cannot write the report")?;
            crate::redact::scrub_value(&mut v, key);
            let mut s = serde_json::to_string_pretty(&v).context("cannot write the report")?;
            s.push('\n');
            s
        }
        Format::Text => crate::redact::scrub(&text(&report), key).into_owned(),
    };
    let out = if out.ends_with('\n') { out } else { out + "\n" };
    std::io::stdout()
        .lock()
        .write_all(out.as_bytes())
        .context("cannot write the report")?;
    // Not one account could be read: the target (its credentials, its endpoint) is the
    // problem, not the fleet's state.
    let s = &report.summary;
    if s.accounts > 0 && s.unreachable == s.accounts {
        let _ = writeln!(
            std::io::stderr(),
            "error: none of the {} accounts could be read in {}",
            s.accounts,
            crate::redact::scrub(&one_line(&report.target), key)
        );
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// The first 12 characters (a short sha); whole characters, whatever the daemon sent.
fn short(s: &str) -> &str {
    s.char_indices().nth(12).map_or(s, |(i, _)| &s[..i])
}

/// `1a2b3c4d5e6f "subject"`, or the short sha alone.
fn commit_line(commit: &str, subject: Option<&str>) -> String {
    let commit = one_line(commit);
    match subject {
        Some(s) => format!("{} \"{}\"", short(&commit), one_line(s)),
        None => short(&commit).to_string(),
    }
}

/// At most [`NAMES_PER_LINE`] names, then "and N more".
fn names<S: AsRef<str>>(list: &[S]) -> String {
    let mut shown: Vec<String> = list
        .iter()
        .take(NAMES_PER_LINE)
        .map(|n| one_line(n.as_ref()).into_owned())
        .collect();
    if list.len() > NAMES_PER_LINE {
        shown.push(format!("and {} more", list.len() - NAMES_PER_LINE));
    }
    shown.join(", ")
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// For terminals: the head and its count, each wave's commits, holds and problems, the
/// last automatic rollback, then the daemon. Not yet redacted.
pub fn text(report: &StatusReport) -> String {
    let mut out = String::new();
    let h = &report.head;
    let s = &report.summary;
    let _ = writeln!(
        out,
        "{} at {}, target {}",
        one_line(&h.rev),
        commit_line(&h.commit, h.subject.as_deref()),
        one_line(&report.target)
    );
    let _ = writeln!(
        out,
        "{} of {} at the head; {} held, {} never deployed, {} unreachable",
        s.at_head,
        plural(s.accounts, "account", "accounts"),
        s.held,
        s.never_deployed,
        s.unreachable
    );
    for wave in &report.waves {
        out.push('\n');
        wave_text(&mut out, wave);
    }
    out.push('\n');
    match &report.last_auto_rollback {
        Some(r) => auto_rollback_text(&mut out, r),
        None => out.push_str("last automatic rollback: none in these accounts' pointers\n"),
    }
    if let Some(d) = &report.daemon {
        out.push('\n');
        daemon_text(&mut out, d);
    }
    out
}

fn wave_text(out: &mut String, wave: &WaveStatus) {
    let _ = writeln!(
        out,
        "wave {}: {}",
        one_line(&wave.name),
        plural(wave.accounts, "account", "accounts")
    );
    for g in &wave.commits {
        let _ = writeln!(out, "  {}", group_line(g));
    }
    // One line per hold (a rollback holds many accounts with the same hold), not per account.
    let mut holds: Vec<(String, Vec<&str>)> = Vec::new();
    for held in &wave.held {
        let line = held_line(held);
        match holds.iter_mut().find(|(l, _)| *l == line) {
            Some((_, accounts)) => accounts.push(&held.account),
            None => holds.push((line, vec![&held.account])),
        }
    }
    for (line, accounts) in holds {
        let _ = writeln!(
            out,
            "  held {} ({line}): {}",
            accounts.len(),
            names(&accounts)
        );
    }
    if !wave.never_deployed.is_empty() {
        let _ = writeln!(
            out,
            "  never deployed ({}): {}",
            wave.never_deployed.len(),
            names(&wave.never_deployed)
        );
    }
    for u in wave.unreachable.iter().take(NAMES_PER_LINE) {
        let _ = writeln!(
            out,
            "  unreachable [{}] {}: {}",
            u.class,
            one_line(&u.account),
            one_line(&u.error)
        );
    }
    if wave.unreachable.len() > NAMES_PER_LINE {
        let _ = writeln!(
            out,
            "  unreachable: and {} more",
            wave.unreachable.len() - NAMES_PER_LINE
        );
    }
}

fn group_line(g: &CommitGroup) -> String {
    let what = match (&g.commit, &g.digest) {
        (Some(c), _) => commit_line(c, g.subject.as_deref()),
        (None, Some(d)) => format!("no commit, bundle {}", short_digest(d)),
        (None, None) => "no commit".to_string(),
    };
    let note = if g.is_head {
        " (head)".to_string()
    } else if g.runs_head_bundle == g.count {
        " (the head's bundle)".to_string()
    } else if g.runs_head_bundle > 0 {
        format!(" ({} run the head's bundle)", g.runs_head_bundle)
    } else {
        String::new()
    };
    format!("{what}{note}: {} {}", g.count, names(&g.accounts))
}

/// A hold, without its account.
fn held_line(h: &HeldAccount) -> String {
    format!(
        "\"{}\" by {} at {}, to {}{}{}",
        one_line(&h.reason),
        one_line(&h.by),
        one_line(&h.at),
        one_line(&h.to),
        h.branch_head
            .as_deref()
            .map(|b| format!(", branch head {}", short(&one_line(b))))
            .unwrap_or_default(),
        if h.superseded {
            " (over: the branch has moved past it)"
        } else {
            ""
        }
    )
}

fn auto_rollback_text(out: &mut String, r: &AutoRollback) {
    let _ = writeln!(
        out,
        "last automatic rollback: at {} by {}, {} back:",
        one_line(&r.at),
        one_line(&r.by),
        plural(r.accounts.len(), "account", "accounts")
    );
    // Accounts that went back to the same commit share a line.
    let mut by_commit: Vec<(String, Vec<&str>)> = Vec::new();
    for a in &r.accounts {
        let to = match &a.commit {
            Some(c) => commit_line(c, a.subject.as_deref()),
            None => format!("bundle {}", short_digest(&a.digest)),
        };
        match by_commit.iter_mut().find(|(t, _)| *t == to) {
            Some((_, list)) => list.push(&a.account),
            None => by_commit.push((to, vec![&a.account])),
        }
    }
    for (to, accounts) in by_commit {
        let _ = writeln!(out, "  to {to}: {}", names(&accounts));
    }
}

fn short_digest(d: &str) -> &str {
    d.get(..19).unwrap_or(d)
}

fn daemon_commit(c: &DaemonCommit) -> String {
    let mut s = match &c.commit {
        Some(id) => commit_line(id, c.subject.as_deref()),
        None => "?".to_string(),
    };
    if let Some(at) = &c.at {
        let _ = write!(s, " at {}", one_line(at));
    }
    s
}

fn daemon_text(out: &mut String, d: &DaemonView) {
    let url = one_line(&d.url);
    if !d.reachable {
        let _ = writeln!(
            out,
            "daemon {url}: not reachable: {}",
            one_line(d.error.as_deref().unwrap_or("no answer"))
        );
        return;
    }
    if let Some(e) = &d.error {
        let _ = writeln!(out, "daemon {url}: answered, but {}", one_line(e));
        return;
    }
    let _ = writeln!(
        out,
        "daemon {url}: {}{}, lease holder {}",
        one_line(d.identity.as_deref().unwrap_or("?")),
        d.branch
            .as_deref()
            .map(|b| format!(" tracking {}", one_line(b)))
            .unwrap_or_default(),
        one_line(d.lease_holder.as_deref().unwrap_or("none"))
    );
    if let Some(h) = &d.head {
        let _ = writeln!(out, "  head: {}", daemon_commit(h));
    }
    if let Some(l) = &d.last_applied {
        let _ = writeln!(out, "  last applied: {}", daemon_commit(l));
    }
    if let Some(q) = &d.queued {
        let _ = writeln!(out, "  queued: {}", short(&one_line(q)));
    }
    if let Some(r) = &d.rollout {
        let _ = writeln!(
            out,
            "  {} {}: {}{}{}",
            if r.in_progress {
                "rollout in progress of"
            } else {
                "last rollout of"
            },
            short(&one_line(r.commit.as_deref().unwrap_or("?"))),
            one_line(r.outcome.as_deref().unwrap_or("?")),
            r.started_at
                .as_deref()
                .map(|t| format!(", started {}", one_line(t)))
                .unwrap_or_default(),
            r.finished_at
                .as_deref()
                .map(|t| format!(", finished {}", one_line(t)))
                .unwrap_or_default()
        );
        if let Some(reason) = &r.reason {
            let _ = writeln!(out, "    reason: {}", one_line(reason));
        }
        for w in &r.waves {
            let states: Vec<String> = w
                .account_states
                .iter()
                .map(|(state, n)| format!("{n} {}", one_line(state)))
                .collect();
            let _ = writeln!(
                out,
                "    wave {}: {} ({})",
                one_line(&w.name),
                one_line(w.state.as_deref().unwrap_or("?")),
                if states.is_empty() {
                    "no accounts".to_string()
                } else {
                    states.join(", ")
                }
            );
        }
    }
    if let Some(r) = &d.rejected {
        let _ = writeln!(
            out,
            "  rejected: {} (rolled back automatically, not retried until the branch moves): {}",
            short(&one_line(r.commit.as_deref().unwrap_or("?"))),
            one_line(r.reason.as_deref().unwrap_or("no reason given"))
        );
    }
    if let Some(p) = &d.preempted {
        let _ = writeln!(
            out,
            "  preempted: the rollout of {} stopped{} because the branch moved to {}; {} already moved{}",
            short(&one_line(p.commit.as_deref().unwrap_or("?"))),
            p.at.as_deref()
                .map(|t| format!(" at {}", one_line(t)))
                .unwrap_or_default(),
            short(&one_line(p.by.as_deref().unwrap_or("?"))),
            plural(p.moved.len(), "account", "accounts"),
            if p.moved.is_empty() {
                String::new()
            } else {
                format!(": {}", names(&p.moved))
            }
        );
    }
    if !d.held.is_empty() {
        for h in d.held.iter().take(NAMES_PER_LINE) {
            let _ = writeln!(
                out,
                "  held {}: {}",
                one_line(h.account.as_deref().unwrap_or("?")),
                one_line(h.note.as_deref().unwrap_or(""))
            );
        }
        if d.held.len() > NAMES_PER_LINE {
            let _ = writeln!(out, "  held: and {} more", d.held.len() - NAMES_PER_LINE);
        }
    }
    if let Some(e) = &d.last_error {
        let _ = writeln!(out, "  last error: {}", one_line(e));
    }
}
