//! Sigma correlation rules in the engine: which rules feed which
//! correlation, and the alert a correlation's firing becomes.
//!
//! A correlation is a declarative rule that never matches an event by
//! itself (the set's prefilter never makes it a candidate); the engine
//! keeps a [`Correlator`] beside the rule set, fed in stream order by the
//! delivery's one thread (the half that also applies the alert policy),
//! so `dac run` with any number of threads, `dac watch` and a `dac serve`
//! tenant give the same correlation alerts for the same stream. The
//! windows live in the host, bounded by [`CorrelationLimits`]; a reload
//! keeps the windows of every correlation it does not change.

use crate::declarative::DeclarativeRule;
use crate::rule::{RuleId, RuleInfo};
use dac_detect::{CorrelationLimits, CorrelationRule, Correlator, Hit, RuleName};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::path::PathBuf;
use std::sync::Arc;

/// The correlator for a rule set: `components` then `declarative`, in the
/// engine's order (their positions are the correlator's rule indexes).
/// Correlations that cannot run come back as (id, file, `FILE:LINE:`
/// reason).
pub(crate) fn correlator(
    components: &[&Arc<RuleInfo>],
    declarative: &[&DeclarativeRule],
    limits: &CorrelationLimits,
) -> (Correlator, Vec<(RuleId, PathBuf, String)>) {
    let names: Vec<RuleName<'_>> = components
        .iter()
        .map(|info| RuleName { uuid: &info.uuid, name: None })
        .chain(
            declarative.iter().map(|d| RuleName { uuid: &d.info.uuid, name: d.rule.metadata().sigma_name.as_deref() }),
        )
        .collect();
    let correlations: Vec<CorrelationRule> = declarative
        .iter()
        .enumerate()
        .filter_map(|(i, d)| {
            d.rule.correlation().map(|c| CorrelationRule {
                rule: components.len() + i,
                key: format!("{}:{}", d.info.uuid, d.info.sha256),
                correlation: c.clone(),
            })
        })
        .collect();
    if correlations.is_empty() {
        return (Correlator::new(&[], Vec::new(), limits.clone()).0, Vec::new());
    }
    let (correlator, unresolved) = Correlator::new(&names, correlations, limits.clone());
    let refused = unresolved
        .into_iter()
        .map(|u| {
            let rule = declarative[u.correlation - components.len()];
            let file = rule.info.file.clone();
            (
                rule.info.id.clone(),
                file.clone(),
                format!("{}:{}: correlation.rules: {}", file.display(), u.line, u.message),
            )
        })
        .collect();
    (correlator, refused)
}

/// What a correlation alert says about the correlation, beyond its rule:
/// the group, the window, the aggregate and the events that made it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CorrelationInfo {
    /// The alert's `_id`, from (rule uuid, version, group values, window):
    /// the same stream gives the same ids, on a replay and after a restart.
    pub id: String,
    #[serde(rename = "type")]
    pub kind: dac_detect::CorrelationType,
    /// The group-by fields and their values (`null`: missing).
    pub group: serde_json::Map<String, serde_json::Value>,
    /// Event time of the window's first match and of the match that fired
    /// it, milliseconds since the epoch.
    pub window_start: i64,
    pub window_end: i64,
    /// The count, distinct values, rules seen, sum, … that met `condition`.
    pub value: f64,
    pub condition: String,
    /// The matches in the window, oldest first: event id, time, and the
    /// rule (as the correlation names it).
    pub events: Vec<EvidenceEvent>,
    /// How many matches the window held (`events` keeps the first
    /// `max_evidence`).
    pub events_total: usize,
    /// `value_count`'s distinct values.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
}

/// One match of a correlation's window.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EvidenceEvent {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub ts: i64,
    pub rule: String,
}

impl CorrelationInfo {
    pub(crate) fn new(rule: &RuleInfo, hit: &Hit) -> CorrelationInfo {
        let group: serde_json::Map<String, serde_json::Value> = hit
            .group
            .iter()
            .map(|(k, v)| (k.clone(), v.clone().map_or(serde_json::Value::Null, serde_json::Value::String)))
            .collect();
        CorrelationInfo {
            id: alert_id(rule, hit),
            kind: hit.kind,
            group,
            window_start: hit.window_start,
            window_end: hit.window_end,
            value: hit.value,
            condition: hit.condition.clone(),
            events: hit
                .events
                .iter()
                .map(|e| EvidenceEvent { id: e.id.as_deref().map(str::to_owned), ts: e.ts, rule: e.rule.to_string() })
                .collect(),
            events_total: hit.events_total,
            values: hit.values.clone(),
        }
    }
}

/// Hex SHA-256 of the rule's uuid and version, the group's values and the
/// window, each length-prefixed so no two tuples collide.
fn alert_id(rule: &RuleInfo, hit: &Hit) -> String {
    let mut hash = Sha256::new();
    let mut part = |bytes: &[u8]| {
        hash.update((bytes.len() as u64).to_le_bytes());
        hash.update(bytes);
    };
    part(b"correlation");
    part(rule.uuid.as_bytes());
    part(rule.version.as_bytes());
    for (name, value) in &hit.group {
        part(name.as_bytes());
        match value {
            Some(v) => part(v.as_bytes()),
            None => part(&[0xff]),
        }
    }
    part(&hit.window_start.to_le_bytes());
    part(&hit.window_end.to_le_bytes());
    hex::encode(hash.finalize())
}
