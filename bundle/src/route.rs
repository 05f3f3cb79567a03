//! Route matching: host + method + path template -> route. Pure: no I/O, no async, no HTTP
//! types, so it is tested on its own and reused by compile-time conflict checks.
//!
//! Paths are matched with `matchit` (the radix router under axum). Parameter names are
//! replaced by their position before insertion, so `GET /orders/{id}` and
//! `POST /orders/{orderId}` share one node (different specs name parameters differently),
//! while two routes with the same method on the same template are a conflict.
//!
//! Imports [`crate::bundle`]'s methods only.

use std::collections::{BTreeMap, BTreeSet};

use crate::bundle::Method;

/// A parsed path template such as `/orders/{id}/items/{*rest}`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PathTemplate {
    /// Parameter names in order of appearance.
    pub params: Vec<String>,
    /// The template with parameters renamed `p0`, `p1`, ... as inserted into the router.
    normalized: String,
}

impl PathTemplate {
    pub fn parse(template: &str) -> Result<PathTemplate, String> {
        if !template.starts_with('/') {
            return Err(format!("path template {template:?} must start with '/'"));
        }
        if template.contains("//") {
            return Err(format!(
                "path template {template:?} has an empty segment ('//')"
            ));
        }
        if template.contains(['?', '#']) {
            return Err(format!(
                "path template {template:?} must not contain a query or fragment"
            ));
        }
        // Requests arrive percent-encoded; a literal that is not a valid URI path character
        // (a space, non-ASCII text) could never match one.
        if let Some(bad) = template
            .chars()
            .find(|&ch| !(ch.is_ascii_alphanumeric() || "-._~!$&'()*+,;=:@/{}%".contains(ch)))
        {
            return Err(format!(
                "path template {template:?} contains {bad:?}: write it percent-encoded, as requests carry it"
            ));
        }
        let mut params = Vec::new();
        let mut normalized = String::with_capacity(template.len());
        let mut rest = template;
        while let Some(open) = rest.find(['{', '}']) {
            if rest.as_bytes()[open] == b'}' {
                return Err(format!("path template {template:?} has an unmatched '}}'"));
            }
            normalized.push_str(&rest[..open]);
            let after = &rest[open + 1..];
            let close = after
                .find('}')
                .ok_or_else(|| format!("path template {template:?} has an unclosed '{{'"))?;
            let inner = &after[..close];
            let (catch_all, name) = match inner.strip_prefix('*') {
                Some(n) => (true, n),
                None => (false, inner),
            };
            if name.is_empty()
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            {
                return Err(format!(
                    "path template {template:?}: parameter {{{inner}}} needs a name of letters, digits, '_' or '-'"
                ));
            }
            if params.iter().any(|p| p == name) {
                return Err(format!(
                    "path template {template:?} uses parameter {{{name}}} twice"
                ));
            }
            let tail = &after[close + 1..];
            if catch_all && !tail.is_empty() {
                return Err(format!(
                    "path template {template:?}: the rest parameter {{*{name}}} must end the path"
                ));
            }
            if catch_all && !normalized.ends_with('/') {
                return Err(format!(
                    "path template {template:?}: the rest parameter {{*{name}}} must be a whole segment"
                ));
            }
            let idx = params.len();
            normalized.push_str(&if catch_all {
                format!("{{*p{idx}}}")
            } else {
                format!("{{p{idx}}}")
            });
            params.push(name.to_string());
            rest = tail;
        }
        normalized.push_str(rest);
        // Let matchit apply its own rules (one parameter per segment, ...) now, so a bad
        // template is reported here with its text rather than as a confusing conflict.
        let mut probe = matchit::Router::new();
        probe
            .insert(normalized.clone(), ())
            .map_err(|e| format!("path template {template:?} is not valid: {e}"))?;
        Ok(PathTemplate { params, normalized })
    }

    /// Fills the template with values for its parameters (used for upstream paths).
    /// A concrete path this template matches, every parameter set to `0`: for checks that
    /// ask "which route would answer this?" (a plan's shadowing warning).
    pub fn sample(&self) -> String {
        let mut s = self.normalized.clone();
        for i in (0..self.params.len()).rev() {
            s = s.replace(&format!("{{*p{i}}}"), "0");
            s = s.replace(&format!("{{p{i}}}"), "0");
        }
        s
    }

    /// The template with its parameter names, as the author wrote it.
    pub fn display(&self) -> String {
        display(self)
    }

    pub fn render(template: &str, values: &BTreeMap<&str, &str>) -> String {
        let mut out = String::with_capacity(template.len());
        PathTemplate::render_into(template, values, &mut out);
        out
    }

    /// [`PathTemplate::render`], appended to `out`.
    pub fn render_into(template: &str, values: &BTreeMap<&str, &str>, out: &mut String) {
        let mut rest = template;
        while let Some(open) = rest.find('{') {
            out.push_str(&rest[..open]);
            let after = &rest[open + 1..];
            let Some(close) = after.find('}') else {
                out.push_str(&rest[open..]);
                return;
            };
            let name = after[..close].trim_start_matches('*');
            out.push_str(values.get(name).copied().unwrap_or(""));
            rest = &after[close + 1..];
        }
        out.push_str(rest);
    }
}

/// What a lookup found.
#[derive(Debug, PartialEq, Eq)]
pub enum RouteMatch<'a> {
    Found {
        /// Index into the bundle's `gateway.routes`.
        route: usize,
        /// Parameter name -> raw (still percent-encoded) value.
        params: Vec<(&'a str, String)>,
    },
    /// The path exists for other methods: answer 405 with `Allow`.
    MethodNotAllowed {
        allowed: Vec<Method>,
    },
    NotFound,
}

#[derive(Debug)]
struct PathEntry {
    /// The template as first inserted (for messages).
    template: PathTemplate,
    /// method -> (route index, the route's own parameter names by position)
    methods: BTreeMap<Method, (usize, Vec<String>)>,
}

/// Routes by host, then path, then method.
#[derive(Debug, Default)]
pub struct RouteTable {
    /// Routers map a path to an index into `entries`.
    by_host: BTreeMap<String, matchit::Router<usize>>,
    /// Routes that answer on every host.
    any_host: matchit::Router<usize>,
    entries: Vec<PathEntry>,
    /// (host, normalized template) -> index into `entries`.
    slots: BTreeMap<(Option<String>, String), usize>,
}

/// A route that could not be added, naming the route it collides with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    pub route: usize,
    pub with_route: Option<usize>,
    pub message: String,
}

impl RouteTable {
    /// Adds route `index` for `hosts` (empty: any host). Fails on a method+path already taken
    /// on one of those hosts, or a path the router cannot tell apart from another one.
    pub fn insert(
        &mut self,
        index: usize,
        hosts: &[String],
        methods: &[Method],
        template: &PathTemplate,
    ) -> Result<(), Conflict> {
        let host_keys: BTreeSet<Option<String>> = if hosts.is_empty() {
            BTreeSet::from([None])
        } else {
            hosts.iter().map(|h| Some(h.to_ascii_lowercase())).collect()
        };
        let methods: BTreeSet<Method> = methods.iter().copied().collect();
        for host in host_keys {
            let key = (host.clone(), template.normalized.clone());
            let slot = match self.slots.get(&key) {
                Some(&slot) => slot,
                None => {
                    let router = match &host {
                        None => &mut self.any_host,
                        Some(h) => self.by_host.entry(h.clone()).or_default(),
                    };
                    let slot = self.entries.len();
                    if let Err(e) = router.insert(template.normalized.clone(), slot) {
                        // Name the route that owns the other path, in the author's words.
                        let other = match &e {
                            matchit::InsertError::Conflict { with } => self
                                .slots
                                .get(&(host.clone(), with.clone()))
                                .map(|&s| &self.entries[s]),
                            _ => None,
                        };
                        return Err(Conflict {
                            route: index,
                            with_route: other
                                .and_then(|o| o.methods.values().next().map(|(r, _)| *r)),
                            message: match other {
                                Some(o) => format!(
                                    "path {} cannot be told apart from path {} (a rest parameter and another route under the same prefix overlap)",
                                    display(template),
                                    display(&o.template)
                                ),
                                None => format!(
                                    "path {} overlaps another route: {e}",
                                    display(template)
                                ),
                            },
                        });
                    }
                    self.entries.push(PathEntry {
                        template: template.clone(),
                        methods: BTreeMap::new(),
                    });
                    self.slots.insert(key, slot);
                    slot
                }
            };
            let entry = &mut self.entries[slot];
            for &method in &methods {
                if let Some((other, _)) = entry.methods.get(&method) {
                    if *other == index {
                        continue;
                    }
                    // No host in the message: it is usually the account's own host name,
                    // and the same conflict in many accounts should read the same.
                    return Err(Conflict {
                        route: index,
                        with_route: Some(*other),
                        message: format!("{method} {} is served by two routes", display(template)),
                    });
                }
                entry
                    .methods
                    .insert(method, (index, template.params.clone()));
            }
        }
        Ok(())
    }

    /// Finds the route for a request. Host-specific routes win over any-host routes.
    pub fn find<'a>(&'a self, host: &str, method: Method, path: &str) -> RouteMatch<'a> {
        let host = host.split(':').next().unwrap_or(host);
        // Hosts are stored lowercase; most requests name theirs so, and need no copy.
        let lowered;
        let host = if host.bytes().any(|b| b.is_ascii_uppercase()) {
            lowered = host.to_ascii_lowercase();
            lowered.as_str()
        } else {
            host
        };
        let mut allowed = Vec::new();
        let candidates = self
            .by_host
            .get(host)
            .into_iter()
            .chain(std::iter::once(&self.any_host));
        for router in candidates {
            let Ok(m) = router.at(path) else { continue };
            let entry = &self.entries[*m.value];
            if let Some((route, names)) = entry.methods.get(&method).or_else(|| {
                // HEAD is served by GET routes, as HTTP expects.
                (method == Method::Head)
                    .then(|| entry.methods.get(&Method::Get))
                    .flatten()
            }) {
                let params = m
                    .params
                    .iter()
                    .filter_map(|(k, v)| {
                        let pos: usize = k.strip_prefix('p')?.parse().ok()?;
                        Some((names.get(pos)?.as_str(), v.to_string()))
                    })
                    .collect();
                return RouteMatch::Found {
                    route: *route,
                    params,
                };
            }
            allowed.extend(entry.methods.keys().copied());
        }
        if allowed.is_empty() {
            RouteMatch::NotFound
        } else {
            allowed.sort();
            allowed.dedup();
            RouteMatch::MethodNotAllowed { allowed }
        }
    }
}

fn display(t: &PathTemplate) -> String {
    // Put the real names back for messages.
    let mut s = t.normalized.clone();
    for (i, name) in t.params.iter().enumerate().rev() {
        s = s.replace(&format!("{{p{i}}}"), &format!("{{{name}}}"));
        s = s.replace(&format!("{{*p{i}}}"), &format!("{{*{name}}}"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(routes: &[(&[Method], &str)]) -> RouteTable {
        let mut t = RouteTable::default();
        for (i, (methods, path)) in routes.iter().enumerate() {
            t.insert(i, &[], methods, &PathTemplate::parse(path).unwrap())
                .unwrap();
        }
        t
    }

    #[test]
    fn literal_beats_parameter_beats_rest() {
        let t = table(&[
            (&[Method::Get], "/orders/{id}"),
            (&[Method::Get], "/orders/export"),
            (&[Method::Get], "/orders/{id}/{*rest}"),
        ]);
        assert_eq!(
            t.find("h", Method::Get, "/orders/export"),
            RouteMatch::Found {
                route: 1,
                params: vec![]
            }
        );
        assert_eq!(
            t.find("h", Method::Get, "/orders/42"),
            RouteMatch::Found {
                route: 0,
                params: vec![("id", "42".into())]
            }
        );
        assert_eq!(
            t.find("h", Method::Get, "/orders/42/items/7"),
            RouteMatch::Found {
                route: 2,
                params: vec![("id", "42".into()), ("rest", "items/7".into())]
            }
        );
    }

    #[test]
    fn same_template_different_param_names_and_methods_coexist() {
        let t = table(&[
            (&[Method::Get], "/orders/{id}"),
            (&[Method::Delete], "/orders/{orderId}"),
        ]);
        assert_eq!(
            t.find("h", Method::Delete, "/orders/9"),
            RouteMatch::Found {
                route: 1,
                params: vec![("orderId", "9".into())]
            }
        );
    }

    #[test]
    fn wrong_method_is_405_with_allowed_methods_and_unknown_path_is_404() {
        let t = table(&[(&[Method::Get, Method::Put], "/a/{x}")]);
        assert_eq!(
            t.find("h", Method::Post, "/a/1"),
            RouteMatch::MethodNotAllowed {
                allowed: vec![Method::Put, Method::Get]
            }
            .sorted()
        );
        assert_eq!(t.find("h", Method::Get, "/b"), RouteMatch::NotFound);
    }

    #[test]
    fn overlapping_templates_are_a_conflict_naming_the_other_route_never_a_panic() {
        // Regression: the third insert used to panic (a refused template was remembered as
        // inserted, then looked up as if it were a request path).
        let mut t = RouteTable::default();
        t.insert(
            0,
            &[],
            &[Method::Get],
            &PathTemplate::parse("/files/{id}/meta").unwrap(),
        )
        .unwrap();
        let e1 = t
            .insert(
                1,
                &[],
                &[Method::Delete],
                &PathTemplate::parse("/files/{*rest}").unwrap(),
            )
            .unwrap_err();
        let e2 = t
            .insert(
                2,
                &[],
                &[Method::Put],
                &PathTemplate::parse("/files/{*rest}").unwrap(),
            )
            .unwrap_err();
        for e in [&e1, &e2] {
            assert_eq!(e.with_route, Some(0), "{e:?}");
            assert!(
                e.message
                    .contains("/files/{*rest} cannot be told apart from path /files/{id}/meta"),
                "{}",
                e.message
            );
        }
        assert!(matches!(
            t.find("h", Method::Get, "/files/9/meta"),
            RouteMatch::Found { route: 0, .. }
        ));
    }

    #[test]
    fn a_method_listed_twice_is_not_a_conflict_with_itself() {
        let mut t = RouteTable::default();
        t.insert(
            0,
            &["a".into(), "A".into()],
            &[Method::Get, Method::Get],
            &PathTemplate::parse("/x").unwrap(),
        )
        .unwrap();
    }

    #[test]
    fn head_falls_back_to_get() {
        let t = table(&[(&[Method::Get], "/a")]);
        assert!(matches!(
            t.find("h", Method::Head, "/a"),
            RouteMatch::Found { route: 0, .. }
        ));
    }

    #[test]
    fn same_method_and_template_conflicts() {
        let mut t = RouteTable::default();
        t.insert(
            0,
            &[],
            &[Method::Get],
            &PathTemplate::parse("/o/{id}").unwrap(),
        )
        .unwrap();
        let err = t
            .insert(
                1,
                &[],
                &[Method::Get],
                &PathTemplate::parse("/o/{other}").unwrap(),
            )
            .unwrap_err();
        assert_eq!(err.with_route, Some(0));
        assert_eq!(err.message, "GET /o/{other} is served by two routes");
    }

    #[test]
    fn host_specific_routes_win_and_others_fall_through() {
        let mut t = RouteTable::default();
        let p = PathTemplate::parse("/a").unwrap();
        t.insert(0, &[], &[Method::Get], &p).unwrap();
        t.insert(1, &["Admin.example.com".into()], &[Method::Get], &p)
            .unwrap();
        assert!(matches!(
            t.find("admin.example.com:8443", Method::Get, "/a"),
            RouteMatch::Found { route: 1, .. }
        ));
        assert!(matches!(
            t.find("other", Method::Get, "/a"),
            RouteMatch::Found { route: 0, .. }
        ));
    }

    #[test]
    fn bad_templates_are_explained() {
        for (t, want) in [
            ("orders", "must start with '/'"),
            ("/a//b", "empty segment"),
            ("/a/{", "unclosed"),
            ("/a/}", "unmatched"),
            ("/a/{}", "needs a name"),
            ("/a/{id}/{id}", "twice"),
            ("/a/{*rest}/b", "must end the path"),
            ("/a/{x}{y}", "not valid"),
            ("/bücher", "percent-encoded"),
            ("/a b", "percent-encoded"),
        ] {
            let e = PathTemplate::parse(t).unwrap_err();
            assert!(e.contains(want), "{t}: {e}");
        }
    }

    #[test]
    fn render_fills_parameters() {
        let values = BTreeMap::from([("id", "42"), ("rest", "a/b")]);
        assert_eq!(
            PathTemplate::render("/v2/orders/{id}/{*rest}", &values),
            "/v2/orders/42/a/b"
        );
    }

    impl RouteMatch<'_> {
        fn sorted(self) -> Self {
            match self {
                RouteMatch::MethodNotAllowed { mut allowed } => {
                    allowed.sort();
                    RouteMatch::MethodNotAllowed { allowed }
                }
                other => other,
            }
        }
    }
}
