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

use super::audit::AuditEntry;
use super::config::{FieldScope, Scope};
use super::tenant::Tenant;
use super::Service;
use crate::alert::Alert;
use crate::engine::Outcome;
use crate::mongo::{ChangeStreamSource, Connection, HistoryLost, MongoAlertSink, MongoError, StartAt, WatchTarget};
use crate::policy::{AlertPolicy, Decision};
use crate::sink::{Sink, SinkError};
use crate::source::{Body, Source, SourceError};
use crate::stats::SourceCounters;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// What one stream has done, readable while it runs (the metrics
/// endpoint): the stream publishes its counters between events.
#[derive(Debug)]
pub struct StreamStatus {
    /// `DB.COLLECTION`.
    pub name: String,
    /// Documents read from the stream (evaluated by the tenants they
    /// belong to, or by none).
    events: std::sync::atomic::AtomicU64,
    /// Read documents no tenant's scope took.
    unrouted: std::sync::atomic::AtomicU64,
    /// Input that was not an event, skipped.
    malformed: std::sync::atomic::AtomicU64,
    source: std::sync::Mutex<SourceCounters>,
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
    fn new(name: String) -> StreamStatus {
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

    fn publish(&self, source: SourceCounters) {
        *self.source.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = source;
    }
}

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
            watcher.sync(&service).map_err(|err| format!("a new collection is not watched: {err}"))
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
            };
            let source = ChangeStreamSource::open(
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
            let index = ScopeIndex::new(tenants.iter().map(|tenant| &tenant.config.scope));
            let routes =
                tenants.into_iter().map(|tenant| new_route(&self.connection, &settings.database, tenant)).collect();
            let name = format!("{}.{collection}", settings.database);
            let status = Arc::new(StreamStatus::new(name.clone()));
            service.register_stream(status.clone());
            let fanout = Fanout {
                service: service.clone(),
                source,
                routes,
                index,
                status,
                name: name.clone(),
                interval: settings.flush_interval,
                collection: collection.clone(),
                connection: self.connection.clone(),
                database: settings.database.clone(),
                generation,
            };
            let thread = std::thread::Builder::new()
                .name(format!("dac-stream-{collection}"))
                .spawn({
                    let shutdown = self.shutdown.clone();
                    move || {
                        let result = fanout.run();
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

/// The collection a scope reads.
fn scope_collection(scope: &Scope) -> &str {
    match scope {
        Scope::Collection(scope) => scope.collection.as_str(),
        Scope::Field(scope) => scope.collection.as_str(),
    }
}

fn new_route(connection: &Connection, database: &str, tenant: Arc<Tenant>) -> Route {
    Route {
        sink: MongoAlertSink::new(connection.clone(), database, &tenant.config.alert_collection),
        policy: AlertPolicy::none(),
        tenant,
    }
}

/// One tenant of a stream, and where the tenant's alerts go.
struct Route {
    tenant: Arc<Tenant>,
    sink: MongoAlertSink,
    /// Rule-declared dedup (tenants have no policy file).
    policy: AlertPolicy,
}

impl Route {
    /// Evaluates `event` with the tenant's live rules and queues its
    /// alerts; returns the faults, as (rule name, fault).
    fn deliver(
        &mut self,
        event: &mut dac_event::Event,
        stream: &str,
        line: u64,
    ) -> Result<Vec<(String, String)>, SinkError> {
        deliver(&self.tenant, event, (stream, line), &mut self.policy, &mut self.sink)
    }
}

/// What a stream does with one event for one tenant: evaluates it with the
/// tenant's live rules (under the tenant's lock, so a rule change lands
/// between two events), passes each match through the rule-declared dedup
/// `policy` to `sink`, and returns the faults, as (rule name, fault).
/// `at` is where the event was read, (stream, line): its text, for alerts
/// and logs, is made only when some rule ran, not for every event.
///
/// The event is lent, not copied: rules read it through the host and cannot
/// change it, and it is back in `event` when this returns, fault or not, so
/// every tenant of a stream evaluates the same one (a copy per tenant cost
/// about 2 µs per delivery: `benches/serve.rs`).
pub fn deliver(
    tenant: &Tenant,
    event: &mut dac_event::Event,
    at: (&str, u64),
    policy: &mut AlertPolicy,
    sink: &mut impl Sink,
) -> Result<Vec<(String, String)>, SinkError> {
    tenant.with_engine_and_stats(|engine, stats| {
        let mut outcomes: Vec<Outcome> = Vec::new();
        let mut faults = Vec::new();
        engine.evaluate(event, stats, &mut outcomes);
        stats.events += 1;
        if outcomes.is_empty() {
            return Ok(faults);
        }
        let location = format!("{}:{}", at.0, at.1);
        for outcome in &outcomes {
            let rule = &engine.infos()[outcome.rule];
            match &outcome.result {
                Ok(findings) => {
                    let mut alert = Alert::new(rule, event, findings, Some(&location));
                    match policy.decide(rule, event) {
                        Decision::Suppressed(_) => stats.suppressed += 1,
                        Decision::Repeat(dedup) => {
                            alert.dedup = Some(dedup);
                            sink.fold(&alert)?;
                            stats.folded += 1;
                        }
                        Decision::Alert(dedup) => {
                            alert.dedup = dedup;
                            sink.send(&alert)?;
                            stats.alerts += 1;
                        }
                    }
                }
                Err(fault) => {
                    tracing::warn!(
                        "tenant {}: {location}: rule {} ({}) {fault} on event {}; its instance was discarded",
                        tenant.id(),
                        rule.file_name(),
                        rule.uuid,
                        event.id().unwrap_or_default()
                    );
                    let name = rule.file.file_stem().map(|stem| stem.to_string_lossy().into_owned());
                    faults.push((name.unwrap_or_default(), fault.to_string()));
                }
            }
        }
        Ok(faults)
    })
}

/// One stream's loop: read, route, evaluate, and now and then make every
/// tenant's alerts durable before storing the position.
struct Fanout {
    service: Arc<Service>,
    source: ChangeStreamSource,
    routes: Vec<Route>,
    /// Which of `routes` take an event.
    index: ScopeIndex,
    name: String,
    interval: Duration,
    status: Arc<StreamStatus>,
    /// The collection, and what a new tenant's route needs.
    collection: String,
    connection: Connection,
    database: String,
    /// The service's generation the routes were made for.
    generation: u64,
}

impl Fanout {
    fn run(mut self) -> Result<(), StreamError> {
        let mut taken_by = Vec::new();
        let mut last_flush = Instant::now();
        let mut unflushed = false;
        let result = loop {
            if unflushed && last_flush.elapsed() >= self.interval {
                if let Err(err) = self.flush_and_commit() {
                    break Err(err);
                }
                last_flush = Instant::now();
                unflushed = false;
            }
            let (line, mut event) = match self.source.next_event() {
                None => break Ok(()),
                Some(Ok(incoming)) => match incoming.body {
                    Body::Document(event) => (incoming.line, event),
                    Body::Json(_) => unreachable!("a change stream decodes its documents"),
                    Body::Idle => {
                        self.status.publish(self.source.counters());
                        if unflushed {
                            if let Err(err) = self.flush_and_commit() {
                                break Err(err);
                            }
                            last_flush = Instant::now();
                            unflushed = false;
                        }
                        continue;
                    }
                },
                Some(Err(SourceError::Malformed { line, reason })) => {
                    tracing::warn!("{}:{line}: {reason}", self.name);
                    self.status.malformed.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                Some(Err(SourceError::Io(error))) => break Err(failed(&self.name, error.to_string())),
            };
            // An event read after a reload goes to the tenants it made.
            if let Err(err) = self.refresh() {
                break Err(err);
            }
            unflushed = true;
            self.status.events.fetch_add(1, Ordering::Relaxed);
            self.index.route(&event, &mut taken_by);
            for &tenant in &taken_by {
                let route = &mut self.routes[tenant];
                match route.deliver(&mut event, &self.name, line) {
                    Ok(faults) if faults.is_empty() => {}
                    Ok(faults) => {
                        let threshold = u64::from(self.service.config().quarantine_after_faults);
                        quarantine(&self.service, &route.tenant, &faults, threshold);
                    }
                    Err(err) => {
                        // No commit: the position stays before this event,
                        // so a restart evaluates it again for every tenant.
                        return Err(failed(
                            &self.name,
                            format!("writing tenant {}'s alerts: {err}", route.tenant.id()),
                        ));
                    }
                }
            }
            if taken_by.is_empty() {
                self.status.unrouted.fetch_add(1, Ordering::Relaxed);
            }
        };
        // A clean end (SIGTERM) writes what is queued and stores the
        // position; after an error the position stays where it was.
        let result = result.and_then(|()| self.flush_and_commit());
        tracing::info!("change stream {} stopped", self.name);
        result
    }

    /// After a reload of the tenants file, between two events: the stream's
    /// tenants now. A tenant that stays with the same alert collection
    /// keeps its route (queued alerts, dedup memory); one that leaves (or
    /// writes elsewhere now) has its queued alerts written first, so the
    /// next checkpoint still covers them; one that arrives gets the events
    /// from here on.
    fn refresh(&mut self) -> Result<(), StreamError> {
        let generation = self.service.generation();
        if generation == self.generation {
            return Ok(());
        }
        self.generation = generation;
        let mut old = std::mem::take(&mut self.routes);
        for tenant in self.service.tenants() {
            if scope_collection(&tenant.config.scope) != self.collection {
                continue;
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
            route
                .sink
                .flush()
                .map_err(|err| failed(&self.name, format!("writing tenant {}'s alerts: {err}", route.tenant.id())))?;
        }
        let ids: Vec<&str> = self.routes.iter().map(|route| route.tenant.id()).collect();
        let ids = if ids.is_empty() { "none".to_owned() } else { ids.join(", ") };
        tracing::info!("change stream {}: tenants now {ids} (the tenants file was reloaded)", self.name);
        Ok(())
    }

    /// Every tenant's alerts first, the position second: a crash between
    /// the two only means these events are evaluated again.
    fn flush_and_commit(&mut self) -> Result<(), StreamError> {
        self.status.publish(self.source.counters());
        for route in &mut self.routes {
            route
                .sink
                .flush()
                .map_err(|err| failed(&self.name, format!("writing tenant {}'s alerts: {err}", route.tenant.id())))?;
        }
        self.source.commit().map_err(|err| failed(&self.name, format!("storing the checkpoint: {err}")))
    }
}

/// Counts `faults` against their rules and takes out of the tenant's engine
/// each rule that reached `threshold` (the server's
/// `quarantine_after_faults`), with an audit entry; returns how many were
/// taken out. A rule that keeps trapping or breaching its limits costs its
/// tenant (and the stream's other tenants) time on every event.
pub fn quarantine(service: &Service, tenant: &Tenant, faults: &[(String, String)], threshold: u64) -> usize {
    let taken = tenant.record_faults(faults, threshold);
    for taken in &taken {
        tracing::error!(
            "tenant {}: rule {} ({}) QUARANTINED after {} faults (last: {}); upload it again to put it back",
            tenant.id(),
            taken.name,
            taken.uuid,
            taken.faults,
            taken.reason
        );
        let entry = AuditEntry {
            time: String::new(),
            who: "dac".into(),
            action: "rule.quarantine".into(),
            tenant: tenant.id().into(),
            rule: taken.name.clone(),
            sha256: Some(taken.sha256.clone()),
            result: "quarantined".into(),
            reason: Some(format!("{} faults; the last: {}", taken.faults, taken.reason)),
        };
        if let Err(err) = service.audit().record(entry) {
            tracing::error!("{err}");
        }
    }
    taken.len()
}

fn failed(name: &str, message: String) -> StreamError {
    StreamError::Failed { collection: name.to_owned(), message }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::serve::config::CollectionScope;

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
