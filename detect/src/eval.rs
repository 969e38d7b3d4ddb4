//! Evaluating a compiled expression against one event.

use std::borrow::Cow;
use std::cell::OnceCell;
use std::net::IpAddr;

use dac_event::{Event, Value};
use serde_json::Value as Json;

use crate::pattern::{fold, Pattern, StrOp};
use crate::rule::{Expr, FieldTest};

/// A field in a compiled set: an index into the set's field table, or
/// `None` for a field the mapping declares absent.
pub(crate) type FieldId = Option<usize>;

/// An event field the set reads, with its path pre-split.
#[derive(Debug, Clone)]
pub(crate) struct FieldSpec {
    pub path: String,
    pub segments: Vec<String>,
}

/// One field of one event, as the patterns see it.
#[derive(Debug, Default)]
pub(crate) struct Slot<'e> {
    pub present: bool,
    pub null: bool,
    /// The value as text: text as is, numbers and booleans as JSON writes
    /// them, an ObjectId as its hex, a date as its epoch milliseconds.
    /// `None` for null, containers, binary.
    pub text: Option<Cow<'e, str>>,
    /// `fold(text)`, made only when a case-insensitive test needs it: the
    /// prefilter scans ASCII text as it is.
    folded: OnceCell<Cow<'e, str>>,
}

impl<'e> Slot<'e> {
    fn from_text(text: Cow<'e, str>) -> Self {
        Slot { present: true, null: false, text: Some(text), folded: OnceCell::new() }
    }

    fn valueless(null: bool) -> Self {
        Slot { present: true, null, text: None, folded: OnceCell::new() }
    }

    pub fn folded(&self) -> Option<&str> {
        let text = self.text.as_ref()?;
        Some(self.folded.get_or_init(|| match text {
            Cow::Borrowed(s) => fold(s),
            Cow::Owned(s) => Cow::Owned(fold(s).into_owned()),
        }))
    }
}

/// Lazily loaded fields of one event.
pub(crate) struct View<'e> {
    pub event: &'e Event,
    fields: &'e [FieldSpec],
    slots: Vec<OnceCell<Slot<'e>>>,
    absent: Slot<'e>,
}

impl<'e> View<'e> {
    pub fn new(event: &'e Event, fields: &'e [FieldSpec]) -> Self {
        View { event, fields, slots: (0..fields.len()).map(|_| OnceCell::new()).collect(), absent: Slot::default() }
    }

    /// Like [`View::new`], but finds the top-level text fields the set reads
    /// in one walk over the document's keys: cheaper than a hash lookup per
    /// field, and the keys are read in memory order. `top` lists
    /// (key, field index) for the set's single-segment paths.
    pub fn prefetched(event: &'e Event, fields: &'e [FieldSpec], top: &[(String, usize)]) -> Self {
        let view = View::new(event, fields);
        let mut found = 0u64;
        for (key, value) in event.as_json() {
            let Some(&(_, index)) = top.iter().find(|(name, _)| name.len() == key.len() && name == key) else {
                continue;
            };
            found |= 1 << (index % 64);
            // Other types go through `Event::get`, which knows Extended JSON.
            if let Json::String(text) = value {
                let _ = view.slots[index].set(Slot::from_text(Cow::Borrowed(text)));
            }
        }
        for &(_, index) in top {
            if found & (1 << (index % 64)) == 0 {
                let _ = view.slots[index].set(Slot::default());
            }
        }
        view
    }

    pub fn slot(&self, field: FieldId) -> &Slot<'e> {
        let Some(index) = field else { return &self.absent };
        self.slots[index].get_or_init(|| load(self.event, &self.fields[index].segments))
    }

    pub fn path(&self, field: FieldId) -> &str {
        field.map(|i| self.fields[i].path.as_str()).unwrap_or("")
    }
}

fn load<'e>(event: &'e Event, segments: &[String]) -> Slot<'e> {
    let text = match event.get_segments(segments) {
        None => return Slot::default(),
        Some(Value::Null) => return Slot::valueless(true),
        Some(Value::Text(s)) | Some(Value::ObjectId(s)) => Cow::Borrowed(s),
        Some(Value::Integer(i)) => Cow::Owned(i.to_string()),
        Some(Value::Float(f)) => Cow::Owned(f.to_string()),
        Some(Value::Boolean(b)) => Cow::Borrowed(if b { "true" } else { "false" }),
        Some(Value::DateTime(ms)) => Cow::Owned(ms.to_string()),
        Some(_) => return Slot::valueless(false),
    };
    Slot::from_text(text)
}

pub(crate) fn eval(expr: &Expr<FieldId>, view: &View<'_>) -> bool {
    match expr {
        Expr::Const(b) => *b,
        Expr::And(xs) => xs.iter().all(|x| eval(x, view)),
        Expr::Or(xs) => xs.iter().any(|x| eval(x, view)),
        Expr::Not(x) => !eval(x, view),
        Expr::Field(test) => field_test(test, view.slot(test.field), view),
        Expr::Keywords { values, all } => {
            let hit = |p: &Pattern<FieldId>| {
                let mut found = false;
                walk_text(view.event.as_json(), &mut String::new(), &mut |_, text| {
                    found = found || pattern(p, &Slot::from_text(Cow::Borrowed(text)), view);
                });
                found
            };
            if *all {
                values.iter().all(hit)
            } else {
                values.iter().any(hit)
            }
        }
    }
}

pub(crate) fn field_test(test: &FieldTest<FieldId>, slot: &Slot<'_>, view: &View<'_>) -> bool {
    if test.all {
        test.values.iter().all(|p| pattern(p, slot, view))
    } else {
        test.values.iter().any(|p| pattern(p, slot, view))
    }
}

fn pattern(p: &Pattern<FieldId>, slot: &Slot<'_>, view: &View<'_>) -> bool {
    let text = |cased: bool| if cased { slot.text.as_deref() } else { slot.folded() };
    match p {
        Pattern::Str { op, needle, cased, finder } => match text(*cased) {
            None => false,
            Some(hay) => match op {
                StrOp::Contains => finder.find(hay.as_bytes()).is_some(),
                _ => op.apply(hay, needle),
            },
        },
        Pattern::Glob { regex, cased, .. } => text(*cased).is_some_and(|hay| regex.is_match(hay)),
        Pattern::Regex(regex) => slot.text.as_deref().is_some_and(|hay| regex.is_match(hay)),
        Pattern::Cidr(net) => {
            slot.text.as_deref().and_then(|t| t.trim().parse::<IpAddr>().ok()).is_some_and(|ip| net.contains(&ip))
        }
        Pattern::Exists(want) => slot.present == *want,
        Pattern::Null => !slot.present || slot.null,
        Pattern::FieldRef { other, op, cased } => {
            let other = view.slot(*other);
            let (hay, needle) =
                if *cased { (slot.text.as_deref(), other.text.as_deref()) } else { (slot.folded(), other.folded()) };
            match (hay, needle) {
                (Some(hay), Some(needle)) => op.apply(hay, needle),
                _ => false,
            }
        }
        Pattern::AnyOf(xs) => xs.iter().any(|x| pattern(x, slot, view)),
    }
}

/// A field and value that made a rule fire, for the alert's matched info
/// (the one `MatchedField` of every dac crate, as `wit/rule.wit`'s
/// `matched-field`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct MatchedField {
    /// The event path (for a Sigma rule, after field mapping).
    pub path: String,
    /// The field's value as text; `null` for a null, empty for a container.
    pub value: String,
}

/// Records the positive tests that hold in a matching expression: every
/// branch of an `and`, the true branches of an `or`, nothing under `not`.
pub(crate) fn collect(expr: &Expr<FieldId>, view: &View<'_>, out: &mut Vec<MatchedField>) {
    match expr {
        Expr::Const(_) | Expr::Not(_) => {}
        Expr::And(xs) => xs.iter().for_each(|x| collect(x, view, out)),
        Expr::Or(xs) => xs.iter().filter(|x| eval(x, view)).for_each(|x| collect(x, view, out)),
        Expr::Field(test) => {
            let slot = view.slot(test.field);
            if slot.present && field_test(test, slot, view) {
                let value = match &slot.text {
                    Some(t) => t.to_string(),
                    None if slot.null => "null".into(),
                    None => String::new(),
                };
                push_unique(out, view.path(test.field), value);
            }
        }
        Expr::Keywords { values, .. } => {
            walk_text(view.event.as_json(), &mut String::new(), &mut |path, text| {
                let slot = Slot::from_text(Cow::Borrowed(text));
                if values.iter().any(|p| pattern(p, &slot, view)) {
                    push_unique(out, path, text.to_owned());
                }
            });
        }
    }
}

fn push_unique(out: &mut Vec<MatchedField>, field: &str, value: String) {
    if !out.iter().any(|m| m.path == field) {
        out.push(MatchedField { path: field.to_owned(), value });
    }
}

/// Calls `visit(path, text)` for every string in the document, nested
/// documents and arrays included.
fn walk_text<'j>(map: &'j serde_json::Map<String, Json>, path: &mut String, visit: &mut impl FnMut(&str, &'j str)) {
    for (key, value) in map {
        let len = path.len();
        if !path.is_empty() {
            path.push('.');
        }
        path.push_str(key);
        walk_value(value, path, visit);
        path.truncate(len);
    }
}

fn walk_value<'j>(value: &'j Json, path: &mut String, visit: &mut impl FnMut(&str, &'j str)) {
    match value {
        Json::String(s) => visit(path, s),
        Json::Object(map) => walk_text(map, path, visit),
        Json::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                let len = path.len();
                path.push('.');
                path.push_str(&i.to_string());
                walk_value(item, path, visit);
                path.truncate(len);
            }
        }
        _ => {}
    }
}
