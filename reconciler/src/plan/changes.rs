//! The semantic summary of a bundle change: routes, backends, auth policies and flags added,
//! removed or changed, and what changed in the IdP, each with the fields that differ.
//!
//! Made from the redacted JSON of both bundles, so a sensitive value can only ever show as
//! `(sensitive value changed)`. Secret material in other fields (a token pasted into a flag
//! description) is fingerprinted by shape when the plan is made
//! ([`super::scrub_plan`]), so its details read `(sensitive:...) -> (sensitive:...)`.

use std::collections::BTreeMap;

use fleetgate_bundle::Bundle;
use fleetgate_bundle::sensitive::redacting;
use schemars::JsonSchema;
use serde::Serialize;
use serde_json::{Map, Value};

/// What part of the bundle a change is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Area {
    Account,
    Gateway,
    Route,
    Backend,
    AuthPolicy,
    Flag,
    IdpIssuer,
    IdpClient,
    IdpScope,
    TrustedIssuer,
    Idp,
}

impl Area {
    pub fn as_str(self) -> &'static str {
        match self {
            Area::Account => "account",
            Area::Gateway => "gateway",
            Area::Route => "route",
            Area::Backend => "backend",
            Area::AuthPolicy => "auth policy",
            Area::Flag => "flag",
            Area::IdpIssuer => "IdP issuer",
            Area::IdpClient => "IdP client",
            Area::IdpScope => "IdP scope",
            Area::TrustedIssuer => "trusted issuer",
            Area::Idp => "IdP",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Op {
    Added,
    Removed,
    Changed,
}

impl Op {
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Added => "added",
            Op::Removed => "removed",
            Op::Changed => "changed",
        }
    }
}

/// One item of the summary: `route orders.list changed: timeout: 5s -> 10s`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, JsonSchema)]
pub struct Change {
    pub area: Area,
    pub op: Op,
    /// The item's name (route name, backend, client id...), or the field for gateway-wide
    /// settings.
    pub name: String,
    /// What differs, one entry per field: `timeout: 5s -> 10s`, `rateLimit: removed`.
    pub details: Vec<String>,
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.area == Area::IdpIssuer {
            // There is one; its name would only repeat the area.
            write!(f, "{} {}", self.area.as_str(), self.op.as_str())?;
        } else {
            let (area, name, op) = (self.area.as_str(), &self.name, self.op.as_str());
            write!(f, "{area} {name} {op}")?;
        }
        if !self.details.is_empty() {
            write!(f, ": {}", self.details.join("; "))?;
        }
        Ok(())
    }
}

/// At most this many field details per change; the rest are counted.
const MAX_DETAILS: usize = 8;
/// Values longer than this are said to have changed rather than shown.
const MAX_VALUE_CHARS: usize = 60;

/// The summary of a first deployment.
pub fn created(bundle: &Bundle) -> Change {
    let mut details = vec![
        format!("{} routes", bundle.gateway.routes.len()),
        format!("{} backends", bundle.gateway.backends.len()),
    ];
    if let Some(issuer) = &bundle.idp.issuer {
        details.push(format!(
            "IdP issuer {} with {} clients",
            issuer.url,
            bundle.idp.clients.len()
        ));
    }
    Change {
        area: Area::Account,
        op: Op::Added,
        name: bundle.account.name.clone(),
        details,
    }
}

/// What changed from `old` to `new`, in a stable order.
pub fn between(old: &Bundle, new: &Bundle, redaction_key: &[u8]) -> Vec<Change> {
    // Whether a value is short enough to show is judged on its template (the account's own
    // values written as `${account.*}`), so that accounts whose change differs only in those
    // values summarise it the same way and group together, whatever their names' lengths.
    let mut own: Vec<(String, String)> = crate::config::template::Vars::of_bundle(&new.account)
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| (v.to_string(), format!("${{account.{k}}}")))
        .collect();
    own.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then_with(|| a.cmp(b)));
    OWN_VALUES.with(|o| *o.borrow_mut() = own);
    let out = between_inner(old, new, redaction_key);
    OWN_VALUES.with(|o| o.borrow_mut().clear());
    out
}

thread_local! {
    /// The account values of the bundle [`between`] is summarising, longest first.
    static OWN_VALUES: std::cell::RefCell<Vec<(String, String)>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// The length of `text` with the summarised account's own values counted as their
/// `${account.*}` placeholders.
fn templated_len(text: &str) -> usize {
    OWN_VALUES.with(|own| {
        let own = own.borrow();
        let mut t = std::borrow::Cow::Borrowed(text);
        for (value, placeholder) in own.iter() {
            if t.contains(value.as_str()) {
                t = std::borrow::Cow::Owned(t.replace(value.as_str(), placeholder));
            }
        }
        t.chars().count()
    })
}

fn between_inner(old: &Bundle, new: &Bundle, redaction_key: &[u8]) -> Vec<Change> {
    let json = |b: &Bundle| -> Value {
        redacting(redaction_key, || {
            serde_json::to_value(b).unwrap_or_else(|e| unreachable!("bundles serialize: {e}"))
        })
    };
    let (old, new) = (json(old), json(new));
    let mut out = Vec::new();
    let empty = Map::new();
    let obj = |v: &Value, key: &str| -> Map<String, Value> {
        v.get(key)
            .and_then(Value::as_object)
            .unwrap_or(&empty)
            .clone()
    };

    let (oa, na) = (obj(&old, "account"), obj(&new, "account"));
    if oa != na {
        out.push(Change {
            area: Area::Account,
            op: Op::Changed,
            name: new["account"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            details: fields(&Value::Object(oa), &Value::Object(na)),
        });
    }

    let (og, ng) = (obj(&old, "gateway"), obj(&new, "gateway"));
    for (key, area) in [
        ("backends", Area::Backend),
        ("authPolicies", Area::AuthPolicy),
        ("flags", Area::Flag),
    ] {
        keyed(&mut out, area, &as_map(og.get(key)), &as_map(ng.get(key)));
    }
    keyed(
        &mut out,
        Area::Route,
        &by_name(og.get("routes"), "name"),
        &by_name(ng.get("routes"), "name"),
    );
    rest(
        &mut out,
        Area::Gateway,
        &og,
        &ng,
        &["backends", "authPolicies", "flags", "routes"],
    );

    let (oi, ni) = (obj(&old, "idp"), obj(&new, "idp"));
    keyed(
        &mut out,
        Area::IdpIssuer,
        &single("issuer", oi.get("issuer")),
        &single("issuer", ni.get("issuer")),
    );
    keyed(
        &mut out,
        Area::IdpClient,
        &by_name(oi.get("clients"), "id"),
        &by_name(ni.get("clients"), "id"),
    );
    keyed(
        &mut out,
        Area::IdpScope,
        &by_name(oi.get("scopes"), "name"),
        &by_name(ni.get("scopes"), "name"),
    );
    keyed(
        &mut out,
        Area::TrustedIssuer,
        &by_name(oi.get("trustedIssuers"), "name"),
        &by_name(ni.get("trustedIssuers"), "name"),
    );
    rest(
        &mut out,
        Area::Idp,
        &oi,
        &ni,
        &["issuer", "clients", "scopes", "trustedIssuers"],
    );
    out
}

/// Orders a summary for reading: what changes how requests are routed, authorized and
/// forwarded (routes, auth policies, backends) first, then everything else (flags, gateway
/// settings, the IdP, the account), and last the bookkeeping: routes whose only change is
/// the service version they were generated from. A group's headline is its first change, so
/// a service version bump leads with the routes and policies it brings. Stable within each
/// rank, so the order stays the one [`between`] gives.
pub fn order(changes: &mut [Change]) {
    changes.sort_by_key(rank);
}

fn rank(change: &Change) -> u8 {
    if is_bookkeeping(change) {
        2
    } else if matches!(change.area, Area::Route | Area::AuthPolicy | Area::Backend) {
        0
    } else {
        1
    }
}

/// A route changed in its `service` reference only (the spec version it was generated
/// from): the change worth reading is in the routes and policies that version brings.
fn is_bookkeeping(change: &Change) -> bool {
    change.area == Area::Route
        && change.op == Op::Changed
        && !change.details.is_empty()
        && change.details.iter().all(|d| {
            let field = d.split(": ").next().unwrap_or_default();
            field == "service" || field.starts_with("service.")
        })
}

fn as_map(v: Option<&Value>) -> BTreeMap<String, Value> {
    v.and_then(Value::as_object)
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default()
}

fn by_name(v: Option<&Value>, key: &str) -> BTreeMap<String, Value> {
    v.and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .map(|i| {
                    let name = i.get(key).and_then(Value::as_str).unwrap_or("?");
                    (name.to_string(), i.clone())
                })
                .collect()
        })
        .unwrap_or_default()
}

fn single(name: &str, v: Option<&Value>) -> BTreeMap<String, Value> {
    v.filter(|v| !v.is_null())
        .map(|v| BTreeMap::from([(name.to_string(), v.clone())]))
        .unwrap_or_default()
}

/// Items added, removed or changed between two maps of named items.
fn keyed(
    out: &mut Vec<Change>,
    area: Area,
    old: &BTreeMap<String, Value>,
    new: &BTreeMap<String, Value>,
) {
    for (name, o) in old {
        match new.get(name) {
            None => out.push(Change {
                area,
                op: Op::Removed,
                name: name.clone(),
                details: Vec::new(),
            }),
            Some(n) if n != o => out.push(Change {
                area,
                op: Op::Changed,
                name: name.clone(),
                details: fields(o, n),
            }),
            Some(_) => {}
        }
    }
    for (name, n) in new {
        if !old.contains_key(name) {
            out.push(Change {
                area,
                op: Op::Added,
                name: name.clone(),
                details: added_details(area, n),
            });
        }
    }
}

/// A line or two about a new item, so "route added" says where it goes.
fn added_details(area: Area, v: &Value) -> Vec<String> {
    match area {
        Area::Route => {
            let methods: Vec<&str> = v["methods"]
                .as_array()
                .map(|m| m.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            let mut d = vec![format!(
                "{} {}",
                methods.join(","),
                v["path"].as_str().unwrap_or("?")
            )];
            if v.get("public").and_then(Value::as_bool) == Some(true) {
                d.push("public".into());
            }
            d
        }
        Area::Flag => vec![format!(
            "enabled: {}",
            v.get("enabled").and_then(Value::as_bool).unwrap_or(false)
        )],
        _ => Vec::new(),
    }
}

/// Top-level fields of an object not covered by the keyed comparisons.
fn rest(
    out: &mut Vec<Change>,
    area: Area,
    old: &Map<String, Value>,
    new: &Map<String, Value>,
    covered: &[&str],
) {
    let keys: std::collections::BTreeSet<&String> = old.keys().chain(new.keys()).collect();
    for key in keys {
        if covered.contains(&key.as_str()) {
            continue;
        }
        let (o, n) = (old.get(key), new.get(key));
        if o != n {
            out.push(Change {
                area,
                op: match (o, n) {
                    (None, _) => Op::Added,
                    (_, None) => Op::Removed,
                    _ => Op::Changed,
                },
                name: key.clone(),
                details: fields(o.unwrap_or(&Value::Null), n.unwrap_or(&Value::Null)),
            });
        }
    }
}

/// Field-level differences: `timeout: 5s -> 10s`, `rateLimit: removed`, nested objects by
/// dotted path, lists as a whole.
fn fields(old: &Value, new: &Value) -> Vec<String> {
    let mut out = Vec::new();
    walk(&mut out, "", old, new);
    if out.len() > MAX_DETAILS {
        let more = out.len() - (MAX_DETAILS - 1);
        out.truncate(MAX_DETAILS - 1);
        out.push(format!("... {more} more"));
    }
    out
}

fn walk(out: &mut Vec<String>, path: &str, old: &Value, new: &Value) {
    if old == new {
        return;
    }
    let label = |p: &str| {
        if p.is_empty() {
            "value".to_string()
        } else {
            p.to_string()
        }
    };
    if let (Value::Object(o), Value::Object(n)) = (old, new) {
        let keys: std::collections::BTreeSet<&String> = o.keys().chain(n.keys()).collect();
        for key in keys {
            let sub = if path.is_empty() {
                key.clone()
            } else {
                format!("{path}.{key}")
            };
            walk(
                out,
                &sub,
                o.get(key).unwrap_or(&Value::Null),
                n.get(key).unwrap_or(&Value::Null),
            );
        }
        return;
    }
    if is_sensitive(old) || is_sensitive(new) {
        out.push(format!("{}: (sensitive value changed)", label(path)));
        return;
    }
    out.push(match (old, new) {
        (Value::Null, n) => match short(n) {
            Some(v) => format!("{}: added ({v})", label(path)),
            None => format!("{}: added", label(path)),
        },
        (_, Value::Null) => format!("{}: removed", label(path)),
        (o, n) => match (short(o), short(n)) {
            (Some(o), Some(n)) => format!("{}: {o} -> {n}", label(path)),
            _ => format!("{}: changed", label(path)),
        },
    });
}

/// Whether a value carries a redaction fingerprint anywhere.
fn is_sensitive(v: &Value) -> bool {
    match v {
        Value::String(s) => s.starts_with("(sensitive:"),
        Value::Array(items) => items.iter().any(is_sensitive),
        Value::Object(m) => m.values().any(is_sensitive),
        _ => false,
    }
}

fn short(v: &Value) -> Option<String> {
    let text = match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    (templated_len(&text) <= MAX_VALUE_CHARS).then_some(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example(account: &str) -> Bundle {
        let repo = crate::Repo::load(&crate::config::example_fleet::example_repo());
        crate::render(&repo, account).unwrap().bundle
    }

    #[test]
    fn whether_a_value_is_shown_does_not_depend_on_the_length_of_account_values() {
        // The same host added in two accounts whose names differ in length: the concrete
        // list is longer than the limit for one and not the other, its template for neither.
        let details = |name: &str| {
            let mut old = example("acme-prod");
            old.account.name = name.to_string();
            old.gateway.hosts = vec![format!("{name}.example")];
            let mut new = old.clone();
            new.gateway.hosts.push("extra.example".into());
            between(&old, &new, b"k")
                .iter()
                .flat_map(|c| c.details.clone())
                .map(|d| d.replace(name, "NAME"))
                .collect::<Vec<_>>()
        };
        let short = details("a-b");
        assert_eq!(
            short,
            details("a-much-much-longer-account-name-than-the-limit-allows")
        );
        assert!(
            short.iter().any(|d| d.contains("extra.example")),
            "{short:?}"
        );
    }

    #[test]
    fn route_flag_and_secret_changes_read_as_such() {
        let old = example("acme-prod");
        let mut new = old.clone();
        let removed = new.gateway.routes.remove(0).name;
        new.gateway.routes[0].timeout = Some("42s".parse().unwrap());
        let changed = new.gateway.routes[0].name.clone();
        if let Some(flag) = new.gateway.flags.values_mut().next() {
            flag.enabled = !flag.enabled;
        }
        let client = &mut new.idp.clients[0];
        client.secret = fleetgate_bundle::bundle::ClientSecret::Argon2Hash(
            fleetgate_bundle::Sensitive("$argon2id$v=19$m=19456,t=2,p=1$TOPSECRETPLANTED".into()),
        );
        let changes = between(&old, &new, b"k");
        let text: Vec<String> = changes.iter().map(ToString::to_string).collect();
        let text = text.join("\n");
        assert!(text.contains(&format!("route {removed} removed")), "{text}");
        assert!(
            text.contains(&format!("route {changed} changed: timeout:")),
            "{text}"
        );
        assert!(text.contains("42s"), "{text}");
        assert!(text.contains("flag "), "{text}");
        assert!(
            text.contains("secret.argon2Hash: (sensitive value changed)"),
            "{text}"
        );
        assert!(!text.contains("TOPSECRET"), "{text}");
        assert!(between(&old, &old, b"k").is_empty());
    }

    #[test]
    fn routes_and_policies_lead_and_service_bookkeeping_goes_last() {
        let change = |area, op, name: &str, details: &[&str]| Change {
            area,
            op,
            name: name.into(),
            details: details.iter().map(ToString::to_string).collect(),
        };
        let mut changes = vec![
            change(Area::Flag, Op::Changed, "beta", &["enabled: false -> true"]),
            change(
                Area::Route,
                Op::Changed,
                "a",
                &["service.version: 3.1.0 -> 3.2.0"],
            ),
            change(
                Area::Route,
                Op::Changed,
                "b",
                &["auth.scopes: added", "service.version: 3.1.0 -> 3.2.0"],
            ),
            change(Area::Route, Op::Added, "c", &["GET /c"]),
            change(
                Area::AuthPolicy,
                Op::Changed,
                "partner",
                &["leeway: 0s -> 5s"],
            ),
        ];
        order(&mut changes);
        let names: Vec<&str> = changes.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["b", "c", "partner", "beta", "a"]);
    }
}
