//! Loads every `.yml`/`.yaml` rule in a directory and reports what was
//! accepted, refused and noted, and what the compiled set's prefilter looks
//! like: `cargo run -p dac-detect --example load_dir -- DIR`.

use std::path::Path;

use dac_detect::{is_rule_file, load_path, FieldMapping, RuleSet};

fn main() {
    let dir = std::env::args().nth(1).unwrap_or_else(|| "example-rules/yaml".into());
    let mapping = FieldMapping::default();
    let mut paths: Vec<_> = match std::fs::read_dir(&dir) {
        Ok(entries) => entries.filter_map(Result::ok).map(|e| e.path()).filter(|p| is_rule_file(p)).collect(),
        Err(e) => {
            eprintln!("{dir}: {e}");
            std::process::exit(2);
        }
    };
    paths.sort();
    let mut rules = Vec::new();
    let mut refused = 0;
    for path in &paths {
        match load_path(Path::new(path), &mapping) {
            Ok(rule) => {
                for note in rule.notes() {
                    println!("note: {note}");
                }
                rules.push(rule);
            }
            Err(e) => {
                refused += 1;
                println!("refused: {e}");
            }
        }
    }
    match RuleSet::compile(rules) {
        Ok(set) => println!("{} accepted, {refused} refused; prefilter: {:?}", set.len(), set.stats()),
        Err(e) => println!("{e}"),
    }
}
