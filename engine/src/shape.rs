//! A component's shape, measured before it is compiled.
//!
//! Compiling is the one step of loading a rule that the sandbox does not
//! bound: Cranelift's cost grows faster than linearly in the size of a
//! function and its locals, so a few hundred kilobytes of valid wasm can
//! cost a minute of CPU, and a compilation cannot be interrupted. What can
//! be bounded is the input: the number of core modules and functions, the
//! size of each function body and of all code, and the locals of one
//! function are read by a single pass of the parser (no validation, no
//! compilation) and checked against [`CompileLimits`] first.

/// Bounds on what a component may ask the compiler to do. The defaults
/// are at least twice what the components of every supported toolchain
/// need (the language tests check it). The largest are the Python and
/// JavaScript ones, an interpreter each: 14 and 4 core modules, 13,361 and
/// 12,713 functions, the largest 427 KB and 172 KB with 271 and 118
/// locals, 6.6 MB and 9.2 MB of code (componentize-py 0.25.1, componentize-js
/// 0.23.0, measured by [`Shape::measure`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CompileLimits {
    /// Core modules in the component, nested components included. Default 64.
    pub max_modules: usize,
    /// Functions defined by all its core modules. Default 100,000.
    pub max_functions: usize,
    /// Bytes of one function body. Default 1 MiB.
    pub max_function_bytes: usize,
    /// Locals of one function. Default 5,000.
    pub max_locals: u64,
    /// Bytes of all function bodies together. Default 64 MiB.
    pub max_code_bytes: usize,
    /// CPU time compiling one component may take, all the compiler's
    /// threads together, in milliseconds; past it the compiler is stopped
    /// and the component refused. Default 120,000 (2 min). Applies where
    /// dac compiles in a child process ([`crate::Compiler::Child`]: `dac
    /// serve`). The Python and JavaScript shadow rules take 15 s and 17 s
    /// on one core here; a small Rust rule, 0.1 s.
    pub max_cpu_ms: u64,
    /// Resident memory of the compiler compiling one component, in bytes;
    /// past it the compiler is stopped and the component refused. Default
    /// 2 GiB. Applies where `max_cpu_ms` does. The Python and JavaScript
    /// shadow rules peak at 330 MB here; a small Rust rule, 25 MB.
    pub max_memory_bytes: u64,
}

impl Default for CompileLimits {
    fn default() -> Self {
        CompileLimits {
            max_modules: 64,
            max_functions: 100_000,
            max_function_bytes: 1 << 20,
            max_locals: 5_000,
            max_code_bytes: 64 << 20,
            max_cpu_ms: 120_000,
            max_memory_bytes: 2 << 30,
        }
    }
}

/// What a component holds, as far as compiling it is concerned.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Shape {
    pub modules: usize,
    pub functions: usize,
    pub largest_function_bytes: usize,
    pub most_locals: u64,
    pub code_bytes: usize,
}

impl Shape {
    /// Measures `bytes`; `None` when they do not parse (wasmtime then says
    /// why, with its own message, without compiling anything).
    pub fn measure(bytes: &[u8]) -> Option<Shape> {
        use wasmparser::{Parser, Payload};
        let mut shape = Shape::default();
        for payload in Parser::new(0).parse_all(bytes) {
            match payload.ok()? {
                Payload::ModuleSection { .. } => shape.modules += 1,
                Payload::FunctionSection(functions) => {
                    shape.functions = shape.functions.saturating_add(functions.count() as usize);
                }
                Payload::CodeSectionEntry(body) => {
                    let size = body.range().len();
                    shape.largest_function_bytes = shape.largest_function_bytes.max(size);
                    shape.code_bytes = shape.code_bytes.saturating_add(size);
                    let mut locals = 0u64;
                    for group in body.get_locals_reader().ok()? {
                        locals = locals.saturating_add(u64::from(group.ok()?.0));
                    }
                    shape.most_locals = shape.most_locals.max(locals);
                }
                _ => {}
            }
        }
        Some(shape)
    }

    /// The first limit this shape is over, said as the refusal says it.
    pub fn check(&self, limits: &CompileLimits) -> Result<(), String> {
        let checks = [
            (self.modules as u64, limits.max_modules as u64, "max_modules", "core modules"),
            (self.functions as u64, limits.max_functions as u64, "max_functions", "functions"),
            (
                self.largest_function_bytes as u64,
                limits.max_function_bytes as u64,
                "max_function_bytes",
                "bytes in one function body",
            ),
            (self.most_locals, limits.max_locals, "max_locals", "locals in one function"),
            (self.code_bytes as u64, limits.max_code_bytes as u64, "max_code_bytes", "bytes of code"),
        ];
        for (value, limit, name, what) in checks {
            if value > limit {
                return Err(format!(
                    "{value} {what}, over the compile limit {name} of {limit}; the component was not compiled"
                ));
            }
        }
        Ok(())
    }
}
