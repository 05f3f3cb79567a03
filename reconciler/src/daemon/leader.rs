//! Holding the lease: only the holder rolls out. The loop and the renewer share one
//! [`LeaseHolder`]; the renewer renews every third of the TTL and wakes the loop when the
//! lease is newly taken.

use std::sync::Arc;
use std::time::Duration;

use crate::daemon::http::Daemon;
use crate::daemon::lease::{Lease, LeaseError, Rejected};
use crate::ops::pipeline::Shard;

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
                // A takeover from another daemon (a failover) is news; a daemon taking its
                // free lease at start is not.
                if let Some(previous) = &view.taken_from {
                    daemon.notify(crate::notify::Event::LeaseTaken {
                        lease: view.location.clone(),
                        holder: self.lease.identity.clone(),
                        previous: Some(previous.clone()),
                    });
                }
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
