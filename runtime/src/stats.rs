//! Counters, in one place: what the pipeline saw and what each rule did.

use crate::rule::Fault;
use std::collections::BTreeMap;

/// Per-rule counters, indexed like [`crate::Engine::rules`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuleStats {
    /// The rule's file name, for per-rule lines.
    pub rule: String,
    /// Times the rule was entered (the prefilter skips the rest).
    pub evaluations: u64,
    /// Events the rule fired on.
    pub alerts: u64,
    /// Of those, matches a suppression silenced (`crate::policy`).
    pub suppressed: u64,
    /// Of those, repeats folded into an earlier dedup alert.
    pub folded: u64,
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

/// What a live source counted (a change stream); zero for a file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SourceCounters {
    /// Change events without a document (not evaluated).
    pub without_document: u64,
    pub reconnects: u64,
    /// Times the stream restarted from now because its history was lost.
    pub history_gaps: u64,
    /// Positions stored.
    pub commits: u64,
    /// How far behind the stream the last event read was: now minus the
    /// time the server recorded it; zero while the stream is idle.
    pub lag: Option<std::time::Duration>,
}

/// What a sink counted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SinkCounters {
    /// Alerts made durable.
    pub written: u64,
    /// Alerts that were already there (re-evaluated after a restart).
    pub duplicates: u64,
    /// Repeats folded into a dedup alert document (count, last seen).
    pub folded: u64,
}

/// Every counter of a run, in one place: the summary, the periodic stats
/// line and (later) a metrics endpoint read the same numbers.
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
    /// Alerts sent to the sink (matches less suppressed and folded ones).
    pub alerts: u64,
    /// Matches silenced by a suppression.
    pub suppressed: u64,
    /// Repeated matches folded into an earlier dedup alert.
    pub folded: u64,
    pub rules: Vec<RuleStats>,
    /// Refreshed by the pipeline whenever it commits.
    pub source: SourceCounters,
    pub sink: SinkCounters,
}

impl Stats {
    pub(crate) fn ensure_rules(&mut self, infos: &[std::sync::Arc<crate::RuleInfo>]) {
        if self.rules.len() < infos.len() {
            let known = self.rules.len();
            self.rules
                .extend(infos[known..].iter().map(|info| RuleStats { rule: info.file_name(), ..Default::default() }));
        }
    }

    pub fn faults(&self) -> u64 {
        self.rules.iter().map(RuleStats::fault_total).sum()
    }
}
