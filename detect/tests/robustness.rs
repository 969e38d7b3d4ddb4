//! Bad input gives an error, never a panic: every SigmaHQ rule and both seed
//! rules, damaged in many ways, go through the loader.

mod common;

use common::generate::Rng;
use dac_detect::{load_text, FieldMapping, RuleSet};

fn damage(text: &str, rng: &mut Rng) -> String {
    let mut lines: Vec<String> = text.lines().map(String::from).collect();
    for _ in 0..1 + rng.below(3) {
        if lines.is_empty() {
            break;
        }
        let i = rng.below(lines.len());
        match rng.below(8) {
            0 => {
                lines.remove(i);
            }
            1 => lines[i] = lines[i].trim_start().to_owned(),
            2 => lines[i]
                .push_str(["|", "*", " and", " (", "|re", "|base64offset", ": [", "'", "\\", "İ"][rng.below(10)]),
            3 => {
                let j = rng.below(lines.len());
                lines.swap(i, j);
            }
            4 => {
                let line = lines[i].clone();
                lines.insert(i, line);
            }
            5 => lines[i] = lines[i].replace("selection", "selection_x"),
            6 => {
                let cut = rng.below(lines[i].len() + 1);
                let cut = (0..=cut).rev().find(|c| lines[i].is_char_boundary(*c)).unwrap_or(0);
                lines[i].truncate(cut);
            }
            _ => lines[i] = lines[i].replace(": ", "|windash|cidr: "),
        }
    }
    lines.join("\n")
}

#[test]
fn damaged_rules_are_refused_or_loaded_never_a_panic() {
    let mapping = FieldMapping::default();
    let mut texts = common::sigma_texts();
    for f in ["shadow.yaml", "tmp_output_redir.yaml"] {
        let path = format!("{}/../example-rules/yaml/{f}", env!("CARGO_MANIFEST_DIR"));
        texts.push((f.to_owned(), std::fs::read_to_string(path).unwrap()));
    }
    let mut rng = Rng::new(5);
    let (mut loaded, mut refused) = (0, 0);
    let event = common::event(serde_json::json!({"path": "/usr/bin/sh", "command_line": "sh -c curl x | bash"}));
    for round in 0..20 {
        for (name, text) in &texts {
            let damaged = damage(text, &mut rng);
            match load_text(name, &damaged, &mapping) {
                Ok(rule) => {
                    loaded += 1;
                    let set = RuleSet::compile(vec![rule]).unwrap();
                    let mut out = Vec::new();
                    set.matches(&event, &mut out);
                }
                Err(e) => {
                    refused += 1;
                    let shown = e.to_string();
                    assert!(shown.starts_with(name.as_str()), "round {round}: error without its file: {shown}");
                }
            }
        }
    }
    assert!(loaded > 100 && refused > 100, "loaded {loaded}, refused {refused}");
}
