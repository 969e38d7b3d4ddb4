//! The dac detection engine: events in, rules, alerts out.
//!
//! Rules are WebAssembly components, run in a wasmtime sandbox under hard
//! limits, or declarative rules (the seed talk's YAML, Sigma) interpreted
//! by the host. This crate is everything between a source of events and a
//! sink of alerts, and nothing around it: no async runtime, no database
//! driver, no HTTP, no command line (`cargo tree -p dac-engine -e normal`
//! shows none of tokio, mongodb, axum, hyper, clap or notify). `dac-mongo`
//! adds a MongoDB change stream as a [`Source`] and an alert collection as
//! a [`Sink`]; `dac-serve` runs many tenants' engines; the `dac` crate is
//! the command line.
//!
//! The path of an event:
//!
//! - a [`Source`] yields documents: a [`ReplaySource`] reads NDJSON or a
//!   JSON array from a file or a pipe;
//! - the [`Engine`] evaluates each against every rule: a [`LiteralIndex`]
//!   skips the rules whose literals do not occur, a component runs in its
//!   own store of the [`Sandbox`] under [`Limits`], and the declarative
//!   rules run together in one pass; a component's keyed state
//!   (`dac:rule/state`) lives in the engine (`dac-state`), shared by its
//!   threads and stored with the stream's position;
//! - each match goes through the [`AlertPolicy`] (dedup, suppression) and
//!   becomes an [`Alert`] for a [`Sink`]: [`JsonLinesSink`] and
//!   [`PrettySink`] write to any `Write`;
//! - [`run_consumer`] is the one loop that connects them, for every
//!   command: it flushes the sink before the source commits its position,
//!   reports skipped input as a [`Notice`] to an [`Observer`], and counts
//!   everything in [`Stats`] (and per rule, in the engine's [`RuleStats`]).
//!   A [`Delivery`] is one rule set's part of it; [`run`] and
//!   [`run_with_policy`] run one. [`run_parallel`] is the same loop with
//!   the rules evaluated on several threads, its output in stream order.
//!
//! A running rule set changes in one way: a [`Change`] (rules put in,
//! taken out, or refused), checked by [`Engine::plan`] and swapped in by
//! [`Engine::apply`] between two events. Rules are known by their
//! [`RuleId`]; their counters belong to it.
//!
//! Embedding it: a YAML rule over two events read from memory, the alerts
//! as JSON lines.
//!
//! ```
//! use dac_engine::{ComponentCache, Engine, FieldMapping, JsonLinesSink, Limits, Notice, Observer, ReplaySource, RuleLoader, Sandbox, Stats};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let rule = dir.path().join("shadow.yaml");
//! std::fs::write(&rule, "name: Suspicious /etc/shadow Usage\nuuid: 5e3566a3-9f19-4ac7-8710-ec5fb09260ed\ndetection_logic:\n  command_line:\n    - /etc/shadow\n")?;
//!
//! // No cache on disk; components (`.wasm`) would load the same way.
//! let sandbox = Sandbox::new(Limits::default(), ComponentCache::new(None))?;
//! let loader = RuleLoader::new(sandbox, FieldMapping::default());
//! let (components, declarative, errors) = loader.load_all(&[rule]);
//! assert!(errors.is_empty());
//! let mut engine = Engine::with_declarative(components, declarative)?;
//!
//! let events = "{\"_id\": \"e1\", \"command_line\": \"ls /tmp\"}\n{\"_id\": \"e2\", \"command_line\": \"cat /etc/shadow\"}\n";
//! let mut source = ReplaySource::from_reader("events.ndjson", std::io::Cursor::new(events), None);
//! let mut alerts = Vec::new();
//! let mut stats = Stats::default();
//! struct Print;
//! impl Observer for Print {
//!     fn notice(&mut self, notice: &Notice<'_>) { eprintln!("{notice}") }
//! }
//! dac_engine::run(&mut source, &mut engine, &mut JsonLinesSink::new(&mut alerts), &mut stats, &mut Print, &Default::default())?;
//!
//! let alert: serde_json::Value = serde_json::from_slice(&alerts)?;
//! assert_eq!(alert["uuid"], "5e3566a3-9f19-4ac7-8710-ec5fb09260ed");
//! assert_eq!(alert["source"], "events.ndjson:2");
//! assert_eq!((stats.events, stats.alerts), (2, 1));
//! # Ok(()) }
//! ```

mod alert;
mod cache;
mod compiler;
mod component;
mod correlation;
mod declarative;
mod delivery;
mod engine;
mod error;
mod host;
mod limits;
mod loader;
mod parallel;
mod pipeline;
mod policy;
mod prefilter;
mod replay;
mod rule;
mod sandbox;
mod shape;
mod sink;
mod source;
mod state;
mod stats;
mod wasi;

pub use alert::Alert;
pub use cache::{ComponentCache, DEFAULT_CACHE_BYTES};
pub use compiler::{compile_in_child, Cancel, CancelOnDrop, ChildError, Compiler, INVALID_EXIT};
pub use component::RuleComponent;
pub use correlation::{CorrelationInfo, EvidenceEvent};
pub use dac_detect::{CorrelationLimits, CorrelationStats};
pub use dac_state::{StateFault, StateLimits, StoreStats, Usage as StateUsage};
pub use declarative::DeclarativeRule;
pub use delivery::{Delivery, Input, RuleChanges};
pub use engine::{
    Applied, Change, Document, Engine, EngineError, Evaluated, Outcome, Plan, Precompiled, RuleChange, StatePart,
    StateRestored,
};
pub use error::{LoadError, WORLD};
pub use host::{escape_controls, LogGroup, RuleLog, PROVIDED_INTERFACES};
pub use limits::{Isolation, Limits};
pub use loader::{is_rule_file, rule_files, LoadedRule, RuleLoader};
pub use parallel::{default_threads, run_parallel, BATCHES_PER_WORKER};
pub use pipeline::{
    run as run_consumer, Consumer, DeliveryError, Location, Notice, Observer, Options, PipelineError, STATE_COST_FACTOR,
};
pub use policy::{event_time, AlertPolicy, Decision, DedupInfo, PolicyError, Suppression};
pub use prefilter::LiteralIndex;
pub use replay::{ReplaySource, MAX_DOCUMENT_BYTES};
pub use rule::{Fault, Finding, MatchedField, Prefilter, RuleId, RuleInfo, RuleKind, Severity};
pub use sandbox::Sandbox;
pub use shape::{CompileLimits, Shape};
pub use sink::{JsonLinesSink, PrettySink, Sink, SinkError};
pub use source::{Body, Incoming, Source, SourceError};
pub use state::{bundle_states, unbundle_states, StateError, PARTITION_FIELD, STATE_FORMAT};
pub use stats::{Latency, RuleStats, SinkCounters, SourceCounters, Stats, LATENCY_BOUNDS_NS};
pub use wasi::GRANTED_WASI;

/// How Sigma rules' fields map to event fields (see [`RuleLoader`]).
pub use dac_detect::{Budget, FieldMapping};

/// Runs every event of `source` through `engine` into `sink`, counting in
/// `stats`, until the source ends: [`run_consumer`] with one [`Delivery`]
/// and no alert policy.
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
/// (see [`AlertPolicy`]).
pub fn run_with_policy(
    source: &mut dyn Source,
    engine: &mut Engine,
    policy: &mut AlertPolicy,
    sink: &mut dyn Sink,
    stats: &mut Stats,
    observer: &mut dyn Observer,
    options: &Options,
) -> Result<(), PipelineError> {
    run_consumer(source, &mut Delivery::new(engine, policy, sink, stats), observer, options)
}
