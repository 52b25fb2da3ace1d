//! SOTP watching itself ([PLATFORM.md](../../../docs/PLATFORM.md)): "is SOTP slow for my
//! users?" answered by SOTP's own synthetics and RUM, so SOTP is the first user of both.
//!
//! In: `[platform]` of the config, the address the API listens on, and the `http-check`
//! probe component built into the binary. Out: the platform tenant (created on first start,
//! operator-owned), its probe components — one `http-check` per page or endpoint, manifests
//! written here — its tokens kept as its own secrets (the probes' read token; the web UI's
//! RUM key), the `<script>` tag the web UI's page carries, and the health view (probe
//! results, UI latency from the browsers' spans).
//!
//! The probes go where users go: `base_url` (the load balancer's URL, when there is one),
//! else the listen address. Loopback is refused to every tenant by the egress policy; the
//! platform tenant alone may reach exactly the addresses `base_url` resolves to, on its port
//! ([`Active::reach`]), nothing else on the host.

use crate::units::HumanDuration;
use serde::{Deserialize, Serialize};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::time::Duration;

/// `[platform]`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PlatformConfig {
    /// Create the platform tenant and run its probes.
    pub enabled: bool,
    /// The platform tenant's id.
    pub tenant: String,
    /// Where users reach SOTP (e.g. its load balancer's `https://sotp.example`); the probes
    /// request it. Default: `http://` + the API's listen address.
    pub base_url: Option<String>,
    /// How often each probe runs.
    pub probe_interval: HumanDuration,
    /// The web UI sends its page loads and API calls to the platform tenant as traces.
    pub rum: bool,
    /// The share of UI sessions traced (decided once per browser session).
    pub rum_sample_rate: f64,
    /// Other origins users open the UI at (the base URL's and the listen address's are
    /// always allowed to send spans).
    pub ui_origins: Vec<String>,
}

impl Default for PlatformConfig {
    fn default() -> Self {
        PlatformConfig {
            enabled: true,
            tenant: "platform".into(),
            base_url: None,
            probe_interval: HumanDuration(Duration::from_secs(30)),
            rum: true,
            rum_sample_rate: 0.1,
            ui_origins: Vec::new(),
        }
    }
}

/// What `Runtime::start_platform` needs beyond the config.
pub struct PlatformSetup {
    pub config: PlatformConfig,
    /// The address the API listens on (after binding: port 0 resolved).
    pub listen: SocketAddr,
    /// The `http-check` component built into the binary, if it was built with it.
    pub probe_wasm: Option<&'static [u8]>,
}

#[derive(Debug, thiserror::Error)]
pub enum PlatformError {
    #[error("platform.base_url `{0}`: {1}")]
    BaseUrl(String, String),
    #[error("platform.rum_sample_rate {0} is not within 0..=1")]
    SampleRate(f64),
    #[error("platform.probe_interval must be at least 1s")]
    Interval,
}

/// The platform as started: who it is and what its probes may reach.
#[derive(Clone, Debug)]
pub struct Active {
    pub tenant: String,
    pub base_url: url::Url,
    /// The addresses `base_url` resolves to, with its port: the only loopback or otherwise
    /// refused addresses the platform tenant's components may connect to.
    pub reach: Vec<SocketAddr>,
    /// The web UI's RUM key and sampling, when `rum` is on.
    pub rum: Option<RumTag>,
}

/// What the web UI's page carries to send its spans to the platform tenant.
#[derive(Clone, Debug)]
pub struct RumTag {
    /// A token with only the `rum` scope (write spans; public by nature, like every RUM key).
    pub key: String,
    pub sample_rate: f64,
}

impl RumTag {
    /// The `<script>` element of `/rum.js` for the UI's page.
    pub fn script(&self) -> String {
        format!(
            r#"<script src="/rum.js" data-key="{}" data-service="{UI_SERVICE}" data-sample-rate="{}" async></script>"#,
            self.key, self.sample_rate
        )
    }
}

/// The service name the web UI's spans carry.
pub const UI_SERVICE: &str = "sotp-ui";
/// The platform tenant's secret holding its probes' read token.
pub const PROBE_TOKEN_SECRET: &str = "platform-probe-token";
/// The platform tenant's secret holding the web UI's RUM key.
pub const RUM_KEY_SECRET: &str = "platform-rum-key";

impl PlatformConfig {
    /// The URL the probes request, checked.
    pub fn base_url(&self, listen: SocketAddr) -> Result<url::Url, PlatformError> {
        let text = match &self.base_url {
            Some(url) => url.trim_end_matches('/').to_string(),
            None => format!("http://{}", reachable(listen)),
        };
        let url = url::Url::parse(&text)
            .map_err(|e| PlatformError::BaseUrl(text.clone(), e.to_string()))?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(PlatformError::BaseUrl(
                text,
                "give an http or https URL with a host".into(),
            ));
        }
        if url.path() != "/" || url.query().is_some() {
            return Err(PlatformError::BaseUrl(
                text,
                "give the origin only (SOTP serves its UI and API at its root)".into(),
            ));
        }
        Ok(url)
    }

    pub fn check(&self) -> Result<(), PlatformError> {
        if !(0.0..=1.0).contains(&self.rum_sample_rate) {
            return Err(PlatformError::SampleRate(self.rum_sample_rate));
        }
        if self.probe_interval.0 < Duration::from_secs(1) {
            return Err(PlatformError::Interval);
        }
        Ok(())
    }

    /// The origins the UI's spans may come from: the base URL's, the listen address's, and
    /// `ui_origins`.
    pub fn ui_origins(&self, base: &url::Url, listen: SocketAddr) -> Vec<String> {
        let mut out = vec![
            base.origin().ascii_serialization(),
            format!("http://{}", reachable(listen)),
        ];
        let listen = reachable(listen);
        if listen.ip().is_loopback() {
            out.push(format!("http://localhost:{}", listen.port()));
        }
        out.extend(self.ui_origins.iter().cloned());
        out.sort();
        out.dedup();
        out
    }
}

/// An address a client on this host can connect to for `listen` (the unspecified address
/// stands for every interface; loopback is one of them).
fn reachable(listen: SocketAddr) -> SocketAddr {
    match listen.ip() {
        IpAddr::V4(v4) if v4.is_unspecified() => {
            SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), listen.port())
        }
        IpAddr::V6(v6) if v6.is_unspecified() => {
            SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), listen.port())
        }
        _ => listen,
    }
}

/// The addresses `base` resolves to, with its port.
pub fn resolve(base: &url::Url) -> Result<Vec<SocketAddr>, PlatformError> {
    let text = base.as_str().to_string();
    let port = base
        .port_or_known_default()
        .ok_or_else(|| PlatformError::BaseUrl(text.clone(), "no port".into()))?;
    let host = base.host_str().unwrap_or_default();
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let mut addrs: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .map_err(|e| PlatformError::BaseUrl(text.clone(), format!("cannot resolve: {e}")))?
        .collect();
    addrs.sort();
    addrs.dedup();
    if addrs.is_empty() {
        return Err(PlatformError::BaseUrl(
            text,
            "resolves to no address".into(),
        ));
    }
    Ok(addrs)
}

/// One built-in probe: an `http-check` of one page or endpoint.
#[derive(Clone, Debug, PartialEq)]
pub struct ProbeSpec {
    /// The component's name (`probe-<probe>`).
    pub component: String,
    /// The `probe` label of its samples.
    pub probe: &'static str,
    pub path: &'static str,
    /// Sends the platform's read token.
    pub authenticated: bool,
    /// The rest of `[config]`, as TOML lines.
    pub checks: &'static str,
}

/// SOTP's sign-in page and its key API endpoints. Each is its own component, so a hanging
/// endpoint holds only its own probe.
pub fn probes() -> Vec<ProbeSpec> {
    let spec = |probe, path, authenticated, checks| ProbeSpec {
        component: format!("probe-{probe}"),
        probe,
        path,
        authenticated,
        checks,
    };
    vec![
        spec(
            "sign-in-page",
            "/ui/",
            false,
            "expect_status = [200]\nbody_regex = 'id=\"app\"'\n",
        ),
        spec(
            "ui-session",
            "/ui/session",
            false,
            "expect_status = [200]\njson = [{ path = \"signed_in\", exists = true }]\n",
        ),
        spec("api-ready", "/readyz", false, "expect_status = [200]\n"),
        spec(
            "api-components",
            "/v1/components",
            true,
            "expect_status = [200]\n",
        ),
        spec(
            "api-query",
            "/api/v1/query?query=probe_success",
            true,
            "expect_status = [200]\njson = [{ path = \"status\", equals = \"success\" }]\n",
        ),
    ]
}

/// The manifest of a built-in probe against `base`, reaching `reach`.
pub fn manifest(
    spec: &ProbeSpec,
    base: &url::Url,
    reach: &[SocketAddr],
    interval: Duration,
) -> String {
    let origin = base.origin().ascii_serialization();
    let port = base.port_or_known_default().unwrap_or(80);
    let mut grants = vec![origin.clone()];
    for a in reach {
        let bits = if a.is_ipv4() { 32 } else { 128 };
        let host = match a.ip() {
            IpAddr::V4(v4) => v4.to_string(),
            IpAddr::V6(v6) => format!("[{v6}]"),
        };
        grants.push(format!("{}://{host}/{bits}:{port}", base.scheme()));
    }
    let grants: Vec<String> = grants.iter().map(|g| format!("{g:?}")).collect();
    let url = format!("{}{}", origin, spec.path);
    let secrets = if spec.authenticated {
        format!("secrets = [\"{PROBE_TOKEN_SECRET}\"]\n")
    } else {
        String::new()
    };
    let auth = if spec.authenticated {
        format!("auth_secret = \"{PROBE_TOKEN_SECRET}\"\n")
    } else {
        String::new()
    };
    format!(
        "# Written by SOTP at start ([platform], docs/PLATFORM.md): replaced on the next start.\n\
         name = \"{component}\"\n\
         version = \"{version}\"\n\
         world = \"collector\"\n\
         description = \"SOTP watching itself: {probe}\"\n\n\
         [schedule]\nevery = \"{every}\"\njitter = \"{jitter}\"\n\n\
         [limits]\nmemory = \"32MiB\"\ncpu_ms = 200\nwall_ms = 20000\n\n\
         [grants]\nhttp = [{grants}]\n{secrets}\n\
         [config]\nprobe = \"{probe}\"\nurl = {url:?}\ntimeout_ms = 10000\nslow_ms = 2000\n{auth}{checks}",
        component = spec.component,
        version = env!("CARGO_PKG_VERSION"),
        probe = spec.probe,
        every = HumanDuration(interval),
        jitter = HumanDuration(jitter(interval)),
        grants = grants.join(", "),
        checks = spec.checks,
    )
}

/// Spreads the probes over a tenth of the interval (at most 5 s); the gap between two runs
/// of one probe stays exactly the interval.
fn jitter(interval: Duration) -> Duration {
    (interval / 10).min(Duration::from_secs(5))
}

/// One built-in probe as its last runs left it.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ProbeHealth {
    pub component: String,
    pub probe: String,
    pub target: String,
    pub up: bool,
    pub last_run_ms: i64,
    pub duration_seconds: Option<f64>,
    pub status_code: Option<u16>,
    /// Successful runs over the window, of `runs`.
    pub successes: u64,
    pub runs: u64,
    /// The newest failure logged, when the last run failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// Latency percentiles of one kind of browser span.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct Latency {
    pub count: u64,
    pub p50_ms: Option<f64>,
    pub p95_ms: Option<f64>,
}

impl Latency {
    pub fn of(mut durations_ms: Vec<f64>) -> Latency {
        durations_ms.retain(|d| d.is_finite());
        durations_ms.sort_by(f64::total_cmp);
        let at = |q: f64| {
            let n = durations_ms.len();
            (n > 0).then(|| durations_ms[((q * n as f64).ceil() as usize).clamp(1, n) - 1])
        };
        Latency {
            count: durations_ms.len() as u64,
            p50_ms: at(0.5),
            p95_ms: at(0.95),
        }
    }
}

/// The "platform health" view.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Health {
    pub tenant: String,
    pub base_url: String,
    pub window_ms: i64,
    pub probes: Vec<ProbeHealth>,
    /// Page loads of the web UI (its RUM `documentLoad` spans).
    pub ui_page_loads: Latency,
    /// The web UI's calls to the API, as its browsers timed them (RUM fetch spans).
    pub ui_api_calls: Latency,
    pub rum: bool,
    pub rum_sample_rate: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_base_url_defaults_to_the_listen_address_and_must_be_an_origin() {
        let c = PlatformConfig::default();
        let listen: SocketAddr = "0.0.0.0:8787".parse().unwrap();
        assert_eq!(
            c.base_url(listen).unwrap().as_str(),
            "http://127.0.0.1:8787/"
        );
        let v6: SocketAddr = "[::]:9000".parse().unwrap();
        assert_eq!(c.base_url(v6).unwrap().as_str(), "http://[::1]:9000/");
        let with = |u: &str| PlatformConfig {
            base_url: Some(u.into()),
            ..Default::default()
        };
        assert!(with("https://sotp.example/").base_url(listen).is_ok());
        let e = with("https://sotp.example/ui")
            .base_url(listen)
            .unwrap_err();
        assert!(e.to_string().contains("origin only"), "{e}");
        assert!(with("ftp://x").base_url(listen).is_err());
    }

    #[test]
    fn manifests_grant_exactly_the_base_url_and_its_addresses() {
        let base = url::Url::parse("http://127.0.0.1:8787").unwrap();
        let reach = vec!["127.0.0.1:8787".parse().unwrap()];
        let specs = probes();
        let api = specs.iter().find(|p| p.authenticated).unwrap();
        let text = manifest(api, &base, &reach, Duration::from_secs(30));
        let m = crate::manifest::Manifest::parse(&text, &Default::default()).unwrap();
        assert_eq!(m.name, api.component);
        let grants: Vec<String> = m.grants.http.clone();
        assert_eq!(
            grants,
            ["http://127.0.0.1:8787", "http://127.0.0.1/32:8787"],
            "{text}"
        );
        assert_eq!(m.grants.secrets, [PROBE_TOKEN_SECRET]);
        assert!(text.contains("every = \"30s\"") && text.contains("jitter = \"3s\""));
        let page = specs.iter().find(|p| !p.authenticated).unwrap();
        let text = manifest(page, &base, &reach, Duration::from_secs(30));
        assert!(!text.contains("secret"), "{text}");
        // Every probe's manifest parses, and the config is valid TOML the probe reads.
        for p in &specs {
            let text = manifest(
                p,
                &url::Url::parse("https://sotp.example").unwrap(),
                &[],
                Duration::from_secs(60),
            );
            let m = crate::manifest::Manifest::parse(&text, &Default::default()).unwrap();
            assert_eq!(m.grants.http, ["https://sotp.example"], "{text}");
        }
    }

    #[test]
    fn latency_percentiles_are_nearest_rank() {
        assert_eq!(Latency::of(vec![]), Latency::default());
        let l = Latency::of((1..=100).map(f64::from).collect());
        assert_eq!((l.count, l.p50_ms, l.p95_ms), (100, Some(50.0), Some(95.0)));
        let one = Latency::of(vec![7.0]);
        assert_eq!((one.p50_ms, one.p95_ms), (Some(7.0), Some(7.0)));
    }

    #[test]
    fn the_ui_may_send_spans_from_its_own_origins_only() {
        let c = PlatformConfig {
            ui_origins: vec!["https://sotp.example".into()],
            ..Default::default()
        };
        let listen: SocketAddr = "127.0.0.1:8787".parse().unwrap();
        let base = c.base_url(listen).unwrap();
        assert_eq!(
            c.ui_origins(&base, listen),
            [
                "http://127.0.0.1:8787",
                "http://localhost:8787",
                "https://sotp.example"
            ]
        );
    }
}
