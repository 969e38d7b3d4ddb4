//! The seed talk's demo as a test: the probe writes execs into MongoDB,
//! `dac watch` evaluates them with the shadow rule, and running
//! `cat /etc/shadow` yields the alert. Runs against nx-27017 (or the
//! deployment in `DAC_TEST_MONGODB_URI`), like the watch tests.

mod common;

use common::{summary_count, unique_token, RunningProbe};
use dac_tests::mongo::TestMongo;
use dac_tests::{dac, example_rule};
use mongodb::bson::{doc, Bson, Document};
use mongodb::{Client, Collection};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const SHADOW_UUID: &str = "5e3566a3-9f19-4ac7-8710-ec5fb09260ed";

struct Watch {
    child: Child,
    log: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Watch {
    fn start(mongo: &TestMongo, db: &str) -> Watch {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("watch.log");
        let child = Command::new(dac())
            .args(["watch", "--rules"])
            .arg(example_rule("shadow"))
            .args(["--mongodb-uri", mongo.uri(), "--db", db, "--start-at", "now"])
            .env("DAC_CACHE_DIR", dac_tests::repo_root().join("target/dac-test-cache"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start dac watch");
        let watch = Watch { child, log, _dir: dir };
        let deadline = Instant::now() + Duration::from_secs(120);
        while !watch.log().contains("watching ") {
            assert!(Instant::now() < deadline, "dac watch did not start:\n{}", watch.log());
            std::thread::sleep(Duration::from_millis(50));
        }
        watch
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn wait_for(
    collection: &Collection<Document>,
    filter: Document,
    what: &str,
    logs: impl Fn() -> String,
) -> Document {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(found) = collection.find_one(filter.clone()).await.unwrap() {
            return found;
        }
        assert!(Instant::now() < deadline, "no {what} after 60 s:\n{}", logs());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// An integer field, whichever width the server returns it in (nx-27017
/// gives back small Int64 values as Int32).
fn integer(document: &Document, key: &str) -> i64 {
    match document.get(key) {
        Some(Bson::Int32(n)) => i64::from(*n),
        Some(Bson::Int64(n)) => *n,
        other => panic!("{key}: not an integer: {other:?} in {document}"),
    }
}

#[test]
fn cat_etc_shadow_under_the_probe_raises_the_seed_alert() {
    require_probe!();
    let mongo = TestMongo::start();
    let db_name = TestMongo::unique_db_name();
    let watch = Watch::start(&mongo, &db_name);
    let probe = RunningProbe::start(&["--mongodb-uri", mongo.uri(), "--db", &db_name, "--batch-latency-ms", "50"]);

    let mut cat = Command::new("/usr/bin/cat").arg("/etc/shadow").stdout(Stdio::null()).spawn().unwrap();
    let pid = cat.id() as i64;
    assert!(cat.wait().unwrap().success());
    // A benign exec: it must land as an event and raise nothing.
    let marker = unique_token("benign");
    let mut benign = Command::new("/bin/true").arg(&marker).spawn().unwrap();
    let benign_pid = benign.id() as i64;
    assert!(benign.wait().unwrap().success());

    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let logs = || format!("probe:\n{}\nwatch:\n{}", probe.log(), watch.log());
    rt.block_on(async {
        let client = Client::with_uri_str(mongo.uri()).await.unwrap();
        let db = client.database(&db_name);
        let events = db.collection::<Document>("process");
        let alerts = db.collection::<Document>("alert");
        let event = wait_for(&events, doc! { "pid": pid }, "event of the cat", logs).await;
        assert_eq!(event.get_str("command_line").unwrap(), "/usr/bin/cat /etc/shadow");
        assert_eq!(integer(&event, "parent_pid"), std::process::id() as i64);
        // By pid: nx-27017 cannot query into arrays ("argv.1").
        let benign = wait_for(&events, doc! { "pid": benign_pid }, "benign event", logs).await;
        assert_eq!(benign.get_array("argv").unwrap()[1].as_str(), Some(marker.as_str()));

        let alert = wait_for(&alerts, doc! { "offending_log.pid": pid }, "alert", logs).await;
        assert_eq!(alert.get_str("rule_name").unwrap(), "Suspicious /etc/shadow Usage");
        assert_eq!(alert.get_str("uuid").unwrap(), SHADOW_UUID);
        let offending = alert.get_document("offending_log").unwrap();
        assert_eq!(offending.get_str("path").unwrap(), "/usr/bin/cat");
        assert_eq!(offending.get_str("binary").unwrap(), "cat");
        assert_eq!(offending.get_str("arguments").unwrap(), "/etc/shadow");
        assert_eq!(integer(&alert, "ts"), integer(offending, "ts"));
        let benign_alerts = alerts.count_documents(doc! { "offending_log.pid": benign_pid }).await.unwrap();
        assert_eq!(benign_alerts, 0);
    });

    let finished = probe.stop();
    assert_eq!(finished.status, Some(0), "{}", finished.log);
    let written = summary_count(&finished.log, "written to");
    assert_eq!(written, summary_count(&finished.log, "captured"), "{}", finished.log);
    rt.block_on(async {
        let client = Client::with_uri_str(mongo.uri()).await.unwrap();
        let db = client.database(&db_name);
        let stats =
            db.collection::<Document>("probe_stats").find_one(doc! {}).await.unwrap().expect("a stats document");
        assert!(!stats.get_bool("running").unwrap(), "the final stats document says the run ended");
        assert_eq!(integer(&stats, "written") as u64, written);
        assert_eq!(integer(&stats, "kernel_dropped"), 0);
        assert_eq!(db.collection::<Document>("process").count_documents(doc! {}).await.unwrap(), written);
        if !mongo.is_external() {
            db.drop().await.unwrap();
        }
    });
}

#[test]
fn an_unreachable_server_costs_counted_drops_not_a_hang() {
    require_probe!();
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let uri = format!("mongodb://127.0.0.1:{port}/?serverSelectionTimeoutMS=300");
    let probe = RunningProbe::start(&["--mongodb-uri", &uri, "--buffer-events", "5", "--batch-size", "2"]);
    let marker = unique_token("unreachable");
    for _ in 0..50 {
        assert!(Command::new("/bin/true").arg(&marker).status().unwrap().success());
    }
    std::thread::sleep(Duration::from_millis(200));
    let started = Instant::now();
    let finished = probe.stop();
    assert!(started.elapsed() < Duration::from_secs(30), "shutdown took {:?}", started.elapsed());
    assert_eq!(finished.status, Some(3), "{}", finished.log);
    let dropped = summary_count(&finished.log, "dropped in userspace");
    let captured = summary_count(&finished.log, "captured");
    assert!(captured >= 50, "{}", finished.log);
    assert_eq!(summary_count(&finished.log, "written to"), 0, "{}", finished.log);
    assert_eq!(dropped, captured, "every captured event is either written or counted as dropped\n{}", finished.log);
}
