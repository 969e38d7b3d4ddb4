//! Where an event enters: the [`Source`] trait. A replay file is one
//! ([`crate::ReplaySource`]); a MongoDB change stream (`dac-mongo`) is
//! another.

/// One document from a source.
pub struct Incoming<'a> {
    /// The 1-based line where the document starts.
    pub line: u64,
    pub body: Body<'a>,
}

pub enum Body<'a> {
    /// A JSON document, not yet parsed (the engine may not need to).
    Json(&'a [u8]),
    /// A document already decoded by the source (e.g. a MongoDB driver).
    Document(dac_event::Event),
    /// No event is waiting: a good moment to make alerts durable and
    /// [`Source::commit`] the position.
    Idle,
}

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// This piece of input is not a document; the source has skipped it and
    /// can go on.
    #[error("line {line}: {reason}")]
    Malformed { line: u64, reason: String },
    /// The source cannot go on.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// A stream of events.
pub trait Source {
    /// Names the source in messages (a file name, `<stdin>`, a collection).
    fn name(&self) -> &str;
    /// The next document, `None` at the end of the stream.
    fn next_event(&mut self) -> Option<Result<Incoming<'_>, SourceError>>;
    /// Bytes consumed so far and the total when known, for progress.
    fn progress(&self) -> (u64, Option<u64>) {
        (0, None)
    }
    /// Every event returned so far has been evaluated and the sink has made
    /// its alerts durable: the source may record its position (a resume
    /// token), so a restart continues after them and not before.
    fn commit(&mut self) -> Result<(), SourceError> {
        Ok(())
    }
    /// [`Source::commit`], with the consumer's state after every event
    /// returned so far (the correlations' windows): a source that survives
    /// a restart stores the two in one atomic write, and a restart resumes
    /// at that position with that state (`None`: the consumer keeps none;
    /// forget any stored). One that cannot store state (a file) just
    /// commits.
    fn commit_state(&mut self, _state: Option<&[u8]>) -> Result<(), SourceError> {
        self.commit()
    }
    /// The source's own counters (reconnects, lag, …), if it keeps any.
    fn counters(&self) -> crate::stats::SourceCounters {
        crate::stats::SourceCounters::default()
    }
}
