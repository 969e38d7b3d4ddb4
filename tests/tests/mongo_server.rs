//! The MongoDB test server works with the official Rust driver's change
//! streams: each test pins one of the `nx-27017` defects that
//! `tests/mongo/patch_nx27017.py` fixes (see `tests/mongo/README.md`).
//!
//! With `DAC_TEST_MONGODB_URI` set, the same tests run against that
//! deployment (a replica set, MongoDB ≥ 6.0): the server-side CPU check is
//! skipped there, and a restart is emulated by killing the stream's cursor.

use std::future::IntoFuture;
use std::time::{Duration, Instant};

use dac_tests::mongo::TestMongo;
use futures_util::StreamExt;
use mongodb::bson::{doc, oid::ObjectId, Bson, DateTime, Document};
use mongodb::change_stream::event::{ChangeStreamEvent, OperationType};
use mongodb::change_stream::ChangeStream;
use mongodb::options::FullDocumentType;
use mongodb::{Client, Collection, Database};

/// Bound of every single await: generous, for slow shared machines.
const STEP: Duration = Duration::from_secs(90);

type Events = ChangeStream<ChangeStreamEvent<Document>>;

async fn within<F: IntoFuture>(what: &str, future: F) -> F::Output {
    tokio::time::timeout(STEP, future).await.unwrap_or_else(|_| panic!("{what}: no answer within {STEP:?}"))
}

async fn connect(mongo: &TestMongo) -> Client {
    within("connect", Client::with_uri_str(mongo.uri())).await.expect("a valid connection string")
}

/// A collection in a database of its own.
fn collection(client: &Client) -> (Database, Collection<Document>) {
    let db = client.database(&TestMongo::unique_db_name());
    let coll = db.collection("events");
    (db, coll)
}

fn inserts_only() -> [Document; 1] {
    [doc! { "$match": { "operationType": { "$in": ["insert"] } } }]
}

async fn next_event(stream: &mut Events, what: &str) -> ChangeStreamEvent<Document> {
    match within(what, stream.next()).await {
        Some(Ok(event)) => event,
        Some(Err(err)) => panic!("{what}: {err}"),
        None => panic!("{what}: the change stream ended"),
    }
}

/// Reads `n` insert events and returns their documents' `seq`.
async fn next_seqs(stream: &mut Events, n: usize, what: &str) -> Vec<i32> {
    let mut seqs = Vec::with_capacity(n);
    for _ in 0..n {
        let event = next_event(stream, what).await;
        assert_eq!(event.operation_type, OperationType::Insert, "{what}: {event:?}");
        let document = event.full_document.unwrap_or_else(|| panic!("{what}: an insert without fullDocument"));
        seqs.push(document.get_i32("seq").unwrap_or_else(|err| panic!("{what}: {err} in {document}")));
    }
    seqs
}

async fn insert_seqs(coll: &Collection<Document>, seqs: std::ops::Range<i32>) {
    let docs: Vec<Document> = seqs.map(|seq| doc! { "_id": ObjectId::new(), "seq": seq }).collect();
    within("insert", coll.insert_many(docs)).await.expect("insert documents");
}

/// Inserts a sentinel and asserts it is the stream's next event: nothing
/// was left over or delivered twice before it.
async fn expect_sentinel_next(coll: &Collection<Document>, stream: &mut Events, what: &str) {
    let sentinel = doc! { "_id": ObjectId::new(), "seq": -1, "sentinel": true };
    within("insert the sentinel", coll.insert_one(sentinel.clone())).await.expect("insert the sentinel");
    let event = next_event(stream, what).await;
    assert_eq!(event.full_document.as_ref(), Some(&sentinel), "{what}: an unexpected event before the sentinel");
}

async fn cleanup(db: &Database) {
    // Matters on a shared external deployment; best effort.
    let _ = tokio::time::timeout(STEP, db.drop()).await;
}

/// Documents with the BSON types a change stream must carry intact.
fn sample_documents() -> Vec<Document> {
    let mut docs: Vec<Document> = (0..5)
        .map(|i: i32| {
            doc! {
                "_id": ObjectId::new(),
                "seq": i,
                "at": DateTime::from_millis(1_700_000_000_123 + i64::from(i) * 1_001),
                "host": {
                    "name": format!("web-{i}"),
                    "tags": ["prod", "dmz"],
                    "owner": { "uid": 1000 + i, "ref": ObjectId::new(), "since": DateTime::from_millis(86_400_000) },
                },
                // Beyond i32, so it is an int64 on any server (nx-27017
                // stores numbers as JSON: a small int64 returns as int32).
                "bytes": Bson::Int64(5_000_000_000 + i64::from(i)),
                "ratio": 0.25 * f64::from(i),
                "ok": i % 2 == 0,
                "nothing": Bson::Null,
            }
        })
        .collect();
    // An integer `_id`: `documentKey._id` must stay an integer.
    docs.push(doc! { "_id": 42, "seq": 5, "at": DateTime::from_millis(0) });
    docs
}

/// Defects 1–3: `watch()` works at all (int64 cursor ids), events decode
/// as typed `ChangeStreamEvent`s (clusterTime a Timestamp), and each
/// `fullDocument` equals the inserted document, ObjectIds and DateTimes
/// intact, with or without `fullDocument: updateLookup`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_yields_typed_inserts_with_intact_full_documents() {
    let mongo = TestMongo::start();
    let client = connect(&mongo).await;
    let (db, coll) = collection(&client);
    let mut default = within("watch", coll.watch().pipeline(inserts_only())).await.expect("watch (default)");
    let mut lookup =
        within("watch", coll.watch().pipeline(inserts_only()).full_document(FullDocumentType::UpdateLookup))
            .await
            .expect("watch (updateLookup)");

    let docs = sample_documents();
    within("insert", coll.insert_many(docs.clone())).await.expect("insert documents");
    // An update and a delete: the `$match` must filter them out, so the
    // sentinel inserted after them is the next event.
    let first = docs[0].get("_id").unwrap().clone();
    within("update", coll.update_one(doc! { "_id": first }, doc! { "$set": { "touched": true } }))
        .await
        .expect("update");
    within("delete", coll.delete_one(doc! { "_id": docs[1].get("_id").unwrap().clone() })).await.expect("delete");
    let sentinel = doc! { "_id": ObjectId::new(), "sentinel": true };
    within("insert the sentinel", coll.insert_one(sentinel.clone())).await.expect("insert the sentinel");

    for (name, stream) in [("default", &mut default), ("updateLookup", &mut lookup)] {
        for want in docs.iter().chain([&sentinel]) {
            let event = next_event(stream, name).await;
            assert_eq!(event.operation_type, OperationType::Insert, "{name}: {event:?}");
            assert_eq!(event.full_document.as_ref(), Some(want), "{name}: fullDocument differs from the insert");
            assert_eq!(
                event.document_key,
                Some(doc! { "_id": want.get("_id").unwrap().clone() }),
                "{name}: documentKey"
            );
            assert!(event.cluster_time.is_some(), "{name}: no clusterTime in {event:?}");
            let ns = event.ns.as_ref().unwrap_or_else(|| panic!("{name}: no ns in {event:?}"));
            assert_eq!((ns.db.as_str(), ns.coll.as_deref()), (db.name(), Some("events")), "{name}: ns");
        }
    }
    cleanup(&db).await;
}

/// A new stream resuming after the k-th event's token yields exactly
/// events k+1..N: none lost, none repeated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_after_a_token_yields_exactly_the_later_events() {
    const N: i32 = 40;
    const K: usize = 13;
    let mongo = TestMongo::start();
    let client = connect(&mongo).await;
    let (db, coll) = collection(&client);
    let mut first = within("watch", coll.watch().pipeline(inserts_only())).await.expect("watch");
    insert_seqs(&coll, 0..N).await;

    let mut tokens = Vec::new();
    for seq in 0..N {
        let event = next_event(&mut first, "first stream").await;
        assert_eq!(event.full_document.as_ref().and_then(|d| d.get_i32("seq").ok()), Some(seq), "{event:?}");
        tokens.push(event.id);
    }
    let mut resumed = within("resume", coll.watch().pipeline(inserts_only()).resume_after(tokens[K - 1].clone()))
        .await
        .expect("watch resuming after the k-th event");
    let seqs = next_seqs(&mut resumed, N as usize - K, "resumed stream").await;
    assert_eq!(seqs, (K as i32..N).collect::<Vec<_>>());
    expect_sentinel_next(&coll, &mut resumed, "resumed stream").await;
    // The first stream, too, continues with the sentinel: nothing repeated.
    let event = next_event(&mut first, "first stream").await;
    assert_eq!(event.full_document.and_then(|d| d.get_bool("sentinel").ok()), Some(true));
    cleanup(&db).await;
}

/// Defect 6: a consumer's stored token lags what its stream has read
/// (read, not yet committed). While writers are more than the retention
/// (1000 rows) ahead, 0.8.1's pruning on every getMore deleted every row
/// between that token and the stream's read position, so a client killed
/// before committing (dac under SIGKILL) resumed past a silent gap. A new
/// stream resuming from a token its predecessor had read past must yield
/// every later event, in order. The server-side trigger is the prune on
/// the predecessor's getMores, not the disconnect itself, so no child
/// process is needed: the predecessor reads ahead, then goes away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_from_a_token_behind_what_a_gone_stream_read_loses_nothing() {
    const N: i32 = 3000; // Well over nx-27017's 1000 retained rows.
    const READ: usize = 300; // Three of nx-27017's 101-event batches.
    const K: usize = 100; // The stored token: behind what was read.
    let mongo = TestMongo::start();
    let client = connect(&mongo).await;
    let (db, coll) = collection(&client);
    let mut ahead = within("watch", coll.watch().pipeline(inserts_only())).await.expect("watch");
    for start in (0..N).step_by(500) {
        insert_seqs(&coll, start..start + 500).await;
    }
    let mut tokens = Vec::with_capacity(READ);
    for seq in 0..READ as i32 {
        let event = next_event(&mut ahead, "the stream reading ahead").await;
        assert_eq!(event.full_document.as_ref().and_then(|d| d.get_i32("seq").ok()), Some(seq), "{event:?}");
        tokens.push(event.id);
    }
    drop(ahead);

    let mut resumed = within("resume", coll.watch().pipeline(inserts_only()).resume_after(tokens[K - 1].clone()))
        .await
        .expect("watch resuming after the stored token");
    // Read up to a sentinel inserted now: a gap shows as a short list at
    // once, not as a wait for events that will never come.
    let sentinel = doc! { "_id": ObjectId::new(), "seq": -1, "sentinel": true };
    within("insert the sentinel", coll.insert_one(sentinel.clone())).await.expect("insert the sentinel");
    let mut seqs = Vec::with_capacity(N as usize - K);
    loop {
        let event = next_event(&mut resumed, "resumed stream").await;
        let document = event.full_document.unwrap_or_else(|| panic!("resumed stream: an insert without fullDocument"));
        if document == sentinel {
            break;
        }
        seqs.push(document.get_i32("seq").unwrap_or_else(|err| panic!("resumed stream: {err} in {document}")));
    }
    let first_missing = (K as i32..N).find(|seq| !seqs.contains(seq));
    assert!(
        seqs.iter().copied().eq(K as i32..N),
        "after the stored token, {} events instead of {} (first missing: {first_missing:?}, first received: {:?})",
        seqs.len(),
        N as usize - K,
        seqs.first(),
    );
    cleanup(&db).await;
}

/// Defects 7 and 8: a token older than the change history, and an open
/// stream that fell behind it, fail with `ChangeStreamHistoryLost` (286),
/// as in MongoDB, instead of silently resuming at the oldest kept event.
/// Needs a server whose history a test can shrink: skipped (with a
/// message) on an external deployment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_older_than_the_history_fails_with_history_lost() {
    const WINDOW: u32 = 50;
    let Some(mongo) = TestMongo::start_with_history_window(WINDOW) else {
        eprintln!("skipped: a test cannot shrink the oplog of the DAC_TEST_MONGODB_URI deployment");
        return;
    };
    let client = connect(&mongo).await;
    let (db, coll) = collection(&client);
    let mut lagging = within("watch", coll.watch().pipeline(inserts_only())).await.expect("watch");
    insert_seqs(&coll, 0..10).await;
    let first = next_event(&mut lagging, "the first event").await;
    let old_token = first.id.clone();
    // Pruning runs on a getMore; a reader that keeps up triggers it while
    // the lagging stream still holds its place at the first event.
    let mut current = within("watch", coll.watch().pipeline(inserts_only())).await.expect("watch");
    for start in (10..200).step_by(10) {
        insert_seqs(&coll, start..start + 10).await;
        assert_eq!(next_seqs(&mut current, 10, "the current reader").await, (start..start + 10).collect::<Vec<_>>());
    }

    let history_lost = |err: mongodb::error::Error| match *err.kind {
        mongodb::error::ErrorKind::Command(ref command) => command.code,
        ref other => panic!("expected a command error, got {other:?}"),
    };
    let resumed = within("resume", coll.watch().pipeline(inserts_only()).resume_after(old_token)).await;
    let code = match resumed {
        Ok(mut stream) => history_lost(
            within("first event after resuming", stream.next())
                .await
                .expect("an answer")
                .expect_err("a token older than the history must not resume"),
        ),
        Err(err) => history_lost(err),
    };
    assert_eq!(code, 286, "resuming from a pruned token");

    let code = loop {
        match within("the lagging stream", lagging.next()).await {
            Some(Ok(event)) => {
                let seq = event.full_document.and_then(|d| d.get_i32("seq").ok());
                assert!(seq.is_some_and(|seq| seq < 10), "the lagging stream skipped to {seq:?}");
            }
            Some(Err(err)) => break history_lost(err),
            None => panic!("the lagging stream ended without an error"),
        }
    };
    assert_eq!(code, 286, "an open stream behind the history");
    cleanup(&db).await;
}

/// Defect 5: an idle stream's getMore waits for `maxAwaitTime` on the
/// server instead of returning at once, so idling costs the server (and
/// the client) next to nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_watch_waits_on_the_server_without_burning_cpu() {
    const IDLE: Duration = Duration::from_secs(2);
    const AWAIT: Duration = Duration::from_millis(500);
    let mongo = TestMongo::start();
    let client = connect(&mongo).await;
    let (db, coll) = collection(&client);
    let mut stream = within("watch", coll.watch().max_await_time(AWAIT)).await.expect("watch");

    let before = mongo.server_pid().map(cpu_ticks);
    let started = Instant::now();
    let mut get_mores = 0;
    while started.elapsed() < IDLE {
        let event = within("idle getMore", stream.next_if_any()).await.expect("getMore");
        assert!(event.is_none(), "an event on an idle collection: {event:?}");
        get_mores += 1;
    }
    let elapsed = started.elapsed();
    // Each getMore waits up to AWAIT; returning at once would mean hundreds.
    assert!(get_mores <= 2 * IDLE.as_millis() / AWAIT.as_millis() + 2, "{get_mores} getMores in {elapsed:?}");

    match (mongo.server_pid(), before) {
        (Some(pid), Some(before)) => {
            let used = (cpu_ticks(pid) - before) as f64 / clock_ticks_per_second();
            let cores = used / elapsed.as_secs_f64();
            eprintln!("idle server: {used:.2} s CPU in {elapsed:.2?} ({:.1} % of a core)", cores * 100.0);
            assert!(cores < 0.30, "the idle server used {:.0} % of a core", cores * 100.0);
        }
        _ => eprintln!("external deployment: server CPU not measured"),
    }
    cleanup(&db).await;
}

/// Defect 4: after a server restart, the same driver stream resumes by
/// itself (its old cursor is CursorNotFound) and yields every event —
/// those left unread before the restart and those inserted after — once.
/// Against an external deployment, killing the stream's cursor stands in
/// for the restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_resumes_by_itself_across_a_server_restart() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let mut mongo = TestMongo::start_with_db_file(&dir.path().join("restart.db"));
    let client = connect(&mongo).await;
    let (db, coll) = collection(&client);
    let mut stream = within("watch", coll.watch().pipeline(inserts_only()).max_await_time(Duration::from_millis(200)))
        .await
        .expect("watch");
    insert_seqs(&coll, 0..10).await;
    assert_eq!(next_seqs(&mut stream, 5, "before the restart").await, (0..5).collect::<Vec<_>>());

    if mongo.is_external() {
        kill_stream_cursors(&client, &db).await;
    } else {
        mongo.restart();
    }
    // The stream's client reconnects first, so that its next getMore
    // reaches the new server with the old cursor id (the server answers
    // CursorNotFound) rather than failing on a dead connection. A
    // standalone gives no retryable writes or reads: the first command
    // on a pooled dead connection fails, and clears the pool.
    let mut failures = Vec::new();
    while let Err(err) = within("ping", client.database("admin").run_command(doc! { "ping": 1 })).await {
        failures.push(err);
        assert!(failures.len() < 5, "cannot reach the server again: {failures:#?}");
    }
    insert_seqs(&coll, 10..20).await;

    assert_eq!(next_seqs(&mut stream, 15, "after the restart").await, (5..20).collect::<Vec<_>>());
    expect_sentinel_next(&coll, &mut stream, "after the restart").await;
    cleanup(&db).await;
}

/// Kills the idle change-stream cursors on `db.events` (the restart's
/// stand-in on an external deployment; needs the `inprog` and
/// `killCursors` privileges, which an unauthenticated test deployment has).
async fn kill_stream_cursors(client: &Client, db: &Database) {
    let ns = format!("{}.events", db.name());
    let pipeline = [
        doc! { "$currentOp": { "idleCursors": true, "allUsers": true } },
        doc! { "$match": { "type": "idleCursor", "ns": ns.clone() } },
    ];
    let mut ops = within("$currentOp", client.database("admin").aggregate(pipeline)).await.expect("$currentOp");
    let mut ids = Vec::new();
    while let Some(op) = within("$currentOp", ops.next()).await {
        let op = op.expect("$currentOp entry");
        let id = op.get_document("cursor").and_then(|cursor| cursor.get_i64("cursorId"));
        ids.push(id.unwrap_or_else(|err| panic!("{err} in {op}")));
    }
    assert!(!ids.is_empty(), "no idle cursor on {ns} to kill");
    within("killCursors", db.run_command(doc! { "killCursors": "events", "cursors": ids })).await.expect("killCursors");
}

/// User plus system CPU time of a process, in clock ticks (all threads).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc/<pid>/stat");
    // Fields after the parenthesized command: state is field 3, so utime
    // (field 14) and stime (field 15) are the 12th and 13th.
    let after = &stat[stat.rfind(')').expect("a stat line") + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime")
}

fn clock_ticks_per_second() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(100.0)
}
