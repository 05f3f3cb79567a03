//! The checks of a bundle's `idp` section: the local issuer, its clients and scopes, the
//! trusted issuers (inline JWKS parsed here) and the auth policies that name them.
//!
//! Imports [`checker`](super::checker) and [`types`](super::types); never the parent.

use std::collections::{BTreeMap, BTreeSet};

use jsonwebtoken::DecodingKey;
use jsonwebtoken::jwk::JwkSet;

use crate::bundle::{AuthPolicy, ClientSecret, IdpConfig, LOCAL_ISSUER};
use crate::duration::Duration;

use super::checker::Checker;
use super::types::BundlePath;

pub(super) fn check_idp(c: &mut Checker, idp: &IdpConfig) -> BTreeMap<String, JwkSet> {
    let root = BundlePath::root(&["idp"]);
    check_local_issuer(c, &root, idp);
    check_clients(c, &root, idp);
    check_trusted_issuers(c, &root, idp)
}

/// `idp.issuer`: the account's own issuer, its signing keys and token rate limits.
fn check_local_issuer(c: &mut Checker, root: &BundlePath, idp: &IdpConfig) {
    if let Some(issuer) = &idp.issuer {
        let p = root.key("issuer");
        c.url(&p.key("url"), "issuer URL", &issuer.url);
        if issuer.audiences.is_empty() {
            c.err(
                &p.key("audiences"),
                "the issuer needs at least one audience",
            );
        }
        c.positive(&p.key("tokenTtl"), "token TTL", issuer.token_ttl);
        let keys = &issuer.signing_keys;
        let kp = p.key("signingKeys");
        let mut kids: BTreeMap<&str, &str> = BTreeMap::new();
        for (which, key) in keys.all() {
            if key.kid.is_empty() {
                c.err(
                    &kp.key(which).key("kid"),
                    "signing key kid must not be empty",
                );
            } else if let Some(first) = kids.insert(&key.kid, which) {
                c.err(
                    &kp.key(which).key("kid"),
                    format!(
                        "kid {:?} is also the {first} key's: every signing key needs its own kid",
                        key.kid
                    ),
                );
            }
            c.secret_ref(&kp.key(which).key("privateKey"), &key.private_key);
        }
        if let Some(limits) = &issuer.token_rate_limit {
            let lp = p.key("tokenRateLimit");
            for (which, rate) in [("perClient", &limits.per_client), ("perIp", &limits.per_ip)] {
                if let Some(rate) = rate {
                    if rate.requests == 0 || rate.burst == Some(0) {
                        c.err(&lp.key(which), "requests and burst must be at least 1");
                    }
                    c.positive(&lp.key(which).key("per"), "rate window", rate.per);
                }
            }
        }
    }
}

/// `idp.scopes` and `idp.clients`: names, scopes, secrets, and one argon2 parameter set.
fn check_clients(c: &mut Checker, root: &BundlePath, idp: &IdpConfig) {
    let mut scopes = BTreeSet::new();
    for s in &idp.scopes {
        let p = root.key("scopes").item("name", &s.name);
        if s.name.is_empty()
            || s.name
                .contains(|ch: char| ch.is_whitespace() || ch == '"' || ch == '\\')
        {
            c.err(
                &p,
                format!(
                    "scope {:?} must be non-empty without spaces, quotes or backslashes",
                    s.name
                ),
            );
        }
        if !scopes.insert(s.name.as_str()) {
            c.err(&p, "scope is declared twice");
        }
    }

    let mut clients = BTreeSet::new();
    let mut costs: Vec<(crate::idp::Argon2Cost, Vec<&str>)> = Vec::new();
    for client in &idp.clients {
        let p = root.key("clients").item("id", &client.id);
        c.name(&p, "client", &client.id);
        if !clients.insert(client.id.as_str()) {
            c.err(&p, "client id is declared twice");
        }
        if idp.issuer.is_none() {
            c.err(&p, "clients need the IdP's `issuer` to be configured");
        }
        for s in &client.scopes {
            if !scopes.contains(s.as_str()) {
                c.err(
                    &p.key("scopes"),
                    format!("scope {s:?} is not declared in the IdP's scopes"),
                );
            }
        }
        if let Some(ttl) = client.token_ttl {
            c.positive(&p.key("tokenTtl"), "token TTL", ttl);
        }
        match &client.secret {
            // Errors never echo the value: it is a credential hash.
            ClientSecret::Argon2Hash(hash) => match crate::idp::Argon2Phc::parse(hash.expose()) {
                Ok(h) => match costs.iter_mut().find(|(cost, _)| *cost == h.cost) {
                    Some((_, ids)) => ids.push(client.id.as_str()),
                    None => costs.push((h.cost, vec![client.id.as_str()])),
                },
                Err(e) => c.err(&p.key("secret").key("argon2Hash"), e),
            },
            ClientSecret::Ref(r) => c.secret_ref(&p.key("secret").key("ref"), r),
        }
    }
    // An unknown client id is verified against a dummy hash with the clients' parameters:
    // with two sets, it would cost less than a wrong secret for some clients, and timing
    // would tell which ids exist.
    if costs.len() > 1 {
        let sets: Vec<String> = costs
            .iter()
            .map(|(cost, ids)| format!("{cost}: {}", ids.join(", ")))
            .collect();
        c.err(
            &root.key("clients"),
            format!(
                "the clients' argon2 hashes use {} parameter sets ({}); every client of an IdP \
                 needs the same parameters (hash their secrets again with one set)",
                costs.len(),
                sets.join("; ")
            ),
        );
    }
}

/// `idp.trustedIssuers`: external issuers, their inline JWKS parsed.
fn check_trusted_issuers(
    c: &mut Checker,
    root: &BundlePath,
    idp: &IdpConfig,
) -> BTreeMap<String, JwkSet> {
    let mut jwks_by_issuer = BTreeMap::new();
    let mut trusted = BTreeSet::new();
    for t in &idp.trusted_issuers {
        let p = root.key("trustedIssuers").item("name", &t.name);
        c.name(&p, "trusted issuer", &t.name);
        if t.name == LOCAL_ISSUER {
            c.err(
                &p,
                format!("{LOCAL_ISSUER:?} is reserved for the account's own issuer"),
            );
        }
        if !trusted.insert(t.name.as_str()) {
            c.err(&p, "trusted issuer is declared twice");
        }
        if idp.issuer.as_ref().is_some_and(|i| i.url == t.issuer) {
            c.err(
                &p.key("issuer"),
                "a trusted issuer cannot have the local issuer's URL",
            );
        }
        if t.issuer.is_empty() {
            c.err(&p.key("issuer"), "issuer must not be empty");
        }
        if t.audiences.is_empty() {
            c.err(&p.key("audiences"), "trusted issuers need at least one audience, or tokens meant for other services would pass");
        }
        if t.algorithms.is_empty() {
            c.err(&p.key("algorithms"), "list the accepted algorithms");
        }
        match (&t.jwks_url, &t.jwks) {
            (Some(_), Some(_)) => c.err(&p, "set jwksUrl or jwks, not both"),
            (None, None) => c.err(&p, "set jwksUrl or an inline jwks"),
            (Some(u), None) => {
                c.url(&p.key("jwksUrl"), "JWKS URL", u);
            }
            (None, Some(doc)) => {
                // A JWKS to verify with holds public keys only. Private members (RSA d, p, q,
                // ...; EC/OKP d; oct k) mean a private key was pasted: refuse it, unquoted.
                if let Some(keys) = doc.get("keys").and_then(|k| k.as_array()) {
                    for (i, key) in keys.iter().enumerate() {
                        let private: Vec<&str> = ["d", "p", "q", "dp", "dq", "qi", "oth", "k"]
                            .into_iter()
                            .filter(|m| key.get(m).is_some())
                            .collect();
                        if !private.is_empty() {
                            c.err(
                                &p.key("jwks").key("keys").index(i),
                                format!(
                                    "this JWK carries private key material ({}); publish the public key only (values not shown)",
                                    private.join(", ")
                                ),
                            );
                        }
                    }
                }
                match serde_json::from_value::<JwkSet>(doc.clone()) {
                    Err(e) => c.err(
                        &p.key("jwks"),
                        format!(
                            "malformed JWKS ({e}); each key needs kty and its parameters: \
                             RSA n and e, EC crv, x and y, OKP crv and x"
                        ),
                    ),
                    Ok(set) => {
                        if set.keys.is_empty() {
                            c.err(&p.key("jwks"), "the JWKS has no keys");
                        }
                        for (i, jwk) in set.keys.iter().enumerate() {
                            let kp = p.key("jwks").key("keys").index(i);
                            if let Err(e) = DecodingKey::from_jwk(jwk) {
                                let kid = jwk.common.key_id.as_deref().unwrap_or("without kid");
                                c.err(
                                    &kp,
                                    format!(
                                        "malformed JWK {kid}: {e} (check that its parameters are base64url)"
                                    ),
                                );
                            }
                            if let Some(alg) = jwk.common.key_algorithm {
                                let name = format!("{alg:?}");
                                if !t.algorithms.iter().any(|a| format!("{a:?}") == name) {
                                    c.err(&kp, format!("key algorithm {name} is not in this issuer's algorithms"));
                                }
                            }
                            if matches!(
                                jwk.algorithm,
                                jsonwebtoken::jwk::AlgorithmParameters::OctetKey(_)
                            ) {
                                c.err(&kp, "symmetric (oct) keys are never accepted from an external issuer");
                            }
                        }
                        jwks_by_issuer.insert(t.name.clone(), set);
                    }
                }
            }
        }
    }
    jwks_by_issuer
}

pub(super) fn check_policy(c: &mut Checker, p: &BundlePath, policy: &AuthPolicy, idp: &IdpConfig) {
    if policy.issuers.is_empty() {
        c.err(&p.key("issuers"), "list at least one issuer");
    }
    for (i, issuer) in policy.issuers.iter().enumerate() {
        let known = if issuer == LOCAL_ISSUER {
            idp.issuer.is_some()
        } else {
            idp.trusted_issuers.iter().any(|t| &t.name == issuer)
        };
        if !known {
            let mut names: Vec<&str> = idp
                .trusted_issuers
                .iter()
                .map(|t| t.name.as_str())
                .collect();
            if idp.issuer.is_some() {
                names.insert(0, LOCAL_ISSUER);
            }
            c.err(
                &p.key("issuers").index(i),
                format!(
                    "unknown issuer {issuer:?} (known: {})",
                    if names.is_empty() {
                        "none".into()
                    } else {
                        names.join(", ")
                    }
                ),
            );
        }
    }
    for (claim, header) in &policy.forward_claims {
        let hp = p.key("forwardClaims").key(claim);
        c.header_name(&hp, header);
        if matches!(
            header.to_ascii_lowercase().as_str(),
            "host"
                | "authorization"
                | "content-length"
                | "transfer-encoding"
                | "connection"
                | "cookie"
        ) {
            c.err(
                &hp,
                format!("claims cannot be forwarded into the {header} header"),
            );
        }
    }
    if policy.leeway > Duration::from_secs(300) {
        c.err(
            &p.key("leeway"),
            "leeway above 5m would accept tokens long after they expire",
        );
    }
}
