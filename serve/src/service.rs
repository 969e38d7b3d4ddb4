//! The server without HTTP: the tenants, their rules, the audit log and
//! the streams' counters. The API calls it; the event streams feed each
//! tenant's engine through it.

use crate::audit::{self, AuditAction, AuditError, AuditLog, AuditResult};
use crate::config::{self, ServeConfig};
use crate::status::{StreamSnapshot, StreamStatus};
use crate::tenant::{self, Tenant};
use crate::token;
use dac_engine::{Cancel, Compiler, ComponentCache, FieldMapping, LogGroup, Sandbox};
use dac_mongo::Connection;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};

/// Who made a request, once its token is checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    Admin,
    Tenant(String),
}

impl Principal {
    /// As the audit log names it.
    pub fn audit_name(&self) -> String {
        match self {
            Principal::Admin => "admin".into(),
            Principal::Tenant(id) => format!("tenant:{id}"),
        }
    }
}

/// What runs after a reload changed the tenants (the streams start
/// watching the new collections).
pub type ReloadHook = Box<dyn Fn() -> Result<(), Box<dyn std::error::Error + Send + Sync>> + Send + Sync>;

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("--state-dir {dir}: {source}")]
    StateDir {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Audit(#[from] AuditError),
    #[error(transparent)]
    Tenant(#[from] tenant::OpenError),
}

/// The tenants, their rules and the audit log.
pub struct Service {
    /// The tenants file as last applied, and its tenants: replaced whole
    /// by a reload.
    registry: RwLock<Arc<Registry>>,
    /// Bumped by every reload that changed something.
    generation: AtomicU64,
    /// One reload at a time.
    reloading: Mutex<()>,
    /// The tenants file a reload reads, when the server was started from one.
    config_file: OnceLock<PathBuf>,
    /// Called after a reload changed the tenants (the streams start
    /// watching the new collections).
    on_reload: OnceLock<ReloadHook>,
    opener: Opener,
    audit: AuditLog,
    /// Where the tenants' alerts are read back, once streams run.
    alerts: OnceLock<(Connection, String)>,
    /// The running streams' counters, for the metrics endpoint.
    streams: Mutex<Vec<Arc<StreamStatus>>>,
    /// The HTTP server's own counters.
    http: HttpCounters,
}

/// What the HTTP server refused before any request was read.
#[derive(Debug, Default)]
pub struct HttpCounters {
    /// Connections closed as they arrived: `max_connections` were open.
    pub connections_refused: AtomicU64,
}

struct Registry {
    config: Arc<ServeConfig>,
    tenants: BTreeMap<String, Arc<Tenant>>,
}

/// What opening a tenant takes.
struct Opener {
    state_dir: PathBuf,
    mapping: FieldMapping,
    cache: ComponentCache,
    /// One wasmtime engine (and deadline clock thread) per distinct engine
    /// configuration, not per tenant.
    engines: Mutex<Vec<Sandbox>>,
    /// Cancelled when the server stops: every tenant's compilations end.
    stopping: Cancel,
}

impl Opener {
    fn open(&self, tenant: &config::TenantConfig) -> Result<Tenant, tenant::OpenError> {
        let limits = tenant.limits.sandbox();
        let sandbox = {
            let mut engines = self.engines.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            match engines.iter().find_map(|shared| shared.with_limits(limits.clone())) {
                Some(sandbox) => sandbox,
                None => {
                    // Compiled on the background thread that asked, alone.
                    let sandbox = Sandbox::with_compile_threads(limits, self.cache.clone(), false).map_err(|err| {
                        tenant::OpenError::Sandbox { tenant: tenant.id.clone(), reason: format!("{err:#}") }
                    })?;
                    engines.push(sandbox.with_limits(sandbox.limits().clone()).expect("the same limits"));
                    sandbox
                }
            }
        };
        // One log rate limit for all the tenant's rules, dry runs included.
        let group = Arc::new(LogGroup::new(tenant.id.clone(), tenant.limits.log_lines_per_second));
        Tenant::open(
            tenant.clone(),
            &self.state_dir,
            sandbox.with_log_group(group),
            self.mapping.clone(),
            self.stopping.clone(),
        )
    }
}

/// Why the tenants file was not applied again.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("this server was not started from a tenants file")]
    NoFile,
    /// The new file is not valid; the message is located (`tenants.toml:
    /// tenant[1] "acme": …`) and names the file without its directory.
    #[error("{0}")]
    Invalid(String),
    #[error("{0} cannot change while the server runs; restart it to apply the file")]
    NeedsRestart(&'static str),
    /// A tenant's directory could not be opened (logged with its path).
    #[error("tenant {0} could not be opened; see the server's log")]
    Open(String),
    /// The tenants are changed, but a new collection is not watched.
    #[error("the tenants were changed, but {0}")]
    Streams(String),
}

/// One tenant's change by a reload.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TenantChange {
    /// `tenant.add`, `tenant.remove` or `tenant.update`.
    pub action: AuditAction,
    pub tenant: String,
    /// For an update, the keys that changed (`token_sha256, limits`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keys: Option<String>,
}

/// Why a tenant's alerts could not be read.
#[derive(Debug, thiserror::Error)]
pub enum AlertsError {
    #[error("this server reads no events, so it has no alerts: start dac serve with --mongodb-uri")]
    NotConnected,
    #[error("reading alerts from {collection}: {message}")]
    Database { collection: String, message: String },
}

impl Service {
    /// Opens the state directory (creating it) and loads every tenant's
    /// rules. Sigma rules' fields are mapped with `mapping`; components are
    /// compiled by `compiler` (`dac serve` compiles in a child process, so
    /// that each tenant's `max_cpu_ms` and `max_memory_bytes` hold and a
    /// compilation stops when its client goes away or the server stops).
    pub fn open(
        config: ServeConfig,
        state_dir: &Path,
        mapping: FieldMapping,
        compiler: Compiler,
    ) -> Result<Service, ServiceError> {
        std::fs::create_dir_all(state_dir)
            .map_err(|source| ServiceError::StateDir { dir: state_dir.to_owned(), source })?;
        let audit = AuditLog::open(&state_dir.join("audit.jsonl"))?;
        let cache = ComponentCache::new(Some(state_dir.join("cache")))
            .with_max_bytes(config.max_cache_bytes)
            .with_compiler(compiler);
        // A server killed while compiling left its compiler's directory.
        cache.remove_leftovers();
        // One wasmtime engine (and deadline clock thread) per distinct
        // engine configuration, not per tenant: a hundred tenants with
        // deadlines are one clock, not a hundred.
        let opener = Opener {
            state_dir: state_dir.to_owned(),
            mapping,
            cache,
            engines: Mutex::new(Vec::new()),
            stopping: Cancel::default(),
        };
        let mut tenants = BTreeMap::new();
        for tenant in &config.tenants {
            tenants.insert(tenant.id.clone(), Arc::new(opener.open(tenant)?));
        }
        Ok(Service {
            registry: RwLock::new(Arc::new(Registry { config: Arc::new(config), tenants })),
            generation: AtomicU64::new(0),
            reloading: Mutex::new(()),
            config_file: OnceLock::new(),
            on_reload: OnceLock::new(),
            opener,
            audit,
            alerts: OnceLock::new(),
            streams: Mutex::new(Vec::new()),
            http: HttpCounters::default(),
        })
    }

    /// Cancelled when the server stops ([`Service::stop_work`]); a
    /// request's own token is a [`Cancel::child`] of it.
    pub fn stopping(&self) -> &Cancel {
        &self.opener.stopping
    }

    /// Stops the work in progress that can stop early: compilations (their
    /// uploads fail, with 503).
    pub fn stop_work(&self) {
        self.opener.stopping.cancel();
    }

    fn registry(&self) -> Arc<Registry> {
        self.registry.read().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }

    /// The tenants file as last applied.
    pub fn config(&self) -> Arc<ServeConfig> {
        self.registry().config.clone()
    }

    /// The tenants, by id.
    pub fn tenants(&self) -> Vec<Arc<Tenant>> {
        self.registry().tenants.values().cloned().collect()
    }

    pub fn tenant(&self, id: &str) -> Option<Arc<Tenant>> {
        self.registry().tenants.get(id).cloned()
    }

    /// Changes each time a reload changes the tenants: the streams compare
    /// it between events to pick the new tenants up.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The file [`Service::reload_file`] reads (`dac serve --config`).
    pub fn set_config_file(&self, file: PathBuf) {
        let _ = self.config_file.set(file);
    }

    /// Run after each reload that changed the tenants (once, by the streams).
    pub fn on_reload(&self, hook: ReloadHook) {
        let _ = self.on_reload.set(hook);
    }

    /// Reads the tenants file again and applies it ([`Service::reload`]);
    /// `who` is audited (`admin`, or `dac` for SIGHUP).
    pub fn reload_file(&self, who: &str) -> Result<Vec<TenantChange>, ReloadError> {
        let file = self.config_file.get().ok_or(ReloadError::NoFile)?;
        // Errors name the file without its directory: they are answered
        // over HTTP.
        let shown = Path::new(file.file_name().unwrap_or(file.as_os_str()));
        let parsed = std::fs::read_to_string(file)
            .map_err(|err| format!("{}: {}", shown.display(), err.kind()))
            .and_then(|text| ServeConfig::parse(shown, &text).map_err(|err| err.to_string()));
        match parsed {
            Ok(config) => self.reload(config, who),
            Err(message) => {
                self.audit_reload(who, "", AuditAction::TenantsReload, AuditResult::Refused, Some(message.clone()));
                Err(ReloadError::Invalid(message))
            }
        }
    }

    /// Applies a new, validated, tenants file: opens the tenants it adds,
    /// opens again those whose settings changed (token, scope, alert
    /// collection, limits, `enabled_rules`), drops those it removes (their
    /// rules stay on disk), and swaps the tenant map at once. Each change
    /// is audited. Nothing changes if a tenant cannot be opened, or if the
    /// file changes `max_request_bytes` (the HTTP server's body limit is
    /// set at start).
    /// The HTTP server's counters.
    pub fn http_counters(&self) -> &HttpCounters {
        &self.http
    }

    pub fn reload(&self, config: ServeConfig, who: &str) -> Result<Vec<TenantChange>, ReloadError> {
        let _one = self.reloading.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let old = self.registry();
        let restart = if config.max_request_bytes != old.config.max_request_bytes {
            Some("max_request_bytes")
        } else if config.http != old.config.http {
            Some("[http]")
        } else if config.max_cache_bytes != old.config.max_cache_bytes {
            Some("max_cache_bytes")
        } else {
            None
        };
        if let Some(what) = restart {
            let err = ReloadError::NeedsRestart(what);
            self.audit_reload(who, "", AuditAction::TenantsReload, AuditResult::Refused, Some(err.to_string()));
            return Err(err);
        }
        let mut changes = Vec::new();
        let mut retiring = Vec::new();
        let mut tenants = BTreeMap::new();
        for tenant in &config.tenants {
            let keys = match old.tenants.get(&tenant.id) {
                None => None,
                Some(current) => match changed_keys(&current.config, tenant) {
                    keys if keys.is_empty() => {
                        tenants.insert(tenant.id.clone(), current.clone());
                        continue;
                    }
                    keys => Some(keys),
                },
            };
            // An updated tenant's old instance is locked before its
            // directory is read again, so no change lands in between; it is
            // retired only if the whole reload goes through.
            if let Some(current) = old.tenants.get(&tenant.id) {
                retiring.push(current.begin_retire());
            }
            let opened = self.opener.open(tenant).map_err(|err| {
                tracing::error!("reloading the tenants file: {err}");
                ReloadError::Open(tenant.id.clone())
            });
            let opened = match opened {
                Ok(opened) => opened,
                Err(err) => {
                    let reason = Some(err.to_string());
                    self.audit_reload(who, &tenant.id, AuditAction::TenantsReload, AuditResult::Refused, reason);
                    return Err(err);
                }
            };
            if keys.is_some() {
                let replaced = retiring.last().expect("an updated tenant is retiring");
                opened.carry_counters(&replaced.counters());
            }
            tenants.insert(tenant.id.clone(), Arc::new(opened));
            let action = if keys.is_some() { AuditAction::TenantUpdate } else { AuditAction::TenantAdd };
            changes.push(TenantChange { action, tenant: tenant.id.clone(), keys });
        }
        for (id, current) in &old.tenants {
            if !tenants.contains_key(id) {
                retiring.push(current.begin_retire());
                changes.push(TenantChange { action: AuditAction::TenantRemove, tenant: id.clone(), keys: None });
            }
        }
        let global = config.admin_token_sha256 != old.config.admin_token_sha256
            || config.quarantine_after_faults != old.config.quarantine_after_faults;
        *self.registry.write().unwrap_or_else(|poisoned| poisoned.into_inner()) =
            Arc::new(Registry { config: Arc::new(config), tenants });
        for retired in retiring {
            retired.commit();
        }
        if changes.is_empty() && !global {
            return Ok(changes);
        }
        self.generation.fetch_add(1, Ordering::AcqRel);
        for change in &changes {
            let result = match change.action {
                AuditAction::TenantAdd => AuditResult::Added,
                AuditAction::TenantRemove => AuditResult::Removed,
                _ => AuditResult::Updated,
            };
            tracing::info!("tenants file reloaded: tenant {} {result}", change.tenant);
            self.audit_reload(who, &change.tenant, change.action, result, change.keys.clone());
        }
        if global {
            tracing::info!("tenants file reloaded: the admin token or quarantine_after_faults changed");
            self.audit_reload(
                who,
                "",
                AuditAction::TenantsReload,
                AuditResult::Updated,
                Some("server settings".into()),
            );
        }
        if let Some(hook) = self.on_reload.get() {
            hook().map_err(|err| ReloadError::Streams(err.to_string()))?;
        }
        Ok(changes)
    }

    fn audit_reload(&self, who: &str, tenant: &str, action: AuditAction, result: AuditResult, reason: Option<String>) {
        let entry = audit::AuditEntry {
            time: String::new(),
            who: who.into(),
            action,
            tenant: tenant.into(),
            rule: String::new(),
            sha256: None,
            result,
            reason,
        };
        if let Err(err) = self.audit.record(entry) {
            tracing::error!("{err}");
        }
    }

    pub fn audit(&self) -> &AuditLog {
        &self.audit
    }

    /// Makes a started stream's counters visible to [`Service::streams`].
    pub fn register_stream(&self, status: Arc<StreamStatus>) {
        self.streams.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).push(status);
    }

    /// The running streams' counters.
    pub fn streams(&self) -> Vec<StreamSnapshot> {
        let streams = self.streams.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        streams.iter().map(|status| status.snapshot()).collect()
    }

    /// Makes the tenants' alert collections of `database` readable through
    /// [`Service::recent_alerts`]; called once, when the streams start.
    pub fn attach_alerts(&self, connection: Connection, database: String) {
        let _ = self.alerts.set((connection, database));
    }

    /// The newest `limit` alerts of `tenant`'s own alert collection, by
    /// detection time, as relaxed Extended JSON. Blocks: call it off the
    /// async workers.
    pub fn recent_alerts(&self, tenant: &Tenant, limit: u32) -> Result<Vec<serde_json::Value>, AlertsError> {
        let (connection, database) = self.alerts.get().ok_or(AlertsError::NotConnected)?;
        let name = &tenant.config.alert_collection;
        let collection = connection.client().database(database).collection::<mongodb::bson::Document>(name);
        let failed =
            |err: mongodb::error::Error| AlertsError::Database { collection: name.clone(), message: err.to_string() };
        connection.block_on(async {
            use futures_util::TryStreamExt;
            let find = collection
                .find(mongodb::bson::doc! {})
                .sort(mongodb::bson::doc! { "detected_at": -1, "_id": 1 })
                .limit(i64::from(limit));
            let documents: Vec<mongodb::bson::Document> =
                find.await.map_err(failed)?.try_collect().await.map_err(failed)?;
            Ok(documents
                .into_iter()
                .map(|document| mongodb::bson::Bson::Document(document).into_relaxed_extjson())
                .collect())
        })
    }

    /// The principal a bearer token belongs to, if any. Every configured
    /// hash is compared, in constant time, whichever matches.
    pub fn authenticate(&self, token: &str) -> Option<Principal> {
        let presented = token::hash(token);
        let mut found = None;
        let config = self.config();
        if token::matches(&presented, &config.admin_token_sha256) {
            found = Some(Principal::Admin);
        }
        for tenant in &config.tenants {
            if token::matches(&presented, &tenant.token_sha256) {
                found = Some(Principal::Tenant(tenant.id.clone()));
            }
        }
        found
    }
}

/// The keys of a tenant's table that differ, comma-separated.
fn changed_keys(old: &config::TenantConfig, new: &config::TenantConfig) -> String {
    let mut keys = Vec::new();
    if old.token_sha256 != new.token_sha256 {
        keys.push("token_sha256");
    }
    if old.scope != new.scope {
        keys.push("scope");
    }
    if old.alert_collection != new.alert_collection {
        keys.push("alert_collection");
    }
    if old.limits != new.limits {
        keys.push("limits");
    }
    if old.enabled_rules != new.enabled_rules {
        keys.push("enabled_rules");
    }
    keys.join(", ")
}
