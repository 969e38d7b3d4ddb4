//! Evaluating Sigma correlations over a stream: per correlation and group
//! key, the matches of its rules within a sliding window of event time,
//! held by the host, bounded, and dropped once no event can reach them.
//!
//! The semantics (docs/correlation.md has them with examples):
//! - **Event time.** Each match carries its event's time (`ts`, in
//!   milliseconds); a match without one cannot be placed in a window and
//!   is counted (`untimed`), not correlated.
//! - **Sliding window, checked at every match.** When a match of a
//!   referenced rule arrives at time `t`, the window is `[t − timespan,
//!   t]`, both ends included, over that group's matches; the aggregate
//!   (count, distinct values, rules seen, sum, …) is compared with the
//!   condition right then. This is rsigma's window.
//! - **One alert per breach.** When the condition holds, the correlation
//!   fires and the group's window starts again empty (rsigma's `--action
//!   reset`, ElastAlert's and Hayabusa's behaviour): a burst of 50 events
//!   over a `gte: 10` threshold is 5 alerts, not 41.
//! - **Order.** Matches are taken in stream order. One that arrives late
//!   by at most the allowed lateness (older than its group's newest match)
//!   joins the window by its own time, and the window checked is the one
//!   ending at its time; one later than that is counted (`late`) and not
//!   correlated. The outcome depends only on the stream's order, so a
//!   replay of the same stream gives the same alerts.
//! - **Events, not matches.** An event that matches two referenced rules
//!   counts once for `event_count` and the value types (rsigma counts it
//!   twice), and for both rules in `temporal` types.
//! - **Group keys.** A group-by field's value as text (a number as JSON
//!   spells it); a missing or null field is `null`, its own group (as in
//!   rsigma).
//! - **Chaining.** A correlation may aggregate another's alerts: each
//!   alert is one match at the time of the event that fired it, grouped
//!   by the child's group key values of the same field names.
//!
//! State is bounded per correlation and per rule set
//! ([`CorrelationLimits`]): past `max_groups` group keys or `max_bytes` of
//! one correlation, or `total_groups` or `total_bytes` of all of them (a
//! `dac serve` tenant's quota), a match that would need more is refused and
//! counted (`refused`), never silently lost.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use dac_event::{Event, Value};

use crate::correlation::{number, Correlation, CorrelationType};

/// What the correlations' state may hold, and how late a match may be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorrelationLimits {
    /// Group keys one correlation keeps at once (default 1,000,000).
    pub max_groups: usize,
    /// Bytes of state one correlation keeps at once, estimated from what
    /// it holds (default 256 MiB).
    pub max_bytes: usize,
    /// Group keys all the correlations of one rule set keep together (a
    /// `dac serve` tenant's quota; default 4,000,000).
    pub total_groups: usize,
    /// Estimated bytes all the correlations of one rule set keep together
    /// (default 1 GiB).
    pub total_bytes: usize,
    /// How much older than its group's newest match a match may be and
    /// still be correlated, in milliseconds (default 60,000: one minute).
    pub lateness_ms: i64,
    /// Event ids an alert carries as its evidence (default 100; the count
    /// says how many there were).
    pub max_evidence: usize,
}

impl Default for CorrelationLimits {
    fn default() -> CorrelationLimits {
        CorrelationLimits {
            max_groups: 1_000_000,
            max_bytes: 256 << 20,
            total_groups: 4_000_000,
            total_bytes: 1 << 30,
            lateness_ms: 60_000,
            max_evidence: 100,
        }
    }
}

/// A rule a correlation may refer to, as the caller numbers its rules.
#[derive(Debug, Clone)]
pub struct RuleName<'a> {
    /// Its `id` (dac's uuid).
    pub uuid: &'a str,
    /// Its Sigma `name`, if it has one.
    pub name: Option<&'a str>,
}

/// A correlation for [`Correlator::new`]: the caller's index for it (its
/// alerts name it), and what decides whether its state survives a change
/// of the rule set (the same key: the same state).
#[derive(Debug, Clone)]
pub struct CorrelationRule {
    pub rule: usize,
    pub key: String,
    pub correlation: Correlation,
}

/// Why a correlation cannot run; `correlation` is its caller index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unresolved {
    pub correlation: usize,
    /// The line of the reference, in the correlation's file.
    pub line: usize,
    pub message: String,
}

/// One correlation firing: the evidence an alert carries.
#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    /// The caller's index of the correlation.
    pub rule: usize,
    pub kind: CorrelationType,
    /// The group-by fields and this group's values (`None`: missing/null).
    pub group: Vec<(String, Option<String>)>,
    /// The time of the window's first match and of the match that fired
    /// it, in milliseconds.
    pub window_start: i64,
    pub window_end: i64,
    /// The aggregate that met the condition.
    pub value: f64,
    /// The condition, e.g. `gte 5`.
    pub condition: String,
    /// The window's matches, oldest first (at most `max_evidence`; the
    /// rest are counted in `events_total`).
    pub events: Vec<Evidence>,
    pub events_total: usize,
    /// `value_count`'s distinct values (at most `max_evidence`).
    pub values: Vec<String>,
}

/// One match in a correlation's window.
#[derive(Debug, Clone, PartialEq)]
pub struct Evidence {
    /// The event's id (`_id`), when it has one.
    pub id: Option<Arc<str>>,
    pub ts: i64,
    /// The referenced rule, as the correlation's `rules` names it.
    pub rule: Arc<str>,
}

/// Counters of one correlation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CorrelationStats {
    /// Matches taken into a window.
    pub matches: u64,
    /// Alerts.
    pub fired: u64,
    /// Matches of an event without a usable `ts`.
    pub untimed: u64,
    /// Matches later than the allowed lateness.
    pub late: u64,
    /// Matches refused because the state was at a limit: the
    /// correlation's own, or the rule set's quota.
    pub refused: u64,
    /// Group keys and estimated bytes held now.
    pub groups: u64,
    pub bytes: u64,
}

impl CorrelationStats {
    /// Adds `other`'s counts to these (several correlations summed, e.g.
    /// the documents of one file).
    pub fn absorb(&mut self, other: &CorrelationStats) {
        self.matches += other.matches;
        self.fired += other.fired;
        self.untimed += other.untimed;
        self.late += other.late;
        self.refused += other.refused;
        self.groups += other.groups;
        self.bytes += other.bytes;
    }
}

/// What [`Correlator::saved`] writes: the clock, and per correlation its
/// key and windows. [`SavedCorrelator`] reads the same layout back.
#[derive(serde::Serialize)]
struct SavedRef<'a> {
    clock: i64,
    seq: u64,
    correlations: Vec<SavedCorrelationRef<'a>>,
}

#[derive(serde::Serialize)]
struct SavedCorrelationRef<'a> {
    key: &'a str,
    /// As a sequence of pairs: formats whose map keys must be strings
    /// (JSON) take it too.
    #[serde(serialize_with = "pairs")]
    groups: &'a HashMap<Arc<str>, Group>,
    touched: &'a VecDeque<(i64, Arc<str>)>,
}

/// Windows saved by [`Correlator::saved`], read back (with the serde
/// format they were written in) for [`Correlator::restore`].
#[derive(serde::Deserialize)]
pub struct SavedCorrelator {
    clock: i64,
    seq: u64,
    correlations: Vec<SavedCorrelation>,
}

#[derive(serde::Deserialize)]
struct SavedCorrelation {
    key: String,
    #[serde(deserialize_with = "from_pairs")]
    groups: HashMap<Arc<str>, Group>,
    touched: VecDeque<(i64, Arc<str>)>,
}

fn pairs<S: serde::Serializer>(groups: &&HashMap<Arc<str>, Group>, out: S) -> Result<S::Ok, S::Error> {
    out.collect_seq(groups.iter())
}

fn from_pairs<'de, D: serde::Deserializer<'de>>(input: D) -> Result<HashMap<Arc<str>, Group>, D::Error> {
    let pairs: Vec<(Arc<str>, Group)> = serde::Deserialize::deserialize(input)?;
    Ok(pairs.into_iter().collect())
}

impl SavedCorrelator {
    /// Keeps the groups for which `keep(correlation key, group key)` holds
    /// (and their places in the expiry queue), drops the others: what one
    /// partition of a stream takes of a state saved by another
    /// ([`Correlator::group_part`] finds the partition key in a group key).
    pub fn retain_groups(&mut self, mut keep: impl FnMut(&str, &str) -> bool) {
        for correlation in &mut self.correlations {
            let key = correlation.key.as_str();
            correlation.groups.retain(|group, _| keep(key, group));
            let groups = &correlation.groups;
            correlation.touched.retain(|(_, group)| groups.contains_key(group));
        }
    }

    /// Adds `other`'s windows to these: the states of disjoint partitions
    /// of one stream, saved by different workers, become one. The clock
    /// takes the *earlier* of the two (of those that saw an event): the
    /// stream resumes at the earliest of their positions, and a clock
    /// ahead of the events evaluated again would drop windows they still
    /// reach. Sequence numbers take the later; a group in both keeps this
    /// one's.
    pub fn merge(&mut self, other: SavedCorrelator) {
        self.clock = match (self.clock, other.clock) {
            (i64::MIN, clock) | (clock, i64::MIN) => clock,
            (a, b) => a.min(b),
        };
        self.seq = self.seq.max(other.seq);
        for theirs in other.correlations {
            let Some(ours) = self.correlations.iter_mut().find(|c| c.key == theirs.key) else {
                self.correlations.push(theirs);
                continue;
            };
            for (group, window) in theirs.groups {
                ours.groups.entry(group).or_insert(window);
            }
            ours.touched.extend(theirs.touched);
            // Expiry pops the oldest first; a stable sort keeps each
            // worker's order among equal times.
            ours.touched.make_contiguous().sort_by_key(|(time, _)| *time);
        }
    }
}

impl Default for SavedCorrelator {
    /// No window: what a stream without a stored state starts from.
    fn default() -> SavedCorrelator {
        SavedCorrelator { clock: i64::MIN, seq: 0, correlations: Vec::new() }
    }
}

/// The value at `index` of a group key (`None` inside when the field was
/// missing), or `None` past its end.
pub fn group_key_part(key: &str, index: usize) -> Option<Option<String>> {
    key_parts(key).into_iter().nth(index)
}

/// What [`Correlator::restore`] took back.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Restored {
    /// Correlations whose windows were restored, and what they hold.
    pub restored: usize,
    pub groups: usize,
    pub bytes: usize,
    /// Keys of saved correlations that no longer run (their rule changed
    /// or went): their windows are dropped.
    pub dropped: Vec<String>,
    /// Caller indexes of running correlations that were not saved: they
    /// start empty.
    pub fresh: Vec<usize>,
}

/// A match in a window.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Entry {
    ts: i64,
    /// The stream position of its event: one event, one entry per rule.
    seq: u64,
    /// Index into the correlation's `rules`.
    rule: u16,
    value: Option<Aggregated>,
    id: Option<Arc<str>>,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
enum Aggregated {
    Text(Box<str>),
    Number(f64),
}

#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct Group {
    /// Sorted by time (then arrival).
    entries: VecDeque<Entry>,
    newest: i64,
    /// Counted again from the entries when restored (`State::recount`),
    /// never taken from stored bytes.
    #[serde(skip)]
    bytes: usize,
}

/// A group's key: its group-by values back to back, each `\0` (missing
/// or null) or `\x01`, the text's length in bytes, `:` and the text. One
/// string, unambiguous, built in a reused buffer: a match hashes and looks
/// up one `&str` and allocates only for a new group ([`key_parts`] reads
/// the values back for an alert).
fn push_key_part(key: &mut String, value: Option<&str>) {
    use std::fmt::Write;
    match value {
        None => key.push('\0'),
        Some(text) => {
            key.push('\u{1}');
            let _ = write!(key, "{}:", text.len());
            key.push_str(text);
        }
    }
}

/// The values of a key of [`push_key_part`]s.
fn key_parts(mut key: &str) -> Vec<Option<String>> {
    let mut parts = Vec::new();
    while !key.is_empty() {
        if let Some(rest) = key.strip_prefix('\0') {
            parts.push(None);
            key = rest;
            continue;
        }
        // `\x01LEN:TEXT`; anything else is not a key this module built.
        let Some((len, rest)) = key.strip_prefix('\u{1}').and_then(|rest| rest.split_once(':')) else { break };
        let Some((text, rest)) = len.parse::<usize>().ok().and_then(|n| Some((rest.get(..n)?, rest.get(n..)?))) else {
            break;
        };
        parts.push(Some(text.to_owned()));
        key = rest;
    }
    parts
}

struct State {
    rule: usize,
    key: String,
    correlation: Correlation,
    rule_names: Vec<Arc<str>>,
    /// For each of `rules`: a base rule (caller index) or another
    /// correlation (index into the correlator's list).
    inputs: Vec<Input>,
    /// Keys shared (`Arc`) with `touched`: a match of a known group
    /// clones no key.
    groups: HashMap<Arc<str>, Group>,
    /// Groups by the time of their newest match when touched, oldest
    /// first, to drop expired ones without scanning them all.
    touched: VecDeque<(i64, Arc<str>)>,
    bytes: usize,
    stats: CorrelationStats,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Input {
    Rule(usize),
    Correlation(usize),
}

/// The correlations of a rule set and their windows.
pub struct Correlator {
    /// Children before the correlations that aggregate them.
    states: Vec<State>,
    limits: CorrelationLimits,
    /// Per caller rule: whether its own alerts are kept (not referenced, or
    /// some referencing correlation says `generate: true`).
    generates: Vec<bool>,
    /// The newest event time seen.
    clock: i64,
    seq: u64,
    /// Reused for each match's group key.
    key: String,
}

impl Default for Correlator {
    /// No correlation.
    fn default() -> Correlator {
        Correlator::new(&[], Vec::new(), CorrelationLimits::default()).0
    }
}

/// A fixed cost per entry and per group, for the byte estimate.
const ENTRY_BYTES: usize = std::mem::size_of::<Entry>() + 16;
const GROUP_BYTES: usize = 96;
const TOUCH_BYTES: usize = 32;

impl Correlator {
    /// Resolves each correlation's `rules` against `rules` (the caller's
    /// rules by index, correlations included) by Sigma name or id. A
    /// reference to nothing, to itself, or a cycle is refused, naming the
    /// line; the other correlations still run.
    pub fn new(
        rules: &[RuleName<'_>],
        correlations: Vec<CorrelationRule>,
        limits: CorrelationLimits,
    ) -> (Correlator, Vec<Unresolved>) {
        let mut refused = Vec::new();
        let by_rule: HashMap<usize, usize> = correlations.iter().enumerate().map(|(i, c)| (c.rule, i)).collect();
        // Each correlation's inputs, or why it has none.
        let mut resolved: Vec<Option<Vec<Input>>> = Vec::with_capacity(correlations.len());
        for c in &correlations {
            let mut inputs = Vec::new();
            let mut error = None;
            for (reference, line) in &c.correlation.rules {
                let found: Vec<usize> = rules
                    .iter()
                    .enumerate()
                    .filter(|(_, r)| r.uuid == reference || r.name == Some(reference.as_str()))
                    .map(|(i, _)| i)
                    .collect();
                match found.as_slice() {
                    [index] if *index == c.rule => {
                        error = Some((*line, format!("'{reference}' is this correlation itself")));
                    }
                    [index] => inputs.push(match by_rule.get(index) {
                        Some(&corr) => Input::Correlation(corr),
                        None => Input::Rule(*index),
                    }),
                    [] => {
                        error = Some((
                            *line,
                            format!(
                                "no rule loaded has the id or Sigma name '{reference}' (load it with the correlation)"
                            ),
                        ))
                    }
                    _ => {
                        error =
                            Some((*line, format!("'{reference}' names {} rules (a name must be unique)", found.len())))
                    }
                }
                if error.is_some() {
                    break;
                }
            }
            if let Some((line, message)) = error {
                refused.push(Unresolved { correlation: c.rule, line, message });
                resolved.push(None);
            } else {
                resolved.push(Some(inputs));
            }
        }
        // Children first; a correlation on a refused one, or in a cycle, is
        // refused too.
        let mut order = Vec::new();
        let mut mark = vec![0u8; correlations.len()]; // 0 new, 1 visiting, 2 done, 3 refused
        fn visit(
            i: usize,
            resolved: &[Option<Vec<Input>>],
            mark: &mut [u8],
            order: &mut Vec<usize>,
            depth: usize,
        ) -> bool {
            match mark[i] {
                2 => return true,
                1 | 3 => return false,
                _ => {}
            }
            let Some(inputs) = &resolved[i] else {
                mark[i] = 3;
                return false;
            };
            if depth > 16 {
                mark[i] = 3;
                return false;
            }
            mark[i] = 1;
            for input in inputs {
                if let Input::Correlation(child) = input {
                    if !visit(*child, resolved, mark, order, depth + 1) {
                        mark[i] = 3;
                        return false;
                    }
                }
            }
            mark[i] = 2;
            order.push(i);
            true
        }
        for i in 0..correlations.len() {
            if !visit(i, &resolved, &mut mark, &mut order, 0) && resolved[i].is_some() {
                let line = correlations[i].correlation.rules.first().map_or(1, |(_, l)| *l);
                refused.push(Unresolved {
                    correlation: correlations[i].rule,
                    line,
                    message: "aggregates a correlation that cannot run, or one that aggregates it (a cycle), or \
                              chains more than 16 deep"
                        .into(),
                });
            }
        }
        let position: HashMap<usize, usize> = order.iter().enumerate().map(|(p, &i)| (i, p)).collect();
        let mut slots: Vec<Option<CorrelationRule>> = correlations.into_iter().map(Some).collect();
        // Only resolved correlations whose children are ordered were
        // ordered, so every `take` and lookup here finds its value.
        let states: Vec<State> = order
            .iter()
            .filter_map(|&i| {
                let c = slots[i].take()?;
                let inputs = resolved[i]
                    .take()?
                    .into_iter()
                    .map(|input| match input {
                        Input::Correlation(child) => position.get(&child).map(|&p| Input::Correlation(p)),
                        rule => Some(rule),
                    })
                    .collect::<Option<Vec<Input>>>()?;
                Some(State {
                    rule: c.rule,
                    key: c.key,
                    rule_names: c.correlation.rules.iter().map(|(r, _)| Arc::from(r.as_str())).collect(),
                    correlation: c.correlation,
                    inputs,
                    groups: HashMap::new(),
                    touched: VecDeque::new(),
                    bytes: 0,
                    stats: CorrelationStats::default(),
                })
            })
            .collect();
        let mut generates = vec![true; rules.len()];
        let mut referenced = vec![false; rules.len()];
        let mut wanted = vec![false; rules.len()];
        for state in &states {
            for input in &state.inputs {
                let target = match input {
                    Input::Rule(r) => *r,
                    Input::Correlation(c) => states_rule(&states, *c),
                };
                referenced[target] = true;
                wanted[target] |= state.correlation.generate;
            }
        }
        for r in 0..rules.len() {
            generates[r] = !referenced[r] || wanted[r];
        }
        (Correlator { states, limits, generates, clock: i64::MIN, seq: 0, key: String::new() }, refused)
    }

    /// Where a correlation's group key holds the value of `field` (the
    /// partition key of a partitioned stream), whatever rule matched: the
    /// index of its first group-by entry that reads `field` from every
    /// referenced rule's events, directly or through a referenced
    /// correlation's group of the same name. `None` when no entry does: its
    /// groups can span partitions. `key` is the correlation's
    /// [`Correlator::saved`] key.
    pub fn group_part(&self, key: &str, field: &str) -> Option<usize> {
        let at = self.states.iter().position(|s| s.key == key)?;
        self.group_part_at(at, field)
    }

    fn group_part_at(&self, at: usize, field: &str) -> Option<usize> {
        let state = &self.states[at];
        state.correlation.group_by.iter().position(|group| {
            state.inputs.iter().zip(&state.rule_names).all(|(input, name)| {
                let read = group.field_for(name);
                match *input {
                    Input::Rule(_) => read.path.as_deref() == Some(field),
                    // A child's hit carries its group values by name.
                    Input::Correlation(child) => {
                        let Some(part) = self.group_part_at(child, field) else { return false };
                        self.states[child].correlation.group_by.get(part).is_some_and(|g| g.name == read.name)
                    }
                }
            })
        })
    }

    /// The correlations (caller indexes) whose groups do not all hold one
    /// value of `field`: on a stream partitioned by `field` their windows
    /// would be split across workers.
    pub fn spanning(&self, field: &str) -> Vec<usize> {
        (0..self.states.len())
            .filter(|&at| self.group_part_at(at, field).is_none())
            .map(|at| self.states[at].rule)
            .collect()
    }

    /// Each correlation's [`Correlator::saved`] key and where its group key
    /// holds `field` (see [`Correlator::group_part`]).
    pub fn group_parts(&self, field: &str) -> Vec<(String, Option<usize>)> {
        (0..self.states.len()).map(|at| (self.states[at].key.clone(), self.group_part_at(at, field))).collect()
    }

    /// Whether there is any correlation to feed.
    pub fn is_empty(&self) -> bool {
        self.states.is_empty()
    }

    /// Whether the caller's rule `rule` alerts on its own: not referenced by
    /// a correlation, or referenced by one that says `generate: true`.
    pub fn generates(&self, rule: usize) -> bool {
        self.generates.get(rule).copied().unwrap_or(true)
    }

    /// Whether the caller's rule `rule` feeds some correlation.
    pub fn feeds(&self, rule: usize) -> bool {
        self.states.iter().any(|s| s.inputs.contains(&Input::Rule(rule)))
    }

    /// The caller indexes of the correlations that run.
    pub fn correlations(&self) -> impl Iterator<Item = usize> + '_ {
        self.states.iter().map(|s| s.rule)
    }

    /// The counters of the correlation with caller index `rule`.
    pub fn stats(&self, rule: usize) -> Option<&CorrelationStats> {
        self.states.iter().find(|s| s.rule == rule).map(|s| &s.stats)
    }

    /// Takes over `old`'s windows for every correlation with the same key
    /// (unchanged by a reload); the others start empty.
    pub fn adopt(&mut self, mut old: Correlator) {
        self.clock = self.clock.max(old.clock);
        self.seq = self.seq.max(old.seq);
        for state in &mut self.states {
            if let Some(previous) = old.states.iter_mut().find(|s| s.key == state.key) {
                state.groups = std::mem::take(&mut previous.groups);
                state.touched = std::mem::take(&mut previous.touched);
                state.bytes = previous.bytes;
                state.stats = std::mem::take(&mut previous.stats);
            }
        }
    }

    /// The windows of every correlation, for [`Correlator::restore`] after
    /// a restart: serialize it (any serde format) and store it with the
    /// stream position it belongs to.
    pub fn saved(&self) -> impl serde::Serialize + '_ {
        SavedRef {
            clock: self.clock,
            seq: self.seq,
            correlations: self
                .states
                .iter()
                .map(|s| SavedCorrelationRef { key: &s.key, groups: &s.groups, touched: &s.touched })
                .collect(),
        }
    }

    /// Takes the windows of [`Correlator::saved`] back, for every
    /// correlation with the same key (rule and version): fed the events
    /// after the position they were saved at, it then fires exactly as the
    /// correlator that saved them would have. Saved correlations no longer
    /// running are dropped; running ones that were not saved start empty
    /// (both are reported).
    pub fn restore(&mut self, saved: SavedCorrelator) -> Restored {
        let mut restored = Restored::default();
        self.clock = self.clock.max(saved.clock);
        self.seq = self.seq.max(saved.seq);
        let mut taken = vec![false; self.states.len()];
        for correlation in saved.correlations {
            let Some(at) = self.states.iter().position(|s| s.key == correlation.key) else {
                restored.dropped.push(correlation.key);
                continue;
            };
            let state = &mut self.states[at];
            state.groups = correlation.groups;
            state.touched = correlation.touched;
            state.recount();
            restored.groups += state.groups.len();
            restored.bytes += state.bytes;
            taken[at] = true;
        }
        restored.restored = taken.iter().filter(|t| **t).count();
        restored.fresh = self.states.iter().zip(&taken).filter(|(_, t)| !**t).map(|(s, _)| s.rule).collect();
        restored
    }

    /// Feeds one event's matches, in stream order: `matched` holds the
    /// caller's indexes of the rules that matched it (in any order), `ts`
    /// its time in milliseconds. The correlations that fire are appended
    /// to `hits`, children before the correlations they feed.
    pub fn observe(&mut self, event: &Event, ts: Option<i64>, matched: &[usize], hits: &mut Vec<Hit>) {
        if self.states.is_empty() || matched.is_empty() {
            return;
        }
        self.seq += 1;
        let seq = self.seq;
        let Some(ts) = ts else {
            for state in &mut self.states {
                if state.inputs.iter().any(|i| matches!(i, Input::Rule(r) if matched.contains(r))) {
                    state.stats.untimed += 1;
                }
            }
            return;
        };
        self.clock = self.clock.max(ts);
        let id: Option<Arc<str>> = event.id().map(Arc::from);
        let first_hit = hits.len();
        // What every correlation holds, for the rule set's quota.
        let mut total = self.states.iter().fold((0, 0), |(g, b), s| (g + s.groups.len(), b + s.bytes));
        for s in 0..self.states.len() {
            let (done, rest) = self.states.split_at_mut(s);
            let state = &mut rest[0];
            // This event's inputs for the correlation, in `rules` order.
            let mut fed: Vec<(u16, Source<'_>)> = Vec::new();
            for (r, input) in state.inputs.iter().enumerate() {
                match input {
                    Input::Rule(rule) if matched.contains(rule) => fed.push((r as u16, Source::Event(event))),
                    Input::Correlation(child) => {
                        let child_rule = done[*child].rule;
                        for hit in hits[first_hit..].iter().filter(|h| h.rule == child_rule) {
                            fed.push((r as u16, Source::Hit(hit)));
                        }
                    }
                    Input::Rule(_) => {}
                }
            }
            if fed.is_empty() {
                continue;
            }
            let others = (total.0 - state.groups.len(), total.1 - state.bytes);
            state.expire(self.clock, &self.limits);
            // One entry per group and event for the counting types; per
            // rule too for the temporal ones (only several inputs of one
            // event can repeat a group).
            let several = fed.len() > 1;
            let mut seen: Vec<(String, u16)> = Vec::new();
            let mut fired = Vec::new();
            let key = &mut self.key;
            for (r, source) in fed {
                let name = &state.rule_names[r as usize];
                key.clear();
                for group_by in &state.correlation.group_by {
                    source.key_part(group_by.field_for(name), key);
                }
                let temporal =
                    matches!(state.correlation.kind, CorrelationType::Temporal | CorrelationType::TemporalOrdered);
                if several {
                    if seen.iter().any(|(k, sr)| k == key && (!temporal || *sr == r)) {
                        continue;
                    }
                    seen.push((key.clone(), r));
                }
                let value = state.value_of(&source);
                let entry = Entry { ts, seq, rule: r, value, id: id.clone() };
                if let Some(hit) = state.push(key, entry, &self.limits, others) {
                    fired.push(hit);
                }
            }
            total = (others.0 + state.groups.len(), others.1 + state.bytes);
            hits.extend(fired);
        }
    }
}

fn states_rule(states: &[State], index: usize) -> usize {
    states[index].rule
}

/// Where a correlation's input comes from: a matching event, or a child
/// correlation's alert.
enum Source<'a> {
    Event(&'a Event),
    Hit(&'a Hit),
}

impl Source<'_> {
    /// Appends a field's value to a group key ([`push_key_part`]); text is
    /// not copied but into the key.
    fn key_part(&self, field: &crate::correlation::FieldRef, key: &mut String) {
        match self {
            Source::Event(event) => match field.path.as_deref().and_then(|path| Some((path, event.get(path)?))) {
                Some((_, Value::Text(text) | Value::ObjectId(text))) => push_key_part(key, Some(text)),
                Some((path, _)) => push_key_part(key, event_text(event, path).as_deref()),
                None => push_key_part(key, None),
            },
            Source::Hit(_) => push_key_part(key, self.text(field).as_deref()),
        }
    }

    /// A field's value as text, `None` when missing or null.
    fn text(&self, field: &crate::correlation::FieldRef) -> Option<String> {
        match self {
            Source::Event(event) => event_text(event, field.path.as_deref()?),
            Source::Hit(hit) => hit.group.iter().find(|(name, _)| *name == field.name).and_then(|(_, v)| v.clone()),
        }
    }
}

/// A field as a group key or distinct value: text as is, numbers as JSON
/// spells them, dates as milliseconds, arrays and documents as JSON.
fn event_text(event: &Event, path: &str) -> Option<String> {
    Some(match event.get(path)? {
        Value::Null => return None,
        Value::Boolean(b) => b.to_string(),
        Value::Integer(n) => n.to_string(),
        Value::Float(f) => serde_json::Number::from_f64(f).map_or_else(|| f.to_string(), |n| n.to_string()),
        Value::Text(text) | Value::ObjectId(text) => text.to_owned(),
        Value::DateTime(ms) => ms.to_string(),
        Value::Other(text) => text,
        Value::Binary(_) | Value::Array(_) | Value::Document(_) => event.raw(path)?.to_string(),
    })
}

fn event_number(event: &Event, path: &str) -> Option<f64> {
    match event.get(path)? {
        Value::Integer(n) => Some(n as f64),
        Value::Float(f) if f.is_finite() => Some(f),
        Value::Text(text) => text.trim().parse::<f64>().ok().filter(|f| f.is_finite()),
        _ => None,
    }
}

impl State {
    fn value_of(&self, source: &Source<'_>) -> Option<Aggregated> {
        let kind = self.correlation.kind;
        if !kind.reads_field() {
            return None;
        }
        let fields = &self.correlation.condition.fields;
        if kind.is_numeric() {
            let field = fields.first()?;
            return match source {
                Source::Event(event) => event_number(event, field.path.as_deref()?),
                Source::Hit(_) => source.text(field).and_then(|t| t.parse::<f64>().ok()).filter(|f| f.is_finite()),
            }
            .map(Aggregated::Number);
        }
        // value_count: the tuple of the fields' values; a missing one skips
        // the match (rsigma does the same).
        let mut parts = Vec::with_capacity(fields.len());
        for field in fields {
            parts.push(source.text(field)?);
        }
        Some(Aggregated::Text(parts.join("\u{1f}").into_boxed_str()))
    }

    /// The byte estimates of restored windows, counted from what they
    /// hold (as `push` and `expire` count them), so stored numbers can
    /// never make the accounting wrap.
    fn recount(&mut self) {
        self.bytes = 0;
        for (key, group) in &mut self.groups {
            group.bytes = group.entries.iter().map(Self::entry_bytes).sum();
            self.bytes += group.bytes + GROUP_BYTES + key_bytes(key);
        }
        self.bytes += self.touched.len() * TOUCH_BYTES;
        self.stats.groups = self.groups.len() as u64;
        self.stats.bytes = self.bytes as u64;
    }

    fn entry_bytes(entry: &Entry) -> usize {
        ENTRY_BYTES
            + entry.id.as_ref().map_or(0, |id| id.len())
            + match &entry.value {
                Some(Aggregated::Text(t)) => t.len(),
                _ => 0,
            }
    }

    /// Drops the groups no match can reach any more: newest match older
    /// than the clock minus the window and the lateness.
    fn expire(&mut self, clock: i64, limits: &CorrelationLimits) {
        let horizon = clock.saturating_sub(self.correlation.timespan_ms).saturating_sub(limits.lateness_ms);
        while self.touched.front().is_some_and(|(newest, _)| *newest < horizon) {
            let Some((_, key)) = self.touched.pop_front() else { break };
            self.bytes -= TOUCH_BYTES;
            // Touched again since: its newest match is later in the queue.
            if self.groups.get(&*key).is_some_and(|group| group.newest < horizon) {
                if let Some(group) = self.groups.remove(&*key) {
                    self.bytes -= group.bytes + GROUP_BYTES + key_bytes(&key);
                }
            }
        }
        self.stats.groups = self.groups.len() as u64;
        self.stats.bytes = self.bytes as u64;
    }

    /// Adds a match to its group's window and checks the condition at its
    /// time; fires (and empties the window) when it holds.
    /// `others`: the group keys and bytes the rule set's other
    /// correlations hold, for its quota.
    fn push(&mut self, key: &str, entry: Entry, limits: &CorrelationLimits, others: (usize, usize)) -> Option<Hit> {
        let timespan = self.correlation.timespan_ms;
        let ts = entry.ts;
        let cost = Self::entry_bytes(&entry);
        let (newest, known) = match self.groups.get_key_value(key) {
            Some((known, group)) => (Some(group.newest), Some(known.clone())),
            None => (None, None),
        };
        if newest.is_some_and(|newest| ts < newest.saturating_sub(limits.lateness_ms)) {
            self.stats.late += 1;
            return None;
        }
        let new_group = newest.is_none();
        // The group is in `touched` again when this match is its newest.
        let touch = newest.is_none_or(|newest| ts > newest);
        let extra =
            cost + if new_group { GROUP_BYTES + key_bytes(key) } else { 0 } + if touch { TOUCH_BYTES } else { 0 };
        let groups = self.groups.len();
        let over_groups = groups >= limits.max_groups || others.0 + groups >= limits.total_groups;
        let bytes = self.bytes + extra;
        if (new_group && over_groups) || bytes > limits.max_bytes || others.1 + bytes > limits.total_bytes {
            self.stats.refused += 1;
            return None;
        }
        self.stats.matches += 1;
        self.bytes += extra;
        let key: Arc<str> = known.unwrap_or_else(|| Arc::from(key));
        if new_group {
            self.groups.insert(key.clone(), Group { newest: ts, ..Group::default() });
        }
        self.stats.groups = self.groups.len() as u64;
        if touch {
            self.touched.push_back((ts, key.clone()));
        }
        let group = self.groups.get_mut(&*key)?;
        group.newest = group.newest.max(ts);
        // Drop what no window can reach any more: older than the newest
        // match's window, minus the lateness.
        let floor = group.newest.saturating_sub(timespan).saturating_sub(limits.lateness_ms);
        while group.entries.front().is_some_and(|e| e.ts < floor) {
            let Some(old) = group.entries.pop_front() else { break };
            let b = Self::entry_bytes(&old);
            group.bytes -= b;
            self.bytes -= b;
        }
        let at = group.entries.partition_point(|e| e.ts <= ts);
        group.entries.insert(at, entry);
        group.bytes += cost;
        self.stats.bytes = self.bytes as u64;
        // The window ending at this match.
        let start = group.entries.partition_point(|e| e.ts < ts.saturating_sub(timespan));
        let value = aggregate(&self.correlation, group.entries.range(start..=at))
            .filter(|v| self.correlation.condition.holds(*v))?;
        // Firing: only now is the window collected.
        let window: Vec<&Entry> = group.entries.range(start..=at).collect();
        let hit = Hit {
            rule: self.rule,
            kind: self.correlation.kind,
            group: self.correlation.group_by.iter().map(|g| g.name.clone()).zip(key_parts(&key)).collect(),
            window_start: window.first().map_or(ts, |e| e.ts),
            window_end: ts,
            value,
            condition: self.correlation.condition.describe(),
            events: window
                .iter()
                .take(limits.max_evidence)
                .map(|e| Evidence { id: e.id.clone(), ts: e.ts, rule: self.rule_names[e.rule as usize].clone() })
                .collect(),
            events_total: window.len(),
            values: distinct_texts(&window).into_iter().take(limits.max_evidence).collect(),
        };
        // One alert per breach: the window starts again.
        self.bytes -= group.bytes;
        group.entries.clear();
        group.bytes = 0;
        self.stats.bytes = self.bytes as u64;
        self.stats.fired += 1;
        Some(hit)
    }
}

/// A key's estimated cost: its text, the `Arc`'s counts, the map's
/// pointer to it.
fn key_bytes(key: &str) -> usize {
    32 + key.len()
}

fn distinct_texts(window: &[&Entry]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for e in window {
        if let Some(Aggregated::Text(t)) = &e.value {
            if !out.iter().any(|o| o.as_str() == &**t) {
                out.push(t.replace('\u{1f}', ","));
            }
        }
    }
    out
}

/// The window's aggregate for the condition; `None` when there is none
/// (no numeric value for a mean or a percentile).
/// Over the window's entries, without collecting them: most matches do
/// not fire, and then nothing is allocated for the count types.
fn aggregate<'a>(correlation: &Correlation, window: impl Iterator<Item = &'a Entry> + Clone) -> Option<f64> {
    let numbers = || {
        window.clone().filter_map(|e| match e.value {
            Some(Aggregated::Number(n)) => Some(n),
            _ => None,
        })
    };
    Some(match correlation.kind {
        CorrelationType::EventCount => {
            // One event's entries (one per rule it matched) are adjacent:
            // inserted one after the other at the same time.
            let mut last = None;
            window.filter(|e| last.replace(e.seq) != Some(e.seq)).count() as f64
        }
        CorrelationType::ValueCount => {
            let mut values: Vec<&str> = window
                .filter_map(|e| match &e.value {
                    Some(Aggregated::Text(t)) => Some(&**t),
                    _ => None,
                })
                .collect();
            values.sort_unstable();
            values.dedup();
            values.len() as f64
        }
        CorrelationType::Temporal => {
            let mut rules: Vec<u16> = window.map(|e| e.rule).collect();
            rules.sort_unstable();
            rules.dedup();
            rules.len() as f64
        }
        CorrelationType::TemporalOrdered => {
            // Greedy: each rule's earliest match at or after the previous
            // rule's (ties allowed) exists iff some ordered choice does.
            let mut at = i64::MIN;
            let mut found = 0;
            for r in 0..correlation.rules.len() as u16 {
                match window.clone().find(|e| e.rule == r && e.ts >= at) {
                    Some(e) => {
                        at = e.ts;
                        found += 1;
                    }
                    None => break,
                }
            }
            if found == correlation.rules.len() {
                found as f64
            } else {
                0.0
            }
        }
        CorrelationType::ValueSum => numbers().sum(),
        CorrelationType::ValueAvg => {
            let (sum, n) = numbers().fold((0.0, 0usize), |(s, n), x| (s + x, n + 1));
            if n == 0 {
                return None;
            }
            sum / n as f64
        }
        CorrelationType::ValuePercentile | CorrelationType::ValueMedian => {
            let mut values: Vec<f64> = numbers().collect();
            if values.is_empty() {
                return None;
            }
            values.sort_by(f64::total_cmp);
            let p = match correlation.kind {
                CorrelationType::ValueMedian => 50.0,
                _ => correlation.condition.percentile.unwrap_or(50.0),
            };
            // Linear interpolation between closest ranks (rank p·(n−1)).
            let rank = p / 100.0 * (values.len() - 1) as f64;
            let (low, high) = (rank.floor() as usize, rank.ceil() as usize);
            values[low] + (values[high] - values[low]) * (rank - low as f64)
        }
    })
}

impl Hit {
    /// `event_count 12 (gte 10) for hostname=web-1, user=root`: for
    /// messages.
    pub fn describe(&self) -> String {
        let group: Vec<String> =
            self.group.iter().map(|(k, v)| format!("{k}={}", v.as_deref().unwrap_or("null"))).collect();
        let group = if group.is_empty() { String::new() } else { format!(" for {}", group.join(", ")) };
        format!("{} {} ({}){group}", self.kind, number(self.value), self.condition)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_keys_read_back_whatever_their_values_hold() {
        let cases: [&[Option<&str>]; 6] = [
            &[],
            &[None],
            &[None, None, Some("")],
            &[Some("web-1"), None, Some("root")],
            &[Some("a\0b\u{1}3:c"), Some("12:"), Some(":"), None],
            &[Some("ünïcode ✓"), Some("\u{1}"), Some("\0")],
        ];
        let mut keys = Vec::new();
        for parts in cases {
            let mut key = String::new();
            for part in parts {
                push_key_part(&mut key, *part);
            }
            let back: Vec<Option<String>> = key_parts(&key);
            assert_eq!(back, parts.iter().map(|p| p.map(str::to_owned)).collect::<Vec<_>>(), "{key:?}");
            keys.push(key);
        }
        // Distinct values, distinct keys (no two tuples collide).
        let mut sorted = keys.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), keys.len());
        let mut a = String::new();
        push_key_part(&mut a, Some("a"));
        push_key_part(&mut a, Some("b"));
        let mut ab = String::new();
        push_key_part(&mut ab, Some("a\u{1}1:b"));
        assert_ne!(a, ab);
    }
}
