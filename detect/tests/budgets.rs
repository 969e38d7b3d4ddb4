//! A rule's cost to the host is bounded: every attack here was a few
//! kilobytes that overflowed the parsing thread's stack (aborting the whole
//! process) or expanded into gigabytes. Each is now refused with the budget
//! it exceeded, named, before the memory is spent. The parsing runs on a
//! thread with a small stack (256 KiB, an eighth of a tokio blocking
//! thread's), so a recursion the budgets miss fails the test by aborting it.

mod common;

use dac_detect::{load_text, load_text_within, Budget, DetectError, FieldMapping, RuleSet};

const SMALL_STACK: usize = 256 << 10;

/// Loads `text` on a thread with a small stack; the refusal's budget name.
fn refused_by(text: String) -> (&'static str, String) {
    let handle = std::thread::Builder::new()
        .stack_size(SMALL_STACK)
        .spawn(move || load_text("hostile.yml", &text, &FieldMapping::default()).map(|_| ()))
        .unwrap();
    match handle.join().expect("the loader panicked") {
        Err(err @ DetectError::OverBudget { budget, .. }) => (budget, err.to_string()),
        other => panic!("expected a refusal over budget, got {other:?}"),
    }
}

fn sigma(detection: &str) -> String {
    format!(
        "title: t\nid: 11111111-2222-3333-4444-555555555555\n\
         logsource:\n  product: linux\n  category: process_creation\n\
         detection:\n{detection}"
    )
}

#[test]
fn deeply_nested_yaml_is_refused_not_a_stack_overflow() {
    // Block sequences, 10,000 deep in 20 KB: `- - - … x`.
    let block = format!("title: t\ndetection:\n  {}x\n", "- ".repeat(10_000));
    let (budget, message) = refused_by(block);
    assert_eq!(budget, "max_yaml_depth");
    assert!(message.starts_with("hostile.yml:"), "{message}");
    assert!(message.contains("over the max_yaml_depth budget of 32"), "{message}");

    // Flow style, 200 deep (past 255 the YAML scanner refuses it itself).
    let flow = format!("detection: {}{}", "[".repeat(200), "]".repeat(200));
    assert_eq!(refused_by(flow).0, "max_yaml_depth");

    // An alias reaching deep: each anchor nests the previous one.
    let mut aliased = String::from("a0: &a0 [x]\n");
    for i in 1..40 {
        aliased.push_str(&format!("a{i}: &a{i} [*a{}]\n", i - 1));
    }
    assert_eq!(refused_by(aliased).0, "max_yaml_depth");
}

#[test]
fn alias_bombs_are_refused_before_they_expand() {
    // The billion laughs: nine levels of ten aliases each, 10^9 nodes.
    let mut laughs = String::from("a: &a [\"lol\"]\n");
    let names = ["a", "b", "c", "d", "e", "f", "g", "h", "i", "j"];
    for w in names.windows(2) {
        let refs = vec![format!("*{}", w[0]); 10].join(",");
        laughs.push_str(&format!("{}: &{} [{refs}]\n", w[1], w[1]));
    }
    assert_eq!(refused_by(laughs).0, "max_yaml_nodes");

    // Few nodes, but each a large string: 64 KiB × 100 aliases × 10.
    let big = "x".repeat(64 << 10);
    let mut wide = format!("s: &s \"{big}\"\nt: &t [{}]\n", ["*s"; 100].join(","));
    wide.push_str(&format!("u: [{}]\n", ["*t"; 10].join(",")));
    assert_eq!(refused_by(wide).0, "max_yaml_bytes");
}

#[test]
fn deep_conditions_are_refused_not_a_stack_overflow() {
    // ~3,000 parentheses: 6 KB.
    let parens = format!("{}selection{}", "(".repeat(3000), ")".repeat(3000));
    let rule = sigma(&format!("  selection:\n    Image: /bin/sh\n  condition: {parens}\n"));
    let (budget, message) = refused_by(rule);
    assert_eq!(budget, "max_condition_depth");
    assert!(message.contains("detection.condition"), "{message}");

    let nots = format!("{}selection", "not ".repeat(5000));
    assert_eq!(
        refused_by(sigma(&format!("  selection:\n    Image: /bin/sh\n  condition: {nots}\n"))).0,
        "max_condition_depth"
    );

    // 32 levels are allowed, as documented.
    let ok = format!("{}selection{}", "(".repeat(31), ")".repeat(31));
    load_text(
        "ok.yml",
        &sigma(&format!("  selection:\n    Image: /bin/sh\n  condition: {ok}\n")),
        &FieldMapping::default(),
    )
    .unwrap();
}

#[test]
fn a_condition_that_names_a_large_search_many_times_is_refused() {
    // A search of 1,000 values, named 2,000 times: 2M values from 30 KB.
    let values: Vec<String> = (0..1000).map(|i| format!("      - v{i}")).collect();
    let condition = vec!["selection"; 2000].join(" or ");
    let rule = sigma(&format!("  selection:\n    Image:\n{}\n  condition: {condition}\n", values.join("\n")));
    assert_eq!(refused_by(rule).0, "max_expression_nodes");
}

#[test]
fn modifier_expansions_are_counted() {
    // `windash` spells four switches 625 ways: 200 such values are 125,000.
    let values: Vec<String> = (0..200).map(|i| format!("      - '-a -b -c -d{i}'")).collect();
    let rule = sigma(&format!(
        "  selection:\n    CommandLine|windash|contains:\n{}\n  condition: selection\n",
        values.join("\n")
    ));
    let (budget, message) = refused_by(rule);
    assert_eq!(budget, "max_values");
    assert!(message.contains("(this one spelled 625 ways by its modifiers)"), "{message}");
}

#[test]
fn regular_expressions_are_counted_and_each_is_bounded() {
    let many: Vec<String> = (0..300).map(|i| format!("      - 'a{i}.*b'")).collect();
    let rule = sigma(&format!("  selection:\n    CommandLine|re:\n{}\n  condition: selection\n", many.join("\n")));
    assert_eq!(refused_by(rule).0, "max_regexes");

    // Wildcards in the middle of a value compile to regular expressions too.
    let globs: Vec<String> = (0..300).map(|i| format!("      - 'a{i}*b'")).collect();
    let rule = sigma(&format!("  selection:\n    CommandLine:\n{}\n  condition: selection\n", globs.join("\n")));
    assert_eq!(refused_by(rule).0, "max_regexes");

    // One large one: `(\w{100}){100}` compiles to far more than 1 MiB.
    let rule = sigma("  selection:\n    CommandLine|re: '(\\w{100}){100}'\n  condition: selection\n");
    assert_eq!(refused_by(rule).0, "max_regex_bytes");
}

#[test]
fn budgets_are_configurable_and_the_defaults_fit_every_sigmahq_rule() {
    let rule = sigma("  selection:\n    Image:\n      - /bin/sh\n      - /bin/bash\n  condition: selection\n");
    let tight = Budget { max_values: 1, ..Budget::default() };
    let err = load_text_within("tight.yml", &rule, &FieldMapping::default(), &tight).unwrap_err();
    assert!(matches!(err, DetectError::OverBudget { budget: "max_values", limit: 1, line: 10, .. }), "{err}");
    assert_eq!(
        err.to_string(),
        "tight.yml:10: detection.selection.Image[1]: over the max_values budget of 1: 2 values with this one"
    );

    // Every SigmaHQ Linux process-creation rule loads within the defaults,
    // and within a tenth of each size budget.
    let tenth = Budget {
        max_yaml_nodes: Budget::default().max_yaml_nodes / 10,
        max_yaml_bytes: Budget::default().max_yaml_bytes / 10,
        max_expression_nodes: Budget::default().max_expression_nodes / 10,
        max_values: Budget::default().max_values / 10,
        max_regexes: Budget::default().max_regexes / 10,
        max_condition_depth: 4,
        max_yaml_depth: 6,
        ..Budget::default()
    };
    let mut rules = Vec::new();
    for (file, text) in common::sigma_texts() {
        rules.push(load_text_within(&file, &text, &FieldMapping::default(), &tenth).unwrap());
    }
    assert_eq!(rules.len(), 122);
    RuleSet::compile(rules).unwrap();
}

#[test]
fn names_and_ids_are_one_line() {
    let rule = "title: \"Evil\\nERROR forged\"\nid: x\nlogsource:\n  product: linux\n  category: process_creation\n\
                detection:\n  s:\n    Image: /bin/sh\n  condition: s\n";
    let err = load_text("evil.yml", rule, &FieldMapping::default()).unwrap_err().to_string();
    assert_eq!(err, "evil.yml:1: title: a control character (a newline, a tab, …) in a one-line value");
}
