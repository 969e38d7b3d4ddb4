//! A thin, located view of a YAML document: every accessor that can fail
//! returns a [`DetectError`] naming the file, the line and the key path.

use saphyr::{LoadableYamlNode, MarkedYaml, Scalar, YamlData};

use crate::DetectError;

/// Where a node is: the file, and the key path leading to it.
#[derive(Clone, Copy)]
pub(crate) struct Ctx<'a> {
    pub file: &'a str,
}

impl Ctx<'_> {
    pub fn invalid(&self, node: &MarkedYaml<'_>, at: &str, message: impl Into<String>) -> DetectError {
        DetectError::Invalid {
            file: self.file.to_owned(),
            line: line(node),
            at: at.to_owned(),
            message: message.into(),
        }
    }

    pub fn unsupported(&self, node: &MarkedYaml<'_>, at: &str, construct: impl Into<String>) -> DetectError {
        DetectError::Unsupported {
            file: self.file.to_owned(),
            line: line(node),
            at: at.to_owned(),
            construct: construct.into(),
        }
    }

    /// The node must be a mapping; returns its entries with string keys.
    pub fn mapping<'n, 'i>(
        &self,
        node: &'n MarkedYaml<'i>,
        at: &str,
    ) -> Result<Vec<(String, &'n MarkedYaml<'i>, &'n MarkedYaml<'i>)>, DetectError> {
        match &node.data {
            YamlData::Mapping(map) => map
                .iter()
                .map(|(k, v)| match scalar_text(k) {
                    Some(key) => Ok((key, k, v)),
                    None => Err(self.invalid(k, at, "keys must be plain strings")),
                })
                .collect(),
            _ => Err(self.invalid(node, at, format!("expected a mapping, found {}", kind(node)))),
        }
    }

    /// The node must be a string scalar (numbers and booleans are accepted
    /// and rendered as written, since YAML turns `version: 1` into a number).
    pub fn string(&self, node: &MarkedYaml<'_>, at: &str) -> Result<String, DetectError> {
        scalar_text(node).ok_or_else(|| self.invalid(node, at, format!("expected a string, found {}", kind(node))))
    }

    /// A list of strings; `what` names the element in the error.
    pub fn strings(&self, node: &MarkedYaml<'_>, at: &str, what: &str) -> Result<Vec<String>, DetectError> {
        match &node.data {
            YamlData::Sequence(items) => items
                .iter()
                .enumerate()
                .map(|(i, item)| {
                    scalar_text(item).ok_or_else(|| {
                        self.invalid(item, &format!("{at}[{i}]"), format!("expected {what}, found {}", kind(item)))
                    })
                })
                .collect(),
            _ => Err(self.invalid(node, at, format!("expected {what}, found {}", kind(node)))),
        }
    }
}

/// Parses exactly one YAML document.
pub(crate) fn load<'i>(file: &str, text: &'i str) -> Result<MarkedYaml<'i>, DetectError> {
    let mut docs = MarkedYaml::load_from_str(text).map_err(|e| DetectError::Syntax {
        file: file.to_owned(),
        line: e.marker().line(),
        column: e.marker().col() + 1,
        format: "YAML",
        message: e.info().to_owned(),
    })?;
    match docs.len() {
        0 => Err(DetectError::UnknownKind { file: file.to_owned(), message: "the file holds no YAML document".into() }),
        1 => Ok(docs.remove(0)),
        n => Err(DetectError::Unsupported {
            file: file.to_owned(),
            line: line(&docs[1]),
            at: "(document)".into(),
            construct: format!("{n} YAML documents in one file (Sigma rule collections / `action: global`)"),
        }),
    }
}

pub(crate) fn line(node: &MarkedYaml<'_>) -> usize {
    node.span.start.line().max(1)
}

/// A scalar as text; `None` for null, containers and anything else.
pub(crate) fn scalar_text(node: &MarkedYaml<'_>) -> Option<String> {
    match &node.data {
        YamlData::Value(scalar) => match scalar {
            Scalar::String(s) => Some(s.to_string()),
            Scalar::Integer(i) => Some(i.to_string()),
            Scalar::FloatingPoint(f) => Some(f.to_string()),
            Scalar::Boolean(b) => Some(b.to_string()),
            Scalar::Null => None,
        },
        YamlData::Representation(s, _, _) => Some(s.to_string()),
        _ => None,
    }
}

pub(crate) fn is_null(node: &MarkedYaml<'_>) -> bool {
    matches!(&node.data, YamlData::Value(Scalar::Null))
}

pub(crate) fn as_bool(node: &MarkedYaml<'_>) -> Option<bool> {
    match &node.data {
        YamlData::Value(Scalar::Boolean(b)) => Some(*b),
        YamlData::Value(Scalar::String(s)) | YamlData::Representation(s, _, _) => match s.as_ref() {
            "true" | "True" | "TRUE" => Some(true),
            "false" | "False" | "FALSE" => Some(false),
            _ => None,
        },
        _ => None,
    }
}

pub(crate) fn kind(node: &MarkedYaml<'_>) -> &'static str {
    match &node.data {
        YamlData::Value(Scalar::Null) => "null",
        YamlData::Value(Scalar::Boolean(_)) => "a boolean",
        YamlData::Value(Scalar::Integer(_)) | YamlData::Value(Scalar::FloatingPoint(_)) => "a number",
        YamlData::Value(Scalar::String(_)) | YamlData::Representation(..) => "a string",
        YamlData::Sequence(_) => "a list",
        YamlData::Mapping(_) => "a mapping",
        YamlData::Tagged(..) => "a tagged value",
        YamlData::Alias(_) => "an alias",
        YamlData::BadValue => "an invalid value",
    }
}
