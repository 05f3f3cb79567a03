//! Per-route rate limits: a token bucket (governor's GCRA) per client key, where the key is
//! the token's subject, the client IP, or a header such as an API key. Limits survive a
//! reload when the route keeps the same limit, so a new bundle is no way to reset them.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

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
}
