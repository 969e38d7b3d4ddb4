//! Errors name the file, the line and the construct, so a detection engineer
//! can fix a rule without reading this crate.

/// Why a rule, a field mapping or a rule set could not be loaded.
///
/// Every variant renders as `FILE:LINE: WHERE: WHAT` (or `FILE: WHAT` when no
/// line applies), where `WHERE` is the dotted path of the construct inside
/// the rule (`detection_logic.command_line`, `detection.selection.Image|foo`,
/// `detection.condition`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DetectError {
    /// The text is not well-formed YAML (or TOML, for a field mapping).
    #[error("{file}:{line}:{column}: invalid {format}: {message}")]
    Syntax { file: String, line: usize, column: usize, format: &'static str, message: String },
    /// Well-formed, but not a valid rule: a missing key, a wrong type, a bad
    /// regular expression, an unknown search identifier.
    #[error("{file}:{line}: {at}: {message}")]
    Invalid { file: String, line: usize, at: String, message: String },
    /// A valid Sigma construct that dac does not implement (aggregations,
    /// `near`, an unknown modifier, a log source the field mapping does not
    /// cover). Refused rather than ignored, so a rule never silently matches
    /// less (or more) than its author wrote.
    #[error("{file}:{line}: {at}: unsupported: {construct}")]
    Unsupported { file: String, line: usize, at: String, construct: String },
    /// The rule is over one of its [`crate::Budget`]s: it would cost the
    /// host more to parse or compile than the budget allows. `budget` is the
    /// field's name (`max_yaml_depth`, …), `limit` its value. (`what` is a
    /// `Box<str>` to keep errors small: they travel in `Result`s.)
    #[error("{file}:{line}: {at}: over the {budget} budget of {limit}: {what}")]
    OverBudget { file: String, line: usize, at: String, budget: &'static str, limit: usize, what: Box<str> },
    /// The document is neither a seed YAML rule nor a Sigma rule.
    #[error("{file}: not a rule: {message}")]
    UnknownKind { file: String, message: String },
    /// Reading a rule file failed.
    #[error("{file}: {message}")]
    Io { file: String, message: String },
    /// The rule set could not be compiled (a prefilter automaton too large).
    #[error("rule set: {message}")]
    Compile { message: String },
}

impl DetectError {
    /// The file the error is about, when there is one.
    pub fn file(&self) -> Option<&str> {
        match self {
            DetectError::Syntax { file, .. }
            | DetectError::Invalid { file, .. }
            | DetectError::Unsupported { file, .. }
            | DetectError::OverBudget { file, .. }
            | DetectError::UnknownKind { file, .. }
            | DetectError::Io { file, .. } => Some(file),
            DetectError::Compile { .. } => None,
        }
    }

    /// The 1-based line the error points at, when there is one.
    pub fn line(&self) -> Option<usize> {
        match self {
            DetectError::Syntax { line, .. }
            | DetectError::Invalid { line, .. }
            | DetectError::Unsupported { line, .. }
            | DetectError::OverBudget { line, .. } => Some(*line),
            _ => None,
        }
    }

    /// True for [`DetectError::Unsupported`]: the rule is valid Sigma that
    /// dac refuses on purpose.
    pub fn is_unsupported(&self) -> bool {
        matches!(self, DetectError::Unsupported { .. })
    }
}
