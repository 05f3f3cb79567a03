//! The plan for terminals: every string through [`term`], colors only when asked.

use std::fmt::Write as _;

use anstyle::{AnsiColor, Style};

use crate::plan::format::common::*;
use crate::plan::{Action, DecommissionAction, Plan};

pub(super) struct Paint {
    on: bool,
}

impl Paint {
    fn paint(&self, style: Style, text: &str) -> String {
        if self.on {
            format!("{}{text}{}", style.render(), style.render_reset())
        } else {
            text.to_string()
        }
    }
}

pub(super) fn fg(c: AnsiColor) -> Style {
    Style::new().fg_color(Some(c.into()))
}

/// The plan for a terminal. `color` adds ANSI styles (the CLI decides: a TTY, no `NO_COLOR`).
pub fn text(plan: &Plan, color: bool) -> String {
    let p = Paint { on: color };
    let bold = Style::new().bold();
    let mut out = String::new();
    let s = &plan.summary;
    let _ = writeln!(
        out,
        "{} {} against {}",
        p.paint(bold, "fleetgate plan:"),
        revisions(plan),
        term(&plan.target)
    );
    let _ = writeln!(out, "{}", rendered_line(plan));

    if !plan.warnings.is_empty() {
        let _ = writeln!(
            out,
            "\n{}",
            p.paint(
                fg(AnsiColor::Yellow).bold(),
                &format!("Warnings ({}):", plan.warnings.len())
            )
        );
        for w in &plan.warnings {
            let _ = writeln!(
                out,
                "  {} {}",
                p.paint(fg(AnsiColor::Yellow), &format!("! [{}]", w.kind.as_str())),
                term(&w.message)
            );
            if !w.accounts.is_empty() {
                let _ = writeln!(
                    out,
                    "      in {} {}: {}",
                    w.accounts.len(),
                    accounts_word(w.accounts.len()),
                    collapsed(&w.accounts, |a| term(a).into_owned())
                );
            }
        }
    }

    for g in &plan.groups {
        let (sign, color) = match g.action {
            Action::Create => ("+ create", AnsiColor::Green),
            _ => ("~ update", AnsiColor::Yellow),
        };
        let _ = writeln!(
            out,
            "\n{} {}",
            p.paint(fg(color).bold(), sign),
            group_title(g, collapsed(&g.accounts, |a| term(a).into_owned()))
        );
        for c in &g.changes {
            let _ = writeln!(out, "    {}", term(&c.to_string()));
        }
        if let Some(from) = &g.context_from {
            let _ = writeln!(
                out,
                "    (the changed lines are the same in every account; context lines are {}'s)",
                term(from)
            );
        }
        for line in g.diff.lines() {
            let line = &*term(line);
            let styled = match line.as_bytes().first() {
                Some(b'+') => p.paint(fg(AnsiColor::Green), line),
                Some(b'-') => p.paint(fg(AnsiColor::Red), line),
                Some(b'@') => p.paint(fg(AnsiColor::Cyan), line),
                _ => line.to_string(),
            };
            let _ = writeln!(out, "    {styled}");
        }
    }
    let notes = notes(plan);
    if !notes.is_empty() {
        let _ = writeln!(out, "\n{}", p.paint(bold, "Notes:"));
        for (a, n) in notes {
            let _ = writeln!(out, "  {}: {}", term(&a.name), term(n));
        }
    }
    let unreachable = unreachable(plan);
    if !unreachable.is_empty() {
        let _ = writeln!(
            out,
            "\n{}",
            p.paint(
                fg(AnsiColor::Red).bold(),
                "Unreachable (nothing will be written):"
            )
        );
        for a in unreachable {
            let _ = writeln!(
                out,
                "  {} {}",
                p.paint(fg(AnsiColor::Red), "x"),
                term(a.note.as_deref().unwrap_or(&a.name))
            );
        }
    }
    if s.create + s.update > 0 {
        let _ = writeln!(out, "\n{}", p.paint(bold, "Rollout, in this order:"));
        for w in plan.waves.iter().filter(|w| !w.accounts.is_empty()) {
            let _ = writeln!(out, "  {}", wave_line(w));
        }
    }
    if !plan.decommissions.is_empty() {
        let _ = writeln!(
            out,
            "\n{}",
            p.paint(
                fg(AnsiColor::Red).bold(),
                "Decommission (fleet.yaml's offboarding; every request answered 410, no token issued):"
            )
        );
        for d in &plan.decommissions {
            let _ = writeln!(
                out,
                "  {} {} {} (tenant {}, account {}, {}){}{}",
                p.paint(
                    fg(AnsiColor::Red),
                    if d.action == DecommissionAction::Decommission {
                        "-"
                    } else {
                        " "
                    }
                ),
                d.action.as_str(),
                term(&d.name),
                term(&d.tenant),
                d.account_id,
                term(&d.location),
                d.from
                    .as_deref()
                    .map(|f| format!(" from {}", short(f)))
                    .unwrap_or_default(),
                d.note
                    .as_deref()
                    .map(|n| format!(": {}", term(n)))
                    .unwrap_or_default()
            );
        }
    }
    if !plan.orphans.is_empty() {
        let _ = writeln!(
            out,
            "\n{} {}",
            p.paint(bold, "Orphaned (in the target, not in git, not approved for decommission; never deleted):"),
            collapsed(&plan.orphans, |a| term(a).into_owned())
        );
    }
    let _ = writeln!(
        out,
        "\n{} {} to create, {} to update, {}{} unchanged, {} unreachable, {}{} not affected, {} orphaned.",
        p.paint(bold, "Plan:"),
        s.create,
        s.update,
        if s.decommission > 0 {
            format!("{} to decommission, ", s.decommission)
        } else {
            String::new()
        },
        s.no_change,
        s.unreachable,
        if s.held > 0 {
            format!("{} held, ", s.held)
        } else {
            String::new()
        },
        s.not_affected,
        s.orphaned
    );
    out
}

// ---------------------------------------------------------------------------------------
// Markdown
