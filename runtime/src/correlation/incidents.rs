//! Incidents in the state database, and the decisions of one batch applied to them in one
//! transaction: an incident opened or extended with its root alert, alerts suppressed into
//! one with their reason, alerts passed or held, titles changed, incidents closed — each step
//! a line of the incident's timeline.
//!
//! The host, not the policy, guarantees what must hold whatever a policy says: a resolution
//! is never suppressed (it passes and is recorded in every incident holding the alert), an
//! alert the policy says nothing about passes, and a suppression into an incident that does
//! not exist passes instead (counted as a policy mistake).

use super::intake::AlertStatus;
use super::store::StoreError;
use crate::host::{WitAlert, WitAlertStatus, WitDecision, WitIncident};
use crate::state::StateStore;
use rusqlite::{OptionalExtension, Transaction, params};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};

#[derive(Clone, Debug, Serialize)]
pub struct Incident {
    pub id: i64,
    pub root: String,
    pub title: String,
    /// `open` or `resolved`.
    pub status: String,
    pub acknowledged: bool,
    pub opened_ms: i64,
    pub updated_ms: i64,
    pub closed_ms: Option<i64>,
    /// The policy (`component:<name>@<version>`) that opened it.
    pub policy: String,
    /// Devices whose alerts it suppressed.
    pub children: Vec<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct IncidentAlert {
    pub fingerprint: String,
    pub device: Option<String>,
    /// `root` or `child`.
    pub role: String,
    pub reason: String,
    pub added_ms: i64,
    pub resolved_ms: Option<i64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct TimelineEvent {
    pub at_ms: i64,
    pub kind: String,
    pub detail: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct IncidentDetail {
    #[serde(flatten)]
    pub incident: Incident,
    pub alerts: Vec<IncidentAlert>,
    pub timeline: Vec<TimelineEvent>,
}

/// What applying a batch's decisions did.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Outcome {
    pub opened: Vec<i64>,
    pub suppressed: usize,
    pub passed: usize,
    pub held: usize,
    pub closed: Vec<i64>,
    /// Decisions the host overrode (a suppressed resolution, an incident that does not exist).
    pub overridden: usize,
    /// Still-firing alerts of closed incidents: offered to the policy again.
    pub reoffer: Vec<String>,
}

/// Apply `decisions` on `batch` (alerts by fingerprint) for `policy`.
pub fn apply(
    state: &StateStore,
    tenant: &str,
    policy: &str,
    batch: &[WitAlert],
    decisions: &[WitDecision],
    now_ms: i64,
) -> Result<Outcome, StoreError> {
    Ok(state.with_writer(|conn| {
        let tx = conn.transaction()?;
        let mut run = Run {
            tx: &tx,
            tenant,
            policy,
            now_ms,
            alerts: batch.iter().map(|a| (a.fingerprint.as_str(), a)).collect(),
            decided: HashMap::new(),
            out: Outcome::default(),
        };
        for decision in decisions {
            run.decision(decision)?;
        }
        // Resolutions always pass and are recorded in the incidents holding them; what the
        // policy said nothing about passes.
        for alert in batch {
            if alert.status == WitAlertStatus::Resolved {
                run.resolution(alert)?;
            } else if !run.decided.contains_key(alert.fingerprint.as_str()) {
                run.mark(&alert.fingerprint, "passed", "", None, None)?;
                run.out.passed += 1;
            }
        }
        let out = run.out;
        tx.commit()?;
        Ok(out)
    })?)
}

struct Run<'a> {
    tx: &'a Transaction<'a>,
    tenant: &'a str,
    policy: &'a str,
    now_ms: i64,
    alerts: HashMap<&'a str, &'a WitAlert>,
    decided: HashMap<String, &'static str>,
    out: Outcome,
}

impl Run<'_> {
    /// Statements run once per alert are prepared once per connection.
    fn exec(&self, sql: &str, params: impl rusqlite::Params) -> rusqlite::Result<usize> {
        self.tx.prepare_cached(sql)?.execute(params)
    }

    fn one<T>(
        &self,
        sql: &str,
        params: impl rusqlite::Params,
        row: impl FnOnce(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
    ) -> rusqlite::Result<T> {
        self.tx.prepare_cached(sql)?.query_row(params, row)
    }

    fn decision(&mut self, decision: &WitDecision) -> rusqlite::Result<()> {
        match decision {
            WitDecision::Pass(fp) => {
                if self.firing(fp) {
                    self.mark(fp, "passed", "", None, None)?;
                    self.out.passed += 1;
                }
            }
            WitDecision::Open(o) => {
                if !self.firing(&o.alert) {
                    self.out.overridden += 1;
                    return Ok(());
                }
                let id = match self.open_incident(&o.root)? {
                    Some(id) => id,
                    None => {
                        let id = self.create(&o.root, &o.title)?;
                        self.out.opened.push(id);
                        id
                    }
                };
                self.add(id, &o.alert, "root", &o.reason)?;
                self.mark(&o.alert, "incident", &o.reason, Some(id), None)?;
            }
            WitDecision::Suppress(s) => {
                if !self.firing(&s.alert) {
                    self.out.overridden += 1;
                    return Ok(());
                }
                match self.open_incident(&s.root)? {
                    Some(id) => {
                        self.add(id, &s.alert, "child", &s.reason)?;
                        self.mark(&s.alert, "suppressed", &s.reason, Some(id), None)?;
                        self.out.suppressed += 1;
                    }
                    None => {
                        self.out.overridden += 1;
                        let why = format!("no open incident rooted at {}", s.root);
                        self.mark(&s.alert, "passed", &why, None, None)?;
                        self.out.passed += 1;
                    }
                }
            }
            WitDecision::Hold(h) => {
                if self.firing(&h.alert) {
                    self.mark(&h.alert, "held", &h.reason, None, Some(h.until_ms))?;
                    self.out.held += 1;
                }
            }
            WitDecision::Annotate(a) => {
                let current: Option<String> = self
                    .tx
                    .query_row(
                        "SELECT annotations FROM alerts WHERE tenant = ?1 AND fingerprint = ?2",
                        params![self.tenant, a.alert],
                        |r| r.get(0),
                    )
                    .optional()?;
                if let Some(text) = current {
                    let mut map: BTreeMap<String, String> =
                        serde_json::from_str(&text).unwrap_or_default();
                    map.insert(a.key.clone(), a.value.clone());
                    self.exec(
                        "UPDATE alerts SET annotations = ?3 WHERE tenant = ?1 AND fingerprint = ?2",
                        params![
                            self.tenant,
                            a.alert,
                            serde_json::to_string(&map).unwrap_or_default()
                        ],
                    )?;
                }
            }
            WitDecision::Retitle(r) => {
                if let Some(id) = self.open_incident(&r.root)? {
                    let old: String = self.one(
                        "SELECT title FROM incidents WHERE tenant = ?1 AND id = ?2",
                        params![self.tenant, id],
                        |row| row.get(0),
                    )?;
                    if old != r.title {
                        self.exec(
                            "UPDATE incidents SET title = ?3, updated_ms = ?4 WHERE tenant = ?1 AND id = ?2",
                            params![self.tenant, id, r.title, self.now_ms],
                        )?;
                        self.event(id, "retitled", &r.title)?;
                    }
                }
            }
            WitDecision::Close(root) => {
                if let Some(id) = self.open_incident(root)? {
                    self.close(id, &format!("by the policy {}", self.policy))?;
                }
            }
        }
        Ok(())
    }

    /// Whether `fp` is a firing alert of the tenant: of this batch, or one decided earlier
    /// (e.g. a parent's alert that passed or was held before its children's came). A
    /// decision about anything else is void.
    fn firing(&self, fp: &str) -> bool {
        if let Some(a) = self.alerts.get(fp) {
            return a.status == WitAlertStatus::Firing;
        }
        self.stored_device(fp)
            .is_some_and(|(status, _)| status == "firing")
    }

    /// A stored alert's status and device.
    fn stored_device(&self, fp: &str) -> Option<(String, Option<String>)> {
        self.one(
            "SELECT status, device FROM alerts WHERE tenant = ?1 AND fingerprint = ?2",
            params![self.tenant, fp],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()
        .ok()
        .flatten()
    }

    fn resolution(&mut self, alert: &WitAlert) -> rusqlite::Result<()> {
        if let Some(&d) = self.decided.get(alert.fingerprint.as_str())
            && d != "passed"
        {
            self.out.overridden += 1;
        }
        self.mark(&alert.fingerprint, "passed", "resolved", None, None)?;
        self.out.passed += 1;
        let holding: Vec<(i64, String)> = {
            let mut stmt = self.tx.prepare_cached(
                "SELECT ia.incident, ia.role FROM incident_alerts ia
                 JOIN incidents i ON i.tenant = ia.tenant AND i.id = ia.incident
                 WHERE ia.tenant = ?1 AND ia.fingerprint = ?2 AND ia.resolved_ms IS NULL",
            )?;
            stmt.query_map(params![self.tenant, alert.fingerprint], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })?
            .collect::<rusqlite::Result<_>>()?
        };
        for (id, role) in holding {
            self.exec(
                "UPDATE incident_alerts SET resolved_ms = ?4
                 WHERE tenant = ?1 AND incident = ?2 AND fingerprint = ?3",
                params![self.tenant, id, alert.fingerprint, self.now_ms],
            )?;
            let who = alert
                .device
                .clone()
                .unwrap_or_else(|| alert.fingerprint.clone());
            self.event(id, &format!("{role} resolved"), &who)?;
        }
        Ok(())
    }

    fn mark(
        &mut self,
        fp: &str,
        decision: &'static str,
        reason: &str,
        incident: Option<i64>,
        hold_until: Option<i64>,
    ) -> rusqlite::Result<()> {
        self.decided.insert(fp.to_string(), decision);
        self.exec(
            "UPDATE alerts SET decision = ?3, reason = ?4, incident = ?5, hold_until_ms = ?6
             WHERE tenant = ?1 AND fingerprint = ?2",
            params![self.tenant, fp, decision, reason, incident, hold_until],
        )?;
        Ok(())
    }

    fn open_incident(&self, root: &str) -> rusqlite::Result<Option<i64>> {
        self.tx
            .query_row(
                "SELECT id FROM incidents WHERE tenant = ?1 AND root = ?2 AND status = 'open'",
                params![self.tenant, root],
                |r| r.get(0),
            )
            .optional()
    }

    fn create(&mut self, root: &str, title: &str) -> rusqlite::Result<i64> {
        let id: i64 = self.one(
            "SELECT IFNULL(MAX(id), 0) + 1 FROM incidents WHERE tenant = ?1",
            [self.tenant],
            |r| r.get(0),
        )?;
        self.exec(
            "INSERT INTO incidents (tenant, id, root, title, status, opened_ms, updated_ms, policy)
             VALUES (?1, ?2, ?3, ?4, 'open', ?5, ?5, ?6)",
            params![self.tenant, id, root, title, self.now_ms, self.policy],
        )?;
        self.event(id, "opened", title)?;
        Ok(id)
    }

    fn add(&mut self, id: i64, fp: &str, role: &str, reason: &str) -> rusqlite::Result<()> {
        let device = match self.alerts.get(fp) {
            Some(a) => a.device.clone(),
            None => self.stored_device(fp).and_then(|(_, d)| d),
        };
        let n = self.exec(
            "INSERT INTO incident_alerts (tenant, incident, fingerprint, device, role, reason, added_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
             ON CONFLICT (tenant, incident, fingerprint) DO UPDATE SET resolved_ms = NULL, reason = ?6",
            params![self.tenant, id, fp, device, role, reason, self.now_ms],
        )?;
        if n > 0 {
            let who = device.unwrap_or_else(|| fp.to_string());
            let kind = if role == "root" {
                "root alert"
            } else {
                "suppressed"
            };
            self.event(id, kind, &format!("{who}: {reason}"))?;
        }
        self.exec(
            "UPDATE incidents SET updated_ms = ?3 WHERE tenant = ?1 AND id = ?2",
            params![self.tenant, id, self.now_ms],
        )?;
        Ok(())
    }

    fn close(&mut self, id: i64, why: &str) -> rusqlite::Result<()> {
        self.exec(
            "UPDATE incidents SET status = 'resolved', closed_ms = ?3, updated_ms = ?3
             WHERE tenant = ?1 AND id = ?2",
            params![self.tenant, id, self.now_ms],
        )?;
        self.event(id, "closed", why)?;
        self.out.closed.push(id);
        // Its alerts still firing (children, or a root whose incident another replaces) are
        // decided again, not released as a flood.
        let mut stmt = self.tx.prepare_cached(
            "SELECT a.fingerprint FROM incident_alerts ia
             JOIN alerts a ON a.tenant = ia.tenant AND a.fingerprint = ia.fingerprint
             WHERE ia.tenant = ?1 AND ia.incident = ?2
               AND ia.resolved_ms IS NULL AND a.status = 'firing'",
        )?;
        let rows = stmt.query_map(params![self.tenant, id], |r| r.get::<_, String>(0))?;
        for fp in rows {
            self.out.reoffer.push(fp?);
        }
        Ok(())
    }

    fn event(&self, id: i64, kind: &str, detail: &str) -> rusqlite::Result<()> {
        self.exec(
            "INSERT INTO incident_events (tenant, incident, seq, at_ms, kind, detail)
             VALUES (?1, ?2, (SELECT IFNULL(MAX(seq), 0) + 1 FROM incident_events
                              WHERE tenant = ?1 AND incident = ?2), ?3, ?4, ?5)",
            params![self.tenant, id, self.now_ms, kind, detail],
        )?;
        Ok(())
    }
}

fn incident_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Incident> {
    Ok(Incident {
        id: r.get(0)?,
        root: r.get(1)?,
        title: r.get(2)?,
        status: r.get(3)?,
        acknowledged: r.get(4)?,
        opened_ms: r.get(5)?,
        updated_ms: r.get(6)?,
        closed_ms: r.get(7)?,
        policy: r.get(8)?,
        children: Vec::new(),
    })
}

const INCIDENT_COLUMNS: &str =
    "id, root, title, status, acknowledged, opened_ms, updated_ms, closed_ms, policy";

fn children(conn: &rusqlite::Connection, tenant: &str, id: i64) -> rusqlite::Result<Vec<String>> {
    let mut stmt = conn.prepare_cached(
        "SELECT DISTINCT device FROM incident_alerts
         WHERE tenant = ?1 AND incident = ?2 AND role = 'child' AND device IS NOT NULL
         ORDER BY device",
    )?;
    let rows = stmt.query_map(params![tenant, id], |r| r.get(0))?;
    rows.collect()
}

/// The tenant's incidents, newest first; `status`: only `open` or `resolved` ones.
pub fn list(
    state: &StateStore,
    tenant: &str,
    status: Option<&str>,
    limit: usize,
) -> Result<Vec<Incident>, StoreError> {
    Ok(state.with_reader(|conn| {
        let mut stmt = conn.prepare(&format!(
            "SELECT {INCIDENT_COLUMNS} FROM incidents
             WHERE tenant = ?1 AND (?2 IS NULL OR status = ?2) ORDER BY id DESC LIMIT ?3"
        ))?;
        let mut list: Vec<Incident> = stmt
            .query_map(params![tenant, status, limit as i64], incident_row)?
            .collect::<rusqlite::Result<_>>()?;
        for i in &mut list {
            i.children = children(conn, tenant, i.id)?;
        }
        Ok(list)
    })?)
}

/// One incident with its alerts and timeline.
pub fn detail(
    state: &StateStore,
    tenant: &str,
    id: i64,
) -> Result<Option<IncidentDetail>, StoreError> {
    Ok(state.with_reader(|conn| {
        let Some(mut incident) = conn
            .query_row(
                &format!("SELECT {INCIDENT_COLUMNS} FROM incidents WHERE tenant = ?1 AND id = ?2"),
                params![tenant, id],
                incident_row,
            )
            .optional()?
        else {
            return Ok(None);
        };
        incident.children = children(conn, tenant, id)?;
        let mut stmt = conn.prepare(
            "SELECT fingerprint, device, role, reason, added_ms, resolved_ms FROM incident_alerts
             WHERE tenant = ?1 AND incident = ?2 ORDER BY role DESC, device, fingerprint",
        )?;
        let alerts = stmt
            .query_map(params![tenant, id], |r| {
                Ok(IncidentAlert {
                    fingerprint: r.get(0)?,
                    device: r.get(1)?,
                    role: r.get(2)?,
                    reason: r.get(3)?,
                    added_ms: r.get(4)?,
                    resolved_ms: r.get(5)?,
                })
            })?
            .collect::<rusqlite::Result<_>>()?;
        let mut stmt = conn.prepare(
            "SELECT at_ms, kind, detail FROM incident_events
             WHERE tenant = ?1 AND incident = ?2 ORDER BY seq",
        )?;
        let timeline = stmt
            .query_map(params![tenant, id], |r| {
                Ok(TimelineEvent {
                    at_ms: r.get(0)?,
                    kind: r.get(1)?,
                    detail: r.get(2)?,
                })
            })?
            .collect::<rusqlite::Result<_>>()?;
        Ok(Some(IncidentDetail {
            incident,
            alerts,
            timeline,
        }))
    })?)
}

/// Acknowledge (an operator has it) or resolve (by hand) an incident; `false` if none.
pub fn set(
    state: &StateStore,
    tenant: &str,
    id: i64,
    resolve: bool,
    by: &str,
) -> Result<bool, StoreError> {
    let now = crate::now_ms();
    Ok(state.with_writer(|conn| {
        let tx = conn.transaction()?;
        let sql = if resolve {
            "UPDATE incidents SET status = 'resolved', closed_ms = IFNULL(closed_ms, ?3), updated_ms = ?3
             WHERE tenant = ?1 AND id = ?2"
        } else {
            "UPDATE incidents SET acknowledged = 1, updated_ms = ?3 WHERE tenant = ?1 AND id = ?2"
        };
        let n = tx.execute(sql, params![tenant, id, now])?;
        if n > 0 {
            tx.execute(
                "INSERT INTO incident_events (tenant, incident, seq, at_ms, kind, detail)
                 VALUES (?1, ?2, (SELECT IFNULL(MAX(seq), 0) + 1 FROM incident_events
                                  WHERE tenant = ?1 AND incident = ?2), ?3, ?4, ?5)",
                params![tenant, id, now, if resolve { "resolved by hand" } else { "acknowledged" }, by],
            )?;
        }
        tx.commit()?;
        Ok(n > 0)
    })?)
}

/// The open incidents as a policy sees them.
pub fn open_for_policy(state: &StateStore, tenant: &str) -> Result<Vec<WitIncident>, StoreError> {
    Ok(state.with_reader(|conn| {
        let mut stmt = conn.prepare_cached(
            "SELECT id, root, title, opened_ms FROM incidents
             WHERE tenant = ?1 AND status = 'open' ORDER BY id",
        )?;
        let heads: Vec<(i64, String, String, i64)> = stmt
            .query_map([tenant], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })?
            .collect::<rusqlite::Result<_>>()?;
        let mut out = Vec::with_capacity(heads.len());
        for (id, root, title, opened_ms) in heads {
            out.push(WitIncident {
                id: id as u64,
                root,
                title,
                children: children(conn, tenant, id)?,
                opened_ms,
            });
        }
        Ok(out)
    })?)
}

/// The wire status of a stored one.
pub fn wit_status(s: AlertStatus) -> WitAlertStatus {
    match s {
        AlertStatus::Firing => WitAlertStatus::Firing,
        AlertStatus::Resolved => WitAlertStatus::Resolved,
    }
}
