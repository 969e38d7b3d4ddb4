//! What a rule may consume: the sandbox's limits as configuration.

use crate::shape::CompileLimits;
use dac_detect::{Budget, CorrelationLimits};
use std::time::Duration;

/// How long a rule instance lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Isolation {
    /// One instance per rule, reused from event to event until it faults.
    /// A rule's globals and heap persist between documents (a rule may keep
    /// state on purpose, e.g. a counter), but nothing is shared between
    /// rules, and a faulted instance is discarded and re-created.
    #[default]
    ReusedInstance,
    /// A fresh instance for every (rule, event): no state can survive from
    /// one document to the next. Costs ~8 µs per evaluation (docs/performance.md).
    FreshInstancePerEvent,
}

/// Per-evaluation limits, applied to every rule the same way.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Wall-clock budget of one evaluation (epoch interruption; checked
    /// every [`Limits::EPOCH_TICK`]). `None` disables it.
    pub deadline: Option<Duration>,
    /// Deterministic instruction budget of one evaluation (wasmtime fuel),
    /// costing ~5–10 % throughput. `None` disables it.
    pub fuel: Option<u64>,
    /// Cap on an instance's linear memory, in bytes.
    pub memory_bytes: usize,
    /// Cap on the host stack wasm may use, in bytes (deep recursion traps).
    pub wasm_stack_bytes: usize,
    /// Findings one evaluation may return; more is a fault.
    pub max_findings: usize,
    /// Bytes one finding (message and matched values) may hold; more is a
    /// fault.
    pub max_finding_bytes: usize,
    /// Log lines a rule may emit per second (a burst of this size is
    /// allowed); the rest are dropped and counted.
    pub log_lines_per_second: u32,
    /// Longest log line kept; longer ones are cut and marked.
    pub max_log_line_bytes: usize,
    pub isolation: Isolation,
    /// What a component may ask of the compiler, checked before it is
    /// compiled. See [`CompileLimits`].
    pub compile: CompileLimits,
    /// What one declarative rule (seed YAML, Sigma) may cost the host to
    /// parse and compile: YAML depth and expanded size, condition depth,
    /// expression size, values, regular expressions. See [`Budget`].
    pub declarative: Budget,
    /// What Sigma correlations' windows may hold in the host, per
    /// correlation, and how late a match may arrive. See
    /// [`CorrelationLimits`].
    pub correlation: CorrelationLimits,
    /// What code rules' keyed state (`dac:rule/state`) may hold in the
    /// host, per rule and per rule set. See [`dac_state::StateLimits`].
    pub state: dac_state::StateLimits,
}

impl Limits {
    /// Granularity of the deadline.
    pub const EPOCH_TICK: Duration = Duration::from_millis(5);
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            deadline: Some(Duration::from_millis(200)),
            fuel: None,
            memory_bytes: 64 << 20,
            wasm_stack_bytes: 512 << 10,
            max_findings: 100,
            max_finding_bytes: 64 << 10,
            log_lines_per_second: 20,
            max_log_line_bytes: 2048,
            isolation: Isolation::ReusedInstance,
            compile: CompileLimits::default(),
            declarative: Budget::default(),
            correlation: CorrelationLimits::default(),
            state: dac_state::StateLimits::default(),
        }
    }
}
