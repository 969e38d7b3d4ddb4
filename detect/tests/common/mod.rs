#![allow(dead_code)]

pub mod generate;

use std::path::{Path, PathBuf};

use dac_detect::{load_text, Event, FieldMapping, Rule};

/// SigmaHQ's Linux process-creation rules: `$DAC_SIGMA_DIR`, else
/// `example-rules/sigma/linux-process-creation` in the repository.
pub fn sigma_dir() -> PathBuf {
    let dir = std::env::var_os("DAC_SIGMA_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../example-rules/sigma/linux-process-creation"));
    assert!(dir.is_dir(), "{}: the SigmaHQ rules are missing (set DAC_SIGMA_DIR)", dir.display());
    dir
}

/// (file name, text) of every Sigma rule, sorted by name.
pub fn sigma_texts() -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = std::fs::read_dir(sigma_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yml"))
        .map(|p| (p.file_name().unwrap().to_string_lossy().into_owned(), std::fs::read_to_string(&p).unwrap()))
        .collect();
    out.sort();
    out
}

pub fn sigma_rules() -> Vec<Rule> {
    let mapping = FieldMapping::default();
    sigma_texts().iter().map(|(name, text)| load_text(name, text, &mapping).unwrap()).collect()
}

pub fn seed_rules() -> Vec<Rule> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../example-rules/yaml");
    ["shadow.yaml", "tmp_output_redir.yaml"]
        .iter()
        .map(|f| dac_detect::load_path(&dir.join(f), &FieldMapping::default()).unwrap())
        .collect()
}

pub fn event(json: serde_json::Value) -> Event {
    Event::from_json(json).unwrap()
}

/// A fixture line of `fixtures/sigma.ndjson`.
pub struct Fixture {
    pub rule: String,
    pub fire: bool,
    pub why: String,
    pub event: Event,
    pub line: usize,
}

pub fn sigma_fixtures() -> Vec<Fixture> {
    let text = include_str!("../fixtures/sigma.ndjson");
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, line)| {
            let v: serde_json::Value =
                serde_json::from_str(line).unwrap_or_else(|e| panic!("sigma.ndjson:{}: {e}", i + 1));
            Fixture {
                rule: format!("{}.yml", v["rule"].as_str().unwrap()),
                fire: v["fire"].as_bool().unwrap(),
                why: v["why"].as_str().unwrap_or_default().to_owned(),
                event: event(v["event"].clone()),
                line: i + 1,
            }
        })
        .collect()
}

/// Quoted strings of the rule files: literals to build hostile events from.
pub fn rule_fragments() -> Vec<String> {
    let mut out = Vec::new();
    for (_, text) in sigma_texts() {
        for line in text.lines() {
            for quote in ['\'', '"'] {
                let parts: Vec<&str> = line.split(quote).collect();
                for (i, part) in parts.iter().enumerate() {
                    if i % 2 == 1 && !part.is_empty() && part.len() < 60 {
                        out.push(part.to_string());
                    }
                }
            }
        }
    }
    out.extend(["/etc/shadow", "> /tmp/", "sh -c ", "/bin/bash", "bash -i"].map(String::from));
    out.sort();
    out.dedup();
    out
}
