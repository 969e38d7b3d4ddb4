//! A `dac serve` started in the test's own process on an ephemeral port,
//! with no event stream, for the API tests (`serve.rs`, `serve_admin.rs`):
//! the real router and service, reached over real HTTP. Two tenants:
//! `acme` (its own collection) and `globex` (by the `ingest.tenant` field).

// Each test file that includes this module uses part of it.
#![allow(dead_code)]

use dac_serve::{ServeConfig, Service};
use dac_tests::serve::{hex, send, state_files, Reply};
use serde_json::Value;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

pub const SHADOW_EVENT: &str =
    r#"{"hostname":"web-01","path":"/usr/bin/sudo","command_line":"/usr/bin/sudo cat /etc/shadow"}"#;
pub const BASE64_EVENT: &str =
    r#"{"hostname":"web-01","path":"/usr/bin/base64","command_line":"/usr/bin/base64 -d payload"}"#;

pub struct Server {
    pub addr: SocketAddr,
    pub state: tempfile::TempDir,
    pub admin: String,
    pub acme: String,
    pub globex: String,
    /// The tenants file's `[http]` table, when the test sets one.
    http: String,
    runtime: Option<tokio::runtime::Runtime>,
    service: Option<Arc<Service>>,
}

impl Server {
    /// Starts on a new state directory with fresh tokens. `acme_extra` is
    /// added to acme's table (TOML lines, such as `enabled_rules = […]`),
    /// `globex_limits` to globex's `[tenant.limits]`.
    pub fn start(acme_extra: &str, globex_limits: &str) -> Server {
        Server::start_full("", acme_extra, globex_limits)
    }

    /// As [`Server::start`], with `http` as the tenants file's `[http]` table.
    pub fn start_with_http(http: &str, globex_limits: &str) -> Server {
        Server::start_full(http, "", globex_limits)
    }

    fn start_full(http: &str, acme_extra: &str, globex_limits: &str) -> Server {
        let [admin, acme, globex] = [(); 3].map(|()| dac_serve::generate_token().unwrap().token);
        let state = tempfile::tempdir().unwrap();
        let mut server = Server {
            addr: "127.0.0.1:0".parse().unwrap(),
            state,
            admin,
            acme,
            globex,
            http: http.to_owned(),
            runtime: None,
            service: None,
        };
        server.listen(&server.config(acme_extra, globex_limits));
        server
    }

    /// The tenants file `start` would use, with these tokens.
    pub fn config(&self, acme_extra: &str, globex_limits: &str) -> String {
        let hash = |t: &str| hex(&dac_serve::hash_token(t));
        // Under the server's 2 MiB request limit, unless the test sets its own.
        let globex_limits = if globex_limits.contains("max_rule_bytes") {
            globex_limits.to_owned()
        } else {
            format!("max_rule_bytes = 1048576\n{globex_limits}")
        };
        let http = if self.http.is_empty() { String::new() } else { format!("[http]\n{}\n", self.http) };
        format!(
            "admin_token_sha256 = '{}'\nmax_request_bytes = 2097152\n{http}\
             [[tenant]]\nid = 'acme'\ntoken_sha256 = '{}'\nalert_collection = 'alerts_acme'\n\
             scope = {{ collection = 'events_acme' }}\n{acme_extra}\n\
             [tenant.limits]\nmax_rule_bytes = 1048576\n\
             [[tenant]]\nid = 'globex'\ntoken_sha256 = '{}'\nalert_collection = 'alerts_globex'\n\
             scope = {{ field = 'ingest.tenant', equals = 'globex' }}\n[tenant.limits]\n{globex_limits}\n",
            hash(&self.admin),
            hash(&self.acme),
            hash(&self.globex)
        )
    }

    fn listen(&mut self, config: &str) {
        let config = ServeConfig::parse(Path::new("tenants.toml"), config).unwrap();
        let service = Arc::new(
            Service::open(config, self.state.path(), Default::default(), dac_tests::child_compiler()).unwrap(),
        );
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
        self.addr = listener.local_addr().unwrap();
        runtime.spawn(dac_serve::serve(service.clone(), listener, std::future::pending()));
        self.runtime = Some(runtime);
        self.service = Some(service);
    }

    /// Stops the server and starts another on the same state directory and
    /// tokens, with a tenants file as [`Server::start`] takes it.
    pub fn restart(&mut self, acme_extra: &str, globex_limits: &str) {
        self.runtime.take().unwrap().shutdown_background();
        let config = self.config(acme_extra, globex_limits);
        self.listen(&config);
    }

    pub fn service(&self) -> &Arc<Service> {
        self.service.as_ref().unwrap()
    }

    /// One request on a fresh connection; `path` is sent byte for byte.
    pub fn send(&self, method: &str, path: &str, token: Option<&str>, body: &[u8]) -> Reply {
        send(&self.addr.to_string(), method, path, token, body)
    }

    pub fn get(&self, path: &str, token: &str) -> Reply {
        self.send("GET", path, Some(token), b"")
    }
    pub fn put(&self, path: &str, token: &str, body: &[u8]) -> Reply {
        self.send("PUT", path, Some(token), body)
    }
    pub fn delete(&self, path: &str, token: &str) -> Reply {
        self.send("DELETE", path, Some(token), b"")
    }
    pub fn post(&self, path: &str, token: &str, body: &[u8]) -> Reply {
        self.send("POST", path, Some(token), body)
    }

    /// The uuids the tenant's live engine runs (what the event stream
    /// will evaluate), sorted.
    pub fn live_uuids(&self, tenant: &str) -> Vec<String> {
        let tenant = self.service().tenant(tenant).unwrap();
        let mut uuids: Vec<String> =
            tenant.with_engine(|engine| engine.infos().iter().map(|info| info.uuid.clone()).collect());
        uuids.sort();
        uuids
    }

    /// Every file under the state directory, relative, sorted.
    pub fn files(&self) -> Vec<String> {
        state_files(self.state.path())
    }

    /// The whole audit log as the admin pages through it, without `time`
    /// and `seq` (see [`without_times`]).
    pub fn audit(&self) -> Vec<Value> {
        let reply = self.get("/v1/audit?limit=1000", &self.admin);
        assert_eq!(reply.status, 200, "{}", reply.text());
        without_times(reply.json()["entries"].as_array().unwrap())
    }
}

/// Audit entries without their `time` (checked to be RFC 3339 UTC) and
/// `seq` (checked to be a number; `serve_admin.rs` tests the paging).
pub fn without_times(entries: &[Value]) -> Vec<Value> {
    entries
        .iter()
        .map(|entry| {
            let mut entry = entry.clone();
            let fields = entry.as_object_mut().unwrap();
            let time = fields.remove("time").unwrap();
            assert!(time.as_str().unwrap().ends_with('Z'), "{time}");
            assert!(fields.remove("seq").unwrap().is_u64());
            entry
        })
        .collect()
}

/// A content hash as the API and the audit log write it.
pub fn sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    format!("sha256:{}", hex(&sha2::Sha256::digest(bytes)))
}
