//! A stream's events delivered to its tenants by batches, the tenants
//! shared out between threads (`dac serve --threads N`).
//!
//! Tenants are independent of each other: each has its own engine (under
//! its own lock), alert policy and alert collection. So a batch is
//! evaluated tenant by tenant rather than event by event: each thread takes
//! a share of the batch's tenants and gives each of them its events of the
//! batch, in stream order. A tenant's alerts therefore reach its alert
//! collection in the order of its events whatever the number of threads,
//! its stateful rules see its events in order, and the stream's checkpoint
//! (stored after [`TenantBatch::deliver`] returned and every sink flushed)
//! still covers only evaluated events.
//!
//! The calling thread (the stream's) delivers the first share itself and
//! starts one scoped thread per further share; shares are balanced by cost
//! (each tenant's time per event over the recent batches, times its events
//! in this batch, the dearest first to the least loaded share). An event
//! taken only by tenants of one share moves to that share; one taken by
//! tenants of several shares is copied once per share, in the share's own
//! thread (rules borrow the event mutably through the host, so two threads
//! cannot share one).

use crate::audit::{AuditAction, AuditEntry, AuditResult};
use crate::tenant::{RuleFault, Tenant};
use crate::Service;
use dac_engine::{AlertPolicy, Location, Sink, SinkError};
use dac_event::Event;
use std::sync::Arc;
use std::time::Instant;

/// A batch is delivered when it holds this many events (or when the
/// stream flushes: idle, every `flush_interval`, at a reload, at the end).
pub const BATCH_EVENTS: usize = 512;

/// One tenant of a stream, and where the tenant's alerts go.
pub struct Route<S> {
    pub tenant: Arc<Tenant>,
    pub sink: S,
    /// Rule-declared dedup (tenants have no policy file).
    pub policy: AlertPolicy,
    /// Nanoseconds per event over the recent batches (0: none yet), to
    /// balance the shares.
    cost_ns: f64,
}

impl<S: Sink> Route<S> {
    pub fn new(tenant: Arc<Tenant>, sink: S) -> Route<S> {
        Route { tenant, sink, policy: AlertPolicy::none(), cost_ns: 0.0 }
    }

    pub(crate) fn failed(&self, err: SinkError) -> SinkError {
        SinkError::Database(format!("writing tenant {}'s alerts: {err}", self.tenant.id()))
    }

    /// Delivers `events[pick]` for each of `picks`, in order.
    fn deliver(
        &mut self,
        service: &Service,
        source: &str,
        events: &mut [Event],
        lines: &[u64],
        picks: &[u32],
    ) -> Result<bool, SinkError> {
        let start = Instant::now();
        let mut alerted = false;
        for &pick in picks {
            let pick = pick as usize;
            let at = Location { source, line: lines[pick] };
            let delivered = self
                .tenant
                .deliver(&mut events[pick], at, &mut self.policy, &mut self.sink)
                .map_err(|err| self.failed(err))?;
            alerted |= delivered.alerted;
            if !delivered.faults.is_empty() {
                let threshold = u64::from(service.config().quarantine_after_faults);
                quarantine(service, &self.tenant, &delivered.faults, threshold);
            }
        }
        let per_event = start.elapsed().as_nanos() as f64 / picks.len().max(1) as f64;
        // A moving average: a tenant whose rules changed is re-weighed
        // within a few batches.
        self.cost_ns = if self.cost_ns == 0.0 { per_event } else { 0.75 * self.cost_ns + 0.25 * per_event };
        Ok(alerted)
    }
}

/// A stream's events waiting for their tenants, each with the tenants its
/// scope routed it to when it was read.
#[derive(Debug, Default)]
pub struct TenantBatch {
    events: Vec<Event>,
    lines: Vec<u64>,
    /// Event `i`'s tenants (indices into the routes) are
    /// `taken[starts[i]..starts[i + 1]]`.
    taken: Vec<u32>,
    starts: Vec<usize>,
}

/// One share of a batch: some tenants, and the events they take.
struct Share<'r, S> {
    /// Each route with its events, as indices into `slots`.
    routes: Vec<(&'r mut Route<S>, Vec<u32>)>,
    slots: Vec<Slot>,
    lines: Vec<u64>,
}

enum Slot {
    /// Only this share takes the event: it is moved here.
    Moved(Event),
    /// Other shares take it too: copied from the batch in this share's
    /// thread.
    Shared(u32),
}

impl TenantBatch {
    pub fn len(&self) -> usize {
        self.events.len()
    }

    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// Adds `event` (read at `line`) for `tenants`, indices into the routes
    /// [`TenantBatch::deliver`] gets.
    pub fn push(&mut self, event: Event, line: u64, tenants: &[usize]) {
        if self.starts.is_empty() {
            self.starts.push(0);
        }
        self.events.push(event);
        self.lines.push(line);
        self.taken.extend(tenants.iter().map(|&tenant| tenant as u32));
        self.starts.push(self.taken.len());
    }

    /// Delivers every event of the batch to its tenants, on at most
    /// `threads` threads (this one included), and empties the batch;
    /// `Ok(true)` when any alert was raised. Each tenant's faults are
    /// counted towards quarantine as they happen. On a sink error the other
    /// shares still finish (their alerts are only queued); the stream then
    /// stops without storing its position.
    pub fn deliver<S: Sink + Send>(
        &mut self,
        service: &Service,
        source: &str,
        routes: &mut [Route<S>],
        threads: usize,
    ) -> Result<bool, SinkError> {
        let mut picks: Vec<Vec<u32>> = vec![Vec::new(); routes.len()];
        for event in 0..self.events.len() {
            for &route in &self.taken[self.starts[event]..self.starts[event + 1]] {
                picks[route as usize].push(event as u32);
            }
        }
        let busy: Vec<usize> = (0..routes.len()).filter(|&route| !picks[route].is_empty()).collect();
        let shares = threads.min(busy.len());
        let result = if shares <= 1 {
            let mut alerted = false;
            let mut result = Ok(());
            for &route in &busy {
                match routes[route].deliver(service, source, &mut self.events, &self.lines, &picks[route]) {
                    Ok(raised) => alerted |= raised,
                    Err(err) => {
                        result = Err(err);
                        break;
                    }
                }
            }
            result.map(|()| alerted)
        } else {
            self.deliver_shared(service, source, routes, &busy, picks, shares)
        };
        self.events.clear();
        self.lines.clear();
        self.taken.clear();
        self.starts.clear();
        result
    }

    fn deliver_shared<S: Sink + Send>(
        &mut self,
        service: &Service,
        source: &str,
        routes: &mut [Route<S>],
        busy: &[usize],
        picks: Vec<Vec<u32>>,
        shares: usize,
    ) -> Result<bool, SinkError> {
        // The dearest tenants first, each to the least loaded share. A
        // tenant not measured yet counts 1 µs per event.
        let cost = |route: usize| {
            picks[route].len() as f64 * if routes[route].cost_ns > 0.0 { routes[route].cost_ns } else { 1000.0 }
        };
        let mut order = busy.to_vec();
        order.sort_by(|&a, &b| cost(b).total_cmp(&cost(a)));
        let mut load = vec![0.0f64; shares];
        let mut share_of = vec![usize::MAX; routes.len()];
        for &route in &order {
            let least = (0..shares).min_by(|&a, &b| load[a].total_cmp(&load[b])).unwrap_or(0);
            share_of[route] = least;
            load[least] += cost(route);
        }
        // Each share's events, in stream order, and how many shares take
        // each event.
        let mut needed: Vec<Vec<u32>> = vec![Vec::new(); shares];
        let mut last_event = vec![u32::MAX; shares];
        let mut takers = vec![0u32; self.events.len()];
        for (event, takers) in takers.iter_mut().enumerate() {
            for &route in &self.taken[self.starts[event]..self.starts[event + 1]] {
                let share = share_of[route as usize];
                if last_event[share] != event as u32 {
                    last_event[share] = event as u32;
                    needed[share].push(event as u32);
                    *takers += 1;
                }
            }
        }
        let mut parts: Vec<Share<'_, S>> = needed
            .iter()
            .map(|events| Share {
                routes: Vec::new(),
                slots: events
                    .iter()
                    .map(|&event| match takers[event as usize] {
                        1 => Slot::Moved(std::mem::take(&mut self.events[event as usize])),
                        _ => Slot::Shared(event),
                    })
                    .collect(),
                lines: events.iter().map(|&event| self.lines[event as usize]).collect(),
            })
            .collect();
        for (index, (route, mut events)) in routes.iter_mut().zip(picks).enumerate() {
            if events.is_empty() {
                continue;
            }
            let share = share_of[index];
            // Batch positions to the share's own: both lists are in stream
            // order.
            let mut from = 0;
            for event in &mut events {
                from += needed[share][from..].partition_point(|&needed| needed < *event);
                *event = from as u32;
            }
            parts[share].routes.push((route, events));
        }
        let batch = &self.events;
        let mut parts = parts.into_iter();
        let Some(first) = parts.next() else { return Ok(false) };
        let results: Vec<Result<bool, SinkError>> = std::thread::scope(|scope| {
            let others: Vec<_> = parts
                .map(|share| {
                    std::thread::Builder::new()
                        .name("dac-tenants".into())
                        .spawn_scoped(scope, move || share.deliver(service, source, batch))
                })
                .collect();
            let mut results = vec![first.deliver(service, source, batch)];
            for other in others {
                results.push(match other {
                    Ok(thread) => thread
                        .join()
                        .unwrap_or_else(|_| Err(SinkError::Database("a tenant thread panicked; see the log".into()))),
                    Err(err) => Err(SinkError::Database(format!("starting a tenant thread: {err}"))),
                });
            }
            results
        });
        let mut alerted = false;
        for result in results {
            alerted |= result?;
        }
        Ok(alerted)
    }
}

impl<S: Sink> Share<'_, S> {
    fn deliver(self, service: &Service, source: &str, batch: &[Event]) -> Result<bool, SinkError> {
        let mut events: Vec<Event> = self
            .slots
            .into_iter()
            .map(|slot| match slot {
                Slot::Moved(event) => event,
                Slot::Shared(event) => batch[event as usize].clone(),
            })
            .collect();
        let mut alerted = false;
        for (route, picks) in self.routes {
            alerted |= route.deliver(service, source, &mut events, &self.lines, &picks)?;
        }
        Ok(alerted)
    }
}

/// Counts `faults` against their rules and takes out of the tenant's engine
/// each rule that reached `threshold` (the server's
/// `quarantine_after_faults`), with an audit entry; returns how many were
/// taken out. A rule that keeps trapping or breaching its limits costs its
/// tenant (and the stream's other tenants) time on every event.
pub fn quarantine(service: &Service, tenant: &Tenant, faults: &[RuleFault], threshold: u64) -> usize {
    let taken = tenant.record_faults(faults, threshold);
    for taken in &taken {
        tracing::error!(
            "tenant {}: rule {} ({}) QUARANTINED after {} faults (last: {}); upload it again to put it back",
            tenant.id(),
            taken.name,
            taken.uuid,
            taken.faults,
            taken.reason
        );
        let entry = AuditEntry {
            time: String::new(),
            who: "dac".into(),
            action: AuditAction::RuleQuarantine,
            tenant: tenant.id().into(),
            rule: taken.name.clone(),
            sha256: Some(taken.sha256.clone()),
            result: AuditResult::Quarantined,
            reason: Some(format!("{} faults; the last: {}", taken.faults, taken.reason)),
        };
        if let Err(err) = service.audit().record(entry) {
            tracing::error!("{err}");
        }
    }
    taken.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ScopeIndex, ServeConfig};
    use dac_engine::{Alert, Compiler, FieldMapping};
    use std::sync::Mutex;
    use std::thread::ThreadId;

    const SHADOW_YAML: &str = "name: shadow\nuuid: 5e3566a3-9f19-4ac7-8710-ec5fb09260ed\n\
        detection_logic:\n  command_line:\n    - /etc/shadow\nversion: 1.0.0\nseverity: high\n";

    /// Where each alert was sent from: the tenant, the event's `seq`, the
    /// thread.
    type Sent = Arc<Mutex<Vec<(String, i64, ThreadId)>>>;

    struct Recording {
        tenant: String,
        sent: Sent,
    }

    impl Sink for Recording {
        fn send(&mut self, alert: &Alert<'_>) -> Result<(), SinkError> {
            let seq = alert.offending_log["seq"].as_i64().unwrap_or(-1);
            self.sent.lock().unwrap().push((self.tenant.clone(), seq, std::thread::current().id()));
            Ok(())
        }

        fn flush(&mut self) -> Result<(), SinkError> {
            Ok(())
        }
    }

    /// Tenants a, b and c on one collection, told apart by `tenant`; every
    /// one with the same rule; `all` takes the whole collection.
    fn service(dir: &std::path::Path) -> Service {
        let mut toml = format!("admin_token_sha256 = '{}'\n", "f".repeat(64));
        for (i, id) in ["a", "b", "c", "all"].iter().enumerate() {
            let scope = match *id {
                "all" => "{ collection = 'events' }".to_owned(),
                id => format!("{{ field = 'tenant', equals = '{id}', collection = 'events' }}"),
            };
            toml.push_str(&format!(
                "[[tenant]]\nid = '{id}'\ntoken_sha256 = '{:064x}'\nalert_collection = 'alerts_{id}'\nscope = {scope}\n",
                i + 1
            ));
            let rules = dir.join("tenants").join(id).join("rules");
            std::fs::create_dir_all(&rules).unwrap();
            std::fs::write(rules.join("shadow"), SHADOW_YAML).unwrap();
        }
        let config = ServeConfig::parse(&dir.join("tenants.toml"), &toml).unwrap();
        Service::open(config, dir, FieldMapping::default(), Compiler::InProcess).unwrap()
    }

    /// Runs 300 events (every third one malicious, tenants in turn) through
    /// batches of 100 on `threads` threads.
    fn deliver(service: &Service, threads: usize) -> Vec<(String, i64, ThreadId)> {
        let sent = Sent::default();
        let mut tenants = service.tenants();
        tenants.sort_by(|a, b| a.id().cmp(b.id()));
        let mut routes: Vec<Route<Recording>> = tenants
            .into_iter()
            .map(|tenant| {
                let sink = Recording { tenant: tenant.id().to_owned(), sent: sent.clone() };
                Route::new(tenant, sink)
            })
            .collect();
        let index = ScopeIndex::new(routes.iter().map(|route| &route.tenant.config.scope));
        let (mut batch, mut taken) = (TenantBatch::default(), Vec::new());
        for seq in 0..300 {
            let command = if seq % 3 == 0 { "cat /etc/shadow" } else { "ls" };
            let tenant = ["a", "b", "c"][(seq / 3) % 3];
            let json =
                format!(r#"{{"seq": {seq}, "tenant": "{tenant}", "command_line": "{command}", "_id": "e{seq}"}}"#);
            let (event, _) = Event::from_json_slice(json.as_bytes()).unwrap();
            index.route(&event, &mut taken);
            batch.push(event, seq as u64 + 1, &taken);
            if batch.len() == 100 {
                assert!(batch.deliver(service, "events", &mut routes, threads).unwrap());
                assert!(batch.is_empty());
            }
        }
        let sent = sent.lock().unwrap().clone();
        sent
    }

    #[test]
    fn a_batch_reaches_every_tenant_in_stream_order_with_its_tenants_on_several_threads() {
        let dir = tempfile::tempdir().unwrap();
        let service = service(dir.path());
        // Malicious events: seq 0, 3, 6, …; their tenant is a, b, c in turn.
        let mut expected: Vec<(String, Vec<i64>)> = Vec::new();
        for id in ["a", "all", "b", "c"] {
            let seqs =
                (0..300i64).step_by(3).filter(|seq| id == "all" || ["a", "b", "c"][(seq / 3) as usize % 3] == id);
            expected.push((id.to_owned(), seqs.collect()));
        }
        let caller = std::thread::current().id();
        for threads in [1, 2, 3] {
            let sent = deliver(&service, threads);
            for (tenant, seqs) in &expected {
                let got: Vec<i64> = sent.iter().filter(|(t, ..)| t == tenant).map(|(_, seq, _)| *seq).collect();
                assert_eq!(&got, seqs, "tenant {tenant} on {threads} threads: its alerts, in stream order");
            }
            let mut used: Vec<ThreadId> = sent.iter().map(|(.., thread)| *thread).collect();
            used.sort_by_key(|thread| format!("{thread:?}"));
            used.dedup();
            let elsewhere = used.iter().filter(|&&thread| thread != caller).count();
            // The caller delivers one share; each further share has a
            // thread of its own, every batch.
            assert!(used.contains(&caller), "{threads} threads: the stream's own thread delivers a share");
            assert_eq!(elsewhere, (threads - 1) * 3, "{threads} threads: one thread per further share per batch");
        }
    }
}
