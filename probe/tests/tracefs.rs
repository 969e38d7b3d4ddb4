//! Probes starting together on a host where tracefs is not mounted: each
//! sees it missing and tries to mount it, and every one must start (issue
//! 16: the losers used to exit with EBUSY).
//!
//! This file is its own test binary on purpose: it unmounts tracefs, and
//! `cargo test` runs test binaries one after another, so no other probe
//! test is starting while it does. Its own tests take turns (`TRACEFS_LOCK`).

mod common;

use common::RunningProbe;
use dac_probe::tracefs::{DEBUGFS_TRACING, TRACEFS};
use std::ffi::CString;
use std::path::Path;

const PROBES: usize = 4;

/// The tests of this binary unmount tracefs: one at a time.
static TRACEFS_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn skipped(test: &str, reason: &str) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {reason}");
}

/// Unmounts every tracefs mount on [`TRACEFS`] (mounts may be stacked),
/// or says why it may not.
fn unmount_tracefs() -> Result<(), String> {
    if Path::new(DEBUGFS_TRACING).join("events").is_dir() {
        return Err(format!("tracing is reachable under debugfs ({DEBUGFS_TRACING}), so no probe would mount tracefs"));
    }
    let target = CString::new(TRACEFS).unwrap();
    for _ in 0..16 {
        if !Path::new(TRACEFS).join("events").is_dir() {
            return Ok(());
        }
        // SAFETY: a valid NUL-terminated path.
        if unsafe { libc::umount2(target.as_ptr(), 0) } != 0 {
            let err = std::io::Error::last_os_error();
            return Err(format!("cannot unmount tracefs from {TRACEFS} ({err}); something on this machine uses it"));
        }
    }
    Err(format!("tracefs is still mounted on {TRACEFS} after 16 unmounts"))
}

/// The race itself, made likely: threads released together by a barrier
/// all find tracefs unmounted and mount it at the same moment. Before the
/// fix, every round but the rarest had losers failing with EBUSY.
#[test]
fn mounting_tracefs_from_many_threads_at_once_never_fails() {
    require_probe!();
    let _turn = TRACEFS_LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    const THREADS: usize = 8;
    for round in 0..20 {
        if let Err(reason) = unmount_tracefs() {
            return skipped("mounting_tracefs_from_many_threads_at_once_never_fails", &reason);
        }
        let barrier = std::sync::Barrier::new(THREADS);
        let results: Vec<_> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..THREADS)
                .map(|_| {
                    scope.spawn(|| {
                        barrier.wait();
                        dac_probe::tracefs::ensure_mounted()
                    })
                })
                .collect();
            handles.into_iter().map(|handle| handle.join().unwrap()).collect()
        });
        let mut mounted_here = 0;
        for result in results {
            match result {
                Ok((dir, mounted)) => {
                    assert_eq!(dir, Path::new(TRACEFS), "round {round}");
                    mounted_here += usize::from(mounted);
                }
                Err(err) => panic!("round {round}: {err}"),
            }
        }
        assert!(mounted_here >= 1, "round {round}: no thread says it mounted tracefs");
        assert!(Path::new(TRACEFS).join("events").is_dir(), "round {round}: tracefs is not mounted");
    }
}

#[test]
fn probes_started_together_on_an_unmounted_tracefs_all_start() {
    require_probe!();
    let _turn = TRACEFS_LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Err(reason) = unmount_tracefs() {
        return skipped("probes_started_together_on_an_unmounted_tracefs_all_start", &reason);
    }
    assert!(!Path::new(TRACEFS).join("events").is_dir(), "tracefs still mounted");

    // Spawned back to back, before any has had time to look at tracefs.
    let mut probes: Vec<RunningProbe> = (0..PROBES).map(|_| RunningProbe::spawn(&["--stdout"])).collect();
    for probe in &mut probes {
        probe.wait_until_capturing();
    }
    let mut mounted_by = 0;
    for probe in probes {
        let finished = probe.stop();
        assert_eq!(finished.status, Some(0), "{}", finished.log);
        mounted_by += finished.log.matches("mounted tracefs on").count();
    }
    assert!(mounted_by >= 1, "no probe says it mounted tracefs");
    assert!(Path::new(TRACEFS).join("events").is_dir(), "tracefs is not mounted after the probes ran");
}
