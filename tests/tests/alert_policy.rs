//! Alert fatigue end to end: `--alert-policy` dedup and suppression in
//! `dac-run` (a replay, run twice) and `dac watch` (MongoDB, across
//! SIGKILL restarts and a full re-evaluation from an old checkpoint).
//! Runs against nx-27017, or against the deployment in
//! `DAC_TEST_MONGODB_URI`.

use dac_tests::mongo::TestMongo;
use dac_tests::{dac, dac_run, example_rule, repo_root};
use mongodb::bson::{doc, Bson, Document};
use mongodb::Client;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// 2023-11-14T22:10:00Z: the start of a 10-minute window.
const W1: i64 = 1_699_999_800_000;
const MINUTE: i64 = 60_000;

const POLICY: &str = r#"
[[dedup]]
rule = "5e3566a3-9f19-4ac7-8710-ec5fb09260ed"
key = ["hostname", "user"]
window = "10m"

[[suppress]]
rule = "Suspicious /etc/shadow Usage"
match = { hostname = "build-01" }
until = 2023-11-14T23:00:00Z
reason = "CI images check /etc/shadow until the base image is fixed"
"#;

/// 14 events: 12 `/etc/shadow` reads and two benign ones. Expected:
/// alice on web-01 folds 5 reads (window 1) and 2 (window 2), bob 1, three
/// build-01 reads are suppressed, the fourth is after the suppression's
/// expiry and alerts.
fn events() -> Vec<Document> {
    let rows: [(&str, &str, i64); 14] = [
        ("web-01", "alice", W1 + MINUTE),
        ("web-01", "alice", W1 + 2 * MINUTE),
        ("build-01", "ci", W1 + 2 * MINUTE),
        ("web-01", "bob", W1 + 3 * MINUTE),
        ("web-01", "alice", W1 + 4 * MINUTE),
        ("web-01", "alice", W1 + 9 * MINUTE),
        ("build-01", "ci", W1 + 9 * MINUTE),
        ("web-01", "alice", W1 + 10 * MINUTE - 1),
        ("web-01", "alice", W1 + 10 * MINUTE), // window 2
        ("build-01", "ci", W1 + 20 * MINUTE),
        ("web-01", "alice", W1 + 19 * MINUTE),
        ("build-01", "ci", W1 + 61 * MINUTE), // 23:11, after the suppression
        ("web-01", "alice", W1 + 5 * MINUTE),
        ("web-01", "alice", W1 + 6 * MINUTE),
    ];
    rows.iter()
        .enumerate()
        .map(|(i, &(host, user, ts))| {
            let benign = i >= 12;
            let command_line = if benign { "/usr/bin/ls /etc" } else { "/usr/bin/sudo cat /etc/shadow" };
            doc! {
                "_id": mongodb::bson::oid::ObjectId::parse_str(format!("6553f1000000000000{:06x}", i + 1)).unwrap(),
                "hostname": host, "pid": 5000 + i as i64, "parent_pid": 4000_i64, "user": user,
                "path": "/usr/bin/sudo", "command_line": command_line, "ts": ts,
            }
        })
        .collect()
}

fn policy_file(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("policy.toml");
    std::fs::write(&path, POLICY).unwrap();
    path
}

#[test]
fn dac_run_folds_repeats_and_suppresses_the_same_way_on_every_replay() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("events.ndjson");
    let lines: Vec<String> =
        events().into_iter().map(|event| Bson::Document(event).into_relaxed_extjson().to_string()).collect();
    std::fs::write(&log, lines.join("\n") + "\n").unwrap();
    let policy = policy_file(dir.path());
    let run = || {
        let output = Command::new(dac_run())
            .arg(example_rule("shadow"))
            .arg("--replay")
            .arg(&log)
            .arg("--alert-policy")
            .arg(&policy)
            .env("DAC_CACHE_DIR", repo_root().join("target/dac-test-cache"))
            .output()
            .unwrap();
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        (String::from_utf8(output.stdout).unwrap(), String::from_utf8(output.stderr).unwrap())
    };
    let (alerts, summary) = run();
    let alerts: Vec<serde_json::Value> = alerts.lines().map(|line| serde_json::from_str(line).unwrap()).collect();
    let described: Vec<String> = alerts
        .iter()
        .map(|alert| {
            let key = &alert["dedup"]["key"];
            format!("{} {} {}", key["hostname"], key["user"], alert["dedup"]["window_start"])
        })
        .collect();
    assert_eq!(
        described,
        [
            format!("\"web-01\" \"alice\" {W1}"),
            format!("\"web-01\" \"bob\" {W1}"),
            format!("\"web-01\" \"alice\" {}", W1 + 10 * MINUTE),
            format!("\"build-01\" \"ci\" {}", W1 + 60 * MINUTE),
        ],
        "one alert per (key, window), in the order of their first match"
    );
    assert_eq!(alerts[0]["event_id"], "6553f1000000000000000001", "the first match is the alert");
    assert!(summary.contains("dac-run: 14 events"), "{summary}");
    assert!(summary.contains("4 alerts"), "{summary}");
    assert!(summary.contains("alert policy: 3 matches suppressed, 5 repeats folded into dedup alerts"), "{summary}");
    assert!(
        summary.contains("      3 suppressed  CI images check /etc/shadow until the base image is fixed"),
        "{summary}"
    );
    assert!(summary.contains("(3 suppressed, 5 folded)"), "per rule: {summary}");

    let (again, _) = run();
    assert_eq!(
        again.lines().map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()).collect::<Vec<_>>(),
        alerts,
        "a replay decides the same"
    );
}

struct Watch {
    child: Child,
    log: std::path::PathBuf,
}

impl Watch {
    fn start(mongo: &TestMongo, db: &str, policy: &std::path::Path, dir: &std::path::Path, n: usize) -> Watch {
        let log = dir.join(format!("watch-{n}.log"));
        let child = Command::new(dac())
            .args(["watch", "--no-reload", "--stats-interval", "1", "--rules"])
            .arg(example_rule("shadow"))
            .args(["--mongodb-uri", mongo.uri(), "--db", db, "--alert-policy"])
            .arg(policy)
            .env("DAC_CACHE_DIR", repo_root().join("target/dac-test-cache"))
            .env("DAC_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let watch = Watch { child, log };
        watch.wait_for("watching ");
        watch
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn wait_for(&self, needle: &str) {
        let deadline = Instant::now() + Duration::from_secs(120);
        while !self.log().contains(needle) {
            assert!(Instant::now() < deadline, "no {needle:?} in the watch log:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    fn stop(mut self) -> String {
        Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().unwrap();
        self.child.wait().unwrap();
        self.log()
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// (hostname, user, window start, count, first_seen, last_seen) of every alert.
async fn folded(alerts: &mongodb::Collection<Document>) -> Vec<(String, String, i64, i32, i64, i64)> {
    let mut out = Vec::new();
    let mut cursor = alerts.find(doc! {}).await.unwrap();
    while cursor.advance().await.unwrap() {
        let alert = cursor.deserialize_current().unwrap();
        let dedup = alert.get_document("dedup").unwrap();
        let key = dedup.get_document("key").unwrap();
        let number = |value: Option<&Bson>| match value {
            Some(Bson::Int64(n)) => *n,
            Some(Bson::Int32(n)) => i64::from(*n),
            other => panic!("not a number: {other:?}"),
        };
        out.push((
            key.get_str("hostname").unwrap().to_owned(),
            key.get_str("user").unwrap().to_owned(),
            number(dedup.get("window_start")),
            number(alert.get("count")) as i32,
            number(alert.get("first_seen")),
            number(alert.get("last_seen")),
        ));
        assert!(alert.get_str("_id").unwrap().starts_with("dedup-"));
    }
    out.sort();
    out
}

#[test]
fn dac_watch_folds_into_one_document_per_window_exactly_across_sigkill_and_reevaluation() {
    let mongo = TestMongo::start();
    let db_name = TestMongo::unique_db_name();
    let dir = tempfile::tempdir().unwrap();
    let policy = policy_file(dir.path());
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let client = rt.block_on(async { Client::with_uri_str(mongo.uri()).await }).unwrap();
    let db = client.database(&db_name);
    let (process, alerts, config) =
        (db.collection::<Document>("process"), db.collection::<Document>("alert"), db.collection::<Document>("config"));
    let checkpoint_id = format!("checkpoint:{db_name}.process");

    let mut watch = Watch::start(&mongo, &db_name, &policy, dir.path(), 0);
    // Where this stream started: restoring it later makes a restarted
    // watch evaluate every event again, as after a crash before any commit.
    let start = rt.block_on(async { config.find_one(doc! { "_id": &checkpoint_id }).await }).unwrap().unwrap();

    // Three batches; the watch is SIGKILLed right after each insert (some
    // of its work flushed, some not, the checkpoint behind) and restarted.
    let all = events();
    for (n, batch) in all.chunks(5).enumerate() {
        rt.block_on(async { process.insert_many(batch.to_vec()).await }).unwrap();
        std::thread::sleep(Duration::from_millis(150 * n as u64));
        watch.kill();
        watch = Watch::start(&mongo, &db_name, &policy, dir.path(), n + 1);
    }
    let expected = vec![
        ("build-01".to_owned(), "ci".to_owned(), W1 + 60 * MINUTE, 1, W1 + 61 * MINUTE, W1 + 61 * MINUTE),
        ("web-01".into(), "alice".into(), W1, 5, W1 + MINUTE, W1 + 10 * MINUTE - 1),
        ("web-01".into(), "alice".into(), W1 + 10 * MINUTE, 2, W1 + 10 * MINUTE, W1 + 19 * MINUTE),
        ("web-01".into(), "bob".into(), W1, 1, W1 + 3 * MINUTE, W1 + 3 * MINUTE),
    ];
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let now = rt.block_on(folded(&alerts));
        if now == expected {
            break;
        }
        assert!(Instant::now() < deadline, "alerts {now:?}, expected {expected:?}\n{}", watch.log());
        std::thread::sleep(Duration::from_millis(200));
    }
    watch.wait_for("events=");
    let summary = watch.stop();
    assert!(summary.contains("dac watch:"), "{summary}");

    // Every event evaluated again from the stream's start: nothing changes.
    rt.block_on(async { config.replace_one(doc! { "_id": &checkpoint_id }, start).await }).unwrap();
    let watch = Watch::start(&mongo, &db_name, &policy, dir.path(), 9);
    watch.wait_for("events=14");
    let summary = watch.stop();
    assert_eq!(rt.block_on(folded(&alerts)), expected, "re-evaluation must not count twice:\n{summary}");
    assert!(summary.contains("alert policy: 3 matches suppressed"), "{summary}");
    assert!(summary.contains("alerts: 0 written, 9 already present, 0 repeats folded"), "{summary}");
    if !mongo.is_external() {
        rt.block_on(async { db.drop().await }).unwrap();
    }
}

/// The seed's shadow rule in YAML, declaring its own dedup.
const SHADOW_WITH_DEDUP: &str = "name: Suspicious /etc/shadow Usage
uuid: 5e3566a3-9f19-4ac7-8710-ec5fb09260ed
detection_logic:
  command_line:
    - /etc/shadow
dedup:
  key: [hostname, user]
  window: 10m
";

#[test]
fn a_rule_declares_its_own_dedup_as_yaml_and_built_into_a_component_and_a_policy_file_overrides_it() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("events.ndjson");
    let lines: Vec<String> =
        events().into_iter().map(|event| Bson::Document(event).into_relaxed_extjson().to_string()).collect();
    std::fs::write(&log, lines.join("\n") + "\n").unwrap();
    let rule = dir.path().join("shadow.yaml");
    std::fs::write(&rule, SHADOW_WITH_DEDUP).unwrap();
    let component = dir.path().join("shadow.wasm");
    let built = Command::new(dac()).arg("build").arg(&rule).arg("-o").arg(&component).output().unwrap();
    assert!(built.status.success(), "{}", String::from_utf8_lossy(&built.stderr));

    let run = |rule: &std::path::Path, policy: Option<&std::path::Path>| {
        let mut command = Command::new(dac_run());
        command.arg(rule).arg("--replay").arg(&log).env("DAC_CACHE_DIR", repo_root().join("target/dac-test-cache"));
        if let Some(policy) = policy {
            command.arg("--alert-policy").arg(policy);
        }
        let output = command.output().unwrap();
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        let alerts: Vec<String> = String::from_utf8(output.stdout)
            .unwrap()
            .lines()
            .map(|line| {
                let alert: serde_json::Value = serde_json::from_str(line).unwrap();
                let key = &alert["dedup"]["key"];
                let user = if key["user"].is_null() { String::new() } else { format!(" {}", key["user"]) };
                format!("{}{user} {}", key["hostname"], alert["dedup"]["window_start"])
            })
            .collect();
        (alerts, String::from_utf8(output.stderr).unwrap())
    };

    // 12 reads: per (host, user) and 10-minute window, the first alerts.
    let expected = [
        format!("\"web-01\" \"alice\" {W1}"),
        format!("\"build-01\" \"ci\" {W1}"),
        format!("\"web-01\" \"bob\" {W1}"),
        format!("\"web-01\" \"alice\" {}", W1 + 10 * MINUTE),
        format!("\"build-01\" \"ci\" {}", W1 + 20 * MINUTE),
        format!("\"build-01\" \"ci\" {}", W1 + 60 * MINUTE),
    ];
    for rule in [&rule, &component] {
        let (alerts, summary) = run(rule, None);
        assert_eq!(alerts, expected, "{}", rule.display());
        assert!(
            summary.contains("alert policy: 0 matches suppressed, 6 repeats folded into dedup alerts"),
            "{summary}"
        );
    }

    // The operator's policy file wins over the rule: per host and hour.
    let policy = dir.path().join("policy.toml");
    std::fs::write(
        &policy,
        "[[dedup]]\nrule = \"Suspicious /etc/shadow Usage\"\nkey = [\"hostname\"]\nwindow = \"1h\"\n",
    )
    .unwrap();
    let hour = W1 - 10 * MINUTE; // 22:00
    let (alerts, _) = run(&rule, Some(&policy));
    assert_eq!(
        alerts,
        [format!("\"web-01\" {hour}"), format!("\"build-01\" {hour}"), format!("\"build-01\" {}", hour + 60 * MINUTE)]
    );
}
