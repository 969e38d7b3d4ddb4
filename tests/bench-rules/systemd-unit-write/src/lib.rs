//! Bench rule: a unit file copied, moved or written into
//! `/etc/systemd/system/`.
//!
//! Package managers install units under `/usr/lib/systemd/system/`; a unit
//! that appears in `/etc/systemd/system/` from `cp`, `mv`, `tee` or an
//! `echo >` is an administrator's hand — or an intruder's persistence
//! (ATT&CK T1543.002). One of the four rules that, with the six example
//! rules, give a `dac serve` bench tenant ten distinct Rust rules.

use dac_rule_sdk::prelude::*;

const UNIT_DIR: &str = "/etc/systemd/system/";
const WRITERS: [&str; 5] = ["cp", "mv", "install", "tee", "ln"];

dac_rule_sdk::rule! {
    name: "Unit File Written to /etc/systemd/system",
    uuid: "cf90c8c3-b8d5-4d88-925b-440984b809ed",
    severity: Medium,
    description: "cp, mv, install, tee, ln or a shell redirection puts a .service or .timer file into /etc/systemd/system/.",
    tags: ["attack.persistence", "attack.t1543.002"],
    prefilter: { fields: ["command_line"], literals: ["/etc/systemd/system/"] },
    evaluate: unit_write,
}

fn unit_write(event: &Event) -> Option<Finding> {
    let command_line = event.text("command_line")?;
    let unit = command_line
        .split(UNIT_DIR)
        .skip(1)
        .filter_map(|rest| rest.split([' ', ';', '|', '&', '"', '\'']).next())
        .find(|name| ends_with(name, ".service") || ends_with(name, ".timer"))?;
    let binary = event.text("binary").unwrap_or_default();
    let redirected = contains(&command_line, &format!("> {UNIT_DIR}"));
    if any_of(&binary, &WRITERS).is_none() && !redirected {
        return None;
    }
    Some(Finding::new(format!("unit {unit} written into {UNIT_DIR}")).matched("command_line", command_line))
}
