//! Bench rule: the whole environment written to a file.
//!
//! `sh -c 'env > /tmp/.env_dump'`: the environment of a service holds its
//! secrets (database URLs, API tokens), and dumping all of it to a file is
//! collection, not debugging (ATT&CK T1082, T1552.001). One of the four
//! rules that, with the six example rules, give a `dac serve` bench tenant
//! ten distinct Rust rules.

use dac_rule_sdk::prelude::*;
use dac_rule_sdk::shell;

dac_rule_sdk::rule! {
    name: "Environment Dumped to a File",
    uuid: "87897e6c-ce0c-43f7-9a6d-591c956a22ab",
    severity: Medium,
    description: "A shell stage runs env or printenv with no arguments and redirects the output to a file.",
    tags: ["attack.discovery", "attack.t1082", "attack.credential-access", "attack.t1552.001"],
    prefilter: { fields: ["command_line"], literals: ["env >", "printenv >"] },
    evaluate: env_dump,
}

fn env_dump(event: &Event) -> Option<Finding> {
    let command_line = event.text("command_line")?;
    // Each stage of each pipeline of the shell text: `env > FILE` alone, not
    // `env FOO=1 cmd > FILE` (a program run with a changed environment).
    let dumped = shell::all_stages(&command_line).find_map(|stage| {
        let (_, target) = stage.rsplit_once('>')?;
        let words = shell::words(stage);
        // `shell::program` skips `env` as a wrapper: with nothing after it,
        // there is no program, and the last word is the `env` that runs.
        let last = shell::basename(words.last()?);
        let dumps = match shell::program(&words) {
            None => last == "env",
            Some((index, program)) => shell::basename(program) == "printenv" && index + 1 == words.len(),
        };
        dumps.then(|| target.trim().to_owned())
    })?;
    Some(Finding::new(format!("the environment is written to {dumped}")).matched("command_line", command_line))
}
