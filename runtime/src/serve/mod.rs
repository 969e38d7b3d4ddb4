//! `dac serve`: many tenants' rules in one process, managed over HTTP.
//!
//! - [`config`] — the tenants file (TOML): each tenant's id, event scope,
//!   limits, alert collection and token hash; the admin token's hash;
//! - [`token`] — API tokens: generated at random, stored as SHA-256,
//!   compared in constant time;
//! - [`tenant`] — one tenant's rules: a directory of rule files, its own
//!   sandbox and engine, changes checked before they go live;
//! - [`audit`] — the append-only log of every change;
//! - [`api`] — the HTTP API (axum) and its bearer-token authorization;
//! - [`stream`] — one change stream per watched collection, fanned out to
//!   the tenants whose scope takes each event; alerts to each tenant's
//!   collection.
//!
//! The state directory holds everything the server writes:
//!
//! ```text
//! STATE/tenants/ID/rules/NAME   one file per rule (component or YAML)
//! STATE/tenants/ID/quarantine/NAME   a quarantined rule's marker (JSON)
//! STATE/tenants/ID/disabled/NAME     a rule disabled through the API (JSON)
//! STATE/audit.jsonl             the audit log
//! STATE/cache/                  compiled components, by content hash
//! ```
//!
//! [`Service`] is the server without HTTP: the API calls it, and the event
//! streams ([`stream::Streams`]) feed each tenant's engine through it.

pub mod api;
pub mod audit;
pub mod config;
pub mod stream;
pub mod tenant;
pub mod token;

use crate::mongo::Connection;
use crate::{ComponentCache, Sandbox};
use audit::AuditLog;
use config::ServeConfig;
use dac_detect::FieldMapping;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, OnceLock};
use tenant::Tenant;

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

/// The tenants, their rules and the audit log.
pub struct Service {
    config: ServeConfig,
    tenants: BTreeMap<String, Arc<Tenant>>,
    audit: AuditLog,
    /// Where the tenants' alerts are read back, once streams run.
    alerts: OnceLock<(Connection, String)>,
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
    /// rules. Sigma rules' fields are mapped with `mapping`.
    pub fn open(config: ServeConfig, state_dir: &Path, mapping: FieldMapping) -> Result<Service, String> {
        std::fs::create_dir_all(state_dir).map_err(|err| format!("--state-dir {}: {err}", state_dir.display()))?;
        let audit = AuditLog::open(&state_dir.join("audit.jsonl")).map_err(|err| err.to_string())?;
        let cache = ComponentCache::new(Some(state_dir.join("cache")));
        // One wasmtime engine (and deadline clock thread) per distinct
        // engine configuration, not per tenant: a hundred tenants with
        // deadlines are one clock, not a hundred.
        let mut engines: Vec<Sandbox> = Vec::new();
        let mut tenants = BTreeMap::new();
        for tenant in &config.tenants {
            let limits = tenant.limits.sandbox();
            let sandbox = match engines.iter().find_map(|shared| shared.with_limits(limits.clone())) {
                Some(sandbox) => sandbox,
                None => {
                    let sandbox =
                        Sandbox::new(limits, cache.clone()).map_err(|err| format!("tenant {}: {err:#}", tenant.id))?;
                    engines.push(sandbox.with_limits(sandbox.limits().clone()).expect("the same limits"));
                    sandbox
                }
            };
            let opened = Tenant::open(tenant.clone(), state_dir, sandbox, mapping.clone())?;
            tenants.insert(tenant.id.clone(), Arc::new(opened));
        }
        Ok(Service { config, tenants, audit, alerts: OnceLock::new() })
    }

    pub fn config(&self) -> &ServeConfig {
        &self.config
    }

    pub fn tenants(&self) -> impl Iterator<Item = &Arc<Tenant>> {
        self.tenants.values()
    }

    pub fn tenant(&self, id: &str) -> Option<&Arc<Tenant>> {
        self.tenants.get(id)
    }

    pub fn audit(&self) -> &AuditLog {
        &self.audit
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
        if token::matches(&presented, &self.config.admin_token_sha256) {
            found = Some(Principal::Admin);
        }
        for tenant in &self.config.tenants {
            if token::matches(&presented, &tenant.token_sha256) {
                found = Some(Principal::Tenant(tenant.id.clone()));
            }
        }
        found
    }
}
