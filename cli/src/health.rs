//! `dac watch --listen ADDR`: liveness, readiness and metrics over HTTP,
//! for what runs the worker (Kubernetes' probes, systemd's watchdog
//! scripts, a Prometheus scrape).
//!
//! - `GET /healthz`: 200 while the worker starts, and then while its
//!   pipeline shows a sign of life at least every [`STALL`] (it does at
//!   every commit and every idle poll of the stream, twice a second when
//!   nothing happens); 503 with the time since, when it stalls.
//! - `GET /readyz`: 200 once the stream is open and the stored state
//!   restored, while healthy; 503 before.
//! - `GET /metrics`: the stats line's counters, in the OpenMetrics text
//!   format, labelled with the worker's partition (docs/scale.md).

use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use dac_engine::Stats;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long the pipeline may show no sign of life before `/healthz` fails.
pub const STALL: Duration = Duration::from_secs(60);

const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// What the endpoints report, written by the pipeline's observer.
pub struct Health {
    started: Instant,
    ready: AtomicBool,
    /// Milliseconds from `started` to the last sign of life.
    beat: AtomicU64,
    partition: String,
    stats: Mutex<Snapshot>,
}

/// The counters at the last sign of life.
#[derive(Debug, Clone, Default)]
struct Snapshot {
    stats: Stats,
    rule_faults: u64,
}

impl Health {
    pub fn new(partition: String) -> Arc<Health> {
        Arc::new(Health {
            started: Instant::now(),
            ready: AtomicBool::new(false),
            beat: AtomicU64::new(0),
            partition,
            stats: Mutex::new(Snapshot::default()),
        })
    }

    /// The stream is open and the state restored.
    pub fn set_ready(&self) {
        self.beat.store(self.started.elapsed().as_millis() as u64, Ordering::Relaxed);
        self.ready.store(true, Ordering::Relaxed);
    }

    /// A sign of life, with the counters so far.
    pub fn beat(&self, stats: &Stats, rule_faults: u64) {
        self.beat.store(self.started.elapsed().as_millis() as u64, Ordering::Relaxed);
        let mut snapshot = self.stats.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        snapshot.stats.clone_from(stats);
        snapshot.rule_faults = rule_faults;
    }

    /// Time since the last sign of life, once ready.
    fn silent_for(&self) -> Option<Duration> {
        if !self.ready.load(Ordering::Relaxed) {
            return None;
        }
        let beat = Duration::from_millis(self.beat.load(Ordering::Relaxed));
        Some(self.started.elapsed().saturating_sub(beat))
    }

    fn healthy(&self) -> Result<(), String> {
        match self.silent_for() {
            Some(silent) if silent > STALL => Err(format!("no progress for {}s\n", silent.as_secs())),
            _ => Ok(()),
        }
    }

    fn metrics(&self) -> String {
        let snapshot = self.stats.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone();
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register_collector(Box::new(Metrics {
            partition: self.partition.clone(),
            ready: self.ready.load(Ordering::Relaxed),
            snapshot,
        }));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("writing to a String cannot fail");
        text
    }
}

/// Binds `address` now (so a taken port fails the start, with the
/// address), then serves the endpoints on a thread of their own.
pub fn listen(address: SocketAddr, health: Arc<Health>) -> Result<(), String> {
    let listener = std::net::TcpListener::bind(address).map_err(|err| format!("--listen {address}: {err}"))?;
    listener.set_nonblocking(true).map_err(|err| format!("--listen {address}: {err}"))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .map_err(|err| format!("--listen {address}: {err}"))?;
    let app = axum::Router::new()
        .route(
            "/healthz",
            get({
                let health = health.clone();
                move || async move {
                    match health.healthy() {
                        Ok(()) => (StatusCode::OK, "ok\n".to_owned()),
                        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, why),
                    }
                }
            }),
        )
        .route(
            "/readyz",
            get({
                let health = health.clone();
                move || async move {
                    match (health.ready.load(Ordering::Relaxed), health.healthy()) {
                        (true, Ok(())) => (StatusCode::OK, "ready\n".to_owned()),
                        (false, _) => (StatusCode::SERVICE_UNAVAILABLE, "starting\n".to_owned()),
                        (true, Err(why)) => (StatusCode::SERVICE_UNAVAILABLE, why),
                    }
                }
            }),
        )
        .route(
            "/metrics",
            get(move || async move { ([(header::CONTENT_TYPE, CONTENT_TYPE)], health.metrics()).into_response() }),
        );
    std::thread::Builder::new()
        .name("dac-listen".into())
        .spawn(move || {
            runtime.block_on(async move {
                let served = match tokio::net::TcpListener::from_std(listener) {
                    Ok(listener) => axum::serve(listener, app).await,
                    Err(err) => Err(err),
                };
                if let Err(err) = served {
                    tracing::error!("--listen {address}: {err}");
                }
            })
        })
        .map_err(|err| format!("--listen {address}: {err}"))?;
    Ok(())
}

struct Metrics {
    partition: String,
    ready: bool,
    snapshot: Snapshot,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl prometheus_client::collector::Collector for Metrics {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> std::fmt::Result {
        let labels = [("partition", self.partition.as_str())];
        let stats = &self.snapshot.stats;
        let counters: [(&str, &str, u64); 11] = [
            ("dac_watch_events", "Events evaluated.", stats.events),
            ("dac_watch_alerts", "Alerts raised.", stats.alerts),
            ("dac_watch_alerts_written", "Alerts written to the alert collection.", stats.sink.written),
            ("dac_watch_rule_faults", "Rule calls that faulted.", self.snapshot.rule_faults),
            ("dac_watch_malformed", "Documents that are not events (skipped, reported).", stats.malformed),
            ("dac_watch_reconnects", "Times the change stream was reopened after a failure.", stats.source.reconnects),
            (
                "dac_watch_history_gaps",
                "Times the stream restarted from now, its history lost.",
                stats.source.history_gaps,
            ),
            ("dac_watch_checkpoints", "Checkpoints stored.", stats.source.commits),
            (
                "dac_watch_handed_over",
                "Events skipped: the partition their bucket was taken from had evaluated them.",
                stats.source.handed_over,
            ),
            ("dac_watch_stray", "Events partition 0 took without a bucket number.", stats.source.stray),
            ("dac_watch_misrouted", "Events whose stored bucket is not their partition key's.", stats.source.misrouted),
        ];
        for (name, help, value) in counters {
            let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            metric.encode_family(&labels)?.encode_counter::<NoLabelSet, _, u64>(&value, None)?;
        }
        let lag = stats.source.lag.map_or(0.0, |lag| lag.as_secs_f64());
        let gauges: [(&str, &str, f64); 4] = [
            (
                "dac_watch_lag_seconds",
                "How long before it was read the server recorded this partition's last event; 0 when idle.",
                lag,
            ),
            ("dac_watch_state_groups", "Correlation group keys and keyed-state keys held.", stats.state_groups as f64),
            ("dac_watch_state_bytes", "Estimated bytes of the state held.", stats.state_bytes as f64),
            (
                "dac_watch_ready",
                "1 once the stream is open and the stored state restored.",
                f64::from(u8::from(self.ready)),
            ),
        ];
        for (name, help, value) in gauges {
            let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            metric.encode_family(&labels)?.encode_gauge(&value)?;
        }
        Ok(())
    }
}
