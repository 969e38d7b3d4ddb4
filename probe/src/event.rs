//! From the kernel's record to the seed's event: decoding the ring-buffer
//! bytes, then adding what only userspace knows (host name and address,
//! user name, wall-clock time, the parent's path and command line).

use dac_probe_common::{
    ExecHeader, ARGS_OFFSET, FILENAME_CAP, FLAG_ARGS_TRUNCATED, FLAG_ARGS_UNREADABLE, FLAG_FILENAME_TRUNCATED,
};
use serde::Serialize;
use std::collections::{HashMap, VecDeque};
use std::path::Path;

/// One exec as the kernel reported it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawExec {
    pub header: ExecHeader,
    pub filename: Vec<u8>,
    pub args: Vec<u8>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("ring-buffer record of {len} bytes is shorter than its {need}-byte layout")]
    Short { len: usize, need: usize },
}

/// Decodes one ring-buffer record.
pub fn decode(record: &[u8]) -> Result<RawExec, DecodeError> {
    if record.len() < ARGS_OFFSET {
        return Err(DecodeError::Short { len: record.len(), need: ARGS_OFFSET });
    }
    // SAFETY: ExecHeader is repr(C) plain old data and the record holds at
    // least its size; read_unaligned because ring-buffer bytes carry no
    // alignment guarantee in the type system.
    let header = unsafe { record.as_ptr().cast::<ExecHeader>().read_unaligned() };
    let filename_start = std::mem::size_of::<ExecHeader>();
    let filename_len = (header.filename_len as usize).min(FILENAME_CAP);
    let filename = record[filename_start..filename_start + filename_len].to_vec();
    let args_len = header.args_len as usize;
    if record.len() < ARGS_OFFSET + args_len {
        return Err(DecodeError::Short { len: record.len(), need: ARGS_OFFSET + args_len });
    }
    let args = record[ARGS_OFFSET..ARGS_OFFSET + args_len].to_vec();
    Ok(RawExec { header, filename, args })
}

impl RawExec {
    /// The arguments, split on the NULs that end each one. A truncated area
    /// ends in the middle of an argument, which is kept as it is.
    pub fn argv(&self) -> Vec<String> {
        let args = self.args.strip_suffix(b"\0").unwrap_or(&self.args);
        if args.is_empty() {
            return Vec::new();
        }
        args.split(|&b| b == 0).map(|arg| String::from_utf8_lossy(arg).into_owned()).collect()
    }

    pub fn comm(&self) -> String {
        let comm = &self.header.comm;
        String::from_utf8_lossy(&comm[..comm.iter().position(|&b| b == 0).unwrap_or(comm.len())]).into_owned()
    }
}

/// The event written to MongoDB or stdout: the seed's fields first.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ProcessEvent {
    pub hostname: String,
    pub ip_address: String,
    pub parent_pid: i64,
    pub pid: i64,
    /// The executed file, as the kernel resolved it for execve.
    pub path: String,
    /// The kernel's task name (`comm`, at most 15 bytes).
    pub binary: String,
    /// `argv[1..]` joined by spaces.
    pub arguments: String,
    /// `path`, a space and `arguments` (just `path` when there are none).
    pub command_line: String,
    /// Milliseconds since the Unix epoch.
    pub ts: i64,
    pub uid: i64,
    pub gid: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    pub argv: Vec<String>,
    /// argv holds only the first bytes of the argument area.
    pub argv_truncated: bool,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub path_truncated: bool,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub argv_unreadable: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent_path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent_command_line: Option<String>,
    /// The hostname's partition bucket, so that `dac watch --partition
    /// K/N` can select a partition's events on any MongoDB (a change
    /// stream filters on a stored field everywhere, and hashes only from
    /// 7.0).
    pub dac_bucket: u16,
}

#[derive(Clone)]
struct ProcessInfo {
    seq: u64,
    path: String,
    command_line: String,
}

/// Adds the host, user, time and parent to raw execs, keeping the caches
/// that make that cheap.
pub struct Enricher {
    hostname: String,
    bucket: u16,
    ip_address: String,
    /// CLOCK_REALTIME − CLOCK_BOOTTIME, measured once at start.
    realtime_offset_ns: i128,
    users: HashMap<u32, Option<String>>,
    passwd: std::path::PathBuf,
    processes: HashMap<u32, ProcessInfo>,
    order: VecDeque<(u32, u64)>,
    seq: u64,
    process_cap: usize,
    proc_root: std::path::PathBuf,
}

impl Enricher {
    pub fn new(hostname: String, ip_address: String) -> Enricher {
        Enricher {
            bucket: dac_event::partition::bucket_of(Some(&hostname)),
            hostname,
            ip_address,
            realtime_offset_ns: realtime_minus_boottime_ns(),
            users: HashMap::new(),
            passwd: "/etc/passwd".into(),
            processes: HashMap::new(),
            order: VecDeque::new(),
            seq: 0,
            process_cap: 65_536,
            proc_root: "/proc".into(),
        }
    }

    pub fn enrich(&mut self, raw: &RawExec) -> ProcessEvent {
        let header = &raw.header;
        let path = String::from_utf8_lossy(&raw.filename).into_owned();
        let argv = raw.argv();
        let arguments = argv.get(1..).unwrap_or_default().join(" ");
        let command_line = if arguments.is_empty() { path.clone() } else { format!("{path} {arguments}") };
        let parent = self.process(header.ppid);
        let user = self.user(header.uid);
        let ts = ((header.boot_ns as i128 + self.realtime_offset_ns) / 1_000_000) as i64;
        self.remember(header.pid, path.clone(), command_line.clone());
        ProcessEvent {
            hostname: self.hostname.clone(),
            ip_address: self.ip_address.clone(),
            parent_pid: header.ppid as i64,
            pid: header.pid as i64,
            path,
            binary: raw.comm(),
            arguments,
            command_line,
            ts,
            uid: header.uid as i64,
            gid: header.gid as i64,
            user,
            argv,
            argv_truncated: header.flags & FLAG_ARGS_TRUNCATED != 0,
            path_truncated: header.flags & FLAG_FILENAME_TRUNCATED != 0,
            argv_unreadable: header.flags & FLAG_ARGS_UNREADABLE != 0,
            parent_path: parent.as_ref().map(|p| p.path.clone()),
            parent_command_line: parent.map(|p| p.command_line),
            dac_bucket: self.bucket,
        }
    }

    /// A process's path and command line: from its exec if we saw it,
    /// otherwise from /proc while it still runs (parents usually do).
    fn process(&mut self, pid: u32) -> Option<ProcessInfo> {
        if pid == 0 {
            return None;
        }
        if let Some(info) = self.processes.get(&pid) {
            return Some(info.clone());
        }
        let dir = self.proc_root.join(pid.to_string());
        let path = std::fs::read_link(dir.join("exe")).ok()?.to_string_lossy().into_owned();
        let cmdline = std::fs::read(dir.join("cmdline")).unwrap_or_default();
        let raw = RawExec { header: ExecHeader::default(), filename: Vec::new(), args: cmdline };
        let argv = raw.argv();
        let arguments = argv.get(1..).unwrap_or_default().join(" ");
        let command_line = if arguments.is_empty() { path.clone() } else { format!("{path} {arguments}") };
        self.remember(pid, path, command_line);
        self.processes.get(&pid).cloned()
    }

    fn remember(&mut self, pid: u32, path: String, command_line: String) {
        self.seq += 1;
        self.processes.insert(pid, ProcessInfo { seq: self.seq, path, command_line });
        self.order.push_back((pid, self.seq));
        // Oldest first; an entry replaced since (its pid exec'd again) is
        // skipped by its sequence number.
        while self.processes.len() > self.process_cap {
            let Some((pid, seq)) = self.order.pop_front() else { break };
            if self.processes.get(&pid).is_some_and(|info| info.seq == seq) {
                self.processes.remove(&pid);
            }
        }
        if self.order.len() > self.process_cap * 2 {
            let processes = &self.processes;
            self.order.retain(|(pid, seq)| processes.get(pid).is_some_and(|info| info.seq == *seq));
        }
    }

    fn user(&mut self, uid: u32) -> Option<String> {
        if let Some(name) = self.users.get(&uid) {
            return name.clone();
        }
        let name = std::fs::read_to_string(&self.passwd).ok().and_then(|text| passwd_name(&text, uid));
        self.users.insert(uid, name.clone());
        name
    }
}

/// The name of `uid` in /etc/passwd text.
fn passwd_name(passwd: &str, uid: u32) -> Option<String> {
    passwd.lines().find_map(|line| {
        let mut fields = line.split(':');
        let name = fields.next()?;
        let id = fields.nth(1)?;
        (id.parse::<u32>().ok()? == uid).then(|| name.to_string())
    })
}

fn clock_ns(clock: libc::clockid_t) -> i128 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: a valid clock id and a valid pointer.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as i128 * 1_000_000_000 + ts.tv_nsec as i128
}

/// The offset from the kernel's boot clock (what the BPF program stamps)
/// to wall-clock time; bracketing the realtime reading between two boot
/// clock readings keeps the error under a microsecond.
pub fn realtime_minus_boottime_ns() -> i128 {
    let before = clock_ns(libc::CLOCK_BOOTTIME);
    let realtime = clock_ns(libc::CLOCK_REALTIME);
    let after = clock_ns(libc::CLOCK_BOOTTIME);
    realtime - (before + after) / 2
}

/// The host's name, as `uname -n` prints it.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_string())
        .unwrap_or_else(|_| "localhost".into())
}

/// The host's address as the seed's probe found it (resolving its own
/// name), else the address of the default route's interface.
pub fn ip_address(hostname: &str) -> Option<String> {
    use std::net::ToSocketAddrs;
    if let Ok(addresses) = (hostname, 0).to_socket_addrs() {
        if let Some(address) = addresses.into_iter().find(|a| a.is_ipv4()) {
            return Some(address.ip().to_string());
        }
    }
    // A connected UDP socket sends nothing; it only picks a source address.
    let socket = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    socket.connect("192.0.2.1:9").ok()?;
    Some(socket.local_addr().ok()?.ip().to_string())
}

impl Enricher {
    /// An enricher reading users and processes from the given files, for tests.
    #[doc(hidden)]
    pub fn with_roots(hostname: &str, passwd: &Path, proc_root: &Path) -> Enricher {
        let mut enricher = Enricher::new(hostname.into(), "127.0.0.1".into());
        enricher.passwd = passwd.into();
        enricher.proc_root = proc_root.into();
        enricher
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dac_probe_common::COMM_LEN;

    fn record(header: ExecHeader, filename: &[u8], args: &[u8]) -> Vec<u8> {
        let mut bytes = vec![0u8; ARGS_OFFSET + args.len()];
        // SAFETY: the buffer holds a header's worth of bytes.
        unsafe { bytes.as_mut_ptr().cast::<ExecHeader>().write_unaligned(header) };
        let start = std::mem::size_of::<ExecHeader>();
        bytes[start..start + filename.len()].copy_from_slice(filename);
        bytes[ARGS_OFFSET..].copy_from_slice(args);
        bytes
    }

    fn header(pid: u32, ppid: u32, filename: &[u8], args: &[u8], flags: u32) -> ExecHeader {
        let mut comm = [0u8; COMM_LEN];
        comm[..3].copy_from_slice(b"cat");
        ExecHeader {
            boot_ns: 5_000_000_000,
            pid,
            ppid,
            uid: 0,
            gid: 0,
            filename_len: filename.len() as u32,
            args_len: args.len() as u32,
            args_size: args.len() as u32,
            flags,
            comm,
        }
    }

    #[test]
    fn decodes_a_record_into_the_seed_fields_and_the_extras() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("passwd"), "root:x:0:0:root:/root:/bin/bash\n").unwrap();
        let mut enricher = Enricher::with_roots("pop-os", &dir.path().join("passwd"), dir.path());
        let args = b"sudo\0cat\0/etc/shadow\0";
        let parent = record(header(7422, 1, b"/usr/bin/bash", b"bash\0-c\0x\0", 0), b"/usr/bin/bash", b"bash\0-c\0x\0");
        enricher.enrich(&decode(&parent).unwrap());
        let raw = decode(&record(header(82052, 7422, b"/usr/bin/sudo", args, 0), b"/usr/bin/sudo", args)).unwrap();
        let event = enricher.enrich(&raw);
        assert_eq!(event.pid, 82052);
        assert_eq!(event.parent_pid, 7422);
        assert_eq!(event.path, "/usr/bin/sudo");
        assert_eq!(event.binary, "cat");
        assert_eq!(event.arguments, "cat /etc/shadow");
        assert_eq!(event.command_line, "/usr/bin/sudo cat /etc/shadow");
        assert_eq!(event.argv, ["sudo", "cat", "/etc/shadow"]);
        assert_eq!(event.user.as_deref(), Some("root"));
        assert_eq!(event.parent_path.as_deref(), Some("/usr/bin/bash"));
        assert_eq!(event.parent_command_line.as_deref(), Some("/usr/bin/bash -c x"));
        assert!(!event.argv_truncated);
        assert_eq!(event.dac_bucket, dac_event::partition::bucket_of(Some(&event.hostname)));
        let now_ms = (clock_ns(libc::CLOCK_REALTIME) / 1_000_000) as i64;
        let boot_ms = (clock_ns(libc::CLOCK_BOOTTIME) / 1_000_000) as i64;
        assert!((event.ts - (now_ms - boot_ms + 5_000)).abs() < 50, "ts {} from boot 5 s", event.ts);
    }

    #[test]
    fn a_truncated_area_keeps_the_partial_argument_and_says_so() {
        let args = b"echo\0aaaa";
        let mut h = header(2, 1, b"/bin/echo", args, FLAG_ARGS_TRUNCATED);
        h.args_size = 100_000;
        let raw = decode(&record(h, b"/bin/echo", args)).unwrap();
        let event = Enricher::new("h".into(), "i".into()).enrich(&raw);
        assert_eq!(event.argv, ["echo", "aaaa"]);
        assert!(event.argv_truncated);
    }

    #[test]
    fn empty_arguments_and_unknown_users_are_absent_not_invented() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("passwd"), "root:x:0:0:root:/root:/bin/bash\n").unwrap();
        let mut enricher = Enricher::with_roots("h", &dir.path().join("passwd"), dir.path());
        let mut h = header(3, 999_999, b"/bin/true", b"true\0", 0);
        h.uid = 4242;
        let event = enricher.enrich(&decode(&record(h, b"/bin/true", b"true\0")).unwrap());
        assert_eq!(event.command_line, "/bin/true");
        assert_eq!(event.arguments, "");
        assert_eq!(event.user, None);
        assert_eq!(event.parent_path, None);
    }

    #[test]
    fn short_records_are_errors() {
        assert_eq!(decode(&[0; 10]), Err(DecodeError::Short { len: 10, need: ARGS_OFFSET }));
        let mut bytes = record(header(1, 1, b"/x", b"", 0), b"/x", b"");
        bytes[std::mem::offset_of!(ExecHeader, args_len)] = 50;
        assert_eq!(decode(&bytes), Err(DecodeError::Short { len: ARGS_OFFSET, need: ARGS_OFFSET + 50 }));
    }

    #[test]
    fn the_process_cache_stays_bounded() {
        let mut enricher = Enricher::new("h".into(), "i".into());
        enricher.process_cap = 10;
        for pid in 0..1000 {
            enricher.remember(pid % 37, format!("/p{pid}"), String::new());
        }
        assert!(enricher.processes.len() <= 10);
        assert!(enricher.order.len() <= 20);
        assert_eq!(enricher.processes.get(&(999 % 37)).unwrap().path, "/p999");
    }

    #[test]
    fn passwd_lookup() {
        let text = "root:x:0:0:root:/root:/bin/bash\nbroken\nalice:x:1000:1000::/home/alice:/bin/sh\n";
        assert_eq!(passwd_name(text, 1000).as_deref(), Some("alice"));
        assert_eq!(passwd_name(text, 5), None);
    }
}
