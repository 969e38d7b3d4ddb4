//! The one loop every command runs: read a [`Source`], hand each document
//! to a [`Consumer`], and now and then make the alerts durable before the
//! source records its position.
//!
//! `dac run` and `dac watch` consume with one [`Delivery`](crate::Delivery)
//! (one engine, one alert policy, one sink); each `dac serve` stream
//! consumes with its tenants' deliveries, routed by scope. Flushing,
//! committing, idling, malformed input and progress are handled here, once,
//! for all of them.

use crate::engine::RuleChange;
use crate::rule::{Fault, RuleInfo};
use crate::sink::SinkError;
use crate::source::{Body, Source, SourceError};
use crate::stats::{SinkCounters, Stats};

#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Stop at the first malformed document instead of reporting and
    /// skipping it.
    pub strict: bool,
    /// Flush the sink after every event that raised alerts, so a live
    /// stream's alerts appear at once.
    pub flush_each_alert: bool,
    /// Flush the sink and commit the source at least this often while
    /// events keep coming (they are also flushed whenever the source is
    /// idle, and at the end).
    pub flush_interval: Option<std::time::Duration>,
    /// Store the consumer's state (the correlations' windows) with the
    /// position at a commit at least this long after the last one that
    /// did, and at the end; `None`: never (a file is read again from its
    /// start). A restart resumes at the position stored with the state, so
    /// this bounds the events evaluated again after a crash. A state whose
    /// store takes long is stored less often (never sooner than
    /// [`STATE_COST_FACTOR`] times its last store's duration).
    pub state_interval: Option<std::time::Duration>,
}

/// Where a document was read: the source's name and the line it starts on.
#[derive(Debug, Clone, Copy)]
pub struct Location<'a> {
    pub source: &'a str,
    pub line: u64,
}

impl std::fmt::Display for Location<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.source, self.line)
    }
}

/// Something a person should know about, reported as it happens.
#[derive(Debug)]
pub enum Notice<'a> {
    /// Input that is not an event; it was skipped (or, with `strict`, ended
    /// the run).
    Malformed { source: &'a str, line: u64, column: Option<usize>, reason: String },
    /// An event held bytes that are not UTF-8; they were replaced by U+FFFD.
    RepairedUtf8 { source: &'a str, line: u64 },
    /// The rule set changed (hot reload), between two documents.
    Rules(&'a RuleChange),
    /// A rule faulted on an event; other rules and events carry on.
    Fault { rule: &'a RuleInfo, source: &'a str, line: u64, event_id: Option<String>, fault: &'a Fault },
}

impl std::fmt::Display for Notice<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Notice::Malformed { source, line, column: Some(column), reason } => {
                write!(f, "{source}:{line}:{column}: {reason}")
            }
            Notice::Malformed { source, line, reason, .. } => write!(f, "{source}:{line}: {reason}"),
            Notice::Rules(change) => write!(f, "{change}"),
            Notice::RepairedUtf8 { source, line } => {
                write!(f, "{source}:{line}: bytes that are not UTF-8 were replaced by U+FFFD")
            }
            Notice::Fault { rule, source, line, event_id, fault } => {
                write!(f, "{source}:{line}: rule {} ({}) {fault}", rule.file_name(), rule.uuid)?;
                if let Some(id) = event_id {
                    write!(f, " on event {id}")?;
                }
                write!(f, "; its instance was discarded")
            }
        }
    }
}

/// Receives notices and progress while a pipeline runs.
pub trait Observer {
    fn notice(&mut self, notice: &Notice<'_>);
    fn progress(&mut self, _consumed: u64, _total: Option<u64>) {}
    /// Called whenever alerts were made durable and the position committed,
    /// and whenever the source is idle, with the counters so far (for a
    /// live stream's periodic stats line).
    fn committed(&mut self, _stats: &Stats) {}
}

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("reading {source_name}: {error}")]
    Source { source_name: String, error: std::io::Error },
    #[error(transparent)]
    Sink(#[from] SinkError),
    #[error("{0} (stopping: --strict)")]
    Strict(String),
    #[error(transparent)]
    State(#[from] crate::StateError),
}

/// Why a consumer did not take a document.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// The document is not an event: counted, reported, skipped (or the end
    /// of a `--strict` run). `line` counts from the document's first line.
    #[error("{message}")]
    Malformed { line: u64, column: Option<usize>, message: String },
    /// Alerts could not be written: the run stops without committing, so
    /// the document is read again after a restart.
    #[error(transparent)]
    Sink(#[from] SinkError),
}

/// What the loop hands each document to.
pub trait Consumer {
    /// Before each document: the moment to change rules (a hot reload),
    /// between two documents.
    fn between_events(&mut self, _observer: &mut dyn Observer) -> Result<(), PipelineError> {
        Ok(())
    }

    /// Evaluates one document; `Ok(true)` when it raised alerts.
    fn consume(&mut self, body: Body<'_>, at: Location<'_>, observer: &mut dyn Observer)
        -> Result<bool, DeliveryError>;

    /// Makes every alert sent so far durable.
    fn flush(&mut self) -> Result<(), SinkError>;

    /// The counters the loop counts malformed input and the source's and
    /// sinks' counters into, and shows the [`Observer`].
    fn stats(&mut self) -> &mut Stats;

    /// What the sinks counted so far.
    fn sink_counters(&self) -> SinkCounters;

    /// The state a restart needs besides the position (the correlations'
    /// windows), after every document consumed and flushed; `None` when it
    /// keeps none.
    fn state(&mut self) -> Result<Option<Vec<u8>>, crate::StateError> {
        Ok(None)
    }
}

/// When the consumer's state is stored with the position
/// ([`Options::state_interval`]): at the first commit (a restart stores the
/// state it resumed with, so the next one does not start further back),
/// then once `every` has passed, and at the end. A large state stretches
/// the interval: never less than [`STATE_COST_FACTOR`] times what the last
/// store took, so storing costs at most ~2 % of the stream's time.
pub(crate) struct StateClock {
    every: Option<std::time::Duration>,
    last: Option<std::time::Instant>,
    cost: std::time::Duration,
}

/// How many times the last store's duration must pass before the next.
pub const STATE_COST_FACTOR: u32 = 50;

impl StateClock {
    pub(crate) fn new(options: &Options) -> StateClock {
        StateClock { every: options.state_interval, last: None, cost: std::time::Duration::ZERO }
    }

    /// Whether this commit stores the state.
    fn due(&mut self, last_commit: bool) -> bool {
        let Some(every) = self.every else { return false };
        let every = every.max(self.cost * STATE_COST_FACTOR);
        let due = last_commit || self.last.is_none_or(|last| last.elapsed() >= every);
        if due {
            self.last = Some(std::time::Instant::now());
        }
        due
    }

    /// What the store just made took (serializing and writing).
    fn stored(&mut self) {
        if let Some(last) = self.last {
            self.cost = last.elapsed();
        }
    }
}

/// Runs every document of `source` through `consumer` until the source
/// ends. Generic over the consumer, not `dyn`: per document the loop calls
/// it twice, and for a prefiltered-out event those calls are most of the
/// loop's own cost, which inlining removes.
pub fn run<C: Consumer + ?Sized>(
    source: &mut dyn Source,
    consumer: &mut C,
    observer: &mut dyn Observer,
    options: &Options,
) -> Result<(), PipelineError> {
    let name = source.name().to_owned();
    let mut since_progress = 0u32;
    let mut last_flush = std::time::Instant::now();
    let mut unflushed = false;
    let mut state = StateClock::new(options);
    loop {
        if unflushed && options.flush_interval.is_some_and(|every| last_flush.elapsed() >= every) {
            flush_and_commit(consumer, source, &name, &mut state, false)?;
            observer.committed(consumer.stats());
            last_flush = std::time::Instant::now();
            unflushed = false;
        }
        consumer.between_events(observer)?;
        since_progress += 1;
        if since_progress == 4096 {
            since_progress = 0;
            let (consumed, total) = source.progress();
            observer.progress(consumed, total);
        }
        let incoming = match source.next_event() {
            None => break,
            Some(Ok(incoming)) => incoming,
            Some(Err(SourceError::Malformed { line, reason })) => {
                malformed_notice(consumer.stats(), observer, options, Location { source: &name, line }, None, reason)?;
                continue;
            }
            Some(Err(SourceError::Io(error))) => return Err(PipelineError::Source { source_name: name, error }),
        };
        let at = Location { source: &name, line: incoming.line };
        if matches!(incoming.body, Body::Idle) {
            if unflushed {
                flush_and_commit(consumer, source, &name, &mut state, false)?;
                last_flush = std::time::Instant::now();
                unflushed = false;
            } else {
                let counters = source.counters();
                consumer.stats().source = counters;
            }
            observer.committed(consumer.stats());
            continue;
        }
        unflushed = true;
        match consumer.consume(incoming.body, at, observer) {
            Ok(alerted) => {
                if alerted && options.flush_each_alert {
                    consumer.flush()?;
                }
            }
            Err(DeliveryError::Malformed { line: within, column, message }) => {
                let at = Location { source: &name, line: at.line + within.saturating_sub(1) };
                malformed_notice(consumer.stats(), observer, options, at, column, message)?;
            }
            Err(DeliveryError::Sink(err)) => return Err(PipelineError::Sink(err)),
        }
    }
    let (consumed, total) = source.progress();
    observer.progress(consumed, total);
    flush_and_commit(consumer, source, &name, &mut state, true)?;
    observer.committed(consumer.stats());
    Ok(())
}

/// Alerts first, position second: a crash between the two only means the
/// events since the last commit are evaluated again (alert ids make the
/// repeat harmless), never that an event is skipped. When the state is
/// due, it goes with the position, in the source's one write.
pub(crate) fn flush_and_commit<C: Consumer + ?Sized>(
    consumer: &mut C,
    source: &mut dyn Source,
    name: &str,
    state: &mut StateClock,
    last_commit: bool,
) -> Result<(), PipelineError> {
    consumer.flush()?;
    let committed = if state.due(last_commit) {
        let saved = consumer.state()?;
        let committed = source.commit_state(saved.as_deref());
        state.stored();
        committed
    } else {
        source.commit()
    };
    let (source_counters, sink_counters) = (source.counters(), consumer.sink_counters());
    let stats = consumer.stats();
    stats.source = source_counters;
    stats.sink = sink_counters;
    committed.map_err(|error| match error {
        SourceError::Io(error) => PipelineError::Source { source_name: name.to_owned(), error },
        SourceError::Malformed { line, reason } => PipelineError::Source {
            source_name: name.to_owned(),
            error: std::io::Error::other(format!("line {line}: {reason}")),
        },
    })
}

pub(crate) fn malformed_notice(
    stats: &mut Stats,
    observer: &mut dyn Observer,
    options: &Options,
    at: Location<'_>,
    column: Option<usize>,
    reason: String,
) -> Result<(), PipelineError> {
    stats.malformed += 1;
    let notice = Notice::Malformed { source: at.source, line: at.line, column, reason };
    if options.strict {
        return Err(PipelineError::Strict(notice.to_string()));
    }
    observer.notice(&notice);
    Ok(())
}
