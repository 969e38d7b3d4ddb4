//! Live throughput: `dac watch` against the test server's own insert rate.
//!
//! One MongoDB server (nx-27017, or `DAC_TEST_MONGODB_URI`), three phases
//! back to back in the same run:
//!
//! 1. **server alone**: a writer inserts N events (batches of 500, as fast
//!    as the server takes them) with nothing watching — the server's own
//!    insert rate, the baseline;
//! 2. **server + dac watch**: the same writer, same events, into a fresh
//!    collection that `dac watch` (release build, the seed's two rules)
//!    watches: the insert rate while watched, and how long after the last
//!    insert dac has evaluated everything (its checkpoint covers the last
//!    event) — the sustained events/s through watch → rules → alert writes;
//! 3. **alert latency**: 1 % of the events are malicious and carry the
//!    writer's clock at insert; a change stream on the alert collection
//!    notes when each alert becomes visible. p50/p99/max of insert → alert
//!    visible to a reader (includes the reader's own change-stream delay).
//!
//! The claim to check: dac keeps up with the server (its rate ≥ the
//! server's insert rate while watched, lag bounded by its flush interval).
//! Ratios and medians over `--runs`; the machine is shared and noisy.
//!
//! Run: `cargo bench -p dac-tests --bench watch [-- --events N --runs R]`.

use dac_tests::mongo::TestMongo;
use dac_tests::{dac, example_rule};
use futures_util::StreamExt;
use mongodb::bson::{doc, Document};
use mongodb::{Client, Collection, Database};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const BATCH: usize = 500;
const MALICIOUS_EVERY: usize = 100;

fn now_micros() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as i64).unwrap_or(0)
}

fn event(n: usize) -> Document {
    let malicious = n % MALICIOUS_EVERY == MALICIOUS_EVERY - 1;
    let command_line =
        if malicious { format!("/usr/bin/sudo cat /etc/shadow #{n}") } else { format!("/usr/bin/ls -la /srv/app/{n}") };
    doc! {
        "seq": n as i64,
        "hostname": "web-01",
        "ip_address": "10.0.0.7",
        "parent_pid": 4000 + (n % 97) as i64,
        "pid": 10_000 + n as i64,
        "binary": if malicious { "sudo" } else { "ls" },
        "path": if malicious { "/usr/bin/sudo" } else { "/usr/bin/ls" },
        "command_line": command_line,
        "ts": 1_700_000_000_000i64 + n as i64,
    }
}

/// Inserts `events` events in batches, stamping each malicious one with
/// the writer's clock; returns the elapsed time.
async fn write(collection: &Collection<Document>, events: usize) -> Duration {
    let started = Instant::now();
    for start in (0..events).step_by(BATCH) {
        let stamp = now_micros();
        let batch: Vec<Document> = (start..(start + BATCH).min(events))
            .map(|n| {
                let mut document = event(n);
                document.insert("sent_at_us", stamp);
                document
            })
            .collect();
        collection.insert_many(batch).await.expect("insert");
    }
    started.elapsed()
}

struct Watch {
    child: Child,
}

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_watch(mongo: &TestMongo, db: &str, log: &std::path::Path) -> Watch {
    let child = Command::new(dac())
        .args(["watch", "--rules"])
        .arg(example_rule("shadow"))
        .arg("--rules")
        .arg(example_rule("tmp-output-redir"))
        .args(["--mongodb-uri", mongo.uri(), "--db", db, "--no-reload"])
        .env("DAC_CACHE_DIR", dac_tests::repo_root().join("target/dac-test-cache"))
        .env("DAC_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).expect("watch log"))
        .spawn()
        .expect("start dac watch");
    let deadline = Instant::now() + Duration::from_secs(300);
    while !std::fs::read_to_string(log).unwrap_or_default().contains("watching ") {
        assert!(Instant::now() < deadline, "dac watch did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    Watch { child }
}

struct Run {
    server_alone: f64,
    server_watched: f64,
    through_dac: f64,
    catch_up: Duration,
    latencies_ms: Vec<f64>,
}

async fn run_once(mongo: &TestMongo, client: &Client, events: usize, log: &std::path::Path) -> Run {
    // 1. The server alone.
    let db: Database = client.database(&TestMongo::unique_db_name());
    let alone = write(&db.collection("process"), events).await;
    let _ = db.drop().await;

    // 2 and 3. The same writer while dac watches.
    let db_name = TestMongo::unique_db_name();
    let db = client.database(&db_name);
    let watch = start_watch(mongo, &db_name, log);
    let alerts = db.collection::<Document>("alert");
    let expected_alerts = events / MALICIOUS_EVERY;
    let mut alert_stream = alerts.watch().await.expect("watch the alert collection");
    let writer = {
        let collection = db.collection::<Document>("process");
        tokio::spawn(async move {
            let started = Instant::now();
            let elapsed = write(&collection, events).await;
            (started, elapsed)
        })
    };
    let mut latencies_ms = Vec::with_capacity(expected_alerts);
    let mut last_alert = Instant::now();
    while latencies_ms.len() < expected_alerts {
        let change = tokio::time::timeout(Duration::from_secs(120), alert_stream.next())
            .await
            .expect("alerts stopped coming")
            .expect("alert stream ended")
            .expect("alert stream");
        let seen = now_micros();
        last_alert = Instant::now();
        let alert = change.full_document.expect("alert document");
        let sent = alert.get_document("offending_log").and_then(|e| e.get_i64("sent_at_us")).expect("sent_at_us");
        latencies_ms.push((seen - sent) as f64 / 1000.0);
    }
    let (write_started, write_elapsed) = writer.await.expect("writer");
    // The last event is malicious (events is a multiple of 100), so its
    // alert being visible means every event was evaluated.
    let through = last_alert.duration_since(write_started);
    drop(watch);
    let _ = db.drop().await;
    Run {
        server_alone: events as f64 / alone.as_secs_f64(),
        server_watched: events as f64 / write_elapsed.as_secs_f64(),
        through_dac: events as f64 / through.as_secs_f64(),
        catch_up: through.saturating_sub(write_elapsed),
        latencies_ms,
    }
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    values[values.len() / 2]
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index]
}

fn main() -> ExitCode {
    let args = match dac_tests::bench::Size::from_args("watch", dac_tests::bench::Size { events: 50_000, runs: 3 }) {
        Ok(args) => args,
        Err(err) => {
            eprintln!("watch bench: {err}");
            return ExitCode::from(2);
        }
    };
    let events = args.events.div_ceil(MALICIOUS_EVERY) * MALICIOUS_EVERY;
    let mongo = TestMongo::start();
    eprintln!("building dac (release) …");
    let _ = dac();
    let log_dir = tempfile::tempdir().expect("temporary directory");
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let client = runtime.block_on(Client::with_uri_str(mongo.uri())).expect("connect");
    let server = if mongo.is_external() { "DAC_TEST_MONGODB_URI" } else { "nx-27017 0.8.1 (patched)" };
    println!("dac watch vs the server's insert rate: {events} events, {} runs, server {server}", args.runs);
    let mut runs = Vec::new();
    for run in 1..=args.runs {
        let log = log_dir.path().join(format!("watch-{run}.log"));
        let result = runtime.block_on(run_once(&mongo, &client, events, &log));
        let mut sorted = result.latencies_ms.clone();
        sorted.sort_by(|a, b| a.total_cmp(b));
        println!(
            "run {run}: server alone {:.0} ev/s; watched {:.0} ev/s; through dac {:.0} ev/s; caught up {:.0} ms after the last insert; alert latency p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
            result.server_alone,
            result.server_watched,
            result.through_dac,
            result.catch_up.as_secs_f64() * 1000.0,
            percentile(&sorted, 0.5),
            percentile(&sorted, 0.99),
            sorted[sorted.len() - 1],
        );
        runs.push(result);
    }
    let mut alone: Vec<f64> = runs.iter().map(|r| r.server_alone).collect();
    let mut watched: Vec<f64> = runs.iter().map(|r| r.server_watched).collect();
    let mut through: Vec<f64> = runs.iter().map(|r| r.through_dac).collect();
    let mut catch_up: Vec<f64> = runs.iter().map(|r| r.catch_up.as_secs_f64() * 1000.0).collect();
    let mut all: Vec<f64> = runs.iter().flat_map(|r| r.latencies_ms.iter().copied()).collect();
    all.sort_by(|a, b| a.total_cmp(b));
    let (alone, watched, through) = (median(&mut alone), median(&mut watched), median(&mut through));
    println!("medians:");
    println!("  server insert rate, nothing watching:  {alone:>9.0} events/s");
    println!("  server insert rate, dac watching:      {watched:>9.0} events/s ({:.2}× alone)", watched / alone);
    println!(
        "  through dac watch (insert → evaluated, alerts written): {through:>9.0} events/s ({:.2}× the watched insert rate)",
        through / watched
    );
    println!("  caught up after the last insert:       {:>9.0} ms", median(&mut catch_up));
    println!(
        "  alert latency, insert → visible ({} alerts): p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
        all.len(),
        percentile(&all, 0.5),
        percentile(&all, 0.99),
        all[all.len() - 1]
    );
    ExitCode::SUCCESS
}
