//! One module per command, each its flags (a clap `Args` struct) and the
//! function that runs it; [`main`] dispatches.

pub mod build;
pub mod compile;
pub mod init;
pub mod investigate;
pub mod run;
pub mod serve;
pub mod test;
pub mod token;
pub mod watch;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Debug, Parser)]
#[command(
    name = "dac",
    version,
    about = "Detection as code: sandboxed rules over replayed files and live event streams"
)]
struct Cli {
    /// Only warnings and errors on stderr: no per-rule lines, no summary.
    #[arg(short, long, global = true)]
    quiet: bool,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    Run(run::RunArgs),
    Watch(watch::WatchArgs),
    Serve(serve::ServeArgs),
    Test(test::TestArgs),
    Build(build::BuildArgs),
    Investigate(investigate::InvestigateArgs),
    Init(init::InitArgs),
    Token(token::TokenArgs),
    #[command(hide = true)]
    CompileComponent(compile::CompileArgs),
}

/// The `dac` binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    crate::report::init_logging(cli.quiet);
    let result = match cli.command {
        Command::Run(args) => return run::run("dac run", &args, cli.quiet),
        Command::Test(args) => return test::run(args),
        Command::CompileComponent(args) => return compile::run(&args),
        Command::Watch(args) => watch::run(args, cli.quiet),
        Command::Serve(args) => serve::run(args),
        Command::Build(args) => build::run(args),
        Command::Investigate(args) => investigate::run(args),
        Command::Init(args) => init::run(args),
        Command::Token(args) => token::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("dac: {message}");
            ExitCode::from(2)
        }
    }
}
