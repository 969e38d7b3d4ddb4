//! The event streams of `dac serve`: one change stream per watched
//! collection, shared by every tenant that reads it, fanned out to their
//! rule sets.
//!
//! A collection is watched once, however many tenants read it (a hundred
//! tenants on one shared collection are one stream, not a hundred). Each
//! event is routed by the tenants' scopes — all of a `{collection}` tenant's
//! collection, or the events of a shared collection whose scope field
//! equals the tenant's value — and evaluated by each such tenant's engine,
//! under its own limits. Alerts go to the tenant's own alert collection.
//!
//! The guarantees are `dac watch`'s, per stream: one checkpoint per
//! collection (`checkpoint:DB.COLLECTION` in the config collection), stored
//! only after *every* tenant's alerts for the events before it are written.
//! A crash therefore re-evaluates the events since the last checkpoint for
//! every tenant of that stream, and the alerts' deterministic `_id`s (rule
//! uuid, version, event id) make the re-evaluation write nothing twice.

use crate::batch::{Route, TenantBatch, BATCH_EVENTS};
use crate::config::{FieldScope, Scope};
use crate::service::Service;
use crate::status::StreamStatus;
use crate::tenant::Tenant;
use dac_engine::{
    Body, Consumer, DeliveryError, Location, Notice, Observer, Options, PipelineError, Sink, SinkCounters, SinkError,
    Stats,
};
use dac_mongo::{
    ChangeStreamSource, Connection, HistoryLost, MongoAlertSink, MongoError, Partitioning, StartAt, WatchTarget,
};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// Where the streams read and keep their checkpoints.
#[derive(Debug, Clone)]
pub struct StreamSettings {
    /// The database of every tenant's event and alert collections.
    pub database: String,
    /// Holds one checkpoint per watched collection.
    pub config_collection: String,
    pub start_at: StartAt,
    pub history_lost: HistoryLost,
    /// How often alerts are made durable and the position stored while
    /// events keep coming (also whenever the stream is idle).
    pub flush_interval: Duration,
    /// How often the tenants' correlation windows are stored with the
    /// position (when any run; also at the end).
    pub state_interval: Duration,
    /// Threads delivering each stream's events to its tenants (the
    /// stream's own included); 1: one tenant after the other.
    pub threads: usize,
    /// The part of each stream this server reads (docs/scale.md): the
    /// whole by default.
    pub partitioning: Partitioning,
}

#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error("{0}")]
    Open(#[from] MongoError),
    #[error("change stream {collection}: {message}")]
    Failed { collection: String, message: String },
    #[error("the change stream of {0} panicked; see the log")]
    Panicked(String),
}

/// The running streams, one thread each.
pub struct Streams {
    watcher: Arc<Watcher>,
}

/// What starting a stream takes, kept for the collections a reload of the
/// tenants file adds.
struct Watcher {
    connection: Connection,
    settings: StreamSettings,
    shutdown: Arc<AtomicBool>,
    /// By collection: the stream's name and thread.
    threads: Mutex<BTreeMap<String, (String, StreamThread)>>,
}

type StreamThread = JoinHandle<Result<(), StreamError>>;

impl Streams {
    /// Opens one change stream per distinct collection of the tenants'
    /// scopes and starts evaluating. Streams are opened here, before this
    /// returns, so "from now" is the moment the server started, and a
    /// server that cannot watch does not start. Setting `shutdown` ends
    /// every stream after its current event: alerts written, position
    /// stored. A stream that fails sets it too, so the server stops rather
    /// than answering while its tenants' events go unread.
    ///
    /// After a reload of the tenants file, each stream takes its new
    /// tenants between two events, and a collection no stream watched yet
    /// gets its own.
    pub fn start(
        service: &Arc<Service>,
        connection: &Connection,
        settings: &StreamSettings,
        shutdown: Arc<AtomicBool>,
    ) -> Result<Streams, StreamError> {
        let watcher = Arc::new(Watcher {
            connection: connection.clone(),
            settings: settings.clone(),
            shutdown,
            threads: Mutex::new(BTreeMap::new()),
        });
        watcher.sync(service)?;
        let hook = (Arc::downgrade(service), watcher.clone());
        service.on_reload(Box::new(move || {
            let (service, watcher) = &hook;
            let Some(service) = service.upgrade() else { return Ok(()) };
            watcher.sync(&service).map_err(|err| format!("a new collection is not watched: {err}").into())
        }));
        Ok(Streams { watcher })
    }

    /// Waits for every stream to end (after `shutdown` was set, or on a
    /// fatal error); the first error, if any.
    pub fn join(self) -> Result<(), StreamError> {
        let threads =
            std::mem::take(&mut *self.watcher.threads.lock().unwrap_or_else(|poisoned| poisoned.into_inner()));
        let mut first = Ok(());
        for (_, (name, thread)) in threads {
            let result = thread.join().unwrap_or(Err(StreamError::Panicked(name)));
            if let Err(err) = result {
                tracing::error!("{err}");
                if first.is_ok() {
                    first = Err(err);
                }
            }
        }
        first
    }
}

/// Which of a stream's tenants each event belongs to, found without
/// asking every tenant: one lookup of each distinct scope field and a hash
/// of its value, however many tenants share the collection.
#[derive(Debug, Default)]
pub struct ScopeIndex {
    /// Tenants with the whole collection.
    whole: Vec<usize>,
    /// Per scope field: tenant indices by the value that selects them.
    by_field: Vec<(String, HashMap<String, Vec<usize>>)>,
}

impl ScopeIndex {
    /// The index of `scopes`, numbered in order.
    pub fn new<'a>(scopes: impl IntoIterator<Item = &'a Scope>) -> ScopeIndex {
        let mut index = ScopeIndex::default();
        for (tenant, scope) in scopes.into_iter().enumerate() {
            match scope {
                Scope::Collection(_) => index.whole.push(tenant),
                Scope::Field(FieldScope { field, equals, .. }) => {
                    let values = match index.by_field.iter_mut().find(|(known, _)| known == field) {
                        Some((_, values)) => values,
                        None => {
                            index.by_field.push((field.clone(), HashMap::new()));
                            &mut index.by_field.last_mut().expect("just pushed").1
                        }
                    };
                    values.entry(equals.clone()).or_default().push(tenant);
                }
            }
        }
        index
    }

    /// The tenants `event` belongs to, in the order of [`ScopeIndex::new`],
    /// into `tenants` (cleared first). Only a text value equal to a
    /// tenant's counts: a number or an array holding it is not the ingest
    /// path's tag.
    pub fn route(&self, event: &dac_event::Event, tenants: &mut Vec<usize>) {
        tenants.clear();
        tenants.extend_from_slice(&self.whole);
        for (field, values) in &self.by_field {
            if let Some(matched) = event.text(field).and_then(|value| values.get(value)) {
                tenants.extend_from_slice(matched);
            }
        }
        if self.by_field.len() + usize::from(!self.whole.is_empty()) > 1 {
            tenants.sort_unstable();
        }
    }
}

impl Watcher {
    /// Starts a stream for every collection of the tenants' scopes that has
    /// none yet. A collection no tenant reads any more keeps its stream,
    /// without routes, until the server stops: its position keeps up, so a
    /// tenant added back later starts from then, rather than from a stopped
    /// checkpoint that the server's change history may no longer hold
    /// (which `--on-history-lost stop` would turn into a stopped server).
    fn sync(&self, service: &Arc<Service>) -> Result<(), StreamError> {
        let mut threads = self.threads.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if self.shutdown.load(Ordering::Relaxed) {
            return Ok(());
        }
        // The generation first: a reload after it is picked up at the
        // stream's first event.
        let generation = service.generation();
        let mut by_collection: BTreeMap<String, Vec<Arc<Tenant>>> = BTreeMap::new();
        for tenant in service.tenants() {
            let collection = scope_collection(&tenant.config.scope);
            if !threads.contains_key(collection) {
                by_collection.entry(collection.to_owned()).or_default().push(tenant.clone());
            }
        }
        let settings = &self.settings;
        for (collection, tenants) in by_collection {
            let target = WatchTarget {
                database: settings.database.clone(),
                collection: collection.clone(),
                config_collection: settings.config_collection.clone(),
                partitioning: settings.partitioning.clone(),
            };
            if !settings.partitioning.partition.is_whole() {
                for tenant in &tenants {
                    partition_tenant(tenant, &settings.partitioning)
                        .map_err(|message| StreamError::Failed { collection: collection.clone(), message })?;
                }
            }
            let mut source = ChangeStreamSource::open(
                self.connection.clone(),
                &target,
                settings.start_at,
                settings.history_lost,
                None,
                self.shutdown.clone(),
            )?;
            let ids: Vec<&str> = tenants.iter().map(|tenant| tenant.id()).collect();
            // One line per stream: operators (and the tests) count them.
            tracing::info!("change stream {}.{collection}: tenants {}", settings.database, ids.join(", "));
            if let Some(state) = source.take_state() {
                restore_states(&source, &tenants, &state)?;
            }
            if source.took_over() {
                take_over_states(&mut source, &tenants, &settings.partitioning.key)?;
            }
            let index = ScopeIndex::new(tenants.iter().map(|tenant| &tenant.config.scope));
            let routes =
                tenants.into_iter().map(|tenant| new_route(&self.connection, &settings.database, tenant)).collect();
            let name = format!("{}.{collection}", settings.database);
            let status = Arc::new(StreamStatus::new(name.clone()));
            service.register_stream(status.clone());
            let fanout = Fanout {
                service: service.clone(),
                routes,
                batch: TenantBatch::default(),
                threads: settings.threads,
                index,
                taken_by: Vec::new(),
                status,
                stats: Stats::default(),
                name: name.clone(),
                collection: collection.clone(),
                connection: self.connection.clone(),
                database: settings.database.clone(),
                generation,
                partitioning: settings.partitioning.clone(),
            };
            let (interval, state_interval) = (settings.flush_interval, settings.state_interval);
            let thread = std::thread::Builder::new()
                .name(format!("dac-stream-{collection}"))
                .spawn({
                    let shutdown = self.shutdown.clone();
                    move || {
                        let result = fanout.run(source, interval, state_interval);
                        if result.is_err() {
                            shutdown.store(true, Ordering::Relaxed);
                        }
                        result
                    }
                })
                .map_err(|err| StreamError::Failed { collection: name.clone(), message: err.to_string() })?;
            threads.insert(collection, (name, thread));
        }
        Ok(())
    }
}

/// Gives each tenant of a stream its correlation windows stored with the
/// stream's checkpoint; a tenant without (new since) starts empty, and the
/// windows of a tenant that left are dropped.
fn restore_states(source: &ChangeStreamSource, tenants: &[Arc<Tenant>], state: &[u8]) -> Result<(), StreamError> {
    let parts = dac_engine::unbundle_states(state).map_err(|err| source.refuse_state(err))?;
    for (id, bytes) in parts {
        let Some(tenant) = tenants.iter().find(|tenant| tenant.id() == id) else {
            tracing::warn!("the stored correlation windows of tenant {id} are dropped: it no longer reads this stream");
            continue;
        };
        let restored =
            tenant.restore_state(&bytes).map_err(|err| source.refuse_state(format!("tenant {id}: {err}")))?;
        tracing::info!("tenant {id}: {restored}");
    }
    Ok(())
}

/// Refuses, now and in every later upload, the tenant's rules whose state
/// would span the partitions (`Err`: the reasons, for a start).
fn partition_tenant(tenant: &Tenant, partitioning: &Partitioning) -> Result<(), String> {
    let refusals = tenant.with_engine(|engine| {
        engine.set_partition_key(Some(partitioning.key.clone()));
        engine.partition_refusals(&partitioning.key)
    });
    match refusals.is_empty() {
        true => Ok(()),
        false => Err(format!(
            "tenant {}: these rules cannot run on one partition of the stream (--partition {}):\n  {}",
            tenant.id(),
            partitioning.partition,
            refusals.join("\n  ")
        )),
    }
}

/// Gives each tenant of a partition that took buckets over from other
/// partitions' checkpoints (the partition count changed) its state from
/// each, for the hosts it now owns; then stores their union at once as
/// this partition's own ([`ChangeStreamSource::take_inherited`]).
fn take_over_states(source: &mut ChangeStreamSource, tenants: &[Arc<Tenant>], key: &str) -> Result<(), StreamError> {
    let inherited = source.take_inherited();
    let mut bundles = Vec::new();
    for part in &inherited {
        let states = dac_engine::unbundle_states(&part.bytes)
            .map_err(|err| source.refuse_state(format!("the state of {}: {err}", part.from)))?;
        bundles.push((part, states));
    }
    let mut parts = Vec::new();
    for tenant in tenants {
        let keeps: Vec<_> = bundles.iter().map(|(part, _)| move |host: &str| part.holds(host)).collect();
        let own: Vec<dac_engine::StatePart<'_>> = bundles
            .iter()
            .zip(&keeps)
            .filter_map(|((_, states), keep)| {
                let (_, bytes) = states.iter().find(|(id, _)| id == tenant.id())?;
                Some((bytes.as_slice(), keep as &dyn Fn(&str) -> bool))
            })
            .collect();
        let restored = tenant
            .with_engine(|engine| engine.restore_partitioned_state(key, &own))
            .map_err(|err| source.refuse_state(format!("tenant {}: {err}", tenant.id())))?;
        if !own.is_empty() {
            tracing::info!("tenant {}: {restored}", tenant.id());
        }
        if let Some(state) = tenant.save_state().map_err(|err| source.refuse_state(err))? {
            parts.push((tenant.id().to_owned(), state));
        }
    }
    let bundle = match parts.is_empty() {
        true => None,
        false => Some(dac_engine::bundle_states(&parts).map_err(|err| source.refuse_state(err))?),
    };
    dac_engine::Source::commit_state(source, bundle.as_deref())
        .map_err(|err| StreamError::Failed { collection: source_name(source), message: err.to_string() })
}

fn source_name(source: &ChangeStreamSource) -> String {
    dac_engine::Source::name(source).to_owned()
}

/// The collection a scope reads.
fn scope_collection(scope: &Scope) -> &str {
    match scope {
        Scope::Collection(scope) => scope.collection.as_str(),
        Scope::Field(scope) => scope.collection.as_str(),
    }
}

fn new_route(connection: &Connection, database: &str, tenant: Arc<Tenant>) -> Route<MongoAlertSink> {
    let sink = MongoAlertSink::new(connection.clone(), database, &tenant.config.alert_collection);
    Route::new(tenant, sink)
}

/// One stream's consumer for the pipeline: each event routed to the
/// tenants whose scope takes it, and delivered by batches to each (its
/// engine, its dedup, its alert collection), the tenants on `threads`
/// threads; each tenant's alerts made durable before the stream's position
/// is stored.
struct Fanout {
    service: Arc<Service>,
    routes: Vec<Route<MongoAlertSink>>,
    /// The events read and routed, not delivered yet.
    batch: TenantBatch,
    threads: usize,
    /// Which of `routes` take an event.
    index: ScopeIndex,
    taken_by: Vec<usize>,
    status: Arc<StreamStatus>,
    /// The stream's own counters (documents read, malformed input, the
    /// source's counters); each tenant counts its deliveries itself.
    stats: Stats,
    name: String,
    /// The collection, and what a new tenant's route needs.
    collection: String,
    connection: Connection,
    database: String,
    /// The service's generation the routes were made for.
    generation: u64,
    partitioning: Partitioning,
}

impl Consumer for Fanout {
    fn consume(
        &mut self,
        body: Body<'_>,
        at: Location<'_>,
        _observer: &mut dyn Observer,
    ) -> Result<bool, DeliveryError> {
        let event = match body {
            Body::Document(event) => event,
            Body::Json(json) => match dac_event::Event::from_json_slice(json) {
                Ok((event, _)) => event,
                Err(err) => return Err(DeliveryError::Malformed { line: 1, column: None, message: err.to_string() }),
            },
            Body::Idle => return Ok(false),
        };
        // An event read after a reload goes to the tenants it made.
        self.refresh()?;
        self.status.events.fetch_add(1, Ordering::Relaxed);
        self.stats.events += 1;
        self.index.route(&event, &mut self.taken_by);
        if self.taken_by.is_empty() {
            self.status.unrouted.fetch_add(1, Ordering::Relaxed);
            return Ok(false);
        }
        self.batch.push(event, at.line, &self.taken_by);
        if self.batch.len() < BATCH_EVENTS {
            return Ok(false);
        }
        // No commit on an error: the position stays before the batch, so a
        // restart evaluates it again for every tenant.
        Ok(self.deliver_batch()?)
    }

    fn flush(&mut self) -> Result<(), SinkError> {
        self.deliver_batch()?;
        for route in &mut self.routes {
            route.sink.flush().map_err(|err| route.failed(err))?;
        }
        Ok(())
    }

    fn stats(&mut self) -> &mut Stats {
        &mut self.stats
    }

    /// Every tenant's correlation windows, by tenant, when any has some.
    fn state(&mut self) -> Result<Option<Vec<u8>>, dac_engine::StateError> {
        let mut parts = Vec::new();
        for route in &self.routes {
            if let Some(state) = route.tenant.save_state()? {
                parts.push((route.tenant.id().to_owned(), state));
            }
        }
        if parts.is_empty() {
            return Ok(None);
        }
        dac_engine::bundle_states(&parts).map(Some)
    }

    fn sink_counters(&self) -> SinkCounters {
        let mut total = SinkCounters::default();
        for route in &self.routes {
            let counters = route.sink.counters();
            total.written += counters.written;
            total.duplicates += counters.duplicates;
            total.folded += counters.folded;
        }
        total
    }
}

/// What the stream's pipeline reports: malformed input logged and
/// counted, the source's counters published for the metrics.
struct StreamObserver {
    status: Arc<StreamStatus>,
}

impl Observer for StreamObserver {
    fn notice(&mut self, notice: &Notice<'_>) {
        if let Notice::Malformed { .. } = notice {
            tracing::warn!("{notice}");
            self.status.malformed.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn committed(&mut self, stats: &Stats) {
        self.status.publish(stats.source.clone());
    }
}

impl Fanout {
    /// Delivers the events read so far to their tenants.
    fn deliver_batch(&mut self) -> Result<bool, SinkError> {
        if self.batch.is_empty() {
            return Ok(false);
        }
        self.batch.deliver(&self.service, &self.name, &mut self.routes, self.threads)
    }

    /// Reads the stream until it ends: at shutdown, with the alerts queued
    /// written and the position stored; after an error, with the position
    /// where it was.
    fn run(mut self, mut source: ChangeStreamSource, interval: Duration, state: Duration) -> Result<(), StreamError> {
        let mut observer = StreamObserver { status: self.status.clone() };
        let options = Options {
            strict: false,
            flush_each_alert: false,
            flush_interval: Some(interval),
            state_interval: Some(state),
        };
        let result = dac_engine::run_consumer(&mut source, &mut self, &mut observer, &options);
        tracing::info!("change stream {} stopped", self.name);
        result.map_err(|err| match err {
            PipelineError::Sink(err) => failed(&self.name, err.to_string()),
            err => failed(&self.name, err.to_string()),
        })
    }

    /// After a reload of the tenants file, between two events: the stream's
    /// tenants now. A tenant that stays with the same alert collection
    /// keeps its route (queued alerts, dedup memory); one that leaves (or
    /// writes elsewhere now) has its queued alerts written first, so the
    /// next checkpoint still covers them; one that arrives gets the events
    /// from here on.
    fn refresh(&mut self) -> Result<(), SinkError> {
        let generation = self.service.generation();
        if generation == self.generation {
            return Ok(());
        }
        // The events read before the reload go to the tenants before it.
        self.deliver_batch()?;
        self.generation = generation;
        let mut old = std::mem::take(&mut self.routes);
        for tenant in self.service.tenants() {
            if scope_collection(&tenant.config.scope) != self.collection {
                continue;
            }
            if !self.partitioning.partition.is_whole() {
                // A tenant's rules from before the reload passed this at
                // start; one added since can only be told now.
                if let Err(refusals) = partition_tenant(&tenant, &self.partitioning) {
                    tracing::error!("{refusals}\n  (their state is split across workers until fixed)");
                }
            }
            let same = old.iter().position(|route| {
                route.tenant.id() == tenant.id()
                    && route.tenant.config.alert_collection == tenant.config.alert_collection
            });
            let route = match same {
                Some(index) => {
                    let mut route = old.swap_remove(index);
                    route.tenant = tenant;
                    route
                }
                None => new_route(&self.connection, &self.database, tenant),
            };
            self.routes.push(route);
        }
        self.index = ScopeIndex::new(self.routes.iter().map(|route| &route.tenant.config.scope));
        for mut route in old {
            route.sink.flush().map_err(|err| route.failed(err))?;
        }
        let ids: Vec<&str> = self.routes.iter().map(|route| route.tenant.id()).collect();
        let ids = if ids.is_empty() { "none".to_owned() } else { ids.join(", ") };
        tracing::info!("change stream {}: tenants now {ids} (the tenants file was reloaded)", self.name);
        Ok(())
    }
}

fn failed(name: &str, message: String) -> StreamError {
    StreamError::Failed { collection: name.to_owned(), message }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::CollectionScope;

    fn field(field: &str, equals: &str) -> Scope {
        Scope::Field(FieldScope { field: field.into(), equals: equals.into(), collection: "events".into() })
    }

    fn routed(index: &ScopeIndex, json: &str) -> Vec<usize> {
        let (event, _) = dac_event::Event::from_json_slice(json.as_bytes()).unwrap();
        let mut tenants = vec![99];
        index.route(&event, &mut tenants);
        tenants
    }

    #[test]
    fn an_event_goes_to_the_tenants_whose_scope_takes_it_and_no_other() {
        let scopes = [
            field("ingest.tenant", "acme"),
            Scope::Collection(CollectionScope { collection: "events".into() }),
            field("ingest.tenant", "globex"),
            field("source.team", "acme"),
            field("ingest.tenant", "acme"),
        ];
        let index = ScopeIndex::new(&scopes);
        assert_eq!(routed(&index, r#"{"ingest": {"tenant": "acme"}}"#), [0, 1, 4]);
        assert_eq!(routed(&index, r#"{"ingest": {"tenant": "globex"}, "source": {"team": "acme"}}"#), [1, 2, 3]);
        // Exact text only: another case, a number, an array holding the
        // value, or the value under another field select nobody.
        for json in [
            r#"{"ingest": {"tenant": "ACME"}}"#,
            r#"{"ingest": {"tenant": ["acme"]}}"#,
            r#"{"ingest": {"tenant": 7}}"#,
            r#"{"tenant": "acme"}"#,
            r#"{}"#,
        ] {
            assert_eq!(routed(&index, json), [1], "{json}");
        }
        let fields_only = ScopeIndex::new(&scopes[2..4]);
        assert_eq!(routed(&fields_only, r#"{"ingest": {"tenant": "acme"}}"#), Vec::<usize>::new());
    }
}
