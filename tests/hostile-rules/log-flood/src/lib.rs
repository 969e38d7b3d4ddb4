//! Hostile rule: logs 100,000 lines per event, then finds nothing.
//!
//! To the host: a flood of `host.log` calls. The host must rate-limit the
//! rule's log (`Limits::log_lines_per_second`), count every line it drops,
//! and neither slow to a crawl nor fault: the evaluation itself is legal.

use dac_rule_sdk::prelude::*;
use dac_rule_sdk::Level;

/// Lines logged per evaluation.
pub const LINES_PER_EVENT: u32 = 100_000;

dac_rule_sdk::rule! {
    name: "Hostile: Log Flood",
    uuid: "2a784bde-c43e-4454-acd9-227744e77a69",
    severity: Informational,
    description: "Logs 100,000 lines per event.",
    evaluate: flood,
}

fn flood(_event: &Event) -> Option<Finding> {
    for line in 0..LINES_PER_EVENT {
        log(Level::Info, &format!("log flood line {line}"));
    }
    None
}
