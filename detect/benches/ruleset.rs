//! Rule-set throughput: 1M generated process-exec events against all
//! SigmaHQ Linux process-creation rules, and against the seed's two YAML
//! rules, with the prefilter and with every rule evaluated in full.
//!
//! `cargo bench -p dac-detect --bench ruleset` (optimized; one thread).
//! `DAC_BENCH_EVENTS` sets the number of events (default 1,000,000);
//! `DAC_BENCH_PROFILE=1` runs only the prefiltered matching, for `perf`;
//! `DAC_BENCH_ONLY=sigma|seed-yaml|sigma+seed` runs one set.

#[path = "../tests/common/generate.rs"]
mod generate;

use std::path::Path;
use std::time::Instant;

use dac_detect::{is_rule_file, load_path, Event, FieldMapping, Match, RuleSet, Scratch};

/// Distinct events generated; the run cycles through them. Small enough
/// to stay in cache, as an event just parsed by a pipeline is.
const DISTINCT: usize = 5_000;

fn main() {
    let total: usize = std::env::var("DAC_BENCH_EVENTS").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let sigma_dir = std::env::var_os("DAC_SIGMA_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| root.join("../example-rules/sigma/linux-process-creation"));
    let mapping = FieldMapping::default();
    let load_dir = |dir: &Path| {
        let mut paths: Vec<_> = std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.unwrap().path())
            .filter(|p| is_rule_file(p))
            .collect();
        paths.sort();
        paths.iter().filter_map(|p| load_path(p, &mapping).ok()).collect::<Vec<_>>()
    };
    let sigma = load_dir(&sigma_dir);
    let seed = load_dir(&root.join("../example-rules/yaml"));

    let started = Instant::now();
    let json = generate::events(1, DISTINCT.min(total));
    let lines: Vec<Vec<u8>> = json.iter().map(|v| serde_json::to_vec(v).unwrap()).collect();
    let events: Vec<Event> = json.into_iter().map(|v| Event::from_json(v).unwrap()).collect();
    eprintln!("generated {} distinct events in {:.1?}", events.len(), started.elapsed());
    println!("events: {total} ({} distinct, cycled), one thread", events.len());

    for (name, rules) in [("sigma", sigma.clone()), ("seed-yaml", seed.clone()), ("sigma+seed", [sigma, seed].concat())]
    {
        if std::env::var("DAC_BENCH_ONLY").is_ok_and(|only| only != name) {
            continue;
        }
        let set = RuleSet::compile(rules).unwrap();
        let stats = set.stats();
        let run = |prefilter: bool| {
            let mut scratch = Scratch::default();
            let mut out: Vec<Match> = Vec::new();
            let mut alerts = 0usize;
            let cpu = cpu_ns();
            let started = Instant::now();
            for i in 0..total {
                let event = &events[i % events.len()];
                out.clear();
                if prefilter {
                    set.matches_with(event, &mut scratch, &mut out);
                } else {
                    set.matches_without_prefilter(event, &mut out);
                }
                alerts += out.len();
            }
            let wall = started.elapsed().as_secs_f64();
            // On a shared machine the wall clock includes waiting for a
            // core; time on CPU is what one core delivers.
            let on_cpu = cpu.zip(cpu_ns()).map(|(a, b)| (b - a) as f64 / 1e9).unwrap_or(wall);
            (on_cpu, wall, alerts, scratch.evaluated)
        };
        let (fast, fast_wall, alerts, evaluated) = run(true);
        if std::env::var_os("DAC_BENCH_PROFILE").is_some() {
            // Only the prefiltered path, for `perf record`.
            println!("{name}: {:.0} events/s", total as f64 / fast);
            continue;
        }
        let (slow, _, alerts_full, _) = run(false);
        assert_eq!(alerts, alerts_full, "prefilter changed the alerts");
        println!(
            "{name:<10} {:>3} rules: prefilter {:>9.0} events/s ({:.0} ns/event; wall clock {:.0} events/s) | every rule {:>9.0} events/s | speed-up x{:.1} | alerts {alerts} | rules evaluated/event {:.2} | always-candidates {} | literals {}",
            stats.rules,
            total as f64 / fast,
            fast * 1e9 / total as f64,
            total as f64 / fast_wall,
            total as f64 / slow,
            slow / fast,
            evaluated as f64 / total as f64,
            stats.always_candidates,
            stats.literals,
        );
        if name == "sigma" {
            // End to end from NDJSON bytes, as a replay would: parsing the
            // document is part of the bill.
            let mut scratch = Scratch::default();
            let mut out = Vec::new();
            let cpu = cpu_ns();
            for i in 0..total {
                let event = Event::from_json_slice(&lines[i % lines.len()]).unwrap().0;
                out.clear();
                set.matches_with(&event, &mut scratch, &mut out);
            }
            let both = (cpu_ns().unwrap_or(0) - cpu.unwrap_or(0)) as f64 / 1e9;
            let cpu = cpu_ns();
            for i in 0..total {
                std::hint::black_box(Event::from_json_slice(&lines[i % lines.len()]).unwrap());
            }
            let parse = (cpu_ns().unwrap_or(0) - cpu.unwrap_or(0)) as f64 / 1e9;
            println!(
                "{name:<10} {:>3} rules: JSON parse + prefilter {:>9.0} events/s ({:.0} ns/event, of which parsing {:.0} ns)",
                stats.rules,
                total as f64 / both,
                both * 1e9 / total as f64,
                parse * 1e9 / total as f64
            );
        }
    }
}

/// Nanoseconds this thread has spent on a CPU (Linux), if known.
fn cpu_ns() -> Option<u64> {
    std::fs::read_to_string("/proc/thread-self/schedstat").ok()?.split_whitespace().next()?.parse().ok()
}
