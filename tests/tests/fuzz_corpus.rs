//! The fuzz targets (`fuzz-targets/`) over their committed corpus
//! (`fuzz/corpus/TARGET/`), and over seeded mutations of it, in the
//! ordinary test build: every input that ever mattered stays a regression
//! test, and CI exercises every target without building libFuzzer. The
//! coverage-guided runs are `scripts/fuzz` (docs/security.md#fuzzing).
//!
//! A target that panics fails this test; one that aborts (a stack
//! overflow) takes the test binary with it, which fails it too.

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::path::PathBuf;

/// Mutations per target, spread over its corpus inputs (at least one
/// each); the component target compiles each one: fewer. The corpus is
/// what a coverage-guided run kept (libFuzzer's `-set_cover_merge` of a
/// long run's inputs: one per edge it reached), so most of the coverage is
/// in the inputs themselves.
const MUTATIONS: usize = 4_000;
const COMPONENT_MUTATIONS: usize = 200;

/// Flips, inserts, deletes, duplicates or splices bytes, as libFuzzer's
/// simplest mutators do (including the tokens that make these parsers
/// nest: brackets, dashes, parentheses, aliases).
fn mutate(input: &[u8], rng: &mut SmallRng) -> Vec<u8> {
    // `0..n` for any n, an empty range being 0.
    let mut below = |n: usize| rng.random_range(0..n.max(1));
    const TOKENS: [&[u8]; 10] = [b"[", b"{", b"(", b"- ", b"*a", b"&a ", b"not ", b"\\u0000", b"\n  ", b"$date"];
    let mut out = input.to_vec();
    for _ in 0..1 + below(4) {
        let at = below(out.len() + 1);
        match below(5) {
            0 if !out.is_empty() => {
                let i = below(out.len());
                out[i] ^= 1 << below(8);
            }
            1 => {
                let token = TOKENS[below(TOKENS.len())];
                let times = 1 + below(200);
                for _ in 0..times {
                    out.splice(at..at, token.iter().copied());
                }
            }
            2 if !out.is_empty() => {
                let end = (at + below(16)).min(out.len());
                out.drain(at.min(end)..end);
            }
            3 if !out.is_empty() => {
                let start = below(out.len());
                let end = (start + below(64)).min(out.len());
                let piece = out[start..end].to_vec();
                out.splice(at..at, piece);
            }
            _ => out.insert(at, below(256) as u8),
        }
    }
    out
}

fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = dac_tests::repo_root().join("fuzz/corpus").join(target);
    let mut inputs: Vec<(PathBuf, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|err| panic!("{}: {err}", dir.display()))
        .map(|entry| {
            let path = entry.unwrap().path();
            let bytes = std::fs::read(&path).unwrap();
            (path, bytes)
        })
        .collect();
    inputs.sort();
    inputs
}

#[test]
fn every_fuzz_target_survives_its_corpus_and_mutations_of_it() {
    // The component target adds its module to the example shadow rule.
    std::env::set_var("DAC_FUZZ_COMPONENT", dac_tests::example_rule("shadow"));
    for &(name, target) in dac_fuzz_targets::TARGETS {
        let inputs = corpus(name);
        assert!(!inputs.is_empty(), "fuzz/corpus/{name} is empty");
        // Seeded: the same mutations on every run.
        let mut rng = SmallRng::seed_from_u64(0x9E37_79B9_7F4A_7C15 ^ name.len() as u64);
        let mut runs = 0;
        for (path, input) in &inputs {
            let outcome = std::panic::catch_unwind(|| target(input));
            assert!(outcome.is_ok(), "target {name} panicked on {}", path.display());
            let mutations = if name == "component" { COMPONENT_MUTATIONS } else { MUTATIONS };
            let mutations = (mutations / inputs.len()).max(1);
            for round in 0..mutations {
                let mutated = mutate(input, &mut rng);
                let outcome = std::panic::catch_unwind(|| target(&mutated));
                assert!(
                    outcome.is_ok(),
                    "target {name} panicked on mutation {round} of {}: {:?}",
                    path.display(),
                    String::from_utf8_lossy(&mutated)
                );
                runs += 1;
            }
        }
        eprintln!("{name}: {} corpus inputs, {runs} mutations", inputs.len());
    }
}
