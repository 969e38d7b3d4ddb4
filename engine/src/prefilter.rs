//! Skipping rules that cannot fire, before any wasm is entered.
//!
//! Each rule may declare literals it cannot fire without, and the fields
//! they must occur in. Aho–Corasick automata over the literals of the whole
//! rule set, run once per event, yield the candidate rules; every other rule
//! is skipped. Literals of rules that match case-sensitively go into one
//! automaton (the fast one: its own prefilter can use exact byte search),
//! those of rules that ignore ASCII case into another. Each rule's literals
//! are matched at least as loosely as the rule itself matches, so the
//! candidate set is a superset of the rules that could fire: the prefilter
//! never drops a rule that could.

use crate::rule::RuleInfo;
use aho_corasick::{AhoCorasick, AhoCorasickKind, MatchKind};
use dac_event::{Event, Value};
use memchr::memmem;
use std::collections::HashMap;

/// Which rules' literals occur in an event: the candidates.
pub struct LiteralIndex {
    exact: Literals,
    folded: Literals,
    /// Rules without a prefilter: always candidates.
    unfiltered: Vec<usize>,
    /// Per rule: the fields its literals must occur in.
    rule_fields: Vec<Vec<String>>,
    /// Every declared field, once.
    fields: Vec<String>,
}

/// Up to this many exact literals are searched one by one with SIMD
/// substring search, which beats an automaton on text full of the literals'
/// first bytes (`/`, `-`, space); past it, one automaton pass wins.
const MAX_SEPARATE_SEARCHES: usize = 8;

/// Literals (and their bytes) up to which the automaton is a full DFA.
const DFA_MAX_LITERALS: usize = 4_000;
const DFA_MAX_LITERAL_BYTES: usize = 64 << 10;

/// The search for one set of literals and, per literal, the rules that
/// declared it.
#[derive(Default)]
struct Literals {
    search: Search,
    patterns: Vec<String>,
    pattern_rules: Vec<Vec<usize>>,
    ids: HashMap<String, usize>,
}

impl Literals {
    fn add(&mut self, literal: String, rule: usize) {
        let id = *self.ids.entry(literal.clone()).or_insert_with(|| {
            self.patterns.push(literal);
            self.pattern_rules.push(Vec::new());
            self.patterns.len() - 1
        });
        if !self.pattern_rules[id].contains(&rule) {
            self.pattern_rules[id].push(rule);
        }
    }

    fn build(mut self, ascii_case_insensitive: bool) -> Literals {
        self.search = if self.patterns.is_empty() {
            Search::Nothing
        } else if !ascii_case_insensitive && self.patterns.len() <= MAX_SEPARATE_SEARCHES {
            Search::Separately(self.patterns.iter().map(|p| memmem::Finder::new(p.as_bytes()).into_owned()).collect())
        } else {
            // A full DFA while it stays small (as the declarative set's
            // per-field filters): an overlapping search over a whole
            // document is the hottest loop of a large rule set, and a DFA
            // takes one table lookup a byte where a contiguous NFA follows
            // failure links. Past these, linear-size NFA (the literals come
            // from tenants' rules too).
            let bytes: usize = self.patterns.iter().map(String::len).sum();
            let kind = if self.patterns.len() <= DFA_MAX_LITERALS && bytes <= DFA_MAX_LITERAL_BYTES {
                AhoCorasickKind::DFA
            } else {
                AhoCorasickKind::ContiguousNFA
            };
            let automaton = AhoCorasick::builder()
                .ascii_case_insensitive(ascii_case_insensitive)
                .match_kind(MatchKind::Standard)
                .kind(Some(kind))
                .build(&self.patterns);
            match automaton {
                Ok(automaton) => Search::Automaton(automaton),
                // Only past aho-corasick's own bounds (billions of states),
                // which a rule set's budgets keep out of reach; should it
                // happen, every rule with literals is a candidate for every
                // event: slower, the same answers.
                Err(err) => {
                    tracing::warn!("the prefilter's automaton could not be built ({err}); prefiltering nothing");
                    Search::Everything
                }
            }
        };
        self
    }

    /// Calls `found` with each rule one of whose literals occurs in `haystack`.
    fn scan(&self, haystack: &[u8], mut found: impl FnMut(usize)) {
        let mut hit = |pattern: usize| self.pattern_rules[pattern].iter().for_each(|&rule| found(rule));
        match &self.search {
            Search::Nothing => {}
            Search::Separately(finders) => finders
                .iter()
                .enumerate()
                .filter(|(_, finder)| finder.find(haystack).is_some())
                .for_each(|(pattern, _)| hit(pattern)),
            Search::Automaton(automaton) => {
                automaton.find_overlapping_iter(haystack).for_each(|found| hit(found.pattern().as_usize()))
            }
            Search::Everything => (0..self.pattern_rules.len()).for_each(hit),
        }
    }
}

#[derive(Default)]
enum Search {
    #[default]
    Nothing,
    Separately(Vec<memmem::Finder<'static>>),
    Automaton(AhoCorasick),
    /// Every pattern is taken as found.
    Everything,
}

impl LiteralIndex {
    pub fn new<'a>(rules: impl IntoIterator<Item = &'a RuleInfo>) -> LiteralIndex {
        let (mut exact, mut folded) = (Literals::default(), Literals::default());
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
                if prefilter.ascii_case_insensitive {
                    folded.add(literal.to_ascii_lowercase(), index);
                } else {
                    exact.add(literal.clone(), index);
                }
            }
            for field in &prefilter.fields {
                if !fields.contains(field) {
                    fields.push(field.clone());
                }
            }
            rule_fields.push(prefilter.fields.clone());
        }
        LiteralIndex { exact: exact.build(false), folded: folded.build(true), unfiltered, rule_fields, fields }
    }

    /// Marks the candidate rules for a JSON document given as raw bytes,
    /// without parsing it. Returns `false` when the raw bytes cannot be
    /// trusted — the document contains escapes (`\/`, `\u002f`) that could
    /// hide a literal — and the caller must use [`LiteralIndex::mark_event`].
    ///
    /// Looking at the whole document rather than the declared fields only
    /// widens the candidate set, which is safe.
    pub fn mark_raw(&self, json: &[u8], candidates: &mut [bool]) -> bool {
        if memchr::memchr(b'\\', json).is_some() {
            return false;
        }
        self.mark_unfiltered(candidates);
        let mut mark = |rule: usize| candidates[rule] = true;
        self.exact.scan(json, &mut mark);
        self.folded.scan(json, &mut mark);
        true
    }

    /// Marks the candidate rules for a parsed event: a rule is a candidate
    /// when one of its literals occurs in one of its fields, or when one of
    /// its fields holds something other than text (which the rule may read
    /// in ways a literal cannot predict).
    pub fn mark_event(&self, event: &Event, candidates: &mut [bool]) {
        self.mark_unfiltered(candidates);
        for field in &self.fields {
            match event.get(field) {
                None => {}
                Some(Value::Text(text)) => {
                    let mut mark = |rule: usize| {
                        if self.rule_fields[rule].contains(field) {
                            candidates[rule] = true;
                        }
                    };
                    self.exact.scan(text.as_bytes(), &mut mark);
                    self.folded.scan(text.as_bytes(), &mut mark);
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
    use crate::rule::{Prefilter as Declared, RuleId, Severity};

    fn rule(fields: &[&str], literals: &[&str]) -> RuleInfo {
        rule_with_case(fields, literals, false)
    }

    fn rule_with_case(fields: &[&str], literals: &[&str], ascii_case_insensitive: bool) -> RuleInfo {
        RuleInfo {
            id: RuleId::new("r"),
            name: "r".into(),
            uuid: "u".into(),
            version: "1".into(),
            severity: Severity::Low,
            description: String::new(),
            tags: Vec::new(),
            authors: Vec::new(),
            dedup: None,
            kind: crate::rule::RuleKind::Component,
            prefilter: (!literals.is_empty()).then(|| Declared {
                fields: fields.iter().map(|s| s.to_string()).collect(),
                literals: literals.iter().map(|s| s.to_string()).collect(),
                ascii_case_insensitive,
            }),
            file: "r.wasm".into(),
            sha256: String::new(),
        }
    }

    fn candidates_raw(p: &LiteralIndex, n: usize, json: &str) -> Option<Vec<bool>> {
        let mut c = vec![false; n];
        p.mark_raw(json.as_bytes(), &mut c).then_some(c)
    }

    fn candidates_event(p: &LiteralIndex, n: usize, json: &str) -> Vec<bool> {
        let mut c = vec![false; n];
        p.mark_event(&Event::from_json_slice(json.as_bytes()).unwrap().0, &mut c);
        c
    }

    #[test]
    fn selects_rules_whose_literals_occur() {
        let rules = [rule(&["command_line"], &["/etc/shadow"]), rule(&["command_line"], &["> /tmp/"]), rule(&[], &[])];
        let p = LiteralIndex::new(&rules);
        let shadow = r#"{"command_line":"sudo cat /etc/shadow"}"#;
        assert_eq!(candidates_raw(&p, 3, shadow), Some(vec![true, false, true]));
        assert_eq!(candidates_event(&p, 3, shadow), vec![true, false, true]);
        let quiet = r#"{"command_line":"ls /tmp/"}"#;
        assert_eq!(candidates_raw(&p, 3, quiet), Some(vec![false, false, true]));
        assert_eq!(candidates_event(&p, 3, quiet), vec![false, false, true]);
    }

    #[test]
    fn case_folding_follows_each_rule() {
        let rules =
            [rule(&["command_line"], &["/etc/shadow"]), rule_with_case(&["command_line"], &["Base64 -D"], true)];
        let p = LiteralIndex::new(&rules);
        let upper = r#"{"command_line":"CAT /ETC/SHADOW | BASE64 -d"}"#;
        assert_eq!(candidates_raw(&p, 2, upper), Some(vec![false, true]));
        assert_eq!(candidates_event(&p, 2, upper), vec![false, true]);
        let lower = r#"{"command_line":"cat /etc/shadow | base64 -d"}"#;
        assert_eq!(candidates_raw(&p, 2, lower), Some(vec![true, true]));
    }

    #[test]
    fn many_exact_literals_use_one_automaton_with_the_same_answers() {
        let literals: Vec<String> = (0..20).map(|i| format!("needle{i:02}")).collect();
        let refs: Vec<&str> = literals.iter().map(String::as_str).collect();
        let rules = [rule(&["command_line"], &refs[..4]), rule(&["command_line"], &refs)];
        let p = LiteralIndex::new(&rules);
        assert!(matches!(p.exact.search, Search::Automaton(_)));
        assert_eq!(candidates_raw(&p, 2, r#"{"command_line":"x needle19 y"}"#), Some(vec![false, true]));
        assert_eq!(candidates_raw(&p, 2, r#"{"command_line":"x needle03 y"}"#), Some(vec![true, true]));
        let few = LiteralIndex::new(&rules[..1]);
        assert!(matches!(few.exact.search, Search::Separately(_)));
        assert_eq!(candidates_raw(&few, 1, r#"{"command_line":"needle03"}"#), Some(vec![true]));
        assert_eq!(candidates_raw(&few, 1, r#"{"command_line":"needle04"}"#), Some(vec![false]));
    }

    #[test]
    fn distrusts_escaped_documents() {
        let p = LiteralIndex::new(&[rule(&["command_line"], &["/etc/shadow"])]);
        let escaped = r#"{"command_line":"cat \/etc\/shadow"}"#;
        assert_eq!(candidates_raw(&p, 1, escaped), None);
        assert_eq!(candidates_event(&p, 1, escaped), vec![true]);
    }

    #[test]
    fn parsed_events_respect_fields_and_keep_non_text_fields() {
        let p = LiteralIndex::new(&[rule(&["command_line"], &["/etc/shadow"])]);
        assert_eq!(candidates_event(&p, 1, r#"{"path":"/etc/shadow"}"#), vec![false]);
        assert_eq!(candidates_event(&p, 1, r#"{"command_line":["cat","x"]}"#), vec![true]);
    }
}
