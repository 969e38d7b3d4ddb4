//! `dac run` (also installed as `dac-run`, the design's name for it):
//! replay events through rules and print the alerts.

use crate::args::{environment_help, Format, PolicyArgs, SandboxArgs};
use crate::report;
use clap::{Args, FromArgMatches};
use dac_engine::{
    Delivery, JsonLinesSink, Notice, Observer, Options, PipelineError, PrettySink, ReplaySource, Sink, SinkError, Stats,
};
use indicatif::{ProgressBar, ProgressStyle};
use std::io::{BufWriter, IsTerminal};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

/// Replays events through detection rules in the dac sandbox.
///
/// Each RULE is a rule file or a directory of them: a component (`.wasm`),
/// run in the sandbox, or a declarative rule (`.yml`/`.yaml`: the seed's
/// YAML or Sigma), evaluated by the host in one pass per event. Events
/// come from FILE: NDJSON (one document per line, as `mongoexport` writes),
/// a JSON array, or `-` for standard input, read as a stream. MongoDB
/// Extended JSON (`$oid`, `$date`, `$numberLong`, …) is understood.
///
/// Alerts go to stdout, one JSON document per line; a summary and any
/// problems go to stderr, each located as FILE:LINE.
#[derive(Debug, Args)]
#[command(after_help = AFTER_HELP)]
pub struct RunArgs {
    /// Rule files (.wasm, .yml, .yaml) or directories of them.
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

    /// Threads evaluating rules [default: the machine's cores; 1 when
    /// reading standard input, whose alerts then appear line by line].
    /// Alerts, notices and counts are the same, in the same order, for
    /// any N.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=256))]
    threads: Option<u16>,

    #[command(flatten)]
    sandbox: SandboxArgs,

    #[command(flatten)]
    policy: PolicyArgs,
}

const AFTER_HELP: &str = concat!(
    "Exit status:\n  0  finished; no rule faulted (and, with --fail-on-alert, no alert)\n  1  --fail-on-alert was given and alerts fired\n  2  usage or input error: bad arguments, a rule that does not load, an unreadable file, malformed input with --strict\n  3  finished, but some evaluations faulted (trap, deadline, memory, finding limits); see stderr\n\n",
    environment_help!()
);

/// The `dac-run` binary: `dac run` under its own name, with the same flags
/// and output.
pub fn standalone() -> ExitCode {
    let command = clap::Command::new("dac-run").version(env!("CARGO_PKG_VERSION")).arg(
        clap::Arg::new("quiet")
            .short('q')
            .long("quiet")
            .action(clap::ArgAction::SetTrue)
            .help("Only warnings and errors on stderr: no per-rule lines, no summary"),
    );
    let matches = RunArgs::augment_args(command).get_matches();
    let quiet = matches.get_flag("quiet");
    let args = match RunArgs::from_arg_matches(&matches) {
        Ok(args) => args,
        Err(err) => err.exit(),
    };
    report::init_logging(quiet);
    run("dac-run", &args, quiet)
}

/// At most this many notices of each kind are printed; all are counted.
const NOTICES_SHOWN: u64 = 50;

/// Runs the replay; `program` names it in messages.
pub fn run(program: &str, args: &RunArgs, quiet: bool) -> ExitCode {
    match replay(program, args, quiet) {
        Ok(code) => code,
        Err(Failure::Usage(message)) => {
            eprintln!("{program}: {message}");
            ExitCode::from(2)
        }
        Err(Failure::BrokenPipe) => ExitCode::SUCCESS,
    }
}

enum Failure {
    Usage(String),
    /// stdout was closed by its reader (`dac run … | head`): stop quietly.
    BrokenPipe,
}

fn replay(program: &str, args: &RunArgs, quiet: bool) -> Result<ExitCode, Failure> {
    let mut policy = args.policy.load(None).map_err(Failure::Usage)?;
    let (_loader, mut engine) = args.sandbox.load(&args.rules).map_err(Failure::Usage)?;

    let mut source = ReplaySource::open(&args.replay)
        .map_err(|err| Failure::Usage(format!("cannot read {}: {err}", args.replay.display())))?;
    let streaming = args.replay.as_os_str() == "-";
    let stdout = BufWriter::with_capacity(64 << 10, std::io::stdout().lock());
    let mut sink: Box<dyn Sink> = match args.format {
        Format::Json => Box::new(JsonLinesSink::new(stdout)),
        Format::Text => Box::new(PrettySink::new(stdout)),
    };
    let mut reporter = Reporter::new(!streaming && !quiet && std::io::stderr().is_terminal());
    let mut stats = Stats::default();
    let options = Options { strict: args.strict, flush_each_alert: streaming, ..Options::default() };

    let started = Instant::now();
    // Several threads deliver alerts by batches of documents: from a pipe,
    // one thread unless asked, so each alert appears as its line is read.
    let threads = match args.threads {
        Some(threads) => usize::from(threads),
        None if streaming => 1,
        None => dac_engine::default_threads(),
    };
    let mut delivery = Delivery::new(&mut engine, &mut policy, sink.as_mut(), &mut stats);
    let result = dac_engine::run_parallel(&mut source, &mut delivery, threads, &mut reporter, &options);
    drop(delivery);
    let elapsed = started.elapsed();
    reporter.finish();
    let summary = |engine: &dac_engine::Engine, stats: &Stats| {
        if !quiet {
            report::print_summary(program, engine, stats, &args.replay.display().to_string(), elapsed);
            report::print_policy_summary(&policy, stats);
        }
    };
    match result {
        Ok(()) => {}
        Err(PipelineError::Sink(SinkError::Io(err))) if err.kind() == std::io::ErrorKind::BrokenPipe => {
            return Err(Failure::BrokenPipe)
        }
        Err(err @ (PipelineError::Strict(_) | PipelineError::Source { .. })) => {
            summary(&engine, &stats);
            return Err(Failure::Usage(err.to_string()));
        }
        Err(err) => return Err(Failure::Usage(err.to_string())),
    }
    summary(&engine, &stats);
    Ok(if engine.faults() > 0 {
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
            Notice::Rules(_) => return self.print(notice.to_string()),
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
