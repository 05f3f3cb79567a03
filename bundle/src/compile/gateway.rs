//! The checks of a bundle's `gateway` section: backends, routes, their rate limits and CORS,
//! and the routing table built from them.
//!
//! Imports [`checker`](super::checker), [`types`](super::types) and [`idp`](super::idp)'s
//! auth policy check; never the parent.

use std::collections::{BTreeMap, BTreeSet};

use crate::bundle::{
    Bundle, Cors, GatewayConfig, LOCAL_ISSUER, Method, RateLimit, RateLimitKey, Route, StickyKey,
    VariantMatch,
};
use crate::route::{PathTemplate, RouteMatch, RouteTable};

use super::checker::Checker;
use super::idp::check_policy;
use super::types::{BundlePath, CompiledRoute};

fn check_rate_limit(c: &mut Checker, p: &BundlePath, rl: &RateLimit) {
    if rl.requests == 0 {
        c.err(
            &p.key("requests"),
            "requests must be at least 1 (to block a route, disable it)",
        );
    }
    c.positive(&p.key("per"), "rate limit window", rl.per);
    if rl.burst == Some(0) {
        c.err(&p.key("burst"), "burst must be at least 1");
    }
    if let RateLimitKey::Header(h) = &rl.key {
        c.header_name(&p.key("key"), h);
    }
}

fn check_cors(c: &mut Checker, p: &BundlePath, cors: &Cors) {
    if cors.allow_origins.is_empty() {
        c.err(&p.key("allowOrigins"), "list at least one origin, or \"*\"");
    }
    for o in &cors.allow_origins {
        if o == "*" {
            if cors.allow_credentials {
                c.err(
                    &p.key("allowOrigins"),
                    "\"*\" cannot be combined with allowCredentials (browsers refuse it)",
                );
            }
            continue;
        }
        if let Some(u) = c.url(&p.key("allowOrigins"), "origin", o)
            && u.path() != "/"
        {
            c.err(
                &p.key("allowOrigins"),
                format!("origin {o:?} must not have a path"),
            );
        }
    }
    for h in cors.allow_headers.iter().chain(&cors.expose_headers) {
        if h != "*" {
            c.header_name(p, h);
        }
    }
}

pub(super) fn check_gateway(c: &mut Checker, bundle: &Bundle) -> (Vec<CompiledRoute>, RouteTable) {
    let gw = &bundle.gateway;
    let idp = &bundle.idp;
    let root = BundlePath::root(&["gateway"]);

    let mut seen_hosts = BTreeSet::new();
    for h in &gw.hosts {
        c.host(&root.key("hosts"), h);
        if !seen_hosts.insert(h.to_ascii_lowercase()) {
            c.err(&root.key("hosts"), format!("host {h:?} is listed twice"));
        }
    }
    let d = &gw.defaults;
    let dp = root.key("defaults");
    c.positive(&dp.key("timeout"), "timeout", d.timeout);
    if d.max_body_bytes == 0 {
        c.err(
            &dp.key("maxBodyBytes"),
            "maxBodyBytes must be greater than zero",
        );
    }
    if let Some(rl) = &d.rate_limit {
        check_rate_limit(c, &dp.key("rateLimit"), rl);
    }
    if let Some(cors) = &d.cors {
        check_cors(c, &dp.key("cors"), cors);
    }
    if let Some(auth) = &d.auth
        && !gw.auth_policies.contains_key(&auth.policy)
    {
        c.err(
            &dp.key("auth").key("policy"),
            format!("unknown auth policy {:?}", auth.policy),
        );
    }

    for (name, backend) in &gw.backends {
        let p = root.key("backends").key(name);
        c.name(&p, "backend", name);
        c.url(&p.key("url"), "backend URL", &backend.url);
        if let Some(t) = backend.timeout {
            c.positive(&p.key("timeout"), "timeout", t);
        }
        if let Some(t) = backend.connect_timeout {
            c.positive(&p.key("connectTimeout"), "connect timeout", t);
        }
    }
    for (name, policy) in &gw.auth_policies {
        let p = root.key("authPolicies").key(name);
        c.name(&p, "auth policy", name);
        check_policy(c, &p, policy, idp);
    }
    for name in gw.flags.keys() {
        c.name(&root.key("flags").key(name), "flag", name);
    }

    let local_only_scopes: BTreeSet<&str> = idp.scopes.iter().map(|s| s.name.as_str()).collect();
    let mut table = RouteTable::default();
    let mut compiled = Vec::with_capacity(gw.routes.len());
    let mut names: BTreeMap<&str, usize> = BTreeMap::new();
    for (index, route) in gw.routes.iter().enumerate() {
        let p = root.key("routes").item("name", &route.name);
        c.name(&p, "route", &route.name);
        if names.insert(&route.name, index).is_some() {
            c.err(&p, "route name is used twice");
        }
        let template = match PathTemplate::parse(&route.path) {
            Ok(t) => Some(t),
            Err(e) => {
                c.err(&p.key("path"), e);
                None
            }
        };
        check_route(c, &p, route, bundle, template.as_ref(), &local_only_scopes);
        if let Some(template) = template {
            let hosts = if route.hosts.is_empty() {
                &gw.hosts
            } else {
                &route.hosts
            };
            if let Err(conflict) = table.insert(index, hosts, &route.methods, &template) {
                // Reported at both routes: which one is found second depends only on names,
                // and the author needs to see the one they wrote.
                match conflict.with_route {
                    Some(other) => {
                        let other = &gw.routes[other];
                        let msg = &conflict.message;
                        c.err(&p.key("path"), format!("{msg} (also route {})", other.name));
                        c.err(
                            &root.key("routes").item("name", &other.name).key("path"),
                            format!("{msg} (also route {})", route.name),
                        );
                    }
                    None => c.err(&p.key("path"), conflict.message),
                }
            }
            if idp.issuer.is_some() {
                check_idp_paths(c, &p, route, &template);
            }
            compiled.push(resolve_route(route, &gw.defaults, gw, template));
        }
    }
    (compiled, table)
}

/// The embedded IdP answers its paths on every host before routes are matched: a route
/// that would match one of them could never be reached there, which is a mistake to say.
fn check_idp_paths(c: &mut Checker, p: &BundlePath, route: &Route, template: &PathTemplate) {
    let mut alone = RouteTable::default();
    if alone.insert(0, &[], &route.methods, template).is_err() {
        return;
    }
    for path in crate::idp::PATHS {
        for method in [Method::Get, Method::Post] {
            if matches!(alone.find("", method, path), RouteMatch::Found { .. }) {
                c.err(
                    &p.key("path"),
                    format!("{method} {path} is served by the account's identity provider; this route would never be reached there"),
                );
            }
        }
    }
}

fn check_route(
    c: &mut Checker,
    p: &BundlePath,
    route: &Route,
    bundle: &Bundle,
    template: Option<&PathTemplate>,
    declared_scopes: &BTreeSet<&str>,
) {
    let gw = &bundle.gateway;
    if route.methods.is_empty() {
        c.err(&p.key("methods"), "list at least one method");
    }
    let unique: BTreeSet<Method> = route.methods.iter().copied().collect();
    if unique.len() != route.methods.len() {
        c.err(&p.key("methods"), "a method is listed twice");
    }
    for h in &route.hosts {
        c.host(&p.key("hosts"), h);
        // A route narrows the gateway's hosts; it cannot add one the gateway does not serve.
        if !gw.hosts.is_empty() && !gw.hosts.iter().any(|g| g.eq_ignore_ascii_case(h)) {
            c.err(
                &p.key("hosts"),
                format!("host {h:?} is not one of the gateway's hosts"),
            );
        }
    }
    let params: BTreeSet<&str> = template
        .map(|t| t.params.iter().map(String::as_str).collect())
        .unwrap_or_default();
    let check_upstream_template =
        |c: &mut Checker, at: &BundlePath, tpl: &str| match PathTemplate::parse(tpl) {
            Err(e) => c.err(at, e),
            Ok(t) => {
                for name in &t.params {
                    if template.is_some() && !params.contains(name.as_str()) {
                        c.err(
                            at,
                            format!(
                                "{{{name}}} is not a parameter of the route path {:?}",
                                route.path
                            ),
                        );
                    }
                }
            }
        };
    if let Some(up) = &route.upstream_path {
        check_upstream_template(c, &p.key("upstreamPath"), up);
    }

    let backend_ref = |c: &mut Checker, at: &BundlePath, name: &str| {
        if !gw.backends.contains_key(name) {
            c.err(
                at,
                format!("backend {name:?} is not defined in gateway.backends"),
            );
        }
    };
    let given: Vec<&str> = [
        route.backend.as_ref().map(|_| "backend"),
        (!route.backends.is_empty()).then_some("backends"),
        route.aggregate.as_ref().map(|_| "aggregate"),
    ]
    .into_iter()
    .flatten()
    .collect();
    match given.len() {
        0 => c.err(p, "route needs one of backend, backends or aggregate"),
        1 => {}
        _ => c.err(
            p,
            format!("route sets {}: choose exactly one", given.join(" and ")),
        ),
    }
    if let Some(b) = &route.backend {
        backend_ref(c, &p.key("backend"), b);
    }
    if !route.backends.is_empty() {
        let bp = p.key("backends");
        let mut seen = BTreeSet::new();
        let mut total: u64 = 0;
        for (i, wb) in route.backends.iter().enumerate() {
            let ep = bp.index(i).key("backend");
            backend_ref(c, &ep, &wb.backend);
            if !seen.insert(wb.backend.as_str()) {
                c.err(&ep, format!("backend {:?} is listed twice", wb.backend));
            }
            total += u64::from(wb.weight);
        }
        if total != 100 {
            c.err(&bp, format!("weights sum to {total}, they must sum to 100"));
        }
    }
    if let Some(sticky) = &route.sticky {
        if route.backends.len() < 2 {
            c.err(
                &p.key("sticky"),
                "sticky needs weighted backends to choose between",
            );
        }
        match sticky {
            StickyKey::Header(h) => c.header_name(&p.key("sticky"), h),
            StickyKey::Cookie(k) if k.is_empty() => {
                c.err(&p.key("sticky"), "cookie name must not be empty")
            }
            StickyKey::Cookie(_) => {}
        }
    }
    let mut variant_names = BTreeSet::new();
    for v in &route.variants {
        let vp = p.key("variants").item("name", &v.name);
        if !variant_names.insert(v.name.as_str()) {
            c.err(&vp, "variant name is used twice");
        }
        backend_ref(c, &vp.key("backend"), &v.backend);
        match &v.matches {
            VariantMatch::Header { name, .. } => c.header_name(&vp.key("match"), name),
            VariantMatch::Cookie { name, .. } if name.is_empty() => {
                c.err(&vp.key("match"), "cookie name must not be empty")
            }
            VariantMatch::Cookie { .. } => {}
        }
    }
    if let Some(agg) = &route.aggregate {
        let ap = p.key("aggregate");
        if agg.parts.is_empty() {
            c.err(&ap.key("parts"), "list at least one part");
        }
        let mut groups = BTreeSet::new();
        for (i, part) in agg.parts.iter().enumerate() {
            let pp = ap.key("parts").index(i);
            backend_ref(c, &pp.key("backend"), &part.backend);
            if let Some(path) = &part.path {
                check_upstream_template(c, &pp.key("path"), path);
            }
            if let Some(g) = &part.group
                && !groups.insert(g.as_str())
            {
                c.err(
                    &pp.key("group"),
                    format!("group {g:?} is used by two parts"),
                );
            }
        }
    }

    check_route_auth(c, p, route, gw, declared_scopes);
    check_route_settings(c, p, route, gw);
}

/// A route's auth, its own or the defaults': exactly one of public or authenticated, known
/// policies, and the local issuer's scopes declared.
fn check_route_auth(
    c: &mut Checker,
    p: &BundlePath,
    route: &Route,
    gw: &GatewayConfig,
    declared_scopes: &BTreeSet<&str>,
) {
    let effective_auth = if route.public {
        None
    } else {
        route.auth.as_ref().or(gw.defaults.auth.as_ref())
    };
    if route.public && route.auth.is_some() {
        c.err(p, "a route cannot be both public and authenticated");
    }
    if !route.public && effective_auth.is_none() {
        c.err(p, "route has no auth: set `auth`, `defaults.auth`, or `public: true` to serve it unauthenticated");
    }
    if let Some(auth) = effective_auth {
        let at = if route.auth.is_some() {
            p.key("auth")
        } else {
            BundlePath::root(&["gateway", "defaults", "auth"])
        };
        for (i, (policy_name, scopes)) in auth.requirements().enumerate() {
            let rp = if i == 0 {
                at.clone()
            } else {
                at.key("alternatives").index(i - 1)
            };
            match gw.auth_policies.get(policy_name) {
                None => c.err(
                    &rp.key("policy"),
                    format!("unknown auth policy {policy_name:?}"),
                ),
                Some(policy) => {
                    // Scopes of the account's own issuer are declared; a typo there would
                    // lock every caller out, so it is caught here. External issuers' scopes
                    // are theirs to define.
                    if policy.issuers.iter().all(|i| i == LOCAL_ISSUER) {
                        for s in scopes.iter().chain(&policy.required_scopes) {
                            if !declared_scopes.contains(s.as_str()) {
                                c.err(
                                    &rp.key("scopes"),
                                    format!("scope {s:?} is not declared in the IdP's scopes"),
                                );
                            }
                        }
                    }
                }
            }
        }
    }
}

/// A route's own settings: rate limit, timeout, retries, CORS, body limit, flag, status.
fn check_route_settings(c: &mut Checker, p: &BundlePath, route: &Route, gw: &GatewayConfig) {
    if let Some(rl) = &route.rate_limit {
        check_rate_limit(c, &p.key("rateLimit"), rl);
    }
    if let Some(t) = route.timeout {
        c.positive(&p.key("timeout"), "timeout", t);
    }
    if let Some(r) = &route.retries
        && r.attempts > 10
    {
        c.err(
            &p.key("retries").key("attempts"),
            "at most 10 retry attempts",
        );
    }
    if let Some(cors) = &route.cors {
        check_cors(c, &p.key("cors"), cors);
    }
    if route.max_body_bytes == Some(0) {
        c.err(
            &p.key("maxBodyBytes"),
            "maxBodyBytes must be greater than zero",
        );
    }
    if let Some(flag) = &route.flag
        && !gw.flags.contains_key(flag)
    {
        c.err(
            &p.key("flag"),
            format!("flag {flag:?} is not declared in gateway.flags"),
        );
    }
    if let Some(s) = route.disabled_status
        && !(100..=599).contains(&s)
    {
        c.err(
            &p.key("disabledStatus"),
            format!("{s} is not an HTTP status"),
        );
    }
}

fn resolve_route(
    route: &Route,
    defaults: &crate::bundle::RouteDefaults,
    gw: &GatewayConfig,
    template: PathTemplate,
) -> CompiledRoute {
    let flag_off = route
        .flag
        .as_ref()
        .is_some_and(|f| gw.flags.get(f).is_some_and(|f| !f.enabled));
    CompiledRoute {
        template,
        auth: if route.public {
            None
        } else {
            route.auth.clone().or_else(|| defaults.auth.clone())
        },
        timeout: route.timeout.unwrap_or(defaults.timeout),
        max_body_bytes: route.max_body_bytes.unwrap_or(defaults.max_body_bytes),
        retries: route.retries.clone().or_else(|| defaults.retries.clone()),
        rate_limit: route
            .rate_limit
            .clone()
            .or_else(|| defaults.rate_limit.clone()),
        cors: route.cors.clone().or_else(|| defaults.cors.clone()),
        disabled: (!route.enabled || flag_off).then_some(route.disabled_status.unwrap_or(503)),
    }
}
