//! A plan as text (terminals), markdown (PR comments) and JSON (machines, artifacts).
//! Warnings come first in every format. Nothing here sees a sensitive value: the plan was
//! made from redacted bundles.
//!
//! Most strings in a plan come from the pull request under review: names, descriptions, URLs,
//! wave names, revision names, target errors. They are data, never markup: every one goes
//! through the escaping helper of the place it is written to ([`term`] in text; [`md_text`],
//! [`md_html`], [`md_code`], [`md_fence`] and [`md_link_dest`] in markdown), so no string can
//! change the comment's structure, hide part of it, add links, images or HTML, mention
//! people, or rewrite a terminal.

use std::borrow::Cow;
use std::fmt::Write as _;

use anstyle::{AnsiColor, Style};
use serde::Serialize;

use super::{AccountPlan, Action, Group, PLAN_FORMAT_VERSION, Plan, Revision};
use crate::config::diagnostics::{Diagnostic, DiagnosticJson};
use crate::redact::hostile;
/// Defined with the redaction point every printed text goes through; also used here.
pub use crate::redact::one_line;

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

// ---------------------------------------------------------------------------------------
// Escaping: one helper per place a string from the pull request is written to.

/// A string for a terminal (text format): one line, no control or bidi characters.
fn term(s: &str) -> Cow<'_, str> {
    one_line(s)
}

/// GitHub turns `@name` into a mention (a notification) and `#123` into a link to an issue,
/// in any text outside code, after markdown is rendered; no markdown escape stops that. A
/// word joiner (U+2060, invisible) after the `@` or `#` does.
const WORD_JOINER: char = '\u{2060}';

/// Inline text in a markdown paragraph, list item or table cell. Every ASCII punctuation
/// character is backslash-escaped (so no emphasis, code, link, image, strikethrough, math,
/// table cell break, autolink or line-start marker such as `#`, `>`, `-`, `1.` can form),
/// except `<`, `>` and `&`, which become entities (no raw HTML, no `<...>` autolink, no
/// entity). The text is on one line, so it cannot start a block; spaces at its ends become
/// `&#32;`, so it cannot start an indented code block or end in a hard line break.
fn md_text(s: &str) -> String {
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
fn md_html(s: &str) -> String {
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
fn longest_run(s: &str, ch: char) -> usize {
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
fn md_code(s: &str) -> String {
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
fn md_fence(content: &str) -> String {
    "`".repeat((longest_run(content, '`') + 1).max(3))
}

/// A link destination, in `<...>`: anything that could end it or the line (`<`, `>`, `\`,
/// spaces, controls) is percent-encoded.
fn md_link_dest(url: &str) -> String {
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

/// A head whose manifests have errors: nothing was planned, and the errors are the output.
#[derive(Debug, Clone, Copy)]
pub struct InvalidHead<'a> {
    /// `--repo` as given.
    pub repo: &'a str,
    pub base: Option<&'a Revision>,
    pub head: &'a Revision,
    /// Every error, sorted and located (`Diagnostics::into_sorted`).
    pub errors: &'a [Diagnostic],
}

/// The JSON document of an invalid head: `valid: false` and every error
/// (schemas/plan-invalid.schema.json).
#[derive(Debug, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InvalidJson<'a> {
    /// The plan document's format version (the same as a plan's).
    format_version: u32,
    /// Always `false`: the head did not load or render, so there is no plan.
    valid: bool,
    repo: &'a str,
    base: Option<&'a Revision>,
    head: &'a Revision,
    /// Every error, sorted by file, line and column, as `fleetgate validate --format json`
    /// lists them (messages redacted).
    errors: Vec<DiagnosticJson<'a>>,
}

/// An invalid head as a JSON document (pretty, ending in a newline): `formatVersion`,
/// `valid` (`false`), `repo`, `base`, `head` and `errors[]`, each error `{file, line, column,
/// message, accounts[]}` as `fleetgate validate --format json` writes them.
pub fn invalid_json(inv: &InvalidHead<'_>) -> String {
    let doc = InvalidJson {
        format_version: PLAN_FORMAT_VERSION,
        valid: false,
        repo: inv.repo,
        base: inv.base,
        head: inv.head,
        errors: inv.errors.iter().map(DiagnosticJson::from).collect(),
    };
    let mut s = serde_json::to_string_pretty(&doc)
        .unwrap_or_else(|e| unreachable!("an error list always serializes: {e}"));
    s.push('\n');
    s
}

/// An error message longer than this many characters is cut in the comment (the JSON
/// document and stderr have it whole).
const ERROR_CHARS: usize = 2_000;

/// An invalid head as a PR comment, with the plan's marker so it replaces the sticky plan
/// comment: what was checked, then every error with its `file:line:col` and accounts. Kept
/// under `limit` bytes: errors that do not fit are counted.
pub fn invalid_markdown(inv: &InvalidHead<'_>, limit: usize) -> String {
    let n = inv.errors.len();
    let mut out = String::new();
    let _ = writeln!(out, "### ❌ fleetgate plan: invalid manifests\n");
    let _ = writeln!(out, "{MARKDOWN_MARKER}");
    let _ = writeln!(
        out,
        "Head {} ({}) has {n} error{}; nothing was planned. Every error is listed below with the file, line and column it is at.\n",
        md_code(short(&inv.head.commit)),
        md_text(&clip(&inv.head.rev, NAME_CHARS)),
        if n == 1 { "" } else { "s" },
    );
    // Room for the closing line that counts what is left out.
    let reserve = 200;
    for (i, d) in inv.errors.iter().enumerate() {
        let mut line = format!(
            "- {}: {}",
            md_code(&clip(&d.span.to_string(), 2 * NAME_CHARS)),
            md_text(&clip(&crate::redact::scrub_run(&d.message), ERROR_CHARS))
        );
        if !d.accounts.is_empty() {
            let _ = write!(
                line,
                " ({} {}: {})",
                d.accounts.len(),
                accounts_word(d.accounts.len()),
                code_list(&d.accounts, 10)
            );
        }
        line.push('\n');
        if out.len() + line.len() + reserve > limit {
            let rest = n - i;
            let _ = writeln!(
                out,
                "- ... and {rest} more error{} not shown to stay under GitHub's comment size limit; `fleetgate validate` or `fleetgate plan --format json` lists them all",
                if rest == 1 { "" } else { "s" }
            );
            break;
        }
        out.push_str(&line);
    }
    out
}

/// Longest name (account, wave, ref) and longest free text (a warning, note, change or
/// error) the markdown shows, in characters; longer ones are cut, marked with `...`. Bounds
/// what one string can take of the comment's size (the JSON plan has them whole).
const NAME_CHARS: usize = 100;
const TEXT_CHARS: usize = 500;

/// At most `max` characters of `s`, a cut marked with `...`.
fn clip(s: &str, max: usize) -> Cow<'_, str> {
    match s.char_indices().nth(max) {
        None => Cow::Borrowed(s),
        Some(_) => {
            let keep = s
                .char_indices()
                .nth(max.saturating_sub(3))
                .map_or(s.len(), |(i, _)| i);
            Cow::Owned(format!("{}...", &s[..keep]))
        }
    }
}

/// Appends `items` (whole lines) to `out` while they fit in `room` bytes and number at
/// most `max`; the rest are counted with `more(n)`.
fn push_items(
    out: &mut String,
    items: impl IntoIterator<Item = String>,
    max: usize,
    room: usize,
    more: impl Fn(usize) -> String,
) {
    let start = out.len();
    let mut left = 0;
    for (i, item) in items.into_iter().enumerate() {
        if left > 0 || i >= max || out.len() - start + item.len() > room {
            left += 1;
            continue;
        }
        out.push_str(&item);
    }
    if left > 0 {
        out.push_str(&more(left));
    }
}

fn accounts_word(n: usize) -> &'static str {
    if n == 1 { "account" } else { "accounts" }
}

/// `base (commit) -> head (commit)`, for a terminal.
fn revisions(plan: &Plan) -> String {
    let head = format!(
        "{} ({})",
        term(&plan.head.rev),
        term(short(&plan.head.commit))
    );
    match &plan.base {
        Some(b) => format!("{} ({}) -> {head}", term(&b.rev), term(short(&b.commit))),
        None => head,
    }
}

fn short(commit: &str) -> &str {
    match commit.char_indices().nth(12) {
        Some((i, _)) => &commit[..i],
        None => commit,
    }
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

/// The accounts of a group, each name escaped with `esc`.
fn group_title(g: &Group, names: usize, esc: impl Fn(&str) -> String) -> String {
    let shown: Vec<String> = g.accounts.iter().take(names).map(|a| esc(a)).collect();
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

/// `canary: 2 accounts, 2 at once, 0 failures tolerated, bake 10m`, for a terminal.
fn wave_line(w: &super::WavePlan) -> String {
    format!(
        "{}: {} {}, {} at once, {} failure{} tolerated, bake {}",
        term(&w.name),
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
                    term(&w.accounts.join(", "))
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
            group_title(g, usize::MAX, |a| term(a).into_owned())
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
    if !plan.orphans.is_empty() {
        let _ = writeln!(
            out,
            "\n{} {}",
            p.paint(bold, "Orphaned (in the target, not in git; never deleted):"),
            term(&plan.orphans.join(", "))
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

/// Names as code spans, at most `max`, the rest counted.
fn code_list(names: &[String], max: usize) -> String {
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

/// Markdown for a PR comment: the summary table first, the marker, warnings, then one
/// collapsible block per group of identical changes. Kept under `limit` bytes: the biggest
/// diffs are cut first (with a note pointing to the full plan), then, if need be, the last
/// groups are left out and counted. Every string from the plan is escaped for the place it
/// is written to (see the module's documentation), and cut when very long; warnings, notes
/// and unreachable accounts each take at most a share of `limit`, the rest counted.
pub fn markdown(plan: &Plan, limit: usize, full_plan: Option<&str>) -> String {
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
    let waves: Vec<&super::WavePlan> = plan
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
                    code_list(&w.accounts, 10)
                );
            }
            line.push('\n');
            line
        });
        push_items(&mut head, items, 30, limit / 4, |n| {
            format!("- ... and {n} more warnings in the full plan\n")
        });
    }

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
            "\n### Orphaned\n\nIn the target but not in git; fleetgate never deletes them: {}",
            code_list(&plan.orphans, 100)
        );
    }
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
fn group_block(g: &Group, diff: &str, cap: usize, see_full: &str) -> String {
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
        group_title(g, 5, |a| md_html(&clip(a, NAME_CHARS))),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_spans_outlast_every_backtick_run_and_keep_edge_spaces() {
        assert_eq!(md_code("a"), "`a`");
        assert_eq!(md_code("a`b"), "``a`b``");
        assert_eq!(md_code("``x"), "``` ``x ```");
        assert_eq!(md_code(" a "), "`  a  `");
        assert_eq!(md_code(""), "` `");
        assert_eq!(md_code("a\nb"), "`a b`");
        assert_eq!(
            md_code("<!-- fleetgate:plan -->"),
            "<code>&#60;&#33;&#45;&#45; fleetgate&#58;plan &#45;&#45;&#62;</code>"
        );
    }

    #[test]
    fn fences_are_longer_than_any_backtick_run_inside() {
        assert_eq!(md_fence("+ a\n"), "```");
        assert_eq!(md_fence("+ ```\n"), "````");
        assert_eq!(md_fence("+ `````` x\n"), "```````");
    }

    #[test]
    fn text_is_escaped_for_markdown_and_html() {
        assert_eq!(
            md_text("</details>**OK** [x](u)"),
            "&lt;\\/details&gt;\\*\\*OK\\*\\* \\[x\\]\\(u\\)"
        );
        assert_eq!(
            md_text("  # h\n- x  "),
            "&#32;&#32;\\#\u{2060} h \\- x&#32;&#32;"
        );
        assert_eq!(md_text("@bob"), "\\@\u{2060}bob");
        assert_eq!(md_html("a<b>&\"'"), "a&#60;b&#62;&#38;&#34;&#39;");
        assert_eq!(md_html("#1"), "&#35;\u{2060}1");
    }

    #[test]
    fn hostile_characters_are_shown_not_obeyed() {
        assert_eq!(
            term("a\u{1b}[2Jb\u{202e}c\r\nd"),
            "a\\u{1b}[2Jb\\u{202e}c  d"
        );
        assert_eq!(term("plain"), "plain");
    }

    #[test]
    fn long_strings_are_clipped_on_character_boundaries() {
        assert_eq!(clip("abcdef", 6), "abcdef");
        assert_eq!(clip("abcdefg", 6), "abc...");
        assert_eq!(clip("ééééééé", 6), "ééé...");
    }

    #[test]
    fn link_destinations_cannot_end_early() {
        assert_eq!(
            md_link_dest("https://ci.example/a b>c\\d\n"),
            "<https://ci.example/a%20b%3Ec%5Cd%0A>"
        );
    }
}
