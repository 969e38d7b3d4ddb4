//! The layout's promises, checked: the engine embeds without an async
//! runtime, a database driver, HTTP, a command-line parser or a file
//! watcher, no crate's modules import each other in a circle, and the
//! deployment files in `deploy/` are valid.

use dac_tests::repo_root;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

/// What embedding the engine must not pull in (issue 13).
const NOT_IN_THE_ENGINE: [&str; 6] = ["tokio", "mongodb", "axum", "hyper", "clap", "notify"];

#[test]
fn the_engine_depends_on_no_runtime_driver_http_cli_or_watcher() {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let output = Command::new(cargo)
        .current_dir(repo_root())
        .args(["tree", "--offline", "-p", "dac-engine", "-e", "normal", "--prefix", "none", "--format", "{p}"])
        .output()
        .expect("run cargo tree");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let tree = String::from_utf8(output.stdout).unwrap();
    let crates: BTreeSet<&str> = tree.lines().filter_map(|line| line.split_whitespace().next()).collect();
    assert!(crates.contains("wasmtime"), "not the engine's tree: {tree}");
    let found: Vec<&str> = NOT_IN_THE_ENGINE.into_iter().filter(|name| crates.contains(name)).collect();
    assert!(found.is_empty(), "dac-engine depends on {found:?}:\n{tree}");
}

#[test]
fn no_crate_has_an_import_cycle_between_its_modules() {
    let mut cycles = Vec::new();
    for krate in ["event", "detect", "engine", "mongo", "serve", "investigate", "cli", "matcher", "rule-sdk", "probe"] {
        let src = repo_root().join(krate).join("src");
        let modules = modules(&src);
        let graph: BTreeMap<&str, BTreeSet<String>> =
            modules.iter().map(|(name, text)| (name.as_str(), imports(name, text, &modules))).collect();
        for cycle in strongly_connected(&graph).into_iter().filter(|component| component.len() > 1) {
            cycles.push(format!("{krate}: {}", cycle.join(" → ")));
        }
    }
    assert!(cycles.is_empty(), "modules that import each other:\n{}", cycles.join("\n"));
}

/// Every module of the crate at `src`, by path (`serve::api` is `api`,
/// the root is `crate`), with its text; binaries and tests are left out.
fn modules(src: &Path) -> BTreeMap<String, String> {
    let mut found = BTreeMap::new();
    let mut pending = vec![src.to_owned()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path: PathBuf = entry.unwrap().path();
            if path.is_dir() {
                if path.file_name().is_some_and(|name| name != "bin") {
                    pending.push(path);
                }
                continue;
            }
            if path.extension().is_none_or(|ext| ext != "rs") {
                continue;
            }
            let relative = path.strip_prefix(src).unwrap().with_extension("");
            let mut parts: Vec<String> = relative.iter().map(|p| p.to_string_lossy().into_owned()).collect();
            if matches!(parts.last().map(String::as_str), Some("mod" | "lib" | "main")) {
                parts.pop();
            }
            let name = if parts.is_empty() { "crate".to_owned() } else { parts.join("::") };
            found.insert(name, std::fs::read_to_string(&path).unwrap());
        }
    }
    found
}

/// The other modules `text` (module `name`) names through `crate::` or
/// `super::`, outside comments and its tests. The crate root is left out:
/// it declares the modules and re-exports their items.
fn imports(name: &str, text: &str, modules: &BTreeMap<String, String>) -> BTreeSet<String> {
    let code = text.split("#[cfg(test)]").next().unwrap_or_default();
    let parent = name.rsplit_once("::").map_or("crate", |(parent, _)| parent);
    let mut found = BTreeSet::new();
    for line in code.lines().map(str::trim_start).filter(|line| !line.starts_with("//")) {
        for (prefix, base) in [("crate::", None), ("super::", Some(parent))] {
            let mut rest = line;
            while let Some(at) = rest.find(prefix) {
                let boundary = at == 0 || !rest.as_bytes()[at - 1].is_ascii_alphanumeric();
                rest = &rest[at + prefix.len()..];
                if !boundary {
                    continue;
                }
                let segments: Vec<&str> = rest
                    .split("::")
                    .map(|s| s.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).next().unwrap_or(""))
                    .take_while(|s| !s.is_empty())
                    .collect();
                for len in (1..=segments.len()).rev() {
                    let path = segments[..len].join("::");
                    let path = match base {
                        Some(parent) if parent != "crate" => format!("{parent}::{path}"),
                        _ => path,
                    };
                    if modules.contains_key(&path) {
                        found.insert(path);
                        break;
                    }
                }
            }
        }
    }
    found.remove(name);
    found.remove("crate");
    found
}

/// Tarjan's strongly connected components of `graph`.
fn strongly_connected(graph: &BTreeMap<&str, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct State<'g> {
        graph: &'g BTreeMap<&'g str, BTreeSet<String>>,
        index: BTreeMap<String, usize>,
        low: BTreeMap<String, usize>,
        stack: Vec<String>,
        components: Vec<Vec<String>>,
    }
    fn visit(state: &mut State<'_>, node: &str) {
        let n = state.index.len();
        state.index.insert(node.to_owned(), n);
        state.low.insert(node.to_owned(), n);
        state.stack.push(node.to_owned());
        let next: Vec<String> = state.graph.get(node).into_iter().flatten().cloned().collect();
        for next in next {
            if !state.index.contains_key(&next) {
                visit(state, &next);
                let low = state.low[&next].min(state.low[node]);
                state.low.insert(node.to_owned(), low);
            } else if state.stack.contains(&next) {
                let low = state.index[&next].min(state.low[node]);
                state.low.insert(node.to_owned(), low);
            }
        }
        if state.low[node] == state.index[node] {
            let mut component = Vec::new();
            while let Some(top) = state.stack.pop() {
                let done = top == node;
                component.push(top);
                if done {
                    break;
                }
            }
            component.sort();
            state.components.push(component);
        }
    }
    let mut state =
        State { graph, index: BTreeMap::new(), low: BTreeMap::new(), stack: Vec::new(), components: Vec::new() };
    for node in graph.keys() {
        if !state.index.contains_key(*node) {
            visit(&mut state, node);
        }
    }
    state.components
}

/// The Kubernetes manifests validate against the API's schemas
/// (kubernetes-validate, strict: an unknown or misplaced field fails), the
/// systemd units pass `systemd-analyze verify` without a warning, and the
/// rules ConfigMap holds example-rules/yaml/shadow.yaml byte for byte.
/// The container image is not built here: no image registry is reachable
/// for its base images (docs/scale.md#deploying).
#[test]
fn the_deploy_files_validate() {
    const VALIDATOR: &str = "kubernetes-validate==1.37.0";
    let root = repo_root();
    let venv = root.join("target/kubernetes-validate-venv");
    let stamp = venv.join("dac-ready");
    if std::fs::read_to_string(&stamp).ok().as_deref() != Some(VALIDATOR) {
        let _ = std::fs::remove_dir_all(&venv);
        run(Command::new("python3").args(["-m", "venv"]).arg(&venv));
        run(Command::new(venv.join("bin/pip")).args(["install", "--quiet", VALIDATOR]));
        std::fs::write(&stamp, VALIDATOR).unwrap();
    }
    let manifests = root.join("deploy/kubernetes");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&manifests).unwrap().map(|entry| entry.unwrap().path()).collect();
    files.sort();
    assert!(files.len() >= 5, "{files:?}");
    let output = run(Command::new(venv.join("bin/kubernetes-validate"))
        .args(["--strict", "--kubernetes-version", "1.30.0"])
        .args(&files));
    let passed = output.lines().filter(|line| line.contains(" passed for resource ")).count();
    assert_eq!(passed, 6, "every resource passes:\n{output}");

    // The units as installed, their programs put where they point.
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    for program in ["dac", "dac-probe"] {
        std::os::unix::fs::symlink(dac_tests::dac(), bin.join(program)).unwrap();
    }
    let mut units = Vec::new();
    for unit in ["dac-probe.service", "dac-watch@.service"] {
        let text = std::fs::read_to_string(root.join("deploy/systemd").join(unit)).unwrap();
        assert!(text.contains("ExecStart=/usr/local/bin/"), "{unit}");
        let installed = dir.path().join(unit);
        std::fs::write(&installed, text.replace("/usr/local/bin/", &format!("{}/", bin.display()))).unwrap();
        units.push(installed);
    }
    let verify = Command::new("systemd-analyze").arg("verify").args(&units).output().expect("run systemd-analyze");
    let said = String::from_utf8_lossy(&verify.stderr);
    assert!(verify.status.success() && said.trim().is_empty(), "systemd-analyze verify:\n{said}");

    let rule = std::fs::read_to_string(root.join("example-rules/yaml/shadow.yaml")).unwrap();
    let indented: String = rule.lines().map(|line| format!("    {line}\n")).collect();
    let config_map = std::fs::read_to_string(manifests.join("rules-configmap.yaml")).unwrap();
    assert!(config_map.ends_with(&format!("  shadow.yaml: |\n{indented}")), "{config_map}");
}

/// Runs `command`, which must succeed; its stdout and stderr.
fn run(command: &mut Command) -> String {
    let output = command.output().unwrap_or_else(|err| panic!("{command:?}: {err}"));
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "{command:?}:\n{text}");
    text
}
