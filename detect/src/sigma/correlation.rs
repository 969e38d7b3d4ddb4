//! A Sigma correlation rule's `correlation` section: type, rules,
//! group-by, timespan, condition, aliases, generate. Field names are
//! mapped like a detection's; a name the mapping does not know passes
//! through as an event path (a correlation may group by any field).

use saphyr::{MarkedYaml, Scalar, YamlData};

use super::{FieldMapping, Resolved};
use crate::correlation::{Condition, Correlation, CorrelationType, FieldRef, GroupField, Op};
use crate::rule::parse_timespan;
use crate::yaml::{self, Ctx};
use crate::DetectError;

/// Referenced rules one correlation may name.
const MAX_RULES: usize = 64;
/// `group-by` fields one correlation may have.
const MAX_GROUP_BY: usize = 16;

/// Parses `correlation:`; `generate` is the top-level key's value, if
/// given (the specification's place; rsigma also reads it inside the
/// section, and so does dac).
pub(crate) fn parse(
    ctx: &Ctx<'_>,
    node: &MarkedYaml<'_>,
    generate: Option<bool>,
    mapping: &FieldMapping,
    notes: &mut Vec<String>,
) -> Result<Correlation, DetectError> {
    let (mut kind, mut rules, mut group_by, mut timespan, mut condition, mut aliases) =
        (None, None, None, None, None, None);
    let mut generate = generate;
    for (key, key_node, value) in ctx.mapping(node, "correlation")? {
        let at = format!("correlation.{key}");
        match key.as_str() {
            "type" => {
                let text = ctx.string(value, &at)?;
                kind = Some(CorrelationType::parse(&text).ok_or_else(|| {
                    ctx.invalid(
                        value,
                        &at,
                        format!(
                            "unknown type '{text}' (event_count, value_count, temporal, temporal_ordered, \
                             value_sum, value_avg, value_percentile or value_median)"
                        ),
                    )
                })?);
            }
            "rules" => {
                let list: Vec<(String, usize)> = match &value.data {
                    YamlData::Sequence(items) => items
                        .iter()
                        .enumerate()
                        .map(|(i, item)| Ok((ctx.one_line(item, &format!("{at}[{i}]"))?, yaml::line(item))))
                        .collect::<Result<_, DetectError>>()?,
                    _ => vec![(ctx.one_line(value, &at)?, yaml::line(value))],
                };
                if list.is_empty() {
                    return Err(ctx.invalid(value, &at, "names no rule (a correlation aggregates at least one)"));
                }
                if list.len() > MAX_RULES {
                    return Err(ctx.invalid(value, &at, format!("{} rules, more than {MAX_RULES}", list.len())));
                }
                for (i, (name, _)) in list.iter().enumerate() {
                    if list[..i].iter().any(|(other, _)| other == name) {
                        return Err(ctx.invalid(value, &at, format!("'{name}' is listed twice")));
                    }
                }
                rules = Some((list, value));
            }
            "group-by" => {
                let names = match &value.data {
                    YamlData::Sequence(_) => ctx.strings(value, &at, "a field name")?,
                    _ => vec![ctx.string(value, &at)?],
                };
                if names.len() > MAX_GROUP_BY {
                    return Err(ctx.invalid(value, &at, format!("{} fields, more than {MAX_GROUP_BY}", names.len())));
                }
                group_by = Some((names, value));
            }
            "timespan" | "timeframe" => {
                let text = ctx.string(value, &at)?;
                let ms = parse_timespan(&text).ok_or_else(|| {
                    ctx.invalid(value, &at, format!("'{text}' is not a duration like 30s, 5m, 1h, 2d or 1w"))
                })?;
                timespan = Some((text, ms));
            }
            "condition" => condition = Some(value),
            "aliases" => aliases = Some(value),
            "generate" => generate = Some(bool_of(ctx, value, &at)?),
            other => {
                return Err(ctx.invalid(
                    key_node,
                    &at,
                    format!(
                        "unknown key `{other}` (a correlation has type, rules, group-by, timespan, condition, \
                         aliases and generate)"
                    ),
                ))
            }
        }
    }
    let missing = |what: &str| ctx.invalid(node, &format!("correlation.{what}"), "missing");
    let kind = kind.ok_or_else(|| missing("type"))?;
    let (rules, rules_node) = rules.ok_or_else(|| missing("rules"))?;
    let (timespan, timespan_ms) = timespan.ok_or_else(|| missing("timespan"))?;
    let field = |name: &str| FieldRef { name: name.to_owned(), path: resolve(mapping, name) };

    let mut aliased_fields: Vec<(String, Vec<(String, FieldRef)>)> = Vec::new();
    if let Some(aliases) = aliases {
        for (alias, _, per_rule) in ctx.mapping(aliases, "correlation.aliases")? {
            let at = format!("correlation.aliases.{alias}");
            let mut fields = Vec::new();
            for (rule, rule_node, name) in ctx.mapping(per_rule, &at)? {
                if !rules.iter().any(|(r, _)| *r == rule) {
                    return Err(ctx.invalid(
                        rule_node,
                        &format!("{at}.{rule}"),
                        "not one of the correlation's `rules` (an alias names a field per referenced rule)",
                    ));
                }
                fields.push((rule.clone(), field(&ctx.string(name, &format!("{at}.{rule}"))?)));
            }
            aliased_fields.push((alias, fields));
        }
    }
    let group_by: Vec<GroupField> = group_by
        .map(|(names, _)| {
            names
                .iter()
                .map(|name| {
                    let aliased = aliased_fields.iter().find(|(alias, _)| alias == name).map(|(_, f)| f.clone());
                    GroupField { name: name.clone(), default: field(name), aliased: aliased.unwrap_or_default() }
                })
                .collect()
        })
        .unwrap_or_default();
    for (alias, _) in &aliased_fields {
        if !group_by.iter().any(|g| g.name == *alias) {
            notes.push(format!("{}: correlation.aliases.{alias}: not in group-by, so unused", ctx.file));
        }
    }
    for g in &group_by {
        if g.default.path.is_none() && g.aliased.is_empty() {
            notes.push(format!(
                "{}: correlation.group-by: `{}`: the field mapping says events never have it (every event \
                 groups under null)",
                ctx.file, g.name
            ));
        }
    }

    let condition = match condition {
        Some(node) => parse_condition(ctx, node, kind, &field)?,
        None => match kind {
            // The v2.2 draft and pySigma: no condition means every rule.
            CorrelationType::Temporal | CorrelationType::TemporalOrdered => {
                Condition { predicates: vec![(Op::Gte, rules.len() as f64)], fields: Vec::new(), percentile: None }
            }
            _ => return Err(missing("condition")),
        },
    };
    if kind == CorrelationType::TemporalOrdered && condition.predicates != [(Op::Gte, rules.len() as f64)] {
        return Err(ctx.invalid(
            rules_node,
            "correlation.condition",
            format!(
                "temporal_ordered matches all its rules in order: leave the condition out or write gte: {}",
                rules.len()
            ),
        ));
    }
    Ok(Correlation { kind, rules, group_by, timespan, timespan_ms, condition, generate: generate.unwrap_or(false) })
}

/// A group-by or condition field: mapped when the mapping knows it, else
/// the name itself as the event path.
fn resolve(mapping: &FieldMapping, name: &str) -> Option<String> {
    match mapping.resolve(name) {
        Resolved::Path(path) => Some(path.to_owned()),
        Resolved::Absent => None,
        Resolved::Unknown => Some(name.to_owned()),
    }
}

fn bool_of(ctx: &Ctx<'_>, node: &MarkedYaml<'_>, at: &str) -> Result<bool, DetectError> {
    yaml::as_bool(node)
        .ok_or_else(|| ctx.invalid(node, at, format!("expected true or false, found {}", yaml::kind(node))))
}

fn parse_condition(
    ctx: &Ctx<'_>,
    node: &MarkedYaml<'_>,
    kind: CorrelationType,
    field: &dyn Fn(&str) -> FieldRef,
) -> Result<Condition, DetectError> {
    if let YamlData::Value(Scalar::String(_)) | YamlData::Representation(..) = &node.data {
        return Err(ctx.unsupported(
            node,
            "correlation.condition",
            "a boolean condition over rules (the v2.2 draft for temporal types): list the rules and use gte",
        ));
    }
    let mut condition = Condition { predicates: Vec::new(), fields: Vec::new(), percentile: None };
    for (key, key_node, value) in ctx.mapping(node, "correlation.condition")? {
        let at = format!("correlation.condition.{key}");
        if let Some(op) = Op::parse(&key) {
            let threshold = number_of(value)
                .ok_or_else(|| ctx.invalid(value, &at, format!("expected a number, found {}", yaml::kind(value))))?;
            if condition.predicates.iter().any(|(o, _)| *o == op) {
                return Err(ctx.invalid(key_node, &at, "given twice"));
            }
            condition.predicates.push((op, threshold));
            continue;
        }
        match key.as_str() {
            "field" => {
                let names = match &value.data {
                    YamlData::Sequence(_) => ctx.strings(value, &at, "a field name")?,
                    _ => vec![ctx.string(value, &at)?],
                };
                if names.is_empty() {
                    return Err(ctx.invalid(value, &at, "names no field"));
                }
                if names.len() > 1 && kind != CorrelationType::ValueCount {
                    return Err(ctx.invalid(value, &at, format!("{kind} aggregates one field, not {}", names.len())));
                }
                condition.fields = names.iter().map(|n| field(n)).collect();
            }
            "percentile" => {
                let rank = number_of(value)
                    .filter(|r| (0.0..=100.0).contains(r))
                    .ok_or_else(|| ctx.invalid(value, &at, "expected a number from 0 to 100"))?;
                condition.percentile = Some(rank);
            }
            other => {
                return Err(ctx.invalid(
                    key_node,
                    &at,
                    format!("unknown key `{other}` (gt, gte, lt, lte, eq, neq, field, percentile)"),
                ))
            }
        }
    }
    if condition.predicates.is_empty() {
        return Err(ctx.invalid(node, "correlation.condition", "no comparison (gt, gte, lt, lte, eq or neq)"));
    }
    if kind.reads_field() && condition.fields.is_empty() {
        return Err(ctx.invalid(node, "correlation.condition.field", format!("missing ({kind} aggregates a field)")));
    }
    if !kind.reads_field() && !condition.fields.is_empty() {
        return Err(ctx.invalid(node, "correlation.condition.field", format!("{kind} reads no field")));
    }
    if condition.percentile.is_some() && kind != CorrelationType::ValuePercentile {
        return Err(ctx.invalid(node, "correlation.condition.percentile", "only for value_percentile"));
    }
    Ok(condition)
}

fn number_of(node: &MarkedYaml<'_>) -> Option<f64> {
    match &node.data {
        YamlData::Value(Scalar::Integer(i)) => Some(*i as f64),
        YamlData::Value(Scalar::FloatingPoint(f)) if f.is_finite() => Some(**f),
        YamlData::Value(Scalar::String(s)) | YamlData::Representation(s, _, _) => {
            s.trim().parse::<f64>().ok().filter(|f| f.is_finite())
        }
        _ => None,
    }
}
