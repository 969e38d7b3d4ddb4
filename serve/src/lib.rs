//! `dac serve`: many tenants' rules in one process, managed over HTTP.
//!
//! - `config` — the tenants file (TOML, [`ServeConfig`]): each tenant's
//!   id, event scope, limits, alert collection and token hash; the admin
//!   token's hash;
//! - `names` — tenant ids and rule names ([`RuleName`]), checked once;
//! - `token` — API tokens: generated at random, stored as SHA-256,
//!   compared in constant time;
//! - `tenant` — one [`Tenant`]'s rules: a directory of rule files, its own
//!   sandbox and engine; every change is one `dac_engine::Change`, checked
//!   before it goes live;
//! - `audit` — the append-only [`AuditLog`] of every change;
//! - `service` — the [`Service`]: the tenants, the audit log, reloads of
//!   the tenants file;
//! - `api` — the HTTP API (axum, [`router`]) and its bearer-token
//!   authorization;
//! - `stream` — one change stream per watched collection ([`Streams`]),
//!   fanned out to the tenants whose scope takes each event through the
//!   engine's one delivery loop; alerts to each tenant's collection;
//! - `status`, `metrics` — each stream's counters, and the Prometheus
//!   endpoint's text: per tenant and rule, and per stream.
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
//! streams ([`Streams`]) feed each tenant's engine through it. Its format
//! and API are documented in docs/serve.md.
//!
//! The tenants file can be read again while the server runs
//! ([`Service::reload`]: `POST /v1/tenants/reload`, or SIGHUP). The new file
//! is checked whole first; then the tenants it adds are opened, those it
//! changes are opened again from their directories (their old instance
//! retired: a change still reaching it is refused, to be sent again), and
//! the tenant map is replaced at once. The streams pick the new map up
//! between two events ([`Service::generation`]).

mod api;
mod audit;
mod background;
mod batch;
mod config;
mod metrics;
mod names;
mod service;
mod status;
mod stream;
mod tenant;
mod token;

pub use api::{router, serve};
pub use audit::{AuditAction, AuditEntry, AuditError, AuditLog, AuditResult, Numbered, Page};
pub use batch::{quarantine, Route, TenantBatch, BATCH_EVENTS};
pub use config::{
    CollectionScope, ConfigError, FieldScope, HttpLimits, Scope, ServeConfig, TenantConfig, TenantLimits,
};
pub use metrics::{render as render_metrics, Scrape, CONTENT_TYPE as METRICS_CONTENT_TYPE};
pub use names::{check_tenant_id, NameError, RuleName};
pub use service::{AlertsError, HttpCounters, Principal, ReloadError, Service, ServiceError, TenantChange};
pub use status::{StreamSnapshot, StreamStatus};
pub use stream::{ScopeIndex, StreamError, StreamSettings, Streams};
pub use tenant::{
    Delivered, Disabled, DryRun, NotLoaded, OpenError, Put, Quarantined, RuleFault, RuleState, RuleSummary, StoreError,
    Switched, Tenant, TenantCounters, DISABLED_BY_API, DISABLED_BY_CONFIG,
};
pub use token::{generate as generate_token, hash as hash_token, NewToken};
