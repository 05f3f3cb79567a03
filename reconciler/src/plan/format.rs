//! A plan as text (terminals), markdown (PR comments) and JSON (machines, artifacts).
//! Warnings come first in every format. Nothing here sees a sensitive value: the plan was
//! made from redacted bundles.

use std::fmt::Write as _;

use anstyle::{AnsiColor, Style};

use super::{AccountPlan, Action, Group, Plan};

/// The marker CI looks for to update one sticky PR comment instead of adding another.
pub const MARKDOWN_MARKER: &str = "<!-- fleetgate:plan -->";

/// GitHub rejects comments longer than 65,536 characters; markdown stays under this many
/// bytes (bytes >= characters), with room to spare for a CI wrapper's own lines.
pub const MARKDOWN_LIMIT: usize = 65_000;

/// The plan as a JSON document (pretty, stable key order), ending in a newline.
pub fn json(plan: &Plan) -> String {
    let mut s = serde_json::to_string_pretty(plan)
        .unwrap_or_else(|e| unreachable!("a plan always serializes: {e}"));
    s.push('\n');
    s
}

fn accounts_word(n: usize) -> &'static str {
    if n == 1 { "account" } else { "accounts" }
}

fn revisions(plan: &Plan) -> String {
    let head = format!("{} ({})", plan.head.rev, short(&plan.head.commit));
    match &plan.base {
        Some(b) => format!("{} ({}) -> {head}", b.rev, short(&b.commit)),
        None => head,
    }
}

fn short(commit: &str) -> &str {
    &commit[..commit.len().min(12)]
}

fn rendered_line(plan: &Plan) -> String {
    let r = plan.rendered;
    let s = &plan.summary;
    let mut line = if plan.base.is_some() {
        format!(
            "rendered {} {} at the base and {} at the head",
            r.base,
            accounts_word(r.base),
            r.head
        )
    } else {
        format!("rendered {} {} at the head", r.head, accounts_word(r.head))
    };
    let _ = write!(line, "; {} of {} in the fleet planned", s.planned, s.fleet);
    if s.not_affected > 0 {
        let _ = write!(line, " ({} not affected by the change)", s.not_affected);
    }
    line
}

fn group_title(g: &Group, names: usize) -> String {
    let shown: Vec<&str> = g.accounts.iter().take(names).map(String::as_str).collect();
    let more = g.accounts.len().saturating_sub(names);
    let list = if more > 0 {
        format!("{}, ... (+{more} more)", shown.join(", "))
    } else {
        shown.join(", ")
    };
    if g.accounts.len() == 1 {
        list
    } else {
        format!("same change in {} accounts: {list}", g.accounts.len())
    }
}

/// Drift notes of reachable accounts (an unreachable account's note is its reason).
fn notes(plan: &Plan) -> Vec<(&AccountPlan, &String)> {
    plan.accounts
        .iter()
        .filter(|a| a.action != Action::Unreachable)
        .filter_map(|a| a.note.as_ref().map(|n| (a, n)))
        .collect()
}

fn unreachable(plan: &Plan) -> Vec<&AccountPlan> {
    plan.accounts
        .iter()
        .filter(|a| a.action == Action::Unreachable)
        .collect()
}

/// `canary: 2 accounts, 2 at once, 0 failures tolerated, bake 10m`.
fn wave_line(w: &super::WavePlan) -> String {
    format!(
        "{}: {} {}, {} at once, {} failure{} tolerated, bake {}",
        w.name,
        w.accounts.len(),
        accounts_word(w.accounts.len()),
        w.max_concurrency,
        w.tolerated_failures,
        if w.tolerated_failures == 1 { "" } else { "s" },
        w.bake_time
    )
}

// ---------------------------------------------------------------------------------------
// Text

struct Paint {
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

fn fg(c: AnsiColor) -> Style {
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
        plan.target
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
                w.message
            );
            if !w.accounts.is_empty() {
                let _ = writeln!(
                    out,
                    "      in {} {}: {}",
                    w.accounts.len(),
                    accounts_word(w.accounts.len()),
                    w.accounts.join(", ")
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
            group_title(g, usize::MAX)
        );
        for c in &g.changes {
            let _ = writeln!(out, "    {c}");
        }
        if let Some(from) = &g.context_from {
            let _ = writeln!(
                out,
                "    (the changed lines are the same in every account; context lines are {from}'s)"
            );
        }
        for line in g.diff.lines() {
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
            let _ = writeln!(out, "  {}: {n}", a.name);
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
                a.note.as_deref().unwrap_or(&a.name)
            );
        }
    }
    if s.create + s.update > 0 {
        let _ = writeln!(out, "\n{}", p.paint(bold, "Rollout, in this order:"));
        for w in plan.waves.iter().filter(|w| !w.accounts.is_empty()) {
            let _ = writeln!(out, "  {}", wave_line(w));
        }
    }
    if !plan.orphans.is_empty() {
        let _ = writeln!(
            out,
            "\n{} {}",
            p.paint(bold, "Orphaned (in the target, not in git; never deleted):"),
            plan.orphans.join(", ")
        );
    }
    let _ = writeln!(
        out,
        "\n{} {} to create, {} to update, {} unchanged, {} unreachable, {}{} not affected, {} orphaned.",
        p.paint(bold, "Plan:"),
        s.create,
        s.update,
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

fn html(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn code_list(names: &[String], max: usize) -> String {
    let mut s: Vec<String> = names.iter().take(max).map(|n| format!("`{n}`")).collect();
    if names.len() > max {
        s.push(format!("... and {} more", names.len() - max));
    }
    s.join(", ")
}

/// Markdown for a PR comment: the summary table first, the marker, warnings, then one
/// collapsible block per group of identical changes. Kept under `limit` bytes: the biggest
/// diffs are cut first (with a note pointing to the full plan), then, if need be, the last
/// groups are left out and counted.
pub fn markdown(plan: &Plan, limit: usize, full_plan: Option<&str>) -> String {
    let s = &plan.summary;
    let mut head = String::new();
    let _ = writeln!(
        head,
        "| fleetgate plan | changed | unchanged | new | unreachable | orphaned | warnings |"
    );
    let _ = writeln!(head, "|:--|--:|--:|--:|--:|--:|--:|");
    let range = match &plan.base {
        Some(b) => format!(
            "`{}` → `{}`",
            b.rev.replace('`', "'"),
            plan.head.rev.replace('`', "'")
        ),
        None => format!("`{}`", plan.head.rev.replace('`', "'")),
    };
    let _ = writeln!(
        head,
        "| {range} | {} | {} | {} | {} | {} | {} |",
        s.update,
        s.no_change + s.not_affected,
        s.create,
        s.unreachable,
        s.orphaned,
        plan.warnings.len()
    );
    let _ = writeln!(head, "\n{MARKDOWN_MARKER}");
    let _ = writeln!(
        head,
        "Head `{}` against `{}`: {}.",
        short(&plan.head.commit),
        plan.target,
        rendered_line(plan)
    );
    let order: Vec<String> = plan
        .waves
        .iter()
        .filter(|w| !w.accounts.is_empty())
        .map(|w| format!("{} ({})", w.name, w.accounts.len()))
        .collect();
    if !order.is_empty() {
        let _ = writeln!(head, "\nRollout on merge: {}.", order.join(" → "));
    }
    if s.held > 0 {
        let _ = writeln!(
            head,
            "\n{} {} held by a rollback (not rolled forward until a newer commit lands or `fleetgate release`).",
            s.held,
            accounts_word(s.held)
        );
    }

    if !plan.warnings.is_empty() {
        let _ = writeln!(head, "\n### ⚠️ Warnings\n");
        // Messages can name per-account values (an issuer URL), so there can be one per
        // account: show the first ones, count the rest.
        const SHOWN: usize = 30;
        for w in plan.warnings.iter().take(SHOWN) {
            let _ = write!(head, "- **{}**: {}", w.kind.as_str(), w.message);
            if !w.accounts.is_empty() {
                let _ = write!(
                    head,
                    " ({} {}: {})",
                    w.accounts.len(),
                    accounts_word(w.accounts.len()),
                    code_list(&w.accounts, 10)
                );
            }
            head.push('\n');
        }
        if plan.warnings.len() > SHOWN {
            let _ = writeln!(
                head,
                "- ... and {} more warnings in the full plan",
                plan.warnings.len() - SHOWN
            );
        }
    }

    let mut tail = String::new();
    let notes = notes(plan);
    if !notes.is_empty() {
        let _ = writeln!(tail, "\n### Notes\n");
        for (a, n) in notes.iter().take(50) {
            let _ = writeln!(tail, "- `{}`: {n}", a.name);
        }
        if notes.len() > 50 {
            let _ = writeln!(tail, "- ... and {} more", notes.len() - 50);
        }
    }
    let unreachable = unreachable(plan);
    if !unreachable.is_empty() {
        let _ = writeln!(tail, "\n### ❌ Unreachable (nothing will be written)\n");
        for a in unreachable.iter().take(50) {
            let _ = writeln!(tail, "- {}", a.note.as_deref().unwrap_or(&a.name));
        }
        if unreachable.len() > 50 {
            let _ = writeln!(tail, "- ... and {} more", unreachable.len() - 50);
        }
    }
    if !plan.orphans.is_empty() {
        let _ = writeln!(
            tail,
            "\n### Orphaned\n\nIn the target but not in git; fleetgate never deletes them: {}",
            code_list(&plan.orphans, 100)
        );
    }
    let see_full = match full_plan {
        Some(url) => format!("the [full plan]({url})"),
        None => "the full plan (`fleetgate plan --format json`)".to_string(),
    };

    // Fit the groups in what is left.
    let footer_room = 300;
    let budget = limit.saturating_sub(head.len() + tail.len() + footer_room);
    let changes_head = if plan.groups.is_empty() {
        String::new()
    } else {
        "\n### Changes\n\n".to_string()
    };
    let budget = budget.saturating_sub(changes_head.len());
    // Each block is a fixed part plus as many diff lines as fit under a per-diff cap; find
    // the largest cap that fits from line lengths alone, then render once.
    let sizes: Vec<(usize, Vec<usize>)> = plan
        .groups
        .iter()
        .map(|g| {
            let fixed = group_block(g, 0, &see_full).len();
            (fixed, g.diff.lines().map(|l| l.len() + 1).collect())
        })
        .collect();
    let total_at = |cap: usize| -> usize {
        sizes
            .iter()
            .map(|(fixed, lines)| {
                let mut used = 0;
                for l in lines {
                    if used + l > cap {
                        break;
                    }
                    used += l;
                }
                // Fence around a shown diff; the truncation note is in `fixed` already
                // (a block with nothing shown carries it), give or take its digits.
                fixed + used + if used > 0 { 16 } else { 0 }
            })
            .sum()
    };
    let longest = plan.groups.iter().map(|g| g.diff.len()).max().unwrap_or(0);
    let cap = if total_at(longest) <= budget {
        longest
    } else {
        let (mut lo, mut hi) = (0, longest);
        while lo < hi {
            let mid = (lo + hi).div_ceil(2);
            if total_at(mid) <= budget {
                lo = mid;
            } else {
                hi = mid - 1;
            }
        }
        lo
    };
    let blocks: Vec<String> = plan
        .groups
        .iter()
        .map(|g| group_block(g, cap, &see_full))
        .collect();
    let mut body = String::new();
    body.push_str(&changes_head);
    let mut used = 0;
    let mut omitted = 0;
    for block in &blocks {
        if omitted > 0 || used + block.len() > budget {
            omitted += 1;
            continue;
        }
        used += block.len();
        body.push_str(block);
    }
    if omitted > 0 {
        let _ = writeln!(
            body,
            "\n{omitted} more change group{} not shown to stay under GitHub's comment size limit; see {see_full}.",
            if omitted == 1 { " is" } else { "s are" }
        );
    }
    let mut out = head;
    out.push_str(&body);
    out.push_str(&tail);
    if plan.groups.is_empty() && plan.summary.unreachable == 0 {
        out.push_str("\nNo changes: the target matches the head.\n");
    }
    out
}

/// One `<details>` block; the diff cut to about `cap` bytes at a line boundary.
fn group_block(g: &Group, cap: usize, see_full: &str) -> String {
    let mut b = String::new();
    let first_change = g
        .changes
        .first()
        .map(|c| format!(" · {}", html(&c.to_string())))
        .unwrap_or_default();
    let first_change: String = if first_change.chars().count() > 160 {
        format!("{}...", first_change.chars().take(157).collect::<String>())
    } else {
        first_change
    };
    let _ = writeln!(
        b,
        "<details><summary><b>{}</b> · {}{}</summary>\n",
        g.action.as_str(),
        html(&group_title(g, 5)),
        first_change
    );
    if g.accounts.len() > 5 {
        let _ = writeln!(
            b,
            "<details><summary>show all {} accounts</summary>\n\n{}\n</details>\n",
            g.accounts.len(),
            code_list(&g.accounts, 400)
        );
    }
    if let Some(from) = &g.context_from {
        let _ = writeln!(
            b,
            "_The changed lines are the same in every account; context lines are `{from}`'s._\n"
        );
    }
    for c in g.changes.iter().take(40) {
        let _ = writeln!(b, "- {}", c.to_string().replace('|', "\\|"));
    }
    if g.changes.len() > 40 {
        let _ = writeln!(b, "- ... and {} more changes", g.changes.len() - 40);
    }
    let lines = g.diff.lines().count();
    let mut diff = String::new();
    let mut shown = 0;
    for line in g.diff.lines() {
        if diff.len() + line.len() + 1 > cap {
            break;
        }
        diff.push_str(line);
        diff.push('\n');
        shown += 1;
    }
    if shown > 0 {
        let _ = write!(b, "\n```diff\n{diff}```\n");
    }
    if shown < lines {
        let _ = writeln!(
            b,
            "\n_Diff truncated: {shown} of {lines} lines shown. See {see_full}._"
        );
    }
    b.push_str("</details>\n\n");
    b
}
