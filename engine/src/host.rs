//! The host side of the rule contract (`wit/rule.wit`, 0.2.0, and
//! `wit/0.1.0/rule.wit`): what a rule's imports do. `dac:rule/types` lends
//! the rule the events under evaluation; `dac:rule/host` is its log,
//! rate-limited and attributed; `dac:rule/state` (0.2.0) is its keyed
//! state, kept in the rule set's [`dac_state::Store`]. Both versions are
//! served by the same [`HostState`].

use crate::limits::Limits;
use crate::state::{lock_state, SharedState, PARTITION_FIELD};
use crate::wasi::{HasWasi, WasiState};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use wasmtime::component::{HasSelf, Linker, Resource, ResourceType};
use wasmtime::ResourceLimiter;

/// `dac:rule@0.2.0`, the world rules are built for today.
pub(crate) mod v0_2 {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "rule",
        with: { "dac:rule/types.batch": super::BatchHandle },
        // A state operation may fault the call (a key over the limit, an
        // event outside the batch).
        imports: { "dac:rule/state": trappable },
    });
}

/// `dac:rule@0.1.0`: one event per call, every field read through the
/// host. Its components run unchanged.
pub(crate) mod v0_1 {
    wasmtime::component::bindgen!({
        path: "../wit/0.1.0",
        world: "rule",
        with: { "dac:rule/types.event": super::EventHandle },
    });
}

/// The world a rule component targets, told by the `dac:rule/types`
/// version it imports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum World {
    V0_1,
    V0_2,
}

impl World {
    /// The world of a component importing `name`, if it is one of ours.
    pub(crate) fn of_import(name: &str) -> Option<World> {
        match name {
            "dac:rule/types@0.1.0" | "dac:rule/host@0.1.0" => Some(World::V0_1),
            "dac:rule/types@0.2.0" | "dac:rule/host@0.2.0" | STATE_INTERFACE => Some(World::V0_2),
            _ => None,
        }
    }
}

/// The WIT interfaces this host implements, by their full import names.
pub const PROVIDED_INTERFACES: [&str; 5] =
    ["dac:rule/types@0.2.0", "dac:rule/host@0.2.0", STATE_INTERFACE, "dac:rule/types@0.1.0", "dac:rule/host@0.1.0"];

/// The keyed state's interface; a component importing it keeps state in
/// the host.
pub(crate) const STATE_INTERFACE: &str = "dac:rule/state@0.2.0";

impl World {
    /// The world-level name of the resource its `evaluate` borrows (see
    /// [`add_to_linker`]).
    pub(crate) fn top_level_resource(self) -> &'static str {
        match self {
            World::V0_1 => "event",
            World::V0_2 => "batch",
        }
    }
}

/// The host side of 0.1.0's `event` resource. The event itself lives in
/// [`HostState`] (the one event of the call), so a handle needs no table
/// entry.
pub struct EventHandle;

/// The host side of 0.2.0's `batch` resource: the events in
/// [`HostState`], addressed by position; one per call, no table entry.
pub struct BatchHandle;

/// Links the imports of `world`, served from [`HostState`].
pub(crate) fn add_to_linker(linker: &mut Linker<HostState>, world: World) -> wasmtime::Result<()> {
    // The world's `use types.{event}` (0.1.0) or `use types.{batch}`
    // (0.2.0) also imports the resource at the top level, where it must be
    // the very type the interface defines.
    let name = world.top_level_resource();
    match world {
        World::V0_2 => {
            v0_2::Rule::add_to_linker::<HostState, HasSelf<HostState>>(linker, |state| state)?;
            linker.root().resource(name, ResourceType::host::<BatchHandle>(), |_, _| Ok(()))
        }
        World::V0_1 => {
            v0_1::Rule::add_to_linker::<HostState, HasSelf<HostState>>(linker, |state| state)?;
            linker.root().resource(name, ResourceType::host::<EventHandle>(), |_, _| Ok(()))
        }
    }
}

/// Per-store state: what host functions can see.
pub struct HostState {
    /// The events under evaluation, moved in for the duration of one call
    /// (0.1.0: one).
    pub(crate) events: Vec<dac_event::Event>,
    pub(crate) memory: MemoryCap,
    pub(crate) log: Arc<RuleLog>,
    /// The latest error-level log line of the current call (the SDK's
    /// "rule panicked: …"), attached to the trap that usually follows it.
    pub(crate) last_error_log: Option<String>,
    /// The inert WASI context, created on first use.
    pub(crate) wasi: WasiState,
    /// The rule's keyed state, when it imports `dac:rule/state`.
    pub(crate) state: Option<StateAccess>,
}

impl HostState {
    pub(crate) fn new(limits: &Limits, log: Arc<RuleLog>, state: Option<StateAccess>) -> HostState {
        HostState {
            events: Vec::new(),
            memory: MemoryCap::new(limits.memory_bytes),
            log,
            last_error_log: None,
            wasi: WasiState::default(),
            state,
        }
    }
}

/// One instance's way into its rule set's keyed state: the store, the
/// rule it writes as, and the current call's journal, so that a call that
/// faults takes its writes back.
pub(crate) struct StateAccess {
    store: SharedState,
    rule: Arc<str>,
    journal: dac_state::Journal,
    /// The limit a state operation of this call broke, for the fault.
    pub(crate) fault: Option<dac_state::StateFault>,
}

impl StateAccess {
    pub(crate) fn new(store: SharedState, rule: Arc<str>) -> StateAccess {
        StateAccess { store, rule, journal: dac_state::Journal::default(), fault: None }
    }

    /// Ends a call: keeps its writes, or takes them back if it failed.
    pub(crate) fn finish(&mut self, failed: bool) {
        if failed {
            if !self.journal.is_empty() {
                lock_state(&self.store).rollback(&mut self.journal);
            }
        } else {
            self.journal.commit();
        }
        self.fault = None;
    }
}

impl HostState {
    /// Runs a state operation for the event at `event` of the call's batch:
    /// its host scopes the key, its `ts` is the operation's time.
    fn with_state<T>(
        &mut self,
        event: u32,
        op: impl FnOnce(
            &mut dac_state::Store,
            &mut dac_state::Journal,
            &dac_state::At<'_>,
        ) -> Result<T, dac_state::StateFault>,
    ) -> wasmtime::Result<T> {
        let events = self.events.len();
        let Some(access) = self.state.as_mut() else {
            // A component evaluated outside an engine (which lends every
            // rule its rule set's store) has nowhere to keep state.
            wasmtime::bail!("the rule asked for keyed state, but it runs outside an engine that keeps any");
        };
        let Some(event) = self.events.get(event as usize) else {
            wasmtime::bail!("a state operation named event {event}, but the batch holds {events} events");
        };
        let host = match event.raw(PARTITION_FIELD) {
            None | Some(serde_json::Value::Null) => std::borrow::Cow::Borrowed(""),
            Some(serde_json::Value::String(host)) => std::borrow::Cow::Borrowed(host.as_str()),
            Some(other) => std::borrow::Cow::Owned(other.to_string()),
        };
        let at = dac_state::At { rule: &access.rule, host: &host, ts: crate::policy::event_time(event) };
        let result = op(&mut lock_state(&access.store), &mut access.journal, &at);
        result.map_err(|fault| {
            access.fault = Some(fault.clone());
            wasmtime::Error::new(fault)
        })
    }
}

impl v0_2::dac::rule::state::Host for HostState {
    fn get(&mut self, event: u32, key: String) -> wasmtime::Result<Option<String>> {
        self.with_state(event, |store, _, at| store.get(at, &key))
    }

    fn set(&mut self, event: u32, key: String, value: String, ttl_ms: u64) -> wasmtime::Result<bool> {
        self.with_state(event, |store, journal, at| store.set(journal, at, &key, &value, ttl_ms))
    }

    fn remove(&mut self, event: u32, key: String) -> wasmtime::Result<()> {
        self.with_state(event, |store, journal, at| store.remove(journal, at, &key))
    }

    fn count(&mut self, event: u32, key: String, window_ms: u64) -> wasmtime::Result<u32> {
        self.with_state(event, |store, journal, at| store.count(journal, at, &key, window_ms))
    }

    fn distinct(&mut self, event: u32, key: String, member: String, window_ms: u64) -> wasmtime::Result<u32> {
        self.with_state(event, |store, journal, at| store.distinct(journal, at, &key, &member, window_ms))
    }
}

impl HasWasi for HostState {
    fn wasi_state(&mut self) -> &mut WasiState {
        &mut self.wasi
    }
}

impl HostState {
    /// The event at `index` in the call's batch; a position outside it
    /// reads nothing.
    fn event(&self, index: u32) -> Option<&dac_event::Event> {
        self.events.get(index as usize)
    }

    fn emit_log(&mut self, level: Level, message: String) {
        if let Some(error) = self.log.emit(level, message) {
            self.last_error_log = Some(error);
        }
    }
}

/// The log levels, shared by both versions of `dac:rule/host`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Level {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

/// Both versions' `dac:rule/types` and `dac:rule/host`: the same event
/// lookups and the same log, over each version's generated types.
macro_rules! serve_world {
    ($v:ident) => {
        impl $v::dac::rule::types::Host for HostState {}

        impl $v::dac::rule::host::Host for HostState {
            fn log(&mut self, level: $v::dac::rule::host::Level, message: String) {
                use $v::dac::rule::host::Level as L;
                let level = match level {
                    L::Trace => Level::Trace,
                    L::Debug => Level::Debug,
                    L::Info => Level::Info,
                    L::Warn => Level::Warn,
                    L::Error => Level::Error,
                };
                self.emit_log(level, message);
            }
        }

        impl From<dac_event::Value<'_>> for $v::dac::rule::types::Value {
            fn from(value: dac_event::Value<'_>) -> $v::dac::rule::types::Value {
                use dac_event::Value as V;
                use $v::dac::rule::types::Value as W;
                let size = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
                match value {
                    V::Null => W::Null,
                    V::Boolean(b) => W::Boolean(b),
                    V::Integer(i) => W::Integer(i),
                    V::Float(f) => W::Float(f),
                    V::Text(s) => W::Text(s.to_owned()),
                    V::DateTime(ms) => W::Datetime(ms),
                    V::ObjectId(hex) => W::ObjectId(hex.to_owned()),
                    V::Binary(bytes) => W::Binary(bytes),
                    V::Array(n) => W::Array(size(n)),
                    V::Document(n) => W::Document(size(n)),
                    V::Other(json) => W::Other(json),
                }
            }
        }

        impl From<$v::dac::rule::types::Severity> for crate::rule::Severity {
            fn from(s: $v::dac::rule::types::Severity) -> crate::rule::Severity {
                use crate::rule::Severity;
                use $v::dac::rule::types::Severity as W;
                match s {
                    W::Informational => Severity::Informational,
                    W::Low => Severity::Low,
                    W::Medium => Severity::Medium,
                    W::High => Severity::High,
                    W::Critical => Severity::Critical,
                }
            }
        }
    };
}

serve_world!(v0_1);
serve_world!(v0_2);

impl v0_1::dac::rule::types::HostEvent for HostState {
    fn get(&mut self, _event: Resource<EventHandle>, path: String) -> Option<v0_1::dac::rule::types::Value> {
        self.event(0)?.get(&path).map(Into::into)
    }

    fn get_segments(
        &mut self,
        _event: Resource<EventHandle>,
        segments: Vec<String>,
    ) -> Option<v0_1::dac::rule::types::Value> {
        self.event(0)?.get_segments(&segments).map(Into::into)
    }

    fn keys(&mut self, _event: Resource<EventHandle>, path: String) -> Option<Vec<String>> {
        self.event(0)?.keys(&path).map(|keys| keys.into_iter().map(str::to_owned).collect())
    }

    fn drop(&mut self, _event: Resource<EventHandle>) -> wasmtime::Result<()> {
        // Rules only ever receive borrows; the event is the host's.
        Ok(())
    }
}

impl v0_2::dac::rule::types::HostBatch for HostState {
    fn get(
        &mut self,
        _batch: Resource<BatchHandle>,
        event: u32,
        path: String,
    ) -> Option<v0_2::dac::rule::types::Value> {
        self.event(event)?.get(&path).map(Into::into)
    }

    fn get_segments(
        &mut self,
        _batch: Resource<BatchHandle>,
        event: u32,
        segments: Vec<String>,
    ) -> Option<v0_2::dac::rule::types::Value> {
        self.event(event)?.get_segments(&segments).map(Into::into)
    }

    fn keys(&mut self, _batch: Resource<BatchHandle>, event: u32, path: String) -> Option<Vec<String>> {
        self.event(event)?.keys(&path).map(|keys| keys.into_iter().map(str::to_owned).collect())
    }

    fn drop(&mut self, _batch: Resource<BatchHandle>) -> wasmtime::Result<()> {
        // Rules only ever receive borrows; the events are the host's.
        Ok(())
    }
}

/// Caps a rule instance's memory as a whole — every linear memory and
/// every table of every core instance in its store, counted together — and
/// remembers a refusal, so the fault can say that the memory limit, not
/// some other trap, ended the evaluation. A component can declare many
/// memories and tables; capping each on its own let one pass a 64 MiB cap
/// by gigabytes.
pub(crate) struct MemoryCap {
    pub(crate) limit: usize,
    /// Bytes of memories and tables the store holds now.
    pub(crate) used: usize,
    pub(crate) refused: Option<usize>,
}

/// What one table element costs the host: a pointer (wasmtime's funcref and
/// externref tables hold one per slot).
pub(crate) const TABLE_ELEMENT_BYTES: usize = 8;

/// Core instances, memories and tables one rule's store may create. The
/// components of every supported toolchain (Rust, C, Python, JS; the
/// language tests run them) need a few of each; these leave a wide margin
/// and keep a hostile component from creating thousands of empty ones,
/// whose host bookkeeping the byte cap would not see.
pub(crate) const MAX_INSTANCES: usize = 200;
pub(crate) const MAX_MEMORIES: usize = 50;
pub(crate) const MAX_TABLES: usize = 200;

impl MemoryCap {
    pub(crate) fn new(limit: usize) -> MemoryCap {
        MemoryCap { limit, used: 0, refused: None }
    }

    fn grow(&mut self, current: usize, desired: usize) -> wasmtime::Result<bool> {
        let wanted = self.used.saturating_sub(current).saturating_add(desired);
        if wanted > self.limit {
            self.refused = Some(wanted);
            wasmtime::bail!("memory limit of {} bytes exceeded (memories and tables would hold {wanted})", self.limit);
        }
        self.used = wanted;
        Ok(true)
    }
}

impl ResourceLimiter for MemoryCap {
    fn memory_growing(&mut self, current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        self.grow(current, desired)
    }

    fn table_growing(&mut self, current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        self.grow(current.saturating_mul(TABLE_ELEMENT_BYTES), desired.saturating_mul(TABLE_ELEMENT_BYTES))
    }

    fn instances(&self) -> usize {
        MAX_INSTANCES
    }

    fn memories(&self) -> usize {
        MAX_MEMORIES
    }

    fn tables(&self) -> usize {
        MAX_TABLES
    }
}

/// A rule's log channel: rate-limited, counted, attributed, escaped.
pub struct RuleLog {
    label: Mutex<String>,
    bucket: Mutex<TokenBucket>,
    /// The limit the rule shares with others (a tenant's), when it has one.
    group: Option<Arc<LogGroup>>,
    max_line_bytes: usize,
    emitted: AtomicU64,
    dropped: AtomicU64,
}

/// A log rate limit and a name shared by several rules: a `dac serve`
/// tenant's, so that many rules, or rules loaded again and again by dry
/// runs (each with a fresh per-rule limit), cannot flood the server's log
/// together. Lines name the group (`tenant=…`).
pub struct LogGroup {
    name: String,
    bucket: Mutex<TokenBucket>,
    dropped: AtomicU64,
}

impl LogGroup {
    /// A group named `name` that lets `lines_per_second` lines through (a
    /// burst of that many is allowed).
    pub fn new(name: impl Into<String>, lines_per_second: u32) -> LogGroup {
        LogGroup {
            name: name.into(),
            bucket: Mutex::new(TokenBucket::new(lines_per_second)),
            dropped: AtomicU64::new(0),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Lines of the group's rules dropped by the group's own limit.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

struct TokenBucket {
    tokens: f64,
    per_second: f64,
    last: Instant,
}

impl RuleLog {
    pub(crate) fn new(label: String, limits: &Limits, group: Option<Arc<LogGroup>>) -> RuleLog {
        RuleLog {
            label: Mutex::new(escape_controls(&label).into_owned()),
            bucket: Mutex::new(TokenBucket::new(limits.log_lines_per_second)),
            group,
            max_line_bytes: limits.max_log_line_bytes,
            emitted: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
        }
    }

    /// Names the rule in its log lines from now on.
    pub(crate) fn relabel(&self, label: String) {
        *lock(&self.label) = escape_controls(&label).into_owned();
    }

    /// Emits (or counts as dropped) one line; returns it when it is at
    /// error level, for the fault that may follow. The line is the rule's
    /// text, so its control characters are escaped: a rule cannot end the
    /// server's log line and forge the next one, nor colour the terminal.
    pub(crate) fn emit(&self, level: Level, mut message: String) -> Option<String> {
        if message.len() > self.max_line_bytes {
            let mut cut = self.max_line_bytes;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            let total = message.len();
            message.truncate(cut);
            message.push_str(&format!("… [cut, {total} bytes]"));
        }
        if let std::borrow::Cow::Owned(escaped) = escape_controls(&message) {
            message = escaped;
        }
        let error = matches!(level, Level::Error).then(|| message.clone());
        if !lock(&self.bucket).take() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return error;
        }
        if let Some(group) = &self.group {
            if !lock(&group.bucket).take() {
                group.dropped.fetch_add(1, Ordering::Relaxed);
                self.dropped.fetch_add(1, Ordering::Relaxed);
                return error;
            }
        }
        self.emitted.fetch_add(1, Ordering::Relaxed);
        let rule = lock(&self.label).clone();
        macro_rules! line {
            ($level:ident) => {
                match &self.group {
                    Some(group) => tracing::$level!(target: "dac::rule", tenant = %group.name, %rule, "{message}"),
                    None => tracing::$level!(target: "dac::rule", %rule, "{message}"),
                }
            };
        }
        match level {
            Level::Trace => line!(trace),
            Level::Debug => line!(debug),
            Level::Info => line!(info),
            Level::Warn => line!(warn),
            Level::Error => line!(error),
        }
        error
    }

    /// Log lines emitted and dropped by the rate limit so far.
    pub fn counts(&self) -> (u64, u64) {
        (self.emitted.load(Ordering::Relaxed), self.dropped.load(Ordering::Relaxed))
    }
}

/// `text` with every control character (newlines, carriage returns, the
/// terminal's escape, …) and every Unicode line separator or bidirectional
/// override written as a `\u{…}` escape (`\n`, `\r`, `\t` for the usual
/// three), so it stays on one line and reads as it is.
pub fn escape_controls(text: &str) -> std::borrow::Cow<'_, str> {
    fn hostile(c: char) -> bool {
        c.is_control()
            || matches!(c, '\u{2028}' | '\u{2029}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
    }
    if !text.chars().any(hostile) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if hostile(c) => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    std::borrow::Cow::Owned(out)
}

impl TokenBucket {
    fn new(lines_per_second: u32) -> TokenBucket {
        let per_second = f64::from(lines_per_second.max(1));
        TokenBucket { tokens: per_second, per_second, last: Instant::now() }
    }

    fn take(&mut self) -> bool {
        let now = Instant::now();
        let refill = now.duration_since(self.last).as_secs_f64() * self.per_second;
        self.tokens = (self.tokens + refill).min(self.per_second);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// A lock that survives a panic elsewhere: these guard plain values.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_line_separators_and_bidi_overrides_are_escaped() {
        assert!(matches!(escape_controls("plain text, ünïcode"), std::borrow::Cow::Borrowed(_)));
        assert_eq!(escape_controls("a\nb\r\tc"), r"a\nb\r\tc");
        assert_eq!(escape_controls("\u{1b}[31mred\u{7}"), r"\u{1b}[31mred\u{7}");
        assert_eq!(escape_controls("x\u{2028}y\u{202e}z\u{2066}"), r"x\u{2028}y\u{202e}z\u{2066}");
    }

    #[test]
    fn a_log_group_limits_its_rules_together() {
        let limits = Limits { log_lines_per_second: 5, ..Limits::default() };
        let group = Arc::new(LogGroup::new("acme", 6));
        let rules: Vec<RuleLog> =
            (0..3).map(|i| RuleLog::new(format!("rule-{i}"), &limits, Some(group.clone()))).collect();
        for rule in &rules {
            for _ in 0..5 {
                rule.emit(Level::Info, "line".into());
            }
        }
        // Each rule may write 5 at once, but the group only 6 in all.
        let emitted: u64 = rules.iter().map(|r| r.counts().0).sum();
        let dropped: u64 = rules.iter().map(|r| r.counts().1).sum();
        assert_eq!((emitted, dropped, group.dropped()), (6, 9, 9));
    }
}
