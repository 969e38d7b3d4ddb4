//! What a rule may declare to a host that prefilters raw JSON documents
//! (dac's engine) — for rules the host evaluates itself, and for a rule
//! compiled into a component of its own (`dac build`).
//!
//! The set's required literals are folded (lower-cased per character) and
//! meant for folded field text; the host instead scans the raw JSON, exactly
//! or ignoring ASCII case. That is exact only when the document has no
//! escapes (the host checks), when the literal could not come from a value
//! that is not text in the JSON (a date's epoch milliseconds, a float
//! written differently), and, for folded literals, when no non-ASCII
//! character folds to ASCII (K, the Kelvin sign, folds to `k`).

use crate::RuleSet;

/// A prefilter declaration, as `wit/rule.wit`'s `prefilter` record (the
/// one `Prefilter` of every dac crate; the rule SDK mirrors the WIT's): the
/// host may skip the rule for a document in which none of `literals`
/// occurs (in one of `fields`), matching ASCII case-insensitively when
/// `ascii_case_insensitive`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prefilter {
    pub fields: Vec<String>,
    pub literals: Vec<String>,
    pub ascii_case_insensitive: bool,
}

/// The non-ASCII characters whose lower case contains ASCII (U+0130 İ →
/// `i̇`, U+212A K → `k`); a unit test checks every character.
pub const FOLDS_TO_ASCII: [char; 2] = ['\u{130}', '\u{212A}'];

impl RuleSet {
    /// The declaration for rule `rule` when the host evaluates it itself
    /// and treats every non-ASCII document as a candidate for rules with
    /// folded literals (as dac's engine does for YAML and Sigma rules): its
    /// exact literals when all its tests are case-sensitive (searched byte
    /// for byte, the fastest), else its folded literals, else none
    /// (evaluated for every event). A rule that can never fire gets an
    /// empty declaration.
    pub fn host_prefilter(&self, rule: usize) -> Option<Prefilter> {
        let (pairs, ascii_case_insensitive) = match self.required_exact_literals(rule) {
            Some(pairs) => (pairs, false),
            None => (self.required_literals(rule)?, true),
        };
        if pairs.iter().any(|(_, literal)| could_be_non_text(literal)) {
            return None;
        }
        let mut declared = Prefilter { fields: Vec::new(), literals: Vec::new(), ascii_case_insensitive };
        for (field, literal) in pairs {
            push_unique(&mut declared.fields, field);
            push_unique(&mut declared.literals, literal);
        }
        Some(declared)
    }

    /// The declaration for rule `rule` running on its own, behind a host
    /// that trusts an ASCII-case-insensitive scan for every document (a
    /// component's declaration: `dac build`). It is
    /// [`RuleSet::host_prefilter`] made sound without the host's help:
    ///
    /// - a folded literal with non-ASCII characters is replaced by its
    ///   longest ASCII run (`é` in the text may be `É`; an ASCII run of the
    ///   literal still occurs, ASCII case aside), or the rule declares
    ///   nothing when it has none;
    /// - the characters that fold to ASCII ([`FOLDS_TO_ASCII`]) are declared
    ///   too, so a document holding one is always a candidate;
    /// - a rule that can never fire declares a NUL character, which no
    ///   well-formed JSON document holds unescaped (an escaped one makes the
    ///   host parse and look, and the rule still does not fire).
    ///
    /// Every declaration has at least one field and one non-empty literal.
    pub fn standalone_prefilter(&self, rule: usize) -> Option<Prefilter> {
        let mut declared = self.host_prefilter(rule)?;
        if declared.literals.is_empty() {
            let field = self.rules()[rule].fields().into_iter().next().unwrap_or_default();
            return Some(Prefilter { fields: vec![field], literals: vec!["\0".into()], ascii_case_insensitive: false });
        }
        if declared.ascii_case_insensitive {
            let mut literals = Vec::new();
            for literal in &declared.literals {
                let run = longest_ascii_run(literal);
                if run.is_empty() || could_be_non_text(run) {
                    return None;
                }
                push_unique(&mut literals, run);
            }
            for c in FOLDS_TO_ASCII {
                push_unique(&mut literals, c.encode_utf8(&mut [0; 4]));
            }
            declared.literals = literals;
        }
        Some(declared)
    }
}

fn push_unique(list: &mut Vec<String>, item: &str) {
    if !list.iter().any(|x| x == item) {
        list.push(item.to_owned());
    }
}

/// A literal made only of what numbers and dates are written with may
/// match the text a rule reads (`1695342026084` for a `$date`) without
/// occurring in the raw JSON.
fn could_be_non_text(literal: &str) -> bool {
    literal.bytes().all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'+' | b'e' | b'E'))
}

fn longest_ascii_run(text: &str) -> &str {
    text.split(|c: char| !c.is_ascii()).max_by_key(|run| run.len()).unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{load_text, FieldMapping};

    fn set(texts: &[&str]) -> RuleSet {
        let mapping = FieldMapping::default();
        let rules = texts.iter().enumerate().map(|(i, t)| load_text(&format!("r{i}.yml"), t, &mapping).unwrap());
        RuleSet::compile(rules.collect()).unwrap()
    }

    fn sigma(id: &str, selection: &str) -> String {
        format!("title: T\nid: {id}\nlogsource: {{product: linux, category: process_creation}}\ndetection:\n  sel:\n    {selection}\n  condition: sel\n")
    }

    #[test]
    fn only_two_non_ascii_characters_fold_to_ascii() {
        let found: Vec<char> = (0..=char::MAX as u32)
            .filter_map(char::from_u32)
            .filter(|c| !c.is_ascii() && c.to_lowercase().any(|l| l.is_ascii()))
            .collect();
        assert_eq!(found, FOLDS_TO_ASCII);
    }

    #[test]
    fn seed_rules_declare_exact_literals_both_ways() {
        let s = set(&["name: S\nuuid: u-1\ndetection_logic:\n  command_line:\n    - /etc/Shadow\n"]);
        let expected = Prefilter {
            fields: vec!["command_line".into()],
            literals: vec!["/etc/Shadow".into()],
            ascii_case_insensitive: false,
        };
        assert_eq!(s.host_prefilter(0), Some(expected.clone()));
        assert_eq!(s.standalone_prefilter(0), Some(expected));
    }

    #[test]
    fn standalone_folded_literals_cover_characters_that_fold_to_ascii() {
        let s = set(&[&sigma("u-2", "CommandLine|contains: 'Base64 -D'")]);
        assert_eq!(s.host_prefilter(0).unwrap().literals, ["base64 -d"]);
        let standalone = s.standalone_prefilter(0).unwrap();
        assert!(standalone.ascii_case_insensitive);
        assert_eq!(standalone.literals, ["base64 -d", "\u{130}", "\u{212A}"]);
    }

    #[test]
    fn non_ascii_folded_literals_shrink_to_their_longest_ascii_run() {
        let s = set(&[
            &sigma("u-3", "CommandLine|contains: 'Ünïcode-switch'"),
            &sigma("u-4", "CommandLine|contains: 'é12'"),
        ]);
        assert_eq!(s.standalone_prefilter(0).unwrap().literals[0], "code-switch");
        assert_eq!(s.standalone_prefilter(1), None, "`12` could be a number");
    }

    #[test]
    fn a_rule_that_can_never_fire_declares_nul() {
        // The default mapping declares `LogonId` absent from events.
        let s = set(&[&sigma("u-5", "LogonId: '0x3e7'")]);
        assert_eq!(s.host_prefilter(0).unwrap().literals, Vec::<String>::new());
        let standalone = s.standalone_prefilter(0).unwrap();
        assert_eq!((standalone.fields.len(), standalone.literals.as_slice()), (1, &["\0".to_string()][..]));
    }
}
