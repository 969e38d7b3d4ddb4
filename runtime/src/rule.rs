//! One loaded rule: its metadata, its instance, and how a call can fail.

use crate::limits::{Isolation, Limits};
use crate::sandbox::{bindings, wit, EventHandle, HostState, LoadError, MemoryCap};
use serde::Serialize;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use wasmtime::component::Resource;
use wasmtime::{Engine, Store, Trap};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Informational,
    Low,
    Medium,
    High,
    Critical,
}

impl From<wit::Severity> for Severity {
    fn from(s: wit::Severity) -> Severity {
        match s {
            wit::Severity::Informational => Severity::Informational,
            wit::Severity::Low => Severity::Low,
            wit::Severity::Medium => Severity::Medium,
            wit::Severity::High => Severity::High,
            wit::Severity::Critical => Severity::Critical,
        }
    }
}

impl std::fmt::Display for Severity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Severity::Informational => "informational",
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        })
    }
}

/// Literals a rule cannot fire without (see `prefilter` in wit/rule.wit).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prefilter {
    pub fields: Vec<String>,
    pub literals: Vec<String>,
    pub ascii_case_insensitive: bool,
}

/// What a rule is written in, which decides where it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RuleKind {
    /// A WebAssembly component, run in the sandbox.
    Component,
    /// The seed talk's YAML, interpreted by the host (see `dac_detect`).
    SeedYaml,
    /// A Sigma rule, interpreted by the host.
    Sigma,
}

impl RuleKind {
    pub fn is_declarative(self) -> bool {
        self != RuleKind::Component
    }
}

/// What a rule says about itself, plus where it came from.
#[derive(Debug, Clone)]
pub struct RuleInfo {
    pub name: String,
    pub uuid: String,
    pub version: String,
    pub severity: Severity,
    pub description: String,
    pub tags: Vec<String>,
    /// Who wrote the rule (Sigma's `author`), credited in every alert as the
    /// Detection Rule License asks; for a component, only one `dac build`
    /// made from a rule that names them.
    pub authors: Vec<String>,
    pub prefilter: Option<Prefilter>,
    /// Alert dedup the rule declares (a YAML or Sigma rule's `dedup`, also
    /// when built into a component); see [`crate::policy`].
    pub dedup: Option<dac_detect::Dedup>,
    pub file: PathBuf,
    /// SHA-256 of the rule file's bytes, hex.
    pub sha256: String,
    pub kind: RuleKind,
}

impl RuleInfo {
    /// The file name, for messages.
    pub fn file_name(&self) -> String {
        self.file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| self.file.display().to_string())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MatchedField {
    pub path: String,
    pub value: String,
}

/// What a rule reported about one event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub severity: Option<Severity>,
    pub matched: Vec<MatchedField>,
}

/// Why one (rule, event) evaluation produced no verdict. The instance that
/// faulted is discarded; the next evaluation gets a fresh one.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Fault {
    #[error("exceeded its deadline of {0:?}")]
    Deadline(Duration),
    #[error("ran out of fuel ({0} units)")]
    Fuel(u64),
    #[error("exceeded its memory limit of {limit} bytes (asked for {asked})")]
    Memory { limit: usize, asked: usize },
    #[error("overflowed its stack")]
    StackOverflow,
    #[error("trapped: {0}")]
    Trap(String),
    #[error("returned {count} findings, above the limit of {limit}")]
    TooManyFindings { count: usize, limit: usize },
    #[error("returned a finding of {bytes} bytes, above the limit of {limit}")]
    FindingTooLarge { bytes: usize, limit: usize },
    #[error("could not be instantiated: {0}")]
    Instantiate(String),
}

impl Fault {
    /// A short stable name for counting faults by kind.
    pub fn kind(&self) -> &'static str {
        match self {
            Fault::Deadline(_) => "deadline",
            Fault::Fuel(_) => "fuel",
            Fault::Memory { .. } => "memory",
            Fault::StackOverflow => "stack",
            Fault::Trap(_) => "trap",
            Fault::TooManyFindings { .. } | Fault::FindingTooLarge { .. } => "finding-limit",
            Fault::Instantiate(_) => "instantiate",
        }
    }
}

/// A rule's log channel: rate-limited, counted, attributed.
pub struct RuleLog {
    label: Mutex<String>,
    bucket: Mutex<TokenBucket>,
    max_line_bytes: usize,
    pub(crate) emitted: AtomicU64,
    pub(crate) dropped: AtomicU64,
}

struct TokenBucket {
    tokens: f64,
    per_second: f64,
    last: Instant,
}

impl RuleLog {
    fn new(label: String, limits: &Limits) -> RuleLog {
        let per_second = f64::from(limits.log_lines_per_second.max(1));
        RuleLog {
            label: Mutex::new(label),
            bucket: Mutex::new(TokenBucket { tokens: per_second, per_second, last: Instant::now() }),
            max_line_bytes: limits.max_log_line_bytes,
            emitted: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
        }
    }

    /// Emits (or counts as dropped) one line; returns it when it is at
    /// error level, for the fault that may follow.
    pub(crate) fn emit(&self, level: bindings::dac::rule::host::Level, mut message: String) -> Option<String> {
        use bindings::dac::rule::host::Level;
        if message.len() > self.max_line_bytes {
            let mut cut = self.max_line_bytes;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            let total = message.len();
            message.truncate(cut);
            message.push_str(&format!("… [cut, {total} bytes]"));
        }
        let error = matches!(level, Level::Error).then(|| message.clone());
        if !lock(&self.bucket).take() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return error;
        }
        self.emitted.fetch_add(1, Ordering::Relaxed);
        let rule = lock(&self.label).clone();
        match level {
            Level::Trace => tracing::trace!(target: "dac::rule", %rule, "{message}"),
            Level::Debug => tracing::debug!(target: "dac::rule", %rule, "{message}"),
            Level::Info => tracing::info!(target: "dac::rule", %rule, "{message}"),
            Level::Warn => tracing::warn!(target: "dac::rule", %rule, "{message}"),
            Level::Error => tracing::error!(target: "dac::rule", %rule, "{message}"),
        }
        error
    }

    /// Log lines emitted and dropped by the rate limit so far.
    pub fn counts(&self) -> (u64, u64) {
        (self.emitted.load(Ordering::Relaxed), self.dropped.load(Ordering::Relaxed))
    }
}

impl TokenBucket {
    fn take(&mut self) -> bool {
        let now = Instant::now();
        let refill = now.duration_since(self.last).as_secs_f64() * self.per_second;
        self.tokens = (self.tokens + refill).min(self.per_second);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// A lock that survives a panic elsewhere: these guard plain counters.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

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

impl RuleComponent {
    pub(crate) fn new(
        file: PathBuf,
        sha256: String,
        code: Arc<wasmtime::component::Component>,
        pre: bindings::RulePre<HostState>,
        engine: Engine,
        limits: Arc<Limits>,
    ) -> Result<RuleComponent, LoadError> {
        let label = file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let log = Arc::new(RuleLog::new(label, &limits));
        let mut component = RuleComponent {
            info: Arc::new(RuleInfo {
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
        *lock(&component.log.label) = info.name.clone();
        component.info = Arc::new(info);
        Ok(component)
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
            let mut store = Store::new(
                &self.engine,
                HostState {
                    event: dac_event::Event::default(),
                    memory: MemoryCap { limit: self.limits.memory_bytes, refused: None },
                    log: self.log.clone(),
                    last_error_log: None,
                    wasi: None,
                },
            );
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
