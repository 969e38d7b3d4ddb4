//! `dac`: the detection engine's long-running commands.

use clap::{Parser, Subcommand};
use dac_runtime::cli::{self, SandboxArgs};
use dac_runtime::mongo::{ChangeStreamSource, Connection, HistoryLost, MongoAlertSink, StartAt, WatchTarget};
use dac_runtime::pipeline::{self, Notice, Observer, Options};
use dac_runtime::reload::RuleWatcher;
use dac_runtime::Stats;
use mongodb::bson::{Bson, Document};
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
    Test(TestArgs),
    Build(BuildArgs),
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

    /// MongoDB connection string [default: mongodb://localhost:27017].
    #[arg(long, env = "MONGODB_URI", value_name = "URI", hide_env_values = true)]
    mongodb_uri: Option<String>,

    /// Database of the watched, alert and config collections [default: monitoring].
    #[arg(long = "db", env = "CHANGE_DB_NAME", value_name = "NAME", hide_env_values = true)]
    database: Option<String>,

    /// The collection whose inserts are evaluated [default: process].
    #[arg(long, env = "CHANGE_COLLECTION_NAME", value_name = "NAME", hide_env_values = true)]
    collection: Option<String>,

    /// Where alerts are written [default: alert].
    #[arg(long, env = "ALERT_COLLECTION_NAME", value_name = "NAME", hide_env_values = true)]
    alert_collection: Option<String>,

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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    cli::init_logging();
    let result = match cli.command {
        Command::Watch(args) => watch(args),
        Command::Test(args) => return test(args),
        Command::Build(args) => build(args),
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
    let uri = args
        .mongodb_uri
        .or_else(|| std::env::var("CHANGE_STREAM_DB").ok().filter(|uri| !uri.is_empty()))
        .or(file.mongodb_uri)
        .unwrap_or_else(|| "mongodb://localhost:27017".into());
    let database = args.database.or(file.database).unwrap_or_else(|| "monitoring".into());
    let target = WatchTarget {
        database: database.clone(),
        collection: args.collection.or(file.collection).unwrap_or_else(|| "process".into()),
        config_collection: args.config_collection.or(file.config_collection).unwrap_or_else(|| "config".into()),
    };
    let alert_collection = args.alert_collection.or(file.alert_collection).unwrap_or_else(|| "alert".into());
    let extra_match = match (args.extra_match, file.extra_match) {
        (Some(json), _) => Some(match_stage(serde_json::from_str(&json).map_err(|err| format!("--match: {err}"))?)?),
        (None, Some(table)) => Some(match_stage(serde_json::to_value(table).map_err(|err| err.to_string())?)?),
        (None, None) => None,
    };
    let stats_interval = Duration::from_secs(args.stats_interval.or(file.stats_interval).unwrap_or(10).max(1));

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
    let result = pipeline::run(&mut source, &mut engine, &mut sink, &mut stats, &mut observer, &options);
    cli::print_summary("dac watch", &engine, &stats, &format!("{database}.{}", target.collection), started.elapsed());
    let (stream, alerts) = (&stats.source, &stats.sink);
    eprintln!(
        "  stream: {} reconnects, {} history gaps, {} events without a document, {} checkpoints stored; alerts: {} written, {} already present",
        stream.reconnects, stream.history_gaps, stream.without_document, stream.commits, alerts.written, alerts.duplicates
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
