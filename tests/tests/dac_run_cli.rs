//! `dac-run` as a user runs it: inputs in every accepted shape, bad input
//! located and counted, the documented exit statuses and output.

use dac_tests::{dac_run, example_rule, example_rules_dir, sample_log};
use serde_json::Value;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const SHADOW_UUID: &str = "5e3566a3-9f19-4ac7-8710-ec5fb09260ed";
const TMP_UUID: &str = "f825ad39-d4b1-41da-91ec-6438d8dc9ace";
const SEED_EVENT: &str = r#"{"hostname":"pop-os","ip_address":"127.0.1.1","parent_pid":1,"pid":2,"path":"/usr/bin/sudo","binary":"sudo","arguments":"cat /etc/shadow","command_line":"/usr/bin/sudo cat /etc/shadow"}"#;
const BENIGN_EVENT: &str = r#"{"hostname":"pop-os","ip_address":"127.0.1.1","parent_pid":1,"pid":3,"path":"/usr/bin/ls","binary":"ls","arguments":"-l /tmp/","command_line":"/usr/bin/ls -l /tmp/"}"#;

fn run(args: &[&dyn AsRef<std::ffi::OsStr>]) -> Output {
    let mut command = Command::new(dac_run());
    for arg in args {
        command.arg(arg);
    }
    command.env("DAC_CACHE_DIR", cache_dir()).output().expect("run dac-run")
}

fn cache_dir() -> PathBuf {
    dac_tests::repo_root().join("target/dac-test-cache")
}

fn alerts(output: &Output) -> Vec<Value> {
    String::from_utf8(output.stdout.clone())
        .expect("stdout is UTF-8")
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|err| panic!("alert is not JSON ({err}): {l}")))
        .collect()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

/// (uuid, source) of each alert, for exact comparisons.
fn fired(output: &Output) -> Vec<(String, String)> {
    alerts(output)
        .iter()
        .map(|a| (a["uuid"].as_str().unwrap().to_owned(), a["source"].as_str().unwrap().to_owned()))
        .collect()
}

#[test]
fn seed_event_alert_has_the_seed_shape_and_provenance() {
    let dir = tempfile::tempdir().unwrap();
    let log = write(dir.path(), "logs.json", format!("{SEED_EVENT}\n{BENIGN_EVENT}\n").as_bytes());
    let output = run(&[&example_rule("shadow"), &"--replay", &log]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let alerts = alerts(&output);
    assert_eq!(alerts.len(), 1);
    let alert = &alerts[0];
    assert_eq!(alert["rule_name"], "Suspicious /etc/shadow Usage");
    assert_eq!(alert["uuid"], SHADOW_UUID);
    assert_eq!(alert["offending_log"], serde_json::from_str::<Value>(SEED_EVENT).unwrap());
    assert_eq!(alert["rule_version"], "1.0.0");
    assert!(alert["rule_hash"].as_str().unwrap().starts_with("sha256:"));
    assert_eq!(alert["rule_hash"].as_str().unwrap().len(), "sha256:".len() + 64);
    assert_eq!(alert["severity"], "high");
    assert_eq!(alert["tags"], serde_json::json!(["attack.credential-access", "attack.t1003.008"]));
    assert_eq!(alert["source"], format!("{}:1", log.display()));
    assert_eq!(alert["findings"][0]["matched"][0]["value"], "/usr/bin/sudo cat /etc/shadow");
    // The seed event has no `_id` and no `ts`: the alert says nothing of them.
    assert!(alert.get("event_id").is_none() && alert.get("ts").is_none());
    assert!(stderr(&output).contains("2 events from"), "{}", stderr(&output));
}

#[test]
fn sample_log_through_the_rules_directory_gives_the_reviewed_alerts() {
    let output = run(&[&example_rules_dir(), &"--replay", &sample_log()]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let mut got: Vec<(usize, String)> = fired(&output)
        .into_iter()
        .map(|(uuid, source)| (source.rsplit(':').next().unwrap().parse().unwrap(), uuid))
        .collect();
    got.sort();
    let expected: Vec<(usize, String)> =
        std::fs::read_to_string(dac_tests::repo_root().join("tests/expected/sample-alerts.txt"))
            .unwrap()
            .lines()
            .filter_map(|l| l.split('#').next().map(str::trim).filter(|l| !l.is_empty()).map(str::to_owned))
            .map(|l| {
                let (line, uuid) = l.split_once(' ').unwrap();
                (line.parse().unwrap(), uuid.to_owned())
            })
            .collect();
    assert_eq!(got, expected);
    let err = stderr(&output);
    assert!(err.contains("1200 events from"), "{err}");
    assert!(err.contains("12 alerts, 0 rule faults, 0 malformed skipped"), "{err}");
}

#[test]
fn json_arrays_and_mongoexport_extended_json_are_read() {
    let dir = tempfile::tempdir().unwrap();
    let exported = r#"[
  {"_id":{"$oid":"650cddcaf341f96a2006a05d"},"hostname":"pop-os","pid":{"$numberLong":"82052"},
   "command_line":"/usr/bin/sudo cat /etc/shadow","ts":{"$date":"2023-09-22T00:20:26.084Z"}},
  {"_id":{"$oid":"650cddcaf341f96a2006a05e"},"command_line":"/usr/bin/ls"}
]
"#;
    let log = write(dir.path(), "export.json", exported.as_bytes());
    let output = run(&[&example_rule("shadow"), &"--replay", &log]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let alerts = alerts(&output);
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0]["event_id"], "650cddcaf341f96a2006a05d");
    assert_eq!(alerts[0]["source"], format!("{}:2", log.display()));
    // The event is passed through exactly as exported, wrappers included.
    assert_eq!(alerts[0]["offending_log"]["_id"]["$oid"], "650cddcaf341f96a2006a05d");
    assert_eq!(alerts[0]["ts"]["$date"], "2023-09-22T00:20:26.084Z");
}

#[test]
fn malformed_lines_are_located_counted_and_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!("{SEED_EVENT}\n{{\"command_line\": \n[1,2]\n\n\"just a string\"\n{SEED_EVENT}\n");
    let log = write(dir.path(), "bad.ndjson", text.as_bytes());
    let output = run(&[&example_rule("shadow"), &"--replay", &log]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let sources: Vec<String> = fired(&output).into_iter().map(|(_, s)| s).collect();
    let name = log.display().to_string();
    assert_eq!(sources, [format!("{name}:1"), format!("{name}:6")]);
    let err = stderr(&output);
    assert!(err.contains(&format!("{name}:2:")) && err.contains("EOF while parsing"), "{err}");
    assert!(err.contains(&format!("{name}:3: expected a JSON object (a document), found an array")), "{err}");
    assert!(err.contains(&format!("{name}:5: expected a JSON object (a document), found a string")), "{err}");
    assert!(err.contains("3 malformed skipped"), "{err}");

    let strict = run(&[&example_rule("shadow"), &"--replay", &log, &"--strict"]);
    assert_eq!(strict.status.code(), Some(2));
    assert!(stderr(&strict).contains(&format!("{name}:2:")), "{}", stderr(&strict));
    assert_eq!(fired(&strict).len(), 1, "the alert before the bad line was still written");
}

#[test]
fn non_utf8_bytes_are_repaired_and_reported_not_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = b"{\"command_line\":\"/usr/bin/cat \xff\xfe /etc/shadow\"}\n".to_vec();
    bytes.extend_from_slice(BENIGN_EVENT.as_bytes());
    let log = write(dir.path(), "latin1.ndjson", &bytes);
    let output = run(&[&example_rule("shadow"), &"--replay", &log]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let alerts = alerts(&output);
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0]["offending_log"]["command_line"], "/usr/bin/cat \u{fffd}\u{fffd} /etc/shadow");
    let err = stderr(&output);
    assert!(err.contains(&format!("{}:1: bytes that are not UTF-8", log.display())), "{err}");
    assert!(err.contains("1 repaired (non-UTF-8)"), "{err}");
}

#[test]
fn a_16_mib_document_is_evaluated() {
    let dir = tempfile::tempdir().unwrap();
    let padding = "x".repeat(16 << 20);
    let big = format!("{{\"command_line\":\"/usr/bin/cat /etc/shadow\",\"blob\":\"{padding}\"}}\n{BENIGN_EVENT}\n");
    let log = write(dir.path(), "big.ndjson", big.as_bytes());
    let output = run(&[&example_rule("shadow"), &"--replay", &log, &"--quiet"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let alerts = alerts(&output);
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0]["offending_log"]["blob"].as_str().unwrap().len(), 16 << 20);
}

#[test]
fn stdin_is_streamed_and_alerts_appear_before_input_ends() {
    let mut child = Command::new(dac_run())
        .args([example_rule("shadow").as_os_str(), "--replay".as_ref(), "-".as_ref()])
        .env("DAC_CACHE_DIR", cache_dir())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    writeln!(stdin, "{SEED_EVENT}").unwrap();
    stdin.flush().unwrap();
    // The alert must arrive while stdin is still open.
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut stdout, &mut line).unwrap();
    let alert: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(alert["uuid"], SHADOW_UUID);
    assert_eq!(alert["source"], "<stdin>:1");
    writeln!(stdin, "{BENIGN_EVENT}").unwrap();
    drop(stdin);
    let status = child.wait().unwrap();
    assert!(status.success());
}

#[test]
fn exit_statuses_are_as_documented() {
    let dir = tempfile::tempdir().unwrap();
    let malicious = write(dir.path(), "m.ndjson", format!("{SEED_EVENT}\n").as_bytes());
    let benign = write(dir.path(), "b.ndjson", format!("{BENIGN_EVENT}\n").as_bytes());
    let shadow = example_rule("shadow");
    assert_eq!(run(&[&shadow, &"--replay", &malicious, &"--fail-on-alert"]).status.code(), Some(1));
    assert_eq!(run(&[&shadow, &"--replay", &benign, &"--fail-on-alert"]).status.code(), Some(0));
    assert_eq!(run(&[&shadow, &"--replay", &malicious]).status.code(), Some(0));

    let missing = run(&[&shadow, &"--replay", &dir.path().join("nope.json")]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(stderr(&missing).contains("nope.json"), "{}", stderr(&missing));

    let no_rules = run(&[&dir.path().join("no-such-rule.wasm"), &"--replay", &benign]);
    assert_eq!(no_rules.status.code(), Some(2));
    assert!(stderr(&no_rules).contains("no-such-rule.wasm"), "{}", stderr(&no_rules));

    let empty_dir = tempfile::tempdir().unwrap();
    let none = run(&[&empty_dir.path(), &"--replay", &benign]);
    assert_eq!(none.status.code(), Some(2));
    assert!(stderr(&none).contains("no rules (.wasm, .yml, .yaml) found"), "{}", stderr(&none));

    let usage = run(&[&shadow]);
    assert_eq!(usage.status.code(), Some(2));
}

#[test]
fn duplicate_uuids_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let shadow = example_rule("shadow");
    let copy = dir.path().join("shadow-copy.wasm");
    std::fs::copy(&shadow, &copy).unwrap();
    let log = write(dir.path(), "b.ndjson", BENIGN_EVENT.as_bytes());
    let output = run(&[&shadow, &copy, &"--replay", &log]);
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains(&format!("both declare uuid {SHADOW_UUID}")), "{}", stderr(&output));
}

#[test]
fn pretty_format_shows_the_seed_alert_line() {
    let dir = tempfile::tempdir().unwrap();
    let log = write(dir.path(), "logs.json", format!("{SEED_EVENT}\n").as_bytes());
    let output =
        run(&[&example_rule("shadow"), &example_rule("tmp-output-redir"), &"--replay", &log, &"--format", &"pretty"]);
    let text = String::from_utf8(output.stdout).unwrap();
    assert!(text.starts_with(&format!("alert!! {SHADOW_UUID} - Suspicious /etc/shadow Usage [high] at ")), "{text}");
    assert!(text.contains("    command_line: /usr/bin/sudo cat /etc/shadow"), "{text}");
    assert!(!text.contains(TMP_UUID));
}

#[test]
fn results_do_not_depend_on_the_prefilter_or_isolation_mode() {
    let rules = example_rules_dir();
    let log = sample_log();
    let default = fired(&run(&[&rules, &"--replay", &log, &"-q"]));
    assert_eq!(default.len(), 12);
    assert_eq!(fired(&run(&[&rules, &"--replay", &log, &"-q", &"--no-prefilter"])), default);
    assert_eq!(fired(&run(&[&rules, &"--replay", &log, &"-q", &"--fresh-instance"])), default);
    assert_eq!(fired(&run(&[&rules, &"--replay", &log, &"-q", &"--fuel", &"10000000"])), default);
}

#[test]
fn dac_run_and_dac_dash_run_are_one_command_with_byte_identical_output() {
    // Components and Sigma rules, whose alerts interleave.
    let sigma = dac_tests::sigma_dir();
    for format in ["json", "text"] {
        // A deadline far away: a loaded machine must not turn one slow
        // evaluation into a fault (exit 3) in one run and not the other.
        let args: [&dyn AsRef<std::ffi::OsStr>; 8] = [
            &example_rules_dir(),
            &sigma,
            &"--replay",
            &sample_log(),
            &"--format",
            &format,
            &"--deadline-ms",
            &"10000",
        ];
        let standalone = run(&args);
        let mut command = Command::new(dac_tests::dac());
        command.arg("run").args(args.iter().map(|arg| arg.as_ref()));
        let subcommand = command.env("DAC_CACHE_DIR", cache_dir()).output().expect("run dac run");
        assert_eq!(standalone.status.code(), Some(0), "{}", stderr(&standalone));
        assert_eq!(subcommand.status.code(), Some(0), "{}", stderr(&subcommand));
        assert!(!standalone.stdout.is_empty());
        assert!(
            standalone.stdout == subcommand.stdout,
            "--format {format}: dac run and dac-run print different alerts"
        );
        // The summary differs only in the name it gives the command.
        let summary = |output: &Output, program: &str| {
            let text = stderr(output);
            let line = text.lines().find(|l| l.starts_with(program)).unwrap_or_else(|| panic!("{text}")).to_owned();
            // Drop the timing, which differs from run to run.
            line[program.len()..].split(" in ").next().unwrap().to_owned()
        };
        assert_eq!(summary(&standalone, "dac-run:"), summary(&subcommand, "dac run:"));
    }
}

/// `--threads N` evaluates on N threads and puts the results back in
/// stream order: the alerts, the located notices and the counts are those
/// of one thread, byte for byte, whether whole batches go to the workers
/// in turn (Sigma and YAML rules keep no state) or are split by host
/// (components keep their instance).
#[test]
fn any_thread_count_prints_the_same_alerts_notices_and_counts_in_the_same_order() {
    let dir = tempfile::tempdir().unwrap();
    // Several batches of 512, attacks among them, a malformed and a
    // repaired line in the middle.
    let mut mix = Vec::new();
    let config = dac_tests::mix::MixConfig { attacks_per_mille: 60, ..Default::default() };
    dac_tests::mix::write_mix(config, 3_000, &mut mix).unwrap();
    let mut bytes = Vec::new();
    for (number, line) in mix.split(|&b| b == b'\n').filter(|l| !l.is_empty()).enumerate() {
        match number {
            700 => bytes.extend_from_slice(b"{\"command_line\": \n"),
            1_900 => bytes
                .extend_from_slice(b"{\"hostname\":\"web-01\",\"command_line\":\"/usr/bin/cat \xff /etc/shadow\"}\n"),
            _ => {}
        }
        bytes.extend_from_slice(line);
        bytes.push(b'\n');
    }
    let log = write(dir.path(), "mix.ndjson", &bytes);
    let sigma = dac_tests::sigma_dir();
    let yaml = dac_tests::yaml_rules_dir();
    let components = example_rules_dir();
    let rule_sets: [Vec<&dyn AsRef<std::ffi::OsStr>>; 2] = [vec![&sigma, &yaml], vec![&components, &sigma]];
    for rules in rule_sets {
        let with_threads = |threads: &str| {
            let mut args = rules.clone();
            args.extend([&"--replay" as &dyn AsRef<std::ffi::OsStr>, &log, &"--deadline-ms", &"10000"]);
            args.extend([&"--threads" as &dyn AsRef<std::ffi::OsStr>, &threads]);
            let output = run(&args);
            assert_eq!(output.status.code(), Some(0), "--threads {threads}: {}", stderr(&output));
            // Everything but the log lines' timestamps and the summary's
            // timing.
            let text = stderr(&output);
            let untimed = |line: &str| {
                let line = match line.split_once("Z  ") {
                    Some((time, rest)) if time.len() == 26 && time.starts_with("20") => rest,
                    _ => line,
                };
                line.split(" in ").next().unwrap().to_owned()
            };
            let lines: Vec<String> = text.lines().map(untimed).collect();
            (output.stdout, lines)
        };
        let (one, one_notices) = with_threads("1");
        let count = one.split(|&b| b == b'\n').filter(|line| !line.is_empty()).count();
        assert!(count > 100, "{count} alerts");
        let name = log.display().to_string();
        let noticed = |text: String| one_notices.iter().any(|l| l.contains(&text));
        assert!(noticed(format!("skipped: {name}:701:16: EOF while parsing")), "{one_notices:?}");
        assert!(noticed(format!("repaired: {name}:1902: bytes that are not UTF-8")), "{one_notices:?}");
        for threads in ["2", "3"] {
            let (many, notices) = with_threads(threads);
            assert!(many == one, "--threads {threads} printed other alerts, or in another order");
            assert_eq!(notices, one_notices, "--threads {threads}");
        }
    }
}
