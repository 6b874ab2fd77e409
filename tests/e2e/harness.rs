//! The end-to-end harness: the real server and chromedriver as child processes, Chromium
//! windows driven over WebDriver. Every process is killed when its guard drops, so a failing
//! assertion never leaves anything running.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;

pub type TestResult<T = ()> = Result<T, String>;

/// Fails the test body with a message (the body returns `TestResult` so cleanup always runs).
#[macro_export]
macro_rules! ensure {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err(format!($($msg)+));
        }
    };
}

pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Where screenshots go: target/e2e/.
pub fn artifacts_dir() -> PathBuf {
    let dir = workspace_root().join("target").join("e2e");
    std::fs::create_dir_all(&dir).expect("create target/e2e");
    dir
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind a free port").local_addr().expect("local addr").port()
}

fn wait_for_http(url: &str, deadline: Duration) -> TestResult {
    let start = Instant::now();
    let (host_port, path) = url.trim_start_matches("http://").split_once('/').map(|(h, p)| (h.to_owned(), format!("/{p}"))).unwrap_or((url.to_owned(), "/".into()));
    while start.elapsed() < deadline {
        if let Ok(mut stream) = std::net::TcpStream::connect(&host_port) {
            use std::io::{Read, Write};
            let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
            let req = format!("GET {path} HTTP/1.1\r\nHost: {host_port}\r\nConnection: close\r\n\r\n");
            if stream.write_all(req.as_bytes()).is_ok() {
                let mut buf = String::new();
                let _ = stream.read_to_string(&mut buf);
                if buf.starts_with("HTTP/1.1 200") {
                    return Ok(());
                }
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(format!("{url} did not answer 200 within {deadline:?}"))
}

/// A child process killed (with its whole process group) when dropped.
pub struct ProcessGuard {
    name: &'static str,
    child: Option<Child>,
}

impl ProcessGuard {
    fn spawn(name: &'static str, mut cmd: Command) -> TestResult<ProcessGuard> {
        use std::os::unix::process::CommandExt;
        cmd.process_group(0);
        let child = cmd.spawn().map_err(|e| format!("cannot start {name}: {e}"))?;
        Ok(ProcessGuard { name, child: Some(child) })
    }

    /// SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            // The child leads its own process group (see spawn): kill the group, so that
            // Chromium processes started by chromedriver go too. Never a pid <= 1.
            let pgid = child.id() as i32;
            if pgid > 1 {
                unsafe { libc::kill(-pgid, libc::SIGKILL) };
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

}

impl Drop for ProcessGuard {
    fn drop(&mut self) {
        if self.child.is_some() {
            eprintln!("[e2e] stopping {}", self.name);
        }
        self.kill();
    }
}

/// The real server on a free loopback port with its own data dir.
pub struct TestServer {
    pub process: ProcessGuard,
    pub base: String,
    pub port: u16,
    pub data_dir: PathBuf,
}

pub fn server_binary() -> PathBuf {
    std::env::var_os("PERSONA_SERVER_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target/debug/persona-chat-server"))
}

pub fn dist_dir() -> PathBuf {
    std::env::var_os("PERSONA_DIST").map(PathBuf::from).unwrap_or_else(|| workspace_root().join("dist"))
}

impl TestServer {
    pub fn start(data_dir: &Path) -> TestResult<TestServer> {
        Self::start_on(data_dir, free_port())
    }

    pub fn start_on(data_dir: &Path, port: u16) -> TestResult<TestServer> {
        Self::start_with_args(data_dir, port, &[])
    }

    /// With extra server flags (e.g. `--disable-websocket`).
    pub fn start_with_args(data_dir: &Path, port: u16, args: &[&str]) -> TestResult<TestServer> {
        let bin = server_binary();
        ensure!(bin.exists(), "server binary {} not found: build it with `cargo build -p persona-chat-server` (or set PERSONA_SERVER_BIN)", bin.display());
        let dist = dist_dir();
        ensure!(dist.join("index.html").exists(), "built app not found in {}: run `trunk build --release --offline` (or set PERSONA_DIST)", dist.display());
        let log = std::fs::File::create(artifacts_dir().join(format!("server-{port}.log"))).map_err(|e| e.to_string())?;
        let mut cmd = Command::new(&bin);
        cmd.arg("--addr").arg(format!("127.0.0.1:{port}"))
            .arg("--data-dir").arg(data_dir)
            .arg("--static-dir").arg(&dist)
            .args(args)
            .env("RUST_LOG", "info")
            .stdout(Stdio::from(log.try_clone().map_err(|e| e.to_string())?))
            .stderr(Stdio::from(log));
        let process = ProcessGuard::spawn("server", cmd)?;
        let base = format!("http://127.0.0.1:{port}");
        wait_for_http(&format!("{base}/healthz"), Duration::from_secs(20))?;
        Ok(TestServer { process, base, port, data_dir: data_dir.to_owned() })
    }
}

/// chromedriver on a free port, driving Debian's Chromium headless.
pub struct Driver {
    _process: ProcessGuard,
    pub url: String,
}

impl Driver {
    pub fn start() -> TestResult<Driver> {
        let path = std::env::var("CHROMEDRIVER").unwrap_or_else(|_| "/usr/bin/chromedriver".into());
        ensure!(Path::new(&path).exists(), "chromedriver not found at {path}: run scripts/setup.sh --test");
        let port = free_port();
        let mut cmd = Command::new(path);
        cmd.arg(format!("--port={port}")).stdout(Stdio::null()).stderr(Stdio::null());
        let process = ProcessGuard::spawn("chromedriver", cmd)?;
        let url = format!("http://127.0.0.1:{port}");
        wait_for_http(&format!("{url}/status"), Duration::from_secs(20))?;
        Ok(Driver { _process: process, url })
    }

    /// A new browser window with its own profile (so its own storage), 1280x800.
    pub async fn window(&self) -> TestResult<Client> {
        let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
        let caps = serde_json::json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    "--no-first-run", "--disable-quic", "--window-size=1280,800",
                ]
            }
        });
        let caps = caps.as_object().cloned().expect("an object");
        let client = ClientBuilder::new(HttpConnector::new())
            .capabilities(caps)
            .connect(&self.url)
            .await
            .map_err(|e| format!("cannot open a Chromium window: {e}"))?;
        set_viewport(&client, 1280, 800).await?;
        Ok(client)
    }
}

/// Resizes the window so that the page's viewport is exactly `width` x `height`.
pub async fn set_viewport(client: &Client, width: u32, height: u32) -> TestResult {
    client.set_window_size(width, height).await.map_err(|e| e.to_string())?;
    let inner = client
        .execute("return [window.innerWidth, window.innerHeight];", vec![])
        .await
        .map_err(|e| e.to_string())?;
    let (w, h) = (inner[0].as_u64().unwrap_or(width as u64) as u32, inner[1].as_u64().unwrap_or(height as u64) as u32);
    client.set_window_size(2 * width - w, 2 * height - h).await.map_err(|e| e.to_string())
}

/// Polls until `probe` returns Some, or fails after `limit` with `what`.
pub async fn eventually<T, F, Fut>(limit: Duration, what: &str, mut probe: F) -> TestResult<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = probe().await {
            return Ok(v);
        }
        if start.elapsed() > limit {
            return Err(format!("timed out after {limit:?} waiting for {what}"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The text of the first element matching `css`, if any.
pub async fn text_of(client: &Client, css: &str) -> Option<String> {
    client.find(Locator::Css(css)).await.ok()?.text().await.ok()
}

pub async fn attr_of(client: &Client, css: &str, attr: &str) -> Option<String> {
    client.find(Locator::Css(css)).await.ok()?.attr(attr).await.ok()?
}

/// Saves a PNG screenshot under target/e2e/.
pub async fn screenshot(client: &Client, name: &str) -> TestResult<PathBuf> {
    let png = client.screenshot().await.map_err(|e| format!("screenshot {name}: {e}"))?;
    let path = artifacts_dir().join(format!("{name}.png"));
    std::fs::write(&path, png).map_err(|e| e.to_string())?;
    eprintln!("[e2e] saved {}", path.display());
    Ok(path)
}

/// Ends a test whose body ran under a time limit: screenshots every window if it failed,
/// closes the windows (before the driver and servers are dropped), then reports.
pub async fn conclude(outcome: Result<TestResult, tokio::time::error::Elapsed>, windows: Vec<(Client, &str)>) {
    let failed = !matches!(outcome, Ok(Ok(())));
    for (client, name) in windows {
        if failed {
            let _ = screenshot(&client, &format!("failure-{name}")).await;
        }
        let _ = client.close().await;
    }
    match outcome {
        Ok(Ok(())) => {}
        Ok(Err(e)) => panic!("{e}"),
        Err(_) => panic!("the test took longer than its time limit"),
    }
}
