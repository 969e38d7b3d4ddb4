//! Hostile rule: tries to read `/etc/passwd` on every event.
//!
//! To the host: a WASI filesystem call from inside a rule. dac grants rules
//! no WASI capability; the host must trap the very first such call with a
//! fault naming the capability, so the file is never read. Should the read
//! ever succeed, the rule leaks the content as a finding.

use dac_rule_sdk::prelude::*;

dac_rule_sdk::rule! {
    name: "Hostile: Capability Escape",
    uuid: "21c82d77-b9d3-4fd1-ba2a-463482111ab1",
    severity: Critical,
    description: "Reads /etc/passwd through WASI.",
    evaluate: escape,
}

fn escape(_event: &Event) -> Option<Finding> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    Some(Finding::new(format!("escaped the sandbox: /etc/passwd holds {passwd}")))
}
