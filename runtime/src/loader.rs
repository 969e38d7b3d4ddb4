//! Finding rule files: a component file, or every component in a directory.

use crate::rule::RuleComponent;
use crate::sandbox::{LoadError, Sandbox};
use std::path::{Path, PathBuf};

/// The `.wasm` files a rule argument names: the file itself, or a
/// directory's `.wasm` files (not recursive), sorted by name so load order
/// and alert order are stable.
pub fn rule_files(arg: &Path) -> std::io::Result<Vec<PathBuf>> {
    if !arg.is_dir() {
        // A missing file is reported by the load, naming it.
        return Ok(vec![arg.to_owned()]);
    }
    let mut files = Vec::new();
    for entry in std::fs::read_dir(arg)? {
        let path = entry?.path();
        if path.is_file() && path.extension().is_some_and(|ext| ext == "wasm") {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// Loads every rule named by `args`; the errors of those that failed come
/// back alongside the rules that loaded, so the caller can report them all.
pub fn load_rules(sandbox: &Sandbox, args: &[PathBuf]) -> (Vec<RuleComponent>, Vec<LoadError>) {
    let mut rules = Vec::new();
    let mut errors = Vec::new();
    for arg in args {
        let files = match rule_files(arg) {
            Ok(files) => files,
            Err(source) => {
                errors.push(LoadError::Read { file: arg.clone(), source });
                continue;
            }
        };
        for file in files {
            match sandbox.load_file(&file) {
                Ok(rule) => rules.push(rule),
                Err(err) => errors.push(err),
            }
        }
    }
    (rules, errors)
}
