//! Rules that misbehave on purpose (`tests/hostile-rules`), run by the real
//! `dac-run` next to the well-behaved shadow rule: every misbehaviour is
//! contained to the one (rule, event) evaluation it happened in, reported
//! precisely, and costs the other rule none of its alerts.

use dac_engine::{ComponentCache, Engine, Limits, Outcome, Sandbox, Stats};
use dac_tests::{dac_run, example_rule, hostile_rule};
use serde_json::Value as Json;
use std::collections::BTreeSet;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const SHADOW_UUID: &str = "5e3566a3-9f19-4ac7-8710-ec5fb09260ed";
const STATEFUL_COUNTER_UUID: &str = "2405c49e-b0da-4113-8388-d745bc5d2c34";

/// Events in the replay log, and the (1-based) lines among them that name
/// `/etc/shadow` in their command line.
const EVENTS: u64 = 12;
const SHADOW_LINES: [u64; 3] = [3, 7, 11];

/// `tests/hostile-rules/log-flood`: lines logged per evaluation.
const FLOOD_LINES_PER_EVENT: u64 = 100_000;

/// A run of `dac-run` that takes longer than this has not contained its rule.
const RUN_TIMEOUT: Duration = Duration::from_secs(120);

/// `--deadline-ms` for every rule but infinite-loop. Those rules fault (or
/// finish) within a few milliseconds; a deadline this far away keeps a busy
/// machine from ever turning their specific fault into a deadline fault,
/// while RUN_TIMEOUT still catches a run that never ends.
const SLACK_DEADLINE_MS: &str = "10000";

/// The replay log: twelve events in the seed's schema, three of which
/// reference /etc/shadow (lines 3, 7 and 11).
fn replay_log() -> (tempfile::TempDir, PathBuf) {
    let commands = [
        ("/usr/bin/ls", "-la /var/log"),
        ("/usr/bin/grep", "-r error /var/log/syslog"),
        ("/usr/bin/sudo", "cat /etc/shadow"),
        ("/usr/bin/ps", "aux"),
        ("/usr/bin/cat", "/etc/hostname"),
        ("/usr/bin/df", "-h"),
        ("/usr/bin/cp", "/etc/shadow /tmp/s"),
        ("/usr/bin/vim", "/etc/hosts"),
        ("/usr/bin/uptime", ""),
        ("/usr/bin/tail", "-n 50 /var/log/auth.log"),
        ("/usr/bin/head", "-n 3 /etc/shadow"),
        ("/usr/bin/whoami", ""),
    ];
    assert_eq!(commands.len() as u64, EVENTS);
    let mut log = String::new();
    for (index, (path, arguments)) in commands.iter().enumerate() {
        let binary = path.rsplit('/').next().expect("a path has a last segment");
        let command_line = if arguments.is_empty() { path.to_string() } else { format!("{path} {arguments}") };
        let event = serde_json::json!({
            "hostname": "web-01",
            "ip_address": "10.0.1.11",
            "parent_pid": 1000 + index,
            "pid": 2000 + index,
            "path": path,
            "binary": binary,
            "arguments": arguments,
            "command_line": command_line,
            "ts": 1_695_342_000_000_u64 + index as u64,
        });
        log.push_str(&event.to_string());
        log.push('\n');
    }
    let shadow_lines: Vec<u64> =
        log.lines().enumerate().filter(|(_, l)| l.contains("/etc/shadow")).map(|(i, _)| i as u64 + 1).collect();
    assert_eq!(shadow_lines, SHADOW_LINES);
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("events.ndjson");
    std::fs::write(&path, log).expect("writing the replay log");
    (dir, path)
}

/// What one `dac-run` process did.
struct Run {
    status: Option<i32>,
    stdout: String,
    stderr: String,
    elapsed: Duration,
}

impl Run {
    fn context(&self) -> String {
        format!("exit status {:?}\n--- stderr:\n{}\n--- stdout:\n{}", self.status, self.stderr, self.stdout)
    }
}

/// Runs `dac-run` with `args` and waits for it (killing it, and failing,
/// after [`RUN_TIMEOUT`]). The compiled-code cache is off, so the tests
/// neither read nor write the user's cache, and the log filter is fixed.
fn dac_run_with(args: &[&std::ffi::OsStr]) -> Run {
    let started = Instant::now();
    let mut child = Command::new(dac_run())
        .args(args)
        .arg("--no-cache")
        .env("DAC_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning dac-run");
    let drain = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            pipe.read_to_string(&mut text).expect("dac-run writes UTF-8");
            text
        })
    };
    let stdout = drain(Box::new(child.stdout.take().expect("piped stdout")));
    let stderr = drain(Box::new(child.stderr.take().expect("piped stderr")));
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting for dac-run") {
            break status;
        }
        if started.elapsed() > RUN_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("dac-run {args:?} did not finish within {RUN_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let elapsed = started.elapsed();
    Run {
        status: status.code(),
        stdout: stdout.join().expect("stdout reader"),
        stderr: stderr.join().expect("stderr reader"),
        elapsed,
    }
}

/// Replays the log through the shadow rule and one hostile rule.
fn run_beside_shadow(hostile: &str, log: &Path, options: &[&str]) -> Run {
    let shadow = example_rule("shadow");
    let hostile = hostile_rule(hostile);
    let mut args: Vec<&std::ffi::OsStr> = vec![shadow.as_os_str(), hostile.as_os_str(), "--replay".as_ref()];
    args.push(log.as_os_str());
    args.extend(options.iter().map(|o| std::ffi::OsStr::new(*o)));
    dac_run_with(&args)
}

/// One alert line of stdout, reduced to what the tests check.
struct Alert {
    uuid: String,
    line: u64,
    json: Json,
}

/// Parses every stdout line as an alert; `source` must be `LOG:LINE`.
fn alerts(run: &Run, log: &Path) -> Vec<Alert> {
    let prefix = format!("{}:", log.display());
    run.stdout
        .lines()
        .map(|text| {
            let json: Json =
                serde_json::from_str(text).unwrap_or_else(|err| panic!("alert is not JSON ({err}): {text}"));
            let uuid = json["uuid"].as_str().unwrap_or_else(|| panic!("alert without uuid: {text}")).to_owned();
            let source = json["source"].as_str().unwrap_or_else(|| panic!("alert without source: {text}"));
            let line = source
                .strip_prefix(&prefix)
                .and_then(|line| line.parse().ok())
                .unwrap_or_else(|| panic!("alert source {source:?} is not {prefix}LINE"));
            Alert { uuid, line, json }
        })
        .collect()
}

/// The shadow rule's alerts are exactly one per /etc/shadow event, each
/// carrying that event and the matched command line.
fn assert_shadow_alerts_exact(alerts: &[Alert], log: &Path, run: &Run) {
    let shadow: Vec<&Alert> = alerts.iter().filter(|a| a.uuid == SHADOW_UUID).collect();
    let got: BTreeSet<u64> = shadow.iter().map(|a| a.line).collect();
    assert_eq!(got, BTreeSet::from(SHADOW_LINES), "shadow alerts by line\n{}", run.context());
    assert_eq!(shadow.len(), SHADOW_LINES.len(), "one shadow alert per event\n{}", run.context());
    let events: Vec<Json> = std::fs::read_to_string(log)
        .expect("replay log")
        .lines()
        .map(|l| serde_json::from_str(l).expect("replay event"))
        .collect();
    for alert in shadow {
        let event = &events[alert.line as usize - 1];
        assert_eq!(alert.json["rule_name"], "Suspicious /etc/shadow Usage");
        assert_eq!(alert.json["offending_log"], *event, "alert for line {}", alert.line);
        let findings = alert.json["findings"].as_array().expect("findings");
        assert_eq!(findings.len(), 1, "{}", alert.json);
        assert_eq!(findings[0]["matched"][0]["path"], "command_line");
        assert_eq!(findings[0]["matched"][0]["value"], event["command_line"]);
    }
}

/// How every fault notice ends.
const NOTICE_END: &str = "; its instance was discarded";

/// The fault notices on stderr, in order, without their `rule fault: `
/// label. A notice may span lines (wasm backtraces); each runs to the first
/// [`NOTICE_END`] after its label.
fn fault_notices(stderr: &str) -> Vec<&str> {
    stderr
        .split("rule fault: ")
        .skip(1)
        .map(|rest| match rest.find(NOTICE_END) {
            Some(end) => &rest[..end + NOTICE_END.len()],
            None => panic!("a fault notice without {NOTICE_END:?}:\n{rest}"),
        })
        .collect()
}

/// The summary line of one rule, found by its file name.
fn summary_line<'a>(run: &'a Run, file: &str) -> &'a str {
    let needle = format!("  {file}  (");
    let lines: Vec<&str> = run.stderr.lines().filter(|l| l.contains(&needle)).collect();
    assert_eq!(lines.len(), 1, "one summary line for {file}\n{}", run.context());
    lines[0]
}

/// The run's first summary line (`dac-run: N events from …`).
fn summary_head(run: &Run) -> &str {
    run.stderr
        .lines()
        .find(|l| l.starts_with("dac-run: ") && l.contains(" events from "))
        .unwrap_or_else(|| panic!("no summary\n{}", run.context()))
}

/// The common verdict on a rule that faults on every event: status 3; one
/// notice per event, in order, naming the rule's file and uuid, saying
/// `reason`, and discarding the instance; the summary counts 12 faults of
/// `kind` for the rule, none elsewhere; and the shadow rule is untouched.
/// Returns the notices for rule-specific checks.
fn assert_faults_on_every_event<'r>(run: &'r Run, log: &Path, package: &str, kind: &str, reason: &str) -> Vec<&'r str> {
    let file = format!("{}.wasm", package.replace('-', "_"));
    assert_eq!(run.status, Some(3), "{}", run.context());
    let alerts = alerts(run, log);
    assert_shadow_alerts_exact(&alerts, log, run);
    assert_eq!(alerts.len(), SHADOW_LINES.len(), "only the shadow rule alerts\n{}", run.context());

    let notices = fault_notices(&run.stderr);
    assert_eq!(notices.len() as u64, EVENTS, "one fault notice per event\n{}", run.context());
    let uuid = hostile_uuid(package);
    for (index, notice) in notices.iter().enumerate() {
        let head = format!("{}:{}: rule {file} ({uuid}) ", log.display(), index + 1);
        assert!(notice.starts_with(&head), "notice {index} should start with {head:?}:\n{notice}");
        assert!(notice.contains(reason), "notice {index} should say {reason:?}:\n{notice}");
    }

    let head = summary_head(run);
    for expected in [
        format!("dac-run: {EVENTS} events from {} in ", log.display()),
        format!("; {} alerts, {EVENTS} rule faults, 0 malformed skipped,", SHADOW_LINES.len()),
    ] {
        assert!(head.contains(&expected), "summary should contain {expected:?}: {head}");
    }
    let rule = summary_line(run, &file);
    assert!(rule.trim_start().starts_with("0 alerts "), "{rule}");
    assert!(rule.ends_with(&format!("({EVENTS} evaluated)  FAULTS: {EVENTS} {kind}")), "{rule}");
    let shadow = summary_line(run, "shadow.wasm");
    assert!(shadow.ends_with(&format!("({} evaluated)", SHADOW_LINES.len())), "{shadow}");
    assert!(shadow.trim_start().starts_with(&format!("{} alerts ", SHADOW_LINES.len())), "{shadow}");
    notices
}

/// The uuid each hostile rule declares in `tests/hostile-rules/*/src/lib.rs`.
fn hostile_uuid(package: &str) -> &'static str {
    match package {
        "infinite-loop" => "a7cb501f-d87a-4919-9609-b02d1445ed03",
        "memory-bomb" => "21816c91-309d-4070-9941-01cbbce00d7a",
        "deep-recursion" => "5d10445a-9410-4680-86e4-9e49d5355873",
        "explicit-panic" => "63a4804b-c6e9-47cf-a48c-8a0100013142",
        "log-flood" => "2a784bde-c43e-4454-acd9-227744e77a69",
        "huge-finding" => "57bf120a-3fc1-4480-a3cc-5892298421c8",
        "capability-escape" => "21c82d77-b9d3-4fd1-ba2a-463482111ab1",
        "stateful-counter" => STATEFUL_COUNTER_UUID,
        other => panic!("no hostile rule {other}"),
    }
}

#[test]
fn infinite_loop_is_stopped_by_the_deadline_on_every_event() {
    let (_dir, log) = replay_log();
    let run = run_beside_shadow("infinite-loop", &log, &["--deadline-ms", "50"]);
    assert_faults_on_every_event(&run, &log, "infinite-loop", "deadline", "exceeded its deadline of 50ms");
    // Each evaluation really spun until its deadline rather than stopping
    // early: at least 12 × 45 ms, as the first 5 ms epoch tick can come at
    // once. (RUN_TIMEOUT is the upper bound: a loop nothing stops hangs.)
    let spun = Duration::from_millis(EVENTS * 45);
    assert!(run.elapsed >= spun, "finished in {:?}, before {EVENTS} deadlines could pass", run.elapsed);
}

#[test]
fn infinite_loop_is_stopped_by_fuel_without_a_deadline() {
    let (_dir, log) = replay_log();
    let run = run_beside_shadow("infinite-loop", &log, &["--fuel", "100000000", "--deadline-ms", "0"]);
    assert_faults_on_every_event(&run, &log, "infinite-loop", "fuel", "ran out of fuel (100000000 units)");
}

#[test]
fn memory_bomb_is_stopped_at_the_memory_cap_on_every_event() {
    let (_dir, log) = replay_log();
    let run = run_beside_shadow("memory-bomb", &log, &["--deadline-ms", SLACK_DEADLINE_MS]);
    let notices = assert_faults_on_every_event(
        &run,
        &log,
        "memory-bomb",
        "memory",
        "exceeded its memory limit of 67108864 bytes (asked for ",
    );
    // The refused growth is the one that would cross the 64 MiB cap.
    for notice in notices {
        let asked: u64 = notice
            .split("(asked for ")
            .nth(1)
            .and_then(|rest| rest.split(')').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no requested size in {notice}"));
        assert!(asked > 64 << 20 && asked <= (64 << 20) + (2 << 20), "asked for {asked}: {notice}");
    }
}

/// deep-recursion keeps a 1 KiB buffer in linear memory in every frame, so
/// it exhausts the guest's own 64 KiB shadow stack (`-zstack-size=65536`
/// from `.cargo/config.toml`; the stack sits at the bottom of linear memory)
/// after ~60 frames — long before the 512 KiB wasm call stack wasmtime
/// enforces. `__stack_pointer` then wraps below address 0 and the next
/// store faults near the top of the 32-bit space, which the host reports as
/// a stack overflow rather than as a bare out-of-bounds trap.
#[test]
fn deep_recursion_overflowing_the_guest_stack_is_reported_as_a_stack_overflow() {
    let (_dir, log) = replay_log();
    let run = run_beside_shadow("deep-recursion", &log, &["--deadline-ms", SLACK_DEADLINE_MS]);
    let notices = assert_faults_on_every_event(&run, &log, "deep-recursion", "stack", "overflowed its stack");
    for notice in notices {
        assert!(!notice.contains("deadline"), "{notice}");
    }
}

#[test]
fn explicit_panic_is_reported_with_its_message_on_every_event() {
    let (_dir, log) = replay_log();
    let run = run_beside_shadow("explicit-panic", &log, &["--deadline-ms", SLACK_DEADLINE_MS]);
    let notices = assert_faults_on_every_event(
        &run,
        &log,
        "explicit-panic",
        "trap",
        "wasm `unreachable` instruction executed (last error log: rule panicked: explicit panic for the host test (at ",
    );
    // The SDK's panic hook logs the panic before the abort; the host
    // attaches that line to the fault of the same evaluation, on one line.
    for notice in notices {
        assert!(notice.contains("explicit-panic/src/lib.rs:"), "the panic location is missing: {notice}");
        assert!(!notice.contains('\n'), "{notice}");
    }
}

#[test]
fn huge_finding_is_refused_above_the_finding_size_limit() {
    let (_dir, log) = replay_log();
    let run = run_beside_shadow("huge-finding", &log, &["--deadline-ms", SLACK_DEADLINE_MS]);
    assert_faults_on_every_event(
        &run,
        &log,
        "huge-finding",
        "finding-limit",
        "returned a finding of 1048576 bytes, above the limit of 65536",
    );
}

#[test]
fn capability_escape_traps_naming_the_denied_wasi_call() {
    let (_dir, log) = replay_log();
    let run = run_beside_shadow("capability-escape", &log, &["--deadline-ms", SLACK_DEADLINE_MS]);
    let notices = assert_faults_on_every_event(
        &run,
        &log,
        "capability-escape",
        "trap",
        "a capability dac does not grant to rules",
    );
    for notice in notices {
        // Opening a path starts with the preopened directories, which no
        // rule is given.
        assert!(notice.contains("the rule called `wasi:filesystem/preopens@"), "{notice}");
        assert!(notice.contains("#get-directories`"), "{notice}");
    }
    assert!(!run.stdout.contains("root:"), "/etc/passwd leaked into an alert");
}

#[test]
fn log_flood_is_rate_limited_and_every_dropped_line_counted() {
    let (_dir, log) = replay_log();
    // 100,000 host calls take ~25 ms unloaded: a 50 ms deadline would make
    // this legal evaluation fault on a busy machine.
    let run = run_beside_shadow("log-flood", &log, &["--deadline-ms", SLACK_DEADLINE_MS]);
    assert_eq!(run.status, Some(0), "{}", run.context());
    assert!(!run.stderr.contains("rule fault: "), "{}", run.context());
    let alerts = alerts(&run, &log);
    assert_shadow_alerts_exact(&alerts, &log, &run);
    assert_eq!(alerts.len(), SHADOW_LINES.len(), "{}", run.context());

    let rule = summary_line(&run, "log_flood.wasm");
    assert!(rule.contains(&format!("({EVENTS} evaluated)")) && !rule.contains("FAULTS"), "{rule}");
    let dropped: u64 = rule
        .split("log lines dropped: ")
        .nth(1)
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no dropped count: {rule}"));
    let emitted = run.stderr.matches("log flood line ").count() as u64;
    // The forged line stays inside the rule's, escaped.
    assert!(!run.stderr.lines().any(|line| line.contains("ERROR dac: forged") && !line.contains("log flood line 0")));
    assert!(
        run.stderr.contains(r"log flood line 0\n2026-01-01T00:00:00Z ERROR dac: forged\u{1b}[2J"),
        "{}",
        run.context()
    );
    assert!(!run.stderr.contains('\u{1b}'), "{}", run.context());
    let total = EVENTS * FLOOD_LINES_PER_EVENT;
    // Every line is either printed or counted as dropped.
    assert_eq!(emitted + dropped, total, "{emitted} printed + {dropped} dropped");
    // Limits::default(): a burst of 20, then 20 lines per second.
    let rate = Limits::default().log_lines_per_second as u64;
    let allowance = rate + rate * run.elapsed.as_secs().saturating_add(1);
    assert!(emitted >= rate.min(total), "the initial burst of {rate} lines is printed; got {emitted}");
    assert!(emitted <= allowance, "{emitted} lines printed in {:?}, above the rate limit", run.elapsed);
    assert!(dropped >= total - allowance, "dropped {dropped}");
}

#[test]
fn stateful_counter_keeps_state_across_events_in_a_reused_instance() {
    let (_dir, log) = replay_log();
    let run = run_beside_shadow("stateful-counter", &log, &["--deadline-ms", SLACK_DEADLINE_MS]);
    assert_eq!(run.status, Some(0), "{}", run.context());
    let alerts = alerts(&run, &log);
    assert_shadow_alerts_exact(&alerts, &log, &run);
    let counter: Vec<(u64, String)> = alerts
        .iter()
        .filter(|a| a.uuid == STATEFUL_COUNTER_UUID)
        .map(|a| (a.line, a.json["findings"][0]["message"].as_str().expect("message").to_owned()))
        .collect();
    let expected: Vec<(u64, String)> =
        (2..=EVENTS).map(|n| (n, format!("state survived: evaluation #{n} on host web-01"))).collect();
    assert_eq!(counter, expected, "{}", run.context());
    assert_eq!(alerts.len(), SHADOW_LINES.len() + expected.len(), "{}", run.context());
}

/// `--threads` sends each host's events to one instance, in order
/// (`dac_engine::PARTITION_FIELD`): a rule counting per host in its
/// instance alerts exactly as on one thread, over several batches.
#[test]
fn stateful_counter_counts_each_hosts_events_exactly_on_any_number_of_threads() {
    let dir = tempfile::tempdir().expect("temp dir");
    let log = dir.path().join("hosts.ndjson");
    let hosts = ["web-01", "web-02", "db-01", "db-02", "build-01", "laptop-7", "ci-3"];
    let (mut text, mut expected, mut seen) = (String::new(), Vec::new(), std::collections::BTreeMap::new());
    for line in 1..=2_000u64 {
        let host = hosts[((line * line + 3 * line) % 7) as usize];
        let event = serde_json::json!({"hostname": host, "pid": line, "command_line": format!("/usr/bin/true {line}")});
        text.push_str(&format!("{event}\n"));
        let evaluation = seen.entry(host).or_insert(0u64);
        *evaluation += 1;
        if *evaluation > 1 {
            expected.push((line, format!("state survived: evaluation #{evaluation} on host {host}")));
        }
    }
    std::fs::write(&log, text).expect("write the log");
    for threads in ["1", "3"] {
        let options = ["--deadline-ms", SLACK_DEADLINE_MS, "--threads", threads];
        let run = run_beside_shadow("stateful-counter", &log, &options);
        assert_eq!(run.status, Some(0), "{}", run.context());
        let counter: Vec<(u64, String)> = alerts(&run, &log)
            .iter()
            .filter(|a| a.uuid == STATEFUL_COUNTER_UUID)
            .map(|a| (a.line, a.json["findings"][0]["message"].as_str().expect("message").to_owned()))
            .collect();
        assert!(counter == expected, "--threads {threads}: a host's events reached more than one instance");
    }
}

#[test]
fn stateful_counter_never_fires_with_a_fresh_instance_per_event() {
    let (_dir, log) = replay_log();
    let run = run_beside_shadow("stateful-counter", &log, &["--deadline-ms", SLACK_DEADLINE_MS, "--fresh-instance"]);
    assert_eq!(run.status, Some(0), "{}", run.context());
    let alerts = alerts(&run, &log);
    assert_shadow_alerts_exact(&alerts, &log, &run);
    assert_eq!(alerts.len(), SHADOW_LINES.len(), "no state survives an event\n{}", run.context());
    let rule = summary_line(&run, "stateful_counter.wasm");
    assert!(rule.trim_start().starts_with("0 alerts ") && rule.ends_with(&format!("({EVENTS} evaluated)")), "{rule}");
}

/// Loads one file beside the shadow rule and expects a load error: status
/// 2, the file named with `reasons`, and no event evaluated.
fn assert_refused(file: &Path, log: &Path, reasons: &[&str]) {
    let shadow = example_rule("shadow");
    let run = dac_run_with(&[shadow.as_os_str(), file.as_os_str(), "--replay".as_ref(), log.as_os_str()]);
    assert_eq!(run.status, Some(2), "{}", run.context());
    assert!(run.stdout.is_empty(), "nothing may run: {}", run.context());
    let message = format!("{}: ", file.display());
    let line = run
        .stderr
        .lines()
        .find(|l| l.trim_start().starts_with(&message))
        .unwrap_or_else(|| panic!("no error names {}\n{}", file.display(), run.context()));
    for reason in reasons {
        assert!(line.contains(reason), "expected {reason:?} in: {line}");
    }
    assert!(run.stderr.contains("1 rule file(s) could not be loaded; nothing was run"), "{}", run.context());
    assert!(!run.stderr.contains(" events from "), "no summary, nothing ran: {}", run.context());
}

#[test]
fn other_world_component_is_refused_naming_the_file_and_nothing_runs() {
    let (_dir, log) = replay_log();
    let other_world = hostile_rule("other-world");
    let alone = dac_run_with(&[
        other_world.as_os_str(),
        "--replay".as_ref(),
        log.as_os_str(),
        "--deadline-ms".as_ref(),
        "50".as_ref(),
    ]);
    assert_eq!(alone.status, Some(2), "{}", alone.context());
    assert!(alone.stdout.is_empty(), "{}", alone.context());
    for expected in [
        &format!("{}: not a dac rule", other_world.display()) as &str,
        "does not export `metadata` and `evaluate`",
        "(it exports `run`)",
        "dac:rule/rule@0.2.0 world in wit/rule.wit, or its 0.1.0 in wit/0.1.0/",
    ] {
        assert!(alone.stderr.contains(expected), "expected {expected:?}\n{}", alone.context());
    }
    // Next to a good rule it is refused all the same: a bad rule file stops
    // the run instead of being skipped.
    assert_refused(&other_world, &log, &["not a dac rule", "does not export `metadata` and `evaluate`"]);
}

#[test]
fn component_of_another_dac_rule_version_is_refused_naming_the_import() {
    let (_dir, log) = replay_log();
    assert_refused(
        &hostile_rule("future-version"),
        &log,
        &[
            "not a dac rule: it imports `dac:rule/types@0.3.0`",
            "this host provides dac:rule/types@0.2.0, dac:rule/host@0.2.0, dac:rule/state@0.2.0, dac:rule/types@0.1.0, dac:rule/host@0.1.0",
        ],
    );
}

#[test]
fn files_that_are_not_components_are_refused_before_anything_runs() {
    let (dir, log) = replay_log();
    let garbage = dir.path().join("garbage.wasm");
    std::fs::write(&garbage, b"this is not wasm at all").expect("write");
    assert_refused(&garbage, &log, &["not a WebAssembly file"]);

    let truncated = dir.path().join("truncated.wasm");
    std::fs::write(&truncated, b"\0as").expect("write");
    assert_refused(&truncated, &log, &["not a WebAssembly file"]);

    let core = dir.path().join("core.wasm");
    std::fs::write(&core, b"\0asm\x01\0\0\0").expect("write");
    assert_refused(&core, &log, &["a core WebAssembly module, not a component"]);

    // A real component cut short: the header passes, the parse does not.
    let cut = dir.path().join("cut.wasm");
    let bytes = std::fs::read(example_rule("shadow")).expect("shadow.wasm");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).expect("write");
    assert_refused(&cut, &log, &["invalid component: "]);
}

/// In process, through the library: one engine holding two hostile rules
/// and the shadow rule. Every evaluation of the seed event yields the
/// shadow finding and one fault of the right kind per hostile rule, whose
/// instance is re-created while the shadow rule keeps its own.
#[test]
fn deadline_and_memory_faults_leave_the_shadow_rule_alone_and_recreate_instances() {
    let limits = Limits { deadline: Some(Duration::from_millis(50)), ..Limits::default() };
    let sandbox = Sandbox::new(limits, ComponentCache::new(None)).expect("sandbox");
    let load = |path: PathBuf| sandbox.load_file(&path).unwrap_or_else(|err| panic!("{err}"));
    let rules =
        vec![load(hostile_rule("infinite-loop")), load(hostile_rule("memory-bomb")), load(example_rule("shadow"))];
    let mut engine = Engine::new(rules).expect("engine");
    let seed = br#"{"hostname":"pop-os","ip_address":"127.0.1.1","parent_pid":1,"pid":2,"path":"/usr/bin/sudo","binary":"sudo","arguments":"cat /etc/shadow","command_line":"/usr/bin/sudo cat /etc/shadow"}"#;

    let mut stats = Stats::default();
    let mut instantiations: Vec<[u64; 3]> = Vec::new();
    for round in 1..=3u64 {
        let mut outcomes: Vec<Outcome> = Vec::new();
        let event = engine.evaluate_json(seed, &mut stats, &mut outcomes).expect("valid event");
        assert!(event.is_some(), "round {round}: the event was evaluated");
        assert_eq!(outcomes.iter().map(|o| o.rule).collect::<Vec<_>>(), [0, 1, 2], "round {round}: {outcomes:?}");
        match &outcomes[0].result {
            Err(fault) => {
                assert_eq!(fault.kind(), "deadline", "round {round}: {fault}");
                assert_eq!(fault.to_string(), "exceeded its deadline of 50ms");
            }
            Ok(findings) => panic!("round {round}: infinite-loop returned {findings:?}"),
        }
        match &outcomes[1].result {
            Err(fault) => {
                assert_eq!(fault.kind(), "memory", "round {round}: {fault}");
                assert!(fault.to_string().starts_with("exceeded its memory limit of 67108864 bytes"), "{fault}");
            }
            Ok(findings) => panic!("round {round}: memory-bomb returned {findings:?}"),
        }
        match &outcomes[2].result {
            Ok(findings) => {
                assert_eq!(findings.len(), 1, "round {round}: {findings:?}");
                assert_eq!(findings[0].matched.len(), 1);
                assert_eq!(findings[0].matched[0].path, "command_line");
                assert_eq!(findings[0].matched[0].value, "/usr/bin/sudo cat /etc/shadow");
            }
            Err(fault) => panic!("round {round}: the shadow rule faulted: {fault}"),
        }
        let counts = engine.components().map(|r| r.instantiations()).collect::<Vec<_>>();
        instantiations.push(counts.try_into().expect("three rules"));
    }
    // A faulted instance is discarded, so each round after the first runs
    // in a new one; the shadow rule never faults and keeps its instance.
    for pair in instantiations.windows(2) {
        let (before, after) = (pair[0], pair[1]);
        assert_eq!(after[0], before[0] + 1, "infinite-loop instances per round: {instantiations:?}");
        assert_eq!(after[1], before[1] + 1, "memory-bomb instances per round: {instantiations:?}");
        assert_eq!(after[2], before[2], "shadow instances per round: {instantiations:?}");
    }
    assert_eq!(instantiations[2][2], 1, "the shadow rule ran in one instance: {instantiations:?}");

    assert_eq!(engine.stats(0).faults.get("deadline"), Some(&3));
    assert_eq!(engine.stats(1).faults.get("memory"), Some(&3));
    assert_eq!(engine.stats(2).alerts, 3);
    assert_eq!(engine.stats(2).fault_total(), 0);
}

/// In process: a `dac:rule@0.2.0` rule called once for a batch traps on
/// one of its events. The fault is that event's alone; every other event
/// of the batch gets its own result, as one by one; the batch after it
/// runs one event per call, and a clean one brings batching back.
#[test]
fn a_fault_in_a_batch_is_the_one_events_and_the_others_keep_their_results() {
    let sandbox = Sandbox::new(Limits::default(), ComponentCache::new(None)).expect("sandbox");
    let load = |path: PathBuf| sandbox.load_file(&path).unwrap_or_else(|err| panic!("{err}"));
    let mut engine =
        Engine::new(vec![load(hostile_rule("sometimes-panics")), load(example_rule("shadow"))]).expect("engine");
    assert!(engine.batches_calls(), "both rules are dac:rule@0.2.0 components");
    let event = |command_line: &str| format!(r#"{{"hostname":"web-01","command_line":"{command_line}"}}"#);
    let batch = [
        event("cat /etc/shadow"),
        event("ls -la"),
        event("echo panic-here /etc/shadow"),
        event("head -n 3 /etc/shadow"),
        event("uptime"),
    ];
    // What each event gets, one by one, and then in one batch: the rule's
    // position and whether it fired (true), faulted (false).
    let one_by_one: Vec<Vec<(usize, bool)>> = {
        let mut engine =
            Engine::new(vec![load(hostile_rule("sometimes-panics")), load(example_rule("shadow"))]).expect("engine");
        batch
            .iter()
            .map(|json| {
                let (mut stats, mut outcomes) = (Stats::default(), Vec::new());
                engine.evaluate_json(json.as_bytes(), &mut stats, &mut outcomes).expect("valid event");
                outcomes.iter().map(|o| (o.rule, o.result.is_ok())).collect()
            })
            .collect()
    };
    let expected =
        vec![vec![(0, true), (1, true)], vec![], vec![(0, false), (1, true)], vec![(0, true), (1, true)], vec![]];
    assert_eq!(one_by_one, expected);

    let mut stats = Stats::default();
    for round in 1..=3 {
        let documents = batch.iter().map(|json| dac_engine::Document::Json(json.as_bytes())).collect();
        let evaluated = engine.evaluate_batch(documents, &mut stats);
        let got: Vec<Vec<(usize, bool)>> =
            evaluated.iter().map(|e| e.outcomes.iter().map(|o| (o.rule, o.result.is_ok())).collect()).collect();
        assert_eq!(got, expected, "round {round}");
        let fault = evaluated[2].outcomes[0].result.as_ref().expect_err("the panic");
        assert!(fault.to_string().contains("rule panicked: panic-here in the command line"), "{fault}");
        for (index, evaluated) in evaluated.iter().enumerate() {
            assert!(matches!(evaluated.event, Ok(Some(_))), "event {index} came back: {:?}", evaluated.event);
        }
    }
    // Round 1: the batch call (first instance, ended by the panic), then
    // the five events one per call (a second instance, ended by the panic,
    // and a third); rounds 2 and 3 one per call (one more instance each).
    assert_eq!(engine.stats(0).evaluations, 15);
    assert_eq!(engine.stats(0).faults.get("trap"), Some(&3));
    assert_eq!(engine.stats(0).alerts, 6);
    assert_eq!(engine.component(0).expect("loaded").instantiations(), 5);
    assert_eq!(engine.stats(1).alerts, 9);
    assert_eq!(engine.component(1).expect("loaded").instantiations(), 1, "shadow keeps its instance");

    // A clean batch (still one per call) brings batching back; neither
    // needs a new instance.
    let clean: Vec<String> = (0..4).map(|_| event("cat /etc/shadow")).collect();
    for _ in 0..2 {
        let documents = clean.iter().map(|json| dac_engine::Document::Json(json.as_bytes())).collect();
        let evaluated = engine.evaluate_batch(documents, &mut stats);
        assert!(evaluated.iter().all(|e| e.outcomes.len() == 2 && e.outcomes.iter().all(|o| o.result.is_ok())));
    }
    assert_eq!(engine.component(0).expect("loaded").instantiations(), 5);
    assert_eq!(engine.stats(0).alerts, 6 + 8);
}

/// In process: a component of `dac:rule@0.1.0` (one event per call, read
/// through the `event` resource) runs unchanged beside 0.2.0 rules, one
/// event at a time and in a batch: it fires with the Rust shadow rule on
/// every must-fire fixture and on no must-not-fire one.
#[test]
fn a_dac_rule_0_1_component_runs_unchanged_beside_0_2_rules() {
    let sandbox = Sandbox::new(Limits::default(), ComponentCache::new(None)).expect("sandbox");
    let load = |path: PathBuf| sandbox.load_file(&path).unwrap_or_else(|err| panic!("{err}"));
    let old = load(hostile_rule("world-0-1"));
    assert!(!old.batches_calls() && !old.uses_state(), "a 0.1.0 rule is called one event at a time");
    let mut engine = Engine::new(vec![old, load(example_rule("shadow"))]).expect("engine");
    let fixtures = dac_tests::repo_root().join("example-rules/shadow/fixtures");
    for (file, fire) in [("must_fire.ndjson", true), ("must_not_fire.ndjson", false)] {
        let text = std::fs::read_to_string(fixtures.join(file)).unwrap();
        let lines: Vec<&str> = text.lines().filter(|line| !line.trim().is_empty()).collect();
        let expected = if fire { vec![0, 1] } else { vec![] };
        for json in &lines {
            let (mut stats, mut outcomes) = (Stats::default(), Vec::new());
            engine.evaluate_json(json.as_bytes(), &mut stats, &mut outcomes).expect("valid event");
            let fired: Vec<usize> = outcomes.iter().filter(|o| o.result.is_ok()).map(|o| o.rule).collect();
            assert_eq!(fired, expected, "{file}: {json}");
        }
        let documents = lines.iter().map(|json| dac_engine::Document::Json(json.as_bytes())).collect();
        for evaluated in engine.evaluate_batch(documents, &mut Stats::default()) {
            let fired: Vec<usize> = evaluated.outcomes.iter().filter(|o| o.result.is_ok()).map(|o| o.rule).collect();
            assert_eq!(fired, expected, "{file}, in a batch");
        }
    }
    assert_eq!(engine.stats(0).fault_total(), 0);
    assert!(engine.stats(0).alerts >= 8, "{:?}", engine.stats(0));
}

/// In process: a rule that writes its keyed state and then faults (a
/// panic, a key over the size limit) keeps none of that call's writes,
/// whether the fault came in a batch — whose every write is taken back
/// before its events are evaluated again one per call — or alone: each
/// host's count goes on as if the faulted events had never been.
#[test]
fn a_faulted_calls_state_writes_are_taken_back() {
    let sandbox = Sandbox::new(Limits::default(), ComponentCache::new(None)).expect("sandbox");
    let load = || sandbox.load_file(&hostile_rule("state-then-panic")).unwrap_or_else(|err| panic!("{err}"));
    let event = |ts: u64, host: &str, command_line: &str| {
        format!(r#"{{"ts":{ts},"hostname":"{host}","command_line":"{command_line}"}}"#)
    };
    let batch = [
        event(1, "web-01", "a"),
        event(2, "web-01", "b panic-here"),
        event(3, "web-02", "x"),
        event(4, "web-01", "c"),
        event(5, "web-01", "d huge-key"),
        event(6, "web-01", "e"),
    ];
    // Each event's finding message, or its fault's kind.
    let expected = ["count 1", "trap", "count 1", "count 2", "state-limit", "count 3"];
    let answer = |outcome: &Outcome| match &outcome.result {
        Ok(findings) => findings[0].message.clone(),
        Err(fault) => fault.kind().to_owned(),
    };

    let mut alone = Engine::new(vec![load()]).expect("engine");
    let got: Vec<String> = batch
        .iter()
        .map(|json| {
            let (mut stats, mut outcomes) = (Stats::default(), Vec::new());
            alone.evaluate_json(json.as_bytes(), &mut stats, &mut outcomes).expect("valid event");
            outcomes.iter().map(answer).collect::<Vec<_>>().concat()
        })
        .collect();
    assert_eq!(got, expected, "one event per call");

    let mut batched = Engine::new(vec![load()]).expect("engine");
    assert!(batched.batches_calls());
    let documents = batch.iter().map(|json| dac_engine::Document::Json(json.as_bytes())).collect();
    let evaluated = batched.evaluate_batch(documents, &mut Stats::default());
    let got: Vec<String> =
        evaluated.iter().map(|e| e.outcomes.iter().map(answer).collect::<Vec<_>>().concat()).collect();
    assert_eq!(got, expected, "in one batch, then one per call");
    let fault = evaluated[4].outcomes[0].result.as_ref().expect_err("the huge key");
    assert!(fault.to_string().contains("a state key of 4096 bytes is longer than the limit of 1024"), "{fault}");

    // Each engine holds `n` and `last` for two hosts, nothing more.
    for engine in [&alone, &batched] {
        let stats = engine.rule_state_stats();
        assert_eq!(stats.keys, 4, "{stats:?}");
        let held = engine.rule_states_held();
        assert_eq!(held.len(), 1);
        assert_eq!(held[0].1.keys, 4);
    }
    // The state outlives the faults' lost instances and is read by the next
    // event of each host.
    let (mut stats, mut outcomes) = (Stats::default(), Vec::new());
    batched.evaluate_json(event(7, "web-02", "y").as_bytes(), &mut stats, &mut outcomes).expect("valid event");
    assert_eq!(answer(&outcomes[0]), "count 2");
}

/// In process: a batch's budget is at most 8 events' (fuel here, the same
/// for the deadline). A rule that needs more for a batch than that, while
/// each event fits its own budget, gets every result, and is called one
/// event per call from then on rather than failing every batch.
#[test]
fn a_batch_over_its_budget_is_evaluated_one_event_per_call_from_then_on() {
    let event = dac_event::Event::from_json_slice(br#"{"hostname":"web-01","command_line":"cat /etc/shadow"}"#)
        .expect("valid event")
        .0;
    let with_fuel = |fuel: u64| {
        let limits = Limits { fuel: Some(fuel), deadline: None, ..Limits::default() };
        let sandbox = Sandbox::new(limits, ComponentCache::new(None)).expect("sandbox");
        sandbox.load_file(&example_rule("shadow")).unwrap_or_else(|err| panic!("{err}"))
    };
    // What one evaluation burns: the first in an instance (it also sets the
    // rule up) and the next.
    let mut probe = with_fuel(1 << 40);
    let (mut first, mut next) = (event.clone(), event.clone());
    probe.evaluate(&mut first).expect("fires");
    let setup = probe.last_fuel_consumed();
    probe.evaluate(&mut next).expect("fires");
    let each = probe.last_fuel_consumed();
    assert!(each > 0 && setup >= each, "fuel: first {setup}, then {each}");
    // In a batch an event costs less than a call of its own (the call's
    // own work is shared): at least this much.
    let mut sample = vec![event.clone(); 64];
    assert!(probe.evaluate_batch(&mut sample).iter().all(Result::is_ok));
    let in_batch = probe.last_fuel_consumed().saturating_sub(each) / 64;
    assert!(in_batch > 0, "fuel: a batch of 64 took {}", probe.last_fuel_consumed());

    // Each event fits its budget; a batch of this many does not fit 8.
    let budget = setup + each;
    let count = (8 * budget / in_batch + 2) as usize;
    let mut rule = with_fuel(budget);
    for round in 1..=2 {
        let mut events = vec![event.clone(); count];
        let results = rule.evaluate_batch(&mut events);
        assert_eq!(results.len(), count);
        for (index, result) in results.iter().enumerate() {
            match result {
                Ok(findings) => assert_eq!(findings.len(), 1, "round {round}, event {index}"),
                Err(fault) => panic!("round {round}, event {index}: {fault}"),
            }
        }
        assert!(events.iter().all(|e| e.get("command_line").is_some()), "the events came back");
        // The first round's batch ran out of fuel and ended its instance;
        // its events then ran one per call in a second one, which the
        // second round, one per call too, keeps.
        assert_eq!(rule.instantiations(), 2, "round {round}");
    }
}

/// What `tests/hostile-rules/inert-wasi` reports on its first evaluation in
/// an instance: one line per call of every granted WASI function. This is
/// what wasmtime-wasi 48 with an empty context gave too, except the clock
/// pollables (ready at once here; wasmtime-wasi waited for real time) and
/// the order of `poll`'s answer (ascending here; wasmtime-wasi's followed
/// its table layout).
const INERT_WASI_REPORT: &[&str] = &[
    "environment []",
    "arguments []",
    "initial-cwd None",
    "wall-clock now 0s 0ns resolution 1s 0ns",
    "monotonic-clock now 0 resolution 1000000000",
    "random bytes [2, 158, 58, 214, 114, 14, 170, 70, 226, 126, 26, 182]",
    "random u64 0x5d04ab52f9a047ee",
    "random bytes []",
    "random bytes [138, 38, 194]",
    "insecure bytes [2, 158, 58, 214, 114]",
    "insecure u64 0x19c0670eb55c03aa",
    "insecure-seed (0, 0)",
    "terminals stdin false stdout false stderr false",
    "stdin read(10) closed",
    "stdin read(0) closed",
    "stdin blocking-read(10) closed",
    "stdin skip(5) closed",
    "stdin blocking-skip(5) closed",
    "stdin pollable ready true",
    "stdout check-write ok 65536",
    "stdout write ok ()",
    "stdout write(100000) ok ()",
    "stdout blocking-write-and-flush ok ()",
    "stdout flush ok ()",
    "stdout blocking-flush ok ()",
    "stdout write-zeroes(100) ok ()",
    "stdout blocking-write-zeroes-and-flush(100) ok ()",
    "stdout splice(stdin, 0) ok 0",
    "stdout splice(stdin, 10) closed",
    "stdout blocking-splice(stdin, 10) closed",
    "stdout pollable ready true",
    "stderr check-write ok 65536",
    "stderr write ok ()",
    "poll [stdin, stdout] [0, 1]",
    "poll [stdout, stdout, stdin] [0, 1, 2]",
    "subscribe-duration(0) then subscribe-instant(0): poll [0, 1]",
    "subscribe-duration(0) after block: ready true",
    "fresh subscribe-duration(0) ready true",
    "subscribe-duration(1 ms) ready true",
    "random bytes after all that [94, 250, 150, 50]",
];

/// In process: the inert WASI 0.2 a rule is linked with, as a guest sees
/// it (see `engine/src/wasi.rs`), and the misuses of it that end an
/// evaluation with a trap.
#[test]
fn granted_wasi_is_inert_and_its_misuse_traps() {
    let limits = Limits { deadline: Some(Duration::from_secs(10)), ..Limits::default() };
    let sandbox = Sandbox::new(limits, ComponentCache::new(None)).expect("sandbox");
    let mut rule = sandbox.load_file(&hostile_rule("inert-wasi")).unwrap_or_else(|err| panic!("{err}"));
    let mut event = |binary: &str| {
        let mut event = dac_event::Event::from_json(serde_json::json!({ "binary": binary })).expect("event");
        rule.evaluate(&mut event)
    };
    let report = |findings: Vec<dac_engine::Finding>| {
        assert_eq!(findings.len(), 1, "{findings:?}");
        findings[0].message.lines().map(str::to_owned).collect::<Vec<_>>()
    };
    assert_eq!(report(event("ls").expect("probe")), INERT_WASI_REPORT);
    // The random generators go on where they stopped, in the same instance…
    let again = report(event("ls").expect("probe"));
    assert_ne!(again, INERT_WASI_REPORT);
    for (binary, reason) in [
        ("exit", "trapped: the rule called `wasi:cli/exit#exit` (failure); a rule cannot exit"),
        ("hoard", "trapped: the rule holds 1024 WASI resources (streams, pollables) at once"),
        ("orphan", "trapped: the rule dropped a WASI input stream while a pollable on it was still live"),
        ("big-write", "trapped: the rule passed 5000 bytes to `wasi:io/streams#blocking-write-and-flush`"),
        ("many-zeroes", "trapped: the rule wrote 70000 zeroes with `wasi:io/streams#write-zeroes`"),
        ("empty-poll", "trapped: the rule called `wasi:io/poll#poll` with no pollables"),
    ] {
        match event(binary) {
            Err(fault) => assert!(fault.to_string().starts_with(reason), "{binary}: {fault}"),
            Ok(findings) => panic!("{binary}: no trap, {findings:?}"),
        }
    }
    // …and start afresh in a new one (each trap discarded the instance).
    assert_eq!(report(event("ls").expect("probe")), INERT_WASI_REPORT);
}

/// `component` with `count` more core instances appended, each of a core
/// module whose only sections are `section` (one memory, one table, a
/// function), as the component fuzz target adds its modules. The
/// component's own rule is untouched: it loads and runs as before, its
/// store just holds more.
fn with_extra_core_instances(component: &[u8], section: &[u8], count: usize) -> Vec<u8> {
    let mut module = b"\0asm\x01\0\0\0".to_vec();
    module.extend_from_slice(section);
    (0..count).fold(component.to_vec(), |bytes, _| dac_fuzz_targets::with_core_instance(&bytes, &module))
}

#[test]
fn the_memory_cap_holds_for_all_memories_and_tables_of_a_rule_together() {
    let shadow = std::fs::read(example_rule("shadow")).unwrap();
    // Memories of 48 MiB (768 pages) each, and tables of 1M funcrefs (8 MB
    // each, at 8 bytes a slot): each under a 64 MiB cap on its own.
    let memory = [5, 4, 1, 0, 0x80, 0x06];
    let table = [4, 6, 1, 0x70, 0, 0xc0, 0x84, 0x3d];
    let sandbox = Sandbox::new(Limits::default(), ComponentCache::new(None)).expect("sandbox");
    let event = br#"{"command_line":"/usr/bin/sudo cat /etc/shadow"}"#;
    let load = |bytes: &[u8]| sandbox.load_bytes(dac_engine::RuleId::new("bloated"), Path::new("bloated.wasm"), bytes);
    let run = |bytes: Vec<u8>| {
        let rule = load(&bytes).unwrap_or_else(|err| panic!("{err}"));
        let mut engine = Engine::new(vec![rule]).expect("engine");
        let mut outcomes = Vec::new();
        engine.evaluate_json(event, &mut Stats::default(), &mut outcomes).expect("valid event");
        outcomes.remove(0).result
    };
    // One of each still fits: the rule runs and alerts.
    assert_eq!(run(with_extra_core_instances(&shadow, &memory, 1)).expect("one memory fits").len(), 1);
    assert_eq!(run(with_extra_core_instances(&shadow, &table, 1)).expect("one table fits").len(), 1);
    // Three memories (144 MiB) or ten tables (80 MB) do not: refused when
    // loaded, as instantiating it for its metadata already goes over.
    for (what, bytes) in [
        ("memories", with_extra_core_instances(&shadow, &memory, 3)),
        ("tables", with_extra_core_instances(&shadow, &table, 10)),
    ] {
        let err = load(&bytes).err().unwrap_or_else(|| panic!("{what}: loaded"));
        let message = err.to_string();
        assert!(message.starts_with("bloated.wasm: "), "{what}: {message}");
        assert!(message.contains("memory limit of 67108864 bytes exceeded"), "{what}: {message}");
    }
}

#[test]
fn a_component_over_the_compile_limits_is_refused_before_it_is_compiled() {
    let shadow = std::fs::read(example_rule("shadow")).unwrap();
    // One function with 6,000 locals, in 16 bytes: type, function and code
    // sections of a core module.
    let locals = [1, 4, 1, 0x60, 0, 0, 3, 2, 1, 0, 10, 7, 1, 5, 1, 0xf0, 0x2e, 0x7f, 0x0b];
    let bloated = with_extra_core_instances(&shadow, &locals, 1);
    let cache = tempfile::tempdir().unwrap();
    let sandbox = Sandbox::new(Limits::default(), ComponentCache::new(Some(cache.path().to_owned()))).unwrap();
    let err = sandbox
        .load_bytes(dac_engine::RuleId::new("bloated"), Path::new("bloated.wasm"), &bloated)
        .err()
        .expect("refused");
    assert_eq!(
        err.to_string(),
        "bloated.wasm: 6000 locals in one function, over the compile limit max_locals of 5000; the component was not compiled"
    );
    assert_eq!(std::fs::read_dir(cache.path()).map(|d| d.count()).unwrap_or(0), 0, "nothing compiled, nothing cached");
    // Within a larger limit it loads (and is cached).
    let limits =
        Limits { compile: dac_engine::CompileLimits { max_locals: 6000, ..Default::default() }, ..Limits::default() };
    let sandbox = Sandbox::new(limits, ComponentCache::new(Some(cache.path().to_owned()))).unwrap();
    sandbox.load_bytes(dac_engine::RuleId::new("bloated"), Path::new("bloated.wasm"), &bloated).unwrap();
    assert_eq!(std::fs::read_dir(cache.path()).unwrap().count(), 1);
}

#[test]
fn the_compiled_code_cache_keeps_to_its_size_by_evicting_the_least_recently_used() {
    let cache_dir = tempfile::tempdir().unwrap();
    let rules: Vec<Vec<u8>> = ["shadow", "tmp-output-redir", "reverse-shell-dev-tcp"]
        .iter()
        .map(|rule| std::fs::read(example_rule(rule)).unwrap())
        .collect();
    // Room for about two compiled rules.
    let one = {
        let probe = tempfile::tempdir().unwrap();
        let sandbox = Sandbox::new(Limits::default(), ComponentCache::new(Some(probe.path().to_owned()))).unwrap();
        sandbox.load_bytes(dac_engine::RuleId::new("r"), Path::new("r.wasm"), &rules[0]).unwrap();
        let entry = std::fs::read_dir(probe.path()).unwrap().next().unwrap().unwrap();
        entry.metadata().unwrap().len()
    };
    let cache = ComponentCache::new(Some(cache_dir.path().to_owned())).with_max_bytes(one * 5 / 2);
    let sandbox = Sandbox::new(Limits::default(), cache).unwrap();
    for (i, bytes) in rules.iter().enumerate() {
        // Each load is its own: nothing in use is shared between them.
        sandbox.load_bytes(dac_engine::RuleId::new(format!("r{i}")), Path::new("r.wasm"), bytes).unwrap();
        std::thread::sleep(Duration::from_millis(20));
    }
    let total: u64 = std::fs::read_dir(cache_dir.path()).unwrap().map(|e| e.unwrap().metadata().unwrap().len()).sum();
    assert!(total <= one * 5 / 2, "{total} bytes cached, over {}", one * 5 / 2);
    assert_eq!(std::fs::read_dir(cache_dir.path()).unwrap().count(), 2, "the oldest of three was evicted");
}

/// The shadow rule with `functions` slow-to-compile functions appended
/// (about 0.4 s of CPU each), and a sandbox compiling in a child process
/// as `dac serve` does, under `compile`, caching in `cache`.
fn slow_rule_and_child_compiler(
    functions: u64,
    compile: dac_engine::CompileLimits,
    cache: &Path,
) -> (Vec<u8>, Sandbox) {
    let shadow = std::fs::read(example_rule("shadow")).unwrap();
    let slow = dac_fuzz_targets::with_core_instance(&shadow, &dac_tests::slow_to_compile_module(functions));
    let cache = ComponentCache::new(Some(cache.to_owned())).with_compiler(dac_tests::child_compiler());
    let limits = Limits { compile, ..Limits::default() };
    (slow, Sandbox::with_compile_threads(limits, cache, false).unwrap())
}

/// What a cache directory holds: nothing, after a refused or cancelled
/// compilation (no entry, no compiler's directory left behind).
fn cache_entries(cache: &Path) -> Vec<String> {
    std::fs::read_dir(cache)
        .map_or(Vec::new(), |dir| dir.map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned()).collect())
}

#[test]
fn a_compilation_over_its_cpu_or_memory_budget_is_stopped_and_leaves_nothing() {
    let cache = tempfile::tempdir().unwrap();
    // One slow function: ~0.4 s of CPU, over a 100 ms budget on any machine.
    let limits = dac_engine::CompileLimits { max_cpu_ms: 100, ..Default::default() };
    let (slow, sandbox) = slow_rule_and_child_compiler(1, limits, cache.path());
    let load = |sandbox: &Sandbox| sandbox.load_bytes(dac_engine::RuleId::new("slow"), Path::new("slow.wasm"), &slow);
    let err = load(&sandbox).err().expect("stopped");
    assert_eq!(
        err.to_string(),
        "slow.wasm: compiling took over 100 ms of CPU, the compile limit max_cpu_ms; it was stopped"
    );
    assert!(matches!(err, dac_engine::LoadError::TooComplex { .. }), "{err:?}");
    assert_eq!(cache_entries(cache.path()), Vec::<String>::new());

    // Two: ~190 MB resident at the peak (~25 MB for a small rule), over 64 MiB.
    let limits = dac_engine::CompileLimits { max_memory_bytes: 64 << 20, ..Default::default() };
    let (slow, sandbox) = slow_rule_and_child_compiler(2, limits, cache.path());
    let err =
        sandbox.load_bytes(dac_engine::RuleId::new("slow"), Path::new("slow.wasm"), &slow).err().expect("stopped");
    assert_eq!(
        err.to_string(),
        "slow.wasm: compiling took over 67108864 bytes of memory, the compile limit max_memory_bytes; it was stopped"
    );
    assert_eq!(cache_entries(cache.path()), Vec::<String>::new());

    // Within the default budgets the same compiler compiles it: the rule
    // runs, and its code is cached.
    let (_same_bytes, sandbox) = slow_rule_and_child_compiler(1, Default::default(), cache.path());
    let rule = load(&sandbox).unwrap_or_else(|err| panic!("{err}"));
    let mut engine = Engine::new(vec![rule]).expect("engine");
    let mut outcomes = Vec::new();
    let event = br#"{"command_line":"/usr/bin/sudo cat /etc/shadow"}"#;
    engine.evaluate_json(event, &mut Stats::default(), &mut outcomes).expect("valid event");
    assert_eq!(outcomes.remove(0).result.expect("no fault").len(), 1);
    let entries = cache_entries(cache.path());
    assert!(entries.len() == 1 && entries[0].ends_with(".cwasm"), "{entries:?}");
}

#[test]
fn a_cancelled_compilation_stops_its_compiler_at_once() {
    let cache = tempfile::tempdir().unwrap();
    // Two slow functions: ~0.8 s of CPU, compiled on one thread.
    let (slow, sandbox) = slow_rule_and_child_compiler(2, Default::default(), cache.path());
    let cancel = dac_engine::Cancel::never().child();
    let loading = {
        let cancel = cancel.clone();
        std::thread::spawn(move || {
            sandbox.load_bytes_cancellable(dac_engine::RuleId::new("slow"), Path::new("slow.wasm"), &slow, &cancel)
        })
    };
    // The compiler's arguments name its directory, in the cache directory.
    let needle = cache.path().to_string_lossy().into_owned();
    let started = Instant::now();
    let compiler = loop {
        if let Some(&pid) = dac_tests::processes_mentioning(&needle).first() {
            break pid;
        }
        assert!(!loading.is_finished(), "the load ended before its compiler was seen");
        assert!(started.elapsed() < Duration::from_secs(60), "no compiler started");
        std::thread::sleep(Duration::from_millis(2));
    };
    cancel.cancel();
    let err = loading.join().unwrap().err().expect("cancelled");
    assert_eq!(err.to_string(), "slow.wasm: cancelled while compiling");
    assert!(!Path::new(&format!("/proc/{compiler}")).exists(), "the compiler {compiler} still runs");
    assert_eq!(cache_entries(cache.path()), Vec::<String>::new());
}
