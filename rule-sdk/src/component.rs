//! Glue between a [`Rule`] and the component's exports (wasm32 only).

use crate::bindings::dac::rule::types as wit;
use crate::{Event, Level, Rule, Severity};
use std::sync::{Once, OnceLock};

pub fn metadata<R: Rule>() -> wit::Metadata {
    install_panic_hook();
    let m = R::metadata();
    wit::Metadata {
        name: m.name,
        uuid: m.uuid,
        version: m.version,
        severity: severity(m.severity),
        description: m.description,
        tags: m.tags,
        prefilter: m.prefilter.map(|p| wit::Prefilter {
            fields: p.fields,
            literals: p.literals,
            ascii_case_insensitive: p.ascii_case_insensitive,
        }),
        fields: m.fields,
    }
}

/// The paths whose values come with each event, as `metadata` declared
/// them (asked once per instance: an instance may start after the host
/// asked another one for the metadata).
fn declared<R: Rule>() -> &'static [String] {
    static FIELDS: OnceLock<Vec<String>> = OnceLock::new();
    FIELDS.get_or_init(|| R::metadata().fields)
}

pub fn evaluate<R: Rule>(batch: &wit::Batch, fields: wit::Fields) -> Vec<Vec<wit::Finding>> {
    install_panic_hook();
    let names = declared::<R>();
    (0..fields.events)
        .map(|index| {
            // A host that sent fewer values than it declared leaves the
            // rest absent.
            let start = (index as usize).saturating_mul(names.len());
            let row = fields.values.get(start..start + names.len()).unwrap_or(&[]);
            let event = Event::in_batch(batch, index, names, row, &fields.text);
            R::evaluate(&event)
                .into_iter()
                .map(|f| wit::Finding {
                    message: f.message,
                    severity: f.severity.map(severity),
                    matched: f
                        .matched
                        .into_iter()
                        .map(|m| wit::MatchedField { path: m.path, value: m.value })
                        .collect(),
                })
                .collect()
        })
        .collect()
}

/// A panic aborts the guest with a bare `unreachable` trap; routing the
/// message through the host's log first lets the host say *why*.
fn install_panic_hook() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        std::panic::set_hook(Box::new(|info| {
            let message = info.payload_as_str().unwrap_or("(no message)");
            let message = match info.location() {
                Some(at) => format!("rule panicked: {message} (at {}:{})", at.file(), at.line()),
                None => format!("rule panicked: {message}"),
            };
            crate::log(Level::Error, &message);
        }))
    });
}

fn severity(s: Severity) -> wit::Severity {
    match s {
        Severity::Informational => wit::Severity::Informational,
        Severity::Low => wit::Severity::Low,
        Severity::Medium => wit::Severity::Medium,
        Severity::High => wit::Severity::High,
        Severity::Critical => wit::Severity::Critical,
    }
}
