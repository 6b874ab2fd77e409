//! A private PostgreSQL server: `initdb` into a temporary directory, `postgres` on a random
//! loopback port, trust authentication for the `postgres` role, stopped and deleted on drop.
//!
//! PostgreSQL refuses to run as root; as root, both `initdb` and `postgres` run through
//! `runuser -u postgres`, in a directory that user owns. The binaries are Debian's
//! (`/usr/lib/postgresql/N/bin`, the newest N), or those in `$PG_BIN`.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tempfile::TempDir;

use crate::ports::{free_port, wait_for};

pub struct Postgres {
    dir: TempDir,
    bin: PathBuf,
    port: u16,
    child: Child,
    stopped: bool,
}

impl Postgres {
    /// Creates a cluster and starts it; ready to accept connections when this returns.
    pub fn start() -> Result<Postgres, String> {
        let bin = bin_dir()?;
        let dir = tempfile::Builder::new().prefix("persona-chat-pg").tempdir().map_err(|e| e.to_string())?;
        let data = dir.path().join("data");
        let as_postgres = running_as_root();
        if as_postgres {
            chown_to_postgres(dir.path())?;
        }
        let initdb = run_as(as_postgres, &bin.join("initdb"))
            .args(["-D"])
            .arg(&data)
            .args(["-U", "postgres", "--auth=trust", "--encoding=UTF8", "--no-sync"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .map_err(|e| format!("initdb: {e}"))?;
        if !initdb.status.success() {
            return Err(format!("initdb failed: {}", String::from_utf8_lossy(&initdb.stderr)));
        }
        let port = free_port();
        let log = File::create(dir.path().join("postgres.log")).map_err(|e| e.to_string())?;
        let child = run_as(as_postgres, &bin.join("postgres"))
            .arg("-D")
            .arg(&data)
            .args(["-p", &port.to_string(), "-k"])
            .arg(dir.path())
            .args(["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "synchronous_commit=off"])
            .args(["-c", "full_page_writes=off", "-c", "max_connections=200"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("postgres: {e}"))?;
        let mut pg = Postgres { dir, bin, port, child, stopped: false };
        let ready = pg.bin.join("pg_isready");
        let child = &mut pg.child;
        let log_path = pg.dir.path().join("postgres.log");
        wait_for("postgres", Duration::from_secs(30), || {
            if let Ok(Some(status)) = child.try_wait() {
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                return Err(format!("exited with {status}:\n{log}"));
            }
            let ok = Command::new(&ready)
                .args(["-q", "-h", "127.0.0.1", "-p", &port.to_string()])
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            Ok(ok)
        })?;
        Ok(pg)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The URL of the `postgres` database, for the `postgres` role.
    pub fn url(&self) -> String {
        self.url_of("postgres")
    }

    /// The URL of database `name` (see [`Postgres::create_database`]).
    pub fn url_of(&self, name: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }

    /// Creates an empty database and answers its URL: one per test keeps tests apart.
    pub fn create_database(&self, name: &str) -> Result<String, String> {
        assert!(name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'), "a plain database name");
        self.sql(&format!("CREATE DATABASE {name}"))?;
        Ok(self.url_of(name))
    }

    /// Runs SQL through `psql` on the `postgres` database and answers its output (unaligned,
    /// tuples only): for tests that check what is stored.
    pub fn sql(&self, sql: &str) -> Result<String, String> {
        self.sql_in("postgres", sql)
    }

    pub fn sql_in(&self, database: &str, sql: &str) -> Result<String, String> {
        let psql = self.bin.join("psql");
        let psql = if psql.exists() { psql } else { PathBuf::from("psql") };
        let out = Command::new(psql)
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-U", "postgres"])
            .args(["-p", &self.port.to_string(), "-d", database, "-c", sql])
            .output()
            .map_err(|e| format!("psql: {e}"))?;
        if !out.status.success() {
            return Err(format!("psql {sql:?}: {}", String::from_utf8_lossy(&out.stderr)));
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    /// Stops the server (fast shutdown: open sessions are ended), waiting for it to exit.
    pub fn stop(&mut self) {
        if self.stopped {
            return;
        }
        self.stopped = true;
        if let Some(pid) = self.postmaster_pid() {
            signal(pid, libc::SIGINT);
            let gone = wait_for("postgres stop", Duration::from_secs(15), || Ok(!alive(pid)));
            if gone.is_err() {
                signal(pid, libc::SIGKILL);
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn postmaster_pid(&self) -> Option<i32> {
        let text = std::fs::read_to_string(self.dir.path().join("data/postmaster.pid")).ok()?;
        text.lines().next()?.trim().parse().ok()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop();
    }
}

fn bin_dir() -> Result<PathBuf, String> {
    if let Ok(dir) = std::env::var("PG_BIN") {
        return Ok(PathBuf::from(dir));
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .map_err(|_| {
            "PostgreSQL is not installed (/usr/lib/postgresql is missing): bash scripts/setup.sh --test".to_owned()
        })?
        .filter_map(|e| e.ok())
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
        .filter(|(_, bin)| bin.join("initdb").exists())
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin).ok_or_else(|| "no initdb under /usr/lib/postgresql/*/bin".to_owned())
}

fn running_as_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

fn run_as(as_postgres: bool, program: &Path) -> Command {
    if as_postgres {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

fn chown_to_postgres(dir: &Path) -> Result<(), String> {
    let name = std::ffi::CString::new("postgres").expect("no NUL");
    // SAFETY: a valid C string; the answer is read at once, before any other getpw* call.
    let (uid, gid) = unsafe {
        let pw = libc::getpwnam(name.as_ptr());
        if pw.is_null() {
            return Err("there is no user `postgres` (install Debian's postgresql)".into());
        }
        ((*pw).pw_uid, (*pw).pw_gid)
    };
    std::os::unix::fs::chown(dir, Some(uid), Some(gid)).map_err(|e| format!("chown {}: {e}", dir.display()))
}

fn signal(pid: i32, sig: i32) {
    // SAFETY: sending a signal has no memory-safety preconditions.
    unsafe {
        libc::kill(pid, sig);
    }
}

fn alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    unsafe { libc::kill(pid, 0) == 0 }
}
