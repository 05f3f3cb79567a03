//! A head whose manifests are invalid: its errors as the PR comment and the JSON document,
//! so a review shows them instead of nothing.

use std::fmt::Write as _;

use serde::Serialize;

use crate::config::diagnostics::{Diagnostic, DiagnosticJson};
use crate::plan::format::common::*;
use crate::plan::format::markdown::*;
use crate::plan::{PLAN_FORMAT_VERSION, Revision};

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
pub(super) const ERROR_CHARS: usize = 2_000;

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
