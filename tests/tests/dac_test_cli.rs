//! `dac test`: rule test cases beside the rules, for components, the seed's
//! YAML and Sigma alike; a pytest-like summary, the exit status, JUnit XML.

use dac_tests::{dac, example_rules_dir, repo_root, yaml_rules_dir};
use std::path::Path;
use std::process::{Command, Output};

const SHADOW_UUID: &str = "5e3566a3-9f19-4ac7-8710-ec5fb09260ed";

fn dac_test(args: &[&dyn AsRef<std::ffi::OsStr>]) -> Output {
    let mut command = Command::new(dac());
    command.arg("test");
    for arg in args {
        command.arg(arg);
    }
    command.env("DAC_CACHE_DIR", repo_root().join("target/dac-test-cache")).output().expect("run dac test")
}

fn text(output: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

/// (tests, failures, errors) of the JUnit file's root, read by Python's
/// XML parser: the file must be well-formed XML.
fn junit_counts(file: &Path) -> (u64, u64, u64) {
    let script = "import sys, xml.etree.ElementTree as ET\nr = ET.parse(sys.argv[1]).getroot()\nassert r.tag == 'testsuites'\nn = sum(1 for _ in r.iter('testcase'))\nf = sum(1 for _ in r.iter('failure'))\ne = sum(1 for _ in r.iter('error'))\nassert (n, f, e) == (int(r.get('tests')), int(r.get('failures')), int(r.get('errors'))), (n, f, e)\nprint(n, f, e)";
    let out = Command::new("python3").args(["-c", script]).arg(file).output().expect("python3");
    assert!(
        out.status.success(),
        "invalid JUnit XML: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        std::fs::read_to_string(file).unwrap()
    );
    let counts: Vec<u64> =
        String::from_utf8(out.stdout).unwrap().split_whitespace().map(|n| n.parse().unwrap()).collect();
    (counts[0], counts[1], counts[2])
}

#[test]
fn the_example_rules_pass_as_yaml_and_as_components_with_junit() {
    example_rules_dir(); // builds the components the crates' fixtures run against
    let dir = tempfile::tempdir().unwrap();
    let junit = dir.path().join("results.xml");
    let examples = repo_root().join("example-rules");
    let output = dac_test(&[&examples, &"--junit", &junit]);
    let report = text(&output);
    assert_eq!(output.status.code(), Some(0), "{report}");
    // Each Rust crate, and the YAML directory, is one suite.
    for suite in [
        "example-rules/yaml ",
        "example-rules/correlation ",
        "example-rules/shadow ",
        "example-rules/tmp-output-redir ",
        "example-rules/base64-decode-exec ",
        // A sequence rule's multi-event cases (fixtures/sequences.ndjson),
        // through its component and the host's keyed state.
        "example-rules/download-chmod-exec ",
    ] {
        assert!(report.contains(suite), "no suite {suite:?}:\n{report}");
    }
    let last = report.lines().rfind(|l| l.contains(" passed")).unwrap_or_else(|| panic!("no totals:\n{report}"));
    let passed: u64 = last.split_whitespace().next().unwrap().parse().unwrap();
    assert!(last.starts_with(&format!("{passed} passed in ")), "{last}");
    let (tests, failures, errors) = junit_counts(&junit);
    assert_eq!((tests, failures, errors), (passed, 0, 0));
    assert!(passed >= 6 * 10 + 7 + 2, "every fixture and case ran: {passed}");
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(xml.contains("the seed talk&apos;s test: exactly the shadow rule fires"), "{xml}");
    // The seed's test is a case of the YAML rule and of the Rust rule alike.
    for cases in [yaml_rules_dir().join("shadow.tests.ndjson"), examples.join("shadow/fixtures/tests.ndjson")] {
        let text = std::fs::read_to_string(&cases).unwrap();
        assert!(
            text.contains("/usr/bin/sudo cat /etc/shadow") && text.contains(&format!("\"uuids\":[\"{SHADOW_UUID}\"]")),
            "{}",
            cases.display()
        );
    }
}

#[test]
fn a_failing_case_is_named_and_fails_the_run() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(yaml_rules_dir().join("shadow.yaml"), dir.path().join("shadow.yaml")).unwrap();
    std::fs::write(
        dir.path().join("shadow.tests.ndjson"),
        concat!(
            "{\"name\":\"reads shadow\",\"event\":{\"command_line\":\"cat /etc/shadow\"},\"expect\":\"fire\",\"uuids\":[\"5e3566a3-9f19-4ac7-8710-ec5fb09260ed\"]}\n",
            "{\"name\":\"wrongly expected quiet\",\"event\":{\"command_line\":\"vi /etc/shadow\"},\"expect\":\"no-fire\"}\n",
            "{\"name\":\"wrong value\",\"event\":{\"command_line\":\"less /etc/shadow\"},\"expect\":\"fire\",\"matched\":{\"command_line\":\"more /etc/shadow\"}}\n",
        ),
    )
    .unwrap();
    let junit = dir.path().join("junit.xml");
    let output = dac_test(&[&dir.path().join("shadow.yaml"), &"--junit", &junit]);
    let report = text(&output);
    assert_eq!(output.status.code(), Some(1), "{report}");
    let cases = dir.path().join("shadow.tests.ndjson");
    assert!(
        report
            .contains(&format!("FAILED {}:2 wrongly expected quiet - shadow.yaml fired but must not", cases.display())),
        "{report}"
    );
    assert!(
        report.contains(&format!(
            "FAILED {}:3 wrong value - shadow.yaml did not report command_line = \"more /etc/shadow\"",
            cases.display()
        )),
        "{report}"
    );
    assert!(!report.contains("FAILED") || !report.contains(":1 reads shadow -"), "{report}");
    assert!(report.contains("1 passed, 2 failed in "), "{report}");
    assert_eq!(junit_counts(&junit), (3, 2, 0));
}

#[test]
fn sigma_rules_and_broken_inputs() {
    let dir = tempfile::tempdir().unwrap();
    let sigma = dac_tests::sigma_dir().join("proc_creation_lnx_base64_decode.yml");
    std::fs::copy(&sigma, dir.path().join("b64.yml")).unwrap();
    let rule_text = std::fs::read_to_string(&sigma).unwrap();
    let id = rule_text.lines().find_map(|l| l.strip_prefix("id: ")).unwrap().trim().to_owned();
    std::fs::write(
        dir.path().join("b64.tests.ndjson"),
        format!(
            "{{\"event\":{{\"path\":\"/usr/bin/base64\",\"command_line\":\"base64 -d payload\"}},\"expect\":\"fire\",\"uuids\":[\"{id}\"]}}\n{{\"event\":{{\"path\":\"/usr/bin/base64\",\"command_line\":\"base64 payload\"}},\"expect\":\"no-fire\"}}\n"
        ),
    )
    .unwrap();
    let output = dac_test(&[&dir.path()]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    assert!(text(&output).contains("2 passed in "), "{}", text(&output));

    // A malformed case file is a usage error naming its line.
    std::fs::write(dir.path().join("b64.tests.ndjson"), "{\"event\":{},\"expect\":\"sometimes\"}\n").unwrap();
    let output = dac_test(&[&dir.path()]);
    assert_eq!(output.status.code(), Some(2), "{}", text(&output));
    assert!(text(&output).contains("b64.tests.ndjson:1: `expect` must be"), "{}", text(&output));

    // A rule that does not load makes each of its cases an error.
    std::fs::write(dir.path().join("b64.tests.ndjson"), "{\"event\":{},\"expect\":\"no-fire\"}\n").unwrap();
    std::fs::write(dir.path().join("b64.yml"), "title: x\n").unwrap();
    let output = dac_test(&[&dir.path()]);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    assert!(text(&output).contains("ERROR ") && text(&output).contains("b64.yml"), "{}", text(&output));
    assert!(text(&output).contains("0 passed, 1 errors in "), "{}", text(&output));
}
