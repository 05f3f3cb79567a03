//! `--accounts SELECTOR`: which accounts a command acts on. Pure.
//!
//! A selector is a comma-separated list of terms; an account is selected when any term
//! matches it:
//!
//! | term              | matches                                         |
//! |-------------------|-------------------------------------------------|
//! | `acme-prod`       | the account of that name                        |
//! | `acme-*`, `*-prod`| names matching the glob (`*`: any run of chars) |
//! | `stage=canary`    | accounts of that stage                          |
//! | `label:tier=gold` | accounts with that label value                  |
//! | `wave=early`      | accounts the fleet's waves put in that wave     |
//!
//! A term that selects nothing is an error (a typo must not silently select nothing).

use std::collections::BTreeSet;

use crate::config::repo::Repo;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Term {
    Name(String),
    Glob(String),
    Stage(String),
    Label(String, String),
    Wave(String),
}

/// A parsed `--accounts` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selector {
    terms: Vec<Term>,
}

impl std::str::FromStr for Selector {
    type Err = String;

    fn from_str(s: &str) -> Result<Selector, String> {
        let mut terms = Vec::new();
        for raw in s.split(',').map(str::trim) {
            if raw.is_empty() {
                return Err(format!("empty term in account selector {s:?}"));
            }
            let term = if let Some(rest) = raw.strip_prefix("label:") {
                match rest.split_once('=') {
                    Some((k, v)) if !k.is_empty() => Term::Label(k.into(), v.into()),
                    _ => return Err(format!("{raw:?}: write label:<key>=<value>")),
                }
            } else if let Some(stage) = raw.strip_prefix("stage=") {
                Term::Stage(stage.into())
            } else if let Some(wave) = raw.strip_prefix("wave=") {
                Term::Wave(wave.into())
            } else if raw.contains('=') {
                return Err(format!(
                    "{raw:?}: unknown selector term (names, globs, stage=, label:<key>=, wave=)"
                ));
            } else if raw.contains('*') {
                Term::Glob(raw.into())
            } else {
                Term::Name(raw.into())
            };
            terms.push(term);
        }
        Ok(Selector { terms })
    }
}

impl Selector {
    /// The selected accounts of `repo`, sorted; an error names each term that selects no
    /// account.
    pub fn select(&self, repo: &Repo) -> Result<BTreeSet<String>, String> {
        let waves = repo
            .fleet
            .as_ref()
            .map(|f| f.spec.waves.as_slice())
            .unwrap_or_default();
        let mut out = BTreeSet::new();
        let mut unmatched = Vec::new();
        for term in &self.terms {
            let mut hit = false;
            for (name, account) in &repo.accounts {
                let spec = &account.doc.spec;
                let labels = &account.doc.metadata.labels;
                let matches = match term {
                    Term::Name(n) => n == name,
                    Term::Glob(g) => glob(g, name),
                    Term::Stage(s) => &spec.stage == s,
                    Term::Label(k, v) => labels.get(k) == Some(v),
                    Term::Wave(w) => crate::config::waves::wave_of(waves, &spec.stage, labels)
                        .is_some_and(|i| &waves[i].name == w),
                };
                if matches {
                    hit = true;
                    out.insert(name.clone());
                }
            }
            // Accounts approved for decommission are gone from accounts/ but still named,
            // so a decommission can be rolled back: by name only.
            let approved = repo
                .fleet
                .as_ref()
                .map(|f| f.spec.offboarding.decommission.as_slice())
                .unwrap_or_default();
            for d in approved {
                // By exact name only: a glob (`prod-*`, `*`) must never bring a
                // decommissioned tenant back.
                let matches = matches!(term, Term::Name(n) if *n == d.account);
                if matches {
                    hit = true;
                    out.insert(d.account.clone());
                }
            }
            if !hit {
                unmatched.push(describe(term));
            }
        }
        if unmatched.is_empty() {
            Ok(out)
        } else {
            Err(format!("no account matches {}", unmatched.join(", ")))
        }
    }
}

fn describe(term: &Term) -> String {
    match term {
        Term::Name(n) => format!("account {n:?}"),
        Term::Glob(g) => format!("{g:?}"),
        Term::Stage(s) => format!("stage={s}"),
        Term::Label(k, v) => format!("label:{k}={v}"),
        Term::Wave(w) => format!("wave={w}"),
    }
}

/// `*` matches any run of characters (including none); everything else literally.
fn glob(pattern: &str, name: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    let (first, rest) = parts.split_first().unwrap_or((&"", &[]));
    let Some(mut tail) = name.strip_prefix(first) else {
        return false;
    };
    let Some((last, middle)) = rest.split_last() else {
        return tail.is_empty();
    };
    for part in middle {
        match tail.find(part) {
            Some(i) => tail = &tail[i + part.len()..],
            None => return false,
        }
    }
    tail.len() >= last.len() && tail.ends_with(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example() -> Repo {
        Repo::load(&crate::config::example_fleet::example_repo())
    }

    fn select(s: &str) -> Result<Vec<String>, String> {
        let sel: Selector = s.parse()?;
        sel.select(&example()).map(|s| s.into_iter().collect())
    }

    #[test]
    fn globs() {
        assert!(glob("acme-*", "acme-prod"));
        assert!(glob("*-prod", "acme-prod"));
        assert!(glob("a*e*d", "acme-prod"));
        assert!(glob("*", "x"));
        assert!(!glob("acme-*", "globex-prod"));
        assert!(!glob("*-prod-*", "acme-prod"));
        assert!(!glob("a*a", "a"), "the prefix and suffix may not overlap");
        assert!(glob("acme-prod", "acme-prod"));
    }

    #[test]
    fn terms_select_by_name_glob_stage_label_and_wave() {
        assert_eq!(select("acme-prod").unwrap(), ["acme-prod"]);
        assert_eq!(
            select("globex-*").unwrap(),
            ["globex-canary", "globex-prod"]
        );
        assert_eq!(
            select("stage=canary").unwrap(),
            ["globex-canary", "internal-canary"]
        );
        assert_eq!(
            select("wave=canary").unwrap(),
            select("stage=canary").unwrap()
        );
        assert!(
            select("label:tier=enterprise")
                .unwrap()
                .contains(&"acme-prod".to_string())
        );
        assert_eq!(
            select("acme-prod, stage=canary").unwrap(),
            ["acme-prod", "globex-canary", "internal-canary"]
        );
    }

    #[test]
    fn a_term_that_selects_nothing_is_an_error() {
        assert_eq!(
            select("acme-prod,acme-prdo").unwrap_err(),
            "no account matches account \"acme-prdo\""
        );
        assert!(select("stage=nope").unwrap_err().contains("stage=nope"));
        assert!(
            select("tier=gold")
                .unwrap_err()
                .contains("unknown selector term")
        );
        assert!(select("a,,b").unwrap_err().contains("empty term"));
        assert!(
            select("label:=x")
                .unwrap_err()
                .contains("label:<key>=<value>")
        );
    }
}
