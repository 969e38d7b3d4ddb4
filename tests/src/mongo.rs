//! A MongoDB server for tests that need one (change streams above all).
//!
//! With `DAC_TEST_MONGODB_URI` set, tests use that deployment — in CI a
//! real replica set (MongoDB ≥ 6.0) — and nothing is started. Otherwise
//! each [`TestMongo`] runs its own `nx-27017` 0.8.1: a wire-compatible,
//! SQLite-backed server from PyPI, installed once per machine into
//! `<repo>/target/nx-27017-venv` and patched by `tests/mongo/patch_nx27017.py`
//! for the defects that break the official Rust driver's change streams
//! (see `tests/mongo/README.md`).
//!
//! This module only manages processes; tests bring their own driver.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::repo_root;

/// Set to a MongoDB connection string to test against that deployment.
pub const URI_VAR: &str = "DAC_TEST_MONGODB_URI";
/// Optionally names the Python (≥ 3.10) that creates the venv.
pub const PYTHON_VAR: &str = "DAC_TEST_PYTHON";

/// What the venv holds; part of its ready stamp.
const PINNED: [&str; 3] = ["nx-27017==0.8.1", "neosqlite==1.17.2", "pymongo"];
/// How long a server gets to print its `Listening on` line.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a stopped server gets to exit before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// A MongoDB deployment for one test: external (`DAC_TEST_MONGODB_URI`)
/// or an `nx-27017` process owned by this value and killed on drop.
pub struct TestMongo {
    uri: String,
    server: Option<Server>,
}

/// An `nx-27017` process and the files it uses.
struct Server {
    port: u16,
    /// `--db` argument: `memory` or a file path.
    db: String,
    /// Rows of change history kept per collection (patch 6's window).
    history_rows: Option<u32>,
    /// Holds the pid file, the log file and the console output.
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl TestMongo {
    /// The deployment of `DAC_TEST_MONGODB_URI`, or else a fresh in-memory
    /// `nx-27017` on a free port.
    pub fn start() -> TestMongo {
        match external_uri() {
            Some(uri) => TestMongo { uri, server: None },
            None => TestMongo::spawn("memory".to_owned()),
        }
    }

    /// Like [`TestMongo::start`], but a started `nx-27017` keeps its data in
    /// the SQLite file `path`, so it survives [`TestMongo::restart`].
    pub fn start_with_db_file(path: &Path) -> TestMongo {
        match external_uri() {
            Some(uri) => TestMongo { uri, server: None },
            None => {
                let db = path.to_str().unwrap_or_else(|| panic!("database path {path:?} is not UTF-8"));
                assert!(db != "memory", "`memory` names nx-27017's in-memory database, not a file");
                TestMongo::spawn(db.to_owned())
            }
        }
    }

    /// A fresh in-memory `nx-27017` that keeps only the newest `rows`
    /// change events per collection, so a test can make a resume token
    /// fall out of the history (`ChangeStreamHistoryLost`, code 286).
    /// `None` with `DAC_TEST_MONGODB_URI`: a real deployment's oplog cannot
    /// be shrunk by a test.
    pub fn start_with_history_window(rows: u32) -> Option<TestMongo> {
        match external_uri() {
            Some(_) => None,
            None => Some(TestMongo::spawn_with("memory".to_owned(), Some(rows))),
        }
    }

    fn spawn(db: String) -> TestMongo {
        TestMongo::spawn_with(db, None)
    }

    fn spawn_with(db: String, history_rows: Option<u32>) -> TestMongo {
        let venv = venv();
        let dir = tempfile::Builder::new().prefix("nx-27017-").tempdir().expect("create a temporary directory");
        let mut server = Server { port: 0, db, history_rows, dir, child: None };
        // A free port can be taken between probing and binding: retry then.
        for attempt in 1..=5 {
            server.port = free_port();
            match server.run(venv) {
                Ok(()) => break,
                Err(failure) if attempt < 5 && failure.contains("address already in use") => continue,
                Err(failure) => panic!("{failure}"),
            }
        }
        TestMongo { uri: format!("mongodb://127.0.0.1:{}/?directConnection=true", server.port), server: Some(server) }
    }

    /// The connection string.
    pub fn uri(&self) -> &str {
        &self.uri
    }

    /// Whether this is the deployment of `DAC_TEST_MONGODB_URI` rather
    /// than an `nx-27017` of this process.
    pub fn is_external(&self) -> bool {
        self.server.is_none()
    }

    /// The process id of the started server; `None` when external.
    pub fn server_pid(&self) -> Option<u32> {
        self.server.as_ref().and_then(|server| server.child.as_ref()).map(Child::id)
    }

    /// Stops the started server (gracefully, killed after a timeout) and
    /// starts it again on the same port with the same database. Panics on
    /// an external deployment, which tests cannot restart.
    pub fn restart(&mut self) {
        let server = self.server.as_mut().unwrap_or_else(|| {
            panic!("cannot restart the external deployment of {URI_VAR}; check TestMongo::is_external() first")
        });
        server.stop(true);
        if let Err(failure) = server.run(venv()) {
            panic!("restarting nx-27017: {failure}");
        }
    }

    /// A database name no other test (or earlier run) uses.
    pub fn unique_db_name() -> String {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        format!("dac_test_{}_{}_{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed), nanos % 1_000_000_000)
    }
}

impl Drop for TestMongo {
    fn drop(&mut self) {
        if let Some(server) = &mut self.server {
            server.stop(false);
        }
    }
}

impl Server {
    fn log_path(&self) -> PathBuf {
        self.dir.path().join("nx-27017.log")
    }

    fn console_path(&self) -> PathBuf {
        self.dir.path().join("console.log")
    }

    /// Starts the server and waits until it listens; on failure, the
    /// process is reaped and the error carries the log's tail.
    fn run(&mut self, venv: &Path) -> Result<(), String> {
        let console = OpenOptions::new().create(true).append(true).open(self.console_path()).expect("open console log");
        let mut command = Command::new(venv.join("bin/nx-27017"));
        command
            .args(["--db", &self.db, "--host", "127.0.0.1", "--port", &self.port.to_string()])
            .arg("--log-file")
            .arg(self.log_path())
            .arg("--pid-file")
            .arg(self.dir.path().join("nx-27017.pid"))
            .env("PYTHONUNBUFFERED", "1")
            .env("NX_DAC_HISTORY_ROWS", self.history_rows.unwrap_or(100_000).to_string())
            .stdin(Stdio::null())
            .stdout(console.try_clone().expect("clone console log"))
            .stderr(console)
            // Its own process group, so that stopping it reaches any child.
            .process_group(0);
        let child = command.spawn().map_err(|err| format!("cannot run {command:?}: {err}"))?;
        let pid = child.id();
        self.child = Some(child);
        let ready = format!("[{pid}] - Listening on 127.0.0.1:{}", self.port);
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            // The log file is shared by every start of this server: only a
            // line from this pid counts.
            if fs::read_to_string(self.log_path()).is_ok_and(|log| log.contains(&ready)) {
                return Ok(());
            }
            let exited = self.child.as_mut().and_then(|child| child.try_wait().ok().flatten());
            if exited.is_some() || Instant::now() > deadline {
                let why = match exited {
                    Some(status) => format!("exited ({status}) before listening"),
                    None => format!("did not log {ready:?} within {READY_TIMEOUT:?}"),
                };
                self.stop(false);
                return Err(format!("nx-27017 (pid {pid}, {command:?}) {why}; last log lines:\n{}", self.log_tail()));
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Ends the process group and reaps the server: SIGTERM first when
    /// `graceful`, SIGKILL otherwise or after [`STOP_TIMEOUT`].
    fn stop(&mut self, graceful: bool) {
        let Some(mut child) = self.child.take() else { return };
        let group = format!("-{}", child.id());
        if graceful {
            signal("TERM", &group);
            let deadline = Instant::now() + STOP_TIMEOUT;
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    signal("KILL", &group); // Any straggler of its group.
                    return;
                }
                thread::sleep(Duration::from_millis(20));
            }
        }
        signal("KILL", &group);
        let _ = child.kill();
        let _ = child.wait();
    }

    fn log_tail(&self) -> String {
        let mut tail = String::new();
        for path in [self.log_path(), self.console_path()] {
            let text = fs::read_to_string(&path).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            tail.push_str(&format!("--- {} ---\n", path.display()));
            for line in &lines[lines.len().saturating_sub(25)..] {
                tail.push_str(line);
                tail.push('\n');
            }
        }
        tail
    }
}

/// Sends a signal to a process group, ignoring failures: it may be gone.
fn signal(name: &str, group: &str) {
    let _ = Command::new("kill")
        .args([&format!("-{name}"), "--", group])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

fn external_uri() -> Option<String> {
    std::env::var(URI_VAR).ok().filter(|uri| !uri.trim().is_empty())
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port on 127.0.0.1");
    listener.local_addr().expect("local address of a bound socket").port()
}

/// The venv holding the patched `nx-27017`, created once per machine.
///
/// Test processes running at once serialize on a lock file; the venv is
/// ready when its stamp — the pins and the patch script — matches, and is
/// rebuilt from scratch when either changed.
fn venv() -> &'static Path {
    static VENV: OnceLock<PathBuf> = OnceLock::new();
    VENV.get_or_init(|| {
        let target = repo_root().join("target");
        let venv = target.join("nx-27017-venv");
        let patcher = repo_root().join("tests/mongo/patch_nx27017.py");
        let script = fs::read_to_string(&patcher).unwrap_or_else(|err| panic!("cannot read {patcher:?}: {err}"));
        let wanted = format!("{}\n{script}", PINNED.join(" "));
        let stamp = venv.join(".dac-ready");
        if fs::read_to_string(&stamp).is_ok_and(|found| found == wanted) {
            return venv;
        }

        fs::create_dir_all(&target).expect("create target/");
        let lock = File::create(target.join("nx-27017-venv.lock")).expect("create the venv lock file");
        lock.lock().expect("lock the venv lock file");
        // Another process may have finished the venv while we waited.
        if fs::read_to_string(&stamp).is_ok_and(|found| found == wanted) {
            return venv;
        }
        let started = Instant::now();
        let python = python();
        if venv.exists() {
            fs::remove_dir_all(&venv).unwrap_or_else(|err| panic!("cannot remove the stale venv {venv:?}: {err}"));
        }
        checked(
            Command::new(&python).args(["-m", "venv"]).arg(&venv),
            "creating the nx-27017 venv failed; on Debian/Ubuntu install the venv module \
             (apt-get install python3-venv), or set DAC_TEST_MONGODB_URI",
        );
        checked(
            Command::new(venv.join("bin/python"))
                .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check"])
                .args(PINNED),
            "installing nx-27017 with pip failed (is PyPI reachable? is pip available in the venv?); \
             or set DAC_TEST_MONGODB_URI",
        );
        checked(
            Command::new(venv.join("bin/python")).arg(&patcher),
            "patching nx-27017 failed; see tests/mongo/README.md",
        );
        let mut file = File::create(venv.join(".dac-ready.tmp")).expect("write the venv stamp");
        file.write_all(wanted.as_bytes()).expect("write the venv stamp");
        fs::rename(venv.join(".dac-ready.tmp"), &stamp).expect("publish the venv stamp");
        eprintln!("nx-27017 venv ready at {} in {:.1?}", venv.display(), started.elapsed());
        venv
    })
}

/// The Python that creates the venv: `DAC_TEST_PYTHON` or `python3`, ≥ 3.10.
fn python() -> String {
    let python = std::env::var(PYTHON_VAR).unwrap_or_else(|_| "python3".to_owned());
    let output = Command::new(&python)
        .args(["-c", "import sys; print('%d.%d' % sys.version_info[:2]); sys.exit(sys.version_info < (3, 10))"])
        .output()
        .unwrap_or_else(|err| {
            panic!(
                "cannot run `{python}` ({err}): the MongoDB tests need Python ≥ 3.10 to run nx-27017 \
                 (install python3 and python3-venv, or name an interpreter in {PYTHON_VAR}), \
                 or a MongoDB replica set in {URI_VAR}"
            )
        });
    let version = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    assert!(
        output.status.success(),
        "`{python}` is Python {version}; nx-27017 needs ≥ 3.10: name another interpreter in {PYTHON_VAR}, \
         or set {URI_VAR} to a MongoDB replica set"
    );
    python
}

fn checked(command: &mut Command, advice: &str) -> Output {
    let output = command.output().unwrap_or_else(|err| panic!("cannot run {command:?}: {err}\n{advice}"));
    assert!(
        output.status.success(),
        "{command:?} failed ({})\n--- stdout ---\n{}\n--- stderr ---\n{}\n{advice}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
    output
}
