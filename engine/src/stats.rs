//! Counters, in one place: what the pipeline saw and what each rule did.

use crate::rule::Fault;
use std::collections::BTreeMap;
use std::time::Duration;

/// Upper bounds of [`Latency`]'s buckets, in nanoseconds: from a
/// prefiltered-out microsecond to the 200 ms default deadline and beyond,
/// roughly ×2.5 apart, as Prometheus histograms usually are.
pub const LATENCY_BOUNDS_NS: [u64; 16] = [
    1_000,
    2_500,
    5_000,
    10_000,
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    100_000_000,
    250_000_000,
];

/// A histogram of evaluation times, with fixed buckets so that observing
/// is a few comparisons and two additions (it runs once per rule call).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Latency {
    /// Observations per bucket of [`LATENCY_BOUNDS_NS`] (not cumulative);
    /// the last counts those above every bound.
    pub buckets: [u64; LATENCY_BOUNDS_NS.len() + 1],
    pub count: u64,
    pub sum_ns: u64,
}

impl Latency {
    pub fn observe(&mut self, elapsed: Duration) {
        let ns = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        let bucket = LATENCY_BOUNDS_NS.partition_point(|&bound| bound < ns);
        self.buckets[bucket] += 1;
        self.count += 1;
        self.sum_ns = self.sum_ns.saturating_add(ns);
    }

    /// Adds `other`'s observations to these.
    pub fn absorb(&mut self, other: &Latency) {
        for (mine, theirs) in self.buckets.iter_mut().zip(other.buckets) {
            *mine += theirs;
        }
        self.count += other.count;
        self.sum_ns = self.sum_ns.saturating_add(other.sum_ns);
    }
}

/// What one rule has done, kept by the engine with the rule (see
/// [`crate::Engine::rules`]): a new version of the rule counts on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuleStats {
    /// Times the rule was entered (the prefilter skips the rest).
    pub evaluations: u64,
    /// Events the rule fired on.
    pub alerts: u64,
    /// Of those, matches a suppression silenced (`crate::policy`).
    pub suppressed: u64,
    /// Of those, repeats folded into an earlier dedup alert.
    pub folded: u64,
    /// Matches that only fed correlations (the rule is aggregated by a
    /// correlation without `generate: true`), not alerted on their own.
    pub correlated: u64,
    /// Evaluations that faulted, by [`Fault::kind`].
    pub faults: BTreeMap<&'static str, u64>,
    /// Time in the sandbox per evaluation, when the engine times calls
    /// ([`crate::Engine::set_timing`]); components only: declarative rules
    /// are matched together, see [`Stats::declarative_pass`].
    pub time: Latency,
    /// Fuel burnt, when the rule runs with a fuel budget.
    pub fuel_consumed: u64,
}

impl RuleStats {
    pub fn count_fault(&mut self, fault: &Fault) {
        *self.faults.entry(fault.kind()).or_default() += 1;
    }

    pub fn fault_total(&self) -> u64 {
        self.faults.values().sum()
    }

    /// Adds `other`'s counts to these (the same rule, counted by an
    /// engine since replaced).
    pub fn absorb(&mut self, other: &RuleStats) {
        self.evaluations += other.evaluations;
        self.alerts += other.alerts;
        self.suppressed += other.suppressed;
        self.folded += other.folded;
        self.correlated += other.correlated;
        for (kind, count) in &other.faults {
            *self.faults.entry(kind).or_default() += count;
        }
        self.time.absorb(&other.time);
        self.fuel_consumed += other.fuel_consumed;
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
    /// Of those, how many stored a new state with the position (the
    /// correlations' windows).
    pub states_stored: u64,
    /// Events of a partition skipped because the worker that owned their
    /// bucket before had evaluated them (after the partition count changed).
    pub handed_over: u64,
    /// Events partition 0 took without a bucket number (see `dac watch
    /// --partition`).
    pub stray: u64,
    /// Events whose stored bucket is not their partition key's.
    pub misrouted: u64,
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

/// The counters of a run (per rule: [`RuleStats`], kept by the engine):
/// the summary, the periodic stats line and `dac serve`'s metrics endpoint
/// read the same numbers.
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
    /// Matches (and correlation firings) that only fed a correlation.
    pub correlated: u64,
    /// Time of the one pass matching every declarative rule against an
    /// event, when the engine times calls.
    pub declarative_pass: Latency,
    /// Refreshed by the pipeline whenever it commits.
    pub source: SourceCounters,
    pub sink: SinkCounters,
    /// What the correlations' windows hold (group keys, estimated bytes),
    /// refreshed whenever the alerts are flushed.
    pub state_groups: u64,
    pub state_bytes: u64,
}

impl Stats {
    /// Adds `other`'s counts to these (the same tenant, counted before a
    /// reload replaced it). The source's and sink's counters are not
    /// summed: they are a stream's, refreshed at each commit.
    pub fn absorb(&mut self, other: &Stats) {
        self.events += other.events;
        self.prefiltered_events += other.prefiltered_events;
        self.malformed += other.malformed;
        self.repaired_utf8 += other.repaired_utf8;
        self.alerts += other.alerts;
        self.suppressed += other.suppressed;
        self.folded += other.folded;
        self.correlated += other.correlated;
        self.declarative_pass.absorb(&other.declarative_pass);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_buckets_are_upper_bounds_inclusive() {
        let mut latency = Latency::default();
        latency.observe(Duration::from_nanos(1_000)); // on the first bound
        latency.observe(Duration::from_nanos(1_001));
        latency.observe(Duration::from_secs(5)); // above every bound
        assert_eq!(latency.buckets[0], 1);
        assert_eq!(latency.buckets[1], 1);
        assert_eq!(latency.buckets[LATENCY_BOUNDS_NS.len()], 1);
        assert_eq!((latency.count, latency.sum_ns), (3, 5_000_002_001));
        let mut total = latency.clone();
        total.absorb(&latency);
        assert_eq!((total.count, total.buckets[1], total.sum_ns), (6, 2, 10_000_004_002));
    }

    #[test]
    fn rule_counters_add_up() {
        let mut old = RuleStats { evaluations: 3, alerts: 1, fuel_consumed: 10, ..Default::default() };
        old.faults.insert("fuel", 2);
        let mut new = RuleStats { evaluations: 1, fuel_consumed: 5, ..Default::default() };
        new.faults.insert("fuel", 1);
        new.faults.insert("trap", 1);
        old.absorb(&new);
        assert_eq!((old.evaluations, old.alerts, old.fuel_consumed), (4, 1, 15));
        assert_eq!(old.faults, BTreeMap::from([("fuel", 3), ("trap", 1)]));
    }
}
