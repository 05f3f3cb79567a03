//! Which backend serves a request: A/B variants, then weighted (canary) backends, sticky per
//! client when the route names a header or cookie. Pure: the caller passes the request's
//! headers and a random number, so every choice is reproducible in a test.
//!
//! Imports nothing of this crate.

use http::HeaderMap;
use sha2::{Digest as _, Sha256};

use fleetgate_bundle::bundle::{StickyKey, Variant, VariantMatch, WeightedBackend};

/// The backends a route can send a request to, in the order they are tried.
#[derive(Debug, Clone, PartialEq)]
pub struct Split {
    pub variants: Vec<Variant>,
    /// Weighted backends; a single backend is one entry of weight 1.
    pub weighted: Vec<WeightedBackend>,
    pub sticky: Option<StickyKey>,
}

/// Why a backend was chosen, for the access log and the `split` metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Choice<'a> {
    /// An A/B variant matched, by name.
    Variant(&'a str),
    /// Chosen by weight; `sticky` when the client's key decided it.
    Weighted { sticky: bool },
}

/// The value of cookie `name` in the request's `Cookie` headers.
pub fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim_matches('"'))
}

fn header<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// A point in `0..total` for a sticky key: the same key lands on the same point on every
/// gateway instance and every restart (sha256, not the process-seeded std hasher).
fn sticky_point(key: &str, total: u64) -> u64 {
    let hash = Sha256::digest(key.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&hash[..8]);
    u64::from_be_bytes(first) % total
}

impl Split {
    /// The backend for a request. `random` is a uniform number used when no sticky key
    /// decides. Returns `None` only when every weight is zero (a drained route).
    pub fn choose<'a>(&'a self, headers: &HeaderMap, random: u64) -> Option<(&'a str, Choice<'a>)> {
        for v in &self.variants {
            let hit = match &v.matches {
                VariantMatch::Header { name, value } => header(headers, name) == Some(value),
                VariantMatch::Cookie { name, value } => cookie(headers, name) == Some(value),
            };
            if hit {
                return Some((&v.backend, Choice::Variant(&v.name)));
            }
        }
        let total: u64 = self.weighted.iter().map(|w| u64::from(w.weight)).sum();
        if total == 0 {
            return None;
        }
        let key = self.sticky.as_ref().and_then(|s| match s {
            StickyKey::Header(name) => header(headers, name),
            StickyKey::Cookie(name) => cookie(headers, name),
        });
        let (point, sticky) = match key {
            Some(k) if !k.is_empty() => (sticky_point(k, total), true),
            _ => (random % total, false),
        };
        let mut acc = 0u64;
        for w in &self.weighted {
            acc += u64::from(w.weight);
            if point < acc {
                return Some((&w.backend, Choice::Weighted { sticky }));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wb(backend: &str, weight: u32) -> WeightedBackend {
        WeightedBackend {
            backend: backend.into(),
            weight,
        }
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).expect("name"),
                v.parse().expect("value"),
            );
        }
        h
    }

    #[test]
    fn weights_split_the_random_range() {
        let s = Split {
            variants: vec![],
            weighted: vec![wb("stable", 90), wb("canary", 10)],
            sticky: None,
        };
        let h = HeaderMap::new();
        let mut canary = 0;
        for r in 0..1000u64 {
            if s.choose(&h, r).expect("a backend").0 == "canary" {
                canary += 1;
            }
        }
        assert_eq!(canary, 100);
    }

    #[test]
    fn a_zero_weight_backend_never_serves_and_all_zero_is_none() {
        let s = Split {
            variants: vec![],
            weighted: vec![wb("old", 0), wb("new", 5)],
            sticky: None,
        };
        for r in 0..50 {
            assert_eq!(s.choose(&HeaderMap::new(), r).expect("a backend").0, "new");
        }
        let drained = Split {
            weighted: vec![wb("old", 0)],
            ..s
        };
        assert_eq!(drained.choose(&HeaderMap::new(), 3), None);
    }

    #[test]
    fn sticky_clients_keep_their_backend_whatever_the_random_number() {
        let s = Split {
            variants: vec![],
            weighted: vec![wb("stable", 50), wb("canary", 50)],
            sticky: Some(StickyKey::Cookie("uid".into())),
        };
        let mut seen = std::collections::BTreeSet::new();
        for user in 0..64 {
            let h = headers(&[("cookie", &format!("theme=dark; uid=user-{user}"))]);
            let first = s.choose(&h, 0).expect("a backend");
            assert_eq!(first.1, Choice::Weighted { sticky: true });
            for r in 1..20 {
                assert_eq!(s.choose(&h, r).expect("a backend").0, first.0);
            }
            seen.insert(first.0);
        }
        // 64 users over two equal halves: both backends get some.
        assert_eq!(seen.len(), 2);
        // No key: random, and said so.
        assert_eq!(
            s.choose(&HeaderMap::new(), 7).expect("a backend").1,
            Choice::Weighted { sticky: false }
        );
    }

    #[test]
    fn variants_match_before_weights_by_header_or_cookie() {
        let s = Split {
            variants: vec![
                Variant {
                    name: "beta-header".into(),
                    matches: VariantMatch::Header {
                        name: "x-beta".into(),
                        value: "1".into(),
                    },
                    backend: "beta".into(),
                },
                Variant {
                    name: "beta-cookie".into(),
                    matches: VariantMatch::Cookie {
                        name: "group".into(),
                        value: "b".into(),
                    },
                    backend: "beta".into(),
                },
            ],
            weighted: vec![wb("stable", 1)],
            sticky: None,
        };
        assert_eq!(
            s.choose(&headers(&[("x-beta", "1")]), 0),
            Some(("beta", Choice::Variant("beta-header")))
        );
        assert_eq!(
            s.choose(&headers(&[("cookie", "a=1"), ("cookie", "group=b")]), 0),
            Some(("beta", Choice::Variant("beta-cookie")))
        );
        assert_eq!(
            s.choose(&headers(&[("x-beta", "2")]), 0).map(|c| c.0),
            Some("stable")
        );
        // A cookie named like the value's prefix does not match.
        assert_eq!(
            s.choose(&headers(&[("cookie", "groups=b")]), 0)
                .map(|c| c.0),
            Some("stable")
        );
    }
}
