//! `dac`: detection as code, from the command line.

/// mimalloc: the evaluation threads build events that the reading thread
/// frees, and glibc's allocator makes such frees costly (docs/performance.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    dac_cli::commands::main()
}
