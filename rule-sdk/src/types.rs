//! The values a rule exchanges with the host, mirroring `wit/rule.wit`.

/// A typed value read from an event. Containers carry only their size; read
/// their members with a longer path (`argv.0`, `process.parent.pid`).
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Boolean(bool),
    Integer(i64),
    Float(f64),
    Text(String),
    /// Milliseconds since the Unix epoch, UTC.
    DateTime(i64),
    ObjectId(String),
    Binary(Vec<u8>),
    Array(u32),
    Document(u32),
    /// A BSON type without a variant of its own, as relaxed Extended JSON.
    Other(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Informational,
    Low,
    Medium,
    High,
    Critical,
}

/// Literals without which a rule cannot fire; the host skips the rule for
/// events in which none of `literals` occurs in any of `fields`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prefilter {
    pub fields: Vec<String>,
    pub literals: Vec<String>,
    pub ascii_case_insensitive: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metadata {
    pub name: String,
    pub uuid: String,
    pub version: String,
    pub severity: Severity,
    pub description: String,
    pub tags: Vec<String>,
    pub prefilter: Option<Prefilter>,
    /// The paths the rule reads on (nearly) every evaluation: the host
    /// hands their values with each event, so reading them costs no call
    /// out of the sandbox. Other paths are still read, through the host.
    /// At most 64.
    pub fields: Vec<String>,
}

impl Metadata {
    pub fn new(
        name: impl Into<String>,
        uuid: impl Into<String>,
        version: impl Into<String>,
        severity: Severity,
    ) -> Self {
        Metadata {
            name: name.into(),
            uuid: uuid.into(),
            version: version.into(),
            severity,
            description: String::new(),
            tags: Vec::new(),
            prefilter: None,
            fields: Vec::new(),
        }
    }
}

/// A field value that contributed to a finding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MatchedField {
    pub path: String,
    pub value: String,
}

/// What a rule reports about an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub message: String,
    pub severity: Option<Severity>,
    pub matched: Vec<MatchedField>,
}

impl Finding {
    pub fn new(message: impl Into<String>) -> Self {
        Finding { message: message.into(), severity: None, matched: Vec::new() }
    }

    /// Records a field value that made the rule fire. A value longer than
    /// [`Finding::MAX_MATCHED_VALUE_BYTES`] is cut (and says so): the
    /// alert carries the whole event anyway, and a finding that copied a
    /// 15 MB command line would exceed the host's finding-size limit and
    /// count as a fault instead of an alert.
    pub fn matched(mut self, path: impl Into<String>, value: impl Into<String>) -> Self {
        let mut value = value.into();
        if value.len() > Self::MAX_MATCHED_VALUE_BYTES {
            let mut end = Self::MAX_MATCHED_VALUE_BYTES;
            while !value.is_char_boundary(end) {
                end -= 1;
            }
            let cut = value.len() - end;
            value.truncate(end);
            value.push_str(&format!("… [{cut} bytes cut]"));
        }
        self.matched.push(MatchedField { path: path.into(), value });
        self
    }

    /// The longest matched value a finding keeps whole.
    pub const MAX_MATCHED_VALUE_BYTES: usize = 1024;

    /// Overrides the rule's severity for this finding.
    pub fn severity(mut self, severity: Severity) -> Self {
        self.severity = Some(severity);
        self
    }
}

/// What a rule's evaluate function may return.
pub trait IntoFindings {
    fn into_findings(self) -> Vec<Finding>;
}

impl IntoFindings for Vec<Finding> {
    fn into_findings(self) -> Vec<Finding> {
        self
    }
}

impl IntoFindings for Option<Finding> {
    fn into_findings(self) -> Vec<Finding> {
        self.into_iter().collect()
    }
}

impl IntoFindings for Finding {
    fn into_findings(self) -> Vec<Finding> {
        vec![self]
    }
}

/// `true` fires with an empty message; prefer returning a [`Finding`] that
/// says what matched.
impl IntoFindings for bool {
    fn into_findings(self) -> Vec<Finding> {
        if self {
            vec![Finding::new("")]
        } else {
            Vec::new()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_matched_value_is_cut_on_a_char_boundary_and_says_so() {
        let long = format!("{}é/etc/shadow", "a".repeat(1023));
        let finding = Finding::new("m").matched("command_line", long.as_str());
        let value = &finding.matched[0].value;
        assert!(value.starts_with(&"a".repeat(1023)));
        assert!(value.ends_with(&format!("… [{} bytes cut]", long.len() - 1023)), "{value}");
        let short = Finding::new("m").matched("command_line", "cat /etc/shadow");
        assert_eq!(short.matched[0].value, "cat /etc/shadow");
    }
}
