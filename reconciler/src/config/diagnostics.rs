//! Problems found in a config repo, each with `file:line:col` (a [`Span`]).
//!
//! Everything that reads a repo collects diagnostics instead of stopping at the first one, so
//! a PR shows all its mistakes at once. The same mistake reached while rendering many
//! accounts (a typo in an overlay 300 accounts select) is reported once, with the accounts.
//!
//! A message may quote what the author wrote (a parser's "invalid type: string ..."), and
//! diagnostics go to CI logs and pull request comments: every message is scrubbed
//! ([`crate::redact`]) when the diagnostic is made, so no consumer can print a secret.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use serde::Serialize;

/// A position in a repo file. Lines and columns start at 1.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Span {
    pub file: Arc<str>,
    pub line: u64,
    pub column: u64,
}

impl Span {
    pub fn new(file: &Arc<str>, line: u64, column: u64) -> Span {
        Span {
            file: file.clone(),
            line: line.max(1),
            column: column.max(1),
        }
    }

    /// The start of a file, for problems that belong to a file as a whole.
    pub fn file(file: &str) -> Span {
        Span {
            file: Arc::from(file),
            line: 1,
            column: 1,
        }
    }
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.column)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    pub span: Span,
    pub message: String,
    /// Accounts whose render hit this problem (empty for problems of a file on its own).
    pub accounts: Vec<String>,
}

impl Diagnostic {
    /// The message is stored scrubbed: secret material in it is replaced by fingerprints.
    pub fn new(span: Span, message: impl Into<String>) -> Diagnostic {
        let message = message.into();
        let message = match crate::redact::scrub_run(&message) {
            std::borrow::Cow::Borrowed(_) => message,
            std::borrow::Cow::Owned(clean) => clean,
        };
        Diagnostic {
            span,
            message,
            accounts: Vec::new(),
        }
    }

    pub fn in_file(file: &str, message: impl Into<String>) -> Diagnostic {
        Diagnostic::new(Span::file(file), message)
    }

    pub fn for_account(mut self, account: &str) -> Diagnostic {
        if !self.accounts.iter().any(|a| a == account) {
            self.accounts.push(account.to_string());
        }
        self
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Scrubbed again: `message` is public and may have been changed since `new`.
        let message = crate::redact::scrub_run(&self.message);
        let mut line = format!("{}: {message}", self.span);
        match self.accounts.as_slice() {
            [] => {}
            [one] => line.push_str(&format!(" (account {one})")),
            [first, rest @ ..] => {
                line.push_str(&format!(" (accounts {first} and {} more)", rest.len()))
            }
        }
        // File names, messages and account names come from the pull request: one line,
        // no control or bidi character reaches the terminal or the CI log.
        f.write_str(&crate::redact::one_line(&line))
    }
}

impl std::error::Error for Diagnostic {}

/// A machine-readable diagnostic (`--format json`).
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct DiagnosticJson<'a> {
    pub file: &'a str,
    pub line: u64,
    pub column: u64,
    pub message: std::borrow::Cow<'a, str>,
    pub accounts: &'a [String],
}

impl<'a> From<&'a Diagnostic> for DiagnosticJson<'a> {
    /// The message scrubbed again: `message` is public and may have changed since `new`.
    fn from(d: &'a Diagnostic) -> DiagnosticJson<'a> {
        DiagnosticJson {
            file: &d.span.file,
            line: d.span.line,
            column: d.span.column,
            message: crate::redact::scrub_run(&d.message),
            accounts: &d.accounts,
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Diagnostics(Vec<Diagnostic>);

impl Diagnostics {
    pub fn new() -> Diagnostics {
        Diagnostics::default()
    }

    pub fn push(&mut self, d: Diagnostic) {
        self.0.push(d);
    }

    pub fn extend(&mut self, ds: impl IntoIterator<Item = Diagnostic>) {
        self.0.extend(ds);
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Sorted by file, line and column; identical problems merged, their accounts joined.
    pub fn into_sorted(self) -> Vec<Diagnostic> {
        let mut merged: BTreeMap<(Span, String), Vec<String>> = BTreeMap::new();
        for d in self.0 {
            let accounts = merged.entry((d.span, d.message)).or_default();
            for a in d.accounts {
                if !accounts.contains(&a) {
                    accounts.push(a);
                }
            }
        }
        merged
            .into_iter()
            .map(|((span, message), mut accounts)| {
                accounts.sort();
                Diagnostic {
                    span,
                    message,
                    accounts,
                }
            })
            .collect()
    }

    pub fn to_json(list: &[Diagnostic]) -> serde_json::Value {
        let items: Vec<DiagnosticJson<'_>> = list.iter().map(DiagnosticJson::from).collect();
        serde_json::json!({ "valid": list.is_empty(), "errors": items })
    }
}

impl From<Diagnostic> for Diagnostics {
    fn from(d: Diagnostic) -> Self {
        Diagnostics(vec![d])
    }
}

impl IntoIterator for Diagnostics {
    type Item = Diagnostic;
    type IntoIter = std::vec::IntoIter<Diagnostic>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_problem_from_many_accounts_is_reported_once() {
        let mut ds = Diagnostics::new();
        for a in ["b", "a", "c"] {
            ds.push(Diagnostic::in_file("overlays/x/o.yaml", "bad").for_account(a));
        }
        ds.push(Diagnostic::in_file("accounts/a.yaml", "other"));
        let sorted = ds.into_sorted();
        assert_eq!(sorted.len(), 2);
        assert_eq!(sorted[0].span.file.as_ref(), "accounts/a.yaml");
        assert_eq!(sorted[1].accounts, vec!["a", "b", "c"]);
        assert_eq!(
            sorted[1].to_string(),
            "overlays/x/o.yaml:1:1: bad (accounts a and 2 more)"
        );
    }

    #[test]
    fn messages_never_carry_secret_material() {
        let pem =
            "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqPLANTED\n-----END PRIVATE KEY-----\n";
        let d = Diagnostic::in_file(
            "base/idp.yaml",
            format!("unknown variant `{pem}`, expected one of `file`, `env`"),
        );
        assert!(!d.message.contains("PLANTED"), "{}", d.message);
        assert!(d.message.contains("(sensitive:"), "{}", d.message);
        assert!(
            d.message.ends_with("expected one of `file`, `env`"),
            "{}",
            d.message
        );
        let mut changed = d.clone();
        changed.message = format!("later: {pem}");
        assert!(!changed.to_string().contains("PLANTED"), "{changed}");
        let json = Diagnostics::to_json(&[changed]).to_string();
        assert!(!json.contains("PLANTED"), "{json}");
    }

    #[test]
    fn a_diagnostic_prints_on_one_line_without_control_characters() {
        let d = Diagnostic::in_file("accounts/x\u{1b}[2J.yaml", "bad\nline\u{202e}txt")
            .for_account("a\rb");
        let shown = d.to_string();
        assert!(
            !shown.chars().any(|c| c.is_control() || c == '\u{202e}'),
            "{shown:?}"
        );
        assert!(shown.contains("\\u{1b}"), "{shown}");
    }
}
