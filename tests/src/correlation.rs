//! A stream for the example correlations (example-rules/correlation/)
//! and the sequence rule (example-rules/download-chmod-exec, state kept by
//! the host), and their alerts as rows to compare: what `dac run` over a
//! file says against what a live stream wrote into an alert collection.

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The example correlations: every type, each with its base rules.
pub fn rules_dir() -> PathBuf {
    crate::repo_root().join("example-rules/correlation")
}

/// `count` events from 30 hosts, 150 ms apart from 2026-01-01, in a mix
/// that makes every example correlation fire many times: discovery
/// commands, downloads, scripts from /tmp, package tools, and benign
/// commands. 5 % arrive up to 30 s out of order (within the default
/// lateness), 1 % two minutes late (counted, not correlated). Each has a
/// text `_id` (`e00042`), so a file and a collection of the same events
/// name the same evidence. `label` adds `ingest.tenant` and names the ids
/// (`acme00042`).
pub fn events(count: usize, seed: u64, label: Option<&str>) -> Vec<Value> {
    let mut rng = SmallRng::seed_from_u64(seed);
    let programs: [(&str, &str, u32); 16] = [
        ("/usr/bin/id", "", 12),
        ("/usr/bin/whoami", "", 8),
        ("/usr/bin/uname", "-a", 8),
        ("/usr/bin/hostname", "", 5),
        ("/usr/bin/uptime", "", 5),
        ("/usr/bin/ss", "-tlnp", 5),
        ("/usr/bin/curl", "-sO https://example.com/x.sh", 6),
        ("/usr/bin/wget", "-q https://example.com/y", 3),
        ("/bin/sh", "/tmp/x.sh", 6),
        // With the downloads above: the sequence rule's chmod and exec.
        ("/usr/bin/chmod", "+x x.sh", 3),
        ("/home/ci/x.sh", "", 2),
        ("/usr/bin/apt-get", "install -y jq", 6),
        ("/usr/bin/pip3", "install requests", 4),
        ("/usr/bin/ls", "-la /srv", 12),
        ("/usr/bin/git", "status", 10),
        ("/usr/bin/make", "-j2", 10),
    ];
    let total: u32 = programs.iter().map(|p| p.2).sum();
    let start = 1_767_225_600_000i64;
    (0..count)
        .map(|n| {
            let mut pick = rng.random_range(0..total);
            let mut chosen = programs[0];
            for program in programs {
                if pick < program.2 {
                    chosen = program;
                    break;
                }
                pick -= program.2;
            }
            let (path, args, _) = chosen;
            let mut ts = start + n as i64 * 150;
            match rng.random_range(0..100) {
                0..5 => ts -= rng.random_range(0..30_000),
                5 => ts -= 120_000,
                _ => {}
            }
            let mut event = json!({
                "_id": format!("{}{n:05}", label.unwrap_or("e")),
                "ts": ts,
                "hostname": format!("host-{:02}", rng.random_range(0..30)),
                "path": path,
                "command_line": format!("{path} {args}").trim_end().to_owned(),
                "pid": rng.random_range(1_000..65_000),
                "user": "ci",
            });
            if let Some(label) = label {
                event["ingest"] = json!({ "tenant": label });
            }
            event
        })
        .collect()
}

/// A correlation alert, comparable: id, window, aggregate (to 9
/// significant digits: serde_json's default float parsing may land one
/// ulp off the printed value), the events' ids (its evidence), how many.
pub type Row = (String, i64, i64, String, Vec<String>, i64);

/// The row of an alert's `correlation` object (as JSON; from MongoDB in
/// relaxed Extended JSON).
pub fn row(correlation: &Value) -> Row {
    let field = |key: &str| &correlation[key];
    let number = |key: &str| field(key).as_i64().unwrap_or_else(|| panic!("no integer {key}: {correlation}"));
    let events = field("events").as_array().unwrap_or_else(|| panic!("no events: {correlation}"));
    (
        field("id").as_str().unwrap_or_else(|| panic!("no id: {correlation}")).to_owned(),
        number("window_start"),
        number("window_end"),
        format!("{:.9e}", field("value").as_f64().unwrap_or_else(|| panic!("no value: {correlation}"))),
        events
            .iter()
            .map(|e| e["id"].as_str().unwrap_or_else(|| panic!("an event without id: {e}")).to_owned())
            .collect(),
        number("events_total"),
    )
}

/// The correlation alerts of one uninterrupted `dac run` of `rules` over
/// `events` (written to a file in `dir`), sorted.
pub fn expected(rules: &Path, events: &[Value], dir: &Path) -> Vec<Row> {
    rows(&expected_alerts(rules, events, dir)).0
}

/// Every alert of one uninterrupted `dac run` of `rules` over `events`
/// (written to a file in `dir`).
pub fn expected_alerts(rules: &Path, events: &[Value], dir: &Path) -> Vec<Value> {
    let file = dir.join("events.ndjson");
    std::fs::write(&file, events.iter().map(|e| format!("{e}\n")).collect::<String>()).unwrap();
    replay(rules, &file)
}

/// Alerts (as `dac run` prints them, or from MongoDB in relaxed Extended
/// JSON) as sorted rows: the correlations', and the others' as (rule
/// uuid, event id).
pub fn rows(alerts: &[Value]) -> (Vec<Row>, Vec<(String, String)>) {
    let (mut correlations, mut others) = (Vec::new(), Vec::new());
    for alert in alerts {
        if alert.get("correlation").is_some() {
            correlations.push(row(&alert["correlation"]));
        } else {
            let text =
                |value: &Value| value.as_str().unwrap_or_else(|| panic!("no uuid or event id: {alert}")).to_owned();
            others.push((text(&alert["uuid"]), text(&alert["offending_log"]["_id"])));
        }
    }
    correlations.sort();
    others.sort();
    (correlations, others)
}

/// A directory of the example correlations and the sequence rule's
/// component (`download-chmod-exec`), in `dir`.
pub fn rules_with_sequence(dir: &Path) -> PathBuf {
    let rules = dir.join("rules");
    std::fs::create_dir_all(&rules).unwrap();
    for entry in std::fs::read_dir(rules_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yml") {
            std::fs::copy(&path, rules.join(path.file_name().unwrap())).unwrap();
        }
    }
    std::fs::copy(crate::example_rule("download-chmod-exec"), rules.join("download-chmod-exec.wasm")).unwrap();
    rules
}

/// The alerts of `dac run -q RULES --replay FILE`, in order.
pub fn replay(rules: &Path, file: &Path) -> Vec<Value> {
    let replay = Command::new(crate::dac())
        .arg("run")
        .arg("-q")
        .arg(rules)
        .arg("--replay")
        .arg(file)
        .env("DAC_CACHE_DIR", crate::repo_root().join("target/dac-test-cache"))
        .output()
        .unwrap();
    assert!(replay.status.success(), "{}", String::from_utf8_lossy(&replay.stderr));
    String::from_utf8(replay.stdout).unwrap().lines().map(|line| serde_json::from_str(line).unwrap()).collect()
}

/// Rows of `expected` missing from `found`, and rows of `found` not
/// expected, for a message; `None` when they are equal.
pub fn difference<R: PartialEq + std::fmt::Debug>(expected: &[R], found: &[R]) -> Option<String> {
    let missing: Vec<&R> = expected.iter().filter(|row| !found.contains(row)).collect();
    let extra: Vec<&R> = found.iter().filter(|row| !expected.contains(row)).collect();
    if missing.is_empty() && extra.is_empty() && expected.len() == found.len() {
        return None;
    }
    Some(format!(
        "{} of {} alerts missing, {} extra ({} found): first missing {:?}, first extra {:?}",
        missing.len(),
        expected.len(),
        extra.len(),
        found.len(),
        missing.first(),
        extra.first()
    ))
}
