//! Where a rule runs: the wasmtime host.
//!
//! [`Sandbox`] owns the wasmtime engine, the linker that defines what a rule
//! may import, and the limits every evaluation runs under. It turns a
//! component file into a [`RuleComponent`] after checking that it targets
//! the `dac:rule` world.
//!
//! What is linked, exactly:
//!
//! - `dac:rule/types` (reading the event under evaluation) and
//!   `dac:rule/host` (rate-limited logging): the rule's whole contract.
//! - The *inert* part of WASI 0.2 ([`GRANTED_WASI`]), with an empty
//!   context: `wasi:cli` (no arguments, no environment variables, stdin
//!   closed, stdout and stderr discarded, no terminal), `wasi:clocks` (both
//!   frozen at zero: the Unix epoch and monotonic instant 0), `wasi:random`
//!   (a fixed byte sequence, the same for every instance) and `wasi:io`
//!   (the streams and pollables those hand out). Language runtimes —
//!   CPython in componentize-py, StarlingMonkey in componentize-js — call
//!   these while they start and cannot run without them; none of them
//!   reveals anything about the host or lets a rule act on it.
//! - Every other import — `wasi:filesystem`, `wasi:sockets`, `wasi:http`,
//!   any other package or WASI version — is linked to a function that
//!   traps when called, naming the capability. A rule therefore has no
//!   filesystem, network, real clock, entropy or environment: trying to use
//!   a file or a socket ends the evaluation with a fault.
//!
//! The WASI context is created the first time a rule calls WASI, so rules
//! that never do (Rust and C rules) pay nothing for it.

use crate::cache::ComponentCache;
use crate::limits::{Isolation, Limits};
use crate::rule::{RuleComponent, RuleLog};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use wasmtime::component::types::ComponentItem;
use wasmtime::component::{Component, HasData, HasSelf, Linker, LinkerInstance, Resource, ResourceTable, ResourceType};
use wasmtime::{Config, Engine, ResourceLimiter};
use wasmtime_wasi::cli::{WasiCli, WasiCliView};
use wasmtime_wasi::clocks::{WasiClocks, WasiClocksView};
use wasmtime_wasi::p2::bindings as wasi;
use wasmtime_wasi::random::WasiRandom;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

pub(crate) mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "rule",
        with: { "dac:rule/types.event": super::EventHandle },
    });
}

pub(crate) use bindings::dac::rule::types as wit;

/// The WIT interfaces this host implements, by their full import names.
pub const PROVIDED_INTERFACES: [&str; 2] = ["dac:rule/types@0.1.0", "dac:rule/host@0.1.0"];
/// The world a rule component must target.
pub const WORLD: &str = "dac:rule/rule@0.1.0";
/// The WASI 0.2 interfaces linked for every rule, with an empty context
/// (see the module documentation). Any other WASI interface traps.
pub const GRANTED_WASI: [&str; 18] = [
    "wasi:cli/environment",
    "wasi:cli/exit",
    "wasi:cli/stdin",
    "wasi:cli/stdout",
    "wasi:cli/stderr",
    "wasi:cli/terminal-input",
    "wasi:cli/terminal-output",
    "wasi:cli/terminal-stdin",
    "wasi:cli/terminal-stdout",
    "wasi:cli/terminal-stderr",
    "wasi:clocks/wall-clock",
    "wasi:clocks/monotonic-clock",
    "wasi:random/random",
    "wasi:random/insecure",
    "wasi:random/insecure-seed",
    "wasi:io/error",
    "wasi:io/poll",
    "wasi:io/streams",
];

/// Whether `import` (`wasi:cli/stdout@0.2.3`) is one of [`GRANTED_WASI`]:
/// any 0.2 version, which the linker resolves to the one wasmtime-wasi
/// implements.
fn is_granted_wasi(import: &str) -> bool {
    import
        .split_once('@')
        .is_some_and(|(interface, version)| version.starts_with("0.2.") && GRANTED_WASI.contains(&interface))
}

/// The host side of the `event` resource. The event itself lives in
/// [`HostState`]: a store evaluates one event at a time, so a handle needs
/// no table entry.
pub struct EventHandle;

/// Why a file could not become a rule.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{file}: {source}")]
    Read {
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}: not a WebAssembly file (no \\0asm header)")]
    NotWasm { file: PathBuf },
    #[error(
        "{file}: a core WebAssembly module, not a component; build rules with `cargo build --target wasm32-wasip2` (or wrap the module with `wasm-tools component new`)"
    )]
    CoreModule { file: PathBuf },
    #[error("{file}: invalid component: {reason}")]
    Invalid { file: PathBuf, reason: String },
    #[error("{file}: not a dac rule: {reason} (a rule must target the {WORLD} world in wit/rule.wit)")]
    WrongWorld { file: PathBuf, reason: String },
    #[error("{file}: invalid metadata: {reason}")]
    Metadata { file: PathBuf, reason: String },
    #[error("{file}: {reason}")]
    Instantiate { file: PathBuf, reason: String },
    /// A YAML or Sigma rule that does not parse; the message says
    /// `FILE:LINE: WHERE: WHAT`.
    #[error("{source}")]
    Rule {
        file: PathBuf,
        #[source]
        source: dac_detect::DetectError,
    },
}

impl LoadError {
    /// The file that did not load.
    pub fn file(&self) -> &Path {
        match self {
            LoadError::Read { file, .. }
            | LoadError::NotWasm { file }
            | LoadError::CoreModule { file }
            | LoadError::Invalid { file, .. }
            | LoadError::WrongWorld { file, .. }
            | LoadError::Metadata { file, .. }
            | LoadError::Instantiate { file, .. }
            | LoadError::Rule { file, .. } => file,
        }
    }
}

/// The wasmtime host that compiles and runs rule components.
pub struct Sandbox {
    engine: Engine,
    limits: Arc<Limits>,
    cache: ComponentCache,
    /// Shared by the sandboxes of [`Sandbox::with_limits`]: the clock runs
    /// while any of them does.
    _ticker: Option<Arc<EpochTicker>>,
}

impl Sandbox {
    pub fn new(limits: Limits, cache: ComponentCache) -> anyhow::Result<Sandbox> {
        let mut config = Config::new();
        config.wasm_component_model(true);
        config.epoch_interruption(limits.deadline.is_some());
        config.consume_fuel(limits.fuel.is_some());
        config.max_wasm_stack(limits.wasm_stack_bytes);
        // Rules ship stripped, so a backtrace would be frame numbers only,
        // and collecting one makes every fault slower.
        config.wasm_backtrace_max_frames(None);
        if limits.isolation == Isolation::FreshInstancePerEvent {
            // Instantiating per event is only affordable from pre-reserved
            // slots whose memory stays mapped between uses.
            let mut pool = wasmtime::PoolingAllocationConfig::default();
            pool.total_component_instances(1024)
                .total_core_instances(4096)
                .total_memories(2048)
                .total_tables(2048)
                .max_memory_size(limits.memory_bytes)
                .linear_memory_keep_resident(1 << 20)
                .table_keep_resident(64 << 10);
            config.allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(pool));
        }
        let engine = Engine::new(&config).map_err(|err| anyhow::anyhow!("configuring wasmtime: {err}"))?;
        let ticker = limits.deadline.map(|_| Arc::new(EpochTicker::start(engine.clone())));
        Ok(Sandbox { engine, limits: Arc::new(limits), cache, _ticker: ticker })
    }

    /// A sandbox with other limits on this one's wasmtime engine and
    /// deadline clock, when `limits` need no other engine configuration
    /// (the same limit kinds, stack and isolation; deadlines, fuel budgets,
    /// memory caps and output limits may differ, as they are set per
    /// store). Rules of the two still run in stores of their own; what is
    /// shared is compiled code and one clock thread instead of one each.
    pub fn with_limits(&self, limits: Limits) -> Option<Sandbox> {
        let mine = &self.limits;
        let compatible = limits.deadline.is_some() == mine.deadline.is_some()
            && limits.fuel.is_some() == mine.fuel.is_some()
            && limits.wasm_stack_bytes == mine.wasm_stack_bytes
            && limits.isolation == mine.isolation
            // The pool reserves each slot's memory at this size.
            && (limits.isolation == Isolation::ReusedInstance || limits.memory_bytes == mine.memory_bytes);
        compatible.then(|| Sandbox {
            engine: self.engine.clone(),
            limits: Arc::new(limits),
            cache: self.cache.clone(),
            _ticker: self._ticker.clone(),
        })
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Loads, checks and compiles (or fetches from the cache) one component.
    pub fn load_file(&self, file: &Path) -> Result<RuleComponent, LoadError> {
        let bytes = std::fs::read(file).map_err(|source| LoadError::Read { file: file.to_owned(), source })?;
        self.load_bytes(file, &bytes)
    }

    /// As [`Sandbox::load_file`], for bytes already in memory; `file` names
    /// them in errors and alerts.
    pub fn load_bytes(&self, file: &Path, bytes: &[u8]) -> Result<RuleComponent, LoadError> {
        let file = file.to_owned();
        match bytes.get(..8) {
            Some([0, b'a', b's', b'm', 0x0d, 0x00, 0x01, 0x00]) => {}
            Some([0, b'a', b's', b'm', _, 0x00, 0x00, 0x00]) => return Err(LoadError::CoreModule { file }),
            _ => return Err(LoadError::NotWasm { file }),
        }
        let sha256 = hex(&Sha256::digest(bytes));
        let component = self
            .cache
            .load(&self.engine, bytes, &sha256)
            .map_err(|err| LoadError::Invalid { file: file.clone(), reason: format!("{err:#}") })?;
        self.check_world(&file, &component)?;

        let mut linker = Linker::new(&self.engine);
        add_host_interfaces(&mut linker)
            .and_then(|()| add_granted_wasi(&mut linker))
            .and_then(|()| deny_other_imports(&mut linker, &self.engine, &component))
            .map_err(|err| LoadError::Invalid { file: file.clone(), reason: format!("{err:#}") })?;
        let instance_pre = linker
            .instantiate_pre(&component)
            .map_err(|err| LoadError::WrongWorld { file: file.clone(), reason: format!("{err:#}") })?;
        let pre = bindings::RulePre::new(instance_pre)
            .map_err(|err| LoadError::WrongWorld { file: file.clone(), reason: format!("{err:#}") })?;
        let mut rule = RuleComponent::new(file, sha256, component, pre, self.engine.clone(), self.limits.clone())?;
        if let Some(carried) = built_rule_metadata(bytes, &rule.info().uuid) {
            rule.adopt_carried(carried.authors, carried.dedup);
        }
        Ok(rule)
    }

    /// Explains a mismatch in words before wasmtime's type checker would.
    fn check_world(&self, file: &Path, component: &Component) -> Result<(), LoadError> {
        let ty = component.component_type();
        for (name, _) in ty.imports(&self.engine) {
            if name.starts_with("dac:") && !PROVIDED_INTERFACES.contains(&name) {
                return Err(LoadError::WrongWorld {
                    file: file.to_owned(),
                    reason: format!(
                        "it imports `{name}`, but this host provides {}",
                        PROVIDED_INTERFACES.join(" and ")
                    ),
                });
            }
        }
        let exports: Vec<&str> = ty.exports(&self.engine).map(|(name, _)| name).collect();
        let missing: Vec<&str> =
            ["metadata", "evaluate"].into_iter().filter(|wanted| !exports.contains(wanted)).collect();
        if !missing.is_empty() {
            let found = if exports.is_empty() {
                "nothing".to_owned()
            } else {
                exports.iter().map(|e| format!("`{e}`")).collect::<Vec<_>>().join(", ")
            };
            return Err(LoadError::WrongWorld {
                file: file.to_owned(),
                reason: format!(
                    "it does not export {} (it exports {found})",
                    missing.iter().map(|m| format!("`{m}`")).collect::<Vec<_>>().join(" and ")
                ),
            });
        }
        Ok(())
    }
}

/// The metadata of the rule a `dac build` component carries, when it is
/// the rule the component reported (same uuid). The WIT metadata has no
/// field for its authors — the Detection Rule License asks that Sigma
/// rules' authors are credited in their alerts, as they are for the rule
/// file — nor for its dedup declaration.
fn built_rule_metadata(component: &[u8], uuid: &str) -> Option<dac_detect::Metadata> {
    let matcher = dac_matcher::Matcher::from_slot(dac_matcher::slot::read(component)?).ok()?;
    let m = matcher.rule().metadata();
    (m.uuid == uuid).then(|| m.clone())
}

fn add_host_interfaces(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    bindings::Rule::add_to_linker::<HostState, HasSelf<HostState>>(linker, |state| state)?;
    // The world's `use types.{event}` also imports the resource at the top
    // level, where it must be the very type the interface defines.
    linker.root().resource(TOP_LEVEL_EVENT, ResourceType::host::<EventHandle>(), |_, _| Ok(()))
}

/// Links [`GRANTED_WASI`], served from [`HostState::wasi`].
fn add_granted_wasi(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    let l = linker;
    wasi::sync::io::error::add_to_linker::<HostState, WasiTable>(l, |state| state.wasi_state().1)?;
    wasi::sync::io::poll::add_to_linker::<HostState, WasiTable>(l, |state| state.wasi_state().1)?;
    wasi::sync::io::streams::add_to_linker::<HostState, WasiTable>(l, |state| state.wasi_state().1)?;
    wasi::clocks::wall_clock::add_to_linker::<HostState, WasiClocks>(l, HostState::clocks)?;
    wasi::clocks::monotonic_clock::add_to_linker::<HostState, WasiClocks>(l, HostState::clocks)?;
    wasi::random::random::add_to_linker::<HostState, WasiRandom>(l, |state| state.wasi_state().0.random())?;
    wasi::random::insecure::add_to_linker::<HostState, WasiRandom>(l, |state| state.wasi_state().0.random())?;
    wasi::random::insecure_seed::add_to_linker::<HostState, WasiRandom>(l, |state| state.wasi_state().0.random())?;
    wasi::cli::exit::add_to_linker::<HostState, WasiCli>(l, HostState::cli)?;
    wasi::cli::environment::add_to_linker::<HostState, WasiCli>(l, HostState::cli)?;
    wasi::cli::stdin::add_to_linker::<HostState, WasiCli>(l, HostState::cli)?;
    wasi::cli::stdout::add_to_linker::<HostState, WasiCli>(l, HostState::cli)?;
    wasi::cli::stderr::add_to_linker::<HostState, WasiCli>(l, HostState::cli)?;
    wasi::cli::terminal_input::add_to_linker::<HostState, WasiCli>(l, HostState::cli)?;
    wasi::cli::terminal_output::add_to_linker::<HostState, WasiCli>(l, HostState::cli)?;
    wasi::cli::terminal_stdin::add_to_linker::<HostState, WasiCli>(l, HostState::cli)?;
    wasi::cli::terminal_stdout::add_to_linker::<HostState, WasiCli>(l, HostState::cli)?;
    wasi::cli::terminal_stderr::add_to_linker::<HostState, WasiCli>(l, HostState::cli)?;
    Ok(())
}

/// `wasi:io` is served straight from the resource table.
struct WasiTable;

impl HasData for WasiTable {
    type Data<'a> = &'a mut ResourceTable;
}

/// The empty WASI context: nothing from the host (see the module
/// documentation). Deterministic, so a rule behaves the same everywhere.
fn empty_wasi_context() -> WasiCtx {
    struct Frozen;
    impl wasmtime_wasi::HostWallClock for Frozen {
        fn resolution(&self) -> std::time::Duration {
            std::time::Duration::from_secs(1)
        }
        fn now(&self) -> std::time::Duration {
            std::time::Duration::ZERO
        }
    }
    impl wasmtime_wasi::HostMonotonicClock for Frozen {
        fn resolution(&self) -> u64 {
            1_000_000_000
        }
        fn now(&self) -> u64 {
            0
        }
    }
    let bytes: Vec<u8> = (0..=255u8).map(|b| b.wrapping_mul(167).wrapping_add(13)).collect();
    let mut builder = WasiCtx::builder();
    builder
        .wall_clock(Frozen)
        .monotonic_clock(Frozen)
        .secure_random(wasmtime_wasi::Deterministic::new(bytes.clone()))
        .insecure_random(wasmtime_wasi::Deterministic::new(bytes))
        .insecure_random_seed(0)
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false);
    builder.build()
}

/// The world-level name of the `event` resource (see [`add_host_interfaces`]).
const TOP_LEVEL_EVENT: &str = "event";

/// A resource type no rule can ever obtain a value of.
struct Denied;

/// Links every import outside [`PROVIDED_INTERFACES`] to a function that
/// traps, naming the capability the rule tried to use.
fn deny_other_imports(linker: &mut Linker<HostState>, engine: &Engine, component: &Component) -> wasmtime::Result<()> {
    for (name, item) in component.component_type().imports(engine) {
        if PROVIDED_INTERFACES.contains(&name) || name == TOP_LEVEL_EVENT || is_granted_wasi(name) {
            continue;
        }
        match item.ty {
            ComponentItem::ComponentInstance(instance) => {
                let mut scope = linker.instance(name)?;
                for (export, item) in instance.exports(engine) {
                    deny(&mut scope, &format!("{name}#{export}"), export, &item.ty)?;
                }
            }
            ty => deny(&mut linker.root(), name, name, &ty)?,
        }
    }
    Ok(())
}

fn deny(
    scope: &mut LinkerInstance<'_, HostState>,
    full_name: &str,
    name: &str,
    item: &ComponentItem,
) -> wasmtime::Result<()> {
    match item {
        ComponentItem::ComponentFunc(_) => {
            let full_name = full_name.to_owned();
            scope.func_new(name, move |_, _, _, _| {
                wasmtime::bail!("the rule called `{full_name}`, a capability dac does not grant to rules")
            })
        }
        // A denied interface may name the granted `wasi:io` resources
        // (`wasi:filesystem/types` uses `input-stream`): those stay the
        // real types, which the denied functions can never hand out.
        ComponentItem::Resource(_) => {
            use wasmtime_wasi::p2::{DynInputStream, DynOutputStream, DynPollable, IoError};
            let ty = match name {
                "input-stream" => ResourceType::host::<DynInputStream>(),
                "output-stream" => ResourceType::host::<DynOutputStream>(),
                "pollable" => ResourceType::host::<DynPollable>(),
                "error" => ResourceType::host::<IoError>(),
                _ => ResourceType::host::<Denied>(),
            };
            scope.resource(name, ty, |_, _| Ok(()))
        }
        // Types and nested components need no definition, or cannot be denied.
        _ => Ok(()),
    }
}

/// Per-store state: what host functions can see.
pub struct HostState {
    /// The event under evaluation, moved in for the duration of one call.
    pub(crate) event: dac_event::Event,
    pub(crate) memory: MemoryCap,
    pub(crate) log: Arc<RuleLog>,
    /// The latest error-level log line of the current call (the SDK's
    /// "rule panicked: …"), attached to the trap that usually follows it.
    pub(crate) last_error_log: Option<String>,
    /// The empty WASI context and its resources, created on first use.
    pub(crate) wasi: Option<Box<(WasiCtx, ResourceTable)>>,
}

impl HostState {
    fn wasi_state(&mut self) -> (&mut WasiCtx, &mut ResourceTable) {
        let state = self.wasi.get_or_insert_with(|| Box::new((empty_wasi_context(), ResourceTable::new())));
        (&mut state.0, &mut state.1)
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        let (ctx, table) = self.wasi_state();
        WasiCtxView { ctx, table }
    }
}

impl wit::Host for HostState {}

impl wit::HostEvent for HostState {
    fn get(&mut self, _event: Resource<EventHandle>, path: String) -> Option<wit::Value> {
        self.event.get(&path).map(to_wit)
    }

    fn get_segments(&mut self, _event: Resource<EventHandle>, segments: Vec<String>) -> Option<wit::Value> {
        self.event.get_segments(&segments).map(to_wit)
    }

    fn keys(&mut self, _event: Resource<EventHandle>, path: String) -> Option<Vec<String>> {
        self.event.keys(&path).map(|keys| keys.into_iter().map(str::to_owned).collect())
    }

    fn drop(&mut self, _event: Resource<EventHandle>) -> wasmtime::Result<()> {
        // Rules only ever receive borrows; the event is owned by the host.
        Ok(())
    }
}

impl bindings::dac::rule::host::Host for HostState {
    fn log(&mut self, level: bindings::dac::rule::host::Level, message: String) {
        if let Some(error) = self.log.emit(level, message) {
            self.last_error_log = Some(error);
        }
    }
}

fn to_wit(value: dac_event::Value<'_>) -> wit::Value {
    use dac_event::Value as V;
    let size = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
    match value {
        V::Null => wit::Value::Null,
        V::Boolean(b) => wit::Value::Boolean(b),
        V::Integer(i) => wit::Value::Integer(i),
        V::Float(f) => wit::Value::Float(f),
        V::Text(s) => wit::Value::Text(s.to_owned()),
        V::DateTime(ms) => wit::Value::Datetime(ms),
        V::ObjectId(hex) => wit::Value::ObjectId(hex.to_owned()),
        V::Binary(bytes) => wit::Value::Binary(bytes),
        V::Array(n) => wit::Value::Array(size(n)),
        V::Document(n) => wit::Value::Document(size(n)),
        V::Other(json) => wit::Value::Other(json),
    }
}

/// Caps linear memory and remembers a refusal, so the fault can say that
/// the memory limit — not some other trap — ended the evaluation.
pub(crate) struct MemoryCap {
    pub(crate) limit: usize,
    pub(crate) refused: Option<usize>,
}

impl ResourceLimiter for MemoryCap {
    fn memory_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired > self.limit {
            self.refused = Some(desired);
            wasmtime::bail!("memory limit of {} bytes exceeded (wanted {desired})", self.limit);
        }
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        // Rules need a handful of table slots for indirect calls; a million
        // is far beyond any honest use and bounds host memory at 8 MB.
        Ok(desired <= 1_000_000)
    }
}

/// Advances the engine's epoch so deadlines can fire.
struct EpochTicker {
    stop: Arc<AtomicBool>,
}

impl EpochTicker {
    fn start(engine: Engine) -> EpochTicker {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        std::thread::Builder::new()
            .name("dac-epoch".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(Limits::EPOCH_TICK);
                    engine.increment_epoch();
                }
            })
            .expect("spawning the epoch thread");
        EpochTicker { stop }
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut out, b| {
        let _ = write!(out, "{b:02x}");
        out
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The capability decision, pinned: the inert WASI 0.2 interfaces are
    /// linked, files, sockets, HTTP and other WASI versions are not.
    #[test]
    fn only_inert_wasi_0_2_interfaces_are_granted() {
        for granted in ["wasi:cli/environment@0.2.0", "wasi:cli/stdout@0.2.6", "wasi:clocks/wall-clock@0.2.3"] {
            assert!(is_granted_wasi(granted), "{granted}");
        }
        for denied in [
            "wasi:filesystem/preopens@0.2.3",
            "wasi:filesystem/types@0.2.3",
            "wasi:sockets/tcp@0.2.3",
            "wasi:sockets/ip-name-lookup@0.2.3",
            "wasi:http/outgoing-handler@0.2.3",
            "wasi:cli/environment@0.3.0",
            "wasi:cli/environment",
            "dac:rule/other@0.1.0",
        ] {
            assert!(!is_granted_wasi(denied), "{denied}");
        }
    }
}
