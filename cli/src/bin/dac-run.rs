//! `dac-run`: `dac run` under the name the design gave it, with the same
//! flags and output.

fn main() -> std::process::ExitCode {
    dac_cli::commands::run::standalone()
}
