//! The embedded identity provider: the account's own OAuth 2.0 authorization server for
//! machine clients, configured by the bundle's `idp.issuer`, `idp.clients` and `idp.scopes`.
//!
//! - `GET /.well-known/openid-configuration` (and RFC 8414's
//!   `/.well-known/oauth-authorization-server`): the discovery document.
//! - `GET /oauth2/jwks`: the public keys: `active`, `next` and `previous`, so a token signed
//!   by any key of a rotation verifies everywhere during the overlap.
//! - `POST /oauth2/token`: the `client_credentials` grant (RFC 6749 §4.4), the client
//!   authenticated by `client_secret_basic` or `client_secret_post` against its argon2 hash.
//!   Tokens are RFC 9068 JWT access tokens signed (RS256 or ES256) with the active key.
//!
//! These paths are answered on every host of the data-plane listener, before routes; a
//! route that would shadow one is a compile error. The account's gateway trusts its own
//! issuer as `local` with no further configuration (see [`crate::auth::issuers_of`]).
//!
//! The request parsing, the scope decision and the claims are pure functions with their
//! own tests. argon2 verification runs after the per-IP and per-client rate limits on a
//! fixed pool of worker threads (one per core, each reusing one memory buffer) fed by a
//! bounded queue, so guessing secrets is slow, cannot starve the data plane and cannot grow
//! memory. Every client of an IdP has the same argon2 parameters (compile and build check
//! it) and an unknown client id is checked against a dummy hash with those parameters, so
//! it costs what a wrong secret does (no client enumeration by timing). Secrets and tokens
//! are never logged, nor a client id that names no client of the bundle (the caller's text,
//! which may be anything); the caller's address only as `--log-client-address` allows.
//!
//! Imports [`crate::keys`], [`crate::logging`], [`crate::ratelimit`] and [`crate::secrets`]
//! of this crate.

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use http::header::{self, HeaderValue};
use http::{Method as HttpMethod, StatusCode};
use jsonwebtoken::EncodingKey;
use serde_json::{Value, json};

use crate::keys::key_material;
use crate::logging::RequestLog;
use crate::ratelimit::{BoundedLimiter, Decision};
use crate::secrets::Resolved;
use fleetgate_bundle::bundle::{
    AccountInfo, ClientSecret, IdpConfig, LocalIssuer, Rate, SigningAlgorithm,
};

pub use fleetgate_bundle::idp::{
    Argon2Cost, DISCOVERY, JWKS, MAX_ARGON2_M_COST, MAX_ARGON2_P_COST, MAX_ARGON2_T_COST, METADATA,
    PATHS, TOKEN, check_cost,
};

/// Largest token request body: a client id, a secret and some scopes.
/// How long the token endpoint waits for a request's body.
const TOKEN_BODY_TIMEOUT: Duration = Duration::from_secs(10);

const MAX_TOKEN_REQUEST: usize = 16 * 1024;

/// The most client ids the per-client limiter keeps a bucket for: ids are the caller's to
/// make up, so beyond this new ones share one bucket (see [`BoundedLimiter`]).
pub const MAX_CLIENT_KEYS: usize = 4096;

/// The most caller addresses the per-IP limiter keeps a bucket for.
pub const MAX_IP_KEYS: usize = 16384;

/// Defaults of `tokenRateLimit`.
pub fn default_per_client() -> Rate {
    Rate {
        requests: 10,
        per: fleetgate_bundle::duration::Duration::from_secs(1),
        burst: Some(20),
    }
}

pub fn default_per_ip() -> Rate {
    Rate {
        requests: 20,
        per: fleetgate_bundle::duration::Duration::from_secs(1),
        burst: Some(40),
    }
}

/// Which IdP endpoint a path is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Discovery,
    Jwks,
    Token,
}

impl Endpoint {
    pub fn of(path: &str) -> Option<Endpoint> {
        match path {
            DISCOVERY | METADATA => Some(Endpoint::Discovery),
            JWKS => Some(Endpoint::Jwks),
            TOKEN => Some(Endpoint::Token),
            _ => None,
        }
    }

    /// The name in metrics and access logs, where routes have theirs.
    pub fn name(self) -> &'static str {
        match self {
            Endpoint::Discovery => "idp.discovery",
            Endpoint::Jwks => "idp.jwks",
            Endpoint::Token => "idp.token",
        }
    }
}

fn alg_name(a: SigningAlgorithm) -> &'static str {
    match a {
        SigningAlgorithm::RS256 => "RS256",
        SigningAlgorithm::ES256 => "ES256",
    }
}

/// The active key, ready to sign.
struct Signer {
    kid: String,
    alg: SigningAlgorithm,
    key: EncodingKey,
}

/// A client as the token endpoint checks it.
struct ClientEntry {
    /// The argon2 hash, or why it cannot be had.
    hash: Result<Arc<PhcHash>, String>,
    scopes: Vec<String>,
    ttl: Duration,
}

/// The IdP of one loaded bundle.
pub struct Idp {
    issuer: String,
    audiences: Vec<String>,
    account: AccountInfo,
    signer: Result<Signer, String>,
    jwks: Value,
    discovery: Value,
    clients: HashMap<String, ClientEntry>,
    /// Verified for unknown client ids: the parameters of the clients' hashes.
    dummy: Arc<PhcHash>,
    pub per_client: BoundedLimiter,
    pub per_ip: BoundedLimiter,
}

impl std::fmt::Debug for Idp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Idp")
            .field("issuer", &self.issuer)
            .field("clients", &self.clients.keys().collect::<BTreeSet<_>>())
            .finish_non_exhaustive()
    }
}

impl Idp {
    /// The ids of this IdP's clients (the only `client` label values besides `-`).
    pub fn client_ids(&self) -> impl Iterator<Item = &str> {
        self.clients.keys().map(String::as_str)
    }

    /// The IdP of `idp` (None without an issuer). Keys and client hashes come from
    /// `secrets`; what cannot be read is reported in the warnings and makes that key or
    /// client unavailable, not the bundle. Rate limiters with an unchanged configuration
    /// are carried over from `previous`.
    pub fn build(
        idp: &IdpConfig,
        account: &AccountInfo,
        secrets: &Resolved,
        previous: Option<&Idp>,
        warnings: &mut Vec<String>,
    ) -> Option<Idp> {
        let issuer = idp.issuer.as_ref()?;
        let mut keys = Vec::new();
        let mut signer = Err(String::new());
        for (role, k) in issuer.signing_keys.all() {
            let material = secrets
                .get(&k.private_key)
                .and_then(|pem| key_material(k.algorithm, pem));
            match material {
                Ok(m) => {
                    let mut jwk = m.public_jwk.clone();
                    jwk.insert("kid".into(), k.kid.clone().into());
                    jwk.insert("alg".into(), alg_name(k.algorithm).into());
                    jwk.insert("use".into(), "sig".into());
                    keys.push(Value::Object(jwk));
                    if role == "active" {
                        signer = Ok(Signer {
                            kid: k.kid.clone(),
                            alg: k.algorithm,
                            key: m.encoding,
                        });
                    }
                }
                Err(e) => {
                    let why = format!("{role} signing key {}: {e}", k.kid);
                    warnings.push(format!("identity provider: {why}"));
                    if role == "active" {
                        signer = Err(why);
                    }
                }
            }
        }
        let mut clients: Vec<(String, ClientEntry)> = idp
            .clients
            .iter()
            .map(|c| {
                let hash = match &c.secret {
                    ClientSecret::Argon2Hash(h) => PhcHash::parse(h.expose()),
                    ClientSecret::Ref(r) => secrets
                        .get(r)
                        .and_then(|h| PhcHash::parse(h).map_err(|e| format!("{r}: {e}"))),
                };
                let ttl = c.token_ttl.unwrap_or(issuer.token_ttl).as_std();
                (
                    c.id.clone(),
                    ClientEntry {
                        hash: hash.map(Arc::new),
                        scopes: c.scopes.clone(),
                        ttl,
                    },
                )
            })
            .collect();
        // One parameter set per IdP: compile checks the inline hashes; a hash read at run
        // time with other parameters than the first usable client's is refused, or an
        // unknown client id would cost less than that client's wrong secret.
        let model = clients
            .iter()
            .find_map(|(_, c)| c.hash.as_ref().ok().cloned());
        if let Some(model) = &model {
            for (_, c) in &mut clients {
                if let Ok(h) = &c.hash
                    && h.cost() != model.cost()
                {
                    c.hash = Err(format!(
                        "its argon2 parameters ({}) differ from the other clients' ({}); \
                         every client of the IdP needs the same",
                        h.cost(),
                        model.cost()
                    ));
                }
            }
        }
        for (id, c) in &clients {
            if let Err(e) = &c.hash {
                warnings.push(format!("identity provider: client {id}: {e}"));
            }
        }
        let dummy = match model {
            Some(model) => PhcHash::dummy(&model),
            None => PhcHash::default_dummy(),
        };
        let limits = issuer.token_rate_limit.clone().unwrap_or_default();
        let limiter = |rate: Option<Rate>,
                       default: fn() -> Rate,
                       max_keys: usize,
                       old: Option<&BoundedLimiter>| {
            let config = rate.unwrap_or_else(default).as_rate_limit();
            match old {
                Some(l) if l.config == config && l.max_keys() == max_keys => l.clone(),
                _ => BoundedLimiter::new(&config, max_keys),
            }
        };
        Some(Idp {
            issuer: issuer.url.clone(),
            audiences: issuer.audiences.clone(),
            account: account.clone(),
            jwks: json!({ "keys": keys }),
            discovery: discovery(issuer, idp),
            signer,
            clients: clients.into_iter().collect(),
            dummy: Arc::new(dummy),
            per_client: limiter(
                limits.per_client,
                default_per_client,
                MAX_CLIENT_KEYS,
                previous.map(|p| &p.per_client),
            ),
            per_ip: limiter(
                limits.per_ip,
                default_per_ip,
                MAX_IP_KEYS,
                previous.map(|p| &p.per_ip),
            ),
        })
    }

    pub fn housekeeping(&self) {
        self.per_client.forget_idle();
        self.per_ip.forget_idle();
    }
}

fn endpoint_url(issuer: &str, path: &str) -> String {
    format!("{}{path}", issuer.trim_end_matches('/'))
}

/// The discovery document (OpenID Connect Discovery 1.0 / RFC 8414) of `issuer`.
pub fn discovery(issuer: &LocalIssuer, idp: &IdpConfig) -> Value {
    let mut algs: Vec<&str> = issuer
        .signing_keys
        .all()
        .map(|(_, k)| alg_name(k.algorithm))
        .collect();
    algs.sort_unstable();
    algs.dedup();
    json!({
        "issuer": issuer.url,
        "jwks_uri": endpoint_url(&issuer.url, JWKS),
        "token_endpoint": endpoint_url(&issuer.url, TOKEN),
        "grant_types_supported": ["client_credentials"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "response_types_supported": ["token"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": algs,
        "token_endpoint_auth_signing_alg_values_supported": algs,
        "scopes_supported": idp.scopes.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
        "claims_supported": ["iss", "sub", "aud", "exp", "iat", "nbf", "jti", "client_id", "scope", "tenant", "account", "account_id"],
    })
}

/// What one token request came to, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenResult {
    Issued,
    Refused(&'static str),
}

fn oauth_response(e: &OAuthError, issuer: &str) -> Response {
    let mut resp = (
        e.status,
        axum::Json(json!({"error": e.code, "error_description": e.description})),
    )
        .into_response();
    let h = resp.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    if e.challenge
        && let Ok(v) =
            HeaderValue::from_str(&format!("Basic realm=\"{issuer}\", charset=\"UTF-8\""))
    {
        h.insert(header::WWW_AUTHENTICATE, v);
    }
    resp
}

fn limited(
    decision: &Decision,
    policy: &HeaderValue,
    what: &str,
    issuer: &str,
) -> Option<Response> {
    let Decision::Limited { retry_after, .. } = decision else {
        return None;
    };
    let e = OAuthError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "too_many_requests",
        format!("too many token requests {what}; retry in {retry_after} s"),
    );
    let mut resp = oauth_response(&e, issuer);
    decision.headers(policy, resp.headers_mut());
    Some(resp)
}

fn public_json(value: &Value, max_age: u32) -> Response {
    let mut resp = axum::Json(value.clone()).into_response();
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&format!("public, max-age={max_age}")) {
        h.insert(header::CACHE_CONTROL, v);
    }
    h.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    resp
}

fn random_id() -> String {
    format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..))
}

/// Answers one IdP request from `client_ip`; its log lines name the request as `log` says.
/// Returns the response and, for the token endpoint, the client (when it is a known one)
/// and the result, for metrics.
pub async fn serve(
    idp: &Idp,
    endpoint: Endpoint,
    verifier: &Verifier,
    client_ip: IpAddr,
    log: &RequestLog<'_>,
    req: axum::extract::Request,
) -> (Response, Option<(String, TokenResult)>) {
    let method = req.method().clone();
    match endpoint {
        Endpoint::Discovery | Endpoint::Jwks => {
            if method != HttpMethod::GET && method != HttpMethod::HEAD {
                return (method_not_allowed("GET, HEAD"), None);
            }
            let doc = if endpoint == Endpoint::Jwks {
                &idp.jwks
            } else {
                &idp.discovery
            };
            // Verifiers cache the JWKS; a short max-age lets a `next` key published by a
            // new bundle reach them well before it becomes active.
            (public_json(doc, 300), None)
        }
        Endpoint::Token => {
            if method != HttpMethod::POST {
                return (method_not_allowed("POST"), None);
            }
            let (resp, client, result) = token(idp, verifier, client_ip, log, req).await;
            (resp, Some((client, result)))
        }
    }
}

fn method_not_allowed(allow: &'static str) -> Response {
    let mut resp = (
        StatusCode::METHOD_NOT_ALLOWED,
        axum::Json(
            json!({"error": "invalid_request", "error_description": format!("use {allow}")}),
        ),
    )
        .into_response();
    resp.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    resp
}

async fn token(
    idp: &Idp,
    verifier: &Verifier,
    client_ip: IpAddr,
    log: &RequestLog<'_>,
    req: axum::extract::Request,
) -> (Response, String, TokenResult) {
    let refuse = |e: OAuthError, client: String| {
        let code = e.code;
        (
            oauth_response(&e, &idp.issuer),
            client,
            TokenResult::Refused(code),
        )
    };
    let ip_decision = idp.per_ip.check(&format!("ip:{client_ip}"));
    if let Some(resp) = limited(
        &ip_decision,
        idp.per_ip.policy_value(),
        "from this address",
        &idp.issuer,
    ) {
        return (resp, "-".into(), TokenResult::Refused("too_many_requests"));
    }
    let (parts, body) = req.into_parts();
    // A body that never arrives must not hold the connection: the request head's timeouts
    // no longer apply once the head is read.
    let read = tokio::time::timeout(
        TOKEN_BODY_TIMEOUT,
        axum::body::to_bytes(Body::new(body), MAX_TOKEN_REQUEST),
    );
    let body = match read.await {
        Ok(Ok(b)) => b,
        Err(_) => {
            return refuse(
                OAuthError::new(
                    StatusCode::REQUEST_TIMEOUT,
                    "invalid_request",
                    "the request body did not arrive in time",
                ),
                "-".into(),
            );
        }
        Ok(Err(_)) => {
            return refuse(
                OAuthError::invalid_request(format!(
                    "the request body is over {MAX_TOKEN_REQUEST} bytes or could not be read"
                )),
                "-".into(),
            );
        }
    };
    let request = match parse_token_request(&parts.headers, &body) {
        Ok(r) => r,
        Err(e) => return refuse(e, "-".into()),
    };
    let client = idp.clients.get(&request.client_id);
    // Metrics name known clients only: made-up ids must not make new series.
    let label = if client.is_some() {
        request.client_id.clone()
    } else {
        "-".into()
    };
    let client_decision = idp
        .per_client
        .check(&format!("client:{}", request.client_id));
    if let Some(resp) = limited(
        &client_decision,
        idp.per_client.policy_value(),
        "for this client",
        &idp.issuer,
    ) {
        return (resp, label, TokenResult::Refused("too_many_requests"));
    }
    let basic = request.method == AuthMethod::Basic;
    let hash = match client.map(|c| &c.hash) {
        Some(Ok(h)) => h.clone(),
        Some(Err(why)) => {
            tracing::error!(
                request_id = log.request_id,
                trace_id = log.trace_id,
                client = log.client(),
                client_id = %request.client_id,
                reason = %why,
                "token refused: the client's secret hash is unavailable"
            );
            return refuse(
                OAuthError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "temporarily_unavailable",
                    "this client cannot be authenticated right now",
                ),
                label,
            );
        }
        None => idp.dummy.clone(),
    };
    let matched = match verifier.verify(hash, request.client_secret.clone()).await {
        Ok(m) => m,
        Err(e) => return refuse(e, label),
    };
    let Some(client) = client.filter(|_| matched) else {
        // An unknown id is the caller's text (an email, a token pasted in the wrong field):
        // `label` names known clients only.
        tracing::info!(
            request_id = log.request_id,
            trace_id = log.trace_id,
            client = log.client(),
            client_id = %label,
            "token refused: client authentication failed"
        );
        return refuse(OAuthError::invalid_client(basic), label);
    };
    let scopes = match grant_scopes(request.scope.as_deref(), &client.scopes) {
        Ok(s) => s,
        Err(e) => return refuse(e, label),
    };
    let signer = match &idp.signer {
        Ok(s) => s,
        Err(why) => {
            tracing::error!(
                request_id = log.request_id,
                trace_id = log.trace_id,
                client = log.client(),
                client_id = %request.client_id,
                reason = %why,
                "token refused: no usable signing key"
            );
            return refuse(
                OAuthError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "temporarily_unavailable",
                    "tokens cannot be signed right now",
                ),
                label,
            );
        }
    };
    let token = match sign_token(idp, signer, &request.client_id, &scopes, client.ttl, log) {
        Ok(t) => t,
        Err(e) => return refuse(e, label),
    };
    let mut resp = axum::Json(json!({
        "access_token": token,
        "token_type": "Bearer",
        "expires_in": client.ttl.as_secs().max(1),
        "scope": scopes.join(" "),
    }))
    .into_response();
    let h = resp.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    tracing::info!(
        request_id = log.request_id,
        trace_id = log.trace_id,
        client = log.client(),
        client_id = %request.client_id,
        scope = %scopes.join(" "),
        kid = %signer.kid,
        "token issued"
    );
    (resp, label, TokenResult::Issued)
}

/// The RFC 9068 access token of a grant, signed with the active key.
fn sign_token(
    idp: &Idp,
    signer: &Signer,
    client_id: &str,
    scopes: &[String],
    ttl: Duration,
    log: &RequestLog<'_>,
) -> Result<String, OAuthError> {
    let now = jsonwebtoken::get_current_timestamp();
    let claims = claims(
        &idp.issuer,
        &idp.audiences,
        &idp.account,
        Grant {
            client_id,
            scopes,
            ttl,
        },
        now,
        &random_id(),
    );
    let mut header = jsonwebtoken::Header::new(crate::keys::signing_algorithm(signer.alg));
    header.kid = Some(signer.kid.clone());
    header.typ = Some("at+jwt".into());
    match jsonwebtoken::encode(&header, &claims, &signer.key) {
        Ok(t) => Ok(t),
        Err(e) => {
            tracing::error!(
                request_id = log.request_id,
                trace_id = log.trace_id,
                client = log.client(),
                client_id = client_id,
                error = %e,
                kid = %signer.kid,
                "token refused: signing failed"
            );
            Err(OAuthError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "temporarily_unavailable",
                "tokens cannot be signed right now",
            ))
        }
    }
}

mod token;
mod verify;

pub use token::{
    AuthMethod, Grant, OAuthError, TokenRequest, claims, grant_scopes, parse_token_request,
};
pub use verify::{PhcHash, Verifier, hash_secret};

#[cfg(test)]
mod tests;
