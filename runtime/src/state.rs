//! Management state in SQLite: tenants, tokens, components, versions, activations, secrets.
//!
//! This is small, relational, transactional data read by key, which is what SQLite is for.
//! WAL mode with `synchronous = FULL`: a management change the API has answered survives a
//! crash or power loss. Schema changes are numbered migrations tracked in `user_version`.
//!
//! One connection writes (under a mutex: SQLite has one writer); reads go through a small
//! pool of their own connections, which WAL lets read while the writer syncs — a read never
//! waits behind a write. Tokens and tenants, looked up on every request, are also kept in
//! memory, changed together with their tables. Every method blocks (on SQLite, and on fsync
//! for writes): callers on an async runtime run them on its blocking pool.

use crate::crypto::SecretBox;
use crate::inventory::Device;
use crate::tokens::{AuthError, Role, Scope, Scopes, TokenIndex, TokenInfo};
use parking_lot::{Mutex, RwLock};
use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;
use std::path::Path;

const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE tenants (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    max_components INTEGER NOT NULL,
    max_memory_bytes INTEGER NOT NULL
);
CREATE TABLE tokens (
    id TEXT PRIMARY KEY,
    tenant TEXT REFERENCES tenants(id) ON DELETE CASCADE,
    role TEXT NOT NULL CHECK (role IN ('admin', 'tenant')),
    hash TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    created_ms INTEGER NOT NULL
);
CREATE TABLE components (
    tenant TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    active_version INTEGER,
    created_ms INTEGER NOT NULL,
    last_tick_seq INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant, name)
);
CREATE TABLE versions (
    tenant TEXT NOT NULL,
    component TEXT NOT NULL,
    version INTEGER NOT NULL,
    label TEXT NOT NULL,
    manifest TEXT NOT NULL,
    wasm_sha256 TEXT NOT NULL,
    wasm_bytes INTEGER NOT NULL,
    uploaded_ms INTEGER NOT NULL,
    status TEXT NOT NULL,
    status_detail TEXT,
    PRIMARY KEY (tenant, component, version),
    FOREIGN KEY (tenant, component) REFERENCES components(tenant, name) ON DELETE CASCADE
);
CREATE TABLE activations (
    tenant TEXT NOT NULL,
    component TEXT NOT NULL,
    version INTEGER NOT NULL,
    at_ms INTEGER NOT NULL,
    ok INTEGER NOT NULL,
    detail TEXT,
    FOREIGN KEY (tenant, component) REFERENCES components(tenant, name) ON DELETE CASCADE
);
CREATE TABLE secrets (
    tenant TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    nonce BLOB NOT NULL,
    ciphertext BLOB NOT NULL,
    updated_ms INTEGER NOT NULL,
    PRIMARY KEY (tenant, name)
);
"#,
    r#"
CREATE TABLE tenant_settings (
    tenant TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    updated_ms INTEGER NOT NULL,
    PRIMARY KEY (tenant, key)
);
"#,
    r#"
CREATE TABLE devices (
    tenant TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    doc TEXT NOT NULL,
    updated_ms INTEGER NOT NULL,
    PRIMARY KEY (tenant, name)
);
CREATE TABLE device_interfaces (
    tenant TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    device TEXT NOT NULL,
    if_index INTEGER NOT NULL,
    name TEXT NOT NULL,
    updated_ms INTEGER NOT NULL,
    PRIMARY KEY (tenant, device, if_index)
);
CREATE TABLE ssh_host_keys (
    tenant TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    device TEXT NOT NULL,
    key TEXT NOT NULL,
    first_seen_ms INTEGER NOT NULL,
    PRIMARY KEY (tenant, device)
);
"#,
    // Scoped, expiring tokens. Tokens from before scopes keep full access to their tenant.
    r#"
ALTER TABLE tokens ADD COLUMN scopes TEXT NOT NULL DEFAULT 'admin';
ALTER TABLE tokens ADD COLUMN expires_ms INTEGER;
"#,
    // The key that sealed each secret (NULL: sealed before key ids; see crypto).
    r#"
ALTER TABLE secrets ADD COLUMN key_id TEXT;
"#,
    // Per-tenant budgets (see budget.rs); NULL: the configured defaults.
    r#"
ALTER TABLE tenants ADD COLUMN max_series INTEGER;
ALTER TABLE tenants ADD COLUMN max_instances INTEGER;
ALTER TABLE tenants ADD COLUMN max_concurrent_calls INTEGER;
"#,
    // Golden-config compliance (see compliance/store.rs).
    r#"
CREATE TABLE compliance_rule_versions (
    tenant TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    file TEXT NOT NULL,
    version INTEGER NOT NULL,
    text TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    uploaded_ms INTEGER NOT NULL,
    PRIMARY KEY (tenant, file, version)
);
CREATE TABLE compliance_rule_files (
    tenant TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    file TEXT NOT NULL,
    active_version INTEGER,
    previous_version INTEGER,
    PRIMARY KEY (tenant, file)
);
CREATE TABLE compliance_waivers (
    tenant TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    id TEXT NOT NULL,
    device TEXT NOT NULL,
    rule TEXT NOT NULL,
    reason TEXT NOT NULL,
    expires_ms INTEGER NOT NULL,
    created_ms INTEGER NOT NULL,
    PRIMARY KEY (tenant, id)
);
CREATE TABLE compliance_audits (
    tenant TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    id INTEGER NOT NULL,
    started_ms INTEGER NOT NULL,
    finished_ms INTEGER NOT NULL,
    trigger TEXT NOT NULL,
    summary TEXT NOT NULL,
    report TEXT NOT NULL,
    PRIMARY KEY (tenant, id)
);
"#,
    // Alert intake and the tenant's alerts (see correlation/store.rs).
    r#"
CREATE TABLE alert_intakes (
    tenant TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    id INTEGER NOT NULL,
    received_ms INTEGER NOT NULL,
    source TEXT NOT NULL,
    digest TEXT NOT NULL,
    alerts INTEGER NOT NULL,
    bytes INTEGER NOT NULL,
    duplicate INTEGER NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (tenant, id)
);
CREATE INDEX alert_intakes_digest ON alert_intakes (tenant, digest);
CREATE TABLE alerts (
    tenant TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    fingerprint TEXT NOT NULL,
    status TEXT NOT NULL,
    labels TEXT NOT NULL,
    annotations TEXT NOT NULL,
    device TEXT,
    starts_ms INTEGER,
    ends_ms INTEGER,
    first_seen_ms INTEGER NOT NULL,
    last_seen_ms INTEGER NOT NULL,
    intake INTEGER NOT NULL,
    PRIMARY KEY (tenant, fingerprint)
);
"#,
    // Incidents and what correlation decided about each alert (see correlation/incidents.rs).
    r#"
ALTER TABLE alerts ADD COLUMN decision TEXT;
ALTER TABLE alerts ADD COLUMN reason TEXT;
ALTER TABLE alerts ADD COLUMN incident INTEGER;
ALTER TABLE alerts ADD COLUMN hold_until_ms INTEGER;
CREATE INDEX alerts_held ON alerts (tenant, hold_until_ms) WHERE hold_until_ms IS NOT NULL;
CREATE TABLE incidents (
    tenant TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    id INTEGER NOT NULL,
    root TEXT NOT NULL,
    title TEXT NOT NULL,
    status TEXT NOT NULL,
    acknowledged INTEGER NOT NULL DEFAULT 0,
    opened_ms INTEGER NOT NULL,
    updated_ms INTEGER NOT NULL,
    closed_ms INTEGER,
    policy TEXT NOT NULL,
    PRIMARY KEY (tenant, id)
);
CREATE TABLE incident_alerts (
    tenant TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    incident INTEGER NOT NULL,
    fingerprint TEXT NOT NULL,
    device TEXT,
    role TEXT NOT NULL,
    reason TEXT NOT NULL,
    added_ms INTEGER NOT NULL,
    resolved_ms INTEGER,
    PRIMARY KEY (tenant, incident, fingerprint)
);
CREATE TABLE incident_events (
    tenant TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    incident INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    at_ms INTEGER NOT NULL,
    kind TEXT NOT NULL,
    detail TEXT NOT NULL,
    PRIMARY KEY (tenant, incident, seq)
);
"#,
    // What a correlation policy reads per batch, by index rather than by scanning the
    // tenant's alerts (see correlation/engine.rs).
    r#"
CREATE INDEX alerts_device ON alerts (tenant, device, status);
CREATE INDEX alerts_resolved ON alerts (tenant, status, last_seen_ms);
CREATE INDEX incident_alerts_role ON incident_alerts (tenant, incident, role, device);
"#,
];

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("state database: {0}")]
    Db(#[from] rusqlite::Error),
    #[error("secret store: {0}")]
    Crypto(String),
}

#[derive(Clone, Debug, Serialize)]
pub struct Tenant {
    pub id: String,
    pub name: String,
    pub created_ms: i64,
    pub max_components: u32,
    pub max_memory_bytes: u64,
    /// `None`: the configured default (`tenant_defaults`).
    pub max_series: Option<u64>,
    pub max_instances: Option<u32>,
    pub max_concurrent_calls: Option<u32>,
}

#[derive(Clone, Debug, Serialize)]
pub struct VersionRecord {
    pub version: u32,
    pub label: String,
    #[serde(skip)]
    pub manifest: String,
    pub wasm_sha256: String,
    pub wasm_bytes: u64,
    pub uploaded_ms: i64,
    /// uploaded | active | inactive | failed
    pub status: String,
    pub status_detail: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct ComponentRecord {
    pub tenant: String,
    pub name: String,
    pub active_version: Option<u32>,
    pub created_ms: i64,
    pub last_tick_seq: u64,
}

pub struct StateStore {
    conn: Mutex<Connection>,
    /// Read-only connections (see the module doc).
    readers: Vec<Mutex<Connection>>,
    secrets: SecretBox,
    /// Every token by hash, changed under `conn`'s lock together with the table.
    tokens: RwLock<TokenIndex>,
    /// Every tenant by id, likewise.
    tenants: RwLock<std::collections::HashMap<String, Tenant>>,
}

/// Read connections of the pool.
const READERS: usize = 4;

impl StateStore {
    pub fn open(path: &Path, secrets: SecretBox) -> Result<Self, StateError> {
        let mut conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        migrate(&mut conn)?;
        let tokens = RwLock::new(load_tokens(&conn)?);
        let readers = (0..READERS)
            .map(|_| {
                let reader = Connection::open_with_flags(
                    path,
                    rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY
                        | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
                )?;
                reader.busy_timeout(std::time::Duration::from_secs(5))?;
                Ok(Mutex::new(reader))
            })
            .collect::<Result<Vec<_>, rusqlite::Error>>()?;
        let store = StateStore {
            conn: Mutex::new(conn),
            readers,
            secrets,
            tokens,
            tenants: RwLock::new(Default::default()),
        };
        let all = store.tenants()?;
        *store.tenants.write() = all.into_iter().map(|t| (t.id.clone(), t)).collect();
        Ok(store)
    }

    /// Run `f` on the write connection (subsystems that own their tables, e.g. compliance).
    pub(crate) fn with_writer<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T>,
    ) -> Result<T, StateError> {
        Ok(f(&mut self.conn.lock())?)
    }

    /// Run `f` on a read connection.
    pub(crate) fn with_reader<T>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> Result<T, StateError> {
        Ok(f(&self.read())?)
    }

    /// A read connection: a free one of the pool, else the first to come free.
    fn read(&self) -> parking_lot::MutexGuard<'_, Connection> {
        for reader in &self.readers {
            if let Some(guard) = reader.try_lock() {
                return guard;
            }
        }
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let i = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % self.readers.len();
        self.readers[i].lock()
    }

    // ---- tenants -------------------------------------------------------------------------

    pub fn create_tenant(&self, t: &Tenant) -> Result<bool, StateError> {
        let conn = self.conn.lock();
        let n = conn.execute(
            "INSERT OR IGNORE INTO tenants (id, name, created_ms, max_components, max_memory_bytes,
                 max_series, max_instances, max_concurrent_calls)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![
                t.id,
                t.name,
                t.created_ms,
                t.max_components,
                t.max_memory_bytes as i64,
                t.max_series.map(|n| n.min(i64::MAX as u64) as i64),
                t.max_instances,
                t.max_concurrent_calls
            ],
        )?;
        if n == 1 {
            self.tenants.write().insert(t.id.clone(), t.clone());
        }
        Ok(n == 1)
    }

    pub fn tenants(&self) -> Result<Vec<Tenant>, StateError> {
        let conn = self.read();
        let mut stmt = conn.prepare(
            "SELECT id, name, created_ms, max_components, max_memory_bytes, max_series, max_instances, max_concurrent_calls FROM tenants ORDER BY id",
        )?;
        let rows = stmt.query_map([], tenant_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// A tenant by id (from memory).
    /// The ids of every tenant, from memory.
    pub fn tenant_ids(&self) -> Vec<String> {
        self.tenants.read().keys().cloned().collect()
    }

    pub fn tenant(&self, id: &str) -> Result<Option<Tenant>, StateError> {
        Ok(self.tenants.read().get(id).cloned())
    }

    pub fn delete_tenant(&self, id: &str) -> Result<bool, StateError> {
        let conn = self.conn.lock();
        let deleted = conn.execute("DELETE FROM tenants WHERE id = ?1", [id])? == 1;
        self.tokens.write().remove_tenant(id);
        self.tenants.write().remove(id);
        Ok(deleted)
    }

    // ---- tokens --------------------------------------------------------------------------

    pub fn insert_token(&self, info: &TokenInfo, hash: &str) -> Result<(), StateError> {
        let conn = self.conn.lock();
        conn.execute(
            "INSERT INTO tokens (id, tenant, role, hash, name, created_ms, scopes, expires_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![
                info.id,
                info.tenant,
                role_str(info.role),
                hash,
                info.name,
                info.created_ms,
                info.scopes.to_text(),
                info.expires_ms
            ],
        )?;
        self.tokens.write().insert(hash.to_string(), info.clone());
        Ok(())
    }

    /// The token a secret stands for (memory only: no database access).
    pub fn authenticate(&self, token: &str, now_ms: i64) -> Result<TokenInfo, AuthError> {
        self.tokens.read().authenticate(token, now_ms)
    }

    pub fn tokens(&self, tenant: Option<&str>) -> Result<Vec<TokenInfo>, StateError> {
        let conn = self.read();
        let mut stmt = conn.prepare(&format!(
            "SELECT {TOKEN_COLUMNS} FROM tokens
             WHERE (?1 IS NULL AND tenant IS NULL) OR tenant = ?1 ORDER BY created_ms"
        ))?;
        let rows = stmt.query_map([tenant], |r| token_from_row(r).map(|(_, t)| t))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Delete a token of `tenant` (`None`: a platform admin token). Refused with
    /// [`RevokeError::LastAdmin`] when it is the last unexpired token with admin rights over
    /// that tenant (or over the platform): nobody could issue another one.
    pub fn delete_token(
        &self,
        id: &str,
        tenant: Option<&str>,
        now_ms: i64,
    ) -> Result<(), RevokeError> {
        let conn = self.conn.lock();
        let mut stmt = conn.prepare(&format!(
            "SELECT {TOKEN_COLUMNS} FROM tokens WHERE (?1 IS NULL AND tenant IS NULL) OR tenant = ?1"
        ))?;
        let peers: Vec<TokenInfo> = stmt
            .query_map([tenant], |r| token_from_row(r).map(|(_, t)| t))?
            .collect::<Result<_, _>>()?;
        drop(stmt);
        let Some(target) = peers.iter().find(|t| t.id == id) else {
            return Err(RevokeError::NotFound);
        };
        let is_admin = |t: &TokenInfo| !t.is_expired(now_ms) && t.scopes.allows(Scope::Admin);
        if is_admin(target) && !peers.iter().any(|t| t.id != id && is_admin(t)) {
            return Err(RevokeError::LastAdmin);
        }
        conn.execute("DELETE FROM tokens WHERE id = ?1", [id])?;
        self.tokens.write().remove_id(id);
        Ok(())
    }

    /// Revoke every token of a tenant (the first step of deleting it).
    pub fn delete_tenant_tokens(&self, tenant: &str) -> Result<(), StateError> {
        let conn = self.conn.lock();
        conn.execute("DELETE FROM tokens WHERE tenant = ?1", [tenant])?;
        self.tokens.write().remove_tenant(tenant);
        Ok(())
    }

    pub fn has_admin_token(&self) -> Result<bool, StateError> {
        let conn = self.conn.lock();
        let n: i64 = conn.query_row(
            "SELECT count(*) FROM tokens WHERE role = 'admin'",
            [],
            |r| r.get(0),
        )?;
        Ok(n > 0)
    }

    // ---- components and versions ---------------------------------------------------------

    /// Insert a new version (creating the component on its first upload); returns its number.
    pub fn add_version(
        &self,
        tenant: &str,
        component: &str,
        label: &str,
        manifest: &str,
        sha256: &str,
        bytes: u64,
    ) -> Result<u32, StateError> {
        let mut conn = self.conn.lock();
        let tx = conn.transaction()?;
        let now = crate::now_ms();
        tx.execute(
            "INSERT OR IGNORE INTO components (tenant, name, created_ms) VALUES (?1, ?2, ?3)",
            params![tenant, component, now],
        )?;
        let next: u32 = tx.query_row(
            "SELECT coalesce(max(version), 0) + 1 FROM versions WHERE tenant = ?1 AND component = ?2",
            params![tenant, component],
            |r| r.get(0),
        )?;
        tx.execute(
            "INSERT INTO versions (tenant, component, version, label, manifest, wasm_sha256, wasm_bytes, uploaded_ms, status)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 'uploaded')",
            params![tenant, component, next, label, manifest, sha256, bytes as i64, now],
        )?;
        tx.commit()?;
        Ok(next)
    }

    pub fn components(&self, tenant: &str) -> Result<Vec<ComponentRecord>, StateError> {
        let conn = self.read();
        let mut stmt = conn.prepare(
            "SELECT tenant, name, active_version, created_ms, last_tick_seq FROM components
             WHERE tenant = ?1 ORDER BY name",
        )?;
        let rows = stmt.query_map([tenant], component_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn all_components(&self) -> Result<Vec<ComponentRecord>, StateError> {
        let conn = self.read();
        let mut stmt = conn.prepare(
            "SELECT tenant, name, active_version, created_ms, last_tick_seq FROM components ORDER BY tenant, name",
        )?;
        let rows = stmt.query_map([], component_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn component(
        &self,
        tenant: &str,
        name: &str,
    ) -> Result<Option<ComponentRecord>, StateError> {
        let conn = self.read();
        Ok(conn
            .query_row(
                "SELECT tenant, name, active_version, created_ms, last_tick_seq FROM components
                 WHERE tenant = ?1 AND name = ?2",
                params![tenant, name],
                component_from_row,
            )
            .optional()?)
    }

    pub fn versions(
        &self,
        tenant: &str,
        component: &str,
    ) -> Result<Vec<VersionRecord>, StateError> {
        let conn = self.read();
        let mut stmt = conn.prepare(
            "SELECT version, label, manifest, wasm_sha256, wasm_bytes, uploaded_ms, status, status_detail
             FROM versions WHERE tenant = ?1 AND component = ?2 ORDER BY version",
        )?;
        let rows = stmt.query_map(params![tenant, component], version_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn version(
        &self,
        tenant: &str,
        component: &str,
        version: u32,
    ) -> Result<Option<VersionRecord>, StateError> {
        let conn = self.read();
        Ok(conn
            .query_row(
                "SELECT version, label, manifest, wasm_sha256, wasm_bytes, uploaded_ms, status, status_detail
                 FROM versions WHERE tenant = ?1 AND component = ?2 AND version = ?3",
                params![tenant, component, version],
                version_from_row,
            )
            .optional()?)
    }

    /// Record a successful activation: the version becomes active, the previous one inactive.
    pub fn record_activation(
        &self,
        tenant: &str,
        component: &str,
        version: u32,
    ) -> Result<(), StateError> {
        let mut conn = self.conn.lock();
        let tx = conn.transaction()?;
        tx.execute(
            "UPDATE versions SET status = 'inactive' WHERE tenant = ?1 AND component = ?2 AND status = 'active'",
            params![tenant, component],
        )?;
        tx.execute(
            "UPDATE versions SET status = 'active', status_detail = NULL
             WHERE tenant = ?1 AND component = ?2 AND version = ?3",
            params![tenant, component, version],
        )?;
        tx.execute(
            "UPDATE components SET active_version = ?3 WHERE tenant = ?1 AND name = ?2",
            params![tenant, component, version],
        )?;
        tx.execute(
            "INSERT INTO activations (tenant, component, version, at_ms, ok) VALUES (?1, ?2, ?3, ?4, 1)",
            params![tenant, component, version, crate::now_ms()],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Record a failed activation attempt; the version is marked failed with the reason.
    pub fn record_failed_activation(
        &self,
        tenant: &str,
        component: &str,
        version: u32,
        reason: &str,
    ) -> Result<(), StateError> {
        let mut conn = self.conn.lock();
        let tx = conn.transaction()?;
        tx.execute(
            "UPDATE versions SET status = 'failed', status_detail = ?4
             WHERE tenant = ?1 AND component = ?2 AND version = ?3",
            params![tenant, component, version, reason],
        )?;
        tx.execute(
            "INSERT INTO activations (tenant, component, version, at_ms, ok, detail) VALUES (?1, ?2, ?3, ?4, 0, ?5)",
            params![tenant, component, version, crate::now_ms(), reason],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// The version that was active before the current one, for a default rollback.
    pub fn previous_active(
        &self,
        tenant: &str,
        component: &str,
    ) -> Result<Option<u32>, StateError> {
        let conn = self.read();
        let current: Option<u32> = conn
            .query_row(
                "SELECT active_version FROM components WHERE tenant = ?1 AND name = ?2",
                params![tenant, component],
                |r| r.get(0),
            )
            .optional()?
            .flatten();
        Ok(conn
            .query_row(
                "SELECT version FROM activations
                 WHERE tenant = ?1 AND component = ?2 AND ok = 1 AND version IS NOT ?3
                 ORDER BY at_ms DESC, rowid DESC LIMIT 1",
                params![tenant, component, current],
                |r| r.get(0),
            )
            .optional()?)
    }

    pub fn set_last_tick_seq(
        &self,
        tenant: &str,
        component: &str,
        seq: u64,
    ) -> Result<(), StateError> {
        let conn = self.conn.lock();
        conn.execute(
            "UPDATE components SET last_tick_seq = max(last_tick_seq, ?3) WHERE tenant = ?1 AND name = ?2",
            params![tenant, component, seq as i64],
        )?;
        Ok(())
    }

    pub fn delete_component(&self, tenant: &str, name: &str) -> Result<bool, StateError> {
        let conn = self.conn.lock();
        Ok(conn.execute(
            "DELETE FROM components WHERE tenant = ?1 AND name = ?2",
            params![tenant, name],
        )? == 1)
    }

    /// Memory limits of the active versions of a tenant, by component.
    pub fn active_manifests(&self, tenant: &str) -> Result<Vec<(String, String)>, StateError> {
        let conn = self.read();
        let mut stmt = conn.prepare(
            "SELECT c.name, v.manifest FROM components c JOIN versions v
             ON v.tenant = c.tenant AND v.component = c.name AND v.version = c.active_version
             WHERE c.tenant = ?1",
        )?;
        let rows = stmt.query_map([tenant], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Whether a version of the tenant's components still refers to this wasm content hash.
    pub fn wasm_in_use(&self, tenant: &str, sha256: &str) -> Result<bool, StateError> {
        let conn = self.read();
        let n: i64 = conn.query_row(
            "SELECT count(*) FROM versions WHERE tenant = ?1 AND wasm_sha256 = ?2",
            params![tenant, sha256],
            |r| r.get(0),
        )?;
        Ok(n > 0)
    }

    /// Every (tenant, wasm hash) a version refers to.
    pub fn version_hashes(&self) -> Result<Vec<(String, String)>, StateError> {
        let conn = self.read();
        let mut stmt = conn.prepare("SELECT DISTINCT tenant, wasm_sha256 FROM versions")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    // ---- tenant settings (JSON documents by key, e.g. "mqtt") ------------------------------

    pub fn put_setting(&self, tenant: &str, key: &str, value: &str) -> Result<(), StateError> {
        let conn = self.conn.lock();
        conn.execute(
            "INSERT INTO tenant_settings (tenant, key, value, updated_ms) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (tenant, key) DO UPDATE SET value = ?3, updated_ms = ?4",
            params![tenant, key, value, crate::now_ms()],
        )?;
        Ok(())
    }

    pub fn delete_setting(&self, tenant: &str, key: &str) -> Result<(), StateError> {
        let conn = self.conn.lock();
        conn.execute(
            "DELETE FROM tenant_settings WHERE tenant = ?1 AND key = ?2",
            params![tenant, key],
        )?;
        Ok(())
    }

    /// One tenant's value for `key`.
    pub fn setting(&self, tenant: &str, key: &str) -> Result<Option<String>, StateError> {
        let conn = self.read();
        Ok(conn
            .query_row(
                "SELECT value FROM tenant_settings WHERE tenant = ?1 AND key = ?2",
                params![tenant, key],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// Every tenant's value for `key`.
    pub fn settings(&self, key: &str) -> Result<Vec<(String, String)>, StateError> {
        let conn = self.read();
        let mut stmt = conn
            .prepare("SELECT tenant, value FROM tenant_settings WHERE key = ?1 ORDER BY tenant")?;
        let rows = stmt.query_map([key], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    // ---- devices -------------------------------------------------------------------------

    /// Insert or replace devices in one transaction; returns how many were new.
    pub fn put_devices(&self, tenant: &str, devices: &[Device]) -> Result<usize, StateError> {
        let mut conn = self.conn.lock();
        let tx = conn.transaction()?;
        let mut created = 0;
        let now = crate::now_ms();
        for d in devices {
            let exists: bool = tx
                .query_row(
                    "SELECT 1 FROM devices WHERE tenant = ?1 AND name = ?2",
                    params![tenant, d.name],
                    |_| Ok(true),
                )
                .optional()?
                .unwrap_or(false);
            created += usize::from(!exists);
            let doc = serde_json::to_string(d).map_err(|e| StateError::Crypto(e.to_string()))?;
            tx.execute(
                "INSERT INTO devices (tenant, name, doc, updated_ms) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (tenant, name) DO UPDATE SET doc = ?3, updated_ms = ?4",
                params![tenant, d.name, doc, now],
            )?;
        }
        tx.commit()?;
        Ok(created)
    }

    pub fn device(&self, tenant: &str, name: &str) -> Result<Option<Device>, StateError> {
        let conn = self.read();
        let doc: Option<String> = conn
            .query_row(
                "SELECT doc FROM devices WHERE tenant = ?1 AND name = ?2",
                params![tenant, name],
                |r| r.get(0),
            )
            .optional()?;
        Ok(doc.and_then(|d| serde_json::from_str(&d).ok()))
    }

    pub fn devices(&self, tenant: &str) -> Result<Vec<Device>, StateError> {
        let conn = self.read();
        let mut stmt = conn.prepare("SELECT doc FROM devices WHERE tenant = ?1 ORDER BY name")?;
        let rows = stmt.query_map([tenant], |r| r.get::<_, String>(0))?;
        let mut out = Vec::new();
        for doc in rows {
            if let Ok(d) = serde_json::from_str(&doc?) {
                out.push(d);
            }
        }
        Ok(out)
    }

    pub fn delete_device(&self, tenant: &str, name: &str) -> Result<bool, StateError> {
        let conn = self.conn.lock();
        conn.execute(
            "DELETE FROM ssh_host_keys WHERE tenant = ?1 AND device = ?2",
            params![tenant, name],
        )?;
        conn.execute(
            "DELETE FROM device_interfaces WHERE tenant = ?1 AND device = ?2",
            params![tenant, name],
        )?;
        Ok(conn.execute(
            "DELETE FROM devices WHERE tenant = ?1 AND name = ?2",
            params![tenant, name],
        )? == 1)
    }

    /// Replace a device's interface-name table.
    pub fn set_interface_names(
        &self,
        tenant: &str,
        device: &str,
        names: &[(u32, String)],
    ) -> Result<(), StateError> {
        let mut conn = self.conn.lock();
        let tx = conn.transaction()?;
        tx.execute(
            "DELETE FROM device_interfaces WHERE tenant = ?1 AND device = ?2",
            params![tenant, device],
        )?;
        let now = crate::now_ms();
        for (index, name) in names {
            tx.execute(
                "INSERT OR REPLACE INTO device_interfaces (tenant, device, if_index, name, updated_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![tenant, device, index, name, now],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    pub fn interface_names(
        &self,
        tenant: &str,
        device: &str,
    ) -> Result<Vec<(u32, String)>, StateError> {
        let conn = self.read();
        let mut stmt = conn.prepare(
            "SELECT if_index, name FROM device_interfaces WHERE tenant = ?1 AND device = ?2 ORDER BY if_index",
        )?;
        let rows = stmt.query_map(params![tenant, device], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The pinned SSH host key of a device, if any.
    pub fn ssh_host_key(&self, tenant: &str, device: &str) -> Result<Option<String>, StateError> {
        let conn = self.read();
        Ok(conn
            .query_row(
                "SELECT key FROM ssh_host_keys WHERE tenant = ?1 AND device = ?2",
                params![tenant, device],
                |r| r.get(0),
            )
            .optional()?)
    }

    pub fn pin_ssh_host_key(
        &self,
        tenant: &str,
        device: &str,
        key: &str,
    ) -> Result<(), StateError> {
        let conn = self.conn.lock();
        conn.execute(
            "INSERT INTO ssh_host_keys (tenant, device, key, first_seen_ms) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (tenant, device) DO UPDATE SET key = ?3, first_seen_ms = ?4",
            params![tenant, device, key, crate::now_ms()],
        )?;
        Ok(())
    }

    pub fn forget_ssh_host_key(&self, tenant: &str, device: &str) -> Result<bool, StateError> {
        let conn = self.conn.lock();
        Ok(conn.execute(
            "DELETE FROM ssh_host_keys WHERE tenant = ?1 AND device = ?2",
            params![tenant, device],
        )? == 1)
    }

    // ---- secrets -------------------------------------------------------------------------

    pub fn put_secret(&self, tenant: &str, name: &str, value: &str) -> Result<(), StateError> {
        let aad = format!("{tenant}/{name}");
        let sealed = self
            .secrets
            .seal(value.as_bytes(), aad.as_bytes())
            .map_err(StateError::Crypto)?;
        let conn = self.conn.lock();
        conn.execute(
            "INSERT INTO secrets (tenant, name, nonce, ciphertext, updated_ms, key_id) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT (tenant, name) DO UPDATE SET nonce = ?3, ciphertext = ?4, updated_ms = ?5, key_id = ?6",
            params![tenant, name, sealed.nonce, sealed.ciphertext, crate::now_ms(), sealed.key_id],
        )?;
        Ok(())
    }

    pub fn secret(&self, tenant: &str, name: &str) -> Result<Option<String>, StateError> {
        let row: Option<(Vec<u8>, Vec<u8>, Option<String>)> = {
            let conn = self.read();
            conn.query_row(
                "SELECT nonce, ciphertext, key_id FROM secrets WHERE tenant = ?1 AND name = ?2",
                params![tenant, name],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?
        };
        let Some((nonce, ciphertext, key_id)) = row else {
            return Ok(None);
        };
        let aad = format!("{tenant}/{name}");
        let plain = self
            .secrets
            .open(&nonce, &ciphertext, aad.as_bytes(), key_id.as_deref())
            .map_err(|e| StateError::Crypto(format!("secret `{name}`: {e}")))?;
        String::from_utf8(plain)
            .map(Some)
            .map_err(|_| StateError::Crypto("secret is not UTF-8".into()))
    }

    /// Seal again, with the current key, every secret sealed with another (key rotation).
    /// Returns (resealed, unreadable): a secret no configured key opens is left as it is.
    pub fn reseal_secrets(&self) -> Result<(usize, usize), StateError> {
        let current = self.secrets.current_key_id().to_string();
        let stale: Vec<(String, String)> = {
            let conn = self.conn.lock();
            let mut stmt = conn
                .prepare("SELECT tenant, name FROM secrets WHERE key_id IS NULL OR key_id != ?1")?;
            let rows = stmt.query_map([&current], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect::<Result<_, _>>()?
        };
        let (mut resealed, mut unreadable) = (0, 0);
        for (tenant, name) in stale {
            match self.secret(&tenant, &name) {
                Ok(Some(value)) => {
                    self.put_secret(&tenant, &name, &value)?;
                    resealed += 1;
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::error!(%tenant, secret = %name, error = %e, "secret not resealed");
                    unreadable += 1;
                }
            }
        }
        Ok((resealed, unreadable))
    }

    pub fn secret_names(&self, tenant: &str) -> Result<Vec<(String, i64)>, StateError> {
        let conn = self.read();
        let mut stmt =
            conn.prepare("SELECT name, updated_ms FROM secrets WHERE tenant = ?1 ORDER BY name")?;
        let rows = stmt.query_map([tenant], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn delete_secret(&self, tenant: &str, name: &str) -> Result<bool, StateError> {
        let conn = self.conn.lock();
        Ok(conn.execute(
            "DELETE FROM secrets WHERE tenant = ?1 AND name = ?2",
            params![tenant, name],
        )? == 1)
    }
}

fn migrate(conn: &mut Connection) -> Result<(), StateError> {
    let current: usize = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(current) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", i + 1)?;
        tx.commit()?;
    }
    Ok(())
}

#[derive(Debug, thiserror::Error)]
pub enum RevokeError {
    #[error("no such token")]
    NotFound,
    #[error("it is the last unexpired admin token: issue another one first")]
    LastAdmin,
    #[error(transparent)]
    State(#[from] StateError),
}

impl From<rusqlite::Error> for RevokeError {
    fn from(e: rusqlite::Error) -> Self {
        RevokeError::State(e.into())
    }
}

const TOKEN_COLUMNS: &str = "id, tenant, role, name, created_ms, scopes, expires_ms, hash";

fn load_tokens(conn: &Connection) -> Result<TokenIndex, StateError> {
    let mut stmt = conn.prepare(&format!("SELECT {TOKEN_COLUMNS} FROM tokens"))?;
    let rows = stmt.query_map([], token_from_row)?;
    Ok(TokenIndex::from_rows(rows.collect::<Result<Vec<_>, _>>()?))
}

fn role_str(role: Role) -> &'static str {
    match role {
        Role::Admin => "admin",
        Role::Tenant => "tenant",
    }
}

fn tenant_from_row(r: &rusqlite::Row) -> rusqlite::Result<Tenant> {
    Ok(Tenant {
        id: r.get(0)?,
        name: r.get(1)?,
        created_ms: r.get(2)?,
        max_components: r.get(3)?,
        max_memory_bytes: r.get::<_, i64>(4)? as u64,
        max_series: r.get::<_, Option<i64>>(5)?.map(|n| n as u64),
        max_instances: r.get(6)?,
        max_concurrent_calls: r.get(7)?,
    })
}

/// A row of [`TOKEN_COLUMNS`]: (hash, token).
fn token_from_row(r: &rusqlite::Row) -> rusqlite::Result<(String, TokenInfo)> {
    let role: String = r.get(2)?;
    let role = if role == "admin" {
        Role::Admin
    } else {
        Role::Tenant
    };
    let scopes = match role {
        Role::Admin => Scopes::all(),
        Role::Tenant => Scopes::from_text(&r.get::<_, String>(5)?),
    };
    Ok((
        r.get(7)?,
        TokenInfo {
            id: r.get(0)?,
            tenant: r.get(1)?,
            role,
            name: r.get(3)?,
            created_ms: r.get(4)?,
            scopes,
            expires_ms: r.get(6)?,
        },
    ))
}

fn component_from_row(r: &rusqlite::Row) -> rusqlite::Result<ComponentRecord> {
    Ok(ComponentRecord {
        tenant: r.get(0)?,
        name: r.get(1)?,
        active_version: r.get(2)?,
        created_ms: r.get(3)?,
        last_tick_seq: r.get::<_, i64>(4)? as u64,
    })
}

fn version_from_row(r: &rusqlite::Row) -> rusqlite::Result<VersionRecord> {
    Ok(VersionRecord {
        version: r.get(0)?,
        label: r.get(1)?,
        manifest: r.get(2)?,
        wasm_sha256: r.get(3)?,
        wasm_bytes: r.get::<_, i64>(4)? as u64,
        uploaded_ms: r.get(5)?,
        status: r.get(6)?,
        status_detail: r.get(7)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rotated_key_reseals_every_secret() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.sqlite");
        {
            let store = StateStore::open(&path, SecretBox::from_key([1; 32])).unwrap();
            store
                .create_tenant(&Tenant {
                    id: "acme".into(),
                    name: "acme".into(),
                    created_ms: 0,
                    max_components: 1,
                    max_memory_bytes: 1,
                    max_series: None,
                    max_instances: None,
                    max_concurrent_calls: None,
                })
                .unwrap();
            store.put_secret("acme", "db", "hunter2").unwrap();
        }
        // The new key alone cannot read it...
        let store = StateStore::open(&path, SecretBox::from_key([2; 32])).unwrap();
        let err = store.secret("acme", "db").unwrap_err().to_string();
        assert!(err.contains("not configured"), "{err}");
        drop(store);
        // ... with the old one listed as previous it is sealed again, after which the new
        // key alone reads it.
        let tmp_key = dir.path().join("old.key");
        std::fs::write(&tmp_key, hex::encode([1u8; 32])).unwrap();
        let new_key = dir.path().join("new.key");
        std::fs::write(&new_key, hex::encode([2u8; 32])).unwrap();
        let data = crate::datadir::DataDir::open(&dir.path().join("data")).unwrap();
        let rotated = SecretBox::load(
            &crate::crypto::SecretsConfig {
                key_file: Some(new_key),
                previous_key_files: vec![tmp_key],
            },
            &data,
        )
        .unwrap();
        let store = StateStore::open(&path, rotated).unwrap();
        assert_eq!(store.reseal_secrets().unwrap(), (1, 0));
        assert_eq!(store.reseal_secrets().unwrap(), (0, 0), "once");
        drop(store);
        let store = StateStore::open(&path, SecretBox::from_key([2; 32])).unwrap();
        assert_eq!(
            store.secret("acme", "db").unwrap().as_deref(),
            Some("hunter2")
        );
    }
}
