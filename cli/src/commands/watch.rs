//! `dac watch`: a MongoDB collection's change stream through the rules,
//! alerts into an alert collection.

use crate::args::{environment_help, named, read_toml, MongoArgs, MongoFileKeys, PolicyArgs, SandboxArgs};
use crate::health::Health;
use crate::reload::RuleWatcher;
use crate::report;
use dac_engine::{Delivery, Notice, Observer, Options, RuleChange, Stats};
use dac_mongo::{
    BucketFilter, ChangeStreamSource, Connection, HistoryLost, MongoAlertSink, Partition, Partitioning, StartAt,
    WatchTarget,
};
use mongodb::bson::{Bson, Document};
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Watches a MongoDB collection's change stream and writes alerts.
///
/// Every document inserted into the collection is evaluated by every rule
/// in the sandbox; alerts go to the alert collection with an `_id` derived
/// from (rule uuid, rule version, event `_id`), so re-evaluating an event
/// never duplicates its alert. The stream's resume token is stored in the
/// config collection once the alerts before it are written, and a restart
/// resumes after it: nothing is lost or duplicated across crashes.
///
/// Each setting comes from, in order of precedence: its flag, its
/// environment variable, the --config file (TOML; the keys are listed
/// there), then the default.
#[derive(Debug, clap::Args)]
#[command(after_help = concat!(
    "The server must support change streams: a MongoDB replica set or sharded cluster, 6.0 or later.\nSIGINT or SIGTERM: finish the current batch, write its alerts, store the position, exit 0.\n\n",
    environment_help!()
))]
pub struct WatchArgs {
    /// Rule files (.wasm components, .yml/.yaml seed or Sigma rules) or
    /// directories of them [config: rules].
    #[arg(long, value_name = "PATH")]
    rules: Vec<PathBuf>,

    /// A settings file (TOML) with any of: rules, mongodb_uri, database,
    /// collection, alert_collection, config_collection, start_at,
    /// on_history_lost, match, stats_interval, state_interval, no_reload,
    /// alert_policy, threads, partition, partition_key, bucket_filter,
    /// listen.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,

    #[command(flatten)]
    mongo: MongoArgs,

    /// Where the stream's checkpoint is kept [default: config].
    #[arg(long, env = "CONFIG_COLLECTION_NAME", value_name = "NAME", hide_env_values = true)]
    config_collection: Option<String>,

    /// Where to start: after the stored checkpoint (from now when there is
    /// none), or from now [default: stored].
    #[arg(long, value_name = "WHERE", value_parser = named::<StartAt>(StartAt::NAMES))]
    start_at: Option<StartAt>,

    /// When the stored checkpoint is no longer in the server's history:
    /// stop with an error, or warn, count the gap and go on from now
    /// [default: stop].
    #[arg(long, value_name = "WHAT", value_parser = named::<HistoryLost>(HistoryLost::NAMES))]
    on_history_lost: Option<HistoryLost>,

    /// An extra `$match` on change events, as (Extended) JSON, e.g.
    /// '{"fullDocument.hostname": "web-01"}' [config: match].
    #[arg(long = "match", value_name = "JSON")]
    extra_match: Option<String>,

    /// Seconds between stats lines [default: 10].
    #[arg(long, value_name = "SECONDS")]
    stats_interval: Option<u64>,

    /// Seconds between stores of the correlations' windows with the
    /// checkpoint (only when correlations run) [default: 10; config:
    /// state_interval]. A restart resumes at the last one, so after a
    /// crash up to this much of the stream is evaluated again; its alerts
    /// are not written twice.
    #[arg(long, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..))]
    state_interval: Option<u64>,

    /// Do not watch the rule files. By default a rule file added, changed
    /// or removed is compiled off the hot path and swapped in between two
    /// documents; one that fails to load is reported and the version
    /// already running stays [config: no_reload].
    #[arg(long)]
    no_reload: bool,

    /// Threads evaluating rules [default: the machine's cores; config:
    /// threads]. Alerts are written, and the checkpoint stored, in stream
    /// order for any N.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=256))]
    threads: Option<u16>,

    /// Read only partition K of N of the collection (K from 0), so that N
    /// workers share it, each event evaluated by one [default: 0/1, the
    /// whole stream; config: partition]. Each partition keeps its own
    /// checkpoint; when N changes, each worker takes its buckets over from
    /// the old partitions' checkpoints (docs/scale.md).
    #[arg(long, value_name = "K/N")]
    partition: Option<Partition>,

    /// The field whose value decides an event's partition [default:
    /// hostname; config: partition_key]. Correlations must group by it.
    #[arg(long, value_name = "FIELD")]
    partition_key: Option<String>,

    /// How the server picks a partition's events: by the `dac_bucket`
    /// field written at insert time (dac-probe writes it; any MongoDB), or
    /// by hashing the partition key in the change stream (MongoDB 7.0 or
    /// later; nothing to write) [default: field; config: bucket_filter].
    #[arg(long, value_name = "HOW", value_parser = named::<BucketFilter>(BucketFilter::NAMES))]
    bucket_filter: Option<BucketFilter>,

    /// Serve /healthz, /readyz and /metrics on this address (e.g.
    /// 0.0.0.0:9464) for probes and scrapes [default: none; config:
    /// listen].
    #[arg(long, value_name = "ADDR")]
    listen: Option<std::net::SocketAddr>,

    #[command(flatten)]
    sandbox: SandboxArgs,

    #[command(flatten)]
    policy: PolicyArgs,
}

/// The --config file's keys.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    rules: Option<Vec<PathBuf>>,
    mongodb_uri: Option<String>,
    database: Option<String>,
    collection: Option<String>,
    alert_collection: Option<String>,
    config_collection: Option<String>,
    start_at: Option<StartAt>,
    on_history_lost: Option<HistoryLost>,
    #[serde(rename = "match")]
    extra_match: Option<toml::Table>,
    stats_interval: Option<u64>,
    state_interval: Option<u64>,
    no_reload: Option<bool>,
    alert_policy: Option<PathBuf>,
    threads: Option<u16>,
    partition: Option<String>,
    partition_key: Option<String>,
    bucket_filter: Option<BucketFilter>,
    listen: Option<std::net::SocketAddr>,
}

pub fn run(args: WatchArgs, quiet: bool) -> Result<(), String> {
    let file = match &args.config {
        Some(path) => read_toml::<FileConfig>(path)?,
        None => FileConfig::default(),
    };
    let rules = if args.rules.is_empty() { file.rules.unwrap_or_default() } else { args.rules.clone() };
    if rules.is_empty() {
        return Err("no rules given: pass --rules DIR (or `rules = [...]` in the --config file)".into());
    }
    let mongo = args.mongo.resolve(MongoFileKeys {
        mongodb_uri: file.mongodb_uri,
        database: file.database,
        collection: file.collection,
        alert_collection: file.alert_collection,
    });
    let (uri, database) = (mongo.uri, mongo.database);
    let partition = match (args.partition, file.partition) {
        (Some(partition), _) => partition,
        (None, Some(text)) => text.parse().map_err(|err| format!("{}: partition: {err}", show(&args.config)))?,
        (None, None) => Partition::WHOLE,
    };
    let partitioning = Partitioning {
        partition,
        key: args.partition_key.or(file.partition_key).unwrap_or_else(|| Partitioning::default().key),
        filter: args.bucket_filter.or(file.bucket_filter).unwrap_or(BucketFilter::Field),
    };
    let target = WatchTarget {
        database: database.clone(),
        collection: mongo.collection,
        config_collection: args.config_collection.or(file.config_collection).unwrap_or_else(|| "config".into()),
        partitioning: partitioning.clone(),
    };
    let alert_collection = mongo.alert_collection;
    let extra_match = match (args.extra_match, file.extra_match) {
        (Some(json), _) => Some(match_stage(serde_json::from_str(&json).map_err(|err| format!("--match: {err}"))?)?),
        (None, Some(table)) => Some(match_stage(serde_json::to_value(table).map_err(|err| err.to_string())?)?),
        (None, None) => None,
    };
    let stats_interval = Duration::from_secs(args.stats_interval.or(file.stats_interval).unwrap_or(10).max(1));
    let state_interval = Duration::from_secs(args.state_interval.or(file.state_interval).unwrap_or(10).max(1));

    let mut policy = args.policy.load(file.alert_policy.as_deref())?;
    // Listening before the rules compile: probes see a worker starting,
    // not a dead one.
    let health = Health::new(partition.to_string());
    if let Some(address) = args.listen.or(file.listen) {
        crate::health::listen(address, health.clone())?;
        tracing::info!("serving /healthz, /readyz and /metrics on http://{address}");
    }
    let (loader, mut engine) = args.sandbox.load(&rules)?;
    if !partition.is_whole() {
        // Reloaded rules too: a change that would split a rule's state
        // across workers is refused like a broken file.
        engine.set_partition_key(Some(partitioning.key.clone()));
        let refusals = engine.partition_refusals(&partitioning.key);
        if !refusals.is_empty() {
            return Err(format!(
                "these rules cannot run on one partition of the stream (--partition {partition}):\n  {}",
                refusals.join("\n  ")
            ));
        }
    }
    let mut watcher = if args.no_reload || file.no_reload.unwrap_or(false) {
        None
    } else {
        let running = engine.infos().iter().map(|info| (info.file.clone(), info.sha256.clone()));
        Some(RuleWatcher::start(loader.clone(), rules.clone(), running).map_err(|err| err.to_string())?)
    };
    let connection = Connection::open(&uri).map_err(|err| err.to_string())?;
    let shutdown = Arc::new(AtomicBool::new(false));
    connection.stop_on_signals(shutdown.clone());
    let mut source = ChangeStreamSource::open(
        connection.clone(),
        &target,
        args.start_at.or(file.start_at).unwrap_or(StartAt::Stored),
        args.on_history_lost.or(file.on_history_lost).unwrap_or(HistoryLost::Stop),
        extra_match,
        shutdown,
    )
    .map_err(|err| err.to_string())?;
    if let Some(state) = source.take_state() {
        let restored = engine.restore_state(&state).map_err(|err| source.refuse_state(err).to_string())?;
        tracing::info!("{restored}");
    }
    if source.took_over() {
        // The buckets' states, each from the checkpoint it was taken
        // from, stored at once as this partition's own.
        let inherited = source.take_inherited();
        let keeps: Vec<_> = inherited.iter().map(|part| move |host: &str| part.holds(host)).collect();
        let parts: Vec<dac_engine::StatePart<'_>> = inherited
            .iter()
            .zip(&keeps)
            .map(|(part, keep)| (part.bytes.as_slice(), keep as &dyn Fn(&str) -> bool))
            .collect();
        let restored = engine
            .restore_partitioned_state(&partitioning.key, &parts)
            .map_err(|err| format!("the state taken over from {}: {err}", names(&inherited)))?;
        if !inherited.is_empty() {
            tracing::info!(from = names(&inherited), "{restored}");
        }
        let saved = engine.save_state().map_err(|err| err.to_string())?;
        dac_engine::Source::commit_state(&mut source, saved.as_deref()).map_err(|err| err.to_string())?;
    }
    let mut sink = MongoAlertSink::new(connection, &database, &alert_collection);
    tracing::info!(
        partition = %partition,
        "watching {database}.{} for inserts{}; alerts to {database}.{alert_collection}",
        target.collection,
        if partition.is_whole() { String::new() } else { format!(" (partition {partition} by {})", partitioning.key) }
    );

    let mut stats = Stats::default();
    // What a restart restored shows from the first stats line on, before
    // any event.
    (stats.state_groups, stats.state_bytes) = engine.state_held();
    let mut observer = WatchObserver::new(stats_interval, partition, health.clone());
    health.set_ready();
    let options = Options {
        strict: false,
        flush_each_alert: false,
        flush_interval: Some(Duration::from_millis(250)),
        state_interval: Some(state_interval),
    };
    let started = Instant::now();
    let mut delivery = Delivery::new(&mut engine, &mut policy, &mut sink, &mut stats);
    if let Some(watcher) = watcher.as_mut() {
        delivery = delivery.with_changes(watcher);
    }
    let threads = args.threads.or(file.threads).map_or_else(dac_engine::default_threads, usize::from);
    let result = dac_engine::run_parallel(&mut source, &mut delivery, threads, &mut observer, &options);
    drop(delivery);
    if !quiet {
        let name = format!("{database}.{}", target.collection);
        report::print_summary("dac watch", &engine, &stats, &name, started.elapsed());
        report::print_policy_summary(&policy, &stats);
        let (stream, alerts) = (&stats.source, &stats.sink);
        eprintln!(
            "  stream: {} reconnects, {} history gaps, {} events without a document, {} checkpoints stored ({} with new correlation state); alerts: {} written, {} already present, {} repeats folded into dedup alerts",
            stream.reconnects, stream.history_gaps, stream.without_document, stream.commits, stream.states_stored, alerts.written, alerts.duplicates, alerts.folded
        );
        if !partition.is_whole() || stream.handed_over > 0 {
            eprintln!(
                "  partition {partition}: {} events already evaluated by the partition their bucket was taken from, {} without a bucket number (partition 0 takes them), {} whose dac_bucket is not their {}'s",
                stream.handed_over, stream.stray, stream.misrouted, partitioning.key
            );
        }
    }
    result.map_err(|err| err.to_string())
}

fn show(path: &Option<PathBuf>) -> String {
    path.as_ref().map_or_else(String::new, |path| path.display().to_string())
}

fn names(states: &[dac_mongo::InheritedState]) -> String {
    states.iter().map(|state| state.from.as_str()).collect::<Vec<_>>().join(", ")
}

/// `{...}` as a `$match` document; Extended JSON (`{"$oid": …}`) allowed.
fn match_stage(json: serde_json::Value) -> Result<Document, String> {
    match Bson::try_from(json) {
        Ok(Bson::Document(document)) => Ok(document),
        Ok(_) => Err("--match must be a JSON object".into()),
        Err(err) => Err(format!("--match: {err}")),
    }
}

/// Notices to the log, and a stats line every `interval`.
struct WatchObserver {
    interval: Duration,
    partition: Partition,
    health: Arc<Health>,
    last: Instant,
    last_events: u64,
    /// Faults by rule, counted from the notices (the stats line's
    /// `faults_by_rule`).
    faults: std::collections::BTreeMap<String, u64>,
}

impl WatchObserver {
    fn new(interval: Duration, partition: Partition, health: Arc<Health>) -> WatchObserver {
        WatchObserver { interval, partition, health, last: Instant::now(), last_events: 0, faults: Default::default() }
    }
}

impl Observer for WatchObserver {
    fn notice(&mut self, notice: &Notice<'_>) {
        match notice {
            Notice::Rules(RuleChange::Refused { .. }) => tracing::error!("{notice}"),
            Notice::Rules(_) => tracing::info!("{notice}"),
            Notice::Fault { rule, .. } => {
                *self.faults.entry(rule.file_name()).or_default() += 1;
                tracing::warn!("{notice}")
            }
            _ => tracing::warn!("{notice}"),
        }
    }

    fn committed(&mut self, stats: &Stats) {
        self.health.beat(stats, self.faults.values().sum());
        let elapsed = self.last.elapsed();
        if elapsed < self.interval {
            return;
        }
        let rate = (stats.events - self.last_events) as f64 / elapsed.as_secs_f64();
        let lag_ms = stats.source.lag.map_or(0, |lag| lag.as_millis() as u64);
        // Per rule, only the rules that faulted: the line stays short.
        let faults_by_rule: Vec<String> = self.faults.iter().map(|(rule, n)| format!("{rule}={n}")).collect();
        tracing::info!(
            partition = %self.partition,
            events = stats.events,
            events_per_sec = format!("{rate:.0}"),
            alerts = stats.alerts,
            alerts_written = stats.sink.written,
            lag_ms,
            rule_faults = self.faults.values().sum::<u64>(),
            faults_by_rule = faults_by_rule.join(","),
            suppressed = stats.suppressed,
            folded = stats.folded,
            malformed = stats.malformed,
            reconnects = stats.source.reconnects,
            handed_over = stats.source.handed_over,
            stray = stats.source.stray,
            state_groups = stats.state_groups,
            state_bytes = stats.state_bytes,
            "stats"
        );
        self.last = Instant::now();
        self.last_events = stats.events;
    }
}
