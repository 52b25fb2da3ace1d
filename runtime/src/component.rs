//! A running component: its active version, the queue of calls it handles one at a time,
//! its schedule, and the hot swap.
//!
//! Every tick and message goes through one queue consumed by one task, so each is handled
//! exactly once, by whichever version is active when it is dequeued. A swap prepares the new
//! version beside the old one (instantiate, `init`) and then replaces the active pointer
//! atomically; a call already running keeps its `Arc` to the old version and finishes there.

use crate::host::{Emitted, WitTick};
use crate::instance::{Call, CallReport, LoadedVersion, Outcome};
use crate::state::StateStore;
use crate::stats::{CallKind, ComponentStats, LogLevel, LogSource};
use crate::telemetry::{Batch, TelemetryStore};
use arc_swap::ArcSwapOption;
use parking_lot::Mutex;
use serde::Serialize;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

const QUEUE_DEPTH: usize = 4096;

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

#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    #[error("no version of the component is active")]
    Inactive,
    #[error("the component's queue is full")]
    QueueFull,
    #[error("the component failed to handle the message: {0}")]
    Failed(String),
    #[error("the component was removed")]
    Gone,
}

enum Job {
    Tick {
        scheduled_at_ms: i64,
    },
    Message {
        topic: String,
        payload: Vec<u8>,
        done: Option<oneshot::Sender<Result<(), DeliveryError>>>,
    },
}

pub(crate) struct Deps {
    pub telemetry: Arc<TelemetryStore>,
    pub state: Arc<StateStore>,
}

pub struct ComponentHandle {
    pub tenant: String,
    pub name: String,
    pub stats: Arc<ComponentStats>,
    active: ArcSwapOption<LoadedVersion>,
    jobs: mpsc::Sender<Job>,
    activation_lock: tokio::sync::Mutex<()>,
    schedule: Mutex<Option<(Duration, JoinHandle<()>)>>,
    next_tick_seq: AtomicU64,
    tick_pending: AtomicBool,
    state: Mutex<ComponentState>,
    deps: Deps,
}

impl ComponentHandle {
    pub(crate) fn spawn(
        tenant: &str,
        name: &str,
        last_tick_seq: u64,
        deps: Deps,
    ) -> Arc<ComponentHandle> {
        let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
        let handle = Arc::new(ComponentHandle {
            tenant: tenant.to_string(),
            name: name.to_string(),
            stats: Arc::new(ComponentStats::default()),
            active: ArcSwapOption::empty(),
            jobs: tx,
            activation_lock: tokio::sync::Mutex::new(()),
            schedule: Mutex::new(None),
            next_tick_seq: AtomicU64::new(last_tick_seq + 1),
            tick_pending: AtomicBool::new(false),
            state: Mutex::new(ComponentState::Inactive),
            deps,
        });
        tokio::spawn(run_queue(Arc::downgrade(&handle), rx));
        handle
    }

    pub fn active(&self) -> Option<Arc<LoadedVersion>> {
        self.active.load_full()
    }

    pub fn state(&self) -> ComponentState {
        self.state.lock().clone()
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

    /// Warm `version` beside the active one, run its `init`, then switch to it atomically.
    /// On failure the active version is untouched and the reason is returned.
    pub async fn activate(
        self: &Arc<Self>,
        version: Arc<LoadedVersion>,
    ) -> Result<Duration, String> {
        let _guard = self.activation_lock.lock().await;
        let number = version.version();
        let warming = version.clone();
        let report = tokio::task::spawn_blocking(move || warming.warm())
            .await
            .map_err(|e| format!("activation task failed: {e}"))?;
        let warm_time = report.elapsed;
        match &report.outcome {
            Outcome::Ok => {}
            Outcome::InitFailed(reason) | Outcome::GuestError(reason) => {
                self.stats.errors.fetch_add(1, Ordering::Relaxed);
                self.stats
                    .set_last_error(format!("version {number} not activated: {reason}"));
                self.host_log(
                    LogLevel::Error,
                    Some(number),
                    &format!("version {number} not activated: {reason}"),
                );
                return Err(reason.clone());
            }
            Outcome::Trapped(trap) => {
                self.stats.count_trap(trap.class);
                return Err(trap.message.clone());
            }
        }
        // What init emitted is committed before the version takes over.
        if let Err(e) = self.commit(report.emitted).await {
            return Err(format!("committing what init emitted failed: {e}"));
        }
        let interval = version.env.manifest.tick_interval();
        let previous = self.active.swap(Some(version));
        *self.state.lock() = ComponentState::Running;
        self.reschedule(interval);
        let message = match previous {
            Some(p) => format!(
                "activated version {number} (was {}) after {:.1} ms of warm-up",
                p.version(),
                warm_time.as_secs_f64() * 1e3
            ),
            None => format!(
                "activated version {number} after {:.1} ms of warm-up",
                warm_time.as_secs_f64() * 1e3
            ),
        };
        self.host_log(LogLevel::Info, Some(number), &message);
        Ok(warm_time)
    }

    /// Stop the schedule and drop the active version.
    pub fn deactivate(&self) {
        if let Some((_, task)) = self.schedule.lock().take() {
            task.abort();
        }
        self.active.store(None);
        *self.state.lock() = ComponentState::Inactive;
    }

    /// Queue a message and wait until what the component emitted for it is durable.
    pub async fn deliver(&self, topic: String, payload: Vec<u8>) -> Result<(), DeliveryError> {
        if self.active.load().is_none() {
            return Err(DeliveryError::Inactive);
        }
        let (done, wait) = oneshot::channel();
        self.jobs
            .try_send(Job::Message {
                topic,
                payload,
                done: Some(done),
            })
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => DeliveryError::QueueFull,
                mpsc::error::TrySendError::Closed(_) => DeliveryError::Gone,
            })?;
        wait.await.map_err(|_| DeliveryError::Gone)?
    }

    fn reschedule(self: &Arc<Self>, interval: Option<Duration>) {
        let mut schedule = self.schedule.lock();
        if schedule.as_ref().map(|(every, _)| Some(*every)) == Some(interval) {
            return;
        }
        if let Some((_, task)) = schedule.take() {
            task.abort();
        }
        if let Some(every) = interval {
            let task = tokio::spawn(run_schedule(Arc::downgrade(self), every));
            *schedule = Some((every, task));
        }
    }

    fn enqueue_tick(&self, scheduled_at_ms: i64) {
        // One tick waits at most; a slow component skips ticks rather than piling them up.
        if self.tick_pending.swap(true, Ordering::AcqRel) {
            self.stats.ticks_skipped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if self.jobs.try_send(Job::Tick { scheduled_at_ms }).is_err() {
            self.tick_pending.store(false, Ordering::Release);
            self.stats.ticks_skipped.fetch_add(1, Ordering::Relaxed);
        }
    }

    async fn commit(&self, emitted: Emitted) -> Result<(), String> {
        if emitted.is_empty() {
            return Ok(());
        }
        let (samples, logs) = (emitted.samples.len() as u64, emitted.logs.len() as u64);
        let batch = Batch {
            tenant: self.tenant.clone(),
            component: self.name.clone(),
            samples: emitted.samples,
            logs: emitted.logs,
        };
        match self.deps.telemetry.commit(batch).await {
            Ok(()) => {
                self.stats
                    .samples_stored
                    .fetch_add(samples, Ordering::Relaxed);
                self.stats.logs_stored.fetch_add(logs, Ordering::Relaxed);
                Ok(())
            }
            Err(e) => {
                self.stats
                    .emitted_dropped
                    .fetch_add(samples + logs, Ordering::Relaxed);
                self.stats.set_last_error(e.to_string());
                Err(e.to_string())
            }
        }
    }

    /// Account for a finished call and commit its output. `Ok` means acknowledged.
    async fn settle(&self, kind: CallKind, version: u32, report: CallReport) -> Result<(), String> {
        self.stats.count_call(kind);
        if report.dropped > 0 {
            self.stats
                .emitted_dropped
                .fetch_add(report.dropped as u64, Ordering::Relaxed);
        }
        match report.outcome {
            Outcome::Ok => {
                if report.fresh_instance {
                    *self.state.lock() = ComponentState::Running;
                }
                self.commit(report.emitted).await
            }
            Outcome::GuestError(message) => {
                self.stats.errors.fetch_add(1, Ordering::Relaxed);
                let text = format!("{} returned an error: {message}", kind_export(kind));
                self.stats.set_last_error(&text);
                self.host_log(LogLevel::Warn, Some(version), &text);
                // The guest chose to emit these before failing; keep them.
                self.commit(report.emitted).await?;
                Err(text)
            }
            Outcome::InitFailed(reason) => {
                self.stats.errors.fetch_add(1, Ordering::Relaxed);
                self.stats.set_last_error(&reason);
                *self.state.lock() = ComponentState::Failing(reason.clone());
                self.host_log(LogLevel::Error, Some(version), &reason);
                Err(reason)
            }
            Outcome::Trapped(trap) => {
                self.stats.count_trap(trap.class);
                self.stats.set_last_error(&trap.message);
                self.host_log(
                    LogLevel::Error,
                    Some(version),
                    &format!(
                        "{}: {}; the instance was dropped and the next call starts a fresh one",
                        kind_export(kind),
                        trap.message
                    ),
                );
                Err(trap.message)
            }
        }
    }
}

impl Drop for ComponentHandle {
    fn drop(&mut self) {
        if let Some((_, task)) = self.schedule.lock().take() {
            task.abort();
        }
    }
}

fn kind_export(kind: CallKind) -> &'static str {
    match kind {
        CallKind::Init => "init",
        CallKind::Tick => "on-tick",
        CallKind::Message => "on-message",
    }
}

async fn run_schedule(handle: Weak<ComponentHandle>, every: Duration) {
    let mut interval = tokio::time::interval(every);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    interval.tick().await; // the first tick completes immediately; start one period later
    loop {
        interval.tick().await;
        let Some(handle) = handle.upgrade() else {
            return;
        };
        handle.enqueue_tick(crate::now_ms());
    }
}

async fn run_queue(handle: Weak<ComponentHandle>, mut jobs: mpsc::Receiver<Job>) {
    while let Some(job) = jobs.recv().await {
        let Some(handle) = handle.upgrade() else {
            return;
        };
        match job {
            Job::Tick { scheduled_at_ms } => {
                handle.tick_pending.store(false, Ordering::Release);
                let Some(version) = handle.active() else {
                    continue;
                };
                let seq = handle.next_tick_seq.fetch_add(1, Ordering::AcqRel);
                // Reserve the number durably before the call: after a crash the next tick
                // gets a new number, so no sequence number is ever handed out twice.
                if let Err(e) =
                    handle
                        .deps
                        .state
                        .set_last_tick_seq(&handle.tenant, &handle.name, seq)
                {
                    tracing::warn!(error = %e, "could not record the tick sequence; tick skipped");
                    handle.stats.ticks_skipped.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                let call = Call::Tick(WitTick {
                    seq,
                    scheduled_at_ms,
                });
                let number = version.version();
                let report = run_call(version, call).await;
                let _ = handle.settle(CallKind::Tick, number, report).await;
            }
            Job::Message {
                topic,
                payload,
                done,
            } => {
                let Some(version) = handle.active() else {
                    handle
                        .stats
                        .messages_dropped
                        .fetch_add(1, Ordering::Relaxed);
                    if let Some(done) = done {
                        let _ = done.send(Err(DeliveryError::Inactive));
                    }
                    continue;
                };
                let number = version.version();
                let report = run_call(version, Call::Message { topic, payload }).await;
                let result = handle
                    .settle(CallKind::Message, number, report)
                    .await
                    .map_err(DeliveryError::Failed);
                if let Some(done) = done {
                    let _ = done.send(result);
                }
            }
        }
    }
}

async fn run_call(version: Arc<LoadedVersion>, call: Call) -> CallReport {
    let kind = call.kind();
    match tokio::task::spawn_blocking(move || version.call(&call)).await {
        Ok(report) => report,
        Err(e) => CallReport {
            outcome: Outcome::Trapped(crate::instance::Trap {
                class: crate::stats::TrapClass::Other,
                message: format!("{} host task failed: {e}", kind_export(kind)),
            }),
            emitted: Emitted::default(),
            dropped: 0,
            fresh_instance: false,
            elapsed: Duration::ZERO,
        },
    }
}
