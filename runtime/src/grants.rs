//! Grant checks: the one place that decides whether a manifest allows a host call.
//!
//! Every host capability asks here on its first line. Keeping the matching rules together
//! makes them reviewable and testable without a running guest.

use crate::manifest::Grants;

/// Why a grant check failed; the text goes back to the guest inside `error::denied`.
pub fn deny_secret(grants: &Grants, name: &str) -> Option<String> {
    if grants.secrets.iter().any(|g| g == name) {
        None
    } else {
        Some(format!("secret `{name}` is not listed in grants.secrets"))
    }
}

/// Whether `grants.devices` covers a device (by name, tag, site, role or address range).
pub fn deny_device(grants: &Grants, device: &crate::inventory::Device) -> Option<String> {
    if grants.devices.iter().any(|g| device.granted_by(g)) {
        None
    } else {
        Some(format!(
            "device `{}` is not covered by grants.devices {:?}",
            device.name, grants.devices
        ))
    }
}

/// Whether a concrete topic may be published to: some filter in `grants.publish` matches it.
pub fn deny_publish(grants: &Grants, topic: &str) -> Option<String> {
    if grants.publish.iter().any(|g| topic_matches(g, topic)) {
        None
    } else {
        Some(format!(
            "publishing to `{topic}` is not allowed by grants.publish {:?}",
            grants.publish
        ))
    }
}

/// Whether a requested MQTT subscription filter lies entirely inside some granted filter.
pub fn deny_topic(grants: &Grants, requested: &str) -> Option<String> {
    if grants.topics.iter().any(|g| filter_covers(g, requested)) {
        None
    } else {
        Some(format!(
            "topic filter `{requested}` is not covered by grants.topics {:?}",
            grants.topics
        ))
    }
}

/// True if every topic matched by `requested` is also matched by `grant`.
pub fn filter_covers(grant: &str, requested: &str) -> bool {
    let mut g = grant.split('/');
    let mut r = requested.split('/');
    loop {
        match (g.next(), r.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(level)) if level != "#" => continue,
            (Some(gl), Some(rl)) if gl == rl && gl != "+" => continue,
            (Some(_), Some(_)) => return false,
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// True if `topic` (a concrete topic, no wildcards) matches `filter`.
pub fn topic_matches(filter: &str, topic: &str) -> bool {
    let mut f = filter.split('/');
    let mut t = topic.split('/');
    loop {
        match (f.next(), t.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => continue,
            (Some(fl), Some(tl)) if fl == tl => continue,
            (None, None) => return true,
            _ => return false,
        }
    }
}

pub fn validate_topic_filter(filter: &str) -> Result<(), String> {
    if filter.is_empty() {
        return Err("a topic filter cannot be empty".into());
    }
    let levels: Vec<&str> = filter.split('/').collect();
    for (i, level) in levels.iter().enumerate() {
        if level.contains('#') && (*level != "#" || i != levels.len() - 1) {
            return Err(format!(
                "`{filter}`: `#` must be a whole level and the last one"
            ));
        }
        if level.contains('+') && *level != "+" {
            return Err(format!("`{filter}`: `+` must be a whole level"));
        }
    }
    Ok(())
}

pub fn validate_secret_name(name: &str) -> Result<(), String> {
    if name.starts_with(crate::secret_providers::aws_sm::PREFIX) {
        return crate::secret_providers::aws_sm::parse_name(name).map(|_| ());
    }
    if name.starts_with(crate::secret_providers::vault::PREFIX) {
        return crate::secret_providers::vault::parse_name(name).map(|_| ());
    }
    let ok = !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'/'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{name}` is not a secret name: use letters, digits and - _ . / (at most 128)"
        ))
    }
}

/// One entry of `grants.http`: `scheme://host[:port]`. The host is a DNS name
/// (`app.example.com`), every name under a domain (`*.example.com`), or an address or range
/// (`10.0.0.0/8`, `[fd00::/8]`); the port is a number or `*` (default: the scheme's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpGrant {
    pub scheme: String,
    pub host: HostPattern,
    /// `None`: any port.
    pub port: Option<u16>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    Name(String),
    /// `*.example.com`: `.example.com`, any name ending with it.
    Suffix(String),
    Net(ipnet::IpNet),
}

impl HttpGrant {
    pub fn parse(grant: &str) -> Result<HttpGrant, String> {
        let bad = |why: &str| format!("`{grant}`: {why} (expected scheme://host[:port])");
        let (scheme, rest) = grant.split_once("://").ok_or_else(|| bad("no scheme"))?;
        let scheme = scheme.to_ascii_lowercase();
        let default_port = match scheme.as_str() {
            "http" => 80,
            "https" => 443,
            _ => return Err(bad("the scheme must be http or https")),
        };
        let rest = rest.trim_end_matches('/');
        let (host, port) = split_host_port(rest).ok_or_else(|| bad("malformed host or port"))?;
        let path_like = (host.contains('/') && host.parse::<ipnet::IpNet>().is_err())
            || port.is_some_and(|p| p.contains('/'));
        if path_like || rest.contains('@') || rest.contains('?') {
            return Err(bad(
                "only a scheme, host and port may be granted, not a path",
            ));
        }
        let port = match port {
            None => Some(default_port),
            Some("*") => None,
            Some(p) => Some(
                p.parse::<u16>()
                    .map_err(|_| bad("the port is not a number"))?,
            ),
        };
        let host = HostPattern::parse(host).ok_or_else(|| bad("malformed host"))?;
        Ok(HttpGrant { scheme, host, port })
    }

    fn covers_endpoint(&self, scheme: &str, port: u16) -> bool {
        self.scheme == scheme && self.port.is_none_or(|p| p == port)
    }
}

impl HostPattern {
    fn parse(host: &str) -> Option<HostPattern> {
        let host = host.to_ascii_lowercase();
        if let Ok(net) = host.parse::<ipnet::IpNet>() {
            return Some(HostPattern::Net(net));
        }
        if let Ok(ip) = host.parse::<std::net::IpAddr>() {
            return Some(HostPattern::Net(ip.into()));
        }
        let name_ok = |n: &str| {
            !n.is_empty()
                && n.len() <= 253
                && n.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        };
        match host.strip_prefix("*.") {
            Some(domain) if name_ok(domain) => Some(HostPattern::Suffix(format!(".{domain}"))),
            Some(_) => None,
            None if name_ok(&host) => Some(HostPattern::Name(host)),
            None => None,
        }
    }

    /// Whether the URL's host (a name, or an address literal) is covered.
    fn covers_host(&self, host: &str) -> bool {
        match (self, host.parse::<std::net::IpAddr>()) {
            (HostPattern::Net(net), Ok(ip)) => net.contains(&ip),
            (HostPattern::Name(name), Err(_)) => name.eq_ignore_ascii_case(host),
            (HostPattern::Suffix(suffix), Err(_)) => {
                host.len() > suffix.len() && host.to_ascii_lowercase().ends_with(suffix.as_str())
            }
            _ => false,
        }
    }
}

/// `host[:port]` with IPv6 in brackets; `None` when malformed.
fn split_host_port(s: &str) -> Option<(&str, Option<&str>)> {
    if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        return match after {
            "" => Some((host, None)),
            p => Some((host, Some(p.strip_prefix(':')?))),
        };
    }
    match s.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => Some((h, Some(p))),
        Some(_) => Some((s, None)), // a bare IPv6 range without brackets
        None => Some((s, None)),
    }
}

/// Whether `grants.http` covers a URL's scheme, host and port (checked before resolving).
pub fn deny_url(grants: &[HttpGrant], scheme: &str, host: &str, port: u16) -> Option<String> {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if grants
        .iter()
        .any(|g| g.covers_endpoint(scheme, port) && g.host.covers_host(host))
    {
        None
    } else {
        Some(format!(
            "{scheme}://{host}:{port} is not covered by grants.http"
        ))
    }
}

/// Whether the address a granted URL resolved to may be reached: a public address may; any
/// other (private ranges, loopback the operator allows) only if a grant names it by address
/// or range — so a granted name cannot lead into a network by resolving there.
pub fn deny_http_address(
    grants: &[HttpGrant],
    scheme: &str,
    port: u16,
    address: std::net::IpAddr,
) -> Option<String> {
    if crate::egress::is_public(address) {
        return None;
    }
    let granted = grants.iter().any(|g| {
        g.covers_endpoint(scheme, port)
            && matches!(&g.host, HostPattern::Net(net) if net.contains(&address))
    });
    if granted {
        None
    } else {
        Some(format!(
            "{address} is not a public address: grants.http must name it (or its range) to reach it"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_cover_narrower_filters_only() {
        assert!(filter_covers("home/#", "home/kitchen/temperature"));
        assert!(filter_covers("home/#", "home/+/temperature"));
        assert!(filter_covers(
            "home/+/temperature",
            "home/kitchen/temperature"
        ));
        assert!(filter_covers("home/+/temperature", "home/+/temperature"));
        assert!(!filter_covers("home/+/temperature", "home/#"));
        assert!(!filter_covers(
            "home/+/temperature",
            "home/kitchen/humidity"
        ));
        assert!(!filter_covers("home/kitchen", "home/+"));
        assert!(!filter_covers("home", "home/kitchen"));
        assert!(!filter_covers("office/#", "home/kitchen"));
        assert!(filter_covers("#", "anything/at/all"));
    }

    #[test]
    fn topics_match_filters() {
        assert!(topic_matches(
            "home/+/temperature",
            "home/kitchen/temperature"
        ));
        assert!(topic_matches("home/#", "home/a/b/c"));
        assert!(!topic_matches("home/+", "home/a/b"));
    }

    #[test]
    fn filter_syntax_is_checked() {
        assert!(validate_topic_filter("a/+/b/#").is_ok());
        assert!(validate_topic_filter("a/#/b").is_err());
        assert!(validate_topic_filter("a/b+").is_err());
    }

    #[test]
    fn http_grants_parse_and_cover() {
        let grants: Vec<HttpGrant> = [
            "https://app.example.com",
            "https://*.corp.example:*",
            "http://10.0.0.0/8:8080",
            "http://127.0.0.1:*",
        ]
        .iter()
        .map(|g| HttpGrant::parse(g).unwrap())
        .collect();
        assert!(deny_url(&grants, "https", "app.example.com", 443).is_none());
        assert!(deny_url(&grants, "https", "APP.example.com", 443).is_none());
        assert!(deny_url(&grants, "http", "app.example.com", 80).is_some());
        assert!(deny_url(&grants, "https", "app.example.com", 8443).is_some());
        assert!(deny_url(&grants, "https", "a.b.corp.example", 9000).is_none());
        assert!(deny_url(&grants, "https", "corp.example", 443).is_some());
        assert!(deny_url(&grants, "http", "10.1.2.3", 8080).is_none());
        assert!(deny_url(&grants, "http", "10.1.2.3", 80).is_some());
        assert!(deny_url(&grants, "http", "127.0.0.1", 5000).is_none());
        assert!(deny_url(&grants, "http", "evil.example", 80).is_some());

        let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
        // A granted name resolving into a private range is refused; a granted range is not.
        assert!(deny_http_address(&grants, "https", 443, ip("10.9.9.9")).is_some());
        assert!(deny_http_address(&grants, "http", 8080, ip("10.9.9.9")).is_none());
        assert!(deny_http_address(&grants, "https", 443, ip("192.0.2.10")).is_none());
        assert!(deny_http_address(&grants, "https", 443, ip("127.0.0.1")).is_some());
        assert!(deny_http_address(&grants, "http", 5000, ip("127.0.0.1")).is_none());

        for bad in [
            "ftp://x.example",
            "app.example.com",
            "https://x.example/path",
            "https://user@x.example",
            "https://x.example:port",
            "https://*.",
            "https://a b",
        ] {
            assert!(HttpGrant::parse(bad).is_err(), "{bad} must be refused");
        }
        assert_eq!(
            HttpGrant::parse("http://[fd00::/8]:*").unwrap().host,
            HostPattern::Net("fd00::/8".parse().unwrap())
        );
    }
}
