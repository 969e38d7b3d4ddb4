//! Counters, in one place: what the pipeline saw and what each rule did.

use crate::rule::Fault;
use std::collections::BTreeMap;

/// Per-rule counters, indexed like [`crate::Engine::rules`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuleStats {
    /// Times the rule was entered (the prefilter skips the rest).
    pub evaluations: u64,
    /// Events the rule fired on.
    pub alerts: u64,
    /// Evaluations that faulted, by [`Fault::kind`].
    pub faults: BTreeMap<&'static str, u64>,
}

impl RuleStats {
    pub fn count_fault(&mut self, fault: &Fault) {
        *self.faults.entry(fault.kind()).or_default() += 1;
    }

    pub fn fault_total(&self) -> u64 {
        self.faults.values().sum()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Well-formed events evaluated.
    pub events: u64,
    /// Of those, events no rule had to see (validated, never parsed).
    pub prefiltered_events: u64,
    /// Input that was not an event, reported by location and skipped.
    pub malformed: u64,
    /// Events whose non-UTF-8 bytes were replaced by U+FFFD.
    pub repaired_utf8: u64,
    pub alerts: u64,
    pub rules: Vec<RuleStats>,
}

impl Stats {
    pub(crate) fn ensure_rules(&mut self, count: usize) {
        if self.rules.len() < count {
            self.rules.resize_with(count, RuleStats::default);
        }
    }

    pub fn faults(&self) -> u64 {
        self.rules.iter().map(RuleStats::fault_total).sum()
    }
}
