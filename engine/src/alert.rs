//! The alert a rule's finding becomes: the seed's shape, plus provenance.

use crate::rule::{Finding, RuleInfo, Severity};
use serde::Serialize;
use serde_json::{Map, Value as Json};

/// One alert: one rule fired on one event.
///
/// Serialized, it is the seed talk's alert document (`rule_name`, `uuid`,
/// `offending_log`, `ts`) followed by what a responder needs next: the
/// rule's version and content hash, severity, tags, the event's id and
/// where it was read, and the findings with the field values that matched.
#[derive(Debug, Serialize)]
pub struct Alert<'a> {
    pub rule_name: &'a str,
    pub uuid: &'a str,
    pub offending_log: &'a Map<String, Json>,
    /// The event's own `ts`, as it appears in the event.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ts: Option<&'a Json>,
    pub rule_version: &'a str,
    /// `sha256:` and the hex digest of the rule component's bytes.
    pub rule_hash: String,
    /// The highest severity among the findings, else the rule's.
    pub severity: Severity,
    pub tags: &'a [String],
    /// The rule's authors (Sigma `author`): the Detection Rule License asks
    /// that they are credited wherever the rule's matches are shown.
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    pub authors: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_id: Option<String>,
    /// Where the event was read, e.g. `logs.json:12`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<&'a str>,
    pub findings: &'a [Finding],
    /// Set when the rule is deduplicated (`crate::policy`): the alert
    /// repeated matches of the same key and window fold into.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dedup: Option<crate::policy::DedupInfo>,
    /// Set for a correlation's alert: the group, the window and the events
    /// that made it (`offending_log` is the event that completed it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub correlation: Option<crate::correlation::CorrelationInfo>,
}

impl<'a> Alert<'a> {
    pub fn new(
        rule: &'a RuleInfo,
        event: &'a dac_event::Event,
        findings: &'a [Finding],
        source: Option<&'a str>,
    ) -> Alert<'a> {
        let severity = findings.iter().filter_map(|f| f.severity).max().unwrap_or(rule.severity);
        Alert {
            rule_name: &rule.name,
            uuid: &rule.uuid,
            offending_log: event.as_json(),
            ts: event.as_json().get("ts"),
            rule_version: &rule.version,
            rule_hash: format!("sha256:{}", rule.sha256),
            severity,
            tags: &rule.tags,
            authors: &rule.authors,
            event_id: event.id(),
            source,
            findings,
            dedup: None,
            correlation: None,
        }
    }
}
