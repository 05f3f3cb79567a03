//! The daemon's state as others see it: `/status` (JSON), `/health`, `/metrics`
//! (Prometheus) and `/webhook` (GitHub-compatible push events, signed with
//! `X-Hub-Signature-256`), and the [`Daemon`] those handlers share with the loop.
//!
//! May import the operations' report types; never the loop itself.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use hmac::{Hmac, Mac};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use serde::Serialize;
use sha2::Sha256;
use tokio::sync::Notify;

use crate::clock::Clock;
use crate::daemon::lease::{LeaseView, Rejected};
use crate::daemon::settings::Settings;
use crate::execute::rollout::{AccountState, Live, RolloutReport};
use crate::ops::drift::DriftReport;
use crate::target::connect::TargetSpec;

/// A commit as `/status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CommitView {
    pub commit: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// When the daemon saw it (head) or finished applying it (last applied), RFC 3339.
    pub at: String,
}

/// An account held by a rollback, as `/status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HeldAccount {
    pub account: String,
    pub note: String,
}

/// A rollout a newer commit stopped, as `/status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Preempted {
    /// The rollout's commit.
    pub commit: String,
    /// The newer commit that stopped it.
    pub by: String,
    /// RFC 3339.
    pub at: String,
    /// The accounts it had moved: the newer commit's rollout takes them over.
    pub moved: Vec<String>,
}

/// The body of `/status`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DaemonStatus {
    pub repo: String,
    pub branch: String,
    pub target: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shard: Option<String>,
    pub identity: String,
    pub lease: Option<LeaseView>,
    /// The branch's head at the last fetch.
    pub head: Option<CommitView>,
    /// The last commit the whole fleet (or shard) was brought to.
    pub last_applied: Option<CommitView>,
    /// A newer head announced by a webhook while a rollout runs: it preempts the rollout.
    pub queued: Option<String>,
    /// The in-flight rollout (outcome `in_progress`), else the last one.
    pub rollout: Option<RolloutReport>,
    /// A commit whose rollout was rolled back: not retried until the branch moves on.
    pub rejected: Option<Rejected>,
    /// The last rollout a newer commit stopped.
    pub preempted: Option<Preempted>,
    pub held: Vec<HeldAccount>,
    pub drift: Option<DriftReport>,
    pub last_error: Option<String>,
    /// RFC 3339.
    pub last_reconcile_at: Option<String>,
    pub next_reconcile_in_seconds: Option<f64>,
}

#[derive(Debug, Default)]
pub(super) struct Shared {
    pub(super) status: DaemonStatus,
    /// The running rollout's live report.
    pub(super) live: Option<Live>,
    /// The target's request counts as last added to the metrics.
    pub(super) requests: crate::target::RequestStats,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct ResultLabel {
    pub(super) result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HolderLabel {
    holder: String,
}

/// The daemon's Prometheus metrics.
#[derive(Debug)]
pub(super) struct Metrics {
    registry: Registry,
    pub(super) reconcile_seconds: Family<ResultLabel, Histogram>,
    accounts: Family<StateLabel, Gauge>,
    pub(super) drifted: Gauge,
    pub(super) applies: Family<ResultLabel, Counter>,
    pub(super) rollbacks: Counter,
    lease_held: Gauge,
    lease_holder: Family<HolderLabel, Gauge>,
    webhooks: Family<ResultLabel, Counter>,
    aws_requests: Family<KindLabel, Counter>,
    notify: crate::notify::NotifyMetrics,
    pub(super) rollout_seconds: Family<ResultLabel, Histogram>,
    pub(super) wave_seconds: Family<WaveLabels, Histogram>,
    /// The waves `wave_seconds` has series of.
    waves_seen: Mutex<std::collections::BTreeSet<String>>,
    pub(super) drift_causes: Family<CauseLabel, Gauge>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct WaveLabels {
    pub(super) wave: String,
    pub(super) result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct CauseLabel {
    pub(super) cause: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
    revision: &'static str,
}

/// The source revision the binary was built from (`FLEETGATE_REVISION` at build time).
pub const REVISION: &str = match option_env!("FLEETGATE_REVISION") {
    Some(r) => r,
    None => "unknown",
};

/// `reconcile_duration_seconds`' results, each shown from the start.
pub(super) const PASS_RESULTS: [&str; 6] = [
    "applied",
    "rolled_back",
    "no_change",
    "not_leader",
    "error",
    "preempted",
];

/// `rollouts` and `rollout_duration_seconds`' results, each shown from the start: a counter
/// that appears at its first increment has no increase Prometheus can see.
pub(super) const ROLLOUT_RESULTS: [&str; 5] = [
    "succeeded",
    "rolled_back",
    "halted",
    "preempted",
    "interrupted",
];

/// `drift_accounts_by_cause`'s causes.
pub(super) const DRIFT_CAUSES: [&str; 7] = [
    "never_deployed",
    "tampered",
    "behind",
    "out_of_band",
    "unreachable",
    "orphaned",
    "decommission_pending",
];

/// A drift cause's label in `drift_accounts_by_cause` (and its kind in notifications).
pub fn cause_label(kind: crate::ops::drift::CauseKind) -> &'static str {
    use crate::ops::drift::CauseKind;
    match kind {
        CauseKind::NeverDeployed => "never_deployed",
        CauseKind::Tampered => "tampered",
        CauseKind::Behind => "behind",
        CauseKind::OutOfBand => "out_of_band",
        CauseKind::Unreachable => "unreachable",
        CauseKind::Orphaned => "orphaned",
        CauseKind::DecommissionPending => "decommission_pending",
    }
}

fn duration_histogram() -> Histogram {
    // 0.5 s .. ~9 h.
    Histogram::new(exponential_buckets(0.5, 2.0, 16))
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: &'static str,
}

impl Metrics {
    fn new() -> Metrics {
        let mut registry = Registry::with_prefix("fleetgate");
        let reconcile_seconds = Family::<ResultLabel, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.05, 2.0, 16))
        });
        crate::metrics::register(
            &mut registry,
            "fleetgate",
            "reconcile_duration_seconds",
            "How long reconcile passes take, by result (applied, rolled_back, no_change, not_leader, error, preempted)",
            reconcile_seconds.clone(),
        );
        for result in PASS_RESULTS {
            drop(reconcile_seconds.get_or_create(&ResultLabel {
                result: result.into(),
            }));
        }
        let accounts = Family::<StateLabel, Gauge>::default();
        crate::metrics::register(
            &mut registry,
            "fleetgate",
            "accounts",
            "Accounts by state: the running (or last) rollout's states, plus held",
            accounts.clone(),
        );
        let drifted = Gauge::default();
        crate::metrics::register(
            &mut registry,
            "fleetgate",
            "drift_accounts",
            "Accounts drifted (or unreachable) in the last drift report",
            drifted.clone(),
        );
        let drift_causes = Family::<CauseLabel, Gauge>::default();
        crate::metrics::register(
            &mut registry,
            "fleetgate",
            "drift_accounts_by_cause",
            "Accounts of the last drift report by cause (never_deployed, tampered, behind, out_of_band, unreachable, orphaned, decommission_pending)",
            drift_causes.clone(),
        );
        for cause in DRIFT_CAUSES {
            drop(drift_causes.get_or_create(&CauseLabel { cause }));
        }
        let build_info = Family::<BuildLabels, Gauge>::default();
        build_info
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
                revision: REVISION,
            })
            .set(1);
        crate::metrics::register(
            &mut registry,
            "fleetgate",
            "build_info",
            "The running binary: its version and source revision (value 1)",
            build_info,
        );
        let applies = Family::<ResultLabel, Counter>::default();
        crate::metrics::register(
            &mut registry,
            "fleetgate",
            "rollouts",
            "Rollouts started by this daemon, by outcome (succeeded, rolled_back, halted, preempted, interrupted: the lease was lost mid-way)",
            applies.clone(),
        );
        let rollout_seconds =
            Family::<ResultLabel, Histogram>::new_with_constructor(duration_histogram);
        crate::metrics::register(
            &mut registry,
            "fleetgate",
            "rollout_duration_seconds",
            "How long rollouts take from their first wave to their outcome, by outcome",
            rollout_seconds.clone(),
        );
        for result in ROLLOUT_RESULTS {
            let label = ResultLabel {
                result: result.into(),
            };
            drop(applies.get_or_create(&label));
            drop(rollout_seconds.get_or_create(&label));
        }
        let wave_seconds =
            Family::<WaveLabels, Histogram>::new_with_constructor(duration_histogram);
        crate::metrics::register(
            &mut registry,
            "fleetgate",
            "wave_duration_seconds",
            "How long waves take (apply, health gate, bake; a failed wave's rollback included), by wave and result (succeeded, failed, preempted)",
            wave_seconds.clone(),
        );
        let rollbacks = Counter::default();
        crate::metrics::register(
            &mut registry,
            "fleetgate",
            "account_rollbacks",
            "Accounts rolled back automatically by a failed wave",
            rollbacks.clone(),
        );
        let lease_held = Gauge::default();
        crate::metrics::register(
            &mut registry,
            "fleetgate",
            "lease_held",
            "1 when this daemon holds its lease (and may roll out)",
            lease_held.clone(),
        );
        let lease_holder = Family::<HolderLabel, Gauge>::default();
        crate::metrics::register(
            &mut registry,
            "fleetgate",
            "lease_holder",
            "The lease's holder as last read (1 for the holder)",
            lease_holder.clone(),
        );
        let webhooks = Family::<ResultLabel, Counter>::default();
        crate::metrics::register(
            &mut registry,
            "fleetgate",
            "webhooks",
            "Webhook deliveries, by result (accepted, ignored, bad_signature)",
            webhooks.clone(),
        );
        for result in ["accepted", "ignored", "bad_signature"] {
            drop(webhooks.get_or_create(&ResultLabel {
                result: result.into(),
            }));
        }
        let aws_requests = Family::<KindLabel, Counter>::default();
        crate::metrics::register(
            &mut registry,
            "fleetgate",
            "aws_requests",
            "AWS calls of this daemon's target, and their attempts the SDK retried, throttled or timed out (kind: calls, retries, throttled, timed_out)",
            aws_requests.clone(),
        );
        for kind in ["calls", "retries", "throttled", "timed_out"] {
            drop(aws_requests.get_or_create(&KindLabel { kind }));
        }
        let notify = crate::notify::NotifyMetrics::register(&mut registry);
        Metrics {
            notify,
            rollout_seconds,
            wave_seconds,
            waves_seen: Mutex::new(std::collections::BTreeSet::new()),
            drift_causes,
            aws_requests,
            registry,
            reconcile_seconds,
            accounts,
            drifted,
            applies,
            rollbacks,
            lease_held,
            lease_holder,
            webhooks,
        }
    }
}

/// Every metric family of the daemon: (name, help, type), by name (docs/operator.md's
/// metric table is checked against it).
pub fn metric_families() -> Vec<(String, String, String)> {
    drop(Metrics::new());
    crate::metrics::catalog()
}

/// What the HTTP handlers share with the loop.
#[derive(Debug)]
pub struct Daemon {
    pub(super) settings: Settings,
    pub(super) shared: Mutex<Shared>,
    pub(super) metrics: Metrics,
    pub(super) wake: Notify,
    /// Every time the daemon records: the system's clock (leases are compared across hosts).
    pub(super) clock: Clock,
    /// The notifier of the head's fleet.yaml (replaced when its `notifications` change).
    notifier: Mutex<Arc<crate::notify::Notifier>>,
}

pub(super) fn lock(m: &Mutex<Shared>) -> std::sync::MutexGuard<'_, Shared> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

type HmacSha256 = Hmac<Sha256>;

/// Whether `header` (`sha256=<hex>`) is the HMAC-SHA256 of `body` under `secret`, compared
/// in constant time.
pub fn signature_ok(secret: &[u8], body: &[u8], header: Option<&str>) -> bool {
    let Some(hex_sig) = header.and_then(|h| h.trim().strip_prefix("sha256=")) else {
        return false;
    };
    let Ok(sig) = hex::decode(hex_sig) else {
        return false;
    };
    let Ok(mut mac) = HmacSha256::new_from_slice(secret) else {
        return false;
    };
    mac.update(body);
    mac.verify_slice(&sig).is_ok()
}

/// `sha256=<hex>` for `body` (for clients and tests).
pub use crate::notify::sign;

/// Accounts by state for the metrics: the rollout's states, then the plan's held and
/// in-sync accounts.
fn account_states(rollout: Option<&RolloutReport>, held: usize) -> BTreeMap<&'static str, i64> {
    let mut out: BTreeMap<&'static str, i64> = [
        "pending",
        "applied",
        "serving",
        "healthy",
        "failed",
        "rolled_back",
        "skipped",
        "conflict",
        "held",
    ]
    .into_iter()
    .map(|s| (s, 0))
    .collect();
    if let Some(r) = rollout {
        for a in r.waves.iter().flat_map(|w| w.accounts.values()) {
            let key = match a.state {
                AccountState::Pending => "pending",
                AccountState::Applied => "applied",
                AccountState::Serving => "serving",
                AccountState::Healthy => "healthy",
                AccountState::Failed => "failed",
                AccountState::RolledBack => "rolled_back",
                AccountState::Skipped => "skipped",
                AccountState::Conflict => "conflict",
            };
            *out.entry(key).or_default() += 1;
        }
    }
    out.insert("held", held as i64);
    out
}

impl Daemon {
    pub fn new(settings: Settings) -> Arc<Daemon> {
        let status = DaemonStatus {
            repo: settings.repo.clone(),
            branch: settings.branch.clone(),
            target: match &settings.target {
                TargetSpec::File(dir) => format!("file://{dir}"),
                TargetSpec::Aws => "aws".into(),
            },
            shard: settings.shard.map(|s| s.to_string()),
            identity: settings.identity.clone(),
            ..DaemonStatus::default()
        };
        Arc::new(Daemon {
            settings,
            shared: Mutex::new(Shared {
                status,
                live: None,
                requests: Default::default(),
            }),
            metrics: Metrics::new(),
            wake: Notify::new(),
            clock: Clock::system(),
            notifier: Mutex::new(Arc::new(crate::notify::Notifier::none())),
        })
    }

    /// `/status`'s body: the stored status with the in-flight rollout's live report.
    pub fn status(&self) -> DaemonStatus {
        let shared = lock(&self.shared);
        let mut status = shared.status.clone();
        if let Some(live) = &shared.live {
            status.rollout = Some(
                live.lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .clone(),
            );
        }
        status
    }

    fn metrics_text(&self) -> String {
        let status = self.status();
        for (state, n) in account_states(status.rollout.as_ref(), status.held.len()) {
            self.metrics
                .accounts
                .get_or_create(&StateLabel {
                    state: state.into(),
                })
                .set(n);
        }
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.metrics.registry).is_err() {
            out.clear();
        }
        out
    }

    /// The HTTP side: `/status`, `/health`, `/metrics`, `/webhook`.
    pub fn router(self: &Arc<Daemon>) -> axum::Router {
        axum::Router::new()
            .route("/status", get(status_handler))
            .route("/health", get(|| async { "ok\n" }))
            .route("/metrics", get(metrics_handler))
            .route("/webhook", post(webhook_handler))
            .with_state(self.clone())
    }

    /// Adds what the target's calls did since the last time to the metrics.
    pub(super) fn record_requests(&self, now: Option<crate::target::RequestStats>) {
        let Some(now) = now else { return };
        let before = std::mem::replace(&mut lock(&self.shared).requests, now);
        for (kind, now, before) in [
            ("calls", now.calls, before.calls),
            ("retries", now.retries, before.retries),
            ("throttled", now.throttled, before.throttled),
            ("timed_out", now.timed_out, before.timed_out),
        ] {
            self.metrics
                .aws_requests
                .get_or_create(&KindLabel { kind })
                .inc_by(now.saturating_sub(before));
        }
    }

    pub(super) fn update(&self, f: impl FnOnce(&mut DaemonStatus)) {
        f(&mut lock(&self.shared).status);
    }

    /// Sends `event` to the sinks of the head's fleet.yaml; never waits.
    pub(super) fn notify(&self, event: crate::notify::Event) {
        self.notifier().notify(event);
    }

    pub(super) fn notifier(&self) -> Arc<crate::notify::Notifier> {
        self.notifier
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Starts the sinks of `spec` when they differ from the running ones; the replaced
    /// notifier delivers what it has queued, then stops.
    pub(super) fn configure_notifications(
        &self,
        spec: &crate::config::manifest::NotificationsSpec,
    ) {
        let mut current = self
            .notifier
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if current.spec() == spec {
            return;
        }
        let source = format!("fleetgate-watch {}", self.settings.identity);
        let fresh = crate::notify::Notifier::start(
            spec,
            &source,
            self.metrics.notify.clone(),
            &crate::notify::SecretStore::default(),
        )
        .for_shard(self.settings.shard.map(|s| s.to_string()));
        tracing::info!(sinks = spec.sinks.len(), "notification sinks configured");
        // The series of sinks no longer configured go: renaming sinks must not grow them.
        let kept: std::collections::BTreeSet<&str> = spec.sinks.iter().map(|s| s.name()).collect();
        for old in current
            .spec()
            .sinks
            .iter()
            .filter(|s| !kept.contains(s.name()))
        {
            self.metrics.notify.forget(old.name());
        }
        *current = Arc::new(fresh);
    }

    /// Removes the wave series of waves fleet.yaml no longer has: renaming waves must not
    /// grow the series.
    pub(super) fn forget_waves(&self, keep: &[&str]) {
        let mut seen = self
            .metrics
            .waves_seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let gone: Vec<String> = seen
            .iter()
            .filter(|w| !keep.contains(&w.as_str()))
            .cloned()
            .collect();
        for wave in gone {
            for result in ["succeeded", "failed", "preempted"] {
                self.metrics.wave_seconds.remove(&WaveLabels {
                    wave: wave.clone(),
                    result,
                });
            }
            seen.remove(&wave);
        }
    }

    /// The last drift report's accounts by cause.
    pub(super) fn record_drift_causes(&self, report: &DriftReport) {
        let mut counts: BTreeMap<&'static str, i64> =
            DRIFT_CAUSES.iter().map(|c| (*c, 0)).collect();
        for kind in report.accounts.iter().filter_map(|a| a.cause_kind) {
            *counts.entry(cause_label(kind)).or_default() += 1;
        }
        for (cause, n) in counts {
            self.metrics
                .drift_causes
                .get_or_create(&CauseLabel { cause })
                .set(n);
        }
    }

    pub(super) fn record_lease(&self, view: &LeaseView) {
        self.metrics.lease_held.set(i64::from(view.held_by_me));
        self.metrics.lease_holder.clear();
        if let Some(holder) = &view.holder {
            self.metrics
                .lease_holder
                .get_or_create(&HolderLabel {
                    holder: holder.clone(),
                })
                .set(1);
        }
        self.update(|s| s.lease = Some(view.clone()));
    }
}

impl crate::notify::watch::RolloutMetrics for Daemon {
    fn wave(&self, wave: &str, result: &'static str, took: std::time::Duration) {
        self.metrics
            .waves_seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(wave.to_string());
        self.metrics
            .wave_seconds
            .get_or_create(&WaveLabels {
                wave: wave.to_string(),
                result,
            })
            .observe(took.as_secs_f64());
    }

    fn rollout(&self, outcome: &'static str, took: std::time::Duration) {
        let label = ResultLabel {
            result: outcome.into(),
        };
        self.metrics.applies.get_or_create(&label).inc();
        self.metrics
            .rollout_seconds
            .get_or_create(&label)
            .observe(took.as_secs_f64());
    }
}

async fn status_handler(State(d): State<Arc<Daemon>>) -> Response {
    axum::Json(scrubbed(&d.status())).into_response()
}

/// `/status` as served: every string through the redaction point (errors quote git and
/// target URLs, and messages may carry what a manifest wrote), like everything printed.
fn scrubbed(status: &DaemonStatus) -> serde_json::Value {
    let mut v = serde_json::to_value(status)
        .unwrap_or_else(|e| unreachable!("a status always serializes: {e}"));
    crate::redact::scrub_value(&mut v, crate::redact::run_key());
    v
}

async fn metrics_handler(State(d): State<Arc<Daemon>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        d.metrics_text(),
    )
        .into_response()
}

#[derive(serde::Deserialize)]
struct PushEvent {
    #[serde(rename = "ref")]
    git_ref: String,
    after: Option<String>,
}

/// GitHub's push webhook: signed with the shared secret; a push to the tracked branch wakes
/// the loop. Anything unsigned or signed wrongly is refused (401), logged, and triggers
/// nothing.
async fn webhook_handler(
    State(d): State<Arc<Daemon>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let delivery = headers
        .get("x-github-delivery")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
        .to_string();
    let Some(secret) = &d.settings.webhook_secret else {
        return (
            StatusCode::NOT_FOUND,
            "no webhook secret is configured (--webhook-secret-file or FLEETGATE_WEBHOOK_SECRET)\n",
        )
            .into_response();
    };
    let signature = headers
        .get("x-hub-signature-256")
        .and_then(|v| v.to_str().ok());
    if !signature_ok(secret, &body, signature) {
        d.metrics
            .webhooks
            .get_or_create(&ResultLabel {
                result: "bad_signature".into(),
            })
            .inc();
        tracing::warn!(
            delivery,
            signed = signature.is_some(),
            "webhook refused: bad or missing X-Hub-Signature-256"
        );
        return (StatusCode::UNAUTHORIZED, "bad signature\n").into_response();
    }
    let event = headers
        .get("x-github-event")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("push");
    let count = |result: &str| {
        d.metrics
            .webhooks
            .get_or_create(&ResultLabel {
                result: result.into(),
            })
            .inc();
    };
    match event {
        "ping" => {
            count("ignored");
            (StatusCode::OK, "pong\n").into_response()
        }
        "push" => {
            let push: PushEvent = match serde_json::from_slice(&body) {
                Ok(p) => p,
                Err(e) => {
                    count("ignored");
                    return (StatusCode::BAD_REQUEST, format!("not a push event: {e}\n"))
                        .into_response();
                }
            };
            let branch = d.settings.branch.trim_start_matches("origin/");
            if push.git_ref != format!("refs/heads/{branch}") {
                count("ignored");
                return (
                    StatusCode::ACCEPTED,
                    format!("ignored: {} is not the tracked branch\n", push.git_ref),
                )
                    .into_response();
            }
            count("accepted");
            tracing::info!(
                delivery,
                after = push.after.as_deref().unwrap_or("-"),
                "push webhook"
            );
            d.update(|s| s.queued = push.after.clone());
            d.wake.notify_one();
            (StatusCode::ACCEPTED, "queued\n").into_response()
        }
        other => {
            count("ignored");
            (StatusCode::ACCEPTED, format!("ignored event {other}\n")).into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn status_is_served_scrubbed() {
        let status = DaemonStatus {
            repo: "https://deploy:hunter2-PLANTED@git.example/fleet.git".into(),
            last_error: Some(
                "cannot fetch: -----BEGIN PRIVATE KEY-----\nMIIEPLANTED\n-----END PRIVATE KEY-----"
                    .into(),
            ),
            ..DaemonStatus::default()
        };
        let served = scrubbed(&status).to_string();
        assert!(!served.contains("PLANTED"), "{served}");
        assert!(served.contains("git.example/fleet.git"), "{served}");
    }

    #[test]
    fn signatures_verify_and_refuse() {
        let body = br#"{"ref":"refs/heads/main"}"#;
        let good = sign(b"s3cret", body);
        assert!(signature_ok(b"s3cret", body, Some(&good)));
        assert!(!signature_ok(b"other", body, Some(&good)));
        assert!(!signature_ok(b"s3cret", b"{}", Some(&good)));
        assert!(!signature_ok(b"s3cret", body, None));
        assert!(!signature_ok(b"s3cret", body, Some("sha1=abc")));
        assert!(!signature_ok(b"s3cret", body, Some("sha256=zz")));
        // GitHub's documented example (docs: "Validating webhook deliveries").
        assert!(signature_ok(
            b"It's a Secret to Everybody",
            b"Hello, World!",
            Some("sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17")
        ));
    }
}
