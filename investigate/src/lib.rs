//! `dac investigate`: from an alert back to what happened around it.
//!
//! Given an alert, the event collection is read for
//! - the **timeline**: every event of the same host within a window around
//!   the alerting event (±5 minutes by default), oldest first, the alerting
//!   event and the other alerted events marked;
//! - the **process tree**: the alerting process's ancestors, as far up as
//!   the data goes, and its descendants within the window, rendered like
//!   `ps -ef --forest`.
//!
//! # How a process's parent is found
//!
//! An event is one exec: (host, pid, parent_pid, ts). Pids are reused, and
//! an exec replaces a process's image in place (same pid, same parent), so
//! a pid alone does not name a process. For an exec `N` (pid `p`, parent
//! pid `q`) on a host, [`parent_of`] looks at the execs *before* `N` — by
//! `(ts, _id)`, so that equal timestamps still have an order:
//! - if the most recent earlier exec of pid `p` has the same parent pid
//!   `q`, `N` is the same process replacing its image: it is linked to that
//!   exec as an [`Link::Exec`] and rendered nested under it, marked
//!   `(exec)`;
//! - otherwise `N` is a new process (a fork, or a reused pid), and its
//!   parent is the most recent exec of pid `q` at or before `N`
//!   ([`Link::Child`]). Children therefore hang under the image their
//!   parent was running when they started.
//!
//! A reused pid under the *same* parent (a pid wrap-around between two
//! children of one process) would be read as an exec: telling the two apart
//! needs fork events, which the probe does not record.
//!
//! The tree shows the ancestor chain down to the alerting exec (not the
//! ancestors' other children), then everything that descends from the
//! alerting exec within the window.
//!
//! # Time
//!
//! The probe and the seed write `ts` as milliseconds since the Unix epoch
//! (an integer); events written with a BSON date work too. The window
//! query uses the type of the alerting event's `ts`, so the events of one
//! host must use one type (as each writer does).
//!
//! # Indexes
//!
//! The queries are (hostname, ts range) for the timeline and (hostname,
//! pid, latest ts before) for each ancestor; [`ensure_indexes`] creates
//! `{hostname: 1, ts: 1}` and `{hostname: 1, pid: 1, ts: 1}` on the event
//! collection (the second is the (hostname, pid) index, with ts so that
//! "the latest exec of this pid before t" is one index seek) and
//! `{event_id: 1}` on the alert collection (the other alerts in the
//! window). Creating an index that exists is a no-op. An ancestor whose
//! pid has an earlier exec in the window needs no query at all: the window
//! is read from its start, so that exec is the latest.

use dac_mongo::Connection;
use futures_util::TryStreamExt;
use mongodb::bson::{doc, Bson, Document};
use mongodb::options::IndexOptions;
use mongodb::{Collection, IndexModel};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

/// Ancestor hops followed at most (a guard; real chains are short).
const MAX_DEPTH: usize = 128;
/// Alerts looked up per `$in` query.
const IN_CHUNK: usize = 1000;

#[derive(Debug, thiserror::Error)]
pub enum InvestigateError {
    #[error("no alert with _id {id:?} in {collection}{hint}; list recent ones with `dac investigate --last 10`")]
    UnknownAlert { id: String, collection: String, hint: String },
    #[error("alert {id} in {collection} has no {what}: it was not written by dac, or its event was cut")]
    BadAlert { id: String, collection: String, what: String },
    #[error("no alerts in {collection}{filter}")]
    NoAlerts { collection: String, filter: String },
    #[error("{action} ({collection}): {source}")]
    Database {
        action: &'static str,
        collection: String,
        #[source]
        source: Box<mongodb::error::Error>,
    },
}

impl InvestigateError {
    fn driver_error(&self) -> Option<&mongodb::error::Error> {
        match self {
            InvestigateError::Database { source, .. } => Some(source),
            _ => None,
        }
    }

    /// The server could not be reached (no server selected in time).
    pub fn is_unreachable(&self) -> bool {
        self.driver_error()
            .is_some_and(|err| matches!(err.kind.as_ref(), mongodb::error::ErrorKind::ServerSelection { .. }))
    }

    /// The user may not do this (MongoDB's Unauthorized, code 13).
    pub fn is_unauthorized(&self) -> bool {
        self.driver_error().is_some_and(
            |err| matches!(err.kind.as_ref(), mongodb::error::ErrorKind::Command(command) if command.code == 13),
        )
    }
}

/// Where the events and the alerts are.
#[derive(Debug, Clone)]
pub struct Target {
    pub database: String,
    pub events: String,
    pub alerts: String,
}

impl Target {
    fn events_name(&self) -> String {
        format!("{}.{}", self.database, self.events)
    }
    fn alerts_name(&self) -> String {
        format!("{}.{}", self.database, self.alerts)
    }
}

/// The indexes [`ensure_indexes`] creates: (collection, name, keys).
pub fn index_specs(target: &Target) -> Vec<(String, &'static str, Document)> {
    vec![
        (target.events.clone(), "dac_hostname_ts", doc! { "hostname": 1, "ts": 1 }),
        (target.events.clone(), "dac_hostname_pid_ts", doc! { "hostname": 1, "pid": 1, "ts": 1 }),
        (target.alerts.clone(), "dac_event_id", doc! { "event_id": 1 }),
    ]
}

/// Creates the investigation's indexes (see the module doc); idempotent.
/// Returns `collection.name` of each.
pub fn ensure_indexes(connection: &Connection, target: &Target) -> Result<Vec<String>, InvestigateError> {
    let database = connection.client().database(&target.database);
    let mut created = Vec::new();
    for (collection, name, keys) in index_specs(target) {
        let model =
            IndexModel::builder().keys(keys).options(IndexOptions::builder().name(name.to_owned()).build()).build();
        connection.block_on(database.collection::<Document>(&collection).create_index(model)).map_err(|source| {
            InvestigateError::Database {
                action: "creating an index",
                collection: format!("{}.{collection}", target.database),
                source: Box::new(source),
            }
        })?;
        created.push(format!("{}.{collection} {name}", target.database));
    }
    Ok(created)
}

/// The type the events' `ts` is stored as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TsKind {
    /// A number: milliseconds since the Unix epoch (the probe, the seed).
    Millis,
    /// A BSON date.
    Date,
}

impl TsKind {
    fn bson(self, millis: i64) -> Bson {
        match self {
            TsKind::Millis => Bson::Int64(millis),
            TsKind::Date => Bson::DateTime(mongodb::bson::DateTime::from_millis(millis)),
        }
    }
}

/// `ts` in milliseconds, and how it was stored.
pub fn ts_of(value: &Bson) -> Option<(i64, TsKind)> {
    match value {
        Bson::Int64(n) => Some((*n, TsKind::Millis)),
        Bson::Int32(n) => Some((i64::from(*n), TsKind::Millis)),
        Bson::Double(f) if f.is_finite() => Some((*f as i64, TsKind::Millis)),
        Bson::DateTime(date) => Some((date.timestamp_millis(), TsKind::Date)),
        _ => None,
    }
}

fn integer(value: Option<&Bson>) -> Option<i64> {
    match value? {
        Bson::Int64(n) => Some(*n),
        Bson::Int32(n) => Some(i64::from(*n)),
        Bson::Double(f) if f.fract() == 0.0 => Some(*f as i64),
        _ => None,
    }
}

/// One exec, the fields the investigation shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Exec {
    /// The event's `_id` as text (an ObjectId's hex digits).
    pub event_id: String,
    /// Milliseconds since the Unix epoch.
    pub ts: i64,
    pub pid: Option<i64>,
    pub parent_pid: Option<i64>,
    /// `user`, else the `uid` as text.
    pub user: Option<String>,
    /// `command_line`, else `path`, else `binary`.
    pub command_line: String,
}

impl Exec {
    /// `None` for a document without a usable `ts`.
    pub fn from_document(document: &Document) -> Option<Exec> {
        let (ts, _) = ts_of(document.get("ts")?)?;
        let event_id = match document.get("_id") {
            Some(Bson::ObjectId(id)) => id.to_hex(),
            Some(Bson::String(text)) => text.clone(),
            Some(other) => other.to_string(),
            None => String::new(),
        };
        let user = document
            .get_str("user")
            .ok()
            .map(str::to_owned)
            .or_else(|| integer(document.get("uid")).map(|uid| uid.to_string()));
        let command_line = ["command_line", "path", "binary"]
            .iter()
            .find_map(|key| document.get_str(key).ok().filter(|text| !text.is_empty()))
            .unwrap_or("?")
            .to_owned();
        Some(Exec {
            event_id,
            ts,
            pid: integer(document.get("pid")),
            parent_pid: integer(document.get("parent_pid")),
            user,
            command_line,
        })
    }

    /// The order of execs on a host: time, then `_id`.
    fn key(&self) -> (i64, &str) {
        (self.ts, &self.event_id)
    }
}

/// How an exec hangs under its parent in the tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Link {
    /// The top of what the data shows.
    Root,
    /// A new process started by the parent exec's process.
    Child,
    /// The same process (same pid and parent) replacing its image.
    Exec,
}

/// The latest exec of `pid` strictly before `before` (by time, then id).
fn latest_before(execs: &[Exec], by_pid: &HashMap<i64, Vec<usize>>, pid: i64, before: &Exec) -> Option<usize> {
    by_pid
        .get(&pid)?
        .iter()
        .copied()
        .filter(|&i| execs[i].key() < before.key())
        .max_by(|&a, &b| execs[a].key().cmp(&execs[b].key()))
}

fn index_by_pid(execs: &[Exec]) -> HashMap<i64, Vec<usize>> {
    let mut by_pid: HashMap<i64, Vec<usize>> = HashMap::new();
    for (i, exec) in execs.iter().enumerate() {
        if let Some(pid) = exec.pid {
            by_pid.entry(pid).or_default().push(i);
        }
    }
    by_pid
}

/// The exec `execs[node]` descends from, among `execs` (one host's), and
/// how (see the module doc). Exact when `execs` holds, for the node's pid
/// and parent pid, the latest exec before it.
pub fn parent_of(execs: &[Exec], node: usize) -> Option<(usize, Link)> {
    parent_with(execs, &index_by_pid(execs), node)
}

fn parent_with(execs: &[Exec], by_pid: &HashMap<i64, Vec<usize>>, node: usize) -> Option<(usize, Link)> {
    let exec = &execs[node];
    let pid = exec.pid?;
    if let Some(earlier) = latest_before(execs, by_pid, pid, exec) {
        if execs[earlier].parent_pid == exec.parent_pid {
            return Some((earlier, Link::Exec));
        }
    }
    let parent_pid = exec.parent_pid.filter(|&ppid| ppid != pid)?;
    latest_before(execs, by_pid, parent_pid, exec).map(|parent| (parent, Link::Child))
}

/// One row of the process tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreeRow {
    /// Index into the execs the tree was built from.
    pub exec: usize,
    pub depth: usize,
    pub link: Link,
}

/// The ancestors of `execs[focus]` (root first), the focus, then its
/// descendants depth first (children by time), as rows with depths.
pub fn process_tree(execs: &[Exec], focus: usize) -> Vec<TreeRow> {
    let by_pid = index_by_pid(execs);
    let parents: Vec<Option<(usize, Link)>> = (0..execs.len()).map(|i| parent_with(execs, &by_pid, i)).collect();
    let mut chain = vec![(focus, Link::Root)];
    let mut current = focus;
    // Links point strictly back in (ts, _id) order, so this ends; the
    // bound is a guard against absurd data.
    while let Some((parent, link)) = parents[current] {
        if chain.len() > MAX_DEPTH {
            break;
        }
        chain.last_mut().expect("not empty").1 = link;
        chain.push((parent, Link::Root));
        current = parent;
    }
    chain.reverse();
    let mut children: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for (child, parent) in parents.iter().enumerate() {
        if let Some((parent, _)) = parent {
            children.entry(*parent).or_default().push(child);
        }
    }
    for list in children.values_mut() {
        list.sort_by(|&a, &b| execs[a].key().cmp(&execs[b].key()));
    }
    let mut rows: Vec<TreeRow> =
        chain.iter().enumerate().map(|(depth, &(exec, link))| TreeRow { exec, depth, link }).collect();
    let mut stack: Vec<(usize, usize)> = Vec::new();
    let focus_depth = rows.len() - 1;
    let push_children = |stack: &mut Vec<(usize, usize)>, node: usize, depth: usize| {
        if let Some(list) = children.get(&node) {
            stack.extend(list.iter().rev().map(|&child| (child, depth)));
        }
    };
    push_children(&mut stack, focus, focus_depth + 1);
    while let Some((node, depth)) = stack.pop() {
        rows.push(TreeRow { exec: node, depth, link: parents[node].map_or(Link::Root, |(_, link)| link) });
        push_children(&mut stack, node, depth + 1);
    }
    rows
}

/// An alert, as the investigation names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AlertRef {
    #[serde(rename = "_id")]
    pub id: String,
    pub rule_name: String,
    pub uuid: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub severity: Option<String>,
    pub event_id: String,
}

impl AlertRef {
    fn from_document(document: &Document) -> AlertRef {
        let text = |key: &str| document.get_str(key).unwrap_or_default().to_owned();
        AlertRef {
            id: match document.get("_id") {
                Some(Bson::String(id)) => id.clone(),
                Some(other) => other.to_string(),
                None => String::new(),
            },
            rule_name: text("rule_name"),
            uuid: text("uuid"),
            severity: document.get_str("severity").ok().map(str::to_owned),
            event_id: text("event_id"),
        }
    }
}

/// What `dac investigate` found for one alert.
#[derive(Debug, Clone)]
pub struct Investigation {
    pub alert: AlertRef,
    pub host: String,
    /// Milliseconds either side of the alerting event.
    pub window_ms: i64,
    /// Every exec read: the window's, then ancestors from before it.
    pub execs: Vec<Exec>,
    /// The alerting exec, in `execs`.
    pub focus: usize,
    /// How many of `execs` (from the start) are the timeline.
    pub timeline_len: usize,
    /// The window held more events than were read.
    pub truncated: bool,
    /// Alerts on the execs read, by event id (the investigated one too).
    pub alerts: HashMap<String, Vec<AlertRef>>,
    /// For a correlation's alert: the events of its window, in its order.
    pub evidence: Vec<Evidence>,
}

/// One event a correlation alert names as its evidence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Evidence {
    pub event_id: String,
    /// The rule that matched it, as the correlation names it.
    pub rule: String,
    /// The event as read from the collection (`None`: not there any more).
    pub exec: Option<Exec>,
    pub host: Option<String>,
}

/// Options of one investigation.
#[derive(Debug, Clone, Copy)]
pub struct Query {
    /// Milliseconds either side of the alerting event.
    pub window_ms: i64,
    /// Events of the window read at most.
    pub max_events: usize,
}

/// Reads what it takes to investigate the alert with `_id` `id`.
pub fn investigate_id(
    connection: &Connection,
    target: &Target,
    id: &str,
    query: Query,
) -> Result<Investigation, InvestigateError> {
    let database = connection.client().database(&target.database);
    let alerts: Collection<Document> = database.collection(&target.alerts);
    let found =
        connection.block_on(alerts.find_one(doc! { "_id": id })).map_err(|source| InvestigateError::Database {
            action: "reading the alert",
            collection: target.alerts_name(),
            source: Box::new(source),
        })?;
    let Some(alert) = found else {
        return Err(InvestigateError::UnknownAlert {
            id: id.to_owned(),
            collection: target.alerts_name(),
            hint: unknown_id_hint(connection, &alerts, id),
        });
    };
    investigate(connection, target, &alert, query)
}

fn unknown_id_hint(connection: &Connection, alerts: &Collection<Document>, id: &str) -> String {
    let by_event = connection.block_on(alerts.find_one(doc! { "event_id": id })).ok().flatten();
    if let Some(alert) = by_event {
        let alert = AlertRef::from_document(&alert);
        return format!(" ({id} is the event of alert {}, {:?})", alert.id, alert.rule_name);
    }
    let hex = id.strip_prefix("dedup-").unwrap_or(id);
    if hex.len() != 32 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return " (dac's alert ids are 32 hex digits, `dedup-` first for a deduplicated alert)".into();
    }
    String::new()
}

/// The newest `count` alerts (by `detected_at`), optionally of one rule
/// (its name or uuid) or host.
pub fn latest_alerts(
    connection: &Connection,
    target: &Target,
    count: usize,
    rule: Option<&str>,
    host: Option<&str>,
) -> Result<Vec<Document>, InvestigateError> {
    let mut filter = Document::new();
    if let Some(rule) = rule {
        let is_uuid = rule.len() == 36 && rule.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-');
        filter.insert(if is_uuid { "uuid" } else { "rule_name" }, rule);
    }
    if let Some(host) = host {
        filter.insert("offending_log.hostname", host);
    }
    let alerts: Collection<Document> = connection.client().database(&target.database).collection(&target.alerts);
    let find = alerts.find(filter).sort(doc! { "detected_at": -1, "_id": 1 }).limit(count as i64);
    let found: Vec<Document> = connection.block_on(async { find.await?.try_collect().await }).map_err(|source| {
        InvestigateError::Database {
            action: "listing alerts",
            collection: target.alerts_name(),
            source: Box::new(source),
        }
    })?;
    if found.is_empty() {
        let mut said = Vec::new();
        said.extend(rule.map(|rule| format!("rule {rule:?}")));
        said.extend(host.map(|host| format!("host {host:?}")));
        let filter = if said.is_empty() { String::new() } else { format!(" for {}", said.join(" and ")) };
        return Err(InvestigateError::NoAlerts { collection: target.alerts_name(), filter });
    }
    Ok(found)
}

/// Reads the timeline, the ancestors and the alerts around `alert` (an
/// alert document).
pub fn investigate(
    connection: &Connection,
    target: &Target,
    alert: &Document,
    query: Query,
) -> Result<Investigation, InvestigateError> {
    let reference = AlertRef::from_document(alert);
    let bad = |what: &str| InvestigateError::BadAlert {
        id: reference.id.clone(),
        collection: target.alerts_name(),
        what: what.to_owned(),
    };
    let event = alert.get_document("offending_log").map_err(|_| bad("offending_log (its event)"))?;
    let host = event.get_str("hostname").map_err(|_| bad("offending_log.hostname"))?.to_owned();
    let (ts, kind) = event.get("ts").and_then(ts_of).ok_or_else(|| bad("offending_log.ts (a number or a date)"))?;
    let focus_exec = Exec::from_document(event).ok_or_else(|| bad("offending_log.ts"))?;

    let database = connection.client().database(&target.database);
    let events: Collection<Document> = database.collection(&target.events);
    let db_error = |action: &'static str, collection: String| {
        move |source: mongodb::error::Error| InvestigateError::Database { action, collection, source: Box::new(source) }
    };

    // The timeline.
    let started = std::time::Instant::now();
    let window = doc! {
        "hostname": &host,
        "ts": { "$gte": kind.bson(ts.saturating_sub(query.window_ms)), "$lte": kind.bson(ts.saturating_add(query.window_ms)) },
    };
    let find = events.find(window).sort(doc! { "ts": 1 }).limit(query.max_events as i64 + 1);
    let documents: Vec<Document> = connection
        .block_on(async { find.await?.try_collect().await })
        .map_err(db_error("reading the timeline", target.events_name()))?;
    let truncated = documents.len() > query.max_events;
    let mut execs: Vec<Exec> = documents.iter().take(query.max_events).filter_map(Exec::from_document).collect();
    execs.sort_by(|a, b| a.key().cmp(&b.key()));
    let focus = match execs.iter().position(|exec| exec.event_id == focus_exec.event_id) {
        Some(focus) => focus,
        None => {
            // Not in the collection (deleted, or another collection), or
            // past a truncated window: the alert's copy stands in.
            let at = execs.partition_point(|exec| exec.key() < focus_exec.key());
            execs.insert(at, focus_exec.clone());
            at
        }
    };
    let timeline_len = execs.len();

    tracing::debug!(events = timeline_len, truncated, ms = started.elapsed().as_millis() as u64, "timeline read");
    let started = std::time::Instant::now();
    let mut queries = 0;
    // The ancestors: for each exec up the chain, the latest earlier exec of
    // its pid and of its parent's pid — all `parent_of` needs.
    let mut current = focus;
    for _ in 0..MAX_DEPTH {
        let exec = execs[current].clone();
        let Some(pid) = exec.pid else { break };
        for wanted in [Some(pid), exec.parent_pid.filter(|&ppid| ppid != pid)].into_iter().flatten() {
            // The window is read from its start, in time order: an earlier
            // exec of the pid read with it is the latest one overall.
            let read_up_to = if truncated { execs[..timeline_len].last().map_or(i64::MIN, |e| e.ts) } else { i64::MAX };
            let in_window = exec.ts <= read_up_to
                && execs[..timeline_len].iter().any(|known| known.pid == Some(wanted) && known.key() < exec.key());
            if in_window {
                continue;
            }
            let find = events
                .find(doc! { "hostname": &host, "pid": wanted, "ts": { "$lte": kind.bson(exec.ts) } })
                .sort(doc! { "ts": -1 })
                .limit(8);
            queries += 1;
            let found: Vec<Document> = connection
                .block_on(async { find.await?.try_collect().await })
                .map_err(db_error("reading ancestors", target.events_name()))?;
            let latest = found
                .iter()
                .filter_map(Exec::from_document)
                .filter(|candidate| candidate.key() < exec.key())
                .max_by(|a, b| a.key().cmp(&b.key()));
            if let Some(latest) = latest {
                if !execs.iter().any(|known| known.event_id == latest.event_id) {
                    execs.push(latest);
                }
            }
        }
        match parent_of(&execs, current) {
            Some((parent, _)) => current = parent,
            None => break,
        }
    }

    tracing::debug!(queries, ms = started.elapsed().as_millis() as u64, "ancestors read");
    let started = std::time::Instant::now();
    // Alerts on any exec read.
    let alerts_collection: Collection<Document> = database.collection(&target.alerts);
    let mut alerts: HashMap<String, Vec<AlertRef>> = HashMap::new();
    let ids: Vec<&str> = execs.iter().map(|exec| exec.event_id.as_str()).filter(|id| !id.is_empty()).collect();
    for chunk in ids.chunks(IN_CHUNK) {
        let find = alerts_collection
            .find(doc! { "event_id": { "$in": chunk } })
            .projection(doc! { "_id": 1, "rule_name": 1, "uuid": 1, "severity": 1, "event_id": 1 });
        let found: Vec<Document> = connection
            .block_on(async { find.await?.try_collect().await })
            .map_err(db_error("reading the alerts in the window", target.alerts_name()))?;
        for document in &found {
            let found = AlertRef::from_document(document);
            alerts.entry(found.event_id.clone()).or_default().push(found);
        }
    }
    for list in alerts.values_mut() {
        list.sort_by(|a, b| (&a.rule_name, &a.id).cmp(&(&b.rule_name, &b.id)));
    }

    tracing::debug!(events = execs.len(), ms = started.elapsed().as_millis() as u64, "alerts on the events read");
    let evidence = read_evidence(connection, &events, alert)
        .map_err(db_error("reading a correlation's events", target.events_name()))?;
    Ok(Investigation {
        alert: reference,
        host,
        window_ms: query.window_ms,
        execs,
        focus,
        timeline_len,
        truncated,
        alerts,
        evidence,
    })
}

/// The events a correlation alert lists (`correlation.events`), read by
/// `_id` wherever they are (another host, outside the timeline).
fn read_evidence(
    connection: &Connection,
    events: &Collection<Document>,
    alert: &Document,
) -> Result<Vec<Evidence>, mongodb::error::Error> {
    let Ok(listed) = alert.get_document("correlation").and_then(|c| c.get_array("events")) else {
        return Ok(Vec::new());
    };
    let mut evidence: Vec<Evidence> = listed
        .iter()
        .filter_map(Bson::as_document)
        .map(|e| Evidence {
            event_id: e.get_str("id").unwrap_or_default().to_owned(),
            rule: e.get_str("rule").unwrap_or_default().to_owned(),
            exec: None,
            host: None,
        })
        .collect();
    let ids: Vec<Bson> = evidence
        .iter()
        .filter(|e| !e.event_id.is_empty())
        .map(|e| match mongodb::bson::oid::ObjectId::parse_str(&e.event_id) {
            Ok(oid) => Bson::ObjectId(oid),
            Err(_) => Bson::String(e.event_id.clone()),
        })
        .collect();
    let mut found: HashMap<String, (Exec, Option<String>)> = HashMap::new();
    for chunk in ids.chunks(IN_CHUNK) {
        let find = events.find(doc! { "_id": { "$in": chunk } });
        let documents: Vec<Document> = connection.block_on(async { find.await?.try_collect().await })?;
        for document in &documents {
            if let Some(exec) = Exec::from_document(document) {
                let host = document.get_str("hostname").ok().map(str::to_owned);
                found.insert(exec.event_id.clone(), (exec, host));
            }
        }
    }
    for e in &mut evidence {
        if let Some((exec, host)) = found.get(&e.event_id) {
            e.exec = Some(exec.clone());
            e.host = host.clone();
        }
    }
    Ok(evidence)
}

/// `2023-09-22T00:20:26.084Z`.
pub fn format_ts(millis: i64) -> String {
    match chrono::DateTime::from_timestamp_millis(millis) {
        Some(time) => time.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
        None => format!("{millis} ms"),
    }
}

fn format_window(ms: i64) -> String {
    match ms {
        ms if ms % 60_000 == 0 => format!("{}m", ms / 60_000),
        ms if ms % 1000 == 0 => format!("{}s", ms / 1000),
        ms => format!("{ms}ms"),
    }
}

impl Investigation {
    fn other_alerts(&self, exec: &Exec) -> Vec<&AlertRef> {
        self.alerts
            .get(&exec.event_id)
            .map_or(Vec::new(), |list| list.iter().filter(|alert| alert.id != self.alert.id).collect())
    }

    /// `*` the alerting exec, `+` one of its correlation's events, `!` an
    /// exec another alert names, else a space.
    fn mark(&self, index: usize) -> char {
        if index == self.focus {
            '*'
        } else if self.evidence.iter().any(|e| e.event_id == self.execs[index].event_id) {
            '+'
        } else if !self.other_alerts(&self.execs[index]).is_empty() {
            '!'
        } else {
            ' '
        }
    }

    fn alert_note(&self, exec: &Exec) -> String {
        let names: Vec<&str> = self.other_alerts(exec).iter().map(|alert| alert.rule_name.as_str()).collect();
        if names.is_empty() {
            String::new()
        } else {
            format!("  [alert: {}]", names.join(", "))
        }
    }

    /// For people: the alert, the timeline, the tree.
    pub fn render_text(&self) -> String {
        let focus = &self.execs[self.focus];
        let mut out = String::new();
        let severity = self.alert.severity.as_deref().map(|s| format!(", {s}")).unwrap_or_default();
        let _ = writeln!(out, "alert {}  {} ({}{severity})", self.alert.id, self.alert.rule_name, self.alert.uuid);
        let _ = writeln!(
            out,
            "event {} on {} at {}: pid {} {}",
            focus.event_id,
            self.host,
            format_ts(focus.ts),
            focus.pid.map_or("?".into(), |pid| pid.to_string()),
            focus.command_line
        );

        if !self.evidence.is_empty() {
            let _ = writeln!(out, "\ncorrelation: the {} events of its window", self.evidence.len());
            for e in &self.evidence {
                match &e.exec {
                    Some(exec) => {
                        let _ = writeln!(
                            out,
                            "+ {:<24}  {:<12}  pid {:<7}  {}  [{}]",
                            format_ts(exec.ts),
                            e.host.as_deref().unwrap_or("?"),
                            number(exec.pid),
                            exec.command_line,
                            e.rule
                        );
                    }
                    None => {
                        let _ = writeln!(out, "+ event {} [{}]: not in the collection", e.event_id, e.rule);
                    }
                }
            }
        }

        let timeline = &self.execs[..self.timeline_len];
        let alerted = (0..self.timeline_len).filter(|&i| i != self.focus && self.mark(i) == '!').count();
        let _ = writeln!(
            out,
            "\ntimeline of {} from {} to {} (±{}): {} events, {} others alerted{}",
            self.host,
            format_ts(focus.ts.saturating_sub(self.window_ms)),
            format_ts(focus.ts.saturating_add(self.window_ms)),
            format_window(self.window_ms),
            timeline.len(),
            alerted,
            if self.truncated { " (truncated: more events in the window than --max-events)" } else { "" },
        );
        let rows: Vec<usize> = (0..self.timeline_len).collect();
        let widths = self.widths(&rows);
        let _ = writeln!(
            out,
            "  {:<24}  {:>pw$}  {:>qw$}  {:<uw$}  CMD",
            "TIME",
            "PID",
            "PPID",
            "USER",
            pw = widths.0,
            qw = widths.1,
            uw = widths.2
        );
        for (i, exec) in timeline.iter().enumerate() {
            let _ = writeln!(
                out,
                "{} {:<24}  {:>pw$}  {:>qw$}  {:<uw$}  {}{}",
                self.mark(i),
                format_ts(exec.ts),
                number(exec.pid),
                number(exec.parent_pid),
                exec.user.as_deref().unwrap_or("?"),
                exec.command_line,
                self.alert_note(exec),
                pw = widths.0,
                qw = widths.1,
                uw = widths.2,
            );
        }

        let tree = process_tree(&self.execs, self.focus);
        let _ = writeln!(out, "\nprocess tree (ancestors as far as the data goes, descendants within the window):");
        let rows: Vec<usize> = tree.iter().map(|row| row.exec).collect();
        let widths = self.widths(&rows);
        let _ = writeln!(
            out,
            "  {:<uw$}  {:>pw$}  {:>qw$}  {:<24}  CMD",
            "USER",
            "PID",
            "PPID",
            "TIME",
            pw = widths.0,
            qw = widths.1,
            uw = widths.2
        );
        for row in &tree {
            let exec = &self.execs[row.exec];
            let indent = match row.depth {
                0 => String::new(),
                depth => format!("{}\\_ ", " ".repeat(1 + 4 * (depth - 1))),
            };
            let _ = writeln!(
                out,
                "{} {:<uw$}  {:>pw$}  {:>qw$}  {:<24}  {indent}{}{}{}",
                self.mark(row.exec),
                exec.user.as_deref().unwrap_or("?"),
                number(exec.pid),
                number(exec.parent_pid),
                format_ts(exec.ts),
                exec.command_line,
                if row.link == Link::Exec { " (exec)" } else { "" },
                self.alert_note(exec),
                pw = widths.0,
                qw = widths.1,
                uw = widths.2,
            );
        }
        let legend = if self.evidence.is_empty() { "" } else { "  + the correlation's events" };
        let _ = writeln!(
            out,
            "\n* the alerting event{legend}  ! another alert  (exec) the same process replaced its image"
        );
        out
    }

    fn widths(&self, rows: &[usize]) -> (usize, usize, usize) {
        let width = |f: &dyn Fn(&Exec) -> usize, min: usize| {
            rows.iter().map(|&i| f(&self.execs[i])).max().unwrap_or(0).max(min)
        };
        (
            width(&|e| number(e.pid).len(), 3),
            width(&|e| number(e.parent_pid).len(), 4),
            width(&|e| e.user.as_deref().unwrap_or("?").chars().count(), 4),
        )
    }

    fn json_exec(&self, index: usize) -> serde_json::Map<String, serde_json::Value> {
        let exec = &self.execs[index];
        let mut map = serde_json::Map::new();
        map.insert("event_id".into(), exec.event_id.clone().into());
        map.insert("ts".into(), format_ts(exec.ts).into());
        map.insert("ts_ms".into(), exec.ts.into());
        map.insert("pid".into(), exec.pid.into());
        map.insert("parent_pid".into(), exec.parent_pid.into());
        map.insert("user".into(), exec.user.clone().into());
        map.insert("command_line".into(), exec.command_line.clone().into());
        map.insert("alerting".into(), (index == self.focus).into());
        if !self.evidence.is_empty() {
            map.insert("evidence".into(), self.evidence.iter().any(|e| e.event_id == exec.event_id).into());
        }
        let others = serde_json::to_value(self.other_alerts(exec)).unwrap_or_default();
        map.insert("other_alerts".into(), others);
        map
    }

    /// For tools: one JSON object (see docs/investigate.md for its fields).
    pub fn to_json(&self) -> serde_json::Value {
        let focus = &self.execs[self.focus];
        let timeline: Vec<serde_json::Value> = (0..self.timeline_len).map(|i| self.json_exec(i).into()).collect();
        let tree = process_tree(&self.execs, self.focus);
        // Nest the rows: each row's parent is the nearest earlier row one
        // level up.
        let mut stack: Vec<serde_json::Map<String, serde_json::Value>> = Vec::new();
        let close = |stack: &mut Vec<serde_json::Map<String, serde_json::Value>>| {
            let done = stack.pop().expect("open");
            match stack.last_mut() {
                Some(parent) => {
                    parent.get_mut("children").and_then(|c| c.as_array_mut()).expect("children").push(done.into());
                    None
                }
                None => Some(done),
            }
        };
        let mut root = None;
        for row in &tree {
            while stack.len() > row.depth {
                root = close(&mut stack).or(root);
            }
            let mut node = self.json_exec(row.exec);
            node.insert("link".into(), serde_json::to_value(row.link).unwrap_or_default());
            node.insert("children".into(), serde_json::Value::Array(Vec::new()));
            stack.push(node);
        }
        while !stack.is_empty() {
            root = close(&mut stack).or(root);
        }
        let mut json = serde_json::json!({
            "alert": self.alert,
            "host": self.host,
            "event_id": focus.event_id,
            "window": {
                "from": format_ts(focus.ts.saturating_sub(self.window_ms)),
                "to": format_ts(focus.ts.saturating_add(self.window_ms)),
                "ms": self.window_ms,
            },
            "timeline": timeline,
            "timeline_truncated": self.truncated,
            "tree": root,
        });
        // Only a correlation's alert has evidence; other alerts keep their shape.
        if !self.evidence.is_empty() {
            json["evidence"] = serde_json::to_value(&self.evidence).unwrap_or_default();
        }
        json
    }
}

fn number(value: Option<i64>) -> String {
    value.map_or("?".into(), |n| n.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exec(id: &str, ts: i64, pid: i64, parent_pid: i64, command_line: &str) -> Exec {
        Exec {
            event_id: id.into(),
            ts,
            pid: Some(pid),
            parent_pid: Some(parent_pid),
            user: Some("root".into()),
            command_line: command_line.into(),
        }
    }

    fn rows(execs: &[Exec], focus: usize) -> Vec<String> {
        process_tree(execs, focus)
            .iter()
            .map(|row| format!("{}{} {:?}", "  ".repeat(row.depth), execs[row.exec].event_id, row.link))
            .collect()
    }

    #[test]
    fn a_parent_is_the_latest_exec_of_the_parent_pid_before_the_child() {
        let execs = vec![
            exec("old-300", 1_000, 300, 1, "/usr/sbin/cron"),
            exec("new-300", 5_000, 300, 50, "/bin/bash"), // pid 300 reused under another parent
            exec("child-a", 2_000, 400, 300, "/bin/sh"),  // started while the old 300 ran
            exec("child-b", 6_000, 401, 300, "/bin/id"),  // after the reuse
            exec("late-300", 9_000, 300, 70, "/bin/ls"),  // a third process with pid 300, later
        ];
        assert_eq!(parent_of(&execs, 2), Some((0, Link::Child)));
        assert_eq!(parent_of(&execs, 3), Some((1, Link::Child)));
        assert_eq!(parent_of(&execs, 1), None, "parent pid 50 is not in the data");
        assert_eq!(parent_of(&execs, 0), None);
    }

    #[test]
    fn a_second_exec_of_a_pid_under_the_same_parent_replaces_the_image() {
        let execs = vec![
            exec("bash", 1_000, 100, 1, "/bin/bash"),
            exec("python", 2_000, 100, 1, "/usr/bin/python3 run.py"),
            exec("before", 1_500, 200, 100, "/bin/date"),
            exec("after", 2_500, 201, 100, "/bin/cat /etc/shadow"),
            exec("init", 10, 1, 0, "/sbin/init"),
        ];
        assert_eq!(parent_of(&execs, 1), Some((0, Link::Exec)));
        assert_eq!(parent_of(&execs, 2), Some((0, Link::Child)), "before the exec: under bash");
        assert_eq!(parent_of(&execs, 3), Some((1, Link::Child)), "after the exec: under python");
        assert_eq!(
            rows(&execs, 3),
            ["init Root", "  bash Child", "    python Exec", "      after Child"],
            "ancestors only: the sibling `before` is not shown"
        );
        assert_eq!(
            rows(&execs, 0),
            ["init Root", "  bash Child", "    before Child", "    python Exec", "      after Child"],
            "descendants by time, the later image nested under the earlier"
        );
    }

    #[test]
    fn equal_timestamps_are_ordered_by_id_and_links_never_loop() {
        let execs = vec![
            exec("b", 1_000, 10, 20, "/bin/b"),
            exec("a", 1_000, 20, 10, "/bin/a"),
            exec("c", 1_000, 10, 20, "/bin/c"),
        ];
        // a (pid 20) is before b by id: b's parent is a; c re-execs b.
        assert_eq!(parent_of(&execs, 0), Some((1, Link::Child)));
        assert_eq!(parent_of(&execs, 1), None, "pid 10 has no exec before a");
        assert_eq!(parent_of(&execs, 2), Some((0, Link::Exec)));
        assert_eq!(rows(&execs, 2), ["a Root", "  b Child", "    c Exec"]);
    }

    #[test]
    fn a_process_that_is_its_own_parent_is_a_root() {
        let execs = vec![exec("x", 5, 7, 7, "/weird")];
        assert_eq!(parent_of(&execs, 0), None);
        assert_eq!(rows(&execs, 0), ["x Root"]);
    }

    #[test]
    fn ts_may_be_milliseconds_or_a_date() {
        assert_eq!(ts_of(&Bson::Int64(1_695_342_026_084)), Some((1_695_342_026_084, TsKind::Millis)));
        assert_eq!(ts_of(&Bson::Int32(5)), Some((5, TsKind::Millis)));
        let date = mongodb::bson::DateTime::from_millis(1_695_342_026_084);
        assert_eq!(ts_of(&Bson::DateTime(date)), Some((1_695_342_026_084, TsKind::Date)));
        assert_eq!(ts_of(&Bson::String("2023-09-22".into())), None);
        assert_eq!(format_ts(1_695_342_026_084), "2023-09-22T00:20:26.084Z");
    }
}
