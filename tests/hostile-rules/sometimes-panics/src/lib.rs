//! Hostile rule: panics on some events of a batch, fires on others.
//!
//! To the host: a `dac:rule@0.2.0` call over many events that traps part
//! way through. The host must give the fault to the one event whose command
//! line holds `panic-here`, and every other event of the batch its own
//! result: the findings for `/etc/shadow`, nothing for the rest.

use dac_rule_sdk::prelude::*;

dac_rule_sdk::rule! {
    name: "Hostile: Sometimes Panics",
    uuid: "d6f1c7a2-5b8e-4f3a-9c1d-2e7b4a6f8c90",
    severity: Informational,
    description: "Panics on events whose command line holds panic-here; fires on /etc/shadow.",
    fields: ["command_line"],
    evaluate: sometimes,
}

fn sometimes(event: &Event) -> Option<Finding> {
    let command_line = event.text("command_line")?;
    if command_line.contains("panic-here") {
        panic!("panic-here in the command line");
    }
    command_line.contains("/etc/shadow").then(|| Finding::new("/etc/shadow").matched("command_line", command_line))
}
