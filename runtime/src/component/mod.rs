//! A running component: its version slot (active version, hot swap, rollback — the same for
//! every world) and, for a collector, the driver that feeds it ticks and messages.
//!
//! Request/response worlds (a `compliance-rule`) have no driver of their own: whoever needs
//! an answer (an audit) calls the active version through its instance pool. A collector's
//! driver is started with its first active collector version, so a rule component never
//! holds a queue, a schedule or a task.

mod collector;
mod slot;

pub use collector::{DeliveryError, MessageOutcome};
pub use slot::{ComponentState, VersionSlot};

use crate::instance::LoadedVersion;
use crate::manifest::World;
use crate::state::StateStore;
use crate::stats::{ComponentStats, LogLevel};
use crate::telemetry::{LedgerEntry, TelemetryStore};
use collector::CollectorDriver;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::sync::oneshot;

pub(crate) struct Deps {
    pub telemetry: Arc<TelemetryStore>,
    pub state: Arc<StateStore>,
    /// The tenant's budget (series quota, call slots).
    pub budget: Arc<crate::budget::TenantBudget>,
}

pub struct ComponentHandle {
    pub tenant: String,
    pub name: String,
    pub stats: Arc<ComponentStats>,
    slot: Arc<VersionSlot>,
    /// Started by the first collector version activated.
    collector: OnceLock<Arc<CollectorDriver>>,
    last_tick_seq: u64,
    deps: Deps,
}

impl ComponentHandle {
    pub(crate) fn spawn(
        tenant: &str,
        name: &str,
        last_tick_seq: u64,
        deps: Deps,
    ) -> Arc<ComponentHandle> {
        let slot = Arc::new(VersionSlot::new(tenant, name, deps.budget.clone()));
        Arc::new(ComponentHandle {
            tenant: tenant.to_string(),
            name: name.to_string(),
            stats: slot.stats.clone(),
            slot,
            collector: OnceLock::new(),
            last_tick_seq,
            deps,
        })
    }

    pub fn active(&self) -> Option<Arc<LoadedVersion>> {
        self.slot.active()
    }

    pub fn state(&self) -> ComponentState {
        self.slot.state()
    }

    pub fn host_log(&self, level: LogLevel, version: Option<u32>, message: &str) {
        self.slot.host_log(level, version, message);
    }

    fn collector(&self) -> &Arc<CollectorDriver> {
        self.collector.get_or_init(|| {
            CollectorDriver::spawn(self.slot.clone(), self.last_tick_seq, &self.deps)
        })
    }

    /// Warm `version` beside the active one, run its `init`, then switch to it atomically.
    /// On failure the active version is untouched and the reason is returned.
    pub async fn activate(
        self: &Arc<Self>,
        version: Arc<LoadedVersion>,
    ) -> Result<Duration, String> {
        let Some(_guard) = self.slot.begin_activation().await else {
            return Err("the component was removed".into());
        };
        let warmed = self.slot.warm(&version).await?;
        let world = version.env.manifest.world;
        let driver = (world == World::Collector).then(|| self.collector().clone());
        if let Some(driver) = &driver {
            // What init emitted is committed before the version takes over.
            driver
                .commit(warmed.emitted)
                .await
                .map_err(|e| format!("committing what init emitted failed: {e}"))?;
        }
        let plan = version.env.manifest.tick_plan();
        let number = version.version();
        let previous = self.slot.switch(version);
        match &driver {
            Some(driver) => driver.reschedule(plan),
            // A collector version swapped out for another world's stops being fed.
            None => self.stop_collector(),
        }
        self.slot
            .log_activation(number, previous.as_ref(), warmed.elapsed);
        Ok(warmed.elapsed)
    }

    /// Stop for good: wait for an activation in progress, deactivate, and refuse every
    /// later one (the component or its tenant is being deleted).
    pub async fn retire(&self) {
        let _guard = self.slot.begin_activation().await;
        self.slot.mark_retired();
        self.deactivate();
    }

    /// Wait until no call of this component's driver runs (after `retire`, whatever was
    /// running has finished and committed, and nothing more will).
    pub async fn stopped(&self) {
        if let Some(c) = self.collector.get() {
            c.stopped().await;
        }
    }

    /// Stop the schedule and drop the active version.
    pub fn deactivate(&self) {
        self.stop_collector();
        self.slot.clear();
    }

    fn stop_collector(&self) {
        if let Some(c) = self.collector.get() {
            c.stop_schedule();
        }
    }

    /// Queue a message and wait until what the component emitted for it is durable.
    pub async fn deliver(&self, topic: String, payload: Vec<u8>) -> Result<(), DeliveryError> {
        match self.fed_collector() {
            Ok(c) => c.deliver(topic, payload).await,
            Err(e) => Err(e),
        }
    }

    /// Queue a message (waiting for room: backpressure) and return where its outcome will
    /// be reported. Messages are handled in the order they are queued.
    pub async fn enqueue_message(
        &self,
        topic: String,
        payload: Vec<u8>,
        ledger: Option<LedgerEntry>,
    ) -> oneshot::Receiver<MessageOutcome> {
        match self.fed_collector() {
            Ok(c) => c.enqueue_message(topic, payload, ledger).await,
            Err(e) => {
                let (done, wait) = oneshot::channel();
                let _ = done.send(MessageOutcome::NotDurable(e.to_string()));
                wait
            }
        }
    }

    /// The collector driver, if the active version is a collector.
    fn fed_collector(&self) -> Result<&Arc<CollectorDriver>, DeliveryError> {
        let active = self.slot.active().ok_or(DeliveryError::Inactive)?;
        let world = active.env.manifest.world;
        if world != World::Collector {
            return Err(DeliveryError::NotACollector(world.name()));
        }
        Ok(self.collector())
    }
}
