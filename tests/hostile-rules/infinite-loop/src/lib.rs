//! Hostile rule: loops forever on every event.
//!
//! To the host: one `evaluate` call that never returns, burning a core.
//! The host must stop it — by the wall-clock deadline (epoch interruption)
//! or by the fuel budget — report a deadline or fuel fault naming the rule,
//! discard the instance, and carry on with the next event and other rules.

use dac_rule_sdk::prelude::*;
use std::hint::black_box;

dac_rule_sdk::rule! {
    name: "Hostile: Infinite Loop",
    uuid: "a7cb501f-d87a-4919-9609-b02d1445ed03",
    severity: Informational,
    description: "Never returns from evaluate.",
    evaluate: spin,
}

fn spin(_event: &Event) -> Option<Finding> {
    let mut turns: u64 = 0;
    loop {
        // The opaque read keeps the loop (and its back-edge, where the
        // host's interruption checks sit) from being optimized away.
        turns = black_box(turns.wrapping_add(1));
    }
}
