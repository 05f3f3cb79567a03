//! `${account.*}` variables in manifest strings (backend URLs, hosts, issuer URLs, bucket
//! names). Expanded after merging, on every string of the tree, so an unknown variable is an
//! error at its own line. `$${` writes a literal `${`.
//!
//! The template language of the config repo, used by three stages: loading checks each
//! account's bucket and prefix from fleet.yaml ([`Vars::expand`]), render expands each
//! account's merged tree ([`Vars::expand_tree`]), and the plan writes values back.
//!
//! [`Values`] and [`write_template`] go the other way, for the plan: they find accounts'
//! values in a text and write them back as the variables they stand for, so changes that
//! differ only in account values read (and group) as one template.

use std::collections::BTreeMap;

use crate::config::diagnostics::Diagnostic;
use crate::config::yaml::{Node, Value};

/// The values an account provides to templates.
#[derive(Debug, Clone, Default)]
pub struct Vars {
    values: BTreeMap<String, String>,
}

impl Vars {
    pub fn for_account(
        name: &str,
        id: &str,
        region: &str,
        stage: &str,
        tenant: &str,
        labels: &BTreeMap<String, String>,
    ) -> Vars {
        let mut values = BTreeMap::new();
        values.insert("account.name".into(), name.into());
        values.insert("account.id".into(), id.into());
        values.insert("account.region".into(), region.into());
        values.insert("account.stage".into(), stage.into());
        values.insert("account.tenant".into(), tenant.into());
        for (k, v) in labels {
            values.insert(format!("account.labels.{k}"), v.clone());
        }
        Vars { values }
    }

    /// The values of an account as its rendered bundle records them (the same ones
    /// [`Vars::for_account`] is given when the bundle is rendered).
    pub fn of_bundle(account: &fleetgate_bundle::bundle::AccountInfo) -> Vars {
        Vars::for_account(
            &account.name,
            &account.id,
            &account.region,
            &account.stage,
            &account.tenant,
            &account.labels,
        )
    }

    /// Every variable with its value, by variable name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.values.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Expands one string.
    pub fn expand(&self, text: &str) -> Result<String, String> {
        if !text.contains('$') {
            return Ok(text.to_string());
        }
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(i) = rest.find('$') {
            out.push_str(&rest[..i]);
            let after = &rest[i..];
            if let Some(tail) = after.strip_prefix("$${") {
                out.push_str("${");
                rest = tail;
            } else if let Some(tail) = after.strip_prefix("${") {
                let end = tail
                    .find('}')
                    .ok_or_else(|| "unclosed ${ (write $${ for a literal ${)".to_string())?;
                let name = tail[..end].trim();
                match self.values.get(name) {
                    Some(v) => out.push_str(v),
                    None => {
                        let known: Vec<&str> = self
                            .values
                            .keys()
                            .map(String::as_str)
                            .filter(|k| !k.starts_with("account.labels."))
                            .collect();
                        return Err(format!(
                            "unknown variable ${{{name}}} (known: {}, account.labels.<label>)",
                            known.join(", ")
                        ));
                    }
                }
                rest = &tail[end + 1..];
            } else {
                out.push('$');
                rest = &after[1..];
            }
        }
        out.push_str(rest);
        Ok(out)
    }

    /// Expands every string of a tree in place, collecting every error.
    pub fn expand_tree(&self, node: &mut Node, errors: &mut Vec<Diagnostic>) {
        match &mut node.value {
            Value::Str(s) => match self.expand(s) {
                Ok(v) => *s = v,
                Err(e) => errors.push(Diagnostic::new(node.span.clone(), e)),
            },
            Value::Seq(items) => items.iter_mut().for_each(|i| self.expand_tree(i, errors)),
            Value::Map(entries) => entries
                .iter_mut()
                .for_each(|(_, v)| self.expand_tree(v, errors)),
            _ => {}
        }
    }
}

/// How specific a variable is, for a value several variables share: an id or a region says
/// more than a stage or a label that happens to read the same.
pub(crate) fn specificity(variable: &str) -> (u8, &str) {
    let rank = match variable {
        "account.id" => 0,
        "account.region" => 1,
        "account.name" => 2,
        "account.tenant" => 3,
        "account.stage" => 4,
        _ => 5,
    };
    (rank, variable)
}

impl Vars {
    /// The variables whose value is `value`, most specific first.
    pub fn variables_with(&self, value: &str) -> Vec<&str> {
        let mut names: Vec<&str> = self
            .values
            .iter()
            .filter(|(_, v)| v.as_str() == value)
            .map(|(k, _)| k.as_str())
            .collect();
        names.sort_by_key(|n| specificity(n));
        names
    }
}

/// Whether a character continues a token: a value found next to one is part of a longer
/// word or number (`eu` in `europe`, `12` in `123`), not an account's value.
fn joins(c: char) -> bool {
    c.is_alphanumeric()
}

/// The first run of letters and digits of a text starting with one.
fn first_run(text: &str) -> &str {
    let end = text
        .char_indices()
        .find(|(_, c)| !joins(*c))
        .map_or(text.len(), |(i, _)| i);
    &text[..end]
}

/// The `${account.*}` values of a set of accounts, to find in text: the inverse of
/// [`Vars::expand`], for the plan, which writes the values of each account's changes back as
/// the variables they stand for, so changes that differ only in those values group.
#[derive(Debug, Clone, Default)]
pub struct Values {
    /// Distinct non-empty values.
    values: Vec<String>,
    /// Values that start with a letter or digit, by the whole value.
    index: std::collections::HashMap<String, usize>,
    /// The first runs of those values (`us` for `us-east-1`), each with its longest
    /// value's length: where in a text a value can start, and how far it can reach.
    by_run: std::collections::HashMap<String, usize>,
    /// Values that start with another character (rare: a label value), longest first.
    other: Vec<usize>,
}

/// One occurrence of a value in a text: `text[start..end]` is value number `value`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Occurrence {
    pub start: usize,
    pub end: usize,
    pub value: usize,
}

impl Values {
    pub fn new<'a>(accounts: impl IntoIterator<Item = &'a Vars>) -> Values {
        let distinct: std::collections::BTreeSet<&str> = accounts
            .into_iter()
            .flat_map(|v| v.values.values().map(String::as_str))
            .filter(|v| !v.is_empty())
            .collect();
        let values: Vec<String> = distinct.into_iter().map(str::to_string).collect();
        let mut index: std::collections::HashMap<String, usize> = Default::default();
        let mut by_run: std::collections::HashMap<String, usize> = Default::default();
        let mut other = Vec::new();
        for (i, v) in values.iter().enumerate() {
            if v.starts_with(joins) {
                index.insert(v.clone(), i);
                let longest = by_run.entry(first_run(v).to_string()).or_default();
                *longest = (*longest).max(v.len());
            } else {
                other.push(i);
            }
        }
        other.sort_by(|a, b| values[*b].len().cmp(&values[*a].len()).then(a.cmp(b)));
        Values {
            values,
            index,
            by_run,
            other,
        }
    }

    /// Value number `i`.
    pub fn value(&self, i: usize) -> &str {
        self.values.get(i).map_or("", String::as_str)
    }

    /// Where the values occur as whole tokens (no letter or digit right before or after,
    /// no `$` right before), sorted by position. Longer values are placed first and
    /// occurrences never overlap, so a tenant inside the account name that contains it is
    /// found once, as the name.
    pub fn find(&self, text: &str) -> Vec<Occurrence> {
        let mut candidates: Vec<Occurrence> = Vec::new();
        let mut consider = |start: usize, value: usize| {
            candidates.extend(self.at(text, start, value));
        };
        // Where a run starts that some value starts with, every value that ends there at a
        // token's end is looked up whole: the cost is the text's, not the number of values
        // (10,000 accounts' names all start with the same run).
        let mut previous: Option<char> = None;
        for (i, c) in text.char_indices() {
            let starts_run = joins(c) && !previous.is_some_and(joins);
            previous = Some(c);
            if !starts_run {
                continue;
            }
            let run = first_run(&text[i..]);
            if let Some(&longest) = self.by_run.get(run) {
                let mut end = text.len().min(i + longest);
                while !text.is_char_boundary(end) {
                    end -= 1;
                }
                let reach = &text[i..end];
                let ends = reach
                    .char_indices()
                    .map(|(k, _)| k)
                    .skip(1)
                    .chain(std::iter::once(reach.len()))
                    .filter(|&k| k >= run.len() && !text[i + k..].starts_with(joins));
                for k in ends {
                    if let Some(&value) = self.index.get(&text[i..i + k]) {
                        consider(i, value);
                    }
                }
            }
        }
        for &value in &self.other {
            let v = self.values[value].as_str();
            let mut from = 0;
            while let Some(at) = text[from..].find(v) {
                consider(from + at, value);
                from += at + v.chars().next().map_or(1, char::len_utf8);
            }
        }
        longest_first(candidates)
    }

    /// Value number `value` at `start` of `text`, when it is there as a whole token.
    fn at(&self, text: &str, start: usize, value: usize) -> Option<Occurrence> {
        let v = &self.values[value];
        let end = start + v.len();
        if !text[start..].starts_with(v.as_str()) {
            return None;
        }
        let before = text[..start].chars().next_back();
        let after = text[end..].chars().next();
        (!before.is_some_and(|c| joins(c) || c == '$') && !after.is_some_and(joins))
            .then_some(Occurrence { start, end, value })
    }
}

/// Of overlapping occurrences, the longest (then the first) wins; sorted by position.
fn longest_first(mut candidates: Vec<Occurrence>) -> Vec<Occurrence> {
    candidates.sort_by(|a, b| {
        (b.end - b.start, a.start, a.value).cmp(&(a.end - a.start, b.start, b.value))
    });
    let mut found: Vec<Occurrence> = Vec::new();
    for o in candidates {
        // Sorted by start: the neighbours are the only candidates for an overlap.
        let slot = found.partition_point(|f| f.start < o.start);
        let overlaps = found.get(slot).is_some_and(|f| f.start < o.end)
            || slot
                .checked_sub(1)
                .and_then(|i| found.get(i))
                .is_some_and(|f| f.end > o.start);
        if !overlaps {
            found.insert(slot, o);
        }
    }
    found
}

/// `text` as a template: occurrence number `k` of `found` is written `${variable}` when
/// `choose(k)` gives a variable and left as it is otherwise; every literal `${` is written
/// `$${`, so [`Vars::expand`] gives the text back.
pub fn write_template(
    text: &str,
    found: &[Occurrence],
    choose: &dyn Fn(usize) -> Option<String>,
) -> String {
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    for (k, o) in found.iter().enumerate() {
        let Some(name) = choose(k) else { continue };
        out.push_str(&text[at..o.start].replace("${", "$${"));
        out.push_str("${");
        out.push_str(&name);
        out.push('}');
        at = o.end;
    }
    out.push_str(&text[at..].replace("${", "$${"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> Vars {
        let labels = BTreeMap::from([("tier".to_string(), "gold".to_string())]);
        Vars::for_account(
            "acme-prod",
            "123456789012",
            "eu-west-1",
            "prod",
            "acme",
            &labels,
        )
    }

    #[test]
    fn expands_known_variables_and_escapes() {
        let v = vars();
        assert_eq!(
            v.expand("http://orders.${account.region}.internal/${account.labels.tier}")
                .unwrap(),
            "http://orders.eu-west-1.internal/gold"
        );
        assert_eq!(
            v.expand("cost: $5, literal $${account.name}").unwrap(),
            "cost: $5, literal ${account.name}"
        );
        assert_eq!(v.expand("/orders/{id}").unwrap(), "/orders/{id}");
    }

    #[test]
    fn unknown_and_unclosed_variables_are_errors() {
        let v = vars();
        assert!(
            v.expand("${account.nme}")
                .unwrap_err()
                .contains("unknown variable ${account.nme}")
        );
        let e = v.expand("s3cr3t-${account.name").unwrap_err();
        assert!(
            e.contains("unclosed") && !e.contains("s3cr3t"),
            "errors never quote the string: {e}"
        );
    }

    /// `text` with every value of `vars` found written as its most specific variable.
    fn templated(vars: &Vars, text: &str) -> String {
        let values = Values::new([vars]);
        let found = values.find(text);
        let out = write_template(text, &found, &|k| {
            let v = values.value(found[k].value);
            vars.variables_with(v).first().map(|n| n.to_string())
        });
        assert_eq!(
            vars.expand(&out).unwrap(),
            text,
            "the template gives the text back"
        );
        out
    }

    #[test]
    fn values_become_variables_at_token_boundaries_longest_first() {
        let v = vars();
        assert_eq!(
            templated(
                &v,
                "arn:aws:secretsmanager:eu-west-1:123456789012:secret:fleetgate/idp/key"
            ),
            "arn:aws:secretsmanager:${account.region}:${account.id}:secret:fleetgate/idp/key"
        );
        // The tenant is inside the name; the longer value wins.
        assert_eq!(
            templated(&v, "https://api.acme-prod.example/acme"),
            "https://api.${account.name}.example/${account.tenant}"
        );
        // Never inside a longer run of letters or digits.
        assert_eq!(
            templated(
                &v,
                "acmecorp 1234567890123 product prodx eu-west-10 ueu-west-1"
            ),
            "acmecorp 1234567890123 product prodx eu-west-10 ueu-west-1"
        );
        // A literal `${` is escaped, so the template is unambiguous; `$acme` is not a value.
        assert_eq!(
            templated(&v, "${x} $acme {acme}"),
            "$${x} $acme {${account.tenant}}"
        );
    }

    #[test]
    fn shared_values_take_the_most_specific_variable_and_placeholders_are_not_searched() {
        let labels = BTreeMap::from([("tier".to_string(), "prod".to_string())]);
        let v = Vars::for_account("a", "000000000001", "us-east-1", "prod", "a", &labels);
        assert_eq!(v.variables_with("a"), ["account.name", "account.tenant"]);
        assert_eq!(
            v.variables_with("prod"),
            ["account.stage", "account.labels.tier"]
        );
        assert_eq!(
            templated(&v, "a banana, a-b, data, prod-db, products"),
            "${account.name} banana, ${account.name}-b, data, ${account.stage}-db, products"
        );
        // Values of several accounts are found; a value that starts with punctuation too.
        let w = Vars::for_account("name", "1", "account", "-x", "y", &BTreeMap::new());
        let values = Values::new([&v, &w]);
        let text = "name account -x us-east-1 a-x";
        let found: Vec<&str> = values
            .find(text)
            .iter()
            .map(|o| &text[o.start..o.end])
            .collect();
        assert_eq!(found, ["name", "account", "-x", "us-east-1", "a"]);
        // What is written is not searched again (`account` and `name` are values of `w`).
        assert_eq!(
            templated(&w, "name account"),
            "${account.name} ${account.region}"
        );
    }

    proptest::proptest! {
        /// The index finds exactly what trying every value at every position finds.
        #[test]
        fn find_is_every_value_tried_everywhere(
            accounts in proptest::collection::vec(
                ("[a-c]{1,3}(-[a-c0-9]{1,2}){0,2}", "[a-c]{1,2}", "-?[ab]{1,2}"),
                1..6,
            ),
            text in "[a-c0-9 $.é-]{0,40}",
        ) {
            let vars: Vec<Vars> = accounts
                .iter()
                .map(|(name, tenant, stage)| {
                    Vars::for_account(name, "1", "r", stage, tenant, &BTreeMap::new())
                })
                .collect();
            let values = Values::new(&vars);
            let mut every = Vec::new();
            for (start, _) in text.char_indices() {
                for value in 0..values.values.len() {
                    every.extend(values.at(&text, start, value));
                }
            }
            proptest::prop_assert_eq!(values.find(&text), longest_first(every));
        }
    }
}
