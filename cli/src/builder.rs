//! `dac build`: a YAML or Sigma rule as a rule component.
//!
//! This crate's build script compiles the generic matcher component
//! (`dac_matcher`) once and embeds it. Building a rule checks it
//! exactly as `dac run` loads a rule file (same `FILE:LINE: WHERE: WHAT`
//! errors), runs the matcher's own parse of it on the host, and writes it
//! into a copy of the matcher's rule slot. The result is an ordinary rule
//! component: its metadata and prefilter are the rule's, and it runs in the
//! sandbox like a Rust rule, in `dac-run`, `dac watch` and `dac test`.

use dac_detect::{FieldMapping, RuleKind};
use dac_engine::{DeclarativeRule, LoadError, RuleId};
use dac_matcher::slot::{self, SlotError, PAYLOAD_CAPACITY};
use dac_matcher::{MappingSource, Matcher, MatcherError, Payload};
use std::path::{Path, PathBuf};

/// The matcher component, with an empty rule slot.
static TEMPLATE: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/dac-matcher.wasm"));
/// Why the build script could not build it (empty when it did).
static MISSING: &str = include_str!(concat!(env!("OUT_DIR"), "/dac-matcher-missing.txt"));

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The rule does not load; the same error `dac-run` reports.
    #[error(transparent)]
    Rule(#[from] LoadError),
    #[error("{file}: {source}")]
    Matcher { file: PathBuf, source: MatcherError },
    #[error("{file}: {size} bytes of rule data, above the {PAYLOAD_CAPACITY} bytes a built component holds; split the rule, or load the file itself with dac-run / dac watch")]
    TooLarge { file: PathBuf, size: usize },
    #[error("{file}: {source}")]
    Slot { file: PathBuf, source: SlotError },
    #[error("this dac was built without the matcher component, so it cannot build rules: {reason}")]
    NoMatcher { reason: String },
    #[error("{file}: {what}: the host keeps a correlation's windows, a component cannot; load the .yml itself with dac run, dac watch or dac serve (dac build compiles one single-event rule)")]
    NotSingleEvent { file: PathBuf, what: &'static str },
}

/// A Sigma field mapping given to `dac build`, kept as text: the component
/// parses it again.
#[derive(Debug, Clone)]
pub struct MappingFile {
    pub file: PathBuf,
    pub toml: String,
    pub mapping: FieldMapping,
}

impl MappingFile {
    /// Reads and checks a mapping file.
    pub fn read(file: &Path) -> Result<MappingFile, String> {
        let toml = std::fs::read_to_string(file).map_err(|err| format!("{}: {err}", file.display()))?;
        let mapping = FieldMapping::from_toml(&file.display().to_string(), &toml).map_err(|err| err.to_string())?;
        Ok(MappingFile { file: file.to_owned(), toml, mapping })
    }
}

/// A rule built into a component.
#[derive(Debug)]
pub struct Built {
    pub component: Vec<u8>,
    pub name: String,
    pub uuid: String,
    /// Things worth knowing that did not stop the rule from building.
    pub notes: Vec<String>,
}

/// The embedded matcher component, or why there is none.
pub fn template() -> Result<&'static [u8], BuildError> {
    if TEMPLATE.is_empty() {
        return Err(BuildError::NoMatcher { reason: MISSING.trim().to_owned() });
    }
    Ok(TEMPLATE)
}

/// Builds the rule file `file`, whose content is `bytes`. Without a
/// mapping, Sigma fields are mapped as `dac-run` maps them by default.
pub fn build(file: &Path, bytes: &[u8], mapping: Option<&MappingFile>) -> Result<Built, BuildError> {
    let template = template()?;
    let default = FieldMapping::default();
    let rule = DeclarativeRule::load(RuleId::of_file(file), file, bytes, mapping.map_or(&default, |m| &m.mapping))?;
    if rule.rule.correlation().is_some() {
        return Err(BuildError::NotSingleEvent { file: file.to_owned(), what: "a Sigma correlation" });
    }
    if !rule.more.is_empty() {
        return Err(BuildError::NotSingleEvent { file: file.to_owned(), what: "several YAML documents (rules)" });
    }
    let text = std::str::from_utf8(bytes).expect("load_bytes checked it is UTF-8");
    let name =
        |path: &Path| path.file_name().map_or_else(|| path.display().to_string(), |n| n.to_string_lossy().into());
    let payload = Payload {
        // The name only: a component does not carry where it was built.
        file: name(file),
        text: text.to_owned(),
        // A seed rule has no Sigma fields to map.
        mapping: mapping
            .filter(|_| rule.rule.metadata().kind == RuleKind::Sigma)
            .map(|m| MappingSource { file: name(&m.file), toml: m.toml.clone() }),
    };
    // The component's own parse, on the host: what passes here loads there.
    let matcher = Matcher::new(&payload).map_err(|source| BuildError::Matcher { file: file.to_owned(), source })?;
    let data = serde_json::to_vec(&payload).expect("a payload serializes");
    let component = slot::fill(template, &data).map_err(|source| match source {
        SlotError::TooLarge { size } => BuildError::TooLarge { file: file.to_owned(), size },
        source => BuildError::Slot { file: file.to_owned(), source },
    })?;
    let metadata = matcher.metadata();
    Ok(Built { component, name: metadata.name.clone(), uuid: metadata.uuid.clone(), notes: rule.rule.notes().to_vec() })
}
