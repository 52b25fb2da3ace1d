//! The operator's egress policy: which addresses tenants may make SOTP connect to.
//!
//! A tenant points SOTP at places — an MQTT broker, devices for SNMP and SSH (and, later,
//! URLs) — and SOTP opens the connection from inside the operator's network. Without a
//! policy, a tenant could reach what only the host should: its own loopback services, the
//! cloud's metadata service (instance credentials), link-local neighbours. So every outbound
//! connection a tenant can cause is checked here, after name resolution, and made to the
//! address that was checked (a name that resolves differently a moment later cannot slip
//! past the check).
//!
//! In order: an address in `deny` is refused; one in `allow` is allowed; loopback,
//! link-local (cloud metadata lives there: 169.254.169.254, fd00:ec2::254), unspecified,
//! multicast and broadcast addresses are refused; private ranges (RFC 1918, CGNAT
//! 100.64/10, unique-local fc00::/7 — where network devices live) are allowed when
//! `private` is on (the default); every other address when `public` is on (the default).

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};

/// `[runtime.egress]`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EgressConfig {
    /// Addresses or ranges tenants may reach even if refused by default (e.g. a broker on
    /// this host: `["127.0.0.1/32"]`).
    pub allow: Vec<IpNet>,
    /// Addresses or ranges tenants may never reach; checked before everything else.
    pub deny: Vec<IpNet>,
    /// Private ranges: 10/8, 172.16/12, 192.168/16, 100.64/10, fc00::/7.
    pub private: bool,
    /// Globally routable addresses.
    pub public: bool,
}

impl Default for EgressConfig {
    fn default() -> Self {
        EgressConfig {
            allow: Vec::new(),
            deny: Vec::new(),
            private: true,
            public: true,
        }
    }
}

/// Why an address was refused (shown to the tenant and counted).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{address} is not reachable from SOTP: {reason} (the operator's runtime.egress policy)")]
pub struct Refused {
    pub address: IpAddr,
    pub reason: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EgressError {
    #[error(transparent)]
    Refused(#[from] Refused),
    #[error("cannot resolve `{0}`: {1}")]
    Resolve(String, String),
}

#[derive(Clone, Debug, Default)]
pub struct EgressPolicy {
    config: EgressConfig,
    /// Exact addresses (and ports) reachable unless `deny` lists them: SOTP's own API for
    /// the platform tenant's probes (see `platform`).
    pinned: Vec<SocketAddr>,
}

impl EgressPolicy {
    pub fn new(config: EgressConfig) -> Self {
        EgressPolicy {
            config,
            pinned: Vec::new(),
        }
    }

    /// This policy, plus these exact socket addresses.
    pub fn with_pinned(mut self, pinned: &[SocketAddr]) -> Self {
        self.pinned.extend_from_slice(pinned);
        self
    }

    /// Whether SOTP may connect to `address` for a tenant.
    pub fn check(&self, address: IpAddr) -> Result<(), Refused> {
        let ip = embedded_v4(address);
        let refuse = |reason| Err(Refused { address, reason });
        if self.config.deny.iter().any(|n| n.contains(&ip)) {
            return refuse("it is in runtime.egress.deny");
        }
        if self.config.allow.iter().any(|n| n.contains(&ip)) {
            return Ok(());
        }
        if let Some(reason) = refused_by_default(ip) {
            return refuse(reason);
        }
        if is_private(ip) {
            return if self.config.private {
                Ok(())
            } else {
                refuse("private ranges are off (runtime.egress.private = false)")
            };
        }
        if self.config.public {
            Ok(())
        } else {
            refuse("public addresses are off (runtime.egress.public = false)")
        }
    }

    /// Resolve `host` (an address or a DNS name) and return the first address the policy
    /// allows, with `port`: connect to that, not to the name.
    pub fn resolve(&self, host: &str, port: u16) -> Result<SocketAddr, EgressError> {
        let host = host.trim().trim_start_matches('[').trim_end_matches(']');
        let addresses: Vec<SocketAddr> = match host.parse::<IpAddr>() {
            Ok(ip) => vec![SocketAddr::new(ip, port)],
            Err(_) => (host, port)
                .to_socket_addrs()
                .map_err(|e| EgressError::Resolve(host.to_string(), e.to_string()))?
                .collect(),
        };
        let mut first_refusal = None;
        for a in addresses {
            let denied = self
                .config
                .deny
                .iter()
                .any(|n| n.contains(&embedded_v4(a.ip())));
            if self.pinned.contains(&a) && !denied {
                return Ok(a);
            }
            match self.check(a.ip()) {
                Ok(()) => return Ok(a),
                Err(r) => {
                    first_refusal.get_or_insert(r);
                }
            }
        }
        Err(match first_refusal {
            Some(r) => r.into(),
            None => EgressError::Resolve(host.to_string(), "no addresses".into()),
        })
    }
}

/// The IPv4 address an IPv6 one stands for, if any: IPv4-mapped (`::ffff:a.b.c.d`),
/// IPv4-compatible (`::a.b.c.d`, deprecated but routable by some stacks) and the NAT64 prefix
/// (`64:ff9b::a.b.c.d`, which a NAT64 gateway forwards to that IPv4 address).
fn embedded_v4(address: IpAddr) -> IpAddr {
    let IpAddr::V6(v6) = address else {
        return address;
    };
    if let Some(v4) = v6.to_ipv4_mapped() {
        return IpAddr::V4(v4);
    }
    let s = v6.segments();
    let low = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    let compatible = s[..6].iter().all(|x| *x == 0) && u32::from(low) > 1;
    let nat64 = s[0] == 0x64 && s[1] == 0xff9b && s[2..6].iter().all(|x| *x == 0);
    if compatible || nat64 {
        IpAddr::V4(low)
    } else {
        address
    }
}

fn refused_by_default(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => {
            if v4.is_loopback() {
                Some("loopback addresses are refused by default")
            } else if v4.is_link_local() {
                Some("link-local addresses (cloud metadata among them) are refused by default")
            } else if v4.is_unspecified() || v4.is_broadcast() || v4.is_multicast() {
                Some("unspecified, broadcast and multicast addresses are refused")
            } else if v4.octets()[0] == 0 {
                Some("0.0.0.0/8 is refused")
            } else {
                None
            }
        }
        IpAddr::V6(v6) => {
            let link_local = (v6.segments()[0] & 0xffc0) == 0xfe80;
            let metadata = v6 == Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254);
            if v6.is_loopback() {
                Some("loopback addresses are refused by default")
            } else if link_local || metadata {
                Some("link-local addresses (cloud metadata among them) are refused by default")
            } else if v6.is_unspecified() || v6.is_multicast() {
                Some("unspecified and multicast addresses are refused")
            } else {
                None
            }
        }
    }
}

/// Whether an address is globally routable: neither private nor one refused by default
/// (loopback, link-local, ...), whatever the operator's lists say.
pub fn is_public(ip: IpAddr) -> bool {
    let ip = embedded_v4(ip);
    refused_by_default(ip).is_none() && !is_private(ip)
}

fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let cgnat = v4.octets()[0] == 100 && (v4.octets()[1] & 0xc0) == 64;
            v4.is_private() || cgnat
        }
        IpAddr::V6(v6) => (v6.segments()[0] & 0xfe00) == 0xfc00,
    }
}

/// The loopback address, for tests and docs that show an `allow` entry.
pub const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn defaults_refuse_the_hosts_own_surroundings_and_allow_devices() {
        let p = EgressPolicy::default();
        for refused in [
            "127.0.0.1",
            "127.1.2.3",
            "::1",
            "169.254.169.254",
            "fd00:ec2::254",
            "fe80::1",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "::127.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "64:ff9b::7f00:1",
        ] {
            assert!(p.check(ip(refused)).is_err(), "{refused} must be refused");
        }
        for allowed in [
            "10.77.255.1",
            "192.168.1.1",
            "172.16.0.1",
            "100.64.0.1",
            "fd12::1",
            "192.0.2.1",
            "2001:db8::1",
        ] {
            assert!(p.check(ip(allowed)).is_ok(), "{allowed} must be allowed");
        }
    }

    #[test]
    fn allow_and_deny_lists_and_switches() {
        let p = EgressPolicy::new(EgressConfig {
            allow: vec!["127.0.0.1/32".parse().unwrap()],
            deny: vec!["10.66.0.0/16".parse().unwrap()],
            private: true,
            public: false,
        });
        assert!(p.check(LOOPBACK).is_ok());
        assert!(p.check(ip("127.0.0.2")).is_err());
        let refused = p.check(ip("10.66.1.1")).unwrap_err();
        assert!(
            refused.to_string().contains("runtime.egress.deny"),
            "{refused}"
        );
        assert!(p.check(ip("10.67.1.1")).is_ok());
        assert!(
            p.check(ip("192.0.2.1"))
                .unwrap_err()
                .reason
                .contains("public")
        );
    }

    #[test]
    fn names_are_resolved_then_checked() {
        let p = EgressPolicy::default();
        let err = p.resolve("localhost", 1883).unwrap_err();
        assert!(matches!(err, EgressError::Refused(_)), "{err}");
        assert_eq!(
            p.resolve("10.0.0.1", 161).unwrap(),
            "10.0.0.1:161".parse().unwrap()
        );
        assert_eq!(
            p.resolve("[fd12::1]", 22).unwrap(),
            "[fd12::1]:22".parse().unwrap()
        );
    }

    #[test]
    fn pinned_addresses_open_one_port_of_one_address_only() {
        let p = EgressPolicy::default().with_pinned(&["127.0.0.1:8787".parse().unwrap()]);
        assert_eq!(
            p.resolve("127.0.0.1", 8787).unwrap(),
            "127.0.0.1:8787".parse().unwrap()
        );
        assert!(p.resolve("127.0.0.1", 22).is_err(), "another port");
        assert!(p.resolve("127.0.0.2", 8787).is_err(), "another address");
    }
}
