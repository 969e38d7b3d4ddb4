//! One tenant: its rules on disk, its own sandbox and its own engine.
//!
//! A tenant's rules are files in `STATE/tenants/ID/rules/`, one per rule,
//! named by the rule's name alone (`shadow`, no extension): a WebAssembly
//! component or a YAML (seed or Sigma) rule, told apart by content. One
//! file per name means replacing a rule — even by one of another kind — is
//! a single atomic rename.
//!
//! A change is checked completely before it goes live: the new rule is
//! loaded by the tenant's own [`Sandbox`] (world, compilation, limits) or
//! parsed by `dac_detect`, then a new [`Engine`] is built from it and the
//! tenant's other rules (which also refuses a uuid used twice). Only then is
//! the file written aside and renamed in, and the new engine swapped for the
//! old one. A refused upload changes nothing: the previous version stays
//! live. Each rule of each tenant runs in its own wasmtime store, under the
//! tenant's limits; tenants whose limits allow the same wasmtime
//! configuration share its engine (compiled code, one deadline clock), and
//! all share the compiled-code cache, keyed by content hash.
//!
//! A stored rule is live, or out of the engine for one reason: it did not
//! load at start, it was quarantined (too many faults), or it is disabled —
//! through the API (a marker in `STATE/tenants/ID/disabled/`) or because
//! the tenant's `enabled_rules` in the tenants file does not name it.

use super::config::TenantConfig;
use crate::declarative::DeclarativeRule;
use crate::loader::LoadedRule;
use crate::pipeline::{self, Notice, Observer};
use crate::rule::{RuleComponent, RuleKind, Severity};
use crate::stats::{Latency, RuleStats};
use crate::{Engine, JsonLinesSink, ReplaySource, RuleLoader, Sandbox, Stats};
use dac_detect::FieldMapping;
use serde::Serialize;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};

/// Why a request about a tenant's rules was refused.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0}")]
    InvalidName(String),
    #[error("no rule named {0:?}")]
    NotFound(String),
    #[error("the rule is {size} bytes; this tenant's limit is {limit} bytes")]
    TooLarge { size: usize, limit: usize },
    #[error("this tenant already has {limit} rules, its limit; delete one first")]
    TooManyRules { limit: usize },
    /// The rule does not load, or clashes with another; the message is
    /// located (`NAME.yaml:4: …`).
    #[error("{0}")]
    Invalid(String),
    /// The rule is in a state the request cannot change (enabling a
    /// quarantined rule, or one the tenants file leaves out).
    #[error("{0}")]
    Conflict(String),
    /// The tenants file was reloaded while the request waited, and this
    /// tenant was changed or removed by it.
    #[error("the tenants file was reloaded while this request ran; send it again")]
    Retired,
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

/// A rule name: it is a file name, so 1 to 64 of `A-Z a-z 0-9 _ -`,
/// starting with a letter or digit — no dots, no separators, nothing that
/// could leave the tenant's directory.
pub fn check_rule_name(name: &str) -> Result<(), StoreError> {
    let ok = (1..=64).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        && name.as_bytes()[0].is_ascii_alphanumeric();
    if ok {
        Ok(())
    } else {
        Err(StoreError::InvalidName(
            "a rule name is 1 to 64 of A-Z a-z 0-9 _ -, starting with a letter or digit".into(),
        ))
    }
}

/// What the API says about a live rule.
#[derive(Debug, Clone, Serialize)]
pub struct RuleSummary {
    /// The name it was uploaded under.
    pub name: String,
    pub kind: RuleKind,
    /// The rule's own title (its metadata `name`, Sigma `title`).
    pub title: String,
    pub uuid: String,
    pub version: String,
    pub severity: Severity,
    /// `sha256:…` of the stored bytes.
    pub sha256: String,
    pub bytes: usize,
    /// Evaluations of the event stream that faulted since this version
    /// went live (or the server started).
    pub faults: u64,
}

/// A rule taken out of its tenant's engine after too many faults. Its file
/// stays (and a marker beside it, so a restart keeps it out); uploading the
/// rule again, fixed, puts it back; deleting it removes both.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Quarantined {
    pub name: String,
    pub uuid: String,
    /// `sha256:…` of the quarantined version.
    pub sha256: String,
    pub faults: u64,
    /// The last fault.
    pub reason: String,
}

/// A stored rule that does not run because it is disabled: through the API
/// (`who` and `time` say by whom and when; a marker keeps it disabled
/// across restarts) or by the tenants file's `enabled_rules`.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Disabled {
    pub name: String,
    /// The disabled version's uuid, when known (it is not for a rule
    /// disabled by the tenants file since the server started).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub uuid: Option<String>,
    /// `sha256:…` of the stored bytes.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub sha256: Option<String>,
    /// Who disabled it through the API (`tenant:ID`).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub who: Option<String>,
    /// When (RFC 3339, UTC).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub time: Option<String>,
    pub reason: String,
}

/// Why a rule disabled through the API does not run.
pub const DISABLED_BY_API: &str = "disabled through the API";
/// Why a rule the tenants file leaves out does not run.
pub const DISABLED_BY_CONFIG: &str = "not in enabled_rules of the tenants file";

/// A rule on disk that did not load when the server started (for instance
/// after the tenant's limits were lowered); it does not run.
#[derive(Debug, Clone, Serialize)]
pub struct NotLoaded {
    pub name: String,
    pub reason: String,
}

/// The outcome of evaluating posted events without writing anything.
#[derive(Debug, Serialize)]
pub struct DryRun {
    /// Well-formed events evaluated.
    pub events: u64,
    /// The alerts the rules raised, exactly as `dac-run` prints them.
    pub alerts: Vec<serde_json::Value>,
    /// Evaluations that faulted (a rule trapped or breached a limit).
    pub faults: Vec<String>,
    /// Posted input that was not an event, by location.
    pub malformed: Vec<String>,
}

/// What a successful upload did.
pub struct Put {
    pub created: bool,
    pub rule: RuleSummary,
    /// The rule was disabled and stays so: stored, checked, not live.
    pub disabled: Option<Disabled>,
}

/// What an enable or disable did.
pub struct Switched<T> {
    /// `false`: the rule already was in the state asked for.
    pub changed: bool,
    /// The rule as it is now.
    pub rule: T,
}

/// What the event stream did for one tenant since the server started, for
/// the metrics endpoint: counters only ever grow, across rule changes.
#[derive(Debug, Clone, Default)]
pub struct TenantCounters {
    /// Events of the tenant's scope evaluated.
    pub events: u64,
    /// Alerts written (matches less suppressed and folded ones).
    pub alerts: u64,
    pub folded: u64,
    pub suppressed: u64,
    /// The declarative rules' shared pass, per event that needed it.
    pub declarative_pass: Latency,
    /// Per rule name: every rule that ran since the start and is still
    /// stored (a deleted rule's counters go with it).
    pub rules: BTreeMap<String, RuleStats>,
    /// Rules taken out after too many faults.
    pub quarantines: u64,
    /// Rules live, quarantined, stored but not loaded, disabled, now.
    pub live_rules: usize,
    pub quarantined_rules: usize,
    pub not_loaded_rules: usize,
    pub disabled_rules: usize,
}

/// The rules currently live, and the engine running them.
struct Live {
    engine: Engine,
    /// The stream's counters for this engine, indexed like its rules;
    /// folded into `past` whenever a change swaps the engine.
    stats: Stats,
    /// The counters of engines swapped out, by rule name.
    past: TenantCounters,
    rules: BTreeMap<String, RuleSummary>,
    not_loaded: BTreeMap<String, String>,
    quarantined: BTreeMap<String, Quarantined>,
    disabled: BTreeMap<String, Disabled>,
}

impl Live {
    /// Folds the live engine's counters into `past` before the engine
    /// is swapped, so the metrics go on counting across rule changes (the
    /// per-rule counters are indexed by position, which a change moves).
    fn retire_stats(&mut self) {
        let stats = std::mem::take(&mut self.stats);
        absorb(&mut self.past, &stats);
    }

    /// The counters since the start: the past engines' plus the live one's.
    fn counters(&self) -> TenantCounters {
        let mut counters = self.past.clone();
        absorb(&mut counters, &self.stats);
        counters.rules.retain(|name, _| {
            self.rules.contains_key(name)
                || self.quarantined.contains_key(name)
                || self.not_loaded.contains_key(name)
                || self.disabled.contains_key(name)
        });
        for name in self.rules.keys() {
            counters.rules.entry(name.clone()).or_default();
        }
        counters.live_rules = self.rules.len();
        counters.quarantined_rules = self.quarantined.len();
        counters.not_loaded_rules = self.not_loaded.len();
        counters.disabled_rules = self.disabled.len();
        counters
    }
}

fn absorb(counters: &mut TenantCounters, stats: &Stats) {
    counters.events += stats.events;
    counters.alerts += stats.alerts;
    counters.folded += stats.folded;
    counters.suppressed += stats.suppressed;
    counters.declarative_pass.absorb(&stats.declarative_pass);
    for rule in &stats.rules {
        // `RuleStats::rule` is the engine's file name, `NAME.wasm` or
        // `NAME.yaml` (see `display_name`); the API knows rules by NAME.
        let name = Path::new(&rule.rule).file_stem().map(|stem| stem.to_string_lossy().into_owned());
        counters.rules.entry(name.unwrap_or_default()).or_default().absorb(rule);
    }
}

pub struct Tenant {
    pub config: TenantConfig,
    dir: PathBuf,
    /// `STATE/tenants/ID/quarantine/`: one JSON marker per quarantined rule.
    quarantine_dir: PathBuf,
    /// `STATE/tenants/ID/disabled/`: one JSON marker per rule disabled
    /// through the API.
    disabled_dir: PathBuf,
    loader: RuleLoader,
    live: Mutex<Live>,
    /// Set when a reload of the tenants file replaced (or removed) this
    /// instance: changes are refused, so none lands where the new instance
    /// would not see it.
    retired: AtomicBool,
}

/// A tenant being replaced by a reload: its lock is held, so no change
/// lands on it meanwhile. [`Retiring::commit`] retires it; dropping this
/// instead leaves it as it was.
pub(super) struct Retiring<'a> {
    live: MutexGuard<'a, Live>,
    retired: &'a AtomicBool,
}

impl Retiring<'_> {
    /// What the stream did for the tenant so far, for its successor to
    /// count on from (metrics are counters: they must not fall back).
    pub(super) fn counters(&self) -> TenantCounters {
        self.live.counters()
    }

    pub(super) fn commit(self) {
        self.retired.store(true, Ordering::Release);
    }
}

impl Tenant {
    /// Opens the tenant's rule directory under `state_dir` (creating it)
    /// and loads what is there. A rule file that no longer loads is kept on
    /// disk, reported by [`Tenant::not_loaded`] and logged; it does not run.
    ///
    /// `sandbox` must run under the tenant's limits (see [`Service::open`](super::Service::open)).
    pub fn open(
        config: TenantConfig,
        state_dir: &Path,
        sandbox: Sandbox,
        mapping: FieldMapping,
    ) -> Result<Tenant, String> {
        let dir = state_dir.join("tenants").join(&config.id).join("rules");
        std::fs::create_dir_all(&dir).map_err(|err| format!("{}: {err}", dir.display()))?;
        let quarantine_dir = state_dir.join("tenants").join(&config.id).join("quarantine");
        let quarantined = read_quarantine(&quarantine_dir);
        let disabled_dir = state_dir.join("tenants").join(&config.id).join("disabled");
        let markers = read_disabled(&disabled_dir);
        let loader = RuleLoader::new(sandbox, mapping);
        let mut names = Vec::new();
        for entry in std::fs::read_dir(&dir).map_err(|err| format!("{}: {err}", dir.display()))? {
            let entry = entry.map_err(|err| format!("{}: {err}", dir.display()))?;
            // Only valid names are rules; anything else is left alone.
            match entry.file_name().to_str() {
                Some(name) if check_rule_name(name).is_ok() => names.push(name.to_owned()),
                // An upload's temporary file, left by a crash before its
                // rename: never live, so nothing to keep.
                Some(name) if name.starts_with(TEMPORARY_PREFIX) => {
                    if let Err(err) = std::fs::remove_file(entry.path()) {
                        tracing::warn!("{}: {err}", entry.path().display());
                    }
                }
                _ => {}
            }
        }
        names.sort();
        let mut loaded = Vec::new();
        let mut not_loaded = BTreeMap::new();
        let mut disabled = BTreeMap::new();
        for name in names {
            if quarantined.contains_key(&name) {
                tracing::warn!(
                    "tenant {}: rule {name} is quarantined and does not run; upload it again to release it",
                    config.id
                );
                continue;
            }
            let bytes = std::fs::read(dir.join(&name)).map_err(|err| format!("{}: {err}", dir.display()))?;
            let off = if !config.allows(&name) {
                Some(disabled_by_config(&name, &bytes))
            } else {
                markers.get(&name).cloned()
            };
            if let Some(off) = off {
                tracing::info!("tenant {}: rule {name} does not run: {}", config.id, off.reason);
                disabled.insert(name, off);
                continue;
            }
            match load(&loader, &name, &bytes) {
                Ok(rule) => loaded.push((name, bytes.len(), rule)),
                Err(reason) => {
                    tracing::error!("tenant {}: rule {name} does not load and will not run: {reason}", config.id);
                    not_loaded.insert(name, reason);
                }
            }
        }
        let (engine, rules) = build(loaded).map_err(|err| format!("tenant {}: {err}", config.id))?;
        for rule in rules.values() {
            tracing::info!("tenant {}: loaded {} ({}, {})", config.id, rule.name, rule.uuid, rule.sha256);
        }
        let live = Live {
            engine,
            stats: Stats::default(),
            past: TenantCounters::default(),
            rules,
            not_loaded,
            quarantined,
            disabled,
        };
        Ok(Tenant {
            config,
            dir,
            quarantine_dir,
            disabled_dir,
            loader,
            live: Mutex::new(live),
            retired: AtomicBool::new(false),
        })
    }

    pub fn id(&self) -> &str {
        &self.config.id
    }

    fn live(&self) -> MutexGuard<'_, Live> {
        // A panic while holding the lock cannot leave `Live` half-updated:
        // it is only ever replaced whole.
        self.live.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The lock of a change: refused once a reload retired this instance.
    fn live_for_change(&self) -> Result<MutexGuard<'_, Live>, StoreError> {
        let live = self.live();
        if self.retired.load(Ordering::Acquire) {
            return Err(StoreError::Retired);
        }
        Ok(live)
    }

    /// Locks this instance for a reload that replaces it.
    pub(super) fn begin_retire(&self) -> Retiring<'_> {
        Retiring { live: self.live(), retired: &self.retired }
    }

    /// The live rules, by name.
    pub fn rules(&self) -> Vec<RuleSummary> {
        self.live().rules.values().cloned().collect()
    }

    /// What the event stream did for this tenant since the server started.
    pub fn counters(&self) -> TenantCounters {
        self.live().counters()
    }

    /// Counts on from `earlier`, the counters of the instance this one
    /// replaces (a reload that changed the tenant's settings).
    pub(super) fn carry_counters(&self, earlier: &TenantCounters) {
        let past = &mut self.live().past;
        past.events += earlier.events;
        past.alerts += earlier.alerts;
        past.folded += earlier.folded;
        past.suppressed += earlier.suppressed;
        past.quarantines += earlier.quarantines;
        past.declarative_pass.absorb(&earlier.declarative_pass);
        for (name, stats) in &earlier.rules {
            past.rules.entry(name.clone()).or_default().absorb(stats);
        }
    }

    /// The rules taken out after too many faults.
    pub fn quarantined(&self) -> Vec<Quarantined> {
        self.live().quarantined.values().cloned().collect()
    }

    /// Counts the stream's faults of the named rules (one entry per
    /// faulted evaluation: rule name, fault) and takes out of the engine
    /// every rule that has reached `threshold`; returns those. A rule is
    /// named by the file stem its engine reports.
    pub fn record_faults(&self, faults: &[(String, String)], threshold: u64) -> Vec<Quarantined> {
        let mut live = self.live();
        let mut reached = Vec::new();
        for (name, fault) in faults {
            let Some(rule) = live.rules.get_mut(name) else { continue };
            rule.faults += 1;
            if rule.faults >= threshold && !reached.iter().any(|(n, _): &(String, String)| n == name) {
                reached.push((name.clone(), fault.clone()));
            }
        }
        let mut taken = Vec::new();
        for (name, reason) in reached {
            // The other rules, loaded again (from the compiled-code cache):
            // the same path as a delete, without touching the rule's file.
            let engine = self.load_others(&live, &name).and_then(|rules| build(rules).map_err(StoreError::Invalid));
            let (engine, mut summaries) = match engine {
                Ok(built) => built,
                Err(err) => {
                    tracing::error!(
                        "tenant {}: rule {name} should be quarantined but the others do not reload: {err}",
                        self.id()
                    );
                    continue;
                }
            };
            let rule = live.rules.remove(&name).expect("counted above");
            for (other, summary) in &mut summaries {
                summary.faults = live.rules.get(other).map_or(0, |old| old.faults);
            }
            let quarantined =
                Quarantined { name: name.clone(), uuid: rule.uuid, sha256: rule.sha256, faults: rule.faults, reason };
            if let Err(err) = write_marker(&self.quarantine_dir, &quarantined) {
                tracing::error!("tenant {}: rule {name}: {err}; its quarantine ends at the next restart", self.id());
            }
            live.engine = engine;
            live.retire_stats();
            live.rules = summaries;
            live.quarantined.insert(name, quarantined.clone());
            live.past.quarantines += 1;
            taken.push(quarantined);
        }
        taken
    }

    /// The stored rules that are disabled (through the API or by the
    /// tenants file).
    pub fn disabled(&self) -> Vec<Disabled> {
        self.live().disabled.values().cloned().collect()
    }

    /// Takes rule `name` out of the engine (rebuilt from the others, as for
    /// a quarantine) and keeps it out, across restarts, until it is enabled;
    /// its file stays. `who` is recorded with it.
    pub fn disable(&self, name: &str, who: &str) -> Result<Switched<Disabled>, StoreError> {
        check_rule_name(name)?;
        let mut live = self.live_for_change()?;
        if let Some(off) = live.disabled.get(name) {
            return Ok(Switched { changed: false, rule: off.clone() });
        }
        if live.quarantined.contains_key(name) {
            return Err(StoreError::Conflict(format!(
                "rule {name:?} is quarantined, so it does not run; upload it again (fixed) to release it, or delete it"
            )));
        }
        let (uuid, sha256) = match (live.rules.get(name), live.not_loaded.contains_key(name)) {
            (Some(rule), _) => (Some(rule.uuid.clone()), Some(rule.sha256.clone())),
            (None, true) => (None, Some(content_hash(&self.read(name)?))),
            (None, false) => return Err(StoreError::NotFound(name.into())),
        };
        let off = Disabled {
            name: name.into(),
            uuid,
            sha256,
            who: Some(who.into()),
            time: Some(super::audit::now_rfc3339()),
            reason: DISABLED_BY_API.into(),
        };
        if live.rules.contains_key(name) {
            let (engine, summaries) = self.rebuild_without(&live, name)?;
            write_json_marker(&self.disabled_dir, name, &off)?;
            live.rules.remove(name);
            live.engine = engine;
            live.retire_stats();
            live.rules = summaries;
        } else {
            write_json_marker(&self.disabled_dir, name, &off)?;
            live.not_loaded.remove(name);
        }
        live.disabled.insert(name.into(), off.clone());
        Ok(Switched { changed: true, rule: off })
    }

    /// Puts a disabled rule back into the engine, after checking it loads
    /// and fits with the others (422 otherwise: it stays disabled). A
    /// quarantined rule is released by uploading it again, not here; a rule
    /// the tenants file leaves out is governed by that file.
    pub fn enable(&self, name: &str) -> Result<Switched<RuleSummary>, StoreError> {
        check_rule_name(name)?;
        let mut live = self.live_for_change()?;
        if let Some(rule) = live.rules.get(name) {
            return Ok(Switched { changed: false, rule: rule.clone() });
        }
        if live.quarantined.contains_key(name) {
            return Err(StoreError::Conflict(format!(
                "rule {name:?} is quarantined, not disabled; upload it again (fixed) to release it"
            )));
        }
        if let Some(reason) = live.not_loaded.get(name) {
            return Err(StoreError::Conflict(format!(
                "rule {name:?} is not disabled; it did not load: {reason}; upload it again"
            )));
        }
        if !live.disabled.contains_key(name) {
            return Err(StoreError::NotFound(name.into()));
        }
        if !self.config.allows(name) {
            return Err(StoreError::Conflict(format!(
                "rule {name:?} is {DISABLED_BY_CONFIG}, which governs this tenant's rules: \
                 the tenants file must name it for it to run"
            )));
        }
        let bytes = self.read(name)?;
        let rule = load(&self.loader, name, &bytes).map_err(StoreError::Invalid)?;
        let mut rules = self.load_others(&live, name)?;
        rules.push((name.to_owned(), bytes.len(), rule));
        let (engine, mut summaries) = build(rules).map_err(StoreError::Invalid)?;
        for (other, summary) in &mut summaries {
            summary.faults = live.rules.get(other).map_or(0, |old| old.faults);
        }
        remove_marker(&self.disabled_dir, name)?;
        live.disabled.remove(name);
        let rule = summaries[name].clone();
        live.engine = engine;
        live.retire_stats();
        live.rules = summaries;
        Ok(Switched { changed: true, rule })
    }

    pub fn not_loaded(&self) -> Vec<NotLoaded> {
        self.live()
            .not_loaded
            .iter()
            .map(|(name, reason)| NotLoaded { name: name.clone(), reason: reason.clone() })
            .collect()
    }

    /// One rule's summary and stored bytes.
    pub fn get(&self, name: &str) -> Result<(RuleSummary, Vec<u8>), StoreError> {
        check_rule_name(name)?;
        let live = self.live();
        let summary = live.rules.get(name).cloned().ok_or_else(|| StoreError::NotFound(name.into()))?;
        let bytes = self.read(name)?;
        Ok((summary, bytes))
    }

    /// Runs `f` on the live engine.
    pub fn with_engine<R>(&self, f: impl FnOnce(&mut Engine) -> R) -> R {
        f(&mut self.live().engine)
    }

    /// Runs `f` on the live engine and its counters: the event stream
    /// evaluates here, holding the tenant's lock, so a rule change lands
    /// between two events, never during one.
    pub fn with_engine_and_stats<R>(&self, f: impl FnOnce(&mut Engine, &mut Stats) -> R) -> R {
        let live = &mut *self.live();
        f(&mut live.engine, &mut live.stats)
    }

    /// Checks `bytes` as rule `name` and, if it loads and fits with the
    /// tenant's other rules, stores it and makes it live.
    pub fn put(&self, name: &str, bytes: &[u8]) -> Result<Put, StoreError> {
        check_rule_name(name)?;
        let limits = &self.config.limits;
        if bytes.len() > limits.max_rule_bytes {
            return Err(StoreError::TooLarge { size: bytes.len(), limit: limits.max_rule_bytes });
        }
        // Compiled before taking the lock: the tenant's engine keeps
        // running (and answering) while a large component compiles.
        let new = load(&self.loader, name, bytes).map_err(StoreError::Invalid);
        let mut live = self.live_for_change()?;
        let created = !live.rules.contains_key(name)
            && !live.not_loaded.contains_key(name)
            && !live.quarantined.contains_key(name)
            && !live.disabled.contains_key(name);
        let stored = live.rules.len() + live.not_loaded.len() + live.quarantined.len() + live.disabled.len();
        if created && stored >= limits.max_rules {
            return Err(StoreError::TooManyRules { limit: limits.max_rules });
        }
        let new = new?;
        let mut rules = self.load_others(&live, name)?;
        rules.push((name.to_owned(), bytes.len(), new));
        let (engine, mut summaries) = build(rules).map_err(StoreError::Invalid)?;
        // A disabled rule's new version is checked exactly as a live one,
        // stored, and stays disabled (so do uploads the tenants file leaves
        // out): the live engine is not touched.
        let stays_off = match live.disabled.get(name) {
            _ if !self.config.allows(name) => Some(disabled_by_config(name, bytes)),
            Some(off) => Some(Disabled {
                uuid: Some(summaries[name].uuid.clone()),
                sha256: Some(summaries[name].sha256.clone()),
                ..off.clone()
            }),
            None => None,
        };
        if let Some(mut off) = stays_off {
            if off.who.is_some() {
                write_json_marker(&self.disabled_dir, name, &off)?;
            } else {
                off.uuid = Some(summaries[name].uuid.clone());
            }
            self.write(name, bytes)?;
            self.release(&mut live, name)?;
            live.not_loaded.remove(name);
            live.disabled.insert(name.into(), off.clone());
            let mut rule = summaries[name].clone();
            rule.faults = 0;
            return Ok(Put { created, rule, disabled: Some(off) });
        }
        self.write(name, bytes)?;
        // A new upload is a new version: its fault count starts at zero,
        // and it is released from quarantine.
        for (other, summary) in &mut summaries {
            if other != name {
                summary.faults = live.rules.get(other).map_or(0, |old| old.faults);
            }
        }
        self.release(&mut live, name)?;
        let rule = summaries[name].clone();
        live.not_loaded.remove(name);
        live.engine = engine;
        live.retire_stats();
        live.rules = summaries;
        Ok(Put { created, rule, disabled: None })
    }

    /// Removes rule `name` from the live set and from disk; returns what
    /// was live (`None` for a rule that had not loaded).
    pub fn delete(&self, name: &str) -> Result<Option<RuleSummary>, StoreError> {
        check_rule_name(name)?;
        let mut live = self.live_for_change()?;
        if !live.rules.contains_key(name)
            && !live.not_loaded.contains_key(name)
            && !live.quarantined.contains_key(name)
            && !live.disabled.contains_key(name)
        {
            return Err(StoreError::NotFound(name.into()));
        }
        let rules = self.load_others(&live, name)?;
        let (engine, mut summaries) = build(rules).map_err(StoreError::Invalid)?;
        for (other, summary) in &mut summaries {
            summary.faults = live.rules.get(other).map_or(0, |old| old.faults);
        }
        let path = self.dir.join(name);
        std::fs::remove_file(&path).map_err(|source| io(&path, source))?;
        self.release(&mut live, name)?;
        if live.disabled.remove(name).is_some() {
            remove_marker(&self.disabled_dir, name)?;
        }
        let removed = live.rules.get(name).cloned();
        live.not_loaded.remove(name);
        live.engine = engine;
        live.retire_stats();
        // A rule uploaded again under this name starts counting afresh.
        live.past.rules.remove(name);
        live.rules = summaries;
        Ok(removed)
    }

    /// Evaluates posted events (NDJSON or a JSON array) against the
    /// tenant's live rules, or only rule `only`, and returns the alerts they
    /// would raise. Nothing is written, and the live engine is not used: a
    /// fresh one is built from the same files, so a stateful rule's live
    /// instance never sees dry-run events.
    pub fn dry_run(&self, only: Option<&str>, events: Vec<u8>) -> Result<DryRun, StoreError> {
        let engine = {
            let live = self.live();
            let names: Vec<&String> = match only {
                Some(name) => {
                    check_rule_name(name)?;
                    if live.disabled.contains_key(name) {
                        return Err(StoreError::Conflict(format!(
                            "rule {name:?} is disabled; enable it to dry-run it"
                        )));
                    }
                    vec![live.rules.get_key_value(name).ok_or_else(|| StoreError::NotFound(name.into()))?.0]
                }
                None => live.rules.keys().collect(),
            };
            let mut rules = Vec::new();
            for name in names {
                let bytes = self.read(name)?;
                let rule = load(&self.loader, name, &bytes).map_err(StoreError::Invalid)?;
                rules.push((name.clone(), bytes.len(), rule));
            }
            build(rules).map_err(StoreError::Invalid)?.0
        };
        dry_run(engine, events)
    }

    /// Ends `name`'s quarantine, marker and all (an upload or a delete).
    fn release(&self, live: &mut Live, name: &str) -> Result<(), StoreError> {
        if live.quarantined.remove(name).is_some() {
            let marker = self.quarantine_dir.join(name);
            match std::fs::remove_file(&marker) {
                Ok(()) => {}
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => return Err(io(&marker, source)),
            }
        }
        Ok(())
    }

    /// An engine of every live rule but `except`, loaded again (from the
    /// compiled-code cache), the others' fault counts kept.
    fn rebuild_without(
        &self,
        live: &Live,
        except: &str,
    ) -> Result<(Engine, BTreeMap<String, RuleSummary>), StoreError> {
        let rules = self.load_others(live, except)?;
        let (engine, mut summaries) = build(rules).map_err(StoreError::Invalid)?;
        for (other, summary) in &mut summaries {
            summary.faults = live.rules.get(other).map_or(0, |old| old.faults);
        }
        Ok((engine, summaries))
    }

    /// Every live rule but `except`, loaded again from disk.
    fn load_others(&self, live: &Live, except: &str) -> Result<Vec<(String, usize, LoadedRule)>, StoreError> {
        let mut rules = Vec::new();
        for name in live.rules.keys().filter(|name| *name != except) {
            let bytes = self.read(name)?;
            let rule = load(&self.loader, name, &bytes).map_err(StoreError::Invalid)?;
            rules.push((name.clone(), bytes.len(), rule));
        }
        Ok(rules)
    }

    fn read(&self, name: &str) -> Result<Vec<u8>, StoreError> {
        let path = self.dir.join(name);
        std::fs::read(&path).map_err(|source| io(&path, source))
    }

    /// Writes aside, syncs, and renames in: a reader (or a restart) sees
    /// the old file or the new one, never part of one.
    fn write(&self, name: &str, bytes: &[u8]) -> Result<(), StoreError> {
        let path = self.dir.join(name);
        let mut file = tempfile::Builder::new()
            .prefix(TEMPORARY_PREFIX)
            .tempfile_in(&self.dir)
            .map_err(|source| io(&self.dir, source))?;
        file.write_all(bytes).and_then(|()| file.as_file().sync_all()).map_err(|source| io(&path, source))?;
        file.persist(&path).map_err(|err| io(&path, err.error))?;
        Ok(())
    }
}

/// The quarantine markers in `dir` (absent: none). A marker that does not
/// parse still quarantines its rule: erring on the side of not running a
/// rule that faulted.
fn read_quarantine(dir: &Path) -> BTreeMap<String, Quarantined> {
    read_markers(dir, |name| Quarantined {
        name: name.into(),
        uuid: String::new(),
        sha256: String::new(),
        faults: 0,
        reason: "quarantined (the marker did not parse)".into(),
    })
}

/// The API's disable markers in `dir` (absent: none). A marker that does
/// not parse still disables its rule.
fn read_disabled(dir: &Path) -> BTreeMap<String, Disabled> {
    read_markers(dir, |name| Disabled {
        name: name.into(),
        uuid: None,
        sha256: None,
        who: None,
        time: None,
        reason: format!("{DISABLED_BY_API} (the marker did not parse)"),
    })
}

/// The JSON markers in `dir`, by rule name; `unreadable` stands for one
/// that does not parse (its rule stays marked).
fn read_markers<T: serde::de::DeserializeOwned>(dir: &Path, unreadable: impl Fn(&str) -> T) -> BTreeMap<String, T> {
    let mut found = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir(dir) else { return found };
    for entry in entries.flatten() {
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else { continue };
        if check_rule_name(&name).is_err() {
            continue;
        }
        let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
        let marker = serde_json::from_str(&text).unwrap_or_else(|_| unreadable(&name));
        found.insert(name, marker);
    }
    found
}

fn disabled_by_config(name: &str, bytes: &[u8]) -> Disabled {
    Disabled {
        name: name.into(),
        uuid: None,
        sha256: Some(content_hash(bytes)),
        who: None,
        time: None,
        reason: DISABLED_BY_CONFIG.into(),
    }
}

fn content_hash(bytes: &[u8]) -> String {
    use sha2::Digest;
    format!("sha256:{}", crate::sandbox::hex(&sha2::Sha256::digest(bytes)))
}

/// Writes `value` as `dir/name`, aside then renamed in.
fn write_json_marker(dir: &Path, name: &str, value: &impl Serialize) -> Result<(), StoreError> {
    std::fs::create_dir_all(dir).map_err(|source| io(dir, source))?;
    let path = dir.join(name);
    let json = serde_json::to_vec(value).expect("a marker serializes");
    let mut file =
        tempfile::Builder::new().prefix(TEMPORARY_PREFIX).tempfile_in(dir).map_err(|source| io(dir, source))?;
    file.write_all(&json).and_then(|()| file.as_file().sync_all()).map_err(|source| io(&path, source))?;
    file.persist(&path).map_err(|err| io(&path, err.error))?;
    Ok(())
}

fn remove_marker(dir: &Path, name: &str) -> Result<(), StoreError> {
    let marker = dir.join(name);
    match std::fs::remove_file(&marker) {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(io(&marker, source)),
    }
}

fn write_marker(dir: &Path, quarantined: &Quarantined) -> Result<(), StoreError> {
    std::fs::create_dir_all(dir).map_err(|source| io(dir, source))?;
    let path = dir.join(&quarantined.name);
    let json = serde_json::to_vec(quarantined).expect("a quarantine marker serializes");
    std::fs::write(&path, json).map_err(|source| io(&path, source))
}

/// Uploads are written under this prefix, then renamed; a rule name cannot
/// start with a dot, so the two never mix.
const TEMPORARY_PREFIX: &str = ".upload-";

fn io(path: &Path, source: std::io::Error) -> StoreError {
    StoreError::Io { context: path.display().to_string(), source }
}

/// The file name a rule is loaded (and reported) under: its name and the
/// extension of its kind, without the state directory, so messages and
/// alerts never reveal where the server keeps its files.
fn display_name(name: &str, bytes: &[u8]) -> PathBuf {
    let extension = if bytes.starts_with(b"\0asm") { "wasm" } else { "yaml" };
    PathBuf::from(format!("{name}.{extension}"))
}

fn load(loader: &RuleLoader, name: &str, bytes: &[u8]) -> Result<LoadedRule, String> {
    loader.load_bytes(&display_name(name, bytes), bytes).map_err(|err| err.to_string())
}

/// Builds an engine from loaded rules (name, size, rule), and the
/// summaries of what it runs.
fn build(rules: Vec<(String, usize, LoadedRule)>) -> Result<(Engine, BTreeMap<String, RuleSummary>), String> {
    let mut components: Vec<RuleComponent> = Vec::new();
    let mut declarative: Vec<DeclarativeRule> = Vec::new();
    let mut sizes = BTreeMap::new();
    for (name, size, rule) in rules {
        sizes.insert(name, size);
        match rule {
            LoadedRule::Component(rule) => components.push(rule),
            LoadedRule::Declarative(rule) => declarative.push(*rule),
        }
    }
    let mut engine = Engine::with_declarative(components, declarative).map_err(|err| err.to_string())?;
    // For the metrics' latency histograms (two clock reads per rule call).
    engine.set_timing(true);
    let summaries = engine
        .infos()
        .iter()
        .map(|info| {
            let name = info.file.file_stem().and_then(|s| s.to_str()).unwrap_or_default().to_owned();
            let summary = RuleSummary {
                name: name.clone(),
                kind: info.kind,
                title: info.name.clone(),
                uuid: info.uuid.clone(),
                version: info.version.clone(),
                severity: info.severity,
                sha256: format!("sha256:{}", info.sha256),
                bytes: sizes.get(&name).copied().unwrap_or_default(),
                faults: 0,
            };
            (name, summary)
        })
        .collect();
    Ok((engine, summaries))
}

/// Collects a run's notices as text.
#[derive(Default)]
struct Collect {
    faults: Vec<String>,
    malformed: Vec<String>,
}

impl Observer for Collect {
    fn notice(&mut self, notice: &Notice<'_>) {
        match notice {
            Notice::Fault { .. } => self.faults.push(notice.to_string()),
            Notice::Malformed { .. } | Notice::RepairedUtf8 { .. } => self.malformed.push(notice.to_string()),
            Notice::Rules(_) => {}
        }
    }
}

fn dry_run(mut engine: Engine, events: Vec<u8>) -> Result<DryRun, StoreError> {
    let mut source = ReplaySource::from_reader("dry-run", std::io::Cursor::new(events), None);
    let mut out = Vec::new();
    let mut stats = Stats::default();
    let mut observer = Collect::default();
    let result = pipeline::run(
        &mut source,
        &mut engine,
        &mut JsonLinesSink::new(&mut out),
        &mut stats,
        &mut observer,
        &pipeline::Options::default(),
    );
    result.map_err(|err| StoreError::Invalid(err.to_string()))?;
    let alerts = out
        .split(|b| *b == b'\n')
        .filter(|line| !line.is_empty())
        .map(|line| serde_json::from_slice(line).expect("the sink writes JSON lines"))
        .collect();
    Ok(DryRun { events: stats.events, alerts, faults: observer.faults, malformed: observer.malformed })
}
