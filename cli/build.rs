//! Builds the matcher component (`matcher/`, package `dac-matcher`) for
//! `wasm32-wasip2` and leaves it in OUT_DIR for `include_bytes!`: `dac build`
//! turns a YAML or Sigma rule into a component by writing the rule into a
//! copy of it.
//!
//! A nested cargo builds it with the `rules` profile, as `scripts/build-rules`
//! builds rules, into `<target>/dac-matcher`: a directory of its own, since
//! the outer cargo holds the lock of the workspace's, and one shared by the
//! host's debug, release and clippy builds, so it is compiled once.
//!
//! When it cannot be built — no `wasm32-wasip2` target, or `DAC_SKIP_MATCHER`
//! set — the build goes on with an empty file and the reason, which
//! `dac build` reports: the rest of the workspace must build and test on
//! such machines.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let manifest_dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let root = manifest_dir.parent().expect("cli/ lives in the workspace root").to_owned();
    // What the component is built from (cargo itself decides what to
    // rebuild inside; these only decide when to ask it).
    for path in ["matcher", "detect/src", "detect/Cargo.toml", "event", "rule-sdk", "wit", "Cargo.lock", ".cargo"] {
        println!("cargo:rerun-if-changed={}", root.join(path).display());
    }

    let component = out_dir.join("dac-matcher.wasm");
    let reason_file = out_dir.join("dac-matcher-missing.txt");
    match build(&root, &out_dir) {
        Ok(built) => {
            std::fs::copy(&built, &component).unwrap_or_else(|err| panic!("{}: {err}", built.display()));
            write(&reason_file, "");
        }
        Err(reason) => {
            println!(
                "cargo:warning=dac is built without its matcher component, so `dac build` will not work: {reason}"
            );
            write(&component, "");
            write(&reason_file, &reason);
        }
    }
}

fn build(root: &Path, out_dir: &Path) -> Result<PathBuf, String> {
    // For builds that must not run a nested cargo (offline, or to save the
    // first build's minute and a half).
    println!("cargo:rerun-if-env-changed=DAC_SKIP_MATCHER");
    if std::env::var_os("DAC_SKIP_MATCHER").is_some_and(|v| !v.is_empty()) {
        return Err("DAC_SKIP_MATCHER is set".into());
    }
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let sysroot = Command::new(&rustc)
        .args(["--print", "sysroot"])
        .output()
        .map_err(|err| format!("cannot run {}: {err}", rustc.to_string_lossy()))?;
    let sysroot = PathBuf::from(String::from_utf8_lossy(&sysroot.stdout).trim());
    let target_lib = sysroot.join("lib/rustlib/wasm32-wasip2");
    // Rerun once it gets installed.
    println!("cargo:rerun-if-changed={}", target_lib.display());
    if !target_lib.is_dir() {
        return Err("the wasm32-wasip2 target is not installed (rustup target add wasm32-wasip2, then rebuild)".into());
    }

    let target_dir = shared_target_dir(out_dir).join("dac-matcher");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    // Cargo reads `.cargo/config.toml` (the guest's stack size) from the
    // working directory.
    command
        .current_dir(root)
        .args(["build", "--quiet", "--target", "wasm32-wasip2", "--profile", "rules", "-p", "dac-matcher"])
        .arg("--target-dir")
        .arg(&target_dir);
    // What cargo tells a build script describes the host build: its flags,
    // target, profile and the variables a dependency's build script may
    // watch would break or needlessly rebuild the guest's. The jobserver
    // (CARGO_MAKEFLAGS) stays, so both builds share the machine's cores.
    for (key, _) in std::env::vars_os() {
        let Some(key) = key.to_str() else { continue };
        let keep = matches!(key, "CARGO_HOME" | "CARGO_MAKEFLAGS")
            || ["CARGO_REGISTRIES_", "CARGO_NET_", "CARGO_HTTP_"].iter().any(|p| key.starts_with(p));
        let host_only = matches!(
            key,
            "RUSTC"
                | "RUSTC_WORKSPACE_WRAPPER"
                | "RUSTDOC"
                | "RUSTFLAGS"
                | "RUSTDOCFLAGS"
                | "OUT_DIR"
                | "TARGET"
                | "HOST"
                | "PROFILE"
                | "OPT_LEVEL"
                | "DEBUG"
                | "NUM_JOBS"
        );
        if (key.starts_with("CARGO_") && !keep) || host_only {
            command.env_remove(key);
        }
    }
    let output = command.output().map_err(|err| format!("cannot run cargo: {err}"))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(20).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        return Err(format!("building dac-matcher for wasm32-wasip2 failed ({}):\n{}", output.status, tail.join("\n")));
    }
    let built = target_dir.join("wasm32-wasip2/rules/dac_matcher.wasm");
    if !built.is_file() {
        return Err(format!("cargo finished but left no {}", built.display()));
    }
    Ok(built)
}

/// The workspace's target directory — the ancestor of OUT_DIR that cargo
/// marked with CACHEDIR.TAG — else OUT_DIR itself.
fn shared_target_dir(out_dir: &Path) -> PathBuf {
    out_dir.ancestors().find(|dir| dir.join("CACHEDIR.TAG").is_file()).unwrap_or(out_dir).to_owned()
}

fn write(path: &Path, contents: &str) {
    std::fs::write(path, contents).unwrap_or_else(|err| panic!("{}: {err}", path.display()));
}
