//! The kit dac's end-to-end tests and benchmarks share: realistic event
//! generation, and building the real artifacts under test — rule
//! components (examples and deliberately hostile ones) and the `dac-run`
//! binary — with the same cargo commands a user runs.

pub mod bench;
pub mod correlation;
pub mod generate;
pub mod mix;
pub mod mongo;
pub mod serve;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The repository's root directory.
pub fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the tests crate lives one level below the root")
}

/// The example rule crates, by package name.
pub const EXAMPLE_RULES: [&str; 6] = [
    "shadow",
    "tmp-output-redir",
    "reverse-shell-dev-tcp",
    "download-pipe-shell",
    "cron-systemd-persistence",
    "base64-decode-exec",
];

/// The deliberately misbehaving rules of `tests/hostile-rules`.
pub const HOSTILE_RULES: [&str; 11] = [
    "infinite-loop",
    "memory-bomb",
    "deep-recursion",
    "explicit-panic",
    "log-flood",
    "huge-finding",
    "capability-escape",
    "stateful-counter",
    "state-then-panic",
    "other-world",
    "future-version",
];

/// The sample log shipped with the examples.
pub fn sample_log() -> PathBuf {
    repo_root().join("example-rules/data/sample-events.ndjson")
}

/// SigmaHQ's Linux process-creation rules: `$DAC_SIGMA_DIR`, else
/// `example-rules/sigma/linux-process-creation` in the repository.
pub fn sigma_dir() -> PathBuf {
    let dir = std::env::var_os("DAC_SIGMA_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("example-rules/sigma/linux-process-creation"));
    assert!(dir.is_dir(), "{}: the SigmaHQ rules are missing (set DAC_SIGMA_DIR)", dir.display());
    dir
}

/// The seed's two rules as YAML.
pub fn yaml_rules_dir() -> PathBuf {
    repo_root().join("example-rules/yaml")
}

/// Builds the example rules as components (once per process) and returns
/// the directory holding `shadow.wasm` and the others, exactly as
/// `scripts/build-rules` leaves it.
pub fn example_rules_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        run_checked(Command::new(repo_root().join("scripts/build-rules")));
        repo_root().join("target/rule-components")
    })
}

/// The component of one example rule, by package name.
pub fn example_rule(package: &str) -> PathBuf {
    example_rules_dir().join(format!("{}.wasm", package.replace('-', "_")))
}

/// Builds the hostile rules (once per process) and returns the component
/// of one, by package name.
pub fn hostile_rule(package: &str) -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| build_rule_workspace("hostile-rules")).join(format!("{}.wasm", package.replace('-', "_")))
}

/// Builds the rule workspace `tests/NAME/` for wasm32-wasip2 into
/// `target/NAME/` and returns the directory of its components.
fn build_rule_workspace(name: &str) -> PathBuf {
    let manifest = repo_root().join("tests").join(name).join("Cargo.toml");
    let target = repo_root().join("target").join(name);
    let mut cargo = cargo();
    cargo
        .args(["build", "--release", "--target", "wasm32-wasip2", "--manifest-path"])
        .arg(&manifest)
        .arg("--target-dir")
        .arg(&target);
    run_checked(cargo);
    target.join("wasm32-wasip2/release")
}

/// Builds `dac-run` (once per process) in the profile of the caller — dev
/// for tests, whose dependencies are already built optimized, release for
/// benchmarks — and returns its path.
pub fn dac_run() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| build_binary("dac-run"))
}

/// Builds `dac` as [`dac_run`] builds `dac-run`.
pub fn dac() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| build_binary("dac"))
}

/// The compiler `dac serve` uses: `dac compile-component` in a child
/// process, for the tests and benches that open a `dac_serve::Service`
/// in-process.
pub fn child_compiler() -> dac_engine::Compiler {
    dac_engine::Compiler::Child { program: dac().to_owned(), args: vec!["compile-component".into()] }
}

fn build_binary(name: &str) -> PathBuf {
    let release = !cfg!(debug_assertions);
    let mut cargo = cargo();
    // `--workspace`, not `-p dac`: features are unified over the
    // packages selected, and `cargo test --workspace` selects all of them
    // (aya, for one, turns on a hashbrown feature that cranelift also uses).
    // Building for `-p dac` alone compiled wasmtime, the driver and
    // everything between them a second time: minutes of CI.
    cargo.args(["build", "--workspace", "--bin", name]);
    if release {
        cargo.arg("--release");
    } else {
        // With the test targets selected, dev-dependencies' features are
        // unified as `cargo test --workspace` unifies them (rsigma-eval, a
        // dev-dependency of dac-detect, turns on chrono's and serde's
        // defaults): without this the nested build resolved other features,
        // rebuilt serde and everything above it, and overwrote the
        // `libdac_matcher.rlib` the doc tests read. Under `cargo test
        // --workspace` the test targets are built already: nothing to do.
        cargo.arg("--tests");
    }
    run_checked(cargo);
    repo_root().join(if release { "target/release" } else { "target/debug" }).join(name)
}

fn cargo() -> Command {
    let mut cargo = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    // Cargo reads `.cargo/config.toml` from the working directory.
    cargo.current_dir(repo_root());
    // A test process inherits the `CARGO_PKG_*`, `CARGO_MANIFEST_*`, … that
    // cargo sets for its own crate. Build scripts that watch such variables
    // (`rerun-if-env-changed`) would see them change between this build and
    // the outer one and rebuild their crates and everything above them
    // (ring, rustls, the driver, the runtime) at every test run. The user's
    // configuration (`CARGO_INCREMENTAL`, `CARGO_PROFILE_*`, …) is kept: a
    // nested build with other settings rebuilds our crates, and overwrites
    // `libdac_matcher.rlib`, whose name carries no hash (the crate is also a
    // cdylib) under the outer build's doc tests.
    for (key, _) in std::env::vars_os() {
        if let Some(key) = key.to_str() {
            if set_by_cargo_for_a_crate(key) {
                cargo.env_remove(key);
            }
        }
    }
    cargo
}

/// The variables cargo sets for the crate it builds or tests (The Cargo
/// Book, "Environment variables Cargo sets for crates" and "… for build
/// scripts"), as opposed to the ones a user sets to configure cargo.
fn set_by_cargo_for_a_crate(key: &str) -> bool {
    const PREFIXES: [&str; 4] = ["CARGO_PKG_", "CARGO_MANIFEST_", "CARGO_BIN_", "CARGO_CFG_"];
    const NAMES: [&str; 7] = [
        "CARGO_CRATE_NAME",
        "CARGO_PRIMARY_PACKAGE",
        "CARGO_TARGET_TMPDIR",
        "CARGO_RUSTC_CURRENT_DIR",
        "CARGO_MAKEFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "OUT_DIR",
    ];
    PREFIXES.iter().any(|prefix| key.starts_with(prefix)) || NAMES.contains(&key)
}

fn run_checked(mut command: Command) {
    let status = command.status().unwrap_or_else(|err| panic!("cannot run {command:?}: {err}"));
    assert!(status.success(), "{command:?} failed: {status}");
}

/// How a rule kit's build went ([`build_with_kit`]).
pub enum KitBuild {
    /// The component was written; the build took this long.
    Built(std::time::Duration),
    /// A tool the kit needs is not installed (`scripts/test` installs
    /// them): the build script's explanation.
    MissingTool(String),
}

/// Builds `rule-sdk/<kit>/examples/<example>` with the kit's `build.sh`
/// into `out`, as a rule author runs it. An error when the script fails or
/// writes nothing.
pub fn build_with_kit(kit: &str, example: &str, out: &Path) -> Result<KitBuild, String> {
    /// The build scripts exit with this status when a tool is missing.
    const MISSING_TOOL: i32 = 3;
    let script = repo_root().join("rule-sdk").join(kit).join("build.sh");
    let start = std::time::Instant::now();
    let output = Command::new(&script)
        .arg(repo_root().join("rule-sdk").join(kit).join("examples").join(example))
        .arg("-o")
        .arg(out)
        .output()
        .map_err(|err| format!("cannot run {}: {err}", script.display()))?;
    let elapsed = start.elapsed();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    if output.status.code() == Some(MISSING_TOOL) {
        return Ok(KitBuild::MissingTool(stderr));
    }
    if !output.status.success() {
        return Err(format!("{} {example} failed ({}):\n{stderr}", script.display(), output.status));
    }
    if !out.is_file() {
        return Err(format!("{} reported success but wrote no {}", script.display(), out.display()));
    }
    Ok(KitBuild::Built(elapsed))
}

/// The four rules of `tests/bench-rules`: with the six [`EXAMPLE_RULES`],
/// ten distinct Rust rules for one `dac serve` tenant in the serve bench.
pub const BENCH_RULES: [&str; 4] = ["ssh-private-key-read", "env-dump", "systemd-unit-write", "ip-literal-download"];

/// Builds the bench rules (once per process), as [`hostile_rule`] builds
/// the hostile ones, and returns the component of one, by package name.
pub fn bench_rule(package: &str) -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| build_rule_workspace("bench-rules")).join(format!("{}.wasm", package.replace('-', "_")))
}

/// A core module that passes the default compile limits but costs Cranelift
/// about 0.4 s of CPU per function (on this machine): `functions`
/// functions of ~1 MB each, every one 90,000 additions between 4,900 i64
/// locals, in blocks of 16, that all stay live (their sum is returned).
/// Appended to a component (`dac_fuzz_targets::with_core_instance`), it
/// makes a rule that is slow to compile; its own functions are never
/// called.
pub fn slow_to_compile_module(functions: u64) -> Vec<u8> {
    const LOCALS: u64 = 4_900;
    const ADDITIONS: u64 = 90_000;
    fn leb(mut value: u64, out: &mut Vec<u8>) {
        loop {
            let byte = (value & 0x7f) as u8;
            value >>= 7;
            if value == 0 {
                out.push(byte);
                return;
            }
            out.push(byte | 0x80);
        }
    }
    fn section(id: u8, body: &[u8], out: &mut Vec<u8>) {
        out.push(id);
        leb(body.len() as u64, out);
        out.extend_from_slice(body);
    }
    let mut body = vec![1];
    leb(LOCALS, &mut body);
    body.push(0x7e); // i64
    for i in 0..ADDITIONS {
        if i % 16 == 0 {
            body.extend([0x02, 0x40]); // block
        }
        for (opcode, local) in [(0x20, (i * 7) % LOCALS), (0x20, (i * 13 + 1) % LOCALS)] {
            body.push(opcode); // local.get
            leb(local, &mut body);
        }
        body.push(0x7c); // i64.add
        body.push(0x21); // local.set
        leb(i % LOCALS, &mut body);
        if i % 16 == 15 {
            body.push(0x0b); // end
        }
    }
    body.extend([0x42, 0]); // i64.const 0
    for local in 0..LOCALS {
        body.push(0x20);
        leb(local, &mut body);
        body.push(0x7c);
    }
    body.push(0x0b);
    let mut module = b"\0asm\x01\0\0\0".to_vec();
    section(1, &[1, 0x60, 0, 1, 0x7e], &mut module); // type: () -> i64
    let mut declared = Vec::new();
    leb(functions, &mut declared);
    declared.extend((0..functions).map(|_| 0));
    section(3, &declared, &mut module);
    let mut code = Vec::new();
    leb(functions, &mut code);
    for _ in 0..functions {
        leb(body.len() as u64, &mut code);
        code.extend_from_slice(&body);
    }
    section(10, &code, &mut module);
    module
}

/// The processes whose command line mentions `needle` (a test's own
/// temporary directory, say).
pub fn processes_mentioning(needle: &str) -> Vec<u32> {
    let Ok(proc) = std::fs::read_dir("/proc") else { return Vec::new() };
    proc.filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|cmdline| String::from_utf8_lossy(&cmdline).contains(needle))
        })
        .collect()
}
