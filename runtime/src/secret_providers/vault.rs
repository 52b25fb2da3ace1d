//! HashiCorp Vault's KV v2 secrets engine as a secret provider (and anything speaking its
//! HTTP API, such as OpenBao): `vault:<path>#<key>` is `data.data.<key>` of
//! `GET /v1/<mount>/data/<path>`, the newest version.
//!
//! Auth: a token kept in the built-in store (`token_secret`), or AppRole (`role_id`, and the
//! `secret_id` in the built-in store): the login's client token is kept per tenant, renewed
//! (`auth/token/renew-self`) once half its lease has passed, and a new login made when renewal
//! fails or Vault refuses it (403). The address is the tenant's: the call goes through the
//! operator's egress policy (`crate::outbound`, HTTP or HTTPS). Errors say what failed —
//! the status, the path — never a value: Vault's answers are not echoed.

use super::{ProviderContext, SecretProviders};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// The prefix of secret names Vault holds.
pub const PREFIX: &str = "vault:";

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VaultSettings {
    /// `http://vault.example:8200`.
    pub address: String,
    /// The KV v2 mount (default `secret`).
    #[serde(default = "default_mount")]
    pub mount: String,
    /// How long a value read is used before it is read again (default `5m`).
    #[serde(default = "default_ttl")]
    pub ttl: String,
    pub auth: VaultAuth,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "method", rename_all = "lowercase", deny_unknown_fields)]
pub enum VaultAuth {
    /// A token, kept in the built-in store under this name.
    Token { token_secret: String },
    /// AppRole: the role id, and the secret id kept in the built-in store under this name.
    Approle {
        role_id: String,
        secret_id_secret: String,
    },
}

fn default_mount() -> String {
    "secret".into()
}

fn default_ttl() -> String {
    "5m".into()
}

impl VaultSettings {
    pub fn check(&self) -> Result<(), String> {
        crate::outbound::target(&self.address).map_err(|e| format!("vault.address: {e}"))?;
        super::duration(&self.ttl).map_err(|e| format!("vault.ttl: {e}"))?;
        if self.mount.is_empty() || self.mount.contains(['/', '?', '#']) {
            return Err(format!("vault.mount: `{}` is not a mount name", self.mount));
        }
        Ok(())
    }

    pub fn ttl(&self) -> Duration {
        super::duration(&self.ttl).unwrap_or(Duration::from_secs(300))
    }
}

/// `vault:app/db#password` → (`app/db`, `password`).
pub fn parse_name(name: &str) -> Result<(&str, &str), String> {
    let rest = name.strip_prefix(PREFIX).unwrap_or(name);
    let (path, key) = rest
        .split_once('#')
        .ok_or_else(|| format!("`{name}`: a Vault secret is named vault:<path>#<key>"))?;
    let path_ok = !path.is_empty()
        && !path
            .split('/')
            .any(|p| p.is_empty() || p == "." || p == "..")
        && path
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'/'));
    if !path_ok || key.is_empty() {
        return Err(format!(
            "`{name}`: a Vault secret is named vault:<path>#<key>"
        ));
    }
    Ok((path, key))
}

/// Client tokens from AppRole logins, per tenant: (token, when it was issued, lease).
#[derive(Default)]
pub struct Tokens(parking_lot::Mutex<HashMap<String, (String, Instant, Duration)>>);

impl Tokens {
    pub fn forget(&self, tenant: &str) {
        self.0.lock().remove(tenant);
    }
}

pub(super) fn read(
    providers: &SecretProviders,
    tenant: &str,
    name: &str,
    settings: &VaultSettings,
    ctx: &ProviderContext<'_>,
) -> Result<Option<String>, String> {
    let (path, key) = parse_name(name)?;
    let url_path = format!("/v1/{}/data/{path}", settings.mount);
    let token = token(providers, tenant, settings, ctx)?;
    let mut answer = get(settings, &url_path, &token, ctx)?;
    if answer.status == 403 && matches!(settings.auth, VaultAuth::Approle { .. }) {
        // The login expired or was revoked: log in again, once.
        providers.vault_tokens.forget(tenant);
        let token = self::token(providers, tenant, settings, ctx)?;
        answer = get(settings, &url_path, &token, ctx)?;
    }
    match answer.status {
        200 => {}
        404 => return Ok(None),
        403 => return Err(format!("Vault refused the token for {path} (403)")),
        503 => return Err("Vault is sealed or unavailable (503)".into()),
        other => return Err(format!("Vault answered HTTP {other} for {path}")),
    }
    let doc: serde_json::Value = serde_json::from_str(&answer.text)
        .map_err(|_| format!("Vault's answer for {path} is not KV v2 JSON"))?;
    match &doc["data"]["data"][key] {
        serde_json::Value::Null => Ok(None),
        serde_json::Value::String(s) => Ok(Some(s.clone())),
        other => Ok(Some(other.to_string())),
    }
}

fn get(
    settings: &VaultSettings,
    path: &str,
    token: &str,
    ctx: &ProviderContext<'_>,
) -> Result<crate::outbound::Answer, String> {
    crate::outbound::request(
        "GET",
        &settings.address,
        path,
        Some(token),
        ctx.egress,
        None,
    )
    .map_err(|e| format!("Vault unavailable: {e}"))
}

/// The token to send: the configured one, or the tenant's AppRole login (renewed or made).
fn token(
    providers: &SecretProviders,
    tenant: &str,
    settings: &VaultSettings,
    ctx: &ProviderContext<'_>,
) -> Result<String, String> {
    let builtin = |name: &str| {
        (ctx.builtin)(name)?.ok_or_else(|| format!("no secret `{name}` in the built-in store"))
    };
    match &settings.auth {
        VaultAuth::Token { token_secret } => Ok(builtin(token_secret)?.trim().to_string()),
        VaultAuth::Approle {
            role_id,
            secret_id_secret,
        } => {
            let held = providers.vault_tokens.0.lock().get(tenant).cloned();
            if let Some((token, issued, lease)) = held {
                let age = issued.elapsed();
                if age < lease / 2 {
                    return Ok(token);
                }
                if age < lease
                    && let Ok(lease) = renew(settings, &token, ctx)
                {
                    providers
                        .vault_tokens
                        .0
                        .lock()
                        .insert(tenant.into(), (token.clone(), Instant::now(), lease));
                    return Ok(token);
                }
            }
            let secret_id = builtin(secret_id_secret)?;
            let (token, lease) = login(settings, role_id, secret_id.trim(), ctx)?;
            providers
                .vault_tokens
                .0
                .lock()
                .insert(tenant.into(), (token.clone(), Instant::now(), lease));
            Ok(token)
        }
    }
}

fn login(
    settings: &VaultSettings,
    role_id: &str,
    secret_id: &str,
    ctx: &ProviderContext<'_>,
) -> Result<(String, Duration), String> {
    let body = serde_json::json!({ "role_id": role_id, "secret_id": secret_id }).to_string();
    let answer = crate::outbound::request(
        "POST",
        &settings.address,
        "/v1/auth/approle/login",
        None,
        ctx.egress,
        Some((body.as_bytes(), "application/json")),
    )
    .map_err(|e| format!("Vault unavailable: {e}"))?;
    if answer.status != 200 {
        return Err(format!(
            "Vault's AppRole login failed (HTTP {})",
            answer.status
        ));
    }
    auth_of(&answer.text).ok_or_else(|| "Vault's AppRole login answer has no client token".into())
}

fn renew(
    settings: &VaultSettings,
    token: &str,
    ctx: &ProviderContext<'_>,
) -> Result<Duration, String> {
    let answer = crate::outbound::request(
        "POST",
        &settings.address,
        "/v1/auth/token/renew-self",
        Some(token),
        ctx.egress,
        Some((b"{}", "application/json")),
    )?;
    if answer.status != 200 {
        return Err(format!("HTTP {}", answer.status));
    }
    auth_of(&answer.text)
        .map(|(_, lease)| lease)
        .ok_or_else(|| "no lease in the answer".into())
}

/// `auth.client_token` and `auth.lease_duration` (seconds) of a login or renewal.
fn auth_of(text: &str) -> Option<(String, Duration)> {
    let doc: serde_json::Value = serde_json::from_str(text).ok()?;
    let token = doc["auth"]["client_token"].as_str()?.to_string();
    let lease = doc["auth"]["lease_duration"]
        .as_u64()
        .unwrap_or(3600)
        .max(1);
    Some((token, Duration::from_secs(lease)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_paths_and_keys() {
        assert_eq!(
            parse_name("vault:app/db#password").unwrap(),
            ("app/db", "password")
        );
        for bad in [
            "vault:app/db",
            "vault:#k",
            "vault:../x#k",
            "vault:a//b#k",
            "vault:a b#k",
            "vault:a#",
        ] {
            assert!(parse_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn settings_are_checked() {
        let ok = VaultSettings {
            address: "http://vault.example:8200".into(),
            mount: "secret".into(),
            ttl: "30s".into(),
            auth: VaultAuth::Token {
                token_secret: "vault-token".into(),
            },
        };
        assert!(ok.check().is_ok());
        assert_eq!(ok.ttl(), Duration::from_secs(30));
        let bad = VaultSettings {
            ttl: "soon".into(),
            ..ok.clone()
        };
        assert!(bad.check().unwrap_err().contains("vault.ttl"));
        let bad = VaultSettings {
            address: "ftp://vault".into(),
            ..ok
        };
        assert!(bad.check().unwrap_err().contains("vault.address"));
        let parsed: VaultAuth =
            serde_json::from_str(r#"{"method":"approle","role_id":"r","secret_id_secret":"s"}"#)
                .unwrap();
        assert!(matches!(parsed, VaultAuth::Approle { .. }));
    }
}
