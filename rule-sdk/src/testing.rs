//! Native test support: run a rule over its fixture files.
//!
//! A rule crate keeps two NDJSON files next to its `Cargo.toml`:
//! `fixtures/must_fire.ndjson` (every event must yield at least one finding)
//! and `fixtures/must_not_fire.ndjson` (no event may yield one). The same
//! files are replayed through the compiled component by the host's tests,
//! so native and sandboxed behaviour are held to one standard.
//!
//! A rule that keeps state (see [`crate::State`]) fires on a sequence of
//! events rather than on one: its cases go in `fixtures/sequences.ndjson`,
//! one per line, `{"case": "…", "events": [{…}, …], "fire": [false, …,
//! true]}` — the events in order and, for each, whether it must fire. Each
//! case starts from empty state. Such a rule may have no single-event
//! fixtures at all.

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

/// The file of multi-event cases in a fixtures directory.
pub const SEQUENCES: &str = "sequences.ndjson";

/// Empties the test thread's keyed state ([`crate::State`]): each fixture
/// event, and each sequence, starts from nothing.
pub fn reset_state() {
    crate::state::native::STORE.with_borrow_mut(|(store, journal)| {
        *store = dac_state::Store::new(store.limits().clone());
        journal.commit();
    });
}

/// Runs rule `R` over the fixture file for `expect` in `dir` and panics
/// with every event that went the wrong way, by file and line. Each event
/// starts from empty state. A rule tested only by sequences
/// ([`check_sequences`]) may have no such file.
pub fn check_fixtures<R: Rule>(dir: &Path, expect: Expect) {
    let path = dir.join(expect.file_name());
    if !path.exists() && dir.join(SEQUENCES).exists() {
        return;
    }
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
        reset_state();
        let findings = R::evaluate(&event);
        let fired = !findings.is_empty();
        if fired != (expect == Expect::Fire) {
            let verdict = if fired { "fired but must not" } else { "did not fire but must" };
            failures.push(format!("{}:{}: {verdict} ({:?}): {}", path.display(), fixture.line, findings, fixture.json));
        }
    }
    assert!(failures.is_empty(), "{} of {} fixtures failed:\n{}", failures.len(), fixtures.len(), failures.join("\n"));
}

/// Runs rule `R` over each case of `sequences.ndjson` in `dir` (if there
/// is one), from empty state, skipping the events its prefilter rejects
/// as the host does, and panics with every event that went the
/// wrong way, by line and position in its case.
pub fn check_sequences<R: Rule>(dir: &Path) {
    let path = dir.join(SEQUENCES);
    if !path.exists() {
        return;
    }
    let cases = read_fixtures(&path).unwrap_or_else(|err| panic!("{err}"));
    assert!(!cases.is_empty(), "{}: no cases", path.display());
    let mut failures = Vec::new();
    for case in &cases {
        let at = format!("{}:{}", path.display(), case.line);
        let parsed: serde_json::Value =
            serde_json::from_str(&case.json).unwrap_or_else(|err| panic!("{at}: not JSON: {err}"));
        let name = parsed["case"].as_str().unwrap_or("(unnamed)");
        let (Some(events), Some(fire)) = (parsed["events"].as_array(), parsed["fire"].as_array()) else {
            panic!("{at}: a case needs `events` (a list of events) and `fire` (one true or false per event)");
        };
        assert_eq!(events.len(), fire.len(), "{at}: `fire` needs one true or false per event");
        reset_state();
        for (index, (event, fire)) in events.iter().zip(fire).enumerate() {
            let must = fire.as_bool().unwrap_or_else(|| panic!("{at}: `fire` holds {fire}, not true or false"));
            let event = Event::from_value(event.clone()).unwrap_or_else(|err| panic!("{at}: event {index}: {err}"));
            // As in the host: an event the prefilter rejects is never
            // evaluated, so it can neither fire nor touch the state.
            let findings = if admits::<R>(&event) { R::evaluate(&event) } else { Vec::new() };
            if findings.is_empty() == must {
                let verdict = if must { "did not fire but must" } else { "fired but must not" };
                failures.push(format!("{at}: {name}: event {index} {verdict} ({findings:?})"));
            }
        }
    }
    assert!(failures.is_empty(), "{} events went the wrong way:\n{}", failures.len(), failures.join("\n"));
}

/// Checks that rule `R`'s prefilter admits every event of the
/// `must_fire.ndjson` in `dir`, and panics with each one it rejects: the host
/// never evaluates an event the prefilter rejects, so such a fixture passes
/// natively but could never fire in the host.
pub fn check_prefilter<R: Rule>(dir: &Path) {
    let path = dir.join(Expect::Fire.file_name());
    if !path.exists() {
        return;
    }
    let rejected: Vec<String> = read_fixtures(&path)
        .unwrap_or_else(|err| panic!("{err}"))
        .into_iter()
        .filter(|fixture| !admits::<R>(&Event::from_json(&fixture.json)))
        .map(|fixture| format!("{}:{}: rejected by the prefilter", path.display(), fixture.line))
        .collect();
    assert!(rejected.is_empty(), "{}", rejected.join("\n"));
}

/// Whether rule `R`'s prefilter lets the host evaluate `event` (always,
/// without a prefilter).
pub fn admits<R: Rule>(event: &Event) -> bool {
    let Some(prefilter) = R::metadata().prefilter else {
        return true;
    };
    let occurs = |text: &str, literal: &str| {
        if prefilter.ascii_case_insensitive {
            contains_ignore_ascii_case(text, literal)
        } else {
            text.contains(literal)
        }
    };
    prefilter
        .fields
        .iter()
        .filter_map(|field| event.text(field))
        .any(|text| prefilter.literals.iter().any(|literal| occurs(&text, literal)))
}

/// The findings of rule `R` for an event holding only `command_line`.
pub fn evaluate_command_line<R: Rule>(command_line: &str) -> Vec<Finding> {
    R::evaluate(&Event::from_json(&serde_json::json!({ "command_line": command_line }).to_string()))
}
