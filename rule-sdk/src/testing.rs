//! Native test support: run a rule over its fixture files.
//!
//! A rule crate keeps two NDJSON files next to its `Cargo.toml`:
//! `fixtures/must_fire.ndjson` (every event must yield at least one finding)
//! and `fixtures/must_not_fire.ndjson` (no event may yield one). The same
//! files are replayed through the compiled component by the host's tests,
//! so native and sandboxed behaviour are held to one standard.

use crate::{Event, Rule};
use std::path::{Path, PathBuf};

/// Which way a fixture file's events must go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    Fire,
    NoFire,
}

impl Expect {
    pub fn file_name(self) -> &'static str {
        match self {
            Expect::Fire => "must_fire.ndjson",
            Expect::NoFire => "must_not_fire.ndjson",
        }
    }
}

/// One fixture event: where it is and what it is.
#[derive(Debug, Clone)]
pub struct Fixture {
    pub file: PathBuf,
    pub line: usize,
    pub json: String,
}

/// Reads the non-blank lines of a fixture file.
pub fn read_fixtures(path: &Path) -> Result<Vec<Fixture>, String> {
    let text = std::fs::read_to_string(path).map_err(|err| format!("{}: {err}", path.display()))?;
    Ok(text
        .lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(index, line)| Fixture { file: path.to_owned(), line: index + 1, json: line.to_owned() })
        .collect())
}

/// Runs rule `R` over the fixture file for `expect` in `dir` and panics
/// with every event that went the wrong way, by file and line.
pub fn check_fixtures<R: Rule>(dir: &Path, expect: Expect) {
    let path = dir.join(expect.file_name());
    let fixtures = read_fixtures(&path).unwrap_or_else(|err| panic!("{err}"));
    assert!(!fixtures.is_empty(), "{}: no fixture events", path.display());
    let mut failures = Vec::new();
    for fixture in &fixtures {
        let event = match dac_event::Event::from_json_slice(fixture.json.as_bytes()) {
            Ok(_) => Event::from_json(&fixture.json),
            Err(err) => {
                failures.push(format!("{}:{}: invalid event: {err}", path.display(), fixture.line));
                continue;
            }
        };
        let findings = R::evaluate(&event);
        let fired = !findings.is_empty();
        if fired != (expect == Expect::Fire) {
            let verdict = if fired { "fired but must not" } else { "did not fire but must" };
            failures.push(format!("{}:{}: {verdict} ({:?}): {}", path.display(), fixture.line, findings, fixture.json));
        }
    }
    assert!(failures.is_empty(), "{} of {} fixtures failed:\n{}", failures.len(), fixtures.len(), failures.join("\n"));
}
