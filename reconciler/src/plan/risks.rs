//! Risk warnings: changes that deserve a second look before merge, whatever the diff says.
//!
//! Messages name routes, keys and issuers but not the account, so the same risk in many
//! accounts is one warning listing them.

use std::collections::BTreeMap;

use fleetgate_bundle::compile::CompiledBundle;
use fleetgate_bundle::route::RouteMatch;
use fleetgate_bundle::{Bundle, compile};
use schemars::JsonSchema;
use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Warning {
    pub kind: WarningKind,
    pub message: String,
    /// The accounts it applies to (empty for fleet-wide warnings).
    pub accounts: Vec<String>,
}

/// Ordered by severity: the first ones break traffic or logins outright.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum WarningKind {
    /// Accounts stop being served: every request answered 410, their IdP stops.
    Decommission,
    /// An account's file is gone from git without an approval to decommission it: it keeps
    /// serving its last bundle, orphaned.
    RemovedWithoutApproval,
    /// The active IdP signing key is replaced by one that was never published as `next`.
    SigningKeyWithoutOverlap,
    /// The IdP's issuer URL, or a trusted issuer's `iss`, changes or goes away.
    IssuerChanged,
    /// An audience stops being issued or accepted.
    AudienceChanged,
    /// A route stops requiring authentication.
    RouteLosesAuth,
    /// A route now answers requests another route answered before.
    RouteShadows,
    /// A route's rate limit goes away.
    RateLimitRemoved,
    /// The deployed bundle does not compile with this version of fleetgate, so the checks
    /// above could not compare against it.
    DeployedDoesNotCompile,
    /// More than the configured share of the fleet would be updated at once.
    FleetShare,
}

impl WarningKind {
    pub fn as_str(self) -> &'static str {
        match self {
            WarningKind::Decommission => "decommission",
            WarningKind::RemovedWithoutApproval => "removed without approval",
            WarningKind::SigningKeyWithoutOverlap => "signing key without overlap",
            WarningKind::IssuerChanged => "issuer changed",
            WarningKind::AudienceChanged => "audience changed",
            WarningKind::RouteLosesAuth => "route loses auth",
            WarningKind::RouteShadows => "route shadows another",
            WarningKind::RateLimitRemoved => "rate limit removed",
            WarningKind::DeployedDoesNotCompile => "deployed bundle does not compile",
            WarningKind::FleetShare => "large share of the fleet",
        }
    }
}

/// One account's risk, before grouping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Risk {
    pub kind: WarningKind,
    pub message: String,
}

fn risk(kind: WarningKind, message: String) -> Risk {
    Risk { kind, message }
}

/// The risks of moving an account from `old` to `new`.
pub fn between(old: &Bundle, new: &Bundle) -> Vec<Risk> {
    let mut out = Vec::new();
    idp(&mut out, old, new);
    match (compile(old), compile(new)) {
        (Ok(o), Ok(n)) => routes(&mut out, &o, &n),
        (Err(e), _) => out.push(risk(
            WarningKind::DeployedDoesNotCompile,
            format!(
                "the deployed bundle does not compile ({} problem{}), so route auth, rate limits and shadowing were not compared",
                e.0.len(),
                if e.0.len() == 1 { "" } else { "s" }
            ),
        )),
        // Render compiled the new bundle already; nothing to compare against.
        (Ok(_), Err(_)) => {}
    }
    out
}

fn idp(out: &mut Vec<Risk>, old: &Bundle, new: &Bundle) {
    match (&old.idp.issuer, &new.idp.issuer) {
        (Some(o), Some(n)) => {
            let (oa, na) = (&o.signing_keys.active.kid, &n.signing_keys.active.kid);
            let published = o.signing_keys.next.as_ref().map(|k| &k.kid) == Some(na);
            if oa != na && !published {
                out.push(risk(
                    WarningKind::SigningKeyWithoutOverlap,
                    format!(
                        "IdP signing key {oa:?} is replaced by {na:?}, which was never published as `signingKeys.next`: tokens signed by {oa:?} stop validating at once, and gateways holding a cached JWKS reject tokens signed by {na:?}. Publish {na:?} as `next` first, apply, wait at least the token TTL, then promote it"
                    ),
                ));
            }
            if o.url != n.url {
                out.push(risk(
                    WarningKind::IssuerChanged,
                    format!(
                        "IdP issuer changes from {} to {}: tokens already issued carry the old `iss` and are rejected",
                        o.url, n.url
                    ),
                ));
            }
            let dropped = removed(&o.audiences, &n.audiences);
            if !dropped.is_empty() {
                out.push(risk(
                    WarningKind::AudienceChanged,
                    format!(
                        "IdP stops issuing tokens for audience {}: services expecting it reject new tokens",
                        list(&dropped)
                    ),
                ));
            }
        }
        (Some(o), None) => out.push(risk(
            WarningKind::IssuerChanged,
            format!(
                "IdP issuer {} is removed: its tokens stop validating and no new ones are issued",
                o.url
            ),
        )),
        _ => {}
    }

    let trusted = |b: &Bundle| -> BTreeMap<String, (String, Vec<String>)> {
        b.idp
            .trusted_issuers
            .iter()
            .map(|t| (t.name.clone(), (t.issuer.clone(), t.audiences.clone())))
            .collect()
    };
    let (ot, nt) = (trusted(old), trusted(new));
    for (name, (o_iss, o_aud)) in &ot {
        match nt.get(name) {
            None => out.push(risk(
                WarningKind::IssuerChanged,
                format!("trusted issuer {name:?} ({o_iss}) is removed: its tokens are rejected"),
            )),
            Some((n_iss, n_aud)) => {
                if o_iss != n_iss {
                    out.push(risk(
                        WarningKind::IssuerChanged,
                        format!(
                            "trusted issuer {name:?} changes `iss` from {o_iss} to {n_iss}: tokens with the old `iss` are rejected"
                        ),
                    ));
                }
                let dropped = removed(o_aud, n_aud);
                if !dropped.is_empty() {
                    out.push(risk(
                        WarningKind::AudienceChanged,
                        format!(
                            "trusted issuer {name:?} no longer accepts audience {}",
                            list(&dropped)
                        ),
                    ));
                }
            }
        }
    }
    for (name, o) in &old.gateway.auth_policies {
        let Some(n) = new.gateway.auth_policies.get(name) else {
            continue; // compile ensures no route uses a policy that is gone
        };
        let dropped = removed(&o.audiences, &n.audiences);
        if !dropped.is_empty() {
            out.push(risk(
                WarningKind::AudienceChanged,
                format!(
                    "auth policy {name:?} no longer accepts audience {}",
                    list(&dropped)
                ),
            ));
        }
        let dropped = removed(&o.issuers, &n.issuers);
        if !dropped.is_empty() {
            out.push(risk(
                WarningKind::IssuerChanged,
                format!(
                    "auth policy {name:?} no longer accepts issuer {}",
                    list(&dropped)
                ),
            ));
        }
    }
}

fn routes(out: &mut Vec<Risk>, old: &CompiledBundle, new: &CompiledBundle) {
    let index = |c: &CompiledBundle| -> BTreeMap<String, usize> {
        c.bundle
            .gateway
            .routes
            .iter()
            .enumerate()
            .map(|(i, r)| (r.name.clone(), i))
            .collect()
    };
    let (oi, ni) = (index(old), index(new));
    for (name, &o) in &oi {
        let Some(&n) = ni.get(name) else { continue };
        let (or, nr) = (&old.routes[o], &new.routes[n]);
        let route = &new.bundle.gateway.routes[n];
        let what = format!(
            "{} {}",
            route
                .methods
                .iter()
                .map(|m| m.as_str())
                .collect::<Vec<_>>()
                .join(","),
            route.path
        );
        if or.auth.is_some() && nr.auth.is_none() {
            out.push(risk(
                WarningKind::RouteLosesAuth,
                format!(
                    "route {name:?} ({what}) no longer requires authentication: it becomes public"
                ),
            ));
        }
        if or.rate_limit.is_some() && nr.rate_limit.is_none() {
            out.push(risk(
                WarningKind::RateLimitRemoved,
                format!("route {name:?} ({what}) loses its rate limit"),
            ));
        }
    }

    // Shadowing: a route that is new, or whose hosts, methods or path changed, now answers a
    // request that another (still existing) route answered before.
    let hosts = &new.bundle.gateway.hosts;
    for (n, route) in new.bundle.gateway.routes.iter().enumerate() {
        if let Some(&o) = oi.get(&route.name) {
            let before = &old.bundle.gateway.routes[o];
            if before.path == route.path
                && before.methods == route.methods
                && before.hosts == route.hosts
            {
                continue;
            }
        }
        let sample = new.routes[n].template.sample();
        let route_hosts: Vec<&str> = if route.hosts.is_empty() {
            hosts.iter().map(String::as_str).collect()
        } else {
            route.hosts.iter().map(String::as_str).collect()
        };
        let route_hosts = if route_hosts.is_empty() {
            vec![""]
        } else {
            route_hosts
        };
        'probe: for host in route_hosts {
            for &method in &route.methods {
                let RouteMatch::Found { route: now, .. } = new.table.find(host, method, &sample)
                else {
                    continue;
                };
                if now != n {
                    continue;
                }
                let RouteMatch::Found { route: was, .. } = old.table.find(host, method, &sample)
                else {
                    continue;
                };
                let other = &old.bundle.gateway.routes[was].name;
                if other != &route.name && ni.contains_key(other) {
                    out.push(risk(
                        WarningKind::RouteShadows,
                        format!(
                            "route {:?} ({} {}) takes requests such as `{method} {sample}` that route {other:?} ({}) answered before",
                            route.name,
                            route
                                .methods
                                .iter()
                                .map(|m| m.as_str())
                                .collect::<Vec<_>>()
                                .join(","),
                            route.path,
                            old.bundle.gateway.routes[was].path,
                        ),
                    ));
                    break 'probe;
                }
            }
        }
    }
}

/// The fleet-wide warning, when too many accounts would be updated at once.
pub fn fleet_share(updates: usize, fleet: usize, percent: u32) -> Option<Warning> {
    if fleet == 0 || updates * 100 <= fleet * percent as usize {
        return None;
    }
    Some(Warning {
        kind: WarningKind::FleetShare,
        message: format!(
            "{updates} of {fleet} accounts ({}%) would be updated at once (more than {percent}%): make sure the rollout's waves and health gates are what you expect",
            updates * 100 / fleet
        ),
        accounts: Vec::new(),
    })
}

/// Items of `old` that `new` no longer has.
fn removed<'a>(old: &'a [String], new: &[String]) -> Vec<&'a String> {
    old.iter().filter(|x| !new.contains(x)).collect()
}

fn list(items: &[&String]) -> String {
    items
        .iter()
        .map(|s| format!("{s:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example(account: &str) -> Bundle {
        let repo = crate::Repo::load(&crate::config::example_fleet::example_repo());
        crate::render(&repo, account).unwrap().bundle
    }

    fn kinds(r: &[Risk]) -> Vec<WarningKind> {
        r.iter().map(|r| r.kind).collect()
    }

    #[test]
    fn nothing_to_warn_about_between_equal_bundles() {
        let b = example("acme-prod");
        assert_eq!(between(&b, &b), []);
    }

    #[test]
    fn key_rotation_needs_the_next_key_published_first() {
        let old = example("acme-prod");
        let issuer = old.idp.issuer.as_ref().unwrap();
        let mut abrupt = old.clone();
        let keys = &mut abrupt.idp.issuer.as_mut().unwrap().signing_keys;
        keys.active.kid = "brand-new".into();
        keys.next = None;
        assert_eq!(
            kinds(&between(&old, &abrupt)),
            [WarningKind::SigningKeyWithoutOverlap]
        );

        // Publish as next, then promote: no warning at either step.
        let mut published = old.clone();
        let mut next = issuer.signing_keys.active.clone();
        next.kid = "brand-new".into();
        published.idp.issuer.as_mut().unwrap().signing_keys.next = Some(next.clone());
        assert_eq!(between(&old, &published), []);
        let mut promoted = published.clone();
        let keys = &mut promoted.idp.issuer.as_mut().unwrap().signing_keys;
        keys.active = next;
        keys.next = None;
        assert_eq!(between(&published, &promoted), []);
    }

    #[test]
    fn auth_rate_limit_and_issuer_losses_are_flagged() {
        let old = example("acme-prod");
        let mut new = old.clone();
        let i = new
            .gateway
            .routes
            .iter()
            .position(|r| !r.public)
            .expect("an authenticated route");
        let r = &mut new.gateway.routes[i];
        r.auth = None;
        r.public = true;
        new.gateway.defaults.rate_limit = None;
        for r in &mut new.gateway.routes {
            r.rate_limit = None;
        }
        new.idp.issuer.as_mut().unwrap().url = "https://elsewhere.example".into();
        let k = kinds(&between(&old, &new));
        assert!(k.contains(&WarningKind::RouteLosesAuth), "{k:?}");
        assert!(k.contains(&WarningKind::IssuerChanged), "{k:?}");
        assert!(
            old.gateway.routes.iter().any(|r| r.rate_limit.is_some()),
            "the example has rate-limited routes"
        );
        assert!(k.contains(&WarningKind::RateLimitRemoved), "{k:?}");
    }

    #[test]
    fn a_new_route_taking_another_routes_requests_is_shadowing() {
        let old = example("acme-prod");
        let mut new = old.clone();
        // A catch-all under an existing route's prefix would conflict; a more specific
        // static path is what takes requests over.
        let victim = new
            .gateway
            .routes
            .iter()
            .find(|r| {
                r.path.contains('{')
                    && !r.path.contains("{*")
                    && r.aggregate.is_none()
                    && r.upstream_path.is_none()
            })
            .cloned()
            .expect("a route with a parameter");
        let mut shadow = victim.clone();
        shadow.name = "zz.shadow".into();
        shadow.path = fleetgate_bundle::route::PathTemplate::parse(&victim.path)
            .unwrap()
            .sample();
        new.gateway.routes.push(shadow);
        if let Err(e) = compile(&new) {
            panic!("{e}");
        }
        let r = between(&old, &new);
        assert_eq!(kinds(&r), [WarningKind::RouteShadows], "{r:?}");
        assert!(r[0].message.contains(&victim.name), "{}", r[0].message);
    }

    #[test]
    fn fleet_share_warns_above_the_threshold_only() {
        assert!(fleet_share(25, 100, 25).is_none());
        assert!(fleet_share(26, 100, 25).is_some());
        assert!(fleet_share(0, 0, 25).is_none());
    }
}
