//! `dac serve`'s rule administration over real HTTP against the real
//! server (started in this process on an ephemeral port): disabling and
//! enabling rules, the tenants file's `enabled_rules`, and the audit log's
//! pages. Requests are written by hand (`dac_tests::serve::send`), so
//! exactly those bytes are sent.

mod in_process;

use dac_tests::serve::{hex, yaml_rule};
use in_process::{sha256, without_times, Server, BASE64_EVENT, SHADOW_EVENT};
use serde_json::{json, Value};

impl Server {
    /// The uuids of the alerts a dry run of `events` raises for `tenant`.
    fn dry_run_uuids(&self, tenant: &str, token: &str, events: &[&str]) -> Vec<String> {
        let reply = self.post(&format!("/v1/tenants/{tenant}/dry-run"), token, events.join("\n").as_bytes());
        assert_eq!(reply.status, 200, "{}", reply.text());
        let run = reply.json();
        let mut uuids: Vec<String> =
            run["alerts"].as_array().unwrap().iter().map(|a| a["uuid"].as_str().unwrap().to_owned()).collect();
        uuids.sort();
        uuids
    }

    fn rule_names(&self, tenant: &str, token: &str, list: &str) -> Vec<String> {
        let reply = self.get(&format!("/v1/tenants/{tenant}/rules"), token);
        assert_eq!(reply.status, 200, "{}", reply.text());
        reply.json()[list].as_array().unwrap().iter().map(|r| r["name"].as_str().unwrap().to_owned()).collect()
    }
}

const SHADOW_UUID: &str = "aaaaaaaa-0000-4000-8000-000000000001";
const BASE64_UUID: &str = "bbbbbbbb-0000-4000-8000-000000000002";

fn shadow_rule() -> Vec<u8> {
    yaml_rule("Shadow", SHADOW_UUID, "/etc/shadow")
}

fn base64_rule() -> Vec<u8> {
    yaml_rule("Base64", BASE64_UUID, "base64 -d")
}

#[test]
fn a_disabled_rule_stays_stored_runs_no_more_and_stays_disabled_after_a_restart() {
    let mut server = Server::start("", "");
    let t = server.acme.clone();
    let events = [SHADOW_EVENT, BASE64_EVENT];
    assert_eq!(server.put("/v1/tenants/acme/rules/shadow", &t, &shadow_rule()).status, 201);
    assert_eq!(server.put("/v1/tenants/acme/rules/base64", &t, &base64_rule()).status, 201);
    assert_eq!(server.dry_run_uuids("acme", &t, &events), [SHADOW_UUID, BASE64_UUID]);

    let reply = server.post("/v1/tenants/acme/rules/shadow/disable", &t, b"");
    assert_eq!(reply.status, 200, "{}", reply.text());
    let mut disabled = reply.json();
    let time = disabled.as_object_mut().unwrap().remove("time").unwrap();
    assert!(time.as_str().unwrap().ends_with('Z'), "{time}");
    assert_eq!(
        disabled,
        json!({"name": "shadow", "uuid": SHADOW_UUID, "sha256": sha256(&shadow_rule()), "who": "tenant:acme",
               "reason": "disabled through the API"})
    );
    // Out of the live engine (what the stream evaluates) and of dry runs,
    // listed as disabled, its file and a marker on disk.
    assert_eq!(server.live_uuids("acme"), [BASE64_UUID]);
    assert_eq!(server.dry_run_uuids("acme", &t, &events), [BASE64_UUID]);
    assert_eq!(server.rule_names("acme", &t, "rules"), ["base64"]);
    let list = server.get("/v1/tenants/acme/rules", &t).json();
    assert_eq!(list["disabled"][0]["name"], "shadow");
    assert_eq!(list["disabled"][0]["time"], time);
    assert_eq!(
        server.files(),
        ["audit.jsonl", "tenants/acme/disabled/shadow", "tenants/acme/rules/base64", "tenants/acme/rules/shadow"]
    );
    // Disabling again changes nothing; a dry run of it alone says why not.
    assert_eq!(server.post("/v1/tenants/acme/rules/shadow/disable", &t, b"").status, 200);
    let reply = server.post("/v1/tenants/acme/rules/shadow/dry-run", &t, SHADOW_EVENT.as_bytes());
    assert_eq!(
        (reply.status, reply.json()),
        (409, json!({"error": "rule \"shadow\" is disabled; enable it to dry-run it"}))
    );

    // A new version of a disabled rule is checked, stored, and stays
    // disabled; a broken one is refused as ever.
    let v2 = yaml_rule("Shadow", SHADOW_UUID, "shadow");
    let reply = server.put("/v1/tenants/acme/rules/shadow", &t, &v2);
    assert_eq!(reply.status, 200, "{}", reply.text());
    let put = reply.json();
    assert_eq!((&put["sha256"], &put["disabled"]["reason"]), (&json!(sha256(&v2)), &json!("disabled through the API")));
    assert_eq!(put["disabled"]["time"], time, "still the disable's who and when");
    assert_eq!(server.put("/v1/tenants/acme/rules/shadow", &t, b"name: x\n").status, 422);
    assert_eq!(server.live_uuids("acme"), [BASE64_UUID]);
    assert_eq!(server.get("/v1/tenants/acme/rules", &t).json()["disabled"][0]["sha256"], sha256(&v2));

    // A restart keeps it out.
    server.restart("", "");
    assert_eq!(server.live_uuids("acme"), [BASE64_UUID]);
    assert_eq!(server.dry_run_uuids("acme", &t, &events), [BASE64_UUID]);
    let list = server.get("/v1/tenants/acme/rules", &t).json();
    assert_eq!(
        list["disabled"],
        json!([{"name": "shadow", "uuid": SHADOW_UUID, "sha256": sha256(&v2), "who": "tenant:acme", "time": time,
                "reason": "disabled through the API"}])
    );

    // Enabling puts it back (the version uploaded while disabled).
    let reply = server.post("/v1/tenants/acme/rules/shadow/enable", &t, b"");
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!((&reply.json()["name"], &reply.json()["sha256"]), (&json!("shadow"), &json!(sha256(&v2))));
    assert_eq!(server.live_uuids("acme"), [SHADOW_UUID, BASE64_UUID]);
    assert_eq!(server.dry_run_uuids("acme", &t, &events), [SHADOW_UUID, BASE64_UUID]);
    assert_eq!(server.get("/v1/tenants/acme/rules", &t).json()["disabled"], json!([]));
    assert_eq!(server.post("/v1/tenants/acme/rules/shadow/enable", &t, b"").status, 200);
    assert_eq!(server.files(), ["audit.jsonl", "tenants/acme/rules/base64", "tenants/acme/rules/shadow"]);

    // Deleting a disabled rule removes its marker too.
    assert_eq!(server.post("/v1/tenants/acme/rules/base64/disable", &t, b"").status, 200);
    assert_eq!(server.delete("/v1/tenants/acme/rules/base64", &t).status, 204);
    assert_eq!(server.files(), ["audit.jsonl", "tenants/acme/rules/shadow"]);
    assert_eq!(server.get("/v1/tenants/acme/rules", &t).json()["disabled"], json!([]));

    // Unknown and invalid names.
    let reply = server.post("/v1/tenants/acme/rules/nope/enable", &t, b"");
    assert_eq!((reply.status, reply.json()), (404, json!({"error": "no rule named \"nope\""})));
    let reply = server.post("/v1/tenants/acme/rules/%2e%2e/disable", &t, b"");
    assert_eq!(reply.status, 400, "{}", reply.text());

    let name_error = "a rule name is 1 to 64 of A-Z a-z 0-9 _ -, starting with a letter or digit";
    let expected = json!([
        {"who": "tenant:acme", "action": "rule.put", "tenant": "acme", "rule": "shadow", "sha256": sha256(&shadow_rule()), "result": "created"},
        {"who": "tenant:acme", "action": "rule.put", "tenant": "acme", "rule": "base64", "sha256": sha256(&base64_rule()), "result": "created"},
        {"who": "tenant:acme", "action": "rule.disable", "tenant": "acme", "rule": "shadow", "sha256": sha256(&shadow_rule()), "result": "disabled"},
        {"who": "tenant:acme", "action": "rule.disable", "tenant": "acme", "rule": "shadow", "sha256": sha256(&shadow_rule()), "result": "unchanged"},
        {"who": "tenant:acme", "action": "rule.put", "tenant": "acme", "rule": "shadow", "sha256": sha256(&v2), "result": "replaced"},
        {"who": "tenant:acme", "action": "rule.put", "tenant": "acme", "rule": "shadow", "sha256": sha256(b"name: x\n"), "result": "refused",
         "reason": server.audit()[5]["reason"]},
        {"who": "tenant:acme", "action": "rule.enable", "tenant": "acme", "rule": "shadow", "sha256": sha256(&v2), "result": "enabled"},
        {"who": "tenant:acme", "action": "rule.enable", "tenant": "acme", "rule": "shadow", "sha256": sha256(&v2), "result": "unchanged"},
        {"who": "tenant:acme", "action": "rule.disable", "tenant": "acme", "rule": "base64", "sha256": sha256(&base64_rule()), "result": "disabled"},
        {"who": "tenant:acme", "action": "rule.delete", "tenant": "acme", "rule": "base64", "result": "deleted"},
        {"who": "tenant:acme", "action": "rule.enable", "tenant": "acme", "rule": "nope", "result": "refused", "reason": "no rule named \"nope\""},
        {"who": "tenant:acme", "action": "rule.disable", "tenant": "acme", "rule": "..", "result": "refused", "reason": name_error},
    ]);
    assert_eq!(Value::Array(server.audit()), expected);
}

#[test]
fn another_tenants_token_cannot_disable_or_enable_and_learns_nothing() {
    let server = Server::start("", "");
    let (acme, globex) = (&server.acme, &server.globex);
    let secret = yaml_rule("Acme Secret Detection", "a5a5a5a5-0000-4000-8000-000000000001", "acme-secret-literal");
    assert_eq!(server.put("/v1/tenants/acme/rules/acme-secret", acme, &secret).status, 201);
    assert_eq!(server.put("/v1/tenants/acme/rules/off", acme, &shadow_rule()).status, 201);
    assert_eq!(server.post("/v1/tenants/acme/rules/off/disable", acme, b"").status, 200);
    let audit_before = server.audit();
    let nobody = server.post("/v1/tenants/nobody/rules/x/disable", globex, b"");
    assert_eq!((nobody.status, nobody.json()), (404, json!({"error": "not found"})));
    for reply in [
        server.post("/v1/tenants/acme/rules/acme-secret/disable", globex, b""),
        server.post("/v1/tenants/acme/rules/off/enable", globex, b""),
        server.post("/v1/tenants/acme/rules/does-not-exist/enable", globex, b""),
        server.post("/v1/tenants/%61cme/rules/acme-secret/disable", globex, b""),
        server.get("/v1/tenants/acme/audit", globex),
    ] {
        assert_eq!((reply.status, &reply.body), (404, &nobody.body), "{}", reply.text());
    }
    // The admin token does not manage a tenant's rules.
    assert_eq!(server.post("/v1/tenants/acme/rules/off/enable", &server.admin, b"").status, 403);
    assert_eq!(server.live_uuids("acme"), ["a5a5a5a5-0000-4000-8000-000000000001"]);
    assert_eq!(server.rule_names("acme", acme, "disabled"), ["off"]);
    assert_eq!(server.audit(), audit_before);
}

#[test]
fn enabled_rules_in_the_tenants_file_decide_which_rules_run() {
    let mut server = Server::start("enabled_rules = ['shadow']", "");
    let t = server.acme.clone();
    let events = [SHADOW_EVENT, BASE64_EVENT];
    assert_eq!(server.put("/v1/tenants/acme/rules/shadow", &t, &shadow_rule()).status, 201);
    // Stored and checked, but the file does not name it: it stays out.
    let reply = server.put("/v1/tenants/acme/rules/base64", &t, &base64_rule());
    assert_eq!(reply.status, 201, "{}", reply.text());
    assert_eq!(
        reply.json()["disabled"],
        json!({"name": "base64", "uuid": BASE64_UUID, "sha256": sha256(&base64_rule()),
               "reason": "not in enabled_rules of the tenants file"})
    );
    assert_eq!(server.live_uuids("acme"), [SHADOW_UUID]);
    assert_eq!(server.dry_run_uuids("acme", &t, &events), [SHADOW_UUID]);
    // The file governs: enabling through the API is refused, and says why.
    let reply = server.post("/v1/tenants/acme/rules/base64/enable", &t, b"");
    assert_eq!(
        (reply.status, reply.json()),
        (
            409,
            json!({"error": "rule \"base64\" is not in enabled_rules of the tenants file, which governs this tenant's rules: the tenants file must name it for it to run"})
        )
    );
    // Within the file's rules, the API still disables.
    assert_eq!(server.post("/v1/tenants/acme/rules/shadow/disable", &t, b"").status, 200);
    assert_eq!(server.live_uuids("acme"), Vec::<String>::new());
    // Other tenants are not restricted.
    assert_eq!(server.put("/v1/tenants/globex/rules/base64", &server.globex, &base64_rule()).status, 201);
    assert_eq!(server.live_uuids("globex"), [BASE64_UUID]);

    // At start, the rules the file leaves out are listed (their content
    // hash known, their uuid not: they are not loaded).
    server.restart("enabled_rules = ['shadow']", "");
    let list = server.get("/v1/tenants/acme/rules", &t).json();
    assert_eq!(
        list["disabled"],
        json!([
            {"name": "base64", "sha256": sha256(&base64_rule()), "reason": "not in enabled_rules of the tenants file"},
            {"name": "shadow", "uuid": SHADOW_UUID, "sha256": sha256(&shadow_rule()), "who": "tenant:acme",
             "time": list["disabled"][1]["time"], "reason": "disabled through the API"},
        ])
    );
    // Without the key every stored rule runs but those the API disabled.
    server.restart("", "");
    assert_eq!(server.live_uuids("acme"), [BASE64_UUID]);
    assert_eq!(server.rule_names("acme", &t, "disabled"), ["shadow"]);
    let tenants = server.get("/v1/tenants", &server.admin).json();
    assert_eq!(tenants["tenants"][0]["disabled"], 1);
}

#[test]
fn a_quarantined_rule_is_released_by_an_upload_not_by_enable() {
    let server = Server::start("", "");
    let t = &server.acme;
    assert_eq!(server.put("/v1/tenants/acme/rules/shadow", t, &shadow_rule()).status, 201);
    assert_eq!(server.put("/v1/tenants/acme/rules/base64", t, &base64_rule()).status, 201);
    // What the event stream does after the threshold's faults.
    let tenant = server.service().tenant("acme").unwrap().clone();
    let taken = tenant.record_faults(&[dac_serve::RuleFault::new("shadow", "trapped")], 1);
    assert_eq!(taken.len(), 1);
    assert_eq!(server.live_uuids("acme"), [BASE64_UUID]);
    for action in ["enable", "disable"] {
        let reply = server.post(&format!("/v1/tenants/acme/rules/shadow/{action}"), t, b"");
        assert_eq!(reply.status, 409, "{}", reply.text());
        let message = reply.json()["error"].as_str().unwrap().to_owned();
        assert!(
            message.starts_with("rule \"shadow\" is quarantined") && message.contains("upload it again"),
            "{message}"
        );
    }
    assert_eq!(server.rule_names("acme", t, "quarantined"), ["shadow"]);
    assert_eq!(server.rule_names("acme", t, "disabled"), Vec::<String>::new());
    assert_eq!(server.put("/v1/tenants/acme/rules/shadow", t, &shadow_rule()).status, 200);
    assert_eq!(server.live_uuids("acme"), [SHADOW_UUID, BASE64_UUID]);
}

#[test]
fn the_audit_log_is_read_in_pages_by_the_admin_and_by_each_tenant_for_itself() {
    let server = Server::start("", "");
    let (acme, globex, admin) = (&server.acme, &server.globex, &server.admin);
    // Seven changes: acme 1, 2, 4, 5, 7; globex 3, 6.
    let rule = |n: u32| yaml_rule(&format!("R{n}"), &format!("00000000-0000-4000-8000-00000000000{n}"), "x");
    assert_eq!(server.put("/v1/tenants/acme/rules/r1", acme, &rule(1)).status, 201);
    assert_eq!(server.put("/v1/tenants/acme/rules/r2", acme, &rule(2)).status, 201);
    assert_eq!(server.put("/v1/tenants/globex/rules/g1", globex, &rule(3)).status, 201);
    assert_eq!(server.post("/v1/tenants/acme/rules/r1/disable", acme, b"").status, 200);
    assert_eq!(server.delete("/v1/tenants/acme/rules/r2", acme).status, 204);
    assert_eq!(server.delete("/v1/tenants/globex/rules/g1", globex).status, 204);
    assert_eq!(server.post("/v1/tenants/acme/rules/r1/enable", acme, b"").status, 200);

    // Pages of three: every entry once, in order, numbered by line.
    let everything = server.get("/v1/audit", admin).json();
    assert_eq!(everything["next"], Value::Null);
    let all = everything["entries"].as_array().unwrap().clone();
    let seqs: Vec<u64> = all.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, [1, 2, 3, 4, 5, 6, 7]);
    let mut paged = Vec::new();
    let mut cursors = Vec::new();
    let mut after = 0;
    loop {
        let reply = server.get(&format!("/v1/audit?after={after}&limit=3"), admin);
        assert_eq!(reply.status, 200, "{}", reply.text());
        let page = reply.json();
        paged.extend(page["entries"].as_array().unwrap().iter().cloned());
        cursors.push(page["next"].clone());
        match page["next"].as_u64() {
            Some(next) => after = next,
            None => break,
        }
    }
    assert_eq!(cursors, [json!(3), json!(6), Value::Null]);
    assert_eq!(paged, all);
    // A page that ends exactly at the last entry has no next.
    let page = server.get("/v1/audit?after=4&limit=3", admin).json();
    assert_eq!((page["entries"].as_array().unwrap().len(), &page["next"]), (3, &Value::Null));
    let page = server.get("/v1/audit?after=7", admin).json();
    assert_eq!(page, json!({"entries": [], "next": null}));

    // One tenant's entries, by the admin and by the tenant itself.
    let page = server.get("/v1/audit?tenant=acme&limit=2", admin).json();
    let seqs: Vec<&Value> = page["entries"].as_array().unwrap().iter().map(|e| &e["seq"]).collect();
    assert_eq!((seqs, &page["next"]), (vec![&json!(1), &json!(2)], &json!(2)));
    let page = server.get("/v1/audit?tenant=acme&after=2&limit=2", admin).json();
    let seqs: Vec<&Value> = page["entries"].as_array().unwrap().iter().map(|e| &e["seq"]).collect();
    assert_eq!((seqs, &page["next"]), (vec![&json!(4), &json!(5)], &json!(5)));
    let own = server.get("/v1/tenants/acme/audit?after=0&limit=1000", acme).json();
    let acme_entries: Vec<Value> = all.iter().filter(|e| e["tenant"] == "acme").cloned().collect();
    assert_eq!(own, json!({"entries": acme_entries, "next": null}));
    assert!(!own.to_string().contains("globex"), "{own}");
    let own = server.get("/v1/tenants/globex/audit?limit=1", globex).json();
    assert_eq!(
        (&own["entries"][0]["seq"], &own["entries"][0]["rule"], &own["next"]),
        (&json!(3), &json!("g1"), &json!(3))
    );
    let own = server.get("/v1/tenants/globex/audit?after=3", globex).json();
    assert_eq!((&own["entries"][0]["seq"], &own["next"]), (&json!(6), &Value::Null));
    assert_eq!(
        without_times(own["entries"].as_array().unwrap()),
        [json!({"who": "tenant:globex", "action": "rule.delete", "tenant": "globex", "rule": "g1",
                "sha256": sha256(&rule(3)), "result": "deleted"})]
    );
    assert_eq!(server.get("/v1/audit?tenant=initech", admin).json(), json!({"entries": [], "next": null}));

    // Bad parameters: 400, saying what is expected.
    for (query, message) in [
        ("limit=0", "limit is a number from 1 to 1000"),
        ("limit=1001", "limit is a number from 1 to 1000"),
        ("limit=ten", "limit is a number from 1 to 1000"),
        ("after=-1", "after is a sequence number (seq of an entry, or next of a page)"),
        ("after=", "after is a sequence number (seq of an entry, or next of a page)"),
        ("after=1&after=2", "after is given twice"),
        ("tenant=..%2Facme", "tenant is a tenant id"),
        ("page=2", "the parameters are after, limit and tenant"),
    ] {
        let reply = server.get(&format!("/v1/audit?{query}"), admin);
        assert_eq!((reply.status, reply.json()), (400, json!({"error": message})), "{query}");
    }
    // A tenant reads its own trail only: naming a tenant is not a parameter.
    for query in ["tenant=globex", "tenant=acme"] {
        let reply = server.get(&format!("/v1/tenants/acme/audit?{query}"), acme);
        assert_eq!(
            (reply.status, reply.json()),
            (400, json!({"error": "the parameters are after and limit"})),
            "{query}"
        );
    }
    let reply = server.get("/v1/tenants/acme/audit?limit=0", acme);
    assert_eq!((reply.status, reply.json()), (400, json!({"error": "limit is a number from 1 to 1000"})));
    // The admin's token does not read a tenant's path; tenants' tokens not
    // the whole log.
    assert_eq!(server.get("/v1/tenants/acme/audit", admin).status, 403);
    assert_eq!(server.get("/v1/audit?tenant=acme", acme).status, 403);
    let reply = server.get("/v1/tenants/globex/audit", acme);
    assert_eq!((reply.status, reply.json()), (404, json!({"error": "not found"})));
}

#[test]
fn the_admin_reloads_the_tenants_file_and_tenants_are_added_changed_and_removed_without_a_restart() {
    let mut server = Server::start("", "");
    let admin = server.admin.clone();
    let reply = server.post("/v1/tenants/reload", &admin, b"");
    assert_eq!(
        (reply.status, reply.json()),
        (409, json!({"error": "this server was not started from a tenants file"}))
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tenants.toml");
    std::fs::write(&file, server.config("", "")).unwrap();
    server.service().set_config_file(file.clone());
    let reply = server.post("/v1/tenants/reload", &admin, b"");
    assert_eq!((reply.status, reply.json()), (200, json!({"changes": []})), "the same file changes nothing");

    let (acme, globex) = (server.acme.clone(), server.globex.clone());
    assert_eq!(server.put("/v1/tenants/acme/rules/shadow", &acme, &shadow_rule()).status, 201);
    assert_eq!(server.put("/v1/tenants/acme/rules/base64", &acme, &base64_rule()).status, 201);
    assert_eq!(server.put("/v1/tenants/globex/rules/g", &globex, &shadow_rule()).status, 201);
    let old_acme = server.service().tenant("acme").unwrap();
    let audit_before = server.audit().len();

    // acme: a new token and enabled_rules; initech added; globex removed.
    let [acme2, initech] = [(); 2].map(|()| dac_serve::generate_token().unwrap().token);
    let hash = |t: &str| hex(&dac_serve::hash_token(t));
    let acme_table = format!(
        "[[tenant]]\nid = 'acme'\ntoken_sha256 = '{}'\nalert_collection = 'alerts_acme'\n\
         scope = {{ collection = 'events_acme' }}\nenabled_rules = ['base64']\n[tenant.limits]\nmax_rule_bytes = 1048576\n",
        hash(&acme2)
    );
    let initech_table = format!(
        "[[tenant]]\nid = 'initech'\ntoken_sha256 = '{}'\nalert_collection = 'alerts_initech'\n\
         scope = {{ collection = 'events_initech' }}\n[tenant.limits]\nmax_rule_bytes = 1048576\n",
        hash(&initech)
    );
    let header = format!("admin_token_sha256 = '{}'\nmax_request_bytes = 2097152\n", hash(&admin));
    std::fs::write(&file, format!("{header}{acme_table}{initech_table}")).unwrap();
    let reply = server.post("/v1/tenants/reload", &admin, b"");
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(
        reply.json(),
        json!({"changes": [
            {"action": "tenant.update", "tenant": "acme", "keys": "token_sha256, enabled_rules"},
            {"action": "tenant.add", "tenant": "initech"},
            {"action": "tenant.remove", "tenant": "globex"},
        ]})
    );
    // Applied: tokens, enabled_rules (acme's engine rebuilt from its
    // directory), the new tenant's directory, the removed tenant's token.
    assert_eq!(server.get("/v1/tenants/acme/rules", &acme).status, 401);
    assert_eq!(server.get("/v1/tenants/globex/rules", &globex).status, 401);
    assert_eq!(server.live_uuids("acme"), [BASE64_UUID]);
    assert_eq!(server.rule_names("acme", &acme2, "disabled"), ["shadow"]);
    assert_eq!(server.put("/v1/tenants/initech/rules/i", &initech, &shadow_rule()).status, 201);
    assert_eq!(server.live_uuids("initech"), [SHADOW_UUID]);
    let tenants = server.get("/v1/tenants", &admin).json();
    let ids: Vec<&Value> = tenants["tenants"].as_array().unwrap().iter().map(|t| &t["id"]).collect();
    assert_eq!(ids, [&json!("acme"), &json!("initech")]);
    assert!(server.files().contains(&"tenants/globex/rules/g".to_owned()), "a removed tenant's rules stay");
    // A change that reached acme's replaced instance is refused, not lost.
    let err = old_acme.put("late", &base64_rule(), &dac_engine::Cancel::never()).err().unwrap();
    assert_eq!(err.to_string(), "the tenants file was reloaded while this request ran; send it again");
    let audit = server.audit();
    assert_eq!(
        audit[audit_before..audit_before + 3],
        [
            json!({"who": "admin", "action": "tenant.update", "tenant": "acme", "result": "updated",
                   "reason": "token_sha256, enabled_rules"}),
            json!({"who": "admin", "action": "tenant.add", "tenant": "initech", "result": "added"}),
            json!({"who": "admin", "action": "tenant.remove", "tenant": "globex", "result": "removed"}),
        ]
    );

    // A file that does not validate is refused whole, with the located
    // error (the file named without its directory), and changes nothing.
    let before = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, format!("{before}[[tenant]]\nid = 'Bad Id'\n")).unwrap();
    let reply = server.post("/v1/tenants/reload", &admin, b"");
    assert_eq!(reply.status, 422, "{}", reply.text());
    let message = reply.json()["error"].as_str().unwrap().to_owned();
    assert!(message.starts_with("tenants.toml: "), "{message}");
    assert!(!message.contains(dir.path().to_str().unwrap()), "{message}");
    std::fs::write(&file, before.replace("max_request_bytes = 2097152", "max_request_bytes = 4194304")).unwrap();
    let reply = server.post("/v1/tenants/reload", &admin, b"");
    assert_eq!(
        (reply.status, reply.json()),
        (409, json!({"error": "max_request_bytes cannot change while the server runs; restart it to apply the file"}))
    );
    assert_eq!(server.get("/v1/tenants/initech/rules", &initech).status, 200);
    assert_eq!(server.live_uuids("acme"), [BASE64_UUID]);
    let audit = server.audit();
    assert_eq!(
        // After initech's upload, the refused reload.
        (&audit[audit_before + 4]["action"], &audit[audit_before + 4]["result"], &audit[audit_before + 4]["reason"]),
        (&json!("tenants.reload"), &json!("refused"), &json!(message))
    );
    // Only the admin reloads.
    assert_eq!(server.post("/v1/tenants/reload", &initech, b"").status, 403);

    // globex back: its rules, still on disk, run again.
    std::fs::write(&file, server.config("", "")).unwrap();
    let reply = server.post("/v1/tenants/reload", &admin, b"");
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(server.live_uuids("globex"), [SHADOW_UUID]);
    assert_eq!(server.live_uuids("acme"), [SHADOW_UUID, BASE64_UUID]);
    assert_eq!(server.get("/v1/tenants/acme/rules", &acme).status, 200);
    assert_eq!(server.get("/v1/tenants/initech/rules", &initech).status, 401);
    server.restart("", "");
}
