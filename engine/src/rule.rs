//! What the engine knows about a rule, whatever it is written in: its
//! identity, its metadata, what it reports, and how a call can fail.

use serde::Serialize;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub use dac_detect::{MatchedField, Prefilter, RuleKind, Severity};

/// A rule's identity in an engine, chosen by whoever manages the rule set:
/// a rule file's path for `dac run` and `dac watch`, the rule's name for a
/// `dac serve` tenant. A new version of the rule keeps it (and its
/// counters); no two rules of one engine share it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RuleId(Arc<str>);

impl RuleId {
    pub fn new(id: impl Into<Arc<str>>) -> RuleId {
        RuleId(id.into())
    }

    /// The identity of the rule loaded from `file`: its path as given.
    pub fn of_file(file: &std::path::Path) -> RuleId {
        RuleId(file.to_string_lossy().into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The id of a multi-document file's `n`th rule (from 2): `FILE#n`.
    pub(crate) fn document(&self, n: usize) -> RuleId {
        RuleId::new(format!("{self}#{n}"))
    }

    /// The id of the file this rule comes from: itself, or for a
    /// multi-document file's later rules (`FILE#2`, `FILE#3`, …) `FILE`.
    pub fn file_id(&self) -> &str {
        match self.0.rsplit_once('#') {
            Some((file, n)) if n.parse::<usize>().is_ok_and(|n| n >= 2) => file,
            _ => &self.0,
        }
    }
}

impl std::fmt::Display for RuleId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a rule says about itself, plus where it came from.
#[derive(Debug, Clone)]
pub struct RuleInfo {
    pub id: RuleId,
    pub name: String,
    pub uuid: String,
    pub version: String,
    pub severity: Severity,
    pub description: String,
    pub tags: Vec<String>,
    /// Who wrote the rule (Sigma's `author`), credited in every alert as the
    /// Detection Rule License asks; for a component, only one `dac build`
    /// made from a rule that names them.
    pub authors: Vec<String>,
    pub prefilter: Option<Prefilter>,
    /// Alert dedup the rule declares (a YAML or Sigma rule's `dedup`, also
    /// when built into a component); see [`crate::AlertPolicy`].
    pub dedup: Option<dac_detect::Dedup>,
    /// What messages call the rule's file: the path it was loaded from, or
    /// for bytes that never were a file (an upload), the label given to
    /// the loader. Errors say `FILE:LINE`, faults name its file name.
    pub file: PathBuf,
    /// SHA-256 of the rule's bytes, hex.
    pub sha256: String,
    pub kind: RuleKind,
}

impl RuleInfo {
    /// The file name, for messages.
    pub fn file_name(&self) -> String {
        self.file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| self.file.display().to_string())
    }
}

/// What a rule reports about one event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub severity: Option<Severity>,
    pub matched: Vec<MatchedField>,
}

/// Why one (rule, event) evaluation produced no verdict. The instance that
/// faulted is discarded; the next evaluation gets a fresh one.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Fault {
    #[error("exceeded its deadline of {0:?}")]
    Deadline(Duration),
    #[error("ran out of fuel ({0} units)")]
    Fuel(u64),
    #[error("exceeded its memory limit of {limit} bytes (asked for {asked})")]
    Memory { limit: usize, asked: usize },
    #[error("overflowed its stack")]
    StackOverflow,
    #[error("trapped: {0}")]
    Trap(String),
    #[error("returned {count} findings, above the limit of {limit}")]
    TooManyFindings { count: usize, limit: usize },
    #[error("returned a finding of {bytes} bytes, above the limit of {limit}")]
    FindingTooLarge { bytes: usize, limit: usize },
    #[error("could not be instantiated: {0}")]
    Instantiate(String),
    #[error("broke a limit of its keyed state: {0}")]
    State(dac_state::StateFault),
}

impl Fault {
    /// A short stable name for counting faults by kind.
    pub fn kind(&self) -> &'static str {
        match self {
            Fault::Deadline(_) => "deadline",
            Fault::Fuel(_) => "fuel",
            Fault::Memory { .. } => "memory",
            Fault::StackOverflow => "stack",
            Fault::Trap(_) => "trap",
            Fault::TooManyFindings { .. } | Fault::FindingTooLarge { .. } => "finding-limit",
            Fault::Instantiate(_) => "instantiate",
            Fault::State(_) => "state-limit",
        }
    }
}
