//! The audit log: one JSON line per change, appended, never rewritten.
//!
//! Every attempt to change a tenant's rules is recorded — those refused
//! included, with the reason — before the API answers: who (a tenant id or
//! `admin`), what, the rule's content hash, when, and how it ended.

use serde::{Deserialize, Serialize};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// One audit record, as a line of `audit.jsonl`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// RFC 3339, UTC, milliseconds.
    pub time: String,
    /// `tenant:ID`, `admin`, or `dac` (the server itself: a quarantine).
    pub who: String,
    /// `rule.put`, `rule.delete`, `rule.disable`, `rule.enable` or
    /// `rule.quarantine`.
    pub action: String,
    pub tenant: String,
    pub rule: String,
    /// `sha256:…` of the uploaded (or deleted) content, when there was one.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub sha256: Option<String>,
    /// `created`, `replaced`, `deleted`, `disabled`, `enabled`, `unchanged`
    /// (a disable or enable of a rule already so), `refused` or
    /// `quarantined`.
    pub result: String,
    /// Why a change was refused.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub reason: Option<String>,
}

#[derive(Debug, thiserror::Error)]
#[error("audit log {file}: {source}")]
pub struct AuditError {
    file: PathBuf,
    #[source]
    source: std::io::Error,
}

pub struct AuditLog {
    file: PathBuf,
    out: Mutex<File>,
}

impl AuditLog {
    /// Opens (creating) `file` for appending.
    pub fn open(file: &Path) -> Result<AuditLog, AuditError> {
        let out = OpenOptions::new()
            .create(true)
            .append(true)
            .open(file)
            .map_err(|source| AuditError { file: file.into(), source })?;
        Ok(AuditLog { file: file.into(), out: Mutex::new(out) })
    }

    /// Appends one entry (stamped now) and syncs it to disk: a change the
    /// API reported must not be missing from the log after a crash.
    pub fn record(&self, mut entry: AuditEntry) -> Result<AuditEntry, AuditError> {
        entry.time = now_rfc3339();
        let mut line = serde_json::to_vec(&entry).expect("an audit entry serializes");
        line.push(b'\n');
        let mut out = self.out.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        // One write of the whole line on an O_APPEND file: lines never
        // interleave, even with another process appending.
        out.write_all(&line)
            .and_then(|()| out.sync_data())
            .map_err(|source| AuditError { file: self.file.clone(), source })?;
        Ok(entry)
    }

    /// Every entry, oldest first; a line that does not parse (a torn last
    /// line after a crash) is skipped.
    pub fn entries(&self) -> Result<Vec<AuditEntry>, AuditError> {
        let _writer = self.out.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let text =
            std::fs::read_to_string(&self.file).map_err(|source| AuditError { file: self.file.clone(), source })?;
        Ok(text.lines().filter_map(|line| serde_json::from_str(line).ok()).collect())
    }
}

pub(super) fn now_rfc3339() -> String {
    // bson's DateTime is already linked (the MongoDB driver) and formats
    // RFC 3339 in UTC with milliseconds.
    let now = mongodb::bson::DateTime::now();
    now.try_to_rfc3339_string().unwrap_or_else(|_| now.timestamp_millis().to_string())
}
