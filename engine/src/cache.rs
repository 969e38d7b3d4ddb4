//! Compiled-code cache: restarts skip Cranelift, and a rule loaded twice
//! shares its code.
//!
//! A component is compiled once per (content hash, engine configuration)
//! and stored with `Component::serialize`; loading it back costs ~0.2 ms
//! instead of ~26 ms (Rust) or seconds (Python, JavaScript). While a loaded
//! component is in use, loading the same bytes on the same wasmtime engine
//! again returns it instead of mapping its code once more: a hundred
//! tenants running the same rule share one copy of its code.

use crate::compiler::{Cancel, CompileError, Compiler, EngineSettings};
use crate::shape::CompileLimits;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, Weak};
use wasmtime::component::Component;

/// One component to compile: for which engine, under which limits.
pub(crate) struct CompileRequest<'a> {
    pub engine: &'a wasmtime::Engine,
    pub settings: &'a EngineSettings,
    pub limits: &'a CompileLimits,
    pub cancel: &'a Cancel,
}

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
    compiler: Compiler,
}

/// A child compiler's working directory in the cache directory.
const COMPILING_PREFIX: &str = ".compiling-";

/// Default for [`ComponentCache::with_max_bytes`]: 2 GiB.
pub const DEFAULT_CACHE_BYTES: u64 = 2 << 30;

impl ComponentCache {
    /// A cache in `dir`, created on first write; `None` disables caching on
    /// disk (components in use are still shared).
    pub fn new(dir: Option<PathBuf>) -> Self {
        ComponentCache {
            dir,
            in_use: Arc::default(),
            compiling: Arc::default(),
            max_bytes: DEFAULT_CACHE_BYTES,
            compiler: Compiler::InProcess,
        }
    }

    /// The same cache, holding at most `max_bytes` of compiled code on disk.
    pub fn with_max_bytes(mut self, max_bytes: u64) -> Self {
        self.max_bytes = max_bytes;
        self
    }

    /// The same cache, compiling with `compiler`.
    pub fn with_compiler(mut self, compiler: Compiler) -> Self {
        self.compiler = compiler;
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

    /// Removes what a child compiler killed with its server left in the
    /// directory (its `.compiling-*` working directories): for a server
    /// starting, before it compiles anything.
    pub fn remove_leftovers(&self) {
        let Some(dir) = &self.dir else { return };
        let Ok(entries) = std::fs::read_dir(dir) else { return };
        for entry in entries.filter_map(Result::ok) {
            if entry.file_name().to_string_lossy().starts_with(COMPILING_PREFIX) {
                if let Err(err) = std::fs::remove_dir_all(entry.path()) {
                    tracing::warn!(path = %entry.path().display(), "could not remove a compiler's leftovers: {err}");
                }
            }
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
    pub(crate) fn load(
        &self,
        request: &CompileRequest<'_>,
        bytes: &[u8],
        sha256_hex: &str,
    ) -> Result<Arc<Component>, CompileError> {
        let engine = request.engine;
        let in_use = |map: &mut InUse| {
            let loaded = map.get_mut(sha256_hex)?;
            loaded.retain(|(_, component)| component.strong_count() > 0);
            loaded.iter().find(|(owner, _)| wasmtime::Engine::same(owner, engine)).and_then(|(_, c)| c.upgrade())
        };
        if let Some(component) = in_use(&mut self.in_use()) {
            return Ok(component);
        }
        let component = Arc::new(self.load_compiled(request, bytes, sha256_hex)?);
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

    fn load_compiled(
        &self,
        request: &CompileRequest<'_>,
        bytes: &[u8],
        sha256_hex: &str,
    ) -> Result<Component, CompileError> {
        let engine = request.engine;
        let path = self.entry_path(engine, sha256_hex);
        if let Some(path) = path.as_ref().filter(|path| path.exists()) {
            // SAFETY: files in the cache directory are written only by this
            // cache, from `Component::serialize` or a child compiler's
            // `Engine::precompile_component` for this same engine
            // configuration; `deserialize_file` still checks the header and
            // the engine compatibility and fails cleanly otherwise.
            match unsafe { Component::deserialize_file(engine, path) } {
                Ok(component) => {
                    // Used: the last to be evicted.
                    let _ = std::fs::File::options()
                        .append(true)
                        .open(path)
                        .and_then(|file| file.set_modified(std::time::SystemTime::now()));
                    return Ok(component);
                }
                Err(err) => tracing::warn!(path = %path.display(), "ignoring unusable cache entry: {err}"),
            }
        }
        let _slot = self.compile_slot(request.cancel)?;
        let component = match &self.compiler {
            Compiler::InProcess => {
                let component =
                    Component::new(engine, bytes).map_err(|err| CompileError::Invalid(format!("{err:#}")))?;
                if let Some(path) = &path {
                    if let Err(err) = store(path, &component) {
                        tracing::warn!(path = %path.display(), "could not write the compiled-code cache: {err}");
                    }
                }
                component
            }
            Compiler::Child { program, args } => {
                self.compile_in_child(request, program, args, bytes, path.as_deref())?
            }
        };
        self.evict();
        Ok(component)
    }

    /// Compiles in a child process ([`Compiler::Child`]), in a directory of
    /// its own beside the cache's entries, and moves the result in.
    fn compile_in_child(
        &self,
        request: &CompileRequest<'_>,
        program: &Path,
        args: &[std::ffi::OsString],
        bytes: &[u8],
        path: Option<&Path>,
    ) -> Result<Component, CompileError> {
        let parent = match &self.dir {
            Some(dir) => std::fs::create_dir_all(dir).map(|()| dir.clone()),
            None => Ok(std::env::temp_dir()),
        };
        let work_dir = parent
            .and_then(|parent| tempfile::Builder::new().prefix(COMPILING_PREFIX).tempdir_in(parent))
            .map_err(|err| CompileError::Internal(format!("creating the compiler's directory: {err}")))?;
        let settings = serde_json::to_string(request.settings)
            .map_err(|err| CompileError::Internal(format!("encoding the compiler settings: {err}")))?;
        let budget = crate::compiler::Budget {
            max_cpu_ms: request.limits.max_cpu_ms,
            max_memory_bytes: request.limits.max_memory_bytes,
        };
        let output = crate::compiler::compile_with_child(
            program,
            args,
            &settings,
            bytes,
            work_dir.path(),
            &budget,
            request.cancel,
        )?;
        // SAFETY: `output` was just written by the child compiler from
        // `Engine::precompile_component` with this engine's settings; the
        // header and the engine compatibility are still checked.
        let component = unsafe { Component::deserialize_file(request.engine, &output) }
            .map_err(|err| CompileError::Internal(format!("loading the compiled code: {err:#}")))?;
        if let Some(path) = path {
            if let Err(err) = std::fs::rename(&output, path) {
                tracing::warn!(path = %path.display(), "could not write the compiled-code cache: {err}");
            }
        }
        Ok(component)
    }

    /// Waits for a compilation slot (unless cancelled meanwhile): given
    /// back when dropped, so even if compiling panics the next compilation
    /// is not kept waiting for ever.
    fn compile_slot(&self, cancel: &Cancel) -> Result<impl Drop + '_, CompileError> {
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
                if cancel.is_cancelled() {
                    return Err(CompileError::Cancelled);
                }
                let waited = freed.wait_timeout(running, std::time::Duration::from_millis(20));
                running = waited.unwrap_or_else(|poisoned| poisoned.into_inner()).0;
            }
            *running += 1;
        }
        Ok(Slot(&self.compiling))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_killed_compilers_leftovers_are_removed_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join(".compiling-abc123")).unwrap();
        std::fs::write(dir.path().join(".compiling-abc123/component.wasm"), b"\0asm").unwrap();
        std::fs::write(dir.path().join("0123-4567.cwasm"), b"code").unwrap();
        ComponentCache::new(Some(dir.path().to_owned())).remove_leftovers();
        let left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(left, ["0123-4567.cwasm"]);
    }
}
