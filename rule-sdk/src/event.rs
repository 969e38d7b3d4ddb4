//! The event a rule reads: a host resource inside the sandbox, a
//! `dac_event::Event` natively. Both answer the same lookups identically.

use crate::Value;

/// The event under evaluation. Read fields by dotted path; a numeric segment
/// indexes an array (`argv.0`). Absent fields are `None`, never an error.
#[cfg(target_arch = "wasm32")]
pub struct Event {
    /// The host's batch, lent for the call that made this `Event` (which
    /// never outlives it: see [`Event::in_batch`]), and the event's
    /// position in it.
    batch: *const crate::bindings::dac::rule::types::Batch,
    index: u32,
    /// The declared fields (`Metadata::fields`), their values in this
    /// event and the batch's text buffer, which came with the call.
    names: &'static [String],
    row: *const [crate::bindings::dac::rule::types::Field],
    text: *const [u8],
}

/// The event under evaluation. Read fields by dotted path; a numeric segment
/// indexes an array (`argv.0`). Absent fields are `None`, never an error.
#[cfg(not(target_arch = "wasm32"))]
#[derive(Debug, Clone)]
pub struct Event {
    inner: dac_event::Event,
}

#[cfg(target_arch = "wasm32")]
impl Event {
    /// The event at `index` in `batch`, with its declared fields' values
    /// (`row`, text in `text`). The glue in `component.rs` lends it to the
    /// rule for one evaluation and drops it before the call that lent
    /// `batch`, `row` and `text` returns.
    #[doc(hidden)]
    pub fn in_batch(
        batch: &crate::bindings::dac::rule::types::Batch,
        index: u32,
        names: &'static [String],
        row: &[crate::bindings::dac::rule::types::Field],
        text: &[u8],
    ) -> Event {
        Event { batch, index, names, row, text }
    }

    /// The event's position in its batch, by which the host knows which
    /// event a state operation is for.
    pub(crate) fn index(&self) -> u32 {
        self.index
    }

    fn batch(&self) -> &crate::bindings::dac::rule::types::Batch {
        // SAFETY: an `Event` only lives within the host call that lent the
        // batch (`in_batch`), and the rule only sees it by reference.
        unsafe { &*self.batch }
    }

    pub fn get(&self, path: &str) -> Option<Value> {
        use crate::bindings::dac::rule::types::Field;
        let Some(at) = self.names.iter().position(|name| name == path) else {
            return self.batch().get(self.index, path).map(Value::from);
        };
        // SAFETY: as for `batch`: the row and the text live for the call.
        let (row, text) = unsafe { (&*self.row, &*self.text) };
        match row.get(at)? {
            Field::Absent => None,
            Field::Text(span) => {
                let start = span.start as usize;
                let bytes = text.get(start..start.checked_add(span.len as usize)?)?;
                Some(Value::Text(String::from_utf8_lossy(bytes).into_owned()))
            }
            Field::Value(value) => Some(Value::from(value.clone())),
        }
    }

    pub fn get_segments(&self, segments: &[&str]) -> Option<Value> {
        let segments: Vec<String> = segments.iter().map(|s| s.to_string()).collect();
        self.batch().get_segments(self.index, &segments).map(Value::from)
    }

    pub fn keys(&self, path: &str) -> Option<Vec<String>> {
        self.batch().keys(self.index, path)
    }
}

#[cfg(not(target_arch = "wasm32"))]
impl Event {
    /// Parses an event from JSON (MongoDB Extended JSON allowed), as the host
    /// would. Panics with the reason on invalid input: this is for tests.
    pub fn from_json(json: &str) -> Event {
        match dac_event::Event::from_json_slice(json.as_bytes()) {
            Ok((inner, _)) => Event { inner },
            Err(err) => panic!("invalid test event: {err}\n{json}"),
        }
    }

    pub fn from_value(json: serde_json::Value) -> Result<Event, dac_event::ParseError> {
        dac_event::Event::from_json(json).map(|inner| Event { inner })
    }

    pub fn get(&self, path: &str) -> Option<Value> {
        self.inner.get(path).map(Value::from)
    }

    pub fn get_segments(&self, segments: &[&str]) -> Option<Value> {
        self.inner.get_segments(segments).map(Value::from)
    }

    pub fn keys(&self, path: &str) -> Option<Vec<String>> {
        self.inner.keys(path).map(|keys| keys.into_iter().map(str::to_owned).collect())
    }
}

impl Event {
    /// The text at `path`, if the value there is text.
    pub fn text(&self, path: &str) -> Option<String> {
        match self.get(path)? {
            Value::Text(text) => Some(text),
            _ => None,
        }
    }

    /// The integer at `path`, if the value there is an integer.
    pub fn integer(&self, path: &str) -> Option<i64> {
        match self.get(path)? {
            Value::Integer(value) => Some(value),
            _ => None,
        }
    }

    /// Whether anything (even null) is stored at `path`.
    pub fn has(&self, path: &str) -> bool {
        self.get(path).is_some()
    }
}

#[cfg(not(target_arch = "wasm32"))]
impl From<dac_event::Value<'_>> for Value {
    fn from(value: dac_event::Value<'_>) -> Value {
        use dac_event::Value as V;
        // Sizes above u32::MAX cannot occur: documents are at most 16 MB.
        let size = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        match value {
            V::Null => Value::Null,
            V::Boolean(b) => Value::Boolean(b),
            V::Integer(i) => Value::Integer(i),
            V::Float(f) => Value::Float(f),
            V::Text(s) => Value::Text(s.to_owned()),
            V::DateTime(ms) => Value::DateTime(ms),
            V::ObjectId(hex) => Value::ObjectId(hex.to_owned()),
            V::Binary(bytes) => Value::Binary(bytes),
            V::Array(n) => Value::Array(size(n)),
            V::Document(n) => Value::Document(size(n)),
            V::Other(json) => Value::Other(json),
        }
    }
}

#[cfg(target_arch = "wasm32")]
impl From<crate::bindings::dac::rule::types::Value> for Value {
    fn from(value: crate::bindings::dac::rule::types::Value) -> Value {
        use crate::bindings::dac::rule::types::Value as V;
        match value {
            V::Null => Value::Null,
            V::Boolean(b) => Value::Boolean(b),
            V::Integer(i) => Value::Integer(i),
            V::Float(f) => Value::Float(f),
            V::Text(s) => Value::Text(s),
            V::Datetime(ms) => Value::DateTime(ms),
            V::ObjectId(hex) => Value::ObjectId(hex),
            V::Binary(bytes) => Value::Binary(bytes),
            V::Array(n) => Value::Array(n),
            V::Document(n) => Value::Document(n),
            V::Other(json) => Value::Other(json),
        }
    }
}
