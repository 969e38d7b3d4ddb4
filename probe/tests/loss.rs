//! Loss: every exec of a 10,000-exec run is captured with the default
//! buffers, and when the ring buffer is made too small the records it
//! loses are counted, not silently gone.

mod common;

use common::{summary_count, unique_token, with_marker, RunningProbe};
use std::process::Command;

/// Runs `count` execs of /bin/true with `marker` as argv[1], from
/// `threads` threads at once.
fn exec_burst(marker: &str, count: usize, threads: usize) {
    std::thread::scope(|scope| {
        for thread in 0..threads {
            let share = count / threads + usize::from(thread < count % threads);
            scope.spawn(move || {
                for _ in 0..share {
                    let status = Command::new("/bin/true").arg(marker).status().expect("exec /bin/true");
                    assert!(status.success());
                }
            });
        }
    });
}

#[test]
fn ten_thousand_execs_are_all_captured_with_default_buffers() {
    require_probe!();
    let marker = unique_token("loss");
    let probe = RunningProbe::start(&["--stdout"]);
    let started = std::time::Instant::now();
    exec_burst(&marker, 10_000, 2);
    let elapsed = started.elapsed();
    let finished = probe.stop();
    let captured = with_marker(&finished.events, &marker).len();
    let lost = summary_count(&finished.log, "lost in the kernel");
    eprintln!(
        "captured {captured}/10000 marker execs in {elapsed:.1?} ({:.0} execs/s); {lost} records lost in the kernel",
        10_000.0 / elapsed.as_secs_f64()
    );
    assert_eq!(captured, 10_000, "{}", finished.log);
    assert_eq!(lost, 0, "{}", finished.log);
    assert_eq!(finished.status, Some(0), "{}", finished.log);
    let seen = summary_count(&finished.log, "execs seen");
    assert_eq!(seen, summary_count(&finished.log, "captured"), "{}", finished.log);
}

#[test]
fn an_overflowing_ring_buffer_counts_what_it_loses() {
    require_probe!();
    let marker = unique_token("overflow");
    // One page holds a handful of records, and it is read once a second.
    let probe = RunningProbe::start(&["--stdout", "--ring-buffer-size", "4096", "--poll-interval-ms", "1000"]);
    exec_burst(&marker, 2_000, 2);
    let finished = probe.stop();
    let captured = with_marker(&finished.events, &marker).len() as u64;
    let seen = summary_count(&finished.log, "execs seen");
    let lost = summary_count(&finished.log, "lost in the kernel");
    let read = summary_count(&finished.log, "captured");
    assert!(lost > 0, "a one-page ring buffer lost nothing of 2,000 execs?\n{}", finished.log);
    // Every exec the program saw was either read or counted as lost.
    assert_eq!(seen, read + lost, "{}", finished.log);
    assert!(captured + lost >= 2_000, "{captured} captured + {lost} lost < 2,000\n{}", finished.log);
    assert_eq!(finished.status, Some(3), "losses make the exit status 3\n{}", finished.log);
    assert!(finished.log.contains("raise --ring-buffer-size"), "{}", finished.log);
}
