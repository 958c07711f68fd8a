//! Running untrusted components: one wasmtime engine (Cranelift, pooling
//! allocator, epoch interruption, fuel), compiled components cached by
//! SHA-256 (in memory, and on disk across restarts), and a fresh store per
//! call with a wall-clock deadline, a fuel budget, a memory cap and an
//! output cap. A trap, timeout, out-of-memory or oversized output becomes a
//! [`RunError`] for that call only.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store, Trap};

use super::bindings::{self, Document, Input, KpiPluginInfo, KpiValue, Level, ReportPluginInfo};
use crate::config::PluginLimits;

/// How often the epoch ticker wakes up (one epoch is one millisecond).
const TICK: Duration = Duration::from_millis(1);
/// Concurrent instances the pool holds.
const POOL: u32 = 32;
/// Bytes of a freed memory or table slot zeroed in place rather than
/// decommitted (a small plugin touches no more).
const KEEP_RESIDENT: usize = 64 * 1024;
/// Freed slots decommitted together.
const DECOMMIT_BATCH: usize = 8;

/// Why a call failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RunError {
    #[error("the plugin ran longer than {0} ms and was stopped")]
    Timeout(u64),
    #[error("the plugin used up its fuel ({0} units) and was stopped")]
    OutOfFuel(u64),
    #[error("the plugin tried to use more than {0} bytes of memory and was stopped")]
    OutOfMemory(usize),
    #[error("the plugin's output ({size} bytes) exceeds the limit of {limit} bytes")]
    OutputTooLarge { size: usize, limit: usize },
    #[error("the plugin's input ({size} bytes) exceeds the limit of {limit} bytes")]
    InputTooLarge { size: usize, limit: usize },
    #[error("the plugin crashed: {0}")]
    Trap(String),
    #[error("the plugin reported an error: {0}")]
    Plugin(String),
    #[error("the plugin cannot be loaded: {0}")]
    Load(String),
}

impl RunError {
    /// The error code clients see.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Timeout(_) => "PLUGIN_TIMEOUT",
            Self::OutOfFuel(_) => "PLUGIN_OUT_OF_FUEL",
            Self::OutOfMemory(_) => "PLUGIN_OUT_OF_MEMORY",
            Self::OutputTooLarge { .. } => "PLUGIN_OUTPUT_TOO_LARGE",
            Self::InputTooLarge { .. } => "PLUGIN_INPUT_TOO_LARGE",
            Self::Trap(_) => "PLUGIN_TRAPPED",
            Self::Plugin(_) => "PLUGIN_FAILED",
            Self::Load(_) => "PLUGIN_INVALID",
        }
    }
}

/// One line a plugin logged.
#[derive(Debug, Clone)]
pub struct LogLine {
    pub level: Level,
    pub message: String,
}

/// Per-call state: the limiter and the plugin's log.
pub struct CallState {
    memory_cap: usize,
    denied_growth: bool,
    logs: Vec<LogLine>,
    log_bytes: usize,
}

/// Logs beyond this many bytes per call are dropped.
const MAX_LOG_BYTES: usize = 64 * 1024;

impl bindings::kpi::trackingbms::plugin::host::Host for CallState {
    fn log(&mut self, level: Level, message: String) {
        if self.log_bytes + message.len() > MAX_LOG_BYTES {
            return;
        }
        self.log_bytes += message.len();
        self.logs.push(LogLine { level, message });
    }
}

impl wasmtime::ResourceLimiter for CallState {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let ok = desired <= self.memory_cap;
        if !ok {
            self.denied_growth = true;
        }
        Ok(ok)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }
}

/// What a call produced besides its result.
#[derive(Debug, Clone)]
pub struct CallReport<T> {
    pub result: Result<T, RunError>,
    pub logs: Vec<LogLine>,
    pub elapsed: Duration,
    pub fuel_used: u64,
}

/// Which world a component implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum World {
    Kpi,
    Report,
}

impl World {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Kpi => "KPI",
            Self::Report => "REPORT",
        }
    }
}

/// A compiled component, ready to instantiate.
pub enum Prepared {
    Kpi(bindings::kpi::KpiPre<CallState>),
    Report(bindings::report::ReportPre<CallState>),
}

/// The engine and its caches; cheap to clone.
#[derive(Clone)]
pub struct Sandbox {
    engine: Engine,
    linker: Arc<Linker<CallState>>,
    compiled: Arc<Mutex<HashMap<String, Arc<Prepared>>>>,
    cache_dir: Option<PathBuf>,
}

impl Sandbox {
    pub fn new(cache_dir: Option<PathBuf>, max_memory_bytes: usize) -> anyhow::Result<Self> {
        let mut pool = PoolingAllocationConfig::default();
        pool.total_component_instances(POOL)
            .total_core_instances(POOL * 4)
            .total_memories(POOL * 2)
            .total_tables(POOL * 4)
            .max_memory_size(max_memory_bytes.max(1 << 20))
            // A freed slot's first pages are zeroed in place and the rest
            // returned to the kernel in batches: fewer system calls per call.
            .linear_memory_keep_resident(KEEP_RESIDENT)
            .table_keep_resident(KEEP_RESIDENT)
            .decommit_batch_size(DECOMMIT_BATCH);
        let mut config = Config::new();
        config
            .wasm_component_model(true)
            .epoch_interruption(true)
            .consume_fuel(true)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&config)?;
        let mut linker = Linker::new(&engine);
        bindings::kpi::trackingbms::plugin::host::add_to_linker::<CallState, HasSelf<CallState>>(
            &mut linker,
            |s| s,
        )?;
        // A ticker advances the engine's epoch once per elapsed millisecond
        // of real time (catching up after a late wake-up), so a deadline of
        // N ticks is N ms, not N sleeps.
        let ticker = engine.weak();
        std::thread::Builder::new()
            .name("plugin-epoch".into())
            .spawn(move || {
                let start = Instant::now();
                let mut ticks: u128 = 0;
                while let Some(engine) = ticker.upgrade() {
                    let due = start.elapsed().as_millis();
                    while ticks < due {
                        engine.increment_epoch();
                        ticks += 1;
                    }
                    drop(engine);
                    std::thread::sleep(TICK);
                }
            })?;
        if let Some(dir) = &cache_dir {
            std::fs::create_dir_all(dir)?;
        }
        Ok(Self {
            engine,
            linker: Arc::new(linker),
            compiled: Arc::default(),
            cache_dir,
        })
    }

    /// The prepared component of `sha256`, when it was prepared before.
    pub fn cached(&self, sha256: &str) -> Option<Arc<Prepared>> {
        self.compiled
            .lock()
            .ok()
            .and_then(|c| c.get(sha256).cloned())
    }

    /// Compiles (or loads from cache) a component and checks which world it
    /// implements.
    pub fn prepare(&self, sha256: &str, bytes: &[u8]) -> Result<Arc<Prepared>, RunError> {
        if let Some(p) = self.cached(sha256) {
            return Ok(p);
        }
        let component = self.load(sha256, bytes)?;
        let pre = self.linker.instantiate_pre(&component).map_err(|e| {
            RunError::Load(format!("it needs imports the host does not offer: {e:#}"))
        })?;
        let prepared = if let Ok(p) = bindings::kpi::KpiPre::new(pre.clone()) {
            Prepared::Kpi(p)
        } else if let Ok(p) = bindings::report::ReportPre::new(pre) {
            Prepared::Report(p)
        } else {
            return Err(RunError::Load(
                "it implements neither the `kpi` nor the `report` world of trackingbms:plugin@0.1"
                    .into(),
            ));
        };
        let prepared = Arc::new(prepared);
        if let Ok(mut c) = self.compiled.lock() {
            c.insert(sha256.to_owned(), prepared.clone());
        }
        Ok(prepared)
    }

    fn load(&self, sha256: &str, bytes: &[u8]) -> Result<Component, RunError> {
        let cached = self
            .cache_dir
            .as_ref()
            .map(|d| d.join(format!("{sha256}.cwasm")));
        if let Some(path) = &cached
            && path.exists()
        {
            // SAFETY: the file was written by `Component::serialize` of this
            // engine configuration under a name that is the SHA-256 of its
            // source; wasmtime checks the engine version and settings.
            if let Ok(c) = unsafe { Component::deserialize_file(&self.engine, path) } {
                return Ok(c);
            }
        }
        if wasmparser_is_core_module(bytes) {
            return Err(RunError::Load(
                "this is a core WebAssembly module, not a component; wrap it with `wasm-tools component new` (plugins/build.sh does)".into(),
            ));
        }
        let component = Component::new(&self.engine, bytes)
            .map_err(|e| RunError::Load(format!("not a valid WebAssembly component: {e:#}")))?;
        if let (Some(path), Ok(serialized)) = (&cached, component.serialize()) {
            let _ = std::fs::write(path, serialized);
        }
        Ok(component)
    }

    fn store(&self, limits: &PluginLimits) -> Store<CallState> {
        let mut store = Store::new(
            &self.engine,
            CallState {
                memory_cap: limits.memory_bytes,
                denied_growth: false,
                logs: Vec::new(),
                log_bytes: 0,
            },
        );
        store.limiter(|s| s as &mut dyn wasmtime::ResourceLimiter);
        store.set_epoch_deadline(limits.timeout_ms.max(1));
        store.epoch_deadline_trap();
        let _ = store.set_fuel(limits.fuel);
        store
    }

    fn classify(
        &self,
        err: wasmtime::Error,
        store: &Store<CallState>,
        limits: &PluginLimits,
    ) -> RunError {
        match err.downcast_ref::<Trap>() {
            Some(Trap::Interrupt) => RunError::Timeout(limits.timeout_ms),
            Some(Trap::OutOfFuel) => RunError::OutOfFuel(limits.fuel),
            _ if store.data().denied_growth => RunError::OutOfMemory(limits.memory_bytes),
            Some(trap) => RunError::Trap(trap.to_string()),
            None => RunError::Trap(format!("{err:#}")),
        }
    }

    fn finish<T>(
        &self,
        store: Store<CallState>,
        started: Instant,
        limits: &PluginLimits,
        result: Result<T, RunError>,
    ) -> CallReport<T> {
        let fuel_used = limits.fuel.saturating_sub(store.get_fuel().unwrap_or(0));
        CallReport {
            result,
            logs: store.into_data().logs,
            elapsed: started.elapsed(),
            fuel_used,
        }
    }

    /// Creates a fresh store and instance and drops them: what every call
    /// pays before the plugin runs (benchmarks).
    pub fn instantiate(&self, p: &Prepared, limits: &PluginLimits) -> Result<(), RunError> {
        let mut store = self.store(limits);
        let done = match p {
            Prepared::Kpi(pre) => pre.instantiate(&mut store).map(|_| ()),
            Prepared::Report(pre) => pre.instantiate(&mut store).map(|_| ()),
        };
        done.map_err(|e| self.classify(e, &store, limits))
    }

    /// `describe()` of a KPI plugin.
    pub fn describe_kpi(
        &self,
        p: &Prepared,
        limits: &PluginLimits,
    ) -> Result<KpiPluginInfo, RunError> {
        let Prepared::Kpi(pre) = p else {
            return Err(RunError::Load("not a KPI plugin".into()));
        };
        let mut store = self.store(limits);
        let out = pre
            .instantiate(&mut store)
            .and_then(|i| i.call_describe(&mut store));
        out.map_err(|e| self.classify(e, &store, limits))
    }

    /// `describe()` of a report plugin.
    pub fn describe_report(
        &self,
        p: &Prepared,
        limits: &PluginLimits,
    ) -> Result<ReportPluginInfo, RunError> {
        let Prepared::Report(pre) = p else {
            return Err(RunError::Load("not a report plugin".into()));
        };
        let mut store = self.store(limits);
        let out = pre
            .instantiate(&mut store)
            .and_then(|i| i.call_describe(&mut store));
        out.map_err(|e| self.classify(e, &store, limits))
    }

    /// `compute(input)` of a KPI plugin, in a fresh instance.
    pub fn compute(
        &self,
        p: &Prepared,
        input: &Input,
        limits: &PluginLimits,
    ) -> CallReport<Vec<KpiValue>> {
        self.call(
            limits,
            input,
            |store| match p {
                Prepared::Kpi(pre) => Some(
                    pre.instantiate(&mut *store)
                        .and_then(|i| i.call_compute(&mut *store, input)),
                ),
                Prepared::Report(_) => None,
            },
            |values| {
                values
                    .iter()
                    .map(|v| v.name.len() + v.battery.as_ref().map_or(0, String::len) + 16)
                    .sum()
            },
        )
    }

    /// `render(input)` of a report plugin, in a fresh instance.
    pub fn render(
        &self,
        p: &Prepared,
        input: &Input,
        limits: &PluginLimits,
    ) -> CallReport<Document> {
        self.call(
            limits,
            input,
            |store| match p {
                Prepared::Report(pre) => Some(
                    pre.instantiate(&mut *store)
                        .and_then(|i| i.call_render(&mut *store, input)),
                ),
                Prepared::Kpi(_) => None,
            },
            |doc| {
                let table: usize = doc.table.as_ref().map_or(0, |t| {
                    t.rows
                        .iter()
                        .flatten()
                        .chain(&t.columns)
                        .map(|c| c.len() + 8)
                        .sum()
                });
                doc.bytes.len() + table
            },
        )
    }

    /// One call in a fresh store: the input and output caps around
    /// `invoke` (which gives `None` for a plugin of the other world).
    fn call<T>(
        &self,
        limits: &PluginLimits,
        input: &Input,
        invoke: impl FnOnce(&mut Store<CallState>) -> Option<wasmtime::Result<Result<T, String>>>,
        output_size: impl FnOnce(&T) -> usize,
    ) -> CallReport<T> {
        let started = Instant::now();
        let mut store = self.store(limits);
        let size = input_size(input);
        if size > limits.max_input_bytes {
            let err = RunError::InputTooLarge {
                size,
                limit: limits.max_input_bytes,
            };
            return self.finish(store, started, limits, Err(err));
        }
        let result = match invoke(&mut store) {
            None => Err(RunError::Load(
                "the plugin implements the other world".into(),
            )),
            Some(Err(e)) => Err(self.classify(e, &store, limits)),
            Some(Ok(Err(message))) => Err(RunError::Plugin(message.chars().take(2_000).collect())),
            Some(Ok(Ok(out))) => {
                let size = output_size(&out);
                if size > limits.max_output_bytes {
                    Err(RunError::OutputTooLarge {
                        size,
                        limit: limits.max_output_bytes,
                    })
                } else {
                    Ok(out)
                }
            }
        };
        self.finish(store, started, limits, result)
    }
}

/// Bytes an input occupies once copied into the guest (approximately).
pub fn input_size(input: &Input) -> usize {
    let batteries: usize = input
        .batteries
        .iter()
        .map(|b| b.id.len() + b.serial.len() + b.chemistry.len() + 40)
        .sum();
    let series: usize = input.series.iter().map(|s| s.ts.len() * 8 * 7 + 64).sum();
    batteries + series + input.scope.len()
}

/// A core module starts with `\0asm` version 1; a component with layer 1.
fn wasmparser_is_core_module(bytes: &[u8]) -> bool {
    bytes.len() >= 8 && bytes[0..4] == *b"\0asm" && bytes[4..8] == [1, 0, 0, 0]
}
