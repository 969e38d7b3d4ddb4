//! Probes starting together on a host where tracefs is not mounted: each
//! sees it missing and tries to mount it, and every one must start (issue
//! 16: the losers used to exit with EBUSY).
//!
//! This file is its own test binary on purpose: it unmounts tracefs, and
//! `cargo test` runs test binaries one after another, so no other probe
//! test is starting while it does.

mod common;

use common::RunningProbe;
use dac_probe::tracefs::{DEBUGFS_TRACING, TRACEFS};
use std::ffi::CString;
use std::path::Path;

const PROBES: usize = 4;

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

#[test]
fn probes_started_together_on_an_unmounted_tracefs_all_start() {
    require_probe!();
    if let Err(reason) = unmount_tracefs() {
        use std::io::Write as _;
        let _ =
            writeln!(std::io::stderr(), "SKIPPED probes_started_together_on_an_unmounted_tracefs_all_start: {reason}");
        return;
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
