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

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use arc_swap::ArcSwap;
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, Validation};
use serde_json::{Map, Value};

use crate::bundle::{AuthPolicy, JwtAlgorithm, LOCAL_ISSUER, RouteAuth, SigningAlgorithm};

/// The largest bearer token accepted, in bytes. Access tokens are a few hundred bytes to a
/// few KiB (more with group claims); a bigger one is refused before it is decoded, a key
/// looked up or a signature checked, and it is never stored in [`VerifiedTokens`].
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// The largest `Authorization` header read: a token of [`MAX_TOKEN_BYTES`] with its scheme
/// and surrounding whitespace. A longer header is refused before it is parsed.
pub const MAX_AUTHORIZATION_BYTES: usize = MAX_TOKEN_BYTES + 64;

/// A verifying key and what it may verify.
#[derive(Clone)]
pub struct Key {
    pub kid: Option<String>,
    /// The key's own `alg`, when its JWK names one: a token must then use exactly it.
    pub alg: Option<Algorithm>,
    pub key: DecodingKey,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Key")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

/// The keys of a JWKS document that this gateway can use. Keys meant for encryption
/// (`use: enc`) and keys jsonwebtoken cannot read are left out.
pub fn keys_of(set: &JwkSet) -> Vec<Key> {
    set.keys.iter().filter_map(key_of).collect()
}

fn key_of(jwk: &Jwk) -> Option<Key> {
    if matches!(
        jwk.common.public_key_use,
        Some(jsonwebtoken::jwk::PublicKeyUse::Encryption)
    ) {
        return None;
    }
    let key = DecodingKey::from_jwk(jwk).ok()?;
    if key.family() == AlgorithmFamily::Hmac {
        // A JWKS of symmetric keys would hand out the secret: never a verifier's key here.
        return None;
    }
    Some(Key {
        kid: jwk.common.key_id.clone(),
        alg: jwk
            .common
            .key_algorithm
            .and_then(|a| a.to_string().parse().ok()),
        key,
    })
}

pub fn algorithm(a: JwtAlgorithm) -> Algorithm {
    match a {
        JwtAlgorithm::RS256 => Algorithm::RS256,
        JwtAlgorithm::RS384 => Algorithm::RS384,
        JwtAlgorithm::RS512 => Algorithm::RS512,
        JwtAlgorithm::PS256 => Algorithm::PS256,
        JwtAlgorithm::PS384 => Algorithm::PS384,
        JwtAlgorithm::PS512 => Algorithm::PS512,
        JwtAlgorithm::ES256 => Algorithm::ES256,
        JwtAlgorithm::ES384 => Algorithm::ES384,
        JwtAlgorithm::EdDSA => Algorithm::EdDSA,
    }
}

pub fn signing_algorithm(a: SigningAlgorithm) -> Algorithm {
    match a {
        SigningAlgorithm::RS256 => Algorithm::RS256,
        SigningAlgorithm::ES256 => Algorithm::ES256,
    }
}

/// Fetches a JWKS document. The real one is an HTTP GET; tests count calls.
pub trait JwksFetcher: Send + Sync {
    fn fetch<'a>(
        &'a self,
        url: &'a str,
    ) -> Pin<Box<dyn Future<Output = Result<JwkSet, String>> + Send + 'a>>;
}

#[derive(Debug)]
struct FetchState {
    last_attempt: Option<tokio::time::Instant>,
    last_error: Option<String>,
}

/// A JWKS published at a URL: fetched on first use, refetched when a token names a key it
/// does not have, at most once per `min_interval` however many such tokens arrive (a flood
/// of made-up `kid`s must not become a flood of requests to the issuer).
pub struct RemoteJwks {
    url: String,
    min_interval: std::time::Duration,
    keys: ArcSwap<Vec<Key>>,
    /// Bumped every time `keys` is replaced: cached verifications name the generation they
    /// were made under.
    generation: std::sync::atomic::AtomicU64,
    state: tokio::sync::Mutex<FetchState>,
    fetcher: Arc<dyn JwksFetcher>,
}

impl std::fmt::Debug for RemoteJwks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteJwks")
            .field("url", &self.url)
            .field("keys", &self.keys.load().len())
            .finish_non_exhaustive()
    }
}

impl RemoteJwks {
    pub fn new(
        url: String,
        min_interval: std::time::Duration,
        fetcher: Arc<dyn JwksFetcher>,
    ) -> RemoteJwks {
        RemoteJwks {
            url,
            min_interval,
            keys: ArcSwap::from_pointee(Vec::new()),
            generation: std::sync::atomic::AtomicU64::new(0),
            state: tokio::sync::Mutex::new(FetchState {
                last_attempt: None,
                last_error: None,
            }),
            fetcher,
        }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn keys(&self) -> Arc<Vec<Key>> {
        self.keys.load_full()
    }

    /// How many times the keys have been replaced.
    pub fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Fetches again unless the last attempt was less than `min_interval` ago. Concurrent
    /// callers wait for one fetch. Returns whether the keys were replaced.
    pub async fn refresh(&self) -> bool {
        let mut state = self.state.lock().await;
        let now = tokio::time::Instant::now();
        if state
            .last_attempt
            .is_some_and(|t| now.duration_since(t) < self.min_interval)
        {
            return false;
        }
        state.last_attempt = Some(now);
        match self.fetcher.fetch(&self.url).await {
            Ok(set) => {
                self.keys.store(Arc::new(keys_of(&set)));
                self.generation
                    .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
                state.last_error = None;
                true
            }
            Err(e) => {
                tracing::warn!(jwks_url = %self.url, error = %e, "JWKS fetch failed");
                state.last_error = Some(e);
                false
            }
        }
    }

    /// Why the last fetch failed, if it did.
    pub async fn last_error(&self) -> Option<String> {
        self.state.lock().await.last_error.clone()
    }
}

/// The JWKS cache for `url` among those of the loaded bundles, made with `make` when no
/// loaded bundle uses `url`. Sharing it keeps the keys (and the refetch limit) of a URL that
/// a reload keeps. The map holds its entries weakly: the issuers of the runtimes in service
/// own them, so a URL that no loaded bundle uses any more is dropped. Dead entries are
/// pruned on every call, so the map holds the URLs in use plus, at most until the next
/// bundle is built, those of the bundles just dropped.
pub fn shared_jwks(
    map: &mut HashMap<String, std::sync::Weak<RemoteJwks>>,
    url: &str,
    make: impl FnOnce() -> RemoteJwks,
) -> Arc<RemoteJwks> {
    map.retain(|_, jwks| jwks.strong_count() > 0);
    if let Some(jwks) = map.get(url).and_then(std::sync::Weak::upgrade) {
        return jwks;
    }
    let jwks = Arc::new(make());
    map.insert(url.to_string(), Arc::downgrade(&jwks));
    jwks
}

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
}

impl AuthError {
    fn unauthorized(code: &'static str, description: impl Into<String>) -> AuthError {
        AuthError {
            status: 401,
            code,
            description: description.into(),
            scope: None,
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
    let have = token_scopes(claims);
    let missing: BTreeSet<String> = req
        .scopes
        .iter()
        .filter(|s| !have.contains(s.as_str()))
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
        KeySource::Unavailable(why) => {
            tracing::warn!(issuer = %issuer.name, reason = %why, "cannot verify tokens: issuer keys unavailable");
            Err(AuthError {
                status: 503,
                code: "",
                description: "tokens of this issuer cannot be verified right now".into(),
                scope: None,
            })
        }
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
                tracing::warn!(issuer = %issuer.name, error = %e, "JWKS unavailable");
                return Err(AuthError {
                    status: 503,
                    code: "",
                    description: "tokens of this issuer cannot be verified right now".into(),
                    scope: None,
                });
            }
            Err(unknown())
        }
    }
}

/// The issuers of a bundle's IdP section by name, `local` included when it has keys (its
/// active, next and previous signing keys all verify). `remote` gives the shared cache for
/// a JWKS URL (kept across reloads); `secrets` holds the local signing keys' PEMs.
pub fn issuers_of(
    idp: &crate::bundle::IdpConfig,
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
        let (keys, problems) = crate::idp::verifying_keys(local, secrets);
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
mod tests {
    use super::*;
    use serde_json::json;

    fn issuer(name: &str) -> Issuer {
        Issuer {
            name: name.into(),
            iss: format!("https://{name}.example"),
            audiences: vec!["api".into()],
            algorithms: vec![Algorithm::RS256],
            keys: KeySource::Unavailable("test".into()),
        }
    }

    fn req(issuers: &[&str], scopes: &[&str]) -> Requirement {
        Requirement {
            policy: "p".into(),
            issuers: issuers.iter().map(|s| s.to_string()).collect(),
            audiences: vec![],
            scopes: scopes.iter().map(|s| s.to_string()).collect(),
            required_claims: BTreeMap::new(),
            forward_claims: BTreeMap::new(),
            leeway_secs: 30,
        }
    }

    fn claims(v: Value) -> Map<String, Value> {
        v.as_object().expect("object").clone()
    }

    #[test]
    fn scopes_come_from_scope_or_scp() {
        let c = claims(json!({"scope": "a b", "scp": ["c"]}));
        assert_eq!(token_scopes(&c), BTreeSet::from(["a", "b", "c"]));
    }

    #[test]
    fn requirement_checks_issuer_audience_claims_and_scopes_in_that_order() {
        let i = issuer("partner");
        let ok = claims(json!({"aud": ["other", "api"], "scope": "orders:read", "tenant": "acme"}));
        assert_eq!(
            check_requirement(&ok, &i, &req(&["partner"], &["orders:read"])),
            Ok(())
        );
        assert!(matches!(
            check_requirement(&ok, &i, &req(&["local"], &[])),
            Err(Unmet::NotForUs(_))
        ));
        let wrong_aud = claims(json!({"aud": "billing", "scope": "orders:read"}));
        assert!(matches!(
            check_requirement(&wrong_aud, &i, &req(&["partner"], &[])),
            Err(Unmet::NotForUs(_))
        ));
        let mut r = req(&["partner"], &["orders:read", "orders:write"]);
        assert_eq!(
            check_requirement(&ok, &i, &r),
            Err(Unmet::Scopes(BTreeSet::from(["orders:write".to_string()])))
        );
        r.scopes.clear();
        r.required_claims
            .insert("tenant".into(), vec!["globex".into()]);
        assert!(matches!(
            check_requirement(&ok, &i, &r),
            Err(Unmet::Claim(_))
        ));
        r.required_claims.insert("tenant".into(), vec![]);
        assert_eq!(check_requirement(&ok, &i, &r), Ok(()));
        r.required_claims.insert("region".into(), vec![]);
        assert!(matches!(
            check_requirement(&ok, &i, &r),
            Err(Unmet::Claim(_))
        ));
        // A policy's own audiences replace the issuer's.
        let mut own = req(&["partner"], &[]);
        own.audiences = vec!["billing".into()];
        assert_eq!(check_requirement(&wrong_aud, &i, &own), Ok(()));
    }

    #[test]
    fn required_claims_match_only_exact_strings() {
        let i = issuer("partner");
        let mut r = req(&["partner"], &[]);
        r.required_claims.insert(
            "tenant".into(),
            vec!["acme".into(), "1".into(), "true".into()],
        );
        let with = |tenant: Value| claims(json!({"aud": "api", "tenant": tenant}));
        assert_eq!(check_requirement(&with(json!("acme")), &i, &r), Ok(()));
        for not_a_string in [
            json!(["acme"]),
            json!(["other", "acme"]),
            json!({"acme": true}),
            json!(1),
            json!(true),
            Value::Null,
            json!("ACME"),
        ] {
            assert!(
                matches!(
                    check_requirement(&with(not_a_string.clone()), &i, &r),
                    Err(Unmet::Claim(_))
                ),
                "{not_a_string} met a string requirement"
            );
        }
        // Present (an empty list of values): any scalar, but no list, object or null.
        r.required_claims.insert("tenant".into(), vec![]);
        for scalar in [json!("x"), json!(""), json!(7), json!(false)] {
            assert_eq!(check_requirement(&with(scalar), &i, &r), Ok(()));
        }
        for other in [json!([]), json!(["x"]), json!({}), Value::Null] {
            assert!(
                matches!(
                    check_requirement(&with(other.clone()), &i, &r),
                    Err(Unmet::Claim(_))
                ),
                "{other} counted as present"
            );
        }
    }

    #[test]
    fn only_scalar_claims_are_forwarded() {
        let i = issuer("partner");
        let mut r = req(&["partner"], &[]);
        for (claim, header) in [
            ("tenant", "x-tenant"),
            ("groups", "x-groups"),
            ("org", "x-org"),
            ("gone", "x-gone"),
            ("level", "x-level"),
            ("admin", "x-admin"),
            ("absent", "x-absent"),
        ] {
            r.forward_claims.insert(claim.into(), header.into());
        }
        let c = claims(json!({
            "aud": "api", "sub": "alice", "tenant": "acme", "groups": ["b", "a"],
            "org": {"id": "x"}, "gone": null, "level": 3, "admin": false,
        }));
        let p = evaluate(&c, &i, &[r]).expect("accepted");
        let forwarded: BTreeMap<&str, &str> = p
            .forward
            .iter()
            .map(|(h, v)| (h.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            forwarded,
            BTreeMap::from([("x-admin", "false"), ("x-level", "3"), ("x-tenant", "acme")])
        );
    }

    #[test]
    fn refusals_never_quote_claim_values() {
        let i = issuer("partner");
        let c = claims(json!({"aud": "api", "tenant": "secret-tenant-name"}));
        let mut r = req(&["partner"], &[]);
        r.required_claims
            .insert("tenant".into(), vec!["acme".into()]);
        let Err(Unmet::Claim(msg)) = check_requirement(&c, &i, &r) else {
            panic!("expected a claim refusal")
        };
        assert!(!msg.contains("secret-tenant-name"), "{msg}");
    }

    #[test]
    fn www_authenticate_follows_rfc_6750() {
        let e = AuthError::unauthorized("", "a bearer token is required");
        assert_eq!(
            e.www_authenticate().as_deref(),
            Some("Bearer realm=\"fleetgate\"")
        );
        let e = AuthError {
            status: 403,
            code: "insufficient_scope",
            description: "missing scope \"x\"".into(),
            scope: Some("x y".into()),
        };
        assert_eq!(
            e.www_authenticate().as_deref(),
            Some(
                "Bearer realm=\"fleetgate\", error=\"insufficient_scope\", error_description=\"missing scope 'x'\", scope=\"x y\""
            )
        );
    }

    // The verified-token cache, with real RS256 tokens signed by the test keys in
    // tests/fixtures/keys.

    fn fixture(name: &str) -> String {
        let path = format!(
            "{}/../tests/fixtures/keys/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    fn jwks(names: &[&str]) -> JwkSet {
        let all: BTreeMap<String, Value> =
            serde_json::from_str(&fixture("jwks.json")).expect("jwks.json");
        serde_json::from_value(json!({
            "keys": names.iter().map(|n| all[*n].clone()).collect::<Vec<_>>()
        }))
        .expect("a JWKS")
    }

    fn sign(claims: Value) -> String {
        let key = jsonwebtoken::EncodingKey::from_rsa_pem(fixture("issuer-rsa.pem").as_bytes())
            .expect("issuer-rsa.pem");
        let mut header = jsonwebtoken::Header::new(Algorithm::RS256);
        header.kid = Some("issuer-rsa".into());
        jsonwebtoken::encode(&header, &claims, &key).expect("signed")
    }

    fn bearer_of(token: &str) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        h.insert(
            http::header::AUTHORIZATION,
            format!("Bearer {token}").parse().expect("header"),
        );
        h
    }

    fn static_issuer(name: &str, key_names: &[&str]) -> Issuer {
        Issuer {
            name: name.into(),
            iss: "https://sso.example".into(),
            audiences: vec!["api".into()],
            algorithms: vec![Algorithm::RS256],
            keys: KeySource::Static(Arc::new(keys_of(&jwks(key_names)))),
        }
    }

    fn now() -> u64 {
        jsonwebtoken::get_current_timestamp()
    }

    fn token_for(exp: u64) -> String {
        sign(json!({"iss": "https://sso.example", "aud": "api", "sub": "alice", "exp": exp}))
    }

    #[test]
    fn token_times_follow_jsonwebtoken_rules() {
        let t = 1_000_000;
        assert!(check_times(t, None, 0, t).is_ok());
        assert!(check_times(t - 1, None, 0, t).is_err());
        assert!(check_times(t - 30, None, 30, t).is_ok());
        assert!(check_times(t - 31, None, 30, t).is_err());
        assert!(check_times(t + 60, Some(t + 30), 30, t).is_ok());
        let e = check_times(t + 60, Some(t + 31), 30, t).expect_err("not yet");
        assert_eq!(
            (e.status, e.description.as_str()),
            (401, "the token is not valid yet")
        );
        let e = check_times(t - 100, None, 30, t).expect_err("expired");
        assert_eq!(e.description, "the token has expired");
    }

    #[tokio::test]
    async fn a_token_is_verified_once_then_served_from_the_cache() {
        let issuers = HashMap::from([("sso".to_string(), static_issuer("sso", &["issuer-rsa"]))]);
        let reqs = [req(&["sso"], &[])];
        let cache = VerifiedTokens::new(16);
        let token = token_for(now() + 600);
        for _ in 0..3 {
            let p = authenticate(&bearer_of(&token), &reqs, &issuers, &cache)
                .await
                .expect("accepted");
            assert_eq!(p.subject.as_deref(), Some("alice"));
        }
        assert_eq!((cache.len(), cache.hits()), (1, 2));

        // Turned off: nothing is remembered, everything still works.
        let off = VerifiedTokens::new(0);
        authenticate(&bearer_of(&token), &reqs, &issuers, &off)
            .await
            .expect("accepted");
        assert_eq!((off.len(), off.hits()), (0, 0));

        // Refused tokens are never stored.
        let cache = VerifiedTokens::new(16);
        let expired = token_for(now() - 3600);
        for _ in 0..2 {
            let e = authenticate(&bearer_of(&expired), &reqs, &issuers, &cache)
                .await
                .expect_err("expired");
            assert_eq!(e.description, "the token has expired");
        }
        assert!(cache.is_empty());
    }

    #[tokio::test]
    async fn a_cached_token_still_expires_and_keeps_its_policy_checks() {
        let issuers = HashMap::from([("sso".to_string(), static_issuer("sso", &["issuer-rsa"]))]);
        let cache = VerifiedTokens::new(16);
        let exp = now() + 60;
        let token = token_for(exp);
        let reqs = [req(&["sso"], &[])];
        authenticate(&bearer_of(&token), &reqs, &issuers, &cache)
            .await
            .expect("accepted");
        // Later, past exp and the 30 s leeway: the cached entry is refused like a fresh one.
        let e = authenticate_at(&bearer_of(&token), &reqs, &issuers, &cache, exp + 31)
            .await
            .expect_err("expired by now");
        assert_eq!(
            (e.status, e.description.as_str()),
            (401, "the token has expired")
        );
        assert_eq!(cache.hits(), 1);
        // A route that needs a scope the token lacks: 403 from the cached claims.
        let scoped = [req(&["sso"], &["orders:write"])];
        let e = authenticate(&bearer_of(&token), &scoped, &issuers, &cache)
            .await
            .expect_err("missing scope");
        assert_eq!(e.status, 403);
    }

    #[tokio::test]
    async fn a_cached_token_counts_only_for_the_issuer_that_verified_it() {
        // Two trusted issuers claim the same `iss`; only "real" holds the signing key.
        let issuers = HashMap::from([
            ("real".to_string(), static_issuer("real", &["issuer-rsa"])),
            ("other".to_string(), static_issuer("other", &["other-rsa"])),
        ]);
        let cache = VerifiedTokens::new(16);
        let token = token_for(now() + 600);
        authenticate(&bearer_of(&token), &[req(&["real"], &[])], &issuers, &cache)
            .await
            .expect("accepted by real");
        let e = authenticate(
            &bearer_of(&token),
            &[req(&["other"], &[])],
            &issuers,
            &cache,
        )
        .await
        .expect_err("other has no such key");
        assert_eq!(e.status, 401);
        assert_eq!(e.description, "the token's signing key is unknown");
    }

    /// Serves `jwks(["issuer-rsa"])` and counts the fetches.
    #[derive(Default)]
    struct Counting(std::sync::atomic::AtomicUsize);

    impl JwksFetcher for Counting {
        fn fetch<'a>(
            &'a self,
            _url: &'a str,
        ) -> Pin<Box<dyn Future<Output = Result<JwkSet, String>> + Send + 'a>> {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Box::pin(async move { Ok(jwks(&["issuer-rsa"])) })
        }
    }

    /// An issuer `sso` whose keys come from a JWKS URL, and the fetcher's call counter: a
    /// refusal that leaves it at 0 came before any key was looked up.
    fn remote_issuer() -> (HashMap<String, Issuer>, Arc<Counting>) {
        let fetcher = Arc::new(Counting::default());
        let mut issuer = static_issuer("sso", &[]);
        issuer.keys = KeySource::Remote(Arc::new(RemoteJwks::new(
            "https://sso.example/jwks".into(),
            std::time::Duration::ZERO,
            fetcher.clone(),
        )));
        (HashMap::from([("sso".to_string(), issuer)]), fetcher)
    }

    fn fetches(f: &Counting) -> usize {
        f.0.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn sign_with(header: jsonwebtoken::Header, claims: Value) -> String {
        let key = jsonwebtoken::EncodingKey::from_rsa_pem(fixture("issuer-rsa.pem").as_bytes())
            .expect("issuer-rsa.pem");
        jsonwebtoken::encode(&header, &claims, &key).expect("signed")
    }

    fn rs256() -> jsonwebtoken::Header {
        let mut header = jsonwebtoken::Header::new(Algorithm::RS256);
        header.kid = Some("issuer-rsa".into());
        header
    }

    /// A well-formed token with a `pad` claim of `n` bytes.
    fn padded(n: usize) -> String {
        sign(
            json!({"iss": "https://sso.example", "aud": "api", "sub": "alice",
                    "exp": now() + 600, "pad": "x".repeat(n)}),
        )
    }

    #[tokio::test]
    async fn a_token_with_crit_is_refused_before_any_key_is_looked_up() {
        let (issuers, fetcher) = remote_issuer();
        let reqs = [req(&["sso"], &[])];
        let cache = VerifiedTokens::new(16);
        let good = token_for(now() + 600);
        let claims = json!({"iss": "https://sso.example", "aud": "api", "sub": "alice",
                            "exp": now() + 600});

        let mut header = rs256();
        header.crit = Some(vec!["x-unknown".into()]);
        header.extras.insert("x-unknown", "must-be-understood");
        let critical = sign_with(header, claims.clone());
        let e = authenticate(&bearer_of(&critical), &reqs, &issuers, &cache)
            .await
            .expect_err("crit");
        assert_eq!((e.status, e.code), (401, "invalid_token"));
        assert!(e.description.contains("crit"), "{}", e.description);
        assert!(!e.description.contains("x-unknown"), "{}", e.description);

        // An empty `crit` is forbidden by the RFC; other types are malformed. jsonwebtoken
        // cannot write these headers, so they are put together by hand (signed all the same).
        for crit in [json!([]), json!("x-unknown"), json!([1]), Value::Null] {
            let header = json!({"alg": "RS256", "kid": "issuer-rsa", "crit": crit});
            let token = with_header(&good, &header);
            let e = authenticate(&bearer_of(&token), &reqs, &issuers, &cache)
                .await
                .expect_err("malformed crit");
            assert_eq!((e.status, e.code), (401, "invalid_token"), "{crit}");
            assert!(e.description.contains("crit"), "{crit}: {}", e.description);
        }
        assert_eq!(fetches(&fetcher), 0, "no key lookup for a refused token");
        assert!(cache.is_empty());

        // The same token without `crit` is fine.
        authenticate(&bearer_of(&good), &reqs, &issuers, &cache)
            .await
            .expect("accepted");
        assert_eq!(fetches(&fetcher), 1);
    }

    /// `token` with its header segment replaced by `header` (the signature no longer fits,
    /// which does not matter to checks made before the signature).
    fn with_header(token: &str, header: &Value) -> String {
        use base64::Engine as _;
        let (_, rest) = token.split_once('.').expect("a JWT");
        let encoded = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(serde_json::to_vec(header).expect("JSON"));
        format!("{encoded}.{rest}")
    }

    #[tokio::test]
    async fn an_oversized_token_is_refused_before_any_key_is_looked_up() {
        let (issuers, fetcher) = remote_issuer();
        let reqs = [req(&["sso"], &[])];
        let cache = VerifiedTokens::new(16);
        for size in [MAX_TOKEN_BYTES, 270 * 1024] {
            let token = padded(size);
            assert!(token.len() > MAX_TOKEN_BYTES);
            let e = authenticate(&bearer_of(&token), &reqs, &issuers, &cache)
                .await
                .expect_err("too large");
            assert_eq!((e.status, e.code), (401, "invalid_token"));
            assert!(e.description.contains("too large"), "{}", e.description);
        }
        // Padding with whitespace inside the header does not get a big token past the cap.
        let mut h = http::HeaderMap::new();
        h.insert(
            http::header::AUTHORIZATION,
            format!("Bearer {}  ", "a".repeat(MAX_TOKEN_BYTES + 1))
                .parse()
                .expect("header"),
        );
        let e = authenticate(&h, &reqs, &issuers, &cache)
            .await
            .expect_err("too large");
        assert!(e.description.contains("too large"), "{}", e.description);
        assert_eq!(fetches(&fetcher), 0, "no key lookup for an oversized token");
        assert!(cache.is_empty());

        // The largest token that fits is verified as usual.
        let mut n = MAX_TOKEN_BYTES * 3 / 4;
        let fits = loop {
            let t = padded(n);
            if t.len() > MAX_TOKEN_BYTES {
                n -= 1;
                continue;
            }
            break t;
        };
        assert!(fits.len() > MAX_TOKEN_BYTES - 8, "{}", fits.len());
        authenticate(&bearer_of(&fits), &reqs, &issuers, &cache)
            .await
            .expect("accepted");
        assert_eq!(fetches(&fetcher), 1);
    }

    #[tokio::test]
    async fn two_authorization_headers_are_refused() {
        let issuers = HashMap::from([("sso".to_string(), static_issuer("sso", &["issuer-rsa"]))]);
        let token = token_for(now() + 600);
        let mut h = bearer_of(&token);
        h.append(
            http::header::AUTHORIZATION,
            format!("Bearer {token}").parse().expect("header"),
        );
        let e = authenticate(
            &h,
            &[req(&["sso"], &[])],
            &issuers,
            &VerifiedTokens::new(16),
        )
        .await
        .expect_err("two headers");
        assert_eq!((e.status, e.code), (401, "invalid_request"));
    }

    #[test]
    fn jwks_caches_are_shared_while_a_bundle_uses_them_and_dropped_after() {
        let mut map = HashMap::new();
        let fetcher: Arc<dyn JwksFetcher> = Arc::new(Counting::default());
        let make = |url: &str| {
            let url = url.to_string();
            let fetcher = fetcher.clone();
            move || RemoteJwks::new(url, std::time::Duration::ZERO, fetcher)
        };
        let a = shared_jwks(&mut map, "https://a/jwks", make("https://a/jwks"));
        let a2 = shared_jwks(&mut map, "https://a/jwks", make("https://a/jwks"));
        assert!(Arc::ptr_eq(&a, &a2), "one cache per URL while in use");
        // Bundles come and go, each with a new URL: only the URLs still in use are kept.
        for n in 0..100 {
            let url = format!("https://issuer-{n}/jwks");
            let held = shared_jwks(&mut map, &url, make(&url));
            assert!(map.len() <= 2, "{} entries", map.len());
            drop(held);
        }
        assert!(map.contains_key("https://a/jwks"));
        drop((a, a2));
        let b = shared_jwks(&mut map, "https://b/jwks", make("https://b/jwks"));
        assert_eq!(map.keys().collect::<Vec<_>>(), ["https://b/jwks"]);
        // A URL used again after it was dropped gets a fresh cache.
        drop(b);
        let b2 = shared_jwks(&mut map, "https://b/jwks", make("https://b/jwks"));
        assert_eq!((b2.generation(), map.len()), (0, 1));
    }

    struct Rotating(std::sync::Mutex<JwkSet>);

    impl JwksFetcher for Rotating {
        fn fetch<'a>(
            &'a self,
            _url: &'a str,
        ) -> Pin<Box<dyn Future<Output = Result<JwkSet, String>> + Send + 'a>> {
            let set = self.0.lock().expect("lock").clone();
            Box::pin(async move { Ok(set) })
        }
    }

    #[tokio::test]
    async fn a_refetched_jwks_invalidates_cached_tokens() {
        let fetcher = Arc::new(Rotating(std::sync::Mutex::new(jwks(&["issuer-rsa"]))));
        let remote = Arc::new(RemoteJwks::new(
            "https://sso.example/jwks".into(),
            std::time::Duration::ZERO,
            fetcher.clone(),
        ));
        let mut issuer = static_issuer("sso", &[]);
        issuer.keys = KeySource::Remote(remote.clone());
        let issuers = HashMap::from([("sso".to_string(), issuer)]);
        let reqs = [req(&["sso"], &[])];
        let cache = VerifiedTokens::new(16);
        let token = token_for(now() + 600);
        authenticate(&bearer_of(&token), &reqs, &issuers, &cache)
            .await
            .expect("accepted");
        authenticate(&bearer_of(&token), &reqs, &issuers, &cache)
            .await
            .expect("accepted from the cache");
        assert_eq!(cache.hits(), 1);

        // The issuer retires the key; the gateway refetches (another token's unknown kid).
        *fetcher.0.lock().expect("lock") = jwks(&["other-rsa"]);
        assert!(remote.refresh().await);
        let e = authenticate(&bearer_of(&token), &reqs, &issuers, &cache)
            .await
            .expect_err("its key is gone");
        assert_eq!(e.description, "the token's signing key is unknown");
    }
}
