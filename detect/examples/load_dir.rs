//! Loads every `.yml`/`.yaml` rule under a directory and reports what was
//! accepted, refused and noted: `cargo run -p dac-detect --example load_dir -- DIR`.

use std::path::Path;

use dac_detect::{is_rule_file, load_path, FieldMapping, RuleSet};

fn main() {
    let dir = std::env::args().nth(1).unwrap_or_else(|| "example-rules/yaml".into());
    let mapping = FieldMapping::default();
    let mut entries: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{dir}: {e}"))
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| is_rule_file(p))
        .collect();
    entries.sort();
    let mut rules = Vec::new();
    let mut refused = 0;
    for path in &entries {
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
    let set = RuleSet::compile(rules).expect("compile");
    println!("{} accepted, {refused} refused; prefilter: {:?}", set.len(), set.stats());
}
