//! Where an alert leaves: the [`Sink`] trait and the stdout sinks.

use crate::alert::Alert;
use std::io::Write;

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("writing alerts: {0}")]
    Io(#[from] std::io::Error),
    #[error("encoding an alert: {0}")]
    Encode(#[from] serde_json::Error),
    #[error("{0}")]
    Database(String),
}

/// Receives alerts. `flush` marks a point by which every alert sent must be
/// durable (written out, acknowledged by a database, …).
pub trait Sink {
    fn send(&mut self, alert: &Alert<'_>) -> Result<(), SinkError>;
    fn flush(&mut self) -> Result<(), SinkError>;
    /// A repeated match of a deduplicated alert already sent (its `dedup`
    /// is set): sinks that can update an alert fold it in (count, last
    /// seen); a stream of lines cannot, and by default it is only counted.
    fn fold(&mut self, _alert: &Alert<'_>) -> Result<(), SinkError> {
        Ok(())
    }
    /// Alerts written and found already present, for sinks that know.
    fn counters(&self) -> crate::stats::SinkCounters {
        crate::stats::SinkCounters::default()
    }
}

/// One alert per line, as JSON.
pub struct JsonLinesSink<W: Write> {
    out: W,
}

impl<W: Write> JsonLinesSink<W> {
    pub fn new(out: W) -> Self {
        JsonLinesSink { out }
    }
}

impl<W: Write> Sink for JsonLinesSink<W> {
    fn send(&mut self, alert: &Alert<'_>) -> Result<(), SinkError> {
        serde_json::to_writer(&mut self.out, alert)?;
        self.out.write_all(b"\n")?;
        Ok(())
    }

    fn flush(&mut self) -> Result<(), SinkError> {
        Ok(self.out.flush()?)
    }
}

/// For people: the seed talk's `alert!!` line, what matched, and the event.
pub struct PrettySink<W: Write> {
    out: W,
}

impl<W: Write> PrettySink<W> {
    pub fn new(out: W) -> Self {
        PrettySink { out }
    }
}

impl<W: Write> Sink for PrettySink<W> {
    fn send(&mut self, alert: &Alert<'_>) -> Result<(), SinkError> {
        let out = &mut self.out;
        write!(out, "alert!! {} - {} [{}]", alert.uuid, alert.rule_name, alert.severity)?;
        if let Some(source) = alert.source {
            write!(out, " at {source}")?;
        }
        writeln!(out)?;
        for finding in alert.findings {
            if !finding.message.is_empty() {
                writeln!(out, "  {}", finding.message)?;
            }
            for matched in &finding.matched {
                writeln!(out, "    {}: {}", matched.path, matched.value)?;
            }
        }
        serde_json::to_writer_pretty(&mut *out, alert.offending_log)?;
        writeln!(out, "\n")?;
        Ok(())
    }

    fn flush(&mut self) -> Result<(), SinkError> {
        Ok(self.out.flush()?)
    }
}
