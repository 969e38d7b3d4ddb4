//! `dac`: the detection engine's long-running commands.

use clap::{Parser, Subcommand};
use dac_runtime::cli::{self, MongoArgs, MongoFileKeys, PolicyArgs, SandboxArgs};
use dac_runtime::mongo::{redact, ChangeStreamSource, Connection, HistoryLost, MongoAlertSink, StartAt, WatchTarget};
use dac_runtime::pipeline::{self, Notice, Observer, Options};
use dac_runtime::reload::RuleWatcher;
use dac_runtime::serve::stream::{StreamSettings, Streams};
use dac_runtime::{investigate, Stats};
use mongodb::bson::{Bson, Document};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, Parser)]
#[command(name = "dac", version, about = "Detection as code: sandboxed rules over live event streams")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    Watch(WatchArgs),
    Investigate(InvestigateArgs),
    Init(InitArgs),
    Test(TestArgs),
    Build(BuildArgs),
    Serve(ServeArgs),
    Token(TokenArgs),
}

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
/// environment variable, the TOML file given with --config (keys as the
/// flags, with underscores: `mongodb_uri`, `database`, `rules = ["rules/"]`,
/// `match = { hostname = "web-01" }`), then the default.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Environment:\n  MONGODB_URI (or the seed's CHANGE_STREAM_DB), CHANGE_DB_NAME, CHANGE_COLLECTION_NAME,\n  ALERT_COLLECTION_NAME, CONFIG_COLLECTION_NAME: as the flags above\n  DAC_LOG        log filter (default: info)\n  DAC_CACHE_DIR  compiled-rule cache (default: $XDG_CACHE_HOME/dac or ~/.cache/dac)\n\nThe server must support change streams: a MongoDB replica set or sharded cluster, 6.0 or later.\nSIGINT or SIGTERM: finish the current batch, write its alerts, store the position, exit 0."
)]
struct WatchArgs {
    /// Rule files (.wasm components, .yml/.yaml seed or Sigma rules) or
    /// directories of them [config: rules].
    #[arg(long, value_name = "PATH")]
    rules: Vec<PathBuf>,

    /// A TOML file with any of the settings below.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,

    #[command(flatten)]
    mongo: MongoArgs,

    /// Where the stream's checkpoint is kept [default: config].
    #[arg(long, env = "CONFIG_COLLECTION_NAME", value_name = "NAME", hide_env_values = true)]
    config_collection: Option<String>,

    /// Where to start: after the stored checkpoint (from now when there is
    /// none), or from now [default: stored].
    #[arg(long, value_enum)]
    start_at: Option<StartAt>,

    /// When the stored checkpoint is no longer in the server's history:
    /// stop with an error, or warn, count the gap and go on from now
    /// [default: stop].
    #[arg(long, value_enum)]
    on_history_lost: Option<HistoryLost>,

    /// An extra `$match` on change events, as (Extended) JSON, e.g.
    /// '{"fullDocument.hostname": "web-01"}'.
    #[arg(long = "match", value_name = "JSON")]
    extra_match: Option<String>,

    /// Seconds between stats lines [default: 10].
    #[arg(long, value_name = "SECONDS")]
    stats_interval: Option<u64>,

    /// Do not watch the rule files. By default a rule file added, changed
    /// or removed is compiled off the hot path and swapped in between two
    /// documents; one that fails to load is reported and the version
    /// already running stays [config: no_reload].
    #[arg(long)]
    no_reload: bool,

    #[command(flatten)]
    sandbox: SandboxArgs,

    #[command(flatten)]
    policy: PolicyArgs,
}

/// The TOML file's keys.
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
    no_reload: Option<bool>,
    alert_policy: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    cli::init_logging();
    let result = match cli.command {
        Command::Watch(args) => watch(args),
        Command::Investigate(args) => investigate(args),
        Command::Init(args) => init(args),
        Command::Test(args) => return test(args),
        Command::Build(args) => build(args),
        Command::Serve(args) => serve(args),
        Command::Token(args) => token(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("dac: {message}");
            ExitCode::from(2)
        }
    }
}

fn read_config(path: &Path) -> Result<FileConfig, String> {
    let text = std::fs::read_to_string(path).map_err(|err| format!("{}: {err}", path.display()))?;
    toml::from_str(&text).map_err(|err| format!("{}: {err}", path.display()))
}

fn watch(args: WatchArgs) -> Result<(), String> {
    let file = match &args.config {
        Some(path) => read_config(path)?,
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
    let target = WatchTarget {
        database: database.clone(),
        collection: mongo.collection,
        config_collection: args.config_collection.or(file.config_collection).unwrap_or_else(|| "config".into()),
    };
    let alert_collection = mongo.alert_collection;
    let extra_match = match (args.extra_match, file.extra_match) {
        (Some(json), _) => Some(match_stage(serde_json::from_str(&json).map_err(|err| format!("--match: {err}"))?)?),
        (None, Some(table)) => Some(match_stage(serde_json::to_value(table).map_err(|err| err.to_string())?)?),
        (None, None) => None,
    };
    let stats_interval = Duration::from_secs(args.stats_interval.or(file.stats_interval).unwrap_or(10).max(1));

    let mut policy = args.policy.load(file.alert_policy.as_deref())?;
    let (sandbox, mut engine) = args.sandbox.load(&rules)?;
    if !(args.no_reload || file.no_reload.unwrap_or(false)) {
        let running = engine.infos().iter().map(|info| (info.file.clone(), info.sha256.clone()));
        engine.set_watcher(RuleWatcher::start(sandbox.clone(), rules.clone(), running).map_err(|err| err.to_string())?);
    }
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
    let mut sink = MongoAlertSink::new(connection, &database, &alert_collection);
    tracing::info!("watching {database}.{} for inserts; alerts to {database}.{alert_collection}", target.collection);

    let mut stats = Stats::default();
    let mut observer = WatchObserver::new(stats_interval);
    let options = Options { strict: false, flush_each_alert: false, flush_interval: Some(Duration::from_millis(250)) };
    let started = Instant::now();
    let result = pipeline::run_with_policy(
        &mut source,
        &mut engine,
        &mut policy,
        &mut sink,
        &mut stats,
        &mut observer,
        &options,
    );
    cli::print_summary("dac watch", &engine, &stats, &format!("{database}.{}", target.collection), started.elapsed());
    cli::print_policy_summary(&policy, &stats);
    let (stream, alerts) = (&stats.source, &stats.sink);
    eprintln!(
        "  stream: {} reconnects, {} history gaps, {} events without a document, {} checkpoints stored; alerts: {} written, {} already present, {} repeats folded into dedup alerts",
        stream.reconnects, stream.history_gaps, stream.without_document, stream.commits, alerts.written, alerts.duplicates, alerts.folded
    );
    result.map_err(|err| err.to_string())
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
    last: Instant,
    last_events: u64,
}

impl WatchObserver {
    fn new(interval: Duration) -> WatchObserver {
        WatchObserver { interval, last: Instant::now(), last_events: 0 }
    }
}

impl Observer for WatchObserver {
    fn notice(&mut self, notice: &Notice<'_>) {
        match notice {
            Notice::Rules(dac_runtime::RuleChange::Refused { .. }) => tracing::error!("{notice}"),
            Notice::Rules(_) => tracing::info!("{notice}"),
            _ => tracing::warn!("{notice}"),
        }
    }

    fn committed(&mut self, stats: &Stats) {
        let elapsed = self.last.elapsed();
        if elapsed < self.interval {
            return;
        }
        let rate = (stats.events - self.last_events) as f64 / elapsed.as_secs_f64();
        let lag_ms = stats.source.lag.map_or(0, |lag| lag.as_millis() as u64);
        // Per rule, only the rules that faulted: the line stays short.
        let faults_by_rule: Vec<String> = stats
            .rules
            .iter()
            .filter(|counters| counters.fault_total() > 0)
            .map(|counters| format!("{}={}", counters.rule, counters.fault_total()))
            .collect();
        tracing::info!(
            events = stats.events,
            events_per_sec = format!("{rate:.0}"),
            alerts = stats.alerts,
            alerts_written = stats.sink.written,
            lag_ms,
            rule_faults = stats.faults(),
            faults_by_rule = faults_by_rule.join(","),
            suppressed = stats.suppressed,
            folded = stats.folded,
            malformed = stats.malformed,
            reconnects = stats.source.reconnects,
            "stats"
        );
        self.last = Instant::now();
        self.last_events = stats.events;
    }
}

/// Runs rule test cases kept next to the rules.
///
/// Each PATH is a rule file, its `NAME.tests.ndjson`, or a directory
/// searched recursively: a rule's cases are `NAME.tests.ndjson` beside
/// `NAME.wasm`, `NAME.yaml` or `NAME.yml` (one JSON object per line:
/// `{"name": …, "event": {…}, "expect": "fire" | "no-fire", "uuids": [...],
/// "matched": {"field": "value"}}`; the cases of a directory run against all
/// its rules loaded together), and a Rust rule crate's
/// `fixtures/must_fire.ndjson`, `fixtures/must_not_fire.ndjson` and
/// `fixtures/tests.ndjson` run against its built component
/// (`target/rule-components/<crate>.wasm`).
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Exit status:\n  0  every case passed\n  1  a case failed, or could not run\n  2  usage error: a path that does not exist, a malformed case"
)]
struct TestArgs {
    /// Rule files, case files or directories [default: .].
    #[arg(value_name = "PATH")]
    paths: Vec<PathBuf>,

    /// Also write the results as JUnit XML, for CI.
    #[arg(long, value_name = "FILE")]
    junit: Option<PathBuf>,

    #[command(flatten)]
    sandbox: SandboxArgs,
}

fn test(args: TestArgs) -> ExitCode {
    let paths = if args.paths.is_empty() { vec![PathBuf::from(".")] } else { args.paths.clone() };
    let started = Instant::now();
    let outcome = (|| {
        let suites = dac_runtime::testing::discover(&paths).map_err(|err| err.to_string())?;
        if suites.is_empty() {
            let named: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
            return Err(format!("no test cases found in {}", named.join(", ")));
        }
        let loader = args.sandbox.loader()?;
        Ok(dac_runtime::testing::run(&loader, &suites))
    })();
    let results = match outcome {
        Ok(results) => results,
        Err(message) => {
            eprintln!("dac test: {message}");
            return ExitCode::from(2);
        }
    };
    let elapsed = started.elapsed();
    print!("{}", dac_runtime::testing::report(&results, elapsed));
    if let Some(file) = &args.junit {
        if let Err(err) = std::fs::write(file, dac_runtime::testing::junit(&results, elapsed)) {
            eprintln!("dac test: --junit {}: {err}", file.display());
            return ExitCode::from(2);
        }
    }
    let totals = dac_runtime::testing::Totals::of(&results);
    if totals.failed + totals.errors > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

/// Builds YAML and Sigma rules into rule components.
///
/// Each rule is first checked as dac-run loads it: a broken rule is reported
/// as FILE:LINE: WHERE: WHAT and nothing is written. It is then written, as
/// data, into a copy of dac's prebuilt matcher component. The result is an
/// ordinary rule component, run in the sandbox like a Rust rule by dac-run,
/// dac watch and dac test: its metadata (name, uuid, version, severity,
/// description, tags) is the rule's, its prefilter is derived from the
/// rule's literals, and it alerts exactly as the rule file does.
///
/// Do not deploy a rule both as NAME.yaml and as the NAME.wasm built from
/// it: the two share a uuid and the second is refused.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Output:\n  one rule file      -o FILE (default: NAME.wasm in the current directory; an existing directory: DIR/NAME.wasm)\n  several, or a DIR  -o DIR  (default: the current directory; created if missing), one NAME.wasm per rule\n  Files are written aside and renamed in, so dac watch never reads half a component.\n\nExample:\n  dac build rules/shadow.yaml -o shadow.wasm\n  dac-run shadow.wasm --replay logs.json\n\nLimits: a rule's text (with its --sigma-mapping) may take up to 128 KiB.\nExit status: 0 built; 2 a rule did not build (nothing was written), or a usage error."
)]
struct BuildArgs {
    /// Rule files (.yml/.yaml: the seed's YAML or Sigma) or directories of
    /// them (their .yml/.yaml files, not recursively).
    #[arg(value_name = "RULE", required = true)]
    rules: Vec<PathBuf>,

    /// The component to write (one rule file), or the directory to write
    /// one NAME.wasm per rule into.
    #[arg(short, long, value_name = "PATH")]
    output: Option<PathBuf>,

    /// How Sigma rules' fields map to event fields: a TOML file, as for
    /// dac-run and dac watch; it is built into each Sigma rule's component.
    /// Default: SigmaHQ's Linux process_creation fields onto dac's exec
    /// event.
    #[arg(long, value_name = "FILE")]
    sigma_mapping: Option<PathBuf>,
}

fn build(args: BuildArgs) -> Result<(), String> {
    use dac_runtime::builder::{self, MappingFile};
    builder::template().map_err(|err| err.to_string())?;
    let mut files = Vec::new();
    let mut single = args.rules.len() == 1;
    for path in &args.rules {
        if path.is_dir() {
            single = false;
            let mut found: Vec<PathBuf> = std::fs::read_dir(path)
                .map_err(|err| format!("{}: {err}", path.display()))?
                .filter_map(|entry| entry.ok().map(|e| e.path()))
                .filter(|p| dac_detect::is_rule_file(p) && p.is_file())
                .collect();
            if found.is_empty() {
                return Err(format!("{}: no .yml or .yaml rule files in this directory", path.display()));
            }
            found.sort();
            files.extend(found);
        } else if !path.exists() {
            return Err(format!("{}: no such file or directory", path.display()));
        } else if !dac_detect::is_rule_file(path) {
            return Err(format!("{}: not a YAML or Sigma rule file (.yml, .yaml)", path.display()));
        } else {
            files.push(path.clone());
        }
    }
    let file_name = |rule: &Path| {
        let stem = rule.file_stem().map_or_else(|| "rule".into(), |s| s.to_string_lossy().into_owned());
        format!("{stem}.wasm")
    };
    let outputs: Vec<PathBuf> = match (&args.output, single) {
        // `-o out/` names a directory even before it exists.
        (Some(out), true) if !out.is_dir() && !out.as_os_str().to_string_lossy().ends_with('/') => vec![out.clone()],
        (out, _) => {
            let dir = out.clone().unwrap_or_else(|| PathBuf::from("."));
            if dir.exists() && !dir.is_dir() {
                return Err(format!("-o {}: not a directory (several rules are built into one)", dir.display()));
            }
            files.iter().map(|f| dir.join(file_name(f))).collect()
        }
    };
    for (i, out) in outputs.iter().enumerate() {
        if let Some(j) = outputs[..i].iter().position(|o| o == out) {
            return Err(format!(
                "{} and {} would both be built into {}",
                files[j].display(),
                files[i].display(),
                out.display()
            ));
        }
    }
    let mapping = match &args.sigma_mapping {
        Some(path) => Some(MappingFile::read(path).map_err(|err| format!("--sigma-mapping {err}"))?),
        None => None,
    };

    let mut built: Vec<(&PathBuf, builder::Built)> = Vec::new();
    let mut errors = Vec::new();
    for file in &files {
        let result = std::fs::read(file)
            .map_err(|err| format!("{}: {err}", file.display()))
            .and_then(|bytes| builder::build(file, &bytes, mapping.as_ref()).map_err(|err| err.to_string()));
        match result {
            Ok(rule) => {
                if let Some((other, _)) = built.iter().find(|(_, b)| b.uuid == rule.uuid) {
                    errors.push(format!("{} and {} both declare uuid {}", other.display(), file.display(), rule.uuid));
                }
                built.push((file, rule));
            }
            Err(message) => errors.push(message),
        }
    }
    if !errors.is_empty() {
        let list: Vec<String> = errors.iter().map(|e| format!("  {e}")).collect();
        return Err(format!("{} rule file(s) did not build; nothing was written:\n{}", errors.len(), list.join("\n")));
    }
    for ((file, rule), out) in built.iter().zip(&outputs) {
        for note in &rule.notes {
            eprintln!("dac build: note: {note}");
        }
        write_aside(out, &rule.component).map_err(|err| format!("{}: {err}", out.display()))?;
        eprintln!(
            "built {} from {} ({}, uuid {}, {} KiB)",
            out.display(),
            file.display(),
            rule.name,
            rule.uuid,
            rule.component.len().div_ceil(1024)
        );
    }
    Ok(())
}

/// Writes `bytes` to a temporary file beside `path` and renames it in.
fn write_aside(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&dir)?;
    let mut file = tempfile::Builder::new().prefix(".dac-build-").suffix(".tmp").tempfile_in(&dir)?;
    std::io::Write::write_all(&mut file, bytes)?;
    // A temporary file is private (0600); a rule is not a secret.
    #[cfg(unix)]
    std::fs::set_permissions(file.path(), std::os::unix::fs::PermissionsExt::from_mode(0o644))?;
    file.persist(path).map_err(|err| err.error)?;
    Ok(())
}

/// Shows what happened around an alert: the host's timeline and the
/// alerting process's tree.
///
/// The timeline is every event of the alert's host within --window of the
/// alerting event, oldest first: `*` marks the alerting event, `!` events
/// other alerts name. The process tree, like `ps -ef --forest`, shows the
/// alerting process's ancestors as far up as the data goes and its
/// descendants within the window; a parent is the latest exec of the
/// parent pid on the host before the child, so reused pids are not
/// confused, and a process that execs again (same pid and parent) is
/// nested under its previous image, marked `(exec)`.
///
/// Indexes on the event collection — (hostname, ts) and (hostname, pid,
/// ts) — and on the alert collection (event_id) are created on first use
/// (or by `dac init`).
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Environment:\n  MONGODB_URI (or the seed's CHANGE_STREAM_DB), CHANGE_DB_NAME, CHANGE_COLLECTION_NAME,\n  ALERT_COLLECTION_NAME: as the flags above\n\nExit status: 0 shown; 2 usage error, unknown alert, database error."
)]
struct InvestigateArgs {
    /// The alert's `_id` (32 hex digits, as in the alert collection).
    #[arg(value_name = "ALERT_ID", required_unless_present = "last", conflicts_with = "last")]
    alert_id: Option<String>,

    /// Investigate the newest N alerts (by detection time) instead.
    #[arg(long, value_name = "N")]
    last: Option<usize>,

    /// With --last: only alerts of this rule (its name or uuid).
    #[arg(long, value_name = "NAME|UUID", requires = "last")]
    rule: Option<String>,

    /// With --last: only alerts on this host.
    #[arg(long, value_name = "HOSTNAME", requires = "last")]
    host: Option<String>,

    /// How far either side of the alerting event the timeline reaches, in
    /// seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 300)]
    window: u64,

    /// Events of the window read at most (the timeline says when it was
    /// cut).
    #[arg(long, value_name = "N", default_value_t = 10_000)]
    max_events: usize,

    /// `text` for people; `json` for tools: one JSON object per alert,
    /// one per line.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,

    /// Do not create the indexes (e.g. with a read-only user).
    #[arg(long)]
    no_create_indexes: bool,

    /// A TOML file with the connection settings (`dac watch`'s file).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,

    #[command(flatten)]
    mongo: MongoArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Format {
    Text,
    Json,
}

/// Creates the indexes `dac investigate` queries by (idempotent).
///
/// On the event collection: {hostname: 1, ts: 1} (the timeline) and
/// {hostname: 1, pid: 1, ts: 1} (each ancestor: the latest exec of a pid
/// before a time); on the alert collection: {event_id: 1} (the alerts in
/// the window). Creating an index that exists does nothing.
#[derive(Debug, clap::Args)]
struct InitArgs {
    /// A TOML file with the connection settings (`dac watch`'s file).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,

    #[command(flatten)]
    mongo: MongoArgs,
}

fn mongo_settings(mongo: MongoArgs, config: Option<&Path>) -> Result<cli::MongoSettings, String> {
    let file = match config {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|err| format!("{}: {err}", path.display()))?;
            toml::from_str::<MongoFileKeys>(&text).map_err(|err| format!("{}: {err}", path.display()))?
        }
        None => MongoFileKeys::default(),
    };
    Ok(mongo.resolve(file))
}

fn investigation_target(settings: &cli::MongoSettings) -> investigate::Target {
    investigate::Target {
        database: settings.database.clone(),
        events: settings.collection.clone(),
        alerts: settings.alert_collection.clone(),
    }
}

fn init(args: InitArgs) -> Result<(), String> {
    let settings = mongo_settings(args.mongo, args.config.as_deref())?;
    let connection = Connection::open(&settings.uri).map_err(|err| err.to_string())?;
    let target = investigation_target(&settings);
    for index in investigate::ensure_indexes(&connection, &target).map_err(|err| err.to_string())? {
        println!("index {index}");
    }
    Ok(())
}

fn investigate(args: InvestigateArgs) -> Result<(), String> {
    let settings = mongo_settings(args.mongo, args.config.as_deref())?;
    let connection = Connection::open(&settings.uri).map_err(|err| err.to_string())?;
    let target = investigation_target(&settings);
    if args.last.is_none() && (args.rule.is_some() || args.host.is_some()) {
        return Err("--rule and --host select among the latest alerts: use them with --last N".into());
    }
    let unreachable = |err: investigate::InvestigateError| {
        let hint = if err.is_unreachable() {
            format!("\n  is MongoDB running at {}? (--mongodb-uri, MONGODB_URI)", redact(&settings.uri))
        } else {
            String::new()
        };
        format!("{err}{hint}")
    };
    if !args.no_create_indexes {
        match investigate::ensure_indexes(&connection, &target) {
            Ok(_) => {}
            // A read-only user may investigate without them.
            Err(err) if err.is_unauthorized() => {
                tracing::warn!("{err}; investigating without it (pass --no-create-indexes to skip)")
            }
            Err(err) => return Err(unreachable(err)),
        }
    }
    let query = investigate::Query {
        window_ms: i64::try_from(args.window.saturating_mul(1000)).unwrap_or(i64::MAX),
        max_events: args.max_events.max(1),
    };
    let investigations = match (&args.alert_id, args.last) {
        (Some(id), _) => vec![investigate::investigate_id(&connection, &target, id, query).map_err(unreachable)?],
        (None, Some(count)) => {
            let alerts =
                investigate::latest_alerts(&connection, &target, count, args.rule.as_deref(), args.host.as_deref())
                    .map_err(unreachable)?;
            alerts
                .iter()
                .map(|alert| investigate::investigate(&connection, &target, alert, query))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|err| err.to_string())?
        }
        (None, None) => unreachable!("clap requires ALERT_ID or --last"),
    };
    let mut out = std::io::stdout().lock();
    for (i, investigation) in investigations.iter().enumerate() {
        let written = match args.format {
            Format::Text if i > 0 => write!(out, "\n{}", investigation.render_text()),
            Format::Text => write!(out, "{}", investigation.render_text()),
            Format::Json => writeln!(out, "{}", investigation.to_json()),
        };
        written.map_err(|err| format!("writing to stdout: {err}"))?;
    }
    Ok(())
}

/// Hosts many tenants' rules and manages them over an HTTP API.
///
/// Each tenant of the --config file (TOML) has its own rules, kept in
/// STATE-DIR/tenants/ID/rules/, its own sandbox and limits, and a bearer
/// token; the admin token lists tenants and reads the audit log
/// (STATE-DIR/audit.jsonl). An uploaded rule is checked (world, size,
/// compilation, YAML/Sigma parse, uuid clash) before it goes live, without
/// a restart; a refused upload leaves the previous version running.
///
/// With --mongodb-uri, each collection the tenants' scopes name is watched
/// by one change stream, shared by its tenants; each event is evaluated by
/// the rules of the tenants whose scope takes it, and alerts go to each
/// tenant's alert collection. One checkpoint per stream is stored once
/// every tenant's alerts before it are written: a restart loses and
/// duplicates nothing. Without --mongodb-uri, rules are managed and
/// dry-run only.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "API (Authorization: Bearer TOKEN):\n  GET    /v1/tenants/{tenant}/rules                  the tenant's live rules\n  GET    /v1/tenants/{tenant}/rules/{name}           a rule's bytes\n  PUT    /v1/tenants/{tenant}/rules/{name}           upload (body: a .wasm component or a YAML/Sigma rule)\n  DELETE /v1/tenants/{tenant}/rules/{name}           remove\n  POST   /v1/tenants/{tenant}/rules/{name}/disable   keep stored, stop running (enable: run again)\n  POST   /v1/tenants/{tenant}/dry-run                events (NDJSON or a JSON array) -> the alerts all rules would raise\n  POST   /v1/tenants/{tenant}/rules/{name}/dry-run   the same, one rule\n  GET    /v1/tenants/{tenant}/alerts?limit=N         the newest alerts of the tenant's alert collection\n  GET    /v1/tenants/{tenant}/audit?after=SEQ&limit=N  a page of the tenant's audit trail\n  GET    /v1/tenants                                 (admin) the tenants\n  POST   /v1/tenants/reload                          (admin) read the tenants file again and apply it\n  GET    /v1/audit?after=SEQ&limit=N&tenant=ID       (admin) a page of the audit log\n\n`dac token` makes a token and the hash the config file holds.\nSIGINT or SIGTERM: finish the requests in flight and each stream's current event, write\nthe alerts, store the checkpoints, exit 0. SIGHUP: read the tenants file again."
)]
struct ServeArgs {
    /// The tenants file (TOML; see README.md, `dac serve`).
    #[arg(long, value_name = "FILE")]
    config: PathBuf,

    /// Where rules and the audit log are kept (created if missing).
    #[arg(long, value_name = "DIR")]
    state_dir: PathBuf,

    /// Address to listen on (plain HTTP: put TLS in front).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
    listen: std::net::SocketAddr,

    /// How Sigma rules' fields map to event fields (TOML); default:
    /// SigmaHQ's Linux process_creation fields onto dac's exec event.
    #[arg(long, value_name = "FILE")]
    sigma_mapping: Option<PathBuf>,

    /// MongoDB connection string; without it no events are read.
    #[arg(long, env = "MONGODB_URI", value_name = "URI", hide_env_values = true)]
    mongodb_uri: Option<String>,

    /// Database of the tenants' event and alert collections.
    #[arg(long = "db", env = "CHANGE_DB_NAME", value_name = "NAME", default_value = "monitoring")]
    database: String,

    /// Where the streams' checkpoints are kept (one per watched
    /// collection). Not `dac watch`'s `config`: the two keep the same
    /// checkpoint id for a collection, and must not share one.
    #[arg(long, value_name = "NAME", default_value = "serve_config")]
    config_collection: String,

    /// Where to start: after the stored checkpoints (from now when there
    /// are none), or from now.
    #[arg(long, value_enum, default_value = "stored")]
    start_at: StartAt,

    /// When a stored checkpoint is no longer in the server's history: stop
    /// with an error, or warn, count the gap and go on from now.
    #[arg(long, value_enum, default_value = "stop")]
    on_history_lost: HistoryLost,
}

fn serve(args: ServeArgs) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|err| format!("starting the async runtime: {err}"))?;
    // Caught from the start: SIGHUP's default action ends the process, and a
    // reload asked for while the rules load is applied once they are served.
    let hangup = {
        let _context = runtime.enter();
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
    };
    let config = dac_runtime::serve::config::ServeConfig::read(&args.config).map_err(|err| err.to_string())?;
    let mapping = match &args.sigma_mapping {
        None => dac_detect::FieldMapping::default(),
        Some(path) => {
            let text =
                std::fs::read_to_string(path).map_err(|err| format!("--sigma-mapping {}: {err}", path.display()))?;
            dac_detect::FieldMapping::from_toml(&path.display().to_string(), &text)
                .map_err(|err| format!("--sigma-mapping: {err}"))?
        }
    };
    let tenants = config.tenants.len();
    let listen = args.listen;
    let service = Arc::new(dac_runtime::serve::Service::open(config, &args.state_dir, mapping)?);
    service.set_config_file(args.config.clone());
    // Set by SIGINT/SIGTERM, or by a stream that cannot go on.
    let shutdown = Arc::new(AtomicBool::new(false));
    let uri = args.mongodb_uri.or_else(|| std::env::var("CHANGE_STREAM_DB").ok().filter(|uri| !uri.is_empty()));
    let streams = match uri {
        Some(uri) => {
            let connection = Connection::open(&uri).map_err(|err| err.to_string())?;
            let settings = StreamSettings {
                database: args.database.clone(),
                config_collection: args.config_collection,
                start_at: args.start_at,
                history_lost: args.on_history_lost,
                flush_interval: Duration::from_millis(250),
            };
            let streams = Streams::start(&service, &connection, &settings, shutdown.clone()).map_err(|err| {
                format!("{err}\n  is MongoDB running at {} with change streams (a replica set)?", redact(&uri))
            })?;
            service.attach_alerts(connection, args.database);
            Some(streams)
        }
        None => {
            tracing::warn!("no --mongodb-uri (or MONGODB_URI): rules are managed and dry-run, but no events are read");
            None
        }
    };
    let stop = shutdown.clone();
    let served = runtime.block_on(async move {
        let listener =
            tokio::net::TcpListener::bind(listen).await.map_err(|err| format!("--listen {listen}: {err}"))?;
        let address = listener.local_addr().map_err(|err| err.to_string())?;
        tracing::info!("serving {tenants} tenants on http://{address}/v1/");
        tokio::spawn(reload_on_sighup(hangup, service.clone()));
        dac_runtime::serve::api::serve(service, listener, shutdown_signal(stop)).await.map_err(|err| err.to_string())
    });
    // The streams end at their next poll: alerts written, positions stored.
    shutdown.store(true, std::sync::atomic::Ordering::Relaxed);
    let streamed = streams.map_or(Ok(()), |streams| streams.join().map_err(|err| err.to_string()));
    served.and(streamed)
}

/// Reads the tenants file again at each SIGHUP, as `POST /v1/tenants/reload`
/// does (audited as `dac`).
async fn reload_on_sighup(
    hangup: std::io::Result<tokio::signal::unix::Signal>,
    service: Arc<dac_runtime::serve::Service>,
) {
    let Ok(mut hangup) = hangup else {
        tracing::warn!("SIGHUP cannot be caught here; reload the tenants file with POST /v1/tenants/reload");
        return;
    };
    while hangup.recv().await.is_some() {
        let service = service.clone();
        match tokio::task::spawn_blocking(move || service.reload_file("dac")).await {
            Ok(Ok(changes)) => tracing::info!("SIGHUP: tenants file reloaded, {} tenant changes", changes.len()),
            Ok(Err(err)) => tracing::error!("SIGHUP: the tenants file was not applied: {err}"),
            Err(err) => tracing::error!("SIGHUP: reloading the tenants file panicked: {err}"),
        }
    }
}

/// Completes on SIGINT or SIGTERM, or once `stop` is set (a stream failed).
async fn shutdown_signal(stop: Arc<AtomicBool>) {
    let stopped = async {
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        tracing::error!("stopping: a change stream ended");
    };
    tokio::select! {
        _ = signalled() => {}
        _ = stopped => {}
    }
}

async fn signalled() {
    let interrupt = tokio::signal::ctrl_c();
    let mut terminate = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(signal) => signal,
        Err(_) => return interrupt.await.unwrap_or(()),
    };
    tokio::select! {
        _ = interrupt => {}
        _ = terminate.recv() => {}
    }
    tracing::info!("stopping: finishing the requests in flight and the streams' current events");
}

/// Makes an API token for `dac serve` and prints it with its SHA-256.
///
/// The token goes to the tenant (or the admin); only the hash goes in the
/// tenants file, as `token_sha256` (or `admin_token_sha256`).
#[derive(Debug, clap::Args)]
struct TokenArgs {}

fn token(_args: TokenArgs) -> Result<(), String> {
    let new = dac_runtime::serve::token::generate().map_err(|err| format!("reading random bytes: {err}"))?;
    println!("token:  {}", new.token);
    println!("sha256: {}", new.sha256_hex);
    Ok(())
}
