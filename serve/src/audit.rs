//! The audit log: one JSON line per change, appended, never rewritten.
//!
//! Every attempt to change a tenant's rules is recorded — those refused
//! included, with the reason — before the API answers: who (a tenant id or
//! `admin`), what, the rule's content hash, when, and how it ended.
//!
//! An entry's sequence number is its line number in the file (from 1): the
//! log is only appended to, so a number never changes, and it is the
//! cursor the API pages with ([`AuditLog::page`]).

use serde::{Deserialize, Serialize};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// One audit record, as a line of `audit.jsonl`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// RFC 3339, UTC, milliseconds.
    pub time: String,
    /// `tenant:ID`, `admin`, or `dac` (the server itself: a quarantine).
    pub who: String,
    pub action: AuditAction,
    pub tenant: String,
    /// Empty (and left out) for a change of the tenants file.
    #[serde(skip_serializing_if = "String::is_empty", default)]
    pub rule: String,
    /// `sha256:…` of the uploaded (or deleted) content, when there was one.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub sha256: Option<String>,
    pub result: AuditResult,
    /// Why a change was refused.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub reason: Option<String>,
}

/// What an audit entry records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AuditAction {
    #[serde(rename = "rule.put")]
    RulePut,
    #[serde(rename = "rule.delete")]
    RuleDelete,
    #[serde(rename = "rule.disable")]
    RuleDisable,
    #[serde(rename = "rule.enable")]
    RuleEnable,
    #[serde(rename = "rule.quarantine")]
    RuleQuarantine,
    #[serde(rename = "tenant.add")]
    TenantAdd,
    #[serde(rename = "tenant.remove")]
    TenantRemove,
    #[serde(rename = "tenant.update")]
    TenantUpdate,
    /// A reload of the tenants file refused, or the server's own settings
    /// changed by one.
    #[serde(rename = "tenants.reload")]
    TenantsReload,
}

/// How an audited change ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuditResult {
    Created,
    Replaced,
    Deleted,
    Disabled,
    Enabled,
    /// A disable or enable of a rule already so.
    Unchanged,
    Refused,
    Quarantined,
    Added,
    Removed,
    Updated,
}

impl std::fmt::Display for AuditResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            AuditResult::Created => "created",
            AuditResult::Replaced => "replaced",
            AuditResult::Deleted => "deleted",
            AuditResult::Disabled => "disabled",
            AuditResult::Enabled => "enabled",
            AuditResult::Unchanged => "unchanged",
            AuditResult::Refused => "refused",
            AuditResult::Quarantined => "quarantined",
            AuditResult::Added => "added",
            AuditResult::Removed => "removed",
            AuditResult::Updated => "updated",
        })
    }
}

/// An entry and its sequence number (its line in the log, from 1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Numbered {
    pub seq: u64,
    #[serde(flatten)]
    pub entry: AuditEntry,
}

/// One page of the log.
#[derive(Debug, Serialize)]
pub struct Page {
    pub entries: Vec<Numbered>,
    /// What to pass as `after` for the following page; `None` when this
    /// page holds the last matching entry (to wait for newer ones, pass the
    /// last entry's `seq`).
    pub next: Option<u64>,
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
            .read(true)
            .open(file)
            .map_err(|source| AuditError { file: file.into(), source })?;
        // A last line torn by a crash is ended, so the next entry starts a
        // line of its own and the sequence numbers after it stay put.
        let torn = (|| -> std::io::Result<bool> {
            let mut last = [0u8; 1];
            let mut reader = &out;
            let len = reader.seek(std::io::SeekFrom::End(0))?;
            if len == 0 {
                return Ok(false);
            }
            reader.seek(std::io::SeekFrom::End(-1))?;
            reader.read_exact(&mut last)?;
            Ok(last[0] != b'\n')
        })();
        let ended = match torn {
            Ok(true) => (&out).write_all(b"\n").and_then(|()| out.sync_data()),
            Ok(false) => Ok(()),
            Err(err) => Err(err),
        };
        ended.map_err(|source| AuditError { file: file.into(), source })?;
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

impl AuditLog {
    /// At most `limit` entries after sequence number `after`, oldest first,
    /// only `tenant`'s when given. Lines that do not parse (a torn line
    /// after a crash) keep their number but are never returned.
    pub fn page(&self, after: u64, limit: usize, tenant: Option<&str>) -> Result<Page, AuditError> {
        let failed = |source| AuditError { file: self.file.clone(), source };
        // Only what was whole when the page was asked for is read: every
        // entry is written (and synced) under this lock in one write, so
        // the file's length then ends a line, and the writers need not wait
        // for the reading.
        let length = {
            let _writer = self.out.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            std::fs::metadata(&self.file).map_err(failed)?.len()
        };
        let file = File::open(&self.file).map_err(failed)?;
        let mut entries = Vec::new();
        let mut next = None;
        for (index, line) in BufReader::new(file.take(length)).split(b'\n').enumerate() {
            let line = line.map_err(failed)?;
            let seq = index as u64 + 1;
            if seq <= after {
                continue;
            }
            let Ok(entry) = serde_json::from_slice::<AuditEntry>(&line) else { continue };
            if tenant.is_some_and(|tenant| entry.tenant != tenant) {
                continue;
            }
            if entries.len() == limit {
                next = entries.last().map(|last: &Numbered| last.seq);
                break;
            }
            entries.push(Numbered { seq, entry });
        }
        Ok(Page { entries, next })
    }
}

pub(crate) fn now_rfc3339() -> String {
    // bson's DateTime is already linked (the MongoDB driver) and formats
    // RFC 3339 in UTC with milliseconds.
    let now = mongodb::bson::DateTime::now();
    now.try_to_rfc3339_string().unwrap_or_else(|_| now.timestamp_millis().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(tenant: &str, rule: &str) -> AuditEntry {
        AuditEntry {
            time: String::new(),
            who: format!("tenant:{tenant}"),
            action: AuditAction::RulePut,
            tenant: tenant.into(),
            rule: rule.into(),
            sha256: None,
            result: AuditResult::Created,
            reason: None,
        }
    }

    fn seqs(page: &Page) -> Vec<u64> {
        page.entries.iter().map(|numbered| numbered.seq).collect()
    }

    #[test]
    fn pages_are_numbered_by_line_filtered_by_tenant_and_survive_a_torn_line() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("audit.jsonl");
        let log = AuditLog::open(&file).unwrap();
        for (tenant, rule) in [("acme", "a"), ("globex", "b"), ("acme", "c"), ("acme", "d")] {
            log.record(entry(tenant, rule)).unwrap();
        }
        let page = log.page(0, 2, None).unwrap();
        assert_eq!((seqs(&page), page.next), (vec![1, 2], Some(2)));
        assert_eq!(page.entries[1].entry.rule, "b");
        let page = log.page(2, 2, None).unwrap();
        assert_eq!((seqs(&page), page.next), (vec![3, 4], None), "no entry after the page: no next");
        let page = log.page(0, 2, Some("acme")).unwrap();
        assert_eq!((seqs(&page), page.next), (vec![1, 3], Some(3)));
        let page = log.page(3, 2, Some("acme")).unwrap();
        assert_eq!((seqs(&page), page.next), (vec![4], None));
        assert_eq!(log.page(4, 10, None).unwrap().entries, []);
        assert_eq!(log.page(0, 10, Some("initech")).unwrap().entries, []);

        // A crash mid-line: reopened, the torn line keeps its number and the
        // next entry gets a line of its own.
        drop(log);
        let mut out = OpenOptions::new().append(true).open(&file).unwrap();
        out.write_all(b"{\"time\":\"2026").unwrap();
        let log = AuditLog::open(&file).unwrap();
        log.record(entry("acme", "e")).unwrap();
        let page = log.page(4, 10, None).unwrap();
        assert_eq!((seqs(&page), page.next), (vec![6], None));
        assert_eq!(page.entries[0].entry.rule, "e");
        assert_eq!(log.entries().unwrap().len(), 5);
    }
}
