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

const SHELLS: &[&str] = &["sh", "bash", "dash", "zsh", "ksh", "ash", "mksh"];

fn base64_decode_exec(event: &Event) -> Option<Finding> {
    let command_line = event.text("command_line")?;
    let message = piped_decode(&command_line).or_else(|| substituted_decode(&command_line))?;
    Some(Finding::new(message).matched("command_line", command_line))
}

/// `… | base64 -d | [stages |] sh`: a decoding stage, then a stage running its input.
fn piped_decode(command_line: &str) -> Option<String> {
    pipelines(command_line).find_map(|pipeline| {
        let mut decoder = None;
        stages(pipeline).find_map(|stage| {
            let words = words(stage);
            let (at, program) = program(&words)?;
            let name = basename(program);
            if let Some(decoder) = decoder {
                if runs_standard_input(name, &words[at + 1..]) {
                    return Some(format!("{decoder}-decoded data piped into {name}"));
                }
            }
            decoder = decoder.or(decodes_base64(name, &words[at + 1..]));
            None
        })
    })
}

/// `bash -c "$(… | base64 -d)"`, `eval $(… | base64 --decode)`, `bash <(…)`.
fn substituted_decode(command_line: &str) -> Option<String> {
    substitutions(command_line).into_iter().find_map(|(before, process, inner)| {
        let decoder = pipelines(inner).flat_map(stages).find_map(|stage| {
            let words = words(stage);
            let (at, program) = program(&words)?;
            decodes_base64(basename(program), &words[at + 1..])
        })?;
        let executor = executor(before, process)?;
        Some(format!("{decoder}-decoded data executed by {executor}"))
    })
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

/// The letters of a short-option cluster (`-di` → `di`).
fn short_flags(word: &str) -> Option<&str> {
    word.strip_prefix('-').filter(|flags| !flags.is_empty() && flags.chars().all(|c| c.is_ascii_alphanumeric()))
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
