//! `dac test`: the rules' own test cases, kept next to them.

use crate::args::{environment_help, SandboxArgs};
use crate::testing;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

/// Runs rule test cases kept next to the rules.
///
/// Each PATH is a rule file, its `NAME.tests.ndjson`, or a directory
/// searched recursively: a rule's cases are `NAME.tests.ndjson` beside
/// `NAME.wasm`, `NAME.yaml` or `NAME.yml` (one JSON object per line:
/// `{"name": …, "event": {…}, "expect": "fire" | "no-fire", "uuids": [...],
/// "matched": {"field": "value"}}`, or `"events": [{…}, …]` for a case
/// about several events, a correlation's; the cases of a directory run
/// against all its rules loaded together), and a Rust rule crate's
/// `fixtures/must_fire.ndjson`, `fixtures/must_not_fire.ndjson` and
/// `fixtures/tests.ndjson` run against its built component
/// (`target/rule-components/<crate>.wasm`).
#[derive(Debug, clap::Args)]
#[command(
    after_help = concat!(
        "Exit status:\n  0  every case passed\n  1  a case failed, or could not run\n  2  usage error: a path that does not exist, a malformed case\n\n",
        environment_help!()
    )
)]
pub struct TestArgs {
    /// Rule files, case files or directories [default: .].
    #[arg(value_name = "PATH")]
    paths: Vec<PathBuf>,

    /// Also write the results as JUnit XML, for CI.
    #[arg(long, value_name = "FILE")]
    junit: Option<PathBuf>,

    #[command(flatten)]
    sandbox: SandboxArgs,
}

pub fn run(args: TestArgs) -> ExitCode {
    let paths = if args.paths.is_empty() { vec![PathBuf::from(".")] } else { args.paths.clone() };
    let started = Instant::now();
    let outcome = (|| {
        let suites = testing::discover(&paths).map_err(|err| err.to_string())?;
        if suites.is_empty() {
            let named: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
            return Err(format!("no test cases found in {}", named.join(", ")));
        }
        let loader = args.sandbox.loader()?;
        Ok(testing::run(&loader, &suites))
    })();
    let results = match outcome {
        Ok(results) => results,
        Err(message) => {
            eprintln!("dac test: {message}");
            return ExitCode::from(2);
        }
    };
    let elapsed = started.elapsed();
    print!("{}", testing::report(&results, elapsed));
    if let Some(file) = &args.junit {
        if let Err(err) = std::fs::write(file, testing::junit(&results, elapsed)) {
            eprintln!("dac test: --junit {}: {err}", file.display());
            return ExitCode::from(2);
        }
    }
    let totals = testing::Totals::of(&results);
    if totals.failed + totals.errors > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}
