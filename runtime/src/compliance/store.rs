//! Compliance's tables in the state database: rule file versions and which is active,
//! waivers, and audit reports (kept up to `keep_audits` per tenant). Deleting a tenant
//! deletes its rows (foreign keys cascade).

use super::ComplianceConfig;
use super::audit::{Report, Summary, Waiver};
use crate::state::{StateError, StateStore};
use rusqlite::{OptionalExtension, params};
use serde::Serialize;
use sha2::Digest;

#[derive(Clone, Debug, Serialize)]
pub struct RuleFileInfo {
    pub file: String,
    pub active_version: Option<u32>,
    pub versions: u32,
    pub latest_version: u32,
}

#[derive(Clone, Debug, Serialize)]
pub struct RuleVersion {
    pub version: u32,
    pub sha256: String,
    pub bytes: usize,
    pub uploaded_ms: i64,
    pub active: bool,
}

#[derive(Clone, Debug, Serialize)]
pub struct AuditInfo {
    pub id: i64,
    pub started_ms: i64,
    pub finished_ms: i64,
    pub trigger: String,
    pub summary: Summary,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error("{0}")]
    Quota(String),
    #[error("{0}")]
    NotFound(String),
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::State(StateError::Db(e))
    }
}

/// Store a new version of a rule file; returns its number. An upload identical to the newest
/// version returns that version.
pub fn add_version(
    state: &StateStore,
    limits: &ComplianceConfig,
    tenant: &str,
    file: &str,
    text: &str,
) -> Result<(u32, bool), StoreError> {
    let sha = hex::encode(sha2::Sha256::digest(text.as_bytes()));
    let outcome = state.with_writer(|conn| {
        let tx = conn.transaction()?;
        let files: u32 = tx.query_row(
            "SELECT COUNT(*) FROM compliance_rule_files WHERE tenant = ?1 AND file != ?2",
            params![tenant, file],
            |r| r.get(0),
        )?;
        let exists: bool = tx
            .query_row(
                "SELECT 1 FROM compliance_rule_files WHERE tenant = ?1 AND file = ?2",
                params![tenant, file],
                |_| Ok(true),
            )
            .optional()?
            .unwrap_or(false);
        if !exists && files >= limits.max_rule_files {
            return Ok(Err(format!(
                "the tenant has {files} rule files, the limit (compliance.max_rule_files)"
            )));
        }
        let newest: Option<(u32, String)> = tx
            .query_row(
                "SELECT version, sha256 FROM compliance_rule_versions WHERE tenant = ?1 AND file = ?2
                 ORDER BY version DESC LIMIT 1",
                params![tenant, file],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        if let Some((v, s)) = &newest
            && *s == sha
        {
            return Ok(Ok((*v, false)));
        }
        let version = newest.map_or(1, |(v, _)| v + 1);
        tx.execute(
            "INSERT OR IGNORE INTO compliance_rule_files (tenant, file) VALUES (?1, ?2)",
            params![tenant, file],
        )?;
        tx.execute(
            "INSERT INTO compliance_rule_versions (tenant, file, version, text, sha256, uploaded_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![tenant, file, version, text, sha, crate::now_ms()],
        )?;
        // Keep the newest `max_versions_per_file`, and always the active and previous ones.
        tx.execute(
            "DELETE FROM compliance_rule_versions WHERE tenant = ?1 AND file = ?2 AND version <= ?3
             AND version NOT IN (SELECT IFNULL(active_version, 0) FROM compliance_rule_files WHERE tenant = ?1 AND file = ?2)
             AND version NOT IN (SELECT IFNULL(previous_version, 0) FROM compliance_rule_files WHERE tenant = ?1 AND file = ?2)",
            params![tenant, file, i64::from(version) - i64::from(limits.max_versions_per_file)],
        )?;
        tx.commit()?;
        Ok(Ok((version, true)))
    })?;
    outcome.map_err(StoreError::Quota)
}

pub fn files(state: &StateStore, tenant: &str) -> Result<Vec<RuleFileInfo>, StoreError> {
    Ok(state.with_reader(|conn| {
        let mut stmt = conn.prepare(
            "SELECT f.file, f.active_version, COUNT(v.version), MAX(v.version)
             FROM compliance_rule_files f JOIN compliance_rule_versions v
               ON v.tenant = f.tenant AND v.file = f.file
             WHERE f.tenant = ?1 GROUP BY f.file ORDER BY f.file",
        )?;
        let rows = stmt.query_map([tenant], |r| {
            Ok(RuleFileInfo {
                file: r.get(0)?,
                active_version: r.get(1)?,
                versions: r.get(2)?,
                latest_version: r.get(3)?,
            })
        })?;
        rows.collect()
    })?)
}

pub fn versions(
    state: &StateStore,
    tenant: &str,
    file: &str,
) -> Result<Vec<RuleVersion>, StoreError> {
    let active = active_version(state, tenant, file)?;
    let list = state.with_reader(|conn| {
        let mut stmt = conn.prepare(
            "SELECT version, sha256, LENGTH(text), uploaded_ms FROM compliance_rule_versions
             WHERE tenant = ?1 AND file = ?2 ORDER BY version",
        )?;
        let rows = stmt.query_map(params![tenant, file], |r| {
            let version: u32 = r.get(0)?;
            Ok(RuleVersion {
                version,
                sha256: r.get(1)?,
                bytes: r.get(2)?,
                uploaded_ms: r.get(3)?,
                active: Some(version) == active,
            })
        })?;
        rows.collect::<Result<Vec<_>, _>>()
    })?;
    if list.is_empty() {
        return Err(StoreError::NotFound(format!("no rule file `{file}`")));
    }
    Ok(list)
}

pub fn text(
    state: &StateStore,
    tenant: &str,
    file: &str,
    version: u32,
) -> Result<String, StoreError> {
    state
        .with_reader(|conn| {
            conn.query_row(
                "SELECT text FROM compliance_rule_versions WHERE tenant = ?1 AND file = ?2 AND version = ?3",
                params![tenant, file, version],
                |r| r.get(0),
            )
            .optional()
        })?
        .ok_or_else(|| StoreError::NotFound(format!("no version {version} of rule file `{file}`")))
}

pub fn active_version(
    state: &StateStore,
    tenant: &str,
    file: &str,
) -> Result<Option<u32>, StoreError> {
    Ok(state
        .with_reader(|conn| {
            conn.query_row(
                "SELECT active_version FROM compliance_rule_files WHERE tenant = ?1 AND file = ?2",
                params![tenant, file],
                |r| r.get::<_, Option<u32>>(0),
            )
            .optional()
        })?
        .flatten())
}

/// Every active (file, version) of the tenant.
pub fn active(state: &StateStore, tenant: &str) -> Result<Vec<(String, u32)>, StoreError> {
    Ok(state.with_reader(|conn| {
        let mut stmt = conn.prepare(
            "SELECT file, active_version FROM compliance_rule_files
             WHERE tenant = ?1 AND active_version IS NOT NULL ORDER BY file",
        )?;
        let rows = stmt.query_map([tenant], |r| Ok((r.get(0)?, r.get(1)?)))?;
        rows.collect()
    })?)
}

/// Make `version` active; the one it replaces becomes the rollback target.
pub fn activate(
    state: &StateStore,
    tenant: &str,
    file: &str,
    version: u32,
) -> Result<(), StoreError> {
    text(state, tenant, file, version)?;
    state.with_writer(|conn| {
        conn.execute(
            "UPDATE compliance_rule_files SET
               previous_version = CASE WHEN active_version = ?3 THEN previous_version ELSE active_version END,
               active_version = ?3
             WHERE tenant = ?1 AND file = ?2",
            params![tenant, file, version],
        )
    })?;
    Ok(())
}

/// Back to the version active before the current one; returns it.
pub fn rollback(state: &StateStore, tenant: &str, file: &str) -> Result<u32, StoreError> {
    let previous: Option<u32> = state
        .with_reader(|conn| {
            conn.query_row(
                "SELECT previous_version FROM compliance_rule_files WHERE tenant = ?1 AND file = ?2",
                params![tenant, file],
                |r| r.get(0),
            )
            .optional()
        })?
        .flatten();
    let previous = previous.ok_or_else(|| {
        StoreError::NotFound(format!("rule file `{file}` has no earlier active version"))
    })?;
    state.with_writer(|conn| {
        conn.execute(
            "UPDATE compliance_rule_files SET previous_version = active_version, active_version = ?3
             WHERE tenant = ?1 AND file = ?2",
            params![tenant, file, previous],
        )
    })?;
    Ok(previous)
}

pub fn delete_file(state: &StateStore, tenant: &str, file: &str) -> Result<(), StoreError> {
    let deleted = state.with_writer(|conn| {
        let tx = conn.transaction()?;
        tx.execute(
            "DELETE FROM compliance_rule_versions WHERE tenant = ?1 AND file = ?2",
            params![tenant, file],
        )?;
        let n = tx.execute(
            "DELETE FROM compliance_rule_files WHERE tenant = ?1 AND file = ?2",
            params![tenant, file],
        )?;
        tx.commit()?;
        Ok(n)
    })?;
    if deleted == 0 {
        return Err(StoreError::NotFound(format!("no rule file `{file}`")));
    }
    Ok(())
}

pub fn add_waiver(
    state: &StateStore,
    limits: &ComplianceConfig,
    tenant: &str,
    w: &Waiver,
) -> Result<(), StoreError> {
    let outcome = state.with_writer(|conn| {
        let now = crate::now_ms();
        // Expired waivers make room: they are history, not state.
        conn.execute(
            "DELETE FROM compliance_waivers WHERE tenant = ?1 AND expires_ms <= ?2",
            params![tenant, now],
        )?;
        let n: u32 = conn.query_row(
            "SELECT COUNT(*) FROM compliance_waivers WHERE tenant = ?1",
            [tenant],
            |r| r.get(0),
        )?;
        if n >= limits.max_waivers {
            return Ok(Err(format!(
                "the tenant has {n} waivers, the limit (compliance.max_waivers)"
            )));
        }
        conn.execute(
            "INSERT INTO compliance_waivers (tenant, id, device, rule, reason, expires_ms, created_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![tenant, w.id, w.device, w.rule, w.reason, w.expires_ms, w.created_ms],
        )?;
        Ok(Ok(()))
    })?;
    outcome.map_err(StoreError::Quota)
}

pub fn waivers(state: &StateStore, tenant: &str) -> Result<Vec<Waiver>, StoreError> {
    Ok(state.with_reader(|conn| {
        let mut stmt = conn.prepare(
            "SELECT id, device, rule, reason, expires_ms, created_ms FROM compliance_waivers
             WHERE tenant = ?1 ORDER BY device, rule",
        )?;
        let rows = stmt.query_map([tenant], |r| {
            Ok(Waiver {
                id: r.get(0)?,
                device: r.get(1)?,
                rule: r.get(2)?,
                reason: r.get(3)?,
                expires_ms: r.get(4)?,
                created_ms: r.get(5)?,
            })
        })?;
        rows.collect()
    })?)
}

pub fn delete_waiver(state: &StateStore, tenant: &str, id: &str) -> Result<(), StoreError> {
    let n = state.with_writer(|conn| {
        conn.execute(
            "DELETE FROM compliance_waivers WHERE tenant = ?1 AND id = ?2",
            params![tenant, id],
        )
    })?;
    if n == 0 {
        return Err(StoreError::NotFound(format!("no waiver `{id}`")));
    }
    Ok(())
}

/// Store a finished audit; returns its id. Only the newest `keep_audits` are kept.
pub fn save_audit(
    state: &StateStore,
    limits: &ComplianceConfig,
    tenant: &str,
    started_ms: i64,
    trigger: &str,
    report: &Report,
) -> Result<i64, StoreError> {
    let summary = serde_json::to_string(&report.summary).unwrap_or_default();
    let body = serde_json::to_string(report).unwrap_or_default();
    Ok(state.with_writer(|conn| {
        let tx = conn.transaction()?;
        let id: i64 = tx.query_row(
            "SELECT IFNULL(MAX(id), 0) + 1 FROM compliance_audits WHERE tenant = ?1",
            [tenant],
            |r| r.get(0),
        )?;
        tx.execute(
            "INSERT INTO compliance_audits (tenant, id, started_ms, finished_ms, trigger, summary, report)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![tenant, id, started_ms, crate::now_ms(), trigger, summary, body],
        )?;
        tx.execute(
            "DELETE FROM compliance_audits WHERE tenant = ?1 AND id <= ?2",
            params![tenant, id - i64::from(limits.keep_audits)],
        )?;
        tx.commit()?;
        Ok(id)
    })?)
}

pub fn audits(state: &StateStore, tenant: &str) -> Result<Vec<AuditInfo>, StoreError> {
    Ok(state.with_reader(|conn| {
        let mut stmt = conn.prepare(
            "SELECT id, started_ms, finished_ms, trigger, summary FROM compliance_audits
             WHERE tenant = ?1 ORDER BY id",
        )?;
        let rows = stmt.query_map([tenant], |r| {
            let summary: String = r.get(4)?;
            Ok(AuditInfo {
                id: r.get(0)?,
                started_ms: r.get(1)?,
                finished_ms: r.get(2)?,
                trigger: r.get(3)?,
                summary: serde_json::from_str(&summary).unwrap_or_default(),
            })
        })?;
        rows.collect()
    })?)
}

/// An audit's report; `None` for the id: the newest.
pub fn audit_report(
    state: &StateStore,
    tenant: &str,
    id: Option<i64>,
) -> Result<(i64, Report), StoreError> {
    let row: Option<(i64, String)> = state.with_reader(|conn| {
        match id {
            Some(id) => conn.query_row(
                "SELECT id, report FROM compliance_audits WHERE tenant = ?1 AND id = ?2",
                params![tenant, id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            ),
            None => conn.query_row(
                "SELECT id, report FROM compliance_audits WHERE tenant = ?1 ORDER BY id DESC LIMIT 1",
                [tenant],
                |r| Ok((r.get(0)?, r.get(1)?)),
            ),
        }
        .optional()
    })?;
    let (id, text) = row.ok_or_else(|| {
        StoreError::NotFound(match id {
            Some(id) => format!("no audit {id}"),
            None => "no audit has run yet".to_string(),
        })
    })?;
    let report = serde_json::from_str(&text)
        .map_err(|e| StoreError::State(StateError::Crypto(format!("audit {id}: {e}"))))?;
    Ok((id, report))
}
