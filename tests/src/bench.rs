//! What the bench binaries share: their `--events N --runs R` command line,
//! the readings of the machine they print beside their figures, and a sink
//! and an observer that only count, and how they print counts.

/// How much a bench does: `--events N` (or `--events=N`; `_` and `,` may
/// group digits) and `--runs R`, both at least 1. `cargo bench` passes
/// `--bench` to every bench binary; it is ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size {
    pub events: usize,
    pub runs: usize,
}

impl Size {
    /// Reads the process's arguments over `defaults`; `-h` prints the usage
    /// of bench `name` and exits.
    pub fn from_args(name: &str, defaults: Size) -> Result<Size, String> {
        Size::parse(name, defaults, std::env::args().skip(1))
    }

    fn parse(name: &str, defaults: Size, args: impl IntoIterator<Item = String>) -> Result<Size, String> {
        let mut size = defaults;
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            let (flag, inline) = match arg.split_once('=') {
                Some((flag, value)) => (flag.to_owned(), Some(value.to_owned())),
                None => (arg.clone(), None),
            };
            match flag.as_str() {
                "--bench" => {}
                "--events" | "--runs" => {
                    let value = inline.or_else(|| args.next()).ok_or_else(|| format!("{flag} needs a value"))?;
                    let n: usize =
                        value.replace(['_', ','], "").parse().map_err(|_| format!("{flag}: not a count: {value}"))?;
                    if n == 0 {
                        return Err(format!("{flag} must be at least 1"));
                    }
                    if flag == "--events" {
                        size.events = n;
                    } else {
                        size.runs = n;
                    }
                }
                "-h" | "--help" => {
                    println!(
                        "usage: cargo bench -p dac-tests --bench {name} [-- --events N ({})] [--runs R ({})]",
                        defaults.events, defaults.runs
                    );
                    std::process::exit(0);
                }
                other => return Err(format!("unknown argument `{other}` (expected --events N, --runs R)")),
            }
        }
        Ok(size)
    }
}

/// CPU time (user and system) of every child process waited for so far:
/// the difference around a child's run is its CPU time, all threads.
pub fn children_cpu() -> std::time::Duration {
    // SAFETY: getrusage fills the struct it is given.
    let usage = unsafe {
        let mut usage = std::mem::zeroed::<libc::rusage>();
        libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage);
        usage
    };
    let time = |t: libc::timeval| std::time::Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    time(usage.ru_utime) + time(usage.ru_stime)
}

/// Nanoseconds the calling thread has spent on a CPU (Linux), if known:
/// rates from it hold up on a shared machine better than the wall clock.
pub fn thread_cpu_ns() -> Option<u64> {
    std::fs::read_to_string("/proc/thread-self/schedstat").ok()?.split_whitespace().next()?.parse().ok()
}

/// The 1, 5 and 15-minute load averages, or `?` where they cannot be read.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "?".into())
}

/// A sink that counts alerts and keeps none (each is still built and
/// handed over, as to a real sink).
#[derive(Debug, Default)]
pub struct CountingSink {
    pub alerts: u64,
}

impl dac_engine::Sink for CountingSink {
    fn send(&mut self, alert: &dac_engine::Alert<'_>) -> Result<(), dac_engine::SinkError> {
        std::hint::black_box(alert);
        self.alerts += 1;
        Ok(())
    }

    fn flush(&mut self) -> Result<(), dac_engine::SinkError> {
        Ok(())
    }
}

/// An observer that drops every notice (the benches count them elsewhere).
#[derive(Debug, Default)]
pub struct Quiet;

impl dac_engine::Observer for Quiet {
    fn notice(&mut self, _notice: &dac_engine::Notice<'_>) {}
}

/// `n` with its digits grouped by three: `1,234,567`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// One in-process run: `rules` (files or directories) loaded into an
/// engine, the `dac run` loop over `file` in this thread (reading,
/// prefiltering, parsing, matching, the alert path to a [`CountingSink`]; no
/// process start, no output). Its CPU time (the thread's), wall time, and
/// the engine after the run.
pub fn run_in_process(
    rules: &[std::path::PathBuf],
    file: &std::path::Path,
) -> Result<InProcess, Box<dyn std::error::Error + Send + Sync>> {
    run_in_process_with(rules, file, dac_engine::Limits::default())
}

/// [`run_in_process`] under `limits` (the correlation bench lifts the
/// state quota, to measure the cost of every key held).
pub fn run_in_process_with(
    rules: &[std::path::PathBuf],
    file: &std::path::Path,
    limits: dac_engine::Limits,
) -> Result<InProcess, Box<dyn std::error::Error + Send + Sync>> {
    let correlation = limits.correlation.clone();
    let sandbox = dac_engine::Sandbox::new(limits, dac_engine::ComponentCache::new(None))?;
    let loader = dac_engine::RuleLoader::new(sandbox, dac_engine::FieldMapping::default());
    let (components, declarative, errors) = loader.load_all(rules);
    if let Some(err) = errors.first() {
        return Err(err.to_string().into());
    }
    let mut engine = dac_engine::Engine::with_declarative(components, declarative)?;
    engine.set_correlation_limits(correlation);
    let mut source = dac_engine::ReplaySource::open(file)?;
    let (cpu0, started) = (thread_cpu_ns(), std::time::Instant::now());
    dac_engine::run(
        &mut source,
        &mut engine,
        &mut CountingSink::default(),
        &mut dac_engine::Stats::default(),
        &mut Quiet,
        &dac_engine::Options::default(),
    )?;
    let wall = started.elapsed();
    let cpu = match (cpu0, thread_cpu_ns()) {
        (Some(a), Some(b)) => std::time::Duration::from_nanos(b - a),
        _ => wall,
    };
    Ok(InProcess { cpu, wall, engine })
}

/// What [`run_in_process`] measured.
pub struct InProcess {
    pub cpu: std::time::Duration,
    pub wall: std::time::Duration,
    pub engine: dac_engine::Engine,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Size, String> {
        Size::parse("x", Size { events: 10, runs: 3 }, args.iter().map(|a| a.to_string()))
    }

    #[test]
    fn counts_in_either_form_over_the_defaults() {
        assert_eq!(parse(&["--bench"]), Ok(Size { events: 10, runs: 3 }));
        assert_eq!(parse(&["--events", "1_000,000", "--runs=5"]), Ok(Size { events: 1_000_000, runs: 5 }));
        assert_eq!(parse(&["--runs", "0"]), Err("--runs must be at least 1".into()));
        assert_eq!(parse(&["--events"]), Err("--events needs a value".into()));
        assert!(parse(&["--fast"]).unwrap_err().starts_with("unknown argument `--fast`"));
    }

    #[test]
    fn thousands_are_grouped_by_three() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1234567), "1,234,567");
    }
}
