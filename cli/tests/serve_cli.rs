//! The `dac token` and `dac serve` commands, as the real binary.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};

const DAC: &str = env!("CARGO_BIN_EXE_dac");

/// Runs `dac token` and returns (token, sha256).
fn new_token() -> (String, String) {
    let output = Command::new(DAC).arg("token").output().unwrap();
    assert!(output.status.success(), "{output:?}");
    let stdout = String::from_utf8(output.stdout).unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    let token = lines[0].strip_prefix("token:  ").unwrap().to_owned();
    let hash = lines[1].strip_prefix("sha256: ").unwrap().to_owned();
    (token, hash)
}

#[test]
fn dac_token_prints_a_fresh_token_and_its_sha256() {
    let (token, hash) = new_token();
    assert!(token.starts_with("dac_") && token.len() == 68, "{token}");
    let expected: String = dac_serve::hash_token(&token).iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(hash, expected);
    assert_ne!(new_token().0, token);
}

#[test]
fn a_bad_tenants_file_stops_dac_serve_naming_the_file_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("tenants.toml");
    let (_, hash) = new_token();
    std::fs::write(
        &config,
        format!("admin_token_sha256 = '{hash}'\n[[tenant]]\nid = 'acme'\ntoken_sha256 = 'nope'\nalert_collection = 'a'\nscope = {{ collection = 'e' }}\n"),
    )
    .unwrap();
    let output = Command::new(DAC)
        .args(["serve", "--listen", "127.0.0.1:0", "--state-dir"])
        .arg(dir.path().join("state"))
        .arg("--tenants")
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr
            .contains(&format!("dac: {}: tenant[0] \"acme\": token_sha256: expected 64 hex digits", config.display())),
        "{stderr}"
    );
}

#[test]
fn dac_serve_answers_on_its_port_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("tenants.toml");
    let (_, admin) = new_token();
    let (token, hash) = new_token();
    std::fs::write(
        &config,
        format!("admin_token_sha256 = '{admin}'\n[[tenant]]\nid = 'acme'\ntoken_sha256 = '{hash}'\nalert_collection = 'a'\nscope = {{ collection = 'e' }}\n"),
    )
    .unwrap();
    let mut child = Command::new(DAC)
        .args(["serve", "--listen", "127.0.0.1:0", "--state-dir"])
        .arg(dir.path().join("state"))
        .arg("--tenants")
        .arg(&config)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let address = loop {
        let mut line = String::new();
        assert_ne!(stderr.read_line(&mut line).unwrap(), 0, "dac serve exited before listening");
        if let Some((_, rest)) = line.split_once("serving 1 tenants on http://") {
            break rest.trim().trim_end_matches("/v1/").to_owned();
        }
    };
    let mut stream = TcpStream::connect(&address).unwrap();
    write!(
        stream,
        "GET /v1/tenants/acme/rules HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer {token}\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.ends_with(r#"{"rules":[],"not_loaded":[],"quarantined":[],"disabled":[]}"#), "{response}");

    let killed = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(killed.success());
    assert!(child.wait().unwrap().success());
    assert!(dir.path().join("state/tenants/acme/rules").is_dir());
}
