//! The 122 SigmaHQ Linux process-creation rules: every one loads, with the
//! metadata alerts need, and hand-written events fire (or not) as expected.

mod common;

use common::{sigma_fixtures, sigma_rules, sigma_texts};
use dac_detect::{RuleKind, RuleSet, Severity};

/// Rules that load but are noted: they test `LogonId`, which the default
/// mapping declares absent, so they can never fire on dac's events.
const NOTED: [&str; 2] = [
    "proc_creation_lnx_omigod_scx_runasprovider_executescript.yml",
    "proc_creation_lnx_omigod_scx_runasprovider_executeshellcommand.yml",
];

#[test]
fn all_122_rules_load_and_carry_their_metadata() {
    let texts = sigma_texts();
    assert_eq!(texts.len(), 122, "the SigmaHQ snapshot has 122 rules");
    let rules = sigma_rules();
    for ((name, text), rule) in texts.iter().zip(&rules) {
        let m = rule.metadata();
        let line = |key: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(&format!("{key}: ")))
                .map(|v| v.trim().trim_matches('\'').to_owned())
        };
        assert_eq!(m.kind, RuleKind::Sigma);
        assert_eq!(Some(m.uuid.clone()), line("id"), "{name}");
        assert_eq!(Some(m.name.clone()), line("title"), "{name}");
        assert_eq!(Some(m.severity.as_str().to_owned()), line("level"), "{name}");
        assert_eq!(m.source, *name);
        assert!(m.sha256.starts_with("sha256:") && m.sha256.len() == 71, "{name}");
        assert!(!m.authors.is_empty(), "{name}: the DRL asks to credit the authors");
        assert!(!m.tags.is_empty(), "{name}");
        assert_eq!(m.version, line("modified").or_else(|| line("date")), "{name}");
        assert_eq!(rule.notes().is_empty(), !NOTED.contains(&name.as_str()), "{name}: {:?}", rule.notes());
    }
    let apt = &rules[0];
    assert_eq!(apt.metadata().authors, ["Nasreddine Bencherchali (Nextron Systems)"]);
    assert_eq!(apt.metadata().severity, Severity::Medium);
    assert_eq!(apt.fields(), ["path", "command_line"]);
    let at = &rules[1];
    assert_eq!(at.metadata().authors, ["Ömer Günal", "oscd.community"]);
}

#[test]
fn fixtures_fire_alone_and_within_the_whole_set() {
    let rules = sigma_rules();
    let names: Vec<String> = rules.iter().map(|r| r.metadata().source.clone()).collect();
    let all = RuleSet::compile(rules.clone()).unwrap();
    let fixtures = sigma_fixtures();
    let mut covered: Vec<&str> = fixtures.iter().map(|f| f.rule.as_str()).collect();
    covered.dedup();
    assert!(covered.len() >= 55, "fixtures cover {} rules", covered.len());

    let mut failures = Vec::new();
    for f in &fixtures {
        let index = names.iter().position(|n| *n == f.rule).unwrap_or_else(|| panic!("no rule {}", f.rule));
        let alone = RuleSet::compile(vec![rules[index].clone()]).unwrap();
        let mut out = Vec::new();
        alone.matches(&f.event, &mut out);
        if out.is_empty() == f.fire {
            failures.push(format!(
                "sigma.ndjson:{}: {} should {}fire: {}",
                f.line,
                f.rule,
                if f.fire { "" } else { "not " },
                f.why
            ));
        }
        if let Some(m) = out.first() {
            assert!(!m.matched.is_empty(), "sigma.ndjson:{}: a match names its fields", f.line);
        }
        let mut out = Vec::new();
        all.matches(&f.event, &mut out);
        assert_eq!(out.iter().any(|m| m.rule == index), f.fire, "sigma.ndjson:{}: in the full set", f.line);
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn matched_fields_are_the_mapped_event_fields() {
    let rules = sigma_rules();
    let index =
        rules.iter().position(|r| r.metadata().source == "proc_creation_lnx_cp_passwd_or_shadow_tmp.yml").unwrap();
    let set = RuleSet::compile(vec![rules[index].clone()]).unwrap();
    let event = common::event(
        serde_json::json!({"path": "/usr/bin/cp", "command_line": "cp /etc/shadow /tmp/s", "user": "root"}),
    );
    let mut out = Vec::new();
    set.matches(&event, &mut out);
    let fields: Vec<(&str, &str)> = out[0].matched.iter().map(|m| (m.path.as_str(), m.value.as_str())).collect();
    assert_eq!(fields, [("path", "/usr/bin/cp"), ("command_line", "cp /etc/shadow /tmp/s")]);
}
