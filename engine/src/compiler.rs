//! Where components are compiled: in this process, or in a child process
//! that is watched and can be stopped.
//!
//! Cranelift cannot be interrupted, and its cost is not linear in its
//! input: the shape check ([`crate::CompileLimits`], before compiling)
//! bounds what it is given, but not what it spends. A child process can be
//! bounded: while it compiles, its CPU time and resident memory are read
//! from `/proc` and it is killed past `max_cpu_ms` or `max_memory_bytes`,
//! or at once when the load is cancelled (the client went away, the server
//! is stopping). Its only output is the compiled code, written to a file
//! the parent then loads. `dac serve` compiles tenants' uploads this way;
//! `dac run`, `dac watch` and `dac test` compile the operator's own files
//! in-process, where those two limits do not apply.

use crate::limits::{Isolation, Limits};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// How a [`crate::ComponentCache`] compiles.
#[derive(Debug, Clone, Default)]
pub enum Compiler {
    /// On the calling thread (and, if the sandbox allows, every core), in
    /// this process. Not bounded in time or memory; not cancellable.
    #[default]
    InProcess,
    /// In a child process: `program args… SETTINGS INPUT OUTPUT`, which must
    /// call [`compile_in_child`] with its last three arguments (`dac` does,
    /// as its hidden `compile-component` command).
    Child { program: PathBuf, args: Vec<OsString> },
}

/// Asks a load in progress to stop: a compilation in a child process is
/// killed within a few milliseconds. Clones share the flag; a
/// [`Cancel::child`] is also cancelled by its parent.
#[derive(Debug, Clone, Default)]
pub struct Cancel {
    own: Arc<AtomicBool>,
    parent: Option<Arc<AtomicBool>>,
}

impl Cancel {
    /// A token nobody cancels.
    pub fn never() -> Cancel {
        Cancel::default()
    }

    /// A token cancelled by its own [`Cancel::cancel`] or by this one's
    /// (one level: a request's token under the server's).
    pub fn child(&self) -> Cancel {
        Cancel { own: Arc::default(), parent: Some(self.own.clone()) }
    }

    pub fn cancel(&self) {
        self.own.store(true, Ordering::Release);
    }

    pub fn is_cancelled(&self) -> bool {
        self.own.load(Ordering::Acquire) || self.parent.as_ref().is_some_and(|parent| parent.load(Ordering::Acquire))
    }
}

/// Cancels its token when dropped: held by a request, so the work it
/// started stops when the request is dropped (its client went away).
#[derive(Debug)]
pub struct CancelOnDrop(pub Cancel);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

/// What a wasmtime engine's configuration depends on: the same settings
/// give the same configuration, in this process or in a child compiler
/// (which gets them as JSON), so the code one compiles the other can load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct EngineSettings {
    parallel: bool,
    epoch: bool,
    fuel: bool,
    wasm_stack_bytes: usize,
    /// With a fresh instance per event: the size the pool reserves for
    /// each memory.
    pooled_memory_bytes: Option<usize>,
}

impl EngineSettings {
    pub(crate) fn of(limits: &Limits, parallel: bool) -> EngineSettings {
        EngineSettings {
            parallel,
            epoch: limits.deadline.is_some(),
            fuel: limits.fuel.is_some(),
            wasm_stack_bytes: limits.wasm_stack_bytes,
            pooled_memory_bytes: (limits.isolation == Isolation::FreshInstancePerEvent).then_some(limits.memory_bytes),
        }
    }

    pub(crate) fn config(&self) -> wasmtime::Config {
        let mut config = wasmtime::Config::new();
        config.parallel_compilation(self.parallel);
        config.wasm_component_model(true);
        config.epoch_interruption(self.epoch);
        config.consume_fuel(self.fuel);
        config.max_wasm_stack(self.wasm_stack_bytes);
        // What the rule interface does not need is off, so an upload cannot
        // reach the code behind it: 64-bit memories, several memories in
        // one module, wide arithmetic. (Threads, GC, exceptions and async
        // are not even compiled in: see the workspace's wasmtime features.)
        config.wasm_memory64(false);
        config.wasm_multi_memory(false);
        config.wasm_wide_arithmetic(false);
        // Rules ship stripped, so a backtrace would be frame numbers only,
        // and collecting one makes every fault slower.
        config.wasm_backtrace_max_frames(None);
        if let Some(memory_bytes) = self.pooled_memory_bytes {
            // Instantiating per event is only affordable from pre-reserved
            // slots whose memory stays mapped between uses.
            let mut pool = wasmtime::PoolingAllocationConfig::default();
            pool.total_component_instances(1024)
                .total_core_instances(4096)
                .total_memories(2048)
                .total_tables(2048)
                .max_memory_size(memory_bytes)
                .linear_memory_keep_resident(1 << 20)
                .table_keep_resident(64 << 10);
            config.allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(pool));
        }
        config
    }
}

/// Why a compilation produced no code.
#[derive(Debug)]
pub(crate) enum CompileError {
    /// The component is not valid (wasmtime's message).
    Invalid(String),
    /// The compiler could not run (files, processes): the server's
    /// problem, not the component's; the message may name its paths.
    Internal(String),
    /// Stopped over a budget; says which, as the refusal says it.
    OverBudget(String),
    Cancelled,
}

/// The bounds a child compilation is held to.
pub(crate) struct Budget {
    pub max_cpu_ms: u64,
    pub max_memory_bytes: u64,
}

impl Budget {
    /// The refusal for a compiler past one of these bounds, if it is.
    fn over(&self, usage: &Usage) -> Option<CompileError> {
        if usage.cpu_ms > self.max_cpu_ms {
            return Some(self.refusal(self.max_cpu_ms, "ms of CPU", "max_cpu_ms"));
        }
        (usage.resident_bytes > self.max_memory_bytes)
            .then(|| self.refusal(self.max_memory_bytes, "bytes of memory", "max_memory_bytes"))
    }

    fn refusal(&self, limit: u64, unit: &str, name: &str) -> CompileError {
        CompileError::OverBudget(format!(
            "compiling took over {limit} {unit}, the compile limit {name}; it was stopped"
        ))
    }
}

/// The longest wait between two looks at a child compiler.
const POLL: Duration = Duration::from_millis(10);

/// Compiles `bytes` with `program`, in `work_dir`, for an engine configured
/// by `settings`: the path of the compiled code, in `work_dir`.
pub(crate) fn compile_with_child(
    program: &Path,
    args: &[OsString],
    settings: &str,
    bytes: &[u8],
    work_dir: &Path,
    budget: &Budget,
    cancel: &Cancel,
) -> Result<PathBuf, CompileError> {
    let internal = |what: &str, err: std::io::Error| CompileError::Internal(format!("{what}: {err}"));
    let input = work_dir.join("component.wasm");
    let output = work_dir.join("component.cwasm");
    let errors = work_dir.join("stderr.txt");
    std::fs::write(&input, bytes).map_err(|err| internal("writing the component for the compiler", err))?;
    let stderr = std::fs::File::create(&errors).map_err(|err| internal("creating the compiler's error file", err))?;
    let mut child = std::process::Command::new(program)
        .args(args)
        .arg(settings)
        .arg(&input)
        .arg(&output)
        .arg(budget.max_cpu_ms.to_string())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(stderr)
        .spawn()
        .map_err(|err| internal(&format!("starting the compiler {}", program.display()), err))?;
    let stop = |child: &mut std::process::Child, outcome: CompileError| {
        let _ = child.kill();
        let _ = child.wait();
        Err(outcome)
    };
    let mut wait = Duration::from_millis(1);
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) => {}
            Err(err) => return stop(&mut child, internal("waiting for the compiler", err)),
        }
        if cancel.is_cancelled() {
            return stop(&mut child, CompileError::Cancelled);
        }
        if let Some(over) = Usage::of(child.id()).and_then(|usage| budget.over(&usage)) {
            return stop(&mut child, over);
        }
        std::thread::sleep(wait);
        wait = (wait * 2).min(POLL);
    };
    if status.success() {
        return Ok(output);
    }
    // Bounded: what the child says is its own error message, but the
    // parent reads no more than it would show.
    let mut said = Vec::new();
    if let Err(err) = std::fs::File::open(&errors)
        .and_then(|file| std::io::Read::read_to_end(&mut std::io::Read::take(file, 64 << 10), &mut said))
    {
        return Err(internal("reading the compiler's error file", err));
    }
    let message = String::from_utf8_lossy(&said);
    let message = message.trim();
    Err(match (status.code(), std::os::unix::process::ExitStatusExt::signal(&status)) {
        (Some(INVALID_EXIT), _) => CompileError::Invalid(message.to_owned()),
        // Its own backstop (RLIMIT_CPU).
        (_, Some(signal)) if signal == libc::SIGXCPU => budget.refusal(budget.max_cpu_ms, "ms of CPU", "max_cpu_ms"),
        (_, Some(signal)) => CompileError::Internal(format!("the compiler process was killed by signal {signal}")),
        _ => CompileError::Internal(format!("the compiler process failed ({status}): {message}")),
    })
}

/// A process's CPU time (all its threads) and resident memory, from
/// `/proc/PID/stat`; `None` where that cannot be read (the process just
/// ended, or no procfs).
struct Usage {
    cpu_ms: u64,
    resident_bytes: u64,
}

impl Usage {
    fn of(pid: u32) -> Option<Usage> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // After the command name, which may hold spaces and parentheses:
        // fields 3… ; utime and stime are fields 14 and 15, rss field 24.
        let fields: Vec<&str> = stat.get(stat.rfind(')')? + 2..)?.split(' ').collect();
        let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
        let pages: u64 = fields.get(21)?.parse().ok()?;
        // SAFETY: sysconf reads a constant of the system.
        let (ticks_per_second, page_bytes) =
            unsafe { (libc::sysconf(libc::_SC_CLK_TCK), libc::sysconf(libc::_SC_PAGESIZE)) };
        let ticks_per_second = u64::try_from(ticks_per_second).ok().filter(|&t| t > 0)?;
        let page_bytes = u64::try_from(page_bytes).ok()?;
        Some(Usage {
            cpu_ms: ticks.saturating_mul(1000) / ticks_per_second,
            resident_bytes: pages.saturating_mul(page_bytes),
        })
    }
}

/// The exit status of a child compiler that found the component invalid
/// (its message on stderr); any other failure is the compiler's own.
pub const INVALID_EXIT: i32 = 1;

/// Why [`compile_in_child`] failed.
#[derive(Debug)]
pub enum ChildError {
    /// The component is not valid: exit with [`INVALID_EXIT`].
    Invalid(String),
    /// The compiler could not do its work (arguments, files, wasmtime's
    /// configuration): exit with another status.
    Internal(String),
}

/// The child's side of [`Compiler::Child`]: `args` are the last arguments
/// the parent passed (`SETTINGS INPUT OUTPUT MAX_CPU_MS`). Compiles INPUT
/// for an engine configured by SETTINGS and writes the compiled code to
/// OUTPUT. On failure the error is returned, for the caller to print on
/// stderr (the parent shows an invalid component's as the reason) and exit
/// with [`INVALID_EXIT`] or another status.
pub fn compile_in_child(args: &[OsString]) -> Result<(), ChildError> {
    let internal = ChildError::Internal;
    let [settings, input, output, max_cpu_ms] = args else {
        return Err(internal(
            "usage: compile-component SETTINGS INPUT OUTPUT MAX_CPU_MS (run by dac serve, not by hand)".into(),
        ));
    };
    let settings: EngineSettings = serde_json::from_str(&settings.to_string_lossy())
        .map_err(|err| internal(format!("compiler settings: {err}")))?;
    let max_cpu_ms: u64 = max_cpu_ms.to_string_lossy().parse().map_err(|err| internal(format!("MAX_CPU_MS: {err}")))?;
    backstops(max_cpu_ms);
    let bytes =
        std::fs::read(input).map_err(|err| internal(format!("reading {}: {err}", Path::new(input).display())))?;
    let engine =
        wasmtime::Engine::new(&settings.config()).map_err(|err| internal(format!("configuring wasmtime: {err}")))?;
    let compiled = engine.precompile_component(&bytes).map_err(|err| ChildError::Invalid(format!("{err:#}")))?;
    std::fs::write(output, compiled).map_err(|err| internal(format!("writing {}: {err}", Path::new(output).display())))
}

/// Limits the child sets on itself, for when its parent cannot: it dies
/// with the parent, and the kernel stops it a little past its CPU budget.
fn backstops(max_cpu_ms: u64) {
    let seconds = max_cpu_ms.div_ceil(1000).saturating_add(2);
    let limit = libc::rlimit { rlim_cur: seconds as libc::rlim_t, rlim_max: seconds.saturating_add(1) as libc::rlim_t };
    // SAFETY: plain system calls on this process, with valid arguments.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong);
        libc::setrlimit(libc::RLIMIT_CPU, &limit);
    }
}
