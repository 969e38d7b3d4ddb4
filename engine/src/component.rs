//! One loaded rule component: its instance, the budget of each call, and
//! how a call's failure becomes a typed [`Fault`].

use crate::error::LoadError;
use crate::host::{bindings, wit, EventHandle, HostState, LogGroup, RuleLog};
use crate::limits::{Isolation, Limits};
use crate::rule::Fault;
use crate::rule::{Finding, MatchedField, Prefilter, RuleId, RuleInfo, RuleKind, Severity};
use std::path::PathBuf;
use std::sync::Arc;
use wasmtime::component::Resource;
use wasmtime::{Engine, Store, Trap};

struct Live {
    store: Store<HostState>,
    rule: bindings::Rule,
}

/// A rule component ready to evaluate events.
pub struct RuleComponent {
    info: Arc<RuleInfo>,
    /// Held so that [`crate::ComponentCache`] shares the code with every
    /// other rule loaded from the same bytes while this one lives.
    _component: Arc<wasmtime::component::Component>,
    pre: bindings::RulePre<HostState>,
    engine: Engine,
    limits: Arc<Limits>,
    log: Arc<RuleLog>,
    live: Option<Live>,
    instantiations: u64,
    /// Fuel the last evaluation burnt (0 without a fuel budget).
    last_fuel_consumed: u64,
}

/// What [`RuleComponent::new`] needs besides the compiled code.
pub(crate) struct Loaded {
    pub(crate) id: RuleId,
    pub(crate) file: PathBuf,
    pub(crate) sha256: String,
    pub(crate) code: Arc<wasmtime::component::Component>,
    pub(crate) pre: bindings::RulePre<HostState>,
    pub(crate) engine: Engine,
    pub(crate) limits: Arc<Limits>,
    pub(crate) log_group: Option<Arc<LogGroup>>,
}

impl RuleComponent {
    /// Instantiates the component and asks it for its metadata.
    pub(crate) fn new(loaded: Loaded) -> Result<RuleComponent, LoadError> {
        let Loaded { id, file, sha256, code, pre, engine, limits, log_group } = loaded;
        let label = file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let log = Arc::new(RuleLog::new(label, &limits, log_group));
        let mut component = RuleComponent {
            info: Arc::new(RuleInfo {
                id,
                name: String::new(),
                uuid: String::new(),
                version: String::new(),
                severity: Severity::Informational,
                description: String::new(),
                tags: Vec::new(),
                authors: Vec::new(),
                prefilter: None,
                dedup: None,
                file: file.clone(),
                sha256,
                kind: RuleKind::Component,
            }),
            _component: code,
            pre,
            engine,
            limits,
            log,
            live: None,
            instantiations: 0,
            last_fuel_consumed: 0,
        };
        let metadata = component.call_metadata().map_err(|fault| LoadError::Instantiate {
            file: file.clone(),
            reason: format!("calling `metadata` failed: the rule {fault}"),
        })?;
        let info =
            validate_metadata(metadata, &component.info).map_err(|reason| LoadError::Metadata { file, reason })?;
        component.log.relabel(info.name.clone());
        component.info = Arc::new(info);
        Ok(component)
    }

    /// The same rule, compiled code and log shared, with no instance yet:
    /// for another thread to evaluate with ([`crate::Engine::replica`]).
    /// Its instance is its own, with its own memory cap.
    pub(crate) fn replica(&self) -> RuleComponent {
        RuleComponent {
            info: self.info.clone(),
            _component: self._component.clone(),
            pre: self.pre.clone(),
            engine: self.engine.clone(),
            limits: self.limits.clone(),
            log: self.log.clone(),
            live: None,
            instantiations: 0,
            last_fuel_consumed: 0,
        }
    }

    /// Whether the rule's instance, and so whatever state the rule keeps
    /// in it, lives from one event to the next.
    pub(crate) fn keeps_instance(&self) -> bool {
        self.limits.isolation == Isolation::ReusedInstance
    }

    pub fn info(&self) -> &Arc<RuleInfo> {
        &self.info
    }

    /// Takes what the WIT metadata cannot carry from the rule text a `dac
    /// build` component carries: its authors, credited in its alerts (see
    /// [`RuleInfo::authors`]), and its dedup declaration.
    pub(crate) fn adopt_carried(&mut self, authors: Vec<String>, dedup: Option<dac_detect::Dedup>) {
        self.info = Arc::new(RuleInfo { authors, dedup, ..(*self.info).clone() });
    }

    pub fn log(&self) -> &RuleLog {
        &self.log
    }

    /// How many instances were created so far (1 unless faults or
    /// [`Isolation::FreshInstancePerEvent`] forced more).
    pub fn instantiations(&self) -> u64 {
        self.instantiations
    }

    /// Fuel the last [`RuleComponent::evaluate`] burnt: all of the budget
    /// when it ran out, 0 when the rule has no fuel budget.
    pub fn last_fuel_consumed(&self) -> u64 {
        self.last_fuel_consumed
    }

    /// Evaluates `event` in the sandbox. The event is lent to the instance
    /// for the call and is back in `event` when this returns, fault or not.
    pub fn evaluate(&mut self, event: &mut dac_event::Event) -> Result<Vec<Finding>, Fault> {
        let limits = self.limits.clone();
        self.last_fuel_consumed = 0;
        let live = self.live()?;
        arm(&mut live.store, &limits);
        live.store.data_mut().last_error_log = None;
        live.store.data_mut().event = std::mem::take(event);
        let result = live.rule.call_evaluate(&mut live.store, Resource::<EventHandle>::new_borrow(0));
        *event = std::mem::take(&mut live.store.data_mut().event);
        let consumed = limits.fuel.map_or(0, |budget| budget.saturating_sub(live.store.get_fuel().unwrap_or(0)));
        self.last_fuel_consumed = consumed;
        let outcome = match result {
            Ok(findings) => check_findings(findings, &limits),
            Err(err) => Err(self.classify(err)),
        };
        if outcome.is_err() || limits.isolation == Isolation::FreshInstancePerEvent {
            self.live = None;
        }
        outcome
    }

    fn call_metadata(&mut self) -> Result<wit::Metadata, Fault> {
        let limits = self.limits.clone();
        let live = self.live()?;
        arm(&mut live.store, &limits);
        let result = live.rule.call_metadata(&mut live.store);
        result.map_err(|err| {
            let fault = self.classify(err);
            self.live = None;
            fault
        })
    }

    fn live(&mut self) -> Result<&mut Live, Fault> {
        if self.live.is_none() {
            let mut store = Store::new(&self.engine, HostState::new(&self.limits, self.log.clone()));
            store.limiter(|state| &mut state.memory);
            if self.limits.deadline.is_some() {
                store.epoch_deadline_trap();
            }
            arm(&mut store, &self.limits);
            let rule = self.pre.instantiate(&mut store).map_err(|err| Fault::Instantiate(format!("{err:#}")))?;
            self.instantiations += 1;
            self.live = Some(Live { store, rule });
        }
        Ok(self.live.as_mut().expect("instance was just created"))
    }

    fn classify(&mut self, err: wasmtime::Error) -> Fault {
        let state = self.live.as_mut().map(|live| live.store.data_mut());
        let (refused, said) = match state {
            Some(state) => (state.memory.refused, state.last_error_log.take()),
            None => (None, None),
        };
        if let Some(asked) = refused {
            return Fault::Memory { limit: self.limits.memory_bytes, asked };
        }
        match err.downcast_ref::<Trap>() {
            Some(Trap::Interrupt) => return Fault::Deadline(self.limits.deadline.unwrap_or_default()),
            Some(Trap::OutOfFuel) => return Fault::Fuel(self.limits.fuel.unwrap_or_default()),
            Some(Trap::StackOverflow) => return Fault::StackOverflow,
            _ => {}
        }
        // A Rust or C guest keeps its stack at the bottom of linear memory;
        // overflowing it wraps the stack pointer below address 0, so the
        // fault lands in the top of the 32-bit address space.
        let causes: Vec<String> = err.chain().map(|cause| cause.to_string()).collect();
        if causes.iter().filter_map(|cause| faulting_address(cause)).any(|address| address >= GUEST_STACK_WRAP_START) {
            return Fault::StackOverflow;
        }
        let mut reason = causes.join(": ");
        if let Some(said) = said {
            reason.push_str(&format!(" (last error log: {said})"));
        }
        Fault::Trap(reason)
    }
}

/// Addresses from here up can only be reached by a stack pointer that
/// wrapped below 0 (no rule has a 4 GiB memory).
const GUEST_STACK_WRAP_START: u64 = 0xFFFF_0000;

/// The address in wasmtime's "memory fault at wasm address 0x… in linear
/// memory of size 0x…" (its `WasmFault` type is not exported in 48.x; the
/// version is pinned, and a changed message only loses this refinement).
fn faulting_address(cause: &str) -> Option<u64> {
    let hex = cause.strip_prefix("memory fault at wasm address 0x")?;
    let end = hex.find(|c: char| !c.is_ascii_hexdigit()).unwrap_or(hex.len());
    u64::from_str_radix(&hex[..end], 16).ok()
}

/// Gives the store a fresh budget for one call.
fn arm(store: &mut Store<HostState>, limits: &Limits) {
    if let Some(deadline) = limits.deadline {
        let ticks = deadline.as_nanos().div_ceil(Limits::EPOCH_TICK.as_nanos()).max(1);
        store.set_epoch_deadline(u64::try_from(ticks).unwrap_or(u64::MAX));
    }
    if let Some(fuel) = limits.fuel {
        // Only fails when fuel is not enabled, which `Sandbox::new` ensures.
        let _ = store.set_fuel(fuel);
    }
}

fn check_findings(findings: Vec<wit::Finding>, limits: &Limits) -> Result<Vec<Finding>, Fault> {
    if findings.len() > limits.max_findings {
        return Err(Fault::TooManyFindings { count: findings.len(), limit: limits.max_findings });
    }
    findings
        .into_iter()
        .map(|f| {
            let bytes = f.message.len() + f.matched.iter().map(|m| m.path.len() + m.value.len()).sum::<usize>();
            if bytes > limits.max_finding_bytes {
                return Err(Fault::FindingTooLarge { bytes, limit: limits.max_finding_bytes });
            }
            Ok(Finding {
                message: f.message,
                severity: f.severity.map(Severity::from),
                matched: f.matched.into_iter().map(|m| MatchedField { path: m.path, value: m.value }).collect(),
            })
        })
        .collect()
}

fn validate_metadata(m: wit::Metadata, partial: &RuleInfo) -> Result<RuleInfo, String> {
    if m.name.trim().is_empty() {
        return Err("`name` is empty".into());
    }
    if m.uuid.trim().is_empty() {
        return Err("`uuid` is empty".into());
    }
    // They are printed in log lines and alerts: one line each.
    for (field, value) in [("name", &m.name), ("uuid", &m.uuid), ("version", &m.version)]
        .into_iter()
        .chain(m.tags.iter().map(|t| ("tags", t)))
    {
        if value.chars().any(char::is_control) {
            return Err(format!("`{field}` holds a control character: {}", crate::host::escape_controls(value)));
        }
    }
    let prefilter = match m.prefilter {
        None => None,
        Some(p) => {
            if p.fields.is_empty() || p.literals.is_empty() {
                return Err("`prefilter` needs at least one field and one literal (or no prefilter at all)".into());
            }
            if p.literals.iter().any(String::is_empty) {
                return Err("`prefilter` has an empty literal, which would match every event".into());
            }
            Some(Prefilter { fields: p.fields, literals: p.literals, ascii_case_insensitive: p.ascii_case_insensitive })
        }
    };
    Ok(RuleInfo {
        id: partial.id.clone(),
        name: m.name,
        uuid: m.uuid,
        version: m.version,
        severity: m.severity.into(),
        description: m.description,
        tags: m.tags,
        authors: Vec::new(),
        prefilter,
        dedup: None,
        file: partial.file.clone(),
        sha256: partial.sha256.clone(),
        kind: RuleKind::Component,
    })
}
