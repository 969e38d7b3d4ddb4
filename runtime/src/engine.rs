//! The detection engine: every loaded rule against every event.
//!
//! An event is parsed at most once for all rules; the [`Prefilter`] decides
//! which rules are entered at all, and a document no rule could fire on is
//! only validated, never parsed into a tree.

use crate::declarative::{self, DeclarativeRule};
use crate::prefilter::Prefilter;
use crate::reload::{Reload, RuleWatcher};
use crate::rule::{Fault, Finding, RuleComponent, RuleInfo};
use crate::stats::{RuleStats, Stats};
use dac_detect::{Match, RuleSet, Scratch};
use dac_event::{Decoding, Event, ParseError};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

/// What one rule made of one event, when it was anything but "no match".
#[derive(Debug)]
pub struct Outcome {
    /// Index of the rule in [`Engine::rules`].
    pub rule: usize,
    pub result: Result<Vec<Finding>, Fault>,
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("{first} and {second} both declare uuid {uuid}; alerts could not tell them apart")]
    DuplicateUuid { uuid: String, first: String, second: String },
    #[error("compiling the YAML/Sigma rules: {0}")]
    Compile(#[from] dac_detect::DetectError),
}

/// What a hot reload did to the running rule set.
#[derive(Debug)]
pub enum RuleChange {
    Added(Arc<RuleInfo>),
    Replaced {
        old: Arc<RuleInfo>,
        new: Arc<RuleInfo>,
    },
    Removed(Arc<RuleInfo>),
    /// A changed file that did not load, or would clash with another rule;
    /// the version loaded from that file before, if any, keeps running.
    Refused {
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

pub struct Engine {
    /// The sandboxed components; their rule indices come first.
    rules: Vec<RuleComponent>,
    /// The declarative rules, sorted by file, indexed after the components.
    declarative: Vec<DeclarativeRule>,
    /// `declarative` compiled into one set (`None` when there are none).
    set: Option<RuleSet>,
    scratch: Scratch,
    matches: Vec<Match>,
    /// Some declarative rule is prefiltered by folded literals, which the
    /// raw scan may only trust for ASCII documents.
    folded_literals: bool,
    infos: Vec<Arc<RuleInfo>>,
    prefilter: Prefilter,
    use_prefilter: bool,
    /// Time every call into a rule (two clock reads per call).
    timing: bool,
    candidates: Vec<bool>,
    watcher: Option<RuleWatcher>,
}

impl Engine {
    /// An engine of components only.
    pub fn new(rules: Vec<RuleComponent>) -> Result<Engine, EngineError> {
        Engine::with_declarative(rules, Vec::new())
    }

    /// An engine of components and declarative rules (seed YAML, Sigma);
    /// the latter are compiled into one set, evaluated in one pass per
    /// event. Rule indices (in [`Engine::infos`], [`Outcome::rule`] and the
    /// per-rule [`Stats`]) list the components first, then the declarative
    /// rules ordered by file.
    pub fn with_declarative(
        rules: Vec<RuleComponent>,
        mut declarative: Vec<DeclarativeRule>,
    ) -> Result<Engine, EngineError> {
        declarative.sort_by(|a, b| a.info.file.cmp(&b.info.file));
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
        }
        let set = if declarative.is_empty() { None } else { Some(declarative::compile(&declarative)?) };
        let mut engine = Engine {
            rules,
            declarative,
            set,
            scratch: Scratch::default(),
            matches: Vec::new(),
            folded_literals: false,
            infos: Vec::new(),
            prefilter: Prefilter::new(std::iter::empty()),
            use_prefilter: true,
            timing: false,
            candidates: Vec::new(),
            watcher: None,
        };
        engine.rebuild();
        Ok(engine)
    }

    /// Recomputes what derives from the rule lists (after `set` matches
    /// `declarative`).
    fn rebuild(&mut self) {
        let declarative = match &self.set {
            Some(set) => declarative::with_prefilters(&self.declarative, set),
            None => Vec::new(),
        };
        self.folded_literals = declarative.iter().any(|info| declarative::needs_ascii(info));
        self.infos = self.rules.iter().map(|r| r.info().clone()).chain(declarative).collect();
        self.prefilter = Prefilter::new(self.infos.iter().map(|i| i.as_ref()));
        self.candidates = vec![false; self.infos.len()];
    }

    /// Takes reloads from `watcher` from now on (see [`Engine::poll_reload`]).
    pub fn set_watcher(&mut self, watcher: RuleWatcher) {
        self.watcher = Some(watcher);
    }

    /// Applies the reload waiting from the watcher, if any. The pipeline
    /// calls this between documents, so a swap is atomic with respect to
    /// them.
    pub fn poll_reload(&mut self, stats: &mut Stats) -> Vec<RuleChange> {
        match self.watcher.as_ref().and_then(RuleWatcher::try_next) {
            Some(reload) => self.apply_reload(reload, stats),
            None => Vec::new(),
        }
    }

    /// The file of another rule that already uses `info`'s uuid.
    fn clash(&self, info: &RuleInfo) -> Option<PathBuf> {
        self.rules
            .iter()
            .map(|r| r.info())
            .chain(self.declarative.iter().map(|r| &r.info))
            .find(|other| other.uuid == info.uuid && other.file != info.file)
            .map(|other| other.file.clone())
    }

    /// Swaps changed rules in: a file already loaded is replaced where it
    /// stands (its counters carry on), a new one is added, a removed one
    /// dropped with its counters. A rule whose uuid another file already
    /// uses is refused, as at start. Declarative rules are swapped as one
    /// set, compiled by the watcher off the hot path (here only when the
    /// engine refused part of what the watcher compiled).
    pub fn apply_reload(&mut self, reload: Reload, stats: &mut Stats) -> Vec<RuleChange> {
        stats.ensure_rules(&self.infos);
        let mut changes = Vec::new();
        let before = (self.declarative.clone(), stats.rules[self.rules.len()..].to_vec());
        let mut declarative_changed = false;
        for file in reload.removed {
            if let Some(index) = self.rules.iter().position(|rule| rule.info().file == file) {
                let rule = self.rules.remove(index);
                stats.rules.remove(index);
                changes.push(RuleChange::Removed(rule.info().clone()));
            } else if let Some(index) = self.declarative.iter().position(|rule| rule.info.file == file) {
                let rule = self.declarative.remove(index);
                stats.rules.remove(self.rules.len() + index);
                changes.push(RuleChange::Removed(rule.info));
                declarative_changed = true;
            }
        }
        for rule in reload.loaded {
            let new = rule.info().clone();
            let same_file = self.rules.iter().position(|r| r.info().file == new.file);
            let kept = same_file.map(|index| self.rules[index].info().clone());
            if let Some(other) = self.clash(&new) {
                changes.push(refused_duplicate(&new, &other, kept));
                continue;
            }
            match same_file {
                Some(index) => {
                    self.rules[index] = rule;
                    stats.rules[index].rule = new.file_name();
                    changes.push(RuleChange::Replaced { old: kept.expect("same file"), new });
                }
                None => {
                    stats.rules.insert(self.rules.len(), RuleStats { rule: new.file_name(), ..Default::default() });
                    self.rules.push(rule);
                    changes.push(RuleChange::Added(new));
                }
            }
        }
        for rule in reload.declarative {
            let new = rule.info.clone();
            let same_file = self.declarative.iter().position(|r| r.info.file == new.file);
            let kept = same_file.map(|index| self.declarative[index].info.clone());
            if let Some(other) = self.clash(&new) {
                changes.push(refused_duplicate(&new, &other, kept));
                continue;
            }
            declarative_changed = true;
            match same_file {
                Some(index) => {
                    self.declarative[index] = rule;
                    changes.push(RuleChange::Replaced { old: kept.expect("same file"), new });
                }
                None => {
                    let index = self.declarative.partition_point(|r| r.info.file < new.file);
                    stats
                        .rules
                        .insert(self.rules.len() + index, RuleStats { rule: new.file_name(), ..Default::default() });
                    self.declarative.insert(index, rule);
                    changes.push(RuleChange::Added(new));
                }
            }
        }
        for error in reload.failed {
            let kept = self
                .rules
                .iter()
                .map(|rule| rule.info())
                .chain(self.declarative.iter().map(|rule| &rule.info))
                .find(|info| info.file == error.file())
                .cloned();
            changes.push(RuleChange::Refused { file: error.file().to_owned(), reason: error.to_string(), kept });
        }
        if declarative_changed {
            let current: Vec<(&Path, &str)> =
                self.declarative.iter().map(|r| (r.info.file.as_path(), r.info.sha256.as_str())).collect();
            let compiled = match reload.compiled {
                Some(pre) if pre.rules.iter().map(|(f, h)| (f.as_path(), h.as_str())).eq(current.iter().copied()) => {
                    Ok(pre.set)
                }
                _ if self.declarative.is_empty() => Ok(RuleSet::compile(Vec::new()).expect("an empty set compiles")),
                _ => declarative::compile(&self.declarative),
            };
            match compiled {
                Ok(set) => self.set = (!self.declarative.is_empty()).then_some(set),
                Err(err) => {
                    // Cannot happen once uuids are unique, short of a
                    // prefilter automaton too large to build; the rules
                    // running before stay, every declarative change is
                    // refused.
                    let (declarative, counters) = before;
                    self.declarative = declarative;
                    stats.rules.truncate(self.rules.len());
                    stats.rules.extend(counters);
                    let mut refused = Vec::new();
                    changes.retain(|change| match change {
                        RuleChange::Added(info)
                        | RuleChange::Replaced { new: info, .. }
                        | RuleChange::Removed(info)
                            if info.kind.is_declarative() =>
                        {
                            refused.push(info.file.clone());
                            false
                        }
                        _ => true,
                    });
                    for file in refused {
                        let kept = self.declarative.iter().find(|r| r.info.file == file).map(|r| r.info.clone());
                        changes.push(RuleChange::Refused { file, reason: err.to_string(), kept });
                    }
                }
            }
        }
        self.rebuild();
        changes
    }

    /// Turns the literal prefilter off, so every rule sees every event
    /// (for measuring, and for rules whose declared literals are in doubt).
    pub fn set_prefilter(&mut self, enabled: bool) {
        self.use_prefilter = enabled;
    }

    /// Times each rule call into [`crate::stats::RuleStats::time`] and each
    /// pass of the declarative set into [`Stats::declarative_pass`] (off by
    /// default: a clock read costs as much as a prefiltered event).
    pub fn set_timing(&mut self, enabled: bool) {
        self.timing = enabled;
    }

    /// The sandboxed components (the first indices of [`Engine::infos`]).
    pub fn rules(&self) -> &[RuleComponent] {
        &self.rules
    }

    /// Every rule, components first, then the declarative rules.
    pub fn infos(&self) -> &[Arc<RuleInfo>] {
        &self.infos
    }

    /// The compiled declarative rules, if any.
    pub fn declarative_set(&self) -> Option<&RuleSet> {
        self.set.as_ref()
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
        self.candidates.fill(false);
        let trusted = self.use_prefilter && self.prefilter.mark_raw(json, &mut self.candidates);
        if trusted && self.folded_literals && !json.is_ascii() {
            self.candidates[self.rules.len()..].fill(true);
        }
        if trusted && !self.candidates.contains(&true) && std::str::from_utf8(json).is_ok() {
            validate(json)?;
            stats.prefiltered_events += 1;
            return Ok(None);
        }
        let (mut event, decoding) = Event::from_json_slice(json)?;
        if !trusted {
            self.mark_event(&event);
        }
        self.run_candidates(&mut event, stats, outcomes);
        Ok(Some((event, decoding)))
    }

    /// Evaluates one parsed event.
    pub fn evaluate(&mut self, event: &mut Event, stats: &mut Stats, outcomes: &mut Vec<Outcome>) {
        self.candidates.fill(false);
        self.mark_event(event);
        self.run_candidates(event, stats, outcomes);
    }

    fn mark_event(&mut self, event: &Event) {
        if self.use_prefilter {
            self.prefilter.mark_event(event, &mut self.candidates);
            // The set's own prefilter reads the parsed fields exactly.
            self.candidates[self.rules.len()..].fill(true);
        } else {
            self.candidates.fill(true);
        }
    }

    fn run_candidates(&mut self, event: &mut Event, stats: &mut Stats, outcomes: &mut Vec<Outcome>) {
        stats.ensure_rules(&self.infos);
        for (index, rule) in self.rules.iter_mut().enumerate() {
            if !self.candidates[index] {
                continue;
            }
            let counters = &mut stats.rules[index];
            counters.evaluations += 1;
            let start = self.timing.then(Instant::now);
            let result = rule.evaluate(event);
            if let Some(start) = start {
                counters.time.observe(start.elapsed());
            }
            counters.fuel_consumed += rule.last_fuel_consumed();
            match result {
                Ok(findings) if findings.is_empty() => {}
                Ok(findings) => {
                    counters.alerts += 1;
                    outcomes.push(Outcome { rule: index, result: Ok(findings) });
                }
                Err(fault) => {
                    counters.count_fault(&fault);
                    outcomes.push(Outcome { rule: index, result: Err(fault) });
                }
            }
        }
        let first = self.rules.len();
        let Some(set) = &self.set else { return };
        if !self.candidates[first..].contains(&true) {
            return;
        }
        self.matches.clear();
        let start = self.timing.then(Instant::now);
        if self.use_prefilter {
            set.matches_with(event, &mut self.scratch, &mut self.matches);
            for rule in self.scratch.last_candidates() {
                stats.rules[first + rule].evaluations += 1;
            }
        } else {
            set.matches_without_prefilter(event, &mut self.matches);
            stats.rules[first..].iter_mut().for_each(|counters| counters.evaluations += 1);
        }
        if let Some(start) = start {
            stats.declarative_pass.observe(start.elapsed());
        }
        for found in self.matches.drain(..) {
            let index = first + found.rule;
            stats.rules[index].alerts += 1;
            let finding = declarative::finding(&self.infos[index], &found.matched);
            outcomes.push(Outcome { rule: index, result: Ok(vec![finding]) });
        }
    }
}

fn refused_duplicate(new: &Arc<RuleInfo>, other: &Path, kept: Option<Arc<RuleInfo>>) -> RuleChange {
    RuleChange::Refused {
        file: new.file.clone(),
        reason: EngineError::DuplicateUuid {
            uuid: new.uuid.clone(),
            first: other.display().to_string(),
            second: new.file.display().to_string(),
        }
        .to_string(),
        kept,
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
