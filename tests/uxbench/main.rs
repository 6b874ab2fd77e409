//! The browser benchmark (issue 6): what users feel, measured in headless Chromium against the
//! real server over loopback, printed as a table next to the targets. A command, not a test:
//! `bash scripts/bench-app.sh` builds what it needs and runs this (`harness = false`,
//! `test = false`: `cargo test` never runs it).
//!
//! Sections (each can be chosen with `--only a,b`):
//! - `size`: the built app's wasm/js/css raw, gzip, brotli (scripts/size-report.sh --no-build).
//! - `start`: navigation to Connected, `--loads` cold loads (browser cache cleared each time),
//!   measured in the page (performance.now() when `.connection[data-state=connected]` appears).
//! - `crosstab`: `--messages` sent in window A, rendered in window B, measured in the pages
//!   (performance.timeOrigin + performance.now(), a MutationObserver in B).
//! - `history`: a room seeded with `--history` messages over the HTTP API, opened: time until
//!   the newest message is painted, and the JS heap.
//! - `stream`: a persona reply of `--tokens-per-sec` x `--stream-secs` tokens from a local fake
//!   OpenAI-compatible endpoint (the built-in responder writes 20 to 80 words), long tasks
//!   over 50 ms counted with a PerformanceObserver.
//! - `recovery`: `--recoveries` restarts of the server: time from its restart to every window
//!   Connected and holding the messages stored right after the restart.

#[allow(dead_code)]
#[path = "../e2e/harness.rs"]
mod harness;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use fantoccini::{Client, Locator};
use harness::*;
use serde_json::{json, Value};

const PASSWORD: &str = "bench-password";
const STEP: Duration = Duration::from_secs(30);

struct Opts {
    loads: usize,
    messages: usize,
    gap_ms: u64,
    history: usize,
    stream_secs: u64,
    tokens_per_sec: u64,
    recoveries: usize,
    only: Vec<String>,
}

fn opts() -> Opts {
    let mut o = Opts {
        loads: 20,
        messages: 1000,
        gap_ms: 20,
        history: 10_000,
        stream_secs: 10,
        tokens_per_sec: 200,
        recoveries: 5,
        only: Vec::new(),
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < args.len() {
        let value = args.get(i + 1).cloned().unwrap_or_default();
        let num = || value.parse::<u64>().unwrap_or_else(|_| panic!("{} wants a number", args[i]));
        match args[i].as_str() {
            "--loads" => o.loads = num() as usize,
            "--messages" => o.messages = num() as usize,
            "--gap-ms" => o.gap_ms = num(),
            "--history" => o.history = num() as usize,
            "--stream-secs" => o.stream_secs = num(),
            "--tokens-per-sec" => o.tokens_per_sec = num(),
            "--recoveries" => o.recoveries = num() as usize,
            "--only" => o.only = value.split(',').map(|s| s.trim().to_owned()).collect(),
            "--help" | "-h" => {
                println!("uxbench [--only size,start,crosstab,history,stream,recovery] [--loads 20] [--messages 1000] [--gap-ms 20] [--history 10000] [--stream-secs 10] [--tokens-per-sec 200] [--recoveries 5]");
                std::process::exit(0);
            }
            // cargo's own test-harness flags, if any, are ignored.
            _ => {
                i += 1;
                continue;
            }
        }
        i += 2;
    }
    o
}

/// One line of the final table.
struct Row {
    what: String,
    measured: String,
    target: String,
    verdict: String,
}

fn row(rows: &mut Vec<Row>, what: &str, measured: String, target: &str, met: Option<bool>) {
    let verdict = match met {
        Some(true) => "met",
        Some(false) => "MISSED",
        None => "",
    };
    println!("[uxbench] {what}: {measured} (target {target}) {verdict}");
    rows.push(Row { what: what.into(), measured, target: target.into(), verdict: verdict.into() });
}

fn epoch_ms() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs_f64() * 1000.0
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    percentile(&s, 50.0)
}

fn e<T: std::fmt::Display>(x: T) -> String {
    x.to_string()
}

/// Runs at the start of every document of a window: records when Connected first shows, when
/// the wasm started, and keeps the wasm exports (for its memory size).
const PROBE: &str = r#"(() => {
  if (window.__probe) return; window.__probe = true;
  const check = () => {
    if (window.__connectedAt === undefined && document.querySelector('.connection[data-state="connected"]')) {
      window.__connectedAt = performance.now();
    }
  };
  new MutationObserver(check).observe(document, { subtree: true, childList: true, attributes: true, attributeFilter: ['data-state'] });
  addEventListener('TrunkApplicationStarted', (e) => { window.__wasm = e.detail && e.detail.wasm; window.__wasmStartedAt = performance.now(); });
})();"#;

async fn window(driver: &Driver) -> TestResult<Client> {
    let client = driver.window_with_args(&["--enable-precise-memory-info"]).await?;
    driver.cdp(&client, "Page.addScriptToEvaluateOnNewDocument", json!({ "source": PROBE })).await?;
    Ok(client)
}

async fn session(base: &str, user: &str) -> TestResult<(String, Value)> {
    let body = json!({"username": user, "password": PASSWORD}).to_string();
    ensure_account(base, user, PASSWORD).await?;
    let (status, answer) = http_request("POST", &format!("{base}/api/session"), None, Some(&body)).await?;
    ensure!(status == 200, "sign-in of {user}: {status} {answer}");
    let v: Value = serde_json::from_str(&answer).map_err(e)?;
    Ok((v["token"].as_str().unwrap_or("").to_owned(), v))
}

async fn sign_in(client: &Client, base: &str, user: &str) -> TestResult {
    ensure_account(base, user, PASSWORD).await?;
    client.goto(&format!("{base}/login")).await.map_err(e)?;
    let field = client
        .wait()
        .at_most(STEP)
        .for_element(Locator::Id("username"))
        .await
        .map_err(|x| format!("no sign-in form: {x}"))?;
    field.send_keys(user).await.map_err(e)?;
    client.find(Locator::Id("password")).await.map_err(e)?.send_keys(PASSWORD).await.map_err(e)?;
    client.find(Locator::Css(".login-card button[type=submit]")).await.map_err(e)?.click().await.map_err(e)?;
    wait_connected(client, user).await?;
    client
        .wait()
        .at_most(STEP)
        .for_element(Locator::Id("composer-input"))
        .await
        .map_err(|x| format!("{user}: no composer: {x}"))?;
    Ok(())
}

async fn wait_connected(client: &Client, who: &str) -> TestResult {
    eventually(STEP, &format!("{who} to be connected"), || async {
        (link_state(client).await.as_deref() == Some("connected")).then_some(())
    })
    .await
}

async fn active(client: &Client) -> Option<String> {
    app_state(client).await.ok()?.get("active")?.as_str().map(str::to_owned)
}

/// Opens a conversation by in-app navigation to /c/{id}; answers whether that worked (else it
/// falls back to remembering it as active and loading /).
async fn open_conversation(client: &Client, base: &str, id: &str) -> TestResult<bool> {
    if active(client).await.as_deref() == Some(id) {
        return Ok(true);
    }
    let script = "history.pushState(null, '', '/c/' + arguments[0]); window.dispatchEvent(new PopStateEvent('popstate', { state: null }));";
    client.execute(script, vec![json!(id)]).await.map_err(e)?;
    let ok = eventually(Duration::from_secs(3), "in-app navigation", || async {
        (active(client).await.as_deref() == Some(id)).then_some(())
    })
    .await;
    if ok.is_ok() {
        return Ok(true);
    }
    let script = "sessionStorage.setItem('persona-chat.active', arguments[0]); localStorage.setItem('persona-chat.active', arguments[0]);";
    client.execute(script, vec![json!(id)]).await.map_err(e)?;
    client.goto(&format!("{base}/")).await.map_err(e)?;
    eventually(STEP, "the conversation to open", || async {
        (active(client).await.as_deref() == Some(id)).then_some(())
    })
    .await?;
    Ok(false)
}

/// Sends `n` messages "{prefix}-{i} ..." over HTTP, `workers` at a time.
async fn seed(base: &str, token: &str, conversation: &str, prefix: &str, n: usize, workers: usize) -> TestResult {
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(1));
    let mut tasks = Vec::new();
    for w in 0..workers {
        let (base, token, conversation, prefix, next) =
            (base.to_owned(), token.to_owned(), conversation.to_owned(), prefix.to_owned(), next.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                if i > n {
                    return Ok::<_, String>(());
                }
                let body = json!({
                    "content": format!("{prefix}-{i:05} a message of the long history, long enough to wrap like a real one might do in a chat"),
                    "client_id": format!("00000000-0000-4000-8000-{:04x}{:08x}", w, i),
                })
                .to_string();
                let mut tries = 0;
                loop {
                    let (status, answer) = http_request("POST", &format!("{base}/api/conversations/{conversation}/messages"), Some(&token), Some(&body)).await?;
                    if status == 200 {
                        break;
                    }
                    tries += 1;
                    if tries > 20 {
                        return Err(format!("seeding: {status} {answer}"));
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }));
    }
    for t in tasks {
        t.await.map_err(e)??;
    }
    Ok(())
}

fn start_server(data: &std::path::Path, args: &[&str]) -> TestResult<TestServer> {
    let mut all = vec!["--rate-limit-per-sec", "100000", "--rate-limit-burst", "100000"];
    all.extend_from_slice(args);
    TestServer::start_with_args(data, free_port(), &all)
}

// ---- 1. size ----

fn size(rows: &mut Vec<Row>) -> TestResult {
    let script = workspace_root().join("scripts/size-report.sh");
    let out = std::process::Command::new("bash")
        .arg(script)
        .arg("--no-build")
        .current_dir(workspace_root())
        .output()
        .map_err(e)?;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    println!("{text}");
    ensure!(out.status.success(), "size-report.sh failed: {}", String::from_utf8_lossy(&out.stderr));
    let total =
        text.lines().find(|l| l.starts_with("total ") && !l.contains("KiB")).ok_or("no total in the size report")?;
    let n: Vec<u64> = total.split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
    ensure!(n.len() == 3, "cannot read {total:?}");
    for f in text.lines().skip(1).filter(|l| !l.starts_with("total")) {
        let parts: Vec<&str> = f.split_whitespace().collect();
        if parts.len() == 4 {
            let kind = parts[0].rsplit('.').next().unwrap_or("");
            row(
                rows,
                &format!("size: {kind}"),
                format!("{} raw, {} gzip, {} brotli", kib(parts[1]), kib(parts[2]), kib(parts[3])),
                "",
                None,
            );
        }
    }
    let br_kb = n[2] as f64 / 1000.0;
    row(
        rows,
        "size: total transfer (brotli)",
        format!("{:.1} KB brotli ({:.1} KB gzip, {:.1} KB raw)", br_kb, n[1] as f64 / 1000.0, n[0] as f64 / 1000.0),
        "<= 200 KB",
        Some(br_kb <= 200.0),
    );
    Ok(())
}

fn kib(bytes: &str) -> String {
    bytes.parse::<f64>().map(|b| format!("{:.1} KB", b / 1000.0)).unwrap_or_else(|_| bytes.to_owned())
}

// ---- 2. start ----

async fn start(driver: &Driver, o: &Opts, rows: &mut Vec<Row>) -> TestResult {
    let data = tempfile::tempdir().map_err(e)?;
    let server = start_server(data.path(), &[])?;
    let client = window(driver).await?;
    let result = async {
        sign_in(&client, &server.base, "starter").await?;
        let mut times = Vec::new();
        let mut wasm_start = Vec::new();
        for _ in 0..o.loads {
            driver.cdp(&client, "Network.clearBrowserCache", json!({})).await?;
            client.goto("about:blank").await.map_err(e)?;
            client.goto(&format!("{}/", server.base)).await.map_err(e)?;
            let at = eventually(STEP, "Connected after a cold load", || async {
                let v = client
                    .execute("return [window.__connectedAt ?? null, window.__wasmStartedAt ?? null];", vec![])
                    .await
                    .ok()?;
                v[0].as_f64().map(|c| (c, v[1].as_f64()))
            })
            .await?;
            times.push(at.0);
            if let Some(w) = at.1 {
                wasm_start.push(w);
            }
        }
        let mut sorted = times.clone();
        sorted.sort_by(|a, b| a.total_cmp(b));
        let med = percentile(&sorted, 50.0);
        row(
            rows,
            &format!("start: navigation to Connected, median of {}", o.loads),
            format!("{med:.0} ms"),
            "<= 150 ms",
            Some(med <= 150.0),
        );
        row(
            rows,
            "start: navigation to Connected, worst",
            format!("{:.0} ms", sorted.last().copied().unwrap_or(f64::NAN)),
            "",
            None,
        );
        if !wasm_start.is_empty() {
            row(rows, "start: navigation to wasm started, median", format!("{:.0} ms", median(&wasm_start)), "", None);
        }
        Ok(())
    }
    .await;
    let _ = client.close().await;
    result
}

// ---- 3. cross-tab ----

/// In window B: records when each "X-<n>" message is first in the DOM (epoch ms).
const SEEN_PROBE: &str = r#"
  window.__seen = {};
  const note = (el, t) => {
    if (!el || el.nodeType !== 1) return;
    const up = el.closest('li.message');
    const rows = up ? [up] : el.querySelectorAll('li.message');
    for (const r of rows) {
      const m = /X-(\d+) cross-tab/.exec((r.querySelector('.content') || r).textContent);
      if (m && !(m[1] in window.__seen)) window.__seen[m[1]] = t;
    }
  };
  new MutationObserver((muts) => {
    const t = performance.timeOrigin + performance.now();
    for (const mu of muts) {
      if (mu.type === 'characterData') { note(mu.target.parentElement && mu.target.parentElement.closest('li.message'), t); continue; }
      for (const n of mu.addedNodes) note(n.nodeType === 3 ? n.parentElement : n, t);
    }
    // And the newest rows, whatever the mutations were.
    const all = document.querySelectorAll('li.message');
    for (let i = Math.max(0, all.length - 3); i < all.length; i++) note(all[i], t);
  }).observe(document.body, { subtree: true, childList: true, characterData: true });
  return true;"#;

/// In window A: sends `n` messages through the composer, one every `gap` ms, noting when each
/// was sent (epoch ms, just before the Enter key).
const SEND_LOOP: &str = r#"
  const [n, gap] = arguments;
  window.__sent = {}; window.__sendDone = false;
  const setter = Object.getOwnPropertyDescriptor(HTMLTextAreaElement.prototype, 'value').set;
  let i = 0;
  const one = () => {
    if (i >= n) { window.__sendDone = true; return; }
    const ta = document.querySelector('#composer-input');
    const text = 'X-' + i + ' cross-tab latency';
    setter.call(ta, text);
    ta.dispatchEvent(new Event('input', { bubbles: true }));
    window.__sent[i] = performance.timeOrigin + performance.now();
    ta.dispatchEvent(new KeyboardEvent('keydown', { key: 'Enter', code: 'Enter', keyCode: 13, which: 13, bubbles: true, cancelable: true }));
    i++;
    setTimeout(one, gap);
  };
  one();
  return true;"#;

async fn crosstab(driver: &Driver, o: &Opts, rows: &mut Vec<Row>) -> TestResult {
    let data = tempfile::tempdir().map_err(e)?;
    let server = start_server(data.path(), &[])?;
    let a = window(driver).await?;
    let b = window(driver).await?;
    let result = async {
        sign_in(&a, &server.base, "sender").await?;
        sign_in(&b, &server.base, "receiver").await?;
        let (ia, ib) = (active(&a).await, active(&b).await);
        ensure!(ia.is_some() && ia == ib, "the two windows do not show the same conversation ({ia:?}, {ib:?})");
        b.execute(SEEN_PROBE, vec![]).await.map_err(e)?;
        a.execute(SEND_LOOP, vec![json!(o.messages), json!(o.gap_ms)]).await.map_err(e)?;
        let limit = Duration::from_millis(o.messages as u64 * o.gap_ms * 3 + 60_000);
        eventually(limit, "window A to send everything", || async {
            (a.execute("return window.__sendDone;", vec![]).await.ok()? == json!(true)).then_some(())
        })
        .await?;
        let n = o.messages;
        let arrived = eventually(Duration::from_secs(20), "window B to render every message", || async {
            let c = b.execute("return Object.keys(window.__seen).length;", vec![]).await.ok()?.as_u64()? as usize;
            (c >= n).then_some(c)
        })
        .await;
        let sent = a.execute("return window.__sent;", vec![]).await.map_err(e)?;
        let seen = b.execute("return window.__seen;", vec![]).await.map_err(e)?;
        let mut lat = Vec::new();
        for (k, t0) in sent.as_object().cloned().unwrap_or_default() {
            if let (Some(t0), Some(t1)) = (t0.as_f64(), seen.get(&k).and_then(Value::as_f64)) {
                lat.push(t1 - t0);
            }
        }
        lat.sort_by(|x, y| x.total_cmp(y));
        let (p50, p99, max) = (percentile(&lat, 50.0), percentile(&lat, 99.0), lat.last().copied().unwrap_or(f64::NAN));
        if arrived.is_err() {
            let missing: Vec<String> = sent.as_object().map(|m| m.keys().filter(|k| seen.get(k.as_str()).is_none()).map(|k| format!("X-{k}")).collect()).unwrap_or_default();
            let shown: Vec<String> = missing.iter().take(10).cloned().collect();
            for m in &shown {
                let script = "return Array.from(document.querySelectorAll('li.message')).filter(r => r.textContent.includes(arguments[0] + ' ')).map(r => r.outerHTML.slice(0, 300));";
                let in_a = a.execute(script, vec![json!(m)]).await.map_err(e)?;
                let in_b = b.execute(script, vec![json!(m)]).await.map_err(e)?;
                println!("[uxbench] {m}: in window A {in_a}, in window B {in_b}");
            }
            row(rows, "cross-tab: rendered in B", format!("only {} of {n} (missing {})", lat.len(), shown.join(", ")), &format!("{n}"), Some(false));
        }
        row(rows, &format!("cross-tab latency p50 ({} messages, one every {} ms)", lat.len(), o.gap_ms), format!("{p50:.1} ms"), "<= 5 ms", Some(p50 <= 5.0));
        row(rows, "cross-tab latency p99", format!("{p99:.1} ms"), "<= 25 ms", Some(p99 <= 25.0));
        row(rows, "cross-tab latency max", format!("{max:.1} ms"), "", None);
        Ok(())
    }
    .await;
    let _ = a.close().await;
    let _ = b.close().await;
    result
}

/// Cross-tab latency between two tabs of the same user (one profile): sent in the leading
/// tab, rendered in a following tab that gets the frame relayed over the BroadcastChannel.
async fn crosstab_same_user(driver: &Driver, o: &Opts, rows: &mut Vec<Row>) -> TestResult {
    let data = tempfile::tempdir().map_err(e)?;
    let server = start_server(data.path(), &[])?;
    let a = window(driver).await?;
    let result = async {
        sign_in(&a, &server.base, "sender").await?;
        let leader = a.window().await.map_err(e)?;
        let follower = a.new_window(true).await.map_err(e)?.handle;
        a.switch_to_window(follower.clone()).await.map_err(e)?;
        a.goto(&format!("{}/", server.base)).await.map_err(e)?;
        eventually(STEP, "the second tab to be connected, following", || async {
            let state = app_state(&a).await.ok()?;
            (state["link"].as_str()? == "connected"
                && state["tab"]["role"].as_str()? == "follower"
                && state["active"].is_string())
            .then_some(())
        })
        .await?;
        a.execute(SEEN_PROBE, vec![]).await.map_err(e)?;
        a.switch_to_window(leader.clone()).await.map_err(e)?;
        a.execute(SEND_LOOP, vec![json!(o.messages), json!(o.gap_ms)]).await.map_err(e)?;
        let limit = Duration::from_millis(o.messages as u64 * o.gap_ms * 3 + 60_000);
        eventually(limit, "the leading tab to send everything", || async {
            (a.execute("return window.__sendDone;", vec![]).await.ok()? == json!(true)).then_some(())
        })
        .await?;
        let sent = a.execute("return window.__sent;", vec![]).await.map_err(e)?;
        a.switch_to_window(follower.clone()).await.map_err(e)?;
        let n = o.messages;
        let arrived = eventually(Duration::from_secs(20), "the following tab to render every message", || async {
            let c = a.execute("return Object.keys(window.__seen).length;", vec![]).await.ok()?.as_u64()? as usize;
            (c >= n).then_some(c)
        })
        .await;
        let seen = a.execute("return window.__seen;", vec![]).await.map_err(e)?;
        let mut lat = Vec::new();
        for (k, t0) in sent.as_object().cloned().unwrap_or_default() {
            if let (Some(t0), Some(t1)) = (t0.as_f64(), seen.get(&k).and_then(Value::as_f64)) {
                lat.push(t1 - t0);
            }
        }
        lat.sort_by(|x, y| x.total_cmp(y));
        let (p50, p99, max) = (percentile(&lat, 50.0), percentile(&lat, 99.0), lat.last().copied().unwrap_or(f64::NAN));
        if arrived.is_err() {
            row(
                rows,
                "cross-tab, same user: rendered in the following tab",
                format!("only {} of {n}", lat.len()),
                &format!("{n}"),
                Some(false),
            );
        }
        row(
            rows,
            &format!("cross-tab latency, same user, relayed by the leader, p50 ({} messages)", lat.len()),
            format!("{p50:.1} ms"),
            "<= 5 ms",
            Some(p50 <= 5.0),
        );
        row(rows, "cross-tab latency, same user, relayed, p99", format!("{p99:.1} ms"), "<= 25 ms", Some(p99 <= 25.0));
        row(rows, "cross-tab latency, same user, relayed, max", format!("{max:.1} ms"), "", None);
        Ok(())
    }
    .await;
    let _ = a.close().await;
    result
}

// ---- 4. long history ----

/// Waits (in the page) for the newest message's row, then for the frame after it to be
/// painted; answers performance.now() at that point.
const PAINTED_PROBE: &str = r#"
  const needle = arguments[0];
  window.__painted = null;
  const found = () => Array.from(document.querySelectorAll('li.message')).some((r) => r.textContent.includes(needle));
  const done = () => requestAnimationFrame(() => setTimeout(() => { window.__painted = performance.now(); }, 0));
  if (found()) { done(); return true; }
  const mo = new MutationObserver(() => { if (found()) { mo.disconnect(); done(); } });
  mo.observe(document.body, { subtree: true, childList: true, characterData: true });
  return true;"#;

async fn history(driver: &Driver, o: &Opts, rows: &mut Vec<Row>) -> TestResult {
    let data = tempfile::tempdir().map_err(e)?;
    let server = start_server(data.path(), &[])?;
    let (token, _) = session(&server.base, "historian").await?;
    let (status, body) = http_request(
        "POST",
        &format!("{}/api/conversations", server.base),
        Some(&token),
        Some(&json!({"title": "History", "member_ids": [], "persona_ids": []}).to_string()),
    )
    .await?;
    ensure!((200..300).contains(&status), "creating the room: {status} {body}");
    let room: Value = serde_json::from_str(&body).map_err(e)?;
    let room = room["id"].as_str().or(room["conversation"]["id"].as_str()).ok_or("no room id")?.to_owned();
    let t = Instant::now();
    seed(&server.base, &token, &room, "H", o.history, 8).await?;
    println!("[uxbench] seeded {} messages in {:.1} s", o.history, t.elapsed().as_secs_f64());
    let needle = format!("H-{:05}", o.history);
    let client = window(driver).await?;
    let result = async {
        sign_in(&client, &server.base, "historian").await?;
        let heap_before = client.execute("return performance.memory ? performance.memory.usedJSHeapSize : null;", vec![]).await.map_err(e)?;
        // In-app: from the navigation in the page to the newest message painted.
        client.execute("window.__t0 = performance.now();", vec![]).await.map_err(e)?;
        client.execute(PAINTED_PROBE, vec![json!(needle)]).await.map_err(e)?;
        let in_app = open_conversation(&client, &server.base, &room).await?;
        let painted = eventually(STEP, "the newest message to be painted", || async {
            client.execute("return window.__painted;", vec![]).await.ok()?.as_f64()
        })
        .await?;
        let t0 = if in_app {
            client.execute("return window.__t0;", vec![]).await.map_err(e)?.as_f64().unwrap_or(0.0)
        } else {
            0.0
        };
        let how = if in_app { "opened in the app" } else { "loaded at / (no in-app navigation)" };
        row(rows, &format!("history: {} messages {how}, newest painted", o.history), format!("{:.0} ms", painted - t0), "<= 300 ms", Some(painted - t0 <= 300.0));
        tokio::time::sleep(Duration::from_secs(1)).await;
        let held = app_state(&client).await.ok().and_then(|s| s["conversations"][&room].as_array().map(Vec::len)).unwrap_or(0);
        let rendered = client.execute("return document.querySelectorAll('li.message').length;", vec![]).await.map_err(e)?;
        let heap = client
            .execute("return [performance.memory ? performance.memory.usedJSHeapSize : null, window.__wasm && window.__wasm.memory ? window.__wasm.memory.buffer.byteLength : null];", vec![])
            .await
            .map_err(e)?;
        let mb = |v: &Value| v.as_f64().map(|b| format!("{:.1} MB", b / 1e6)).unwrap_or_else(|| "n/a".into());
        row(rows, "history: JS heap after opening (usedJSHeapSize)", format!("{} (before opening {})", mb(&heap[0]), mb(&heap_before)), "", None);
        row(rows, "history: wasm memory", mb(&heap[1]), "", None);
        row(rows, "history: messages held / rows in the DOM", format!("{held} / {}", rendered), "", None);
        // Scrolling up to the oldest: how far the app goes (older pages on scroll).
        Ok(())
    }
    .await;
    let _ = client.close().await;
    result
}

// ---- 5. streaming ----

/// A fake OpenAI-compatible endpoint: every POST gets a stream of `tokens` tokens, one every
/// `every`, then [DONE]. Answers (epoch ms) when the last stream started and ended.
async fn fake_llm(tokens: usize, every: Duration) -> TestResult<(u16, std::sync::Arc<std::sync::Mutex<(f64, f64)>>)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.map_err(e)?;
    let port = listener.local_addr().map_err(e)?.port();
    let times = std::sync::Arc::new(std::sync::Mutex::new((0.0, 0.0)));
    let t = times.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else { return };
            let t = t.clone();
            tokio::spawn(async move {
                // Read the request (headers, then Content-Length bytes).
                let mut raw = Vec::new();
                let mut buf = [0u8; 8192];
                loop {
                    let Ok(n) = socket.read(&mut buf).await else { return };
                    if n == 0 {
                        return;
                    }
                    raw.extend_from_slice(&buf[..n]);
                    if let Some(split) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
                        let len = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .and_then(|v| v.trim().parse::<usize>().ok())
                            .unwrap_or(0);
                        if raw.len() >= split + 4 + len {
                            break;
                        }
                    }
                }
                let head = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\nConnection: close\r\n\r\n";
                if socket.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                t.lock().unwrap().0 = epoch_ms();
                let words = ["a ", "I ", "o ", "u ", "y "];
                let mut tick = tokio::time::interval(every);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
                for i in 0..tokens {
                    tick.tick().await;
                    let word = if i + 1 == tokens { "Z" } else { words[i % words.len()] };
                    let line = format!("data: {}\n\n", json!({"choices": [{"delta": {"content": word}}]}));
                    if socket.write_all(line.as_bytes()).await.is_err() {
                        return;
                    }
                }
                let _ = socket.write_all(b"data: [DONE]\n\n").await;
                t.lock().unwrap().1 = epoch_ms();
                let _ = socket.shutdown().await;
            });
        }
    });
    Ok((port, times))
}

const LONGTASK_PROBE: &str = r#"
  window.__long = [];
  window.__longObserver = new PerformanceObserver((list) => {
    for (const entry of list.getEntries()) window.__long.push([performance.timeOrigin + entry.startTime, entry.duration]);
  });
  window.__longObserver.observe({ type: 'longtask', buffered: false });
  window.__frames = 0;
  const count = () => { window.__frames++; requestAnimationFrame(count); };
  requestAnimationFrame(count);
  return PerformanceObserver.supportedEntryTypes.includes('longtask');"#;

async fn stream(driver: &Driver, o: &Opts, rows: &mut Vec<Row>) -> TestResult {
    let tokens = (o.tokens_per_sec * o.stream_secs) as usize;
    let every = Duration::from_micros(1_000_000 / o.tokens_per_sec.max(1));
    let (llm_port, times) = fake_llm(tokens, every).await?;
    let data = tempfile::tempdir().map_err(e)?;
    let url = format!("http://127.0.0.1:{llm_port}/v1");
    let pace = (1000 / o.tokens_per_sec.max(1)).max(1).to_string();
    let server =
        start_server(data.path(), &["--persona-llm-url", &url, "--persona-pace-ms", &pace, "--persona-think-ms", "0"])?;
    let (token, _) = session(&server.base, "streamer").await?;
    let (status, body) = http_request("GET", &format!("{}/api/personas", server.base), Some(&token), None).await?;
    ensure!(status == 200, "personas: {status}");
    let personas: Value = serde_json::from_str(&body).map_err(e)?;
    let list = personas.as_array().cloned().or_else(|| personas["personas"].as_array().cloned()).unwrap_or_default();
    let ada = list.iter().find(|p| p["name"] == "Ada").ok_or("no Ada")?["id"].as_str().unwrap_or("").to_owned();
    let (status, body) = http_request(
        "POST",
        &format!("{}/api/conversations", server.base),
        Some(&token),
        Some(&json!({"persona_id": ada}).to_string()),
    )
    .await?;
    ensure!((200..300).contains(&status), "direct conversation: {status} {body}");
    let direct: Value = serde_json::from_str(&body).map_err(e)?;
    let direct =
        direct["id"].as_str().or(direct["conversation"]["id"].as_str()).ok_or("no conversation id")?.to_owned();
    let client = window(driver).await?;
    let result = async {
        sign_in(&client, &server.base, "streamer").await?;
        open_conversation(&client, &server.base, &direct).await?;
        let supported = client.execute(LONGTASK_PROBE, vec![]).await.map_err(e)?;
        ensure!(supported == json!(true), "this Chromium does not report long tasks");
        let input = client.find(Locator::Id("composer-input")).await.map_err(e)?;
        input.send_keys("Tell me a very long story, please\u{E007}").await.map_err(e)?;
        // The reply is stored (with a seq) once streamed: wait for it over the API.
        let limit = Duration::from_secs(o.stream_secs * 3 + 30);
        eventually(limit, "the persona's reply to be stored", || async {
            let (status, body) = http_request("GET", &format!("{}/api/conversations/{direct}/messages?limit=5", server.base), Some(&token), None).await.ok()?;
            let v: Value = serde_json::from_str(&body).ok()?;
            (status == 200 && v["messages"].as_array()?.iter().any(|m| m["is_ai"] == json!(true))).then_some(())
        })
        .await?;
        // And shown in full in the page (the last token is "Z").
        let shown = eventually(Duration::from_secs(10), "the reply to be shown in full", || async {
            let v = client.execute("return Array.from(document.querySelectorAll('li.message')).map(r => (r.querySelector('.content') || r).textContent.trim()).filter(t => t.endsWith('Z')).length;", vec![]).await.ok()?;
            (v.as_u64()? > 0).then_some(())
        })
        .await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let (t_start, t_end) = *times.lock().unwrap();
        let long = client.execute("return [window.__long, window.__frames];", vec![]).await.map_err(e)?;
        let entries: Vec<(f64, f64)> = long[0].as_array().cloned().unwrap_or_default().iter().filter_map(|x| Some((x[0].as_f64()?, x[1].as_f64()?))).collect();
        // Long tasks that start while the reply streams (or in the second after, as the
        // stored message replaces the streamed one); the others (typing and sending the
        // question) are only shown.
        let during_entries: Vec<(f64, f64)> = entries.iter().cloned().filter(|(s, _)| *s >= t_start && *s <= t_end + 1000.0).collect();
        let during: Vec<f64> = during_entries.iter().map(|(_, d)| *d).collect();
        for (s, d) in &entries {
            let when = if *s < t_start { "before the stream (sending the question)" } else if *s <= t_end + 1000.0 { "while streaming" } else { "after" };
            println!("[uxbench] stream: a long task of {d:.0} ms at {:+.0} ms from the stream's start, {when} (the stream lasted {:.0} ms)", s - t_start, t_end - t_start);
        }
        let streamed_s = (t_end - t_start) / 1000.0;
        let longest = during.iter().cloned().fold(0.0, f64::max);
        row(
            rows,
            &format!("stream: long tasks > 50 ms during a {tokens}-token reply over {streamed_s:.1} s"),
            format!("{} (longest {longest:.0} ms, {} in the whole run)", during.len(), entries.len()),
            "0",
            Some(during.is_empty()),
        );
        if shown.is_err() {
            row(rows, "stream: the reply shown in full", "NO".into(), "yes", Some(false));
        }
        Ok(())
    }
    .await;
    let _ = client.close().await;
    result
}

// ---- 6. recovery ----

/// Records (epoch ms) when the window shows Connected and when each "M-<n>" message appears.
const RECOVERY_PROBE: &str = r#"
  window.__connectedTimes = []; window.__marks = {};
  const t = () => performance.timeOrigin + performance.now();
  let last = null;
  new MutationObserver(() => {
    const el = document.querySelector('.connection');
    const s = el && el.getAttribute('data-state');
    if (s !== last) { last = s; if (s === 'connected') window.__connectedTimes.push(t()); }
    for (const r of document.querySelectorAll('li.message')) {
      const m = /M-(\d+-\d+) stored/.exec((r.querySelector('.content') || r).textContent);
      if (m && !(m[1] in window.__marks)) window.__marks[m[1]] = t();
    }
  }).observe(document.body, { subtree: true, childList: true, characterData: true, attributes: true, attributeFilter: ['data-state'] });
  return true;"#;

async fn recovery(driver: &Driver, o: &Opts, rows: &mut Vec<Row>) -> TestResult {
    let data = tempfile::tempdir().map_err(e)?;
    let mut server = start_server(data.path(), &[])?;
    let port = server.port;
    let a = window(driver).await?;
    let b = window(driver).await?;
    let result = async {
        sign_in(&a, &server.base, "reader-a").await?;
        sign_in(&b, &server.base, "reader-b").await?;
        let lobby = active(&a).await.ok_or("no open conversation")?;
        for c in [&a, &b] {
            c.execute(RECOVERY_PROBE, vec![]).await.map_err(e)?;
        }
        let mut times = Vec::new();
        let mut reconnects = Vec::new();
        for round in 0..o.recoveries {
            server.process.kill();
            for (c, who) in [(&a, "A"), (&b, "B")] {
                eventually(STEP, &format!("window {who} to notice the server is gone"), || async {
                    (link_state(c).await.as_deref() != Some("connected")).then_some(())
                })
                .await?;
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
            let args = ["--rate-limit-per-sec", "100000", "--rate-limit-burst", "100000"];
            server = TestServer::start_with_args(data.path(), port, &args)?;
            let back = epoch_ms();
            // Stored right after the restart: the windows must have these to be caught up.
            let (token, _) = session(&server.base, "writer").await?;
            for i in 0..10 {
                let body = json!({"content": format!("M-{round}-{i} stored right after the restart"), "client_id": format!("00000000-0000-4000-8000-{round:04x}{i:08x}")}).to_string();
                let (status, answer) = http_request("POST", &format!("{}/api/conversations/{lobby}/messages", server.base), Some(&token), Some(&body)).await?;
                ensure!(status == 200, "marker: {status} {answer}");
            }
            let last_mark = format!("{round}-9");
            let mut worst: f64 = 0.0;
            let mut worst_connect: f64 = 0.0;
            for (c, who) in [(&a, "A"), (&b, "B")] {
                let (connected, marked) = eventually(Duration::from_secs(60), &format!("window {who} to be caught up"), || async {
                    let v = c.execute("return [window.__connectedTimes, window.__marks[arguments[0]] ?? null];", vec![json!(last_mark)]).await.ok()?;
                    let connected = v[0].as_array()?.iter().filter_map(Value::as_f64).find(|t| *t >= back - 1000.0)?;
                    Some((connected, v[1].as_f64()?))
                })
                .await?;
                worst = worst.max(connected.max(marked) - back);
                worst_connect = worst_connect.max(connected - back);
            }
            println!("[uxbench] recovery round {}: all Connected {:.0} ms, caught up {:.0} ms after the server was back", round + 1, worst_connect, worst);
            times.push(worst);
            reconnects.push(worst_connect);
        }
        let med = median(&times);
        let max = times.iter().cloned().fold(0.0, f64::max);
        row(rows, &format!("recovery: server back to every window caught up, median of {}", times.len()), format!("{med:.0} ms"), "<= 1000 ms", Some(med <= 1000.0));
        row(rows, "recovery: worst", format!("{max:.0} ms"), "<= 2500 ms", Some(max <= 2500.0));
        row(rows, "recovery: to every window Connected, median", format!("{:.0} ms", median(&reconnects)), "", None);
        Ok(())
    }
    .await;
    let _ = a.close().await;
    let _ = b.close().await;
    result
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let o = opts();
    let want = |s: &str| o.only.is_empty() || o.only.iter().any(|x| x == s);
    let started = Instant::now();
    let load_at_start = std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ");
    let mut rows = Vec::new();
    let mut failures = Vec::new();
    if want("size") {
        if let Err(x) = size(&mut rows) {
            failures.push(format!("size: {x}"));
        }
    }
    let needs_browser = ["start", "crosstab", "history", "stream", "recovery"].iter().any(|s| want(s));
    if needs_browser {
        let driver = match Driver::start() {
            Ok(d) => d,
            Err(x) => {
                eprintln!("{x}");
                std::process::exit(2);
            }
        };
        macro_rules! section {
            ($name:literal, $f:expr) => {
                if want($name) {
                    println!("[uxbench] {} ...", $name);
                    match tokio::time::timeout(Duration::from_secs(600), $f).await {
                        Ok(Ok(())) => {}
                        Ok(Err(x)) => failures.push(format!("{}: {x}", $name)),
                        Err(_) => failures.push(format!("{}: took over 10 minutes", $name)),
                    }
                }
            };
        }
        section!("start", start(&driver, &o, &mut rows));
        section!("crosstab", crosstab(&driver, &o, &mut rows));
        section!("crosstab", crosstab_same_user(&driver, &o, &mut rows));
        section!("history", history(&driver, &o, &mut rows));
        section!("stream", stream(&driver, &o, &mut rows));
        section!("recovery", recovery(&driver, &o, &mut rows));
    }

    let w0 = rows.iter().map(|r| r.what.len()).max().unwrap_or(10).max(6);
    let w1 = rows.iter().map(|r| r.measured.len()).max().unwrap_or(10).max(8);
    let w2 = rows.iter().map(|r| r.target.len()).max().unwrap_or(6).max(6);
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load: Vec<&str> = load.split_whitespace().take(3).collect();
    println!(
        "\npersona-chat browser benchmark (headless Chromium, loopback; server {}; {} cores, load average {} at the start, {} at the end; {:.0} s)\n",
        server_binary().display(),
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        load_at_start,
        load.join(" "),
        started.elapsed().as_secs_f64()
    );
    println!("{:<w0$}  {:<w1$}  {:<w2$}", "metric", "measured", "target");
    println!("{}", "-".repeat(w0 + w1 + w2 + 12));
    for r in &rows {
        println!("{:<w0$}  {:<w1$}  {:<w2$}  {}", r.what, r.measured, r.target, r.verdict);
    }
    if !failures.is_empty() {
        println!("\nnot measured:");
        for f in &failures {
            println!("  - {f}");
        }
        std::process::exit(1);
    }
}
