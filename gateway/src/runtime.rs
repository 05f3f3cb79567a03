//! The state built from a compiled bundle when it is swapped in, off the request path:
//! routes with their limiters, auth requirements and CORS, backends, issuers and their keys,
//! the embedded IdP and the secrets it was built with ([`Runtime`]); and what outlives a
//! bundle ([`Shared`]: connection pools, JWKS caches, metrics). Imports the modules of the
//! parts it builds; nothing of the request path or the reload loop.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use http::header::{HeaderName, HeaderValue};
use http::{Method as HttpMethod, StatusCode};
use prometheus_client::registry::Registry;
use tower_http::cors::CorsLayer;

use crate::auth::{self, Issuer, Requirement};
use crate::idp::{self, Idp};
use crate::jwks::{HttpJwksFetcher, JwksFetcher, RemoteJwks};
use crate::metrics::{Counts, Metrics, RouteSeries, Series};
use crate::ratelimit::BoundedLimiter;
use crate::secrets::{Resolved, SecretStore, Secrets};
use crate::split::Split;
use crate::upstream::{Clients, Upstream};
use fleetgate_bundle::CompiledBundle;
use fleetgate_bundle::bundle::{Aggregate, Cors, Retries, WeightedBackend};

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
    /// Most upstream connections pinned to client connections at once (0: every request
    /// uses the shared pool); see [`crate::upstream::Pinned`].
    pub upstream_affinity: usize,
    /// How log lines name the client's address (`--log-client-address`).
    pub log_client_address: crate::logging::ClientAddressLog,
}

impl std::fmt::Debug for Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Options")
            .field("jwks_refetch_interval", &self.jwks_refetch_interval)
            .field("jwt_cache_size", &self.jwt_cache_size)
            .field("backend_overrides", &self.backend_overrides)
            .field("log_client_address", &self.log_client_address)
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
            upstream_affinity: DEFAULT_UPSTREAM_AFFINITY,
            log_client_address: crate::logging::ClientAddressLog::Off,
        }
    }
}

/// Default of [`Options::upstream_affinity`].
pub const DEFAULT_UPSTREAM_AFFINITY: usize = 1024;

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
    /// Bounds the upstream connections pinned to client connections.
    pub pin_budget: Arc<crate::upstream::PinBudget>,
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
        let pin_budget = crate::upstream::PinBudget::new(options.upstream_affinity);
        crate::metrics::register(
            registry,
            "upstream_pinned_connections",
            "Backend connections held by client connections (connection affinity) now",
            pin_budget.gauge(),
        );
        Shared {
            pin_budget,
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
        crate::jwks::shared_jwks(&mut jwks, url, || {
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
    /// The route's path template as the bundle writes it (`/customers/{id}`): what the
    /// access log names, never the request's own path.
    pub path_template: String,
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
    /// The route's metric handles (requests, latency, upstream calls).
    pub series: RouteSeries,
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
            let (client, connector) = shared
                .clients
                .get_with_connector(b.connect_timeout.map(|t| t.as_std()))
                .map_err(|e| format!("backend {name}: {e}"))?;
            backends.insert(
                name.clone(),
                Upstream {
                    name: name.clone(),
                    base,
                    timeout: b.timeout.map(|t| t.as_std()),
                    client,
                    connector,
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
            let sends_to: Vec<&str> = match &target {
                Target::Split(split) => split
                    .weighted
                    .iter()
                    .map(|w| w.backend.as_str())
                    .chain(split.variants.iter().map(|v| v.backend.as_str()))
                    .collect(),
                Target::Aggregate(a) => a.parts.iter().map(|p| p.backend.as_str()).collect(),
            };
            let series = RouteSeries::new(&route.name, sends_to);
            routes.push(RouteRuntime {
                name: route.name.clone(),
                path_template: route.path.clone(),
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
                series,
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

    /// The label values of this runtime's series, for [`crate::metrics::Metrics::forget`].
    pub fn series(&self) -> Series<'_> {
        Series {
            clients: self.idp.iter().flat_map(|i| i.client_ids()).collect(),
            routes: self.routes.iter().map(|r| r.name.as_str()).collect(),
            backends: self.backends.keys().map(String::as_str).collect(),
        }
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
