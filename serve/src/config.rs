//! The tenants file: who may use `dac serve`, what each tenant's events
//! are, and what its rules may consume.
//!
//! Its format, with an example, is in docs/serve.md.
//!
//! Everything is checked when the file is read, and an error names the file
//! and the key (`tenants.toml: tenant[1] "acme": token_sha256: …`), so a
//! server never starts half-configured.

use crate::names::{check_tenant_id, RuleName};
use dac_engine::{Budget, CompileLimits, CorrelationLimits, Limits};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A problem in the tenants file, located by file and key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: {source}")]
    Read {
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// TOML syntax or a key of the wrong type; toml's message gives the
    /// line, column and key.
    #[error("{file}: {message}")]
    Parse { file: PathBuf, message: String },
    #[error("{file}: {key}: {message}")]
    Invalid { file: PathBuf, key: String, message: String },
}

/// The whole file, validated.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// SHA-256 (hex) of the admin token.
    pub admin_token_sha256: [u8; 32],
    /// Faults (traps, deadline, memory) on the event stream after which a
    /// rule is quarantined: taken out of its tenant's engine.
    pub quarantine_after_faults: u32,
    /// Largest request body accepted, any endpoint.
    pub max_request_bytes: usize,
    /// The HTTP server's connection limits and timeouts (`[http]`).
    pub http: HttpLimits,
    /// Bytes of compiled code `STATE/cache` may hold; the least recently
    /// used entries are removed past it. Default 2 GiB.
    pub max_cache_bytes: u64,
    pub tenants: Vec<TenantConfig>,
}

/// What the HTTP server gives a connection, before anyone is known to be
/// a tenant: a few hundred idle or half-sent connections must not take
/// the server from everyone else. Set at start (a reload that changes them
/// is refused).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpLimits {
    /// Connections open at once; further ones are closed at once (counted
    /// in `dac_http_connections_refused_total`).
    pub max_connections: usize,
    /// Time a connection has to send a request's headers, the first one
    /// and each next one on a kept-alive connection; then it is closed.
    pub header_timeout_ms: u64,
    /// Time one request may take, body and answer: a body sent too slowly
    /// is answered 408.
    pub request_timeout_ms: u64,
    /// On shutdown, time the requests in progress have to finish before
    /// their connections are closed.
    pub shutdown_grace_ms: u64,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            max_connections: 512,
            header_timeout_ms: 5_000,
            request_timeout_ms: 60_000,
            shutdown_grace_ms: 10_000,
        }
    }
}

/// One tenant.
#[derive(Debug, Clone, Serialize)]
pub struct TenantConfig {
    pub id: String,
    #[serde(skip)]
    pub token_sha256: [u8; 32],
    pub scope: Scope,
    pub alert_collection: String,
    pub limits: TenantLimits,
    /// When set, only the tenant's rules of these names run; its other
    /// stored rules are disabled, and the API cannot enable them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enabled_rules: Option<Vec<String>>,
}

impl TenantConfig {
    /// Whether the tenants file lets rule `name` run (it does when it has
    /// no `enabled_rules`).
    pub fn allows(&self, name: &str) -> bool {
        self.enabled_rules.as_ref().is_none_or(|names| names.iter().any(|n| n == name))
    }
}

/// Which events are a tenant's.
///
/// A field filter must name a field the ingest path sets (and overwrites),
/// never one the tenant's own event producers could write: the field is
/// what authorizes an event for a tenant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Scope {
    /// Documents of a shared collection whose `field` (a dotted path)
    /// equals `equals`.
    Field(FieldScope),
    /// Every document of the tenant's own collection.
    Collection(CollectionScope),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CollectionScope {
    pub collection: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldScope {
    pub field: String,
    pub equals: String,
    /// The shared collection; `events` when absent.
    #[serde(default = "default_shared_collection")]
    pub collection: String,
}

fn default_shared_collection() -> String {
    "events".into()
}

/// What a tenant's rules may consume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TenantLimits {
    /// Wall-clock budget of one evaluation; 0 turns the deadline off (then
    /// `fuel` must be set).
    pub deadline_ms: u64,
    /// Instruction budget of one evaluation (deterministic).
    pub fuel: Option<u64>,
    /// Linear memory of one rule instance.
    pub memory_mib: usize,
    /// Rules the tenant may have.
    pub max_rules: usize,
    /// Largest rule (component or YAML) the tenant may upload.
    pub max_rule_bytes: usize,
    /// Findings one evaluation may return.
    pub max_findings: usize,
    /// Events one dry run may evaluate.
    pub max_dry_run_events: u64,
    /// Wall-clock time one dry run may take, in milliseconds (checked
    /// between events; one event's evaluation is bounded by the deadline).
    pub max_dry_run_ms: u64,
    /// Bytes of alerts one dry run may return.
    pub max_dry_run_output_bytes: usize,
    /// Dry runs the tenant may run at once.
    pub max_concurrent_dry_runs: usize,
    /// Uploads of the tenant's compiled at once; more are answered 429.
    pub max_concurrent_uploads: usize,
    /// What one component may ask of the compiler, checked before it is
    /// compiled (`[tenant.limits.compile]`).
    pub compile: CompileLimits,
    /// API requests of the tenant's in progress at once; more are answered
    /// 429, so one tenant's burst leaves the server's threads to others.
    pub max_concurrent_requests: usize,
    /// Log lines all the tenant's rules together may write per second (a
    /// burst of this many is allowed), dry runs included; each rule also
    /// has its own limit of 20 per second. Dropped lines are counted.
    pub log_lines_per_second: u32,
    /// What one declarative rule may cost the server to parse and compile
    /// (`[tenant.limits.declarative]`; docs/security.md lists each budget).
    pub declarative: Budget,
    /// Group keys one of the tenant's Sigma correlations may hold, and keys
    /// one of its code rules may hold in its keyed state.
    pub correlation_max_groups: usize,
    /// Group keys all the tenant's correlations may hold together, and keys
    /// all its code rules may hold together: the tenant's quota of
    /// host-held state, for each of the two.
    pub state_max_groups: usize,
    /// Estimated bytes all the tenant's correlations may hold together, and
    /// all its code rules' keyed state.
    pub state_max_bytes: usize,
    /// How late (behind its group's newest) a match may still join a
    /// correlation's window, in milliseconds.
    pub correlation_lateness_ms: u64,
}

impl Default for TenantLimits {
    fn default() -> Self {
        let sandbox = Limits::default();
        TenantLimits {
            deadline_ms: sandbox.deadline.map_or(0, |d| d.as_millis() as u64),
            fuel: None,
            memory_mib: sandbox.memory_bytes >> 20,
            max_rules: 100,
            max_rule_bytes: 8 << 20,
            max_findings: sandbox.max_findings,
            max_dry_run_events: 10_000,
            max_dry_run_ms: 5_000,
            max_dry_run_output_bytes: 4 << 20,
            max_concurrent_dry_runs: 2,
            max_concurrent_requests: 16,
            max_concurrent_uploads: 1,
            compile: sandbox.compile,
            log_lines_per_second: 100,
            declarative: sandbox.declarative,
            correlation_max_groups: 100_000,
            state_max_groups: 1_000_000,
            state_max_bytes: 256 << 20,
            correlation_lateness_ms: sandbox.correlation.lateness_ms as u64,
        }
    }
}

impl TenantLimits {
    /// The sandbox limits the tenant's rules run under.
    pub fn sandbox(&self) -> Limits {
        Limits {
            deadline: (self.deadline_ms > 0).then(|| Duration::from_millis(self.deadline_ms)),
            fuel: self.fuel,
            memory_bytes: self.memory_mib << 20,
            max_findings: self.max_findings,
            declarative: self.declarative,
            compile: self.compile,
            correlation: CorrelationLimits {
                max_groups: self.correlation_max_groups,
                max_bytes: self.state_max_bytes,
                total_groups: self.state_max_groups,
                total_bytes: self.state_max_bytes,
                lateness_ms: i64::try_from(self.correlation_lateness_ms).unwrap_or(i64::MAX),
                ..CorrelationLimits::default()
            },
            state: dac_engine::StateLimits {
                max_keys: self.correlation_max_groups,
                max_bytes: self.state_max_bytes,
                total_keys: self.state_max_groups,
                total_bytes: self.state_max_bytes,
                lateness_ms: i64::try_from(self.correlation_lateness_ms).unwrap_or(i64::MAX),
                ..dac_engine::StateLimits::default()
            },
            ..Limits::default()
        }
    }
}

/// The file as written, before validation.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    admin_token_sha256: String,
    #[serde(default = "default_quarantine")]
    quarantine_after_faults: u32,
    #[serde(default = "default_max_request")]
    max_request_bytes: usize,
    #[serde(default)]
    http: HttpLimits,
    #[serde(default = "default_max_cache")]
    max_cache_bytes: u64,
    #[serde(default, rename = "tenant")]
    tenants: Vec<RawTenant>,
}

fn default_quarantine() -> u32 {
    5
}

fn default_max_cache() -> u64 {
    dac_engine::DEFAULT_CACHE_BYTES
}

fn default_max_request() -> usize {
    16 << 20
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTenant {
    id: String,
    token_sha256: String,
    scope: Scope,
    alert_collection: String,
    #[serde(default)]
    limits: TenantLimits,
    #[serde(default)]
    enabled_rules: Option<Vec<String>>,
}

impl ServeConfig {
    pub fn read(file: &Path) -> Result<ServeConfig, ConfigError> {
        let text = std::fs::read_to_string(file).map_err(|source| ConfigError::Read { file: file.into(), source })?;
        ServeConfig::parse(file, &text)
    }

    /// Parses and checks the file's text; `file` names it in errors.
    pub fn parse(file: &Path, text: &str) -> Result<ServeConfig, ConfigError> {
        let raw: RawConfig =
            toml::from_str(text).map_err(|err| ConfigError::Parse { file: file.into(), message: err.to_string() })?;
        let invalid = |key: String, message: String| ConfigError::Invalid { file: file.to_owned(), key, message };
        let admin_token_sha256 =
            parse_hash(&raw.admin_token_sha256).map_err(|m| invalid("admin_token_sha256".into(), m))?;
        if raw.quarantine_after_faults == 0 {
            return Err(invalid("quarantine_after_faults".into(), "must be at least 1".into()));
        }
        if raw.max_request_bytes < 1024 {
            return Err(invalid("max_request_bytes".into(), "must be at least 1024".into()));
        }
        for (key, value) in [
            ("http.max_connections", raw.http.max_connections as u64),
            ("http.header_timeout_ms", raw.http.header_timeout_ms),
            ("http.request_timeout_ms", raw.http.request_timeout_ms),
        ] {
            if value == 0 {
                return Err(invalid(key.into(), "must be at least 1".into()));
            }
        }
        let mut tenants: Vec<TenantConfig> = Vec::with_capacity(raw.tenants.len());
        for (index, tenant) in raw.tenants.into_iter().enumerate() {
            let at = |key: &str| format!("tenant[{index}] {:?}: {key}", tenant.id);
            if let Err(err) = check_tenant_id(&tenant.id) {
                return Err(invalid(format!("tenant[{index}]: id"), err.to_string()));
            }
            if tenants.iter().any(|t| t.id == tenant.id) {
                return Err(invalid(at("id"), "another tenant already has this id".into()));
            }
            let token_sha256 = parse_hash(&tenant.token_sha256).map_err(|m| invalid(at("token_sha256"), m))?;
            // A token must name one principal, or authentication would be
            // ambiguous (and one tenant could act as another).
            if token_sha256 == admin_token_sha256 || tenants.iter().any(|t| t.token_sha256 == token_sha256) {
                return Err(invalid(
                    at("token_sha256"),
                    "the same hash as another tenant's or the admin's; every principal needs its own token".into(),
                ));
            }
            check_scope(&tenant.scope).map_err(|(key, m)| invalid(at(&format!("scope.{key}")), m))?;
            check_collection(&tenant.alert_collection).map_err(|m| invalid(at("alert_collection"), m))?;
            check_limits(&tenant.limits, raw.max_request_bytes)
                .map_err(|(key, m)| invalid(at(&format!("limits.{key}")), m))?;
            check_enabled_rules(tenant.enabled_rules.as_deref().unwrap_or_default())
                .map_err(|(index, m)| invalid(at(&format!("enabled_rules[{index}]")), m))?;
            tenants.push(TenantConfig {
                id: tenant.id,
                token_sha256,
                scope: tenant.scope,
                alert_collection: tenant.alert_collection,
                limits: tenant.limits,
                enabled_rules: tenant.enabled_rules,
            });
        }
        Ok(ServeConfig {
            admin_token_sha256,
            quarantine_after_faults: raw.quarantine_after_faults,
            max_request_bytes: raw.max_request_bytes,
            http: raw.http,
            max_cache_bytes: raw.max_cache_bytes,
            tenants,
        })
    }
}

fn parse_hash(text: &str) -> Result<[u8; 32], String> {
    let bytes = text.as_bytes();
    if bytes.len() != 64 || !bytes.iter().all(u8::is_ascii_hexdigit) {
        return Err("expected 64 hex digits, the SHA-256 of a token as `dac token` prints it".into());
    }
    let mut hash = [0u8; 32];
    for (i, pair) in bytes.chunks(2).enumerate() {
        hash[i] = u8::from_str_radix(std::str::from_utf8(pair).expect("hex is ASCII"), 16).expect("checked hex");
    }
    Ok(hash)
}

fn check_scope(scope: &Scope) -> Result<(), (&'static str, String)> {
    match scope {
        Scope::Collection(CollectionScope { collection }) => {
            check_collection(collection).map_err(|m| ("collection", m))
        }
        Scope::Field(FieldScope { field, equals, collection }) => {
            check_collection(collection).map_err(|m| ("collection", m))?;
            if field.is_empty() || field.split('.').any(str::is_empty) || field.starts_with('$') {
                return Err(("field", format!("{field:?} is not a field path (dotted names, not starting with $)")));
            }
            if equals.is_empty() {
                return Err(("equals", "must not be empty".into()));
            }
            Ok(())
        }
    }
}

/// MongoDB's rules for collection names, plus no `system.` collections.
fn check_collection(name: &str) -> Result<(), String> {
    if name.is_empty() || name.contains('$') || name.contains('\0') || name.starts_with("system.") || name.len() > 120 {
        return Err(format!("{name:?} is not a usable collection name"));
    }
    Ok(())
}

/// Rule names, each once.
fn check_enabled_rules(names: &[String]) -> Result<(), (usize, String)> {
    for (index, name) in names.iter().enumerate() {
        if let Err(err) = RuleName::parse(name) {
            return Err((index, format!("{name:?}: {err}")));
        }
        if names[..index].contains(name) {
            return Err((index, format!("{name:?} is listed twice")));
        }
    }
    Ok(())
}

fn check_limits(limits: &TenantLimits, max_request_bytes: usize) -> Result<(), (&'static str, String)> {
    if limits.deadline_ms == 0 && limits.fuel.is_none() {
        return Err(("deadline_ms", "0 turns the deadline off; then set `fuel`, or a rule could run forever".into()));
    }
    if limits.fuel == Some(0) {
        return Err(("fuel", "must be positive".into()));
    }
    if !(1..=4096).contains(&limits.memory_mib) {
        return Err(("memory_mib", "must be between 1 and 4096".into()));
    }
    if limits.max_rules == 0 {
        return Err(("max_rules", "must be at least 1".into()));
    }
    if limits.max_rule_bytes == 0 || limits.max_rule_bytes > max_request_bytes {
        return Err((
            "max_rule_bytes",
            format!("must be between 1 and max_request_bytes ({max_request_bytes}), or no upload could reach it"),
        ));
    }
    if limits.max_findings == 0 {
        return Err(("max_findings", "must be at least 1".into()));
    }
    for (key, value) in [
        ("max_dry_run_events", limits.max_dry_run_events),
        ("max_dry_run_output_bytes", limits.max_dry_run_output_bytes as u64),
        ("max_concurrent_dry_runs", limits.max_concurrent_dry_runs as u64),
        ("max_concurrent_requests", limits.max_concurrent_requests as u64),
        ("max_concurrent_uploads", limits.max_concurrent_uploads as u64),
        ("correlation_max_groups", limits.correlation_max_groups as u64),
        ("state_max_groups", limits.state_max_groups as u64),
        ("state_max_bytes", limits.state_max_bytes as u64),
    ] {
        if value == 0 {
            return Err((key, "must be at least 1".into()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
    const C: &str = "cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc";

    fn parse(text: &str) -> Result<ServeConfig, String> {
        ServeConfig::parse(Path::new("tenants.toml"), text).map_err(|e| e.to_string())
    }

    #[test]
    fn a_full_file_is_read_with_defaults() {
        let config = parse(&format!(
            "admin_token_sha256 = '{A}'\n\
             [[tenant]]\nid = 'acme'\ntoken_sha256 = '{B}'\nalert_collection = 'alerts_acme'\nscope = {{ collection = 'events_acme' }}\n\
             [[tenant]]\nid = 'globex'\ntoken_sha256 = '{C}'\nalert_collection = 'alerts_globex'\n\
             scope = {{ field = 'ingest.tenant', equals = 'globex' }}\n[tenant.limits]\nfuel = 1000\ndeadline_ms = 0\nmax_rules = 3\n"
        ))
        .unwrap();
        assert_eq!(config.quarantine_after_faults, 5);
        assert_eq!(config.tenants[0].scope, Scope::Collection(CollectionScope { collection: "events_acme".into() }));
        assert_eq!(
            config.tenants[1].scope,
            Scope::Field(FieldScope {
                field: "ingest.tenant".into(),
                equals: "globex".into(),
                collection: "events".into()
            })
        );
        let limits = config.tenants[1].limits.sandbox();
        assert_eq!((limits.deadline, limits.fuel), (None, Some(1000)));
        assert_eq!(config.tenants[1].limits.max_rules, 3);
        assert_eq!(config.tenants[0].limits, TenantLimits::default());
    }

    #[test]
    fn errors_name_the_file_and_the_key() {
        let base = format!("admin_token_sha256 = '{A}'\n[[tenant]]\nid = 'acme'\nalert_collection = 'x'\nscope = {{ collection = 'e' }}\n");
        let err = parse(&format!("{base}token_sha256 = 'abc'\n")).unwrap_err();
        assert!(err.starts_with("tenants.toml: tenant[0] \"acme\": token_sha256: expected 64 hex digits"), "{err}");
        let err = parse(&format!("{base}token_sha256 = '{A}'\n")).unwrap_err();
        assert!(err.contains("tenant[0] \"acme\": token_sha256: the same hash as another"), "{err}");
        let err = parse(&format!("{base}token_sha256 = '{B}'\n[tenant.limits]\ndeadline_ms = 0\n")).unwrap_err();
        assert!(err.contains("tenant[0] \"acme\": limits.deadline_ms: 0 turns the deadline off"), "{err}");
        let err =
            parse(&format!("{base}token_sha256 = '{B}'\n[tenant.limits]\nmax_rule_bytes = 99999999\n")).unwrap_err();
        assert!(err.contains("limits.max_rule_bytes: must be between 1 and max_request_bytes"), "{err}");
        let err = parse(&format!("{base}token_sha256 = '{B}'\n[tenant.limits]\nmemroy_mib = 3\n")).unwrap_err();
        assert!(err.starts_with("tenants.toml: TOML parse error at line 8") && err.contains("memroy_mib"), "{err}");
        let err = parse(&format!("admin_token_sha256 = '{A}'\n[[tenant]]\nid = '../x'\ntoken_sha256 = '{B}'\nalert_collection = 'x'\nscope = {{ collection = 'e' }}\n")).unwrap_err();
        assert!(err.starts_with("tenants.toml: tenant[0]: id: \"../x\" is not a tenant id"), "{err}");
        let err = parse(&format!("{base}token_sha256 = '{B}'\n[[tenant]]\nid = 'acme'\ntoken_sha256 = '{C}'\nalert_collection = 'x'\nscope = {{ collection = 'e' }}\n")).unwrap_err();
        assert!(err.contains("tenant[1] \"acme\": id: another tenant already has this id"), "{err}");
        let err = parse(&format!("admin_token_sha256 = '{A}'\n[[tenant]]\nid = 'acme'\ntoken_sha256 = '{B}'\nalert_collection = 'x'\nscope = {{ field = '$where', equals = 'x' }}\n")).unwrap_err();
        assert!(err.contains("tenant[0] \"acme\": scope.field: \"$where\" is not a field path"), "{err}");
    }

    #[test]
    fn enabled_rules_are_optional_and_checked() {
        let base = format!("admin_token_sha256 = '{A}'\n[[tenant]]\nid = 'acme'\ntoken_sha256 = '{B}'\nalert_collection = 'x'\nscope = {{ collection = 'e' }}\n");
        let config = parse(&base).unwrap();
        assert_eq!(config.tenants[0].enabled_rules, None);
        assert!(config.tenants[0].allows("anything"));
        let config = parse(&format!("{base}enabled_rules = ['shadow', 'base-64']\n")).unwrap();
        assert_eq!(config.tenants[0].enabled_rules, Some(vec!["shadow".to_owned(), "base-64".to_owned()]));
        assert!(config.tenants[0].allows("shadow") && !config.tenants[0].allows("other"));
        let config = parse(&format!("{base}enabled_rules = []\n")).unwrap();
        assert!(!config.tenants[0].allows("shadow"), "an empty list runs nothing");
        let err = parse(&format!("{base}enabled_rules = ['ok', '../x']\n")).unwrap_err();
        assert_eq!(
            err,
            "tenants.toml: tenant[0] \"acme\": enabled_rules[1]: \"../x\": a rule name is 1 to 64 of A-Z a-z 0-9 _ -, starting with a letter or digit"
        );
        let err = parse(&format!("{base}enabled_rules = ['a', 'b', 'a']\n")).unwrap_err();
        assert_eq!(err, "tenants.toml: tenant[0] \"acme\": enabled_rules[2]: \"a\" is listed twice");
        let err = parse(&format!("{base}enabled_rules = 'shadow'\n")).unwrap_err();
        assert!(err.starts_with("tenants.toml: TOML parse error at line 7") && err.contains("enabled_rules"), "{err}");
    }
}
