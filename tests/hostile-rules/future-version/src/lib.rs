//! Hostile rule: built against a future `dac:rule@0.3.0`.
//!
//! To the host: a component of the right shape — it exports `metadata` and
//! `evaluate` — whose imports name a version of the dac interfaces this
//! host does not provide. The host must refuse it at load time, naming the
//! import and the versions it does provide, instead of failing later.

wit_bindgen::generate!({ world: "rule", path: "wit" });

use dac::rule::types::Severity;

struct FutureRule;

impl Guest for FutureRule {
    fn metadata() -> Metadata {
        Metadata {
            name: "Hostile: Future Version".into(),
            uuid: "0c2f5b8e-3f0a-4d55-9b7e-4a3e0d6c2a11".into(),
            version: "1.0.0".into(),
            severity: Severity::Low,
            description: String::new(),
            tags: Vec::new(),
            prefilter: None,
        }
    }

    fn evaluate(_event: &Event) -> Vec<Finding> {
        Vec::new()
    }
}

export!(FutureRule);
