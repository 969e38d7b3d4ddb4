//! Hostile rule: writes its keyed state, then faults on some events.
//!
//! To the host: a call whose state writes must not outlive its fault. Each
//! event counts one occurrence of its host's `n` and fires with the count;
//! an event whose command line holds `panic-here` counts and then panics,
//! one holding `huge-key` asks for a key over the size limit. Neither may
//! leave a count behind: the next event of the host counts as if they had
//! never been, whether the fault came in a batch (evaluated again one
//! event per call) or alone.

use dac_rule_sdk::prelude::*;

dac_rule_sdk::rule! {
    name: "Hostile: State Then Panic",
    uuid: "0b7d4c2e-8f1a-4e6b-9d3c-5a2f7e1b8c47",
    severity: Informational,
    description: "Counts each host's events in the host's state; panics after counting on panic-here, asks for a huge key on huge-key.",
    fields: ["command_line"],
    evaluate: count_then_fault,
}

fn count_then_fault(event: &Event) -> Option<Finding> {
    let command_line = event.text("command_line")?;
    let state = event.state();
    let count = state.count("n", Duration::from_secs(3600));
    state.set("last", &command_line, Duration::from_secs(3600));
    if command_line.contains("panic-here") {
        panic!("panic-here after counting {count}");
    }
    if command_line.contains("huge-key") {
        state.get(&"k".repeat(4096));
    }
    Some(Finding::new(format!("count {count}")))
}
