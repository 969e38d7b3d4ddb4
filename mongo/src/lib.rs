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
//! A stream can be read in partitions ([`Partitioning`]: N workers, each
//! event evaluated by one), each with its own checkpoint; when N changes,
//! a worker takes its buckets over from the old partitions' checkpoints
//! (docs/scale.md).
//!
//! The driver is async; these types own a small tokio runtime
//! ([`Connection`]) and block on it, because the engine runs rules
//! synchronously on one thread.

/// A name that is none of an enum's values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{value:?}: expected one of {}", expected.join(", "))]
pub struct UnknownValue {
    pub value: String,
    pub expected: &'static [&'static str],
}

/// The names of an enum's values, as flags and config files spell them.
macro_rules! named_values {
    ($type:ident { $($value:ident = $name:literal),+ $(,)? }) => {
        impl $type {
            /// Every value's name.
            pub const NAMES: &'static [&'static str] = &[$($name),+];

            pub fn name(self) -> &'static str {
                match self { $($type::$value => $name),+ }
            }
        }

        impl std::str::FromStr for $type {
            type Err = $crate::UnknownValue;
            fn from_str(text: &str) -> Result<$type, $crate::UnknownValue> {
                match text {
                    $($name => Ok($type::$value),)+
                    _ => Err($crate::UnknownValue { value: text.to_owned(), expected: $type::NAMES }),
                }
            }
        }

        impl std::fmt::Display for $type {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.name())
            }
        }
    };
}

mod alert_sink;
mod change_stream;
mod connection;
mod partition;

pub use alert_sink::{alert_id, MongoAlertSink};
pub use change_stream::{ChangeStreamSource, HistoryLost, InheritedState, StartAt, WatchTarget};
pub use connection::{redact, Connection, MongoError};
pub use dac_event::partition::Partition;
pub use partition::{BucketFilter, Partitioning, TakeoverError};
