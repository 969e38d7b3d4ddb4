//! `dac`: detection as code, from the command line.

fn main() -> std::process::ExitCode {
    dac_cli::commands::main()
}
