//! Hostile rule: logs 100,000 lines per event, then finds nothing.
//!
//! To the host: a flood of `host.log` calls. The host must rate-limit the
//! rule's log (`Limits::log_lines_per_second`), count every line it drops,
//! and neither slow to a crawl nor fault: the evaluation itself is legal.
//! The first line of each event tries to forge a log line of the host's
//! (a newline, then text) and to clear the operator's terminal: the host
//! must escape both.

use dac_rule_sdk::prelude::*;
use dac_rule_sdk::Level;

/// The first line of each evaluation.
pub const FORGERY: &str = "log flood line 0\n2026-01-01T00:00:00Z ERROR dac: forged\u{1b}[2J";

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
    log(Level::Info, FORGERY);
    for line in 1..LINES_PER_EVENT {
        log(Level::Info, &format!("log flood line {line}"));
    }
    None
}
