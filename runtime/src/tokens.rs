//! API tokens: what a token may do (scopes), when it stops working (expiry), and the
//! in-memory index the API authenticates against.
//!
//! A token is shown once and stored only as its SHA-256. Authentication happens on every
//! request, so it must not touch SQLite (a write holding the database for an fsync would
//! stall every request behind it): the index of token hashes is loaded once at open and
//! changed together with the `tokens` table, under the same lock as the write.
//!
//! Scopes are the tenant's side of least privilege. The platform admin token is not scoped:
//! it manages tenants and acts for any of them.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::fmt;

/// What a tenant token may do. Any scope but `ingest` implies `read`; `admin` implies every
/// scope.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Read everything of the tenant: components, telemetry, flows, devices, backups, the
    /// names (never the values) of secrets.
    Read,
    /// Upload, activate, roll back and delete components; push messages to them.
    Deploy,
    /// Change the inventory: devices, interface names, backup settings. A device that
    /// names secrets also needs `secrets` to be created or re-pointed (address, ports,
    /// users, secret references), since its credentials go where it points.
    Inventory,
    /// Set and delete secrets; deploy components whose manifest grants secrets or devices
    /// (a device grant lets a component use the device's credentials); point devices that
    /// name secrets; forget a pinned SSH host key (the next key offered is trusted).
    Secrets,
    /// Everything above, plus tokens and the tenant's MQTT broker.
    Admin,
    /// Push alerts (the Alertmanager webhook, the alert intake) and spans (OTLP) and nothing
    /// else, not even read: the token an Alertmanager's or a backend's configuration carries.
    Ingest,
    /// Send spans to the OTLP intake from the tenant's allowed origins, and nothing else: the
    /// browser-safe key a web page carries for the RUM script (write-only, public by nature).
    Rum,
}

impl Scope {
    pub const ALL: [Scope; 7] = [
        Scope::Read,
        Scope::Deploy,
        Scope::Inventory,
        Scope::Secrets,
        Scope::Admin,
        Scope::Ingest,
        Scope::Rum,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Deploy => "deploy",
            Scope::Inventory => "inventory",
            Scope::Secrets => "secrets",
            Scope::Admin => "admin",
            Scope::Ingest => "ingest",
            Scope::Rum => "rum",
        }
    }

    pub fn parse(text: &str) -> Result<Scope, String> {
        Scope::ALL
            .into_iter()
            .find(|s| s.as_str() == text)
            .ok_or_else(|| {
                format!(
                    "`{text}` is not a scope (read, deploy, inventory, secrets, admin, ingest, rum)"
                )
            })
    }

    fn bit(self) -> u8 {
        1 << self as u8
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A set of scopes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Scopes(u8);

impl Scopes {
    pub fn all() -> Scopes {
        Scopes::from_iter([Scope::Admin])
    }

    /// Whether these scopes allow `wanted` (admin allows all; any scope but `ingest` and
    /// `rum` allows read; `ingest` sends what `rum` sends, from anywhere).
    pub fn allows(self, wanted: Scope) -> bool {
        let write_only = Scope::Ingest.bit() | Scope::Rum.bit();
        self.0 & Scope::Admin.bit() != 0
            || self.0 & wanted.bit() != 0
            || (wanted == Scope::Read && self.0 & !write_only != 0)
            || (wanted == Scope::Rum && self.0 & Scope::Ingest.bit() != 0)
    }

    /// Whether every scope of `other` is allowed by these.
    pub fn covers(self, other: Scopes) -> bool {
        other.iter().all(|s| self.allows(s))
    }

    pub fn iter(self) -> impl Iterator<Item = Scope> {
        Scope::ALL
            .into_iter()
            .filter(move |s| self.0 & s.bit() != 0)
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Comma-separated, as stored in the `tokens` table.
    pub fn to_text(self) -> String {
        self.iter().map(Scope::as_str).collect::<Vec<_>>().join(",")
    }

    pub fn parse_list<S: AsRef<str>>(list: &[S]) -> Result<Scopes, String> {
        let mut scopes = Scopes::default();
        for s in list {
            scopes.0 |= Scope::parse(s.as_ref().trim())?.bit();
        }
        if scopes.is_empty() {
            return Err(
                "give at least one scope (read, deploy, inventory, secrets, admin, ingest, rum)"
                    .into(),
            );
        }
        Ok(scopes)
    }

    pub fn from_text(text: &str) -> Scopes {
        let parts: Vec<&str> = text.split(',').filter(|s| !s.is_empty()).collect();
        Scopes::parse_list(&parts).unwrap_or_default()
    }
}

impl FromIterator<Scope> for Scopes {
    fn from_iter<I: IntoIterator<Item = Scope>>(iter: I) -> Self {
        Scopes(iter.into_iter().fold(0, |acc, s| acc | s.bit()))
    }
}

impl Serialize for Scopes {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.iter())
    }
}

/// Who a token belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The platform operator: manages tenants, acts for any of them.
    Admin,
    Tenant,
}

/// A token as stored (without its secret).
#[derive(Clone, Debug, Serialize)]
pub struct TokenInfo {
    pub id: String,
    pub tenant: Option<String>,
    pub role: Role,
    pub name: String,
    pub created_ms: i64,
    /// What a tenant token may do (the platform admin's is always `admin`).
    pub scopes: Scopes,
    /// After this instant (ms since the epoch) the token is refused; `None`: never.
    pub expires_ms: Option<i64>,
}

impl TokenInfo {
    pub fn is_expired(&self, now_ms: i64) -> bool {
        self.expires_ms.is_some_and(|at| now_ms >= at)
    }
}

/// Why a presented token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("missing or unknown token")]
    Unknown,
    #[error("the token `{0}` has expired")]
    Expired(String),
}

/// Token hashes → tokens, mirrored from the `tokens` table.
#[derive(Default)]
pub struct TokenIndex {
    by_hash: HashMap<String, TokenInfo>,
}

impl TokenIndex {
    pub fn from_rows(rows: impl IntoIterator<Item = (String, TokenInfo)>) -> Self {
        TokenIndex {
            by_hash: rows.into_iter().collect(),
        }
    }

    pub fn insert(&mut self, hash: String, info: TokenInfo) {
        self.by_hash.insert(hash, info);
    }

    pub fn remove_id(&mut self, id: &str) {
        self.by_hash.retain(|_, t| t.id != id);
    }

    pub fn remove_tenant(&mut self, tenant: &str) {
        self.by_hash
            .retain(|_, t| t.tenant.as_deref() != Some(tenant));
    }

    /// The token a secret stands for, if it is known and has not expired.
    pub fn authenticate(&self, token: &str, now_ms: i64) -> Result<TokenInfo, AuthError> {
        let info = self
            .by_hash
            .get(&hash_token(token))
            .ok_or(AuthError::Unknown)?;
        if info.is_expired(now_ms) {
            return Err(AuthError::Expired(info.id.clone()));
        }
        Ok(info.clone())
    }
}

pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// A new token's id and secret: `tok_<12 hex>`, `sotp_<48 hex>`.
pub fn new_secret() -> (String, String) {
    use rand::RngCore;
    let mut secret = [0u8; 24];
    rand::rng().fill_bytes(&mut secret);
    let mut id = [0u8; 6];
    rand::rng().fill_bytes(&mut id);
    (
        format!("tok_{}", hex::encode(id)),
        format!("sotp_{}", hex::encode(secret)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_imply_what_they_should() {
        let read = Scopes::from_iter([Scope::Read]);
        assert!(read.allows(Scope::Read));
        assert!(!read.allows(Scope::Deploy));
        let deploy = Scopes::from_iter([Scope::Deploy]);
        assert!(deploy.allows(Scope::Read), "any scope reads");
        assert!(!deploy.allows(Scope::Secrets));
        let admin = Scopes::all();
        assert!(Scope::ALL.iter().all(|s| admin.allows(*s)));
        assert!(admin.covers(Scopes::from_iter([Scope::Secrets, Scope::Deploy])));
        assert!(!deploy.covers(Scopes::from_iter([Scope::Secrets])));
        assert_eq!(Scopes::from_text(&deploy.to_text()), deploy);
        assert!(Scopes::parse_list(&["read", "root"]).is_err());
        assert!(Scopes::parse_list::<&str>(&[]).is_err());
        assert!(!Scopes::default().allows(Scope::Read));
        let ingest = Scopes::from_iter([Scope::Ingest]);
        assert!(ingest.allows(Scope::Ingest));
        assert!(!ingest.allows(Scope::Read), "an intake token reads nothing");
        assert!(Scopes::from_iter([Scope::Ingest, Scope::Deploy]).allows(Scope::Read));
        assert!(!deploy.allows(Scope::Ingest));
        let rum = Scopes::from_iter([Scope::Rum]);
        assert!(rum.allows(Scope::Rum));
        assert!(!rum.allows(Scope::Read), "a browser key reads nothing");
        assert!(!rum.allows(Scope::Ingest), "nor pushes alerts");
        assert!(
            ingest.allows(Scope::Rum),
            "a backend's ingest token sends spans"
        );
    }

    #[test]
    fn expired_and_unknown_tokens_are_refused() {
        let info = |expires_ms| TokenInfo {
            id: "tok_1".into(),
            tenant: Some("acme".into()),
            role: Role::Tenant,
            name: "ci".into(),
            created_ms: 0,
            scopes: Scopes::all(),
            expires_ms,
        };
        let mut index = TokenIndex::default();
        index.insert(hash_token("sotp_a"), info(Some(1_000)));
        index.insert(hash_token("sotp_b"), info(None));
        assert_eq!(
            index.authenticate("sotp_a", 999).map(|t| t.id),
            Ok("tok_1".into())
        );
        assert_eq!(
            index.authenticate("sotp_a", 1_000).unwrap_err(),
            AuthError::Expired("tok_1".into())
        );
        assert!(index.authenticate("sotp_b", i64::MAX).is_ok());
        assert_eq!(
            index.authenticate("sotp_c", 0).unwrap_err(),
            AuthError::Unknown
        );
        index.remove_tenant("acme");
        assert!(index.authenticate("sotp_b", 0).is_err());
    }
}
