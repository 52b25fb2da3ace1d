//! Correlation's tables in the state database. Every intake is recorded as it came (the raw
//! body, for replay), and the alerts it carried are folded into the tenant's alert table in
//! the same transaction, so an intake the API answered 2xx is durable (`synchronous = FULL`)
//! and an intake is either wholly applied or not at all. Deleting a tenant deletes its rows
//! (foreign keys cascade).
//!
//! Redelivery is harmless twice over: a body identical to one received within
//! `dedupe_window` is recorded as a duplicate and changes nothing, and applying an alert is
//! idempotent — a firing event older than the resolution already stored (same fingerprint,
//! not a later `startsAt`) is stale and ignored, while a resolution always applies.

use super::CorrelationConfig;
use super::intake::{AlertEvent, AlertStatus};
use crate::state::{StateError, StateStore};
use rusqlite::{OptionalExtension, Transaction, params};
use serde::Serialize;
use std::collections::BTreeMap;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    State(#[from] StateError),
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::State(StateError::Db(e))
    }
}

/// An alert as the tenant's table holds it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StoredAlert {
    pub fingerprint: String,
    pub status: AlertStatus,
    pub labels: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// The inventory device the alert is about, if its labels name one.
    pub device: Option<String>,
    pub starts_at_ms: Option<i64>,
    pub ends_at_ms: Option<i64>,
    pub first_seen_ms: i64,
    pub last_seen_ms: i64,
    /// The intake that last changed it.
    pub intake: i64,
    /// What correlation decided: `passed`, `incident` (it is an incident's root cause),
    /// `suppressed`, `held`; none before a decision.
    pub decision: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub incident: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hold_until_ms: Option<i64>,
}

/// What recording one intake did.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Applied {
    pub intake: i64,
    /// The same body arrived within the dedupe window: recorded, nothing applied.
    pub duplicate: bool,
    pub new: usize,
    pub updated: usize,
    pub resolved: usize,
    /// Firing events older than a resolution already stored.
    pub stale: usize,
    /// New alerts refused: the tenant holds `max_alerts`.
    pub refused: usize,
    /// Fingerprints of the alerts it created or changed (what correlation decides on).
    #[serde(skip)]
    pub changed: Vec<String>,
}

/// One recorded intake, for listing and replay.
#[derive(Clone, Debug, Serialize)]
pub struct IntakeInfo {
    pub id: i64,
    pub received_ms: i64,
    pub source: String,
    pub alerts: usize,
    pub bytes: usize,
    pub duplicate: bool,
}

/// Record an intake and apply its alerts (each with the device it maps to), in one
/// transaction.
#[allow(clippy::too_many_arguments)]
pub fn ingest(
    state: &StateStore,
    limits: &CorrelationConfig,
    tenant: &str,
    source: &str,
    digest: &str,
    body: &str,
    events: &[(AlertEvent, Option<String>)],
    now_ms: i64,
) -> Result<Applied, StoreError> {
    Ok(state.with_writer(|conn| {
        let tx = conn.transaction()?;
        let since = now_ms - limits.dedupe_window.0.as_millis() as i64;
        let duplicate: bool = tx
            .query_row(
                "SELECT 1 FROM alert_intakes
                 WHERE tenant = ?1 AND digest = ?2 AND received_ms >= ?3 AND NOT duplicate
                 LIMIT 1",
                params![tenant, digest, since],
                |_| Ok(()),
            )
            .optional()?
            .is_some();
        let intake: i64 = tx.query_row(
            "SELECT IFNULL(MAX(id), 0) + 1 FROM alert_intakes WHERE tenant = ?1",
            [tenant],
            |r| r.get(0),
        )?;
        tx.execute(
            "INSERT INTO alert_intakes (tenant, id, received_ms, source, digest, alerts, bytes, duplicate, body)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            params![tenant, intake, now_ms, source, digest, events.len() as i64,
                    body.len() as i64, duplicate, body],
        )?;
        let mut applied = Applied {
            intake,
            duplicate,
            ..Applied::default()
        };
        if !duplicate {
            // Counted once: the budget check must not scan the table for every new alert.
            let held: i64 = tx.query_row(
                "SELECT COUNT(*) FROM alerts WHERE tenant = ?1",
                [tenant],
                |r| r.get(0),
            )?;
            let mut w = Writer {
                tx: &tx,
                limits,
                tenant,
                intake,
                now_ms,
                held: held as u64,
            };
            for (event, device) in events {
                w.apply(event, device.as_deref(), &mut applied)?;
            }
        }
        prune(&tx, limits, tenant, now_ms)?;
        tx.commit()?;
        Ok(applied)
    })?)
}

/// Applies one intake's events inside its transaction.
struct Writer<'a> {
    tx: &'a Transaction<'a>,
    limits: &'a CorrelationConfig,
    tenant: &'a str,
    intake: i64,
    now_ms: i64,
    /// Alerts the tenant holds.
    held: u64,
}

impl Writer<'_> {
    fn apply(
        &mut self,
        event: &AlertEvent,
        device: Option<&str>,
        applied: &mut Applied,
    ) -> rusqlite::Result<()> {
        let stored: Option<(String, Option<i64>)> = self
            .tx
            .prepare_cached(
                "SELECT status, starts_ms FROM alerts WHERE tenant = ?1 AND fingerprint = ?2",
            )?
            .query_row(params![self.tenant, event.fingerprint], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()?;
        let status = status_text(event.status);
        match stored {
            None => {
                if self.held >= self.limits.max_alerts {
                    applied.refused += 1;
                    return Ok(());
                }
                self.write(event, status, device)?;
                self.held += 1;
                applied.new += 1;
            }
            Some((was, starts)) => {
                let stale = event.status == AlertStatus::Firing
                    && was == "resolved"
                    && event.starts_at_ms.unwrap_or(i64::MIN) <= starts.unwrap_or(i64::MIN);
                if stale {
                    applied.stale += 1;
                    return Ok(());
                }
                self.write(event, status, device)?;
                if event.status == AlertStatus::Resolved && was == "firing" {
                    applied.resolved += 1;
                } else {
                    applied.updated += 1;
                }
            }
        }
        applied.changed.push(event.fingerprint.clone());
        Ok(())
    }

    /// Insert or update an alert from an event (its first sighting is kept).
    fn write(
        &self,
        event: &AlertEvent,
        status: &str,
        device: Option<&str>,
    ) -> rusqlite::Result<()> {
        let labels = serde_json::to_string(&event.labels).unwrap_or_default();
        let annotations = serde_json::to_string(&event.annotations).unwrap_or_default();
        self.tx
            .prepare_cached(
                "INSERT INTO alerts (tenant, fingerprint, status, labels, annotations, device,
                 starts_ms, ends_ms, first_seen_ms, last_seen_ms, intake)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?9, ?10)
             ON CONFLICT (tenant, fingerprint) DO UPDATE SET status = ?3, labels = ?4,
                 annotations = ?5, device = ?6, starts_ms = ?7, ends_ms = ?8, last_seen_ms = ?9,
                 intake = ?10",
            )?
            .execute(params![
                self.tenant,
                event.fingerprint,
                status,
                labels,
                annotations,
                device,
                event.starts_at_ms,
                event.ends_at_ms,
                self.now_ms,
                self.intake
            ])?;
        Ok(())
    }
}

/// Keep the newest intakes within `keep_intake_bytes`, and resolved alerts for
/// `keep_resolved`.
fn prune(
    tx: &Transaction<'_>,
    limits: &CorrelationConfig,
    tenant: &str,
    now_ms: i64,
) -> rusqlite::Result<()> {
    tx.execute(
        "DELETE FROM alert_intakes WHERE tenant = ?1 AND id <= (
             SELECT id FROM (
                 SELECT id, SUM(bytes) OVER (ORDER BY id DESC) AS total
                 FROM alert_intakes WHERE tenant = ?1)
             WHERE total > ?2 ORDER BY id DESC LIMIT 1)",
        params![tenant, limits.keep_intake_bytes.0 as i64],
    )?;
    tx.execute(
        "DELETE FROM alerts WHERE tenant = ?1 AND status = 'resolved' AND last_seen_ms < ?2",
        params![tenant, now_ms - limits.keep_resolved.0.as_millis() as i64],
    )?;
    Ok(())
}

fn status_text(s: AlertStatus) -> &'static str {
    match s {
        AlertStatus::Firing => "firing",
        AlertStatus::Resolved => "resolved",
    }
}

const ALERT_COLUMNS: &str = "fingerprint, status, labels, annotations, device, starts_ms, ends_ms,
     first_seen_ms, last_seen_ms, intake, decision, reason, incident, hold_until_ms";

fn alert_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<StoredAlert> {
    let status: String = r.get(1)?;
    let labels: String = r.get(2)?;
    let annotations: String = r.get(3)?;
    Ok(StoredAlert {
        fingerprint: r.get(0)?,
        status: if status == "resolved" {
            AlertStatus::Resolved
        } else {
            AlertStatus::Firing
        },
        labels: serde_json::from_str(&labels).unwrap_or_default(),
        annotations: serde_json::from_str(&annotations).unwrap_or_default(),
        device: r.get(4)?,
        starts_at_ms: r.get(5)?,
        ends_at_ms: r.get(6)?,
        first_seen_ms: r.get(7)?,
        last_seen_ms: r.get(8)?,
        intake: r.get(9)?,
        decision: r.get(10)?,
        reason: r.get(11)?,
        incident: r.get(12)?,
        hold_until_ms: r.get(13)?,
    })
}

/// The tenant's alerts, newest change first; `status`, `device`: only those.
pub fn alerts(
    state: &StateStore,
    tenant: &str,
    status: Option<AlertStatus>,
    device: Option<&str>,
    limit: usize,
) -> Result<Vec<StoredAlert>, StoreError> {
    Ok(state.with_reader(|conn| {
        let mut stmt = conn.prepare(&format!(
            "SELECT {ALERT_COLUMNS} FROM alerts
             WHERE tenant = ?1 AND (?2 IS NULL OR status = ?2) AND (?3 IS NULL OR device = ?3)
             ORDER BY last_seen_ms DESC, fingerprint LIMIT ?4"
        ))?;
        let rows = stmt.query_map(
            params![tenant, status.map(status_text), device, limit as i64],
            alert_row,
        )?;
        rows.collect()
    })?)
}

/// These alerts of the tenant (those that exist), in the order given.
pub fn by_fingerprint(
    state: &StateStore,
    tenant: &str,
    fingerprints: &[String],
) -> Result<Vec<StoredAlert>, StoreError> {
    Ok(state.with_reader(|conn| {
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {ALERT_COLUMNS} FROM alerts WHERE tenant = ?1 AND fingerprint = ?2"
        ))?;
        let mut out = Vec::with_capacity(fingerprints.len());
        for fp in fingerprints {
            if let Some(a) = stmt.query_row(params![tenant, fp], alert_row).optional()? {
                out.push(a);
            }
        }
        Ok(out)
    })?)
}

/// The firing alerts of one device of the tenant.
pub fn firing_of_device(
    state: &StateStore,
    tenant: &str,
    device: &str,
) -> Result<Vec<StoredAlert>, StoreError> {
    Ok(state.with_reader(|conn| {
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {ALERT_COLUMNS} FROM alerts INDEXED BY alerts_device
             WHERE tenant = ?1 AND device = ?2 AND status = 'firing' ORDER BY fingerprint"
        ))?;
        let rows = stmt.query_map([tenant, device], alert_row)?;
        rows.collect()
    })?)
}

/// A suppressed child's alert that came from Alertmanager, with its open incident.
#[derive(Clone, Debug)]
pub struct SilenceableAlert {
    pub incident: i64,
    pub fingerprint: String,
    pub labels: BTreeMap<String, String>,
}

/// The firing alerts of the tenant that open incidents suppressed and that arrived by
/// Alertmanager's webhook (only those are Alertmanager's to silence).
pub fn silenceable(state: &StateStore, tenant: &str) -> Result<Vec<SilenceableAlert>, StoreError> {
    Ok(state.with_reader(|conn| {
        let mut stmt = conn.prepare_cached(
            "SELECT ia.incident, a.fingerprint, a.labels
             FROM incidents i
             JOIN incident_alerts ia ON ia.tenant = i.tenant AND ia.incident = i.id
             JOIN alerts a ON a.tenant = ia.tenant AND a.fingerprint = ia.fingerprint
             JOIN alert_intakes ai ON ai.tenant = a.tenant AND ai.id = a.intake
             WHERE i.tenant = ?1 AND i.status = 'open' AND ia.role = 'child'
                 AND ia.resolved_ms IS NULL AND a.status = 'firing'
                 AND a.decision = 'suppressed' AND ai.source = 'alertmanager'
             ORDER BY ia.incident, a.fingerprint",
        )?;
        let rows = stmt.query_map([tenant], |r| {
            let labels: String = r.get(2)?;
            Ok(SilenceableAlert {
                incident: r.get(0)?,
                fingerprint: r.get(1)?,
                labels: serde_json::from_str(&labels).unwrap_or_default(),
            })
        })?;
        rows.collect()
    })?)
}

/// Held alerts whose time has come, and tenants with any.
pub fn due_holds(state: &StateStore, now_ms: i64) -> Result<Vec<(String, String)>, StoreError> {
    Ok(state.with_reader(|conn| {
        let mut stmt = conn.prepare(
            "SELECT tenant, fingerprint FROM alerts
             WHERE hold_until_ms IS NOT NULL AND hold_until_ms <= ?1 AND status = 'firing'
             ORDER BY tenant, hold_until_ms",
        )?;
        let rows = stmt.query_map([now_ms], |r| Ok((r.get(0)?, r.get(1)?)))?;
        rows.collect()
    })?)
}

/// The tenant's recorded intakes, newest first.
pub fn intakes(
    state: &StateStore,
    tenant: &str,
    limit: usize,
) -> Result<Vec<IntakeInfo>, StoreError> {
    Ok(state.with_reader(|conn| {
        let mut stmt = conn.prepare(
            "SELECT id, received_ms, source, alerts, bytes, duplicate FROM alert_intakes
             WHERE tenant = ?1 ORDER BY id DESC LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![tenant, limit as i64], |r| {
            Ok(IntakeInfo {
                id: r.get(0)?,
                received_ms: r.get(1)?,
                source: r.get(2)?,
                alerts: r.get::<_, i64>(3)? as usize,
                bytes: r.get::<_, i64>(4)? as usize,
                duplicate: r.get(5)?,
            })
        })?;
        rows.collect()
    })?)
}

/// A recorded intake as it came.
pub struct Recorded {
    pub id: i64,
    pub received_ms: i64,
    pub source: String,
    pub body: String,
}

/// The tenant's non-duplicate intakes received in `[from, to)`, in order.
pub fn recorded(
    state: &StateStore,
    tenant: &str,
    from_ms: i64,
    to_ms: i64,
) -> Result<Vec<Recorded>, StoreError> {
    Ok(state.with_reader(|conn| {
        let mut stmt = conn.prepare(
            "SELECT id, received_ms, source, body FROM alert_intakes
             WHERE tenant = ?1 AND received_ms >= ?2 AND received_ms < ?3 AND NOT duplicate
             ORDER BY id",
        )?;
        let rows = stmt.query_map(params![tenant, from_ms, to_ms], |r| {
            Ok(Recorded {
                id: r.get(0)?,
                received_ms: r.get(1)?,
                source: r.get(2)?,
                body: r.get(3)?,
            })
        })?;
        rows.collect()
    })?)
}

/// When the tenant's next held alert is due, if any.
pub fn next_hold(state: &StateStore, tenant: &str) -> Result<Option<i64>, StoreError> {
    Ok(state.with_reader(|conn| {
        conn.query_row(
            "SELECT MIN(hold_until_ms) FROM alerts
             WHERE tenant = ?1 AND hold_until_ms IS NOT NULL AND status = 'firing'",
            [tenant],
            |r| r.get(0),
        )
    })?)
}
