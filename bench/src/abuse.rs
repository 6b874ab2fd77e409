//! `persona-chat-bench --abuse`: the two figures of issue 12, each next to its target, against
//! a server with its default limits:
//! - peak RSS of the server under 200 concurrent (wrong) sign-ins, and how long another,
//!   signed-in user waited meanwhile;
//! - other users' send-to-ack latency (p50, p99) while one user floods typing frames, against
//!   the same figure without the flood.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use persona_chat_protocol::{ClientFrame, ServerFrame};
use tokio_tungstenite::tungstenite::Message as WsMessage;

use crate::client::{connect_one, http_client, lobby_id, sign_in, Ws};
use crate::progress;
use crate::server::{ServerFlags, ServerGuard};

const RSS_TARGET_MIB: f64 = 300.0;
const P99_TARGET_MS: f64 = 50.0;
/// Senders measured during the typing flood, each sending 5 messages a second (the default
/// rate limit is 10).
const SENDERS: usize = 4;
const PHASE: Duration = Duration::from_secs(4);

fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

pub async fn run(server_bin: &std::path::Path, flags: &ServerFlags) -> Result<(), String> {
    // The server as deployed: none of the load test's lifted limits.
    let _ = flags;
    let defaults = ServerFlags { abuse_limits: false, rate_limit: false, sync: false };

    // ---- 200 concurrent sign-ins ----
    let server = ServerGuard::start(server_bin, &defaults, "abuse-signin").await?;
    let base = server.base_url();
    let http = http_client();
    let alice = sign_in(&http, &base, "alice").await?;
    let before = peak_rss_kib(server.pid()).unwrap_or(0);
    progress("200 concurrent wrong sign-ins");
    let mut storm = Vec::new();
    for i in 0..200 {
        let (http, base) = (http.clone(), base.clone());
        storm.push(tokio::spawn(async move {
            let body = serde_json::json!({"username": "alice", "password": format!("wrong password {i}")});
            http.post(format!("{base}/api/session")).json(&body).send().await.map(|r| r.status().as_u16())
        }));
    }
    let mut waits = Vec::new();
    let storm_started = Instant::now();
    while !storm.iter().all(|t| t.is_finished()) && storm_started.elapsed() < Duration::from_secs(60) {
        let t0 = Instant::now();
        let r = http
            .get(format!("{base}/api/conversations"))
            .bearer_auth(&alice.token)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if !r.status().is_success() {
            return Err(format!("another user's request failed during the storm: {}", r.status()));
        }
        waits.push(t0.elapsed().as_secs_f64() * 1e3);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut answers = std::collections::BTreeMap::new();
    for t in storm {
        let status = t.await.map_err(|e| e.to_string())?.map_err(|e| e.to_string())?;
        *answers.entry(status).or_insert(0u32) += 1;
    }
    let peak = peak_rss_kib(server.pid()).unwrap_or(0);
    drop(server);
    waits.sort_by(f64::total_cmp);

    // ---- typing flood ----
    let server = ServerGuard::start(server_bin, &defaults, "abuse-typing").await?;
    let base = server.base_url();
    let addr = server.addr;
    let mallory = sign_in(&http, &base, "mallory").await?;
    let lobby = lobby_id(&http, &base, &mallory.token).await?;
    let mut senders = Vec::new();
    for i in 0..SENDERS {
        let s = sign_in(&http, &base, &format!("user{i}")).await?;
        senders.push(connect_one(addr, &s.token, &lobby).await?);
    }
    progress("others' send latency without a flood");
    let (quiet, senders) = measure(senders, &lobby).await?;
    progress("others' send latency during a typing flood");
    let flooding = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let flood = tokio::spawn(flood_typing(addr, mallory.token.clone(), lobby.clone(), flooding.clone()));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (loud, _senders) = measure(senders, &lobby).await?;
    flooding.store(false, std::sync::atomic::Ordering::Relaxed);
    let (frames, closes) = flood.await.map_err(|e| e.to_string())?;
    drop(server);

    println!();
    println!("| figure | measured | target |");
    println!("|---|---|---|");
    println!(
        "| peak server RSS, 200 concurrent wrong sign-ins | {:.0} MiB (before: {:.0} MiB; answers {answers:?}) | < {RSS_TARGET_MIB:.0} MiB {} |",
        peak as f64 / 1024.0,
        before as f64 / 1024.0,
        if (peak as f64 / 1024.0) < RSS_TARGET_MIB { "✓" } else { "✗" }
    );
    println!(
        "| another user's GET /api/conversations meanwhile | p50 {:.1} ms, max {:.1} ms ({} requests) | served |",
        percentile(&waits, 0.5),
        waits.last().copied().unwrap_or(f64::NAN),
        waits.len()
    );
    println!(
        "| others' send-to-ack latency, no flood | p50 {:.1} ms, p99 {:.1} ms ({} sends, {} kicked) | — |",
        percentile(&quiet.latencies, 0.5),
        percentile(&quiet.latencies, 0.99),
        quiet.latencies.len(),
        quiet.kicked
    );
    let p99 = percentile(&loud.latencies, 0.99);
    println!(
        "| others' send-to-ack latency, typing flood | p50 {:.1} ms, p99 {p99:.1} ms ({} sends, {} kicked; {} typing indicators reached them) | p99 ≤ {P99_TARGET_MS:.0} ms, none kicked {} |",
        percentile(&loud.latencies, 0.5),
        loud.latencies.len(),
        loud.kicked,
        loud.typing_seen,
        if p99 <= P99_TARGET_MS && loud.kicked == 0 { "✓" } else { "✗" }
    );
    println!(
        "| the flood | {frames} typing frames sent; the flooder's sockets closed {closes} times (1008) | closed |"
    );
    Ok(())
}

struct Measured {
    latencies: Vec<f64>,
    kicked: usize,
    typing_seen: usize,
}

/// Each sender sends 5 messages a second for [`PHASE`]; the time from send to its ack.
async fn measure(senders: Vec<Ws>, lobby: &str) -> Result<(Measured, Vec<Ws>), String> {
    let mut tasks = Vec::new();
    for (i, mut ws) in senders.into_iter().enumerate() {
        let lobby = lobby.to_owned();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut typing_seen = 0;
            let end = Instant::now() + PHASE;
            let mut n = 0u64;
            while Instant::now() < end {
                n += 1;
                let cid = format!("bench-{i}-{n}-{}", crate::now_ns());
                let frame = ClientFrame::SendMessage {
                    conversation_id: lobby.clone(),
                    content: "hello".into(),
                    client_id: Some(cid.clone()),
                    persona_id: None,
                };
                let t0 = Instant::now();
                if ws.send(WsMessage::text(frame.to_json())).await.is_err() {
                    return (latencies, true, typing_seen, ws);
                }
                loop {
                    match tokio::time::timeout(Duration::from_secs(5), ws.next()).await {
                        Ok(Some(Ok(WsMessage::Text(t)))) => match ServerFrame::parse(t.as_str()) {
                            Ok(Some(ServerFrame::MessageAck(a))) if a.client_id == cid => break,
                            Ok(Some(ServerFrame::TypingIndicator { .. })) => typing_seen += 1,
                            _ => {}
                        },
                        Ok(Some(Ok(WsMessage::Close(_)))) | Ok(None) | Ok(Some(Err(_))) | Err(_) => {
                            return (latencies, true, typing_seen, ws);
                        }
                        Ok(Some(Ok(_))) => {}
                    }
                }
                latencies.push(t0.elapsed().as_secs_f64() * 1e3);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            (latencies, false, typing_seen, ws)
        }));
    }
    let mut m = Measured { latencies: Vec::new(), kicked: 0, typing_seen: 0 };
    let mut back = Vec::new();
    for t in tasks {
        let (l, kicked, typing, ws) = t.await.map_err(|e| e.to_string())?;
        m.latencies.extend(l);
        m.kicked += usize::from(kicked);
        m.typing_seen += typing;
        back.push(ws);
    }
    m.latencies.sort_by(f64::total_cmp);
    Ok((m, back))
}

/// Sends typing_start frames as fast as a socket takes them, reconnecting when closed.
async fn flood_typing(
    addr: std::net::SocketAddr,
    token: String,
    lobby: String,
    on: Arc<std::sync::atomic::AtomicBool>,
) -> (u64, u64) {
    let frame = ClientFrame::TypingStart { conversation_id: lobby.clone() }.to_json();
    let (mut frames, mut closes) = (0u64, 0u64);
    while on.load(std::sync::atomic::Ordering::Relaxed) {
        let Ok(ws) = connect_one(addr, &token, &lobby).await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let (mut tx, mut rx) = ws.split();
        // Drain what the server sends, so the flooder is not the one too slow to read.
        let reader = tokio::spawn(async move { while let Some(Ok(_)) = rx.next().await {} });
        while on.load(std::sync::atomic::Ordering::Relaxed) && !reader.is_finished() {
            if tx.send(WsMessage::text(frame.clone())).await.is_err() {
                break;
            }
            frames += 1;
        }
        closes += 1;
        reader.abort();
    }
    (frames, closes.saturating_sub(1))
}
