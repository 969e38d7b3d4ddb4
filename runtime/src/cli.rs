//! What the `dac-run` and `dac` commands share: the sandbox flags, loading
//! the rules into an engine, logging, and the run summary.

use crate::{ComponentCache, Engine, Isolation, Limits, RuleLoader, Sandbox, Stats};
use dac_detect::FieldMapping;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// The sandbox's limits and the engine's switches, as flags.
#[derive(Debug, Clone, clap::Args)]
pub struct SandboxArgs {
    /// Give every (rule, event) evaluation a fresh instance, so no state
    /// survives between documents (slower).
    #[arg(long)]
    pub fresh_instance: bool,

    /// Wall-clock budget of one evaluation, in milliseconds (0: none).
    #[arg(long, value_name = "MS", default_value_t = 200)]
    pub deadline_ms: u64,

    /// Deterministic instruction budget of one evaluation (wasmtime fuel).
    #[arg(long, value_name = "UNITS")]
    pub fuel: Option<u64>,

    /// Memory cap of one rule instance, in MiB.
    #[arg(long, value_name = "MIB", default_value_t = 64)]
    pub memory_mib: usize,

    /// Findings one evaluation may return before it counts as a fault.
    #[arg(long, value_name = "N", default_value_t = 100)]
    pub max_findings: usize,

    /// Call every rule on every event, ignoring the rules' declared
    /// literals (for measuring, or to rule the prefilter out).
    #[arg(long)]
    pub no_prefilter: bool,

    /// Compile rules afresh instead of using the compiled-code cache.
    #[arg(long)]
    pub no_cache: bool,

    /// How Sigma rules' fields map to event fields: a TOML file (see
    /// `dac_detect::FieldMapping`). Default: SigmaHQ's Linux
    /// process_creation fields onto dac's exec event.
    #[arg(long, value_name = "FILE")]
    pub sigma_mapping: Option<PathBuf>,
}

impl SandboxArgs {
    pub fn limits(&self) -> Limits {
        Limits {
            deadline: (self.deadline_ms > 0).then(|| Duration::from_millis(self.deadline_ms)),
            fuel: self.fuel,
            memory_bytes: self.memory_mib << 20,
            max_findings: self.max_findings,
            isolation: if self.fresh_instance { Isolation::FreshInstancePerEvent } else { Isolation::ReusedInstance },
            ..Limits::default()
        }
    }

    /// The Sigma field mapping: `--sigma-mapping`, else the default.
    pub fn mapping(&self) -> Result<FieldMapping, String> {
        let Some(path) = &self.sigma_mapping else { return Ok(FieldMapping::default()) };
        let text = std::fs::read_to_string(path).map_err(|err| format!("--sigma-mapping {}: {err}", path.display()))?;
        FieldMapping::from_toml(&path.display().to_string(), &text).map_err(|err| format!("--sigma-mapping: {err}"))
    }

    /// The sandbox and the field mapping, ready to load rule files.
    pub fn loader(&self) -> Result<RuleLoader, String> {
        let cache = ComponentCache::new(if self.no_cache { None } else { ComponentCache::default_dir() });
        let sandbox = Sandbox::new(self.limits(), cache).map_err(|err| format!("{err:#}"))?;
        Ok(RuleLoader::new(sandbox, self.mapping()?))
    }

    /// Builds the loader and loads every rule named by `rules` —
    /// components and YAML/Sigma files — into an engine; any rule that does
    /// not load fails the whole call, listing all of them. The loader must
    /// outlive the engine (its sandbox keeps the deadline clock running).
    pub fn load(&self, rules: &[PathBuf]) -> Result<(Arc<RuleLoader>, Engine), String> {
        let loader = self.loader()?;
        let (loaded, declarative, errors) = loader.load_all(rules);
        if !errors.is_empty() {
            let list: Vec<String> = errors.iter().map(|e| format!("  {e}")).collect();
            return Err(format!(
                "{} rule file(s) could not be loaded; nothing was run:\n{}",
                errors.len(),
                list.join("\n")
            ));
        }
        if loaded.is_empty() && declarative.is_empty() {
            let named: Vec<String> = rules.iter().map(|p| p.display().to_string()).collect();
            return Err(format!("no rules (.wasm, .yml, .yaml) found in {}", named.join(", ")));
        }
        for info in loaded.iter().map(|r| r.info()).chain(declarative.iter().map(|r| &r.info)) {
            tracing::info!("loaded {} (uuid {}, sha256 {})", info.file_name(), info.uuid, info.sha256);
        }
        for rule in &declarative {
            for note in rule.rule.notes() {
                tracing::warn!("{note}");
            }
        }
        let mut engine = Engine::with_declarative(loaded, declarative).map_err(|err| err.to_string())?;
        engine.set_prefilter(!self.no_prefilter);
        Ok((Arc::new(loader), engine))
    }
}

/// Logs to stderr, filtered by `DAC_LOG` (default `info`), in colour only
/// on a terminal.
pub fn init_logging() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("DAC_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .init();
}

/// The closing summary on stderr: totals, then one line per rule.
pub fn print_summary(program: &str, engine: &Engine, stats: &Stats, source: &str, elapsed: Duration) {
    let seconds = elapsed.as_secs_f64();
    let rate = if seconds > 0.0 { stats.events as f64 / seconds } else { 0.0 };
    let mut out = std::io::stderr().lock();
    let _ = writeln!(
        out,
        "{program}: {} events from {source} in {seconds:.3} s ({rate:.0} events/s); {} alerts, {} rule faults, {} malformed skipped, {} repaired (non-UTF-8)",
        stats.events,
        stats.alerts,
        stats.faults(),
        stats.malformed,
        stats.repaired_utf8,
    );
    let _ = writeln!(out, "  prefilter: {} of {} events needed no rule at all", stats.prefiltered_events, stats.events);
    let width = engine.infos().iter().map(|i| i.name.len()).max().unwrap_or(0);
    for (index, info) in engine.infos().iter().enumerate() {
        let counters = stats.rules.get(index).cloned().unwrap_or_default();
        let mut line = format!(
            "  {:>7} alerts  {:<width$}  {}  ({} evaluated)",
            counters.alerts,
            info.name,
            info.file_name(),
            counters.evaluations,
        );
        if counters.suppressed + counters.folded > 0 {
            line.push_str(&format!("  ({} suppressed, {} folded)", counters.suppressed, counters.folded));
        }
        if counters.fault_total() > 0 {
            let kinds: Vec<String> = counters.faults.iter().map(|(kind, n)| format!("{n} {kind}")).collect();
            line.push_str(&format!("  FAULTS: {}", kinds.join(", ")));
        }
        let dropped = engine.rules().get(index).map_or(0, |rule| rule.log().counts().1);
        if dropped > 0 {
            line.push_str(&format!("  log lines dropped: {dropped}"));
        }
        let _ = writeln!(out, "{line}");
    }
}

/// Where the events and alerts are: the flags `dac watch`, `dac
/// investigate` and `dac init` share, with the seed's environment
/// variables.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct MongoArgs {
    /// MongoDB connection string [default: mongodb://localhost:27017].
    #[arg(long, env = "MONGODB_URI", value_name = "URI", hide_env_values = true)]
    pub mongodb_uri: Option<String>,

    /// Database of the event, alert and config collections [default: monitoring].
    #[arg(long = "db", env = "CHANGE_DB_NAME", value_name = "NAME", hide_env_values = true)]
    pub database: Option<String>,

    /// The event collection (the one `dac watch` watches) [default: process].
    #[arg(long, env = "CHANGE_COLLECTION_NAME", value_name = "NAME", hide_env_values = true)]
    pub collection: Option<String>,

    /// Where alerts are written [default: alert].
    #[arg(long, env = "ALERT_COLLECTION_NAME", value_name = "NAME", hide_env_values = true)]
    pub alert_collection: Option<String>,
}

/// [`MongoArgs`] with every default applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MongoSettings {
    pub uri: String,
    pub database: String,
    pub collection: String,
    pub alert_collection: String,
}

/// The connection keys of a `--config` TOML file; other keys are ignored,
/// so `dac investigate` reads the file `dac watch` runs with.
#[derive(Debug, Clone, Default, serde::Deserialize)]
pub struct MongoFileKeys {
    pub mongodb_uri: Option<String>,
    pub database: Option<String>,
    pub collection: Option<String>,
    pub alert_collection: Option<String>,
}

impl MongoArgs {
    /// Flag or environment, then the seed's `CHANGE_STREAM_DB` for the URI,
    /// then the file, then the default.
    pub fn resolve(self, file: MongoFileKeys) -> MongoSettings {
        MongoSettings {
            uri: self
                .mongodb_uri
                .or_else(|| std::env::var("CHANGE_STREAM_DB").ok().filter(|uri| !uri.is_empty()))
                .or(file.mongodb_uri)
                .unwrap_or_else(|| "mongodb://localhost:27017".into()),
            database: self.database.or(file.database).unwrap_or_else(|| "monitoring".into()),
            collection: self.collection.or(file.collection).unwrap_or_else(|| "process".into()),
            alert_collection: self.alert_collection.or(file.alert_collection).unwrap_or_else(|| "alert".into()),
        }
    }
}

/// The alert policy flag `dac watch` and `dac-run` share.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct PolicyArgs {
    /// Dedup and suppression rules: a TOML file of `[[dedup]]` (rule, key
    /// fields, window) and `[[suppress]]` (rule and/or field values, until,
    /// reason) entries; see the README.
    #[arg(long, value_name = "FILE")]
    pub alert_policy: Option<PathBuf>,
}

impl PolicyArgs {
    /// The policy of `--alert-policy`, else `file` (a config file's), else none.
    pub fn load(&self, file: Option<&std::path::Path>) -> Result<crate::policy::AlertPolicy, String> {
        match self.alert_policy.as_deref().or(file) {
            Some(path) => {
                let policy = crate::policy::AlertPolicy::load(path).map_err(|err| format!("--alert-policy {err}"))?;
                tracing::info!(
                    "alert policy {}: {} dedup, {} suppression(s)",
                    path.display(),
                    policy.dedup_count(),
                    policy.suppressions().len()
                );
                Ok(policy)
            }
            None => Ok(crate::policy::AlertPolicy::none()),
        }
    }
}

/// The policy's part of the summary: suppressed and folded matches, and
/// each suppression's count with its reason.
pub fn print_policy_summary(policy: &crate::policy::AlertPolicy, stats: &Stats) {
    // Rules may declare dedup themselves: a run without a policy file can fold too.
    if policy.is_empty() && stats.folded == 0 {
        return;
    }
    let mut out = std::io::stderr().lock();
    let _ = writeln!(
        out,
        "  alert policy: {} matches suppressed, {} repeats folded into dedup alerts",
        stats.suppressed, stats.folded
    );
    for suppression in policy.suppressions() {
        let _ = writeln!(out, "  {:>7} suppressed  {}", suppression.count, suppression.reason);
    }
}
