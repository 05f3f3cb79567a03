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
//! are never logged.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method as HttpMethod, StatusCode};
use jsonwebtoken::{DecodingKey, EncodingKey};
use serde_json::{Map, Value, json};

use crate::bundle::{AccountInfo, ClientSecret, IdpConfig, LocalIssuer, Rate, SigningAlgorithm};
use crate::ratelimit::{BoundedLimiter, Decision};
use crate::secrets::Resolved;
use crate::sensitive::Sensitive;

pub const DISCOVERY: &str = "/.well-known/openid-configuration";
pub const METADATA: &str = "/.well-known/oauth-authorization-server";
pub const JWKS: &str = "/oauth2/jwks";
pub const TOKEN: &str = "/oauth2/token";
/// The paths the IdP answers; routes may not use them.
pub const PATHS: [&str; 4] = [DISCOVERY, METADATA, JWKS, TOKEN];

/// Largest token request body: a client id, a secret and some scopes.
/// How long the token endpoint waits for a request's body.
const TOKEN_BODY_TIMEOUT: Duration = Duration::from_secs(10);

const MAX_TOKEN_REQUEST: usize = 16 * 1024;

/// The most client ids the per-client limiter keeps a bucket for: ids are the caller's to
/// make up, so beyond this new ones share one bucket (see [`BoundedLimiter`]).
pub const MAX_CLIENT_KEYS: usize = 4096;

/// The most caller addresses the per-IP limiter keeps a bucket for.
pub const MAX_IP_KEYS: usize = 16384;

/// The most argon2 memory a client hash may ask for, in KiB (256 MiB): each worker thread
/// holds this much while it verifies.
pub const MAX_ARGON2_M_COST: u32 = 256 * 1024;
/// The most argon2 passes a client hash may ask for.
pub const MAX_ARGON2_T_COST: u32 = 16;
/// The most argon2 lanes a client hash may ask for.
pub const MAX_ARGON2_P_COST: u32 = 16;

/// How long a token request waits for an argon2 worker before it is answered 503.
const VERIFY_WAIT: Duration = Duration::from_secs(2);
/// Verifications queued per worker thread; beyond, requests are answered 503 at once.
const QUEUE_PER_WORKER: usize = 4;

/// Defaults of `tokenRateLimit`.
pub fn default_per_client() -> Rate {
    Rate {
        requests: 10,
        per: crate::duration::Duration::from_secs(1),
        burst: Some(20),
    }
}

pub fn default_per_ip() -> Rate {
    Rate {
        requests: 20,
        per: crate::duration::Duration::from_secs(1),
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

/// A signing key's usable forms, made from its private PEM.
pub struct KeyMaterial {
    /// Only the active key signs; kept for every key to check the PEM once, up front.
    pub encoding: EncodingKey,
    pub decoding: DecodingKey,
    /// The public JWK (without `kid`, `alg`, `use`).
    pub public_jwk: Map<String, Value>,
}

impl std::fmt::Debug for KeyMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyMaterial")
            .field("public_jwk", &self.public_jwk)
            .finish_non_exhaustive()
    }
}

/// Reads a PEM private key (PKCS#8, or PKCS#1 for RSA / SEC1 for P-256). Errors never
/// quote the key.
pub fn key_material(alg: SigningAlgorithm, pem: &str) -> Result<KeyMaterial, String> {
    match alg {
        SigningAlgorithm::RS256 => {
            use aws_lc_rs::signature::KeyPair as _;
            // jsonwebtoken reads PKCS#8 and PKCS#1 PEM to the PKCS#1 DER it signs with;
            // aws-lc checks that DER is a usable key and gives its public half.
            let encoding = EncodingKey::from_rsa_pem(pem.as_bytes())
                .map_err(|_| "not an RSA private key in PEM (PKCS#8 or PKCS#1)".to_string())?;
            let key = aws_lc_rs::rsa::KeyPair::from_der(encoding.as_bytes())
                .map_err(|_| "not a usable RSA private key (PKCS#8 or PKCS#1 PEM)".to_string())?;
            if key.public_modulus_len() < 256 {
                return Err("RSA keys must have at least 2048 bits".into());
            }
            let public = key.public_key();
            let n = public.modulus().big_endian_without_leading_zero().to_vec();
            let e = public.exponent().big_endian_without_leading_zero().to_vec();
            let mut jwk = Map::new();
            jwk.insert("kty".into(), "RSA".into());
            jwk.insert("n".into(), URL_SAFE_NO_PAD.encode(&n).into());
            jwk.insert("e".into(), URL_SAFE_NO_PAD.encode(&e).into());
            Ok(KeyMaterial {
                encoding,
                decoding: DecodingKey::from_rsa_raw_components(&n, &e),
                public_jwk: jwk,
            })
        }
        SigningAlgorithm::ES256 => {
            use p256::pkcs8::{DecodePrivateKey as _, EncodePrivateKey as _};
            let key = p256::SecretKey::from_pkcs8_pem(pem)
                .or_else(|_| p256::SecretKey::from_sec1_pem(pem))
                .map_err(|_| "not a P-256 private key in PEM (PKCS#8 or SEC1)".to_string())?;
            let der = key
                .to_pkcs8_der()
                .map_err(|_| "the P-256 key cannot be encoded".to_string())?;
            let point = p256::elliptic_curve::sec1::ToEncodedPoint::to_encoded_point(
                &key.public_key(),
                false,
            );
            let (Some(x), Some(y)) = (point.x(), point.y()) else {
                return Err("the P-256 public key has no coordinates".into());
            };
            let mut jwk = Map::new();
            jwk.insert("kty".into(), "EC".into());
            jwk.insert("crv".into(), "P-256".into());
            jwk.insert("x".into(), URL_SAFE_NO_PAD.encode(x).into());
            jwk.insert("y".into(), URL_SAFE_NO_PAD.encode(y).into());
            Ok(KeyMaterial {
                encoding: EncodingKey::from_ec_der(der.as_bytes()),
                decoding: DecodingKey::from_ec_der(point.as_bytes()),
                public_jwk: jwk,
            })
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

/// What an argon2 verification costs: the parameters every client hash of one IdP shares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Argon2Cost {
    pub algorithm: argon2::Algorithm,
    pub version: argon2::Version,
    /// Memory in KiB.
    pub m_cost: u32,
    /// Passes.
    pub t_cost: u32,
    /// Lanes.
    pub p_cost: u32,
    /// Output bytes.
    pub output_len: usize,
}

impl std::fmt::Display for Argon2Cost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} v={} m={},t={},p={} with a {}-byte output",
            self.algorithm.as_str(),
            u32::from(self.version),
            self.m_cost,
            self.t_cost,
            self.p_cost,
            self.output_len
        )
    }
}

/// A parsed argon2 PHC hash, ready to verify on an argon2 worker. No `Debug` or `Display`
/// shows the salt or the hash.
pub struct PhcHash {
    cost: Argon2Cost,
    params: argon2::Params,
    salt: Vec<u8>,
    hash: argon2::password_hash::Output,
}

impl std::fmt::Debug for PhcHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PhcHash")
            .field("cost", &self.cost)
            .finish_non_exhaustive()
    }
}

impl PhcHash {
    /// Reads a PHC string (`$argon2id$v=19$m=...,t=...,p=...$salt$hash`) whose costs are
    /// within the caps. Errors never quote the value.
    pub fn parse(phc: &str) -> Result<PhcHash, String> {
        let parsed = argon2::PasswordHash::new(phc)
            .map_err(|_| "not an argon2 hash in PHC format ($argon2id$v=19$...)".to_string())?;
        let algorithm = argon2::Algorithm::try_from(parsed.algorithm)
            .map_err(|_| "not an argon2 hash in PHC format ($argon2id$v=19$...)".to_string())?;
        let version = match parsed.version {
            None => argon2::Version::default(),
            Some(v) => argon2::Version::try_from(v)
                .map_err(|_| format!("argon2 version {v} is not one argon2 has"))?,
        };
        let params = argon2::Params::try_from(&parsed)
            .map_err(|_| "the argon2 hash's parameters are not valid".to_string())?;
        let (Some(salt), Some(hash)) = (parsed.salt, parsed.hash) else {
            return Err("the argon2 hash has no salt or no output".into());
        };
        let mut buf = [0u8; 64];
        let salt = salt
            .decode_b64(&mut buf)
            .map_err(|_| "the argon2 hash's salt is not valid".to_string())?
            .to_vec();
        let cost = Argon2Cost {
            algorithm,
            version,
            m_cost: params.m_cost(),
            t_cost: params.t_cost(),
            p_cost: params.p_cost(),
            output_len: hash.len(),
        };
        check_cost(&cost)?;
        Ok(PhcHash {
            cost,
            params,
            salt,
            hash,
        })
    }

    pub fn cost(&self) -> Argon2Cost {
        self.cost
    }

    /// A hash no secret matches (its output is zeros, not an argon2 output) whose
    /// verification costs what one of `like` does: the same parameters and salt length.
    /// Unknown client ids are verified against it.
    pub fn dummy(like: &PhcHash) -> PhcHash {
        let salt: Vec<u8> = b"fleetgate-no-such-client-salt-for-the-dummy-hash-of-an-idp-64by"
            .iter()
            .copied()
            .cycle()
            .take(like.salt.len())
            .collect();
        PhcHash {
            cost: like.cost,
            params: like.params.clone(),
            salt,
            hash: argon2::password_hash::Output::new(&vec![0u8; like.cost.output_len])
                .unwrap_or(like.hash),
        }
    }

    /// The dummy of an IdP without any usable client hash: argon2's default parameters,
    /// as `fleetgate up` hashes secrets.
    fn default_dummy() -> PhcHash {
        let params = argon2::Params::default();
        let output_len = params
            .output_len()
            .unwrap_or(argon2::Params::DEFAULT_OUTPUT_LEN);
        let model = PhcHash {
            cost: Argon2Cost {
                algorithm: argon2::Algorithm::default(),
                version: argon2::Version::default(),
                m_cost: params.m_cost(),
                t_cost: params.t_cost(),
                p_cost: params.p_cost(),
                output_len,
            },
            params,
            salt: vec![0; 16],
            hash: argon2::password_hash::Output::new(&vec![0u8; output_len])
                .unwrap_or_else(|_| unreachable!("argon2's default output length is valid")),
        };
        PhcHash::dummy(&model)
    }

    /// Whether `secret` hashes to this hash's output (compared in constant time), with
    /// `memory` as argon2's working memory (resized to the parameters when they differ).
    fn verify_with(&self, secret: &[u8], memory: &mut Vec<argon2::Block>) -> bool {
        let blocks = self.params.block_count();
        if memory.len() != blocks {
            // A new buffer, not a resize: the old one goes back to the allocator whole.
            *memory = vec![argon2::Block::default(); blocks];
        }
        let argon =
            argon2::Argon2::new(self.cost.algorithm, self.cost.version, self.params.clone());
        let mut out = vec![0u8; self.cost.output_len];
        if argon
            .hash_password_into_with_memory(secret, &self.salt, &mut out, &mut memory[..])
            .is_err()
        {
            return false;
        }
        // Output's equality is constant-time.
        argon2::password_hash::Output::new(&out).is_ok_and(|o| o == self.hash)
    }
}

/// Whether `cost` is within the caps (an error naming the parameter over its cap).
pub fn check_cost(cost: &Argon2Cost) -> Result<(), String> {
    for (name, value, max) in [
        ("m (memory, KiB)", cost.m_cost, MAX_ARGON2_M_COST),
        ("t (passes)", cost.t_cost, MAX_ARGON2_T_COST),
        ("p (lanes)", cost.p_cost, MAX_ARGON2_P_COST),
    ] {
        if value > max {
            return Err(format!(
                "argon2 parameter {name} is {value}, over the gateway's cap of {max}"
            ));
        }
    }
    Ok(())
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

/// An RFC 6749 §5.2 error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuthError {
    pub status: StatusCode,
    pub code: &'static str,
    pub description: String,
    /// Ask for Basic credentials (`WWW-Authenticate`), after a failed Basic attempt.
    pub challenge: bool,
}

impl OAuthError {
    fn new(status: StatusCode, code: &'static str, description: impl Into<String>) -> Self {
        OAuthError {
            status,
            code,
            description: description.into(),
            challenge: false,
        }
    }

    fn invalid_request(description: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", description)
    }

    /// One message for an unknown client and a wrong secret: which one it was is not
    /// the caller's to learn.
    fn invalid_client(basic: bool) -> Self {
        OAuthError {
            status: StatusCode::UNAUTHORIZED,
            code: "invalid_client",
            description: "client authentication failed".into(),
            challenge: basic,
        }
    }
}

/// How the client authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMethod {
    Basic,
    Post,
}

/// A parsed token request. The secret is [`Sensitive`]: no `Debug` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRequest {
    pub client_id: String,
    pub client_secret: Sensitive<String>,
    pub method: AuthMethod,
    /// The `scope` parameter as sent (space-delimited), if any.
    pub scope: Option<String>,
}

fn decode_component(s: &str) -> Option<String> {
    // RFC 6749 §2.3.1: Basic credentials are form-urlencoded first.
    let plus_as_space = s.replace('+', " ");
    percent_encoding::percent_decode_str(&plus_as_space)
        .decode_utf8()
        .ok()
        .map(|c| c.into_owned())
}

/// Reads a token request from its headers and form body (pure).
pub fn parse_token_request(headers: &HeaderMap, body: &[u8]) -> Result<TokenRequest, OAuthError> {
    let form_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| {
            v.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        });
    if !form_type {
        return Err(OAuthError::invalid_request(
            "the body must be application/x-www-form-urlencoded",
        ));
    }
    let mut params: BTreeMap<String, String> = BTreeMap::new();
    for (k, v) in url::form_urlencoded::parse(body) {
        if v.is_empty() {
            // RFC 6749 §3.1: parameters sent without a value are treated as omitted.
            continue;
        }
        if params.insert(k.to_string(), v.to_string()).is_some() {
            return Err(OAuthError::invalid_request(format!(
                "parameter {k} is given more than once"
            )));
        }
    }
    match params.get("grant_type").map(String::as_str) {
        None => return Err(OAuthError::invalid_request("grant_type is required")),
        Some("client_credentials") => {}
        Some(_) => {
            return Err(OAuthError::new(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                "only the client_credentials grant is supported",
            ));
        }
    }
    let basic = match headers.get(header::AUTHORIZATION) {
        None => None,
        Some(v) => {
            let v = v.to_str().unwrap_or_default();
            let (scheme, rest) = v.split_once(' ').unwrap_or((v, ""));
            if !scheme.eq_ignore_ascii_case("basic") {
                return Err(OAuthError {
                    challenge: true,
                    ..OAuthError::invalid_client(true)
                });
            }
            let decoded = STANDARD
                .decode(rest.trim())
                .ok()
                .and_then(|b| String::from_utf8(b).ok());
            let pair = decoded.as_deref().and_then(|d| d.split_once(':'));
            let Some((id, secret)) = pair
                .and_then(|(id, secret)| Some((decode_component(id)?, decode_component(secret)?)))
            else {
                return Err(OAuthError::invalid_client(true));
            };
            Some((id, secret))
        }
    };
    let posted = params.contains_key("client_secret");
    let (client_id, client_secret, method) = match basic {
        Some(_) if posted => {
            return Err(OAuthError::invalid_request(
                "use one client authentication method, not both Basic and client_secret",
            ));
        }
        Some((id, secret)) => {
            if params.get("client_id").is_some_and(|p| *p != id) {
                return Err(OAuthError::invalid_request(
                    "client_id differs from the Basic credentials",
                ));
            }
            (id, secret, AuthMethod::Basic)
        }
        None => match (params.get("client_id"), params.get("client_secret")) {
            (Some(id), Some(secret)) => (id.clone(), secret.clone(), AuthMethod::Post),
            _ => {
                return Err(OAuthError {
                    challenge: true,
                    ..OAuthError::invalid_client(false)
                });
            }
        },
    };
    if client_id.is_empty() {
        return Err(OAuthError::invalid_client(method == AuthMethod::Basic));
    }
    Ok(TokenRequest {
        client_id,
        client_secret: Sensitive(client_secret),
        method,
        scope: params.get("scope").cloned(),
    })
}

/// The scopes to grant (pure): the requested ones, each allowed for the client, or all of
/// the client's scopes when none are requested (RFC 6749 §3.3's pre-defined default).
pub fn grant_scopes(
    requested: Option<&str>,
    allowed: &[String],
) -> Result<Vec<String>, OAuthError> {
    let Some(requested) = requested else {
        return Ok(allowed.to_vec());
    };
    let mut granted = Vec::new();
    for s in requested.split(' ').filter(|s| !s.is_empty()) {
        if !allowed.iter().any(|a| a == s) {
            return Err(OAuthError::new(
                StatusCode::BAD_REQUEST,
                "invalid_scope",
                format!("scope {s:?} is not allowed for this client"),
            ));
        }
        if !granted.iter().any(|g| g == s) {
            granted.push(s.to_string());
        }
    }
    Ok(granted)
}

/// What a token request was granted.
#[derive(Debug, Clone, Copy)]
pub struct Grant<'a> {
    pub client_id: &'a str,
    pub scopes: &'a [String],
    pub ttl: Duration,
}

/// The access token's claims (pure).
pub fn claims(
    issuer: &str,
    audiences: &[String],
    account: &AccountInfo,
    grant: Grant<'_>,
    now: u64,
    jti: &str,
) -> Map<String, Value> {
    let Grant {
        client_id,
        scopes,
        ttl,
    } = grant;
    let aud = match audiences {
        [one] => Value::from(one.as_str()),
        many => Value::from(many.to_vec()),
    };
    let claims = json!({
        "iss": issuer,
        "sub": client_id,
        "aud": aud,
        "iat": now,
        "nbf": now,
        "exp": now + ttl.as_secs().max(1),
        "jti": jti,
        "client_id": client_id,
        "scope": scopes.join(" "),
        "tenant": account.tenant,
        "account": account.name,
        "account_id": account.id,
    });
    match claims {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

/// One verification for an argon2 worker.
struct Job {
    hash: Arc<PhcHash>,
    secret: Sensitive<String>,
    /// Not started after this: its request has been answered 503.
    deadline: Instant,
    reply: tokio::sync::oneshot::Sender<bool>,
}

/// What the token endpoint shares across bundles: a fixed pool of argon2 worker threads
/// (one per core) fed by a bounded queue. Each worker reuses one working-memory buffer, so
/// argon2's memory is at most workers × the hashes' `m`, whatever the load; a request that
/// finds the queue full, or waits for a worker longer than a bound, is answered 503.
#[derive(Debug)]
pub struct Verifier {
    jobs: mpsc::SyncSender<Job>,
    workers: usize,
}

impl Default for Verifier {
    fn default() -> Self {
        let n = std::thread::available_parallelism().map_or(2, |n| n.get());
        Verifier::new(n, n * QUEUE_PER_WORKER)
    }
}

impl Verifier {
    /// `workers` threads, at most `queue` verifications waiting for one. The threads end
    /// when the verifier is dropped.
    pub fn new(workers: usize, queue: usize) -> Verifier {
        let (jobs, rx) = mpsc::sync_channel::<Job>(queue);
        let rx = Arc::new(Mutex::new(rx));
        let mut started = 0;
        for i in 0..workers.max(1) {
            let rx = rx.clone();
            match std::thread::Builder::new()
                .name(format!("argon2-{i}"))
                .spawn(move || argon2_worker(&rx))
            {
                Ok(_) => started += 1,
                Err(e) => {
                    tracing::error!(error = %e, "an argon2 worker thread could not be started")
                }
            }
        }
        Verifier {
            jobs,
            workers: started,
        }
    }

    /// How many worker threads verify.
    pub fn workers(&self) -> usize {
        self.workers
    }

    /// Whether `secret` matches `hash`, on a worker.
    async fn verify(
        &self,
        hash: Arc<PhcHash>,
        secret: Sensitive<String>,
    ) -> Result<bool, OAuthError> {
        let busy = || {
            OAuthError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "temporarily_unavailable",
                "the token endpoint is busy; retry shortly",
            )
        };
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.jobs
            .try_send(Job {
                hash,
                secret,
                deadline: Instant::now() + VERIFY_WAIT,
                reply,
            })
            .map_err(|_| busy())?;
        match tokio::time::timeout(VERIFY_WAIT, answer).await {
            Ok(Ok(matched)) => Ok(matched),
            _ => Err(busy()),
        }
    }
}

fn argon2_worker(jobs: &Mutex<mpsc::Receiver<Job>>) {
    let mut memory: Vec<argon2::Block> = Vec::new();
    loop {
        let next = match jobs.lock() {
            Ok(rx) => rx.recv(),
            Err(_) => return,
        };
        let Ok(job) = next else {
            // The verifier is gone.
            return;
        };
        if job.reply.is_closed() || Instant::now() > job.deadline {
            continue;
        }
        let matched = job
            .hash
            .verify_with(job.secret.expose().as_bytes(), &mut memory);
        let _ = job.reply.send(matched);
    }
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

fn limited(decision: &Decision, policy: &str, what: &str, issuer: &str) -> Option<Response> {
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

/// Answers one IdP request. Returns the response and, for the token endpoint, the client
/// (when it is a known one) and the result, for metrics.
pub async fn serve(
    idp: &Idp,
    endpoint: Endpoint,
    verifier: &Verifier,
    client_ip: IpAddr,
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
            let (resp, client, result) = token(idp, verifier, client_ip, req).await;
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
        &idp.per_ip.policy(),
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
        &idp.per_client.policy(),
        "for this client",
        &idp.issuer,
    ) {
        return (resp, label, TokenResult::Refused("too_many_requests"));
    }
    let basic = request.method == AuthMethod::Basic;
    let hash = match client.map(|c| &c.hash) {
        Some(Ok(h)) => h.clone(),
        Some(Err(why)) => {
            tracing::error!(client = %request.client_id, reason = %why, "token refused: the client's secret hash is unavailable");
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
        // An unknown id is the caller's text, up to the body's size: logged shortened.
        let shown = if client.is_some() {
            request.client_id.clone()
        } else {
            shorten(&request.client_id)
        };
        tracing::info!(client = %shown, client_ip = %client_ip, "token refused: client authentication failed");
        return refuse(OAuthError::invalid_client(basic), label);
    };
    let scopes = match grant_scopes(request.scope.as_deref(), &client.scopes) {
        Ok(s) => s,
        Err(e) => return refuse(e, label),
    };
    let signer = match &idp.signer {
        Ok(s) => s,
        Err(why) => {
            tracing::error!(reason = %why, "token refused: no usable signing key");
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
    let now = jsonwebtoken::get_current_timestamp();
    let claims = claims(
        &idp.issuer,
        &idp.audiences,
        &idp.account,
        Grant {
            client_id: &request.client_id,
            scopes: &scopes,
            ttl: client.ttl,
        },
        now,
        &random_id(),
    );
    let mut header = jsonwebtoken::Header::new(crate::auth::signing_algorithm(signer.alg));
    header.kid = Some(signer.kid.clone());
    header.typ = Some("at+jwt".into());
    let token = match jsonwebtoken::encode(&header, &claims, &signer.key) {
        Ok(t) => t,
        Err(e) => {
            tracing::error!(error = %e, kid = %signer.kid, "token refused: signing failed");
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
    tracing::info!(client = %request.client_id, scope = %scopes.join(" "), kid = %signer.kid, "token issued");
    (resp, label, TokenResult::Issued)
}

/// `id` as logged when it names no client: at most 64 characters, with the length of what
/// was cut.
fn shorten(id: &str) -> String {
    match id.char_indices().nth(64) {
        None => id.to_string(),
        Some((cut, _)) => format!("{}... ({} bytes)", &id[..cut], id.len()),
    }
}

/// A new private key for `alg` as PKCS#8 PEM (RSA: 2048 bits), for local fleets and tests.
pub fn generate_key(alg: SigningAlgorithm) -> Result<String, String> {
    use rand_core::OsRng;
    match alg {
        SigningAlgorithm::RS256 => {
            use aws_lc_rs::encoding::AsDer as _;
            let key = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048)
                .map_err(|_| "the RSA key could not be generated".to_string())?;
            let der = key
                .as_der()
                .map_err(|_| "the RSA key could not be encoded".to_string())?;
            Ok(pem_encode("PRIVATE KEY", der.as_ref()))
        }
        SigningAlgorithm::ES256 => {
            use p256::pkcs8::EncodePrivateKey as _;
            p256::SecretKey::random(&mut OsRng)
                .to_pkcs8_pem(p256::pkcs8::LineEnding::LF)
                .map(|p| p.to_string())
                .map_err(|e| e.to_string())
        }
    }
}

/// RFC 7468's textual encoding of `der` with `label`: base64 in lines of 64 characters.
fn pem_encode(label: &str, der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// The argon2id PHC hash of `secret` with argon2's default parameters and a random salt.
pub fn hash_secret(secret: &str) -> Result<String, String> {
    use argon2::PasswordHasher as _;
    let salt = argon2::password_hash::SaltString::generate(&mut rand_core::OsRng);
    argon2::Argon2::default()
        .hash_password(secret.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

/// The issuer's verifying keys (active, next, previous) by kid, for the gateway's own
/// `local` issuer, with the problems of keys that cannot be read.
pub fn verifying_keys(
    issuer: &LocalIssuer,
    secrets: &Resolved,
) -> (Vec<crate::auth::Key>, Vec<String>) {
    let mut keys = Vec::new();
    let mut problems = Vec::new();
    for (role, k) in issuer.signing_keys.all() {
        match secrets
            .get(&k.private_key)
            .and_then(|pem| key_material(k.algorithm, pem))
        {
            Ok(m) => keys.push(crate::auth::Key {
                kid: Some(k.kid.clone()),
                alg: Some(crate::auth::signing_algorithm(k.algorithm)),
                key: m.decoding,
            }),
            Err(e) => problems.push(format!("{role} signing key {}: {e}", k.kid)),
        }
    }
    (keys, problems)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(body: &str, basic: Option<&str>) -> Result<TokenRequest, OAuthError> {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-www-form-urlencoded; charset=UTF-8"),
        );
        if let Some(b) = basic {
            h.insert(
                header::AUTHORIZATION,
                HeaderValue::from_str(&format!("Basic {}", STANDARD.encode(b)))
                    .unwrap_or_else(|e| panic!("{e}")),
            );
        }
        parse_token_request(&h, body.as_bytes())
    }

    #[test]
    fn basic_and_post_credentials_both_work_and_basic_is_form_decoded() {
        let r = form(
            "grant_type=client_credentials&scope=a+b",
            Some("web%20portal:s%3Acret"),
        )
        .unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(r.client_id, "web portal");
        assert_eq!(r.client_secret.expose(), "s:cret");
        assert_eq!(r.method, AuthMethod::Basic);
        assert_eq!(r.scope.as_deref(), Some("a b"));
        let r = form(
            "grant_type=client_credentials&client_id=web&client_secret=s3cret",
            None,
        )
        .unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!((r.client_id.as_str(), r.method), ("web", AuthMethod::Post));
        assert_eq!(r.scope, None);
    }

    #[test]
    fn malformed_requests_get_the_rfc_6749_error() {
        let code = |body: &str, basic: Option<&str>| {
            form(body, basic).map_err(|e| (e.status.as_u16(), e.code, e.challenge))
        };
        assert_eq!(
            code("client_id=a&client_secret=b", None),
            Err((400, "invalid_request", false))
        );
        assert_eq!(
            code("grant_type=password&client_id=a&client_secret=b", None),
            Err((400, "unsupported_grant_type", false))
        );
        assert_eq!(
            code("grant_type=client_credentials", None),
            Err((401, "invalid_client", true))
        );
        assert_eq!(
            code("grant_type=client_credentials&client_secret=b", Some("a:b")),
            Err((400, "invalid_request", false))
        );
        assert_eq!(
            code(
                "grant_type=client_credentials&scope=a&scope=b&client_id=a&client_secret=b",
                None
            ),
            Err((400, "invalid_request", false))
        );
        assert_eq!(
            code("grant_type=client_credentials", Some("no-colon")),
            Err((401, "invalid_client", true))
        );
        let mut h = HeaderMap::new();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        assert_eq!(
            parse_token_request(&h, b"{}").map_err(|e| e.code),
            Err("invalid_request")
        );
    }

    #[test]
    fn a_secret_is_never_in_the_debug_output() {
        let r = form(
            "grant_type=client_credentials&client_id=a&client_secret=hunter2",
            None,
        )
        .unwrap_or_else(|e| panic!("{e:?}"));
        #[allow(clippy::use_debug)]
        let shown = format!("{r:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
    }

    #[test]
    fn scopes_are_limited_to_the_clients_and_default_to_all_of_them() {
        let allowed = vec!["orders:read".to_string(), "orders:write".to_string()];
        assert_eq!(grant_scopes(None, &allowed), Ok(allowed.clone()));
        assert_eq!(
            grant_scopes(Some("orders:read  orders:read"), &allowed),
            Ok(vec!["orders:read".to_string()])
        );
        let e = grant_scopes(Some("orders:read payments:refund"), &allowed).unwrap_err();
        assert_eq!((e.status.as_u16(), e.code), (400, "invalid_scope"));
        assert!(e.description.contains("payments:refund"));
    }

    #[test]
    fn claims_name_the_tenant_and_account_and_expire_after_the_ttl() {
        let account = AccountInfo {
            name: "acme-prod".into(),
            id: "423456789012".into(),
            region: "us-east-1".into(),
            stage: "prod".into(),
            tenant: "acme".into(),
            labels: BTreeMap::new(),
        };
        let c = claims(
            "https://auth.acme.example",
            &["https://api.acme.example".to_string()],
            &account,
            Grant {
                client_id: "web-portal",
                scopes: &["orders:read".to_string(), "orders:write".to_string()],
                ttl: Duration::from_secs(600),
            },
            1_000,
            "j1",
        );
        assert_eq!(
            Value::Object(c),
            json!({"iss": "https://auth.acme.example", "sub": "web-portal", "aud": "https://api.acme.example",
                   "iat": 1000, "nbf": 1000, "exp": 1600, "jti": "j1", "client_id": "web-portal",
                   "scope": "orders:read orders:write", "tenant": "acme", "account": "acme-prod",
                   "account_id": "423456789012"})
        );
    }

    #[test]
    fn generated_keys_sign_tokens_their_public_halves_verify() {
        for alg in [SigningAlgorithm::RS256, SigningAlgorithm::ES256] {
            let pem = generate_key(alg).unwrap_or_else(|e| panic!("{e}"));
            let m = key_material(alg, &pem).unwrap_or_else(|e| panic!("{e}"));
            let a = crate::auth::signing_algorithm(alg);
            let token = jsonwebtoken::encode(
                &jsonwebtoken::Header::new(a),
                &json!({"sub": "x", "exp": 4_000_000_000u64}),
                &m.encoding,
            )
            .unwrap_or_else(|e| panic!("{e}"));
            let mut v = jsonwebtoken::Validation::new(a);
            v.required_spec_claims.clear();
            jsonwebtoken::decode::<Value>(&token, &m.decoding, &v)
                .unwrap_or_else(|e| panic!("{e}"));
        }
        let h = hash_secret("s3cret").unwrap_or_else(|e| panic!("{e}"));
        use argon2::PasswordVerifier as _;
        let parsed = argon2::PasswordHash::new(&h).unwrap_or_else(|e| panic!("{e}"));
        assert!(
            argon2::Argon2::default()
                .verify_password(b"s3cret", &parsed)
                .is_ok()
        );
    }

    #[test]
    fn unknown_ids_are_logged_shortened() {
        assert_eq!(shorten("web-portal"), "web-portal");
        let long = "é".repeat(10_000);
        assert_eq!(
            shorten(&long),
            format!("{}... (20000 bytes)", "é".repeat(64))
        );
    }

    #[test]
    fn key_errors_never_quote_the_key() {
        let pem = "-----BEGIN PRIVATE KEY-----\nc2VjcmV0LWJ5dGVz\n-----END PRIVATE KEY-----\n";
        for alg in [SigningAlgorithm::RS256, SigningAlgorithm::ES256] {
            let e = key_material(alg, pem).unwrap_err();
            assert!(!e.contains("c2VjcmV0") && !e.contains("BEGIN"), "{e}");
        }
    }

    fn fixture(name: &str) -> String {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures/keys")
            .join(name);
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    #[test]
    fn rsa_keys_read_by_aws_lc_give_the_published_jwk_in_pkcs8_and_pkcs1() {
        let jwks: Value = serde_json::from_str(&fixture("jwks.json")).unwrap();
        let want = &jwks["issuer-rsa"];
        let pkcs8 = fixture("issuer-rsa.pem");
        assert!(pkcs8.starts_with("-----BEGIN PRIVATE KEY-----"));
        let m = key_material(SigningAlgorithm::RS256, &pkcs8).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            Value::Object(m.public_jwk.clone()),
            json!({"kty": "RSA", "n": want["n"], "e": want["e"]})
        );
        // The same key as PKCS#1 (`BEGIN RSA PRIVATE KEY`).
        let pkcs1 = pem_encode("RSA PRIVATE KEY", m.encoding.as_bytes());
        let m1 = key_material(SigningAlgorithm::RS256, &pkcs1).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(m1.public_jwk, m.public_jwk);
        // The EC fixture is no RSA key, nor is the public half.
        assert!(key_material(SigningAlgorithm::RS256, &fixture("local-ec.pem")).is_err());
        assert!(key_material(SigningAlgorithm::RS256, &fixture("issuer-rsa.pub.pem")).is_err());
    }

    /// The argon2id PHC hash of `secret` with parameters `m`, `t`, `p`.
    fn argon2id(secret: &str, m: u32, t: u32, p: u32) -> String {
        use argon2::PasswordHasher as _;
        let params = argon2::Params::new(m, t, p, None).unwrap();
        let salt = argon2::password_hash::SaltString::encode_b64(b"fleetgate-salt!!").unwrap();
        argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
            .hash_password(secret.as_bytes(), &salt)
            .unwrap()
            .to_string()
    }

    fn account() -> AccountInfo {
        AccountInfo {
            name: "acme-prod".into(),
            id: "423456789012".into(),
            region: "us-east-1".into(),
            stage: "prod".into(),
            tenant: "acme".into(),
            labels: BTreeMap::new(),
        }
    }

    /// An IdP config signing with the EC fixture, with `clients` and a scope `a`.
    fn idp_config(clients: Value, limits: Value) -> IdpConfig {
        let key = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures/keys/local-ec.pem");
        serde_json::from_value(json!({
            "issuer": {"url": "https://idp.acme.example", "audiences": ["https://api.acme.example"],
                       "signingKeys": {"active": {"kid": "k1", "algorithm": "ES256",
                                                  "privateKey": {"file": key.to_str().unwrap()}}},
                       "tokenRateLimit": limits},
            "scopes": [{"name": "a"}],
            "clients": clients,
        }))
        .unwrap_or_else(|e| panic!("{e}"))
    }

    fn build(config: &IdpConfig, secrets: &Resolved) -> (Idp, Vec<String>) {
        let mut warnings = Vec::new();
        let idp = Idp::build(config, &account(), secrets, None, &mut warnings).unwrap();
        (idp, warnings)
    }

    fn ec_secret() -> (crate::bundle::SecretRef, String) {
        let key = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures/keys/local-ec.pem");
        (
            crate::bundle::SecretRef::File(key.to_str().unwrap().into()),
            fixture("local-ec.pem"),
        )
    }

    #[test]
    fn the_dummy_hash_has_exactly_the_parameters_of_the_clients_hashes() {
        let hashed = crate::bundle::SecretRef::Env("BATCH_HASH".into());
        let config = idp_config(
            json!([
                {"id": "web", "secret": {"argon2Hash": argon2id("web-secret", 16, 2, 1)}, "scopes": ["a"]},
                {"id": "partner", "secret": {"argon2Hash": argon2id("partner-secret", 16, 2, 1)}, "scopes": ["a"]},
                {"id": "batch", "secret": {"ref": {"env": "BATCH_HASH"}}, "scopes": ["a"]},
            ]),
            json!({}),
        );
        // A hash read at run time with other parameters is refused, naming its client.
        let secrets = Resolved::from_values([
            ec_secret(),
            (hashed.clone(), argon2id("batch-secret", 8, 1, 1)),
        ]);
        let (idp, warnings) = build(&config, &secrets);
        let usable: Vec<Argon2Cost> = idp
            .clients
            .values()
            .filter_map(|c| c.hash.as_ref().ok().map(|h| h.cost()))
            .collect();
        assert_eq!(usable.len(), 2);
        assert!(usable.iter().all(|c| *c == idp.dummy.cost()));
        assert_eq!(
            (
                idp.dummy.cost().m_cost,
                idp.dummy.cost().t_cost,
                idp.dummy.salt.len()
            ),
            (16, 2, 16)
        );
        assert!(
            warnings.iter().any(|w| w.contains("client batch")
                && w.contains("m=8,t=1,p=1")
                && w.contains("m=16,t=2,p=1")),
            "{warnings:?}"
        );
        assert!(
            !warnings.iter().any(|w| w.contains("$argon2")),
            "{warnings:?}"
        );
        // With the same parameters it is usable; the dummy is unchanged and matches nothing.
        let secrets =
            Resolved::from_values([ec_secret(), (hashed, argon2id("batch-secret", 16, 2, 1))]);
        let (idp, warnings) = build(&config, &secrets);
        assert!(warnings.is_empty(), "{warnings:?}");
        assert!(idp.clients.values().all(|c| c.hash.is_ok()));
        let mut memory = Vec::new();
        for id in ["web", "partner", "batch"] {
            let secret = format!("{id}-secret");
            let entry = &idp.clients[id];
            assert!(
                entry
                    .hash
                    .as_ref()
                    .unwrap()
                    .verify_with(secret.as_bytes(), &mut memory)
            );
            assert!(!idp.dummy.verify_with(secret.as_bytes(), &mut memory));
        }
        assert_eq!(
            idp.dummy.cost(),
            idp.clients["web"].hash.as_ref().unwrap().cost()
        );
        // Without any usable client hash: argon2's defaults, as `fleetgate up` hashes.
        let (idp, _) = build(
            &idp_config(json!([]), json!({})),
            &Resolved::from_values([ec_secret()]),
        );
        let d = argon2::Params::default();
        assert_eq!(
            (
                idp.dummy.cost().m_cost,
                idp.dummy.cost().t_cost,
                idp.dummy.cost().p_cost
            ),
            (d.m_cost(), d.t_cost(), d.p_cost())
        );
    }

    fn token_request(client_id: &str, secret: &str) -> axum::extract::Request {
        http::Request::builder()
            .method("POST")
            .uri(TOKEN)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from(format!(
                "grant_type=client_credentials&client_id={client_id}&client_secret={secret}"
            )))
            .unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn made_up_client_ids_and_addresses_never_grow_the_limiters_past_their_caps() {
        let config = idp_config(
            json!([{"id": "web", "secret": {"argon2Hash": argon2id("web-secret", 8, 1, 1)}, "scopes": ["a"]}]),
            // Generous bursts that take an hour to earn back: no key is idle during the test.
            json!({"perClient": {"requests": 1, "per": "1h", "burst": 1000000},
                   "perIp": {"requests": 1, "per": "1h", "burst": 1000000}}),
        );
        let (idp, _) = build(&config, &Resolved::from_values([ec_secret()]));
        let verifier = Verifier::new(2, 64);
        let n = MAX_IP_KEYS + MAX_CLIENT_KEYS;
        for i in 0..n {
            let ip = IpAddr::from([10, (i >> 16) as u8, (i >> 8) as u8, i as u8]);
            let (resp, _) = serve(
                &idp,
                Endpoint::Token,
                &verifier,
                ip,
                token_request(&format!("nobody-{i}"), "guess"),
            )
            .await;
            assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "request {i}");
        }
        assert_eq!(idp.per_client.keys(), MAX_CLIENT_KEYS);
        assert_eq!(idp.per_ip.keys(), MAX_IP_KEYS);
        // The good client still gets its token (from an address and id counted before).
        let (resp, token) = serve(
            &idp,
            Endpoint::Token,
            &verifier,
            IpAddr::from([10, 0, 0, 1]),
            token_request("web", "web-secret"),
        )
        .await;
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(token.map(|t| t.1), Some(TokenResult::Issued));
    }

    #[tokio::test]
    async fn argon2_runs_on_the_workers_and_a_full_queue_answers_503_at_once() {
        let hash = Arc::new(PhcHash::parse(&argon2id("s", 8, 1, 1)).unwrap());
        let verifier = Verifier::new(1, 4);
        assert_eq!(verifier.workers(), 1);
        assert_eq!(
            verifier.verify(hash.clone(), Sensitive("s".into())).await,
            Ok(true)
        );
        assert_eq!(
            verifier.verify(hash.clone(), Sensitive("x".into())).await,
            Ok(false)
        );
        // No worker ever takes a job: a queue of one is full after one request.
        let (jobs, _rx) = mpsc::sync_channel(1);
        let stuck = Arc::new(Verifier { jobs, workers: 0 });
        let waiting = tokio::spawn({
            let (stuck, hash) = (stuck.clone(), hash.clone());
            async move {
                stuck
                    .verify(hash, Sensitive("s".into()))
                    .await
                    .map_err(|e| e.code)
            }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        let started = Instant::now();
        let refused = stuck.verify(hash, Sensitive("s".into())).await;
        assert_eq!(refused.map_err(|e| e.code), Err("temporarily_unavailable"));
        assert!(started.elapsed() < Duration::from_millis(500));
        // The queued one gives up after the wait cap.
        assert_eq!(waiting.await.unwrap(), Err("temporarily_unavailable"));
        assert!(started.elapsed() <= VERIFY_WAIT + Duration::from_secs(1));
    }
}
