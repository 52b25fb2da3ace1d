//! The version slot every component has, whatever its world: which version is active, and
//! the hot swap — warm the new version beside the old one (instantiate, `init`) and then
//! replace the active pointer atomically; a call already running keeps its `Arc` to the
//! old version and finishes there. Rollback is a swap to an older version.
//!
//! What a world does with the active version (a collector's queue and schedule, an audit's
//! calls into a rule) is its driver's business, not the slot's.

use crate::budget::TenantBudget;
use crate::host::Emitted;
use crate::instance::{LoadedVersion, Outcome};
use crate::stats::{ComponentStats, LogLevel, LogSource};
use arc_swap::ArcSwapOption;
use parking_lot::Mutex;
use serde::Serialize;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// What a component is doing, as shown by the API.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "state", content = "reason")]
pub enum ComponentState {
    /// A version is active and its last start succeeded.
    Running,
    /// A version is active but a fresh instance failed to start (its `init` failed after a
    /// trap); calls keep retrying.
    Failing(String),
    /// No version is active.
    Inactive,
}

/// A version warmed and ready to switch to: what its `init` emitted, and how long it took.
pub(crate) struct Warmed {
    pub emitted: Emitted,
    pub elapsed: Duration,
}

pub struct VersionSlot {
    pub tenant: String,
    pub name: String,
    pub stats: Arc<ComponentStats>,
    active: ArcSwapOption<LoadedVersion>,
    /// One activation at a time; `retire` takes it too.
    activation_lock: tokio::sync::Mutex<()>,
    /// Set by `retire`: no version is ever activated again.
    retired: AtomicBool,
    state: Mutex<ComponentState>,
    budget: Arc<TenantBudget>,
}

impl VersionSlot {
    pub(crate) fn new(tenant: &str, name: &str, budget: Arc<TenantBudget>) -> VersionSlot {
        VersionSlot {
            tenant: tenant.to_string(),
            name: name.to_string(),
            stats: Arc::new(ComponentStats::default()),
            active: ArcSwapOption::empty(),
            activation_lock: tokio::sync::Mutex::new(()),
            retired: AtomicBool::new(false),
            state: Mutex::new(ComponentState::Inactive),
            budget,
        }
    }

    pub fn active(&self) -> Option<Arc<LoadedVersion>> {
        self.active.load_full()
    }

    pub fn state(&self) -> ComponentState {
        self.state.lock().clone()
    }

    pub(crate) fn set_state(&self, state: ComponentState) {
        *self.state.lock() = state;
    }

    pub fn host_log(&self, level: LogLevel, version: Option<u32>, message: &str) {
        self.stats.log(level, LogSource::Host, version, message);
        match level {
            LogLevel::Error | LogLevel::Warn => {
                tracing::warn!(tenant = %self.tenant, component = %self.name, "{message}")
            }
            _ => tracing::info!(tenant = %self.tenant, component = %self.name, "{message}"),
        }
    }

    /// Hold the activation lock: `None` once the component is retired.
    pub(crate) async fn begin_activation(&self) -> Option<tokio::sync::MutexGuard<'_, ()>> {
        let guard = self.activation_lock.lock().await;
        (!self.retired.load(Ordering::Acquire)).then_some(guard)
    }

    /// Instantiate `version` and run its `init` on the blocking pool, after taking one of
    /// the tenant's call slots. A failure is counted, logged and returned; the active
    /// version is untouched.
    pub(crate) async fn warm(&self, version: &Arc<LoadedVersion>) -> Result<Warmed, String> {
        let number = version.version();
        let warming = version.clone();
        let slot = self.budget.call_slot().await;
        let report = tokio::task::spawn_blocking(move || {
            let _slot = slot;
            warming.warm()
        })
        .await
        .map_err(|e| format!("activation task failed: {e}"))?;
        match report.outcome {
            Outcome::Ok => Ok(Warmed {
                emitted: report.emitted,
                elapsed: report.elapsed,
            }),
            Outcome::InitFailed(reason) | Outcome::GuestError(reason) => {
                self.stats.errors.fetch_add(1, Ordering::Relaxed);
                let text = format!("version {number} not activated: {reason}");
                self.stats.set_last_error(&text);
                self.host_log(LogLevel::Error, Some(number), &text);
                Err(reason)
            }
            Outcome::Trapped(trap) => {
                self.stats.count_trap(trap.class);
                Err(trap.message)
            }
        }
    }

    /// Make `version` the active one; returns the one it replaced.
    pub(crate) fn switch(&self, version: Arc<LoadedVersion>) -> Option<Arc<LoadedVersion>> {
        version.env.set_active(true);
        let previous = self.active.swap(Some(version));
        if let Some(p) = &previous {
            p.env.set_active(false);
        }
        self.set_state(ComponentState::Running);
        previous
    }

    /// Log a finished swap.
    pub(crate) fn log_activation(
        &self,
        number: u32,
        previous: Option<&Arc<LoadedVersion>>,
        warm: Duration,
    ) {
        let ms = warm.as_secs_f64() * 1e3;
        let message = match previous {
            Some(p) => format!(
                "activated version {number} (was {}) after {ms:.1} ms of warm-up",
                p.version()
            ),
            None => format!("activated version {number} after {ms:.1} ms of warm-up"),
        };
        self.host_log(LogLevel::Info, Some(number), &message);
    }

    /// Drop the active version.
    pub(crate) fn clear(&self) {
        if let Some(v) = self.active.swap(None) {
            v.env.set_active(false);
        }
        self.set_state(ComponentState::Inactive);
    }

    /// Refuse every later activation (the caller holds the activation lock).
    pub(crate) fn mark_retired(&self) {
        self.retired.store(true, Ordering::Release);
    }
}
