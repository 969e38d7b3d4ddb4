//! Hostile rule: keeps a counter per host in a global across evaluations.
//!
//! To the host: state that outlives one event. This documents dac's
//! isolation model rather than breaking it: under the default reused
//! instance a rule's globals persist (the rule fires from a host's 2nd
//! event on), while `--fresh-instance` (`Isolation::FreshInstancePerEvent`)
//! must give every evaluation new memory, so it never fires. Counting per
//! host is what `--threads` keeps exact: each host's events reach one
//! instance, in order (`dac_engine::PARTITION_FIELD`).

use dac_rule_sdk::prelude::*;
use std::collections::BTreeMap;
use std::sync::Mutex;

static SEEN: Mutex<BTreeMap<String, u64>> = Mutex::new(BTreeMap::new());

dac_rule_sdk::rule! {
    name: "Hostile: Stateful Counter",
    uuid: "2405c49e-b0da-4113-8388-d745bc5d2c34",
    severity: Informational,
    description: "Fires whenever it has seen an earlier event of the same host in the same instance.",
    evaluate: count,
}

fn count(event: &Event) -> Option<Finding> {
    let host = event.text("hostname").unwrap_or_default();
    let mut seen = SEEN.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let evaluation = seen.entry(host.clone()).or_default();
    *evaluation += 1;
    (*evaluation > 1).then(|| Finding::new(format!("state survived: evaluation #{evaluation} on host {host}")))
}
