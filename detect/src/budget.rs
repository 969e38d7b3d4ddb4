//! What one declarative rule may cost to parse and compile.
//!
//! A rule is a few kilobytes of text, but YAML aliases, a condition that
//! names a search many times, `windash` variants and regular expressions can
//! each turn a few kilobytes into gigabytes of host memory, and nesting
//! (YAML collections, parentheses in a condition) into a stack overflow that
//! aborts the whole process. A host that loads rules from people it does
//! not trust (`dac serve`'s tenants) needs each of those bounded before the
//! memory is spent, so every limit here is checked while parsing or
//! compiling, not afterwards. The defaults fit every SigmaHQ rule with a
//! wide margin (the most demanding of the 122 Linux process-creation rules
//! uses a small fraction of each).

/// Bounds on one rule, checked while it is parsed and compiled. A rule over
/// one is refused with [`crate::DetectError::OverBudget`], which names the
/// budget, its value and where in the rule it was exceeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Budget {
    /// Deepest nesting of YAML collections (a mapping or a list inside
    /// another), aliases expanded. A Sigma rule needs 4. Default 32.
    pub max_yaml_depth: usize,
    /// YAML nodes (scalars, lists, mappings) once every alias is expanded.
    /// Default 100,000.
    pub max_yaml_nodes: usize,
    /// Bytes of scalar text once every alias is expanded. Default 4 MiB.
    pub max_yaml_bytes: usize,
    /// Deepest nesting of parentheses and `not` in a Sigma condition.
    /// Default 32.
    pub max_condition_depth: usize,
    /// Nodes of the rule's expression once the condition's references to
    /// searches (`selection`, `1 of them`) are expanded: a search named
    /// twice costs twice. Default 100,000.
    pub max_expression_nodes: usize,
    /// Values to compare, after modifiers expand them (`windash` spells a
    /// value up to 625 ways, `base64offset` 3). Default 100,000.
    pub max_values: usize,
    /// Regular expressions the rule compiles: `|re` values, and wildcard
    /// values that are not a plain prefix, suffix or substring. Default 256.
    pub max_regexes: usize,
    /// Compiled size of one regular expression, and the size of its lazy
    /// DFA cache (the `regex` crate's `size_limit` and `dfa_size_limit`),
    /// so a rule's regular expressions hold at most
    /// `max_regexes × 2 × max_regex_bytes`. Default 1 MiB.
    pub max_regex_bytes: usize,
}

impl Default for Budget {
    fn default() -> Self {
        Budget {
            max_yaml_depth: 32,
            max_yaml_nodes: 100_000,
            max_yaml_bytes: 4 << 20,
            max_condition_depth: 32,
            max_expression_nodes: 100_000,
            max_values: 100_000,
            max_regexes: 256,
            max_regex_bytes: 1 << 20,
        }
    }
}

/// One budget exceeded: which, and its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Exceeded {
    pub budget: &'static str,
    pub limit: usize,
}

/// What a rule has spent so far, against its [`Budget`].
pub(crate) struct Meter<'b> {
    pub budget: &'b Budget,
    values: usize,
    regexes: usize,
}

impl<'b> Meter<'b> {
    pub fn new(budget: &'b Budget) -> Meter<'b> {
        Meter { budget, values: 0, regexes: 0 }
    }

    /// Counts `n` more values.
    pub fn values(&mut self, n: usize) -> Result<(), Exceeded> {
        self.values = self.values.saturating_add(n);
        if self.values > self.budget.max_values {
            return Err(Exceeded { budget: "max_values", limit: self.budget.max_values });
        }
        Ok(())
    }

    /// Values counted so far.
    pub fn values_spent(&self) -> usize {
        self.values
    }

    /// Compiles one more regular expression within the budget.
    pub fn regex(&mut self, source: &str) -> Result<regex::Regex, RegexRefusal> {
        self.regexes += 1;
        if self.regexes > self.budget.max_regexes {
            return Err(RegexRefusal::Over(Exceeded { budget: "max_regexes", limit: self.budget.max_regexes }));
        }
        regex::RegexBuilder::new(source)
            .size_limit(self.budget.max_regex_bytes)
            .dfa_size_limit(self.budget.max_regex_bytes)
            .build()
            .map_err(|e| match e {
                regex::Error::CompiledTooBig(_) => {
                    RegexRefusal::Over(Exceeded { budget: "max_regex_bytes", limit: self.budget.max_regex_bytes })
                }
                other => RegexRefusal::Invalid(other),
            })
    }
}

/// Why a regular expression was not compiled.
#[derive(Debug)]
pub(crate) enum RegexRefusal {
    Over(Exceeded),
    Invalid(regex::Error),
}
