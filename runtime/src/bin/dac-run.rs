//! `dac-run`: replay events through sandboxed rules and print the alerts.

use clap::{Parser, ValueEnum};
use dac_runtime::pipeline::{self, Notice, Observer, Options, PipelineError};
use dac_runtime::sink::SinkError;
use dac_runtime::{
    loader, ComponentCache, Engine, Isolation, JsonLinesSink, Limits, PrettySink, ReplaySource, Sandbox, Sink, Stats,
};
use indicatif::{ProgressBar, ProgressStyle};
use std::io::{BufWriter, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// Replays events through detection rules in the dac sandbox.
///
/// Each RULE is a rule component (`.wasm`) or a directory of them. Events
/// come from FILE: NDJSON (one document per line, as `mongoexport` writes),
/// a JSON array, or `-` for standard input, read as a stream. MongoDB
/// Extended JSON (`$oid`, `$date`, `$numberLong`, …) is understood.
///
/// Alerts go to stdout, one JSON document per line; a summary and any
/// problems go to stderr, each located as FILE:LINE.
#[derive(Debug, Parser)]
#[command(
    name = "dac-run",
    version,
    after_help = "Exit status:\n  0  finished; no rule faulted (and, with --fail-on-alert, no alert)\n  1  --fail-on-alert was given and alerts fired\n  2  usage or input error: bad arguments, a rule that does not load, an unreadable file, malformed input with --strict\n  3  finished, but some evaluations faulted (trap, deadline, memory, finding limits); see stderr\n\nEnvironment:\n  DAC_LOG        log filter, e.g. `warn` or `dac::rule=debug` (default: info)\n  DAC_CACHE_DIR  compiled-rule cache (default: $XDG_CACHE_HOME/dac or ~/.cache/dac)"
)]
struct Args {
    /// Rule components (.wasm) or directories of them.
    #[arg(required = true, value_name = "RULE")]
    rules: Vec<PathBuf>,

    /// Events to replay: a file, or `-` for standard input.
    #[arg(long, value_name = "FILE")]
    replay: PathBuf,

    /// How to print alerts.
    #[arg(long, value_enum, default_value_t = Format::Json)]
    format: Format,

    /// Stop at the first malformed document (default: report it and go on).
    #[arg(long)]
    strict: bool,

    /// Exit with status 1 when any alert fired.
    #[arg(long)]
    fail_on_alert: bool,

    /// Give every (rule, event) evaluation a fresh instance, so no state
    /// survives between documents (slower).
    #[arg(long)]
    fresh_instance: bool,

    /// Wall-clock budget of one evaluation, in milliseconds (0: none).
    #[arg(long, value_name = "MS", default_value_t = 200)]
    deadline_ms: u64,

    /// Deterministic instruction budget of one evaluation (wasmtime fuel).
    #[arg(long, value_name = "UNITS")]
    fuel: Option<u64>,

    /// Memory cap of one rule instance, in MiB.
    #[arg(long, value_name = "MIB", default_value_t = 64)]
    memory_mib: usize,

    /// Findings one evaluation may return before it counts as a fault.
    #[arg(long, value_name = "N", default_value_t = 100)]
    max_findings: usize,

    /// Call every rule on every event, ignoring the rules' declared
    /// literals (for measuring, or to rule the prefilter out).
    #[arg(long)]
    no_prefilter: bool,

    /// Compile rules afresh instead of using the compiled-code cache.
    #[arg(long)]
    no_cache: bool,

    /// Print no summary.
    #[arg(long, short)]
    quiet: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Format {
    /// One alert per line as JSON.
    Json,
    /// Readable blocks, for people.
    Pretty,
}

/// At most this many notices of each kind are printed; all are counted.
const NOTICES_SHOWN: u64 = 50;

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("DAC_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .init();
    match run(&args) {
        Ok(code) => code,
        Err(Failure::Usage(message)) => {
            eprintln!("dac-run: {message}");
            ExitCode::from(2)
        }
        Err(Failure::BrokenPipe) => ExitCode::SUCCESS,
    }
}

enum Failure {
    Usage(String),
    /// stdout was closed by its reader (`dac-run … | head`): stop quietly.
    BrokenPipe,
}

fn run(args: &Args) -> Result<ExitCode, Failure> {
    let limits = Limits {
        deadline: (args.deadline_ms > 0).then(|| Duration::from_millis(args.deadline_ms)),
        fuel: args.fuel,
        memory_bytes: args.memory_mib << 20,
        max_findings: args.max_findings,
        isolation: if args.fresh_instance { Isolation::FreshInstancePerEvent } else { Isolation::ReusedInstance },
        ..Limits::default()
    };
    let cache = ComponentCache::new(if args.no_cache { None } else { ComponentCache::default_dir() });
    let sandbox = Sandbox::new(limits, cache).map_err(|err| Failure::Usage(format!("{err:#}")))?;

    let (rules, errors) = loader::load_rules(&sandbox, &args.rules);
    if !errors.is_empty() {
        let list: Vec<String> = errors.iter().map(|e| format!("  {e}")).collect();
        return Err(Failure::Usage(format!(
            "{} rule file(s) could not be loaded; nothing was run:\n{}",
            errors.len(),
            list.join("\n")
        )));
    }
    if rules.is_empty() {
        let named: Vec<String> = args.rules.iter().map(|p| p.display().to_string()).collect();
        return Err(Failure::Usage(format!("no rule components (.wasm) found in {}", named.join(", "))));
    }
    let mut engine = Engine::new(rules).map_err(|err| Failure::Usage(err.to_string()))?;
    engine.set_prefilter(!args.no_prefilter);

    let mut source = ReplaySource::open(&args.replay)
        .map_err(|err| Failure::Usage(format!("cannot read {}: {err}", args.replay.display())))?;
    let streaming = args.replay.as_os_str() == "-";
    let stdout = BufWriter::with_capacity(64 << 10, std::io::stdout().lock());
    let mut sink: Box<dyn Sink> = match args.format {
        Format::Json => Box::new(JsonLinesSink::new(stdout)),
        Format::Pretty => Box::new(PrettySink::new(stdout)),
    };
    let mut reporter = Reporter::new(!streaming && !args.quiet && std::io::stderr().is_terminal());
    let mut stats = Stats::default();
    let options = Options { strict: args.strict, flush_each_alert: streaming };

    let started = Instant::now();
    let result = pipeline::run(&mut source, &mut engine, sink.as_mut(), &mut stats, &mut reporter, &options);
    let elapsed = started.elapsed();
    reporter.finish();
    match result {
        Ok(()) => {}
        Err(PipelineError::Sink(SinkError::Io(err))) if err.kind() == std::io::ErrorKind::BrokenPipe => {
            return Err(Failure::BrokenPipe)
        }
        Err(err @ (PipelineError::Strict(_) | PipelineError::Source { .. })) => {
            if !args.quiet {
                print_summary(&engine, &stats, args.replay.display().to_string(), elapsed);
            }
            return Err(Failure::Usage(err.to_string()));
        }
        Err(err) => return Err(Failure::Usage(err.to_string())),
    }
    if !args.quiet {
        print_summary(&engine, &stats, args.replay.display().to_string(), elapsed);
    }
    Ok(if stats.faults() > 0 {
        ExitCode::from(3)
    } else if args.fail_on_alert && stats.alerts > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// Prints notices (the first few of each kind) and drives the progress bar.
struct Reporter {
    bar: Option<ProgressBar>,
    malformed: u64,
    repaired: u64,
    faults: u64,
}

impl Reporter {
    fn new(progress: bool) -> Reporter {
        let bar = progress.then(|| {
            let bar = ProgressBar::new(0);
            bar.set_style(
                ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
                    .expect("static progress template"),
            );
            bar
        });
        Reporter { bar, malformed: 0, repaired: 0, faults: 0 }
    }

    fn print(&self, line: String) {
        match &self.bar {
            Some(bar) => bar.suspend(|| eprintln!("{line}")),
            None => eprintln!("{line}"),
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

impl Observer for Reporter {
    fn notice(&mut self, notice: &Notice<'_>) {
        let (counter, label) = match notice {
            Notice::Malformed { .. } => (&mut self.malformed, "skipped"),
            Notice::RepairedUtf8 { .. } => (&mut self.repaired, "repaired"),
            Notice::Fault { .. } => (&mut self.faults, "rule fault"),
        };
        *counter += 1;
        let count = *counter;
        if count <= NOTICES_SHOWN {
            self.print(format!("{label}: {notice}"));
        }
        if count == NOTICES_SHOWN {
            self.print(format!("{label}: further notices of this kind are only counted (see the summary)"));
        }
    }

    fn progress(&mut self, consumed: u64, total: Option<u64>) {
        if let (Some(bar), Some(total)) = (&self.bar, total) {
            bar.set_length(total);
            bar.set_position(consumed);
        }
    }
}

fn print_summary(engine: &Engine, stats: &Stats, source: String, elapsed: Duration) {
    let seconds = elapsed.as_secs_f64();
    let rate = if seconds > 0.0 { stats.events as f64 / seconds } else { 0.0 };
    let mut out = std::io::stderr().lock();
    let _ = writeln!(
        out,
        "dac-run: {} events from {source} in {seconds:.3} s ({rate:.0} events/s); {} alerts, {} rule faults, {} malformed skipped, {} repaired (non-UTF-8)",
        stats.events,
        stats.alerts,
        stats.faults(),
        stats.malformed,
        stats.repaired_utf8,
    );
    let _ = writeln!(out, "  prefilter: {} of {} events needed no rule at all", stats.prefiltered_events, stats.events);
    let width = engine.infos().iter().map(|i| i.name.len()).max().unwrap_or(0);
    for (index, rule) in engine.rules().iter().enumerate() {
        let info = rule.info();
        let counters = stats.rules.get(index).cloned().unwrap_or_default();
        let mut line = format!(
            "  {:>7} alerts  {:<width$}  {}  ({} evaluated)",
            counters.alerts,
            info.name,
            info.file_name(),
            counters.evaluations,
        );
        if counters.fault_total() > 0 {
            let kinds: Vec<String> = counters.faults.iter().map(|(kind, n)| format!("{n} {kind}")).collect();
            line.push_str(&format!("  FAULTS: {}", kinds.join(", ")));
        }
        let (_, dropped) = rule.log().counts();
        if dropped > 0 {
            line.push_str(&format!("  log lines dropped: {dropped}"));
        }
        let _ = writeln!(out, "{line}");
    }
}
