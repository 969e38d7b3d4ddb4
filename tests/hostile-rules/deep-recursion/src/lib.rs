//! Hostile rule: recurses without bound on every event.
//!
//! To the host: a non-tail recursion that keeps a 1 KiB buffer live in each
//! frame, so it runs through the rule's own shadow stack in linear memory
//! (64 KiB, from `.cargo/config.toml`) long before the engine's wasm call
//! stack. The host must turn the resulting trap into a fault for this rule
//! and event, not crash, and re-create the instance for the next event.

use dac_rule_sdk::prelude::*;
use std::hint::black_box;

dac_rule_sdk::rule! {
    name: "Hostile: Deep Recursion",
    uuid: "5d10445a-9410-4680-86e4-9e49d5355873",
    severity: Informational,
    description: "Recurses until a stack gives out.",
    evaluate: descend,
}

fn descend(_event: &Event) -> Option<Finding> {
    black_box(depth(black_box(0)));
    None
}

#[inline(never)]
fn depth(level: u64) -> u64 {
    // Never true, but the optimizer cannot know: the recursion stays real.
    if black_box(level) == u64::MAX {
        return 0;
    }
    // Address-taken, so it lives in linear memory (the shadow stack).
    let mut frame = [0u8; 1024];
    frame[(level % 1024) as usize] = level as u8;
    let frame = black_box(&mut frame);
    // Used after the call returns: not a tail call, cannot become a loop.
    depth(level + 1).wrapping_add(u64::from(frame[0]))
}
