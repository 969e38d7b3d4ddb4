//! Execs with awkward argv, run while the real probe captures: each one
//! must appear exactly once, with its pid, parent, path and argv intact,
//! and truncation marked where the argument area exceeds the capture cap.

mod common;

use common::{summary_count, unique_token, with_marker, RunningProbe};
use dac_probe_common::ARGS_CAP;
use std::process::{Command, Stdio};

struct Case {
    name: &'static str,
    path: &'static str,
    /// argv[2..]; argv[0] is the path and argv[1] the marker.
    rest: Vec<String>,
    truncated: bool,
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "quotes",
            path: "/bin/echo",
            rest: vec!["it's \"quoted\"".into(), "a'b\"c".into(), "back\\slash".into()],
            truncated: false,
        },
        Case {
            name: "spaces",
            path: "/bin/echo",
            rest: vec!["two words".into(), "  padded  ".into(), "".into(), "tab\there".into()],
            truncated: false,
        },
        Case {
            name: "unicode",
            path: "/usr/bin/printf",
            rest: vec!["héllo wörld ✓".into(), "日本語".into(), "🚀".into()],
            truncated: false,
        },
        Case {
            name: "many",
            path: "/bin/echo",
            rest: (0..150).map(|n| format!("arg-{n:03}")).collect(),
            truncated: false,
        },
        Case { name: "ten-kb", path: "/bin/echo", rest: vec!["x".repeat(10 * 1024), "end".into()], truncated: false },
        Case { name: "forty-kb", path: "/bin/echo", rest: vec!["y".repeat(40 * 1024), "end".into()], truncated: true },
    ]
}

#[test]
fn marker_execs_appear_once_each_with_their_exact_argv() {
    require_probe!();
    let token = unique_token("capture");
    let probe = RunningProbe::start(&["--stdout"]);
    let started_ms = now_ms();
    let mut pids = Vec::new();
    for case in cases() {
        let marker = format!("{token}-{}", case.name);
        let mut child = Command::new(case.path)
            .arg(&marker)
            .args(&case.rest)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|err| panic!("{}: {err}", case.path));
        pids.push(child.id());
        assert!(child.wait().unwrap().success());
    }
    let ended_ms = now_ms();
    let finished = probe.stop();
    assert_eq!(finished.status, Some(0), "{}", finished.log);
    assert_eq!(summary_count(&finished.log, "lost in the kernel"), 0, "{}", finished.log);

    let test_exe = std::env::current_exe().unwrap().to_string_lossy().into_owned();
    for (case, pid) in cases().into_iter().zip(pids) {
        let marker = format!("{token}-{}", case.name);
        let found = with_marker(&finished.events, &marker);
        assert_eq!(found.len(), 1, "case {}: {} events with marker {marker}", case.name, found.len());
        let event = found[0];
        let mut argv = vec![case.path.to_string(), marker.clone()];
        argv.extend(case.rest.iter().cloned());
        assert_eq!(event["pid"], pid, "case {}", case.name);
        assert_eq!(event["parent_pid"], std::process::id(), "case {}", case.name);
        assert_eq!(event["parent_path"], test_exe.as_str(), "case {}", case.name);
        assert_eq!(event["path"], case.path, "case {}", case.name);
        assert_eq!(event["binary"], case.path.rsplit('/').next().unwrap(), "case {}", case.name);
        assert_eq!(event["uid"], 0);
        assert_eq!(event["user"], "root");
        assert_eq!(event["argv_truncated"], case.truncated, "case {}", case.name);
        let ts = event["ts"].as_i64().unwrap();
        assert!((started_ms - 1000..=ended_ms + 1000).contains(&ts), "case {}: ts {ts} outside the run", case.name);
        let got: Vec<String> =
            event["argv"].as_array().unwrap().iter().map(|arg| arg.as_str().unwrap().to_string()).collect();
        if case.truncated {
            // The first ARGS_CAP bytes of the NUL-separated area, no more.
            let area: Vec<u8> = argv.iter().flat_map(|arg| arg.bytes().chain([0])).collect();
            let kept = got.join("\0");
            assert_eq!(kept.len(), ARGS_CAP, "case {}", case.name);
            assert_eq!(kept.as_bytes(), &area[..ARGS_CAP], "case {}", case.name);
        } else {
            assert_eq!(got, argv, "case {}", case.name);
            let arguments = argv[1..].join(" ");
            assert_eq!(event["arguments"], arguments.as_str(), "case {}", case.name);
            assert_eq!(event["command_line"], format!("{} {arguments}", case.path), "case {}", case.name);
        }
    }
}

#[test]
fn a_failed_exec_is_not_an_event() {
    require_probe!();
    let token = unique_token("failed");
    let dir = tempfile::tempdir().unwrap();
    let not_executable = dir.path().join("not-executable");
    std::fs::write(&not_executable, "#!/bin/sh\n").unwrap();
    let probe = RunningProbe::start(&["--stdout"]);
    let err = Command::new(&not_executable).arg(&token).status().unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::PermissionDenied);
    // A successful one after it, so we know the probe was reading.
    let seen = format!("{token}-ok");
    assert!(Command::new("/bin/true").arg(&seen).status().unwrap().success());
    let finished = probe.stop();
    assert_eq!(with_marker(&finished.events, &token).len(), 0);
    assert_eq!(with_marker(&finished.events, &seen).len(), 1, "{}", finished.log);
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}

#[test]
fn a_closed_stdout_stops_the_probe_and_counts_what_was_not_written() {
    require_probe!();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("probe.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_dac-probe"))
        .args(["--stdout", "--poll-interval-ms", "10"])
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !std::fs::read_to_string(&log).unwrap().contains("capturing execs") {
        assert!(std::time::Instant::now() < deadline, "{}", std::fs::read_to_string(&log).unwrap());
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // The reader goes away, as `head -1` would.
    drop(child.stdout.take());
    let marker = unique_token("closed");
    let status = loop {
        assert!(Command::new("/bin/true").arg(&marker).status().unwrap().success());
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(std::time::Instant::now() < deadline, "dac-probe kept running with its stdout closed");
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let log = std::fs::read_to_string(&log).unwrap();
    assert_eq!(status.code(), Some(3), "{log}");
    assert!(log.contains("writing events failed"), "{log}");
    assert!(summary_count(&log, "dropped in userspace") > 0, "{log}");
    assert_eq!(summary_count(&log, "execs seen"), summary_count(&log, "captured"), "{log}");
}
