//! The detection engine: every loaded rule against every event, and the
//! one way its rule set changes while it runs.
//!
//! An event is parsed at most once for all rules; the literal index decides
//! which rules are entered at all, and a document no rule could fire on is
//! only validated, never parsed into a tree.
//!
//! Rules are known by their [`RuleId`]. Every change to a running rule set
//! — a hot reload of `dac watch`, an upload, a delete, a disable or enable,
//! a quarantine in `dac serve` — is one [`Change`]: checked whole by
//! [`Engine::plan`] (uuid clashes, the declarative rules compiled
//! together), then swapped in by [`Engine::apply`] between two events. A
//! rule's counters belong to its id: a new version carries them on, a
//! removed rule hands them back.

use crate::component::RuleComponent;
use crate::declarative::{self, DeclarativeRule};
use crate::error::LoadError;
use crate::loader::LoadedRule;
use crate::prefilter::LiteralIndex;
use crate::rule::{Fault, Finding, RuleId, RuleInfo};
use crate::state::{lock_state, SharedState};
use crate::stats::{RuleStats, Stats};
use dac_detect::{CorrelationLimits, CorrelationStats, Correlator, Hit, Match, RuleSet, SavedCorrelator, Scratch};
use dac_event::{Decoding, Event, ParseError};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

/// What one rule made of one event, when it was anything but "no match".
#[derive(Debug)]
pub struct Outcome {
    /// The rule's position in [`Engine::infos`] while this event is
    /// evaluated (a change lands between events, never during one).
    pub rule: usize,
    pub result: Result<Vec<Finding>, Fault>,
}

/// One document of a batch ([`Engine::evaluate_batch`]).
pub enum Document<'a> {
    /// JSON not parsed yet.
    Json(&'a [u8]),
    /// A decoded event (a MongoDB change).
    Event(Event),
}

/// What the rules made of one document of a batch.
#[derive(Debug)]
pub struct Evaluated {
    /// As [`Engine::evaluate_json`] returns it: the event when a rule had
    /// to see it.
    pub event: Result<Option<(Event, Decoding)>, ParseError>,
    /// Every rule's outcome other than "no match", in rule order.
    pub outcomes: Vec<Outcome>,
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("{first} and {second} both declare uuid {uuid}; alerts could not tell them apart")]
    DuplicateUuid { uuid: String, first: String, second: String },
    #[error("{file}: rule id {id} is already used by {other}")]
    DuplicateId { id: RuleId, file: String, other: String },
    #[error("compiling the YAML/Sigma rules: {0}")]
    Compile(#[from] dac_detect::DetectError),
    /// A correlation names a rule that is not loaded, itself, or a cycle
    /// (`FILE:LINE: correlation.rules: …`).
    #[error("{0}")]
    Correlation(String),
}

/// What a change did to the running rule set, rule by rule.
#[derive(Debug)]
pub enum RuleChange {
    Added(Arc<RuleInfo>),
    Replaced {
        old: Arc<RuleInfo>,
        new: Arc<RuleInfo>,
    },
    Removed(Arc<RuleInfo>),
    /// A rule that did not load, or would clash with another rule; the
    /// version running under its id before, if any, keeps running.
    Refused {
        id: RuleId,
        file: PathBuf,
        reason: String,
        kept: Option<Arc<RuleInfo>>,
    },
}

impl std::fmt::Display for RuleChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RuleChange::Added(info) => {
                write!(f, "loaded {} (uuid {}, sha256 {})", info.file_name(), info.uuid, info.sha256)
            }
            RuleChange::Replaced { old, new } => write!(
                f,
                "reloaded {} (uuid {}, sha256 {}; was uuid {}, sha256 {})",
                new.file_name(),
                new.uuid,
                new.sha256,
                old.uuid,
                old.sha256
            ),
            RuleChange::Removed(info) => write!(f, "removed {} (uuid {})", info.file_name(), info.uuid),
            RuleChange::Refused { reason, kept: Some(kept), .. } => {
                write!(f, "{reason}; keeping the previous version of {} (sha256 {})", kept.file_name(), kept.sha256)
            }
            RuleChange::Refused { reason, kept: None, .. } => write!(f, "{reason}; not loaded"),
        }
    }
}

/// A change to a running rule set: rules put in (added, or in place of the
/// rule with the same id), rules taken out, and rules that did not load
/// (reported as refused; what runs under their id stays).
#[derive(Default)]
pub struct Change {
    put: Vec<(LoadedRule, Option<RuleStats>)>,
    remove: Vec<RuleId>,
    failed: Vec<(RuleId, LoadError)>,
    compiled: Option<Precompiled>,
}

/// The declarative rules an engine will run after a change, compiled off
/// the hot path, and what they were compiled from: (id, SHA-256) in the
/// engine's order (by file, then id). The engine uses the set when its own
/// declarative rules after the change are exactly these.
pub struct Precompiled {
    pub rules: Vec<(RuleId, String)>,
    pub set: RuleSet,
}

impl Precompiled {
    /// Compiles `rules` (in the engine's order: by file, then id) into the
    /// set an engine will run after a change, off the hot path.
    pub fn compile(rules: &[DeclarativeRule]) -> Result<Precompiled, dac_detect::DetectError> {
        let rules: Vec<DeclarativeRule> = rules.iter().flat_map(DeclarativeRule::documents).collect();
        let set = declarative::compile(&rules)?;
        Ok(Precompiled { rules: rules.iter().map(|r| (r.info.id.clone(), r.info.sha256.clone())).collect(), set })
    }
}

impl Change {
    pub fn new() -> Change {
        Change::default()
    }

    /// Adds `rule`, or puts it in place of the rule with its id (whose
    /// counters it carries on).
    pub fn put(&mut self, rule: LoadedRule) -> &mut Change {
        self.put.push((rule, None));
        self
    }

    /// As [`Change::put`], counting on from `counters` (a rule coming back
    /// after it was taken out).
    pub fn put_counting_from(&mut self, rule: LoadedRule, counters: RuleStats) -> &mut Change {
        self.put.push((rule, Some(counters)));
        self
    }

    /// Takes the rule with this id out; its counters come back in
    /// [`Applied::removed`].
    pub fn remove(&mut self, id: RuleId) -> &mut Change {
        self.remove.push(id);
        self
    }

    /// Reports that the new version of rule `id` did not load: refused,
    /// and whatever runs under that id keeps running.
    pub fn failed(&mut self, id: RuleId, error: LoadError) -> &mut Change {
        self.failed.push((id, error));
        self
    }

    /// The declarative set compiled off the hot path (see [`Precompiled`]).
    pub fn precompiled(&mut self, compiled: Precompiled) -> &mut Change {
        self.compiled = Some(compiled);
        self
    }

    pub fn is_empty(&self) -> bool {
        self.put.is_empty() && self.remove.is_empty() && self.failed.is_empty()
    }
}

/// A [`Change`] checked against the running rules, ready to be applied.
pub struct Plan {
    /// The engine's generation the plan was made for.
    generation: u64,
    change: Change,
    /// Ids whose part of the change is refused, with why.
    refused: Vec<(RuleId, PathBuf, String)>,
    /// The declarative set after the change, when it changes: `None`
    /// inside when no declarative rule is left.
    set: Option<Option<RuleSet>>,
}

impl Plan {
    /// The parts of the change that will not be applied: (rule id, file,
    /// reason). Applying the plan applies the rest.
    pub fn refused(&self) -> impl Iterator<Item = (&RuleId, &PathBuf, &str)> {
        self.refused.iter().map(|(id, file, reason)| (id, file, reason.as_str()))
    }

    fn refuses(&self, id: &RuleId) -> bool {
        self.refused.iter().any(|(refused, _, _)| refused == id)
    }
}

/// One stored state for [`Engine::restore_partitioned_state`], and which
/// partition key values to take from it.
pub type StatePart<'a> = (&'a [u8], &'a dyn Fn(&str) -> bool);

/// What [`Engine::restore_state`] took back.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StateRestored {
    /// Correlations whose windows were restored, with their group keys
    /// and estimated bytes.
    pub correlations: usize,
    pub groups: usize,
    pub bytes: usize,
    /// Saved correlations that no longer run as saved (changed or
    /// removed since): their windows were dropped.
    pub dropped: usize,
    /// Running correlations that had no saved windows (new or changed
    /// since): they start empty.
    pub fresh: Vec<String>,
    /// The code rules' keyed state taken back: keys, estimated bytes, and
    /// keys of rules no longer loaded (dropped).
    pub rule_keys: u64,
    pub rule_bytes: u64,
    pub rule_keys_dropped: u64,
}

impl std::fmt::Display for StateRestored {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "restored the windows of {} correlations ({} group keys, ~{} bytes)",
            self.correlations, self.groups, self.bytes
        )?;
        if self.dropped > 0 {
            write!(
                f,
                "; dropped the windows of {} correlations changed or removed since they were stored",
                self.dropped
            )?;
        }
        if !self.fresh.is_empty() {
            write!(f, "; starting empty (new or changed since): {}", self.fresh.join(", "))?;
        }
        write!(f, "; restored {} keys of the rules' state (~{} bytes)", self.rule_keys, self.rule_bytes)?;
        if self.rule_keys_dropped > 0 {
            write!(f, ", dropped {} keys of rules no longer loaded", self.rule_keys_dropped)?;
        }
        Ok(())
    }
}

/// What [`Engine::apply`] did.
#[derive(Default)]
pub struct Applied {
    /// Rule by rule, in the order of the change: removals, puts, refusals.
    pub changes: Vec<RuleChange>,
    /// The rules taken out (removed, or replaced by nothing), with their
    /// counters.
    pub removed: Vec<(Arc<RuleInfo>, RuleStats)>,
}

/// Rules refused, with their files and the reasons.
type Refusals = Vec<(RuleId, PathBuf, String)>;

/// Why a correlation cannot run on one partition of a stream split by
/// `field`, and the fix.
fn spanning_reason(info: &RuleInfo, field: &str) -> String {
    format!(
        "{} ({}): a correlation whose group-by does not include `{field}` (the partition key): its windows would be split across workers; add `{field}` to its group-by",
        info.file.display(),
        info.name
    )
}

/// Why a code rule that keeps state cannot run on a stream partitioned by
/// another field than the host.
fn stateful_reason(info: &RuleInfo, field: &str) -> String {
    format!(
        "{} ({}): keeps state, which is scoped by `{}`, so the partition key `{field}` would split it across workers",
        info.file.display(),
        info.name,
        crate::state::PARTITION_FIELD
    )
}

fn is_correlation(rule: &LoadedRule) -> bool {
    matches!(rule, LoadedRule::Declarative(d) if d.documents().any(|d| d.rule.correlation().is_some()))
}

/// The infos of the rules a loaded file puts in (a declarative file may
/// hold several).
fn infos_of(rule: &LoadedRule) -> Vec<Arc<RuleInfo>> {
    match rule {
        LoadedRule::Component(c) => vec![c.info().clone()],
        LoadedRule::Declarative(d) => d.documents().map(|d| d.info).collect(),
    }
}

/// Whether a change's removals take rule `id` out (a file's removal takes
/// all its rules).
fn removes(remove: &[RuleId], id: &RuleId) -> bool {
    remove.iter().any(|r| declarative::of_file(id, r))
}

/// A sandboxed component and what it has done.
struct ComponentRule {
    rule: RuleComponent,
    stats: RuleStats,
}

/// A declarative rule and what it has done.
struct DeclaredRule {
    rule: DeclarativeRule,
    stats: RuleStats,
}

pub struct Engine {
    /// The sandboxed components, in the order they were added; their
    /// positions come first.
    components: Vec<ComponentRule>,
    /// The declarative rules, by file then id; positions after the
    /// components.
    declarative: Vec<DeclaredRule>,
    /// `declarative` compiled into one set (`None` when there are none).
    /// Shared with the engine's replicas (other threads), as are the
    /// literal indexes: one copy of the automata in the caches.
    set: Option<Arc<RuleSet>>,
    scratch: Scratch,
    matches: Vec<Match>,
    /// Some declarative rule is prefiltered by folded literals, which the
    /// raw scan may only trust for ASCII documents.
    folded_literals: bool,
    infos: Vec<Arc<RuleInfo>>,
    /// Every rule's literals, scanned for in a document's raw bytes.
    index: Arc<LiteralIndex>,
    /// The components' literals alone, scanned for in a parsed event's
    /// fields (the declarative set filters its own fields).
    parsed_index: Arc<LiteralIndex>,
    /// Whether scanning raw bytes pays, by how often it rules a document out.
    raw_gauge: RawGauge,
    /// With declarative rules only: the top-level keys they read, the only
    /// ones parsed before a rule matches ([`RuleSet::top_level_keys`]).
    projection: Option<Vec<String>>,
    use_prefilter: bool,
    /// Time every call into a rule (two clock reads per call).
    timing: bool,
    candidates: Vec<bool>,
    /// Bumped by every applied change.
    generation: u64,
    /// The Sigma correlations' windows (empty in a replica: correlations
    /// are fed by the thread that delivers, in stream order).
    correlator: Correlator,
    correlation_limits: CorrelationLimits,
    /// The field a partitioned stream splits hosts by
    /// ([`Engine::set_partition_key`]): rules whose state would span
    /// partitions are refused.
    partition_key: Option<String>,
    /// The code rules' keyed state (`dac:rule/state`), shared by every
    /// replica: a host's events all go to one worker, which alone touches
    /// that host's keys.
    state: SharedState,
}

impl Default for Engine {
    fn default() -> Engine {
        Engine {
            components: Vec::new(),
            declarative: Vec::new(),
            set: None,
            scratch: Scratch::default(),
            matches: Vec::new(),
            folded_literals: false,
            infos: Vec::new(),
            index: Arc::new(LiteralIndex::new(std::iter::empty())),
            parsed_index: Arc::new(LiteralIndex::new(std::iter::empty())),
            raw_gauge: RawGauge::default(),
            projection: None,
            use_prefilter: true,
            timing: false,
            candidates: Vec::new(),
            generation: 0,
            correlator: Correlator::default(),
            correlation_limits: CorrelationLimits::default(),
            partition_key: None,
            state: SharedState::default(),
        }
    }
}

impl Engine {
    /// An engine of components only.
    pub fn new(rules: Vec<RuleComponent>) -> Result<Engine, EngineError> {
        Engine::with_declarative(rules, Vec::new())
    }

    /// An engine of components and declarative rules (seed YAML, Sigma);
    /// the latter are compiled into one set, evaluated in one pass per
    /// event. Positions (in [`Engine::infos`] and [`Outcome::rule`]) list
    /// the components first, then the declarative rules ordered by file.
    pub fn with_declarative(
        rules: Vec<RuleComponent>,
        mut declarative: Vec<DeclarativeRule>,
    ) -> Result<Engine, EngineError> {
        declarative = declarative.iter().flat_map(DeclarativeRule::documents).collect();
        declarative.sort_by(|a, b| (&a.info.file, &a.info.id).cmp(&(&b.info.file, &b.info.id)));
        let all: Vec<&Arc<RuleInfo>> =
            rules.iter().map(|r| r.info()).chain(declarative.iter().map(|r| &r.info)).collect();
        for (i, a) in all.iter().enumerate() {
            if let Some(b) = all[..i].iter().find(|b| b.uuid == a.uuid) {
                return Err(EngineError::DuplicateUuid {
                    uuid: a.uuid.clone(),
                    first: b.file.display().to_string(),
                    second: a.file.display().to_string(),
                });
            }
            if let Some(b) = all[..i].iter().find(|b| b.id == a.id) {
                return Err(EngineError::DuplicateId {
                    id: a.id.clone(),
                    file: a.file.display().to_string(),
                    other: b.file.display().to_string(),
                });
            }
        }
        let set = if declarative.is_empty() { None } else { Some(Arc::new(declarative::compile(&declarative)?)) };
        let components: Vec<&Arc<RuleInfo>> = rules.iter().map(|r| r.info()).collect();
        let (_, unresolved) =
            crate::correlation::correlator(&components, &declarative.iter().collect::<Vec<_>>(), &Default::default());
        if !unresolved.is_empty() {
            let reasons: Vec<String> = unresolved.into_iter().map(|(_, _, reason)| reason).collect();
            return Err(EngineError::Correlation(reasons.join("\n")));
        }
        let mut engine = Engine {
            components: rules.into_iter().map(|rule| ComponentRule { rule, stats: RuleStats::default() }).collect(),
            declarative: declarative
                .into_iter()
                .map(|rule| DeclaredRule { rule, stats: RuleStats::default() })
                .collect(),
            set,
            ..Engine::default()
        };
        engine.rebuild();
        Ok(engine)
    }

    /// Recomputes what derives from the rule lists (once `set` matches
    /// `declarative`).
    fn rebuild(&mut self) {
        let declarative: Vec<DeclarativeRule> = self.declarative.iter().map(|d| d.rule.clone()).collect();
        let declarative = match &self.set {
            Some(set) => declarative::with_prefilters(&declarative, set),
            None => Vec::new(),
        };
        self.folded_literals = declarative.iter().any(|info| declarative::needs_ascii(info));
        self.infos = self.components.iter().map(|c| c.rule.info().clone()).chain(declarative).collect();
        self.index = Arc::new(LiteralIndex::new(self.infos.iter().map(|i| i.as_ref())));
        self.parsed_index = Arc::new(LiteralIndex::new(self.infos[..self.components.len()].iter().map(|i| i.as_ref())));
        self.raw_gauge = RawGauge::default();
        self.projection = match &self.set {
            Some(set) if self.components.is_empty() => set.top_level_keys(),
            _ => None,
        };
        self.candidates = vec![false; self.infos.len()];
        let mut correlator = self.fresh_correlator();
        correlator.adopt(std::mem::take(&mut self.correlator));
        self.correlator = correlator;
        // The rules' keyed state: lent to every component, and dropped for
        // a rule no longer loaded (a changed rule keeps its uuid's).
        for component in &mut self.components {
            component.rule.attach_state(&self.state);
        }
        let running = self.state_rules();
        lock_state(&self.state).retain_rules(&running);
    }

    /// The uuids of the components that may keep keyed state.
    fn state_rules(&self) -> std::collections::HashSet<&str> {
        self.components.iter().filter(|c| c.rule.uses_state()).map(|c| c.rule.info().uuid.as_str()).collect()
    }

    /// The correlations of the rules running now, with empty windows.
    fn fresh_correlator(&self) -> Correlator {
        let components: Vec<&Arc<RuleInfo>> = self.components.iter().map(|c| c.rule.info()).collect();
        let declarative: Vec<&DeclarativeRule> = self.declarative.iter().map(|d| &d.rule).collect();
        // Plans refuse what cannot resolve, so nothing is left out here.
        crate::correlation::correlator(&components, &declarative, &self.correlation_limits).0
    }

    /// Checks `change` against the rules running now, without changing
    /// anything: a rule whose uuid another rule uses is refused, as at
    /// start; the declarative rules after the change are compiled together
    /// (when that fails, every declarative part of the change is refused
    /// and the declarative rules running now stay).
    pub fn plan(&self, change: Change) -> Plan {
        let mut refused: Vec<(RuleId, PathBuf, String)> = Vec::new();
        for (id, error) in &change.failed {
            refused.push((id.clone(), error.file().to_owned(), error.to_string()));
        }
        // The rules running after the change, as (id, uuid, file), built
        // up in the change's order to find clashes.
        let mut after: Vec<(RuleId, String, PathBuf)> = self
            .infos
            .iter()
            .filter(|info| !removes(&change.remove, &info.id))
            .map(|info| (info.id.clone(), info.uuid.clone(), info.file.clone()))
            .collect();
        for (rule, _) in &change.put {
            let file_id = rule.info().id.clone();
            if refused.iter().any(|(id, _, _)| *id == file_id) {
                continue;
            }
            // A file's rules replace all the rules it had.
            let before = after.clone();
            after.retain(|(id, _, _)| !declarative::of_file(id, &file_id));
            for new in infos_of(rule) {
                let clash = after.iter().find(|(id, uuid, _)| *uuid == new.uuid && *id != new.id);
                if let Some((_, _, other)) = clash {
                    let reason = EngineError::DuplicateUuid {
                        uuid: new.uuid.clone(),
                        first: other.display().to_string(),
                        second: new.file.display().to_string(),
                    };
                    refused.push((file_id.clone(), new.file.clone(), reason.to_string()));
                    after = before;
                    break;
                }
                after.push((new.id.clone(), new.uuid.clone(), new.file.clone()));
            }
        }
        let mut plan = Plan { generation: self.generation, change, refused, set: None };
        self.refuse_unresolved_correlations(&mut plan);
        self.refuse_spanning_partitions(&mut plan);
        let declarative_changes = plan
            .change
            .put
            .iter()
            .filter(|(rule, _)| matches!(rule, LoadedRule::Declarative(_)))
            .map(|(rule, _)| &rule.info().id)
            .chain(
                plan.change
                    .remove
                    .iter()
                    .filter(|id| self.declarative.iter().any(|d| declarative::of_file(&d.rule.info.id, id))),
            )
            .filter(|id| !plan.refuses(id))
            .cloned()
            .collect::<Vec<RuleId>>();
        if declarative_changes.is_empty() {
            return plan;
        }
        let rules = self.declarative_after(&plan);
        let current: Vec<(&RuleId, &str)> = rules.iter().map(|r| (&r.info.id, r.info.sha256.as_str())).collect();
        let compiled = match plan.change.compiled.take() {
            Some(pre) if pre.rules.iter().map(|(id, sha)| (id, sha.as_str())).eq(current.iter().copied()) => {
                Ok(Some(pre.set))
            }
            _ if rules.is_empty() => Ok(None),
            _ => declarative::compile(&rules).map(Some),
        };
        match compiled {
            Ok(set) => plan.set = Some(set),
            Err(err) => {
                // Cannot happen once uuids are unique, short of a prefilter
                // automaton too large to build: the declarative rules
                // running now stay, and every declarative change is refused.
                for id in declarative_changes {
                    let file = self.file_of(&id, &plan.change);
                    plan.refused.push((id, file, err.to_string()));
                }
            }
        }
        plan
    }

    /// Refuses what would leave a correlation unable to run: a correlation
    /// put in that names no loaded rule (or itself, or makes a cycle); and
    /// when a running correlation would lose a rule it aggregates, every
    /// removal and every other put of the change, so that it keeps running.
    /// On a partitioned stream, refuses the rules a change puts in whose
    /// state would span partitions (see [`Engine::partition_refusals`]).
    fn refuse_spanning_partitions(&self, plan: &mut Plan) {
        let Some(field) = self.partition_key.as_deref() else { return };
        let (components, declarative, (correlator, _)) = self.correlator_after(plan);
        let put: Vec<RuleId> = plan.change.put.iter().map(|(rule, _)| rule.info().id.clone()).collect();
        let mut refusals = Vec::new();
        for position in correlator.spanning(field) {
            let Some(rule) = position.checked_sub(components.len()).and_then(|i| declarative.get(i)) else { continue };
            if let Some(file_id) = put.iter().find(|p| declarative::of_file(&rule.info.id, p)) {
                refusals.push((file_id.clone(), rule.info.file.clone(), spanning_reason(&rule.info, field)));
            }
        }
        if field != crate::state::PARTITION_FIELD {
            for (rule, _) in &plan.change.put {
                if let LoadedRule::Component(c) = rule {
                    if c.uses_state() {
                        refusals.push((c.info().id.clone(), c.info().file.clone(), stateful_reason(c.info(), field)));
                    }
                }
            }
        }
        for refusal in refusals {
            if !plan.refuses(&refusal.0) {
                plan.refused.push(refusal);
            }
        }
    }

    /// Refuses, from now on, the rules whose state would span the
    /// partitions of a stream split by `field` (`None`: the whole
    /// stream): correlations not grouped by it, and, unless it is the
    /// host, code rules that keep state. For the rules loaded already,
    /// [`Engine::partition_refusals`] says which.
    pub fn set_partition_key(&mut self, field: Option<String>) {
        self.partition_key = field;
    }

    /// The rules `plan` would leave running (a refused change leaves its
    /// rule as it was), and their correlator with what it cannot resolve.
    fn correlator_after(&self, plan: &Plan) -> (Vec<Arc<RuleInfo>>, Vec<DeclarativeRule>, (Correlator, Refusals)) {
        let declarative = self.declarative_after(plan);
        let components: Vec<Arc<RuleInfo>> = self
            .components
            .iter()
            .map(|c| c.rule.info())
            .filter(|info| plan.refuses(&info.id) || !plan.change.remove.contains(&info.id))
            .chain(plan.change.put.iter().filter_map(|(rule, _)| match rule {
                LoadedRule::Component(c) if !plan.refuses(&c.info().id) => Some(c.info()),
                _ => None,
            }))
            .cloned()
            .collect();
        let correlator = crate::correlation::correlator(
            &components.iter().collect::<Vec<_>>(),
            &declarative.iter().collect::<Vec<_>>(),
            &self.correlation_limits,
        );
        (components, declarative, correlator)
    }

    fn refuse_unresolved_correlations(&self, plan: &mut Plan) {
        for _ in 0..2 {
            let (_, _, (_, unresolved)) = self.correlator_after(plan);
            if unresolved.is_empty() {
                return;
            }
            let put: Vec<RuleId> = plan.change.put.iter().map(|(rule, _)| rule.info().id.clone()).collect();
            let mut running = Vec::new();
            for (id, file, reason) in unresolved {
                if let Some(file_id) = put.iter().find(|p| declarative::of_file(&id, p)) {
                    plan.refused.push((file_id.clone(), file, reason));
                } else {
                    running.push(reason);
                }
            }
            if running.is_empty() {
                continue;
            }
            let reason = format!("a running correlation aggregates it ({})", running.join("; "));
            let touched: Vec<RuleId> = plan
                .change
                .remove
                .iter()
                .cloned()
                .chain(
                    plan.change
                        .put
                        .iter()
                        .filter(|(rule, _)| !is_correlation(rule))
                        .map(|(rule, _)| rule.info().id.clone()),
                )
                .filter(|id| !plan.refuses(id))
                .collect();
            for id in touched {
                let file = self.file_of(&id, &plan.change);
                plan.refused.push((id, file, reason.clone()));
            }
        }
    }

    /// The declarative rules the plan would leave running, in engine order.
    fn declarative_after(&self, plan: &Plan) -> Vec<DeclarativeRule> {
        let mut rules: Vec<DeclarativeRule> = self
            .declarative
            .iter()
            .filter(|d| {
                !plan.change.remove.iter().any(|r| !plan.refuses(r) && declarative::of_file(&d.rule.info.id, r))
            })
            .map(|d| d.rule.clone())
            .collect();
        for (rule, _) in &plan.change.put {
            let LoadedRule::Declarative(rule) = rule else { continue };
            if plan.refuses(&rule.info.id) {
                continue;
            }
            rules.retain(|r| !declarative::of_file(&r.info.id, &rule.info.id));
            rules.extend(rule.documents());
        }
        rules.sort_by(|a, b| (&a.info.file, &a.info.id).cmp(&(&b.info.file, &b.info.id)));
        rules
    }

    fn file_of(&self, id: &RuleId, change: &Change) -> PathBuf {
        change
            .put
            .iter()
            .map(|(rule, _)| rule.info())
            .chain(self.infos.iter())
            .find(|info| info.id == *id)
            .map(|info| info.file.clone())
            .unwrap_or_default()
    }

    /// The running rule with this id.
    fn running(&self, id: &RuleId) -> Option<&Arc<RuleInfo>> {
        self.infos.iter().find(|info| info.id == *id)
    }

    /// Swaps a planned change in: removals first, then each rule put in
    /// place of the one with its id (its counters carry on) or added (a
    /// component after the others, a declarative rule in file order). What
    /// the plan refused is reported and not applied. A plan made before
    /// another change was applied is checked again first.
    pub fn apply(&mut self, plan: Plan) -> Applied {
        let mut plan = if plan.generation == self.generation { plan } else { self.plan(plan.change) };
        let mut applied = Applied::default();
        let removes = std::mem::take(&mut plan.change.remove);
        for id in removes.iter().filter(|id| !plan.refuses(id)) {
            if let Some(position) = self.components.iter().position(|c| c.rule.info().id == *id) {
                let removed = self.components.remove(position);
                applied.changes.push(RuleChange::Removed(removed.rule.info().clone()));
                applied.removed.push((removed.rule.info().clone(), removed.stats));
            } else {
                // A file's rules go together.
                while let Some(position) =
                    self.declarative.iter().position(|d| declarative::of_file(&d.rule.info.id, id))
                {
                    let removed = self.declarative.remove(position);
                    let info = self.running(&removed.rule.info.id).cloned().unwrap_or(removed.rule.info);
                    applied.changes.push(RuleChange::Removed(info.clone()));
                    applied.removed.push((info, removed.stats));
                }
            }
        }
        for (rule, counters) in std::mem::take(&mut plan.change.put) {
            let id = rule.info().id.clone();
            if plan.refuses(&id) {
                continue;
            }
            let new = rule.info().clone();
            let old = self.running(&id).cloned();
            match rule {
                LoadedRule::Component(rule) => {
                    match self.components.iter_mut().find(|c| c.rule.info().id == id) {
                        Some(slot) => {
                            slot.rule = *rule;
                            if let Some(counters) = counters {
                                slot.stats.absorb(&counters);
                            }
                        }
                        None => {
                            // A declarative rule of this id becomes a component.
                            let stats = self.take_declarative(&id).unwrap_or_default();
                            let mut stats = stats;
                            if let Some(counters) = counters {
                                stats.absorb(&counters);
                            }
                            self.components.push(ComponentRule { rule: *rule, stats });
                        }
                    }
                }
                LoadedRule::Declarative(rule) => {
                    // The file's rules before the change, each with its
                    // counters (a document keeps its own by its id).
                    let mut earlier = Vec::new();
                    while let Some(position) =
                        self.declarative.iter().position(|d| declarative::of_file(&d.rule.info.id, &id))
                    {
                        let old = self.declarative.remove(position);
                        earlier.push((old.rule.info.id.clone(), old.stats));
                    }
                    if earlier.is_empty() {
                        earlier.extend(self.take_component(&id).map(|stats| (id.clone(), stats)));
                    }
                    for (n, document) in rule.documents().enumerate() {
                        let mut stats = match earlier.iter().position(|(old, _)| *old == document.info.id) {
                            Some(found) => earlier.swap_remove(found).1,
                            None => RuleStats::default(),
                        };
                        if n == 0 {
                            if let Some(counters) = &counters {
                                stats.absorb(counters);
                            }
                        }
                        let key = (&document.info.file, &document.info.id);
                        let position = self.declarative.partition_point(|d| (&d.rule.info.file, &d.rule.info.id) < key);
                        self.declarative.insert(position, DeclaredRule { rule: document, stats });
                    }
                }
            }
            applied.changes.push(match old {
                Some(old) => RuleChange::Replaced { old, new },
                None => RuleChange::Added(new),
            });
        }
        for (id, file, reason) in std::mem::take(&mut plan.refused) {
            let kept = self.running(&id).cloned();
            applied.changes.push(RuleChange::Refused { id, file, reason, kept });
        }
        if let Some(set) = plan.set {
            self.set = set.map(Arc::new);
        }
        self.generation += 1;
        self.rebuild();
        applied
    }

    fn take_declarative(&mut self, id: &RuleId) -> Option<RuleStats> {
        let position = self.declarative.iter().position(|d| d.rule.info.id == *id)?;
        Some(self.declarative.remove(position).stats)
    }

    fn take_component(&mut self, id: &RuleId) -> Option<RuleStats> {
        let position = self.components.iter().position(|c| c.rule.info().id == *id)?;
        Some(self.components.remove(position).stats)
    }

    /// [`Engine::plan`] and [`Engine::apply`] in one step.
    pub fn change(&mut self, change: Change) -> Applied {
        let plan = self.plan(change);
        self.apply(plan)
    }

    /// An engine running the same rules, for another thread: the
    /// components share their compiled code but get instances of their own
    /// (created on first use), the declarative set and the literal indexes
    /// are shared, the settings (prefilter, timing) are the same, and every
    /// counter starts at zero (see [`Engine::take_counters`]).
    pub fn replica(&self) -> Engine {
        Engine {
            components: self
                .components
                .iter()
                .map(|c| ComponentRule { rule: c.rule.replica(), stats: RuleStats::default() })
                .collect(),
            declarative: self
                .declarative
                .iter()
                .map(|d| DeclaredRule { rule: d.rule.clone(), stats: RuleStats::default() })
                .collect(),
            set: self.set.clone(),
            scratch: Scratch::default(),
            matches: Vec::new(),
            folded_literals: self.folded_literals,
            infos: self.infos.clone(),
            index: self.index.clone(),
            parsed_index: self.parsed_index.clone(),
            raw_gauge: RawGauge::default(),
            projection: self.projection.clone(),
            use_prefilter: self.use_prefilter,
            timing: self.timing,
            candidates: vec![false; self.candidates.len()],
            generation: self.generation,
            correlator: Correlator::default(),
            correlation_limits: self.correlation_limits.clone(),
            partition_key: self.partition_key.clone(),
            state: self.state.clone(),
        }
    }

    /// Every rule's counters in the order of [`Engine::infos`], leaving
    /// zeros: what a [`Engine::replica`] counted, for the engine it copies
    /// to [`RuleStats::absorb`].
    pub fn take_counters(&mut self) -> Vec<RuleStats> {
        let components = self.components.iter_mut().map(|c| std::mem::take(&mut c.stats));
        components.chain(self.declarative.iter_mut().map(|d| std::mem::take(&mut d.stats))).collect()
    }

    /// Whether a rule may keep state from one event to the next: a
    /// component whose instance is reused, or one that imports the host's
    /// keyed state. Such a rule must see each host's events in order, on
    /// one worker ([`crate::parallel`]).
    pub fn keeps_state(&self) -> bool {
        self.components.iter().any(|c| c.rule.keeps_instance() || c.rule.uses_state())
    }

    /// Sets what the rules' keyed state may hold, from now on.
    pub fn set_state_limits(&mut self, limits: dac_state::StateLimits) {
        lock_state(&self.state).set_limits(limits);
    }

    /// Keys, estimated bytes and refused writes of each code rule's keyed
    /// state now, for metrics.
    pub fn rule_states_held(&self) -> Vec<(RuleId, dac_state::Usage)> {
        let store = lock_state(&self.state);
        self.components
            .iter()
            .filter(|c| c.rule.uses_state())
            .map(|c| (c.rule.info().id.clone(), store.usage(&c.rule.info().uuid)))
            .collect()
    }

    /// The whole keyed state's counters (keys, bytes, refused, expired,
    /// late operations).
    pub fn rule_state_stats(&self) -> dac_state::StoreStats {
        lock_state(&self.state).stats()
    }

    /// Sets what the correlations' windows may hold, and the lateness they
    /// allow; applies to the windows from now on.
    pub fn set_correlation_limits(&mut self, limits: CorrelationLimits) {
        self.correlation_limits = limits;
        let mut correlator = self.fresh_correlator();
        correlator.adopt(std::mem::take(&mut self.correlator));
        self.correlator = correlator;
    }

    /// Empties every correlation's windows (`dac test` starts each case
    /// from nothing).
    pub fn reset_correlations(&mut self) {
        self.correlator = self.fresh_correlator();
        let limits = lock_state(&self.state).limits().clone();
        *lock_state(&self.state) = dac_state::Store::new(limits);
    }

    /// The state a restart needs besides the stream position (the
    /// correlations' windows, the code rules' keyed state), or `None` when
    /// no correlation runs and no rule keeps state.
    pub fn save_state(&self) -> Result<Option<Vec<u8>>, crate::StateError> {
        if self.correlator.is_empty() && self.state_rules().is_empty() {
            return Ok(None);
        }
        crate::state::save(&self.correlator, &lock_state(&self.state)).map(Some)
    }

    /// Takes back a state of [`Engine::save_state`], stored with the position
    /// the stream now resumes at. Correlations changed since (another
    /// version) start empty, as after a reload.
    pub fn restore_state(&mut self, bytes: &[u8]) -> Result<StateRestored, crate::StateError> {
        Ok(self.restore_saved(crate::state::read(bytes)?))
    }

    /// Replaces the running windows and keys by `saved`'s (keys of rules
    /// not loaded dropped), and says what it took.
    fn restore_saved(&mut self, saved: crate::state::Saved<SavedCorrelator>) -> StateRestored {
        let running: std::collections::HashSet<String> = self.state_rules().into_iter().map(str::to_owned).collect();
        let running = running.iter().map(String::as_str).collect();
        let (restored, rules) =
            crate::state::restore_saved(&mut self.correlator, &mut lock_state(&self.state), &running, saved);
        let fresh = restored.fresh.iter().filter_map(|&p| self.infos.get(p)).map(|i| i.file_name()).collect();
        StateRestored {
            correlations: restored.restored,
            groups: restored.groups,
            bytes: restored.bytes,
            dropped: restored.dropped.len(),
            fresh,
            rule_keys: rules.keys,
            rule_bytes: rules.bytes,
            rule_keys_dropped: rules.dropped,
        }
    }

    /// Takes back the states several workers of a partitioned stream
    /// saved ([`Engine::save_state`]), each for some of the hosts: from
    /// each part, only the groups and keys whose partition key value
    /// (`field`; a missing one is the empty text) `keep` says. Their union
    /// replaces the running state, as [`Engine::restore_state`] does for
    /// one. The parts must come from disjoint sets of values.
    pub fn restore_partitioned_state(
        &mut self,
        field: &str,
        parts: &[StatePart<'_>],
    ) -> Result<StateRestored, crate::StateError> {
        let group_parts = self.correlator.group_parts(field);
        let mut merged = crate::state::Saved { correlations: SavedCorrelator::default(), rules: Default::default() };
        for (bytes, keep) in parts {
            let mut saved = crate::state::read(bytes)?;
            saved.correlations.retain_groups(|correlation, group| {
                match group_parts.iter().find(|(key, _)| key == correlation) {
                    Some((_, Some(part))) => {
                        keep(dac_detect::group_key_part(group, *part).flatten().as_deref().unwrap_or(""))
                    }
                    // Not running (dropped at restore) or not grouped by
                    // the key (refused before a partitioned run starts).
                    _ => true,
                }
            });
            saved.rules.retain_hosts(|host| keep(host));
            merged.correlations.merge(saved.correlations);
            merged.rules.merge(saved.rules);
        }
        Ok(self.restore_saved(merged))
    }

    /// Why this rule set cannot run on one partition of a stream split by
    /// `field`: each rule whose state would be split across workers (a
    /// correlation not grouped by `field`; a code rule keeping state, whose
    /// keys are scoped by host, when `field` is not the host). Empty when
    /// it can.
    pub fn partition_refusals(&self, field: &str) -> Vec<String> {
        let mut refusals: Vec<String> = self
            .correlator
            .spanning(field)
            .into_iter()
            .filter_map(|position| self.infos.get(position))
            .map(|info| spanning_reason(info, field))
            .collect();
        if field != crate::state::PARTITION_FIELD {
            refusals.extend(
                self.components.iter().filter(|c| c.rule.uses_state()).map(|c| stateful_reason(c.rule.info(), field)),
            );
        }
        refusals
    }

    /// Whether the rule at `position` alerts on its own: not aggregated by a
    /// correlation, or by one that says `generate: true`.
    pub fn generates(&self, position: usize) -> bool {
        self.correlator.generates(position)
    }

    /// Feeds the rules that matched `event` (positions) to the
    /// correlations, in stream order; those that fire are appended to
    /// `hits`. For the one thread that delivers.
    pub(crate) fn correlate(&mut self, event: &Event, matched: &[usize], hits: &mut Vec<Hit>) {
        if !self.correlator.is_empty() {
            let ts = crate::policy::event_time(event);
            self.correlator.observe(event, ts, matched, hits);
        }
    }

    /// Group keys and estimated bytes all the correlations, and the code
    /// rules' keyed state, hold now.
    pub fn state_held(&self) -> (u64, u64) {
        let rules = lock_state(&self.state).stats();
        self.correlator
            .correlations()
            .filter_map(|position| self.correlator.stats(position))
            .fold((rules.keys, rules.bytes), |(groups, bytes), s| (groups + s.groups, bytes + s.bytes))
    }

    /// Every running correlation's id and window counters (what it holds
    /// now, what it refused), for metrics.
    pub fn correlations_held(&self) -> Vec<(RuleId, CorrelationStats)> {
        self.correlator
            .correlations()
            .filter_map(|position| {
                let info = self.infos.get(position)?;
                Some((info.id.clone(), self.correlator.stats(position)?.clone()))
            })
            .collect()
    }

    /// The window counters of the correlation at `position`, if it is one.
    pub fn correlation_stats(&self, position: usize) -> Option<&CorrelationStats> {
        self.correlator.stats(position)
    }

    /// Turns the literal prefilter off, so every rule sees every event
    /// (for measuring, and for rules whose declared literals are in doubt).
    pub fn set_prefilter(&mut self, enabled: bool) {
        self.use_prefilter = enabled;
    }

    /// Times each rule call into [`RuleStats::time`] and each pass of the
    /// declarative set into [`Stats::declarative_pass`] (off by default: a
    /// clock read costs as much as a prefiltered event).
    pub fn set_timing(&mut self, enabled: bool) {
        self.timing = enabled;
    }

    /// Every rule, components first, then the declarative rules.
    pub fn infos(&self) -> &[Arc<RuleInfo>] {
        &self.infos
    }

    /// Every rule with its counters, in the order of [`Engine::infos`].
    pub fn rules(&self) -> impl Iterator<Item = (&Arc<RuleInfo>, &RuleStats)> {
        let stats = self.components.iter().map(|c| &c.stats).chain(self.declarative.iter().map(|d| &d.stats));
        self.infos.iter().zip(stats)
    }

    /// Evaluations that faulted, over every rule.
    pub fn faults(&self) -> u64 {
        self.rules().map(|(_, stats)| stats.fault_total()).sum()
    }

    /// The counters of the rule at `position` (of [`Engine::infos`]).
    pub fn stats(&self, position: usize) -> &RuleStats {
        self.stats_ref(position)
    }

    fn stats_ref(&self, position: usize) -> &RuleStats {
        match self.components.get(position) {
            Some(component) => &component.stats,
            None => &self.declarative[position - self.components.len()].stats,
        }
    }

    pub(crate) fn stats_mut(&mut self, position: usize) -> &mut RuleStats {
        let components = self.components.len();
        match self.components.get_mut(position) {
            Some(component) => &mut component.stats,
            None => &mut self.declarative[position - components].stats,
        }
    }

    /// The counters of rule `id`, if it runs here.
    pub fn stats_of(&self, id: &RuleId) -> Option<&RuleStats> {
        let position = self.infos.iter().position(|info| info.id == *id)?;
        Some(self.stats_ref(position))
    }

    /// Adds `earlier` to rule `id`'s counters (the same rule, counted by an
    /// engine this one replaces); `false` when no rule has that id.
    pub fn absorb_stats(&mut self, id: &RuleId, earlier: &RuleStats) -> bool {
        match self.infos.iter().position(|info| info.id == *id) {
            Some(position) => {
                self.stats_mut(position).absorb(earlier);
                true
            }
            None => false,
        }
    }

    /// The sandboxed components, in the order of [`Engine::infos`].
    pub fn components(&self) -> impl Iterator<Item = &RuleComponent> {
        self.components.iter().map(|c| &c.rule)
    }

    /// The component at `position`, if the rule there is one.
    pub fn component(&self, position: usize) -> Option<&RuleComponent> {
        self.components.get(position).map(|c| &c.rule)
    }

    /// The compiled declarative rules, if any.
    pub fn declarative_set(&self) -> Option<&RuleSet> {
        self.set.as_deref()
    }

    /// Evaluates one JSON document given as bytes. Returns the parsed event
    /// when any rule had to see it, `None` when the prefilter ruled every
    /// rule out (the document was still validated).
    pub fn evaluate_json(
        &mut self,
        json: &[u8],
        stats: &mut Stats,
        outcomes: &mut Vec<Outcome>,
    ) -> Result<Option<(Event, Decoding)>, ParseError> {
        if !self.screen_json(json, stats)? {
            return Ok(None);
        }
        if let Some(keys) = &self.projection {
            // Only the fields the rules read; the whole document only for
            // the alert, when one matches (evaluated once, on the fields).
            // A handful of keys: lengths first, so most keys are told
            // apart without comparing their bytes.
            let keep = |key: &str| keys.iter().any(|k| k.len() == key.len() && k == key);
            if let Some(mut fields) = Event::project_from_slice(json, &keep) {
                let before = outcomes.len();
                self.mark_event(&fields);
                self.run_candidates(&mut fields, stats, outcomes);
                if outcomes.len() == before {
                    return Ok(None);
                }
                return Event::from_json_slice(json).map(Some);
            }
        }
        let (mut event, decoding) = Event::from_json_slice(json)?;
        // The raw scan finds a literal anywhere in the document; a rule is
        // entered when one occurs in the fields it declared. So the same
        // rules are entered whether the scan ran or was bypassed — and so
        // on every thread, whose scans are bypassed at other moments.
        self.candidates.fill(false);
        self.mark_event(&event);
        self.run_candidates(&mut event, stats, outcomes);
        Ok(Some((event, decoding)))
    }

    /// The raw-bytes prefilter: `false` when no rule can fire on `json`,
    /// which is then only validated and counted as prefiltered.
    fn screen_json(&mut self, json: &[u8], stats: &mut Stats) -> Result<bool, ParseError> {
        self.candidates.fill(false);
        let raw = self.use_prefilter && self.raw_gauge.scan_now();
        let trusted = raw && self.index.mark_raw(json, &mut self.candidates);
        if trusted && self.folded_literals && !json.is_ascii() {
            self.candidates[self.components.len()..].fill(true);
        }
        if trusted && !self.candidates.contains(&true) && std::str::from_utf8(json).is_ok() {
            self.raw_gauge.observe(true);
            validate(json)?;
            stats.prefiltered_events += 1;
            return Ok(false);
        }
        if raw {
            self.raw_gauge.observe(false);
        }
        Ok(true)
    }

    /// Whether [`Engine::evaluate_batch`] calls some component once per
    /// batch rather than once per event (a `dac:rule@0.2.0` component
    /// whose instance is reused).
    pub fn batches_calls(&self) -> bool {
        self.components.iter().any(|c| c.rule.batches_calls())
    }

    /// Evaluates `documents` in stream order with exactly the outcomes, in
    /// the same order, that [`Engine::evaluate_json`] (a JSON document) and
    /// [`Engine::evaluate`] (a decoded one) give one by one; but a
    /// `dac:rule@0.2.0` component is called once for all the batch's
    /// events it must see, not once per event. A decoded document's event
    /// always comes back.
    pub fn evaluate_batch(&mut self, documents: Vec<Document<'_>>, stats: &mut Stats) -> Vec<Evaluated> {
        if !self.batches_calls() {
            return documents
                .into_iter()
                .map(|document| {
                    let mut outcomes = Vec::new();
                    let event = match document {
                        Document::Json(json) => self.evaluate_json(json, stats, &mut outcomes),
                        Document::Event(mut event) => {
                            self.evaluate(&mut event, stats, &mut outcomes);
                            Ok(Some((event, Decoding::Utf8)))
                        }
                    };
                    Evaluated { event, outcomes }
                })
                .collect();
        }
        // Each document screened and parsed, the components it must see
        // noted, its declarative rules run (their outcomes come after the
        // components', as one by one).
        // `events[i]` is document i's event (a default one when it was
        // not parsed), lent to the components below.
        let mut parsed = Vec::with_capacity(documents.len());
        let mut events = Vec::with_capacity(documents.len());
        let mut declared = Vec::with_capacity(documents.len());
        let mut queues: Vec<Vec<usize>> = vec![Vec::new(); self.components.len()];
        for document in documents {
            let mut outcomes = Vec::new();
            let screened = match document {
                Document::Json(json) => match self.screen_json(json, stats) {
                    Ok(true) => Event::from_json_slice(json).map(Some),
                    Ok(false) => Ok(None),
                    Err(err) => Err(err),
                },
                Document::Event(event) => Ok(Some((event, Decoding::Utf8))),
            };
            let (event, status) = match screened {
                Ok(Some((mut event, decoding))) => {
                    self.candidates.fill(false);
                    self.mark_event(&event);
                    for (queue, _) in queues.iter_mut().zip(&self.candidates).filter(|(_, wanted)| **wanted) {
                        queue.push(events.len());
                    }
                    self.run_declarative(&mut event, stats, &mut outcomes);
                    (event, Ok(Some(decoding)))
                }
                Ok(None) => (Event::default(), Ok(None)),
                Err(err) => (Event::default(), Err(err)),
            };
            events.push(event);
            parsed.push(status);
            declared.push(outcomes);
        }
        // Each component once, over the events it must see.
        let mut component_outcomes: Vec<Vec<Outcome>> = (0..events.len()).map(|_| Vec::new()).collect();
        let mut lent = Vec::new();
        for (index, queue) in queues.iter().enumerate() {
            if queue.is_empty() {
                continue;
            }
            lent.clear();
            lent.extend(queue.iter().map(|&at| std::mem::take(&mut events[at])));
            let component = &mut self.components[index];
            let start = self.timing.then(Instant::now);
            let results = component.rule.evaluate_batch(&mut lent);
            if let Some(start) = start {
                let each = start.elapsed() / queue.len() as u32;
                (0..queue.len()).for_each(|_| component.stats.time.observe(each));
            }
            component.stats.evaluations += queue.len() as u64;
            component.stats.fuel_consumed += component.rule.last_fuel_consumed();
            for ((&at, event), result) in queue.iter().zip(lent.drain(..)).zip(results) {
                events[at] = event;
                record(&mut component.stats, index, result, &mut component_outcomes[at]);
            }
        }
        parsed
            .into_iter()
            .zip(events)
            .zip(component_outcomes.into_iter().zip(declared))
            .map(|((status, event), (mut outcomes, declarative))| {
                outcomes.extend(declarative);
                Evaluated { event: status.map(|decoding| decoding.map(|decoding| (event, decoding))), outcomes }
            })
            .collect()
    }

    /// Evaluates one parsed event.
    pub fn evaluate(&mut self, event: &mut Event, stats: &mut Stats, outcomes: &mut Vec<Outcome>) {
        self.candidates.fill(false);
        self.mark_event(event);
        self.run_candidates(event, stats, outcomes);
    }

    fn mark_event(&mut self, event: &Event) {
        if self.use_prefilter {
            self.parsed_index.mark_event(event, &mut self.candidates);
            // The set's own prefilter reads the parsed fields exactly.
            self.candidates[self.components.len()..].fill(true);
        } else {
            self.candidates.fill(true);
        }
    }

    fn run_candidates(&mut self, event: &mut Event, stats: &mut Stats, outcomes: &mut Vec<Outcome>) {
        self.run_components(event, outcomes);
        self.run_declarative(event, stats, outcomes);
    }

    fn run_components(&mut self, event: &mut Event, outcomes: &mut Vec<Outcome>) {
        for (index, component) in self.components.iter_mut().enumerate() {
            if !self.candidates[index] {
                continue;
            }
            let counters = &mut component.stats;
            counters.evaluations += 1;
            let start = self.timing.then(Instant::now);
            let result = component.rule.evaluate(event);
            if let Some(start) = start {
                counters.time.observe(start.elapsed());
            }
            counters.fuel_consumed += component.rule.last_fuel_consumed();
            record(counters, index, result, outcomes);
        }
    }

    fn run_declarative(&mut self, event: &mut Event, stats: &mut Stats, outcomes: &mut Vec<Outcome>) {
        let first = self.components.len();
        let Some(set) = &self.set else { return };
        if !self.candidates[first..].contains(&true) {
            return;
        }
        self.matches.clear();
        let start = self.timing.then(Instant::now);
        if self.use_prefilter {
            set.matches_with(event, &mut self.scratch, &mut self.matches);
            for rule in self.scratch.last_candidates() {
                self.declarative[rule].stats.evaluations += 1;
            }
        } else {
            set.matches_without_prefilter(event, &mut self.matches);
            self.declarative.iter_mut().for_each(|d| d.stats.evaluations += 1);
        }
        if let Some(start) = start {
            stats.declarative_pass.observe(start.elapsed());
        }
        for found in self.matches.drain(..) {
            self.declarative[found.rule].stats.alerts += 1;
            let index = first + found.rule;
            let finding = declarative::finding(&self.infos[index], &found.matched);
            outcomes.push(Outcome { rule: index, result: Ok(vec![finding]) });
        }
    }
}

/// Counts a component's result for one event and keeps it unless it is
/// "no match".
fn record(counters: &mut RuleStats, rule: usize, result: Result<Vec<Finding>, Fault>, outcomes: &mut Vec<Outcome>) {
    match result {
        Ok(findings) if findings.is_empty() => {}
        Ok(findings) => {
            counters.alerts += 1;
            outcomes.push(Outcome { rule, result: Ok(findings) });
        }
        Err(fault) => {
            counters.count_fault(&fault);
            outcomes.push(Outcome { rule, result: Err(fault) });
        }
    }
}

/// Whether the raw-bytes scan pays. It reads every byte of a document, to
/// rule the whole document out without parsing it; when most documents
/// hold one of the literals (the SigmaHQ rules' `/sh`, `-r`, `cat` are in
/// most command lines), it is a second scan beside the parsed fields' own
/// and saves nothing. So it is measured: over each window of documents it
/// scanned, if it ruled out fewer than half, the next [`BYPASS_WINDOWS`]
/// windows are parsed without it, then it is tried again. Either way the
/// same rules see the same events (the parsed fields' filters are exact).
#[derive(Debug, Default)]
struct RawGauge {
    scanned: u32,
    ruled_out: u32,
    bypass_left: u32,
}

const RAW_WINDOW: u32 = 1024;
const BYPASS_WINDOWS: u32 = 15;

impl RawGauge {
    /// Whether to scan this document's raw bytes.
    fn scan_now(&mut self) -> bool {
        if self.bypass_left == 0 {
            return true;
        }
        self.bypass_left -= 1;
        false
    }

    fn observe(&mut self, ruled_out: bool) {
        self.scanned += 1;
        self.ruled_out += u32::from(ruled_out);
        if self.scanned == RAW_WINDOW {
            if self.ruled_out * 2 < RAW_WINDOW {
                self.bypass_left = RAW_WINDOW * BYPASS_WINDOWS;
            }
            self.scanned = 0;
            self.ruled_out = 0;
        }
    }
}

/// Checks that `json` is one well-formed JSON object, without building it.
fn validate(json: &[u8]) -> Result<(), ParseError> {
    let first = json.iter().find(|b| !b.is_ascii_whitespace());
    if first != Some(&b'{') {
        // Let the full parser produce the precise message.
        return Event::from_json_slice(json).map(|_| ());
    }
    serde_json::from_slice::<serde::de::IgnoredAny>(json).map(|_| ()).map_err(ParseError::from_json_error)
}

#[cfg(test)]
mod tests {
    use super::*;
    use dac_detect::FieldMapping;
    use std::path::Path;

    fn rule(id: &str, uuid: &str, literal: &str) -> LoadedRule {
        let text = format!("name: {id}\nuuid: {uuid}\ndetection_logic:\n  command_line:\n    - {literal}\n");
        let file = format!("{id}.yaml");
        let rule = DeclarativeRule::load(RuleId::new(id), Path::new(&file), text.as_bytes(), &FieldMapping::default());
        LoadedRule::Declarative(Box::new(rule.unwrap()))
    }

    /// Evaluates one event; the ids of the rules that fired.
    fn fired(engine: &mut Engine, command_line: &str) -> Vec<String> {
        let json = format!(r#"{{"command_line": "{command_line}"}}"#);
        let mut outcomes = Vec::new();
        engine.evaluate_json(json.as_bytes(), &mut Stats::default(), &mut outcomes).unwrap();
        outcomes.iter().map(|o| engine.infos()[o.rule].id.to_string()).collect()
    }

    fn change(f: impl FnOnce(&mut Change)) -> Change {
        let mut change = Change::new();
        f(&mut change);
        change
    }

    #[test]
    fn a_rules_counters_belong_to_its_id_across_versions_removal_and_return() {
        let mut engine = Engine::default();
        let applied = engine.change(change(|c| {
            c.put(rule("b", "u-b", "beta"));
            c.put(rule("a", "u-a", "alpha"));
        }));
        assert!(matches!(&applied.changes[..], [RuleChange::Added(_), RuleChange::Added(_)]));
        let ids: Vec<&str> = engine.infos().iter().map(|i| i.id.as_str()).collect();
        assert_eq!(ids, ["a", "b"], "declarative rules run in file order");
        assert_eq!(fired(&mut engine, "alpha beta"), ["a", "b"]);
        assert_eq!(fired(&mut engine, "alpha"), ["a"]);

        // A new version of `a`: same id, its counters carry on.
        let applied = engine.change(change(|c| {
            c.put(rule("a", "u-a", "gamma"));
        }));
        assert!(matches!(&applied.changes[..], [RuleChange::Replaced { .. }]));
        assert_eq!(fired(&mut engine, "alpha"), Vec::<String>::new());
        assert_eq!(fired(&mut engine, "gamma"), ["a"]);
        assert_eq!(engine.stats_of(&RuleId::new("a")).unwrap().alerts, 3);

        // Taken out, it hands its counters back; put back with them, it
        // counts on.
        let applied = engine.change(change(|c| {
            c.remove(RuleId::new("a"));
        }));
        let (info, counters) = applied.removed.into_iter().next().unwrap();
        assert_eq!((info.id.as_str(), counters.alerts), ("a", 3));
        assert!(engine.stats_of(&RuleId::new("a")).is_none());
        engine.change(change(|c| {
            c.put_counting_from(rule("a", "u-a", "gamma"), counters);
        }));
        assert_eq!(fired(&mut engine, "gamma"), ["a"]);
        assert_eq!(engine.stats_of(&RuleId::new("a")).unwrap().alerts, 4);
        assert_eq!(engine.stats_of(&RuleId::new("b")).unwrap().alerts, 1);
    }

    #[test]
    fn the_raw_scan_is_bypassed_while_it_rules_little_out_and_tried_again() {
        let mut gauge = RawGauge::default();
        // A window where most documents hold a literal: the next windows
        // are parsed without the raw scan, then it is tried again.
        for i in 0..RAW_WINDOW {
            assert!(gauge.scan_now());
            gauge.observe(i % 4 == 0);
        }
        for _ in 0..RAW_WINDOW * BYPASS_WINDOWS {
            assert!(!gauge.scan_now());
        }
        assert!(gauge.scan_now());
        // One where it rules out at least half: it stays on.
        let mut gauge = RawGauge::default();
        for i in 0..RAW_WINDOW * 3 {
            assert!(gauge.scan_now());
            gauge.observe(i % 2 == 0);
        }
    }

    #[test]
    fn bypassing_the_raw_scan_changes_no_outcome() {
        let mut engine = Engine::default();
        engine.change(change(|c| {
            c.put(rule("a", "u-a", "alpha"));
            c.put(rule("b", "u-b", "beta"));
        }));
        let mut reference = Engine::default();
        reference.change(change(|c| {
            c.put(rule("a", "u-a", "alpha"));
            c.put(rule("b", "u-b", "beta"));
        }));
        reference.set_prefilter(false);
        let (mut stats, mut skipped) = (Stats::default(), 0);
        // Candidates first (the scan gets bypassed), then a stream where it
        // would rule most out, with matches among them.
        let events = RAW_WINDOW * (BYPASS_WINDOWS + 3);
        for i in 0..events {
            let line = match i {
                i if i < RAW_WINDOW => format!("alphabet {i}"),
                i if i % 7 == 0 => format!("beta {i}"),
                i => format!("gamma {i}"),
            };
            let json = format!(r#"{{"command_line": "{line}"}}"#);
            let (mut ours, mut theirs) = (Vec::new(), Vec::new());
            let before = stats.prefiltered_events;
            engine.evaluate_json(json.as_bytes(), &mut stats, &mut ours).unwrap();
            skipped += stats.prefiltered_events - before;
            let (mut whole, _) = Event::from_json_slice(json.as_bytes()).unwrap();
            reference.evaluate(&mut whole, &mut Stats::default(), &mut theirs);
            let rules = |outcomes: &[Outcome]| outcomes.iter().map(|o| o.rule).collect::<Vec<_>>();
            assert_eq!(rules(&ours), rules(&theirs), "event {i}: {line}");
        }
        // The bypass ended within the run, and the scan ruled documents
        // out again.
        assert!(skipped > 0, "the raw scan never came back");
        let scanned = u64::from(events - RAW_WINDOW * (BYPASS_WINDOWS + 1));
        assert!(skipped <= scanned, "it was never bypassed: {skipped} ruled out");
    }

    #[test]
    fn reading_only_the_rules_fields_changes_no_outcome_and_alerts_carry_the_whole_event() {
        let mut engine = Engine::default();
        engine.change(change(|c| {
            c.put(rule("a", "u-a", "alpha"));
        }));
        assert_eq!(engine.projection.as_deref(), Some(&["command_line".to_owned()][..]));
        let mut reference = Engine::default();
        reference.change(change(|c| {
            c.put(rule("a", "u-a", "alpha"));
        }));
        reference.set_prefilter(false);
        for json in [
            r#"{"command_line": "alpha", "host": "h", "pid": 1}"#,
            r#"{"host": "h", "command_line": "beta alpha"}"#,
            r#"{"command_line": "alpha", "command_line": "gamma"}"#,
            r#"{"command_line": "\u0061lpha \"quoted\"", "ts": {"$date": 5}}"#,
            r#"{"command_line": 12, "other": [1, {"a": null}]}"#,
            r#"{"other": "alpha"}"#,
        ] {
            let (mut ours, mut theirs) = (Vec::new(), Vec::new());
            let got = engine.evaluate_json(json.as_bytes(), &mut Stats::default(), &mut ours).unwrap();
            // The reference: the whole document, parsed first.
            let (mut whole, _) = Event::from_json_slice(json.as_bytes()).unwrap();
            reference.evaluate(&mut whole, &mut Stats::default(), &mut theirs);
            let want = Some(whole);
            let rules = |outcomes: &[Outcome]| outcomes.iter().map(|o| o.rule).collect::<Vec<_>>();
            assert_eq!(rules(&ours), rules(&theirs), "{json}");
            // A match comes back with the whole document, for its alert.
            if !ours.is_empty() {
                assert_eq!(got.map(|(e, _)| e.into_json()), want.map(Event::into_json), "{json}");
            }
        }
        // What the whole parse refuses, the engine still refuses.
        let deep = format!(r#"{{"command_line": "alpha", "x": {}1{}}}"#, "[".repeat(200), "]".repeat(200));
        assert!(engine.evaluate_json(deep.as_bytes(), &mut Stats::default(), &mut Vec::new()).is_err());
    }

    #[test]
    fn a_clash_is_refused_and_the_running_version_stays() {
        let mut engine = Engine::default();
        engine.change(change(|c| {
            c.put(rule("a", "u-a", "alpha"));
            c.put(rule("b", "u-b", "beta"));
        }));
        // `b` takes `a`'s uuid: refused, and the old `b` keeps running.
        let plan = engine.plan(change(|c| {
            c.put(rule("b", "u-a", "delta"));
        }));
        let refused: Vec<(&RuleId, &str)> = plan.refused().map(|(id, _, reason)| (id, reason)).collect();
        assert_eq!(refused.len(), 1);
        assert_eq!(refused[0].0.as_str(), "b");
        assert!(refused[0].1.contains("both declare uuid u-a"), "{}", refused[0].1);
        let applied = engine.apply(plan);
        match &applied.changes[..] {
            [RuleChange::Refused { kept: Some(kept), .. }] => assert_eq!(kept.uuid, "u-b"),
            other => panic!("{other:?}"),
        }
        assert_eq!(fired(&mut engine, "beta delta"), ["b"]);
    }

    #[test]
    fn a_plan_made_before_another_change_is_checked_again() {
        let mut engine = Engine::default();
        let stale = engine.plan(change(|c| {
            c.put(rule("b", "u-x", "beta"));
        }));
        assert_eq!(stale.refused().count(), 0);
        engine.change(change(|c| {
            c.put(rule("a", "u-x", "alpha"));
        }));
        // Applied as planned, `b` would share `a`'s uuid.
        let applied = engine.apply(stale);
        assert!(matches!(&applied.changes[..], [RuleChange::Refused { .. }]), "{:?}", applied.changes);
        assert_eq!(engine.infos().len(), 1);
    }

    fn file(id: &str, text: &str) -> LoadedRule {
        let path = format!("{id}.yml");
        let rule = DeclarativeRule::load(RuleId::new(id), Path::new(&path), text.as_bytes(), &FieldMapping::default());
        LoadedRule::Declarative(Box::new(rule.unwrap()))
    }

    const BASE: &str = "title: Recon\nid: r-1\nname: recon\nlogsource: {product: linux, category: process_creation}\n\
                        detection:\n  sel:\n    CommandLine|contains: whoami\n  condition: sel\n";

    fn burst(reference: &str) -> String {
        format!(
            "title: Burst\nid: c-1\ncorrelation:\n  type: event_count\n  rules: [{reference}]\n  timespan: 1m\n  \
             condition: {{gte: 2}}\n"
        )
    }

    fn refusals(applied: &Applied) -> Vec<String> {
        applied
            .changes
            .iter()
            .filter_map(|c| match c {
                RuleChange::Refused { id, reason, .. } => Some(format!("{id}: {reason}")),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_change_never_leaves_a_correlation_without_its_rules() {
        let mut engine = Engine::default();
        engine.change(change(|c| {
            c.put(file("base", BASE));
            c.put(file("burst", &burst("recon")));
        }));
        assert_eq!(engine.infos().len(), 2);
        assert!(!engine.generates(0), "recon only feeds the burst");

        // Removing the rule it aggregates is refused: the correlation would
        // stop. So is a correlation naming nothing loaded.
        let applied = engine.change(change(|c| {
            c.remove(RuleId::new("base"));
            c.put(file("other", &burst("nothing").replace("c-1", "c-2")));
        }));
        let refused = refusals(&applied);
        assert_eq!(refused.len(), 2, "{refused:?}");
        assert!(refused[0].starts_with("other: other.yml:5: correlation.rules: no rule loaded"), "{refused:?}");
        assert!(refused[1].starts_with("base: a running correlation aggregates it"), "{refused:?}");
        assert_eq!(engine.infos().len(), 2);

        // Both together go.
        engine.change(change(|c| {
            c.remove(RuleId::new("base"));
            c.remove(RuleId::new("burst"));
        }));
        assert!(engine.infos().is_empty());
    }

    #[test]
    fn a_files_documents_are_rules_that_come_and_go_together() {
        let mut engine = Engine::default();
        let both = format!("{}---\n{BASE}", burst("recon"));
        engine.change(change(|c| {
            c.put(file("f", &both));
        }));
        let ids: Vec<&str> = engine.infos().iter().map(|i| i.id.as_str()).collect();
        assert_eq!(ids, ["f", "f#2"]);
        assert_eq!(fired(&mut engine, "whoami"), ["f#2"]);
        // A new version with the base rule alone: the correlation goes.
        let applied = engine.change(change(|c| {
            c.put(file("f", BASE));
        }));
        assert!(refusals(&applied).is_empty());
        let ids: Vec<&str> = engine.infos().iter().map(|i| i.id.as_str()).collect();
        assert_eq!(ids, ["f"]);
        assert!(engine.generates(0));
        // Removing the file removes every rule it had.
        engine.change(change(|c| {
            c.put(file("f", &both));
        }));
        engine.change(change(|c| {
            c.remove(RuleId::new("f"));
        }));
        assert!(engine.infos().is_empty());
    }
}
