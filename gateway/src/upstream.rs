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

/// Connection pools, one per connect timeout (the connector holds the timeout), shared by
/// every bundle so a reload keeps warm connections.
#[derive(Debug, Default)]
pub struct Clients {
    by_connect_timeout: Mutex<HashMap<Duration, HttpClient>>,
}

/// Connect timeout when a backend sets none.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

impl Clients {
    pub fn get(&self, connect_timeout: Option<Duration>) -> Result<HttpClient, String> {
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

fn new_client(connect_timeout: Duration) -> Result<HttpClient, String> {
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
    Ok(Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(60))
        .pool_timer(hyper_util::rt::TokioTimer::new())
        .build(https))
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
}

impl Upstream {
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
/// again. The timeout covers the wait for response headers; the body then streams.
pub async fn send(
    up: &Upstream,
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
    match body {
        OutgoingBody::Empty => {
            match tokio::time::timeout_at(
                deadline,
                up.client.request(build(Body::empty(), headers)),
            )
            .await
            {
                Err(_) => Err(Failure::Timeout),
                Ok(r) => r.map_err(classify),
            }
        }
        OutgoingBody::Stream(body, limit) => {
            let limited = Body::new(Limited::new(
                body,
                usize::try_from(limit).unwrap_or(usize::MAX),
            ));
            // Sent once: the headers move, no copy.
            let req = build(limited, headers);
            match tokio::time::timeout_at(deadline, up.client.request(req)).await {
                Err(_) => Err(Failure::Timeout),
                Ok(r) => r.map_err(classify),
            }
        }
        OutgoingBody::Buffered(bytes) => {
            let mut attempt = 0;
            loop {
                let result = tokio::time::timeout_at(
                    deadline,
                    up.client
                        .request(build(Body::from(bytes.clone()), headers.clone())),
                )
                .await;
                match result {
                    Err(_) => return Err(Failure::Timeout),
                    Ok(Ok(r)) => return Ok(r),
                    Ok(Err(e)) => {
                        let f = classify(e);
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
        };
        assert_eq!(
            up.uri("/orders/42", Some("x=1")).expect("uri").to_string(),
            "http://orders.internal:8080/api/orders/42?x=1"
        );
    }
}
