//! Finding rule files — components (`.wasm`) and declarative rules
//! (`.yml`/`.yaml`: the seed's YAML and Sigma) — and loading them.

use crate::compiler::Cancel;
use crate::component::RuleComponent;
use crate::declarative::{self, DeclarativeRule};
use crate::error::LoadError;
use crate::rule::{RuleId, RuleInfo};
use crate::sandbox::Sandbox;
use dac_detect::FieldMapping;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A rule file, loaded: a sandboxed component or a declarative rule.
pub enum LoadedRule {
    /// Both boxed: the two are a few hundred bytes, and of different sizes.
    Component(Box<RuleComponent>),
    Declarative(Box<DeclarativeRule>),
}

impl LoadedRule {
    pub fn info(&self) -> &Arc<RuleInfo> {
        match self {
            LoadedRule::Component(rule) => rule.info(),
            LoadedRule::Declarative(rule) => &rule.info,
        }
    }
}

/// Whether a file is a rule by its name: `.wasm`, `.yml` or `.yaml`, but not
/// a rule's test cases (`NAME.tests.yaml`, see `dac test`).
pub fn is_rule_file(path: &Path) -> bool {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    if name.starts_with('.') || name.contains(".tests.") {
        return false;
    }
    path.extension().is_some_and(|ext| ext == "wasm") || dac_detect::is_rule_file(path)
}

/// The rule files a rule argument names: the file itself, or a directory's
/// rule files (not recursive), sorted by name so load order and alert order
/// are stable.
pub fn rule_files(arg: &Path) -> std::io::Result<Vec<PathBuf>> {
    if !arg.is_dir() {
        // A missing file is reported by the load, naming it.
        return Ok(vec![arg.to_owned()]);
    }
    let mut files = Vec::new();
    for entry in std::fs::read_dir(arg)? {
        let path = entry?.path();
        if path.is_file() && is_rule_file(&path) {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// Loads any kind of rule file: the sandbox compiles components, the field
/// mapping translates Sigma rules' fields to event paths.
pub struct RuleLoader {
    pub sandbox: Sandbox,
    pub mapping: FieldMapping,
}

impl RuleLoader {
    pub fn new(sandbox: Sandbox, mapping: FieldMapping) -> RuleLoader {
        RuleLoader { sandbox, mapping }
    }

    /// Loads bytes as rule `id`, by the extension of `file`, which names
    /// them in messages: `.yml`/`.yaml` is a declarative rule, anything
    /// else a component.
    pub fn load_bytes(&self, id: RuleId, file: &Path, bytes: &[u8]) -> Result<LoadedRule, LoadError> {
        self.load_bytes_cancellable(id, file, bytes, &Cancel::never())
    }

    /// As [`RuleLoader::load_bytes`]; a component's compilation stops when
    /// `cancel` is cancelled ([`Sandbox::load_bytes_cancellable`]).
    pub fn load_bytes_cancellable(
        &self,
        id: RuleId,
        file: &Path,
        bytes: &[u8],
        cancel: &Cancel,
    ) -> Result<LoadedRule, LoadError> {
        if dac_detect::is_rule_file(file) {
            let budget = &self.sandbox.limits().declarative;
            declarative::load_bytes(id, file, bytes, &self.mapping, budget)
                .map(|rule| LoadedRule::Declarative(Box::new(rule)))
        } else {
            self.sandbox
                .load_bytes_cancellable(id, file, bytes, cancel)
                .map(|rule| LoadedRule::Component(Box::new(rule)))
        }
    }

    /// Loads a rule file; its identity is its path ([`RuleId::of_file`]).
    pub fn load_file(&self, file: &Path) -> Result<LoadedRule, LoadError> {
        let bytes = std::fs::read(file).map_err(|source| LoadError::Read { file: file.to_owned(), source })?;
        self.load_bytes(RuleId::of_file(file), file, &bytes)
    }

    /// Loads every rule named by `args`; the errors of those that failed
    /// come back alongside the rules that loaded, so the caller can report
    /// them all.
    pub fn load_all(&self, args: &[PathBuf]) -> (Vec<RuleComponent>, Vec<DeclarativeRule>, Vec<LoadError>) {
        let (mut components, mut declarative, mut errors) = (Vec::new(), Vec::new(), Vec::new());
        for arg in args {
            let files = match rule_files(arg) {
                Ok(files) => files,
                Err(source) => {
                    errors.push(LoadError::Read { file: arg.clone(), source });
                    continue;
                }
            };
            for file in files {
                match self.load_file(&file) {
                    Ok(LoadedRule::Component(rule)) => components.push(*rule),
                    Ok(LoadedRule::Declarative(rule)) => declarative.push(*rule),
                    Err(err) => errors.push(err),
                }
            }
        }
        (components, declarative, errors)
    }
}
