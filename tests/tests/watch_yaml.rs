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

/// Inserts `events` into `collection` on `rt`, 100 at a time, 25 ms apart.
fn write_in_batches(
    rt: &tokio::runtime::Runtime,
    collection: &Collection<Document>,
    events: &[serde_json::Value],
) -> tokio::task::JoinHandle<()> {
    let documents: Vec<Document> = events.iter().map(|e| mongodb::bson::to_document(e).unwrap()).collect();
    let collection = collection.clone();
    rt.spawn(async move {
        for chunk in documents.chunks(100) {
            collection.insert_many(chunk.to_vec()).await.unwrap();
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    })
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
    let writer = write_in_batches(&rt, &collection, &events);
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

/// Issue 18's done-when, with state: three partitions of one collection
/// (`--partition K/3`) while 20,000 events are inserted, one worker
/// SIGKILLed twice, then resized to two midway: the three stop (one
/// killed), 2,000 events go by unread, the two start and take each bucket
/// over from the old checkpoints. The alerts are exactly those of one
/// uninterrupted `dac run`: every correlation (windows handed over with
/// their buckets, events already counted skipped), every sequence (keys
/// too), and the shadow rule's once per malicious event, including the
/// events of a writer that stores no bucket (partition 0's). Each new
/// partition's log says which checkpoint it took what from, and each
/// partition's checkpoint is past its last event.
#[test]
fn three_partitions_resized_to_two_with_kills_alert_exactly_like_one_run() {
    use dac_event::partition::bucket_of;
    use dac_tests::correlation;
    let mut events = correlation::events(20_000, 0x18, None);
    for (n, event) in events.iter_mut().enumerate() {
        // No event more than the lateness (60 s) behind the stream: a
        // correlation's windows expire by the newest time its worker saw,
        // so such an event can meet a window one worker of the whole
        // stream had dropped already (docs/scale.md#correlations).
        let on_time = 1_767_225_600_000i64 + n as i64 * 150;
        if event["ts"].as_i64().unwrap() < on_time - 60_000 {
            event["ts"] = on_time.into();
        }
        if n % 400 == 200 {
            event["hostname"] = "legacy-host".into();
            event["path"] = "/usr/bin/cat".into();
            event["command_line"] = format!("/usr/bin/cat /etc/shadow #{n}").into();
        } else {
            let bucket = bucket_of(event["hostname"].as_str());
            event["dac_bucket"] = bucket.into();
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let rules = correlation::rules_with_sequence(dir.path());
    std::fs::copy(dac_tests::example_rule("shadow"), rules.join("shadow.wasm")).unwrap();
    let (expected, others) = correlation::rows(&correlation::expected_alerts(&rules, &events, dir.path()));
    let shadows = others.iter().filter(|(uuid, _)| uuid == SHADOW_UUID).count();
    assert_eq!(shadows, 50, "one shadow alert per malicious event");
    assert!(expected.len() > 1_000 && others.len() > 150, "{} and {}", expected.len(), others.len());

    let (mongo, db_name, rt, db) = database();
    let collection = db.collection::<Document>("process");
    let alerts = db.collection::<Document>("alert");
    // 0/2 also serves its probes and metrics.
    let listen = {
        let socket = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        socket.local_addr().unwrap().to_string()
    };
    let worker = |partition: &str| {
        let mut args = vec!["--state-interval", "1", "--partition", partition];
        if partition == "0/2" {
            args.extend(["--listen", &listen]);
        }
        let watch = Watch::spawn_with(&mongo, &db_name, &rules, &args);
        watch.wait_for_log("watching ", Duration::from_secs(120));
        watch
    };
    let mut three: Vec<Watch> = ["0/3", "1/3", "2/3"].into_iter().map(worker).collect();
    let writer = write_in_batches(&rt, &collection, &events);
    let inserted = |at_least: u64| {
        let deadline = Instant::now() + Duration::from_secs(120);
        while rt.block_on(async { collection.count_documents(doc! {}).await }).unwrap() < at_least {
            assert!(Instant::now() < deadline, "the writer is stuck below {at_least} events");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    for at in [3_000, 6_000] {
        inserted(at);
        three[1].child.kill().unwrap();
        three[1].child.wait().unwrap();
        three[1] = worker("1/3");
    }
    inserted(10_000);
    let mut three = three.into_iter();
    let mut killed = three.next_back().unwrap();
    killed.child.kill().unwrap();
    killed.child.wait().unwrap();
    for old in three {
        let (status, log) = old.stop();
        assert_eq!(status, Some(0), "{log}");
    }
    inserted(12_000);
    let two: Vec<Watch> = ["0/2", "1/2"].into_iter().map(worker).collect();
    rt.block_on(writer).unwrap();
    let total = (expected.len() + others.len()) as u64;
    rt.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(120);
        while alerts.count_documents(doc! {}).await.unwrap() < total {
            let logs: Vec<String> = two.iter().map(Watch::log).collect();
            assert!(Instant::now() < deadline, "alerts missing after 120 s; logs:\n{}", logs.join("\n"));
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    std::thread::sleep(Duration::from_millis(1_500));
    let get = |path: &str| dac_tests::serve::send(&listen, "GET", path, None, b"");
    assert_eq!((get("/healthz").status, get("/readyz").status), (200, 200));
    let metrics = get("/metrics").text();
    let events = metrics
        .lines()
        .find_map(|line| line.strip_prefix("dac_watch_events_total{partition=\"0/2\"} "))
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("no events counter:\n{metrics}"));
    assert!(events > 5_000, "0/2 evaluated {events} events:\n{metrics}");
    assert!(metrics.contains("dac_watch_lag_seconds{partition=\"0/2\"} "), "{metrics}");
    let mut handed_over = 0;
    for (partition, watch) in ["0/2", "1/2"].into_iter().zip(two) {
        let (status, log) = watch.stop();
        assert_eq!(status, Some(0), "{log}");
        // Each names the old checkpoints it took its buckets (and their
        // windows and keys) from: 0/2 the even buckets of all three, 1/2
        // the odd ones.
        for old in ["0/3", "1/3", "2/3"] {
            let from = format!("taking buckets over from checkpoint:{db_name}.process:{old}");
            assert!(log.contains(&from), "partition {partition} did not take buckets from {old}:\n{log}");
        }
        assert!(log.contains("restored the windows of"), "{partition} restored no state:\n{log}");
        assert_eq!(log.contains("stray=true"), partition == "0/2", "only 0/2 takes bucket-less events:\n{log}");
        let skipped = format!("partition {partition}: ");
        handed_over += log
            .split_once(&skipped)
            .and_then(|(_, rest)| rest.split(' ').next()?.parse::<u64>().ok())
            .unwrap_or_else(|| panic!("no partition summary:\n{log}"));
    }
    assert!(handed_over > 0, "no event was skipped as evaluated by its bucket's previous owner");

    rt.block_on(async {
        let mut found = Vec::new();
        let mut cursor = alerts.find(doc! {}).await.unwrap();
        while cursor.advance().await.unwrap() {
            found.push(mongodb::bson::Bson::Document(cursor.deserialize_current().unwrap()).into_relaxed_extjson());
        }
        let (found, found_others) = correlation::rows(&found);
        if let Some(difference) = correlation::difference(&expected, &found) {
            panic!("correlations after the resize: {difference}");
        }
        if let Some(difference) = correlation::difference(&others, &found_others) {
            panic!("sequence and shadow alerts after the resize: {difference}");
        }
        // Each partition's checkpoint is past its last event: its stream,
        // resumed there, sees a sentinel of that partition first.
        for index in [0, 1] {
            let hostname = (0..).map(|n| format!("sentinel-{n}")).find(|h| bucket_of(Some(h)) % 2 == index).unwrap();
            let checkpoint = db
                .collection::<Document>("config")
                .find_one(doc! { "_id": format!("checkpoint:{db_name}.process:{index}/2") })
                .await
                .unwrap()
                .expect("the partition's checkpoint");
            assert_eq!(checkpoint.get_document("partition").unwrap().get_i32("count").unwrap(), 2);
            let token: mongodb::change_stream::event::ResumeToken =
                mongodb::bson::from_bson(checkpoint.get("resume_token").unwrap().clone()).unwrap();
            let mine: Vec<i32> = (0..1024).filter(|b| b % 2 == i32::from(index)).collect();
            let mut stream = collection
                .watch()
                .pipeline([
                    doc! { "$match": { "operationType": { "$in": ["insert"] } } },
                    doc! { "$match": { "fullDocument.dac_bucket": { "$in": mine } } },
                ])
                .resume_after(token)
                .await
                .unwrap();
            let bucket = i32::from(bucket_of(Some(&hostname)));
            collection.insert_one(doc! { "hostname": &hostname, "dac_bucket": bucket }).await.unwrap();
            let first = tokio::time::timeout(Duration::from_secs(30), async {
                loop {
                    if let Some(change) = stream.next_if_any().await.unwrap() {
                        return change;
                    }
                }
            })
            .await
            .expect("the sentinel arrives");
            assert_eq!(first.full_document.unwrap().get_str("hostname").unwrap(), hostname, "{index}/2 left events");
        }
        if !mongo.is_external() {
            db.drop().await.unwrap();
        }
    });
    eprintln!("{} correlation and {} other alerts; {handed_over} events handed over", expected.len(), others.len());
}

/// A correlation whose groups span partitions (no `hostname` in its
/// group-by) cannot run on one partition: `dac watch --partition` refuses
/// it at start, naming its file and the fix, before connecting. The same
/// rules run on the whole stream, and with the key they group by.
#[test]
fn a_correlation_not_grouped_by_the_partition_key_is_refused_with_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let burst = std::fs::read_to_string(dac_tests::correlation::rules_dir().join("discovery-burst.yml")).unwrap();
    let by_user = burst.replace("  group-by:\n    - hostname\n", "  group-by:\n    - user\n");
    assert_ne!(burst, by_user);
    std::fs::write(dir.path().join("by-user.yml"), by_user).unwrap();
    let watch = |extra: &[&str]| {
        Command::new(dac())
            .args(["watch", "--rules"])
            .arg(dir.path())
            // Nothing listens there: a refusal comes before connecting.
            .args(["--mongodb-uri", "mongodb://127.0.0.1:9/?serverSelectionTimeoutMS=200", "--no-reload"])
            .args(extra)
            .env("DAC_CACHE_DIR", dac_tests::repo_root().join("target/dac-test-cache"))
            .output()
            .unwrap()
    };
    let refused = watch(&["--partition", "1/3"]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "{stderr}");
    assert!(
        stderr.contains("cannot run on one partition of the stream (--partition 1/3)")
            && stderr.contains("by-user.yml (Burst of discovery commands on one host)")
            && stderr.contains("add `hostname` to its group-by"),
        "{stderr}"
    );
    // By `user`, the partitions split by user: accepted (it fails later,
    // connecting to nothing).
    let by_key = watch(&["--partition", "1/3", "--partition-key", "user"]);
    let stderr = String::from_utf8_lossy(&by_key.stderr);
    assert!(stderr.contains("reading the stored checkpoint checkpoint:monitoring.process:1/3"), "{stderr}");
    let whole = watch(&[]);
    let stderr = String::from_utf8_lossy(&whole.stderr);
    assert!(stderr.contains("reading the stored checkpoint checkpoint:monitoring.process from"), "{stderr}");
    // A correlation of correlations reads the host from its child's
    // groups: fine when the child groups by it, refused (both) when not.
    let nested = |child_group: &str| {
        let child = burst
            .replacen(
                "id: 0f7c2a43-1d55-4b8e-9a61-3c0d8e2b7a10\n",
                "id: 0f7c2a43-1d55-4b8e-9a61-3c0d8e2b7a10\nname: discovery_burst\n",
                1,
            )
            .replace("  group-by:\n    - hostname\n", &format!("  group-by:\n    - {child_group}\n"));
        format!(
            "title: Discovery bursts, twice\nid: 3b0c6f0e-8a9e-4f51-9a34-7d6f9b0a1c21\ncorrelation:\n  type: event_count\n  rules:\n    - discovery_burst\n  group-by:\n    - hostname\n  timespan: 10m\n  condition:\n    gte: 2\nlevel: high\n---\n{child}"
        )
    };
    std::fs::remove_file(dir.path().join("by-user.yml")).unwrap();
    std::fs::write(dir.path().join("nested.yml"), nested("hostname")).unwrap();
    let accepted = watch(&["--partition", "0/2"]);
    let stderr = String::from_utf8_lossy(&accepted.stderr);
    // Past the rules, to the server (which is not there).
    assert!(stderr.contains("reading the stored checkpoint checkpoint:monitoring.process:0/2"), "{stderr}");
    std::fs::write(dir.path().join("nested.yml"), nested("user")).unwrap();
    let refused = watch(&["--partition", "0/2"]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("(Discovery bursts, twice): a correlation")
            && stderr.contains("(Burst of discovery commands on one host): a correlation"),
        "{stderr}"
    );
    let bad = watch(&["--partition", "3/3"]);
    assert!(String::from_utf8_lossy(&bad.stderr).contains("K counts from 0 and must be below N"));
}
