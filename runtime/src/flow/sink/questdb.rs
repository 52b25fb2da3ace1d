//! QuestDB sink: raw flows over ILP/HTTP with `questdb-rs`. HTTP rather than TCP because
//! ILP/HTTP answers every flush (QuestDB has committed the rows when it says 2xx), which is
//! what lets the runner move its cursor; ILP/TCP loses errors silently.
//!
//! One row per flow in `table` (default `flows`): designated timestamp `ts` = flow end, `start`
//! = flow start; symbols `tenant`, `exporter`, `protocol`, `app`, `direction`,
//! `sampling_source` (low cardinality); addresses as VARCHAR; every number a LONG; `seq` is
//! SOTP's sequence number. Before the first write the sink creates the table (over `/exec`)
//! as a WAL table with `DEDUP UPSERT KEYS(ts, seq)`, so a batch replayed after a lost
//! acknowledgement replaces its rows instead of adding them twice. `dedup = false` leaves
//! table creation to ILP's auto-create (no dedup).

use super::{ExportRow, FlowSink, SinkError};
use questdb::ingress::{Buffer, Sender, TimestampMicros};
use questdb::{Error, ErrorCode};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QuestDbConfig {
    /// A questdb-rs client configuration string, e.g. `"http::addr=127.0.0.1:9000;"`
    /// (`https::` with `username=...;password=...;` or `token=...;` for an authenticated
    /// server). Must be `http` or `https`: only those acknowledge writes. Unless it sets
    /// `retry_timeout`, the client's own retries are off (`retry_timeout=0`): the sink
    /// retries with backoff itself, from the store.
    pub conf: String,
    pub table: String,
    /// Create the table with DEDUP UPSERT KEYS(ts, seq) before the first write.
    pub dedup: bool,
    /// Rows per ILP request (one transaction in QuestDB).
    pub batch_rows: usize,
}

impl Default for QuestDbConfig {
    fn default() -> Self {
        QuestDbConfig {
            conf: String::new(),
            table: "flows".into(),
            dedup: true,
            batch_rows: 20_000,
        }
    }
}

pub struct QuestDbSink {
    config: QuestDbConfig,
    conf: String,
    /// `http://host:port` (or https) for `/exec`, with basic auth if configured.
    exec_base: String,
    auth: Option<String>,
    sender: Option<Sender>,
    buffer: Option<Buffer>,
    table_ready: bool,
}

impl QuestDbSink {
    pub fn new(config: QuestDbConfig) -> Result<Self, String> {
        let parsed = questdb_confstr::parse_conf_str(&config.conf)
            .map_err(|e| format!("conf {:?}: {e}", config.conf))?;
        let scheme = match parsed.service() {
            "http" => "http",
            "https" => "https",
            other => {
                return Err(format!(
                    "conf {:?}: transport {other:?} does not acknowledge writes; use http:: or https::",
                    config.conf
                ));
            }
        };
        let addr = parsed
            .get("addr")
            .ok_or_else(|| format!("conf {:?}: no addr=host:port", config.conf))?;
        let auth = match (
            parsed.get("username"),
            parsed.get("password"),
            parsed.get("token"),
        ) {
            (Some(u), Some(p), _) => Some(basic_auth(u, p)),
            (_, _, Some(t)) => Some(format!("Bearer {t}")),
            _ => None,
        };
        let mut conf = config.conf.trim().to_string();
        if !conf.ends_with(';') {
            conf.push(';');
        }
        if parsed.get("retry_timeout").is_none() {
            conf.push_str("retry_timeout=0;");
        }
        if config.table.is_empty()
            || !config
                .table
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            return Err(format!(
                "table {:?}: use letters, digits and underscores",
                config.table
            ));
        }
        Ok(QuestDbSink {
            exec_base: format!("{scheme}://{addr}"),
            auth,
            conf,
            config,
            sender: None,
            buffer: None,
            table_ready: false,
        })
    }

    fn create_table(&self) -> Result<(), SinkError> {
        let ddl = create_table_sql(&self.config.table);
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(std::time::Duration::from_secs(10)))
            .http_status_as_error(false)
            .build()
            .into();
        let mut request = agent
            .get(format!("{}/exec", self.exec_base))
            .query("query", &ddl);
        if let Some(auth) = &self.auth {
            request = request.header("Authorization", auth);
        }
        let mut response = request
            .call()
            .map_err(|e| SinkError::Retry(format!("creating table {}: {e}", self.config.table)))?;
        let status = response.status().as_u16();
        if (200..300).contains(&status) {
            return Ok(());
        }
        let body = response.body_mut().read_to_string().unwrap_or_default();
        let reason = format!(
            "creating table {}: HTTP {status}: {body}",
            self.config.table
        );
        // A 400 to our own DDL means the table exists with another layout: write anyway.
        if status == 400 {
            tracing::warn!(%reason, "QuestDB refused the table DDL; writing to the existing table");
            return Ok(());
        }
        Err(SinkError::Retry(reason))
    }
}

impl FlowSink for QuestDbSink {
    fn send(&mut self, rows: &[ExportRow]) -> Result<(), SinkError> {
        if !self.table_ready && self.config.dedup {
            self.create_table()?;
        }
        self.table_ready = true;
        if self.sender.is_none() {
            let sender = Sender::from_conf(&self.conf).map_err(classify)?;
            self.buffer = Some(sender.new_buffer());
            self.sender = Some(sender);
        }
        let (Some(sender), Some(buffer)) = (self.sender.as_mut(), self.buffer.as_mut()) else {
            unreachable!("sender and buffer are set together");
        };
        buffer.clear();
        for row in rows {
            write_row(buffer, &self.config.table, row)
                .map_err(|e| SinkError::Rejected(format!("row seq {}: {e}", row.seq)))?;
        }
        match sender.flush(buffer) {
            Ok(()) => Ok(()),
            Err(e) => {
                if sender.must_close() {
                    self.sender = None;
                    self.buffer = None;
                }
                Err(classify(e))
            }
        }
    }
}

fn write_row(buffer: &mut Buffer, table: &str, r: &ExportRow) -> questdb::Result<()> {
    let long = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    buffer
        .table(table)?
        .symbol("tenant", &r.tenant)?
        .symbol("exporter", &r.exporter)?
        .symbol("protocol", &r.protocol)?
        .symbol("app", &r.app)?
        .symbol("direction", &r.direction)?
        .symbol("sampling_source", &r.sampling_source)?
        .column_i64("seq", long(r.seq))?
        .column_ts(
            "start",
            TimestampMicros::new(r.start_ms.saturating_mul(1000)),
        )?
        .column_str("src_addr", &r.src_addr)?
        .column_str("dst_addr", &r.dst_addr)?
        .column_i64("src_port", r.src_port.into())?
        .column_i64("dst_port", r.dst_port.into())?
        .column_i64("ip_protocol", r.ip_protocol.into())?
        .column_i64("tcp_flags", r.tcp_flags.into())?
        .column_i64("tos", r.tos.into())?
        .column_i64("bytes", long(r.bytes))?
        .column_i64("packets", long(r.packets))?
        .column_i64("bytes_scaled", long(r.bytes_scaled))?
        .column_i64("packets_scaled", long(r.packets_scaled))?
        .column_i64("sampling_rate", r.sampling_rate.into())?
        .column_i64("domain", r.domain.into())?
        .column_i64("in_if", r.in_if.into())?
        .column_i64("out_if", r.out_if.into())?
        .column_i64("src_as", r.src_as.into())?
        .column_i64("dst_as", r.dst_as.into())?
        .column_i64("vlan", r.vlan.into())?
        .at(TimestampMicros::new(r.end_ms.saturating_mul(1000)))
}

/// The table as ILP would create it, plus WAL + dedup on (ts, seq).
fn create_table_sql(table: &str) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {table} (ts TIMESTAMP, seq LONG, tenant SYMBOL, \
         exporter SYMBOL, protocol SYMBOL, app SYMBOL, direction SYMBOL, sampling_source SYMBOL, \
         start TIMESTAMP, src_addr VARCHAR, dst_addr VARCHAR, src_port LONG, dst_port LONG, \
         ip_protocol LONG, tcp_flags LONG, tos LONG, bytes LONG, packets LONG, bytes_scaled LONG, \
         packets_scaled LONG, sampling_rate LONG, domain LONG, in_if LONG, out_if LONG, \
         src_as LONG, dst_as LONG, vlan LONG) TIMESTAMP(ts) PARTITION BY DAY WAL \
         DEDUP UPSERT KEYS(ts, seq)"
    )
}

/// QuestDB answers bad input with HTTP 400 and a JSON body whose `code` is `invalid`; the
/// client folds 4xx and 5xx into one error code, so the body decides.
fn classify(e: Error) -> SinkError {
    let msg = e.msg().to_string();
    match e.code() {
        ErrorCode::ServerFlushError if msg.contains("code: invalid") => SinkError::Rejected(msg),
        ErrorCode::InvalidName | ErrorCode::InvalidTimestamp | ErrorCode::InvalidUtf8 => {
            SinkError::Rejected(msg)
        }
        _ => SinkError::Retry(msg),
    }
}

fn basic_auth(user: &str, password: &str) -> String {
    use base64::Engine as _;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conf_must_be_http_and_name_a_table() {
        let ok = |conf: &str| {
            QuestDbSink::new(QuestDbConfig {
                conf: conf.into(),
                ..Default::default()
            })
        };
        let s = ok("http::addr=127.0.0.1:9000").unwrap();
        assert_eq!(s.conf, "http::addr=127.0.0.1:9000;retry_timeout=0;");
        assert_eq!(s.exec_base, "http://127.0.0.1:9000");
        let s = ok("http::addr=127.0.0.1:9000;retry_timeout=5000;").unwrap();
        assert_eq!(s.conf, "http::addr=127.0.0.1:9000;retry_timeout=5000;");
        assert!(
            ok("tcp::addr=127.0.0.1:9009;")
                .err()
                .unwrap()
                .contains("acknowledge")
        );
        assert!(ok("http::").err().unwrap().contains("addr"));
        let bad_table = QuestDbSink::new(QuestDbConfig {
            conf: "http::addr=127.0.0.1:9000;".into(),
            table: "flows; drop table x".into(),
            ..Default::default()
        });
        assert!(bad_table.is_err());
    }
}
