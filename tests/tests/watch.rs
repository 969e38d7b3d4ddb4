//! `dac watch` end to end: documents inserted into a MongoDB collection
//! come out as alerts in the alert collection, and a restart neither loses
//! nor duplicates any. Runs against nx-27017, or against the deployment in
//! `DAC_TEST_MONGODB_URI`.

use dac_tests::mongo::TestMongo;
use dac_tests::{dac, example_rule};
use mongodb::bson::{doc, oid::ObjectId, Bson, Document};
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
        Watch::start_with(mongo, db, &[])
    }

    /// `dac watch` with the shadow rule and `extra` arguments, once it
    /// logged that it is watching.
    fn start_with(mongo: &TestMongo, db: &str, extra: &[&str]) -> Watch {
        let watch = Watch::spawn(mongo, db, extra);
        watch.wait_for_log("watching ", Duration::from_secs(120));
        watch
    }

    fn spawn(mongo: &TestMongo, db: &str, extra: &[&str]) -> Watch {
        Watch::spawn_with_rules(mongo, db, &example_rule("shadow"), extra)
    }

    fn spawn_with_rules(mongo: &TestMongo, db: &str, rules: &std::path::Path, extra: &[&str]) -> Watch {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("watch.log");
        let child = watch_command(mongo, db, rules)
            .args(extra)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start dac watch");
        Watch { child, log, _dir: dir }
    }

    /// Waits for the process to exit by itself.
    fn exit(mut self, timeout: Duration) -> (Option<i32>, String) {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return (status.code(), self.log());
            }
            assert!(Instant::now() < deadline, "dac watch did not exit within {timeout:?}:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn wait_for_log(&self, needle: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !self.log().contains(needle) {
            assert!(Instant::now() < deadline, "no {needle:?} in the watch log:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM, then the exit status.
    fn stop(mut self) -> (Option<i32>, String) {
        let sent = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().unwrap();
        assert!(sent.success());
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return (status.code(), self.log());
            }
            assert!(Instant::now() < deadline, "dac watch did not stop on SIGTERM:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn watch_command(mongo: &TestMongo, db: &str, rules: &std::path::Path) -> Command {
    let mut command = Command::new(dac());
    command
        .args(["watch", "--rules"])
        .arg(rules)
        .args(["--mongodb-uri", mongo.uri(), "--db", db, "--stats-interval", "1"])
        .env("DAC_CACHE_DIR", dac_tests::repo_root().join("target/dac-test-cache"))
        .env("DAC_LOG", "info");
    command
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

/// A server (or the external deployment), a fresh database name, a
/// runtime for the driver, and that database.
fn setup() -> (TestMongo, String, tokio::runtime::Runtime, mongodb::Database) {
    let mongo = TestMongo::start();
    let db_name = TestMongo::unique_db_name();
    let rt = runtime();
    let client = rt.block_on(Client::with_uri_str(mongo.uri())).unwrap();
    let db = client.database(&db_name);
    (mongo, db_name, rt, db)
}

/// The `seq` of every alerted event, sorted.
async fn alerted_seqs(alerts: &Collection<Document>) -> Vec<i32> {
    let mut seqs = Vec::new();
    let mut cursor = alerts.find(doc! {}).await.unwrap();
    while cursor.advance().await.unwrap() {
        seqs.push(cursor.deserialize_current().unwrap().get_document("offending_log").unwrap().get_i32("seq").unwrap());
    }
    seqs.sort();
    seqs
}

/// Polls until `collection` holds `count` documents matching `filter`.
async fn wait_for_count(collection: &Collection<Document>, filter: Document, count: u64, watch: &Watch) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let found = collection.count_documents(filter.clone()).await.unwrap();
        if found >= count {
            assert_eq!(found, count, "more documents than expected");
            return;
        }
        assert!(Instant::now() < deadline, "{found} of {count} documents after 60 s; watch log:\n{}", watch.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The seed talk's demo: the `/usr/bin/sudo cat /etc/shadow` exec lands in
/// the event collection, and its alert in the alert collection.
#[test]
fn inserted_seed_event_yields_its_alert_field_by_field() {
    let mongo = TestMongo::start();
    let db_name = TestMongo::unique_db_name();
    let watch = Watch::start(&mongo, &db_name);
    let rt = runtime();
    rt.block_on(async {
        let client = Client::with_uri_str(mongo.uri()).await.unwrap();
        let db = client.database(&db_name);
        let events = db.collection::<Document>("process");
        let alerts = db.collection::<Document>("alert");
        let id = ObjectId::new();
        let seed = doc! {
            "_id": id,
            "hostname": "pop-os",
            "ip_address": "127.0.1.1",
            "parent_pid": 7422,
            "pid": 82052,
            "path": "/usr/bin/sudo",
            "binary": "sudo",
            "arguments": "cat /etc/shadow",
            "command_line": "/usr/bin/sudo cat /etc/shadow",
            "ts": 1695342026084_i64,
        };
        let benign = doc! { "hostname": "pop-os", "command_line": "/usr/bin/ls -l /tmp/", "ts": 1695342026085_i64 };
        events.insert_many([seed.clone(), benign]).await.unwrap();
        wait_for_count(&alerts, doc! {}, 1, &watch).await;
        let alert = alerts.find_one(doc! {}).await.unwrap().unwrap();
        assert_eq!(alert.get_str("rule_name").unwrap(), "Suspicious /etc/shadow Usage");
        assert_eq!(alert.get_str("uuid").unwrap(), SHADOW_UUID);
        assert_eq!(alert.get_document("offending_log").unwrap(), &seed, "the event, ObjectId and all");
        assert_eq!(alert.get("ts"), Some(&Bson::Int64(1695342026084)));
        assert_eq!(alert.get_str("event_id").unwrap(), id.to_hex());
        assert_eq!(alert.get_str("rule_version").unwrap(), "1.0.0");
        assert!(alert.get_str("rule_hash").unwrap().starts_with("sha256:"));
        assert_eq!(alert.get_str("severity").unwrap(), "high");
        assert!(alert.get_datetime("detected_at").is_ok());
        assert_eq!(
            alert.get_str("_id").unwrap(),
            dac_mongo::alert_id(SHADOW_UUID, "1.0.0", &id.to_hex()),
            "the alert id is derived from (rule uuid, version, event id)"
        );
        assert_eq!(
            alert.get_array("findings").unwrap()[0].as_document().unwrap().get_array("matched").unwrap()[0]
                .as_document()
                .unwrap()
                .get_str("value")
                .unwrap(),
            "/usr/bin/sudo cat /etc/shadow"
        );
        if !mongo.is_external() {
            db.drop().await.unwrap();
        }
    });
    let (status, log) = watch.stop();
    assert_eq!(status, Some(0), "{log}");
    assert!(log.contains("loaded shadow.wasm (uuid 5e3566a3-9f19-4ac7-8710-ec5fb09260ed, sha256 "), "{log}");
}

/// Stopped and started again, `dac watch` resumes after its checkpoint:
/// events inserted while it was down are evaluated, and none twice.
#[test]
fn restart_resumes_after_the_checkpoint_without_loss_or_duplicates() {
    let (mongo, db_name, rt, db) = setup();
    let events = db.collection::<Document>("process");
    let alerts = db.collection::<Document>("alert");
    let malicious = |n: i32| doc! { "seq": n, "command_line": format!("/usr/bin/cat /etc/shadow #{n}") };

    let watch = Watch::start(&mongo, &db_name);
    rt.block_on(async {
        events.insert_many((0..50).map(malicious)).await.unwrap();
        wait_for_count(&alerts, doc! {}, 50, &watch).await;
    });
    let (status, log) = watch.stop();
    assert_eq!(status, Some(0), "{log}");
    let checkpoint = rt
        .block_on(async {
            db.collection::<Document>("config").find_one(doc! { "_id": format!("checkpoint:{db_name}.process") }).await
        })
        .unwrap()
        .expect("a checkpoint was stored on shutdown");
    assert!(checkpoint.get("resume_token").is_some());

    // Inserted while nothing watches.
    rt.block_on(async { events.insert_many((50..80).map(malicious)).await }).unwrap();
    let watch = Watch::start(&mongo, &db_name);
    rt.block_on(async {
        events.insert_many((80..100).map(malicious)).await.unwrap();
        wait_for_count(&alerts, doc! {}, 100, &watch).await;
        // Settled: nothing more arrives.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert_eq!(alerts.count_documents(doc! {}).await.unwrap(), 100);
        assert_eq!(alerted_seqs(&alerts).await, (0..100).collect::<Vec<_>>());
    });
    let (status, log) = watch.stop();
    assert_eq!(status, Some(0), "{log}");
    if !mongo.is_external() {
        rt.block_on(async { db.drop().await }).unwrap();
    }
}

/// The seed's promise, tested: while 20,000 events (1 in 10 malicious)
/// are inserted, `dac watch` is killed with SIGKILL at random moments and
/// restarted, at least ten times. Afterwards every malicious event has
/// exactly one alert, no benign event has one, and the stored checkpoint is
/// past the last event.
#[test]
fn sigkill_at_random_points_loses_and_duplicates_nothing() {
    use rand::{Rng, SeedableRng};
    const EVENTS: i32 = 20_000;
    const BATCH: i32 = 100;
    let (mongo, db_name, rt, db) = setup();
    let events = db.collection::<Document>("process");
    let alerts = db.collection::<Document>("alert");
    let event = |n: i32| {
        let command_line =
            if n % 10 == 0 { format!("/usr/bin/cat /etc/shadow #{n}") } else { format!("/usr/bin/ls /srv/{n}") };
        doc! { "seq": n, "hostname": "web-01", "command_line": command_line }
    };

    // Started first: its stream begins "now", before the first insert.
    let mut watch = Watch::start(&mongo, &db_name);
    let writer = {
        let events = events.clone();
        rt.spawn(async move {
            for start in (0..EVENTS).step_by(BATCH as usize) {
                events.insert_many((start..start + BATCH).map(event)).await.unwrap();
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let mut rng = rand::rngs::SmallRng::seed_from_u64(0xdac);
    let mut kills = 0;
    while !writer.is_finished() || kills < 10 {
        std::thread::sleep(Duration::from_millis(rng.random_range(150..900)));
        watch.child.kill().unwrap();
        watch.child.wait().unwrap();
        kills += 1;
        watch = Watch::start(&mongo, &db_name);
    }
    rt.block_on(writer).unwrap();
    rt.block_on(async {
        wait_for_count(&alerts, doc! {}, (EVENTS / 10) as u64, &watch).await;
        tokio::time::sleep(Duration::from_millis(1500)).await;
    });
    let (status, log) = watch.stop();
    assert_eq!(status, Some(0), "{log}");
    assert!(kills >= 10, "only {kills} kills");

    rt.block_on(async {
        let mut seqs = Vec::new();
        let mut cursor = alerts.find(doc! {}).await.unwrap();
        while cursor.advance().await.unwrap() {
            seqs.push(
                cursor.deserialize_current().unwrap().get_document("offending_log").unwrap().get_i32("seq").unwrap(),
            );
        }
        seqs.sort();
        let expected: Vec<i32> = (0..EVENTS).filter(|n| n % 10 == 0).collect();
        assert_eq!(seqs.len(), expected.len(), "alerts: {} for {} malicious events", seqs.len(), expected.len());
        assert_eq!(seqs, expected, "every malicious event exactly once, no benign one");

        // The checkpoint is past the last event: a stream resumed from it
        // sees a sentinel inserted now as its very first event.
        let checkpoint = db
            .collection::<Document>("config")
            .find_one(doc! { "_id": format!("checkpoint:{db_name}.process") })
            .await
            .unwrap()
            .expect("checkpoint");
        let token: mongodb::change_stream::event::ResumeToken =
            mongodb::bson::from_bson(checkpoint.get("resume_token").unwrap().clone()).unwrap();
        let mut stream = events
            .watch()
            .pipeline([doc! { "$match": { "operationType": { "$in": ["insert"] } } }])
            .resume_after(token)
            .await
            .unwrap();
        events.insert_one(doc! { "seq": -1, "sentinel": true }).await.unwrap();
        let first = tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                if let Some(change) = stream.next_if_any().await.unwrap() {
                    return change;
                }
            }
        })
        .await
        .expect("the sentinel arrives");
        assert_eq!(
            first.full_document.unwrap().get_i32("seq").unwrap(),
            -1,
            "events after the checkpoint were unprocessed"
        );
        if !mongo.is_external() {
            db.drop().await.unwrap();
        }
    });
    eprintln!("{kills} kills");
}

/// The stored checkpoint fell out of the server's change history while
/// `dac watch` was down. By default it stops with an error saying what
/// to do; with `--on-history-lost restart-from-now` it warns, counts the
/// gap and evaluates the events inserted from then on — and none of the
/// gap. Needs a server whose history a test can shrink: skipped (with a
/// message) on an external deployment.
#[test]
fn a_checkpoint_older_than_the_history_stops_or_restarts_from_now_as_configured() {
    let Some(mongo) = TestMongo::start_with_history_window(50) else {
        eprintln!("skipped: a test cannot shrink the oplog of the DAC_TEST_MONGODB_URI deployment");
        return;
    };
    let db_name = TestMongo::unique_db_name();
    let rt = runtime();
    let db = rt.block_on(Client::with_uri_str(mongo.uri())).unwrap().database(&db_name);
    let events = db.collection::<Document>("process");
    let alerts = db.collection::<Document>("alert");
    let event = |n: i32| doc! { "seq": n, "command_line": format!("/usr/bin/cat /etc/shadow #{n}") };

    let (status, log) = Watch::start(&mongo, &db_name).stop();
    assert_eq!(status, Some(0), "{log}");
    // 200 malicious events while dac is down; a reader that keeps up makes
    // the server prune its history to the newest 50.
    rt.block_on(async {
        let mut reader = events.watch().await.unwrap();
        for start in (0..200).step_by(10) {
            events.insert_many((start..start + 10).map(event)).await.unwrap();
            let mut read = 0;
            while read < 10 {
                if reader.next_if_any().await.unwrap().is_some() {
                    read += 1;
                }
            }
        }
    });

    let (status, log) = Watch::spawn(&mongo, &db_name, &[]).exit(Duration::from_secs(120));
    assert_eq!(status, Some(2), "the default policy stops:\n{log}");
    assert!(log.contains("no longer in the server's history"), "{log}");
    assert!(log.contains("--on-history-lost restart-from-now"), "the error says how to go on:\n{log}");

    let watch = Watch::start_with(&mongo, &db_name, &["--on-history-lost", "restart-from-now"]);
    assert!(watch.log().contains("RESTARTING FROM NOW"), "{}", watch.log());
    rt.block_on(async {
        events.insert_one(event(1000)).await.unwrap();
        wait_for_count(&alerts, doc! {}, 1, &watch).await;
    });
    let (status, log) = watch.stop();
    assert_eq!(status, Some(0), "{log}");
    assert!(log.contains("1 history gaps"), "the gap is counted in the summary:\n{log}");
    // A restart after that resumes normally: the checkpoint moved past the gap.
    let watch = Watch::start(&mongo, &db_name);
    rt.block_on(async {
        events.insert_one(event(1001)).await.unwrap();
        wait_for_count(&alerts, doc! {}, 2, &watch).await;
        assert_eq!(alerted_seqs(&alerts).await, [1000, 1001], "nothing of the gap was evaluated");
    });
    let (status, log) = watch.stop();
    assert_eq!(status, Some(0), "{log}");
    assert!(log.contains("0 history gaps"), "{log}");
}

/// Hot reload while streaming: a rule added to the rules directory alerts
/// only on documents inserted after it was loaded; a removed rule stops
/// alerting; a broken replacement is reported and the previous version
/// keeps running. Each step is ordered by the log line of the swap, and
/// "no alert" is proven by a later event's alert (documents are evaluated
/// in order).
#[test]
fn rules_added_changed_and_removed_while_streaming_take_effect_between_documents() {
    const REDIR_UUID: &str = "f825ad39-d4b1-41da-91ec-6438d8dc9ace";
    let (mongo, db_name, rt, db) = setup();
    let events = db.collection::<Document>("process");
    let alerts = db.collection::<Document>("alert");
    let rules = tempfile::tempdir().unwrap();
    let install = |name: &str, bytes: &[u8]| {
        // Written aside, then renamed in: what a careful deploy does.
        let staged = rules.path().join(format!(".{name}.partial"));
        std::fs::write(&staged, bytes).unwrap();
        std::fs::rename(&staged, rules.path().join(name)).unwrap();
    };
    install("shadow.wasm", &std::fs::read(example_rule("shadow")).unwrap());
    let watch = Watch::spawn_with_rules(&mongo, &db_name, rules.path(), &[]);
    watch.wait_for_log("watching ", Duration::from_secs(120));
    let shadow = |n: i32| doc! { "seq": n, "command_line": "/usr/bin/cat /etc/shadow" };
    let redirect = |n: i32| doc! { "seq": n, "command_line": "/bin/sh -c echo pwned > /tmp/out" };
    let alerts_by_rule = || async {
        let mut found = Vec::new();
        let mut cursor = alerts.find(doc! {}).await.unwrap();
        while cursor.advance().await.unwrap() {
            let alert = cursor.deserialize_current().unwrap();
            let seq = alert.get_document("offending_log").unwrap().get_i32("seq").unwrap();
            found.push((seq, alert.get_str("uuid").unwrap().to_owned()));
        }
        found.sort();
        found
    };

    rt.block_on(async {
        // Only the shadow rule runs: the redirection goes unnoticed.
        events.insert_many([redirect(1), shadow(2)]).await.unwrap();
        wait_for_count(&alerts, doc! {}, 1, &watch).await;
    });

    install("tmp-output-redir.wasm", &std::fs::read(example_rule("tmp-output-redir")).unwrap());
    watch.wait_for_log("loaded tmp-output-redir.wasm (uuid f825ad39", Duration::from_secs(60));
    rt.block_on(async {
        events.insert_one(redirect(3)).await.unwrap();
        wait_for_count(&alerts, doc! {}, 2, &watch).await;
    });

    std::fs::remove_file(rules.path().join("shadow.wasm")).unwrap();
    watch.wait_for_log("removed shadow.wasm", Duration::from_secs(60));
    rt.block_on(async {
        events.insert_many([shadow(4), redirect(5)]).await.unwrap();
        wait_for_count(&alerts, doc! { "uuid": REDIR_UUID }, 2, &watch).await;
    });

    install("tmp-output-redir.wasm", b"\0asm but not really a component");
    watch.wait_for_log("keeping the previous version of tmp-output-redir.wasm", Duration::from_secs(60));
    rt.block_on(async {
        events.insert_one(redirect(6)).await.unwrap();
        wait_for_count(&alerts, doc! { "uuid": REDIR_UUID }, 3, &watch).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(
            alerts_by_rule().await,
            [
                (2, SHADOW_UUID.to_owned()),
                (3, REDIR_UUID.to_owned()),
                (5, REDIR_UUID.to_owned()),
                (6, REDIR_UUID.to_owned())
            ],
            "each rule alerts exactly on the documents after it was loaded and before it was removed"
        );
    });
    let (status, log) = watch.stop();
    assert_eq!(status, Some(0), "{log}");
    assert!(log.contains("not a WebAssembly file") || log.contains("invalid component"), "{log}");
}

/// Documents a rule does not expect — a missing field, wrong types, an
/// 80-level nesting, a command line just under MongoDB's 16 MiB document
/// limit — are evaluated (or found not to match) without a crash; the huge
/// one's alert (the event plus alert fields, over 16 MiB) still fits in a
/// MongoDB document because its long strings are cut, and it says so.
#[test]
fn odd_and_huge_documents_are_evaluated_without_a_crash() {
    let (mongo, db_name, rt, db) = setup();
    let events = db.collection::<Document>("process");
    let alerts = db.collection::<Document>("alert");
    let watch = Watch::start(&mongo, &db_name);
    let mut nested = doc! { "leaf": "/etc/shadow" };
    for _ in 0..80 {
        nested = doc! { "down": nested };
    }
    // The event fits in 16 MiB; the event plus the alert's fields do not.
    let huge = format!("/usr/bin/printf {} /etc/shadow", "A".repeat(16 * 1024 * 1024 - 6_000));
    rt.block_on(async {
        let documents = [
            doc! { "seq": 1, "hostname": "web-01" },
            doc! { "seq": 2, "command_line": 42 },
            doc! { "seq": 3, "command_line": ["cat", "/etc/shadow"] },
            doc! { "seq": 4, "command_line": { "text": "/etc/shadow" } },
            doc! { "seq": 5, "command_line": Bson::Null },
            doc! { "seq": 6, "command_line": "/usr/bin/cat /etc/shadow", "deep": nested },
            doc! { "seq": 7, "command_line": huge.as_str() },
            doc! { "seq": 8, "command_line": "/usr/bin/sudo cat /etc/shadow" },
        ];
        for document in documents {
            events.insert_one(document).await.unwrap();
        }
        wait_for_count(&alerts, doc! {}, 3, &watch).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(alerted_seqs(&alerts).await, [6, 7, 8]);
        let big = alerts.find_one(doc! { "offending_log.seq": 7 }).await.unwrap().unwrap();
        assert_eq!(big.get_bool("truncated"), Ok(true), "the huge event's alert is marked");
        let command_line = big.get_document("offending_log").unwrap().get_str("command_line").unwrap();
        assert!(command_line.starts_with("/usr/bin/printf AAAA") && command_line.ends_with("bytes cut]"));
        let deep = alerts.find_one(doc! { "offending_log.seq": 6 }).await.unwrap().unwrap();
        let mut level = deep.get_document("offending_log").unwrap().get_document("deep").unwrap();
        for _ in 0..80 {
            level = level.get_document("down").unwrap();
        }
        assert_eq!(level.get_str("leaf"), Ok("/etc/shadow"), "the nesting survives into the alert");
    });
    let (status, log) = watch.stop();
    assert_eq!(status, Some(0), "{log}");
    assert!(!log.contains("panicked"), "{log}");
    assert!(log.contains("8 events from"), "every document was evaluated:\n{log}");
}

/// The server restarts (same database file) while documents keep coming:
/// `dac watch` reconnects, resumes after the last event it read, and every
/// malicious document gets exactly one alert. An external deployment
/// cannot be restarted by a test: skipped there, with a message.
#[test]
fn a_server_restart_mid_stream_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut mongo = TestMongo::start_with_db_file(&dir.path().join("events.db"));
    if mongo.is_external() {
        eprintln!("skipped: a test cannot restart the DAC_TEST_MONGODB_URI deployment");
        return;
    }
    let db_name = TestMongo::unique_db_name();
    let rt = runtime();
    let client = rt.block_on(Client::with_uri_str(mongo.uri())).unwrap();
    let db = client.database(&db_name);
    let events = db.collection::<Document>("process");
    let alerts = db.collection::<Document>("alert");
    let event = |n: i32| {
        let command_line =
            if n % 10 == 0 { format!("/usr/bin/cat /etc/shadow #{n}") } else { format!("/usr/bin/ls /srv/{n}") };
        doc! { "seq": n, "command_line": command_line }
    };
    let watch = Watch::start(&mongo, &db_name);
    rt.block_on(async {
        events.insert_many((0..500).map(event)).await.unwrap();
        wait_for_count(&alerts, doc! {}, 50, &watch).await;
    });
    let before = mongo.server_pid();
    mongo.restart();
    assert_ne!(mongo.server_pid(), before, "a new server process");
    rt.block_on(async {
        // The writer's pooled connection died with the server: retry.
        let mut attempts = 0;
        while let Err(err) = events.insert_many((500..1000).map(event)).await {
            attempts += 1;
            assert!(attempts < 5, "cannot insert after the restart: {err}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        wait_for_count(&alerts, doc! {}, 100, &watch).await;
        tokio::time::sleep(Duration::from_millis(1000)).await;
        let expected: Vec<i32> = (0..1000).filter(|n| n % 10 == 0).collect();
        assert_eq!(alerted_seqs(&alerts).await, expected);
    });
    let (status, log) = watch.stop();
    assert_eq!(status, Some(0), "{log}");
    // The driver resumes by itself after CursorNotFound; dac resumes when
    // the driver gives up. Either way: every event once.
    assert!(log.contains("1000 events from"), "{log}");
}
