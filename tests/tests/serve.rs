//! `dac serve`'s HTTP API, over real HTTP against the real server (started
//! in this process on an ephemeral port), with real rule components.
//!
//! Requests are written by hand on a TCP socket rather than through an
//! HTTP client crate: clients normalize `..` and `%2e%2e` out of paths,
//! and the traversal tests must send exactly those bytes.

mod in_process;

use dac_tests::serve::yaml_rule;
use in_process::{sha256, Server, BASE64_EVENT, SHADOW_EVENT};
use serde_json::{json, Value};

fn shadow_component() -> Vec<u8> {
    std::fs::read(dac_tests::example_rule("shadow")).unwrap()
}

fn seed_yaml(name: &str) -> Vec<u8> {
    std::fs::read(dac_tests::yaml_rules_dir().join(name)).unwrap()
}

fn sigma(name: &str) -> Vec<u8> {
    std::fs::read(dac_tests::sigma_dir().join(name)).unwrap()
}

const TMP_EVENT: &str = r#"{"hostname":"web-01","path":"/usr/bin/bash","command_line":"echo hi > /tmp/x"}"#;
const BENIGN_EVENT: &str = r#"{"hostname":"web-01","path":"/usr/bin/ls","command_line":"/usr/bin/ls -l"}"#;

#[test]
fn a_tenant_uploads_lists_gets_dry_runs_and_deletes_rules_of_every_kind() {
    let server = Server::start("", "");
    let t = &server.acme;
    let component = shadow_component();
    let reply = server.put("/v1/tenants/acme/rules/shadow", t, &component);
    assert_eq!(reply.status, 201, "{}", reply.text());
    let shadow = reply.json();
    assert_eq!(shadow["kind"], "component");
    assert_eq!(shadow["uuid"], "5e3566a3-9f19-4ac7-8710-ec5fb09260ed");
    assert_eq!(shadow["sha256"], sha256(&component));
    assert_eq!(shadow["bytes"], component.len());
    let reply = server.put("/v1/tenants/acme/rules/tmp-redir", t, &seed_yaml("tmp_output_redir.yaml"));
    assert_eq!((reply.status, &reply.json()["kind"]), (201, &json!("seed-yaml")), "{}", reply.text());
    let reply = server.put("/v1/tenants/acme/rules/base64", t, &sigma("proc_creation_lnx_base64_decode.yml"));
    assert_eq!((reply.status, &reply.json()["kind"]), (201, &json!("sigma")), "{}", reply.text());

    let list = server.get("/v1/tenants/acme/rules", t).json();
    let names: Vec<(&str, &str)> = list["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["name"].as_str().unwrap(), r["title"].as_str().unwrap()))
        .collect();
    assert_eq!(
        names,
        [
            ("base64", "Decode Base64 Encoded Text"),
            ("shadow", "Suspicious /etc/shadow Usage"),
            ("tmp-redir", "Output redirection to /tmp/ Directory"),
        ]
    );
    assert_eq!(list["not_loaded"], json!([]));

    // Live without a restart: the tenant's engine runs all three.
    assert_eq!(
        server.live_uuids("acme"),
        [
            "5e3566a3-9f19-4ac7-8710-ec5fb09260ed",
            "e2072cab-8c9a-459b-b63c-40ae79e27031",
            "f825ad39-d4b1-41da-91ec-6438d8dc9ace"
        ]
    );
    assert_eq!(server.live_uuids("globex"), Vec::<String>::new());

    // What was uploaded comes back byte for byte.
    let reply = server.get("/v1/tenants/acme/rules/shadow", t);
    assert_eq!((reply.status, reply.body == component), (200, true));
    assert!(reply.headers.contains("content-type: application/wasm"), "{}", reply.headers);
    let reply = server.get("/v1/tenants/acme/rules/tmp-redir", t);
    assert_eq!(reply.body, seed_yaml("tmp_output_redir.yaml"));

    // Dry run: the exact alerts, nothing written.
    let events = [SHADOW_EVENT, BENIGN_EVENT, BASE64_EVENT, TMP_EVENT].join("\n");
    let files_before = server.files();
    let reply = server.post("/v1/tenants/acme/dry-run", t, events.as_bytes());
    assert_eq!(reply.status, 200, "{}", reply.text());
    let run = reply.json();
    assert_eq!((run["events"].as_u64(), &run["faults"], &run["malformed"]), (Some(4), &json!([]), &json!([])));
    let alerts = run["alerts"].as_array().unwrap();
    let fired: Vec<(&str, &str)> =
        alerts.iter().map(|a| (a["uuid"].as_str().unwrap(), a["source"].as_str().unwrap())).collect();
    assert_eq!(
        fired,
        [
            ("5e3566a3-9f19-4ac7-8710-ec5fb09260ed", "dry-run:1"),
            ("e2072cab-8c9a-459b-b63c-40ae79e27031", "dry-run:3"),
            ("f825ad39-d4b1-41da-91ec-6438d8dc9ace", "dry-run:4"),
        ]
    );
    assert_eq!(
        alerts[0],
        json!({
            "rule_name": "Suspicious /etc/shadow Usage",
            "uuid": "5e3566a3-9f19-4ac7-8710-ec5fb09260ed",
            "offending_log": serde_json::from_str::<Value>(SHADOW_EVENT).unwrap(),
            "rule_version": shadow["version"],
            "rule_hash": sha256(&component),
            "severity": "high",
            "tags": ["attack.credential-access", "attack.t1003.008"],
            "source": "dry-run:1",
            "findings": [{
                "message": "command line references /etc/shadow",
                "matched": [{"path": "command_line", "value": "/usr/bin/sudo cat /etc/shadow"}]
            }]
        })
    );
    assert_eq!(alerts[1]["authors"], json!(["Daniil Yugoslavskiy", "oscd.community"]));
    assert_eq!(server.files(), files_before, "a dry run writes nothing");

    // One rule only, and a JSON array works too.
    let array = format!("[{SHADOW_EVENT},{TMP_EVENT}]");
    let run = server.post("/v1/tenants/acme/rules/tmp-redir/dry-run", t, array.as_bytes()).json();
    let fired: Vec<&str> = run["alerts"].as_array().unwrap().iter().map(|a| a["source"].as_str().unwrap()).collect();
    assert_eq!((run["events"].as_u64(), fired), (Some(2), vec!["dry-run:1"]));

    // Malformed input is reported by location, the rest still evaluated.
    let run = server.post("/v1/tenants/acme/dry-run", t, format!("{{oops\n{SHADOW_EVENT}\n").as_bytes()).json();
    assert_eq!(run["alerts"].as_array().unwrap().len(), 1);
    assert!(run["malformed"][0].as_str().unwrap().starts_with("dry-run:1:"), "{run}");

    // Replacing is 200; deleting removes it from the list and the disk.
    let reply = server.put("/v1/tenants/acme/rules/shadow", t, &component);
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(server.delete("/v1/tenants/acme/rules/shadow", t).status, 204);
    let reply = server.get("/v1/tenants/acme/rules/shadow", t);
    assert_eq!((reply.status, reply.json()), (404, json!({"error": "no rule named \"shadow\""})));
    assert_eq!(server.delete("/v1/tenants/acme/rules/shadow", t).status, 404);
    let names: Vec<Value> = server.get("/v1/tenants/acme/rules", t).json()["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].clone())
        .collect();
    assert_eq!(names, [json!("base64"), json!("tmp-redir")]);
    assert_eq!(
        server.files(),
        ["audit.jsonl", "tenants/acme/rules/base64", "tenants/acme/rules/tmp-redir"],
        "globex's directory is empty"
    );
    let run = server.post("/v1/tenants/acme/dry-run", t, SHADOW_EVENT.as_bytes()).json();
    assert_eq!(run["alerts"], json!([]), "the deleted rule no longer runs");
    assert_eq!(
        server.live_uuids("acme"),
        ["e2072cab-8c9a-459b-b63c-40ae79e27031", "f825ad39-d4b1-41da-91ec-6438d8dc9ace"]
    );
}

#[test]
fn a_broken_upload_is_refused_with_a_located_error_and_the_previous_version_stays_live() {
    let mut server = Server::start("", "");
    let t = server.acme.clone();
    let good = yaml_rule("Mine", "11111111-1111-4111-8111-111111111111", "/etc/shadow");
    assert_eq!(server.put("/v1/tenants/acme/rules/mine", &t, &good).status, 201);

    let broken = b"name: Mine\nuuid: 11111111-1111-4111-8111-111111111111\ndetection_logic:\n  command_line: 3\n";
    let reply = server.put("/v1/tenants/acme/rules/mine", &t, broken);
    assert_eq!(reply.status, 422, "{}", reply.text());
    let message = reply.json()["error"].as_str().unwrap().to_owned();
    assert!(message.starts_with("mine.yaml:4:"), "{message}");
    assert!(!message.contains(server.state.path().to_str().unwrap()), "{message}");

    for (body, expected) in [
        (&b"\0asm\x0d\x00\x01\x00garbage"[..], "mine.wasm: invalid component"),
        (&b"\0asm\x01\x00\x00\x00"[..], "mine.wasm: a core WebAssembly module, not a component"),
        (&b"\xff\xfe not text"[..], "mine.yaml"),
    ] {
        let reply = server.put("/v1/tenants/acme/rules/mine", &t, body);
        assert_eq!(reply.status, 422, "{}", reply.text());
        let error = reply.json()["error"].as_str().unwrap().to_owned();
        assert!(error.starts_with(expected), "{error}");
    }

    // A second rule with a uuid already in use is refused as well.
    let clash = yaml_rule("Other", "11111111-1111-4111-8111-111111111111", "/etc/passwd");
    let reply = server.put("/v1/tenants/acme/rules/other", &t, &clash);
    assert_eq!(reply.status, 422, "{}", reply.text());
    assert!(reply.text().contains("both declare uuid 11111111-1111-4111-8111-111111111111"), "{}", reply.text());

    assert_eq!(server.get("/v1/tenants/acme/rules/mine", &t).body, good);
    assert_eq!(server.live_uuids("acme"), ["11111111-1111-4111-8111-111111111111"]);
    let run = server.post("/v1/tenants/acme/dry-run", &t, SHADOW_EVENT.as_bytes()).json();
    assert_eq!(run["alerts"][0]["rule_name"], "Mine", "{run}");
    assert_eq!(server.files(), ["audit.jsonl", "tenants/acme/rules/mine"]);

    // The live rule survives a restart, as stored; an upload a crash left
    // half-written (before its rename) is cleared away.
    let rules_dir = server.state.path().join("tenants/acme/rules");
    std::fs::write(rules_dir.join(".upload-crashed"), b"name: half").unwrap();
    server.restart("", "");
    let list = server.get("/v1/tenants/acme/rules", &t).json();
    assert_eq!(list["rules"].as_array().unwrap().len(), 1);
    assert_eq!(list["rules"][0]["sha256"], sha256(&good));
    assert_eq!(server.files(), ["audit.jsonl", "tenants/acme/rules/mine"]);
}

#[test]
fn a_tenant_cannot_see_or_touch_another_tenants_rules() {
    let server = Server::start("", "");
    let (acme, globex) = (&server.acme, &server.globex);
    let secret = yaml_rule("Acme Secret Detection", "a5a5a5a5-0000-4000-8000-000000000001", "acme-secret-literal");
    assert_eq!(server.put("/v1/tenants/acme/rules/acme-secret", acme, &secret).status, 201);
    let audit_before = server.audit();

    // What globex gets for acme's resources is exactly what it gets for a
    // tenant that does not exist.
    let nobody = server.get("/v1/tenants/nobody/rules", globex);
    assert_eq!((nobody.status, nobody.json()), (404, json!({"error": "not found"})));
    let attempts = [
        server.get("/v1/tenants/acme/rules", globex),
        server.get("/v1/tenants/acme/rules/acme-secret", globex),
        server.get("/v1/tenants/acme/rules/does-not-exist", globex),
        server.put("/v1/tenants/acme/rules/acme-secret", globex, b"name: x\nuuid: y\ndetection_logic: {a: [b]}\n"),
        server.put("/v1/tenants/acme/rules/new-one", globex, &shadow_component()),
        server.delete("/v1/tenants/acme/rules/acme-secret", globex),
        server.post("/v1/tenants/acme/dry-run", globex, r#"{"command_line":"acme-secret-literal"}"#.as_bytes()),
        server.post("/v1/tenants/acme/rules/acme-secret/dry-run", globex, b"{}"),
        server.send("GET", "/v1/tenants/%61cme/rules", Some(globex), b""),
    ];
    for reply in &attempts {
        assert_eq!((reply.status, &reply.body), (404, &nobody.body), "{}", reply.text());
        for leak in ["acme", "secret", "a5a5a5a5", "Detection"] {
            assert!(!reply.text().contains(leak), "{}", reply.text());
        }
    }

    // Acme's rule is untouched, and globex's attempts changed nothing.
    assert_eq!(server.get("/v1/tenants/acme/rules/acme-secret", acme).body, secret);
    let list = server.get("/v1/tenants/acme/rules", acme).json();
    assert_eq!(list["rules"].as_array().unwrap().len(), 1);
    assert_eq!(server.get("/v1/tenants/globex/rules", globex).json()["rules"], json!([]));
    assert_eq!(server.audit(), audit_before);
    assert_eq!(server.files(), ["audit.jsonl", "tenants/acme/rules/acme-secret"]);
}

#[test]
fn a_missing_or_invalid_token_is_401_and_admin_endpoints_refuse_tenant_tokens() {
    let server = Server::start("", "");
    let wrong = dac_serve::generate_token().unwrap().token;
    for path in ["/v1/tenants/acme/rules", "/v1/tenants/acme/rules/x", "/v1/tenants", "/v1/audit"] {
        for reply in [
            server.send("GET", path, None, b""),
            server.send("GET", path, Some(&wrong), b""),
            server.send("GET", path, Some(""), b""),
            server.send("GET", path, Some(&format!("{}x", server.acme)), b""),
        ] {
            assert_eq!((reply.status, reply.json()), (401, json!({"error": "missing or invalid bearer token"})));
            assert!(reply.headers.contains("www-authenticate: bearer"), "{}", reply.headers);
        }
    }
    // Orchestrators' probes need no token and tell nothing of a tenant.
    for (path, answer) in [("/healthz", "ok\n"), ("/readyz", "ready\n")] {
        let reply = server.send("GET", path, None, b"");
        assert_eq!((reply.status, reply.text().as_str()), (200, answer), "{path}");
    }
    // Unauthenticated writes are refused before their body is looked at.
    let reply = server.send("PUT", "/v1/tenants/acme/rules/x", None, &vec![b'a'; 3 << 20]);
    assert_eq!(reply.status, 401);
    let reply = server.send("DELETE", "/v1/tenants/acme/rules/x", Some(&wrong), b"");
    assert_eq!(reply.status, 401);

    for path in ["/v1/tenants", "/v1/audit"] {
        for token in [&server.acme, &server.globex] {
            let reply = server.get(path, token);
            assert_eq!((reply.status, reply.json()), (403, json!({"error": "this endpoint needs the admin token"})));
        }
    }
    let reply = server.get("/v1/tenants/acme/rules", &server.admin);
    assert_eq!(reply.status, 403, "{}", reply.text());
    let reply = server.send("POST", "/v1/tenants/acme/rules/x", Some(&server.acme), b"");
    assert_eq!((reply.status, reply.json()), (405, json!({"error": "method not allowed"})));

    let tenants = server.get("/v1/tenants", &server.admin).json();
    let ids: Vec<&Value> = tenants["tenants"].as_array().unwrap().iter().map(|t| &t["id"]).collect();
    assert_eq!(ids, [&json!("acme"), &json!("globex")]);
    assert_eq!(
        tenants["tenants"][1]["scope"],
        json!({"field": "ingest.tenant", "equals": "globex", "collection": "events"})
    );
    assert!(!tenants.to_string().contains("token"), "token hashes stay on the server: {tenants}");
}

#[test]
fn path_traversal_in_rule_names_is_refused() {
    let server = Server::start("", "");
    let t = &server.acme;
    let rule = yaml_rule("Evil", "e0e0e0e0-0000-4000-8000-000000000001", "x");
    let refused = json!({"error": "a rule name is 1 to 64 of A-Z a-z 0-9 _ -, starting with a letter or digit"});
    for name in [
        "..",
        "%2e%2e",
        "%2E%2E",
        ".",
        "..%2Fx",
        "..%2f..%2f..%2fevil",
        "a%2Fb",
        "a%5Cb",
        ".hidden",
        "-x",
        "a.yaml",
        "%00x",
        "x%00",
        "%2Fetc%2Fpasswd",
        &"a".repeat(65),
    ] {
        for reply in [
            server.put(&format!("/v1/tenants/acme/rules/{name}"), t, &rule),
            server.get(&format!("/v1/tenants/acme/rules/{name}"), t),
            server.delete(&format!("/v1/tenants/acme/rules/{name}"), t),
            server.post(&format!("/v1/tenants/acme/rules/{name}/dry-run"), t, b"{}"),
        ] {
            assert_eq!((reply.status, reply.json()), (400, refused.clone()), "{name}");
        }
    }
    // Separators that split the path match no route at all.
    for path in ["/v1/tenants/acme/rules/a/b", "/v1/tenants/acme/rules/../x", "/v1/tenants/acme/../globex/rules/x"] {
        let reply = server.put(path, t, &rule);
        assert_eq!((reply.status, reply.json()), (404, json!({"error": "not found"})), "{path}");
    }
    // The tenant segment is matched exactly, decoded or not.
    for path in ["/v1/tenants/..%2Facme/rules", "/v1/tenants/acme%2F/rules", "/v1/tenants/./rules"] {
        assert_eq!(server.get(path, t).status, 404, "{path}");
    }
    let files = server.files();
    assert_eq!(files, ["audit.jsonl"], "nothing was written anywhere");
    assert!(std::fs::read_dir(server.state.path().parent().unwrap())
        .unwrap()
        .all(|e| e.unwrap().file_name() != "evil"));
}

#[test]
fn oversized_uploads_are_413_and_the_rule_limits_are_enforced() {
    let server = Server::start("", "max_rules = 2\nmax_rule_bytes = 4096");
    let t = &server.globex;
    // Over the tenant's own size limit (the request itself is acceptable).
    let reply = server.put("/v1/tenants/globex/rules/big", t, &shadow_component());
    assert_eq!(reply.status, 413, "{}", reply.text());
    let message = reply.json()["error"].as_str().unwrap().to_owned();
    assert!(message.ends_with("bytes; this tenant's limit is 4096 bytes"), "{message}");
    // Over the server's request limit (2 MiB): refused while reading.
    let reply = server.put("/v1/tenants/globex/rules/huge", t, &vec![b'#'; 3 << 20]);
    assert_eq!(reply.status, 413, "{}", reply.text());
    let reply = server.post("/v1/tenants/globex/dry-run", t, &vec![b' '; 3 << 20]);
    assert_eq!(reply.status, 413, "{}", reply.text());

    let rule = |n: u32| yaml_rule(&format!("R{n}"), &format!("00000000-0000-4000-8000-00000000000{n}"), "x");
    assert_eq!(server.put("/v1/tenants/globex/rules/r1", t, &rule(1)).status, 201);
    assert_eq!(server.put("/v1/tenants/globex/rules/r2", t, &rule(2)).status, 201);
    let reply = server.put("/v1/tenants/globex/rules/r3", t, &rule(3));
    assert_eq!(
        (reply.status, reply.json()),
        (409, json!({"error": "this tenant already has 2 rules, its limit; delete one first"}))
    );
    // Replacing one is not adding one; after a delete there is room again.
    assert_eq!(server.put("/v1/tenants/globex/rules/r2", t, &rule(3)).status, 200);
    assert_eq!(server.delete("/v1/tenants/globex/rules/r1", t).status, 204);
    assert_eq!(server.put("/v1/tenants/globex/rules/r3", t, &rule(4)).status, 201);
    // Acme's limits are its own.
    let acme = &server.acme;
    assert_eq!(server.put("/v1/tenants/acme/rules/shadow", acme, &shadow_component()).status, 201);
}

#[test]
fn every_change_is_audited_exactly() {
    let server = Server::start("", "max_rule_bytes = 4096");
    let (acme, globex) = (&server.acme, &server.globex);
    let v1 = yaml_rule("A", "aaaaaaaa-0000-4000-8000-000000000001", "x");
    let v2 = yaml_rule("A", "aaaaaaaa-0000-4000-8000-000000000001", "y");
    let broken = b"name: A\n".to_vec();
    let big = vec![b'#'; 5000];
    server.put("/v1/tenants/acme/rules/a", acme, &v1);
    server.put("/v1/tenants/acme/rules/a", acme, &v2);
    server.put("/v1/tenants/acme/rules/a", acme, &broken);
    server.put("/v1/tenants/globex/rules/b", globex, &big);
    server.put("/v1/tenants/acme/rules/..", acme, &v1);
    server.delete("/v1/tenants/acme/rules/a", acme);
    server.delete("/v1/tenants/acme/rules/a", acme);
    // Neither reads, nor refusals before authorization, are changes.
    server.get("/v1/tenants/acme/rules/a", acme);
    server.put("/v1/tenants/acme/rules/a", globex, &v1);
    server.send("PUT", "/v1/tenants/acme/rules/a", None, &v1);

    let broken_reason = server.audit()[2]["reason"].as_str().unwrap().to_owned();
    assert!(broken_reason.starts_with("a.yaml:"), "{broken_reason}");
    let expected = json!([
        {"who": "tenant:acme", "action": "rule.put", "tenant": "acme", "rule": "a", "sha256": sha256(&v1), "result": "created"},
        {"who": "tenant:acme", "action": "rule.put", "tenant": "acme", "rule": "a", "sha256": sha256(&v2), "result": "replaced"},
        {"who": "tenant:acme", "action": "rule.put", "tenant": "acme", "rule": "a", "sha256": sha256(&broken), "result": "refused", "reason": broken_reason},
        {"who": "tenant:globex", "action": "rule.put", "tenant": "globex", "rule": "b", "sha256": sha256(&big), "result": "refused",
         "reason": "the rule is 5000 bytes; this tenant's limit is 4096 bytes"},
        {"who": "tenant:acme", "action": "rule.put", "tenant": "acme", "rule": "..", "sha256": sha256(&v1), "result": "refused",
         "reason": "a rule name is 1 to 64 of A-Z a-z 0-9 _ -, starting with a letter or digit"},
        {"who": "tenant:acme", "action": "rule.delete", "tenant": "acme", "rule": "a", "sha256": sha256(&v2), "result": "deleted"},
        {"who": "tenant:acme", "action": "rule.delete", "tenant": "acme", "rule": "a", "result": "refused", "reason": "no rule named \"a\""},
    ]);
    assert_eq!(Value::Array(server.audit()), expected);

    // The log on disk is the same, one JSON object per line.
    let text = std::fs::read_to_string(server.state.path().join("audit.jsonl")).unwrap();
    let on_disk: Vec<Value> = text
        .lines()
        .map(|line| {
            let mut entry: Value = serde_json::from_str(line).unwrap();
            entry.as_object_mut().unwrap().remove("time");
            entry
        })
        .collect();
    assert_eq!(Value::Array(on_disk), expected);
}

#[test]
fn components_are_checked_for_their_world_and_run_under_their_tenants_limits() {
    let server = Server::start("", "fuel = 100000000\ndeadline_ms = 0");
    let read = |rule: &str| std::fs::read(dac_tests::hostile_rule(rule)).unwrap();
    let reply = server.put("/v1/tenants/acme/rules/other", &server.acme, &read("other-world"));
    assert_eq!(reply.status, 422, "{}", reply.text());
    let error = reply.json()["error"].as_str().unwrap().to_owned();
    assert!(error.starts_with("other.wasm: not a dac rule: "), "{error}");
    assert_eq!(server.get("/v1/tenants/acme/rules", &server.acme).json()["rules"], json!([]));

    // Globex's rules run on fuel, not a deadline: the loop is stopped by
    // its fuel on every event, and the rule beside it still alerts.
    let t = &server.globex;
    assert_eq!(server.put("/v1/tenants/globex/rules/loop", t, &read("infinite-loop")).status, 201);
    assert_eq!(server.put("/v1/tenants/globex/rules/shadow", t, &shadow_component()).status, 201);
    let events = [SHADOW_EVENT, BENIGN_EVENT].join("\n");
    let run = server.post("/v1/tenants/globex/dry-run", t, events.as_bytes()).json();
    let fired: Vec<&Value> = run["alerts"].as_array().unwrap().iter().map(|a| &a["uuid"]).collect();
    assert_eq!(fired, [&json!("5e3566a3-9f19-4ac7-8710-ec5fb09260ed")]);
    let faults = run["faults"].as_array().unwrap();
    assert_eq!(faults.len(), 2, "{run}");
    for (line, fault) in faults.iter().enumerate() {
        let fault = fault.as_str().unwrap();
        assert!(fault.starts_with(&format!("dry-run:{}: rule loop.wasm (", line + 1)), "{fault}");
        assert!(fault.contains("ran out of fuel (100000000 units)"), "{fault}");
    }
}

#[test]
fn tenants_sharing_an_engine_configuration_keep_their_own_deadlines() {
    // Both tenants have deadlines, so they share one wasmtime engine and
    // clock; each evaluation still gets its own tenant's budget.
    let server = Server::start("", "deadline_ms = 20");
    let looping = std::fs::read(dac_tests::hostile_rule("infinite-loop")).unwrap();
    for (tenant, token, deadline) in [("acme", &server.acme, "200ms"), ("globex", &server.globex, "20ms")] {
        let reply = server.put(&format!("/v1/tenants/{tenant}/rules/loop"), token, &looping);
        assert_eq!(reply.status, 201, "{}", reply.text());
        let run = server.post(&format!("/v1/tenants/{tenant}/dry-run"), token, BENIGN_EVENT.as_bytes()).json();
        let fault = run["faults"][0].as_str().unwrap_or_default().to_owned();
        assert!(fault.contains(&format!("exceeded its deadline of {deadline}")), "{tenant}: {run}");
    }
}

#[test]
fn hostile_declarative_rules_are_refused_with_the_budget_named_and_the_server_stays_up() {
    // Each of these aborted the whole server (a stack overflow in the thread
    // that parsed it) or grew its memory by gigabytes, from a few KB.
    let server = Server::start("", "[tenant.limits.declarative]\nmax_values = 10");
    let sigma = |detection: String| {
        format!(
            "title: t\nid: 11111111-2222-4333-8444-555555555555\n\
             logsource:\n  product: linux\n  category: process_creation\ndetection:\n{detection}"
        )
        .into_bytes()
    };
    // Block sequences 10,000 deep in 20 KB: `- - - … x`.
    let nested = format!("title: t\ndetection:\n  {}x\n", "- ".repeat(10_000));
    let mut laughs = String::from("a: &a [\"lol\"]\n");
    for w in ["a", "b", "c", "d", "e", "f", "g", "h", "i", "j"].windows(2) {
        laughs.push_str(&format!("{}: &{} [{}]\n", w[1], w[1], vec![format!("*{}", w[0]); 10].join(",")));
    }
    let parens = format!("{}selection{}", "(".repeat(3000), ")".repeat(3000));
    let named = vec!["selection"; 2000].join(" or ");
    let big_search: Vec<String> = (0..1000).map(|i| format!("      - v{i}")).collect();
    let attacks: Vec<(&str, Vec<u8>, &str)> = vec![
        ("nested", nested.into_bytes(), "max_yaml_depth"),
        ("laughs", laughs.into_bytes(), "max_yaml_nodes"),
        ("parens", sigma(format!("  selection:\n    Image: /bin/sh\n  condition: {parens}\n")), "max_condition_depth"),
        (
            "named",
            sigma(format!("  selection:\n    Image:\n{}\n  condition: {named}\n", big_search.join("\n"))),
            "max_expression_nodes",
        ),
        (
            "regex",
            sigma("  selection:\n    CommandLine|re: '(\\w{100}){100}'\n  condition: selection\n".into()),
            "max_regex_bytes",
        ),
    ];
    for (name, body, budget) in &attacks {
        let reply = server.put(&format!("/v1/tenants/acme/rules/{name}"), &server.acme, body);
        assert_eq!(reply.status, 422, "{name}: {}", reply.text());
        let message = reply.json()["error"].as_str().unwrap().to_owned();
        assert!(message.starts_with(&format!("{name}.yaml:")), "{message}");
        assert!(message.contains(&format!("over the {budget} budget of")), "{name}: {message}");
    }
    // A tenant's own budget, from the tenants file: globex may have 10 values.
    let eleven: Vec<String> = (0..11).map(|i| format!("      - v{i}")).collect();
    let rule = sigma(format!("  selection:\n    Image:\n{}\n  condition: selection\n", eleven.join("\n")));
    let reply = server.put("/v1/tenants/globex/rules/eleven", &server.globex, &rule);
    assert_eq!(reply.status, 422, "{}", reply.text());
    assert!(reply.text().contains("over the max_values budget of 10"), "{}", reply.text());
    assert_eq!(server.put("/v1/tenants/acme/rules/eleven", &server.acme, &rule).status, 201);
    // Still serving, nothing stored for the refused uploads.
    assert_eq!(server.get("/v1/tenants/acme/rules", &server.acme).json()["rules"].as_array().unwrap().len(), 1);
}

#[test]
fn dry_runs_are_bounded_in_events_time_and_output_and_survive_deep_events() {
    let server = Server::start(
        "",
        "max_dry_run_events = 20\nmax_dry_run_output_bytes = 20000\n\
         [tenant.limits.declarative]\nmax_yaml_depth = 32",
    );
    let t = &server.globex;
    assert_eq!(server.put("/v1/tenants/globex/rules/shadow", t, &shadow_component()).status, 201);
    let shadow_events = |n: usize| vec![SHADOW_EVENT; n].join("\n").into_bytes();
    // Within the limits: every alert comes back.
    let reply = server.post("/v1/tenants/globex/dry-run", t, &shadow_events(5));
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json()["alerts"].as_array().unwrap().len(), 5);
    // Too many events.
    let reply = server.post("/v1/tenants/globex/dry-run", t, &shadow_events(21));
    assert_eq!(reply.status, 413, "{}", reply.text());
    assert_eq!(
        reply.json()["error"],
        "the dry run stopped: more than 20 events; this tenant's max_dry_run_events; post fewer events"
    );
    // Too much output: each alert carries its event, here 2 KB of it.
    let padded = SHADOW_EVENT.replacen('{', &format!("{{\"pad\":\"{}\",", "x".repeat(2000)), 1);
    let reply = server.post("/v1/tenants/globex/dry-run", t, vec![padded.as_str(); 15].join("\n").as_bytes());
    assert_eq!(reply.status, 413, "{}", reply.text());
    assert!(reply.text().contains("max_dry_run_output_bytes"), "{}", reply.text());

    // An event nested as deep as the reader takes (127 levels inside the
    // document) is carried by its alert one level deeper: that answer used
    // to be parsed again and panic the request.
    let deep = format!("{}1{}", "[".repeat(126), "]".repeat(126));
    let event = SHADOW_EVENT.replacen('{', &format!("{{\"deep\":{deep},"), 1);
    let reply = server.post("/v1/tenants/globex/dry-run", t, event.as_bytes());
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert!(reply.text().contains(&deep), "{}", reply.text());
    // (What the old code did with each alert, failing here:)
    assert!(serde_json::from_str::<Value>(&reply.text()).is_err(), "the answer is not deeper than the parser's limit");

    // No time at all: stopped before the first event.
    let server = Server::start("", "max_dry_run_ms = 0");
    let t = &server.globex;
    assert_eq!(server.put("/v1/tenants/globex/rules/shadow", t, &shadow_component()).status, 201);
    let reply = server.post("/v1/tenants/globex/dry-run", t, &shadow_events(1));
    assert_eq!(reply.status, 413, "{}", reply.text());
    assert!(reply.text().contains("longer than 0 ms; this tenant's max_dry_run_ms"), "{}", reply.text());
}

/// Reads what the server sends until it closes the connection (or 10 s).
fn read_until_closed(stream: &mut std::net::TcpStream) -> (Vec<u8>, std::time::Duration) {
    use std::io::Read;
    let started = std::time::Instant::now();
    stream.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
    let mut out = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        match stream.read(&mut buffer) {
            Ok(0) | Err(_) => return (out, started.elapsed()),
            Ok(n) => out.extend_from_slice(&buffer[..n]),
        }
    }
}

#[test]
fn idle_half_sent_and_slow_connections_cannot_take_the_server_from_others() {
    use std::io::Write;
    use std::net::TcpStream;
    use std::time::Duration;
    let server = Server::start_with_http(
        "max_connections = 40\nheader_timeout_ms = 1000\nrequest_timeout_ms = 1500",
        "max_concurrent_requests = 2",
    );
    let address = server.addr;
    // 60 connections that send nothing, without any token: 40 are held
    // (until their header timeout), 20 closed at once.
    let mut idle: Vec<TcpStream> = (0..60).map(|_| TcpStream::connect(address).unwrap()).collect();
    std::thread::sleep(Duration::from_millis(300));
    let mut closed_at_once = 0;
    for stream in &mut idle {
        stream.set_nonblocking(true).unwrap();
        let mut byte = [0u8; 1];
        if matches!(std::io::Read::read(stream, &mut byte), Ok(0)) {
            closed_at_once += 1;
        }
        stream.set_nonblocking(false).unwrap();
    }
    assert_eq!(closed_at_once, 20);
    // The held ones are closed after the header timeout, without an answer.
    for stream in idle.iter_mut().take(5) {
        let (answer, _) = read_until_closed(stream);
        assert!(answer.is_empty() || String::from_utf8_lossy(&answer).contains("408"), "{answer:?}");
    }
    drop(idle);
    std::thread::sleep(Duration::from_millis(1200));
    // The server answers again; the refusals are counted.
    let metrics = server.get("/metrics", &server.admin);
    assert_eq!(metrics.status, 200);
    assert!(metrics.text().contains("dac_http_connections_refused_total 20"), "{}", metrics.text());

    // Half-sent headers are closed at the header timeout.
    let mut half = TcpStream::connect(address).unwrap();
    half.write_all(b"GET /v1/tenants HTTP/1.1\r\nHost: x\r\n").unwrap();
    let (_, waited) = read_until_closed(&mut half);
    assert!(waited < Duration::from_secs(5), "{waited:?}");

    // A body announced over the limit is refused before it is sent.
    let mut big = TcpStream::connect(address).unwrap();
    let head = format!(
        "PUT /v1/tenants/acme/rules/big HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Length: 3000000\r\n\r\n",
        server.acme
    );
    big.write_all(head.as_bytes()).unwrap();
    let (answer, waited) = read_until_closed(&mut big);
    assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 413"), "{}", String::from_utf8_lossy(&answer));
    assert!(waited < Duration::from_secs(1), "{waited:?}");

    // Slow bodies: answered 408 at the request timeout; while two of them
    // hold globex's two request slots, globex gets 429 and acme is served.
    let slow = |tenant_token: &str, tenant: &str| {
        let mut stream = TcpStream::connect(address).unwrap();
        let head = format!(
            "PUT /v1/tenants/{tenant}/rules/slow HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {tenant_token}\r\n\
             Content-Length: 1000\r\n\r\nname: slow"
        );
        stream.write_all(head.as_bytes()).unwrap();
        stream
    };
    let mut slow_ones = [slow(&server.globex, "globex"), slow(&server.globex, "globex")];
    std::thread::sleep(Duration::from_millis(200));
    let reply = server.get("/v1/tenants/globex/rules", &server.globex);
    assert_eq!(reply.status, 429, "{}", reply.text());
    assert!(reply.text().contains("2 requests in progress"), "{}", reply.text());
    let started = std::time::Instant::now();
    assert_eq!(server.get("/v1/tenants/acme/rules", &server.acme).status, 200);
    assert!(started.elapsed() < Duration::from_millis(500), "{:?}", started.elapsed());
    for stream in &mut slow_ones {
        let (answer, waited) = read_until_closed(stream);
        let answer = String::from_utf8_lossy(&answer).into_owned();
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
        assert!(waited < Duration::from_secs(3), "{waited:?}");
    }
    assert_eq!(server.get("/v1/tenants/globex/rules", &server.globex).status, 200);
}

#[test]
fn refused_uploads_leave_nothing_in_the_compiled_code_cache() {
    let server = Server::start("", "max_rules = 2");
    let t = &server.globex;
    let cached = || -> usize {
        std::fs::read_dir(server.state.path().join("cache"))
            .map(|dir| dir.filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "cwasm")).count())
            .unwrap_or(0)
    };
    assert_eq!(server.put("/v1/tenants/globex/rules/one", t, &seed_yaml("tmp_output_redir.yaml")).status, 201);
    assert_eq!(
        server.put("/v1/tenants/globex/rules/two", t, &sigma("proc_creation_lnx_base64_decode.yml")).status,
        201
    );
    // Over the rule count: refused before compiling.
    assert_eq!(server.put("/v1/tenants/globex/rules/shadow", t, &shadow_component()).status, 409);
    assert_eq!(cached(), 0);
    assert_eq!(server.delete("/v1/tenants/globex/rules/two", t).status, 204);
    assert_eq!(server.put("/v1/tenants/globex/rules/shadow", t, &shadow_component()).status, 201);
    assert_eq!(cached(), 1);
    // Other bytes (a custom section more), the same uuid: compiled, then
    // refused for the clash, and its compiled code removed again; the live
    // rule's stays.
    assert_eq!(server.delete("/v1/tenants/globex/rules/one", t).status, 204);
    let mut other = shadow_component();
    other.extend_from_slice(&[0, 6, 5, b'e', b'x', b't', b'r', b'a']);
    let reply = server.put("/v1/tenants/globex/rules/clash", t, &other);
    assert_eq!(reply.status, 422, "{}", reply.text());
    assert!(reply.text().contains("both declare uuid"), "{}", reply.text());
    assert_eq!(cached(), 1);
}

/// The shadow rule with `functions` slow-to-compile functions appended
/// (~1 MB and ~0.4 s of CPU each).
fn slow_to_compile_shadow(functions: u64) -> Vec<u8> {
    dac_fuzz_targets::with_core_instance(&shadow_component(), &dac_tests::slow_to_compile_module(functions))
}

#[test]
fn an_upload_over_its_tenants_compile_budget_is_stopped_with_422_and_leaves_nothing() {
    let server = Server::start("", "[tenant.limits.compile]\nmax_cpu_ms = 100");
    let t = &server.globex;
    let reply = server.put("/v1/tenants/globex/rules/slow", t, &slow_to_compile_shadow(1));
    assert_eq!(reply.status, 422, "{}", reply.text());
    assert_eq!(
        reply.json()["error"],
        "slow.wasm: compiling took over 100 ms of CPU, the compile limit max_cpu_ms; it was stopped"
    );
    assert!(
        !server.files().iter().any(|file| file.contains("slow") || file.starts_with("cache/")),
        "{:?}",
        server.files()
    );
    // acme, under the default budget, compiles the same upload.
    assert_eq!(server.put("/v1/tenants/acme/rules/slow", &server.acme, &slow_to_compile_shadow(1)).status, 201);
}

#[test]
fn an_upload_whose_client_goes_away_stops_compiling_and_is_audited_not_stored() {
    use std::io::Write;
    let server = Server::start("", "max_rule_bytes = 2000000");
    let slow = slow_to_compile_shadow(2);
    let mut stream = std::net::TcpStream::connect(server.addr).unwrap();
    let head = format!(
        "PUT /v1/tenants/globex/rules/slow HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Length: {}\r\n\r\n",
        server.globex,
        slow.len()
    );
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(&slow).unwrap();
    // The compiler's arguments name its directory, in the state directory.
    let needle = server.state.path().to_string_lossy().into_owned();
    let started = std::time::Instant::now();
    let compiler = loop {
        if let Some(&pid) = dac_tests::processes_mentioning(&needle).first() {
            break pid;
        }
        assert!(started.elapsed() < std::time::Duration::from_secs(60), "no compiler started");
        std::thread::sleep(std::time::Duration::from_millis(2));
    };
    drop(stream);
    // Compiling takes ~0.8 s of CPU; the server notices the client gone
    // and stops it well before (or the upload would be stored).
    while std::path::Path::new(&format!("/proc/{compiler}")).exists() {
        assert!(started.elapsed() < std::time::Duration::from_secs(60), "the compiler {compiler} still runs");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let audited = || server.audit().into_iter().find(|entry| entry["rule"] == "slow");
    while audited().is_none() {
        assert!(started.elapsed() < std::time::Duration::from_secs(60), "the upload was not audited");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let entry = audited().unwrap();
    assert_eq!(entry["result"], "refused", "{entry}");
    assert_eq!(
        entry["reason"], "cancelled while the rule compiled: the client went away or the server is stopping",
        "{entry}"
    );
    assert_eq!(server.get("/v1/tenants/globex/rules/slow", &server.globex).status, 404);
    assert!(
        !server.files().iter().any(|file| file.contains("slow") || file.starts_with("cache/")),
        "{:?}",
        server.files()
    );
}

#[test]
fn stopping_the_server_stops_the_compilations_in_progress_with_503() {
    let server = Server::start("", "max_rule_bytes = 2000000");
    let started = std::time::Instant::now();
    std::thread::scope(|scope| {
        let upload =
            scope.spawn(|| server.put("/v1/tenants/globex/rules/slow", &server.globex, &slow_to_compile_shadow(2)));
        let needle = server.state.path().to_string_lossy().into_owned();
        while dac_tests::processes_mentioning(&needle).is_empty() {
            assert!(!upload.is_finished(), "the upload ended before its compiler was seen");
            assert!(started.elapsed() < std::time::Duration::from_secs(60), "no compiler started");
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        server.service().stop_work();
        let reply = upload.join().unwrap();
        assert_eq!(reply.status, 503, "{}", reply.text());
        assert_eq!(
            reply.json()["error"],
            "cancelled while the rule compiled: the client went away or the server is stopping"
        );
    });
}
