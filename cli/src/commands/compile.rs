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

/// Prints only the error itself on stderr: `dac serve` shows an invalid
/// component's as the reason the upload was refused, and logs the others.
pub fn run(args: &CompileArgs) -> ExitCode {
    match dac_engine::compile_in_child(&args.args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(dac_engine::ChildError::Invalid(message)) => {
            eprintln!("{message}");
            // A small constant: the exit status is a u8.
            ExitCode::from(dac_engine::INVALID_EXIT as u8)
        }
        Err(dac_engine::ChildError::Internal(message)) => {
            eprintln!("{message}");
            ExitCode::from(2)
        }
    }
}
