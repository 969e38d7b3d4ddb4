//! The tracing filesystem: mounted when absent (some kernels, this one
//! among them, boot without it, and attaching a tracepoint needs its
//! event ids), and the tracepoint's record layout read from it.

use std::path::{Path, PathBuf};

pub const TRACEFS: &str = "/sys/kernel/tracing";
/// The older location, under debugfs.
pub const DEBUGFS_TRACING: &str = "/sys/kernel/debug/tracing";

#[derive(Debug, thiserror::Error)]
pub enum TracefsError {
    #[error(
        "tracefs is not mounted and mounting it on {path} failed: {source} (mount it: mount -t tracefs tracefs {path})"
    )]
    Mount { path: PathBuf, source: std::io::Error },
    #[error("tracepoint {category}/{name} does not exist on this kernel (no {format})")]
    MissingTracepoint { category: String, name: String, format: PathBuf },
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}: no field {field} in the tracepoint's format")]
    NoField { path: PathBuf, field: String },
}

/// Returns the tracing directory, mounting tracefs on [`TRACEFS`] if
/// neither location has it. Whether this call mounted it is returned too.
///
/// Idempotent and safe to race: several probes (or a probe and another
/// tracing tool) starting together on a host without tracefs each see it
/// missing and each try to mount it; the losers' mount fails (`EBUSY`) or
/// stacks. A failed mount is therefore followed by looking again, and
/// tracefs mounted by someone else in the meantime is used, not an error.
pub fn ensure_mounted() -> Result<(PathBuf, bool), TracefsError> {
    if let Some(dir) = mounted() {
        return Ok((dir, false));
    }
    let target = std::ffi::CString::new(TRACEFS).expect("no NUL in a constant");
    let fstype = std::ffi::CString::new("tracefs").expect("no NUL in a constant");
    // SAFETY: valid NUL-terminated strings; no data argument.
    let status = unsafe { libc::mount(fstype.as_ptr(), target.as_ptr(), fstype.as_ptr(), 0, std::ptr::null()) };
    if status == 0 {
        return Ok((TRACEFS.into(), true));
    }
    let source = std::io::Error::last_os_error();
    // The winner's mount is visible by the time ours fails, but give a
    // mount still in progress elsewhere a moment before calling it a failure.
    let deadline = std::time::Instant::now() + MOUNT_RACE_GRACE;
    loop {
        if let Some(dir) = mounted() {
            tracing::debug!("tracefs was mounted by another process while this one tried ({source})");
            return Ok((dir, false));
        }
        if std::time::Instant::now() >= deadline {
            return Err(TracefsError::Mount { path: TRACEFS.into(), source });
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// How long a failed mount waits for another process's mount to appear.
const MOUNT_RACE_GRACE: std::time::Duration = std::time::Duration::from_millis(500);

/// The first location where the tracing filesystem is mounted, if any.
pub fn mounted() -> Option<PathBuf> {
    [TRACEFS, DEBUGFS_TRACING].into_iter().find(|dir| Path::new(dir).join("events").is_dir()).map(PathBuf::from)
}

/// The byte offset of `field` in the records of tracepoint `category/name`.
pub fn field_offset(tracing: &Path, category: &str, name: &str, field: &str) -> Result<u64, TracefsError> {
    let path = tracing.join("events").join(category).join(name).join("format");
    let text = std::fs::read_to_string(&path).map_err(|source| {
        if source.kind() == std::io::ErrorKind::NotFound {
            TracefsError::MissingTracepoint { category: category.into(), name: name.into(), format: path.clone() }
        } else {
            TracefsError::Read { path: path.clone(), source }
        }
    })?;
    parse_field_offset(&text, field).ok_or_else(|| TracefsError::NoField { path, field: field.into() })
}

/// Finds `offset:N;` on the line declaring `field`, e.g.
/// `field:__data_loc char[] filename; offset:8; size:4; signed:0;` (tab-separated).
fn parse_field_offset(format: &str, field: &str) -> Option<u64> {
    format.lines().find_map(|line| {
        let declaration = line.trim().strip_prefix("field:")?.split(';').next()?;
        if declaration.rsplit([' ', '\t']).next()? != field {
            return None;
        }
        let offset = line.split(';').find_map(|part| part.trim().strip_prefix("offset:"))?;
        offset.trim().parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const FORMAT: &str = "name: sched_process_exec\nID: 365\nformat:\n\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;\n\n\tfield:__data_loc char[] filename;\toffset:8;\tsize:4;\tsigned:0;\n\tfield:pid_t pid;\toffset:12;\tsize:4;\tsigned:1;\n\tfield:pid_t old_pid;\toffset:16;\tsize:4;\tsigned:1;\n";

    #[test]
    fn reads_field_offsets_from_a_format_file() {
        assert_eq!(parse_field_offset(FORMAT, "filename"), Some(8));
        assert_eq!(parse_field_offset(FORMAT, "old_pid"), Some(16));
        assert_eq!(parse_field_offset(FORMAT, "pid"), Some(12));
        assert_eq!(parse_field_offset(FORMAT, "name"), None);
        assert_eq!(parse_field_offset("garbage;offset:x;", "garbage"), None);
    }

    #[test]
    fn a_missing_tracepoint_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let err = field_offset(dir.path(), "sched", "no_such_event", "filename").unwrap_err();
        assert!(err.to_string().starts_with("tracepoint sched/no_such_event does not exist"), "{err}");
    }
}
