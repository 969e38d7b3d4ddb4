//! A thin, located view of a YAML document: every accessor that can fail
//! returns a [`DetectError`] naming the file, the line and the key path.

use saphyr::{LoadableYamlNode, MarkedYaml, Scalar, YamlData};
use saphyr_parser::{Event, Parser, ScanError};

use crate::budget::{Budget, Exceeded};
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

    pub fn over(&self, node: &MarkedYaml<'_>, at: &str, exceeded: Exceeded, what: impl Into<String>) -> DetectError {
        DetectError::OverBudget {
            file: self.file.to_owned(),
            line: line(node),
            at: at.to_owned(),
            budget: exceeded.budget,
            limit: exceeded.limit,
            what: what.into().into_boxed_str(),
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

    /// A string that is printed on one line (a rule's name, its id): no
    /// control characters, so it cannot break a log line or an alert.
    pub fn one_line(&self, node: &MarkedYaml<'_>, at: &str) -> Result<String, DetectError> {
        let text = self.string(node, at)?;
        if text.chars().any(char::is_control) {
            return Err(self.invalid(node, at, "a control character (a newline, a tab, …) in a one-line value"));
        }
        Ok(text)
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

/// Parses exactly one YAML document, within `budget`'s YAML limits.
pub(crate) fn load<'i>(file: &str, text: &'i str, budget: &Budget) -> Result<MarkedYaml<'i>, DetectError> {
    let mut docs = load_all(file, text, budget)?;
    match docs.len() {
        1 => Ok(docs.remove(0)),
        n => Err(DetectError::Unsupported {
            file: file.to_owned(),
            line: line(&docs[1]),
            at: "(document)".into(),
            construct: format!("{n} YAML documents where one rule is expected"),
        }),
    }
}

/// Parses every YAML document of `text` (`---` separated; at least one),
/// within `budget`'s YAML limits for all of them together.
pub(crate) fn load_all<'i>(file: &str, text: &'i str, budget: &Budget) -> Result<Vec<MarkedYaml<'i>>, DetectError> {
    let syntax = |e: ScanError| DetectError::Syntax {
        file: file.to_owned(),
        line: e.marker().line(),
        column: e.marker().col() + 1,
        format: "YAML",
        message: e.info().to_owned(),
    };
    // Measured on the parser's events first: building the tree of a document
    // nested 10,000 deep, or of an alias bomb, is what must not happen.
    if let Err(refusal) = measure(text, budget) {
        return Err(match refusal {
            Refusal::Syntax(e) => syntax(e),
            Refusal::Over { exceeded, line, what } => DetectError::OverBudget {
                file: file.to_owned(),
                line,
                at: "(document)".into(),
                budget: exceeded.budget,
                limit: exceeded.limit,
                what: what.into_boxed_str(),
            },
        });
    }
    let docs = MarkedYaml::load_from_str(text).map_err(syntax)?;
    if docs.is_empty() {
        return Err(DetectError::UnknownKind {
            file: file.to_owned(),
            message: "the file holds no YAML document".into(),
        });
    }
    Ok(docs)
}

enum Refusal {
    Syntax(ScanError),
    Over { exceeded: Exceeded, line: usize, what: String },
}

/// What a node costs once its aliases are expanded.
#[derive(Clone, Copy, Default)]
struct Cost {
    nodes: usize,
    bytes: usize,
    /// Collections nested inside it, itself included.
    depth: usize,
}

/// Walks the document's parse events (the parser keeps its own stack, so
/// this never recurses) and checks nesting and the expanded size against
/// `budget`. An alias costs what its anchor cost, nested aliases included,
/// which is what the loader's tree will hold.
fn measure(text: &str, budget: &Budget) -> Result<(), Refusal> {
    /// A collection not closed yet.
    struct Open {
        /// The anchor it defines (0 for none).
        anchor: usize,
        /// The document's totals when it opened.
        at_start: Cost,
        /// The deepest nesting seen inside it so far.
        deepest_below: usize,
    }
    let mut open: Vec<Open> = Vec::new();
    let mut anchors: std::collections::HashMap<usize, Cost> = std::collections::HashMap::new();
    let mut total = Cost::default();
    for event in Parser::new_from_str(text) {
        let (event, span) = event.map_err(Refusal::Syntax)?;
        let line = span.start.line().max(1);
        let over = |budget: &'static str, limit: usize, what: String| Refusal::Over {
            exceeded: Exceeded { budget, limit },
            line,
            what,
        };
        // The cost this event adds, and the anchor it defines.
        let (cost, anchor) = match event {
            Event::Scalar(value, _, anchor, _) => (Cost { nodes: 1, bytes: value.len(), depth: 0 }, anchor),
            Event::Alias(id) => (anchors.get(&id).copied().unwrap_or_default(), 0),
            Event::SequenceStart(anchor, _) | Event::MappingStart(anchor, _) => {
                open.push(Open { anchor, at_start: total, deepest_below: 0 });
                total.nodes = total.nodes.saturating_add(1);
                if open.len() > budget.max_yaml_depth {
                    return Err(over(
                        "max_yaml_depth",
                        budget.max_yaml_depth,
                        format!("a list or mapping nested {} deep", open.len()),
                    ));
                }
                (Cost::default(), 0)
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let Some(Open { anchor, at_start, deepest_below }) = open.pop() else { continue };
                let depth = deepest_below + 1;
                if let Some(parent) = open.last_mut() {
                    parent.deepest_below = parent.deepest_below.max(depth);
                }
                if anchor != 0 {
                    let cost = Cost { nodes: total.nodes - at_start.nodes, bytes: total.bytes - at_start.bytes, depth };
                    anchors.insert(anchor, cost);
                }
                continue;
            }
            _ => continue,
        };
        total.nodes = total.nodes.saturating_add(cost.nodes);
        total.bytes = total.bytes.saturating_add(cost.bytes);
        if cost.depth > 0 {
            let depth = open.len() + cost.depth;
            if depth > budget.max_yaml_depth {
                return Err(over(
                    "max_yaml_depth",
                    budget.max_yaml_depth,
                    format!("an alias that expands to a list or mapping nested {depth} deep"),
                ));
            }
            if let Some(parent) = open.last_mut() {
                parent.deepest_below = parent.deepest_below.max(cost.depth);
            }
        }
        if anchor != 0 {
            anchors.insert(anchor, cost);
        }
        if total.nodes > budget.max_yaml_nodes {
            return Err(over(
                "max_yaml_nodes",
                budget.max_yaml_nodes,
                format!("{} nodes or more with aliases expanded", total.nodes),
            ));
        }
        if total.bytes > budget.max_yaml_bytes {
            return Err(over(
                "max_yaml_bytes",
                budget.max_yaml_bytes,
                format!("{} bytes of text or more with aliases expanded", total.bytes),
            ));
        }
    }
    Ok(())
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
