//! Which event field each Sigma field name stands for.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::DetectError;

/// Maps Sigma field names (`CommandLine`) to event paths (`command_line`)
/// and says which Sigma log sources the mapping is meant for.
///
/// The default, [`FieldMapping::linux_process_creation`], is the mapping of
/// SigmaHQ's Linux process-creation rules onto dac's exec event. Other
/// mappings are written in TOML:
///
/// ```toml
/// name = "my edr"
/// # "refuse" (default): a Sigma field not listed below refuses the rule.
/// # "keep": it is used as the event path unchanged.
/// unmapped = "refuse"
///
/// # The log sources rules may declare; keys left out match anything.
/// # Without any [[logsource]], every log source is accepted.
/// [[logsource]]
/// product = "linux"
/// category = "process_creation"
///
/// [fields]
/// Image = "process.path"
/// CommandLine = "process.command_line"
/// LogonId = false        # never present in events: tests of it see an absent field
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldMapping {
    name: String,
    logsources: Vec<LogSource>,
    fields: BTreeMap<String, Option<String>>,
    keep_unmapped: bool,
}

/// A Sigma `logsource` a mapping accepts; `None` matches any value.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSource {
    pub product: Option<String>,
    pub category: Option<String>,
    pub service: Option<String>,
}

/// What a Sigma field name becomes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolved<'a> {
    /// A dotted event path.
    Path(&'a str),
    /// Declared absent from events.
    Absent,
    /// Not in the mapping, and the mapping refuses unmapped fields.
    Unknown,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MappingFile {
    name: Option<String>,
    unmapped: Option<String>,
    #[serde(default)]
    logsource: Vec<LogSource>,
    #[serde(default)]
    fields: BTreeMap<String, FieldTarget>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum FieldTarget {
    Path(String),
    Present(bool),
}

impl Default for FieldMapping {
    fn default() -> Self {
        Self::linux_process_creation()
    }
}

impl FieldMapping {
    /// Sysmon for Linux process-creation fields onto dac's exec event, as in
    /// `example-rules/sigma/NOTICE.md`; `LogonId` has no counterpart and is absent.
    pub fn linux_process_creation() -> Self {
        let pairs: [(&str, Option<&str>); 9] = [
            ("Image", Some("path")),
            ("CommandLine", Some("command_line")),
            ("ParentImage", Some("parent_path")),
            ("ParentCommandLine", Some("parent_command_line")),
            ("User", Some("user")),
            ("CurrentDirectory", Some("cwd")),
            ("ProcessId", Some("pid")),
            ("ParentProcessId", Some("parent_pid")),
            ("LogonId", None),
        ];
        FieldMapping {
            name: "linux process_creation (default)".into(),
            logsources: vec![LogSource {
                product: Some("linux".into()),
                category: Some("process_creation".into()),
                service: None,
            }],
            fields: pairs.iter().map(|(k, v)| (k.to_string(), v.map(str::to_owned))).collect(),
            keep_unmapped: false,
        }
    }

    /// Reads a mapping from TOML text (see the type's documentation).
    pub fn from_toml(file: &str, text: &str) -> Result<Self, DetectError> {
        let parsed: MappingFile = toml::from_str(text).map_err(|e| {
            let offset = e.span().map(|s| s.start).unwrap_or(0).min(text.len());
            let before = text.get(..offset).unwrap_or(text);
            let line = before.matches('\n').count() + 1;
            let column = offset - before.rfind('\n').map(|i| i + 1).unwrap_or(0) + 1;
            DetectError::Syntax { file: file.into(), line, column, format: "TOML", message: e.message().to_owned() }
        })?;
        let keep_unmapped = match parsed.unmapped.as_deref() {
            None | Some("refuse") => false,
            Some("keep") => true,
            Some(other) => {
                return Err(DetectError::Invalid {
                    file: file.into(),
                    line: 1,
                    at: "unmapped".into(),
                    message: format!("expected \"refuse\" or \"keep\", found \"{other}\""),
                })
            }
        };
        let mut fields = BTreeMap::new();
        for (sigma, target) in parsed.fields {
            let target = match target {
                FieldTarget::Path(p) if !p.is_empty() && !p.split('.').any(str::is_empty) => Some(p),
                FieldTarget::Present(false) => None,
                _ => {
                    return Err(DetectError::Invalid {
                        file: file.into(),
                        line: 1,
                        at: format!("fields.{sigma}"),
                        message: "expected a dotted event path, or false for a field events never have".into(),
                    })
                }
            };
            fields.insert(sigma, target);
        }
        Ok(FieldMapping {
            name: parsed.name.unwrap_or_else(|| file.to_owned()),
            logsources: parsed.logsource,
            fields,
            keep_unmapped,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn resolve<'a>(&'a self, sigma_field: &'a str) -> Resolved<'a> {
        match self.fields.get(sigma_field) {
            Some(Some(path)) => Resolved::Path(path),
            Some(None) => Resolved::Absent,
            None if self.keep_unmapped => Resolved::Path(sigma_field),
            None => Resolved::Unknown,
        }
    }

    /// Whether a rule with this `logsource` may use the mapping.
    pub fn accepts(&self, rule: &LogSource) -> bool {
        let fits = |want: &Option<String>, have: &Option<String>| want.is_none() || want == have;
        self.logsources.is_empty()
            || self.logsources.iter().any(|ls| {
                fits(&ls.product, &rule.product)
                    && fits(&ls.category, &rule.category)
                    && fits(&ls.service, &rule.service)
            })
    }

    /// The accepted log sources, for error messages.
    pub fn describe_logsources(&self) -> String {
        let parts: Vec<String> = self
            .logsources
            .iter()
            .map(|ls| {
                [("product", &ls.product), ("category", &ls.category), ("service", &ls.service)]
                    .iter()
                    .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}: {v}")))
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .collect();
        parts.join("; ")
    }

    /// The Sigma field names the mapping knows.
    pub fn sigma_fields(&self) -> impl Iterator<Item = &str> {
        self.fields.keys().map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_mapping_round_trip_and_located_errors() {
        let m = FieldMapping::from_toml(
            "m.toml",
            "name = \"edr\"\nunmapped = \"keep\"\n[[logsource]]\nproduct = \"linux\"\n[fields]\nImage = \"process.path\"\nLogonId = false\n",
        )
        .unwrap();
        assert_eq!(m.resolve("Image"), Resolved::Path("process.path"));
        assert_eq!(m.resolve("LogonId"), Resolved::Absent);
        assert_eq!(m.resolve("Other"), Resolved::Path("Other"));
        assert!(m.accepts(&LogSource { product: Some("linux".into()), category: Some("x".into()), service: None }));
        assert!(!m.accepts(&LogSource { product: Some("windows".into()), ..Default::default() }));

        let err = FieldMapping::from_toml("m.toml", "[fields]\nImage = 3\n").unwrap_err();
        assert!(err.to_string().starts_with("m.toml:2:"), "{err}");
        let err = FieldMapping::from_toml("m.toml", "bogus = 1\n").unwrap_err();
        assert!(err.to_string().contains("unknown field"), "{err}");
        let err = FieldMapping::from_toml("m.toml", "[fields]\nImage = true\n").unwrap_err();
        assert!(err.to_string().contains("fields.Image"), "{err}");
    }

    #[test]
    fn default_mapping_is_the_notice_one() {
        let m = FieldMapping::default();
        assert_eq!(m.resolve("CommandLine"), Resolved::Path("command_line"));
        assert_eq!(m.resolve("CurrentDirectory"), Resolved::Path("cwd"));
        assert_eq!(m.resolve("LogonId"), Resolved::Absent);
        assert_eq!(m.resolve("TargetFilename"), Resolved::Unknown);
    }
}
