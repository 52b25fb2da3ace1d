//! A collector's driver: the queue of calls it handles one at a time, and its schedule.
//!
//! Every tick and message goes through one queue consumed by one task, so each is handled
//! exactly once, by whichever version is active in the slot when it is dequeued (a swap
//! never loses or doubles a message).
//!
//! Calls run on the blocking pool, each after taking one of its tenant's call slots
//! (`budget`), and nothing that blocks — the guest, SQLite — runs on an async worker. Queued
//! messages are handled in batches with one commit, but a batch is cut (and committed) as
//! soon as what it emitted reaches the component's `limits.max_emit_bytes`, so batching
//! holds less than two calls' worth (the budget, plus what the call that reached it added).

use super::Deps;
use super::slot::{ComponentState, VersionSlot};
use crate::budget::TenantBudget;
use crate::host::{Emitted, WitTick};
use crate::instance::{Call, CallReport, LoadedVersion, Outcome};
use crate::manifest::TickPlan;
use crate::state::StateStore;
use crate::stats::{CallKind, ComponentStats, LogLevel, LogSource};
use crate::telemetry::{Batch, LedgerEntry, TelemetryStore};
use parking_lot::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

const QUEUE_DEPTH: usize = 4096;
/// Messages handled in one go (one blocking task, one commit) when they queue up.
const MESSAGE_BATCH: usize = 512;

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
    #[error("a {0} component takes no messages")]
    NotACollector(&'static str),
}

/// How a queued message ended, for whoever waits on it (the MQTT acker, the API).
#[derive(Clone, Debug, PartialEq)]
pub enum MessageOutcome {
    /// Handled, and what the component emitted for it is durable. `error` is set if the
    /// component reported an error or trapped on it (the message is still done with).
    Handled { error: Option<String> },
    /// Not handled durably (no active version, or the store refused the commit): the
    /// message must not be acknowledged upstream.
    NotDurable(String),
}

struct QueuedMessage {
    topic: String,
    payload: Vec<u8>,
    ledger: Option<LedgerEntry>,
    done: Option<oneshot::Sender<MessageOutcome>>,
}

enum Job {
    Tick { scheduled_at_ms: i64 },
    Message(QueuedMessage),
}

pub(crate) struct CollectorDriver {
    slot: Arc<VersionSlot>,
    stats: Arc<ComponentStats>,
    jobs: mpsc::Sender<Job>,
    schedule: Mutex<Option<(TickPlan, JoinHandle<()>)>>,
    next_tick_seq: AtomicU64,
    tick_pending: AtomicBool,
    /// Held by the queue task while it handles a job: `stopped` waits on it.
    busy: tokio::sync::Mutex<()>,
    telemetry: Arc<TelemetryStore>,
    state: Arc<StateStore>,
    budget: Arc<TenantBudget>,
}

impl CollectorDriver {
    pub(crate) fn spawn(
        slot: Arc<VersionSlot>,
        last_tick_seq: u64,
        deps: &Deps,
    ) -> Arc<CollectorDriver> {
        let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
        let driver = Arc::new(CollectorDriver {
            stats: slot.stats.clone(),
            slot,
            jobs: tx,
            schedule: Mutex::new(None),
            next_tick_seq: AtomicU64::new(last_tick_seq + 1),
            tick_pending: AtomicBool::new(false),
            busy: tokio::sync::Mutex::new(()),
            telemetry: deps.telemetry.clone(),
            state: deps.state.clone(),
            budget: deps.budget.clone(),
        });
        tokio::spawn(run_queue(Arc::downgrade(&driver), rx));
        driver
    }

    fn active(&self) -> Option<Arc<LoadedVersion>> {
        self.slot.active()
    }

    /// Wait until no job runs.
    pub(crate) async fn stopped(&self) {
        let _idle = self.busy.lock().await;
    }

    pub(crate) fn stop_schedule(&self) {
        if let Some((_, task)) = self.schedule.lock().take() {
            task.abort();
        }
    }

    /// Queue a message and wait until what the component emitted for it is durable.
    pub(crate) async fn deliver(
        &self,
        topic: String,
        payload: Vec<u8>,
    ) -> Result<(), DeliveryError> {
        let (done, wait) = oneshot::channel();
        self.jobs
            .try_send(Job::Message(QueuedMessage {
                topic,
                payload,
                ledger: None,
                done: Some(done),
            }))
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => DeliveryError::QueueFull,
                mpsc::error::TrySendError::Closed(_) => DeliveryError::Gone,
            })?;
        match wait.await.map_err(|_| DeliveryError::Gone)? {
            MessageOutcome::Handled { error: None } => Ok(()),
            MessageOutcome::Handled { error: Some(e) } => Err(DeliveryError::Failed(e)),
            MessageOutcome::NotDurable(e) => Err(DeliveryError::Failed(e)),
        }
    }

    /// Queue a message (waiting for room: backpressure) and return where its outcome will
    /// be reported.
    pub(crate) async fn enqueue_message(
        &self,
        topic: String,
        payload: Vec<u8>,
        ledger: Option<LedgerEntry>,
    ) -> oneshot::Receiver<MessageOutcome> {
        let (done, wait) = oneshot::channel();
        let job = Job::Message(QueuedMessage {
            topic,
            payload,
            ledger,
            done: Some(done),
        });
        if let Err(mpsc::error::SendError(Job::Message(m))) = self.jobs.send(job).await
            && let Some(done) = m.done
        {
            let _ = done.send(MessageOutcome::NotDurable(
                "the component was removed".into(),
            ));
        }
        wait
    }

    pub(crate) fn reschedule(self: &Arc<Self>, plan: Option<TickPlan>) {
        let mut schedule = self.schedule.lock();
        if schedule.as_ref().map(|(current, _)| *current) == plan {
            return;
        }
        if let Some((_, task)) = schedule.take() {
            task.abort();
        }
        if let Some(plan) = plan {
            let task = tokio::spawn(run_schedule(Arc::downgrade(self), plan));
            *schedule = Some((plan, task));
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

    pub(crate) async fn commit(&self, emitted: Emitted) -> Result<(), String> {
        self.commit_with_ledger(emitted, Vec::new()).await
    }

    async fn commit_with_ledger(
        &self,
        emitted: Emitted,
        ledger: Vec<LedgerEntry>,
    ) -> Result<(), String> {
        if emitted.is_empty() && ledger.is_empty() {
            return Ok(());
        }
        let (samples, logs) = (emitted.samples.len() as u64, emitted.logs.len() as u64);
        let batch = Batch {
            tenant: self.slot.tenant.clone(),
            component: self.slot.name.clone(),
            samples: emitted.samples,
            logs: emitted.logs,
            ledger,
            ledger_clear: Vec::new(),
            max_series: self.budget.limits().max_series,
        };
        match self.telemetry.commit(batch).await {
            Ok(report) => {
                self.stats
                    .samples_stored
                    .fetch_add(samples - report.refused, Ordering::Relaxed);
                self.stats.logs_stored.fetch_add(logs, Ordering::Relaxed);
                if report.refused > 0 {
                    self.stats
                        .emitted_dropped
                        .fetch_add(report.refused, Ordering::Relaxed);
                    self.stats.set_last_error(format!(
                        "{} samples of new series not stored: the tenant is at its series quota",
                        report.refused
                    ));
                }
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

    /// Count a finished call and log what went wrong. Returns what to commit (a guest that
    /// reports an error keeps what it emitted before; a trapped call has nothing) and the
    /// error text, if any.
    fn account(
        &self,
        kind: CallKind,
        version: u32,
        report: CallReport,
    ) -> (Emitted, Option<String>) {
        self.stats.count_call(kind);
        if report.dropped > 0 {
            self.stats
                .emitted_dropped
                .fetch_add(report.dropped as u64, Ordering::Relaxed);
        }
        match report.outcome {
            Outcome::Ok => {
                if report.fresh_instance {
                    self.slot.set_state(ComponentState::Running);
                }
                (report.emitted, None)
            }
            Outcome::GuestError(message) => {
                self.stats.errors.fetch_add(1, Ordering::Relaxed);
                let text = format!("{} returned an error: {message}", kind_export(kind));
                self.stats.set_last_error(&text);
                // Into the ring only: a stream of bad payloads must not flood the server log.
                self.stats
                    .log(LogLevel::Warn, LogSource::Host, Some(version), &text);
                (report.emitted, Some(text))
            }
            Outcome::InitFailed(reason) => {
                self.stats.errors.fetch_add(1, Ordering::Relaxed);
                self.stats.set_last_error(&reason);
                self.slot.set_state(ComponentState::Failing(reason.clone()));
                self.slot.host_log(LogLevel::Error, Some(version), &reason);
                (Emitted::default(), Some(reason))
            }
            Outcome::Trapped(trap) => {
                self.stats.count_trap(trap.class);
                self.stats.set_last_error(&trap.message);
                self.slot.host_log(
                    LogLevel::Error,
                    Some(version),
                    &format!(
                        "{}: {}; the instance was dropped and the next call starts a fresh one",
                        kind_export(kind),
                        trap.message
                    ),
                );
                (Emitted::default(), Some(trap.message))
            }
        }
    }

    async fn run_tick(&self, scheduled_at_ms: i64) {
        self.tick_pending.store(false, Ordering::Release);
        let Some(version) = self.active() else {
            return;
        };
        let seq = self.next_tick_seq.fetch_add(1, Ordering::AcqRel);
        let call = Call::Tick(WitTick {
            seq,
            scheduled_at_ms,
        });
        let number = version.version();
        let slot = self.budget.call_slot().await;
        let (state, tenant, name) = (
            self.state.clone(),
            self.slot.tenant.clone(),
            self.slot.name.clone(),
        );
        let ran = tokio::task::spawn_blocking(move || {
            let _slot = slot;
            // Reserve the number durably before the call (on this thread: it is an fsync):
            // after a crash the next tick gets a new number, so no sequence number is ever
            // handed out twice.
            state
                .set_last_tick_seq(&tenant, &name, seq)
                .map_err(|e| e.to_string())?;
            Ok::<_, String>(version.call(&call))
        })
        .await;
        let report = match ran {
            Ok(Ok(report)) => report,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "could not record the tick sequence; tick skipped");
                self.stats.ticks_skipped.fetch_add(1, Ordering::Relaxed);
                return;
            }
            Err(e) => failed_report(CallKind::Tick, &e.to_string()),
        };
        let (emitted, _) = self.account(CallKind::Tick, number, report);
        let _ = self.commit(emitted).await;
    }

    /// Handle queued messages on one version in blocking tasks, commit what they emitted (and
    /// their ledger entries) together, then report each outcome — in rounds, each cut when
    /// what it emitted reaches `limits.max_emit_bytes`.
    async fn run_messages(&self, mut batch: Vec<QueuedMessage>) {
        while !batch.is_empty() {
            batch = self.run_message_round(batch).await;
        }
    }

    /// One round of [`Self::run_messages`]: returns the messages it did not get to.
    async fn run_message_round(&self, batch: Vec<QueuedMessage>) -> Vec<QueuedMessage> {
        let Some(version) = self.active() else {
            self.stats
                .messages_dropped
                .fetch_add(batch.len() as u64, Ordering::Relaxed);
            for m in batch {
                if let Some(done) = m.done {
                    let _ = done.send(MessageOutcome::NotDurable("no version is active".into()));
                }
            }
            return Vec::new();
        };
        let number = version.version();
        let budget = version.env.manifest.limits.max_emit_bytes.0 as usize;
        let mut waiting = Vec::with_capacity(batch.len());
        let mut calls = Vec::with_capacity(batch.len());
        for m in batch {
            calls.push(Call::Message {
                topic: m.topic,
                payload: m.payload,
            });
            waiting.push((m.ledger, m.done));
        }
        let reports = run_calls(version, calls, budget, &self.budget).await;
        // Messages past the cut go to the next round, in order.
        let rest: Vec<QueuedMessage> = reports
            .unrun
            .into_iter()
            .zip(waiting.drain(reports.reports.len()..))
            .map(|(call, (ledger, done))| match call {
                Call::Message { topic, payload } => QueuedMessage {
                    topic,
                    payload,
                    ledger,
                    done,
                },
                Call::Tick(_) => unreachable!("only messages are batched"),
            })
            .collect();
        let mut emitted = Emitted::default();
        let mut ledger = Vec::new();
        let mut errors = Vec::with_capacity(reports.reports.len());
        for (report, (entry, _)) in reports.reports.into_iter().zip(&waiting) {
            let (out, error) = self.account(CallKind::Message, number, report);
            emitted.append(out);
            ledger.extend(*entry);
            errors.push(error);
        }
        let committed = self.commit_with_ledger(emitted, ledger).await;
        for ((_, done), error) in waiting.into_iter().zip(errors) {
            if let Some(done) = done {
                let outcome = match &committed {
                    Ok(()) => MessageOutcome::Handled { error },
                    Err(e) => MessageOutcome::NotDurable(e.clone()),
                };
                let _ = done.send(outcome);
            }
        }
        rest
    }
}

impl Drop for CollectorDriver {
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
        CallKind::Evaluate => "evaluate",
        CallKind::Decide => "decide",
    }
}

async fn run_schedule(handle: Weak<CollectorDriver>, plan: TickPlan) {
    // The first tick one period (plus this activation's offset) from now.
    let offset = if plan.jitter.is_zero() {
        Duration::ZERO
    } else {
        plan.jitter.mul_f64(rand::random::<f64>())
    };
    let start = tokio::time::Instant::now() + plan.every + offset;
    let mut interval = tokio::time::interval_at(start, plan.every);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        interval.tick().await;
        let Some(handle) = handle.upgrade() else {
            return;
        };
        handle.enqueue_tick(crate::now_ms());
    }
}

async fn run_queue(handle: Weak<CollectorDriver>, mut jobs: mpsc::Receiver<Job>) {
    let mut deferred: Option<Job> = None;
    loop {
        let job = match deferred.take() {
            Some(job) => job,
            None => match jobs.recv().await {
                Some(job) => job,
                None => return,
            },
        };
        let Some(handle) = handle.upgrade() else {
            return;
        };
        let _busy = handle.busy.lock().await;
        match job {
            Job::Tick { scheduled_at_ms } => handle.run_tick(scheduled_at_ms).await,
            Job::Message(first) => {
                // Take what else is queued, up to a tick (handled next, in order).
                let mut batch = vec![first];
                while batch.len() < MESSAGE_BATCH {
                    match jobs.try_recv() {
                        Ok(Job::Message(m)) => batch.push(m),
                        Ok(tick) => {
                            deferred = Some(tick);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                handle.run_messages(batch).await;
            }
        }
    }
}

/// What [`run_calls`] did: a report per call it ran, and the calls it left (in order)
/// because what the others emitted reached the byte budget.
struct Ran {
    reports: Vec<CallReport>,
    unrun: Vec<Call>,
}

/// Run calls one after another on a blocking thread (after taking one of the tenant's call
/// slots), until they are done or what they emitted reaches `max_bytes` (the first call
/// always runs).
async fn run_calls(
    version: Arc<LoadedVersion>,
    calls: Vec<Call>,
    max_bytes: usize,
    budget: &Arc<crate::budget::TenantBudget>,
) -> Ran {
    let n = calls.len();
    let kind = calls.first().map(Call::kind).unwrap_or(CallKind::Message);
    let slot = budget.call_slot().await;
    let ran = tokio::task::spawn_blocking(move || {
        let _slot = slot;
        let mut reports = Vec::with_capacity(calls.len());
        let mut held = 0usize;
        let mut calls = calls.into_iter();
        for call in calls.by_ref() {
            let report = version.call(&call);
            held += report.emitted.bytes;
            reports.push(report);
            if held >= max_bytes {
                break;
            }
        }
        Ran {
            reports,
            unrun: calls.collect(),
        }
    })
    .await;
    match ran {
        Ok(ran) => ran,
        Err(e) => Ran {
            reports: (0..n)
                .map(|_| failed_report(kind, &e.to_string()))
                .collect(),
            unrun: Vec::new(),
        },
    }
}

/// The report of a call whose host task failed (it panicked or was cancelled).
fn failed_report(kind: CallKind, error: &str) -> CallReport {
    CallReport {
        outcome: Outcome::Trapped(crate::instance::Trap {
            class: crate::stats::TrapClass::Other,
            message: format!("{} host task failed: {error}", kind_export(kind)),
        }),
        emitted: Emitted::default(),
        dropped: 0,
        fresh_instance: false,
        elapsed: Duration::ZERO,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::testing;
    use crate::native::{NativeCollector, NativeHost};

    /// Emits 100 samples of new series for every message.
    struct Chatty;

    impl NativeCollector for Chatty {
        fn init(&mut self, _config: &str, _host: &mut NativeHost<'_>) -> Result<(), String> {
            Ok(())
        }

        fn on_message(
            &mut self,
            topic: &str,
            _payload: &[u8],
            host: &mut NativeHost<'_>,
        ) -> Result<(), String> {
            for i in 0..100 {
                host.emit_sample("m", vec![("i".into(), format!("{topic}-{i}"))], 1.0, None)?;
            }
            Ok(())
        }
    }

    #[tokio::test]
    async fn a_message_batch_stops_when_it_holds_its_byte_budget() {
        let (_dir, env) = testing::env("", Arc::new(testing::NoServices));
        let version = Arc::new(LoadedVersion::native(env, Box::new(Chatty)));
        let calls: Vec<Call> = (0..50)
            .map(|i| Call::Message {
                topic: format!("t{i}"),
                payload: Vec::new(),
            })
            .collect();
        let budget = crate::budget::TenantBudget::unlimited("acme");
        let one = run_calls(version.clone(), calls[..1].to_vec(), usize::MAX, &budget).await;
        let per_call = one.reports[0].emitted.bytes;
        assert!(per_call > 0);
        let ran = run_calls(version, calls, per_call * 3, &budget).await;
        assert_eq!(ran.reports.len(), 3, "cut once three calls' output is held");
        assert_eq!(
            ran.unrun.len(),
            47,
            "the rest wait for the next round, in order"
        );
        assert!(matches!(&ran.unrun[0], Call::Message { topic, .. } if topic == "t3"));
        let held: usize = ran.reports.iter().map(|r| r.emitted.bytes).sum();
        assert!(held <= per_call * 3);
    }
}
