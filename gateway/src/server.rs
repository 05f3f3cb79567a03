//! Running a gateway: the poller that hot-reloads the bundle, the status reporter, the
//! admin listener and the data-plane listener, and the drain on shutdown. The
//! `fleetgate-gateway` binary runs one; `fleetgate up` runs one per local account.
//!
//! The data plane speaks HTTP/1.1 only (a load balancer in front terminates TLS and
//! HTTP/2): a cleartext HTTP/2 preface is refused like any other malformed request. Each
//! connection is bounded in what it may make the gateway hold:
//!
//! - a request head (request line and headers) larger than [`MAX_HEAD_BYTES`] is answered
//!   431 and the connection closed; more than 100 headers (hyper's fixed table) likewise;
//! - a head must arrive within `header_read_timeout` of its first byte (slow clients that
//!   trickle a header at a time are cut off);
//! - a connection with no request in flight and no byte of a new one is closed after
//!   `keep_alive_timeout`.
//!
//! hyper's own `header_read_timeout` starts when it begins waiting for a head, idle time
//! included, so it cannot tell a slow head from an idle keep-alive connection; both limits
//! are kept here instead, by watching the connection's reads and its requests in flight.
//!
//! Imports [`crate::dataplane`], [`crate::admin`], [`crate::reload`] and [`crate::source`]; the top of the crate.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::body::{Frame, SizeHint};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::admin::admin_router;
use crate::reload::Gateway;
use crate::source::BundleSource;

/// The largest request head (request line and headers) the data plane reads, in bytes.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;
/// How long a request head may take from its first byte, by default.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How long an idle keep-alive connection stays open, by default: longer than the idle
/// timeout of the load balancers in front (AWS ALB and NLB-fronted ingresses default to 60
/// s), so the load balancer, not the gateway, closes an idle connection and never sends a
/// request on one the gateway is closing.
pub const DEFAULT_KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(75);

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
    /// How long a request head may take from its first byte (data plane).
    pub header_read_timeout: Duration,
    /// How long a data-plane connection may sit idle between requests.
    pub keep_alive_timeout: Duration,
}

impl Settings {
    /// The binary's defaults, for the instance `instance`.
    pub fn new(instance: impl Into<String>) -> Settings {
        Settings {
            poll: Duration::from_secs(5),
            status_every: Duration::from_secs(10),
            instance: instance.into(),
            drain_timeout: Duration::from_secs(30),
            drain_delay: Duration::ZERO,
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            keep_alive_timeout: DEFAULT_KEEP_ALIVE_TIMEOUT,
        }
    }
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
    anyhow::ensure!(
        !args.header_read_timeout.is_zero() && !args.keep_alive_timeout.is_zero(),
        "the header read and keep-alive timeouts must be longer than zero"
    );
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
    let limits = Limits {
        header_read: args.header_read_timeout,
        idle: args.keep_alive_timeout,
    };
    let data_server = serve_data(
        data,
        crate::dataplane::plane(gateway.clone()),
        limits,
        stopped(drain_rx),
    );
    let mut data_task = tokio::spawn(data_server);

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

/// The per-connection time limits of the data plane.
#[derive(Debug, Clone, Copy)]
struct Limits {
    header_read: Duration,
    idle: Duration,
}

/// Accepts data-plane connections until `shutdown` resolves, then lets those with a request
/// in flight finish it (idle ones close at once) and returns.
async fn serve_data(
    listener: tokio::net::TcpListener,
    plane: crate::dataplane::DataPlane,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.max_header_size(MAX_HEAD_BYTES)
        // Kept by `watch` instead (see the module's documentation).
        .header_read_timeout(None)
        .keep_alive(true);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: pause rather than spin.
                    tracing::warn!(error = %e, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let activity = Arc::new(Activity::default());
        let io = TokioIo::new(Watched {
            io: stream,
            activity: activity.clone(),
        });
        // Its own upstream connections, when the gateway pins any (`--upstream-affinity`).
        let pin_budget = &plane.gateway.shared().pin_budget;
        let pinned = (pin_budget.limit() > 0)
            .then(|| Arc::new(crate::upstream::Pinned::new(pin_budget.clone())));
        let service = {
            let (plane, activity) = (plane.clone(), activity.clone());
            hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                let busy = activity.request();
                let (plane, pinned) = (plane.clone(), pinned.clone());
                async move {
                    let req = req.map(axum::body::Body::new);
                    let resp = crate::dataplane::serve_on(plane, peer, pinned, req).await;
                    Ok::<_, Infallible>(resp.map(|body| {
                        axum::body::Body::new(Guarded {
                            inner: body,
                            _busy: busy,
                        })
                    }))
                }
            })
        };
        let conn = graceful.watch(http.serve_connection(io, service));
        let plane = plane.clone();
        tokio::spawn(async move {
            // The peer's address as `--log-client-address` allows (absent by default).
            let logged = &plane.gateway.shared().options.log_client_address;
            tokio::select! {
                r = conn => {
                    if let Err(e) = r {
                        tracing::debug!(peer = logged.field(peer.ip()), error = %e, "connection ended with an error");
                    }
                }
                why = watch(&activity, limits) => {
                    tracing::debug!(peer = logged.field(peer.ip()), reason = why, "connection closed");
                }
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// What a data-plane connection is doing, as its reads and requests show. Written by the
/// connection's task at each change of phase (two atomic stores and a clock read per
/// request); read by its [`watch`]er, which is never woken by it: the watcher looks when its
/// own timer fires, so a request costs no wake-up of a second task.
#[derive(Debug)]
struct Activity {
    /// The origin of `since`.
    origin: tokio::time::Instant,
    /// Requests whose response has not been written out yet.
    in_flight: AtomicUsize,
    /// A byte arrived while no request was in flight: a new head has started.
    head_started: AtomicBool,
    /// Nanoseconds from `origin` to the last change of phase that starts a clock: a head's
    /// first byte, or the end of a response (idle from then on). Written before the phase
    /// it belongs to, so a reader that sees the phase sees its time.
    since: AtomicU64,
}

impl Default for Activity {
    fn default() -> Self {
        Activity {
            origin: tokio::time::Instant::now(),
            in_flight: AtomicUsize::new(0),
            head_started: AtomicBool::new(false),
            since: AtomicU64::new(0),
        }
    }
}

impl Activity {
    fn now(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    fn at(&self, nanos: u64) -> tokio::time::Instant {
        self.origin + Duration::from_nanos(nanos)
    }

    /// Bytes arrived (only the connection's task calls this).
    fn read(&self) {
        if self.in_flight.load(Ordering::Acquire) == 0 && !self.head_started.load(Ordering::Acquire)
        {
            self.since.store(self.now(), Ordering::Release);
            self.head_started.store(true, Ordering::Release);
        }
    }

    /// A request head was read: busy until the returned guard (held by the response body)
    /// is dropped.
    fn request(self: &Arc<Self>) -> Busy {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.head_started.store(false, Ordering::Release);
        Busy(self.clone())
    }

    fn phase(&self) -> Phase {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            Phase::Busy
        } else if self.head_started.load(Ordering::Acquire) {
            Phase::Head
        } else {
            Phase::Idle
        }
    }
}

#[derive(Debug)]
struct Busy(Arc<Activity>);

impl Drop for Busy {
    fn drop(&mut self) {
        // The idle clock starts now; set before the count falls, so a watcher that sees the
        // connection idle never reads the time of an earlier phase.
        self.0.since.store(self.0.now(), Ordering::Release);
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Idle,
    Head,
    Busy,
}

/// Resolves when the connection has been idle longer than `limits.idle` or a head has been
/// arriving for longer than `limits.header_read`; never while a request is in flight (its
/// route's timeout is the limit then).
///
/// It sleeps at most the shorter limit at a time, so a phase that began while it slept is
/// seen before its own limit runs out, and then it sleeps to that phase's exact deadline.
async fn watch(activity: &Activity, limits: Limits) -> &'static str {
    let step = limits.header_read.min(limits.idle);
    loop {
        // A consistent look: the phase and the time it started, unchanged around it.
        let since = activity.since.load(Ordering::Acquire);
        let phase = activity.phase();
        if activity.since.load(Ordering::Acquire) != since {
            continue;
        }
        let now = tokio::time::Instant::now();
        let (deadline, why) = match phase {
            Phase::Busy => {
                tokio::time::sleep_until(now + step).await;
                continue;
            }
            Phase::Idle => (
                activity.at(since) + limits.idle,
                "idle longer than the keep-alive timeout",
            ),
            Phase::Head => (
                activity.at(since) + limits.header_read,
                "request head not complete in time",
            ),
        };
        if now >= deadline {
            return why;
        }
        tokio::time::sleep_until(deadline.min(now + step)).await;
    }
}

/// A connection's socket, telling [`Activity`] when bytes arrive.
#[derive(Debug)]
struct Watched {
    io: tokio::net::TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.io).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.read();
        }
        r
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// A response body that keeps its request counted as in flight until hyper has written it
/// out (or given up) and drops it.
struct Guarded {
    inner: axum::body::Body,
    _busy: Busy,
}

impl hyper::body::Body for Guarded {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        header_read: Duration::from_secs(10),
        idle: Duration::from_secs(75),
    };

    #[tokio::test(start_paused = true)]
    async fn an_idle_connection_expires_after_the_keep_alive_timeout() {
        let a = Activity::default();
        let start = tokio::time::Instant::now();
        let why = watch(&a, LIMITS).await;
        assert_eq!(why, "idle longer than the keep-alive timeout");
        assert_eq!(start.elapsed(), LIMITS.idle);
    }

    #[tokio::test(start_paused = true)]
    async fn a_head_gets_the_header_read_timeout_from_its_first_byte() {
        let a = Arc::new(Activity::default());
        let start = tokio::time::Instant::now();
        let watcher = tokio::spawn({
            let a = a.clone();
            async move { watch(&a, LIMITS).await }
        });
        tokio::time::sleep(Duration::from_secs(30)).await;
        a.read();
        let why = watcher.await.expect("watch");
        assert_eq!(why, "request head not complete in time");
        assert_eq!(start.elapsed(), Duration::from_secs(40));
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_unseen_by_the_watcher_still_restarts_the_idle_clock() {
        let a = Arc::new(Activity::default());
        let start = tokio::time::Instant::now();
        let watcher = tokio::spawn({
            let a = a.clone();
            async move { watch(&a, LIMITS).await }
        });
        tokio::time::sleep(Duration::from_secs(60)).await;
        // A whole request between two looks: idle before and after.
        a.read();
        drop(a.request());
        let why = watcher.await.expect("watch");
        assert_eq!(why, "idle longer than the keep-alive timeout");
        assert_eq!(start.elapsed(), Duration::from_secs(60) + LIMITS.idle);
    }

    #[tokio::test(start_paused = true)]
    async fn a_head_started_late_in_an_idle_wait_gets_its_own_limit() {
        let a = Arc::new(Activity::default());
        let start = tokio::time::Instant::now();
        let watcher = tokio::spawn({
            let a = a.clone();
            async move { watch(&a, LIMITS).await }
        });
        // Two seconds before the idle limit, a head starts: the connection is no longer idle,
        // and the head has its full header-read time from its first byte.
        tokio::time::sleep(LIMITS.idle - Duration::from_secs(2)).await;
        a.read();
        let why = watcher.await.expect("watch");
        assert_eq!(why, "request head not complete in time");
        assert_eq!(
            start.elapsed(),
            LIMITS.idle - Duration::from_secs(2) + LIMITS.header_read
        );
    }

    #[tokio::test(start_paused = true)]
    async fn no_limit_while_a_request_is_in_flight() {
        let a = Arc::new(Activity::default());
        a.read();
        let busy = a.request();
        let watcher = tokio::spawn({
            let a = a.clone();
            async move { watch(&a, LIMITS).await }
        });
        tokio::time::sleep(Duration::from_secs(600)).await;
        assert!(!watcher.is_finished());
        // Body bytes while busy do not start a head.
        a.read();
        let start = tokio::time::Instant::now();
        drop(busy);
        let why = watcher.await.expect("watch");
        assert_eq!(why, "idle longer than the keep-alive timeout");
        assert_eq!(start.elapsed(), LIMITS.idle);
    }
}
