//! The detection engine: every loaded rule against every event.
//!
//! An event is parsed at most once for all rules; the [`Prefilter`] decides
//! which rules are entered at all, and a document no rule could fire on is
//! only validated, never parsed into a tree.

use crate::prefilter::Prefilter;
use crate::rule::{Fault, Finding, RuleComponent, RuleInfo};
use crate::stats::Stats;
use dac_event::{Decoding, Event, ParseError};
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

pub struct Engine {
    rules: Vec<RuleComponent>,
    infos: Vec<Arc<RuleInfo>>,
    prefilter: Prefilter,
    use_prefilter: bool,
    candidates: Vec<bool>,
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
        Ok(Engine { candidates: vec![false; rules.len()], rules, infos, prefilter, use_prefilter: true })
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
        stats.ensure_rules(self.rules.len());
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
