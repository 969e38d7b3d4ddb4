//! Sigma correlation rules as parsed: what a correlation counts, over which
//! rules, grouped by what, within how long, and when it fires. The state
//! that evaluates them over a stream is [`crate::Correlator`].

use std::fmt;

/// The aggregation a correlation applies to its window (Sigma correlation
/// specification v2.1, plus `value_median` as pySigma and rsigma accept it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CorrelationType {
    /// Matching events in the window.
    EventCount,
    /// Distinct values of `condition.field` (tuples, for several fields).
    ValueCount,
    /// Referenced rules with at least one match in the window.
    Temporal,
    /// All referenced rules, matched in the order they are listed.
    TemporalOrdered,
    /// Sum of a numeric field.
    ValueSum,
    /// Mean of a numeric field.
    ValueAvg,
    /// A percentile (`condition.percentile`, default 50) of a numeric field.
    ValuePercentile,
    /// The median of a numeric field.
    ValueMedian,
}

impl CorrelationType {
    pub(crate) fn parse(text: &str) -> Option<CorrelationType> {
        Some(match text {
            "event_count" => CorrelationType::EventCount,
            "value_count" => CorrelationType::ValueCount,
            "temporal" => CorrelationType::Temporal,
            "temporal_ordered" => CorrelationType::TemporalOrdered,
            "value_sum" => CorrelationType::ValueSum,
            "value_avg" => CorrelationType::ValueAvg,
            "value_percentile" => CorrelationType::ValuePercentile,
            "value_median" => CorrelationType::ValueMedian,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            CorrelationType::EventCount => "event_count",
            CorrelationType::ValueCount => "value_count",
            CorrelationType::Temporal => "temporal",
            CorrelationType::TemporalOrdered => "temporal_ordered",
            CorrelationType::ValueSum => "value_sum",
            CorrelationType::ValueAvg => "value_avg",
            CorrelationType::ValuePercentile => "value_percentile",
            CorrelationType::ValueMedian => "value_median",
        }
    }

    /// Whether the type aggregates the values of `condition.field`.
    pub fn reads_field(self) -> bool {
        !matches!(self, CorrelationType::EventCount | CorrelationType::Temporal | CorrelationType::TemporalOrdered)
    }

    /// Whether the field's values are numbers (sum, mean, percentile).
    pub fn is_numeric(self) -> bool {
        self.reads_field() && self != CorrelationType::ValueCount
    }
}

impl fmt::Display for CorrelationType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A comparison of the condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Op {
    Gt,
    Gte,
    Lt,
    Lte,
    Eq,
    Neq,
}

impl Op {
    pub(crate) fn parse(text: &str) -> Option<Op> {
        Some(match text {
            "gt" => Op::Gt,
            "gte" => Op::Gte,
            "lt" => Op::Lt,
            "lte" => Op::Lte,
            "eq" => Op::Eq,
            "neq" => Op::Neq,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Op::Gt => "gt",
            Op::Gte => "gte",
            Op::Lt => "lt",
            Op::Lte => "lte",
            Op::Eq => "eq",
            Op::Neq => "neq",
        }
    }

    fn holds(self, value: f64, threshold: f64) -> bool {
        match self {
            Op::Gt => value > threshold,
            Op::Gte => value >= threshold,
            Op::Lt => value < threshold,
            Op::Lte => value <= threshold,
            Op::Eq => value == threshold,
            Op::Neq => value != threshold,
        }
    }
}

/// When a correlation fires: every comparison holds (`{gt: 10, lte: 20}`
/// is a range) for the window's aggregate.
#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    pub predicates: Vec<(Op, f64)>,
    /// `condition.field`: the event paths whose values are aggregated
    /// (several only for `value_count`, which counts distinct tuples).
    pub fields: Vec<FieldRef>,
    /// `value_percentile`'s rank, 0–100 (default 50).
    pub percentile: Option<f64>,
}

impl Condition {
    /// Whether `value` satisfies every comparison.
    pub fn holds(&self, value: f64) -> bool {
        self.predicates.iter().all(|(op, threshold)| op.holds(value, *threshold))
    }

    /// `gte 5`, `gt 10 and lte 20`: for messages.
    pub fn describe(&self) -> String {
        let parts: Vec<String> =
            self.predicates.iter().map(|(op, t)| format!("{} {}", op.as_str(), number(*t))).collect();
        parts.join(" and ")
    }
}

/// A number as a person writes it: `5`, not `5.0`.
pub(crate) fn number(value: f64) -> String {
    if value.fract() == 0.0 && value.abs() < 1e15 {
        format!("{}", value as i64)
    } else {
        format!("{value}")
    }
}

/// A field a correlation names (in `group-by`, `condition.field` or an
/// alias): the Sigma name as written, and the event path it maps to
/// (`None`: the field mapping says events never have it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldRef {
    pub name: String,
    pub path: Option<String>,
}

/// One `group-by` entry: a field read the same way from every referenced
/// rule's events, or an alias (`aliases:`) read from a different field
/// depending on the rule that matched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupField {
    /// The name the group key shows (the field, or the alias).
    pub name: String,
    /// Where to read it for a rule the alias does not name.
    pub default: FieldRef,
    /// An alias's field per referenced rule (as the `rules` entry names it).
    pub aliased: Vec<(String, FieldRef)>,
}

impl GroupField {
    /// The field to read for a match of the rule `reference` names.
    pub fn field_for(&self, reference: &str) -> &FieldRef {
        self.aliased.iter().find(|(r, _)| r == reference).map(|(_, f)| f).unwrap_or(&self.default)
    }
}

/// A Sigma correlation rule's `correlation` section, fields mapped.
#[derive(Debug, Clone, PartialEq)]
pub struct Correlation {
    pub kind: CorrelationType,
    /// The rules (or correlations) it aggregates, by Sigma `name` or `id`,
    /// in the order written (the order `temporal_ordered` requires), with
    /// the line of each for errors.
    pub rules: Vec<(String, usize)>,
    pub group_by: Vec<GroupField>,
    /// The window as written (`5m`) and in milliseconds.
    pub timespan: String,
    pub timespan_ms: i64,
    pub condition: Condition,
    /// Whether the referenced rules also alert on their own (`generate`,
    /// default false: their matches only feed the correlation).
    pub generate: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse_timespan;

    #[test]
    fn timespans_in_every_unit_tools_accept() {
        assert_eq!(parse_timespan("90m"), Some(5_400_000));
        assert_eq!(parse_timespan("1w"), Some(604_800_000));
        assert_eq!(parse_timespan("1y"), Some(31_556_952_000));
        for bad in ["", "0s", "1h30m", "5", "m", "-1s", "99999999999999999999d"] {
            assert_eq!(parse_timespan(bad), None, "{bad}");
        }
    }

    #[test]
    fn ranges_hold_when_every_comparison_does() {
        let c = Condition { predicates: vec![(Op::Gt, 10.0), (Op::Lte, 20.0)], fields: vec![], percentile: None };
        assert!(!c.holds(10.0) && c.holds(11.0) && c.holds(20.0) && !c.holds(21.0));
        assert_eq!(c.describe(), "gt 10 and lte 20");
    }
}
