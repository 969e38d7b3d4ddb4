//! Hot reload: the rule files are watched, and what changed is compiled
//! off the hot path and handed to the [`Engine`](crate::Engine), which
//! swaps it in between two documents.
//!
//! A [`RuleWatcher`] runs a thread that waits for file-system events (the
//! notify crate), lets a burst of them settle, then rescans the rule paths:
//! a new or changed rule file (by SHA-256) is loaded and checked there — a
//! `.wasm` component by the [`Sandbox`](crate::Sandbox), a `.yml`/`.yaml` rule by
//! `dac_detect`, after which the thread also compiles the declarative rules
//! into the set the engine will run — and a vanished one is reported as
//! removed. The result
//! travels as one [`Reload`] over a channel; the engine applies it with
//! [`Engine::apply_reload`](crate::Engine::apply_reload) whenever the
//! pipeline asks, which it does before each document, so no document is
//! skipped or evaluated twice because of a reload. A file that fails to
//! load is reported and the version already running (if any) stays.

use crate::declarative::{self, DeclarativeRule};
use crate::loader::{rule_files, LoadedRule, RuleLoader};
use crate::rule::RuleComponent;
use crate::sandbox::{hex, LoadError};
use dac_detect::RuleSet;
use notify::{RecursiveMode, Watcher};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::Duration;

/// How long the files must be quiet before a rescan: an editor's save or a
/// `cp` is several events, and a half-written file should not be loaded.
const SETTLE: Duration = Duration::from_millis(200);

/// What changed in the rule files since the last reload.
#[derive(Default)]
pub struct Reload {
    /// New files, and files whose content changed; they replace the rule
    /// loaded from the same path, if any.
    pub loaded: Vec<RuleComponent>,
    /// The same for declarative rules (`.yml`/`.yaml`).
    pub declarative: Vec<DeclarativeRule>,
    /// Every declarative rule the watcher knows after this reload, compiled
    /// into one set, when any changed and they compile together.
    pub compiled: Option<Precompiled>,
    /// Files that are gone.
    pub removed: Vec<PathBuf>,
    /// Files that changed but do not load; the previous version, if any,
    /// keeps running.
    pub failed: Vec<LoadError>,
}

/// A declarative rule set compiled off the hot path, and what it was
/// compiled from: (file, SHA-256) in file order. The engine uses it when
/// its own rules after the reload are exactly these.
pub struct Precompiled {
    pub rules: Vec<(PathBuf, String)>,
    pub set: RuleSet,
}

impl Reload {
    pub fn is_empty(&self) -> bool {
        self.loaded.is_empty() && self.declarative.is_empty() && self.removed.is_empty() && self.failed.is_empty()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error("cannot watch {path} for rule changes: {source}")]
    Notify {
        path: PathBuf,
        #[source]
        source: notify::Error,
    },
    #[error("cannot start the rule watcher thread: {0}")]
    Thread(std::io::Error),
}

/// Watches rule paths; dropping it stops the watching.
pub struct RuleWatcher {
    _watcher: notify::RecommendedWatcher,
    updates: Receiver<Reload>,
}

impl RuleWatcher {
    /// Watches `paths` (rule files or directories, as given to the
    /// loader). `loaded` lists the files already running and their
    /// SHA-256, so only real changes are reloaded.
    pub fn start(
        loader: Arc<RuleLoader>,
        paths: Vec<PathBuf>,
        loaded: impl IntoIterator<Item = (PathBuf, String)>,
    ) -> Result<RuleWatcher, WatchError> {
        let (events_tx, events_rx) = mpsc::channel::<()>();
        // One rescan at once: a file changed between the caller's load and
        // this watch is not missed.
        let _ = events_tx.send(());
        let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            // Errors too: a rescan finds out what is there.
            let relevant = event.map(|e| !e.kind.is_access()).unwrap_or(true);
            if relevant {
                let _ = events_tx.send(());
            }
        })
        .map_err(|source| WatchError::Notify { path: paths.first().cloned().unwrap_or_default(), source })?;
        for path in &paths {
            // A file is watched through its directory, so that replacing it
            // by a rename (what careful deploy tools do) is seen too.
            let watched = if path.is_dir() { path.as_path() } else { parent_dir(path) };
            watcher
                .watch(watched, RecursiveMode::NonRecursive)
                .map_err(|source| WatchError::Notify { path: watched.to_owned(), source })?;
        }
        let (updates_tx, updates) = mpsc::channel();
        let known: BTreeMap<PathBuf, String> = loaded.into_iter().collect();
        std::thread::Builder::new()
            .name("dac-rule-watcher".into())
            .spawn(move || watch_loop(&loader, &paths, known, &events_rx, &updates_tx))
            .map_err(WatchError::Thread)?;
        Ok(RuleWatcher { _watcher: watcher, updates })
    }

    /// The next reload waiting, if any; never blocks.
    pub fn try_next(&self) -> Option<Reload> {
        self.updates.try_recv().ok()
    }

    /// Waits up to `timeout` for the next reload.
    pub fn next_timeout(&self, timeout: Duration) -> Option<Reload> {
        self.updates.recv_timeout(timeout).ok()
    }
}

fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    }
}

fn watch_loop(
    loader: &RuleLoader,
    paths: &[PathBuf],
    mut known: BTreeMap<PathBuf, String>,
    events: &Receiver<()>,
    updates: &Sender<Reload>,
) {
    // Content that failed to load, so it is reported once, not per event.
    let mut broken: BTreeMap<PathBuf, String> = BTreeMap::new();
    // The declarative rules running, to compile the next set from. A file
    // that changed since the engine loaded it is forgotten, so the first
    // rescan reloads it.
    let mut declared: BTreeMap<PathBuf, DeclarativeRule> = BTreeMap::new();
    known.retain(|file, sha256| {
        if !dac_detect::is_rule_file(file) {
            return true;
        }
        match declarative::load_file(file, &loader.mapping) {
            Ok(rule) if rule.info.sha256 == *sha256 => {
                declared.insert(file.clone(), rule);
                true
            }
            _ => false,
        }
    });
    while events.recv().is_ok() {
        loop {
            match events.recv_timeout(SETTLE) {
                Ok(()) => continue,
                Err(RecvTimeoutError::Timeout) => break,
                Err(RecvTimeoutError::Disconnected) => return,
            }
        }
        let reload = rescan(loader, paths, &mut known, &mut broken, &mut declared);
        if !reload.is_empty() && updates.send(reload).is_err() {
            return; // The engine is gone.
        }
    }
}

fn rescan(
    loader: &RuleLoader,
    paths: &[PathBuf],
    known: &mut BTreeMap<PathBuf, String>,
    broken: &mut BTreeMap<PathBuf, String>,
    declared: &mut BTreeMap<PathBuf, DeclarativeRule>,
) -> Reload {
    let mut reload = Reload::default();
    let mut present = Vec::new();
    for path in paths {
        match rule_files(path) {
            Ok(files) => present.extend(files.into_iter().filter(|file| file.is_file())),
            Err(source) => reload.failed.push(LoadError::Read { file: path.clone(), source }),
        }
    }
    for file in &present {
        let bytes = match std::fs::read(file) {
            Ok(bytes) => bytes,
            // Gone between listing and reading: the next event rescans.
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => continue,
            Err(source) => {
                reload.failed.push(LoadError::Read { file: file.clone(), source });
                continue;
            }
        };
        let sha256 = hex(&Sha256::digest(&bytes));
        if known.get(file) == Some(&sha256) || broken.get(file) == Some(&sha256) {
            continue;
        }
        match loader.load_bytes(file, &bytes) {
            Ok(rule) => {
                broken.remove(file);
                known.insert(file.clone(), sha256);
                match rule {
                    LoadedRule::Component(rule) => reload.loaded.push(rule),
                    LoadedRule::Declarative(rule) => {
                        declared.insert(file.clone(), (*rule).clone());
                        reload.declarative.push(*rule);
                    }
                }
            }
            Err(err) => {
                broken.insert(file.clone(), sha256);
                reload.failed.push(err);
            }
        }
    }
    known.retain(|file, _| {
        let keep = present.contains(file);
        if !keep {
            reload.removed.push(file.clone());
        }
        keep
    });
    broken.retain(|file, _| present.contains(file));
    let removed_declarative = reload.removed.iter().filter(|file| declared.remove(*file).is_some()).count();
    if !reload.declarative.is_empty() || removed_declarative > 0 {
        let rules: Vec<DeclarativeRule> = declared.values().cloned().collect();
        // Rules that clash (one uuid in two files) do not compile together;
        // the engine then refuses one and compiles the rest itself.
        if let Ok(set) = declarative::compile(&rules) {
            let rules = rules.into_iter().map(|r| (r.info.file.clone(), r.info.sha256.clone())).collect();
            reload.compiled = Some(Precompiled { rules, set });
        }
    }
    reload
}
