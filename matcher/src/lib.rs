//! The generic matcher component behind `dac build`: a dac rule component
//! (world `dac:rule/rule`) whose rule — a seed YAML or Sigma rule, with its
//! Sigma field mapping — is data.
//!
//! The component is built once, for `wasm32-wasip2`, by the runtime's build
//! script, with an empty rule [`slot`] in its data segment. `dac build`
//! writes a [`Payload`] into a copy of it; at its first call the component
//! parses the rule with `dac-detect` into a one-rule [`RuleSet`], and then
//! evaluates each event exactly as the host evaluates YAML and Sigma rules:
//!
//! - its metadata is the rule's (name, uuid, version, severity, description,
//!   tags), and its prefilter is [`RuleSet::standalone_prefilter`], sound
//!   behind the host's raw-document scan;
//! - the event is read through the host's `event` resource into a
//!   `dac_event::Event` — the top-level fields the rule reads, whole, or the
//!   whole document for a rule with Sigma keywords — and matched;
//! - a match is one finding: the rule's description (else its name) and
//!   every field that matched, values cut at 1 KiB as the SDK does.
//!
//! Natively the crate is a library: [`slot::fill`] for `dac build`, and
//! [`Matcher`], which `dac build` runs on the host first so a rule that
//! would fail inside the component is refused before anything is written.

pub mod slot;

use dac_detect::{DetectError, FieldMapping, RuleSet};
use dac_rule_sdk::{Event, Finding, Metadata, Prefilter, Rule, Severity, Value};
use serde_json::{Map, Value as Json};
pub use slot::{MappingSource, Payload};
use std::sync::OnceLock;

/// Why a payload does not make a rule.
#[derive(Debug, thiserror::Error)]
pub enum MatcherError {
    #[error("this component is dac's matcher template, with no rule in it: `dac build RULE.yml` makes a rule component from it")]
    Empty,
    #[error("the rule slot does not hold a valid payload: {0}")]
    Payload(#[from] serde_json::Error),
    #[error("{0}")]
    Rule(#[from] DetectError),
}

/// One rule, parsed and compiled, ready to evaluate events.
#[derive(Debug)]
pub struct Matcher {
    set: RuleSet,
    metadata: Metadata,
    /// `None`: the whole document (keywords search every text value).
    top_level: Option<Vec<String>>,
}

impl Matcher {
    /// Parses the payload's rule as `dac-run` would parse its file.
    pub fn new(payload: &Payload) -> Result<Matcher, MatcherError> {
        let mapping = match &payload.mapping {
            Some(m) => FieldMapping::from_toml(&m.file, &m.toml)?,
            None => FieldMapping::default(),
        };
        let rule = dac_detect::load_text(&payload.file, &payload.text, &mapping)?;
        let top_level = (!rule.searches_keywords()).then(|| {
            let mut keys: Vec<String> = Vec::new();
            for path in rule.fields() {
                let key = path.split('.').next().unwrap_or_default();
                if !keys.iter().any(|k| k == key) {
                    keys.push(key.to_owned());
                }
            }
            keys
        });
        let set = RuleSet::compile(vec![rule])?;
        let m = set.rules()[0].metadata();
        let mut metadata = Metadata::new(&m.name, &m.uuid, m.version.clone().unwrap_or_default(), severity(m.severity));
        metadata.description = m.description.clone().unwrap_or_default();
        metadata.tags = m.tags.clone();
        metadata.prefilter = set.standalone_prefilter(0).map(|p| Prefilter {
            fields: p.fields,
            literals: p.literals,
            ascii_case_insensitive: p.ascii_case_insensitive,
        });
        // The top-level fields come with each event; what is below a
        // document among them is still read through the host.
        metadata.fields = top_level.clone().unwrap_or_default();
        Ok(Matcher { set, metadata, top_level })
    }

    /// Parses a payload as read from the slot.
    pub fn from_slot(bytes: &[u8]) -> Result<Matcher, MatcherError> {
        if bytes.is_empty() {
            return Err(MatcherError::Empty);
        }
        Matcher::new(&serde_json::from_slice(bytes)?)
    }

    /// What the component's `metadata` export returns.
    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    /// The parsed rule.
    pub fn rule(&self) -> &dac_detect::Rule {
        &self.set.rules()[0]
    }

    /// What the component's `evaluate` export returns for `event`.
    pub fn evaluate(&self, event: &Event) -> Vec<Finding> {
        let event =
            dac_detect::Event::from_json(Json::Object(self.fetch(event))).expect("a JSON object is always an event");
        let mut matches = Vec::new();
        self.set.matches(&event, &mut matches);
        matches
            .into_iter()
            .map(|found| {
                let m = &self.metadata;
                let message = if m.description.is_empty() { &m.name } else { &m.description };
                found.matched.into_iter().fold(Finding::new(message.as_str()), |f, m| f.matched(m.path, m.value))
            })
            .collect()
    }

    /// The part of the host's event the rule can see, as a document: every
    /// top-level field it reads, with all that is below it, so any dotted
    /// path into them resolves as it does in the host's own event.
    fn fetch(&self, event: &Event) -> Map<String, Json> {
        let keys = match &self.top_level {
            Some(keys) => keys.clone(),
            None => event.keys("").unwrap_or_default(),
        };
        let mut doc = Map::new();
        let mut path = Vec::new();
        for key in keys {
            path.push(key);
            if let Some(value) = event.get_segments(&segments(&path)) {
                let json = to_json(event, &mut path, value);
                doc.insert(path[0].clone(), json);
            }
            path.pop();
        }
        doc
    }
}

fn segments(path: &[String]) -> Vec<&str> {
    path.iter().map(String::as_str).collect()
}

/// A value as JSON that `dac_event` reads back as the same value
/// (Extended JSON for the BSON types), containers fetched member by member.
fn to_json(event: &Event, path: &mut Vec<String>, value: Value) -> Json {
    let member = |path: &mut Vec<String>, key: String| {
        path.push(key);
        let json = event.get_segments(&segments(path)).map(|v| to_json(event, path, v));
        (path.pop().expect("pushed above"), json)
    };
    match value {
        Value::Null => Json::Null,
        Value::Boolean(b) => Json::Bool(b),
        Value::Integer(i) => Json::from(i),
        Value::Float(f) => match serde_json::Number::from_f64(f) {
            Some(n) => Json::Number(n),
            None => wrapper(
                "$numberDouble",
                Json::from(if f.is_nan() {
                    "NaN"
                } else if f > 0.0 {
                    "Infinity"
                } else {
                    "-Infinity"
                }),
            ),
        },
        Value::Text(s) => Json::String(s),
        Value::DateTime(ms) => wrapper("$date", wrapper("$numberLong", Json::from(ms.to_string()))),
        Value::ObjectId(hex) => wrapper("$oid", Json::from(hex)),
        Value::Binary(bytes) => {
            use base64::Engine as _;
            let encoded = base64::engine::general_purpose::STANDARD.encode(bytes);
            wrapper("$binary", serde_json::json!({"base64": encoded, "subType": "00"}))
        }
        Value::Other(json) => serde_json::from_str(&json).unwrap_or(Json::String(json)),
        Value::Array(n) => Json::Array((0..n).map(|i| member(path, i.to_string()).1.unwrap_or(Json::Null)).collect()),
        Value::Document(_) => {
            // `keys` takes a dotted path: below a key holding a dot, no
            // field path of a rule can reach anyway.
            if path.iter().any(|s| s.contains('.')) {
                return Json::Object(Map::new());
            }
            let keys = event.keys(&path.join(".")).unwrap_or_default();
            Json::Object(
                keys.into_iter()
                    .filter_map(|key| match member(path, key) {
                        (key, Some(json)) => Some((key, json)),
                        (_, None) => None,
                    })
                    .collect(),
            )
        }
    }
}

fn wrapper(key: &str, inner: Json) -> Json {
    let mut map = Map::new();
    map.insert(key.to_owned(), inner);
    Json::Object(map)
}

fn severity(s: dac_detect::Severity) -> Severity {
    match s {
        dac_detect::Severity::Informational => Severity::Informational,
        dac_detect::Severity::Low => Severity::Low,
        dac_detect::Severity::Medium => Severity::Medium,
        dac_detect::Severity::High => Severity::High,
        dac_detect::Severity::Critical => Severity::Critical,
    }
}

/// The component's rule: whatever `dac build` wrote into the slot, parsed
/// at the first call. A slot that does not parse (only a hand-edited
/// component's can, `dac build` checks first) traps with the reason.
pub struct BuiltRule;

fn matcher() -> &'static Matcher {
    static MATCHER: OnceLock<Matcher> = OnceLock::new();
    MATCHER.get_or_init(|| Matcher::from_slot(&slot::embedded()).unwrap_or_else(|err| panic!("{err}")))
}

impl Rule for BuiltRule {
    fn metadata() -> Metadata {
        matcher().metadata().clone()
    }

    fn evaluate(event: &Event) -> Vec<Finding> {
        matcher().evaluate(event)
    }
}

dac_rule_sdk::__export_component!(BuiltRule);

#[cfg(test)]
mod tests;
