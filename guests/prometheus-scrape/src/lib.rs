//! `prometheus-scrape`: Prometheus scrapes as a collector, on the component's schedule.
//!
//! Targets, found again on every tick (so targets appear and disappear without a restart):
//! - `targets`: static URLs;
//! - `inventory = { tag | role | site, scheme = "http", port = 9100, path = "/metrics" }`:
//!   the inventory's devices (those the manifest's `grants.devices` covers) with that tag,
//!   role or site, labelled `__meta_sotp_device`, `__meta_sotp_site`, `__meta_sotp_role`;
//! - `file_sd`: file names or `*.json` in the tenant's file_sd directory (mounted read-only
//!   at `/file_sd` with `grants.file_sd = true`), Prometheus's `[{targets, labels}]` JSON;
//! - `http_sd`: URLs answering the same JSON (Prometheus's http_sd), over `http`;
//! - `cidr_sd = { cidrs = ["10.0.0.0/24"], port = 9100 }`: every address of granted IPv4
//!   ranges probed for the port, a few per tick (`cidr.rs`), labelled `__meta_sotp_cidr`.
//!
//! Each target starts with `__address__`, `__scheme__`, `__metrics_path__`, `job` and its
//! discovered labels, goes through `relabel_configs` (Prometheus semantics: `replace`,
//! `keep`, `drop`, `labelmap`, `labeldrop`, `labelkeep`; regexes anchored), loses its `__`
//! labels, gets `instance` = `__address__` unless set, and is scraped; its samples go through
//! `metric_relabel_configs` (with `__name__`). Exposition labels that clash with target
//! labels are kept as `exported_<name>` (Prometheus's `honor_labels = false`).
//!
//! Per target it also emits `up` (1 scraped, 0 not), `scrape_duration_seconds`,
//! `scrape_samples_scraped`, and a log line per failure naming the target and the reason.
//! Samples are stamped with the scrape's start unless the exposition gives a time.
//! Counters stay counters: rates are for query time.
//!
//! A windows_exporter's families are also emitted under node_exporter's names where they mean
//! the same (`windows.rs` has the table), so one dashboard shows Linux and Windows hosts;
//! `windows_node_names = false` turns that off.
//!
//! Other keys: `job` ("prometheus"), `scrape_timeout_ms` (10000), `sample_limit` (100000),
//! `max_bytes` (8 MiB), `bearer_secret`.

mod cidr;
mod windows;

use serde::Deserialize;
use sotp_guest::host::scrape;
use sotp_guest::{Collector, Config, Label, LogRecord, Sample, Tick, describe};
use std::collections::BTreeMap;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    #[serde(default = "default_job")]
    job: String,
    #[serde(default)]
    targets: Vec<String>,
    inventory: Option<InventorySd>,
    #[serde(default)]
    file_sd: Vec<String>,
    #[serde(default)]
    http_sd: Vec<String>,
    cidr_sd: Option<cidr::CidrSd>,
    #[serde(default)]
    relabel_configs: Vec<RelabelConfig>,
    #[serde(default)]
    metric_relabel_configs: Vec<RelabelConfig>,
    #[serde(default)]
    scrape_timeout_ms: u32,
    #[serde(default)]
    sample_limit: u32,
    #[serde(default)]
    max_bytes: u32,
    bearer_secret: Option<String>,
    #[serde(default = "yes")]
    windows_node_names: bool,
}

fn yes() -> bool {
    true
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InventorySd {
    tag: Option<String>,
    role: Option<String>,
    site: Option<String>,
    #[serde(default = "default_scheme")]
    scheme: String,
    port: u16,
    #[serde(default = "default_path")]
    path: String,
}

#[derive(Deserialize, Clone)]
#[serde(deny_unknown_fields)]
struct RelabelConfig {
    #[serde(default)]
    source_labels: Vec<String>,
    #[serde(default = "default_separator")]
    separator: String,
    #[serde(default = "default_regex")]
    regex: String,
    target_label: Option<String>,
    #[serde(default = "default_replacement")]
    replacement: String,
    #[serde(default = "default_action")]
    action: String,
}

fn default_job() -> String {
    "prometheus".into()
}
fn default_scheme() -> String {
    "http".into()
}
fn default_path() -> String {
    "/metrics".into()
}
fn default_separator() -> String {
    ";".into()
}
fn default_regex() -> String {
    "(.*)".into()
}
fn default_replacement() -> String {
    "$1".into()
}
fn default_action() -> String {
    "replace".into()
}

/// A relabel rule with its regex compiled (anchored, as Prometheus's are).
struct Rule {
    config: RelabelConfig,
    regex: regex_lite::Regex,
}

impl Rule {
    fn compile(c: &RelabelConfig, at: &str) -> Result<Rule, String> {
        let regex = regex_lite::Regex::new(&format!("^(?:{})$", c.regex))
            .map_err(|e| format!("{at}: regex `{}`: {e}", c.regex))?;
        match c.action.as_str() {
            "replace" if c.target_label.is_none() => {
                return Err(format!("{at}: `replace` needs a target_label"));
            }
            "replace" | "keep" | "drop" | "labelmap" | "labeldrop" | "labelkeep" => {}
            other => {
                return Err(format!(
                    "{at}: action `{other}` (use replace, keep, drop, labelmap, labeldrop, labelkeep)"
                ));
            }
        }
        Ok(Rule {
            config: c.clone(),
            regex,
        })
    }

    /// Apply to `labels`; `false`: drop the target (or sample).
    fn apply(&self, labels: &mut BTreeMap<String, String>) -> bool {
        let c = &self.config;
        let joined = || {
            c.source_labels
                .iter()
                .map(|l| labels.get(l).map(String::as_str).unwrap_or(""))
                .collect::<Vec<_>>()
                .join(&c.separator)
        };
        match c.action.as_str() {
            "keep" => self.regex.is_match(&joined()),
            "drop" => !self.regex.is_match(&joined()),
            "replace" => {
                let value = joined();
                if let Some(caps) = self.regex.captures(&value) {
                    let mut out = String::new();
                    caps.expand(&c.replacement, &mut out);
                    let target = c.target_label.clone().unwrap_or_default();
                    if out.is_empty() {
                        labels.remove(&target);
                    } else {
                        labels.insert(target, out);
                    }
                }
                true
            }
            "labelmap" => {
                let mapped: Vec<(String, String)> = labels
                    .iter()
                    .filter_map(|(k, v)| {
                        let caps = self.regex.captures(k)?;
                        let mut name = String::new();
                        caps.expand(&c.replacement, &mut name);
                        Some((name, v.clone()))
                    })
                    .collect();
                labels.extend(mapped);
                true
            }
            "labeldrop" => {
                labels.retain(|k, _| !self.regex.is_match(k));
                true
            }
            "labelkeep" => {
                labels.retain(|k, _| self.regex.is_match(k));
                true
            }
            _ => true,
        }
    }
}

struct Scraper {
    settings: Settings,
    relabel: Vec<Rule>,
    metric_relabel: Vec<Rule>,
    /// The `cidr_sd` scan, carried across ticks.
    scan: Option<cidr::Scan>,
}

#[derive(Deserialize)]
struct SdGroup {
    targets: Vec<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

impl Collector for Scraper {
    fn init(config: &Config) -> Result<Self, String> {
        let settings: Settings =
            serde_json::from_value(config.0.clone()).map_err(|e| format!("config: {e}"))?;
        let compile = |rules: &[RelabelConfig], key: &str| {
            rules
                .iter()
                .enumerate()
                .map(|(i, c)| Rule::compile(c, &format!("config.{key}[{i}]")))
                .collect::<Result<Vec<_>, _>>()
        };
        let relabel = compile(&settings.relabel_configs, "relabel_configs")?;
        let metric_relabel = compile(&settings.metric_relabel_configs, "metric_relabel_configs")?;
        let mut settings = settings;
        let scan = settings.cidr_sd.take().map(cidr::Scan::new).transpose()?;
        Ok(Scraper {
            settings,
            relabel,
            metric_relabel,
            scan,
        })
    }

    fn on_tick(&mut self, _tick: Tick) -> Result<(), String> {
        let mut logs = Vec::new();
        let scanned = match &mut self.scan {
            Some(scan) => scan.step(&mut logs),
            None => Vec::new(),
        };
        let targets = self.discover(scanned, &mut logs);
        let mut out: Vec<Sample> = Vec::new();
        for labels in targets {
            self.scrape_one(labels, &mut out, &mut logs);
        }
        for chunk in out.chunks(20_000) {
            sotp_guest::host::emit::samples(chunk).map_err(|e| describe(&e))?;
        }
        if !logs.is_empty() {
            sotp_guest::host::emit::logs(&logs).map_err(|e| describe(&e))?;
        }
        Ok(())
    }
}

impl Scraper {
    /// Every target's labels after relabeling (duplicates by address and path once).
    fn discover(
        &self,
        scanned: Vec<(String, String, String, BTreeMap<String, String>)>,
        logs: &mut Vec<LogRecord>,
    ) -> Vec<BTreeMap<String, String>> {
        let s = &self.settings;
        let mut found: Vec<BTreeMap<String, String>> = Vec::new();
        for (scheme, address, path, meta) in scanned {
            found.push(self.target(&scheme, &address, &path, meta));
        }
        for url in &s.targets {
            match split_url(url) {
                Some((scheme, address, path)) => {
                    found.push(self.target(&scheme, &address, &path, BTreeMap::new()))
                }
                None => logs.push(log(format!("target `{url}` is not an http(s) URL"), url)),
            }
        }
        if let Some(inv) = &s.inventory {
            for d in sotp_guest::host::inventory::devices() {
                let wanted = inv.tag.as_ref().is_none_or(|t| d.tags.contains(t))
                    && inv.role.as_ref().is_none_or(|r| d.role.as_ref() == Some(r))
                    && inv.site.as_ref().is_none_or(|x| d.site.as_ref() == Some(x));
                if !wanted {
                    continue;
                }
                let host = if d.address.contains(':') {
                    format!("[{}]", d.address)
                } else {
                    d.address.clone()
                };
                let mut meta = BTreeMap::new();
                meta.insert("__meta_sotp_device".to_string(), d.name.clone());
                meta.insert(
                    "__meta_sotp_site".into(),
                    d.site.clone().unwrap_or_default(),
                );
                meta.insert(
                    "__meta_sotp_role".into(),
                    d.role.clone().unwrap_or_default(),
                );
                found.push(self.target(
                    &inv.scheme,
                    &format!("{host}:{}", inv.port),
                    &inv.path,
                    meta,
                ));
            }
        }
        for pattern in &s.file_sd {
            for (file, text) in file_sd_documents(pattern, logs) {
                self.sd_groups(&text, &file, &mut found, logs);
            }
        }
        for url in &s.http_sd {
            match sotp_guest::http::send(&sotp_guest::http::Request::get(url)) {
                Ok(r) if r.status == 200 => self.sd_groups(&r.text(), url, &mut found, logs),
                Ok(r) => logs.push(log(format!("http_sd {url}: HTTP {}", r.status), url)),
                Err(f) => logs.push(log(format!("http_sd {url}: {}", describe(&f.error)), url)),
            }
        }
        let mut seen = std::collections::BTreeSet::new();
        found
            .into_iter()
            .filter_map(|mut labels| {
                self.relabel
                    .iter()
                    .all(|r| r.apply(&mut labels))
                    .then_some(labels)
            })
            .filter(|l| {
                seen.insert((
                    l["__scheme__"].clone(),
                    l["__address__"].clone(),
                    l["__metrics_path__"].clone(),
                ))
            })
            .collect()
    }

    fn sd_groups(
        &self,
        text: &str,
        source: &str,
        found: &mut Vec<BTreeMap<String, String>>,
        logs: &mut Vec<LogRecord>,
    ) {
        match serde_json::from_str::<Vec<SdGroup>>(text) {
            Ok(groups) => {
                for g in groups {
                    for address in g.targets {
                        let mut labels = g.labels.clone();
                        let scheme = labels.remove("__scheme__").unwrap_or_else(|| "http".into());
                        let path = labels
                            .remove("__metrics_path__")
                            .unwrap_or_else(|| "/metrics".into());
                        found.push(self.target(&scheme, &address, &path, labels));
                    }
                }
            }
            Err(e) => logs.push(log(
                format!("{source}: not a target group list: {e}"),
                source,
            )),
        }
    }

    fn target(
        &self,
        scheme: &str,
        address: &str,
        path: &str,
        mut labels: BTreeMap<String, String>,
    ) -> BTreeMap<String, String> {
        labels.insert("__address__".into(), address.into());
        labels.insert("__scheme__".into(), scheme.into());
        labels.insert("__metrics_path__".into(), path.into());
        labels
            .entry("job".into())
            .or_insert_with(|| self.settings.job.clone());
        labels
    }

    fn scrape_one(
        &self,
        mut target: BTreeMap<String, String>,
        out: &mut Vec<Sample>,
        logs: &mut Vec<LogRecord>,
    ) {
        let s = &self.settings;
        let url = format!(
            "{}://{}{}",
            target["__scheme__"], target["__address__"], target["__metrics_path__"]
        );
        let address = target["__address__"].clone();
        target.retain(|k, _| !k.starts_with("__"));
        target.entry("instance".into()).or_insert(address);
        let started = now_ms();
        let result = scrape::scrape(&scrape::Request {
            url: url.clone(),
            timeout_ms: s.scrape_timeout_ms,
            max_bytes: s.max_bytes,
            max_samples: s.sample_limit,
            bearer_secret: s.bearer_secret.clone(),
            ca_secret: None,
            insecure_skip_verify: false,
        });
        let target_labels: Vec<Label> = target
            .iter()
            .map(|(k, v)| Label {
                name: k.clone(),
                value: v.clone(),
            })
            .collect();
        let meta = |metric: &str, value: f64| Sample {
            metric: metric.into(),
            labels: target_labels.clone(),
            value,
            timestamp_ms: Some(started),
        };
        let (up, duration_ms, scraped) = match result {
            Ok(r) => {
                let n = r.samples.len();
                let mut samples = r.samples;
                if s.windows_node_names && samples.iter().any(|x| x.metric.starts_with("windows_"))
                {
                    let extra = windows::node_equivalents(&samples);
                    samples.extend(extra);
                }
                for sample in samples {
                    if let Some(sample) = self.relabel_sample(sample, &target, started) {
                        out.push(sample);
                    }
                }
                (1.0, r.timings.total_ms, n)
            }
            Err(f) => {
                logs.push(log(
                    format!(
                        "scrape of {url} failed ({}): {}",
                        f.phase,
                        describe(&f.error)
                    ),
                    &target["instance"],
                ));
                (0.0, f.timings.total_ms, 0)
            }
        };
        out.push(meta("up", up));
        out.push(meta("scrape_duration_seconds", duration_ms / 1000.0));
        out.push(meta("scrape_samples_scraped", scraped as f64));
    }

    /// The exposition's sample under the target's labels, through `metric_relabel_configs`.
    fn relabel_sample(
        &self,
        sample: Sample,
        target: &BTreeMap<String, String>,
        started: i64,
    ) -> Option<Sample> {
        if self.metric_relabel.is_empty() {
            return Some(with_target_labels(sample, target, started));
        }
        let mut labels: BTreeMap<String, String> = BTreeMap::new();
        for l in sample.labels {
            let name = if target.contains_key(&l.name) {
                format!("exported_{}", l.name)
            } else {
                l.name
            };
            labels.insert(name, l.value);
        }
        for (k, v) in target {
            labels.insert(k.clone(), v.clone());
        }
        let mut metric = sample.metric;
        if !self.metric_relabel.is_empty() {
            labels.insert("__name__".into(), metric);
            if !self.metric_relabel.iter().all(|r| r.apply(&mut labels)) {
                return None;
            }
            metric = labels.remove("__name__")?;
            labels.retain(|k, _| !k.starts_with("__"));
        }
        Some(Sample {
            metric,
            labels: labels
                .into_iter()
                .filter(|(_, v)| !v.is_empty())
                .map(|(name, value)| Label { name, value })
                .collect(),
            value: sample.value,
            timestamp_ms: Some(sample.timestamp_ms.unwrap_or(started)),
        })
    }
}

/// A sample with the target's labels added, clashing exposition labels renamed
/// `exported_<name>` and empty ones dropped — what `relabel_sample` does without metric
/// relabeling, reusing the sample's own strings (the host sorts labels).
fn with_target_labels(sample: Sample, target: &BTreeMap<String, String>, started: i64) -> Sample {
    let mut labels = sample.labels;
    labels.retain(|l| !l.value.is_empty());
    for l in &mut labels {
        if target.contains_key(&l.name) {
            l.name.insert_str(0, "exported_");
        }
    }
    labels.extend(
        target
            .iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, v)| Label {
                name: k.clone(),
                value: v.clone(),
            }),
    );
    Sample {
        metric: sample.metric,
        labels,
        value: sample.value,
        timestamp_ms: Some(sample.timestamp_ms.unwrap_or(started)),
    }
}

/// `scheme://host:port/path` → its parts.
fn split_url(url: &str) -> Option<(String, String, String)> {
    let (scheme, rest) = url.split_once("://")?;
    if scheme != "http" && scheme != "https" {
        return None;
    }
    let (address, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/metrics"),
    };
    Some((scheme.into(), address.into(), path.into()))
}

/// The file_sd documents a pattern names under `/file_sd` (`*.json`, or a file name).
fn file_sd_documents(pattern: &str, logs: &mut Vec<LogRecord>) -> Vec<(String, String)> {
    let dir = std::path::Path::new("/file_sd");
    let names: Vec<String> = match pattern.strip_prefix('*') {
        Some(suffix) => match std::fs::read_dir(dir) {
            Ok(entries) => entries
                .flatten()
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|n| n.ends_with(suffix))
                .collect(),
            Err(e) => {
                logs.push(log(
                    format!("file_sd: /file_sd: {e} (grants.file_sd?)"),
                    pattern,
                ));
                Vec::new()
            }
        },
        None => vec![pattern.to_string()],
    };
    let mut out = Vec::new();
    for name in names {
        match std::fs::read_to_string(dir.join(&name)) {
            Ok(text) => out.push((name, text)),
            Err(e) => logs.push(log(format!("file_sd {name}: {e}"), &name)),
        }
    }
    out.sort();
    out
}

fn log(message: String, target: &str) -> LogRecord {
    LogRecord {
        level: sotp_guest::Level::Warn,
        message,
        labels: vec![Label {
            name: "target".into(),
            value: target.into(),
        }],
        timestamp_ms: None,
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

sotp_guest::collector!(Scraper);

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(toml: serde_json::Value) -> Rule {
        let c: RelabelConfig = serde_json::from_value(toml).unwrap();
        Rule::compile(&c, "t").unwrap()
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn target_labels_win_and_clashes_are_exported() {
        let sample = Sample {
            metric: "m".into(),
            labels: ["job=x", "a=1", "e="]
                .iter()
                .map(|kv| {
                    let (name, value) = kv.split_once('=').unwrap();
                    Label {
                        name: name.into(),
                        value: value.into(),
                    }
                })
                .collect(),
            value: 1.0,
            timestamp_ms: None,
        };
        let target = labels(&[("instance", "h:9100"), ("job", "node")]);
        let out = with_target_labels(sample, &target, 7);
        let mut got: Vec<String> = out
            .labels
            .iter()
            .map(|l| format!("{}={}", l.name, l.value))
            .collect();
        got.sort();
        assert_eq!(
            got,
            ["a=1", "exported_job=x", "instance=h:9100", "job=node"]
        );
        assert_eq!(out.timestamp_ms, Some(7));
    }

    #[test]
    fn relabeling_follows_prometheus() {
        let mut l = labels(&[
            ("__address__", "10.0.0.1:9100"),
            ("__meta_sotp_device", "web1"),
        ]);
        // replace with a capture group, anchored regex
        let r = rule(
            serde_json::json!({"source_labels": ["__address__"], "regex": "([^:]+):.*", "target_label": "host"}),
        );
        assert!(r.apply(&mut l));
        assert_eq!(l["host"], "10.0.0.1");
        // an anchored regex that matches only part does not apply
        let r = rule(
            serde_json::json!({"source_labels": ["__address__"], "regex": "10", "target_label": "x"}),
        );
        r.apply(&mut l);
        assert!(!l.contains_key("x"));
        // labelmap
        let r = rule(serde_json::json!({"regex": "__meta_sotp_(.+)", "action": "labelmap"}));
        r.apply(&mut l);
        assert_eq!(l["device"], "web1");
        // keep / drop on joined source labels
        let keep = rule(
            serde_json::json!({"source_labels": ["device", "host"], "regex": "web.*;10\\..*", "action": "keep"}),
        );
        assert!(keep.apply(&mut l.clone()));
        let drop = rule(
            serde_json::json!({"source_labels": ["device"], "regex": "web1", "action": "drop"}),
        );
        assert!(!drop.apply(&mut l.clone()));
        // labeldrop
        rule(serde_json::json!({"regex": "__meta.*", "action": "labeldrop"})).apply(&mut l);
        assert!(!l.contains_key("__meta_sotp_device"));
        // an empty replacement removes the label
        let r = rule(
            serde_json::json!({"source_labels": ["nothing"], "regex": "", "target_label": "host", "replacement": ""}),
        );
        r.apply(&mut l);
        assert!(!l.contains_key("host"));
        // bad configs are refused
        for bad in [
            serde_json::json!({"regex": "(", "target_label": "a"}),
            serde_json::json!({"action": "hashmod"}),
            serde_json::json!({"action": "replace"}),
        ] {
            let c: RelabelConfig = serde_json::from_value(bad).unwrap();
            assert!(Rule::compile(&c, "t").is_err());
        }
    }

    #[test]
    fn urls_split_into_scheme_address_and_path() {
        assert_eq!(
            split_url("http://10.0.0.1:9100/metrics"),
            Some(("http".into(), "10.0.0.1:9100".into(), "/metrics".into()))
        );
        assert_eq!(split_url("https://h:1").unwrap().2, "/metrics");
        assert!(split_url("ftp://h/x").is_none());
    }
}
