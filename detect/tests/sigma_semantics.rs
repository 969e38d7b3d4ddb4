//! Sigma constructs one by one: what each modifier and condition form
//! matches, and how unsupported or broken constructs are refused.

mod common;

use dac_detect::{parse_sigma, FieldMapping, RuleSet};
use serde_json::json;

const HEAD: &str =
    "title: t\nid: 0e0e0e0e-0000-4000-8000-000000000000\nlogsource:\n  product: linux\n  category: process_creation\n";

/// Builds a rule from a `detection:` body (indented by 4) with the default mapping.
fn rule(detection: &str) -> RuleSet {
    let text = format!("{HEAD}detection:\n{detection}");
    let rule = parse_sigma("t.yml", &text, &FieldMapping::default()).unwrap_or_else(|e| panic!("{e}\n{text}"));
    RuleSet::compile(vec![rule]).unwrap()
}

fn fires(set: &RuleSet, event: serde_json::Value) -> bool {
    let event = common::event(event);
    let mut with = Vec::new();
    set.matches(&event, &mut with);
    let mut without = Vec::new();
    set.matches_without_prefilter(&event, &mut without);
    assert_eq!(with, without, "prefilter changed the result");
    !with.is_empty()
}

fn refused(detection: &str) -> String {
    let text = format!("{HEAD}detection:\n{detection}");
    parse_sigma("t.yml", &text, &FieldMapping::default()).unwrap_err().to_string()
}

#[test]
fn plain_values_are_case_insensitive_equality_with_wildcards() {
    let set = rule("    sel:\n        Image: '/usr/bin/c*l'\n        User: ROOT\n    condition: sel\n");
    assert!(fires(&set, json!({"path": "/USR/BIN/CURL", "user": "root"})));
    assert!(fires(&set, json!({"path": "/usr/bin/cl", "user": "Root"})));
    assert!(!fires(&set, json!({"path": "/usr/bin/curl -x", "user": "root"})));
    assert!(!fires(&set, json!({"path": "/usr/bin/curl"})));
    let set = rule("    sel:\n        CommandLine: 'a?c\\*d\\?'\n    condition: sel\n");
    assert!(fires(&set, json!({"command_line": "aXc*d?"})));
    assert!(!fires(&set, json!({"command_line": "aXcYd?"})));
    assert!(!fires(&set, json!({"command_line": "ac*d?"})));
    // A backslash before an ordinary character stays a backslash.
    let set = rule("    sel:\n        CommandLine|contains: 'C:\\Windows\\'\n    condition: sel\n");
    assert!(fires(&set, json!({"command_line": "dir c:\\windows\\system32"})));
}

#[test]
fn string_modifiers_lists_and_all() {
    let set = rule("    sel:\n        CommandLine|startswith: 'sh -c'\n        Image|endswith:\n            - /sh\n            - /bash\n    condition: sel\n");
    assert!(fires(&set, json!({"command_line": "SH -C id", "path": "/bin/bash"})));
    assert!(!fires(&set, json!({"command_line": "/bin/sh -c id", "path": "/bin/bash"})));
    assert!(!fires(&set, json!({"command_line": "sh -c id", "path": "/bin/zsh"})));
    let set = rule("    sel:\n        CommandLine|contains|all:\n            - socket\n            - connect\n    condition: sel\n");
    assert!(fires(&set, json!({"command_line": "x Connect y SOCKET"})));
    assert!(!fires(&set, json!({"command_line": "socket only"})));
}

#[test]
fn cased_re_and_regex_flags() {
    let set = rule("    sel:\n        CommandLine|contains|cased: 'Invoke-'\n    condition: sel\n");
    assert!(fires(&set, json!({"command_line": "x Invoke-Mimikatz"})));
    assert!(!fires(&set, json!({"command_line": "x invoke-mimikatz"})));
    let set = rule("    sel:\n        CommandLine|re: '\\s-O\\s'\n    condition: sel\n");
    assert!(fires(&set, json!({"command_line": "wget x -O /tmp/x"})));
    assert!(!fires(&set, json!({"command_line": "wget x -o /tmp/x"})));
    let set = rule("    sel:\n        CommandLine|re|i: '\\s-O\\s'\n    condition: sel\n");
    assert!(fires(&set, json!({"command_line": "wget x -o /tmp/x"})));
    let set = rule("    sel:\n        CommandLine|re|s: '^a.b$'\n    condition: sel\n");
    assert!(fires(&set, json!({"command_line": "a\nb"})));
    let set = rule("    sel:\n        CommandLine|re|m: '^b$'\n    condition: sel\n");
    assert!(fires(&set, json!({"command_line": "a\nb\nc"})));
}

#[test]
fn windash_base64_and_base64offset() {
    let set = rule("    sel:\n        CommandLine|windash|contains: ' -exec '\n    condition: sel\n");
    for spelling in [
        "find . -exec id",
        "find . /exec id",
        "find . \u{2013}exec id",
        "find . \u{2014}EXEC id",
        "find . \u{2015}exec id",
    ] {
        assert!(fires(&set, json!({ "command_line": spelling })), "{spelling}");
    }
    assert!(!fires(&set, json!({"command_line": "find . +exec id"})));
    // base64 of "/bin/bash" is L2Jpbi9iYXNo: case-sensitive, as encoded text must be.
    let set = rule("    sel:\n        CommandLine|base64|contains: '/bin/bash'\n    condition: sel\n");
    assert!(fires(&set, json!({"command_line": "echo L2Jpbi9iYXNo | base64 -d"})));
    assert!(!fires(&set, json!({"command_line": "echo l2jpbi9iyxno | base64 -d"})));
    let set = rule("    sel:\n        CommandLine|base64offset|contains: '/bin/bash'\n    condition: sel\n");
    // "/bin/bash" at offsets 0, 1 and 2 of an encoded payload.
    for payload in ["L2Jpbi9iYXNoIC1p", "eC9iaW4vYmFzaCAtaQ==", "eHgvYmluL2Jhc2ggLWk="] {
        assert!(fires(&set, json!({ "command_line": format!("echo {payload}") })), "{payload}");
    }
    assert!(!fires(&set, json!({"command_line": "echo aGVsbG8gd29ybGQ="})));
}

#[test]
fn cidr_exists_null_and_fieldref() {
    let mapping = "    sel:\n        ProcessId|cidr:\n            - 10.0.0.0/8\n            - '2001:db8::/32'\n    condition: sel\n";
    let set = rule(mapping);
    // A number is not an address; text is parsed.
    let with_ip = |ip: &str| json!({ "pid": ip });
    assert!(fires(&set, with_ip("10.1.2.3")));
    assert!(fires(&set, with_ip("2001:db8::1")));
    assert!(!fires(&set, with_ip("192.168.0.1")));
    assert!(!fires(&set, with_ip("not an ip")));
    let set = rule("    sel:\n        User|exists: true\n        CurrentDirectory|exists: false\n    condition: sel\n");
    assert!(fires(&set, json!({"user": "x"})));
    assert!(fires(&set, json!({"user": null})));
    assert!(!fires(&set, json!({"user": "x", "cwd": "/"})));
    let set = rule("    sel:\n        User: null\n    condition: sel\n");
    assert!(fires(&set, json!({})));
    assert!(fires(&set, json!({"user": null})));
    assert!(!fires(&set, json!({"user": ""})));
    let set = rule("    sel:\n        ParentImage|fieldref: Image\n    condition: sel\n");
    assert!(fires(&set, json!({"path": "/bin/sh", "parent_path": "/BIN/SH"})));
    assert!(!fires(&set, json!({"path": "/bin/sh", "parent_path": "/bin/bash"})));
    assert!(!fires(&set, json!({"parent_path": "/bin/bash"})));
    let set = rule("    sel:\n        ParentCommandLine|fieldref|contains: CommandLine\n    condition: sel\n");
    assert!(fires(&set, json!({"command_line": "id", "parent_command_line": "sh -c id"})));
    let set = rule("    sel:\n        ProcessId: 42\n    condition: sel\n");
    assert!(fires(&set, json!({"pid": 42})));
    assert!(fires(&set, json!({"pid": "42"})));
    assert!(!fires(&set, json!({"pid": 420})));
}

#[test]
fn conditions_lists_of_maps_and_keywords() {
    let set = rule(
        "    sel_a:\n        Image|endswith: /nc\n    sel_b:\n        - CommandLine|contains: ' -e '\n        - CommandLine|endswith: ' -c'\n    filter:\n        CommandLine|contains: ' -l '\n    condition: all of sel_* and not filter\n",
    );
    assert!(fires(&set, json!({"path": "/bin/nc", "command_line": "nc x 1 -e sh"})));
    assert!(fires(&set, json!({"path": "/bin/nc", "command_line": "nc x 1 -c"})));
    assert!(!fires(&set, json!({"path": "/bin/nc", "command_line": "nc -l -e sh"})));
    assert!(!fires(&set, json!({"path": "/bin/cat", "command_line": "nc x 1 -e sh"})));
    let set = rule("    keywords:\n        - 'mimikatz'\n        - 'sekurlsa'\n    condition: keywords\n");
    assert!(fires(&set, json!({"command_line": "run MIMIKATZ now"})));
    assert!(fires(&set, json!({"deep": {"er": ["x", "sekurlsa::logonpasswords"]}})));
    assert!(!fires(&set, json!({"command_line": "ls", "n": 5})));
    let set = rule("    a:\n        User: x\n    b:\n        User: y\n    condition:\n        - a\n        - b\n");
    assert!(fires(&set, json!({"user": "y"})));
    let set = rule("    _a:\n        User: x\n    b:\n        User: y\n    condition: 1 of them\n");
    assert!(!fires(&set, json!({"user": "x"})), "`them` leaves out identifiers starting with _");
    let set = rule("    a:\n        User: x\n    condition: not a\n");
    assert!(fires(&set, json!({"user": "y"})) && fires(&set, json!({})) && !fires(&set, json!({"user": "X"})));
}

#[test]
fn unsupported_constructs_are_refused_by_name() {
    let cases = [
        ("    sel:\n        User: x\n    condition: sel | count() by host > 5\n", "t.yml:9: detection.condition: unsupported: aggregation `| count() by host > 5`"),
        ("    sel:\n        User: x\n    condition: near sel\n", "t.yml:9: detection.condition: unsupported: `near` (temporal correlation)"),
        ("    sel:\n        User: x\n    timeframe: 5m\n    condition: sel\n", "t.yml:9: detection.timeframe: unsupported: `timeframe` (correlation)"),
        ("    sel:\n        User|wide|base64: x\n    condition: sel\n", "t.yml:8: detection.sel.User|wide|base64: unsupported: modifier `wide`"),
        ("    sel:\n        User|frobnicate: x\n    condition: sel\n", "t.yml:8: detection.sel.User|frobnicate: unsupported: unknown modifier `frobnicate`"),
        ("    sel:\n        User|gt: 5\n    condition: sel\n", "t.yml:8: detection.sel.User|gt: unsupported: modifier `gt`"),
        ("    sel:\n        TargetFilename: x\n    condition: sel\n", "t.yml:8: detection.sel.TargetFilename: unsupported: field `TargetFilename`: not in the field mapping `linux process_creation (default)` (it maps CommandLine, CurrentDirectory, Image, LogonId, ParentCommandLine, ParentImage, ParentProcessId, ProcessId, User)"),
        ("    sel:\n        User: x\n    condition: 2 of them\n", "t.yml:9: detection.condition: unsupported: `2 of` (only `1 of` and `all of`)"),
        ("    sel:\n        '|all':\n            - a\n    condition: sel\n", "t.yml:8: detection.sel.|all: unsupported: a selection key without a field name (keyword modifiers)"),
        ("    sel:\n        User|base64: 'a*b'\n    condition: sel\n", "t.yml:8: detection.sel.User|base64: unsupported: `base64`/`base64offset` of a value with wildcards"),
    ];
    for (detection, expected) in cases {
        assert_eq!(refused(detection), expected);
    }
    let windows = "title: t\nid: x\nlogsource:\n  product: windows\n  category: process_creation\ndetection:\n  sel:\n    Image: x\n  condition: sel\n";
    let e = parse_sigma("w.yml", windows, &FieldMapping::default()).unwrap_err();
    assert!(e.is_unsupported());
    assert_eq!(e.to_string(), "w.yml:3: logsource: unsupported: log source (product: windows, category: process_creation): the field mapping `linux process_creation (default)` covers product: linux, category: process_creation");
    let correlation = "title: t\nid: x\ncorrelation:\n  type: event_count\n";
    assert_eq!(
        parse_sigma("c.yml", correlation, &FieldMapping::default()).unwrap_err().to_string(),
        "c.yml:4: correlation.rules: missing"
    );
    let two_docs = format!("{HEAD}detection:\n    sel:\n        User: x\n    condition: sel\n---\ntitle: u\n");
    assert_eq!(
        parse_sigma("d.yml", &two_docs, &FieldMapping::default()).unwrap_err().to_string(),
        "d.yml:11: (document): unsupported: 2 YAML documents where one rule is expected"
    );
}

#[test]
fn broken_rules_are_refused_with_their_location() {
    let cases = [
        ("    sel:\n        User: x\n    condition: sel and missing\n", "t.yml:9: detection.condition: unknown search identifier `missing`"),
        ("    sel:\n        User: x\n    condition: (sel\n", "t.yml:9: detection.condition: missing `)`"),
        ("    sel:\n        User: x\n", "t.yml:7: detection.condition: missing"),
        ("    sel:\n        CommandLine|re: '(['\n    condition: sel\n", "t.yml:8: detection.sel.CommandLine|re: invalid regular expression: regex parse error:\n    ([\n     ^\nerror: unclosed character class"),
        ("    sel:\n        ProcessId|cidr: 10.0.0.0/33\n    condition: sel\n", "t.yml:8: detection.sel.ProcessId|cidr: `10.0.0.0/33` is not a CIDR network"),
        ("    sel:\n        User|exists: maybe\n    condition: sel\n", "t.yml:8: detection.sel.User|exists: `exists` takes true or false"),
        ("    sel:\n        User|contains|startswith: x\n    condition: sel\n", "t.yml:8: detection.sel.User|contains|startswith: only one of contains, startswith and endswith"),
        ("    sel:\n        User|i: x\n    condition: sel\n", "t.yml:8: detection.sel.User|i: modifier `i` only applies after `re`"),
        ("    sel:\n        User|re|contains: x\n    condition: sel\n", "t.yml:8: detection.sel.User|re|contains: modifier conflict: `re` combines only with `i`, `m`, `s` and `all`"),
        ("    sel:\n        User|base64offset: x\n    condition: sel\n", "t.yml:8: detection.sel.User|base64offset: modifier conflict: `base64offset` needs `contains` (its output is a substring)"),
        ("    sel:\n        User: []\n    condition: sel\n", "t.yml:8: detection.sel.User: an empty list of values"),
        ("    sel:\n        User:\n            - a\n            - [b]\n    condition: sel\n", "t.yml:10: detection.sel.User[1]: expected a value, found a nested list or map"),
        ("    sel:\n        - User: a\n        - b\n    condition: sel\n", "t.yml:9: detection.sel[1]: a list is either all maps (alternative selections) or all values (keywords)"),
        ("    sel: x\n    condition: sel\n", "t.yml:7: detection.sel: expected a map of fields or a list, found a string"),
    ];
    for (detection, expected) in cases {
        assert_eq!(refused(detection), expected);
    }
    let no_id = "title: t\nlogsource:\n  product: linux\ndetection:\n  sel:\n    User: x\n  condition: sel\n";
    assert_eq!(
        parse_sigma("n.yml", no_id, &FieldMapping::default()).unwrap_err().to_string(),
        "n.yml:1: id: missing (it becomes the alert's uuid)"
    );
    let bad_level = format!("{HEAD}level: severe\ndetection:\n    sel:\n        User: x\n    condition: sel\n");
    assert_eq!(
        parse_sigma("l.yml", &bad_level, &FieldMapping::default()).unwrap_err().to_string(),
        "l.yml:6: level: unknown level 'severe' (informational, low, medium, high or critical)"
    );
}

#[test]
fn load_text_tells_the_languages_apart() {
    let m = FieldMapping::default();
    let sigma = format!("{HEAD}detection:\n    sel:\n        User: x\n    condition: sel\n");
    assert_eq!(dac_detect::load_text("a.yml", &sigma, &m).unwrap().metadata().kind, dac_detect::RuleKind::Sigma);
    let seed = "name: n\nuuid: u\ndetection_logic:\n  c: [a]\n";
    assert_eq!(dac_detect::load_text("b.yaml", seed, &m).unwrap().metadata().kind, dac_detect::RuleKind::SeedYaml);
    assert_eq!(
        dac_detect::load_text("c.yaml", "a: 1\n", &m).unwrap_err().to_string(),
        "c.yaml: not a rule: neither `detection_logic` (seed YAML) nor `detection` or `correlation` (Sigma)"
    );
    let e = dac_detect::load_path(std::path::Path::new("/nonexistent/r.yml"), &m).unwrap_err();
    assert!(e.to_string().starts_with("/nonexistent/r.yml: "), "{e}");
}

#[test]
fn a_custom_mapping_reads_nested_fields() {
    let mapping = FieldMapping::from_toml(
        "edr.toml",
        "name = \"edr\"\n[[logsource]]\nproduct = \"linux\"\n[fields]\nImage = \"process.executable\"\nCommandLine = \"process.args.0\"\n",
    )
    .unwrap();
    let text = format!("{HEAD}detection:\n    sel:\n        Image|endswith: /curl\n        CommandLine|contains: http\n    condition: sel\n");
    let set = RuleSet::compile(vec![parse_sigma("t.yml", &text, &mapping).unwrap()]).unwrap();
    assert!(fires(&set, json!({"process": {"executable": "/usr/bin/curl", "args": ["http://x", "-o"]}})));
    assert!(!fires(&set, json!({"process": {"executable": "/usr/bin/curl", "args": ["-o", "http://x"]}})));
}

#[test]
fn dedup_is_dacs_extension_keyed_by_mapped_sigma_fields() {
    let body = "detection:\n    sel:\n        User: x\n    condition: sel\n";
    let parse = |dedup: &str| parse_sigma("t.yml", &format!("{HEAD}{dedup}{body}"), &FieldMapping::default());
    let rule = parse("dedup:\n    key: [User, ParentImage]\n    window: 1h\n").unwrap();
    let dedup = rule.metadata().dedup.clone().unwrap();
    assert_eq!(dedup.key, ["user", "parent_path"], "Sigma names mapped like the detection's");
    assert_eq!(dedup.window_ms, 3_600_000);
    assert!(rule.notes().is_empty(), "not a custom attribute: {:?}", rule.notes());
    let err = parse("dedup:\n    key: [Hostname]\n    window: 1h\n").unwrap_err();
    assert!(err.is_unsupported(), "{err}");
    assert!(
        err.to_string().starts_with("t.yml:7: dedup.key: unsupported: field `Hostname`: not in the field mapping"),
        "{err}"
    );
}
