//! Sigma rules: `logsource`, `detection` and `condition`, with the field
//! names translated through a [`FieldMapping`].

pub(crate) mod condition;
mod correlation;
mod mapping;

use base64::Engine as _;
use ipnet::IpNet;
use saphyr::{MarkedYaml, YamlData};

pub use mapping::{FieldMapping, LogSource, Resolved};

use crate::budget::{Budget, Meter, RegexRefusal};
use crate::pattern::{self, Pattern, Piece, StrOp};
use crate::rule::{parse_dedup, Expr, FieldPath, FieldTest, Metadata, Rule, RuleKind, Severity};
use crate::yaml::{self, Ctx};
use crate::DetectError;

/// Top-level keys of the Sigma specification that carry no detection logic.
const METADATA_KEYS: [&str; 11] = [
    "status",
    "date",
    "modified",
    "falsepositives",
    "fields",
    "related",
    "taxonomy",
    "scope",
    "simulation",
    "regression_tests_path",
    "license",
];

/// Modifiers of the specification that dac does not implement.
const KNOWN_UNSUPPORTED_MODIFIERS: [&str; 16] = [
    "utf16le", "utf16be", "utf16", "wide", "expand", "gt", "gte", "lt", "lte", "neq", "minute", "hour", "day", "week",
    "month", "year",
];

/// Parses one Sigma rule, mapping its field names with `mapping`.
///
/// Refused with [`DetectError::Unsupported`]: aggregations and `near` in the
/// condition, `timeframe` (correlation rules are parsed, see [`Rule::correlation`]), rule collections, modifiers
/// other than contains / startswith / endswith / all / re (with i, m, s) /
/// windash / base64 / base64offset / cidr / exists / cased / fieldref, a
/// field the mapping does not know, and a `logsource` the mapping does not
/// cover. Matching is case-insensitive except for `re` and `cased` (and the
/// output of `base64`/`base64offset`, which is case-sensitive by nature).
/// Keyword searches (a plain list of values) look for each value as a
/// substring of every text field of the event.
pub fn parse_sigma(file: &str, text: &str, mapping: &FieldMapping) -> Result<Rule, DetectError> {
    parse(file, text, mapping, &Budget::default())
}

/// [`parse_sigma`] within `budget`.
pub(crate) fn parse(file: &str, text: &str, mapping: &FieldMapping, budget: &Budget) -> Result<Rule, DetectError> {
    from_root(file, text, &yaml::load(file, text, budget)?, mapping, budget)
}

/// A Sigma rule from `text`'s YAML, already loaded as `root`.
pub(crate) fn from_root(
    file: &str,
    text: &str,
    root: &MarkedYaml<'_>,
    mapping: &FieldMapping,
    budget: &Budget,
) -> Result<Rule, DetectError> {
    let ctx = Ctx { file };
    let entries = ctx.mapping(root, "(document)")?;
    let mut metadata = Metadata::blank(file, text, RuleKind::Sigma);
    let mut notes = Vec::new();
    let (mut title, mut id, mut logsource, mut detection) = (None, None, None, None);
    let (mut correlation, mut generate) = (None, None);
    let (mut date, mut modified) = (None, None);
    for (key, key_node, value) in &entries {
        let key = key.as_str();
        match key {
            "title" => title = Some(ctx.one_line(value, key)?),
            "id" => id = Some(ctx.one_line(value, key)?),
            "description" => metadata.description = Some(ctx.string(value, key)?),
            "author" => metadata.authors = split_authors(&ctx.string(value, key)?),
            "references" => metadata.references = ctx.strings(value, key, "a list of strings")?,
            "tags" => metadata.tags = ctx.strings(value, key, "a list of strings")?,
            "license" => metadata.license = Some(ctx.string(value, key)?),
            "date" => date = yaml::scalar_text(value),
            "modified" => modified = yaml::scalar_text(value),
            "level" => {
                let level = ctx.string(value, key)?;
                metadata.severity = Severity::parse(&level).ok_or_else(|| {
                    ctx.invalid(
                        value,
                        key,
                        format!("unknown level '{level}' (informational, low, medium, high or critical)"),
                    )
                })?;
            }
            "logsource" => logsource = Some((*key_node, *value)),
            "detection" => detection = Some(*value),
            // dac's extension: alert dedup, keyed by Sigma field names.
            "dedup" => {
                metadata.dedup = Some(parse_dedup(&ctx, value, |name, node, at| match mapping.resolve(name) {
                    Resolved::Path(path) => Ok(path.to_owned()),
                    Resolved::Absent => Err(ctx.invalid(
                        node,
                        at,
                        format!("field `{name}`: the field mapping `{}` says events never have it", mapping.name()),
                    )),
                    Resolved::Unknown => Err(ctx.unsupported(
                        node,
                        at,
                        format!("field `{name}`: not in the field mapping `{}`", mapping.name()),
                    )),
                })?)
            }
            "name" => metadata.sigma_name = Some(ctx.one_line(value, key)?),
            "correlation" => correlation = Some(*value),
            "generate" => {
                generate = Some(yaml::as_bool(value).ok_or_else(|| {
                    ctx.invalid(value, key, format!("expected true or false, found {}", yaml::kind(value)))
                })?)
            }
            "action" => return Err(ctx.unsupported(key_node, key, "rule collections (`action`)")),
            other if METADATA_KEYS.contains(&other) => {}
            other => notes.push(format!(
                "{}:{}: {other}: custom attribute, kept out of the rule",
                file,
                yaml::line(key_node)
            )),
        }
    }
    let missing = |what: &str, why: &str| ctx.invalid(root, what, format!("missing ({why})"));
    metadata.name = title.ok_or_else(|| missing("title", "it becomes the alert's rule_name"))?;
    metadata.uuid = id.ok_or_else(|| missing("id", "it becomes the alert's uuid"))?;
    metadata.version = modified.or(date);
    if let Some(section) = correlation {
        if let Some((_, key_node, _)) = entries.iter().find(|(k, _, _)| k == "detection" || k == "logsource") {
            return Err(ctx.invalid(
                key_node,
                "correlation",
                "a correlation has no `detection` or `logsource` of its own: put the rule it aggregates in \
                 its own document or file, and name it in `correlation.rules`",
            ));
        }
        let correlation = correlation::parse(&ctx, section, generate, mapping, &mut notes)?;
        return Ok(Rule { metadata, expr: Expr::Const(false), notes, correlation: Some(Box::new(correlation)) });
    }
    if generate.is_some() {
        let node = entries.iter().find(|(k, _, _)| k == "generate").map(|(_, n, _)| *n).unwrap_or(root);
        return Err(ctx.invalid(node, "generate", "only a correlation rule has `generate`"));
    }
    let logsource = logsource.ok_or_else(|| missing("logsource", "it says which field mapping applies"))?;
    check_logsource(&ctx, logsource.0, logsource.1, mapping)?;
    let detection = detection.ok_or_else(|| missing("detection", "there is nothing to match"))?;

    let mut searches: Vec<(String, Expr<FieldPath>)> = Vec::new();
    let mut condition = None;
    let mut meter = Meter::new(budget);
    for (name, key_node, value) in ctx.mapping(detection, "detection")? {
        let at = format!("detection.{name}");
        match name.as_str() {
            "condition" => condition = Some((key_node, value)),
            "timeframe" => return Err(ctx.unsupported(key_node, &at, "`timeframe` (correlation)")),
            _ => {
                let search = Search { ctx: &ctx, mapping, notes: &mut notes, meter: &mut meter };
                let expr = search.parse(value, &at)?;
                searches.push((name, expr));
            }
        }
    }
    let (key_node, condition) = condition.ok_or_else(|| ctx.invalid(detection, "detection.condition", "missing"))?;
    let texts: Vec<(String, &MarkedYaml<'_>)> = match &condition.data {
        YamlData::Sequence(items) => items
            .iter()
            .enumerate()
            .map(|(i, item)| Ok((ctx.string(item, &format!("detection.condition[{i}]"))?, item)))
            .collect::<Result<_, DetectError>>()?,
        _ => vec![(ctx.string(condition, "detection.condition")?, condition)],
    };
    if texts.is_empty() {
        return Err(ctx.invalid(key_node, "detection.condition", "an empty list of conditions"));
    }
    let mut alternatives = Vec::new();
    // The expression nodes of all the conditions together.
    let mut spent = 0;
    for (text, node) in &texts {
        alternatives.push(condition::parse(text, &searches, budget, &mut spent).map_err(|e| match e {
            condition::ConditionError::Invalid(m) => ctx.invalid(node, "detection.condition", m),
            condition::ConditionError::Unsupported(c) => ctx.unsupported(node, "detection.condition", c),
            condition::ConditionError::Over(exceeded, what) => ctx.over(node, "detection.condition", exceeded, what),
        })?);
    }
    // A list of conditions is the deprecated spelling of their `or`.
    let expr = if alternatives.len() == 1 { alternatives.remove(0) } else { Expr::Or(alternatives) };
    Ok(Rule { metadata, expr, notes, correlation: None })
}

/// `"A, B (Org)"` → `["A", "B (Org)"]`.
pub(crate) fn split_authors(text: &str) -> Vec<String> {
    text.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect()
}

fn check_logsource(
    ctx: &Ctx<'_>,
    key: &MarkedYaml<'_>,
    node: &MarkedYaml<'_>,
    mapping: &FieldMapping,
) -> Result<(), DetectError> {
    let mut ls = LogSource::default();
    for (key, key_node, value) in ctx.mapping(node, "logsource")? {
        let at = format!("logsource.{key}");
        match key.as_str() {
            "product" => ls.product = Some(ctx.string(value, &at)?),
            "category" => ls.category = Some(ctx.string(value, &at)?),
            "service" => ls.service = Some(ctx.string(value, &at)?),
            "definition" => {}
            _ => return Err(ctx.unsupported(key_node, &at, format!("logsource key `{key}`"))),
        }
    }
    if mapping.accepts(&ls) {
        return Ok(());
    }
    let shown = [("product", &ls.product), ("category", &ls.category), ("service", &ls.service)]
        .iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}: {v}")))
        .collect::<Vec<_>>()
        .join(", ");
    Err(ctx.unsupported(
        key,
        "logsource",
        format!(
            "log source ({shown}): the field mapping `{}` covers {}",
            mapping.name(),
            mapping.describe_logsources()
        ),
    ))
}

/// Parses the searches of one rule.
struct Search<'a, 'c> {
    ctx: &'a Ctx<'c>,
    mapping: &'a FieldMapping,
    notes: &'a mut Vec<String>,
    meter: &'a mut Meter<'c>,
}

/// The modifiers of one `Field|mod|mod` key.
#[derive(Default)]
struct Modifiers {
    op: Option<StrOp>,
    all: bool,
    re: bool,
    re_flags: String,
    windash: bool,
    base64: bool,
    base64offset: bool,
    cidr: bool,
    exists: bool,
    cased: bool,
    fieldref: bool,
}

impl Search<'_, '_> {
    fn parse(mut self, node: &MarkedYaml<'_>, at: &str) -> Result<Expr<FieldPath>, DetectError> {
        self.search(node, at)
    }

    fn search(&mut self, node: &MarkedYaml<'_>, at: &str) -> Result<Expr<FieldPath>, DetectError> {
        match &node.data {
            YamlData::Mapping(_) => self.map(node, at),
            YamlData::Sequence(items) if items.is_empty() => Err(self.ctx.invalid(node, at, "an empty list")),
            YamlData::Sequence(items) if items.iter().all(|i| matches!(i.data, YamlData::Mapping(_))) => {
                let alternatives = items
                    .iter()
                    .enumerate()
                    .map(|(i, item)| self.map(item, &format!("{at}[{i}]")))
                    .collect::<Result<_, _>>()?;
                Ok(Expr::Or(alternatives))
            }
            YamlData::Sequence(items) => {
                let is_map = |i: &MarkedYaml<'_>| matches!(i.data, YamlData::Mapping(_));
                if is_map(&items[0]) {
                    let (i, odd) = items.iter().enumerate().find(|(_, i)| !is_map(i)).unwrap_or((0, &items[0]));
                    return Err(self.ctx.invalid(
                        odd,
                        &format!("{at}[{i}]"),
                        "a list is either all maps (alternative selections) or all values (keywords)",
                    ));
                }
                let mut values = Vec::new();
                for (i, item) in items.iter().enumerate() {
                    let at = format!("{at}[{i}]");
                    let text = match &item.data {
                        YamlData::Mapping(_) | YamlData::Sequence(_) => None,
                        _ => yaml::scalar_text(item),
                    }
                    .ok_or_else(|| {
                        self.ctx.invalid(
                            item,
                            &at,
                            "a list is either all maps (alternative selections) or all values (keywords)",
                        )
                    })?;
                    let mods = Modifiers { op: Some(StrOp::Contains), ..Default::default() };
                    values.push(self.string_value(&text, &mods, item, &at)?);
                }
                Ok(Expr::Keywords { values, all: false })
            }
            _ => Err(self.ctx.invalid(
                node,
                at,
                format!("expected a map of fields or a list, found {}", yaml::kind(node)),
            )),
        }
    }

    fn map(&mut self, node: &MarkedYaml<'_>, at: &str) -> Result<Expr<FieldPath>, DetectError> {
        let entries = self.ctx.mapping(node, at)?;
        if entries.is_empty() {
            return Err(self.ctx.invalid(node, at, "an empty selection"));
        }
        let mut tests = Vec::new();
        for (key, key_node, value) in entries {
            tests.push(self.field(&key, key_node, value, &format!("{at}.{key}"))?);
        }
        Ok(if tests.len() == 1 { tests.remove(0) } else { Expr::And(tests) })
    }

    fn field(
        &mut self,
        key: &str,
        key_node: &MarkedYaml<'_>,
        value: &MarkedYaml<'_>,
        at: &str,
    ) -> Result<Expr<FieldPath>, DetectError> {
        let mut parts = key.split('|');
        let name = parts.next().unwrap_or_default();
        if name.is_empty() {
            return Err(self.ctx.unsupported(key_node, at, "a selection key without a field name (keyword modifiers)"));
        }
        let mods = self.modifiers(parts, key_node, at)?;
        let field = self.resolve(name, key_node, at)?;

        let items: Vec<&MarkedYaml<'_>> = match &value.data {
            YamlData::Sequence(items) if items.is_empty() => {
                return Err(self.ctx.invalid(value, at, "an empty list of values"))
            }
            YamlData::Sequence(items) => items.iter().collect(),
            YamlData::Mapping(_) => return Err(self.ctx.invalid(value, at, "expected a value or a list of values")),
            _ => vec![value],
        };
        if mods.exists {
            let flag = match items.as_slice() {
                [one] => yaml::as_bool(one),
                _ => None,
            };
            let flag = flag.ok_or_else(|| self.ctx.invalid(value, at, "`exists` takes true or false"))?;
            return Ok(Expr::Field(FieldTest { field, values: vec![Pattern::Exists(flag)], all: false }));
        }
        let mut values = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let at = if items.len() > 1 { format!("{at}[{i}]") } else { at.to_owned() };
            if matches!(item.data, YamlData::Sequence(_) | YamlData::Mapping(_)) {
                return Err(self.ctx.invalid(item, &at, "expected a value, found a nested list or map"));
            }
            if yaml::is_null(item) {
                if mods.op.is_some() || mods.re || mods.cidr || mods.fieldref || mods.base64 || mods.base64offset {
                    return Err(self.ctx.invalid(item, &at, "null cannot take modifiers"));
                }
                values.push(Pattern::Null);
                continue;
            }
            let text = yaml::scalar_text(item)
                .ok_or_else(|| self.ctx.invalid(item, &at, format!("expected a value, found {}", yaml::kind(item))))?;
            values.push(self.value(&text, &mods, item, &at)?);
        }
        if field.is_none() {
            self.notes.push(format!(
                "{}:{}: {at}: the field mapping says events have no `{name}`; this test only sees an absent field",
                self.ctx.file,
                yaml::line(key_node)
            ));
        }
        Ok(Expr::Field(FieldTest { field, values, all: mods.all }))
    }

    fn resolve(&self, name: &str, node: &MarkedYaml<'_>, at: &str) -> Result<FieldPath, DetectError> {
        match self.mapping.resolve(name) {
            Resolved::Path(path) => Ok(Some(path.to_owned())),
            Resolved::Absent => Ok(None),
            Resolved::Unknown => Err(self.ctx.unsupported(
                node,
                at,
                format!(
                    "field `{name}`: not in the field mapping `{}` (it maps {})",
                    self.mapping.name(),
                    self.mapping.sigma_fields().collect::<Vec<_>>().join(", ")
                ),
            )),
        }
    }

    fn modifiers<'k>(
        &self,
        parts: impl Iterator<Item = &'k str>,
        node: &MarkedYaml<'_>,
        at: &str,
    ) -> Result<Modifiers, DetectError> {
        let mut m = Modifiers::default();
        let mut seen: Vec<&str> = Vec::new();
        for part in parts {
            if seen.contains(&part) {
                return Err(self.ctx.invalid(node, at, format!("modifier `{part}` given twice")));
            }
            seen.push(part);
            let op = |m: &mut Modifiers, op| {
                if m.op.replace(op).is_some() {
                    Err(self.ctx.invalid(node, at, "only one of contains, startswith and endswith"))
                } else {
                    Ok(())
                }
            };
            match part {
                "contains" => op(&mut m, StrOp::Contains)?,
                "startswith" => op(&mut m, StrOp::StartsWith)?,
                "endswith" => op(&mut m, StrOp::EndsWith)?,
                "all" => m.all = true,
                "re" => m.re = true,
                "i" | "m" | "s" if m.re => m.re_flags.push_str(part),
                "i" | "m" | "s" => {
                    return Err(self.ctx.invalid(node, at, format!("modifier `{part}` only applies after `re`")))
                }
                "windash" => m.windash = true,
                "base64" => m.base64 = true,
                "base64offset" => m.base64offset = true,
                "cidr" => m.cidr = true,
                "exists" => m.exists = true,
                "cased" => m.cased = true,
                "fieldref" => m.fieldref = true,
                known if KNOWN_UNSUPPORTED_MODIFIERS.contains(&known) => {
                    return Err(self.ctx.unsupported(node, at, format!("modifier `{known}`")))
                }
                "" => return Err(self.ctx.invalid(node, at, "an empty modifier (`||`)")),
                other => return Err(self.ctx.unsupported(node, at, format!("unknown modifier `{other}`"))),
            }
        }
        let conflict = |what: &str| Err(self.ctx.invalid(node, at, format!("modifier conflict: {what}")));
        let transforms = m.windash || m.base64 || m.base64offset;
        if m.exists && seen.len() > 1 {
            return conflict("`exists` stands alone");
        }
        if m.re && (m.op.is_some() || transforms || m.cidr || m.cased || m.fieldref) {
            return conflict("`re` combines only with `i`, `m`, `s` and `all`");
        }
        if m.cidr && (m.op.is_some() || transforms || m.cased || m.fieldref) {
            return conflict("`cidr` combines only with `all`");
        }
        if m.fieldref && transforms {
            return conflict("`fieldref` does not combine with windash or base64");
        }
        if m.base64 && m.base64offset {
            return conflict("`base64` and `base64offset` together");
        }
        if m.base64offset && m.op != Some(StrOp::Contains) {
            return conflict("`base64offset` needs `contains` (its output is a substring)");
        }
        Ok(m)
    }

    fn value(
        &mut self,
        text: &str,
        mods: &Modifiers,
        node: &MarkedYaml<'_>,
        at: &str,
    ) -> Result<Pattern<FieldPath>, DetectError> {
        if mods.re {
            let source = if mods.re_flags.is_empty() { text.to_owned() } else { format!("(?{}){text}", mods.re_flags) };
            return self.meter.regex(&source).map(Pattern::Regex).map_err(|e| match e {
                RegexRefusal::Over(exceeded) => self.ctx.over(node, at, exceeded, "a regular expression"),
                RegexRefusal::Invalid(e) => self.ctx.invalid(node, at, format!("invalid regular expression: {e}")),
            });
        }
        if mods.cidr {
            let net = text
                .parse::<IpNet>()
                .or_else(|_| text.parse::<std::net::IpAddr>().map(IpNet::from))
                .map_err(|_| self.ctx.invalid(node, at, format!("`{text}` is not a CIDR network")))?;
            return Ok(Pattern::Cidr(net.trunc()));
        }
        if mods.fieldref {
            let other = self.resolve(text, node, at)?;
            return Ok(Pattern::FieldRef { other, op: mods.op.unwrap_or(StrOp::Equals), cased: mods.cased });
        }
        self.string_value(text, mods, node, at)
    }

    /// A string value through windash, base64 and the string operators.
    fn string_value(
        &mut self,
        text: &str,
        mods: &Modifiers,
        node: &MarkedYaml<'_>,
        at: &str,
    ) -> Result<Pattern<FieldPath>, DetectError> {
        let variants = if mods.windash {
            windash_variants(text).ok_or_else(|| {
                self.ctx.unsupported(node, at, "`windash` on a value with more than 4 dashes (too many variants)")
            })?
        } else {
            vec![text.to_owned()]
        };
        let spelled = if mods.base64offset { 3 * variants.len() } else { variants.len() };
        if let Err(exceeded) = self.meter.values(spelled) {
            let spent = self.meter.values_spent();
            let how = if spelled > 1 {
                format!(" (this one spelled {spelled} ways by its modifiers)")
            } else {
                String::new()
            };
            return Err(self.ctx.over(node, at, exceeded, format!("{spent} values with this one{how}")));
        }
        let op = mods.op.unwrap_or(StrOp::Equals);
        let mut patterns = Vec::new();
        for variant in variants {
            if mods.base64 || mods.base64offset {
                let pieces = pattern::parse_wildcards(&variant);
                let plain = match pieces.as_slice() {
                    [] => String::new(),
                    [Piece::Lit(lit)] => lit.clone(),
                    _ => {
                        return Err(self.ctx.unsupported(node, at, "`base64`/`base64offset` of a value with wildcards"))
                    }
                };
                let encoded = if mods.base64 {
                    vec![base64::engine::general_purpose::STANDARD.encode(plain.as_bytes())]
                } else {
                    base64_offsets(plain.as_bytes())
                };
                patterns.extend(encoded.into_iter().map(|e| Pattern::string(op, &e, true)));
                continue;
            }
            let mut pieces = pattern::parse_wildcards(&variant);
            if matches!(op, StrOp::Contains | StrOp::EndsWith) {
                pieces.insert(0, Piece::Star);
            }
            if matches!(op, StrOp::Contains | StrOp::StartsWith) {
                pieces.push(Piece::Star);
            }
            pieces.dedup_by(|a, b| *a == Piece::Star && *b == Piece::Star);
            let p = pattern::from_pieces(&pieces, mods.cased, self.meter).map_err(|e| match e {
                RegexRefusal::Over(exceeded) => {
                    self.ctx.over(node, at, exceeded, "a wildcard value compiled to a regular expression")
                }
                RegexRefusal::Invalid(e) => self.ctx.invalid(node, at, format!("value too complex: {e}")),
            })?;
            patterns.push(p);
        }
        Ok(if patterns.len() == 1 { patterns.remove(0) } else { Pattern::AnyOf(patterns) })
    }
}

/// Every spelling of a command-line switch: each `-` or `/` that starts a
/// word (regex `\B[-/]\b`, as pySigma's `windash`: not after a word
/// character, before one) as `-`, `/`, en dash, em dash or horizontal bar.
/// `None` past 4 switches (625 variants).
fn windash_variants(text: &str) -> Option<Vec<String>> {
    const DASHES: [char; 5] = ['-', '/', '\u{2013}', '\u{2014}', '\u{2015}'];
    let chars: Vec<char> = text.chars().collect();
    let word = |c: char| c.is_alphanumeric() || c == '_';
    let positions: Vec<usize> = (0..chars.len())
        .filter(|&i| {
            matches!(chars[i], '-' | '/')
                && (i == 0 || !word(chars[i - 1]))
                && chars.get(i + 1).is_some_and(|&c| word(c))
        })
        .collect();
    if positions.len() > 4 {
        return None;
    }
    let mut out = vec![chars.clone()];
    for &pos in &positions {
        out = out
            .into_iter()
            .flat_map(|v| {
                DASHES.iter().map(move |&d| {
                    let mut v = v.clone();
                    v[pos] = d;
                    v
                })
            })
            .collect();
    }
    let mut strings: Vec<String> = out.into_iter().map(|v| v.into_iter().collect()).collect();
    strings.dedup();
    Some(strings)
}

/// The three base64 renderings of `value` at every byte offset, trimmed to
/// the characters that do not depend on the surrounding bytes (as pySigma).
fn base64_offsets(value: &[u8]) -> Vec<String> {
    const START: [usize; 3] = [0, 2, 3];
    const END_TRIM: [usize; 3] = [0, 3, 2];
    let mut out = Vec::new();
    for i in 0..3 {
        let mut padded = vec![b' '; i];
        padded.extend_from_slice(value);
        let encoded = base64::engine::general_purpose::STANDARD.encode(&padded);
        let end = encoded.len().saturating_sub(END_TRIM[(value.len() + i) % 3]);
        let piece = encoded.get(START[i]..end).unwrap_or_default().to_owned();
        if !out.contains(&piece) {
            out.push(piece);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windash_spells_every_switch_every_way() {
        let v = windash_variants("-e x -p").unwrap();
        assert_eq!(v.len(), 25);
        assert!(v.contains(&"/e x \u{2014}p".to_string()));
        assert_eq!(windash_variants("a-b").unwrap(), vec!["a-b".to_string()]);
        // Only the dash that starts a word: the second of `--`, one after a quote.
        let v = windash_variants("--foo '-e").unwrap();
        assert_eq!(v.len(), 25);
        assert!(v.contains(&"-/foo '\u{2013}e".to_string()));
        assert!(windash_variants("x - y").unwrap().len() == 1);
        assert!(windash_variants("-a -b -c -d -e").is_none());
    }

    #[test]
    fn base64offset_matches_pysigma() {
        // pySigma's documented example: base64offset of "/bin/bash".
        assert_eq!(base64_offsets(b"/bin/bash"), vec!["L2Jpbi9iYXNo", "9iaW4vYmFza", "vYmluL2Jhc2"]);
    }
}
