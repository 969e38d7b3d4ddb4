//! The metrics endpoint's text, in the OpenMetrics format Prometheus
//! scrapes (written by the official `prometheus-client` crate).
//!
//! The numbers are the ones the server keeps anyway — each tenant's
//! [`TenantCounters`], each stream's [`StreamStatus`](crate::StreamStatus) —
//! read at scrape time, so serving metrics adds nothing to the evaluation
//! of an event but the two clock reads of each rule call's latency.
//!
//! Every metric, its labels and meaning are listed in docs/serve.md.
//!
//! Counters count from the server's start and never go back, across rule
//! uploads and quarantines (a rule's counters carry on under its name; a
//! deleted rule's series disappear).

use crate::service::Service;
use crate::status::StreamSnapshot;
use crate::tenant::TenantCounters;
use dac_engine::{Latency, LATENCY_BOUNDS_NS};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use std::collections::BTreeSet;

/// The `Content-Type` of [`render`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Which tenants a scrape shows.
pub enum Scrape<'a> {
    /// Every tenant and every stream (the admin's `/metrics`).
    Everything,
    /// One tenant's own series, no stream (a tenant's own metrics).
    Tenant(&'a str),
}

/// The metrics of `service`, as OpenMetrics text.
pub fn render(service: &Service, scrape: Scrape<'_>) -> String {
    let tenants = service
        .tenants()
        .into_iter()
        .filter(|tenant| match scrape {
            Scrape::Everything => true,
            Scrape::Tenant(id) => tenant.id() == id,
        })
        .map(|tenant| {
            let declarative =
                tenant.rules().into_iter().filter(|rule| rule.kind.is_declarative()).map(|rule| rule.name).collect();
            TenantSnapshot {
                id: tenant.id().to_owned(),
                fuel: tenant.config.limits.fuel.is_some(),
                declarative,
                counters: tenant.counters(),
            }
        })
        .collect();
    let (streams, connections_refused) = match scrape {
        Scrape::Everything => (
            service.streams(),
            Some(service.http_counters().connections_refused.load(std::sync::atomic::Ordering::Relaxed)),
        ),
        Scrape::Tenant(_) => (Vec::new(), None),
    };
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Snapshot { tenants, streams, connections_refused }));
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).expect("writing to a String cannot fail");
    text
}

#[derive(Debug)]
struct TenantSnapshot {
    id: String,
    fuel: bool,
    /// Rules matched in the tenant's declarative pass: they have no time of
    /// their own.
    declarative: BTreeSet<String>,
    counters: TenantCounters,
}

#[derive(Debug)]
struct Snapshot {
    tenants: Vec<TenantSnapshot>,
    streams: Vec<StreamSnapshot>,
    /// The server's, for the admin's scrape only.
    connections_refused: Option<u64>,
}

type Labels<'a> = Vec<(&'static str, &'a str)>;

/// A counter or gauge family read off each value: name, help, how to read
/// it.
type FamilyOf<T> = (&'static str, &'static str, fn(&T) -> u64);

/// One metric family: its descriptor, then a sample per label set.
fn family<'a, T: 'a>(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    metric_type: MetricType,
    samples: impl IntoIterator<Item = (Labels<'a>, T)>,
    mut encode: impl FnMut(&mut MetricEncoder<'_>, &T) -> std::fmt::Result,
) -> std::fmt::Result {
    let mut metric = encoder.encode_descriptor(name, help, None, metric_type)?;
    for (labels, value) in samples {
        let mut sample = metric.encode_family(&labels)?;
        encode(&mut sample, &value)?;
    }
    Ok(())
}

fn counter(encoder: &mut MetricEncoder<'_>, value: &u64) -> std::fmt::Result {
    encoder.encode_counter::<NoLabelSet, _, u64>(value, None)
}

fn gauge<T: prometheus_client::encoding::EncodeGaugeValue>(
    encoder: &mut MetricEncoder<'_>,
    value: &T,
) -> std::fmt::Result {
    encoder.encode_gauge(value)
}

fn histogram(encoder: &mut MetricEncoder<'_>, latency: &&Latency) -> std::fmt::Result {
    let buckets: Vec<(f64, u64)> =
        LATENCY_BOUNDS_NS.iter().map(|&bound| bound as f64 / 1e9).chain([f64::MAX]).zip(latency.buckets).collect();
    encoder.encode_histogram::<NoLabelSet>(latency.sum_ns as f64 / 1e9, latency.count, &buckets, None)
}

impl Collector for Snapshot {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> std::fmt::Result {
        self.encode_tenants(&mut encoder)?;
        self.encode_rules(&mut encoder)?;
        self.encode_streams(&mut encoder)?;
        if let Some(refused) = self.connections_refused {
            let help = "Connections closed as they arrived, because max_connections were open.";
            let mut metric =
                encoder.encode_descriptor("dac_http_connections_refused", help, None, MetricType::Counter)?;
            counter(&mut metric, &refused)?;
        }
        Ok(())
    }
}

impl Snapshot {
    fn per_tenant<'a, T: 'a>(&'a self, value: impl Fn(&'a TenantSnapshot) -> T) -> Vec<(Labels<'a>, T)> {
        self.tenants.iter().map(|tenant| (vec![("tenant", tenant.id.as_str())], value(tenant))).collect()
    }

    /// (tenant, rule) pairs with `value`, for the rules `keep` selects.
    fn per_rule<'a, T: 'a>(
        &'a self,
        keep: impl Fn(&'a TenantSnapshot, &'a str) -> bool,
        value: impl Fn(&'a dac_engine::RuleStats) -> T,
    ) -> Vec<(Labels<'a>, T)> {
        let mut samples = Vec::new();
        for tenant in &self.tenants {
            for (name, stats) in &tenant.counters.rules {
                if keep(tenant, name) {
                    samples.push((vec![("tenant", tenant.id.as_str()), ("rule", name.as_str())], value(stats)));
                }
            }
        }
        samples
    }

    fn encode_tenants(&self, encoder: &mut DescriptorEncoder<'_>) -> std::fmt::Result {
        let counters: [FamilyOf<TenantCounters>; 5] = [
            ("dac_tenant_events", "Events of the tenant's scope evaluated.", |c| c.events),
            ("dac_tenant_alerts", "Alerts written to the tenant's alert collection.", |c| c.alerts),
            ("dac_tenant_alerts_folded", "Repeated matches folded into an earlier dedup alert.", |c| c.folded),
            ("dac_tenant_alerts_suppressed", "Matches silenced by a suppression.", |c| c.suppressed),
            ("dac_tenant_quarantines", "Rules taken out after too many faults.", |c| c.quarantines),
        ];
        for (name, help, value) in counters {
            family(encoder, name, help, MetricType::Counter, self.per_tenant(|t| value(&t.counters)), counter)?;
        }
        let mut rules = Vec::new();
        for tenant in &self.tenants {
            let c = &tenant.counters;
            for (state, count) in [
                ("live", c.live_rules),
                ("quarantined", c.quarantined_rules),
                ("not_loaded", c.not_loaded_rules),
                ("disabled", c.disabled_rules),
            ] {
                rules.push((vec![("tenant", tenant.id.as_str()), ("state", state)], count as u64));
            }
        }
        family(encoder, "dac_tenant_rules", "The tenant's stored rules, by state.", MetricType::Gauge, rules, gauge)?;
        let held = |value: fn(&dac_engine::CorrelationStats) -> u64| {
            self.per_tenant(move |t| t.counters.state.values().map(value).sum::<u64>())
        };
        let help = "Group keys all the tenant's correlations, and keys all its code rules' state, hold now (its quota: limits.state_max_groups, for each).";
        family(encoder, "dac_tenant_state_groups", help, MetricType::Gauge, held(|s| s.groups), gauge)?;
        let help = "Bytes all the tenant's correlations and code rules' state hold now, estimated (its quota: limits.state_max_bytes, for each).";
        family(encoder, "dac_tenant_state_bytes", help, MetricType::Gauge, held(|s| s.bytes), gauge)?;
        family(
            encoder,
            "dac_tenant_declarative_pass_seconds",
            "Time of the one pass matching all of the tenant's YAML and Sigma rules against an event.",
            MetricType::Histogram,
            self.per_tenant(|t| &t.counters.declarative_pass),
            histogram,
        )
    }

    fn encode_rules(&self, encoder: &mut DescriptorEncoder<'_>) -> std::fmt::Result {
        let all = |_: &TenantSnapshot, _: &str| true;
        family(
            encoder,
            "dac_rule_evaluations",
            "Times the rule was entered (the prefilter skips the rest).",
            MetricType::Counter,
            self.per_rule(all, |s| s.evaluations),
            counter,
        )?;
        family(
            encoder,
            "dac_rule_matches",
            "Events the rule fired on.",
            MetricType::Counter,
            self.per_rule(all, |s| s.alerts),
            counter,
        )?;
        let mut errors = Vec::new();
        for tenant in &self.tenants {
            for (name, stats) in &tenant.counters.rules {
                for (kind, count) in &stats.faults {
                    errors
                        .push((vec![("tenant", tenant.id.as_str()), ("rule", name.as_str()), ("kind", *kind)], *count));
                }
            }
        }
        family(
            encoder,
            "dac_rule_errors",
            "Evaluations that faulted, by kind (deadline, fuel, memory, stack, trap, finding-limit, instantiate, state-limit).",
            MetricType::Counter,
            errors,
            counter,
        )?;
        family(
            encoder,
            "dac_rule_fuel_consumed",
            "Fuel the rule burnt (tenants with a fuel limit).",
            MetricType::Counter,
            self.per_rule(|tenant, _| tenant.fuel, |s| s.fuel_consumed),
            counter,
        )?;
        let state = |value: fn(&dac_engine::CorrelationStats) -> u64| -> Vec<(Labels<'_>, u64)> {
            let mut samples = Vec::new();
            for tenant in &self.tenants {
                for (name, held) in &tenant.counters.state {
                    samples.push((vec![("tenant", tenant.id.as_str()), ("rule", name.as_str())], value(held)));
                }
            }
            samples
        };
        let gauges: [FamilyOf<dac_engine::CorrelationStats>; 2] = [
            ("dac_rule_state_groups", "Group keys the rule's correlations (or keys its keyed state) hold now.", |s| {
                s.groups
            }),
            ("dac_rule_state_bytes", "Bytes the rule's correlations or keyed state hold now (estimated).", |s| s.bytes),
        ];
        for (name, help, value) in gauges {
            family(encoder, name, help, MetricType::Gauge, state(value), gauge)?;
        }
        let counters: [FamilyOf<dac_engine::CorrelationStats>; 3] = [
            (
                "dac_rule_state_refused",
                "Matches the rule's correlations, or writes to its keyed state, refused at a state limit (the rule's or the tenant's quota).",
                |s| s.refused,
            ),
            ("dac_rule_correlation_late", "Matches later than the allowed lateness, not correlated.", |s| s.late),
            ("dac_rule_correlation_alerts", "Times the rule's correlations fired.", |s| s.fired),
        ];
        for (name, help, value) in counters {
            family(encoder, name, help, MetricType::Counter, state(value), counter)?;
        }
        family(
            encoder,
            "dac_rule_evaluation_seconds",
            "Time in the sandbox per evaluation (components; YAML and Sigma rules are timed together, per tenant).",
            MetricType::Histogram,
            self.per_rule(|tenant, name| !tenant.declarative.contains(name), |s| &s.time),
            histogram,
        )
    }

    fn encode_streams(&self, encoder: &mut DescriptorEncoder<'_>) -> std::fmt::Result {
        if self.streams.is_empty() {
            // A tenant's own scrape, or a server reading no events.
            return Ok(());
        }
        let per_stream = |value: fn(&StreamSnapshot) -> u64| -> Vec<(Labels<'_>, u64)> {
            self.streams.iter().map(|s| (vec![("stream", s.name.as_str())], value(s))).collect()
        };
        let counters: [FamilyOf<StreamSnapshot>; 6] = [
            ("dac_stream_events", "Documents read from the change stream.", |s| s.events),
            ("dac_stream_unrouted_events", "Documents read that no tenant's scope took.", |s| s.unrouted),
            ("dac_stream_malformed", "Input that was not an event, skipped.", |s| s.malformed),
            ("dac_stream_reconnects", "Times the change stream was reopened after a failure.", |s| s.source.reconnects),
            (
                "dac_stream_history_gaps",
                "Times the stream restarted from now because the server's history was lost.",
                |s| s.source.history_gaps,
            ),
            ("dac_stream_commits", "Checkpoints stored.", |s| s.source.commits),
        ];
        for (name, help, value) in counters {
            family(encoder, name, help, MetricType::Counter, per_stream(value), counter)?;
        }
        let lag: Vec<(Labels<'_>, f64)> = self
            .streams
            .iter()
            .filter_map(|s| Some((vec![("stream", s.name.as_str())], s.source.lag?.as_secs_f64())))
            .collect();
        family(
            encoder,
            "dac_stream_lag_seconds",
            "How far behind the server's clock the last document read was; 0 while the stream is idle, absent before its first read.",
            MetricType::Gauge,
            lag,
            gauge,
        )
    }
}
