//! Running a gateway: the poller that hot-reloads the bundle, the status reporter, the
//! admin listener and the data-plane listener, and the drain on shutdown. The
//! `fleetgate-gateway` binary runs one; `fleetgate up` runs one per local account.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::reload::{BundleSource, Gateway, admin_router};

/// How a gateway runs, besides its listeners and source.
#[derive(Debug, Clone)]
pub struct Settings {
    /// How often the pointer is polled.
    pub poll: Duration,
    /// How often status/<instance>.json is written (zero: never).
    pub status_every: Duration,
    /// This instance's name in status/.
    pub instance: String,
    /// On shutdown, how long requests in flight may take to finish.
    pub drain_timeout: Duration,
    /// On shutdown, how long to keep serving while /ready says 503 first.
    pub drain_delay: Duration,
}

/// Serves until `shutdown` resolves, then drains: /ready turns 503, new requests are
/// still served for `drain_delay`, requests in flight get `drain_timeout`, and a last
/// status report is written.
pub async fn run<S: BundleSource + Clone + 'static>(
    gateway: Arc<Gateway>,
    source: S,
    data: tokio::net::TcpListener,
    admin: tokio::net::TcpListener,
    args: Settings,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let instance = args.instance.clone();
    let described = source.describe();
    tracing::info!(
        source = %described,
        listen = %data.local_addr()?,
        admin_listen = %admin.local_addr()?,
        instance = %instance,
        "fleetgate-gateway starting (not ready until a good bundle is loaded)"
    );

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };

    let poller = tokio::spawn(crate::reload::poll(
        gateway.clone(),
        source.clone(),
        args.poll,
        stopped(stop_rx.clone()),
    ));
    let reporter = (!args.status_every.is_zero()).then(|| {
        let (gateway, source, instance, every) = (
            gateway.clone(),
            source.clone(),
            instance.clone(),
            args.status_every,
        );
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = stop.wait_for(|s| *s) => return,
                    _ = tick.tick() => {}
                }
                let report = gateway.report(&instance);
                match serde_json::to_vec_pretty(&report) {
                    Ok(body) => {
                        if let Err(e) = source.write_status(&instance, body).await {
                            tracing::warn!(error = %e, "cannot write the status report");
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot encode the status report"),
                }
            }
        })
    });

    let admin_server = axum::serve(
        admin,
        admin_router(gateway.clone(), described.clone()).into_make_service(),
    )
    .with_graceful_shutdown(stopped(stop_rx.clone()));
    let admin_task = tokio::spawn(async move { admin_server.await });

    let (drain_tx, drain_rx) = tokio::sync::watch::channel(false);
    let data_server = axum::serve(
        data,
        crate::dataplane::router(gateway.clone())
            .into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(stopped(drain_rx));
    let mut data_task = tokio::spawn(async move { data_server.await });

    tokio::select! {
        _ = shutdown => {}
        r = &mut data_task => {
            let _ = stop_tx.send(true);
            r??;
            anyhow::bail!("the listener stopped");
        }
    }
    tracing::info!(drain_delay = ?args.drain_delay, drain_timeout = ?args.drain_timeout, "draining");
    gateway.set_draining();
    tokio::time::sleep(args.drain_delay).await;
    let _ = drain_tx.send(true);
    match tokio::time::timeout(args.drain_timeout, &mut data_task).await {
        Ok(r) => r??,
        Err(_) => {
            tracing::warn!("requests still in flight after the drain timeout; stopping anyway");
            data_task.abort();
        }
    }
    let _ = stop_tx.send(true);
    let _ = poller.await;
    if let Some(r) = reporter {
        let _ = r.await;
    }
    // A last report, so the rollout sees this instance leave with its final counts.
    if !args.status_every.is_zero()
        && let Ok(body) = serde_json::to_vec_pretty(&gateway.report(&instance))
        && let Err(e) = source.write_status(&instance, body).await
    {
        tracing::warn!(error = %e, "cannot write the final status report");
    }
    let _ = admin_task.await;
    tracing::info!("stopped");
    Ok(())
}
