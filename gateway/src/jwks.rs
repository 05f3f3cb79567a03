//! JWKS of external issuers: fetched over HTTP(S) (bounded in time and size), cached per
//! URL with a least interval between refetches, and shared between the bundles that use the
//! same URL. Imports [`crate::keys`] and [`crate::upstream`]'s HTTP clients.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use http::header;
use jsonwebtoken::jwk::JwkSet;

use crate::keys::{Key, keys_of};
use crate::upstream::Clients;
use arc_swap::ArcSwap;

/// Fetches a JWKS document. The real one is an HTTP GET; tests count calls.
pub trait JwksFetcher: Send + Sync {
    fn fetch<'a>(
        &'a self,
        url: &'a str,
    ) -> Pin<Box<dyn Future<Output = Result<JwkSet, String>> + Send + 'a>>;
}

#[derive(Debug)]
struct FetchState {
    last_attempt: Option<tokio::time::Instant>,
    last_error: Option<String>,
}

/// A JWKS published at a URL: fetched on first use, refetched when a token names a key it
/// does not have, at most once per `min_interval` however many such tokens arrive (a flood
/// of made-up `kid`s must not become a flood of requests to the issuer).
pub struct RemoteJwks {
    url: String,
    min_interval: Duration,
    keys: ArcSwap<Vec<Key>>,
    /// Bumped every time `keys` is replaced: cached verifications name the generation they
    /// were made under.
    generation: std::sync::atomic::AtomicU64,
    state: tokio::sync::Mutex<FetchState>,
    fetcher: Arc<dyn JwksFetcher>,
}

impl std::fmt::Debug for RemoteJwks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteJwks")
            .field("url", &self.url)
            .field("keys", &self.keys.load().len())
            .finish_non_exhaustive()
    }
}

impl RemoteJwks {
    pub fn new(url: String, min_interval: Duration, fetcher: Arc<dyn JwksFetcher>) -> RemoteJwks {
        RemoteJwks {
            url,
            min_interval,
            keys: ArcSwap::from_pointee(Vec::new()),
            generation: std::sync::atomic::AtomicU64::new(0),
            state: tokio::sync::Mutex::new(FetchState {
                last_attempt: None,
                last_error: None,
            }),
            fetcher,
        }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn keys(&self) -> Arc<Vec<Key>> {
        self.keys.load_full()
    }

    /// How many times the keys have been replaced.
    pub fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Fetches again unless the last attempt was less than `min_interval` ago. Concurrent
    /// callers wait for one fetch. Returns whether the keys were replaced.
    pub async fn refresh(&self) -> bool {
        let mut state = self.state.lock().await;
        let now = tokio::time::Instant::now();
        if state
            .last_attempt
            .is_some_and(|t| now.duration_since(t) < self.min_interval)
        {
            return false;
        }
        state.last_attempt = Some(now);
        match self.fetcher.fetch(&self.url).await {
            Ok(set) => {
                self.keys.store(Arc::new(keys_of(&set)));
                self.generation
                    .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
                state.last_error = None;
                true
            }
            Err(e) => {
                tracing::warn!(jwks_url = %self.url, error = %e, "JWKS fetch failed");
                state.last_error = Some(e);
                false
            }
        }
    }

    /// Why the last fetch failed, if it did.
    pub async fn last_error(&self) -> Option<String> {
        self.state.lock().await.last_error.clone()
    }
}

/// The JWKS cache for `url` among those of the loaded bundles, made with `make` when no
/// loaded bundle uses `url`. Sharing it keeps the keys (and the refetch limit) of a URL that
/// a reload keeps. The map holds its entries weakly: the issuers of the runtimes in service
/// own them, so a URL that no loaded bundle uses any more is dropped. Dead entries are
/// pruned on every call, so the map holds the URLs in use plus, at most until the next
/// bundle is built, those of the bundles just dropped.
pub fn shared_jwks(
    map: &mut HashMap<String, std::sync::Weak<RemoteJwks>>,
    url: &str,
    make: impl FnOnce() -> RemoteJwks,
) -> Arc<RemoteJwks> {
    map.retain(|_, jwks| jwks.strong_count() > 0);
    if let Some(jwks) = map.get(url).and_then(std::sync::Weak::upgrade) {
        return jwks;
    }
    let jwks = Arc::new(make());
    map.insert(url.to_string(), Arc::downgrade(&jwks));
    jwks
}

/// JWKS over HTTP(S), one request at a time, bounded in time and size.
#[derive(Debug)]
pub struct HttpJwksFetcher {
    clients: Arc<Clients>,
}

impl HttpJwksFetcher {
    pub fn new(clients: Arc<Clients>) -> HttpJwksFetcher {
        HttpJwksFetcher { clients }
    }
}

/// Largest JWKS document accepted.
const MAX_JWKS_BYTES: usize = 1 << 20;

impl JwksFetcher for HttpJwksFetcher {
    fn fetch<'a>(
        &'a self,
        url: &'a str,
    ) -> Pin<Box<dyn Future<Output = Result<JwkSet, String>> + Send + 'a>> {
        Box::pin(async move {
            use http_body_util::BodyExt as _;
            let uri: http::Uri = url.parse().map_err(|e| format!("{url}: {e}"))?;
            let req = http::Request::get(uri)
                .header(header::ACCEPT, "application/json")
                .body(Body::empty())
                .map_err(|e| e.to_string())?;
            let client = self.clients.get(None)?;
            let resp = tokio::time::timeout(Duration::from_secs(5), client.request(req))
                .await
                .map_err(|_| format!("{url}: timed out"))?
                .map_err(|e| format!("{url}: {e}"))?;
            if !resp.status().is_success() {
                return Err(format!("{url}: status {}", resp.status()));
            }
            let body = http_body_util::Limited::new(resp.into_body(), MAX_JWKS_BYTES)
                .collect()
                .await
                .map_err(|e| format!("{url}: {e}"))?
                .to_bytes();
            serde_json::from_slice(&body).map_err(|e| format!("{url}: not a JWKS document: {e}"))
        })
    }
}
