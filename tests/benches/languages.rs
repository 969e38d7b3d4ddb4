//! One rule in every language dac runs, release build, side by side: what
//! one call costs and how many events per second the engine takes.
//!
//! The rule is the seed's `shadow` (a command line mentioning
//! `/etc/shadow`), as each kit's author writes it:
//!
//! - natively: `example-rules/shadow`'s Rust code linked in, no wasm (the
//!   floor);
//! - as components: the same Rust crate for `wasm32-wasip2`, and the C,
//!   Python and JavaScript ports built from source by `rule-sdk/*/build.sh`
//!   (the commands an author runs; a kit whose toolchain is missing is
//!   reported, not measured);
//! - declaratively: the seed's YAML (`example-rules/yaml/shadow.yaml`), a
//!   Sigma rule with the same detection, and the component `dac build`
//!   makes of the YAML (the prebuilt matcher with the rule as data).
//!
//! For each: **per call**, the engine evaluating one parsed benign event
//! with that one rule, the prefilter off (`Engine::evaluate`, a reused
//! instance; for components also a fresh instance per call), next to the
//! same engine with no rule at all (what is not the rule's); for
//! `dac:rule@0.2.0` components (the Rust SDK's, `dac build`'s) also **per
//! event in a batch**, the component alone called once for 512 parsed
//! events (`RuleComponent::evaluate_batch`, as `dac run`'s workers call
//! it); then
//! **events/s** over the realistic mix (`dac-gen-events --mix`) through
//! `Engine::evaluate_json`, the prefilter on (the default) and off. Every
//! version must raise the same alerts on the mix (the run fails
//! otherwise). Rates come from the thread's CPU time (the machine is
//! shared); each figure is the median of R runs. A slow version's
//! prefilter-off pass stops after about a second of CPU.
//!
//! Run: `cargo bench -p dac-tests --bench languages [-- --events N --runs R]`.

use dac_engine::{ComponentCache, Engine, Isolation, Limits, RuleLoader, Sandbox, Stats};
use dac_rule_sdk::Rule;
use dac_tests::bench::{loadavg, thousands, thread_cpu_ns, Size};
use dac_tests::{repo_root, KitBuild};
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

type Error = Box<dyn std::error::Error + Send + Sync>;
type Result<T, E = Error> = std::result::Result<T, E>;

/// Each per-call figure times calls for at least this long, per run.
const CALL_TIME: Duration = Duration::from_millis(300);
/// The prefilter-off pass stops after this much CPU, per run.
const PASS_TIME: Duration = Duration::from_secs(1);

/// The seed's shadow rule as Sigma: the same uuid, title and literal.
const SIGMA_SHADOW: &str = "title: Suspicious /etc/shadow Usage
id: 5e3566a3-9f19-4ac7-8710-ec5fb09260ed
status: experimental
description: A command line references /etc/shadow, which holds the password hashes.
author: dac
logsource:
  product: linux
  category: process_creation
detection:
  selection:
    CommandLine|contains: /etc/shadow
  condition: selection
level: high
";

fn main() -> ExitCode {
    match run() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(err) => {
            eprintln!("languages bench: {err}");
            ExitCode::from(2)
        }
    }
}

/// One version of the rule.
struct Version {
    label: &'static str,
    /// `None`: the native Rust rule; else the file dac loads.
    file: Option<PathBuf>,
    /// Why it was not measured.
    missing: Option<String>,
}

#[derive(Default)]
struct Row {
    call_ns: Option<f64>,
    batch_ns: Option<f64>,
    fresh_ns: Option<f64>,
    on: Option<f64>,
    off: Option<f64>,
    alerts: Option<u64>,
}

fn run() -> Result<bool> {
    let size = Size::from_args("languages", Size { events: 200_000, runs: 3 })?;
    let load_before = loadavg();
    let dir = tempfile::tempdir()?;
    let events = dir.path().join("mix.ndjson");
    dac_tests::mix::write_mix(dac_tests::mix::MixConfig::default(), size.events, std::fs::File::create(&events)?)?;
    let bytes = std::fs::read(&events)?;
    let lines: Vec<&[u8]> = bytes.split(|&b| b == b'\n').filter(|line| !line.is_empty()).collect();

    eprintln!("building the rule in every language…");
    let mut versions = vec![
        Version { label: "Rust, native (no wasm)", file: None, missing: None },
        Version { label: "Rust component", file: Some(dac_tests::example_rule("shadow")), missing: None },
    ];
    for (label, kit, example) in [
        ("C component", "c", "shadow.c"),
        ("Python component", "python", "shadow.py"),
        ("JavaScript component", "js", "shadow.js"),
    ] {
        let out = dir.path().join(format!("shadow_{kit}.wasm"));
        let missing = build_kit(kit, example, &out)?;
        versions.push(Version { label, file: missing.is_none().then_some(out), missing });
    }
    let yaml = repo_root().join("example-rules/yaml/shadow.yaml");
    let sigma = dir.path().join("shadow_sigma.yml");
    std::fs::write(&sigma, SIGMA_SHADOW)?;
    let built = dir.path().join("shadow_built.wasm");
    std::fs::write(&built, dac_cli::build_rule(&yaml, &std::fs::read(&yaml)?, None)?.component)?;
    versions.push(Version { label: "YAML (seed format)", file: Some(yaml), missing: None });
    versions.push(Version { label: "Sigma", file: Some(sigma), missing: None });
    versions.push(Version { label: "`dac build` of the YAML", file: Some(built), missing: None });

    let cache = dir.path().join("cache");
    let benign = lines
        .iter()
        .copied()
        .find(|line| !line.windows(11).any(|w| w == b"/etc/shadow") && line.windows(12).any(|w| w == b"command_line"))
        .ok_or("no benign event in the mix")?;
    let empty_ns = per_call(&mut Engine::new(Vec::new())?, benign, size.runs)?;

    let mut rows = Vec::new();
    for version in &versions {
        if version.missing.is_some() {
            rows.push(Row::default());
            continue;
        }
        eprintln!("measuring {}…", version.label);
        rows.push(match &version.file {
            None => native(benign, &lines, size.runs)?,
            Some(file) => measure(file, &cache, benign, &lines, size.runs)?,
        });
    }
    let load_after = loadavg();

    println!();
    println!("One rule (`shadow`) in every language, release build, one thread");
    println!("================================================================");
    println!(
        "machine  nproc {}, load average {load_before} (before) / {load_after} (after)",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "events   {} of the realistic mix ({} MB); medians of {} runs, CPU time",
        thousands(lines.len() as u64),
        bytes.len() / 1_000_000,
        size.runs
    );
    println!(
        "per call: one parsed benign event ({} bytes), prefilter off; the engine alone: {empty_ns:.0} ns",
        benign.len()
    );
    println!();
    println!(
        "| {:<26} | {:>14} | {:>16} | {:>14} | {:>19} | {:>15} | {:>8} |",
        "rule", "ns/call", "ns/event, batch", "fresh instance", "events/s, prefilter", "events/s, off", "alerts"
    );
    println!("|{:-<28}|{:->16}|{:->18}|{:->16}|{:->21}|{:->17}|{:->10}|", "", "", "", "", "", "", "");
    let mut ok = true;
    let reference = rows.iter().find_map(|row| row.alerts);
    for (version, row) in versions.iter().zip(&rows) {
        if let Some(missing) = &version.missing {
            println!("| {:<26} | not measured: {missing}", version.label);
            continue;
        }
        let same = row.alerts == reference;
        ok &= same;
        println!(
            "| {:<26} | {:>14} | {:>16} | {:>14} | {:>19} | {:>15} | {:>8} |",
            version.label,
            row.call_ns.map_or("—".into(), |ns| format!("{ns:.0}")),
            row.batch_ns.map_or("—".into(), |ns| format!("{ns:.0}")),
            row.fresh_ns.map_or("—".into(), |ns| format!("{ns:.0}")),
            row.on.map_or("—".into(), |rate| thousands(rate as u64)),
            row.off.map_or("—".into(), |rate| thousands(rate as u64)),
            format!("{}{}", row.alerts.map_or("—".into(), thousands), if same { "" } else { " MISMATCH" }),
        );
    }
    println!();
    println!("ns/call includes the engine's own {empty_ns:.0} ns per event (the first column minus it is the rule);");
    println!("ns/event, batch is a dac:rule@0.2.0 component alone, {BATCH} events per call (0.1.0: one per call).");
    if !ok {
        println!("MISMATCH: the versions disagree on the alerts");
    }
    Ok(ok)
}

/// Builds `example` with its kit; `Some(reason)` when the kit's toolchain
/// is missing.
fn build_kit(kit: &str, example: &str, out: &Path) -> Result<Option<String>> {
    Ok(match dac_tests::build_with_kit(kit, example, out)? {
        KitBuild::Built(_) => None,
        KitBuild::MissingTool(why) => {
            let first = why.lines().next().unwrap_or("a tool is missing");
            Some(format!("{first} (scripts/test installs it)"))
        }
    })
}

/// The rule in file `file` through the engine.
fn measure(file: &Path, cache: &Path, benign: &[u8], lines: &[&[u8]], runs: usize) -> Result<Row> {
    let engine = |isolation| -> Result<Engine> {
        let limits = Limits { isolation, ..Limits::default() };
        let sandbox = Sandbox::new(limits, ComponentCache::new(Some(cache.to_owned())))?;
        let loader = RuleLoader::new(sandbox, dac_detect::FieldMapping::default());
        let (components, declarative, errors) = loader.load_all(&[file.to_owned()]);
        if let Some(err) = errors.first() {
            return Err(err.to_string().into());
        }
        Ok(Engine::with_declarative(components, declarative)?)
    };
    let mut reused = engine(Isolation::ReusedInstance)?;
    let component = reused.components().count() > 0;
    reused.set_prefilter(false);
    let call_ns = per_call(&mut reused, benign, runs)?;
    let (fresh_ns, batch_ns) = if component {
        let mut fresh = engine(Isolation::FreshInstancePerEvent)?;
        fresh.set_prefilter(false);
        let sandbox = Sandbox::new(Limits::default(), ComponentCache::new(Some(cache.to_owned())))?;
        let mut rule = sandbox.load_file(file)?;
        // A 0.1.0 component's batch is one call per event: ns/call.
        let batch_ns = if rule.batches_calls() { Some(per_event_in_batch(&mut rule, benign, runs)?) } else { None };
        (Some(per_call(&mut fresh, benign, runs)?), batch_ns)
    } else {
        (None, None)
    };
    let off = median((0..runs).map(|_| pass(&mut reused, lines, Some(PASS_TIME)).map(|(rate, _)| rate)))?;
    reused.set_prefilter(true);
    let mut alerts = None;
    let on = median((0..runs).map(|_| {
        let (rate, raised) = pass(&mut reused, lines, None)?;
        alerts = Some(raised);
        Ok(rate)
    }))?;
    Ok(Row { call_ns: Some(call_ns), batch_ns, fresh_ns, on: Some(on), off: Some(off), alerts })
}

/// Events per call in [`per_event_in_batch`]: the batch `dac run`'s
/// workers cut.
const BATCH: usize = 512;

/// Median ns per event of `rule.evaluate_batch` over [`BATCH`] copies of
/// `json`, parsed once (the events come back from each call).
fn per_event_in_batch(rule: &mut dac_engine::RuleComponent, json: &[u8], runs: usize) -> Result<f64> {
    let event = dac_event::Event::from_json_slice(json)?.0;
    let mut events = vec![event; BATCH];
    let per_batch = median((0..runs).map(|_| {
        timed_calls(|| {
            let results = rule.evaluate_batch(black_box(&mut events));
            match results.iter().find(|result| !matches!(result, Ok(findings) if findings.is_empty())) {
                Some(Ok(findings)) => Err(format!("the rule fired on the benign event: {findings:?}").into()),
                Some(Err(fault)) => Err(format!("the rule faulted on the benign event: {fault}").into()),
                None => Ok(()),
            }
        })
    }))?;
    Ok(per_batch / BATCH as f64)
}

/// Median ns per `Engine::evaluate` of `json`, parsed once.
fn per_call(engine: &mut Engine, json: &[u8], runs: usize) -> Result<f64> {
    let mut event = dac_event::Event::from_json_slice(json)?.0;
    let (mut stats, mut outcomes) = (Stats::default(), Vec::new());
    median((0..runs).map(|_| {
        timed_calls(|| {
            outcomes.clear();
            engine.evaluate(black_box(&mut event), &mut stats, &mut outcomes);
            if !outcomes.is_empty() {
                return Err("the rule fired on the benign event".into());
            }
            Ok(())
        })
    }))
}

/// Calls `call` in rounds of 100 until [`CALL_TIME`] of CPU went by; ns per
/// call.
fn timed_calls(mut call: impl FnMut() -> Result<()>) -> Result<f64> {
    let start = cpu();
    let mut calls = 0u64;
    loop {
        for _ in 0..100 {
            call()?;
        }
        calls += 100;
        let spent = cpu() - start;
        if spent >= CALL_TIME {
            return Ok(spent.as_nanos() as f64 / calls as f64);
        }
    }
}

/// One pass of `lines` through `engine.evaluate_json` (validate, prefilter,
/// parse what a rule must see, evaluate), stopping after `budget` of CPU:
/// events/s and the alerts raised.
fn pass(engine: &mut Engine, lines: &[&[u8]], budget: Option<Duration>) -> Result<(f64, u64)> {
    let (mut stats, mut outcomes) = (Stats::default(), Vec::new());
    let mut alerts = 0u64;
    let start = cpu();
    let mut done = 0u64;
    for chunk in lines.chunks(1000) {
        for line in chunk {
            outcomes.clear();
            black_box(engine.evaluate_json(line, &mut stats, &mut outcomes)?);
            alerts += outcomes.len() as u64;
        }
        done += chunk.len() as u64;
        if budget.is_some_and(|budget| cpu() - start >= budget) {
            break;
        }
    }
    let spent = cpu() - start;
    Ok((done as f64 / spent.as_secs_f64(), alerts))
}

/// The Rust rule linked in: per call on the parsed event, and events/s
/// parsing each line into the SDK's event.
fn native(benign: &[u8], lines: &[&[u8]], runs: usize) -> Result<Row> {
    let event = dac_rule_sdk::Event::from_value(serde_json::from_slice(benign)?)?;
    let call_ns = median((0..runs).map(|_| {
        timed_calls(|| {
            black_box(<shadow::DetectionRule as Rule>::evaluate(black_box(&event)));
            Ok(())
        })
    }))?;
    let mut alerts = None;
    let off = median((0..runs).map(|_| {
        let start = cpu();
        let mut raised = 0u64;
        for line in lines {
            let event = dac_rule_sdk::Event::from_value(serde_json::from_slice(line)?)?;
            raised += u64::from(!<shadow::DetectionRule as Rule>::evaluate(&event).is_empty());
        }
        alerts = Some(raised);
        Ok(lines.len() as f64 / (cpu() - start).as_secs_f64())
    }))?;
    Ok(Row { call_ns: Some(call_ns), batch_ns: None, fresh_ns: None, on: None, off: Some(off), alerts })
}

fn median(samples: impl Iterator<Item = Result<f64>>) -> Result<f64> {
    let mut samples = samples.collect::<Result<Vec<f64>>>()?;
    samples.sort_by(f64::total_cmp);
    Ok(samples[samples.len() / 2])
}

/// This thread's CPU time (the wall clock where it cannot be read).
fn cpu() -> Duration {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    match thread_cpu_ns() {
        Some(ns) => Duration::from_nanos(ns),
        None => START.get_or_init(Instant::now).elapsed(),
    }
}
