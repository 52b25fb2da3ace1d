//! Flow queries: top-N groups over a window, and rates per group per time bucket.
//!
//! Answered from the per-minute rollups (SQL over DuckDB's `flow_rollup_1m`, after the
//! store writes its open rollups) when every grouping and filter is one the rollups keep
//! (tenant, exporter, addresses, IP protocol, application) and buckets are whole minutes;
//! otherwise (ports, interfaces, sub-minute buckets) by scanning the raw flow log in the
//! window and grouping here — the log is ours, not SQL, and a scan reads only the segments
//! whose time range meets the window. Bytes and packets are the sampling-scaled estimates.
//! A flow counts in the minute (or bucket) of its end time.

use super::rawlog::RawFlow;
use super::store::{FlowStore, FlowStoreError};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

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
    /// The column (and the label queries answer with).
    pub fn column(self) -> &'static str {
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
    /// Flow records in the bucket.
    pub flows: u64,
    pub bytes_per_second: f64,
    pub packets_per_second: f64,
}

#[derive(Debug, thiserror::Error)]
pub enum FlowQueryError {
    #[error("{0}")]
    Invalid(String),
    #[error("flow store: {0}")]
    Store(#[from] duckdb::Error),
    #[error("{0}")]
    Raw(#[from] FlowStoreError),
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

/// The SQL over the rollups, or `None` when the query needs the raw flows.
fn plan(
    tenant: &str,
    from_ms: i64,
    to_ms: i64,
    by: &[GroupBy],
    filter: &FlowFilter,
    minute_buckets: bool,
) -> Result<Option<Plan>, FlowQueryError> {
    if to_ms <= from_ms {
        return Err(FlowQueryError::Invalid(
            "the window is empty: `to` must be after `from`".into(),
        ));
    }
    let filter = &canonical_addresses(filter)?;
    let rollup = minute_buckets && by.iter().all(|g| g.in_rollup()) && filter.port.is_none();
    if !rollup {
        return Ok(None);
    }
    let mut p = Plan {
        table: "flow_rollup_1m",
        time: "minute_ms",
        bytes: "sum(bytes)",
        packets: "sum(packets)",
        flows: "sum(flows)",
        wheres: vec![],
        params: vec![],
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
    if let Some(proto) = filter.ip_protocol {
        p.wheres.push("ip_protocol = ?".into());
        p.params.push(V::Int(proto as i32));
    }
    Ok(Some(p))
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
    // sum() of UBIGINT is HUGEINT in DuckDB; `saturated` brings it back into u64.
    row.get::<_, u64>(i)
}

pub fn top(store: &FlowStore, q: &TopQuery) -> Result<Vec<TopRow>, FlowQueryError> {
    if q.by.is_empty() {
        return Err(FlowQueryError::Invalid(
            "group by at least one of src_addr, dst_addr, app, ...".into(),
        ));
    }
    let Some(p) = plan(&q.tenant, q.from_ms, q.to_ms, &q.by, &q.filter, true)? else {
        return raw_top(store, q);
    };
    store.flush_rollups()?;
    let cols: Vec<&str> = q.by.iter().map(|g| g.column()).collect();
    let order = match q.measure {
        Measure::Bytes => "1",
        Measure::Packets => "2",
        Measure::Flows => "3",
    };
    let sql = format!(
        "SELECT {b}, {pk}, {f}, {cols} FROM {t} WHERE {w} GROUP BY {cols} ORDER BY {order} DESC, {cols} LIMIT {limit}",
        b = saturated(p.bytes),
        pk = saturated(p.packets),
        f = saturated(p.flows),
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
    let Some(p) = plan(
        &q.tenant,
        q.from_ms,
        q.to_ms,
        &q.by,
        &q.filter,
        q.step_ms % 60_000 == 0,
    )?
    else {
        return raw_rate(store, q);
    };
    store.flush_rollups()?;
    let cols: Vec<&str> = q.by.iter().map(|g| g.column()).collect();
    let group_sql = if cols.is_empty() {
        String::new()
    } else {
        format!(", {}", cols.join(", "))
    };
    let sql = format!(
        "SELECT * FROM (SELECT bucket, b, pk, f{g}, row_number() OVER (PARTITION BY bucket ORDER BY b DESC) AS rank FROM (
            SELECT ? + (({time} - ?) // ?) * ? AS bucket, {bytes} AS b, {packets} AS pk, {flows} AS f{g}
            FROM {t} WHERE {w} GROUP BY bucket{g})) WHERE rank <= {limit} ORDER BY bucket, b DESC{g}",
        g = group_sql,
        time = p.time,
        bytes = saturated(p.bytes),
        packets = saturated(p.packets),
        flows = saturated(p.flows),
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
            group: group_json(row, &q.by, 4)?,
            bytes,
            packets,
            flows: u64_at(row, 3)?,
            bytes_per_second: bytes as f64 / secs,
            packets_per_second: packets as f64 / secs,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Address filters as the store writes addresses (so `2001:DB8::1` finds `2001:db8::1`); an
/// address that does not parse is the caller's mistake, not an empty answer.
fn canonical_addresses(filter: &FlowFilter) -> Result<FlowFilter, FlowQueryError> {
    let canon = |name: &str, v: &Option<String>| -> Result<Option<String>, FlowQueryError> {
        v.as_deref()
            .map(|a| {
                a.parse::<IpAddr>().map(|ip| ip.to_string()).map_err(|_| {
                    FlowQueryError::Invalid(format!("{name}: {a:?} is not an IP address"))
                })
            })
            .transpose()
    };
    Ok(FlowFilter {
        exporter: canon("exporter", &filter.exporter)?,
        addr: canon("addr", &filter.addr)?,
        src_addr: canon("src_addr", &filter.src_addr)?,
        dst_addr: canon("dst_addr", &filter.dst_addr)?,
        ..filter.clone()
    })
}

/// One grouping value of a raw flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Val {
    Ip(IpAddr),
    Num(u64),
    App(u16),
}

/// A query's filters resolved against the raw log's ids and addresses once.
struct RawFilter {
    tenant: u16,
    exporter: Option<IpAddr>,
    addr: Option<IpAddr>,
    src: Option<IpAddr>,
    dst: Option<IpAddr>,
    port: Option<u16>,
    ip_protocol: Option<u8>,
    app: Option<u16>,
}

impl RawFilter {
    /// `None` when nothing can match (a tenant or application the store never saw).
    fn new(
        store: &FlowStore,
        tenant: &str,
        f: &FlowFilter,
    ) -> Result<Option<Self>, FlowQueryError> {
        let f = canonical_addresses(f)?;
        let ip = |v: &Option<String>| v.as_deref().and_then(|a| a.parse::<IpAddr>().ok());
        let Some(tenant) = store.names().tenant_id(tenant) else {
            return Ok(None);
        };
        let app = match &f.app {
            Some(name) => match store.names().app_id(name) {
                Some(id) => Some(id),
                None => return Ok(None),
            },
            None => None,
        };
        Ok(Some(RawFilter {
            tenant,
            exporter: ip(&f.exporter),
            addr: ip(&f.addr),
            src: ip(&f.src_addr),
            dst: ip(&f.dst_addr),
            port: f.port,
            ip_protocol: f.ip_protocol,
            app,
        }))
    }

    fn matches(&self, f: &RawFlow) -> bool {
        let r = &f.record;
        f.tenant == self.tenant
            && self.exporter.is_none_or(|e| r.exporter == e)
            && self.src.is_none_or(|a| r.src_addr == a)
            && self.dst.is_none_or(|a| r.dst_addr == a)
            && self.addr.is_none_or(|a| r.src_addr == a || r.dst_addr == a)
            && self.port.is_none_or(|p| r.src_port == p || r.dst_port == p)
            && self.ip_protocol.is_none_or(|p| r.ip_protocol == p)
            && self.app.is_none_or(|a| f.app == a)
    }
}

fn raw_key(by: &[GroupBy], f: &RawFlow, key: &mut Vec<Val>) {
    let r = &f.record;
    key.clear();
    key.extend(by.iter().map(|g| match g {
        GroupBy::SrcAddr => Val::Ip(r.src_addr),
        GroupBy::DstAddr => Val::Ip(r.dst_addr),
        GroupBy::Exporter => Val::Ip(r.exporter),
        GroupBy::App => Val::App(f.app),
        GroupBy::IpProtocol => Val::Num(r.ip_protocol as u64),
        GroupBy::SrcPort => Val::Num(r.src_port as u64),
        GroupBy::DstPort => Val::Num(r.dst_port as u64),
        GroupBy::InIf => Val::Num(r.in_if as u64),
        GroupBy::OutIf => Val::Num(r.out_if as u64),
    }));
}

fn raw_group_json(
    store: &FlowStore,
    by: &[GroupBy],
    key: &[Val],
) -> serde_json::Map<String, serde_json::Value> {
    by.iter()
        .zip(key)
        .map(|(g, v)| {
            let v = match v {
                Val::Ip(ip) => ip.to_string().into(),
                Val::Num(n) => (*n).into(),
                Val::App(id) => store.names().app(*id).into(),
            };
            (g.column().to_string(), v)
        })
        .collect()
}

type Groups = HashMap<Vec<Val>, [u64; 3], foldhash::fast::RandomState>;

/// Sum the flows of the window that pass the filter into `groups`, keyed by `bucket(flow)`.
fn raw_groups<B: Ord>(
    store: &FlowStore,
    tenant: &str,
    from_ms: i64,
    to_ms: i64,
    by: &[GroupBy],
    filter: &FlowFilter,
    bucket: impl Fn(&RawFlow) -> B,
) -> Result<BTreeMap<B, Groups>, FlowQueryError> {
    let mut out: BTreeMap<B, Groups> = BTreeMap::new();
    let Some(filter) = RawFilter::new(store, tenant, filter)? else {
        return Ok(out);
    };
    let mut key = Vec::with_capacity(by.len());
    store.scan_raw(from_ms, to_ms, |f| {
        if !filter.matches(f) {
            return;
        }
        raw_key(by, f, &mut key);
        let groups = out.entry(bucket(f)).or_default();
        let acc = match groups.get_mut(&key[..]) {
            Some(acc) => acc,
            None => groups.entry(key.clone()).or_default(),
        };
        // Saturating: the counts come from the network, and a sum past u64 must not fail
        // (or, in a debug build, panic) a tenant's query.
        acc[0] = acc[0].saturating_add(f.record.scaled_bytes());
        acc[1] = acc[1].saturating_add(f.record.scaled_packets());
        acc[2] = acc[2].saturating_add(1);
    })?;
    Ok(out)
}

/// A SQL sum as UBIGINT, capped at the largest u64: the counts come from the network, and a
/// sum past it (a cast error in DuckDB) must not fail the tenant's query.
fn saturated(sum: &str) -> String {
    format!("CAST(least({sum}, 18446744073709551615::HUGEINT) AS UBIGINT)")
}

/// Largest first by `measure`, ties in key order; at most `limit`.
fn ranked(groups: Groups, measure: usize, limit: usize) -> Vec<(Vec<Val>, [u64; 3])> {
    let mut rows: Vec<_> = groups.into_iter().collect();
    rows.sort_by(|a, b| b.1[measure].cmp(&a.1[measure]).then_with(|| a.0.cmp(&b.0)));
    rows.truncate(limit.clamp(1, 10_000));
    rows
}

fn raw_top(store: &FlowStore, q: &TopQuery) -> Result<Vec<TopRow>, FlowQueryError> {
    let mut buckets = raw_groups(
        store,
        &q.tenant,
        q.from_ms,
        q.to_ms,
        &q.by,
        &q.filter,
        |_| (),
    )?;
    let groups = buckets.remove(&()).unwrap_or_default();
    let measure = match q.measure {
        Measure::Bytes => 0,
        Measure::Packets => 1,
        Measure::Flows => 2,
    };
    Ok(ranked(groups, measure, q.limit)
        .into_iter()
        .map(|(key, v)| TopRow {
            group: raw_group_json(store, &q.by, &key),
            bytes: v[0],
            packets: v[1],
            flows: v[2],
        })
        .collect())
}

fn raw_rate(store: &FlowStore, q: &RateQuery) -> Result<Vec<RateRow>, FlowQueryError> {
    let (from, step) = (q.from_ms, q.step_ms);
    let buckets = raw_groups(
        store,
        &q.tenant,
        q.from_ms,
        q.to_ms,
        &q.by,
        &q.filter,
        |f| from + (f.record.end_ms - from).div_euclid(step) * step,
    )?;
    let secs = step as f64 / 1000.0;
    let mut out = Vec::new();
    for (bucket_ms, groups) in buckets {
        for (key, v) in ranked(groups, 0, q.limit) {
            out.push(RateRow {
                bucket_ms,
                group: raw_group_json(store, &q.by, &key),
                bytes: v[0],
                packets: v[1],
                flows: v[2],
                bytes_per_second: v[0] as f64 / secs,
                packets_per_second: v[1] as f64 / secs,
            });
        }
    }
    Ok(out)
}
