//! The inert part of WASI 0.2 that every rule is linked with, implemented
//! here rather than by wasmtime-wasi (which would bring tokio into the host
//! for a context that does nothing).
//!
//! The 18 interfaces of [`GRANTED_WASI`] — the world
//! `dac:inert-wasi/granted` in `engine/wit-wasi/` — and nothing more. Each
//! behaves as wasmtime-wasi 48's did with the empty context dac used to
//! build, so a rule sees the same thing (`tests/hostile-rules/inert-wasi`
//! pins it):
//!
//! - `wasi:cli`: no arguments, no environment variables, no initial
//!   directory; stdin is a closed stream (every read reports `closed`);
//!   stdout and stderr accept and discard everything; no terminals;
//!   `exit` ends the evaluation with a trap.
//! - `wasi:clocks`: the wall clock stands at the Unix epoch (resolution
//!   1 s), the monotonic clock at instant 0 (resolution 1 s).
//! - `wasi:random`: the secure and insecure generators each cycle through
//!   the same fixed 256-byte sequence, from its start in every instance;
//!   the insecure seed is (0, 0).
//! - `wasi:io`: the streams above and their pollables; every pollable is
//!   ready, so `poll` returns every index.
//!
//! Where it differs, on purpose: a clock pollable is ready at once (see
//! [`Wasi::subscribe`]); `poll` lists its (all ready) indices in ascending
//! order, where wasmtime-wasi's order followed its table layout; a rule may
//! hold fewer resources at once ([`MAX_RESOURCES`]); and the traps (exit,
//! misuse of `wasi:io`) say in words which call of the rule caused them.
//!
//! The resources live in a [`ResourceTable`] created on the first WASI
//! call an instance makes ([`WasiState`]), so rules that never call WASI
//! (Rust, C) pay nothing for it.

use wasmtime::component::{HasSelf, Linker, Resource, ResourceTable, ResourceTableError, ResourceType};

/// The WASI 0.2 interfaces linked for every rule, inert (see the module
/// documentation). Any other WASI interface traps.
pub const GRANTED_WASI: [&str; 18] = [
    "wasi:cli/environment",
    "wasi:cli/exit",
    "wasi:cli/stdin",
    "wasi:cli/stdout",
    "wasi:cli/stderr",
    "wasi:cli/terminal-input",
    "wasi:cli/terminal-output",
    "wasi:cli/terminal-stdin",
    "wasi:cli/terminal-stdout",
    "wasi:cli/terminal-stderr",
    "wasi:clocks/wall-clock",
    "wasi:clocks/monotonic-clock",
    "wasi:random/random",
    "wasi:random/insecure",
    "wasi:random/insecure-seed",
    "wasi:io/error",
    "wasi:io/poll",
    "wasi:io/streams",
];

/// Whether `import` (`wasi:cli/stdout@0.2.3`) is one of [`GRANTED_WASI`]:
/// any 0.2 version, which the linker resolves to the 0.2.12 definitions
/// here (wasmtime matches semver-compatible versions).
pub(crate) fn is_granted(import: &str) -> bool {
    import
        .split_once('@')
        .is_some_and(|(interface, version)| version.starts_with("0.2.") && GRANTED_WASI.contains(&interface))
}

/// A store's WASI state, created on the first WASI call.
#[derive(Default)]
pub(crate) struct WasiState(Option<Box<Wasi>>);

/// A store's data that carries a [`WasiState`].
pub(crate) trait HasWasi: 'static {
    fn wasi_state(&mut self) -> &mut WasiState;
}

mod bindings {
    wasmtime::component::bindgen!({
        path: "wit-wasi",
        world: "dac:inert-wasi/granted",
        imports: { default: trappable },
        with: {
            "wasi:io/error.error": super::IoError,
            "wasi:io/poll.pollable": super::Pollable,
            "wasi:io/streams.input-stream": super::InputStream,
            "wasi:io/streams.output-stream": super::OutputStream,
            "wasi:cli/terminal-input.terminal-input": super::TerminalInput,
            "wasi:cli/terminal-output.terminal-output": super::TerminalOutput,
        },
    });
}

use bindings::wasi::cli::{
    environment, exit, stderr, stdin, stdout, terminal_input, terminal_output, terminal_stderr, terminal_stdin,
    terminal_stdout,
};
use bindings::wasi::clocks::{monotonic_clock, wall_clock};
use bindings::wasi::io::{error, poll, streams};
use bindings::wasi::random::{insecure, insecure_seed, random};

type StreamResult<T> = wasmtime::Result<Result<T, streams::StreamError>>;

/// `wasi:io/streams.input-stream`: stdin, the only input stream, closed.
pub struct InputStream;

/// `wasi:io/streams.output-stream`: stdout or stderr; both discard what they
/// are given.
pub struct OutputStream;

/// `wasi:io/poll.pollable`: always ready.
pub struct Pollable;

/// `wasi:io/error.error`. Nothing here fails with one (stdin reports
/// `closed`, the outputs never fail), so no rule ever holds one; the type
/// exists because `wasi:io/streams` names it.
pub struct IoError(String);

/// `wasi:cli/terminal-input.terminal-input`: never handed out (no stdio
/// stream is a terminal).
pub struct TerminalInput;

/// `wasi:cli/terminal-output.terminal-output`: never handed out.
pub struct TerminalOutput;

/// Most WASI resources (streams, pollables) one instance may hold at once;
/// creating one more traps, naming the limit. Language runtimes hold a
/// handful: CPython and StarlingMonkey keep a stream per stdio file and
/// drop each pollable after use. A rule creating handles in a loop grows
/// two host tables, this one and wasmtime's handle table, in memory its
/// own memory limit does not see. wasmtime alone stops a store only at
/// 100,000 live handles ("store handle limit exceeded"), several MB of
/// host memory per instance; at 1024 both tables stay under ~100 KB.
pub(crate) const MAX_RESOURCES: usize = 1024;

/// `wasi:io/streams`: what a stdout or stderr write may hold at once
/// (`check-write`); wasmtime-wasi's sink granted the same.
const WRITE_BUDGET: u64 = 64 * 1024;

/// `wasi:io/streams`: the most `blocking-write-and-flush` and
/// `blocking-write-zeroes-and-flush` accept, as WASI specifies.
const BLOCKING_WRITE_MAX: u64 = 4096;

/// The most bytes one `get-random-bytes` call may ask for (wasmtime-wasi's
/// limit).
const MAX_RANDOM_BYTES: u64 = 64 << 20;

/// One instance's WASI state: its resources and its two random generators.
pub(crate) struct Wasi {
    table: ResourceTable,
    random: Deterministic,
    insecure: Deterministic,
}

impl Wasi {
    fn new() -> Wasi {
        let mut table = ResourceTable::new();
        table.set_max_capacity(MAX_RESOURCES);
        Wasi { table, random: Deterministic::default(), insecure: Deterministic::default() }
    }

    fn push<T: Send + 'static>(&mut self, resource: T) -> wasmtime::Result<Resource<T>> {
        self.table.push(resource).map_err(too_many)
    }

    /// A pollable that is ready at once. Time does not pass for a rule:
    /// its clocks stand still, so a deadline on them (`subscribe-instant`,
    /// `subscribe-duration`) is ready as soon as it is asked for, whatever
    /// its length. wasmtime-wasi slept the host thread for the real
    /// duration instead, where no deadline or fuel budget could stop it
    /// (they act in guest code only). A rule that waits in a loop for time
    /// to pass spins in guest code until the host's deadline or fuel
    /// budget ends it.
    fn subscribe(&mut self) -> wasmtime::Result<Resource<Pollable>> {
        self.push(Pollable)
    }

    /// A pollable on `stream`. As in wasmtime-wasi, the stream cannot be
    /// dropped while the pollable lives.
    fn subscribe_to<T: 'static>(&mut self, stream: &Resource<T>) -> wasmtime::Result<Resource<Pollable>> {
        self.table.push_child(Pollable, stream).map_err(too_many)
    }

    fn drop_resource<T: 'static>(&mut self, resource: Resource<T>, what: &str) -> wasmtime::Result<()> {
        match self.table.delete(resource) {
            Ok(_) => Ok(()),
            Err(ResourceTableError::HasChildren) => {
                wasmtime::bail!("the rule dropped a WASI {what} while a pollable on it was still live")
            }
            Err(err) => Err(err.into()),
        }
    }
}

fn too_many(err: ResourceTableError) -> wasmtime::Error {
    match err {
        ResourceTableError::Full => wasmtime::format_err!(
            "the rule holds {MAX_RESOURCES} WASI resources (streams, pollables) at once, the most dac allows an instance"
        ),
        err => err.into(),
    }
}

/// The lazily created WASI state of `host`.
fn state<T: HasWasi>(host: &mut T) -> &mut Wasi {
    host.wasi_state().0.get_or_insert_with(|| Box::new(Wasi::new()))
}

/// Links the interfaces of [`GRANTED_WASI`], served from each store's
/// [`WasiState`]. A component importing any 0.2.x version of one resolves
/// to it (wasmtime matches semver-compatible imports).
pub(crate) fn add_to_linker<T: HasWasi>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    bindings::Granted::add_to_linker::<T, HasSelf<Wasi>>(linker, state::<T>)
}

/// The host type of the `wasi:io` resource called `name`, for a denied
/// interface that names it (`wasi:filesystem/types` uses `input-stream`,
/// `output-stream` and `error`; `wasi:sockets` uses `pollable`): it must be
/// the very type the granted interfaces define.
pub(crate) fn io_resource_type(name: &str) -> Option<ResourceType> {
    Some(match name {
        "input-stream" => ResourceType::host::<InputStream>(),
        "output-stream" => ResourceType::host::<OutputStream>(),
        "pollable" => ResourceType::host::<Pollable>(),
        "error" => ResourceType::host::<IoError>(),
        _ => return None,
    })
}

/// A generator cycling through the fixed sequence `b * 167 + 13` for `b` in
/// 0..=255 (a permutation of all byte values), from its start. Draws as
/// wasmtime-wasi's `Deterministic` generator did through `rand` 0.10: a
/// u32 is the next four bytes big-endian, a u64 the next two u32s, and a
/// random byte the low byte of a u32 (so each costs four of the sequence).
#[derive(Default)]
struct Deterministic {
    /// Where the sequence continues; it wraps around after 255.
    next: u8,
}

impl Deterministic {
    fn byte(&mut self) -> u8 {
        let byte = self.next.wrapping_mul(167).wrapping_add(13);
        self.next = self.next.wrapping_add(1);
        byte
    }

    fn u32(&mut self) -> u32 {
        u32::from_be_bytes([self.byte(), self.byte(), self.byte(), self.byte()])
    }

    fn u64(&mut self) -> u64 {
        (u64::from(self.u32()) << 32) | u64::from(self.u32())
    }

    fn bytes(&mut self, len: u64) -> wasmtime::Result<Vec<u8>> {
        if len > MAX_RANDOM_BYTES {
            wasmtime::bail!(
                "the rule asked wasi:random for {len} bytes at once, above the limit of {MAX_RANDOM_BYTES}"
            );
        }
        Ok((0..len).map(|_| self.u32() as u8).collect())
    }
}

impl environment::Host for Wasi {
    fn get_environment(&mut self) -> wasmtime::Result<Vec<(String, String)>> {
        Ok(Vec::new())
    }

    fn get_arguments(&mut self) -> wasmtime::Result<Vec<String>> {
        Ok(Vec::new())
    }

    fn initial_cwd(&mut self) -> wasmtime::Result<Option<String>> {
        Ok(None)
    }
}

impl exit::Host for Wasi {
    fn exit(&mut self, status: Result<(), ()>) -> wasmtime::Result<()> {
        let status = if status.is_ok() { "success" } else { "failure" };
        wasmtime::bail!(
            "the rule called `wasi:cli/exit#exit` ({status}); a rule cannot exit, it returns from `evaluate`"
        )
    }

    fn exit_with_code(&mut self, status_code: u8) -> wasmtime::Result<()> {
        wasmtime::bail!(
            "the rule called `wasi:cli/exit#exit-with-code` ({status_code}); a rule cannot exit, it returns from `evaluate`"
        )
    }
}

impl stdin::Host for Wasi {
    fn get_stdin(&mut self) -> wasmtime::Result<Resource<InputStream>> {
        self.push(InputStream)
    }
}

impl stdout::Host for Wasi {
    fn get_stdout(&mut self) -> wasmtime::Result<Resource<OutputStream>> {
        self.push(OutputStream)
    }
}

impl stderr::Host for Wasi {
    fn get_stderr(&mut self) -> wasmtime::Result<Resource<OutputStream>> {
        self.push(OutputStream)
    }
}

impl terminal_input::Host for Wasi {}

impl terminal_input::HostTerminalInput for Wasi {
    fn drop(&mut self, terminal: Resource<TerminalInput>) -> wasmtime::Result<()> {
        self.drop_resource(terminal, "terminal")
    }
}

impl terminal_output::Host for Wasi {}

impl terminal_output::HostTerminalOutput for Wasi {
    fn drop(&mut self, terminal: Resource<TerminalOutput>) -> wasmtime::Result<()> {
        self.drop_resource(terminal, "terminal")
    }
}

impl terminal_stdin::Host for Wasi {
    fn get_terminal_stdin(&mut self) -> wasmtime::Result<Option<Resource<TerminalInput>>> {
        Ok(None)
    }
}

impl terminal_stdout::Host for Wasi {
    fn get_terminal_stdout(&mut self) -> wasmtime::Result<Option<Resource<TerminalOutput>>> {
        Ok(None)
    }
}

impl terminal_stderr::Host for Wasi {
    fn get_terminal_stderr(&mut self) -> wasmtime::Result<Option<Resource<TerminalOutput>>> {
        Ok(None)
    }
}

impl wall_clock::Host for Wasi {
    fn now(&mut self) -> wasmtime::Result<wall_clock::Datetime> {
        Ok(wall_clock::Datetime { seconds: 0, nanoseconds: 0 })
    }

    fn resolution(&mut self) -> wasmtime::Result<wall_clock::Datetime> {
        Ok(wall_clock::Datetime { seconds: 1, nanoseconds: 0 })
    }
}

impl monotonic_clock::Host for Wasi {
    fn now(&mut self) -> wasmtime::Result<monotonic_clock::Instant> {
        Ok(0)
    }

    fn resolution(&mut self) -> wasmtime::Result<monotonic_clock::Duration> {
        Ok(1_000_000_000)
    }

    fn subscribe_instant(&mut self, _when: monotonic_clock::Instant) -> wasmtime::Result<Resource<Pollable>> {
        self.subscribe()
    }

    fn subscribe_duration(&mut self, _when: monotonic_clock::Duration) -> wasmtime::Result<Resource<Pollable>> {
        self.subscribe()
    }
}

impl random::Host for Wasi {
    fn get_random_bytes(&mut self, len: u64) -> wasmtime::Result<Vec<u8>> {
        self.random.bytes(len)
    }

    fn get_random_u64(&mut self) -> wasmtime::Result<u64> {
        Ok(self.random.u64())
    }
}

impl insecure::Host for Wasi {
    fn get_insecure_random_bytes(&mut self, len: u64) -> wasmtime::Result<Vec<u8>> {
        self.insecure.bytes(len)
    }

    fn get_insecure_random_u64(&mut self) -> wasmtime::Result<u64> {
        Ok(self.insecure.u64())
    }
}

impl insecure_seed::Host for Wasi {
    fn insecure_seed(&mut self) -> wasmtime::Result<(u64, u64)> {
        Ok((0, 0))
    }
}

impl error::Host for Wasi {}

impl error::HostError for Wasi {
    fn to_debug_string(&mut self, error: Resource<IoError>) -> wasmtime::Result<String> {
        Ok(self.table.get(&error)?.0.clone())
    }

    fn drop(&mut self, error: Resource<IoError>) -> wasmtime::Result<()> {
        self.drop_resource(error, "error")
    }
}

impl poll::Host for Wasi {
    fn poll(&mut self, pollables: Vec<Resource<Pollable>>) -> wasmtime::Result<Vec<u32>> {
        if pollables.is_empty() {
            wasmtime::bail!("the rule called `wasi:io/poll#poll` with no pollables");
        }
        for pollable in &pollables {
            self.table.get(pollable)?;
        }
        // Every pollable is ready. The list comes from the guest's memory,
        // whose length is a u32.
        Ok((0..u32::try_from(pollables.len())?).collect())
    }
}

impl poll::HostPollable for Wasi {
    fn ready(&mut self, pollable: Resource<Pollable>) -> wasmtime::Result<bool> {
        self.table.get(&pollable)?;
        Ok(true)
    }

    fn block(&mut self, pollable: Resource<Pollable>) -> wasmtime::Result<()> {
        self.table.get(&pollable)?;
        Ok(())
    }

    fn drop(&mut self, pollable: Resource<Pollable>) -> wasmtime::Result<()> {
        self.drop_resource(pollable, "pollable")
    }
}

impl streams::Host for Wasi {}

impl streams::HostInputStream for Wasi {
    fn read(&mut self, stream: Resource<InputStream>, _len: u64) -> StreamResult<Vec<u8>> {
        self.table.get(&stream)?;
        Ok(Err(streams::StreamError::Closed))
    }

    fn blocking_read(&mut self, stream: Resource<InputStream>, len: u64) -> StreamResult<Vec<u8>> {
        self.read(stream, len)
    }

    fn skip(&mut self, stream: Resource<InputStream>, _len: u64) -> StreamResult<u64> {
        self.table.get(&stream)?;
        Ok(Err(streams::StreamError::Closed))
    }

    fn blocking_skip(&mut self, stream: Resource<InputStream>, len: u64) -> StreamResult<u64> {
        self.skip(stream, len)
    }

    fn subscribe(&mut self, stream: Resource<InputStream>) -> wasmtime::Result<Resource<Pollable>> {
        self.subscribe_to(&stream)
    }

    fn drop(&mut self, stream: Resource<InputStream>) -> wasmtime::Result<()> {
        self.drop_resource(stream, "input stream")
    }
}

impl streams::HostOutputStream for Wasi {
    fn check_write(&mut self, stream: Resource<OutputStream>) -> StreamResult<u64> {
        self.table.get(&stream)?;
        Ok(Ok(WRITE_BUDGET))
    }

    fn write(&mut self, stream: Resource<OutputStream>, _contents: Vec<u8>) -> StreamResult<()> {
        self.table.get(&stream)?;
        Ok(Ok(()))
    }

    fn blocking_write_and_flush(&mut self, stream: Resource<OutputStream>, contents: Vec<u8>) -> StreamResult<()> {
        if contents.len() as u64 > BLOCKING_WRITE_MAX {
            wasmtime::bail!(
                "the rule passed {} bytes to `wasi:io/streams#blocking-write-and-flush`, which takes at most {BLOCKING_WRITE_MAX}",
                contents.len()
            );
        }
        self.write(stream, contents)
    }

    fn flush(&mut self, stream: Resource<OutputStream>) -> StreamResult<()> {
        self.table.get(&stream)?;
        Ok(Ok(()))
    }

    fn blocking_flush(&mut self, stream: Resource<OutputStream>) -> StreamResult<()> {
        self.flush(stream)
    }

    fn subscribe(&mut self, stream: Resource<OutputStream>) -> wasmtime::Result<Resource<Pollable>> {
        self.subscribe_to(&stream)
    }

    fn write_zeroes(&mut self, stream: Resource<OutputStream>, len: u64) -> StreamResult<()> {
        if len > WRITE_BUDGET {
            wasmtime::bail!(
                "the rule wrote {len} zeroes with `wasi:io/streams#write-zeroes`, more than `check-write` allowed ({WRITE_BUDGET})"
            );
        }
        self.flush(stream)
    }

    fn blocking_write_zeroes_and_flush(&mut self, stream: Resource<OutputStream>, len: u64) -> StreamResult<()> {
        if len > BLOCKING_WRITE_MAX {
            wasmtime::bail!(
                "the rule passed {len} zeroes to `wasi:io/streams#blocking-write-zeroes-and-flush`, which takes at most {BLOCKING_WRITE_MAX}"
            );
        }
        self.flush(stream)
    }

    fn splice(&mut self, stream: Resource<OutputStream>, src: Resource<InputStream>, len: u64) -> StreamResult<u64> {
        self.table.get(&stream)?;
        self.table.get(&src)?;
        // Nothing to move is done before the source is read; stdin, the
        // only source, is closed.
        if len.min(WRITE_BUDGET) == 0 {
            return Ok(Ok(0));
        }
        Ok(Err(streams::StreamError::Closed))
    }

    fn blocking_splice(
        &mut self,
        stream: Resource<OutputStream>,
        src: Resource<InputStream>,
        len: u64,
    ) -> StreamResult<u64> {
        self.splice(stream, src, len)
    }

    fn drop(&mut self, stream: Resource<OutputStream>) -> wasmtime::Result<()> {
        self.drop_resource(stream, "output stream")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use streams::{HostInputStream as _, HostOutputStream as _};

    /// The world bindgen reads imports exactly the granted interfaces.
    #[test]
    fn the_world_imports_exactly_the_granted_interfaces() {
        let world = include_str!("../wit-wasi/world.wit");
        let mut imported: Vec<&str> =
            world.lines().filter_map(|line| line.trim().strip_prefix("import ")?.strip_suffix("@0.2.12;")).collect();
        let mut granted = GRANTED_WASI.to_vec();
        imported.sort_unstable();
        granted.sort_unstable();
        assert_eq!(imported, granted);
    }

    /// The sequences wasmtime-wasi's `Deterministic` generator produced
    /// from the same bytes, drawn through `rand` 0.10.
    #[test]
    fn random_draws_as_wasmtime_wasi_did() {
        let sequence: Vec<u8> = (0..=255u8).map(|b| b.wrapping_mul(167).wrapping_add(13)).collect();
        let mut wasi = Wasi::new();
        // A byte is the low byte of a big-endian u32: every fourth one.
        let bytes = random::Host::get_random_bytes(&mut wasi, 5).unwrap();
        assert_eq!(bytes, [sequence[3], sequence[7], sequence[11], sequence[15], sequence[19]]);
        let u64 = random::Host::get_random_u64(&mut wasi).unwrap();
        assert_eq!(u64, u64::from_be_bytes(sequence[20..28].try_into().unwrap()));
        // The insecure generator is separate and starts afresh.
        assert_eq!(insecure::Host::get_insecure_random_u64(&mut wasi).unwrap(), 0x0db4_5b02_a950_f79e);
        assert_eq!(insecure_seed::Host::insecure_seed(&mut wasi).unwrap(), (0, 0));
        // The sequence wraps around after 256 bytes.
        let mut generator = Deterministic { next: 254 };
        assert_eq!(generator.u32(), u32::from_be_bytes([sequence[254], sequence[255], sequence[0], sequence[1]]));
        assert!(random::Host::get_random_bytes(&mut wasi, MAX_RANDOM_BYTES + 1).is_err());
    }

    #[test]
    fn stdin_is_closed_and_the_outputs_discard_everything() {
        let mut wasi = Wasi::new();
        let input = stdin::Host::get_stdin(&mut wasi).unwrap();
        let borrow = |r: &Resource<InputStream>| Resource::<InputStream>::new_borrow(r.rep());
        assert!(matches!(wasi.read(borrow(&input), 10).unwrap(), Err(streams::StreamError::Closed)));
        assert!(matches!(wasi.blocking_skip(borrow(&input), 10).unwrap(), Err(streams::StreamError::Closed)));
        let output = stdout::Host::get_stdout(&mut wasi).unwrap();
        let out = || Resource::<OutputStream>::new_borrow(output.rep());
        assert_eq!(wasi.check_write(out()).unwrap().unwrap(), WRITE_BUDGET);
        wasi.write(out(), vec![b'x'; 1 << 20]).unwrap().unwrap();
        wasi.blocking_write_and_flush(out(), vec![b'x'; 4096]).unwrap().unwrap();
        assert!(wasi.blocking_write_and_flush(out(), vec![b'x'; 4097]).is_err());
        assert_eq!(wasi.splice(out(), borrow(&input), 0).unwrap().unwrap(), 0);
        assert!(matches!(wasi.splice(out(), borrow(&input), 1).unwrap(), Err(streams::StreamError::Closed)));
        // A stream outlives its pollables.
        let pollable = streams::HostInputStream::subscribe(&mut wasi, borrow(&input)).unwrap();
        let orphaned = streams::HostInputStream::drop(&mut wasi, Resource::new_own(input.rep())).unwrap_err();
        assert!(orphaned.to_string().contains("while a pollable on it was still live"), "{orphaned}");
        assert_eq!(poll::Host::poll(&mut wasi, vec![Resource::new_borrow(pollable.rep())]).unwrap(), [0]);
        poll::HostPollable::drop(&mut wasi, pollable).unwrap();
        streams::HostInputStream::drop(&mut wasi, input).unwrap();
        assert!(poll::Host::poll(&mut wasi, Vec::new()).is_err());
    }

    #[test]
    fn exit_traps_naming_the_call() {
        let mut wasi = Wasi::new();
        let err = exit::Host::exit(&mut wasi, Ok(())).unwrap_err();
        assert!(err.to_string().contains("the rule called `wasi:cli/exit#exit`"), "{err}");
    }

    #[test]
    fn an_instance_holds_at_most_max_resources() {
        let mut wasi = Wasi::new();
        let held: Vec<_> = (0..MAX_RESOURCES).map(|_| stdout::Host::get_stdout(&mut wasi).unwrap()).collect();
        let err = monotonic_clock::Host::subscribe_duration(&mut wasi, 0).unwrap_err();
        assert!(err.to_string().contains("holds 1024 WASI resources"), "{err}");
        // Dropping one makes room for one.
        let first = held.into_iter().next().unwrap();
        streams::HostOutputStream::drop(&mut wasi, first).unwrap();
        monotonic_clock::Host::subscribe_duration(&mut wasi, 0).unwrap();
        assert!(stderr::Host::get_stderr(&mut wasi).is_err());
    }
}
