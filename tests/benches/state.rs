//! What code rules' keyed state (`dac:rule/state`) costs.
//!
//! 1. The host's store alone (`dac_state::Store`): N operations of each
//!    kind (`set`, `get`, `count`, `distinct`) over 30 hosts × K keys,
//!    against a plain `HashMap<String, i64>` doing the same lookups and
//!    inserts — the floor any keyed state pays. Printed: ns per operation
//!    and the ratio.
//! 2. The sequence rule (`example-rules/download-chmod-exec`: download,
//!    `chmod +x`, exec, its state in the host) over N events of the
//!    correlation tests' mix (30 hosts; downloads, chmods and execs among
//!    other commands; every event evaluated, no prefilter): natively linked
//!    (the SDK's native state, the same store), as a component called once
//!    per event (`dac run --threads 1`, `dac serve`), and as a component
//!    called for batches of 512 (`dac run`'s and `dac watch`'s workers).
//!    Printed: ns per event, the ratios to native, and the keys held.
//!
//! CPU time of this thread, medians of R runs, in the same run.
//!
//! Run: `cargo bench -p dac-tests --bench state [-- --events N --runs R]`.

use dac_engine::{ComponentCache, Document, Engine, Limits, Sandbox, Stats};
use dac_rule_sdk::Rule;
use dac_state::{At, Journal, StateLimits, Store};
use dac_tests::bench::{loadavg, thousands, thread_cpu_ns};
use std::collections::HashMap;
use std::hint::black_box;
use std::process::ExitCode;

struct Args {
    events: usize,
    runs: usize,
}

fn args() -> Result<Args, String> {
    let mut args = Args { events: 200_000, runs: 3 };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || it.next().and_then(|v| v.parse::<usize>().ok()).ok_or(format!("{arg} needs a number"));
        match arg.as_str() {
            "--events" => args.events = value()?,
            "--runs" => args.runs = value()?.max(1),
            "--bench" => {}
            other => return Err(format!("unknown argument {other} (expected --events N, --runs R)")),
        }
    }
    Ok(args)
}

/// CPU nanoseconds `work` takes on this thread, median of `runs`.
fn median_ns(runs: usize, mut work: impl FnMut()) -> u64 {
    let mut times: Vec<u64> = (0..runs)
        .map(|_| {
            let start = thread_cpu_ns().unwrap_or(0);
            work();
            thread_cpu_ns().unwrap_or(0).saturating_sub(start)
        })
        .collect();
    times.sort_unstable();
    times[times.len() / 2]
}

fn main() -> ExitCode {
    let args = match args() {
        Ok(args) => args,
        Err(err) => {
            eprintln!("state bench: {err}");
            return ExitCode::from(2);
        }
    };
    println!("state bench: load {} before", loadavg());
    store_alone(&args);
    match sequence_rule(&args) {
        Ok(()) => {
            println!("load {} after", loadavg());
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("state bench: {err}");
            ExitCode::FAILURE
        }
    }
}

/// One store operation on a key, for an event.
type Operation = fn(&mut Store, &mut Journal, &At<'_>, &str);

/// The store's operations against a bare hash map's.
fn store_alone(args: &Args) {
    const HOSTS: usize = 30;
    const KEYS: usize = 1_000;
    let ops = args.events * 5;
    let hosts: Vec<String> = (0..HOSTS).map(|h| format!("host-{h:02}")).collect();
    let keys: Vec<String> = (0..KEYS).map(|k| format!("downloaded:file-{k}.sh")).collect();
    let pick = |n: usize| (&hosts[n % HOSTS], &keys[(n / HOSTS) % KEYS], n as i64 * 10);

    let baseline = median_ns(args.runs, || {
        let mut map: HashMap<String, i64> = HashMap::new();
        let mut key = String::new();
        for n in 0..ops {
            let (host, name, ts) = pick(n);
            key.clear();
            key.push_str(host);
            key.push_str(name);
            match map.get_mut(key.as_str()) {
                Some(value) => *value = ts,
                None => {
                    map.insert(key.clone(), ts);
                }
            }
            black_box(map.get(key.as_str()));
        }
    });
    println!(
        "\n1. the store alone: {} operations of each kind over {HOSTS} hosts × {KEYS} keys (a HashMap<String, i64> insert-or-update and get: {:.0} ns a pair)",
        thousands(ops as u64),
        baseline as f64 / ops as f64
    );
    println!("{:<10} {:>10} {:>22}", "operation", "ns/op", "× the hash map's pair");
    let kinds: [(&str, Operation); 4] = [
        ("set", |store, journal, at, key| {
            black_box(store.set(journal, at, key, "1700000000000", 600_000).ok());
        }),
        ("get", |store, _, at, key| {
            black_box(store.get(at, key).ok());
        }),
        ("count", |store, journal, at, key| {
            black_box(store.count(journal, at, key, 60_000).ok());
        }),
        ("distinct", |store, journal, at, key| {
            black_box(store.distinct(journal, at, "curl", key, 600_000).ok());
        }),
    ];
    for (name, op) in kinds {
        let ns = median_ns(args.runs, || {
            let mut store = Store::new(StateLimits::default());
            let mut journal = Journal::default();
            for n in 0..ops {
                let (host, key, ts) = pick(n);
                op(
                    &mut store,
                    &mut journal,
                    &At { rule: "8d0c3a5e-6c1b-4a57-9f0e-3c2d7b1e4a00", host, ts: Some(ts) },
                    key,
                );
                // A call commits its journal (one per event in the host).
                journal.commit();
            }
        });
        println!("{name:<10} {:>10.0} {:>21.1}×", ns as f64 / ops as f64, ns as f64 / baseline as f64);
    }
}

/// The sequence rule: natively, as a component one event per call, and in
/// batches.
fn sequence_rule(args: &Args) -> Result<(), String> {
    let events: Vec<String> =
        dac_tests::correlation::events(args.events, 0x17, None).iter().map(|e| e.to_string()).collect();
    let component = dac_tests::example_rule("download-chmod-exec");

    let mut fired = 0usize;
    let native = median_ns(args.runs, || {
        dac_rule_sdk::testing::reset_state();
        fired = 0;
        for json in &events {
            let event = dac_rule_sdk::Event::from_json(json);
            fired += download_chmod_exec::DetectionRule::evaluate(&event).len();
        }
    });

    let sandbox = Sandbox::new(Limits::default(), ComponentCache::new(None)).map_err(|err| err.to_string())?;
    let engine = || -> Result<Engine, String> {
        let rule = sandbox.load_file(&component).map_err(|err| err.to_string())?;
        Engine::new(vec![rule]).map_err(|err| err.to_string())
    };
    let (mut one_alerts, mut batch_alerts, mut keys) = (0, 0, 0);
    let one = {
        let mut result = Ok(0);
        let ns = median_ns(args.runs, || {
            let Ok(mut engine) = engine().inspect_err(|err| result = Err(err.clone())) else { return };
            let (mut stats, mut outcomes) = (Stats::default(), Vec::new());
            one_alerts = 0;
            for json in &events {
                outcomes.clear();
                let _ = engine.evaluate_json(json.as_bytes(), &mut stats, &mut outcomes);
                one_alerts += outcomes.iter().filter(|o| o.result.as_ref().is_ok_and(|f| !f.is_empty())).count();
            }
            keys = engine.rule_state_stats().keys;
        });
        result.map(|_: u64| ns)?
    };
    let batched = {
        let mut result = Ok(0);
        let ns = median_ns(args.runs, || {
            let Ok(mut engine) = engine().inspect_err(|err| result = Err(err.clone())) else { return };
            let mut stats = Stats::default();
            batch_alerts = 0;
            for chunk in events.chunks(512) {
                let documents = chunk.iter().map(|json| Document::Json(json.as_bytes())).collect();
                for evaluated in engine.evaluate_batch(documents, &mut stats) {
                    batch_alerts +=
                        evaluated.outcomes.iter().filter(|o| o.result.as_ref().is_ok_and(|f| !f.is_empty())).count();
                }
            }
        });
        result.map(|_: u64| ns)?
    };
    if one_alerts != fired || batch_alerts != fired {
        return Err(format!("alerts differ: native {fired}, one per call {one_alerts}, batched {batch_alerts}"));
    }
    let per_event = |ns: u64| ns as f64 / events.len() as f64;
    println!(
        "\n2. the sequence rule (download-chmod-exec) over {} events of 30 hosts, every event evaluated: {fired} alerts in each form, {keys} keys held at the end",
        thousands(events.len() as u64)
    );
    println!("{:<34} {:>10} {:>12} {:>10}", "form", "ns/event", "events/s", "× native");
    for (form, ns) in [
        ("native (the SDK's native state)", native),
        ("component, one event per call", one),
        ("component, batches of 512", batched),
    ] {
        println!(
            "{form:<34} {:>10.0} {:>12} {:>9.1}×",
            per_event(ns),
            thousands((events.len() as f64 / (ns as f64 / 1e9)) as u64),
            ns as f64 / native as f64
        );
    }
    Ok(())
}
