//! `${account.*}` variables in manifest strings (backend URLs, hosts, issuer URLs, bucket
//! names). Expanded after merging, on every string of the tree, so an unknown variable is an
//! error at its own line. `$${` writes a literal `${`.

use std::collections::BTreeMap;

use crate::diagnostics::Diagnostic;
use crate::yaml::{Node, Value};

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
}
