//! Sigma's `condition`: `and` / `or` / `not`, parentheses, `1 of` / `all of`
//! over identifier patterns and `them`. Aggregations (`| count() > 5`) and
//! `near` belong to correlation and are refused.

use crate::budget::{Budget, Exceeded};
use crate::rule::{Expr, FieldPath};

/// Why a condition was not accepted.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ConditionError {
    Invalid(String),
    Unsupported(String),
    /// Over a budget: which, and what the condition would have cost.
    Over(Exceeded, String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Open,
    Close,
    Word(String),
    /// `|` and all that follows it: an aggregation.
    Pipe(String),
}

fn tokenize(text: &str) -> Vec<Token> {
    let mut tokens = Vec::new();
    let mut word = String::new();
    let flush = |word: &mut String, tokens: &mut Vec<Token>| {
        if !word.is_empty() {
            tokens.push(Token::Word(std::mem::take(word)));
        }
    };
    for (i, c) in text.char_indices() {
        match c {
            '(' | ')' => {
                flush(&mut word, &mut tokens);
                tokens.push(if c == '(' { Token::Open } else { Token::Close });
            }
            '|' => {
                flush(&mut word, &mut tokens);
                tokens.push(Token::Pipe(text[i..].trim().to_owned()));
                return tokens;
            }
            c if c.is_whitespace() => flush(&mut word, &mut tokens),
            c => word.push(c),
        }
    }
    flush(&mut word, &mut tokens);
    tokens
}

struct Parser<'a> {
    tokens: Vec<Token>,
    pos: usize,
    searches: &'a [(String, Expr<FieldPath>)],
    budget: &'a Budget,
    /// Parentheses and `not`s open around the current token: the parser
    /// recurses once for each, so this is bounded before the stack is.
    depth: usize,
    /// Expression nodes produced so far (shared by a rule's conditions).
    nodes: &'a mut usize,
}

fn is_keyword(word: &str, keyword: &str) -> bool {
    word.eq_ignore_ascii_case(keyword)
}

/// Parses `condition` over the rule's named searches, given in file order
/// (so `1 of them` tries them, and reports matches, in the author's order),
/// within `budget`'s condition depth and expression size; `nodes` counts the
/// expression nodes the rule's conditions have produced so far.
pub(crate) fn parse(
    condition: &str,
    searches: &[(String, Expr<FieldPath>)],
    budget: &Budget,
    nodes: &mut usize,
) -> Result<Expr<FieldPath>, ConditionError> {
    let mut parser = Parser { tokens: tokenize(condition), pos: 0, searches, budget, depth: 0, nodes };
    if parser.tokens.is_empty() {
        return Err(ConditionError::Invalid("the condition is empty".into()));
    }
    let expr = parser.or()?;
    match parser.tokens.get(parser.pos) {
        None => Ok(expr),
        Some(Token::Pipe(rest)) => Err(ConditionError::Unsupported(format!("aggregation `{rest}`"))),
        Some(Token::Close) => Err(ConditionError::Invalid("unbalanced `)`".into())),
        Some(Token::Word(w)) => Err(ConditionError::Invalid(format!("expected `and` or `or` before `{w}`"))),
        Some(Token::Open) => Err(ConditionError::Invalid("expected `and` or `or` before `(`".into())),
    }
}

impl Parser<'_> {
    fn peek_word(&self) -> Option<&str> {
        match self.tokens.get(self.pos) {
            Some(Token::Word(w)) => Some(w),
            _ => None,
        }
    }

    /// Enters one more level of parentheses or `not`.
    fn deeper(&mut self) -> Result<(), ConditionError> {
        self.depth += 1;
        if self.depth > self.budget.max_condition_depth {
            let limit = self.budget.max_condition_depth;
            return Err(ConditionError::Over(
                Exceeded { budget: "max_condition_depth", limit },
                format!("parentheses and `not`s nested more than {limit} deep"),
            ));
        }
        Ok(())
    }

    /// Counts `n` more expression nodes.
    fn spend(&mut self, n: usize) -> Result<(), ConditionError> {
        *self.nodes = self.nodes.saturating_add(n);
        let limit = self.budget.max_expression_nodes;
        if *self.nodes > limit {
            return Err(ConditionError::Over(
                Exceeded { budget: "max_expression_nodes", limit },
                format!("{} expression nodes or more, with every search the condition names expanded", *self.nodes),
            ));
        }
        Ok(())
    }

    /// A copy of a search, paid for.
    fn expand(&mut self, search: &Expr<FieldPath>) -> Result<Expr<FieldPath>, ConditionError> {
        self.spend(search.size())?;
        Ok(search.clone())
    }

    fn or(&mut self) -> Result<Expr<FieldPath>, ConditionError> {
        let mut items = vec![self.and()?];
        while self.peek_word().is_some_and(|w| is_keyword(w, "or")) {
            self.pos += 1;
            items.push(self.and()?);
        }
        if items.len() > 1 {
            self.spend(1)?;
        }
        Ok(if items.len() == 1 { items.remove(0) } else { Expr::Or(items) })
    }

    fn and(&mut self) -> Result<Expr<FieldPath>, ConditionError> {
        let mut items = vec![self.unary()?];
        while self.peek_word().is_some_and(|w| is_keyword(w, "and")) {
            self.pos += 1;
            items.push(self.unary()?);
        }
        if items.len() > 1 {
            self.spend(1)?;
        }
        Ok(if items.len() == 1 { items.remove(0) } else { Expr::And(items) })
    }

    fn unary(&mut self) -> Result<Expr<FieldPath>, ConditionError> {
        if self.peek_word().is_some_and(|w| is_keyword(w, "not")) {
            self.pos += 1;
            self.deeper()?;
            self.spend(1)?;
            let inner = self.unary()?;
            self.depth -= 1;
            return Ok(Expr::Not(Box::new(inner)));
        }
        self.primary()
    }

    fn primary(&mut self) -> Result<Expr<FieldPath>, ConditionError> {
        let token = self.tokens.get(self.pos).cloned();
        self.pos += 1;
        match token {
            None => Err(ConditionError::Invalid("the condition ends where a search identifier was expected".into())),
            Some(Token::Open) => {
                self.deeper()?;
                let inner = self.or()?;
                self.depth -= 1;
                match self.tokens.get(self.pos) {
                    Some(Token::Close) => {
                        self.pos += 1;
                        Ok(inner)
                    }
                    Some(Token::Pipe(rest)) => Err(ConditionError::Unsupported(format!("aggregation `{rest}`"))),
                    _ => Err(ConditionError::Invalid("missing `)`".into())),
                }
            }
            Some(Token::Close) => Err(ConditionError::Invalid("unexpected `)`".into())),
            Some(Token::Pipe(rest)) => Err(ConditionError::Unsupported(format!("aggregation `{rest}`"))),
            Some(Token::Word(word)) => {
                let next_is_of = self.peek_word().is_some_and(|w| is_keyword(w, "of"));
                if next_is_of {
                    self.pos += 1;
                    return self.quantifier(&word);
                }
                if is_keyword(&word, "near") {
                    return Err(ConditionError::Unsupported("`near` (temporal correlation)".into()));
                }
                for keyword in ["and", "or", "not", "of", "them"] {
                    if is_keyword(&word, keyword) {
                        return Err(ConditionError::Invalid(format!("unexpected `{word}`")));
                    }
                }
                let searches = self.searches;
                let search = searches
                    .iter()
                    .find(|(name, _)| *name == word)
                    .ok_or_else(|| ConditionError::Invalid(format!("unknown search identifier `{word}`")))?;
                self.expand(&search.1)
            }
        }
    }

    fn quantifier(&mut self, quantity: &str) -> Result<Expr<FieldPath>, ConditionError> {
        let all = if quantity == "1" || is_keyword(quantity, "any") {
            false
        } else if is_keyword(quantity, "all") {
            true
        } else if quantity.parse::<u32>().is_ok() {
            return Err(ConditionError::Unsupported(format!("`{quantity} of` (only `1 of` and `all of`)")));
        } else {
            return Err(ConditionError::Invalid(format!("`{quantity} of`: expected `1 of` or `all of`")));
        };
        let target = match self.tokens.get(self.pos) {
            Some(Token::Word(w)) => w.clone(),
            _ => return Err(ConditionError::Invalid(format!("`{quantity} of` needs a pattern or `them`"))),
        };
        self.pos += 1;
        let searches = self.searches;
        let chosen: Vec<&Expr<FieldPath>> = if is_keyword(&target, "them") {
            // The specification leaves identifiers starting with `_` out of `them`.
            searches.iter().filter(|(name, _)| !name.starts_with('_')).map(|(_, e)| e).collect()
        } else {
            searches.iter().filter(|(name, _)| glob_match(&target, name)).map(|(_, e)| e).collect()
        };
        if chosen.is_empty() {
            return Err(ConditionError::Invalid(format!("`{quantity} of {target}` matches no search identifier")));
        }
        self.spend(1)?;
        let chosen = chosen.into_iter().map(|e| self.expand(e)).collect::<Result<Vec<_>, _>>()?;
        Ok(if all { Expr::And(chosen) } else { Expr::Or(chosen) })
    }
}

/// `*` matches any run of characters; everything else is literal.
fn glob_match(pattern: &str, name: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == name;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !name.starts_with(first) || name.len() < first.len() + last.len() || !name.ends_with(last) {
        return false;
    }
    let mut rest = &name[first.len()..name.len() - last.len()];
    for middle in &parts[1..parts.len() - 1] {
        match rest.find(middle) {
            Some(i) => rest = &rest[i + middle.len()..],
            None => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn searches(names: &[&str]) -> Vec<(String, Expr<FieldPath>)> {
        // Each search is a distinct constant field test we can recognise by its path.
        names
            .iter()
            .map(|n| {
                let test = crate::rule::FieldTest { field: Some(n.to_string()), values: Vec::new(), all: false };
                (n.to_string(), Expr::Field(test))
            })
            .collect()
    }

    fn show(e: &Expr<FieldPath>) -> String {
        match e {
            Expr::Const(b) => b.to_string(),
            Expr::And(xs) => format!("and({})", xs.iter().map(show).collect::<Vec<_>>().join(",")),
            Expr::Or(xs) => format!("or({})", xs.iter().map(show).collect::<Vec<_>>().join(",")),
            Expr::Not(x) => format!("not({})", show(x)),
            Expr::Field(t) => t.field.clone().unwrap_or_default(),
            Expr::Keywords { .. } => "kw".into(),
        }
    }

    #[test]
    fn precedence_quantifiers_and_parentheses() {
        let s = searches(&["selection", "filter_a", "filter_b", "sel_1", "sel_2", "_hidden"]);
        let p = |c: &str| parse(c, &s, &Budget::default(), &mut 0).map(|e| show(&e));
        assert_eq!(p("selection and not 1 of filter_*").unwrap(), "and(selection,not(or(filter_a,filter_b)))");
        assert_eq!(p("sel_1 or sel_2 and selection").unwrap(), "or(sel_1,and(sel_2,selection))");
        assert_eq!(p("(sel_1 or sel_2) and selection").unwrap(), "and(or(sel_1,sel_2),selection)");
        assert_eq!(p("all of sel_*").unwrap(), "and(sel_1,sel_2)");
        assert_eq!(p("1 of them").unwrap(), "or(selection,filter_a,filter_b,sel_1,sel_2)");
        assert_eq!(p("not not selection").unwrap(), "not(not(selection))");
        assert_eq!(p("selection AND NOT filter_a").unwrap(), "and(selection,not(filter_a))");
    }

    #[test]
    fn refuses_what_it_does_not_implement_and_reports_mistakes() {
        let s = searches(&["selection", "filter"]);
        let err = |c: &str| parse(c, &s, &Budget::default(), &mut 0).unwrap_err();
        assert_eq!(
            err("selection | count() by host > 5"),
            ConditionError::Unsupported("aggregation `| count() by host > 5`".into())
        );
        assert!(matches!(err("selection near filter"), ConditionError::Invalid(_)));
        assert!(matches!(err("near filter"), ConditionError::Unsupported(_)));
        assert!(matches!(err("2 of them"), ConditionError::Unsupported(_)));
        assert_eq!(err("selection and missing"), ConditionError::Invalid("unknown search identifier `missing`".into()));
        assert!(matches!(err("(selection"), ConditionError::Invalid(_)));
        assert!(matches!(err("selection)"), ConditionError::Invalid(_)));
        assert!(matches!(err("1 of nothing_*"), ConditionError::Invalid(_)));
        assert!(matches!(err(""), ConditionError::Invalid(_)));
        assert!(matches!(err("selection filter"), ConditionError::Invalid(_)));
    }

    #[test]
    fn identifier_globs() {
        assert!(glob_match("selection_*", "selection_a"));
        assert!(glob_match("selection*", "selection"));
        assert!(!glob_match("selection_*", "selection"));
        assert!(glob_match("*_img_*", "sel_img_x"));
        assert!(glob_match("a*b*c", "axxbyyc") && !glob_match("a*b*c", "acb"));
    }
}
