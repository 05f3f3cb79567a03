//! The plan as a PR comment: every string through the escaping helper of the place it is
//! written to, the whole within GitHub's comment limit.

use std::borrow::Cow;
use std::fmt::Write as _;

use crate::plan::format::common::*;
use crate::plan::{DecommissionAction, Group, Plan, WavePlan};
use crate::redact::{hostile, one_line};

/// The marker CI looks for to update one sticky PR comment instead of adding another.
pub const MARKDOWN_MARKER: &str = "<!-- fleetgate:plan -->";

/// GitHub rejects comments longer than 65,536 characters; markdown stays under this many
/// bytes (bytes >= characters), with room to spare for a CI wrapper's own lines.
pub const MARKDOWN_LIMIT: usize = 65_000;

/// GitHub turns `@name` into a mention (a notification) and `#123` into a link to an issue,
/// in any text outside code, after markdown is rendered; no markdown escape stops that. A
/// word joiner (U+2060, invisible) after the `@` or `#` does.
pub(super) const WORD_JOINER: char = '\u{2060}';

/// Inline text in a markdown paragraph, list item or table cell. Every ASCII punctuation
/// character is backslash-escaped (so no emphasis, code, link, image, strikethrough, math,
/// table cell break, autolink or line-start marker such as `#`, `>`, `-`, `1.` can form),
/// except `<`, `>` and `&`, which become entities (no raw HTML, no `<...>` autolink, no
/// entity). The text is on one line, so it cannot start a block; spaces at its ends become
/// `&#32;`, so it cannot start an indented code block or end in a hard line break.
pub(super) fn md_text(s: &str) -> String {
    let s = one_line(s);
    let lead = s.len() - s.trim_start_matches(' ').len();
    let trail = s.trim_end_matches(' ').len().max(lead);
    let mut out = String::with_capacity(s.len() * 2);
    for (i, c) in s.char_indices() {
        match c {
            ' ' if i < lead || i >= trail => out.push_str("&#32;"),
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '@' | '#' => {
                out.push('\\');
                out.push(c);
                out.push(WORD_JOINER);
            }
            c if c.is_ascii_punctuation() => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
    out
}

/// Text inside an HTML element (`<summary>`). GitHub does not render markdown on an HTML
/// block's line, but in case a line ever is read as markdown, every ASCII punctuation
/// character is a numeric character reference: the same character in HTML and in markdown,
/// never markup in either.
pub(super) fn md_html(s: &str) -> String {
    let s = one_line(s);
    let mut out = String::with_capacity(s.len() * 2);
    for c in s.chars() {
        if c.is_ascii_punctuation() {
            let _ = write!(out, "&#{};", c as u32);
            if matches!(c, '@' | '#') {
                out.push(WORD_JOINER);
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The longest run of `ch` in `s`.
pub(super) fn longest_run(s: &str, ch: char) -> usize {
    let (mut longest, mut run) = (0, 0);
    for c in s.chars() {
        run = if c == ch { run + 1 } else { 0 };
        longest = longest.max(run);
    }
    longest
}

/// An inline code span: delimited by more backticks than any run inside, padded with a
/// space where the content starts or ends with a backtick or a space (CommonMark strips one
/// space from each end of a padded span). On one line: a line break inside a span would
/// still let the next line start a block. Nothing can be escaped inside a code span, so a
/// string with a `<` (which could write the comment's marker, `<!-- fleetgate:plan -->`,
/// into its text) is an HTML `<code>` element holding [`md_html`] text instead: it looks
/// the same.
pub(super) fn md_code(s: &str) -> String {
    let s = one_line(s);
    if s.contains('<') {
        return format!("<code>{}</code>", md_html(&s));
    }
    if s.is_empty() {
        // An empty span cannot be written; a space is the closest thing.
        return "` `".to_string();
    }
    let ticks = "`".repeat(longest_run(&s, '`') + 1);
    let pad = if s.starts_with(['`', ' ']) || s.ends_with(['`', ' ']) {
        " "
    } else {
        ""
    };
    format!("{ticks}{pad}{s}{pad}{ticks}")
}

/// The fence of a fenced code block around `content`: backticks, more than any run of
/// backticks in it and at least three, so no line of it can close the block early.
pub(super) fn md_fence(content: &str) -> String {
    "`".repeat((longest_run(content, '`') + 1).max(3))
}

/// A link destination, in `<...>`: anything that could end it or the line (`<`, `>`, `\`,
/// spaces, controls) is percent-encoded.
pub(super) fn md_link_dest(url: &str) -> String {
    let mut out = String::with_capacity(url.len() + 2);
    out.push('<');
    for c in url.chars() {
        if matches!(c, '<' | '>' | '\\' | ' ') || hostile(c) {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                let _ = write!(out, "%{b:02X}");
            }
        } else {
            out.push(c);
        }
    }
    out.push('>');
    out
}

// ---------------------------------------------------------------------------------------
// An invalid head

/// An account name as a code span, cut when very long.
pub(super) fn md_name(name: &str) -> String {
    md_code(&clip(name, NAME_CHARS))
}

/// Names as code spans, at most `max`, the rest counted.
pub(super) fn code_list(names: &[String], max: usize) -> String {
    let mut s: Vec<String> = names
        .iter()
        .take(max)
        .map(|n| md_code(&clip(n, NAME_CHARS)))
        .collect();
    if names.len() > max {
        s.push(format!("... and {} more", names.len() - max));
    }
    s.join(", ")
}

/// The comment's head: the summary table, the marker, the head and target, the rollout
/// order, holds and warnings.
fn markdown_head(plan: &Plan, limit: usize) -> String {
    let s = &plan.summary;
    let name = |n: &str| md_text(&clip(n, NAME_CHARS));
    let mut head = String::new();
    let _ = writeln!(
        head,
        "| fleetgate plan | changed | unchanged | new | unreachable | orphaned | warnings |"
    );
    let _ = writeln!(head, "|:--|--:|--:|--:|--:|--:|--:|");
    let range = match &plan.base {
        Some(b) => format!("{} → {}", name(&b.rev), name(&plan.head.rev)),
        None => name(&plan.head.rev),
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
        "Head {} against {}: {}.",
        md_code(short(&plan.head.commit)),
        md_code(&clip(&plan.target, 2 * NAME_CHARS)),
        rendered_line(plan)
    );
    const WAVES: usize = 20;
    let waves: Vec<&WavePlan> = plan
        .waves
        .iter()
        .filter(|w| !w.accounts.is_empty())
        .collect();
    let mut order: Vec<String> = waves
        .iter()
        .take(WAVES)
        .map(|w| format!("{} ({})", name(&w.name), w.accounts.len()))
        .collect();
    if waves.len() > WAVES {
        order.push(format!("... and {} more waves", waves.len() - WAVES));
    }
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
        let items = plan.warnings.iter().map(|w| {
            let mut line = format!(
                "- **{}**: {}",
                w.kind.as_str(),
                md_text(&clip(&w.message, TEXT_CHARS))
            );
            if !w.accounts.is_empty() {
                let _ = write!(
                    line,
                    " ({} {}: {})",
                    w.accounts.len(),
                    accounts_word(w.accounts.len()),
                    collapsed(&w.accounts, md_name)
                );
            }
            line.push('\n');
            line
        });
        push_items(&mut head, items, 30, limit / 4, |n| {
            format!("- ... and {n} more warnings in the full plan\n")
        });
    }
    head
}

/// The comment's tail: notes, unreachable accounts, orphans.
fn markdown_tail(plan: &Plan, limit: usize) -> String {
    let mut tail = String::new();
    let notes = notes(plan);
    if !notes.is_empty() {
        let _ = writeln!(tail, "\n### Notes\n");
        let items = notes.iter().map(|(a, n)| {
            format!(
                "- {}: {}\n",
                md_code(&clip(&a.name, NAME_CHARS)),
                md_text(&clip(n, TEXT_CHARS))
            )
        });
        push_items(&mut tail, items, 50, limit / 8, |n| {
            format!("- ... and {n} more\n")
        });
    }
    let unreachable = unreachable(plan);
    if !unreachable.is_empty() {
        let _ = writeln!(tail, "\n### ❌ Unreachable (nothing will be written)\n");
        let items = unreachable.iter().map(|a| {
            let note = a.note.as_deref().unwrap_or(&a.name);
            format!("- {}\n", md_text(&clip(note, TEXT_CHARS)))
        });
        push_items(&mut tail, items, 50, limit / 8, |n| {
            format!("- ... and {n} more\n")
        });
    }
    if !plan.orphans.is_empty() {
        let _ = writeln!(
            tail,
            "\n### Orphaned\n\nIn the target but not in git, and not approved for decommission: they keep serving; fleetgate never deletes them: {}",
            collapsed(&plan.orphans, md_name)
        );
    }
    tail
}

/// The decommissions, each account on its line with its tenant: never folded into a group
/// or a count, since each one stops a customer's service.
fn markdown_decommissions(plan: &Plan, limit: usize) -> String {
    let mut out = String::new();
    if plan.decommissions.is_empty() {
        return out;
    }
    let _ = writeln!(
        out,
        "\n### 🛑 Decommission\n\nApproved in fleet.yaml's `offboarding.decommission`. On merge each pointer becomes a tombstone: the account's gateways answer 410 to every request, and its identity provider issues no token and accepts none. `fleetgate rollback` restores an account until `fleetgate erase` deletes its state.\n"
    );
    let items = plan.decommissions.iter().map(|d| {
        let mut line = format!(
            "- {} **{}** {} (tenant {}, account {}, {})",
            if d.action == DecommissionAction::Decommission {
                "➖"
            } else {
                "▫️"
            },
            d.action.as_str(),
            md_name(&d.name),
            md_name(&d.tenant),
            md_code(&d.account_id),
            md_code(&clip(&d.location, TEXT_CHARS))
        );
        if let Some(from) = &d.from {
            let _ = write!(line, " from {}", md_code(short(from)));
        }
        if let Some(note) = &d.note {
            let _ = write!(line, ": {}", md_text(&clip(note, TEXT_CHARS)));
        }
        line.push('\n');
        line
    });
    push_items(&mut out, items, 200, limit / 4, |n| {
        format!("- ... and {n} more in the full plan\n")
    });
    out
}

/// Markdown for a PR comment: the summary table first, the marker, warnings, then one
/// collapsible block per group of identical changes. Kept under `limit` bytes: the biggest
/// diffs are cut first (with a note pointing to the full plan), then, if need be, the last
/// groups are left out and counted. Every string from the plan is escaped for the place it
/// is written to (see the module's documentation), and cut when very long; warnings, notes
/// and unreachable accounts each take at most a share of `limit`, the rest counted.
pub fn markdown(plan: &Plan, limit: usize, full_plan: Option<&str>) -> String {
    let head = markdown_head(plan, limit) + &markdown_decommissions(plan, limit);
    let tail = markdown_tail(plan, limit);
    let see_full = match full_plan {
        Some(url) => format!("the [full plan]({})", md_link_dest(url)),
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
    // The diffs as they are written: each line without control or bidi characters, and
    // with `<` as JSON's `\u003c`, so no string in a bundle can put the comment's marker
    // into its text (nothing can be escaped inside a code block).
    let diffs: Vec<String> = plan
        .groups
        .iter()
        .map(|g| {
            g.diff
                .lines()
                .flat_map(|l| [one_line(l), Cow::Borrowed("\n")])
                .collect::<String>()
                .replace('<', "\\u003c")
        })
        .collect();
    // Each block is a fixed part plus as many diff lines as fit under a per-diff cap, in a
    // fence made for the whole diff; find the largest cap that fits from line lengths
    // alone, then render once.
    let sizes: Vec<(usize, usize, Vec<usize>)> = plan
        .groups
        .iter()
        .zip(&diffs)
        .map(|(g, diff)| {
            let fixed = group_block(g, diff, 0, &see_full).len();
            // `\n{fence}diff\n` ... `{fence}\n`, with room to spare.
            let fence = 2 * md_fence(diff).len() + 10;
            (fixed, fence, diff.lines().map(|l| l.len() + 1).collect())
        })
        .collect();
    let total_at = |cap: usize| -> usize {
        sizes
            .iter()
            .map(|(fixed, fence, lines)| {
                let mut used = 0;
                for l in lines {
                    if used + l > cap {
                        break;
                    }
                    used += l;
                }
                // The truncation note is in `fixed` already (a block with nothing shown
                // carries it), give or take its digits.
                fixed + used + if used > 0 { *fence } else { 0 }
            })
            .sum()
    };
    let longest = diffs.iter().map(String::len).max().unwrap_or(0);
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
        .zip(&diffs)
        .map(|(g, diff)| group_block(g, diff, cap, &see_full))
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

/// One `<details>` block; `diff` (the group's, as written) cut to about `cap` bytes at a
/// line boundary.
pub(super) fn group_block(g: &Group, diff: &str, cap: usize, see_full: &str) -> String {
    let mut b = String::new();
    // Cut before escaping, so an escape is never cut in half.
    let first_change = g
        .changes
        .first()
        .map(|c| format!(" · {}", md_html(&clip(&c.to_string(), 157))))
        .unwrap_or_default();
    let _ = writeln!(
        b,
        "<details><summary><b>{}</b> · {}{}</summary>\n",
        g.action.as_str(),
        group_title(
            g,
            first_names(&g.accounts, 5, |a| md_html(&clip(a, NAME_CHARS)))
        ),
        first_change
    );
    if g.accounts.len() > 5 {
        let label = if g.accounts.len() > LIST_NAMES {
            format!(
                "show {LIST_NAMES} of {} accounts",
                thousands(g.accounts.len())
            )
        } else {
            format!("show all {} accounts", g.accounts.len())
        };
        let _ = writeln!(
            b,
            "<details><summary>{label}</summary>\n\n{}\n</details>\n",
            collapsed(&g.accounts, md_name)
        );
    }
    if let Some(from) = &g.context_from {
        let _ = writeln!(
            b,
            "_The changed lines are the same in every account; context lines are {}'s._\n",
            md_code(&clip(from, NAME_CHARS))
        );
    }
    for c in g.changes.iter().take(40) {
        let _ = writeln!(b, "- {}", md_text(&clip(&c.to_string(), TEXT_CHARS)));
    }
    if g.changes.len() > 40 {
        let _ = writeln!(b, "- ... and {} more changes", g.changes.len() - 40);
    }
    let lines = diff.lines().count();
    let mut shown_diff = String::new();
    let mut shown = 0;
    for line in diff.lines() {
        if shown_diff.len() + line.len() + 1 > cap {
            break;
        }
        shown_diff.push_str(line);
        shown_diff.push('\n');
        shown += 1;
    }
    if shown > 0 {
        let fence = md_fence(diff);
        let _ = write!(b, "\n{fence}diff\n{shown_diff}{fence}\n");
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
