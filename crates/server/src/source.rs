//! Where a request comes from, as the limits count it: a client's address reduced to a
//! [`SourceKey`] — the IPv4 address, or the IPv6 /64 (one subscriber's network: a host picks
//! among 2^64 addresses of it at will). An IPv4-mapped IPv6 address is its IPv4 address.
//! The login back-off (core) and the per-source limits (gateway) share it.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// A client address reduced to what one client controls (see the module doc).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SourceKey(Reduced);

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Reduced {
    V4(Ipv4Addr),
    /// The first 64 bits.
    V6Net(u64),
}

impl SourceKey {
    /// The key of a client address.
    pub fn of(ip: IpAddr) -> SourceKey {
        match ip {
            IpAddr::V4(v4) => SourceKey(Reduced::V4(v4)),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => SourceKey(Reduced::V4(v4)),
                None => SourceKey(Reduced::V6Net((v6.to_bits() >> 64) as u64)),
            },
        }
    }
}

impl fmt::Display for SourceKey {
    /// `203.0.113.7`, or the network `2001:db8:1:2::/64`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Reduced::V4(v4) => write!(f, "{v4}"),
            Reduced::V6Net(net) => write!(f, "{}/64", Ipv6Addr::from_bits(u128::from(net) << 64)),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn key(s: &str) -> SourceKey {
        SourceKey::of(s.parse().unwrap())
    }

    #[test]
    fn ipv4_is_its_own_key() {
        assert_eq!(key("203.0.113.7").to_string(), "203.0.113.7");
        assert_ne!(key("203.0.113.7"), key("203.0.113.8"));
    }

    #[test]
    fn ipv6_is_reduced_to_its_64_bit_network() {
        let a = key("2001:db8:1:2:aaaa:bbbb:cccc:dddd");
        assert_eq!(a, key("2001:db8:1:2::1"));
        assert_ne!(a, key("2001:db8:1:3::1"));
        assert_eq!(a.to_string(), "2001:db8:1:2::/64");
        assert_eq!(key("::1").to_string(), "::/64");
    }

    #[test]
    fn ipv4_mapped_ipv6_is_the_ipv4_address() {
        assert_eq!(key("::ffff:203.0.113.7"), key("203.0.113.7"));
        assert_eq!(key("::ffff:203.0.113.7").to_string(), "203.0.113.7");
        assert_ne!(key("::ffff:203.0.113.7"), key("::ffff:203.0.113.8"));
    }

    #[test]
    fn keys_are_usable_in_maps() {
        let mut seen = std::collections::HashSet::new();
        seen.insert(key("2001:db8::1"));
        assert!(!seen.insert(key("2001:db8::2")));
        assert!(seen.insert(key("192.0.2.1")));
    }
}
