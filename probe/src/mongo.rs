//! Writing events to MongoDB: batched inserts on a task of their own, fed
//! by a bounded queue so that a slow or unreachable server never stalls
//! the ring-buffer reader. What the queue cannot hold is dropped and
//! counted.

use mongodb::bson::{doc, oid::ObjectId, Document};
use mongodb::error::{ErrorKind, WriteFailure};
use mongodb::Collection;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

/// What the writer has done, shared with the reader and the stats line.
#[derive(Debug, Default)]
pub struct WriterStats {
    pub inserted: AtomicU64,
    /// Events the full queue turned away.
    pub queue_dropped: AtomicU64,
    /// Events still unwritten when shutdown gave up on the server.
    pub unwritten: AtomicU64,
    pub failed_attempts: AtomicU64,
}

pub struct WriterConfig {
    pub batch_size: usize,
    pub batch_latency: Duration,
    pub queue_capacity: usize,
    /// How long shutdown keeps retrying an unreachable server.
    pub flush_timeout: Duration,
}

/// The reader's end: `push` never blocks.
pub struct MongoWriter {
    queue: mpsc::Sender<Document>,
    pub stats: Arc<WriterStats>,
    shutdown: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl MongoWriter {
    pub fn spawn(runtime: &tokio::runtime::Handle, collection: Collection<Document>, config: WriterConfig) -> Self {
        let (queue, receiver) = mpsc::channel(config.queue_capacity.max(1));
        let (shutdown, shutdown_rx) = watch::channel(false);
        let stats = Arc::new(WriterStats::default());
        let task = runtime.spawn(write_batches(collection, receiver, config, stats.clone(), shutdown_rx));
        MongoWriter { queue, stats, shutdown, task }
    }

    /// Queues one event; returns false (and counts it) when the queue is full.
    pub fn push(&self, mut event: Document) -> bool {
        // Our own _id makes a retried batch idempotent: a document the
        // server already has comes back as a duplicate key, not twice.
        event.insert("_id", ObjectId::new());
        match self.queue.try_send(event) {
            Ok(()) => true,
            Err(_) => {
                self.stats.queue_dropped.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }

    /// Events waiting in the queue.
    pub fn queued(&self) -> usize {
        self.queue.max_capacity() - self.queue.capacity()
    }

    /// Writes what is queued, retrying for up to the flush timeout, and
    /// waits for the writer to finish.
    pub async fn finish(self) {
        let _ = self.shutdown.send(true);
        drop(self.queue);
        if let Err(err) = self.task.await {
            tracing::error!("the MongoDB writer task failed: {err}");
        }
    }
}

async fn write_batches(
    collection: Collection<Document>,
    mut receiver: mpsc::Receiver<Document>,
    config: WriterConfig,
    stats: Arc<WriterStats>,
    mut shutdown: watch::Receiver<bool>,
) {
    // Set once shutdown begins: from then on nothing may outlast it.
    let mut give_up_at: Option<Instant> = None;
    while let Some(first) = receiver.recv().await {
        let mut batch = vec![first];
        let deadline = Instant::now() + config.batch_latency;
        while batch.len() < config.batch_size {
            match tokio::time::timeout_at(deadline, receiver.recv()).await {
                Ok(Some(event)) => batch.push(event),
                Ok(None) | Err(_) => break,
            }
        }
        let mut backoff = Duration::from_millis(100);
        loop {
            let attempt = {
                let insert = insert(&collection, &batch);
                tokio::pin!(insert);
                loop {
                    if give_up_at.is_none() && *shutdown.borrow() {
                        give_up_at = Some(Instant::now() + config.flush_timeout);
                    }
                    match give_up_at {
                        // The driver alone waits 30 s to select an
                        // unreachable server; shutdown does not.
                        Some(limit) => {
                            break tokio::time::timeout_at(limit, &mut insert)
                                .await
                                .unwrap_or_else(|_| Err(mongodb::error::Error::custom("flush timeout reached")))
                        }
                        None => tokio::select! {
                            result = &mut insert => break result,
                            changed = shutdown.changed() => if changed.is_err() {
                                give_up_at = Some(Instant::now() + config.flush_timeout);
                            },
                        },
                    }
                }
            };
            let err = match attempt {
                Ok(()) => {
                    stats.inserted.fetch_add(batch.len() as u64, Ordering::Relaxed);
                    break;
                }
                Err(err) => err,
            };
            stats.failed_attempts.fetch_add(1, Ordering::Relaxed);
            if give_up_at.is_some_and(|limit| Instant::now() >= limit) {
                let left = batch.len() as u64 + drain_count(&mut receiver);
                stats.unwritten.fetch_add(left, Ordering::Relaxed);
                tracing::error!("giving up on MongoDB at shutdown: {left} events not written ({err})");
                return;
            }
            tracing::warn!(
                "inserting {} events into {} failed, retrying in {backoff:?}: {err}",
                batch.len(),
                collection.namespace()
            );
            let pause = Instant::now() + backoff;
            let pause = give_up_at.map_or(pause, |limit| pause.min(limit));
            tokio::select! {
                _ = tokio::time::sleep_until(pause) => {}
                _ = shutdown.changed(), if give_up_at.is_none() => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }
}

fn drain_count(receiver: &mut mpsc::Receiver<Document>) -> u64 {
    receiver.close();
    let mut count = 0;
    while receiver.try_recv().is_ok() {
        count += 1;
    }
    count
}

/// insert_many, unordered; documents already present (a retry after a
/// reply was lost) count as written.
async fn insert(collection: &Collection<Document>, batch: &[Document]) -> mongodb::error::Result<()> {
    match collection.insert_many(batch).ordered(false).await {
        Ok(_) => Ok(()),
        Err(err) => match &*err.kind {
            ErrorKind::InsertMany(failure)
                if failure.write_concern_error.is_none()
                    && failure.write_errors.as_ref().is_some_and(|errors| errors.iter().all(|e| e.code == 11000)) =>
            {
                Ok(())
            }
            ErrorKind::Write(WriteFailure::WriteError(e)) if e.code == 11000 => Ok(()),
            _ => Err(err),
        },
    }
}

/// The run's counters as a document in the stats collection, one per run.
pub async fn write_stats(collection: &Collection<Document>, id: &str, stats: Document) {
    let update = doc! { "$set": stats };
    if let Err(err) = collection.update_one(doc! { "_id": id }, update).upsert(true).await {
        tracing::warn!("writing the stats document to {} failed: {err}", collection.namespace());
    }
}
