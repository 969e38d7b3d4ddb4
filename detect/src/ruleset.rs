//! A set of rules compiled for one pass per event.

use aho_corasick::{AhoCorasick, AhoCorasickKind, MatchKind};

use crate::eval::{self, FieldId, FieldSpec, MatchedField, View};
use crate::rule::{Expr, Rule};
use crate::{DetectError, Event};

/// One rule that fired on an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Match {
    /// Index of the rule in [`RuleSet::rules`] (the order given to
    /// [`RuleSet::compile`]).
    pub rule: usize,
    /// The fields whose tests made the rule fire, with their values.
    pub matched: Vec<MatchedField>,
}

/// Literals of one field past which its prefilter is a contiguous NFA
/// rather than a DFA (whose size grows with literals × alphabet).
const DFA_MAX_LITERALS: usize = 4_000;
const DFA_MAX_LITERAL_BYTES: usize = 64 << 10;

/// Rules compiled together: a literal prefilter over the fields the set
/// reads, then full evaluation of the candidate rules only.
///
/// For every rule, compilation derives a set of (field, literal) pairs of
/// which at least one must occur (case-folded) in the event for the rule to
/// fire — from its string values through `and` (the most selective branch),
/// `or` (the union of its branches) and lists of values. Per event, each
/// field that carries literals is scanned once by that field's
/// Aho–Corasick automaton (ASCII-case-insensitive; non-ASCII text is folded
/// first); the rules whose literals occur, plus the
/// rules without a literal set (pure `exists`, `not`-only, regular
/// expressions, keywords, cidr, fieldref), are then evaluated in full.
#[derive(Debug, Clone)]
pub struct RuleSet {
    rules: Vec<Rule>,
    compiled: Vec<Expr<FieldId>>,
    fields: Vec<FieldSpec>,
    filters: Vec<FieldFilter>,
    /// Rules without a literal set: candidates for every event.
    always: Vec<usize>,
    /// (key, field index) of the top-level fields, for [`View::prefetched`].
    top: Vec<(String, usize)>,
    /// Per rule, the (field, folded literal) pairs of which one must occur.
    requirements: Vec<Option<Vec<(usize, String)>>>,
    /// The same from case-sensitive tests only, literals as written.
    exact_requirements: Vec<Option<Vec<(usize, String)>>>,
}

#[derive(Debug, Clone)]
struct FieldFilter {
    field: usize,
    automaton: AhoCorasick,
    /// For each automaton pattern, the rules it makes candidates.
    rules: Vec<Vec<u32>>,
}

/// What the prefilter of a set looks like, for logs and benchmarks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrefilterStats {
    pub rules: usize,
    /// Rules evaluated for every event (no literal could be derived).
    pub always_candidates: usize,
    /// Rules that can never fire (they need a field declared absent).
    pub never_candidates: usize,
    /// Distinct (field, literal) pairs across all automata.
    pub literals: usize,
    /// Fields scanned per event.
    pub scanned_fields: usize,
    /// Fields the set reads at all.
    pub fields: usize,
}

/// Reusable buffers for [`RuleSet::matches_with`], so a hot loop does not
/// allocate a candidate set per event.
#[derive(Debug, Default, Clone)]
pub struct Scratch {
    candidates: Vec<u64>,
    /// Rules evaluated in full since the scratch was made: with the number
    /// of events, says how much work the prefilter left.
    pub evaluated: u64,
}

impl Scratch {
    /// The rules the last [`RuleSet::matches_with`] evaluated in full (the
    /// prefilter's candidates), in rule order: for per-rule counters.
    pub fn last_candidates(&self) -> impl Iterator<Item = usize> + '_ {
        self.candidates
            .iter()
            .enumerate()
            .flat_map(|(w, &word)| (0..64).filter(move |bit| word & (1 << bit) != 0).map(move |bit| w * 64 + bit))
    }
}

impl RuleSet {
    /// Compiles rules for matching together.
    ///
    /// Refused: two rules with the same uuid, since alerts could not tell
    /// them apart.
    pub fn compile(rules: Vec<Rule>) -> Result<RuleSet, DetectError> {
        for (i, rule) in rules.iter().enumerate() {
            let m = rule.metadata();
            if let Some(first) = rules[..i].iter().find(|r| r.metadata().uuid == m.uuid) {
                return Err(DetectError::Compile {
                    message: format!("uuid {} is used by both {} and {}", m.uuid, first.metadata().source, m.source),
                });
            }
        }
        let mut fields: Vec<FieldSpec> = Vec::new();
        let mut intern = |path: &Option<String>| -> FieldId {
            let path = path.as_ref()?;
            Some(fields.iter().position(|f| &f.path == path).unwrap_or_else(|| {
                fields.push(FieldSpec { path: path.clone(), segments: path.split('.').map(str::to_owned).collect() });
                fields.len() - 1
            }))
        };
        let compiled: Vec<Expr<FieldId>> = rules.iter().map(|r| r.expr.map_fields(&mut intern)).collect();

        let mut per_field: Vec<(Vec<String>, Vec<Vec<u32>>)> = vec![(Vec::new(), Vec::new()); fields.len()];
        // Each field's literals by text, to their slot: a rule may hold
        // 100,000 of them, too many for a linear search each.
        let mut slots: Vec<std::collections::HashMap<String, usize>> = vec![Default::default(); fields.len()];
        let mut always = Vec::new();
        let nothing = Event::default();
        let absent = View::new(&nothing, &fields);
        let mut requirements = Vec::with_capacity(compiled.len());
        let exact_requirements = compiled.iter().map(|expr| required(expr, &absent, Literals::Exact)).collect();
        for (index, expr) in compiled.iter().enumerate() {
            let requirement = required(expr, &absent, Literals::Folded);
            requirements.push(requirement.clone());
            match requirement {
                None => always.push(index),
                Some(pairs) => {
                    for (field, literal) in pairs {
                        let (literals, owners) = &mut per_field[field];
                        let slot = *slots[field].entry(literal).or_insert_with_key(|literal| {
                            literals.push(literal.clone());
                            owners.push(Vec::new());
                            literals.len() - 1
                        });
                        if !owners[slot].contains(&(index as u32)) {
                            owners[slot].push(index as u32);
                        }
                    }
                }
            }
        }
        let mut filters = Vec::new();
        for (field, (literals, owners)) in per_field.into_iter().enumerate() {
            if literals.is_empty() {
                continue;
            }
            // A full DFA: a few hundred literals make a small one, and it
            // scans fastest. Its size grows with the literals times the
            // alphabet, so past a few thousand (a tenant's rules can hold
            // 100,000 values each) a contiguous NFA, linear in their bytes.
            let bytes: usize = literals.iter().map(String::len).sum();
            let kind = if literals.len() <= DFA_MAX_LITERALS && bytes <= DFA_MAX_LITERAL_BYTES {
                AhoCorasickKind::DFA
            } else {
                AhoCorasickKind::ContiguousNFA
            };
            let automaton = AhoCorasick::builder()
                .match_kind(MatchKind::Standard)
                .kind(Some(kind))
                .ascii_case_insensitive(true)
                .build(&literals)
                .map_err(|e| DetectError::Compile {
                    message: format!("prefilter for `{}`: {e}", fields[field].path),
                })?;
            filters.push(FieldFilter { field, automaton, rules: owners });
        }
        // One walk over the document finds at most 64 top-level fields; the
        // rest (and nested paths) are looked up when first needed.
        let top = fields
            .iter()
            .enumerate()
            .filter(|(i, f)| f.segments.len() == 1 && *i < 64)
            .map(|(i, f)| (f.path.clone(), i))
            .collect();
        Ok(RuleSet { rules, compiled, fields, filters, always, top, requirements, exact_requirements })
    }

    /// The rules, in the order given to [`RuleSet::compile`].
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    pub fn len(&self) -> usize {
        self.rules.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The event paths the set reads.
    pub fn fields(&self) -> impl Iterator<Item = &str> {
        self.fields.iter().map(|f| f.path.as_str())
    }

    /// The top-level keys of an event that hold everything the set reads
    /// (the first segment of each path), sorted: an event of those fields
    /// alone ([`dac_event::Event::project_from_slice`]) gives every rule
    /// the same answer as the whole event. `None` when a rule searches
    /// every value of the event (Sigma keywords).
    pub fn top_level_keys(&self) -> Option<Vec<String>> {
        if self.compiled.iter().any(Expr::has_keywords) {
            return None;
        }
        let mut keys: Vec<String> = self.fields.iter().filter_map(|f| f.segments.first().cloned()).collect();
        keys.sort();
        keys.dedup();
        Some(keys)
    }

    /// The prefilter's view of rule `rule`: (event path, literal) pairs of
    /// which at least one occurs in [`fold`](crate::fold)`(text of that
    /// field)` whenever the rule fires. `None`: no such set is known, the
    /// rule must be evaluated for every event. `Some(vec![])`: the rule can
    /// never fire (it tests a field the mapping declares absent).
    ///
    /// For a host that prefilters rules itself. Literals are folded
    /// (lower-cased per character); matching them ASCII-case-insensitively
    /// against the raw text is equivalent for ASCII text only.
    pub fn required_literals(&self, rule: usize) -> Option<Vec<(&str, &str)>> {
        let pairs = self.requirements.get(rule)?.as_ref()?;
        Some(pairs.iter().map(|(f, l)| (self.fields[*f].path.as_str(), l.as_str())).collect())
    }

    /// Like [`RuleSet::required_literals`], but with the literals exactly as
    /// the rule wrote them, to be matched case-sensitively: known only for
    /// rules whose tests are all case-sensitive (the seed's YAML, Sigma
    /// `|cased`); `None` for the others.
    pub fn required_exact_literals(&self, rule: usize) -> Option<Vec<(&str, &str)>> {
        let pairs = self.exact_requirements.get(rule)?.as_ref()?;
        Some(pairs.iter().map(|(f, l)| (self.fields[*f].path.as_str(), l.as_str())).collect())
    }

    pub fn stats(&self) -> PrefilterStats {
        PrefilterStats {
            rules: self.rules.len(),
            always_candidates: self.always.len(),
            never_candidates: self.requirements.iter().filter(|r| r.as_ref().is_some_and(Vec::is_empty)).count(),
            literals: self.filters.iter().map(|f| f.rules.len()).sum(),
            scanned_fields: self.filters.len(),
            fields: self.fields.len(),
        }
    }

    /// Appends a [`Match`] to `out` for every rule that fires on `event`,
    /// in rule order. `out` is not cleared.
    pub fn matches(&self, event: &Event, out: &mut Vec<Match>) {
        self.matches_with(event, &mut Scratch::default(), out)
    }

    /// [`RuleSet::matches`] with reusable buffers.
    pub fn matches_with(&self, event: &Event, scratch: &mut Scratch, out: &mut Vec<Match>) {
        let view = View::prefetched(event, &self.fields, &self.top);
        let words = self.rules.len().div_ceil(64);
        let mut candidates = std::mem::take(&mut scratch.candidates);
        candidates.clear();
        candidates.resize(words, 0);
        for &rule in &self.always {
            candidates[rule / 64] |= 1 << (rule % 64);
        }
        for filter in &self.filters {
            let slot = view.slot(Some(filter.field));
            let Some(text) = slot.text.as_deref() else { continue };
            // The literals are folded and the automaton ignores ASCII case,
            // so ASCII text needs no folding; other text is folded first.
            let text = if text.is_ascii() { text } else { slot.folded().unwrap_or(text) };
            for hit in filter.automaton.find_overlapping_iter(text) {
                for &rule in &filter.rules[hit.pattern().as_usize()] {
                    candidates[rule as usize / 64] |= 1 << (rule % 64);
                }
            }
        }
        for (w, &word) in candidates.iter().enumerate() {
            let mut bits = word;
            while bits != 0 {
                let rule = w * 64 + bits.trailing_zeros() as usize;
                bits &= bits - 1;
                scratch.evaluated += 1;
                self.check(rule, &view, out);
            }
        }
        scratch.candidates = candidates;
    }

    /// Evaluates every rule in full, without the prefilter: the reference
    /// the prefilter is tested and benchmarked against.
    pub fn matches_without_prefilter(&self, event: &Event, out: &mut Vec<Match>) {
        let view = View::new(event, &self.fields);
        for rule in 0..self.rules.len() {
            self.check(rule, &view, out);
        }
    }

    fn check(&self, rule: usize, view: &View<'_>, out: &mut Vec<Match>) {
        let expr = &self.compiled[rule];
        if eval::eval(expr, view) {
            let mut matched = Vec::new();
            eval::collect(expr, view, &mut matched);
            out.push(Match { rule, matched });
        }
    }
}

/// Which literals [`required`] derives.
#[derive(Clone, Copy)]
enum Literals {
    /// Folded, to be found in folded text.
    Folded,
    /// As written, from case-sensitive tests only, to be found in the text.
    Exact,
}

/// (field, literal) pairs of which one must occur for `expr` to hold;
/// `None` when no such set is known.
fn required(expr: &Expr<FieldId>, absent: &View<'_>, kind: Literals) -> Option<Vec<(usize, String)>> {
    match expr {
        Expr::Const(false) => Some(Vec::new()),
        Expr::Const(true) | Expr::Not(_) | Expr::Keywords { .. } => None,
        Expr::Or(xs) => {
            let mut out = Vec::new();
            for x in xs {
                out.extend(required(x, absent, kind)?);
            }
            Some(out)
        }
        Expr::And(xs) => xs.iter().filter_map(|x| required(x, absent, kind)).max_by_key(|set| selectivity(set)),
        Expr::Field(test) => {
            let Some(field) = test.field else {
                // A field declared absent looks the same in every event:
                // decide the test once, now.
                let never = !eval::field_test(test, absent.slot(None), absent);
                return never.then(Vec::new);
            };
            let sets = test.values.iter().map(|p| match kind {
                Literals::Folded => p.required_literals(),
                Literals::Exact => p.exact_literals(),
            });
            let literals = if test.all {
                sets.flatten().max_by_key(|set| selectivity(&set.iter().map(|l| (0, l.clone())).collect::<Vec<_>>()))?
            } else {
                sets.collect::<Option<Vec<_>>>()?.concat()
            };
            Some(literals.into_iter().map(|l| (field, l)).collect())
        }
    }
}

/// Higher is more selective: an empty set never fires; otherwise the
/// shortest literal decides, then fewer alternatives.
fn selectivity(set: &[(usize, String)]) -> (usize, isize) {
    match set.iter().map(|(_, l)| l.chars().count()).min() {
        None => (usize::MAX, 0),
        Some(shortest) => (shortest, -(set.len() as isize)),
    }
}
