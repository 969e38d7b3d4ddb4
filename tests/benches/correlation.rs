//! What Sigma correlations cost: the 122 SigmaHQ rules plus three rules
//! that match most events, with and without ten correlations over them (all
//! eight types), on N events of the realistic mix whose `session` field
//! takes N/2 values — by default 2,000,000 events and 1,000,000 group keys,
//! every one held to the end (the windows are an hour; the events span
//! under one).
//!
//! Both runs are dac's engine in this thread (the `dac run` loop without
//! process start, rule loading or output); the correlations say
//! `generate: true`, so both runs alert on the same base matches and differ
//! only by the correlations and their alerts. Printed: events per CPU
//! second of each (median of R runs), the ratio and the cost per event in
//! the same run, and the state the correlations held at the end: group
//! keys, estimated bytes, bytes per key; and what storing that state with
//! a checkpoint costs (`Engine::save_state`, as `dac watch` stores it every
//! `--state-interval`) and reading it back at a restart: bytes, time,
//! bytes per key.
//!
//! Run: `cargo bench -p dac-tests --bench correlation [-- --events N --runs R]`.

use dac_engine::Engine;

/// `dac`'s allocator: the windows are millions of small allocations, whose
/// cost depends on it.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use dac_tests::bench::{loadavg, run_in_process_with, thousands, Size};
use std::io::{BufRead, BufWriter, Write};
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

type Error = Box<dyn std::error::Error + Send + Sync>;
type Result<T, E = Error> = std::result::Result<T, E>;

/// Three rules that match most of the mix, with their names for the
/// correlations.
const BASE: &str = "title: Program from an absolute path
id: 0b6a7c1e-0000-4000-8000-000000000001
name: exec_any
logsource: {product: linux, category: process_creation}
detection:
  selection:
    Image|startswith: /
  condition: selection
level: informational
---
title: Shell
id: 0b6a7c1e-0000-4000-8000-000000000002
name: shell
logsource: {product: linux, category: process_creation}
detection:
  selection:
    Image|endswith: [/sh, /bash, /dash, /zsh]
  condition: selection
level: informational
---
title: Network tool
id: 0b6a7c1e-0000-4000-8000-000000000003
name: net_tool
logsource: {product: linux, category: process_creation}
detection:
  selection:
    Image|endswith: [/curl, /wget, /ssh, /nc, /git]
  condition: selection
level: informational
";

/// Ten correlations: every type, keyed by `session` (one by host).
fn correlations() -> String {
    let one = |n: u32, kind: &str, rules: &str, group: &str, condition: &str| {
        format!(
            "title: Correlation {n}\nid: 0b6a7c1e-0000-4000-8000-0000000001{n:02}\ncorrelation:\n  type: {kind}\n  \
             rules: [{rules}]\n  group-by: [{group}]\n  timespan: 1h\n{condition}  generate: true\nlevel: low\n---\n"
        )
    };
    // Each session's two events are far apart in the stream but inside an
    // hour: every match updates a window, few breach (the mix's pids run
    // to 4,000,000; alerts are the alert path's cost, not the windows').
    [
        one(1, "event_count", "exec_any", "session", "  condition: {gte: 3}\n"),
        one(2, "event_count", "exec_any, net_tool", "session", "  condition: {gte: 3}\n"),
        one(3, "value_count", "exec_any", "session", "  condition: {field: Image, gte: 3}\n"),
        one(4, "temporal", "shell, net_tool", "session", ""),
        one(5, "temporal_ordered", "net_tool, shell", "session", ""),
        one(6, "value_sum", "exec_any", "session", "  condition: {field: ProcessId, gt: 7900000}\n"),
        one(7, "value_avg", "exec_any", "session", "  condition: {field: ProcessId, gt: 3950000}\n"),
        one(
            8,
            "value_percentile",
            "exec_any",
            "session",
            "  condition: {field: ProcessId, percentile: 90, gt: 3990000}\n",
        ),
        one(9, "value_median", "exec_any", "session", "  condition: {field: ProcessId, gt: 3950000}\n"),
        one(10, "event_count", "shell", "hostname", "  condition: {gte: 100000}\n"),
    ]
    .concat()
}

fn main() -> ExitCode {
    match bench() {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("correlation bench: {err}");
            ExitCode::FAILURE
        }
    }
}

fn bench() -> Result<()> {
    let size = Size::from_args("correlation", Size { events: 2_000_000, runs: 3 })?;
    let dir = tempfile::tempdir()?;
    let events = dir.path().join("events.ndjson");
    write_events(&events, size.events)?;
    let base = dir.path().join("base");
    let with = dir.path().join("with");
    std::fs::create_dir_all(&base)?;
    std::fs::create_dir_all(&with)?;
    std::fs::write(base.join("base.yml"), BASE)?;
    std::fs::write(with.join("base.yml"), format!("{}{BASE}", correlations()))?;
    let sigma = dac_tests::sigma_dir();

    println!(
        "correlation bench: {} events, {} session keys, {} runs; load {}",
        thousands(size.events as u64),
        thousands((size.events / 2) as u64),
        size.runs,
        loadavg()
    );
    let (mut without, mut plus) = (Vec::new(), Vec::new());
    let mut state = None;
    let mut last = None;
    for round in 0..size.runs {
        without.push(run(&[&sigma, &base], &events)?.0);
        let before = rss_bytes();
        let (cpu, engine) = run(&[&sigma, &with], &events)?;
        plus.push(cpu);
        state = Some((held(&engine), rss_bytes().saturating_sub(before)));
        // Only the last run's state is kept (for the store figures): a
        // state held through the next run would weigh on its allocations.
        if round + 1 == size.runs {
            last = Some(engine);
        }
    }
    let median = |runs: &mut Vec<Duration>| {
        runs.sort();
        runs[runs.len() / 2]
    };
    let (a, b) = (median(&mut without), median(&mut plus));
    let rate = |cpu: Duration| size.events as f64 / cpu.as_secs_f64();
    println!("| rules | events/s (CPU) | ns/event |");
    println!("|---|---|---|");
    println!("| 122 Sigma + 3 base rules | {} | {:.0} |", thousands(rate(a) as u64), ns(a, size.events));
    println!("| the same + 10 correlations | {} | {:.0} |", thousands(rate(b) as u64), ns(b, size.events));
    println!(
        "correlations: {:.2}x the time, +{:.0} ns per event",
        b.as_secs_f64() / a.as_secs_f64(),
        ns(b, size.events) - ns(a, size.events)
    );
    let ((groups, bytes, fired, matches, refused), rss) = state.unwrap_or_default();
    println!(
        "state at the end: {} group keys, {} bytes estimated ({:.0} per key), the process {} bytes larger while \
         holding it ({:.0} per key); {} matches in windows ({} refused at a limit), {} correlation alerts",
        thousands(groups),
        thousands(bytes),
        bytes as f64 / groups.max(1) as f64,
        thousands(rss),
        rss as f64 / groups.max(1) as f64,
        thousands(matches),
        thousands(refused),
        thousands(fired)
    );
    if let Some(mut engine) = last {
        let (mut saves, mut restores) = (Vec::new(), Vec::new());
        let mut stored = Vec::new();
        for _ in 0..size.runs {
            let start = std::time::Instant::now();
            stored = engine.save_state()?.ok_or("no correlation state")?;
            saves.push(start.elapsed());
            let start = std::time::Instant::now();
            engine.restore_state(&stored)?;
            restores.push(start.elapsed());
        }
        let (save, restore) = (median(&mut saves), median(&mut restores));
        println!(
            "stored with a checkpoint: {} bytes ({:.0} per key); saving {:.0} ms, restoring {:.0} ms (medians); \
             saving every 10 s (the default --state-interval) costs {:.1} % of a core at this size",
            thousands(stored.len() as u64),
            stored.len() as f64 / groups.max(1) as f64,
            save.as_secs_f64() * 1e3,
            restore.as_secs_f64() * 1e3,
            save.as_secs_f64() / 10.0 * 100.0
        );
    }
    Ok(())
}

fn ns(cpu: Duration, events: usize) -> f64 {
    cpu.as_nanos() as f64 / events as f64
}

/// The mix, with a `session` field of N/2 values: each shared by two
/// events far apart in the stream.
fn write_events(file: &Path, count: usize) -> Result<()> {
    let mut mix = Vec::new();
    dac_tests::mix::write_mix(dac_tests::mix::MixConfig::default(), count, &mut mix)?;
    let mut out = BufWriter::new(std::fs::File::create(file)?);
    let keys = (count / 2).max(1);
    for (i, line) in mix.lines().enumerate() {
        let mut event: serde_json::Value = serde_json::from_str(&line?)?;
        event["session"] = serde_json::Value::String(format!("s{}", i % keys));
        serde_json::to_writer(&mut out, &event)?;
        out.write_all(b"\n")?;
    }
    out.flush()?;
    Ok(())
}

/// One run over the file in this thread; its CPU time and the engine.
/// The rule set's state quota (4,000,000 keys, 1 GiB by default) is
/// lifted: the bench measures the cost of every key held, each
/// correlation still bounded by its own limits.
fn run(rules: &[&Path], file: &Path) -> Result<(Duration, Engine)> {
    let mut limits = dac_engine::Limits::default();
    limits.correlation.total_groups = usize::MAX;
    limits.correlation.total_bytes = usize::MAX;
    let run = run_in_process_with(&rules.iter().map(|r| r.to_path_buf()).collect::<Vec<_>>(), file, limits)?;
    Ok((run.cpu, run.engine))
}

/// The process's resident memory now (`VmRSS`), 0 where unknown.
fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|kb| kb.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// (group keys, bytes, alerts, matches, refused) over every correlation.
fn held(engine: &Engine) -> (u64, u64, u64, u64, u64) {
    let mut total = dac_engine::CorrelationStats::default();
    for (_, stats) in engine.correlations_held() {
        total.absorb(&stats);
    }
    (total.groups, total.bytes, total.fired, total.matches, total.refused)
}
