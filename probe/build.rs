//! Builds the kernel crate (`probe-ebpf`) with aya-build and leaves the
//! object in OUT_DIR for `include_bytes_aligned!`.
//!
//! When it cannot be built — no bpf-linker, no rust-src — the build goes on
//! with an empty object and the reason, which `dac-probe` reports at run
//! time: the rest of the workspace must build and test on such machines.

use std::path::{Path, PathBuf};

fn main() {
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let manifest_dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let ebpf_dir = manifest_dir.join("../probe-ebpf");
    let common_dir = manifest_dir.join("../probe-common");
    println!("cargo:rerun-if-changed={}", common_dir.display());
    println!("cargo:rerun-if-changed={}", ebpf_dir.display());

    let object = out_dir.join("dac-probe-ebpf");
    let reason_file = out_dir.join("ebpf-missing.txt");
    match build(&ebpf_dir) {
        Ok(()) if object.is_file() => write(&reason_file, ""),
        Ok(()) => missing(&object, &reason_file, "aya-build finished but left no dac-probe-ebpf object"),
        Err(reason) => missing(&object, &reason_file, &reason),
    }
}

fn build(ebpf_dir: &Path) -> Result<(), String> {
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| Path::new(&home).join(".cargo")))
        .unwrap_or_default();
    let installed = cargo_home.join("bin/bpf-linker");
    // Rerun once it gets installed.
    println!("cargo:rerun-if-changed={}", installed.display());
    println!("cargo:rerun-if-env-changed=PATH");
    let in_path = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).any(|dir| dir.join("bpf-linker").is_file()))
        .unwrap_or(false);
    if !in_path {
        if !installed.is_file() {
            return Err("bpf-linker is not installed (cargo install bpf-linker@0.10.0 --locked, then rebuild)".into());
        }
        let mut path = std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()).collect::<Vec<_>>();
        path.push(cargo_home.join("bin"));
        std::env::set_var("PATH", std::env::join_paths(path).map_err(|err| err.to_string())?);
    }
    // The pinned stable toolchain builds `core` for the BPF target with
    // -Z build-std, which needs RUSTC_BOOTSTRAP (and the rust-src component).
    std::env::set_var("RUSTC_BOOTSTRAP", "1");
    let toolchain = std::env::var("RUSTUP_TOOLCHAIN").unwrap_or_else(|_| "1.95.0".into());
    // aya-build runs `cargo build --package` in the current directory; the
    // kernel crate is its own workspace, outside ours.
    std::env::set_current_dir(ebpf_dir).map_err(|err| format!("{}: {err}", ebpf_dir.display()))?;
    let package = aya_build::Package {
        name: "dac-probe-ebpf",
        root_dir: ebpf_dir.to_str().ok_or("non-UTF-8 path to probe-ebpf")?,
        ..Default::default()
    };
    aya_build::build_ebpf([package], aya_build::Toolchain::Custom(&toolchain))
        .map_err(|err| format!("building probe-ebpf failed: {err:#}"))
}

fn missing(object: &Path, reason_file: &Path, reason: &str) {
    println!("cargo:warning=dac-probe is built without its BPF program: {reason}");
    write(object, "");
    write(reason_file, reason);
}

fn write(path: &Path, contents: &str) {
    std::fs::write(path, contents).unwrap_or_else(|err| panic!("{}: {err}", path.display()));
}
