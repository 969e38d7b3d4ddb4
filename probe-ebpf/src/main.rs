//! The kernel side of `dac-probe`: one program on the
//! `sched/sched_process_exec` tracepoint, which fires once per successful
//! exec, after the new image is in place (so `comm`, `mm` and the argument
//! area already belong to the new program).
//!
//! Each exec becomes one variable-length record in the `EVENTS` ring
//! buffer (see `dac-probe-common`). Records are written without waking the
//! reader (`BPF_RB_NO_WAKEUP`): a wake-up per event multiplies the cost of
//! an exec by ten, and userspace polls on an interval instead. When the
//! ring buffer is full the record is lost and counted in `COUNTERS`.
#![no_std]
#![no_main]

use aya_ebpf::bindings::BPF_RB_NO_WAKEUP;
use aya_ebpf::helpers::generated::{
    bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_current_task, bpf_get_current_uid_gid,
    bpf_ktime_get_boot_ns, bpf_probe_read_kernel, bpf_probe_read_kernel_str, bpf_probe_read_user,
};
use aya_ebpf::macros::{map, tracepoint};
use aya_ebpf::maps::{PerCpuArray, RingBuf};
use aya_ebpf::programs::TracePointContext;
use aya_ebpf::EbpfContext;
use core::ffi::c_void;
use dac_probe_common::{
    counter, ExecEvent, KernelOffsets, ARGS_CAP, ARGS_OFFSET, COMM_LEN, FILENAME_CAP, FLAG_ARGS_TRUNCATED,
    FLAG_ARGS_UNREADABLE, FLAG_FILENAME_TRUNCATED, FLAG_PPID_UNREADABLE,
};

// Sized by userspace (`--ring-buffer-size`) before loading.
#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(1 << 24, 0);

#[map]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::COUNT, 0);

// One record under construction per CPU: far larger than the BPF stack.
#[map]
static SCRATCH: PerCpuArray<ExecEvent> = PerCpuArray::with_max_entries(1, 0);

// Written by userspace from the kernel's BTF before loading.
#[no_mangle]
static DAC_PROBE_OFFSETS: KernelOffsets =
    KernelOffsets { task_real_parent: 0, task_tgid: 0, task_mm: 0, mm_arg_start: 0, mm_arg_end: 0, tp_filename_loc: 0 };

#[tracepoint]
pub fn dac_probe_exec(ctx: TracePointContext) -> u32 {
    count(counter::SEEN);
    let Some(event) = SCRATCH.get_ptr_mut(0) else {
        count(counter::DROPPED);
        return 0;
    };
    // SAFETY: the per-CPU slot is ours for the duration of this run
    // (tracepoint programs do not nest on one CPU).
    let event = unsafe { &mut *event };
    // Opaque to the compiler, so the bound check below stays in the code
    // for the verifier, which must see that the copy stays in the map value.
    let args_len = core::hint::black_box(fill(&ctx, event));
    if args_len > ARGS_CAP {
        return 0;
    }
    let len = ExecEvent::used_len(args_len);
    // SAFETY: `len` ≤ size_of::<ExecEvent>() because `args_len` ≤ ARGS_CAP.
    let bytes = unsafe { core::slice::from_raw_parts((event as *const ExecEvent).cast::<u8>(), len) };
    if EVENTS.output::<[u8]>(bytes, BPF_RB_NO_WAKEUP as u64).is_err() {
        count(counter::DROPPED);
    }
    0
}

/// Fills the record and returns how many argument bytes it holds.
#[inline(always)]
fn fill(ctx: &TracePointContext, event: &mut ExecEvent) -> usize {
    // SAFETY: read_volatile keeps the compiler from folding the
    // placeholder zeros; userspace rewrites them before loading.
    let offsets = unsafe { core::ptr::read_volatile(&DAC_PROBE_OFFSETS) };
    let header = &mut event.header;
    header.boot_ns = unsafe { bpf_ktime_get_boot_ns() };
    header.pid = (unsafe { bpf_get_current_pid_tgid() } >> 32) as u32;
    let uid_gid = unsafe { bpf_get_current_uid_gid() };
    header.uid = uid_gid as u32;
    header.gid = (uid_gid >> 32) as u32;
    header.flags = 0;
    header.comm = [0; COMM_LEN];
    unsafe { bpf_get_current_comm(header.comm.as_mut_ptr().cast(), COMM_LEN as u32) };

    let task = unsafe { bpf_get_current_task() } as usize;
    let parent: usize = read_kernel(task + offsets.task_real_parent as usize).unwrap_or(0);
    match read_kernel::<i32>(parent + offsets.task_tgid as usize) {
        Some(tgid) if parent != 0 => header.ppid = tgid as u32,
        _ => {
            header.ppid = 0;
            header.flags |= FLAG_PPID_UNREADABLE;
        }
    }

    // The tracepoint record's `__data_loc` word: offset in the low half,
    // length in the high half, relative to the record's start.
    let base = ctx.as_ptr() as usize;
    let loc: u32 = read_kernel(base + offsets.tp_filename_loc as usize).unwrap_or(0);
    let copied = unsafe {
        bpf_probe_read_kernel_str(
            event.filename.as_mut_ptr().cast(),
            FILENAME_CAP as u32,
            (base + (loc & 0xffff) as usize) as *const c_void,
        )
    };
    let filename_len = if copied > 0 { copied as u32 - 1 } else { 0 };
    event.header.filename_len = filename_len;
    if filename_len as usize >= FILENAME_CAP - 1 {
        event.header.flags |= FLAG_FILENAME_TRUNCATED;
    }

    let mm: usize = read_kernel(task + offsets.task_mm as usize).unwrap_or(0);
    let start: u64 = read_kernel(mm + offsets.mm_arg_start as usize).unwrap_or(0);
    let end: u64 = read_kernel(mm + offsets.mm_arg_end as usize).unwrap_or(0);
    if mm == 0 || end <= start {
        event.header.args_size = 0;
        event.header.args_len = 0;
        event.header.flags |= FLAG_ARGS_UNREADABLE;
        return 0;
    }
    let size = end - start;
    event.header.args_size = size.min(u32::MAX as u64) as u32;
    // Two branches so that each read's size is visibly bounded for the
    // verifier: a constant, or a value masked below ARGS_CAP.
    let (len, status) = if size >= ARGS_CAP as u64 {
        if size > ARGS_CAP as u64 {
            event.header.flags |= FLAG_ARGS_TRUNCATED;
        }
        let status =
            unsafe { bpf_probe_read_user(event.args.as_mut_ptr().cast(), ARGS_CAP as u32, start as *const c_void) };
        (ARGS_CAP, status)
    } else {
        let len = (size as usize) & (ARGS_CAP - 1);
        let status = unsafe { bpf_probe_read_user(event.args.as_mut_ptr().cast(), len as u32, start as *const c_void) };
        (len, status)
    };
    if status != 0 {
        event.header.flags |= FLAG_ARGS_UNREADABLE;
        event.header.args_len = 0;
        return 0;
    }
    event.header.args_len = len as u32;
    len
}

#[inline(always)]
fn read_kernel<T: Copy>(address: usize) -> Option<T> {
    let mut value = core::mem::MaybeUninit::<T>::uninit();
    let status = unsafe {
        bpf_probe_read_kernel(value.as_mut_ptr().cast(), core::mem::size_of::<T>() as u32, address as *const c_void)
    };
    // SAFETY: the helper wrote every byte when it returned 0.
    (status == 0).then(|| unsafe { value.assume_init() })
}

#[inline(always)]
fn count(index: u32) {
    if let Some(counter) = COUNTERS.get_ptr_mut(index) {
        // SAFETY: this CPU's slot; tracepoint programs do not nest on one CPU.
        unsafe { *counter += 1 };
    }
}

const _: () = assert!(ARGS_OFFSET + ARGS_CAP == core::mem::size_of::<ExecEvent>());

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

// The probe-reading helpers are GPL-only.
#[link_section = "license"]
#[no_mangle]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
