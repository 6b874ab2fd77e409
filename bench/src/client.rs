//! The client side: sign-in and conversations over HTTP, N receiving sockets, and the
//! sender. Receivers record every `new_message` they get: the phase and send instant are in
//! the message's content (`b<phase>:<ns since the bench started>`), so no shared map is
//! needed and latency is measured at every receiver, for every delivery.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use persona_chat_protocol::http::{
    ConversationSummary, CreateConversationRequest, PostMessageRequest, SessionRequest, SessionResponse,
};
use persona_chat_protocol::{Ack, ClientFrame, ServerFrame};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::WebSocketStream;

use crate::hist::Histogram;
use crate::now_ns;

pub type Ws = WebSocketStream<TcpStream>;

/// Phases, as numbered in message content.
pub const PHASE_FANOUT: usize = 0;
pub const PHASE_SIDE: usize = 1;
pub const PHASE_REDUCED: usize = 2;
pub const PHASE_FULL: usize = 3;
pub const PHASES: usize = 4;

/// Receiver groups: the N Lobby sockets, and the few sockets of the side room.
pub const GROUP_LOBBY: usize = 0;
pub const GROUP_SIDE: usize = 1;

#[derive(Default)]
pub struct Phase {
    pub delivered: AtomicU64,
    /// Latest delivery instant (ns since start).
    pub last_ns: AtomicU64,
    pub hist: Histogram,
}

#[derive(Default)]
pub struct Group {
    pub alive: AtomicUsize,
    pub closed: AtomicUsize,
    /// Closed by the server with 1008 (its queue for the socket overflowed).
    pub kicked: AtomicUsize,
    /// Ended otherwise: a close frame with another code, one without a code, or no close
    /// frame at all (reset or EOF).
    pub other_code: AtomicUsize,
    pub no_code: AtomicUsize,
    pub no_close_frame: AtomicUsize,
    pub frames: AtomicU64,
}

#[derive(Default)]
pub struct Stats {
    pub phases: [Phase; PHASES],
    pub groups: [Group; 2],
}

/// Receiver tasks, aborted (their sockets closed) when dropped.
#[derive(Default)]
pub struct Receivers(Vec<JoinHandle<()>>);

impl Group {
    /// Sockets closed without the 1008 code.
    pub fn closed_otherwise(&self) -> usize {
        self.other_code.load(Relaxed) + self.no_code.load(Relaxed) + self.no_close_frame.load(Relaxed)
    }

    pub fn ends_text(&self) -> String {
        [
            (self.kicked.load(Relaxed), "closed with 1008 (kicked)"),
            (self.other_code.load(Relaxed), "closed with another code"),
            (self.no_code.load(Relaxed), "closed without a code"),
            (self.no_close_frame.load(Relaxed), "ended without a close frame"),
        ]
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, what)| format!("{n} {what}"))
        .collect::<Vec<_>>()
        .join(", ")
    }
}

impl Receivers {
    pub fn len(&self) -> usize {
        self.0.len()
    }
}

impl Drop for Receivers {
    fn drop(&mut self) {
        for h in &self.0 {
            h.abort();
        }
    }
}

// ---- HTTP ----

pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .tcp_nodelay(true)
        .build()
        .expect("an HTTP client without TLS builds")
}

pub async fn sign_in(http: &reqwest::Client, base: &str, username: &str) -> Result<SessionResponse, String> {
    let body = SessionRequest { username: username.into(), password: "bench-password-1".into() };
    // Sign up (POST /api/users); a taken name (409) or an older server without the route
    // (404/405) signs in instead.
    let r = http
        .post(format!("{base}/api/users"))
        .json(&body)
        .send()
        .await
        .map_err(|e| format!("sign-up {username}: {e}"))?;
    let r = if r.status().is_success() {
        r
    } else if matches!(r.status().as_u16(), 404 | 405 | 409) {
        http.post(format!("{base}/api/session"))
            .json(&body)
            .send()
            .await
            .map_err(|e| format!("sign-in {username}: {e}"))?
    } else {
        return Err(format!("sign-up {username}: {} {}", r.status(), r.text().await.unwrap_or_default()));
    };
    if !r.status().is_success() {
        return Err(format!("sign-in {username}: {} {}", r.status(), r.text().await.unwrap_or_default()));
    }
    r.json().await.map_err(|e| format!("sign-in {username}: {e}"))
}

pub async fn lobby_id(http: &reqwest::Client, base: &str, token: &str) -> Result<String, String> {
    let r = http.get(format!("{base}/api/conversations")).bearer_auth(token).send().await.map_err(|e| e.to_string())?;
    if !r.status().is_success() {
        return Err(format!("GET /api/conversations: {}", r.status()));
    }
    let list: Vec<ConversationSummary> = r.json().await.map_err(|e| e.to_string())?;
    list.into_iter()
        .find(|c| c.title == "Lobby")
        .map(|c| c.id)
        .ok_or_else(|| "no Lobby in GET /api/conversations".into())
}

pub async fn create_room(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    title: &str,
    member_ids: Vec<String>,
) -> Result<String, String> {
    let body = CreateConversationRequest { title: Some(title.into()), member_ids, ..Default::default() };
    let r = http
        .post(format!("{base}/api/conversations"))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if !r.status().is_success() {
        return Err(format!("POST /api/conversations: {} {}", r.status(), r.text().await.unwrap_or_default()));
    }
    let summary: ConversationSummary = r.json().await.map_err(|e| e.to_string())?;
    Ok(summary.id)
}

// ---- sockets ----

async fn next_frame(ws: &mut Ws) -> Result<ServerFrame, String> {
    loop {
        match ws.next().await {
            Some(Ok(WsMessage::Text(t))) => match ServerFrame::parse(t.as_str()) {
                Ok(Some(f)) => return Ok(f),
                Ok(None) => continue,
                Err(e) => return Err(format!("unreadable frame: {e}")),
            },
            Some(Ok(WsMessage::Close(c))) => return Err(format!("closed by the server: {c:?}")),
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(e.to_string()),
            None => return Err("the socket ended".into()),
        }
    }
}

/// Opens a socket, waits for `hello`, joins the conversation and reads until
/// `conversation_joined`.
pub async fn connect_one(addr: SocketAddr, token: &str, conversation_id: &str) -> Result<Ws, String> {
    let steps = async {
        let tcp = TcpStream::connect(addr).await.map_err(|e| format!("connect: {e}"))?;
        tcp.set_nodelay(true).map_err(|e| e.to_string())?;
        // Small buffers, like the server's: 10,000 clients in this process.
        let config = WebSocketConfig::default().read_buffer_size(4 * 1024).write_buffer_size(0);
        let url = format!("ws://{addr}/ws?token={token}");
        let (mut ws, _) = tokio_tungstenite::client_async_with_config(url, tcp, Some(config))
            .await
            .map_err(|e| format!("upgrade: {e}"))?;
        loop {
            if let ServerFrame::Hello { .. } = next_frame(&mut ws).await? {
                break;
            }
        }
        let join = ClientFrame::JoinConversation { conversation_id: conversation_id.into(), after_seq: None };
        ws.send(WsMessage::text(join.to_json())).await.map_err(|e| e.to_string())?;
        loop {
            match next_frame(&mut ws).await? {
                ServerFrame::ConversationJoined { conversation_id: c, .. } if c == conversation_id => return Ok(ws),
                ServerFrame::Error { code, message, .. } => return Err(format!("join: {}: {message}", code.as_str())),
                _ => {}
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(30), steps).await.map_err(|_| "timed out after 30 s".to_string())?
}

/// Opens `n` sockets joined to `conversation_id` (tokens used round-robin), at most
/// `concurrency` handshakes at a time, each retried up to 3 times. Returns the errors of the
/// sockets that could not be opened.
#[allow(clippy::too_many_arguments)]
pub async fn connect_many(
    addr: SocketAddr,
    tokens: &[String],
    conversation_id: &str,
    n: usize,
    concurrency: usize,
    stats: &Arc<Stats>,
    group: usize,
    receivers: &mut Receivers,
) -> Vec<String> {
    let start = receivers.len();
    let mut opened = futures_util::stream::iter(0..n)
        .map(|i| {
            let token = tokens[(start + i) % tokens.len()].clone();
            async move {
                let mut last = String::new();
                for attempt in 0..3 {
                    match connect_one(addr, &token, conversation_id).await {
                        Ok(ws) => return Ok(ws),
                        Err(e) => last = e,
                    }
                    tokio::time::sleep(Duration::from_millis(200 * (attempt + 1))).await;
                }
                Err(last)
            }
        })
        .buffer_unordered(concurrency.max(1));
    let mut errors = Vec::new();
    let mut done = 0usize;
    let t0 = Instant::now();
    while let Some(result) = opened.next().await {
        done += 1;
        match result {
            Ok(ws) => {
                stats.groups[group].alive.fetch_add(1, Relaxed);
                receivers.0.push(tokio::spawn(receive(ws, stats.clone(), group)));
            }
            Err(e) => errors.push(e),
        }
        if done.is_multiple_of(2000) {
            crate::progress(&format!("  {done}/{n} sockets open ({:.0}/s)", done as f64 / t0.elapsed().as_secs_f64()));
        }
    }
    errors
}

const NEW_MESSAGE: &str = r#"{"type":"new_message""#;
const CONTENT: &str = r#""content":"b"#;

/// Reads a socket until it ends, recording every benchmark `new_message`.
async fn receive(mut ws: Ws, stats: Arc<Stats>, group: usize) {
    let g = &stats.groups[group];
    // None: no close frame; Some(None): a close frame without a code.
    let mut close = None;
    while let Some(item) = ws.next().await {
        match item {
            Ok(WsMessage::Text(t)) => {
                g.frames.fetch_add(1, Relaxed);
                record(&stats, t.as_str());
            }
            Ok(WsMessage::Close(frame)) => {
                close = Some(frame.map(|f| u16::from(f.code)));
                break;
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }
    g.alive.fetch_sub(1, Relaxed);
    g.closed.fetch_add(1, Relaxed);
    match close {
        Some(Some(1008)) => &g.kicked,
        Some(Some(_)) => &g.other_code,
        Some(None) => &g.no_code,
        None => &g.no_close_frame,
    }
    .fetch_add(1, Relaxed);
}

fn record(stats: &Stats, text: &str) {
    if !text.starts_with(NEW_MESSAGE) {
        return;
    }
    let now = now_ns();
    let Some(at) = text.find(CONTENT) else { return };
    let rest = &text[at + CONTENT.len()..];
    let Some((phase, rest)) = rest.split_once(':') else { return };
    let Some(end) = rest.find('"') else { return };
    let (Ok(phase), Ok(sent)) = (phase.parse::<usize>(), rest[..end].parse::<u64>()) else { return };
    let Some(p) = stats.phases.get(phase) else { return };
    p.delivered.fetch_add(1, Relaxed);
    p.last_ns.fetch_max(now, Relaxed);
    p.hist.record(now.saturating_sub(sent) / 1000);
}

// ---- sending ----

/// How a sender sends.
#[derive(Clone, Copy)]
pub enum Mode {
    /// `messages` as fast as acks come back, `in_flight` requests outstanding, and message i
    /// only once `gate(i)` allows it (flow control on deliveries).
    Burst { messages: usize, in_flight: usize },
    /// A steady `rate` per second for `secs`; at most `max_in_flight` unanswered requests
    /// (a tick that finds them all busy is not sent, and counted).
    Paced { rate: f64, secs: f64, max_in_flight: usize },
}

#[derive(Debug, Default, Clone)]
pub struct SendReport {
    pub acked: u64,
    /// Error status/code -> count.
    pub errors: BTreeMap<String, u64>,
    /// Ticks not sent because max_in_flight requests were still unanswered.
    pub not_sent: u64,
    pub first_send_ns: u64,
    pub last_send_ns: u64,
}

impl SendReport {
    pub fn attempted(&self) -> u64 {
        self.acked + self.errors.values().sum::<u64>()
    }

    pub fn achieved_rate(&self) -> f64 {
        let secs = (self.last_send_ns.saturating_sub(self.first_send_ns)) as f64 / 1e9;
        if secs > 0.0 && self.attempted() > 1 {
            (self.attempted() - 1) as f64 / secs
        } else {
            0.0
        }
    }

    pub fn errors_text(&self) -> String {
        self.errors.iter().map(|(k, v)| format!("{v} × {k}")).collect::<Vec<_>>().join(", ")
    }
}

/// Sends over HTTP POST /api/conversations/{id}/messages from a thread of its own (with its
/// own single-threaded runtime), so that pacing and send instants are not delayed by the
/// thousands of receiver tasks.
pub type Gate = Arc<dyn Fn(u64) -> bool + Send + Sync>;

pub async fn send(
    base: String,
    token: String,
    conversation_id: String,
    phase: usize,
    tag: String,
    mode: Mode,
    gate: Option<Gate>,
) -> SendReport {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("bench-sender".into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
            let report = rt.block_on(send_in_thread(base, token, conversation_id, phase, tag, mode, gate));
            let _ = tx.send(report);
        })
        .expect("a sender thread");
    rx.await.unwrap_or_default()
}

async fn post(http: &reqwest::Client, url: &str, token: &str, phase: usize, client_id: String) -> Result<Ack, String> {
    let body = PostMessageRequest { content: format!("b{phase}:{}", now_ns()), client_id };
    let r = http.post(url).bearer_auth(token).json(&body).send().await.map_err(|e| {
        if e.is_timeout() {
            "timeout".to_string()
        } else {
            "transport error".to_string()
        }
    })?;
    let status = r.status();
    if !status.is_success() {
        let code = r
            .json::<serde_json::Value>()
            .await
            .ok()
            .and_then(|v| v.get("code").and_then(|c| c.as_str()).map(str::to_owned))
            .unwrap_or_default();
        return Err(format!("HTTP {} {code}", status.as_u16()));
    }
    r.json::<Ack>().await.map_err(|e| format!("bad ack: {e}"))
}

async fn send_in_thread(
    base: String,
    token: String,
    conversation_id: String,
    phase: usize,
    tag: String,
    mode: Mode,
    gate: Option<Gate>,
) -> SendReport {
    let http = http_client();
    let url = format!("{base}/api/conversations/{conversation_id}/messages");
    let mut report = SendReport { first_send_ns: now_ns(), ..Default::default() };
    let tally = |report: &mut SendReport, r: Result<Ack, String>| match r {
        Ok(_) => report.acked += 1,
        Err(e) => *report.errors.entry(e).or_default() += 1,
    };
    match mode {
        Mode::Burst { messages, in_flight } => {
            let gate = &gate;
            let results = futures_util::stream::iter(0..messages)
                .then(|i| async move {
                    if let Some(gate) = gate {
                        while !gate(i as u64) {
                            tokio::time::sleep(Duration::from_millis(1)).await;
                        }
                    }
                    i
                })
                .map(|i| post(&http, &url, &token, phase, format!("{tag}-{phase}-{i}")))
                .buffer_unordered(in_flight.max(1));
            let mut results = std::pin::pin!(results);
            while let Some(r) = results.next().await {
                tally(&mut report, r);
            }
            report.last_send_ns = now_ns();
        }
        Mode::Paced { rate, secs, max_in_flight } => {
            let http = Arc::new(http);
            let url = Arc::new(url);
            let token = Arc::new(token);
            let permits = Arc::new(tokio::sync::Semaphore::new(max_in_flight.max(1)));
            let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel();
            let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
            // A late tick is skipped, never made up for in a burst: the rate stays steady.
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            let end = tokio::time::Instant::now() + Duration::from_secs_f64(secs);
            let mut spawned = 0u64;
            loop {
                let t = tick.tick().await;
                if t >= end {
                    break;
                }
                let Ok(permit) = permits.clone().try_acquire_owned() else {
                    report.not_sent += 1;
                    continue;
                };
                let (http, url, token, done_tx) = (http.clone(), url.clone(), token.clone(), done_tx.clone());
                let client_id = format!("{tag}-{phase}-{spawned}");
                spawned += 1;
                report.last_send_ns = now_ns();
                tokio::spawn(async move {
                    let r = post(&http, &url, &token, phase, client_id).await;
                    drop(permit);
                    let _ = done_tx.send(r);
                });
            }
            drop(done_tx);
            while let Some(r) = done_rx.recv().await {
                tally(&mut report, r);
            }
        }
    }
    report
}

/// How waiting for deliveries ended.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Drained {
    /// Every alive receiver got every acked message.
    Complete,
    /// Nothing arrived for the stall time.
    Stalled,
    /// Still arriving at the drain limit.
    TimedOut,
}

/// Waits until `expected()` deliveries of `phase` arrived, nothing arrived for `stall`, or
/// `limit` passed.
pub async fn wait_deliveries(phase: &Phase, expected: impl Fn() -> u64, stall: Duration, limit: Duration) -> Drained {
    let start = Instant::now();
    let mut last = phase.delivered.load(Relaxed);
    let mut last_change = Instant::now();
    loop {
        let now = phase.delivered.load(Relaxed);
        if now >= expected() {
            return Drained::Complete;
        }
        if now != last {
            last = now;
            last_change = Instant::now();
        } else if last_change.elapsed() >= stall {
            return Drained::Stalled;
        }
        if start.elapsed() >= limit {
            return Drained::TimedOut;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
