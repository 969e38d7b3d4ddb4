//! The host side of the rule contract (`wit/rule.wit`): what a rule's
//! imports do. `dac:rule/types` lends the rule the event under evaluation;
//! `dac:rule/host` is its log, rate-limited and attributed.

use crate::limits::Limits;
use crate::wasi::{HasWasi, WasiState};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use wasmtime::component::{HasSelf, Linker, Resource, ResourceType};
use wasmtime::ResourceLimiter;

pub(crate) mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "rule",
        with: { "dac:rule/types.event": super::EventHandle },
    });
}

pub(crate) use bindings::dac::rule::types as wit;

/// The WIT interfaces this host implements, by their full import names.
pub const PROVIDED_INTERFACES: [&str; 2] = ["dac:rule/types@0.1.0", "dac:rule/host@0.1.0"];

/// The world-level name of the `event` resource (see [`add_to_linker`]).
pub(crate) const TOP_LEVEL_EVENT: &str = "event";

/// The host side of the `event` resource. The event itself lives in
/// [`HostState`]: a store evaluates one event at a time, so a handle needs
/// no table entry.
pub struct EventHandle;

/// Links the rule contract's imports, served from [`HostState`].
pub(crate) fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    bindings::Rule::add_to_linker::<HostState, HasSelf<HostState>>(linker, |state| state)?;
    // The world's `use types.{event}` also imports the resource at the top
    // level, where it must be the very type the interface defines.
    linker.root().resource(TOP_LEVEL_EVENT, ResourceType::host::<EventHandle>(), |_, _| Ok(()))
}

/// Per-store state: what host functions can see.
pub struct HostState {
    /// The event under evaluation, moved in for the duration of one call.
    pub(crate) event: dac_event::Event,
    pub(crate) memory: MemoryCap,
    pub(crate) log: Arc<RuleLog>,
    /// The latest error-level log line of the current call (the SDK's
    /// "rule panicked: …"), attached to the trap that usually follows it.
    pub(crate) last_error_log: Option<String>,
    /// The inert WASI context, created on first use.
    pub(crate) wasi: WasiState,
}

impl HostState {
    pub(crate) fn new(limits: &Limits, log: Arc<RuleLog>) -> HostState {
        HostState {
            event: dac_event::Event::default(),
            memory: MemoryCap::new(limits.memory_bytes),
            log,
            last_error_log: None,
            wasi: WasiState::default(),
        }
    }
}

impl HasWasi for HostState {
    fn wasi_state(&mut self) -> &mut WasiState {
        &mut self.wasi
    }
}

impl wit::Host for HostState {}

impl wit::HostEvent for HostState {
    fn get(&mut self, _event: Resource<EventHandle>, path: String) -> Option<wit::Value> {
        self.event.get(&path).map(to_wit)
    }

    fn get_segments(&mut self, _event: Resource<EventHandle>, segments: Vec<String>) -> Option<wit::Value> {
        self.event.get_segments(&segments).map(to_wit)
    }

    fn keys(&mut self, _event: Resource<EventHandle>, path: String) -> Option<Vec<String>> {
        self.event.keys(&path).map(|keys| keys.into_iter().map(str::to_owned).collect())
    }

    fn drop(&mut self, _event: Resource<EventHandle>) -> wasmtime::Result<()> {
        // Rules only ever receive borrows; the event is owned by the host.
        Ok(())
    }
}

impl bindings::dac::rule::host::Host for HostState {
    fn log(&mut self, level: bindings::dac::rule::host::Level, message: String) {
        if let Some(error) = self.log.emit(level, message) {
            self.last_error_log = Some(error);
        }
    }
}

fn to_wit(value: dac_event::Value<'_>) -> wit::Value {
    use dac_event::Value as V;
    let size = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
    match value {
        V::Null => wit::Value::Null,
        V::Boolean(b) => wit::Value::Boolean(b),
        V::Integer(i) => wit::Value::Integer(i),
        V::Float(f) => wit::Value::Float(f),
        V::Text(s) => wit::Value::Text(s.to_owned()),
        V::DateTime(ms) => wit::Value::Datetime(ms),
        V::ObjectId(hex) => wit::Value::ObjectId(hex.to_owned()),
        V::Binary(bytes) => wit::Value::Binary(bytes),
        V::Array(n) => wit::Value::Array(size(n)),
        V::Document(n) => wit::Value::Document(size(n)),
        V::Other(json) => wit::Value::Other(json),
    }
}

impl From<wit::Severity> for crate::rule::Severity {
    fn from(s: wit::Severity) -> crate::rule::Severity {
        use crate::rule::Severity;
        match s {
            wit::Severity::Informational => Severity::Informational,
            wit::Severity::Low => Severity::Low,
            wit::Severity::Medium => Severity::Medium,
            wit::Severity::High => Severity::High,
            wit::Severity::Critical => Severity::Critical,
        }
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
            wasmtime::bail!(
                "memory limit of {} bytes exceeded (memories and tables would hold {wanted})",
                self.limit
            );
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

/// A rule's log channel: rate-limited, counted, attributed.
pub struct RuleLog {
    label: Mutex<String>,
    bucket: Mutex<TokenBucket>,
    max_line_bytes: usize,
    emitted: AtomicU64,
    dropped: AtomicU64,
}

struct TokenBucket {
    tokens: f64,
    per_second: f64,
    last: Instant,
}

impl RuleLog {
    pub(crate) fn new(label: String, limits: &Limits) -> RuleLog {
        let per_second = f64::from(limits.log_lines_per_second.max(1));
        RuleLog {
            label: Mutex::new(label),
            bucket: Mutex::new(TokenBucket { tokens: per_second, per_second, last: Instant::now() }),
            max_line_bytes: limits.max_log_line_bytes,
            emitted: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
        }
    }

    /// Names the rule in its log lines from now on.
    pub(crate) fn relabel(&self, label: String) {
        *lock(&self.label) = label;
    }

    /// Emits (or counts as dropped) one line; returns it when it is at
    /// error level, for the fault that may follow.
    pub(crate) fn emit(&self, level: bindings::dac::rule::host::Level, mut message: String) -> Option<String> {
        use bindings::dac::rule::host::Level;
        if message.len() > self.max_line_bytes {
            let mut cut = self.max_line_bytes;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            let total = message.len();
            message.truncate(cut);
            message.push_str(&format!("… [cut, {total} bytes]"));
        }
        let error = matches!(level, Level::Error).then(|| message.clone());
        if !lock(&self.bucket).take() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return error;
        }
        self.emitted.fetch_add(1, Ordering::Relaxed);
        let rule = lock(&self.label).clone();
        match level {
            Level::Trace => tracing::trace!(target: "dac::rule", %rule, "{message}"),
            Level::Debug => tracing::debug!(target: "dac::rule", %rule, "{message}"),
            Level::Info => tracing::info!(target: "dac::rule", %rule, "{message}"),
            Level::Warn => tracing::warn!(target: "dac::rule", %rule, "{message}"),
            Level::Error => tracing::error!(target: "dac::rule", %rule, "{message}"),
        }
        error
    }

    /// Log lines emitted and dropped by the rate limit so far.
    pub fn counts(&self) -> (u64, u64) {
        (self.emitted.load(Ordering::Relaxed), self.dropped.load(Ordering::Relaxed))
    }
}

impl TokenBucket {
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
