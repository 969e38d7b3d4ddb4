//! Rules written in C, Python and JavaScript, built from source with each
//! language's kit under `rule-sdk/` — the commands an author runs — and run
//! by `dac-run` against the Rust shadow rule's fixtures, and the sequence
//! rule's port (keyed state in the host) against its fixture stream.
//!
//! A kit whose toolchain is not installed here makes its test print
//! `SKIPPED …` with the build script's explanation on stderr and pass;
//! `scripts/test` installs every toolchain first, so CI runs them all.

use dac_tests::{dac_run, repo_root, KitBuild};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// The shadow rule's fixtures, shared by every language's port.
fn fixture(name: &str) -> PathBuf {
    repo_root().join("example-rules/shadow/fixtures").join(name)
}

/// Builds `example` with its kit into `out`; `None` (after saying why on
/// stderr) when the kit's toolchain is missing.
fn build(kit: &str, example: &str, out: &Path) -> Option<Duration> {
    match dac_tests::build_with_kit(kit, example, out) {
        Ok(KitBuild::Built(elapsed)) => Some(elapsed),
        Ok(KitBuild::MissingTool(why)) => {
            eprintln!("SKIPPED {kit} rule kit: its toolchain is not installed (scripts/test installs it):\n{why}");
            None
        }
        Err(err) => panic!("{err}"),
    }
}

struct Run {
    output: Output,
    elapsed: Duration,
}

impl Run {
    fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.output.stderr).into_owned()
    }

    fn alerts(&self) -> Vec<Value> {
        String::from_utf8(self.output.stdout.clone())
            .expect("stdout is UTF-8")
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|err| panic!("alert is not JSON ({err}): {l}")))
            .collect()
    }
}

fn dac_run_with(rules: &[&Path], log: &Path, cache: &Path, extra: &[&str]) -> Run {
    let mut command = Command::new(dac_run());
    command.args(rules).arg("--replay").arg(log).args(extra).env("DAC_CACHE_DIR", cache);
    let start = Instant::now();
    let output = command.output().expect("run dac-run");
    let run = Run { output, elapsed: start.elapsed() };
    assert_eq!(run.output.status.code(), Some(0), "dac-run failed:\n{}", run.stderr());
    assert!(!run.stderr().contains("rule fault: "), "a rule faulted:\n{}", run.stderr());
    run
}

fn lines(path: &Path) -> usize {
    std::fs::read_to_string(path).unwrap().lines().filter(|l| !l.trim().is_empty()).count()
}

/// Runs a port of the shadow rule against the fixtures: it fires on every
/// must-fire event, exactly once, with the command line as its matched
/// value, and on no must-not-fire event. Prints the figures the kit's
/// README quotes.
fn check_shadow_port(component: &Path, uuid: &str, name: &str, build_time: Duration) {
    let cache = tempfile::tempdir().unwrap();
    let must_fire = fixture("must_fire.ndjson");
    // The first run compiles the component; the second finds it in the cache.
    let cold = dac_run_with(&[component], &must_fire, cache.path(), &[]);
    let warm = dac_run_with(&[component], &must_fire, cache.path(), &[]);
    let alerts = warm.alerts();
    assert_eq!(alerts.len(), lines(&must_fire), "one alert per must-fire event:\n{}", warm.stderr());
    for (index, alert) in alerts.iter().enumerate() {
        assert_eq!(alert["uuid"], uuid);
        assert_eq!(alert["rule_name"], name);
        assert_eq!(alert["severity"], "high");
        assert_eq!(alert["source"], format!("{}:{}", must_fire.display(), index + 1));
        let command_line = alert["offending_log"]["command_line"].as_str().unwrap();
        assert!(command_line.contains("/etc/shadow"));
        let matched = &alert["findings"][0]["matched"][0];
        assert_eq!(matched["path"], "command_line", "{alert}");
        assert_eq!(matched["value"], command_line, "{alert}");
    }
    assert_eq!(cold.alerts(), alerts, "the cached component behaves like the freshly compiled one");

    let must_not_fire = fixture("must_not_fire.ndjson");
    let quiet = dac_run_with(&[component], &must_not_fire, cache.path(), &[]);
    assert_eq!(quiet.alerts(), Vec::<Value>::new(), "fired on a must-not-fire event:\n{}", quiet.stderr());

    // Every event evaluated (no prefilter) and the summary's timing, on the sample log.
    let sample = repo_root().join("example-rules/data/sample-events.ndjson");
    let all = dac_run_with(&[component], &sample, cache.path(), &["--no-prefilter"]);
    let size = std::fs::metadata(component).unwrap().len();
    // The compile limits' defaults are chosen with a wide margin over these.
    let shape = dac_engine::Shape::measure(&std::fs::read(component).unwrap()).expect("a component parses");
    let half = dac_engine::CompileLimits::default();
    assert!(shape.modules <= half.max_modules / 2, "{shape:?}");
    assert!(shape.functions <= half.max_functions / 2, "{shape:?}");
    assert!(shape.largest_function_bytes <= half.max_function_bytes / 2, "{shape:?}");
    assert!(shape.most_locals <= half.max_locals / 2, "{shape:?}");
    assert!(shape.code_bytes <= half.max_code_bytes / 2, "{shape:?}");
    eprintln!("{name}: {shape:?}");
    eprintln!(
        "{name}: component {:.1} KB, built in {:.2} s; dac-run on {} must-fire events: {:.2} s with compilation, {:.3} s cached; sample log, every event evaluated: {}",
        size as f64 / 1000.0,
        build_time.as_secs_f64(),
        lines(&must_fire),
        cold.elapsed.as_secs_f64(),
        warm.elapsed.as_secs_f64(),
        all.stderr().lines().filter(|l| l.contains("events/s") || l.contains("evaluated")).collect::<Vec<_>>().join(" | ")
    );
}

/// Runs a port of the Rust sequence rule (example-rules/download-chmod-exec:
/// download, `chmod +x`, exec of the file on one host within ten minutes,
/// its state kept by the host through the kit's state API) over its
/// fixture stream, on two threads: it fires exactly on the two completed
/// sequences, each once.
fn check_sequence_port(component: &Path, uuid: &str) {
    let cache = tempfile::tempdir().unwrap();
    let stream = repo_root().join("example-rules/download-chmod-exec/fixtures/stream.ndjson");
    let run = dac_run_with(&[component], &stream, cache.path(), &["--threads", "2"]);
    let mut got: Vec<(String, i64, String)> = run
        .alerts()
        .iter()
        .map(|alert| {
            assert_eq!(alert["uuid"], uuid, "{alert}");
            let event = &alert["offending_log"];
            let message = alert["findings"][0]["message"].as_str().unwrap_or_default().to_owned();
            (event["hostname"].as_str().unwrap().to_owned(), event["ts"].as_i64().unwrap(), message)
        })
        .collect();
    got.sort();
    let expected = [
        ("ci-01", 1_700_000_002_000, "/home/ci/run.sh was downloaded, made executable and run within 10 minutes"),
        ("web-01", 1_700_000_003_000, "/tmp/payload was downloaded, made executable and run within 10 minutes"),
    ]
    .map(|(host, ts, message)| (host.to_owned(), ts, message.to_owned()));
    assert_eq!(got, expected, "{}", run.stderr());
}

#[test]
fn c_shadow_rule_builds_from_source_and_fires_exactly_on_the_fixtures() {
    let dir = tempfile::tempdir().unwrap();
    let component = dir.path().join("shadow_c.wasm");
    let Some(build_time) = build("c", "shadow.c", &component) else { return };
    check_shadow_port(&component, C_SHADOW_UUID, "Suspicious /etc/shadow Usage (C)", build_time);
    let sequence = dir.path().join("sequence_c.wasm");
    if build("c", "sequence.c", &sequence).is_some() {
        check_sequence_port(&sequence, "8d0c3a5e-6c1b-4a57-9f0e-3c2d7b1e4a01");
    }
}

#[test]
fn python_shadow_rule_builds_from_source_and_fires_exactly_on_the_fixtures() {
    let dir = tempfile::tempdir().unwrap();
    let component = dir.path().join("shadow_py.wasm");
    let Some(build_time) = build("python", "shadow.py", &component) else { return };
    check_shadow_port(&component, PYTHON_SHADOW_UUID, "Suspicious /etc/shadow Usage (Python)", build_time);
    let sequence = dir.path().join("sequence_py.wasm");
    if build("python", "sequence.py", &sequence).is_some() {
        check_sequence_port(&sequence, "8d0c3a5e-6c1b-4a57-9f0e-3c2d7b1e4a02");
    }
}

#[test]
fn javascript_shadow_rule_builds_from_source_and_fires_exactly_on_the_fixtures() {
    let dir = tempfile::tempdir().unwrap();
    let component = dir.path().join("shadow_js.wasm");
    let Some(build_time) = build("js", "shadow.js", &component) else { return };
    check_shadow_port(&component, JS_SHADOW_UUID, "Suspicious /etc/shadow Usage (JavaScript)", build_time);
    let sequence = dir.path().join("sequence_js.wasm");
    if build("js", "sequence.js", &sequence).is_some() {
        check_sequence_port(&sequence, "8d0c3a5e-6c1b-4a57-9f0e-3c2d7b1e4a03");
    }
}

const C_SHADOW_UUID: &str = "9d2c4b8e-3f61-4e0a-b7d5-6a1e8f2c0b93";
const PYTHON_SHADOW_UUID: &str = "0b7e2f4c-6d1a-4c59-9e83-2a5f1c7d9b40";
const JS_SHADOW_UUID: &str = "c41f7a2e-5b83-4d9c-a0e6-7f2d1b8c3e54";
