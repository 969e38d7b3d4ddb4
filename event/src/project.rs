//! [`Event::project_from_slice`](crate::Event::project_from_slice): a
//! document's top-level object, keeping only some fields.
//!
//! The kept values are deserialized as `serde_json::Value`, exactly as the
//! whole document would be; the others are walked with `deserialize_any`
//! (the parser `Value` itself uses, with its depth limit and number
//! checks) into a visitor that stores nothing. serde_json's own
//! `IgnoredAny` would be faster, but it skips without the depth limit,
//! and would accept documents the whole parse refuses.

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value as Json};
use std::fmt;

/// The top-level object, keeping the fields `keep` names.
pub(crate) struct Fields<'k> {
    pub keep: &'k dyn Fn(&str) -> bool,
}

impl<'de> DeserializeSeed<'de> for Fields<'_> {
    type Value = Map<String, Json>;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Fields<'_> {
    type Value = Map<String, Json>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut kept = Map::new();
        while let Some(key) = map.next_key::<Key<'de>>()? {
            if (self.keep)(key.as_str()) {
                let value: Json = map.next_value()?;
                kept.insert(key.into_owned(), value);
            } else {
                map.next_value::<Checked>()?;
            }
        }
        Ok(kept)
    }
}

/// A key, borrowed from the document unless it holds escapes.
enum Key<'de> {
    Borrowed(&'de str),
    Owned(String),
}

impl Key<'_> {
    fn as_str(&self) -> &str {
        match self {
            Key::Borrowed(s) => s,
            Key::Owned(s) => s,
        }
    }

    fn into_owned(self) -> String {
        match self {
            Key::Borrowed(s) => s.to_owned(),
            Key::Owned(s) => s,
        }
    }
}

impl<'de> de::Deserialize<'de> for Key<'de> {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a key")
            }
            fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Key<'de>, E> {
                Ok(Key::Borrowed(s))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Key<'de>, E> {
                Ok(Key::Owned(s.to_owned()))
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
}

/// Any value, parsed as `Value` would be and then forgotten.
struct Checked;

impl<'de> de::Deserialize<'de> for Checked {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(CheckedVisitor)
    }
}

struct CheckedVisitor;

impl<'de> Visitor<'de> for CheckedVisitor {
    type Value = Checked;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Checked, A::Error> {
        while seq.next_element::<Checked>()?.is_some() {}
        Ok(Checked)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Checked, A::Error> {
        while map.next_key::<Checked>()?.is_some() {
            map.next_value::<Checked>()?;
        }
        Ok(Checked)
    }
}

#[cfg(test)]
mod tests {
    use crate::Event;

    fn keep(key: &str) -> bool {
        matches!(key, "command_line" | "process")
    }

    /// The projection holds exactly the kept fields of the whole parse.
    fn same_as_whole(json: &str) {
        let whole = Event::from_json_slice(json.as_bytes()).map(|(event, _)| event);
        let projected = Event::project_from_slice(json.as_bytes(), &keep);
        match (whole, projected) {
            (Ok(whole), Some(projected)) => {
                let kept: Vec<_> = whole.as_json().iter().filter(|(k, _)| keep(k)).collect();
                let got: Vec<_> = projected.as_json().iter().collect();
                assert_eq!(kept, got, "{json}");
            }
            (Err(_), None) => {}
            (whole, projected) => panic!("{json}: whole {:?}, projected {:?}", whole.is_ok(), projected.is_some()),
        }
    }

    #[test]
    fn a_projection_keeps_the_kept_fields_and_accepts_what_the_whole_parse_accepts() {
        let deep = format!(r#"{{"command_line": "x", "other": {}1{}}}"#, "[".repeat(200), "]".repeat(200));
        let shallow = format!(r#"{{"command_line": "x", "other": {}1{}}}"#, "[".repeat(100), "]".repeat(100));
        for json in [
            r#"{"command_line": "cat /etc/shadow", "hostname": "h", "pid": 7}"#,
            r#"{"pid": 7, "command_line": "a \"quoted\" \u002fbin\/sh", "ts": {"$date": 1}}"#,
            r#"{"command_line": "first", "command_line": "last"}"#,
            r#"{"process": {"parent": {"path": "/bin/sh"}}, "x": [1, 2.5, -3e10, true, null]}"#,
            r#"{"comm\u0061nd_line": "escaped key"}"#,
            r#"{"command_line": "x", "big": 1e400}"#,
            r#"{"command_line": "x", "bad": "control "}"#,
            r#"{"command_line": "x", "trailing": 1,}"#,
            r#"{"command_line": "x"} {"another": 1}"#,
            r#"["not", "an", "object"]"#,
            r#"{"command_line": "x", "n": 18446744073709551616}"#,
            "",
            &deep,
            &shallow,
        ] {
            same_as_whole(json);
        }
        assert!(Event::project_from_slice(b"{\"command_line\": \"\xff\"}", &keep).is_none(), "not UTF-8");
        // Refused by both, for what the skipped values hold.
        for refused in [deep.as_str(), r#"{"command_line": "x", "big": 1e400}"#] {
            assert!(
                Event::from_json_slice(refused.as_bytes()).is_err()
                    && Event::project_from_slice(refused.as_bytes(), &keep).is_none()
            );
        }
    }
}
