//! What request-scoped log lines say about a request: its ids ([`RequestLog`]) and the
//! client's address as `--log-client-address` allows ([`ClientAddressLog`]).
//!
//! The address is personal data: by default no line names it. `truncate` keeps its network
//! (IPv4 /24, IPv6 /48), `hash` a keyed hash that tells requests of one address apart from
//! others' without naming it, `full` the address itself. Every field is written straight
//! into the log line: nothing is allocated for it, and nothing at all when the line is
//! filtered out.
//!
//! Imports nothing of this crate.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use aws_lc_rs::hmac;
use tracing::field::DisplayValue;

/// The environment variable of [`ClientAddressLog::Hash`]'s key.
pub const HASH_KEY_ENV: &str = "FLEETGATE_LOG_CLIENT_ADDRESS_KEY";

/// How log lines name the client's address (`--log-client-address`).
#[derive(Clone, Default)]
pub enum ClientAddressLog {
    /// No `client` field.
    #[default]
    Off,
    /// The address's network: IPv4 /24 (`203.0.113.0`), IPv6 /48 (`2001:db8:1::`).
    Truncate,
    /// The first 16 hex digits of HMAC-SHA256 of the address (as text) under the key.
    Hash(Box<hmac::Key>),
    /// The address.
    Full,
}

impl fmt::Debug for ClientAddressLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the key.
        f.write_str(self.name())
    }
}

impl ClientAddressLog {
    /// `hash` with `key`; a random key when `None`, so only this process hashes alike.
    pub fn hash(key: Option<&[u8]>) -> Result<ClientAddressLog, String> {
        let key = match key {
            Some([]) => return Err(format!("{HASH_KEY_ENV} is set but empty")),
            Some(k) => hmac::Key::new(hmac::HMAC_SHA256, k),
            None => {
                let mut random = [0u8; 32];
                aws_lc_rs::rand::fill(&mut random)
                    .map_err(|_| "no random key for hashing client addresses".to_string())?;
                hmac::Key::new(hmac::HMAC_SHA256, &random)
            }
        };
        Ok(ClientAddressLog::Hash(Box::new(key)))
    }

    pub fn name(&self) -> &'static str {
        match self {
            ClientAddressLog::Off => "off",
            ClientAddressLog::Truncate => "truncate",
            ClientAddressLog::Hash(_) => "hash",
            ClientAddressLog::Full => "full",
        }
    }

    /// The `client` field of a line about `ip`: `None` (no field) when off.
    pub fn field(&self, ip: IpAddr) -> Option<DisplayValue<LoggedAddress<'_>>> {
        match self {
            ClientAddressLog::Off => None,
            policy => Some(tracing::field::display(LoggedAddress { policy, ip })),
        }
    }
}

/// A `--log-client-address` value without its key: [`ClientAddressLog::hash`] makes the
/// policy of `hash`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAddressMode {
    Off,
    Truncate,
    Hash,
    Full,
}

impl FromStr for ClientAddressMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "off" => Ok(ClientAddressMode::Off),
            "truncate" => Ok(ClientAddressMode::Truncate),
            "hash" => Ok(ClientAddressMode::Hash),
            "full" => Ok(ClientAddressMode::Full),
            other => Err(format!("{other:?} is not one of off, truncate, hash, full")),
        }
    }
}

impl ClientAddressMode {
    /// The policy of this mode; `hash_key` is the hash's key (random when `None`).
    pub fn policy(self, hash_key: Option<&[u8]>) -> Result<ClientAddressLog, String> {
        Ok(match self {
            ClientAddressMode::Off => ClientAddressLog::Off,
            ClientAddressMode::Truncate => ClientAddressLog::Truncate,
            ClientAddressMode::Hash => ClientAddressLog::hash(hash_key)?,
            ClientAddressMode::Full => ClientAddressLog::Full,
        })
    }
}

/// An address as a log line shows it under a policy.
#[derive(Debug, Clone, Copy)]
pub struct LoggedAddress<'a> {
    policy: &'a ClientAddressLog,
    ip: IpAddr,
}

impl fmt::Display for LoggedAddress<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ip = self.ip.to_canonical();
        match self.policy {
            ClientAddressLog::Off => Ok(()),
            ClientAddressLog::Full => write!(f, "{ip}"),
            ClientAddressLog::Truncate => write!(f, "{}", truncate(ip)),
            ClientAddressLog::Hash(key) => {
                let mut text = AddrText::new();
                fmt::Write::write_fmt(&mut text, format_args!("{ip}"))?;
                let tag = hmac::sign(key, text.as_bytes());
                for b in tag.as_ref().iter().take(8) {
                    write!(f, "{b:02x}")?;
                }
                Ok(())
            }
        }
    }
}

/// The network of `ip` that `truncate` logs: IPv4 /24, IPv6 /48.
pub fn truncate(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V4(v4) => IpAddr::V4(Ipv4Addr::from(u32::from(v4) & 0xffff_ff00)),
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !((1u128 << 80) - 1))),
    }
}

/// An address's text on the stack (at most 45 bytes: a full IPv6 address with an IPv4 tail).
struct AddrText {
    buf: [u8; 48],
    len: usize,
}

impl AddrText {
    fn new() -> AddrText {
        AddrText {
            buf: [0; 48],
            len: 0,
        }
    }

    fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl fmt::Write for AddrText {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let end = self.len + s.len();
        self.buf
            .get_mut(self.len..end)
            .ok_or(fmt::Error)?
            .copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

/// What every request-scoped line names a request by: its request id, the trace id of its
/// `traceparent`, and its client as the policy allows.
#[derive(Debug, Clone, Copy)]
pub struct RequestLog<'a> {
    pub request_id: &'a str,
    /// 32 lowercase hex digits.
    pub trace_id: &'a str,
    client_ip: IpAddr,
    policy: &'a ClientAddressLog,
}

impl<'a> RequestLog<'a> {
    pub fn new(
        request_id: &'a str,
        trace_id: &'a str,
        client_ip: IpAddr,
        policy: &'a ClientAddressLog,
    ) -> RequestLog<'a> {
        RequestLog {
            request_id,
            trace_id,
            client_ip,
            policy,
        }
    }

    /// The `client` field (absent when the policy is `off`).
    pub fn client(&self) -> Option<DisplayValue<LoggedAddress<'a>>> {
        self.policy.field(self.client_ip)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shown(policy: &ClientAddressLog, ip: &str) -> Option<String> {
        policy
            .field(ip.parse().expect("address"))
            .map(|v| format!("{v}"))
    }

    #[test]
    fn off_has_no_field_and_full_is_the_address() {
        assert_eq!(shown(&ClientAddressLog::Off, "203.0.113.7"), None);
        assert_eq!(
            shown(&ClientAddressLog::Full, "203.0.113.7").as_deref(),
            Some("203.0.113.7")
        );
        // An IPv4-mapped address is its IPv4 address.
        assert_eq!(
            shown(&ClientAddressLog::Full, "::ffff:203.0.113.7").as_deref(),
            Some("203.0.113.7")
        );
    }

    #[test]
    fn truncate_keeps_an_ipv4_24_and_an_ipv6_48() {
        let t = ClientAddressLog::Truncate;
        assert_eq!(shown(&t, "203.0.113.7").as_deref(), Some("203.0.113.0"));
        assert_eq!(shown(&t, "127.0.0.1").as_deref(), Some("127.0.0.0"));
        assert_eq!(
            shown(&t, "::ffff:198.51.100.255").as_deref(),
            Some("198.51.100.0")
        );
        assert_eq!(
            shown(&t, "2001:db8:1234:5678:9abc::1").as_deref(),
            Some("2001:db8:1234::")
        );
        assert_eq!(shown(&t, "::1").as_deref(), Some("::"));
    }

    #[test]
    fn hash_is_16_hex_digits_stable_under_one_key_and_differs_under_another() {
        let a = ClientAddressLog::hash(Some(b"key one")).expect("policy");
        let b = ClientAddressLog::hash(Some(b"key two")).expect("policy");
        let one = shown(&a, "203.0.113.7").expect("field");
        assert_eq!(one.len(), 16, "{one}");
        assert!(
            one.bytes()
                .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c)),
            "{one}"
        );
        assert_eq!(shown(&a, "203.0.113.7").as_deref(), Some(one.as_str()));
        assert_ne!(shown(&a, "203.0.113.8").as_deref(), Some(one.as_str()));
        assert_ne!(shown(&b, "203.0.113.7").as_deref(), Some(one.as_str()));
        // Two instances with the same key hash alike.
        let again = ClientAddressLog::hash(Some(b"key one")).expect("policy");
        assert_eq!(shown(&again, "203.0.113.7").as_deref(), Some(one.as_str()));
        // HMAC-SHA256 of the address's text, so it can be computed elsewhere:
        // printf 203.0.113.7 | openssl dgst -sha256 -hmac 'key one'
        let tag = hmac::sign(
            &hmac::Key::new(hmac::HMAC_SHA256, b"key one"),
            b"203.0.113.7",
        );
        assert_eq!(one, hex::encode(&tag.as_ref()[..8]));
    }

    #[test]
    fn a_random_key_hashes_alike_within_the_process_only() {
        let (a, b) = (
            ClientAddressLog::hash(None).expect("policy"),
            ClientAddressLog::hash(None).expect("policy"),
        );
        assert_eq!(shown(&a, "203.0.113.7"), shown(&a, "203.0.113.7"));
        assert_ne!(shown(&a, "203.0.113.7"), shown(&b, "203.0.113.7"));
        assert!(ClientAddressLog::hash(Some(b"")).is_err());
    }

    #[test]
    fn modes_parse_and_the_policy_hides_its_key() {
        assert_eq!("truncate".parse(), Ok(ClientAddressMode::Truncate));
        assert!("ip".parse::<ClientAddressMode>().is_err());
        let policy = ClientAddressMode::Hash
            .policy(Some(b"secret-key"))
            .expect("policy");
        assert_eq!(format!("{policy:?}"), "hash");
    }
}
