//! Hostile rule: allocates without bound on every event.
//!
//! To the host: linear memory growing 1 MiB at a time, every chunk kept.
//! The host must refuse to grow the instance's memory past its cap
//! (`Limits::memory_bytes`), report a memory fault rather than a generic
//! trap, and drop the instance so the memory is released.
//!
//! The chunks are reserved, not written: what the cap bounds is the size of
//! linear memory, and untouched chunks reach it in a millisecond or two, far
//! inside any deadline, so the memory limit is what always stops the rule.

use dac_rule_sdk::prelude::*;
use std::hint::black_box;

dac_rule_sdk::rule! {
    name: "Hostile: Memory Bomb",
    uuid: "21816c91-309d-4070-9941-01cbbce00d7a",
    severity: Informational,
    description: "Grows a Vec of 1 MiB chunks without bound.",
    evaluate: hoard,
}

fn hoard(_event: &Event) -> Option<Finding> {
    let mut hoard: Vec<Vec<u8>> = Vec::new();
    loop {
        hoard.push(black_box(Vec::with_capacity(1 << 20)));
        black_box(&mut hoard);
    }
}
