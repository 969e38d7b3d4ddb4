//! Alert fatigue: dedup and suppression, a stage between the engine and
//! the sink.
//!
//! A policy file (TOML, `--alert-policy FILE` of `dac watch` and `dac
//! run`; its format, with an example, is in docs/alert-policy.md) declares
//! `[[dedup]]` and `[[suppress]]` entries per rule (any kind: component,
//! YAML, Sigma; named by uuid or name).
//!
//! A YAML or Sigma rule may also declare its own dedup, next to its logic
//! (`dedup: {key: [hostname, user], window: 10m}`, Sigma field names mapped
//! like its detection's; see [`dac_detect::Dedup`]); a policy file's entry
//! for the same rule takes precedence, so operators can tune it without
//! editing the rule.
//!
//! **Dedup.** Repeated matches of a rule with the same key values within
//! one window are folded into the first alert: in MongoDB one document
//! whose `count`, `first_seen` and `last_seen` grow, instead of new
//! documents. Windows are fixed in *event time* (`ts`): aligned to
//! multiples of the window length since the epoch, so a 10-minute window
//! runs from :00 to :10, :10 to :20, … The alert's id is derived from
//! (rule uuid, rule version, key values, window start), so the same events
//! fold into the same document whatever the order, on a replay, and after a
//! crash-restart that evaluates events again (the MongoDB sink of
//! `dac-mongo` adds an event to a document at most once). An
//! event without a numeric or date `ts` is not deduplicated.
//!
//! **Suppression.** A match of a suppression (its rule, and every `match`
//! field equal) is counted, not alerted, while the event's `ts` is before
//! `until` (event time again, so a replay decides as the live run did;
//! wall-clock time for an event without `ts`). Suppressions are checked
//! before dedup.

use crate::rule::RuleInfo;
use dac_detect::parse_timespan;
use dac_event::{Event, Value};
use serde::Serialize;
use serde_json::Value as Json;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("{file}: {message}")]
    Invalid { file: String, message: String },
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    #[serde(default)]
    dedup: Vec<DedupSpec>,
    #[serde(default)]
    suppress: Vec<SuppressSpec>,
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct DedupSpec {
    rule: String,
    key: Vec<String>,
    window: String,
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct SuppressSpec {
    rule: Option<String>,
    #[serde(rename = "match", default)]
    fields: BTreeMap<String, toml::Value>,
    until: toml::Value,
    reason: String,
}

#[derive(Debug, Clone)]
struct Dedup {
    rule: String,
    key: Vec<String>,
    window_ms: i64,
}

/// One suppression, as loaded.
#[derive(Debug, Clone)]
pub struct Suppression {
    pub rule: Option<String>,
    pub fields: BTreeMap<String, Json>,
    /// Milliseconds since the epoch.
    pub until: i64,
    pub reason: String,
    /// Matches suppressed so far.
    pub count: u64,
}

/// Where a repeated match goes: the dedup alert it folds into.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DedupInfo {
    /// The alert's `_id`: from (rule uuid, version, key values, window start).
    pub id: String,
    /// The key fields and this event's values of them.
    pub key: BTreeMap<String, Json>,
    /// Start of the window, milliseconds since the epoch (event time).
    pub window_start: i64,
    pub window_ms: i64,
}

/// What becomes of one match.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// A new alert, deduplicated or not.
    Alert(Option<DedupInfo>),
    /// A repeat of an alert this run already sent: fold it in.
    Repeat(DedupInfo),
    /// A suppression (by index) matched: count it, do not alert.
    Suppressed(usize),
}

/// The dedup and suppression rules and what this run has seen.
#[derive(Debug, Clone, Default)]
pub struct AlertPolicy {
    dedup: Vec<Dedup>,
    suppressions: Vec<Suppression>,
    /// Dedup alerts sent in this run, with the end of their window.
    open: HashMap<String, i64>,
    /// The latest event time seen by a dedup rule.
    latest: i64,
    /// `open`'s size that triggers forgetting ended windows.
    prune_at: usize,
    /// The longest dedup window used so far (policy file or rule).
    longest_window: i64,
}

/// Past this many open dedup alerts, those whose window ended well before
/// the latest event are forgotten (a very late repeat of one then makes a
/// new alert on stdout; in MongoDB it still folds into the same document).
const OPEN_DEDUP_KEPT: usize = 100_000;

fn parse_until(value: &toml::Value) -> Option<i64> {
    let text = match value {
        toml::Value::Datetime(date) => date.to_string(),
        toml::Value::String(text) => text.clone(),
        _ => return None,
    };
    chrono::DateTime::parse_from_rfc3339(&text).ok().map(|date| date.timestamp_millis())
}

/// An event's `ts` in milliseconds: a number, or a date.
pub fn event_time(event: &Event) -> Option<i64> {
    match event.get("ts")? {
        Value::Integer(n) => Some(n),
        Value::Float(f) if f.is_finite() => Some(f as i64),
        Value::DateTime(ms) => Some(ms),
        _ => None,
    }
}

fn names(rule: &RuleInfo, wanted: &str) -> bool {
    rule.uuid == wanted || rule.name == wanted
}

/// The field's value as JSON, comparable with a policy value.
fn field_json(event: &Event, path: &str) -> Json {
    match event.get(path) {
        None | Some(Value::Null) => Json::Null,
        Some(Value::Boolean(b)) => Json::Bool(b),
        Some(Value::Integer(n)) => Json::from(n),
        Some(Value::Float(f)) => Json::from(f),
        Some(Value::Text(text)) | Some(Value::ObjectId(text)) => Json::from(text),
        Some(Value::DateTime(ms)) => Json::from(ms),
        Some(_) => event.raw(path).cloned().unwrap_or(Json::Null),
    }
}

fn toml_to_json(value: &toml::Value) -> Json {
    serde_json::to_value(value).unwrap_or(Json::Null)
}

impl AlertPolicy {
    /// No dedup, no suppression: every match is an alert.
    pub fn none() -> AlertPolicy {
        AlertPolicy::default()
    }

    /// How many rules are deduplicated.
    pub fn dedup_count(&self) -> usize {
        self.dedup.len()
    }

    pub fn is_empty(&self) -> bool {
        self.dedup.is_empty() && self.suppressions.is_empty()
    }

    /// Reads a policy file's text; `file` names it in errors.
    pub fn from_toml(file: &str, text: &str) -> Result<AlertPolicy, PolicyError> {
        let invalid = |message: String| PolicyError::Invalid { file: file.to_owned(), message };
        let parsed: PolicyFile = toml::from_str(text).map_err(|err| invalid(err.to_string()))?;
        let mut dedup = Vec::new();
        for (n, spec) in parsed.dedup.into_iter().enumerate() {
            let window_ms = parse_timespan(&spec.window).ok_or_else(|| {
                invalid(format!(
                    "dedup #{} ({}): window {:?} is not a duration like 30s, 10m, 1h or 2d",
                    n + 1,
                    spec.rule,
                    spec.window
                ))
            })?;
            if spec.key.is_empty() {
                return Err(invalid(format!("dedup #{} ({}): key names no field", n + 1, spec.rule)));
            }
            if dedup.iter().any(|d: &Dedup| d.rule == spec.rule) {
                return Err(invalid(format!("dedup #{}: rule {:?} is already deduplicated", n + 1, spec.rule)));
            }
            dedup.push(Dedup { rule: spec.rule, key: spec.key, window_ms });
        }
        let mut suppressions = Vec::new();
        for (n, spec) in parsed.suppress.into_iter().enumerate() {
            let until = parse_until(&spec.until).ok_or_else(|| {
                invalid(format!(
                    "suppress #{}: until = {} is not a date-time like 2026-12-31T00:00:00Z",
                    n + 1,
                    spec.until
                ))
            })?;
            if spec.reason.trim().is_empty() {
                return Err(invalid(format!("suppress #{}: a reason is required", n + 1)));
            }
            if spec.rule.is_none() && spec.fields.is_empty() {
                return Err(invalid(format!(
                    "suppress #{} ({}): names neither a rule nor fields to match; it would silence everything",
                    n + 1,
                    spec.reason
                )));
            }
            suppressions.push(Suppression {
                rule: spec.rule,
                fields: spec.fields.iter().map(|(k, v)| (k.clone(), toml_to_json(v))).collect(),
                until,
                reason: spec.reason,
                count: 0,
            });
        }
        Ok(AlertPolicy {
            dedup,
            suppressions,
            open: HashMap::new(),
            latest: i64::MIN,
            prune_at: OPEN_DEDUP_KEPT,
            longest_window: 0,
        })
    }

    /// Reads a policy file.
    pub fn load(path: &std::path::Path) -> Result<AlertPolicy, PolicyError> {
        let text = std::fs::read_to_string(path)
            .map_err(|err| PolicyError::Invalid { file: path.display().to_string(), message: err.to_string() })?;
        AlertPolicy::from_toml(&path.display().to_string(), &text)
    }

    /// The suppressions and how many matches each suppressed.
    pub fn suppressions(&self) -> &[Suppression] {
        &self.suppressions
    }

    /// Decides what becomes of `rule` matching `event`.
    pub fn decide(&mut self, rule: &RuleInfo, event: &Event) -> Decision {
        let time = event_time(event);
        let now = || {
            let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
            i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
        };
        for (index, suppression) in self.suppressions.iter_mut().enumerate() {
            let rule_matches = suppression.rule.as_deref().is_none_or(|wanted| names(rule, wanted));
            if !rule_matches || time.unwrap_or_else(now) >= suppression.until {
                continue;
            }
            if suppression.fields.iter().all(|(path, value)| field_json(event, path) == *value) {
                suppression.count += 1;
                return Decision::Suppressed(index);
            }
        }
        // The policy file's entry for the rule, else the rule's own.
        let declared = match self.dedup.iter().find(|dedup| names(rule, &dedup.rule)) {
            Some(dedup) => Some((dedup.key.as_slice(), dedup.window_ms)),
            None => rule.dedup.as_ref().map(|dedup| (dedup.key.as_slice(), dedup.window_ms)),
        };
        let Some((key_fields, window_ms)) = declared else { return Decision::Alert(None) };
        let Some(time) = time else { return Decision::Alert(None) };
        self.longest_window = self.longest_window.max(window_ms);
        // Saturating: the first window of an event at the very start of
        // time would begin before i64::MIN.
        let window_start = time.div_euclid(window_ms).saturating_mul(window_ms);
        let key: BTreeMap<String, Json> =
            key_fields.iter().map(|path| (path.clone(), field_json(event, path))).collect();
        let mut hash = Sha256::new();
        for part in [rule.uuid.as_str(), rule.version.as_str(), &serde_json::to_string(&key).unwrap_or_default()] {
            hash.update(part.as_bytes());
            hash.update([0]);
        }
        hash.update(window_start.to_be_bytes());
        hash.update(window_ms.to_be_bytes());
        let id = format!("dedup-{}", hex::encode(&hash.finalize()[..16]));
        let info = DedupInfo { id: id.clone(), key, window_start, window_ms };
        self.latest = self.latest.max(time);
        if self.open.len() >= self.prune_at.max(OPEN_DEDUP_KEPT) {
            let horizon = self.latest.saturating_sub(self.longest_window.saturating_mul(2));
            self.open.retain(|_, window_end| *window_end >= horizon);
            self.prune_at = (self.open.len() * 2).max(OPEN_DEDUP_KEPT);
        }
        let window_end = window_start.saturating_add(window_ms);
        match self.open.insert(id, window_end) {
            None => Decision::Alert(Some(info)),
            Some(_) => Decision::Repeat(info),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(uuid: &str, name: &str) -> RuleInfo {
        RuleInfo {
            id: crate::RuleId::new(name),
            name: name.into(),
            uuid: uuid.into(),
            version: "1.0.0".into(),
            severity: crate::Severity::High,
            description: String::new(),
            tags: Vec::new(),
            authors: Vec::new(),
            prefilter: None,
            dedup: None,
            file: "r.wasm".into(),
            sha256: "0".repeat(64),
            kind: crate::RuleKind::Component,
        }
    }

    fn event(json: &str) -> Event {
        Event::from_json(serde_json::from_str(json).unwrap()).unwrap()
    }

    const POLICY: &str = r#"
        [[dedup]]
        rule = "u-shadow"
        key = ["hostname", "user"]
        window = "10m"

        [[suppress]]
        rule = "Suspicious /etc/shadow Usage"
        match = { hostname = "build-01" }
        until = 2026-01-01T00:00:00Z
        reason = "CI images check /etc/shadow"
    "#;

    #[test]
    fn repeats_in_one_event_time_window_fold_and_the_next_window_alerts_again() {
        let mut policy = AlertPolicy::from_toml("p.toml", POLICY).unwrap();
        let shadow = rule("u-shadow", "Suspicious /etc/shadow Usage");
        // 2023-11-14T22:13:20Z; the 10-minute window is 22:10–22:20.
        let at = |ts: i64, user: &str| event(&format!(r#"{{"hostname":"web-01","user":"{user}","ts":{ts}}}"#));
        let Decision::Alert(Some(first)) = policy.decide(&shadow, &at(1_700_000_000_000, "alice")) else { panic!() };
        assert_eq!(first.window_start, 1_699_999_800_000);
        assert_eq!(policy.decide(&shadow, &at(1_700_000_399_999, "alice")), Decision::Repeat(first.clone()));
        assert!(matches!(policy.decide(&shadow, &at(1_700_000_000_000, "bob")), Decision::Alert(Some(_))));
        let Decision::Alert(Some(next)) = policy.decide(&shadow, &at(1_700_000_400_000, "alice")) else { panic!() };
        assert_ne!(next.id, first.id, "22:20 starts a new window");

        // The id depends on nothing but the rule, key and window: a fresh
        // run (a restart) derives the same one.
        let mut again = AlertPolicy::from_toml("p.toml", POLICY).unwrap();
        assert_eq!(again.decide(&shadow, &at(1_700_000_100_000, "alice")), Decision::Alert(Some(first)));

        let other = rule("u-other", "Other");
        assert_eq!(policy.decide(&other, &at(1, "alice")), Decision::Alert(None));
        let no_time = event(r#"{"hostname":"web-01","user":"alice"}"#);
        assert_eq!(policy.decide(&shadow, &no_time), Decision::Alert(None), "no ts: no dedup");
    }

    #[test]
    fn extreme_event_times_fall_into_windows_without_overflowing() {
        let mut policy = AlertPolicy::from_toml("p.toml", POLICY).unwrap();
        let shadow = rule("u-shadow", "Suspicious /etc/shadow Usage");
        for ts in
            [i64::MIN.to_string(), (i64::MIN + 1).to_string(), i64::MAX.to_string(), "-1e300".into(), "1e300".into()]
        {
            let at = event(&format!(r#"{{"hostname":"web-01","user":"u","ts":{ts}}}"#));
            // (i64::MIN and i64::MIN + 1 share the first window.)
            policy.decide(&shadow, &at);
            let Decision::Repeat(repeat) = policy.decide(&shadow, &at) else { panic!("ts {ts}") };
            assert!(repeat.window_start <= event_time(&at).unwrap(), "ts {ts}");
        }
    }

    #[test]
    fn a_rules_own_dedup_applies_without_a_policy_file_and_the_file_overrides_it() {
        let declared = dac_detect::Dedup { key: vec!["user".into()], window: "1h".into(), window_ms: 3_600_000 };
        let r = RuleInfo { dedup: Some(declared), ..rule("u-r", "R") };
        let at = |user: &str, ts: i64| event(&format!(r#"{{"hostname":"h","user":"{user}","ts":{ts}}}"#));
        let mut none = AlertPolicy::none();
        let Decision::Alert(Some(first)) = none.decide(&r, &at("alice", 0)) else { panic!() };
        assert_eq!(first.key.keys().map(String::as_str).collect::<Vec<_>>(), ["user"]);
        assert_eq!(none.decide(&r, &at("alice", 3_599_999)), Decision::Repeat(first));
        assert!(matches!(none.decide(&r, &at("bob", 1)), Decision::Alert(Some(_))));

        let text = "[[dedup]]\nrule = \"R\"\nkey = [\"hostname\"]\nwindow = \"1s\"";
        let mut file = AlertPolicy::from_toml("p.toml", text).unwrap();
        let Decision::Alert(Some(first)) = file.decide(&r, &at("alice", 0)) else { panic!() };
        assert_eq!(
            (first.key.keys().map(String::as_str).collect::<Vec<_>>(), first.window_ms),
            (vec!["hostname"], 1_000)
        );
        assert!(matches!(file.decide(&r, &at("bob", 999)), Decision::Repeat(_)), "keyed by host only");
    }

    #[test]
    fn suppressions_match_rule_and_fields_until_their_expiry_in_event_time() {
        let mut policy = AlertPolicy::from_toml("p.toml", POLICY).unwrap();
        let shadow = rule("u-shadow", "Suspicious /etc/shadow Usage");
        let build = event(r#"{"hostname":"build-01","user":"ci","ts":1700000000000}"#);
        assert_eq!(policy.decide(&shadow, &build), Decision::Suppressed(0));
        let expired = event(r#"{"hostname":"build-01","user":"ci","ts":1767225600000}"#);
        assert!(matches!(policy.decide(&shadow, &expired), Decision::Alert(Some(_))), "2026-01-01 and later");
        let web = event(r#"{"hostname":"web-01","user":"ci","ts":1700000000000}"#);
        assert!(matches!(policy.decide(&shadow, &web), Decision::Alert(Some(_))));
        assert_eq!(policy.decide(&rule("u-x", "X"), &build), Decision::Alert(None), "another rule");
        assert_eq!(policy.suppressions()[0].count, 1);
    }

    #[test]
    fn a_long_run_forgets_windows_that_ended_long_ago() {
        let text = "[[dedup]]\nrule = \"u\"\nkey = [\"hostname\"]\nwindow = \"1s\"";
        let mut policy = AlertPolicy::from_toml("p.toml", text).unwrap();
        let r = rule("u", "R");
        let at = |ts: i64| event(&format!(r#"{{"hostname":"h","ts":{ts}}}"#));
        for second in 0..(OPEN_DEDUP_KEPT as i64 + 10) {
            assert!(matches!(policy.decide(&r, &at(second * 1000)), Decision::Alert(Some(_))));
        }
        assert!(policy.open.len() <= 20, "{} windows still open", policy.open.len());
        let now = (OPEN_DEDUP_KEPT as i64 + 9) * 1000;
        assert!(matches!(policy.decide(&r, &at(now + 1)), Decision::Repeat(_)), "the current window is kept");
    }

    #[test]
    fn bad_policies_are_refused_with_the_reason() {
        let err = |text: &str| AlertPolicy::from_toml("p.toml", text).unwrap_err().to_string();
        assert!(
            err("[[dedup]]\nrule = \"x\"\nkey = [\"a\"]\nwindow = \"10 minutes\"").contains("window \"10 minutes\"")
        );
        assert!(err("[[dedup]]\nrule = \"x\"\nkey = []\nwindow = \"1m\"").contains("key names no field"));
        assert!(err("[[suppress]]\nuntil = 2026-01-01T00:00:00Z\nreason = \"r\"").contains("silence everything"));
        assert!(err("[[suppress]]\nrule = \"x\"\nuntil = \"soon\"\nreason = \"r\"").contains("not a date-time"));
        assert!(err("[[suppress]]\nrule = \"x\"\nuntil = 2026-01-01T00:00:00Z\nreason = \"\"")
            .contains("reason is required"));
        assert!(err("[[mute]]").starts_with("p.toml: "));
    }
}
