//! Keyed state in event time, kept by the host for code rules
//! (`dac:rule/state@0.2.0` in `wit/rule.wit`): values with a time to live,
//! sliding-window counters and sets of distinct values — what threshold
//! and ordered-sequence rules need — held outside the rule's sandbox,
//! bounded by quotas, dropped by event time and saved with a stream's
//! position ([`Store::saved`], [`Store::restore`]).
//!
//! The host (`dac-engine`) keeps one [`Store`] per rule set and calls it
//! from the rule's `state` imports; a Rust rule's native tests
//! (`dac-rule-sdk`) call the very same code, so fixtures see the host's
//! semantics.
//!
//! Every operation is made for one event ([`At`]): its rule, its host (the
//! event's `hostname`, which scopes the key) and its time (the event's
//! `ts`). Values, counters and sets have keys of their own: `count("x")`
//! and `get("x")` do not meet.

use serde::{Deserialize, Serialize};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap, HashSet, VecDeque};
use std::sync::Arc;

/// The store's maps: foldhash, several times faster than SipHash on keys
/// of this size, and seeded at random per process, so that a rule cannot
/// choose keys that collide.
type Map<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// What one rule set's state may hold. Defaults in [`StateLimits::default`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateLimits {
    /// Keys one rule may hold (default 100,000).
    pub max_keys: usize,
    /// Bytes one rule's state may hold, estimated (default 64 MiB).
    pub max_bytes: usize,
    /// Keys all the rules of the set may hold together (default 1,000,000).
    pub total_keys: usize,
    /// Bytes all the rules of the set may hold together (default 256 MiB).
    pub total_bytes: usize,
    /// Longest key (and distinct-set member); a longer one is a fault of
    /// the rule (default 1 KiB).
    pub max_key_bytes: usize,
    /// Longest value; a longer one is a fault of the rule (default 64 KiB).
    pub max_value_bytes: usize,
    /// How far behind its host's newest event time an expired key is still
    /// kept (default 60 s, as correlations' allowed lateness): an event
    /// later than that behind its host's newest may find state gone that
    /// had not expired at its own time.
    pub lateness_ms: i64,
    /// How far behind the newest event time of the whole stream an expired
    /// key of a host that sent nothing since is dropped (default 1 h).
    /// Keys are dropped by their host's own time, which alone is the same
    /// on every run and any number of threads; this only frees the keys of
    /// hosts gone quiet.
    pub idle_ms: i64,
}

impl Default for StateLimits {
    fn default() -> Self {
        StateLimits {
            max_keys: 100_000,
            max_bytes: 64 << 20,
            total_keys: 1_000_000,
            total_bytes: 256 << 20,
            max_key_bytes: 1024,
            max_value_bytes: 64 << 10,
            lateness_ms: 60_000,
            idle_ms: 3_600_000,
        }
    }
}

/// Who asks, for which host, at what time: one event of a rule's call.
#[derive(Debug, Clone, Copy)]
pub struct At<'a> {
    /// The rule's uuid: a rule's state is its own, and follows it across a
    /// reload or a restart.
    pub rule: &'a str,
    /// The event's host (its `hostname`; `""` without one).
    pub host: &'a str,
    /// The event's time in milliseconds since the epoch; `None` takes the
    /// latest time the store has seen.
    pub ts: Option<i64>,
}

/// A rule asked for more than a single operation may: the call faults.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StateFault {
    #[error("a state key of {len} bytes is longer than the limit of {limit} (StateLimits::max_key_bytes)")]
    KeyTooLong { len: usize, limit: usize },
    #[error("a state value of {len} bytes is longer than the limit of {limit} (StateLimits::max_value_bytes)")]
    ValueTooLong { len: usize, limit: usize },
}

/// What one rule's state holds now, and what it was refused.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Usage {
    pub keys: u64,
    pub bytes: u64,
    /// Writes refused at a quota since the start.
    pub refused: u64,
}

/// The counters of a whole store.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreStats {
    pub keys: u64,
    pub bytes: u64,
    pub refused: u64,
    /// Keys dropped because they expired in event time.
    pub expired: u64,
    /// Operations of events later than [`StateLimits::lateness_ms`]
    /// behind their host's newest time (they may miss expired state).
    pub late: u64,
}

/// The three kinds of entries, each with keys of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Value,
    Count,
    Set,
}

impl Kind {
    fn tag(self) -> char {
        match self {
            Kind::Value => 'v',
            Kind::Count => 'c',
            Kind::Set => 's',
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Entry {
    /// Readable by events before `expires`.
    Value {
        value: String,
        expires: i64,
    },
    /// Occurrence times, ascending.
    Count {
        times: VecDeque<i64>,
        window: i64,
    },
    Set(Set),
}

/// A distinct set: each member's latest time, and the members by time, so
/// that dropping the old ones and counting the recent ones look at those
/// alone, not at every member.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Set {
    members: BTreeMap<Arc<str>, i64>,
    /// Rebuilt from `members` when restored.
    #[serde(skip)]
    by_time: BTreeSet<(i64, Arc<str>)>,
    window: i64,
    /// The latest time of any member.
    newest: i64,
}

impl Set {
    fn index(&mut self) {
        self.by_time = self.members.iter().map(|(member, &at)| (at, member.clone())).collect();
    }

    /// Members seen after `from`.
    fn since(&self, from: i64) -> usize {
        let before = self.by_time.iter().take_while(|(at, _)| *at <= from).count();
        self.members.len() - before
    }
}

impl Entry {
    /// The event time from which no event reads anything of it.
    fn expires(&self) -> i64 {
        match self {
            Entry::Value { expires, .. } => *expires,
            Entry::Count { times, window } => times.back().map_or(i64::MIN, |newest| newest.saturating_add(*window)),
            Entry::Set(set) => set.newest.saturating_add(set.window),
        }
    }

    /// Estimated bytes, beside its key and [`ENTRY_OVERHEAD`].
    fn bytes(&self) -> usize {
        match self {
            Entry::Value { value, .. } => value.len(),
            Entry::Count { times, .. } => times.len() * 8,
            Entry::Set(set) => set.members.keys().map(|m| member_bytes(m)).sum(),
        }
    }
}

/// What a distinct set's member costs: its text, two tree nodes.
fn member_bytes(member: &str) -> usize {
    member.len() + MEMBER_OVERHEAD
}

/// What a key costs besides its bytes: the map's slot, the key's
/// allocation, the expiry queue's item.
const ENTRY_OVERHEAD: usize = 128;
/// What a distinct set's member costs besides its bytes (a node in each
/// of its two trees).
const MEMBER_OVERHEAD: usize = 96;

#[derive(Debug)]
struct Slot {
    entry: Entry,
    /// `bytes` of the key and entry, as counted in the usage.
    bytes: usize,
    /// The expiry its host's queue, and the store's, hold an item for
    /// (older items are stale). Each queue requeues on its own.
    queued: (i64, i64),
    /// The host the key belongs to.
    host: Arc<str>,
}

impl Slot {
    /// A slot of the same key (its host and queue position) for a new
    /// entry.
    fn clone_meta(&self) -> Slot {
        Slot {
            entry: Entry::Value { value: String::new(), expires: 0 },
            bytes: 0,
            queued: self.queued,
            host: self.host.clone(),
        }
    }
}

/// The keys by expiry, soonest first (items may be stale: see
/// [`Slot::queued`]).
type Queue = BinaryHeap<Reverse<(i64, Arc<str>)>>;

/// A host that holds keys: its newest event time and its keys by expiry.
#[derive(Debug, Default)]
struct HostScope {
    clock: i64,
    /// Keys of the host in the store.
    live: usize,
    queue: Queue,
}

/// One rule set's keyed state.
#[derive(Debug, Default)]
pub struct Store {
    limits: StateLimits,
    entries: Map<Arc<str>, Slot>,
    /// Every key by expiry, for dropping the keys of quiet hosts.
    queue: Queue,
    /// The hosts holding keys, each with its own clock: a host's keys
    /// expire by its own events' time.
    hosts: Map<Arc<str>, HostScope>,
    usage: Map<Arc<str>, Usage>,
    keys: u64,
    bytes: u64,
    expired: u64,
    late: u64,
    /// The newest event time of any host.
    clock: Option<i64>,
    /// The key being looked up, built here so that a lookup allocates
    /// nothing.
    scratch: String,
}

/// One call's writes, so that a call that faults can take them back
/// ([`Store::rollback`]): how to undo each, newest last. An entry is
/// changed in place and only what changed is noted, so a write costs the
/// same whether the call keeps it or not.
#[derive(Debug, Default)]
pub struct Journal {
    undo: Vec<Undo>,
}

#[derive(Debug)]
enum Undo {
    /// The key did not exist.
    Created(Arc<str>),
    /// The key held this slot, replaced (a value set again) or removed
    /// (`remove`, or dropped as expired: `expired`).
    Replaced(Arc<str>, Slot),
    Removed {
        key: Arc<str>,
        slot: Slot,
        expired: bool,
    },
    /// A counter took an occurrence at `index`, after dropping `trimmed`
    /// from its front; its window was `window`.
    Counted {
        key: Arc<str>,
        index: usize,
        trimmed: Vec<i64>,
        window: i64,
    },
    /// A set took `member`, whose time was `before`, after dropping
    /// `trimmed`; its window and newest time were those.
    Recorded {
        key: Arc<str>,
        member: Arc<str>,
        before: Option<i64>,
        trimmed: Vec<(i64, Arc<str>)>,
        window: i64,
        newest: i64,
    },
}

impl Journal {
    pub fn is_empty(&self) -> bool {
        self.undo.is_empty()
    }

    /// Keeps the call's writes.
    pub fn commit(&mut self) {
        self.undo.clear();
    }
}

/// A store's contents, for [`Store::saved`] and [`Store::restore`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SavedStore {
    clock: Option<i64>,
    /// Each host's clock, in host order.
    hosts: Vec<(Arc<str>, i64)>,
    /// Every entry by its full key, in key order (so that the same state
    /// is always the same bytes).
    entries: Vec<(Arc<str>, Entry)>,
}

impl Default for SavedStore {
    /// No key.
    fn default() -> SavedStore {
        SavedStore { clock: None, hosts: Vec::new(), entries: Vec::new() }
    }
}

impl SavedStore {
    /// Keeps the keys (and clocks) of the hosts `keep` says, drops the
    /// others: what one partition of a stream takes of a state another
    /// worker saved. A key whose host cannot be read is dropped too.
    pub fn retain_hosts(&mut self, mut keep: impl FnMut(&str) -> bool) {
        self.hosts.retain(|(host, _)| keep(host));
        self.entries.retain(|(key, _)| parts_of(key).is_some_and(|(_, host)| keep(host)));
    }

    /// Adds `other`'s keys to these: the states of disjoint partitions,
    /// saved by different workers, become one. Hosts keep their own
    /// clocks; the stream's (which drops the keys of hosts gone quiet)
    /// takes the earlier: the stream resumes at the earliest of their
    /// positions. A key (or host) in both keeps this one's.
    pub fn merge(&mut self, other: SavedStore) {
        self.clock = match (self.clock, other.clock) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.hosts.extend(other.hosts);
        self.hosts.sort_by(|a, b| a.0.cmp(&b.0));
        self.hosts.dedup_by(|later, earlier| later.0 == earlier.0);
        self.entries.extend(other.entries);
        self.entries.sort_by(|a, b| a.0.cmp(&b.0));
        self.entries.dedup_by(|later, earlier| later.0 == earlier.0);
    }
}

/// What [`Store::restore`] took back.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RestoredStore {
    pub keys: u64,
    pub bytes: u64,
    /// Keys of rules not running now, dropped.
    pub dropped: u64,
}

/// The full key of `key` of `kind` for `at`'s rule and host: each part
/// length-prefixed, so that no two (rule, host, key) give the same string.
fn full_key(out: &mut String, at: &At<'_>, kind: Kind, key: &str) {
    use std::fmt::Write;
    out.clear();
    let _ = write!(out, "{}:{}{}:{}{}{}", at.rule.len(), at.rule, at.host.len(), at.host, kind.tag(), key);
}

/// The rule and host a full key belongs to.
fn parts_of(key: &str) -> Option<(&str, &str)> {
    let (len, rest) = key.split_once(':')?;
    let len = len.parse::<usize>().ok()?;
    let (rule, rest) = (rest.get(..len)?, rest.get(len..)?);
    let (len, rest) = rest.split_once(':')?;
    Some((rule, rest.get(..len.parse::<usize>().ok()?)?))
}

/// The rule a full key belongs to.
fn rule_of(key: &str) -> Option<&str> {
    parts_of(key).map(|(rule, _)| rule)
}

impl Store {
    pub fn new(limits: StateLimits) -> Store {
        Store { limits, ..Store::default() }
    }

    pub fn limits(&self) -> &StateLimits {
        &self.limits
    }

    /// Sets the quotas from now on (what is held stays, even over them).
    pub fn set_limits(&mut self, limits: StateLimits) {
        self.limits = limits;
    }

    /// The value under `key`, if set and not expired at the event's time.
    pub fn get(&mut self, at: &At<'_>, key: &str) -> Result<Option<String>, StateFault> {
        self.check_key(key)?;
        let now = self.tick(at);
        full_key(&mut self.scratch, at, Kind::Value, key);
        Ok(match self.entries.get(self.scratch.as_str()) {
            Some(Slot { entry: Entry::Value { value, expires }, .. }) if now < *expires => Some(value.clone()),
            _ => None,
        })
    }

    /// Sets `key` to `value` until `ttl_ms` after the event's time; false
    /// when refused at a quota.
    pub fn set(
        &mut self,
        journal: &mut Journal,
        at: &At<'_>,
        key: &str,
        value: &str,
        ttl_ms: u64,
    ) -> Result<bool, StateFault> {
        self.check_key(key)?;
        if value.len() > self.limits.max_value_bytes {
            return Err(StateFault::ValueTooLong { len: value.len(), limit: self.limits.max_value_bytes });
        }
        let now = self.tick(at);
        let expires = now.saturating_add(i64::try_from(ttl_ms).unwrap_or(i64::MAX));
        full_key(&mut self.scratch, at, Kind::Value, key);
        let bytes = ENTRY_OVERHEAD + self.scratch.len() + value.len();
        let entry = Entry::Value { value: value.to_owned(), expires };
        let stored = match self.entries.get_key_value(self.scratch.as_str()) {
            Some((full, slot)) => {
                let (full, old) = (full.clone(), slot.bytes);
                let stored = self.admit(at.rule, 0, bytes as i64 - old as i64);
                // Found just above: the slot is there.
                if let Some(slot) = self.entries.get_mut(&full).filter(|_| stored) {
                    let before = std::mem::replace(slot, Slot { entry, bytes, ..slot.clone_meta() });
                    self.charge(&full, 0, bytes as i64 - old as i64);
                    self.requeue_if_sooner(&full, expires);
                    journal.undo.push(Undo::Replaced(full, before));
                }
                stored
            }
            None => self.create(journal, at, bytes, entry),
        };
        self.sweep(journal, at.host);
        Ok(stored)
    }

    /// Removes the value under `key`.
    pub fn remove(&mut self, journal: &mut Journal, at: &At<'_>, key: &str) -> Result<(), StateFault> {
        self.check_key(key)?;
        self.tick(at);
        full_key(&mut self.scratch, at, Kind::Value, key);
        if let Some((full, _)) = self.entries.get_key_value(self.scratch.as_str()) {
            let full = full.clone();
            if let Some(slot) = self.take(&full) {
                journal.undo.push(Undo::Removed { key: full, slot, expired: false });
            }
        }
        self.sweep(journal, at.host);
        Ok(())
    }

    /// Records an occurrence of `key` at the event's time; the occurrences
    /// in `(ts - window_ms, ts]`, this one included.
    pub fn count(&mut self, journal: &mut Journal, at: &At<'_>, key: &str, window_ms: u64) -> Result<u32, StateFault> {
        self.check_key(key)?;
        let now = self.tick(at);
        let window = i64::try_from(window_ms).unwrap_or(i64::MAX);
        let from = now.saturating_sub(window);
        full_key(&mut self.scratch, at, Kind::Count, key);
        let answer = match self.entries.get_key_value(self.scratch.as_str()) {
            Some((full, Slot { entry: Entry::Count { times, .. }, .. })) => {
                let full = full.clone();
                let in_window =
                    times.partition_point(|&t| t <= now).saturating_sub(times.partition_point(|&t| t <= from));
                let newest = times.back().map_or(now, |&newest| newest.max(now));
                let floor = newest.saturating_sub(window).saturating_sub(self.limits.lateness_ms);
                let trim = times.partition_point(|&t| t <= floor);
                // An occurrence older than every window still kept is not
                // kept either (a very late event).
                let keep = now > floor;
                let grow = 8 * i64::from(keep) - 8 * trim as i64;
                let admitted = keep && self.admit(at.rule, 0, grow);
                if let (true, Some(Slot { entry: Entry::Count { times, window: kept }, bytes, .. })) =
                    (admitted, self.entries.get_mut(&full))
                {
                    let trimmed: Vec<i64> = times.drain(..trim).collect();
                    let index = times.partition_point(|&t| t <= now);
                    times.insert(index, now);
                    let before = std::mem::replace(kept, window);
                    *bytes = bytes.saturating_add_signed(grow as isize);
                    self.charge(&full, 0, grow);
                    journal.undo.push(Undo::Counted { key: full, index, trimmed, window: before });
                }
                // Refused or too late: as if recorded, but not kept.
                in_window + 1
            }
            _ => {
                let bytes = ENTRY_OVERHEAD + self.scratch.len() + 8;
                self.create(journal, at, bytes, Entry::Count { times: VecDeque::from([now]), window });
                1
            }
        };
        self.sweep(journal, at.host);
        Ok(u32::try_from(answer).unwrap_or(u32::MAX))
    }

    /// Records `member` in the set `key` at the event's time; how many
    /// distinct members the set holds in the window up to that time, this
    /// one included.
    pub fn distinct(
        &mut self,
        journal: &mut Journal,
        at: &At<'_>,
        key: &str,
        member: &str,
        window_ms: u64,
    ) -> Result<u32, StateFault> {
        self.check_key(key)?;
        if member.len() > self.limits.max_key_bytes {
            return Err(StateFault::KeyTooLong { len: member.len(), limit: self.limits.max_key_bytes });
        }
        let now = self.tick(at);
        let window = i64::try_from(window_ms).unwrap_or(i64::MAX);
        let from = now.saturating_sub(window);
        full_key(&mut self.scratch, at, Kind::Set, key);
        let answer = match self.entries.get_key_value(self.scratch.as_str()) {
            Some((full, Slot { entry: Entry::Set(set), .. })) => {
                let full = full.clone();
                let seen = set.members.get(member).copied();
                let answer = set.since(from) + usize::from(seen.is_none_or(|at| at <= from));
                let newest = set.newest.max(now);
                let floor = newest.saturating_sub(window).saturating_sub(self.limits.lateness_ms);
                let trimmed: Vec<(i64, Arc<str>)> =
                    set.by_time.iter().take_while(|(at, _)| *at <= floor).cloned().collect();
                let keep = now > floor;
                let trimmed_bytes: i64 = trimmed.iter().map(|(_, m)| member_bytes(m) as i64).sum();
                let member_trimmed = trimmed.iter().any(|(_, m)| &**m == member);
                let adds = seen.is_none() || member_trimmed;
                let grow = if adds { member_bytes(member) as i64 } else { 0 } - trimmed_bytes;
                let admitted = keep && self.admit(at.rule, 0, grow);
                if let (true, Some(Slot { entry: Entry::Set(set), bytes, .. })) =
                    (admitted, self.entries.get_mut(&full))
                {
                    for (at, gone) in &trimmed {
                        set.by_time.remove(&(*at, gone.clone()));
                        set.members.remove(gone);
                    }
                    let member: Arc<str> = match set.members.get_key_value(member) {
                        Some((name, _)) => name.clone(),
                        None => Arc::from(member),
                    };
                    let before = set.members.get(&member).copied();
                    if before.is_none_or(|at| at < now) {
                        if let Some(at) = before {
                            set.by_time.remove(&(at, member.clone()));
                        }
                        set.members.insert(member.clone(), now);
                        set.by_time.insert((now, member.clone()));
                    }
                    let (kept_window, kept_newest) = (set.window, set.newest);
                    set.window = window;
                    set.newest = newest;
                    *bytes = bytes.saturating_add_signed(grow as isize);
                    self.charge(&full, 0, grow);
                    journal.undo.push(Undo::Recorded {
                        key: full,
                        member,
                        before,
                        trimmed,
                        window: kept_window,
                        newest: kept_newest,
                    });
                }
                // Refused or too late: as if recorded, but not kept.
                answer
            }
            _ => {
                let bytes = ENTRY_OVERHEAD + self.scratch.len() + member_bytes(member);
                let member: Arc<str> = Arc::from(member);
                let set = Set {
                    members: BTreeMap::from([(member.clone(), now)]),
                    by_time: BTreeSet::from([(now, member)]),
                    window,
                    newest: now,
                };
                self.create(journal, at, bytes, Entry::Set(set));
                1
            }
        };
        self.sweep(journal, at.host);
        Ok(u32::try_from(answer).unwrap_or(u32::MAX))
    }

    /// Takes back every write of `journal`'s call, newest first.
    pub fn rollback(&mut self, journal: &mut Journal) {
        while let Some(undo) = journal.undo.pop() {
            match undo {
                Undo::Created(key) => {
                    self.take(&key);
                }
                Undo::Replaced(key, before) => match self.entries.get_mut(&key) {
                    // In place: the host keeps its scope and its clock.
                    Some(slot) => {
                        let grow = before.bytes as i64 - slot.bytes as i64;
                        let expires = before.entry.expires();
                        slot.entry = before.entry;
                        slot.bytes = before.bytes;
                        self.charge(&key, 0, grow);
                        self.requeue_if_sooner(&key, expires);
                    }
                    None => self.insert(key, before),
                },
                Undo::Removed { key, slot, expired } => {
                    self.expired -= u64::from(expired);
                    self.insert(key, slot);
                }
                Undo::Counted { key, index, trimmed, window } => {
                    let Some(slot) = self.entries.get_mut(&key) else { continue };
                    let Entry::Count { times, window: kept } = &mut slot.entry else { continue };
                    times.remove(index);
                    for t in trimmed.into_iter().rev() {
                        times.push_front(t);
                    }
                    *kept = window;
                    let grow = self.rebytes(&key);
                    self.charge(&key, 0, grow);
                }
                Undo::Recorded { key, member, before, trimmed, window, newest } => {
                    let Some(slot) = self.entries.get_mut(&key) else { continue };
                    let Entry::Set(set) = &mut slot.entry else { continue };
                    if let Some(at) = set.members.remove(&member) {
                        set.by_time.remove(&(at, member.clone()));
                    }
                    if let Some(at) = before {
                        set.members.insert(member.clone(), at);
                        set.by_time.insert((at, member));
                    }
                    for (at, gone) in trimmed {
                        set.members.insert(gone.clone(), at);
                        set.by_time.insert((at, gone));
                    }
                    set.window = window;
                    set.newest = newest;
                    let grow = self.rebytes(&key);
                    self.charge(&key, 0, grow);
                }
            }
        }
    }

    /// One rule's usage.
    pub fn usage(&self, rule: &str) -> Usage {
        self.usage.get(rule).cloned().unwrap_or_default()
    }

    /// Every rule's usage, by uuid.
    pub fn usages(&self) -> impl Iterator<Item = (&str, &Usage)> {
        self.usage.iter().map(|(rule, usage)| (&**rule, usage))
    }

    pub fn stats(&self) -> StoreStats {
        StoreStats {
            keys: self.keys,
            bytes: self.bytes,
            refused: self.usage.values().map(|u| u.refused).sum(),
            expired: self.expired,
            late: self.late,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Drops the state of every rule not in `running` (a rule removed from
    /// the set); returns how many keys went.
    pub fn retain_rules(&mut self, running: &HashSet<&str>) -> u64 {
        let gone: Vec<Arc<str>> = self
            .entries
            .keys()
            .filter(|key| rule_of(key).is_none_or(|rule| !running.contains(rule)))
            .cloned()
            .collect();
        for key in &gone {
            self.take(key);
        }
        self.usage.retain(|rule, usage| running.contains(&**rule) || usage.refused > 0);
        gone.len() as u64
    }

    /// The contents, for storing with a stream's position.
    pub fn saved(&self) -> SavedStore {
        let mut entries: Vec<(Arc<str>, Entry)> =
            self.entries.iter().map(|(key, slot)| (key.clone(), slot.entry.clone())).collect();
        entries.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let mut hosts: Vec<(Arc<str>, i64)> =
            self.hosts.iter().map(|(host, scope)| (host.clone(), scope.clock)).collect();
        hosts.sort_unstable();
        SavedStore { clock: self.clock, hosts, entries }
    }

    /// Replaces the contents by `saved`'s, keeping only the rules in
    /// `running`; usage is recounted from the entries, never taken on
    /// trust.
    pub fn restore(&mut self, saved: SavedStore, running: &HashSet<&str>) -> RestoredStore {
        let refused: HashMap<Arc<str>, u64> =
            self.usage.iter().map(|(rule, usage)| (rule.clone(), usage.refused)).collect();
        *self = Store { limits: self.limits.clone(), clock: saved.clock, ..Store::default() };
        let mut restored = RestoredStore::default();
        let clocks: HashMap<Arc<str>, i64> = saved.hosts.into_iter().collect();
        for (key, entry) in saved.entries {
            let Some((rule, host)) = parts_of(&key) else {
                restored.dropped += 1;
                continue;
            };
            if !running.contains(rule) {
                restored.dropped += 1;
                continue;
            }
            let host: Arc<str> = Arc::from(host);
            let clock = clocks.get(&host).copied().unwrap_or(i64::MIN);
            self.hosts.entry(host.clone()).or_insert_with(|| HostScope { clock, ..HostScope::default() });
            // Stored bytes are not trusted to keep the invariants: times
            // ascending, the time index and the newest time derived.
            let mut entry = entry;
            match &mut entry {
                Entry::Count { times, .. } => times.make_contiguous().sort_unstable(),
                Entry::Set(set) => {
                    set.index();
                    set.newest = set.members.values().copied().max().unwrap_or(set.newest);
                }
                Entry::Value { .. } => {}
            }
            let bytes = ENTRY_OVERHEAD + key.len() + entry.bytes();
            self.insert(key, Slot { entry, bytes, queued: (0, 0), host });
        }
        for (rule, count) in refused {
            self.usage.entry(rule).or_default().refused += count;
        }
        restored.keys = self.keys;
        restored.bytes = self.bytes;
        restored
    }

    fn check_key(&self, key: &str) -> Result<(), StateFault> {
        if key.len() > self.limits.max_key_bytes {
            return Err(StateFault::KeyTooLong { len: key.len(), limit: self.limits.max_key_bytes });
        }
        Ok(())
    }

    /// The operation's time: the event's, or else its host's newest (the
    /// stream's, for a host without keys); moves the clocks and counts a
    /// late event.
    fn tick(&mut self, at: &At<'_>) -> i64 {
        let clock = self.clock.unwrap_or(i64::MIN);
        let scope = self.hosts.get_mut(at.host);
        let now = at.ts.unwrap_or(scope.as_ref().map_or(clock.max(0), |scope| scope.clock));
        if let Some(scope) = scope {
            if now < scope.clock.saturating_sub(self.limits.lateness_ms) {
                self.late += 1;
            }
            scope.clock = scope.clock.max(now);
        }
        self.clock = Some(clock.max(now));
        now
    }

    /// Whether a quota lets `rule` hold `keys` more keys and `grow` more
    /// bytes; a refusal is counted.
    fn admit(&mut self, rule: &str, keys: u64, grow: i64) -> bool {
        let usage = self.usage.get(rule);
        let (rule_keys, rule_bytes) = usage.map_or((0, 0), |u| (u.keys, u.bytes));
        let limits = &self.limits;
        let grow = grow.max(0) as u64;
        let refused = (keys > 0
            && (rule_keys + keys > limits.max_keys as u64 || self.keys + keys > limits.total_keys as u64))
            || (grow > 0
                && (rule_bytes + grow > limits.max_bytes as u64 || self.bytes + grow > limits.total_bytes as u64));
        if refused {
            match self.usage.get_mut(rule) {
                Some(usage) => usage.refused += 1,
                None => {
                    self.usage.insert(Arc::from(rule), Usage { refused: 1, ..Usage::default() });
                }
            }
        }
        !refused
    }

    /// Stores `entry` (`bytes` with its key) under the new key in
    /// `scratch`, unless a quota refuses it.
    fn create(&mut self, journal: &mut Journal, at: &At<'_>, bytes: usize, entry: Entry) -> bool {
        if !self.admit(at.rule, 1, bytes as i64) {
            return false;
        }
        let full: Arc<str> = Arc::from(self.scratch.as_str());
        let host = match self.hosts.get_key_value(at.host) {
            Some((host, _)) => host.clone(),
            None => {
                let host: Arc<str> = Arc::from(at.host);
                let clock = at.ts.unwrap_or(self.clock.unwrap_or_default());
                self.hosts.insert(host.clone(), HostScope { clock, ..HostScope::default() });
                host
            }
        };
        self.insert(full.clone(), Slot { entry, bytes, queued: (0, 0), host });
        journal.undo.push(Undo::Created(full));
        true
    }

    /// Counts `key`'s entry's bytes again; the change.
    fn rebytes(&mut self, key: &Arc<str>) -> i64 {
        let Some(slot) = self.entries.get_mut(key) else { return 0 };
        let bytes = ENTRY_OVERHEAD + key.len() + slot.entry.bytes();
        let grow = bytes as i64 - slot.bytes as i64;
        slot.bytes = bytes;
        grow
    }

    /// Queues `key` again if its expiry came sooner than the one it is
    /// queued at (a value set again with a shorter time to live), so that
    /// it is not held past it.
    fn requeue_if_sooner(&mut self, key: &Arc<str>, expires: i64) {
        let Some(slot) = self.entries.get_mut(key) else { return };
        if expires < slot.queued.0.min(slot.queued.1) {
            slot.queued = (expires, expires);
            let host = slot.host.clone();
            self.queue.push(Reverse((expires, key.clone())));
            if let Some(scope) = self.hosts.get_mut(&host) {
                scope.queue.push(Reverse((expires, key.clone())));
            }
        }
    }

    /// Adds an entry that is not in the store: counted, queued by expiry
    /// in the store's queue and its host's (whose scope exists or starts
    /// now).
    fn insert(&mut self, key: Arc<str>, mut slot: Slot) {
        let expires = slot.entry.expires();
        slot.queued = (expires, expires);
        self.charge(&key, 1, slot.bytes as i64);
        self.queue.push(Reverse((expires, key.clone())));
        let scope = self
            .hosts
            .entry(slot.host.clone())
            .or_insert_with(|| HostScope { clock: i64::MIN, ..HostScope::default() });
        scope.live += 1;
        scope.queue.push(Reverse((expires, key.clone())));
        self.entries.insert(key, slot);
    }

    /// Removes `key`'s entry, if any, from the map and the usage; a host
    /// left without keys is forgotten.
    fn take(&mut self, key: &str) -> Option<Slot> {
        let (full, slot) = self.entries.remove_entry(key)?;
        self.charge(&full, -1, -(slot.bytes as i64));
        if let Some(scope) = self.hosts.get_mut(&slot.host) {
            scope.live -= 1;
            if scope.live == 0 {
                self.hosts.remove(&slot.host);
            }
        }
        Some(slot)
    }

    fn charge(&mut self, key: &Arc<str>, keys: i64, bytes: i64) {
        let rule = rule_of(key).unwrap_or_default();
        let usage = match self.usage.get_mut(rule) {
            Some(usage) => usage,
            None => self.usage.entry(Arc::from(rule)).or_default(),
        };
        usage.keys = usage.keys.saturating_add_signed(keys);
        usage.bytes = usage.bytes.saturating_add_signed(bytes);
        self.keys = self.keys.saturating_add_signed(keys);
        self.bytes = self.bytes.saturating_add_signed(bytes);
    }

    /// Drops the keys of `host` that expired more than the lateness before
    /// its newest event, and every key that expired more than the idle time
    /// before the stream's newest (noted in `journal`: a call that faults
    /// takes its drops back too). A key whose expiry moved since it was
    /// queued is queued again at its new expiry.
    fn sweep(&mut self, journal: &mut Journal, host: &str) {
        let lateness = self.limits.lateness_ms;
        while let Some(scope) = self.hosts.get_mut(host) {
            let horizon = scope.clock.saturating_sub(lateness);
            if scope.queue.peek().is_none_or(|Reverse((expires, _))| *expires > horizon) {
                break;
            }
            let Some(Reverse((expires, key))) = scope.queue.pop() else { break };
            self.expire(journal, key, expires, horizon, false);
        }
        let Some(clock) = self.clock else { return };
        let horizon = clock.saturating_sub(self.limits.idle_ms);
        while self.queue.peek().is_some_and(|Reverse((expires, _))| *expires <= horizon) {
            let Some(Reverse((expires, key))) = self.queue.pop() else { break };
            self.expire(journal, key, expires, horizon, true);
        }
    }

    /// Drops `key`, popped from its host's queue (or the store's, `idle`)
    /// at `expires`, if it expired by `horizon`; queues it again in that
    /// queue if its expiry moved past it.
    fn expire(&mut self, journal: &mut Journal, key: Arc<str>, expires: i64, horizon: i64, idle: bool) {
        let Some(slot) = self.entries.get_mut(&key) else { return };
        let queued = if idle { &mut slot.queued.1 } else { &mut slot.queued.0 };
        if *queued != expires {
            return; // a stale item: the entry was queued again since
        }
        let now_expires = slot.entry.expires();
        if now_expires > horizon {
            *queued = now_expires;
            if idle {
                self.queue.push(Reverse((now_expires, key)));
            } else {
                let host = slot.host.clone();
                if let Some(scope) = self.hosts.get_mut(&host) {
                    scope.queue.push(Reverse((now_expires, key)));
                }
            }
        } else if let Some(slot) = self.take(&key) {
            self.expired += 1;
            journal.undo.push(Undo::Removed { key, slot, expired: true });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(host: &str, ts: i64) -> At<'_> {
        At { rule: "rule-1", host, ts: Some(ts) }
    }

    #[test]
    fn a_value_lives_until_its_time_to_live_in_event_time_and_only_for_its_host() {
        let mut store = Store::new(StateLimits::default());
        let mut journal = Journal::default();
        assert!(store.set(&mut journal, &at("web-01", 1_000), "downloaded:/tmp/x", "1000", 600_000).unwrap());
        assert_eq!(store.get(&at("web-01", 600_999), "downloaded:/tmp/x").unwrap().as_deref(), Some("1000"));
        assert_eq!(store.get(&at("web-01", 601_000), "downloaded:/tmp/x").unwrap(), None);
        assert_eq!(store.get(&at("web-02", 2_000), "downloaded:/tmp/x").unwrap(), None);
        // Another rule, same host and key: its own state.
        let other = At { rule: "rule-2", host: "web-01", ts: Some(2_000) };
        assert_eq!(store.get(&other, "downloaded:/tmp/x").unwrap(), None);
        store.remove(&mut journal, &at("web-01", 3_000), "downloaded:/tmp/x").unwrap();
        assert_eq!(store.get(&at("web-01", 3_000), "downloaded:/tmp/x").unwrap(), None);
        assert_eq!(store.usage("rule-1").keys, 0);
    }

    #[test]
    fn counters_slide_and_sets_count_distinct_members_in_their_window() {
        let mut store = Store::new(StateLimits::default());
        let mut journal = Journal::default();
        let counts: Vec<u32> = [0, 10_000, 20_000, 59_999, 60_000, 130_000]
            .iter()
            .map(|&t| store.count(&mut journal, &at("h", t), "discovery", 60_000).unwrap())
            .collect();
        // (t - 60 s, t]: at 60,000 the occurrence at 0 has left the window.
        assert_eq!(counts, [1, 2, 3, 4, 4, 1]);
        let distinct: Vec<u32> = [("a", 0), ("b", 1_000), ("a", 2_000), ("c", 3_000), ("b", 700_000)]
            .iter()
            .map(|&(m, t)| store.distinct(&mut journal, &at("h", t), "curl", m, 600_000).unwrap())
            .collect();
        assert_eq!(distinct, [1, 2, 2, 3, 1]);
        // Kinds have keys of their own.
        assert_eq!(store.get(&at("h", 700_000), "curl").unwrap(), None);
    }

    #[test]
    fn a_journal_takes_back_a_faulted_calls_writes() {
        let mut store = Store::new(StateLimits::default());
        let mut kept = Journal::default();
        store.set(&mut kept, &at("h", 0), "a", "1", 1_000).unwrap();
        store.count(&mut kept, &at("h", 0), "n", 1_000).unwrap();
        kept.commit();
        let before = store.saved();
        let (keys, bytes) = (store.stats().keys, store.stats().bytes);
        let mut faulted = Journal::default();
        store.set(&mut faulted, &at("h", 10), "a", "2", 1_000).unwrap();
        store.set(&mut faulted, &at("h", 10), "b", "3", 1_000).unwrap();
        store.remove(&mut faulted, &at("h", 10), "a").unwrap();
        store.count(&mut faulted, &at("h", 10), "n", 1_000).unwrap();
        store.distinct(&mut faulted, &at("h", 10), "s", "m", 1_000).unwrap();
        store.rollback(&mut faulted);
        assert_eq!(store.saved().entries, before.entries);
        assert_eq!((store.stats().keys, store.stats().bytes), (keys, bytes));
        assert_eq!(store.count(&mut kept, &at("h", 20), "n", 1_000).unwrap(), 2);
    }

    /// Calls of random operations, some of them faulting: the store that
    /// took every call and rolled the faulted ones back holds exactly what
    /// a store that only ever saw the kept calls holds, and answers alike.
    #[test]
    fn rolled_back_calls_leave_no_trace_whatever_they_did() {
        let limits = StateLimits { lateness_ms: 50, max_bytes: 40_000, ..StateLimits::default() };
        let (mut all, mut kept) = (Store::new(limits.clone()), Store::new(limits));
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        let mut ts = 0;
        for call in 0..3_000 {
            let faults = next(3) == 0;
            // A faulted call's events are not newer than the last kept one's,
            // so both stores' clocks (which a fault does not take back) agree.
            if !faults {
                ts += next(40) as i64;
            }
            let ops: Vec<(u64, String, String, u64)> = (0..1 + next(6))
                .map(|_| (next(5), format!("k{}", next(12)), format!("m{}", next(30)), 20 + next(200)))
                .collect();
            let host = format!("h{}", next(3));
            let at = At { rule: "r", host: &host, ts: Some(ts) };
            let apply = |store: &mut Store, journal: &mut Journal| -> Vec<String> {
                ops.iter()
                    .map(|(kind, key, member, ms)| match kind {
                        0 => format!("{:?}", store.set(journal, &at, key, member, *ms)),
                        1 => format!("{:?}", store.get(&at, key)),
                        2 => format!("{:?}", store.remove(journal, &at, key)),
                        3 => format!("{:?}", store.count(journal, &at, key, *ms)),
                        _ => format!("{:?}", store.distinct(journal, &at, key, member, *ms)),
                    })
                    .collect()
            };
            let mut journal = Journal::default();
            let answers = apply(&mut all, &mut journal);
            if faults {
                all.rollback(&mut journal);
                continue;
            }
            journal.commit();
            let mut other = Journal::default();
            assert_eq!(apply(&mut kept, &mut other), answers, "call {call}");
        }
        // The hosts' clocks may differ: a faulted call's events still moved
        // them (as they do when the events are evaluated again, one per
        // call), and a clock decides nothing here but when to drop.
        assert_eq!(all.saved().entries, kept.saved().entries);
        let (a, b) = (all.stats(), kept.stats());
        assert_eq!((a.keys, a.bytes), (b.keys, b.bytes));
        assert!(a.expired > 100 && a.keys > 10, "the calls exercised little: {a:?}");
    }

    #[test]
    fn quotas_refuse_new_keys_and_growth_and_count_it() {
        let limits = StateLimits { max_keys: 2, max_bytes: 1 << 20, ..StateLimits::default() };
        let mut store = Store::new(limits);
        let mut journal = Journal::default();
        assert!(store.set(&mut journal, &at("h", 0), "a", "1", 1_000).unwrap());
        assert!(store.set(&mut journal, &at("h", 0), "b", "1", 1_000).unwrap());
        assert!(!store.set(&mut journal, &at("h", 0), "c", "1", 1_000).unwrap());
        assert_eq!(store.count(&mut journal, &at("h", 0), "n", 1_000).unwrap(), 1);
        // An existing key may still change.
        assert!(store.set(&mut journal, &at("h", 1), "a", "2", 1_000).unwrap());
        assert_eq!(store.usage("rule-1").refused, 2);
        let small = StateLimits { max_bytes: ENTRY_OVERHEAD + 64, ..StateLimits::default() };
        let mut store = Store::new(small);
        assert!(store.count(&mut journal, &at("h", 0), "n", 1_000).unwrap() == 1);
        let answers: Vec<u32> = (1..20).map(|t| store.count(&mut journal, &at("h", t), "n", 1_000).unwrap()).collect();
        // The counter stops growing at the quota; answers still include
        // the occurrence asked about.
        assert!(answers.windows(2).all(|w| w[1] >= w[0]), "{answers:?}");
        assert!(store.usage("rule-1").refused > 0);
        assert!(store.stats().bytes <= (ENTRY_OVERHEAD + 64) as u64);
        assert_eq!(
            store.set(&mut journal, &at("h", 0), &"k".repeat(2000), "v", 1).unwrap_err(),
            StateFault::KeyTooLong { len: 2000, limit: 1024 }
        );
    }

    #[test]
    fn expired_keys_are_dropped_by_their_hosts_time_after_the_lateness() {
        let limits = StateLimits { lateness_ms: 1_000, idle_ms: 100_000, ..StateLimits::default() };
        let mut store = Store::new(limits);
        let mut journal = Journal::default();
        for host in 0..100 {
            store.set(&mut journal, &at(&format!("h{host}"), 0), "k", "v", 5_000).unwrap();
        }
        store.count(&mut journal, &at("busy", 0), "n", 5_000).unwrap();
        store.count(&mut journal, &at("busy", 5_500), "n", 5_000).unwrap();
        // Another host's time does not expire a host's keys: the workers
        // of `--threads` see hosts at their own pace.
        store.set(&mut journal, &at("other", 50_000), "k", "v", 1).unwrap();
        assert_eq!(store.stats().keys, 102);
        assert_eq!(store.get(&at("h1", 4_999), "k").unwrap().as_deref(), Some("v"));
        // A host's own time does, after the lateness: 6,000 = 5,000 + 1,000.
        store.set(&mut journal, &at("h1", 6_000), "other", "v", 1).unwrap();
        assert_eq!(store.stats().expired, 1);
        // The counter's newest occurrence moved its expiry.
        store.count(&mut journal, &at("busy", 6_000), "n", 5_000).unwrap();
        assert_eq!(store.count(&mut journal, &at("busy", 6_100), "n", 5_000).unwrap(), 3);
        // An event more than the lateness behind its host is counted late.
        store.get(&at("h1", 0), "k").unwrap();
        assert_eq!(store.stats().late, 1);
        // Past the idle time behind the stream, quiet hosts' expired keys go
        // (at 106,001: h1's `other`, not yet the counter, expiring at 11,100).
        store.set(&mut journal, &at("other", 106_001), "k", "v", 1).unwrap();
        assert_eq!(store.stats().keys, 2, "{:?}", store.stats());
        assert_eq!(store.hosts.len(), 2, "hosts without keys are forgotten");
    }

    #[test]
    fn a_saved_store_restores_exactly_and_drops_rules_gone() {
        let mut store = Store::new(StateLimits::default());
        let mut journal = Journal::default();
        store.set(&mut journal, &at("h", 0), "a", "1", 10_000).unwrap();
        store.distinct(&mut journal, &at("h", 0), "s", "x", 10_000).unwrap();
        let gone = At { rule: "rule-gone", host: "h", ts: Some(0) };
        store.count(&mut journal, &gone, "n", 10_000).unwrap();
        let saved = store.saved();
        assert_eq!(saved, store.saved(), "the same state is the same bytes");
        let mut back = Store::new(StateLimits::default());
        let restored = back.restore(saved, &HashSet::from(["rule-1"]));
        assert_eq!((restored.keys, restored.dropped), (2, 1));
        assert_eq!(back.get(&at("h", 5_000), "a").unwrap().as_deref(), Some("1"));
        assert_eq!(back.distinct(&mut journal, &at("h", 5_000), "s", "y", 10_000).unwrap(), 2);
        assert_eq!(back.usage("rule-1").keys, 2);
        assert_eq!(back.usage("rule-gone").keys, 0);
    }

    /// Two workers' states of disjoint hosts become one partition's: each
    /// keeps only the hosts the new partition owns, their keys and clocks
    /// intact; the stream's clock is the earlier of the two.
    #[test]
    fn saved_stores_of_two_partitions_merge_by_host() {
        let mut journal = Journal::default();
        let mut one = Store::new(StateLimits::default());
        one.set(&mut journal, &at("web-01", 5_000), "a", "1", 60_000).unwrap();
        one.set(&mut journal, &at("web-02", 9_000), "a", "2", 60_000).unwrap();
        let mut two = Store::new(StateLimits::default());
        two.count(&mut journal, &at("db-01", 7_000), "n", 60_000).unwrap();
        two.set(&mut journal, &at("db-02", 8_000), "a", "3", 60_000).unwrap();
        let (mut merged, mut theirs) = (one.saved(), two.saved());
        merged.retain_hosts(|host| host != "web-02");
        theirs.retain_hosts(|host| host == "db-01");
        merged.merge(theirs);
        let mut back = Store::new(StateLimits::default());
        let restored = back.restore(merged, &HashSet::from(["rule-1"]));
        assert_eq!(restored.keys, 2);
        assert_eq!(back.get(&at("web-01", 6_000), "a").unwrap().as_deref(), Some("1"));
        assert_eq!(back.get(&at("web-02", 9_500), "a").unwrap(), None, "not this partition's host");
        assert_eq!(back.count(&mut journal, &at("db-01", 7_500), "n", 60_000).unwrap(), 2);
        assert_eq!(back.get(&at("db-02", 8_500), "a").unwrap(), None);
        assert_eq!(back.stats().keys, 2);
    }
}
