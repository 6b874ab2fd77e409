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
    let (host_port, path) = url
        .trim_start_matches("http://")
        .split_once('/')
        .map(|(h, p)| (h.to_owned(), format!("/{p}")))
        .unwrap_or((url.to_owned(), "/".into()));
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
        Self::start_serving(data_dir, port, &dist_dir(), args)
    }

    /// A server whose built app may use the chat server at `chat_base` (listed in the
    /// `persona-chat-server` meta tag, as a deployment on a static host would): a copy of
    /// dist/ under the data dir, with that tag filled in.
    pub fn start_app_for(data_dir: &Path, chat_base: &str) -> TestResult<TestServer> {
        Self::start_app_for_all(data_dir, &[chat_base])
    }

    /// Like [`TestServer::start_app_for`], with several chat servers allowed (the first is
    /// the default).
    pub fn start_app_for_all(data_dir: &Path, chat_bases: &[&str]) -> TestResult<TestServer> {
        let listed = chat_bases.join(" ");
        let dist = dist_dir();
        let copy = data_dir.join("static");
        std::fs::create_dir_all(&copy).map_err(|e| e.to_string())?;
        for entry in std::fs::read_dir(&dist).map_err(|e| format!("{}: {e}", dist.display()))? {
            let entry = entry.map_err(|e| e.to_string())?;
            if entry.file_type().map_err(|e| e.to_string())?.is_file() {
                std::fs::copy(entry.path(), copy.join(entry.file_name())).map_err(|e| e.to_string())?;
            }
        }
        let index = std::fs::read_to_string(copy.join("index.html")).map_err(|e| e.to_string())?;
        let at = index.find("persona-chat-server").ok_or("dist/index.html has no persona-chat-server meta tag")?;
        let start =
            index[..at].rfind("<meta").ok_or("dist/index.html: the persona-chat-server tag is not a meta tag")?;
        let end = at + index[at..].find('>').ok_or("dist/index.html: unclosed meta tag")? + 1;
        let filled =
            format!(r#"{}<meta name="persona-chat-server" content="{listed}">{}"#, &index[..start], &index[end..]);
        std::fs::write(copy.join("index.html"), filled).map_err(|e| e.to_string())?;
        // Precompressed copies would serve the unedited page.
        for ext in ["br", "gz"] {
            let _ = std::fs::remove_file(copy.join(format!("index.html.{ext}")));
        }
        // Its page talks to the chat servers: the CSP it serves must allow that (connect-src).
        let mut args = Vec::new();
        for base in chat_bases {
            args.extend(["--allowed-origin", base]);
        }
        Self::start_serving(data_dir, free_port(), &copy, &args)
    }

    fn start_serving(data_dir: &Path, port: u16, dist: &Path, args: &[&str]) -> TestResult<TestServer> {
        let bin = server_binary();
        ensure!(bin.exists(), "server binary {} not found: build it with `cargo build -p persona-chat-server` (or set PERSONA_SERVER_BIN)", bin.display());
        let dist = dist.to_owned();
        ensure!(
            dist.join("index.html").exists(),
            "built app not found in {}: run `trunk build --release --offline` (or set PERSONA_DIST)",
            dist.display()
        );
        let log =
            std::fs::File::create(artifacts_dir().join(format!("server-{port}.log"))).map_err(|e| e.to_string())?;
        let mut cmd = Command::new(&bin);
        cmd.arg("--addr")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--data-dir")
            .arg(data_dir)
            .arg("--static-dir")
            .arg(&dist)
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
        self.window_with_args(&[]).await
    }
}

/// Resizes the window so that the page's viewport is exactly `width` x `height`.
pub async fn set_viewport(client: &Client, width: u32, height: u32) -> TestResult {
    client.set_window_size(width, height).await.map_err(|e| e.to_string())?;
    let inner =
        client.execute("return [window.innerWidth, window.innerHeight];", vec![]).await.map_err(|e| e.to_string())?;
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

// ---- Additions for the fault suite (tests/e2e/faults.rs) and the browser benchmark
// (tests/uxbench/main.rs, which includes this file as a module). ----

impl TestServer {
    /// SIGKILLs the server and starts it again on the same port and data dir, with `args`.
    pub fn restart_with_args(&mut self, args: &[&str]) -> TestResult {
        self.process.kill();
        *self = TestServer::start_with_args(&self.data_dir.clone(), self.port, args)?;
        Ok(())
    }
}

impl Driver {
    /// Like [`Driver::window`], with extra Chromium flags (e.g. `--enable-precise-memory-info`).
    pub async fn window_with_args(&self, extra: &[&str]) -> TestResult<Client> {
        let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
        let mut args: Vec<String> = [
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--disable-quic",
            "--window-size=1280,800",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(extra.iter().map(|s| s.to_string()));
        let caps = serde_json::json!({
            "browserName": "chrome",
            "goog:chromeOptions": { "binary": chromium, "args": args }
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

    /// Runs a Chrome DevTools Protocol command in `client`'s window, through chromedriver's
    /// `goog/cdp/execute` endpoint; answers the command's result.
    pub async fn cdp(&self, client: &Client, cmd: &str, params: serde_json::Value) -> TestResult<serde_json::Value> {
        let session =
            client.session_id().await.map_err(|e| e.to_string())?.ok_or("the window has no WebDriver session")?;
        let body = serde_json::json!({ "cmd": cmd, "params": params }).to_string();
        let url = format!("{}/session/{session}/goog/cdp/execute", self.url);
        let answer = http_request("POST", &url, None, Some(&body)).await?;
        if !(200..300).contains(&answer.0) {
            return Err(format!("CDP {cmd} failed with {}: {}", answer.0, answer.1));
        }
        let value: serde_json::Value = serde_json::from_str(&answer.1).map_err(|e| format!("CDP {cmd}: {e}"))?;
        Ok(value.get("value").cloned().unwrap_or(serde_json::Value::Null))
    }

    /// Takes `client`'s window off the network (or back) with Chromium's network emulation,
    /// and makes sure the page hears about it (`navigator.onLine` and the window's
    /// offline/online event).
    pub async fn set_offline(&self, client: &Client, offline: bool) -> TestResult {
        self.cdp(client, "Network.enable", serde_json::json!({})).await?;
        self.cdp(
            client,
            "Network.emulateNetworkConditions",
            serde_json::json!({ "offline": offline, "latency": 0, "downloadThroughput": -1, "uploadThroughput": -1 }),
        )
        .await?;
        // Chromium fires the event itself when emulating; fire it only if the page missed it.
        let script = "const offline = arguments[0];
            if (navigator.onLine === offline) { window.dispatchEvent(new Event(offline ? 'offline' : 'online')); return 'dispatched'; }
            return 'native';";
        client.execute(script, vec![serde_json::json!(offline)]).await.map_err(|e| e.to_string())?;
        Ok(())
    }
}

/// A minimal HTTP/1.1 request over loopback (no TLS): answers (status, body). `token` goes in
/// `Authorization: Bearer`; `body` is sent as JSON.
pub async fn http_request(
    method: &str,
    url: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> TestResult<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url.strip_prefix("http://").ok_or_else(|| format!("not an http URL: {url}"))?;
    let (host, path) = match rest.split_once('/') {
        Some((h, p)) => (h.to_owned(), format!("/{p}")),
        None => (rest.to_owned(), "/".to_owned()),
    };
    let io = async {
        let mut stream = tokio::net::TcpStream::connect(&host).await.map_err(|e| format!("{method} {url}: {e}"))?;
        let mut req =
            format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nAccept: application/json\r\n");
        if let Some(token) = token {
            req.push_str(&format!("Authorization: Bearer {token}\r\n"));
        }
        let body = body.unwrap_or("");
        if method != "GET" {
            req.push_str(&format!("Content-Type: application/json\r\nContent-Length: {}\r\n", body.len()));
        }
        req.push_str("\r\n");
        req.push_str(body);
        stream.write_all(req.as_bytes()).await.map_err(|e| format!("{method} {url}: {e}"))?;
        // Read until the answer is complete (some servers keep the connection open).
        let mut raw = Vec::new();
        let mut buf = [0u8; 16384];
        loop {
            let n = stream.read(&mut buf).await.map_err(|e| format!("{method} {url}: {e}"))?;
            if n == 0 {
                break;
            }
            raw.extend_from_slice(&buf[..n]);
            if http_response_complete(&raw) {
                break;
            }
        }
        parse_http_response(&raw).ok_or_else(|| format!("{method} {url}: not an HTTP answer"))
    };
    tokio::time::timeout(Duration::from_secs(30), io)
        .await
        .map_err(|_| format!("{method} {url}: no answer within 30 s"))?
}

fn http_response_complete(raw: &[u8]) -> bool {
    let Some(split) = raw.windows(4).position(|w| w == b"\r\n\r\n") else { return false };
    let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
    let body = &raw[split + 4..];
    if let Some(len) =
        head.lines().find_map(|l| l.strip_prefix("content-length:")).and_then(|v| v.trim().parse::<usize>().ok())
    {
        return body.len() >= len;
    }
    if head.contains("transfer-encoding: chunked") {
        return body.ends_with(b"0\r\n\r\n");
    }
    false
}

fn parse_http_response(raw: &[u8]) -> Option<(u16, String)> {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let mut body = raw[split + 4..].to_vec();
    let status: u16 = head.split_whitespace().nth(1)?.parse().ok()?;
    if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        let mut out = Vec::new();
        let mut rest = &body[..];
        loop {
            let line_end = rest.windows(2).position(|w| w == b"\r\n")?;
            let size_text = String::from_utf8_lossy(&rest[..line_end]).to_string();
            let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
            rest = &rest[line_end + 2..];
            if size == 0 {
                break;
            }
            out.extend_from_slice(rest.get(..size)?);
            rest = rest.get(size + 2..)?;
        }
        body = out;
    }
    Some((status, String::from_utf8_lossy(&body).to_string()))
}

/// The app's test hook, `window.personaChatState()`, parsed. An error when the page has no
/// hook or the call fails (never taken for an empty state).
pub async fn app_state(client: &Client) -> TestResult<serde_json::Value> {
    let value = client
        .execute("return (typeof window.personaChatState === 'function') ? window.personaChatState() : null;", vec![])
        .await
        .map_err(|e| format!("reading window.personaChatState(): {e}"))?;
    match value {
        serde_json::Value::String(text) => {
            serde_json::from_str(&text).map_err(|e| format!("personaChatState() is not JSON ({e}): {text}"))
        }
        serde_json::Value::Object(_) => Ok(value),
        serde_json::Value::Null => Err("the app has no window.personaChatState() hook".into()),
        other => Err(format!("personaChatState() returned {other}")),
    }
}

/// The rendered message rows, in DOM order: (data-seq if any, data-delivery, text).
pub async fn rendered_rows(client: &Client) -> TestResult<Vec<(Option<i64>, String, String)>> {
    let script = "return Array.from(document.querySelectorAll('li.message')).map(li => [
            li.getAttribute('data-seq'), li.getAttribute('data-delivery') || '',
            (li.querySelector('.content') || {}).textContent || '']);";
    let rows = client.execute(script, vec![]).await.map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    for row in rows.as_array().cloned().unwrap_or_default() {
        let seq = row[0].as_str().and_then(|s| s.parse().ok());
        out.push((seq, row[1].as_str().unwrap_or("").to_owned(), row[2].as_str().unwrap_or("").to_owned()));
    }
    Ok(out)
}

/// The connection indicator's state, if shown.
pub async fn link_state(client: &Client) -> Option<String> {
    attr_of(client, ".connection", "data-state").await
}

/// Makes sure `user` has an account (sign-in no longer registers): created over HTTP, or
/// already there.
pub async fn ensure_account(base: &str, user: &str, password: &str) -> TestResult {
    let body = serde_json::json!({ "username": user, "password": password }).to_string();
    let (status, answer) = http_request("POST", &format!("{base}/api/users"), None, Some(&body)).await?;
    ensure!(status == 201 || status == 200 || status == 409, "sign-up of {user}: {status} {answer}");
    Ok(())
}

/// The response headers of `GET url` (names lower case), for checks on headers alone.
pub async fn http_headers(url: &str) -> TestResult<Vec<(String, String)>> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url.strip_prefix("http://").ok_or_else(|| format!("not an http URL: {url}"))?;
    let (host, path) = match rest.split_once('/') {
        Some((h, p)) => (h.to_owned(), format!("/{p}")),
        None => (rest.to_owned(), "/".to_owned()),
    };
    let io = async {
        let mut stream = tokio::net::TcpStream::connect(&host).await.map_err(|e| format!("GET {url}: {e}"))?;
        stream
            .write_all(format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let mut raw = Vec::new();
        let mut buf = [0u8; 8192];
        while !raw.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = stream.read(&mut buf).await.map_err(|e| e.to_string())?;
            if n == 0 {
                break;
            }
            raw.extend_from_slice(&buf[..n]);
        }
        let split = raw.windows(4).position(|w| w == b"\r\n\r\n").ok_or_else(|| format!("GET {url}: no headers"))?;
        Ok(String::from_utf8_lossy(&raw[..split])
            .lines()
            .skip(1)
            .filter_map(|l| l.split_once(':').map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned())))
            .collect())
    };
    tokio::time::timeout(Duration::from_secs(30), io).await.map_err(|_| format!("GET {url}: no answer within 30 s"))?
}
