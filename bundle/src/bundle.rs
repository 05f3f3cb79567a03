//! The bundle: the contract between the reconciler and the gateway.
//!
//! One canonical JSON document per account. Canonical means: keys sorted, no insignificant
//! whitespace, every field always present or always absent (never "sometimes defaulted"), so
//! the sha256 of the bytes identifies what the account runs. Nothing that does not change what
//! the account runs (commit, time, file names) belongs here.
//!
//! The same types are the body of the `Gateway` and `IdentityProvider` manifests: the
//! reconciler merges manifests into these shapes and the gateway runs them, so there is one
//! definition of every field and its meaning.
//!
//! Imports [`crate::digest`], [`crate::duration`] and [`crate::sensitive`].

use std::collections::BTreeMap;
use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use crate::digest::Digest;
use crate::duration::Duration;
use crate::sensitive::Sensitive;

pub const BUNDLE_API_VERSION: &str = "fleetgate.dev/bundle/v1";

/// The name of the account's own issuer in auth policies. It is always available when the
/// account's IdP has an `issuer`, without further configuration.
pub const LOCAL_ISSUER: &str = "local";

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Bundle {
    /// Always `fleetgate.dev/bundle/v1`.
    pub api_version: String,
    pub account: AccountInfo,
    pub gateway: GatewayConfig,
    pub idp: IdpConfig,
}

/// Who this bundle is for. Gateways put these into metrics labels and token claims.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AccountInfo {
    pub name: String,
    /// 12-digit AWS account id.
    pub id: String,
    pub region: String,
    pub stage: String,
    pub tenant: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// A gateway: what the `Gateway` manifest's spec holds after overlays and patches, and the
/// `gateway` section of a bundle.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct GatewayConfig {
    /// Host names this gateway answers for; empty means any host. Routes may narrow it.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// Values every route inherits unless it sets its own.
    #[serde(default)]
    pub defaults: RouteDefaults,
    /// Upstream services, by name. Routes generated from a service's OpenAPI spec use the
    /// backend named after the service unless the spec says otherwise.
    #[serde(default)]
    pub backends: BTreeMap<String, Backend>,
    /// Named authentication and authorization policies that routes refer to.
    #[serde(default)]
    pub auth_policies: BTreeMap<String, AuthPolicy>,
    /// Feature flags and kill switches. Overlays and accounts set their values.
    #[serde(default)]
    pub flags: BTreeMap<String, Flag>,
    /// Routes. In a manifest, a list of named items: overlays and patches merge by `name`.
    #[serde(default)]
    pub routes: Vec<Route>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RouteDefaults {
    /// Upstream timeout for the whole request (default 30s).
    #[serde(default = "default_timeout")]
    pub timeout: Duration,
    /// Largest accepted request body in bytes (default 10 MiB).
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<Retries>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimit>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cors: Option<Cors>,
    /// Auth for routes that set neither `auth` nor `public: true`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<RouteAuth>,
}

fn default_timeout() -> Duration {
    Duration::from_secs(30)
}

fn default_max_body_bytes() -> u64 {
    10 * 1024 * 1024
}

fn default_true() -> bool {
    true
}

fn is_true(b: &bool) -> bool {
    *b
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl Default for RouteDefaults {
    fn default() -> Self {
        Self {
            timeout: default_timeout(),
            max_body_bytes: default_max_body_bytes(),
            retries: None,
            rate_limit: None,
            cors: None,
            auth: None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Backend {
    /// Base URL, `http://` or `https://`. In manifests it may use `${account.*}` variables.
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_timeout: Option<Duration>,
    /// Overrides the route timeout for every route to this backend when shorter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AuthPolicy {
    /// Issuers whose tokens are accepted: `local` (this account's IdP) or the `name` of a
    /// trusted issuer in the IdP section.
    #[serde(default = "default_issuers")]
    pub issuers: Vec<String>,
    /// Accepted `aud` values. Empty: the issuer's own audiences.
    #[serde(default)]
    pub audiences: Vec<String>,
    /// Scopes every route under this policy requires, on top of the route's own.
    #[serde(default)]
    pub required_scopes: Vec<String>,
    /// Claims that must be present; a non-empty list also restricts the claim's value to one
    /// of the listed strings.
    #[serde(default)]
    pub required_claims: BTreeMap<String, Vec<String>>,
    /// Claims copied into request headers for the backend (`claim: Header-Name`). Incoming
    /// copies of those headers are always stripped first.
    #[serde(default)]
    pub forward_claims: BTreeMap<String, String>,
    /// Clock skew tolerated on `exp` and `nbf` (default 30s).
    #[serde(default = "default_leeway")]
    pub leeway: Duration,
}

fn default_issuers() -> Vec<String> {
    vec![LOCAL_ISSUER.to_string()]
}

fn default_leeway() -> Duration {
    Duration::from_secs(30)
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Flag {
    /// Whether the flag is on. The `Gateway` manifest gives the default; overlays and
    /// accounts set it with `flags: {name: true|false}`.
    pub enabled: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "UPPERCASE")]
pub enum Method {
    Get,
    Head,
    Post,
    Put,
    Patch,
    Delete,
    Options,
}

impl Method {
    pub const ALL: [Method; 7] = [
        Method::Get,
        Method::Head,
        Method::Post,
        Method::Put,
        Method::Patch,
        Method::Delete,
        Method::Options,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Patch => "PATCH",
            Method::Delete => "DELETE",
            Method::Options => "OPTIONS",
        }
    }

    pub fn parse(s: &str) -> Option<Method> {
        Method::ALL
            .into_iter()
            .find(|m| m.as_str().eq_ignore_ascii_case(s))
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One route. Exactly one of `backend`, `backends` or `aggregate` says where it goes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Route {
    /// Unique within the gateway. Generated routes are named `<service>.<operationId>`.
    pub name: String,
    /// Narrows the gateway's hosts for this route.
    #[serde(default)]
    pub hosts: Vec<String>,
    pub methods: Vec<Method>,
    /// Path template: literal segments, `{param}` for one segment, `{*rest}` for the
    /// remainder. The most specific route wins (literal before parameter before rest).
    pub path: String,
    /// Path sent upstream, using the route's parameters (default: the request path).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_path: Option<String>,
    /// Single upstream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend: Option<String>,
    /// Weighted upstreams (canary, blue/green). Weights sum to 100.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub backends: Vec<WeightedBackend>,
    /// Keep a client on one weighted backend by hashing this header or cookie.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sticky: Option<StickyKey>,
    /// A/B variants: the first whose match holds serves the request instead of the default
    /// upstream.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub variants: Vec<Variant>,
    /// Call several backends concurrently and merge their JSON objects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aggregate: Option<Aggregate>,
    /// Serve without authentication. Routes are authenticated unless they say this.
    #[serde(default, skip_serializing_if = "is_false")]
    pub public: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<RouteAuth>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimit>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<Retries>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cors: Option<Cors>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_body_bytes: Option<u64>,
    /// Serve only while this flag is on; otherwise answer `disabledStatus`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flag: Option<String>,
    /// Kill switch: `false` answers `disabledStatus` without touching a backend.
    #[serde(default = "default_true", skip_serializing_if = "is_true")]
    pub enabled: bool,
    /// Status for a disabled route (default 503).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled_status: Option<u16>,
    /// Set on routes generated from an OpenAPI spec: which service version they came from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<ServiceRef>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ServiceRef {
    pub name: String,
    pub version: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct WeightedBackend {
    pub backend: String,
    pub weight: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub enum StickyKey {
    Header(String),
    Cookie(String),
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Variant {
    pub name: String,
    #[serde(rename = "match")]
    pub matches: VariantMatch,
    pub backend: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub enum VariantMatch {
    Header { name: String, value: String },
    Cookie { name: String, value: String },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Aggregate {
    pub parts: Vec<AggregatePart>,
    #[serde(default)]
    pub on_partial_failure: PartialFailure,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AggregatePart {
    pub backend: String,
    /// Upstream path template using the route's parameters (default: the request path).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Put this part's JSON object under this key instead of merging it at the top level.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum PartialFailure {
    /// Any failed part fails the request (502/504).
    #[default]
    Fail,
    /// Return what arrived, with `X-Fleetgate-Completed: false`.
    Partial,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RouteAuth {
    /// Name of an entry in `authPolicies`.
    pub policy: String,
    /// Scopes the token must all carry (on top of the policy's).
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Other ways to satisfy this route: a token that meets any one of these requirements
    /// is accepted too (OpenAPI's `security` with several requirement objects).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub alternatives: Vec<AuthRequirement>,
}

impl RouteAuth {
    /// The main requirement followed by the alternatives.
    pub fn requirements(&self) -> impl Iterator<Item = (&str, &[String])> {
        std::iter::once((self.policy.as_str(), self.scopes.as_slice())).chain(
            self.alternatives
                .iter()
                .map(|a| (a.policy.as_str(), a.scopes.as_slice())),
        )
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AuthRequirement {
    pub policy: String,
    #[serde(default)]
    pub scopes: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RateLimit {
    /// Requests allowed per `per` window, refilled continuously (token bucket).
    pub requests: u32,
    pub per: Duration,
    /// Bucket size (default: `requests`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u32>,
    #[serde(default)]
    pub key: RateLimitKey,
}

/// What a rate limit counts by.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub enum RateLimitKey {
    /// The token's `sub` claim; the client IP on public routes.
    #[default]
    Subject,
    Ip,
    /// A request header, such as an API key.
    Header(String),
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Retries {
    /// Extra attempts after a connection error, for idempotent methods only.
    pub attempts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff: Option<Duration>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Cors {
    /// Allowed origins, or `*`.
    pub allow_origins: Vec<String>,
    #[serde(default)]
    pub allow_methods: Vec<Method>,
    #[serde(default)]
    pub allow_headers: Vec<String>,
    #[serde(default)]
    pub expose_headers: Vec<String>,
    #[serde(default)]
    pub allow_credentials: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age: Option<Duration>,
}

/// The identity provider section: this account's own issuer and the issuers it trusts.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct IdpConfig {
    /// This account's own token issuer (served by the gateway's embedded IdP).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<LocalIssuer>,
    /// Scopes the local issuer can grant. A list of named items.
    #[serde(default)]
    pub scopes: Vec<Scope>,
    /// OAuth2 clients of the local issuer. A list of named items (by `id`).
    #[serde(default)]
    pub clients: Vec<Client>,
    /// External issuers whose tokens routes may accept. A list of named items.
    #[serde(default)]
    pub trusted_issuers: Vec<TrustedIssuer>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LocalIssuer {
    /// The `iss` of tokens this account issues.
    pub url: String,
    /// `aud` values put into tokens and accepted by `local` policies by default.
    pub audiences: Vec<String>,
    /// Default token lifetime (default 15m).
    #[serde(default = "default_token_ttl")]
    pub token_ttl: Duration,
    pub signing_keys: SigningKeys,
    /// Token endpoint rate limits, per client and per caller IP [default: per client 10/s
    /// with a burst of 20, per IP 20/s with a burst of 40].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_rate_limit: Option<TokenRateLimit>,
}

/// How often `/oauth2/token` may be called. A client asks for a token once per lifetime, so
/// these are generous for honest callers and cut password guessing (every attempt costs an
/// argon2 verification) short.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TokenRateLimit {
    /// Per `client_id` named in the request (known or not).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_client: Option<Rate>,
    /// Per caller IP address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_ip: Option<Rate>,
}

/// A token bucket: `requests` per `per`, up to `burst` at once.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Rate {
    pub requests: u32,
    pub per: Duration,
    /// Bucket size (default: `requests`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u32>,
}

impl Rate {
    /// As a rate limit, for the gateway's rate limiter.
    pub fn as_rate_limit(&self) -> RateLimit {
        RateLimit {
            requests: self.requests,
            per: self.per,
            burst: self.burst,
            key: RateLimitKey::Ip,
        }
    }
}

fn default_token_ttl() -> Duration {
    Duration::from_secs(15 * 60)
}

/// Key rotation in three commits (docs/idp.md): publish the new key as `next`; make it
/// `active` and keep the old one as `previous`; drop `previous` once the tokens it signed
/// have expired. Tokens are signed with `active` only; all three are in the JWKS and verify.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SigningKeys {
    /// Signs every new token.
    pub active: SigningKey,
    /// Published ahead of time, so that when it becomes active every verifier (this
    /// account's gateways still on the older bundle, and anyone caching the JWKS) knows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<SigningKey>,
    /// The key `active` replaced: signs nothing, still verifies the tokens it signed until
    /// they expire.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<SigningKey>,
}

impl SigningKeys {
    /// Every key with its role: `active`, then `next`, then `previous`.
    pub fn all(&self) -> impl Iterator<Item = (&'static str, &SigningKey)> {
        std::iter::once(("active", &self.active))
            .chain(self.next.as_ref().map(|k| ("next", k)))
            .chain(self.previous.as_ref().map(|k| ("previous", k)))
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SigningKey {
    pub kid: String,
    pub algorithm: SigningAlgorithm,
    /// Where the private key (PEM) is read at run time. The key itself is never in git or
    /// in a bundle.
    #[serde(deserialize_with = "private_key_ref")]
    pub private_key: SecretRef,
}

/// Decodes a signing key's reference without ever echoing what was written: a private key
/// pasted inline (instead of a reference) is refused, and the message says how to refer to
/// it rather than repeating it.
fn private_key_ref<'de, D: serde::Deserializer<'de>>(d: D) -> Result<SecretRef, D::Error> {
    SecretRef::deserialize(d).map_err(|e| {
        let message = e.to_string();
        // These name keys only; every other message may quote the value.
        if message.starts_with("unknown field") || message.starts_with("missing field") {
            e
        } else {
            serde::de::Error::custom(
                "a signing key's privateKey is a reference to where the key is kept: exactly one of \
                 {file: /absolute/path}, {env: NAME} or {awsSecretsManager: arn:...}; a private key \
                 written into the repo is refused (value not shown)",
            )
        }
    })
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum SigningAlgorithm {
    RS256,
    ES256,
}

/// A reference to a secret held outside git.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub enum SecretRef {
    /// A file on the gateway's filesystem (e.g. a mounted Kubernetes secret).
    File(String),
    /// An environment variable of the gateway process.
    Env(String),
    /// An AWS Secrets Manager secret ARN, read with the gateway's role.
    AwsSecretsManager(String),
}

impl fmt::Display for SecretRef {
    /// Where the secret is, never what it is.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretRef::File(p) => write!(f, "file {p}"),
            SecretRef::Env(v) => write!(f, "environment variable {v}"),
            SecretRef::AwsSecretsManager(arn) => write!(f, "secret {arn}"),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Scope {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Client {
    /// The OAuth2 `client_id`.
    pub id: String,
    #[serde(deserialize_with = "client_secret")]
    #[schemars(with = "ClientSecret")]
    pub secret: ClientSecret,
    /// Scopes this client may request.
    pub scopes: Vec<String>,
    /// Token lifetime for this client (default: the issuer's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_ttl: Option<Duration>,
}

/// Decodes a client secret without ever echoing what was written: someone who pastes the
/// plain secret where the hash belongs must not see it again in CI logs.
fn client_secret<'de, D: serde::Deserializer<'de>>(d: D) -> Result<ClientSecret, D::Error> {
    ClientSecret::deserialize(d).map_err(|e| {
        let message = e.to_string();
        // These name keys only; every other message may quote the value.
        if message.starts_with("unknown field") || message.starts_with("missing field") {
            e
        } else {
            serde::de::Error::custom(
                "a client secret is exactly one of {argon2Hash: \"$argon2id$...\"} or {ref: {env|file|awsSecretsManager: ...}} \
                 (a patch that switches between them needs `$patch: replace`); plain secrets are never accepted (value not shown)",
            )
        }
    })
}

/// How a client's secret is checked. Plain secrets are never accepted.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub enum ClientSecret {
    /// An argon2 hash in PHC format (`$argon2id$v=19$...`). The gateway needs it, so it is
    /// in the bundle; plans, logs and reports show it only as a keyed fingerprint.
    Argon2Hash(Sensitive<String>),
    /// Where to read the argon2 hash at run time.
    Ref(SecretRef),
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TrustedIssuer {
    /// How auth policies refer to this issuer.
    pub name: String,
    /// The exact `iss` value of its tokens.
    pub issuer: String,
    /// Where its JWKS is fetched (cached; refetched on an unknown `kid`). Exactly one of
    /// `jwksUrl` and `jwks`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_url: Option<String>,
    /// An inline JWKS document (`{"keys": [...]}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks: Option<serde_json::Value>,
    /// Accepted `aud` values (required: tokens meant for someone else must not pass).
    pub audiences: Vec<String>,
    /// Accepted signature algorithms. Asymmetric only: `none` and HMAC are never accepted
    /// from an external issuer.
    pub algorithms: Vec<JwtAlgorithm>,
}

#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
pub enum JwtAlgorithm {
    RS256,
    RS384,
    RS512,
    PS256,
    PS384,
    PS512,
    ES256,
    ES384,
    EdDSA,
}

impl Bundle {
    /// The bundle as a JSON value with every object's keys sorted. Sorting is explicit, not
    /// left to serde_json's map type: a dependency that enables its `preserve_order`
    /// feature (features unify across a build) would otherwise change every digest.
    fn sorted_value(&self) -> serde_json::Value {
        let mut value = match serde_json::to_value(self) {
            Ok(v) => v,
            Err(e) => unreachable!("bundle types always serialize: {e}"),
        };
        value.sort_all_objects();
        value
    }

    /// The canonical bytes: sorted keys, no whitespace. What is stored and what is hashed.
    pub fn canonical_json(&self) -> Vec<u8> {
        match serde_json::to_vec(&self.sorted_value()) {
            Ok(v) => v,
            Err(e) => unreachable!("a JSON value always serializes: {e}"),
        }
    }

    pub fn digest(&self) -> Digest {
        Digest::of(&self.canonical_json())
    }

    /// Canonical, pretty-printed (sorted keys, two-space indent): what people diff and read.
    pub fn pretty_json(&self) -> String {
        match serde_json::to_string_pretty(&self.sorted_value()) {
            Ok(s) => s,
            Err(e) => unreachable!("a JSON value always serializes: {e}"),
        }
    }

    /// Parses stored bundle bytes and checks them against the digest they are stored under.
    pub fn from_stored(bytes: &[u8], expected: &Digest) -> Result<Bundle, LoadError> {
        let actual = Digest::of(bytes);
        if &actual != expected {
            return Err(LoadError::DigestMismatch {
                expected: expected.clone(),
                actual,
            });
        }
        let bundle: Bundle = serde_json::from_slice(bytes).map_err(LoadError::Json)?;
        if bundle.api_version != BUNDLE_API_VERSION {
            return Err(LoadError::ApiVersion(bundle.api_version));
        }
        Ok(bundle)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(
        "bundle content does not match its digest: expected {expected}, content hashes to {actual}"
    )]
    DigestMismatch { expected: Digest, actual: Digest },
    #[error("bundle is not valid bundle JSON: {0}")]
    Json(serde_json::Error),
    #[error("bundle apiVersion {0:?} is not supported (this gateway reads {BUNDLE_API_VERSION})")]
    ApiVersion(String),
}

#[cfg(test)]
mod tests;
