//! Not hostile: the shadow rule built against `dac:rule@0.1.0`, the world
//! before batches and keyed state (`wit/0.1.0/rule.wit`), with wit-bindgen
//! directly, as a component built before 0.2.0 was.
//!
//! To the host: a component of the older world, called one event per call
//! through the `event` resource. The host must load and run it unchanged
//! beside 0.2.0 rules: the same alerts as the Rust shadow rule.

wit_bindgen::generate!({ world: "rule", path: "../../../wit/0.1.0" });

use dac::rule::types::{MatchedField, Prefilter, Severity, Value};

struct ShadowV01;

impl Guest for ShadowV01 {
    fn metadata() -> Metadata {
        Metadata {
            name: "Suspicious /etc/shadow Usage (dac:rule@0.1.0)".into(),
            uuid: "3b9e6c1a-7d42-4f0e-8a15-c2d4e6f80a71".into(),
            version: "1.0.0".into(),
            severity: Severity::High,
            description: "A command line references /etc/shadow.".into(),
            tags: vec!["attack.credential-access".into(), "attack.t1003.008".into()],
            prefilter: Some(Prefilter {
                fields: vec!["command_line".into()],
                literals: vec!["/etc/shadow".into()],
                ascii_case_insensitive: false,
            }),
        }
    }

    fn evaluate(event: &Event) -> Vec<Finding> {
        let Some(Value::Text(command_line)) = event.get("command_line") else { return Vec::new() };
        if !command_line.contains("/etc/shadow") {
            return Vec::new();
        }
        vec![Finding {
            message: "command line references /etc/shadow".into(),
            severity: None,
            matched: vec![MatchedField { path: "command_line".into(), value: command_line }],
        }]
    }
}

export!(ShadowV01);
