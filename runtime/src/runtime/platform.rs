//! The platform tenant (see `crate::platform`): created and kept in shape at each start, and
//! its health view.

use super::Runtime;

use crate::error::RuntimeError;
use crate::platform::{
    Active, Health, Latency, PROBE_TOKEN_SECRET, PlatformSetup, ProbeHealth, RUM_KEY_SECRET,
    RumTag, UI_SERVICE,
};
use crate::runtime::{Principal, TenantSpec, TokenRequest};
use crate::tokens::Scopes;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::sync::Arc;

/// The setting that marks the tenant SOTP created as its platform tenant.
const PLATFORM_MARK: &str = "platform";
/// How far back the health view looks.
const HEALTH_WINDOW_MS: i64 = 3_600_000;

impl Runtime {
    /// Create the platform tenant on first start and bring it to what this binary and config
    /// say: its probes' read token and the UI's RUM key (kept as its secrets, so they survive
    /// restarts), its trace settings (sampling, the UI's origins), and one `http-check`
    /// component per built-in probe (a new version only when the manifest or the Wasm
    /// changed). Call after `restore`.
    pub async fn start_platform(
        self: &Arc<Self>,
        setup: PlatformSetup,
    ) -> Result<Arc<Active>, RuntimeError> {
        let pinned = self.pin_platform(&setup).await?;
        let config = setup.config;
        let (tenant, base, reach) = (
            pinned.tenant.clone(),
            pinned.base_url.clone(),
            pinned.reach.clone(),
        );
        self.ensure_token_secret(&tenant, PROBE_TOKEN_SECRET, "platform-probes", "read")?;
        let rum = if config.rum {
            let key =
                self.ensure_token_secret(&tenant, RUM_KEY_SECRET, "platform-ui-rum", "rum")?;
            let mut settings = self.trace_settings(&tenant)?;
            settings.sample_rate = config.rum_sample_rate;
            settings.origins = config.ui_origins(&base, setup.listen);
            self.set_trace_settings(&tenant, &settings)?;
            Some(RumTag {
                key,
                sample_rate: config.rum_sample_rate,
            })
        } else {
            None
        };
        match setup.probe_wasm {
            Some(wasm) => {
                for spec in crate::platform::probes() {
                    let text =
                        crate::platform::manifest(&spec, &base, &reach, config.probe_interval.0);
                    self.ensure_probe(&tenant, &spec.component, &text, wasm)
                        .await?;
                }
            }
            None => tracing::warn!(
                "this sotp was built without the http-check component: the platform tenant has no probes (run scripts/build-guests, then build sotp again)"
            ),
        }
        let active = Arc::new(Active {
            tenant,
            base_url: base,
            reach,
            rum,
        });
        *self.platform.write() = Some(active.clone());
        Ok(active)
    }

    /// The first half of `start_platform`, to run **before** `restore`: check the config,
    /// resolve the base URL, create (or find) the platform tenant and pin its reach, so the
    /// probe instances `restore` starts get their egress exception.
    pub async fn pin_platform(
        self: &Arc<Self>,
        setup: &PlatformSetup,
    ) -> Result<Arc<Active>, RuntimeError> {
        let config = &setup.config;
        config
            .check()
            .map_err(|e| RuntimeError::Invalid(e.to_string()))?;
        let base = config
            .base_url(setup.listen)
            .map_err(|e| RuntimeError::Invalid(e.to_string()))?;
        let resolving = base.clone();
        let reach = tokio::task::spawn_blocking(move || crate::platform::resolve(&resolving))
            .await
            .map_err(|e| RuntimeError::Internal(e.to_string()))?
            .map_err(|e| RuntimeError::Invalid(e.to_string()))?;
        self.ensure_platform_tenant(&config.tenant)?;
        let rum = self.platform().and_then(|p| p.rum.clone());
        let active = Arc::new(Active {
            tenant: config.tenant.clone(),
            base_url: base,
            reach,
            rum,
        });
        *self.platform.write() = Some(active.clone());
        Ok(active)
    }

    /// The egress policy `tenant`'s components connect under: the operator's, plus SOTP's
    /// own address for the platform tenant.
    pub(super) fn egress_for(&self, tenant: &str) -> crate::egress::EgressPolicy {
        let policy = crate::egress::EgressPolicy::new(self.config.egress.clone());
        match self.platform() {
            Some(p) if p.tenant == tenant => policy.with_pinned(&p.reach),
            _ => policy,
        }
    }

    /// The platform as started, if it was.
    pub fn platform(&self) -> Option<Arc<Active>> {
        self.platform.read().clone()
    }

    /// Whether `principal` may see the platform's health: the admin, or a token of the
    /// platform tenant with `read`.
    pub fn may_see_platform(&self, principal: &Principal) -> bool {
        match (principal, self.platform()) {
            (Principal::Admin, _) => true,
            (Principal::Tenant { tenant, scopes }, Some(p)) => {
                *tenant == p.tenant && scopes.allows(crate::tokens::Scope::Read)
            }
            _ => false,
        }
    }

    /// The platform tenant, created and marked as such; a tenant of that name a user
    /// created is never adopted (it would gain the probes' egress exception and its readers
    /// the platform's health).
    fn ensure_platform_tenant(&self, tenant: &str) -> Result<(), RuntimeError> {
        match self.tenant(tenant) {
            Ok(_) if self.state.setting(tenant, PLATFORM_MARK)?.is_some() => return Ok(()),
            Ok(_) => {
                return Err(RuntimeError::Conflict(format!(
                    "tenant `{tenant}` exists and is not the platform tenant SOTP created: set [platform] tenant to another id (or delete that tenant)"
                )));
            }
            Err(RuntimeError::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
        let spec = TenantSpec {
            name: Some("SOTP platform (SOTP watching itself)".into()),
            ..Default::default()
        };
        // Operated with the admin token: the tenant's first token is not shown to anyone (only
        // its hash is kept, so nobody can use it); the admin issues tokens when needed.
        let _ = self.create_tenant(tenant, spec)?;
        self.state.put_setting(tenant, PLATFORM_MARK, "{}")?;
        tracing::info!(%tenant, "created the platform tenant");
        Ok(())
    }

    /// A token of `tenant` with exactly `scopes`, kept in its secret `secret`: the one kept
    /// if it still authenticates as such, else a new one (older ones of that name revoked).
    fn ensure_token_secret(
        &self,
        tenant: &str,
        secret: &str,
        name: &str,
        scopes: &str,
    ) -> Result<String, RuntimeError> {
        let scopes = Scopes::from_text(scopes);
        if let Some(kept) = self.state.secret(tenant, secret)? {
            let valid = matches!(
                self.authenticate(&kept),
                Ok((Principal::Tenant { tenant: t, scopes: s }, None)) if t == tenant && s == scopes
            );
            if valid {
                return Ok(kept);
            }
        }
        for old in self.tokens(Some(tenant))?.iter().filter(|t| t.name == name) {
            self.revoke_token(Some(tenant), &old.id)?;
        }
        let issued = self.issue_token(
            Some(tenant),
            TokenRequest {
                name: name.to_string(),
                scopes,
                expires_ms: None,
            },
        )?;
        self.put_secret(tenant, secret, &issued.token)?;
        Ok(issued.token)
    }

    /// `component` running `manifest` over `wasm`: uploaded and activated unless its active
    /// version is exactly that already.
    async fn ensure_probe(
        self: &Arc<Self>,
        tenant: &str,
        component: &str,
        manifest: &str,
        wasm: &[u8],
    ) -> Result<(), RuntimeError> {
        let sha = hex::encode(Sha256::digest(wasm));
        let active = self
            .state
            .component(tenant, component)?
            .and_then(|c| c.active_version)
            .map(|v| self.state.version(tenant, component, v))
            .transpose()?
            .flatten();
        if active.is_some_and(|v| v.manifest == manifest && v.wasm_sha256 == sha) {
            return Ok(());
        }
        let outcome = self
            .upload(tenant, manifest, wasm, true, Scopes::all())
            .await?;
        tracing::info!(%tenant, component, version = outcome.version, "platform probe deployed");
        Ok(())
    }

    /// The "platform health" view: each built-in probe's last run and its success over the
    /// last hour, and the web UI's latency as its browsers measured it.
    pub async fn platform_health(self: &Arc<Self>) -> Result<Health, RuntimeError> {
        let Some(platform) = self.platform() else {
            return Err(RuntimeError::NotFound(
                "the platform tenant is off ([platform] enabled = false)".into(),
            ));
        };
        let tenant = platform.tenant.clone();
        let now = crate::now_ms();
        let from = now - HEALTH_WINDOW_MS;
        let probes = self.probe_health(&tenant, from, now).await?;
        let query = crate::traces::TraceQuery {
            service: Some(UI_SERVICE.into()),
            route: None,
            min_duration_ns: None,
            error: None,
            from_ns: from * 1_000_000,
            to_ns: (now + 1) * 1_000_000,
            limit: 1_000,
        };
        let traces = self.search_traces(&tenant, query).await?;
        let (loads, calls): (Vec<_>, Vec<_>) = traces
            .iter()
            .filter(|t| t.name == "documentLoad" || is_fetch(&t.name))
            .partition(|t| t.name == "documentLoad");
        let settings = self.trace_settings(&tenant)?;
        Ok(Health {
            tenant,
            base_url: platform.base_url.to_string(),
            window_ms: HEALTH_WINDOW_MS,
            probes,
            ui_page_loads: Latency::of(loads.iter().map(|t| t.duration_ms).collect()),
            ui_api_calls: Latency::of(calls.iter().map(|t| t.duration_ms).collect()),
            rum: platform.rum.is_some(),
            rum_sample_rate: settings.sample_rate,
        })
    }

    async fn probe_health(
        &self,
        tenant: &str,
        from: i64,
        now: i64,
    ) -> Result<Vec<ProbeHealth>, RuntimeError> {
        let over = |metric: &str| self.raw_points(tenant, metric, from, now + 1);
        let component = |s: &crate::telemetry::SeriesPoints| {
            s.labels.get("component").cloned().unwrap_or_default()
        };
        let mut probes: BTreeMap<String, ProbeHealth> = BTreeMap::new();
        for s in self.query(over("probe_success")).await? {
            let Some(&(ts, v)) = s.points.iter().max_by_key(|(t, _)| *t) else {
                continue;
            };
            let label = |k: &str| s.labels.get(k).cloned().unwrap_or_default();
            let entry = probes.entry(component(&s)).or_default();
            if ts < entry.last_run_ms {
                continue;
            }
            *entry = ProbeHealth {
                component: component(&s),
                probe: label("probe"),
                target: label("target"),
                up: v == 1.0,
                last_run_ms: ts,
                successes: s.points.iter().filter(|(_, v)| *v == 1.0).count() as u64,
                runs: s.points.len() as u64,
                ..Default::default()
            };
        }
        for (metric, duration) in [
            ("probe_duration_seconds", true),
            ("probe_http_status_code", false),
        ] {
            for s in self.query(over(metric)).await? {
                let (Some(p), Some(&(_, v))) = (
                    probes.get_mut(&component(&s)),
                    s.points.iter().max_by_key(|(t, _)| *t),
                ) else {
                    continue;
                };
                if duration {
                    p.duration_seconds = Some(v);
                } else {
                    p.status_code = Some(v as u16);
                }
            }
        }
        if probes.values().any(|p| !p.up) {
            let logs = self.telemetry_logs(tenant, None, 1_000).await?;
            for p in probes.values_mut().filter(|p| !p.up) {
                p.last_error = logs
                    .iter()
                    .find(|l| l["component"] == p.component.as_str())
                    .and_then(|l| l["message"].as_str().map(str::to_string));
            }
        }
        Ok(probes.into_values().collect())
    }
}

/// Whether a browser span's name is an API call: the fetch and XHR instrumentations name
/// theirs by method (`GET`, `HTTP GET`).
fn is_fetch(name: &str) -> bool {
    let method = name.strip_prefix("HTTP ").unwrap_or(name);
    matches!(
        method,
        "GET" | "POST" | "PUT" | "DELETE" | "PATCH" | "HEAD" | "OPTIONS"
    )
}
