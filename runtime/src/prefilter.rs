//! Skipping rules that cannot fire, before any wasm is entered.
//!
//! Each rule may declare literals it cannot fire without, and the fields
//! they must occur in. One Aho–Corasick automaton over the literals of the
//! whole rule set, run once per event, yields the candidate rules; every
//! other rule is skipped. Matching is ASCII case-insensitive for all
//! literals, so the candidate set is a superset of what each rule's own
//! (case-sensitive or not) test would accept: the prefilter never drops a
//! rule that could fire.

use crate::rule::RuleInfo;
use aho_corasick::{AhoCorasick, MatchKind};
use dac_event::{Event, Value};
use std::collections::HashMap;

pub struct Prefilter {
    automaton: Option<AhoCorasick>,
    /// Pattern id → rules that declared that literal.
    pattern_rules: Vec<Vec<usize>>,
    /// Rules without a prefilter: always candidates.
    unfiltered: Vec<usize>,
    /// Per rule: the fields its literals must occur in.
    rule_fields: Vec<Vec<String>>,
    /// Every declared field, once.
    fields: Vec<String>,
}

impl Prefilter {
    pub fn new<'a>(rules: impl IntoIterator<Item = &'a RuleInfo>) -> Prefilter {
        let mut literals: Vec<String> = Vec::new();
        let mut literal_ids: HashMap<String, usize> = HashMap::new();
        let mut pattern_rules: Vec<Vec<usize>> = Vec::new();
        let mut unfiltered = Vec::new();
        let mut rule_fields = Vec::new();
        let mut fields: Vec<String> = Vec::new();
        for (index, rule) in rules.into_iter().enumerate() {
            let Some(prefilter) = &rule.prefilter else {
                unfiltered.push(index);
                rule_fields.push(Vec::new());
                continue;
            };
            for literal in &prefilter.literals {
                // Case-folded: the automaton ignores ASCII case anyway.
                let key = literal.to_ascii_lowercase();
                let id = *literal_ids.entry(key.clone()).or_insert_with(|| {
                    literals.push(key);
                    pattern_rules.push(Vec::new());
                    literals.len() - 1
                });
                if !pattern_rules[id].contains(&index) {
                    pattern_rules[id].push(index);
                }
            }
            for field in &prefilter.fields {
                if !fields.contains(field) {
                    fields.push(field.clone());
                }
            }
            rule_fields.push(prefilter.fields.clone());
        }
        let automaton = (!literals.is_empty()).then(|| {
            AhoCorasick::builder()
                .ascii_case_insensitive(true)
                .match_kind(MatchKind::Standard)
                .build(&literals)
                .expect("literals are plain non-empty strings")
        });
        Prefilter { automaton, pattern_rules, unfiltered, rule_fields, fields }
    }

    /// Marks the candidate rules for a JSON document given as raw bytes,
    /// without parsing it. Returns `false` when the raw bytes cannot be
    /// trusted — the document contains escapes (`\/`, `\u002f`) that could
    /// hide a literal — and the caller must use [`Prefilter::mark_event`].
    ///
    /// Looking at the whole document rather than the declared fields only
    /// widens the candidate set, which is safe.
    pub fn mark_raw(&self, json: &[u8], candidates: &mut [bool]) -> bool {
        if memchr::memchr(b'\\', json).is_some() {
            return false;
        }
        self.mark_unfiltered(candidates);
        if let Some(automaton) = &self.automaton {
            for found in automaton.find_overlapping_iter(json) {
                for &rule in &self.pattern_rules[found.pattern().as_usize()] {
                    candidates[rule] = true;
                }
            }
        }
        true
    }

    /// Marks the candidate rules for a parsed event: a rule is a candidate
    /// when one of its literals occurs in one of its fields, or when one of
    /// its fields holds something other than text (which the rule may read
    /// in ways a literal cannot predict).
    pub fn mark_event(&self, event: &Event, candidates: &mut [bool]) {
        self.mark_unfiltered(candidates);
        let Some(automaton) = &self.automaton else {
            return;
        };
        for field in &self.fields {
            match event.get(field) {
                None => {}
                Some(Value::Text(text)) => {
                    for found in automaton.find_overlapping_iter(text) {
                        for &rule in &self.pattern_rules[found.pattern().as_usize()] {
                            if self.rule_fields[rule].contains(field) {
                                candidates[rule] = true;
                            }
                        }
                    }
                }
                Some(_) => {
                    for (rule, fields) in self.rule_fields.iter().enumerate() {
                        if fields.contains(field) {
                            candidates[rule] = true;
                        }
                    }
                }
            }
        }
    }

    fn mark_unfiltered(&self, candidates: &mut [bool]) {
        for &rule in &self.unfiltered {
            candidates[rule] = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rule::{Prefilter as Declared, Severity};

    fn rule(fields: &[&str], literals: &[&str]) -> RuleInfo {
        RuleInfo {
            name: "r".into(),
            uuid: "u".into(),
            version: "1".into(),
            severity: Severity::Low,
            description: String::new(),
            tags: Vec::new(),
            prefilter: (!literals.is_empty()).then(|| Declared {
                fields: fields.iter().map(|s| s.to_string()).collect(),
                literals: literals.iter().map(|s| s.to_string()).collect(),
                ascii_case_insensitive: false,
            }),
            file: "r.wasm".into(),
            sha256: String::new(),
        }
    }

    fn candidates_raw(p: &Prefilter, n: usize, json: &str) -> Option<Vec<bool>> {
        let mut c = vec![false; n];
        p.mark_raw(json.as_bytes(), &mut c).then_some(c)
    }

    fn candidates_event(p: &Prefilter, n: usize, json: &str) -> Vec<bool> {
        let mut c = vec![false; n];
        p.mark_event(&Event::from_json_slice(json.as_bytes()).unwrap().0, &mut c);
        c
    }

    #[test]
    fn selects_rules_whose_literals_occur() {
        let rules = [rule(&["command_line"], &["/etc/shadow"]), rule(&["command_line"], &["> /tmp/"]), rule(&[], &[])];
        let p = Prefilter::new(&rules);
        let shadow = r#"{"command_line":"sudo cat /ETC/SHADOW"}"#;
        assert_eq!(candidates_raw(&p, 3, shadow), Some(vec![true, false, true]));
        assert_eq!(candidates_event(&p, 3, shadow), vec![true, false, true]);
        let quiet = r#"{"command_line":"ls /tmp/"}"#;
        assert_eq!(candidates_raw(&p, 3, quiet), Some(vec![false, false, true]));
        assert_eq!(candidates_event(&p, 3, quiet), vec![false, false, true]);
    }

    #[test]
    fn distrusts_escaped_documents() {
        let p = Prefilter::new(&[rule(&["command_line"], &["/etc/shadow"])]);
        let escaped = r#"{"command_line":"cat \/etc\/shadow"}"#;
        assert_eq!(candidates_raw(&p, 1, escaped), None);
        assert_eq!(candidates_event(&p, 1, escaped), vec![true]);
    }

    #[test]
    fn parsed_events_respect_fields_and_keep_non_text_fields() {
        let p = Prefilter::new(&[rule(&["command_line"], &["/etc/shadow"])]);
        assert_eq!(candidates_event(&p, 1, r#"{"path":"/etc/shadow"}"#), vec![false]);
        assert_eq!(candidates_event(&p, 1, r#"{"command_line":["cat","x"]}"#), vec![true]);
    }
}
