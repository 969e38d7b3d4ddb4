//! `dac-probe-bench`: what capturing costs and whether it keeps up, measured
//! on the real `dac-probe` binary (run it as root, after
//! `cargo build --release -p dac-probe`):
//!
//! - the exec rate of a loop with and without the probe attached;
//! - BPF run time per exec, from the kernel's own per-program statistics
//!   (enabled for the run with BPF_ENABLE_STATS);
//! - the probe's userspace CPU time (user + system, from wait4) per 10,000
//!   events, writing NDJSON;
//! - loss at a 50,000-exec burst from parallel spawners, default buffers;
//! - the same exec loop under libbpf-tools' `execsnoop`, where installed.
//!
//! Figures on a shared VM are noisy: compare the ratios within one run.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const LOOP_EXECS: usize = 10_000;
const BURST_EXECS: usize = 50_000;

fn main() -> anyhow::Result<()> {
    // SAFETY: no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        anyhow::bail!("run dac-probe-bench as root: it loads BPF programs");
    }
    let probe_bin = std::env::current_exe()?.with_file_name("dac-probe");
    if !probe_bin.is_file() {
        anyhow::bail!("{} not found: cargo build --release -p dac-probe", probe_bin.display());
    }
    let spawners = std::thread::available_parallelism().map_or(2, |n| n.get());
    let _stats = dac_probe::probe::enable_bpf_stats()?;
    println!("dac-probe-bench: {spawners} spawner threads, /bin/true with a marker argument; BPF stats enabled");

    let baseline = exec_loop("baseline", LOOP_EXECS, spawners);
    println!(
        "\nexec loop without a probe: {LOOP_EXECS} execs in {:.2?} ({:.0} execs/s)",
        baseline,
        rate(LOOP_EXECS, baseline)
    );

    let run = measure(&probe_bin, "loop", LOOP_EXECS, spawners)?;
    println!("\ndac-probe, {LOOP_EXECS}-exec loop (defaults: 16 MiB ring buffer, 50 ms poll, NDJSON to a file):");
    run.print(baseline, LOOP_EXECS);

    let burst_baseline = exec_loop("baseline-burst", BURST_EXECS, spawners * 4);
    println!(
        "\nexec burst without a probe: {BURST_EXECS} execs from {} threads in {:.2?} ({:.0} execs/s)",
        spawners * 4,
        burst_baseline,
        rate(BURST_EXECS, burst_baseline)
    );
    let burst = measure(&probe_bin, "burst", BURST_EXECS, spawners * 4)?;
    println!("\ndac-probe, {BURST_EXECS}-exec burst from {} spawner threads (defaults):", spawners * 4);
    burst.print(burst_baseline, BURST_EXECS);

    match which("execsnoop") {
        Some(execsnoop) => {
            let elapsed_and_bpf = under_execsnoop(&execsnoop, spawners)?;
            let (elapsed, bpf) = elapsed_and_bpf;
            println!("\nlibbpf-tools execsnoop ({}), same {LOOP_EXECS}-exec loop:", execsnoop.display());
            println!(
                "  {:.0} execs/s ({:.2}× the rate without a probe); BPF time {} per exec over its programs",
                rate(LOOP_EXECS, elapsed),
                baseline.as_secs_f64() / elapsed.as_secs_f64(),
                bpf.map_or("unknown".into(), |ns| format!("{ns:.0} ns")),
            );
            if let (Some(ns), Some((ours, _))) = (bpf, run.bpf) {
                println!("  dac-probe's BPF time per exec is {:.2}× execsnoop's", ours / ns);
            }
        }
        None => println!("\nexecsnoop (libbpf-tools) is not installed here: no comparison"),
    }
    Ok(())
}

struct Run {
    elapsed: Duration,
    marker_events: usize,
    all_events: u64,
    lost: u64,
    /// BPF run time per exec (ns) and the runs counted, when the kernel's
    /// statistics gave them.
    bpf: Option<(f64, u64)>,
    cpu: Duration,
}

impl Run {
    fn print(&self, baseline: Duration, execs: usize) {
        println!(
            "  captured {}/{execs} marker execs, {} lost in the kernel ({} events in all)",
            self.marker_events, self.lost, self.all_events
        );
        println!(
            "  exec rate {:.0}/s ({:.2}× the rate without a probe; on a shared VM, ±10 % is noise)",
            rate(execs, self.elapsed),
            baseline.as_secs_f64() / self.elapsed.as_secs_f64()
        );
        match self.bpf {
            Some((ns, runs)) => {
                println!("  BPF run time {ns:.0} ns per exec (kernel stats, {runs} runs)  [target ≤ 2000 ns]")
            }
            None => println!("  BPF run time unknown: the kernel's per-program statistics counted no run"),
        }
        println!(
            "  userspace CPU {:.1} ms per 10,000 events ({:.2?} for {} events, user + system)",
            self.cpu.as_secs_f64() * 1e3 * 10_000.0 / self.all_events.max(1) as f64,
            self.cpu,
            self.all_events
        );
    }
}

/// Runs `execs` execs of /bin/true from `threads` threads; returns the time.
fn exec_loop(marker: &str, execs: usize, threads: usize) -> Duration {
    let started = Instant::now();
    std::thread::scope(|scope| {
        for thread in 0..threads {
            let share = execs / threads + usize::from(thread < execs % threads);
            scope.spawn(move || {
                for _ in 0..share {
                    let status = Command::new("/bin/true").arg(marker).status().expect("exec /bin/true");
                    assert!(status.success());
                }
            });
        }
    });
    started.elapsed()
}

fn rate(execs: usize, elapsed: Duration) -> f64 {
    execs as f64 / elapsed.as_secs_f64()
}

/// One dac-probe run around an exec loop.
fn measure(probe_bin: &Path, what: &str, execs: usize, threads: usize) -> anyhow::Result<Run> {
    let dir = std::env::temp_dir().join(format!("dac-probe-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let out = dir.join(format!("{what}.ndjson"));
    let log = dir.join(format!("{what}.log"));
    let child = Command::new(probe_bin)
        .arg("--stdout")
        .stdout(std::fs::File::create(&out)?)
        .stderr(std::fs::File::create(&log)?)
        .spawn()?;
    let pid = child.id() as i32;
    wait_for(&log, "capturing execs")?;
    let before = program_stats("dac_probe_exec");
    let marker = format!("dac-probe-bench-{what}-{}", std::process::id());
    let elapsed = exec_loop(&marker, execs, threads);
    let after = program_stats("dac_probe_exec");
    // SAFETY: signalling our own child.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let cpu = wait_with_rusage(pid)?;
    drop(child);
    let text = std::fs::read_to_string(&out)?;
    let needle = format!("\"argv\":[\"/bin/true\",\"{marker}\"]");
    let marker_events = text.lines().filter(|line| line.contains(&needle)).count();
    let summary = std::fs::read_to_string(&log)?;
    std::fs::remove_dir_all(&dir)?;
    let lost = summary_number(&summary, "lost in the kernel")
        .ok_or_else(|| anyhow::anyhow!("no summary line in dac-probe's log:\n{summary}"))?;
    // No program found, or no runs counted (BPF statistics off): unknown,
    // never a 0 ns that would pass the target.
    let bpf = match (before, after) {
        (Some(before), Some(after)) if after.1 > before.1 => {
            let runs = after.1 - before.1;
            Some((after.0.saturating_sub(before.0) as f64 / runs as f64, runs))
        }
        _ => None,
    };
    Ok(Run { elapsed, marker_events, all_events: text.lines().count() as u64, lost, bpf, cpu })
}

/// Run time (ns) and run count summed over loaded programs whose name
/// starts with `prefix` (the kernel keeps 15 characters of a name).
fn program_stats(prefix: &str) -> Option<(u64, u64)> {
    let prefix = &prefix[..prefix.len().min(15)];
    let mut total = (0, 0);
    let mut found = false;
    for info in aya::programs::loaded_programs().flatten() {
        if info.name_as_str().is_some_and(|name| name.starts_with(prefix)) {
            total.0 += info.run_time().as_nanos() as u64;
            total.1 += info.run_count();
            found = true;
        }
    }
    found.then_some(total)
}

fn under_execsnoop(execsnoop: &Path, threads: usize) -> anyhow::Result<(Duration, Option<f64>)> {
    let mut child = Command::new(execsnoop).stdout(Stdio::null()).stderr(Stdio::null()).spawn()?;
    std::thread::sleep(Duration::from_secs(2));
    // Its programs: tracepoint__syscalls__sys_enter_execve and _exit_.
    let before = program_stats("tracepoint__sys");
    let elapsed = exec_loop("dac-probe-bench-execsnoop", LOOP_EXECS, threads);
    let after = program_stats("tracepoint__sys");
    let _ = child.kill();
    let _ = child.wait();
    let bpf = match (before, after) {
        (Some(before), Some(after)) if after.1 > before.1 => {
            // Two programs run per exec (enter and exit): per exec is the
            // sum over both divided by the execs of the loop.
            Some((after.0 - before.0) as f64 / LOOP_EXECS as f64)
        }
        _ => None,
    };
    Ok((elapsed, bpf))
}

fn wait_for(log: &Path, needle: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text.contains(needle) {
            return Ok(());
        }
        if text.contains("dac-probe: ") || Instant::now() > deadline {
            anyhow::bail!("dac-probe did not start:\n{text}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits for the child and returns its user + system CPU time.
fn wait_with_rusage(pid: i32) -> anyhow::Result<Duration> {
    let mut status = 0;
    // SAFETY: zeroed rusage is a valid value; wait4 fills it.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointers; pid is our child.
    if unsafe { libc::wait4(pid, &mut status, 0, &mut usage) } != pid {
        anyhow::bail!("wait4: {}", std::io::Error::last_os_error());
    }
    let time = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    Ok(time(usage.ru_utime) + time(usage.ru_stime))
}

fn summary_number(log: &str, label: &str) -> Option<u64> {
    let line = log.lines().find(|line| line.starts_with("dac-probe: "))?;
    let at = line.find(label)?;
    line[..at].trim_end().rsplit([' ', ',']).next()?.parse().ok()
}

fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}
