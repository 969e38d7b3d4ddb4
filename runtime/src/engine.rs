//! The detection engine: every loaded rule against every event.
//!
//! An event is parsed at most once for all rules; the [`Prefilter`] decides
//! which rules are entered at all, and a document no rule could fire on is
//! only validated, never parsed into a tree.

use crate::prefilter::Prefilter;
use crate::reload::{Reload, RuleWatcher};
use crate::rule::{Fault, Finding, RuleComponent, RuleInfo};
use crate::stats::{RuleStats, Stats};
use dac_event::{Decoding, Event, ParseError};
use std::path::PathBuf;
use std::sync::Arc;

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
    rules: Vec<RuleComponent>,
    infos: Vec<Arc<RuleInfo>>,
    prefilter: Prefilter,
    use_prefilter: bool,
    candidates: Vec<bool>,
    watcher: Option<RuleWatcher>,
}

impl Engine {
    pub fn new(rules: Vec<RuleComponent>) -> Result<Engine, EngineError> {
        let infos: Vec<Arc<RuleInfo>> = rules.iter().map(|r| r.info().clone()).collect();
        for (i, a) in infos.iter().enumerate() {
            if let Some(b) = infos[..i].iter().find(|b| b.uuid == a.uuid) {
                return Err(EngineError::DuplicateUuid {
                    uuid: a.uuid.clone(),
                    first: b.file.display().to_string(),
                    second: a.file.display().to_string(),
                });
            }
        }
        let prefilter = Prefilter::new(infos.iter().map(|i| i.as_ref()));
        Ok(Engine { candidates: vec![false; rules.len()], rules, infos, prefilter, use_prefilter: true, watcher: None })
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

    /// Swaps changed rules in: a file already loaded is replaced where it
    /// stands (its counters carry on), a new one is appended, a removed one
    /// dropped with its counters. A rule whose uuid another file already
    /// uses is refused, as at start.
    pub fn apply_reload(&mut self, reload: Reload, stats: &mut Stats) -> Vec<RuleChange> {
        stats.ensure_rules(&self.infos);
        let mut changes = Vec::new();
        for file in reload.removed {
            if let Some(index) = self.rules.iter().position(|rule| rule.info().file == file) {
                let rule = self.rules.remove(index);
                stats.rules.remove(index);
                changes.push(RuleChange::Removed(rule.info().clone()));
            }
        }
        for rule in reload.loaded {
            let new = rule.info().clone();
            let same_file = self.rules.iter().position(|r| r.info().file == new.file);
            let kept = same_file.map(|index| self.rules[index].info().clone());
            if let Some(other) = self.rules.iter().find(|r| r.info().uuid == new.uuid && r.info().file != new.file) {
                changes.push(RuleChange::Refused {
                    file: new.file.clone(),
                    reason: EngineError::DuplicateUuid {
                        uuid: new.uuid.clone(),
                        first: other.info().file.display().to_string(),
                        second: new.file.display().to_string(),
                    }
                    .to_string(),
                    kept,
                });
                continue;
            }
            match same_file {
                Some(index) => {
                    self.rules[index] = rule;
                    stats.rules[index].rule = new.file_name();
                    changes.push(RuleChange::Replaced { old: kept.expect("same file"), new });
                }
                None => {
                    self.rules.push(rule);
                    stats.rules.push(RuleStats { rule: new.file_name(), ..Default::default() });
                    changes.push(RuleChange::Added(new));
                }
            }
        }
        for error in reload.failed {
            let kept = self.rules.iter().find(|rule| rule.info().file == error.file()).map(|rule| rule.info().clone());
            changes.push(RuleChange::Refused { file: error.file().to_owned(), reason: error.to_string(), kept });
        }
        self.infos = self.rules.iter().map(|r| r.info().clone()).collect();
        self.prefilter = Prefilter::new(self.infos.iter().map(|i| i.as_ref()));
        self.candidates = vec![false; self.rules.len()];
        changes
    }

    /// Turns the literal prefilter off, so every rule sees every event
    /// (for measuring, and for rules whose declared literals are in doubt).
    pub fn set_prefilter(&mut self, enabled: bool) {
        self.use_prefilter = enabled;
    }

    pub fn rules(&self) -> &[RuleComponent] {
        &self.rules
    }

    pub fn infos(&self) -> &[Arc<RuleInfo>] {
        &self.infos
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
            match rule.evaluate(event) {
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
