//! MongoDB at both ends of dac: a collection's change stream as a
//! [`Source`](dac_engine::Source), an alert collection as a
//! [`Sink`](dac_engine::Sink), and the checkpoint that ties them.
//!
//! Processing is at-least-once with idempotent alerts:
//! - the pipeline flushes the sink, then calls
//!   [`Source::commit`](dac_engine::Source::commit), which stores the
//!   resume token of the last event returned (or, when the stream is idle,
//!   its post-batch token) in the config collection;
//! - on start, the stream resumes after the stored token, so events since
//!   the last commit are evaluated again after a crash;
//! - an alert's `_id` is derived from (rule uuid, rule version, event
//!   `_id`), and duplicate-key errors are ignored, so a second evaluation
//!   never creates a second alert;
//! - a deduplicated alert ([`dac_engine::AlertPolicy`]) is one document per
//!   (rule, key, window), upserted by each match; the upsert skips an event
//!   already recorded in its `events`, so a second evaluation never counts
//!   twice.
//!
//! The driver is async; these types own a small tokio runtime
//! ([`Connection`]) and block on it, because the engine runs rules
//! synchronously on one thread.

mod alert_sink;
mod change_stream;
mod connection;

pub use alert_sink::{alert_id, MongoAlertSink};
pub use change_stream::{ChangeStreamSource, HistoryLost, StartAt, UnknownValue, WatchTarget};
pub use connection::{redact, Connection, MongoError};
