//! Where a rule runs: the wasmtime host.
//!
//! [`Sandbox`] owns the wasmtime engine, the linker that defines what a rule
//! may import, and the limits every evaluation runs under. It turns a
//! component file into a [`RuleComponent`](crate::RuleComponent) after checking that it targets
//! the `dac:rule` world.
//!
//! What is linked, exactly:
//!
//! - `dac:rule/types` (reading the event under evaluation) and
//!   `dac:rule/host` (rate-limited logging): the rule's whole contract.
//! - The *inert* part of WASI 0.2 ([`GRANTED_WASI`](crate::GRANTED_WASI)),
//!   implemented by dac itself (`wasi.rs`, bindings from the WASI 0.2.12
//!   WIT in `engine/wit-wasi/`): `wasi:cli` (no arguments, no environment
//!   variables, stdin closed, stdout and stderr discarded, no terminal;
//!   `exit` traps), `wasi:clocks` (both frozen at zero: the Unix epoch and
//!   monotonic instant 0; waiting on them returns at once), `wasi:random`
//!   (a fixed byte sequence, the same for every instance) and `wasi:io`
//!   (the streams and pollables those hand out, every pollable ready; at
//!   most 1024 of them live per instance). Language runtimes — CPython in
//!   componentize-py, StarlingMonkey in componentize-js — call these while
//!   they start and cannot run without them; none of them reveals anything
//!   about the host or lets a rule act on it, or blocks the host thread.
//! - Every other import — `wasi:filesystem`, `wasi:sockets`, `wasi:http`,
//!   any other package or WASI version — is linked to a function that
//!   traps when called, naming the capability. A rule therefore has no
//!   filesystem, network, real clock, entropy or environment: trying to use
//!   a file or a socket ends the evaluation with a fault.
//!
//! The WASI state (its resource table and random generators) is created the
//! first time a rule calls WASI, so rules that never do (Rust and C rules)
//! pay nothing for it.

use crate::cache::{CompileRequest, ComponentCache};
use crate::compiler::{Cancel, CompileError, EngineSettings};
use crate::component::Pre;
use crate::component::{Loaded, RuleComponent};
use crate::error::LoadError;
use crate::host::{self, HostState, LogGroup, World, PROVIDED_INTERFACES};
use crate::limits::{Isolation, Limits};
use crate::rule::RuleId;
use crate::shape::Shape;
use crate::wasi;
use sha2::{Digest, Sha256};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use wasmtime::component::types::ComponentItem;
use wasmtime::component::{Component, Linker, LinkerInstance, ResourceType};
use wasmtime::Engine;

/// The wasmtime host that compiles and runs rule components.
pub struct Sandbox {
    engine: Engine,
    /// How `engine` is configured, for a compiler in a child process.
    settings: EngineSettings,
    limits: Arc<Limits>,
    cache: ComponentCache,
    /// The log rate limit and name its rules share, if any.
    log_group: Option<Arc<LogGroup>>,
    /// Shared by the sandboxes of [`Sandbox::with_limits`]: the clock runs
    /// while any of them does.
    _ticker: Option<Arc<EpochTicker>>,
}

impl Sandbox {
    pub fn new(limits: Limits, cache: ComponentCache) -> anyhow::Result<Sandbox> {
        Sandbox::with_compile_threads(limits, cache, true)
    }

    /// As [`Sandbox::new`]; `parallel: false` compiles each component on
    /// the calling thread alone, instead of on every core: a server that
    /// compiles uploads at a low priority (`dac serve`) keeps the other
    /// cores for its streams.
    pub fn with_compile_threads(limits: Limits, cache: ComponentCache, parallel: bool) -> anyhow::Result<Sandbox> {
        let settings = EngineSettings::of(&limits, parallel);
        let config = settings.config();
        let engine = Engine::new(&config).map_err(|err| anyhow::anyhow!("configuring wasmtime: {err}"))?;
        let ticker = match limits.deadline {
            Some(_) => Some(Arc::new(
                EpochTicker::start(engine.clone())
                    .map_err(|err| anyhow::anyhow!("starting the deadline clock thread: {err}"))?,
            )),
            None => None,
        };
        Ok(Sandbox { engine, settings, limits: Arc::new(limits), cache, log_group: None, _ticker: ticker })
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
            settings: self.settings,
            limits: Arc::new(limits),
            cache: self.cache.clone(),
            log_group: self.log_group.clone(),
            _ticker: self._ticker.clone(),
        })
    }

    /// The same sandbox whose rules share `group`'s log rate limit (on top
    /// of each rule's own) and are named by it in their log lines.
    pub fn with_log_group(mut self, group: Arc<LogGroup>) -> Sandbox {
        self.log_group = Some(group);
        self
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Removes `bytes`' compiled code from the cache on disk: for a rule
    /// refused after it was compiled, so a refusal leaves nothing behind.
    pub fn forget(&self, bytes: &[u8]) {
        self.cache.forget(&self.engine, &hex::encode(Sha256::digest(bytes)));
    }

    /// Loads, checks and compiles (or fetches from the cache) one component.
    /// The rule's identity is its path ([`RuleId::of_file`]).
    pub fn load_file(&self, file: &Path) -> Result<RuleComponent, LoadError> {
        let bytes = std::fs::read(file).map_err(|source| LoadError::Read { file: file.to_owned(), source })?;
        self.load_bytes(RuleId::of_file(file), file, &bytes)
    }

    /// As [`Sandbox::load_file`], for bytes already in memory, as rule `id`;
    /// `file` names them in errors and messages.
    pub fn load_bytes(&self, id: RuleId, file: &Path, bytes: &[u8]) -> Result<RuleComponent, LoadError> {
        self.load_bytes_cancellable(id, file, bytes, &Cancel::never())
    }

    /// As [`Sandbox::load_bytes`]; a compilation in a child process
    /// ([`crate::Compiler::Child`]) stops when `cancel` is cancelled, and
    /// the load fails with [`LoadError::Cancelled`].
    pub fn load_bytes_cancellable(
        &self,
        id: RuleId,
        file: &Path,
        bytes: &[u8],
        cancel: &Cancel,
    ) -> Result<RuleComponent, LoadError> {
        let file = file.to_owned();
        match bytes.get(..8) {
            Some([0, b'a', b's', b'm', 0x0d, 0x00, 0x01, 0x00]) => {}
            Some([0, b'a', b's', b'm', _, 0x00, 0x00, 0x00]) => return Err(LoadError::CoreModule { file }),
            _ => return Err(LoadError::NotWasm { file }),
        }
        // Measured and checked before anything is compiled (or taken from
        // the cache, so a rule is refused the same way every time).
        if let Some(shape) = Shape::measure(bytes) {
            shape.check(&self.limits.compile).map_err(|reason| LoadError::TooComplex { file: file.clone(), reason })?;
        }
        let sha256 = hex::encode(Sha256::digest(bytes));
        let request =
            CompileRequest { engine: &self.engine, settings: &self.settings, limits: &self.limits.compile, cancel };
        let component = self.cache.load(&request, bytes, &sha256).map_err(|err| match err {
            CompileError::Invalid(reason) => LoadError::Invalid { file: file.clone(), reason },
            CompileError::Internal(reason) => LoadError::Compiler { file: file.clone(), reason },
            CompileError::OverBudget(reason) => LoadError::TooComplex { file: file.clone(), reason },
            CompileError::Cancelled => LoadError::Cancelled { file: file.clone() },
        })?;
        let world = self.check_world(&file, &component)?;

        let mut linker = Linker::new(&self.engine);
        host::add_to_linker(&mut linker, world)
            .and_then(|()| wasi::add_to_linker(&mut linker))
            .and_then(|()| deny_other_imports(&mut linker, &self.engine, &component, world))
            .map_err(|err| LoadError::Invalid { file: file.clone(), reason: format!("{err:#}") })?;
        let wrong_world =
            |err: wasmtime::Error| LoadError::WrongWorld { file: file.clone(), reason: format!("{err:#}") };
        let instance_pre = linker.instantiate_pre(&component).map_err(wrong_world)?;
        let pre = match world {
            World::V0_1 => host::v0_1::RulePre::new(instance_pre).map(Pre::V0_1),
            World::V0_2 => host::v0_2::RulePre::new(instance_pre).map(Pre::V0_2),
        }
        .map_err(wrong_world)?;
        let uses_state =
            component.component_type().imports(&self.engine).any(|(name, _)| name == host::STATE_INTERFACE);
        let mut rule = RuleComponent::new(Loaded {
            id,
            file,
            sha256,
            code: component,
            pre,
            engine: self.engine.clone(),
            limits: self.limits.clone(),
            log_group: self.log_group.clone(),
            uses_state,
        })?;
        if let Some(carried) = built_rule_metadata(bytes, &rule.info().uuid) {
            rule.adopt_carried(carried.authors, carried.dedup);
        }
        Ok(rule)
    }

    /// The world the component targets (by the `dac:rule` interfaces it
    /// imports); explains a mismatch in words before wasmtime's type
    /// checker would.
    fn check_world(&self, file: &Path, component: &Component) -> Result<World, LoadError> {
        let ty = component.component_type();
        let mut world = None;
        for (name, _) in ty.imports(&self.engine) {
            if !name.starts_with("dac:") {
                continue;
            }
            let Some(this) = World::of_import(name) else {
                return Err(LoadError::WrongWorld {
                    file: file.to_owned(),
                    reason: format!("it imports `{name}`, but this host provides {}", PROVIDED_INTERFACES.join(", ")),
                });
            };
            if world.is_some_and(|world| world != this) {
                return Err(LoadError::WrongWorld {
                    file: file.to_owned(),
                    reason: format!("it imports `{name}` beside another version of the dac interfaces"),
                });
            }
            world = Some(this);
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
        // A component that imports none of our interfaces cannot name our
        // types in its exports; wasmtime's check below says what is wrong.
        Ok(world.unwrap_or(World::V0_2))
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

/// A resource type no rule can ever obtain a value of.
struct Denied;

/// Links every import outside [`PROVIDED_INTERFACES`] to a function that
/// traps, naming the capability the rule tried to use.
fn deny_other_imports(
    linker: &mut Linker<HostState>,
    engine: &Engine,
    component: &Component,
    world: World,
) -> wasmtime::Result<()> {
    for (name, item) in component.component_type().imports(engine) {
        let linked = World::of_import(name) == Some(world) || name == world.top_level_resource();
        if linked || wasi::is_granted(name) {
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
            let ty = wasi::io_resource_type(name).unwrap_or_else(ResourceType::host::<Denied>);
            scope.resource(name, ty, |_, _| Ok(()))
        }
        // Types and nested components need no definition, or cannot be denied.
        _ => Ok(()),
    }
}

/// Advances the engine's epoch so deadlines can fire.
struct EpochTicker {
    stop: Arc<AtomicBool>,
}

impl EpochTicker {
    fn start(engine: Engine) -> std::io::Result<EpochTicker> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        std::thread::Builder::new().name("dac-epoch".into()).spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                std::thread::sleep(Limits::EPOCH_TICK);
                engine.increment_epoch();
            }
        })?;
        Ok(EpochTicker { stop })
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The capability decision, pinned: the inert WASI 0.2 interfaces are
    /// linked, files, sockets, HTTP and other WASI versions are not.
    #[test]
    fn only_inert_wasi_0_2_interfaces_are_granted() {
        for granted in ["wasi:cli/environment@0.2.0", "wasi:cli/stdout@0.2.6", "wasi:clocks/wall-clock@0.2.3"] {
            assert!(wasi::is_granted(granted), "{granted}");
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
            assert!(!wasi::is_granted(denied), "{denied}");
        }
    }
}
