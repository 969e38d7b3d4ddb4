//! Compiled-code cache: restarts skip Cranelift, and a rule loaded twice
//! shares its code.
//!
//! A component is compiled once per (content hash, engine configuration)
//! and stored with `Component::serialize`; loading it back costs ~0.2 ms
//! instead of ~26 ms (Rust) or seconds (Python, JavaScript). While a loaded
//! component is in use, loading the same bytes on the same wasmtime engine
//! again returns it instead of mapping its code once more: a hundred
//! tenants running the same rule share one copy of its code.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, Weak};
use wasmtime::component::Component;

/// Per content hash: the engine each loaded component belongs to, and a
/// weak reference to it.
type InUse = HashMap<String, Vec<(wasmtime::Engine, Weak<Component>)>>;

#[derive(Debug, Clone)]
pub struct ComponentCache {
    dir: Option<PathBuf>,
    /// The components in use, by content hash: the engine each belongs to
    /// and a weak reference, so a component no rule uses any more is freed.
    in_use: Arc<Mutex<InUse>>,
    /// Compilations running, shared by every user of this cache (all of a
    /// server's tenants): at most one per core, as each already uses every
    /// core; the next waits. A burst of uploads then costs time, never
    /// threads and memory for all of them at once.
    compiling: Arc<(Mutex<usize>, Condvar)>,
    /// Bytes of compiled code the directory may hold; the least recently
    /// used entries are removed past it.
    max_bytes: u64,
}

/// Default for [`ComponentCache::with_max_bytes`]: 2 GiB.
pub const DEFAULT_CACHE_BYTES: u64 = 2 << 30;

impl ComponentCache {
    /// A cache in `dir`, created on first write; `None` disables caching on
    /// disk (components in use are still shared).
    pub fn new(dir: Option<PathBuf>) -> Self {
        ComponentCache { dir, in_use: Arc::default(), compiling: Arc::default(), max_bytes: DEFAULT_CACHE_BYTES }
    }

    /// The same cache, holding at most `max_bytes` of compiled code on disk.
    pub fn with_max_bytes(mut self, max_bytes: u64) -> Self {
        self.max_bytes = max_bytes;
        self
    }

    /// Removes the compiled code of `bytes`' hash for `engine` from disk,
    /// unless a loaded rule still uses it: a rule that was refused after
    /// compiling (over a tenant's rule count, a clashing uuid) leaves
    /// nothing behind.
    pub fn forget(&self, engine: &wasmtime::Engine, sha256_hex: &str) {
        let in_use = self.in_use().get(sha256_hex).is_some_and(|loaded| {
            loaded
                .iter()
                .any(|(owner, component)| wasmtime::Engine::same(owner, engine) && component.strong_count() > 0)
        });
        if in_use {
            return;
        }
        if let Some(path) = self.entry_path(engine, sha256_hex) {
            let _ = std::fs::remove_file(path);
        }
    }

    /// `$DAC_CACHE_DIR`, else `$XDG_CACHE_HOME/dac`, else `~/.cache/dac`.
    pub fn default_dir() -> Option<PathBuf> {
        if let Some(dir) = std::env::var_os("DAC_CACHE_DIR") {
            return Some(PathBuf::from(dir));
        }
        if let Some(dir) = std::env::var_os("XDG_CACHE_HOME") {
            return Some(PathBuf::from(dir).join("dac"));
        }
        std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache").join("dac"))
    }

    /// The compiled component for `bytes`: the one already in use on
    /// `engine`, else from the cache on disk, else freshly compiled (and then
    /// stored). Cache failures never fail a load; they only cost a
    /// compilation, and are logged.
    pub fn load(&self, engine: &wasmtime::Engine, bytes: &[u8], sha256_hex: &str) -> wasmtime::Result<Arc<Component>> {
        let in_use = |map: &mut InUse| {
            let loaded = map.get_mut(sha256_hex)?;
            loaded.retain(|(_, component)| component.strong_count() > 0);
            loaded.iter().find(|(owner, _)| wasmtime::Engine::same(owner, engine)).and_then(|(_, c)| c.upgrade())
        };
        if let Some(component) = in_use(&mut self.in_use()) {
            return Ok(component);
        }
        let component = Arc::new(self.load_compiled(engine, bytes, sha256_hex)?);
        let mut map = self.in_use();
        // Another thread may have loaded it meanwhile: share that one.
        if let Some(component) = in_use(&mut map) {
            return Ok(component);
        }
        map.retain(|_, loaded| {
            loaded.retain(|(_, component)| component.strong_count() > 0);
            !loaded.is_empty()
        });
        map.entry(sha256_hex.to_owned()).or_default().push((engine.clone(), Arc::downgrade(&component)));
        Ok(component)
    }

    fn in_use(&self) -> std::sync::MutexGuard<'_, InUse> {
        self.in_use.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn load_compiled(&self, engine: &wasmtime::Engine, bytes: &[u8], sha256_hex: &str) -> wasmtime::Result<Component> {
        let Some(path) = self.entry_path(engine, sha256_hex) else {
            return Component::new(engine, bytes);
        };
        if path.exists() {
            // SAFETY: files in the cache directory are written only by
            // `store` below from `Component::serialize` of this same engine
            // configuration; `deserialize_file` still checks the header and
            // the engine compatibility and fails cleanly otherwise.
            match unsafe { Component::deserialize_file(engine, &path) } {
                Ok(component) => {
                    // Used: the last to be evicted.
                    let _ = std::fs::File::options()
                        .append(true)
                        .open(&path)
                        .and_then(|file| file.set_modified(std::time::SystemTime::now()));
                    return Ok(component);
                }
                Err(err) => tracing::warn!(path = %path.display(), "ignoring unusable cache entry: {err}"),
            }
        }
        let component = self.compile(engine, bytes)?;
        if let Err(err) = store(&path, &component) {
            tracing::warn!(path = %path.display(), "could not write the compiled-code cache: {err}");
        }
        self.evict();
        Ok(component)
    }

    /// Compiles, waiting for a compilation slot first.
    fn compile(&self, engine: &wasmtime::Engine, bytes: &[u8]) -> wasmtime::Result<Component> {
        /// A compilation slot, given back when dropped: even if compiling
        /// panics, the next compilation is not kept waiting for ever.
        struct Slot<'a>(&'a (Mutex<usize>, Condvar));
        impl Drop for Slot<'_> {
            fn drop(&mut self) {
                let (running, freed) = self.0;
                *running.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) -= 1;
                freed.notify_one();
            }
        }
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let (running, freed) = &*self.compiling;
        {
            let mut running = running.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            while *running >= cores {
                running = freed.wait(running).unwrap_or_else(|poisoned| poisoned.into_inner());
            }
            *running += 1;
        }
        let _slot = Slot(&self.compiling);
        Component::new(engine, bytes)
    }

    /// Removes the least recently used entries until the directory holds at
    /// most `max_bytes` of compiled code.
    fn evict(&self) {
        let Some(dir) = &self.dir else { return };
        let Ok(entries) = std::fs::read_dir(dir) else { return };
        let mut files: Vec<(std::time::SystemTime, u64, PathBuf)> = entries
            .filter_map(Result::ok)
            .filter(|entry| entry.path().extension().is_some_and(|ext| ext == "cwasm"))
            .filter_map(|entry| {
                let meta = entry.metadata().ok()?;
                Some((meta.modified().ok()?, meta.len(), entry.path()))
            })
            .collect();
        let mut total: u64 = files.iter().map(|(_, len, _)| len).sum();
        if total <= self.max_bytes {
            return;
        }
        files.sort();
        for (_, len, path) in files {
            if total <= self.max_bytes {
                break;
            }
            match std::fs::remove_file(&path) {
                Ok(()) => {
                    total -= len;
                    tracing::info!(path = %path.display(), "removed from the compiled-code cache (over {} bytes)", self.max_bytes);
                }
                Err(err) => tracing::warn!(path = %path.display(), "could not remove a cache entry: {err}"),
            }
        }
    }

    fn entry_path(&self, engine: &wasmtime::Engine, sha256_hex: &str) -> Option<PathBuf> {
        let dir = self.dir.as_ref()?;
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        Some(dir.join(format!("{sha256_hex}-{:016x}.cwasm", hasher.finish())))
    }
}

/// Writes atomically, so a concurrent reader never sees half a file.
fn store(path: &Path, component: &Component) -> anyhow::Result<()> {
    let dir = path.parent().expect("cache entries live in a directory");
    std::fs::create_dir_all(dir)?;
    let serialized = component.serialize().map_err(|err| anyhow::anyhow!("{err}"))?;
    let mut file = tempfile::NamedTempFile::new_in(dir)?;
    std::io::Write::write_all(&mut file, &serialized)?;
    file.persist(path)?;
    Ok(())
}
