//! How long `dac investigate` takes on a big event collection, with and
//! without its indexes.
//!
//! One MongoDB server (nx-27017, or `DAC_TEST_MONGODB_URI`): N generated
//! events across a 12-host fleet (`dac_tests::generate`, the probe's
//! schema, `ts` in milliseconds) are inserted in batches of 1,000 into a
//! fresh collection; one event near the middle gets an alert document, as
//! `dac watch` would write it. Then `dac investigate ALERT_ID --format
//! json` (release build, a process per run, as a user runs it) is timed
//! `--runs` times without indexes (`--no-create-indexes`), `dac init`
//! creates them, and it is timed again. Medians, and their ratio.
//!
//! Run: `cargo bench -p dac-tests --bench investigate [-- --events N --runs R]`
//! (default 1,000,000 events, 5 runs).

use dac_tests::dac;
use dac_tests::generate::{EventGenerator, GeneratorConfig};
use dac_tests::mongo::TestMongo;
use mongodb::bson::{doc, Bson, DateTime, Document};
use mongodb::Client;
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

const BATCH: usize = 1_000;

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

fn main() -> ExitCode {
    let args =
        match dac_tests::bench::Size::from_args("investigate", dac_tests::bench::Size { events: 1_000_000, runs: 5 }) {
            Ok(args) => args,
            Err(err) => {
                eprintln!("investigate bench: {err}");
                return ExitCode::from(2);
            }
        };
    let mongo = TestMongo::start();
    let db_name = TestMongo::unique_db_name();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let client = rt.block_on(async { Client::with_uri_str(mongo.uri()).await }).unwrap();
    let db = client.database(&db_name);
    let events = db.collection::<Document>("process");
    let binary = dac();

    // The events.
    let started = Instant::now();
    let mut generator = EventGenerator::new(GeneratorConfig::default());
    let middle = args.events / 2;
    let mut alerted: Option<Document> = None;
    let mut inserted = 0;
    while inserted < args.events {
        let take = BATCH.min(args.events - inserted);
        let batch: Vec<Document> = (0..take)
            .map(|i| {
                let mut document = match Bson::try_from(generator.next().unwrap()).unwrap() {
                    Bson::Document(document) => document,
                    _ => unreachable!("events are objects"),
                };
                document.insert("_id", mongodb::bson::oid::ObjectId::new());
                if inserted + i == middle {
                    alerted = Some(document.clone());
                }
                document
            })
            .collect();
        rt.block_on(async { events.insert_many(batch).await }).unwrap();
        inserted += take;
        if inserted % 100_000 == 0 {
            eprintln!("  {inserted} events inserted ({:.0}/s)", inserted as f64 / started.elapsed().as_secs_f64());
        }
    }
    let insert_time = started.elapsed();
    let event = alerted.expect("the middle event");
    let alert_id = "0123456789abcdef0123456789abcdef";
    let alert = doc! {
        "_id": alert_id,
        "rule_name": "Benchmark",
        "uuid": "00000000-0000-4000-8000-000000000000",
        "severity": "high",
        "event_id": event.get_object_id("_id").unwrap().to_hex(),
        "ts": event.get("ts").cloned().unwrap(),
        "offending_log": event.clone(),
        "detected_at": DateTime::now(),
    };
    rt.block_on(async { db.collection::<Document>("alert").insert_one(alert).await }).unwrap();

    let run = |extra: &[&str]| -> (Duration, String) {
        let started = Instant::now();
        let output = Command::new(binary)
            .args(["investigate", alert_id, "--format", "json", "--mongodb-uri", mongo.uri(), "--db", &db_name])
            .args(extra)
            .env("DAC_LOG", "warn")
            .output()
            .unwrap();
        let elapsed = started.elapsed();
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        (elapsed, String::from_utf8(output.stdout).unwrap())
    };
    let measure = |extra: &[&str]| -> (Duration, String) {
        let mut times = Vec::new();
        let mut last = String::new();
        for _ in 0..args.runs {
            let (time, out) = run(extra);
            times.push(time);
            last = out;
        }
        (median(times), last)
    };

    // Where the time goes: one more run with the query timings logged.
    let breakdown = |extra: &[&str]| -> String {
        let output = Command::new(binary)
            .args(["investigate", alert_id, "--format", "json", "--mongodb-uri", mongo.uri(), "--db", &db_name])
            .args(extra)
            .env("DAC_LOG", "dac_investigate=debug")
            .env("NO_COLOR", "1")
            .output()
            .unwrap();
        let log = String::from_utf8_lossy(&output.stderr);
        log.lines()
            .filter(|line| line.contains(" read") || line.contains("alerts on"))
            .map(|line| line.split_once("DEBUG ").map_or(line, |(_, rest)| rest).trim().to_owned())
            .collect::<Vec<_>>()
            .join("; ")
    };
    let (without, plain) = measure(&["--no-create-indexes"]);
    let without_breakdown = breakdown(&["--no-create-indexes"]);
    let started = Instant::now();
    let init = Command::new(binary)
        .args(["init", "--mongodb-uri", mongo.uri(), "--db", &db_name])
        .env("DAC_LOG", "warn")
        .output()
        .unwrap();
    assert!(init.status.success(), "{}", String::from_utf8_lossy(&init.stderr));
    let index_time = started.elapsed();
    let (with, indexed) = measure(&["--no-create-indexes"]);
    let with_breakdown = breakdown(&["--no-create-indexes"]);
    assert_eq!(plain, indexed, "the indexes must not change the answer");

    let report: serde_json::Value = serde_json::from_str(&indexed).unwrap();
    let timeline = report["timeline"].as_array().map_or(0, Vec::len);
    let mut depth = 0;
    let mut node = &report["tree"];
    while let Some(child) = node["children"].as_array().and_then(|c| c.first()) {
        depth += 1;
        node = child;
    }
    println!(
        "dac investigate, {} events across 12 hosts ({}):",
        args.events,
        if mongo.is_external() { "external MongoDB" } else { "nx-27017" }
    );
    println!(
        "  inserted in {:.1} s ({:.0} events/s); dac init (3 indexes) {:.1} s",
        insert_time.as_secs_f64(),
        args.events as f64 / insert_time.as_secs_f64(),
        index_time.as_secs_f64()
    );
    println!("  the investigation: {timeline} events in the ±5 min timeline, tree depth {depth}");
    println!("  without indexes: median {:.3} s of {} runs", without.as_secs_f64(), args.runs);
    println!("  with indexes:    median {:.3} s of {} runs", with.as_secs_f64(), args.runs);
    println!("  ratio: {:.1}x faster with the indexes", without.as_secs_f64() / with.as_secs_f64());
    println!("  by query, without indexes: {without_breakdown}");
    println!("  by query, with indexes:    {with_breakdown}");
    if !mongo.is_external() {
        let _ = rt.block_on(async { db.drop().await });
    }
    ExitCode::SUCCESS
}
