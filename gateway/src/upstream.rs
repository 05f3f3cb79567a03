//! Talking to backends: pooled keep-alive clients, request and response header rewriting,
//! timeouts, retries on connection errors, and aggregation of several backends' JSON.
//!
//! Imports nothing of this crate.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http_body_util::{BodyExt as _, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

pub type HttpClient = Client<HttpsConnector<HttpConnector>, Body>;

/// What opens a connection to a backend (TCP, TLS for https, the connect timeout).
pub type Connector = HttpsConnector<HttpConnector>;

/// Connection pools, one per connect timeout (the connector holds the timeout), shared by
/// every bundle so a reload keeps warm connections.
#[derive(Debug, Default)]
pub struct Clients {
    by_connect_timeout: Mutex<HashMap<Duration, (HttpClient, Connector)>>,
}

/// Connect timeout when a backend sets none.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

impl Clients {
    pub fn get(&self, connect_timeout: Option<Duration>) -> Result<HttpClient, String> {
        self.get_with_connector(connect_timeout).map(|(c, _)| c)
    }

    /// The pool of `connect_timeout` and the connector it opens connections with.
    pub fn get_with_connector(
        &self,
        connect_timeout: Option<Duration>,
    ) -> Result<(HttpClient, Connector), String> {
        let t = connect_timeout.unwrap_or(DEFAULT_CONNECT_TIMEOUT);
        let mut map = self
            .by_connect_timeout
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(c) = map.get(&t) {
            return Ok(c.clone());
        }
        let c = new_client(t)?;
        map.insert(t, c.clone());
        Ok(c)
    }
}

fn new_client(connect_timeout: Duration) -> Result<(HttpClient, Connector), String> {
    let mut http = HttpConnector::new();
    http.set_connect_timeout(Some(connect_timeout));
    http.set_nodelay(true);
    http.enforce_http(false);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let https = match hyper_rustls::HttpsConnectorBuilder::new()
        .with_provider_and_native_roots(provider.clone())
    {
        Ok(b) => b.https_or_http().enable_http1().wrap_connector(http),
        Err(e) => {
            // No CA certificates on this machine: plain-http backends still work, https ones
            // fail with a certificate error that says so.
            tracing::warn!(error = %e, "no platform CA certificates: https upstreams will fail");
            let config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map(|b| {
                    b.with_root_certificates(rustls::RootCertStore::empty())
                        .with_no_client_auth()
                });
            hyper_rustls::HttpsConnectorBuilder::new()
                .with_tls_config(config.map_err(|e| format!("TLS setup: {e}"))?)
                .https_or_http()
                .enable_http1()
                .wrap_connector(http)
        }
    };
    Ok((
        Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_timer(hyper_util::rt::TokioTimer::new())
            .build(https.clone()),
        https,
    ))
}

/// Headers that describe one connection, never forwarded (RFC 9110 section 7.6.1).
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Removes hop-by-hop headers, including those the `Connection` header names.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Most messages name nothing but `keep-alive` or `close` in `Connection`: no list then.
    let named: Vec<HeaderName> = if headers.contains_key(header::CONNECTION) {
        headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
            .collect()
    } else {
        Vec::new()
    };
    for h in HOP_BY_HOP.iter().chain(named.iter()) {
        headers.remove(h);
    }
    headers.remove(PROXY_CONNECTION);
}

const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// The forwarding headers: a proxy's to write, a client's claims about itself otherwise.
pub const FORWARDING: [HeaderName; 6] = [
    X_FORWARDED_FOR,
    X_FORWARDED_PROTO,
    X_FORWARDED_HOST,
    HeaderName::from_static("x-forwarded-port"),
    HeaderName::from_static("x-real-ip"),
    header::FORWARDED,
];

/// Appends `peer`, the address the request came from, to `X-Forwarded-For` (as every proxy
/// does: the chain the request arrived with is kept, all its lines joined in order, so a
/// backend behind the gateway reads the client the same way the gateway did, from the right)
/// and sets `X-Forwarded-Proto` / `-Host`.
pub fn add_forwarded(headers: &mut HeaderMap, peer: std::net::IpAddr, host: &HeaderValue) {
    let value = if headers.contains_key(&X_FORWARDED_FOR) {
        let prev: Vec<&str> = headers
            .get_all(&X_FORWARDED_FOR)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .collect();
        let chain = if prev.is_empty() {
            peer.to_string()
        } else {
            format!("{}, {peer}", prev.join(", "))
        };
        HeaderValue::from_str(&chain).ok()
    } else {
        // The common case, no chain yet: the address is written without a String.
        use std::io::Write as _;
        let mut buf = [0u8; 64];
        let mut w = &mut buf[..];
        let _ = write!(w, "{peer}");
        let len = 64 - w.len();
        HeaderValue::from_bytes(&buf[..len]).ok()
    };
    if let Some(v) = value {
        headers.insert(X_FORWARDED_FOR, v);
    }
    // A load balancer in front has set the scheme the client used; otherwise it was http.
    if !headers
        .get(&X_FORWARDED_PROTO)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == "http" || v == "https")
    {
        headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static("http"));
    }
    headers.insert(X_FORWARDED_HOST, host.clone());
}

/// A backend of the served bundle.
#[derive(Debug, Clone)]
pub struct Upstream {
    pub name: String,
    /// `scheme://authority` plus the URL's path without its trailing `/`.
    pub base: String,
    pub timeout: Option<Duration>,
    pub client: HttpClient,
    /// Opens this backend's pinned connections ([`Pinned`]).
    pub connector: Connector,
}

impl Upstream {
    /// `scheme://authority`: what a connection to this backend is to.
    pub fn origin(&self) -> &str {
        let after_scheme = self.base.find("://").map_or(0, |i| i + 3);
        let end = self.base[after_scheme..]
            .find('/')
            .map_or(self.base.len(), |i| after_scheme + i);
        &self.base[..end]
    }

    pub fn uri(&self, path: &str, query: Option<&str>) -> Result<http::Uri, http::uri::InvalidUri> {
        self.uri_with(|s| s.push_str(path), query)
    }

    /// [`Upstream::uri`] of the path that `write_path` writes: one buffer, no copy of it.
    pub fn uri_with(
        &self,
        write_path: impl FnOnce(&mut String),
        query: Option<&str>,
    ) -> Result<http::Uri, http::uri::InvalidUri> {
        let mut s = String::with_capacity(self.base.len() + 64 + query.map_or(0, str::len));
        s.push_str(&self.base);
        write_path(&mut s);
        if !s[self.base.len()..].starts_with('/') {
            s.insert(self.base.len(), '/');
        }
        if let Some(q) = query {
            s.push('?');
            s.push_str(q);
        }
        // From the String itself: parsed in place, not copied.
        http::Uri::try_from(s)
    }
}

/// What the client's request body is doing as the backend call reads it, so a failure can be
/// put on the side that caused it: a malformed or cut-short body, or one that stalls, is the
/// client's fault and must never count as a backend's error (health gates judge those).
#[derive(Debug, Default)]
pub struct BodyWatch {
    state: AtomicU8,
}

const WATCH_IDLE: u8 = 0;
const WATCH_WAITING_ON_CLIENT: u8 = 1;
const WATCH_DONE: u8 = 2;

impl BodyWatch {
    /// The last read of the body was still waiting for the client's bytes.
    pub fn waiting_on_client(&self) -> bool {
        self.state.load(Ordering::Relaxed) == WATCH_WAITING_ON_CLIENT
    }
}

/// An error of the client's request body (malformed framing, or cut short): the client's
/// fault. Carried through the HTTP client's error chain so [`classify`] can tell it apart.
#[derive(Debug)]
pub struct ClientBodyError {
    /// `body_malformed` or `body_incomplete`.
    pub kind: &'static str,
}

impl std::fmt::Display for ClientBodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.kind {
            "body_incomplete" => f.write_str("the client's request body ended early"),
            _ => f.write_str("the client's request body is malformed"),
        }
    }
}

impl std::error::Error for ClientBodyError {}

/// The kind of a request-body read error: cut short (hyper's incomplete message) or
/// malformed (anything else hyper's parser refused).
fn client_body_kind(e: &(dyn std::error::Error + 'static)) -> &'static str {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(h) = err.downcast_ref::<hyper::Error>()
            && (h.is_incomplete_message() || h.is_canceled() || h.is_closed())
        {
            return "body_incomplete";
        }
        cur = err.source();
    }
    "body_malformed"
}

/// The client's request body, watched: errors become [`ClientBodyError`], and the
/// [`BodyWatch`] says whether the last read was waiting for the client.
#[derive(Debug)]
pub struct WatchedBody {
    inner: Body,
    watch: Arc<BodyWatch>,
}

impl WatchedBody {
    pub fn new(inner: Body, watch: Arc<BodyWatch>) -> WatchedBody {
        WatchedBody { inner, watch }
    }
}

impl hyper::body::Body for WatchedBody {
    type Data = Bytes;
    type Error = ClientBodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, ClientBodyError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        let (state, out) = match polled {
            Poll::Pending => (WATCH_WAITING_ON_CLIENT, Poll::Pending),
            Poll::Ready(None) => (WATCH_DONE, Poll::Ready(None)),
            Poll::Ready(Some(Ok(frame))) => (WATCH_IDLE, Poll::Ready(Some(Ok(frame)))),
            Poll::Ready(Some(Err(e))) => {
                let kind = client_body_kind(&e);
                (WATCH_DONE, Poll::Ready(Some(Err(ClientBodyError { kind }))))
            }
        };
        self.watch.state.store(state, Ordering::Relaxed);
        out
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// How an upstream call failed. Messages stay inside the gateway (logs); clients get only
/// the kind.
#[derive(Debug)]
pub enum Failure {
    /// No connection could be made.
    Connect(String),
    /// No response headers within the route's timeout.
    Timeout,
    /// The client's body exceeded the route's limit.
    BodyTooLarge,
    /// Anything else on the way (reset, protocol error).
    Other(String),
    /// The client's request body failed (`body_malformed`, `body_incomplete`): the
    /// client's fault, not the backend's.
    ClientBody(&'static str),
}

impl Failure {
    pub fn kind(&self) -> &'static str {
        match self {
            Failure::Connect(_) => "connect",
            Failure::Timeout => "timeout",
            Failure::BodyTooLarge => "body_too_large",
            Failure::Other(_) => "protocol",
            Failure::ClientBody(kind) => kind,
        }
    }
}

fn body_too_large(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if err.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        cur = err.source();
    }
    false
}

/// The client's body error in an error chain, if that is what failed.
fn client_body_error(e: &(dyn std::error::Error + 'static)) -> Option<&'static str> {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(c) = err.downcast_ref::<ClientBodyError>() {
            return Some(c.kind);
        }
        cur = err.source();
    }
    None
}

fn classify(e: hyper_util::client::legacy::Error) -> Failure {
    if let Some(kind) = client_body_error(&e) {
        Failure::ClientBody(kind)
    } else if body_too_large(&e) {
        Failure::BodyTooLarge
    } else if e.is_connect() {
        Failure::Connect(chain(&e))
    } else {
        Failure::Other(chain(&e))
    }
}

fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push_str(": ");
        out.push_str(&s.to_string());
        cur = s.source();
    }
    out
}

/// What goes upstream for one request.
pub struct Outgoing {
    pub method: http::Method,
    pub uri: http::Uri,
    pub headers: HeaderMap,
    pub body: OutgoingBody,
}

pub enum OutgoingBody {
    /// None: the client's request had no body (nothing to watch or limit).
    Empty,
    /// Streamed (sent once; never retried).
    Stream(Body, u64),
    /// Buffered, so a retry can send it again.
    Buffered(Bytes),
}

// Headers and bodies may carry credentials: only the request line is shown.
impl std::fmt::Debug for Outgoing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outgoing")
            .field("method", &self.method)
            .field("uri", &self.uri.path())
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for OutgoingBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OutgoingBody::Empty => f.write_str("Empty"),
            OutgoingBody::Stream(_, limit) => write!(f, "Stream(limit {limit})"),
            OutgoingBody::Buffered(b) => write!(f, "Buffered({} bytes)", b.len()),
        }
    }
}

/// Reads a request body up to `limit` bytes (for retryable requests).
pub async fn buffer(body: Body, limit: u64) -> Result<Bytes, Failure> {
    match Limited::new(body, usize::try_from(limit).unwrap_or(usize::MAX))
        .collect()
        .await
    {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(Failure::BodyTooLarge),
        // Reading the client's body failed: its framing, or it was cut short.
        Err(e) => Err(Failure::ClientBody(client_body_kind(&*e))),
    }
}

/// Sends `out` to `up`, retrying connection errors `retries` times when the body can be sent
/// again. The timeout covers the wait for response headers; the body then streams. With
/// `pinned`, the request goes over the client connection's own connection to the backend
/// when it has or may open one, else through the shared pool.
pub async fn send(
    up: &Upstream,
    pinned: Option<&Pinned>,
    out: Outgoing,
    timeout: Duration,
    retries: u32,
    backoff: Duration,
) -> Result<http::Response<hyper::body::Incoming>, Failure> {
    let deadline = tokio::time::Instant::now() + timeout;
    let Outgoing {
        method,
        uri,
        headers,
        body,
    } = out;
    let build = |body: Body, headers: HeaderMap| {
        let mut req = http::Request::new(body);
        *req.method_mut() = method.clone();
        *req.uri_mut() = uri.clone();
        *req.headers_mut() = headers;
        req
    };
    let once = |req: http::Request<Body>| async move {
        match tokio::time::timeout_at(deadline, dispatch(up, pinned, req)).await {
            Err(_) => Err(Failure::Timeout),
            Ok(r) => r,
        }
    };
    match body {
        OutgoingBody::Empty => once(build(Body::empty(), headers)).await,
        OutgoingBody::Stream(body, limit) => {
            let limited = Body::new(Limited::new(
                body,
                usize::try_from(limit).unwrap_or(usize::MAX),
            ));
            // Sent once: the headers move, no copy.
            once(build(limited, headers)).await
        }
        OutgoingBody::Buffered(bytes) => {
            let mut attempt = 0;
            loop {
                match once(build(Body::from(bytes.clone()), headers.clone())).await {
                    Ok(r) => return Ok(r),
                    Err(f) => {
                        if !matches!(f, Failure::Connect(_)) || attempt >= retries {
                            return Err(f);
                        }
                        attempt += 1;
                        tracing::debug!(backend = %up.name, attempt, "retrying after a connection error");
                        if !backoff.is_zero() {
                            tokio::time::sleep_until(
                                (tokio::time::Instant::now() + backoff).min(deadline),
                            )
                            .await;
                        }
                    }
                }
            }
        }
    }
}

/// One attempt: over the pinned connection when there is one to use, else the pool.
async fn dispatch(
    up: &Upstream,
    pinned: Option<&Pinned>,
    req: http::Request<Body>,
) -> Result<http::Response<hyper::body::Incoming>, Failure> {
    let req = match pinned {
        Some(p) => match p.send(up, req).await {
            Pinning::Answered(r) => return r,
            Pinning::Declined(req) => req,
        },
        None => req,
    };
    up.client.request(req).await.map_err(classify)
}

/// Most backends one client connection keeps a connection of its own to.
pub const PINNED_PER_CLIENT: usize = 4;

/// Upstream connections owned by one client connection (connection affinity): its requests
/// go over its own HTTP/1 connection to each backend, opened at first use and closed with
/// the client connection, instead of one checked out of the shared pool for each request.
/// A client connection sends one request at a time, so the connection is always free for
/// it. Its first request uses the pool: a connection is pinned from the second on. Pinned
/// connections are bounded per client connection ([`PINNED_PER_CLIENT`]) and in the whole
/// gateway ([`PinBudget`]); past either bound, requests use the pool.
#[derive(Debug)]
pub struct Pinned {
    budget: Arc<PinBudget>,
    conns: Mutex<Vec<PinnedConn>>,
    /// Requests sent so far: the first goes through the pool, so a client that sends one
    /// request per connection (`Connection: close`) never makes the gateway open one.
    sent: std::sync::atomic::AtomicUsize,
}

struct PinnedConn {
    /// `scheme://authority` of the backend.
    key: String,
    send: hyper::client::conn::http1::SendRequest<Body>,
    _held: PinHeld,
}

impl std::fmt::Debug for PinnedConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PinnedConn")
            .field("key", &self.key)
            .finish()
    }
}

/// How many pinned connections the gateway may hold at once (`--upstream-affinity`).
#[derive(Debug)]
pub struct PinBudget {
    held: std::sync::atomic::AtomicUsize,
    limit: usize,
    /// `held`, for `/metrics`.
    gauge: prometheus_client::metrics::gauge::Gauge,
}

impl PinBudget {
    pub fn new(limit: usize) -> Arc<PinBudget> {
        Arc::new(PinBudget {
            held: std::sync::atomic::AtomicUsize::new(0),
            limit,
            gauge: Default::default(),
        })
    }

    /// The gauge of pinned connections open now, to register.
    pub fn gauge(&self) -> prometheus_client::metrics::gauge::Gauge {
        self.gauge.clone()
    }

    /// The most pinned connections at once.
    pub fn limit(&self) -> usize {
        self.limit
    }

    fn take(self: &Arc<Self>) -> Option<PinHeld> {
        self.held
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.limit).then_some(n + 1)
            })
            .ok()
            .map(|_| {
                self.gauge.inc();
                PinHeld(self.clone())
            })
    }
}

/// One unit of the [`PinBudget`], given back when its connection is dropped.
#[derive(Debug)]
struct PinHeld(Arc<PinBudget>);

impl Drop for PinHeld {
    fn drop(&mut self) {
        self.0.held.fetch_sub(1, Ordering::AcqRel);
        self.0.gauge.dec();
    }
}

enum Pinning {
    Answered(Result<http::Response<hyper::body::Incoming>, Failure>),
    /// Not sent: no pinned connection could be used; the request goes to the pool.
    Declined(http::Request<Body>),
}

impl Pinned {
    pub fn new(budget: Arc<PinBudget>) -> Pinned {
        Pinned {
            budget,
            conns: Mutex::new(Vec::new()),
            sent: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<PinnedConn>> {
        self.conns
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    async fn send(&self, up: &Upstream, mut req: http::Request<Body>) -> Pinning {
        if self.sent.fetch_add(1, Ordering::Relaxed) == 0 {
            return Pinning::Declined(req);
        }
        let key = up.origin();
        // Taken out while in use; put back once the answer's head is in.
        let held = {
            let mut conns = self.lock();
            let at = conns.iter().position(|c| c.key == key);
            at.map(|i| conns.swap_remove(i))
        };
        let mut conn = match held {
            Some(c) if !c.send.is_closed() => c,
            _ => match self.open(up, key.to_string()).await {
                Ok(Some(c)) => c,
                Ok(None) => return Pinning::Declined(req),
                Err(f) => return Pinning::Answered(Err(f)),
            },
        };
        if conn.send.ready().await.is_err() {
            // Closed by the backend since its last use: the pool opens a new one.
            return Pinning::Declined(req);
        }
        // The pool writes the request line in origin form and sets Host; so must this.
        let absolute = req.uri().clone();
        if let Some(pq) = absolute.path_and_query() {
            *req.uri_mut() = http::Uri::from(pq.clone());
        }
        if let Some(a) = absolute.authority()
            && let Ok(v) = HeaderValue::from_str(a.as_str())
        {
            req.headers_mut().insert(header::HOST, v);
        }
        match conn.send.try_send_request(req).await {
            Ok(resp) => {
                let mut conns = self.lock();
                if conns.len() < PINNED_PER_CLIENT {
                    conns.push(conn);
                }
                Pinning::Answered(Ok(resp))
            }
            Err(mut e) => match e.take_message() {
                // Never written: the connection closed under it. The pool tries it.
                Some(mut req) => {
                    *req.uri_mut() = absolute;
                    req.headers_mut().remove(header::HOST);
                    Pinning::Declined(req)
                }
                None => Pinning::Answered(Err(classify_hyper(e.into_error()))),
            },
        }
    }

    /// A new connection to `up`, if both bounds allow one (`Ok(None)`: they do not).
    async fn open(&self, up: &Upstream, key: String) -> Result<Option<PinnedConn>, Failure> {
        if self.lock().len() >= PINNED_PER_CLIENT {
            return Ok(None);
        }
        let Some(held) = self.budget.take() else {
            return Ok(None);
        };
        let Ok(uri) = key.parse::<http::Uri>() else {
            return Ok(None);
        };
        use tower::ServiceExt as _;
        let io = up
            .connector
            .clone()
            .oneshot(uri)
            .await
            .map_err(|e| Failure::Connect(chain(&*e)))?;
        let (send, conn) = hyper::client::conn::http1::Builder::new()
            .handshake(io)
            .await
            .map_err(|e| Failure::Connect(chain(&e)))?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "pinned upstream connection ended with an error");
            }
        });
        Ok(Some(PinnedConn {
            key,
            send,
            _held: held,
        }))
    }
}

/// A failure of a pinned connection's call, classified like the pool's.
fn classify_hyper(e: hyper::Error) -> Failure {
    if let Some(kind) = client_body_error(&e) {
        Failure::ClientBody(kind)
    } else if body_too_large(&e) {
        Failure::BodyTooLarge
    } else {
        Failure::Other(chain(&e))
    }
}

/// Methods a retry cannot make happen twice (RFC 9110 section 9.2.2).
pub fn idempotent(m: &http::Method) -> bool {
    matches!(
        *m,
        http::Method::GET
            | http::Method::HEAD
            | http::Method::OPTIONS
            | http::Method::PUT
            | http::Method::DELETE
            | http::Method::TRACE
    )
}

/// One part of an aggregated response.
#[derive(Debug)]
pub enum PartResult {
    Json(serde_json::Value),
    Failed { timeout: bool, why: String },
}

/// Merges the parts' JSON: a part with a group goes under that key, the others' object
/// keys are merged at the top level, later parts winning on a clash. Returns the merged
/// object and whether every part arrived. Pure.
pub fn merge_parts(
    parts: &[(Option<&str>, PartResult)],
) -> (serde_json::Map<String, serde_json::Value>, bool) {
    let mut out = serde_json::Map::new();
    let mut complete = true;
    for (group, result) in parts {
        match (group, result) {
            (Some(g), PartResult::Json(v)) => {
                out.insert((*g).to_string(), v.clone());
            }
            (None, PartResult::Json(serde_json::Value::Object(m))) => {
                out.extend(m.iter().map(|(k, v)| (k.clone(), v.clone())));
            }
            (None, PartResult::Json(_)) | (_, PartResult::Failed { .. }) => complete = false,
        }
    }
    (out, complete)
}

/// Largest body read from one aggregated part.
pub const MAX_PART_BYTES: usize = 8 << 20;

/// Reads one part's response as JSON.
pub async fn read_part(resp: http::Response<hyper::body::Incoming>) -> PartResult {
    let status = resp.status();
    if !status.is_success() {
        return PartResult::Failed {
            timeout: false,
            why: format!("status {status}"),
        };
    }
    match Limited::new(resp.into_body(), MAX_PART_BYTES)
        .collect()
        .await
    {
        Ok(c) => match serde_json::from_slice(&c.to_bytes()) {
            Ok(v) => PartResult::Json(v),
            Err(e) => PartResult::Failed {
                timeout: false,
                why: format!("not JSON: {e}"),
            },
        },
        Err(e) => PartResult::Failed {
            timeout: false,
            why: format!("body: {e}"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn hop_by_hop_headers_and_the_ones_connection_names_are_removed() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret-hop"),
        );
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("x-secret-hop", HeaderValue::from_static("1"));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert("x-keep", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
        assert!(h.contains_key("x-keep"));
    }

    #[test]
    fn forwarded_headers_append_the_client() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_static("198.51.100.1"));
        h.insert("x-forwarded-proto", HeaderValue::from_static("javascript:"));
        add_forwarded(
            &mut h,
            "192.0.2.9".parse().expect("ip"),
            &HeaderValue::from_static("api.example"),
        );
        assert_eq!(h["x-forwarded-for"], "198.51.100.1, 192.0.2.9");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(
            h["x-forwarded-host"],
            &HeaderValue::from_static("api.example")
        );

        // Several lines are one list: all of it is kept, the peer appended once.
        let mut h = HeaderMap::new();
        h.append("x-forwarded-for", HeaderValue::from_static("203.0.113.7"));
        h.append("x-forwarded-for", HeaderValue::from_static("10.0.0.3"));
        add_forwarded(
            &mut h,
            "10.0.0.9".parse().expect("ip"),
            &HeaderValue::from_static("api.example"),
        );
        assert_eq!(
            h.get_all("x-forwarded-for").iter().count(),
            1,
            "one line reaches the backend"
        );
        assert_eq!(h["x-forwarded-for"], "203.0.113.7, 10.0.0.3, 10.0.0.9");
    }

    #[test]
    fn parts_merge_at_the_top_or_under_their_group() {
        let parts = vec![
            (None, PartResult::Json(json!({"id": 1, "name": "a"}))),
            (Some("orders"), PartResult::Json(json!([1, 2]))),
            (None, PartResult::Json(json!({"name": "b"}))),
        ];
        let (m, complete) = merge_parts(&parts);
        assert!(complete);
        assert_eq!(
            serde_json::Value::Object(m),
            json!({"id": 1, "name": "b", "orders": [1, 2]})
        );
        let parts = vec![
            (None, PartResult::Json(json!({"id": 1}))),
            (
                Some("orders"),
                PartResult::Failed {
                    timeout: true,
                    why: "t".into(),
                },
            ),
            (None, PartResult::Json(json!([1]))),
        ];
        let (m, complete) = merge_parts(&parts);
        assert!(!complete);
        assert_eq!(serde_json::Value::Object(m), json!({"id": 1}));
    }

    #[test]
    fn upstream_uris_join_the_base_path() {
        let up = Upstream {
            name: "b".into(),
            base: "http://orders.internal:8080/api".into(),
            timeout: None,
            client: Clients::default().get(None).expect("client"),
            connector: Clients::default()
                .get_with_connector(None)
                .expect("client")
                .1,
        };
        assert_eq!(
            up.uri("/orders/42", Some("x=1")).expect("uri").to_string(),
            "http://orders.internal:8080/api/orders/42?x=1"
        );
    }
}
