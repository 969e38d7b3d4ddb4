//! The intermediate form both rule languages compile to: metadata plus a
//! boolean expression over field tests.

use std::fmt;

use crate::pattern::Pattern;

/// How bad a detection is; the same five levels as the WIT contract and
/// Sigma's `level`. The one `Severity` of every dac crate (the rule SDK
/// mirrors the WIT's for guests).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Informational,
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    /// Parses Sigma's `level` / the seed YAML's `severity` (lower case).
    pub fn parse(text: &str) -> Option<Severity> {
        Some(match text {
            "informational" => Severity::Informational,
            "low" => Severity::Low,
            "medium" => Severity::Medium,
            "high" => Severity::High,
            "critical" => Severity::Critical,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Informational => "informational",
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a rule is written in, which decides where it runs. The one
/// `RuleKind` of every dac crate: this crate parses the two declarative
/// kinds (and its [`Metadata::kind`] is always one of them); a component is
/// code, run in dac's sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RuleKind {
    /// A WebAssembly component targeting the `dac:rule` world.
    Component,
    /// The seed talk's `name` / `uuid` / `detection_logic` YAML.
    SeedYaml,
    Sigma,
}

impl RuleKind {
    /// YAML or Sigma: data the host interprets, not code it sandboxes.
    pub fn is_declarative(self) -> bool {
        self != RuleKind::Component
    }
}

/// What an alert says about the rule that raised it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metadata {
    /// Seed `name`; Sigma `title`.
    pub name: String,
    /// Seed `uuid`; Sigma `id`.
    pub uuid: String,
    /// Seed `version`; Sigma `modified`, else `date` (Sigma has no version).
    pub version: Option<String>,
    /// Seed `severity` (default medium); Sigma `level` (default medium).
    pub severity: Severity,
    pub tags: Vec<String>,
    pub description: Option<String>,
    /// Sigma `author`, split on commas. The Detection Rule License asks that
    /// these are credited wherever the rule or its matches are shown.
    pub authors: Vec<String>,
    pub references: Vec<String>,
    /// Sigma `license`, when the rule states one.
    pub license: Option<String>,
    /// The file name the rule was loaded from, as given to the parser.
    pub source: String,
    /// `sha256:` and the hex SHA-256 of the rule text, like an alert's
    /// `rule_hash` for a component.
    pub sha256: String,
    pub kind: RuleKind,
    /// The rule's `dedup` declaration, if it has one.
    pub dedup: Option<Dedup>,
    /// Sigma `name`: the unique name correlation rules may refer to the
    /// rule by, instead of its id.
    pub sigma_name: Option<String>,
}

/// Alert dedup a rule declares (`dedup: {key: [fields], window: 10m}`):
/// its matches with the same values of the `key` fields within one
/// `window` of event time fold into one alert. The runtime's alert policy
/// applies it (a policy file's entry for the same rule takes precedence).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dedup {
    /// Event fields (dotted paths; a Sigma rule's are mapped like its
    /// detection's).
    pub key: Vec<String>,
    /// The window as written (`10m`).
    pub window: String,
    pub window_ms: i64,
}

/// A duration as rules write it — `30s`, `5m`, `1h`, `2d`, and as pySigma
/// and rsigma also accept for correlations, `1w`, `1M` (30.436875 days)
/// and `1y` (365.2425 days) — in milliseconds; `None` for anything else,
/// zero and overflow. Dedup windows and correlation timespans alike.
pub fn parse_timespan(text: &str) -> Option<i64> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit())?;
    let (number, unit) = text.split_at(split);
    let number: i64 = number.parse().ok().filter(|&n| n > 0)?;
    let unit_ms: i64 = match unit {
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        "w" => 604_800_000,
        "M" => 2_629_746_000,
        "y" => 31_556_952_000,
        _ => return None,
    };
    number.checked_mul(unit_ms)
}

/// Reads a `dedup` mapping (`key`: a list of fields, `window`: a duration),
/// each key field passed through `field` (a Sigma rule maps its names).
pub(crate) fn parse_dedup(
    ctx: &crate::yaml::Ctx<'_>,
    node: &saphyr::MarkedYaml<'_>,
    mut field: impl FnMut(&str, &saphyr::MarkedYaml<'_>, &str) -> Result<String, crate::DetectError>,
) -> Result<Dedup, crate::DetectError> {
    let (mut key, mut window) = (None, None);
    for (name, name_node, value) in ctx.mapping(node, "dedup")? {
        let at = format!("dedup.{name}");
        match name.as_str() {
            "key" => {
                let names = ctx.strings(value, &at, "a list of fields")?;
                if names.is_empty() {
                    return Err(ctx.invalid(value, &at, "names no field (dedup needs at least one)"));
                }
                key = Some(names.iter().map(|n| field(n, value, &at)).collect::<Result<Vec<_>, _>>()?);
            }
            "window" => {
                let text = ctx.string(value, &at)?;
                let ms = parse_timespan(&text).ok_or_else(|| {
                    ctx.invalid(value, &at, format!("'{text}' is not a duration like 30s, 10m, 1h or 2d"))
                })?;
                window = Some((text, ms));
            }
            other => {
                return Err(ctx.invalid(name_node, &at, format!("unknown key `{other}` (dedup has key and window)")))
            }
        }
    }
    let key = key.ok_or_else(|| ctx.invalid(node, "dedup.key", "missing (the fields whose values make a repeat)"))?;
    let (window, window_ms) = window.ok_or_else(|| ctx.invalid(node, "dedup.window", "missing (e.g. 10m)"))?;
    Ok(Dedup { key, window, window_ms })
}

impl Metadata {
    /// The metadata of a rule in `file` (content `text`) before its keys
    /// are read: the defaults every kind of rule starts from.
    pub(crate) fn blank(file: &str, text: &str, kind: RuleKind) -> Metadata {
        Metadata {
            name: String::new(),
            uuid: String::new(),
            version: None,
            severity: Severity::Medium,
            tags: Vec::new(),
            description: None,
            authors: Vec::new(),
            references: Vec::new(),
            license: None,
            source: file.to_owned(),
            sha256: crate::sha256_hex(text),
            kind,
            dedup: None,
            sigma_name: None,
        }
    }
}

/// One parsed rule: metadata and a detection expression, ready for
/// [`RuleSet::compile`](crate::RuleSet::compile).
#[derive(Debug, Clone)]
pub struct Rule {
    pub(crate) metadata: Metadata,
    pub(crate) expr: Expr<FieldPath>,
    pub(crate) notes: Vec<String>,
    /// A Sigma correlation rule's section (its `expr` never matches: it
    /// fires on other rules' matches, see [`crate::Correlator`]).
    pub(crate) correlation: Option<Box<crate::correlation::Correlation>>,
}

impl Rule {
    /// The correlation, when this is a Sigma correlation rule.
    pub fn correlation(&self) -> Option<&crate::correlation::Correlation> {
        self.correlation.as_deref()
    }

    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    /// Things worth knowing that do not stop the rule from loading, e.g. a
    /// Sigma field the mapping declares absent, which makes a selection
    /// unable to match.
    pub fn notes(&self) -> &[String] {
        &self.notes
    }

    /// Whether the rule searches every text value of the event (Sigma
    /// keywords) rather than named fields only.
    pub fn searches_keywords(&self) -> bool {
        self.expr.has_keywords()
    }

    /// The event fields (dotted paths) the rule reads.
    pub fn fields(&self) -> Vec<String> {
        let mut out = Vec::new();
        self.expr.visit_fields(&mut |f: &FieldPath| {
            if let Some(path) = f {
                if !out.contains(path) {
                    out.push(path.clone());
                }
            }
        });
        out
    }
}

/// A field as a rule names it: a dotted event path, or `None` for a field
/// the mapping declares absent from events.
pub(crate) type FieldPath = Option<String>;

/// A boolean expression over tests of event fields. `F` is how a field is
/// named: a path while parsing, an index into the set's field table once
/// compiled.
#[derive(Debug, Clone)]
pub(crate) enum Expr<F> {
    Const(bool),
    And(Vec<Expr<F>>),
    Or(Vec<Expr<F>>),
    Not(Box<Expr<F>>),
    /// One field against one or more values.
    Field(FieldTest<F>),
    /// Values searched in every text field of the event (Sigma keywords).
    Keywords {
        values: Vec<Pattern<F>>,
        all: bool,
    },
}

#[derive(Debug, Clone)]
pub(crate) struct FieldTest<F> {
    pub field: F,
    pub values: Vec<Pattern<F>>,
    /// All values must match (Sigma `|all`); otherwise any one.
    pub all: bool,
}

impl<F> Expr<F> {
    /// Nodes and values: what a copy of the expression costs, for the
    /// condition's `max_expression_nodes` budget.
    pub fn size(&self) -> usize {
        match self {
            Expr::Const(_) => 1,
            Expr::And(xs) | Expr::Or(xs) => xs.iter().map(Expr::size).fold(1, usize::saturating_add),
            Expr::Not(x) => x.size().saturating_add(1),
            Expr::Field(t) => 1 + t.values.len(),
            Expr::Keywords { values, .. } => 1 + values.len(),
        }
    }

    pub fn visit_fields(&self, visit: &mut impl FnMut(&F)) {
        match self {
            Expr::Const(_) => {}
            Expr::And(xs) | Expr::Or(xs) => xs.iter().for_each(|x| x.visit_fields(visit)),
            Expr::Not(x) => x.visit_fields(visit),
            Expr::Field(t) => {
                visit(&t.field);
                t.values.iter().for_each(|p| p.visit_fields(visit));
            }
            Expr::Keywords { values, .. } => values.iter().for_each(|p| p.visit_fields(visit)),
        }
    }

    pub fn has_keywords(&self) -> bool {
        match self {
            Expr::Const(_) | Expr::Field(_) => false,
            Expr::And(xs) | Expr::Or(xs) => xs.iter().any(Expr::has_keywords),
            Expr::Not(x) => x.has_keywords(),
            Expr::Keywords { .. } => true,
        }
    }

    /// The same expression with its fields renamed.
    pub fn map_fields<G>(&self, map: &mut impl FnMut(&F) -> G) -> Expr<G> {
        match self {
            Expr::Const(b) => Expr::Const(*b),
            Expr::And(xs) => Expr::And(xs.iter().map(|x| x.map_fields(map)).collect()),
            Expr::Or(xs) => Expr::Or(xs.iter().map(|x| x.map_fields(map)).collect()),
            Expr::Not(x) => Expr::Not(Box::new(x.map_fields(map))),
            Expr::Field(t) => Expr::Field(FieldTest {
                field: map(&t.field),
                values: t.values.iter().map(|p| p.map_fields(map)).collect(),
                all: t.all,
            }),
            Expr::Keywords { values, all } => {
                Expr::Keywords { values: values.iter().map(|p| p.map_fields(map)).collect(), all: *all }
            }
        }
    }
}
