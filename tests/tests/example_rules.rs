//! The example rules, built as components and run by the real host, behave
//! exactly as their native builds and their fixtures say.

use dac_engine::{ComponentCache, Engine, Limits, Outcome, Sandbox, Stats};
use dac_event::Event;
use dac_rule_sdk::Rule;
use dac_tests::{example_rule, sample_log, EXAMPLE_RULES};
use std::collections::BTreeSet;
use std::path::Path;

fn sandbox() -> Sandbox {
    let cache = ComponentCache::new(Some(dac_tests::repo_root().join("target/dac-test-cache")));
    Sandbox::new(Limits::default(), cache).expect("sandbox")
}

fn engine_with(sandbox: &Sandbox, packages: &[&str]) -> Engine {
    let rules =
        packages.iter().map(|p| sandbox.load_file(&example_rule(p)).unwrap_or_else(|err| panic!("{err}"))).collect();
    Engine::new(rules).expect("engine")
}

/// The uuids that fire on one JSON document.
fn fired(engine: &mut Engine, json: &str) -> Vec<String> {
    let mut stats = Stats::default();
    let mut outcomes: Vec<Outcome> = Vec::new();
    engine.evaluate_json(json.as_bytes(), &mut stats, &mut outcomes).expect("valid event");
    outcomes
        .iter()
        .map(|o| match &o.result {
            Ok(_) => engine.infos()[o.rule].uuid.clone(),
            Err(fault) => panic!("rule {} faulted: {fault}", engine.infos()[o.rule].name),
        })
        .collect()
}

/// The seed talk's own test, through the sandbox: its log, with every
/// example rule loaded, yields exactly the shadow rule's uuid.
#[test]
fn seed_talk_test_log_yields_exactly_the_shadow_uuid() {
    let sandbox = sandbox();
    let mut engine = engine_with(&sandbox, &EXAMPLE_RULES);
    let test_log = r#"{"hostname":"pop-os","ip_address":"127.0.1.1","parent_pid":1,"pid":2,"path":"/usr/bin/sudo","binary":"sudo","arguments":"cat /etc/shadow","command_line":"/usr/bin/sudo cat /etc/shadow"}"#;
    assert_eq!(fired(&mut engine, test_log), ["5e3566a3-9f19-4ac7-8710-ec5fb09260ed"]);
    // Same answer with the prefilter out of the way: the rule itself decides.
    engine.set_prefilter(false);
    assert_eq!(fired(&mut engine, test_log), ["5e3566a3-9f19-4ac7-8710-ec5fb09260ed"]);
}

#[test]
fn seed_rules_keep_their_names_and_uuids() {
    let sandbox = sandbox();
    let engine = engine_with(&sandbox, &["shadow", "tmp-output-redir"]);
    let got: Vec<(&str, &str)> = engine.infos().iter().map(|i| (i.name.as_str(), i.uuid.as_str())).collect();
    assert_eq!(
        got,
        [
            ("Suspicious /etc/shadow Usage", "5e3566a3-9f19-4ac7-8710-ec5fb09260ed"),
            ("Output redirection to /tmp/ Directory", "f825ad39-d4b1-41da-91ec-6438d8dc9ace"),
        ]
    );
}

/// Every fixture of every example rule goes the same way in the sandbox as
/// natively — with the prefilter on, so a declared literal that is wrong
/// would show up here as a missed fire.
#[test]
fn fixtures_fire_and_stay_quiet_in_the_sandbox() {
    let sandbox = sandbox();
    let mut failures = Vec::new();
    let mut checked = 0;
    for package in EXAMPLE_RULES {
        let mut engine = engine_with(&sandbox, &[package]);
        let dir = dac_tests::repo_root().join("example-rules").join(package).join("fixtures");
        for (file, must_fire) in [("must_fire.ndjson", true), ("must_not_fire.ndjson", false)] {
            let path = dir.join(file);
            let text = std::fs::read_to_string(&path).unwrap_or_else(|err| panic!("{}: {err}", path.display()));
            let lines: Vec<(usize, &str)> =
                text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()).map(|(i, l)| (i + 1, l)).collect();
            assert!(!lines.is_empty(), "{}: no fixtures", path.display());
            for (line, json) in lines {
                checked += 1;
                if fired(&mut engine, json).is_empty() == must_fire {
                    failures.push(format!("{}:{line}: expected fire={must_fire}", path.display()));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(checked >= EXAMPLE_RULES.len() * 10, "only {checked} fixtures");
}

/// The natively linked rules, in EXAMPLE_RULES order.
fn native_evaluate(index: usize, event: &dac_rule_sdk::Event) -> bool {
    let findings = match index {
        0 => shadow::DetectionRule::evaluate(event),
        1 => tmp_output_redir::DetectionRule::evaluate(event),
        2 => reverse_shell_dev_tcp::DetectionRule::evaluate(event),
        3 => download_pipe_shell::DetectionRule::evaluate(event),
        4 => cron_systemd_persistence::DetectionRule::evaluate(event),
        5 => base64_decode_exec::DetectionRule::evaluate(event),
        _ => unreachable!(),
    };
    !findings.is_empty()
}

/// The sandboxed components, with the prefilter, agree with the native
/// builds on every one of the 1,200 sample events, and the result is the
/// reviewed list in `tests/expected/sample-alerts.txt`.
#[test]
fn sample_log_alerts_match_native_rules_and_the_reviewed_list() {
    let sandbox = sandbox();
    let mut engine = engine_with(&sandbox, &EXAMPLE_RULES);
    let text = std::fs::read_to_string(sample_log()).expect("sample log");
    let mut sandboxed = BTreeSet::new();
    let mut native = BTreeSet::new();
    for (index, json) in text.lines().enumerate() {
        let line = index + 1;
        for uuid in fired(&mut engine, json) {
            sandboxed.insert((line, uuid));
        }
        let event = dac_rule_sdk::Event::from_json(json);
        for (rule, package) in EXAMPLE_RULES.iter().enumerate() {
            if native_evaluate(rule, &event) {
                let uuid =
                    engine.infos().iter().find(|i| i.file.ends_with(format!("{}.wasm", package.replace('-', "_"))));
                native.insert((line, uuid.expect("loaded").uuid.clone()));
            }
        }
    }
    assert_eq!(sandboxed, native, "sandbox and native builds disagree");
    let expected = read_expected(&dac_tests::repo_root().join("tests/expected/sample-alerts.txt"));
    assert_eq!(sandboxed, expected, "alerts differ from tests/expected/sample-alerts.txt");
}

/// The example rules over the sample log in batches (`dac run`'s workers
/// hand the engine 512 documents at a time; odd sizes here) give the same
/// outcomes, event by event and in the same order, as one by one.
#[test]
fn batches_give_the_outcomes_of_one_by_one() {
    let sandbox = sandbox();
    let text = std::fs::read_to_string(sample_log()).expect("sample log");
    let lines: Vec<&str> = text.lines().collect();
    let describe = |engine: &Engine, outcomes: &[Outcome]| -> Vec<String> {
        outcomes
            .iter()
            .map(|o| match &o.result {
                Ok(findings) => format!("{} {findings:?}", engine.infos()[o.rule].uuid),
                Err(fault) => panic!("rule {} faulted: {fault}", engine.infos()[o.rule].name),
            })
            .collect()
    };
    let mut engine = engine_with(&sandbox, &EXAMPLE_RULES);
    assert!(engine.batches_calls(), "the example rules are dac:rule@0.2.0 components");
    let one_by_one: Vec<Vec<String>> = lines
        .iter()
        .map(|json| {
            let (mut stats, mut outcomes) = (Stats::default(), Vec::new());
            engine.evaluate_json(json.as_bytes(), &mut stats, &mut outcomes).expect("valid event");
            describe(&engine, &outcomes)
        })
        .collect();
    assert!(one_by_one.iter().filter(|o| !o.is_empty()).count() > 10, "the sample log fires");
    for prefilter in [true, false] {
        let mut engine = engine_with(&sandbox, &EXAMPLE_RULES);
        engine.set_prefilter(prefilter);
        let mut batched = Vec::new();
        for chunk in lines.chunks(97) {
            let documents = chunk.iter().map(|json| dac_engine::Document::Json(json.as_bytes())).collect();
            for evaluated in engine.evaluate_batch(documents, &mut Stats::default()) {
                evaluated.event.expect("valid event");
                batched.push(describe(&engine, &evaluated.outcomes));
            }
        }
        assert_eq!(batched, one_by_one, "prefilter {prefilter}");
    }
}

/// `LINE UUID` pairs, one per line; `#` starts a comment.
fn read_expected(path: &Path) -> BTreeSet<(usize, String)> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|err| panic!("{}: {err}", path.display()))
        .lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (line, uuid) = l.split_once(' ').expect("LINE UUID");
            (line.parse().expect("line number"), uuid.trim().to_owned())
        })
        .collect()
}

/// Events that are not the probe's shape are read, not rejected: nested
/// paths, arrays, Extended JSON and wrong types reach the rule as typed
/// values or as "absent".
#[test]
fn odd_documents_are_evaluated_without_faults() {
    let sandbox = sandbox();
    let mut engine = engine_with(&sandbox, &EXAMPLE_RULES);
    engine.set_prefilter(false);
    for json in [
        r#"{}"#,
        r#"{"command_line":null}"#,
        r#"{"command_line":["/usr/bin/cat","/etc/shadow"]}"#,
        r#"{"command_line":{"$numberLong":"5"}}"#,
        r#"{"process":{"parent":{"command_line":"/etc/shadow"}}}"#,
        r#"{"_id":{"$oid":"650b89dfcf00592980c13266"},"ts":{"$date":"2023-09-21T00:10:07.378Z"},"command_line":"ls"}"#,
    ] {
        assert_eq!(fired(&mut engine, json), Vec::<String>::new(), "{json}");
    }
    let deep = format!("{}{}", "{\"a\":".repeat(100), "1".to_owned() + &"}".repeat(100));
    assert_eq!(fired(&mut engine, &deep), Vec::<String>::new());
    let event = Event::from_json_slice(deep.as_bytes()).unwrap().0;
    assert!(event.get(&vec!["a"; 100].join(".")).is_some());
}
