//! The pipeline on several threads (`dac run --threads N`, `dac watch
//! --threads N`): the same loop as [`crate::run_consumer`], with the
//! rules evaluated by N workers.
//!
//! The calling thread reads the source and cuts it into batches; each
//! worker evaluates with its own [`Engine::replica`] (its own component
//! instances; the declarative set and literal indexes shared) and sends back only what matters
//! to the output: matches with their event, faults, malformed documents.
//! The calling thread puts those back in stream order before anything
//! reaches the alert policy, the sink or the observer, so the alerts, the
//! notices and every counter are the same as one thread's, in the same
//! order, byte for byte. The position is committed only once everything
//! read has been delivered and flushed, as in the one-thread loop.
//!
//! A component whose instance is reused may keep state from one event to
//! the next. So that it still sees each host's events in their order, on
//! one instance, a rule set with such a component has every batch split by
//! the event's [`PARTITION_FIELD`]: a host's events always go to the same
//! worker (the least loaded when the host first appeared). Without one (declarative rules, fresh instances)
//! whole batches go to the workers in turn.
//!
//! Memory is bounded: at most [`BATCHES_PER_WORKER`] batches per worker
//! are in flight; past that the reader waits for results (back-pressure,
//! no unbounded queue). A rule-set change (`dac watch`'s hot reload) waits
//! for the batches in flight, then every worker gets a replica of the
//! changed engine: changes land between two batches rather than between
//! two documents.

use crate::delivery::{malformed, Delivery, Malformed};
use crate::engine::{Document as Input, Engine, Evaluated, Outcome};
use crate::pipeline::run as run_one;
use crate::pipeline::{malformed_notice, Location, Notice, Observer, Options, PipelineError};
use crate::source::{Body, Source, SourceError};
use crate::state::PARTITION_FIELD;
use crate::stats::{RuleStats, Stats};
use dac_event::{Decoding, Event};
use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::ops::Range;
use std::sync::mpsc::{channel, sync_channel, Receiver, Sender, SyncSender};
use std::sync::Arc;
use std::time::Instant;

/// A batch ends after this many documents…
const BATCH_DOCUMENTS: usize = 512;
/// …or this many bytes of JSON, or when the source is idle.
const BATCH_BYTES: usize = 1 << 20;
/// A batch's buffer: room for the line that takes it past `BATCH_BYTES`
/// (a longer one grows it).
const BATCH_CAPACITY: usize = BATCH_BYTES + (64 << 10);
/// Batches queued or being evaluated, per worker, before the reader waits.
pub const BATCHES_PER_WORKER: usize = 2;

/// The threads to use by default: the machine's cores.
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// [`crate::run_consumer`] with one delivery, its rules evaluated on
/// `threads` threads (1: the one-thread loop itself).
pub fn run_parallel(
    source: &mut dyn Source,
    delivery: &mut Delivery<'_>,
    threads: usize,
    observer: &mut dyn Observer,
    options: &Options,
) -> Result<(), PipelineError> {
    if threads <= 1 {
        return run_one(source, delivery, observer, options);
    }
    std::thread::scope(|scope| {
        let (done, results) = channel();
        let mut workers = Vec::with_capacity(threads);
        for _ in 0..threads {
            let (to_worker, inbox) = sync_channel(BATCHES_PER_WORKER);
            let engine = delivery.engine.replica();
            let done = done.clone();
            std::thread::Builder::new()
                .name("dac-worker".into())
                .spawn_scoped(scope, move || work(engine, inbox, done))
                .map_err(|error| PipelineError::Source { source_name: "threads".into(), error })?;
            workers.push(to_worker);
        }
        drop(done);
        let partitioned = delivery.engine.keeps_state();
        let mut reader = Reader {
            name: source.name().to_owned(),
            delivery,
            workers,
            results,
            partitioned,
            pending: BTreeMap::new(),
            next_seq: 0,
            next_out: 0,
            next_worker: 0,
            hosts: HashMap::new(),
            load: vec![0; threads],
            spare: Vec::new(),
            state: crate::pipeline::StateClock::new(options),
        };
        let outcome = reader.run(source, observer, options);
        // Whatever happened, the rules' counters come home (a failed run
        // still prints its summary).
        let settled = reader.settle();
        outcome.and(settled)
    })
}

/// One document sent to a worker.
struct Document {
    /// Its position in the batch.
    index: u32,
    line: u64,
    body: DocumentBody,
}

enum DocumentBody {
    Json(Range<usize>),
    Decoded(Event),
}

/// A batch, or a worker's share of one.
struct Batch {
    seq: u64,
    bytes: Arc<Vec<u8>>,
    documents: Vec<Document>,
}

enum ToWorker {
    Batch(Batch),
    /// Send the counters back, and go on with this engine if given (the
    /// rule set changed).
    Settle(Option<Box<Engine>>),
}

enum FromWorker {
    Done(Box<Done>),
    Counters(Vec<RuleStats>),
}

/// What a worker made of its share of a batch: only the documents the
/// output hears about, by their position in the batch.
struct Done {
    seq: u64,
    /// The batch's bytes, back for the reader to fill again (the last
    /// share to finish gives the buffer itself).
    bytes: Arc<Vec<u8>>,
    items: Vec<(u32, Item)>,
    /// The counters the engine keeps per event (events ruled out by the
    /// prefilter, the declarative pass's time).
    stats: Stats,
}

enum Item {
    /// The source skipped this piece of input.
    Skipped {
        line: u64,
        reason: String,
    },
    Malformed {
        line: u64,
        column: Option<usize>,
        message: String,
    },
    /// A well-formed event: its line, its matches and faults (with the
    /// event when there are any), and whether its bytes were repaired.
    Event {
        line: u64,
        evaluated: Option<(Event, Vec<Outcome>)>,
        repaired: bool,
    },
}

fn work(mut engine: Engine, inbox: Receiver<ToWorker>, done: Sender<FromWorker>) {
    for message in inbox {
        let reply = match message {
            ToWorker::Batch(batch) => FromWorker::Done(Box::new(evaluate(&mut engine, batch))),
            ToWorker::Settle(replacement) => {
                let counters = engine.take_counters();
                if let Some(replacement) = replacement {
                    engine = *replacement;
                }
                FromWorker::Counters(counters)
            }
        };
        if done.send(reply).is_err() {
            return; // the reader stopped
        }
    }
}

/// A worker's share of a batch, handed to the engine at once (so that each
/// `dac:rule@0.2.0` component is called once for it): only the documents
/// the output hears about come back.
fn evaluate(engine: &mut Engine, batch: Batch) -> Done {
    let mut stats = Stats::default();
    let mut lines = Vec::with_capacity(batch.documents.len());
    let mut inputs = Vec::with_capacity(batch.documents.len());
    for document in batch.documents {
        lines.push((document.index, document.line));
        inputs.push(match document.body {
            DocumentBody::Json(range) => Input::Json(&batch.bytes[range]),
            DocumentBody::Decoded(event) => Input::Event(event),
        });
    }
    let evaluated = engine.evaluate_batch(inputs, &mut stats);
    let mut items = Vec::new();
    for ((index, line), Evaluated { event, outcomes }) in lines.into_iter().zip(evaluated) {
        let item = match event {
            Ok(None) => continue,
            Ok(Some((event, decoding))) => {
                let repaired = decoding == Decoding::RepairedUtf8;
                if outcomes.is_empty() && !repaired {
                    continue;
                }
                Item::Event { line, evaluated: (!outcomes.is_empty()).then_some((event, outcomes)), repaired }
            }
            Err(err) => {
                let Malformed { line: within, column, message } = malformed(err);
                Item::Malformed { line: line + within.saturating_sub(1), column, message }
            }
        };
        items.push((index, item));
    }
    Done { seq: batch.seq, bytes: batch.bytes, items, stats }
}

/// A batch some of whose shares are still being evaluated.
struct Pending {
    shares_left: usize,
    /// Well-formed events and skipped input, in the batch.
    documents: u64,
    items: Vec<(u32, Item)>,
}

struct Reader<'d, 'a> {
    name: String,
    delivery: &'d mut Delivery<'a>,
    workers: Vec<SyncSender<ToWorker>>,
    results: Receiver<FromWorker>,
    partitioned: bool,
    pending: BTreeMap<u64, Pending>,
    next_seq: u64,
    /// The batch whose results go out next.
    next_out: u64,
    next_worker: usize,
    /// Which worker each host's events go to, when rules keep state: the
    /// one with the fewest events so far when the host first appears.
    hosts: HashMap<u64, usize>,
    /// Events sent to each worker.
    load: Vec<u64>,
    /// Byte buffers of delivered batches, to fill again: a fresh one per
    /// batch cost the reader a third of its time in page faults (the
    /// kernel zeroing the huge pages each new megabyte landed on).
    spare: Vec<Vec<u8>>,
    /// When the delivery's state goes with the position.
    state: crate::pipeline::StateClock,
}

/// A batch being filled.
#[derive(Default)]
struct Filling {
    bytes: Vec<u8>,
    documents: Vec<Document>,
    skipped: Vec<(u32, Item)>,
    count: u32,
}

impl Filling {
    /// A batch to fill into `bytes` (empty), its documents' list allocated
    /// at its full size once rather than grown.
    fn new(bytes: Vec<u8>) -> Filling {
        Filling { bytes, documents: Vec::with_capacity(BATCH_DOCUMENTS), ..Filling::default() }
    }

    fn full(&self) -> bool {
        self.count as usize >= BATCH_DOCUMENTS || self.bytes.len() >= BATCH_BYTES
    }
}

impl Reader<'_, '_> {
    fn run(
        &mut self,
        source: &mut dyn Source,
        observer: &mut dyn Observer,
        options: &Options,
    ) -> Result<(), PipelineError> {
        let mut read = 0u64;
        let mut last_flush = Instant::now();
        let mut unflushed = false;
        let mut batch = Filling::new(Vec::with_capacity(BATCH_CAPACITY));
        loop {
            if unflushed && options.flush_interval.is_some_and(|every| last_flush.elapsed() >= every) {
                self.checkpoint(source, observer, options, false)?;
                last_flush = Instant::now();
                unflushed = false;
            }
            if let Some(change) = self.delivery.next_change() {
                self.drain(observer, options)?;
                self.settle()?;
                for change in self.delivery.engine.change(change).changes {
                    observer.notice(&Notice::Rules(&change));
                }
                self.partitioned = self.delivery.engine.keeps_state();
                for worker in &self.workers {
                    let replica = Box::new(self.delivery.engine.replica());
                    worker.send(ToWorker::Settle(Some(replica))).map_err(|_| worker_gone())?;
                }
                self.wait_for_counters(false)?;
            }
            // Fill a batch: until it is full, the source idles or ends.
            let mut idle = false;
            let mut ended = false;
            while !batch.full() {
                read += 1;
                if read.is_multiple_of(4096) {
                    let (consumed, total) = source.progress();
                    observer.progress(consumed, total);
                }
                let index = batch.count;
                match source.next_event() {
                    None => {
                        ended = true;
                        break;
                    }
                    Some(Ok(incoming)) => match incoming.body {
                        Body::Idle => {
                            idle = true;
                            break;
                        }
                        Body::Json(json) => {
                            let start = batch.bytes.len();
                            batch.bytes.extend_from_slice(json);
                            let body = DocumentBody::Json(start..batch.bytes.len());
                            batch.documents.push(Document { index, line: incoming.line, body });
                        }
                        Body::Document(event) => {
                            let body = DocumentBody::Decoded(event);
                            batch.documents.push(Document { index, line: incoming.line, body });
                        }
                    },
                    Some(Err(SourceError::Malformed { line, reason })) => {
                        batch.skipped.push((index, Item::Skipped { line, reason }));
                    }
                    Some(Err(SourceError::Io(error))) => {
                        return Err(PipelineError::Source { source_name: self.name.clone(), error })
                    }
                }
                batch.count += 1;
            }
            if batch.count > 0 {
                unflushed = true;
                let bytes = self.spare.pop().unwrap_or_else(|| Vec::with_capacity(BATCH_CAPACITY));
                let full = std::mem::replace(&mut batch, Filling::new(bytes));
                self.dispatch(full, observer, options)?;
            }
            if ended {
                break;
            }
            if idle {
                if unflushed {
                    self.checkpoint(source, observer, options, false)?;
                    last_flush = Instant::now();
                    unflushed = false;
                } else {
                    self.delivery.stats.source = source.counters();
                    observer.committed(self.delivery.stats);
                }
            }
        }
        let (consumed, total) = source.progress();
        observer.progress(consumed, total);
        self.checkpoint(source, observer, options, true)
    }

    /// Delivers every batch in flight, brings the counters home, makes the
    /// alerts durable and then commits the position (alerts first, as in
    /// the one-thread loop), and tells the observer.
    fn checkpoint(
        &mut self,
        source: &mut dyn Source,
        observer: &mut dyn Observer,
        options: &Options,
        last_commit: bool,
    ) -> Result<(), PipelineError> {
        self.drain(observer, options)?;
        self.settle()?;
        crate::pipeline::flush_and_commit(self.delivery, source, &self.name, &mut self.state, last_commit)?;
        observer.committed(self.delivery.stats);
        Ok(())
    }

    /// Sends a batch to the workers (split by host when rules keep state),
    /// first waiting while too many are in flight, then delivering whatever
    /// results are in.
    fn dispatch(
        &mut self,
        batch: Filling,
        observer: &mut dyn Observer,
        options: &Options,
    ) -> Result<(), PipelineError> {
        while self.pending.len() >= self.workers.len() * BATCHES_PER_WORKER {
            self.receive(true, observer, options)?;
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        let bytes = Arc::new(batch.bytes);
        let mut shares: Vec<Vec<Document>> = (0..self.workers.len()).map(|_| Vec::new()).collect();
        if self.partitioned {
            for document in batch.documents {
                let worker = match host_key(&document, &bytes) {
                    Some(host) => self.worker_of(host),
                    None => 0,
                };
                self.load[worker] += 1;
                shares[worker].push(document);
            }
        } else {
            shares[self.next_worker] = batch.documents;
            self.next_worker = (self.next_worker + 1) % self.workers.len();
        }
        let documents = u64::from(batch.count);
        let sent = shares.iter().filter(|share| !share.is_empty()).count();
        self.pending.insert(seq, Pending { shares_left: sent, documents, items: batch.skipped });
        for (worker, share) in shares.iter_mut().enumerate() {
            if share.is_empty() {
                continue;
            }
            let share = Batch { seq, bytes: bytes.clone(), documents: std::mem::take(share) };
            self.workers[worker].send(ToWorker::Batch(share)).map_err(|_| worker_gone())?;
        }
        // Deliver what is ready without waiting.
        self.deliver_ready(observer, options)?;
        while self.receive(false, observer, options)? {}
        Ok(())
    }

    /// Takes one message from the workers (waiting for it if `wait`);
    /// `false` when none was there.
    fn receive(&mut self, wait: bool, observer: &mut dyn Observer, options: &Options) -> Result<bool, PipelineError> {
        let message = if wait {
            self.results.recv().map_err(|_| worker_gone())?
        } else {
            match self.results.try_recv() {
                Ok(message) => message,
                Err(std::sync::mpsc::TryRecvError::Empty) => return Ok(false),
                Err(std::sync::mpsc::TryRecvError::Disconnected) => return Err(worker_gone()),
            }
        };
        match message {
            FromWorker::Done(done) => {
                let Done { seq, bytes, items, stats } = *done;
                if let Ok(mut bytes) = Arc::try_unwrap(bytes) {
                    // Not one a huge line grew: memory stays bounded.
                    let spare = self.spare.len() <= self.workers.len() * BATCHES_PER_WORKER;
                    if spare && bytes.capacity() <= 2 * BATCH_CAPACITY {
                        bytes.clear();
                        self.spare.push(bytes);
                    }
                }
                self.delivery.stats.prefiltered_events += stats.prefiltered_events;
                self.delivery.stats.declarative_pass.absorb(&stats.declarative_pass);
                if let Some(pending) = self.pending.get_mut(&seq) {
                    pending.items.extend(items);
                    pending.shares_left -= 1;
                }
                self.deliver_ready(observer, options)?;
            }
            // Counters are only sent when asked for, and waited for then.
            FromWorker::Counters(_) => {}
        }
        Ok(true)
    }

    /// Delivers every complete batch at the head of the stream, in order.
    fn deliver_ready(&mut self, observer: &mut dyn Observer, options: &Options) -> Result<(), PipelineError> {
        while let Some(entry) = self.pending.first_entry() {
            if *entry.key() != self.next_out || entry.get().shares_left > 0 {
                break;
            }
            let mut batch = entry.remove();
            self.next_out += 1;
            batch.items.sort_unstable_by_key(|(index, _)| *index);
            let mut skipped = 0;
            for (_, item) in batch.items {
                match item {
                    Item::Skipped { line, reason } => {
                        skipped += 1;
                        self.malformed(observer, options, line, None, reason)?;
                    }
                    Item::Malformed { line, column, message } => {
                        // Counted with the events below, then taken back:
                        // a malformed document is not an event.
                        skipped += 1;
                        self.malformed(observer, options, line, column, message)?;
                    }
                    Item::Event { line, evaluated, repaired } => {
                        let at = Location { source: &self.name, line };
                        if repaired {
                            self.delivery.repaired(at, observer);
                        }
                        if let Some((event, outcomes)) = evaluated {
                            let alerted = self.delivery.emit(&event, &outcomes, at, observer)?;
                            if alerted && options.flush_each_alert {
                                self.delivery.sink.flush()?;
                            }
                        }
                    }
                }
            }
            self.delivery.stats.events += batch.documents - skipped;
        }
        Ok(())
    }

    fn malformed(
        &mut self,
        observer: &mut dyn Observer,
        options: &Options,
        line: u64,
        column: Option<usize>,
        reason: String,
    ) -> Result<(), PipelineError> {
        let at = Location { source: &self.name, line };
        malformed_notice(self.delivery.stats, observer, options, at, column, reason)
    }

    /// Waits for every batch in flight and delivers it.
    fn drain(&mut self, observer: &mut dyn Observer, options: &Options) -> Result<(), PipelineError> {
        while !self.pending.is_empty() {
            self.receive(true, observer, options)?;
        }
        Ok(())
    }

    /// Brings the workers' per-rule counters into the delivery's engine
    /// (the one the summary and metrics read). Only between batches: the
    /// positions are the engine's while no change lands.
    fn settle(&mut self) -> Result<(), PipelineError> {
        // Results of batches still in flight would be lost to the count of
        // events; the callers drained first, or are giving up.
        for worker in &self.workers {
            if worker.send(ToWorker::Settle(None)).is_err() {
                return Err(worker_gone());
            }
        }
        self.wait_for_counters(true)
    }

    fn wait_for_counters(&mut self, absorb: bool) -> Result<(), PipelineError> {
        let mut left = self.workers.len();
        while left > 0 {
            match self.results.recv().map_err(|_| worker_gone())? {
                FromWorker::Counters(counters) => {
                    left -= 1;
                    if absorb {
                        for (position, counters) in counters.iter().enumerate() {
                            self.delivery.engine.stats_mut(position).absorb(counters);
                        }
                    }
                }
                // A batch of a run that is stopping: its output is not
                // delivered (the position was not committed past it).
                FromWorker::Done(_) => {}
            }
        }
        Ok(())
    }

    /// The worker of a host: the one it was given, or for a new host the
    /// least loaded so far. A hash would do without memory, but with a
    /// dozen hosts it may give one worker twice the events of another;
    /// past [`MAX_ASSIGNED_HOSTS`] (a stream of made-up host names must
    /// not grow the map) new hosts go by hash.
    fn worker_of(&mut self, host: u64) -> usize {
        if let Some(&worker) = self.hosts.get(&host) {
            return worker;
        }
        if self.hosts.len() >= MAX_ASSIGNED_HOSTS {
            return (host % self.workers.len() as u64) as usize;
        }
        let least = (0..self.load.len()).min_by_key(|&worker| self.load[worker]).unwrap_or(0);
        self.hosts.insert(host, least);
        least
    }
}

/// Hosts given a worker of their own choosing; the rest go by hash.
pub const MAX_ASSIGNED_HOSTS: usize = 1 << 16;

/// A hash of the document's host, when rules keep state; `None` for
/// input that is not an event, which goes to the first worker and is
/// reported there, in order. Events without a host are one host.
fn host_key(document: &Document, bytes: &[u8]) -> Option<u64> {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    match &document.body {
        DocumentBody::Json(range) => {
            let keep = |key: &str| key == PARTITION_FIELD;
            let json = &bytes[range.clone()];
            // An event with bytes that are not UTF-8 is evaluated repaired:
            // it belongs to its host too.
            let fields = Event::project_from_slice(json, &keep).or_else(|| match std::str::from_utf8(json) {
                Ok(_) => None,
                Err(_) => Event::project_from_slice(String::from_utf8_lossy(json).as_bytes(), &keep),
            });
            hash_host(fields?.raw(PARTITION_FIELD), &mut hasher);
        }
        DocumentBody::Decoded(event) => hash_host(event.raw(PARTITION_FIELD), &mut hasher),
    }
    Some(hasher.finish())
}

/// Hashes a host value: a string (the usual case) without copying it.
fn hash_host(host: Option<&serde_json::Value>, hasher: &mut impl Hasher) {
    match host {
        Some(serde_json::Value::String(name)) => (0u8, name.as_str()).hash(hasher),
        Some(other) => (1u8, other.to_string()).hash(hasher),
        None => 2u8.hash(hasher),
    }
}

fn worker_gone() -> PipelineError {
    PipelineError::Source {
        source_name: "threads".into(),
        error: std::io::Error::other("an evaluation thread stopped unexpectedly"),
    }
}
