//! The record the kernel side of `dac-probe` writes to its ring buffer for
//! each successful exec, and the settings userspace passes to it.
//!
//! Both sides compile this crate: `no_std` and `repr(C)` so the bytes the
//! BPF program writes are exactly what userspace reads. A record is the
//! fixed [`ExecHeader`], then [`FILENAME_CAP`] bytes of filename, then the
//! first `args_len` bytes of the process's argument area (NUL-separated
//! argv, as in `/proc/PID/cmdline`): only the bytes used are copied into
//! the ring buffer, so a short command line costs a short record.
#![no_std]

/// Bytes of the executed file's path kept, including its terminating NUL.
pub const FILENAME_CAP: usize = 512;

/// Bytes of the argument area (argv, NUL-separated) kept. A power of two:
/// the BPF program masks lengths with `ARGS_CAP - 1` so the verifier can
/// see the read is bounded.
pub const ARGS_CAP: usize = 16 * 1024;

/// `comm`: the kernel's 16-byte task name.
pub const COMM_LEN: usize = 16;

/// `flags` bit: the argument area was longer than [`ARGS_CAP`]; argv holds
/// its first `ARGS_CAP` bytes and the last argument kept may be cut short.
pub const FLAG_ARGS_TRUNCATED: u32 = 1;
/// `flags` bit: the filename filled [`FILENAME_CAP`] and may be cut short.
pub const FLAG_FILENAME_TRUNCATED: u32 = 1 << 1;
/// `flags` bit: the argument area could not be read (argv is empty).
pub const FLAG_ARGS_UNREADABLE: u32 = 1 << 2;
/// `flags` bit: the parent's pid could not be read (`ppid` is 0).
pub const FLAG_PPID_UNREADABLE: u32 = 1 << 3;

/// The fixed part of a record.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExecHeader {
    /// `bpf_ktime_get_boot_ns()` when the exec completed.
    pub boot_ns: u64,
    /// The process id (the kernel's tgid).
    pub pid: u32,
    /// The tgid of `real_parent`.
    pub ppid: u32,
    pub uid: u32,
    pub gid: u32,
    /// Length of the filename in bytes, without the NUL.
    pub filename_len: u32,
    /// Bytes of the argument area that follow the filename in the record.
    pub args_len: u32,
    /// The argument area's full size (`arg_end - arg_start`), which
    /// exceeds `args_len` when truncated.
    pub args_size: u32,
    /// `FLAG_*` bits.
    pub flags: u32,
    pub comm: [u8; COMM_LEN],
}

/// A whole record at its largest; the BPF program builds it in a per-CPU
/// scratch map (it does not fit the 512-byte BPF stack) and copies out
/// `ExecEvent::used_len(args_len)` bytes.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ExecEvent {
    pub header: ExecHeader,
    pub filename: [u8; FILENAME_CAP],
    pub args: [u8; ARGS_CAP],
}

/// Where the arguments start in a record.
pub const ARGS_OFFSET: usize = core::mem::size_of::<ExecHeader>() + FILENAME_CAP;

/// Kernel structure offsets the BPF program needs, read by userspace from
/// the running kernel's BTF (Rust BPF programs have no CO-RE relocations)
/// and written into the program's `.rodata` before it loads.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelOffsets {
    /// `task_struct.real_parent`
    pub task_real_parent: u64,
    /// `task_struct.tgid`
    pub task_tgid: u64,
    /// `task_struct.mm`
    pub task_mm: u64,
    /// `mm_struct.arg_start`
    pub mm_arg_start: u64,
    /// `mm_struct.arg_end`
    pub mm_arg_end: u64,
    /// Offset of the `__data_loc` word of `filename` in the tracepoint's
    /// record (from the tracepoint's `format` file).
    pub tp_filename_loc: u64,
}

/// Indexes of the per-CPU counters map `COUNTERS`.
pub mod counter {
    /// Execs the program saw.
    pub const SEEN: u32 = 0;
    /// Records the ring buffer had no room for: lost, and counted here.
    pub const DROPPED: u32 = 1;
    /// Number of counters.
    pub const COUNT: u32 = 2;
}

/// The name of the global holding [`KernelOffsets`] in the BPF object.
pub const OFFSETS_GLOBAL: &str = "DAC_PROBE_OFFSETS";

#[cfg(feature = "user")]
mod user {
    // SAFETY: plain old data: repr(C), integers and byte arrays only, no padding
    // bytes a reader could observe uninitialized (all fields are 8- or 4-byte
    // aligned and sized to keep the struct packed).
    unsafe impl aya::Pod for super::KernelOffsets {}
}

impl ExecEvent {
    /// Bytes of the record that carry data when `args_len` argument bytes
    /// were kept.
    pub const fn used_len(args_len: usize) -> usize {
        ARGS_OFFSET + args_len
    }
}
