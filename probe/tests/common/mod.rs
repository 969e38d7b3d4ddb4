//! Running the real `dac-probe` binary for the tests, and reading back
//! what it wrote. The tests load the real BPF program: they need root, the
//! kernel's BTF and a build with bpf-linker; where any is missing they say
//! so and return.

#![allow(dead_code)]

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// Why the probe cannot run here, if it cannot.
pub fn skip_reason() -> Option<String> {
    if let Err(err) = dac_probe::probe::object_available() {
        return Some(err.to_string());
    }
    // SAFETY: no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not running as root (loading a BPF program needs it)".into());
    }
    if !Path::new(dac_probe::btf::VMLINUX_BTF).exists() {
        return Some(format!("no kernel BTF at {}", dac_probe::btf::VMLINUX_BTF));
    }
    None
}

/// Returns early from a test, loudly, when the probe cannot run here.
#[macro_export]
macro_rules! require_probe {
    () => {
        if let Some(reason) = common::skip_reason() {
            // Straight to stderr: libtest hides eprintln! of passing tests.
            use std::io::Write as _;
            let test = std::thread::current().name().unwrap_or(module_path!()).to_string();
            let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {reason}");
            return;
        }
    };
}

/// A running `dac-probe`, its stdout and stderr going to files.
pub struct RunningProbe {
    child: Option<Child>,
    pub stdout: PathBuf,
    pub stderr: PathBuf,
    _dir: tempfile::TempDir,
}

/// What a finished probe left behind.
pub struct Finished {
    pub status: Option<i32>,
    pub events: Vec<Value>,
    pub log: String,
}

impl RunningProbe {
    /// Starts a probe and waits until it captures.
    pub fn start(args: &[&str]) -> RunningProbe {
        let mut probe = RunningProbe::spawn(args);
        probe.wait_until_capturing();
        probe
    }

    /// Starts a probe without waiting for it (see [`Self::wait_until_capturing`]).
    pub fn spawn(args: &[&str]) -> RunningProbe {
        let dir = tempfile::tempdir().unwrap();
        let stdout = dir.path().join("events.ndjson");
        let stderr = dir.path().join("probe.log");
        let child = Command::new(env!("CARGO_BIN_EXE_dac-probe"))
            .args(args)
            .env("DAC_LOG", "info")
            .stdout(std::fs::File::create(&stdout).unwrap())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .expect("start dac-probe");
        RunningProbe { child: Some(child), stdout, stderr, _dir: dir }
    }

    pub fn wait_until_capturing(&mut self) {
        self.wait_for_log("capturing execs", Duration::from_secs(60));
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    pub fn wait_for_log(&mut self, needle: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !self.log().contains(needle) {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("dac-probe exited ({status}) before logging {needle:?}:\n{}", self.log());
            }
            assert!(Instant::now() < deadline, "no {needle:?} in the probe's log:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, wait, and read everything it wrote.
    pub fn stop(mut self) -> Finished {
        let mut child = self.child.take().unwrap();
        // SAFETY: signalling our own child.
        assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
        let deadline = Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            assert!(Instant::now() < deadline, "dac-probe did not stop on SIGTERM:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(20));
        };
        let text = std::fs::read_to_string(&self.stdout).unwrap();
        let events = text
            .lines()
            .map(|line| serde_json::from_str(line).unwrap_or_else(|err| panic!("not JSON ({err}): {line}")))
            .collect();
        Finished { status: status.code(), events, log: self.log() }
    }
}

impl Drop for RunningProbe {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A token no other process on the machine will have in its argv.
pub fn unique_token(what: &str) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    format!("dac-probe-{what}-{}-{nanos}", std::process::id())
}

/// The events whose argv[1] is `marker`.
pub fn with_marker<'a>(events: &'a [Value], marker: &str) -> Vec<&'a Value> {
    events.iter().filter(|event| event["argv"][1] == marker).collect()
}

/// The number in the summary line right before `label`, e.g.
/// `summary_count(log, "lost in the kernel")`.
pub fn summary_count(log: &str, label: &str) -> u64 {
    let line = log.lines().find(|line| line.starts_with("dac-probe: ")).unwrap_or_else(|| panic!("no summary:\n{log}"));
    let before = &line[..line.find(label).unwrap_or_else(|| panic!("no {label:?} in {line}"))];
    let number = before.trim_end().rsplit([' ', ',']).next().unwrap();
    number.parse().unwrap_or_else(|_| panic!("no count before {label:?} in {line}"))
}
