//! The flags several commands share, meaning the same thing on each: the
//! sandbox's limits and the rule loading (`dac run`, `dac watch`, `dac
//! test`), MongoDB's names (`dac watch`, `dac investigate`, `dac init`),
//! the alert policy, and the output format.

use dac_engine::{ComponentCache, CorrelationLimits, Engine, FieldMapping, Isolation, Limits, RuleLoader, Sandbox};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// The help text's list of environment variables every command reads (the
/// flags' own variables are shown with each flag), for `concat!`.
macro_rules! environment_help {
    () => {
        "Environment:\n  DAC_LOG        log filter, e.g. `warn` or `dac::rule=debug` (default: info; warn with -q)\n  DAC_CACHE_DIR  compiled-rule cache (default: $XDG_CACHE_HOME/dac or ~/.cache/dac)"
    };
}
pub(crate) use environment_help;

/// How a command prints what it produces: `json` for tools (one JSON
/// document per line), `text` for people.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// One JSON document per line.
    Json,
    /// Readable blocks, for people.
    #[value(alias = "pretty")]
    Text,
}

/// Parses one of `names` into the enum they name (`StartAt`,
/// `HistoryLost`: libraries' enums, not clap's), listing them in the help.
pub fn named<T>(names: &'static [&'static str]) -> impl clap::builder::TypedValueParser<Value = T>
where
    T: std::str::FromStr + Clone + Send + Sync + 'static,
    T::Err: std::fmt::Debug,
{
    use clap::builder::TypedValueParser;
    clap::builder::PossibleValuesParser::new(names).map(|name| name.parse::<T>().expect("one of the listed names"))
}

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

    /// How much older than its group's newest match a match may arrive and
    /// still join a Sigma correlation's window, in milliseconds (later
    /// ones are counted as late).
    #[arg(long, value_name = "MS", default_value_t = 60_000)]
    pub correlation_lateness_ms: i64,

    /// Group keys one Sigma correlation keeps at once; past it, matches of
    /// new groups are refused and counted.
    #[arg(long, value_name = "N", default_value_t = 1_000_000)]
    pub correlation_max_groups: usize,

    /// Call every rule on every event, ignoring the rules' declared
    /// literals (for measuring, or to rule the prefilter out).
    #[arg(long)]
    pub no_prefilter: bool,

    /// Compile rules afresh instead of using the compiled-code cache.
    #[arg(long)]
    pub no_cache: bool,

    #[command(flatten)]
    pub mapping: MappingArgs,
}

/// How Sigma rules' fields map to event fields.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct MappingArgs {
    /// How Sigma rules' fields map to event fields: a TOML file of
    /// `[fields]` (Sigma name = event path). Default: SigmaHQ's Linux
    /// process_creation fields onto dac's exec event.
    #[arg(long, value_name = "FILE")]
    pub sigma_mapping: Option<PathBuf>,
}

impl MappingArgs {
    /// The Sigma field mapping: `--sigma-mapping`, else the default.
    pub fn load(&self) -> Result<FieldMapping, String> {
        let Some(path) = &self.sigma_mapping else { return Ok(FieldMapping::default()) };
        let text = std::fs::read_to_string(path).map_err(|err| format!("--sigma-mapping {}: {err}", path.display()))?;
        FieldMapping::from_toml(&path.display().to_string(), &text).map_err(|err| format!("--sigma-mapping: {err}"))
    }
}

impl SandboxArgs {
    pub fn limits(&self) -> Limits {
        Limits {
            deadline: (self.deadline_ms > 0).then(|| Duration::from_millis(self.deadline_ms)),
            fuel: self.fuel,
            memory_bytes: self.memory_mib << 20,
            max_findings: self.max_findings,
            isolation: if self.fresh_instance { Isolation::FreshInstancePerEvent } else { Isolation::ReusedInstance },
            correlation: CorrelationLimits {
                lateness_ms: self.correlation_lateness_ms.max(0),
                max_groups: self.correlation_max_groups,
                ..CorrelationLimits::default()
            },
            ..Limits::default()
        }
    }

    /// The sandbox and the field mapping, ready to load rule files.
    pub fn loader(&self) -> Result<RuleLoader, String> {
        let cache = ComponentCache::new(if self.no_cache { None } else { ComponentCache::default_dir() });
        let sandbox = Sandbox::new(self.limits(), cache).map_err(|err| format!("{err:#}"))?;
        Ok(RuleLoader::new(sandbox, self.mapping.load()?))
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
        engine.set_correlation_limits(loader.sandbox.limits().correlation.clone());
        engine.set_state_limits(loader.sandbox.limits().state.clone());
        Ok((Arc::new(loader), engine))
    }
}

/// Where the events and alerts are: the flags `dac watch`, `dac
/// investigate` and `dac init` share, with the seed's environment
/// variables.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct MongoArgs {
    /// MongoDB connection string (the seed's CHANGE_STREAM_DB also works)
    /// [default: mongodb://localhost:27017].
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

/// The connection keys of a `--config` file; other keys are ignored, so
/// `dac investigate` reads the file `dac watch` runs with.
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

    /// The settings, with the connection keys of a `--config` file.
    pub fn resolve_with(self, config: Option<&Path>) -> Result<MongoSettings, String> {
        let file = match config {
            Some(path) => read_toml::<MongoFileKeys>(path)?,
            None => MongoFileKeys::default(),
        };
        Ok(self.resolve(file))
    }
}

/// Reads a TOML settings file; errors name it.
pub fn read_toml<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, String> {
    let text = std::fs::read_to_string(path).map_err(|err| format!("{}: {err}", path.display()))?;
    toml::from_str(&text).map_err(|err| format!("{}: {err}", path.display()))
}

/// The alert policy flag `dac watch` and `dac run` share.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct PolicyArgs {
    /// Dedup and suppression rules: a TOML file of `[[dedup]]` (rule, key
    /// fields, window) and `[[suppress]]` (rule and/or field values, until,
    /// reason) entries; see docs/alert-policy.md.
    #[arg(long, value_name = "FILE")]
    pub alert_policy: Option<PathBuf>,
}

impl PolicyArgs {
    /// The policy of `--alert-policy`, else `file` (a config file's), else none.
    pub fn load(&self, file: Option<&Path>) -> Result<dac_engine::AlertPolicy, String> {
        match self.alert_policy.as_deref().or(file) {
            Some(path) => {
                let policy = dac_engine::AlertPolicy::load(path).map_err(|err| format!("--alert-policy {err}"))?;
                tracing::info!(
                    "alert policy {}: {} dedup, {} suppression(s)",
                    path.display(),
                    policy.dedup_count(),
                    policy.suppressions().len()
                );
                Ok(policy)
            }
            None => Ok(dac_engine::AlertPolicy::none()),
        }
    }
}
