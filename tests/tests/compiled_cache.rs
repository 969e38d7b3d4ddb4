//! The compiled-code cache: used when present, keyed by content, and never
//! a reason for a load to fail.

use dac_engine::{ComponentCache, Limits, Sandbox};
use dac_tests::example_rule;
use std::path::{Path, PathBuf};

fn cwasm_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| {
            entries.map(|e| e.unwrap().path()).filter(|p| p.extension().is_some_and(|x| x == "cwasm")).collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

fn sandbox(cache: &Path) -> Sandbox {
    Sandbox::new(Limits::default(), ComponentCache::new(Some(cache.to_owned()))).unwrap()
}

#[test]
fn a_loaded_component_is_cached_under_its_content_hash() {
    let cache = tempfile::tempdir().unwrap();
    let rule = sandbox(cache.path()).load_file(&example_rule("shadow")).unwrap();
    let files = cwasm_files(cache.path());
    assert_eq!(files.len(), 1);
    let name = files[0].file_name().unwrap().to_string_lossy().into_owned();
    assert!(name.starts_with(&rule.info().sha256), "{name} is not keyed by {}", rule.info().sha256);
    // Loading again neither recompiles into a new entry nor changes the rule.
    let again = sandbox(cache.path()).load_file(&example_rule("shadow")).unwrap();
    assert_eq!(cwasm_files(cache.path()), files);
    assert_eq!(again.info().uuid, rule.info().uuid);
}

#[test]
fn the_cached_code_is_what_runs() {
    // Put the compiled tmp-output-redir rule under shadow's key: if the
    // loader reads the cache, it now gets the other rule's metadata.
    let cache = tempfile::tempdir().unwrap();
    let shadow = sandbox(cache.path()).load_file(&example_rule("shadow")).unwrap();
    let shadow_entry = cwasm_files(cache.path()).remove(0);
    let other = tempfile::tempdir().unwrap();
    sandbox(other.path()).load_file(&example_rule("tmp-output-redir")).unwrap();
    std::fs::copy(cwasm_files(other.path()).remove(0), &shadow_entry).unwrap();

    let loaded = sandbox(cache.path()).load_file(&example_rule("shadow")).unwrap();
    assert_eq!(loaded.info().uuid, "f825ad39-d4b1-41da-91ec-6438d8dc9ace");
    assert_ne!(loaded.info().uuid, shadow.info().uuid);
}

#[test]
fn a_corrupt_cache_entry_is_replaced_not_fatal() {
    let cache = tempfile::tempdir().unwrap();
    sandbox(cache.path()).load_file(&example_rule("shadow")).unwrap();
    let entry = cwasm_files(cache.path()).remove(0);
    std::fs::write(&entry, b"not compiled code").unwrap();
    let loaded = sandbox(cache.path()).load_file(&example_rule("shadow")).unwrap();
    assert_eq!(loaded.info().uuid, "5e3566a3-9f19-4ac7-8710-ec5fb09260ed");
    assert_ne!(std::fs::read(&entry).unwrap(), b"not compiled code", "the entry was rewritten");
}

#[test]
fn an_unwritable_cache_only_costs_a_compilation() {
    let file = tempfile::NamedTempFile::new().unwrap();
    // A cache "directory" that is a file cannot be created or written.
    let loaded = sandbox(&file.path().join("cache")).load_file(&example_rule("shadow")).unwrap();
    assert_eq!(loaded.info().name, "Suspicious /etc/shadow Usage");
}

/// A rule loaded again on the same engine while the first copy lives shares
/// its code (the cache on disk is not read again); once no rule uses it,
/// it is freed, and the next load reads the disk. Another engine never
/// shares it. (Seen through a swapped cache entry, as above.)
#[test]
fn a_component_in_use_is_shared_on_its_engine_and_freed_after() {
    const SHADOW: &str = "5e3566a3-9f19-4ac7-8710-ec5fb09260ed";
    const TMP_OUTPUT_REDIR: &str = "f825ad39-d4b1-41da-91ec-6438d8dc9ace";
    let cache = tempfile::tempdir().unwrap();
    let shared = sandbox(cache.path());
    let first = shared.load_file(&example_rule("shadow")).unwrap();
    let other = tempfile::tempdir().unwrap();
    sandbox(other.path()).load_file(&example_rule("tmp-output-redir")).unwrap();
    std::fs::copy(cwasm_files(other.path()).remove(0), cwasm_files(cache.path()).remove(0)).unwrap();

    let again = shared.load_file(&example_rule("shadow")).unwrap();
    assert_eq!(again.info().uuid, SHADOW, "the code in use is shared, not read from disk");
    let elsewhere = sandbox(cache.path()).load_file(&example_rule("shadow")).unwrap();
    assert_eq!(elsewhere.info().uuid, TMP_OUTPUT_REDIR, "another engine reads its own code");
    drop((first, again));
    let later = shared.load_file(&example_rule("shadow")).unwrap();
    assert_eq!(later.info().uuid, TMP_OUTPUT_REDIR, "freed once unused: read from disk again");
}
