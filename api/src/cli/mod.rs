//! Client commands: thin wrappers over the HTTP API, printing tables for people and JSON
//! (`--json`) for scripts.

pub mod alerts;
pub mod backup;
pub mod compliance;
pub mod component;
pub mod device;
pub mod flows;
pub mod incidents;
pub mod mqtt;
pub mod platform;
pub mod query;
pub mod run;
pub mod scrape;
pub mod secret;
pub mod tenant;
pub mod traces;

use anyhow::{Context, anyhow};
use clap::Args;
use serde_json::Value;
use std::path::PathBuf;

#[derive(Args, Clone, Debug)]
pub struct ClientArgs {
    /// Base URL of the sotp server.
    #[arg(
        long,
        env = "SOTP_SERVER",
        default_value = "http://127.0.0.1:8787",
        global = true
    )]
    pub server: String,
    /// API token. Without one, the admin token in the data dir is used if readable.
    #[arg(long, env = "SOTP_TOKEN", hide_env_values = true, global = true)]
    pub token: Option<String>,
    /// Data dir of a local server, to find its admin.token when no token is given.
    #[arg(long, env = "SOTP_DATA_DIR", global = true)]
    pub data_dir: Option<PathBuf>,
    /// Print the raw JSON response.
    #[arg(long, global = true)]
    pub json: bool,
}

pub struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
    pub json: bool,
}

impl Client {
    pub fn new(args: &ClientArgs) -> anyhow::Result<Client> {
        let token = match &args.token {
            Some(t) => t.clone(),
            None => {
                let dir = args
                    .data_dir
                    .clone()
                    .unwrap_or_else(sotp_runtime::config::default_data_dir);
                let path = dir.join("admin.token");
                std::fs::read_to_string(&path)
                    .map(|t| t.trim().to_string())
                    .map_err(|_| {
                        anyhow!(
                            "no token: pass --token, set SOTP_TOKEN, or run where {} is readable",
                            path.display()
                        )
                    })?
            }
        };
        Ok(Client {
            http: reqwest::Client::new(),
            base: args.server.trim_end_matches('/').to_string(),
            token,
            json: args.json,
        })
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}/v1{path}", self.base)
    }

    pub async fn send(&self, req: reqwest::RequestBuilder) -> anyhow::Result<Value> {
        let resp = req
            .bearer_auth(&self.token)
            .send()
            .await
            .with_context(|| format!("cannot reach the sotp server at {}", self.base))?;
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        let body: Value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        if status.is_success() {
            Ok(body)
        } else {
            let code = body["error"].as_str().unwrap_or("error");
            let detail = body["detail"]
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| body.to_string());
            Err(anyhow!("{code} ({}): {detail}", status.as_u16()))
        }
    }

    pub async fn get(&self, path: &str) -> anyhow::Result<Value> {
        self.send(self.http.get(self.url(path))).await
    }

    /// GET, with a 404 as `None`.
    pub async fn get_optional(&self, path: &str) -> anyhow::Result<Option<Value>> {
        let resp = self
            .http
            .get(self.url(path))
            .bearer_auth(&self.token)
            .send()
            .await
            .with_context(|| format!("cannot reach the sotp server at {}", self.base))?;
        if resp.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        self.send(self.http.get(self.url(path))).await.map(Some)
    }

    pub async fn post(&self, path: &str, body: Value) -> anyhow::Result<Value> {
        self.send(self.http.post(self.url(path)).json(&body)).await
    }

    pub async fn put(&self, path: &str, body: Value) -> anyhow::Result<Value> {
        self.send(self.http.put(self.url(path)).json(&body)).await
    }

    pub async fn delete(&self, path: &str) -> anyhow::Result<Value> {
        self.send(self.http.delete(self.url(path))).await
    }

    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// Print JSON if asked to, else run the human printer.
    pub fn print(&self, value: &Value, human: impl FnOnce(&Value)) {
        if self.json {
            println!(
                "{}",
                serde_json::to_string_pretty(value).unwrap_or_default()
            );
        } else {
            human(value)
        }
    }
}

/// Format ms since the epoch as RFC 3339 (seconds).
pub fn time(ms: &Value) -> String {
    match ms.as_i64() {
        Some(ms) if ms > 0 => humantime::format_rfc3339_seconds(
            std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms as u64),
        )
        .to_string(),
        _ => "-".to_string(),
    }
}

pub fn s(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// `k=v&...`, URL-encoded.
pub fn query_string(params: &[(&str, String)]) -> String {
    form_urlencoded::Serializer::new(String::new())
        .extend_pairs(params.iter().map(|(k, v)| (*k, v.as_str())))
        .finish()
}
