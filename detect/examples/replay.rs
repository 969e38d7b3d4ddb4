//! Replays an NDJSON file through the declarative rules of one or more
//! directories and prints the alerts per rule, with their authors:
//! `cargo run -p dac-detect --example replay -- EVENTS.ndjson RULE_DIR...`.

use std::collections::BTreeMap;
use std::path::Path;

use dac_detect::{load_dir, Event, FieldMapping, RuleSet};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((events, dirs)) = args.split_first() else {
        eprintln!("usage: replay EVENTS.ndjson RULE_DIR...");
        std::process::exit(2);
    };
    let mapping = FieldMapping::default();
    let mut rules = Vec::new();
    for dir in dirs {
        match load_dir(Path::new(dir), &mapping) {
            Ok(loaded) => rules.extend(loaded),
            Err(errors) => {
                errors.iter().for_each(|e| eprintln!("{e}"));
                std::process::exit(2);
            }
        }
    }
    let set = RuleSet::compile(rules).unwrap_or_else(|e| {
        eprintln!("{e}");
        std::process::exit(2);
    });
    let text = std::fs::read_to_string(events).unwrap_or_else(|e| {
        eprintln!("{events}: {e}");
        std::process::exit(2);
    });
    let mut per_rule: BTreeMap<usize, (usize, String)> = BTreeMap::new();
    let mut out = Vec::new();
    let mut count = 0;
    for (n, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let event = match Event::from_json_slice(line.as_bytes()) {
            Ok((event, _)) => event,
            Err(e) => {
                eprintln!("{events}:{}: {e}", n + 1);
                continue;
            }
        };
        count += 1;
        out.clear();
        set.matches(&event, &mut out);
        for m in &out {
            let entry = per_rule.entry(m.rule).or_insert_with(|| (0, format!("{}:{}", events, n + 1)));
            entry.0 += 1;
        }
    }
    println!("{count} events, {} rules, {} alerts", set.len(), per_rule.values().map(|v| v.0).sum::<usize>());
    for (rule, (alerts, first)) in per_rule {
        let m = set.rules()[rule].metadata();
        println!("{alerts:>6}  {} [{}] {} (first {first}; by {})", m.uuid, m.severity, m.name, m.authors.join(", "));
    }
}
