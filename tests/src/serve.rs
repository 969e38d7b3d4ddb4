//! What the `dac serve` tests share: a bare HTTP/1.1 client, the real
//! `dac serve` as a child process, and a few rule and state helpers.
//!
//! Requests are written by hand on a TCP socket rather than through an
//! HTTP client crate: clients normalize `..` and `%2e%2e` out of paths, and
//! the traversal tests must send exactly those bytes.

use serde_json::Value;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// An HTTP answer.
pub struct Reply {
    pub status: u16,
    /// The head, lower-cased.
    pub headers: String,
    /// The body, de-chunked.
    pub body: Vec<u8>,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|err| panic!("{err}: {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One request to `address` (`HOST:PORT`) on a fresh connection; `path` is
/// sent byte for byte, `token` as a bearer token.
pub fn send(address: &str, method: &str, path: &str, token: Option<&str>, body: &[u8]) -> Reply {
    let mut stream = TcpStream::connect(address).unwrap_or_else(|err| panic!("connecting to {address}: {err}"));
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if let Some(token) = token {
        head.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).unwrap();
    // The server may answer (401, 413) before it has read all of a body and
    // then close: write on another thread and read at once, so the answer
    // is taken before the connection is reset.
    let mut writer = stream.try_clone().unwrap();
    let body = body.to_vec();
    let writing = std::thread::spawn(move || {
        let _ = writer.write_all(&body);
    });
    let mut raw = Vec::new();
    let mut buffer = [0u8; 64 << 10];
    loop {
        match stream.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(n) => raw.extend_from_slice(&buffer[..n]),
        }
    }
    let _ = stream.shutdown(std::net::Shutdown::Both);
    writing.join().unwrap();
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("a response head");
    let headers = String::from_utf8(raw[..split].to_vec()).unwrap().to_ascii_lowercase();
    let mut body = raw[split + 4..].to_vec();
    if headers.contains("transfer-encoding: chunked") {
        body = unchunk(&body);
    }
    let status = headers[9..12].parse().unwrap();
    Reply { status, headers, body }
}

fn unchunk(mut body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let end = body.windows(2).position(|w| w == b"\r\n").unwrap();
        let size = usize::from_str_radix(std::str::from_utf8(&body[..end]).unwrap().trim(), 16).unwrap();
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&body[end + 2..end + 2 + size]);
        body = &body[end + 4 + size..];
    }
}

/// The real `dac serve`, reading MongoDB, as a child process (killed when
/// dropped).
pub struct ServeProcess {
    child: Child,
    log: PathBuf,
    address: String,
}

impl ServeProcess {
    /// Starts `dac serve --tenants TENANTS --state-dir STATE` on an ephemeral
    /// port against `mongo_uri` and database `db`, logging at info level
    /// into `log`, and waits until it answers.
    pub fn start(config: &Path, state: &Path, log: PathBuf, mongo_uri: &str, db: &str) -> ServeProcess {
        ServeProcess::start_with(config, state, log, mongo_uri, db, &[])
    }

    /// [`ServeProcess::start`] with `extra` arguments.
    pub fn start_with(
        config: &Path,
        state: &Path,
        log: PathBuf,
        mongo_uri: &str,
        db: &str,
        extra: &[&str],
    ) -> ServeProcess {
        let child = Command::new(crate::dac())
            .args(["serve", "--listen", "127.0.0.1:0", "--mongodb-uri", mongo_uri, "--db", db])
            .args(extra)
            .arg("--tenants")
            .arg(config)
            .arg("--state-dir")
            .arg(state)
            .env("DAC_CACHE_DIR", crate::repo_root().join("target/dac-test-cache"))
            .env("DAC_LOG", "info")
            .env_remove("MONGODB_URI")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start dac serve");
        let mut serve = ServeProcess { child, log, address: String::new() };
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let text = serve.log();
            if let Some((_, rest)) = text.split_once(" tenants on http://") {
                serve.address = rest.split_once("/v1/").unwrap().0.to_owned();
                return serve;
            }
            assert!(serve.child.try_wait().unwrap().is_none(), "dac serve exited:\n{text}");
            assert!(Instant::now() < deadline, "dac serve did not start:\n{text}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// What it logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM; it must exit 0. Returns its log.
    pub fn stop(mut self) -> String {
        let sent = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().unwrap();
        assert!(sent.success());
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "dac serve exited {status} on SIGTERM:\n{}", self.log());
                return self.log();
            }
            assert!(Instant::now() < deadline, "dac serve did not stop on SIGTERM:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL: no chance to write anything.
    pub fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// A request with `token` (empty: none); its answer.
    pub fn send(&self, method: &str, path: &str, token: &str, body: &[u8]) -> Reply {
        send(&self.address, method, path, Some(token).filter(|token| !token.is_empty()), body)
    }

    /// A request whose answer is JSON: (status, body).
    pub fn request(&self, method: &str, path: &str, token: &str, body: &[u8]) -> (u16, Value) {
        let reply = self.send(method, path, token, body);
        (reply.status, reply.json())
    }

    pub fn get(&self, path: &str, token: &str) -> (u16, Value) {
        self.request("GET", path, token, b"")
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every file under `dir`, relative to it, sorted; the compiled-code cache
/// (`cache/`) left out.
pub fn state_files(dir: &Path) -> Vec<String> {
    fn walk(dir: &Path, root: &Path, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, root, out);
            } else {
                out.push(path.strip_prefix(root).unwrap().display().to_string());
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.retain(|file| !file.starts_with("cache/"));
    out.sort();
    out
}

/// A seed-format YAML rule of our own, unique by uuid and title, firing on
/// `literal` in the command line.
pub fn yaml_rule(title: &str, uuid: &str, literal: &str) -> Vec<u8> {
    format!("name: {title}\nuuid: {uuid}\ndetection_logic:\n  command_line:\n    - {literal}\nseverity: low\n")
        .into_bytes()
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
