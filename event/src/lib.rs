//! The event model of dac: what a rule sees of one document.
//!
//! An [`Event`] is any JSON object — a line of a replay file, a MongoDB
//! change-stream `fullDocument` rendered as Extended JSON, a probe record.
//! Rules read it by dotted path (`process.parent.pid`, `argv.0`) and get a
//! typed [`Value`]; containers are reported by size and never copied.
//!
//! The host (`dac-engine`) serves these lookups to sandboxed rules, and the
//! rule SDK uses the very same code when a rule's tests run natively, so a
//! fixture behaves identically under `cargo test` and inside the sandbox.
//!
//! MongoDB Extended JSON wrappers (`{"$oid": …}`, `{"$date": …}`,
//! `{"$numberLong": …}`, `{"$binary": …}`, …) in canonical, relaxed or legacy
//! form are read as the typed values they stand for. A single-key object
//! whose key is one of those type markers is therefore always read as that
//! type, never as a sub-document.

use base64::Engine as _;
use serde_json::{Map, Value as Json};

pub mod partition;
mod project;
use std::borrow::Cow;

/// A typed value read from an event.
#[derive(Debug, Clone, PartialEq)]
pub enum Value<'a> {
    Null,
    Boolean(bool),
    Integer(i64),
    Float(f64),
    Text(&'a str),
    /// Milliseconds since the Unix epoch, UTC.
    DateTime(i64),
    /// The ObjectId's hex digits as written in the document.
    ObjectId(&'a str),
    Binary(Vec<u8>),
    /// An array with this many elements.
    Array(usize),
    /// An embedded document with this many keys.
    Document(usize),
    /// A BSON type without a variant of its own, as relaxed Extended JSON.
    Other(String),
}

/// Why a document could not become an [`Event`].
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    /// `line` and `column` are 1-based, within the document.
    #[error("invalid JSON: {message}")]
    Json { line: usize, column: usize, message: String },
    #[error("expected a JSON object (a document), found {found}")]
    NotAnObject { found: &'static str },
}

impl ParseError {
    /// Keeps serde_json's position apart from its message, so callers can
    /// report it as FILE:LINE:COLUMN.
    pub fn from_json_error(err: serde_json::Error) -> ParseError {
        let (line, column) = (err.line(), err.column());
        let text = err.to_string();
        let suffix = format!(" at line {line} column {column}");
        let message = text.strip_suffix(&suffix).unwrap_or(&text).to_owned();
        ParseError::Json { line, column, message }
    }
}

/// One event: a JSON object, possibly holding Extended JSON values.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Event {
    root: Map<String, Json>,
}

/// How a byte slice was turned into an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decoding {
    Utf8,
    /// The input held bytes that are not UTF-8; each invalid sequence was
    /// replaced by U+FFFD before parsing. Callers report this, so the repair
    /// is never silent.
    RepairedUtf8,
}

impl Event {
    /// Parses one JSON document. Bytes that are not UTF-8 are replaced by
    /// U+FFFD (see [`Decoding`]) rather than losing the whole event.
    pub fn from_json_slice(bytes: &[u8]) -> Result<(Self, Decoding), ParseError> {
        let (text, decoding) = match std::str::from_utf8(bytes) {
            Ok(text) => (Cow::Borrowed(text), Decoding::Utf8),
            Err(_) => (String::from_utf8_lossy(bytes), Decoding::RepairedUtf8),
        };
        let json: Json = serde_json::from_str(&text).map_err(ParseError::from_json_error)?;
        Ok((Self::from_json(json)?, decoding))
    }

    /// The top-level fields of a JSON object for which `keep` says yes,
    /// with their whole values, and nothing else: an event for reading
    /// those fields, at a fraction of the cost of the whole document (the
    /// other values are checked, not built). `None` where it cannot stand
    /// for [`Event::from_json_slice`]: bytes that are not UTF-8, anything
    /// but an object, or any error; the caller parses the whole document
    /// then, and gets its exact error.
    ///
    /// What it accepts is exactly what the whole parse accepts: the values
    /// it skips go through the same parser (depth limit, number ranges,
    /// strings) without being stored, and a key given twice keeps its last
    /// value, as in the whole event.
    pub fn project_from_slice(bytes: &[u8], keep: &dyn Fn(&str) -> bool) -> Option<Event> {
        let text = std::str::from_utf8(bytes).ok()?;
        let mut deserializer = serde_json::Deserializer::from_str(text);
        let root = serde::de::DeserializeSeed::deserialize(project::Fields { keep }, &mut deserializer).ok()?;
        deserializer.end().ok()?;
        Some(Event { root })
    }

    /// Wraps an already parsed JSON value, which must be an object.
    pub fn from_json(json: Json) -> Result<Self, ParseError> {
        match json {
            Json::Object(root) => Ok(Event { root }),
            other => Err(ParseError::NotAnObject { found: json_kind(&other) }),
        }
    }

    /// The document as JSON, exactly as it was read.
    pub fn as_json(&self) -> &Map<String, Json> {
        &self.root
    }

    pub fn into_json(self) -> Json {
        Json::Object(self.root)
    }

    /// The raw JSON at a dotted path, without Extended JSON interpretation.
    pub fn raw(&self, path: &str) -> Option<&Json> {
        self.lookup(path.split('.'))
    }

    /// The typed value at a dotted path; a numeric segment indexes an array.
    pub fn get(&self, path: &str) -> Option<Value<'_>> {
        self.lookup(path.split('.')).map(typed)
    }

    /// The typed value at a path given as segments (for keys holding dots).
    pub fn get_segments<S: AsRef<str>>(&self, segments: &[S]) -> Option<Value<'_>> {
        self.lookup(segments.iter().map(AsRef::as_ref)).map(typed)
    }

    /// The text at a path, if the value there is text.
    pub fn text(&self, path: &str) -> Option<&str> {
        match self.raw(path)? {
            Json::String(s) => Some(s),
            _ => None,
        }
    }

    /// The keys of the document at `path` (`""` for the top level).
    pub fn keys(&self, path: &str) -> Option<Vec<&str>> {
        let map = if path.is_empty() {
            &self.root
        } else {
            match self.raw(path)? {
                Json::Object(map) if extended_json_type(map).is_none() => map,
                _ => return None,
            }
        };
        Some(map.keys().map(String::as_str).collect())
    }

    /// The document's `_id` as a string: an ObjectId's hex digits, text as
    /// is, anything else as its JSON.
    pub fn id(&self) -> Option<String> {
        let raw = self.root.get("_id")?;
        Some(match typed(raw) {
            Value::ObjectId(hex) => hex.to_owned(),
            Value::Text(text) => text.to_owned(),
            _ => raw.to_string(),
        })
    }

    fn lookup<'p>(&self, mut segments: impl Iterator<Item = &'p str>) -> Option<&Json> {
        let first = segments.next()?;
        let mut current = self.root.get(first)?;
        for segment in segments {
            current = match current {
                Json::Object(map) if extended_json_type(map).is_none() => map.get(segment)?,
                Json::Array(items) => items.get(segment.parse::<usize>().ok()?)?,
                _ => return None,
            };
        }
        Some(current)
    }
}

/// The Extended JSON type marker of a wrapper object, if it is one.
fn extended_json_type(map: &Map<String, Json>) -> Option<&str> {
    let (key, _) = map.iter().next()?;
    if !key.starts_with('$') {
        return None;
    }
    let known = matches!(
        key.as_str(),
        "$oid"
            | "$date"
            | "$numberLong"
            | "$numberInt"
            | "$numberDouble"
            | "$numberDecimal"
            | "$binary"
            | "$uuid"
            | "$timestamp"
            | "$regularExpression"
            | "$regex"
            | "$symbol"
            | "$code"
            | "$minKey"
            | "$maxKey"
            | "$undefined"
            | "$dbPointer"
    );
    // `{"$code": …, "$scope": …}` and legacy `{"$binary": …, "$type": …}`
    // have two keys; every other wrapper has exactly one.
    let arity_ok = map.len() == 1 || (map.len() == 2 && matches!(key.as_str(), "$code" | "$binary" | "$regex"));
    (known && arity_ok).then_some(key.as_str())
}

fn typed(json: &Json) -> Value<'_> {
    match json {
        Json::Null => Value::Null,
        Json::Bool(b) => Value::Boolean(*b),
        Json::Number(n) => match n.as_i64() {
            Some(i) => Value::Integer(i),
            None => Value::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        Json::String(s) => Value::Text(s),
        Json::Array(items) => Value::Array(items.len()),
        Json::Object(map) => match extended_json_type(map) {
            None => Value::Document(map.len()),
            Some(kind) => {
                typed_extended(kind, map).unwrap_or_else(|| Value::Other(Json::Object(map.clone()).to_string()))
            }
        },
    }
}

/// Reads one Extended JSON wrapper; `None` when it is malformed or has no
/// variant of its own, so the caller falls back to [`Value::Other`].
fn typed_extended<'a>(kind: &str, map: &'a Map<String, Json>) -> Option<Value<'a>> {
    let inner = map.get(kind)?;
    match kind {
        "$oid" => inner.as_str().map(Value::ObjectId),
        "$numberLong" | "$numberInt" => inner.as_str()?.parse().ok().map(Value::Integer),
        "$numberDouble" => {
            let text = inner.as_str()?;
            let float = match text {
                "Infinity" => f64::INFINITY,
                "-Infinity" => f64::NEG_INFINITY,
                "NaN" => f64::NAN,
                _ => text.parse().ok()?,
            };
            Some(Value::Float(float))
        }
        "$date" => date_millis(inner).map(Value::DateTime),
        "$binary" => {
            let encoded = match inner {
                Json::Object(fields) => fields.get("base64")?.as_str()?,
                Json::String(legacy) => legacy,
                _ => return None,
            };
            base64::engine::general_purpose::STANDARD.decode(encoded).ok().map(Value::Binary)
        }
        _ => None,
    }
}

fn date_millis(inner: &Json) -> Option<i64> {
    match inner {
        Json::String(iso) => chrono::DateTime::parse_from_rfc3339(iso).ok().map(|dt| dt.timestamp_millis()),
        Json::Number(n) => n.as_i64(),
        Json::Object(long) => long.get("$numberLong")?.as_str()?.parse().ok(),
        _ => None,
    }
}

fn json_kind(json: &Json) -> &'static str {
    match json {
        Json::Null => "null",
        Json::Bool(_) => "a boolean",
        Json::Number(_) => "a number",
        Json::String(_) => "a string",
        Json::Array(_) => "an array",
        Json::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(text: &str) -> Event {
        Event::from_json_slice(text.as_bytes()).unwrap().0
    }

    #[test]
    fn reads_seed_fields_and_reports_absent_ones() {
        let e = event(r#"{"pid":2,"command_line":"/usr/bin/sudo cat /etc/shadow","ok":true,"x":null,"f":1.5}"#);
        assert_eq!(e.get("command_line"), Some(Value::Text("/usr/bin/sudo cat /etc/shadow")));
        assert_eq!(e.get("pid"), Some(Value::Integer(2)));
        assert_eq!(e.get("ok"), Some(Value::Boolean(true)));
        assert_eq!(e.get("x"), Some(Value::Null));
        assert_eq!(e.get("f"), Some(Value::Float(1.5)));
        assert_eq!(e.get("missing"), None);
        assert_eq!(e.get("pid.deeper"), None);
        assert_eq!(e.get(""), None);
    }

    #[test]
    fn walks_nested_documents_and_arrays() {
        let e = event(r#"{"process":{"parent":{"pid":7}},"argv":["cat","/etc/shadow"],"a.b":1}"#);
        assert_eq!(e.get("process.parent.pid"), Some(Value::Integer(7)));
        assert_eq!(e.get("process.parent"), Some(Value::Document(1)));
        assert_eq!(e.get("argv"), Some(Value::Array(2)));
        assert_eq!(e.get("argv.1"), Some(Value::Text("/etc/shadow")));
        assert_eq!(e.get("argv.2"), None);
        assert_eq!(e.get("argv.x"), None);
        assert_eq!(e.get("a.b"), None);
        assert_eq!(e.get_segments(&["a.b"]), Some(Value::Integer(1)));
        assert_eq!(e.keys(""), Some(vec!["process", "argv", "a.b"]));
        assert_eq!(e.keys("process"), Some(vec!["parent"]));
        assert_eq!(e.keys("argv"), None);
    }

    #[test]
    fn reads_extended_json_in_canonical_relaxed_and_legacy_forms() {
        let e = event(
            r#"{"_id":{"$oid":"650b89dfcf00592980c13266"},
                "a":{"$date":"2023-09-21T00:10:07.378Z"},
                "b":{"$date":{"$numberLong":"1695255007378"}},
                "c":{"$date":1695255007378},
                "n":{"$numberLong":"9007199254740993"},
                "i":{"$numberInt":"-4"},
                "d":{"$numberDouble":"-Infinity"},
                "bin":{"$binary":{"base64":"aGk=","subType":"00"}},
                "old":{"$binary":"aGk=","$type":"00"},
                "dec":{"$numberDecimal":"1.10"},
                "bad":{"$date":"yesterday"}}"#,
        );
        assert_eq!(e.get("_id"), Some(Value::ObjectId("650b89dfcf00592980c13266")));
        assert_eq!(e.id().as_deref(), Some("650b89dfcf00592980c13266"));
        for key in ["a", "b", "c"] {
            assert_eq!(e.get(key), Some(Value::DateTime(1695255007378)), "{key}");
        }
        assert_eq!(e.get("n"), Some(Value::Integer(9007199254740993)));
        assert_eq!(e.get("i"), Some(Value::Integer(-4)));
        assert_eq!(e.get("d"), Some(Value::Float(f64::NEG_INFINITY)));
        assert_eq!(e.get("bin"), Some(Value::Binary(b"hi".to_vec())));
        assert_eq!(e.get("old"), Some(Value::Binary(b"hi".to_vec())));
        assert_eq!(e.get("dec"), Some(Value::Other(r#"{"$numberDecimal":"1.10"}"#.into())));
        assert_eq!(e.get("bad"), Some(Value::Other(r#"{"$date":"yesterday"}"#.into())));
        // A wrapper is a leaf, not a document to walk into.
        assert_eq!(e.get("_id.$oid"), None);
        assert_eq!(e.keys("_id"), None);
    }

    #[test]
    fn ids_of_other_types_render_as_json() {
        assert_eq!(event(r#"{"_id":42}"#).id().as_deref(), Some("42"));
        assert_eq!(event(r#"{"_id":"abc"}"#).id().as_deref(), Some("abc"));
        assert_eq!(event(r#"{"_id":{"h":1}}"#).id().as_deref(), Some(r#"{"h":1}"#));
        assert_eq!(event(r#"{}"#).id(), None);
    }

    #[test]
    fn repairs_non_utf8_and_says_so() {
        let (e, decoding) = Event::from_json_slice(b"{\"command_line\":\"cat \xff/etc/shadow\"}").unwrap();
        assert_eq!(decoding, Decoding::RepairedUtf8);
        assert_eq!(e.text("command_line"), Some("cat \u{fffd}/etc/shadow"));
    }

    #[test]
    fn rejects_what_is_not_a_document_with_a_reason() {
        let err = Event::from_json_slice(b"[1,2]").unwrap_err();
        assert_eq!(err.to_string(), "expected a JSON object (a document), found an array");
        let err = Event::from_json_slice(br#"{"a": }"#).unwrap_err();
        assert!(matches!(err, ParseError::Json { line: 1, column: 7, .. }), "{err:?}");
    }
}
