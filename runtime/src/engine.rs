//! The shared Wasmtime engine: configuration, the epoch ticker that enforces CPU deadlines,
//! and the on-disk cache of precompiled components.
//!
//! One engine serves every tenant. It is configured once for the whole process because
//! precompiled artifacts are only valid for the exact `Config` that produced them; the cache
//! key therefore includes a fingerprint of the engine configuration as well as the content
//! hash of the component. Artifacts are cached per namespace (a tenant): a tenant whose
//! upload compiles in a millisecond must not learn that another tenant runs the same bytes.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use wasmtime::component::Component;
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

/// How component instances get their memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Allocation {
    /// Slots reserved up front; instantiation is a few microseconds.
    Pooling,
    /// Memory mapped per instance; used when the pool's reservation is refused.
    OnDemand,
}

#[derive(Clone, Debug)]
pub struct EngineSettings {
    /// Largest linear memory any instance may have (manifests ask for less).
    pub max_memory: u64,
    /// Concurrent component instances the pool reserves slots for.
    pub pool_instances: u32,
    /// How often the epoch advances; CPU deadlines are checked at this granularity.
    pub epoch_tick: Duration,
    /// Where precompiled artifacts are kept.
    pub cache_dir: PathBuf,
    /// Skip the pool (tests of the fallback, hosts with little address space).
    pub force_on_demand: bool,
}

pub struct WasmEngine {
    engine: Engine,
    allocation: Allocation,
    fingerprint: String,
    cache_dir: PathBuf,
    /// `cache_dir`, opened.
    cache: cap_std::fs::Dir,
    epoch_tick: Duration,
    ticker_stop: Arc<AtomicBool>,
}

/// Where a compiled component came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CompileSource {
    Cache,
    Compiled,
}

#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    #[error("the upload is not WebAssembly (it does not start with the `\\0asm` magic number)")]
    NotWasm,
    #[error(
        "the upload is a core WebAssembly module, not a component; build for wasm32-wasip2 or wrap it with `wasm-tools component new`"
    )]
    CoreModule,
    #[error("the component failed to compile: {0}")]
    Invalid(String),
    #[error("component cache: {0}")]
    Cache(String),
}

impl WasmEngine {
    pub fn new(settings: &EngineSettings) -> anyhow::Result<Self> {
        if !settings.cache_dir.exists() {
            let mut builder = std::fs::DirBuilder::new();
            std::os::unix::fs::DirBuilderExt::mode(&mut builder, crate::datadir::DIR_MODE);
            builder.recursive(true).create(&settings.cache_dir)?;
        }
        let cache =
            cap_std::fs::Dir::open_ambient_dir(&settings.cache_dir, cap_std::ambient_authority())?;
        // Artifacts of the layout before per-tenant namespaces: recompiled on demand.
        for entry in cache.entries()? {
            let entry = entry?;
            if entry.file_type()?.is_file()
                && entry.file_name().to_string_lossy().ends_with(".cwasm")
            {
                cache.remove_file(entry.file_name())?;
            }
        }
        let (engine, allocation) = if settings.force_on_demand {
            (Engine::new(&base_config())?, Allocation::OnDemand)
        } else {
            let mut config = base_config();
            let mut pool = PoolingAllocationConfig::default();
            pool.total_component_instances(settings.pool_instances)
                .total_core_instances(settings.pool_instances * 4)
                .total_memories(settings.pool_instances * 2)
                .total_tables(settings.pool_instances * 4)
                .total_stacks(settings.pool_instances)
                .max_memories_per_component(4)
                .max_memory_size(settings.max_memory as usize);
            config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
            match Engine::new(&config) {
                Ok(engine) => (engine, Allocation::Pooling),
                Err(e) => {
                    tracing::warn!(
                        error = %e,
                        "pooling allocator reservation refused; falling back to on-demand allocation"
                    );
                    (Engine::new(&base_config())?, Allocation::OnDemand)
                }
            }
        };
        let fingerprint = {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            engine.precompile_compatibility_hash().hash(&mut h);
            format!("{:016x}", h.finish())
        };
        let ticker_stop = Arc::new(AtomicBool::new(false));
        spawn_epoch_ticker(engine.clone(), settings.epoch_tick, ticker_stop.clone());
        Ok(WasmEngine {
            engine,
            allocation,
            fingerprint,
            cache_dir: settings.cache_dir.clone(),
            cache,
            epoch_tick: settings.epoch_tick,
            ticker_stop,
        })
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    pub fn allocation(&self) -> Allocation {
        self.allocation
    }

    pub fn epoch_tick(&self) -> Duration {
        self.epoch_tick
    }

    /// Compile `wasm` (whose SHA-256 is `sha256`), or load it from `namespace`'s artifact
    /// cache (`namespace`: a tenant id, `[a-z0-9-]`).
    pub fn compile(
        &self,
        namespace: &str,
        sha256: &str,
        wasm: &[u8],
    ) -> Result<(Component, CompileSource, Duration), CompileError> {
        check_component_header(wasm)?;
        let started = Instant::now();
        let path = self.artifact_path(namespace, sha256)?;
        if path.exists() {
            // SAFETY: files in the cache directory are written only by `store_artifact` below
            // from `Component::serialize` of this same engine configuration (the fingerprint is
            // part of the file name); deserialize also re-checks compatibility.
            match unsafe { Component::deserialize_file(&self.engine, &path) } {
                Ok(component) => {
                    return Ok((component, CompileSource::Cache, started.elapsed()));
                }
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "discarding unusable cached artifact");
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
        let component = Component::new(&self.engine, wasm)
            .map_err(|e| CompileError::Invalid(format!("{e:#}")))?;
        let elapsed = started.elapsed();
        if let Err(e) = self.store_artifact(&component, &path) {
            tracing::warn!(error = %e, "could not cache the compiled component");
        }
        Ok((component, CompileSource::Compiled, elapsed))
    }

    /// `<cache>/<namespace>/<sha256>-<fingerprint>.cwasm`, the namespace directory created.
    fn artifact_path(&self, namespace: &str, sha256: &str) -> Result<PathBuf, CompileError> {
        let plain = |s: &str| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        };
        if !plain(namespace) || !plain(sha256) {
            return Err(CompileError::Cache(format!(
                "`{namespace}/{sha256}` is not a cache key"
            )));
        }
        crate::datadir::subdir(&self.cache, namespace)
            .map_err(|e| CompileError::Cache(e.to_string()))?;
        Ok(self
            .cache_dir
            .join(namespace)
            .join(format!("{sha256}-{}.cwasm", self.fingerprint)))
    }

    fn store_artifact(&self, component: &Component, path: &Path) -> Result<(), CompileError> {
        let bytes = component
            .serialize()
            .map_err(|e| CompileError::Cache(e.to_string()))?;
        let cache = |e: std::io::Error| CompileError::Cache(e.to_string());
        let namespace = path
            .parent()
            .and_then(Path::file_name)
            .and_then(|n| n.to_str())
            .ok_or_else(|| CompileError::Cache("artifact path".into()))?;
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| CompileError::Cache("artifact path".into()))?;
        let dir = crate::datadir::subdir(&self.cache, namespace).map_err(cache)?;
        crate::datadir::write_atomic(&dir, name, &bytes, crate::datadir::FILE_MODE).map_err(cache)
    }

    /// Drop a namespace's cached artifacts (its tenant was deleted).
    pub fn remove_namespace(&self, namespace: &str) -> std::io::Result<()> {
        match self.cache.remove_dir_all(namespace) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }
}

impl Drop for WasmEngine {
    fn drop(&mut self) {
        self.ticker_stop.store(true, Ordering::Relaxed);
    }
}

fn base_config() -> Config {
    let mut config = Config::new();
    // Component-model async is not used; with it off, calls cost a third (notes/wasm.md).
    config.concurrency_support(false);
    config.epoch_interruption(true);
    config.wasm_component_model(true);
    // Each linear memory reserves 4 GiB of address space (never memory: it is mapped with no
    // access, and only what an instance touches is ever backed), so that with a guard region
    // behind it no 32-bit address plus a static offset below 64 KiB can leave the
    // reservation, and Cranelift compiles loads and stores without a bounds check. Measured
    // (runtime bench): a text-parsing guest takes ~15% less time than with a reservation of
    // `max_memory` and explicit checks. The default pool of 1,000 instances (2,000 memories)
    // reserves ~8 TiB of x86-64's 128 TiB; a host that refuses it (`ulimit -v`) falls back
    // to on-demand allocation. `max_memory` still bounds what a memory may grow to.
    config.memory_reservation(1 << 32);
    config.memory_guard_size(1 << 16);
    config.memory_reservation_for_growth(0);
    config
}

fn spawn_epoch_ticker(engine: Engine, tick: Duration, stop: Arc<AtomicBool>) {
    std::thread::Builder::new()
        .name("sotp-epoch".into())
        .spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(tick);
                engine.increment_epoch();
            }
        })
        .expect("spawning the epoch ticker thread");
}

/// Tell apart "not wasm at all", "a core module" and "a component" from the 8-byte header.
pub fn check_component_header(bytes: &[u8]) -> Result<(), CompileError> {
    if bytes.len() < 8 || &bytes[0..4] != b"\0asm" {
        return Err(CompileError::NotWasm);
    }
    // Core modules carry version 1 and layer 0; components carry layer 1.
    match bytes[6..8] {
        [0, 0] => Err(CompileError::CoreModule),
        [1, 0] => Ok(()),
        _ => Err(CompileError::Invalid(
            "unknown WebAssembly binary layer".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_are_told_apart() {
        assert!(matches!(
            check_component_header(b"hello world"),
            Err(CompileError::NotWasm)
        ));
        assert!(matches!(
            check_component_header(b"\0asm\x01\0\0\0"),
            Err(CompileError::CoreModule)
        ));
        assert!(check_component_header(b"\0asm\x0d\0\x01\0").is_ok());
    }
}
