//! One tenant: its rules on disk, its own sandbox and its own engine.
//!
//! A tenant's rules are files in `STATE/tenants/ID/rules/`, one per rule,
//! named by the rule's name alone (`shadow`, no extension): a WebAssembly
//! component or a YAML (seed or Sigma) rule, told apart by content. One
//! file per name means replacing a rule — even by one of another kind — is
//! a single atomic rename.
//!
//! A rule's name is its [`RuleId`] in the tenant's engine. Every change —
//! an upload, a delete, a disable or enable, a quarantine — is one
//! [`Change`] to the running engine: the new rule is loaded by the tenant's
//! own [`Sandbox`] (world, compilation, limits) or parsed by `dac_detect`,
//! the change is checked against the tenant's other rules
//! ([`Engine::plan`]: a uuid used twice is refused), and only then is the
//! file written aside and renamed in and the change swapped in between two
//! events. A refused upload changes nothing: the previous version stays
//! live. A rule's counters belong to its name and carry on across new
//! versions, disables and quarantines.
//!
//! Each rule of each tenant runs in its own wasmtime store, under the
//! tenant's limits; tenants whose limits allow the same wasmtime
//! configuration share its engine (compiled code, one deadline clock), and
//! all share the compiled-code cache, keyed by content hash.
//!
//! A stored rule is live, or out of the engine for one reason
//! ([`RuleState`]): it did not load at start, it was quarantined (too many
//! faults), or it is disabled — through the API (a marker in
//! `STATE/tenants/ID/disabled/`) or because the tenant's `enabled_rules` in
//! the tenants file does not name it.

use crate::config::{TenantConfig, TenantLimits};
use crate::names::RuleName;
use dac_engine::{
    AlertPolicy, Cancel, Change, Delivery, Engine, Incoming, Input, JsonLinesSink, Latency, LoadError, LoadedRule,
    Location, Notice, Observer, ReplaySource, RuleId, RuleKind, RuleLoader, RuleStats, Sandbox, Severity, Sink,
    SinkError, Source, SourceError, Stats,
};
use serde::Serialize;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Why a request about a tenant's rules was refused.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    InvalidName(#[from] crate::names::NameError),
    #[error("no rule named {0:?}")]
    NotFound(String),
    #[error("the rule is {size} bytes; this tenant's limit is {limit} bytes")]
    TooLarge { size: usize, limit: usize },
    #[error("this tenant already has {limit} rules, its limit; delete one first")]
    TooManyRules { limit: usize },
    /// The rule does not load, or clashes with another; the message is
    /// located (`NAME.yaml:4: …`).
    #[error("{0}")]
    Invalid(String),
    /// The rule is in a state the request cannot change (enabling a
    /// quarantined rule, or one the tenants file leaves out).
    #[error("{0}")]
    Conflict(String),
    /// The tenants file was reloaded while the request waited, and this
    /// tenant was changed or removed by it.
    #[error("the tenants file was reloaded while this request ran; send it again")]
    Retired,
    /// A dry run went past one of the tenant's dry-run limits.
    #[error("the dry run stopped: {0}; post fewer events")]
    DryRunLimit(String),
    /// The tenant already runs as many dry runs (or uploads) as its limit
    /// allows.
    #[error("this tenant already runs {limit} {what}, its limit; try again when one has finished")]
    Busy { what: &'static str, limit: usize },
    /// The client went away, or the server is stopping, while the rule
    /// compiled.
    #[error("cancelled while the rule compiled: the client went away or the server is stopping")]
    Cancelled,
    /// The compiler could not run (its files, its process).
    #[error("compiling: {0}")]
    Compiler(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

/// Why a tenant could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("tenant {tenant}: configuring its sandbox: {reason}")]
    Sandbox { tenant: String, reason: String },
    /// Stored rules that cannot run together (a uuid used twice).
    #[error("tenant {tenant}: {reason}")]
    Rules { tenant: String, reason: String },
}

/// One fault of a tenant's rule on the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleFault {
    /// The rule's name (its id in the tenant's engine).
    pub rule: RuleId,
    pub fault: String,
}

/// What one event did for a tenant.
#[derive(Debug, Default)]
pub struct Delivered {
    /// An alert (or a repeat folded into one) went to the sink.
    pub alerted: bool,
    pub faults: Vec<RuleFault>,
}

impl RuleFault {
    pub fn new(rule: &str, fault: impl Into<String>) -> RuleFault {
        RuleFault { rule: RuleId::new(rule), fault: fault.into() }
    }
}

/// What the API says about a live rule.
#[derive(Debug, Clone, Serialize)]
pub struct RuleSummary {
    /// The name it was uploaded under.
    pub name: String,
    pub kind: RuleKind,
    /// The rule's own title (its metadata `name`, Sigma `title`).
    pub title: String,
    pub uuid: String,
    pub version: String,
    pub severity: Severity,
    /// `sha256:…` of the stored bytes.
    pub sha256: String,
    pub bytes: usize,
    /// Evaluations of the event stream that faulted since this version
    /// went live (or the server started).
    pub faults: u64,
}

/// A rule taken out of its tenant's engine after too many faults. Its file
/// stays (and a marker beside it, so a restart keeps it out); uploading the
/// rule again, fixed, puts it back; deleting it removes both.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Quarantined {
    pub name: String,
    pub uuid: String,
    /// `sha256:…` of the quarantined version.
    pub sha256: String,
    pub faults: u64,
    /// The last fault.
    pub reason: String,
}

/// A stored rule that does not run because it is disabled: through the API
/// (`who` and `time` say by whom and when; a marker keeps it disabled
/// across restarts) or by the tenants file's `enabled_rules`.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Disabled {
    pub name: String,
    /// The disabled version's uuid, when known (it is not for a rule
    /// disabled by the tenants file since the server started).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub uuid: Option<String>,
    /// `sha256:…` of the stored bytes.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub sha256: Option<String>,
    /// Who disabled it through the API (`tenant:ID`).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub who: Option<String>,
    /// When (RFC 3339, UTC).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub time: Option<String>,
    pub reason: String,
}

/// Why a rule disabled through the API does not run.
pub const DISABLED_BY_API: &str = "disabled through the API";
/// Why a rule the tenants file leaves out does not run.
pub const DISABLED_BY_CONFIG: &str = "not in enabled_rules of the tenants file";

/// A rule on disk that did not load when the server started (for instance
/// after the tenant's limits were lowered); it does not run.
#[derive(Debug, Clone, Serialize)]
pub struct NotLoaded {
    pub name: String,
    pub reason: String,
}

/// The outcome of evaluating posted events without writing anything.
#[derive(Debug)]
pub struct DryRun {
    /// Well-formed events evaluated.
    pub events: u64,
    /// The alerts the rules raised, exactly as `dac run` prints them: one
    /// JSON document per line. Kept as text, not parsed again: an alert
    /// carries its event, which may be nested as deep as the event reader
    /// allows, one level more than a parser with the same limit takes.
    pub alerts: Vec<String>,
    /// Evaluations that faulted (a rule trapped or breached a limit), the
    /// first [`DRY_RUN_NOTICES`]; `more_faults` counts the rest.
    pub faults: Vec<String>,
    pub more_faults: u64,
    /// Posted input that was not an event, by location, the first
    /// [`DRY_RUN_NOTICES`]; `more_malformed` counts the rest.
    pub malformed: Vec<String>,
    pub more_malformed: u64,
}

/// Fault and malformed-input notices a dry run returns in full.
pub const DRY_RUN_NOTICES: usize = 100;

impl DryRun {
    /// The response body: `{"events": N, "alerts": [...], "faults": [...],
    /// "more_faults": N, "malformed": [...], "more_malformed": N}`.
    pub fn to_json(&self) -> String {
        let strings = |items: &[String]| serde_json::Value::from(items.to_vec()).to_string();
        format!(
            "{{\"events\":{},\"alerts\":[{}],\"faults\":{},\"more_faults\":{},\"malformed\":{},\"more_malformed\":{}}}",
            self.events,
            self.alerts.join(","),
            strings(&self.faults),
            self.more_faults,
            strings(&self.malformed),
            self.more_malformed
        )
    }
}

/// What a successful upload did.
pub struct Put {
    pub created: bool,
    pub rule: RuleSummary,
    /// The rule was disabled and stays so: stored, checked, not live.
    pub disabled: Option<Disabled>,
}

/// What an enable or disable did.
pub struct Switched<T> {
    /// `false`: the rule already was in the state asked for.
    pub changed: bool,
    /// The rule as it is now.
    pub rule: T,
}

/// What the event stream did for one tenant since the server started, for
/// the metrics endpoint: counters only ever grow, across rule changes.
#[derive(Debug, Clone, Default)]
pub struct TenantCounters {
    /// Events of the tenant's scope evaluated.
    pub events: u64,
    /// Alerts written (matches less suppressed and folded ones).
    pub alerts: u64,
    pub folded: u64,
    pub suppressed: u64,
    /// The declarative rules' shared pass, per event that needed it.
    pub declarative_pass: Latency,
    /// Per rule name: every rule that ran since the start and is still
    /// stored (a deleted rule's counters go with it).
    pub rules: BTreeMap<String, RuleStats>,
    /// Rules taken out after too many faults.
    pub quarantines: u64,
    /// Per rule name: what its correlations hold now and refused (the
    /// documents of one file summed), for rules that have correlations.
    pub state: BTreeMap<String, dac_engine::CorrelationStats>,
    /// Rules live, quarantined, stored but not loaded, disabled, now.
    pub live_rules: usize,
    pub quarantined_rules: usize,
    pub not_loaded_rules: usize,
    pub disabled_rules: usize,
}

/// Why a stored rule is where it is.
#[derive(Debug, Clone)]
pub enum RuleState {
    Live(RuleSummary),
    /// It did not load when the server started; it does not run.
    NotLoaded(String),
    Quarantined(Quarantined),
    Disabled(Disabled),
}

/// One stored rule.
#[derive(Debug, Clone)]
struct Stored {
    state: RuleState,
    /// What the rule counted while it ran, kept while it is out of the
    /// engine (`None`: it has not run since the server started).
    counters: Option<RuleStats>,
}

/// The tenant's rules and the engine running the live ones.
struct Live {
    engine: Engine,
    /// The stream's counters for this tenant since the server started (the
    /// engine keeps the per-rule ones).
    stats: Stats,
    /// Every stored rule, by name.
    rules: BTreeMap<RuleName, Stored>,
    quarantines: u64,
}

impl Live {
    fn summary(&self, name: &str) -> Option<&RuleSummary> {
        match &self.rules.get(name)?.state {
            RuleState::Live(summary) => Some(summary),
            _ => None,
        }
    }

    fn stored(&self) -> usize {
        self.rules.len()
    }

    fn of<T>(&self, pick: impl Fn(&RuleState) -> Option<T>) -> Vec<T> {
        self.rules.values().filter_map(|stored| pick(&stored.state)).collect()
    }

    /// The counters since the start.
    fn counters(&self) -> TenantCounters {
        let mut counters = TenantCounters {
            events: self.stats.events,
            alerts: self.stats.alerts,
            folded: self.stats.folded,
            suppressed: self.stats.suppressed,
            declarative_pass: self.stats.declarative_pass.clone(),
            quarantines: self.quarantines,
            ..TenantCounters::default()
        };
        for (name, stored) in &self.rules {
            let rule = match &stored.state {
                RuleState::Live(_) => self.engine.stats_of(&RuleId::new(name.as_str())).cloned(),
                _ => stored.counters.clone(),
            };
            if let Some(rule) = rule {
                counters.rules.insert(name.to_string(), rule);
            }
            match stored.state {
                RuleState::Live(_) => counters.live_rules += 1,
                RuleState::NotLoaded(_) => counters.not_loaded_rules += 1,
                RuleState::Quarantined(_) => counters.quarantined_rules += 1,
                RuleState::Disabled(_) => counters.disabled_rules += 1,
            }
        }
        for (id, held) in self.engine.correlations_held() {
            counters.state.entry(id.file_id().to_owned()).or_default().absorb(&held);
        }
        // A code rule's keyed state counts as its correlations' would:
        // keys as groups.
        for (id, usage) in self.engine.rule_states_held() {
            let state = counters.state.entry(id.file_id().to_owned()).or_default();
            state.groups += usage.keys;
            state.bytes += usage.bytes;
            state.refused += usage.refused;
        }
        counters
    }

    /// Puts rule `name` in `state`, out of the engine, keeping its
    /// counters.
    fn take_out(&mut self, name: &RuleName, state: RuleState) {
        let mut counters = None;
        if self.summary(name.as_str()).is_some() {
            let mut change = Change::new();
            change.remove(RuleId::new(name.as_str()));
            let applied = self.engine.change(change);
            counters = applied.removed.into_iter().next().map(|(_, counters)| counters);
        }
        let stored = self.rules.entry(name.clone()).or_insert(Stored { state: state.clone(), counters: None });
        stored.state = state;
        if counters.is_some() {
            stored.counters = counters;
        }
    }
}

pub struct Tenant {
    pub config: TenantConfig,
    dir: PathBuf,
    /// `STATE/tenants/ID/quarantine/`: one JSON marker per quarantined rule.
    quarantine_dir: PathBuf,
    /// `STATE/tenants/ID/disabled/`: one JSON marker per rule disabled
    /// through the API.
    disabled_dir: PathBuf,
    loader: RuleLoader,
    /// Cancelled when the server stops: compilations in progress end.
    stopping: Cancel,
    live: Mutex<Live>,
    /// Set when a reload of the tenants file replaced (or removed) this
    /// instance: changes are refused, so none lands where the new instance
    /// would not see it.
    retired: AtomicBool,
    /// Dry runs in progress.
    dry_runs: AtomicUsize,
    /// API requests in progress.
    requests: AtomicUsize,
    /// Uploads being compiled.
    uploads: AtomicUsize,
}

/// One of a tenant's slots (a dry run, a request in progress), given back
/// when dropped.
pub struct Slot<'a>(&'a AtomicUsize);

impl<'a> Slot<'a> {
    fn take(running: &'a AtomicUsize, max: usize) -> Option<Slot<'a>> {
        let slot = Slot(running);
        (running.fetch_add(1, Ordering::SeqCst) < max).then_some(slot)
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A tenant being replaced by a reload: its lock is held, so no change
/// lands on it meanwhile. [`Retiring::commit`] retires it; dropping this
/// instead leaves it as it was.
pub(crate) struct Retiring<'a> {
    live: MutexGuard<'a, Live>,
    retired: &'a AtomicBool,
}

impl Retiring<'_> {
    /// What the stream did for the tenant so far, for its successor to
    /// count on from (metrics are counters: they must not fall back).
    pub(crate) fn counters(&self) -> TenantCounters {
        self.live.counters()
    }

    pub(crate) fn commit(self) {
        self.retired.store(true, Ordering::Release);
    }
}

impl Tenant {
    /// Opens the tenant's rule directory under `state_dir` (creating it)
    /// and loads what is there. A rule file that no longer loads is kept on
    /// disk, reported by [`Tenant::not_loaded`] and logged; it does not run.
    ///
    /// `sandbox` must run under the tenant's limits (see
    /// [`Service::open`](crate::Service::open)).
    pub fn open(
        config: TenantConfig,
        state_dir: &Path,
        sandbox: Sandbox,
        mapping: dac_engine::FieldMapping,
        stopping: Cancel,
    ) -> Result<Tenant, OpenError> {
        fn io(path: &Path) -> impl FnOnce(std::io::Error) -> OpenError + '_ {
            move |source| OpenError::Io { path: path.to_owned(), source }
        }
        let root = state_dir.join("tenants").join(&config.id);
        let dir = root.join("rules");
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        let quarantine_dir = root.join("quarantine");
        let quarantined = read_quarantine(&quarantine_dir);
        let disabled_dir = root.join("disabled");
        let markers = read_disabled(&disabled_dir);
        let loader = RuleLoader::new(sandbox, mapping);
        let mut names = Vec::new();
        for entry in std::fs::read_dir(&dir).map_err(io(&dir))? {
            let entry = entry.map_err(io(&dir))?;
            // Only valid names are rules; anything else is left alone.
            let Some(file_name) = entry.file_name().to_str().map(str::to_owned) else { continue };
            if let Ok(name) = RuleName::parse(&file_name) {
                names.push(name);
            } else if file_name.starts_with(TEMPORARY_PREFIX) {
                // An upload's temporary file, left by a crash before its
                // rename: never live, so nothing to keep.
                if let Err(err) = std::fs::remove_file(entry.path()) {
                    tracing::warn!("{}: {err}", entry.path().display());
                }
            }
        }
        names.sort();
        let mut rules = BTreeMap::new();
        let mut change = Change::new();
        let mut loaded = Vec::new();
        for name in names {
            if let Some(quarantined) = quarantined.get(name.as_str()) {
                tracing::warn!(
                    "tenant {}: rule {name} is quarantined and does not run; upload it again to release it",
                    config.id
                );
                rules.insert(name, Stored { state: RuleState::Quarantined(quarantined.clone()), counters: None });
                continue;
            }
            let path = dir.join(name.as_str());
            let bytes = std::fs::read(&path).map_err(io(&path))?;
            let off = if !config.allows(name.as_str()) {
                Some(disabled_by_config(name.as_str(), &bytes))
            } else {
                markers.get(name.as_str()).cloned()
            };
            if let Some(off) = off {
                tracing::info!("tenant {}: rule {name} does not run: {}", config.id, off.reason);
                rules.insert(name, Stored { state: RuleState::Disabled(off), counters: None });
                continue;
            }
            match load(&loader, &name, &bytes, &stopping).map_err(|err| err.to_string()) {
                Ok(rule) => {
                    loaded.push((summary(&name, rule.info(), bytes.len()), name));
                    change.put(rule);
                }
                Err(reason) => {
                    tracing::error!("tenant {}: rule {name} does not load and will not run: {reason}", config.id);
                    rules.insert(name, Stored { state: RuleState::NotLoaded(reason), counters: None });
                }
            }
        }
        let mut engine = Engine::default();
        // For the metrics' latency histograms (two clock reads per rule call).
        engine.set_timing(true);
        engine.set_correlation_limits(loader.sandbox.limits().correlation.clone());
        engine.set_state_limits(loader.sandbox.limits().state.clone());
        let plan = engine.plan(change);
        if let Some((_, _, reason)) = plan.refused().next() {
            return Err(OpenError::Rules { tenant: config.id.clone(), reason: reason.to_owned() });
        }
        engine.apply(plan);
        // Nothing was refused: every rule put in the change is live.
        for (summary, name) in loaded {
            tracing::info!("tenant {}: loaded {} ({}, {})", config.id, summary.name, summary.uuid, summary.sha256);
            rules.insert(name, Stored { state: RuleState::Live(summary), counters: None });
        }
        let live = Live { engine, stats: Stats::default(), rules, quarantines: 0 };
        Ok(Tenant {
            config,
            dir,
            quarantine_dir,
            disabled_dir,
            loader,
            stopping,
            live: Mutex::new(live),
            retired: AtomicBool::new(false),
            dry_runs: AtomicUsize::new(0),
            requests: AtomicUsize::new(0),
            uploads: AtomicUsize::new(0),
        })
    }

    pub fn id(&self) -> &str {
        &self.config.id
    }

    fn live(&self) -> MutexGuard<'_, Live> {
        // A panic while holding the lock cannot leave `Live` half-updated:
        // every change is checked first and applied in one step.
        self.live.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The lock of a change: refused once a reload retired this instance.
    fn live_for_change(&self) -> Result<MutexGuard<'_, Live>, StoreError> {
        let live = self.live();
        if self.retired.load(Ordering::Acquire) {
            return Err(StoreError::Retired);
        }
        Ok(live)
    }

    /// Locks this instance for a reload that replaces it.
    pub(crate) fn begin_retire(&self) -> Retiring<'_> {
        Retiring { live: self.live(), retired: &self.retired }
    }

    /// The live rules, by name.
    pub fn rules(&self) -> Vec<RuleSummary> {
        self.live().of(|state| match state {
            RuleState::Live(summary) => Some(summary.clone()),
            _ => None,
        })
    }

    /// The rules taken out after too many faults.
    pub fn quarantined(&self) -> Vec<Quarantined> {
        self.live().of(|state| match state {
            RuleState::Quarantined(quarantined) => Some(quarantined.clone()),
            _ => None,
        })
    }

    /// The stored rules that are disabled (through the API or by the
    /// tenants file).
    pub fn disabled(&self) -> Vec<Disabled> {
        self.live().of(|state| match state {
            RuleState::Disabled(off) => Some(off.clone()),
            _ => None,
        })
    }

    pub fn not_loaded(&self) -> Vec<NotLoaded> {
        let live = self.live();
        live.rules
            .iter()
            .filter_map(|(name, stored)| match &stored.state {
                RuleState::NotLoaded(reason) => Some(NotLoaded { name: name.to_string(), reason: reason.clone() }),
                _ => None,
            })
            .collect()
    }

    /// What the event stream did for this tenant since the server started.
    pub fn counters(&self) -> TenantCounters {
        self.live().counters()
    }

    /// Counts on from `earlier`, the counters of the instance this one
    /// replaces (a reload that changed the tenant's settings).
    pub(crate) fn carry_counters(&self, earlier: &TenantCounters) {
        let live = &mut *self.live();
        live.stats.events += earlier.events;
        live.stats.alerts += earlier.alerts;
        live.stats.folded += earlier.folded;
        live.stats.suppressed += earlier.suppressed;
        live.stats.declarative_pass.absorb(&earlier.declarative_pass);
        live.quarantines += earlier.quarantines;
        for (name, counters) in &earlier.rules {
            let id = RuleId::new(name.as_str());
            if live.engine.absorb_stats(&id, counters) {
                continue;
            }
            if let Some(stored) = live.rules.get_mut(name.as_str()) {
                stored.counters.get_or_insert_with(RuleStats::default).absorb(counters);
            }
        }
    }

    /// What a stream does with one event for this tenant: its live rules
    /// evaluate it, under the tenant's lock, so a rule change lands between
    /// two events; each match goes through `policy` to `sink`. Faults are
    /// logged (naming the tenant) and returned, for [`Tenant::record_faults`].
    ///
    /// The event is lent, not copied: rules read it through the host and
    /// cannot change it, and it is back in `event` when this returns, fault
    /// or not, so every tenant of a stream evaluates the same one (a copy
    /// per tenant cost about 2 µs per delivery: `benches/serve.rs`).
    pub fn deliver(
        &self,
        event: &mut dac_event::Event,
        at: Location<'_>,
        policy: &mut AlertPolicy,
        sink: &mut dyn Sink,
    ) -> Result<Delivered, SinkError> {
        let mut faults = FaultLog { tenant: self.id(), faults: Vec::new() };
        let live = &mut *self.live();
        let mut delivery = Delivery::new(&mut live.engine, policy, sink, &mut live.stats);
        let alerted = match delivery.deliver(Input::Event(event), at, &mut faults) {
            Ok(alerted) => alerted,
            Err(dac_engine::DeliveryError::Sink(err)) => return Err(err),
            // A decoded event is never malformed.
            Err(dac_engine::DeliveryError::Malformed { .. }) => false,
        };
        Ok(Delivered { alerted, faults: faults.faults })
    }

    /// The tenant's correlation windows, for its stream's checkpoint
    /// (`None`: no correlation runs).
    pub fn save_state(&self) -> Result<Option<Vec<u8>>, dac_engine::StateError> {
        self.live().engine.save_state()
    }

    /// Takes back windows of [`Tenant::save_state`] stored with the
    /// position its stream resumes at.
    pub fn restore_state(&self, bytes: &[u8]) -> Result<dac_engine::StateRestored, dac_engine::StateError> {
        self.live().engine.restore_state(bytes)
    }

    /// Counts the stream's faults of the named rules (one entry per faulted
    /// evaluation) and takes out of the engine every rule that has reached
    /// `threshold`; returns those.
    pub fn record_faults(&self, faults: &[RuleFault], threshold: u64) -> Vec<Quarantined> {
        let mut live = self.live();
        let mut reached: Vec<(RuleName, String)> = Vec::new();
        for fault in faults {
            let Ok(name) = RuleName::parse(fault.rule.as_str()) else { continue };
            let Some(Stored { state: RuleState::Live(summary), .. }) = live.rules.get_mut(&name) else { continue };
            summary.faults += 1;
            if summary.faults >= threshold && !reached.iter().any(|(n, _)| *n == name) {
                reached.push((name, fault.fault.clone()));
            }
        }
        let mut taken = Vec::new();
        for (name, reason) in reached {
            let Some(summary) = live.summary(name.as_str()).cloned() else { continue };
            let quarantined = Quarantined {
                name: name.to_string(),
                uuid: summary.uuid,
                sha256: summary.sha256,
                faults: summary.faults,
                reason,
            };
            if let Err(err) = write_json_marker(&self.quarantine_dir, &name, &quarantined) {
                tracing::error!("tenant {}: rule {name}: {err}; its quarantine ends at the next restart", self.id());
            }
            live.take_out(&name, RuleState::Quarantined(quarantined.clone()));
            live.quarantines += 1;
            taken.push(quarantined);
        }
        taken
    }

    /// Takes rule `name` out of the engine and keeps it out, across
    /// restarts, until it is enabled; its file stays. `who` is recorded
    /// with it.
    pub fn disable(&self, name: &str, who: &str) -> Result<Switched<Disabled>, StoreError> {
        let name = RuleName::parse(name)?;
        let mut live = self.live_for_change()?;
        let Some(stored) = live.rules.get(&name) else { return Err(StoreError::NotFound(name.to_string())) };
        let (uuid, sha256) = match &stored.state {
            RuleState::Disabled(off) => return Ok(Switched { changed: false, rule: off.clone() }),
            RuleState::Quarantined(_) => {
                return Err(StoreError::Conflict(format!(
                    "rule {:?} is quarantined, so it does not run; upload it again (fixed) to release it, or delete it",
                    name.as_str()
                )))
            }
            RuleState::Live(summary) => (Some(summary.uuid.clone()), Some(summary.sha256.clone())),
            RuleState::NotLoaded(_) => (None, Some(content_hash(&self.read(&name)?))),
        };
        let off = Disabled {
            name: name.to_string(),
            uuid,
            sha256,
            who: Some(who.into()),
            time: Some(crate::audit::now_rfc3339()),
            reason: DISABLED_BY_API.into(),
        };
        write_json_marker(&self.disabled_dir, &name, &off)?;
        live.take_out(&name, RuleState::Disabled(off.clone()));
        Ok(Switched { changed: true, rule: off })
    }

    /// Puts a disabled rule back into the engine, after checking it loads
    /// and fits with the others (422 otherwise: it stays disabled). A
    /// quarantined rule is released by uploading it again, not here; a rule
    /// the tenants file leaves out is governed by that file.
    pub fn enable(&self, name: &str) -> Result<Switched<RuleSummary>, StoreError> {
        let name = RuleName::parse(name)?;
        let mut live = self.live_for_change()?;
        let Some(stored) = live.rules.get(&name) else { return Err(StoreError::NotFound(name.to_string())) };
        match &stored.state {
            RuleState::Live(summary) => return Ok(Switched { changed: false, rule: summary.clone() }),
            RuleState::Quarantined(_) => {
                return Err(StoreError::Conflict(format!(
                    "rule {:?} is quarantined, not disabled; upload it again (fixed) to release it",
                    name.as_str()
                )))
            }
            RuleState::NotLoaded(reason) => {
                return Err(StoreError::Conflict(format!(
                    "rule {:?} is not disabled; it did not load: {reason}; upload it again",
                    name.as_str()
                )))
            }
            RuleState::Disabled(_) => {}
        }
        if !self.config.allows(name.as_str()) {
            return Err(StoreError::Conflict(format!(
                "rule {:?} is {DISABLED_BY_CONFIG}, which governs this tenant's rules: \
                 the tenants file must name it for it to run",
                name.as_str()
            )));
        }
        let bytes = self.read(&name)?;
        let rule = load(&self.loader, &name, &bytes, &self.stopping)?;
        let summary = summary(&name, rule.info(), bytes.len());
        let mut change = Change::new();
        match stored.counters.clone() {
            Some(counters) => change.put_counting_from(rule, counters),
            None => change.put(rule),
        };
        let plan = live.engine.plan(change);
        refused(&plan)?;
        remove_marker(&self.disabled_dir, &name)?;
        live.engine.apply(plan);
        live.rules.insert(name, Stored { state: RuleState::Live(summary.clone()), counters: None });
        Ok(Switched { changed: true, rule: summary })
    }

    /// One rule's summary and stored bytes.
    pub fn get(&self, name: &str) -> Result<(RuleSummary, Vec<u8>), StoreError> {
        let name = RuleName::parse(name)?;
        let live = self.live();
        let summary = live.summary(name.as_str()).cloned().ok_or_else(|| StoreError::NotFound(name.to_string()))?;
        let bytes = self.read(&name)?;
        Ok((summary, bytes))
    }

    /// Runs `f` on the live engine.
    pub fn with_engine<R>(&self, f: impl FnOnce(&mut Engine) -> R) -> R {
        f(&mut self.live().engine)
    }

    /// Runs `f` on the live engine and the tenant's counters, under the
    /// tenant's lock.
    pub fn with_engine_and_stats<R>(&self, f: impl FnOnce(&mut Engine, &mut Stats) -> R) -> R {
        let live = &mut *self.live();
        f(&mut live.engine, &mut live.stats)
    }

    /// Checks `bytes` as rule `name` and, if it loads and fits with the
    /// tenant's other rules, stores it and makes it live.
    /// Checks, compiles and stores a rule, and puts it live. `cancel` (the
    /// request's: its client went away) stops a compilation in progress,
    /// as the server stopping does.
    pub fn put(&self, name: &str, bytes: &[u8], cancel: &Cancel) -> Result<Put, StoreError> {
        let name = RuleName::parse(name)?;
        let limits = &self.config.limits;
        if bytes.len() > limits.max_rule_bytes {
            return Err(StoreError::TooLarge { size: bytes.len(), limit: limits.max_rule_bytes });
        }
        let _slot = Slot::take(&self.uploads, limits.max_concurrent_uploads)
            .ok_or(StoreError::Busy { what: "uploads", limit: limits.max_concurrent_uploads })?;
        // Checked before compiling too, so a refused upload costs nothing.
        {
            let live = self.live();
            if !live.rules.contains_key(&name) && live.stored() >= limits.max_rules {
                return Err(StoreError::TooManyRules { limit: limits.max_rules });
            }
        }
        // Compiled before taking the lock: the tenant's engine keeps
        // running (and answering) while a large component compiles.
        let new = load(&self.loader, &name, bytes, cancel);
        let stored = self.put_compiled(name, bytes, new);
        if stored.is_err() {
            // Refused after compiling: keep nothing of it in the cache.
            self.loader.sandbox.forget(bytes);
        }
        stored
    }

    fn put_compiled(
        &self,
        name: RuleName,
        bytes: &[u8],
        new: Result<LoadedRule, StoreError>,
    ) -> Result<Put, StoreError> {
        let limits = &self.config.limits;
        let mut live = self.live_for_change()?;
        let before = live.rules.get(&name).cloned();
        let created = before.is_none();
        if created && live.stored() >= limits.max_rules {
            return Err(StoreError::TooManyRules { limit: limits.max_rules });
        }
        let new = new?;
        let summary = summary(&name, new.info(), bytes.len());
        let mut change = Change::new();
        match before.as_ref().and_then(|stored| stored.counters.clone()) {
            Some(counters) => change.put_counting_from(new, counters),
            None => change.put(new),
        };
        let plan = live.engine.plan(change);
        refused(&plan)?;
        // A disabled rule's new version is checked exactly as a live one,
        // stored, and stays disabled (so do uploads the tenants file leaves
        // out): the live engine is not touched.
        let stays_off = match before.as_ref().map(|stored| &stored.state) {
            _ if !self.config.allows(name.as_str()) => Some(disabled_by_config(name.as_str(), bytes)),
            Some(RuleState::Disabled(off)) => {
                Some(Disabled { uuid: Some(summary.uuid.clone()), sha256: Some(summary.sha256.clone()), ..off.clone() })
            }
            _ => None,
        };
        if let Some(mut off) = stays_off {
            if off.who.is_some() {
                write_json_marker(&self.disabled_dir, &name, &off)?;
            } else {
                off.uuid = Some(summary.uuid.clone());
            }
            self.write(&name, bytes)?;
            self.release(&name)?;
            let counters = before.and_then(|stored| stored.counters);
            live.rules.insert(name, Stored { state: RuleState::Disabled(off.clone()), counters });
            return Ok(Put { created, rule: summary, disabled: Some(off) });
        }
        self.write(&name, bytes)?;
        // A new upload is a new version: its fault count starts at zero,
        // and it is released from quarantine.
        self.release(&name)?;
        live.engine.apply(plan);
        live.rules.insert(name, Stored { state: RuleState::Live(summary.clone()), counters: None });
        Ok(Put { created, rule: summary, disabled: None })
    }

    /// Removes rule `name` from the live set and from disk; returns what
    /// was live (`None` for a rule that was not).
    pub fn delete(&self, name: &str) -> Result<Option<RuleSummary>, StoreError> {
        let name = RuleName::parse(name)?;
        let mut live = self.live_for_change()?;
        let Some(stored) = live.rules.get(&name) else { return Err(StoreError::NotFound(name.to_string())) };
        let removed = match &stored.state {
            RuleState::Live(summary) => Some(summary.clone()),
            _ => None,
        };
        let was_disabled = matches!(stored.state, RuleState::Disabled(_));
        let path = self.dir.join(name.as_str());
        std::fs::remove_file(&path).map_err(|source| io(&path, source))?;
        self.release(&name)?;
        if was_disabled {
            remove_marker(&self.disabled_dir, &name)?;
        }
        if removed.is_some() {
            let mut change = Change::new();
            change.remove(RuleId::new(name.as_str()));
            live.engine.change(change);
        }
        // A rule uploaded again under this name starts counting afresh.
        live.rules.remove(&name);
        Ok(removed)
    }

    /// A slot for one more API request of the tenant's, if it has fewer
    /// than `max_concurrent_requests` in progress.
    pub fn request_slot(&self) -> Option<Slot<'_>> {
        Slot::take(&self.requests, self.config.limits.max_concurrent_requests)
    }

    /// Evaluates posted events (NDJSON or a JSON array) against the
    /// tenant's live rules, or only rule `only`, and returns the alerts they
    /// would raise. Nothing is written, and the live engine is not used: a
    /// fresh one is built from the same files, so a stateful rule's live
    /// instance never sees dry-run events.
    ///
    /// Bounded by the tenant's dry-run limits: events, time, output bytes
    /// and dry runs at once.
    pub fn dry_run(&self, only: Option<&str>, events: Vec<u8>) -> Result<DryRun, StoreError> {
        let limits = &self.config.limits;
        let _slot = Slot::take(&self.dry_runs, limits.max_concurrent_dry_runs)
            .ok_or(StoreError::Busy { what: "dry runs", limit: limits.max_concurrent_dry_runs })?;
        let mut stored = Vec::new();
        {
            let live = self.live();
            let names: Vec<RuleName> = match only {
                Some(name) => {
                    let name = RuleName::parse(name)?;
                    match live.rules.get(&name).map(|stored| &stored.state) {
                        Some(RuleState::Disabled(_)) => {
                            return Err(StoreError::Conflict(format!(
                                "rule {:?} is disabled; enable it to dry-run it",
                                name.as_str()
                            )))
                        }
                        Some(RuleState::Live(_)) => vec![name],
                        _ => return Err(StoreError::NotFound(name.to_string())),
                    }
                }
                None => live
                    .rules
                    .iter()
                    .filter(|(_, stored)| matches!(stored.state, RuleState::Live(_)))
                    .map(|(name, _)| name.clone())
                    .collect(),
            };
            for name in names {
                stored.push((self.read(&name)?, name));
            }
        }
        // Loaded outside the tenant's lock: its stream and its other
        // requests do not wait for this.
        let mut change = Change::new();
        for (bytes, name) in stored {
            change.put(load(&self.loader, &name, &bytes, &self.stopping)?);
        }
        let mut engine = Engine::default();
        let plan = engine.plan(change);
        refused(&plan)?;
        engine.apply(plan);
        dry_run(engine, events, limits)
    }

    /// Ends `name`'s quarantine, marker and all (an upload or a delete).
    fn release(&self, name: &RuleName) -> Result<(), StoreError> {
        remove_marker(&self.quarantine_dir, name)
    }

    fn read(&self, name: &RuleName) -> Result<Vec<u8>, StoreError> {
        let path = self.dir.join(name.as_str());
        std::fs::read(&path).map_err(|source| io(&path, source))
    }

    /// Writes aside, syncs, and renames in: a reader (or a restart) sees
    /// the old file or the new one, never part of one.
    fn write(&self, name: &RuleName, bytes: &[u8]) -> Result<(), StoreError> {
        write_aside(&self.dir, name, bytes)
    }
}

/// Refuses a plan that refuses anything: a tenant's changes are one rule
/// at a time, and all or nothing.
fn refused(plan: &dac_engine::Plan) -> Result<(), StoreError> {
    match plan.refused().next() {
        Some((_, _, reason)) => Err(StoreError::Invalid(reason.to_owned())),
        None => Ok(()),
    }
}

/// Collects a tenant's faults on the stream, and logs them naming it.
struct FaultLog<'a> {
    tenant: &'a str,
    faults: Vec<RuleFault>,
}

impl Observer for FaultLog<'_> {
    fn notice(&mut self, notice: &Notice<'_>) {
        if let Notice::Fault { rule, fault, .. } = notice {
            tracing::warn!("tenant {}: {notice}", self.tenant);
            self.faults.push(RuleFault { rule: rule.id.clone(), fault: fault.to_string() });
        }
    }
}

/// The quarantine markers in `dir` (absent: none). A marker that does not
/// parse still quarantines its rule: erring on the side of not running a
/// rule that faulted.
fn read_quarantine(dir: &Path) -> BTreeMap<String, Quarantined> {
    read_markers(dir, |name| Quarantined {
        name: name.into(),
        uuid: String::new(),
        sha256: String::new(),
        faults: 0,
        reason: "quarantined (the marker did not parse)".into(),
    })
}

/// The API's disable markers in `dir` (absent: none). A marker that does
/// not parse still disables its rule.
fn read_disabled(dir: &Path) -> BTreeMap<String, Disabled> {
    read_markers(dir, |name| Disabled {
        name: name.into(),
        uuid: None,
        sha256: None,
        who: None,
        time: None,
        reason: format!("{DISABLED_BY_API} (the marker did not parse)"),
    })
}

/// The JSON markers in `dir`, by rule name; `unreadable` stands for one
/// that does not parse (its rule stays marked).
fn read_markers<T: serde::de::DeserializeOwned>(dir: &Path, unreadable: impl Fn(&str) -> T) -> BTreeMap<String, T> {
    let mut found = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir(dir) else { return found };
    for entry in entries.flatten() {
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else { continue };
        if RuleName::parse(&name).is_err() {
            continue;
        }
        let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
        let marker = serde_json::from_str(&text).unwrap_or_else(|_| unreadable(&name));
        found.insert(name, marker);
    }
    found
}

fn disabled_by_config(name: &str, bytes: &[u8]) -> Disabled {
    Disabled {
        name: name.into(),
        uuid: None,
        sha256: Some(content_hash(bytes)),
        who: None,
        time: None,
        reason: DISABLED_BY_CONFIG.into(),
    }
}

fn content_hash(bytes: &[u8]) -> String {
    use sha2::Digest;
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)))
}

/// Writes `value` as `dir/name`, aside then renamed in.
fn write_json_marker(dir: &Path, name: &RuleName, value: &impl Serialize) -> Result<(), StoreError> {
    std::fs::create_dir_all(dir).map_err(|source| io(dir, source))?;
    let json = serde_json::to_vec(value).map_err(|err| io(&dir.join(name.as_str()), std::io::Error::other(err)))?;
    write_aside(dir, name, &json)
}

/// Writes `dir/name` aside, syncs, and renames it in.
fn write_aside(dir: &Path, name: &RuleName, bytes: &[u8]) -> Result<(), StoreError> {
    let path = dir.join(name.as_str());
    let mut file =
        tempfile::Builder::new().prefix(TEMPORARY_PREFIX).tempfile_in(dir).map_err(|source| io(dir, source))?;
    file.write_all(bytes).and_then(|()| file.as_file().sync_all()).map_err(|source| io(&path, source))?;
    file.persist(&path).map_err(|err| io(&path, err.error))?;
    Ok(())
}

fn remove_marker(dir: &Path, name: &RuleName) -> Result<(), StoreError> {
    let marker = dir.join(name.as_str());
    match std::fs::remove_file(&marker) {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(io(&marker, source)),
    }
}

/// Uploads are written under this prefix, then renamed; a rule name cannot
/// start with a dot, so the two never mix.
const TEMPORARY_PREFIX: &str = ".upload-";

fn io(path: &Path, source: std::io::Error) -> StoreError {
    StoreError::Io { context: path.display().to_string(), source }
}

/// What messages call an uploaded rule: its name and the extension of its
/// kind, without the state directory, so messages and alerts never reveal
/// where the server keeps its files. (Its identity is its name alone.)
fn label(name: &RuleName, bytes: &[u8]) -> PathBuf {
    let extension = if bytes.starts_with(b"\0asm") { "wasm" } else { "yaml" };
    PathBuf::from(format!("{name}.{extension}"))
}

fn load(loader: &RuleLoader, name: &RuleName, bytes: &[u8], cancel: &Cancel) -> Result<LoadedRule, StoreError> {
    loader.load_bytes_cancellable(RuleId::new(name.as_str()), &label(name, bytes), bytes, cancel).map_err(|err| {
        match err {
            LoadError::Cancelled { .. } => StoreError::Cancelled,
            err => StoreError::Invalid(err.to_string()),
        }
    })
}

fn summary(name: &RuleName, info: &dac_engine::RuleInfo, bytes: usize) -> RuleSummary {
    RuleSummary {
        name: name.to_string(),
        kind: info.kind,
        title: info.name.clone(),
        uuid: info.uuid.clone(),
        version: info.version.clone(),
        severity: info.severity,
        sha256: format!("sha256:{}", info.sha256),
        bytes,
        faults: 0,
    }
}

/// Collects a run's notices as text.
#[derive(Default)]
struct Collect {
    faults: Vec<String>,
    more_faults: u64,
    malformed: Vec<String>,
    more_malformed: u64,
}

impl Observer for Collect {
    fn notice(&mut self, notice: &Notice<'_>) {
        let (list, more) = match notice {
            Notice::Fault { .. } => (&mut self.faults, &mut self.more_faults),
            Notice::Malformed { .. } | Notice::RepairedUtf8 { .. } => (&mut self.malformed, &mut self.more_malformed),
            Notice::Rules(_) => return,
        };
        if list.len() < DRY_RUN_NOTICES {
            list.push(notice.to_string());
        } else {
            *more += 1;
        }
    }
}

/// A dry run's input, cut off at its limits: the events it may evaluate
/// and the time it may take. Which limit stopped it is kept for the answer.
struct Bounded<S> {
    inner: S,
    events: u64,
    max_events: u64,
    deadline: Instant,
    max_time: Duration,
    stopped: Option<String>,
}

impl<S: Source> Source for Bounded<S> {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn next_event(&mut self) -> Option<Result<Incoming<'_>, SourceError>> {
        if self.events >= self.max_events {
            self.stopped = Some(format!("more than {} events; this tenant's max_dry_run_events", self.max_events));
            return None;
        }
        if Instant::now() >= self.deadline {
            self.stopped = Some(format!("longer than {} ms; this tenant's max_dry_run_ms", self.max_time.as_millis()));
            return None;
        }
        let next = self.inner.next_event();
        if matches!(next, Some(Ok(_))) {
            self.events += 1;
        }
        next
    }
}

/// The dry run's alerts, refused past `max` bytes.
struct Capped {
    out: Vec<u8>,
    max: usize,
    over: bool,
}

impl std::io::Write for Capped {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        if self.out.len().saturating_add(bytes.len()) > self.max {
            self.over = true;
            return Err(std::io::Error::other("over the dry run's output limit"));
        }
        self.out.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn dry_run(mut engine: Engine, events: Vec<u8>, limits: &TenantLimits) -> Result<DryRun, StoreError> {
    let max_time = Duration::from_millis(limits.max_dry_run_ms);
    let mut source = Bounded {
        inner: ReplaySource::from_reader("dry-run", std::io::Cursor::new(events), None),
        events: 0,
        max_events: limits.max_dry_run_events,
        deadline: Instant::now() + max_time,
        max_time,
        stopped: None,
    };
    let mut out = Capped { out: Vec::new(), max: limits.max_dry_run_output_bytes, over: false };
    let mut stats = Stats::default();
    let mut observer = Collect::default();
    let result = dac_engine::run(
        &mut source,
        &mut engine,
        &mut JsonLinesSink::new(&mut out),
        &mut stats,
        &mut observer,
        &dac_engine::Options::default(),
    );
    if out.over {
        return Err(StoreError::DryRunLimit(format!(
            "its alerts are more than {} bytes; this tenant's max_dry_run_output_bytes",
            limits.max_dry_run_output_bytes
        )));
    }
    result.map_err(|err| StoreError::Invalid(err.to_string()))?;
    if let Some(stopped) = source.stopped {
        return Err(StoreError::DryRunLimit(stopped));
    }
    let alerts =
        String::from_utf8_lossy(&out.out).split('\n').filter(|line| !line.is_empty()).map(str::to_owned).collect();
    Ok(DryRun {
        events: stats.events,
        alerts,
        faults: observer.faults,
        more_faults: observer.more_faults,
        malformed: observer.malformed,
        more_malformed: observer.more_malformed,
    })
}
