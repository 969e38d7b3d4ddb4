//! Hostile rule: keeps a counter in a global across evaluations.
//!
//! To the host: state that outlives one event. This documents dac's
//! isolation model rather than breaking it: under the default reused
//! instance a rule's globals persist (the rule fires from the 2nd event
//! on), while `--fresh-instance` (`Isolation::FreshInstancePerEvent`)
//! must give every evaluation new memory, so it never fires.

use dac_rule_sdk::prelude::*;
use std::sync::atomic::{AtomicU64, Ordering};

static COUNTER: AtomicU64 = AtomicU64::new(0);

dac_rule_sdk::rule! {
    name: "Hostile: Stateful Counter",
    uuid: "2405c49e-b0da-4113-8388-d745bc5d2c34",
    severity: Informational,
    description: "Fires whenever it has seen an earlier event in the same instance.",
    evaluate: count,
}

fn count(_event: &Event) -> Option<Finding> {
    let evaluation = COUNTER.fetch_add(1, Ordering::Relaxed) + 1;
    (evaluation > 1).then(|| Finding::new(format!("state survived: evaluation #{evaluation}")))
}
