//! `dac test`: rule test cases kept next to the rules, for every kind of
//! rule — components, the seed's YAML, Sigma.
//!
//! # Where cases are found
//!
//! - **Beside a rule file**: `NAME.tests.ndjson` next to `NAME.wasm`,
//!   `NAME.yaml` or `NAME.yml`. A directory's cases run against *all* the
//!   rule files of that directory loaded together (so a case can say which
//!   rules, and only those, fire on an event).
//! - **In a Rust rule crate** (a directory with `Cargo.toml` and
//!   `fixtures/`): `fixtures/must_fire.ndjson` and
//!   `fixtures/must_not_fire.ndjson` (one event per line, as the SDK's
//!   native fixture tests read them) and `fixtures/tests.ndjson` (cases),
//!   run against the crate's component as `scripts/build-rules` leaves it:
//!   `target/rule-components/<crate>.wasm` in the crate's workspace.
//!
//! # A case
//!
//! One JSON object per line:
//!
//! ```json
//! {"name": "the seed talk's event", "event": {"command_line": "/usr/bin/sudo cat /etc/shadow"},
//!  "expect": "fire", "uuids": ["5e3566a3-9f19-4ac7-8710-ec5fb09260ed"],
//!  "matched": {"command_line": "/usr/bin/sudo cat /etc/shadow"}}
//! ```
//!
//! `expect` (`fire` / `no-fire`) is about the rules of the file the cases
//! are named after; `uuids`, optional, lists exactly the alerts (of the
//! rules loaded together) the case must raise, in any order, a uuid once
//! per alert; `matched`, optional, field values the rule's findings must
//! report. `name` is optional. Blank lines and lines starting with `//` are
//! skipped.
//!
//! A case about several events — a Sigma correlation's — gives `events`, a
//! list of events in stream order, instead of `event`:
//!
//! ```json
//! {"name": "two bursts: two alerts", "events": [{"hostname": "a", "ts": 1000, "command_line": "id"}, …],
//!  "expect": "fire", "uuids": ["0f7c2a43-…", "0f7c2a43-…"]}
//! ```
//!
//! Events go through the engine's real path — raw bytes, prefilter, one
//! parse, then correlations and `generate` as `dac run` delivers alerts —
//! so a prefilter that would drop a firing event fails its case. Every case
//! starts with empty correlation windows.

use dac_engine::{
    is_rule_file, rule_files, Alert, AlertPolicy, Delivery, DeliveryError, Engine, Finding, Input, LoadedRule,
    Location, Notice, Observer, RuleLoader, Sink, SinkError, Stats,
};
use serde_json::Value as Json;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// What a case expects of its rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    Fire,
    NoFire,
}

/// One test case: an event and what must happen to it.
#[derive(Debug, Clone)]
pub struct Case {
    /// `FILE:LINE` and the case's name, if it has one.
    pub name: String,
    /// The rule file the case is about.
    pub rule: PathBuf,
    /// The events, in order (one for most cases).
    pub events: Vec<String>,
    pub expect: Expect,
    pub uuids: Option<Vec<String>>,
    pub matched: BTreeMap<String, String>,
    /// For a sequence (a Rust rule crate's `fixtures/sequences.ndjson`):
    /// whether the rule must fire on each event, in order.
    pub fire: Option<Vec<bool>>,
}

/// Rules loaded together and the cases run against them.
#[derive(Debug, Clone)]
pub struct Suite {
    /// The directory or crate, for the report.
    pub name: String,
    pub rules: Vec<PathBuf>,
    pub cases: Vec<Case>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Passed,
    Failed(String),
    /// The case could not run: its rules do not load, its event is not JSON.
    Error(String),
}

#[derive(Debug, Clone)]
pub struct CaseResult {
    pub name: String,
    pub verdict: Verdict,
    pub time: Duration,
}

#[derive(Debug, Clone)]
pub struct SuiteResult {
    pub name: String,
    pub cases: Vec<CaseResult>,
    pub time: Duration,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Totals {
    pub passed: usize,
    pub failed: usize,
    pub errors: usize,
}

impl Totals {
    pub fn of(results: &[SuiteResult]) -> Totals {
        let mut totals = Totals::default();
        for case in results.iter().flat_map(|s| &s.cases) {
            match case.verdict {
                Verdict::Passed => totals.passed += 1,
                Verdict::Failed(_) => totals.failed += 1,
                Verdict::Error(_) => totals.errors += 1,
            }
        }
        totals
    }

    pub fn total(&self) -> usize {
        self.passed + self.failed + self.errors
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TestError {
    #[error("{0}: no such file or directory")]
    Missing(PathBuf),
    #[error("{file}: {source}")]
    Read {
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}:{line}: {message}")]
    Case { file: PathBuf, line: usize, message: String },
    #[error("{0}: no rule file beside it (NAME.wasm, NAME.yaml or NAME.yml)")]
    NoRule(PathBuf),
    #[error("{0}: a rule without test cases (expected {1} beside it)")]
    NoCases(PathBuf, String),
}

/// Finds the suites under `paths` (files or directories, searched
/// recursively; `target/` and hidden directories are skipped).
pub fn discover(paths: &[PathBuf]) -> Result<Vec<Suite>, TestError> {
    let mut suites = Vec::new();
    for path in paths {
        if path.is_dir() {
            discover_dir(path, &mut suites)?;
        } else if path.is_file() {
            suites.push(file_suite(path)?);
        } else {
            return Err(TestError::Missing(path.clone()));
        }
    }
    Ok(suites)
}

/// The cases file of a rule file: `NAME.tests.ndjson`.
pub fn cases_file(rule: &Path) -> PathBuf {
    let stem = rule.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    rule.with_file_name(format!("{stem}.tests.ndjson"))
}

/// The rule file a cases file belongs to.
fn rule_of(cases: &Path) -> Option<PathBuf> {
    let name = cases.file_name()?.to_str()?;
    let stem = name.strip_suffix(".tests.ndjson")?;
    ["wasm", "yaml", "yml"].iter().map(|ext| cases.with_file_name(format!("{stem}.{ext}"))).find(|p| p.is_file())
}

fn file_suite(path: &Path) -> Result<Suite, TestError> {
    let (rule, cases) = if path.to_string_lossy().ends_with(".tests.ndjson") {
        (rule_of(path).ok_or_else(|| TestError::NoRule(path.to_owned()))?, path.to_owned())
    } else {
        let cases = cases_file(path);
        if !cases.is_file() {
            return Err(TestError::NoCases(path.to_owned(), cases.display().to_string()));
        }
        (path.to_owned(), cases)
    };
    Ok(Suite { name: path.display().to_string(), rules: vec![rule.clone()], cases: read_cases(&cases, &rule)? })
}

fn discover_dir(dir: &Path, suites: &mut Vec<Suite>) -> Result<(), TestError> {
    let read = |dir: &Path| -> Result<Vec<PathBuf>, TestError> {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
            .and_then(|entries| entries.map(|e| e.map(|e| e.path())).collect())
            .map_err(|source| TestError::Read { file: dir.to_owned(), source })?;
        entries.sort();
        Ok(entries)
    };
    if dir.join("Cargo.toml").is_file() && dir.join("fixtures").is_dir() {
        if let Some(suite) = crate_suite(dir)? {
            suites.push(suite);
        }
    } else {
        let rules = rule_files(dir).map_err(|source| TestError::Read { file: dir.to_owned(), source })?;
        let mut cases = Vec::new();
        for rule in &rules {
            let file = cases_file(rule);
            if file.is_file() {
                cases.extend(read_cases(&file, rule)?);
            }
        }
        for entry in read(dir)? {
            let name = entry.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if name.ends_with(".tests.ndjson") && rule_of(&entry).is_none() {
                return Err(TestError::NoRule(entry));
            }
        }
        if !cases.is_empty() {
            suites.push(Suite { name: dir.display().to_string(), rules, cases });
        }
    }
    for entry in read(dir)? {
        let name = entry.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if entry.is_dir() && !name.starts_with('.') && name != "target" && name != "fixtures" {
            discover_dir(&entry, suites)?;
        }
    }
    Ok(())
}

/// A Rust rule crate: its fixtures against its built component.
fn crate_suite(dir: &Path) -> Result<Option<Suite>, TestError> {
    let manifest = dir.join("Cargo.toml");
    let text =
        std::fs::read_to_string(&manifest).map_err(|source| TestError::Read { file: manifest.clone(), source })?;
    let package = toml::from_str::<toml::Table>(&text)
        .ok()
        .and_then(|t| t.get("package")?.get("name")?.as_str().map(str::to_owned));
    let Some(package) = package else { return Ok(None) };
    let component = format!("{}.wasm", package.replace('-', "_"));
    // The workspace's target directory: the nearest ancestor that has one.
    let rule = dir
        .ancestors()
        .map(|a| a.join("target/rule-components").join(&component))
        .find(|p| p.is_file())
        .unwrap_or_else(|| dir.join("target/rule-components").join(&component));
    let fixtures = dir.join("fixtures");
    let mut cases = Vec::new();
    for (file, expect) in [("must_fire.ndjson", Expect::Fire), ("must_not_fire.ndjson", Expect::NoFire)] {
        let path = fixtures.join(file);
        if !path.is_file() {
            continue;
        }
        let text = std::fs::read_to_string(&path).map_err(|source| TestError::Read { file: path.clone(), source })?;
        for (index, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            cases.push(Case {
                name: format!("{}:{}", path.display(), index + 1),
                rule: rule.clone(),
                events: vec![line.to_owned()],
                expect,
                uuids: None,
                matched: BTreeMap::new(),
                fire: None,
            });
        }
    }
    let extra = fixtures.join("tests.ndjson");
    if extra.is_file() {
        cases.extend(read_cases(&extra, &rule)?);
    }
    let sequences = fixtures.join("sequences.ndjson");
    if sequences.is_file() {
        cases.extend(read_sequences(&sequences, &rule)?);
    }
    Ok((!cases.is_empty()).then(|| Suite { name: dir.display().to_string(), rules: vec![rule], cases }))
}

/// Reads a Rust rule crate's `fixtures/sequences.ndjson` (the SDK's format,
/// `dac_rule_sdk::testing`): one case per line, `{"case": "…", "events":
/// [{…}, …], "fire": [false, …, true]}`.
fn read_sequences(file: &Path, rule: &Path) -> Result<Vec<Case>, TestError> {
    let text = std::fs::read_to_string(file).map_err(|source| TestError::Read { file: file.to_owned(), source })?;
    let mut cases = Vec::new();
    for (index, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let bad = |message: &str| TestError::Case { file: file.to_owned(), line: index + 1, message: message.into() };
        let value: Json = serde_json::from_str(line).map_err(|err| bad(&format!("not JSON: {err}")))?;
        let events = value["events"]
            .as_array()
            .filter(|events| {
                !events.is_empty() && events.len() <= MAX_CASE_EVENTS && events.iter().all(Json::is_object)
            })
            .ok_or_else(|| bad(&format!("`events` must be a list of 1 to {MAX_CASE_EVENTS} JSON objects")))?;
        let fire = value["fire"]
            .as_array()
            .and_then(|fire| fire.iter().map(Json::as_bool).collect::<Option<Vec<bool>>>())
            .filter(|fire| fire.len() == events.len())
            .ok_or_else(|| bad("`fire` must hold one true or false per event"))?;
        let name = value["case"].as_str().map_or_else(String::new, |name| format!(" {name}"));
        cases.push(Case {
            name: format!("{}:{}{name}", file.display(), index + 1),
            rule: rule.to_owned(),
            events: events.iter().map(Json::to_string).collect(),
            expect: if fire.contains(&true) { Expect::Fire } else { Expect::NoFire },
            uuids: None,
            matched: BTreeMap::new(),
            fire: Some(fire),
        });
    }
    Ok(cases)
}

/// Reads a cases file; a malformed case is an error naming its line.
pub fn read_cases(file: &Path, rule: &Path) -> Result<Vec<Case>, TestError> {
    let text = std::fs::read_to_string(file).map_err(|source| TestError::Read { file: file.to_owned(), source })?;
    let mut cases = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line_no = index + 1;
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with("//") {
            continue;
        }
        let bad = |message: String| TestError::Case { file: file.to_owned(), line: line_no, message };
        let value: Json = serde_json::from_str(trimmed).map_err(|err| bad(format!("not JSON: {err}")))?;
        let Json::Object(mut case) = value else { return Err(bad("a case is a JSON object".into())) };
        let events = match (case.remove("event"), case.remove("events")) {
            (Some(event @ Json::Object(_)), None) => vec![event.to_string()],
            (Some(_), None) => return Err(bad("`event` must be a JSON object".into())),
            (None, Some(Json::Array(events))) if !events.is_empty() && events.len() <= MAX_CASE_EVENTS => events
                .into_iter()
                .map(|e| if e.is_object() { Some(e.to_string()) } else { None })
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| bad("`events` must be a list of JSON objects".into()))?,
            (None, Some(_)) => {
                return Err(bad(format!("`events` must be a list of 1 to {MAX_CASE_EVENTS} JSON objects")))
            }
            (Some(_), Some(_)) => return Err(bad("both `event` and `events`: give one".into())),
            (None, None) => return Err(bad("missing `event` (or `events`, for several)".into())),
        };
        let expect = match case.remove("expect").as_ref().and_then(Json::as_str) {
            Some("fire") => Expect::Fire,
            Some("no-fire") => Expect::NoFire,
            _ => return Err(bad("`expect` must be \"fire\" or \"no-fire\"".into())),
        };
        let name = match case.remove("name") {
            None => None,
            Some(Json::String(name)) => Some(name),
            Some(_) => return Err(bad("`name` must be a string".into())),
        };
        let uuids = match case.remove("uuids") {
            None => None,
            Some(Json::Array(items)) => Some(
                items
                    .into_iter()
                    .map(|u| u.as_str().map(str::to_owned))
                    .collect::<Option<Vec<_>>>()
                    .ok_or_else(|| bad("`uuids` must be a list of strings".into()))?,
            ),
            Some(_) => return Err(bad("`uuids` must be a list of strings".into())),
        };
        let matched = match case.remove("matched") {
            None => BTreeMap::new(),
            Some(Json::Object(fields)) => fields
                .into_iter()
                .map(|(k, v)| v.as_str().map(|v| (k, v.to_owned())))
                .collect::<Option<BTreeMap<_, _>>>()
                .ok_or_else(|| bad("`matched` maps fields to strings".into()))?,
            Some(_) => return Err(bad("`matched` maps fields to strings".into())),
        };
        if let Some(key) = case.keys().next() {
            return Err(bad(format!("unknown key `{key}` (expected name, event or events, expect, uuids, matched)")));
        }
        let location = format!("{}:{line_no}", file.display());
        cases.push(Case {
            name: match name {
                Some(name) => format!("{location} {name}"),
                None => location,
            },
            rule: rule.to_owned(),
            events,
            expect,
            uuids,
            matched,
            fire: None,
        });
    }
    Ok(cases)
}

/// Runs every suite; a suite whose rules do not load fails each of its
/// cases with the load error.
pub fn run(loader: &RuleLoader, suites: &[Suite]) -> Vec<SuiteResult> {
    suites.iter().map(|suite| run_suite(loader, suite)).collect()
}

fn run_suite(loader: &RuleLoader, suite: &Suite) -> SuiteResult {
    let started = Instant::now();
    let engine = load_engine(loader, &suite.rules);
    let cases = match engine {
        Err(reason) => suite
            .cases
            .iter()
            .map(|case| CaseResult {
                name: case.name.clone(),
                verdict: Verdict::Error(reason.clone()),
                time: Duration::ZERO,
            })
            .collect(),
        Ok(mut engine) => suite
            .cases
            .iter()
            .map(|case| {
                let started = Instant::now();
                let verdict = run_case(&mut engine, case);
                CaseResult { name: case.name.clone(), verdict, time: started.elapsed() }
            })
            .collect(),
    };
    SuiteResult { name: suite.name.clone(), cases, time: started.elapsed() }
}

fn load_engine(loader: &RuleLoader, rules: &[PathBuf]) -> Result<Engine, String> {
    let mut components = Vec::new();
    let mut declarative = Vec::new();
    let mut errors = Vec::new();
    for rule in rules {
        if !rule.is_file() {
            let hint = if rule.extension().is_some_and(|e| e == "wasm") {
                " (build the rule first, e.g. scripts/build-rules)"
            } else {
                ""
            };
            errors.push(format!("{}: no such rule file{hint}", rule.display()));
            continue;
        }
        if !is_rule_file(rule) {
            errors.push(format!("{}: not a rule file (.wasm, .yml, .yaml)", rule.display()));
            continue;
        }
        match loader.load_file(rule) {
            Ok(LoadedRule::Component(c)) => components.push(*c),
            Ok(LoadedRule::Declarative(d)) => declarative.push(*d),
            Err(err) => errors.push(err.to_string()),
        }
    }
    if !errors.is_empty() {
        return Err(errors.join("; "));
    }
    let mut engine = Engine::with_declarative(components, declarative).map_err(|err| err.to_string())?;
    engine.set_correlation_limits(loader.sandbox.limits().correlation.clone());
    engine.set_state_limits(loader.sandbox.limits().state.clone());
    Ok(engine)
}

fn run_case(engine: &mut Engine, case: &Case) -> Verdict {
    engine.reset_correlations();
    let (mut policy, mut sink, mut stats, mut faults) =
        (AlertPolicy::none(), Collected::default(), Stats::default(), Faults::default());
    let own_alerts = std::cell::Cell::new(0);
    sink.own = engine.infos().iter().find(|info| info.file == case.rule).map(|info| (info.uuid.clone(), &own_alerts));
    let mut delivery = Delivery::new(engine, &mut policy, &mut sink, &mut stats);
    let mut before = 0;
    for (index, event) in case.events.iter().enumerate() {
        let at = Location { source: "case", line: index as u64 + 1 };
        match delivery.deliver(Input::Json(event.as_bytes()), at, &mut faults) {
            Ok(_) => {
                // A sequence says which events must fire: the rule's
                // alerts must grow on exactly those.
                if let Some(fire) = &case.fire {
                    let fired = own_alerts.get() > before;
                    before = own_alerts.get();
                    if fired != fire[index] {
                        let verdict = if fired { "fired but must not" } else { "did not fire but must" };
                        return Verdict::Failed(format!("on event {} of {}: {verdict}", index + 1, case.events.len()));
                    }
                }
            }
            Err(DeliveryError::Malformed { message, .. }) if case.events.len() == 1 => {
                return Verdict::Error(format!("the event is not valid: {message}"))
            }
            Err(DeliveryError::Malformed { message, .. }) => {
                return Verdict::Error(format!("event {} is not valid: {message}", index + 1))
            }
            Err(err) => return Verdict::Error(err.to_string()),
        }
    }
    if let Some(fault) = faults.0.first() {
        return Verdict::Failed(fault.clone());
    }
    let mut fired: Vec<&str> = Vec::new();
    let mut own: Option<Vec<&Finding>> = None;
    for (uuid, findings) in &sink.alerts {
        fired.push(uuid);
        let file = engine.infos().iter().find(|info| info.uuid == *uuid).map(|info| &info.file);
        if file == Some(&case.rule) {
            own.get_or_insert_with(Vec::new).extend(findings);
        }
    }
    let rule_name = case.rule.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    match (case.expect, &own) {
        (Expect::Fire, None) => return Verdict::Failed(format!("{rule_name} did not fire but must")),
        (Expect::NoFire, Some(findings)) => {
            let first = findings.first().map(|f| f.message.as_str()).unwrap_or("");
            return Verdict::Failed(format!("{rule_name} fired but must not ({first})"));
        }
        _ => {}
    }
    if let Some(expected) = &case.uuids {
        let mut got: Vec<&str> = fired.clone();
        let mut want: Vec<&str> = expected.iter().map(String::as_str).collect();
        got.sort_unstable();
        want.sort_unstable();
        if got != want {
            return Verdict::Failed(format!("fired {got:?}, expected exactly {want:?}"));
        }
    }
    for (field, value) in &case.matched {
        let reported = own.iter().flatten().flat_map(|f| &f.matched).any(|m| &m.path == field && &m.value == value);
        if !reported {
            return Verdict::Failed(format!("{rule_name} did not report {field} = {value:?}"));
        }
    }
    Verdict::Passed
}

/// Events one case may list.
const MAX_CASE_EVENTS: usize = 100_000;

/// The alerts of a case: each one's rule uuid and findings.
#[derive(Default)]
struct Collected<'c> {
    alerts: Vec<(String, Vec<Finding>)>,
    /// The case's own rule (its uuid) and a count of its alerts, read
    /// while the sink is lent to the delivery.
    own: Option<(String, &'c std::cell::Cell<usize>)>,
}

impl Sink for Collected<'_> {
    fn send(&mut self, alert: &Alert<'_>) -> Result<(), SinkError> {
        if let Some((uuid, count)) = &self.own {
            if uuid == alert.uuid {
                count.set(count.get() + 1);
            }
        }
        self.alerts.push((alert.uuid.to_owned(), alert.findings.to_vec()));
        Ok(())
    }

    fn flush(&mut self) -> Result<(), SinkError> {
        Ok(())
    }
}

/// A case's rule faults, as messages.
#[derive(Default)]
struct Faults(Vec<String>);

impl Observer for Faults {
    fn notice(&mut self, notice: &Notice<'_>) {
        if let Notice::Fault { rule, fault, .. } = notice {
            self.0.push(format!("rule {} {fault}", rule.file_name()));
        }
    }
}

/// The pytest-like report: a line per suite (`.` passed, `F` failed, `E`
/// error), each failure, then the totals.
pub fn report(results: &[SuiteResult], elapsed: Duration) -> String {
    let mut out = String::new();
    for suite in results {
        let marks: String = suite
            .cases
            .iter()
            .map(|c| match c.verdict {
                Verdict::Passed => '.',
                Verdict::Failed(_) => 'F',
                Verdict::Error(_) => 'E',
            })
            .collect();
        let _ = writeln!(out, "{} {marks}", suite.name);
    }
    let problems: Vec<&CaseResult> =
        results.iter().flat_map(|s| &s.cases).filter(|c| c.verdict != Verdict::Passed).collect();
    if !problems.is_empty() {
        let _ = writeln!(out);
        for case in problems {
            match &case.verdict {
                Verdict::Failed(reason) => {
                    let _ = writeln!(out, "FAILED {} - {reason}", case.name);
                }
                Verdict::Error(reason) => {
                    let _ = writeln!(out, "ERROR {} - {reason}", case.name);
                }
                Verdict::Passed => {}
            }
        }
    }
    let totals = Totals::of(results);
    let mut parts = vec![format!("{} passed", totals.passed)];
    if totals.failed > 0 {
        parts.push(format!("{} failed", totals.failed));
    }
    if totals.errors > 0 {
        parts.push(format!("{} errors", totals.errors));
    }
    let _ = writeln!(out, "{} in {:.2}s", parts.join(", "), elapsed.as_secs_f64());
    out
}

/// JUnit XML, as CI systems read it: one `testsuite` per suite.
pub fn junit(results: &[SuiteResult], elapsed: Duration) -> String {
    let totals = Totals::of(results);
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        out,
        "<testsuites name=\"dac test\" tests=\"{}\" failures=\"{}\" errors=\"{}\" time=\"{:.3}\">",
        totals.total(),
        totals.failed,
        totals.errors,
        elapsed.as_secs_f64()
    );
    for suite in results {
        let t = Totals::of(std::slice::from_ref(suite));
        let _ = writeln!(
            out,
            "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{}\" errors=\"{}\" skipped=\"0\" time=\"{:.3}\">",
            xml(&suite.name),
            t.total(),
            t.failed,
            t.errors,
            suite.time.as_secs_f64()
        );
        for case in &suite.cases {
            let head = format!(
                "    <testcase classname=\"{}\" name=\"{}\" time=\"{:.6}\"",
                xml(&suite.name),
                xml(&case.name),
                case.time.as_secs_f64()
            );
            match &case.verdict {
                Verdict::Passed => {
                    let _ = writeln!(out, "{head}/>");
                }
                Verdict::Failed(reason) => {
                    let _ = writeln!(out, "{head}>\n      <failure message=\"{}\"/>\n    </testcase>", xml(reason));
                }
                Verdict::Error(reason) => {
                    let _ = writeln!(out, "{head}>\n      <error message=\"{}\"/>\n    </testcase>", xml(reason));
                }
            }
        }
        let _ = writeln!(out, "  </testsuite>");
    }
    out.push_str("</testsuites>\n");
    out
}

/// Escapes text for an XML attribute; characters XML 1.0 cannot carry at
/// all become U+FFFD.
fn xml(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\n' => out.push_str("&#10;"),
            '\t' => out.push_str("&#9;"),
            c if (c as u32) < 0x20 || c == '\u{FFFE}' || c == '\u{FFFF}' => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xml_escapes_attributes() {
        assert_eq!(xml("a<b & \"c\"\n\u{1}"), "a&lt;b &amp; &quot;c&quot;&#10;\u{FFFD}");
    }

    #[test]
    fn malformed_cases_name_their_line() {
        let dir = std::env::temp_dir().join(format!("dac-testing-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("r.tests.ndjson");
        std::fs::write(&file, "{\"event\":{},\"expect\":\"fire\"}\n\n{\"event\":{},\"expect\":\"maybe\"}\n").unwrap();
        let err = read_cases(&file, &dir.join("r.yaml")).unwrap_err().to_string();
        assert!(err.ends_with("r.tests.ndjson:3: `expect` must be \"fire\" or \"no-fire\""), "{err}");
        std::fs::write(&file, "{\"event\":{},\"expect\":\"fire\",\"uuid\":[]}\n").unwrap();
        let err = read_cases(&file, &dir.join("r.yaml")).unwrap_err().to_string();
        assert!(err.contains(":1: unknown key `uuid`"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
