//! `sotp run` configuration: embedded defaults, then an optional TOML file, then environment
//! variables `SOTP_<SECTION>__<KEY>` (e.g. `SOTP_RUNTIME__LIMITS__MAX_UPLOAD=64MiB`), then
//! command-line flags.

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};
use sotp_runtime::RuntimeConfig;
use std::net::SocketAddr;
use std::path::Path;

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub server: ServerConfig,
    pub runtime: RuntimeConfig,
    /// SOTP watching itself: the platform tenant, its probes, the UI's RUM (docs/PLATFORM.md).
    pub platform: sotp_runtime::platform::PlatformConfig,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Address of the HTTP API. Port 0 picks a free port (written to `<data_dir>/sotp.addr`).
    pub listen: SocketAddr,
    /// `human` or `json`.
    pub log_format: LogFormat,
    /// Serve the operator's `/metrics` without a token on this address (a second listener,
    /// for a Prometheus on the operator's network). Unset: `/metrics` on the API's address
    /// answers only the platform admin token, and tenants read their own series at
    /// `/v1/metrics`.
    pub metrics_listen: Option<SocketAddr>,
    /// SOTP's own traces (API requests, component calls, flow exports), exported over OTLP.
    pub traces: OwnTraces,
}

/// `[server.traces]`: where SOTP sends spans about itself (off unless `otlp_endpoint` is set).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OwnTraces {
    /// An OTLP/HTTP traces URL: Jaeger's `http://jaeger:4318/v1/traces`, a Collector, or SOTP's
    /// own `http://127.0.0.1:8787/v1/traces` with a platform tenant's `ingest` token.
    pub otlp_endpoint: Option<String>,
    /// A bearer token sent with each export.
    pub bearer: Option<String>,
    /// The share of traces SOTP starts that are kept (0..=1, default 1); a request carrying a
    /// `traceparent` follows its sampled flag.
    pub sample_ratio: Option<f64>,
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Human,
    Json,
}

pub const DEFAULT_LISTEN: &str = "127.0.0.1:8787";

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: DEFAULT_LISTEN.parse().expect("valid default address"),
            log_format: LogFormat::Human,
            metrics_listen: None,
            traces: OwnTraces::default(),
        }
    }
}

pub fn load(file: Option<&Path>) -> anyhow::Result<Config> {
    let mut figment = Figment::from(Serialized::defaults(Config::default()));
    if let Some(path) = file {
        if !path.exists() {
            anyhow::bail!("config file {} does not exist", path.display());
        }
        figment = figment.merge(Toml::file(path));
    }
    // Only double-underscore names are config keys; SOTP_TOKEN, SOTP_SERVER etc. belong to
    // the client commands.
    figment = figment.merge(
        Env::prefixed("SOTP_")
            .filter(|key| key.as_str().contains("__"))
            .split("__"),
    );
    figment
        .extract()
        .map_err(|e| anyhow::anyhow!("configuration: {e}"))
}
