//! Bearer-token checks for routes: which issuers a route accepts, the keys each issuer signs
//! with, and the claim policy (audience, scopes, required claims, forwarded claims).
//!
//! The order matters for safety. The token's header and claims are read unverified only to
//! pick the issuer and key; the algorithm must then be on that issuer's allowlist (never
//! `none`, never HMAC: external issuers are asymmetric-only, so an HS256 token "signed" with
//! an RSA public key as the secret is refused before any key is touched), and jsonwebtoken
//! also refuses a key of the wrong family. Only a verified token's claims are used.
//!
//! Before any of that, the token's size is capped ([`MAX_TOKEN_BYTES`], checked before it is
//! decoded or a key is looked up) and a header with `crit` is refused: RFC 7515 section
//! 4.1.11 requires a recipient to reject a token that marks as critical an extension it
//! does not understand, and this gateway understands none.
//!
//! The claim policy ([`check_requirement`]) is a pure function with its own tests. Claims
//! are compared by exact JSON type: a required value matches only a string claim equal to
//! it (never an element of a list), and only scalar claims are forwarded.
//!
//! Signature checks dominate the cost of a request (an RS256 verify is tens of
//! microseconds); clients send the same token on every request until it expires, so tokens
//! that verified are kept in a bounded [`VerifiedTokens`] cache under their full text (as
//! Envoy's `jwt_cache_config` does). A hit skips only the signature: the issuer must still be
//! one the route accepts, the algorithm on its allowlist, the issuer's key set unchanged since
//! (a refetched JWKS invalidates every entry verified under the old set), and `exp`/`nbf` are
//! checked again against the clock with the route's leeway. The cache belongs to one loaded
//! bundle; a reload starts an empty one.
//!
//! Imports [`crate::keys`], [`crate::jwks`] and [`crate::secrets`] of this crate.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, Validation};
use serde_json::{Map, Value};

use fleetgate_bundle::bundle::{AuthPolicy, LOCAL_ISSUER, RouteAuth};

use crate::jwks::RemoteJwks;
use crate::keys::{Key, algorithm, keys_of, signing_algorithm};

/// The largest bearer token accepted, in bytes. Access tokens are a few hundred bytes to a
/// few KiB (more with group claims); a bigger one is refused before it is decoded, a key
/// looked up or a signature checked, and it is never stored in [`VerifiedTokens`].
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// The largest `Authorization` header read: a token of [`MAX_TOKEN_BYTES`] with its scheme
/// and surrounding whitespace. A longer header is refused before it is parsed.
pub const MAX_AUTHORIZATION_BYTES: usize = MAX_TOKEN_BYTES + 64;

/// Tokens whose signature verified, by their full text. Only verified tokens are stored, so
/// a stranger cannot fill it with garbage; it is bounded (`capacity` entries, evicting the
/// least useful first), and a capacity of 0 turns it off. Each entry is bounded too: its
/// key is a token of at most [`MAX_TOKEN_BYTES`] and its claims were decoded from it.
pub struct VerifiedTokens {
    cache: Option<quick_cache::sync::Cache<String, Arc<Verified>>>,
}

/// What is remembered of a verified token.
#[derive(Debug)]
struct Verified {
    /// The issuer (by name) whose key verified it.
    issuer: String,
    alg: Algorithm,
    /// The issuer's key-set generation at the time ([`KeySource::generation`]).
    generation: u64,
    exp: u64,
    nbf: Option<u64>,
    claims: Map<String, Value>,
}

impl std::fmt::Debug for VerifiedTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the tokens themselves.
        f.debug_struct("VerifiedTokens")
            .field("entries", &self.len())
            .finish()
    }
}

impl VerifiedTokens {
    pub fn new(capacity: usize) -> VerifiedTokens {
        VerifiedTokens {
            cache: (capacity > 0).then(|| quick_cache::sync::Cache::new(capacity)),
        }
    }

    pub fn len(&self) -> usize {
        self.cache.as_ref().map_or(0, |c| c.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Lookups that found a token (signature checks saved).
    pub fn hits(&self) -> u64 {
        self.cache.as_ref().map_or(0, |c| c.hits())
    }
}

/// Whether a token with these `exp` and `nbf` is valid at `now` (seconds since the epoch)
/// with `leeway` seconds either side: the same rule jsonwebtoken applies. Pure.
pub fn check_times(exp: u64, nbf: Option<u64>, leeway: u64, now: u64) -> Result<(), AuthError> {
    if exp < now.saturating_sub(leeway) {
        return Err(AuthError::unauthorized(
            "invalid_token",
            "the token has expired",
        ));
    }
    if nbf.is_some_and(|nbf| nbf > now + leeway) {
        return Err(AuthError::unauthorized(
            "invalid_token",
            "the token is not valid yet",
        ));
    }
    Ok(())
}

fn numeric_date(claims: &Map<String, Value>, name: &str) -> Option<u64> {
    match claims.get(name)? {
        Value::Number(n) => n.as_u64().or_else(|| n.as_f64().map(|f| f as u64)),
        _ => None,
    }
}

/// Where an issuer's keys come from.
#[derive(Debug, Clone)]
pub enum KeySource {
    Static(Arc<Vec<Key>>),
    Remote(Arc<RemoteJwks>),
    /// The keys could not be loaded (e.g. the local signing key's secret is unreadable):
    /// tokens of this issuer cannot be checked, and requests get 503, not 401.
    Unavailable(String),
}

impl KeySource {
    /// Changes whenever the keys may have: static keys never change within a loaded bundle.
    pub fn generation(&self) -> u64 {
        match self {
            KeySource::Remote(jwks) => jwks.generation(),
            KeySource::Static(_) | KeySource::Unavailable(_) => 0,
        }
    }
}

/// An issuer a route may accept tokens from.
#[derive(Debug, Clone)]
pub struct Issuer {
    /// `local` or the trusted issuer's name.
    pub name: String,
    /// The exact `iss` of its tokens.
    pub iss: String,
    pub audiences: Vec<String>,
    pub algorithms: Vec<Algorithm>,
    pub keys: KeySource,
}

/// What a request's token failed on. `description` is safe to send to the client and to
/// log: it never contains the token or a claim value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthError {
    pub status: u16,
    /// RFC 6750 error code: `invalid_request`, `invalid_token`, `insufficient_scope`, or
    /// empty when no token was sent.
    pub code: &'static str,
    pub description: String,
    /// For 403: the scopes that would have been enough.
    pub scope: Option<String>,
    /// For 503: why the issuer's keys cannot be had, for the caller to log with the
    /// request's ids. Never sent to the client.
    pub unavailable: Option<KeysUnavailable>,
}

/// Why tokens of an issuer cannot be verified right now (its JWKS cannot be fetched, its
/// keys cannot be read).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeysUnavailable {
    pub issuer: String,
    pub reason: String,
}

impl AuthError {
    fn unauthorized(code: &'static str, description: impl Into<String>) -> AuthError {
        AuthError {
            status: 401,
            code,
            description: description.into(),
            scope: None,
            unavailable: None,
        }
    }

    /// 503: `issuer`'s keys cannot be had, for `reason`.
    fn unavailable(issuer: &str, reason: String) -> AuthError {
        AuthError {
            status: 503,
            code: "",
            description: "tokens of this issuer cannot be verified right now".into(),
            scope: None,
            unavailable: Some(KeysUnavailable {
                issuer: issuer.to_string(),
                reason,
            }),
        }
    }

    /// The `WWW-Authenticate` header value (RFC 6750 section 3).
    pub fn www_authenticate(&self) -> Option<String> {
        if self.status == 503 {
            return None;
        }
        let mut v = String::from("Bearer realm=\"fleetgate\"");
        if !self.code.is_empty() {
            v.push_str(&format!(", error=\"{}\"", self.code));
            v.push_str(&format!(
                ", error_description=\"{}\"",
                self.description.replace(['"', '\\'], "'")
            ));
        }
        if let Some(scope) = &self.scope {
            v.push_str(&format!(", scope=\"{scope}\""));
        }
        Some(v)
    }
}

/// One way to satisfy a route: an auth policy plus the route's scopes.
#[derive(Debug, Clone, PartialEq)]
pub struct Requirement {
    pub policy: String,
    pub issuers: Vec<String>,
    /// Accepted audiences; empty: the issuer's own.
    pub audiences: Vec<String>,
    pub scopes: BTreeSet<String>,
    pub required_claims: BTreeMap<String, Vec<String>>,
    /// claim -> header name.
    pub forward_claims: BTreeMap<String, String>,
    pub leeway_secs: u64,
}

impl Requirement {
    pub fn from_route(auth: &RouteAuth, policies: &BTreeMap<String, AuthPolicy>) -> Vec<Self> {
        auth.requirements()
            .filter_map(|(name, scopes)| {
                let p = policies.get(name)?;
                Some(Requirement {
                    policy: name.to_string(),
                    issuers: p.issuers.clone(),
                    audiences: p.audiences.clone(),
                    scopes: p
                        .required_scopes
                        .iter()
                        .chain(scopes.iter())
                        .cloned()
                        .collect(),
                    required_claims: p.required_claims.clone(),
                    forward_claims: p.forward_claims.clone(),
                    leeway_secs: p.leeway.as_std().as_secs(),
                })
            })
            .collect()
    }
}

/// The scopes a token carries: `scope` (space separated, RFC 8693) or `scp` (a list or a
/// string, as some issuers write it).
pub fn token_scopes(claims: &Map<String, Value>) -> BTreeSet<&str> {
    let mut out = BTreeSet::new();
    for name in ["scope", "scp"] {
        match claims.get(name) {
            Some(Value::String(s)) => out.extend(s.split_ascii_whitespace()),
            Some(Value::Array(items)) => out.extend(items.iter().filter_map(Value::as_str)),
            _ => {}
        }
    }
    out
}

/// Whether the token grants `scope` ([`token_scopes`] holds it), without building the set.
fn has_scope(claims: &Map<String, Value>, scope: &str) -> bool {
    ["scope", "scp"].iter().any(|name| match claims.get(*name) {
        Some(Value::String(s)) => s.split_ascii_whitespace().any(|t| t == scope),
        Some(Value::Array(items)) => items.iter().any(|v| v.as_str() == Some(scope)),
        _ => false,
    })
}

fn audience_ok(claims: &Map<String, Value>, accepted: &[String]) -> bool {
    match claims.get("aud") {
        Some(Value::String(a)) => accepted.iter().any(|x| x == a),
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(Value::as_str)
            .any(|a| accepted.iter().any(|x| x == a)),
        _ => false,
    }
}

/// Why a verified token does not meet a requirement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unmet {
    /// Not for this requirement at all (wrong issuer or audience): 401.
    NotForUs(String),
    /// A required claim is missing or has another value: 403.
    Claim(String),
    /// Scopes missing: 403.
    Scopes(BTreeSet<String>),
}

/// Whether verified `claims` from `issuer` meet `req`. Pure.
pub fn check_requirement(
    claims: &Map<String, Value>,
    issuer: &Issuer,
    req: &Requirement,
) -> Result<(), Unmet> {
    if !req.issuers.contains(&issuer.name) {
        return Err(Unmet::NotForUs(format!(
            "issuer {} is not accepted by policy {}",
            issuer.name, req.policy
        )));
    }
    let audiences = if req.audiences.is_empty() {
        &issuer.audiences
    } else {
        &req.audiences
    };
    if !audience_ok(claims, audiences) {
        return Err(Unmet::NotForUs(
            "the token is meant for another audience".into(),
        ));
    }
    for (claim, allowed) in &req.required_claims {
        // Exact types only. The accepted values are strings, so only a string claim can
        // equal one; a number or boolean meets only an empty list (present). A list, an
        // object or null never meets a requirement: a list holding an accepted value is not
        // that value (a backend reading the claim would not see it).
        let ok = match claims.get(claim) {
            Some(Value::String(s)) => allowed.is_empty() || allowed.iter().any(|a| a == s),
            Some(Value::Number(_) | Value::Bool(_)) => allowed.is_empty(),
            None | Some(Value::Null | Value::Array(_) | Value::Object(_)) => false,
        };
        if !ok {
            // The claim's name only: its value may be personal data.
            return Err(Unmet::Claim(format!(
                "claim {claim:?} is missing or not an accepted value"
            )));
        }
    }
    let missing: BTreeSet<String> = req
        .scopes
        .iter()
        .filter(|s| !has_scope(claims, s))
        .cloned()
        .collect();
    if !missing.is_empty() {
        return Err(Unmet::Scopes(missing));
    }
    Ok(())
}

/// A token that passed: its claims and the headers to forward.
#[derive(Debug, Clone)]
pub struct Principal {
    pub issuer: String,
    pub subject: Option<String>,
    pub forward: Vec<(String, String)>,
}

/// The value a forwarded claim gives its header: a string as it is, a number or boolean as
/// its JSON text; a list, an object or null is not forwarded (the header is left out).
fn forwarded_value(claim: &Value) -> Option<String> {
    match claim {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Null | Value::Array(_) | Value::Object(_) => None,
    }
}

fn too_large() -> AuthError {
    AuthError::unauthorized(
        "invalid_token",
        format!("the token is too large (at most {MAX_TOKEN_BYTES} bytes)"),
    )
}

/// The bearer token of a request, size-capped before anything else reads it.
fn bearer(headers: &http::HeaderMap) -> Result<&str, AuthError> {
    let mut values = headers.get_all(http::header::AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Err(AuthError::unauthorized("", "a bearer token is required"));
    };
    if values.next().is_some() {
        // Not a list field (RFC 9110): which one a backend would read is anyone's guess.
        return Err(AuthError::unauthorized(
            "invalid_request",
            "more than one Authorization header",
        ));
    }
    if value.len() > MAX_AUTHORIZATION_BYTES {
        return Err(too_large());
    }
    let value = value.to_str().map_err(|_| {
        AuthError::unauthorized("invalid_request", "malformed Authorization header")
    })?;
    let (scheme, token) = value.split_once(' ').unwrap_or((value, ""));
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
        return Err(AuthError::unauthorized(
            "invalid_request",
            "the Authorization header must be `Bearer <token>`",
        ));
    }
    if token.len() > MAX_TOKEN_BYTES {
        return Err(too_large());
    }
    Ok(token)
}

/// Refuses a token whose header has `crit` (RFC 7515 section 4.1.11): this gateway
/// understands no extension, so whatever it lists must be refused, and an empty or
/// malformed `crit` is invalid in itself. The header segment is found and decoded as
/// jsonwebtoken does (everything before the payload, base64url without padding); the
/// parameters are read as a plain JSON object, so a `crit` is seen whatever its type.
/// Never quotes the header.
fn refuse_crit(token: &str) -> Result<(), AuthError> {
    use base64::Engine as _;
    let malformed = || AuthError::unauthorized("invalid_token", "the token is malformed");
    let mut parts = token.rsplitn(3, '.');
    let (Some(_signature), Some(_payload), Some(header)) =
        (parts.next(), parts.next(), parts.next())
    else {
        return Err(malformed());
    };
    let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header)
        .map_err(|_| malformed())?;
    let params: Map<String, Value> = serde_json::from_slice(&json).map_err(|_| malformed())?;
    match params.get("crit") {
        None => Ok(()),
        Some(Value::Array(names)) if !names.is_empty() && names.iter().all(Value::is_string) => {
            Err(AuthError::unauthorized(
                "invalid_token",
                "the token requires header extensions (crit) that this gateway does not support",
            ))
        }
        Some(_) => Err(AuthError::unauthorized(
            "invalid_token",
            "the token's crit header parameter is malformed",
        )),
    }
}

fn describe(e: &jsonwebtoken::errors::Error) -> String {
    use jsonwebtoken::errors::ErrorKind as K;
    match e.kind() {
        K::ExpiredSignature => "the token has expired".into(),
        K::ImmatureSignature => "the token is not valid yet".into(),
        K::InvalidIssuer => "the token's issuer is not accepted".into(),
        K::InvalidAudience => "the token is meant for another audience".into(),
        K::InvalidSignature => "the token's signature does not verify".into(),
        K::InvalidAlgorithm => "the token's algorithm does not fit its key".into(),
        K::MissingRequiredClaim(c) => format!("the token has no {c:?} claim"),
        K::InvalidClaimFormat(c) => format!("the token's {c:?} claim is malformed"),
        _ => "the token is malformed".into(),
    }
}

/// Checks a request's bearer token against a route's requirements.
///
/// `issuers` are the issuers of the bundle by name. Returns the principal, or the status to
/// answer with: 401 (no or bad token), 403 (valid token, missing scope or claim), 503 (the
/// issuer's keys cannot be had right now).
pub async fn authenticate(
    headers: &http::HeaderMap,
    requirements: &[Requirement],
    issuers: &HashMap<String, Issuer>,
    verified: &VerifiedTokens,
) -> Result<Principal, AuthError> {
    authenticate_at(
        headers,
        requirements,
        issuers,
        verified,
        jsonwebtoken::get_current_timestamp(),
    )
    .await
}

/// [`authenticate`] with the clock given, for cached tokens (a signature check uses the
/// system clock, as jsonwebtoken does).
pub async fn authenticate_at(
    headers: &http::HeaderMap,
    requirements: &[Requirement],
    issuers: &HashMap<String, Issuer>,
    verified: &VerifiedTokens,
    now: u64,
) -> Result<Principal, AuthError> {
    let token = bearer(headers)?;
    let leeway = requirements
        .iter()
        .map(|r| r.leeway_secs)
        .max()
        .unwrap_or(30);
    if let Some(hit) = verified.cache.as_ref().and_then(|c| c.get(token)) {
        let iss = hit.claims.get("iss").and_then(Value::as_str);
        let still_good = iss
            .and_then(|iss| route_issuer(requirements, issuers, iss))
            .filter(|i| {
                i.name == hit.issuer
                    && i.algorithms.contains(&hit.alg)
                    && i.keys.generation() == hit.generation
            });
        if let Some(issuer) = still_good {
            check_times(hit.exp, hit.nbf, leeway, now)?;
            return evaluate(&hit.claims, issuer, requirements);
        }
    }
    refuse_crit(token)?;
    let header = jsonwebtoken::decode_header(token)
        // `alg: none` and unknown algorithms fail here: jsonwebtoken has no such variant.
        .map_err(|_| {
            AuthError::unauthorized(
                "invalid_token",
                "the token is malformed or uses an unsupported algorithm",
            )
        })?;
    let unverified: Map<String, Value> = jsonwebtoken::dangerous::insecure_decode_claims(token)
        .map_err(|_| AuthError::unauthorized("invalid_token", "the token is malformed"))?;
    let iss = unverified
        .get("iss")
        .and_then(Value::as_str)
        .ok_or_else(|| AuthError::unauthorized("invalid_token", "the token has no issuer"))?;
    let issuer = route_issuer(requirements, issuers, iss).ok_or_else(|| {
        AuthError::unauthorized("invalid_token", "the token's issuer is not accepted here")
    })?;
    if !issuer.algorithms.contains(&header.alg) {
        return Err(AuthError::unauthorized(
            "invalid_token",
            format!(
                "algorithm {:?} is not accepted from this issuer",
                header.alg
            ),
        ));
    }
    // Read before the key is looked up: if a JWKS refetch on the way bumps it, the entry is
    // stored under the older generation and is merely re-verified next time, never trusted
    // beyond the keys that verified it.
    let generation = issuer.keys.generation();
    let key = find_key(issuer, header.kid.as_deref(), header.alg).await?;

    let mut validation = Validation::new(header.alg);
    validation.algorithms = vec![header.alg];
    validation.leeway = leeway;
    validation.validate_nbf = true;
    // Audience is per requirement, checked below.
    validation.validate_aud = false;
    validation.set_issuer(&[&issuer.iss]);
    validation.set_required_spec_claims(&["exp", "iss", "aud"]);
    let data = jsonwebtoken::decode::<Map<String, Value>>(token, &key.key, &validation)
        .map_err(|e| AuthError::unauthorized("invalid_token", describe(&e)))?;
    let claims = data.claims;
    if let (Some(cache), Some(exp)) = (&verified.cache, numeric_date(&claims, "exp")) {
        let entry = Arc::new(Verified {
            issuer: issuer.name.clone(),
            alg: header.alg,
            generation,
            exp,
            nbf: numeric_date(&claims, "nbf"),
            claims,
        });
        cache.insert(token.to_string(), entry.clone());
        return evaluate(&entry.claims, issuer, requirements);
    }
    evaluate(&claims, issuer, requirements)
}

/// The issuer with this `iss` among those the route's policies accept: only they are candidates.
fn route_issuer<'i>(
    requirements: &[Requirement],
    issuers: &'i HashMap<String, Issuer>,
    iss: &str,
) -> Option<&'i Issuer> {
    requirements
        .iter()
        .flat_map(|r| r.issuers.iter())
        .filter_map(|name| issuers.get(name))
        .find(|i| i.iss == iss)
}

/// The first requirement the verified `claims` meet gives the principal; otherwise the most
/// useful refusal.
fn evaluate(
    claims: &Map<String, Value>,
    issuer: &Issuer,
    requirements: &[Requirement],
) -> Result<Principal, AuthError> {
    let mut refusal: Option<AuthError> = None;
    for req in requirements {
        match check_requirement(claims, issuer, req) {
            Ok(()) => {
                let forward = req
                    .forward_claims
                    .iter()
                    .filter_map(|(claim, header)| {
                        Some((header.clone(), forwarded_value(claims.get(claim)?)?))
                    })
                    .collect();
                return Ok(Principal {
                    issuer: issuer.name.clone(),
                    subject: claims.get("sub").and_then(Value::as_str).map(String::from),
                    forward,
                });
            }
            Err(Unmet::NotForUs(why)) => {
                refusal.get_or_insert(AuthError::unauthorized("invalid_token", why));
            }
            Err(Unmet::Claim(why)) => {
                let e = AuthError {
                    status: 403,
                    code: "insufficient_scope",
                    description: why,
                    scope: None,
                    unavailable: None,
                };
                if refusal.as_ref().is_none_or(|r| r.status == 401) {
                    refusal = Some(e);
                }
            }
            Err(Unmet::Scopes(missing)) => {
                let all: Vec<&str> = req.scopes.iter().map(String::as_str).collect();
                let e = AuthError {
                    status: 403,
                    code: "insufficient_scope",
                    description: format!(
                        "missing scope{} {}",
                        if missing.len() == 1 { "" } else { "s" },
                        missing.iter().cloned().collect::<Vec<_>>().join(" ")
                    ),
                    scope: Some(all.join(" ")),
                    unavailable: None,
                };
                if refusal.as_ref().is_none_or(|r| r.status == 401) {
                    refusal = Some(e);
                }
            }
        }
    }
    Err(refusal.unwrap_or_else(|| {
        AuthError::unauthorized("invalid_token", "no policy accepts this token")
    }))
}

fn pick<'k>(keys: &'k [Key], kid: Option<&str>, alg: Algorithm) -> Option<&'k Key> {
    let fits = |k: &&Key| k.alg.is_none_or(|a| a == alg) && k.key.family() == alg.family();
    match kid {
        Some(kid) => keys
            .iter()
            .filter(fits)
            .find(|k| k.kid.as_deref() == Some(kid)),
        // No `kid`: acceptable only when exactly one key could have signed it.
        None => {
            let mut it = keys.iter().filter(fits);
            let first = it.next()?;
            it.next().is_none().then_some(first)
        }
    }
}

async fn find_key(issuer: &Issuer, kid: Option<&str>, alg: Algorithm) -> Result<Key, AuthError> {
    let unknown = || AuthError::unauthorized("invalid_token", "the token's signing key is unknown");
    match &issuer.keys {
        KeySource::Static(keys) => pick(keys, kid, alg).cloned().ok_or_else(unknown),
        // Logged by the caller, with the request's ids.
        KeySource::Unavailable(why) => Err(AuthError::unavailable(&issuer.name, why.clone())),
        KeySource::Remote(jwks) => {
            if let Some(k) = pick(&jwks.keys(), kid, alg) {
                return Ok(k.clone());
            }
            let never_fetched = jwks.keys().is_empty();
            jwks.refresh().await;
            if let Some(k) = pick(&jwks.keys(), kid, alg) {
                return Ok(k.clone());
            }
            if never_fetched
                && jwks.keys().is_empty()
                && let Some(e) = jwks.last_error().await
            {
                return Err(AuthError::unavailable(
                    &issuer.name,
                    format!("JWKS unavailable: {e}"),
                ));
            }
            Err(unknown())
        }
    }
}

/// The issuers of a bundle's IdP section by name, `local` included when it has keys (its
/// active, next and previous signing keys all verify). `remote` gives the shared cache for
/// a JWKS URL (kept across reloads); `secrets` holds the local signing keys' PEMs.
pub fn issuers_of(
    idp: &fleetgate_bundle::bundle::IdpConfig,
    inline: &BTreeMap<String, JwkSet>,
    mut remote: impl FnMut(&str) -> Arc<RemoteJwks>,
    secrets: &crate::secrets::Resolved,
) -> HashMap<String, Issuer> {
    let mut out = HashMap::new();
    for t in &idp.trusted_issuers {
        let keys = if let Some(url) = &t.jwks_url {
            KeySource::Remote(remote(url))
        } else if let Some(set) = inline.get(&t.name) {
            KeySource::Static(Arc::new(keys_of(set)))
        } else {
            KeySource::Unavailable("no JWKS".into())
        };
        out.insert(
            t.name.clone(),
            Issuer {
                name: t.name.clone(),
                iss: t.issuer.clone(),
                audiences: t.audiences.clone(),
                algorithms: t.algorithms.iter().map(|a| algorithm(*a)).collect(),
                keys,
            },
        );
    }
    if let Some(local) = &idp.issuer {
        let (keys, problems) = crate::keys::verifying_keys(local, secrets);
        let mut algorithms = Vec::new();
        for (_, k) in local.signing_keys.all() {
            let alg = signing_algorithm(k.algorithm);
            if !algorithms.contains(&alg) {
                algorithms.push(alg);
            }
        }
        let source = if keys.is_empty() {
            KeySource::Unavailable(problems.join("; "))
        } else {
            for p in &problems {
                tracing::warn!(issuer = LOCAL_ISSUER, problem = %p, "a local signing key could not be read");
            }
            KeySource::Static(Arc::new(keys))
        };
        out.insert(
            LOCAL_ISSUER.to_string(),
            Issuer {
                name: LOCAL_ISSUER.to_string(),
                iss: local.url.clone(),
                audiences: local.audiences.clone(),
                algorithms,
                keys: source,
            },
        );
    }
    out
}

#[cfg(test)]
mod tests;
