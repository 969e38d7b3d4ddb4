//! The seed talk's YAML rules: the two example files behave exactly like
//! the Rust versions, and malformed rules are refused with FILE:LINE.

mod common;

use std::path::Path;

use dac_detect::{parse_seed_yaml, DetectError, Event, RuleSet, Severity};
use dac_rule_sdk::Rule as _;

fn repo(path: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

fn ndjson(path: &str) -> Vec<String> {
    std::fs::read_to_string(repo(path)).unwrap().lines().filter(|l| !l.trim().is_empty()).map(String::from).collect()
}

#[test]
fn the_seed_talks_test_yields_exactly_the_shadow_uuid() {
    let set = RuleSet::compile(common::seed_rules()).unwrap();
    let event = common::event(serde_json::json!({
        "hostname": "pop-os", "ip_address": "127.0.1.1", "parent_pid": 1, "pid": 2,
        "path": "/usr/bin/sudo", "binary": "sudo", "arguments": "cat /etc/shadow",
        "command_line": "/usr/bin/sudo cat /etc/shadow"
    }));
    let mut out = Vec::new();
    set.matches(&event, &mut out);
    let uuids: Vec<&str> = out.iter().map(|m| set.rules()[m.rule].metadata().uuid.as_str()).collect();
    assert_eq!(uuids, ["5e3566a3-9f19-4ac7-8710-ec5fb09260ed"]);
    assert_eq!(out[0].matched[0].path, "command_line");
    assert_eq!(out[0].matched[0].value, "/usr/bin/sudo cat /etc/shadow");
}

#[test]
fn yaml_versions_have_the_rust_versions_metadata() {
    let rules = common::seed_rules();
    for (rule, rust) in
        rules.iter().zip([shadow::DetectionRule::metadata(), tmp_output_redir::DetectionRule::metadata()])
    {
        let m = rule.metadata();
        assert_eq!(m.name, rust.name);
        assert_eq!(m.uuid, rust.uuid);
        assert_eq!(m.version.as_deref(), Some(rust.version.as_str()));
        assert_eq!(format!("{:?}", m.severity), format!("{:?}", rust.severity));
        assert_eq!(m.tags, rust.tags);
        assert_eq!(m.description.as_deref(), Some(rust.description.as_str()));
    }
    assert_eq!(rules[0].metadata().severity, Severity::High);
}

#[test]
fn yaml_versions_alert_exactly_like_the_rust_versions() {
    let set = RuleSet::compile(common::seed_rules()).unwrap();
    let mut lines = ndjson("example-rules/data/sample-events.ndjson");
    for rule in ["shadow", "tmp-output-redir"] {
        lines.extend(ndjson(&format!("example-rules/{rule}/fixtures/must_fire.ndjson")));
        lines.extend(ndjson(&format!("example-rules/{rule}/fixtures/must_not_fire.ndjson")));
    }
    let mut fired = [0, 0];
    for line in &lines {
        let event = Event::from_json_slice(line.as_bytes()).unwrap().0;
        let sdk_event = dac_rule_sdk::Event::from_json(line);
        let rust = [
            !shadow::DetectionRule::evaluate(&sdk_event).is_empty(),
            !tmp_output_redir::DetectionRule::evaluate(&sdk_event).is_empty(),
        ];
        let mut out = Vec::new();
        set.matches(&event, &mut out);
        let yaml = [out.iter().any(|m| m.rule == 0), out.iter().any(|m| m.rule == 1)];
        assert_eq!(yaml, rust, "{line}");
        for i in 0..2 {
            fired[i] += usize::from(yaml[i]);
        }
    }
    assert!(fired[0] >= 3 && fired[1] >= 3, "the comparison must include firing events: {fired:?}");
}

fn err(text: &str) -> String {
    parse_seed_yaml("rules/x.yaml", text).unwrap_err().to_string()
}

#[test]
fn a_rule_declares_its_dedup_key_and_window() {
    let rule = parse_seed_yaml(
        "rules/x.yaml",
        "name: n\nuuid: u\ndetection_logic:\n  c: [a]\ndedup:\n  key: [hostname, process.user]\n  window: 10m\n",
    )
    .unwrap();
    let dedup = rule.metadata().dedup.clone().unwrap();
    assert_eq!(dedup.key, ["hostname", "process.user"]);
    assert_eq!((dedup.window.as_str(), dedup.window_ms), ("10m", 600_000));
    let head = "name: n\nuuid: u\ndetection_logic:\n  c: [a]\n";
    assert_eq!(
        err(&format!("{head}dedup:\n  key: [hostname]\n  window: 10 minutes\n")),
        "rules/x.yaml:7: dedup.window: '10 minutes' is not a duration like 30s, 10m, 1h or 2d"
    );
    assert_eq!(
        err(&format!("{head}dedup:\n  key: []\n  window: 1h\n")),
        "rules/x.yaml:6: dedup.key: names no field (dedup needs at least one)"
    );
    assert_eq!(
        err(&format!("{head}dedup:\n  window: 1h\n")),
        "rules/x.yaml:6: dedup.key: missing (the fields whose values make a repeat)"
    );
    assert_eq!(
        err(&format!("{head}dedup:\n  key: [a..b]\n  window: 1h\n")),
        "rules/x.yaml:6: dedup.key: a field is a dotted path such as command_line or process.parent.path"
    );
    assert_eq!(
        err(&format!("{head}dedup:\n  key: [h]\n  window: 1h\n  keys: [u]\n")),
        "rules/x.yaml:8: dedup.keys: unknown key `keys` (dedup has key and window)"
    );
}

#[test]
fn malformed_seed_rules_are_refused_with_file_line_and_field() {
    let head = "name: n\nuuid: u\n";
    assert_eq!(
        err(&format!("{head}detection_logic:\n  command_line: /etc/shadow\n")),
        "rules/x.yaml:4: detection_logic.command_line: expected a list of strings"
    );
    assert_eq!(
        err(&format!("{head}detection_logic:\n  command_line:\n    - a\n    - [b]\n")),
        "rules/x.yaml:6: detection_logic.command_line[1]: expected a list of strings"
    );
    assert_eq!(
        err(&format!("{head}detection_logc:\n  command_line: [a]\n")),
        "rules/x.yaml:3: detection_logc: unknown key (a seed rule has name, uuid, detection_logic and optionally severity, tags, description, references, version, author, dedup)"
    );
    assert_eq!(err("name: n\ndetection_logic:\n  c: [a]\n"), "rules/x.yaml:1: uuid: missing");
    assert_eq!(
        err(&format!("{head}severity: urgent\ndetection_logic:\n  c: [a]\n")),
        "rules/x.yaml:3: severity: unknown severity 'urgent' (informational, low, medium, high or critical)"
    );
    assert_eq!(
        err(&format!("{head}detection_logic: {{}}\n")),
        "rules/x.yaml:3: detection_logic: expected at least one field"
    );
    assert_eq!(
        err(&format!("{head}detection_logic:\n  c: ['']\n")),
        "rules/x.yaml:4: detection_logic.c[0]: an empty substring would match every event"
    );
    assert_eq!(
        err(&format!("{head}tags: attack\ndetection_logic:\n  c: [a]\n")),
        "rules/x.yaml:3: tags: expected a list of strings, found a string"
    );
    assert_eq!(err("name: [n\n"), "rules/x.yaml:2:1: invalid YAML: while parsing a flow sequence, expected ',' or ']'");
    assert_eq!(
        err(&format!("{head}name: again\ndetection_logic:\n  c: [a]\n")),
        "rules/x.yaml:3:1: invalid YAML: duplicated key in mapping"
    );
    assert_eq!(err("- a\n"), "rules/x.yaml:1: (document): expected a mapping, found a list");
    assert!(matches!(parse_seed_yaml("f", ""), Err(DetectError::UnknownKind { .. })));
}

#[test]
fn several_fields_must_all_match_and_matching_is_case_sensitive() {
    let rule = parse_seed_yaml(
        "r.yaml",
        "name: n\nuuid: u\ndetection_logic:\n  command_line: [wget, curl]\n  process.parent.path: [/nginx]\n",
    )
    .unwrap();
    let set = RuleSet::compile(vec![rule]).unwrap();
    let fires = |json: serde_json::Value| {
        let mut out = Vec::new();
        set.matches(&common::event(json), &mut out);
        !out.is_empty()
    };
    assert!(fires(serde_json::json!({"command_line": "curl x", "process": {"parent": {"path": "/usr/sbin/nginx"}}})));
    assert!(!fires(
        serde_json::json!({"command_line": "curl x", "process": {"parent": {"path": "/usr/sbin/apache2"}}})
    ));
    assert!(!fires(serde_json::json!({"command_line": "CURL x", "process": {"parent": {"path": "/usr/sbin/nginx"}}})));
    assert!(!fires(serde_json::json!({"command_line": "curl x"})));
    assert!(!fires(serde_json::json!({"command_line": 5, "process": {"parent": {"path": "/nginx"}}})));
}

#[test]
fn load_dir_is_all_or_nothing_and_reports_every_error() {
    let mapping = dac_detect::FieldMapping::default();
    let rules = dac_detect::load_dir(&repo("example-rules/yaml"), &mapping).unwrap();
    let names: Vec<&str> = rules.iter().map(|r| r.metadata().name.as_str()).collect();
    assert_eq!(names, ["Suspicious /etc/shadow Usage", "Output redirection to /tmp/ Directory"]);

    let dir = std::env::temp_dir().join(format!("dac-detect-load-dir-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("a.yaml"), "name: n\nuuid: u\ndetection_logic:\n  c: x\n").unwrap();
    std::fs::write(dir.join("b.yml"), "name: n\n").unwrap();
    std::fs::write(dir.join("c.yaml"), "name: n\nuuid: u\ndetection_logic:\n  c: [x]\n").unwrap();
    std::fs::write(dir.join("notes.txt"), "not a rule").unwrap();
    let errors = dac_detect::load_dir(&dir, &mapping).unwrap_err();
    let shown: Vec<String> = errors.iter().map(|e| e.to_string().replace(&format!("{}/", dir.display()), "")).collect();
    assert_eq!(
        shown,
        [
            "a.yaml:4: detection_logic.c: expected a list of strings",
            "b.yml: not a rule: neither `detection_logic` (seed YAML) nor `detection` or `correlation` (Sigma)"
        ]
    );
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(dac_detect::load_dir(&dir, &mapping).is_err());
}
