//! `compile()`: the one place that decides whether a bundle is runnable.
//!
//! The reconciler compiles every bundle it renders before it plans or applies; the gateway
//! compiles every bundle before it swaps it in. Both therefore refuse exactly the same
//! bundles. Every problem is collected (not just the first), and each names its subject with
//! a [`BundlePath`] such as `gateway.routes[orders.getOrder].backend`, which the reconciler
//! maps back to the manifest line that produced it.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use jsonwebtoken::DecodingKey;
use jsonwebtoken::jwk::JwkSet;

use crate::bundle::{
    AuthPolicy, BUNDLE_API_VERSION, Bundle, ClientSecret, Cors, IdpConfig, LOCAL_ISSUER, Method,
    RateLimit, RateLimitKey, Retries, Route, RouteAuth, SecretRef, StickyKey, VariantMatch,
};
use crate::duration::Duration;
use crate::route::{PathTemplate, RouteMatch, RouteTable};

/// One step of a path into a bundle.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PathSeg {
    /// An object key.
    Key(String),
    /// The item of a list of named items whose `key` field (`name` or `id`) is `value`.
    Item { key: &'static str, value: String },
    /// A list position, for lists whose items have no name.
    Index(usize),
}

/// Where in a bundle something is, e.g. `gateway.routes[orders.getOrder].backend`.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BundlePath(pub Vec<PathSeg>);

impl BundlePath {
    fn root(keys: &[&str]) -> BundlePath {
        BundlePath(
            keys.iter()
                .map(|k| PathSeg::Key((*k).to_string()))
                .collect(),
        )
    }

    fn key(&self, k: &str) -> BundlePath {
        let mut p = self.clone();
        p.0.push(PathSeg::Key(k.to_string()));
        p
    }

    fn item(&self, key: &'static str, value: &str) -> BundlePath {
        let mut p = self.clone();
        p.0.push(PathSeg::Item {
            key,
            value: value.to_string(),
        });
        p
    }

    fn index(&self, i: usize) -> BundlePath {
        let mut p = self.clone();
        p.0.push(PathSeg::Index(i));
        p
    }

    /// What a person calls the thing at this path: `route orders.getOrder`,
    /// `backend orders`, `client web-portal`, ...
    pub fn subject(&self) -> String {
        let segs = &self.0;
        for (i, seg) in segs.iter().enumerate().rev() {
            let parent = i.checked_sub(1).and_then(|p| match &segs[p] {
                PathSeg::Key(k) => Some(k.as_str()),
                _ => None,
            });
            let kind = match parent {
                Some("routes") => "route",
                Some("backends") if i >= 2 && segs[i - 2] == PathSeg::Key("gateway".into()) => {
                    "backend"
                }
                Some("authPolicies") => "auth policy",
                Some("flags") => "flag",
                Some("clients") => "client",
                Some("scopes") if i >= 2 && segs[i - 2] == PathSeg::Key("idp".into()) => "scope",
                Some("trustedIssuers") => "trusted issuer",
                _ => continue,
            };
            let name = match seg {
                PathSeg::Key(k) => k.clone(),
                PathSeg::Item { value, .. } => value.clone(),
                PathSeg::Index(n) => format!("#{n}"),
            };
            return format!("{kind} {name}");
        }
        match segs.first() {
            Some(PathSeg::Key(k)) if k == "account" => "account".into(),
            Some(PathSeg::Key(k)) if k == "idp" => "identity provider".into(),
            _ => "gateway".into(),
        }
    }
}

impl fmt::Display for BundlePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, seg) in self.0.iter().enumerate() {
            match seg {
                PathSeg::Key(k) if i == 0 => write!(f, "{k}")?,
                PathSeg::Key(k) => write!(f, ".{k}")?,
                PathSeg::Item { value, .. } => write!(f, "[{value}]")?,
                PathSeg::Index(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CompileError {
    pub path: BundlePath,
    pub message: String,
}

impl fmt::Display for CompileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {} (at {})",
            self.path.subject(),
            self.message,
            self.path
        )
    }
}

/// Every reason a bundle cannot run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompileErrors(pub Vec<CompileError>);

impl fmt::Display for CompileErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for CompileErrors {}

/// A route with everything it inherits resolved, ready for the request path.
#[derive(Clone, Debug)]
pub struct CompiledRoute {
    pub template: PathTemplate,
    /// `None`: public.
    pub auth: Option<RouteAuth>,
    pub timeout: Duration,
    pub max_body_bytes: u64,
    pub retries: Option<Retries>,
    pub rate_limit: Option<RateLimit>,
    pub cors: Option<Cors>,
    /// `Some(status)` when the route is switched off (kill switch or flag off).
    pub disabled: Option<u16>,
}

/// A bundle that passed every check, with its routing table built.
#[derive(Debug)]
pub struct CompiledBundle {
    pub bundle: Bundle,
    /// Same order as `bundle.gateway.routes`.
    pub routes: Vec<CompiledRoute>,
    pub table: RouteTable,
    /// Inline JWKS of trusted issuers, parsed, by issuer name.
    pub inline_jwks: BTreeMap<String, JwkSet>,
}

struct Checker {
    errors: Vec<CompileError>,
}

impl Checker {
    fn err(&mut self, path: &BundlePath, message: impl Into<String>) {
        self.errors.push(CompileError {
            path: path.clone(),
            message: message.into(),
        });
    }

    fn name(&mut self, path: &BundlePath, what: &str, name: &str) {
        if name.is_empty() {
            self.err(path, format!("{what} name must not be empty"));
        } else if !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._:-/".contains(&b))
        {
            self.err(
                path,
                format!("{what} name {name:?} may only use letters, digits and . _ : - /"),
            );
        }
    }

    fn positive(&mut self, path: &BundlePath, what: &str, d: Duration) {
        if d.is_zero() {
            self.err(path, format!("{what} must be greater than zero"));
        }
    }

    fn header_name(&mut self, path: &BundlePath, name: &str) {
        if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
            self.err(path, format!("{name:?} is not a valid HTTP header name"));
        }
    }

    fn url(&mut self, path: &BundlePath, what: &str, raw: &str) -> Option<url::Url> {
        // Before anything that quotes the URL: credentials in it must not reach a message.
        let authority = raw.split_once("://").map_or(raw, |(_, rest)| rest);
        let authority = authority.split(['/', '?', '#']).next().unwrap_or_default();
        if authority.contains('@') {
            self.err(
                path,
                format!("{what} must not carry credentials in the URL (value not shown)"),
            );
            return None;
        }
        match url::Url::parse(raw) {
            Ok(u) if !matches!(u.scheme(), "http" | "https") => {
                self.err(
                    path,
                    format!("{what} {raw:?} must be an http:// or https:// URL"),
                );
                None
            }
            Ok(u) if u.host().is_none() => {
                self.err(path, format!("{what} {raw:?} has no host"));
                None
            }
            Ok(u) if !u.username().is_empty() || u.password().is_some() => {
                // Credentials in a URL end up in logs and plans: keep them in secret refs.
                self.err(
                    path,
                    format!("{what} must not carry credentials in the URL"),
                );
                None
            }
            Ok(u) if u.query().is_some() || u.fragment().is_some() => {
                self.err(
                    path,
                    format!("{what} {raw:?} must not have a query or fragment"),
                );
                None
            }
            Ok(u) => Some(u),
            Err(e) => {
                self.err(path, format!("{what} {raw:?} is not a valid URL: {e}"));
                None
            }
        }
    }

    fn host(&mut self, path: &BundlePath, host: &str) {
        let ok = !host.is_empty()
            && host.len() <= 253
            && !host.contains(['/', ':', '*', ' '])
            && url::Host::parse(host).is_ok();
        if ok && (!host.is_ascii() || host.bytes().any(|b| b.is_ascii_uppercase() || b == b'%')) {
            // Requests carry the lowercase ASCII (punycode) form; anything else never matches.
            self.err(path, format!("{host:?}: write host names in lowercase ASCII (punycode for international names)"));
        } else if !ok {
            self.err(
                path,
                format!("{host:?} is not a host name (no scheme, port, path or wildcard)"),
            );
        }
    }

    fn secret_ref(&mut self, path: &BundlePath, r: &SecretRef) {
        let (SecretRef::File(v) | SecretRef::Env(v) | SecretRef::AwsSecretsManager(v)) = r;
        if v.contains("-----BEGIN") || v.contains(['\n', '\r']) {
            // A key pasted where its reference belongs: say so without quoting it.
            self.err(
                path,
                "holds secret material instead of a reference to it: name the file, \
                 environment variable or Secrets Manager secret that holds it (value not shown)",
            );
            return;
        }
        match r {
            SecretRef::File(p) if !p.starts_with('/') => {
                self.err(path, format!("secret file {p:?} must be an absolute path"))
            }
            SecretRef::Env(v)
                if v.is_empty()
                    || v.as_bytes()[0].is_ascii_digit()
                    || !v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') =>
            {
                self.err(path, format!("{v:?} is not an environment variable name"))
            }
            SecretRef::AwsSecretsManager(arn) => {
                // arn:<partition>:secretsmanager:<region>:<account>:secret:<name>
                let parts: Vec<&str> = arn.splitn(7, ':').collect();
                let ok = parts.len() == 7
                    && parts[0] == "arn"
                    && parts[1].starts_with("aws")
                    && parts[2] == "secretsmanager"
                    && !parts[3].is_empty()
                    && is_account_id(parts[4])
                    && parts[5] == "secret"
                    && !parts[6].is_empty();
                if !ok {
                    self.err(
                        path,
                        format!(
                            "{arn:?} is not a Secrets Manager secret ARN \
                             (arn:aws:secretsmanager:<region>:<account id>:secret:<name>)"
                        ),
                    );
                }
            }
            _ => {}
        }
    }
}

pub fn is_account_id(s: &str) -> bool {
    s.len() == 12 && s.bytes().all(|b| b.is_ascii_digit())
}

/// Checks a bundle and builds what the gateway needs to serve it.
pub fn compile(bundle: &Bundle) -> Result<CompiledBundle, CompileErrors> {
    let mut c = Checker { errors: Vec::new() };

    if bundle.api_version != BUNDLE_API_VERSION {
        c.err(
            &BundlePath::root(&["apiVersion"]),
            format!(
                "apiVersion {:?} is not {BUNDLE_API_VERSION}",
                bundle.api_version
            ),
        );
    }
    check_account(&mut c, bundle);
    let inline_jwks = check_idp(&mut c, &bundle.idp);
    let (routes, table) = check_gateway(&mut c, bundle);

    if c.errors.is_empty() {
        Ok(CompiledBundle {
            bundle: bundle.clone(),
            routes,
            table,
            inline_jwks,
        })
    } else {
        c.errors.sort();
        c.errors.dedup();
        Err(CompileErrors(c.errors))
    }
}

fn check_account(c: &mut Checker, bundle: &Bundle) {
    let a = &bundle.account;
    let p = BundlePath::root(&["account"]);
    if !is_account_id(&a.id) {
        c.err(
            &p.key("id"),
            format!("account id {:?} must be exactly 12 digits", a.id),
        );
    }
    if a.name.is_empty()
        || a.name.len() > 63
        || !a
            .name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        c.err(
            &p.key("name"),
            format!(
                "account name {:?} must be 1-63 lowercase letters, digits or '-'",
                a.name
            ),
        );
    }
}

fn check_idp(c: &mut Checker, idp: &IdpConfig) -> BTreeMap<String, JwkSet> {
    let root = BundlePath::root(&["idp"]);
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
            ClientSecret::Argon2Hash(hash) => match crate::idp::PhcHash::parse(hash.expose()) {
                Ok(h) => match costs.iter_mut().find(|(cost, _)| *cost == h.cost()) {
                    Some((_, ids)) => ids.push(client.id.as_str()),
                    None => costs.push((h.cost(), vec![client.id.as_str()])),
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

fn check_policy(c: &mut Checker, p: &BundlePath, policy: &AuthPolicy, idp: &IdpConfig) {
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

fn check_gateway(c: &mut Checker, bundle: &Bundle) -> (Vec<CompiledRoute>, RouteTable) {
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
    gw: &crate::bundle::GatewayConfig,
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    /// A small bundle that compiles; each test breaks it in one way.
    fn valid() -> Value {
        json!({
            "apiVersion": BUNDLE_API_VERSION,
            "account": {"name": "acme", "id": "123456789012", "region": "eu-west-1", "stage": "prod", "tenant": "acme"},
            "gateway": {
                "hosts": ["api.acme.example"],
                "backends": {"orders": {"url": "http://orders.internal:8080"}, "v2": {"url": "http://v2.internal"}},
                "authPolicies": {"default": {"issuers": ["local"]}},
                "routes": [
                    {"name": "list", "methods": ["GET"], "path": "/orders", "backend": "orders",
                     "auth": {"policy": "default", "scopes": ["orders:read"]}},
                    {"name": "get", "methods": ["GET"], "path": "/orders/{id}",
                     "backends": [{"backend": "orders", "weight": 90}, {"backend": "v2", "weight": 10}], "public": true}
                ]
            },
            "idp": {
                "issuer": {"url": "https://auth.acme.example", "audiences": ["api"],
                           "signingKeys": {"active": {"kid": "k1", "algorithm": "RS256", "privateKey": {"env": "KEY"}}}},
                "scopes": [{"name": "orders:read"}],
                "trustedIssuers": [{"name": "partner", "issuer": "https://p.example", "audiences": ["api"], "algorithms": ["RS256"],
                    "jwks": {"keys": [{"kty": "RSA", "kid": "p1", "alg": "RS256", "e": "AQAB",
                        "n": "yCdO_VbAs1NDZGnzkHSAmWgKwKDbCJ82xa_YnL1VmK8RqmZm8gkvWAP638m_Ke38eysXXI1EnzWJnxUARuIsjSUFoG7SA8vdOh0QytBAIgwaj2rYEPR2LwaTCg7SLMwEr5asHjDKe9uNytSsC2mF1IP1xZj4DKS641m-YLXPKh0MzrPqoHcP2psoLp4l6tLXXLiwKbFxo5_0WkmUAujS4cESGnG7jI5sRn4IKr5MJrxImsLRwYBQlQexwdFBQVwfIZaGUJ3yLzV5eUcPaJ74WXKXQLkFopRyB4Pc2Uln1F7graBv2gMDW5NAmD-RbF1tjnebFGyS6NhZfSmXG1gWMw"}]}}]
            }
        })
    }

    fn errors(mutate: impl FnOnce(&mut Value)) -> Vec<String> {
        let mut v = valid();
        mutate(&mut v);
        let bundle: Bundle = serde_json::from_value(v).expect("still a bundle");
        match compile(&bundle) {
            Ok(_) => vec![],
            Err(e) => e.0.iter().map(ToString::to_string).collect(),
        }
    }

    fn one_error(mutate: impl FnOnce(&mut Value)) -> String {
        let errs = errors(mutate);
        assert_eq!(errs.len(), 1, "{errs:#?}");
        errs.into_iter().next().unwrap()
    }

    #[test]
    fn the_valid_bundle_compiles_and_routes() {
        let bundle: Bundle = serde_json::from_value(valid()).unwrap();
        let compiled = compile(&bundle).unwrap();
        assert!(matches!(
            compiled
                .table
                .find("api.acme.example", Method::Get, "/orders/7"),
            RouteMatch::Found { route: 1, .. }
        ));
        assert_eq!(compiled.inline_jwks["partner"].keys.len(), 1);
    }

    #[test]
    fn references_must_resolve() {
        let e = one_error(|v| v["gateway"]["routes"][0]["backend"] = json!("ordrs"));
        assert_eq!(
            e,
            "route list: backend \"ordrs\" is not defined in gateway.backends (at gateway.routes[list].backend)"
        );
        let e = one_error(|v| {
            v["gateway"]["authPolicies"]["default"]["issuers"] = json!(["local", "corp"])
        });
        assert!(
            e.contains("unknown issuer \"corp\" (known: local, partner)")
                && e.contains("issuers[1]"),
            "{e}"
        );
        let e = one_error(|v| v["gateway"]["routes"][0]["auth"]["scopes"] = json!(["orders:raed"]));
        assert!(e.contains("scope \"orders:raed\" is not declared"), "{e}");
    }

    #[test]
    fn weights_must_sum_to_100() {
        let e = one_error(|v| v["gateway"]["routes"][1]["backends"][1]["weight"] = json!(20));
        assert!(e.contains("weights sum to 110"), "{e}");
    }

    #[test]
    fn a_route_conflict_is_reported_at_both_routes() {
        let errs = errors(|v| {
            v["gateway"]["routes"].as_array_mut().unwrap().push(json!(
                {"name": "legacy", "methods": ["GET"], "path": "/orders", "backend": "orders", "public": true}));
        });
        assert_eq!(errs.len(), 2, "{errs:#?}");
        assert!(
            errs.iter().any(|e| e.starts_with(
                "route legacy: GET /orders is served by two routes (also route list)"
            )),
            "{errs:#?}"
        );
        assert!(
            errs.iter().any(|e| e.starts_with(
                "route list: GET /orders is served by two routes (also route legacy)"
            )),
            "{errs:#?}"
        );
    }

    #[test]
    fn routes_need_auth_unless_public() {
        let e = one_error(|v| {
            v["gateway"]["routes"][0]
                .as_object_mut()
                .unwrap()
                .remove("auth");
        });
        assert!(e.contains("route has no auth"), "{e}");
    }

    #[test]
    fn private_key_material_in_a_jwks_is_refused_without_quoting_it() {
        let e = one_error(|v| {
            v["idp"]["trustedIssuers"][0]["jwks"]["keys"][0]["d"] = json!("PRIVATE-EXPONENT-zz9")
        });
        assert!(e.contains("carries private key material (d)"), "{e}");
        assert!(!e.contains("PRIVATE-EXPONENT-zz9"), "{e}");
    }

    #[test]
    fn credentials_in_urls_are_never_quoted() {
        for url in [
            "ftp://svc:Hunter2-S3cret@h.internal",
            "https://svc:Hunter2-S3cret@bad host",
            "http://svc:Hunter2-S3cret@h/x",
        ] {
            let e = one_error(|v| v["gateway"]["backends"]["v2"]["url"] = json!(url));
            assert!(
                e.contains("must not carry credentials") && !e.contains("Hunter2"),
                "{e}"
            );
        }
    }

    #[test]
    fn hosts_are_checked() {
        let errs =
            errors(|v| v["gateway"]["hosts"] = json!(["api.acme.example", "API.acme.example"]));
        assert_eq!(errs.len(), 2, "{errs:#?}");
        assert!(
            errs[0].contains("write host names in lowercase ASCII"),
            "{errs:#?}"
        );
        assert!(
            errs[1].contains("host \"API.acme.example\" is listed twice"),
            "{errs:#?}"
        );
        let e = one_error(|v| v["gateway"]["routes"][0]["hosts"] = json!(["evil.example.org"]));
        assert!(e.contains("not one of the gateway's hosts"), "{e}");
    }

    #[test]
    fn leeway_is_bounded() {
        let e = one_error(|v| v["gateway"]["authPolicies"]["default"]["leeway"] = json!("10m"));
        assert!(e.contains("leeway above 5m"), "{e}");
    }

    #[test]
    fn client_secret_hashes_must_be_argon2_and_are_not_quoted() {
        let e = one_error(|v| {
            v["idp"]["clients"] = json!([{"id": "web", "secret": {"argon2Hash": "not-a-hash-hunter2"}, "scopes": ["orders:read"]}]);
        });
        assert!(
            e.contains("not an argon2 hash") && !e.contains("hunter2"),
            "{e}"
        );
    }

    /// The argon2id hash of `secret` with parameters `m`, `t`, `p`.
    fn argon2id(secret: &str, m: u32, t: u32, p: u32) -> String {
        use argon2::PasswordHasher as _;
        let params = argon2::Params::new(m, t, p, None).unwrap();
        let salt = argon2::password_hash::SaltString::encode_b64(b"fleetgate-salt!!").unwrap();
        argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
            .hash_password(secret.as_bytes(), &salt)
            .unwrap()
            .to_string()
    }

    #[test]
    fn an_idp_has_one_argon2_parameter_set_and_the_error_names_the_clients() {
        let (small, big) = (argon2id("s1", 8, 1, 1), argon2id("s2", 16, 1, 1));
        let e = one_error(|v| {
            v["idp"]["clients"] = json!([
                {"id": "web", "secret": {"argon2Hash": small}, "scopes": ["orders:read"]},
                {"id": "batch", "secret": {"argon2Hash": big}, "scopes": ["orders:read"]},
                {"id": "partner", "secret": {"argon2Hash": small}, "scopes": ["orders:read"]},
            ]);
        });
        assert!(
            e.contains("2 parameter sets")
                && e.contains("argon2id v=19 m=8,t=1,p=1 with a 32-byte output: web, partner")
                && e.contains("m=16,t=1,p=1 with a 32-byte output: batch"),
            "{e}"
        );
        assert!(!e.contains(&small[30..]) && !e.contains(&big[30..]), "{e}");
        // One set: fine.
        let mut ok = valid();
        ok["idp"]["clients"] = json!([
            {"id": "web", "secret": {"argon2Hash": small}, "scopes": ["orders:read"]},
            {"id": "partner", "secret": {"argon2Hash": argon2id("s3", 8, 1, 1)}, "scopes": ["orders:read"]},
        ]);
        let b: Bundle = serde_json::from_value(ok).unwrap();
        if let Err(e) = compile(&b) {
            panic!("{e}");
        }
    }

    #[test]
    fn argon2_costs_are_capped() {
        // A PHC string is only read, never computed, here: the cost is in its text.
        let hash = argon2id("s", 8, 1, 1).replace("m=8,t=1,p=1", "m=1048576,t=1,p=1");
        let e = one_error(|v| {
            v["idp"]["clients"] =
                json!([{"id": "web", "secret": {"argon2Hash": hash}, "scopes": ["orders:read"]}]);
        });
        assert!(
            e.contains("m (memory, KiB) is 1048576, over the gateway's cap of 262144"),
            "{e}"
        );
        let hash = argon2id("s", 8, 1, 1).replace("m=8,t=1,p=1", "m=8,t=100,p=1");
        let e = one_error(|v| {
            v["idp"]["clients"] =
                json!([{"id": "web", "secret": {"argon2Hash": hash}, "scopes": ["orders:read"]}]);
        });
        assert!(e.contains("t (passes) is 100"), "{e}");
    }
}
