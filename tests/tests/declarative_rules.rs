//! YAML and Sigma rules in `dac-run`: the seed's YAML rules alert exactly
//! like their Rust components, the SigmaHQ rules run host-side with their
//! authors credited, and broken rules are refused at start with FILE:LINE.

use dac_tests::{dac_run, example_rule, sample_log, sigma_dir, yaml_rules_dir};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const SHADOW_UUID: &str = "5e3566a3-9f19-4ac7-8710-ec5fb09260ed";

fn run(args: &[&dyn AsRef<std::ffi::OsStr>]) -> Output {
    let mut command = Command::new(dac_run());
    for arg in args {
        command.arg(arg);
    }
    command.env("DAC_CACHE_DIR", dac_tests::repo_root().join("target/dac-test-cache")).output().expect("run dac-run")
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

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// An alert without what necessarily differs between a component and a
/// YAML file: the rule's content hash and the findings' wording.
fn comparable(mut alert: Value) -> Value {
    alert.as_object_mut().unwrap().remove("rule_hash");
    for finding in alert["findings"].as_array_mut().unwrap() {
        finding.as_object_mut().unwrap().remove("message");
    }
    alert
}

#[test]
fn seed_yaml_rules_alert_exactly_like_the_rust_components_on_the_sample_log() {
    let rust = run(&[&example_rule("shadow"), &example_rule("tmp-output-redir"), &"--replay", &sample_log()]);
    assert_eq!(rust.status.code(), Some(0), "{}", stderr(&rust));
    let yaml = run(&[&yaml_rules_dir(), &"--replay", &sample_log()]);
    assert_eq!(yaml.status.code(), Some(0), "{}", stderr(&yaml));
    let (rust, yaml) = (alerts(&rust), alerts(&yaml));
    assert!(rust.len() >= 4, "the sample log must exercise both rules: {} alerts", rust.len());
    for uuid in [SHADOW_UUID, "f825ad39-d4b1-41da-91ec-6438d8dc9ace"] {
        assert!(rust.iter().any(|a| a["uuid"] == uuid), "no alert of {uuid}");
    }
    let hashes: Vec<&str> = yaml.iter().map(|a| a["rule_hash"].as_str().unwrap()).collect();
    assert_eq!(
        rust.into_iter().map(comparable).collect::<Vec<_>>(),
        yaml.iter().cloned().map(comparable).collect::<Vec<_>>(),
        "same alerts, fields and order"
    );
    let shadow_yaml = std::fs::read(yaml_rules_dir().join("shadow.yaml")).unwrap();
    let expected = format!("sha256:{}", sha256_hex(&shadow_yaml));
    assert!(
        yaml.iter().zip(&hashes).any(|(a, h)| a["uuid"] == SHADOW_UUID && *h == expected),
        "rule_hash is the SHA-256 of the YAML file"
    );
}

fn sha256_hex(bytes: &[u8]) -> String {
    // The test does not depend on a hashing crate: sha256sum is everywhere.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("f");
    std::fs::write(&file, bytes).unwrap();
    let out = Command::new("sha256sum").arg(&file).output().expect("sha256sum");
    String::from_utf8(out.stdout).unwrap().split_whitespace().next().unwrap().to_owned()
}

#[test]
fn yaml_rules_and_components_run_side_by_side() {
    let dir = tempfile::tempdir().unwrap();
    let log = write(dir.path(), "log.ndjson", "{\"command_line\":\"/usr/bin/sudo cat /etc/shadow > /tmp/x\"}\n");
    let output = run(&[&example_rule("shadow"), &yaml_rules_dir().join("tmp_output_redir.yaml"), &"--replay", &log]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let uuids: Vec<String> = alerts(&output).iter().map(|a| a["uuid"].as_str().unwrap().to_owned()).collect();
    assert_eq!(uuids, [SHADOW_UUID, "f825ad39-d4b1-41da-91ec-6438d8dc9ace"]);
}

/// Every SigmaHQ rule loads into `dac-run`; the alerts on the sample log
/// are exactly what dac-detect's own matcher says, with the authors.
#[test]
fn all_sigma_rules_replay_the_sample_log_like_dac_detect_and_credit_their_authors() {
    let output = run(&[&sigma_dir(), &"--replay", &sample_log()]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let alerts = alerts(&output);

    let mapping = dac_detect::FieldMapping::default();
    let rules = dac_detect::load_dir(&sigma_dir(), &mapping).expect("the Sigma rules load");
    assert_eq!(rules.len(), 122);
    let set = dac_detect::RuleSet::compile(rules).unwrap();
    let mut expected = Vec::new();
    for (index, line) in std::fs::read_to_string(sample_log()).unwrap().lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let event = dac_detect::Event::from_json_slice(line.as_bytes()).unwrap().0;
        let mut matches = Vec::new();
        set.matches_without_prefilter(&event, &mut matches);
        for m in matches {
            expected.push((
                format!("{}:{}", sample_log().display(), index + 1),
                set.rules()[m.rule].metadata().uuid.clone(),
            ));
        }
    }
    let mut got: Vec<(String, String)> = alerts
        .iter()
        .map(|a| (a["source"].as_str().unwrap().to_owned(), a["uuid"].as_str().unwrap().to_owned()))
        .collect();
    got.sort();
    expected.sort();
    assert!(!expected.is_empty(), "the sample log fires some Sigma rules");
    assert_eq!(got, expected);
    for alert in &alerts {
        let authors = alert["authors"].as_array().expect("Sigma alerts name their authors");
        assert!(!authors.is_empty() && authors.iter().all(|a| !a.as_str().unwrap().is_empty()), "{alert}");
        assert!(!alert["findings"][0]["matched"].as_array().unwrap().is_empty(), "{alert}");
    }
    assert!(stderr(&output).contains("proc_creation_lnx_"), "the summary lists the rules: {}", stderr(&output));
}

#[test]
fn a_broken_yaml_rule_is_refused_at_start_with_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules");
    std::fs::create_dir(&rules).unwrap();
    std::fs::copy(yaml_rules_dir().join("shadow.yaml"), rules.join("shadow.yaml")).unwrap();
    let broken = write(&rules, "broken.yml", "name: B\nuuid: b-1\ndetection_logic:\n  command_line: 3\n");
    let log = write(dir.path(), "log.ndjson", "{\"command_line\":\"cat /etc/shadow\"}\n");
    let output = run(&[&rules, &"--replay", &log]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(output.stdout.is_empty(), "nothing ran");
    let err = stderr(&output);
    assert!(err.contains(&format!("{}:4: detection_logic.command_line", broken.display())), "{err}");
    assert!(err.contains("nothing was run"), "{err}");

    let sigma = write(
        dir.path(),
        "agg.yml",
        "title: A\nid: a-1\nlogsource: {product: linux, category: process_creation}\ndetection:\n  sel:\n    Image|endswith: /sh\n  condition: sel | count() > 5\n",
    );
    let output = run(&[&sigma, &"--replay", &log]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(
        stderr(&output).contains(&format!("{}:7: detection.condition: unsupported", sigma.display())),
        "{}",
        stderr(&output)
    );
}

#[test]
fn a_yaml_rule_with_a_components_uuid_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let log = write(dir.path(), "log.ndjson", "{\"command_line\":\"cat /etc/shadow\"}\n");
    let output = run(&[&example_rule("shadow"), &yaml_rules_dir().join("shadow.yaml"), &"--replay", &log]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(stderr(&output).contains(&format!("both declare uuid {SHADOW_UUID}")), "{}", stderr(&output));
}

#[test]
fn sigma_mapping_flag_maps_fields_and_is_checked() {
    let dir = tempfile::tempdir().unwrap();
    let rule = write(
        dir.path(),
        "rule.yml",
        "title: Whoami\nid: w-1\nauthor: Ann Analyst, Bob Builder\nlevel: low\nlogsource: {product: linux, category: process_creation}\ndetection:\n  sel:\n    CommandLine|contains: whoami\n  condition: sel\n",
    );
    let mapping = write(
        dir.path(),
        "edr.toml",
        "name = \"edr\"\n[[logsource]]\nproduct = \"linux\"\ncategory = \"process_creation\"\n[fields]\nCommandLine = \"process.cmd\"\n",
    );
    let log =
        write(dir.path(), "log.ndjson", "{\"process\":{\"cmd\":\"WHOAMI /all\"}}\n{\"command_line\":\"whoami\"}\n");
    let output = run(&[&rule, &"--sigma-mapping", &mapping, &"--replay", &log]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let alerts = alerts(&output);
    assert_eq!(alerts.len(), 1, "only the mapped field is read");
    assert_eq!(alerts[0]["source"], format!("{}:1", log.display()));
    assert_eq!(alerts[0]["authors"], serde_json::json!(["Ann Analyst", "Bob Builder"]));
    assert_eq!(alerts[0]["severity"], "low");
    assert_eq!(alerts[0]["findings"][0]["matched"][0]["path"], "process.cmd");

    let bad = write(dir.path(), "bad.toml", "[fields\n");
    let output = run(&[&rule, &"--sigma-mapping", &bad, &"--replay", &log]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(stderr(&output).contains("--sigma-mapping"), "{}", stderr(&output));
}

/// The raw-bytes prefilter must not drop events whose text only matches
/// after Unicode folding (the Kelvin sign folds to `k`), nor events that
/// are escaped, nor numbers read as text.
#[test]
fn the_prefilter_never_drops_what_the_rules_would_match() {
    let dir = tempfile::tempdir().unwrap();
    let rule = write(
        dir.path(),
        "kill.yml",
        "title: Kill\nid: k-1\nlogsource: {product: linux, category: process_creation}\ndetection:\n  sel:\n    CommandLine|contains: 'kill -9'\n  condition: sel\n",
    );
    let pid = write(dir.path(), "pid.yaml", "name: Pid\nuuid: p-1\ndetection_logic:\n  pid:\n    - '4242'\n");
    let log = write(
        dir.path(),
        "log.ndjson",
        concat!(
            "{\"command_line\":\"/bin/\u{212A}ILL -9 1\"}\n",
            "{\"command_line\":\"kill \\u002d9 1\"}\n",
            "{\"command_line\":\"ls\",\"pid\":{\"$numberLong\":\"4242\"}}\n",
            "{\"command_line\":\"ls\",\"pid\":17}\n",
        ),
    );
    for prefilter in [None, Some("--no-prefilter")] {
        let mut args: Vec<&dyn AsRef<std::ffi::OsStr>> = vec![&rule, &pid, &"--replay", &log];
        if let Some(flag) = &prefilter {
            args.push(flag);
        }
        let output = run(&args);
        assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
        let got: Vec<(String, String)> = alerts(&output)
            .iter()
            .map(|a| {
                (
                    a["source"].as_str().unwrap().rsplit(':').next().unwrap().to_owned(),
                    a["uuid"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        let expected = [("1", "k-1"), ("2", "k-1"), ("3", "p-1")].map(|(l, u)| (l.to_owned(), u.to_owned()));
        assert_eq!(got, expected, "{prefilter:?}");
    }
}

fn correlation_dir() -> PathBuf {
    dac_tests::repo_root().join("example-rules/correlation")
}

/// The example correlations (one of each type) over the sample log: each
/// fires, each alert's evidence is in the log where and when the alert
/// says, the rules they aggregate only feed them, and one thread or two
/// give the same bytes.
#[test]
fn example_correlations_fire_with_their_evidence_on_any_thread_count() {
    let log = sample_log();
    let one = run(&[&"--threads", &"1", &correlation_dir(), &"--replay", &log]);
    assert!(one.status.success(), "{}", stderr(&one));
    let two = run(&[&"--threads", &"2", &correlation_dir(), &"--replay", &log]);
    assert!(two.status.success(), "{}", stderr(&two));
    assert!(one.stdout == two.stdout, "--threads 1 and 2 differ");

    let events: Vec<Value> =
        std::fs::read_to_string(&log).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let alerts = alerts(&one);
    let correlated: Vec<&Value> = alerts.iter().filter(|a| a.get("correlation").is_some()).collect();
    let types: std::collections::BTreeSet<&str> =
        correlated.iter().map(|a| a["correlation"]["type"].as_str().unwrap()).collect();
    assert_eq!(
        types.into_iter().collect::<Vec<_>>(),
        [
            "event_count",
            "temporal",
            "temporal_ordered",
            "value_avg",
            "value_count",
            "value_median",
            "value_percentile",
            "value_sum"
        ]
    );
    let mut ids = std::collections::HashSet::new();
    for alert in &correlated {
        let c = &alert["correlation"];
        assert!(ids.insert(c["id"].as_str().unwrap().to_owned()), "an id twice: {alert}");
        let (start, end) = (c["window_start"].as_i64().unwrap(), c["window_end"].as_i64().unwrap());
        // Fired by the event that completed it; every window here is 1m
        // at most.
        assert_eq!(alert["offending_log"]["ts"].as_i64(), Some(end), "{alert}");
        assert!(start <= end && end - start <= 60_000, "{alert}");
        let host = c["group"]["hostname"].as_str().unwrap();
        assert_eq!(alert["offending_log"]["hostname"].as_str(), Some(host));
        let evidence = c["events"].as_array().unwrap();
        assert_eq!(c["events_total"].as_u64(), Some(evidence.len() as u64));
        for e in evidence {
            let ts = e["ts"].as_i64().unwrap();
            assert!((start..=end).contains(&ts), "{alert}");
            assert!(
                events.iter().any(|event| event["ts"].as_i64() == Some(ts) && event["hostname"] == host),
                "evidence at {ts} on {host} is not in the log: {alert}"
            );
        }
        if alert["rule_name"] == "Burst of discovery commands on one host" {
            assert!(evidence.len() >= 4, "{alert}");
        }
    }
    // No correlation here says `generate: true`: only correlations alert.
    assert_eq!(correlated.len(), alerts.len());
    assert!(stderr(&one).contains("only fed correlations, not alerted"), "{}", stderr(&one));
}

#[test]
fn a_correlation_naming_no_loaded_rule_is_refused_at_start_with_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let rule = write(
        dir.path(),
        "c.yml",
        "title: C\nid: c-1\ncorrelation:\n  type: event_count\n  rules:\n    - recon\n  timespan: 1m\n  condition: \
         {gte: 2}\n",
    );
    let out = run(&[&rule, &"--replay", &sample_log()]);
    assert!(!out.status.success());
    let expected = format!("{}:6: correlation.rules: no rule loaded has the id or Sigma name 'recon'", rule.display());
    assert!(stderr(&out).contains(&expected), "{}", stderr(&out));
}
