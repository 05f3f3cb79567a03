//! Loading and hot reload: the gateway polls its account's pointer, loads the bundle it
//! names, checks the bundle's sha256, compiles it, and swaps it in atomically. A bundle that
//! cannot be read, hashed or compiled is rejected: the last good one keeps serving, the
//! failure is counted and shown in `/status`. The gateway is not ready until a first good
//! bundle is loaded.
//!
//! Requests hold an `Arc` of the bundle they started with ([`Gateway::current`]), so a swap
//! never changes a request in flight. Compiling happens on the poll task, off the request
//! path.
//!
//! The time of a swap and of a report comes from the gateway's [`Clock`] (the system clock
//! unless one is given with [`Gateway::with_clock`]).
//!
//! Imports the runtime it builds ([`crate::runtime`], [`crate::metrics`]), the sources it
//! polls ([`crate::source`]) and [`crate::secrets`]; the admin router and the data plane
//! read the [`Gateway`] it keeps.

use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use arc_swap::ArcSwapOption;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde::Serialize;

use fleetgate_bundle::report::InstanceReport;
use fleetgate_bundle::{Bundle, CompiledBundle, Digest, compile};

use crate::metrics::Counts;
use crate::runtime::{Options, Runtime, Shared};
use crate::source::{BundleSource, SourceVersion};

/// Where the gateway reads the time of a swap, an error and a report.
pub trait Clock: Send + Sync + std::fmt::Debug {
    fn now(&self) -> SystemTime;
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// The bundle being served.
#[derive(Debug)]
pub struct Loaded {
    pub digest: Digest,
    pub commit: Option<String>,
    pub compiled: CompiledBundle,
    /// Limiters, keys, backends: what requests use.
    pub runtime: Runtime,
    /// When it was swapped in.
    pub since: SystemTime,
}

/// What one poll did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReloadOutcome {
    /// The pointer has not moved.
    Unchanged,
    /// A new bundle is being served.
    Swapped { digest: Digest },
    /// The pointer moved to a bundle that was refused; the previous one keeps serving.
    Rejected { reason: String },
    /// The source could not be read; tried again at the next poll.
    Unavailable { reason: String },
    /// The pointer is a tombstone: the account is decommissioned, and every request is
    /// answered 410 (the gateway stays ready).
    Decommissioned,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct BundleLabels {
    account: String,
    digest: String,
    commit: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct FailureLabels {
    /// `source` (could not read) or `bundle` (read, refused).
    kind: String,
}

/// The gateway's control state: what it serves and how reloading went.
#[derive(Debug)]
pub struct Gateway {
    current: ArcSwapOption<Loaded>,
    /// The version of the pointer last acted on (served or refused).
    known: Mutex<Option<SourceVersion>>,
    last_error: Mutex<Option<(SystemTime, String)>>,
    registry: Registry,
    reloads_total: Counter,
    /// The two series of `reload_failures_total{kind}`.
    source_failures: Counter,
    bundle_failures: Counter,
    bundle_info: Family<BundleLabels, Gauge>,
    ready: Gauge,
    /// 1 while the pointer names a bundle that was refused (an older one, or none, is served).
    stale: Gauge,
    /// 1 while the account is decommissioned.
    decommissioned_gauge: Gauge,
    /// The tombstone's record while the account is decommissioned.
    decommissioned: ArcSwapOption<fleetgate_bundle::pointer::Decommissioned>,
    shared: Shared,
    draining: std::sync::atomic::AtomicBool,
    /// The bundle last replaced, until no request holds it: its removed routes' series are
    /// removed again at housekeeping, since its last requests may have recorded them after
    /// the swap.
    replaced: Mutex<Option<Arc<Loaded>>>,
    clock: Arc<dyn Clock>,
}

impl Default for Gateway {
    fn default() -> Self {
        Gateway::new()
    }
}

impl Gateway {
    pub fn new() -> Gateway {
        Gateway::with_options(Options::default())
    }

    pub fn with_options(options: Options) -> Gateway {
        let mut registry = Registry::with_prefix(crate::metrics::PREFIX);
        let reloads_total = Counter::default();
        let failures_total = Family::<FailureLabels, Counter>::default();
        let series = |kind: &str| {
            failures_total
                .get_or_create(&FailureLabels { kind: kind.into() })
                .clone()
        };
        let (source_failures, bundle_failures) = (series("source"), series("bundle"));
        let bundle_info = Family::<BundleLabels, Gauge>::default();
        let ready = Gauge::default();
        crate::metrics::register(
            &mut registry,
            "reloads",
            "Bundles swapped in (the first load included)",
            reloads_total.clone(),
        );
        crate::metrics::register(
            &mut registry,
            "reload_failures",
            "Polls that could not read the source, or read a bundle that was refused",
            failures_total.clone(),
        );
        crate::metrics::register(
            &mut registry,
            "bundle",
            "The bundle being served (value 1), by account, digest and commit",
            bundle_info.clone(),
        );
        crate::metrics::register(
            &mut registry,
            "ready",
            "1 once a good bundle is loaded",
            ready.clone(),
        );
        let stale = Gauge::default();
        crate::metrics::register(
            &mut registry,
            "bundle_stale",
            "1 while the account's pointer names a bundle this gateway refused, so it serves an older one (or none)",
            stale.clone(),
        );
        let decommissioned_gauge = Gauge::default();
        crate::metrics::register(
            &mut registry,
            "decommissioned",
            "1 while the account is decommissioned: every request is answered 410, no token is issued",
            decommissioned_gauge.clone(),
        );
        crate::metrics::register_build_info(&mut registry);
        let shared = Shared::new(options, &mut registry);
        Gateway {
            current: ArcSwapOption::empty(),
            known: Mutex::new(None),
            last_error: Mutex::new(None),
            registry,
            reloads_total,
            source_failures,
            bundle_failures,
            bundle_info,
            ready,
            stale,
            decommissioned_gauge,
            decommissioned: ArcSwapOption::empty(),
            shared,
            draining: std::sync::atomic::AtomicBool::new(false),
            replaced: Mutex::new(None),
            clock: Arc::new(SystemClock),
        }
    }

    /// Every metric family a gateway has: (name, help, type), by name (docs/operator.md's
    /// metric table is checked against it).
    pub fn metric_families() -> Vec<(String, String, String)> {
        drop(Gateway::new());
        crate::metrics::catalog()
    }

    /// The same gateway reading the time from `clock`.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Gateway {
        self.clock = clock;
        self
    }

    /// From now on `/ready` answers 503, so load balancers stop sending new requests while
    /// the ones in flight finish.
    pub fn set_draining(&self) {
        self.draining
            .store(true, std::sync::atomic::Ordering::Relaxed);
        self.ready.set(0);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// What outlives a bundle: connection pools, JWKS caches, request metrics.
    pub fn shared(&self) -> &Shared {
        &self.shared
    }

    /// Periodic clean-up of the served bundle's state (idle rate-limit clients).
    pub fn housekeeping(&self) {
        let current = self.current.load_full();
        if let Some(l) = current.as_ref() {
            l.runtime.housekeeping();
        }
        let mut replaced = self
            .replaced
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let (Some(old), Some(new)) = (replaced.as_ref(), current.as_ref()) {
            self.shared
                .metrics
                .forget(&old.runtime.series(), &new.runtime.series());
            // Only `replaced` holds it now: no request can record its series any more.
            if Arc::strong_count(old) == 1 {
                *replaced = None;
            }
        }
    }

    /// The bundle to serve a request with (held for the whole request), if any.
    pub fn current(&self) -> Option<Arc<Loaded>> {
        self.current.load_full()
    }

    /// Ready with a bundle, or decommissioned: a decommissioned account's gateway stays in
    /// its load balancer and answers 410 itself, so clients are not sent elsewhere.
    pub fn is_ready(&self) -> bool {
        self.current.load().is_some() || self.decommissioned.load().is_some()
    }

    /// The tombstone's record while the account is decommissioned.
    pub fn decommissioned(&self) -> Option<Arc<fleetgate_bundle::pointer::Decommissioned>> {
        self.decommissioned.load_full()
    }

    fn fail(&self, counter: &Counter, reason: String) {
        counter.inc();
        *self
            .last_error
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some((self.clock.now(), reason));
    }

    /// Polls the source once: loads, checks, compiles and swaps in a new bundle when the
    /// pointer moved. A refused bundle is remembered, so it is not retried until the pointer
    /// moves again; a source that cannot be read is retried at the next poll.
    pub async fn reload_once<S: BundleSource>(&self, source: &S) -> ReloadOutcome {
        let known = self
            .known
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let fetched = match source.fetch(known.as_ref()).await {
            Ok(None) => {
                self.retry_secrets().await;
                return ReloadOutcome::Unchanged;
            }
            Ok(Some(f)) => f,
            Err(e) => {
                let reason = e.to_string();
                self.fail(&self.source_failures, reason.clone());
                return ReloadOutcome::Unavailable { reason };
            }
        };
        *self
            .known
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(fetched.version.clone());
        if let Some(tomb) = &fetched.pointer.decommissioned {
            self.decommission(tomb.clone());
            return ReloadOutcome::Decommissioned;
        }
        let digest = fetched.pointer.digest.clone();
        let refuse = |reason: String| {
            let reason = format!("{}: bundle {digest}: {reason}", source.describe());
            self.fail(&self.bundle_failures, reason.clone());
            self.stale.set(1);
            ReloadOutcome::Rejected { reason }
        };
        let bundle = match Bundle::from_stored(&fetched.bytes, &digest) {
            Ok(b) => b,
            Err(e) => return refuse(e.to_string()),
        };
        let compiled = match compile(&bundle) {
            Ok(c) => c,
            Err(e) => return refuse(format!("does not compile:\n{e}")),
        };
        let secrets =
            crate::secrets::resolve(&compiled.bundle, &*self.shared.options.secrets).await;
        let previous = self.current.load_full();
        let runtime = match Runtime::build(
            &compiled,
            previous.as_ref().map(|p| &p.runtime),
            &self.shared,
            &secrets,
        ) {
            Ok(r) => r,
            Err(e) => return refuse(e),
        };
        for w in &runtime.warnings {
            tracing::warn!(digest = %digest, warning = %w, "bundle loaded with a warning");
        }
        let account = compiled.bundle.account.name.clone();
        if let Some(old) = previous.as_ref() {
            // The replaced bundle's series go: a long-lived gateway must not keep one per
            // digest it ever served.
            self.bundle_info.remove(&BundleLabels {
                account: old.compiled.bundle.account.name.clone(),
                digest: old.digest.to_string(),
                commit: old.commit.clone().unwrap_or_default(),
            });
        }
        self.bundle_info
            .get_or_create(&BundleLabels {
                account,
                digest: digest.to_string(),
                commit: fetched.pointer.commit.clone().unwrap_or_default(),
            })
            .set(1);
        self.current.store(Some(Arc::new(Loaded {
            digest: digest.clone(),
            commit: fetched.pointer.commit,
            compiled,
            runtime,
            since: self.clock.now(),
        })));
        self.reloads_total.inc();
        self.ready.set(1);
        self.stale.set(0);
        // A rollback of a decommission: the account is served again.
        if self.decommissioned.swap(None).is_some() {
            self.decommissioned_gauge.set(0);
            tracing::info!(digest = %digest, "the account is served again: its decommission was rolled back");
        }
        // After the swap: requests that started on the old bundle may still record its
        // routes' series; they are removed again at housekeeping.
        if let (Some(old), Some(new)) = (previous.as_ref(), self.current.load_full()) {
            self.shared
                .metrics
                .forget(&old.runtime.series(), &new.runtime.series());
            *self
                .replaced
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(old.clone());
        }
        ReloadOutcome::Swapped { digest }
    }

    /// The pointer became a tombstone: the bundle is dropped (no route, no IdP), every request
    /// is answered 410, and the gateway stays ready.
    fn decommission(&self, tomb: fleetgate_bundle::pointer::Decommissioned) {
        let previous = self.current.swap(None);
        if let Some(old) = previous.as_ref() {
            self.bundle_info.remove(&BundleLabels {
                account: old.compiled.bundle.account.name.clone(),
                digest: old.digest.to_string(),
                commit: old.commit.clone().unwrap_or_default(),
            });
            // Every series of the dropped bundle goes: no route is served any more.
            self.shared
                .metrics
                .forget(&old.runtime.series(), &Default::default());
            *self
                .replaced
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = None;
        }
        tracing::warn!(
            decommissioned_at = %tomb.at,
            by = %tomb.by,
            commit = tomb.commit.as_deref().unwrap_or("-"),
            "the account is decommissioned: every request is answered 410"
        );
        self.decommissioned.store(Some(Arc::new(tomb)));
        self.decommissioned_gauge.set(1);
        self.stale.set(0);
        self.ready.set(1);
        self.reloads_total.inc();
    }

    /// When the served bundle's secrets could not all be read, reads them again and, once
    /// they all can, rebuilds its runtime (same bundle, same digest) and swaps it in.
    async fn retry_secrets(&self) {
        let Some(current) = self.current.load_full() else {
            return;
        };
        if current.runtime.secret_failures.is_empty() {
            return;
        }
        let secrets =
            crate::secrets::resolve(&current.compiled.bundle, &*self.shared.options.secrets).await;
        let failures = secrets.failures();
        if !failures.is_empty() {
            tracing::warn!(digest = %current.digest, failures = %failures.join("; "), "secrets still unreadable; trying again at the next poll");
            return;
        }
        let compiled = match compile(&current.compiled.bundle) {
            Ok(c) => c,
            Err(_) => return,
        };
        match Runtime::build(&compiled, Some(&current.runtime), &self.shared, &secrets) {
            Ok(runtime) => {
                tracing::info!(digest = %current.digest, "every secret of the bundle is readable now");
                self.current.store(Some(Arc::new(Loaded {
                    digest: current.digest.clone(),
                    commit: current.commit.clone(),
                    compiled,
                    runtime,
                    since: current.since,
                })));
            }
            Err(e) => {
                tracing::warn!(digest = %current.digest, error = %e, "cannot rebuild the runtime")
            }
        }
    }

    /// `/status`: what is served and how reloading went (the report's view for people).
    pub fn status(&self, source: &str) -> Status {
        let r = self.report("");
        Status {
            ready: r.ready,
            source: source.to_string(),
            account: r.account,
            digest: r.digest.map(|d| d.to_string()),
            commit: r.commit,
            since: r.since,
            reloads: r.reloads,
            reload_failures: r.reload_failures,
            last_error: r.last_reload_error,
            last_error_at: r.last_reload_error_at,
            secret_failures: r.secret_failures,
            warnings: self
                .current()
                .map(|c| c.runtime.warnings.clone())
                .unwrap_or_default(),
            decommissioned_at: r.decommissioned_at,
        }
    }

    /// This instance's report for `status/<instance>.json`.
    pub fn report(&self, instance: &str) -> InstanceReport {
        use std::sync::atomic::Ordering::Relaxed;
        let current = self.current();
        let last_error = self
            .last_error
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let count = |f: fn(&Counts) -> &std::sync::atomic::AtomicU64| {
            current
                .as_ref()
                .map_or(0, |c| f(&c.runtime.counts).load(Relaxed))
        };
        InstanceReport {
            instance: instance.to_string(),
            ready: current.is_some() || self.decommissioned.load().is_some(),
            account: current
                .as_ref()
                .map(|c| c.compiled.bundle.account.name.clone()),
            digest: current.as_ref().map(|c| c.digest.clone()),
            commit: current.as_ref().and_then(|c| c.commit.clone()),
            since: current
                .as_ref()
                .map(|c| humantime::format_rfc3339_seconds(c.since).to_string()),
            requests_2xx: count(|c| &c.status_2xx),
            requests_3xx: count(|c| &c.status_3xx),
            requests_4xx: count(|c| &c.status_4xx),
            requests_5xx: count(|c| &c.status_5xx),
            upstream_errors: count(|c| &c.upstream_errors),
            reloads: self.reloads_total.get(),
            reload_failures: self.source_failures.get() + self.bundle_failures.get(),
            last_reload_error: last_error.as_ref().map(|(_, e)| e.clone()),
            last_reload_error_at: last_error
                .as_ref()
                .map(|(t, _)| humantime::format_rfc3339_seconds(*t).to_string()),
            secret_failures: current
                .as_ref()
                .map(|c| c.runtime.secret_failures.clone())
                .unwrap_or_default(),
            decommissioned_at: self.decommissioned.load().as_ref().map(|d| d.at.clone()),
            written_at: humantime::format_rfc3339_seconds(self.clock.now()).to_string(),
        }
    }

    /// `/metrics` in the OpenMetrics text format.
    pub fn metrics_text(&self) -> String {
        let mut out = String::new();
        // Encoding into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// The body of `/status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Status {
    pub ready: bool,
    pub source: String,
    pub account: Option<String>,
    pub digest: Option<String>,
    pub commit: Option<String>,
    /// When the served bundle was swapped in (RFC 3339).
    pub since: Option<String>,
    pub reloads: u64,
    pub reload_failures: u64,
    pub last_error: Option<String>,
    pub last_error_at: Option<String>,
    /// The served bundle's secret references that could not be read, each with why (the
    /// reference and the error, never a value).
    pub secret_failures: Vec<String>,
    /// What does not stop the served bundle but leaves part of it unavailable (an issuer
    /// whose keys cannot be had, an IdP key or client secret that cannot be read).
    pub warnings: Vec<String>,
    /// When the account was decommissioned, while every request is answered 410.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decommissioned_at: Option<String>,
}

/// Polls `source` every `every` until `shutdown` resolves, logging what changed.
pub async fn poll<S: BundleSource>(
    gateway: Arc<Gateway>,
    source: S,
    every: std::time::Duration,
    shutdown: impl Future<Output = ()>,
) {
    let mut shutdown = std::pin::pin!(shutdown);
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The same unavailability is logged once (and again when it ends or changes), not at
    // every poll: a new account's gateway waits for its first deployment quietly.
    let mut unavailable: Option<String> = None;
    loop {
        tokio::select! {
            _ = &mut shutdown => return,
            _ = tick.tick() => {
                let outcome = gateway.reload_once(&source).await;
                if !matches!(outcome, ReloadOutcome::Unavailable { .. })
                    && let Some(reason) = unavailable.take()
                {
                    tracing::info!(source = %source.describe(), was = %reason, "source available again");
                }
                match outcome {
                    ReloadOutcome::Unchanged => {}
                    ReloadOutcome::Swapped { digest } => {
                        tracing::info!(source = %source.describe(), digest = %digest, "serving a new bundle");
                    }
                    ReloadOutcome::Rejected { reason } => {
                        tracing::error!(source = %source.describe(), reason = %reason, "bundle refused; the previous one keeps serving");
                    }
                    // Logged by the swap itself.
                    ReloadOutcome::Decommissioned => {}
                    ReloadOutcome::Unavailable { reason } => {
                        if unavailable.as_ref() != Some(&reason) {
                            tracing::warn!(source = %source.describe(), reason = %reason, "source unavailable; retrying at every poll");
                            unavailable = Some(reason);
                        }
                    }
                }
                gateway.housekeeping();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;
    use crate::source::FileSource;

    #[derive(Debug)]
    struct Fixed(SystemTime);

    impl Clock for Fixed {
        fn now(&self) -> SystemTime {
            self.0
        }
    }

    #[tokio::test]
    async fn reports_and_errors_are_timed_by_the_gateways_clock() {
        let at = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let gateway = Gateway::new().with_clock(Arc::new(Fixed(at)));
        let missing = tempfile::tempdir().unwrap().path().join("no-such-account");
        let source = FileSource::new(&missing.display().to_string());
        let outcome = gateway.reload_once(&source).await;
        assert!(matches!(outcome, ReloadOutcome::Unavailable { .. }));
        let report = gateway.report("i-1");
        assert_eq!(report.written_at, "2023-11-14T22:13:20Z");
        assert_eq!(
            report.last_reload_error_at.as_deref(),
            Some("2023-11-14T22:13:20Z")
        );
    }
}
