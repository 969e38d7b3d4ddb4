//! Throughput against the number of `dac watch` workers, one partition
//! each (`--partition K/N`, `--threads 1`): N = 1, 2, 4 in the same run.
//!
//! Each run inserts the same events (the realistic mix of
//! `dac_tests::mix`, spread over 64 hosts with their `dac_bucket`) into a
//! fresh collection *before* any worker starts, behind a whole-stream
//! checkpoint taken first: the N workers take their buckets over from it
//! (docs/scale.md) and read the history as fast as the server serves it.
//! The rule set is CPU-heavy on purpose: the six example Rust rules with
//! the prefilter off and a fresh instance per (rule, event).
//!
//! Printed per N: events/s from the first event evaluated to the last
//! (wall clock, the workers' own counters read from their /metrics), and
//! where the CPU went (from /proc: the workers' user+system seconds, and
//! the server's when it is a local nx-27017): CPU per 1,000 events tells
//! what one core of dac evaluates, whatever the server's speed; the
//! ratio to N = 1 tells how the wall clock scaled on this machine.
//!
//! Run: `cargo bench -p dac-tests --bench scale [-- --events N --runs R]`.

use dac_tests::mongo::TestMongo;
use dac_tests::{dac, example_rule, EXAMPLE_RULES};
use mongodb::bson::{doc, Document};
use mongodb::Client;
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

const HOSTS: usize = 64;
const WORKERS: [u16; 3] = [1, 2, 4];

struct Worker {
    child: Child,
    listen: String,
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// User + system CPU seconds of process `pid` so far.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command's closing parenthesis: utime is the 12th.
    let fields: Vec<&str> = stat.rsplit_once(')').map_or("", |(_, rest)| rest).split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

fn events_evaluated(worker: &Worker) -> u64 {
    // Not listening yet: still starting.
    if std::net::TcpStream::connect(&worker.listen).is_err() {
        return 0;
    }
    let metrics = dac_tests::serve::send(&worker.listen, "GET", "/metrics", None, b"").text();
    metrics
        .lines()
        .find(|line| line.starts_with("dac_watch_events_total{"))
        .and_then(|line| line.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0)
}

struct Run {
    rate: f64,
    dac_cpu_per_k: f64,
    server_cpu_per_k: Option<f64>,
}

fn free_address() -> String {
    let socket = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    socket.local_addr().expect("its address").to_string()
}

fn run_once(mongo: &TestMongo, runtime: &tokio::runtime::Runtime, documents: &[Document], n: u16) -> Run {
    let db_name = TestMongo::unique_db_name();
    let client = runtime.block_on(Client::with_uri_str(mongo.uri())).expect("connect");
    let db = client.database(&db_name);
    let events = db.collection::<Document>("process");
    runtime.block_on(async {
        // The whole stream's checkpoint, before the first insert: the
        // workers start there and read every event from the history.
        let stream = events.watch().await.expect("open a change stream");
        let token = stream.resume_token().expect("an initial resume token");
        db.collection::<Document>("config")
            .insert_one(doc! {
                "_id": format!("checkpoint:{db_name}.process"),
                "resume_token": mongodb::bson::to_bson(&token).expect("token"),
            })
            .await
            .expect("store the checkpoint");
        for chunk in documents.chunks(1_000) {
            events.insert_many(chunk.to_vec()).await.expect("insert");
        }
    });
    let total = documents.len() as u64;
    let server_before = mongo.server_pid().map(cpu_seconds);
    let workers: Vec<Worker> = (0..n)
        .map(|k| {
            let listen = free_address();
            let mut command = Command::new(dac());
            command.args(["watch", "--no-reload", "--no-prefilter", "--fresh-instance", "--threads", "1"]);
            for rule in EXAMPLE_RULES {
                command.arg("--rules").arg(example_rule(rule));
            }
            let child = command
                .args(["--mongodb-uri", mongo.uri(), "--db", &db_name, "--partition", &format!("{k}/{n}")])
                .args(["--listen", &listen])
                .env("DAC_CACHE_DIR", dac_tests::repo_root().join("target/dac-test-cache"))
                .env("DAC_LOG", "warn")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start dac watch");
            Worker { child, listen }
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut first = None;
    let finished = loop {
        let done: u64 = workers.iter().map(events_evaluated).sum();
        if done > 0 && first.is_none() {
            first = Some(Instant::now());
        }
        if done >= total {
            break Instant::now();
        }
        assert!(Instant::now() < deadline, "{done} of {total} events after 600 s");
        std::thread::sleep(Duration::from_millis(20));
    };
    let dac_cpu: f64 = workers.iter().map(|w| cpu_seconds(w.child.id())).sum();
    let server_cpu = mongo.server_pid().map(cpu_seconds).zip(server_before).map(|(after, before)| after - before);
    drop(workers);
    let _ = runtime.block_on(async { db.drop().await });
    let elapsed = finished.duration_since(first.unwrap_or(finished)).as_secs_f64().max(1e-3);
    let per_k = |cpu: f64| cpu / (total as f64 / 1_000.0);
    Run { rate: total as f64 / elapsed, dac_cpu_per_k: per_k(dac_cpu), server_cpu_per_k: server_cpu.map(per_k) }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    values[values.len() / 2]
}

fn main() -> ExitCode {
    let args = match dac_tests::bench::Size::from_args("scale", dac_tests::bench::Size { events: 20_000, runs: 3 }) {
        Ok(args) => args,
        Err(err) => {
            eprintln!("scale bench: {err}");
            return ExitCode::from(2);
        }
    };
    let mut mix = Vec::new();
    dac_tests::mix::write_mix(dac_tests::mix::MixConfig::default(), args.events, &mut mix).expect("the mix");
    let documents: Vec<Document> = String::from_utf8(mix)
        .expect("UTF-8")
        .lines()
        .enumerate()
        .map(|(n, line)| {
            let mut event: serde_json::Value = serde_json::from_str(line).expect("a mix line");
            let host = format!("host-{:02}", n % HOSTS);
            event["dac_bucket"] = dac_event::partition::bucket_of(Some(&host)).into();
            event["hostname"] = host.into();
            mongodb::bson::to_document(&event).expect("a document")
        })
        .collect();
    let mongo = TestMongo::start();
    eprintln!("building dac (release) …");
    let _ = dac();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let server = if mongo.is_external() { "DAC_TEST_MONGODB_URI" } else { "nx-27017 0.8.1 (patched), same machine" };
    println!(
        "dac watch workers (--partition K/N, --threads 1; six example rules, --no-prefilter --fresh-instance): {} events over {HOSTS} hosts, {} runs, server {server}, {} cores",
        documents.len(),
        args.runs,
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    let mut baseline = None;
    for n in WORKERS {
        let runs: Vec<Run> = (0..args.runs).map(|_| run_once(&mongo, &runtime, &documents, n)).collect();
        let rate = median(runs.iter().map(|r| r.rate).collect());
        let dac_cpu = median(runs.iter().map(|r| r.dac_cpu_per_k).collect());
        let server_cpu = runs.iter().map(|r| r.server_cpu_per_k).collect::<Option<Vec<f64>>>().map(median);
        let base = *baseline.get_or_insert(rate);
        let rates: Vec<String> = runs.iter().map(|r| format!("{:.0}", r.rate)).collect();
        println!(
            "N = {n}: {rate:>8.0} events/s ({:.2}× N = 1; runs {}); dac {:.3} CPU-s per 1,000 events ({:.0} events/s per core){}",
            rate / base,
            rates.join(", "),
            dac_cpu,
            1_000.0 / dac_cpu,
            server_cpu.map_or_else(String::new, |cpu| format!("; server {cpu:.3} CPU-s per 1,000 events"))
        );
    }
    ExitCode::SUCCESS
}
