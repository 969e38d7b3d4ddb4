//! `dac watch` with YAML rules: they alert like components, and hot reload
//! adds, replaces and removes them between documents; a broken edit is
//! reported with FILE:LINE and the previous version keeps running. Runs
//! against nx-27017, or against the deployment in `DAC_TEST_MONGODB_URI`.

use dac_tests::mongo::TestMongo;
use dac_tests::{dac, yaml_rules_dir};
use mongodb::bson::{doc, Document};
use mongodb::{Client, Collection};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const SHADOW_UUID: &str = "5e3566a3-9f19-4ac7-8710-ec5fb09260ed";
const REDIR_UUID: &str = "f825ad39-d4b1-41da-91ec-6438d8dc9ace";

struct Watch {
    child: Child,
    log: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Watch {
    fn spawn(mongo: &TestMongo, db: &str, rules: &Path) -> Watch {
        Watch::spawn_with(mongo, db, rules, &[])
    }

    fn spawn_with(mongo: &TestMongo, db: &str, rules: &Path, extra: &[&str]) -> Watch {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("watch.log");
        let child = Command::new(dac())
            .args(["watch", "--rules"])
            .arg(rules)
            .args(["--mongodb-uri", mongo.uri(), "--db", db, "--stats-interval", "1"])
            .args(extra)
            .env("DAC_CACHE_DIR", dac_tests::repo_root().join("target/dac-test-cache"))
            .env("DAC_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start dac watch");
        Watch { child, log, _dir: dir }
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

async fn wait_for_count(collection: &Collection<Document>, count: u64, watch: &Watch) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let found = collection.count_documents(doc! {}).await.unwrap();
        if found >= count {
            assert_eq!(found, count, "more alerts than expected:\n{}", watch.log());
            return;
        }
        assert!(Instant::now() < deadline, "{found} of {count} alerts after 60 s; watch log:\n{}", watch.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A server, a fresh database's name, a runtime for the driver, and the
/// database.
fn database() -> (TestMongo, String, tokio::runtime::Runtime, mongodb::Database) {
    let mongo = TestMongo::start();
    let db_name = TestMongo::unique_db_name();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let client = rt.block_on(Client::with_uri_str(mongo.uri())).unwrap();
    let db = client.database(&db_name);
    (mongo, db_name, rt, db)
}

#[test]
fn yaml_rules_are_added_replaced_refused_and_removed_while_streaming() {
    let (mongo, db_name, rt, db) = database();
    let events = db.collection::<Document>("process");
    let alerts = db.collection::<Document>("alert");
    let rules = tempfile::tempdir().unwrap();
    let install = |name: &str, text: &str| {
        let staged = rules.path().join(format!(".{name}.partial"));
        std::fs::write(&staged, text).unwrap();
        std::fs::rename(&staged, rules.path().join(name)).unwrap();
    };
    let shadow_yaml = std::fs::read_to_string(yaml_rules_dir().join("shadow.yaml")).unwrap();
    install("shadow.yaml", &shadow_yaml);
    let watch = Watch::spawn(&mongo, &db_name, rules.path());
    watch.wait_for_log("watching ", Duration::from_secs(120));
    assert!(watch.log().contains("loaded shadow.yaml (uuid 5e3566a3"), "{}", watch.log());
    let exec = |n: i32, command_line: &str| doc! { "seq": n, "command_line": command_line };

    rt.block_on(async {
        events.insert_one(exec(1, "/usr/bin/cat /etc/shadow")).await.unwrap();
        wait_for_count(&alerts, 1, &watch).await;
    });

    install("tmp_output_redir.yaml", &std::fs::read_to_string(yaml_rules_dir().join("tmp_output_redir.yaml")).unwrap());
    watch.wait_for_log("loaded tmp_output_redir.yaml (uuid f825ad39", Duration::from_secs(60));
    rt.block_on(async {
        events.insert_one(exec(2, "/bin/sh -c id > /tmp/o")).await.unwrap();
        wait_for_count(&alerts, 2, &watch).await;
    });

    install("shadow.yaml", "name: Suspicious /etc/shadow Usage\nuuid: 5e3566a3-9f19-4ac7-8710-ec5fb09260ed\ndetection_logic:\n  command_line: /etc/shadow\n");
    watch.wait_for_log("keeping the previous version of shadow.yaml", Duration::from_secs(60));
    assert!(watch.log().contains("shadow.yaml:4: detection_logic.command_line"), "{}", watch.log());
    rt.block_on(async {
        events.insert_one(exec(3, "/usr/bin/cat /etc/shadow")).await.unwrap();
        wait_for_count(&alerts, 3, &watch).await;
    });

    install(
        "shadow.yaml",
        &shadow_yaml.replace("- /etc/shadow", "- /etc/gshadow").replace("version: 1.0.0", "version: 2.0.0"),
    );
    watch.wait_for_log("reloaded shadow.yaml", Duration::from_secs(60));
    rt.block_on(async {
        events.insert_many([exec(4, "/usr/bin/cat /etc/shadow"), exec(5, "/usr/bin/cat /etc/gshadow")]).await.unwrap();
        wait_for_count(&alerts, 4, &watch).await;
    });

    std::fs::remove_file(rules.path().join("tmp_output_redir.yaml")).unwrap();
    watch.wait_for_log("removed tmp_output_redir.yaml", Duration::from_secs(60));
    rt.block_on(async {
        events.insert_many([exec(6, "/bin/sh -c id > /tmp/o"), exec(7, "/usr/bin/cat /etc/gshadow")]).await.unwrap();
        wait_for_count(&alerts, 5, &watch).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let mut found = Vec::new();
        let mut cursor = alerts.find(doc! {}).await.unwrap();
        while cursor.advance().await.unwrap() {
            let alert = cursor.deserialize_current().unwrap();
            let seq = alert.get_document("offending_log").unwrap().get_i32("seq").unwrap();
            found.push((
                seq,
                alert.get_str("uuid").unwrap().to_owned(),
                alert.get_str("rule_version").unwrap().to_owned(),
            ));
        }
        found.sort();
        let expected = [
            (1, SHADOW_UUID, "1.0.0"),
            (2, REDIR_UUID, "1.0.0"),
            (3, SHADOW_UUID, "1.0.0"),
            (5, SHADOW_UUID, "2.0.0"),
            (7, SHADOW_UUID, "2.0.0"),
        ]
        .map(|(n, u, v)| (n, u.to_owned(), v.to_owned()));
        assert_eq!(found, expected, "each version alerts exactly between its swaps:\n{}", watch.log());
        if !mongo.is_external() {
            db.drop().await.unwrap();
        }
    });
    let (status, log) = watch.stop();
    assert_eq!(status, Some(0), "{log}");
}

/// The example correlations under `dac watch` over the sample log inserted
/// into the collection: the same correlation alerts as `dac run` over the
/// file — compared by `_id`, which is derived from the rule, the group and
/// the window — each written once, its evidence naming events of the
/// collection.
#[test]
fn correlations_under_dac_watch_alert_exactly_like_dac_run() {
    let correlations = dac_tests::correlation::rules_dir();
    let mut expected: Vec<String> = dac_tests::correlation::replay(&correlations, &dac_tests::sample_log())
        .iter()
        .map(|alert| alert["correlation"]["id"].as_str().expect("only correlations alert").to_owned())
        .collect();
    expected.sort();
    assert!(expected.len() > 50, "{expected:?}");

    let (mongo, db_name, rt, db) = database();
    let events = db.collection::<Document>("process");
    let alerts = db.collection::<Document>("alert");
    let watch = Watch::spawn(&mongo, &db_name, &correlations);
    watch.wait_for_log("watching ", Duration::from_secs(120));
    let sample: Vec<Document> = std::fs::read_to_string(dac_tests::sample_log())
        .unwrap()
        .lines()
        .map(|line| mongodb::bson::to_document(&serde_json::from_str::<serde_json::Value>(line).unwrap()).unwrap())
        .collect();
    rt.block_on(async {
        for chunk in sample.chunks(100) {
            events.insert_many(chunk.to_vec()).await.unwrap();
        }
        wait_for_count(&alerts, expected.len() as u64, &watch).await;
        let mut found = Vec::new();
        let mut cursor = alerts.find(doc! {}).await.unwrap();
        while cursor.advance().await.unwrap() {
            let alert = cursor.deserialize_current().unwrap();
            let correlation = alert.get_document("correlation").unwrap();
            assert_eq!(alert.get_str("_id").unwrap(), correlation.get_str("id").unwrap());
            for evidence in correlation.get_array("events").unwrap() {
                let id = evidence.as_document().unwrap().get_str("id").unwrap();
                let oid = mongodb::bson::oid::ObjectId::parse_str(id).unwrap();
                assert!(events.find_one(doc! { "_id": oid }).await.unwrap().is_some(), "{alert}");
            }
            found.push(alert.get_str("_id").unwrap().to_owned());
        }
        found.sort();
        assert_eq!(found, expected, "watch log:\n{}", watch.log());
    });
    // `dac investigate` on a burst lists every event of its window.
    let burst = rt
        .block_on(async { alerts.find_one(doc! { "uuid": "0f7c2a43-1d55-4b8e-9a61-3c0d8e2b7a10" }).await })
        .unwrap()
        .expect("a burst alert");
    let investigated = Command::new(dac())
        .args(["investigate", burst.get_str("_id").unwrap(), "--mongodb-uri", mongo.uri(), "--db", &db_name])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&investigated.stdout);
    assert!(investigated.status.success(), "{text}{}", String::from_utf8_lossy(&investigated.stderr));
    let listed = burst.get_document("correlation").unwrap().get_array("events").unwrap();
    assert!(text.contains(&format!("correlation: the {} events of its window", listed.len())), "{text}");
    for evidence in listed {
        let oid = mongodb::bson::oid::ObjectId::parse_str(evidence.as_document().unwrap().get_str("id").unwrap());
        let event = rt.block_on(async { events.find_one(doc! { "_id": oid.unwrap() }).await }).unwrap().unwrap();
        let line = event.get_str("command_line").unwrap();
        assert!(
            text.lines().any(|l| l.starts_with('+') && l.contains(line) && l.ends_with("[discovery_command]")),
            "{line}:\n{text}"
        );
    }
    if !mongo.is_external() {
        rt.block_on(async { db.drop().await }).unwrap();
    }
    let (status, log) = watch.stop();
    assert_eq!(status, Some(0), "{log}");
}

/// Issue 15's promise, tested: while 20,000 events are inserted (30
/// hosts; discovery commands, downloads, scripts from /tmp, package tools,
/// benign commands; some up to 30 s out of order, some later than the
/// allowed lateness), `dac watch` running every example correlation (every
/// type) and the Rust sequence rule (download, `chmod +x`, exec; its state
/// kept by the host) is killed with SIGKILL at random moments and
/// restarted, at least ten times. Afterwards the alerts are exactly those
/// of one uninterrupted `dac run` over the same events: the same ids,
/// windows, aggregates and evidence, none missing, none extra. Each
/// restart resumes at the state stored with its checkpoint; without it a
/// restart starts its windows and keys empty and loses (or invents)
/// alerts.
#[test]
fn correlation_alerts_survive_sigkill_exactly_once() {
    use dac_tests::correlation;
    use rand::{Rng, SeedableRng};
    const BATCH: usize = 100;
    let events = correlation::events(20_000, 0x15, None);
    let dir = tempfile::tempdir().unwrap();
    let rules = correlation::rules_with_sequence(dir.path());
    let (expected, sequences) = correlation::rows(&correlation::expected_alerts(&rules, &events, dir.path()));
    assert!(expected.len() > 1_000, "{} correlation alerts", expected.len());
    assert!(sequences.len() > 100, "{} sequence alerts", sequences.len());

    let (mongo, db_name, rt, db) = database();
    let collection = db.collection::<Document>("process");
    let alerts = db.collection::<Document>("alert");
    let args = ["--state-interval", "1"];
    let mut watch = Watch::spawn_with(&mongo, &db_name, &rules, &args);
    watch.wait_for_log("watching ", Duration::from_secs(120));
    let documents: Vec<Document> = events.iter().map(|e| mongodb::bson::to_document(e).unwrap()).collect();
    let writer = {
        let collection = collection.clone();
        rt.spawn(async move {
            for chunk in documents.chunks(BATCH) {
                collection.insert_many(chunk.to_vec()).await.unwrap();
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        })
    };
    let mut rng = rand::rngs::SmallRng::seed_from_u64(0x15);
    let (mut kills, mut restored) = (0, 0);
    while !writer.is_finished() || kills < 10 {
        std::thread::sleep(Duration::from_millis(rng.random_range(200..1_200)));
        watch.child.kill().unwrap();
        watch.child.wait().unwrap();
        kills += 1;
        watch = Watch::spawn_with(&mongo, &db_name, &rules, &args);
        watch.wait_for_log("watching ", Duration::from_secs(120));
        restored += watch.log().contains("restored the windows of") as usize;
    }
    rt.block_on(writer).unwrap();
    rt.block_on(wait_for_count(&alerts, (expected.len() + sequences.len()) as u64, &watch));
    std::thread::sleep(Duration::from_millis(1_500));
    let (status, log) = watch.stop();
    assert_eq!(status, Some(0), "{log}");
    assert!(kills >= 10, "only {kills} kills");
    assert!(restored >= 5, "only {restored} of {kills} restarts restored stored windows");
    // The stats line says what the windows hold.
    let held =
        log.lines().filter_map(|line| line.split_once("state_groups=")?.1.split(' ').next()?.parse::<u64>().ok());
    assert!(held.max().is_some_and(|groups| groups > 0), "no stats line with state_groups:\n{log}");

    rt.block_on(async {
        let mut found = Vec::new();
        let mut cursor = alerts.find(doc! {}).await.unwrap();
        while cursor.advance().await.unwrap() {
            let alert: serde_json::Value =
                mongodb::bson::Bson::Document(cursor.deserialize_current().unwrap()).into_relaxed_extjson();
            if alert.get("correlation").is_some() {
                assert_eq!(alert["_id"], alert["correlation"]["id"]);
            }
            found.push(alert);
        }
        let (found, found_sequences) = correlation::rows(&found);
        if let Some(difference) = correlation::difference(&expected, &found) {
            panic!("after {kills} kills: {difference}");
        }
        // The sequence rule's: each alert once, none lost with a sequence
        // cut by a kill (its first steps before the checkpoint, its exec
        // after), none invented.
        if let Some(difference) = correlation::difference(&sequences, &found_sequences) {
            panic!("sequence alerts after {kills} kills: {difference}");
        }
        // The stored state is the one the checkpoint names: no chunk of an
        // older generation (or a killed write) is left behind.
        let config = db.collection::<Document>("config");
        let id = format!("checkpoint:{db_name}.process");
        let checkpoint = config.find_one(doc! { "_id": &id }).await.unwrap().unwrap();
        let state = checkpoint.get_document("state").expect("the checkpoint names a state");
        let named = state.get("chunks").and_then(|n| n.as_i64().or(n.as_i32().map(i64::from))).unwrap();
        let chunks = config.count_documents(doc! { "checkpoint": &id }).await.unwrap();
        assert_eq!(chunks, named as u64, "{checkpoint}");
        if !mongo.is_external() {
            db.drop().await.unwrap();
        }
    });
    eprintln!(
        "{kills} kills, {restored} restarts restored windows, {} correlation and {} sequence alerts",
        expected.len(),
        sequences.len()
    );
}
