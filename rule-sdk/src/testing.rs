//! Native test support: run a rule over its fixture files.
//!
//! A rule crate keeps two NDJSON files next to its `Cargo.toml`:
//! `fixtures/must_fire.ndjson` (every event must yield at least one finding)
//! and `fixtures/must_not_fire.ndjson` (no event may yield one). The same
//! files are replayed through the compiled component by the host's tests,
//! so native and sandboxed behaviour are held to one standard.

use crate::matchers::contains_ignore_ascii_case;
use crate::{Event, Finding, Rule};
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

/// Checks that rule `R`'s prefilter admits every event of the
/// `must_fire.ndjson` in `dir`, and panics with each one it rejects: the host
/// never evaluates an event the prefilter rejects, so such a fixture passes
/// natively but could never fire in the host.
pub fn check_prefilter<R: Rule>(dir: &Path) {
    let Some(prefilter) = R::metadata().prefilter else {
        return;
    };
    let occurs = |text: &str, literal: &str| {
        if prefilter.ascii_case_insensitive {
            contains_ignore_ascii_case(text, literal)
        } else {
            text.contains(literal)
        }
    };
    let path = dir.join(Expect::Fire.file_name());
    let rejected: Vec<String> = read_fixtures(&path)
        .unwrap_or_else(|err| panic!("{err}"))
        .into_iter()
        .filter(|fixture| {
            let event = Event::from_json(&fixture.json);
            !prefilter
                .fields
                .iter()
                .filter_map(|field| event.text(field))
                .any(|text| prefilter.literals.iter().any(|literal| occurs(&text, literal)))
        })
        .map(|fixture| format!("{}:{}: rejected by the prefilter", path.display(), fixture.line))
        .collect();
    assert!(rejected.is_empty(), "{}", rejected.join("\n"));
}

/// The findings of rule `R` for an event holding only `command_line`.
pub fn evaluate_command_line<R: Rule>(command_line: &str) -> Vec<Finding> {
    R::evaluate(&Event::from_json(&serde_json::json!({ "command_line": command_line }).to_string()))
}
