//! `dac investigate` end to end, on a recorded two-host scenario
//! (`tests/fixtures/investigate/events.ndjson`, described in its README):
//! the events go into MongoDB, a real `dac watch` with the example rules
//! writes the alerts, and `dac investigate`'s text and JSON output must
//! equal the expected files byte for byte. `DAC_BLESS=1` rewrites the
//! expected files from the current output (review the diff).
//!
//! Runs against nx-27017, or against the deployment in
//! `DAC_TEST_MONGODB_URI`.

use dac_tests::mongo::TestMongo;
use dac_tests::{dac, example_rules_dir, repo_root};
use mongodb::bson::{doc, Bson, Document};
use mongodb::Client;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const SHADOW: &str = "5e3566a3-9f19-4ac7-8710-ec5fb09260ed";
const DOWNLOAD_PIPE_SHELL: &str = "7ce07b7e-a538-44fa-9508-7c67749aecdc";
/// The scenario's alerting events, by `_id`.
const SUDO_WEB: &str = "6553f000000000000000000d";
const CURL_PIPE: &str = "6553f0000000000000000009";

fn fixtures() -> PathBuf {
    repo_root().join("tests/fixtures/investigate")
}

/// The fixture's events as documents (Extended JSON: `$oid`).
fn scenario() -> Vec<Document> {
    let text = std::fs::read_to_string(fixtures().join("events.ndjson")).unwrap();
    text.lines()
        .map(|line| match Bson::try_from(serde_json::from_str::<serde_json::Value>(line).unwrap()).unwrap() {
            Bson::Document(document) => document,
            other => panic!("not a document: {other}"),
        })
        .collect()
}

/// The events in `db.process`, alerts written by `dac watch` into
/// `db.alert`: what an investigator finds after the fact.
struct Recorded {
    mongo: TestMongo,
    db: String,
    rt: tokio::runtime::Runtime,
    client: Client,
}

impl Recorded {
    fn alert_id(&self, event_id: &str, uuid: &str) -> String {
        let alerts = self.client.database(&self.db).collection::<Document>("alert");
        let alert =
            self.rt.block_on(async { alerts.find_one(doc! { "event_id": event_id, "uuid": uuid }).await }).unwrap();
        alert.unwrap_or_else(|| panic!("no alert of {uuid} on {event_id}")).get_str("_id").unwrap().to_owned()
    }

    fn dac(&self, args: &[&str]) -> Output {
        Command::new(dac())
            .args(args)
            .args(["--mongodb-uri", self.mongo.uri(), "--db", &self.db])
            .env_remove("MONGODB_URI")
            .env_remove("CHANGE_STREAM_DB")
            .env("DAC_LOG", "warn")
            .output()
            .unwrap()
    }
}

fn record() -> Recorded {
    // Six events fire a rule: the curl pipe, two /etc/shadow reads in the
    // window, the reverse shell, one outside the window, one on db-01.
    record_events(scenario(), 6)
}

/// `events` inserted while `dac watch` runs the example rules, once it
/// wrote `alerts` alerts.
fn record_events(events: Vec<Document>, expected: u64) -> Recorded {
    let mongo = TestMongo::start();
    let db = TestMongo::unique_db_name();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let client = rt.block_on(async { Client::with_uri_str(mongo.uri()).await }).unwrap();

    let log = tempfile::NamedTempFile::new().unwrap();
    let mut watch = Command::new(dac())
        .args(["watch", "--rules"])
        .arg(example_rules_dir())
        .args(["--mongodb-uri", mongo.uri(), "--db", &db, "--no-reload"])
        .env("DAC_CACHE_DIR", repo_root().join("target/dac-test-cache"))
        .env("DAC_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log.reopen().unwrap())
        .spawn()
        .unwrap();
    let read_log = || std::fs::read_to_string(log.path()).unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(120);
    while !read_log().contains("watching ") {
        assert!(Instant::now() < deadline, "dac watch did not start:\n{}", read_log());
        std::thread::sleep(Duration::from_millis(50));
    }

    let database = client.database(&db);
    rt.block_on(async { database.collection::<Document>("process").insert_many(&events).await }).unwrap();
    let alerts = database.collection::<Document>("alert");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let count = rt.block_on(async { alerts.count_documents(doc! {}).await }).unwrap();
        if count >= expected {
            assert_eq!(count, expected, "alerts:\n{}", read_log());
            break;
        }
        assert!(Instant::now() < deadline, "{count} of {expected} alerts after 60 s:\n{}", read_log());
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = Command::new("kill").args(["-TERM", &watch.id().to_string()]).status();
    let _ = watch.wait();
    Recorded { mongo, db, rt, client }
}

/// Compares `actual` to the expected file, or writes it with `DAC_BLESS=1`.
fn expect_file(name: &str, actual: &str) {
    let path = fixtures().join(name);
    if std::env::var_os("DAC_BLESS").is_some() {
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|err| panic!("{}: {err}", path.display()));
    assert!(
        actual == expected,
        "{name} differs from the expected output (DAC_BLESS=1 rewrites it).\n--- expected\n{expected}\n--- actual\n{actual}"
    );
}

fn stdout(output: &Output) -> String {
    assert!(output.status.success(), "exit {:?}\n{}", output.status.code(), String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout.clone()).unwrap()
}

#[test]
fn recorded_scenario_timeline_and_tree_are_exact() {
    let recorded = record();

    // Indexes: created by `dac init`, idempotently.
    for _ in 0..2 {
        let out = stdout(&recorded.dac(&["init"]));
        assert_eq!(
            out,
            format!(
                "index {db}.process dac_hostname_ts\nindex {db}.process dac_hostname_pid_ts\nindex {db}.alert dac_event_id\n",
                db = recorded.db
            )
        );
    }

    // The sudo on web-01: reused pid 4200 and 4303, a parent that exec'd
    // (sh → python3), a descendant that alerted too, the other host's
    // identical pids and the events outside the window left out.
    let sudo = recorded.alert_id(SUDO_WEB, SHADOW);
    expect_file("sudo-shadow.txt", &stdout(&recorded.dac(&["investigate", &sudo])));
    expect_file("sudo-shadow.json", &stdout(&recorded.dac(&["investigate", &sudo, "--format", "json"])));

    // The curl pipe: the process that exec'd twice is the alerting one;
    // its child before the exec hangs under the sh image, the rest under
    // the python3 image marked (exec).
    let curl = recorded.alert_id(CURL_PIPE, DOWNLOAD_PIPE_SHELL);
    expect_file("curl-pipe.txt", &stdout(&recorded.dac(&["investigate", &curl, "--window", "90"])));

    // --last with a host filter: db-01's only alert.
    expect_file("db-01-last.txt", &stdout(&recorded.dac(&["investigate", "--last", "5", "--host", "db-01"])));
}

#[test]
fn bad_and_unknown_ids_get_a_clear_message() {
    let recorded = record();
    let fail = |args: &[&str]| {
        let output = recorded.dac(args);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {output:?}");
        assert!(output.stdout.is_empty());
        String::from_utf8(output.stderr).unwrap()
    };
    let db = &recorded.db;

    let message = fail(&["investigate", "not-an-id"]);
    assert!(
        message.contains(&format!("no alert with _id \"not-an-id\" in {db}.alert (dac's alert ids are 32 hex digits")),
        "{message}"
    );
    assert!(message.contains("dac investigate --last 10"), "{message}");

    let message = fail(&["investigate", "0123456789abcdef0123456789abcdef"]);
    assert!(
        message.contains(&format!("no alert with _id \"0123456789abcdef0123456789abcdef\" in {db}.alert;")),
        "{message}"
    );

    // An event's id instead of its alert's: the message names the alert.
    let sudo = recorded.alert_id(SUDO_WEB, SHADOW);
    let message = fail(&["investigate", SUDO_WEB]);
    assert!(message.contains(&format!("({SUDO_WEB} is the event of alert {sudo}")), "{message}");

    let message = fail(&["investigate", "--last", "3", "--rule", "No Such Rule"]);
    assert!(message.contains(&format!("no alerts in {db}.alert for rule \"No Such Rule\"")), "{message}");
}

/// Events whose `ts` is a BSON date rather than milliseconds: the window
/// is queried in dates, the tree and timeline are the same.
#[test]
fn events_with_date_timestamps_are_investigated_alike() {
    use mongodb::bson::{oid::ObjectId, DateTime};
    let at = |ms: i64| DateTime::from_millis(1_700_000_000_000 + ms);
    let event = |n: u8, ms: i64, pid: i64, ppid: i64, command_line: &str| {
        doc! {
            "_id": ObjectId::parse_str(format!("6553f2{:018x}", n)).unwrap(),
            "hostname": "app-01", "pid": pid, "parent_pid": ppid, "user": "root",
            "command_line": command_line, "ts": at(ms),
        }
    };
    let recorded = record_events(
        vec![
            event(1, -400_000, 10, 1, "/usr/sbin/cron -f"), // before the window: an ancestor
            event(2, -1_000, 20, 10, "/bin/sh -c backup"),
            event(3, 0, 30, 20, "/usr/bin/sudo cat /etc/shadow"),
            event(4, 500, 31, 30, "/usr/bin/cat /etc/shadow"),
            event(5, 301_000, 40, 20, "/usr/bin/true"), // after the window
        ],
        2,
    );
    let sudo = recorded.alert_id("6553f2000000000000000003", SHADOW);
    let report: serde_json::Value =
        serde_json::from_str(&stdout(&recorded.dac(&["investigate", &sudo, "--format", "json"]))).unwrap();
    let timeline: Vec<&str> =
        report["timeline"].as_array().unwrap().iter().map(|e| e["command_line"].as_str().unwrap()).collect();
    assert_eq!(timeline, ["/bin/sh -c backup", "/usr/bin/sudo cat /etc/shadow", "/usr/bin/cat /etc/shadow"]);
    assert_eq!(report["timeline"][1]["ts"], "2023-11-14T22:13:20.000Z");
    let mut chain = Vec::new();
    let mut node = &report["tree"];
    loop {
        chain.push(format!("{} {}", node["pid"], node["link"].as_str().unwrap()));
        match node["children"].as_array().and_then(|c| c.first()) {
            Some(child) => node = child,
            None => break,
        }
    }
    assert_eq!(chain, ["10 root", "20 child", "30 child", "31 child"]);
}
