//! The dac host: events in, sandboxed rules, alerts out.
//!
//! The crate is laid out as the path an event takes:
//!
//! - [`source`] — where an event enters ([`Source`]: a replay file or
//!   stdin here; a MongoDB change stream plugs in the same way);
//! - [`engine`] — where rules run: the [`Engine`] parses each event once,
//!   asks the [`prefilter`] which rules could fire, and calls those in the
//!   [`sandbox`], each in its own wasmtime store under [`Limits`];
//! - [`sink`] — where an alert leaves ([`Sink`]: stdout as JSON lines or
//!   for people; a MongoDB alert collection plugs in the same way);
//! - [`pipeline`] — the loop that connects the three, counting everything
//!   in [`Stats`] and reporting what was skipped as a [`Notice`];
//! - [`policy`] — alert fatigue between engine and sink: matches folded
//!   into one alert per key and event-time window (dedup), or counted and
//!   not alerted (suppression);
//! - [`reload`] — hot reload: changed rule files are compiled off the hot
//!   path and swapped into the engine between two documents;
//! - [`builder`] — `dac build`: a YAML or Sigma rule written into a copy of
//!   the prebuilt matcher component, an ordinary rule component.
//! - [`investigate`] — after an alert: the host's timeline around the
//!   event and the alerting process's tree, read back from MongoDB.
//! - [`serve`] — `dac serve`: many tenants' rules in one process, each
//!   tenant with its own engine and limits, managed over an HTTP API.
//!
//! ```no_run
//! use dac_runtime::{pipeline, ComponentCache, Engine, JsonLinesSink, Limits, ReplaySource, Sandbox, Stats};
//! # fn main() -> anyhow::Result<()> {
//! let sandbox = Sandbox::new(Limits::default(), ComponentCache::new(ComponentCache::default_dir()))?;
//! let rule = sandbox.load_file("shadow.wasm".as_ref())?;
//! let mut engine = Engine::new(vec![rule])?;
//! let mut source = ReplaySource::open("logs.json".as_ref())?;
//! let mut sink = JsonLinesSink::new(std::io::stdout().lock());
//! let mut stats = Stats::default();
//! struct Print;
//! impl pipeline::Observer for Print {
//!     fn notice(&mut self, notice: &pipeline::Notice<'_>) { eprintln!("{notice}") }
//! }
//! pipeline::run(&mut source, &mut engine, &mut sink, &mut stats, &mut Print, &Default::default())?;
//! # Ok(()) }
//! ```

pub mod alert;
pub mod builder;
pub mod cache;
pub mod cli;
pub mod declarative;
pub mod engine;
pub mod investigate;
pub mod limits;
pub mod loader;
pub mod mongo;
pub mod pipeline;
pub mod policy;
pub mod prefilter;
pub mod reload;
pub mod rule;
pub mod sandbox;
pub mod serve;
pub mod sink;
pub mod source;
pub mod stats;
pub mod testing;

pub use alert::Alert;
pub use cache::ComponentCache;
pub use engine::{Engine, Outcome, RuleChange};
pub use limits::{Isolation, Limits};
pub use loader::{LoadedRule, RuleLoader};
pub use pipeline::{Notice, Observer};
pub use rule::{Fault, Finding, RuleComponent, RuleInfo, RuleKind, Severity};
pub use sandbox::{LoadError, Sandbox};
pub use sink::{JsonLinesSink, PrettySink, Sink};
pub use source::{ReplaySource, Source};
pub use stats::Stats;
