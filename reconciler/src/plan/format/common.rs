//! What every format shows the same way: counts, revisions, group titles, waves, clipping;
//! and the JSON document.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::io::Write as _;

use crate::plan::{AccountPlan, Action, Group, Plan, WavePlan};
use crate::redact::one_line;

/// The plan as a JSON document (pretty, stable key order), ending in a newline.
pub fn json(plan: &Plan) -> String {
    let mut out = Vec::new();
    write_json(plan, &mut out).unwrap_or_else(|e| unreachable!("a plan always serializes: {e}"));
    String::from_utf8(out).unwrap_or_else(|e| unreachable!("JSON is UTF-8: {e}"))
}

/// [`json`], written as it is serialized: a plan of 10,000 creates is a 200 MB document,
/// and each account's diff is unpacked only while it is written.
pub fn write_json(plan: &Plan, out: &mut dyn std::io::Write) -> std::io::Result<()> {
    let mut out = std::io::BufWriter::with_capacity(1 << 16, out);
    serde_json::to_writer_pretty(&mut out, plan).map_err(std::io::Error::from)?;
    out.write_all(b"\n")?;
    out.flush()
}

// ---------------------------------------------------------------------------------------
// Escaping: one helper per place a string from the pull request is written to.

/// Longest name (account, wave, ref) and longest free text (a warning, note, change or
/// error) the markdown shows, in characters; longer ones are cut, marked with `...`. Bounds
/// what one string can take of the comment's size (the JSON plan has them whole).
pub(super) const NAME_CHARS: usize = 100;

pub(super) const TEXT_CHARS: usize = 500;

/// At most `max` characters of `s`, a cut marked with `...`.
pub(super) fn clip(s: &str, max: usize) -> Cow<'_, str> {
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
pub(super) fn push_items(
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

pub(super) fn accounts_word(n: usize) -> &'static str {
    if n == 1 { "account" } else { "accounts" }
}

/// `base (commit) -> head (commit)`, for a terminal.
pub(super) fn revisions(plan: &Plan) -> String {
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

pub(super) fn short(commit: &str) -> &str {
    match commit.char_indices().nth(12) {
        Some((i, _)) => &commit[..i],
        None => commit,
    }
}

pub(super) fn rendered_line(plan: &Plan) -> String {
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

/// The accounts of a group: `list`, the names as the caller shows them, after the count.
pub(super) fn group_title(g: &Group, list: String) -> String {
    if g.accounts.len() == 1 {
        list
    } else {
        format!("same change in {} accounts: {list}", g.accounts.len())
    }
}

/// The first `names` of a list, each escaped with `esc`, the rest counted:
/// `a, b, ... (+8 more)`.
pub(super) fn first_names(list: &[String], names: usize, esc: impl Fn(&str) -> String) -> String {
    let shown: Vec<String> = list.iter().take(names).map(|a| esc(a)).collect();
    let more = list.len().saturating_sub(names);
    if more > 0 {
        format!("{}, ... (+{more} more)", shown.join(", "))
    } else {
        shown.join(", ")
    }
}

/// Most account names one list shows in text and markdown (a group's accounts, a warning's,
/// the orphans). A longer list is collapsed by [`collapsed`]; the JSON plan has every name.
pub(super) const LIST_NAMES: usize = 20;

/// A list of account names, each escaped with `esc`, joined with `, `. Past [`LIST_NAMES`]
/// names, the first `LIST_NAMES - 1` and the last, with the count:
/// `tenant-00001, tenant-00002, ... tenant-09999 (9,999 accounts)`.
pub(super) fn collapsed(names: &[String], esc: impl Fn(&str) -> String) -> String {
    match names {
        [first @ .., last] if names.len() > LIST_NAMES => {
            let shown: Vec<String> = first[..LIST_NAMES - 1].iter().map(|n| esc(n)).collect();
            format!(
                "{}, ... {} ({} accounts)",
                shown.join(", "),
                esc(last),
                thousands(names.len())
            )
        }
        _ => names.iter().map(|n| esc(n)).collect::<Vec<_>>().join(", "),
    }
}

/// `9999` as `9,999`.
pub(super) fn thousands(n: usize) -> String {
    crate::config::yaml::group_thousands(n as u64)
}

/// Drift notes of reachable accounts (an unreachable account's note is its reason).
pub(super) fn notes(plan: &Plan) -> Vec<(&AccountPlan, &String)> {
    plan.accounts
        .iter()
        .filter(|a| a.action != Action::Unreachable)
        .filter_map(|a| a.note.as_ref().map(|n| (a, n)))
        .collect()
}

pub(super) fn unreachable(plan: &Plan) -> Vec<&AccountPlan> {
    plan.accounts
        .iter()
        .filter(|a| a.action == Action::Unreachable)
        .collect()
}

/// `canary: 2 accounts, 2 at once, 0 failures tolerated, bake 10m`, for a terminal.
pub(super) fn wave_line(w: &WavePlan) -> String {
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

/// A string for a terminal (text format): one line, no control or bidi characters.
pub(super) fn term(s: &str) -> Cow<'_, str> {
    one_line(s)
}

#[cfg(test)]
mod list_tests {
    use super::*;

    fn names(n: usize) -> Vec<String> {
        (1..=n).map(|i| format!("tenant-{i:05}")).collect()
    }

    #[test]
    fn a_list_up_to_the_limit_is_shown_whole() {
        assert_eq!(collapsed(&[], str::to_string), "");
        assert_eq!(collapsed(&names(1), str::to_string), "tenant-00001");
        let all = names(LIST_NAMES);
        assert_eq!(collapsed(&all, str::to_string), all.join(", "));
    }

    #[test]
    fn a_longer_list_shows_the_first_names_the_last_and_the_count() {
        let all = names(9_999);
        let list = collapsed(&all, str::to_string);
        let first: Vec<String> = names(LIST_NAMES - 1);
        assert_eq!(
            list,
            format!("{}, ... tenant-09999 (9,999 accounts)", first.join(", "))
        );
        assert!(list.starts_with("tenant-00001, tenant-00002, "), "{list}");
        assert_eq!(list.matches("tenant-").count(), LIST_NAMES);

        let list = collapsed(&names(LIST_NAMES + 1), |n| format!("`{n}`"));
        assert!(
            list.ends_with(", `tenant-00019`, ... `tenant-00021` (21 accounts)"),
            "{list}"
        );
        assert!(!list.contains("tenant-00020"), "{list}");
    }

    #[test]
    fn counts_have_thousands_separators() {
        for (n, s) in [
            (0, "0"),
            (21, "21"),
            (999, "999"),
            (1_000, "1,000"),
            (9_999, "9,999"),
            (100_000, "100,000"),
            (1_234_567, "1,234,567"),
        ] {
            assert_eq!(thousands(n), s);
        }
    }
}
