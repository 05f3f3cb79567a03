//! The data plane's Prometheus series: requests, latency, upstream and client errors, auth
//! refusals, rate limiting and IdP tokens, with label sets no client can grow; and the
//! per-bundle [`Counts`] of the instance report. Imports [`crate::idp`]'s token result only.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use http::Method as HttpMethod;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::idp;

/// Every label value comes from the bundle (route, backend) or from a fixed set, so no
/// client can add series: a method is one of [`METHOD_LABELS`], a status one of
/// [`STATUS_CLASSES`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(crate) struct RequestLabels {
    pub(crate) route: String,
    pub(crate) method: &'static str,
    pub(crate) status: &'static str,
}

/// The `method` label's values: the methods of RFC 9110 and PATCH, anything else `other`.
pub const METHOD_LABELS: [&str; 10] = [
    "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE", "other",
];

/// The `status` label's values.
pub const STATUS_CLASSES: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", "other"];

/// The `method` label of a request method.
pub fn method_label(m: &HttpMethod) -> &'static str {
    METHOD_LABELS[method_index(m)]
}

/// The index of a method's label in [`METHOD_LABELS`].
fn method_index(m: &HttpMethod) -> usize {
    match *m {
        HttpMethod::GET => 0,
        HttpMethod::HEAD => 1,
        HttpMethod::POST => 2,
        HttpMethod::PUT => 3,
        HttpMethod::PATCH => 4,
        HttpMethod::DELETE => 5,
        HttpMethod::OPTIONS => 6,
        HttpMethod::CONNECT => 7,
        HttpMethod::TRACE => 8,
        _ => 9,
    }
}

/// The `status` label of a status code: its class.
pub fn status_class(status: u16) -> &'static str {
    STATUS_CLASSES[status_index(status)]
}

/// The index of a status's class in [`STATUS_CLASSES`].
fn status_index(status: u16) -> usize {
    match status {
        100..=199 => 0,
        200..=299 => 1,
        300..=399 => 2,
        400..=499 => 3,
        500..=599 => 4,
        _ => 5,
    }
}

/// One route's series of the request path, resolved once per bundle instead of by label
/// strings at every request: a handle is looked up in its family at its first use and kept,
/// so `/metrics` shows only the series that have happened, as with a lookup per request.
///
/// A handle outlives its series when a new bundle drops the route or backend
/// ([`Metrics::forget`] removes the series): the replaced bundle's last requests then count
/// into the detached handle, and can never bring a forgotten series back.
///
/// Small on purpose (a bundle may have thousands of routes): [`REQUEST_SLOTS`] handles of
/// `(method, status class)` pairs, the first ones a route answers; a pair beyond them is
/// looked up by its labels, as before.
#[derive(Debug)]
pub struct RouteSeries {
    route: String,
    /// `(method index * STATUS_CLASSES.len() + status index, counter)`, filled in order.
    requests: [OnceLock<(usize, Counter)>; REQUEST_SLOTS],
    /// `http_request_duration_seconds` by status class.
    duration: [OnceLock<Histogram>; STATUS_CLASSES.len()],
    /// `upstream_requests` and `upstream_duration_seconds` by backend: the backends the
    /// route can send to.
    upstream: Vec<BackendSeries>,
}

/// A route's handles of one backend's series.
#[derive(Debug)]
struct BackendSeries {
    name: String,
    requests: OnceLock<Counter>,
    duration: OnceLock<Histogram>,
}

/// How many `(method, status class)` pairs of a route keep a handle.
const REQUEST_SLOTS: usize = 4;

impl RouteSeries {
    /// The series of route `route` (`-`: requests that matched none), which sends to
    /// `backends`.
    pub fn new<'a>(route: &str, backends: impl IntoIterator<Item = &'a str>) -> RouteSeries {
        let mut upstream: Vec<BackendSeries> = Vec::new();
        for b in backends {
            if !upstream.iter().any(|s| s.name == b) {
                upstream.push(BackendSeries {
                    name: b.to_string(),
                    requests: OnceLock::new(),
                    duration: OnceLock::new(),
                });
            }
        }
        RouteSeries {
            route: route.to_string(),
            requests: Default::default(),
            duration: Default::default(),
            upstream,
        }
    }

    /// Counts an answered request and its time to response headers.
    pub(crate) fn answered(&self, m: &Metrics, method: &HttpMethod, status: u16, secs: f64) {
        let (mi, si) = (method_index(method), status_index(status));
        let key = mi * STATUS_CLASSES.len() + si;
        let lookup = || {
            m.requests
                .get_or_create(&RequestLabels {
                    route: self.route.clone(),
                    method: METHOD_LABELS[mi],
                    status: STATUS_CLASSES[si],
                })
                .clone()
        };
        let held = self
            .requests
            .iter()
            .map(|slot| slot.get_or_init(|| (key, lookup())))
            .find(|(k, _)| *k == key);
        match held {
            Some((_, counter)) => counter.inc(),
            None => lookup().inc(),
        };
        self.duration[si]
            .get_or_init(|| {
                m.duration
                    .get_or_create(&DurationLabels {
                        route: self.route.clone(),
                        status: STATUS_CLASSES[si],
                    })
                    .clone()
            })
            .observe(secs);
    }

    /// Counts a request sent to `backend`.
    pub(crate) fn sent(&self, m: &Metrics, backend: &str) {
        let labels = || BackendLabels {
            route: self.route.clone(),
            backend: backend.to_string(),
        };
        match self.upstream.iter().find(|s| s.name == backend) {
            Some(s) => s
                .requests
                .get_or_init(|| m.upstream_requests.get_or_create(&labels()).clone())
                .inc(),
            None => m.upstream_requests.get_or_create(&labels()).inc(),
        };
    }

    /// Records how long `backend` took to answer with its response headers.
    pub(crate) fn responded(&self, m: &Metrics, backend: &str, secs: f64) {
        let labels = || BackendOnlyLabels {
            backend: backend.to_string(),
        };
        match self.upstream.iter().find(|s| s.name == backend) {
            Some(s) => s
                .duration
                .get_or_init(|| m.upstream_duration.get_or_create(&labels()).clone())
                .observe(secs),
            None => m.upstream_duration.get_or_create(&labels()).observe(secs),
        }
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
pub(crate) struct ClientErrorLabels {
    pub(crate) route: String,
    pub(crate) kind: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(crate) struct RouteLabels {
    pub(crate) route: String,
}

/// `http_request_duration_seconds`'s labels: the route and the status class.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(crate) struct DurationLabels {
    pub(crate) route: String,
    pub(crate) status: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(crate) struct BackendOnlyLabels {
    pub(crate) backend: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(crate) struct UpstreamLabels {
    pub(crate) route: String,
    pub(crate) backend: String,
    pub(crate) kind: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(crate) struct AuthLabels {
    pub(crate) route: String,
    pub(crate) status: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(crate) struct BackendLabels {
    pub(crate) route: String,
    pub(crate) backend: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 0.25 ms .. ~16 s.
    Histogram::new(exponential_buckets(0.000_25, 2.0, 17))
}

/// The data plane's metrics, in the gateway's registry.
#[derive(Debug, Clone)]
pub struct Metrics {
    pub(crate) requests: Family<RequestLabels, Counter>,
    pub(crate) duration: HistogramFamily<DurationLabels>,
    pub(crate) upstream_duration: HistogramFamily<BackendOnlyLabels>,
    pub(crate) upstream_errors: Family<UpstreamLabels, Counter>,
    pub(crate) upstream_requests: Family<BackendLabels, Counter>,
    pub(crate) rate_limited: Family<RouteLabels, Counter>,
    pub(crate) auth_rejected: Family<AuthLabels, Counter>,
    pub(crate) client_errors: Family<ClientErrorLabels, Counter>,
    pub(crate) idp_tokens: Family<TokenLabels, Counter>,
    /// The series of requests that matched no route (`route="-"`).
    pub(crate) unmatched: std::sync::Arc<RouteSeries>,
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
pub(crate) struct TokenLabels {
    /// A client of the bundle, or `-` (unknown or unparsed).
    pub(crate) client: String,
    /// `issued` or the OAuth error code.
    pub(crate) result: String,
}

/// The label values a bundle's series are recorded under: its IdP clients, routes and
/// backends ([`Metrics::forget`] removes those a new bundle does not have).
#[derive(Debug, Default)]
pub struct Series<'a> {
    pub clients: Vec<&'a str>,
    pub routes: Vec<&'a str>,
    pub backends: Vec<&'a str>,
}

impl Metrics {
    pub fn register(registry: &mut Registry) -> Metrics {
        let m = Metrics {
            requests: Family::default(),
            duration: Family::new_with_constructor(latency_histogram as fn() -> Histogram),
            upstream_duration: Family::new_with_constructor(latency_histogram as fn() -> Histogram),
            upstream_errors: Family::default(),
            upstream_requests: Family::default(),
            rate_limited: Family::default(),
            auth_rejected: Family::default(),
            client_errors: Family::default(),
            idp_tokens: Family::default(),
            unmatched: std::sync::Arc::new(RouteSeries::new("-", [])),
        };
        register(
            registry,
            "idp_token_requests",
            "Token endpoint requests, by client (\"-\" when unknown) and result (issued, or the OAuth error)",
            m.idp_tokens.clone(),
        );
        register(
            registry,
            "http_requests",
            "Requests answered, by route, method and status (route \"-\" when none matched)",
            m.requests.clone(),
        );
        register(
            registry,
            "http_request_duration_seconds",
            "Time from request to response headers, by route and status class",
            m.duration.clone(),
        );
        register(
            registry,
            "upstream_duration_seconds",
            "Time from sending a request to a backend to its response headers (retries included), by backend",
            m.upstream_duration.clone(),
        );
        register(
            registry,
            "upstream_requests",
            "Requests sent to a backend, by route and backend",
            m.upstream_requests.clone(),
        );
        register(
            registry,
            "upstream_errors",
            "Backend calls that failed, by route, backend and kind (connect, timeout, protocol, body_too_large, part)",
            m.upstream_errors.clone(),
        );
        register(
            registry,
            "rate_limited",
            "Requests refused with 429, by route",
            m.rate_limited.clone(),
        );
        register(
            registry,
            "auth_rejected",
            "Requests refused by auth (401, 403, 503), by route",
            m.auth_rejected.clone(),
        );
        register(
            registry,
            "client_errors",
            "Requests that failed through the client's fault (a malformed, cut-short or stalled body, or the client gone before the answer), by route and kind; never counted as 5xx or upstream errors",
            m.client_errors.clone(),
        );
        m
    }

    /// Counts an answered request of `route` (an IdP endpoint, say) that has no
    /// [`RouteSeries`] of its own.
    pub(crate) fn answered(&self, route: &str, method: &HttpMethod, status: u16, secs: f64) {
        self.requests
            .get_or_create(&RequestLabels {
                route: route.to_string(),
                method: method_label(method),
                status: status_class(status),
            })
            .inc();
        self.duration
            .get_or_create(&DurationLabels {
                route: route.to_string(),
                status: status_class(status),
            })
            .observe(secs);
    }

    pub(crate) fn client_error(&self, route: &str, kind: &'static str) {
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
    pub fn forget(&self, old: &Series<'_>, new: &Series<'_>) {
        let kept: std::collections::HashSet<&str> = new.clients.iter().copied().collect();
        for client in old.clients.iter().filter(|c| !kept.contains(*c)) {
            for result in TOKEN_RESULTS {
                self.idp_tokens.remove(&TokenLabels {
                    client: client.to_string(),
                    result: result.to_string(),
                });
            }
        }
        let routes: std::collections::HashSet<&str> = new.routes.iter().copied().collect();
        let backends: std::collections::HashSet<&str> = new.backends.iter().copied().collect();
        for r in &old.routes {
            let gone = !routes.contains(r);
            if gone {
                let route = || r.to_string();
                for method in METHOD_LABELS {
                    for status in STATUS_CLASSES {
                        self.requests.remove(&RequestLabels {
                            route: route(),
                            method,
                            status,
                        });
                    }
                }
                for status in STATUS_CLASSES {
                    self.duration.remove(&DurationLabels {
                        route: route(),
                        status,
                    });
                }
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
            for b in &old.backends {
                if gone || !backends.contains(b) {
                    let labels = BackendLabels {
                        route: r.to_string(),
                        backend: b.to_string(),
                    };
                    self.upstream_requests.remove(&labels);
                    for kind in UPSTREAM_KINDS {
                        self.upstream_errors.remove(&UpstreamLabels {
                            route: r.to_string(),
                            backend: b.to_string(),
                            kind,
                        });
                    }
                }
            }
        }
        for b in old.backends.iter().filter(|b| !backends.contains(*b)) {
            self.upstream_duration.remove(&BackendOnlyLabels {
                backend: b.to_string(),
            });
        }
    }
}

impl Metrics {
    pub(crate) fn record_token(&self, client: String, result: idp::TokenResult) {
        let result = match result {
            idp::TokenResult::Issued => "issued".to_string(),
            idp::TokenResult::Refused(code) => code.to_string(),
        };
        self.idp_tokens
            .get_or_create(&TokenLabels { client, result })
            .inc();
    }
}

/// Every family registered: name (prefixed) -> (help, type). prometheus-client leaves
/// families without series out of `/metrics`, so docs/operator.md's metric table is made
/// from this (a test checks it).
static CATALOG: std::sync::Mutex<std::collections::BTreeMap<String, (String, String)>> =
    std::sync::Mutex::new(std::collections::BTreeMap::new());

/// The gateway registry's prefix.
pub const PREFIX: &str = "fleetgate_gateway";

/// `registry.register(name, help, metric)` (the gateway's registry, prefixed [`PREFIX`]),
/// remembered in the catalog.
pub(crate) fn register(
    registry: &mut Registry,
    name: &str,
    help: &str,
    metric: impl prometheus_client::registry::Metric,
) {
    let kind = metric.metric_type().as_str().to_string();
    CATALOG
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .insert(format!("{PREFIX}_{name}"), (help.to_string(), kind));
    registry.register(name, help, metric);
}

/// Every family registered so far: (name, help, type), by name
/// ([`crate::Gateway::metric_families`] registers them all first).
pub fn catalog() -> Vec<(String, String, String)> {
    CATALOG
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .iter()
        .map(|(n, (h, k))| (n.clone(), h.clone(), k.clone()))
        .collect()
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
    revision: &'static str,
}

/// The binary's version and the source revision it was built from (`FLEETGATE_REVISION` at
/// build time; `unknown` when it was not set).
pub const REVISION: &str = match option_env!("FLEETGATE_REVISION") {
    Some(r) => r,
    None => "unknown",
};

/// Registers `build_info` (value 1, labelled with the version and revision).
pub fn register_build_info(registry: &mut Registry) {
    let info = Family::<BuildLabels, prometheus_client::metrics::gauge::Gauge>::default();
    info.get_or_create(&BuildLabels {
        version: env!("CARGO_PKG_VERSION"),
        revision: REVISION,
    })
    .set(1);
    register(
        registry,
        "build_info",
        "The running binary: its version and source revision (value 1)",
        info,
    );
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
    pub(crate) fn record(&self, status: u16) {
        let c = match status {
            200..=299 => &self.status_2xx,
            300..=399 => &self.status_3xx,
            400..=499 => &self.status_4xx,
            _ => &self.status_5xx,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(registry: &Registry) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, registry).expect("encode");
        out
    }

    fn value(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
    }

    #[test]
    fn route_series_count_what_a_lookup_by_labels_counts() {
        let mut registry = Registry::default();
        let m = Metrics::register(&mut registry);
        let s = RouteSeries::new("orders", ["app", "app", "canary"]);
        assert_eq!(s.upstream.len(), 2);
        // More (method, status class) pairs than the route keeps handles for.
        let answers = [
            (HttpMethod::GET, 200, 3),
            (HttpMethod::GET, 404, 2),
            (HttpMethod::POST, 201, 1),
            (HttpMethod::POST, 503, 1),
            (HttpMethod::DELETE, 204, 2),
            (HttpMethod::PUT, 302, 1),
        ];
        for (method, status, times) in &answers {
            for _ in 0..*times {
                s.answered(&m, method, *status, 0.001);
            }
        }
        s.sent(&m, "app");
        s.sent(&m, "app");
        s.sent(&m, "other");
        s.responded(&m, "app", 0.002);
        let out = text(&registry);
        for (method, status, times) in &answers {
            let series = format!(
                "http_requests_total{{route=\"orders\",method=\"{}\",status=\"{}\"}}",
                method_label(method),
                status_class(*status)
            );
            assert_eq!(
                value(&out, &series),
                Some(f64::from(*times)),
                "{series}\n{out}"
            );
        }
        // Only the series that happened.
        assert_eq!(
            out.matches("http_requests_total{").count(),
            answers.len(),
            "{out}"
        );
        // The latency histogram by status class: every answer counted once, in its class.
        let durations: f64 = out
            .lines()
            .filter(|l| l.starts_with("http_request_duration_seconds_count{route=\"orders\","))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        assert_eq!(durations, 10.0, "{out}");
        for (_, status, _) in &answers {
            let class = status_class(*status);
            let series = format!(
                "http_request_duration_seconds_count{{route=\"orders\",status=\"{class}\"}}"
            );
            assert!(value(&out, &series).is_some(), "{series}\n{out}");
        }
        assert_eq!(
            value(&out, "upstream_duration_seconds_count{backend=\"app\"}"),
            Some(1.0),
            "{out}"
        );
        assert_eq!(
            value(
                &out,
                "upstream_requests_total{route=\"orders\",backend=\"app\"}"
            ),
            Some(2.0)
        );
        assert_eq!(
            value(
                &out,
                "upstream_requests_total{route=\"orders\",backend=\"other\"}"
            ),
            Some(1.0)
        );
        assert!(!out.contains("backend=\"canary\""), "{out}");
    }

    #[test]
    fn a_handle_of_a_forgotten_route_never_brings_its_series_back() {
        let mut registry = Registry::default();
        let m = Metrics::register(&mut registry);
        let old = RouteSeries::new("gone", ["app"]);
        old.answered(&m, &HttpMethod::GET, 200, 0.001);
        old.sent(&m, "app");
        m.forget(
            &Series {
                routes: vec!["gone"],
                backends: vec!["app"],
                ..Series::default()
            },
            &Series::default(),
        );
        // The replaced bundle's last request, after the swap.
        old.answered(&m, &HttpMethod::GET, 200, 0.001);
        old.sent(&m, "app");
        let out = text(&registry);
        assert!(!out.contains("route=\"gone\""), "{out}");
    }
}
