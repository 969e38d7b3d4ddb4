//! One event through one rule set, to one sink: the part of the pipeline
//! that is the same for `dac run`, `dac watch` and every tenant of a
//! `dac serve` stream.

use crate::alert::Alert;
use crate::correlation::CorrelationInfo;
use crate::engine::{Change, Engine, Outcome};
use crate::pipeline::{Consumer, DeliveryError, Location, Notice, Observer, PipelineError};
use crate::policy::{AlertPolicy, Decision};
use crate::rule::{Finding, MatchedField};
use crate::sink::{Sink, SinkError};
use crate::source::Body;
use crate::stats::{SinkCounters, Stats};
use dac_detect::Hit;
use dac_event::{Decoding, Event, ParseError};

/// A document as the rules receive it.
pub enum Input<'a> {
    /// JSON not parsed yet: the engine may not need to.
    Json(&'a [u8]),
    /// A decoded event, lent: it is back, unchanged, when the delivery
    /// returns, so several rule sets can evaluate the same one.
    Event(&'a mut Event),
}

/// Where a rule set's changes come from while it runs (a watch of the rule
/// files): asked between two documents.
pub trait RuleChanges {
    /// The change waiting, if any; never blocks.
    fn next_change(&mut self) -> Option<Change>;
}

/// One rule set and where its alerts go: an engine, the alert policy
/// between it and the sink, and the counters of both.
pub struct Delivery<'a> {
    pub engine: &'a mut Engine,
    pub policy: &'a mut AlertPolicy,
    pub sink: &'a mut dyn Sink,
    pub stats: &'a mut Stats,
    outcomes: Vec<Outcome>,
    /// Reused per event: the rules that matched, the correlations that fired.
    matched: Vec<usize>,
    hits: Vec<Hit>,
    changes: Option<&'a mut dyn RuleChanges>,
}

impl<'a> Delivery<'a> {
    pub fn new(
        engine: &'a mut Engine,
        policy: &'a mut AlertPolicy,
        sink: &'a mut dyn Sink,
        stats: &'a mut Stats,
    ) -> Delivery<'a> {
        Delivery {
            engine,
            policy,
            sink,
            stats,
            outcomes: Vec::new(),
            matched: Vec::new(),
            hits: Vec::new(),
            changes: None,
        }
    }

    /// Applies what `changes` hands over, between two documents.
    pub fn with_changes(mut self, changes: &'a mut dyn RuleChanges) -> Delivery<'a> {
        self.changes = Some(changes);
        self
    }

    /// Evaluates one document and passes each match through the policy to
    /// the sink, each fault to the observer, counting everything: the
    /// event, the alerts, and per rule the suppressed and folded matches.
    /// `Ok(true)` when an alert (or a repeat folded into one) went out.
    ///
    /// `at`'s text is only made when a rule ran, not for every event.
    pub fn deliver(
        &mut self,
        input: Input<'_>,
        at: Location<'_>,
        observer: &mut dyn Observer,
    ) -> Result<bool, DeliveryError> {
        self.outcomes.clear();
        let mut outcomes = std::mem::take(&mut self.outcomes);
        let result = self.evaluate_and_emit(input, at, observer, &mut outcomes);
        self.outcomes = outcomes;
        result
    }

    fn evaluate_and_emit(
        &mut self,
        input: Input<'_>,
        at: Location<'_>,
        observer: &mut dyn Observer,
        outcomes: &mut Vec<Outcome>,
    ) -> Result<bool, DeliveryError> {
        let parsed;
        let event: &Event = match input {
            Input::Json(json) => match evaluate_json(self.engine, json, self.stats, outcomes)? {
                Some((event, decoding)) => {
                    if decoding == Decoding::RepairedUtf8 {
                        self.repaired(at, observer);
                    }
                    parsed = event;
                    &parsed
                }
                None => {
                    self.stats.events += 1;
                    return Ok(false);
                }
            },
            Input::Event(event) => {
                self.engine.evaluate(event, self.stats, outcomes);
                event
            }
        };
        self.stats.events += 1;
        Ok(self.emit(event, outcomes, at, observer)?)
    }

    /// Counts and reports an event whose non-UTF-8 bytes were replaced.
    pub(crate) fn repaired(&mut self, at: Location<'_>, observer: &mut dyn Observer) {
        self.stats.repaired_utf8 += 1;
        observer.notice(&Notice::RepairedUtf8 { source: at.source, line: at.line });
    }

    /// The half of a delivery after the rules: each match of `event`
    /// through the policy to the sink, each fault to the observer, counted.
    /// `Ok(true)` when an alert (or a repeat folded into one) went out.
    /// Several threads may evaluate ([`crate::parallel`]); this half runs
    /// on one, in stream order, because the policy's dedup and the sink's
    /// order depend on it.
    pub(crate) fn emit(
        &mut self,
        event: &Event,
        outcomes: &[Outcome],
        at: Location<'_>,
        observer: &mut dyn Observer,
    ) -> Result<bool, SinkError> {
        if outcomes.is_empty() {
            return Ok(false);
        }
        let location = at.to_string();
        let mut alerted = false;
        let mut matched = std::mem::take(&mut self.matched);
        matched.clear();
        matched.extend(outcomes.iter().filter(|o| o.result.is_ok()).map(|o| o.rule));
        let mut hits = std::mem::take(&mut self.hits);
        hits.clear();
        self.engine.correlate(event, &matched, &mut hits);
        self.matched = matched;
        for outcome in outcomes {
            let rule = self.engine.infos()[outcome.rule].clone();
            match &outcome.result {
                Ok(_) if !self.engine.generates(outcome.rule) => {
                    // Aggregated by a correlation that does not generate its
                    // rules' alerts: counted, not alerted.
                    self.stats.correlated += 1;
                    self.engine.stats_mut(outcome.rule).correlated += 1;
                }
                Ok(findings) => {
                    let alert = Alert::new(&rule, event, findings, Some(&location));
                    alerted |= self.decide_and_send(outcome.rule, alert, event)?;
                }
                Err(fault) => observer.notice(&Notice::Fault {
                    rule: &rule,
                    source: at.source,
                    line: at.line,
                    event_id: event.id(),
                    fault,
                }),
            }
        }
        let result = self.send_correlations(&hits, event, &location);
        self.hits = hits;
        Ok(alerted | result?)
    }

    /// The alerts of the correlations that fired on `event`; a correlation
    /// aggregated by another without `generate: true` is counted instead.
    fn send_correlations(&mut self, hits: &[Hit], event: &Event, location: &str) -> Result<bool, SinkError> {
        let mut alerted = false;
        for hit in hits {
            if !self.engine.generates(hit.rule) {
                self.stats.correlated += 1;
                self.engine.stats_mut(hit.rule).correlated += 1;
                continue;
            }
            let rule = self.engine.infos()[hit.rule].clone();
            let finding = Finding {
                message: format!("{}: {}", rule.name, hit.describe()),
                severity: None,
                matched: hit
                    .group
                    .iter()
                    .map(|(path, value)| MatchedField {
                        path: path.clone(),
                        value: value.clone().unwrap_or_else(|| "null".into()),
                    })
                    .collect(),
            };
            let findings = [finding];
            let mut alert = Alert::new(&rule, event, &findings, Some(location));
            alert.correlation = Some(CorrelationInfo::new(&rule, hit));
            self.engine.stats_mut(hit.rule).alerts += 1;
            alerted |= self.decide_and_send(hit.rule, alert, event)?;
        }
        Ok(alerted)
    }

    /// One alert through the policy to the sink, counted; `Ok(true)` when
    /// it (or a repeat folded into one) went out.
    fn decide_and_send(&mut self, position: usize, mut alert: Alert<'_>, event: &Event) -> Result<bool, SinkError> {
        let rule = self.engine.infos()[position].clone();
        match self.policy.decide(&rule, event) {
            Decision::Suppressed(_) => {
                self.stats.suppressed += 1;
                self.engine.stats_mut(position).suppressed += 1;
                Ok(false)
            }
            Decision::Repeat(dedup) => {
                alert.dedup = Some(dedup);
                self.sink.fold(&alert)?;
                self.stats.folded += 1;
                self.engine.stats_mut(position).folded += 1;
                Ok(true)
            }
            Decision::Alert(dedup) => {
                alert.dedup = dedup;
                self.sink.send(&alert)?;
                self.stats.alerts += 1;
                Ok(true)
            }
        }
    }

    /// The change waiting to be applied between two documents, if any.
    pub(crate) fn next_change(&mut self) -> Option<Change> {
        self.changes.as_mut().and_then(|changes| changes.next_change())
    }
}

/// A JSON document that is not an event; `line` counts from its first
/// line.
pub(crate) struct Malformed {
    pub(crate) line: u64,
    pub(crate) column: Option<usize>,
    pub(crate) message: String,
}

impl From<Malformed> for DeliveryError {
    fn from(Malformed { line, column, message }: Malformed) -> DeliveryError {
        DeliveryError::Malformed { line, column, message }
    }
}

/// The engine's half of delivering a JSON document: the rules' outcomes,
/// and the parsed event when any rule had to see it (`None` when the
/// prefilter ruled every rule out).
pub(crate) fn evaluate_json(
    engine: &mut Engine,
    json: &[u8],
    stats: &mut Stats,
    outcomes: &mut Vec<Outcome>,
) -> Result<Option<(Event, Decoding)>, Malformed> {
    engine.evaluate_json(json, stats, outcomes).map_err(malformed)
}

/// A document the parser refused, located within it.
pub(crate) fn malformed(err: ParseError) -> Malformed {
    match err {
        ParseError::Json { line, column, message } => Malformed { line: line as u64, column: Some(column), message },
        err => Malformed { line: 1, column: None, message: err.to_string() },
    }
}

impl Consumer for Delivery<'_> {
    #[inline]
    fn between_events(&mut self, observer: &mut dyn Observer) -> Result<(), PipelineError> {
        let Some(change) = self.next_change() else { return Ok(()) };
        for change in self.engine.change(change).changes {
            observer.notice(&Notice::Rules(&change));
        }
        Ok(())
    }

    fn consume(
        &mut self,
        body: Body<'_>,
        at: Location<'_>,
        observer: &mut dyn Observer,
    ) -> Result<bool, DeliveryError> {
        match body {
            Body::Json(json) => self.deliver(Input::Json(json), at, observer),
            Body::Document(mut event) => self.deliver(Input::Event(&mut event), at, observer),
            // The pipeline handles idle moments itself.
            Body::Idle => Ok(false),
        }
    }

    fn flush(&mut self) -> Result<(), SinkError> {
        (self.stats.state_groups, self.stats.state_bytes) = self.engine.state_held();
        self.sink.flush()
    }

    fn stats(&mut self) -> &mut Stats {
        self.stats
    }

    fn sink_counters(&self) -> SinkCounters {
        self.sink.counters()
    }

    fn state(&mut self) -> Result<Option<Vec<u8>>, crate::StateError> {
        self.engine.save_state()
    }
}
