//! Loading the BPF program, attaching it, and reading what it writes.

use crate::btf::{kernel_offsets, Btf, BtfError, VMLINUX_BTF};
use crate::tracefs::{self, TracefsError};
use aya::maps::{MapData, PerCpuArray, RingBuf};
use aya::programs::trace_point::TracePointLinkId;
use aya::programs::TracePoint;
use aya::{Ebpf, EbpfLoader};
use dac_probe_common::{counter, OFFSETS_GLOBAL};
use std::path::Path;
use std::time::Duration;

/// The tracepoint: fires once per successful exec.
pub const CATEGORY: &str = "sched";
pub const TRACEPOINT: &str = "sched_process_exec";
const PROGRAM: &str = "dac_probe_exec";

/// The compiled kernel crate, or nothing when the build had no bpf-linker.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/dac-probe-ebpf"));
/// Why the object is missing (empty when it is there).
static MISSING_REASON: &str = include_str!(concat!(env!("OUT_DIR"), "/ebpf-missing.txt"));

pub const DEFAULT_RING_BUFFER_SIZE: u32 = 16 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("must run as root (it loads a BPF program and may mount tracefs); effective uid is {0}")]
    NotRoot(u32),
    #[error("this dac-probe was built without its BPF program: {0}")]
    NoObject(String),
    #[error("--ring-buffer-size {0}: must be a power of two and a multiple of the page size ({1} bytes)")]
    RingBufferSize(u64, u64),
    #[error(transparent)]
    Btf(#[from] BtfError),
    #[error(transparent)]
    Tracefs(#[from] TracefsError),
    #[error("loading the BPF program failed: {0:#} (is BPF enabled in this kernel, and is the verifier log above?)")]
    Load(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("attaching to tracepoint {CATEGORY}/{TRACEPOINT} failed: {0}")]
    Attach(#[source] aya::programs::ProgramError),
    #[error("reading map {0}: {1}")]
    Map(&'static str, #[source] aya::maps::MapError),
}

/// The kernel's counters, summed over CPUs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KernelCounters {
    /// Execs the program ran for.
    pub seen: u64,
    /// Records lost because the ring buffer was full.
    pub dropped: u64,
}

/// The loaded and attached program; detached when dropped.
pub struct Probe {
    ebpf: Ebpf,
    ring: RingBuf<MapData>,
    counters: PerCpuArray<MapData, u64>,
    link: Option<TracePointLinkId>,
    /// Whether this probe mounted tracefs (left mounted: harmless, and
    /// other tools may have started using it).
    pub mounted_tracefs: bool,
}

/// Whether this binary carries its BPF program, and if not, why.
pub fn object_available() -> Result<(), ProbeError> {
    if OBJECT.is_empty() {
        Err(ProbeError::NoObject(MISSING_REASON.trim().to_string()))
    } else {
        Ok(())
    }
}

impl Probe {
    /// Checks privileges, mounts tracefs if needed, reads the kernel's
    /// structure offsets, loads the program and attaches it.
    pub fn load(ring_buffer_size: u32) -> Result<Probe, ProbeError> {
        object_available()?;
        // SAFETY: no preconditions.
        let euid = unsafe { libc::geteuid() };
        if euid != 0 {
            return Err(ProbeError::NotRoot(euid));
        }
        let page = page_size();
        if !ring_buffer_size.is_power_of_two() || !(ring_buffer_size as u64).is_multiple_of(page) {
            return Err(ProbeError::RingBufferSize(ring_buffer_size as u64, page));
        }
        raise_memlock_limit();
        let (tracing, mounted_tracefs) = tracefs::ensure_mounted()?;
        let filename_loc = tracefs::field_offset(&tracing, CATEGORY, TRACEPOINT, "filename")?;
        let btf = Btf::from_file(Path::new(VMLINUX_BTF))?;
        let offsets = kernel_offsets(&btf, filename_loc)?;
        tracing::debug!(?offsets, "kernel offsets from BTF");

        let mut ebpf = EbpfLoader::new()
            .override_global(OFFSETS_GLOBAL, &offsets, true)
            .map_max_entries("EVENTS", ring_buffer_size)
            .load(OBJECT)
            .map_err(|err| ProbeError::Load(Box::new(err)))?;
        let program: &mut TracePoint = ebpf
            .program_mut(PROGRAM)
            .ok_or_else(|| ProbeError::Load(format!("no program {PROGRAM} in the object").into()))?
            .try_into()
            .map_err(|err: aya::programs::ProgramError| ProbeError::Load(Box::new(err)))?;
        program.load().map_err(|err| ProbeError::Load(Box::new(err)))?;
        let link = program.attach(CATEGORY, TRACEPOINT).map_err(ProbeError::Attach)?;

        let ring = take_map(&mut ebpf, "EVENTS")?;
        let ring = RingBuf::try_from(ring).map_err(|err| ProbeError::Map("EVENTS", err))?;
        let counters = take_map(&mut ebpf, "COUNTERS")?;
        let counters = PerCpuArray::try_from(counters).map_err(|err| ProbeError::Map("COUNTERS", err))?;
        Ok(Probe { ebpf, ring, counters, link: Some(link), mounted_tracefs })
    }

    /// Stops capturing; records already written stay readable. Idempotent.
    pub fn detach(&mut self) -> Result<(), ProbeError> {
        let Some(link) = self.link.take() else { return Ok(()) };
        let program: &mut TracePoint = self
            .ebpf
            .program_mut(PROGRAM)
            .and_then(|p| p.try_into().ok())
            .ok_or_else(|| ProbeError::Load(format!("no program {PROGRAM}").into()))?;
        program.detach(link).map_err(ProbeError::Attach)
    }

    /// Hands every record waiting in the ring buffer to `each`; returns
    /// how many there were.
    pub fn drain(&mut self, mut each: impl FnMut(&[u8])) -> usize {
        let mut count = 0;
        while let Some(item) = self.ring.next() {
            each(&item);
            count += 1;
        }
        count
    }

    pub fn counters(&self) -> Result<KernelCounters, ProbeError> {
        let sum = |index: u32| -> Result<u64, ProbeError> {
            let values = self.counters.get(&index, 0).map_err(|err| ProbeError::Map("COUNTERS", err))?;
            Ok(values.iter().sum())
        };
        Ok(KernelCounters { seen: sum(counter::SEEN)?, dropped: sum(counter::DROPPED)? })
    }

    /// The program's accumulated run time and run count, as kept by the
    /// kernel while BPF statistics are enabled (see [`enable_bpf_stats`]).
    pub fn run_stats(&self) -> Result<(Duration, u64), ProbeError> {
        let program: &TracePoint = self
            .ebpf
            .program(PROGRAM)
            .and_then(|p| p.try_into().ok())
            .ok_or_else(|| ProbeError::Load(format!("no program {PROGRAM}").into()))?;
        let info = program.info().map_err(|err| ProbeError::Load(Box::new(err)))?;
        Ok((info.run_time(), info.run_count()))
    }
}

/// Turns on the kernel's per-program run time accounting for as long as
/// the returned descriptor is open. It costs a little on every BPF run,
/// so only benchmarks ask for it.
pub fn enable_bpf_stats() -> Result<std::os::fd::OwnedFd, ProbeError> {
    aya::sys::enable_stats(aya::sys::Stats::RunTime).map_err(|err| ProbeError::Load(Box::new(err)))
}

fn take_map(ebpf: &mut Ebpf, name: &'static str) -> Result<aya::maps::Map, ProbeError> {
    ebpf.take_map(name).ok_or_else(|| ProbeError::Load(format!("no map {name} in the object").into()))
}

fn page_size() -> u64 {
    // SAFETY: no preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if size > 0 {
        size as u64
    } else {
        4096
    }
}

/// Kernels before 5.11 charge BPF maps to RLIMIT_MEMLOCK, whose default is
/// far below a 16 MiB ring buffer; later kernels ignore it.
fn raise_memlock_limit() {
    let unlimited = libc::rlimit { rlim_cur: libc::RLIM_INFINITY, rlim_max: libc::RLIM_INFINITY };
    // SAFETY: a valid rlimit pointer.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) } != 0 {
        tracing::debug!("could not raise RLIMIT_MEMLOCK: {}", std::io::Error::last_os_error());
    }
}
