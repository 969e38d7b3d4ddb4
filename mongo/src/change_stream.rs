//! Inserts into a collection, read from its change stream, and the
//! checkpoint that lets a restart resume after them.
//!
//! The checkpoint is one document of the config collection,
//! `checkpoint:DB.COLLECTION`: the resume token, and, when the consumer
//! keeps state (the correlations' windows), a `state` entry naming the
//! state stored with an earlier position. The state's bytes are in chunk
//! documents of the same collection (`state:DB.COLLECTION:GENERATION:N`,
//! at most [`STATE_CHUNK_BYTES`] each, a document being at most 16 MiB),
//! written *before* the checkpoint that names them: replacing the one
//! checkpoint document is the atomic write that moves position and state
//! together, without multi-document transactions. A restart resumes at the
//! state's position with the state, so the events after it are evaluated
//! again from exactly the windows they first met.

use crate::connection::{Connection, MongoError};
use crate::partition::{self, Candidate, Partitioning};
use dac_engine::{Body, Incoming, Source, SourceCounters, SourceError};
use mongodb::bson::{self, doc, spec::BinarySubtype, Binary, Bson, Document};
use mongodb::change_stream::event::{ChangeStreamEvent, ResumeToken};
use mongodb::change_stream::ChangeStream;
use mongodb::error::{Error as DriverError, ErrorKind};
use mongodb::Collection;
use sha2::{Digest, Sha256};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The largest chunk of stored state: a MongoDB document holds at most
/// 16 MiB.
pub const STATE_CHUNK_BYTES: usize = 4 << 20;

/// Server error codes that mean "this resume token can no longer be used".
const HISTORY_LOST: [i32; 3] = [
    286, // ChangeStreamHistoryLost
    260, // InvalidResumeToken
    280, // ChangeStreamFatalError
];

/// Where a new stream starts when no checkpoint applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StartAt {
    /// After the stored checkpoint; from now when there is none.
    Stored,
    /// From now, ignoring any stored checkpoint.
    Now,
}

/// What to do when the stored token is no longer in the server's history.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HistoryLost {
    /// Stop with an error: someone must decide (e.g. replay the gap).
    Stop,
    /// Warn loudly, count the gap, and continue from now.
    RestartFromNow,
}

named_values!(StartAt { Stored = "stored", Now = "now" });
named_values!(HistoryLost { Stop = "stop", RestartFromNow = "restart-from-now" });

/// The names a watch needs.
#[derive(Debug, Clone)]
pub struct WatchTarget {
    pub database: String,
    pub collection: String,
    /// Holds the checkpoints (the seed's config collection).
    pub config_collection: String,
    /// The part of the stream to read (the whole by default).
    pub partitioning: Partitioning,
}

/// A state another checkpoint stored, for the buckets a partition took
/// over from it ([`ChangeStreamSource::take_inherited`]).
#[derive(Debug)]
pub struct InheritedState {
    /// The checkpoint it comes from.
    pub from: String,
    pub bytes: Vec<u8>,
    buckets: Vec<bool>,
}

impl InheritedState {
    /// Whether the state of events whose partition key is `value` (a
    /// missing key is the empty text) is this partition's from this part.
    pub fn holds(&self, value: &str) -> bool {
        let bucket = dac_event::partition::bucket_of(Some(value));
        self.buckets.get(usize::from(bucket)).copied().unwrap_or(false)
    }
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
    /// The `state` entry of the stored checkpoint (position, generation,
    /// size, digest), carried into every checkpoint written until a new
    /// state replaces it.
    state: Option<Document>,
    /// The state read back at open, until the caller takes it.
    restored: Option<Vec<u8>>,
    partitioning: Partitioning,
    /// Per route (bucket, or stray): the position up to which the events
    /// were evaluated by the checkpoint this partition took the bucket
    /// over from; empty when nothing was taken over.
    bounds: Vec<Option<Bson>>,
    /// States of other checkpoints this partition took buckets over from,
    /// until the caller takes them.
    inherited: Vec<InheritedState>,
    /// The generation of this partition's own earlier state, replaced at
    /// a takeover: deleted once a checkpoint no longer names it.
    stale_generation: Option<String>,
    took_over: bool,
    config_collection: String,
    /// Prefix of the chunk documents' `_id`s.
    state_prefix: String,
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
        let whole_id = format!("checkpoint:{}.{}", target.database, target.collection);
        let partitioning = target.partitioning.clone();
        // The whole stream keeps the id it always had: going from one
        // worker to N is a partition count changing from 1.
        let checkpoint_id = match partitioning.partition.is_whole() {
            true => whole_id.clone(),
            false => format!("{whole_id}:{}", partitioning.partition),
        };
        let mut pipeline = vec![doc! { "$match": { "operationType": { "$in": ["insert"] } } }];
        pipeline.extend(partitioning.match_stage().map(|m| doc! { "$match": m }));
        pipeline.extend(extra_match.map(|m| doc! { "$match": m }));
        let read_error = |source| MongoError::Checkpoint {
            id: checkpoint_id.clone(),
            collection: target.config_collection.clone(),
            source: Box::new(source),
        };
        // This partition's checkpoint first (it wins ties), then every
        // other of the collection's: those of other partition counts.
        let mut candidates: Vec<Candidate> = Vec::new();
        let mut own_document = None;
        if start_at == StartAt::Stored {
            own_document =
                connection.block_on(checkpoints.find_one(doc! { "_id": &checkpoint_id })).map_err(read_error)?;
            let others = connection
                .block_on(async {
                    let mut found = Vec::new();
                    for filter in [doc! { "source": source_name(target) }, doc! { "_id": &whole_id }] {
                        let mut cursor = checkpoints.find(filter).await?;
                        while cursor.advance().await? {
                            found.push(cursor.deserialize_current()?);
                        }
                    }
                    Ok::<_, mongodb::error::Error>(found)
                })
                .map_err(read_error)?;
            let others = others.iter().filter(|d| d.get_str("_id") != Ok(checkpoint_id.as_str()));
            for document in own_document.iter().chain(others) {
                match Candidate::read(document) {
                    Some(candidate) if !candidates.iter().any(|c| c.id == candidate.id) => candidates.push(candidate),
                    Some(_) => {}
                    None => tracing::warn!(
                        "ignoring {:?} in {}: not a checkpoint this dac can read",
                        document.get("_id"),
                        target.config_collection
                    ),
                }
            }
        }
        let takeover =
            partition::plan(&partitioning, &candidates).map_err(|err| MongoError::Takeover(Box::new(err)))?;
        // A restart of the same partition count: every bucket from its
        // own checkpoint, which resumes as it always did.
        let restart = own_document.is_some() && takeover.taken.iter().all(|(index, _)| *index == 0);
        let checkpoint = if restart { own_document.clone() } else { None };
        let stored = checkpoint
            .as_ref()
            .and_then(|stored| stored.get("resume_token").cloned())
            .and_then(|token| bson::from_bson::<ResumeToken>(token).ok());
        let state = checkpoint.as_ref().and_then(|stored| stored.get_document("state").ok()).cloned();
        let mut source = ChangeStreamSource {
            name: source_name(target),
            connection,
            collection,
            checkpoints,
            state_prefix: format!("state:{}.{}:", target.database, target.collection),
            checkpoint_id,
            config_collection: target.config_collection.clone(),
            pipeline,
            history_lost,
            shutdown,
            stream: None,
            resume_from: stored.clone(),
            position: stored.clone(),
            committed: stored,
            state: None,
            restored: None,
            partitioning,
            bounds: Vec::new(),
            inherited: Vec::new(),
            stale_generation: None,
            took_over: false,
            backoff: Duration::from_millis(100),
            events: 0,
            counters: SourceCounters::default(),
        };
        match state {
            // The state's position is at or before the checkpoint's: the
            // events between are evaluated again, from the state's windows.
            Some(state) => {
                let own = source.checkpoint_id.clone();
                let (token, bytes) = source.read_state(&own, &state)?;
                tracing::info!(
                    checkpoint = %source.checkpoint_id,
                    state_bytes = bytes.len(),
                    "resuming at the correlation state stored with the checkpoint (the events after it are evaluated again; their alerts are not written twice)"
                );
                source.resume_from = Some(token.clone());
                source.position = Some(token);
                source.state = Some(state);
                source.restored = Some(bytes);
            }
            None if source.committed.is_some() => {
                tracing::info!(checkpoint = %source.checkpoint_id, "resuming after the stored checkpoint")
            }
            None if restart || takeover.start.is_none() => {
                tracing::info!(checkpoint = %source.checkpoint_id, "starting from now")
            }
            None => source.take_over(&candidates, &takeover, own_document.as_ref())?,
        }
        // Only the buckets whose events up to a later position were
        // evaluated already need checking, event by event.
        let start = if restart { candidates.first().map(|own| own.resume.clone()) } else { takeover.start.clone() };
        if let Some(start) = start {
            let later = |bound: &Option<Bson>| {
                bound.as_ref().is_some_and(|b| partition::token_order(b, &start) == Some(std::cmp::Ordering::Greater))
            };
            if takeover.bounds.iter().any(later) {
                source.bounds = takeover.bounds.iter().map(|b| b.clone().filter(|_| later(b))).collect();
            }
        }
        // Opened now, not at the first read: "from now" then means from
        // the moment `open` returned, which callers can rely on.
        loop {
            match source.open_stream() {
                Ok(()) => {
                    if !source.took_over {
                        source.store_starting_point()?;
                        source.drop_unnamed_state();
                    } else if source.inherited.is_empty() {
                        // No state to wait for: this partition's position
                        // is its own from now on.
                        source.store_starting_point()?;
                    }
                    return Ok(source);
                }
                Err(error) if is_history_lost(&error) => {
                    source.recover(error).map_err(|fatal| MongoError::HistoryLost(fatal.to_string()))?
                }
                Err(error) => return Err(MongoError::Watch { target: source_name(target), source: Box::new(error) }),
            }
        }
    }

    /// The state stored with the checkpoint ([`dac_engine::Source::commit_state`]),
    /// once the caller has opened the source: the engine restores it before
    /// the first event, which comes right after the state's position.
    pub fn take_state(&mut self) -> Option<Vec<u8>> {
        self.restored.take()
    }

    /// The states of the checkpoints this partition took buckets over from
    /// when the partition count changed, each with the partition key values
    /// it holds for this partition ([`InheritedState::holds`]). The engine
    /// restores their union before the first event; then the caller must
    /// store it at once ([`Source::commit_state`]), before any other
    /// commit, so that a crash resumes from it rather than from the
    /// checkpoints it came from.
    pub fn take_inherited(&mut self) -> Vec<InheritedState> {
        std::mem::take(&mut self.inherited)
    }

    /// Whether this partition started from other partitions' checkpoints.
    pub fn took_over(&self) -> bool {
        self.took_over
    }

    /// Starts this partition where the checkpoints of an earlier partition
    /// count leave its buckets: at the earliest of their positions, with
    /// the states they stored, skipping each bucket's events up to where
    /// its checkpoint had evaluated them.
    fn take_over(
        &mut self,
        candidates: &[Candidate],
        takeover: &partition::Takeover,
        own: Option<&Document>,
    ) -> Result<(), MongoError> {
        let Some(start) = &takeover.start else { return Ok(()) };
        let start = bson::from_bson::<ResumeToken>(start.clone())
            .map_err(|err| self.refuse_state(format!("its resume token: {err}")))?;
        self.resume_from = Some(start.clone());
        self.position = Some(start);
        self.committed = None;
        self.took_over = true;
        self.stale_generation = own
            .and_then(|own| own.get_document("state").ok())
            .and_then(|s| s.get_str("generation").ok())
            .map(str::to_owned);
        for (index, routes) in &takeover.taken {
            let candidate = &candidates[*index];
            let buckets = routes.iter().filter(|&&r| r < partition::STRAY).count();
            tracing::info!(
                partition = %self.partitioning.partition,
                from = %candidate.id,
                from_partition = %candidate.partition,
                buckets,
                stray = routes.contains(&partition::STRAY),
                "taking buckets over from {} (its position: {})",
                candidate.id,
                candidate.resume
            );
            if let Some(state) = &candidate.state {
                let (_, bytes) = self.read_state(&candidate.id, state)?;
                let mut held = vec![false; usize::from(dac_event::partition::BUCKETS)];
                for &route in routes.iter().filter(|&&r| r < partition::STRAY) {
                    held[route] = true;
                }
                self.inherited.push(InheritedState { from: candidate.id.clone(), bytes, buckets: held });
            }
        }
        Ok(())
    }

    /// Why the state taken with [`ChangeStreamSource::take_state`] cannot
    /// be used (e.g. another dac version's format), with how to go on.
    pub fn refuse_state(&self, reason: impl std::fmt::Display) -> MongoError {
        MongoError::State {
            id: self.checkpoint_id.clone(),
            collection: self.config_collection.clone(),
            reason: reason.to_string(),
        }
    }

    /// Reads back the state a checkpoint's `state` entry names: its
    /// position and bytes, checked against the stored length and digest.
    /// `checkpoint` names it in errors.
    fn read_state(&self, checkpoint: &str, state: &Document) -> Result<(ResumeToken, Vec<u8>), MongoError> {
        let refuse = |reason: String| MongoError::State {
            id: checkpoint.to_owned(),
            collection: self.config_collection.clone(),
            reason,
        };
        let entry = |key: &str| state.get(key).ok_or_else(|| refuse(format!("its entry has no `{key}`")));
        let token = bson::from_bson::<ResumeToken>(entry("resume_token")?.clone())
            .map_err(|err| refuse(format!("its resume token: {err}")))?;
        let generation = entry("generation")?.as_str().ok_or_else(|| refuse("`generation` is not text".into()))?;
        // Any integer type: servers may narrow a small long.
        let integer = |key: &str| {
            let value = entry(key)?;
            value.as_i64().or(value.as_i32().map(i64::from)).ok_or_else(|| refuse(format!("`{key}` is not an integer")))
        };
        let chunks = integer("chunks")?;
        let length = integer("bytes")?;
        let digest = entry("sha256")?.as_str().ok_or_else(|| refuse("`sha256` is not text".into()))?;
        let mut bytes = Vec::with_capacity(usize::try_from(length).unwrap_or(0).min(1 << 30));
        for index in 0..usize::try_from(chunks).unwrap_or(0) {
            let id = self.chunk_id(generation, index);
            let chunk = self
                .connection
                .block_on(self.checkpoints.find_one(doc! { "_id": &id }))
                .map_err(|err| refuse(format!("reading chunk {id}: {err}")))?
                .ok_or_else(|| refuse(format!("chunk {id} is missing")))?;
            let data = chunk.get_binary_generic("data").map_err(|err| refuse(format!("chunk {id}: {err}")))?;
            bytes.extend_from_slice(data);
        }
        if bytes.len() as i64 != length {
            return Err(refuse(format!("its chunks hold {} bytes, not {length}", bytes.len())));
        }
        if hex::encode(Sha256::digest(&bytes)) != digest {
            return Err(refuse("its chunks do not match its SHA-256 (changed or damaged)".into()));
        }
        Ok((token, bytes))
    }

    /// Deletes chunk documents no checkpoint names: those of a crash
    /// between writing a state's chunks and the checkpoint naming them,
    /// or left by a failed delete. Failing is logged, not fatal: they are
    /// tried again at the next start.
    fn drop_unnamed_state(&self) {
        let current = self.state.as_ref().and_then(|s| s.get_str("generation").ok()).unwrap_or_default();
        let filter = doc! { "checkpoint": &self.checkpoint_id, "generation": { "$ne": current } };
        if let Err(error) = self.connection.block_on(self.checkpoints.delete_many(filter)) {
            tracing::warn!("deleting stale state chunks of {}: {error}", self.checkpoint_id);
        }
    }

    /// Writes (upserts) document `id` of the config collection, retrying
    /// with backoff for 30 s; `what` names it in messages.
    fn store(&self, id: &str, document: Document, what: &str) -> Result<(), SourceError> {
        let mut delay = Duration::from_millis(100);
        loop {
            let replace = self.checkpoints.replace_one(doc! { "_id": id }, document.clone()).upsert(true);
            match self.connection.block_on(replace) {
                Ok(_) => return Ok(()),
                Err(error) if delay < Duration::from_secs(30) => {
                    tracing::warn!(retry_in = ?delay, "storing {what} failed: {error}");
                    std::thread::sleep(delay);
                    delay *= 2;
                }
                Err(error) => return Err(SourceError::Io(std::io::Error::other(format!("storing {what}: {error}")))),
            }
        }
    }

    /// The `_id` of a state's chunk.
    fn chunk_id(&self, generation: &str, index: usize) -> String {
        format!("{}{generation}:{index}", self.state_prefix)
    }

    /// The checkpoint document at `token`, naming the current state.
    fn checkpoint_document(&self, token: &ResumeToken) -> Result<Document, SourceError> {
        let stored = bson::to_bson(token).map_err(|err| SourceError::Io(std::io::Error::other(err)))?;
        let mut checkpoint = doc! {
            "_id": &self.checkpoint_id,
            "resume_token": stored.clone(),
            "events": self.events as i64,
            "updated_at": bson::DateTime::now(),
        };
        if let Some(state) = &self.state {
            checkpoint.insert("state", state.clone());
        }
        if !self.partitioning.partition.is_whole() || !self.bounds.is_empty() {
            checkpoint.insert("source", &self.name);
            checkpoint.insert("partition", self.partitioning.describe());
        }
        // The buckets taken over whose previous owner had got further than
        // where this checkpoint resumes: a restart must still skip their
        // events up to there.
        let resume = match self.state.as_ref().and_then(|state| state.get("resume_token")) {
            Some(position) => position.clone(),
            None => stored.clone(),
        };
        let mut skip: Vec<(Bson, Vec<i32>)> = Vec::new();
        for (route, bound) in self.bounds.iter().enumerate() {
            let Some(bound) = bound else { continue };
            if partition::token_order(bound, &resume) == Some(std::cmp::Ordering::Greater) {
                match skip.iter_mut().find(|(through, _)| through == bound) {
                    Some((_, routes)) => routes.push(route as i32),
                    None => skip.push((bound.clone(), vec![route as i32])),
                }
            }
        }
        if !skip.is_empty() {
            let skip: Vec<Document> =
                skip.into_iter().map(|(through, buckets)| doc! { "through": through, "buckets": buckets }).collect();
            checkpoint.insert("skip", skip);
        }
        Ok(checkpoint)
    }

    /// Stores the checkpoint at `token` naming `state`; only once it is
    /// stored does the source go on from them.
    fn store_named(&mut self, token: ResumeToken, state: Option<Document>) -> Result<(), SourceError> {
        let kept = std::mem::replace(&mut self.state, state);
        let written = self
            .checkpoint_document(&token)
            .and_then(|checkpoint| self.store(&self.checkpoint_id, checkpoint, "the checkpoint"));
        if let Err(error) = written {
            self.state = kept;
            return Err(error);
        }
        self.committed = Some(token);
        self.counters.commits += 1;
        if let Some(stale) = self.stale_generation.take() {
            self.drop_generation(&stale);
        }
        self.prune_bounds();
        Ok(())
    }

    /// Writes `bytes` as the chunks of a new generation, retrying each
    /// with backoff for 30 s; returns the generation.
    fn store_chunks(&self, bytes: &[u8]) -> Result<(String, i32), SourceError> {
        // Unique per write: two processes sharing a checkpoint (a rolling
        // update) never write into each other's generation.
        let generation = bson::oid::ObjectId::new().to_hex();
        let mut chunks = 0i32;
        for (index, chunk) in bytes.chunks(STATE_CHUNK_BYTES).enumerate() {
            let id = self.chunk_id(&generation, index);
            let document = doc! {
                "_id": &id,
                "checkpoint": &self.checkpoint_id,
                "generation": &generation,
                "data": Binary { subtype: BinarySubtype::Generic, bytes: chunk.to_vec() },
            };
            self.store(&id, document, "the correlation state")?;
            chunks += 1;
        }
        Ok((generation, chunks))
    }

    /// Deletes a generation's chunks once no checkpoint names it; a
    /// failure only leaves them for the next start to delete.
    fn drop_generation(&self, generation: &str) {
        let filter = doc! { "checkpoint": &self.checkpoint_id, "generation": generation };
        if let Err(error) = self.connection.block_on(self.checkpoints.delete_many(filter)) {
            tracing::warn!("deleting the previous correlation state of {}: {error}", self.checkpoint_id);
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

    /// Where a restart would resume: the stored state's position, else the
    /// committed one.
    fn resume_point(&self) -> Option<Bson> {
        match self.state.as_ref().and_then(|state| state.get("resume_token")) {
            Some(position) => Some(position.clone()),
            None => self.committed.as_ref().and_then(|token| bson::to_bson(token).ok()),
        }
    }

    /// Forgets the skip bounds a restart resumes past: no event up to them
    /// can come again.
    fn prune_bounds(&mut self) {
        if self.bounds.is_empty() {
            return;
        }
        let Some(resume) = self.resume_point() else { return };
        for bound in &mut self.bounds {
            if bound.as_ref().is_some_and(|b| partition::token_order(b, &resume) != Some(std::cmp::Ordering::Greater)) {
                *bound = None;
            }
        }
        if self.bounds.iter().all(Option::is_none) {
            self.bounds.clear();
        }
    }

    /// Whether the event just read (at `position`) of `route` was evaluated
    /// by the checkpoint its bucket was taken over from.
    fn evaluated_before(&self, route: usize) -> bool {
        let (Some(Some(bound)), Some(position)) = (self.bounds.get(route), &self.position) else { return false };
        let Ok(position) = bson::to_bson(position) else { return false };
        matches!(partition::token_order(&position, bound), Some(std::cmp::Ordering::Less | std::cmp::Ordering::Equal))
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
            match self.connection.block_on(stream.next_if_any()) {
                Ok(Some(change)) => {
                    self.backoff = Duration::from_millis(100);
                    self.resume_from = Some(change.id.clone());
                    self.position = Some(change.id);
                    self.counters.lag = Some(lag(change.wall_time, change.cluster_time));
                    let Some(document) = change.full_document else {
                        self.counters.without_document += 1;
                        continue;
                    };
                    if !self.partitioning.partition.is_whole() || !self.bounds.is_empty() {
                        let (route, misrouted) = self.partitioning.route(&document);
                        self.counters.misrouted += u64::from(misrouted);
                        if route == partition::STRAY && !self.partitioning.partition.is_whole() {
                            if self.counters.stray == 0 {
                                tracing::warn!(
                                    "an event without a bucket number in `{}` (partition 0 takes such events): write the field as dac-probe does, or use --bucket-filter hashed on MongoDB 7.0+; counted as `stray`",
                                    dac_event::partition::BUCKET_FIELD
                                );
                            }
                            self.counters.stray += 1;
                        }
                        if self.evaluated_before(route) {
                            self.counters.handed_over += 1;
                            continue;
                        }
                    }
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
        let state = self.state.clone();
        self.store_named(token, state)
    }

    fn commit_state(&mut self, state: Option<&[u8]>) -> Result<(), SourceError> {
        let Some(token) = self.position.clone() else { return Ok(()) };
        let previous = self.state.as_ref().and_then(|s| s.get_str("generation").ok()).map(str::to_owned);
        let Some(bytes) = state else {
            let Some(previous) = previous else { return self.commit() };
            // No state kept any more (no correlation runs): the checkpoint
            // stops naming one, so a restart resumes after its position.
            self.store_named(token, None)?;
            self.drop_generation(&previous);
            return Ok(());
        };
        let digest = hex::encode(Sha256::digest(bytes));
        let position = bson::to_bson(&token).map_err(|err| SourceError::Io(std::io::Error::other(err)))?;
        if let Some(mut same) = self.state.clone().filter(|s| s.get_str("sha256").ok() == Some(digest.as_str())) {
            // The same windows (no correlated match since): the stored
            // chunks hold them, valid at this later position too.
            same.insert("resume_token", position);
            return self.store_named(token, Some(same));
        }
        let (generation, chunks) = self.store_chunks(bytes)?;
        let named = doc! {
            "resume_token": position,
            "generation": &generation,
            "chunks": chunks,
            "bytes": bytes.len() as i64,
            "sha256": digest,
            "stored_at": bson::DateTime::now(),
        };
        // The one write that moves both: until it lands, the previous
        // checkpoint and its state stand.
        if let Err(error) = self.store_named(token, Some(named)) {
            self.drop_generation(&generation);
            return Err(error);
        }
        self.counters.states_stored += 1;
        if let Some(previous) = previous {
            self.drop_generation(&previous);
        }
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

fn is_history_lost(error: &DriverError) -> bool {
    matches!(error.kind.as_ref(), ErrorKind::Command(command) if HISTORY_LOST.contains(&command.code))
}
