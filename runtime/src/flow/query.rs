//! Flow queries: top-N groups over a window, and rates per group per time bucket.
//!
//! Answered from the per-minute rollups when every grouping and filter is one the rollups
//! keep (tenant, exporter, addresses, IP protocol, application) and buckets are whole
//! minutes; from the raw flows otherwise (ports, interfaces). Bytes and packets are the
//! sampling-scaled estimates. A flow counts in the minute (or bucket) of its end time.

use super::store::FlowStore;
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GroupBy {
    SrcAddr,
    DstAddr,
    App,
    Exporter,
    IpProtocol,
    SrcPort,
    DstPort,
    InIf,
    OutIf,
}

impl GroupBy {
    fn column(self) -> &'static str {
        match self {
            GroupBy::SrcAddr => "src_addr",
            GroupBy::DstAddr => "dst_addr",
            GroupBy::App => "app",
            GroupBy::Exporter => "exporter",
            GroupBy::IpProtocol => "ip_protocol",
            GroupBy::SrcPort => "src_port",
            GroupBy::DstPort => "dst_port",
            GroupBy::InIf => "in_if",
            GroupBy::OutIf => "out_if",
        }
    }

    fn in_rollup(self) -> bool {
        matches!(
            self,
            GroupBy::SrcAddr
                | GroupBy::DstAddr
                | GroupBy::App
                | GroupBy::Exporter
                | GroupBy::IpProtocol
        )
    }

    pub fn parse(s: &str) -> Result<Self, String> {
        serde_json::from_value(serde_json::Value::String(s.replace('-', "_"))).map_err(|_| {
            format!("unknown grouping {s:?}: one of src_addr, dst_addr, app, exporter, ip_protocol, src_port, dst_port, in_if, out_if")
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Measure {
    #[default]
    Bytes,
    Packets,
    Flows,
}

/// Filters shared by both query kinds; all given ones must hold.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FlowFilter {
    pub exporter: Option<String>,
    /// Source or destination address.
    pub addr: Option<String>,
    pub src_addr: Option<String>,
    pub dst_addr: Option<String>,
    /// Source or destination port (raw flows only).
    pub port: Option<u16>,
    pub ip_protocol: Option<u8>,
    pub app: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TopQuery {
    pub tenant: String,
    pub from_ms: i64,
    pub to_ms: i64,
    pub by: Vec<GroupBy>,
    #[serde(default)]
    pub measure: Measure,
    pub limit: usize,
    #[serde(default)]
    pub filter: FlowFilter,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RateQuery {
    pub tenant: String,
    pub from_ms: i64,
    pub to_ms: i64,
    pub by: Vec<GroupBy>,
    pub step_ms: i64,
    #[serde(default)]
    pub filter: FlowFilter,
    /// Groups per bucket beyond which the smallest are dropped.
    pub limit: usize,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct TopRow {
    pub group: serde_json::Map<String, serde_json::Value>,
    pub bytes: u64,
    pub packets: u64,
    pub flows: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct RateRow {
    pub bucket_ms: i64,
    pub group: serde_json::Map<String, serde_json::Value>,
    pub bytes: u64,
    pub packets: u64,
    pub bytes_per_second: f64,
    pub packets_per_second: f64,
}

#[derive(Debug, thiserror::Error)]
pub enum FlowQueryError {
    #[error("{0}")]
    Invalid(String),
    #[error("flow store: {0}")]
    Store(#[from] duckdb::Error),
}

struct Plan {
    table: &'static str,
    time: &'static str,
    bytes: &'static str,
    packets: &'static str,
    flows: &'static str,
    wheres: Vec<String>,
    params: Vec<duckdb::types::Value>,
}

fn plan(
    tenant: &str,
    from_ms: i64,
    to_ms: i64,
    by: &[GroupBy],
    filter: &FlowFilter,
    minute_buckets: bool,
) -> Result<Plan, FlowQueryError> {
    if to_ms <= from_ms {
        return Err(FlowQueryError::Invalid(
            "the window is empty: `to` must be after `from`".into(),
        ));
    }
    let rollup = minute_buckets && by.iter().all(|g| g.in_rollup()) && filter.port.is_none();
    let mut p = if rollup {
        Plan {
            table: "flow_rollup_1m",
            time: "minute_ms",
            bytes: "sum(bytes)",
            packets: "sum(packets)",
            flows: "sum(flows)",
            wheres: vec![],
            params: vec![],
        }
    } else {
        Plan {
            table: "flows",
            time: "end_ms",
            bytes: "sum(bytes_scaled)",
            packets: "sum(packets_scaled)",
            flows: "count(*)",
            wheres: vec![],
            params: vec![],
        }
    };
    use duckdb::types::Value as V;
    p.wheres.push("tenant = ?".into());
    p.params.push(V::Text(tenant.into()));
    p.wheres.push(format!("{} >= ? AND {} < ?", p.time, p.time));
    p.params.push(V::BigInt(from_ms));
    p.params.push(V::BigInt(to_ms));
    let text = |col: &str, v: &Option<String>, p: &mut Plan| {
        if let Some(v) = v {
            p.wheres.push(format!("{col} = ?"));
            p.params.push(V::Text(v.clone()));
        }
    };
    text("exporter", &filter.exporter, &mut p);
    text("src_addr", &filter.src_addr, &mut p);
    text("dst_addr", &filter.dst_addr, &mut p);
    text("app", &filter.app, &mut p);
    if let Some(a) = &filter.addr {
        p.wheres.push("(src_addr = ? OR dst_addr = ?)".into());
        p.params.push(V::Text(a.clone()));
        p.params.push(V::Text(a.clone()));
    }
    if let Some(port) = filter.port {
        p.wheres.push("(src_port = ? OR dst_port = ?)".into());
        p.params.push(V::Int(port as i32));
        p.params.push(V::Int(port as i32));
    }
    if let Some(proto) = filter.ip_protocol {
        p.wheres.push("ip_protocol = ?".into());
        p.params.push(V::Int(proto as i32));
    }
    Ok(p)
}

fn group_json(
    row: &duckdb::Row<'_>,
    by: &[GroupBy],
    offset: usize,
) -> Result<serde_json::Map<String, serde_json::Value>, duckdb::Error> {
    let mut m = serde_json::Map::new();
    for (i, g) in by.iter().enumerate() {
        let v = match row.get_ref(offset + i)? {
            duckdb::types::ValueRef::Text(t) => {
                serde_json::Value::String(String::from_utf8_lossy(t).into_owned())
            }
            other => match other.to_owned() {
                duckdb::types::Value::UTinyInt(n) => n.into(),
                duckdb::types::Value::USmallInt(n) => n.into(),
                duckdb::types::Value::UInt(n) => n.into(),
                duckdb::types::Value::Int(n) => n.into(),
                duckdb::types::Value::BigInt(n) => n.into(),
                v => serde_json::Value::String(format!("{v:?}")),
            },
        };
        m.insert(g.column().to_string(), v);
    }
    Ok(m)
}

fn u64_at(row: &duckdb::Row<'_>, i: usize) -> Result<u64, duckdb::Error> {
    // sum() of UBIGINT is HUGEINT in DuckDB; cast in SQL keeps this simple.
    row.get::<_, u64>(i)
}

pub fn top(store: &FlowStore, q: &TopQuery) -> Result<Vec<TopRow>, FlowQueryError> {
    if q.by.is_empty() {
        return Err(FlowQueryError::Invalid(
            "group by at least one of src_addr, dst_addr, app, ...".into(),
        ));
    }
    let p = plan(&q.tenant, q.from_ms, q.to_ms, &q.by, &q.filter, true)?;
    let cols: Vec<&str> = q.by.iter().map(|g| g.column()).collect();
    let order = match q.measure {
        Measure::Bytes => "1",
        Measure::Packets => "2",
        Measure::Flows => "3",
    };
    let sql = format!(
        "SELECT CAST({b} AS UBIGINT), CAST({pk} AS UBIGINT), CAST({f} AS UBIGINT), {cols} FROM {t} WHERE {w} GROUP BY {cols} ORDER BY {order} DESC, {cols} LIMIT {limit}",
        b = p.bytes,
        pk = p.packets,
        f = p.flows,
        cols = cols.join(", "),
        t = p.table,
        w = p.wheres.join(" AND "),
        limit = q.limit.clamp(1, 10_000),
    );
    let conn = store.reader()?;
    let mut stmt = conn.prepare(&sql)?;
    let rows = stmt.query_map(duckdb::params_from_iter(p.params.iter()), |row| {
        Ok(TopRow {
            bytes: u64_at(row, 0)?,
            packets: u64_at(row, 1)?,
            flows: u64_at(row, 2)?,
            group: group_json(row, &q.by, 3)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub fn rate(store: &FlowStore, q: &RateQuery) -> Result<Vec<RateRow>, FlowQueryError> {
    if q.step_ms < 1000 {
        return Err(FlowQueryError::Invalid("step must be at least 1s".into()));
    }
    let buckets = (q.to_ms - q.from_ms) / q.step_ms;
    if buckets > 10_000 {
        return Err(FlowQueryError::Invalid(format!(
            "{buckets} buckets: widen the step or shorten the window"
        )));
    }
    let p = plan(
        &q.tenant,
        q.from_ms,
        q.to_ms,
        &q.by,
        &q.filter,
        q.step_ms % 60_000 == 0,
    )?;
    let cols: Vec<&str> = q.by.iter().map(|g| g.column()).collect();
    let group_sql = if cols.is_empty() {
        String::new()
    } else {
        format!(", {}", cols.join(", "))
    };
    let sql = format!(
        "SELECT * FROM (SELECT bucket, b, pk{g}, row_number() OVER (PARTITION BY bucket ORDER BY b DESC) AS rank FROM (
            SELECT ? + (({time} - ?) // ?) * ? AS bucket, CAST({bytes} AS UBIGINT) AS b, CAST({packets} AS UBIGINT) AS pk{g}
            FROM {t} WHERE {w} GROUP BY bucket{g})) WHERE rank <= {limit} ORDER BY bucket, b DESC{g}",
        g = group_sql,
        time = p.time,
        bytes = p.bytes,
        packets = p.packets,
        t = p.table,
        w = p.wheres.join(" AND "),
        limit = q.limit.clamp(1, 10_000),
    );
    use duckdb::types::Value as V;
    let mut params = vec![
        V::BigInt(q.from_ms),
        V::BigInt(q.from_ms),
        V::BigInt(q.step_ms),
        V::BigInt(q.step_ms),
    ];
    params.extend(p.params);
    let conn = store.reader()?;
    let mut stmt = conn.prepare(&sql)?;
    let secs = q.step_ms as f64 / 1000.0;
    let rows = stmt.query_map(duckdb::params_from_iter(params.iter()), |row| {
        let bytes = u64_at(row, 1)?;
        let packets = u64_at(row, 2)?;
        Ok(RateRow {
            bucket_ms: row.get(0)?,
            group: group_json(row, &q.by, 3)?,
            bytes,
            packets,
            bytes_per_second: bytes as f64 / secs,
            packets_per_second: packets as f64 / secs,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}
