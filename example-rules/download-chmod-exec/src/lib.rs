//! Downloaded File Made Executable and Run.
//!
//! A dropper's three steps, each harmless on its own: fetch a file
//! (`curl -o /tmp/x URL`, `wget URL`), make it executable (`chmod +x
//! /tmp/x`), run it (`/tmp/x`) — ATT&CK T1105 Ingress Tool Transfer, T1222.002
//! Linux File Permissions Modification, T1204.002 Malicious File. The rule
//! fires on the exec when, on the same host, the same file was downloaded
//! and then made executable, all within ten minutes of the download; once
//! per sequence.
//!
//! It keeps what it has seen in the host's keyed state
//! ([`dac_rule_sdk::State`]): scoped to the event's host, in event time,
//! bounded by the host's quotas and, under `dac watch`, stored with the
//! stream's position, so a crash neither loses a sequence half seen nor
//! fires one twice.
//! - a download sets `downloaded:NAME` to its time, for ten minutes;
//! - a `chmod` granting execute on a downloaded NAME sets
//!   `executable:NAME` for what is left of those ten minutes;
//! - an exec of NAME that finds `executable:NAME` fires and forgets both.
//!
//! Files are matched by name (`run.sh` downloaded into the working
//! directory and run as `/home/ci/run.sh`): exec events carry the resolved
//! path, but a download or a `chmod` names the file as typed, and the
//! events carry no working directory to resolve it against.

use dac_rule_sdk::prelude::*;
use dac_rule_sdk::shell::{basename, short_flags, words};

dac_rule_sdk::rule! {
    name: "Downloaded File Made Executable and Run",
    uuid: "8d0c3a5e-6c1b-4a57-9f0e-3c2d7b1e4a00",
    severity: High,
    description: "A file downloaded with curl or wget was made executable with chmod and then run, on one host within ten minutes.",
    tags: [
        "attack.command-and-control",
        "attack.t1105",
        "attack.defense-evasion",
        "attack.t1222.002",
        "attack.execution",
        "attack.t1204.002",
    ],
    // Every exec may be the third step, so there is no prefilter: the
    // declared fields come with each event, and the state is only touched
    // by downloads, chmods and execs of files it knows.
    fields: ["path", "binary", "arguments", "ts"],
    evaluate: download_chmod_exec,
}

/// How long the whole sequence may take, from the download.
const SEQUENCE: Duration = Duration::from_secs(10 * 60);

fn download_chmod_exec(event: &Event) -> Option<Finding> {
    let path = event.text("path")?;
    let program = event.text("binary").unwrap_or_else(|| basename(&path).to_owned());
    // The arguments as the probe records them, or else the command line
    // after its program.
    let text = event.text("arguments");
    let command_line = if text.is_none() { event.text("command_line") } else { None };
    let arguments = match (&text, &command_line) {
        (Some(arguments), _) => words(arguments),
        (None, Some(command_line)) => words(command_line).into_iter().skip(1).collect(),
        (None, None) => Vec::new(),
    };
    let state = event.state();
    match program.as_str() {
        "curl" | "wget" => {
            if let Some(file) = downloaded_file(&program, &arguments) {
                let ts = event.integer("ts").unwrap_or_default();
                state.set(&format!("downloaded:{}", basename(file)), &ts.to_string(), SEQUENCE);
            }
            None
        }
        "chmod" => {
            let (mode, files) = arguments.split_first()?;
            if !grants_execute(mode) {
                return None;
            }
            let now = event.integer("ts").unwrap_or_default();
            for file in files {
                let name = basename(file);
                let Some(downloaded) = state.get(&format!("downloaded:{name}")) else { continue };
                let Ok(downloaded) = downloaded.parse::<i64>() else { continue };
                // What is left of the sequence's ten minutes.
                let left = downloaded.saturating_add(SEQUENCE.as_millis() as i64).saturating_sub(now);
                if left > 0 {
                    state.set(
                        &format!("executable:{name}"),
                        &downloaded.to_string(),
                        Duration::from_millis(left as u64),
                    );
                }
            }
            None
        }
        _ => {
            let name = basename(&path);
            let executable = format!("executable:{name}");
            state.get(&executable)?;
            state.remove(&executable);
            state.remove(&format!("downloaded:{name}"));
            Some(
                Finding::new(format!("{path} was downloaded, made executable and run within 10 minutes"))
                    .matched("path", path.clone()),
            )
        }
    }
}

/// The file a `curl` or `wget` command line writes: the value of its
/// output option (`-o F`, `-sSfo F`, `--output F`, `--output=F`, wget's `-O
/// F`, `--output-document=F`), or the URL's last segment where the tool
/// names the file after it (curl `-O`/`--remote-name`, wget without `-O`).
/// `None` when it writes to standard output (`-o -`, `-O-`) or nowhere
/// known.
fn downloaded_file<'a>(program: &str, arguments: &[&'a str]) -> Option<&'a str> {
    let output_options: &[&str] = if program == "curl" { &["--output"] } else { &["--output-document"] };
    let output_letter = if program == "curl" { 'o' } else { 'O' };
    let mut remote_name = program == "wget";
    let mut url = None;
    let mut words = arguments.iter();
    while let Some(&word) = words.next() {
        if let Some((option, value)) = word.split_once('=') {
            if output_options.contains(&option) {
                return named(value);
            }
        }
        if output_options.contains(&word) {
            return named(words.next()?);
        }
        if program == "curl" && word == "--remote-name" {
            remote_name = true;
        }
        if let Some(cluster) = word.strip_prefix('-').filter(|w| !w.starts_with('-')) {
            // `-sSfo F`, `-qO- URL`, `-Ofile`: the letters up to the output
            // option are flags, what follows it is its value.
            if let Some((flags, value)) = cluster.split_once(output_letter) {
                if flags.chars().all(|c| c.is_ascii_alphanumeric()) {
                    return named(if value.is_empty() { words.next()? } else { value });
                }
            }
            if program == "curl" && short_flags(word).is_some_and(|flags| flags.contains('O')) {
                remote_name = true;
            }
        }
        if word.contains("://") {
            url = Some(word);
        }
    }
    let url = url.filter(|_| remote_name)?;
    let name = basename(url.split(['?', '#']).next().unwrap_or(url));
    named(name)
}

/// A file name, unless it is standard output or empty.
fn named(file: &str) -> Option<&str> {
    (!file.is_empty() && file != "-").then_some(file)
}

/// Whether a `chmod` mode lets someone execute: symbolic with `x`
/// (`+x`, `u+x`, `a+rx`) or octal with an odd digit (`755`, `0700`).
fn grants_execute(mode: &str) -> bool {
    if !mode.is_empty() && mode.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
        return mode.bytes().any(|b| (b - b'0') % 2 == 1);
    }
    !mode.starts_with('-') && mode.contains(['+', '=']) && mode.contains('x')
}

dac_rule_sdk::fixture_tests!(DetectionRule);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn download_options_name_the_file() {
        let file = |program: &str, line: &str| downloaded_file(program, &words(line)).map(str::to_owned);
        assert_eq!(file("curl", "-sSfo /tmp/p https://x/p").as_deref(), Some("/tmp/p"));
        assert_eq!(file("curl", "--output=/tmp/q https://x/q").as_deref(), Some("/tmp/q"));
        assert_eq!(file("curl", "-fsSLO https://x/tool.sh?v=1").as_deref(), Some("tool.sh"));
        assert_eq!(file("curl", "-s https://x/p").as_deref(), None);
        assert_eq!(file("curl", "-o - https://x/p").as_deref(), None);
        assert_eq!(file("wget", "-qO- https://x/p").as_deref(), None);
        assert_eq!(file("wget", "-O /tmp/w https://x/p").as_deref(), Some("/tmp/w"));
        assert_eq!(file("wget", "-q https://x/dir/agent").as_deref(), Some("agent"));
    }

    #[test]
    fn modes_that_grant_execute() {
        for mode in ["+x", "u+x", "a+rx", "755", "0700", "u=rwx"] {
            assert!(grants_execute(mode), "{mode}");
        }
        for mode in ["644", "-x", "go-w", "u+r", "0644"] {
            assert!(!grants_execute(mode), "{mode}");
        }
    }
}
