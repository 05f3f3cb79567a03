//! Per-route rate limits: a token bucket (governor's GCRA) per client key, where the key is
//! the token's subject, the client IP, or a header such as an API key. Limits survive a
//! reload when the route keeps the same limit, so a new bundle is no way to reset them.
//!
//! [`BoundedLimiter`] is the same token bucket with a hard cap on how many keys it holds,
//! for keys a caller chooses (its address, a client id it makes up): its memory stays
//! bounded whatever is sent.

use std::collections::HashMap;
use std::hash::BuildHasher as _;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use governor::clock::{Clock as _, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};
use http::{HeaderMap, HeaderName, HeaderValue};

use crate::bundle::{RateLimit, RateLimitKey};

type Keyed =
    RateLimiter<String, DefaultKeyedStateStore<String>, DefaultClock, StateInformationMiddleware>;

/// One route's limiter.
#[derive(Clone)]
pub struct RouteLimiter {
    pub config: RateLimit,
    burst: u32,
    /// Time to earn one request back.
    per_request: Duration,
    limiter: Arc<Keyed>,
}

impl std::fmt::Debug for RouteLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouteLimiter")
            .field("config", &self.config)
            .field("keys", &self.limiter.len())
            .finish()
    }
}

/// The outcome of one check, with what the `RateLimit-*` headers say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allowed {
        limit: u32,
        remaining: u32,
        reset: u64,
    },
    Limited {
        limit: u32,
        retry_after: u64,
    },
}

impl Decision {
    /// `RateLimit-Limit`, `RateLimit-Remaining`, `RateLimit-Reset` (seconds until the bucket
    /// is full again), and `Retry-After` when limited.
    pub fn headers(&self, policy: &str, out: &mut HeaderMap) {
        let mut set = |name: &'static str, v: String| {
            if let Ok(v) = HeaderValue::from_str(&v) {
                out.insert(HeaderName::from_static(name), v);
            }
        };
        set("ratelimit-policy", policy.to_string());
        match *self {
            Decision::Allowed {
                limit,
                remaining,
                reset,
            } => {
                set("ratelimit-limit", limit.to_string());
                set("ratelimit-remaining", remaining.to_string());
                set("ratelimit-reset", reset.to_string());
            }
            Decision::Limited { limit, retry_after } => {
                set("ratelimit-limit", limit.to_string());
                set("ratelimit-remaining", "0".into());
                set("ratelimit-reset", retry_after.to_string());
                set("retry-after", retry_after.to_string());
            }
        }
    }
}

fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

impl RouteLimiter {
    pub fn new(config: &RateLimit) -> RouteLimiter {
        let requests = config.requests.max(1);
        let burst = config.burst.unwrap_or(requests).max(1);
        let per_request = (config.per.as_std() / requests).max(Duration::from_nanos(1));
        let quota = Quota::with_period(per_request)
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
            .allow_burst(NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN));
        RouteLimiter {
            config: config.clone(),
            burst,
            per_request,
            limiter: Arc::new(
                RateLimiter::dashmap(quota).with_middleware::<StateInformationMiddleware>(),
            ),
        }
    }

    /// The `RateLimit-Policy` header value: `100;w=60;burst=200`.
    pub fn policy(&self) -> String {
        format!(
            "{};w={};burst={}",
            self.config.requests,
            self.config.per.as_std().as_secs().max(1),
            self.burst
        )
    }

    pub fn check(&self, key: &str) -> Decision {
        match self.limiter.check_key(&key.to_string()) {
            Ok(snapshot) => {
                let remaining = snapshot.remaining_burst_capacity();
                Decision::Allowed {
                    limit: self.burst,
                    remaining,
                    reset: ceil_secs(self.per_request * (self.burst - remaining.min(self.burst))),
                }
            }
            Err(not_until) => Decision::Limited {
                limit: self.burst,
                retry_after: ceil_secs(not_until.wait_time_from(DefaultClock::default().now()))
                    .max(1),
            },
        }
    }

    /// Forgets clients whose bucket is full again (memory stays bounded by active clients).
    pub fn forget_idle(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }

    pub fn clients(&self) -> usize {
        self.limiter.len()
    }
}

/// Shards of a [`BoundedLimiter`]: checks of different keys rarely wait for each other.
const SHARDS: usize = 16;

/// A token bucket per key (GCRA, as [`RouteLimiter`]) holding at most `max_keys` keys.
///
/// A key is kept as a 64-bit keyed hash (SipHash with a random key per limiter), so what
/// it costs does not depend on how long the caller made it, and its state is one instant:
/// when its bucket will be full again. A bucket that is full
/// again holds nothing worth keeping, so such keys are dropped by [`forget_idle`] and,
/// when the limiter is full, before a new key is added. When every key is still busy, a new
/// key is counted in one shared overflow bucket until some key is idle: a flood of new keys
/// (made-up client ids, rotating source addresses) shares one budget instead of growing
/// the map, and keys already counted keep their own buckets.
///
/// [`forget_idle`]: BoundedLimiter::forget_idle
#[derive(Clone)]
pub struct BoundedLimiter {
    pub config: RateLimit,
    burst: u32,
    /// Time to earn one request back.
    per_request: Duration,
    /// How far ahead of now a bucket's full-again instant may be: `burst` requests.
    capacity: Duration,
    max_keys: usize,
    per_shard: usize,
    state: Arc<BoundedState>,
}

struct BoundedState {
    hasher: std::collections::hash_map::RandomState,
    shards: Vec<Mutex<Shard>>,
    overflow: Mutex<Option<Instant>>,
}

#[derive(Default)]
struct Shard {
    /// Each key's full-again instant, by the key's hash.
    full_at: HashMap<u64, Instant>,
    /// No key of a full shard is idle before this: sweeping earlier would free nothing.
    no_idle_before: Option<Instant>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The state is a map of instants, consistent after any panic: carry on with it.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl std::fmt::Debug for BoundedLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BoundedLimiter")
            .field("config", &self.config)
            .field("keys", &self.keys())
            .field("max_keys", &self.max_keys)
            .finish()
    }
}

impl BoundedLimiter {
    /// A limiter of `config` holding at most `max_keys` keys (at least one per shard).
    pub fn new(config: &RateLimit, max_keys: usize) -> BoundedLimiter {
        let requests = config.requests.max(1);
        let burst = config.burst.unwrap_or(requests).max(1);
        let per_request = (config.per.as_std() / requests).max(Duration::from_nanos(1));
        let shards = SHARDS.min(max_keys.max(1));
        let per_shard = (max_keys / shards).max(1);
        BoundedLimiter {
            config: config.clone(),
            burst,
            per_request,
            capacity: per_request.saturating_mul(burst),
            max_keys: per_shard * shards,
            per_shard,
            state: Arc::new(BoundedState {
                hasher: std::collections::hash_map::RandomState::new(),
                shards: (0..shards).map(|_| Mutex::default()).collect(),
                overflow: Mutex::new(None),
            }),
        }
    }

    /// The `RateLimit-Policy` header value: `100;w=60;burst=200`.
    pub fn policy(&self) -> String {
        format!(
            "{};w={};burst={}",
            self.config.requests,
            self.config.per.as_std().as_secs().max(1),
            self.burst
        )
    }

    /// Counts one request of `key`.
    pub fn check(&self, key: &str) -> Decision {
        let now = Instant::now();
        let hash = self.state.hasher.hash_one(key);
        let index = (hash % self.state.shards.len() as u64) as usize;
        let mut shard = lock(&self.state.shards[index]);
        if let Some(full_at) = shard.full_at.get_mut(&hash) {
            return self.count(full_at, now);
        }
        if shard.full_at.len() >= self.per_shard && shard.no_idle_before.is_none_or(|t| t <= now) {
            shard.full_at.retain(|_, full_at| *full_at > now);
            shard.no_idle_before = shard.full_at.values().min().copied();
        }
        if shard.full_at.len() < self.per_shard {
            let mut full_at = now;
            let decision = self.count(&mut full_at, now);
            shard.full_at.insert(hash, full_at);
            shard.no_idle_before = Some(shard.no_idle_before.map_or(full_at, |t| t.min(full_at)));
            return decision;
        }
        drop(shard);
        let mut overflow = lock(&self.state.overflow);
        let full_at = overflow.get_or_insert(now);
        self.count(full_at, now)
    }

    /// One request against the bucket that is full again at `full_at`.
    fn count(&self, full_at: &mut Instant, now: Instant) -> Decision {
        let after = (*full_at).max(now) + self.per_request;
        let debt = after - now;
        if debt > self.capacity {
            return Decision::Limited {
                limit: self.burst,
                retry_after: ceil_secs(debt - self.capacity).max(1),
            };
        }
        *full_at = after;
        let left = (self.capacity - debt).as_nanos() / self.per_request.as_nanos();
        Decision::Allowed {
            limit: self.burst,
            remaining: u32::try_from(left).unwrap_or(u32::MAX).min(self.burst),
            reset: ceil_secs(debt),
        }
    }

    /// Forgets keys whose bucket is full again.
    pub fn forget_idle(&self) {
        let now = Instant::now();
        for shard in &self.state.shards {
            let mut shard = lock(shard);
            shard.full_at.retain(|_, full_at| *full_at > now);
            shard.full_at.shrink_to_fit();
            shard.no_idle_before = shard.full_at.values().min().copied();
        }
        let mut overflow = lock(&self.state.overflow);
        if overflow.is_some_and(|t| t <= now) {
            *overflow = None;
        }
    }

    /// How many keys have a bucket of their own now.
    pub fn keys(&self) -> usize {
        self.state
            .shards
            .iter()
            .map(|s| lock(s).full_at.len())
            .sum()
    }

    /// The most keys it ever holds.
    pub fn max_keys(&self) -> usize {
        self.max_keys
    }
}

/// The key a request is counted under, or `None` to count it under the client IP.
pub fn client_key(
    key: &RateLimitKey,
    headers: &HeaderMap,
    subject: Option<&str>,
    client_ip: IpAddr,
) -> String {
    match key {
        RateLimitKey::Subject => match subject {
            Some(s) => format!("sub:{s}"),
            None => format!("ip:{client_ip}"),
        },
        RateLimitKey::Ip => format!("ip:{client_ip}"),
        RateLimitKey::Header(name) => match headers.get(name).and_then(|v| v.to_str().ok()) {
            Some(v) if !v.is_empty() => format!("hdr:{v}"),
            _ => format!("ip:{client_ip}"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Duration as BundleDuration;

    fn limit(requests: u32, per: u64, burst: Option<u32>) -> RateLimit {
        RateLimit {
            requests,
            per: BundleDuration::from_secs(per),
            burst,
            key: RateLimitKey::Subject,
        }
    }

    #[test]
    fn a_burst_passes_then_the_next_request_is_told_when_to_retry() {
        let l = RouteLimiter::new(&limit(60, 60, Some(3)));
        for left in [2, 1, 0] {
            match l.check("sub:alice") {
                Decision::Allowed {
                    limit, remaining, ..
                } => {
                    assert_eq!((limit, remaining), (3, left))
                }
                other => panic!("expected allowed, got {other:?}"),
            }
        }
        match l.check("sub:alice") {
            Decision::Limited { limit, retry_after } => {
                assert_eq!(limit, 3);
                assert!((1..=1).contains(&retry_after), "{retry_after}");
            }
            other => panic!("expected limited, got {other:?}"),
        }
        // Another client has a bucket of its own.
        assert!(matches!(
            l.check("sub:bob"),
            Decision::Allowed { remaining: 2, .. }
        ));
        assert_eq!(l.clients(), 2);
    }

    #[test]
    fn headers_follow_the_ratelimit_draft() {
        let mut h = HeaderMap::new();
        Decision::Limited {
            limit: 10,
            retry_after: 7,
        }
        .headers("10;w=60;burst=10", &mut h);
        assert_eq!(h["retry-after"], "7");
        assert_eq!(h["ratelimit-remaining"], "0");
        assert_eq!(h["ratelimit-policy"], "10;w=60;burst=10");
    }

    #[test]
    fn keys_fall_back_to_the_client_ip() {
        let ip: IpAddr = "192.0.2.7".parse().expect("ip");
        let mut h = HeaderMap::new();
        assert_eq!(
            client_key(&RateLimitKey::Subject, &h, None, ip),
            "ip:192.0.2.7"
        );
        assert_eq!(
            client_key(&RateLimitKey::Subject, &h, Some("u1"), ip),
            "sub:u1"
        );
        let by_key = RateLimitKey::Header("x-api-key".into());
        assert_eq!(client_key(&by_key, &h, Some("u1"), ip), "ip:192.0.2.7");
        h.insert("x-api-key", HeaderValue::from_static("k-123"));
        assert_eq!(client_key(&by_key, &h, None, ip), "hdr:k-123");
    }

    #[test]
    fn a_bounded_limiter_counts_like_the_route_limiter() {
        let l = BoundedLimiter::new(&limit(60, 60, Some(3)), 100);
        for left in [2, 1, 0] {
            match l.check("sub:alice") {
                Decision::Allowed {
                    limit, remaining, ..
                } => assert_eq!((limit, remaining), (3, left)),
                other => panic!("expected allowed, got {other:?}"),
            }
        }
        assert_eq!(
            l.check("sub:alice"),
            Decision::Limited {
                limit: 3,
                retry_after: 1
            }
        );
        assert!(matches!(
            l.check("sub:bob"),
            Decision::Allowed { remaining: 2, .. }
        ));
        assert_eq!(l.keys(), 2);
        assert_eq!(l.policy(), "60;w=60;burst=3");
    }

    #[test]
    fn a_bounded_limiter_never_holds_more_than_its_cap_and_new_keys_share_the_overflow() {
        let l = BoundedLimiter::new(&limit(1, 60, Some(2)), 64);
        assert_eq!(l.max_keys(), 64);
        for i in 0..10_000 {
            l.check(&format!("ip:10.0.{}.{}", i / 256, i % 256));
            assert!(l.keys() <= 64, "{} keys after {i}", l.keys());
        }
        assert_eq!(l.keys(), 64);
        // Every key is busy: the 10,000 - 64 others shared one bucket of 2, long spent.
        assert!(matches!(l.check("ip:192.0.2.1"), Decision::Limited { .. }));
        // A key counted before the flood keeps its own bucket.
        let l = BoundedLimiter::new(&limit(1, 60, Some(2)), 16);
        l.check("ip:192.0.2.7");
        for i in 0..1_000 {
            l.check(&format!("ip:10.1.{}.{}", i / 256, i % 256));
        }
        assert!(matches!(
            l.check("ip:192.0.2.7"),
            Decision::Allowed { remaining: 0, .. }
        ));
    }

    #[test]
    fn idle_keys_make_room_and_are_forgotten() {
        // One request per millisecond: a key is idle again 1 ms after its request.
        let l = BoundedLimiter::new(&limit(1000, 1, Some(1)), 16);
        for i in 0..16 {
            l.check(&format!("k{i}"));
        }
        std::thread::sleep(Duration::from_millis(5));
        // Full, but every key is idle: a new one gets a bucket of its own.
        assert!(matches!(l.check("new"), Decision::Allowed { .. }));
        assert!(l.keys() <= 16);
        std::thread::sleep(Duration::from_millis(5));
        l.forget_idle();
        assert_eq!(l.keys(), 0);
    }
}
