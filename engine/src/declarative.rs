//! Declarative rules — the seed's YAML and Sigma — evaluated by the host.
//!
//! They are data interpreted by trusted code ([`dac_detect`]), not programs,
//! so they need no sandbox: the engine keeps all of them in one
//! [`RuleSet`], evaluated in one pass per event, next to the components.
//!
//! The engine's raw-bytes prefilter must stay sound for them: scanning the
//! raw JSON for a set's folded literals is exact only under conditions
//! `dac_detect::RuleSet::host_prefilter` documents. [`prefilter_for`]
//! derives each rule's declaration with it, and [`needs_ascii`] tells the
//! engine when to distrust a non-ASCII document (a non-ASCII character can
//! fold to ASCII: K, the Kelvin sign, folds to `k`).

use crate::error::LoadError;
use crate::rule::{Finding, RuleId, RuleInfo};
use dac_detect::{Budget, FieldMapping, RuleSet};
use sha2::{Digest, Sha256};
use std::path::Path;
use std::sync::Arc;

/// One declarative rule as loaded from its file.
///
/// A file may hold several YAML documents (a Sigma correlation with the
/// rules it aggregates): the first is this rule, with the file's id; the
/// others are in `more`, with ids `ID#2`, `ID#3`, … A change puts or
/// removes a file's rules together.
#[derive(Debug, Clone)]
pub struct DeclarativeRule {
    /// Metadata for alerts; its `prefilter` is filled in once the rule is
    /// compiled into a set (see [`with_prefilters`]).
    pub info: Arc<RuleInfo>,
    pub rule: dac_detect::Rule,
    /// The file's other documents, in order.
    pub more: Vec<DeclarativeRule>,
}

impl DeclarativeRule {
    /// Parses a `.yml`/`.yaml` rule's bytes as rule `id`, within the
    /// default [`Budget`]; errors say `FILE:LINE`, naming it `file`.
    pub fn load(id: RuleId, file: &Path, bytes: &[u8], mapping: &FieldMapping) -> Result<DeclarativeRule, LoadError> {
        load_bytes(id, file, bytes, mapping, &Budget::default())
    }

    /// Reads and parses one rule file within `budget`; its identity is its
    /// path.
    pub fn load_file(file: &Path, mapping: &FieldMapping, budget: &Budget) -> Result<DeclarativeRule, LoadError> {
        load_file(file, mapping, budget)
    }
}

/// Parses a `.yml`/`.yaml` rule's bytes as rule `id`; errors say
/// `FILE:LINE`, naming it `file`.
pub(crate) fn load_bytes(
    id: RuleId,
    file: &Path,
    bytes: &[u8],
    mapping: &FieldMapping,
    budget: &Budget,
) -> Result<DeclarativeRule, LoadError> {
    let name = file.display().to_string();
    let text = std::str::from_utf8(bytes).map_err(|err| LoadError::Rule {
        file: file.to_owned(),
        source: dac_detect::DetectError::Io { file: name.clone(), message: format!("not UTF-8 text: {err}") },
    })?;
    let mut rules = dac_detect::load_documents_within(&name, text, mapping, budget)
        .map_err(|source| LoadError::Rule { file: file.to_owned(), source })?
        .into_iter()
        .enumerate()
        .map(|(n, rule)| {
            let id = if n == 0 { id.clone() } else { id.document(n + 1) };
            one(id, file, bytes, rule)
        });
    // `load_documents_within` refuses a file of no rule; said again here
    // rather than assumed.
    let Some(mut first) = rules.next() else {
        return Err(LoadError::Rule {
            file: file.to_owned(),
            source: dac_detect::DetectError::UnknownKind { file: name, message: "the file holds no rule".into() },
        });
    };
    first.more = rules.collect();
    Ok(first)
}

/// Whether rule `id` is one of the rules of the file whose id is `file`.
pub(crate) fn of_file(id: &RuleId, file: &RuleId) -> bool {
    id == file || id.file_id() == file.as_str()
}

impl DeclarativeRule {
    /// This rule and the file's other documents, as rules of their own.
    pub fn documents(&self) -> impl Iterator<Item = DeclarativeRule> + '_ {
        std::iter::once(DeclarativeRule { more: Vec::new(), ..self.clone() })
            .chain(self.more.iter().map(|d| DeclarativeRule { more: Vec::new(), ..d.clone() }))
    }
}

fn one(id: RuleId, file: &Path, bytes: &[u8], rule: dac_detect::Rule) -> DeclarativeRule {
    let m = rule.metadata();
    let info = RuleInfo {
        id,
        name: m.name.clone(),
        uuid: m.uuid.clone(),
        // Sigma has no version; its `modified`/`date` stands in for one.
        version: m.version.clone().unwrap_or_default(),
        severity: m.severity,
        description: m.description.clone().unwrap_or_default(),
        tags: m.tags.clone(),
        authors: m.authors.clone(),
        prefilter: None,
        dedup: m.dedup.clone(),
        file: file.to_owned(),
        sha256: hex::encode(Sha256::digest(bytes)),
        kind: m.kind,
    };
    DeclarativeRule { info: Arc::new(info), rule, more: Vec::new() }
}

/// Reads and parses one rule file; its identity is its path.
pub(crate) fn load_file(file: &Path, mapping: &FieldMapping, budget: &Budget) -> Result<DeclarativeRule, LoadError> {
    let bytes = std::fs::read(file).map_err(|source| LoadError::Read { file: file.to_owned(), source })?;
    load_bytes(RuleId::of_file(file), file, &bytes, mapping, budget)
}

/// Compiles the rules into one set.
pub(crate) fn compile(rules: &[DeclarativeRule]) -> Result<RuleSet, dac_detect::DetectError> {
    RuleSet::compile(rules.iter().map(|r| r.rule.clone()).collect())
}

/// The rules' infos with their prefilter declarations, derived from `set`
/// (compiled from these rules, in this order).
pub(crate) fn with_prefilters(rules: &[DeclarativeRule], set: &RuleSet) -> Vec<Arc<RuleInfo>> {
    rules
        .iter()
        .enumerate()
        .map(|(index, rule)| Arc::new(RuleInfo { prefilter: prefilter_for(set, index), ..(*rule.info).clone() }))
        .collect()
}

/// The engine's prefilter declaration for rule `index` of `set`
/// ([`RuleSet::host_prefilter`]): exact literals when all its tests are
/// case-sensitive, else folded ones (trusted only for ASCII documents, see
/// [`needs_ascii`]), else none. A rule that can never fire gets an empty
/// declaration: never a candidate.
pub(crate) fn prefilter_for(set: &RuleSet, index: usize) -> Option<dac_detect::Prefilter> {
    set.host_prefilter(index)
}

/// Whether the engine must treat a non-ASCII document as a candidate for
/// this rule (its literals are folded ones).
pub(crate) fn needs_ascii(info: &RuleInfo) -> bool {
    info.prefilter.as_ref().is_some_and(|p| p.ascii_case_insensitive)
}

/// A match as the findings of an alert: one finding naming the rule's
/// description (or title), with every field that matched.
pub(crate) fn finding(info: &RuleInfo, matched: &[dac_detect::MatchedField]) -> Finding {
    let message = if info.description.is_empty() { info.name.clone() } else { info.description.clone() };
    Finding { message, severity: None, matched: matched.to_vec() }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_file_text(name: &str, text: &str) -> DeclarativeRule {
        load_bytes(RuleId::new(name), Path::new(name), text.as_bytes(), &FieldMapping::default(), &Budget::default())
            .unwrap()
    }

    fn load(name: &str, text: &str) -> DeclarativeRule {
        load_file_text(name, text)
    }

    const SEED: &str = "name: S\nuuid: u-1\ndetection_logic:\n  command_line:\n    - /etc/Shadow\n";
    const SIGMA: &str = "title: T\nid: u-2\nauthor: Ann, Bob\nlogsource: {product: linux, category: process_creation}\ndetection:\n  sel:\n    CommandLine|contains: 'Base64 -D'\n  condition: sel\n";

    #[test]
    fn seed_rules_get_exact_literals_and_sigma_rules_folded_ones() {
        let rules = [load("a.yaml", SEED), load("b.yml", SIGMA)];
        let set = compile(&rules).unwrap();
        let infos = with_prefilters(&rules, &set);
        let seed = infos[0].prefilter.as_ref().unwrap();
        assert_eq!((seed.literals.as_slice(), seed.ascii_case_insensitive), (&["/etc/Shadow".to_string()][..], false));
        let sigma = infos[1].prefilter.as_ref().unwrap();
        assert_eq!((sigma.literals.as_slice(), sigma.ascii_case_insensitive), (&["base64 -d".to_string()][..], true));
        assert_eq!(sigma.fields, ["command_line"]);
        assert!(!needs_ascii(&infos[0]) && needs_ascii(&infos[1]));
        assert_eq!(infos[1].authors, ["Ann", "Bob"]);
        assert_eq!(infos[1].kind, dac_detect::RuleKind::Sigma);
    }

    #[test]
    fn numeric_literals_declare_no_prefilter() {
        let text = "name: N\nuuid: u-3\ndetection_logic:\n  pid:\n    - '4242'\n";
        let rules = [load("n.yaml", text)];
        let set = compile(&rules).unwrap();
        assert_eq!(prefilter_for(&set, 0), None);
    }

    #[test]
    fn broken_rules_are_located() {
        let err = load_bytes(
            RuleId::new("x"),
            Path::new("x.yaml"),
            b"name: S\nuuid: u\ndetection_logic:\n  command_line: 3\n",
            &FieldMapping::default(),
            &Budget::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(err.starts_with("x.yaml:4:"), "{err}");
    }
}
