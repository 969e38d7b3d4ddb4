//! Why a file (or an upload) could not become a rule.

use std::path::{Path, PathBuf};

/// The world rule components are built for (`wit/rule.wit`); the host
/// also runs components of `dac:rule/rule@0.1.0` (`wit/0.1.0/rule.wit`).
pub const WORLD: &str = "dac:rule/rule@0.2.0";

/// Why a file could not become a rule; every message names the file.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{file}: {source}")]
    Read {
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}: not a WebAssembly file (no \\0asm header)")]
    NotWasm { file: PathBuf },
    #[error(
        "{file}: a core WebAssembly module, not a component; build rules with `cargo build --target wasm32-wasip2` (or wrap the module with `wasm-tools component new`)"
    )]
    CoreModule { file: PathBuf },
    #[error("{file}: invalid component: {reason}")]
    Invalid { file: PathBuf, reason: String },
    #[error("{file}: not a dac rule: {reason} (a rule must target the {WORLD} world in wit/rule.wit, or its 0.1.0 in wit/0.1.0/)")]
    WrongWorld { file: PathBuf, reason: String },
    /// Over a [`crate::CompileLimits`] bound: refused before compiling, or
    /// stopped while compiling (`max_cpu_ms`, `max_memory_bytes`).
    #[error("{file}: {reason}")]
    TooComplex { file: PathBuf, reason: String },
    /// The compiler could not run (its files, its process): not the
    /// component's fault. The reason may name the server's paths.
    #[error("{file}: the compiler failed: {reason}")]
    Compiler { file: PathBuf, reason: String },
    /// The load was cancelled while the component compiled (its client
    /// went away, the server is stopping).
    #[error("{file}: cancelled while compiling")]
    Cancelled { file: PathBuf },
    #[error("{file}: invalid metadata: {reason}")]
    Metadata { file: PathBuf, reason: String },
    #[error("{file}: {reason}")]
    Instantiate { file: PathBuf, reason: String },
    /// A YAML or Sigma rule that does not parse; the message says
    /// `FILE:LINE: WHERE: WHAT`.
    #[error("{source}")]
    Rule {
        file: PathBuf,
        #[source]
        source: dac_detect::DetectError,
    },
}

impl LoadError {
    /// The file that did not load.
    pub fn file(&self) -> &Path {
        match self {
            LoadError::Read { file, .. }
            | LoadError::NotWasm { file }
            | LoadError::CoreModule { file }
            | LoadError::Invalid { file, .. }
            | LoadError::TooComplex { file, .. }
            | LoadError::Cancelled { file }
            | LoadError::Compiler { file, .. }
            | LoadError::WrongWorld { file, .. }
            | LoadError::Metadata { file, .. }
            | LoadError::Instantiate { file, .. }
            | LoadError::Rule { file, .. } => file,
        }
    }
}
