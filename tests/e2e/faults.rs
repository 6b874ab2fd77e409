//! The fault suite (issue 6): two Chromium windows (alice, bob) and one Rust client (alice's
//! second device, over WebSocket with HTTP as fallback) write 300 messages into the Lobby and
//! into alice's direct conversation with the persona Ada, while the chat server is SIGKILLed
//! and restarted three times (once with WebSocket refused, so the windows carry on over
//! polling and switch back afterwards), bob's window goes offline through Chromium's network
//! emulation and writes meanwhile, and alice's window is reloaded with messages pending.
//!
//! At the end every window holds every message of its conversations exactly once, in seq
//! order (the app's `window.personaChatState()` hook, with the rendered rows as a sanity
//! check), and the database holds each written message exactly once. A failure names the
//! missing or duplicated messages by their tags (`A-017`: alice's window, `B-`: bob's window,
//! `R-`: the Rust client).
//!
//! The app is served by a second server on its own port (as from a static host, `?server=`),
//! so that a window can be reloaded while the chat server is down.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fantoccini::{Client, Locator};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};

use crate::ensure;
use crate::harness::*;

const STEP: Duration = Duration::from_secs(20);
/// Messages per writer; three writers: 300 in all.
const PER_WRITER: usize = 100;
const PASSWORD: &str = "fault-suite-password";

/// Flags of every start of the chat server (the windows and the Rust client share alice's
/// rate limit; personas answer at once).
fn chat_args(app_base: &str, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = [
        "--allowed-origin",
        app_base,
        "--rate-limit-per-sec",
        "500",
        "--rate-limit-burst",
        "1000",
        "--persona-think-ms",
        "0",
        "--persona-pace-ms",
        "2",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

fn restart(chat: &mut TestServer, app_base: &str, extra: &[&str]) -> TestResult {
    let args = chat_args(app_base, extra);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    chat.restart_with_args(&args)
}

fn tag(content: &str) -> String {
    content.split_whitespace().next().unwrap_or("").to_owned()
}

fn is_written_tag(t: &str) -> bool {
    let b = t.as_bytes();
    b.len() == 5 && matches!(b[0], b'A' | b'B' | b'R') && b[1] == b'-' && b[2..].iter().all(u8::is_ascii_digit)
}

/// A loopback TCP forwarder in front of the chat server, for bob's window: cutting it drops
/// every open connection (the WebSocket included: Chromium's network emulation leaves open
/// sockets alone) and refuses new ones until it is restored, as a lost network would.
pub(crate) struct Cable {
    pub(crate) base: String,
    online: tokio::sync::watch::Sender<bool>,
}

impl Cable {
    pub(crate) async fn lay(upstream_port: u16) -> TestResult<Cable> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.map_err(|e| e.to_string())?;
        let port = listener.local_addr().map_err(|e| e.to_string())?.port();
        let (online, watch) = tokio::sync::watch::channel(true);
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let mut watch = watch.clone();
                if !*watch.borrow() {
                    continue; // dropped: the connection is closed at once
                }
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(("127.0.0.1", upstream_port)).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = watch.wait_for(|up| !*up) => {}
                    }
                });
            }
        });
        Ok(Cable { base: format!("http://127.0.0.1:{port}"), online })
    }

    pub(crate) fn set(&self, up: bool) {
        let _ = self.online.send(up);
    }
}

/// A stored message as the database or the HTTP API has it.
#[derive(Debug, Clone, PartialEq)]
struct Stored {
    seq: i64,
    id: String,
    content: String,
    is_ai: bool,
}

impl Stored {
    fn name(&self) -> String {
        let t = tag(&self.content);
        if is_written_tag(&t) {
            t
        } else if self.is_ai {
            format!("persona reply seq {}", self.seq)
        } else {
            format!("seq {} {:?}", self.seq, self.content.chars().take(30).collect::<String>())
        }
    }
}

/// What a window holds, from the app's `personaChatState()` hook (required: without it the
/// suite cannot see what a tab holds, and fails).
#[derive(Debug, Default)]
struct TabView {
    active: Option<String>,
    link: String,
    conversations: HashMap<String, Vec<Stored>>,
    pending: Vec<(String, String, String)>, // (conversation, content, status)
    /// Replies streaming (no seq): fine while a persona writes, a ghost once all is quiet.
    streams: Vec<(String, String)>, // (conversation, text)
    /// Stored entries without a seq: never right.
    unsequenced: Vec<String>,
}

async fn tab_view(client: &Client) -> TestResult<TabView> {
    let state = app_state(client).await?;
    let mut view = TabView::default();
    view.active = state.get("active").and_then(Value::as_str).map(str::to_owned);
    view.link = state.get("link").and_then(Value::as_str).unwrap_or("").to_owned();
    if let Some(map) = state.get("conversations").and_then(Value::as_object) {
        for (id, list) in map {
            let mut held = Vec::new();
            for m in list.as_array().cloned().unwrap_or_default() {
                let content = m.get("content").and_then(Value::as_str).unwrap_or("").to_owned();
                let Some(seq) = m.get("seq").and_then(Value::as_i64) else {
                    view.unsequenced.push(format!("{id}: {content:?}"));
                    continue;
                };
                held.push(Stored {
                    seq,
                    id: m.get("id").and_then(Value::as_str).unwrap_or("").to_owned(),
                    content,
                    is_ai: false,
                });
            }
            view.conversations.insert(id.clone(), held);
        }
    }
    for p in state.get("pending").and_then(Value::as_array).cloned().unwrap_or_default() {
        let s = |k: &str| p.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
        view.pending.push((s("conversation_id"), s("content"), s("status")));
    }
    let streams = state.get("streams").and_then(Value::as_array).ok_or("the hook lists no streams")?;
    for st in streams {
        let s = |k: &str| st.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
        view.streams.push((s("conversation_id"), s("text")));
    }
    Ok(view)
}

/// Types a message into the composer and sends it with Enter.
async fn type_and_send(client: &Client, text: &str) -> TestResult {
    let input = client
        .wait()
        .at_most(STEP)
        .for_element(Locator::Id("composer-input"))
        .await
        .map_err(|e| format!("no composer: {e}"))?;
    input.send_keys(&format!("{text}\u{E007}")).await.map_err(|e| format!("typing {text}: {e}"))
}

/// Writes messages `from..=to` of `prefix` in the window's open conversation.
async fn write(client: &Client, prefix: char, from: usize, to: usize, note: &str, log: &Written) -> TestResult {
    for n in from..=to {
        let text = format!("{prefix}-{n:03} {note}");
        type_and_send(client, &text).await?;
        log.lock().unwrap().push(text);
    }
    Ok(())
}

type Written = Arc<Mutex<Vec<String>>>;

async fn wait_state(client: &Client, who: &str, states: &[&str], limit: Duration) -> TestResult<String> {
    eventually(limit, &format!("{who}'s window to be {}", states.join(" or ")), || async {
        let s = link_state(client).await?;
        states.contains(&s.as_str()).then_some(s)
    })
    .await
}

/// Signs in on the app's origin, talking to the chat server given by `?server=`.
async fn sign_in(client: &Client, app: &str, chat: &str, user: &str) -> TestResult {
    ensure_account(chat, user, PASSWORD).await?;
    client.goto(&format!("{app}/login?server={chat}")).await.map_err(|e| e.to_string())?;
    let field = client
        .wait()
        .at_most(STEP)
        .for_element(Locator::Id("username"))
        .await
        .map_err(|e| format!("no sign-in form: {e}"))?;
    field.send_keys(user).await.map_err(|e| e.to_string())?;
    client
        .find(Locator::Id("password"))
        .await
        .map_err(|e| e.to_string())?
        .send_keys(PASSWORD)
        .await
        .map_err(|e| e.to_string())?;
    client
        .find(Locator::Css(".login-card button[type=submit]"))
        .await
        .map_err(|e| e.to_string())?
        .click()
        .await
        .map_err(|e| e.to_string())?;
    wait_state(client, user, &["connected"], STEP).await?;
    client
        .wait()
        .at_most(STEP)
        .for_element(Locator::Id("composer-input"))
        .await
        .map_err(|e| format!("{user}: no composer: {e}"))?;
    Ok(())
}

/// Opens a conversation in a window by in-app navigation to /c/{id} (no reload: a reload
/// would hide what the live state holds).
async fn open_conversation(client: &Client, id: &str) -> TestResult {
    if tab_view(client).await?.active.as_deref() == Some(id) {
        return Ok(());
    }
    let script = "history.pushState(null, '', '/c/' + arguments[0]); window.dispatchEvent(new PopStateEvent('popstate', { state: null }));";
    client.execute(script, vec![json!(id)]).await.map_err(|e| e.to_string())?;
    eventually(STEP, &format!("in-app navigation to conversation {id}"), || async {
        let view = tab_view(client).await.ok()?;
        let composer = client.find(Locator::Id("composer-input")).await.is_ok();
        (composer && view.active.as_deref() == Some(id)).then_some(())
    })
    .await
}

/// The lowest seq a window holds of a conversation (i64::MAX: none).
async fn first_held(client: &Client, id: &str) -> Option<i64> {
    let view = tab_view(client).await.ok()?;
    Some(view.conversations.get(id).and_then(|l| l.first()).map(|m| m.seq).unwrap_or(i64::MAX))
}

/// Scrolls the message list to the top until the window holds seq 1 of the conversation:
/// each scroll must bring older messages within a few seconds, or the history is stuck
/// (an error, not a pass).
async fn load_full_history(client: &Client, id: &str) -> TestResult {
    loop {
        let first = first_held(client, id).await.ok_or("reading the window's state")?;
        if first <= 1 {
            return Ok(());
        }
        let script = "const list = document.querySelector('ol.messages');
            let el = list; while (el) { if (el.scrollHeight > el.clientHeight + 1) { el.scrollTop = 0; el.dispatchEvent(new Event('scroll')); } el = el.parentElement; }
            if (list && list.firstElementChild) list.firstElementChild.scrollIntoView({ block: 'start' });";
        // Scrolled up again on every look (a scroll made while the list re-renders may be
        // lost), until older messages come or the time is up.
        eventually(
            Duration::from_secs(10),
            &format!("older messages than seq {first} of {id} after scrolling up"),
            || async {
                client.execute(script, vec![]).await.ok()?;
                let now = first_held(client, id).await?;
                (now < first).then_some(())
            },
        )
        .await?;
    }
}

/// Differences between what should be held and what is: (problems, held count).
fn compare(expected: &[Stored], held: &[Stored], by_id: bool) -> Vec<String> {
    let mut problems = Vec::new();
    // The id (when known), the seq and the content: a right id with the wrong text is wrong.
    let key = |m: &Stored| {
        if by_id {
            format!("{}|{}|{}", m.id, m.seq, m.content)
        } else {
            format!("{}|{}", m.seq, m.content)
        }
    };
    let mut counts: HashMap<String, usize> = HashMap::new();
    for m in held {
        *counts.entry(key(m)).or_default() += 1;
    }
    let missing: Vec<String> = expected
        .iter()
        .filter(|m| !counts.contains_key(&key(m)))
        .map(|m| format!("{} (seq {})", m.name(), m.seq))
        .collect();
    if !missing.is_empty() {
        problems.push(format!("missing {}: {}", missing.len(), missing.join(", ")));
    }
    let names: HashMap<String, String> = expected.iter().map(|m| (key(m), m.name())).collect();
    let mut dups: Vec<String> = counts
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(k, n)| format!("{} (x{n})", names.get(k).cloned().unwrap_or(k.clone())))
        .collect();
    dups.sort();
    if !dups.is_empty() {
        problems.push(format!("duplicated {}: {}", dups.len(), dups.join(", ")));
    }
    // The same text under two seqs or ids is a duplicate too (a resend stored twice).
    let mut by_tag: HashMap<String, Vec<i64>> = HashMap::new();
    for m in held {
        let t = tag(&m.content);
        if is_written_tag(&t) {
            by_tag.entry(t).or_default().push(m.seq);
        }
    }
    let mut twice: Vec<String> =
        by_tag.iter().filter(|(_, s)| s.len() > 1).map(|(t, s)| format!("{t} at seqs {s:?}")).collect();
    twice.sort();
    if !twice.is_empty() {
        problems.push(format!("written once, held {} times: {}", twice.len(), twice.join(", ")));
    }
    let known: std::collections::HashSet<String> = expected.iter().map(key).collect();
    let extra: Vec<String> = held
        .iter()
        .filter(|m| !known.contains(&key(m)))
        .map(|m| format!("seq {} {:?}", m.seq, tag(&m.content)))
        .collect();
    if !extra.is_empty() {
        problems.push(format!("not in the database {}: {}", extra.len(), extra.join(", ")));
    }
    if let Some(w) = held.windows(2).find(|w| w[0].seq >= w[1].seq) {
        problems.push(format!("out of seq order: seq {} before seq {}", w[0].seq, w[1].seq));
    }
    if !problems.is_empty() {
        problems.push(format!("held seqs: {}", ranges(held.iter().map(|m| m.seq))));
    }
    problems
}

/// "1-130, 133-180".
fn ranges(seqs: impl Iterator<Item = i64>) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut run: Option<(i64, i64)> = None;
    for s in seqs {
        run = match run {
            Some((a, b)) if s == b + 1 => Some((a, s)),
            Some((a, b)) => {
                out.push(if a == b { a.to_string() } else { format!("{a}-{b}") });
                Some((s, s))
            }
            None => Some((s, s)),
        };
    }
    if let Some((a, b)) = run {
        out.push(if a == b { a.to_string() } else { format!("{a}-{b}") });
    }
    if out.is_empty() {
        "none".into()
    } else {
        out.join(", ")
    }
}

/// Every stored message of a conversation, over the HTTP API.
async fn fetch_all(base: &str, token: &str, id: &str) -> TestResult<Vec<Stored>> {
    let mut out = Vec::new();
    let mut after = 0;
    loop {
        let (status, body) = http_request(
            "GET",
            &format!("{base}/api/conversations/{id}/messages?after_seq={after}&limit=500"),
            Some(token),
            None,
        )
        .await?;
        ensure!(status == 200, "GET messages of {id}: {status} {body}");
        let page: Value = serde_json::from_str(&body).map_err(|e| e.to_string())?;
        let list = page["messages"].as_array().cloned().unwrap_or_default();
        for m in &list {
            out.push(Stored {
                seq: m["seq"].as_i64().unwrap_or(0),
                id: m["id"].as_str().unwrap_or("").to_owned(),
                content: m["content"].as_str().unwrap_or("").to_owned(),
                is_ai: m["is_ai"].as_bool().unwrap_or(false),
            });
        }
        match list.last() {
            Some(last) if page["has_more"].as_bool().unwrap_or(false) => after = last["seq"].as_i64().unwrap_or(after),
            _ => return Ok(out),
        }
    }
}

/// Alice's second device: sends over WebSocket, falling back to HTTP, and resends with the
/// same client_id until acknowledged (the server stores each client_id once).
struct RustClient {
    base: String,
    token: String,
    ws: Option<tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>>,
    over_ws: usize,
    over_http: usize,
    retries: usize,
}

impl RustClient {
    async fn ws_send(&mut self, conversation: &str, content: &str, client_id: &str) -> Result<i64, String> {
        use tokio_tungstenite::tungstenite::Message;
        if self.ws.is_none() {
            let url = format!("{}/ws?token={}", self.base.replace("http://", "ws://"), self.token);
            let (ws, _) = tokio::time::timeout(Duration::from_secs(2), tokio_tungstenite::connect_async(url))
                .await
                .map_err(|_| "connect timed out".to_owned())?
                .map_err(|e| e.to_string())?;
            self.ws = Some(ws);
        }
        let ws = self.ws.as_mut().expect("just set");
        let frame = json!({"type": "send_message", "conversation_id": conversation, "content": content, "client_id": client_id});
        ws.send(Message::Text(frame.to_string().into())).await.map_err(|e| e.to_string())?;
        let deadline = Instant::now() + Duration::from_secs(3);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let next = tokio::time::timeout(left, ws.next()).await.map_err(|_| "no ack within 3 s".to_owned())?;
            let Some(Ok(Message::Text(text))) = next else {
                match next {
                    Some(Ok(_)) => continue,
                    _ => return Err("socket closed".into()),
                }
            };
            let frame: Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
            match frame["type"].as_str() {
                Some("message_ack") if frame["client_id"] == client_id => {
                    return frame["seq"].as_i64().ok_or("ack without seq".into())
                }
                Some("error") => return Err(format!("error frame: {frame}")),
                _ => {}
            }
        }
    }

    async fn http_send(&mut self, conversation: &str, content: &str, client_id: &str) -> Result<i64, String> {
        let body = json!({"content": content, "client_id": client_id}).to_string();
        let (status, answer) = http_request(
            "POST",
            &format!("{}/api/conversations/{conversation}/messages", self.base),
            Some(&self.token),
            Some(&body),
        )
        .await?;
        if status != 200 {
            return Err(format!("{status} {answer}"));
        }
        let ack: Value = serde_json::from_str(&answer).map_err(|e| e.to_string())?;
        ack["seq"].as_i64().ok_or_else(|| format!("no seq in {answer}"))
    }

    async fn send(&mut self, conversation: &str, content: &str) -> TestResult<i64> {
        let client_id = format!("{:08x}-0000-4000-8000-{:012x}", std::process::id(), rand_u64() & 0xffff_ffff_ffff);
        let start = Instant::now();
        loop {
            match self.ws_send(conversation, content, &client_id).await {
                Ok(seq) => {
                    self.over_ws += 1;
                    return Ok(seq);
                }
                Err(_) => self.ws = None,
            }
            match self.http_send(conversation, content, &client_id).await {
                Ok(seq) => {
                    self.over_http += 1;
                    return Ok(seq);
                }
                Err(e) if start.elapsed() > Duration::from_secs(90) => {
                    return Err(format!("the Rust client could not send {content:?} in 90 s: {e}"))
                }
                Err(_) => {}
            }
            self.retries += 1;
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        Instant::now().elapsed().as_nanos()
            ^ std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos(),
    );
    h.finish()
}

async fn session(base: &str, user: &str) -> TestResult<(String, String)> {
    let body = json!({"username": user, "password": PASSWORD}).to_string();
    ensure_account(base, user, PASSWORD).await?;
    let (status, answer) = http_request("POST", &format!("{base}/api/session"), None, Some(&body)).await?;
    ensure!(status == 200, "sign-in of {user}: {status} {answer}");
    let v: Value = serde_json::from_str(&answer).map_err(|e| e.to_string())?;
    Ok((v["token"].as_str().unwrap_or("").to_owned(), v["user"]["id"].as_str().unwrap_or("").to_owned()))
}

struct Ids {
    lobby: String,
    direct: String,
}

async fn conversations(base: &str, token: &str) -> TestResult<Ids> {
    let (status, body) = http_request("GET", &format!("{base}/api/personas"), Some(token), None).await?;
    ensure!(status == 200, "GET /api/personas: {status} {body}");
    let personas: Value = serde_json::from_str(&body).map_err(|e| e.to_string())?;
    let personas =
        personas.as_array().cloned().or_else(|| personas["personas"].as_array().cloned()).unwrap_or_default();
    let ada =
        personas.iter().find(|p| p["name"] == "Ada").ok_or("no persona Ada")?["id"].as_str().unwrap_or("").to_owned();
    let (status, body) = http_request(
        "POST",
        &format!("{base}/api/conversations"),
        Some(token),
        Some(&json!({"persona_id": ada}).to_string()),
    )
    .await?;
    ensure!((200..300).contains(&status), "POST /api/conversations: {status} {body}");
    let direct: Value = serde_json::from_str(&body).map_err(|e| e.to_string())?;
    let direct = direct["id"].as_str().or(direct["conversation"]["id"].as_str()).unwrap_or("").to_owned();
    let (status, body) = http_request("GET", &format!("{base}/api/conversations"), Some(token), None).await?;
    ensure!(status == 200, "GET /api/conversations: {status} {body}");
    let list: Value = serde_json::from_str(&body).map_err(|e| e.to_string())?;
    let list = list.as_array().cloned().or_else(|| list["conversations"].as_array().cloned()).unwrap_or_default();
    let lobby = list.iter().find(|c| c["title"] == "Lobby").ok_or("no Lobby")?["id"].as_str().unwrap_or("").to_owned();
    ensure!(!direct.is_empty() && !lobby.is_empty(), "conversation ids not found");
    Ok(Ids { lobby, direct })
}

/// Pending messages the window holds (hook or DOM), by tag.
async fn pending_tags(client: &Client) -> TestResult<Vec<String>> {
    let view = tab_view(client).await?;
    let mut tags: Vec<String> = view.pending.iter().map(|(_, c, _)| tag(c)).collect();
    // The DOM should agree for the open conversation (rows without data-seq).
    let rows = rendered_rows(client).await?;
    for (seq, delivery, content) in rows {
        if seq.is_none() && delivery == "pending" && !tags.contains(&tag(&content)) {
            tags.push(tag(&content));
        }
    }
    Ok(tags)
}

/// The rendered rows: no data-seq twice, ascending, and no written message shown twice (say
/// once pending and once sent).
async fn dom_sanity(client: &Client, who: &str) -> TestResult<usize> {
    let rows = rendered_rows(client).await?;
    let seqs: Vec<i64> = rows.iter().filter_map(|r| r.0).collect();
    if let Some(w) = seqs.windows(2).find(|w| w[0] >= w[1]) {
        let dup = if w[0] == w[1] { "twice" } else { "out of order" };
        return Err(format!("{who}'s window renders seq {} {dup} (then {})", w[0], w[1]));
    }
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (_, _, content) in &rows {
        let t = tag(content);
        if is_written_tag(&t) {
            *seen.entry(t).or_default() += 1;
        }
    }
    let mut twice: Vec<String> = seen.into_iter().filter(|(_, n)| *n > 1).map(|(t, n)| format!("{t} (x{n})")).collect();
    twice.sort();
    if !twice.is_empty() {
        return Err(format!("{who}'s window shows a message more than once: {}", twice.join(", ")));
    }
    Ok(seqs.len())
}

/// The rendered rows of both windows are sane right now.
async fn dom_check(a: &Client, b: &Client, when: &str) -> TestResult {
    for (client, who) in [(a, "alice"), (b, "bob")] {
        dom_sanity(client, who).await.map_err(|e| format!("{when}: {e}"))?;
    }
    Ok(())
}

fn db_messages(data_dir: &std::path::Path) -> TestResult<BTreeMap<String, Vec<Stored>>> {
    let path = data_dir.join("persona-chat.sqlite3");
    let db = rusqlite::Connection::open_with_flags(&path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(|e| format!("open {}: {e}", path.display()))?;
    let mut stmt = db
        .prepare("SELECT conversation_id, seq, id, content, is_ai FROM messages ORDER BY conversation_id, seq")
        .map_err(|e| e.to_string())?;
    let rows = stmt
        .query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                Stored { seq: r.get(1)?, id: r.get(2)?, content: r.get(3)?, is_ai: r.get::<_, i64>(4)? != 0 },
            ))
        })
        .map_err(|e| e.to_string())?;
    let mut out: BTreeMap<String, Vec<Stored>> = BTreeMap::new();
    for row in rows {
        let (conversation, m) = row.map_err(|e| e.to_string())?;
        out.entry(conversation).or_default().push(m);
    }
    Ok(out)
}

/// A window, its user, and the conversations (label, id) it must hold.
type WindowPlan<'a> = (&'a Client, &'a str, Vec<(&'a str, &'a String)>);

struct Run<'a> {
    app: &'a TestServer,
    chat: &'a mut TestServer,
    cable: &'a Cable,
    driver: &'a Driver,
    a: &'a Client,
    b: &'a Client,
}

async fn faults_body(run: Run<'_>) -> TestResult {
    let Run { app, chat, cable, driver, a, b } = run;
    let started = Instant::now();
    let t = || format!("{:>5.1}s", started.elapsed().as_secs_f64());
    // alice's second device registers alice and opens her conversation with Ada.
    let (token, _alice_id) = session(&chat.base, "alice").await?;
    let ids = conversations(&chat.base, &token).await?;
    sign_in(a, &app.base, &chat.base, "alice").await?;
    sign_in(b, &app.base, &cable.base, "bob").await?;
    eprintln!("[faults {}] signed in; Lobby {}, alice+Ada {}", t(), ids.lobby, ids.direct);
    tab_view(a).await?; // the hook is there (the suite fails without it)

    let written_a: Written = Default::default();
    let written_b: Written = Default::default();

    // The Rust client writes all along, alternating Lobby and the direct conversation.
    let rust_done: Arc<Mutex<Vec<(String, String, i64)>>> = Default::default();
    let rust_task = {
        let (base, token, lobby, direct, done) =
            (chat.base.clone(), token.clone(), ids.lobby.clone(), ids.direct.clone(), rust_done.clone());
        tokio::spawn(async move {
            let mut client = RustClient { base, token, ws: None, over_ws: 0, over_http: 0, retries: 0 };
            for n in 1..=PER_WRITER {
                let (conversation, note) = if n % 2 == 0 { (&direct, "to Ada") } else { (&lobby, "in the Lobby") };
                let text = format!("R-{n:03} {note} from the Rust client");
                let seq = client.send(conversation, &text).await?;
                done.lock().unwrap().push((conversation.clone(), text, seq));
                tokio::time::sleep(Duration::from_millis(450)).await;
            }
            Ok::<_, String>((client.over_ws, client.over_http, client.retries))
        })
    };

    // 1. Normal: both write in the Lobby; alice then opens her conversation with Ada.
    let (ra, rb) = tokio::join!(
        write(a, 'A', 1, 30, "in the Lobby", &written_a),
        write(b, 'B', 1, 20, "in the Lobby", &written_b)
    );
    ra?;
    rb?;
    open_conversation(a, &ids.direct).await?;
    write(a, 'A', 31, 40, "to Ada", &written_a).await?;
    eprintln!("[faults {}] phase 1 written (A-001..040, B-001..020)", t());

    // 2. Kill 1: both write while the server is away; alice reloads with messages pending.
    chat.process.kill();
    eprintln!("[faults {}] kill 1 (SIGKILL)", t());
    wait_state(a, "alice", &["disconnected", "connecting"], STEP).await?;
    let (ra, rb) = tokio::join!(
        write(a, 'A', 41, 45, "to Ada, before the reload", &written_a),
        write(b, 'B', 21, 25, "in the Lobby, server down", &written_b)
    );
    ra?;
    rb?;
    let before_reload: Vec<String> = (41..=45).map(|n| format!("A-{n:03}")).collect();
    eventually(STEP, "alice's messages written while the server is away to be pending", || async {
        let p = pending_tags(a).await.ok()?;
        before_reload.iter().all(|t| p.contains(t)).then_some(())
    })
    .await?;
    a.refresh().await.map_err(|e| e.to_string())?;
    eventually(STEP, "alice's 5 messages to be pending after the reload", || async {
        let p = pending_tags(a).await.ok()?;
        before_reload.iter().all(|t| p.contains(t)).then_some(())
    })
    .await?;
    screenshot(a, "faults-alice-pending-after-reload").await?;
    eprintln!("[faults {}] alice reloaded with {} pending", t(), before_reload.len());
    restart(chat, &app.base, &[])?;
    eprintln!("[faults {}] restart 1", t());
    wait_state(a, "alice", &["connected"], Duration::from_secs(40)).await?;
    wait_state(b, "bob", &["connected"], Duration::from_secs(40)).await?;
    eprintln!("[faults {}] both connected again", t());
    dom_check(a, b, "after restart 1").await?;
    // After her reload alice is joined to Ada's conversation only: she opens the Lobby once, so
    // the final Lobby check reads the live state (joined, fed by frames), not a fresh load.
    open_conversation(a, &ids.lobby).await?;
    open_conversation(a, &ids.direct).await?;
    let (ra, rb) =
        tokio::join!(write(a, 'A', 46, 55, "to Ada", &written_a), write(b, 'B', 26, 40, "in the Lobby", &written_b));
    ra?;
    rb?;

    // 3. Kill 2: back without WebSocket: the windows must carry on over polling.
    restart(chat, &app.base, &["--disable-websocket"])?;
    eprintln!("[faults {}] kill 2, restarted with --disable-websocket", t());
    let (ra, rb) = tokio::join!(
        write(a, 'A', 56, 60, "to Ada, socket refused", &written_a),
        write(b, 'B', 41, 45, "in the Lobby, socket refused", &written_b)
    );
    ra?;
    rb?;
    wait_state(a, "alice", &["polling"], Duration::from_secs(60)).await?;
    wait_state(b, "bob", &["polling"], Duration::from_secs(60)).await?;
    eprintln!("[faults {}] both polling", t());
    dom_check(a, b, "once polling").await?;
    screenshot(b, "faults-bob-polling").await?;
    let (ra, rb) = tokio::join!(
        write(a, 'A', 61, 70, "to Ada, polling", &written_a),
        write(b, 'B', 46, 60, "in the Lobby, polling", &written_b)
    );
    ra?;
    rb?;

    // 4. Kill 3: WebSocket is back: the windows switch back to it.
    restart(chat, &app.base, &[])?;
    eprintln!("[faults {}] kill 3, restarted with WebSocket", t());
    let (ra, rb) = tokio::join!(
        write(a, 'A', 71, 75, "to Ada, after kill 3", &written_a),
        write(b, 'B', 61, 65, "in the Lobby, after kill 3", &written_b)
    );
    ra?;
    rb?;
    wait_state(a, "alice", &["connected"], Duration::from_secs(75)).await?;
    wait_state(b, "bob", &["connected"], Duration::from_secs(75)).await?;
    eprintln!("[faults {}] both back on WebSocket", t());
    dom_check(a, b, "back on WebSocket").await?;

    // 5. bob goes offline (network emulation, and his connections cut) and writes; alice
    // writes meanwhile.
    driver.set_offline(b, true).await?;
    cable.set(false);
    wait_state(b, "bob", &["offline"], STEP).await?;
    eprintln!("[faults {}] bob offline", t());
    let (ra, rb) = tokio::join!(
        write(a, 'A', 76, 90, "to Ada, bob offline", &written_a),
        write(b, 'B', 66, 80, "in the Lobby, offline", &written_b)
    );
    ra?;
    rb?;
    let offline: Vec<String> = (66..=80).map(|n| format!("B-{n:03}")).collect();
    let p = pending_tags(b).await?;
    let not_pending: Vec<&String> = offline.iter().filter(|t| !p.contains(t)).collect();
    ensure!(not_pending.is_empty(), "bob's messages written offline are not pending: {not_pending:?}");
    screenshot(b, "faults-bob-offline").await?;
    cable.set(true);
    driver.set_offline(b, false).await?;
    wait_state(b, "bob", &["connected"], Duration::from_secs(40)).await?;
    eprintln!("[faults {}] bob online again", t());
    dom_check(a, b, "bob back online").await?;
    let (ra, rb) = tokio::join!(
        write(a, 'A', 91, 100, "to Ada, the end", &written_a),
        write(b, 'B', 81, 100, "in the Lobby, the end", &written_b)
    );
    ra?;
    rb?;

    // 6. The Rust client finishes; everything settles.
    let (over_ws, over_http, retries) = rust_task.await.map_err(|e| e.to_string())??;
    eprintln!("[faults {}] all written; the Rust client sent {over_ws} over WebSocket, {over_http} over HTTP, retried {retries} times", t());
    ensure!(
        over_ws > 0 && over_http > 0,
        "both paths must have carried messages: {over_ws} over WebSocket, {over_http} over HTTP"
    );
    eventually(Duration::from_secs(60), "no message pending in either window", || async {
        let pa = pending_tags(a).await.ok()?;
        let pb = pending_tags(b).await.ok()?;
        (pa.is_empty() && pb.is_empty()).then_some(())
    })
    .await
    .map_err(|e| format!("{e} (still pending somewhere)"))?;
    // Ada answers alice's messages: wait until the conversation stops growing.
    let mut last = (0, Instant::now());
    let mut expected: HashMap<String, Vec<Stored>> = HashMap::new();
    while last.1.elapsed() < Duration::from_secs(3) {
        let lobby = fetch_all(&chat.base, &token, &ids.lobby).await?;
        let direct = fetch_all(&chat.base, &token, &ids.direct).await?;
        let n = lobby.len() + direct.len();
        if n != last.0 {
            last = (n, Instant::now());
        }
        expected.insert(ids.lobby.clone(), lobby);
        expected.insert(ids.direct.clone(), direct);
        ensure!(started.elapsed() < Duration::from_secs(280), "the conversations never stopped growing");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    eprintln!("[faults {}] settled", t());

    // Every written message is stored once, in its conversation (over the API).
    let mut problems = Vec::new();
    let written: Vec<(String, String)> = {
        let mut w: Vec<(String, String)> = Vec::new();
        for text in written_a.lock().unwrap().iter() {
            let conv = if text.contains("Lobby") { &ids.lobby } else { &ids.direct };
            w.push((conv.clone(), text.clone()));
        }
        for text in written_b.lock().unwrap().iter() {
            w.push((ids.lobby.clone(), text.clone()));
        }
        for (conv, text, _) in rust_done.lock().unwrap().iter() {
            w.push((conv.clone(), text.clone()));
        }
        w
    };
    ensure!(written.len() == 3 * PER_WRITER, "{} messages written, not {}", written.len(), 3 * PER_WRITER);
    let check_written = |store: &HashMap<String, Vec<Stored>>, label: &str| -> Vec<String> {
        let mut out = Vec::new();
        let mut missing = Vec::new();
        let mut twice = Vec::new();
        for (conv, text) in &written {
            let n = store.get(conv).map(|l| l.iter().filter(|m| m.content == *text).count()).unwrap_or(0);
            match n {
                0 => missing.push(tag(text)),
                1 => {}
                n => twice.push(format!("{} (x{n})", tag(text))),
            }
        }
        if !missing.is_empty() {
            out.push(format!("{label}: missing {}: {}", missing.len(), missing.join(", ")));
        }
        if !twice.is_empty() {
            out.push(format!("{label}: duplicated {}: {}", twice.len(), twice.join(", ")));
        }
        for (conv, list) in store {
            if let Some((i, m)) = list.iter().enumerate().find(|(i, m)| m.seq != *i as i64 + 1) {
                out.push(format!("{label}: conversation {conv} has seq {} at position {}", m.seq, i + 1));
            }
        }
        out
    };
    problems.extend(check_written(&expected, "server (HTTP API)"));

    // Every window holds every message of its conversations once, in seq order.
    let mut counts = Vec::new();
    let windows: [WindowPlan; 2] = [
        (a, "alice", vec![("alice+Ada", &ids.direct), ("Lobby", &ids.lobby)]),
        (b, "bob", vec![("Lobby", &ids.lobby)]),
    ];
    for (client, who, convs) in &windows {
        for (label, id) in convs {
            open_conversation(client, id).await?;
            load_full_history(client, id).await?;
            let want = &expected[*id];
            let outcome =
                eventually(Duration::from_secs(30), &format!("{who}'s window to hold {label} exactly"), || async {
                    let view = tab_view(client).await.ok()?;
                    let held = view.conversations.get(*id).cloned().unwrap_or_default();
                    let p = compare(want, &held, true);
                    p.is_empty().then_some(held.len())
                })
                .await;
            let view = tab_view(client).await?;
            let held = view.conversations.get(*id).cloned().unwrap_or_default();
            let rendered = dom_sanity(client, who).await;
            match outcome {
                Ok(n) => counts.push(format!(
                    "{who}'s window, {label}: holds {n} of {} (rendered {})",
                    want.len(),
                    rendered.as_ref().map(|n| n.to_string()).unwrap_or_else(|e| e.clone())
                )),
                Err(_) => problems.push(format!(
                    "{who}'s window, {label} (holds {} of {}): {}",
                    held.len(),
                    want.len(),
                    compare(want, &held, true).join("; ")
                )),
            }
            // Everything is quiet: no reply may still show as streaming, nothing stored lacks a seq.
            if !view.streams.is_empty() {
                problems.push(format!(
                    "{who}'s window still shows {} reply(s) streaming (ghosts): {:?}",
                    view.streams.len(),
                    view.streams
                ));
            }
            if !view.unsequenced.is_empty() {
                problems.push(format!("{who}'s window holds messages without a seq: {:?}", view.unsequenced));
            }
            if let Err(e) = rendered {
                problems.push(e);
            }
            screenshot(client, &format!("faults-{who}-{}", label.replace('+', "-").to_lowercase())).await?;
        }
    }

    // bob is no member of alice's conversation with Ada: his window holds nothing of it.
    let bob_view = tab_view(b).await?;
    let foreign: Vec<&String> = bob_view.conversations.keys().filter(|id| **id != ids.lobby).collect();
    if !foreign.is_empty() || bob_view.streams.iter().any(|(c, _)| *c != ids.lobby) {
        problems.push(format!(
            "bob's window holds conversations he is not in: {foreign:?} (streams {:?})",
            bob_view.streams
        ));
    }

    // The database file, read after the server is gone.
    chat.process.kill();
    let db = db_messages(&chat.data_dir)?;
    let db: HashMap<String, Vec<Stored>> = db.into_iter().collect();
    problems.extend(check_written(&db, "database"));
    for (id, label) in [(&ids.lobby, "Lobby"), (&ids.direct, "alice+Ada")] {
        let p = compare(&expected[id], db.get(id).map(Vec::as_slice).unwrap_or(&[]), true);
        if !p.is_empty() {
            problems.push(format!("database vs API, {label}: {}", p.join("; ")));
        }
    }
    let lobby_n = db.get(&ids.lobby).map(Vec::len).unwrap_or(0);
    let direct = db.get(&ids.direct).cloned().unwrap_or_default();
    let replies = direct.iter().filter(|m| m.is_ai).count();
    // Ada answers each of alice's messages to her at most once (resends across kills and
    // reloads trigger nothing), and every message since the last restart exactly once. (A
    // SIGKILL loses the replies queued at that moment: the persona queue is not persisted.)
    let humans = direct.len() - replies;
    if replies > humans {
        problems.push(format!("Ada replied {replies} times to {humans} messages: some message got two replies"));
    }
    if let Some(last_kill) = direct.iter().position(|m| tag(&m.content) == "A-076") {
        // Replies come in trigger order: each answers the oldest message still owed one. The
        // first replies after A-076 may answer messages just before it.
        let (mut owed, mut earlier) = (0usize, 0usize);
        for m in &direct[last_kill..] {
            match (m.is_ai, owed) {
                (false, _) => owed += 1,
                (true, 0) => earlier += 1,
                (true, _) => owed -= 1,
            }
        }
        if owed > 0 {
            problems.push(format!("since A-076 (no kill after it) {owed} of alice's messages got no reply from Ada"));
        }
        eprintln!("[faults]   replies after A-076 to messages before it: {earlier}");
    } else {
        problems.push("A-076 is not in alice+Ada".into());
    }
    eprintln!("[faults] counts after {}:", t());
    eprintln!(
        "[faults]   written: {} (alice's window {}, bob's window {}, Rust client {})",
        written.len(),
        written_a.lock().unwrap().len(),
        written_b.lock().unwrap().len(),
        rust_done.lock().unwrap().len()
    );
    eprintln!(
        "[faults]   written offline (bob): {}, pending across alice's reload: {}",
        offline.len(),
        before_reload.len()
    );
    eprintln!(
        "[faults]   database: Lobby {lobby_n} messages, alice+Ada {} ({} from people, {replies} persona replies)",
        direct.len(),
        direct.len() - replies
    );
    for c in &counts {
        eprintln!("[faults]   {c}");
    }
    if !problems.is_empty() {
        return Err(format!("the fault suite found {} problem(s):\n  - {}", problems.len(), problems.join("\n  - ")));
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_every_message_once_through_kills_polling_offline_and_reload() {
    let app_data = tempfile::tempdir().expect("temp dir");
    let chat_data = tempfile::tempdir().expect("temp dir");
    let chat_port = free_port();
    // bob's window reaches the chat server through a cable that can be cut; the app may use
    // both addresses (its meta tag lists them).
    let cable = Cable::lay(chat_port).await.expect("the cable is laid");
    let app = TestServer::start_app_for_all(app_data.path(), &[&format!("http://127.0.0.1:{chat_port}"), &cable.base])
        .expect("the app's server starts");
    let args = chat_args(&app.base, &[]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut chat = TestServer::start_with_args(chat_data.path(), chat_port, &args).expect("chat server starts");
    let driver = Driver::start().expect("chromedriver starts");
    let a = driver.window().await.expect("window A");
    let b = driver.window().await.expect("window B");
    let run = Run { app: &app, chat: &mut chat, cable: &cable, driver: &driver, a: &a, b: &b };
    let outcome = tokio::time::timeout(Duration::from_secs(330), faults_body(run)).await;
    conclude(outcome, vec![(a, "faults-alice"), (b, "faults-bob")]).await;
}
