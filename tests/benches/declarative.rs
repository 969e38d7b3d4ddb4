//! Declarative rules in the engine: the seed's two rules as YAML against
//! the same rules as sandboxed components — written in Rust, and built from
//! the YAML by `dac build` — and all SigmaHQ Linux process-creation rules,
//! on the replay bench's corpus (the same generator, seed and attack rate
//! as `benches/replay.rs`). It also times `dac build` and the compilation of
//! a built component, and gives its size.
//!
//! Every set runs through `pipeline::run` in-process — read, raw-bytes
//! prefilter, parse when a rule may fire, evaluate, count alerts — with the
//! prefilter on (the default) and, for reference, off. Rates come from the
//! thread's CPU time (the machine is shared), the wall clock beside them;
//! each figure is the best of R runs.
//!
//! Run: `cargo bench -p dac-tests --bench declarative [-- --events N --runs R]`.
//! `DAC_SIGMA_DIR` overrides where the Sigma rules are. Exits non-zero when
//! the YAML, Rust and built versions of the seed rules disagree on the alerts.

use dac_engine::{ComponentCache, Engine, Limits, Options, ReplaySource, RuleLoader, Sandbox, Stats};
use dac_tests::bench::{loadavg, thread_cpu_ns, CountingSink, Quiet};
use dac_tests::generate::{self, GeneratorConfig};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

type Error = Box<dyn std::error::Error + Send + Sync>;
type Result<T, E = Error> = std::result::Result<T, E>;

const SEED: u64 = 1;
const MALICIOUS_PER_MILLE: u32 = 10;

struct Measured {
    cpu: Duration,
    wall: Duration,
    events: u64,
    alerts: u64,
    prefiltered: u64,
}

fn main() -> ExitCode {
    match run() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(err) => {
            eprintln!("declarative bench: {err}");
            ExitCode::from(2)
        }
    }
}

fn run() -> Result<bool> {
    let dac_tests::bench::Size { events, runs } =
        dac_tests::bench::Size::from_args("declarative", dac_tests::bench::Size { events: 1_000_000, runs: 3 })?;
    eprintln!("building the seed rules' components…");
    let components: Vec<PathBuf> = ["shadow", "tmp-output-redir"].iter().map(|p| dac_tests::example_rule(p)).collect();
    let yaml = dac_tests::yaml_rules_dir();
    let sigma = dac_tests::sigma_dir();

    let dir = tempfile::tempdir()?;
    let file = dir.path().join("events.ndjson");
    eprintln!("generating {events} events (seed {SEED}, {MALICIOUS_PER_MILLE}‰ attacks)…");
    let config = GeneratorConfig { seed: SEED, malicious_per_mille: MALICIOUS_PER_MILLE, ..GeneratorConfig::default() };
    generate::write_ndjson(config, events, File::create(&file)?)?;
    let cache = dir.path().join("cache");

    let built = dir.path().join("built");
    std::fs::create_dir(&built)?;
    build_seed_rules(&yaml, &built, &components, &cache)?;
    let shadow_built = vec![built.join("shadow.wasm")];

    let sets: [(&str, Vec<PathBuf>); 7] = [
        ("seed rules as Rust components", components.clone()),
        ("seed rules as YAML", vec![yaml.clone()]),
        ("seed rules built by dac build", vec![built.clone()]),
        ("shadow: Rust component", components[..1].to_vec()),
        ("shadow: YAML", vec![yaml.join("shadow.yaml")]),
        ("shadow: built by dac build", shadow_built),
        ("122 SigmaHQ rules", vec![sigma.clone()]),
    ];
    let sets: Vec<(&str, Vec<PathBuf>)> = sets
        .into_iter()
        .chain([("122 Sigma + 2 seed components", [vec![sigma.clone()], components.clone()].concat())])
        .collect();
    println!("events: {events}; best of {runs} runs; load average before: {}", loadavg());
    println!(
        "{:<32} {:>9} {:>14} {:>14} {:>9} {:>12}",
        "rules", "prefilter", "events/s (cpu)", "events/s (wall)", "alerts", "not parsed"
    );
    let mut alerts_by_set = Vec::new();
    for (name, rules) in &sets {
        for prefilter in [true, false] {
            let m = measure(rules, &file, &cache, prefilter, runs)?;
            println!(
                "{:<32} {:>9} {:>14.0} {:>14.0} {:>9} {:>11.1}%",
                name,
                if prefilter { "on" } else { "off" },
                m.events as f64 / m.cpu.as_secs_f64(),
                m.events as f64 / m.wall.as_secs_f64(),
                m.alerts,
                100.0 * m.prefiltered as f64 / m.events as f64
            );
            alerts_by_set.push((name.to_string(), prefilter, m.alerts));
        }
    }
    println!("load average after: {}", loadavg());
    // Per set, prefilter on and off: the seed pair's three versions, then
    // shadow's three.
    let seed: Vec<u64> = alerts_by_set.iter().take(6).map(|(_, _, a)| *a).collect();
    let shadow: Vec<u64> = alerts_by_set.iter().skip(6).take(6).map(|(_, _, a)| *a).collect();
    let agree = seed.iter().all(|a| *a == seed[0]) && shadow.iter().all(|a| *a == shadow[0]);
    if !agree {
        eprintln!("the seed rules' YAML, Rust and built versions disagree on the alerts: {seed:?} {shadow:?}");
    }
    Ok(agree)
}

/// `dac build` of the seed's YAML rules into `out` (in-process: the
/// command's own code), timed, and the first load of a built component
/// against a Rust one's (wasmtime compiles each once, then caches it).
fn build_seed_rules(yaml: &Path, out: &Path, components: &[PathBuf], cache: &Path) -> Result<()> {
    for name in ["shadow", "tmp_output_redir"] {
        let file = yaml.join(format!("{name}.yaml"));
        let bytes = std::fs::read(&file)?;
        let started = Instant::now();
        let built = dac_cli::build_rule(&file, &bytes, None)?;
        let took = started.elapsed();
        std::fs::write(out.join(format!("{name}.wasm")), &built.component)?;
        println!(
            "dac build {name}.yaml: {:.2} ms, component {} KiB",
            took.as_secs_f64() * 1e3,
            built.component.len().div_ceil(1024)
        );
    }
    let sandbox = Sandbox::new(Limits::default(), ComponentCache::new(Some(cache.to_owned())))?;
    for (what, file) in [("built shadow.wasm", out.join("shadow.wasm")), ("Rust shadow.wasm", components[0].clone())] {
        let started = Instant::now();
        sandbox.load_file(&file)?;
        let compile = started.elapsed();
        let started = Instant::now();
        sandbox.load_file(&file)?;
        println!(
            "load {what} ({} KiB): {:.0} ms compiling, {:.1} ms from the cache",
            std::fs::metadata(&file)?.len().div_ceil(1024),
            compile.as_secs_f64() * 1e3,
            started.elapsed().as_secs_f64() * 1e3
        );
    }
    Ok(())
}

fn measure(rules: &[PathBuf], file: &Path, cache: &Path, prefilter: bool, runs: usize) -> Result<Measured> {
    let sandbox = Sandbox::new(Limits::default(), ComponentCache::new(Some(cache.to_owned())))?;
    let loader = RuleLoader::new(sandbox, dac_detect::FieldMapping::default());
    let (components, declarative, errors) = loader.load_all(rules);
    if let Some(err) = errors.first() {
        return Err(err.to_string().into());
    }
    let mut engine = Engine::with_declarative(components, declarative)?;
    engine.set_prefilter(prefilter);
    let mut best: Option<Measured> = None;
    for _ in 0..runs {
        let mut source = ReplaySource::open(file)?;
        let mut sink = CountingSink::default();
        let mut stats = Stats::default();
        let (cpu0, wall0) = (thread_cpu_ns(), Instant::now());
        dac_engine::run(&mut source, &mut engine, &mut sink, &mut stats, &mut Quiet, &Options::default())?;
        let wall = wall0.elapsed();
        let cpu = match (cpu0, thread_cpu_ns()) {
            (Some(a), Some(b)) => Duration::from_nanos(b - a),
            _ => wall,
        };
        let m =
            Measured { cpu, wall, events: stats.events, alerts: sink.alerts, prefiltered: stats.prefiltered_events };
        if best.as_ref().is_none_or(|b| m.cpu < b.cpu) {
            best = Some(m);
        }
    }
    Ok(best.expect("at least one run"))
}
