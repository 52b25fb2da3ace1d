//! Secret providers: where a tenant's secrets live besides SOTP's own encrypted store.
//!
//! In: a secret name a host capability was asked for (`secrets.get`, a CA bundle, a bearer
//! token), already checked against the component's grants — a name `vault:<path>#<key>` goes
//! to the tenant's Vault (KV v2), `aws-sm:<secret id>[#<key>]` to its AWS Secrets Manager,
//! any other name to the built-in store. Out: the value, or
//! why not, as a reason that never contains a value.
//!
//! Values read from a provider are cached per tenant and name for the provider's `ttl`
//! (default 5 minutes): a rotated secret is picked up once the cached value expires, with no
//! restart of anything. A provider that cannot be reached makes the read `unavailable` (the
//! component retries on its next call); a value is never served past its TTL.

pub mod aws_sm;
pub mod vault;

use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Where the tenant's secret providers are (`PUT /v1/secret-providers`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderSettings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vault: Option<vault::VaultSettings>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aws_secrets_manager: Option<aws_sm::AwsSecretsManagerSettings>,
}

impl ProviderSettings {
    pub fn check(&self) -> Result<(), String> {
        if let Some(v) = &self.vault {
            v.check()?;
        }
        if let Some(a) = &self.aws_secrets_manager {
            a.check()?;
        }
        Ok(())
    }
}

/// What a provider read needs of the rest of SOTP.
pub struct ProviderContext<'a> {
    /// The tenant's provider settings.
    pub settings: &'a ProviderSettings,
    /// A secret of the built-in store (the provider's own credentials live there).
    pub builtin: &'a dyn Fn(&str) -> Result<Option<String>, String>,
    pub egress: &'a crate::egress::EgressPolicy,
}

struct Cached {
    value: String,
    until: Instant,
}

/// The provider-held secrets read recently, and each tenant's Vault login.
#[derive(Default)]
pub struct SecretProviders {
    cache: parking_lot::Mutex<HashMap<(String, String), Cached>>,
    pub(crate) vault_tokens: vault::Tokens,
}

/// Entries the cache keeps at most (all tenants); beyond, it is cleared.
const MAX_CACHED: usize = 10_000;

impl SecretProviders {
    /// Whether `name` belongs to a provider (and not to the built-in store).
    pub fn is_provided(name: &str) -> bool {
        name.starts_with(vault::PREFIX) || name.starts_with(aws_sm::PREFIX)
    }

    /// The value of a provider-held secret: `Ok(None)` if the provider says it does not
    /// exist, `Err` (a reason, never a value) if it cannot be read now.
    pub fn read(
        &self,
        tenant: &str,
        name: &str,
        ctx: &ProviderContext<'_>,
    ) -> Result<Option<String>, String> {
        let key = (tenant.to_string(), name.to_string());
        if let Some(c) = self.cache.lock().get(&key)
            && c.until > Instant::now()
        {
            return Ok(Some(c.value.clone()));
        }
        let (value, ttl) = if name.starts_with(aws_sm::PREFIX) {
            let Some(settings) = &ctx.settings.aws_secrets_manager else {
                return Err(format!(
                    "`{name}` names an AWS Secrets Manager secret, but the tenant has no aws_secrets_manager provider (PUT /v1/secret-providers)"
                ));
            };
            (aws_sm::read(tenant, name, settings, ctx)?, settings.ttl())
        } else {
            let Some(settings) = &ctx.settings.vault else {
                return Err(format!(
                    "`{name}` names a Vault secret, but the tenant has no Vault provider (PUT /v1/secret-providers)"
                ));
            };
            (
                vault::read(self, tenant, name, settings, ctx)?,
                settings.ttl(),
            )
        };
        if let Some(v) = &value {
            let mut cache = self.cache.lock();
            if cache.len() >= MAX_CACHED {
                cache.clear();
            }
            cache.insert(
                key,
                Cached {
                    value: v.clone(),
                    until: Instant::now() + ttl,
                },
            );
        }
        Ok(value)
    }

    /// Forget what is cached for a tenant (its settings changed, or it is deleted).
    pub fn forget(&self, tenant: &str) {
        self.cache.lock().retain(|(t, _), _| t != tenant);
        self.vault_tokens.forget(tenant);
    }
}

/// `5m`, `30s` → a duration (for settings).
pub(crate) fn duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|e| format!("`{text}` is not a duration ({e})"))
}
