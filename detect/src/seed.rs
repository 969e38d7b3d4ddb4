//! The seed talk's YAML rules: `name`, `uuid`, `detection_logic`.

use saphyr::{MarkedYaml, YamlData};

use crate::budget::Budget;
use crate::pattern::{Pattern, StrOp};
use crate::rule::{parse_dedup, Expr, FieldTest, Metadata, Rule, RuleKind, Severity};
use crate::yaml::{self, Ctx};
use crate::DetectError;

/// Keys a seed rule may have besides the seed's own three.
const OPTIONAL_KEYS: [&str; 7] = ["severity", "tags", "description", "references", "version", "author", "dedup"];

/// Parses a seed YAML rule.
///
/// `detection_logic` maps event fields (dotted paths) to lists of
/// substrings. The rule fires when, for every listed field, at least one of
/// its substrings occurs in it — case-sensitively, as in the seed. With one
/// field, as in both of the seed's rules, that is "any substring". A field
/// that is absent or not text never matches. `severity` defaults to medium.
/// Unknown keys are refused, so a typo (`detection_logc`) cannot produce a
/// rule that never fires.
pub fn parse_seed_yaml(file: &str, text: &str) -> Result<Rule, DetectError> {
    parse(file, text, &Budget::default())
}

/// [`parse_seed_yaml`] within `budget`.
pub(crate) fn parse(file: &str, text: &str, budget: &Budget) -> Result<Rule, DetectError> {
    from_root(file, text, &yaml::load(file, text, budget)?)
}

/// A seed rule from `text`'s YAML, already loaded as `root`.
pub(crate) fn from_root(file: &str, text: &str, root: &MarkedYaml<'_>) -> Result<Rule, DetectError> {
    let ctx = Ctx { file };
    let entries = ctx.mapping(root, "(document)")?;
    let mut name = None;
    let mut uuid = None;
    let mut logic = None;
    let mut metadata = Metadata::blank(file, text, RuleKind::SeedYaml);
    for (key, key_node, value) in &entries {
        match key.as_str() {
            "name" => name = Some(ctx.one_line(value, key)?),
            "uuid" => uuid = Some(ctx.one_line(value, key)?),
            "detection_logic" => logic = Some(*value),
            "version" => metadata.version = Some(ctx.string(value, key)?),
            "description" => metadata.description = Some(ctx.string(value, key)?),
            "severity" => {
                let level = ctx.string(value, key)?;
                metadata.severity = Severity::parse(&level).ok_or_else(|| {
                    ctx.invalid(
                        value,
                        key,
                        format!("unknown severity '{level}' (informational, low, medium, high or critical)"),
                    )
                })?;
            }
            "tags" => metadata.tags = ctx.strings(value, key, "a list of strings")?,
            "references" => metadata.references = ctx.strings(value, key, "a list of strings")?,
            "author" => metadata.authors = crate::sigma::split_authors(&ctx.string(value, key)?),
            "dedup" => {
                metadata.dedup = Some(parse_dedup(&ctx, value, |name, node, at| field_path(&ctx, name, node, at))?)
            }
            other => {
                return Err(ctx.invalid(
                    key_node,
                    other,
                    format!(
                        "unknown key (a seed rule has name, uuid, detection_logic and optionally {})",
                        OPTIONAL_KEYS.join(", ")
                    ),
                ))
            }
        }
    }
    let missing = |what: &str| ctx.invalid(root, what, "missing");
    metadata.name = name.ok_or_else(|| missing("name"))?;
    metadata.uuid = uuid.ok_or_else(|| missing("uuid"))?;
    let logic = logic.ok_or_else(|| missing("detection_logic"))?;

    let fields = ctx.mapping(logic, "detection_logic")?;
    if fields.is_empty() {
        return Err(ctx.invalid(logic, "detection_logic", "expected at least one field"));
    }
    let mut tests = Vec::new();
    for (field, key_node, values) in fields {
        let at = format!("detection_logic.{field}");
        field_path(&ctx, &field, key_node, &at)?;
        let list = match &values.data {
            YamlData::Sequence(items) if !items.is_empty() => items,
            _ => return Err(ctx.invalid(values, &at, "expected a list of strings")),
        };
        let mut patterns = Vec::new();
        for (i, item) in list.iter().enumerate() {
            let substring = yaml::scalar_text(item)
                .filter(|_| !matches!(item.data, YamlData::Sequence(_) | YamlData::Mapping(_)))
                .ok_or_else(|| ctx.invalid(item, &format!("{at}[{i}]"), "expected a list of strings"))?;
            if substring.is_empty() {
                return Err(ctx.invalid(item, &format!("{at}[{i}]"), "an empty substring would match every event"));
            }
            patterns.push(Pattern::string(StrOp::Contains, &substring, true));
        }
        tests.push(Expr::Field(FieldTest { field: Some(field), values: patterns, all: false }));
    }
    let expr = if tests.len() == 1 { tests.pop().unwrap_or(Expr::Const(false)) } else { Expr::And(tests) };
    Ok(Rule { metadata, expr, notes: Vec::new(), correlation: None })
}

/// A field name as the seed's rules write them: a dotted path.
fn field_path(ctx: &Ctx<'_>, field: &str, node: &saphyr::MarkedYaml<'_>, at: &str) -> Result<String, DetectError> {
    if field.is_empty() || field.split('.').any(str::is_empty) {
        return Err(ctx.invalid(node, at, "a field is a dotted path such as command_line or process.parent.path"));
    }
    Ok(field.to_owned())
}
