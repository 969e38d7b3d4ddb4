//! Hostile rule: panics on every event.
//!
//! To the host: a guest abort (`unreachable` trap) right after the SDK's
//! panic hook has sent "rule panicked: …" through the host log. The host
//! must report the fault with that message, so the author learns *why*,
//! and re-create the instance for the next event.

use dac_rule_sdk::prelude::*;

dac_rule_sdk::rule! {
    name: "Hostile: Explicit Panic",
    uuid: "63a4804b-c6e9-47cf-a48c-8a0100013142",
    severity: Informational,
    description: "Panics in evaluate.",
    evaluate: explode,
}

fn explode(_event: &Event) -> Option<Finding> {
    panic!("explicit panic for the host test")
}
