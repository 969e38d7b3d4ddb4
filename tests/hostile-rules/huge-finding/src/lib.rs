//! Hostile rule: returns one finding whose message is 1 MiB long.
//!
//! To the host: a result far above the per-finding size limit
//! (`Limits::max_finding_bytes`, 64 KiB). The host must refuse it as a
//! finding-limit fault instead of turning it into an alert.

use dac_rule_sdk::prelude::*;

dac_rule_sdk::rule! {
    name: "Hostile: Huge Finding",
    uuid: "57bf120a-3fc1-4480-a3cc-5892298421c8",
    severity: Informational,
    description: "Returns a 1 MiB finding message.",
    evaluate: bloat,
}

fn bloat(_event: &Event) -> Finding {
    Finding::new("x".repeat(1 << 20))
}
