//! MongoDB at both ends: a collection's change stream as a [`Source`], an
//! alert collection as a [`Sink`], and the checkpoint that ties them.
//!
//! Processing is at-least-once with idempotent alerts:
//! - the pipeline flushes the sink, then calls [`Source::commit`], which
//!   stores the resume token of the last event returned (or, when the
//!   stream is idle, its post-batch token) in the config collection;
//! - on start, the stream resumes after the stored token, so events since
//!   the last commit are evaluated again after a crash;
//! - an alert's `_id` is derived from (rule uuid, rule version, event
//!   `_id`), and duplicate-key errors are ignored, so a second evaluation
//!   never creates a second alert;
//! - a deduplicated alert (`crate::policy`) is one document per (rule, key,
//!   window), upserted by each match; the upsert skips an event already
//!   recorded in its `events`, so a second evaluation never counts twice.
//!
//! The driver is async; these types own a small tokio runtime and block on
//! it, because the engine runs rules synchronously on one thread.

use crate::alert::Alert;
use crate::sink::{Sink, SinkError};
use crate::source::{Body, Incoming, Source, SourceError};
use crate::stats::{SinkCounters, SourceCounters};
use mongodb::bson::{self, doc, Bson, Document};
use mongodb::change_stream::event::{ChangeStreamEvent, ResumeToken};
use mongodb::change_stream::ChangeStream;
use mongodb::error::{Error as DriverError, ErrorKind};
use mongodb::{Client, Collection};
use sha2::{Digest, Sha256};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Server error codes that mean "this resume token can no longer be used".
const HISTORY_LOST: [i32; 3] = [
    286, // ChangeStreamHistoryLost
    260, // InvalidResumeToken
    280, // ChangeStreamFatalError
];
/// MongoDB's duplicate-key error: the alert is already there.
const DUPLICATE_KEY: i32 = 11000;

#[derive(Debug, thiserror::Error)]
pub enum MongoError {
    #[error("cannot start the MongoDB client runtime: {0}")]
    Runtime(std::io::Error),
    #[error("connecting to {uri}: {source}")]
    Connect {
        uri: String,
        #[source]
        source: Box<DriverError>,
    },
    #[error("opening the change stream of {target}: {source}")]
    Watch {
        target: String,
        #[source]
        source: Box<DriverError>,
    },
    #[error("{0}")]
    HistoryLost(String),
    #[error("reading the stored checkpoint {id} from {collection}: {source}")]
    Checkpoint {
        id: String,
        collection: String,
        #[source]
        source: Box<DriverError>,
    },
}

/// A connected client and the runtime its futures run on; cheap to clone.
#[derive(Clone)]
pub struct Connection {
    runtime: Arc<tokio::runtime::Runtime>,
    client: Client,
}

impl Connection {
    pub fn open(uri: &str) -> Result<Connection, MongoError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("dac-mongodb")
            .enable_all()
            .build()
            .map_err(MongoError::Runtime)?;
        let client = runtime
            .block_on(Client::with_uri_str(uri))
            .map_err(|source| MongoError::Connect { uri: redact(uri), source: Box::new(source) })?;
        Ok(Connection { runtime: Arc::new(runtime), client })
    }

    /// Sets `flag` on SIGINT or SIGTERM, so a watch can end cleanly:
    /// flush its alerts and commit its position before exiting.
    pub fn stop_on_signals(&self, flag: Arc<AtomicBool>) {
        self.runtime.spawn(async move {
            use tokio::signal::unix::{signal, SignalKind};
            let (Ok(mut interrupt), Ok(mut terminate)) =
                (signal(SignalKind::interrupt()), signal(SignalKind::terminate()))
            else {
                tracing::warn!("cannot listen for SIGINT/SIGTERM; stopping will not flush");
                return;
            };
            tokio::select! {
                _ = interrupt.recv() => tracing::info!("SIGINT: finishing the current batch"),
                _ = terminate.recv() => tracing::info!("SIGTERM: finishing the current batch"),
            }
            flag.store(true, Ordering::Relaxed);
        });
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Runs an action of the driver to completion.
    pub fn block_on<F: std::future::IntoFuture>(&self, action: F) -> F::Output {
        self.runtime.block_on(action.into_future())
    }
}

/// Where a new stream starts when no checkpoint applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StartAt {
    /// After the stored checkpoint; from now when there is none.
    Stored,
    /// From now, ignoring any stored checkpoint.
    Now,
}

/// What to do when the stored token is no longer in the server's history.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HistoryLost {
    /// Stop with an error: someone must decide (e.g. replay the gap).
    Stop,
    /// Warn loudly, count the gap, and continue from now.
    RestartFromNow,
}

/// The names a watch needs.
#[derive(Debug, Clone)]
pub struct WatchTarget {
    pub database: String,
    pub collection: String,
    /// Holds the checkpoints (the seed's config collection).
    pub config_collection: String,
}

fn source_name(target: &WatchTarget) -> String {
    format!("{}.{}", target.database, target.collection)
}

/// Inserts into a collection, read from its change stream.
pub struct ChangeStreamSource {
    connection: Connection,
    collection: Collection<Document>,
    checkpoints: Collection<Document>,
    checkpoint_id: String,
    pipeline: Vec<Document>,
    history_lost: HistoryLost,
    shutdown: Arc<AtomicBool>,
    name: String,
    stream: Option<ChangeStream<ChangeStreamEvent<Document>>>,
    /// Where the stream is to (re)open: after this token, or from now.
    resume_from: Option<ResumeToken>,
    /// The newest position every returned event is at or before.
    position: Option<ResumeToken>,
    committed: Option<ResumeToken>,
    backoff: Duration,
    /// Documents read, numbering them for messages.
    events: u64,
    counters: SourceCounters,
}

impl ChangeStreamSource {
    /// Opens the stream of inserts into `target`, resuming after the stored
    /// checkpoint when `start_at` says so. `extra_match` is ANDed with the
    /// insert filter. Setting `shutdown` makes the source end at its next
    /// poll (at most `max_await` later), so the pipeline can flush and
    /// commit before exiting.
    pub fn open(
        connection: Connection,
        target: &WatchTarget,
        start_at: StartAt,
        history_lost: HistoryLost,
        extra_match: Option<Document>,
        shutdown: Arc<AtomicBool>,
    ) -> Result<ChangeStreamSource, MongoError> {
        let database = connection.client().database(&target.database);
        let collection = database.collection::<Document>(&target.collection);
        let checkpoints = database.collection::<Document>(&target.config_collection);
        let checkpoint_id = format!("checkpoint:{}.{}", target.database, target.collection);
        let mut pipeline = vec![doc! { "$match": { "operationType": { "$in": ["insert"] } } }];
        pipeline.extend(extra_match.map(|m| doc! { "$match": m }));
        let stored = match start_at {
            StartAt::Now => None,
            StartAt::Stored => connection
                .block_on(checkpoints.find_one(doc! { "_id": &checkpoint_id }))
                .map_err(|source| MongoError::Checkpoint {
                    id: checkpoint_id.clone(),
                    collection: target.config_collection.clone(),
                    source: Box::new(source),
                })?
                .and_then(|stored| stored.get("resume_token").cloned())
                .and_then(|token| bson::from_bson::<ResumeToken>(token).ok()),
        };
        match &stored {
            Some(_) => tracing::info!(checkpoint = %checkpoint_id, "resuming after the stored checkpoint"),
            None => tracing::info!(checkpoint = %checkpoint_id, "starting from now"),
        }
        let mut source = ChangeStreamSource {
            name: source_name(target),
            connection,
            collection,
            checkpoints,
            checkpoint_id,
            pipeline,
            history_lost,
            shutdown,
            stream: None,
            resume_from: stored.clone(),
            position: stored.clone(),
            committed: stored,
            backoff: Duration::from_millis(100),
            events: 0,
            counters: SourceCounters::default(),
        };
        // Opened now, not at the first read: "from now" then means from
        // the moment `open` returned, which callers can rely on.
        loop {
            match source.open_stream() {
                Ok(()) => {
                    source.store_starting_point()?;
                    return Ok(source);
                }
                Err(error) if is_history_lost(&error) => {
                    source.recover(error).map_err(|fatal| MongoError::HistoryLost(fatal.to_string()))?
                }
                Err(error) => return Err(MongoError::Watch { target: source_name(target), source: Box::new(error) }),
            }
        }
    }

    /// A stream started from now records where "now" was at once: a crash
    /// before the first commit must resume there, not at a later "now".
    /// Nothing has been evaluated yet, so committing skips no event.
    fn store_starting_point(&mut self) -> Result<(), MongoError> {
        if self.position.is_none() {
            tracing::warn!(
                "the server gave no initial resume token; a crash before the first commit would skip events"
            );
            return Ok(());
        }
        self.commit().map_err(|err| MongoError::HistoryLost(format!("storing the starting checkpoint: {err}")))
    }

    /// Change events per round trip. The server's default (101) makes a
    /// busy stream a round trip per 101 inserts; the measured live
    /// throughput (tests/benches/watch.rs) rose with larger batches. A
    /// batch is still bounded by MongoDB's 16 MiB per reply.
    const BATCH_SIZE: u32 = 1000;

    /// How long a poll waits on the server for new events.
    const MAX_AWAIT: Duration = Duration::from_millis(500);

    fn open_stream(&mut self) -> Result<(), DriverError> {
        let watch = self
            .collection
            .watch()
            .pipeline(self.pipeline.clone())
            .max_await_time(Self::MAX_AWAIT)
            .batch_size(Self::BATCH_SIZE)
            .resume_after(self.resume_from.clone());
        let stream = self.connection.block_on(watch)?;
        if self.resume_from.is_none() {
            // Started from now (first start, or past a lost history): the
            // next commit records this starting point, so a crash resumes
            // here instead of at a later "now" or at the lost token.
            if let Some(start) = stream.resume_token() {
                self.position = Some(start.clone());
                self.resume_from = Some(start);
            }
        }
        self.stream = Some(stream);
        Ok(())
    }

    /// Handles a failed open or poll; `Err` ends the source.
    fn recover(&mut self, error: DriverError) -> Result<(), SourceError> {
        self.stream = None;
        if is_history_lost(&error) {
            match self.history_lost {
                HistoryLost::Stop => {
                    return Err(SourceError::Io(std::io::Error::other(format!(
                        "the stored resume token is no longer in the server's history ({error}); \
                         events since the last checkpoint cannot be read from the change stream. \
                         Restart with --start-at now (or --on-history-lost restart-from-now) to go on, \
                         and replay the gap from the collection if it matters"
                    ))))
                }
                HistoryLost::RestartFromNow => {
                    self.counters.history_gaps += 1;
                    tracing::error!(
                        gaps = self.counters.history_gaps,
                        "change stream history lost ({error}); RESTARTING FROM NOW: events since the last checkpoint were NOT evaluated"
                    );
                    self.resume_from = None;
                    return Ok(());
                }
            }
        }
        self.counters.reconnects += 1;
        tracing::warn!(retry_in = ?self.backoff, reconnects = self.counters.reconnects, "change stream failed: {error}");
        std::thread::sleep(self.backoff);
        self.backoff = (self.backoff * 2).min(Duration::from_secs(10));
        Ok(())
    }
}

impl Source for ChangeStreamSource {
    fn name(&self) -> &str {
        &self.name
    }

    fn next_event(&mut self) -> Option<Result<Incoming<'_>, SourceError>> {
        loop {
            if self.shutdown.load(Ordering::Relaxed) {
                return None;
            }
            if self.stream.is_none() {
                if let Err(error) = self.open_stream() {
                    if let Err(fatal) = self.recover(error) {
                        return Some(Err(fatal));
                    }
                    continue;
                }
            }
            let stream = self.stream.as_mut().expect("opened above");
            match self.connection.runtime.block_on(stream.next_if_any()) {
                Ok(Some(change)) => {
                    self.backoff = Duration::from_millis(100);
                    self.resume_from = Some(change.id.clone());
                    self.position = Some(change.id);
                    self.counters.lag = Some(lag(change.wall_time, change.cluster_time));
                    let Some(document) = change.full_document else {
                        self.counters.without_document += 1;
                        continue;
                    };
                    self.events += 1;
                    let json = Bson::Document(document).into_relaxed_extjson();
                    let line = self.events;
                    return Some(match dac_event::Event::from_json(json) {
                        Ok(event) => Ok(Incoming { line, body: Body::Document(event) }),
                        Err(err) => Err(SourceError::Malformed { line, reason: err.to_string() }),
                    });
                }
                Ok(None) => {
                    // Nothing new: the post-batch token is past everything
                    // returned, so committing it skips no event.
                    if let Some(token) = stream.resume_token() {
                        self.position = Some(token);
                    }
                    self.counters.lag = Some(Duration::ZERO);
                    return Some(Ok(Incoming { line: self.events, body: Body::Idle }));
                }
                Err(error) => {
                    if let Err(fatal) = self.recover(error) {
                        return Some(Err(fatal));
                    }
                }
            }
        }
    }

    fn commit(&mut self) -> Result<(), SourceError> {
        let Some(token) = self.position.clone() else { return Ok(()) };
        if self.committed.as_ref() == Some(&token) {
            return Ok(());
        }
        let stored = bson::to_bson(&token).map_err(|err| SourceError::Io(std::io::Error::other(err)))?;
        let checkpoint = doc! {
            "_id": &self.checkpoint_id,
            "resume_token": stored,
            "events": self.events as i64,
            "updated_at": bson::DateTime::now(),
        };
        let mut delay = Duration::from_millis(100);
        loop {
            let replace =
                self.checkpoints.replace_one(doc! { "_id": &self.checkpoint_id }, checkpoint.clone()).upsert(true);
            match self.connection.block_on(replace) {
                Ok(_) => break,
                Err(error) if delay < Duration::from_secs(30) => {
                    tracing::warn!(retry_in = ?delay, "storing the checkpoint failed: {error}");
                    std::thread::sleep(delay);
                    delay *= 2;
                }
                Err(error) => {
                    return Err(SourceError::Io(std::io::Error::other(format!("storing the checkpoint: {error}"))))
                }
            }
        }
        self.committed = Some(token);
        self.counters.commits += 1;
        Ok(())
    }

    fn counters(&self) -> SourceCounters {
        self.counters.clone()
    }
}

/// How long ago the server recorded a change: by its wall time (MongoDB
/// 6.0+, milliseconds), else by its cluster time (seconds).
fn lag(wall_time: Option<bson::DateTime>, cluster_time: Option<bson::Timestamp>) -> Duration {
    let now = bson::DateTime::now().timestamp_millis();
    let recorded = match (wall_time, cluster_time) {
        (Some(wall), _) => wall.timestamp_millis(),
        (None, Some(cluster)) => i64::from(cluster.time) * 1000,
        (None, None) => now,
    };
    Duration::from_millis(u64::try_from(now - recorded).unwrap_or(0))
}

/// Alerts into a collection, in unordered batches; re-sent alerts are
/// recognised by their `_id` and ignored.
pub struct MongoAlertSink {
    connection: Connection,
    collection: Collection<Document>,
    pending: Vec<Document>,
    /// Dedup alerts and repeats, in order: (alert id, event id, ts, alert).
    pending_dedup: Vec<(String, String, Option<Bson>, Document)>,
    max_batch: usize,
    counters: SinkCounters,
}

impl MongoAlertSink {
    pub fn new(connection: Connection, database: &str, collection: &str) -> MongoAlertSink {
        let collection = connection.client().database(database).collection(collection);
        MongoAlertSink {
            connection,
            collection,
            pending: Vec::new(),
            pending_dedup: Vec::new(),
            max_batch: 500,
            counters: SinkCounters::default(),
        }
    }
}

/// The alert `_id`: the same rule version on the same event always yields
/// the same id, so a re-evaluation after a crash cannot add a second alert.
pub fn alert_id(rule_uuid: &str, rule_version: &str, event_id: &str) -> String {
    let mut hash = Sha256::new();
    for part in [rule_uuid, rule_version, event_id] {
        hash.update(part.as_bytes());
        hash.update([0]);
    }
    crate::sandbox::hex(&hash.finalize()[..16])
}

/// Event ids a dedup alert remembers (the newest), so that an event
/// evaluated again after a crash is not counted twice. Events are evaluated
/// again only back to the last checkpoint (at most a flush interval, 250 ms,
/// of the stream), so the count stays exact unless one alert takes more
/// repeats than this between two checkpoints.
const DEDUP_EVENTS_KEPT: i32 = 1000;

impl MongoAlertSink {
    /// Queues a dedup alert or a repeat of it: one upsert per match, which
    /// inserts the alert (`count` 1) for the first and folds the others
    /// into it (`count` + 1, `first_seen`/`last_seen` widened, the event id
    /// remembered). The filter skips an event already folded in, and the
    /// resulting duplicate-key error on the upsert means just that.
    fn queue_dedup(&mut self, alert: &Alert<'_>) -> Result<(), SinkError> {
        let Some(dedup) = &alert.dedup else { unreachable!("called for dedup alerts") };
        let document = self.encode(alert)?;
        let event_id = match &alert.event_id {
            Some(id) => id.clone(),
            None => serde_json::to_string(alert.offending_log)?,
        };
        let ts = document.get("ts").cloned();
        self.pending_dedup.push((dedup.id.clone(), event_id, ts, document));
        if self.pending_dedup.len() >= self.max_batch {
            self.flush()?;
        }
        Ok(())
    }

    fn encode(&self, alert: &Alert<'_>) -> Result<Document, SinkError> {
        let json = serde_json::to_value(alert)?;
        let Bson::Document(document) =
            Bson::try_from(json).map_err(|err| SinkError::Database(format!("encoding an alert as BSON: {err}")))?
        else {
            unreachable!("an alert serializes to an object");
        };
        Ok(document)
    }

    fn flush_dedup(&mut self) -> Result<(), SinkError> {
        for (id, event_id, ts, mut document) in std::mem::take(&mut self.pending_dedup) {
            document.insert("detected_at", bson::DateTime::now());
            fit_in_a_document(&mut document);
            let mut update = doc! {
                "$setOnInsert": document,
                "$inc": { "count": 1 },
                "$push": { "events": { "$each": [&event_id], "$slice": -DEDUP_EVENTS_KEPT } },
            };
            if let Some(ts) = ts {
                update.insert("$min", doc! { "first_seen": ts.clone() });
                update.insert("$max", doc! { "last_seen": ts });
            }
            let filter = doc! { "_id": &id, "events": { "$nin": [&event_id] } };
            let mut delay = Duration::from_millis(100);
            loop {
                let upsert = self.collection.update_one(filter.clone(), update.clone()).upsert(true);
                match self.connection.block_on(upsert) {
                    Ok(result) if result.upserted_id.is_some() => self.counters.written += 1,
                    Ok(_) => self.counters.folded += 1,
                    Err(error) if is_duplicate_key(&error) => self.counters.duplicates += 1,
                    Err(error) if delay < Duration::from_secs(30) => {
                        tracing::warn!(retry_in = ?delay, "writing a dedup alert failed: {error}");
                        std::thread::sleep(delay);
                        delay *= 2;
                        continue;
                    }
                    Err(error) => return Err(SinkError::Database(format!("writing dedup alert {id}: {error}"))),
                }
                break;
            }
        }
        Ok(())
    }
}

impl Sink for MongoAlertSink {
    fn fold(&mut self, alert: &Alert<'_>) -> Result<(), SinkError> {
        self.queue_dedup(alert)
    }

    fn send(&mut self, alert: &Alert<'_>) -> Result<(), SinkError> {
        if alert.dedup.is_some() {
            return self.queue_dedup(alert);
        }
        let json = serde_json::to_value(alert)?;
        let Bson::Document(mut document) =
            Bson::try_from(json).map_err(|err| SinkError::Database(format!("encoding an alert as BSON: {err}")))?
        else {
            unreachable!("an alert serializes to an object");
        };
        let event_id = match &alert.event_id {
            Some(id) => id.clone(),
            None => serde_json::to_string(alert.offending_log)?,
        };
        document.insert("_id", alert_id(alert.uuid, alert.rule_version, &event_id));
        document.insert("detected_at", bson::DateTime::now());
        fit_in_a_document(&mut document);
        self.pending.push(document);
        if self.pending.len() >= self.max_batch {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), SinkError> {
        self.flush_dedup()?;
        if self.pending.is_empty() {
            return Ok(());
        }
        let mut delay = Duration::from_millis(100);
        loop {
            let insert = self.collection.insert_many(self.pending.iter()).ordered(false);
            match self.connection.block_on(insert) {
                Ok(result) => {
                    self.counters.written += result.inserted_ids.len() as u64;
                    break;
                }
                Err(error) => {
                    if let Some(duplicates) = only_duplicates(&error) {
                        self.counters.duplicates += duplicates;
                        self.counters.written += self.pending.len() as u64 - duplicates;
                        break;
                    }
                    if delay >= Duration::from_secs(30) {
                        return Err(SinkError::Database(format!("writing {} alerts: {error}", self.pending.len())));
                    }
                    tracing::warn!(retry_in = ?delay, "writing alerts failed: {error}");
                    std::thread::sleep(delay);
                    delay *= 2;
                }
            }
        }
        self.pending.clear();
        Ok(())
    }

    fn counters(&self) -> SinkCounters {
        self.counters.clone()
    }
}

/// MongoDB's limit on a document, less room for the insert command around it.
const MAX_ALERT_BYTES: usize = 16 * 1024 * 1024 - 16 * 1024;
/// What a long string is cut to when an alert would exceed the limit.
const TRUNCATED_STRING_BYTES: usize = 4096;

/// An alert on a huge event (a 15 MB command line, say) carries the event
/// and the matched values, and would exceed MongoDB's 16 MiB: the server
/// would refuse it on every retry and the watch could never get past that
/// event. Such an alert keeps every field, with long strings cut to 4 KiB
/// and `truncated: true`; the full event stays in its collection
/// (`event_id`).
fn fit_in_a_document(document: &mut Document) {
    let size = bson::to_vec(&*document).map_or(usize::MAX, |bytes| bytes.len());
    if size <= MAX_ALERT_BYTES {
        return;
    }
    for key in ["offending_log", "findings"] {
        if let Some(value) = document.get_mut(key) {
            truncate_strings(value);
        }
    }
    document.insert("truncated", true);
    tracing::warn!(
        alert = %document.get_str("_id").unwrap_or_default(),
        bytes = size,
        "alert larger than a MongoDB document: strings longer than {TRUNCATED_STRING_BYTES} bytes were cut"
    );
}

fn truncate_strings(value: &mut Bson) {
    match value {
        Bson::String(text) if text.len() > TRUNCATED_STRING_BYTES => {
            let mut end = TRUNCATED_STRING_BYTES;
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            let cut = text.len() - end;
            text.truncate(end);
            text.push_str(&format!("… [{cut} bytes cut]"));
        }
        Bson::Document(document) => document.iter_mut().for_each(|(_, value)| truncate_strings(value)),
        Bson::Array(values) => values.iter_mut().for_each(truncate_strings),
        _ => {}
    }
}

/// How many writes failed, when every failure is a duplicate key.
fn only_duplicates(error: &DriverError) -> Option<u64> {
    let ErrorKind::InsertMany(failure) = error.kind.as_ref() else { return None };
    if failure.write_concern_error.is_some() {
        return None;
    }
    let errors = failure.write_errors.as_ref()?;
    errors.iter().all(|e| e.code == DUPLICATE_KEY).then_some(errors.len() as u64)
}

/// A single write's duplicate-key error.
fn is_duplicate_key(error: &DriverError) -> bool {
    match error.kind.as_ref() {
        ErrorKind::Write(mongodb::error::WriteFailure::WriteError(write)) => write.code == DUPLICATE_KEY,
        ErrorKind::Command(command) => command.code == DUPLICATE_KEY,
        _ => false,
    }
}

fn is_history_lost(error: &DriverError) -> bool {
    matches!(error.kind.as_ref(), ErrorKind::Command(command) if HISTORY_LOST.contains(&command.code))
}

/// The URI without its password, for messages.
pub fn redact(uri: &str) -> String {
    match (uri.find("://"), uri.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let credentials = &uri[scheme + 3..at];
            match credentials.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &uri[..scheme + 3], &uri[at..]),
                None => uri.to_owned(),
            }
        }
        _ => uri.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alert_ids_are_stable_and_distinct() {
        let a = alert_id("5e3566a3-9f19-4ac7-8710-ec5fb09260ed", "1.0.0", "650cddcaf341f96a2006a05d");
        assert_eq!(a, alert_id("5e3566a3-9f19-4ac7-8710-ec5fb09260ed", "1.0.0", "650cddcaf341f96a2006a05d"));
        assert_eq!(a.len(), 32);
        assert_ne!(a, alert_id("5e3566a3-9f19-4ac7-8710-ec5fb09260ed", "1.0.1", "650cddcaf341f96a2006a05d"));
        assert_ne!(a, alert_id("5e3566a3-9f19-4ac7-8710-ec5fb09260ed", "1.0.0", "650cddcaf341f96a2006a05e"));
        // Parts cannot run into each other.
        assert_ne!(alert_id("a", "bc", "d"), alert_id("ab", "c", "d"));
    }

    #[test]
    fn an_alert_too_large_for_mongodb_keeps_its_fields_with_long_strings_cut() {
        let huge = "x".repeat(9 << 20) + " /etc/shadow";
        let mut alert = doc! {
            "_id": "a1",
            "rule_name": "Suspicious /etc/shadow Usage",
            "offending_log": { "command_line": &huge, "hostname": "pop-os", "pid": 4242 },
            "findings": [{ "matched": [{ "field": "command_line", "value": &huge }] }],
        };
        fit_in_a_document(&mut alert);
        assert!(bson::to_vec(&alert).unwrap().len() < 64 * 1024);
        assert_eq!(alert.get_bool("truncated"), Ok(true));
        let log = alert.get_document("offending_log").unwrap();
        assert_eq!(log.get_str("hostname"), Ok("pop-os"));
        assert_eq!(log.get_i32("pid"), Ok(4242));
        let cut = log.get_str("command_line").unwrap();
        assert!(
            cut.starts_with("xxxx") && cut.ends_with(&format!("[{} bytes cut]", huge.len() - 4096)),
            "{}",
            &cut[4000..]
        );

        let mut small = doc! { "_id": "a2", "offending_log": { "command_line": "cat /etc/shadow" } };
        let before = small.clone();
        fit_in_a_document(&mut small);
        assert_eq!(small, before, "an alert that fits is left alone");
    }

    #[test]
    fn passwords_are_redacted_from_uris() {
        assert_eq!(
            redact("mongodb://dac:s3cret@db:27017/?replicaSet=rs0"),
            "mongodb://dac:***@db:27017/?replicaSet=rs0"
        );
        assert_eq!(redact("mongodb://db:27017"), "mongodb://db:27017");
        assert_eq!(redact("mongodb+srv://user@cluster.example.net"), "mongodb+srv://user@cluster.example.net");
    }
}
