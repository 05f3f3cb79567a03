//! Notifications: what the watch daemon, `apply`, `rollback` and `release` tell people,
//! delivered to Slack, Microsoft Teams, a signed webhook and GitHub deployment statuses.
//!
//! [`Notifier::notify`] never waits: each sink has its own bounded queue and worker, which
//! retries with backoff and gives up after fleet.yaml's `attempts`. A sink that is down,
//! slow or misconfigured loses its messages (counted in `fleetgate_notifications_total`) and
//! changes nothing else. Repeated drift is sent once.
//!
//! - [`event`]: the events and each sink's payload (pure);
//! - [`deliver`]: the HTTP side, the workers and their retries;
//! - [`watch`]: a rollout's waves as events.

pub mod counters;
pub mod deliver;
pub mod event;
pub mod secrets;
pub mod watch;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::config::manifest::{EventKind, NotificationsSpec, SinkSpec};
pub use crate::config::notifications::{MAX_SINKS, check, check_reference, check_url};
pub use counters::{NotifyMetrics, RESULTS, SinkLabels};
pub use deliver::sign;
pub use event::{DriftedAccount, Event, FailedAccount, Notice, Severity};
pub use secrets::SecretStore;

/// Whether `sink` takes events of `kind`.
fn takes(sink: &SinkSpec, kind: EventKind) -> bool {
    let configured = sink.events();
    match sink {
        SinkSpec::GithubDeployments { .. } => {
            matches!(kind, EventKind::Rollout | EventKind::Wave)
                && (configured.is_empty() || configured.contains(&kind))
        }
        _ => configured.is_empty() || configured.contains(&kind),
    }
}

/// One sink's side of the notifier.
#[derive(Debug)]
struct SinkHandle {
    name: String,
    spec: SinkSpec,
    tx: Option<tokio::sync::mpsc::Sender<Arc<Notice>>>,
}

/// Hands events to the sinks' workers. Cheap to call from anywhere: it never waits.
#[derive(Debug)]
pub struct Notifier {
    spec: NotificationsSpec,
    source: String,
    shard: Option<String>,
    sinks: Vec<SinkHandle>,
    metrics: NotifyMetrics,
    /// The last drift sent: its accounts' fingerprint (`None` once cleared or never).
    drift: Mutex<Option<u64>>,
    workers: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    #[cfg(test)]
    captured: Option<Mutex<Vec<Event>>>,
}

impl Notifier {
    /// A notifier with no sinks (nothing configured).
    pub fn none() -> Notifier {
        Notifier {
            spec: NotificationsSpec::default(),
            source: String::new(),
            shard: None,
            sinks: Vec::new(),
            metrics: NotifyMetrics::default(),
            drift: Mutex::new(None),
            workers: Mutex::new(Vec::new()),
            #[cfg(test)]
            captured: None,
        }
    }

    /// A notifier that keeps every event it is given, and sends none (tests).
    #[cfg(test)]
    pub(crate) fn capturing() -> Notifier {
        let mut n = Notifier::none();
        n.captured = Some(Mutex::new(Vec::new()));
        n.sinks.push(SinkHandle {
            name: "captured".into(),
            spec: SinkSpec::Webhook {
                name: "captured".into(),
                url: "http://127.0.0.1:9/".into(),
                secret: crate::config::manifest::NotifySecret::Env("FLEETGATE_NOTIFY_X".into()),
                events: Vec::new(),
            },
            tx: None,
        });
        n
    }

    /// The events a [`Notifier::capturing`] was given.
    #[cfg(test)]
    pub(crate) fn captured(&self) -> Vec<Event> {
        self.captured
            .as_ref()
            .map(|c| {
                c.lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .clone()
            })
            .unwrap_or_default()
    }

    /// The same notifier, its events about the watch daemon's shard `shard` (`1/3`).
    pub fn for_shard(mut self, shard: Option<String>) -> Notifier {
        self.shard = shard;
        self
    }

    /// Starts a worker per sink of `spec` on the current tokio runtime. A sink whose
    /// credential cannot be read is logged and skipped: notifications never stop a rollout.
    pub fn start(
        spec: &NotificationsSpec,
        source: &str,
        metrics: NotifyMetrics,
        secrets: &SecretStore,
    ) -> Notifier {
        let client = deliver::client();
        let mut sinks = Vec::new();
        let mut workers = Vec::new();
        for sink in spec.sinks.iter().take(MAX_SINKS) {
            let name = sink.name().to_string();
            for result in RESULTS {
                drop(metrics.deliveries.get_or_create(&SinkLabels {
                    sink: name.clone(),
                    result,
                }));
            }
            let target = match deliver::Target::resolve(sink, secrets) {
                Ok(t) => t,
                Err(why) => {
                    tracing::error!(sink = %name, error = %why, "notification sink disabled: its credential cannot be read");
                    sinks.push(SinkHandle {
                        name,
                        spec: sink.clone(),
                        tx: None,
                    });
                    continue;
                }
            };
            let (tx, rx) = tokio::sync::mpsc::channel(spec.queue.max(1) as usize);
            let worker = deliver::Worker {
                name: name.clone(),
                target,
                client: client.clone(),
                attempts: spec.attempts.max(1),
                backoff: Duration::from(spec.retry_backoff),
                metrics: metrics.clone(),
            };
            workers.push(tokio::spawn(worker.run(rx)));
            sinks.push(SinkHandle {
                name,
                spec: sink.clone(),
                tx: Some(tx),
            });
        }
        Notifier {
            spec: spec.clone(),
            source: source.to_string(),
            shard: None,
            sinks,
            metrics,
            drift: Mutex::new(None),
            workers: Mutex::new(workers),
            #[cfg(test)]
            captured: None,
        }
    }

    /// The configuration this notifier was started with.
    pub fn spec(&self) -> &NotificationsSpec {
        &self.spec
    }

    /// Queues `event` for every sink that takes it; never waits. A full queue drops the
    /// message (counted `dropped`). Drift that is the same as the last one sent is counted
    /// `deduplicated` and not sent; `drift.cleared` is sent only after a `drift.found`.
    pub fn notify(&self, event: Event) {
        if self.sinks.is_empty() {
            return;
        }
        if !self.fresh_drift(&event) {
            for s in self.sinks.iter().filter(|s| takes(&s.spec, event.kind())) {
                self.metrics.count(&s.name, "deduplicated");
            }
            return;
        }
        #[cfg(test)]
        if let Some(c) = &self.captured {
            c.lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push(event.clone());
        }
        let notice = Arc::new(Notice {
            id: deliver::random_id(),
            at: crate::clock::Clock::system().rfc3339(),
            source: self.source.clone(),
            shard: self.shard.clone(),
            event,
        });
        for s in &self.sinks {
            if !takes(&s.spec, notice.event.kind()) {
                continue;
            }
            let Some(tx) = &s.tx else {
                self.metrics.count(&s.name, "failed");
                continue;
            };
            // Counted before it is sent: the worker may take it at once.
            self.metrics.queued.inc();
            let refused = tx.try_send(notice.clone()).err();
            if let Some(e) = refused {
                self.metrics.queued.dec();
                match e {
                    tokio::sync::mpsc::error::TrySendError::Full(_) => {
                        tracing::warn!(sink = %s.name, event = notice.event.name(), "notification dropped: the sink's queue is full");
                        self.metrics.count(&s.name, "dropped");
                    }
                    tokio::sync::mpsc::error::TrySendError::Closed(_) => {
                        tracing::error!(sink = %s.name, event = notice.event.name(), "notification lost: the sink's worker stopped");
                        self.metrics.count(&s.name, "failed");
                    }
                }
            }
        }
    }

    /// Whether a drift event differs from the last one sent (and records it).
    fn fresh_drift(&self, event: &Event) -> bool {
        let mut last = self
            .drift
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match event {
            Event::DriftFound { fingerprint, .. } => {
                let fresh = *last != Some(*fingerprint);
                *last = Some(*fingerprint);
                fresh
            }
            Event::DriftCleared { .. } => last.take().is_some(),
            _ => true,
        }
    }

    /// Stops taking events and waits for the queued ones to be delivered, at most `budget`
    /// (`apply` and `rollback` call it before they exit).
    pub async fn flush(mut self, budget: Duration) {
        for s in &mut self.sinks {
            s.tx = None;
        }
        let workers = std::mem::take(
            &mut *self
                .workers
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        let all = futures::future::join_all(workers);
        if tokio::time::timeout(budget, all).await.is_err() {
            tracing::warn!(
                "notifications still undelivered after {}: given up",
                humantime::format_duration(budget)
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::manifest::NotifySecret;

    fn slack(name: &str, url: NotifySecret) -> SinkSpec {
        SinkSpec::Slack {
            name: name.into(),
            url,
            events: Vec::new(),
        }
    }

    #[test]
    fn references_cannot_reach_beyond_their_places() {
        for bad in [
            NotifySecret::Env("AWS_SECRET_ACCESS_KEY".into()),
            NotifySecret::Env("FLEETGATE_NOTIFY_".into()),
            NotifySecret::Env("FLEETGATE_NOTIFY_a".into()),
            // The reconciler's own secrets are not notification credentials.
            NotifySecret::Env("FLEETGATE_WEBHOOK_SECRET".into()),
            NotifySecret::Env("FLEETGATE_REDACTION_KEY".into()),
            NotifySecret::File("/etc/passwd".into()),
            NotifySecret::File("../token".into()),
            NotifySecret::File("a/../../b".into()),
            NotifySecret::File(String::new()),
        ] {
            assert!(check_reference(&bad).is_some(), "{bad:?} is refused");
        }
        for good in [
            NotifySecret::Env("FLEETGATE_NOTIFY_SLACK_URL".into()),
            NotifySecret::File("slack/url".into()),
        ] {
            assert_eq!(check_reference(&good), None);
        }
    }

    #[test]
    fn a_bad_configuration_is_named_key_by_key() {
        let spec = NotificationsSpec {
            sinks: vec![
                slack("ops", NotifySecret::Env("HOME".into())),
                slack("ops", NotifySecret::Env("FLEETGATE_NOTIFY_X".into())),
                SinkSpec::Webhook {
                    name: "hook".into(),
                    url: "ftp://x".into(),
                    secret: NotifySecret::Env("FLEETGATE_NOTIFY_Y".into()),
                    events: Vec::new(),
                },
                SinkSpec::GithubDeployments {
                    name: "gh".into(),
                    repository: "just-a-name".into(),
                    token: NotifySecret::Env("FLEETGATE_NOTIFY_Z".into()),
                    api_url: None,
                    environment: None,
                    events: vec![EventKind::Drift],
                },
            ],
            attempts: 0,
            ..NotificationsSpec::default()
        };
        let problems: Vec<String> = check(&spec)
            .into_iter()
            .map(|(k, m)| format!("{k}: {m}"))
            .collect();
        let text = problems.join("\n");
        for want in [
            "notifications.attempts: attempts must be 1 to 20",
            "notifications.sinks[0]: env \"HOME\"",
            "notifications.sinks[1]: sink name \"ops\" is used twice",
            "notifications.sinks[2]: url: \"ftp://x\" is not an http",
            "notifications.sinks[3]: repository \"just-a-name\" must be owner/repo",
            "notifications.sinks[3]: GitHub deployments take rollout and wave events only",
        ] {
            assert!(text.contains(want), "{want:?} in:\n{text}");
        }
    }

    #[tokio::test]
    async fn repeated_drift_is_sent_once_and_cleared_once() {
        let metrics = NotifyMetrics::default();
        let spec = NotificationsSpec {
            sinks: vec![slack(
                "ops",
                NotifySecret::Env("FLEETGATE_NOTIFY_UNSET_FOR_TEST".into()),
            )],
            ..NotificationsSpec::default()
        };
        let n = Notifier::start(&spec, "test", metrics.clone(), &SecretStore::default());
        // (account, cause kind, cause in words): the words count commits behind.
        let drift = |accounts: &[(&str, &str, &str)]| Event::DriftFound {
            commit: "c".into(),
            accounts: accounts
                .iter()
                .map(|(a, _, c)| DriftedAccount {
                    account: a.to_string(),
                    cause: c.to_string(),
                })
                .collect(),
            drifted_total: accounts.len(),
            unreachable_total: 0,
            fingerprint: event::drift_fingerprint(accounts.iter().map(|(a, k, _)| (*a, *k))),
        };
        let count = |result| {
            metrics
                .deliveries
                .get_or_create(&SinkLabels {
                    sink: "ops".into(),
                    result,
                })
                .get()
        };
        // The sink's credential is not set: each message it would send counts as failed.
        n.notify(Event::DriftCleared { commit: "c".into() });
        assert_eq!(count("deduplicated"), 1, "nothing to clear yet");
        n.notify(drift(&[
            ("a", "behind", "1 commit behind"),
            ("b", "tampered", "tampered"),
        ]));
        n.notify(drift(&[
            ("b", "tampered", "tampered"),
            ("a", "behind", "2 commits behind"),
        ]));
        assert_eq!((count("failed"), count("deduplicated")), (1, 2));
        n.notify(drift(&[("a", "behind", "3 commits behind")]));
        assert_eq!(count("failed"), 2, "a changed drift is sent");
        n.notify(Event::DriftCleared { commit: "c".into() });
        n.notify(Event::DriftCleared { commit: "c".into() });
        assert_eq!((count("failed"), count("deduplicated")), (3, 3));
    }
}
