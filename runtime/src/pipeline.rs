//! Source → Engine → Sink: the loop that connects them.

use crate::alert::Alert;
use crate::engine::{Engine, Outcome, RuleChange};
use crate::policy::{AlertPolicy, Decision};
use crate::rule::{Fault, RuleInfo};
use crate::sink::{Sink, SinkError};
use crate::source::{Body, Source, SourceError};
use crate::stats::Stats;
use dac_event::{Decoding, Event, ParseError};

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
    /// with the counters so far (for a live stream's periodic stats line).
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
}

/// Runs every event of `source` through `engine` into `sink`, counting in
/// `stats`, until the source ends.
pub fn run(
    source: &mut dyn Source,
    engine: &mut Engine,
    sink: &mut dyn Sink,
    stats: &mut Stats,
    observer: &mut dyn Observer,
    options: &Options,
) -> Result<(), PipelineError> {
    run_with_policy(source, engine, &mut AlertPolicy::none(), sink, stats, observer, options)
}

/// [`run`], with an alert policy between the engine and the sink: each
/// match is alerted, folded into an earlier dedup alert, or suppressed
/// (see [`crate::policy`]).
pub fn run_with_policy(
    source: &mut dyn Source,
    engine: &mut Engine,
    policy: &mut AlertPolicy,
    sink: &mut dyn Sink,
    stats: &mut Stats,
    observer: &mut dyn Observer,
    options: &Options,
) -> Result<(), PipelineError> {
    let name = source.name().to_owned();
    let mut outcomes: Vec<Outcome> = Vec::new();
    let mut since_progress = 0u32;
    let mut last_flush = std::time::Instant::now();
    let mut unflushed = false;
    loop {
        if unflushed && options.flush_interval.is_some_and(|every| last_flush.elapsed() >= every) {
            flush_and_commit(sink, source, stats, &name)?;
            observer.committed(stats);
            last_flush = std::time::Instant::now();
            unflushed = false;
        }
        for change in engine.poll_reload(stats) {
            observer.notice(&Notice::Rules(&change));
        }
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
                malformed(stats, observer, options, &name, line, None, reason)?;
                continue;
            }
            Some(Err(SourceError::Io(error))) => return Err(PipelineError::Source { source_name: name, error }),
        };
        let line = incoming.line;
        if matches!(incoming.body, Body::Idle) {
            if unflushed {
                flush_and_commit(sink, source, stats, &name)?;
                last_flush = std::time::Instant::now();
                unflushed = false;
            }
            observer.committed(stats);
            continue;
        }
        unflushed = true;
        outcomes.clear();
        let evaluated: Result<Option<(Event, Decoding)>, ParseError> = match incoming.body {
            Body::Json(json) => engine.evaluate_json(json, stats, &mut outcomes),
            Body::Document(mut event) => {
                engine.evaluate(&mut event, stats, &mut outcomes);
                Ok(Some((event, Decoding::Utf8)))
            }
            Body::Idle => unreachable!("handled above"),
        };
        let event = match evaluated {
            Ok(event) => event,
            Err(ParseError::Json { line: within, column, message }) => {
                let at = line + within as u64 - 1;
                malformed(stats, observer, options, &name, at, Some(column), message)?;
                continue;
            }
            Err(err) => {
                malformed(stats, observer, options, &name, line, None, err.to_string())?;
                continue;
            }
        };
        stats.events += 1;
        let Some((event, decoding)) = event else { continue };
        if decoding == Decoding::RepairedUtf8 {
            stats.repaired_utf8 += 1;
            observer.notice(&Notice::RepairedUtf8 { source: &name, line });
        }
        if outcomes.is_empty() {
            continue;
        }
        let location = format!("{name}:{line}");
        let mut alerted = false;
        for outcome in &outcomes {
            let rule = &engine.infos()[outcome.rule];
            match &outcome.result {
                Ok(findings) => {
                    let mut alert = Alert::new(rule, &event, findings, Some(&location));
                    match policy.decide(rule, &event) {
                        Decision::Suppressed(_) => {
                            stats.suppressed += 1;
                            stats.rules[outcome.rule].suppressed += 1;
                        }
                        Decision::Repeat(dedup) => {
                            alert.dedup = Some(dedup);
                            sink.fold(&alert)?;
                            stats.folded += 1;
                            stats.rules[outcome.rule].folded += 1;
                            alerted = true;
                        }
                        Decision::Alert(dedup) => {
                            alert.dedup = dedup;
                            sink.send(&alert)?;
                            stats.alerts += 1;
                            alerted = true;
                        }
                    }
                }
                Err(fault) => {
                    observer.notice(&Notice::Fault { rule, source: &name, line, event_id: event.id(), fault })
                }
            }
        }
        if alerted && options.flush_each_alert {
            sink.flush()?;
        }
    }
    let (consumed, total) = source.progress();
    observer.progress(consumed, total);
    flush_and_commit(sink, source, stats, &name)?;
    observer.committed(stats);
    Ok(())
}

/// Alerts first, position second: a crash between the two only means the
/// events since the last commit are evaluated again (alert ids make the
/// repeat harmless), never that an event is skipped.
fn flush_and_commit(
    sink: &mut dyn Sink,
    source: &mut dyn Source,
    stats: &mut Stats,
    name: &str,
) -> Result<(), PipelineError> {
    sink.flush()?;
    let committed = source.commit();
    stats.source = source.counters();
    stats.sink = sink.counters();
    committed.map_err(|error| match error {
        SourceError::Io(error) => PipelineError::Source { source_name: name.to_owned(), error },
        SourceError::Malformed { line, reason } => PipelineError::Source {
            source_name: name.to_owned(),
            error: std::io::Error::other(format!("line {line}: {reason}")),
        },
    })
}

fn malformed(
    stats: &mut Stats,
    observer: &mut dyn Observer,
    options: &Options,
    source: &str,
    line: u64,
    column: Option<usize>,
    reason: String,
) -> Result<(), PipelineError> {
    stats.malformed += 1;
    let notice = Notice::Malformed { source, line, column, reason };
    if options.strict {
        return Err(PipelineError::Strict(notice.to_string()));
    }
    observer.notice(&notice);
    Ok(())
}
