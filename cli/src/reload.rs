//! Hot reload: the rule files are watched, and what changed is compiled
//! off the hot path and handed to the engine as one
//! [`Change`](dac_engine::Change), swapped in between two documents.
//!
//! A [`RuleWatcher`] runs a thread that waits for file-system events (the
//! notify crate), lets a burst of them settle, then rescans the rule paths:
//! a new or changed rule file (by SHA-256) is loaded and checked there — a
//! `.wasm` component by the sandbox, a `.yml`/`.yaml` rule by `dac_detect`,
//! after which the thread also compiles the declarative rules into the set
//! the engine will run — and a vanished one is taken out. The result
//! travels as one [`Change`] over a channel; the pipeline asks for it
//! before each document ([`RuleChanges`]), so no document is skipped or
//! evaluated twice because of a reload. A file that fails to load is
//! reported and the version already running (if any) stays. A rule's
//! identity is its path.

use dac_engine::{
    rule_files, Change, DeclarativeRule, LoadError, LoadedRule, Precompiled, RuleChanges, RuleId, RuleLoader,
};
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
    updates: Receiver<Change>,
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

    /// Waits up to `timeout` for the next change.
    pub fn next_timeout(&self, timeout: Duration) -> Option<Change> {
        self.updates.recv_timeout(timeout).ok()
    }
}

impl RuleChanges for RuleWatcher {
    fn next_change(&mut self) -> Option<Change> {
        self.updates.try_recv().ok()
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
    updates: &Sender<Change>,
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
        match DeclarativeRule::load_file(file, &loader.mapping, &loader.sandbox.limits().declarative) {
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
        let change = rescan(loader, paths, &mut known, &mut broken, &mut declared);
        if !change.is_empty() && updates.send(change).is_err() {
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
) -> Change {
    let mut change = Change::new();
    let mut present = Vec::new();
    for path in paths {
        match rule_files(path) {
            Ok(files) => present.extend(files.into_iter().filter(|file| file.is_file())),
            Err(source) => {
                change.failed(RuleId::of_file(path), LoadError::Read { file: path.clone(), source });
            }
        }
    }
    let mut declarative_changed = false;
    for file in &present {
        let bytes = match std::fs::read(file) {
            Ok(bytes) => bytes,
            // Gone between listing and reading: the next event rescans.
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => continue,
            Err(source) => {
                change.failed(RuleId::of_file(file), LoadError::Read { file: file.clone(), source });
                continue;
            }
        };
        let sha256 = hex::encode(Sha256::digest(&bytes));
        if known.get(file) == Some(&sha256) || broken.get(file) == Some(&sha256) {
            continue;
        }
        match loader.load_bytes(RuleId::of_file(file), file, &bytes) {
            Ok(rule) => {
                broken.remove(file);
                known.insert(file.clone(), sha256);
                if let LoadedRule::Declarative(rule) = &rule {
                    declared.insert(file.clone(), (**rule).clone());
                    declarative_changed = true;
                }
                change.put(rule);
            }
            Err(err) => {
                broken.insert(file.clone(), sha256);
                change.failed(RuleId::of_file(file), err);
            }
        }
    }
    known.retain(|file, _| {
        let keep = present.contains(file);
        if !keep {
            change.remove(RuleId::of_file(file));
            declarative_changed |= declared.remove(file).is_some();
        }
        keep
    });
    broken.retain(|file, _| present.contains(file));
    if declarative_changed {
        let rules: Vec<DeclarativeRule> = declared.values().cloned().collect();
        // Rules that clash (one uuid in two files) do not compile together;
        // the engine then refuses one and compiles the rest itself.
        if let Ok(compiled) = Precompiled::compile(&rules) {
            change.precompiled(compiled);
        }
    }
    change
}
