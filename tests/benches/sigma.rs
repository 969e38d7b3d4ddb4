//! Sigma side by side: dac against rsigma, the peer engine, on the same
//! rules and the same events, in the same run.
//!
//! The 122 SigmaHQ Linux process-creation rules over N events of the
//! realistic mix (`dac_tests::mix`: long command lines, mostly benign
//! developer, admin and CI activity, 2 % Atomic Red Team attacks, no two
//! lines alike), written once to a temporary file and read by each engine
//! as NDJSON:
//!
//! - `rsigma engine eval` 0.23.0 (the `rsigma` on PATH if it is that
//!   version, else installed once into `target/peer/` — about 20 minutes
//!   on two cores), with a pipeline mapping the rules' fields onto the
//!   events' exactly as dac's default field mapping does; with its defaults
//!   and with `--bloom-prefilter`;
//! - `dac run --threads 1` over the same file (the release binary, built by
//!   the bench; the alerts checked come from its default, every core);
//! - dac's engine in-process (the `dac run` loop without process start,
//!   rule loading or output).
//!
//! Each engine's alerts are checked equal first — the same (event, rule)
//! pairs, from rsigma's `--include-event` output and dac's alerts — and the
//! bench fails if they differ. Rates are events per CPU second of the
//! process (children's rusage; the thread's for in-process), median of R
//! runs, with the wall clock beside; ratios are to rsigma's faster mode,
//! measured in the same run. The machine is shared: compare ratios.
//!
//! Run: `cargo bench -p dac-tests --bench sigma [-- --events N --runs R]`.

use dac_tests::bench::{children_cpu, loadavg, run_in_process};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

type Error = Box<dyn std::error::Error + Send + Sync>;
type Result<T, E = Error> = std::result::Result<T, E>;

const RSIGMA_VERSION: &str = "0.23.0";

/// dac's default mapping (`FieldMapping::linux_process_creation`) as an
/// rsigma processing pipeline; `LogonId` stays unmapped in both, so it is
/// absent from every event.
const PIPELINE: &str = "name: dac exec events
priority: 10
transformations:
  - id: dac_fields
    type: field_name_mapping
    mapping:
      Image: path
      CommandLine: command_line
      ParentImage: parent_path
      ParentCommandLine: parent_command_line
      User: user
      CurrentDirectory: cwd
      ProcessId: pid
      ParentProcessId: parent_pid
";

fn main() -> ExitCode {
    match run() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(err) => {
            eprintln!("sigma bench: {err}");
            ExitCode::from(2)
        }
    }
}

fn run() -> Result<bool> {
    let dac_tests::bench::Size { events, runs } =
        dac_tests::bench::Size::from_args("sigma", dac_tests::bench::Size { events: 1_000_000, runs: 3 })?;
    let rsigma = rsigma()?;
    let dac = dac_tests::dac();
    let rules = dac_tests::sigma_dir();
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("mix.ndjson");
    let pipeline = dir.path().join("dac-fields.yml");
    std::fs::write(&pipeline, PIPELINE)?;
    let mix = dac_tests::mix::MixConfig::default();
    eprintln!(
        "generating {events} events of the realistic mix (seed {}, {}‰ attacks)…",
        mix.seed, mix.attacks_per_mille
    );
    dac_tests::mix::write_mix(mix, events, std::fs::File::create(&file)?)?;
    let bytes = std::fs::metadata(&file)?.len();

    eprintln!("checking that the engines raise the same alerts…");
    let ours = dac_alerts(dac, &rules, &file)?;
    let theirs = rsigma_alerts(&rsigma, &rules, &pipeline, &file)?;
    let agree = ours == theirs;
    println!(
        "{} rules, {events} events ({} bytes a line), load average {}",
        std::fs::read_dir(&rules)?.count(),
        bytes / events as u64,
        loadavg()
    );
    println!(
        "alerts: dac {}, rsigma {}: {}",
        ours.len(),
        theirs.len(),
        if agree { "the same (event, rule) pairs" } else { "DIFFERENT" }
    );
    if !agree {
        for (who, pair) in ours
            .difference(&theirs)
            .map(|p| ("dac only", p))
            .chain(theirs.difference(&ours).map(|p| ("rsigma only", p)))
            .take(10)
        {
            println!("  {who}: event {} rule {}", pair.0, pair.1);
        }
    }

    let rsigma_args = |bloom: bool| {
        let mut args: Vec<String> = ["engine", "eval", "-q", "--no-stats", "--output-format", "ndjson", "-r"]
            .into_iter()
            .map(String::from)
            .collect();
        args.push(rules.display().to_string());
        args.extend(["-p".into(), pipeline.display().to_string(), "-e".into(), format!("@{}", file.display())]);
        if bloom {
            args.push("--bloom-prefilter".into());
        }
        args
    };
    let dac_args = vec![
        "run".to_string(),
        "-q".into(),
        rules.display().to_string(),
        "--replay".into(),
        file.display().to_string(),
        // One core against rsigma's one; `benches/threads.rs` measures more.
        "--threads".into(),
        "1".into(),
    ];

    let mut rows: Vec<(String, Measured)> = Vec::new();
    rows.push((
        format!("rsigma {RSIGMA_VERSION} engine eval"),
        median(runs, || time_process(&rsigma, &rsigma_args(false)))?,
    ));
    rows.push(("rsigma, --bloom-prefilter".into(), median(runs, || time_process(&rsigma, &rsigma_args(true)))?));
    rows.push(("dac run".into(), median(runs, || time_process(dac, &dac_args))?));
    rows.push(("dac engine, in-process".into(), median(runs, || time_in_process(&rules, &file))?));
    let peer = rows[..2].iter().map(|(_, m)| m.cpu).min().unwrap_or(Duration::MAX);
    println!("{:<32} {:>14} {:>15} {:>10}", "engine", "events/s (cpu)", "events/s (wall)", "× rsigma");
    for (name, m) in &rows {
        println!(
            "{:<32} {:>14.0} {:>15.0} {:>10.2}",
            name,
            events as f64 / m.cpu.as_secs_f64(),
            events as f64 / m.wall.as_secs_f64(),
            peer.as_secs_f64() / m.cpu.as_secs_f64()
        );
    }
    println!("load average after: {}", loadavg());
    Ok(agree)
}

#[derive(Clone, Copy)]
struct Measured {
    cpu: Duration,
    wall: Duration,
}

/// The run with the median CPU time of `runs`.
fn median(runs: usize, mut measure: impl FnMut() -> Result<Measured>) -> Result<Measured> {
    let mut all = (0..runs).map(|_| measure()).collect::<Result<Vec<_>>>()?;
    all.sort_by_key(|m| m.cpu);
    Ok(all[all.len() / 2])
}

/// CPU time (user and system) of the process tree of `program args`, its
/// output discarded.
fn time_process(program: &Path, args: &[String]) -> Result<Measured> {
    let before = children_cpu();
    let started = Instant::now();
    let status = Command::new(program).args(args).stdout(Stdio::null()).stderr(Stdio::null()).status()?;
    let wall = started.elapsed();
    if !status.success() {
        return Err(format!("{} {}: {status}", program.display(), args.join(" ")).into());
    }
    Ok(Measured { cpu: children_cpu().saturating_sub(before), wall })
}

/// dac's engine over the file in this thread: reading, prefiltering,
/// parsing, matching; no process start, no rule loading, no output.
fn time_in_process(rules: &Path, file: &Path) -> Result<Measured> {
    let run = run_in_process(&[rules.to_owned()], file)?;
    Ok(Measured { cpu: run.cpu, wall: run.wall })
}

/// (the event's `event_id`, the rule's id) of every alert.
type Pairs = BTreeSet<(String, String)>;

fn dac_alerts(dac: &Path, rules: &Path, file: &Path) -> Result<Pairs> {
    let output = Command::new(dac).arg("run").arg("-q").arg(rules).arg("--replay").arg(file).output()?;
    if !output.status.success() {
        return Err(format!("dac run: {}: {}", output.status, String::from_utf8_lossy(&output.stderr)).into());
    }
    pairs(&output.stdout, "offending_log", "uuid")
}

fn rsigma_alerts(rsigma: &Path, rules: &Path, pipeline: &Path, file: &Path) -> Result<Pairs> {
    let output = Command::new(rsigma)
        .args(["engine", "eval", "-q", "--no-stats", "--include-event", "--output-format", "ndjson", "-r"])
        .arg(rules)
        .arg("-p")
        .arg(pipeline)
        .arg("-e")
        .arg(format!("@{}", file.display()))
        .output()?;
    if !output.status.success() {
        return Err(format!("rsigma: {}: {}", output.status, String::from_utf8_lossy(&output.stderr)).into());
    }
    pairs(&output.stdout, "event", "rule_id")
}

fn pairs(output: &[u8], event: &str, rule: &str) -> Result<Pairs> {
    let mut pairs = Pairs::new();
    for line in output.split(|&b| b == b'\n').filter(|line| !line.is_empty()) {
        let alert: serde_json::Value = serde_json::from_slice(line)?;
        let id = alert[event]["event_id"].as_str().ok_or("an alert without its event's event_id")?;
        let rule = alert[rule].as_str().ok_or("an alert without its rule's id")?;
        if !pairs.insert((id.to_owned(), rule.to_owned())) {
            return Err(format!("event {id} alerted twice by rule {rule}").into());
        }
    }
    Ok(pairs)
}

/// `rsigma` 0.23.0: on PATH, or in `target/peer/bin`, or installed there.
fn rsigma() -> Result<PathBuf> {
    let version = |program: &Path| {
        Command::new(program)
            .arg("--version")
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).lines().next().unwrap_or_default().trim().to_owned())
    };
    let wanted = format!("rsigma {RSIGMA_VERSION}");
    let installed = dac_tests::repo_root().join("target/peer/bin/rsigma");
    for candidate in [PathBuf::from("rsigma"), installed.clone()] {
        if version(&candidate).as_deref() == Some(wanted.as_str()) {
            return Ok(candidate);
        }
    }
    eprintln!("installing rsigma {RSIGMA_VERSION} into target/peer (once; about 20 minutes on two cores)…");
    let status = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        .args(["install", "rsigma", "--version", RSIGMA_VERSION, "--locked", "--root"])
        .arg(dac_tests::repo_root().join("target/peer"))
        .status()?;
    if !status.success() || version(&installed).as_deref() != Some(wanted.as_str()) {
        return Err(format!("could not install rsigma {RSIGMA_VERSION} ({status})").into());
    }
    Ok(installed)
}
