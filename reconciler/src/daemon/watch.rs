//! `fleetgate watch`: the daemon that keeps a fleet at the head of a branch.
//!
//! One reconcile loop, one rollout at a time: each pass fetches the branch, renders, plans
//! and (when something changed) rolls the head out wave by wave with health gates, then says
//! when to come back ([`Action`], as kube-rs controllers do). A push webhook or the poll
//! timer wakes it; a newer commit that lands mid-rollout waits, and the next pass applies
//! the newest head (intermediate commits are not applied one by one). Only the holder of the
//! lease ([`crate::daemon::lease`]) rolls out; with `--shard i/N` every shard has its own lease and
//! accounts.
//!
//! Its HTTP side serves `/status` (JSON), `/health`, `/metrics` (Prometheus) and `/webhook`
//! (GitHub-compatible push events, signed with `X-Hub-Signature-256`).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

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

use crate::config::manifest::FleetSpec;
use crate::daemon::lease::{
    FileLeaseStore, Lease, LeaseError, LeaseStore, LeaseView, Rejected, S3LeaseStore,
};
use crate::execute::rollout::{AccountState, Executor, Live, Outcome, RolloutReport};
use crate::git::GitRepo;
use crate::ops::drift::DriftReport;
use crate::ops::pipeline::{self, PipelineError, Shard, Stamp};
use crate::plan::{self, Action as PlanAction};
use crate::target::connect::{AnyTarget, TargetSpec};
use crate::target::{AccountRef, FanOut, NoProgress, Observed};

/// What a reconcile pass says to do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Come back after this long (or sooner, when a webhook arrives).
    Requeue(Duration),
}

/// The daemon's settings (the command line's).
#[derive(Debug, Clone)]
pub struct Settings {
    pub repo: String,
    pub branch: String,
    pub cache_dir: PathBuf,
    pub target: TargetSpec,
    pub endpoint_url: Option<String>,
    /// Replaces fleet.yaml's `roleName` (`--role-name`).
    pub role_name: Option<String>,
    /// How often the remote is fetched when no webhook comes.
    pub poll_interval: Duration,
    /// How often drift is checked [default: fleet.yaml's drift.interval].
    pub drift_interval: Option<Duration>,
    pub shard: Option<Shard>,
    /// Who this daemon is, in the lease and in the pointers it writes.
    pub identity: String,
    pub lease_ttl: Duration,
    /// The hub's state bucket for the lease with `--target aws` [default: fleet.yaml's
    /// stateBucket].
    pub state_bucket: Option<String>,
    /// The webhook's HMAC secret; without one, `/webhook` is off (404).
    pub webhook_secret: Option<Vec<u8>>,
    pub concurrency: Option<usize>,
    pub account_timeout: Duration,
    /// Longest wait after repeated errors.
    pub max_backoff: Duration,
    /// Caps every wave's bake time (`fleetgate up`); `None`: fleet.yaml's bakes.
    pub max_bake: Option<Duration>,
}

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

/// The body of `/status`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Status {
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
    /// A newer head announced by a webhook while a rollout runs: applied next.
    pub queued: Option<String>,
    /// The in-flight rollout (outcome `in_progress`), else the last one.
    pub rollout: Option<RolloutReport>,
    /// A commit whose rollout was rolled back: not retried until the branch moves on.
    pub rejected: Option<Rejected>,
    pub held: Vec<HeldAccount>,
    pub drift: Option<DriftReport>,
    pub last_error: Option<String>,
    /// RFC 3339.
    pub last_reconcile_at: Option<String>,
    pub next_reconcile_in_seconds: Option<f64>,
}

#[derive(Debug, Default)]
struct Shared {
    status: Status,
    /// The running rollout's live report.
    live: Option<Live>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: String,
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
struct Metrics {
    registry: Registry,
    reconcile_seconds: Family<ResultLabel, Histogram>,
    accounts: Family<StateLabel, Gauge>,
    drifted: Gauge,
    applies: Family<ResultLabel, Counter>,
    rollbacks: Counter,
    lease_held: Gauge,
    lease_holder: Family<HolderLabel, Gauge>,
    webhooks: Family<ResultLabel, Counter>,
}

impl Metrics {
    fn new() -> Metrics {
        let mut registry = Registry::with_prefix("fleetgate");
        let reconcile_seconds = Family::<ResultLabel, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.05, 2.0, 16))
        });
        registry.register(
            "reconcile_duration_seconds",
            "How long reconcile passes take, by result (applied, rolled_back, no_change, not_leader, error)",
            reconcile_seconds.clone(),
        );
        let accounts = Family::<StateLabel, Gauge>::default();
        registry.register(
            "accounts",
            "Accounts by state: the running (or last) rollout's states, plus held and in_sync",
            accounts.clone(),
        );
        let drifted = Gauge::default();
        registry.register(
            "drift_accounts",
            "Accounts drifted (or unreachable) in the last drift report",
            drifted.clone(),
        );
        let applies = Family::<ResultLabel, Counter>::default();
        registry.register(
            "rollouts",
            "Rollouts started by this daemon, by outcome",
            applies.clone(),
        );
        let rollbacks = Counter::default();
        registry.register(
            "account_rollbacks",
            "Accounts rolled back automatically by a failed wave",
            rollbacks.clone(),
        );
        let lease_held = Gauge::default();
        registry.register(
            "lease_held",
            "1 when this daemon holds its lease (and may roll out)",
            lease_held.clone(),
        );
        let lease_holder = Family::<HolderLabel, Gauge>::default();
        registry.register(
            "lease_holder",
            "The lease's holder as last read (1 for the holder)",
            lease_holder.clone(),
        );
        let webhooks = Family::<ResultLabel, Counter>::default();
        registry.register(
            "webhooks",
            "Webhook deliveries, by result (accepted, ignored, bad_signature)",
            webhooks.clone(),
        );
        Metrics {
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

/// What the HTTP handlers share with the loop.
#[derive(Debug)]
pub struct Daemon {
    settings: Settings,
    shared: Mutex<Shared>,
    metrics: Metrics,
    wake: Notify,
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

fn lock(m: &Mutex<Shared>) -> std::sync::MutexGuard<'_, Shared> {
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
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    #[allow(clippy::expect_used)]
    let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// The next wait after `failures` errors in a row: doubling from 5 s up to `max`.
pub fn backoff(failures: u32, max: Duration) -> Duration {
    let secs = 5u64.saturating_mul(1u64 << failures.saturating_sub(1).min(16));
    Duration::from_secs(secs).min(max)
}

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
        let status = Status {
            repo: settings.repo.clone(),
            branch: settings.branch.clone(),
            target: match &settings.target {
                TargetSpec::File(dir) => format!("file://{dir}"),
                TargetSpec::Aws => "aws".into(),
            },
            shard: settings.shard.map(|s| s.to_string()),
            identity: settings.identity.clone(),
            ..Status::default()
        };
        Arc::new(Daemon {
            settings,
            shared: Mutex::new(Shared { status, live: None }),
            metrics: Metrics::new(),
            wake: Notify::new(),
        })
    }

    /// `/status`'s body: the stored status with the in-flight rollout's live report.
    pub fn status(&self) -> Status {
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

    fn update(&self, f: impl FnOnce(&mut Status)) {
        f(&mut lock(&self.shared).status);
    }

    fn record_lease(&self, view: &LeaseView) {
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

async fn status_handler(State(d): State<Arc<Daemon>>) -> Response {
    axum::Json(scrubbed(&d.status())).into_response()
}

/// `/status` as served: every string through the redaction point (errors quote git and
/// target URLs, and messages may carry what a manifest wrote), like everything printed.
fn scrubbed(status: &Status) -> serde_json::Value {
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

/// Where the lease of this daemon (and shard) lives.
#[derive(Debug)]
enum AnyLeaseStore {
    File(FileLeaseStore),
    S3(S3LeaseStore),
}

impl LeaseStore for AnyLeaseStore {
    fn location(&self) -> String {
        match self {
            AnyLeaseStore::File(s) => s.location(),
            AnyLeaseStore::S3(s) => s.location(),
        }
    }

    async fn read(
        &self,
    ) -> Result<Option<(crate::daemon::lease::LeaseRecord, crate::target::ETag)>, LeaseError> {
        match self {
            AnyLeaseStore::File(s) => s.read().await,
            AnyLeaseStore::S3(s) => s.read().await,
        }
    }

    async fn write(
        &self,
        record: &crate::daemon::lease::LeaseRecord,
        expected: Option<&crate::target::ETag>,
    ) -> Result<crate::target::ETag, LeaseError> {
        match self {
            AnyLeaseStore::File(s) => s.write(record, expected).await,
            AnyLeaseStore::S3(s) => s.write(record, expected).await,
        }
    }
}

fn lease_name(shard: Option<Shard>) -> String {
    match shard {
        Some(s) => format!("watch-{}-of-{}.json", s.index, s.count),
        None => "watch.json".into(),
    }
}

/// The loop's own state, between passes.
struct Looper {
    daemon: Arc<Daemon>,
    lease: Option<Arc<LeaseHolder>>,
    target: Option<Arc<(Option<FleetSpec>, AnyTarget)>>,
    failures: u32,
    next_drift: Option<Instant>,
    /// A head whose manifests are invalid: reported once, not retried.
    invalid_head: Option<String>,
    /// Renews the lease from the moment it exists, rollouts included.
    renewer: Option<tokio::task::JoinHandle<()>>,
    stop: tokio::sync::watch::Receiver<bool>,
}

/// The lease and its lock: the loop and the renewer never write it at once.
#[derive(Debug)]
struct LeaseHolder {
    lease: Lease<AnyLeaseStore>,
    guard: tokio::sync::Mutex<()>,
    held: std::sync::atomic::AtomicBool,
}

impl LeaseHolder {
    async fn hold(
        &self,
        daemon: &Daemon,
        rejected: Option<Option<Rejected>>,
    ) -> Result<(bool, Option<Rejected>), LeaseError> {
        let _g = self.guard.lock().await;
        let (held, record, view) = self.lease.try_hold(SystemTime::now(), rejected).await?;
        let was = self.held.swap(held, std::sync::atomic::Ordering::SeqCst);
        if was != held {
            if held {
                tracing::info!(lease = %view.location, "lease taken: this daemon rolls out");
            } else {
                tracing::warn!(
                    lease = %view.location,
                    holder = view.holder.as_deref().unwrap_or("-"),
                    "lease lost"
                );
            }
        }
        daemon.record_lease(&view);
        Ok((held, record.and_then(|r| r.rejected)))
    }
}

/// Runs the daemon until `shutdown` resolves: the HTTP server on `listener`, the lease
/// renewer, and the reconcile loop (on the calling task: git is not `Sync`).
pub async fn run(
    daemon: Arc<Daemon>,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let server = {
        let router = daemon.router();
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(async move {
                    let _ = stop.wait_for(|s| *s).await;
                })
                .await
        })
    };
    let mut looper = Looper {
        daemon: daemon.clone(),
        lease: None,
        target: None,
        failures: 0,
        next_drift: None,
        invalid_head: None,
        renewer: None,
        stop: stop_rx.clone(),
    };
    tokio::pin!(shutdown);
    loop {
        let started = Instant::now();
        let (result, action) = tokio::select! {
            biased;
            () = &mut shutdown => break,
            r = looper.reconcile() => r,
        };
        daemon
            .metrics
            .reconcile_seconds
            .get_or_create(&ResultLabel {
                result: result.into(),
            })
            .observe(started.elapsed().as_secs_f64());
        let Action::Requeue(after) = action;
        daemon.update(|s| {
            s.last_reconcile_at = Some(rfc3339(SystemTime::now()));
            s.next_reconcile_in_seconds = Some(after.as_secs_f64());
        });
        tokio::select! {
            biased;
            () = &mut shutdown => break,
            () = daemon.wake.notified() => {}
            () = tokio::time::sleep(after) => {}
        }
    }
    tracing::info!("shutting down");
    let _ = stop_tx.send(true);
    if let Some(r) = looper.renewer.take() {
        let _ = r.await;
    }
    if let Some(holder) = &looper.lease {
        let _g = holder.guard.lock().await;
        if let Err(e) = holder.lease.release().await {
            tracing::warn!(error = %e, "cannot release the lease");
        }
    }
    server.await??;
    Ok(())
}

/// Renews the lease every third of its TTL (sooner after a failure), and wakes the loop when
/// the lease is newly taken.
fn spawn_renewer(
    daemon: Arc<Daemon>,
    holder: Arc<LeaseHolder>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let every = (holder.lease.ttl / 3).max(Duration::from_millis(200));
        loop {
            tokio::select! {
                _ = stop.wait_for(|s| *s) => return,
                () = tokio::time::sleep(every) => {}
            }
            let before = holder.held.load(std::sync::atomic::Ordering::SeqCst);
            match holder.hold(&daemon, None).await {
                Ok((true, _)) if !before => daemon.wake.notify_one(),
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "cannot renew the lease");
                    daemon.update(|s| s.last_error = Some(e.to_string()));
                }
            }
        }
    })
}

impl Looper {
    fn settings(&self) -> &Settings {
        &self.daemon.settings
    }

    fn error(&mut self, what: &str, message: String) -> (&'static str, Action) {
        self.failures += 1;
        let wait = backoff(self.failures, self.settings().max_backoff);
        tracing::error!(error = %message, retry_in = ?wait, "{what}");
        self.daemon
            .update(|s| s.last_error = Some(format!("{what}: {message}")));
        ("error", Action::Requeue(wait))
    }

    /// One pass: fetch, plan, roll out if needed, check drift when due.
    async fn reconcile(&mut self) -> (&'static str, Action) {
        let poll = self.settings().poll_interval;
        // The repo: fetched now, read on this task (git2 is not Sync).
        let settings = self.settings().clone();
        let opened =
            tokio::task::spawn_blocking(move || GitRepo::open(&settings.repo, &settings.cache_dir))
                .await;
        let repo = match opened {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => return self.error("cannot fetch the config repo", e.to_string()),
            Err(e) => return self.error("cannot fetch the config repo", e.to_string()),
        };
        let rev = repo.branch_rev(&self.settings().branch);
        let head = match repo.resolve(&rev) {
            Ok(h) => h,
            Err(e) => return self.error("cannot resolve the branch", e.to_string()),
        };
        let head_id = head.id.to_string();
        let subject = repo.summary(&head_id);
        self.daemon.update(|s| {
            if s.head.as_ref().is_none_or(|h| h.commit != head_id) {
                s.head = Some(CommitView {
                    commit: head_id.clone(),
                    subject: subject.clone(),
                    at: rfc3339(SystemTime::now()),
                });
            }
            if s.queued.as_deref() == Some(head_id.as_str()) {
                s.queued = None;
            }
        });

        let mut prepared = match pipeline::prepare(&repo, None, &head) {
            Ok(p) => p,
            Err(PipelineError::Invalid { diagnostics, .. }) => {
                if self.invalid_head.as_deref() != Some(head_id.as_str()) {
                    for d in &diagnostics {
                        tracing::error!(commit = %head_id, "{d}");
                    }
                    self.invalid_head = Some(head_id.clone());
                }
                self.daemon.update(|s| {
                    s.last_error = Some(format!(
                        "{} has invalid manifests ({} problems): nothing applied; waiting for a fix",
                        &head_id[..12],
                        diagnostics.len()
                    ));
                });
                return ("error", Action::Requeue(poll));
            }
            Err(e) => return self.error("cannot render the head", e.to_string()),
        };
        if let Some(shard) = self.settings().shard {
            prepared.restrict_to(shard);
        }

        // The target, connected once (again when fleet.yaml's access settings change).
        if self
            .target
            .as_ref()
            .is_none_or(|c| !same_access(c.0.as_ref(), prepared.fleet.as_ref()))
        {
            match self
                .settings()
                .target
                .connect(
                    prepared.fleet.as_ref(),
                    "watch",
                    self.settings().endpoint_url.as_deref(),
                    self.settings().role_name.as_deref(),
                )
                .await
            {
                Ok(t) => {
                    // The daemon applies, so like `apply` it creates a missing file:// root.
                    let t = match t {
                        AnyTarget::File(f) => AnyTarget::File(f.create_if_missing()),
                        other => other,
                    };
                    if self.lease.is_none() {
                        match self.lease_store(&t, prepared.fleet.as_ref()) {
                            Ok(store) => {
                                let holder = Arc::new(LeaseHolder {
                                    lease: Lease {
                                        store,
                                        identity: self.settings().identity.clone(),
                                        ttl: self.settings().lease_ttl,
                                        shard: self.settings().shard.map(|s| s.to_string()),
                                    },
                                    guard: tokio::sync::Mutex::new(()),
                                    held: false.into(),
                                });
                                self.renewer = Some(spawn_renewer(
                                    self.daemon.clone(),
                                    holder.clone(),
                                    self.stop.clone(),
                                ));
                                self.lease = Some(holder);
                            }
                            Err(e) => return self.error("no place for the lease", e),
                        }
                    }
                    self.target = Some(Arc::new((prepared.fleet.clone(), t)));
                }
                Err(e) => return self.error("cannot connect to the target", format!("{e:#}")),
            }
        }
        let Some(holder) = self.lease.clone() else {
            return self.error("no lease", "the lease store is not set up".into());
        };
        let rejected = match holder.hold(&self.daemon, None).await {
            Ok((true, rejected)) => rejected,
            Ok((false, _)) => {
                // Somebody else rolls out; come back before its lease could expire.
                self.failures = 0;
                let wait = (self.settings().lease_ttl / 3).max(Duration::from_millis(200));
                return ("not_leader", Action::Requeue(wait.min(poll)));
            }
            Err(e) => return self.error("cannot take the lease", e.to_string()),
        };
        self.daemon.update(|s| s.rejected = rejected.clone());
        let rejected_here = rejected.as_ref().is_some_and(|r| r.commit == head_id);

        let Some(connected) = self.target.clone() else {
            return self.error("no target", "not connected".into());
        };
        let target = &connected.1;
        let fleet = prepared.fleet.clone();
        let concurrency = self
            .settings()
            .concurrency
            .or(fleet.as_ref().map(|f| f.concurrency as usize))
            .unwrap_or(32)
            .max(1);
        let fan = FanOut {
            concurrency,
            timeout: self.settings().account_timeout,
            progress: &NoProgress,
        };
        let options = plan::Options {
            redaction_key: b"watch".to_vec(),
            ..plan::Options::default()
        };
        let superseded = |c: &str| repo.is_descendant(&head_id, c);
        let planned = pipeline::observe_and_plan(
            &prepared,
            target,
            &options,
            &fan,
            pipeline::Verify::Pointers,
            &superseded,
        )
        .await;
        let (plan, observed) = match planned {
            Ok(p) => p,
            Err(e) => {
                let message = e.to_string();
                return self.error("cannot observe the target", message);
            }
        };
        let held: Vec<HeldAccount> = plan
            .accounts
            .iter()
            .filter(|a| a.action == PlanAction::Held)
            .map(|a| HeldAccount {
                account: a.name.clone(),
                note: a.note.clone().unwrap_or_default(),
            })
            .collect();
        self.daemon.update(|s| s.held = held);
        let stamp = Stamp {
            applied_by: format!("fleetgate-watch {}", self.settings().identity),
            applied_at: rfc3339(SystemTime::now()),
        };
        // Holds the branch has moved past, on accounts that need no change: lifted, so the
        // next rollback's hold is the only one standing.
        let stale: Vec<AccountRef> = plan
            .accounts
            .iter()
            .filter(|a| a.action == PlanAction::NoChange)
            .filter(|a| match observed.get(&a.name) {
                Some(Observed::Current { pointer, .. } | Observed::Deployed { pointer, .. }) => {
                    pointer
                        .hold
                        .as_ref()
                        .and_then(|h| h.branch_head.as_deref())
                        .is_some_and(&superseded)
                }
                _ => false,
            })
            .filter_map(|a| {
                prepared
                    .desired
                    .iter()
                    .find(|d| d.account.name == a.name)
                    .map(|d| d.account.clone())
            })
            .collect();
        for (name, r) in fan
            .run(
                "release",
                stale.iter(),
                |a| a,
                |a| {
                    let stamp = &stamp;
                    async move { crate::execute::rollout::set_hold(target, a, None, stamp).await }
                },
            )
            .await
        {
            match r {
                Ok(_) => tracing::info!(account = %name, "hold released: the branch moved on"),
                Err(e) => tracing::warn!(account = %name, error = %e, "cannot release a hold"),
            }
        }

        let changes = plan.summary.create + plan.summary.update;
        let mut result = "no_change";
        // Accounts the rollout tolerated as failed: retried on the next pass.
        let mut rollout_failed = 0;
        if changes > 0 && rejected_here {
            self.daemon.update(|s| {
                s.last_error = Some(format!(
                    "{} was rolled back and is not retried: push a fix or a revert",
                    &head_id[..12]
                ));
            });
        } else if changes > 0 {
            let settings = fleet
                .as_ref()
                .map(|f| f.rollout.clone())
                .unwrap_or_default();
            let exec = Executor {
                target,
                plan: &plan,
                desired: &prepared.desired,
                observed: &observed,
                stamp: &stamp,
                settings: &settings,
                fan,
                skip_gates: false,
                hold: None,
                record_commit: true,
                max_bake: self.daemon.settings.max_bake,
            };
            let live: Live = Arc::new(Mutex::new(exec.initial_report()));
            lock(&self.daemon.shared).live = Some(live.clone());
            tracing::info!(commit = %head_id, accounts = changes, "rollout starts");
            // The rollout stops where it is if the lease is lost: pointers are only ever
            // moved by CAS with bundles stored first, so stopping anywhere is safe.
            let lost = async {
                loop {
                    tokio::time::sleep(Duration::from_millis(250)).await;
                    if !holder.held.load(std::sync::atomic::Ordering::SeqCst) {
                        return;
                    }
                }
            };
            let report = tokio::select! {
                r = exec.run(&live) => Some(r),
                () = lost => None,
            };
            {
                let mut shared = lock(&self.daemon.shared);
                shared.live = None;
                let snapshot = live
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .clone();
                shared.status.rollout = Some(report.clone().unwrap_or(snapshot));
            }
            let Some(report) = report else {
                return self.error(
                    "rollout stopped",
                    "the lease was lost mid-rollout; the new holder carries on".into(),
                );
            };
            let rolled_back = report
                .waves
                .iter()
                .flat_map(|w| w.accounts.values())
                .filter(|a| a.state == AccountState::RolledBack)
                .count();
            self.daemon.metrics.rollbacks.inc_by(rolled_back as u64);
            let outcome = match report.outcome {
                Outcome::Succeeded => "succeeded",
                Outcome::RolledBack => "rolled_back",
                Outcome::Halted => "halted",
                Outcome::InProgress => "in_progress",
            };
            self.daemon
                .metrics
                .applies
                .get_or_create(&ResultLabel {
                    result: outcome.into(),
                })
                .inc();
            tracing::info!(commit = %head_id, outcome, rolled_back, "rollout ends");
            if report.outcome != Outcome::Succeeded {
                let reject = Rejected {
                    commit: head_id.clone(),
                    reason: report.reason.clone().unwrap_or_else(|| outcome.into()),
                };
                if let Err(e) = holder.hold(&self.daemon, Some(Some(reject.clone()))).await {
                    tracing::warn!(error = %e, "cannot record the rejected commit in the lease");
                }
                self.daemon.update(|s| s.rejected = Some(reject));
                self.failures = 0;
                return ("rolled_back", Action::Requeue(poll));
            }
            result = "applied";
            rollout_failed = report.waves.iter().map(|w| w.failed).sum::<usize>();
        }
        let failed = plan.summary.unreachable + rollout_failed;
        if failed == 0 && plan.summary.held == 0 && (changes == 0 || result == "applied") {
            self.daemon.update(|s| {
                if s.last_applied.as_ref().is_none_or(|c| c.commit != head_id) {
                    s.last_applied = Some(CommitView {
                        commit: head_id.clone(),
                        subject: subject.clone(),
                        at: rfc3339(SystemTime::now()),
                    });
                }
                s.last_error = None;
            });
        }

        // Drift, when due (and right after start).
        let every = self
            .settings()
            .drift_interval
            .or(fleet.as_ref().map(|f| f.drift.interval.0))
            .unwrap_or(Duration::from_secs(6 * 3600));
        if self.next_drift.is_none_or(|t| Instant::now() >= t) {
            self.next_drift = Some(Instant::now() + every);
            let depth = fleet
                .as_ref()
                .map(|f| f.drift.history_depth as usize)
                .unwrap_or(50);
            match crate::ops::drift::run(&repo, &head, target, &fan, depth).await {
                Ok(mut report) => {
                    if let Some(shard) = self.settings().shard {
                        let accounts = std::mem::take(&mut report.accounts)
                            .into_iter()
                            .filter(|a| shard.contains(&a.name))
                            .collect();
                        report = crate::ops::drift::report(
                            &report.repo,
                            report.head.clone(),
                            &report.target,
                            report.history_depth,
                            accounts,
                        );
                    }
                    let n = report.summary.drifted + report.summary.unreachable;
                    self.daemon.metrics.drifted.set(n as i64);
                    tracing::info!(
                        drifted = report.summary.drifted,
                        unreachable = report.summary.unreachable,
                        orphaned = report.summary.orphaned,
                        "drift report"
                    );
                    self.daemon.update(|s| s.drift = Some(report));
                }
                Err(e) => tracing::warn!(error = %e, "drift check failed"),
            }
        }

        if failed > 0 {
            self.failures += 1;
            return (
                result,
                Action::Requeue(backoff(self.failures, poll.max(Duration::from_secs(5)))),
            );
        }
        self.failures = 0;
        (result, Action::Requeue(poll))
    }

    fn lease_store(
        &self,
        target: &AnyTarget,
        fleet: Option<&FleetSpec>,
    ) -> Result<AnyLeaseStore, String> {
        let name = lease_name(self.settings().shard);
        match target {
            AnyTarget::File(t) => Ok(AnyLeaseStore::File(FileLeaseStore {
                path: t.root().join(".fleetgate").join(name),
            })),
            AnyTarget::Aws(t) => {
                let bucket = self
                    .settings()
                    .state_bucket
                    .clone()
                    .or_else(|| fleet.and_then(|f| f.state_bucket.clone()))
                    .ok_or_else(|| {
                        "--target aws needs the hub's state bucket for the lease: fleet.yaml's stateBucket or --state-bucket".to_string()
                    })?;
                Ok(AnyLeaseStore::S3(S3LeaseStore {
                    s3: t.hub_s3(),
                    bucket,
                    key: format!("fleetgate/leases/{name}"),
                }))
            }
        }
    }
}

/// Whether two fleet.yaml's reach accounts the same way (a change means reconnecting).
fn same_access(a: Option<&FleetSpec>, b: Option<&FleetSpec>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => {
            a.role_name == b.role_name
                && a.external_id == b.external_id
                && a.session_duration == b.session_duration
                && a.hub_region == b.hub_region
        }
        (None, None) => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn status_is_served_scrubbed() {
        let status = Status {
            repo: "https://deploy:hunter2-PLANTED@git.example/fleet.git".into(),
            last_error: Some(
                "cannot fetch: -----BEGIN PRIVATE KEY-----\nMIIEPLANTED\n-----END PRIVATE KEY-----"
                    .into(),
            ),
            ..Status::default()
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

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let max = Duration::from_secs(300);
        let waits: Vec<u64> = (1..=9).map(|n| backoff(n, max).as_secs()).collect();
        assert_eq!(waits, [5, 10, 20, 40, 80, 160, 300, 300, 300]);
    }

    #[test]
    fn shards_split_the_fleet_stably_and_completely() {
        let names: Vec<String> = (0..300).map(|i| format!("acct-{i:04}")).collect();
        let mut seen = 0;
        for i in 0..3 {
            let shard: Shard = format!("{i}/3").parse().unwrap();
            let mine = names.iter().filter(|n| shard.contains(n)).count();
            assert!((60..=140).contains(&mine), "shard {i}: {mine} of 300");
            seen += mine;
        }
        assert_eq!(seen, 300, "every account in exactly one shard");
        assert_eq!(Shard::of("acme-prod", 7), Shard::of("acme-prod", 7));
        assert!("3/3".parse::<Shard>().is_err());
        assert!("0/0".parse::<Shard>().is_err());
        assert!("1".parse::<Shard>().is_err());
    }
}
