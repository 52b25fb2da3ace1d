//! One loaded component version: its `InstancePre`, its live instance, and the call path
//! that turns traps into clear statuses.
//!
//! A version keeps at most one live instance, entered by one call at a time. If a call traps
//! the instance is dropped (a trapped instance cannot be entered again) and the next call
//! instantiates afresh and runs `init` first; nothing outside this version is affected.

use crate::budget::InstanceSlot;
use crate::host::stdio::panic_message;
use crate::host::{
    Collector, CollectorPre, ComplianceRule, ComplianceRulePre, CorrelationPolicy,
    CorrelationPolicyPre, CpuDeadlineExceeded, Emitted, GuestOutput, HostState, InstanceEnv,
    MemoryLimitExceeded, TopologyView, WallClockExceeded, WitAlert, WitDecision, WitFinding,
    WitRuleDevice, WitTick,
};
use crate::manifest::World;
use crate::native::{NativeCollector, NativeHost};
use crate::stats::{CallKind, LogSource, TrapClass};
use parking_lot::Mutex;
use std::sync::Arc;
use std::time::{Duration, Instant};
use wasmtime::component::{Component, Linker};
use wasmtime::{Engine, Store, UpdateDeadline};

/// A call into a component.
#[derive(Clone, Debug)]
pub enum Call {
    Tick(WitTick),
    Message { topic: String, payload: Vec<u8> },
}

impl Call {
    pub fn kind(&self) -> CallKind {
        match self {
            Call::Tick(_) => CallKind::Tick,
            Call::Message { .. } => CallKind::Message,
        }
    }
}

#[derive(Clone, Debug)]
pub struct Trap {
    pub class: TrapClass,
    /// What users see: "CPU deadline exceeded", "memory limit exceeded", "panicked: ...".
    pub message: String,
}

#[derive(Clone, Debug)]
pub enum Outcome {
    Ok,
    /// The export returned `err(message)`.
    GuestError(String),
    /// A fresh instance could not be started: instantiation failed or `init` refused.
    InitFailed(String),
    Trapped(Trap),
}

#[derive(Debug)]
pub struct CallReport {
    pub outcome: Outcome,
    /// What the call emitted; empty if it trapped (those records are counted as dropped).
    pub emitted: Emitted,
    /// Records discarded because the call trapped.
    pub dropped: usize,
    /// A new instance was started (and `init` run) for this call.
    pub fresh_instance: bool,
    pub elapsed: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{0}")]
    WrongWorld(String),
}

/// A world's pre-linked component: what `instantiate` makes bindings from.
enum WorldPre {
    Collector(CollectorPre<HostState>),
    Rule(ComplianceRulePre<HostState>),
    Policy(CorrelationPolicyPre<HostState>),
}

/// A live instance's exports, per world.
enum Bindings {
    Collector(Collector),
    Rule(ComplianceRule),
    Policy(CorrelationPolicy),
}

impl Bindings {
    fn call_init(
        &self,
        store: &mut Store<HostState>,
        config: &str,
    ) -> wasmtime::Result<Result<(), String>> {
        match self {
            Bindings::Collector(b) => b.call_init(store, config),
            Bindings::Rule(b) => b.call_init(store, config),
            Bindings::Policy(b) => b.call_init(store, config),
        }
    }
}

/// Instances of a request/response world evaluating at once (an audit spreads devices over
/// the cores); collectors have one, entered by one call at a time, and so has a correlation
/// policy (a tenant's batches are decided in order).
pub fn pool_size(world: World) -> usize {
    match world {
        World::Collector | World::CorrelationPolicy => 1,
        World::ComplianceRule => std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
            .clamp(1, 4),
    }
}

struct Live {
    store: Store<HostState>,
    bindings: Bindings,
    stderr: GuestOutput,
    /// Its claim on the tenant's instance quota, given back when it is dropped.
    _slot: InstanceSlot,
}

pub struct LoadedVersion {
    pub env: Arc<InstanceEnv>,
    body: Body,
}

/// What runs the calls: a WebAssembly component, or native code (see `native`).
enum Body {
    Wasm {
        engine: Engine,
        pre: WorldPre,
        /// The pool of instances; index 0 is the one `call` and `warm` use.
        lives: Vec<Mutex<Option<Live>>>,
    },
    Native(Mutex<NativeBody>),
}

struct NativeBody {
    collector: Box<dyn NativeCollector>,
    started: bool,
}

impl LoadedVersion {
    /// Link `component` against the collector world. Fails if it imports something this host
    /// does not provide or does not export what the world requires.
    pub fn new(
        engine: &Engine,
        linker: &Linker<HostState>,
        component: &Component,
        env: Arc<InstanceEnv>,
    ) -> Result<Self, LoadError> {
        let world = env.manifest.world.wit_name();
        let instance_pre = linker.instantiate_pre(component).map_err(|e| {
            LoadError::WrongWorld(format!(
                "the component's imports cannot be satisfied by world {world}: {e:#}"
            ))
        })?;
        let wrong = |e: wasmtime::Error| {
            LoadError::WrongWorld(format!(
                "the component does not implement world {world}: {e:#}"
            ))
        };
        let kind = env.manifest.world;
        let pre = match kind {
            World::Collector => {
                WorldPre::Collector(CollectorPre::new(instance_pre).map_err(wrong)?)
            }
            World::ComplianceRule => {
                WorldPre::Rule(ComplianceRulePre::new(instance_pre).map_err(wrong)?)
            }
            World::CorrelationPolicy => {
                WorldPre::Policy(CorrelationPolicyPre::new(instance_pre).map_err(wrong)?)
            }
        };
        Ok(LoadedVersion {
            env,
            body: Body::Wasm {
                engine: engine.clone(),
                pre,
                lives: (0..pool_size(kind)).map(|_| Mutex::new(None)).collect(),
            },
        })
    }

    /// A version whose calls run `collector`, natively.
    pub fn native(env: Arc<InstanceEnv>, collector: Box<dyn NativeCollector>) -> Self {
        LoadedVersion {
            env,
            body: Body::Native(Mutex::new(NativeBody {
                collector,
                started: false,
            })),
        }
    }

    pub fn version(&self) -> u32 {
        self.env.version
    }

    /// Start an instance and run `init` if none is live: the warm-up before a swap.
    pub fn warm(&self) -> CallReport {
        let started = Instant::now();
        let live = match &self.body {
            Body::Wasm { lives, .. } => &lives[0],
            Body::Native(native) => return self.native_call(&mut native.lock(), None, started),
        };
        let mut live = live.lock();
        if live.is_some() {
            return CallReport {
                outcome: Outcome::Ok,
                emitted: Emitted::default(),
                dropped: 0,
                fresh_instance: false,
                elapsed: started.elapsed(),
            };
        }
        match self.start_instance() {
            Ok((instance, emitted)) => {
                *live = Some(instance);
                CallReport {
                    outcome: Outcome::Ok,
                    emitted,
                    dropped: 0,
                    fresh_instance: true,
                    elapsed: started.elapsed(),
                }
            }
            Err((message, dropped)) => CallReport {
                outcome: Outcome::InitFailed(message),
                emitted: Emitted::default(),
                dropped,
                fresh_instance: true,
                elapsed: started.elapsed(),
            },
        }
    }

    /// Run one call on the live instance, starting one first if needed.
    pub fn call(&self, call: &Call) -> CallReport {
        // SOTP's own traces (`[server.traces]`); free when they are off.
        let _span = tracing::info_span!(
            target: crate::traces::own::TARGET,
            "component call",
            otel.name = %format!("{} {}", self.env.component, call.kind().as_str()),
            sotp.tenant = %self.env.tenant,
            sotp.component = %self.env.component,
            sotp.version = self.env.version,
        )
        .entered();
        let started = Instant::now();
        let live = match &self.body {
            Body::Wasm { lives, .. } => &lives[0],
            Body::Native(native) => {
                return self.native_call(&mut native.lock(), Some(call), started);
            }
        };
        let mut guard = live.lock();
        let mut emitted = Emitted::default();
        let fresh_instance = guard.is_none();
        if fresh_instance {
            match self.start_instance() {
                Ok((instance, init_emitted)) => {
                    *guard = Some(instance);
                    emitted = init_emitted;
                }
                Err((message, dropped)) => {
                    return CallReport {
                        outcome: Outcome::InitFailed(message),
                        emitted,
                        dropped,
                        fresh_instance,
                        elapsed: started.elapsed(),
                    };
                }
            }
        }
        let live = guard.as_mut().expect("instance started above");
        begin_call(&mut live.store);
        let result = match (&live.bindings, call) {
            (Bindings::Collector(b), Call::Tick(tick)) => b.call_on_tick(&mut live.store, *tick),
            (Bindings::Collector(b), Call::Message { topic, payload }) => {
                b.call_on_message(&mut live.store, topic, payload)
            }
            (Bindings::Rule(_) | Bindings::Policy(_), _) => Ok(Err(format!(
                "a {} component takes no ticks or messages",
                self.env.manifest.world.name()
            ))),
        };
        let call_emitted = std::mem::take(&mut live.store.data_mut().out);
        let outcome = match result {
            Ok(Ok(())) => Outcome::Ok,
            Ok(Err(message)) => Outcome::GuestError(message),
            Err(error) => {
                let trap = classify(error, &live.stderr.take_captured(), &self.env);
                *guard = None;
                let dropped = emitted.len() + call_emitted.len();
                return CallReport {
                    outcome: Outcome::Trapped(trap),
                    emitted: Emitted::default(),
                    dropped,
                    fresh_instance,
                    elapsed: started.elapsed(),
                };
            }
        };
        live.stderr.take_captured();
        emitted.append(call_emitted);
        CallReport {
            outcome,
            emitted,
            dropped: 0,
            fresh_instance,
            elapsed: started.elapsed(),
        }
    }

    /// A compliance rule's `evaluate` on one device, on a free instance of the pool (starting
    /// one, with `init`, if needed). Errors are what the audit reports: the guest's `err`, a
    /// failed `init`, or a trap named as users read it (CPU deadline, memory limit, ...).
    pub fn evaluate(
        &self,
        device: &WitRuleDevice,
        config: &str,
    ) -> Result<Vec<WitFinding>, String> {
        // A failure is the audit's error result and, as for any call, the component's
        // `last_error` (what `sotp component show` tells the operator).
        self.evaluate_once(device, config).inspect_err(|message| {
            self.env
                .stats
                .set_last_error(format!("evaluate on {}: {message}", device.name));
        })
    }

    fn evaluate_once(
        &self,
        device: &WitRuleDevice,
        config: &str,
    ) -> Result<Vec<WitFinding>, String> {
        self.request(CallKind::Evaluate, None, |bindings, store| match bindings {
            Bindings::Rule(b) => Some(b.call_evaluate(store, device, config)),
            _ => None,
        })
    }

    /// A correlation policy's `decide` on a batch, reading `view` through `topology`.
    /// Errors (the guest's `err`, a failed `init`, a trap) are the caller's to fail open on;
    /// they also set the component's `last_error`.
    pub fn decide(
        &self,
        now_ms: i64,
        batch: &[WitAlert],
        view: Arc<dyn TopologyView>,
    ) -> Result<Vec<WitDecision>, String> {
        self.request(
            CallKind::Decide,
            Some(view),
            |bindings, store| match bindings {
                Bindings::Policy(b) => Some(b.call_decide(store, now_ms, batch)),
                _ => None,
            },
        )
        .inspect_err(|message| {
            self.env
                .stats
                .set_last_error(format!("decide on {} alert(s): {message}", batch.len()));
        })
    }

    /// One request/response call on a free instance of the pool (starting one, with `init`,
    /// if needed); `call` returns `None` if the instance is not of the world it expects.
    fn request<R>(
        &self,
        kind: CallKind,
        view: Option<Arc<dyn TopologyView>>,
        call: impl FnOnce(
            &Bindings,
            &mut Store<HostState>,
        ) -> Option<wasmtime::Result<Result<R, String>>>,
    ) -> Result<R, String> {
        let Body::Wasm { lives, .. } = &self.body else {
            return Err("a native component answers no requests".into());
        };
        let mut guard = lives
            .iter()
            .find_map(|l| l.try_lock())
            .unwrap_or_else(|| lives[thread_index() % lives.len()].lock());
        if guard.is_none() {
            let (instance, _) = self.start_instance().map_err(|(message, _)| message)?;
            *guard = Some(instance);
        }
        let live = guard.as_mut().expect("instance started above");
        begin_call(&mut live.store);
        live.store.data_mut().topology = view;
        self.env.stats.count_call(kind);
        let result = call(&live.bindings, &mut live.store);
        live.store.data_mut().out = Emitted::default();
        live.store.data_mut().topology = None;
        let Some(result) = result else {
            return Err(format!(
                "this component is a {}",
                self.env.manifest.world.name()
            ));
        };
        match result {
            Ok(Ok(answer)) => {
                live.stderr.take_captured();
                Ok(answer)
            }
            Ok(Err(message)) => Err(message),
            Err(error) => {
                let trap = classify(error, &live.stderr.take_captured(), &self.env);
                self.env.stats.count_trap(trap.class);
                *guard = None;
                Err(trap.message)
            }
        }
    }

    /// A call (or, with `None`, the warm-up) on a native body: `init` first if needed.
    fn native_call(
        &self,
        body: &mut NativeBody,
        call: Option<&Call>,
        started: Instant,
    ) -> CallReport {
        let mut out = Emitted::default();
        let fresh_instance = !body.started;
        let report = |outcome, out| CallReport {
            outcome,
            emitted: out,
            dropped: 0,
            fresh_instance,
            elapsed: started.elapsed(),
        };
        if !body.started {
            self.env.stats.count_call(CallKind::Init);
            let config = self.env.manifest.config_json();
            let mut host = NativeHost {
                env: &self.env,
                out: &mut out,
            };
            if let Err(e) = body.collector.init(&config, &mut host) {
                return report(
                    Outcome::InitFailed(format!("init returned an error: {e}")),
                    Emitted::default(),
                );
            }
            body.started = true;
        }
        let Some(call) = call else {
            return report(Outcome::Ok, out);
        };
        let mut host = NativeHost {
            env: &self.env,
            out: &mut out,
        };
        let result = match call {
            Call::Tick(t) => body.collector.on_tick(t.seq, t.scheduled_at_ms, &mut host),
            Call::Message { topic, payload } => {
                body.collector.on_message(topic, payload, &mut host)
            }
        };
        match result {
            Ok(()) => report(Outcome::Ok, out),
            Err(e) => report(Outcome::GuestError(e), out),
        }
    }

    /// Instantiate and run `init`. On failure: the reason and how many records were dropped.
    fn start_instance(&self) -> Result<(Live, Emitted), (String, usize)> {
        let Body::Wasm { engine, pre, .. } = &self.body else {
            unreachable!("only WebAssembly bodies have instances");
        };
        let env = &self.env;
        let slot = env.budget.take_instance().map_err(|reason| (reason, 0))?;
        let stdout = GuestOutput::new(env.stats.clone(), LogSource::Stdout, env.version);
        let stderr = GuestOutput::new(env.stats.clone(), LogSource::Stderr, env.version);
        let mut store = Store::new(engine, HostState::new(env.clone(), stdout, stderr.clone()));
        store.limiter(|state| &mut state.memory);
        store.set_hostcall_fuel(crate::host::hostcall_fuel(&env.manifest));
        store.epoch_deadline_callback(|ctx| {
            let clock = &ctx.data().clock;
            if clock.wall_exceeded() {
                Err(wasmtime::Error::new(WallClockExceeded(clock.wall_limit)))
            } else if clock.guest_time() > clock.limit {
                Err(wasmtime::Error::new(CpuDeadlineExceeded(clock.limit)))
            } else {
                Ok(UpdateDeadline::Continue(1))
            }
        });
        begin_call(&mut store);
        env.stats.count_call(CallKind::Init);
        let instantiated = match pre {
            WorldPre::Collector(p) => p.instantiate(&mut store).map(Bindings::Collector),
            WorldPre::Rule(p) => p.instantiate(&mut store).map(Bindings::Rule),
            WorldPre::Policy(p) => p.instantiate(&mut store).map(Bindings::Policy),
        };
        let bindings = match instantiated {
            Ok(b) => b,
            Err(e) => {
                let trap = classify(e, &stderr.take_captured(), env);
                return Err((format!("instantiation failed: {}", trap.message), 0));
            }
        };
        let config = env.manifest.config_json();
        let result = bindings.call_init(&mut store, &config);
        let emitted = std::mem::take(&mut store.data_mut().out);
        match result {
            Ok(Ok(())) => {
                stderr.take_captured();
                Ok((
                    Live {
                        store,
                        bindings,
                        stderr,
                        _slot: slot,
                    },
                    emitted,
                ))
            }
            Ok(Err(message)) => Err((format!("init returned an error: {message}"), emitted.len())),
            Err(e) => {
                let trap = classify(e, &stderr.take_captured(), env);
                env.stats.count_trap(trap.class);
                Err((format!("init trapped: {}", trap.message), emitted.len()))
            }
        }
    }
}

fn begin_call(store: &mut Store<HostState>) {
    store.data_mut().begin_call();
    store.set_epoch_deadline(1);
}

/// Name a trap the way a user should read it.
fn classify(error: wasmtime::Error, stderr: &str, env: &InstanceEnv) -> Trap {
    if error.downcast_ref::<CpuDeadlineExceeded>().is_some() {
        return Trap {
            class: TrapClass::CpuDeadline,
            message: format!(
                "CPU deadline exceeded (limits.cpu_ms = {})",
                env.manifest.limits.cpu_ms
            ),
        };
    }
    if error.downcast_ref::<WallClockExceeded>().is_some() {
        return Trap {
            class: TrapClass::WallClock,
            message: format!(
                "wall-clock budget exceeded (limits.wall_ms = {}, host calls included)",
                env.manifest.limits.wall_ms
            ),
        };
    }
    if format!("{error:#}").contains("fuel allocated for hostcalls has been exhausted") {
        return Trap {
            class: TrapClass::HostcallData,
            message: format!(
                "host-call data limit exceeded: one call into the host carried more than limits.max_emit_bytes = {}",
                env.manifest.limits.max_emit_bytes
            ),
        };
    }
    if format!("{error:#}").contains("resource table has no free keys") {
        return Trap {
            class: TrapClass::Other,
            message: format!(
                "resource limit exceeded: the instance held more than {} WASI resources (streams, pollables, descriptors) at once (resource table full)",
                crate::host::MAX_RESOURCES
            ),
        };
    }
    if error.downcast_ref::<MemoryLimitExceeded>().is_some() {
        return Trap {
            class: TrapClass::MemoryLimit,
            message: format!(
                "memory limit exceeded (limits.memory = {})",
                env.manifest.limits.memory
            ),
        };
    }
    if let Some(message) = panic_message(stderr) {
        return Trap {
            class: TrapClass::Panic,
            message: format!("panicked: {message}"),
        };
    }
    let message = match error.downcast_ref::<wasmtime::Trap>() {
        Some(trap) => format!("trapped: {trap}"),
        None => format!("failed: {error:#}"),
    };
    Trap {
        class: TrapClass::Other,
        message,
    }
}

/// A small per-thread number, to spread waiting callers over a pool.
fn thread_index() -> usize {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    std::thread::current().id().hash(&mut h);
    h.finish() as usize
}
