//! The client address recorded with an API change ("where from"), and
//! which `X-Forwarded-For` entries may be believed.
//!
//! Anyone can send `X-Forwarded-For`, so an entry is believed only when the
//! hop that handed it over is a trusted proxy (`audit.trusted_proxies`):
//! starting with the TCP peer, the header is walked from the right, one
//! entry per trusted hop, for at most `hops` entries. The first untrusted
//! hop is the client. A client connecting directly (its own address not
//! in the list) is recorded as itself, whatever header it sends.

use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;

use super::AuditConfig;

/// The settings [`ClientAddrs::http`] and [`ClientAddrs::grpc`] apply,
/// from `audit:`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientAddrs {
    /// `audit.trusted_proxy_hops` (the HTTP port).
    http_hops: u8,
    /// `audit.grpc_trusted_proxy_hops`.
    grpc_hops: u8,
    /// `audit.trusted_proxies`, parsed; entries that do not parse were
    /// refused by [`AuditConfig::validate`].
    trusted: Vec<IpNet>,
}

impl ClientAddrs {
    pub fn from_config(c: &AuditConfig) -> ClientAddrs {
        ClientAddrs {
            http_hops: c.trusted_proxy_hops,
            grpc_hops: c.grpc_trusted_proxy_hops,
            trusted: c
                .trusted_proxies
                .iter()
                .filter_map(|s| parse_net(s))
                .collect(),
        }
    }

    /// The client address of a call on the HTTP port.
    pub fn http(&self, forwarded_for: &[&str], peer: Option<SocketAddr>) -> Option<String> {
        client_addr(forwarded_for, peer, self.http_hops, &self.trusted)
    }

    /// The client address of a call on the gRPC port (usually reached
    /// directly, not through Envoy: its own hop count, default 0).
    pub fn grpc(&self, forwarded_for: &[&str], peer: Option<SocketAddr>) -> Option<String> {
        client_addr(forwarded_for, peer, self.grpc_hops, &self.trusted)
    }
}

/// An `audit.trusted_proxies` entry: a CIDR (`10.0.0.0/8`) or one address.
pub fn parse_net(s: &str) -> Option<IpNet> {
    let s = s.trim();
    s.parse::<IpNet>()
        .ok()
        .or_else(|| s.parse::<IpAddr>().ok().map(IpNet::from))
        .map(|n| n.trunc())
}

/// The client address: the TCP `peer`, or, while the current hop (first
/// the peer) is in `trusted` and at most `hops` times, the next
/// `X-Forwarded-For` entry from the right (every value of the header, in
/// order, joined). When the entries run out, the last hop reached. An
/// entry that a trusted proxy handed over but that is not an IP address is
/// recorded as `None` rather than guessed.
pub fn client_addr(
    forwarded_for: &[&str],
    peer: Option<SocketAddr>,
    hops: u8,
    trusted: &[IpNet],
) -> Option<String> {
    let mut current = peer?.ip().to_canonical();
    let mut entries = forwarded_for
        .iter()
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .rev();
    for _ in 0..hops {
        if !trusted.iter().any(|n| n.contains(&current)) {
            break;
        }
        let Some(next) = entries.next() else {
            break;
        };
        current = parse_ip(next)?;
    }
    Some(current.to_string())
}

/// An `X-Forwarded-For` entry as an address: a bare IP, `[v6]`, or either
/// with a port.
fn parse_ip(s: &str) -> Option<IpAddr> {
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(ip.to_canonical());
    }
    if let Ok(sa) = s.parse::<SocketAddr>() {
        return Some(sa.ip().to_canonical());
    }
    s.strip_prefix('[')
        .and_then(|r| r.strip_suffix(']'))
        .and_then(|r| r.parse::<IpAddr>().ok())
        .map(|ip| ip.to_canonical())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(s: &str) -> Option<SocketAddr> {
        Some(format!("{s}:5555").parse().unwrap())
    }

    fn nets(v: &[&str]) -> Vec<IpNet> {
        v.iter().map(|s| parse_net(s).unwrap()).collect()
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_hops() {
        let proxies = nets(&["10.0.0.0/8"]);
        let xff = ["203.0.113.7, 198.51.100.2", "10.1.1.1"];
        let envoy = peer("10.0.0.9");
        let at = |hops| client_addr(&xff, envoy, hops, &proxies);
        assert_eq!(at(0).as_deref(), Some("10.0.0.9"));
        assert_eq!(at(1).as_deref(), Some("10.1.1.1"));
        // 10.1.1.1 is trusted too: its entry is believed.
        assert_eq!(at(2).as_deref(), Some("198.51.100.2"));
        // 198.51.100.2 is not a proxy: it is the client, whatever it sent.
        assert_eq!(at(3).as_deref(), Some("198.51.100.2"));
        // A direct client not in the list: its own address, header ignored.
        let direct = peer("127.0.0.1");
        assert_eq!(
            client_addr(&["6.6.6.6"], direct, 1, &proxies).as_deref(),
            Some("127.0.0.1")
        );
        assert_eq!(
            client_addr(&["6.6.6.6"], direct, 1, &[]).as_deref(),
            Some("127.0.0.1"),
            "no trusted proxies: never the header"
        );
        // Entries run out: the last hop reached.
        assert_eq!(
            client_addr(&[], envoy, 1, &proxies).as_deref(),
            Some("10.0.0.9")
        );
        // A spoofed leftmost entry never wins with one hop.
        let spoofed = ["1.2.3.4, 203.0.113.7"];
        assert_eq!(
            client_addr(&spoofed, envoy, 1, &proxies).as_deref(),
            Some("203.0.113.7")
        );
        assert_eq!(
            client_addr(&["[2001:db8::1]:443"], envoy, 1, &proxies).as_deref(),
            Some("2001:db8::1")
        );
        assert_eq!(
            client_addr(&["::ffff:192.0.2.1"], envoy, 1, &proxies).as_deref(),
            Some("192.0.2.1")
        );
        assert_eq!(client_addr(&["unknown"], envoy, 1, &proxies), None);
        // A v4-mapped peer matches a v4 list; a bare address is a /32.
        let mapped = Some("[::ffff:10.0.0.9]:1".parse().unwrap());
        assert_eq!(
            client_addr(&["192.0.2.5"], mapped, 1, &nets(&["10.0.0.9"])).as_deref(),
            Some("192.0.2.5")
        );
        assert_eq!(parse_net("not-an-ip"), None);
    }

    #[test]
    fn grpc_has_its_own_hop_count() {
        let cfg = AuditConfig {
            trusted_proxy_hops: 1,
            trusted_proxies: vec!["127.0.0.0/8".into()],
            ..AuditConfig::default()
        };
        let c = ClientAddrs::from_config(&cfg);
        let local = peer("127.0.0.1");
        assert_eq!(c.http(&["6.6.6.6"], local).as_deref(), Some("6.6.6.6"));
        assert_eq!(c.grpc(&["6.6.6.6"], local).as_deref(), Some("127.0.0.1"));
    }
}
