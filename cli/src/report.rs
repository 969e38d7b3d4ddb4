//! What the commands tell people on stderr: the log, and a run's summary.

use dac_engine::{AlertPolicy, Engine, Stats};
use std::io::{IsTerminal, Write};
use std::time::Duration;

/// Logs to stderr, filtered by `DAC_LOG` (default `info`, or `warn` with
/// `-q`), in colour only on a terminal.
pub fn init_logging(quiet: bool) {
    let default = if quiet { "warn" } else { "info" };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("DAC_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default)),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .init();
}

/// The closing summary on stderr: totals, then one line per rule.
pub fn print_summary(program: &str, engine: &Engine, stats: &Stats, source: &str, elapsed: Duration) {
    let seconds = elapsed.as_secs_f64();
    let rate = if seconds > 0.0 { stats.events as f64 / seconds } else { 0.0 };
    let mut out = std::io::stderr().lock();
    let _ = writeln!(
        out,
        "{program}: {} events from {source} in {seconds:.3} s ({rate:.0} events/s); {} alerts, {} rule faults, {} malformed skipped, {} repaired (non-UTF-8)",
        stats.events,
        stats.alerts,
        engine.faults(),
        stats.malformed,
        stats.repaired_utf8,
    );
    let _ = writeln!(out, "  prefilter: {} of {} events needed no rule at all", stats.prefiltered_events, stats.events);
    let width = engine.infos().iter().map(|i| i.name.len()).max().unwrap_or(0);
    for (index, (info, counters)) in engine.rules().enumerate() {
        let mut line = format!(
            "  {:>7} alerts  {:<width$}  {}  ({} evaluated)",
            counters.alerts,
            info.name,
            info.file_name(),
            counters.evaluations,
        );
        if counters.suppressed + counters.folded > 0 {
            line.push_str(&format!("  ({} suppressed, {} folded)", counters.suppressed, counters.folded));
        }
        if counters.correlated > 0 {
            line.push_str(&format!("  ({} only fed correlations, not alerted)", counters.correlated));
        }
        if let Some(windows) = engine.correlation_stats(index) {
            line.push_str(&format!("  (correlation: {} matches in windows", windows.matches));
            for (count, what) in [
                (windows.late, "too late"),
                (windows.untimed, "without a time"),
                (windows.refused, "refused at the state limit"),
            ] {
                if count > 0 {
                    line.push_str(&format!(", {count} {what}"));
                }
            }
            line.push(')');
        }
        if counters.fault_total() > 0 {
            let kinds: Vec<String> = counters.faults.iter().map(|(kind, n)| format!("{n} {kind}")).collect();
            line.push_str(&format!("  FAULTS: {}", kinds.join(", ")));
        }
        let dropped = engine.component(index).map_or(0, |rule| rule.log().counts().1);
        if dropped > 0 {
            line.push_str(&format!("  log lines dropped: {dropped}"));
        }
        let _ = writeln!(out, "{line}");
    }
}

/// The policy's part of the summary: suppressed and folded matches, and
/// each suppression's count with its reason.
pub fn print_policy_summary(policy: &AlertPolicy, stats: &Stats) {
    // Rules may declare dedup themselves: a run without a policy file can fold too.
    if policy.is_empty() && stats.folded == 0 {
        return;
    }
    let mut out = std::io::stderr().lock();
    let _ = writeln!(
        out,
        "  alert policy: {} matches suppressed, {} repeats folded into dedup alerts",
        stats.suppressed, stats.folded
    );
    for suppression in policy.suppressions() {
        let _ = writeln!(out, "  {:>7} suppressed  {}", suppression.count, suppression.reason);
    }
}
