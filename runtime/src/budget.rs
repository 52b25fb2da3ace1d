//! What one tenant's components may make the shared process hold at once, and the counters
//! that say when they hit it.
//!
//! The manifest's `[limits]` bound one call of one component (memory, CPU, wall-clock time,
//! records and bytes emitted); these bound a tenant as a whole, because a tenant can run
//! many components:
//!
//! - **series**: distinct label sets kept in the store and its in-memory index;
//! - **instances**: live WebAssembly instances, i.e. slots of the engine's pooling
//!   allocator (shared by every tenant, so no tenant may take them all);
//! - **concurrent calls**: calls running at once, each on a thread of the blocking pool (a
//!   component waiting on a slow device holds one), so one tenant's slow devices cannot take
//!   the threads every other tenant's components run on.
//!
//! One `TenantBudget` per tenant is shared by its components' handles and instances.

use serde::Serialize;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// A tenant's limits (from its row; defaults in `tenant_defaults`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct TenantLimits {
    pub max_series: u64,
    pub max_instances: u32,
    pub max_concurrent_calls: u32,
}

#[derive(Default)]
pub struct BudgetCounters {
    /// Emit calls refused because their new series would exceed the quota.
    pub series_refused: AtomicU64,
    /// Instances not started because the tenant had `max_instances` live.
    pub instances_refused: AtomicU64,
    /// Calls that waited for one of the tenant's call slots.
    pub calls_waited: AtomicU64,
}

pub struct TenantBudget {
    pub tenant: String,
    limits: TenantLimits,
    live_instances: AtomicU32,
    running_calls: AtomicU32,
    waiting_calls: AtomicU32,
    calls: Arc<Semaphore>,
    pub counters: BudgetCounters,
}

/// A live instance's claim on the tenant's instance quota, given back on drop.
pub struct InstanceSlot(Arc<TenantBudget>);

impl Drop for InstanceSlot {
    fn drop(&mut self) {
        self.0.live_instances.fetch_sub(1, Relaxed);
    }
}

/// A running call's claim on one of the tenant's call slots, given back on drop.
pub struct CallSlot {
    budget: Arc<TenantBudget>,
    _permit: OwnedSemaphorePermit,
}

impl Drop for CallSlot {
    fn drop(&mut self) {
        self.budget.running_calls.fetch_sub(1, Relaxed);
    }
}

/// One waiting call, counted until dropped.
struct Waiting<'a>(&'a AtomicU32);

impl<'a> Waiting<'a> {
    fn new(count: &'a AtomicU32) -> Self {
        count.fetch_add(1, Relaxed);
        Waiting(count)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}

/// What the tenant holds now, against its limits.
#[derive(Clone, Debug, Serialize)]
pub struct Usage {
    pub limits: TenantLimits,
    pub series: u64,
    pub live_instances: u32,
    pub running_calls: u32,
    pub waiting_calls: u32,
    pub series_refused: u64,
    pub instances_refused: u64,
    pub calls_waited: u64,
}

impl TenantBudget {
    pub fn new(tenant: &str, limits: TenantLimits) -> Arc<TenantBudget> {
        Arc::new(TenantBudget {
            tenant: tenant.to_string(),
            limits,
            live_instances: AtomicU32::new(0),
            running_calls: AtomicU32::new(0),
            waiting_calls: AtomicU32::new(0),
            calls: Arc::new(Semaphore::new(limits.max_concurrent_calls.max(1) as usize)),
            counters: BudgetCounters::default(),
        })
    }

    /// No limits (benchmarks, tests of other things).
    pub fn unlimited(tenant: &str) -> Arc<TenantBudget> {
        Self::new(
            tenant,
            TenantLimits {
                max_series: u64::MAX,
                max_instances: u32::MAX,
                max_concurrent_calls: Semaphore::MAX_PERMITS as u32,
            },
        )
    }

    pub fn limits(&self) -> TenantLimits {
        self.limits
    }

    /// Claim an instance slot, or say why not.
    pub fn take_instance(self: &Arc<Self>) -> Result<InstanceSlot, String> {
        let max = self.limits.max_instances;
        let claimed = self
            .live_instances
            .fetch_update(Relaxed, Relaxed, |n| (n < max).then_some(n + 1));
        match claimed {
            Ok(_) => Ok(InstanceSlot(self.clone())),
            Err(n) => {
                self.counters.instances_refused.fetch_add(1, Relaxed);
                Err(format!(
                    "instance quota: tenant `{}` has {n} live instances, its quota is {max}",
                    self.tenant
                ))
            }
        }
    }

    /// Wait for one of the tenant's call slots (calls beyond `max_concurrent_calls` queue
    /// here, holding no thread).
    pub async fn call_slot(self: &Arc<Self>) -> CallSlot {
        let permit = match self.calls.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                self.counters.calls_waited.fetch_add(1, Relaxed);
                // Counted while waiting, also if the wait is given up (the future dropped).
                let _waiting = Waiting::new(&self.waiting_calls);
                self.calls
                    .clone()
                    .acquire_owned()
                    .await
                    .expect("the call semaphore is never closed")
            }
        };
        self.running_calls.fetch_add(1, Relaxed);
        CallSlot {
            budget: self.clone(),
            _permit: permit,
        }
    }

    pub fn usage(&self, series: u64) -> Usage {
        Usage {
            limits: self.limits,
            series,
            live_instances: self.live_instances.load(Relaxed),
            running_calls: self.running_calls.load(Relaxed),
            waiting_calls: self.waiting_calls.load(Relaxed),
            series_refused: self.counters.series_refused.load(Relaxed),
            instances_refused: self.counters.instances_refused.load(Relaxed),
            calls_waited: self.counters.calls_waited.load(Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget() -> Arc<TenantBudget> {
        TenantBudget::new(
            "acme",
            TenantLimits {
                max_series: 10,
                max_instances: 2,
                max_concurrent_calls: 1,
            },
        )
    }

    #[test]
    fn instance_slots_are_capped_and_given_back() {
        let b = budget();
        let one = b.take_instance().unwrap();
        let _two = b.take_instance().unwrap();
        let err = b.take_instance().err().unwrap();
        assert!(err.contains("quota is 2"), "{err}");
        drop(one);
        assert!(b.take_instance().is_ok());
        assert_eq!(b.usage(0).instances_refused, 1);
    }

    #[tokio::test]
    async fn calls_beyond_the_limit_wait_for_a_slot() {
        let b = budget();
        let first = b.call_slot().await;
        let waiter = tokio::spawn({
            let b = b.clone();
            async move {
                let _slot = b.call_slot().await;
            }
        });
        while b.usage(0).waiting_calls == 0 {
            tokio::task::yield_now().await;
        }
        assert_eq!(b.usage(0).running_calls, 1);
        drop(first);
        waiter.await.unwrap();
        let usage = b.usage(0);
        assert_eq!(
            (usage.running_calls, usage.waiting_calls, usage.calls_waited),
            (0, 0, 1)
        );
    }
}
