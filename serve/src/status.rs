//! What each `dac serve` stream has done, readable while it runs (the
//! metrics endpoint): the stream publishes its counters between events.

use dac_engine::SourceCounters;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// What one stream has done, readable while it runs (the metrics
/// endpoint): the stream publishes its counters between events.
#[derive(Debug)]
pub struct StreamStatus {
    /// `DB.COLLECTION`.
    pub name: String,
    /// Documents read from the stream (evaluated by the tenants they
    /// belong to, or by none).
    pub(crate) events: AtomicU64,
    /// Read documents no tenant's scope took.
    pub(crate) unrouted: AtomicU64,
    /// Input that was not an event, skipped.
    pub(crate) malformed: AtomicU64,
    source: Mutex<SourceCounters>,
}

/// A copy of a [`StreamStatus`].
#[derive(Debug, Clone)]
pub struct StreamSnapshot {
    pub name: String,
    pub events: u64,
    pub unrouted: u64,
    pub malformed: u64,
    pub source: SourceCounters,
}

impl StreamStatus {
    pub fn new(name: String) -> StreamStatus {
        StreamStatus {
            name,
            events: Default::default(),
            unrouted: Default::default(),
            malformed: Default::default(),
            source: Default::default(),
        }
    }

    pub fn snapshot(&self) -> StreamSnapshot {
        StreamSnapshot {
            name: self.name.clone(),
            events: self.events.load(Ordering::Relaxed),
            unrouted: self.unrouted.load(Ordering::Relaxed),
            malformed: self.malformed.load(Ordering::Relaxed),
            source: self.source.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone(),
        }
    }

    pub fn publish(&self, source: SourceCounters) {
        *self.source.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = source;
    }
}
