//! `dac-run`: `dac run` under the name the design gave it, with the same
//! flags and output.

/// mimalloc: the evaluation threads build events that the reading thread
/// frees, and glibc's allocator makes such frees costly (docs/performance.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    dac_cli::commands::run::standalone()
}
