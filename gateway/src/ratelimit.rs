//! Rate limits: a token bucket (governor's GCRA) per client key, where the key is the
//! token's subject, the client IP, or a header such as an API key for a route, and a client
//! id or address for the IdP. Limits survive a reload when the limit stays the same, so a new
//! bundle is no way to reset them.
//!
//! A [`BoundedLimiter`] holds at most a set number of keys, whatever keys are sent: governor
//! counts, and its state for each key is kept in a bounded, sharded store.
//!
//! Imports nothing of this crate.

use std::collections::HashMap;
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher as _, Hash};
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use governor::clock::Clock;
use governor::middleware::StateInformationMiddleware;
use governor::nanos::Nanos;
use governor::state::keyed::ShrinkableKeyedStateStore;
use governor::state::{InMemoryState, NotKeyed, StateStore};
use governor::{Quota, RateLimiter};
use http::{HeaderMap, HeaderName, HeaderValue};

use fleetgate_bundle::bundle::{RateLimit, RateLimitKey};

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
    pub fn headers(&self, policy: &HeaderValue, out: &mut HeaderMap) {
        const POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
        const LIMIT: HeaderName = HeaderName::from_static("ratelimit-limit");
        const REMAINING: HeaderName = HeaderName::from_static("ratelimit-remaining");
        const RESET: HeaderName = HeaderName::from_static("ratelimit-reset");
        out.insert(POLICY, policy.clone());
        match *self {
            Decision::Allowed {
                limit,
                remaining,
                reset,
            } => {
                out.insert(LIMIT, HeaderValue::from(limit));
                out.insert(REMAINING, HeaderValue::from(remaining));
                out.insert(RESET, HeaderValue::from(reset));
            }
            Decision::Limited { limit, retry_after } => {
                out.insert(LIMIT, HeaderValue::from(limit));
                out.insert(REMAINING, HeaderValue::from_static("0"));
                out.insert(RESET, HeaderValue::from(retry_after));
                out.insert(http::header::RETRY_AFTER, HeaderValue::from(retry_after));
            }
        }
    }
}

fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// Shards of a [`BoundedStore`]: checks of different keys rarely wait for each other.
const SHARDS: usize = 16;

type Limiter = RateLimiter<u64, BoundedStore, StartClock, StateInformationMiddleware>;

/// A token bucket per key (governor's GCRA) holding at most `max_keys` keys.
///
/// A key is counted as a 64-bit keyed hash (SipHash with a random key per limiter), so what
/// it costs does not depend on how long the caller made it, and governor keeps one number
/// for it: when its bucket will be full again. A bucket that is full again holds nothing
/// worth keeping, so such keys are dropped by [`forget_idle`] and, when the store is full,
/// before a new key is added. When every key is still busy, a new key is counted in one
/// shared overflow bucket until some key is idle: a flood of new keys (made-up client ids,
/// rotating source addresses) shares one budget instead of growing the store, and keys
/// already counted keep their own buckets (governor's state is kept in a `BoundedStore`).
///
/// [`forget_idle`]: BoundedLimiter::forget_idle
#[derive(Clone)]
pub struct BoundedLimiter {
    pub config: RateLimit,
    burst: u32,
    /// Time to earn one request back.
    per_request: Duration,
    /// Keys are hashed with this (cloned with its keys, so clones count alike).
    hasher: RandomState,
    /// The store `limiter` counts in, for its size and for forgetting idle keys.
    store: BoundedStore,
    limiter: Arc<Limiter>,
    /// [`BoundedLimiter::policy`] as a header value, made once.
    policy_value: HeaderValue,
}

impl std::fmt::Debug for BoundedLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BoundedLimiter")
            .field("config", &self.config)
            .field("keys", &self.keys())
            .field("max_keys", &self.max_keys())
            .finish()
    }
}

impl BoundedLimiter {
    /// A limiter of `config` holding at most `max_keys` keys (at least one per shard).
    pub fn new(config: &RateLimit, max_keys: usize) -> BoundedLimiter {
        let requests = config.requests.max(1);
        let burst = config.burst.unwrap_or(requests).max(1);
        let per_request = (config.per.as_std() / requests).max(Duration::from_nanos(1));
        let quota = Quota::with_period(per_request)
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
            .allow_burst(NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN));
        let clock = StartClock::default();
        let store = BoundedStore::new(max_keys, clock.clone());
        let policy = policy_text(config, burst);
        BoundedLimiter {
            config: config.clone(),
            burst,
            per_request,
            hasher: RandomState::new(),
            store: store.clone(),
            limiter: Arc::new(Limiter::new(quota, store, clock)),
            // Digits, ';', '=' and letters: always a valid header value.
            policy_value: HeaderValue::from_str(&policy).unwrap_or(HeaderValue::from_static("0")),
        }
    }

    /// The `RateLimit-Policy` header's value.
    pub fn policy_value(&self) -> &HeaderValue {
        &self.policy_value
    }

    /// The `RateLimit-Policy` header value: `100;w=60;burst=200`.
    pub fn policy(&self) -> String {
        policy_text(&self.config, self.burst)
    }

    /// Counts one request of `key` (a [`ClientKey`], or any text).
    pub fn check<K: Hash + ?Sized>(&self, key: &K) -> Decision {
        match self.limiter.check_key(&self.hasher.hash_one(key)) {
            Ok(snapshot) => {
                let remaining = snapshot.remaining_burst_capacity().min(self.burst);
                Decision::Allowed {
                    limit: self.burst,
                    remaining,
                    reset: ceil_secs(self.per_request.saturating_mul(self.burst - remaining)),
                }
            }
            Err(not_until) => Decision::Limited {
                limit: self.burst,
                retry_after: ceil_secs(not_until.wait_time_from(self.limiter.clock().now())).max(1),
            },
        }
    }

    /// Forgets keys whose bucket is full again.
    pub fn forget_idle(&self) {
        // Governor's `RateLimiter::retain_recent` would drop states at or before one request
        // interval ago; a state at or before now is already one the GCRA counts exactly as a
        // key it has never seen (see `BoundedStore`), so the store is asked directly.
        self.store.retain_recent(self.store.0.clock.since_start());
        self.store.shrink_to_fit();
    }

    /// How many keys have a bucket of their own now.
    pub fn keys(&self) -> usize {
        self.store.len()
    }

    /// The most keys it ever holds.
    pub fn max_keys(&self) -> usize {
        self.store.0.per_shard * self.store.0.shards.len()
    }
}

/// Governor's clock for a [`BoundedLimiter`]: the monotonic clock, remembering its first
/// reading. `RateLimiter::new` reads it once, for its start, and every state governor stores
/// is nanoseconds since that start, so the store can tell which states are in the past.
#[derive(Clone, Debug, Default)]
struct StartClock {
    start: Arc<OnceLock<Instant>>,
}

impl Clock for StartClock {
    type Instant = Instant;

    fn now(&self) -> Instant {
        let now = Instant::now();
        self.start.get_or_init(|| now);
        now
    }
}

impl StartClock {
    /// Now as governor counts it: nanoseconds since the limiter's start.
    fn since_start(&self) -> Nanos {
        let now = self.now();
        let start = *self.start.get_or_init(|| now);
        Nanos::from(now.saturating_duration_since(start))
    }
}

/// Governor's state for a [`BoundedLimiter`]: at most `per_shard` keys in each of its shards,
/// by the key's hash, and one overflow state.
///
/// Governor's state for a key is its bucket's theoretical arrival time: when the bucket will
/// be full again, in nanoseconds since the limiter's start. A state at or before now is one
/// the GCRA counts exactly as a key it has never seen (it starts from `max(state, now)`), so
/// such a key is idle and dropping it changes no decision; the rule is that of governor's own
/// stores (`retain_recent` drops states at or before the mark). A new key of a full shard
/// first makes room by dropping the shard's idle keys; when none is idle, it is counted in
/// the overflow state, which every such key shares.
#[derive(Clone)]
struct BoundedStore(Arc<Shards>);

struct Shards {
    clock: StartClock,
    per_shard: usize,
    shards: Vec<Mutex<Shard>>,
    overflow: InMemoryState,
}

#[derive(Default)]
struct Shard {
    /// Each key's state, by the key's hash.
    states: HashMap<u64, Nanos>,
    /// No key of a full shard is idle before this: sweeping earlier would free nothing.
    no_idle_before: Option<Nanos>,
}

impl Shard {
    /// Drops the keys whose state is at or before `drop_below`.
    fn retain_recent(&mut self, drop_below: Nanos) {
        self.states.retain(|_, state| *state > drop_below);
        self.no_idle_before = self.states.values().min().copied();
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The state is a map of numbers, consistent after any panic: carry on with it.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl BoundedStore {
    /// A store of at most `max_keys` keys (at least one per shard, and a multiple of the
    /// number of shards), on `clock`'s timeline.
    fn new(max_keys: usize, clock: StartClock) -> BoundedStore {
        let shards = SHARDS.min(max_keys.max(1));
        BoundedStore(Arc::new(Shards {
            clock,
            per_shard: (max_keys / shards).max(1),
            shards: (0..shards).map(|_| Mutex::default()).collect(),
            overflow: InMemoryState::default(),
        }))
    }

    fn shard(&self, key: u64) -> MutexGuard<'_, Shard> {
        lock(&self.0.shards[(key % self.0.shards.len() as u64) as usize])
    }
}

impl StateStore for BoundedStore {
    type Key = u64;

    fn measure_and_replace<T, F, E>(&self, key: &u64, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        let mut shard = self.shard(*key);
        if let Some(state) = shard.states.get_mut(key) {
            let (outcome, next) = f(Some(*state))?;
            *state = next;
            return Ok(outcome);
        }
        if shard.states.len() >= self.0.per_shard {
            let now = self.0.clock.since_start();
            if shard.no_idle_before.is_none_or(|t| t <= now) {
                shard.retain_recent(now);
            }
        }
        if shard.states.len() < self.0.per_shard {
            let (outcome, next) = f(None)?;
            shard.states.insert(*key, next);
            shard.no_idle_before = Some(shard.no_idle_before.map_or(next, |t| t.min(next)));
            return Ok(outcome);
        }
        drop(shard);
        self.0.overflow.measure_and_replace(&NotKeyed::NonKey, f)
    }
}

impl ShrinkableKeyedStateStore<u64> for BoundedStore {
    fn retain_recent(&self, drop_below: Nanos) {
        for shard in &self.0.shards {
            lock(shard).retain_recent(drop_below);
        }
    }

    fn shrink_to_fit(&self) {
        for shard in &self.0.shards {
            lock(shard).states.shrink_to_fit();
        }
    }

    fn len(&self) -> usize {
        self.0.shards.iter().map(|s| lock(s).states.len()).sum()
    }

    fn is_empty(&self) -> bool {
        self.0.shards.iter().all(|s| lock(s).states.is_empty())
    }
}

/// The key a request is counted under, or `None` to count it under the client IP.
pub fn client_key<'a>(
    key: &RateLimitKey,
    headers: &'a HeaderMap,
    subject: Option<&'a str>,
    client_ip: IpAddr,
) -> ClientKey<'a> {
    match key {
        RateLimitKey::Subject => match subject {
            Some(s) => ClientKey::Subject(s),
            None => ClientKey::Ip(client_ip),
        },
        RateLimitKey::Ip => ClientKey::Ip(client_ip),
        RateLimitKey::Header(name) => match headers.get(name).and_then(|v| v.to_str().ok()) {
            Some(v) if !v.is_empty() => ClientKey::Header(v),
            _ => ClientKey::Ip(client_ip),
        },
    }
}

/// Whom a request is counted against: borrowed from the request, hashed as it is (no text
/// is made for it). Shown as `sub:…`, `ip:…` or `hdr:…`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClientKey<'a> {
    Subject(&'a str),
    Ip(IpAddr),
    Header(&'a str),
}

impl std::fmt::Display for ClientKey<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientKey::Subject(s) => write!(f, "sub:{s}"),
            ClientKey::Ip(ip) => write!(f, "ip:{ip}"),
            ClientKey::Header(v) => write!(f, "hdr:{v}"),
        }
    }
}

/// The `RateLimit-Policy` header value: `100;w=60;burst=200`.
fn policy_text(config: &RateLimit, burst: u32) -> String {
    format!(
        "{};w={};burst={}",
        config.requests,
        config.per.as_std().as_secs().max(1),
        burst
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleetgate_bundle::Duration as BundleDuration;

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
        let l = BoundedLimiter::new(&limit(60, 60, Some(3)), 100);
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
        assert_eq!(l.keys(), 2);
    }

    #[test]
    fn headers_follow_the_ratelimit_draft() {
        let mut h = HeaderMap::new();
        Decision::Limited {
            limit: 10,
            retry_after: 7,
        }
        .headers(&HeaderValue::from_static("10;w=60;burst=10"), &mut h);
        assert_eq!(h["retry-after"], "7");
        assert_eq!(h["ratelimit-remaining"], "0");
        assert_eq!(h["ratelimit-policy"], "10;w=60;burst=10");
    }

    #[test]
    fn keys_fall_back_to_the_client_ip() {
        let ip: IpAddr = "192.0.2.7".parse().expect("ip");
        let mut h = HeaderMap::new();
        assert_eq!(
            client_key(&RateLimitKey::Subject, &h, None, ip).to_string(),
            "ip:192.0.2.7"
        );
        assert_eq!(
            client_key(&RateLimitKey::Subject, &h, Some("u1"), ip).to_string(),
            "sub:u1"
        );
        let by_key = RateLimitKey::Header("x-api-key".into());
        assert_eq!(
            client_key(&by_key, &h, Some("u1"), ip).to_string(),
            "ip:192.0.2.7"
        );
        h.insert("x-api-key", HeaderValue::from_static("k-123"));
        assert_eq!(client_key(&by_key, &h, None, ip).to_string(), "hdr:k-123");
    }

    #[test]
    fn a_bounded_limiter_gives_the_gcra_numbers() {
        // One request a second, a burst of 3: each request takes one second of the three the
        // bucket holds, and the fourth may go once the first second is earned back.
        let l = BoundedLimiter::new(&limit(60, 60, Some(3)), 100);
        for (remaining, reset) in [(2, 1), (1, 2), (0, 3)] {
            assert_eq!(
                l.check("sub:alice"),
                Decision::Allowed {
                    limit: 3,
                    remaining,
                    reset
                }
            );
        }
        assert_eq!(
            l.check("sub:alice"),
            Decision::Limited {
                limit: 3,
                retry_after: 1
            }
        );
        assert_eq!(
            l.check("sub:bob"),
            Decision::Allowed {
                limit: 3,
                remaining: 2,
                reset: 1
            }
        );
        assert_eq!(l.keys(), 2);
        assert_eq!(l.policy(), "60;w=60;burst=3");
        // A clone counts in the same buckets.
        assert!(matches!(
            l.clone().check("sub:alice"),
            Decision::Limited { .. }
        ));
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
        // A key that has not earned its requests back is kept.
        let l = BoundedLimiter::new(&limit(1, 60, Some(2)), 16);
        l.check("busy");
        l.forget_idle();
        assert_eq!(l.keys(), 1);
        assert!(matches!(
            l.check("busy"),
            Decision::Allowed { remaining: 0, .. }
        ));
    }
}
