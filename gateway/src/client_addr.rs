//! Who the client is when load balancers stand between it and the gateway.
//!
//! Rate limits keyed by IP, the embedded IdP's per-IP limit and the access log use one
//! address per request: [`client_ip`]. Without `--trusted-proxies` it is the TCP peer, and
//! `X-Forwarded-For` is ignored (anyone can send one). With it, a request whose peer is a
//! trusted proxy is attributed to the right-most untrusted address of its
//! `X-Forwarded-For` chain: each proxy appends the address it received the request from, so
//! the hops right of the first untrusted one were written by our own proxies, and whatever
//! is left of it was written by the client and cannot be believed.
//!
//! Imports nothing of this crate.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use http::HeaderMap;
use ipnet::IpNet;

/// The networks whose peers may tell who the client is (`--trusted-proxies`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies {
    nets: Vec<IpNet>,
}

impl TrustedProxies {
    /// No proxy is trusted: the client is always the TCP peer.
    pub fn none() -> TrustedProxies {
        TrustedProxies::default()
    }

    pub fn new(nets: impl IntoIterator<Item = IpNet>) -> TrustedProxies {
        TrustedProxies {
            nets: nets.into_iter().collect(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.nets.is_empty()
    }

    /// Whether `ip` is in one of the networks (an IPv4-mapped IPv6 address counts as its
    /// IPv4 address).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.nets.iter().any(|n| n.contains(&ip))
    }
}

/// An error in a `--trusted-proxies` list.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a CIDR (e.g. 10.0.0.0/8) or an IP address")]
pub struct BadCidr(String);

impl FromStr for TrustedProxies {
    type Err = BadCidr;

    /// Comma-separated CIDRs; a bare address is a /32 (or /128). Empty: none.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut nets = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let net = match part.parse::<IpNet>() {
                Ok(n) => n.trunc(),
                Err(_) => part
                    .parse::<IpAddr>()
                    .map(|ip| IpNet::from(ip.to_canonical()))
                    .map_err(|_| BadCidr(part.to_string()))?,
            };
            nets.push(net);
        }
        Ok(TrustedProxies { nets })
    }
}

impl fmt::Display for TrustedProxies {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.nets.is_empty() {
            return f.write_str("none");
        }
        for (i, n) in self.nets.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{n}")?;
        }
        Ok(())
    }
}

/// One `X-Forwarded-For` hop: an address, optionally with a port (`192.0.2.1:1234`,
/// `[2001:db8::1]:1234`) or in brackets (`[2001:db8::1]`), as some proxies write them.
/// Anything else (`unknown`, obfuscated identifiers, garbage) is `None`.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    if let Ok(ip) = hop.parse::<IpAddr>() {
        return Some(ip.to_canonical());
    }
    if let Some(rest) = hop.strip_prefix('[') {
        let (inside, after) = rest.split_once(']')?;
        let ok_after = after.is_empty()
            || after
                .strip_prefix(':')
                .is_some_and(|p| p.parse::<u16>().is_ok());
        return ok_after
            .then(|| inside.parse::<std::net::Ipv6Addr>().ok())
            .flatten()
            .map(|ip| IpAddr::V6(ip).to_canonical());
    }
    let (addr, port) = hop.split_once(':')?;
    port.parse::<u16>().ok()?;
    addr.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4)
}

/// The address a request is attributed to, from its TCP peer and `X-Forwarded-For`.
///
/// - The peer is not a trusted proxy (or none is configured): the peer, whatever the
///   headers say.
/// - Otherwise the `X-Forwarded-For` lines (all of them, in order, each a comma-separated
///   list) are walked from the right, skipping trusted addresses; the first untrusted one is
///   the client.
/// - A hop that is not an address stops the walk at the last trusted address reached (the
///   proxy that handed the request on, or the peer): a trusted proxy only ever appends
///   addresses, so a malformed hop means the chain cannot be believed past that point, and
///   attributing the request to the proxy can only make its limits stricter, never let a
///   client choose its own address.
/// - Every hop is trusted (a request from inside the trusted networks): the left-most.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &TrustedProxies) -> IpAddr {
    let peer = peer.to_canonical();
    if !trusted.contains(peer) {
        return peer;
    }
    let hops: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b','))
        .map(|h| std::str::from_utf8(h).unwrap_or("").trim())
        .collect();
    let mut reached = peer;
    for hop in hops.iter().rev() {
        let Some(ip) = parse_hop(hop) else {
            return reached;
        };
        if !trusted.contains(ip) {
            return ip;
        }
        reached = ip;
    }
    reached
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use http::HeaderValue;
    use proptest::prelude::*;

    fn xff(lines: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for l in lines {
            h.append("x-forwarded-for", HeaderValue::from_str(l).unwrap());
        }
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn lb() -> TrustedProxies {
        "10.0.0.0/8, 192.168.1.1".parse().unwrap()
    }

    #[test]
    fn parses_cidrs_and_bare_addresses() {
        let t: TrustedProxies = "10.1.2.3/8,2001:db8::/32, 192.0.2.7".parse().unwrap();
        assert_eq!(t.to_string(), "10.0.0.0/8,2001:db8::/32,192.0.2.7/32");
        assert!(t.contains(ip("10.200.0.1")));
        assert!(t.contains(ip("::ffff:10.0.0.1")));
        assert!(!t.contains(ip("192.0.2.8")));
        assert!("".parse::<TrustedProxies>().unwrap().is_empty());
        assert!("10.0.0.0/33".parse::<TrustedProxies>().is_err());
        assert!("lb.internal".parse::<TrustedProxies>().is_err());
    }

    #[test]
    fn without_trusted_proxies_the_peer_is_the_client() {
        let h = xff(&["203.0.113.9"]);
        assert_eq!(
            client_ip(ip("10.0.0.5"), &h, &TrustedProxies::none()),
            ip("10.0.0.5")
        );
    }

    #[test]
    fn the_right_most_untrusted_hop_is_the_client() {
        let h = xff(&["198.51.100.1, 203.0.113.9", "10.0.0.7"]);
        assert_eq!(client_ip(ip("10.0.0.5"), &h, &lb()), ip("203.0.113.9"));
        assert_eq!(
            client_ip(ip("10.0.0.5"), &HeaderMap::new(), &lb()),
            ip("10.0.0.5")
        );
    }

    #[test]
    fn ports_and_brackets_are_tolerated() {
        let h = xff(&["203.0.113.9:51234"]);
        assert_eq!(client_ip(ip("10.0.0.5"), &h, &lb()), ip("203.0.113.9"));
        let h = xff(&["[2001:db8::9]:443"]);
        assert_eq!(client_ip(ip("10.0.0.5"), &h, &lb()), ip("2001:db8::9"));
        let h = xff(&["[2001:db8::9]"]);
        assert_eq!(client_ip(ip("10.0.0.5"), &h, &lb()), ip("2001:db8::9"));
    }

    #[test]
    fn a_malformed_hop_stops_at_the_last_trusted_address() {
        let h = xff(&["203.0.113.9, unknown, 10.0.0.7"]);
        assert_eq!(client_ip(ip("10.0.0.5"), &h, &lb()), ip("10.0.0.7"));
        let h = xff(&["203.0.113.9, "]);
        assert_eq!(client_ip(ip("10.0.0.5"), &h, &lb()), ip("10.0.0.5"));
    }

    #[test]
    fn an_all_trusted_chain_is_attributed_to_its_left_most_hop() {
        let h = xff(&["10.9.9.9, 192.168.1.1"]);
        assert_eq!(client_ip(ip("10.0.0.5"), &h, &lb()), ip("10.9.9.9"));
    }

    fn any_ip() -> impl Strategy<Value = IpAddr> {
        prop_oneof![
            any::<[u8; 4]>().prop_map(IpAddr::from),
            any::<[u8; 16]>().prop_map(|b| IpAddr::from(b).to_canonical()),
        ]
    }

    proptest! {
        #[test]
        fn an_untrusted_peer_is_always_the_answer(
            peer in any_ip().prop_filter("untrusted", |p| !lb().contains(*p)),
            header in "[ -~]{0,80}",
        ) {
            let mut h = HeaderMap::new();
            if let Ok(v) = HeaderValue::from_str(&header) {
                h.insert("x-forwarded-for", v);
            }
            prop_assert_eq!(client_ip(peer, &h, &lb()), peer.to_canonical());
        }

        #[test]
        fn a_spoofed_left_part_never_wins_over_an_untrusted_right_most_hop(
            spoofed in proptest::collection::vec(any_ip(), 0..5),
            junk in "[ -+\\--~]{0,20}",
            client in any_ip().prop_filter("untrusted", |p| !lb().contains(*p)),
            proxies in proptest::collection::vec(0u8..=255, 0..3),
        ) {
            let mut chain: Vec<String> = spoofed.iter().map(IpAddr::to_string).collect();
            chain.push(junk);
            chain.push(client.to_string());
            chain.extend(proxies.iter().map(|b| format!("10.1.2.{b}")));
            let h = xff(&[&chain.join(", ")]);
            prop_assert_eq!(client_ip(ip("10.0.0.5"), &h, &lb()), client);
        }
    }
}
