//! The server under test: a child process on a free loopback port with a temporary data dir,
//! killed (that pid only) and cleaned up when the guard drops, on success, error, timeout or
//! Ctrl-C. Also the process facts read from /proc: RSS, open-file limit, CPU time.

use std::fs::File;
use std::net::{SocketAddr, TcpListener};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct ServerGuard {
    child: Child,
    pub addr: SocketAddr,
    dir: PathBuf,
    log: PathBuf,
}

/// Flags of the server that this benchmark adjusts when the binary has them (read from its
/// `--help`, so older and newer builds both work).
#[derive(Debug, Clone, Default)]
pub struct ServerFlags {
    pub rate_limit: bool,
    /// The server has the abuse limits (issue 12): the bench lifts those a load test from one
    /// address would trip.
    pub abuse_limits: bool,
    /// The server answers the resync exchange (issue 11): `--sync` lifts its rate and the
    /// room limits, to build a user with hundreds of conversations and ask in a loop.
    pub sync: bool,
}

impl ServerFlags {
    pub fn probe(bin: &Path) -> Result<ServerFlags, String> {
        let out = Command::new(bin)
            .arg("--help")
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run {} --help: {e}", bin.display()))?;
        let help = String::from_utf8_lossy(&out.stdout);
        if !help.contains("--max-sockets-per-user") {
            return Err(format!(
                "{} --help does not list --max-sockets-per-user: is it the persona-chat server?",
                bin.display()
            ));
        }
        Ok(ServerFlags {
            rate_limit: help.contains("--rate-limit-per-sec") && help.contains("--rate-limit-burst"),
            abuse_limits: help.contains("--max-connections-per-address"),
            sync: help.contains("--sync-per-sec"),
        })
    }
}

impl ServerGuard {
    /// Starts the server and waits until /healthz answers.
    pub async fn start(bin: &Path, flags: &ServerFlags, tag: &str) -> Result<ServerGuard, String> {
        let mut last_error = String::new();
        for attempt in 0..3 {
            match Self::start_once(bin, flags, &format!("{tag}-{attempt}")).await {
                Ok(s) => return Ok(s),
                Err(e) => last_error = e,
            }
        }
        Err(last_error)
    }

    async fn start_once(bin: &Path, flags: &ServerFlags, tag: &str) -> Result<ServerGuard, String> {
        let port = {
            let l = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("cannot find a free port: {e}"))?;
            l.local_addr().map_err(|e| e.to_string())?.port()
        };
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let nanos =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        let dir = std::env::temp_dir().join(format!("persona-chat-bench-{}-{tag}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let log = dir.join("server.log");
        let log_file = File::create(&log).map_err(|e| format!("cannot create {}: {e}", log.display()))?;
        let log_err = log_file.try_clone().map_err(|e| e.to_string())?;

        let mut cmd = Command::new(bin);
        // The environment must not reconfigure the server behind the flags' back.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("PERSONA_") {
                cmd.env_remove(&key);
            }
        }
        cmd.env("RUST_LOG", "warn")
            .arg("--addr")
            .arg(addr.to_string())
            .arg("--data-dir")
            .arg(dir.join("data"))
            .arg("--static-dir")
            .arg(dir.join("no-static"))
            .arg("--max-sockets-per-user")
            .arg("100000")
            .stdin(Stdio::null())
            .stdout(Stdio::from(log_file))
            .stderr(Stdio::from(log_err));
        if flags.rate_limit {
            // The benchmark sends up to 1,000 messages/s as one user.
            cmd.args(["--rate-limit-per-sec", "1000000", "--rate-limit-burst", "1000000"]);
        }
        if flags.abuse_limits {
            // Thousands of users and sockets, all from 127.0.0.1.
            cmd.args([
                "--signups-per-address-per-hour",
                "10000000",
                "--max-connections-per-address",
                "10000000",
                "--max-connections",
                "10000000",
                "--socket-frames-per-sec",
                "1000000",
                "--socket-opens-per-minute",
                "100000000",
            ]);
        }
        if flags.sync {
            cmd.args([
                "--sync-per-sec",
                "1000000",
                "--sync-burst",
                "1000000",
                "--rooms-per-hour",
                "1000000",
                "--max-rooms-per-user",
                "1000000",
            ]);
        }
        // SAFETY: prctl is async-signal-safe. If this process dies without running the guard
        // (SIGKILL), the kernel kills the server too.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0);
                Ok(())
            });
        }
        let child = cmd.spawn().map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
        if child.id() <= 1 {
            return Err("refusing to manage a server with pid <= 1".into());
        }
        let mut guard = ServerGuard { child, addr, dir, log };

        let http = reqwest::Client::builder().timeout(Duration::from_secs(2)).build().map_err(|e| e.to_string())?;
        let started = Instant::now();
        loop {
            if let Ok(Some(status)) = guard.child.try_wait() {
                return Err(format!("the server exited at start ({status}):\n{}", guard.log_tail()));
            }
            if let Ok(r) = http.get(format!("http://{addr}/healthz")).send().await {
                if r.status().is_success() {
                    return Ok(guard);
                }
            }
            if started.elapsed() > Duration::from_secs(30) {
                return Err(format!("the server did not answer /healthz within 30 s:\n{}", guard.log_tail()));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub fn rss_kib(&self) -> Option<u64> {
        status_field(self.pid(), "VmRSS:")
    }

    /// (soft, hard) RLIMIT_NOFILE of the server process.
    pub fn nofile(&self) -> Option<(u64, u64)> {
        let limits = std::fs::read_to_string(format!("/proc/{}/limits", self.pid())).ok()?;
        let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
        let mut nums = line["Max open files".len()..].split_whitespace().map(parse_limit);
        Some((nums.next()??, nums.next()??))
    }

    pub fn open_fds(&self) -> Option<usize> {
        Some(std::fs::read_dir(format!("/proc/{}/fd", self.pid())).ok()?.count())
    }

    pub fn cpu_secs(&self) -> Option<f64> {
        cpu_secs(&format!("/proc/{}/stat", self.pid()))
    }

    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Drop for ServerGuard {
    fn drop(&mut self) {
        // Only this child's own pid (std's Child::kill is kill(pid, SIGKILL)); never a group.
        if self.child.id() > 1 && matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn parse_limit(s: &str) -> Option<u64> {
    if s == "unlimited" {
        Some(u64::MAX)
    } else {
        s.parse().ok()
    }
}

fn status_field(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line[field.len()..].split_whitespace().next()?.parse().ok()
}

/// User + system CPU seconds of a process from its /proc stat file.
pub fn cpu_secs(stat_path: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(stat_path).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 of proc(5); `rest` starts at field 3.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let tick = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Some((utime + stime) / if tick > 0.0 { tick } else { 100.0 })
}

pub fn own_rss_kib() -> Option<u64> {
    status_field(std::process::id(), "VmRSS:")
}

/// Raises this process's RLIMIT_NOFILE soft limit to its hard limit (children inherit it) and
/// returns (soft, hard) afterwards.
pub fn raise_nofile() -> (u64, u64) {
    let mut r = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) != 0 {
            return (0, 0);
        }
        let mut target = r.rlim_max;
        if target == libc::RLIM_INFINITY {
            // The kernel refuses more than fs.nr_open.
            target = std::fs::read_to_string("/proc/sys/fs/nr_open")
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .unwrap_or(1 << 20);
        }
        if r.rlim_cur < target {
            let raised = libc::rlimit { rlim_cur: target, rlim_max: r.rlim_max };
            libc::setrlimit(libc::RLIMIT_NOFILE, &raised);
        }
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut r);
    }
    (r.rlim_cur, r.rlim_max)
}

/// CPU time counters at one instant: the server (and each of its threads), this process,
/// and the whole machine.
pub struct CpuSnapshot {
    at: Instant,
    server: Option<f64>,
    threads: std::collections::HashMap<String, f64>,
    bench: Option<f64>,
    machine_busy: Option<f64>,
}

/// CPU cores kept busy (CPU seconds per wall second) between two snapshots.
#[derive(Debug, Clone, Copy)]
pub struct CpuUse {
    pub server: f64,
    /// The server's busiest thread: near 1.0 means one thread is the bottleneck.
    pub server_busiest_thread: f64,
    pub bench: f64,
    /// Everything else on the machine (e.g. a build running alongside).
    pub other: f64,
}

impl CpuSnapshot {
    pub fn take(server: &ServerGuard) -> CpuSnapshot {
        let pid = server.pid();
        let mut threads = std::collections::HashMap::new();
        if let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) {
            for entry in dir.flatten() {
                let tid = entry.file_name().to_string_lossy().into_owned();
                if let Some(secs) = cpu_secs(&format!("/proc/{pid}/task/{tid}/stat")) {
                    threads.insert(tid, secs);
                }
            }
        }
        CpuSnapshot {
            at: Instant::now(),
            server: server.cpu_secs(),
            threads,
            bench: cpu_secs("/proc/self/stat"),
            machine_busy: machine_busy_secs(),
        }
    }

    pub fn since(&self, earlier: &CpuSnapshot) -> Option<CpuUse> {
        let wall = self.at.duration_since(earlier.at).as_secs_f64();
        if wall <= 0.0 {
            return None;
        }
        let server = (self.server? - earlier.server?) / wall;
        let bench = (self.bench? - earlier.bench?) / wall;
        let machine = (self.machine_busy? - earlier.machine_busy?) / wall;
        let busiest = self
            .threads
            .iter()
            .map(|(tid, now)| now - earlier.threads.get(tid).copied().unwrap_or(0.0))
            .fold(0.0, f64::max)
            / wall;
        Some(CpuUse { server, server_busiest_thread: busiest, bench, other: (machine - server - bench).max(0.0) })
    }
}

impl std::fmt::Display for CpuUse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "CPU cores busy: server {:.2} (busiest thread {:.2}), bench {:.2}, other processes {:.2}",
            self.server, self.server_busiest_thread, self.bench, self.other
        )
    }
}

/// Busy CPU seconds of the whole machine since boot, from /proc/stat.
fn machine_busy_secs() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    let v: Vec<f64> = line.split_whitespace().filter_map(|x| x.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal (guest is counted in user).
    let busy = v.first()? + v.get(1)? + v.get(2)? + v.get(5)? + v.get(6)? + v.get(7).unwrap_or(&0.0);
    // SAFETY: sysconf has no preconditions.
    let tick = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Some(busy / if tick > 0.0 { tick } else { 100.0 })
}
