//! `dac-probe`'s userspace library: loading the `sched_process_exec`
//! BPF program (with kernel structure offsets read from BTF), reading its
//! ring buffer, turning each record into the seed's event, and writing
//! events to MongoDB in batches. The `dac-probe` binary and its benchmark
//! are built on it.

pub mod btf;
pub mod event;
pub mod mongo;
pub mod probe;
pub mod tracefs;
