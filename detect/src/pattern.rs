//! Value patterns: how one value of a rule is compared with one field.
//!
//! Case-insensitive comparisons are made on *folded* text: every character
//! replaced by its lower-case mapping, one character at a time. Folding per
//! character (rather than `str::to_lowercase`, which has context rules) is a
//! homomorphism — if `a` occurs in `b` then `fold(a)` occurs in `fold(b)` —
//! and that is what makes the set's prefilter, which scans folded text for
//! folded literals, sound even for case-sensitive patterns.

use std::borrow::Cow;

use ipnet::IpNet;
use memchr::memmem::Finder;
use regex::Regex;

use crate::budget::{Meter, RegexRefusal};

/// Lower-cases text one character at a time; borrows when nothing changes.
pub fn fold(text: &str) -> Cow<'_, str> {
    if text.is_ascii() {
        if text.bytes().any(|b| b.is_ascii_uppercase()) {
            Cow::Owned(text.to_ascii_lowercase())
        } else {
            Cow::Borrowed(text)
        }
    } else {
        Cow::Owned(text.chars().flat_map(char::to_lowercase).collect())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StrOp {
    Equals,
    Contains,
    StartsWith,
    EndsWith,
}

impl StrOp {
    pub fn apply(self, hay: &str, needle: &str) -> bool {
        match self {
            StrOp::Equals => hay == needle,
            StrOp::Contains => memchr::memmem::find(hay.as_bytes(), needle.as_bytes()).is_some(),
            StrOp::StartsWith => hay.starts_with(needle),
            StrOp::EndsWith => hay.ends_with(needle),
        }
    }
}

/// One value of a rule. `F` names fields (see [`crate::rule::Expr`]).
#[derive(Debug, Clone)]
pub(crate) enum Pattern<F> {
    /// A plain string; `needle` is folded unless `cased`.
    Str { op: StrOp, needle: String, cased: bool, finder: Box<Finder<'static>> },
    /// A value with inner wildcards, as an anchored regex over folded text
    /// (or the original text when `cased`). `longest` is its longest
    /// wildcard-free piece, folded, for the prefilter.
    Glob { regex: Regex, cased: bool, longest: String },
    /// Sigma `|re`: over the original text, flags as the rule gave them.
    Regex(Regex),
    /// Sigma `|cidr`: the field parses as an IP address inside the network.
    Cidr(IpNet),
    /// Sigma `|exists`.
    Exists(bool),
    /// Sigma `null`: the field is absent or null.
    Null,
    /// Sigma `|fieldref`: compared with another field of the same event.
    FieldRef { other: F, op: StrOp, cased: bool },
    /// Variants of one value (windash, base64offset): any one matches.
    AnyOf(Vec<Pattern<F>>),
}

impl<F> Pattern<F> {
    pub fn string(op: StrOp, needle: &str, cased: bool) -> Self {
        let needle = if cased { needle.to_owned() } else { fold(needle).into_owned() };
        let finder = Box::new(Finder::new(needle.as_bytes()).into_owned());
        Pattern::Str { op, needle, cased, finder }
    }

    pub fn visit_fields(&self, visit: &mut impl FnMut(&F)) {
        match self {
            Pattern::FieldRef { other, .. } => visit(other),
            Pattern::AnyOf(xs) => xs.iter().for_each(|x| x.visit_fields(visit)),
            _ => {}
        }
    }

    pub fn map_fields<G>(&self, map: &mut impl FnMut(&F) -> G) -> Pattern<G> {
        match self {
            Pattern::Str { op, needle, cased, finder } => {
                Pattern::Str { op: *op, needle: needle.clone(), cased: *cased, finder: finder.clone() }
            }
            Pattern::Glob { regex, cased, longest } => {
                Pattern::Glob { regex: regex.clone(), cased: *cased, longest: longest.clone() }
            }
            Pattern::Regex(r) => Pattern::Regex(r.clone()),
            Pattern::Cidr(net) => Pattern::Cidr(*net),
            Pattern::Exists(b) => Pattern::Exists(*b),
            Pattern::Null => Pattern::Null,
            Pattern::FieldRef { other, op, cased } => Pattern::FieldRef { other: map(other), op: *op, cased: *cased },
            Pattern::AnyOf(xs) => Pattern::AnyOf(xs.iter().map(|x| x.map_fields(map)).collect()),
        }
    }

    /// Literals, exactly as written, of which at least one occurs in the
    /// (unfolded) text of any value this pattern matches: only case-sensitive
    /// plain strings have them. A host scanning raw bytes can then use an
    /// exact search, which is faster than a case-insensitive one.
    pub fn exact_literals(&self) -> Option<Vec<String>> {
        match self {
            Pattern::Str { needle, cased: true, .. } if !needle.is_empty() => Some(vec![needle.clone()]),
            Pattern::Regex(regex) => regex_prefixes(regex.as_str()),
            Pattern::AnyOf(xs) => {
                let mut out = Vec::new();
                for x in xs {
                    out.extend(x.exact_literals()?);
                }
                Some(out)
            }
            _ => None,
        }
    }

    /// Folded literals of which at least one occurs in the folded text of
    /// any value this pattern matches; `None` when there is no such set.
    pub fn required_literals(&self) -> Option<Vec<String>> {
        match self {
            Pattern::Str { needle, cased, .. } if !needle.is_empty() => {
                Some(vec![if *cased { fold(needle).into_owned() } else { needle.clone() }])
            }
            Pattern::Glob { longest, .. } if !longest.is_empty() => Some(vec![longest.clone()]),
            Pattern::Regex(regex) => {
                let mut out: Vec<String> =
                    regex_prefixes(regex.as_str())?.iter().map(|l| fold(l).into_owned()).collect();
                out.dedup();
                Some(out)
            }
            Pattern::AnyOf(xs) => {
                let mut out = Vec::new();
                for x in xs {
                    out.extend(x.required_literals()?);
                }
                Some(out)
            }
            _ => None,
        }
    }
}

/// Literals one of which starts every match of the regular expression
/// `source` (its flags included, as the rule compiled it), as
/// `regex-syntax` extracts them: case-insensitive parts give every case
/// variant, and a literal cut at a limit is still a prefix. `None` when a
/// match could start anywhere or with nothing, or a literal is not text.
fn regex_prefixes(source: &str) -> Option<Vec<String>> {
    use regex_syntax::hir::literal::{ExtractKind, Extractor};
    let hir = regex_syntax::Parser::new().parse(source).ok()?;
    let seq = Extractor::new().kind(ExtractKind::Prefix).extract(&hir);
    let literals = seq.literals()?;
    if literals.is_empty() {
        return None;
    }
    let mut out = Vec::with_capacity(literals.len());
    for literal in literals {
        if literal.as_bytes().is_empty() {
            return None;
        }
        out.push(String::from_utf8(literal.as_bytes().to_vec()).ok()?);
    }
    out.sort();
    out.dedup();
    Some(out)
}

/// A piece of a Sigma string value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Piece {
    Lit(String),
    /// `*`: any run of characters.
    Star,
    /// `?`: exactly one character.
    One,
}

/// Splits a Sigma string into literals and wildcards. `\*`, `\?` and `\\`
/// are escapes; a backslash before anything else is an ordinary character,
/// as the Sigma specification says (so Windows paths need no doubling).
pub(crate) fn parse_wildcards(text: &str) -> Vec<Piece> {
    let mut pieces = Vec::new();
    let mut lit = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.peek() {
                Some(&next @ ('*' | '?' | '\\')) => {
                    lit.push(next);
                    chars.next();
                }
                _ => lit.push('\\'),
            },
            '*' | '?' => {
                if !lit.is_empty() {
                    pieces.push(Piece::Lit(std::mem::take(&mut lit)));
                }
                pieces.push(if c == '*' { Piece::Star } else { Piece::One });
            }
            _ => lit.push(c),
        }
    }
    if !lit.is_empty() {
        pieces.push(Piece::Lit(lit));
    }
    // Consecutive stars mean the same as one.
    pieces.dedup_by(|a, b| *a == Piece::Star && *b == Piece::Star);
    pieces
}

/// Builds the cheapest pattern for a wildcard value: a plain comparison when
/// the only wildcards are leading/trailing `*`, an anchored regex otherwise.
pub(crate) fn from_pieces<F>(pieces: &[Piece], cased: bool, meter: &mut Meter<'_>) -> Result<Pattern<F>, RegexRefusal> {
    let lead = pieces.first() == Some(&Piece::Star);
    let trail = pieces.len() > 1 && pieces.last() == Some(&Piece::Star);
    let inner = &pieces[usize::from(lead)..pieces.len() - usize::from(trail)];
    match inner {
        [] if lead => return Ok(any_text()),
        [] => return Ok(Pattern::string(StrOp::Equals, "", cased)),
        [Piece::Lit(lit)] => {
            let op = match (lead, trail) {
                (false, false) => StrOp::Equals,
                (true, true) => StrOp::Contains,
                (true, false) => StrOp::EndsWith,
                (false, true) => StrOp::StartsWith,
            };
            return Ok(Pattern::string(op, lit, cased));
        }
        _ => {}
    }
    let mut source = String::from("(?s)^");
    let mut longest = String::new();
    for piece in pieces {
        match piece {
            Piece::Lit(lit) => {
                let lit = if cased { Cow::Borrowed(lit.as_str()) } else { fold(lit) };
                source.push_str(&regex::escape(&lit));
                // Uncased, the regex runs on folded text, which then holds
                // `lit` itself; cased, folded text holds `fold(lit)`.
                let required = if cased { fold(&lit) } else { Cow::Borrowed(lit.as_ref()) };
                if required.len() > longest.len() {
                    longest = required.into_owned();
                }
            }
            Piece::Star => source.push_str(".*"),
            Piece::One => source.push('.'),
        }
    }
    source.push('$');
    Ok(Pattern::Glob { regex: meter.regex(&source)?, cased, longest })
}

/// `*` alone: any text value, including the empty string.
fn any_text<F>() -> Pattern<F> {
    Pattern::string(StrOp::StartsWith, "", true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::budget::Budget;

    #[test]
    fn folding_borrows_lower_case_ascii_and_maps_unicode_per_character() {
        assert!(matches!(fold("/usr/bin/ls -la"), Cow::Borrowed(_)));
        assert_eq!(fold("CMD.EXE"), "cmd.exe");
        assert_eq!(fold("ÄRGER"), "ärger");
        // Context-free: a final capital sigma folds like any other sigma.
        assert_eq!(fold("ΟΔΟΣ"), "οδοσ");
    }

    #[test]
    fn wildcards_and_escapes() {
        use Piece::*;
        assert_eq!(parse_wildcards(r"a*b?c"), vec![Lit("a".into()), Star, Lit("b".into()), One, Lit("c".into())]);
        assert_eq!(parse_wildcards(r"a\*b\?c\\d\e"), vec![Lit(r"a*b?c\d\e".into())]);
        assert_eq!(parse_wildcards("**x**"), vec![Star, Lit("x".into()), Star]);
    }

    fn matches_folded(p: &Pattern<()>, text: &str) -> bool {
        match p {
            Pattern::Str { op, needle, .. } => op.apply(&fold(text), needle),
            Pattern::Glob { regex, .. } => regex.is_match(&fold(text)),
            _ => unreachable!(),
        }
    }

    #[test]
    fn plain_wildcards_become_string_ops_and_inner_ones_a_regex() {
        let p: Pattern<()> =
            from_pieces(&parse_wildcards("*/BIN/sh"), false, &mut Meter::new(&Budget::default())).unwrap();
        assert!(matches!(p, Pattern::Str { op: StrOp::EndsWith, .. }));
        assert!(matches_folded(&p, "/usr/bin/SH"));
        let p: Pattern<()> =
            from_pieces(&parse_wildcards("*curl*|*sh"), false, &mut Meter::new(&Budget::default())).unwrap();
        assert!(matches!(p, Pattern::Glob { .. }));
        assert!(matches_folded(&p, "CURL x | bash"));
        assert!(!matches_folded(&p, "curl x | bash -i"));
        assert_eq!(p.required_literals(), Some(vec!["curl".to_string()]));
        let p: Pattern<()> = from_pieces(&parse_wildcards("a?c"), false, &mut Meter::new(&Budget::default())).unwrap();
        assert!(matches_folded(&p, "AbC") && !matches_folded(&p, "abbc"));
    }

    #[test]
    fn regular_expressions_give_their_match_prefixes() {
        let re = |s: &str| Pattern::<()>::Regex(Regex::new(s).unwrap());
        let pnscan = re(r#"-(W|R)\s?(\s|"|')([0-9a-fA-F]{2}\s?){2,20}(\s|"|')"#);
        assert_eq!(pnscan.exact_literals(), Some(vec!["-R".to_string(), "-W".to_string()]));
        assert_eq!(pnscan.required_literals(), Some(vec!["-r".to_string(), "-w".to_string()]));
        let folded = re("(?i)ab").exact_literals().unwrap();
        assert_eq!(folded, ["AB", "Ab", "aB", "ab"]);
        assert_eq!(re("(?i)ab").required_literals(), Some(vec!["ab".to_string()]));
        assert_eq!(re(".*x").exact_literals(), None);
        assert_eq!(re("x|").exact_literals(), None);
    }
}
