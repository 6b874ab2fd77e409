//! A private Redis server on a random loopback port, without persistence, stopped on drop.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tempfile::TempDir;

use crate::ports::{free_port, wait_for};

pub struct Redis {
    _dir: TempDir,
    port: u16,
    child: Child,
}

impl Redis {
    /// Starts `redis-server`; it answers PING when this returns.
    pub fn start() -> Result<Redis, String> {
        let dir = tempfile::Builder::new().prefix("persona-chat-redis").tempdir().map_err(|e| e.to_string())?;
        let port = free_port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("redis-server (install Debian's redis-server: bash scripts/setup.sh --test): {e}"))?;
        let mut redis = Redis { _dir: dir, port, child };
        let addr = redis.addr();
        let child = &mut redis.child;
        wait_for("redis-server", Duration::from_secs(15), || {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!("exited with {status}"));
            }
            Ok(ping(addr))
        })?;
        Ok(redis)
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Kills the server at once (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Whether a Redis server at `addr` answers `PING` with `+PONG`.
pub fn ping(addr: SocketAddr) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    if stream.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut answer = [0u8; 7];
    stream.read_exact(&mut answer).is_ok() && &answer == b"+PONG\r\n"
}
