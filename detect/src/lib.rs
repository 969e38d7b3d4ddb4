//! Declarative detection rules for dac: the seed talk's YAML rules and
//! Sigma rules, parsed into one intermediate form and compiled into a
//! [`RuleSet`] that evaluates a whole set in one pass per event.
//!
//! ```
//! use dac_detect::{load_text, FieldMapping, RuleSet};
//! use dac_event::Event;
//!
//! let mapping = FieldMapping::default(); // Sigma's Linux process_creation fields
//! let shadow = load_text(
//!     "rules/shadow.yaml",
//!     "name: Suspicious /etc/shadow Usage\n\
//!      uuid: 5e3566a3-9f19-4ac7-8710-ec5fb09260ed\n\
//!      detection_logic:\n  command_line:\n    - /etc/shadow\n",
//!     &mapping,
//! )?;
//! let set = RuleSet::compile(vec![shadow])?;
//!
//! let event = Event::from_json(serde_json::json!({"command_line": "/usr/bin/sudo cat /etc/shadow"}))?;
//! let mut matches = Vec::new();
//! set.matches(&event, &mut matches);
//! assert_eq!(set.rules()[matches[0].rule].metadata().uuid, "5e3566a3-9f19-4ac7-8710-ec5fb09260ed");
//! assert_eq!(matches[0].matched[0].path, "command_line");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Loading rules
//!
//! - [`parse_seed_yaml`]`(file, text)`: `name`, `uuid`, `detection_logic:
//!   {field: [substrings]}`, plus optional `severity`, `tags`,
//!   `description`, `references`, `version`, `author`, `dedup`. Case-sensitive
//!   substrings, as in the seed; unknown keys are refused.
//! - [`parse_sigma`]`(file, text, &mapping)`: a Sigma rule; its fields are
//!   translated by a [`FieldMapping`] (default: SigmaHQ's Linux
//!   process-creation fields onto dac's exec event; others from TOML with
//!   [`FieldMapping::from_toml`]). Constructs dac does not implement are
//!   refused with [`DetectError::Unsupported`], never ignored.
//! - [`load_text`] picks the parser by content (`detection_logic` → seed,
//!   `detection` → Sigma); [`load_path`] reads a file first and
//!   [`load_dir`] every rule file of a directory. Only those two touch the
//!   filesystem, so the crate also builds for `wasm32-wasip2` and can run
//!   inside a component, given rule text.
//!
//! Every error says `FILE:LINE: WHERE: WHAT`, e.g.
//! `rules/x.yaml:4: detection_logic.command_line: expected a list of strings`.
//!
//! # Matching
//!
//! [`RuleSet::compile`] takes the rules (refusing duplicate uuids);
//! [`RuleSet::matches`] appends one [`Match`] per firing rule, in rule
//! order: the rule's index and the fields (event paths) and values that made
//! it fire, for an alert's `matched` information. In a loop, use
//! [`RuleSet::matches_with`] and one [`Scratch`] to avoid an allocation per
//! event. A `RuleSet` is `Send + Sync + Clone`: share one between threads.
//!
//! [`Rule::metadata`] gives what an alert needs: name, uuid, version,
//! severity, tags, description, authors (credit them: the DRL asks for it),
//! references, license, source file and `sha256:` of the rule text.
//! [`Rule::notes`] lists what is worth knowing but did not stop the rule
//! from loading (a field the mapping declares absent, a custom attribute).
//!
//! Fields are read by dotted path (`process.parent.path`) with
//! [`dac_event::Event::get`]. A value is compared as text: text as is,
//! integers, floats and booleans as JSON spells them. Arrays and documents
//! are not searched by field tests (Sigma keyword searches walk every text
//! value of the event, nested ones included).
//!
//! The set's prefilter is described on [`RuleSet`]; it is sound (tests
//! compare it with [`RuleSet::matches_without_prefilter`] on generated,
//! hostile and fixture events), so it changes speed, never results. A host
//! that prefilters rules itself can read each rule's literals with
//! [`RuleSet::required_literals`], or a ready declaration for dac's
//! raw-document prefilter with [`RuleSet::host_prefilter`] (rules the host
//! evaluates) and [`RuleSet::standalone_prefilter`] (a rule in a component
//! of its own).
//!
//! # Performance
//!
//! `cargo bench -p dac-detect --bench ruleset`: on the project's 2-core
//! machine, all 122 SigmaHQ Linux process-creation rules together match
//! about 1M parsed events per second on one core (0.9–1.3M depending on
//! the machine's load; ≈2.7 rules evaluated in full per event), 7–8× faster
//! than evaluating every rule; parsing the JSON into an [`Event`] costs
//! about twice as much as matching it. See the crate's README.

mod budget;
mod correlate;
mod correlation;
mod declare;
mod error;
mod eval;
mod pattern;
mod rule;
mod ruleset;
mod seed;
mod sigma;
mod yaml;

use std::path::Path;

pub use budget::Budget;
pub use correlate::{
    group_key_part, CorrelationLimits, CorrelationRule, CorrelationStats, Correlator, Evidence, Hit, Restored,
    RuleName, SavedCorrelator, Unresolved,
};
pub use correlation::{Condition, Correlation, CorrelationType, FieldRef, GroupField, Op};
pub use dac_event::Event;
pub use declare::{Prefilter, FOLDS_TO_ASCII};
pub use error::DetectError;
pub use eval::MatchedField;
pub use pattern::fold;
pub use rule::{parse_timespan, Dedup, Metadata, Rule, RuleKind, Severity};
pub use ruleset::{Match, PrefilterStats, RuleSet, Scratch};
pub use seed::parse_seed_yaml;
pub use sigma::{parse_sigma, FieldMapping, LogSource, Resolved};

/// Parses a rule, choosing the language by content: a mapping with
/// `detection_logic` is a seed rule, one with `detection` a Sigma rule.
/// Within the default [`Budget`].
pub fn load_text(file: &str, text: &str, mapping: &FieldMapping) -> Result<Rule, DetectError> {
    load_text_within(file, text, mapping, &Budget::default())
}

/// [`load_text`] within `budget`: a rule that would cost more to parse or
/// compile is refused with [`DetectError::OverBudget`] before the memory is
/// spent.
pub fn load_text_within(file: &str, text: &str, mapping: &FieldMapping, budget: &Budget) -> Result<Rule, DetectError> {
    // Loaded (and measured against the budget) once, for both steps.
    let root = yaml::load(file, text, budget)?;
    if is_seed_yaml(file, &root)? {
        seed::from_root(file, text, &root)
    } else {
        sigma::from_root(file, text, &root, mapping, budget)
    }
}

/// Every rule of a file of one or more YAML documents (`---` between
/// them): a Sigma correlation with the rules it aggregates, for one. Each
/// document is a rule of its own; errors name the document's line. Within
/// `budget` for the whole file.
pub fn load_documents_within(
    file: &str,
    text: &str,
    mapping: &FieldMapping,
    budget: &Budget,
) -> Result<Vec<Rule>, DetectError> {
    let mut rules = Vec::new();
    for root in yaml::load_all(file, text, budget)? {
        if yaml::is_null(&root) {
            continue; // an empty document: a trailing `---`
        }
        rules.push(if is_seed_yaml(file, &root)? {
            seed::from_root(file, text, &root)?
        } else {
            sigma::from_root(file, text, &root, mapping, budget)?
        });
    }
    if rules.is_empty() {
        return Err(DetectError::UnknownKind { file: file.into(), message: "the file holds no rule".into() });
    }
    Ok(rules)
}

/// Whether the document is a seed rule (else a Sigma rule), without
/// parsing it as a rule; neither or both is an error.
fn is_seed_yaml(file: &str, root: &saphyr::MarkedYaml<'_>) -> Result<bool, DetectError> {
    let ctx = yaml::Ctx { file };
    let keys: Vec<String> = ctx.mapping(root, "(document)")?.into_iter().map(|(k, _, _)| k).collect();
    let has = |k: &str| keys.iter().any(|key| key == k);
    match (has("detection_logic"), has("detection")) {
        (true, false) => Ok(true),
        (false, true) => Ok(false),
        (false, false) if has("correlation") => Ok(false),
        (true, true) => Err(DetectError::UnknownKind {
            file: file.into(),
            message: "both `detection_logic` (seed YAML) and `detection` (Sigma)".into(),
        }),
        (false, false) => Err(DetectError::UnknownKind {
            file: file.into(),
            message: "neither `detection_logic` (seed YAML) nor `detection` or `correlation` (Sigma)".into(),
        }),
    }
}

/// Whether a path names a declarative rule file (`.yml` / `.yaml`).
pub fn is_rule_file(path: &Path) -> bool {
    matches!(path.extension().and_then(|e| e.to_str()), Some("yml" | "yaml"))
}

/// Reads and parses one rule file; errors name the file as given.
pub fn load_path(path: &Path, mapping: &FieldMapping) -> Result<Rule, DetectError> {
    let file = path.display().to_string();
    let text =
        std::fs::read_to_string(path).map_err(|e| DetectError::Io { file: file.clone(), message: e.to_string() })?;
    load_text(&file, &text, mapping)
}

/// Loads every `.yml` / `.yaml` file directly in `dir`, in file-name order.
/// All or nothing: if any file fails, every error is returned, so a caller
/// can report them all and run none (as `dac-run` does with components).
pub fn load_dir(dir: &Path, mapping: &FieldMapping) -> Result<Vec<Rule>, Vec<DetectError>> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| vec![DetectError::Io { file: dir.display().to_string(), message: e.to_string() }])?;
    let mut paths = Vec::new();
    let mut errors = Vec::new();
    for entry in entries {
        match entry {
            Ok(entry) if is_rule_file(&entry.path()) && entry.path().is_file() => paths.push(entry.path()),
            Ok(_) => {}
            Err(e) => errors.push(DetectError::Io { file: dir.display().to_string(), message: e.to_string() }),
        }
    }
    paths.sort();
    let mut rules = Vec::new();
    for path in paths {
        match load_path(&path, mapping) {
            Ok(rule) => rules.push(rule),
            Err(e) => errors.push(e),
        }
    }
    if errors.is_empty() {
        Ok(rules)
    } else {
        Err(errors)
    }
}

pub(crate) fn sha256_hex(text: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(text.as_bytes());
    let mut out = String::with_capacity(7 + 64);
    out.push_str("sha256:");
    for byte in digest {
        out.push_str(&format!("{byte:02x}"));
    }
    out
}
