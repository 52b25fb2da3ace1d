//! `cidr_sd`: targets found by probing every address of granted IPv4 ranges for an
//! exporter's port. A guest makes one request at a time, and an address with no host
//! behind it costs the whole probe timeout, so the scan is spread over ticks: each tick
//! probes the next `probes_per_tick` addresses (round robin over all ranges) and the found
//! set changes as they answer — an address that answers `200` is a target from then on, one
//! that stops answering is dropped when the scan comes back to it. Nothing restarts.
//!
//! The requests go through the `http` capability: every range must be covered by
//! `grants.http` (a CIDR pattern such as `http://10.0.0.0/24:9100`) and by the operator's
//! egress policy; an address outside them is refused by the host, logged once per round.

use serde::Deserialize;
use sotp_guest::LogRecord;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

/// Addresses one component scans at most (all ranges together).
const MAX_ADDRESSES: u64 = 4096;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CidrSd {
    pub cidrs: Vec<String>,
    pub port: u16,
    #[serde(default = "super::default_scheme")]
    pub scheme: String,
    #[serde(default = "super::default_path")]
    pub path: String,
    #[serde(default = "default_probe_timeout")]
    pub probe_timeout_ms: u32,
    #[serde(default = "default_probes")]
    pub probes_per_tick: u32,
}

fn default_probe_timeout() -> u32 {
    500
}

fn default_probes() -> u32 {
    64
}

/// The scan's state across ticks.
#[derive(Debug)]
pub struct Scan {
    settings: CidrSd,
    /// Every address to probe, with the range it belongs to.
    addresses: Vec<(Ipv4Addr, String)>,
    cursor: usize,
    /// Addresses that answered on their last probe → their range.
    found: BTreeMap<Ipv4Addr, String>,
}

impl Scan {
    pub fn new(settings: CidrSd) -> Result<Scan, String> {
        let mut addresses = Vec::new();
        let mut total: u64 = 0;
        for cidr in &settings.cidrs {
            let (base, prefix) = parse_cidr(cidr)?;
            let size = 1u64 << (32 - prefix);
            total += size;
            if total > MAX_ADDRESSES {
                return Err(format!(
                    "config.cidr_sd: more than {MAX_ADDRESSES} addresses to scan (at most a /20 in all)"
                ));
            }
            let first = u32::from(base);
            // A /31 or /32 has no network or broadcast address to skip.
            let (start, end) = if prefix >= 31 {
                (first, first + size as u32 - 1)
            } else {
                (first + 1, first + size as u32 - 2)
            };
            for a in start..=end {
                addresses.push((Ipv4Addr::from(a), cidr.clone()));
            }
        }
        if !matches!(settings.scheme.as_str(), "http" | "https") {
            return Err("config.cidr_sd.scheme: http or https".into());
        }
        Ok(Scan {
            settings,
            addresses,
            cursor: 0,
            found: BTreeMap::new(),
        })
    }

    /// Probe the next addresses; the targets found so far as (scheme, address, path, meta).
    pub fn step(
        &mut self,
        logs: &mut Vec<LogRecord>,
    ) -> Vec<(String, String, String, BTreeMap<String, String>)> {
        let n = (self.settings.probes_per_tick as usize).min(self.addresses.len());
        for _ in 0..n {
            let (address, cidr) = self.addresses[self.cursor % self.addresses.len()].clone();
            let first_round = self.cursor < self.addresses.len();
            self.cursor += 1;
            match self.probe(address) {
                Ok(true) => {
                    self.found.insert(address, cidr);
                }
                Ok(false) => {
                    self.found.remove(&address);
                }
                Err(reason) => {
                    self.found.remove(&address);
                    if first_round {
                        logs.push(super::log(
                            format!("cidr_sd: {address}: {reason}"),
                            &address.to_string(),
                        ));
                    }
                }
            }
        }
        let s = &self.settings;
        self.found
            .iter()
            .map(|(address, cidr)| {
                let mut meta = BTreeMap::new();
                meta.insert("__meta_sotp_cidr".to_string(), cidr.clone());
                (
                    s.scheme.clone(),
                    format!("{address}:{}", s.port),
                    s.path.clone(),
                    meta,
                )
            })
            .collect()
    }

    /// Whether an exporter answers at `address`; `Err` for a refusal by grants or policy.
    fn probe(&self, address: Ipv4Addr) -> Result<bool, String> {
        let s = &self.settings;
        let url = format!("{}://{address}:{}{}", s.scheme, s.port, s.path);
        let mut request = sotp_guest::http::Request::get(&url).timeout_ms(s.probe_timeout_ms);
        request.max_body_bytes = 1;
        request.insecure_skip_verify = true;
        match sotp_guest::http::send(&request) {
            Ok(r) => Ok(r.status == 200),
            Err(f) if f.phase == "grant" => Err(sotp_guest::describe(&f.error)),
            Err(_) => Ok(false),
        }
    }
}

/// `10.0.0.0/24` → (10.0.0.0, 24); the address must be the range's first.
fn parse_cidr(text: &str) -> Result<(Ipv4Addr, u32), String> {
    let bad = || format!("config.cidr_sd: `{text}` is not an IPv4 range like 10.0.0.0/24");
    let (address, prefix) = text.split_once('/').ok_or_else(bad)?;
    let address: Ipv4Addr = address.parse().map_err(|_| bad())?;
    let prefix: u32 = prefix.parse().map_err(|_| bad())?;
    if prefix > 32 {
        return Err(bad());
    }
    let mask = if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - prefix)
    };
    if u32::from(address) & !mask != 0 {
        return Err(format!(
            "config.cidr_sd: `{text}` has host bits set (the range starts at {})",
            Ipv4Addr::from(u32::from(address) & mask)
        ));
    }
    Ok((address, prefix))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sd(cidrs: &[&str]) -> CidrSd {
        CidrSd {
            cidrs: cidrs.iter().map(|c| c.to_string()).collect(),
            port: 9100,
            scheme: "http".into(),
            path: "/metrics".into(),
            probe_timeout_ms: 500,
            probes_per_tick: 64,
        }
    }

    #[test]
    fn ranges_expand_without_network_and_broadcast() {
        let scan = Scan::new(sd(&["10.0.0.0/30", "192.168.1.7/32"])).unwrap();
        let addresses: Vec<String> = scan.addresses.iter().map(|(a, _)| a.to_string()).collect();
        assert_eq!(addresses, ["10.0.0.1", "10.0.0.2", "192.168.1.7"]);
        assert!(
            Scan::new(sd(&["10.0.0.1/24"]))
                .unwrap_err()
                .contains("host bits")
        );
        assert!(
            Scan::new(sd(&["10.0.0.0/16"]))
                .unwrap_err()
                .contains("4096")
        );
        assert!(Scan::new(sd(&["fe80::/64"])).is_err());
    }
}
