//! The hostile neighbour: tenant A attacks `dac serve` while tenant B works.
//!
//! `cargo bench -p dac-tests --bench neighbour -- [--seconds N]`
//!
//! One in-process server (the real service and HTTP server, on loopback),
//! two tenants. B's work: its API (`GET /v1/tenants/b/rules` on a fresh
//! connection every 20 ms, latency measured) and its stream (B's engine
//! delivering events, as the stream's fan-out does, on a thread of its
//! own). For each attack class of A's, B's p95 API latency and its
//! stream's events/s are measured while the attack runs and printed as
//! ratios to B alone, measured in the same run; then the process's peak
//! RSS. The attackers' own threads (the client side, which would run on
//! another machine) run at nice 19, so they do not take B's CPU here; the
//! server's handling of their requests runs as it would in production,
//! and so does A's own stream (another collection) when A's rules flood
//! their logs. Targets (issue 14): B within 10 % of its rate alone, p95
//! under 100 ms.
//!
//! Then, for the record, a stream both tenants' scopes take (one
//! collection): one thread evaluates A's rules and then B's for each
//! event, so B's rate there follows A's rules' cost; that is not
//! isolation, and docs/security.md says so.

use dac_engine::{Alert, AlertPolicy, Location, Sink, SinkError};
use dac_event::Event;
use dac_serve::{ServeConfig, Service, Tenant};
use dac_tests::serve::{hex, send};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

struct Server {
    addr: SocketAddr,
    a: String,
    b: String,
    service: Arc<Service>,
    _runtime: tokio::runtime::Runtime,
    _state: tempfile::TempDir,
}

fn start() -> Server {
    let [admin, a, b] = [(); 3].map(|()| dac_serve::generate_token().unwrap().token);
    let hash = |t: &str| hex(&dac_serve::hash_token(t));
    let config = format!(
        "admin_token_sha256 = '{}'\n\
         [[tenant]]\nid = 'a'\ntoken_sha256 = '{}'\nalert_collection = 'alerts_a'\n\
         scope = {{ field = 'tenant', equals = 'a' }}\n\
         [[tenant]]\nid = 'b'\ntoken_sha256 = '{}'\nalert_collection = 'alerts_b'\n\
         scope = {{ field = 'tenant', equals = 'b' }}\n",
        hash(&admin),
        hash(&a),
        hash(&b)
    );
    let config = ServeConfig::parse(std::path::Path::new("tenants.toml"), &config).unwrap();
    let state = tempfile::tempdir().unwrap();
    let service =
        Arc::new(Service::open(config, state.path(), Default::default(), dac_tests::child_compiler()).unwrap());
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
    let addr = listener.local_addr().unwrap();
    runtime.spawn(dac_serve::serve(service.clone(), listener, std::future::pending()));
    Server { addr, a, b, service, _runtime: runtime, _state: state }
}

/// B's stream: its engine delivers these events, round and round.
fn stream_events() -> Vec<Event> {
    (0..1000)
        .map(|i| {
            let command = if i % 50 == 0 {
                "/usr/bin/sudo cat /etc/shadow".to_string()
            } else {
                format!("/usr/bin/ls -l /srv/{i}")
            };
            Event::from_json(
                serde_json::json!({"tenant": "b", "hostname": format!("web-{}", i % 7), "command_line": command}),
            )
            .unwrap()
        })
        .collect()
}

struct Discard;

impl Sink for Discard {
    fn send(&mut self, alert: &Alert<'_>) -> Result<(), SinkError> {
        std::hint::black_box(alert.uuid);
        Ok(())
    }

    fn flush(&mut self) -> Result<(), SinkError> {
        Ok(())
    }
}

struct Measured {
    p50_ms: f64,
    p95_ms: f64,
    events_per_second: f64,
}

/// B's API and stream for `seconds`, while whatever runs meanwhile runs.
/// With `shared`, B's stream is one both tenants' scopes take: each event
/// goes to `shared` first, then to B, on the one thread, as a stream's
/// fan-out does.
fn measure_b(server: &Server, b: &Arc<Tenant>, shared: Option<&Arc<Tenant>>, seconds: f64) -> Measured {
    let stop = Arc::new(AtomicBool::new(false));
    let stream = {
        let (b, stop) = (b.clone(), stop.clone());
        let shared = shared.cloned();
        std::thread::spawn(move || {
            let mut events = stream_events();
            let (mut policy, mut sink, mut delivered) = (AlertPolicy::none(), Discard, 0u64);
            let mut other_policy = AlertPolicy::none();
            let started = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                for (line, event) in events.iter_mut().enumerate() {
                    let at = Location { source: "bench", line: line as u64 + 1 };
                    if let Some(other) = &shared {
                        other.deliver(event, at, &mut other_policy, &mut sink).unwrap();
                    }
                    b.deliver(event, at, &mut policy, &mut sink).unwrap();
                }
                delivered += 1000;
            }
            delivered as f64 / started.elapsed().as_secs_f64()
        })
    };
    let mut latencies = Vec::new();
    let until = Instant::now() + Duration::from_secs_f64(seconds);
    while Instant::now() < until {
        let started = Instant::now();
        let reply = send(&server.addr.to_string(), "GET", "/v1/tenants/b/rules", Some(&server.b), b"");
        assert_eq!(reply.status, 200, "B's GET: {}", reply.text());
        latencies.push(started.elapsed().as_secs_f64() * 1000.0);
        std::thread::sleep(Duration::from_millis(20));
    }
    stop.store(true, Ordering::Relaxed);
    let events_per_second = stream.join().unwrap();
    latencies.sort_by(f64::total_cmp);
    let at = |q: f64| latencies[((latencies.len() as f64 - 1.0) * q).round() as usize];
    Measured { p50_ms: at(0.5), p95_ms: at(0.95), events_per_second }
}

/// One of A's attacks, run on its own threads until `stop`.
type Attack = fn(&Server, &AtomicBool);

fn idle_connections(server: &Server, stop: &AtomicBool) {
    // (Runs on the attacker's niced thread, as every attack here.)
    // 400 connections without a token that send nothing; reopened as the
    // header timeout closes them.
    let mut held: Vec<TcpStream> = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        held.retain(|stream| stream.peer_addr().is_ok());
        while held.len() < 400 {
            match TcpStream::connect(server.addr) {
                Ok(stream) => held.push(stream),
                Err(_) => break,
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn slow_bodies(server: &Server, stop: &AtomicBool) {
    use std::io::Write;
    while !stop.load(Ordering::Relaxed) {
        let streams: Vec<TcpStream> = (0..20)
            .filter_map(|i| {
                let mut stream = TcpStream::connect(server.addr).ok()?;
                let head = format!(
                    "PUT /v1/tenants/a/rules/slow{i} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Length: 100000\r\n\r\nname:",
                    server.a
                );
                stream.write_all(head.as_bytes()).ok()?;
                Some(stream)
            })
            .collect();
        std::thread::sleep(Duration::from_millis(500));
        drop(streams);
    }
}

fn rule_bombs(server: &Server, stop: &AtomicBool) {
    let nested = format!("title: t\ndetection:\n  {}x\n", "- ".repeat(10_000));
    let mut laughs = String::from("a: &a [\"lol\"]\n");
    for w in ["a", "b", "c", "d", "e", "f", "g", "h", "i", "j"].windows(2) {
        laughs.push_str(&format!("{}: &{} [{}]\n", w[1], w[1], vec![format!("*{}", w[0]); 10].join(",")));
    }
    let parens = format!(
        "title: t\nid: 11111111-2222-4333-8444-555555555555\nlogsource:\n  product: linux\n  category: process_creation\n\
         detection:\n  selection:\n    Image: /bin/sh\n  condition: {}selection{}\n",
        "(".repeat(3000),
        ")".repeat(3000)
    );
    let bombs = [nested, laughs, parens];
    let mut i = 0;
    while !stop.load(Ordering::Relaxed) {
        let reply =
            send(&server.addr.to_string(), "PUT", "/v1/tenants/a/rules/bomb", Some(&server.a), bombs[i % 3].as_bytes());
        assert!(matches!(reply.status, 422 | 429), "{}", reply.text());
        i += 1;
    }
}

fn compile_spam(server: &Server, stop: &AtomicBool) {
    // A real rule, made new each time (a custom section with a counter),
    // so every upload is compiled: what an upload legitimately costs.
    let rule = std::fs::read(dac_tests::example_rule("tmp-output-redir")).unwrap();
    let mut i = 0u32;
    while !stop.load(Ordering::Relaxed) {
        let mut bytes = rule.clone();
        bytes.extend_from_slice(&[0, 9, 4, b'n', b'o', b'n', b'c']);
        bytes.extend_from_slice(&i.to_le_bytes());
        let reply = send(&server.addr.to_string(), "PUT", "/v1/tenants/a/rules/spam", Some(&server.a), &bytes);
        assert!(matches!(reply.status, 200 | 201 | 429), "{}", reply.text());
        i += 1;
    }
}

fn dry_run_flood(server: &Server, stop: &AtomicBool) {
    let events: String =
        (0..10_000).map(|i| format!("{{\"command_line\":\"/usr/bin/sudo cat /etc/shadow {i}\"}}\n")).collect();
    std::thread::scope(|scope| {
        for _ in 0..4 {
            scope.spawn(|| {
                // SAFETY: plain integers in and out.
                unsafe { libc::setpriority(libc::PRIO_PROCESS, libc::syscall(libc::SYS_gettid) as libc::id_t, 19) };
                while !stop.load(Ordering::Relaxed) {
                    let reply = send(
                        &server.addr.to_string(),
                        "POST",
                        "/v1/tenants/a/dry-run",
                        Some(&server.a),
                        events.as_bytes(),
                    );
                    assert!(matches!(reply.status, 200 | 413 | 429), "{}", reply.text());
                }
            });
        }
    });
}

/// A's own stream (another collection, so another thread), with A's rules
/// at their worst short of faulting: the log-flood rule logs 100,000 lines
/// on every event (all but A's rate limit dropped and counted), next to
/// A's shadow rule. This is the server's own work, at normal priority.
fn own_stream_log_flood(server: &Server, stop: &AtomicBool) {
    let flood = std::fs::read(dac_tests::hostile_rule("log-flood")).unwrap();
    let path = "/v1/tenants/a/rules/flood";
    assert_eq!(send(&server.addr.to_string(), "PUT", path, Some(&server.a), &flood).status, 201);
    // SAFETY: plain integers in and out.
    unsafe { libc::setpriority(libc::PRIO_PROCESS, libc::syscall(libc::SYS_gettid) as libc::id_t, 0) };
    let a = server.service.tenant("a").unwrap();
    let mut events = stream_events();
    let (mut policy, mut sink) = (AlertPolicy::none(), Discard);
    while !stop.load(Ordering::Relaxed) {
        for (line, event) in events.iter_mut().enumerate().take(10) {
            a.deliver(event, Location { source: "a", line: line as u64 + 1 }, &mut policy, &mut sink).unwrap();
        }
    }
    assert_eq!(send(&server.addr.to_string(), "DELETE", path, Some(&server.a), b"").status, 204);
}

fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib: f64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0);
    kib / 1024.0
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let seconds: f64 =
        args.iter().position(|a| a == "--seconds").and_then(|i| args.get(i + 1)?.parse().ok()).unwrap_or(4.0);
    let server = start();
    let shadow = std::fs::read(dac_tests::example_rule("shadow")).unwrap();
    for (tenant, token) in [("a", &server.a), ("b", &server.b)] {
        let path = format!("/v1/tenants/{tenant}/rules/shadow");
        assert_eq!(send(&server.addr.to_string(), "PUT", &path, Some(token), &shadow).status, 201);
    }
    let a_spam_rule = std::fs::read(dac_tests::example_rule("tmp-output-redir")).unwrap();
    assert_eq!(
        send(&server.addr.to_string(), "PUT", "/v1/tenants/a/rules/spam", Some(&server.a), &a_spam_rule).status,
        201
    );
    let b = server.service.tenant("b").unwrap();

    println!("hostile neighbour: B's API (GET every 20 ms) and stream while A attacks, {seconds} s each");
    let alone = measure_b(&server, &b, None, seconds);
    println!(
        "{:<34} {:>9} {:>9} {:>12} {:>9} {:>9}",
        "A's attack", "p50 ms", "p95 ms", "B events/s", "× alone", "target"
    );
    let row = |name: &str, m: &Measured, ratio: Option<f64>| {
        let verdict = match ratio {
            None => String::new(),
            Some(r) if r >= 0.9 && m.p95_ms < 100.0 => "PASS".into(),
            Some(_) => "MISS".into(),
        };
        println!(
            "{:<34} {:>9.1} {:>9.1} {:>12.0} {:>9} {:>9}",
            name,
            m.p50_ms,
            m.p95_ms,
            m.events_per_second,
            ratio.map_or("1.00".into(), |r| format!("{r:.2}")),
            verdict
        );
    };
    row("none (B alone)", &alone, None);
    let attacks: [(&str, Attack); 6] = [
        ("400 idle connections, no token", idle_connections),
        ("20 slow bodies at a time", slow_bodies),
        ("YAML/condition bombs, uploaded", rule_bombs),
        ("uploads compiled back to back", compile_spam),
        ("dry runs of 10,000 events, 4 at once", dry_run_flood),
        ("rules flooding logs, on A's stream", own_stream_log_flood),
    ];
    for (name, attack) in attacks {
        let stop = AtomicBool::new(false);
        let measured = std::thread::scope(|scope| {
            scope.spawn(|| {
                // The attacker's own work (writing requests) would run on
                // another machine: here it must not take B's CPU.
                // SAFETY: plain integers in and out.
                unsafe { libc::setpriority(libc::PRIO_PROCESS, libc::syscall(libc::SYS_gettid) as libc::id_t, 19) };
                attack(&server, &stop)
            });
            // Let the attack reach its steady state first.
            std::thread::sleep(Duration::from_millis(500));
            let measured = measure_b(&server, &b, None, seconds);
            stop.store(true, Ordering::Relaxed);
            measured
        });
        row(name, &measured, Some(measured.events_per_second / alone.events_per_second));
    }
    // A stream both tenants' scopes take is one thread evaluating A's rules
    // and then B's for each event: B's rate there is bounded by A's rules'
    // cost (each evaluation by its deadline), not isolated from it. Shown
    // for the record; tenants who must not share it watch collections of
    // their own (docs/security.md).
    println!("one stream shared by A and B (each event to A's rules, then B's, on one thread):");
    let a = server.service.tenant("a").unwrap();
    let shared = measure_b(&server, &b, Some(&a), seconds);
    let shared_row = |name: &str, m: &Measured, ratio: f64, of: &str| {
        println!(
            "{:<34} {:>9.1} {:>9.1} {:>12.0} {:>9.4} {:>9}",
            name, m.p50_ms, m.p95_ms, m.events_per_second, ratio, of
        );
    };
    shared_row("A: shadow, tmp-output-redir", &shared, shared.events_per_second / alone.events_per_second, "of alone");
    let flood = std::fs::read(dac_tests::hostile_rule("log-flood")).unwrap();
    assert_eq!(send(&server.addr.to_string(), "PUT", "/v1/tenants/a/rules/flood", Some(&server.a), &flood).status, 201);
    let flooded = measure_b(&server, &b, Some(&a), seconds);
    shared_row("A: + a rule flooding logs", &flooded, flooded.events_per_second / shared.events_per_second, "of above");
    println!("peak RSS of the whole process (server, B's stream and the attackers): {:.0} MiB", peak_rss_mib());
}
