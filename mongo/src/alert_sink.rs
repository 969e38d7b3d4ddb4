//! Alerts into a collection: plain alerts inserted in unordered batches,
//! deduplicated ones upserted; a re-sent alert is recognised by its `_id`.

use crate::connection::Connection;
use dac_engine::{Alert, Sink, SinkCounters, SinkError};
use mongodb::bson::{self, doc, Bson, Document};
use mongodb::error::{Error as DriverError, ErrorKind};
use mongodb::Collection;
use sha2::{Digest, Sha256};
use std::time::Duration;

/// MongoDB's duplicate-key error: the alert is already there.
const DUPLICATE_KEY: i32 = 11000;

/// Alerts into a collection, in unordered batches; re-sent alerts are
/// recognised by their `_id` and ignored.
pub struct MongoAlertSink {
    connection: Connection,
    collection: Collection<Document>,
    pending: Vec<Document>,
    /// Dedup alerts and repeats, in order: (alert id, event id, ts, alert).
    pending_dedup: Vec<(String, String, Option<Bson>, Document)>,
    max_batch: usize,
    counters: SinkCounters,
}

impl MongoAlertSink {
    pub fn new(connection: Connection, database: &str, collection: &str) -> MongoAlertSink {
        let collection = connection.client().database(database).collection(collection);
        MongoAlertSink {
            connection,
            collection,
            pending: Vec::new(),
            pending_dedup: Vec::new(),
            max_batch: 500,
            counters: SinkCounters::default(),
        }
    }
}

/// The alert `_id`: the same rule version on the same event always yields
/// the same id, so a re-evaluation after a crash cannot add a second alert.
pub fn alert_id(rule_uuid: &str, rule_version: &str, event_id: &str) -> String {
    let mut hash = Sha256::new();
    for part in [rule_uuid, rule_version, event_id] {
        hash.update(part.as_bytes());
        hash.update([0]);
    }
    hex::encode(&hash.finalize()[..16])
}

/// Event ids a dedup alert remembers (the newest), so that an event
/// evaluated again after a crash is not counted twice. Events are evaluated
/// again only back to the last checkpoint (at most a flush interval, 250 ms,
/// of the stream), so the count stays exact unless one alert takes more
/// repeats than this between two checkpoints.
const DEDUP_EVENTS_KEPT: i32 = 1000;

impl MongoAlertSink {
    /// Queues a dedup alert or a repeat of it: one upsert per match, which
    /// inserts the alert (`count` 1) for the first and folds the others
    /// into it (`count` + 1, `first_seen`/`last_seen` widened, the event id
    /// remembered). The filter skips an event already folded in, and the
    /// resulting duplicate-key error on the upsert means just that.
    fn queue_dedup(&mut self, alert: &Alert<'_>) -> Result<(), SinkError> {
        let Some(dedup) = &alert.dedup else { unreachable!("called for dedup alerts") };
        let document = self.encode(alert)?;
        let event_id = match &alert.event_id {
            Some(id) => id.clone(),
            None => serde_json::to_string(alert.offending_log)?,
        };
        let ts = document.get("ts").cloned();
        self.pending_dedup.push((dedup.id.clone(), event_id, ts, document));
        if self.pending_dedup.len() >= self.max_batch {
            self.flush()?;
        }
        Ok(())
    }

    fn encode(&self, alert: &Alert<'_>) -> Result<Document, SinkError> {
        let json = serde_json::to_value(alert)?;
        let Bson::Document(document) =
            Bson::try_from(json).map_err(|err| SinkError::Database(format!("encoding an alert as BSON: {err}")))?
        else {
            unreachable!("an alert serializes to an object");
        };
        Ok(document)
    }

    fn flush_dedup(&mut self) -> Result<(), SinkError> {
        for (id, event_id, ts, mut document) in std::mem::take(&mut self.pending_dedup) {
            document.insert("detected_at", bson::DateTime::now());
            fit_in_a_document(&mut document);
            let mut update = doc! {
                "$setOnInsert": document,
                "$inc": { "count": 1 },
                "$push": { "events": { "$each": [&event_id], "$slice": -DEDUP_EVENTS_KEPT } },
            };
            if let Some(ts) = ts {
                update.insert("$min", doc! { "first_seen": ts.clone() });
                update.insert("$max", doc! { "last_seen": ts });
            }
            let filter = doc! { "_id": &id, "events": { "$nin": [&event_id] } };
            let mut delay = Duration::from_millis(100);
            loop {
                let upsert = self.collection.update_one(filter.clone(), update.clone()).upsert(true);
                match self.connection.block_on(upsert) {
                    Ok(result) if result.upserted_id.is_some() => self.counters.written += 1,
                    Ok(_) => self.counters.folded += 1,
                    Err(error) if is_duplicate_key(&error) => self.counters.duplicates += 1,
                    Err(error) if delay < Duration::from_secs(30) => {
                        tracing::warn!(retry_in = ?delay, "writing a dedup alert failed: {error}");
                        std::thread::sleep(delay);
                        delay *= 2;
                        continue;
                    }
                    Err(error) => return Err(SinkError::Database(format!("writing dedup alert {id}: {error}"))),
                }
                break;
            }
        }
        Ok(())
    }
}

impl Sink for MongoAlertSink {
    fn fold(&mut self, alert: &Alert<'_>) -> Result<(), SinkError> {
        self.queue_dedup(alert)
    }

    fn send(&mut self, alert: &Alert<'_>) -> Result<(), SinkError> {
        if alert.dedup.is_some() {
            return self.queue_dedup(alert);
        }
        let json = serde_json::to_value(alert)?;
        let Bson::Document(mut document) =
            Bson::try_from(json).map_err(|err| SinkError::Database(format!("encoding an alert as BSON: {err}")))?
        else {
            unreachable!("an alert serializes to an object");
        };
        let id = match (&alert.correlation, &alert.event_id) {
            // Derived from the group and the window: a replay writes it again
            // under the same id.
            (Some(correlation), _) => correlation.id.clone(),
            (None, Some(event_id)) => alert_id(alert.uuid, alert.rule_version, event_id),
            (None, None) => alert_id(alert.uuid, alert.rule_version, &serde_json::to_string(alert.offending_log)?),
        };
        document.insert("_id", id);
        document.insert("detected_at", bson::DateTime::now());
        fit_in_a_document(&mut document);
        self.pending.push(document);
        if self.pending.len() >= self.max_batch {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), SinkError> {
        self.flush_dedup()?;
        if self.pending.is_empty() {
            return Ok(());
        }
        let mut delay = Duration::from_millis(100);
        loop {
            let insert = self.collection.insert_many(self.pending.iter()).ordered(false);
            match self.connection.block_on(insert) {
                Ok(result) => {
                    self.counters.written += result.inserted_ids.len() as u64;
                    break;
                }
                Err(error) => {
                    if let Some(duplicates) = only_duplicates(&error) {
                        self.counters.duplicates += duplicates;
                        self.counters.written += self.pending.len() as u64 - duplicates;
                        break;
                    }
                    if delay >= Duration::from_secs(30) {
                        return Err(SinkError::Database(format!("writing {} alerts: {error}", self.pending.len())));
                    }
                    tracing::warn!(retry_in = ?delay, "writing alerts failed: {error}");
                    std::thread::sleep(delay);
                    delay *= 2;
                }
            }
        }
        self.pending.clear();
        Ok(())
    }

    fn counters(&self) -> SinkCounters {
        self.counters.clone()
    }
}

/// MongoDB's limit on a document, less room for the insert command around it.
const MAX_ALERT_BYTES: usize = 16 * 1024 * 1024 - 16 * 1024;
/// What a long string is cut to when an alert would exceed the limit.
const TRUNCATED_STRING_BYTES: usize = 4096;

/// An alert on a huge event (a 15 MB command line, say) carries the event
/// and the matched values, and would exceed MongoDB's 16 MiB: the server
/// would refuse it on every retry and the watch could never get past that
/// event. Such an alert keeps every field, with long strings cut to 4 KiB
/// and `truncated: true`; the full event stays in its collection
/// (`event_id`).
fn fit_in_a_document(document: &mut Document) {
    let size = bson::to_vec(&*document).map_or(usize::MAX, |bytes| bytes.len());
    if size <= MAX_ALERT_BYTES {
        return;
    }
    for key in ["offending_log", "findings"] {
        if let Some(value) = document.get_mut(key) {
            truncate_strings(value);
        }
    }
    document.insert("truncated", true);
    tracing::warn!(
        alert = %document.get_str("_id").unwrap_or_default(),
        bytes = size,
        "alert larger than a MongoDB document: strings longer than {TRUNCATED_STRING_BYTES} bytes were cut"
    );
}

fn truncate_strings(value: &mut Bson) {
    match value {
        Bson::String(text) if text.len() > TRUNCATED_STRING_BYTES => {
            let mut end = TRUNCATED_STRING_BYTES;
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            let cut = text.len() - end;
            text.truncate(end);
            text.push_str(&format!("… [{cut} bytes cut]"));
        }
        Bson::Document(document) => document.iter_mut().for_each(|(_, value)| truncate_strings(value)),
        Bson::Array(values) => values.iter_mut().for_each(truncate_strings),
        _ => {}
    }
}

/// How many writes failed, when every failure is a duplicate key.
fn only_duplicates(error: &DriverError) -> Option<u64> {
    let ErrorKind::InsertMany(failure) = error.kind.as_ref() else { return None };
    if failure.write_concern_error.is_some() {
        return None;
    }
    let errors = failure.write_errors.as_ref()?;
    errors.iter().all(|e| e.code == DUPLICATE_KEY).then_some(errors.len() as u64)
}

/// A single write's duplicate-key error.
fn is_duplicate_key(error: &DriverError) -> bool {
    match error.kind.as_ref() {
        ErrorKind::Write(mongodb::error::WriteFailure::WriteError(write)) => write.code == DUPLICATE_KEY,
        ErrorKind::Command(command) => command.code == DUPLICATE_KEY,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alert_ids_are_stable_and_distinct() {
        let a = alert_id("5e3566a3-9f19-4ac7-8710-ec5fb09260ed", "1.0.0", "650cddcaf341f96a2006a05d");
        assert_eq!(a, alert_id("5e3566a3-9f19-4ac7-8710-ec5fb09260ed", "1.0.0", "650cddcaf341f96a2006a05d"));
        assert_eq!(a.len(), 32);
        assert_ne!(a, alert_id("5e3566a3-9f19-4ac7-8710-ec5fb09260ed", "1.0.1", "650cddcaf341f96a2006a05d"));
        assert_ne!(a, alert_id("5e3566a3-9f19-4ac7-8710-ec5fb09260ed", "1.0.0", "650cddcaf341f96a2006a05e"));
        // Parts cannot run into each other.
        assert_ne!(alert_id("a", "bc", "d"), alert_id("ab", "c", "d"));
    }

    #[test]
    fn an_alert_too_large_for_mongodb_keeps_its_fields_with_long_strings_cut() {
        let huge = "x".repeat(9 << 20) + " /etc/shadow";
        let mut alert = doc! {
            "_id": "a1",
            "rule_name": "Suspicious /etc/shadow Usage",
            "offending_log": { "command_line": &huge, "hostname": "pop-os", "pid": 4242 },
            "findings": [{ "matched": [{ "field": "command_line", "value": &huge }] }],
        };
        fit_in_a_document(&mut alert);
        assert!(bson::to_vec(&alert).unwrap().len() < 64 * 1024);
        assert_eq!(alert.get_bool("truncated"), Ok(true));
        let log = alert.get_document("offending_log").unwrap();
        assert_eq!(log.get_str("hostname"), Ok("pop-os"));
        assert_eq!(log.get_i32("pid"), Ok(4242));
        let cut = log.get_str("command_line").unwrap();
        assert!(
            cut.starts_with("xxxx") && cut.ends_with(&format!("[{} bytes cut]", huge.len() - 4096)),
            "{}",
            &cut[4000..]
        );

        let mut small = doc! { "_id": "a2", "offending_log": { "command_line": "cat /etc/shadow" } };
        let before = small.clone();
        fit_in_a_document(&mut small);
        assert_eq!(small, before, "an alert that fits is left alone");
    }
}
