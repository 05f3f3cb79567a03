//! `fleetgate watch`: the daemon that keeps a fleet at the head of a branch.
//!
//! One reconcile loop, one rollout at a time: each pass ([`crate::daemon::pass`]) fetches the
//! branch, renders, plans and (when something changed) rolls the head out through the same
//! reconcile path as `fleetgate apply` ([`crate::ops::reconcile`]), then says when to come
//! back ([`Next`], as kube-rs controllers do; errors become requeues by the pass's error
//! policy). A push webhook or the poll timer wakes it. A newer commit that lands
//! mid-rollout preempts it: the rollout stops at its next safe point (no write is cut in
//! half), and the next pass starts at once on the newest head (intermediate commits are not
//! applied one by one), with the accounts the stopped rollout moved in its plan. Only the holder of the lease ([`crate::daemon::lease`]) rolls
//! out; with `--shard i/N` every shard has its own lease and accounts.
//!
//! Its HTTP side ([`crate::daemon::http`]) serves `/status`, `/health`, `/metrics` and
//! `/webhook`.

use std::sync::Arc;
use std::time::Instant;

use crate::daemon::http::ResultLabel;
use crate::daemon::pass::{Looper, Next};

pub use crate::daemon::http::{
    CommitView, Daemon, DaemonStatus, HeldAccount, Preempted, sign, signature_ok,
};
pub use crate::daemon::settings::Settings;

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

#[cfg(test)]
mod tests {
    use crate::ops::pipeline::Shard;

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
