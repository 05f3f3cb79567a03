//! The customer-facing listener. A request goes through these steps, each with its reason:
//!
//! 1. **Request id and trace context**: accepted from the client when well formed, generated
//!    otherwise, and passed upstream, so one id follows the request through every log.
//! 2. **The bundle**: the request holds the bundle it started with until it ends; a reload
//!    never changes a request in flight. No bundle yet: 503.
//! 3. **Routing** (pure, [`crate::route::RouteTable`]): 404 or 405 with `Allow`.
//! 4. **Kill switch / flag**: a switched-off route answers its status without a backend.
//! 5. **CORS** (tower-http), which also answers preflights for the route.
//! 6. **Rate limit by IP or header** before auth, so unauthenticated floods are cut cheaply.
//! 7. **Auth**: bearer token, issuer, key, claims, scopes ([`crate::auth`]).
//! 8. **Rate limit by subject**, which needs the verified token.
//! 9. **Backend choice** (pure, [`crate::split`]): variants, canary weights, stickiness.
//! 10. **Proxy or aggregate** ([`crate::upstream`]).
//!
//! Every answer the gateway makes itself is a small JSON body; none carries internal
//! details (backend addresses, error chains), which go to the log with the request id.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::response::{IntoResponse, Response};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method as HttpMethod, StatusCode};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tower::{Layer as _, ServiceExt as _};
use tower_http::cors::CorsLayer;

use crate::auth::{self, Issuer, JwksFetcher, RemoteJwks, Requirement};
use crate::bundle::{
    Aggregate, Cors, Method, PartialFailure, RateLimitKey, Retries, WeightedBackend,
};
use crate::idp::{self, Idp};
use crate::ratelimit::{self, BoundedLimiter, Decision};
use crate::route::{PathTemplate, RouteMatch};
use crate::secrets::{Resolved, SecretStore, Secrets};
use crate::split::{Choice, Split};
use crate::upstream::{self, Clients, Failure, Outgoing, OutgoingBody, PartResult, Upstream};
use crate::{CompiledBundle, reload::Loaded};

/// JWKS over HTTP(S), one request at a time, bounded in time and size.
#[derive(Debug)]
pub struct HttpJwksFetcher {
    clients: Arc<Clients>,
}

impl HttpJwksFetcher {
    pub fn new(clients: Arc<Clients>) -> HttpJwksFetcher {
        HttpJwksFetcher { clients }
    }
}

/// Largest JWKS document accepted.
const MAX_JWKS_BYTES: usize = 1 << 20;

impl JwksFetcher for HttpJwksFetcher {
    fn fetch<'a>(
        &'a self,
        url: &'a str,
    ) -> std::pin::Pin<
        Box<dyn Future<Output = Result<jsonwebtoken::jwk::JwkSet, String>> + Send + 'a>,
    > {
        Box::pin(async move {
            use http_body_util::BodyExt as _;
            let uri: http::Uri = url.parse().map_err(|e| format!("{url}: {e}"))?;
            let req = http::Request::get(uri)
                .header(header::ACCEPT, "application/json")
                .body(Body::empty())
                .map_err(|e| e.to_string())?;
            let client = self.clients.get(None)?;
            let resp = tokio::time::timeout(Duration::from_secs(5), client.request(req))
                .await
                .map_err(|_| format!("{url}: timed out"))?
                .map_err(|e| format!("{url}: {e}"))?;
            if !resp.status().is_success() {
                return Err(format!("{url}: status {}", resp.status()));
            }
            let body = http_body_util::Limited::new(resp.into_body(), MAX_JWKS_BYTES)
                .collect()
                .await
                .map_err(|e| format!("{url}: {e}"))?
                .to_bytes();
            serde_json::from_slice(&body).map_err(|e| format!("{url}: not a JWKS document: {e}"))
        })
    }
}

/// Every label value comes from the bundle (route, backend) or from a fixed set, so no
/// client can add series: a method is one of [`METHOD_LABELS`], a status one of
/// [`STATUS_CLASSES`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RequestLabels {
    route: String,
    method: &'static str,
    status: &'static str,
}

/// The `method` label's values: the methods of RFC 9110 and PATCH, anything else `other`.
pub const METHOD_LABELS: [&str; 10] = [
    "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE", "other",
];

/// The `status` label's values.
pub const STATUS_CLASSES: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", "other"];

/// The `method` label of a request method.
pub fn method_label(m: &HttpMethod) -> &'static str {
    match *m {
        HttpMethod::GET => "GET",
        HttpMethod::HEAD => "HEAD",
        HttpMethod::POST => "POST",
        HttpMethod::PUT => "PUT",
        HttpMethod::PATCH => "PATCH",
        HttpMethod::DELETE => "DELETE",
        HttpMethod::OPTIONS => "OPTIONS",
        HttpMethod::CONNECT => "CONNECT",
        HttpMethod::TRACE => "TRACE",
        _ => "other",
    }
}

/// The `status` label of a status code: its class.
pub fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        500..=599 => "5xx",
        _ => "other",
    }
}

/// Kinds of `upstream_errors`.
const UPSTREAM_KINDS: [&str; 5] = ["connect", "timeout", "protocol", "body_too_large", "part"];

/// Statuses of `auth_rejected`.
const AUTH_STATUSES: [u16; 4] = [400, 401, 403, 503];

/// Kinds of `client_errors`: requests that failed through the client's fault, never counted
/// as the gateway's or a backend's errors.
pub const CLIENT_ERROR_KINDS: [&str; 4] = [
    "body_malformed",
    "body_incomplete",
    "body_timeout",
    "aborted",
];

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ClientErrorLabels {
    route: String,
    kind: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RouteLabels {
    route: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct UpstreamLabels {
    route: String,
    backend: String,
    kind: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct AuthLabels {
    route: String,
    status: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct BackendLabels {
    route: String,
    backend: String,
}

type HistogramFamily = Family<RouteLabels, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 0.25 ms .. ~16 s.
    Histogram::new(exponential_buckets(0.000_25, 2.0, 17))
}

/// The data plane's metrics, in the gateway's registry.
#[derive(Debug, Clone)]
pub struct Metrics {
    requests: Family<RequestLabels, Counter>,
    duration: HistogramFamily,
    upstream_errors: Family<UpstreamLabels, Counter>,
    upstream_requests: Family<BackendLabels, Counter>,
    rate_limited: Family<RouteLabels, Counter>,
    auth_rejected: Family<AuthLabels, Counter>,
    client_errors: Family<ClientErrorLabels, Counter>,
    idp_tokens: Family<TokenLabels, Counter>,
}

/// The `result` label's values of `idp_token_requests`: `issued` or an OAuth error.
const TOKEN_RESULTS: [&str; 7] = [
    "issued",
    "invalid_client",
    "invalid_request",
    "invalid_scope",
    "temporarily_unavailable",
    "too_many_requests",
    "unsupported_grant_type",
];

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct TokenLabels {
    /// A client of the bundle, or `-` (unknown or unparsed).
    client: String,
    /// `issued` or the OAuth error code.
    result: String,
}

impl Metrics {
    pub fn register(registry: &mut Registry) -> Metrics {
        let m = Metrics {
            requests: Family::default(),
            duration: Family::new_with_constructor(latency_histogram as fn() -> Histogram),
            upstream_errors: Family::default(),
            upstream_requests: Family::default(),
            rate_limited: Family::default(),
            auth_rejected: Family::default(),
            client_errors: Family::default(),
            idp_tokens: Family::default(),
        };
        registry.register(
            "idp_token_requests",
            "Token endpoint requests, by client (\"-\" when unknown) and result (issued, or the OAuth error)",
            m.idp_tokens.clone(),
        );
        registry.register(
            "http_requests",
            "Requests answered, by route, method and status (route \"-\" when none matched)",
            m.requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "Time from request to response headers, by route",
            m.duration.clone(),
        );
        registry.register(
            "upstream_requests",
            "Requests sent to a backend, by route and backend",
            m.upstream_requests.clone(),
        );
        registry.register(
            "upstream_errors",
            "Backend calls that failed, by route, backend and kind (connect, timeout, protocol)",
            m.upstream_errors.clone(),
        );
        registry.register(
            "rate_limited",
            "Requests refused with 429, by route",
            m.rate_limited.clone(),
        );
        registry.register(
            "auth_rejected",
            "Requests refused by auth (401, 403, 503), by route",
            m.auth_rejected.clone(),
        );
        registry.register(
            "client_errors",
            "Requests that failed through the client's fault (a malformed, cut-short or stalled body, or the client gone before the answer), by route and kind; never counted as 5xx or upstream errors",
            m.client_errors.clone(),
        );
        m
    }

    fn client_error(&self, route: &str, kind: &'static str) {
        self.client_errors
            .get_or_create(&ClientErrorLabels {
                route: route.to_string(),
                kind,
            })
            .inc();
    }

    /// Removes the series of routes, backends and IdP clients that `old` had and `new` has
    /// not, so a gateway that lives through many bundles keeps only the series of the one it
    /// serves.
    pub fn forget(&self, old: &Runtime, new: &Runtime) {
        if let Some(old_idp) = &old.idp {
            let kept: std::collections::HashSet<&str> =
                new.idp.iter().flat_map(|i| i.client_ids()).collect();
            for client in old_idp.client_ids().filter(|c| !kept.contains(c)) {
                for result in TOKEN_RESULTS {
                    self.idp_tokens.remove(&TokenLabels {
                        client: client.to_string(),
                        result: result.to_string(),
                    });
                }
            }
        }
        let routes: std::collections::HashSet<&str> =
            new.routes.iter().map(|r| r.name.as_str()).collect();
        for r in &old.routes {
            let gone = !routes.contains(r.name.as_str());
            if gone {
                let route = || r.name.clone();
                for method in METHOD_LABELS {
                    for status in STATUS_CLASSES {
                        self.requests.remove(&RequestLabels {
                            route: route(),
                            method,
                            status,
                        });
                    }
                }
                self.duration.remove(&RouteLabels { route: route() });
                self.rate_limited.remove(&RouteLabels { route: route() });
                for status in AUTH_STATUSES {
                    self.auth_rejected.remove(&AuthLabels {
                        route: route(),
                        status,
                    });
                }
                for kind in CLIENT_ERROR_KINDS {
                    self.client_errors.remove(&ClientErrorLabels {
                        route: route(),
                        kind,
                    });
                }
            }
            for b in old.backends.keys() {
                if gone || !new.backends.contains_key(b) {
                    let labels = BackendLabels {
                        route: r.name.clone(),
                        backend: b.clone(),
                    };
                    self.upstream_requests.remove(&labels);
                    for kind in UPSTREAM_KINDS {
                        self.upstream_errors.remove(&UpstreamLabels {
                            route: r.name.clone(),
                            backend: b.clone(),
                            kind,
                        });
                    }
                }
            }
        }
    }
}

impl Metrics {
    fn record_token(&self, client: String, result: idp::TokenResult) {
        let result = match result {
            idp::TokenResult::Issued => "issued".to_string(),
            idp::TokenResult::Refused(code) => code.to_string(),
        };
        self.idp_tokens
            .get_or_create(&TokenLabels { client, result })
            .inc();
    }
}

/// Counts since the served bundle was loaded, for `status/<instance>.json`.
#[derive(Debug, Default)]
pub struct Counts {
    pub status_2xx: AtomicU64,
    pub status_3xx: AtomicU64,
    pub status_4xx: AtomicU64,
    pub status_5xx: AtomicU64,
    pub upstream_errors: AtomicU64,
}

impl Counts {
    fn record(&self, status: u16) {
        let c = match status {
            200..=299 => &self.status_2xx,
            300..=399 => &self.status_3xx,
            400..=499 => &self.status_4xx,
            _ => &self.status_5xx,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }
}

/// Client keys one route's rate limiter holds by default: a key costs about 40 bytes
/// however long the client made it, so 16,384 is under 1 MiB per limited route.
pub const DEFAULT_RATE_LIMIT_KEYS: usize = 16_384;

/// Verified tokens remembered per loaded bundle by default: about 1 KiB each.
pub const DEFAULT_JWT_CACHE_SIZE: usize = 4096;

/// Settings of the data plane that are not in the bundle.
#[derive(Clone)]
pub struct Options {
    /// Least time between two fetches of one JWKS URL (unknown `kid` floods).
    pub jwks_refetch_interval: Duration,
    /// Reads the secrets bundles refer to (signing keys, client secret hashes).
    pub secrets: Arc<dyn SecretStore>,
    /// Backend URLs replaced by name (`fleetgate up` points the example's backends at its
    /// demo servers). Empty in production: the bundle's URLs are used as they are.
    pub backend_overrides: BTreeMap<String, String>,
    /// `None`: the real HTTP fetcher.
    pub jwks_fetcher: Option<Arc<dyn JwksFetcher>>,
    /// Verified tokens remembered per loaded bundle (0: verify every request).
    pub jwt_cache_size: usize,
    /// Most client keys (addresses, subjects, API keys) one route's rate limiter holds;
    /// past it, new keys share one overflow bucket until a key goes idle.
    pub rate_limit_keys: usize,
    /// Peers whose `X-Forwarded-For` names the client (`--trusted-proxies`).
    pub trusted_proxies: crate::client_addr::TrustedProxies,
}

impl std::fmt::Debug for Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Options")
            .field("jwks_refetch_interval", &self.jwks_refetch_interval)
            .field("jwt_cache_size", &self.jwt_cache_size)
            .field("backend_overrides", &self.backend_overrides)
            .finish_non_exhaustive()
    }
}

impl Default for Options {
    fn default() -> Self {
        Options {
            jwks_refetch_interval: Duration::from_secs(30),
            secrets: Arc::new(Secrets::default()),
            backend_overrides: BTreeMap::new(),
            jwks_fetcher: None,
            jwt_cache_size: DEFAULT_JWT_CACHE_SIZE,
            rate_limit_keys: DEFAULT_RATE_LIMIT_KEYS,
            trusted_proxies: crate::client_addr::TrustedProxies::none(),
        }
    }
}

/// What outlives a bundle: connection pools, JWKS caches, metrics.
pub struct Shared {
    pub options: Options,
    pub clients: Arc<Clients>,
    /// The loaded bundles' JWKS caches by URL, held weakly ([`auth::shared_jwks`]).
    jwks: std::sync::Mutex<HashMap<String, std::sync::Weak<RemoteJwks>>>,
    fetcher: Arc<dyn JwksFetcher>,
    pub metrics: Metrics,
    /// Bounds the token endpoint's argon2 work, across bundles.
    pub verifier: idp::Verifier,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl Shared {
    pub fn new(options: Options, registry: &mut Registry) -> Shared {
        let clients = Arc::new(Clients::default());
        let fetcher: Arc<dyn JwksFetcher> = match &options.jwks_fetcher {
            Some(f) => f.clone(),
            None => Arc::new(HttpJwksFetcher::new(clients.clone())),
        };
        Shared {
            options,
            clients,
            jwks: std::sync::Mutex::new(HashMap::new()),
            fetcher,
            metrics: Metrics::register(registry),
            verifier: idp::Verifier::default(),
        }
    }

    fn remote_jwks(&self, url: &str) -> Arc<RemoteJwks> {
        let mut jwks = self
            .jwks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        auth::shared_jwks(&mut jwks, url, || {
            RemoteJwks::new(
                url.to_string(),
                self.options.jwks_refetch_interval,
                self.fetcher.clone(),
            )
        })
    }
}

/// Where a route sends requests.
#[derive(Debug)]
pub enum Target {
    Split(Split),
    Aggregate(Aggregate),
}

/// A route, ready for the request path.
pub struct RouteRuntime {
    pub name: String,
    pub disabled: Option<StatusCode>,
    /// Empty: public.
    pub requirements: Vec<Requirement>,
    pub limiter: Option<BoundedLimiter>,
    pub cors: Option<CorsLayer>,
    pub timeout: Duration,
    pub max_body: u64,
    pub retries: Option<Retries>,
    pub upstream_path: Option<String>,
    pub target: Target,
}

impl std::fmt::Debug for RouteRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouteRuntime")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// Everything the request path needs for one bundle, built off the request path when the
/// bundle is swapped in.
#[derive(Debug)]
pub struct Runtime {
    pub routes: Vec<RouteRuntime>,
    pub backends: HashMap<String, Upstream>,
    pub issuers: HashMap<String, Issuer>,
    /// Tokens verified under this bundle's issuers.
    pub verified: auth::VerifiedTokens,
    /// Headers that carry forwarded claims: stripped from every incoming request, so a
    /// client cannot pose as someone by sending them itself.
    pub claim_headers: Vec<HeaderName>,
    pub counts: Counts,
    /// The embedded IdP, when the bundle has an issuer.
    pub idp: Option<Idp>,
    /// Problems that do not stop the bundle (e.g. an unreadable local signing key).
    pub warnings: Vec<String>,
    /// Secrets that could not be read: tried again at the next poll.
    pub secret_failures: Vec<String>,
}

fn cors_layer(c: &Cors) -> CorsLayer {
    use tower_http::cors::{AllowOrigin, Any};
    let mut layer = CorsLayer::new();
    layer = if c.allow_origins.iter().any(|o| o == "*") {
        layer.allow_origin(Any)
    } else {
        layer.allow_origin(AllowOrigin::list(
            c.allow_origins
                .iter()
                .filter_map(|o| HeaderValue::from_str(o).ok()),
        ))
    };
    let methods: Vec<HttpMethod> = c
        .allow_methods
        .iter()
        .filter_map(|m| HttpMethod::from_bytes(m.as_str().as_bytes()).ok())
        .collect();
    if !methods.is_empty() {
        layer = layer.allow_methods(methods);
    }
    let headers: Vec<HeaderName> = c
        .allow_headers
        .iter()
        .filter_map(|h| HeaderName::from_bytes(h.as_bytes()).ok())
        .collect();
    if !headers.is_empty() {
        layer = layer.allow_headers(headers);
    }
    let expose: Vec<HeaderName> = c
        .expose_headers
        .iter()
        .filter_map(|h| HeaderName::from_bytes(h.as_bytes()).ok())
        .collect();
    if !expose.is_empty() {
        layer = layer.expose_headers(expose);
    }
    if c.allow_credentials {
        layer = layer.allow_credentials(true);
    }
    if let Some(age) = c.max_age {
        layer = layer.max_age(age.as_std());
    }
    layer
}

impl Runtime {
    /// Builds the runtime of `compiled`. Rate limiters of routes whose limit did not change
    /// are carried over from `previous`.
    /// `secrets` holds what the bundle's secret references point at ([`crate::secrets::resolve`]).
    pub fn build(
        compiled: &CompiledBundle,
        previous: Option<&Runtime>,
        shared: &Shared,
        secrets: &Resolved,
    ) -> Result<Runtime, String> {
        let gw = &compiled.bundle.gateway;
        let mut backends = HashMap::new();
        for (name, b) in &gw.backends {
            let location = shared.options.backend_overrides.get(name).unwrap_or(&b.url);
            let url = url::Url::parse(location).map_err(|e| format!("backend {name}: {e}"))?;
            let base = format!(
                "{}://{}{}",
                url.scheme(),
                url.host_str().unwrap_or_default(),
                url.port().map(|p| format!(":{p}")).unwrap_or_default()
            ) + url.path().trim_end_matches('/');
            backends.insert(
                name.clone(),
                Upstream {
                    name: name.clone(),
                    base,
                    timeout: b.timeout.map(|t| t.as_std()),
                    client: shared
                        .clients
                        .get(b.connect_timeout.map(|t| t.as_std()))
                        .map_err(|e| format!("backend {name}: {e}"))?,
                },
            );
        }
        let mut warnings = Vec::new();
        let issuers = auth::issuers_of(
            &compiled.bundle.idp,
            &compiled.inline_jwks,
            |url| shared.remote_jwks(url),
            secrets,
        );
        for i in issuers.values() {
            if let auth::KeySource::Unavailable(why) = &i.keys {
                warnings.push(format!("issuer {}: {why}", i.name));
            }
        }
        let claim_headers = {
            let mut v: Vec<HeaderName> = gw
                .auth_policies
                .values()
                .flat_map(|p| p.forward_claims.values())
                .filter_map(|h| HeaderName::from_bytes(h.as_bytes()).ok())
                .collect();
            v.sort_by(|a, b| a.as_str().cmp(b.as_str()));
            v.dedup();
            v
        };
        let old: HashMap<&str, &BoundedLimiter> = previous
            .map(|p| {
                p.routes
                    .iter()
                    .filter_map(|r| r.limiter.as_ref().map(|l| (r.name.as_str(), l)))
                    .collect()
            })
            .unwrap_or_default();
        let mut routes = Vec::with_capacity(gw.routes.len());
        for (route, c) in gw.routes.iter().zip(&compiled.routes) {
            let target = match &route.aggregate {
                Some(a) => Target::Aggregate(a.clone()),
                None => Target::Split(Split {
                    variants: route.variants.clone(),
                    weighted: if route.backends.is_empty() {
                        route
                            .backend
                            .iter()
                            .map(|b| WeightedBackend {
                                backend: b.clone(),
                                weight: 1,
                            })
                            .collect()
                    } else {
                        route.backends.clone()
                    },
                    sticky: route.sticky.clone(),
                }),
            };
            let limiter = c
                .rate_limit
                .as_ref()
                .map(|rl| match old.get(route.name.as_str()) {
                    Some(l)
                        if l.config == *rl && l.max_keys() == shared.options.rate_limit_keys =>
                    {
                        (*l).clone()
                    }
                    _ => BoundedLimiter::new(rl, shared.options.rate_limit_keys),
                });
            routes.push(RouteRuntime {
                name: route.name.clone(),
                disabled: c.disabled.and_then(|s| StatusCode::from_u16(s).ok()),
                requirements: c
                    .auth
                    .as_ref()
                    .map(|a| Requirement::from_route(a, &gw.auth_policies))
                    .unwrap_or_default(),
                limiter,
                cors: c.cors.as_ref().map(cors_layer),
                timeout: c.timeout.as_std(),
                max_body: c.max_body_bytes,
                retries: c.retries.clone(),
                upstream_path: route.upstream_path.clone(),
                target,
            });
        }
        // Fetch remote JWKS now rather than on the first request.
        for i in issuers.values() {
            if let auth::KeySource::Remote(jwks) = &i.keys
                && jwks.keys().is_empty()
            {
                let jwks = jwks.clone();
                tokio::spawn(async move {
                    jwks.refresh().await;
                });
            }
        }
        let idp = Idp::build(
            &compiled.bundle.idp,
            &compiled.bundle.account,
            secrets,
            previous.and_then(|p| p.idp.as_ref()),
            &mut warnings,
        );
        warnings.sort();
        warnings.dedup();
        Ok(Runtime {
            routes,
            backends,
            issuers,
            verified: auth::VerifiedTokens::new(shared.options.jwt_cache_size),
            claim_headers,
            counts: Counts::default(),
            idp,
            warnings,
            secret_failures: secrets.failures(),
        })
    }

    /// Forgets idle rate-limit clients.
    pub fn housekeeping(&self) {
        for r in &self.routes {
            if let Some(l) = &r.limiter {
                l.forget_idle();
            }
        }
        if let Some(idp) = &self.idp {
            idp.housekeeping();
        }
    }
}

/// The state of the customer listener.
#[derive(Debug, Clone)]
pub struct DataPlane {
    pub gateway: Arc<crate::reload::Gateway>,
}

/// The customer-facing router. Serve it with connect info (`into_make_service_with_connect_info::<SocketAddr>`).
pub fn router(gateway: Arc<crate::reload::Gateway>) -> axum::Router {
    axum::Router::new()
        .fallback(handle)
        .with_state(DataPlane { gateway })
}

/// Per-request facts that every step and the access log use.
#[derive(Debug, Clone)]
struct Ctx {
    request_id: HeaderValue,
    traceparent: HeaderValue,
    client_ip: IpAddr,
    host: String,
    method: HttpMethod,
    path: String,
    start: Instant,
}

fn hex_id(bytes: usize) -> String {
    let mut s = String::with_capacity(bytes * 2);
    while s.len() < bytes * 2 {
        s.push_str(&format!("{:016x}", fastrand::u64(1..)));
    }
    s.truncate(bytes * 2);
    s
}

/// The client's `x-request-id` when it is a sane token, else a new one.
fn request_id(headers: &HeaderMap) -> HeaderValue {
    headers
        .get("x-request-id")
        .filter(|v| {
            let b = v.as_bytes();
            (1..=128).contains(&b.len())
                && b.iter()
                    .all(|c| c.is_ascii_alphanumeric() || b"-_.:".contains(c))
        })
        .cloned()
        .unwrap_or_else(|| {
            HeaderValue::from_str(&hex_id(16)).unwrap_or(HeaderValue::from_static("0"))
        })
}

/// W3C trace context: keep the trace id and flags of a valid incoming `traceparent`, with
/// this gateway's own span id as the parent for the backend; start a trace otherwise.
fn traceparent(headers: &HeaderMap) -> HeaderValue {
    let incoming = headers
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let parts: Vec<&str> = v.trim().split('-').collect();
            let hex = |s: &str, n: usize| {
                s.len() == n
                    && s.bytes()
                        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            };
            (parts.len() >= 4
                && hex(parts[0], 2)
                && parts[0] != "ff"
                && hex(parts[1], 32)
                && parts[1] != "0".repeat(32)
                && hex(parts[2], 16)
                && parts[2] != "0".repeat(16)
                && hex(parts[3], 2))
            .then(|| (parts[1].to_string(), parts[3].to_string()))
        });
    let (trace, flags) = incoming.unwrap_or_else(|| (hex_id(16), "00".into()));
    HeaderValue::from_str(&format!("00-{trace}-{}-{flags}", hex_id(8))).unwrap_or(
        HeaderValue::from_static("00-00000000000000000000000000000001-0000000000000001-00"),
    )
}

/// 413 for a body over the route's limit, announced or streamed.
fn too_large(ctx: &Ctx, route: &RouteRuntime) -> Response {
    json_error(
        ctx,
        StatusCode::PAYLOAD_TOO_LARGE,
        "body_too_large",
        &format!("the request body is larger than {} bytes", route.max_body),
    )
}

fn json_error(ctx: &Ctx, status: StatusCode, code: &str, message: &str) -> Response {
    let body = serde_json::json!({
        "error": code,
        "message": message,
        "request_id": ctx.request_id.to_str().unwrap_or_default(),
    });
    (status, axum::Json(body)).into_response()
}

async fn handle(
    State(plane): State<DataPlane>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
) -> Response {
    let headers = req.headers();
    // RFC 9112 3.2.2: a request in absolute form names its host in the target, and the
    // Host header is ignored. Its userinfo (`http://x@host/`) is no part of the host.
    let host = match req.uri().authority() {
        Some(a) => match a.port() {
            Some(port) => format!("{}:{port}", a.host()),
            None => a.host().to_string(),
        },
        None => headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or_default()
            .to_string(),
    };
    let mut ctx = Ctx {
        request_id: request_id(headers),
        traceparent: traceparent(headers),
        client_ip: crate::client_addr::client_ip(
            peer.ip(),
            headers,
            &plane.gateway.shared().options.trusted_proxies,
        ),
        host,
        method: req.method().clone(),
        path: String::new(),
        start: Instant::now(),
    };
    // One normalized path is routed, authorized, logged and forwarded.
    match crate::normalize::normalize_path(req.uri().path()) {
        Ok(p) => ctx.path = p,
        Err(why) => {
            ctx.path = "-".into();
            let resp = json_error(&ctx, StatusCode::BAD_REQUEST, "bad_path", &why.to_string());
            return finish(&plane, None, "-", &ctx, resp);
        }
    }
    if let Some(why) = ambiguous_headers(req.headers()) {
        let resp = json_error(&ctx, StatusCode::BAD_REQUEST, "bad_request", why);
        return finish(&plane, None, "-", &ctx, resp);
    }
    let Some(loaded) = plane.gateway.current() else {
        let resp = json_error(
            &ctx,
            StatusCode::SERVICE_UNAVAILABLE,
            "not_ready",
            "the gateway has no configuration loaded yet",
        );
        return finish(&plane, None, "-", &ctx, resp);
    };
    if let Some(idp) = &loaded.runtime.idp
        && let Some(endpoint) = idp::Endpoint::of(&ctx.path)
    {
        let shared = plane.gateway.shared();
        let (resp, token) = idp::serve(idp, endpoint, &shared.verifier, ctx.client_ip, req).await;
        if let Some((client, result)) = token {
            shared.metrics.record_token(client, result);
        }
        return finish(&plane, Some(&loaded), endpoint.name(), &ctx, resp);
    }
    let (route_idx, resp) = route_and_serve(&plane, &loaded, &ctx, req).await;
    let route_name = route_idx.map_or("-", |i| loaded.runtime.routes[i].name.as_str());
    finish(&plane, Some(&loaded), route_name, &ctx, resp)
}

/// Headers a request may carry at most once: with two, the gateway and the backend could
/// each act on a different one (RFC 9112 3.2 for Host; one credential per request).
fn ambiguous_headers(headers: &HeaderMap) -> Option<&'static str> {
    let twice = |name: &HeaderName| {
        let mut all = headers.get_all(name).iter();
        all.next().is_some() && all.next().is_some()
    };
    if twice(&header::HOST) {
        Some("more than one Host header")
    } else if twice(&header::AUTHORIZATION) {
        Some("more than one Authorization header")
    } else {
        None
    }
}

/// Whether `name` is another spelling of a header the gateway sets itself (forwarded claims,
/// `x-fleetgate-*`, the forwarding headers): `_` for `-`. CGI, WSGI, Rack and PHP read
/// `X_Fleetgate_Tenant` as `X-Fleetgate-Tenant`, so such a header would pose as the gateway's.
fn spoofs_gateway_header(name: &HeaderName, claim_headers: &[HeaderName]) -> bool {
    let n = name.as_str();
    if n.starts_with("x-fleetgate-") {
        return true;
    }
    if !n.contains('_') {
        return false;
    }
    let dashed = n.replace('_', "-");
    dashed.starts_with("x-fleetgate-")
        || dashed.starts_with("x-forwarded-")
        || matches!(dashed.as_str(), "x-request-id" | "x-real-ip" | "forwarded")
        || claim_headers.iter().any(|h| h.as_str() == dashed)
}

/// Removes every client copy of a header the gateway sets: exact names and other spellings.
fn strip_gateway_headers(headers: &mut HeaderMap, claim_headers: &[HeaderName]) {
    for h in claim_headers {
        headers.remove(h);
    }
    let spoofed: Vec<HeaderName> = headers
        .keys()
        .filter(|n| spoofs_gateway_header(n, claim_headers))
        .cloned()
        .collect();
    for h in spoofed {
        headers.remove(h);
    }
}

/// Metrics, counts and the access log for a finished request.
fn finish(
    plane: &DataPlane,
    loaded: Option<&Loaded>,
    route_name: &str,
    ctx: &Ctx,
    mut resp: Response,
) -> Response {
    let status = resp.status().as_u16();
    let m = &plane.gateway.shared().metrics;
    m.requests
        .get_or_create(&RequestLabels {
            route: route_name.to_string(),
            method: method_label(&ctx.method),
            status: status_class(status),
        })
        .inc();
    let elapsed = ctx.start.elapsed();
    m.duration
        .get_or_create(&RouteLabels {
            route: route_name.to_string(),
        })
        .observe(elapsed.as_secs_f64());
    if let Some(l) = loaded {
        l.runtime.counts.record(status);
    }
    resp.headers_mut().insert(
        HeaderName::from_static("x-request-id"),
        ctx.request_id.clone(),
    );
    // The path only: query strings may carry credentials or personal data.
    tracing::info!(
        target: "fleetgate::access",
        request_id = ctx.request_id.to_str().unwrap_or_default(),
        trace_id = ctx.traceparent.to_str().unwrap_or_default().get(3..35).unwrap_or_default(),
        client_ip = %ctx.client_ip,
        host = %ctx.host,
        method = %ctx.method,
        path = %ctx.path,
        route = route_name,
        status,
        duration_ms = elapsed.as_secs_f64() * 1000.0,
        digest = loaded.map(|l| l.digest.short()).unwrap_or("-"),
    );
    resp
}

async fn route_and_serve(
    plane: &DataPlane,
    loaded: &Arc<Loaded>,
    ctx: &Ctx,
    req: Request,
) -> (Option<usize>, Response) {
    let compiled = &loaded.compiled;
    let Some(method) = Method::parse(req.method().as_str()) else {
        return (
            None,
            json_error(
                ctx,
                StatusCode::NOT_IMPLEMENTED,
                "method_not_supported",
                "this method is not supported",
            ),
        );
    };
    let found = compiled.table.find(&ctx.host, method, &ctx.path);
    let (index, params) = match found {
        RouteMatch::Found { route, params } => (
            route,
            params
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect::<Vec<_>>(),
        ),
        RouteMatch::MethodNotAllowed { allowed } => {
            // A CORS preflight asks about the method it will use, not OPTIONS.
            if method == Method::Options
                && let Some(preflight) = preflight(loaded, ctx, &req)
            {
                return preflight.await;
            }
            let allow = allowed
                .iter()
                .map(|m| m.as_str())
                .collect::<Vec<_>>()
                .join(", ");
            let mut resp = json_error(
                ctx,
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                &format!("{} is not allowed here; allowed: {allow}", ctx.method),
            );
            if let Ok(v) = HeaderValue::from_str(&allow) {
                resp.headers_mut().insert(header::ALLOW, v);
            }
            return (None, resp);
        }
        RouteMatch::NotFound => {
            return (
                None,
                json_error(
                    ctx,
                    StatusCode::NOT_FOUND,
                    "not_found",
                    &format!("no route for {} {}", ctx.method, ctx.path),
                ),
            );
        }
    };
    let route = &loaded.runtime.routes[index];
    let resp = match &route.cors {
        Some(cors) => {
            let (plane, loaded, ctx2) = (plane.clone(), loaded.clone(), ctx.clone());
            let params = params.clone();
            let inner = tower::service_fn(move |req: Request| {
                let (plane, loaded, ctx, params) =
                    (plane.clone(), loaded.clone(), ctx2.clone(), params.clone());
                async move {
                    Ok::<_, std::convert::Infallible>(
                        serve_route(&plane, &loaded, index, &params, &ctx, req).await,
                    )
                }
            });
            match cors.layer(inner).oneshot(req).await {
                Ok(r) => r.map(Body::new),
                Err(never) => match never {},
            }
        }
        None => serve_route(plane, loaded, index, &params, ctx, req).await,
    };
    (Some(index), resp)
}

/// Answers a CORS preflight for the route the preflight asks about, if it has CORS.
fn preflight<'a>(
    loaded: &'a Arc<Loaded>,
    ctx: &'a Ctx,
    req: &Request,
) -> Option<impl Future<Output = (Option<usize>, Response)> + 'a> {
    let asked = req
        .headers()
        .get(header::ACCESS_CONTROL_REQUEST_METHOD)
        .and_then(|v| v.to_str().ok())
        .and_then(Method::parse)?;
    req.headers().get(header::ORIGIN)?;
    let RouteMatch::Found { route, .. } = loaded.compiled.table.find(&ctx.host, asked, &ctx.path)
    else {
        return None;
    };
    let cors = loaded.runtime.routes[route].cors.clone()?;
    let mut pre = http::Request::new(Body::empty());
    *pre.method_mut() = HttpMethod::OPTIONS;
    *pre.uri_mut() = req.uri().clone();
    *pre.headers_mut() = req.headers().clone();
    Some(async move {
        let inner = tower::service_fn(|_req: Request| async {
            Ok::<_, std::convert::Infallible>(StatusCode::NO_CONTENT.into_response())
        });
        let resp = match cors.layer(inner).oneshot(pre).await {
            Ok(r) => r.map(Body::new),
            Err(never) => match never {},
        };
        (Some(route), resp)
    })
}

fn limited(
    ctx: &Ctx,
    route: &RouteRuntime,
    limiter: &BoundedLimiter,
    d: Decision,
    m: &Metrics,
) -> Option<Response> {
    if let Decision::Limited { .. } = d {
        m.rate_limited
            .get_or_create(&RouteLabels {
                route: route.name.clone(),
            })
            .inc();
        let mut resp = json_error(
            ctx,
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            "too many requests; retry later",
        );
        d.headers(&limiter.policy(), resp.headers_mut());
        return Some(resp);
    }
    None
}

/// Counts and logs a request whose client went away before its answer: the server drops
/// the request's future, so nothing else would.
struct AbortGuard<'a> {
    plane: &'a DataPlane,
    route: &'a str,
    ctx: &'a Ctx,
    armed: bool,
}

impl Drop for AbortGuard<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        self.plane
            .gateway
            .shared()
            .metrics
            .client_error(self.route, "aborted");
        tracing::info!(
            target: "fleetgate::access",
            request_id = self.ctx.request_id.to_str().unwrap_or_default(),
            client_ip = %self.ctx.client_ip,
            host = %self.ctx.host,
            method = %self.ctx.method,
            path = %self.ctx.path,
            route = self.route,
            status = 499u16,
            aborted = true,
            duration_ms = self.ctx.start.elapsed().as_secs_f64() * 1000.0,
        );
    }
}

async fn serve_route(
    plane: &DataPlane,
    loaded: &Arc<Loaded>,
    index: usize,
    params: &[(String, String)],
    ctx: &Ctx,
    req: Request,
) -> Response {
    let mut guard = AbortGuard {
        plane,
        route: &loaded.runtime.routes[index].name,
        ctx,
        armed: true,
    };
    let resp = serve_route_inner(plane, loaded, index, params, ctx, req).await;
    guard.armed = false;
    resp
}

async fn serve_route_inner(
    plane: &DataPlane,
    loaded: &Arc<Loaded>,
    index: usize,
    params: &[(String, String)],
    ctx: &Ctx,
    mut req: Request,
) -> Response {
    let rt = &loaded.runtime;
    let route = &rt.routes[index];
    let m = &plane.gateway.shared().metrics;
    if let Some(status) = route.disabled {
        return json_error(
            ctx,
            status,
            "route_disabled",
            "this operation is switched off",
        );
    }
    // Claim headers are the gateway's to set; a client's copies, in any spelling, are
    // dropped on every route.
    strip_gateway_headers(req.headers_mut(), &rt.claim_headers);
    let mut rate_headers = None;
    if let Some(l) = &route.limiter
        && l.config.key != RateLimitKey::Subject
    {
        let key = ratelimit::client_key(&l.config.key, req.headers(), None, ctx.client_ip);
        let d = l.check(&key);
        if let Some(resp) = limited(ctx, route, l, d, m) {
            return resp;
        }
        rate_headers = Some((d, l.policy()));
    }
    let mut principal = None;
    if !route.requirements.is_empty() {
        match auth::authenticate(
            req.headers(),
            &route.requirements,
            &rt.issuers,
            &rt.verified,
        )
        .await
        {
            Ok(p) => principal = Some(p),
            Err(e) => {
                m.auth_rejected
                    .get_or_create(&AuthLabels {
                        route: route.name.clone(),
                        status: e.status,
                    })
                    .inc();
                let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::UNAUTHORIZED);
                let code = match e.status {
                    403 => "forbidden",
                    503 => "auth_unavailable",
                    _ => "unauthorized",
                };
                let mut resp = json_error(ctx, status, code, &e.description);
                if let Some(v) = e
                    .www_authenticate()
                    .and_then(|v| HeaderValue::from_str(&v).ok())
                {
                    resp.headers_mut().insert(header::WWW_AUTHENTICATE, v);
                }
                return resp;
            }
        }
    }
    if let Some(l) = &route.limiter
        && l.config.key == RateLimitKey::Subject
    {
        let subject = principal.as_ref().and_then(|p| p.subject.as_deref());
        let key = ratelimit::client_key(&l.config.key, req.headers(), subject, ctx.client_ip);
        let d = l.check(&key);
        if let Some(resp) = limited(ctx, route, l, d, m) {
            return resp;
        }
        rate_headers = Some((d, l.policy()));
    }
    if let Some(len) = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        && len > route.max_body
    {
        return too_large(ctx, route);
    }

    // Headers for the backend.
    let (parts, body) = req.into_parts();
    let mut headers = parts.headers;
    upstream::strip_hop_by_hop(&mut headers);
    headers.remove(header::HOST);
    let peer = upstream::peer_ip(&parts.extensions).unwrap_or(ctx.client_ip);
    // Forwarding headers are a proxy's to write: from a client that is not a trusted proxy
    // they are claims about itself, dropped before the gateway writes its own.
    if !plane
        .gateway
        .shared()
        .options
        .trusted_proxies
        .contains(peer)
    {
        for h in [
            "x-forwarded-for",
            "x-forwarded-proto",
            "x-forwarded-host",
            "x-forwarded-port",
            "x-real-ip",
            "forwarded",
        ] {
            headers.remove(h);
        }
    }
    upstream::add_forwarded(&mut headers, peer, &ctx.host);
    headers.insert(
        HeaderName::from_static("x-request-id"),
        ctx.request_id.clone(),
    );
    headers.insert(
        HeaderName::from_static("traceparent"),
        ctx.traceparent.clone(),
    );
    if let Some(p) = &principal {
        for (name, value) in &p.forward {
            if let (Ok(n), Ok(v)) = (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_str(value),
            ) {
                headers.insert(n, v);
            }
        }
    }
    let values: BTreeMap<&str, &str> = params
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let query = parts.uri.query();

    let mut resp = match &route.target {
        Target::Split(split) => {
            let Some((backend, choice)) = split.choose(&headers, fastrand::u64(..)) else {
                return json_error(
                    ctx,
                    StatusCode::SERVICE_UNAVAILABLE,
                    "no_backend",
                    "no backend takes traffic for this route",
                );
            };
            let Some(up) = rt.backends.get(backend) else {
                return json_error(
                    ctx,
                    StatusCode::BAD_GATEWAY,
                    "bad_gateway",
                    "the backend is not configured",
                );
            };
            let path = match &route.upstream_path {
                Some(t) => PathTemplate::render(t, &values),
                None => ctx.path.clone(),
            };
            let Ok(uri) = up.uri(&path, query) else {
                return json_error(
                    ctx,
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                    "the request path cannot be forwarded",
                );
            };
            let (retries, backoff) = route
                .retries
                .as_ref()
                .map(|r| {
                    (
                        r.attempts,
                        r.backoff
                            .map(|b| b.as_std())
                            .unwrap_or(Duration::from_millis(25)),
                    )
                })
                .unwrap_or((0, Duration::ZERO));
            let watch = Arc::new(upstream::BodyWatch::default());
            let body = if retries > 0 && upstream::idempotent(&parts.method) {
                match tokio::time::timeout(route.timeout, upstream::buffer(body, route.max_body))
                    .await
                {
                    Ok(Ok(b)) => OutgoingBody::Buffered(b),
                    Ok(Err(Failure::BodyTooLarge)) => {
                        return too_large(ctx, route);
                    }
                    Ok(Err(f)) => return client_fault(plane, route, ctx, f.kind()),
                    Err(_) => return client_fault(plane, route, ctx, "body_timeout"),
                }
            } else {
                OutgoingBody::Stream(
                    Body::new(upstream::WatchedBody::new(body, watch.clone())),
                    route.max_body,
                )
            };
            m.upstream_requests
                .get_or_create(&BackendLabels {
                    route: route.name.clone(),
                    backend: up.name.clone(),
                })
                .inc();
            let timeout = up.timeout.map_or(route.timeout, |t| t.min(route.timeout));
            let out = Outgoing {
                method: parts.method.clone(),
                uri,
                headers,
                body,
            };
            match upstream::send(up, out, timeout, retries, backoff).await {
                Ok(r) => {
                    let (mut p, b) = r.into_parts();
                    upstream::strip_hop_by_hop(&mut p.headers);
                    if let Choice::Variant(name) = choice
                        && let Ok(v) = HeaderValue::from_str(name)
                    {
                        p.headers
                            .insert(HeaderName::from_static("x-fleetgate-variant"), v);
                    }
                    Response::from_parts(p, Body::new(b))
                }
                Err(Failure::ClientBody(kind)) => client_fault(plane, route, ctx, kind),
                // Out of time while the backend was still waiting for the client's body.
                Err(Failure::Timeout) if watch.waiting_on_client() => {
                    client_fault(plane, route, ctx, "body_timeout")
                }
                Err(f) => upstream_failure(plane, rt, route, up, ctx, f),
            }
        }
        Target::Aggregate(agg) => {
            aggregate(
                plane,
                rt,
                route,
                agg,
                &parts.method,
                &headers,
                &values,
                query,
                ctx,
            )
            .await
        }
    };
    if let Some((d, policy)) = rate_headers {
        d.headers(&policy, resp.headers_mut());
    }
    resp
}

/// A request that failed through the client's fault (`kind` of [`CLIENT_ERROR_KINDS`]):
/// a 4xx, counted as a client error, never as an upstream error or a 5xx.
fn client_fault(
    plane: &DataPlane,
    route: &RouteRuntime,
    ctx: &Ctx,
    kind: &'static str,
) -> Response {
    plane
        .gateway
        .shared()
        .metrics
        .client_error(&route.name, kind);
    tracing::info!(
        request_id = ctx.request_id.to_str().unwrap_or_default(),
        route = %route.name,
        kind,
        "request failed through the client's fault"
    );
    match kind {
        "body_timeout" => json_error(
            ctx,
            StatusCode::REQUEST_TIMEOUT,
            "request_timeout",
            "the request body did not arrive in time",
        ),
        "body_incomplete" => json_error(
            ctx,
            StatusCode::BAD_REQUEST,
            "bad_request",
            "the request body ended before its announced length",
        ),
        _ => json_error(
            ctx,
            StatusCode::BAD_REQUEST,
            "bad_request",
            "the request body is malformed",
        ),
    }
}

fn upstream_failure(
    plane: &DataPlane,
    rt: &Runtime,
    route: &RouteRuntime,
    up: &Upstream,
    ctx: &Ctx,
    f: Failure,
) -> Response {
    if let Failure::BodyTooLarge = f {
        return too_large(ctx, route);
    }
    rt.counts.upstream_errors.fetch_add(1, Ordering::Relaxed);
    plane
        .gateway
        .shared()
        .metrics
        .upstream_errors
        .get_or_create(&UpstreamLabels {
            route: route.name.clone(),
            backend: up.name.clone(),
            kind: f.kind(),
        })
        .inc();
    let detail = match &f {
        Failure::Connect(s) | Failure::Other(s) => s.as_str(),
        _ => "",
    };
    tracing::warn!(
        request_id = ctx.request_id.to_str().unwrap_or_default(),
        route = %route.name,
        backend = %up.name,
        kind = f.kind(),
        detail,
        "upstream failed"
    );
    match f {
        Failure::Timeout => json_error(
            ctx,
            StatusCode::GATEWAY_TIMEOUT,
            "upstream_timeout",
            "the service did not answer in time",
        ),
        _ => json_error(
            ctx,
            StatusCode::BAD_GATEWAY,
            "bad_gateway",
            "the service could not be reached",
        ),
    }
}

#[allow(clippy::too_many_arguments)]
async fn aggregate(
    plane: &DataPlane,
    rt: &Runtime,
    route: &RouteRuntime,
    agg: &Aggregate,
    method: &HttpMethod,
    headers: &HeaderMap,
    values: &BTreeMap<&str, &str>,
    query: Option<&str>,
    ctx: &Ctx,
) -> Response {
    let m = &plane.gateway.shared().metrics;
    let calls = agg.parts.iter().map(|part| async move {
        let Some(up) = rt.backends.get(&part.backend) else {
            return PartResult::Failed {
                timeout: false,
                why: format!("backend {} is not configured", part.backend),
            };
        };
        let path = match &part.path {
            Some(t) => PathTemplate::render(t, values),
            None => ctx.path.clone(),
        };
        let Ok(uri) = up.uri(&path, query) else {
            return PartResult::Failed {
                timeout: false,
                why: "bad path".into(),
            };
        };
        m.upstream_requests
            .get_or_create(&BackendLabels {
                route: route.name.clone(),
                backend: up.name.clone(),
            })
            .inc();
        let mut h = headers.clone();
        h.remove(header::CONTENT_LENGTH);
        h.remove(header::CONTENT_TYPE);
        let out = Outgoing {
            method: method.clone(),
            uri,
            headers: h,
            body: OutgoingBody::Buffered(bytes::Bytes::new()),
        };
        let timeout = up.timeout.map_or(route.timeout, |t| t.min(route.timeout));
        let retries = route.retries.as_ref().map_or(0, |r| r.attempts);
        let result =
            match upstream::send(up, out, timeout, retries, Duration::from_millis(25)).await {
                Ok(r) => match tokio::time::timeout(timeout, upstream::read_part(r)).await {
                    Ok(p) => p,
                    Err(_) => PartResult::Failed {
                        timeout: true,
                        why: "body timed out".into(),
                    },
                },
                Err(f) => PartResult::Failed {
                    timeout: matches!(f, Failure::Timeout),
                    why: format!(
                        "{}: {}",
                        f.kind(),
                        match &f {
                            Failure::Connect(s) | Failure::Other(s) => s.as_str(),
                            _ => "",
                        }
                    ),
                },
            };
        if let PartResult::Failed { timeout, why } = &result {
            rt.counts.upstream_errors.fetch_add(1, Ordering::Relaxed);
            m.upstream_errors
                .get_or_create(&UpstreamLabels {
                    route: route.name.clone(),
                    backend: up.name.clone(),
                    kind: if *timeout { "timeout" } else { "part" },
                })
                .inc();
            tracing::warn!(
                request_id = ctx.request_id.to_str().unwrap_or_default(),
                route = %route.name,
                backend = %up.name,
                detail = %why,
                "aggregated part failed"
            );
        }
        result
    });
    let results = futures::future::join_all(calls).await;
    let any_timeout = results
        .iter()
        .any(|r| matches!(r, PartResult::Failed { timeout: true, .. }));
    let parts: Vec<(Option<&str>, PartResult)> = agg
        .parts
        .iter()
        .map(|p| p.group.as_deref())
        .zip(results)
        .collect();
    let (merged, complete) = upstream::merge_parts(&parts);
    if !complete && agg.on_partial_failure == PartialFailure::Fail {
        return if any_timeout {
            json_error(
                ctx,
                StatusCode::GATEWAY_TIMEOUT,
                "upstream_timeout",
                "a service did not answer in time",
            )
        } else {
            json_error(
                ctx,
                StatusCode::BAD_GATEWAY,
                "bad_gateway",
                "a service could not be reached",
            )
        };
    }
    let mut resp = (
        StatusCode::OK,
        axum::Json(serde_json::Value::Object(merged)),
    )
        .into_response();
    resp.headers_mut().insert(
        HeaderName::from_static("x-fleetgate-completed"),
        HeaderValue::from_static(if complete { "true" } else { "false" }),
    );
    resp
}
