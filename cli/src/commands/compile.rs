//! `dac compile-component` (hidden): the child process in which `dac
//! serve` compiles each uploaded component, so that the compilation can be
//! bounded in CPU time and memory and stopped (see `dac_engine::Compiler`).
//! Not for use by hand.

use std::ffi::OsString;
use std::process::ExitCode;

/// Compiles one component for `dac serve` (internal).
#[derive(Debug, clap::Args)]
pub struct CompileArgs {
    /// SETTINGS INPUT OUTPUT MAX_CPU_MS, as `dac serve` passes them.
    #[arg(num_args = 4, required = true, allow_hyphen_values = true)]
    args: Vec<OsString>,
}

/// Prints only the error itself on stderr: `dac serve` shows it as the
/// reason the upload was refused.
pub fn run(args: &CompileArgs) -> ExitCode {
    match dac_engine::compile_in_child(&args.args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("{message}");
            ExitCode::FAILURE
        }
    }
}
