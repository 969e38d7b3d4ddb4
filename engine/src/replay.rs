//! Replay: events from a file or from standard input.
//!
//! Accepts NDJSON (one document per line; `mongoexport`'s default output)
//! and a JSON array of documents (`mongoexport --jsonArray`), told apart by
//! the first non-blank byte. Both are streamed: an array is split into its
//! elements without being held in memory, so `probe | dac run --replay -`
//! sees each event as it arrives. Every document keeps the line it started
//! on, for error messages.

use crate::source::{Body, Incoming, Source, SourceError};
use std::fs::File;
use std::io::{BufRead, BufReader, ErrorKind, Read};
use std::path::Path;

/// The largest document accepted; MongoDB's own limit is 16 MiB, and JSON
/// renderings of such documents run larger.
pub const MAX_DOCUMENT_BYTES: usize = 64 << 20;

pub struct ReplaySource {
    name: String,
    reader: Box<dyn BufRead>,
    format: Option<Format>,
    /// The current line (1-based) at the reader's position.
    line: u64,
    consumed: u64,
    total: Option<u64>,
    document: Vec<u8>,
    /// The array's closing `]` was read.
    finished: bool,
    /// Nothing more will be read.
    stopped: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Lines,
    Array,
}

impl ReplaySource {
    /// Replays a file, or standard input when `path` is `-`.
    pub fn open(path: &Path) -> std::io::Result<ReplaySource> {
        if path == Path::new("-") {
            return Ok(Self::from_reader("<stdin>", std::io::stdin().lock(), None));
        }
        let file = File::open(path)?;
        let total = file.metadata().ok().map(|m| m.len());
        Ok(Self::from_reader(path.display().to_string(), file, total))
    }

    pub fn from_reader(name: impl Into<String>, reader: impl Read + 'static, total: Option<u64>) -> ReplaySource {
        ReplaySource {
            name: name.into(),
            reader: Box::new(BufReader::with_capacity(256 << 10, reader)),
            format: None,
            line: 1,
            consumed: 0,
            total,
            document: Vec::new(),
            finished: false,
            stopped: false,
        }
    }

    /// Skips blank space (and a UTF-8 byte-order mark) and decides the
    /// format from the first byte of content.
    fn sniff(&mut self) -> std::io::Result<Option<Format>> {
        loop {
            let buf = self.reader.fill_buf()?;
            if buf.is_empty() {
                return Ok(None);
            }
            let skip = buf.strip_prefix(b"\xEF\xBB\xBF").map_or(0, |_| 3);
            let blank = buf[skip..].iter().take_while(|b| b.is_ascii_whitespace()).count();
            let newlines = memchr::memchr_iter(b'\n', &buf[skip..skip + blank]).count();
            let first = buf.get(skip + blank).copied();
            self.consume(skip + blank, newlines);
            match first {
                None => continue,
                Some(b'[') => {
                    self.consume(1, 0);
                    return Ok(Some(Format::Array));
                }
                Some(_) => return Ok(Some(Format::Lines)),
            }
        }
    }

    fn consume(&mut self, bytes: usize, newlines: usize) {
        self.reader.consume(bytes);
        self.consumed += bytes as u64;
        self.line += newlines as u64;
    }

    /// Reads one line into `self.document` (without its newline). Returns
    /// whether the line fit under [`MAX_DOCUMENT_BYTES`]; an oversized line
    /// is consumed to its end either way.
    fn read_line(&mut self) -> std::io::Result<Option<bool>> {
        self.document.clear();
        let mut fits = true;
        let mut any = false;
        loop {
            let buf = match self.reader.fill_buf() {
                Ok(buf) => buf,
                Err(err) if err.kind() == ErrorKind::Interrupted => continue,
                Err(err) => return Err(err),
            };
            if buf.is_empty() {
                return Ok(any.then_some(fits));
            }
            any = true;
            let (chunk, used, done) = match memchr::memchr(b'\n', buf) {
                Some(end) => (&buf[..end], end + 1, true),
                None => (buf, buf.len(), false),
            };
            if fits && self.document.len() + chunk.len() <= MAX_DOCUMENT_BYTES {
                self.document.extend_from_slice(chunk);
            } else {
                fits = false;
                self.document.clear();
            }
            self.reader.consume(used);
            self.consumed += used as u64;
            if done {
                return Ok(Some(fits));
            }
        }
    }

    fn next_line(&mut self) -> Option<Result<Incoming<'_>, SourceError>> {
        loop {
            let line = self.line;
            match self.read_line() {
                Err(err) => return Some(Err(SourceError::Io(err))),
                Ok(None) => return None,
                Ok(Some(fits)) => {
                    self.line += 1;
                    if !fits {
                        return Some(Err(SourceError::Malformed {
                            line,
                            reason: format!("document larger than {MAX_DOCUMENT_BYTES} bytes, skipped"),
                        }));
                    }
                    let end = self.document.iter().rposition(|b| !b.is_ascii_whitespace()).map_or(0, |i| i + 1);
                    if end == 0 {
                        continue;
                    }
                    return Some(Ok(Incoming { line, body: Body::Json(&self.document[..end]) }));
                }
            }
        }
    }

    /// Reads the next element of a top-level array by tracking strings and
    /// nesting only; the element itself is parsed later, by the engine.
    fn next_element(&mut self) -> Option<Result<Incoming<'_>, SourceError>> {
        let mut scan = ElementScan::default();
        let mut start_line = None;
        self.document.clear();
        loop {
            let buf = match self.reader.fill_buf() {
                Ok(buf) => buf,
                Err(err) if err.kind() == ErrorKind::Interrupted => continue,
                Err(err) => return Some(Err(SourceError::Io(err))),
            };
            if buf.is_empty() {
                self.stopped = true;
                return Some(Err(SourceError::Malformed {
                    line: start_line.unwrap_or(self.line),
                    reason: "the JSON array is not closed (missing `]`)".into(),
                }));
            }
            let mut newlines = 0;
            let mut taken = buf.len();
            let mut end = None;
            for (i, &byte) in buf.iter().enumerate() {
                if byte == b'\n' {
                    newlines += 1;
                }
                if start_line.is_none() && !byte.is_ascii_whitespace() && !matches!(byte, b',' | b']') {
                    start_line = Some(self.line + newlines as u64);
                }
                if let Some(delimiter) = scan.step(byte) {
                    taken = i + 1;
                    end = Some(delimiter);
                    break;
                }
            }
            let element_bytes = if end.is_some() { taken - 1 } else { taken };
            if self.document.len() + element_bytes <= MAX_DOCUMENT_BYTES {
                self.document.extend_from_slice(&buf[..element_bytes]);
            } else {
                scan.oversized = true;
            }
            self.consume(taken, newlines);
            let Some(delimiter) = end else { continue };
            if delimiter == b']' {
                self.finished = true;
            }
            let line = start_line.unwrap_or(self.line);
            let trimmed = trim(&self.document);
            if scan.oversized {
                return Some(Err(SourceError::Malformed {
                    line,
                    reason: format!("document larger than {MAX_DOCUMENT_BYTES} bytes, skipped"),
                }));
            }
            if trimmed.is_empty() {
                if delimiter == b']' && !scan.seen_comma {
                    return self.after_array();
                }
                return Some(Err(SourceError::Malformed { line, reason: "empty array element".into() }));
            }
            let (start, len) = (trimmed.as_ptr() as usize - self.document.as_ptr() as usize, trimmed.len());
            return Some(Ok(Incoming { line, body: Body::Json(&self.document[start..start + len]) }));
        }
    }

    /// After the closing `]`: only blank space may follow.
    fn after_array(&mut self) -> Option<Result<Incoming<'_>, SourceError>> {
        loop {
            let buf = match self.reader.fill_buf() {
                Ok(buf) => buf,
                Err(err) => return Some(Err(SourceError::Io(err))),
            };
            if buf.is_empty() {
                return None;
            }
            let blank = buf.iter().take_while(|b| b.is_ascii_whitespace()).count();
            let newlines = memchr::memchr_iter(b'\n', &buf[..blank]).count();
            let rest = blank < buf.len();
            self.consume(blank, newlines);
            if rest {
                let line = self.line;
                // Report once and stop reading: what follows is not events.
                self.stopped = true;
                return Some(Err(SourceError::Malformed {
                    line,
                    reason: "unexpected data after the closing `]` of the array; ignored".into(),
                }));
            }
        }
    }
}

fn trim(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|b| !b.is_ascii_whitespace()).unwrap_or(bytes.len());
    let end = bytes.iter().rposition(|b| !b.is_ascii_whitespace()).map_or(start, |i| i + 1);
    &bytes[start..end]
}

/// Just enough of JSON's grammar to find where an array element ends.
#[derive(Default)]
struct ElementScan {
    depth: u32,
    in_string: bool,
    escaped: bool,
    oversized: bool,
    seen_comma: bool,
}

impl ElementScan {
    /// Returns the delimiter (`,` or `]`) when `byte` ends the element.
    fn step(&mut self, byte: u8) -> Option<u8> {
        if self.in_string {
            match byte {
                _ if self.escaped => self.escaped = false,
                b'\\' => self.escaped = true,
                b'"' => self.in_string = false,
                _ => {}
            }
            return None;
        }
        match byte {
            b'"' => self.in_string = true,
            b'{' | b'[' => self.depth += 1,
            b'}' | b']' if self.depth > 0 => self.depth -= 1,
            b',' | b']' if self.depth == 0 => {
                self.seen_comma |= byte == b',';
                return Some(byte);
            }
            _ => {}
        }
        None
    }
}

impl Source for ReplaySource {
    fn name(&self) -> &str {
        &self.name
    }

    fn next_event(&mut self) -> Option<Result<Incoming<'_>, SourceError>> {
        if self.stopped {
            return None;
        }
        let format = match self.format {
            Some(format) => format,
            None => match self.sniff() {
                Err(err) => return Some(Err(SourceError::Io(err))),
                Ok(None) => return None,
                Ok(Some(format)) => {
                    self.format = Some(format);
                    format
                }
            },
        };
        match format {
            Format::Lines => self.next_line(),
            Format::Array if self.finished => self.after_array(),
            Format::Array => self.next_element(),
        }
    }

    fn progress(&self) -> (u64, Option<u64>) {
        (self.consumed, self.total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every item as (line, text or error).
    fn read_all(input: &str) -> Vec<(u64, Result<String, String>)> {
        let mut source = ReplaySource::from_reader("t", std::io::Cursor::new(input.as_bytes().to_vec()), None);
        let mut out = Vec::new();
        while let Some(item) = source.next_event() {
            out.push(match item {
                Ok(Incoming { line, body: Body::Json(json) }) => (line, Ok(String::from_utf8(json.to_vec()).unwrap())),
                Ok(Incoming { body: Body::Document(_) | Body::Idle, .. }) => unreachable!("replay yields JSON"),
                Err(SourceError::Malformed { line, reason }) => (line, Err(reason)),
                Err(err) => panic!("{err}"),
            });
            assert!(out.len() < 100, "source does not end");
        }
        out
    }

    #[test]
    fn ndjson_lines_keep_their_line_numbers_and_skip_blanks() {
        let items = read_all("\n{\"a\":1}\n\n  {\"b\":2}  \r\n{\"c\":3}");
        assert_eq!(
            items,
            vec![(2, Ok(r#"{"a":1}"#.into())), (4, Ok(r#"  {"b":2}"#.into())), (5, Ok(r#"{"c":3}"#.into())),]
        );
    }

    #[test]
    fn arrays_stream_their_elements_with_start_lines() {
        let items = read_all("[\n  {\"a\":\"x,]\\\"\"},\n  {\"b\":[1,{\"c\":2}]}\n,{}]\n\n");
        assert_eq!(
            items,
            vec![(2, Ok(r#"{"a":"x,]\""}"#.into())), (3, Ok(r#"{"b":[1,{"c":2}]}"#.into())), (4, Ok("{}".into())),]
        );
        assert_eq!(read_all("[]"), vec![]);
        assert_eq!(read_all("\u{feff} [ ]\n"), vec![]);
    }

    #[test]
    fn array_damage_is_located_and_reading_goes_on() {
        let items = read_all("[{\"a\":1},\n,\n{\"b\":2}]");
        assert_eq!(items[0], (1, Ok(r#"{"a":1}"#.into())));
        assert_eq!(items[1], (2, Err("empty array element".into())));
        assert_eq!(items[2], (3, Ok(r#"{"b":2}"#.into())));
        let unclosed = read_all("[{\"a\":1},\n{\"b\":");
        assert_eq!(unclosed.last().unwrap().1, Err("the JSON array is not closed (missing `]`)".into()));
        let trailing = read_all("[{\"a\":1}] {\"b\":2}");
        assert_eq!(trailing.len(), 2);
        assert!(trailing[1].1.as_ref().unwrap_err().contains("after the closing"));
    }
}
