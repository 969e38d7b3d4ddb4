//! The set's prefilter is sound: on every event, the prefiltered result is
//! exactly the result of evaluating every rule in full.

mod common;

use common::generate::{self, Rng};
use dac_detect::{parse_sigma, Event, FieldMapping, Match, Rule, RuleSet, Scratch};

/// Rules that exercise what the SigmaHQ snapshot does not: every modifier,
/// keywords, `not`, null, absent fields, inner wildcards, non-ASCII.
fn synthetic_rules() -> Vec<Rule> {
    let head = "title: synthetic\nid: 00000000-0000-4000-8000-00000000000";
    let ls = "\nlogsource:\n  product: linux\n  category: process_creation\ndetection:\n";
    let bodies = [
        "  sel:\n    CommandLine|windash|contains: ' -exec '\n  condition: sel\n",
        "  sel:\n    CommandLine|base64offset|contains: '/bin/bash'\n  condition: sel\n",
        "  sel:\n    CommandLine|base64|contains: 'sh -c'\n  condition: sel\n",
        "  sel:\n    User|cidr: 10.0.0.0/8\n  condition: sel\n",
        "  sel:\n    ParentImage|fieldref|endswith: Image\n  condition: sel\n",
        "  sel:\n    Image|exists: false\n  condition: sel\n",
        "  kw:\n    - 'sekurlsa'\n    - 'İnvoke'\n  condition: kw\n",
        "  sel:\n    CommandLine|contains|cased: 'Pty'\n  condition: sel\n",
        "  sel:\n    CommandLine|re|i: 'SOCKET.*connect'\n    Image|endswith: 'thon'\n  condition: sel\n",
        "  sel:\n    CommandLine: '*/bin/*sh*-c*'\n  condition: sel\n",
        "  sel:\n    User: null\n  filter:\n    CommandLine|contains: 'x'\n  condition: sel and not filter\n",
        "  sel:\n    LogonId: 0\n  condition: not sel\n",
        "  sel:\n    CurrentDirectory|contains: 'ß'\n  condition: sel\n",
        "  a:\n    CommandLine|contains: '/etc/'\n  b:\n    Image|startswith: '/usr/'\n  condition: a or (b and not a)\n",
        "  sel:\n    CommandLine|endswith|all:\n      - 'sh'\n      - 'h'\n  condition: sel\n",
        "  sel:\n    CommandLine|startswith: 'SH -C '\n    ParentCommandLine: 'BASH -I'\n  condition: sel\n",
    ];
    bodies
        .iter()
        .enumerate()
        .map(|(i, body)| {
            let text = format!("{head}{:x}{ls}{body}", i % 16);
            parse_sigma(&format!("synthetic-{i}.yml"), &text, &FieldMapping::default())
                .unwrap_or_else(|e| panic!("{e}"))
        })
        .collect()
}

fn everything() -> RuleSet {
    let mut rules = common::sigma_rules();
    rules.extend(common::seed_rules());
    rules.extend(synthetic_rules());
    RuleSet::compile(rules).unwrap()
}

fn check(set: &RuleSet, event: &Event, scratch: &mut Scratch, what: &str) -> Vec<Match> {
    let mut fast = Vec::new();
    set.matches_with(event, scratch, &mut fast);
    let mut full = Vec::new();
    set.matches_without_prefilter(event, &mut full);
    assert_eq!(fast, full, "{what}: {:?}", event.as_json());
    full
}

#[test]
fn prefilter_agrees_with_full_evaluation_on_realistic_events() {
    let set = everything();
    let mut scratch = Scratch::default();
    let mut fired = 0;
    let events = generate::events(7, 20_000);
    for (i, json) in events.into_iter().enumerate() {
        let event = Event::from_json(json).unwrap();
        fired += usize::from(!check(&set, &event, &mut scratch, &format!("generated event {i}")).is_empty());
    }
    assert!(fired > 200, "the generated stream must contain detections: {fired}");
    // The point of the prefilter: most rules are never looked at.
    let per_event = scratch.evaluated as f64 / 20_000.0;
    assert!(per_event < 0.15 * set.len() as f64, "{per_event} rules evaluated per event of {}", set.len());
}

#[test]
fn prefilter_agrees_with_full_evaluation_on_hostile_events() {
    let set = everything();
    let fragments = common::rule_fragments();
    let mut rng = Rng::new(99);
    let mut scratch = Scratch::default();
    let mut fired = 0;
    for i in 0..30_000 {
        let event = Event::from_json(generate::fuzz_event(&mut rng, &fragments)).unwrap();
        fired += usize::from(!check(&set, &event, &mut scratch, &format!("fuzz event {i}")).is_empty());
    }
    assert!(fired > 1_000, "hostile events must fire rules often: {fired}");
}

#[test]
fn prefilter_agrees_with_full_evaluation_on_fixtures_and_the_sample_log() {
    let set = everything();
    let mut scratch = Scratch::default();
    for f in common::sigma_fixtures() {
        check(&set, &f.event, &mut scratch, &format!("sigma.ndjson:{}", f.line));
    }
    let sample =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../example-rules/data/sample-events.ndjson"))
            .unwrap();
    for (i, line) in sample.lines().enumerate() {
        let event = Event::from_json_slice(line.as_bytes()).unwrap().0;
        check(&set, &event, &mut scratch, &format!("sample-events.ndjson:{}", i + 1));
    }
}

#[test]
fn stats_describe_the_prefilter() {
    let set = RuleSet::compile(common::sigma_rules()).unwrap();
    let stats = set.stats();
    assert_eq!(stats.rules, 122);
    // Even the pnscan rule, a bare regular expression, has literals: the
    // prefixes every match starts with.
    assert_eq!(stats.always_candidates, 0);
    assert_eq!(stats.scanned_fields, 4);
    assert!(stats.literals > 250, "{stats:?}");
    let mut fields: Vec<&str> = set.fields().collect();
    fields.sort();
    assert_eq!(fields, ["command_line", "cwd", "parent_command_line", "parent_path", "path", "user"]);
}

#[test]
fn required_literals_are_exposed_per_rule_and_duplicate_uuids_refused() {
    let rules = common::sigma_rules();
    let names: Vec<String> = rules.iter().map(|r| r.metadata().source.clone()).collect();
    let set = RuleSet::compile(rules.clone()).unwrap();
    let at = |file: &str| names.iter().position(|n| n == file).unwrap();
    // `Image|endswith: [/at, /atd]`: either literal, in `path`.
    assert_eq!(
        set.required_literals(at("proc_creation_lnx_at_command.yml")),
        Some(vec![("path", "/at"), ("path", "/atd")])
    );
    // The and of Image and CommandLine keeps the longer literal.
    assert_eq!(
        set.required_literals(at("proc_creation_lnx_apt_shell_execution.yml")),
        Some(vec![("command_line", "apt::update::pre-invoke::=")])
    );
    // `CommandLine|re: -(W|R)\s?…`: every match starts with `-W` or `-R`.
    assert_eq!(
        set.required_literals(at("proc_creation_lnx_pnscan_binary_cli_pattern.yml")),
        Some(vec![("command_line", "-r"), ("command_line", "-w")])
    );
    assert_eq!(
        set.required_exact_literals(at("proc_creation_lnx_pnscan_binary_cli_pattern.yml")),
        Some(vec![("command_line", "-R"), ("command_line", "-W")])
    );
    assert_eq!(set.required_literals(at("proc_creation_lnx_omigod_scx_runasprovider_executescript.yml")), Some(vec![]));
    assert_eq!(set.stats().never_candidates, 2);

    let twice = vec![rules[0].clone(), rules[0].clone()];
    let err = RuleSet::compile(twice).unwrap_err().to_string();
    assert_eq!(err, "rule set: uuid bb382fd5-b454-47ea-a264-1828e4c766d6 is used by both proc_creation_lnx_apt_shell_execution.yml and proc_creation_lnx_apt_shell_execution.yml");
}

#[test]
fn a_rule_set_can_be_shared_between_threads() {
    fn shareable<T: Send + Sync + Clone>() {}
    shareable::<RuleSet>();
    shareable::<dac_detect::Rule>();
}
