//! `fleetgate watch`: the daemon that keeps a fleet at the head of a branch.
//!
//! One reconcile loop, one rollout at a time: each pass ([`crate::daemon::pass`]) fetches the
//! branch, renders, plans and (when something changed) rolls the head out through the same
//! reconcile path as `fleetgate apply` ([`crate::ops::reconcile`]), then says when to come
//! back ([`Next`], as kube-rs controllers do; errors become requeues by the pass's error
//! policy). A push webhook or the poll timer wakes it; a newer commit that lands
//! mid-rollout waits, and the next pass applies the newest head (intermediate commits are
//! not applied one by one). Only the holder of the lease ([`crate::daemon::lease`]) rolls
//! out; with `--shard i/N` every shard has its own lease and accounts.
//!
//! Its HTTP side ([`crate::daemon::http`]) serves `/status`, `/health`, `/metrics` and
//! `/webhook`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::daemon::lease::{Lease, LeaseError, Rejected};
use crate::daemon::pass::Looper;
use crate::ops::pipeline::Shard;
use crate::target::connect::TargetSpec;

use crate::daemon::http::ResultLabel;
pub use crate::daemon::http::{CommitView, Daemon, DaemonStatus, HeldAccount, sign, signature_ok};

/// What a reconcile pass says to do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
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

/// The next wait after `failures` errors in a row: doubling from 5 s up to `max`.
pub fn backoff(failures: u32, max: Duration) -> Duration {
    let secs = 5u64.saturating_mul(1u64 << failures.saturating_sub(1).min(16));
    Duration::from_secs(secs).min(max)
}

pub(super) fn lease_name(shard: Option<Shard>) -> String {
    match shard {
        Some(s) => format!("watch-{}-of-{}.json", s.index, s.count),
        None => "watch.json".into(),
    }
}

/// The lease and its lock: the loop and the renewer never write it at once.
#[derive(Debug)]
pub(super) struct LeaseHolder {
    pub(super) lease: Lease,
    pub(super) guard: tokio::sync::Mutex<()>,
    pub(super) held: std::sync::atomic::AtomicBool,
}

impl LeaseHolder {
    pub(super) async fn hold(
        &self,
        daemon: &Daemon,
        rejected: Option<Option<Rejected>>,
    ) -> Result<(bool, Option<Rejected>), LeaseError> {
        let _g = self.guard.lock().await;
        let (held, record, view) = self.lease.try_hold(daemon.clock.now(), rejected).await?;
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
    let mut looper = Looper::new(daemon.clone(), stop_rx.clone());
    tokio::pin!(shutdown);
    loop {
        let started = Instant::now();
        let (result, action) = tokio::select! {
            biased;
            () = &mut shutdown => break,
            r = looper.pass() => r,
        };
        daemon
            .metrics
            .reconcile_seconds
            .get_or_create(&ResultLabel {
                result: result.into(),
            })
            .observe(started.elapsed().as_secs_f64());
        let Next::Requeue(after) = action;
        daemon.update(|s| {
            s.last_reconcile_at = Some(daemon.clock.rfc3339());
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
pub(super) fn spawn_renewer(
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

#[cfg(test)]
mod tests {
    use super::*;

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
