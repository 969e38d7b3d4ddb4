//! `dac serve` isolating tenants on one shared collection: tenant A runs an
//! infinite loop and a memory bomb (and a well-behaved rule), tenant B two
//! ordinary rules; B's alerts are exactly those of B's events, A's hostile
//! rules are quarantined by the server (audited as `dac`), and no alert
//! crosses from one tenant's collection to the other's. The real `dac`
//! binary against nx-27017 (or the deployment in `DAC_TEST_MONGODB_URI`),
//! rules uploaded over its HTTP API. Speed is the serve bench's business
//! (`tests/benches/serve.rs`); nothing here is timed.

use dac_tests::mongo::TestMongo;
use dac_tests::serve::ServeProcess;
use dac_tests::{example_rule, hostile_rule};
use mongodb::bson::{doc, Document};
use mongodb::{Client, Collection, Database};
use std::future::IntoFuture;
use std::path::PathBuf;
use std::time::{Duration, Instant};

const SHADOW_UUID: &str = "5e3566a3-9f19-4ac7-8710-ec5fb09260ed";
const TMP_UUID: &str = "f825ad39-d4b1-41da-91ec-6438d8dc9ace";
/// The server's default `quarantine_after_faults` (the tenants file leaves
/// it out).
const QUARANTINE_AFTER: u64 = 5;

/// Tenants `a` and `b` on the shared `events`, told apart by
/// `ingest.tenant`; A's rules get a 20 ms deadline and 16 MiB of memory.
struct Setup {
    dir: tempfile::TempDir,
    config: PathBuf,
    state: PathBuf,
    admin: String,
    a: String,
    b: String,
}

impl Setup {
    fn new() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let [admin, a, b] = [(); 3].map(|()| dac_serve::generate_token().unwrap());
        let config = dir.path().join("tenants.toml");
        std::fs::write(
            &config,
            format!(
                "admin_token_sha256 = '{}'\n\
                 [[tenant]]\nid = 'a'\ntoken_sha256 = '{}'\nalert_collection = 'alerts_a'\n\
                 scope = {{ field = 'ingest.tenant', equals = 'a', collection = 'events' }}\n\
                 [tenant.limits]\ndeadline_ms = 20\nmemory_mib = 16\n\
                 [[tenant]]\nid = 'b'\ntoken_sha256 = '{}'\nalert_collection = 'alerts_b'\n\
                 scope = {{ field = 'ingest.tenant', equals = 'b', collection = 'events' }}\n",
                admin.sha256_hex, a.sha256_hex, b.sha256_hex
            ),
        )
        .unwrap();
        let state = dir.path().join("state");
        Setup { dir, config, state, admin: admin.token, a: a.token, b: b.token }
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

/// What an event's command line is.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Shadow,
    TmpRedirect,
    Benign,
}

fn event(seq: i32, tenant: &str, kind: Kind) -> Document {
    let command_line = match kind {
        Kind::Shadow => "/usr/bin/sudo cat /etc/shadow",
        Kind::TmpRedirect => "/bin/sh -c ps aux > /tmp/procs.txt",
        Kind::Benign => "/usr/bin/ls -l /tmp",
    };
    doc! {
        "seq": seq,
        "hostname": format!("host-{tenant}"),
        "command_line": command_line,
        "ts": 1_695_342_026_084_i64 + i64::from(seq),
        "ingest": { "tenant": tenant },
    }
}

/// Every alert of `collection` as (event seq, rule uuid), repeats kept.
async fn alerts(collection: &Collection<Document>) -> Vec<(i32, String)> {
    let mut found = Vec::new();
    let mut cursor = collection.find(doc! {}).await.unwrap();
    while cursor.advance().await.unwrap() {
        let alert = cursor.deserialize_current().unwrap();
        let seq = alert.get_document("offending_log").unwrap().get_i32("seq").unwrap();
        found.push((seq, alert.get_str("uuid").unwrap().to_owned()));
    }
    found.sort();
    found
}

/// Waits until each alert collection holds as many alerts as expected,
/// then a little longer (an alert that should not be there has had time
/// to arrive), then compares them exactly.
async fn expect_alerts(db: &Database, expected: &[(&str, Vec<(i32, String)>)], logs: impl Fn() -> String) {
    let deadline = Instant::now() + Duration::from_secs(60);
    for (name, want) in expected {
        let collection = db.collection::<Document>(name);
        loop {
            let found = alerts(&collection).await;
            if found.len() >= want.len() {
                break;
            }
            assert!(Instant::now() < deadline, "{name}: {found:?}, expected {want:?}; log:\n{}", logs());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for (name, want) in expected {
        let found = alerts(&db.collection::<Document>(name)).await;
        assert_eq!(&found, want, "alerts in {name} (event seq, rule uuid); log:\n{}", logs());
    }
}

fn read(path: PathBuf) -> Vec<u8> {
    std::fs::read(&path).unwrap_or_else(|err| panic!("{}: {err}", path.display()))
}

#[test]
fn a_tenants_hostile_rules_are_quarantined_and_the_other_tenants_alerts_stay_exact() {
    let mongo = TestMongo::start();
    let db_name = TestMongo::unique_db_name();
    let setup = Setup::new();
    let serve =
        ServeProcess::start(&setup.config, &setup.state, setup.dir.path().join("serve.log"), mongo.uri(), &db_name);

    // A: an infinite loop, a memory bomb, and the shadow rule beside them;
    // B: shadow and the /tmp redirection rule. Both have shadow, so an
    // alert in the wrong collection could not pass for the right one's.
    for (tenant, token, name, component) in [
        ("a", &setup.a, "loop", read(hostile_rule("infinite-loop"))),
        ("a", &setup.a, "bomb", read(hostile_rule("memory-bomb"))),
        ("a", &setup.a, "shadow", read(example_rule("shadow"))),
        ("b", &setup.b, "shadow", read(example_rule("shadow"))),
        ("b", &setup.b, "tmp", read(example_rule("tmp-output-redir"))),
    ] {
        let (status, body) = serve.request("PUT", &format!("/v1/tenants/{tenant}/rules/{name}"), token, &component);
        assert_eq!(status, 201, "tenant {tenant} uploading {name}: {body}");
    }

    // 60 events, every other one A's, each tenant's a mix of the two
    // attacks and benign commands.
    let kinds = [Kind::Shadow, Kind::Benign, Kind::TmpRedirect, Kind::Benign, Kind::Benign];
    let mut batch = Vec::new();
    let (mut want_a, mut want_b) = (Vec::new(), Vec::new());
    let mut a_events = 0;
    for seq in 1..=60 {
        let tenant = if seq % 2 == 1 { "a" } else { "b" };
        let kind = kinds[(seq as usize / 2) % kinds.len()];
        batch.push(event(seq, tenant, kind));
        match (tenant, kind) {
            ("a", Kind::Shadow) => want_a.push((seq, SHADOW_UUID.to_owned())),
            ("b", Kind::Shadow) => want_b.push((seq, SHADOW_UUID.to_owned())),
            ("b", Kind::TmpRedirect) => want_b.push((seq, TMP_UUID.to_owned())),
            _ => {}
        }
        a_events += u64::from(tenant == "a");
    }
    assert!(a_events > QUARANTINE_AFTER, "enough of A's events to reach the quarantine");
    assert!(!want_a.is_empty() && want_b.iter().any(|(_, uuid)| uuid == TMP_UUID), "the batch has every kind");
    want_a.sort();
    want_b.sort();

    let rt = runtime();
    let client = rt.block_on(Client::with_uri_str(mongo.uri())).unwrap();
    let db = client.database(&db_name);
    rt.block_on(db.collection::<Document>("events").insert_many(batch).into_future()).unwrap();
    // B's alerts exactly; A's well-behaved rule alerted on A's shadow
    // events (after the quarantine too), and only in A's collection.
    rt.block_on(expect_alerts(&db, &[("alerts_b", want_b), ("alerts_a", want_a)], || serve.log()));

    // A's hostile rules are out, each at its fifth fault, for the fault
    // its limit gives it; its shadow rule is still live.
    let (status, list) = serve.get("/v1/tenants/a/rules", &setup.a);
    assert_eq!(status, 200, "{list}");
    let live: Vec<&str> = list["rules"].as_array().unwrap().iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert_eq!(live, ["shadow"], "tenant a's live rules: {list}");
    let quarantined = list["quarantined"].as_array().unwrap();
    let names: Vec<&str> = quarantined.iter().map(|q| q["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["bomb", "loop"], "tenant a's quarantined rules: {list}");
    for (rule, reason) in [
        (&quarantined[0], "exceeded its memory limit of 16777216 bytes"),
        (&quarantined[1], "exceeded its deadline of 20ms"),
    ] {
        assert_eq!(rule["faults"], QUARANTINE_AFTER, "taken out at the fifth fault: {list}");
        let said = rule["reason"].as_str().unwrap();
        assert!(said.contains(reason), "{}: reason {said:?}, expected it to say {reason:?}", rule["name"]);
    }

    // B was never touched: both rules live, no faults, nothing quarantined.
    let (status, list) = serve.get("/v1/tenants/b/rules", &setup.b);
    assert_eq!(status, 200, "{list}");
    let rules = list["rules"].as_array().unwrap();
    let live: Vec<(&str, u64)> =
        rules.iter().map(|r| (r["name"].as_str().unwrap(), r["faults"].as_u64().unwrap())).collect();
    assert_eq!(live, [("shadow", 0), ("tmp", 0)], "tenant b's rules: {list}");
    assert_eq!(list["quarantined"], serde_json::json!([]), "tenant b's quarantined rules: {list}");

    // Audited by the server itself, once per rule.
    let (status, audit) = serve.get("/v1/audit", &setup.admin);
    assert_eq!(status, 200, "{audit}");
    let mut entries: Vec<(&str, &str, &str, &str)> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|entry| entry["action"] == "rule.quarantine")
        .map(|entry| {
            let field = |key: &str| entry[key].as_str().unwrap_or_default();
            (field("who"), field("tenant"), field("rule"), field("result"))
        })
        .collect();
    entries.sort();
    assert_eq!(
        entries,
        [("dac", "a", "bomb", "quarantined"), ("dac", "a", "loop", "quarantined")],
        "the audit log's quarantines: {audit}"
    );
    let log = serve.stop();
    assert_eq!(log.lines().filter(|line| line.contains("QUARANTINED")).count(), 2, "{log}");
    if !mongo.is_external() {
        rt.block_on(db.drop().into_future()).unwrap();
    }
}
