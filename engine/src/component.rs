//! One loaded rule component: its instance, the budget of each call, and
//! how a call's failure becomes a typed [`Fault`].

use crate::error::LoadError;
use crate::host::{v0_1, v0_2, BatchHandle, EventHandle, HostState, LogGroup, RuleLog, StateAccess};
use crate::limits::{Isolation, Limits};
use crate::rule::Fault;
use crate::rule::{Finding, MatchedField, Prefilter, RuleId, RuleInfo, RuleKind, Severity};
use crate::state::SharedState;
use std::path::PathBuf;
use std::sync::Arc;
use wasmtime::component::Resource;
use wasmtime::{Engine, Store, Trap};

struct Live {
    store: Store<HostState>,
    rule: Instance,
}

/// A component ready to instantiate, for the world it targets.
#[derive(Clone)]
pub(crate) enum Pre {
    V0_1(v0_1::RulePre<HostState>),
    V0_2(v0_2::RulePre<HostState>),
}

enum Instance {
    V0_1(v0_1::Rule),
    V0_2(v0_2::Rule),
}

/// At most this many `fields` a 0.2.0 rule may declare: their values are
/// copied into the sandbox with every event.
pub const MAX_DECLARED_FIELDS: usize = 64;

/// A batch call's budget is this many events' (deadline and fuel), however
/// many events it holds: a rule that loops on one event of a batch holds
/// its thread for at most 8 deadlines, not one per event of the batch.
const BATCH_BUDGET_EVENTS: usize = 8;

/// A rule component ready to evaluate events.
pub struct RuleComponent {
    info: Arc<RuleInfo>,
    /// Held so that [`crate::ComponentCache`] shares the code with every
    /// other rule loaded from the same bytes while this one lives.
    _component: Arc<wasmtime::component::Component>,
    pre: Pre,
    /// The paths whose values a 0.2.0 rule receives with each event.
    fields: Arc<[String]>,
    engine: Engine,
    limits: Arc<Limits>,
    log: Arc<RuleLog>,
    live: Option<Live>,
    /// The vector a one-event call lends its event in, kept so that a call
    /// allocates none.
    single: Vec<dac_event::Event>,
    /// The last batch faulted: the next is evaluated one event per call,
    /// so a rule that faults on most events does not cost every batch
    /// twice.
    batch_faulted: bool,
    /// A batch ran out of its budget where each of its events, one per
    /// call, did not: the rule is too slow to batch under these limits,
    /// and is called one event per call from then on.
    too_slow_to_batch: bool,
    instantiations: u64,
    /// Fuel the last evaluation burnt (0 without a fuel budget).
    last_fuel_consumed: u64,
    /// The component imports `dac:rule/state`.
    uses_state: bool,
    /// The rule set's keyed state, lent by the engine that runs the rule
    /// ([`RuleComponent::attach_state`]); until then a state operation
    /// faults.
    state: Option<SharedState>,
}

/// What [`RuleComponent::new`] needs besides the compiled code.
pub(crate) struct Loaded {
    pub(crate) id: RuleId,
    pub(crate) file: PathBuf,
    pub(crate) sha256: String,
    pub(crate) code: Arc<wasmtime::component::Component>,
    pub(crate) pre: Pre,
    pub(crate) engine: Engine,
    pub(crate) limits: Arc<Limits>,
    pub(crate) log_group: Option<Arc<LogGroup>>,
    /// It imports `dac:rule/state`.
    pub(crate) uses_state: bool,
}

impl RuleComponent {
    /// Instantiates the component and asks it for its metadata.
    pub(crate) fn new(loaded: Loaded) -> Result<RuleComponent, LoadError> {
        let Loaded { id, file, sha256, code, pre, engine, limits, log_group, uses_state } = loaded;
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
            fields: Arc::new([]),
            engine,
            limits,
            log,
            live: None,
            single: Vec::with_capacity(1),
            batch_faulted: false,
            too_slow_to_batch: false,
            instantiations: 0,
            last_fuel_consumed: 0,
            uses_state,
            state: None,
        };
        let metadata = component.call_metadata().map_err(|fault| LoadError::Instantiate {
            file: file.clone(),
            reason: format!("calling `metadata` failed: the rule {fault}"),
        })?;
        let (info, fields) =
            validate_metadata(metadata, &component.info).map_err(|reason| LoadError::Metadata { file, reason })?;
        component.log.relabel(info.name.clone());
        component.info = Arc::new(info);
        component.fields = fields.into();
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
            fields: self.fields.clone(),
            engine: self.engine.clone(),
            limits: self.limits.clone(),
            log: self.log.clone(),
            live: None,
            single: Vec::with_capacity(1),
            batch_faulted: false,
            too_slow_to_batch: false,
            instantiations: 0,
            last_fuel_consumed: 0,
            uses_state: self.uses_state,
            state: self.state.clone(),
        }
    }

    /// Whether the rule imports the host's keyed state (`dac:rule/state`).
    pub fn uses_state(&self) -> bool {
        self.uses_state
    }

    /// Lends the rule its rule set's keyed state (the engine running it
    /// does, [`crate::Engine`]).
    pub(crate) fn attach_state(&mut self, state: &SharedState) {
        if self.uses_state && !self.state.as_ref().is_some_and(|held| Arc::ptr_eq(held, state)) {
            self.state = Some(state.clone());
            if let Some(live) = &mut self.live {
                live.store.data_mut().state = Some(StateAccess::new(state.clone(), self.info.uuid.as_str().into()));
            }
        }
    }

    /// Whether the rule's instance, and so whatever state the rule keeps
    /// in it, lives from one event to the next.
    pub(crate) fn keeps_instance(&self) -> bool {
        self.limits.isolation == Isolation::ReusedInstance
    }

    /// Whether [`RuleComponent::evaluate_batch`] makes one call for many
    /// events: a `dac:rule@0.2.0` rule whose instance is reused.
    pub fn batches_calls(&self) -> bool {
        matches!(self.pre, Pre::V0_2(_)) && self.keeps_instance()
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
        // A batch of one, in a vector kept from call to call.
        let mut single = std::mem::take(&mut self.single);
        single.push(std::mem::take(event));
        let result = self.call_evaluate(&mut single);
        if let Some(back) = single.pop() {
            *event = back;
        }
        self.single = single;
        // `call_evaluate` answers one result per event, or faults.
        result.and_then(|per_event| {
            per_event.into_iter().next().unwrap_or_else(|| Err(Fault::Trap("`evaluate` returned no result".into())))
        })
    }

    /// Evaluates `events` in order, in as few calls as the rule's world
    /// allows (one for a 0.2.0 rule): one result per event, each as
    /// [`RuleComponent::evaluate`] would give it. When a batch call
    /// faults, its events are evaluated again one per call, from a fresh
    /// instance, so that the fault is the one event's that caused it and
    /// every other event still gets its findings.
    pub fn evaluate_batch(&mut self, events: &mut Vec<dac_event::Event>) -> Vec<Result<Vec<Finding>, Fault>> {
        let batched = events.len() > 1 && self.batches_calls() && !self.batch_faulted && !self.too_slow_to_batch;
        let mut over_budget = false;
        let mut fuel = 0;
        if batched {
            match self.call_evaluate(events) {
                Ok(results) if results.iter().all(Result::is_ok) => return results,
                failed => {
                    over_budget = matches!(failed, Err(Fault::Deadline(_) | Fault::Fuel(_)));
                    fuel = self.last_fuel_consumed;
                }
            }
        }
        // One event per call; after a failed batch, from a fresh instance
        // (the batch's is gone).
        let results: Vec<_> = events
            .iter_mut()
            .map(|event| {
                let result = self.evaluate(event);
                fuel += self.last_fuel_consumed;
                result
            })
            .collect();
        self.last_fuel_consumed = fuel;
        self.batch_faulted = results.iter().any(Result::is_err);
        self.too_slow_to_batch |= over_budget && !self.batch_faulted;
        results
    }

    /// One `evaluate` call with every event of `events` lent to the
    /// instance, under the budget of that many evaluations; the events are
    /// back in `events` when it returns, fault or not. A fault here is the
    /// whole call's.
    fn call_evaluate(&mut self, events: &mut Vec<dac_event::Event>) -> Result<Vec<Result<Vec<Finding>, Fault>>, Fault> {
        let limits = self.limits.clone();
        let count = events.len();
        let budget_events = count.min(BATCH_BUDGET_EVENTS);
        self.last_fuel_consumed = 0;
        // The declared fields' values, read before the events move in
        // (0.1.0 rules read everything through the host).
        let fields = match self.pre {
            Pre::V0_1(_) => declared_fields(&[], &[]),
            Pre::V0_2(_) => declared_fields(events, &self.fields),
        };
        let live = self.live()?;
        arm(&mut live.store, &limits, budget_events);
        live.store.data_mut().last_error_log = None;
        std::mem::swap(&mut live.store.data_mut().events, events);
        let result = match &live.rule {
            Instance::V0_1(rule) => rule
                .call_evaluate(&mut live.store, Resource::<EventHandle>::new_borrow(0))
                .map(|findings| vec![findings.into_iter().map(Raw::from).collect::<Vec<_>>()]),
            Instance::V0_2(rule) => {
                rule.call_evaluate(&mut live.store, Resource::<BatchHandle>::new_borrow(0), &fields).map(|per_event| {
                    per_event.into_iter().map(|findings| findings.into_iter().map(Raw::from).collect()).collect()
                })
            }
        };
        std::mem::swap(&mut live.store.data_mut().events, events);
        live.store.data_mut().events.clear();
        let budget = limits.fuel.map(|fuel| fuel.saturating_mul(budget_events as u64));
        let consumed = budget.map_or(0, |budget| budget.saturating_sub(live.store.get_fuel().unwrap_or(0)));
        self.last_fuel_consumed = consumed;
        let outcome = match result {
            Ok(per_event) if per_event.len() == count => {
                Ok(per_event.into_iter().map(|findings| check_findings(findings, &limits)).collect::<Vec<_>>())
            }
            Ok(per_event) => Err(Fault::Trap(format!(
                "`evaluate` returned {} lists of findings for a batch of {count} events",
                per_event.len()
            ))),
            Err(err) => Err(self.classify(err)),
        };
        // Any fault, even a finding over the limits, ends the instance, and
        // takes back the call's state writes: its events may be evaluated
        // again, one per call, and must not count twice.
        let failed = outcome.as_ref().map_or(true, |results| results.iter().any(Result::is_err));
        if let Some(access) = self.live.as_mut().and_then(|live| live.store.data_mut().state.as_mut()) {
            access.finish(failed);
        }
        if failed || limits.isolation == Isolation::FreshInstancePerEvent {
            self.live = None;
        }
        outcome
    }

    fn call_metadata(&mut self) -> Result<Described, Fault> {
        let limits = self.limits.clone();
        let live = self.live()?;
        arm(&mut live.store, &limits, 1);
        let result = match &live.rule {
            Instance::V0_1(rule) => rule.call_metadata(&mut live.store).map(Described::from),
            Instance::V0_2(rule) => rule.call_metadata(&mut live.store).map(Described::from),
        };
        result.map_err(|err| {
            let fault = self.classify(err);
            self.live = None;
            fault
        })
    }

    fn live(&mut self) -> Result<&mut Live, Fault> {
        if self.live.is_none() {
            let state = self.state.clone().map(|store| StateAccess::new(store, self.info.uuid.as_str().into()));
            let mut store = Store::new(&self.engine, HostState::new(&self.limits, self.log.clone(), state));
            store.limiter(|state| &mut state.memory);
            if self.limits.deadline.is_some() {
                store.epoch_deadline_trap();
            }
            arm(&mut store, &self.limits, 1);
            let rule = match &self.pre {
                Pre::V0_1(pre) => pre.instantiate(&mut store).map(Instance::V0_1),
                Pre::V0_2(pre) => pre.instantiate(&mut store).map(Instance::V0_2),
            }
            .map_err(|err| Fault::Instantiate(format!("{err:#}")))?;
            self.instantiations += 1;
            self.live = Some(Live { store, rule });
        }
        Ok(self.live.as_mut().expect("instance was just created"))
    }

    fn classify(&mut self, err: wasmtime::Error) -> Fault {
        let state = self.live.as_mut().map(|live| live.store.data_mut());
        let (refused, said, state_fault) = match state {
            Some(state) => (
                state.memory.refused,
                state.last_error_log.take(),
                state.state.as_mut().and_then(|access| access.fault.take()),
            ),
            None => (None, None, None),
        };
        if let Some(asked) = refused {
            return Fault::Memory { limit: self.limits.memory_bytes, asked };
        }
        if let Some(fault) = state_fault {
            return Fault::State(fault);
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

/// The values of the declared `paths` in every event of a batch, as
/// 0.2.0's `evaluate` takes them: text in one buffer, so that lowering the
/// batch into the sandbox takes two allocations there, not one per value.
fn declared_fields(events: &[dac_event::Event], paths: &[String]) -> v0_2::dac::rule::types::Fields {
    use v0_2::dac::rule::types::{Field, Fields, Span};
    // Lowering a batch of more than 4 GiB fails on the guest's memory (a
    // 32-bit address space, capped far lower) before a span could wrap.
    let u32_of = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
    let mut fields = Fields {
        events: u32_of(events.len()),
        values: Vec::with_capacity(events.len() * paths.len()),
        text: Vec::new(),
    };
    for event in events {
        for path in paths {
            fields.values.push(match event.get(path) {
                None => Field::Absent,
                Some(dac_event::Value::Text(text)) => {
                    let start = u32_of(fields.text.len());
                    fields.text.extend_from_slice(text.as_bytes());
                    Field::Text(Span { start, len: u32_of(text.len()) })
                }
                Some(value) => Field::Value(value.into()),
            });
        }
    }
    fields
}

/// Gives the store a fresh budget for one call that evaluates `events`
/// events: that many times the budget of one.
fn arm(store: &mut Store<HostState>, limits: &Limits, events: usize) {
    let events = events.max(1) as u128;
    if let Some(deadline) = limits.deadline {
        let ticks = (deadline.as_nanos() * events).div_ceil(Limits::EPOCH_TICK.as_nanos()).max(1);
        store.set_epoch_deadline(u64::try_from(ticks).unwrap_or(u64::MAX));
    }
    if let Some(fuel) = limits.fuel {
        // Only fails when fuel is not enabled, which `Sandbox::new` ensures.
        let _ = store.set_fuel(u64::try_from(u128::from(fuel) * events).unwrap_or(u64::MAX));
    }
}

/// A finding as either world returns it, before the limits are checked.
struct Raw {
    message: String,
    severity: Option<Severity>,
    matched: Vec<MatchedField>,
}

/// What `metadata` says, in either world.
struct Described {
    name: String,
    uuid: String,
    version: String,
    severity: Severity,
    description: String,
    tags: Vec<String>,
    prefilter: Option<Prefilter>,
    /// 0.2.0 only.
    fields: Vec<String>,
}

macro_rules! from_world {
    ($v:ident, $fields:expr) => {
        impl From<$v::dac::rule::types::Finding> for Raw {
            fn from(f: $v::dac::rule::types::Finding) -> Raw {
                Raw {
                    message: f.message,
                    severity: f.severity.map(Severity::from),
                    matched: f.matched.into_iter().map(|m| MatchedField { path: m.path, value: m.value }).collect(),
                }
            }
        }

        impl From<$v::dac::rule::types::Metadata> for Described {
            fn from(m: $v::dac::rule::types::Metadata) -> Described {
                #[allow(clippy::redundant_closure_call)]
                let fields = ($fields)(&m);
                Described {
                    name: m.name,
                    uuid: m.uuid,
                    version: m.version,
                    severity: m.severity.into(),
                    description: m.description,
                    tags: m.tags,
                    prefilter: m.prefilter.map(|p| Prefilter {
                        fields: p.fields,
                        literals: p.literals,
                        ascii_case_insensitive: p.ascii_case_insensitive,
                    }),
                    fields,
                }
            }
        }
    };
}

from_world!(v0_1, |_: &v0_1::dac::rule::types::Metadata| Vec::new());
from_world!(v0_2, |m: &v0_2::dac::rule::types::Metadata| m.fields.clone());

fn check_findings(findings: Vec<Raw>, limits: &Limits) -> Result<Vec<Finding>, Fault> {
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
            Ok(Finding { message: f.message, severity: f.severity, matched: f.matched })
        })
        .collect()
}

fn validate_metadata(m: Described, partial: &RuleInfo) -> Result<(RuleInfo, Vec<String>), String> {
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
            Some(p)
        }
    };
    if m.fields.len() > MAX_DECLARED_FIELDS {
        return Err(format!(
            "`fields` declares {} paths; at most {MAX_DECLARED_FIELDS} are handed to a rule with each event (read the others with `event.get`)",
            m.fields.len()
        ));
    }
    if let Some(path) = m.fields.iter().find(|path| path.is_empty() || path.chars().any(char::is_control)) {
        return Err(format!("`fields` holds an empty path or one with a control character: {:?}", path));
    }
    let info = RuleInfo {
        id: partial.id.clone(),
        name: m.name,
        uuid: m.uuid,
        version: m.version,
        severity: m.severity,
        description: m.description,
        tags: m.tags,
        authors: Vec::new(),
        prefilter,
        dedup: None,
        file: partial.file.clone(),
        sha256: partial.sha256.clone(),
        kind: RuleKind::Component,
    };
    Ok((info, m.fields))
}
