//! One event through one rule set, to one sink: the part of the pipeline
//! that is the same for `dac run`, `dac watch` and every tenant of a
//! `dac serve` stream.

use crate::alert::Alert;
use crate::engine::{Change, Engine, Outcome};
use crate::pipeline::{Consumer, DeliveryError, Location, Notice, Observer, PipelineError};
use crate::policy::{AlertPolicy, Decision};
use crate::sink::{Sink, SinkError};
use crate::source::Body;
use crate::stats::{SinkCounters, Stats};
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
    changes: Option<&'a mut dyn RuleChanges>,
}

impl<'a> Delivery<'a> {
    pub fn new(
        engine: &'a mut Engine,
        policy: &'a mut AlertPolicy,
        sink: &'a mut dyn Sink,
        stats: &'a mut Stats,
    ) -> Delivery<'a> {
        Delivery { engine, policy, sink, stats, outcomes: Vec::new(), changes: None }
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
        let parsed;
        let event: &Event = match input {
            Input::Json(json) => match self.engine.evaluate_json(json, self.stats, &mut self.outcomes) {
                Ok(Some((event, decoding))) => {
                    if decoding == Decoding::RepairedUtf8 {
                        self.stats.repaired_utf8 += 1;
                        observer.notice(&Notice::RepairedUtf8 { source: at.source, line: at.line });
                    }
                    parsed = event;
                    &parsed
                }
                Ok(None) => {
                    self.stats.events += 1;
                    return Ok(false);
                }
                Err(ParseError::Json { line, column, message }) => {
                    return Err(DeliveryError::Malformed { line: line as u64, column: Some(column), message })
                }
                Err(err) => return Err(DeliveryError::Malformed { line: 1, column: None, message: err.to_string() }),
            },
            Input::Event(event) => {
                self.engine.evaluate(event, self.stats, &mut self.outcomes);
                event
            }
        };
        self.stats.events += 1;
        if self.outcomes.is_empty() {
            return Ok(false);
        }
        let location = at.to_string();
        let mut alerted = false;
        for outcome in &self.outcomes {
            let rule = self.engine.infos()[outcome.rule].clone();
            match &outcome.result {
                Ok(findings) => {
                    let mut alert = Alert::new(&rule, event, findings, Some(&location));
                    match self.policy.decide(&rule, event) {
                        Decision::Suppressed(_) => {
                            self.stats.suppressed += 1;
                            self.engine.stats_mut(outcome.rule).suppressed += 1;
                        }
                        Decision::Repeat(dedup) => {
                            alert.dedup = Some(dedup);
                            self.sink.fold(&alert)?;
                            self.stats.folded += 1;
                            self.engine.stats_mut(outcome.rule).folded += 1;
                            alerted = true;
                        }
                        Decision::Alert(dedup) => {
                            alert.dedup = dedup;
                            self.sink.send(&alert)?;
                            self.stats.alerts += 1;
                            alerted = true;
                        }
                    }
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
        Ok(alerted)
    }
}

impl Consumer for Delivery<'_> {
    #[inline]
    fn between_events(&mut self, observer: &mut dyn Observer) -> Result<(), PipelineError> {
        let Some(change) = self.changes.as_mut().and_then(|changes| changes.next_change()) else { return Ok(()) };
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
        self.sink.flush()
    }

    fn stats(&mut self) -> &mut Stats {
        self.stats
    }

    fn sink_counters(&self) -> SinkCounters {
        self.sink.counters()
    }
}
