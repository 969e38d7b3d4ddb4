//! Bench rule: a command line reads an SSH private key.
//!
//! `cat ~/.ssh/id_rsa > /tmp/.k` and friends: a private key read by
//! anything but the SSH tools that own it is credential theft
//! (ATT&CK T1552.004). One of the four rules that, with the six example
//! rules, give a `dac serve` bench tenant ten distinct Rust rules.

use dac_rule_sdk::prelude::*;

const KEYS: [&str; 4] = [".ssh/id_rsa", ".ssh/id_ed25519", ".ssh/id_ecdsa", ".ssh/id_dsa"];
/// Programs for which reading a key is their job.
const SSH_TOOLS: [&str; 5] = ["ssh", "ssh-add", "ssh-keygen", "scp", "sftp"];

dac_rule_sdk::rule! {
    name: "SSH Private Key Read",
    uuid: "985c516c-c931-49d2-bf24-732f554d98c5",
    severity: High,
    description: "A command line other than the SSH tools' names an SSH private key.",
    tags: ["attack.credential-access", "attack.t1552.004"],
    prefilter: { fields: ["command_line"], literals: [".ssh/id_"] },
    evaluate: private_key_read,
}

fn private_key_read(event: &Event) -> Option<Finding> {
    let command_line = event.text("command_line")?;
    let key = contains_any(&command_line, &KEYS)?;
    // `.pub` is the public half: nothing secret.
    let public = command_line.split(key).skip(1).all(|rest| rest.starts_with(".pub"));
    let binary = event.text("binary").unwrap_or_default();
    if public || any_of(&binary, &SSH_TOOLS).is_some() {
        return None;
    }
    Some(Finding::new(format!("command line reads the private key {key}")).matched("command_line", command_line))
}
