//! The bodies of dac's fuzz targets: each takes arbitrary bytes, runs one
//! parser that hostile input reaches (an event line, a rule file, a Sigma
//! condition, a tenants file, a component), and returns. Whatever the
//! bytes, a target must never panic, abort or run away: a refusal is an
//! `Err`, which they drop.
//!
//! Two callers share them: the libFuzzer binaries in `fuzz/`
//! (coverage-guided, `scripts/fuzz`), and the corpus replay in
//! `tests/tests/fuzz_corpus.rs`, which runs every committed input (and
//! seeded mutations of them) in the ordinary test build.

use dac_detect::{Budget, FieldMapping};
#[cfg(feature = "engine")]
use dac_engine::{ComponentCache, Engine, Limits, ReplaySource, RuleId, Sandbox, Source, Stats};
#[cfg(any(feature = "engine", feature = "serve"))]
use std::path::Path;

/// A fuzz target: arbitrary bytes in, nothing out.
pub type Target = fn(&[u8]);

/// The targets by name, as `fuzz/fuzz_targets/NAME.rs` and the corpus
/// directories `fuzz/corpus/NAME/` call them.
/// Those the features leave out are not built (see Cargo.toml).
pub const TARGETS: &[(&str, Target)] = &[
    #[cfg(feature = "engine")]
    ("event", event),
    ("rule", rule),
    ("condition", condition),
    #[cfg(feature = "serve")]
    ("tenants", tenants),
    #[cfg(feature = "engine")]
    ("component", component),
    #[cfg(feature = "engine")]
    ("state", state),
];

/// A replay file: NDJSON or a JSON array, each document read as an event
/// (Extended JSON included), as `dac run` and dry runs read them.
#[cfg(feature = "engine")]
pub fn event(data: &[u8]) {
    let mut source = ReplaySource::from_reader("fuzz", std::io::Cursor::new(data.to_vec()), None);
    // Every document read (or refused as malformed) to the end.
    while source.next_event().is_some() {}
    let _ = dac_event::Event::from_json_slice(data).map(|(event, _)| {
        let _ = event.get("process.parent.path");
        let _ = event.keys("");
        let _ = event.id();
    });
}

/// A rule file: seed YAML or Sigma, one or several documents, parsed and
/// compiled into a set; its correlations resolved and fed a few events.
pub fn rule(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(rules) = dac_detect::load_documents_within("fuzz.yml", text, &FieldMapping::default(), &Budget::default())
    else {
        return;
    };
    let names: Vec<dac_detect::RuleName<'_>> = rules
        .iter()
        .map(|r| dac_detect::RuleName { uuid: &r.metadata().uuid, name: r.metadata().sigma_name.as_deref() })
        .collect();
    let correlations = rules
        .iter()
        .enumerate()
        .filter_map(|(i, r)| {
            let correlation = r.correlation()?.clone();
            Some(dac_detect::CorrelationRule { rule: i, key: i.to_string(), correlation })
        })
        .collect();
    let (mut correlator, _) = dac_detect::Correlator::new(&names, correlations, Default::default());
    let all: Vec<usize> = (0..rules.len()).collect();
    let mut hits = Vec::new();
    for (n, host) in ["a", "b", "a", "a"].iter().enumerate() {
        let json = format!(r#"{{"hostname": "{host}", "user": "u", "path": "/usr/bin/id", "pid": {n}}}"#);
        let Ok((event, _)) = dac_detect::Event::from_json_slice(json.as_bytes()) else { continue };
        correlator.observe(&event, Some(n as i64 * 1000), &all, &mut hits);
    }
    let _ = dac_detect::RuleSet::compile(rules);
}

/// A Sigma condition over three searches.
pub fn condition(data: &[u8]) {
    let Ok(condition) = std::str::from_utf8(data) else { return };
    if condition.contains('\n') || condition.contains('\r') {
        return;
    }
    let text = format!(
        "title: t\nid: 00000000-0000-4000-8000-000000000000\n\
         logsource:\n  product: linux\n  category: process_creation\n\
         detection:\n  selection:\n    Image: /bin/sh\n  filter_a:\n    CommandLine|contains: x\n  \
         filter_b:\n    User: root\n  condition: {condition:?}\n"
    );
    rule(text.as_bytes());
}

/// A `dac serve` tenants file.
#[cfg(feature = "serve")]
pub fn tenants(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let _ = dac_serve::ServeConfig::parse(Path::new("tenants.toml"), text);
}

/// A component: a core module generated from the bytes (wasm-smith: valid,
/// arbitrary) added as one more core instance to a real rule component,
/// then loaded (shape check, compilation, instantiation under the memory
/// cap) and, if it loads, evaluated on one event. The rule component is
/// `DAC_FUZZ_COMPONENT`, else the example shadow rule's build output.
#[cfg(feature = "engine")]
pub fn component(data: &[u8]) {
    let Some(base) = base_component() else { return };
    let mut input = arbitrary::Unstructured::new(data);
    // Within what the sandbox accepts, so the compiler and the limits are
    // what gets exercised, not the feature checks.
    let config = wasm_smith::Config {
        max_memories: 1,
        memory64_enabled: false,
        threads_enabled: false,
        gc_enabled: false,
        exceptions_enabled: false,
        max_imports: 0,
        max_funcs: 50,
        max_instructions: 2_000,
        ..wasm_smith::Config::default()
    };
    let Ok(module) = wasm_smith::Module::new(config, &mut input) else { return };
    let bytes = with_core_instance(base, &module.to_bytes());
    let sandbox = sandbox();
    let Ok(rule) = sandbox.load_bytes(RuleId::new("fuzz"), Path::new("fuzz.wasm"), &bytes) else { return };
    let Ok(mut engine) = Engine::new(vec![rule]) else { return };
    let mut outcomes = Vec::new();
    let _ = engine.evaluate_json(
        br#"{"command_line":"/usr/bin/sudo cat /etc/shadow"}"#,
        &mut Stats::default(),
        &mut outcomes,
    );
}

/// A stored state, as a restart reads it back from the config collection,
/// where whoever may write to the database may have changed it: restored
/// into an engine running the example correlations and the sequence rule
/// (its keyed state), either refused with an error or taken. A state taken
/// saves again, and that restores to the same windows and keys. Also read as a
/// `dac serve` stream's bundle of tenants' states.
#[cfg(feature = "engine")]
pub fn state(data: &[u8]) {
    let _ = dac_engine::unbundle_states(data);
    let Some(mut engine) = state_engine() else { return };
    if engine.restore_state(data).is_err() {
        return;
    }
    let saved = engine.save_state().expect("a restored state saves").expect("the engine keeps state");
    let mut again = state_engine().expect("the engine loaded a moment ago");
    again.restore_state(&saved).expect("a state just saved restores");
    // The same windows and keys (the bytes may differ: a window's groups
    // are saved in their map's order).
    let held = |engine: &Engine| (engine.state_held(), engine.rule_state_stats().keys);
    assert_eq!(held(&again), held(&engine), "restoring changed the state");
}

/// The example correlations and, once built, the sequence rule's component
/// (compiled once into a cache of their own under `target/`).
#[cfg(feature = "engine")]
fn state_engine() -> Option<Engine> {
    static SANDBOX: std::sync::OnceLock<Option<Sandbox>> = std::sync::OnceLock::new();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let sandbox = SANDBOX
        .get_or_init(|| {
            Sandbox::new(Limits::default(), ComponentCache::new(Some(root.join("target/dac-fuzz-cache")))).ok()
        })
        .as_ref()?;
    let loader = dac_engine::RuleLoader::new(sandbox.with_limits(Limits::default())?, FieldMapping::default());
    let mut files = dac_engine::rule_files(&root.join("example-rules/correlation")).ok()?;
    let sequence = root.join("target/rule-components/download_chmod_exec.wasm");
    if sequence.is_file() {
        files.push(sequence);
    }
    let (components, declarative, _) = loader.load_all(&files);
    Engine::with_declarative(components, declarative).ok()
}

#[cfg(feature = "engine")]
fn base_component() -> Option<&'static [u8]> {
    static BASE: std::sync::OnceLock<Option<Vec<u8>>> = std::sync::OnceLock::new();
    BASE.get_or_init(|| {
        let path = std::env::var_os("DAC_FUZZ_COMPONENT")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/rule-components/shadow.wasm"));
        std::fs::read(path).ok()
    })
    .as_deref()
}

#[cfg(feature = "engine")]
fn sandbox() -> &'static Sandbox {
    static SANDBOX: std::sync::OnceLock<Sandbox> = std::sync::OnceLock::new();
    SANDBOX.get_or_init(|| {
        let limits = Limits { deadline: Some(std::time::Duration::from_millis(100)), ..Limits::default() };
        Sandbox::new(limits, ComponentCache::new(None)).expect("a sandbox with the default limits")
    })
}

/// `component` with `module` appended as one more core module, instantiated
/// without arguments (its imports are none: `max_imports = 0`).
pub fn with_core_instance(component: &[u8], module: &[u8]) -> Vec<u8> {
    fn leb(mut n: usize, out: &mut Vec<u8>) {
        loop {
            let byte = (n & 0x7f) as u8;
            n >>= 7;
            out.push(if n == 0 { byte } else { byte | 0x80 });
            if n == 0 {
                return;
            }
        }
    }
    let mut modules = 0;
    let mut at = 8;
    while at < component.len() {
        let id = component[at];
        at += 1;
        let (mut size, mut shift) = (0usize, 0);
        while let Some(&byte) = component.get(at) {
            at += 1;
            size |= usize::from(byte & 0x7f) << shift;
            shift += 7;
            if byte & 0x80 == 0 {
                break;
            }
        }
        modules += usize::from(id == 1);
        at += size;
    }
    let mut out = component.to_vec();
    out.push(1);
    leb(module.len(), &mut out);
    out.extend_from_slice(module);
    let mut instance = vec![1, 0];
    leb(modules, &mut instance);
    instance.push(0);
    out.push(2);
    leb(instance.len(), &mut out);
    out.extend_from_slice(&instance);
    out
}
