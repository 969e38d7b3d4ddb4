//! `dac serve` with many tenants in one process: what a loaded rule costs in
//! resident memory, how many events per second the tenants' engines take,
//! and whether one tenant's hostile rules slow another tenant down.
//!
//! Everything is the real server without HTTP and MongoDB: a tenants file
//! parsed by `ServeConfig::parse`, a state directory of rule components
//! loaded by `Service::open` (each tenant its own sandbox and engine), and
//! per event what a change stream's loop does (`serve::stream`'s private
//! `Fanout::run`, whose few lines are repeated here): route with the
//! stream's `ScopeIndex` (one lookup of `ingest.tenant`, a hash of its
//! value), then for each tenant taking the event the stream's own
//! `Tenant::deliver` — the tenant's engine evaluates the event under its
//! lock, each alert goes through the rule-declared dedup policy to a sink
//! that encodes it (JSON here, standing in for the MongoDB sink's BSON;
//! nothing is written to a database) — and `dac_serve::quarantine` for the
//! faults, with the server's threshold, auditing each quarantine.
//!
//! 1. **Memory and throughput**: `--tenants` tenants (100) on one shared
//!    collection, each with `--rules` (10) distinct Rust rule components —
//!    the six example rules and the four of `tests/bench-rules` — under the
//!    default limits. Resident memory (`VmRSS`, with its anonymous and
//!    file-backed parts, and the proportional `Pss`) is read before the
//!    service opens, after it opened (components loaded from the
//!    compiled-code cache, filled beforehand by a child process so
//!    compilation's heap is not counted), after one event per tenant entered
//!    every rule (prefilter off for it; instances are made lazily, though
//!    reading a rule's metadata at load already makes one), and after the
//!    event stream (the events' own memory taken out: they are generated
//!    after the first three readings). The events are the replay bench's
//!    corpus (seed 1, 1 % attacks) tagged round-robin with the tenants' ids.
//! 2. **Isolation**: tenant B (the same ten rules) alone on a stream of the
//!    corpus tagged B; then with tenant A on the same stream, every other
//!    event A's (the same corpus tagged A): A with no rules (the cost of
//!    sharing the stream with A's events, whatever A runs), A with the
//!    hostile `infinite-loop` and `memory-bomb` under `deadline_ms = 10`,
//!    `memory_mib = 16`, quarantined after the server's default 5 faults,
//!    and — on a shorter stream — the same with quarantine off, which prices
//!    one faulting evaluation: the tenants of a stream are evaluated one
//!    after the other, so without quarantine every A event costs B A's whole
//!    deadline. B's rate is compared with B alone and with the rule-less A,
//!    over the whole run (the quarantine's one-off cost amortized over the
//!    run's length) and after the last quarantine (the steady state).
//!
//! 3. **Threads**: (1)'s tenants and events as a stream delivers them —
//!    routed into batches of `BATCH_EVENTS`, each batch delivered by
//!    `TenantBatch::deliver` with its tenants shared out between threads —
//!    on one thread and on `--threads` (default: the machine's cores, at
//!    least 2); then again with every tenant's prefilter off (each rule
//!    called on each of its tenant's events: CPU-heavy tenants) on a tenth
//!    of the events. Wall-clock rates; every tenant's alerts compared
//!    between the runs (and with (1)).
//!
//! Rates come from the thread's CPU time (the machine is shared), the wall
//! clock beside them; each is the median of R runs.
//!
//! Run: `cargo bench -p dac-tests --bench serve [-- --tenants 100 --rules 10
//! --events N --runs R --unquarantined-events K --threads T]`. Exits non-zero when B's
//! alerts differ in any way between the isolation runs, or the tenants'
//! alerts disagree with B's on the same corpus.

use dac_engine::{Alert, AlertPolicy, ComponentCache, Limits, Location, Sandbox, Sink, SinkError, Stats};
use dac_event::Event;
use dac_serve::{ScopeIndex, ServeConfig, Service, Tenant, TenantBatch, BATCH_EVENTS};
use dac_tests::bench::{loadavg, thousands, thread_cpu_ns};
use dac_tests::generate::{EventGenerator, GeneratorConfig};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::sync::Arc;
use std::time::{Duration, Instant};

type Error = Box<dyn std::error::Error + Send + Sync>;
type Result<T, E = Error> = std::result::Result<T, E>;

const SEED: u64 = 1;
const MALICIOUS_PER_MILLE: u32 = 10;
/// The targets.
const RSS_PER_RULE_TARGET_MIB: f64 = 2.0;
const MAX_ISOLATION_DROP: f64 = 0.10;
/// The scope field the ingest path sets.
const SCOPE_FIELD: &str = "ingest.tenant";
const SHARED_COLLECTION: &str = "events";
/// The stream of `SHARED_COLLECTION`, as alerts name where an event was read.
const STREAM: &str = "bench.events";
/// Tenant A's limits in the isolation runs: what a tenant would set to
/// keep a slow rule cheap.
const HOSTILE_DEADLINE_MS: u64 = 10;
const HOSTILE_MEMORY_MIB: usize = 16;
const HOSTILE_RULES: [&str; 2] = ["infinite-loop", "memory-bomb"];
/// The server's default `quarantine_after_faults`.
const QUARANTINE_AFTER: u32 = 5;

fn main() -> ExitCode {
    // The child that fills the compiled-code cache (see `warm_cache`).
    let argv: Vec<String> = std::env::args().collect();
    if argv.get(1).map(String::as_str) == Some("--warm-cache") {
        return match warm_cache_child(&argv[2..]) {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("serve bench (cache child): {err}");
                ExitCode::from(2)
            }
        };
    }
    match run() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(err) => {
            eprintln!("serve bench: {err}");
            ExitCode::from(2)
        }
    }
}

struct Args {
    tenants: usize,
    rules: usize,
    events: usize,
    runs: usize,
    /// B events of the quarantine-off isolation run (each A event there
    /// costs A's deadline).
    unquarantined_events: usize,
    /// (3)'s thread count (default: the machine's cores, at least 2).
    threads: Option<usize>,
}

fn parse_args() -> Result<Args> {
    let mut args = Args { tenants: 100, rules: 10, events: 200_000, runs: 5, unquarantined_events: 300, threads: None };
    let mut threads = 0;
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((flag, value)) => (flag.to_owned(), Some(value.to_owned())),
            None => (arg.clone(), None),
        };
        let slot = match flag.as_str() {
            // `cargo bench` passes this to every bench binary.
            "--bench" => continue,
            "--tenants" => &mut args.tenants,
            "--rules" => &mut args.rules,
            "--events" => &mut args.events,
            "--runs" => &mut args.runs,
            "--unquarantined-events" => &mut args.unquarantined_events,
            "--threads" => &mut threads,
            "-h" | "--help" => {
                println!(
                    "usage: cargo bench -p dac-tests --bench serve [-- --tenants T (100)] [--rules 1..=10 (10)] \
                     [--events N (200,000)] [--runs R (5)] [--unquarantined-events K (300)] [--threads T (cores, ≥ 2)]"
                );
                std::process::exit(0);
            }
            other => {
                return Err(format!(
                    "unknown argument `{other}` (expected --tenants, --rules, --events, --runs, --unquarantined-events, --threads)"
                )
                .into())
            }
        };
        let value = inline.or_else(|| it.next()).ok_or_else(|| format!("{flag} needs a value"))?;
        let n: usize = value.replace(['_', ','], "").parse().map_err(|_| format!("{flag}: not a count: {value}"))?;
        if n == 0 {
            return Err(format!("{flag} must be at least 1").into());
        }
        *slot = n;
    }
    if args.rules > 10 {
        return Err("--rules: at most 10 (the six example rules and the four bench rules)".into());
    }
    args.unquarantined_events = args.unquarantined_events.min(args.events);
    args.threads = (threads > 0).then_some(threads);
    Ok(args)
}

/// The ten distinct Rust rules, in the order `--rules` takes them.
fn rule_components() -> Vec<(String, PathBuf)> {
    let examples = dac_tests::EXAMPLE_RULES.iter().map(|p| (p.to_string(), dac_tests::example_rule(p)));
    let bench = dac_tests::BENCH_RULES.iter().map(|p| (p.to_string(), dac_tests::bench_rule(p)));
    examples.chain(bench).collect()
}

fn run() -> Result<bool> {
    let args = parse_args()?;
    let load_before = loadavg();
    eprintln!("building the rule components (examples, bench rules, hostile rules)…");
    let mut rules = rule_components();
    rules.truncate(args.rules);
    let hostile: Vec<(String, PathBuf)> =
        HOSTILE_RULES.iter().map(|p| (p.to_string(), dac_tests::hostile_rule(p))).collect();
    let ten = rule_components();

    let dir = tempfile::tempdir()?;
    let cache = dir.path().join("cache");
    eprintln!("compiling the components into the cache (child process)…");
    let all: Vec<&PathBuf> = ten.iter().chain(&hostile).map(|(_, path)| path).collect();
    let compile = warm_cache(&cache, &all)?;

    // ---- 1. Memory and throughput ---------------------------------------
    let ids: Vec<String> = (0..args.tenants).map(|i| format!("t{i:03}")).collect();
    let tenant_specs: Vec<TenantSpec> =
        ids.iter().map(|id| TenantSpec { id: id.clone(), limits: String::new(), rules: rules.clone() }).collect();
    let state = dir.path().join("many");
    let config = write_state(&state, &cache, &tenant_specs, QUARANTINE_AFTER)?;

    // Built (by cargo, if it is not yet) before the clock starts: the
    // compiler an upload would run; opening finds every rule in the cache.
    let compiler = dac_tests::child_compiler();
    let rss_before = Rss::now();
    let started = Instant::now();
    let service = Arc::new(Service::open(config, &state, dac_detect::FieldMapping::default(), compiler.clone())?);
    let load_time = started.elapsed();
    let rss_opened = Rss::now();
    let loaded: usize = service.tenants().iter().map(|t| t.rules().len()).sum();
    if loaded != args.tenants * args.rules {
        return Err(format!("{loaded} rules loaded, expected {}", args.tenants * args.rules).into());
    }
    let instances_at_load = instantiations(&service);
    let started = Instant::now();
    let instances = instantiate_all(&service)?;
    let instantiate_time = started.elapsed();
    let rss_instantiated = Rss::now();
    if instances != loaded as u64 {
        return Err(format!("{instances} instances after the warm-up, expected one per rule ({loaded})").into());
    }

    // The events come after the memory figures above, so that no heap
    // they freed could be reused by the service and hide its memory.
    eprintln!("generating {} events (seed {SEED}, {MALICIOUS_PER_MILLE}‰ attacks)…", thousands(args.events as u64));
    let corpus: Vec<Value> = EventGenerator::new(GeneratorConfig {
        seed: SEED,
        malicious_per_mille: MALICIOUS_PER_MILLE,
        ..GeneratorConfig::default()
    })
    .take(args.events)
    .collect();
    let mut events = tag(&corpus, |i| &ids[i % ids.len()]);
    let rss_events = Rss::now();

    eprintln!("(1) {} tenants × {} rules, {} runs…", args.tenants, args.rules, args.runs);
    let mut many = Vec::new();
    for _ in 0..args.runs {
        let mut stream = Stream::new(&service, None);
        many.push(stream.run(&mut events));
    }
    // What the stream added (instances' memory growing), without the events.
    let rss_streamed = rss_instantiated.plus(&Rss::now().minus(&rss_events));
    let many_alerts = many[0].alerts;
    let alerts_by_rule = alerts_by_rule(&service);

    // ---- 3. Threads (on (1)'s tenants and events) -----------------------
    let threads = args.threads.unwrap_or_else(dac_engine::default_threads).max(2);
    // Also with every tenant's prefilter off (every rule called on each of
    // its events: CPU-heavy tenants), on a tenth of the events.
    let heavy = &events[..events.len().div_ceil(10)];
    let mut by_threads: Vec<(bool, usize, Vec<Batched>)> = Vec::new();
    for prefilter in [true, false] {
        for tenant in service.tenants() {
            tenant.with_engine(|engine| engine.set_prefilter(prefilter));
        }
        let events = if prefilter { &events[..] } else { heavy };
        for n in [1, threads] {
            eprintln!("(3) prefilter {prefilter}: the stream by batches on {n} thread(s), {} runs…", args.runs);
            let runs = (0..args.runs).map(|_| batched(&service, events, n)).collect::<Result<Vec<_>>>()?;
            by_threads.push((prefilter, n, runs));
        }
    }
    drop(events);
    drop(service);

    // ---- 2. Isolation ---------------------------------------------------
    let k = args.unquarantined_events;
    let mut isolation = Vec::new();
    let scenarios = [
        Scenario { label: "B alone", key: "alone", hostile_a: false, corpus: &corpus, with_a: false, threshold: None },
        Scenario {
            label: "B + A's events, A without rules",
            key: "a-empty",
            hostile_a: false,
            corpus: &corpus,
            with_a: true,
            threshold: None,
        },
        Scenario {
            label: "B + A hostile, quarantine after 5 faults",
            key: "a-hostile",
            hostile_a: true,
            corpus: &corpus,
            with_a: true,
            threshold: None,
        },
        Scenario {
            label: "B + A hostile, quarantine off",
            key: "a-hostile-unq",
            hostile_a: true,
            corpus: &corpus[..k],
            with_a: true,
            threshold: Some(u64::MAX),
        },
    ];
    for Scenario { label, key, hostile_a, corpus, with_a, threshold } in scenarios {
        let mut events = if with_a { interleave(corpus) } else { tag(corpus, |_| "b") };
        let runs = if threshold.is_some() { 1 } else { args.runs };
        eprintln!("(2) {label}, {} events, {runs} run(s)…", thousands(events.len() as u64));
        let mut measured = Vec::new();
        for run in 0..runs {
            let state = dir.path().join(format!("iso-{key}-{run}"));
            let specs = [
                TenantSpec {
                    id: "a".into(),
                    limits: format!("deadline_ms = {HOSTILE_DEADLINE_MS}\nmemory_mib = {HOSTILE_MEMORY_MIB}\n"),
                    rules: if hostile_a { hostile.clone() } else { Vec::new() },
                },
                TenantSpec { id: "b".into(), limits: String::new(), rules: ten.clone() },
            ];
            let config = write_state(&state, &cache, &specs, QUARANTINE_AFTER)?;
            let service = Service::open(config, &state, dac_detect::FieldMapping::default(), compiler.clone())?;
            // B's instances exist before the clock starts, in every
            // scenario; A's hostile ones are made (and remade after each
            // fault) on the clock, as in the server.
            let b = service.tenant("b").expect("configured");
            warm(&b)?;
            let mut stream = Stream::new(&service, threshold);
            let mut m = stream.run(&mut events);
            let a = service.tenant("a").expect("configured");
            m.a_quarantined = a.quarantined().iter().map(|q| (q.name.clone(), q.faults)).collect();
            m.a_fault_kinds = fault_kinds(&a);
            std::fs::remove_dir_all(&state).ok();
            measured.push(m);
        }
        isolation.push((label, key, measured));
    }
    let load_after = loadavg();

    // ---- Report ---------------------------------------------------------
    let mut ok = true;
    println!();
    println!("dac serve benchmark");
    println!("===================");
    println!(
        "machine    nproc {}, load average {load_before} (before) / {load_after} (after)",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "events     {} generated (seed {SEED}, {MALICIOUS_PER_MILLE}‰ attacks), tagged `{SCOPE_FIELD}`; all tenants on \
         collection `{SHARED_COLLECTION}`",
        thousands(args.events as u64)
    );
    println!(
        "rules      {} distinct Rust components per tenant: {}",
        args.rules,
        rules.iter().map(|(name, _)| name.as_str()).collect::<Vec<_>>().join(", ")
    );
    let defaults = Limits::default();
    println!(
        "limits     default: deadline {:?}, memory {} MiB, fuel off; tenant A in (2): deadline {HOSTILE_DEADLINE_MS} ms \
         (epoch tick {:?}), memory {HOSTILE_MEMORY_MIB} MiB",
        defaults.deadline.unwrap_or_default(),
        defaults.memory_bytes >> 20,
        Limits::EPOCH_TICK
    );
    println!("runs       {}; figures are medians (min–max beside them)", args.runs);
    println!("compile    {} components compiled once into the cache (child process): {:.0} ms", all.len(), ms(compile));

    println!();
    println!("(1) {} tenants × {} rules in one process", args.tenants, args.rules);
    println!(
        "  load     Service::open (from the compiled-code cache): {:.0} ms ({:.2} ms per tenant); {} instances \
         made by the load itself (reading each rule's metadata instantiates it); a warm-up event entering every \
         rule: {:.0} ms, {} instances in all",
        ms(load_time),
        ms(load_time) / args.tenants as f64,
        thousands(instances_at_load),
        ms(instantiate_time),
        thousands(instances)
    );
    println!("  memory   {:<36} {:>9} {:>9} {:>9} {:>9}", "VmRSS (MiB)", "total", "anon", "file", "Pss");
    for (what, rss) in [
        ("before Service::open", &rss_before),
        ("after Service::open", &rss_opened),
        ("every rule entered once", &rss_instantiated),
        ("after the stream (events excluded)", &rss_streamed),
    ] {
        println!("           {:<36} {:>9.1} {:>9.1} {:>9.1} {:>9.1}", what, rss.total, rss.anon, rss.file, rss.pss);
    }
    let per_rule = |rss: &Rss| rss.minus(&rss_before).scaled(1.0 / loaded as f64);
    let (opened, entered, streamed) = (per_rule(&rss_opened), per_rule(&rss_instantiated), per_rule(&rss_streamed));
    for (what, rss) in [("loaded", &opened), ("entered once", &entered), ("after the stream", &streamed)] {
        println!(
            "  per rule {:<16} {:.3} MiB ({:.3} anonymous: instance, store, engine; {:.3} file-backed: the \
             compiled code, one copy per distinct rule and engine); Pss {:.3} MiB",
            what, rss.total, rss.anon, rss.file, rss.pss
        );
    }
    let worst = entered.total.max(streamed.total);
    println!(
        "  target   ≤ {RSS_PER_RULE_TARGET_MIB} MiB per loaded Rust rule: {worst:.3} MiB ({} rules) — {}",
        thousands(loaded as u64),
        if worst <= RSS_PER_RULE_TARGET_MIB { "PASS" } else { "MISS" }
    );
    let events_rate = rates(&many, |m| (m.events, m.cpu, m.wall));
    let evaluations_rate = rates(&many, |m| (m.evaluations, m.cpu, m.wall));
    println!(
        "  events   {} events/s (cpu; runs {}–{}), {} events/s (wall); {} rule evaluations/s (cpu), {:.2} per event",
        thousands(events_rate.cpu as u64),
        thousands(events_rate.min as u64),
        thousands(events_rate.max as u64),
        thousands(events_rate.wall as u64),
        thousands(evaluations_rate.cpu as u64),
        many[0].evaluations as f64 / many[0].events as f64
    );
    println!(
        "           per run: {} deliveries (routed by a scope index over {} tenants), {} alerts, {} faults",
        thousands(many[0].deliveries),
        args.tenants,
        thousands(many_alerts),
        many[0].faults
    );
    let fired: Vec<String> = alerts_by_rule.iter().map(|(rule, n)| format!("{rule} {}", thousands(*n))).collect();
    println!("  alerts   by rule, all tenants, all runs: {}", fired.join(", "));

    println!();
    println!(
        "(3) threads: (1)'s stream through `TenantBatch::deliver` (batches of {BATCH_EVENTS}; each thread a share of the \
         tenants), wall clock"
    );
    let wall_rate = |runs: &[Batched]| {
        let mut rates: Vec<f64> = runs.iter().map(|run| run.events as f64 / run.wall.as_secs_f64()).collect();
        rates.sort_by(f64::total_cmp);
        (rates[rates.len() / 2], rates[0], rates[rates.len() - 1])
    };
    let mut threads_ok = true;
    for pair in by_threads.chunks(2) {
        let (prefilter, _, first) = &pair[0];
        let (one, _, _) = wall_rate(first);
        let what = if *prefilter { "prefilter on (as (1))" } else { "prefilter off, 1/10 of the events" };
        for (_, n, runs) in pair {
            let (median, min, max) = wall_rate(runs);
            println!(
                "  {what:<34} {n} thread(s)  {} events/s (runs {}–{}), {:.2}× one thread",
                thousands(median as u64),
                thousands(min as u64),
                thousands(max as u64),
                median / one
            );
        }
        let reference = &first[0].alerts;
        let same = pair.iter().all(|(.., runs)| runs.iter().all(|run| &run.alerts == reference));
        let total: u64 = reference.values().sum();
        // With the prefilter on, the same events as (1): the same alerts.
        let expected = !*prefilter || total == many_alerts;
        println!(
            "  {what:<34} alerts {} per run, per tenant the same on every run and thread count{}: {}",
            thousands(total),
            if *prefilter { ", and as (1)" } else { "" },
            if same && expected { "yes" } else { "MISMATCH" }
        );
        threads_ok &= same && expected;
    }

    println!();
    println!("(2) isolation: tenant B ({} rules) and tenant A on one stream", ten.len());
    println!(
        "  {:<42} {:>8} {:>8} {:>15} {:>15} {:>15} {:>8} {:>8}",
        "scenario", "events", "B events", "B ev/s cpu", "B ev/s wall", "steady cpu", "B alerts", "A faults"
    );
    let b_rate = |measured: &[Measured]| rates(measured, |m| (m.b_events, m.cpu, m.wall));
    let steady_rate = |measured: &[Measured]| rates(measured, Measured::steady);
    let alone = b_rate(&isolation[0].2);
    let reference_alerts = isolation[0].2[0].b_alerts.clone();
    for (label, _, measured) in &isolation {
        let (rate, steady) = (b_rate(measured), steady_rate(measured));
        println!(
            "  {:<42} {:>8} {:>8} {:>15} {:>15} {:>15} {:>8} {:>8}",
            label,
            thousands(measured[0].events),
            thousands(measured[0].b_events),
            thousands(rate.cpu as u64),
            thousands(rate.wall as u64),
            thousands(steady.cpu as u64),
            thousands(measured[0].b_alerts.len() as u64),
            measured[0].faults
        );
    }
    println!("  (steady: B's events after A's last quarantine, over the time after it; the whole run when none)");
    let empty = b_rate(&isolation[1].2);
    let hostile = b_rate(&isolation[2].2);
    let hostile_steady = steady_rate(&isolation[2].2);
    let verdict = |ratio: f64| if 1.0 - ratio <= MAX_ISOLATION_DROP { "PASS" } else { "MISS" };
    println!(
        "  B's throughput ratios (cpu; wall in brackets), target: a drop of at most {:.0} %",
        100.0 * MAX_ISOLATION_DROP
    );
    let ratios = [
        ("A hostile / B alone, whole run", hostile.cpu / alone.cpu, hostile.wall / alone.wall),
        ("A hostile / A without rules, whole run", hostile.cpu / empty.cpu, hostile.wall / empty.wall),
        (
            "A hostile after quarantine / A without rules",
            hostile_steady.cpu / empty.cpu,
            hostile_steady.wall / empty.wall,
        ),
        ("A without rules / B alone (sharing the stream)", empty.cpu / alone.cpu, empty.wall / alone.wall),
    ];
    for (what, cpu, wall) in ratios {
        println!("    {what:<48} {cpu:>6.3} [{wall:.3}]  drop {:>5.1} %  {}", 100.0 * (1.0 - cpu), verdict(cpu));
    }
    let hostile_run = &isolation[2].2[0];
    let (q_cpu, q_wall) = median_quarantine(&isolation[2].2);
    println!(
        "  A's rules quarantined: {} (faults: {}); the stream reached the last quarantine {:.1} ms cpu ({:.1} ms \
         wall) into the run — the one-off cost, then A's events cost what a rule-less tenant's do",
        describe_quarantine(&hostile_run.a_quarantined),
        describe_kinds(&hostile_run.a_fault_kinds),
        ms(q_cpu),
        ms(q_wall)
    );
    let unq = &isolation[3].2[0];
    let a_events = (unq.events - unq.b_events) as f64;
    // B's share of the run, priced at B-alone's rate; the rest is A's.
    let per_a_event = (unq.cpu.as_secs_f64() - unq.b_events as f64 / alone.cpu) / a_events;
    let per_a_wall = (unq.wall.as_secs_f64() - unq.b_events as f64 / alone.wall) / a_events;
    println!(
        "  quarantine off ({} A events, faults: {}): one A event costs the stream {:.2} ms cpu, {:.2} ms wall — \
         one infinite-loop deadline ({HOSTILE_DEADLINE_MS} ms, epoch ticks of {:?}) plus one memory-bomb fault; \
         B's rate falls to {:.3} % of alone (wall)",
        thousands(a_events as u64),
        describe_kinds(&unq.a_fault_kinds),
        per_a_event * 1e3,
        per_a_wall * 1e3,
        Limits::EPOCH_TICK,
        100.0 * (unq.b_events as f64 / unq.wall.as_secs_f64()) / alone.wall
    );
    println!(
        "           a stream waits for every tenant before its next batch (here on one thread, one after the \
         other): without quarantine every A event holds B back for A's whole deadline; quarantine bounds that to {} \
         faults per rule",
        QUARANTINE_AFTER
    );

    // ---- Sanity ---------------------------------------------------------
    println!();
    println!("sanity");
    for (label, _, measured) in &isolation {
        for (run, m) in measured.iter().enumerate() {
            let want: Vec<&(usize, String)> =
                reference_alerts.iter().filter(|(seq, _)| *seq < m.b_events as usize).collect();
            let got: Vec<&(usize, String)> = m.b_alerts.iter().collect();
            if got != want {
                ok = false;
                println!(
                    "  MISMATCH {label} run {}: B raised {} alerts, B alone {} on the same events",
                    run + 1,
                    got.len(),
                    want.len()
                );
            }
            if m.a_alerts != 0 {
                ok = false;
                println!("  MISMATCH {label} run {}: A raised {} alerts; its rules never alert", run + 1, m.a_alerts);
            }
        }
    }
    if ok {
        println!(
            "  B's alerts identical (event, rule uuid) in every isolation run: {} on {} events",
            thousands(reference_alerts.len() as u64),
            thousands(args.events as u64)
        );
    }
    let hostile_quarantined = isolation[2].2.iter().all(|m| {
        m.a_quarantined.len() == HOSTILE_RULES.len()
            && m.a_quarantined.iter().all(|(_, faults)| *faults == u64::from(QUARANTINE_AFTER))
    });
    if !hostile_quarantined {
        ok = false;
        println!("  MISMATCH A's two hostile rules were not both quarantined at their fault number {QUARANTINE_AFTER} in every run");
    }
    ok &= threads_ok;
    if many.iter().any(|m| m.alerts != many_alerts) {
        ok = false;
        println!("  MISMATCH (1)'s runs disagree on the number of alerts");
    }
    if args.rules == ten.len() {
        // Every event is one tenant's, and every tenant has B's rules.
        let same = many_alerts == reference_alerts.len() as u64;
        println!(
            "  (1)'s tenants together raised {} alerts, B alone {} on the same events: {}",
            thousands(many_alerts),
            thousands(reference_alerts.len() as u64),
            if same { "equal" } else { "MISMATCH" }
        );
        ok &= same;
    }

    println!();
    println!("summary");
    println!(
        "  {} tenants × {} Rust rules in one process: {worst:.2} MiB resident per loaded rule (target ≤ \
         {RSS_PER_RULE_TARGET_MIB} MiB: {}), opened in {:.1} s; {} events/s, {} rule evaluations/s (cpu, one stream)",
        args.tenants,
        args.rules,
        if worst <= RSS_PER_RULE_TARGET_MIB { "PASS" } else { "MISS" },
        load_time.as_secs_f64(),
        thousands(events_rate.cpu as u64),
        thousands(evaluations_rate.cpu as u64)
    );
    println!(
        "  isolation: with A's infinite-loop and memory-bomb on B's stream, B keeps {:.1} % of its rate once they \
         are quarantined (vs a rule-less A: {}), {:.1} % over the whole run of {} events (vs a rule-less A: {}; the \
         quarantine's one-off {:.0} ms included), {:.1} % of B alone (also paying for A's events on the stream: {}); \
         B's alerts {}",
        100.0 * hostile_steady.cpu / empty.cpu,
        verdict(hostile_steady.cpu / empty.cpu),
        100.0 * hostile.cpu / empty.cpu,
        thousands(isolation[2].2[0].events),
        verdict(hostile.cpu / empty.cpu),
        ms(q_cpu),
        100.0 * hostile.cpu / alone.cpu,
        verdict(hostile.cpu / alone.cpu),
        if ok { "exact" } else { "NOT exact (see sanity)" }
    );
    Ok(ok)
}

/// One isolation run's set-up.
struct Scenario<'c> {
    label: &'static str,
    /// Names its state directories.
    key: &'static str,
    /// Tenant A runs the hostile rules (else none).
    hostile_a: bool,
    corpus: &'c [Value],
    /// Every other event is A's (else all are B's).
    with_a: bool,
    /// Faults before quarantine, if not the server's.
    threshold: Option<u64>,
}

// ---- The server's state ---------------------------------------------------

struct TenantSpec {
    id: String,
    /// `[tenant.limits]` lines.
    limits: String,
    rules: Vec<(String, PathBuf)>,
}

/// Writes `STATE/tenants/ID/rules/NAME` for every tenant (hard links to
/// the built components), points `STATE/cache` at the shared cache, and
/// returns the parsed tenants file.
fn write_state(state: &Path, cache: &Path, tenants: &[TenantSpec], quarantine: u32) -> Result<ServeConfig> {
    std::fs::create_dir_all(state)?;
    std::os::unix::fs::symlink(cache, state.join("cache"))?;
    // Distinct token hashes: 64 hex digits each, the admin's all `f`.
    let mut toml = format!("admin_token_sha256 = '{}'\nquarantine_after_faults = {quarantine}\n", "f".repeat(64));
    for (i, tenant) in tenants.iter().enumerate() {
        toml.push_str(&format!(
            "[[tenant]]\nid = '{id}'\ntoken_sha256 = '{:064x}'\nalert_collection = 'alerts_{id}'\n\
             scope = {{ field = '{SCOPE_FIELD}', equals = '{id}', collection = '{SHARED_COLLECTION}' }}\n",
            i + 1,
            id = tenant.id
        ));
        if !tenant.limits.is_empty() {
            toml.push_str("[tenant.limits]\n");
            toml.push_str(&tenant.limits);
        }
        let dir = state.join("tenants").join(&tenant.id).join("rules");
        std::fs::create_dir_all(&dir)?;
        for (name, path) in &tenant.rules {
            let target = dir.join(name);
            if std::fs::hard_link(path, &target).is_err() {
                std::fs::copy(path, &target)?;
            }
        }
    }
    Ok(ServeConfig::parse(&state.join("tenants.toml"), &toml)?)
}

/// Compiles `components` into `cache` in a child process (this binary,
/// `--warm-cache`), so that compilation's transient heap is not in this
/// process's resident memory; returns how long the child took.
fn warm_cache(cache: &Path, components: &[&PathBuf]) -> Result<Duration> {
    let started = Instant::now();
    let status = Command::new(std::env::current_exe()?).arg("--warm-cache").arg(cache).args(components).status()?;
    if !status.success() {
        return Err(format!("the cache-warming child failed: {status}").into());
    }
    Ok(started.elapsed())
}

/// The child: loads each component once under the default limits, the
/// wasmtime configuration of every tenant here (tenant A's deadline and
/// memory cap are per store, so it shares it).
fn warm_cache_child(args: &[String]) -> Result<()> {
    let (cache, components) = args.split_first().ok_or("--warm-cache CACHE COMPONENT…")?;
    let sandbox = Sandbox::new(Limits::default(), ComponentCache::new(Some(PathBuf::from(cache))))?;
    for component in components {
        sandbox.load_file(Path::new(component))?;
    }
    Ok(())
}

/// Enters every rule of every tenant once (prefilter off for that one
/// event), which instantiates them all; returns the instances made.
/// Instances made so far, every rule of every tenant.
fn instantiations(service: &Service) -> u64 {
    service.tenants().iter().map(|t| t.with_engine(|e| e.components().map(|r| r.instantiations()).sum::<u64>())).sum()
}

fn instantiate_all(service: &Service) -> Result<u64> {
    let mut instances = 0;
    for tenant in service.tenants() {
        instances += warm(&tenant)?;
    }
    Ok(instances)
}

fn warm(tenant: &Tenant) -> Result<u64> {
    let mut event = Event::from_json(dac_tests::generate::seed_shadow_event())?;
    tenant.with_engine(|engine| {
        engine.set_prefilter(false);
        let mut outcomes = Vec::new();
        engine.evaluate(&mut event, &mut Stats::default(), &mut outcomes);
        engine.set_prefilter(true);
        if let Some(fault) = outcomes.iter().find_map(|o| o.result.as_ref().err()) {
            return Err(format!("tenant {}: warming up: {fault}", tenant.id()).into());
        }
        Ok(engine.components().map(|rule| rule.instantiations()).sum())
    })
}

/// The corpus, each event tagged with the tenant `tenant(index)`.
fn tag<'a>(corpus: &[Value], tenant: impl Fn(usize) -> &'a str) -> Vec<Event> {
    corpus
        .iter()
        .enumerate()
        .map(|(i, event)| {
            let mut event = event.clone();
            event["ingest"] = json!({ "tenant": tenant(i) });
            Event::from_json(event).expect("the generator writes objects")
        })
        .collect()
}

/// The corpus tagged B, with the same corpus tagged A after each event.
fn interleave(corpus: &[Value]) -> Vec<Event> {
    let b = tag(corpus, |_| "b");
    let a = tag(corpus, |_| "a");
    b.into_iter().zip(a).flat_map(|(b, a)| [b, a]).collect()
}

// ---- The stream -------------------------------------------------------------

/// One tenant of the stream, as `serve::stream`'s `Route`.
struct Route {
    tenant: Arc<Tenant>,
    /// The tenant's scope value, to tell A's and B's figures apart.
    equals: String,
    policy: AlertPolicy,
}

/// A stream's fan-out, as `serve::stream`'s `Fanout::run` does per event.
struct Stream<'s> {
    service: &'s Service,
    routes: Vec<Route>,
    /// Which of `routes` take an event: the stream's own index.
    index: ScopeIndex,
    taken_by: Vec<usize>,
    /// Faults before quarantine: the server's setting unless overridden.
    threshold: u64,
    sink: EncodingSink,
}

#[derive(Default)]
struct Measured {
    cpu: Duration,
    wall: Duration,
    events: u64,
    deliveries: u64,
    evaluations: u64,
    alerts: u64,
    faults: u64,
    /// Tenant `b`'s events, and its alerts as (index among B's events,
    /// rule uuid), in order.
    b_events: u64,
    b_alerts: Vec<(usize, String)>,
    a_alerts: u64,
    a_quarantined: Vec<(String, u64)>,
    a_fault_kinds: BTreeMap<String, u64>,
    /// When the last rule was quarantined: CPU and wall time into the run,
    /// and B's events until then.
    last_quarantine: Option<(Duration, Duration, u64)>,
}

impl Measured {
    /// B's events and the (cpu, wall) time after the last quarantine: the
    /// steady state once the hostile rules are out (the whole run when
    /// nothing was quarantined).
    fn steady(&self) -> (u64, Duration, Duration) {
        match self.last_quarantine {
            None => (self.b_events, self.cpu, self.wall),
            Some((cpu, wall, b)) => (self.b_events - b, self.cpu.saturating_sub(cpu), self.wall.saturating_sub(wall)),
        }
    }
}

impl<'s> Stream<'s> {
    fn new(service: &'s Service, threshold: Option<u64>) -> Stream<'s> {
        let tenants = service.tenants();
        let routes = tenants
            .iter()
            .map(|tenant| {
                let equals = match &tenant.config.scope {
                    dac_serve::Scope::Field(scope) => scope.equals.clone(),
                    dac_serve::Scope::Collection(_) => unreachable!("field scopes only here"),
                };
                Route { tenant: tenant.clone(), equals, policy: AlertPolicy::none() }
            })
            .collect();
        let threshold = threshold.unwrap_or(u64::from(service.config().quarantine_after_faults));
        let index = ScopeIndex::new(tenants.iter().map(|tenant| &tenant.config.scope));
        Stream { service, routes, index, taken_by: Vec::new(), threshold, sink: EncodingSink::default() }
    }

    fn run(&mut self, events: &mut [Event]) -> Measured {
        let evaluations_before = self.evaluations();
        let mut m = Measured::default();
        let mut b_seen = 0usize;
        let (cpu0, wall0) = (thread_cpu_ns(), Instant::now());
        for (line, event) in events.iter_mut().enumerate() {
            m.events += 1;
            let Stream { routes, index, taken_by, sink, service, threshold } = self;
            index.route(event, taken_by);
            for &tenant in taken_by.iter() {
                let route = &mut routes[tenant];
                m.deliveries += 1;
                let is_b = route.equals == "b";
                let at = Location { source: STREAM, line: line as u64 + 1 };
                let faults = route
                    .tenant
                    .deliver(event, at, &mut route.policy, sink)
                    .expect("the bench's sink does not fail")
                    .faults;
                let alerts = sink.uuids.len() as u64;
                m.alerts += alerts;
                if is_b {
                    m.b_alerts.extend(sink.uuids.drain(..).map(|uuid| (b_seen, uuid)));
                    b_seen += 1;
                } else {
                    sink.uuids.clear();
                    if route.equals == "a" {
                        m.a_alerts += alerts;
                    }
                }
                if !faults.is_empty() {
                    m.faults += faults.len() as u64;
                    if dac_serve::quarantine(service, &route.tenant, &faults, *threshold) > 0 {
                        let cpu = thread_cpu_ns().zip(cpu0).map(|(b, a)| Duration::from_nanos(b - a));
                        let wall = wall0.elapsed();
                        m.last_quarantine = Some((cpu.unwrap_or(wall), wall, b_seen as u64));
                    }
                }
            }
        }
        m.wall = wall0.elapsed();
        m.cpu = match (cpu0, thread_cpu_ns()) {
            (Some(a), Some(b)) => Duration::from_nanos(b - a),
            _ => m.wall,
        };
        m.b_events = b_seen as u64;
        m.evaluations = self.evaluations() - evaluations_before;
        m
    }

    /// Rule evaluations so far, every tenant (the metrics' counters, which
    /// go on across a quarantine).
    fn evaluations(&self) -> u64 {
        self.routes.iter().map(|route| route.tenant.counters().rules.values().map(|r| r.evaluations).sum::<u64>()).sum()
    }
}

/// One run of (3).
struct Batched {
    events: u64,
    wall: Duration,
    /// Alerts by tenant.
    alerts: BTreeMap<String, u64>,
}

/// Delivers `events` to `service`'s tenants as a stream does: each event
/// (copied, standing in for the driver's decoding) routed by the scope
/// index into a batch, each batch delivered on `threads` threads.
fn batched(service: &Service, events: &[Event], threads: usize) -> Result<Batched> {
    let tenants = service.tenants();
    let index = ScopeIndex::new(tenants.iter().map(|tenant| &tenant.config.scope));
    let mut routes: Vec<dac_serve::Route<EncodingSink>> =
        tenants.into_iter().map(|tenant| dac_serve::Route::new(tenant, EncodingSink::default())).collect();
    let (mut batch, mut taken) = (TenantBatch::default(), Vec::new());
    let started = Instant::now();
    for (line, event) in events.iter().enumerate() {
        index.route(event, &mut taken);
        batch.push(event.clone(), line as u64 + 1, &taken);
        if batch.len() == BATCH_EVENTS {
            batch.deliver(service, STREAM, &mut routes, threads)?;
        }
    }
    batch.deliver(service, STREAM, &mut routes, threads)?;
    let wall = started.elapsed();
    let alerts = routes.iter().map(|route| (route.tenant.id().to_owned(), route.sink.uuids.len() as u64)).collect();
    Ok(Batched { events: events.len() as u64, wall, alerts })
}

/// The sink of the stream's alerts: encodes each (JSON here, standing in
/// for the MongoDB sink's BSON) and keeps its rule's uuid, writes nothing.
#[derive(Default)]
struct EncodingSink {
    encoded: Vec<u8>,
    /// The uuids of the rules that alerted since the last `take`.
    uuids: Vec<String>,
}

impl Sink for EncodingSink {
    fn send(&mut self, alert: &Alert<'_>) -> Result<(), SinkError> {
        self.encoded.clear();
        serde_json::to_writer(&mut self.encoded, alert).expect("an alert encodes");
        black_box(&self.encoded);
        self.uuids.push(alert.uuid.to_owned());
        Ok(())
    }

    fn flush(&mut self) -> Result<(), SinkError> {
        Ok(())
    }
}

// ---- Figures ----------------------------------------------------------------

/// Alerts per rule title over every tenant (all runs).
fn alerts_by_rule(service: &Service) -> Vec<(String, u64)> {
    let mut by_rule: BTreeMap<String, u64> = BTreeMap::new();
    for tenant in service.tenants() {
        tenant.with_engine(|engine| {
            for (info, counters) in engine.rules() {
                *by_rule.entry(info.file_name()).or_default() += counters.alerts;
            }
        });
    }
    by_rule.into_iter().collect()
}

/// Tenant `a`'s faults by rule and kind, from the live engine's counters
/// and, for quarantined rules, their recorded fault count.
fn fault_kinds(tenant: &Tenant) -> BTreeMap<String, u64> {
    // The metrics' counters: they keep a quarantined rule's faults.
    let mut kinds = BTreeMap::new();
    for (name, counters) in tenant.counters().rules {
        for (kind, n) in &counters.faults {
            *kinds.entry(format!("{name} {kind}")).or_default() += n;
        }
    }
    kinds
}

fn describe_quarantine(quarantined: &[(String, u64)]) -> String {
    if quarantined.is_empty() {
        return "none".into();
    }
    quarantined.iter().map(|(name, faults)| format!("{name} after {faults} faults")).collect::<Vec<_>>().join(", ")
}

fn describe_kinds(kinds: &BTreeMap<String, u64>) -> String {
    kinds.iter().map(|(kind, n)| format!("{kind} ×{}", thousands(*n))).collect::<Vec<_>>().join(", ")
}

/// Median rates over runs (CPU and wall), and the CPU min–max.
struct Rate {
    cpu: f64,
    wall: f64,
    min: f64,
    max: f64,
}

/// `of` gives each run's (count, cpu, wall).
fn rates(runs: &[Measured], of: impl Fn(&Measured) -> (u64, Duration, Duration)) -> Rate {
    let mut cpu: Vec<f64> = runs.iter().map(&of).map(|(n, cpu, _)| n as f64 / cpu.as_secs_f64()).collect();
    let mut wall: Vec<f64> = runs.iter().map(&of).map(|(n, _, wall)| n as f64 / wall.as_secs_f64()).collect();
    cpu.sort_by(f64::total_cmp);
    wall.sort_by(f64::total_cmp);
    Rate { cpu: cpu[cpu.len() / 2], wall: wall[wall.len() / 2], min: cpu[0], max: cpu[cpu.len() - 1] }
}

/// The median (cpu, wall) time into the runs of their last quarantine.
fn median_quarantine(runs: &[Measured]) -> (Duration, Duration) {
    let mut cpu: Vec<Duration> = runs.iter().filter_map(|m| m.last_quarantine.map(|q| q.0)).collect();
    let mut wall: Vec<Duration> = runs.iter().filter_map(|m| m.last_quarantine.map(|q| q.1)).collect();
    cpu.sort();
    wall.sort();
    (cpu.get(cpu.len() / 2).copied().unwrap_or_default(), wall.get(wall.len() / 2).copied().unwrap_or_default())
}

/// Resident memory from `/proc/self/status`, MiB, and the proportional
/// set size from `/proc/self/smaps_rollup` (a page shared with other
/// mappings or processes counted as its share).
struct Rss {
    total: f64,
    anon: f64,
    file: f64,
    pss: f64,
}

impl Rss {
    fn plus(&self, other: &Rss) -> Rss {
        Rss {
            total: self.total + other.total,
            anon: self.anon + other.anon,
            file: self.file + other.file,
            pss: self.pss + other.pss,
        }
    }

    fn scaled(&self, by: f64) -> Rss {
        Rss { total: self.total * by, anon: self.anon * by, file: self.file * by, pss: self.pss * by }
    }

    fn minus(&self, other: &Rss) -> Rss {
        Rss {
            total: self.total - other.total,
            anon: self.anon - other.anon,
            file: self.file - other.file,
            pss: self.pss - other.pss,
        }
    }

    fn now() -> Rss {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let rollup = std::fs::read_to_string("/proc/self/smaps_rollup").unwrap_or_default();
        let field = |text: &str, name: &str| {
            text.lines()
                .find_map(|line| line.strip_prefix(name))
                .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
                .map_or(f64::NAN, |kib| kib / 1024.0)
        };
        Rss {
            total: field(&status, "VmRSS:"),
            anon: field(&status, "RssAnon:"),
            file: field(&status, "RssFile:"),
            pss: field(&rollup, "Pss:"),
        }
    }
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e3
}
