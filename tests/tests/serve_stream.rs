//! `dac serve` reading MongoDB: one change stream per watched collection,
//! fanned out to the tenants whose scope takes each event, alerts to each
//! tenant's own collection, and restarts (SIGTERM, SIGKILL) that lose and
//! duplicate nothing, and the metrics of all that. The real `dac` binary against nx-27017 (or the
//! deployment in `DAC_TEST_MONGODB_URI`).

use dac_tests::hostile_rule;
use dac_tests::mongo::TestMongo;
use dac_tests::serve::ServeProcess;
use mongodb::bson::{doc, Document};
use mongodb::{Client, Collection, Database};
use serde_json::Value;
use std::future::IntoFuture;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

const SHADOW_YAML: &str = "name: Suspicious /etc/shadow Usage\n\
uuid: 5e3566a3-9f19-4ac7-8710-ec5fb09260ed\n\
detection_logic:\n  command_line:\n    - /etc/shadow\n\
version: 1.0.0\nseverity: high\n";

/// Three tenants: acme and globex share `events`, told apart by
/// `ingest.tenant`; initech has `events_initech` to itself.
struct Setup {
    dir: tempfile::TempDir,
    config: PathBuf,
    state: PathBuf,
    admin: String,
    acme: String,
    globex: String,
}

impl Setup {
    fn new() -> Setup {
        Setup::with_header("")
    }

    /// `header`: top-level keys of the tenants file.
    fn with_header(header: &str) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let [admin, acme, globex, initech] = [(); 4].map(|()| dac_serve::generate_token().unwrap());
        let config = dir.path().join("tenants.toml");
        std::fs::write(
            &config,
            format!(
                "{header}admin_token_sha256 = '{}'\n\
                 [[tenant]]\nid = 'acme'\ntoken_sha256 = '{}'\nalert_collection = 'alerts_acme'\n\
                 scope = {{ field = 'ingest.tenant', equals = 'acme', collection = 'events' }}\n\
                 [[tenant]]\nid = 'globex'\ntoken_sha256 = '{}'\nalert_collection = 'alerts_globex'\n\
                 scope = {{ field = 'ingest.tenant', equals = 'globex', collection = 'events' }}\n\
                 [[tenant]]\nid = 'initech'\ntoken_sha256 = '{}'\nalert_collection = 'alerts_initech'\n\
                 scope = {{ collection = 'events_initech' }}\n",
                admin.sha256_hex, acme.sha256_hex, globex.sha256_hex, initech.sha256_hex
            ),
        )
        .unwrap();
        let state = dir.path().join("state");
        // The same rule for every tenant: each must still get only the
        // alerts of its own events.
        for tenant in ["acme", "globex", "initech"] {
            let rules = state.join("tenants").join(tenant).join("rules");
            std::fs::create_dir_all(&rules).unwrap();
            std::fs::write(rules.join("shadow"), SHADOW_YAML).unwrap();
        }
        Setup { dir, config, state, admin: admin.token, acme: acme.token, globex: globex.token }
    }
}

/// Starts the real `dac serve` on `setup`; `run` numbers the log file, so
/// earlier runs' logs stay readable.
fn start(setup: &Setup, mongo: &TestMongo, db: &str, run: u32) -> ServeProcess {
    let log = setup.dir.path().join(format!("serve-{run}.log"));
    ServeProcess::start(&setup.config, &setup.state, log, mongo.uri(), db)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

/// The `seq` of every alert in `collection`, sorted, repeats kept.
async fn seqs(collection: &Collection<Document>) -> Vec<i32> {
    let mut seqs = Vec::new();
    let mut cursor = collection.find(doc! {}).await.unwrap();
    while cursor.advance().await.unwrap() {
        seqs.push(cursor.deserialize_current().unwrap().get_document("offending_log").unwrap().get_i32("seq").unwrap());
    }
    seqs.sort();
    seqs
}

/// Waits until each tenant's alert collection holds `expected` (by seq),
/// then a little longer, so an alert that should not be there has had
/// time to arrive.
async fn expect_alerts(db: &Database, expected: &[(&str, Vec<i32>)], logs: impl Fn() -> String) {
    let deadline = Instant::now() + Duration::from_secs(60);
    for (collection, want) in expected {
        let collection = db.collection::<Document>(collection);
        loop {
            let found = seqs(&collection).await;
            if found.len() >= want.len() {
                break;
            }
            assert!(Instant::now() < deadline, "{}: {found:?}, expected {want:?}; log:\n{}", collection.name(), logs());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for (collection, want) in expected {
        let found = seqs(&db.collection::<Document>(collection)).await;
        assert_eq!(&found, want, "alerts in {collection}; log:\n{}", logs());
    }
}

fn event(seq: i32, tenant: Option<&str>, malicious: bool) -> Document {
    let command_line = if malicious { "/usr/bin/sudo cat /etc/shadow" } else { "/usr/bin/ls -l /tmp" };
    let mut event = doc! { "seq": seq, "hostname": "web-01", "command_line": command_line, "ts": 1_695_342_026_084_i64 + i64::from(seq) };
    if let Some(tenant) = tenant {
        event.insert("ingest", doc! { "tenant": tenant });
    }
    event
}

/// Lines of `log` that contain `needle`.
fn count(log: &str, needle: &str) -> usize {
    log.lines().filter(|line| line.contains(needle)).count()
}

#[test]
fn each_tenant_gets_exactly_its_alerts_from_one_stream_per_collection() {
    let mongo = TestMongo::start();
    let db_name = TestMongo::unique_db_name();
    let setup = Setup::new();
    let serve = start(&setup, &mongo, &db_name, 1);
    let rt = runtime();
    rt.block_on(async {
        let client = Client::with_uri_str(mongo.uri()).await.unwrap();
        let db = client.database(&db_name);
        let shared = db.collection::<Document>("events");
        let own = db.collection::<Document>("events_initech");
        // acme's event names globex in a field that is not the scope field:
        // it is acme's, and only acme's.
        let mut impostor = event(1, Some("acme"), true);
        impostor.insert("tenant", "globex");
        impostor.insert("ingest_tenant", "globex");
        shared
            .insert_many([
                impostor,
                event(2, Some("globex"), true),
                event(3, None, true),            // no tenant: nobody's
                event(4, Some("initech"), true), // initech reads its own collection only
                event(5, Some("ACME"), true),    // values are compared exactly
                event(6, Some("acme"), false),   // benign
                event(7, Some("globex"), true),
            ])
            .await
            .unwrap();
        let mut array = event(8, None, true);
        array.insert("ingest", doc! { "tenant": ["acme", "globex"] }); // not the ingest path's tag
        shared.insert_one(array).await.unwrap();
        // initech's own collection: all of it is initech's, whatever it says.
        own.insert_many([event(10, Some("acme"), true), event(11, None, true), event(12, None, false)]).await.unwrap();

        expect_alerts(
            &db,
            &[("alerts_acme", vec![1]), ("alerts_globex", vec![2, 7]), ("alerts_initech", vec![10, 11])],
            || serve.log(),
        )
        .await;

        // The API shows a tenant its own alerts only, newest first, limited.
        let (status, body) = serve.get("/v1/tenants/globex/alerts", &setup.globex);
        assert_eq!(status, 200, "{body}");
        let alerts = body["alerts"].as_array().unwrap();
        let mut got: Vec<i64> = alerts.iter().map(|alert| alert["offending_log"]["seq"].as_i64().unwrap()).collect();
        got.sort();
        assert_eq!(got, [2, 7]);
        assert_eq!(alerts[0]["rule_name"], "Suspicious /etc/shadow Usage");
        let (status, body) = serve.get("/v1/tenants/globex/alerts?limit=1", &setup.globex);
        assert_eq!((status, body["alerts"].as_array().unwrap().len()), (200, 1), "{body}");
        let (status, body) = serve.get("/v1/tenants/globex/alerts?limit=0", &setup.globex);
        assert_eq!(status, 400, "{body}");
        // Another tenant's alerts look like a tenant that does not exist.
        let (status, body) = serve.get("/v1/tenants/globex/alerts", &setup.acme);
        assert_eq!((status, body), (404, serde_json::json!({ "error": "not found" })));
        let (_, body) = serve.get("/v1/tenants/acme/alerts", &setup.acme);
        assert_eq!(body["alerts"].as_array().unwrap().len(), 1);

        // One change stream per collection, however many tenants read it:
        // every stream opened logs where it starts, with its checkpoint.
        let log = serve.log();
        let opened = |collection: &str| {
            let field = format!("checkpoint={}", checkpoint_id(&db_name, collection));
            log.lines().filter(|line| line.trim_end().ends_with(&field)).count()
        };
        assert_eq!((opened("events"), opened("events_initech")), (1, 1), "{log}");
        assert_eq!(count(&log, "starting from now") + count(&log, "resuming after"), 2, "{log}");
        assert_eq!(count(&log, &format!("change stream {db_name}.events: tenants acme, globex")), 1, "{log}");
        // And one checkpoint per collection, stored.
        let checkpoints = db.collection::<Document>("serve_config");
        let mut ids: Vec<String> = Vec::new();
        let mut cursor = checkpoints.find(doc! {}).await.unwrap();
        while cursor.advance().await.unwrap() {
            ids.push(cursor.deserialize_current().unwrap().get_str("_id").unwrap().to_owned());
        }
        ids.sort();
        assert_eq!(ids, [checkpoint_id(&db_name, "events"), checkpoint_id(&db_name, "events_initech")]);
        if !mongo.is_external() {
            db.drop().await.unwrap();
        }
    });
    serve.stop();
}

fn checkpoint_id(db: &str, collection: &str) -> String {
    format!("checkpoint:{db}.{collection}")
}

/// Events go in while `dac serve` is stopped (SIGTERM) and while it is
/// killed (SIGKILL) mid-stream: every tenant ends with exactly one alert
/// per malicious event of its own.
#[test]
fn restarts_by_sigterm_and_sigkill_lose_and_duplicate_no_tenant_alert() {
    let mongo = TestMongo::start();
    let db_name = TestMongo::unique_db_name();
    let setup = Setup::new();
    let rt = runtime();
    let client = rt.block_on(Client::with_uri_str(mongo.uri())).unwrap();
    let db = client.database(&db_name);
    let shared = db.collection::<Document>("events");
    let own = db.collection::<Document>("events_initech");
    let mut expected: [(&str, Vec<i32>); 3] =
        [("alerts_acme", vec![]), ("alerts_globex", vec![]), ("alerts_initech", vec![])];
    // Seq `from..to`, spread over the three tenants, every other one malicious.
    let mut insert = |from: i32, to: i32| {
        let mut on_shared = Vec::new();
        let mut on_own = Vec::new();
        for seq in from..to {
            let malicious = seq % 2 == 0;
            let slot = (seq % 3) as usize;
            if malicious {
                expected[slot].1.push(seq);
            }
            match slot {
                0 => on_shared.push(event(seq, Some("acme"), malicious)),
                1 => on_shared.push(event(seq, Some("globex"), malicious)),
                _ => on_own.push(event(seq, None, malicious)),
            }
        }
        rt.block_on(async {
            shared.insert_many(on_shared).await.unwrap();
            own.insert_many(on_own).await.unwrap();
        });
    };

    let serve = start(&setup, &mongo, &db_name, 1);
    insert(0, 300);
    std::thread::sleep(Duration::from_millis(300));
    let first = serve.stop();
    assert!(first.contains("change stream") && first.contains("stopped"), "{first}");
    insert(300, 600); // while stopped
    let serve = start(&setup, &mongo, &db_name, 2);
    assert!(serve.log().contains("resuming after the stored checkpoint"), "{}", serve.log());
    // Killed while it works through a burst, alerts half written.
    insert(600, 3600);
    std::thread::sleep(Duration::from_millis(100));
    serve.kill();
    let written: u64 = rt.block_on(async {
        let mut total = 0;
        for name in ["alerts_acme", "alerts_globex", "alerts_initech"] {
            total += db.collection::<Document>(name).count_documents(doc! {}).await.unwrap();
        }
        total
    });
    eprintln!("SIGKILL with {written} of 1800 alerts written");
    insert(3600, 3900);
    let serve = start(&setup, &mongo, &db_name, 3);
    insert(3900, 4200);
    for (_, seqs) in &mut expected {
        seqs.sort();
    }
    rt.block_on(expect_alerts(&db, &expected, || serve.log()));
    let last = serve.stop();
    assert!(last.contains("stopped"), "{last}");
    if !mongo.is_external() {
        rt.block_on(db.drop().into_future()).unwrap();
    }
}

/// Two tenants sharing a collection run the example correlations (every
/// type): each tenant's correlation alerts are exactly those of
/// `dac run` over its own events — the same ids, windows, aggregates and
/// evidence — although `dac serve` is SIGKILLed twice mid-stream (once
/// while events keep coming, once in a burst) and its windows come back
/// from the stream's checkpoint, by tenant.
#[test]
fn a_tenants_correlations_alert_like_dac_run_across_sigkills() {
    use dac_tests::correlation;
    let mongo = TestMongo::start();
    let db_name = TestMongo::unique_db_name();
    let setup = Setup::new();
    for tenant in ["acme", "globex"] {
        let rules = setup.state.join("tenants").join(tenant).join("rules");
        for entry in std::fs::read_dir(correlation::rules_dir()).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "yml") {
                std::fs::copy(&path, rules.join(path.file_stem().unwrap())).unwrap();
            }
        }
    }
    let acme = correlation::events(3_000, 0xac, Some("acme"));
    let globex = correlation::events(3_000, 0x61, Some("globex"));
    let dir = tempfile::tempdir().unwrap();
    let expected = [("alerts_acme", &acme), ("alerts_globex", &globex)].map(|(collection, events)| {
        let scratch = dir.path().join(collection);
        std::fs::create_dir(&scratch).unwrap();
        (collection, correlation::expected(&correlation::rules_dir(), events, &scratch))
    });
    assert!(expected.iter().all(|(_, rows)| rows.len() > 100), "{:?}", expected.map(|(_, rows)| rows.len()));

    let rt = runtime();
    let client = rt.block_on(Client::with_uri_str(mongo.uri())).unwrap();
    let db = client.database(&db_name);
    let shared = db.collection::<Document>("events");
    // Both tenants' events, interleaved in batches of 50 each.
    let insert = |range: std::ops::Range<usize>, pause: Duration| {
        rt.block_on(async {
            for start in range.step_by(50) {
                let batch: Vec<Document> = acme[start..start + 50]
                    .iter()
                    .chain(&globex[start..start + 50])
                    .map(|e| mongodb::bson::to_document(e).unwrap())
                    .collect();
                shared.insert_many(batch).await.unwrap();
                tokio::time::sleep(pause).await;
            }
        })
    };
    let serve = start(&setup, &mongo, &db_name, 1);
    insert(0..1_000, Duration::from_millis(40));
    serve.kill();
    insert(1_000..2_000, Duration::ZERO); // while down
    let serve = start(&setup, &mongo, &db_name, 2);
    let restored = serve.log();
    insert(2_000..3_000, Duration::ZERO);
    std::thread::sleep(Duration::from_millis(300));
    serve.kill();
    let serve = start(&setup, &mongo, &db_name, 3);
    for tenant in ["acme", "globex"] {
        assert!(restored.contains(&format!("tenant {tenant}: restored the windows of 8 correlations")), "{restored}");
    }
    rt.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(90);
        for (collection, rows) in &expected {
            let alerts = db.collection::<Document>(collection);
            while alerts.count_documents(doc! {}).await.unwrap() < rows.len() as u64 {
                assert!(
                    Instant::now() < deadline,
                    "{collection}: too few alerts; log:
{}",
                    serve.log()
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        for (collection, rows) in &expected {
            let mut found = Vec::new();
            let mut cursor = db.collection::<Document>(collection).find(doc! {}).await.unwrap();
            while cursor.advance().await.unwrap() {
                let alert = mongodb::bson::Bson::Document(cursor.deserialize_current().unwrap()).into_relaxed_extjson();
                found.push(correlation::row(&alert["correlation"]));
            }
            found.sort();
            if let Some(difference) = correlation::difference(rows, &found) {
                panic!(
                    "{collection}: {difference}; log:
{}",
                    serve.log()
                );
            }
        }
    });
    serve.stop();
    if !mongo.is_external() {
        rt.block_on(db.drop().into_future()).unwrap();
    }
}

/// A rule that faults on every event is taken out of its tenant's engine
/// after `quarantine_after_faults` faults — audited, counted in the rules
/// list, still out after a restart — while the tenant's other rule keeps
/// alerting on every event.
#[test]
fn a_rule_that_keeps_faulting_is_quarantined_and_its_tenant_keeps_alerting() {
    let mongo = TestMongo::start();
    let db_name = TestMongo::unique_db_name();
    let setup = Setup::with_header("quarantine_after_faults = 3\n");
    let panics = std::fs::read(hostile_rule("explicit-panic")).unwrap();
    std::fs::write(setup.state.join("tenants/acme/rules/panics"), &panics).unwrap();
    let serve = start(&setup, &mongo, &db_name, 1);
    let rt = runtime();
    let client = rt.block_on(Client::with_uri_str(mongo.uri())).unwrap();
    let db = client.database(&db_name);
    let shared = db.collection::<Document>("events");
    let (_, before) = serve.get("/v1/tenants/acme/rules", &setup.acme);
    assert_eq!(before["rules"].as_array().unwrap().len(), 2, "{before}");
    assert_eq!(before["quarantined"], serde_json::json!([]));

    rt.block_on(shared.insert_many((1..=6).map(|seq| event(seq, Some("acme"), true))).into_future()).unwrap();
    rt.block_on(expect_alerts(&db, &[("alerts_acme", (1..=6).collect())], || serve.log()));

    let (status, list) = serve.get("/v1/tenants/acme/rules", &setup.acme);
    assert_eq!(status, 200);
    let names: Vec<&str> = list["rules"].as_array().unwrap().iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["shadow"], "{list}");
    assert_eq!(list["rules"][0]["faults"], 0);
    let quarantined = &list["quarantined"][0];
    assert_eq!(quarantined["name"], "panics", "{list}");
    assert_eq!(quarantined["faults"], 3, "taken out at the third fault, not evaluated after: {list}");
    assert_eq!(quarantined["uuid"], "63a4804b-c6e9-47cf-a48c-8a0100013142");
    assert!(quarantined["reason"].as_str().unwrap().contains("trapped"), "{list}");
    let (_, audit) = serve.get("/v1/audit", &setup.admin);
    let entries: Vec<&Value> =
        audit["entries"].as_array().unwrap().iter().filter(|e| e["action"] == "rule.quarantine").collect();
    assert_eq!(entries.len(), 1, "{audit}");
    assert_eq!(
        (&entries[0]["who"], &entries[0]["tenant"], &entries[0]["rule"], &entries[0]["result"]),
        (&Value::from("dac"), &Value::from("acme"), &Value::from("panics"), &Value::from("quarantined"))
    );
    assert_eq!(count(&serve.log(), "QUARANTINED"), 1, "{}", serve.log());
    serve.stop();

    // Still out after a restart: the quarantine is on disk.
    let serve = start(&setup, &mongo, &db_name, 2);
    let (_, list) = serve.get("/v1/tenants/acme/rules", &setup.acme);
    assert_eq!(list["quarantined"][0]["name"], "panics", "{list}");
    assert_eq!(list["rules"].as_array().unwrap().len(), 1, "{list}");
    rt.block_on(shared.insert_one(event(7, Some("acme"), true)).into_future()).unwrap();
    rt.block_on(expect_alerts(&db, &[("alerts_acme", (1..=7).collect())], || serve.log()));
    assert_eq!(count(&serve.log(), "trapped"), 0, "a quarantined rule is not evaluated:\n{}", serve.log());

    // Uploading the rule again, fixed, releases it.
    let fixed = "name: Reads passwd\nuuid: 0b5d3a52-4a43-4f7e-9a51-5d1f1c2a9e01\n\
                 detection_logic:\n  command_line:\n    - /etc/passwd\nversion: 1.0.0\nseverity: low\n";
    let (status, put) = serve.request("PUT", "/v1/tenants/acme/rules/panics", &setup.acme, fixed.as_bytes());
    assert_eq!(status, 200, "replaces the quarantined version: {put}");
    let (_, list) = serve.get("/v1/tenants/acme/rules", &setup.acme);
    assert_eq!(list["quarantined"], serde_json::json!([]), "{list}");
    assert_eq!(list["rules"].as_array().unwrap().len(), 2, "{list}");
    assert!(!setup.state.join("tenants/acme/quarantine/panics").exists());
    serve.stop();
    if !mongo.is_external() {
        rt.block_on(db.drop().into_future()).unwrap();
    }
}

/// (status, body as text).
fn text_reply(reply: dac_tests::serve::Reply) -> (u16, String) {
    let text = reply.text();
    (reply.status, text)
}

/// The value of the sample `series` (name and labels, exactly as written)
/// in OpenMetrics `text`; `None` when there is no such sample.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// `/metrics` counts per tenant, per rule and per stream what the streams
/// did, goes on counting across a rule upload, and shows a tenant only its
/// own series.
#[test]
fn metrics_count_per_tenant_rule_and_stream_and_survive_rule_changes() {
    let mongo = TestMongo::start();
    let db_name = TestMongo::unique_db_name();
    let setup = Setup::with_header("quarantine_after_faults = 1000\n");
    // initech (the last tenant of the file) runs with a fuel budget.
    let mut config = std::fs::read_to_string(&setup.config).unwrap();
    config.push_str("[tenant.limits]\nfuel = 50000000\n");
    std::fs::write(&setup.config, config).unwrap();
    let panics = std::fs::read(hostile_rule("explicit-panic")).unwrap();
    std::fs::write(setup.state.join("tenants/globex/rules/panics"), &panics).unwrap();
    let redirect = std::fs::read(dac_tests::example_rule("tmp-output-redir")).unwrap();
    std::fs::write(setup.state.join("tenants/initech/rules/redirect"), &redirect).unwrap();
    let serve = start(&setup, &mongo, &db_name, 1);
    let rt = runtime();
    let client = rt.block_on(Client::with_uri_str(mongo.uri())).unwrap();
    let db = client.database(&db_name);
    let shared = db.collection::<Document>("events");
    let own = db.collection::<Document>("events_initech");
    let mut redirecting = event(12, None, false);
    redirecting.insert("command_line", "/bin/sh -c echo x > /tmp/out");
    rt.block_on(async {
        shared
            .insert_many([
                event(1, Some("acme"), true),
                event(2, Some("acme"), true),
                event(3, Some("acme"), false),
                event(4, Some("globex"), true),
                event(5, None, true), // nobody's
            ])
            .await
            .unwrap();
        own.insert_many([event(10, None, true), event(11, None, false), redirecting]).await.unwrap();
    });
    rt.block_on(expect_alerts(
        &db,
        &[("alerts_acme", vec![1, 2]), ("alerts_globex", vec![4]), ("alerts_initech", vec![10, 12])],
        || serve.log(),
    ));

    let (status, text) = text_reply(serve.send("GET", "/metrics", &setup.admin, b""));
    assert_eq!(status, 200, "{text}");
    let value = |series: &str| sample(&text, series).unwrap_or_else(|| panic!("no sample {series} in:\n{text}"));
    assert!(text.ends_with("# EOF\n"), "{text}");
    for (tenant, events, alerts) in [("acme", 3.0, 2.0), ("globex", 1.0, 1.0), ("initech", 3.0, 2.0)] {
        assert_eq!(value(&format!("dac_tenant_events_total{{tenant=\"{tenant}\"}}")), events, "{tenant}");
        assert_eq!(value(&format!("dac_tenant_alerts_total{{tenant=\"{tenant}\"}}")), alerts, "{tenant}");
    }
    assert_eq!(value(r#"dac_rule_matches_total{tenant="acme",rule="shadow"}"#), 2.0);
    // Entered only where its literal is: not for the benign event.
    assert_eq!(value(r#"dac_rule_evaluations_total{tenant="acme",rule="shadow"}"#), 2.0);
    assert_eq!(value(r#"dac_tenant_rules{tenant="acme",state="live"}"#), 1.0);
    // The YAML rules share one timed pass per event.
    assert_eq!(value(r#"dac_tenant_declarative_pass_seconds_count{tenant="acme"}"#), 3.0);
    assert!(sample(&text, r#"dac_rule_evaluation_seconds_count{tenant="acme",rule="shadow"}"#).is_none(), "{text}");
    // A component that traps on every event: each evaluation an error,
    // each timed.
    assert_eq!(value(r#"dac_rule_evaluations_total{tenant="globex",rule="panics"}"#), 1.0);
    assert_eq!(value(r#"dac_rule_errors_total{tenant="globex",rule="panics",kind="trap"}"#), 1.0);
    assert_eq!(value(r#"dac_rule_evaluation_seconds_count{tenant="globex",rule="panics"}"#), 1.0);
    assert_eq!(value(r#"dac_rule_evaluation_seconds_bucket{le="+Inf",tenant="globex",rule="panics"}"#), 1.0);
    assert!(value(r#"dac_rule_evaluation_seconds_sum{tenant="globex",rule="panics"}"#) > 0.0);
    // The redirection component is entered only where its prefilter's
    // literal is, and burns fuel there (initech has a fuel budget; the
    // other tenants have none, so no fuel series).
    assert_eq!(value(r#"dac_rule_evaluations_total{tenant="initech",rule="redirect"}"#), 1.0);
    assert_eq!(value(r#"dac_rule_matches_total{tenant="initech",rule="redirect"}"#), 1.0);
    assert!(value(r#"dac_rule_fuel_consumed_total{tenant="initech",rule="redirect"}"#) > 0.0);
    assert!(sample(&text, r#"dac_rule_fuel_consumed_total{tenant="globex",rule="panics"}"#).is_none(), "{text}");
    let stream = |name: &str, collection: &str| format!("{name}{{stream=\"{db_name}.{collection}\"}}");
    assert_eq!(value(&stream("dac_stream_events_total", "events")), 5.0);
    assert_eq!(value(&stream("dac_stream_unrouted_events_total", "events")), 1.0);
    assert_eq!(value(&stream("dac_stream_events_total", "events_initech")), 3.0);
    assert!(value(&stream("dac_stream_commits_total", "events")) >= 1.0);
    assert!(value(&stream("dac_stream_lag_seconds", "events")) >= 0.0);

    // A rule change swaps acme's engine; its counters carry on.
    let redirect_yaml = std::fs::read(dac_tests::repo_root().join("example-rules/yaml/tmp_output_redir.yaml"));
    let (status, body) = serve.request("PUT", "/v1/tenants/acme/rules/redirect", &setup.acme, &redirect_yaml.unwrap());
    assert_eq!(status, 201, "{body}");
    rt.block_on(shared.insert_one(event(6, Some("acme"), true)).into_future()).unwrap();
    rt.block_on(expect_alerts(&db, &[("alerts_acme", vec![1, 2, 6])], || serve.log()));
    let (_, text) = text_reply(serve.send("GET", "/metrics", &setup.admin, b""));
    let value = |series: &str| sample(&text, series).unwrap_or_else(|| panic!("no sample {series} in:\n{text}"));
    assert_eq!(value(r#"dac_rule_matches_total{tenant="acme",rule="shadow"}"#), 3.0, "{text}");
    assert_eq!(value(r#"dac_rule_evaluations_total{tenant="acme",rule="shadow"}"#), 3.0);
    // The new rule has a series from the start, though no event had its
    // literal yet.
    assert_eq!(value(r#"dac_rule_evaluations_total{tenant="acme",rule="redirect"}"#), 0.0);
    assert_eq!(value(r#"dac_tenant_events_total{tenant="acme"}"#), 4.0);
    assert_eq!(value(r#"dac_tenant_rules{tenant="acme",state="live"}"#), 2.0);

    // A reload that changes initech's limits opens it again; its counters
    // carry on (Prometheus counters must not fall back).
    let config = std::fs::read_to_string(&setup.config).unwrap().replace("fuel = 50000000", "fuel = 60000000");
    std::fs::write(&setup.config, config).unwrap();
    let (status, body) = serve.request("POST", "/v1/tenants/reload", &setup.admin, b"");
    assert_eq!((status, &body["changes"][0]["tenant"]), (200, &Value::from("initech")), "{body}");
    let (_, text) = text_reply(serve.send("GET", "/metrics", &setup.admin, b""));
    let value = |series: &str| sample(&text, series).unwrap_or_else(|| panic!("no sample {series} in:\n{text}"));
    assert_eq!(value(r#"dac_tenant_events_total{tenant="initech"}"#), 3.0, "{text}");
    assert_eq!(value(r#"dac_rule_matches_total{tenant="initech",rule="redirect"}"#), 1.0);
    assert!(value(r#"dac_rule_fuel_consumed_total{tenant="initech",rule="redirect"}"#) > 0.0);

    // A tenant sees its own series only; /metrics is the admin's.
    let (status, own) = text_reply(serve.send("GET", "/v1/tenants/acme/metrics", &setup.acme, b""));
    assert_eq!(status, 200, "{own}");
    assert_eq!(sample(&own, r#"dac_tenant_events_total{tenant="acme"}"#), Some(4.0), "{own}");
    assert!(!own.contains("globex") && !own.contains("initech") && !own.contains("dac_stream_"), "{own}");
    assert_eq!(text_reply(serve.send("GET", "/metrics", &setup.acme, b"")).0, 403);
    assert_eq!(text_reply(serve.send("GET", "/metrics", "", b"")).0, 401);
    assert_eq!(text_reply(serve.send("GET", "/v1/tenants/globex/metrics", &setup.acme, b"")).0, 404);
    serve.stop();
    if !mongo.is_external() {
        rt.block_on(db.drop().into_future()).unwrap();
    }
}

/// SIGHUP reads the tenants file again while events flow: a removed
/// tenant gets no more events, an added one on the shared collection gets
/// its own from then on, one on a new collection gets a new stream, and a
/// changed alert collection is written to at once — each change audited.
#[test]
fn sighup_applies_a_new_tenants_file_to_the_running_streams() {
    let mongo = TestMongo::start();
    let db_name = TestMongo::unique_db_name();
    let setup = Setup::new();
    let serve = start(&setup, &mongo, &db_name, 1);
    let [umbrella, hooli] = [(); 2].map(|()| dac_serve::generate_token().unwrap());
    for tenant in ["umbrella", "hooli"] {
        let rules = setup.state.join("tenants").join(tenant).join("rules");
        std::fs::create_dir_all(&rules).unwrap();
        std::fs::write(rules.join("shadow"), SHADOW_YAML).unwrap();
    }
    let rt = runtime();
    rt.block_on(async {
        let client = Client::with_uri_str(mongo.uri()).await.unwrap();
        let db = client.database(&db_name);
        let shared = db.collection::<Document>("events");
        shared.insert_many([event(1, Some("acme"), true), event(2, Some("globex"), true)]).await.unwrap();
        expect_alerts(&db, &[("alerts_acme", vec![1]), ("alerts_globex", vec![2])], || serve.log()).await;

        // globex out; initech's alerts elsewhere; umbrella on the shared
        // collection, hooli on a collection of its own.
        let old = std::fs::read_to_string(&setup.config).unwrap();
        let start = old.find("[[tenant]]\nid = 'globex'").unwrap();
        let end = start + 1 + old[start + 1..].find("[[tenant]]").unwrap();
        let new = format!(
            "{}{}[[tenant]]\nid = 'umbrella'\ntoken_sha256 = '{}'\nalert_collection = 'alerts_umbrella'\n\
             scope = {{ field = 'ingest.tenant', equals = 'umbrella', collection = 'events' }}\n\
             [[tenant]]\nid = 'hooli'\ntoken_sha256 = '{}'\nalert_collection = 'alerts_hooli'\n\
             scope = {{ collection = 'events_hooli' }}\n",
            &old[..start],
            old[end..].replace("'alerts_initech'", "'alerts_initech2'"),
            umbrella.sha256_hex,
            hooli.sha256_hex
        );
        std::fs::write(&setup.config, new).unwrap();
        let sent = Command::new("kill").args(["-HUP", &serve.pid().to_string()]).status().unwrap();
        assert!(sent.success());
        let deadline = Instant::now() + Duration::from_secs(60);
        while count(&serve.log(), "SIGHUP: tenants file reloaded") == 0 {
            assert!(Instant::now() < deadline, "no reload:\n{}", serve.log());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }

        shared
            .insert_many([
                event(3, Some("acme"), true),
                event(4, Some("globex"), true),
                event(5, Some("umbrella"), true),
            ])
            .await
            .unwrap();
        db.collection::<Document>("events_hooli").insert_one(event(6, None, true)).await.unwrap();
        db.collection::<Document>("events_initech").insert_one(event(7, None, true)).await.unwrap();
        expect_alerts(
            &db,
            &[
                ("alerts_acme", vec![1, 3]),
                ("alerts_globex", vec![2]),
                ("alerts_umbrella", vec![5]),
                ("alerts_hooli", vec![6]),
                ("alerts_initech2", vec![7]),
                ("alerts_initech", vec![]),
            ],
            || serve.log(),
        )
        .await;

        let log = serve.log();
        assert_eq!(count(&log, &format!("change stream {db_name}.events_hooli: tenants hooli")), 1, "{log}");
        assert_eq!(count(&log, &format!("change stream {db_name}.events: tenants now acme, umbrella")), 1, "{log}");
        let (status, audit) = serve.get("/v1/audit", &setup.admin);
        assert_eq!(status, 200, "{audit}");
        let changes: Vec<(&str, &str, &str, &str)> = audit["entries"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["action"].as_str().unwrap().starts_with("tenant."))
            .map(|e| {
                let field = |key: &str| e[key].as_str().unwrap_or_default();
                (field("who"), field("action"), field("tenant"), field("reason"))
            })
            .collect();
        assert_eq!(
            changes,
            [
                ("dac", "tenant.update", "initech", "alert_collection"),
                ("dac", "tenant.add", "umbrella", ""),
                ("dac", "tenant.add", "hooli", ""),
                ("dac", "tenant.remove", "globex", ""),
            ]
        );
        let (status, _) = serve.get("/v1/tenants/hooli/rules", &hooli.token);
        assert_eq!(status, 200);
        let (status, _) = serve.get("/v1/tenants/globex/rules", &setup.globex);
        assert_eq!(status, 401);
        if !mongo.is_external() {
            db.drop().await.unwrap();
        }
    });
    serve.stop();
}

/// Two `dac serve` processes with the same tenants, one partition each
/// (`--partition 0/2`, `1/2`), share one stream: every event is read by
/// exactly one of them (their stream counters add up to the events, each
/// has some), and each tenant gets each of its alerts once. An upload of
/// a correlation that does not group by the partition key is refused with
/// the fix; one that does is taken.
#[test]
fn two_servers_share_a_stream_by_partition_and_refuse_a_correlation_across_hosts() {
    use dac_event::partition::bucket_of;
    let mongo = TestMongo::start();
    let db_name = TestMongo::unique_db_name();
    let setup = Setup::new();
    let second = setup.dir.path().join("state-1");
    copy_tree(&setup.state, &second);
    let servers: Vec<ServeProcess> = [(&setup.state, "0/2"), (&second, "1/2")]
        .into_iter()
        .map(|(state, partition)| {
            let log = setup.dir.path().join(format!("serve-{}.log", &partition[..1]));
            ServeProcess::start_with(&setup.config, state, log, mongo.uri(), &db_name, &["--partition", partition])
        })
        .collect();
    let rt = runtime();
    let db = rt.block_on(mongodb::Client::with_uri_str(mongo.uri())).unwrap().database(&db_name);
    const EVENTS: i32 = 400;
    let documents: Vec<Document> = (0..EVENTS)
        .map(|n| {
            let tenant = if n % 2 == 0 { "acme" } else { "globex" };
            let mut event = event(n, Some(tenant), n % 10 < 2);
            let host = format!("host-{}", n % 16);
            event.insert("dac_bucket", i32::from(bucket_of(Some(&host))));
            event.insert("hostname", host);
            event
        })
        .collect();
    rt.block_on(async {
        db.collection::<Document>("events").insert_many(documents).await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        for tenant in ["acme", "globex"] {
            let alerts = db.collection::<Document>(&format!("alerts_{tenant}"));
            while alerts.count_documents(doc! {}).await.unwrap() < 40 {
                assert!(
                    Instant::now() < deadline,
                    "{tenant}'s alerts missing:\n{}\n{}",
                    servers[0].log(),
                    servers[1].log()
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let mut seqs = Vec::new();
            let mut cursor = alerts.find(doc! {}).await.unwrap();
            while cursor.advance().await.unwrap() {
                seqs.push(
                    cursor
                        .deserialize_current()
                        .unwrap()
                        .get_document("offending_log")
                        .unwrap()
                        .get_i32("seq")
                        .unwrap(),
                );
            }
            seqs.sort();
            let parity = i32::from(tenant == "globex");
            let expected: Vec<i32> = (0..EVENTS).filter(|n| n % 2 == parity && n % 10 < 2).collect();
            assert_eq!(seqs, expected, "{tenant}: each alert once");
        }
    });
    std::thread::sleep(Duration::from_millis(1_500));
    let read: Vec<f64> = servers
        .iter()
        .map(|server| {
            let metrics = server.send("GET", "/metrics", &setup.admin, b"").text();
            sample(&metrics, &format!("dac_stream_events_total{{stream=\"{db_name}.events\"}}"))
                .unwrap_or_else(|| panic!("no stream counter:\n{metrics}"))
        })
        .collect();
    assert!(read.iter().all(|&n| n > 0.0) && read.iter().sum::<f64>() == f64::from(EVENTS), "{read:?}");

    // A correlation across hosts cannot be partitioned: refused, with why.
    let burst = std::fs::read_to_string(dac_tests::correlation::rules_dir().join("discovery-burst.yml")).unwrap();
    let by_user = burst.replace("  group-by:\n    - hostname\n", "  group-by:\n    - user\n");
    let (status, body) = servers[0].request("PUT", "/v1/tenants/acme/rules/burst", &setup.acme, by_user.as_bytes());
    assert_eq!(status, 422, "{body}");
    assert!(body.to_string().contains("add `hostname` to its group-by"), "{body}");
    let (status, body) = servers[0].request("PUT", "/v1/tenants/acme/rules/burst", &setup.acme, burst.as_bytes());
    assert!(status == 200 || status == 201, "{status} {body}");
    for server in servers {
        server.stop();
    }
}

fn copy_tree(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        let target = to.join(path.file_name().unwrap());
        if path.is_dir() {
            copy_tree(&path, &target);
        } else {
            std::fs::copy(&path, &target).unwrap();
        }
    }
}
