//! Base64-Decoded Content Executed.
//!
//! Encoding a script in base64 hides its commands from a casual reader and
//! from naive string matching, and keeps quotes and pipes from breaking the
//! one-liner that smuggles it in; decoding it straight into a shell then runs
//! it without a file on disk. Droppers, exploit payloads and crypto-miner
//! installers do this constantly (ATT&CK T1027 Obfuscated Files or
//! Information, T1140 Deobfuscate/Decode Files or Information, executed by
//! T1059.004 Unix Shell).
//!
//! The rule fires when base64 is decoded — `base64 -d`/`--decode` (`-D` on
//! macOS), `openssl base64 -d`, `openssl enc -base64 -d` (`-a`/`-A`) — and
//!
//! * a later stage of the same pipeline is a shell or interpreter reading
//!   its program from standard input (`… | base64 -d | sh`, `| sudo bash`,
//!   `| gunzip | python3`, `| bash -s`); or
//! * the decoding runs in a command or process substitution whose output is
//!   executed: `bash -c "$(echo … | base64 -d)"`, `eval $(… | base64
//!   --decode)`, `` eval `…` ``, `bash <(… | base64 -d)`, `source <(…)`, or
//!   `$(…)` standing in command position.
//!
//! Deliberately not firing: encoding (`base64 file`), decoding to a file or
//! the terminal (`base64 -d in > out`, `kubectl get secret … | base64 -d`),
//! decoded data fed to tools or to interpreters given their program inline
//! (`| jq`, `| python3 -m json.tool`), and decoded text that is only printed
//! or assigned (`echo "$(… | base64 -d)"`, `x=$(…)`). Other encodings (hex,
//! base32) are out of scope.

use dac_rule_sdk::prelude::*;
use dac_rule_sdk::shell::{executed_substitution, piped_into_interpreter, short_flags};

dac_rule_sdk::rule! {
    name: "Base64-Decoded Content Executed",
    uuid: "43e2e972-e432-4c50-be99-1c87458a7eea",
    severity: High,
    description: "Base64-decoded content is piped into a shell or interpreter, or executed via eval, sh -c \"$(…)\" or <(…).",
    tags: [
        "attack.defense-evasion",
        "attack.t1027",
        "attack.t1140",
        "attack.execution",
        "attack.t1059.004",
    ],
    prefilter: { fields: ["command_line"], literals: ["base64", "openssl"] },
    evaluate: base64_decode_exec,
}

fn base64_decode_exec(event: &Event) -> Option<Finding> {
    let command_line = event.text("command_line")?;
    let message = piped_decode(&command_line).or_else(|| substituted_decode(&command_line))?;
    Some(Finding::new(message).matched("command_line", command_line))
}

/// `… | base64 -d | [stages |] sh`: a decoding stage, then a stage running its input.
fn piped_decode(command_line: &str) -> Option<String> {
    let (decoder, runner) = piped_into_interpreter(command_line, decodes_base64)?;
    Some(format!("{decoder}-decoded data piped into {runner}"))
}

/// `bash -c "$(… | base64 -d)"`, `eval $(… | base64 --decode)`, `bash <(…)`.
fn substituted_decode(command_line: &str) -> Option<String> {
    let (decoder, executor) = executed_substitution(command_line, decodes_base64)?;
    Some(format!("{decoder}-decoded data executed by {executor}"))
}

/// Whether `program` with `args` decodes base64: `base64 -d`/`--decode`/`-D`
/// (also in a cluster, `-di`, or abbreviated, `--dec`), `openssl base64 -d`,
/// `openssl enc -d` with `-base64`/`-a`/`-A`.
fn decodes_base64(program: &str, args: &[&str]) -> Option<&'static str> {
    match program {
        "base64" => args
            .iter()
            .any(|arg| match arg.strip_prefix("--") {
                Some(long) => !long.is_empty() && "decode".starts_with(long),
                None => short_flags(arg).is_some_and(|flags| flags.contains(['d', 'D'])),
            })
            .then_some("base64"),
        "openssl" => {
            let (command, options) = args.split_first()?;
            let base64 = *command == "base64" || options.iter().any(|o| matches!(*o, "-base64" | "-a" | "-A"));
            let decode = options.contains(&"-d");
            (matches!(*command, "base64" | "enc") && base64 && decode).then_some("openssl base64")
        }
        _ => None,
    }
}

dac_rule_sdk::fixture_tests!(DetectionRule);

#[cfg(test)]
mod tests {
    use super::*;
    use dac_rule_sdk::testing::evaluate_command_line;

    fn message(command_line: &str) -> Option<String> {
        evaluate_command_line::<DetectionRule>(command_line).pop().map(|finding| finding.message)
    }

    #[test]
    fn decoding_into_a_shell_fires() {
        assert_eq!(
            message("/bin/sh -c echo ZWNobyBwd25lZA== | base64 -d | sh").unwrap(),
            "base64-decoded data piped into sh"
        );
        assert!(message("/bin/sh -c base64 --dec <<< aWQ= | sudo bash -s").is_some());
        assert!(message("/bin/sh -c echo H4sI | base64 -di | gunzip | python3").is_some());
        assert_eq!(
            message("/bin/sh -c openssl enc -base64 -d -in /tmp/p | sh").unwrap(),
            "openssl base64-decoded data piped into sh"
        );
        assert!(message("/bin/sh -c openssl enc -d -a -in /tmp/p | bash").is_some());
    }

    #[test]
    fn decoding_for_data_does_not_fire() {
        assert!(message("/usr/bin/base64 -w0 /home/gitlab-runner/.ssh/id_ed25519.pub").is_none());
        assert!(message("/bin/sh -c base64 -d payload.b64 > payload.bin").is_none());
        assert!(message("/bin/sh -c echo eyJhIjoxfQ== | base64 -d | python3 -m json.tool").is_none());
        assert!(message("/bin/sh -c base64 -d payload.b64 | bash ./apply.sh").is_none());
        assert!(message("/bin/sh -c openssl enc -base64 -in /tmp/p | sh").is_none(), "encoding");
        assert!(message("/bin/sh -c openssl enc -d -aes-256-cbc -in /tmp/p | sh").is_none(), "not base64");
        assert!(message("/bin/sh -c base64 --wrap=0 x | sh").is_none());
    }

    #[test]
    fn executed_substitutions_fire() {
        assert_eq!(
            message(r#"/bin/sh -c bash -c "$(echo aWQ= | base64 -d)""#).unwrap(),
            "base64-decoded data executed by bash"
        );
        assert_eq!(
            message("/bin/sh -c eval $(echo aWQ= | base64 --decode)").unwrap(),
            "base64-decoded data executed by eval"
        );
        assert!(message("/bin/sh -c eval `echo aWQ= | base64 -d`").is_some());
        assert!(message("/bin/bash -c bash <(base64 -d /tmp/.p)").is_some());
        assert!(message("/bin/sh -c cd /tmp && $(echo aWQ= | base64 -d)").is_some());
        assert!(message(r#"/bin/sh -c echo "$(echo aGk= | base64 -d)""#).is_none());
        assert!(message("/bin/sh -c TOKEN=$(cat /run/secrets/t | base64 -d)").is_none());
    }
}
