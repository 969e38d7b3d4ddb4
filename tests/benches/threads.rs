//! `dac run --threads`: the same rules over the same events on one thread
//! and on two (and on every core, when the machine has more), in the same
//! run, the output checked byte-identical.
//!
//! Rule sets, over the realistic mix (`dac_tests::mix`), written once to a
//! temporary file:
//!
//! - the 122 SigmaHQ Linux process-creation rules, over N events (no
//!   state: whole batches go to the workers in turn);
//! - ten Rust components — the six example rules and the four bench rules
//!   — with the prefilter off, so every rule is called on every event,
//!   over N/10 events (their instances are reused, so each host's events
//!   go to one worker, split by `hostname`).
//!
//! Each timed run is the release `dac run` binary, alerts written to a
//! file; one-thread and many-thread runs alternate so that both see the
//! same machine. Rates are events per wall-clock second (what threads
//! buy), median of R runs; the speed-up is to the one-thread median of the
//! same rule set. CPU seconds per event are printed beside: what the
//! threads cost in total. The machine is shared: compare ratios.
//!
//! Run: `cargo bench -p dac-tests --bench threads [-- --events N --runs R]`.

use dac_tests::bench::{children_cpu, loadavg};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

type Error = Box<dyn std::error::Error + Send + Sync>;
type Result<T, E = Error> = std::result::Result<T, E>;

const COMPONENTS: [&str; 6] = [
    "shadow",
    "tmp-output-redir",
    "base64-decode-exec",
    "cron-systemd-persistence",
    "download-pipe-shell",
    "reverse-shell-dev-tcp",
];
const BENCH_COMPONENTS: [&str; 4] = ["env-dump", "ip-literal-download", "ssh-private-key-read", "systemd-unit-write"];

fn main() -> ExitCode {
    match run() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(err) => {
            eprintln!("threads bench: {err}");
            ExitCode::from(2)
        }
    }
}

struct RuleSet {
    name: &'static str,
    args: Vec<OsString>,
    file: PathBuf,
    events: usize,
}

fn run() -> Result<bool> {
    let dac_tests::bench::Size { events, runs } =
        dac_tests::bench::Size::from_args("threads", dac_tests::bench::Size { events: 1_000_000, runs: 3 })?;
    let dac = dac_tests::dac();
    let dir = tempfile::tempdir()?;
    let mix = dac_tests::mix::MixConfig::default();
    let few = (events / 10).max(1);
    eprintln!("generating {events} events of the realistic mix (seed {})…", mix.seed);
    let file = dir.path().join("mix.ndjson");
    dac_tests::mix::write_mix(mix, events, std::fs::File::create(&file)?)?;
    let prefix = dir.path().join("mix-prefix.ndjson");
    dac_tests::mix::write_mix(mix, few, std::fs::File::create(&prefix)?)?;

    let mut components: Vec<OsString> =
        COMPONENTS.iter().map(|name| dac_tests::example_rule(name).into_os_string()).collect();
    components.extend(BENCH_COMPONENTS.iter().map(|name| dac_tests::bench_rule(name).into_os_string()));
    components.push("--no-prefilter".into());
    let sets = [
        RuleSet { name: "122 Sigma rules", args: vec![dac_tests::sigma_dir().into_os_string()], file, events },
        RuleSet { name: "10 Rust components, prefilter off", args: components, file: prefix, events: few },
    ];
    let cores = dac_engine::default_threads();
    let mut counts = vec![1, 2];
    if cores > 2 {
        counts.push(cores);
    }
    println!("{cores} cores, load average {}", loadavg());
    println!(
        "{:<36} {:>8} {:>10} {:>16} {:>14} {:>9}",
        "rules", "threads", "events", "events/s (wall)", "cpu ns/event", "speed-up"
    );
    let mut identical = true;
    for set in &sets {
        // The first run of each count writes the output compared; it also
        // fills the compiled-code cache, so it is not timed.
        let reference = dir.path().join("threads-1.out");
        dac_run(dac, set, 1, &reference)?;
        for &threads in &counts[1..] {
            let out = dir.path().join(format!("threads-{threads}.out"));
            dac_run(dac, set, threads, &out)?;
            if std::fs::read(&out)? != std::fs::read(&reference)? {
                println!("{}: --threads {threads} printed other alerts than --threads 1", set.name);
                identical = false;
            }
        }
        let mut measured: Vec<Vec<Measured>> = vec![Vec::new(); counts.len()];
        for _ in 0..runs {
            for (i, &threads) in counts.iter().enumerate() {
                measured[i].push(dac_run(dac, set, threads, &dir.path().join("timed.out"))?);
            }
        }
        let medians: Vec<Measured> = measured.into_iter().map(median).collect();
        for (&threads, m) in counts.iter().zip(&medians) {
            println!(
                "{:<36} {:>8} {:>10} {:>16.0} {:>14.0} {:>8.2}×",
                set.name,
                threads,
                set.events,
                set.events as f64 / m.wall.as_secs_f64(),
                m.cpu.as_nanos() as f64 / set.events as f64,
                medians[0].wall.as_secs_f64() / m.wall.as_secs_f64()
            );
        }
    }
    println!("output: {}", if identical { "byte-identical for every thread count" } else { "DIFFERENT" });
    println!("load average after: {}", loadavg());
    Ok(identical)
}

#[derive(Clone, Copy)]
struct Measured {
    cpu: Duration,
    wall: Duration,
}

/// The run with the median wall-clock time.
fn median(mut all: Vec<Measured>) -> Measured {
    all.sort_by_key(|m| m.wall);
    all[all.len() / 2]
}

fn dac_run(dac: &Path, set: &RuleSet, threads: usize, out: &Path) -> Result<Measured> {
    let before = children_cpu();
    let started = Instant::now();
    let status = Command::new(dac)
        .arg("run")
        .arg("-q")
        .args(&set.args)
        .arg("--replay")
        .arg(&set.file)
        .arg("--threads")
        .arg(threads.to_string())
        .stdout(std::fs::File::create(out)?)
        .stderr(Stdio::inherit())
        .status()?;
    let wall = started.elapsed();
    if !status.success() {
        return Err(format!("dac run --threads {threads} ({}): {status}", set.name).into());
    }
    Ok(Measured { cpu: children_cpu().saturating_sub(before), wall })
}
