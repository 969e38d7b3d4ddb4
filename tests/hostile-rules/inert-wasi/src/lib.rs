//! Hostile rule: calls every function of the WASI 0.2 interfaces dac grants
//! (wasi:cli, wasi:clocks, wasi:random, wasi:io) and reports, as its
//! finding, what each returned.
//!
//! To the host: the inert WASI of `engine/src/wasi.rs`, seen from a guest.
//! The report pins what a rule can observe (no arguments or environment,
//! clocks frozen at zero, the fixed random sequence, closed stdin, stdout
//! and stderr that swallow everything, pollables always ready), so a change
//! to any of it shows. The event's `binary` picks a misbehaviour instead:
//! `exit` calls wasi:cli/exit, `hoard` keeps creating stdout handles
//! without dropping them, `orphan` drops a stream while a pollable on it
//! lives, `big-write`, `many-zeroes` and `empty-poll` break the size rules
//! of wasi:io; each must end the evaluation with a trap.

use dac_rule_sdk::prelude::*;
use std::fmt::Write;

mod wasi {
    wit_bindgen::generate!({
        path: "../../../engine/wit-wasi",
        world: "dac:inert-wasi/granted",
        generate_all,
    });
}

use wasi::wasi::cli::{environment, exit, stderr, stdin, stdout, terminal_stderr, terminal_stdin, terminal_stdout};
use wasi::wasi::clocks::{monotonic_clock, wall_clock};
use wasi::wasi::io::{poll, streams};
use wasi::wasi::random::{insecure, insecure_seed, random};

dac_rule_sdk::rule! {
    name: "Hostile: Inert WASI",
    uuid: "7f3c9a52-0d4e-4b8a-9c61-2e5b7d1f8a34",
    severity: Informational,
    description: "Calls every granted WASI function and reports the results.",
    evaluate: probe,
}

fn probe(event: &Event) -> Option<Finding> {
    match event.text("binary").as_deref() {
        Some("exit") => exit::exit(Err(())),
        Some("hoard") => {
            let mut hoard = Vec::new();
            loop {
                hoard.push(stdout::get_stdout());
            }
        }
        Some("orphan") => {
            let input = stdin::get_stdin();
            let pollable = input.subscribe();
            drop(input);
            drop(pollable);
            return Some(Finding::new("dropped a stream before its pollable"));
        }
        Some("big-write") => {
            let _ = stdout::get_stdout().blocking_write_and_flush(&[b'x'; 5000]);
        }
        Some("many-zeroes") => {
            let _ = stdout::get_stdout().write_zeroes(70_000);
        }
        Some("empty-poll") => {
            poll::poll(&[]);
        }
        _ => {}
    }
    Some(Finding::new(report()))
}

fn stream_result<T: std::fmt::Debug>(result: Result<T, streams::StreamError>) -> String {
    match result {
        Ok(value) => format!("ok {value:?}"),
        Err(streams::StreamError::Closed) => "closed".into(),
        Err(streams::StreamError::LastOperationFailed(error)) => format!("failed: {}", error.to_debug_string()),
    }
}

fn report() -> String {
    let mut r = String::new();
    let w = &mut r;
    let _ = writeln!(w, "environment {:?}", environment::get_environment());
    let _ = writeln!(w, "arguments {:?}", environment::get_arguments());
    let _ = writeln!(w, "initial-cwd {:?}", environment::initial_cwd());
    let now = wall_clock::now();
    let res = wall_clock::resolution();
    let _ = writeln!(
        w,
        "wall-clock now {}s {}ns resolution {}s {}ns",
        now.seconds, now.nanoseconds, res.seconds, res.nanoseconds
    );
    let _ = writeln!(w, "monotonic-clock now {} resolution {}", monotonic_clock::now(), monotonic_clock::resolution());
    let _ = writeln!(w, "random bytes {:?}", random::get_random_bytes(12));
    let _ = writeln!(w, "random u64 {:#018x}", random::get_random_u64());
    let _ = writeln!(w, "random bytes {:?}", random::get_random_bytes(0));
    let _ = writeln!(w, "random bytes {:?}", random::get_random_bytes(3));
    let _ = writeln!(w, "insecure bytes {:?}", insecure::get_insecure_random_bytes(5));
    let _ = writeln!(w, "insecure u64 {:#018x}", insecure::get_insecure_random_u64());
    let _ = writeln!(w, "insecure-seed {:?}", insecure_seed::insecure_seed());
    let _ = writeln!(
        w,
        "terminals stdin {} stdout {} stderr {}",
        terminal_stdin::get_terminal_stdin().is_some(),
        terminal_stdout::get_terminal_stdout().is_some(),
        terminal_stderr::get_terminal_stderr().is_some()
    );

    let input = stdin::get_stdin();
    let _ = writeln!(w, "stdin read(10) {}", stream_result(input.read(10)));
    let _ = writeln!(w, "stdin read(0) {}", stream_result(input.read(0)));
    let _ = writeln!(w, "stdin blocking-read(10) {}", stream_result(input.blocking_read(10)));
    let _ = writeln!(w, "stdin skip(5) {}", stream_result(input.skip(5)));
    let _ = writeln!(w, "stdin blocking-skip(5) {}", stream_result(input.blocking_skip(5)));
    let input_ready = input.subscribe();
    let _ = writeln!(w, "stdin pollable ready {}", input_ready.ready());
    input_ready.block();

    let out = stdout::get_stdout();
    let _ = writeln!(w, "stdout check-write {}", stream_result(out.check_write()));
    let _ = writeln!(w, "stdout write {}", stream_result(out.write(b"hello from a rule\n")));
    let _ = writeln!(w, "stdout write(100000) {}", stream_result(out.write(&vec![b'x'; 100_000])));
    let _ = writeln!(w, "stdout blocking-write-and-flush {}", stream_result(out.blocking_write_and_flush(b"hi\n")));
    let _ = writeln!(w, "stdout flush {}", stream_result(out.flush()));
    let _ = writeln!(w, "stdout blocking-flush {}", stream_result(out.blocking_flush()));
    let _ = writeln!(w, "stdout write-zeroes(100) {}", stream_result(out.write_zeroes(100)));
    let _ = writeln!(
        w,
        "stdout blocking-write-zeroes-and-flush(100) {}",
        stream_result(out.blocking_write_zeroes_and_flush(100))
    );
    let _ = writeln!(w, "stdout splice(stdin, 0) {}", stream_result(out.splice(&input, 0)));
    let _ = writeln!(w, "stdout splice(stdin, 10) {}", stream_result(out.splice(&input, 10)));
    let _ = writeln!(w, "stdout blocking-splice(stdin, 10) {}", stream_result(out.blocking_splice(&input, 10)));
    let out_ready = out.subscribe();
    let _ = writeln!(w, "stdout pollable ready {}", out_ready.ready());
    let err = stderr::get_stderr();
    let _ = writeln!(w, "stderr check-write {}", stream_result(err.check_write()));
    let _ = writeln!(w, "stderr write {}", stream_result(err.write(b"to stderr\n")));
    let _ = writeln!(w, "poll [stdin, stdout] {:?}", poll::poll(&[&input_ready, &out_ready]));
    let _ = writeln!(w, "poll [stdout, stdout, stdin] {:?}", poll::poll(&[&out_ready, &out_ready, &input_ready]));
    drop(input_ready);
    drop(out_ready);
    drop((input, out, err));

    // Clocks: the time to wait for and whether it has come.
    let soon = monotonic_clock::subscribe_duration(0);
    let later = monotonic_clock::subscribe_instant(0);
    let _ = writeln!(w, "subscribe-duration(0) then subscribe-instant(0): poll {:?}", poll::poll(&[&soon, &later]));
    soon.block();
    let _ = writeln!(w, "subscribe-duration(0) after block: ready {}", soon.ready());
    let _ = writeln!(w, "fresh subscribe-duration(0) ready {}", monotonic_clock::subscribe_duration(0).ready());
    let _ = writeln!(w, "subscribe-duration(1 ms) ready {}", monotonic_clock::subscribe_duration(1_000_000).ready());
    let _ = writeln!(w, "random bytes after all that {:?}", random::get_random_bytes(4));
    r
}
